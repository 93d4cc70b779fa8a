//! The snaptree plugin host: turns backend plugins, shared libraries named
//! `libsnaptree_backend_<type>.so` that export the ABI of `include/snaptree_backend.h`,
//! into engine [`Backend`](snaptree_engine::Backend)s.
//!
//! - [`Plugin::load`] loads one file: it canonicalises the path, opens it, calls its entry
//!   symbol and checks the ABI version, the vtable size and the mandatory functions before
//!   calling anything else. A library is never unloaded. Every failure is a `PLUGIN` error
//!   naming the file and the reason.
//! - [`PluginHost`] finds plugins by backend type on a search path (paths added by the
//!   caller, then `$SNAPTREE_BACKEND_PATH`, then the directory of the running executable),
//!   loads each on first use, and lists every plugin with its status.
//! - [`PluginBackend`] is an open domain of a plugin. All calls into a plugin go through
//!   one dispatch layer, which treats a NULL slot as "unsupported" and turns the plugin's
//!   error struct into an engine error.

mod backend;
mod callbacks;
mod host;
mod names;
mod plugin;
mod vtable;

pub use backend::PluginBackend;
pub use host::{ENV_PATH, PluginHost, PluginStatus, SearchEntry, SearchSource};
pub use names::{plugin_file_name, type_of_file_name};
pub use plugin::Plugin;
