//! snaptree's libvirt backend: the snapshot tree of a domain libvirt manages, done through
//! libvirt's own snapshot API, as the plugin `libsnaptree_backend_libvirt.so`.
//!
//! ```xml
//! <domain type='libvirt'>
//!   <name>vm</name>
//!   <libvirt uri='qemu:///system' domain='web01'/>
//! </domain>
//! ```
//!
//! libvirt is loaded at run time (`sys`), so the plugin builds and loads without it and a
//! domain opened on a host without libvirt fails with a sentence naming what is missing.
//! Modules, one job each: `sys` (the C functions), `api` (safe handles), `config` (XML in),
//! `backend` (the steps; see there for how libvirt's metadata mirrors snaptree's tree),
//! `commit` (freeing an external snapshot of a running domain by a driven block commit),
//! `hooks` (the conformance kit's test hooks, feature `test-hooks` only), `plugin` (the SDK face).

mod api;
mod backend;
mod commit;
mod config;
mod files;
#[cfg(feature = "test-hooks")]
mod hooks;
mod plugin;
mod sys;

pub use api::{Connection, Domain, LibvirtError, Snapshot};
pub use backend::{EXTERNAL_REVERT_SINCE, LibvirtBackend, capabilities, version_text};
pub use config::{Disk, Mode, Target};
#[cfg(feature = "test-hooks")]
pub use hooks::guest_write;
pub use plugin::LibvirtPlugin;
