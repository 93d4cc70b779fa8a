//! `<domain>` documents: the parts the engine needs. The backend gets the whole text.

use uuid::Uuid;

use super::dom::{Document, Element};
use super::snapshot::{single, uuid_field};
use crate::error::{Error, Result};
use crate::name::validate_name;

/// Where a domain's snapshots keep their data, as libvirt's `<disk snapshot=...>`
/// attributes say: the one hypervisor-agnostic fact the engine reads from the disks (what
/// a disk is and how it is stored is its backend's to read from the document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotLocation {
    /// Some disk keeps its snapshots as layers beside it (`snapshot='external'`, the
    /// default of a `<disk>`).
    #[default]
    External,
    /// Every disk keeps them inside its image (`snapshot='internal'`), or the domain names
    /// no disk and the backend keeps the data itself.
    Internal,
}

/// What a `<domain>` document says that the engine uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainXml {
    /// The `type` attribute: the backend that manages the domain.
    pub backend_type: String,
    /// `<name>`.
    pub name: String,
    /// `<uuid>`, if given.
    pub uuid: Option<Uuid>,
    /// Where the snapshots of the domain's disks keep their data.
    pub snapshot_location: SnapshotLocation,
}

impl DomainXml {
    /// Parses and validates a domain document.
    pub fn parse(source: &str) -> Result<DomainXml> {
        DomainXml::from_document(&Document::parse(source)?)
    }

    /// Validates an already parsed domain document, so that a backend that reads more of
    /// the document parses it once.
    pub fn from_document(doc: &Document<'_>) -> Result<DomainXml> {
        let root = &doc.root;
        if root.name != "domain" {
            return Err(doc.error_at(
                root.offset,
                format!("root element is <{}>, expected <domain>", root.name),
            ));
        }
        let backend_type = root.attribute("type").ok_or_else(|| {
            doc.error_at(
                root.offset,
                "<domain> has no 'type' attribute naming its backend",
            )
        })?;
        validate_backend_type(backend_type)
            .map_err(|e| doc.error_at(root.offset, e.to_string()))?;
        let name_el = single(doc, root, "name")?
            .ok_or_else(|| doc.error_at(root.offset, "<domain> has no <name>"))?;
        validate_name("domain", &name_el.text)
            .map_err(|e| doc.error_at(name_el.offset, e.to_string()))?;
        let uuid = uuid_field(doc, root, "uuid")?;
        let mut snapshot_location = SnapshotLocation::Internal;
        if let Some(devices) = single(doc, root, "devices")? {
            for disk in devices.children_named("disk") {
                if disk_snapshot_location(doc, disk)? == SnapshotLocation::External {
                    snapshot_location = SnapshotLocation::External;
                }
            }
        }
        Ok(DomainXml {
            backend_type: backend_type.to_string(),
            name: name_el.text.clone(),
            uuid,
            snapshot_location,
        })
    }
}

/// A `<disk>`'s `snapshot` attribute, checked: `external` (the default) or `internal`. A
/// disk names at most one `<source>` and one `<target>` (what they say is the backend's).
fn disk_snapshot_location(doc: &Document<'_>, disk: &Element) -> Result<SnapshotLocation> {
    single(doc, disk, "source")?;
    single(doc, disk, "target")?;
    match disk.attribute("snapshot") {
        None | Some("external") => Ok(SnapshotLocation::External),
        Some("internal") => Ok(SnapshotLocation::Internal),
        Some(other) => Err(doc.error_at(
            disk.offset,
            format!(
                "disk snapshot mode '{}' is not 'external' or 'internal'",
                other.escape_default()
            ),
        )),
    }
}

/// Checks a backend type: it becomes part of a plugin file name, so only lowercase ASCII
/// letters, digits and `_`, 1 to 64 of them.
pub fn validate_backend_type(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArg(format!(
            "backend type '{}' must be 1 to 64 lowercase letters, digits or '_'",
            t.escape_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_type_name_uuid_and_disks() {
        let d = DomainXml::parse(
            "<domain type='qemu'><name>vm1</name><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>\
             <devices><disk type='file'><source file='/a.qcow2'/><target dev='vda'/></disk>\
             <disk snapshot='internal'><source file='/b.qcow2'/><target dev='vdb'/></disk></devices></domain>",
        )
        .unwrap();
        assert_eq!(d.backend_type, "qemu");
        assert_eq!(d.name, "vm1");
        assert_eq!(d.snapshot_location, SnapshotLocation::External);
        let internal = DomainXml::parse(
            "<domain type='qemu'><name>vm1</name><devices>\
             <disk snapshot='internal'><source file='/b.qcow2'/></disk></devices></domain>",
        )
        .unwrap();
        assert_eq!(internal.snapshot_location, SnapshotLocation::Internal);
    }

    #[test]
    fn refuses_bad_domains() {
        for (src, why) in [
            ("<domainsnapshot/>", "expected <domain>"),
            ("<domain><name>a</name></domain>", "no 'type'"),
            (
                "<domain type='../x'><name>a</name></domain>",
                "backend type",
            ),
            ("<domain type='null'></domain>", "no <name>"),
            (
                "<domain type='null'><name>a</name><name>b</name></domain>",
                "appears twice",
            ),
            (
                "<domain type='null'><name>a/b</name></domain>",
                "contains '/'",
            ),
            (
                "<domain type='null'><name>a</name><uuid>zz</uuid></domain>",
                "not a valid uuid",
            ),
            (
                "<domain type='null'><name>a</name><devices><disk snapshot='no'/></devices></domain>",
                "snapshot mode",
            ),
        ] {
            let e = DomainXml::parse(src).expect_err(src);
            assert!(
                e.to_string().contains(why),
                "{src}: expected {why:?} in {e}"
            );
            assert_eq!(e.code(), crate::ErrorCode::XmlError);
        }
    }
}
