//! The plugin: [`LibvirtBackend`] behind the SDK's safe trait, exported as the C ABI entry
//! of `libsnaptree_backend_libvirt.so`.

// The export macro defines the `#[unsafe(no_mangle)]` entry symbol; this module writes no
// unsafe code of its own.
#![allow(unsafe_code)]

#[cfg(feature = "test-hooks")]
use snaptree_sdk::ContentRef;
use snaptree_sdk::{
    Capabilities, PhysicalTree, PluginResult, PowerState, Progress, SnaptreeBackend, Step,
};

use crate::backend::LibvirtBackend;

/// One open domain of the plugin.
#[derive(Debug)]
pub struct LibvirtPlugin(LibvirtBackend);

impl SnaptreeBackend for LibvirtPlugin {
    const NAME: &'static std::ffi::CStr = c"libvirt";
    /// Only in a build with the `test-hooks` feature (the tests'): the shipped plugin
    /// offers no way to write into a guest's disk.
    const TEST_HOOKS: bool = cfg!(feature = "test-hooks");

    fn capabilities() -> Capabilities {
        LibvirtBackend::any_domain_capabilities()
    }

    fn open(domain_xml: &str) -> PluginResult<Self> {
        Ok(LibvirtPlugin(LibvirtBackend::open(domain_xml)?))
    }

    fn domain_capabilities(&self) -> Capabilities {
        self.0.domain_capabilities()
    }

    fn power_state(&mut self) -> PluginResult<PowerState> {
        self.0.power_state()
    }

    /// Block commits report the job's progress and stop on a cancel; libvirt's other
    /// snapshot calls are synchronous: reported at their start (where a cancel still
    /// changes nothing) and at their end.
    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> PluginResult<()> {
        self.0.execute(step, progress)?;
        progress.report(1.0);
        Ok(())
    }

    fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        self.0.list_physical()
    }

    #[cfg(feature = "test-hooks")]
    fn content_digest(&mut self, of: ContentRef) -> PluginResult<String> {
        self.0.content_digest(of)
    }

    #[cfg(feature = "test-hooks")]
    fn write_guest(&mut self, seed: u64) -> PluginResult<()> {
        self.0.write_guest(seed)
    }
}

snaptree_sdk::export_backend!(LibvirtPlugin);
