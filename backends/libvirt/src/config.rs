//! What the backend reads from XML: the snaptree domain's `<libvirt>` element, and the
//! disks of libvirt's own domain and snapshot definitions.
//!
//! ```xml
//! <domain type='libvirt'>
//!   <name>vm</name>
//!   <libvirt uri='qemu:///system' domain='web01'/>
//! </domain>
//! ```
//!
//! `bandwidth='BYTES'` (optional) limits the block jobs the backend runs on a running
//! domain to that many bytes per second, so that a busy host keeps I/O for its guests.

use std::path::{Path, PathBuf};

use snaptree_engine::xml::dom::{Document, Element, escape};
use snaptree_sdk::{PluginError, PluginResult};

/// Where the domain lives: the libvirt connection URI and the libvirt domain's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The connection URI (`qemu:///system`).
    pub uri: String,
    /// The libvirt domain's name.
    pub domain: String,
    /// The block jobs' bandwidth limit in bytes per second; 0: none.
    pub bandwidth: u64,
}

impl Target {
    /// Reads the `<libvirt uri='...' domain='...'/>` element of a snaptree domain document.
    pub fn parse(domain_xml: &str) -> PluginResult<Target> {
        let doc =
            Document::parse(domain_xml).map_err(|e| PluginError::invalid_arg(e.to_string()))?;
        let mut found = doc.root.children_named("libvirt");
        let el = found.next().ok_or_else(|| {
            PluginError::invalid_arg("the domain has no <libvirt uri='...' domain='...'/> element")
        })?;
        if found.next().is_some() {
            return Err(PluginError::invalid_arg(
                "the domain has more than one <libvirt> element",
            ));
        }
        let attr = |name: &str| -> PluginResult<String> {
            match el.attribute(name) {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(PluginError::invalid_arg(format!(
                    "<libvirt> has no '{name}' attribute"
                ))),
            }
        };
        let bandwidth = match el.attribute("bandwidth") {
            None => 0,
            Some(v) => v.parse::<u64>().ok().filter(|b| *b > 0).ok_or_else(|| {
                PluginError::invalid_arg(format!(
                    "<libvirt bandwidth='{v}'> is not a positive number of bytes per second"
                ))
            })?,
        };
        Ok(Target {
            uri: attr("uri")?,
            domain: attr("domain")?,
            bandwidth,
        })
    }
}

/// How a disk keeps its snapshots (its `snapshot` attribute in libvirt's domain XML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// qcow2 internal snapshots inside the disk file (libvirt's default when unset).
    Internal,
    /// A new overlay file per snapshot (disk-only).
    External,
}

impl Mode {
    /// The attribute value libvirt uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Internal => "internal",
            Mode::External => "external",
        }
    }
}

/// One `<disk device='disk'>` of a libvirt domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `<target dev>`: libvirt's name for the disk in snapshot XML.
    pub target: String,
    /// `<source file>`: the active image.
    pub source: PathBuf,
    /// `<alias name>` in the live definition (`virtio-disk0`), when running.
    pub alias: Option<String>,
    /// Its snapshot mode.
    pub mode: Mode,
}

fn bad(what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::backend(format!("libvirt's {what} cannot be read: {e}"))
}

/// The snapshot-capable disks of a libvirt domain definition, in document order. Disks
/// with `snapshot='no'` and non-disk devices (CD-ROMs) are left out.
pub fn disks(libvirt_domain_xml: &str) -> PluginResult<Vec<Disk>> {
    let doc = Document::parse(libvirt_domain_xml).map_err(|e| bad("domain definition", e))?;
    let mut out = Vec::new();
    for devices in doc.root.children_named("devices") {
        for disk in devices.children_named("disk") {
            if disk.attribute("device").is_some_and(|d| d != "disk") {
                continue;
            }
            let mode = match disk.attribute("snapshot") {
                Some("no") => continue,
                None | Some("internal") => Mode::Internal,
                Some("external") => Mode::External,
                Some(other) => {
                    return Err(PluginError::backend(format!(
                        "a disk has snapshot='{other}', which this backend does not handle"
                    )));
                }
            };
            let target = child_attr(disk, "target", "dev")
                .ok_or_else(|| bad("domain definition", "a disk has no <target dev>"))?;
            let source = child_attr(disk, "source", "file").ok_or_else(|| {
                PluginError::backend(format!(
                    "disk {target} is not a file (<source file='...'>); only file disks are handled"
                ))
            })?;
            out.push(Disk {
                alias: child_attr(disk, "alias", "name"),
                target,
                source: PathBuf::from(source),
                mode,
            });
        }
    }
    Ok(out)
}

fn child_attr(el: &Element, child: &str, attr: &str) -> Option<String> {
    el.children_named(child)
        .next()
        .and_then(|c| c.attribute(attr))
        .map(str::to_owned)
}

/// What the backend needs from a libvirt snapshot definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotDef {
    /// `<description>`.
    pub description: String,
    /// `<creationTime>`.
    pub creation_time: String,
    /// Each `<disks><disk name>`'s `<source file>`: for an external snapshot, the overlay
    /// created when it was taken (the snapshot's content is that overlay's backing chain).
    pub sources: Vec<(String, Option<PathBuf>)>,
    /// Each disk's `<source file>` in the domain definition the snapshot keeps: the image
    /// that was active when it was taken (for an external snapshot, the one holding Σ(S)).
    pub frozen: Vec<(String, PathBuf)>,
}

impl SnapshotDef {
    /// The image that held disk `target` when snapshot `name` was taken (`frozen`).
    pub fn frozen_image(
        &self,
        name: impl std::fmt::Display,
        target: &str,
    ) -> PluginResult<PathBuf> {
        self.frozen
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, f)| f.clone())
            .ok_or_else(|| {
                PluginError::backend(format!("snapshot {name} keeps no image for disk {target}"))
            })
    }
}

/// Parses a libvirt snapshot definition.
pub fn snapshot_def(xml: &str) -> PluginResult<SnapshotDef> {
    let doc = Document::parse(xml).map_err(|e| bad("snapshot definition", e))?;
    let text = |name: &str| {
        doc.root
            .children_named(name)
            .next()
            .map(|e| e.text.clone())
            .unwrap_or_default()
    };
    let mut sources = Vec::new();
    for disks in doc.root.children_named("disks") {
        for d in disks.children_named("disk") {
            if let Some(name) = d.attribute("name") {
                sources.push((
                    name.to_owned(),
                    child_attr(d, "source", "file").map(PathBuf::from),
                ));
            }
        }
    }
    let mut frozen = Vec::new();
    for dom in doc.root.children_named("domain") {
        for devices in dom.children_named("devices") {
            for d in devices.children_named("disk") {
                if let (Some(t), Some(f)) = (
                    child_attr(d, "target", "dev"),
                    child_attr(d, "source", "file"),
                ) {
                    frozen.push((t, PathBuf::from(f)));
                }
            }
        }
    }
    Ok(SnapshotDef {
        frozen,
        description: text("description"),
        creation_time: text("creationTime"),
        sources,
    })
}

/// The backing chain of disk `target` in a running domain's live definition, active image
/// first (libvirt fills in each `<backingStore>` while QEMU runs the domain).
pub fn chain(live_domain_xml: &str, target: &str) -> PluginResult<Vec<PathBuf>> {
    let doc = Document::parse(live_domain_xml).map_err(|e| bad("domain definition", e))?;
    for devices in doc.root.children_named("devices") {
        for disk in devices.children_named("disk") {
            if child_attr(disk, "target", "dev").as_deref() != Some(target) {
                continue;
            }
            let mut out = Vec::new();
            let mut el = disk;
            while let Some(file) = child_attr(el, "source", "file") {
                out.push(PathBuf::from(file));
                match el.children_named("backingStore").next() {
                    Some(b) => el = b,
                    None => break,
                }
            }
            return Ok(out);
        }
    }
    Err(PluginError::backend(format!(
        "the running domain has no disk {target}"
    )))
}

/// A snapshot definition whose disk images `from` became `to` (`from` was committed into
/// its backing file `to`): each `<source file='from'/>` of the domain definitions inside
/// reads `to`, and the `<backingStore>` recorded under it (whose top was `to`) goes, so
/// libvirt reads the chain from the images again instead of listing `to` twice.
pub fn repointed(xml: &str, from: &Path, to: &Path) -> String {
    let old = format!("<source file='{}'", escape(&from.to_string_lossy()));
    let new = format!("<source file='{}'/>", escape(&to.to_string_lossy()));
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find(&old) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find("/>") else { break };
        out.push_str(&new);
        rest = &rest[end + 2..];
        let trimmed = rest.trim_start();
        if trimmed.starts_with("<backingStore") {
            let skipped = rest.len() - trimmed.len();
            if let Some(len) = element_len(trimmed, "backingStore") {
                rest = &rest[skipped + len..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of the element `name` that `text` starts with (nested ones of the same
/// name counted), or None when it does not close.
fn element_len(text: &str, name: &str) -> Option<usize> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut depth = 0usize;
    let mut at = 0;
    loop {
        let next_open = text[at..].find(&open).map(|i| at + i);
        let next_close = text[at..].find(&close).map(|i| at + i);
        match (next_open, next_close) {
            (Some(o), c) if c.is_none_or(|c| o < c) => {
                let tag_end = o + text[o..].find('>')?;
                if text[..tag_end].ends_with('/') {
                    if depth == 0 {
                        return Some(tag_end + 1);
                    }
                } else {
                    depth += 1;
                }
                at = tag_end + 1;
            }
            (_, Some(c)) => {
                depth = depth.checked_sub(1)?;
                at = c + close.len();
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_read_and_missing_parts_are_named() {
        let t = Target::parse(
            "<domain type='libvirt'><name>vm</name><libvirt uri='qemu:///system' domain='web'/></domain>",
        )
        .unwrap();
        assert_eq!(t.uri, "qemu:///system");
        assert_eq!(t.domain, "web");
        let e = Target::parse("<domain type='libvirt'><name>vm</name></domain>").unwrap_err();
        assert!(e.message().contains("<libvirt"), "{}", e.message());
        let e = Target::parse(
            "<domain type='libvirt'><name>vm</name><libvirt uri='qemu:///system'/></domain>",
        )
        .unwrap_err();
        assert!(e.message().contains("'domain'"), "{}", e.message());
    }

    #[test]
    fn bandwidth_is_optional_and_checked() {
        let doc = |b: &str| {
            format!(
                "<domain type='libvirt'><name>vm</name><libvirt uri='u' domain='d'{b}/></domain>"
            )
        };
        assert_eq!(Target::parse(&doc("")).unwrap().bandwidth, 0);
        assert_eq!(
            Target::parse(&doc(" bandwidth='1048576'"))
                .unwrap()
                .bandwidth,
            1 << 20
        );
        let e = Target::parse(&doc(" bandwidth='fast'")).unwrap_err();
        assert!(e.message().contains("bandwidth='fast'"), "{}", e.message());
        assert!(Target::parse(&doc(" bandwidth='0'")).is_err());
    }

    #[test]
    fn the_live_chain_is_read_active_first() {
        let xml = "<domain><devices><disk type='file' device='disk'>\
            <source file='/c' index='3'/><backingStore type='file' index='2'><format type='qcow2'/>\
            <source file='/b'/><backingStore type='file' index='1'><source file='/a'/><backingStore/>\
            </backingStore></backingStore><target dev='vda'/></disk></devices></domain>";
        let c = chain(xml, "vda").unwrap();
        assert_eq!(c, ["/c", "/b", "/a"].map(PathBuf::from));
        assert!(chain(xml, "vdb").is_err());
    }

    #[test]
    fn repointing_drops_the_committed_image_from_the_recorded_chain() {
        let xml = "<s><domain><disk><source file='/y' index='3'/>\n  <backingStore type='file'>\
            <format type='qcow2'/><source file='/x'/><backingStore type='file'><source file='/w'/>\
            <backingStore/></backingStore></backingStore>\n<target dev='vda'/></disk></domain>\
            <inactiveDomain><disk><source file='/y'/><target dev='vda'/></disk></inactiveDomain>\
            <disks><disk name='vda'><source file='/z'/></disk></disks></s>";
        let out = repointed(xml, Path::new("/y"), Path::new("/x"));
        assert_eq!(
            out,
            "<s><domain><disk><source file='/x'/>\n<target dev='vda'/></disk></domain>\
            <inactiveDomain><disk><source file='/x'/><target dev='vda'/></disk></inactiveDomain>\
            <disks><disk name='vda'><source file='/z'/></disk></disks></s>"
        );
        // Nothing to repoint: unchanged.
        assert_eq!(repointed(xml, Path::new("/q"), Path::new("/x")), xml);
    }

    #[test]
    fn disks_skip_cdroms_and_read_modes() {
        let xml = "<domain><devices>\
            <disk type='file' device='cdrom'><source file='/x.iso'/><target dev='hdc'/></disk>\
            <disk type='file' device='disk' snapshot='external'><source file='/a.qcow2'/><target dev='vda'/><alias name='virtio-disk0'/></disk>\
            <disk type='file'><source file='/b.qcow2'/><target dev='vdb'/></disk>\
            <disk type='file' snapshot='no'><source file='/c.qcow2'/><target dev='vdc'/></disk>\
            </devices></domain>";
        let d = disks(xml).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].mode, Mode::External);
        assert_eq!(d[0].alias.as_deref(), Some("virtio-disk0"));
        assert_eq!(d[1].mode, Mode::Internal);
        assert_eq!(d[1].source, PathBuf::from("/b.qcow2"));
    }
}
