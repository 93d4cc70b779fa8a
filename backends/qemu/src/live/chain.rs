//! The chain of each external disk as the running QEMU holds it ([`Chain`]), the names
//! snaptree gives the nodes and jobs it adds ([`node_name`]), and the clean-up of what an
//! earlier, interrupted process left in QEMU's block graph (jobs, unused nodes).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use snaptree_engine::Uuid;
use snaptree_qmp as qmp;

use super::session::{JOB_TIMEOUT, Session, canonical, same_path};
use crate::disk::Disk;
use crate::error::{Result, error};

/// Prefix of the job id of an active commit: with [`node_name`]'s suffix, one id per
/// snapshot and disk, so that a re-run finds the job of an interrupted attempt.
pub(crate) const PIVOT_JOB: &str = "snaptree-pivot-";

/// Prefix of every node snaptree adds to QEMU, so that leftovers can be told apart.
pub(crate) const NODE_PREFIX: &str = "snaptree-";

/// One disk's chain as the running QEMU holds it.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    /// The active node (the device's top node).
    pub(crate) active: String,
    /// The active node's file as QEMU names it.
    pub(crate) active_file: PathBuf,
    /// The images below the active one, top down: file and node name.
    pub(crate) below: Vec<(PathBuf, String)>,
    /// Guest-visible size.
    pub(crate) size: u64,
}

impl Chain {
    /// The node holding `file`: the active node for the live file, else a backing node.
    pub(crate) fn node_of(&self, disk: &Disk, file: &Path) -> Option<&str> {
        if same_path(file, &disk.live) && same_path(&self.active_file, &disk.live) {
            return Some(&self.active);
        }
        self.below
            .iter()
            .find(|(f, _)| same_path(f, file))
            .map(|(_, n)| n.as_str())
    }

    /// Whether QEMU holds `file` in this chain (so only QMP may change it).
    pub(crate) fn holds(&self, disk: &Disk, file: &Path) -> bool {
        self.node_of(disk, file).is_some()
    }

    /// The node directly below the active one.
    pub(crate) fn backing_node(&self) -> Option<&str> {
        self.below.first().map(|(_, n)| n.as_str())
    }

    /// Whether QEMU writes into the disk path, directly on `layer`.
    pub(crate) fn on_overlay_of(&self, disk: &Disk, layer: &Path) -> bool {
        same_path(&self.active_file, &disk.live)
            && self.below.first().is_some_and(|(f, _)| same_path(f, layer))
    }
}

/// The file of an image as QEMU names it: a path, or a `json:{…}` pseudo file name (a
/// node whose backing was set by option rather than by its header), whose protocol
/// node's `filename` is the file.
fn image_path(name: &str) -> PathBuf {
    let Some(json) = name.strip_prefix("json:") else {
        return PathBuf::from(name);
    };
    let found = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            v.get("file")
                .and_then(|f| f.get("filename"))
                .and_then(|f| f.as_str())
                .map(PathBuf::from)
        });
    found.unwrap_or_else(|| PathBuf::from(name))
}

/// A node name of at most 31 characters with its `-file` child (QEMU's limit): prefix,
/// kind, 12 hex digits of a hash of the whole uuid (time-based uuids share their tail),
/// the disk's index.
pub(crate) fn node_name(kind: char, uuid: &Uuid, disk: usize) -> String {
    // FNV-1a, 64 bits: stable across processes and releases, unlike std's hasher.
    let hash = uuid
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{NODE_PREFIX}{kind}{:012x}-{disk}", hash >> 16)
}

/// Every disk's chain in the running QEMU. A disk is found by its active image: the disk
/// path, or a layer of its snapshot directory (mid-create, QEMU writes into the new layer
/// until the transaction).
pub(crate) fn chains(session: &mut Session, disks: &[Disk]) -> Result<Vec<Chain>> {
    let block = session.with("query the block devices", |q| q.query_block())?;
    let nodes = session.with("query the block nodes", |q| q.query_named_block_nodes())?;
    disks
        .iter()
        .map(|d| {
            let dir = canonical(&d.dir());
            let ins = block
                .iter()
                .filter_map(|b| b.inserted.as_ref())
                .find(|i| {
                    let f = image_path(&i.image.filename);
                    same_path(&f, &d.live) || f.parent().is_some_and(|p| canonical(p) == dir)
                })
                .ok_or_else(|| {
                    error(format!(
                        "{} is not the active image of any device of the running VM",
                        d.describe()
                    ))
                })?;
            let mut below = Vec::new();
            let mut at = ins.image.backing_image.as_deref();
            while let Some(img) = at {
                let file = image_path(&img.filename);
                let node = nodes
                    .iter()
                    .find(|n| n.drv != "file" && same_path(&image_path(&n.file), &file))
                    .ok_or_else(|| {
                        error(format!(
                            "{}: the running VM holds {} but names no node for it",
                            d.describe(),
                            file.display()
                        ))
                    })?;
                below.push((file, node.node_name.clone()));
                at = img.backing_image.as_deref();
            }
            Ok(Chain {
                active: ins.node_name.clone(),
                active_file: image_path(&ins.image.filename),
                below,
                size: ins.image.virtual_size,
            })
        })
        .collect()
}

/// One disk's chain (see [`chains`]).
pub(crate) fn chain_of(session: &mut Session, disk: &Disk) -> Result<Chain> {
    Ok(chains(session, std::slice::from_ref(disk))?.remove(0))
}

/// Waits for the block jobs an earlier (interrupted) snaptree process left in QEMU and
/// dismisses them, so their nodes are free again.
pub(crate) fn settle_jobs(session: &mut Session) -> Result<()> {
    let jobs = session.with("query the jobs", |q| q.query_jobs())?;
    // An unfinished active commit is taken over by the pivot it belongs to (it may run for
    // longer than one step's patience): cancelling it would start the copy again.
    let adoptable =
        |j: &qmp::JobInfo| j.id.starts_with(PIVOT_JOB) && j.status != qmp::JobStatus::Concluded;
    for job in jobs
        .iter()
        .filter(|j| j.id.starts_with("snaptree-") && !adoptable(j))
    {
        let id = job.id.clone();
        // The earlier job's own outcome was its step's: a re-run plans from what the
        // images hold now, so a failed job does not fail this step.
        session.with("finish an earlier job", |q| {
            match q.wait_job(
                &id,
                qmp::Until::ReadyOrConcluded,
                &mut |_| true,
                JOB_TIMEOUT,
            ) {
                Ok(info) if info.status == qmp::JobStatus::Ready => {
                    // A job nobody completes any more: cancelling keeps the chain.
                    q.job_cancel(&id)?;
                    conclude(q, &id)
                }
                Err(qmp::Error::Job { .. }) | Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        })?;
    }
    Ok(())
}

/// Waits for job `id` to conclude; the job's own failure is not this call's.
fn conclude(q: &mut qmp::Qmp, id: &str) -> qmp::Result<()> {
    match q.wait_job(id, qmp::Until::Concluded, &mut |_| true, JOB_TIMEOUT) {
        Err(qmp::Error::Job { .. }) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Cancels and dismisses job `id` if QEMU still has it (a ready active commit cancelled
/// keeps the chain as it is).
pub(crate) fn drop_job(session: &mut Session, id: &str) -> Result<()> {
    let Some(job) = session.with("query the jobs", |q| q.query_job(id))? else {
        return Ok(());
    };
    session.with("drop an earlier job", |q| {
        if job.status != qmp::JobStatus::Concluded {
            let _ = q.job_cancel(id);
        }
        conclude(q, id)
    })
}

/// Removes a node of ours if QEMU has it and nothing uses it (a leftover of an earlier
/// attempt); anything else is left alone.
pub(crate) fn forget_node(session: &mut Session, node: &str) {
    if let Some(q) = session.qmp_mut() {
        let _ = q.blockdev_del(node);
    }
}

/// Removes the nodes snaptree added whose files are no longer in any chain: QEMU keeps
/// monitor-owned nodes (and their files) open until they are deleted.
pub(crate) fn drop_stale_nodes(session: &mut Session, disks: &[Disk]) -> Result<()> {
    let Ok(chains) = chains(session, disks) else {
        return Ok(());
    };
    let mut held: BTreeSet<String> = BTreeSet::new();
    for c in &chains {
        held.insert(c.active.clone());
        held.extend(c.below.iter().map(|(_, n)| n.clone()));
    }
    let nodes = session.with("query the block nodes", |q| q.query_named_block_nodes())?;
    // By name (a node whose backing changed reports a `json:` file name), or by file.
    let ours = |n: &qmp::BlockNode| {
        let f = &image_path(&n.file);
        n.node_name.starts_with(NODE_PREFIX)
            || disks.iter().any(|d| {
                same_path(f, &d.live) || f.parent().is_some_and(|p| same_path(p, &d.dir()))
            })
    };
    // Format nodes first: their file children are in use until they go.
    for drv_first in [true, false] {
        for n in nodes
            .iter()
            .filter(|n| (n.drv == "qcow2") == drv_first && ours(n))
            .filter(|n| !held.contains(&n.node_name))
        {
            // In use (e.g. the file node of a held layer) → QEMU refuses: fine.
            forget_node(session, &n.node_name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_are_read_from_json_pseudo_file_names() {
        assert_eq!(image_path("/vm/a.qcow2"), PathBuf::from("/vm/a.qcow2"));
        let json = r#"json:{"backing": {"driver": "qcow2", "file": {"driver": "file", "filename": "/vm/a.qcow2.snapshots/x.qcow2"}}, "driver": "qcow2", "file": {"driver": "file", "filename": "/vm/a.qcow2"}}"#;
        assert_eq!(image_path(json), PathBuf::from("/vm/a.qcow2"));
        assert_eq!(image_path("json:{broken"), PathBuf::from("json:{broken"));
    }

    #[test]
    fn node_names_fit_qemus_limit_and_differ_by_uuid_and_disk() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let name = node_name('y', &a, 999);
        assert!(format!("{name}-file").len() <= 31, "{name}");
        assert_ne!(node_name('y', &a, 0), node_name('y', &b, 0));
        assert_ne!(node_name('y', &a, 0), node_name('y', &a, 1));
        // Time-based uuids share their tail: the name must not.
        let t1 = Uuid::parse_str("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap();
        let t2 = Uuid::parse_str("6ba7b811-9dad-11d1-80b4-00c04fd430c8").unwrap();
        assert_ne!(node_name('y', &t1, 0), node_name('y', &t2, 0));
    }
}
