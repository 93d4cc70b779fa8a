//! The Rust SDK for snaptree backend plugins.
//!
//! Implement [`SnaptreeBackend`] for a type and export it with [`export_backend!`]; build
//! the crate as a `cdylib` named `snaptree_backend_<type>`, and the host loads
//! `libsnaptree_backend_<type>.so` like any C plugin:
//!
//! ```ignore
//! use snaptree_sdk::{Capabilities, PhysicalTree, PluginResult, PowerState, Progress, SnaptreeBackend, Step};
//!
//! struct Mine { /* ... */ }
//!
//! impl SnaptreeBackend for Mine {
//!     const NAME: &'static std::ffi::CStr = c"mine";
//!     fn capabilities() -> Capabilities { Capabilities::ALL }
//!     fn open(domain_xml: &str) -> PluginResult<Self> { todo!() }
//!     fn power_state(&mut self) -> PluginResult<PowerState> { todo!() }
//!     fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> PluginResult<()> { todo!() }
//!     fn list_physical(&mut self) -> PluginResult<PhysicalTree> { todo!() }
//! }
//!
//! snaptree_sdk::export_backend!(Mine);
//! ```
//!
//! Every call from the host passes through one boundary helper that refuses unknown flag
//! bits and NULL arguments, catches panics (a panic becomes a `BACKEND` error saying the
//! backend panicked, and the domain handle refuses further calls), writes errors into the
//! host's error struct and writes out-parameters only on success.

mod boundary;
mod error;
mod vtable;

pub use error::{PluginError, PluginResult};
pub use snaptree_abi as abi;
pub use snaptree_engine::{
    Adoption, Capabilities, ContentRef, PhysicalTree, PowerMask, PowerState, Progress, SpaceUse,
    Step, StepKind, Uuid,
};

use std::ffi::CStr;

/// A backend plugin. One value is one open domain; the host serialises calls on it.
///
/// The steps' contract is SEMANTICS.md §4: the engine has made each step's precondition
/// true, and every step must be restartable (re-running an interrupted step finishes it).
pub trait SnaptreeBackend: Send + Sized + 'static {
    /// The backend's type name, as in `<domain type='...'>` and the file name
    /// `libsnaptree_backend_<type>.so`: lowercase letters, digits and `_`.
    const NAME: &'static CStr;

    /// Whether [`content_digest`](SnaptreeBackend::content_digest) and
    /// [`write_guest`](SnaptreeBackend::write_guest) are implemented (the conformance
    /// kit's test hooks). When false, their slots are NULL.
    const TEST_HOOKS: bool = false;

    /// Whether [`adopt`](SnaptreeBackend::adopt) is implemented (ABI 1.1). When false its
    /// slot is NULL, and the engine refuses a REDEFINE of a new snapshot up front.
    const ADOPT: bool = false;

    /// Whether [`estimate`](SnaptreeBackend::estimate) is implemented (ABI 1.3). When
    /// false its slot is NULL and the engine runs plans without a space check.
    const ESTIMATE: bool = false;

    /// Whether [`save_manifest`](SnaptreeBackend::save_manifest) and
    /// [`load_manifest`](SnaptreeBackend::load_manifest) are implemented (ABI 1.2). When
    /// false their slots are NULL, and the engine keeps no manifest beside the data.
    const MANIFEST: bool = false;

    /// The steps implemented and the power states each needs, for every domain. An
    /// optional step (merge_into_parent, consolidate, detach_live, forget) that is not
    /// supported here gets a NULL slot, so the engine refuses it up front.
    fn capabilities() -> Capabilities;

    /// Opens a domain from its whole XML document.
    fn open(domain_xml: &str) -> PluginResult<Self>;

    /// This domain's capabilities, when they depend on the domain. They can only narrow
    /// [`capabilities`](SnaptreeBackend::capabilities): a step unsupported there has no slot.
    fn domain_capabilities(&self) -> Capabilities {
        Self::capabilities()
    }

    /// Closes the domain. The value is dropped afterwards whatever this returns.
    fn close(&mut self) -> PluginResult<()> {
        Ok(())
    }

    /// The live power state.
    fn power_state(&mut self) -> PluginResult<PowerState>;

    /// Executes one step. `progress` forwards to the host; when it returns false, stop
    /// before changing anything and fail.
    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> PluginResult<()>;

    /// The physical tree: every snapshot layer with its parent, and the live state's parent.
    fn list_physical(&mut self) -> PluginResult<PhysicalTree>;

    /// The `adopt` step of a REDEFINE (SEMANTICS.md §7.3, ABI 1.1): check that this
    /// domain already holds data for `adoption.snapshot` stored on `adoption.parent`'s
    /// (None: the base), made by this backend or another tool, and record how to find it
    /// (by `adoption.name`, say); change no data. Missing or misplaced data is
    /// [`PluginError::operation_invalid`] naming what is missing. Set
    /// [`ADOPT`](SnaptreeBackend::ADOPT) when implemented.
    fn adopt(&mut self, adoption: &Adoption) -> PluginResult<()> {
        Err(PluginError::operation_invalid(format!(
            "this backend cannot adopt existing data (snapshot '{}')",
            adoption.name
        )))
    }

    /// Keep `manifest` beside this domain's data, durably, replacing the one kept
    /// before; an empty one means no snapshot is left (ABI 1.2). Set
    /// [`MANIFEST`](SnaptreeBackend::MANIFEST) when implemented.
    fn save_manifest(&mut self, manifest: &str) -> PluginResult<()> {
        let _ = manifest;
        Err(PluginError::operation_invalid(
            "this backend keeps no manifest beside its data",
        ))
    }

    /// The manifest kept beside this domain's data, if any (ABI 1.2).
    fn load_manifest(&mut self) -> PluginResult<Option<String>> {
        Ok(None)
    }

    /// What `step` would write and free on each file system, from the current physical
    /// state (SEMANTICS.md §7.7, ABI 1.3); `None` when this step cannot be estimated. The
    /// ABI passes only the step's kind, snapshot and parent: a create's name and
    /// description arrive empty and a revert's power state as shut off. Set
    /// [`ESTIMATE`](SnaptreeBackend::ESTIMATE) when implemented.
    fn estimate(&mut self, step: &Step) -> PluginResult<Option<Vec<SpaceUse>>> {
        let _ = step;
        Ok(None)
    }

    /// Test hook: a digest of the content of the live state or of a snapshot, equal for
    /// equal contents whatever the physical layout; at most 255 bytes.
    fn content_digest(&mut self, of: ContentRef) -> PluginResult<String> {
        let _ = of;
        Err(PluginError::operation_invalid(
            "this backend has no content_digest test hook",
        ))
    }

    /// Test hook: writes guest data derived from `seed` into the live state.
    fn write_guest(&mut self, seed: u64) -> PluginResult<()> {
        let _ = seed;
        Err(PluginError::operation_invalid(
            "this backend has no write_guest test hook",
        ))
    }
}

/// Exports a [`SnaptreeBackend`] as the plugin's entry symbol `snaptree_backend_entry`.
/// Use it once per plugin library.
#[macro_export]
macro_rules! export_backend {
    ($backend:ty) => {
        /// The snaptree backend plugin entry: the plugin's vtable.
        #[unsafe(no_mangle)]
        pub extern "C" fn snaptree_backend_entry() -> *const $crate::abi::snaptree_backend_vtable {
            static VTABLE: ::std::sync::OnceLock<$crate::__private::VtableCell> =
                ::std::sync::OnceLock::new();
            $crate::__private::entry::<$backend>(&VTABLE)
        }
    };
}

/// Used by [`export_backend!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::vtable::{VtableCell, entry};
}

#[cfg(test)]
mod tests;
