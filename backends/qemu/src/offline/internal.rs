//! Internal mode: every snapshot is a qcow2 internal snapshot inside the live file, tagged
//! with the snapshot uuid (qemu-img accepts duplicate tags, so never a user's name), or,
//! for a snapshot adopted from another tool's data (libvirt's, `qemu-img snapshot -c`'s),
//! with the tag the metadata file records for it ([`Disk::tag`]). Internal
//! snapshots do not depend on each other, so only the metadata file records the tree.
//!
//! Each step changes the image first and the metadata file after it, and both changes are
//! guarded by what is already there (a tag present, a uuid recorded), so a re-run after a
//! crash between them finishes the job.

use snaptree_engine::{PhysicalTree, Step, Uuid};

use super::exec::DiskPlan;
use super::meta::Meta;
use super::ops::{MERGE_STASH, Op, REVERT_STASH};
use crate::ctx::Ctx;
use crate::disk::{Disk, Mode};
use crate::error::{Result, error};

/// The internal snapshot tag snaptree gives snapshot `u` it creates: its uuid, never the
/// user's name.
pub(crate) fn tag(u: &Uuid) -> String {
    u.to_string()
}

/// The tag of snapshot `u` on every internal disk of a domain (adoption checks that an
/// adopted tag is on all of them): as the first internal disk records it.
pub(crate) fn domain_tag(disks: &[Disk], u: &Uuid) -> String {
    disks
        .iter()
        .find(|d| d.mode == Mode::Internal)
        .map_or_else(|| tag(u), |d| d.tag(u))
}

/// Plans one step on one internal-mode disk.
pub(crate) fn plan(ctx: Ctx<'_>, disk: &Disk, step: &Step) -> Result<DiskPlan> {
    if matches!(step, Step::Forget { .. }) {
        return Ok(DiskPlan::default());
    }
    let path = disk.meta();
    let meta = Meta::load(&path)?;
    let write = |next: Meta| -> Vec<Op> {
        if next == meta {
            Vec::new()
        } else {
            vec![Op::WriteMeta {
                path: path.clone(),
                meta: next,
                previous: meta.clone(),
            }]
        }
    };
    if matches!(step, Step::DetachLive) {
        // Internal snapshots share clusters by reference count: the live state never
        // depends on them; only the record changes.
        return Ok(DiskPlan {
            reversible: write(meta.with_live(None)),
            ..DiskPlan::default()
        });
    }
    let image = disk.live.clone();
    let tags = ctx.tags(&image)?;
    let has = |u: &Uuid| tags.contains(&disk.tag(u));
    let mut plan = DiskPlan::default();
    match step {
        // Restart: the tag is created only if missing, then recorded only if unrecorded.
        Step::Create { snapshot, .. } => {
            if meta.holds_other(*snapshot) {
                return Err(holds_other(disk, *snapshot));
            }
            if !has(snapshot) {
                plan.reversible.push(Op::SnapCreate {
                    image,
                    tag: disk.tag(snapshot),
                });
            }
            plan.reversible.extend(write(meta.created(*snapshot)));
        }
        // The old live state is stashed so the revert can be undone until it is complete.
        // Restart: a stale stash holds a live state the revert discards anyway.
        Step::Revert { snapshot, .. } => {
            if !has(snapshot) {
                return Err(error(format!(
                    "{}: no internal snapshot tagged {snapshot}",
                    disk.describe()
                )));
            }
            plan.reversible.push(Op::SnapStash {
                image: image.clone(),
                tag: REVERT_STASH.into(),
            });
            plan.reversible.push(Op::SnapApply {
                image: image.clone(),
                tag: disk.tag(snapshot),
            });
            plan.reversible
                .extend(write(meta.with_live(Some(*snapshot))));
            plan.last.push(Op::SnapDelete {
                image,
                tag: REVERT_STASH.into(),
            });
        }
        // Freeing: delete the tag if present, then give S's dependents to S's parent.
        Step::DiscardLeaf { snapshot }
        | Step::Consolidate { snapshot }
        | Step::MergeIntoParent {
            snapshot,
            parent: None,
        } => {
            if has(snapshot) {
                plan.last.push(Op::SnapDelete {
                    image,
                    tag: disk.tag(snapshot),
                });
            }
            let heir = meta.parents.get(snapshot).copied().flatten();
            plan.last.extend(write(meta.removed(*snapshot, heir)));
        }
        Step::MergeIntoParent {
            snapshot,
            parent: Some(p),
        } => {
            let mid_merge = tags.iter().any(|t| t == MERGE_STASH);
            // Without `s` but with the stash, only the stash is left to delete.
            if has(snapshot) || mid_merge {
                if !has(p) && !mid_merge {
                    return Err(error(format!(
                        "{}: no internal snapshot tagged {p}",
                        disk.describe()
                    )));
                }
                plan.last.push(Op::InternalMerge {
                    image,
                    s: disk.tag(snapshot),
                    p: disk.tag(p),
                });
            }
            plan.last.extend(write(meta.removed(*snapshot, Some(*p))));
        }
        Step::DetachLive | Step::Forget { .. } => {}
    }
    Ok(plan)
}

/// The physical tree of an internal-mode disk: the metadata file, checked against the tags
/// in the image so that a snapshot recorded but not stored (or the reverse) is reported.
/// Tags that are not snapshot uuids belong to someone else (snapshots taken with other
/// tools) and are left alone; a stash tag means a step was interrupted.
pub(crate) fn physical(ctx: Ctx<'_>, disk: &Disk) -> Result<PhysicalTree> {
    physical_of(disk, &ctx.tags(&disk.live)?)
}

/// As [`physical`], with the image's tags read elsewhere (from a running QEMU in live mode).
pub(crate) fn physical_of(disk: &Disk, tags: &[String]) -> Result<PhysicalTree> {
    let meta = Meta::load(&disk.meta())?;
    if let Some(stash) = tags
        .iter()
        .find(|t| *t == REVERT_STASH || *t == MERGE_STASH)
    {
        return Err(error(format!(
            "{}: internal snapshot {stash} is left by an interrupted step",
            disk.describe()
        )));
    }
    // Ours: the uuid tags, and the adopted snapshots still recorded whose tags are there
    // (an adopted tag the record no longer lists is someone else's again).
    let adopted: Vec<&String> = meta.names.values().collect();
    let mut ours: Vec<Uuid> = tags
        .iter()
        .filter(|t| !adopted.contains(t))
        .filter_map(|t| own_tag(t))
        .chain(
            meta.names
                .iter()
                .filter(|(u, t)| meta.parents.contains_key(u) && tags.contains(t))
                .map(|(u, _)| *u),
        )
        .collect();
    ours.sort();
    ours.dedup();
    let recorded: Vec<Uuid> = meta.parents.keys().copied().collect();
    if ours != recorded {
        return Err(error(format!(
            "{}: the image holds internal snapshots {ours:?} but {} records {recorded:?}",
            disk.describe(),
            disk.meta().display()
        )));
    }
    Ok(meta.physical())
}

/// The snapshot a tag names, if it is one of ours (a uuid written as [`tag`] writes it).
fn own_tag(t: &str) -> Option<Uuid> {
    Uuid::parse_str(t).ok().filter(|u| tag(u) == t)
}

/// A create of `n` on a disk that holds an earlier snapshot `n` the live state does not
/// derive from: taking that data as the new snapshot's would lose the live state's.
pub(crate) fn holds_other(disk: &Disk, n: Uuid) -> crate::error::QemuError {
    error(format!(
        "{}: internal snapshot {n} already exists and the live state does not derive from it (an earlier snapshot's data, left by a lost state store?); adopt it with REDEFINE, or create the snapshot with another uuid",
        disk.describe()
    ))
}
