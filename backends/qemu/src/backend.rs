//! [`QemuBackend`]: the engine's `Backend` for a shut-off QEMU domain whose disks are qcow2
//! files.

use snaptree_engine::xml::DomainXml;
use snaptree_engine::{
    Backend, Capabilities, Error, PhysicalTree, PowerState, Progress, Result, Step, TestHooks,
};

use crate::ctx::{Ctx, NAME, error};
use crate::disk::{Disk, Mode, disks_of};
use crate::exec::{self, DiskPlan};
use crate::handle::QemuHandle;
use crate::{external, internal, scan};

/// The offline QEMU backend for one domain.
///
/// The domain is always shut off: snaptree only manages its disks, through `qemu-img`.
/// Each disk keeps its snapshots in its own mode (`<disk snapshot='external|internal'>`);
/// the file named in the domain XML always holds the live state.
#[derive(Debug)]
pub struct QemuBackend {
    disks: Vec<Disk>,
    handle: QemuHandle,
}

impl QemuBackend {
    /// What the backend can do: every step, only while the domain is shut off (the
    /// offline backend never runs a guest).
    pub fn offline_capabilities() -> Capabilities {
        Capabilities::all_in(PowerState::Shutoff.bit())
    }

    /// Opens the backend for a domain: every `<devices><disk>` must have an absolute
    /// `<source file=...>`. The files are not opened yet; an interrupted step may have left
    /// them mid-way, and the engine's recovery re-runs it.
    pub fn open(domain: &DomainXml) -> Result<QemuBackend> {
        Ok(QemuBackend {
            disks: disks_of(domain)?,
            handle: QemuHandle::default(),
        })
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

    /// Removes what a crash can leave that no step needs any more — the temporary file of an
    /// intent record that was never renamed into place — and the snapshot directories left
    /// empty: a disk with no snapshot left has no trace of snaptree beside it. Runs after
    /// every step, so a re-run finishes it too.
    fn tidy(&self) -> Result<()> {
        for d in self.disks.iter().filter(|d| d.mode == Mode::External) {
            let mut tmp = d.rebase_intent().into_os_string();
            tmp.push(".tmp");
            self.ctx().remove(std::path::Path::new(&tmp))?;
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
        QemuBackend::offline_capabilities()
    }

    fn power_state(&mut self) -> Result<PowerState> {
        Ok(PowerState::Shutoff)
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
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
        self.tidy()?;
        // Durable before the engine records the step as done.
        self.ctx().sync_dirty()?;
        progress.report(1.0);
        Ok(())
    }

    /// The tree every disk holds; all disks must hold the same one.
    fn list_physical(&mut self) -> Result<PhysicalTree> {
        let mut first: Option<(PhysicalTree, &Disk)> = None;
        for d in &self.disks {
            let tree = match d.mode {
                Mode::External => scan::Scan::load(d)?.physical(d)?,
                Mode::Internal => internal::physical(self.ctx(), d)?,
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
