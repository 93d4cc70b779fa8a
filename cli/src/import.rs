//! `snaptree import-libvirt DOMAIN_XML SNAPSHOT_XML...`: a domain's snapshot metadata as
//! libvirt keeps it, redefined into snaptree parents first (SEMANTICS.md §7.3).
//!
//! - The domain: the snaptree domain with the libvirt domain's name, when defined (on any
//!   backend: define it first with `snaptree define` to choose one, e.g. the sim with its
//!   `<sim dir>`); else one is defined from the libvirt XML: libvirt's `test` driver holds
//!   no data, so it maps to `null` (as does `--backend null`); a `kvm`/`qemu` domain goes
//!   to the QEMU backend over its qcow2 disks ([`crate::qemu_domain`]), which adopts the
//!   internal snapshots (by tag = name) and external overlay files (libvirt's
//!   `<stem>.<name>`) as they are. Offline unless `--qmp-socket` names a socket: libvirt
//!   owns QEMU's monitor.
//! - Order: parents first, and in each generation the snapshots on the current one's path
//!   first: the QEMU backend takes an internal disk's live state to derive from the
//!   snapshot adopted last on the one it derived from (qcow2 records no such link), so
//!   that it ends on current; a current snapshot with children cannot be placed that way
//!   on an internal disk, and is refused before anything runs.
//! - The snapshots: files, or directories of `*.xml` (libvirt's snapshot directory), read
//!   with snaptree's REDEFINE reader; ordered parents first from their `<parent><name>`;
//!   a parent in neither the files nor the domain is `NO_SNAPSHOT` before anything runs.
//! - Current: the document with `<active>1</active>` (libvirt's mark in its snapshot
//!   directory and in `snaptree export`), or `--current NAME`.
//! - Each snapshot is one REDEFINE, so a failure part-way leaves the ones before it; running
//!   the import again replaces what is there (same name, uuid, parent) and adds the rest.
//! - Afterwards the agreement check (SEMANTICS.md §3.7) runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use snaptree_engine::conn::Connection;
use snaptree_engine::xml::SnapshotXml;
use snaptree_engine::xml::dom::{Document, escape};
use snaptree_engine::{Error, ErrorCode};

use crate::qemu_domain::{QemuDomain, qemu_domain};
use crate::{Failure, read_file};

/// The libvirt domain's identity.
struct LibvirtDomain {
    name: String,
    uuid: Option<String>,
    virt_type: String,
}

fn libvirt_domain(path: &Path, text: &str) -> Result<LibvirtDomain, Failure> {
    let doc = Document::parse(text)?;
    if doc.root.name != "domain" {
        return Err(Error::InvalidArg(format!(
            "{} is not a libvirt domain document (its root is <{}>)",
            path.display(),
            doc.root.name
        ))
        .into());
    }
    let child = |n: &str| {
        doc.root
            .children_named(n)
            .next()
            .map(|e| e.text.trim().to_string())
    };
    Ok(LibvirtDomain {
        name: child("name")
            .ok_or_else(|| Error::InvalidArg(format!("{} has no <name>", path.display())))?,
        uuid: child("uuid"),
        virt_type: doc.root.attribute("type").unwrap_or("").to_string(),
    })
}

/// One snapshot document to redefine.
pub(crate) struct Doc {
    /// Where it came from, for messages.
    pub(crate) path: PathBuf,
    /// The document.
    pub(crate) text: String,
    /// The snapshot's name.
    pub(crate) name: String,
    /// Its parent's name.
    pub(crate) parent: Option<String>,
    /// Whether it carries `<active>1</active>` (current).
    pub(crate) active: bool,
}

fn read_docs(paths: &[PathBuf]) -> Result<Vec<Doc>, Failure> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Failure::Io(format!("cannot read {}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "xml"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    let mut docs = Vec::new();
    for path in files {
        let text = read_file(&path)?;
        docs.push(Doc::read(path, text)?);
    }
    Ok(docs)
}

impl Doc {
    /// One document read with snaptree's REDEFINE reader; `path` names it in errors.
    pub(crate) fn read(path: PathBuf, text: String) -> Result<Doc, Failure> {
        let x = SnapshotXml::parse_for_redefine(&text)?;
        let name = x
            .name
            .ok_or_else(|| Error::InvalidArg(format!("{} has no <name>", path.display())))?;
        let doc = Document::parse(&text)?;
        let active = doc
            .root
            .children_named("active")
            .any(|a| a.text.trim() == "1");
        Ok(Doc {
            path,
            text,
            name,
            parent: x.parent_name,
            active,
        })
    }
}

/// Orders the documents parents first, those on `current`'s path first in each
/// generation; `known` are the snapshots the domain already has.
pub(crate) fn parents_first(
    docs: Vec<Doc>,
    known: &BTreeSet<String>,
    current: Option<&str>,
) -> Result<Vec<Doc>, Failure> {
    let mut by_name: BTreeMap<String, Doc> = BTreeMap::new();
    for d in docs {
        if let Some(other) = by_name.get(&d.name) {
            return Err(Error::InvalidArg(format!(
                "snapshot '{}' is in both {} and {}",
                d.name,
                other.path.display(),
                d.path.display()
            ))
            .into());
        }
        by_name.insert(d.name.clone(), d);
    }
    for d in by_name.values() {
        if let Some(p) = &d.parent
            && !by_name.contains_key(p)
            && !known.contains(p)
        {
            return Err(Error::NoSnapshot(format!(
                "the parent '{p}' of snapshot '{}' ({}) is neither among the files nor in the domain",
                d.name,
                d.path.display()
            ))
            .into());
        }
    }
    let mut path: BTreeSet<String> = BTreeSet::new();
    let mut at = current.map(str::to_owned);
    while let Some(n) = at {
        if !path.insert(n.clone()) {
            break;
        }
        at = by_name.get(&n).and_then(|d| d.parent.clone());
    }
    let mut ordered = Vec::new();
    let mut placed: BTreeSet<String> = known.clone();
    while !by_name.is_empty() {
        let mut ready: Vec<String> = by_name
            .values()
            .filter(|d| d.parent.as_ref().is_none_or(|p| placed.contains(p)))
            .map(|d| d.name.clone())
            .collect();
        ready.sort_by_key(|n| !path.contains(n));
        if ready.is_empty() {
            let names: Vec<&str> = by_name.keys().map(String::as_str).collect();
            return Err(Error::InvalidArg(format!(
                "the parents of snapshots {} form a cycle",
                names.join(", ")
            ))
            .into());
        }
        for n in ready {
            if let Some(d) = by_name.remove(&n) {
                placed.insert(n);
                ordered.push(d);
            }
        }
    }
    Ok(ordered)
}

/// The import; returns what to print.
pub fn import(
    conn: &Connection,
    domain_xml: &Path,
    snapshots: &[PathBuf],
    backend: Option<&str>,
    current: Option<&str>,
    qmp_socket: Option<&Path>,
    dry_run: bool,
) -> Result<String, Failure> {
    let domain_text = read_file(domain_xml)?;
    let lv = libvirt_domain(domain_xml, &domain_text)?;
    let docs = read_docs(snapshots)?;
    let mut out = String::new();
    let existing = conn.list_domains()?.into_iter().find(|d| d.name == lv.name);
    let definition = match (&existing, backend) {
        (Some(info), _) => {
            if let Some(u) = &lv.uuid
                && !u.eq_ignore_ascii_case(&info.uuid.to_string())
            {
                return Err(Error::InvalidArg(format!(
                    "snaptree's domain '{}' has uuid {}, the libvirt domain XML says {u}",
                    lv.name, info.uuid
                ))
                .into());
            }
            None
        }
        (None, Some("null")) => Some(Definition::Null(null_definition(&lv))),
        (None, None) if lv.virt_type == "test" => Some(Definition::Null(null_definition(&lv))),
        (None, None | Some("qemu")) if matches!(lv.virt_type.as_str(), "kvm" | "qemu") => {
            let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
            Some(Definition::Qemu(qemu_domain(
                domain_xml,
                &domain_text,
                &texts,
                qmp_socket,
            )?))
        }
        (None, Some(t)) => {
            return Err(Error::InvalidArg(format!(
                "a '{t}' domain needs its own definition: define domain '{}' with `snaptree define` first, then import",
                lv.name
            ))
            .into());
        }
        (None, None) => {
            return Err(Error::OperationInvalid(format!(
                "libvirt domain '{}' is of type '{}', which no snaptree backend derives from its XML; \
                 define the domain with `snaptree define` first, or import the metadata alone with --backend null",
                lv.name, lv.virt_type
            ))
            .into());
        }
    };
    let known: BTreeSet<String> = match &existing {
        Some(_) => conn
            .open_domain(&lv.name)?
            .tree()?
            .iter()
            .map(|s| s.name.clone())
            .collect(),
        None => BTreeSet::new(),
    };
    let marked: Vec<&str> = docs
        .iter()
        .filter(|d| d.active)
        .map(|d| d.name.as_str())
        .collect();
    let current = match (current, marked.as_slice()) {
        (Some(c), _) => Some(c.to_string()),
        (None, []) => None,
        (None, [one]) => Some(one.to_string()),
        (None, many) => {
            return Err(Error::InvalidArg(format!(
                "several documents mark their snapshot current (<active>1</active>): {}",
                many.join(", ")
            ))
            .into());
        }
    };
    if let Some(c) = &current
        && !docs.iter().any(|d| &d.name == c)
        && !known.contains(c)
    {
        return Err(Error::NoSnapshot(format!(
            "the current snapshot '{c}' is neither among the files nor in the domain"
        ))
        .into());
    }
    if let (Some(Definition::Qemu(q)), Some(c)) = (&definition, &current)
        && q.disks.iter().any(|d| d.mode == "internal")
        && let Some(child) = docs
            .iter()
            .find(|d| d.parent.as_deref() == Some(c.as_str()))
    {
        return Err(Error::OperationInvalid(format!(
            "the current snapshot '{c}' has a child ('{}'): on internal-mode disks the qemu backend \
             cannot yet adopt a live state that derives from a snapshot with children; import with --current naming a leaf",
            child.name
        ))
        .into());
    }
    let docs = parents_first(docs, &known, current.as_deref())?;
    if dry_run {
        out.push_str("import (dry run, nothing changed):\n");
        match &definition {
            Some(def) => {
                out.push_str(&format!(
                    "  define domain '{}' on backend '{}'\n",
                    lv.name,
                    def.backend()
                ));
                if let Definition::Qemu(q) = def {
                    for disk in &q.disks {
                        out.push_str(&format!(
                            "  disk '{}' ({}): {} snapshots adopted as they are\n",
                            disk.target, disk.file, disk.mode
                        ));
                    }
                    out.push_str(match qmp_socket {
                        Some(_) => "  live mode through the QMP socket given\n",
                        None => "  offline (libvirt owns QEMU's monitor): steps only while the VM is shut off\n",
                    });
                }
            }
            None => out.push_str(&format!("  into domain '{}'\n", lv.name)),
        }
        for d in &docs {
            out.push_str(&format!(
                "  redefine '{}', child of {} ({})\n",
                d.name,
                d.parent
                    .as_ref()
                    .map_or("nothing".to_string(), |p| format!("'{p}'")),
                d.path.display()
            ));
        }
        out.push_str(&format!(
            "  current: {}\n",
            current.map_or("unchanged".to_string(), |c| format!("'{c}'"))
        ));
        return Ok(out);
    }
    if let Some(def) = &definition {
        conn.define_domain(def.xml())?;
        out.push_str(&format!(
            "Domain '{}' defined (backend '{}')\n",
            lv.name,
            def.backend()
        ));
    }
    let mut d = conn.open_domain(&lv.name)?;
    for doc in &docs {
        let is_current = current.as_deref() == Some(doc.name.as_str());
        d.redefine_snapshot(&doc.text, is_current)
            .map_err(|e| with_file(e, &doc.path))?;
    }
    if let Some(c) = &current
        && !docs.iter().any(|doc| &doc.name == c)
    {
        // Current names a snapshot the domain already had: redefine it as it is.
        let s = d.tree()?.require_name(c, &lv.name)?.clone();
        let xml = d.snapshot_xml(&s.uuid)?;
        d.redefine_snapshot(&xml, true)?;
    }
    d.check_agreement()?;
    out.push_str(&format!(
        "Imported {} snapshot{} into domain '{}'{}\n",
        docs.len(),
        if docs.len() == 1 { "" } else { "s" },
        lv.name,
        current.map_or(String::new(), |c| format!(", current '{c}'"))
    ));
    Ok(out)
}

/// The snaptree domain an import defines.
enum Definition {
    /// Metadata only.
    Null(String),
    /// The QEMU backend over the libvirt domain's qcow2 disks.
    Qemu(QemuDomain),
}

impl Definition {
    fn xml(&self) -> &str {
        match self {
            Definition::Null(xml) => xml,
            Definition::Qemu(q) => &q.xml,
        }
    }

    fn backend(&self) -> &'static str {
        match self {
            Definition::Null(_) => "null",
            Definition::Qemu(_) => "qemu",
        }
    }
}

fn null_definition(lv: &LibvirtDomain) -> String {
    let uuid = lv
        .uuid
        .as_ref()
        .map_or(String::new(), |u| format!("<uuid>{}</uuid>", escape(u)));
    format!(
        "<domain type='null'><name>{}</name>{uuid}</domain>",
        escape(&lv.name)
    )
}

/// The error of one document's REDEFINE, naming the file; the code is kept.
pub(crate) fn with_file(e: Error, path: &Path) -> Error {
    let what = format!("{} (earlier files were imported)", path.display());
    match e.code() {
        ErrorCode::NoSnapshot => Error::NoSnapshot(format!("{what}: {e}")),
        ErrorCode::SnapshotExists => Error::SnapshotExists(format!("{what}: {e}")),
        ErrorCode::InvalidArg => Error::InvalidArg(format!("{what}: {e}")),
        ErrorCode::OperationInvalid => Error::OperationInvalid(format!("{what}: {e}")),
        _ => e,
    }
}
