//! What the libvirt backend's tests and benchmark share: the libvirtd rig of the dev-only
//! crate `snaptree-tests` (`snaptree_tests::libvirt_rig`), started with this crate's target
//! dir as its cache, and the plugin as cargo built it for this run.

#![allow(dead_code, unused_imports)] // Each test binary uses part of it.

use std::path::Path;
use std::sync::OnceLock;

use snaptree_host::Plugin;
pub use snaptree_tests::libvirt_rig::{MIB, Rig, TestDomain, image_reads, image_write};

/// Starts a rig, or skips the calling test (returns from it, after saying so; under CI it
/// fails instead) when libvirt's daemons cannot run here.
#[allow(unused_macros)] // plugin.rs and the benchmark start no rig through it.
macro_rules! rig_or_skip {
    () => {
        match common::Rig::start(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))) {
            Some(rig) => rig,
            None => return,
        }
    };
}

/// The plugin as cargo built it for this test run, beside the test executable.
pub fn plugin() -> Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    *PLUGIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let path = exe.parent().unwrap().join("libsnaptree_backend_libvirt.so");
        assert!(
            path.is_file(),
            "expected the plugin at {}; `cargo test -p snaptree-backend-libvirt` builds it",
            path.display()
        );
        Plugin::load(&path).unwrap()
    })
}

/// A snaptree connection on `state` with the plugin as the provider of `libvirt`.
pub fn connection(state: &Path) -> snaptree_engine::Connection {
    let conn = snaptree_engine::Connection::open(Some(state)).unwrap();
    conn.register_provider("libvirt", plugin().provider());
    conn
}
