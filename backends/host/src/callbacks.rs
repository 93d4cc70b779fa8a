//! The host's side of the callbacks a plugin calls: progress, one call per layer of
//! `list_physical`, the text of `load_manifest`, and one per file system of `estimate`. Panics never unwind into the plugin: a panicking progress sink asks
//! the plugin to cancel, and the panic resumes once the plugin has returned.

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use snaptree_abi as abi;
use snaptree_engine::{Progress, Uuid};

/// Forwards a plugin's progress reports to the engine's [`Progress`].
struct ProgressBridge<'a> {
    progress: &'a mut dyn Progress,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn report(ctx: *mut c_void, fraction: f64) -> c_int {
    // SAFETY: the host passes a pointer to a live `ProgressBridge` as `ctx` together with
    // this function, for the duration of one plugin call, and nothing else uses it then.
    let bridge = unsafe { &mut *ctx.cast::<ProgressBridge<'_>>() };
    if bridge.panic.is_some() {
        return 0;
    }
    match catch_unwind(AssertUnwindSafe(|| bridge.progress.report(fraction))) {
        Ok(go_on) => c_int::from(go_on),
        Err(panic) => {
            bridge.panic = Some(panic);
            0
        }
    }
}

/// Calls `f` with a progress callback and its context that forward to `progress`.
pub(crate) fn with_progress<T>(
    progress: &mut dyn Progress,
    f: impl FnOnce(abi::snaptree_progress_fn, *mut c_void) -> T,
) -> T {
    let mut bridge = ProgressBridge {
        progress,
        panic: None,
    };
    let out = f(Some(report), (&raw mut bridge).cast());
    if let Some(panic) = bridge.panic {
        resume_unwind(panic);
    }
    out
}

/// Collects the layers a plugin reports from `list_physical`.
#[derive(Default)]
pub(crate) struct Layers {
    /// Every layer with its parent, in the order reported.
    pub(crate) layers: Vec<(Uuid, Option<Uuid>)>,
    /// Set when the plugin passed a NULL snapshot uuid.
    pub(crate) null_snapshot: bool,
}

unsafe extern "C" fn layer(
    ctx: *mut c_void,
    snapshot: *const abi::snaptree_uuid,
    parent: *const abi::snaptree_uuid,
) {
    // SAFETY: the host passes a pointer to a live `Layers` as `ctx` with this function, for
    // the duration of one `list_physical` call.
    let layers = unsafe { &mut *ctx.cast::<Layers>() };
    // SAFETY: the ABI makes both pointers NULL or valid for the duration of this call.
    let (snapshot, parent) = unsafe { (snapshot.as_ref(), parent.as_ref()) };
    match snapshot {
        Some(s) => layers.layers.push((
            Uuid::from_bytes(s.bytes),
            parent.map(|p| Uuid::from_bytes(p.bytes)),
        )),
        None => layers.null_snapshot = true,
    }
}

/// Calls `f` with a layer callback and its context that collect into `layers`.
pub(crate) fn with_layers<T>(
    layers: &mut Layers,
    f: impl FnOnce(abi::snaptree_layer_fn, *mut c_void) -> T,
) -> T {
    f(Some(layer), std::ptr::from_mut(layers).cast())
}

/// Collects the text a plugin passes to a text callback (`load_manifest`).
#[derive(Default)]
pub(crate) struct Text {
    /// The bytes received; `None` until the plugin calls back.
    pub(crate) bytes: Option<Vec<u8>>,
    /// Set when the plugin passed a NULL text with a nonzero length.
    pub(crate) null_text: bool,
}

unsafe extern "C" fn text(ctx: *mut c_void, text: *const std::ffi::c_char, len: usize) {
    // SAFETY: the host passes a pointer to a live `Text` as `ctx` with this function, for
    // the duration of one call.
    let out = unsafe { &mut *ctx.cast::<Text>() };
    if text.is_null() {
        out.null_text = len != 0;
        out.bytes = Some(Vec::new());
        return;
    }
    // SAFETY: the ABI passes `len` readable bytes, valid during this call.
    let bytes = unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) };
    out.bytes = Some(bytes.to_vec());
}

/// Calls `f` with a text callback and its context that collect into `out`.
pub(crate) fn with_text<T>(
    out: &mut Text,
    f: impl FnOnce(abi::snaptree_text_fn, *mut c_void) -> T,
) -> T {
    f(Some(text), std::ptr::from_mut(out).cast())
}

/// Collects the file systems a plugin reports from `estimate`.
#[derive(Default)]
pub(crate) struct SpaceUses {
    /// Every entry, in the order reported.
    pub(crate) uses: Vec<snaptree_engine::SpaceUse>,
    /// Set when the plugin passed a NULL entry or path, or a path that is not UTF-8.
    pub(crate) bad_entry: bool,
}

unsafe extern "C" fn space_use(ctx: *mut c_void, entry: *const abi::snaptree_space_use) {
    // SAFETY: the host passes a pointer to a live `SpaceUses` as `ctx` with this function,
    // for the duration of one `estimate` call.
    let uses = unsafe { &mut *ctx.cast::<SpaceUses>() };
    // SAFETY: the ABI makes the entry NULL or valid for the duration of this call.
    let Some(e) = (unsafe { entry.as_ref() }) else {
        uses.bad_entry = true;
        return;
    };
    if e.path.is_null() {
        uses.bad_entry = true;
        return;
    }
    // SAFETY: a non-NULL path is NUL-terminated and valid during the call, as the ABI says.
    let path = unsafe { std::ffi::CStr::from_ptr(e.path) };
    match path.to_str() {
        Ok(p) => uses.uses.push(snaptree_engine::SpaceUse {
            fs: e.fs_id,
            path: p.to_string(),
            written: e.bytes_written,
            freed: e.bytes_freed,
            free: e.bytes_free,
        }),
        Err(_) => uses.bad_entry = true,
    }
}

/// Calls `f` with a space callback and its context that collect into `uses`.
pub(crate) fn with_space_uses<T>(
    uses: &mut SpaceUses,
    f: impl FnOnce(abi::snaptree_space_fn, *mut c_void) -> T,
) -> T {
    f(Some(space_use), std::ptr::from_mut(uses).cast())
}
