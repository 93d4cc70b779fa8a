//! The metadata-only backend, `<domain type='null'>`: for tests and for callers that want
//! only the tree. It holds no data, so every step succeeds at once.

use crate::backend::{Backend, BackendProvider, Capabilities, PhysicalTree, Progress};
use crate::error::Result;
use crate::model::PowerState;
use crate::plan::{Adoption, Step};
use crate::xml::DomainXml;

/// The type name selecting this backend.
pub const NULL_BACKEND: &str = "null";

/// A backend that keeps only a live power state, in memory.
#[derive(Debug)]
pub struct NullBackend {
    state: PowerState,
}

impl NullBackend {
    /// A null backend whose domain is shut off.
    pub fn new() -> NullBackend {
        NullBackend {
            state: PowerState::Shutoff,
        }
    }
}

impl Default for NullBackend {
    fn default() -> Self {
        NullBackend::new()
    }
}

impl Backend for NullBackend {
    fn name(&self) -> &str {
        NULL_BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn is_metadata_only(&self) -> bool {
        true
    }

    fn power_state(&mut self) -> Result<PowerState> {
        Ok(self.state)
    }

    fn execute(&mut self, step: &Step, _progress: &mut dyn Progress) -> Result<()> {
        if let Step::Revert { state, .. } = step {
            self.state = *state;
        }
        Ok(())
    }

    fn list_physical(&mut self) -> Result<PhysicalTree> {
        Ok(PhysicalTree::default())
    }

    /// A metadata-only backend holds no data, so it adopts anything.
    fn can_adopt(&self) -> bool {
        true
    }

    fn adopt(&mut self, _adoption: &Adoption, _progress: &mut dyn Progress) -> Result<()> {
        Ok(())
    }
}

/// Provides [`NullBackend`]s.
#[derive(Debug, Default)]
pub struct NullProvider;

impl BackendProvider for NullProvider {
    fn open(&self, _domain: &DomainXml, _xml: &str) -> Result<Box<dyn Backend>> {
        Ok(Box::new(NullBackend::new()))
    }
}
