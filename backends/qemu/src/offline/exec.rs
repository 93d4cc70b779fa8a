//! Running a step's operations on all disks: lock check first, then the reversible
//! operations of every disk, then — past the point of no return — the rest.
//!
//! - Nothing changes before every image the step writes has been checked free of other
//!   processes, so a running VM makes the step fail naming the file with nothing changed.
//! - A failure (or a cancel from the progress callback) before the point of no return undoes
//!   every operation done so far, on every disk, in reverse order: the step fails as if it
//!   had not started, which is what the engine expects of a failed first step, and what
//!   makes a create all-or-nothing across disks.
//! - Past the point of no return (commits, deletions) the step runs to its end; a failure
//!   there leaves a state from which running the step again finishes it.
//! - A simulated crash undoes nothing, as a real one could not.

use std::collections::BTreeSet;
use std::path::Path;

use snaptree_engine::{Progress, StepKind};

use super::ops::Op;
use crate::ctx::Ctx;
use crate::error::{QemuError, Result, error};
use crate::records::Kind;
use crate::stats::ConsolidateRecord;

/// How many consolidate records a backend keeps.
const KEPT_RECORDS: usize = 1000;

/// What one disk has to do for a step.
#[derive(Debug, Default)]
pub(crate) struct DiskPlan {
    /// Operations before the point of no return.
    pub(crate) reversible: Vec<Op>,
    /// Operations after it.
    pub(crate) last: Vec<Op>,
    /// Consolidate records, referred to by index from the operations' `measure`.
    pub(crate) records: Vec<ConsolidateRecord>,
}

impl DiskPlan {
    fn len(&self) -> usize {
        self.reversible.len() + self.last.len()
    }
}

/// Forwards progress over the whole step and remembers a request to cancel.
struct Tracker<'p> {
    progress: &'p mut dyn Progress,
    total: usize,
    done: usize,
    cancelled: bool,
}

impl Tracker<'_> {
    fn report(&mut self, fraction: f64) {
        let overall = (self.done as f64 + fraction.clamp(0.0, 1.0)) / self.total as f64;
        if !self.progress.report(overall) {
            self.cancelled = true;
        }
    }
}

/// Runs the plans of every disk for one step; `lives` are the live images whose chains are
/// checked for locks, `plan_lives[d]` the live image of the disk `plans[d]` is for.
pub(crate) fn execute(
    ctx: Ctx<'_>,
    kind: StepKind,
    lives: &[&Path],
    plan_lives: &[&Path],
    plans: &[DiskPlan],
    progress: &mut dyn Progress,
) -> Result<()> {
    let total: usize = plans.iter().map(DiskPlan::len).sum();
    if total == 0 {
        return Ok(());
    }
    debug_assert!(
        plans
            .iter()
            .all(|p| p.reversible.iter().all(Op::reversible))
    );
    check_locks(ctx, kind, lives, plans)?;

    let base = {
        let mut stats = ctx.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        // A long-lived backend keeps only the latest records.
        let excess = stats.consolidations.len().saturating_sub(KEPT_RECORDS);
        stats.consolidations.drain(..excess);
        plans
            .iter()
            .map(|p| {
                let at = stats.consolidations.len();
                stats.consolidations.extend(p.records.iter().cloned());
                at
            })
            .collect::<Vec<usize>>()
    };
    let measured_in = |disk: usize| {
        let at = base[disk];
        move |record: usize, bytes: u64| {
            let mut stats = ctx.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = stats.consolidations.get_mut(at + record) {
                r.bytes_moved += bytes;
            }
        }
    };
    let mut tracker = Tracker {
        progress,
        total,
        done: 0,
        cancelled: false,
    };

    // Before the point of no return: undo everything on failure or cancel.
    let mut undo: Vec<Op> = Vec::new();
    let mut rebased: Vec<GiveBack> = Vec::new();
    for (d, plan) in plans.iter().enumerate() {
        for op in &plan.reversible {
            if tracker.cancelled {
                return Err(rollback(
                    ctx,
                    &undo,
                    error(format!("cancelled: could not {}", kind.verb())),
                ));
            }
            // Registered before running: each undo copes with its operation half done.
            undo.extend(op.undo());
            rebased.extend(GiveBack::before(op));
            let mut measured = measured_in(d);
            if let Err(e) = op.run(ctx, &mut |f| tracker.report(f), &mut measured) {
                if e.is_simulated_crash() {
                    return Err(e);
                }
                let e = rollback(ctx, &undo, e);
                if matches!(e, QemuError::Undo { .. }) {
                    return Err(e);
                }
                return Err(give_back(ctx, &rebased, e));
            }
            tracker.done += 1;
        }
    }
    if tracker.cancelled {
        return Err(rollback(
            ctx,
            &undo,
            error(format!("cancelled: could not {}", kind.verb())),
        ));
    }

    // Past it: a cancel can no longer be honoured; finish.
    for (d, plan) in plans.iter().enumerate() {
        for op in &plan.last {
            if matches!(op, Op::Commit { .. }) {
                // A commit changes a layer's content but no backing link: until the step is
                // finished, this record keeps the physical tree from looking unchanged (it
                // is not a layer, so the tree does not read), and the engine keeps the step
                // to finish it rather than forgetting it. Removed when the step succeeds.
                // In the disk's snapshot directory, where the scan looks (an adopted layer
                // may lie anywhere), created if a disk of adopted snapshots has none yet. An
                // empty file is a whole `Record::Unfinished`: its name made durable before
                // qemu-img writes into the layer is all the crash safety it needs.
                let live = plan_lives.get(d).ok_or_else(|| {
                    error(format!(
                        "internal error: no live image for the plan of disk {} of {}",
                        d + 1,
                        plans.len()
                    ))
                })?;
                let dir = snapshot_dir(live);
                ctx.create_dir(&dir)?;
                ctx.create_marker(&Kind::Unfinished.in_dir(&dir))?;
                ctx.sync_dirty()?;
            }
            let mut measured = measured_in(d);
            op.run(ctx, &mut |f| tracker.report(f), &mut measured)
                .map_err(|e| {
                    if e.is_simulated_crash() {
                        e
                    } else {
                        e.then(format!(
                            "the step could not {} completely, running it again finishes it",
                            kind.verb()
                        ))
                    }
                })?;
            tracker.done += 1;
        }
    }
    Ok(())
}

/// The snapshot directory of the disk whose live image is `live` (`Disk::dir`).
fn snapshot_dir(live: &Path) -> std::path::PathBuf {
    let mut name = live.file_name().unwrap_or_default().to_os_string();
    name.push(".snapshots");
    live.with_file_name(name)
}

/// Checks every image the step writes, and every disk's live image (with its backing
/// chain), before anything changes. A running VM holds its live images, so it stops a
/// multi-step operation at its first step, before anything changed, not half-way.
fn check_locks(ctx: Ctx<'_>, kind: StepKind, lives: &[&Path], plans: &[DiskPlan]) -> Result<()> {
    let files: BTreeSet<&Path> = plans
        .iter()
        .flat_map(|p| p.reversible.iter().chain(&p.last))
        .flat_map(Op::writes)
        .chain(lives.iter().copied())
        .filter(|f| f.exists())
        .collect();
    for f in files {
        ctx.check_writable(f)
            .map_err(|e| QemuError::NothingChanged {
                verb: kind.verb(),
                source: Box::new(e),
            })?;
    }
    Ok(())
}

/// What a safe rebase's file mapped before it ran, so that space it took can be given
/// back if the step is undone (SEMANTICS.md §7.7).
struct GiveBack {
    file: std::path::PathBuf,
    from: Option<std::path::PathBuf>,
    mapped: Vec<u64>,
}

impl GiveBack {
    /// For a safe rebase whose file's L1/L2 tables can be read: its mapped clusters now.
    fn before(op: &Op) -> Option<GiveBack> {
        let Op::SafeRebase { file, from, .. } = op else {
            return None;
        };
        Some(GiveBack {
            file: file.clone(),
            from: from.clone(),
            mapped: snaptree_qemu_img::mapped_entries(file)?,
        })
    }
}

/// After a failed step was undone: each rebased file that points at its old backing again
/// drops the clusters the rebase copied into it (they hold what that backing shows), so a
/// rebase that ran out of space leaves the file system no fuller than before. Best effort:
/// a failure here is added to the message, the data is correct either way.
fn give_back(ctx: Ctx<'_>, rebased: &[GiveBack], cause: QemuError) -> QemuError {
    let mut failures = Vec::new();
    for g in rebased {
        let back = snaptree_qemu_img::read_header(&g.file)
            .ok()
            .map(|h| h.backing)
            .is_some_and(|b| match (&b, &g.from) {
                (Some(b), Some(f)) => b == f || super::ops::same_file(b, f),
                (None, None) => true,
                _ => false,
            });
        if !back {
            continue;
        }
        let r = ctx.qemu(|| snaptree_qemu_img::release_copied_clusters(&g.file, &g.mapped));
        if let Err(e) = r {
            failures.push(format!(
                "the space copied into {} could not be given back: {e}",
                g.file.display()
            ));
        }
    }
    if failures.is_empty() {
        cause
    } else {
        cause.then(failures.join("; "))
    }
}

/// Undoes `done` in reverse order and returns the error that caused it, with the undo's own
/// failures if any.
fn rollback(ctx: Ctx<'_>, done: &[Op], cause: QemuError) -> QemuError {
    let failures: Vec<QemuError> = done
        .iter()
        .rev()
        .filter_map(|op| op.run(ctx, &mut |_| {}, &mut |_, _| {}).err())
        .collect();
    if failures.is_empty() {
        cause.then("nothing was changed")
    } else {
        QemuError::Undo {
            cause: Box::new(cause),
            failures,
        }
    }
}
