//! The one dispatch layer between the host and a plugin's vtable.
//!
//! Every call into a plugin goes through [`Vtable`]: it reads the table once, checks it,
//! treats a NULL slot as "unsupported" (and reports the step as unsupported in the
//! capabilities, so the engine refuses such operations before it starts them; a NULL
//! `adopt` slot, or one a 1.0 plugin's table does not reach, makes `can_adopt` false),
//! passes flags 0 (ABI 1.3 defines none), and turns the plugin's error struct into an engine
//! error.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;

use snaptree_abi as abi;
use snaptree_abi::convert::{
    capabilities_from_abi, power_from_abi, power_to_abi, step_to_abi, uuid_from_abi, uuid_to_abi,
};
use snaptree_engine::{
    Capabilities, Error, PowerMask, PowerState, Progress, Result, StepKind, Uuid,
};

use crate::callbacks::{
    Layers, SpaceUses, Text, with_layers, with_progress, with_space_uses, with_text,
};

/// The flags the host passes: ABI 1.3 defines none.
const FLAGS: u32 = 0;

/// The longest backend name a plugin may declare (a backend type is at most 64 bytes).
const MAX_NAME: usize = 64;

/// The slot of a step whose only argument is a snapshot: discard_leaf, consolidate.
type SnapshotStepFn = Option<
    unsafe extern "C" fn(
        *mut c_void,
        *const abi::snaptree_uuid,
        abi::snaptree_progress_fn,
        *mut c_void,
        u32,
        *mut abi::snaptree_backend_error,
    ) -> c_int,
>;

/// A plugin's open domain, as the plugin handed it out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handle(pub(crate) *mut c_void);

/// A plugin's vtable as this host reads it: the plugin's table copied up to its
/// `struct_size`, with the slots past that (added by later minor versions) NULL.
#[derive(Clone, Copy)]
pub(crate) struct Vtable {
    raw: abi::snaptree_backend_vtable,
    name: &'static str,
}

// SAFETY: the table is an immutable copy; its function pointers point into a library that
// is never unloaded, and the ABI lets the host call them from any thread (calls on one
// handle are serialised by `&mut` on `PluginBackend`).
unsafe impl Send for Vtable {}
// SAFETY: as for `Send`: nothing in the copy is ever mutated.
unsafe impl Sync for Vtable {}

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::Plugin {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl Vtable {
    /// Reads and checks the table a plugin's entry returned: version, size, name and the
    /// mandatory functions, in that order, before anything else is called.
    ///
    /// # Safety
    ///
    /// `table` must be NULL or point to at least its own `struct_size` readable bytes that
    /// stay valid and unchanged forever, laid out as `include/snaptree_backend.h` says.
    pub(crate) unsafe fn read(
        table: *const abi::snaptree_backend_vtable,
        path: &Path,
    ) -> Result<Vtable> {
        if table.is_null() {
            return Err(refuse(
                path,
                "its entry function snaptree_backend_entry returned NULL",
            ));
        }
        let mut head = [0u8; 8];
        // SAFETY: every vtable, of any version, begins with two uint32_t fields; the caller
        // guarantees the table is readable. Bytes are copied, so alignment does not matter.
        unsafe { std::ptr::copy_nonoverlapping(table.cast::<u8>(), head.as_mut_ptr(), head.len()) };
        let [a, b, c, d, e, f, g, h] = head;
        let version = u32::from_ne_bytes([a, b, c, d]);
        let size = u32::from_ne_bytes([e, f, g, h]) as usize;
        let (major, minor) = (abi::abi_major(version), abi::abi_minor(version));
        let supported = abi::SNAPTREE_BACKEND_ABI_MAJOR;
        if major > supported {
            return Err(refuse(
                path,
                format!(
                    "its ABI major version {major} (version {major}.{minor}) is newer than the supported {supported}"
                ),
            ));
        }
        if major < supported {
            return Err(refuse(
                path,
                format!(
                    "its ABI major version {major} (version {major}.{minor}) is older than the supported {supported}"
                ),
            ));
        }
        if size < abi::VTABLE_MIN_SIZE {
            return Err(refuse(
                path,
                format!(
                    "its vtable struct_size {size} is smaller than the {} bytes ABI {supported}.0 requires",
                    abi::VTABLE_MIN_SIZE
                ),
            ));
        }
        let mut raw = abi::snaptree_backend_vtable::default();
        let known = size.min(std::mem::size_of::<abi::snaptree_backend_vtable>());
        // SAFETY: the plugin declared `size` readable bytes and we copy at most that many,
        // and at most the size of our own table. Zero and any function address are valid
        // values of the `Option<fn>` slots; the name pointer is checked below.
        unsafe {
            std::ptr::copy_nonoverlapping(table.cast::<u8>(), (&raw mut raw).cast::<u8>(), known)
        };
        // SAFETY: the name pointer came from the plugin's table, which the caller vouches for.
        let name = unsafe { read_name(raw.name) }.map_err(|why| refuse(path, why))?;
        let mandatory = [
            ("open_domain", raw.open_domain.is_some()),
            ("close_domain", raw.close_domain.is_some()),
            ("power_state", raw.power_state.is_some()),
            ("create", raw.create.is_some()),
            ("revert", raw.revert.is_some()),
            ("discard_leaf", raw.discard_leaf.is_some()),
            ("list_physical", raw.list_physical.is_some()),
        ];
        if let Some((function, _)) = mandatory.iter().find(|(_, present)| !present) {
            return Err(refuse(
                path,
                format!("its mandatory function {function} is NULL"),
            ));
        }
        Ok(Vtable { raw, name })
    }

    /// The backend's name, as the plugin declared it.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The declared ABI version.
    pub(crate) fn abi_version(&self) -> u32 {
        self.raw.abi_version
    }

    /// Whether the plugin can adopt existing data (ABI 1.1's `adopt` slot; NULL, or past a
    /// 1.0 plugin's `struct_size`, means it cannot).
    pub(crate) fn can_adopt(&self) -> bool {
        self.raw.adopt.is_some()
    }

    /// Whether the plugin keeps a manifest beside its data (ABI 1.2's `save_manifest` and
    /// `load_manifest`, both present).
    pub(crate) fn keeps_manifest(&self) -> bool {
        self.raw.save_manifest.is_some() && self.raw.load_manifest.is_some()
    }

    /// Whether the plugin estimates space (ABI 1.3's `estimate` slot; NULL, or past an
    /// older plugin's `struct_size`, means it cannot).
    pub(crate) fn can_estimate(&self) -> bool {
        self.raw.estimate.is_some()
    }

    /// Whether both test hooks are present.
    pub(crate) fn has_test_hooks(&self) -> bool {
        self.raw.content_digest.is_some() && self.raw.write_guest.is_some()
    }

    /// Turns a capability bitmask into the engine's capabilities, with every step whose
    /// slot is NULL unsupported whatever the bitmask says.
    pub(crate) fn capabilities(&self, bits: u64) -> Capabilities {
        let present = |kind: StepKind| match kind {
            StepKind::Create => self.raw.create.is_some(),
            StepKind::Revert => self.raw.revert.is_some(),
            StepKind::DiscardLeaf => self.raw.discard_leaf.is_some(),
            StepKind::MergeIntoParent => self.raw.merge_into_parent.is_some(),
            StepKind::Consolidate => self.raw.consolidate.is_some(),
            StepKind::DetachLive => self.raw.detach_live.is_some(),
            StepKind::Forget => self.raw.forget.is_some(),
        };
        StepKind::ALL
            .into_iter()
            .filter(|kind| !present(*kind))
            .fold(capabilities_from_abi(bits), |caps, kind| {
                caps.with(kind, PowerMask::NONE)
            })
    }

    /// The capabilities the vtable declares for every domain.
    pub(crate) fn static_capabilities(&self) -> Capabilities {
        self.capabilities(self.raw.capabilities)
    }

    fn unsupported(&self, function: &str) -> Error {
        Error::OperationInvalid(format!(
            "backend '{}' does not implement {function}",
            self.name
        ))
    }

    /// Runs one plugin call with a fresh error struct and interprets its result.
    fn call(
        &self,
        function: &str,
        f: impl FnOnce(*mut abi::snaptree_backend_error) -> c_int,
    ) -> Result<()> {
        let mut err = abi::snaptree_backend_error::default();
        match f(&raw mut err) {
            0 => Ok(()),
            -1 => Err(self.failure(function, &err)),
            other => Err(Error::Backend {
                backend: self.name.to_string(),
                message: format!(
                    "{function} returned {other}, which is neither 0 (success) nor -1 (failure)"
                ),
            }),
        }
    }

    /// The engine error for a failed call: INVALID_ARG and OPERATION_INVALID are kept,
    /// every other code is BACKEND.
    fn failure(&self, function: &str, err: &abi::snaptree_backend_error) -> Error {
        let bytes: Vec<u8> = err
            .message
            .iter()
            .map(|&c| c as u8)
            .take_while(|&b| b != 0)
            .collect();
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        let message = if text.is_empty() {
            format!("{function} failed without saying why")
        } else {
            text
        };
        let backend = self.name.to_string();
        match u32::try_from(err.code) {
            Ok(abi::SNAPTREE_BACKEND_ERR_INVALID_ARG) => {
                Error::InvalidArg(format!("backend '{backend}': {message}"))
            }
            Ok(abi::SNAPTREE_BACKEND_ERR_OPERATION_INVALID) => {
                Error::OperationInvalid(format!("backend '{backend}': {message}"))
            }
            _ => Error::Backend { backend, message },
        }
    }

    // ---- the functions, one method each ----

    pub(crate) fn open_domain(&self, xml: &CStr) -> Result<Handle> {
        let f = self
            .raw
            .open_domain
            .ok_or_else(|| self.unsupported("open_domain"))?;
        let mut handle: *mut c_void = std::ptr::null_mut();
        let len = xml.count_bytes();
        // SAFETY: a valid NUL-terminated string of `len` bytes, a valid out-pointer and
        // error struct, all living across the call; `f` follows the ABI (checked at load).
        self.call("open_domain", |err| unsafe {
            f(xml.as_ptr(), len, &raw mut handle, FLAGS, err)
        })?;
        Ok(Handle(handle))
    }

    pub(crate) fn close_domain(&self, handle: Handle) -> Result<()> {
        let f = self
            .raw
            .close_domain
            .ok_or_else(|| self.unsupported("close_domain"))?;
        // SAFETY: `handle` came from open_domain and is closed exactly once (on drop).
        self.call("close_domain", |err| unsafe { f(handle.0, FLAGS, err) })
    }

    pub(crate) fn power_state(&self, handle: Handle) -> Result<PowerState> {
        let f = self
            .raw
            .power_state
            .ok_or_else(|| self.unsupported("power_state"))?;
        let mut state: c_int = 0;
        // SAFETY: an open handle, a valid out-pointer and error struct.
        self.call("power_state", |err| unsafe {
            f(handle.0, &raw mut state, FLAGS, err)
        })?;
        power_from_abi(state).ok_or_else(|| Error::Backend {
            backend: self.name.to_string(),
            message: format!("power_state reported {state}, which is not a power state"),
        })
    }

    /// The domain's own capabilities, or the vtable's when the slot is NULL.
    pub(crate) fn domain_capabilities(&self, handle: Handle) -> Result<Capabilities> {
        let Some(f) = self.raw.domain_capabilities else {
            return Ok(self.static_capabilities());
        };
        let mut bits: u64 = 0;
        // SAFETY: an open handle, a valid out-pointer and error struct.
        self.call("domain_capabilities", |err| unsafe {
            f(handle.0, &raw mut bits, FLAGS, err)
        })?;
        Ok(self.capabilities(bits))
    }

    pub(crate) fn create(
        &self,
        handle: Handle,
        snapshot: &Uuid,
        parent: Option<&Uuid>,
        name: &CStr,
        description: &CStr,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let f = self.raw.create.ok_or_else(|| self.unsupported("create"))?;
        let (snapshot, parent) = (uuid_to_abi(snapshot), parent.map(uuid_to_abi));
        with_progress(progress, |cb, ctx| {
            // SAFETY: an open handle; uuids, strings, callback context and error struct
            // all outlive the call.
            self.call("create", |err| unsafe {
                f(
                    handle.0,
                    &snapshot,
                    opt(&parent),
                    name.as_ptr(),
                    description.as_ptr(),
                    cb,
                    ctx,
                    FLAGS,
                    err,
                )
            })
        })
    }

    pub(crate) fn revert(
        &self,
        handle: Handle,
        snapshot: &Uuid,
        state: PowerState,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let f = self.raw.revert.ok_or_else(|| self.unsupported("revert"))?;
        let snapshot = uuid_to_abi(snapshot);
        with_progress(progress, |cb, ctx| {
            // SAFETY: as for `create`.
            self.call("revert", |err| unsafe {
                f(
                    handle.0,
                    &snapshot,
                    power_to_abi(state),
                    cb,
                    ctx,
                    FLAGS,
                    err,
                )
            })
        })
    }

    pub(crate) fn discard_leaf(
        &self,
        handle: Handle,
        snapshot: &Uuid,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let slot = self.raw.discard_leaf;
        self.snapshot_step("discard_leaf", slot, handle, snapshot, progress)
    }

    pub(crate) fn merge_into_parent(
        &self,
        handle: Handle,
        snapshot: &Uuid,
        parent: Option<&Uuid>,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let f = self
            .raw
            .merge_into_parent
            .ok_or_else(|| self.unsupported("merge_into_parent"))?;
        let (snapshot, parent) = (uuid_to_abi(snapshot), parent.map(uuid_to_abi));
        with_progress(progress, |cb, ctx| {
            // SAFETY: as for `create`.
            self.call("merge_into_parent", |err| unsafe {
                f(handle.0, &snapshot, opt(&parent), cb, ctx, FLAGS, err)
            })
        })
    }

    pub(crate) fn consolidate(
        &self,
        handle: Handle,
        snapshot: &Uuid,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let slot = self.raw.consolidate;
        self.snapshot_step("consolidate", slot, handle, snapshot, progress)
    }

    /// Calls a step function whose only argument is a snapshot (discard_leaf and
    /// consolidate share the ABI signature).
    fn snapshot_step(
        &self,
        function: &str,
        slot: SnapshotStepFn,
        handle: Handle,
        snapshot: &Uuid,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let f = slot.ok_or_else(|| self.unsupported(function))?;
        let snapshot = uuid_to_abi(snapshot);
        with_progress(progress, |cb, ctx| {
            // SAFETY: as for `create`.
            self.call(function, |err| unsafe {
                f(handle.0, &snapshot, cb, ctx, FLAGS, err)
            })
        })
    }

    pub(crate) fn detach_live(&self, handle: Handle, progress: &mut dyn Progress) -> Result<()> {
        let f = self
            .raw
            .detach_live
            .ok_or_else(|| self.unsupported("detach_live"))?;
        with_progress(progress, |cb, ctx| {
            // SAFETY: as for `create`.
            self.call("detach_live", |err| unsafe {
                f(handle.0, cb, ctx, FLAGS, err)
            })
        })
    }

    pub(crate) fn forget(&self, handle: Handle, snapshot: &Uuid) -> Result<()> {
        let f = self.raw.forget.ok_or_else(|| self.unsupported("forget"))?;
        let snapshot = uuid_to_abi(snapshot);
        // SAFETY: as for `create`.
        self.call("forget", |err| unsafe {
            f(handle.0, &snapshot, FLAGS, err)
        })
    }

    pub(crate) fn adopt(
        &self,
        handle: Handle,
        snapshot: &Uuid,
        parent: Option<&Uuid>,
        name: &CStr,
    ) -> Result<()> {
        let f = self.raw.adopt.ok_or_else(|| self.unsupported("adopt"))?;
        let (snapshot, parent) = (uuid_to_abi(snapshot), parent.map(uuid_to_abi));
        // SAFETY: an open handle; the uuids, the name and the error struct outlive the call.
        self.call("adopt", |err| unsafe {
            f(handle.0, &snapshot, opt(&parent), name.as_ptr(), FLAGS, err)
        })
    }

    pub(crate) fn save_manifest(&self, handle: Handle, manifest: &CStr) -> Result<()> {
        let f = self
            .raw
            .save_manifest
            .ok_or_else(|| self.unsupported("save_manifest"))?;
        let len = manifest.count_bytes();
        // SAFETY: an open handle; the text (with its NUL) and the error struct outlive the
        // call.
        self.call("save_manifest", |err| unsafe {
            f(handle.0, manifest.as_ptr(), len, FLAGS, err)
        })
    }

    /// What the plugin passed back from `load_manifest` (nothing: it keeps none).
    pub(crate) fn load_manifest(&self, handle: Handle) -> Result<Text> {
        let f = self
            .raw
            .load_manifest
            .ok_or_else(|| self.unsupported("load_manifest"))?;
        let mut text = Text::default();
        with_text(&mut text, |cb, ctx| {
            // SAFETY: an open handle; the callback context and the error struct outlive
            // the call.
            self.call("load_manifest", |err| unsafe {
                f(handle.0, cb, ctx, FLAGS, err)
            })
        })?;
        Ok(text)
    }

    /// What a step would write and free per file system (ABI 1.3's `estimate` slot);
    /// `None` when the slot is NULL (or past an older plugin's table), or the plugin
    /// cannot estimate this step.
    pub(crate) fn estimate(
        &self,
        handle: Handle,
        step: StepKind,
        snapshot: Option<&Uuid>,
        parent: Option<&Uuid>,
    ) -> Result<Option<Vec<snaptree_engine::SpaceUse>>> {
        let Some(f) = self.raw.estimate else {
            return Ok(None);
        };
        let (snapshot, parent) = (snapshot.map(uuid_to_abi), parent.map(uuid_to_abi));
        let mut uses = SpaceUses::default();
        let mut known: c_int = 0;
        with_space_uses(&mut uses, |cb, ctx| {
            // SAFETY: an open handle; the uuids, the callback context, the out-pointer and
            // the error struct outlive the call.
            self.call("estimate", |err| unsafe {
                f(
                    handle.0,
                    step_to_abi(step) as c_int,
                    opt(&snapshot),
                    opt(&parent),
                    cb,
                    ctx,
                    &raw mut known,
                    FLAGS,
                    err,
                )
            })
        })?;
        if uses.bad_entry {
            return Err(Error::Backend {
                backend: self.name.to_string(),
                message:
                    "estimate reported a file system with a NULL entry or a path that is not UTF-8"
                        .into(),
            });
        }
        Ok((known != 0).then_some(uses.uses))
    }

    /// The layers and the live state's parent.
    pub(crate) fn list_physical(&self, handle: Handle) -> Result<(Layers, Option<Uuid>)> {
        let f = self
            .raw
            .list_physical
            .ok_or_else(|| self.unsupported("list_physical"))?;
        let mut layers = Layers::default();
        let mut live = abi::snaptree_uuid::default();
        let mut has_live: c_int = 0;
        with_layers(&mut layers, |cb, ctx| {
            // SAFETY: an open handle; the callback context, out-pointers and error struct
            // outlive the call.
            self.call("list_physical", |err| unsafe {
                f(
                    handle.0,
                    cb,
                    ctx,
                    &raw mut live,
                    &raw mut has_live,
                    FLAGS,
                    err,
                )
            })
        })?;
        Ok((layers, (has_live != 0).then(|| uuid_from_abi(&live))))
    }

    pub(crate) fn content_digest(&self, handle: Handle, snapshot: Option<&Uuid>) -> Result<String> {
        let f = self
            .raw
            .content_digest
            .ok_or_else(|| self.unsupported("content_digest"))?;
        let snapshot = snapshot.map(uuid_to_abi);
        let mut buf = [0 as c_char; abi::SNAPTREE_BACKEND_DIGEST_SIZE as usize];
        // SAFETY: an open handle, a buffer of the length passed, a valid error struct.
        self.call("content_digest", |err| unsafe {
            f(
                handle.0,
                opt(&snapshot),
                buf.as_mut_ptr(),
                buf.len(),
                FLAGS,
                err,
            )
        })?;
        let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
        let digest = CStr::from_bytes_until_nul(&bytes)
            .ok()
            .and_then(|c| c.to_str().ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::Backend {
                backend: self.name.to_string(),
                message: "content_digest wrote no NUL-terminated UTF-8 digest".into(),
            })?;
        Ok(digest.to_string())
    }

    pub(crate) fn write_guest(&self, handle: Handle, seed: u64) -> Result<()> {
        let f = self
            .raw
            .write_guest
            .ok_or_else(|| self.unsupported("write_guest"))?;
        // SAFETY: an open handle and a valid error struct.
        self.call("write_guest", |err| unsafe {
            f(handle.0, seed, FLAGS, err)
        })
    }
}

/// Reads a plugin's declared name: NUL-terminated within [`MAX_NAME`] bytes, a valid
/// backend type. The string lives in the never-unloaded library, hence `'static`.
///
/// # Safety
///
/// `name` must be NULL or point to readable bytes up to a NUL or `MAX_NAME + 1` bytes.
unsafe fn read_name(name: *const c_char) -> std::result::Result<&'static str, String> {
    if name.is_null() {
        return Err("its vtable has no name".into());
    }
    let mut len = 0;
    // SAFETY: the caller guarantees the bytes up to the NUL, or MAX_NAME + 1 bytes, are
    // readable; we stop at whichever comes first.
    while len <= MAX_NAME && unsafe { *name.add(len) } != 0 {
        len += 1;
    }
    if len > MAX_NAME {
        return Err(format!("its name is longer than {MAX_NAME} bytes"));
    }
    // SAFETY: `len` readable bytes, checked above, in a library that is never unloaded.
    let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), len) };
    let text = std::str::from_utf8(bytes).map_err(|_| "its name is not UTF-8".to_string())?;
    snaptree_engine::xml::domain::validate_backend_type(text).map_err(|_| {
        format!(
            "its name '{}' is not a valid backend type",
            text.escape_default()
        )
    })?;
    Ok(text)
}

fn opt(uuid: &Option<abi::snaptree_uuid>) -> *const abi::snaptree_uuid {
    uuid.as_ref().map_or(std::ptr::null(), std::ptr::from_ref)
}
