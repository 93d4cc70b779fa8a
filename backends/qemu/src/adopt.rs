//! Adoption (REDEFINE, SEMANTICS.md §7.3): taking on snapshots whose data another tool made
//! — libvirt, `qemu-img snapshot -c`, scripts — without renaming or copying anything.
//!
//! - Internal mode: the snapshot's internal snapshot is found by its uuid (one snaptree
//!   made) or by the snapshot's name (libvirt tags internal snapshots by name), on every
//!   internal disk, exactly once each. The disk's metadata file records the snapshot, its
//!   parent and the tag; every later step resolves the tag through it ([`Disk::tag`]).
//! - External mode: the snapshot's data is the file the overlay made when it was taken
//!   backs onto. That overlay is found in the live image's backing chain by libvirt's
//!   naming (`<stem>.<snapshot name>`, its default, the name being the creation seconds
//!   when none was given), else by the backing links alone: the file of a snapshot with a
//!   parent is the one in the chain backed by the parent's, and the file of a root is the
//!   bottom of the chain. A layer snaptree made itself (`<uuid>.qcow2`) is found by its
//!   uuid. The disk's metadata file records uuid → file; every later step resolves the
//!   file through it ([`Disk::layer`]).
//!
//! Every disk is checked before any record is written, so a failed adoption changes
//! nothing; adopting again what is adopted (the engine's roll-forward) changes nothing.

use std::path::{Path, PathBuf};

use snaptree_engine::Adoption;

use crate::ctx::Ctx;
use crate::disk::{Disk, Mode};
use crate::error::{QemuError, Result};
use crate::offline::header;
use crate::offline::internal::tag;
use crate::offline::meta::Meta;

/// The longest backing chain followed.
const MAX_CHAIN: usize = 4096;

/// Reads every disk's adopted names from its metadata file. An adopted file that no longer
/// exists was freed by a step and is forgotten.
pub(crate) fn refresh(disks: &mut [Disk]) -> Result<()> {
    for d in disks.iter_mut() {
        let mut names = Meta::load(&d.meta())?.names;
        if d.mode == Mode::External {
            names.retain(|_, file| Path::new(file).exists());
        }
        d.names = names;
    }
    Ok(())
}

/// Drops the records of adopted files that steps have freed, so that a disk left without
/// snapshots has no snaptree file beside it (external mode; internal records drop a
/// snapshot's tag with the snapshot).
pub(crate) fn forget_freed(ctx: Ctx<'_>, disks: &[Disk]) -> Result<()> {
    for d in disks.iter().filter(|d| d.mode == Mode::External) {
        let meta = Meta::load(&d.meta())?;
        let mut next = meta.clone();
        next.names.retain(|_, file| Path::new(file).exists());
        if next != meta {
            next.store(ctx, &d.meta())?;
        }
    }
    Ok(())
}

/// Adopts `a` on every disk: checks them all, then records it. `live_tags` are the internal
/// snapshot tags of each disk as a running QEMU reports them (live mode), else read from
/// the images.
pub(crate) fn adopt(
    ctx: Ctx<'_>,
    disks: &mut [Disk],
    live_tags: Option<Vec<Vec<String>>>,
    a: &Adoption,
) -> Result<()> {
    refresh(disks)?;
    let mut writes: Vec<(PathBuf, Meta, Meta)> = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let meta = Meta::load(&d.meta())?;
        let next = match d.mode {
            Mode::Internal => {
                let tags = match &live_tags {
                    Some(t) => t[i].clone(),
                    None => ctx.tags(&d.live)?,
                };
                internal(d, &meta, &tags, a)
            }
            Mode::External => external(d, &meta, a),
        }
        .map_err(|e| refused(a, e))?;
        if next != meta {
            writes.push((d.meta(), next, meta));
        }
    }
    for (path, next, _) in &writes {
        next.store(ctx, path)?;
    }
    ctx.sync_dirty()?;
    refresh(disks)
}

fn missing(why: String) -> QemuError {
    QemuError::OperationInvalid(why)
}

/// A refusal names the snapshot being adopted first: the reasons below name the disk and
/// the file or tag at fault.
fn refused(a: &Adoption, e: QemuError) -> QemuError {
    match e {
        QemuError::OperationInvalid(why) => QemuError::OperationInvalid(format!(
            "snapshot '{}' ({}) cannot be adopted: {why}",
            a.name, a.snapshot
        )),
        other => other,
    }
}

/// Internal mode: the tag that holds `a.snapshot` on this disk, checked and recorded.
fn internal(d: &Disk, meta: &Meta, tags: &[String], a: &Adoption) -> Result<Meta> {
    if let Some(recorded) = meta.parents.get(&a.snapshot) {
        return if *recorded == a.parent {
            Ok(meta.clone())
        } else {
            Err(missing(format!(
                "{}: it is already recorded with parent {recorded:?}, not {:?}",
                d.describe(),
                a.parent
            )))
        };
    }
    if let Some(p) = a.parent
        && !meta.parents.contains_key(&p)
    {
        return Err(missing(format!(
            "{}: its parent {p} holds no data on this disk (adopt parents first)",
            d.describe()
        )));
    }
    let count = |t: &str| tags.iter().filter(|x| *x == t).count();
    let own = tag(&a.snapshot);
    let chosen = if count(&own) > 0 { own } else { a.name.clone() };
    match count(&chosen) {
        0 => {
            return Err(missing(format!(
                "{} holds no internal snapshot tagged '{}' or {}",
                d.describe(),
                a.name,
                a.snapshot
            )));
        }
        1 => {}
        n => {
            return Err(missing(format!(
                "{} holds {n} internal snapshots tagged '{chosen}': which one is meant is ambiguous",
                d.describe()
            )));
        }
    }
    if let Some((other, _)) = meta
        .names
        .iter()
        .find(|(u, t)| **t == chosen && meta.parents.contains_key(u))
    {
        return Err(missing(format!(
            "{}: internal snapshot '{chosen}' is already adopted as snapshot {other}",
            d.describe()
        )));
    }
    let name = (chosen != tag(&a.snapshot)).then_some(chosen.as_str());
    Ok(meta.adopted(a.snapshot, a.parent, name))
}

/// One file of the live image's backing chain, with what it is backed by.
struct Link {
    file: PathBuf,
    backing: Option<PathBuf>,
}

/// The live image's backing chain, live first.
fn chain(d: &Disk) -> Result<Vec<Link>> {
    let mut out: Vec<Link> = Vec::new();
    let mut at = Some(d.live.clone());
    while let Some(file) = at {
        if out.len() >= MAX_CHAIN || out.iter().any(|l| l.file == file) {
            return Err(missing(format!(
                "{}: the backing chain of {} loops or is longer than {MAX_CHAIN} files",
                d.describe(),
                d.live.display()
            )));
        }
        let backing = header::read(&file)?.backing;
        at = backing.clone();
        out.push(Link { file, backing });
    }
    Ok(out)
}

/// Whether `file` holds a snapshot this disk knows (adopted, or a layer of its own).
fn known_snapshot(d: &Disk, file: &Path) -> bool {
    d.layer_uuid(file).is_some()
}

/// Whether data backed by `backing` can be that of a snapshot whose parent's data is
/// `parent` (None: a root, on nothing or on a file that is no snapshot, a template image).
fn fits(d: &Disk, parent: Option<&Path>, backing: Option<&Path>) -> bool {
    match (parent, backing) {
        (Some(p), Some(b)) => p == b,
        (Some(_), None) => false,
        (None, b) => b.is_none_or(|b| !known_snapshot(d, b)),
    }
}

/// External mode: the file that holds `a.snapshot` on this disk, checked and recorded.
fn external(d: &Disk, meta: &Meta, a: &Adoption) -> Result<Meta> {
    let parent_file = a.parent.map(|p| d.layer(&p));
    if let (Some(p), Some(f)) = (a.parent, &parent_file)
        && !f.exists()
    {
        return Err(missing(format!(
            "{}: its parent {p} holds no data on this disk (adopt parents first)",
            d.describe()
        )));
    }
    // Already adopted, or a layer snaptree made itself: check its backing only.
    let own = d.layer(&a.snapshot);
    let found = if own.exists() {
        own
    } else {
        find_in_chain(d, a, parent_file.as_deref())?
    };
    let backing = header::read(&found)?.backing;
    if !fits(d, parent_file.as_deref(), backing.as_deref()) {
        return Err(missing(format!(
            "{}: its data {} is backed by {}, not by the data of its parent {}",
            d.describe(),
            found.display(),
            shown(backing.as_deref()),
            shown(parent_file.as_deref())
        )));
    }
    if found == d.live {
        return Err(missing(format!(
            "{}: its data would be the live image {} itself",
            d.describe(),
            found.display()
        )));
    }
    if let Some(other) = d.layer_uuid(&found)
        && other != a.snapshot
    {
        return Err(missing(format!(
            "{}: {} already holds snapshot {other}",
            d.describe(),
            found.display()
        )));
    }
    let mut next = meta.clone();
    if d.layer_uuid(&found) != Some(a.snapshot) {
        let text = found.to_str().ok_or_else(|| {
            missing(format!(
                "{}: {} is not a UTF-8 path",
                d.describe(),
                found.display()
            ))
        })?;
        next.names.insert(a.snapshot, text.to_owned());
    }
    next.names.retain(|_, file| Path::new(file).exists());
    Ok(next)
}

/// The file of the live image's backing chain that holds the adopted snapshot's data.
fn find_in_chain(d: &Disk, a: &Adoption, parent_file: Option<&Path>) -> Result<PathBuf> {
    let links = chain(d)?;
    let named = |l: &&Link| {
        l.file
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| {
                n == a.name
                    || n.strip_suffix(&a.name)
                        .is_some_and(|stem| stem.ends_with('.'))
            })
    };
    // libvirt's naming: the overlay made when the snapshot was taken carries its name,
    // and backs onto the snapshot's data.
    let by_name: Vec<&Path> = links
        .iter()
        .filter(named)
        .filter_map(|l| l.backing.as_deref())
        .filter(|data| {
            let below = links.iter().find(|l| l.file == *data);
            below.is_some_and(|l| fits(d, parent_file, l.backing.as_deref()))
        })
        .collect();
    if let [one] = by_name.as_slice() {
        return Ok(one.to_path_buf());
    }
    let not_live = || links.iter().skip(1);
    let by_links: Vec<&Link> = match parent_file {
        Some(p) => not_live()
            .filter(|l| l.backing.as_deref() == Some(p))
            .collect(),
        None => not_live().filter(|l| l.backing.is_none()).collect(),
    };
    match by_links.as_slice() {
        [one] => Ok(one.file.clone()),
        _ => Err(missing(format!(
            "{}: no file of the backing chain of {} holds data on {} (no overlay named *.{} either)",
            d.describe(),
            d.live.display(),
            match parent_file {
                Some(p) => format!("the data of its parent, {}", p.display()),
                None => "nothing".to_owned(),
            },
            a.name
        ))),
    }
}

fn shown(p: Option<&Path>) -> String {
    p.map_or("nothing".to_owned(), |p| p.display().to_string())
}
