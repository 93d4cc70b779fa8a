//! [`QemuBackend`]: the engine's `Backend` for a shut-off QEMU domain whose disks are qcow2
//! files.

use snaptree_engine::xml::DomainXml;
use snaptree_engine::{
    Backend, Capabilities, Error, PhysicalTree, PowerMask, PowerState, Progress, Result, Step,
    StepKind, TestHooks,
};

use crate::ctx::{Ctx, NAME, error};
use crate::disk::{Disk, Mode, disks_of};
use crate::exec::{self, DiskPlan};
use crate::handle::QemuHandle;
use crate::live::{self, Live};
use crate::{external, internal, live_chain, scan};

/// The offline QEMU backend for one domain.
///
/// The domain is always shut off: snaptree only manages its disks, through `qemu-img`.
/// Each disk keeps its snapshots in its own mode (`<disk snapshot='external|internal'>`);
/// the file named in the domain XML always holds the live state.
#[derive(Debug)]
pub struct QemuBackend {
    disks: Vec<Disk>,
    handle: QemuHandle,
    /// The running QEMU, when the domain XML names its QMP socket (live mode).
    live: Option<Live>,
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

    /// What the plugin declares before any domain is open: the union of the offline and
    /// the live capabilities (each open domain narrows them).
    pub fn any_domain_capabilities() -> Capabilities {
        Capabilities::all_in(PowerMask::ANY)
    }

    /// Opens the backend for a domain: every `<devices><disk>` must have an absolute
    /// `<source file=...>`. The files are not opened yet; an interrupted step may have left
    /// them mid-way, and the engine's recovery re-runs it. Offline only: see
    /// [`QemuBackend::open_xml`] for live mode.
    pub fn open(domain: &DomainXml) -> Result<QemuBackend> {
        Ok(QemuBackend {
            disks: disks_of(domain)?,
            handle: QemuHandle::default(),
            live: None,
        })
    }

    /// Opens the backend for a domain document. When it names QEMU's QMP socket
    /// (`<qmp socket='PATH'/>` inside `<domain>`), the backend works in live mode while
    /// a QEMU listens there (running or paused), offline otherwise.
    pub fn open_xml(xml: &str) -> Result<QemuBackend> {
        let domain = DomainXml::parse(xml)?;
        let mut b = QemuBackend::open(&domain)?;
        b.live = live::qmp_socket(xml)?.map(Live::new);
        for (disk, discard) in b.disks.iter_mut().zip(live::discard_modes(xml)?) {
            disk.discard = discard;
        }
        Ok(b)
    }

    /// What the backend can do for a domain in live mode whose disks are all in external
    /// mode: every step in every power state, except revert, which needs the domain shut
    /// off (a disk-only snapshot holds no memory to resume a running guest from).
    pub fn live_external_capabilities() -> Capabilities {
        Capabilities::all_in(PowerMask::ANY).with(StepKind::Revert, PowerState::Shutoff.bit())
    }

    /// This domain's capabilities: live ones when it names a QMP socket and its disks are
    /// all internal (snapshots with memory) or all external (disk-only); otherwise
    /// everything only while shut off (a mixed domain has no live mode, so the engine
    /// refuses its steps while the VM runs).
    pub fn domain_capabilities(&self) -> Capabilities {
        if self.live.is_none() {
            QemuBackend::offline_capabilities()
        } else if self.disks.iter().all(|d| d.mode == Mode::Internal) {
            QemuBackend::live_capabilities()
        } else if self.disks.iter().all(|d| d.mode == Mode::External) {
            QemuBackend::live_external_capabilities()
        } else {
            QemuBackend::offline_capabilities()
        }
    }

    /// The live session when the VM runs or is paused; `None` when shut off (offline).
    pub(crate) fn live_now(&mut self) -> Result<Option<&mut Live>> {
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

    pub(crate) fn disks(&self) -> &[Disk] {
        &self.disks
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

    /// Undoes a live create the engine gave up on: QEMU died mid-save, so the step could
    /// not remove the snapshot it may have left, and failed; the engine then forgot the
    /// create. Its intent record names it: unless `step` is that very create (re-run by
    /// the engine's recovery, which finishes it), the tag goes from every disk (through
    /// QEMU when it runs, qemu-img otherwise) and from every record, then the intent.
    fn settle(&mut self, step: Option<&Step>) -> Result<()> {
        if self.live.is_none() {
            return Ok(());
        }
        // A merge QEMU died in cannot be undone (the parent's old content may be gone):
        // only running the same merge again finishes it, so nothing else runs before.
        if let Some(step) = step
            && let Some((s, p)) = live::read_merge_intent(&live::merge_intent(&self.disks))?
            && !matches!(step, Step::MergeIntoParent { snapshot, parent: Some(q) } if *snapshot == s && *q == p)
        {
            return Err(error(format!(
                "a live merge of snapshot {s} into {p} was interrupted (did QEMU die?); delete {s} with MERGE again to finish it before anything else"
            )));
        }
        let intent = live::create_intent(&self.disks);
        let Some(u) = live::read_intent(&intent)? else {
            return Ok(());
        };
        if let Some(Step::Create { snapshot, .. }) = step
            && *snapshot == u
        {
            return Ok(());
        }
        let t = internal::tag(&u);
        let disks = self.disks.clone();
        match self.live_now()? {
            Some(live) => live.delete_tag(&disks, &t)?,
            None => {
                for d in disks.iter().filter(|d| d.mode == Mode::Internal) {
                    if self.ctx().tags(&d.live)?.contains(&t) {
                        self.ctx().snapshot_delete(&d.live, &t)?;
                    }
                }
            }
        }
        for d in disks.iter().filter(|d| d.mode == Mode::Internal) {
            let meta = crate::meta::Meta::load(&d.meta())?;
            let heir = meta.parents.get(&u).copied().flatten();
            let next = meta.removed(u, heir);
            if next != meta {
                next.store(self.ctx(), &d.meta())?;
            }
        }
        self.ctx().remove(&intent)?;
        self.ctx().sync_dirty()
    }

    /// Removes the records that keep an unfinished step visible (see
    /// [`exec::unfinished_record`]): only once the step has succeeded.
    fn finished(&self) -> Result<()> {
        for d in self.disks.iter().filter(|d| d.mode == Mode::External) {
            self.ctx().remove(&d.dir().join(exec::UNFINISHED))?;
        }
        Ok(())
    }

    /// Removes what a crash can leave that no step needs any more — the temporary file of an
    /// intent record that was never renamed into place — and the snapshot directories left
    /// empty: a disk with no snapshot left has no trace of snaptree beside it. Runs after
    /// every step, so a re-run finishes it too.
    fn tidy(&self) -> Result<()> {
        for d in self.disks.iter().filter(|d| d.mode == Mode::External) {
            let records = [d.rebase_intent(), d.dir().join(exec::UNFINISHED)]
                .into_iter()
                .chain(live_chain::records(d));
            for record in records {
                let mut tmp = record.into_os_string();
                tmp.push(".tmp");
                self.ctx().remove(std::path::Path::new(&tmp))?;
            }
            self.ctx().remove_dir_if_empty(&d.dir())?;
        }
        Ok(())
    }
}

impl Backend for QemuBackend {
    fn name(&self) -> &str {
        NAME
    }

    /// Every step, only while the domain is shut off: the offline backend never runs a guest.
    fn capabilities(&self) -> Capabilities {
        self.domain_capabilities()
    }

    fn power_state(&mut self) -> Result<PowerState> {
        match self.live.as_mut() {
            Some(live) => live.power_state(),
            None => Ok(PowerState::Shutoff),
        }
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        self.settle(Some(step))?;
        let ctx = Ctx {
            shared: &self.handle.0,
        };
        if let Some(live) = self.live.as_mut()
            && live.power_state()? != PowerState::Shutoff
        {
            let crashes = self.handle.crashes();
            let done = if self.disks.iter().all(|d| d.mode == Mode::External) {
                let policy = self.handle.consolidate_policy();
                live.execute_chains(ctx, &self.disks, step, policy, progress)
            } else {
                live.execute(ctx, &self.disks, step, progress)
            };
            if let Err(e) = done {
                // As offline: a failed step may have left an empty snapshot directory.
                if self.handle.crashes() == crashes {
                    let _ = self.tidy();
                    let _ = self.ctx().sync_dirty();
                }
                return Err(e);
            }
            self.finished()?;
            self.tidy()?;
            // Durable before the engine records the step as done.
            ctx.sync_dirty()?;
            progress.report(1.0);
            return Ok(());
        }
        if let Step::Revert { snapshot, state } = step
            && *state != PowerState::Shutoff
        {
            return Err(Error::OperationInvalid(format!(
                "the qemu offline backend cannot start a guest: it can revert to snapshot {snapshot} only leaving the domain shut off, not {state}"
            )));
        }
        // Planning only reads: whatever fails here (a missing file, an image held by a
        // running VM) has changed nothing.
        let plans = self.plans(step).map_err(|e| match e {
            Error::Backend { message, .. } => error(format!(
                "cannot {}, nothing was changed: {message}",
                step.kind().verb()
            )),
            other => other,
        })?;
        let lives: Vec<&std::path::Path> = self.disks.iter().map(|d| d.live.as_path()).collect();
        let crashes = self.handle.crashes();
        if let Err(e) = exec::execute(self.ctx(), step.kind(), &lives, &plans, progress) {
            // An undone step may have created an empty snapshot directory. (A simulated
            // crash stops right there, as a real one would.)
            if self.handle.crashes() == crashes {
                let _ = self.tidy();
                let _ = self.ctx().sync_dirty();
            }
            return Err(e);
        }
        if self.live.is_some() && matches!(step, Step::MergeIntoParent { .. }) {
            // A live merge QEMU died in, finished offline (its parent then holds the disks
            // only, without memory).
            self.ctx().remove(&live::merge_intent(&self.disks))?;
        }
        if step.kind() != StepKind::Create {
            // The records of a live commit or pivot QEMU died in (or that a domain which
            // no longer names its QMP socket left): the step is finished.
            live_chain::clear_records(self.ctx(), &self.disks)?;
        }
        self.finished()?;
        self.tidy()?;
        // Durable before the engine records the step as done.
        self.ctx().sync_dirty()?;
        progress.report(1.0);
        Ok(())
    }

    /// The tree every disk holds; all disks must hold the same one.
    fn list_physical(&mut self) -> Result<PhysicalTree> {
        self.settle(None)?;
        let disks = self.disks.clone();
        // External disks' trees are in their files' headers, running or not.
        let internal = disks.iter().any(|d| d.mode == Mode::Internal);
        let live_trees = match self.live_now()? {
            Some(live) if internal => Some(live.physical(&disks)?),
            _ => None,
        };
        let mut first: Option<(PhysicalTree, &Disk)> = None;
        for (i, d) in self.disks.iter().enumerate() {
            let live_tree = live_trees.as_ref().and_then(|t| t[i].clone());
            let tree = match (live_tree, d.mode) {
                (Some(tree), _) => tree,
                (None, Mode::External) => scan::Scan::load(d)?.physical(d)?,
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

    fn test_hooks(&mut self) -> Option<&mut dyn TestHooks> {
        Some(self)
    }
}
