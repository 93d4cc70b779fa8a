//! Live mode for internal-mode disks: snapshots with memory through QMP (`snapshot-save` /
//! `-load` / `-delete` jobs, tagged with the snapshot uuid, the VM state stored on the first
//! disk), keeping the same `<disk>.snaptree.json` record as offline internal mode, so the
//! physical tree reads the same in both modes.
//!
//! Per step: create = `snapshot-save`, revert = `snapshot-load` then `stop`/`cont` to the
//! step's state (a revert to "shut off" while the VM runs is refused), discard/consolidate
//! = `snapshot-delete`, merge = the offline borrow sequence with the VM stopped and memory
//! saved, detach/forget = the record only.
//!
//! Restart: every step changes the images first and the record after, each guarded by
//! what is already there (a tag present on every disk, a uuid recorded), exactly as in
//! offline internal mode, so a step re-run after a crash finishes the job. What a QEMU
//! that died mid-create or mid-merge leaves is settled by [`settle`] before the next step.

use std::path::Path;

use snaptree_engine::{NoProgress, PhysicalTree, PowerState, Progress, Step, Uuid};
use snaptree_qmp::{self as qmp, InternalSnapshotSpec};

use super::session::{JOB_TIMEOUT, Session, canonical};
use crate::ctx::Ctx;
use crate::disk::{Disk, Mode};
use crate::error::{QemuError, Result, error};
use crate::offline::internal::{domain_tag, physical_of, tag};
use crate::offline::meta::Meta;
use crate::offline::ops::MERGE_STASH;
use crate::records::{Kind, Record};

/// One disk as the running QEMU sees it.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    /// The active node: what the snapshot jobs name.
    pub(crate) node: String,
    /// The device's block backend QOM path, for HMP `qemu-io` (the test hooks').
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) qdev: String,
    /// Internal snapshots of the active image.
    snapshots: Vec<qmp::InternalSnapshot>,
    /// Guest-visible size (the test hooks').
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) size: u64,
}

impl Device {
    fn has(&self, tag: &str) -> bool {
        self.snapshots.iter().any(|s| s.name == tag)
    }

    /// The tags of the image's internal snapshots.
    pub(crate) fn tags(&self) -> Vec<String> {
        self.snapshots.iter().map(|s| s.name.clone()).collect()
    }
}

/// The internal snapshot jobs.
#[derive(Debug, Clone, Copy)]
enum SnapshotJob {
    Save,
    Load,
    Delete,
}

/// Every disk's device in the running QEMU, found by its image file.
pub(crate) fn devices(session: &mut Session, disks: &[Disk]) -> Result<Vec<Device>> {
    let block = session.with("query the block devices", |q| q.query_block())?;
    disks
        .iter()
        .map(|d| {
            let want = canonical(&d.live);
            block
                .iter()
                .find_map(|b| {
                    let i = b.inserted.as_ref()?;
                    (canonical(Path::new(&i.image.filename)) == want).then(|| Device {
                        node: i.node_name.clone(),
                        qdev: b.qdev.clone().unwrap_or_else(|| b.device.clone()),
                        snapshots: i.image.snapshots.clone(),
                        size: i.image.virtual_size,
                    })
                })
                .ok_or_else(|| {
                    error(format!(
                        "{} is not the active image of any device of the running VM",
                        d.describe()
                    ))
                })
        })
        .collect()
}

/// One live step on a domain whose disks are all internal: the session, the door to the
/// disk, and the disks.
pub(crate) struct InternalStep<'a> {
    pub(crate) session: &'a mut Session,
    pub(crate) ctx: Ctx<'a>,
    pub(crate) disks: &'a [Disk],
}

impl InternalStep<'_> {
    /// Runs one step while the VM runs or is paused (the capabilities keep a domain that
    /// mixes the modes shut off).
    pub(crate) fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        if let Some(d) = self.disks.iter().find(|d| d.mode != Mode::Internal) {
            return Err(QemuError::OperationInvalid(format!(
                "the qemu backend snapshots {} only while the domain is shut off: a running domain's disks must all be internal (snapshots with memory) or all external (disk-only)",
                d.describe()
            )));
        }
        match step {
            Step::Forget { .. } => Ok(()),
            Step::DetachLive => self.write_meta(&|m| m.with_live(None)),
            Step::Create { snapshot, .. } => self.create(*snapshot, progress),
            Step::Revert { snapshot, state } => self.revert(*snapshot, *state, progress),
            // Internal snapshots are independent of each other: freeing one, with its
            // dependents given to its parent, is a plain delete.
            Step::DiscardLeaf { snapshot }
            | Step::Consolidate { snapshot }
            | Step::MergeIntoParent {
                snapshot,
                parent: None,
            } => {
                let devs = devices(self.session, self.disks)?;
                self.delete(&domain_tag(self.disks, snapshot), &devs, progress)?;
                self.write_meta(&|m| {
                    let heir = m.parents.get(snapshot).copied().flatten();
                    m.removed(*snapshot, heir)
                })
            }
            Step::MergeIntoParent {
                snapshot,
                parent: Some(parent),
            } => {
                self.merge(*snapshot, *parent, progress)?;
                self.write_meta(&|m| m.removed(*snapshot, Some(*parent)))
            }
        }
    }

    /// Applies `change` to every disk's record.
    fn write_meta(&self, change: &dyn Fn(&Meta) -> Meta) -> Result<()> {
        for d in self.disks {
            let path = d.meta();
            let meta = Meta::load(&path)?;
            let next = change(&meta);
            if next != meta {
                next.store(self.ctx, &path)?;
            }
        }
        Ok(())
    }

    /// Restart: saved only if some disk lacks the tag (a partial one is removed first:
    /// snapshot-save refuses an existing tag), recorded only if unrecorded. A failure
    /// before the record undoes the save, so the step changes nothing.
    fn create(&mut self, snapshot: Uuid, progress: &mut dyn Progress) -> Result<()> {
        for d in self.disks {
            if Meta::load(&d.meta())?.holds_other(snapshot) {
                return Err(crate::offline::internal::holds_other(d, snapshot));
            }
        }
        let tag = tag(&snapshot);
        let devs = devices(self.session, self.disks)?;
        let fresh = !devs.iter().all(|d| d.has(&tag));
        let intent = Kind::LiveCreate.path(&self.disks[0]);
        if fresh {
            // Written first: if QEMU dies mid-save, the engine forgets the create and the
            // next step removes what the save left (see `settle`).
            Record::LiveCreate { snapshot }.store(self.ctx, &intent)?;
            self.ctx.sync_dirty()?;
            self.delete(&tag, &devs, &mut NoProgress)?;
            if let Err(e) = self.save(&tag, &devs, progress) {
                return Err(self.undo_save(&tag, e));
            }
        }
        if let Err(e) = self.write_meta(&|m| m.created(snapshot)) {
            return Err(if fresh { self.undo_save(&tag, e) } else { e });
        }
        self.ctx.remove(&intent)
    }

    fn revert(
        &mut self,
        snapshot: Uuid,
        state: PowerState,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        if state == PowerState::Shutoff {
            return Err(QemuError::OperationInvalid(format!(
                "the qemu backend cannot shut the guest off: while the VM runs or is paused it reverts to snapshot {snapshot} only running or paused (revert with the RUNNING or PAUSED flag, or shut the domain down first)"
            )));
        }
        let tag = domain_tag(self.disks, &snapshot);
        let devs = devices(self.session, self.disks)?;
        if let Some((d, _)) = self.disks.iter().zip(&devs).find(|(_, dev)| !dev.has(&tag)) {
            return Err(error(format!(
                "{}: no internal snapshot tagged {snapshot}",
                d.describe()
            )));
        }
        let memory = devs[0]
            .snapshots
            .iter()
            .any(|s| s.name == tag && s.vm_state_size > 0);
        if !memory {
            return Err(QemuError::OperationInvalid(format!(
                "snapshot {snapshot} holds no memory state (it was taken while the domain was shut off): the qemu backend can revert to it only with the domain shut off"
            )));
        }
        self.load(&tag, &devs, progress)?;
        self.session
            .with("set the power state after the revert", |q| {
                let running = q.query_status()?.running;
                match state {
                    PowerState::Running if !running => q.cont(),
                    PowerState::Paused if running => q.stop(),
                    _ => Ok(()),
                }
            })?;
        self.write_meta(&|m| m.with_live(Some(snapshot)))
    }

    /// Live internal merge: snapshot `parent` takes `snapshot`'s disks and memory,
    /// `snapshot` is deleted, and the live state (disks, memory, run state) is what it was.
    ///
    /// As offline (`ops::merge_internal`), the live state is borrowed, with the VM stopped
    /// throughout so the guest cannot change the borrowed state: (0) record whether the VM
    /// ran in the merge record and stop it, (1) save the live state as [`MERGE_STASH`],
    /// (2) load the snapshot, (3) delete the parent, (4) save the parent, (5) load the
    /// stash, (6) delete the snapshot, (7) delete the stash, (8) resume the VM if it ran
    /// and remove the record.
    ///
    /// Restart: as offline — no snapshot tag means (1)-(6) are done (the stash may be left
    /// to delete); an existing stash holds the true live state and is never saved again;
    /// otherwise the live state is the true one and the sequence starts over. The record
    /// keeps the run state across a restart.
    fn merge(&mut self, snapshot: Uuid, parent: Uuid, progress: &mut dyn Progress) -> Result<()> {
        let (snapshot_tag, parent_tag) = (
            domain_tag(self.disks, &snapshot),
            domain_tag(self.disks, &parent),
        );
        let intent = Kind::LiveMerge.path(&self.disks[0]);
        let devs = devices(self.session, self.disks)?;
        if devs.iter().any(|d| d.has(&snapshot_tag)) {
            if !intent.exists() {
                let running = self.session.running()?;
                Record::LiveMerge {
                    snapshot,
                    parent,
                    running,
                }
                .store(self.ctx, &intent)?;
                self.ctx.sync_dirty()?;
            }
            self.session.with("stop the VM for a merge", |q| q.stop())?;
            if !devs.iter().all(|d| d.has(MERGE_STASH)) {
                self.delete(MERGE_STASH, &devs, &mut NoProgress)?;
                self.save(MERGE_STASH, &devs, &mut |f: f64| progress.report(f / 7.0))?;
            }
            self.load(&snapshot_tag, &devs, &mut |f: f64| {
                progress.report((1.0 + f) / 7.0)
            })?;
            self.delete(&parent_tag, &devs, &mut |f: f64| {
                progress.report((2.0 + f) / 7.0)
            })?;
            self.save(&parent_tag, &devs, &mut |f: f64| {
                progress.report((3.0 + f) / 7.0)
            })?;
            let devs = devices(self.session, self.disks)?;
            self.load(MERGE_STASH, &devs, &mut |f: f64| {
                progress.report((4.0 + f) / 7.0)
            })?;
            self.delete(&snapshot_tag, &devs, &mut |f: f64| {
                progress.report((5.0 + f) / 7.0)
            })?;
        }
        // Last, so that some tag shows the step under way until it is finished (see
        // `ops::merge_internal`).
        let devs = devices(self.session, self.disks)?;
        self.delete(MERGE_STASH, &devs, &mut |f: f64| {
            progress.report((6.0 + f) / 7.0)
        })?;
        if let Some(Record::LiveMerge { running, .. }) = Kind::LiveMerge.load(&intent)? {
            if running {
                self.session
                    .with("resume the VM after a merge", |q| q.cont())?;
            }
            self.ctx.remove(&intent)?;
        }
        Ok(())
    }

    /// Runs one snapshot job for `tag` on `nodes`, the VM state on the first.
    fn snapshot_job(
        &mut self,
        job: SnapshotJob,
        tag: &str,
        nodes: &[&str],
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let (kind, what) = match job {
            SnapshotJob::Save => ("save", "save a live snapshot"),
            SnapshotJob::Load => ("load", "load a live snapshot"),
            SnapshotJob::Delete => ("delete", "delete a live snapshot"),
        };
        let id = self.session.job_id(kind);
        let spec = InternalSnapshotSpec {
            job_id: &id,
            tag,
            vmstate: nodes[0],
            devices: nodes,
        };
        self.session.with(what, |q| {
            let progress = &mut |f| progress.report(f);
            match job {
                SnapshotJob::Save => q.snapshot_save(&spec, progress, JOB_TIMEOUT),
                SnapshotJob::Load => q.snapshot_load(&spec, progress, JOB_TIMEOUT),
                SnapshotJob::Delete => q.snapshot_delete(&spec, progress, JOB_TIMEOUT),
            }
        })
    }

    /// `snapshot-save` of `tag` on every disk, the VM state on the first.
    fn save(&mut self, tag: &str, devs: &[Device], progress: &mut dyn Progress) -> Result<()> {
        let nodes: Vec<&str> = devs.iter().map(|d| d.node.as_str()).collect();
        self.snapshot_job(SnapshotJob::Save, tag, &nodes, progress)
    }

    /// `snapshot-load` of `tag` on every disk, the VM state from the first.
    fn load(&mut self, tag: &str, devs: &[Device], progress: &mut dyn Progress) -> Result<()> {
        let nodes: Vec<&str> = devs.iter().map(|d| d.node.as_str()).collect();
        self.snapshot_job(SnapshotJob::Load, tag, &nodes, progress)
    }

    /// `snapshot-delete` of `tag` on every disk that has it.
    fn delete(&mut self, tag: &str, devs: &[Device], progress: &mut dyn Progress) -> Result<()> {
        let nodes: Vec<&str> = devs
            .iter()
            .filter(|d| d.has(tag))
            .map(|d| d.node.as_str())
            .collect();
        if nodes.is_empty() {
            return Ok(());
        }
        self.snapshot_job(SnapshotJob::Delete, tag, &nodes, progress)
    }

    /// Removes a tag a failed create may have left, so that the step changed nothing. When
    /// that fails too (QEMU died), the create record stays for [`settle`].
    fn undo_save(&mut self, tag: &str, cause: QemuError) -> QemuError {
        let intent = Kind::LiveCreate.path(&self.disks[0]);
        let undone = devices(self.session, self.disks)
            .and_then(|devs| self.delete(tag, &devs, &mut NoProgress))
            .and_then(|()| self.ctx.remove(&intent));
        match undone {
            Ok(()) => cause.then("nothing was changed"),
            Err(failure) => QemuError::PartialSnapshotLeft {
                cause: Box::new(cause),
                tag: tag.to_owned(),
                failure: Box::new(failure),
            },
        }
    }
}

/// The tree the disks hold, with the tags read from QEMU. `None` for an external-mode
/// disk, whose tree its files' headers tell.
pub(crate) fn physical(session: &mut Session, disks: &[Disk]) -> Result<Vec<Option<PhysicalTree>>> {
    let devs = devices(session, disks)?;
    disks
        .iter()
        .zip(&devs)
        .map(|(d, dev)| {
            if d.mode != Mode::Internal {
                return Ok(None);
            }
            let tags: Vec<String> = dev.snapshots.iter().map(|s| s.name.clone()).collect();
            physical_of(d, &tags).map(Some)
        })
        .collect()
}

/// Undoes a live create the engine gave up on: QEMU died mid-save, so the step could not
/// remove the snapshot it may have left, and failed; the engine then forgot the create.
/// Its record names it: unless `step` is that very create (re-run by the engine's
/// recovery, which finishes it), the tag goes from every disk (through QEMU when it runs,
/// qemu-img otherwise) and from every record, then the record. `session`: the domain's,
/// in live mode.
///
/// A merge QEMU died in cannot be undone (the parent's old content may be gone): only
/// running the same merge again finishes it, so nothing else runs before.
pub(crate) fn settle(
    ctx: Ctx<'_>,
    session: Option<&mut Session>,
    disks: &[Disk],
    step: Option<&Step>,
) -> Result<()> {
    if let Some(step) = step
        && let Some(Record::LiveMerge {
            snapshot, parent, ..
        }) = Kind::LiveMerge.load(&Kind::LiveMerge.path(&disks[0]))?
        && !matches!(step, Step::MergeIntoParent { snapshot: s, parent: Some(p) } if *s == snapshot && *p == parent)
    {
        return Err(error(format!(
            "a live merge of snapshot {snapshot} into {parent} was interrupted (did QEMU die?); delete {snapshot} with MERGE again to finish it before anything else"
        )));
    }
    let intent = Kind::LiveCreate.path(&disks[0]);
    let Some(Record::LiveCreate { snapshot }) = Kind::LiveCreate.load(&intent)? else {
        return Ok(());
    };
    if let Some(Step::Create { snapshot: s, .. }) = step
        && *s == snapshot
    {
        return Ok(());
    }
    let tag = tag(&snapshot);
    let running = match session {
        Some(session) => (session.power_state()? != PowerState::Shutoff).then_some(session),
        None => None,
    };
    match running {
        Some(session) => {
            let devs = devices(session, disks)?;
            InternalStep {
                session,
                ctx,
                disks,
            }
            .delete(&tag, &devs, &mut NoProgress)?
        }
        None => {
            for d in disks.iter().filter(|d| d.mode == Mode::Internal) {
                if ctx.tags(&d.live)?.contains(&tag) {
                    ctx.snapshot_delete(&d.live, &tag)?;
                }
            }
        }
    }
    for d in disks.iter().filter(|d| d.mode == Mode::Internal) {
        let meta = Meta::load(&d.meta())?;
        let heir = meta.parents.get(&snapshot).copied().flatten();
        let next = meta.removed(snapshot, heir);
        if next != meta {
            next.store(ctx, &d.meta())?;
        }
    }
    ctx.remove(&intent)?;
    ctx.sync_dirty()
}
