//! `snaptree adopt DOMAIN_XML`: rebuilds a lost state directory from the disks alone.
//!
//! A backend that keeps a manifest beside its data (ABI 1.2; the QEMU backend writes
//! `<image>.snaptree-manifest.xml` beside every disk with each operation) holds every
//! snapshot's name, description, creation date, state, parent and which one is current.
//! Given the domain's snaptree XML, `adopt` defines the domain (unless the store already
//! has it, with no snapshot), reads the manifest through the backend, and redefines every
//! snapshot parents first (SEMANTICS.md §7.3: each REDEFINE adopts the data it finds for
//! that uuid on that parent, so a manifest that no longer matches the data is refused
//! snapshot by snapshot), sets current, and runs the agreement check (§3.7).
//!
//! Pins (`<pinned>1</pinned>`), expiry dates and the retention policy come back with it.
//! The manifest is left as it is until the last snapshot is redefined
//! (`Domain::hold_manifest`), so an adoption that stops part-way (data that no longer
//! matches, a signal) can be run again: it replaces what it redefined and adds the rest.
//!
//! The store is trusted over any manifest: a domain whose store holds a snapshot the
//! manifest does not list is refused (a manifest is read only when the metadata is gone).

use std::path::{Path, PathBuf};

use snaptree_engine::conn::Connection;
use snaptree_engine::xml::{DomainXml, manifest};
use snaptree_engine::{Error, Policy};

use crate::import::{Doc, parents_first, with_file};
use crate::{Failure, read_file};

/// The adoption; returns what to print.
pub fn adopt(conn: &Connection, domain_xml: &Path, dry_run: bool) -> Result<String, Failure> {
    let text = read_file(domain_xml)?;
    let xml = DomainXml::parse(&text)?;
    let name = xml.name.clone();
    let existing = conn.list_domains()?.into_iter().any(|d| d.name == name);
    let held: Vec<String> = if existing {
        conn.open_domain(&name)?
            .tree()?
            .iter()
            .map(|s| s.name.clone())
            .collect()
    } else {
        Vec::new()
    };
    // Read through the backend alone: opening a domain could record its (empty) tree, and
    // with it an empty manifest over the one to read.
    let mut backend = conn.provider(&xml.backend_type)?.open(&xml, &text)?;
    if !backend.keeps_manifest() {
        return Err(Error::OperationInvalid(format!(
            "backend '{}' keeps no manifest beside the data of domain '{name}'",
            backend.name()
        ))
        .into());
    }
    let found = backend.load_manifest()?;
    drop(backend);
    let what = format!("beside the data of domain '{name}'");
    let Some(found) = found.filter(|t| !t.is_empty()) else {
        return Err(Error::NoSnapshot(format!(
            "no manifest {what}: nothing to adopt (its disks hold no snapshot snaptree recorded)"
        ))
        .into());
    };
    let m = manifest::parse(&found, &what)?;
    if let Some(u) = xml.uuid
        && u != m.uuid
    {
        return Err(Error::InvalidArg(format!(
            "the manifest {what} belongs to domain {} ({}), not to {u}",
            m.domain, m.uuid
        ))
        .into());
    }
    let mut docs = Vec::new();
    for (i, text) in m.documents.into_iter().enumerate() {
        let label = PathBuf::from(format!("manifest document {} ({what})", i + 1));
        docs.push(Doc::read(label, text)?);
    }
    // Snapshots the store has that the manifest does not list: the store is newer.
    let unlisted: Vec<&String> = held
        .iter()
        .filter(|n| !docs.iter().any(|d| &&d.name == n))
        .collect();
    if let Some(first) = unlisted.first() {
        return Err(Error::OperationInvalid(format!(
            "domain '{name}' has {} snapshot{} in the store that the manifest {what} does not list (first '{first}'); \
             the store is trusted over the manifest: adopt rebuilds only a lost state",
            unlisted.len(),
            if unlisted.len() == 1 { "" } else { "s" }
        ))
        .into());
    }
    let pinned: Vec<String> = docs
        .iter()
        .filter(|d| d.text.contains("<pinned>1</pinned>"))
        .map(|d| d.name.clone())
        .collect();
    let policy = m
        .policy
        .as_deref()
        .map(|p| {
            serde_json::from_str::<Policy>(p).map_err(|e| {
                Error::InvalidArg(format!(
                    "the retention policy in the manifest {what} is unreadable: {e}"
                ))
            })
        })
        .transpose()?;
    let current = docs.iter().find(|d| d.active).map(|d| d.name.clone());
    let docs = parents_first(docs, &Default::default(), current.as_deref())?;
    let mut out = String::new();
    if dry_run {
        out.push_str("adopt (dry run, nothing changed):\n");
        if !existing {
            out.push_str(&format!(
                "  define domain '{name}' on backend '{}'\n",
                xml.backend_type
            ));
        }
        for d in &docs {
            out.push_str(&format!(
                "  redefine '{}', child of {}\n",
                d.name,
                d.parent
                    .as_ref()
                    .map_or("nothing".to_string(), |p| format!("'{p}'"))
            ));
        }
        out.push_str(&format!(
            "  current: {}\n",
            current
                .as_ref()
                .map_or("none".to_string(), |c| format!("'{c}'"))
        ));
        return Ok(out);
    }
    if !existing {
        conn.define_domain(&text)?;
        out.push_str(&format!(
            "Domain '{name}' defined (backend '{}')\n",
            xml.backend_type
        ));
    }
    let mut d = conn.open_domain(&name)?;
    d.hold_manifest();
    for doc in &docs {
        let is_current = current.as_deref() == Some(doc.name.as_str());
        let u = d
            .redefine_snapshot(&doc.text, is_current)
            .map_err(|e| with_file(e, &doc.path))?;
        if pinned.contains(&doc.name) {
            d.set_pinned(&u, true)?;
        }
    }
    if policy.is_some() {
        d.set_retention_policy(policy.as_ref())?;
    }
    d.check_agreement()?;
    d.release_manifest()?;
    out.push_str(&format!(
        "Adopted {} snapshot{} into domain '{name}'{}\n",
        docs.len(),
        if docs.len() == 1 { "" } else { "s" },
        current.map_or(String::new(), |c| format!(", current '{c}'"))
    ));
    Ok(out)
}
