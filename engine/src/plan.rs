//! Plans: what an operation will do, as data. A plan is journaled before its first
//! physical step, printed by `--dry-run`, and property-tested without a backend.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{PowerState, Snapshot};
use crate::tree::SnapshotTree;

/// How a delete treats the snapshot's data and its relatives (SEMANTICS.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeleteMode {
    /// No flag: leave the metadata, keep the data where it is, re-parent the children.
    Retire,
    /// Merge into the parent; refused when the parent has other children.
    Merge,
    /// Merge into the parent after discarding the siblings and their descendants.
    MergeForce,
    /// Discard a snapshot that has no children.
    Discard,
    /// Discard the snapshot and all its descendants.
    DiscardForce,
    /// Remove the snapshot, pushing its data into whatever depended on it.
    Consolidate,
    /// Discard every descendant, keep the snapshot.
    ChildrenOnly,
}

impl DeleteMode {
    /// Every mode.
    pub const ALL: [DeleteMode; 7] = [
        DeleteMode::Retire,
        DeleteMode::Merge,
        DeleteMode::MergeForce,
        DeleteMode::Discard,
        DeleteMode::DiscardForce,
        DeleteMode::Consolidate,
        DeleteMode::ChildrenOnly,
    ];

    /// The flag's name as in the proposal (`MERGE_FORCE`), or `RETIRE` for no flag.
    pub fn flag_name(self) -> &'static str {
        match self {
            DeleteMode::Retire => "RETIRE",
            DeleteMode::Merge => "MERGE",
            DeleteMode::MergeForce => "MERGE_FORCE",
            DeleteMode::Discard => "DISCARD",
            DeleteMode::DiscardForce => "DISCARD_FORCE",
            DeleteMode::Consolidate => "CONSOLIDATE",
            DeleteMode::ChildrenOnly => "CHILDREN_ONLY",
        }
    }
}

/// What the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Take a snapshot of the live state.
    Create {
        /// The new snapshot's name.
        name: String,
    },
    /// Make the live state a snapshot's content.
    Revert {
        /// The snapshot.
        snapshot: Uuid,
        /// A power state forced by a flag instead of the snapshot's own.
        force_state: Option<PowerState>,
    },
    /// KEEP_LIVE revert (SEMANTICS.md §7.4): snapshot the live state as `keep`, then
    /// revert to `snapshot`, as one journaled plan.
    RevertKeepLive {
        /// The snapshot reverted to.
        snapshot: Uuid,
        /// A power state forced by a flag instead of the snapshot's own.
        force_state: Option<PowerState>,
        /// The uuid of the snapshot that keeps the live state.
        keep: Uuid,
        /// Its name.
        keep_name: String,
    },
    /// Pin or unpin a snapshot: `prune` never deletes a pinned one. Metadata only.
    Pin {
        /// The snapshot.
        snapshot: Uuid,
        /// Pinned after the operation.
        pinned: bool,
    },
    /// Rename a snapshot.
    Rename {
        /// The snapshot.
        snapshot: Uuid,
        /// The new name.
        new_name: String,
    },
    /// Delete a snapshot in a mode.
    Delete {
        /// The snapshot.
        snapshot: Uuid,
        /// The mode.
        mode: DeleteMode,
    },
    /// Delete every snapshot.
    DeleteAll,
    /// Free every retired snapshot's data (SEMANTICS.md §7.2).
    Reclaim,
    /// Record where retired data is stored, learned from the backend (metadata written
    /// before schema version 3 lacks it). No physical step.
    RecordLayout,
    /// REDEFINE (SEMANTICS.md §7.3): import a snapshot's metadata. A new snapshot's data
    /// is adopted by the backend first ([`Plan::adoption`]); an existing one (same name,
    /// uuid and parent) has its description, creation date and state replaced.
    Redefine {
        /// The snapshot.
        snapshot: Uuid,
        /// Its name.
        name: String,
        /// Its parent.
        parent: Option<Uuid>,
        /// Whether the snapshot is new, so the backend adopts its data.
        adopt: bool,
        /// Whether it becomes current (the CURRENT flag).
        current: bool,
    },
}

impl Operation {
    /// The operation in words for messages and listings ("delete (MERGE) of snapshot
    /// 'b'"), naming snapshots as `tree` knows them: pass the tree before the operation,
    /// which is what every read shows while it is pending.
    pub fn describe(&self, tree: &crate::tree::SnapshotTree) -> String {
        let name = |u: &Uuid| match tree.get(u) {
            Some(s) => format!("'{}'", s.name),
            None => u.to_string(),
        };
        match self {
            Operation::Create { name } => format!("create of snapshot '{name}'"),
            Operation::Revert { snapshot, .. } => format!("revert to snapshot {}", name(snapshot)),
            Operation::RevertKeepLive {
                snapshot,
                keep_name,
                ..
            } => format!(
                "revert to snapshot {} keeping the live state as '{keep_name}'",
                name(snapshot)
            ),
            Operation::Pin {
                snapshot,
                pinned: true,
            } => format!("pin of snapshot {}", name(snapshot)),
            Operation::Pin { snapshot, .. } => format!("unpin of snapshot {}", name(snapshot)),
            Operation::Rename { snapshot, new_name } => {
                format!("rename of snapshot {} to '{new_name}'", name(snapshot))
            }
            Operation::Delete {
                snapshot,
                mode: DeleteMode::Retire,
            } => format!("delete of snapshot {}", name(snapshot)),
            Operation::Delete { snapshot, mode } => {
                format!(
                    "delete ({}) of snapshot {}",
                    mode.flag_name(),
                    name(snapshot)
                )
            }
            Operation::DeleteAll => "delete-all".to_string(),
            Operation::Reclaim => "reclaim of retired snapshots' data".to_string(),
            Operation::RecordLayout => "recording where retired data is stored".to_string(),
            Operation::Redefine { name, .. } => format!("redefine of snapshot '{name}'"),
        }
    }
}

/// The kind of a physical step, used for capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StepKind {
    /// `create`.
    Create = 0,
    /// `revert`.
    Revert = 1,
    /// `discard_leaf`.
    DiscardLeaf = 2,
    /// `merge_into_parent`.
    MergeIntoParent = 3,
    /// `consolidate`.
    Consolidate = 4,
    /// `detach_live`.
    DetachLive = 5,
    /// `forget`.
    Forget = 6,
}

impl StepKind {
    /// Every kind, in ABI order.
    pub const ALL: [StepKind; 7] = [
        StepKind::Create,
        StepKind::Revert,
        StepKind::DiscardLeaf,
        StepKind::MergeIntoParent,
        StepKind::Consolidate,
        StepKind::DetachLive,
        StepKind::Forget,
    ];

    /// The step's name as in SEMANTICS.md §4.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Create => "create",
            StepKind::Revert => "revert",
            StepKind::DiscardLeaf => "discard_leaf",
            StepKind::MergeIntoParent => "merge_into_parent",
            StepKind::Consolidate => "consolidate",
            StepKind::DetachLive => "detach_live",
            StepKind::Forget => "forget",
        }
    }

    /// What the step does, in words for error messages ("merge snapshots").
    pub fn verb(self) -> &'static str {
        match self {
            StepKind::Create => "create snapshots",
            StepKind::Revert => "revert to snapshots",
            StepKind::DiscardLeaf => "discard snapshots",
            StepKind::MergeIntoParent => "merge snapshots",
            StepKind::Consolidate => "consolidate snapshots",
            StepKind::DetachLive => "detach the live state from snapshots",
            StepKind::Forget => "retire snapshots",
        }
    }
}

/// One physical step (SEMANTICS.md §4). The engine has made its precondition true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Freeze the live state as the new snapshot's content, on every disk atomically.
    Create {
        /// The new snapshot.
        snapshot: Uuid,
        /// Its parent (the current snapshot), if any.
        parent: Option<Uuid>,
        /// Its name, for backends that show one (the data is keyed by uuid).
        name: String,
        /// Its description.
        description: String,
    },
    /// Make the live state equal the snapshot's content.
    Revert {
        /// The snapshot.
        snapshot: Uuid,
        /// The power state the domain is left in.
        state: PowerState,
    },
    /// Free a snapshot that has no children.
    DiscardLeaf {
        /// The snapshot.
        snapshot: Uuid,
    },
    /// Make the parent's content the snapshot's, then free the snapshot.
    MergeIntoParent {
        /// The snapshot.
        snapshot: Uuid,
        /// Its parent; None means the base image absorbs it.
        parent: Option<Uuid>,
    },
    /// Free the snapshot, pushing its data into every dependent.
    Consolidate {
        /// The snapshot.
        snapshot: Uuid,
    },
    /// Make the live state independent of every snapshot's data.
    DetachLive,
    /// Notice that a snapshot was retired; change no data.
    Forget {
        /// The snapshot.
        snapshot: Uuid,
    },
}

impl Step {
    /// The step's kind.
    pub fn kind(&self) -> StepKind {
        match self {
            Step::Create { .. } => StepKind::Create,
            Step::Revert { .. } => StepKind::Revert,
            Step::DiscardLeaf { .. } => StepKind::DiscardLeaf,
            Step::MergeIntoParent { .. } => StepKind::MergeIntoParent,
            Step::Consolidate { .. } => StepKind::Consolidate,
            Step::DetachLive => StepKind::DetachLive,
            Step::Forget { .. } => StepKind::Forget,
        }
    }

    /// The snapshot the step is about, if one.
    pub fn snapshot(&self) -> Option<Uuid> {
        match self {
            Step::Create { snapshot, .. }
            | Step::Revert { snapshot, .. }
            | Step::DiscardLeaf { snapshot }
            | Step::MergeIntoParent { snapshot, .. }
            | Step::Consolidate { snapshot }
            | Step::Forget { snapshot } => Some(*snapshot),
            Step::DetachLive => None,
        }
    }
}

/// The `adopt(S, parent)` step of a REDEFINE (SEMANTICS.md §7.3): the backend checks that
/// it holds data for the snapshot with that parent and records how to find it; it changes
/// no data. It runs before a plan's other steps (a REDEFINE has none). It is not a
/// [`Step`] variant so that backends written against ABI 1.0's steps keep matching
/// [`Step`] exhaustively: a backend offers it through [`crate::Backend::adopt`], and the
/// engine refuses a REDEFINE up front on a backend that does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The snapshot whose data is adopted.
    pub snapshot: Uuid,
    /// Its parent, whose data the snapshot's is stored on (None: the base).
    pub parent: Option<Uuid>,
    /// Its name: backends whose data was made by other tools find it by name (libvirt
    /// and `qemu-img snapshot -c` tag internal snapshots by name).
    pub name: String,
}

/// One change to the metadata. A plan's edits, applied in order, turn the tree before the
/// operation into the tree after it; the store writes exactly these rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Edit {
    /// Add a snapshot under a parent.
    Add {
        /// The snapshot.
        snapshot: Snapshot,
        /// Its parent.
        parent: Option<Uuid>,
    },
    /// Remove a snapshot that has no children (any more).
    Remove {
        /// The snapshot.
        snapshot: Uuid,
    },
    /// Move a snapshot under another parent.
    SetParent {
        /// The snapshot.
        snapshot: Uuid,
        /// The new parent.
        parent: Option<Uuid>,
    },
    /// Rename a snapshot.
    Rename {
        /// The snapshot.
        snapshot: Uuid,
        /// The new name.
        name: String,
    },
    /// Change the power state recorded in a snapshot (P under MERGE).
    SetState {
        /// The snapshot.
        snapshot: Uuid,
        /// The new state.
        state: PowerState,
    },
    /// Change `current`.
    SetCurrent {
        /// The new current snapshot.
        current: Option<Uuid>,
    },
    /// Remember a retired snapshot's uuid.
    Retire {
        /// The snapshot.
        snapshot: Uuid,
    },
    /// Forget every retired uuid: their data has been freed.
    ClearRetired,
    /// Forget one retired uuid: its data has been freed.
    Unretire {
        /// The retired snapshot.
        snapshot: Uuid,
    },
    /// Record where a retired layer is physically stored.
    SetRetiredParent {
        /// The retired snapshot.
        snapshot: Uuid,
        /// Its physical parent (a snapshot or retired layer; None: the base).
        parent: Option<Uuid>,
    },
    /// Record the retired layer a snapshot is physically stored on.
    SetOnRetired {
        /// The snapshot.
        snapshot: Uuid,
        /// The retired layer; None: directly on its parent.
        retired: Option<Uuid>,
    },
    /// Record the retired layer the live state is physically stored on.
    SetLiveOnRetired {
        /// The retired layer; None: directly on `current`.
        retired: Option<Uuid>,
    },
    /// Pin or unpin a snapshot (SEMANTICS.md §7.5).
    SetPinned {
        /// The snapshot.
        snapshot: Uuid,
        /// Pinned after the edit.
        pinned: bool,
    },
    /// Replace what a REDEFINE of an existing snapshot replaces (SEMANTICS.md §7.3).
    Redefine {
        /// The snapshot.
        snapshot: Uuid,
        /// Its new description.
        description: String,
        /// Its new creation date, Unix seconds.
        creation_date: i64,
        /// Its new power state.
        state: PowerState,
    },
}

/// An operation decided: its physical steps and its metadata change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// What was asked.
    pub operation: Operation,
    /// Physical steps, in order.
    pub steps: Vec<Step>,
    /// Metadata edits, applied after every step has succeeded.
    pub edits: Vec<Edit>,
}

impl Plan {
    /// The plan with `current` moved before any snapshot is removed. Plans journaled by
    /// older versions moved it last, which the tree now refuses (removing the current
    /// snapshot is a planner bug); the edits' target existed before the plan, so moving
    /// the final `SetCurrent` first gives the same tree.
    pub fn current_first(&self) -> Plan {
        let mut plan = self.clone();
        let first_remove = plan
            .edits
            .iter()
            .position(|e| matches!(e, Edit::Remove { .. }));
        let last_set = plan
            .edits
            .iter()
            .rposition(|e| matches!(e, Edit::SetCurrent { .. }));
        if let (Some(r), Some(c)) = (first_remove, last_set)
            && c > r
        {
            let edit = plan.edits.remove(c);
            plan.edits.retain(|e| !matches!(e, Edit::SetCurrent { .. }));
            plan.edits.insert(0, edit);
        }
        plan
    }

    /// The uuids of snapshots the plan removes from the tree, in order.
    pub fn removed(&self) -> Vec<Uuid> {
        self.edits
            .iter()
            .filter_map(|e| match e {
                Edit::Remove { snapshot } => Some(*snapshot),
                _ => None,
            })
            .collect()
    }

    /// The `adopt` step a REDEFINE of a new snapshot runs before anything else.
    pub fn adoption(&self) -> Option<Adoption> {
        match &self.operation {
            Operation::Redefine {
                snapshot,
                name,
                parent,
                adopt: true,
                ..
            } => Some(Adoption {
                snapshot: *snapshot,
                parent: *parent,
                name: name.clone(),
            }),
            _ => None,
        }
    }

    /// How many actions the executor runs and the journal counts: the adoption, if
    /// any, and the steps.
    pub fn step_count(&self) -> usize {
        self.steps.len() + usize::from(self.adoption().is_some())
    }

    /// Where `current` ends up, if the plan moves it.
    pub fn new_current(&self) -> Option<Option<Uuid>> {
        self.edits.iter().rev().find_map(|e| match e {
            Edit::SetCurrent { current } => Some(*current),
            _ => None,
        })
    }
}

/// Applies `edits` when they remove every snapshot and otherwise only record retired
/// layers and clear `current` (delete-all, a discard of every root with all below it),
/// with one [`SnapshotTree::remove_all`] instead of a removal per snapshot: a removal
/// updates five indexes, which was a quarter of deleting 100,000 snapshots. None when the
/// edits are of another kind, or when their removals would fail in order (the edits are
/// then applied one by one, which reports the failure). An `Unretire` or
/// `SetRetiredParent` of a uuid that is not retired fails here as it does one by one,
/// with the removals not yet made: callers apply plans to a copy, or reload after an
/// error, so the partial tree is never used.
///
/// The other edits allowed here read and write no snapshot, so they give the same result
/// before the removals as between them; `current` is checked where the removals begin.
fn apply_emptying(tree: &mut SnapshotTree, edits: &[Edit]) -> Option<Result<()>> {
    let mut removals = Vec::new();
    let mut current_cleared = tree.current().is_none();
    for edit in edits {
        match edit {
            Edit::Remove { snapshot } => {
                if !current_cleared {
                    return None;
                }
                removals.push(*snapshot);
            }
            Edit::SetCurrent { current: None } => current_cleared = true,
            Edit::Retire { .. }
            | Edit::Unretire { .. }
            | Edit::ClearRetired
            | Edit::SetRetiredParent { .. }
            | Edit::SetLiveOnRetired { .. } => {}
            _ => return None,
        }
    }
    if removals.len() < 2 || !tree.removes_all_in_order(&removals) {
        return None;
    }
    let applied = edits
        .iter()
        .filter(|e| !matches!(e, Edit::Remove { .. }))
        .try_for_each(|edit| apply_edit(tree, edit));
    Some(applied.and_then(|()| tree.remove_all()))
}

/// Applies a plan's edits to a tree. Used after the physical steps succeeded, by the
/// store's recovery, and by tests.
pub fn apply_edits(tree: &mut SnapshotTree, edits: &[Edit]) -> Result<()> {
    if let Some(applied) = apply_emptying(tree, edits) {
        return applied;
    }
    edits.iter().try_for_each(|edit| apply_edit(tree, edit))
}

/// Applies one edit.
fn apply_edit(tree: &mut SnapshotTree, edit: &Edit) -> Result<()> {
    match edit {
        Edit::Add { snapshot, parent } => tree.insert(snapshot.clone(), *parent)?,
        Edit::Remove { snapshot } => {
            tree.remove(snapshot)?;
        }
        Edit::SetParent { snapshot, parent } => tree.set_parent(snapshot, *parent)?,
        Edit::Rename { snapshot, name } => tree.rename(snapshot, name)?,
        Edit::SetState { snapshot, state } => tree.set_state(snapshot, *state)?,
        Edit::SetCurrent { current } => tree.set_current(*current)?,
        Edit::Retire { snapshot } => tree.add_retired(*snapshot),
        Edit::ClearRetired => tree.clear_retired(),
        Edit::Unretire { snapshot } => tree.remove_retired(snapshot)?,
        Edit::SetRetiredParent { snapshot, parent } => {
            tree.set_retired_parent(*snapshot, *parent)?
        }
        Edit::SetOnRetired { snapshot, retired } => tree.set_on_retired(*snapshot, *retired)?,
        Edit::SetLiveOnRetired { retired } => tree.set_live_on_retired(*retired),
        Edit::SetPinned { snapshot, pinned } => tree.set_pinned(snapshot, *pinned)?,
        Edit::Redefine {
            snapshot,
            description,
            creation_date,
            state,
        } => tree.redefine(snapshot, description, *creation_date, *state)?,
    }
    Ok(())
}

#[cfg(test)]
mod emptying_tests {
    use super::*;
    use crate::DeleteMode;
    use crate::tree::tests::snap;

    /// a - b - c - d, b - e, one retired layer under c and one the live state sits on,
    /// `current` on d.
    fn tree() -> (SnapshotTree, Uuid) {
        let mut t = SnapshotTree::new();
        let mut by_name = std::collections::BTreeMap::new();
        for (name, parent) in [
            ("a", None),
            ("b", Some("a")),
            ("c", Some("b")),
            ("d", Some("c")),
            ("e", Some("b")),
        ] {
            let s = snap(name);
            by_name.insert(name, s.uuid);
            t.insert(s, parent.map(|p| by_name[p])).unwrap();
        }
        let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
        t.add_retired(r1);
        t.set_retired_parent(r1, Some(by_name["b"])).unwrap();
        t.set_on_retired(by_name["c"], Some(r1)).unwrap();
        t.add_retired(r2);
        t.set_retired_parent(r2, Some(by_name["d"])).unwrap();
        t.set_live_on_retired(Some(r2));
        t.set_current(Some(by_name["d"])).unwrap();
        (t, by_name["a"])
    }

    /// What the tree shows: names in creation order, current, the retired layers and
    /// their parents, the live state's layer, the next sequence number.
    #[allow(clippy::type_complexity)]
    fn seen(
        t: &SnapshotTree,
    ) -> (
        Vec<String>,
        Option<Uuid>,
        Vec<(Uuid, Option<Option<Uuid>>)>,
        Option<Uuid>,
        u64,
    ) {
        (
            t.iter().map(|s| s.name.clone()).collect(),
            t.current().map(|s| s.uuid),
            t.retired()
                .iter()
                .map(|r| (*r, t.retired_parent(r)))
                .collect(),
            t.live_on_retired(),
            t.next_seq(),
        )
    }

    fn one_by_one(t: &mut SnapshotTree, edits: &[Edit]) -> Result<()> {
        edits
            .iter()
            .try_for_each(|e| apply_edits(t, std::slice::from_ref(e)))
    }

    #[test]
    fn a_plan_that_empties_the_tree_gives_what_its_edits_one_by_one_give() {
        let (t, root) = tree();
        let plans = [
            crate::planner::plan_delete_all(&t).unwrap(),
            crate::planner::plan_delete(&t, "vm", &root, DeleteMode::DiscardForce).unwrap(),
        ];
        for plan in plans {
            let mut fast = t.clone();
            assert!(
                apply_emptying(&mut fast, &plan.edits).is_some_and(|r| r.is_ok()),
                "expected the {:?} plan applied at once: {:?}",
                plan.operation,
                plan.edits
            );
            let mut slow = t.clone();
            one_by_one(&mut slow, &plan.edits).unwrap();
            assert!(fast.is_empty(), "expected no snapshot left");
            assert_eq!(
                seen(&fast),
                seen(&slow),
                "expected the same tree either way ({:?})",
                plan.operation
            );
            // The tree is usable afterwards: a new snapshot gets a number past every old one.
            fast.insert(snap("again"), None).unwrap();
            assert_eq!(
                fast.creation_seq(&fast.iter().next().unwrap().uuid),
                Some(slow.next_seq())
            );
        }
    }

    #[test]
    fn removals_in_an_order_one_by_one_refuses_are_refused_the_same_way() {
        let (t, _) = tree();
        let plan = crate::planner::plan_delete_all(&t).unwrap();
        let mut edits = plan.edits.clone();
        // A parent before its child; then `current` removed while current; then a
        // snapshot twice instead of one of them.
        let first = edits
            .iter()
            .position(|e| matches!(e, Edit::Remove { .. }))
            .unwrap();
        let last = edits
            .iter()
            .rposition(|e| matches!(e, Edit::Remove { .. }))
            .unwrap();
        edits.swap(first, last);
        let without_clear: Vec<Edit> = plan
            .edits
            .iter()
            .filter(|e| !matches!(e, Edit::SetCurrent { .. }))
            .cloned()
            .collect();
        let mut twice = plan.edits.clone();
        twice[last] = twice[first].clone();
        for (what, edits) in [
            ("parent first", edits),
            ("current kept", without_clear),
            ("one twice", twice),
        ] {
            let mut fast = t.clone();
            assert!(
                apply_emptying(&mut fast, &edits).is_none(),
                "{what}: expected no emptying at once"
            );
            let mut whole = t.clone();
            let mut slow = t.clone();
            assert_eq!(
                apply_edits(&mut whole, &edits).is_err(),
                one_by_one(&mut slow, &edits).is_err(),
                "{what}: expected the same outcome as one by one"
            );
            assert!(
                one_by_one(&mut t.clone(), &edits).is_err(),
                "{what}: expected a refusal"
            );
        }
    }
}
