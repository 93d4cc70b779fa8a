//! The intent record of a safe rebase in progress.
//!
//! `qemu-img rebase` (safe mode) copies clusters into the image, rewrites the backing name in
//! the header, and only then flushes its cached cluster tables, when it closes the image.
//! Measured: killed between the two, the image names its new backing but has lost track of
//! clusters it copied, so it shows the wrong data (see the kill test). The copied clusters
//! themselves hold the old backing's view, so pointing the image back at the old backing
//! (an unsafe rebase, which only writes the header) restores exactly its content before the
//! rebase. This record, written before the rebase and removed after qemu-img has exited,
//! says which image to point back where; the next step on the disk does so first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use snaptree_engine::Result;

use crate::ctx::{Ctx, error};

/// A safe rebase of `file` away from `from` that may not have completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RebaseIntent {
    /// The image being rebased.
    pub(crate) file: PathBuf,
    /// Its backing file before the rebase (`None`: none).
    pub(crate) from: Option<PathBuf>,
}

impl RebaseIntent {
    /// The record at `path`, if there is one.
    pub(crate) fn load(path: &Path) -> Result<Option<RebaseIntent>> {
        match std::fs::read(path) {
            Ok(text) => serde_json::from_slice(&text).map(Some).map_err(|e| {
                error(format!(
                    "{} is not a snaptree rebase record: {e}",
                    path.display()
                ))
            }),
            // No snapshot directory (or something else in its place): no record either.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(error(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Writes the record durably before the rebase starts.
    pub(crate) fn store(&self, ctx: Ctx<'_>, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self)
            .map_err(|e| error(format!("cannot encode {}: {e}", path.display())))?;
        ctx.write_atomic(path, &text)
    }
}
