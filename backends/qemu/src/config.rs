//! The domain document as this backend reads it, parsed once when the backend opens: every
//! `<devices><disk>` (its file, target, snapshot mode and `<driver discard>`) and the QMP
//! socket (`<qmp socket='PATH'/>` inside `<domain>`) that turns live mode on.
//!
//! The engine validates the rest of the document (`DomainXml::from_document`, on the same
//! parsed tree) and keeps only hypervisor-agnostic facts; what a disk is belongs here.

use std::path::PathBuf;

use snaptree_engine::xml::DomainXml;
use snaptree_engine::xml::dom::{Document, Element};

use crate::disk::{Disk, Mode};
use crate::error::{Result, error};

/// What the backend needs from a domain document.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The disks, in document order.
    pub(crate) disks: Vec<Disk>,
    /// QEMU's QMP socket, when the domain names one (live mode).
    pub(crate) qmp_socket: Option<PathBuf>,
}

impl Config {
    /// Parses and checks a domain document: every disk must have an absolute, distinct
    /// `<source file=...>` that is not a symbolic link.
    pub(crate) fn parse(xml: &str) -> Result<Config> {
        let doc = Document::parse(xml)?;
        let domain = DomainXml::from_document(&doc)?;
        let elements: Vec<&Element> = doc
            .root
            .children_named("devices")
            .flat_map(|devices| devices.children_named("disk"))
            .collect();
        let mut disks = disks_of(&domain.name, &elements)?;
        let qmp_socket = qmp_socket(&doc)?;
        for (i, (disk, element)) in disks.iter_mut().zip(&elements).enumerate() {
            disk.discard = discard_mode(i, element)?;
        }
        Ok(Config { disks, qmp_socket })
    }
}

/// The disks of domain `name`, from its `<disk>` elements.
fn disks_of(name: &str, elements: &[&Element]) -> Result<Vec<Disk>> {
    if elements.is_empty() {
        return Err(error(format!(
            "domain '{name}' has no <disk>: there is nothing to snapshot"
        )));
    }
    let mut disks: Vec<Disk> = Vec::new();
    for (i, el) in elements.iter().enumerate() {
        let label = child_attribute(el, "target", "dev")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{}", i + 1));
        let Some(source) = child_attribute(el, "source", "file") else {
            return Err(error(format!(
                "disk '{label}' of domain '{name}' has no <source file=...>: the qemu backend manages qcow2 files only"
            )));
        };
        let live = PathBuf::from(source);
        if !live.is_absolute() || live.file_name().is_none() {
            return Err(error(format!(
                "disk '{label}' of domain '{name}' has source file '{source}', which is not an absolute file path"
            )));
        }
        // A symlink would be renamed instead of the image it points to, and the domain
        // would end up with a link to a frozen layer as its disk.
        if live
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(error(format!(
                "disk '{label}' of domain '{name}': {source} is a symbolic link; name the image itself"
            )));
        }
        if let Some(other) = disks.iter().find(|o| o.live == live) {
            return Err(error(format!(
                "disks '{}' and '{label}' of domain '{name}' use the same file {source}",
                other.label
            )));
        }
        // The engine has checked the attribute: anything but `internal` is external.
        let mode = match el.attribute("snapshot") {
            Some("internal") => Mode::Internal,
            _ => Mode::External,
        };
        disks.push(Disk {
            label,
            live,
            mode,
            discard: None,
            names: Default::default(),
        });
    }
    Ok(disks)
}

/// Attribute `attribute` of `el`'s first child `child`.
fn child_attribute<'e>(el: &'e Element, child: &'e str, attribute: &str) -> Option<&'e str> {
    let found = el.children_named(child).next()?;
    found.attribute(attribute)
}

/// The QMP socket a domain document names, if any: `<domain><qmp socket='PATH'/>`.
fn qmp_socket(doc: &Document<'_>) -> Result<Option<PathBuf>> {
    let mut found = doc.root.children_named("qmp");
    let Some(el) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(error("the domain names more than one <qmp> socket"));
    }
    let Some(socket) = el.attribute("socket") else {
        return Err(error("<qmp> has no 'socket' attribute"));
    };
    let path = PathBuf::from(socket);
    if !path.is_absolute() {
        return Err(error(format!(
            "<qmp socket='{socket}'> is not an absolute path"
        )));
    }
    Ok(Some(path))
}

/// Disk number `i`'s `<driver discard=...>` (libvirt's `unmap` or `ignore`): what a live
/// node replacing the disk's must repeat, since QEMU does not report it.
fn discard_mode(i: usize, disk: &Element) -> Result<Option<String>> {
    match child_attribute(disk, "driver", "discard") {
        None => Ok(None),
        Some(v @ ("unmap" | "ignore")) => Ok(Some(v.to_owned())),
        Some(other) => Err(error(format!(
            "disk #{} has <driver discard='{other}'>: expected 'unmap' or 'ignore'",
            i + 1
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(disks: &str) -> String {
        format!("<domain type='qemu'><name>vm</name><devices>{disks}</devices></domain>")
    }

    #[test]
    fn reads_files_targets_and_modes_of_the_disks() {
        let c = Config::parse(&domain(
            "<disk type='file'><source file='/a.qcow2'/><target dev='vda'/></disk>\
             <disk snapshot='internal'><source file='/b.qcow2'/><target dev='vdb'/></disk>",
        ))
        .unwrap();
        assert_eq!(c.disks.len(), 2);
        assert_eq!(c.disks[0].mode, Mode::External);
        assert_eq!(c.disks[1].mode, Mode::Internal);
        assert_eq!(c.disks[1].live, PathBuf::from("/b.qcow2"));
        assert_eq!(c.disks[1].label, "vdb");
        assert_eq!(c.qmp_socket, None);
    }

    #[test]
    fn refuses_disks_it_cannot_manage_naming_them() {
        for (xml, why) in [
            ("", "has no <disk>"),
            (
                "<disk><target dev='vdb'/></disk>",
                "disk 'vdb' of domain 'vm' has no <source file",
            ),
            (
                "<disk><source file='rel.qcow2'/></disk>",
                "disk '#1' of domain 'vm' has source file 'rel.qcow2'",
            ),
            (
                "<disk><source file='/a'/><target dev='x'/></disk><disk><source file='/a'/><target dev='y'/></disk>",
                "disks 'x' and 'y'",
            ),
        ] {
            let e = Config::parse(&domain(xml)).unwrap_err();
            assert!(
                e.to_string().contains(why),
                "{xml}: expected {why:?} in {e}"
            );
        }
    }

    #[test]
    fn discard_modes_follow_the_disks_and_refuse_unknown_values() {
        let xml = "<domain type='qemu'><name>vm</name><devices>\
             <disk><driver name='qemu' discard='unmap'/><source file='/a'/></disk>\
             <disk><source file='/b'/></disk>\
             <disk><driver discard='ignore'/><source file='/c'/></disk>\
             </devices></domain>";
        let discard_modes = |xml: &str| {
            Config::parse(xml).map(|c| c.disks.into_iter().map(|d| d.discard).collect::<Vec<_>>())
        };
        assert_eq!(
            discard_modes(xml).unwrap(),
            vec![Some("unmap".to_owned()), None, Some("ignore".to_owned())]
        );
        let bad = xml.replace("'ignore'", "'trim'");
        let e = discard_modes(&bad).unwrap_err().full_message();
        assert!(e.contains("disk #3") && e.contains("'trim'"), "{e}");
    }

    #[test]
    fn reads_the_qmp_socket_and_refuses_a_relative_one() {
        let with = |qmp: &str| {
            Config::parse(&format!(
                "<domain type='qemu'><name>vm</name>{qmp}<devices><disk><source file='/a'/></disk></devices></domain>"
            ))
        };
        assert_eq!(
            with("<qmp socket='/run/vm.qmp'/>").unwrap().qmp_socket,
            Some(PathBuf::from("/run/vm.qmp"))
        );
        let e = with("<qmp socket='vm.qmp'/>").unwrap_err().to_string();
        assert!(e.contains("not an absolute path"), "{e}");
    }
}
