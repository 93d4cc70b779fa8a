//! The physical operations a step is made of, as data: each one a single change (or a short,
//! self-recovering sequence) on one disk, with the files it writes (for the lock check) and,
//! for the reversible ones, the operation that undoes it.
//!
//! Every operation leaves every snapshot's and the live state's *content* as it was, except
//! the ones that are the point of their step (`SwapLive`, `SnapApply` for a revert; `Commit`
//! and `InternalMerge` into the parent for a merge) and a `Commit` into a layer being freed,
//! which only its one dependent sees. That is what makes a step restartable: whatever prefix
//! of it ran before a crash, the disk is in a state from which planning the step again
//! finishes it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::meta::Meta;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::records::Record;

/// The tag under which an internal-mode revert keeps the old live state until the revert
/// can no longer be undone.
pub(crate) const REVERT_STASH: &str = "snaptree-revert-stash";
/// The tag under which an internal-mode merge keeps the live state while it borrows the
/// live state to rebuild the parent's snapshot.
pub(crate) const MERGE_STASH: &str = "snaptree-merge-stash";

/// One physical operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// External create: the live file becomes `layer` and a new empty overlay on it takes the
    /// live file's name. Done as link (live → layer), build `fresh` on the layer, rename
    /// fresh → live, so the live name never disappears and a crash leaves either the old
    /// live file (with a second name, which a re-run recognises by inode) or the finished
    /// state.
    Freeze {
        live: PathBuf,
        layer: PathBuf,
        fresh: PathBuf,
    },
    /// Undoes [`Op::Freeze`], from any point of it.
    Unfreeze {
        live: PathBuf,
        layer: PathBuf,
        fresh: PathBuf,
    },
    /// External revert: a new empty overlay on `backing` takes the live file's name; the old
    /// live file stays reachable as `stash` until the step can no longer be undone.
    SwapLive {
        live: PathBuf,
        backing: PathBuf,
        fresh: PathBuf,
        stash: PathBuf,
    },
    /// Undoes [`Op::SwapLive`], from any point of it.
    Unswap {
        live: PathBuf,
        stash: PathBuf,
        fresh: PathBuf,
    },
    /// `qemu-img rebase` (safe) of `file` from `from` onto `onto`, keeping its content,
    /// between writing and removing the intent record `intent`. Undone, from any point, by
    /// [`Op::RestoreBacking`]: whatever it copied holds `from`'s view.
    SafeRebase {
        file: PathBuf,
        from: Option<PathBuf>,
        onto: Option<PathBuf>,
        intent: PathBuf,
        measure: Option<usize>,
    },
    /// Points `file` back at `from` (an unsafe rebase: only the header changes) and removes
    /// the intent record of the safe rebase this undoes, restoring `file`'s content.
    RestoreBacking {
        file: PathBuf,
        from: Option<PathBuf>,
        intent: PathBuf,
    },
    /// `qemu-img rebase -u`: only correct where the two backings show the same content.
    UnsafeRebase {
        file: PathBuf,
        onto: Option<PathBuf>,
    },
    /// `qemu-img commit top` into its backing `into`.
    Commit {
        top: PathBuf,
        into: PathBuf,
        measure: Option<usize>,
    },
    /// `source` takes `target`'s name (and permissions), atomically.
    Replace { source: PathBuf, target: PathBuf },
    /// Deletes a freed layer (if it exists); its blocks are given back off the step's path
    /// ([`Ctx::free_layer`]).
    Remove { file: PathBuf },
    /// `qemu-img snapshot -c tag`.
    SnapCreate { image: PathBuf, tag: String },
    /// Records the live state as `tag`, replacing a stale `tag` left by an interrupted attempt.
    SnapStash { image: PathBuf, tag: String },
    /// Undoes [`Op::SnapStash`] and whatever was applied since: applies `tag`, deletes it.
    SnapRestore { image: PathBuf, tag: String },
    /// `qemu-img snapshot -a tag`.
    SnapApply { image: PathBuf, tag: String },
    /// `qemu-img snapshot -d tag`, if the tag exists.
    SnapDelete { image: PathBuf, tag: String },
    /// Internal merge: the snapshot tagged `p` takes the content of the one tagged `s`,
    /// which is deleted (see [`merge_internal`]).
    InternalMerge {
        image: PathBuf,
        s: String,
        p: String,
    },
    /// Writes an internal-mode disk's metadata file.
    WriteMeta {
        path: PathBuf,
        meta: Meta,
        previous: Meta,
    },
}

/// Where an operation reports the bytes it copied: a consolidate record of its plan.
pub(crate) type Measured<'a> = &'a mut dyn FnMut(usize, u64);

/// Whether two names are the same file (a hard link, before one of them is renamed over).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

impl Op {
    /// The operation that undoes this one (from any point of it), for operations placed
    /// before a step's point of no return. `None`: nothing to undo, or not reversible.
    pub(crate) fn undo(&self) -> Option<Op> {
        match self {
            Op::Freeze { live, layer, fresh } => Some(Op::Unfreeze {
                live: live.clone(),
                layer: layer.clone(),
                fresh: fresh.clone(),
            }),
            Op::SwapLive {
                live, stash, fresh, ..
            } => Some(Op::Unswap {
                live: live.clone(),
                stash: stash.clone(),
                fresh: fresh.clone(),
            }),
            Op::SafeRebase {
                file, from, intent, ..
            } => Some(Op::RestoreBacking {
                file: file.clone(),
                from: from.clone(),
                intent: intent.clone(),
            }),
            Op::SnapCreate { image, tag } => Some(Op::SnapDelete {
                image: image.clone(),
                tag: tag.clone(),
            }),
            Op::SnapStash { image, tag } => Some(Op::SnapRestore {
                image: image.clone(),
                tag: tag.clone(),
            }),
            Op::WriteMeta {
                path,
                meta,
                previous,
            } => Some(Op::WriteMeta {
                path: path.clone(),
                meta: previous.clone(),
                previous: meta.clone(),
            }),
            // Undone by the SnapStash before it.
            Op::SnapApply { .. } => None,
            _ => None,
        }
    }

    /// Whether the operation may stand before a step's point of no return.
    pub(crate) fn reversible(&self) -> bool {
        matches!(
            self,
            Op::Freeze { .. }
                | Op::SwapLive { .. }
                | Op::SafeRebase { .. }
                | Op::RestoreBacking { .. }
                | Op::SnapCreate { .. }
                | Op::SnapStash { .. }
                | Op::SnapApply { .. }
                | Op::WriteMeta { .. }
        )
    }

    /// The existing images the operation opens for writing: all must be free of other
    /// processes before a step changes anything.
    pub(crate) fn writes(&self) -> Vec<&Path> {
        match self {
            Op::Freeze { live, .. } => vec![live],
            Op::SwapLive { live, backing, .. } => vec![live, backing],
            Op::SafeRebase { file, .. }
            | Op::RestoreBacking { file, .. }
            | Op::UnsafeRebase { file, .. }
            | Op::Remove { file } => vec![file],
            Op::Commit { top, into, .. } => vec![top, into],
            Op::Replace { source, target } => vec![source, target],
            Op::SnapCreate { image, .. }
            | Op::SnapStash { image, .. }
            | Op::SnapApply { image, .. }
            | Op::SnapDelete { image, .. }
            | Op::InternalMerge { image, .. } => vec![image],
            Op::Unfreeze { .. }
            | Op::Unswap { .. }
            | Op::SnapRestore { .. }
            | Op::WriteMeta { .. } => vec![],
        }
        .into_iter()
        .map(PathBuf::as_path)
        .collect()
    }

    /// Runs the operation. `progress` gets the fraction of this operation done.
    pub(crate) fn run(
        &self,
        ctx: Ctx<'_>,
        progress: &mut dyn FnMut(f64),
        measured: Measured<'_>,
    ) -> Result<()> {
        match self {
            Op::Freeze { live, layer, fresh } => {
                ctx.create_dir(layer.parent().unwrap_or(Path::new("/")))?;
                // A leftover of an interrupted attempt: never the live state.
                ctx.remove(fresh)?;
                // The planner only plans a Freeze with an existing layer when the layer is
                // the live file itself: the link of an interrupted attempt.
                if !layer.exists() {
                    ctx.link(live, layer)?;
                }
                ctx.install_overlay(live, fresh, layer, None, || Ok(()))
            }
            Op::Unfreeze { live, layer, fresh } => {
                if layer.exists() {
                    if same_file(layer, live) {
                        // Not renamed over yet: the layer is only a second name.
                        ctx.remove(layer)?;
                    } else {
                        ctx.rename(layer, live)?;
                    }
                }
                remove_leftover(ctx, fresh)
            }
            Op::SwapLive {
                live,
                backing,
                fresh,
                stash,
            } => {
                ctx.create_dir(fresh.parent().unwrap_or(Path::new("/")))?;
                // Leftovers of an interrupted attempt: a half-built overlay, and a live state
                // that this revert discards anyway.
                ctx.remove(fresh)?;
                ctx.remove(stash)?;
                ctx.install_overlay(live, fresh, backing, None, || ctx.link(live, stash))
            }
            Op::Unswap { live, stash, fresh } => {
                if stash.exists() {
                    if same_file(stash, live) {
                        ctx.remove(stash)?;
                    } else {
                        ctx.rename(stash, live)?;
                    }
                }
                remove_leftover(ctx, fresh)
            }
            Op::SafeRebase {
                file,
                from,
                onto,
                intent,
                measure,
            } => {
                let measure = measure.filter(|_| ctx.measuring_moved());
                let before = match measure {
                    Some(_) => ctx.allocated(file)?,
                    None => 0,
                };
                Record::Rebase {
                    file: file.clone(),
                    from: from.clone(),
                }
                .store(ctx, intent)?;
                ctx.rebase_safe(file, onto.as_deref(), progress)?;
                // qemu-img has exited: the rebase is flushed and complete.
                ctx.remove(intent)?;
                if let Some(record) = measure {
                    measured(record, ctx.allocated(file)?.saturating_sub(before));
                }
                Ok(())
            }
            Op::RestoreBacking { file, from, intent } => {
                if file.exists() {
                    ctx.rebase_unsafe(file, from.as_deref())?;
                }
                ctx.remove(intent)
            }
            Op::UnsafeRebase { file, onto } => ctx.rebase_unsafe(file, onto.as_deref()),
            Op::Commit { top, measure, .. } => {
                if let Some(record) = measure.filter(|_| ctx.measuring_moved()) {
                    // A commit copies exactly the clusters the top holds.
                    measured(record, ctx.allocated(top)?);
                }
                ctx.commit(top, progress)
            }
            Op::Replace { source, target } => {
                if target.exists() {
                    ctx.copy_permissions(target, source)?;
                }
                ctx.rename(source, target)
            }
            Op::Remove { file } => ctx.free_layer(file),
            Op::SnapCreate { image, tag } => ctx.snapshot_create(image, tag),
            Op::SnapStash { image, tag } => {
                if ctx.tags(image)?.contains(tag) {
                    ctx.snapshot_delete(image, tag)?;
                }
                ctx.snapshot_create(image, tag)
            }
            Op::SnapRestore { image, tag } => {
                if ctx.tags(image)?.contains(tag) {
                    ctx.snapshot_apply(image, tag)?;
                    ctx.snapshot_delete(image, tag)?;
                }
                Ok(())
            }
            Op::SnapApply { image, tag } => ctx.snapshot_apply(image, tag),
            Op::SnapDelete { image, tag } => {
                if ctx.tags(image)?.contains(tag) {
                    ctx.snapshot_delete(image, tag)?;
                }
                Ok(())
            }
            Op::InternalMerge { image, s, p } => merge_internal(ctx, image, s, p, progress),
            Op::WriteMeta { path, meta, .. } => meta.store(ctx, path),
        }
    }
}

/// Removes a half-built overlay an undone operation may leave; anything but a regular file
/// at that name is not ours to remove (and is what made the operation fail).
fn remove_leftover(ctx: Ctx<'_>, file: &Path) -> Result<()> {
    if file.symlink_metadata().is_ok_and(|m| m.is_file()) {
        ctx.remove(file)?;
    }
    Ok(())
}

/// Makes internal snapshot `p` hold `s`'s content and deletes `s`, keeping the live state.
///
/// qemu-img can neither rename an internal snapshot nor create one from anything but the
/// live state, so the live state is borrowed: (1) stash the live state as [`MERGE_STASH`],
/// (2) apply `s`, (3) delete `p`, (4) create `p` from the live state (now `s`'s content),
/// (5) apply the stash, (6) delete `s`, (7) delete the stash. All of it is cheap: internal
/// snapshots share clusters by reference count, nothing is copied.
///
/// The stash goes last so that, until the step is finished, some tag shows it is under way:
/// the stash until (7), after `s` went at (6). A failure right before deleting `s` with the
/// stash already gone would leave the same tags as before the step, with `p`'s content
/// replaced: the engine would take the step for one that changed nothing and forget it.
///
/// Restart: the stash exists exactly between (1) and (7), and `s` until (6). So on a re-run:
/// no `s` means (1)–(6) are done (only the stash may be left to delete); an existing stash
/// holds the true live state and must not be re-created from the (possibly borrowed) live
/// state; otherwise the live state is the true one (before (1)) and the sequence starts
/// over. Every other command is guarded by the tags present.
fn merge_internal(
    ctx: Ctx<'_>,
    image: &Path,
    s: &str,
    p: &str,
    progress: &mut dyn FnMut(f64),
) -> Result<()> {
    let (s, p) = (s.to_owned(), p.to_owned());
    let tags = ctx.tags(image)?;
    let stashed = tags.iter().any(|t| t == MERGE_STASH);
    if !tags.contains(&s) {
        if stashed {
            ctx.snapshot_delete(image, MERGE_STASH)?;
        }
        return Ok(());
    }
    if !stashed {
        ctx.snapshot_create(image, MERGE_STASH)?;
    }
    progress(0.2);
    ctx.snapshot_apply(image, &s)?;
    if tags.contains(&p) {
        ctx.snapshot_delete(image, &p)?;
    }
    progress(0.4);
    ctx.snapshot_create(image, &p)?;
    progress(0.6);
    ctx.snapshot_apply(image, MERGE_STASH)?;
    ctx.snapshot_delete(image, &s)?;
    progress(0.8);
    ctx.snapshot_delete(image, MERGE_STASH)?;
    progress(1.0);
    Ok(())
}
