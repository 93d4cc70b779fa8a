//! `snaptree export DOMAIN`: every snapshot's document, parents first, in the form libvirt's
//! REDEFINE takes (`engine::xml::export`).

use std::path::Path;

use snaptree_engine::Domain;
use snaptree_engine::xml::export::{Export, domain_element};

use crate::Failure;

/// The documents, parents first (the tree's topological order): to stdout one after
/// another, or with `dir` one file each, `0001.xml`, `0002.xml`, … (in the order to feed
/// them to `virsh snapshot-create --redefine`), returning the paths written.
pub fn export(
    d: &mut Domain,
    domain_xml: Option<&str>,
    dir: Option<&Path>,
) -> Result<Vec<String>, Failure> {
    let domain = domain_xml.map(domain_element).transpose()?;
    let domain_uuid = d.uuid();
    let tree = d.tree()?;
    let current = tree.current().map(|c| c.uuid);
    let docs: Vec<String> = tree
        .topological()
        .into_iter()
        .map(|s| {
            Export {
                snapshot: s,
                parent: tree.parent(&s.uuid).map(|p| p.name.as_str()),
                current: current == Some(s.uuid),
                domain_uuid,
                domain,
            }
            .format()
        })
        .collect();
    let Some(dir) = dir else {
        return Ok(docs);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Io(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let path = dir.join(format!("{:04}.xml", i + 1));
        std::fs::write(&path, doc)
            .map_err(|e| Failure::Io(format!("cannot write {}: {e}", path.display())))?;
        written.push(format!("{}\n", path.display()));
    }
    Ok(written)
}
