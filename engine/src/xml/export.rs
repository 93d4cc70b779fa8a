//! A snapshot as libvirt's REDEFINE takes it (`virsh snapshot-create DOMAIN FILE
//! --redefine`), for `snaptree export`. snaptree's REDEFINE reads the same document back
//! ([`super::SnapshotXml::parse_for_redefine`]).
//!
//! What libvirt 9.0 requires, learned from its test driver: `<creationTime>` (its name, not
//! snaptree's `<creationdate>`), a `<state>` in its words (snaptree's three are among them),
//! the parent by `<name>`, and a whole `<domain type='...'>` definition whose uuid is the
//! target domain's ("missing domain in snapshot" otherwise). snaptree does not keep
//! libvirt's domain definition, so the caller passes one (`virsh dumpxml` output); without
//! it the document carries only `<domain><uuid>`, which snaptree accepts and libvirt does
//! not. `<uuid>` (snaptree's own) is ignored by libvirt. `<active>1</active>` marks the
//! current snapshot, as in libvirt's own snapshot directory; libvirt's public REDEFINE
//! ignores it (pass `--current` there), `snaptree import-libvirt` reads it.

use uuid::Uuid;

use super::dom::{Document, escape};
use crate::error::{Error, Result};
use crate::model::Snapshot;

/// One snapshot's export document.
#[derive(Debug, Clone, Copy)]
pub struct Export<'a> {
    /// The snapshot.
    pub snapshot: &'a Snapshot,
    /// Its parent's name.
    pub parent: Option<&'a str>,
    /// Whether it is the domain's current snapshot.
    pub current: bool,
    /// The domain's uuid, written when no `<domain>` definition is given.
    pub domain_uuid: Uuid,
    /// A whole `<domain>` element to embed, from [`domain_element`].
    pub domain: Option<&'a str>,
}

impl Export<'_> {
    /// The document.
    pub fn format(&self) -> String {
        let s = self.snapshot;
        let mut out = String::from("<domainsnapshot>\n");
        out.push_str(&format!("  <name>{}</name>\n", escape(&s.name)));
        out.push_str(&format!("  <uuid>{}</uuid>\n", s.uuid));
        out.push_str(&format!(
            "  <description>{}</description>\n",
            escape(&s.description)
        ));
        out.push_str(&format!("  <state>{}</state>\n", s.state));
        if let Some(p) = self.parent {
            out.push_str(&format!(
                "  <parent>\n    <name>{}</name>\n  </parent>\n",
                escape(p)
            ));
        }
        out.push_str(&format!(
            "  <creationTime>{}</creationTime>\n",
            s.creation_date
        ));
        if let Some(expires) = s.expires {
            // snaptree's extension (SEMANTICS.md §7.5), which libvirt ignores.
            out.push_str(&format!("  <expires>{expires}</expires>\n"));
        }
        match self.domain {
            Some(d) => {
                out.push_str(d.trim());
                out.push('\n');
            }
            None => out.push_str(&format!(
                "  <domain>\n    <uuid>{}</uuid>\n  </domain>\n",
                self.domain_uuid
            )),
        }
        if self.current {
            out.push_str("  <active>1</active>\n");
        }
        out.push_str("</domainsnapshot>\n");
        out
    }
}

/// Checks that `source` is a `<domain>` document (libvirt's `virsh dumpxml` output) and
/// returns its root element's text, without an XML declaration, for [`Export::domain`].
pub fn domain_element(source: &str) -> Result<&str> {
    let doc = Document::parse(source)?;
    if doc.root.name != "domain" {
        return Err(doc.error_at(
            doc.root.offset,
            format!("root element is <{}>, expected <domain>", doc.root.name),
        ));
    }
    let start = source
        .find("<domain")
        .ok_or_else(|| Error::Internal("a parsed <domain> document has no <domain".into()))?;
    Ok(source[start..].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PowerState;
    use crate::xml::SnapshotXml;

    #[test]
    fn snaptree_reads_its_export_back_whole() {
        let s = Snapshot {
            uuid: Uuid::new_v4(),
            name: "a & <b>".into(),
            description: "two\nlines".into(),
            creation_date: 1_700_000_000,
            state: PowerState::Paused,
            expires: None,
            pinned: false,
        };
        let domain_uuid = Uuid::new_v4();
        let source = format!(
            "<?xml version='1.0'?>\n<domain type='kvm'><name>vm</name><uuid>{domain_uuid}</uuid></domain>\n"
        );
        let dom = domain_element(&source).unwrap();
        assert!(dom.starts_with("<domain type='kvm'>"), "{dom}");
        for domain in [None, Some(dom)] {
            let text = Export {
                snapshot: &s,
                parent: Some("p"),
                current: true,
                domain_uuid,
                domain,
            }
            .format();
            let back = SnapshotXml::parse_for_redefine(&text).unwrap();
            assert_eq!(back.name.as_deref(), Some(s.name.as_str()), "{text}");
            assert_eq!(back.uuid, Some(s.uuid));
            assert_eq!(back.description.as_deref(), Some("two\nlines"));
            assert_eq!(back.creation_date, Some(s.creation_date));
            assert_eq!(back.state, Some(PowerState::Paused));
            assert_eq!(back.parent_name.as_deref(), Some("p"));
            assert_eq!(back.domain_uuid, Some(domain_uuid));
            assert!(text.contains("<active>1</active>"));
        }
        assert!(domain_element("<domainsnapshot/>").is_err());
    }
}
