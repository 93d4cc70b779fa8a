//! The QEMU backend's definition of a libvirt `kvm`/`qemu` domain, for `import-libvirt`:
//! its qcow2 file disks, each in the mode its snapshots use.
//!
//! - Disks: every `<devices><disk device='disk'>` that libvirt snapshots (not
//!   `snapshot='no'`, not read-only); each must be a `type='file'` qcow2 image (`<driver
//!   type='qcow2'>`), since only qcow2 holds snapshots.
//! - Mode: what the snapshot documents' `<disks><disk name=TARGET snapshot=…>` say (all must
//!   agree), else the disk's own `snapshot` attribute, else internal (libvirt's default for
//!   qcow2).
//! - Live mode: libvirt owns QEMU's monitor socket, so the domain is defined offline (steps
//!   run with qemu-img, only while the VM is shut off) unless `--qmp-socket` names a QMP
//!   socket QEMU also listens on for snaptree.

use std::collections::BTreeMap;
use std::path::Path;

use snaptree_engine::Error;
use snaptree_engine::xml::dom::{Document, Element, escape};

use crate::Failure;

/// One disk of the definition.
pub struct QemuDisk {
    /// The target device (`vda`).
    pub target: String,
    /// The image file.
    pub file: String,
    /// `internal` or `external`.
    pub mode: &'static str,
}

/// The definition: the document for `snaptree define`, and its disks.
pub struct QemuDomain {
    /// The domain document.
    pub xml: String,
    /// Its disks, in document order.
    pub disks: Vec<QemuDisk>,
}

fn invalid(why: String) -> Failure {
    Error::InvalidArg(why).into()
}

/// The modes the snapshot documents give each disk target.
fn snapshot_modes(snapshots: &[&str]) -> Result<BTreeMap<String, &'static str>, Failure> {
    let mut modes: BTreeMap<String, &'static str> = BTreeMap::new();
    for text in snapshots {
        let doc = Document::parse(text)?;
        for disk in doc
            .root
            .children_named("disks")
            .flat_map(|d| d.children_named("disk"))
        {
            let (Some(name), Some(mode)) = (disk.attribute("name"), disk.attribute("snapshot"))
            else {
                continue;
            };
            let mode = match mode {
                "internal" => "internal",
                "external" => "external",
                _ => continue,
            };
            match modes.insert(name.to_owned(), mode) {
                Some(other) if other != mode => {
                    return Err(invalid(format!(
                        "disk '{name}' has both internal and external snapshots: the qemu backend keeps one mode per disk"
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(modes)
}

fn child<'e>(el: &'e Element, name: &'e str) -> Option<&'e Element> {
    el.children_named(name).next()
}

/// Builds the QEMU backend's definition of the libvirt domain in `text` (from `path`),
/// with the modes `snapshots` (their documents) use.
pub fn qemu_domain(
    path: &Path,
    text: &str,
    snapshots: &[&str],
    qmp_socket: Option<&Path>,
) -> Result<QemuDomain, Failure> {
    let doc = Document::parse(text)?;
    let name = child(&doc.root, "name")
        .map(|n| n.text.trim().to_owned())
        .ok_or_else(|| invalid(format!("{} has no <name>", path.display())))?;
    let uuid = child(&doc.root, "uuid").map(|u| u.text.trim().to_owned());
    let modes = snapshot_modes(snapshots)?;
    let mut disks = Vec::new();
    for (i, el) in doc
        .root
        .children_named("devices")
        .flat_map(|d| d.children_named("disk"))
        .enumerate()
    {
        let target = child(el, "target")
            .and_then(|t| t.attribute("dev"))
            .map_or_else(|| format!("#{}", i + 1), str::to_owned);
        let device = el.attribute("device").unwrap_or("disk");
        if device != "disk"
            || el.attribute("snapshot") == Some("no")
            || child(el, "readonly").is_some()
        {
            continue;
        }
        let file = match (
            el.attribute("type"),
            child(el, "source").and_then(|s| s.attribute("file")),
        ) {
            (Some("file") | None, Some(f)) => f.to_owned(),
            (t, _) => {
                return Err(invalid(format!(
                    "disk '{target}' of libvirt domain '{name}' is not a file (type '{}'): the qemu backend manages qcow2 files only",
                    t.unwrap_or("?")
                )));
            }
        };
        let format = child(el, "driver").and_then(|d| d.attribute("type"));
        if format != Some("qcow2") {
            return Err(invalid(format!(
                "disk '{target}' ({file}) of libvirt domain '{name}' is {}, not qcow2: it cannot hold snapshots",
                format.map_or("of no stated format".to_owned(), |f| format!("'{f}'"))
            )));
        }
        let mode = match (modes.get(&target), el.attribute("snapshot")) {
            (Some(m), _) => *m,
            (None, Some("external")) => "external",
            _ => "internal",
        };
        let discard = child(el, "driver")
            .and_then(|d| d.attribute("discard"))
            .filter(|d| matches!(*d, "unmap" | "ignore"));
        disks.push((target, file, mode, discard));
    }
    if disks.is_empty() {
        return Err(invalid(format!(
            "libvirt domain '{name}' has no qcow2 disk to snapshot"
        )));
    }
    let mut xml = format!("<domain type='qemu'><name>{}</name>", escape(&name));
    if let Some(u) = &uuid {
        xml.push_str(&format!("<uuid>{}</uuid>", escape(u)));
    }
    if let Some(q) = qmp_socket {
        xml.push_str(&format!(
            "<qmp socket='{}'/>",
            escape(&q.display().to_string())
        ));
    }
    xml.push_str("<devices>");
    for (target, file, mode, discard) in &disks {
        let driver = discard.map_or(String::new(), |d| format!("<driver discard='{d}'/>"));
        xml.push_str(&format!(
            "<disk type='file' device='disk' snapshot='{mode}'>{driver}<source file='{}'/><target dev='{}'/></disk>",
            escape(file),
            escape(target)
        ));
    }
    xml.push_str("</devices></domain>");
    Ok(QemuDomain {
        xml,
        disks: disks
            .into_iter()
            .map(|(target, file, mode, _)| QemuDisk { target, file, mode })
            .collect(),
    })
}
