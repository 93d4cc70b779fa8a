//! Estimates of what an offline step writes and frees (SEMANTICS.md §7.7), from the same
//! plan the step runs ([`DiskPlan`]) and the layers' own cluster maps, counted in process
//! from their L1/L2 tables (the data the external planner already reads to choose commit or
//! rebase).
//!
//! Per operation:
//! - a safe rebase of F from A onto B copies into F every guest cluster that a layer from A
//!   down to (not including) B holds and F does not: the clusters where the two backing
//!   chains can differ. Identical data is not copied by qemu-img, so this is an upper
//!   bound (it is exact for data that differs);
//! - a commit of T into P allocates in P the clusters T holds and P does not (the others are
//!   overwritten in place);
//! - both allocate, besides, one L2 table per table's span they start to use;
//! - a new empty overlay is qemu-img's layout: header, refcount table and refcount block
//!   (a cluster each) and the L1 table;
//! - an internal snapshot copies the L1 table and rewrites the snapshot table;
//! - removing or replacing a file frees what it holds on disk (`st_blocks`); an internal
//!   snapshot's deletion frees clusters only it referenced, which is not estimated (0).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use snaptree_engine::SpaceUse;
use snaptree_qemu_img::{self as qi, ClusterMap};

use super::exec::DiskPlan;
use super::ops::Op;
use crate::error::Result;

/// Bytes a small metadata file (an internal disk's record) takes: one block.
const RECORD_BYTES: u64 = 4096;

/// What rewriting an internal snapshot table takes beyond the clusters it frees.
const SNAPSHOT_TABLE_BYTES: u64 = 8192;

/// One file system's share of a step: where, written, freed.
#[derive(Default)]
struct Tally {
    written: u64,
    freed: u64,
}

/// What the plans of one step (one per disk) write and free, per file system, with
/// `extra` (file, bytes written, bytes freed) beside them (the manifest each disk keeps).
pub(crate) fn estimate(plans: &[DiskPlan], extra: &[(PathBuf, u64, u64)]) -> Result<Vec<SpaceUse>> {
    let mut by_path: Vec<(PathBuf, Tally)> = extra
        .iter()
        .map(|(p, written, freed)| {
            (
                p.clone(),
                Tally {
                    written: *written,
                    freed: *freed,
                },
            )
        })
        .collect();
    let mut maps = Maps::default();
    for plan in plans {
        for op in plan.reversible.iter().chain(&plan.last) {
            let (at, written, freed) = op_space(op, &mut maps)?;
            if written == 0 && freed == 0 {
                continue;
            }
            by_path.push((at, Tally { written, freed }));
        }
    }
    let mut by_fs: BTreeMap<u64, (qi::FileSystem, Tally)> = BTreeMap::new();
    let mut order = Vec::new();
    for (path, t) in by_path {
        let fs = qi::file_system(&path)?;
        let entry = by_fs.entry(fs.dev).or_insert_with(|| {
            order.push(fs.dev);
            (fs, Tally::default())
        });
        entry.1.written += t.written;
        entry.1.freed += t.freed;
    }
    Ok(order
        .into_iter()
        .filter_map(|dev| by_fs.remove(&dev))
        .map(|(fs, t)| SpaceUse {
            fs: fs.dev,
            path: fs.mount.display().to_string(),
            written: t.written,
            freed: t.freed,
            free: fs.free,
        })
        .collect())
}

/// Cluster maps read once per step.
#[derive(Default)]
struct Maps(BTreeMap<PathBuf, ClusterMap>);

impl Maps {
    fn get(&mut self, file: &Path) -> Result<&ClusterMap> {
        if !self.0.contains_key(file) {
            let map = qi::allocated_clusters(file)?;
            self.0.insert(file.to_path_buf(), map);
        }
        Ok(&self.0[file])
    }
}

/// The file an operation writes on (for its file system), bytes written and bytes freed.
fn op_space(op: &Op, maps: &mut Maps) -> Result<(PathBuf, u64, u64)> {
    Ok(match op {
        Op::Freeze { live, fresh, .. } => (fresh.clone(), empty_overlay(maps.get(live)?), 0),
        Op::SwapLive { live, fresh, .. } => (
            fresh.clone(),
            empty_overlay(maps.get(live)?),
            qi::allocated_on_disk(live),
        ),
        Op::SafeRebase {
            file, from, onto, ..
        } => {
            let mut copied: BTreeSet<u64> = BTreeSet::new();
            for layer in differing(from.as_deref(), onto.as_deref()) {
                copied.extend(maps.get(&layer)?.clusters.iter().copied());
            }
            (file.clone(), grown(maps.get(file)?, &copied), 0)
        }
        Op::Commit { top, into, .. } => {
            let top_clusters: BTreeSet<u64> = maps.get(top)?.clusters.iter().copied().collect();
            (into.clone(), grown(maps.get(into)?, &top_clusters), 0)
        }
        Op::Replace { target, .. } => (target.clone(), 0, qi::allocated_on_disk(target)),
        Op::Remove { file } => (file.clone(), 0, qi::allocated_on_disk(file)),
        Op::SnapCreate { image, .. } | Op::SnapStash { image, .. } => {
            (image.clone(), internal_snapshot(maps.get(image)?), 0)
        }
        // A rewritten snapshot table and refcounts, mostly in clusters freed by the same
        // command (measured: 0-8 KiB of growth).
        Op::SnapApply { image, .. } | Op::SnapDelete { image, .. } => {
            (image.clone(), SNAPSHOT_TABLE_BYTES, 0)
        }
        // Two snapshots made (stash, the parent again) and three deletions; the second
        // snapshot reuses what the deletion before it freed (measured: 4 KiB).
        Op::InternalMerge { image, .. } => {
            let map = maps.get(image)?;
            (
                image.clone(),
                internal_snapshot(map) + SNAPSHOT_TABLE_BYTES,
                0,
            )
        }
        Op::WriteMeta { path, .. } => (path.clone(), RECORD_BYTES, 0),
        Op::Unfreeze { live, .. } | Op::Unswap { live, .. } => (live.clone(), 0, 0),
        Op::RestoreBacking { file, .. } | Op::UnsafeRebase { file, .. } => (file.clone(), 0, 0),
        Op::SnapRestore { image, .. } => (image.clone(), 0, 0),
    })
}

/// The layers in one of the backing chains starting at `from` and `onto` but not in the
/// other: where the two chains can show different data.
fn differing(from: Option<&Path>, onto: Option<&Path>) -> Vec<PathBuf> {
    let (a, b) = (chain(from), chain(onto));
    let only = |x: &[PathBuf], y: &[PathBuf]| -> Vec<PathBuf> {
        x.iter()
            .filter(|l| !y.iter().any(|m| same(l, m)))
            .cloned()
            .collect()
    };
    let mut out = only(&a, &b);
    out.extend(only(&b, &a));
    out
}

/// A file and its backing files, top first.
fn chain(top: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut at = top.map(Path::to_path_buf);
    while let Some(layer) = at {
        if out.len() > 4096 {
            break;
        }
        at = qi::read_header(&layer).ok().and_then(|h| h.backing);
        out.push(layer);
    }
    out
}

fn same(a: &Path, b: &Path) -> bool {
    a == b || super::ops::same_file(a, b)
}

/// Bytes a file grows by when it takes data for `clusters`: every one it does not hold
/// yet, an L2 table for every table's span it does not use yet, and, when it grows at
/// all, one cluster for the metadata qemu rewrites elsewhere (a refcount block; measured:
/// a commit of 3 MiB grew its target by 3 MiB and 4 KiB).
fn grown(file: &ClusterMap, clusters: &BTreeSet<u64>) -> u64 {
    let held: BTreeSet<u64> = file.clusters.iter().copied().collect();
    let span = file.l2_span();
    let tables: BTreeSet<u64> = held.iter().map(|c| c / span).collect();
    let new: Vec<u64> = clusters.difference(&held).copied().collect();
    let new_tables: BTreeSet<u64> = new
        .iter()
        .map(|c| c / span)
        .filter(|t| !tables.contains(t))
        .collect();
    if new.is_empty() {
        return 0;
    }
    (new.len() as u64 + new_tables.len() as u64 + 1) * file.cluster
}

/// qemu-img's empty overlay for an image like `like`: header, refcount table, refcount
/// block, then the L1 table (in 4 KiB blocks).
fn empty_overlay(like: &ClusterMap) -> u64 {
    3 * like.cluster + like.l1_bytes.div_ceil(4096) * 4096
}

/// An internal snapshot: its copy of the L1 table and a rewritten snapshot table.
fn internal_snapshot(map: &ClusterMap) -> u64 {
    map.l1_bytes.div_ceil(map.cluster) * map.cluster + map.cluster
}
