//! Finding plugins: the search path, loading by backend type on first use, and listing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use snaptree_engine::xml::DomainXml;
use snaptree_engine::xml::domain::validate_backend_type;
use snaptree_engine::{Backend, BackendProvider, Error, Result};

use crate::names::{plugin_file_name, type_of_file_name};
use crate::plugin::Plugin;

/// The environment variable holding extra plugin directories or files, `:`-separated.
pub const ENV_PATH: &str = "SNAPTREE_BACKEND_PATH";

/// Where a search path entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchSource {
    /// Added by the caller with [`PluginHost::add_path`].
    Explicit,
    /// From `$SNAPTREE_BACKEND_PATH`.
    Environment,
    /// The directory of the running executable.
    ExecutableDir,
}

/// One entry of the search path: a directory of plugins or one plugin file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchEntry {
    /// The canonical path.
    pub path: PathBuf,
    /// Where it came from.
    pub source: SearchSource,
}

/// One plugin file found on the search path, and whether it loads.
#[derive(Debug)]
pub struct PluginStatus {
    /// The file, canonical.
    pub path: PathBuf,
    /// The backend type the file name stands for, when it follows the naming rule.
    pub file_type: Option<String>,
    /// The loaded plugin, or why it cannot be used.
    pub plugin: Result<Plugin>,
    /// Whether a lookup of its type picks this file (false when an earlier entry of the
    /// search path has a plugin of the same type).
    pub active: bool,
}

/// Finds backend plugins by type on a search path and loads each on first use.
///
/// The search path, in order: the paths added with [`add_path`](PluginHost::add_path)
/// (directories or files), then the absolute entries of `$SNAPTREE_BACKEND_PATH`, then the
/// directory of the running executable. The current directory is never searched unless a
/// caller adds it explicitly: empty and relative entries of the variable are ignored.
#[derive(Debug)]
pub struct PluginHost {
    explicit: Vec<PathBuf>,
    env_path: Option<OsString>,
    exe_dir: Option<PathBuf>,
    by_type: Mutex<BTreeMap<String, Plugin>>,
}

impl Default for PluginHost {
    fn default() -> Self {
        PluginHost::new()
    }
}

impl PluginHost {
    /// A host searching `$SNAPTREE_BACKEND_PATH` and the directory of the running
    /// executable, after any paths added later.
    pub fn new() -> PluginHost {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf));
        PluginHost::isolated()
            .with_env_path(std::env::var_os(ENV_PATH))
            .with_exe_dir(exe_dir)
    }

    /// A host searching only the paths added with [`add_path`](PluginHost::add_path).
    pub fn isolated() -> PluginHost {
        PluginHost {
            explicit: Vec::new(),
            env_path: None,
            exe_dir: None,
            by_type: Mutex::new(BTreeMap::new()),
        }
    }

    /// Uses `value` as the value of `$SNAPTREE_BACKEND_PATH` (`None`: unset).
    pub fn with_env_path(mut self, value: Option<OsString>) -> PluginHost {
        self.env_path = value;
        self
    }

    /// Uses `dir` as the directory of the running executable (`None`: do not search one).
    pub fn with_exe_dir(mut self, dir: Option<PathBuf>) -> PluginHost {
        self.exe_dir = dir;
        self
    }

    /// Adds a directory of plugins or a plugin file, searched before every implicit entry
    /// and after the paths added before it. The path is canonicalised now.
    pub fn add_path(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let given = path.as_ref();
        let canonical = std::fs::canonicalize(given).map_err(|e| Error::Plugin {
            path: given.to_path_buf(),
            reason: format!("cannot be added to the plugin search path: {e}"),
        })?;
        self.explicit.push(canonical);
        Ok(())
    }

    /// The search path as it is now, canonical, without duplicates or missing entries.
    pub fn search_path(&self) -> Vec<SearchEntry> {
        let env = self
            .env_path
            .iter()
            .flat_map(std::env::split_paths)
            .filter(|p| p.is_absolute());
        let candidates = self
            .explicit
            .iter()
            .cloned()
            .map(|p| (p, SearchSource::Explicit))
            .chain(env.map(|p| (p, SearchSource::Environment)))
            .chain(
                self.exe_dir
                    .iter()
                    .cloned()
                    .map(|p| (p, SearchSource::ExecutableDir)),
            );
        let mut seen = BTreeSet::new();
        let mut entries = Vec::new();
        for (path, source) in candidates {
            if let Ok(path) = std::fs::canonicalize(&path)
                && seen.insert(path.clone())
            {
                entries.push(SearchEntry { path, source });
            }
        }
        entries
    }

    /// The plugin of a backend type, loaded on first use. The first entry of the search
    /// path that has one wins: a directory's `libsnaptree_backend_<type>.so`, or an added
    /// file of that name or declaring that name.
    pub fn plugin(&self, backend_type: &str) -> Result<Plugin> {
        validate_backend_type(backend_type)?;
        let mut by_type = self.by_type.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = by_type.get(backend_type) {
            return Ok(*p);
        }
        let wanted = plugin_file_name(backend_type);
        let path = self.search_path();
        for entry in &path {
            let plugin = if entry.path.is_dir() {
                let candidate = entry.path.join(&wanted);
                if !candidate.exists() {
                    continue;
                }
                Plugin::load(&candidate)?
            } else if entry.path.file_name().is_some_and(|n| n == wanted.as_str()) {
                Plugin::load(&entry.path)?
            } else if entry
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(type_of_file_name)
                .is_none()
            {
                // A file added under another name: it counts if it declares this type.
                // One that cannot load is reported by `list`, not here.
                match Plugin::load(&entry.path) {
                    Ok(p) if p.name() == backend_type => p,
                    _ => continue,
                }
            } else {
                continue;
            };
            if plugin.name() != backend_type {
                return Err(Error::Plugin {
                    path: plugin.path().to_path_buf(),
                    reason: format!(
                        "declares backend '{}', but its file name says '{backend_type}'",
                        plugin.name()
                    ),
                });
            }
            by_type.insert(backend_type.to_string(), plugin);
            return Ok(plugin);
        }
        let searched: Vec<String> = path.iter().map(|e| e.path.display().to_string()).collect();
        Err(Error::Plugin {
            path: PathBuf::from(wanted),
            reason: if searched.is_empty() {
                format!("no plugin for backend '{backend_type}': the plugin search path is empty")
            } else {
                format!(
                    "no plugin for backend '{backend_type}' in the search path {}",
                    searched.join(":")
                )
            },
        })
    }

    /// The plugin of a backend type as an engine provider.
    pub fn provider_for(&self, backend_type: &str) -> Result<Arc<dyn BackendProvider>> {
        Ok(self.plugin(backend_type)?.provider())
    }

    /// Every plugin file on the search path (`libsnaptree_backend_*.so` in directories,
    /// and every added file), in search order, each with its status. Every file is loaded
    /// to tell; a broken one shows its error and hides nothing.
    pub fn list(&self) -> Vec<PluginStatus> {
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in self.search_path() {
            if entry.path.is_dir() {
                let Ok(dir) = std::fs::read_dir(&entry.path) else {
                    continue;
                };
                let mut found: Vec<PathBuf> = dir
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .and_then(type_of_file_name)
                            .is_some()
                    })
                    .collect();
                found.sort();
                files.extend(found);
            } else {
                files.push(entry.path);
            }
        }
        let mut seen = BTreeSet::new();
        let mut active_types = BTreeSet::new();
        let mut statuses = Vec::new();
        for file in files {
            // The type comes from the name found on the search path, which may be a
            // symbolic link to a file named otherwise.
            let file_type = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(type_of_file_name)
                .map(str::to_string);
            let path = std::fs::canonicalize(&file).unwrap_or(file);
            if !seen.insert(path.clone()) {
                continue;
            }
            let plugin = Plugin::load(&path);
            let claimed = file_type
                .clone()
                .or_else(|| plugin.as_ref().ok().map(|p| p.name().to_string()));
            let active = plugin.is_ok() && claimed.is_some_and(|t| active_types.insert(t));
            statuses.push(PluginStatus {
                path,
                file_type,
                plugin,
                active,
            });
        }
        statuses
    }
}

impl BackendProvider for PluginHost {
    /// Opens the domain with the plugin its `type` attribute names.
    fn open(&self, domain: &DomainXml, xml: &str) -> Result<Box<dyn Backend>> {
        self.plugin(&domain.backend_type)?.open(domain, xml)
    }
}
