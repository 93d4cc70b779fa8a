//! A test backend written with the SDK, type `panicky`: its steps panic, to show that a
//! panic becomes a BACKEND error at the boundary instead of unwinding into the host.
//!
//! `<panicky at='open'/>` in the domain XML makes opening panic instead.
//!
//! Built as `libsnaptree_backend_panicky.so` by `cargo test -p snaptree-sdk`.

use snaptree_sdk::{
    Capabilities, PhysicalTree, PluginResult, PowerState, Progress, SnaptreeBackend, Step,
};

struct Panicky;

impl SnaptreeBackend for Panicky {
    const NAME: &'static std::ffi::CStr = c"panicky";

    fn capabilities() -> Capabilities {
        Capabilities::ALL
    }

    fn open(domain_xml: &str) -> PluginResult<Self> {
        if domain_xml.contains("<panicky at='open'/>") {
            panic!("boom while opening");
        }
        Ok(Panicky)
    }

    fn power_state(&mut self) -> PluginResult<PowerState> {
        Ok(PowerState::Shutoff)
    }

    fn execute(&mut self, step: &Step, _progress: &mut dyn Progress) -> PluginResult<()> {
        panic!("boom in {}", step.kind().name());
    }

    fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        Ok(PhysicalTree::default())
    }
}

snaptree_sdk::export_backend!(Panicky);
