//! Live mode for external-mode disks: disk-only snapshots of a running VM as qcow2 overlay
//! chains, with the same files and names as offline external mode, so the domain can be
//! shut down, reverted offline and started again at any point.
//!
//! QEMU holds the *chain* of each disk: the live file (the active node, written by the
//! guest) and the layers below it. Those files are changed only through QMP; every other
//! layer of the disk is not open in QEMU and is changed offline with `qemu-img`, exactly
//! as in offline mode. So a step whose snapshot is outside the chain is the offline plan
//! as is, and only steps that touch the chain need QMP:
//!
//! - **create(N)**: see `create`; the dispatch of a step is `live::execute_chains`.
//! - **discard / consolidate / merge into the base** of a layer in the chain: its
//!   dependent in the chain gets its data by `block-stream` (the layer leaves the chain),
//!   the others by offline rebase; then the layer is deleted. When the live image is the
//!   only dependent and the consolidate policy says committing its data down is cheaper,
//!   an active `block-commit` does it instead, with a pivot (see `pivot`).
//! - **merge(S into P)** with S in the chain: S is committed into P by an intermediate
//!   `block-commit`, which also moves S's overlay in the chain onto P; S's other
//!   dependents are rebased offline (safe onto S before the commit, unsafe onto P after).
//!   A record beside the disk says the commit has run, so a re-run does not mistake the
//!   moved overlay for one of P's other dependents.
//! - **detach**: `block-stream` of the whole chain into the live file.
//! - **revert** is not possible while the guest runs (a disk-only snapshot has no memory to
//!   go with its disks): the capabilities say so and the engine refuses it.
//!
//! Every QMP call that changes something counts as a change for the restart tests'
//! simulated crashes, like every file operation does.

use std::path::Path;

use snaptree_engine::{Step, Uuid};
use snaptree_qmp::{Commit, Stream};

use super::chain::{chain_of, chains};
use super::pivot::{commit_active, pivot_record};
use super::session::{JOB_TIMEOUT, same_path};
use super::step::{ChainStep, OnDisk};
use crate::disk::Disk;
use crate::error::{QemuError, Result, error};
use crate::offline::exec;
use crate::offline::external as offline_external;
use crate::offline::ops::Op;
use crate::offline::scan::{Backing, Dep, Scan, backing_path, dep_path};
use crate::records::{Kind, Record};
use crate::stats::ConsolidatePolicy;

/// Discard, consolidate, merge and detach: offline for disks whose snapshot QEMU does
/// not hold, through block jobs where it does.
pub(crate) fn reshape(live: &mut ChainStep<'_>, disks: &[Disk], step: &Step) -> Result<()> {
    let chains = chains(live.session, disks)?;
    let scans: Vec<Scan> = disks.iter().map(Scan::load).collect::<Result<_>>()?;
    // Refuse before changing anything: a merge whose parent QEMU holds but whose
    // snapshot it does not would rewrite the running disk onto another branch.
    if let Step::MergeIntoParent {
        snapshot,
        parent: Some(parent),
    } = step
    {
        for (d, c) in disks.iter().zip(&chains) {
            if !c.holds(d, &d.layer(snapshot)) && c.holds(d, &d.layer(parent)) {
                return Err(QemuError::OperationInvalid(format!(
                    "the qemu backend cannot merge snapshot {snapshot} into {parent} while the VM runs on {parent}'s branch: the running {} would have to move onto {snapshot}'s branch (shut the domain down first)",
                    d.describe()
                )));
            }
        }
    }
    let target = match step {
        Step::DiscardLeaf { snapshot }
        | Step::Consolidate { snapshot }
        | Step::MergeIntoParent { snapshot, .. } => Some(*snapshot),
        _ => None,
    };
    let mut offline = Vec::new();
    let mut offline_lives = Vec::new();
    let mut in_qemu = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        // QEMU writing into the layer itself (an interrupted pivot) counts too.
        let in_chain = match target {
            Some(s) => {
                chains[i].holds(d, &d.layer(&s)) || same_path(&chains[i].active_file, &d.layer(&s))
            }
            None => true,
        };
        let resumed = match (step, target) {
            (
                Step::MergeIntoParent {
                    snapshot,
                    parent: Some(parent),
                },
                _,
            ) => live_commit(d)? == Some((*snapshot, *parent)),
            (_, Some(s)) => pivot_record(d)?.map(|r| r.0) == Some(s),
            (_, None) => false,
        };
        if in_chain || resumed {
            in_qemu.push(i);
        } else {
            offline.push(offline_external::plan(live.ctx, d, step, live.policy)?);
            offline_lives.push(d.live.as_path());
        }
    }
    if !offline.is_empty() {
        // The live images are QEMU's (locked): only the files the plans write are
        // checked free, and none of them is in a chain. Each plan still needs its disk's
        // live image to find the disk's snapshot directory (a commit's marker goes there).
        exec::execute(
            live.ctx,
            step.kind(),
            &[],
            &offline_lives,
            &offline,
            live.progress,
        )?;
    }
    for index in in_qemu {
        let (disk, chain) = (&disks[index], &chains[index]);
        if let Some(Record::Rebase { file, from }) = &scans[index].rebase {
            if chain.holds(disk, file) {
                return Err(error(format!(
                    "{}: an offline rebase of {} was interrupted; finish it with the domain shut off",
                    disk.describe(),
                    file.display()
                )));
            }
            Op::RestoreBacking {
                file: file.clone(),
                from: from.clone(),
                intent: Kind::Rebase.path(disk),
            }
            .run(live.ctx, &mut |_| {}, &mut |_, _| {})?;
        }
        let scan = Scan::load(disk)?;
        let on = OnDisk {
            index,
            disk,
            chain,
            scan: &scan,
        };
        match step {
            Step::DiscardLeaf { snapshot }
            | Step::Consolidate { snapshot }
            | Step::MergeIntoParent {
                snapshot,
                parent: None,
            } => free(live, on, *snapshot)?,
            Step::MergeIntoParent {
                snapshot,
                parent: Some(parent),
            } => merge(live, on, *snapshot, *parent)?,
            Step::DetachLive => detach(live, on)?,
            Step::Create { .. } | Step::Revert { .. } | Step::Forget { .. } => {}
        }
    }
    live.ctx.sync_dirty()
}

/// Streams into `file` (held by QEMU) everything above `onto`, which becomes its
/// backing: a safe rebase of a file QEMU holds.
pub(crate) fn stream(
    live: &mut ChainStep<'_>,
    on: OnDisk<'_>,
    file: &Path,
    onto: Option<&Path>,
) -> Result<()> {
    let not_held = |f: &Path| {
        error(format!(
            "{}: the running VM does not hold {}",
            on.disk.describe(),
            f.display()
        ))
    };
    let node = on
        .chain
        .node_of(on.disk, file)
        .ok_or_else(|| not_held(file))?;
    let base = match onto {
        Some(b) => Some(on.chain.node_of(on.disk, b).ok_or_else(|| not_held(b))?),
        None => None,
    };
    let backing = onto.map(|p| p.to_string_lossy().into_owned());
    let id = live.session.job_id("stream");
    let speed = live.ctx.job_speed();
    live.ctx
        .mutation(|| format!("stream into {}", file.display()))?;
    let progress = &mut *live.progress;
    live.session.with("stream a layer into its dependent", |q| {
        q.block_stream(
            &Stream {
                job_id: &id,
                node,
                base_node: base,
                backing_file: backing.as_deref(),
                speed,
            },
            &mut |f| progress.report(f),
            JOB_TIMEOUT,
        )
    })
}

/// Frees `snapshot`'s layer, QEMU holding it: each dependent keeps its content (the one
/// in the chain by stream, the others by offline rebase), then the layer goes.
/// Restart: a dependent already moved no longer depends on the layer; no layer → done.
pub(crate) fn free(live: &mut ChainStep<'_>, on: OnDisk<'_>, snapshot: Uuid) -> Result<()> {
    let (disk, scan) = (on.disk, on.scan);
    if pivot_record(disk)?.is_some_and(|r| r.0 == snapshot)
        && commit_active(live, on.index, disk, snapshot)?
    {
        return Ok(());
    }
    let Some(below) = scan.layers.get(&snapshot) else {
        return Ok(());
    };
    let onto = backing_path(disk, below);
    let layer = disk.layer(&snapshot);
    if scan.dependents(snapshot) == [Dep::Live] {
        let commit = match live.policy {
            ConsolidatePolicy::AlwaysRebase => false,
            ConsolidatePolicy::AlwaysCommit => true,
            // Commit copies the live image's own data, stream the layer's.
            ConsolidatePolicy::Cheapest => {
                live.ctx.allocated(&disk.live)? < live.ctx.allocated(&layer)?
            }
        };
        if commit && commit_active(live, on.index, disk, snapshot)? {
            return Ok(());
        }
    }
    for dep in scan.dependents(snapshot) {
        let file = dep_path(disk, dep);
        if on.chain.holds(disk, &file) {
            stream(live, on, &file, onto.as_deref())?;
        } else {
            rebase_offline(live, disk, &file, Some(&layer), onto.as_deref())?;
        }
    }
    live.ctx.free_layer(&layer)
}

/// A safe rebase with `qemu-img` of a file QEMU does not hold.
fn rebase_offline(
    live: &mut ChainStep<'_>,
    disk: &Disk,
    file: &Path,
    from: Option<&Path>,
    onto: Option<&Path>,
) -> Result<()> {
    Op::SafeRebase {
        file: file.to_path_buf(),
        from: from.map(Path::to_path_buf),
        onto: onto.map(Path::to_path_buf),
        intent: Kind::Rebase.path(disk),
        measure: None,
    }
    .run(
        live.ctx,
        &mut |f| {
            live.progress.report(f);
        },
        &mut |_, _| {},
    )
}

/// Merge(`snapshot` into `parent`), QEMU holding the snapshot's layer: see the module
/// documentation.
fn merge(live: &mut ChainStep<'_>, on: OnDisk<'_>, snapshot: Uuid, parent: Uuid) -> Result<()> {
    let disk = on.disk;
    let (snapshot_layer, parent_layer) = (disk.layer(&snapshot), disk.layer(&parent));
    let record = Kind::LiveCommit.path(disk);
    let Some(snapshot_backing) = on.scan.layers.get(&snapshot).cloned() else {
        return live.ctx.remove(&record);
    };
    if !on.scan.layers.contains_key(&parent) {
        return Err(error(format!(
            "{}: snapshot {parent} has no layer {}",
            disk.describe(),
            parent_layer.display()
        )));
    }
    let committed =
        live_commit(disk)? == Some((snapshot, parent)) && !on.chain.holds(disk, &snapshot_layer);
    if !committed {
        if snapshot_backing != Backing::Layer(parent) {
            stream(live, on, &snapshot_layer, Some(&parent_layer))?;
        }
        for dep in on.scan.dependents(parent) {
            if dep != Dep::Layer(snapshot) {
                let file = dep_path(disk, dep);
                rebase_offline(
                    live,
                    disk,
                    &file,
                    Some(&parent_layer),
                    Some(&snapshot_layer),
                )?;
            }
        }
        Record::LiveCommit { snapshot, parent }.store(live.ctx, &record)?;
        live.ctx.sync_dirty()?;
        commit_into_parent(live, disk, &snapshot_layer, &parent_layer)?;
    }
    // Both layers now show the same content: the snapshot's other dependents move onto
    // the parent by name.
    let scan = Scan::load(disk)?;
    for dep in scan.dependents(snapshot) {
        live.ctx
            .rebase_unsafe(&dep_path(disk, dep), Some(&parent_layer))?;
    }
    live.ctx.free_layer(&snapshot_layer)?;
    live.ctx.remove(&record)
}

/// The intermediate `block-commit` of `top` into `base`, both in the disk's chain.
fn commit_into_parent(
    live: &mut ChainStep<'_>,
    disk: &Disk,
    top: &Path,
    base: &Path,
) -> Result<()> {
    // Read again: a stream before may have changed the chain.
    let chain = chain_of(live.session, disk)?;
    let top_node = chain.node_of(disk, top).map(str::to_owned);
    let base_node = chain.node_of(disk, base).map(str::to_owned);
    let (Some(top_node), Some(base_node)) = (top_node, base_node) else {
        return Err(error(format!(
            "{}: the running VM does not hold both {} and {}",
            disk.describe(),
            top.display(),
            base.display()
        )));
    };
    let id = live.session.job_id("commit");
    let backing = base.to_string_lossy().into_owned();
    live.ctx
        .mutation(|| format!("commit {} into {}", top.display(), base.display()))?;
    let speed = live.ctx.job_speed();
    let progress = &mut *live.progress;
    live.session.with("commit a snapshot into its parent", |q| {
        q.block_commit(
            &Commit {
                job_id: &id,
                device: &chain.active,
                top_node: Some(&top_node),
                base_node: Some(&base_node),
                backing_file: Some(&backing),
                speed,
            },
            // Not cancellable: the parent already takes data; only finishing frees it.
            &mut |f| {
                progress.report(f);
                true
            },
            JOB_TIMEOUT,
        )
    })
}

/// Detach: the whole chain streamed into the live file, which keeps only the disk's
/// original backing (if any).
fn detach(live: &mut ChainStep<'_>, on: OnDisk<'_>) -> Result<()> {
    let Some(live_backing) = on.scan.live.as_ref() else {
        return Ok(());
    };
    if !matches!(live_backing, Backing::Layer(_)) {
        return Ok(());
    }
    let bottom = backing_path(on.disk, &on.scan.bottom(live_backing));
    stream(live, on, &on.disk.live, bottom.as_deref())
}

/// The merge a disk's live commit record names, if any.
fn live_commit(disk: &Disk) -> Result<Option<(Uuid, Uuid)>> {
    Ok(match Kind::LiveCommit.load(&Kind::LiveCommit.path(disk))? {
        Some(Record::LiveCommit { snapshot, parent }) => Some((snapshot, parent)),
        _ => None,
    })
}
