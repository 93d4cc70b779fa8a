//! What the ESX backend's tests share: the vcsim rig of the dev-only crate `snaptree-tests`
//! (`snaptree_tests::vcsim`), started with this crate's target dir as its build cache, the
//! plugin as cargo built it for this run, and [`VcsimExt`] to reach a simulated VM through
//! the backend.

#![allow(dead_code, unused_imports)] // Each test binary uses part of it.

use std::sync::OnceLock;

use snaptree_backend_esx::{EsxBackend, EsxConfig};
use snaptree_engine::Domain;
use snaptree_host::Plugin;
pub use snaptree_tests::vcsim::{SimVm, USER, Vcsim, write_private};

/// Starts a simulator with these flags, or skips the calling test (returns from it, after
/// saying so; under CI it fails instead) when the simulator cannot be built here.
macro_rules! vcsim_or_skip {
    ($($arg:expr),* $(,)?) => {
        match common::Vcsim::start(
            &[$($arg),*],
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        ) {
            Some(sim) => sim,
            None => return,
        }
    };
}

/// A simulated VM reached through this crate: the backend itself, or an engine domain on
/// the plugin.
pub trait VcsimExt {
    /// The backend type itself, connected to `vm` (for changing the VM behind the engine's
    /// back, as another vSphere client would).
    fn direct(&self, vm: &str) -> EsxBackend;
    /// An engine domain for `vm` through the plugin.
    fn domain(&self, vm: &str) -> Domain;
}

impl VcsimExt for Vcsim {
    fn direct(&self, vm: &str) -> EsxBackend {
        let config = EsxConfig::from_domain_xml(&self.domain_xml(vm, ""), &|_| None).unwrap();
        EsxBackend::connect(&config).unwrap()
    }

    fn domain(&self, vm: &str) -> Domain {
        let xml = self.domain_xml(vm, "");
        Domain::ephemeral(&xml, Box::new(plugin().open_domain(&xml).unwrap())).unwrap()
    }
}

/// The plugin as cargo built it for this test run: `target/<profile>/deps/`, beside this
/// test's executable. (Only `cargo build` copies it up to `target/<profile>/`, so a copy
/// there may be stale while the tests run.)
pub fn plugin() -> Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    *PLUGIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let path = exe.parent().unwrap().join("libsnaptree_backend_esx.so");
        assert!(
            path.is_file(),
            "expected the plugin at {}; `cargo test -p snaptree-backend-esx` builds it",
            path.display()
        );
        Plugin::load(&path).unwrap()
    })
}
