//! [`RowSeqs`]: which stored row each snapshot a plan edits is. Both stores key a
//! snapshot's row by `(domain_id, seq)` and keep no index by uuid or name (schema version
//! 6), so a commit addresses rows by the sequence numbers of the tree the plan was made
//! on, and gives an added snapshot the number that tree will give it when the edits are
//! applied. Statements name the uuid too (`... AND uuid = ?`): a row that is not the one
//! the tree expects changes nothing and fails the commit, whatever the cause.

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;
use uuid::Uuid;

use crate::plan::{Edit, Plan};
use crate::tree::SnapshotTree;

/// The stored rows of one plan's edits, in edit order, on the tree the plan was made on.
///
/// It also refuses, before anything is written, an edit that does not fit that tree as the
/// plan's earlier edits left it: an added snapshot whose uuid or name the domain has, a
/// rename to a taken name, an edit of a snapshot it does not have. The table has no unique
/// index to refuse them any more, and a commit that wrote them would leave rows the loader
/// refuses (a domain nobody could open); the planner never makes such a plan, but a journal
/// entry read back from the store is not the planner's word.
pub(crate) struct RowSeqs<'a> {
    before: &'a SnapshotTree,
    next: u64,
    /// Snapshots the plan added so far: their numbers and names.
    added: HashMap<Uuid, (u64, String), RandomState>,
    /// Snapshots of `before` the plan removed (every one of a delete-all).
    removed: HashSet<Uuid, RandomState>,
    /// Snapshots of `before` the plan renamed, with their names now.
    renamed: HashMap<Uuid, String, RandomState>,
    /// The names the plan gave (adds and renames), to their snapshots.
    named: HashMap<String, Uuid, RandomState>,
}

impl<'a> RowSeqs<'a> {
    /// Rows for `plan`, made on `before`: the tree as loaded at the generation the commit
    /// checks.
    pub(crate) fn new(plan: &Plan, before: &'a SnapshotTree) -> RowSeqs<'a> {
        let removals = plan
            .edits
            .iter()
            .filter(|e| matches!(e, Edit::Remove { .. }))
            .count();
        RowSeqs {
            before,
            next: before.next_seq(),
            added: HashMap::default(),
            removed: HashSet::with_capacity_and_hasher(removals, RandomState::default()),
            renamed: HashMap::default(),
            named: HashMap::default(),
        }
    }

    /// The `seq` of the snapshot row `edit` adds, changes or deletes (None: it touches no
    /// snapshot row), after checking it fits; or why it does not, as words that follow
    /// "the plan". An added snapshot gets the number `SnapshotTree::insert` gives it when
    /// the edits are applied to the tree in order.
    pub(crate) fn row(&mut self, edit: &Edit) -> Result<Option<i64>, String> {
        let seq = match edit {
            Edit::Add { snapshot: s, .. } => {
                if self.exists(&s.uuid) {
                    return Err(format!(
                        "adds snapshot '{}' with uuid {}, which the domain already has",
                        s.name, s.uuid
                    ));
                }
                if self.owner(&s.name).is_some() {
                    return Err(format!(
                        "adds snapshot '{}', a name the domain already has",
                        s.name
                    ));
                }
                let seq = self.next;
                self.next = seq.checked_add(1).ok_or_else(|| {
                    format!("has no sequence number left for snapshot '{}'", s.name)
                })?;
                self.added.insert(s.uuid, (seq, s.name.clone()));
                self.named.insert(s.name.clone(), s.uuid);
                seq
            }
            Edit::Remove { snapshot } => {
                let seq = self.seq(snapshot)?;
                self.release_name(snapshot);
                if self.added.remove(snapshot).is_none() {
                    self.removed.insert(*snapshot);
                    self.renamed.remove(snapshot);
                }
                seq
            }
            Edit::Rename { snapshot, name } => {
                let seq = self.seq(snapshot)?;
                if self.owner(name).is_some_and(|o| o != *snapshot) {
                    return Err(format!(
                        "renames snapshot {snapshot} to '{name}', a name the domain already has"
                    ));
                }
                self.release_name(snapshot);
                match self.added.get_mut(snapshot) {
                    Some(added) => added.1.clone_from(name),
                    None => {
                        self.renamed.insert(*snapshot, name.clone());
                    }
                }
                self.named.insert(name.clone(), *snapshot);
                seq
            }
            Edit::SetParent { snapshot, .. }
            | Edit::SetState { snapshot, .. }
            | Edit::SetOnRetired { snapshot, .. }
            | Edit::SetPinned { snapshot, .. }
            | Edit::Redefine { snapshot, .. } => self.seq(snapshot)?,
            Edit::SetCurrent { .. }
            | Edit::Retire { .. }
            | Edit::ClearRetired
            | Edit::Unretire { .. }
            | Edit::SetRetiredParent { .. }
            | Edit::SetLiveOnRetired { .. } => return Ok(None),
        };
        i64::try_from(seq)
            .map(Some)
            .map_err(|_| format!("numbers a snapshot {seq}, past what the store keeps"))
    }

    fn exists(&self, uuid: &Uuid) -> bool {
        self.added.contains_key(uuid)
            || (self.before.contains(uuid) && !self.removed.contains(uuid))
    }

    /// The number of a snapshot the domain has at this point of the plan.
    fn seq(&self, uuid: &Uuid) -> Result<u64, String> {
        match self.added.get(uuid) {
            Some((seq, _)) => Some(*seq),
            None if self.removed.contains(uuid) => None,
            None => self.before.creation_seq(uuid),
        }
        .ok_or_else(|| format!("edits snapshot {uuid}, which the domain does not have"))
    }

    /// The snapshot named `name` at this point of the plan.
    fn owner(&self, name: &str) -> Option<Uuid> {
        if let Some(u) = self.named.get(name) {
            return Some(*u);
        }
        self.before
            .uuid_by_name(name)
            .filter(|u| !self.removed.contains(u) && !self.renamed.contains_key(u))
    }

    /// Forgets the name the plan gave `uuid`, if any (it is removed or renamed).
    fn release_name(&mut self, uuid: &Uuid) {
        let given = match self.added.get(uuid) {
            Some((_, name)) => Some(name),
            None => self.renamed.get(uuid),
        };
        if let Some(name) = given
            && self.named.get(name) == Some(uuid)
        {
            self.named.remove(name.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PowerState, Snapshot};

    fn snap(i: u128, name: &str) -> Snapshot {
        Snapshot {
            uuid: Uuid::from_u128(i),
            name: name.to_string(),
            description: String::new(),
            creation_date: 0,
            state: PowerState::Shutoff,
            expires: None,
            pinned: false,
        }
    }

    fn add(i: u128, name: &str) -> Edit {
        Edit::Add {
            snapshot: snap(i, name),
            parent: None,
        }
    }

    fn remove(i: u128) -> Edit {
        Edit::Remove {
            snapshot: Uuid::from_u128(i),
        }
    }

    fn rename(i: u128, name: &str) -> Edit {
        Edit::Rename {
            snapshot: Uuid::from_u128(i),
            name: name.to_string(),
        }
    }

    /// A tree of "a" (1) and "b" (2) whose newest snapshot, "gone" (3), was removed: the
    /// next number is 3, past every number the tree has held.
    fn tree() -> SnapshotTree {
        let mut tree = SnapshotTree::new();
        for (i, name) in [(1, "a"), (2, "b"), (3, "gone")] {
            tree.insert(snap(i, name), None).expect("insert");
        }
        tree.remove(&Uuid::from_u128(3)).expect("remove");
        tree
    }

    /// The rows a plan's edits get, or the first refusal.
    fn rows(tree: &SnapshotTree, edits: &[Edit]) -> Result<Vec<Option<i64>>, String> {
        let plan = Plan {
            operation: crate::plan::Operation::RecordLayout,
            steps: Vec::new(),
            edits: edits.to_vec(),
        };
        let mut seqs = RowSeqs::new(&plan, tree);
        edits.iter().map(|e| seqs.row(e)).collect()
    }

    #[test]
    fn added_snapshots_get_the_numbers_the_tree_gives_them() {
        let mut tree = tree();
        let edits = [add(4, "c"), add(5, "d"), rename(4, "e")];
        let planned = rows(&tree, &edits).expect("the plan fits");
        assert_eq!(
            planned,
            [Some(3), Some(4), Some(3)],
            "never a removed snapshot's number; a rename of an added snapshot is its row"
        );
        crate::plan::apply_edits(&mut tree, &edits).expect("apply");
        let applied = [4, 5].map(|i| {
            tree.creation_seq(&Uuid::from_u128(i))
                .and_then(|s| i64::try_from(s).ok())
        });
        assert_eq!(
            applied,
            [planned[0], planned[1]],
            "the numbers the tree gave the added snapshots"
        );
        assert_eq!(
            rows(&tree, &[rename(1, "x")]),
            Ok(vec![Some(0)]),
            "a snapshot of the tree keeps its number"
        );
    }

    #[test]
    fn edits_that_do_not_fit_the_tree_are_refused_before_any_row() {
        let tree = tree();
        let refused = |edits: &[Edit], words: &str| {
            let why = rows(&tree, edits).expect_err(words);
            assert!(why.contains(words), "expected '{words}' in: {why}");
        };
        refused(&[add(1, "new")], "which the domain already has");
        refused(&[add(9, "a")], "a name the domain already has");
        refused(&[rename(2, "a")], "a name the domain already has");
        refused(&[add(9, "n"), add(8, "n")], "a name the domain already has");
        refused(&[add(9, "n"), add(9, "m")], "which the domain already has");
        refused(&[remove(3)], "which the domain does not have");
        refused(&[remove(1), remove(1)], "which the domain does not have");
        refused(
            &[remove(1), rename(1, "z")],
            "which the domain does not have",
        );
        refused(
            &[rename(1, "z"), add(9, "z")],
            "a name the domain already has",
        );
    }

    #[test]
    fn names_and_uuids_freed_earlier_in_the_plan_can_be_taken() {
        let tree = tree();
        for edits in [
            vec![remove(1), add(9, "a")],
            vec![remove(1), add(1, "again")],
            vec![rename(1, "tmp"), rename(2, "a"), rename(1, "b")],
            vec![add(9, "n"), remove(9), add(8, "n")],
            vec![add(9, "n"), rename(9, "m"), add(8, "n")],
            vec![rename(1, "a")],
        ] {
            assert!(
                rows(&tree, &edits).is_ok(),
                "expected {edits:?} to fit: {:?}",
                rows(&tree, &edits)
            );
        }
    }
}
