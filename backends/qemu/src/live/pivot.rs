//! The active commit with pivot: a layer whose only dependent is the live image is freed by
//! committing the live image's data down into it, QEMU pivoting onto it, and the layer
//! taking the disk path. The state machine a re-run resumes is in [`ChainStep::commit_active`].

use snaptree_engine::Uuid;
use snaptree_qmp::{self as qmp, Commit};

use super::chain::{NODE_PREFIX, PIVOT_JOB, chain_of, drop_job, forget_node, node_name};
use super::session::{JOB_TIMEOUT, same_path};
use super::step::ChainStep;
use crate::disk::Disk;
use crate::error::{QemuError, Result};
use crate::records::{Kind, Record};

/// Frees `snapshot`'s layer, the live image its only dependent, by an active commit:
/// the live image's data goes down into the layer, QEMU pivots onto it, and it takes
/// the disk path. The guest is paused from the pivot to the rename: with no write in
/// between, a QEMU dying there restarts on the old overlay over the layer, which shows
/// the same data. Returns false, having changed nothing, when a stream must do it
/// instead.
///
/// The record (a non-layer file in the snapshot directory, so that the physical tree
/// does not read as unchanged while the layer's content is being replaced) says the
/// step is under way and whether the guest ran. Restart, by what QEMU runs on: the old
/// overlay on the layer → commit again (a ready commit left by a dead process was
/// cancelled without pivoting); the layer → rename it over the disk path; a name that
/// is gone → re-home onto the disk path; no layer any more → only the resume is left.
/// Then the guest is resumed if it ran, and the record dropped. A record that matches
/// none of these (the layer there, QEMU not on it nor on its overlay) is stale and
/// dropped.
pub(crate) fn commit_active(
    live: &mut ChainStep<'_>,
    index: usize,
    disk: &Disk,
    snapshot: Uuid,
) -> Result<bool> {
    let layer = disk.layer(&snapshot);
    let record = Kind::LivePivot.path(disk);
    let id = format!(
        "{PIVOT_JOB}{}",
        &node_name('j', &snapshot, index)[NODE_PREFIX.len()..]
    );
    let mut chain = chain_of(live.session, disk)?;
    let on_overlay = chain.on_overlay_of(disk, &layer);
    let pivoted = same_path(&chain.active_file, &layer);
    // Renamed (perhaps re-homed too, only the resume left).
    let renamed = !layer.exists();
    // After the pivot the node is re-homed, and QEMU reopens only nodes with a name of
    // its own (not the `#block…` names of images it opened from a header).
    let unnamed = on_overlay && chain.below[0].1.starts_with('#');
    if (!on_overlay && !pivoted && !renamed) || unnamed {
        drop_job(live.session, &id)?;
        live.ctx.remove(&record)?;
        return Ok(false);
    }
    if on_overlay {
        let mut wrote = false;
        if pivot_record(disk)?.map(|r| r.0) != Some(snapshot) {
            let running = live.session.running()?;
            Record::LivePivot { snapshot, running }.store(live.ctx, &record)?;
            live.ctx.sync_dirty()?;
            wrote = true;
        }
        let base = chain.below[0].1.clone();
        let speed = live.ctx.job_speed();
        let unfinished = live
            .session
            .with("query the jobs", |q| q.query_job(&id))?
            .filter(|j| j.status != qmp::JobStatus::Concluded);
        // An unfinished commit of an interrupted attempt is taken over, not restarted.
        if unfinished.is_none() {
            drop_job(live.session, &id)?;
            live.ctx
                .mutation(|| format!("commit {} into {}", disk.live.display(), layer.display()))?;
            let started = live
                .session
                .with("commit the live image into its layer", |q| {
                    q.block_commit_start(&Commit {
                        job_id: &id,
                        device: &chain.active,
                        top_node: None,
                        base_node: Some(&base),
                        backing_file: None,
                        speed,
                    })
                });
            if let Err(e) = started {
                // Refused (another job on the disk…): nothing changed, and the record
                // must not keep the engine re-running a step that did nothing.
                if wrote {
                    live.ctx.remove(&record)?;
                }
                return Err(e);
            }
        }
        // Not cancellable: the layer already takes data; only finishing frees it.
        let progress = &mut *live.progress;
        live.session
            .with("commit the live image into its layer", |q| {
                q.wait_job(
                    &id,
                    qmp::Until::ReadyOrConcluded,
                    &mut |f| {
                        progress.report(f);
                        true
                    },
                    JOB_TIMEOUT,
                )
                .map(drop)
            })?;
        live.ctx
            .mutation(|| "pause the guest for the pivot".to_string())?;
        live.session
            .with("pause the guest for the pivot", |q| q.stop())?;
        live.ctx
            .mutation(|| format!("pivot onto {}", layer.display()))?;
        live.session
            .with("pivot onto the layer", |q| {
                q.job_complete(&id)?;
                q.wait_job(&id, qmp::Until::Concluded, &mut |_| true, JOB_TIMEOUT)
                    .map(drop)
            })
            .map_err(paused)?;
        chain = chain_of(live.session, disk).map_err(paused)?;
    }
    if same_path(&chain.active_file, &layer) && layer.exists() {
        live.ctx.rename(&layer, &disk.live).map_err(paused)?;
        live.ctx.sync_dirty().map_err(paused)?;
    }
    if !same_path(&chain.active_file, &disk.live) {
        let file_node = node_name('p', &snapshot, index);
        forget_node(live.session, &file_node);
        live.ctx
            .mutation(|| format!("re-home node {} onto {}", chain.active, disk.live.display()))
            .map_err(paused)?;
        // With image locks again when the layer's file node held none (it was re-homed
        // when frozen); without, if its current file node still holds them.
        let discard = disk.discard.as_deref();
        live.session
            .with("re-home the pivoted image onto the disk path", |q| {
                let backing = chain.backing_node();
                q.rehome_active(
                    &chain.active,
                    &file_node,
                    &disk.live,
                    backing,
                    true,
                    discard,
                )
                .or_else(|_| {
                    q.rehome_active(
                        &chain.active,
                        &file_node,
                        &disk.live,
                        backing,
                        false,
                        discard,
                    )
                })
            })
            .map_err(paused)?;
    }
    if let Some((_, running)) = pivot_record(disk)? {
        // Only a guest this step paused: a QEMU started again meanwhile may wait, on
        // purpose, in `prelaunch` or for an incoming migration.
        let stopped = live
            .session
            .with("query the run state", |q| q.query_status())?
            .state
            == qmp::RunState::Paused;
        if running && stopped {
            live.ctx.mutation(|| "resume the guest".to_string())?;
            live.session
                .with("resume the guest after the pivot", |q| q.cont())
                .map_err(paused)?;
        }
        live.ctx.remove(&record)?;
    }
    Ok(true)
}

/// An error after the guest was paused for a pivot: it stays paused (resuming it before
/// the rename would let it write where the disk path does not lead) until a re-run.
fn paused(e: QemuError) -> QemuError {
    e.then(
        "the guest stays paused until the step is run again, which finishes it and resumes the guest",
    )
}

/// The snapshot a disk's pivot record names and whether the guest ran before it.
pub(crate) fn pivot_record(disk: &Disk) -> Result<Option<(Uuid, bool)>> {
    Ok(match Kind::LivePivot.load(&Kind::LivePivot.path(disk))? {
        Some(Record::LivePivot { snapshot, running }) => Some((snapshot, running)),
        _ => None,
    })
}
