//! External mode: every snapshot is a qcow2 layer `<uuid>.qcow2` in the disk's snapshot
//! directory, holding its content as a delta over its physical parent (its backing file); the
//! live file is an overlay on the layer it derives from. A root layer has no backing file (or
//! the backing file the disk had before snaptree, which is never written).
//!
//! Planning reads the backing links of every layer, then plans the step by the rule of the
//! model checker's simulator: whenever a layer's content changes or it is removed, every
//! physical dependent first keeps its own content. Because planning starts from what is on
//! disk and every operation keeps every content (see `ops`), planning the step again after a
//! crash at any point finishes it.

use snaptree_engine::{Step, Uuid};

use super::exec::DiskPlan;
use super::ops::{Op, same_file};
use super::scan::{Backing, Dep, Scan, backing_path, dep_path, missing_live};
use crate::ctx::Ctx;
use crate::disk::Disk;
use crate::error::{Result, error};
use crate::records::{Kind, Record};
use crate::stats::{Choice, ConsolidatePolicy, ConsolidateRecord};

/// Plans one step on one external-mode disk.
pub(crate) fn plan(
    ctx: Ctx<'_>,
    disk: &Disk,
    step: &Step,
    policy: ConsolidatePolicy,
) -> Result<DiskPlan> {
    let scan = Scan::load(disk)?;
    let mut plan = plan_scanned(ctx, disk, &scan, step, policy)?;
    if let Some(Record::Rebase { file, from }) = scan.rebase {
        plan.reversible.insert(
            0,
            Op::RestoreBacking {
                file,
                from,
                intent: Kind::Rebase.path(disk),
            },
        );
    }
    Ok(plan)
}

fn plan_scanned(
    ctx: Ctx<'_>,
    disk: &Disk,
    scan: &Scan,
    step: &Step,
    policy: ConsolidatePolicy,
) -> Result<DiskPlan> {
    match step {
        Step::Create { snapshot, .. } => create(disk, scan, *snapshot),
        Step::Revert { snapshot, .. } => revert(disk, scan, *snapshot),
        Step::DiscardLeaf { snapshot } | Step::Consolidate { snapshot } => {
            free(ctx, disk, scan, *snapshot, policy)
        }
        // The base is not observable: absorbing S into it is freeing S with its dependents
        // keeping their content, and S's children become roots.
        Step::MergeIntoParent {
            snapshot,
            parent: None,
        } => free(ctx, disk, scan, *snapshot, policy),
        Step::MergeIntoParent {
            snapshot,
            parent: Some(p),
        } => merge(disk, scan, *snapshot, *p),
        Step::DetachLive => detach(disk, scan),
        Step::Forget { .. } => Ok(DiskPlan::default()),
    }
}

/// Create(N): the live file becomes N's layer, a new empty overlay on it the live file.
/// N's physical parent is whatever the live file was backed by: the current snapshot's
/// layer, or a retired layer the live state still uses (the engine's agreement check looks
/// through retired layers), so the step's `parent` is not needed.
///
/// Restart: N's layer absent → start; N's layer is the live file itself (same inode: linked,
/// not yet replaced) → finish the freeze; the live file is backed by N's layer → done.
fn create(disk: &Disk, scan: &Scan, n: Uuid) -> Result<DiskPlan> {
    let live = scan.live.as_ref().ok_or_else(|| missing_live(disk))?;
    let layer = disk.layer(&n);
    let freeze = Op::Freeze {
        live: disk.live.clone(),
        layer: layer.clone(),
        fresh: disk.fresh(),
    };
    if !scan.layers.contains_key(&n) {
        return Ok(DiskPlan {
            reversible: vec![freeze],
            ..DiskPlan::default()
        });
    }
    if same_file(&layer, &disk.live) {
        return Ok(DiskPlan {
            reversible: vec![freeze],
            ..DiskPlan::default()
        });
    }
    if *live == Backing::Layer(n) {
        return Ok(DiskPlan::default());
    }
    Err(error(format!(
        "{}: {} already exists but the live image does not derive from it",
        disk.describe(),
        layer.display()
    )))
}

/// Revert(S): a new empty overlay on S's layer replaces the live file; the old one is kept
/// aside until the step is past undoing, then deleted.
///
/// Restart: the live state before a revert is discarded by definition, so a re-run simply
/// reverts again (leftovers of the interrupted attempt are removed first).
fn revert(disk: &Disk, scan: &Scan, s: Uuid) -> Result<DiskPlan> {
    scan.live.as_ref().ok_or_else(|| missing_live(disk))?;
    if !scan.layers.contains_key(&s) {
        return Err(error(format!(
            "{}: snapshot {s} has no layer {}",
            disk.describe(),
            disk.layer(&s).display()
        )));
    }
    Ok(DiskPlan {
        reversible: vec![Op::SwapLive {
            live: disk.live.clone(),
            backing: disk.layer(&s),
            fresh: disk.fresh(),
            stash: disk.stash(),
        }],
        last: vec![Op::Remove { file: disk.stash() }],
        records: Vec::new(),
    })
}

/// Frees S's layer (discard, consolidate, merge into the base), keeping the content of every
/// file that depends on it. Per disk, the cheaper of:
///
/// - *rebase*: each dependent is rebased (safe) onto S's backing, copying at most S's own
///   data into each; then S's layer is deleted. Reversible until the deletion.
/// - *commit* (only with a single dependent X, since S's content changes): X is committed
///   down into S's layer, which then takes X's name. Copies X's own data once.
///
/// Restart: no layer → done (it is deleted last, or renamed over X last). Otherwise plan
/// again from the dependents found: a dependent already rebased no longer depends on S; a
/// dependent already committed holds nothing, so committing it is now the cheap choice; and
/// either choice is correct from any intermediate state because each operation keeps every
/// dependent's content.
fn free(
    ctx: Ctx<'_>,
    disk: &Disk,
    scan: &Scan,
    s: Uuid,
    policy: ConsolidatePolicy,
) -> Result<DiskPlan> {
    let Some(below) = scan.layers.get(&s) else {
        return Ok(DiskPlan::default());
    };
    let layer = disk.layer(&s);
    let deps = scan.dependents(s);
    let mut record = ConsolidateRecord {
        snapshot: s,
        disk: disk.label.clone(),
        dependents: deps.len(),
        choice: Choice::Nothing,
        commit_estimate: None,
        rebase_estimate: 0,
        bytes_moved: 0,
    };
    if deps.is_empty() {
        return Ok(DiskPlan {
            last: vec![Op::Remove { file: layer }],
            records: vec![record],
            ..DiskPlan::default()
        });
    }
    // Counted in process from the layers' tables (microseconds), so always measured.
    record.rebase_estimate = ctx.allocated(&layer)? * deps.len() as u64;
    if let [only] = deps.as_slice() {
        record.commit_estimate = Some(ctx.allocated(&dep_path(disk, *only))?);
    }
    let commit = match (policy, record.commit_estimate) {
        (_, None) | (ConsolidatePolicy::AlwaysRebase, _) => false,
        (ConsolidatePolicy::AlwaysCommit, Some(_)) => true,
        (ConsolidatePolicy::Cheapest, Some(c)) => {
            c < record.rebase_estimate + rebase_scan_cost(&layer, c)?
        }
    };
    if commit {
        let x = dep_path(disk, deps[0]);
        record.choice = Choice::Commit;
        return Ok(DiskPlan {
            reversible: Vec::new(),
            last: vec![
                Op::Commit {
                    top: x.clone(),
                    into: layer.clone(),
                    measure: Some(0),
                },
                Op::Replace {
                    source: layer,
                    target: x,
                },
            ],
            records: vec![record],
        });
    }
    record.choice = Choice::Rebase;
    let onto = backing_path(disk, below);
    Ok(DiskPlan {
        reversible: deps
            .iter()
            .map(|d| Op::SafeRebase {
                file: dep_path(disk, *d),
                from: Some(layer.clone()),
                onto: onto.clone(),
                intent: Kind::Rebase.path(disk),
                measure: Some(0),
            })
            .collect(),
        last: vec![Op::Remove { file: layer }],
        records: vec![record],
    })
}

/// Merge(S into P): P's layer takes S's content, S's layer is freed, and every other file
/// keeps its content: S's dependents and P's other dependents (the live file, retired
/// layers) end up on P's layer.
///
/// 1. (reversible) If S is not directly on P (retired layers between), rebase S onto P.
///    Rebase every other dependent of P onto S: it keeps its content and no longer sees P,
///    so P's layer has S as its only dependent.
/// 2. Commit S into P: P now holds S's content and S's layer is empty.
/// 3. Rebase (unsafe: P and S now show the same content) every dependent of S onto P;
///    delete S's layer.
///
/// Restart: no S layer → done. Otherwise plan again: dependents moved back onto P in (3)
/// count as "other dependents" again and are rebased onto S, which copies nothing since P
/// and S show the same content by then; the commit of an empty layer changes nothing.
fn merge(disk: &Disk, scan: &Scan, s: Uuid, p: Uuid) -> Result<DiskPlan> {
    let Some(s_backing) = scan.layers.get(&s) else {
        return Ok(DiskPlan::default());
    };
    if !scan.layers.contains_key(&p) {
        return Err(error(format!(
            "{}: snapshot {p} has no layer {}",
            disk.describe(),
            disk.layer(&p).display()
        )));
    }
    let (fs, fp) = (disk.layer(&s), disk.layer(&p));
    let mut plan = DiskPlan::default();
    if *s_backing != Backing::Layer(p) {
        plan.reversible.push(Op::SafeRebase {
            file: fs.clone(),
            from: backing_path(disk, s_backing),
            onto: Some(fp.clone()),
            intent: Kind::Rebase.path(disk),
            measure: None,
        });
    }
    let others: Vec<Dep> = scan
        .dependents(p)
        .into_iter()
        .filter(|d| *d != Dep::Layer(s))
        .collect();
    for d in &others {
        plan.reversible.push(Op::SafeRebase {
            file: dep_path(disk, *d),
            from: Some(fp.clone()),
            onto: Some(fs.clone()),
            intent: Kind::Rebase.path(disk),
            measure: None,
        });
    }
    plan.last.push(Op::Commit {
        top: fs.clone(),
        into: fp.clone(),
        measure: None,
    });
    for d in scan.dependents(s).into_iter().chain(others) {
        plan.last.push(Op::UnsafeRebase {
            file: dep_path(disk, d),
            onto: Some(fp.clone()),
        });
    }
    plan.last.push(Op::Remove { file: fs });
    Ok(plan)
}

/// Detach: the live file stops depending on any layer (rebased, safe, onto the bottom of its
/// chain — nothing, or the disk's original backing). Restart: a re-run rebases whatever is
/// still to rebase; a finished one finds the live file already off every layer.
fn detach(disk: &Disk, scan: &Scan) -> Result<DiskPlan> {
    let live = scan.live.as_ref().ok_or_else(|| missing_live(disk))?;
    if !matches!(live, Backing::Layer(_)) {
        return Ok(DiskPlan::default());
    }
    let bottom = scan.bottom(live);
    if matches!(bottom, Backing::Layer(_)) {
        return Err(error(format!(
            "{}: the backing chain of the live image is broken",
            disk.describe()
        )));
    }
    Ok(DiskPlan {
        reversible: vec![Op::SafeRebase {
            file: disk.live.clone(),
            from: backing_path(disk, live),
            onto: backing_path(disk, &bottom),
            intent: Kind::Rebase.path(disk),
            measure: None,
        }],
        ..DiskPlan::default()
    })
}

/// A safe `qemu-img rebase` reads and compares, in the old and the new backing chain,
/// every cluster the dependent does not hold itself, whatever the layer holds: on a large
/// disk with little data that scan, not the copy, is its cost (a 1 GiB disk with nothing
/// allocated: 150 ms of `memset`/`memcmp` in qemu-img, where the commit takes 10 ms). It is
/// counted as copied bytes, [`SCAN_BYTES_PER_COPIED_BYTE`] scanned bytes to one, so that a
/// tie, or a layer a little smaller than its dependent on a large disk, commits.
fn rebase_scan_cost(layer: &std::path::Path, dependent_holds: u64) -> Result<u64> {
    let size = super::header::read(layer)?.size;
    Ok(size.saturating_sub(dependent_holds) / SCAN_BYTES_PER_COPIED_BYTE)
}

/// Bytes a rebase scans in the time a commit copies one: an order of magnitude (a memory
/// compare against a write through the page cache).
const SCAN_BYTES_PER_COPIED_BYTE: u64 = 8;
