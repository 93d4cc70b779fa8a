//! [`QemuBackend`]: the engine's `Backend` for a QEMU domain whose disks are qcow2 files.
//! It only dispatches: each step goes to live mode (`live`) when the domain names a QMP
//! socket and its VM runs or is paused, to offline mode (`offline`) otherwise, and every
//! outcome goes through one tail ([`QemuBackend::conclude`]).

use std::path::{Path, PathBuf};

use snaptree_engine::{
    Adoption, Backend, Capabilities, PhysicalTree, PowerMask, PowerState, Progress, Step, StepKind,
};

use crate::adopt;
use crate::config::Config;
use crate::ctx::Ctx;
use crate::disk::{Disk, Mode};
use crate::error::{NAME, QemuError, Result, error};
use crate::handle::QemuHandle;
use crate::live::execute_chains;
use crate::live::internal::{self as live_internal, InternalStep};
use crate::live::session::Session;
use crate::live::step::ChainStep;
use crate::offline::exec::{self, DiskPlan};
use crate::offline::scan::Scan;
use crate::offline::{external, internal};
use crate::records::{self, Kind};

/// The suffix of the manifest file beside each disk's image.
const MANIFEST_SUFFIX: &str = ".snaptree-manifest.xml";

/// The QEMU backend for one domain.
///
/// Each disk keeps its snapshots in its own mode (`<disk snapshot='external|internal'>`);
/// the file named in the domain XML always holds the live state. When the domain names
/// QEMU's QMP socket, steps run live over QMP while its VM runs or is paused, and offline
/// through `qemu-img` while it is shut off; without a socket the domain is always taken
/// to be shut off.
#[derive(Debug)]
pub struct QemuBackend {
    disks: Vec<Disk>,
    handle: QemuHandle,
    /// The running QEMU, when the domain XML names its QMP socket (live mode).
    live: Option<Session>,
}

impl QemuBackend {
    /// What the backend can do: every step, only while the domain is shut off (the
    /// offline backend never runs a guest).
    pub fn offline_capabilities() -> Capabilities {
        Capabilities::all_in(PowerState::Shutoff.bit())
    }

    /// What the backend can do for a domain in live mode whose disks are all in internal
    /// mode: every step while the VM runs, is paused or is shut off.
    pub fn live_capabilities() -> Capabilities {
        Capabilities::all_in(PowerMask::ANY)
    }

    /// What the backend can do for a domain in live mode whose disks are all in external
    /// mode: every step in every power state, except revert, which needs the domain shut
    /// off (a disk-only snapshot holds no memory to resume a running guest from).
    pub fn live_external_capabilities() -> Capabilities {
        Capabilities::all_in(PowerMask::ANY).with(StepKind::Revert, PowerState::Shutoff.bit())
    }

    /// What the plugin declares before any domain is open: the union of the offline and
    /// the live capabilities (each open domain narrows them).
    pub fn any_domain_capabilities() -> Capabilities {
        Capabilities::all_in(PowerMask::ANY)
    }

    /// Opens the backend for a domain document, offline only (a QMP socket it names is
    /// not used): every `<devices><disk>` must have an absolute `<source file=...>`. The
    /// files are not opened yet; an interrupted step may have left them mid-way, and the
    /// engine's recovery re-runs it.
    pub fn open(xml: &str) -> snaptree_engine::Result<QemuBackend> {
        let config = Config::parse(xml)?;
        Ok(QemuBackend::with_config(config.disks, None))
    }

    /// Opens the backend for a domain document. When it names QEMU's QMP socket
    /// (`<qmp socket='PATH'/>` inside `<domain>`), the backend works in live mode while
    /// a QEMU listens there (running or paused), offline otherwise.
    pub fn open_xml(xml: &str) -> snaptree_engine::Result<QemuBackend> {
        let config = Config::parse(xml)?;
        Ok(QemuBackend::with_config(
            config.disks,
            config.qmp_socket.map(Session::new),
        ))
    }

    fn with_config(disks: Vec<Disk>, live: Option<Session>) -> QemuBackend {
        QemuBackend {
            disks,
            handle: QemuHandle::default(),
            live,
        }
    }

    /// This domain's capabilities: live ones when it names a QMP socket and its disks are
    /// all internal (snapshots with memory) or all external (disk-only); otherwise
    /// everything only while shut off (a mixed domain has no live mode, so the engine
    /// refuses its steps while the VM runs).
    pub fn domain_capabilities(&self) -> Capabilities {
        if self.live.is_none() {
            QemuBackend::offline_capabilities()
        } else if self.all_in(Mode::Internal) {
            QemuBackend::live_capabilities()
        } else if self.all_in(Mode::External) {
            QemuBackend::live_external_capabilities()
        } else {
            QemuBackend::offline_capabilities()
        }
    }

    fn all_in(&self, mode: Mode) -> bool {
        self.disks.iter().all(|d| d.mode == mode)
    }

    /// The live session when the VM runs or is paused; `None` when shut off (offline).
    pub(crate) fn live_now(&mut self) -> Result<Option<&mut Session>> {
        let Some(live) = self.live.as_mut() else {
            return Ok(None);
        };
        Ok((live.power_state()? != PowerState::Shutoff).then_some(live))
    }

    /// A handle that stays usable once the backend is boxed into a `Domain`.
    pub fn handle(&self) -> QemuHandle {
        self.handle.clone()
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            shared: &self.handle.0,
        }
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn disks(&self) -> &[Disk] {
        &self.disks
    }

    /// Settles what a live step QEMU died in left (live mode only).
    fn settle(&mut self, step: Option<&Step>) -> Result<()> {
        let ctx = Ctx {
            shared: &self.handle.0,
        };
        match self.live.as_mut() {
            Some(session) => live_internal::settle(ctx, Some(session), &self.disks, step),
            None => Ok(()),
        }
    }

    /// Runs one step, live or offline. What fails before anything could change returns at
    /// once; the outcome of running the step goes through [`QemuBackend::conclude`].
    fn run(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        // The step may need the space an earlier one freed.
        self.ctx().settle_frees();
        adopt::refresh(&mut self.disks)?;
        self.settle(Some(step))?;
        let ctx = Ctx {
            shared: &self.handle.0,
        };
        let external = self.all_in(Mode::External);
        let policy = self.handle.consolidate_policy();
        if let Some(session) = self.live.as_mut()
            && session.power_state()? != PowerState::Shutoff
        {
            let outcome = if external {
                let mut live = ChainStep {
                    session,
                    ctx,
                    policy,
                    progress: &mut *progress,
                };
                execute_chains(&mut live, &self.disks, step)
            } else {
                InternalStep {
                    session,
                    ctx,
                    disks: &self.disks,
                }
                .execute(step, &mut *progress)
            };
            return self.conclude(outcome, progress);
        }
        if let Step::Revert { snapshot, state } = step
            && *state != PowerState::Shutoff
        {
            return Err(QemuError::OperationInvalid(format!(
                "the qemu offline backend cannot start a guest: it can revert to snapshot {snapshot} only leaving the domain shut off, not {state}"
            )));
        }
        // An internal snapshot command a crash interrupted left its image looking corrupt
        // to qemu-img (`Record::RefcountUpdate`): repaired before this step reads it. Only
        // here, offline: a running QEMU holds the image (and copes with it as it is).
        let refcount_markers: Vec<(PathBuf, &Path)> = self
            .disks
            .iter()
            .filter(|d| d.mode == Mode::Internal)
            .map(|d| (Kind::RefcountUpdate.path(d), d.live.as_path()))
            .collect();
        for (marker, image) in &refcount_markers {
            if marker.exists() {
                ctx.repair_after_interrupted_snapshot_op(image)
                    .map_err(|e| QemuError::NothingChanged {
                        verb: step.kind().verb(),
                        source: Box::new(e),
                    })?;
            }
        }
        // Planning only reads: whatever fails here (a missing file, an image held by a
        // running VM) has changed nothing.
        let plans = self.plans(step).map_err(|e| match e {
            QemuError::Engine(_) | QemuError::OperationInvalid(_) => e,
            other => QemuError::NothingChanged {
                verb: step.kind().verb(),
                source: Box::new(other),
            },
        })?;
        let lives: Vec<&Path> = self.disks.iter().map(|d| d.live.as_path()).collect();
        let outcome = exec::execute(ctx, step.kind(), &lives, &lives, &plans, progress);
        // Every qemu-img the step ran has exited, a failed one included: none was cut off
        // between its reference counts and its flags. Only a crash keeps the markers.
        let outcome = match outcome {
            Err(e) if e.is_simulated_crash() => Err(e),
            other => {
                let removed = refcount_markers
                    .iter()
                    .try_for_each(|(marker, _)| ctx.remove(marker));
                other.and(removed)
            }
        };
        if outcome.is_err() {
            return self.conclude(outcome, progress);
        }
        if self.live.is_some() && matches!(step, Step::MergeIntoParent { .. }) {
            // A live merge QEMU died in, finished offline (its parent then holds the disks
            // only, without memory).
            ctx.remove(&Kind::LiveMerge.path(&self.disks[0]))?;
        }
        if step.kind() != StepKind::Create {
            // The records of a live commit or pivot QEMU died in (or that a domain which
            // no longer names its QMP socket left): the step is finished.
            for record in self.disks.iter().flat_map(records::live_chain) {
                ctx.remove(&record)?;
            }
        }
        self.conclude(Ok(()), progress)
    }

    /// Plans a step on every disk (reading only).
    fn plans(&self, step: &Step) -> Result<Vec<DiskPlan>> {
        let policy = self.handle.consolidate_policy();
        self.disks
            .iter()
            .map(|d| match d.mode {
                Mode::External => external::plan(self.ctx(), d, step, policy),
                Mode::Internal => internal::plan(self.ctx(), d, step),
            })
            .collect()
    }

    /// The one tail of every step. On success: the records that keep an unfinished step
    /// visible go, then the clean-up, made durable before the engine records the step as
    /// done. On failure: the clean-up only (an undone step may have left an empty snapshot
    /// directory), and nothing at all after a simulated crash, as after a real one.
    fn conclude(&self, outcome: Result<()>, progress: &mut dyn Progress) -> Result<()> {
        if let Err(e) = outcome {
            if !e.is_simulated_crash() {
                let _ = self.tidy();
                let _ = self.ctx().sync_dirty();
            }
            return Err(e);
        }
        for d in self.disks.iter().filter(|d| d.mode == Mode::External) {
            self.ctx().remove(&Kind::Unfinished.path(d))?;
        }
        adopt::forget_freed(self.ctx(), &self.disks)?;
        self.tidy()?;
        self.ctx().sync_dirty()?;
        progress.report(1.0);
        Ok(())
    }

    /// Removes what a crash can leave that no step needs any more — the temporary file of a
    /// record that was never renamed into place — and the snapshot directories left
    /// empty: a disk with no snapshot left has no trace of snaptree beside it. Runs after
    /// every step, so a re-run finishes it too.
    fn tidy(&self) -> Result<()> {
        for d in self.disks.iter().filter(|d| d.mode == Mode::External) {
            for record in records::all(d) {
                let mut tmp = record.into_os_string();
                tmp.push(".tmp");
                self.ctx().remove(Path::new(&tmp))?;
            }
            self.ctx().remove_dir_if_empty(&d.dir())?;
        }
        Ok(())
    }

    /// The tree every disk holds; all disks must hold the same one.
    fn physical(&mut self) -> Result<PhysicalTree> {
        adopt::refresh(&mut self.disks)?;
        self.settle(None)?;
        let disks = self.disks.clone();
        // External disks' trees are in their files' headers, running or not.
        let internal = disks.iter().any(|d| d.mode == Mode::Internal);
        let live_trees = match self.live_now()? {
            Some(session) if internal => Some(live_internal::physical(session, &disks)?),
            _ => None,
        };
        let mut first: Option<(PhysicalTree, &Disk)> = None;
        for (i, d) in self.disks.iter().enumerate() {
            let live_tree = live_trees.as_ref().and_then(|t| t[i].clone());
            let tree = match (live_tree, d.mode) {
                (Some(tree), _) => tree,
                (None, Mode::External) => Scan::load(d)?.physical(d)?,
                (None, Mode::Internal) => internal::physical(self.ctx(), d)?,
            };
            match &first {
                None => first = Some((tree, d)),
                Some((t, other)) if *t != tree => {
                    return Err(error(format!(
                        "{} and {} hold different snapshot trees: {t:?} and {tree:?}",
                        other.describe(),
                        d.describe()
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(first.map(|(t, _)| t).unwrap_or_default())
    }
}

impl QemuBackend {
    /// What `step` would write and free on each file system (SEMANTICS.md §7.7), from
    /// the plan it would run offline now. `None` while the VM runs (live steps are not
    /// estimated) or when the files cannot be read for an estimate (the step then runs
    /// and reports its own error).
    pub fn estimate_step(
        &mut self,
        step: &Step,
    ) -> snaptree_engine::Result<Option<Vec<snaptree_engine::SpaceUse>>> {
        if self.live_now()?.is_some() {
            return Ok(None);
        }
        // The free space read below must include what earlier steps freed.
        self.ctx().settle_frees();
        adopt::refresh(&mut self.disks)?;
        let estimate = self
            .plans(step)
            .and_then(|plans| crate::offline::space::estimate(&plans, &self.manifest_writes()));
        Ok(estimate.ok())
    }

    /// What saving the manifest after an operation writes and frees beside each disk: a
    /// new file written beside the old one before it replaces it (`write_atomic`), at most
    /// a block larger (one snapshot's entry), and the old one freed; in 4 KiB blocks.
    fn manifest_writes(&self) -> Vec<(std::path::PathBuf, u64, u64)> {
        self.disks
            .iter()
            .map(|d| {
                let path = d.beside(MANIFEST_SUFFIX);
                let old = std::fs::metadata(&path).map_or(0, |m| m.len());
                let old = old.div_ceil(4096) * 4096;
                (path, old + 4096, old)
            })
            .collect()
    }

    /// Keeps the engine's manifest (ABI 1.2) beside every disk's image, as
    /// `<image>.snaptree-manifest.xml` next to its `.snaptree.json`: any one disk that
    /// survives is enough to rebuild the tree (`snaptree adopt`). Beside the image rather
    /// than in the snapshot directory because internal-mode disks have none, and an
    /// external disk's goes away with its last snapshot. Empty: removed, so a disk without
    /// snapshots has no snaptree file beside it.
    pub(crate) fn save_manifest_beside_disks(&mut self, manifest: &str) -> Result<()> {
        let ctx = self.ctx();
        for d in &self.disks {
            let path = d.beside(MANIFEST_SUFFIX);
            if manifest.is_empty() {
                ctx.remove(&path)?;
            } else {
                ctx.write_atomic(&path, manifest.as_bytes())?;
            }
        }
        ctx.sync_dirty()
    }

    /// The manifest kept beside the first disk that has one.
    pub(crate) fn manifest_beside_disks(&self) -> Result<Option<String>> {
        for d in &self.disks {
            let path = d.beside(MANIFEST_SUFFIX);
            match std::fs::read_to_string(&path) {
                Ok(text) => return Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(error(format!("cannot read {}: {e}", path.display()))),
            }
        }
        Ok(None)
    }

    /// The `adopt` step of a REDEFINE (see `adopt`): offline from the files, live (a
    /// running VM's internal disks) from the tags QEMU reports. Changes no data.
    pub fn adopt_existing(&mut self, adoption: &Adoption) -> snaptree_engine::Result<()> {
        adopt::refresh(&mut self.disks)?;
        self.settle(None)?;
        let internal = self.disks.iter().any(|d| d.mode == Mode::Internal);
        let disks = self.disks.clone();
        let live_tags = match self.live_now()? {
            Some(session) if internal => Some(
                live_internal::devices(session, &disks)?
                    .iter()
                    .map(|d| d.tags())
                    .collect(),
            ),
            _ => None,
        };
        let ctx = Ctx {
            shared: &self.handle.0,
        };
        Ok(adopt::adopt(ctx, &mut self.disks, live_tags, adoption)?)
    }
}

impl Drop for QemuBackend {
    /// A closed backend has given back all the space its steps freed.
    fn drop(&mut self) {
        self.ctx().settle_frees();
    }
}

impl Backend for QemuBackend {
    fn name(&self) -> &str {
        NAME
    }

    /// See [`QemuBackend::domain_capabilities`].
    fn capabilities(&self) -> Capabilities {
        self.domain_capabilities()
    }

    fn power_state(&mut self) -> snaptree_engine::Result<PowerState> {
        match self.live.as_mut() {
            Some(live) => Ok(live.power_state()?),
            None => Ok(PowerState::Shutoff),
        }
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> snaptree_engine::Result<()> {
        Ok(self.run(step, progress)?)
    }

    fn list_physical(&mut self) -> snaptree_engine::Result<PhysicalTree> {
        Ok(self.physical()?)
    }

    fn can_adopt(&self) -> bool {
        true
    }

    fn adopt(
        &mut self,
        adoption: &Adoption,
        progress: &mut dyn Progress,
    ) -> snaptree_engine::Result<()> {
        self.adopt_existing(adoption)?;
        progress.report(1.0);
        Ok(())
    }

    fn keeps_manifest(&self) -> bool {
        true
    }

    fn save_manifest(&mut self, manifest: &str) -> snaptree_engine::Result<()> {
        Ok(self.save_manifest_beside_disks(manifest)?)
    }

    fn load_manifest(&mut self) -> snaptree_engine::Result<Option<String>> {
        Ok(self.manifest_beside_disks()?)
    }

    fn estimate(
        &mut self,
        step: &Step,
    ) -> snaptree_engine::Result<Option<Vec<snaptree_engine::SpaceUse>>> {
        self.estimate_step(step)
    }

    #[cfg(feature = "test-hooks")]
    fn test_hooks(&mut self) -> Option<&mut dyn snaptree_engine::TestHooks> {
        Some(self)
    }
}
