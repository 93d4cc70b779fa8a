//! The manifest a backend keeps beside a domain's data (ABI 1.2, `save_manifest`): every
//! snapshot's metadata — the [`super::export`] document REDEFINE takes, parents first, the
//! current one marked `<active>1</active>` — so that `snaptree adopt` can rebuild a lost
//! state directory from the disks alone.
//!
//! The form is one `<snaptree-manifest>` element holding the documents, each ending its
//! own line with `</domainsnapshot>`. The documents are read one by one (each within the
//! limits of a snapshot document), not as one document, so a manifest of any size reads;
//! the count in the opening tag makes a truncated manifest an error rather than a smaller
//! tree.

use uuid::Uuid;

use super::dom::{Document, escape};
use super::export::Export;
use crate::error::{Error, Result};
use crate::tree::SnapshotTree;

/// The first line of every manifest.
const HEADER: &str = "<!-- snaptree manifest: the metadata of the snapshots beside this data; `snaptree adopt` reads it -->";
/// The end of every snapshot document in a manifest (names and descriptions are escaped,
/// so it cannot occur inside one).
const DOCUMENT_END: &str = "</domainsnapshot>\n";
/// The closing line.
const FOOTER: &str = "</snaptree-manifest>\n";

/// A manifest read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The domain's name when the manifest was written.
    pub domain: String,
    /// The domain's uuid.
    pub uuid: Uuid,
    /// Every snapshot's document, parents first. A pinned snapshot's carries
    /// `<pinned>1</pinned>`, and one with an expiry `<expires>`.
    pub documents: Vec<String>,
    /// The domain's retention policy, as the store keeps it (JSON), if it has one.
    pub policy: Option<String>,
}

/// The manifest of `tree` with the domain's retention `policy` (JSON), or the empty string
/// when it holds no snapshot.
pub fn format(
    domain: &str,
    domain_uuid: Uuid,
    tree: &SnapshotTree,
    policy: Option<&str>,
) -> String {
    if tree.is_empty() {
        return String::new();
    }
    let current = tree.current().map(|c| c.uuid);
    let snapshots = tree.topological();
    let policy = policy.map_or(String::new(), |p| format!(" policy='{}'", escape(p)));
    let mut out = format!(
        "{HEADER}\n<snaptree-manifest domain='{}' uuid='{domain_uuid}' snapshots='{}'{policy}>\n",
        escape(domain),
        snapshots.len()
    );
    for s in snapshots {
        let doc = Export {
            snapshot: s,
            parent: tree.parent(&s.uuid).map(|p| p.name.as_str()),
            current: current == Some(s.uuid),
            domain_uuid,
            domain: None,
        }
        .format();
        match doc.strip_suffix(DOCUMENT_END) {
            Some(body) if s.pinned => {
                out.push_str(body);
                out.push_str("  <pinned>1</pinned>\n");
                out.push_str(DOCUMENT_END);
            }
            _ => out.push_str(&doc),
        }
    }
    out.push_str(FOOTER);
    out
}

/// Reads a manifest; `what` names where it came from in errors.
pub fn parse(text: &str, what: &str) -> Result<Manifest> {
    let bad = |why: &str| Error::InvalidArg(format!("the manifest {what} {why}"));
    let body = text
        .strip_prefix(HEADER)
        .and_then(|t| t.strip_prefix('\n'))
        .ok_or_else(|| bad("does not start with snaptree's manifest header"))?;
    let (open, rest) = body
        .split_once('\n')
        .ok_or_else(|| bad("ends after its header"))?;
    let element = Document::parse(&format!("{open}</snaptree-manifest>"))?.root;
    if element.name != "snaptree-manifest" {
        return Err(bad("has no <snaptree-manifest> element"));
    }
    let attribute = |name: &str| {
        element
            .attribute(name)
            .ok_or_else(|| bad(&format!("has no {name} attribute")))
    };
    let domain = attribute("domain")?.to_string();
    let uuid =
        Uuid::parse_str(attribute("uuid")?).map_err(|_| bad("has an invalid domain uuid"))?;
    let count: usize = attribute("snapshots")?
        .parse()
        .map_err(|_| bad("has an invalid snapshot count"))?;
    let rest = rest
        .strip_suffix(FOOTER)
        .ok_or_else(|| bad("is cut short (no closing </snaptree-manifest>)"))?;
    let documents: Vec<String> = rest
        .split_inclusive(DOCUMENT_END)
        .map(str::to_string)
        .collect();
    if documents.len() != count
        || documents
            .iter()
            .any(|d| !d.starts_with("<domainsnapshot>") || !d.ends_with(DOCUMENT_END))
    {
        return Err(bad(&format!(
            "holds {} snapshot documents where it announces {count}",
            documents.len()
        )));
    }
    Ok(Manifest {
        domain,
        uuid,
        documents,
        policy: element.attribute("policy").map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PowerState, Snapshot};

    fn snapshot(n: u128, name: &str, parent: Option<u128>) -> (Snapshot, Option<Uuid>) {
        (
            Snapshot {
                uuid: Uuid::from_u128(n),
                name: name.to_string(),
                description: format!("<{name}> & \"{name}\"\n</domainsnapshot>"),
                creation_date: 1_700_000_000 + n as i64,
                state: PowerState::Shutoff,
                expires: None,
                pinned: false,
            },
            parent.map(Uuid::from_u128),
        )
    }

    #[test]
    fn a_manifest_reads_back_as_the_documents_parents_first() {
        let mut tree = SnapshotTree::default();
        for (s, p) in [
            snapshot(1, "a", None),
            snapshot(2, "b <&> \x27q\x27", Some(1)),
            snapshot(3, "c", Some(1)),
        ] {
            tree.insert(s, p).unwrap();
        }
        tree.set_current(Some(Uuid::from_u128(2))).unwrap();
        let text = format("vm 'one'", Uuid::from_u128(9), &tree, Some("{\"last\":3}"));
        let m = parse(&text, "test").unwrap();
        assert_eq!(m.domain, "vm 'one'");
        assert_eq!(m.uuid, Uuid::from_u128(9));
        assert_eq!(m.policy.as_deref(), Some("{\"last\":3}"));
        assert_eq!(m.documents.len(), 3, "{text}");
        for (doc, s) in m.documents.iter().zip(tree.topological()) {
            let x = super::super::SnapshotXml::parse_for_redefine(doc).unwrap();
            assert_eq!(x.name.as_deref(), Some(s.name.as_str()));
            assert_eq!(x.description.as_deref(), Some(s.description.as_str()));
            assert_eq!(
                doc.contains("<active>1</active>"),
                s.uuid == Uuid::from_u128(2)
            );
        }
        assert_eq!(
            format("vm", Uuid::from_u128(9), &SnapshotTree::default(), None),
            ""
        );
    }

    #[test]
    fn a_cut_or_foreign_manifest_is_refused() {
        let mut tree = SnapshotTree::default();
        let (s, p) = snapshot(1, "a", None);
        tree.insert(s, p).unwrap();
        let text = format("vm", Uuid::from_u128(9), &tree, None);
        for bad in [
            &text[..text.len() - 3],
            &text[..text.len() / 2],
            "<domainsnapshot/>",
            "",
            &text.replace("snapshots='1'", "snapshots='2'"),
        ] {
            let e = parse(bad, "beside d0.qcow2").unwrap_err();
            assert!(
                e.to_string().contains("beside d0.qcow2") || matches!(e, Error::Xml { .. }),
                "{e}"
            );
        }
    }
}
