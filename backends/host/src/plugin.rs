//! Loading one plugin file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use snaptree_abi as abi;
use snaptree_engine::{BackendProvider, Capabilities, Error, Result};

use crate::vtable::Vtable;

/// A loaded plugin. Plugins are never unloaded, so this is a cheap `'static` reference.
#[derive(Clone, Copy)]
pub struct Plugin {
    inner: &'static Loaded,
}

struct Loaded {
    path: PathBuf,
    vtable: Vtable,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.inner.path)
            .field("name", &self.name())
            .field(
                "abi_version",
                &format_args!(
                    "{}.{}",
                    abi::abi_major(self.abi_version()),
                    abi::abi_minor(self.abi_version())
                ),
            )
            .finish()
    }
}

/// Every plugin loaded by this process, by canonical path: loading a file twice gives the
/// same plugin, and the table keeps each alive for the life of the process.
static LOADED: Mutex<BTreeMap<PathBuf, Plugin>> = Mutex::new(BTreeMap::new());

/// Every library ever opened, including those refused after opening (no entry symbol, a
/// bad vtable): never unloaded, and kept reachable so leak checkers see them as held.
static LIBRARIES: Mutex<Vec<&'static Library>> = Mutex::new(Vec::new());

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::Plugin {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl Plugin {
    /// Loads the plugin in `path` (any file name), or returns the one already loaded from
    /// the same file. The path is canonicalised, so the dynamic loader never searches
    /// anywhere, the current directory included.
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin> {
        let given = path.as_ref();
        let path = std::fs::canonicalize(given)
            .map_err(|e| refuse(given, format!("cannot be opened: {e}")))?;
        if !path.is_file() {
            return Err(refuse(&path, "is not a file"));
        }
        let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = loaded.get(&path) {
            return Ok(*p);
        }
        let plugin = Plugin::open(path.clone())?;
        loaded.insert(path, plugin);
        Ok(plugin)
    }

    fn open(path: PathBuf) -> Result<Plugin> {
        // RTLD_NOW: an unresolved symbol fails here, not in the middle of a step.
        // RTLD_LOCAL: one plugin's symbols never satisfy another's.
        // SAFETY: loading runs the library's initialisers; a plugin is trusted code by
        // definition (the operator installed it), and the path is absolute, so exactly
        // this file is loaded.
        let library =
            unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
                refuse(
                    &path,
                    format!("is not a shared library or cannot be opened: {e}"),
                )
            })?;
        // Never unloaded: a plugin may have started threads or registered callbacks, and
        // its vtable and strings are used for the life of the process.
        let library: &'static Library = Box::leak(Box::new(library));
        LIBRARIES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(library);
        // SAFETY: the symbol's type is the one the ABI gives it.
        let entry = unsafe {
            library.get::<abi::snaptree_backend_entry_fn>(abi::SNAPTREE_BACKEND_ENTRY_SYMBOL)
        }
        .ok()
        .and_then(|symbol| *symbol)
        .ok_or_else(|| refuse(&path, "has no entry symbol snaptree_backend_entry"))?;
        // SAFETY: calling the plugin's entry as the ABI declares it: no arguments, returns
        // its constant table or NULL.
        let table = unsafe { entry() };
        // SAFETY: the ABI makes the entry return NULL or a table that lives as long as the
        // library, which is forever.
        let vtable = unsafe { Vtable::read(table, &path) }?;
        Ok(Plugin {
            inner: Box::leak(Box::new(Loaded { path, vtable })),
        })
    }

    /// The plugin file, canonical.
    pub fn path(&self) -> &'static Path {
        &self.inner.path
    }

    /// The backend name the plugin declares.
    pub fn name(&self) -> &'static str {
        self.inner.vtable.name()
    }

    /// The ABI version the plugin was built for (major << 16 | minor).
    pub fn abi_version(&self) -> u32 {
        self.inner.vtable.abi_version()
    }

    /// The steps the plugin implements and in which power states, as its vtable declares
    /// them for every domain; a step whose function is NULL is unsupported.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.vtable.static_capabilities()
    }

    /// Whether the plugin offers both test hooks of the conformance kit.
    pub fn has_test_hooks(&self) -> bool {
        self.inner.vtable.has_test_hooks()
    }

    /// Whether the plugin can adopt existing data for REDEFINE (ABI 1.1's `adopt` slot).
    pub fn can_adopt(&self) -> bool {
        self.inner.vtable.can_adopt()
    }

    /// Whether the plugin keeps the engine's manifest beside its data (ABI 1.2's
    /// `save_manifest` and `load_manifest`).
    pub fn keeps_manifest(&self) -> bool {
        self.inner.vtable.keeps_manifest()
    }

    /// Whether the plugin estimates space (ABI 1.3's `estimate` slot).
    pub fn can_estimate(&self) -> bool {
        self.inner.vtable.can_estimate()
    }

    pub(crate) fn vtable(&self) -> &'static Vtable {
        &self.inner.vtable
    }

    /// This plugin as a shareable engine provider.
    pub fn provider(&self) -> Arc<dyn BackendProvider> {
        Arc::new(*self)
    }
}
