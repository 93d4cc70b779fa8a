//! The static vtable of a Rust plugin: one `extern "C"` function per slot, each a thin
//! wrapper over the boundary helper.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::panic::catch_unwind;
use std::sync::OnceLock;

use snaptree_abi as abi;
use snaptree_engine::{Adoption, ContentRef, PowerState, Step, StepKind};

use snaptree_abi::convert::{
    capabilities_to_abi, power_from_abi, power_to_abi, step_from_abi, uuid_to_abi,
};

use crate::boundary::{HostProgress, Slot, call, opt_uuid, out, string, uuid, with_domain};
use crate::{PluginError, SnaptreeBackend};

type Err = *mut abi::snaptree_backend_error;
type Cb = abi::snaptree_progress_fn;

/// A built vtable, shareable between threads.
pub struct VtableCell(abi::snaptree_backend_vtable);

// SAFETY: the table is never mutated after it is built; its name points to a `'static`
// C string and its functions are plain code.
unsafe impl Sync for VtableCell {}
// SAFETY: as for `Sync`.
unsafe impl Send for VtableCell {}

/// The body of `snaptree_backend_entry`: builds the vtable once. A panic while building it
/// (in `capabilities`) returns NULL, which the host reports as a broken plugin.
pub fn entry<B: SnaptreeBackend>(
    cell: &'static OnceLock<VtableCell>,
) -> *const abi::snaptree_backend_vtable {
    match catch_unwind(|| cell.get_or_init(|| VtableCell(build::<B>()))) {
        Ok(table) => &table.0,
        Err(_) => std::ptr::null(),
    }
}

fn build<B: SnaptreeBackend>() -> abi::snaptree_backend_vtable {
    let caps = B::capabilities();
    let has = |kind: StepKind| caps.supports(kind);
    abi::snaptree_backend_vtable {
        abi_version: abi::SNAPTREE_BACKEND_ABI_VERSION,
        struct_size: std::mem::size_of::<abi::snaptree_backend_vtable>() as u32,
        name: B::NAME.as_ptr(),
        capabilities: capabilities_to_abi(caps),
        open_domain: Some(open_domain::<B>),
        close_domain: Some(close_domain::<B>),
        power_state: Some(power_state::<B>),
        domain_capabilities: Some(domain_capabilities::<B>),
        create: Some(create::<B>),
        revert: Some(revert::<B>),
        discard_leaf: Some(discard_leaf::<B>),
        merge_into_parent: has(StepKind::MergeIntoParent).then_some(merge_into_parent::<B> as _),
        consolidate: has(StepKind::Consolidate).then_some(consolidate::<B> as _),
        detach_live: has(StepKind::DetachLive).then_some(detach_live::<B> as _),
        forget: has(StepKind::Forget).then_some(forget::<B> as _),
        list_physical: Some(list_physical::<B>),
        content_digest: B::TEST_HOOKS.then_some(content_digest::<B> as _),
        write_guest: B::TEST_HOOKS.then_some(write_guest::<B> as _),
        adopt: B::ADOPT.then_some(adopt::<B> as _),
        save_manifest: B::MANIFEST.then_some(save_manifest::<B> as _),
        load_manifest: B::MANIFEST.then_some(load_manifest::<B> as _),
        estimate: B::ESTIMATE.then_some(estimate::<B> as _),
    }
}

unsafe extern "C" fn open_domain<B: SnaptreeBackend>(
    xml: *const c_char,
    len: usize,
    handle: *mut *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    call::<B>(flags, err, || {
        if xml.is_null() {
            return Err(PluginError::invalid_arg("the domain XML is NULL"));
        }
        // SAFETY: the ABI passes `len` readable bytes of XML.
        let bytes = unsafe { std::slice::from_raw_parts(xml.cast::<u8>(), len) };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| PluginError::invalid_arg("the domain XML is not UTF-8"))?;
        let handle = out(handle, "handle")?;
        let backend = B::open(text)?;
        *handle = Box::into_raw(Box::new(Slot {
            backend,
            poisoned: false,
        }))
        .cast();
        Ok(())
    })
}

unsafe extern "C" fn close_domain<B: SnaptreeBackend>(
    handle: *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    if handle.is_null() {
        return call::<B>(flags, err, || {
            Err(PluginError::invalid_arg("the domain handle is NULL"))
        });
    }
    // SAFETY: the handle came from open_domain's `Box<Slot<B>>` and the host closes it once.
    let mut slot = unsafe { Box::from_raw(handle.cast::<Slot<B>>()) };
    // The slot is dropped even when close fails or panics, as the ABI requires.
    call::<B>(flags, err, || {
        if slot.poisoned {
            Ok(())
        } else {
            slot.backend.close()
        }
    })
}

unsafe extern "C" fn power_state<B: SnaptreeBackend>(
    handle: *mut c_void,
    state: *mut c_int,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        let state = out(state, "state")?;
        *state = power_to_abi(b.power_state()?);
        Ok(())
    })
}

unsafe extern "C" fn domain_capabilities<B: SnaptreeBackend>(
    handle: *mut c_void,
    caps: *mut u64,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        let caps = out(caps, "capabilities")?;
        *caps = capabilities_to_abi(b.domain_capabilities());
        Ok(())
    })
}

/// Runs a step with the host's progress callback.
fn step<B: SnaptreeBackend>(
    handle: *mut c_void,
    flags: c_uint,
    err: Err,
    cb: Cb,
    ctx: *mut c_void,
    step: impl FnOnce() -> Result<Step, PluginError>,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        let step = step()?;
        b.execute(&step, &mut HostProgress { callback: cb, ctx })
    })
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
unsafe extern "C" fn create<B: SnaptreeBackend>(
    handle: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    parent: *const abi::snaptree_uuid,
    name: *const c_char,
    description: *const c_char,
    cb: Cb,
    ctx: *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    step::<B>(handle, flags, err, cb, ctx, || {
        Ok(Step::Create {
            snapshot: uuid(snapshot, "snapshot")?,
            parent: opt_uuid(parent),
            name: string(name, "snapshot name")?,
            description: string(description, "description")?,
        })
    })
}

unsafe extern "C" fn revert<B: SnaptreeBackend>(
    handle: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    state: c_int,
    cb: Cb,
    ctx: *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    step::<B>(handle, flags, err, cb, ctx, || {
        let state = power_from_abi(state)
            .ok_or_else(|| PluginError::invalid_arg(format!("unknown power state {state}")))?;
        Ok(Step::Revert {
            snapshot: uuid(snapshot, "snapshot")?,
            state,
        })
    })
}

unsafe extern "C" fn discard_leaf<B: SnaptreeBackend>(
    handle: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    cb: Cb,
    ctx: *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    step::<B>(handle, flags, err, cb, ctx, || {
        Ok(Step::DiscardLeaf {
            snapshot: uuid(snapshot, "snapshot")?,
        })
    })
}

unsafe extern "C" fn merge_into_parent<B: SnaptreeBackend>(
    handle: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    parent: *const abi::snaptree_uuid,
    cb: Cb,
    ctx: *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    step::<B>(handle, flags, err, cb, ctx, || {
        Ok(Step::MergeIntoParent {
            snapshot: uuid(snapshot, "snapshot")?,
            parent: opt_uuid(parent),
        })
    })
}

unsafe extern "C" fn consolidate<B: SnaptreeBackend>(
    handle: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    cb: Cb,
    ctx: *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    step::<B>(handle, flags, err, cb, ctx, || {
        Ok(Step::Consolidate {
            snapshot: uuid(snapshot, "snapshot")?,
        })
    })
}

unsafe extern "C" fn detach_live<B: SnaptreeBackend>(
    handle: *mut c_void,
    cb: Cb,
    ctx: *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    step::<B>(handle, flags, err, cb, ctx, || Ok(Step::DetachLive))
}

unsafe extern "C" fn forget<B: SnaptreeBackend>(
    handle: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    flags: c_uint,
    err: Err,
) -> c_int {
    step::<B>(handle, flags, err, None, std::ptr::null_mut(), || {
        Ok(Step::Forget {
            snapshot: uuid(snapshot, "snapshot")?,
        })
    })
}

unsafe extern "C" fn list_physical<B: SnaptreeBackend>(
    handle: *mut c_void,
    layer: abi::snaptree_layer_fn,
    ctx: *mut c_void,
    live_parent: *mut abi::snaptree_uuid,
    has_live_parent: *mut c_int,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        let layer = layer.ok_or_else(|| PluginError::invalid_arg("the layer callback is NULL"))?;
        let live_parent = out(live_parent, "live parent")?;
        let has_live_parent = out(has_live_parent, "has-live-parent")?;
        let tree = b.list_physical()?;
        for (snapshot, parent) in &tree.parents {
            let snapshot = uuid_to_abi(snapshot);
            let parent = parent.as_ref().map(uuid_to_abi);
            let parent_ptr = parent.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
            // SAFETY: the host's callback and context are valid for this call; the uuids
            // live across the callback.
            unsafe { layer(ctx, &snapshot, parent_ptr) };
        }
        *has_live_parent = c_int::from(tree.live_parent.is_some());
        if let Some(p) = tree.live_parent {
            *live_parent = uuid_to_abi(&p);
        }
        Ok(())
    })
}

unsafe extern "C" fn content_digest<B: SnaptreeBackend>(
    handle: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    buf: *mut c_char,
    buflen: usize,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        if buf.is_null() {
            return Err(PluginError::invalid_arg("the digest buffer is NULL"));
        }
        let of = opt_uuid(snapshot).map_or(ContentRef::Live, ContentRef::Snapshot);
        let digest = b.content_digest(of)?;
        if digest.len() >= buflen || digest.as_bytes().contains(&0) {
            return Err(PluginError::backend(format!(
                "the digest '{}' does not fit a buffer of {buflen} bytes as a C string",
                digest.escape_default()
            )));
        }
        // SAFETY: the host's buffer has `buflen` writable bytes and the digest and its NUL
        // fit, checked above.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), buflen) };
        dst[..digest.len()].copy_from_slice(digest.as_bytes());
        dst[digest.len()] = 0;
        Ok(())
    })
}

unsafe extern "C" fn write_guest<B: SnaptreeBackend>(
    handle: *mut c_void,
    seed: u64,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| b.write_guest(seed))
}

unsafe extern "C" fn adopt<B: SnaptreeBackend>(
    handle: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    parent: *const abi::snaptree_uuid,
    name: *const c_char,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        let adoption = Adoption {
            snapshot: uuid(snapshot, "snapshot")?,
            parent: opt_uuid(parent),
            name: string(name, "snapshot name")?,
        };
        b.adopt(&adoption)
    })
}

unsafe extern "C" fn save_manifest<B: SnaptreeBackend>(
    handle: *mut c_void,
    manifest: *const c_char,
    len: usize,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        if manifest.is_null() {
            return Err(PluginError::invalid_arg("the manifest is NULL"));
        }
        // SAFETY: the ABI passes `len` readable bytes of manifest.
        let bytes = unsafe { std::slice::from_raw_parts(manifest.cast::<u8>(), len) };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| PluginError::invalid_arg("the manifest is not UTF-8"))?;
        b.save_manifest(text)
    })
}

unsafe extern "C" fn load_manifest<B: SnaptreeBackend>(
    handle: *mut c_void,
    text: abi::snaptree_text_fn,
    ctx: *mut c_void,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        let text = text.ok_or_else(|| PluginError::invalid_arg("the text callback is NULL"))?;
        if let Some(manifest) = b.load_manifest()? {
            let owned = std::ffi::CString::new(manifest)
                .map_err(|_| PluginError::backend("the manifest contains a NUL character"))?;
            // SAFETY: the host's callback and context are valid for this call; the text
            // lives across the callback.
            unsafe { text(ctx, owned.as_ptr(), owned.as_bytes().len()) };
        }
        Ok(())
    })
}

/// The step an estimate is asked for, rebuilt from the ABI's kind, snapshot and parent.
fn estimated_step(
    kind: c_int,
    snapshot: *const abi::snaptree_uuid,
    parent: *const abi::snaptree_uuid,
) -> Result<Step, PluginError> {
    let kind = step_from_abi(kind)
        .ok_or_else(|| PluginError::invalid_arg(format!("unknown step {kind}")))?;
    let snap = || uuid(snapshot, "snapshot");
    Ok(match kind {
        StepKind::Create => Step::Create {
            snapshot: snap()?,
            parent: opt_uuid(parent),
            name: String::new(),
            description: String::new(),
        },
        StepKind::Revert => Step::Revert {
            snapshot: snap()?,
            state: PowerState::Shutoff,
        },
        StepKind::DiscardLeaf => Step::DiscardLeaf { snapshot: snap()? },
        StepKind::MergeIntoParent => Step::MergeIntoParent {
            snapshot: snap()?,
            parent: opt_uuid(parent),
        },
        StepKind::Consolidate => Step::Consolidate { snapshot: snap()? },
        StepKind::DetachLive => Step::DetachLive,
        StepKind::Forget => Step::Forget { snapshot: snap()? },
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn estimate<B: SnaptreeBackend>(
    handle: *mut c_void,
    step: c_int,
    snapshot: *const abi::snaptree_uuid,
    parent: *const abi::snaptree_uuid,
    space: abi::snaptree_space_fn,
    space_ctx: *mut c_void,
    known: *mut c_int,
    flags: c_uint,
    err: Err,
) -> c_int {
    with_domain::<B>(handle, flags, err, |b| {
        let step = estimated_step(step, snapshot, parent)?;
        let space = space.ok_or_else(|| PluginError::invalid_arg("the space callback is NULL"))?;
        let known = out(known, "known")?;
        let Some(uses) = b.estimate(&step)? else {
            *known = 0;
            return Ok(());
        };
        for u in &uses {
            let path = std::ffi::CString::new(u.path.as_str()).map_err(|_| {
                PluginError::backend(format!("the file system path {:?} holds a NUL", u.path))
            })?;
            let entry = abi::snaptree_space_use {
                fs_id: u.fs,
                bytes_written: u.written,
                bytes_freed: u.freed,
                bytes_free: u.free,
                path: path.as_ptr(),
            };
            // SAFETY: the host's callback and context, called with an entry and a path
            // that live through the call, as the ABI says.
            unsafe { space(space_ctx, &entry) };
        }
        *known = 1;
        Ok(())
    })
}
