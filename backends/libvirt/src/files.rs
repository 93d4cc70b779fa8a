//! Files the plugin removes itself (merged-away overlays), for the offline and the live delete.

use snaptree_sdk::{PluginError, PluginResult};

/// Removes a file that may already be gone.
pub(crate) fn remove(path: &std::path::Path) -> PluginResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PluginError::backend(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}
