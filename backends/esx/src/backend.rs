//! The engine's steps as vSphere calls (SEMANTICS.md §4), and the capabilities that say
//! which steps vSphere can do at all.
//!
//! | step | vSphere |
//! | --- | --- |
//! | `create` | `CreateSnapshot_Task`, named by the snapshot uuid |
//! | `revert` | `RevertToSnapshot_Task`, then power on, off or suspend to the wanted state |
//! | `discard_leaf`, `consolidate` | `RemoveSnapshot_Task(removeChildren=false)` |
//! | `forget` | nothing: vSphere keeps the retired snapshot, as retire wants |
//! | `merge_into_parent` | unsupported: no call makes a parent take a child's content |
//! | `detach_live` | unsupported: optional, so delete-all removes snapshot by snapshot |
//!
//! Every step is restartable: create finds its snapshot already there by name, the removals
//! find theirs gone, revert and power changes are simply done again.

use snaptree_engine::{
    Capabilities, PhysicalTree, PowerMask, PowerState, Progress, Step, StepKind, Uuid,
};
use snaptree_sdk::{PluginError, PluginResult, SnaptreeBackend};

use crate::config::{EsxConfig, process_env};
use crate::soap::Session;
use crate::tree::SnapshotInfo;
use crate::vim::{self, Vm, VmPower};

/// One domain bound to one vSphere VM, through a logged-in session.
#[derive(Debug)]
pub struct EsxBackend {
    session: Session,
    vm: Vm,
    memory: bool,
    quiesce: bool,
}

impl EsxBackend {
    /// Connects and logs in to the endpoint of `config`, and finds its VM.
    pub fn connect(config: &EsxConfig) -> PluginResult<EsxBackend> {
        let mut session = Session::connect(
            config.endpoint.clone(),
            &config.tls,
            config.credentials.clone(),
        )?;
        let vm = vim::find_vm(&mut session, &config.vm)?;
        Ok(EsxBackend {
            session,
            vm,
            memory: config.memory,
            quiesce: config.quiesce,
        })
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The session, for callers that need vSphere calls the steps do not make.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    fn state(&mut self) -> PluginResult<(VmPower, SnapshotInfo)> {
        vim::vm_state(&mut self.session, &self.vm)
    }

    /// `create`: a vSphere snapshot named by the uuid, under vSphere's current snapshot.
    fn create(
        &mut self,
        uuid: &Uuid,
        parent: Option<&Uuid>,
        name: &str,
        description: &str,
        progress: &mut dyn Progress,
    ) -> PluginResult<()> {
        let (power, info) = self.state()?;
        if let Some(node) = info.find(uuid) {
            // A re-run after the task finished: vSphere made the snapshot current, under
            // the parent. Anything else named by this uuid holds other data (a lost state
            // store left it, or another tool copied the name): taking it would make the
            // new snapshot's data an old one's.
            let rerun = info.current.as_ref() == Some(&node.moref)
                && parent.is_none_or(|p| {
                    info.find(p).is_some_and(|pn| {
                        pn.moref != node.moref && info.is_ancestor_or_self(&pn.moref, &node.moref)
                    })
                });
            if rerun {
                return Ok(());
            }
            return Err(PluginError::backend(format!(
                "{} already has a vSphere snapshot named {uuid} that the VM does not run on: it holds other data than the live state (left by a lost snaptree state store, or made by another tool); remove it in vSphere, or create the snapshot with another uuid",
                self.vm
            )));
        }
        // vSphere creates under its current snapshot; the engine wants `parent`. They agree
        // when current is the parent or lies below it (retired snapshots the engine no
        // longer shows sit between). Anything else means the VM's snapshots changed
        // outside snaptree, and creating would graft the snapshot in the wrong place.
        if let Some(p) = parent {
            let node = info.find(p).ok_or_else(|| {
                PluginError::backend(format!("{} has no vSphere snapshot {p}, the parent of the new snapshot: its snapshots changed outside snaptree", self.vm))
            })?;
            let current_ok = info
                .current
                .as_ref()
                .is_some_and(|c| info.is_ancestor_or_self(&node.moref, c));
            if !current_ok {
                let current = info
                    .current
                    .as_ref()
                    .and_then(|c| info.by_moref(c))
                    .map_or("none".to_string(), |n| format!("'{}'", n.name));
                return Err(PluginError::backend(format!(
                    "{} is not at snapshot {p} in vSphere (its current snapshot is {current}): its snapshots changed outside snaptree; revert to a snapshot first",
                    self.vm
                )));
            }
        }
        // Memory only exists while the guest runs; quiescing only matters for a disk-only
        // snapshot of a running guest (vSphere ignores it with memory).
        let memory = self.memory && power == VmPower::On;
        let quiesce = self.quiesce && power == VmPower::On && !memory;
        let text = if description.is_empty() {
            format!("snaptree: {name}")
        } else {
            format!("snaptree: {name}\n{description}")
        };
        start(progress, "create a snapshot")?;
        vim::create_snapshot(
            &mut self.session,
            &self.vm,
            &uuid.hyphenated().to_string(),
            &text,
            memory,
            quiesce,
            progress,
        )
    }

    /// `revert`: vSphere's revert, then the power state the engine asks for. A snapshot
    /// without memory comes back powered off (on a real ESX; vcsim leaves the power state
    /// alone), so a "running" target may need a power-on, which boots the reverted disks.
    fn revert(
        &mut self,
        uuid: &Uuid,
        want: PowerState,
        progress: &mut dyn Progress,
    ) -> PluginResult<()> {
        let (_, info) = self.state()?;
        let node = info
            .find(uuid)
            .ok_or_else(|| missing(&self.vm, uuid))?
            .clone();
        start(progress, "revert to a snapshot")?;
        vim::revert_to_snapshot(
            &mut self.session,
            &self.vm,
            &node.moref,
            &node.name,
            want != PowerState::Running,
            progress,
        )?;
        let now = vim::power(&mut self.session, &self.vm)?;
        let steps: &[VmPower] = match (want, now) {
            (PowerState::Running, VmPower::On)
            | (PowerState::Shutoff, VmPower::Off)
            | (PowerState::Paused, VmPower::Suspended) => &[],
            (PowerState::Running, _) => &[VmPower::On],
            (PowerState::Shutoff, _) => &[VmPower::Off],
            (PowerState::Paused, VmPower::Off) => &[VmPower::On, VmPower::Suspended],
            (PowerState::Paused, VmPower::On) => &[VmPower::Suspended],
        };
        for to in steps {
            vim::set_power(&mut self.session, &self.vm, *to, progress)?;
        }
        Ok(())
    }

    /// `discard_leaf` and `consolidate`: vSphere's delete of one snapshot, which keeps its
    /// children (re-parented) and every dependent's content. For a leaf that is a discard;
    /// a retired child the engine no longer shows keeps its data too.
    fn remove(&mut self, uuid: &Uuid, progress: &mut dyn Progress) -> PluginResult<()> {
        let (_, info) = self.state()?;
        let Some(node) = info.find(uuid).cloned() else {
            return Ok(()); // A re-run after the task finished.
        };
        start(progress, "remove a snapshot")?;
        vim::remove_snapshot(
            &mut self.session,
            &self.vm,
            &node.moref,
            &node.name,
            progress,
        )
    }
}

/// The step was cancelled before it changed anything.
fn start(progress: &mut dyn Progress, what: &str) -> PluginResult<()> {
    if progress.report(0.0) {
        Ok(())
    } else {
        Err(PluginError::backend(format!(
            "cancelled before vSphere was asked to {what}; nothing changed"
        )))
    }
}

fn missing(vm: &Vm, uuid: &Uuid) -> PluginError {
    PluginError::backend(format!(
        "{vm} has no vSphere snapshot {uuid}: it was removed outside snaptree"
    ))
}

impl SnaptreeBackend for EsxBackend {
    const NAME: &'static std::ffi::CStr = c"esx";

    /// vSphere snapshots, reverts and removals work whether the VM is powered on,
    /// suspended or off. Merging into a parent has no vSphere call, and detaching the live
    /// state alone neither (RemoveAllSnapshots also removes the snapshots).
    fn capabilities() -> Capabilities {
        Capabilities::ALL
            .with(StepKind::MergeIntoParent, PowerMask::NONE)
            .with(StepKind::DetachLive, PowerMask::NONE)
    }

    fn open(domain_xml: &str) -> PluginResult<Self> {
        let config = EsxConfig::from_domain_xml(domain_xml, &process_env)?;
        EsxBackend::connect(&config)
    }

    fn close(&mut self) -> PluginResult<()> {
        self.session.logout();
        Ok(())
    }

    fn power_state(&mut self) -> PluginResult<PowerState> {
        Ok(vim::power(&mut self.session, &self.vm)?.to_snaptree())
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> PluginResult<()> {
        match step {
            Step::Create {
                snapshot,
                parent,
                name,
                description,
            } => self.create(snapshot, parent.as_ref(), name, description, progress),
            Step::Revert { snapshot, state } => self.revert(snapshot, *state, progress),
            Step::DiscardLeaf { snapshot } | Step::Consolidate { snapshot } => {
                self.remove(snapshot, progress)
            }
            // Retire leaves the data where it is: vSphere keeps the snapshot, and the
            // engine counts its uuid as retired when it compares trees.
            Step::Forget { .. } => Ok(()),
            Step::MergeIntoParent { .. } => Err(PluginError::operation_invalid(
                "vSphere cannot merge a snapshot into its parent (no call makes the parent take the child's content); delete with CONSOLIDATE instead",
            )),
            Step::DetachLive => Err(PluginError::operation_invalid(
                "vSphere cannot detach the live state from its snapshots without removing them",
            )),
        }
    }

    fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        let (_, info) = self.state()?;
        info.physical()
            .map_err(|e| PluginError::backend(format!("{}: {e}", self.vm)))
    }
}
