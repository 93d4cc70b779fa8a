//! [`KitBackend`]: the kit's handle on the backend under test. Every domain handle the
//! kit opens (the first, a reopened one, a second one) holds a clone, so they all share
//! one physical state, as processes share one disk.
//!
//! The wrapper records every step the engine sends (to compare plans with the model's),
//! advertises a subset of the backend's declared capabilities (the per-run capability
//! mode), injects a one-shot fault at a chosen step, and, for backends whose power state
//! is bookkeeping only, keeps the live power state the kit sets.

use std::sync::{Arc, Mutex, MutexGuard};

use snaptree_engine::xml::DomainXml;
use snaptree_engine::{
    Adoption, Backend, BackendProvider, Capabilities, Error, PhysicalTree, PowerMask, PowerState,
    Progress, Result, Step, StepKind, TestHooks,
};

/// A fault armed for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The 0-based index of the failing step, counted from when it was armed.
    pub at: usize,
    /// Whether the step runs before the failure is reported.
    pub after: bool,
}

struct Inner {
    backend: Box<dyn Backend>,
    caps: Capabilities,
    power: Option<PowerState>,
    fault: Option<Fault>,
    executed: usize,
    log: Vec<Step>,
    adopted: Vec<Adoption>,
}

/// A shared, recording, capability-restricting, fault-injecting handle on a backend.
#[derive(Clone)]
pub struct KitBackend {
    inner: Arc<Mutex<Inner>>,
    name: String,
}

/// The index of a step kind in the table of SEMANTICS.md §4 (the model's order).
pub fn kind_index(kind: StepKind) -> usize {
    match kind {
        StepKind::Create => 0,
        StepKind::Revert => 1,
        StepKind::DiscardLeaf => 2,
        StepKind::MergeIntoParent => 3,
        StepKind::Consolidate => 4,
        StepKind::DetachLive => 5,
        StepKind::Forget => 6,
    }
}

impl KitBackend {
    /// Wraps `backend`, advertising what it declares restricted to `mask` (for each step
    /// in the model's order, the power states allowed). With `kit_power` the kit owns the
    /// live power state, starting from the backend's.
    pub fn new(
        mut backend: Box<dyn Backend>,
        mask: [u8; 7],
        kit_power: bool,
    ) -> Result<KitBackend> {
        let declared = backend.capabilities();
        let mut caps = Capabilities::NONE;
        for kind in StepKind::ALL {
            let m = declared.power_states(kind).0 & mask[kind_index(kind)];
            caps = caps.with(kind, PowerMask(m));
        }
        let power = if kit_power {
            Some(backend.power_state()?)
        } else {
            None
        };
        let name = backend.name().to_string();
        Ok(KitBackend {
            inner: Arc::new(Mutex::new(Inner {
                backend,
                caps,
                power,
                fault: None,
                executed: 0,
                log: Vec::new(),
                adopted: Vec::new(),
            })),
            name,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The capabilities advertised, in the model's form.
    pub fn caps(&self) -> [u8; 7] {
        let caps = self.lock().caps;
        let mut out = [0; 7];
        for kind in StepKind::ALL {
            out[kind_index(kind)] = caps.power_states(kind).0;
        }
        out
    }

    /// Arms a fault (or none) and clears the step log.
    pub fn arm(&self, fault: Option<Fault>) {
        let mut i = self.lock();
        i.fault = fault;
        i.executed = 0;
        i.log.clear();
        i.adopted.clear();
    }

    /// Disarms a fault that did not fire, keeping the step log.
    pub fn disarm(&self) {
        self.lock().fault = None;
    }

    /// The steps sent since the last [`KitBackend::arm`].
    pub fn log(&self) -> Vec<Step> {
        self.lock().log.clone()
    }

    /// The adoptions the engine asked for since the last [`KitBackend::arm`] (a REDEFINE's
    /// `adopt`, which is not a [`Step`]).
    pub fn adopted(&self) -> Vec<Adoption> {
        self.lock().adopted.clone()
    }

    /// Sets the live power state (only when the kit owns it).
    pub fn set_power(&self, state: PowerState) -> std::result::Result<(), String> {
        match &mut self.lock().power {
            Some(p) => {
                *p = state;
                Ok(())
            }
            None => Err("the backend's power state is not the kit's to set".into()),
        }
    }

    /// Runs `f` on the wrapped backend.
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn Backend) -> T) -> T {
        f(self.lock().backend.as_mut())
    }

    /// Runs `f` on the wrapped backend's test hooks.
    pub fn hooks<T>(
        &self,
        f: impl FnOnce(&mut dyn TestHooks) -> Result<T>,
    ) -> std::result::Result<T, String> {
        let mut i = self.lock();
        let hooks = i
            .backend
            .test_hooks()
            .ok_or("the backend offers no test hooks")?;
        f(hooks).map_err(|e| format!("test hook failed: {}", e.full_message()))
    }
}

impl Backend for KitBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.lock().caps
    }

    fn is_metadata_only(&self) -> bool {
        self.lock().backend.is_metadata_only()
    }

    fn power_state(&mut self) -> Result<PowerState> {
        let mut i = self.lock();
        match i.power {
            Some(p) => Ok(p),
            None => i.backend.power_state(),
        }
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        let mut i = self.lock();
        let index = i.executed;
        i.executed += 1;
        i.log.push(step.clone());
        let fault = i.fault.filter(|f| f.at == index);
        if let Some(f) = fault {
            i.fault = None;
            // A failed step must leave nothing behind unless it changed the physical
            // tree (§7.1); these steps change no layer, so they fail before they run.
            let quiet = matches!(
                step,
                Step::Revert { .. } | Step::Forget { .. } | Step::DetachLive
            );
            if f.after && !quiet {
                i.backend.execute(step, progress)?;
            }
            return Err(Error::Backend {
                backend: self.name.clone(),
                message: format!(
                    "fault injected by the conformance kit at step {index} ({})",
                    step.kind().name()
                ),
            });
        }
        i.backend.execute(step, progress)?;
        if let (Some(p), Step::Revert { state, .. }) = (&mut i.power, step) {
            *p = *state;
        }
        Ok(())
    }

    fn list_physical(&mut self) -> Result<PhysicalTree> {
        self.lock().backend.list_physical()
    }

    fn can_adopt(&self) -> bool {
        self.lock().backend.can_adopt()
    }

    /// Counted with the steps (the engine's journal counts it as the plan's first
    /// action), so a fault can hit it; it changes no data, so a fault fails it before it
    /// runs.
    fn adopt(&mut self, adoption: &Adoption, progress: &mut dyn Progress) -> Result<()> {
        let mut i = self.lock();
        let index = i.executed;
        i.executed += 1;
        i.adopted.push(adoption.clone());
        if i.fault.is_some_and(|f| f.at == index) {
            i.fault = None;
            return Err(Error::Backend {
                backend: self.name.clone(),
                message: format!("fault injected by the conformance kit at step {index} (adopt)"),
            });
        }
        i.backend.adopt(adoption, progress)
    }
}

/// Hands out clones of one [`KitBackend`] to every domain a SQLite-backed connection
/// opens.
pub struct KitProvider(pub KitBackend);

impl BackendProvider for KitProvider {
    fn open(&self, _domain: &DomainXml, _xml: &str) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self.0.clone()))
    }
}
