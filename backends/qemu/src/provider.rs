//! [`QemuProvider`]: opens a [`QemuBackend`] for every `<domain type='qemu'>`.

use snaptree_engine::xml::DomainXml;
use snaptree_engine::{Backend, BackendProvider, Result};

use crate::backend::QemuBackend;

/// The domain type this backend serves: `<domain type='qemu'>`.
pub const QEMU_BACKEND: &str = crate::ctx::NAME;

/// Opens [`QemuBackend`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct QemuProvider;

impl BackendProvider for QemuProvider {
    fn open(&self, _domain: &DomainXml, xml: &str) -> Result<Box<dyn Backend>> {
        Ok(Box::new(QemuBackend::open_xml(xml)?))
    }
}
