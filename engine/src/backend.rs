//! The `Backend` trait: how the engine asks a hypervisor adapter to do one physical step.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::error::Result;
use crate::model::{PowerMask, PowerState};
use crate::plan::{Adoption, Step, StepKind};
use crate::xml::DomainXml;

/// What a backend can do: which steps it implements and in which live power states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    power: [PowerMask; StepKind::ALL.len()],
}

impl Capabilities {
    /// A backend that supports no step at all.
    pub const NONE: Capabilities = Capabilities {
        power: [PowerMask::NONE; StepKind::ALL.len()],
    };

    /// Every step in every power state.
    pub const ALL: Capabilities = Capabilities {
        power: [PowerMask::ANY; StepKind::ALL.len()],
    };

    /// Every step, but only in the given power states.
    pub fn all_in(states: PowerMask) -> Capabilities {
        Capabilities {
            power: [states; StepKind::ALL.len()],
        }
    }

    /// Sets the power states in which a step is allowed (`PowerMask::NONE`: unsupported).
    pub fn with(mut self, step: StepKind, states: PowerMask) -> Capabilities {
        self.power[step as usize] = states;
        self
    }

    /// The power states in which a step is allowed.
    pub fn power_states(&self, step: StepKind) -> PowerMask {
        self.power[step as usize]
    }

    /// Whether the step is implemented at all.
    pub fn supports(&self, step: StepKind) -> bool {
        self.power[step as usize] != PowerMask::NONE
    }

    /// Whether the step is allowed in `state`.
    pub fn allows(&self, step: StepKind, state: PowerState) -> bool {
        self.power[step as usize].contains(state)
    }
}

/// Where a content digest is read from (test hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRef {
    /// The live state.
    Live,
    /// A snapshot's frozen content.
    Snapshot(Uuid),
}

/// The physical tree a backend holds, for the agreement check of SEMANTICS.md §3.7.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhysicalTree {
    /// Every snapshot the backend holds data for, with its physical parent.
    pub parents: BTreeMap<Uuid, Option<Uuid>>,
    /// The snapshot the live state physically derives from, if any.
    pub live_parent: Option<Uuid>,
}

/// Receives progress from long steps and may ask them to stop.
pub trait Progress {
    /// Reports that `fraction` (0.0 to 1.0) of the current step is done. Returning false
    /// asks the backend to cancel the step at the next safe point.
    fn report(&mut self, fraction: f64) -> bool;
}

/// A progress sink that ignores reports and never cancels.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&mut self, _fraction: f64) -> bool {
        true
    }
}

impl<F: FnMut(f64) -> bool> Progress for F {
    fn report(&mut self, fraction: f64) -> bool {
        self(fraction)
    }
}

/// The two test hooks of the conformance kit. Real backends offer them so the model
/// checker can verify their data, not only their tree.
pub trait TestHooks {
    /// A digest of the content of the live state or of a snapshot. Equal contents give
    /// equal digests whatever the physical layout.
    fn content_digest(&mut self, of: ContentRef) -> Result<String>;
    /// Writes guest data derived from `seed` into the live state, as a running guest would.
    fn write_guest(&mut self, seed: u64) -> Result<()>;
}

/// A hypervisor adapter for one open domain. The engine guarantees each step's
/// precondition (SEMANTICS.md §4); the backend does the physical work.
///
/// Every step must be restartable: after a crash the engine re-runs the step that was in
/// progress, and re-running a step that had finished, or half finished, must finish it.
pub trait Backend: Send {
    /// The backend's name, as in the domain's `type` attribute.
    fn name(&self) -> &str;
    /// What the backend can do and in which power states.
    fn capabilities(&self) -> Capabilities;
    /// True for backends that hold no data, so the engine may skip the intent journal.
    fn is_metadata_only(&self) -> bool {
        false
    }
    /// The live power state of the domain.
    fn power_state(&mut self) -> Result<PowerState>;
    /// Executes one step.
    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()>;
    /// The physical tree.
    fn list_physical(&mut self) -> Result<PhysicalTree>;
    /// Whether [`Backend::adopt`] is implemented, so a REDEFINE of a new snapshot can
    /// run; the engine refuses it up front (`OPERATION_INVALID`) when not.
    fn can_adopt(&self) -> bool {
        false
    }
    /// The `adopt(S, parent)` step of a REDEFINE (SEMANTICS.md §7.3): checks that the
    /// backend already holds data for `adoption.snapshot` stored on `adoption.parent`'s,
    /// and records how to find it; changes no data. Missing or misplaced data is
    /// `OPERATION_INVALID` naming what is missing. Restartable like every step.
    fn adopt(&mut self, adoption: &Adoption, progress: &mut dyn Progress) -> Result<()> {
        let _ = progress;
        Err(crate::Error::OperationInvalid(format!(
            "backend '{}' cannot adopt existing data, so it cannot take snapshot '{}' by REDEFINE",
            self.name(),
            adoption.name
        )))
    }
    /// Whether the backend keeps a manifest beside its data ([`Backend::save_manifest`]).
    fn keeps_manifest(&self) -> bool {
        false
    }
    /// Keeps `manifest` (`xml::manifest`: every snapshot's metadata and the current one)
    /// beside the domain's data, durably, replacing the one kept before; empty means no
    /// snapshot is left. Called after an operation's last step and before the store
    /// records the operation, so a lost state directory can be rebuilt from the data
    /// alone. Only called when [`Backend::keeps_manifest`].
    fn save_manifest(&mut self, manifest: &str) -> Result<()> {
        let _ = manifest;
        Err(crate::Error::OperationInvalid(format!(
            "backend '{}' keeps no manifest beside its data",
            self.name()
        )))
    }
    /// The manifest kept beside the domain's data, if any.
    fn load_manifest(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
    /// Estimates what `step` will write and free on each file system it touches, with
    /// the free space there now (SEMANTICS.md §7.7), as the step would run from the
    /// current physical state. `Ok(None)`: the backend cannot estimate (the default), and
    /// the engine runs the plan without a space check.
    fn estimate(&mut self, step: &Step) -> Result<Option<Vec<crate::space::SpaceUse>>> {
        let _ = step;
        Ok(None)
    }
    /// The test hooks, if the backend offers them.
    fn test_hooks(&mut self) -> Option<&mut dyn TestHooks> {
        None
    }
}

/// Opens backends of one type for domains.
pub trait BackendProvider: Send + Sync {
    /// Opens the backend for a domain, given its parsed and its whole XML.
    fn open(&self, domain: &DomainXml, xml: &str) -> Result<Box<dyn Backend>>;
}
