//! [`QemuProvider`]: opens a [`QemuBackend`] for every `<domain type='qemu'>`.

use snaptree_engine::xml::DomainXml;
use snaptree_engine::{Backend, BackendProvider, Result};

use crate::backend::QemuBackend;

/// The domain type this backend serves: `<domain type='qemu'>`.
pub const QEMU_BACKEND: &str = crate::error::NAME;

/// Opens [`QemuBackend`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct QemuProvider;

impl BackendProvider for QemuProvider {
    /// Opens the backend on the document's text: the backend reads its disks and QMP
    /// socket from it (the engine's `DomainXml` keeps only hypervisor-agnostic facts).
    fn open(&self, _domain: &DomainXml, xml: &str) -> Result<Box<dyn Backend>> {
        Ok(Box::new(QemuBackend::open_xml(xml)?))
    }
}
