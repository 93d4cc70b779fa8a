//! The plugin: [`QemuBackend`] behind the SDK's safe trait, exported as the C ABI entry of
//! `libsnaptree_backend_qemu.so` (feature `plugin`, on by default).

// The export macro defines the `#[unsafe(no_mangle)]` entry symbol; this module writes no
// unsafe code of its own.
#![allow(unsafe_code)]

use snaptree_engine::Backend;
#[cfg(feature = "test-hooks")]
use snaptree_engine::TestHooks;
#[cfg(feature = "test-hooks")]
use snaptree_sdk::ContentRef;
use snaptree_sdk::{
    Adoption, Capabilities, PhysicalTree, PluginResult, PowerState, Progress, SnaptreeBackend,
    SpaceUse, Step,
};

use crate::backend::QemuBackend;

/// One open domain of the plugin.
#[derive(Debug)]
pub struct QemuPlugin(QemuBackend);

impl SnaptreeBackend for QemuPlugin {
    const NAME: &'static std::ffi::CStr = c"qemu";
    /// Only in a build with the `test-hooks` feature (the tests'): the shipped plugin
    /// offers no way to write into a guest's disk.
    const TEST_HOOKS: bool = cfg!(feature = "test-hooks");
    /// Snapshots libvirt or `qemu-img` made are adopted by tag or file (`adopt`).
    const ADOPT: bool = true;
    /// The engine's manifest is kept beside every disk's image.
    const MANIFEST: bool = true;
    /// Offline steps are estimated from the plan they would run (`offline::space`).
    const ESTIMATE: bool = true;

    /// Offline and live together; each open domain narrows them.
    fn capabilities() -> Capabilities {
        QemuBackend::any_domain_capabilities()
    }

    fn open(domain_xml: &str) -> PluginResult<Self> {
        Ok(QemuPlugin(QemuBackend::open_xml(domain_xml)?))
    }

    fn domain_capabilities(&self) -> Capabilities {
        self.0.domain_capabilities()
    }

    fn power_state(&mut self) -> PluginResult<PowerState> {
        Ok(self.0.power_state()?)
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> PluginResult<()> {
        Ok(self.0.execute(step, progress)?)
    }

    fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        Ok(self.0.list_physical()?)
    }

    fn estimate(&mut self, step: &Step) -> PluginResult<Option<Vec<SpaceUse>>> {
        Ok(self.0.estimate_step(step)?)
    }

    fn adopt(&mut self, adoption: &Adoption) -> PluginResult<()> {
        Ok(self.0.adopt_existing(adoption)?)
    }

    fn save_manifest(&mut self, manifest: &str) -> PluginResult<()> {
        Ok(Backend::save_manifest(&mut self.0, manifest)?)
    }

    fn load_manifest(&mut self) -> PluginResult<Option<String>> {
        Ok(Backend::load_manifest(&mut self.0)?)
    }

    #[cfg(feature = "test-hooks")]
    fn content_digest(&mut self, of: ContentRef) -> PluginResult<String> {
        Ok(self.0.content_digest(of)?)
    }

    #[cfg(feature = "test-hooks")]
    fn write_guest(&mut self, seed: u64) -> PluginResult<()> {
        Ok(self.0.write_guest(seed)?)
    }
}

snaptree_sdk::export_backend!(QemuPlugin);
