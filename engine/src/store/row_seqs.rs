//! [`RowSeqs`]: which stored row each snapshot a plan edits is. Both stores key a
//! snapshot's row by `(domain_id, seq)` and keep no index by uuid or name (schema version
//! 6), so a commit addresses rows by the sequence numbers of the tree the plan was made
//! on, and gives an added snapshot the number that tree will give it when the edits are
//! applied. Statements name the uuid too (`... AND uuid = ?`): a row that is not the one
//! the tree expects changes nothing and fails the commit, whatever the cause.

use std::collections::HashMap;

use uuid::Uuid;

use crate::plan::Edit;
use crate::tree::SnapshotTree;

/// The snapshot whose stored row an edit changes in place or deletes (an added snapshot's
/// row is new; the other edits change other tables).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn row_edited(edit: &Edit) -> Option<&Uuid> {
    match edit {
        Edit::Remove { snapshot }
        | Edit::SetParent { snapshot, .. }
        | Edit::Rename { snapshot, .. }
        | Edit::SetState { snapshot, .. }
        | Edit::SetOnRetired { snapshot, .. }
        | Edit::SetPinned { snapshot, .. }
        | Edit::Redefine { snapshot, .. } => Some(snapshot),
        Edit::Add { .. }
        | Edit::SetCurrent { .. }
        | Edit::Retire { .. }
        | Edit::ClearRetired
        | Edit::Unretire { .. }
        | Edit::SetRetiredParent { .. }
        | Edit::SetLiveOnRetired { .. } => None,
    }
}

/// The sequence numbers of the snapshots one plan's edits name, in edit order.
pub(crate) struct RowSeqs<'a> {
    before: &'a SnapshotTree,
    next: u64,
    added: HashMap<Uuid, u64>,
}

impl<'a> RowSeqs<'a> {
    /// Numbers for a plan made on `before`, the tree as loaded at the generation the
    /// commit checks.
    pub(crate) fn new(before: &'a SnapshotTree) -> RowSeqs<'a> {
        RowSeqs {
            before,
            next: before.next_seq(),
            added: HashMap::new(),
        }
    }

    /// The number of a snapshot the plan adds: what `SnapshotTree::insert` gives it when
    /// the plan's edits are applied to the tree in order.
    pub(crate) fn add(&mut self, uuid: Uuid) -> Option<i64> {
        let seq = self.next;
        self.next = self.next.checked_add(1)?;
        self.added.insert(uuid, seq);
        i64::try_from(seq).ok()
    }

    /// The number of a snapshot the tree holds or the plan added, or None for one neither
    /// knows (a plan that does not fit its tree: the commit fails).
    pub(crate) fn of(&self, uuid: &Uuid) -> Option<i64> {
        self.added
            .get(uuid)
            .copied()
            .or_else(|| self.before.creation_seq(uuid))
            .and_then(|seq| i64::try_from(seq).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PowerState, Snapshot};

    fn snap(i: u128) -> Snapshot {
        Snapshot {
            uuid: Uuid::from_u128(i),
            name: format!("s{i}"),
            description: String::new(),
            creation_date: 0,
            state: PowerState::Shutoff,
            expires: None,
            pinned: false,
        }
    }

    #[test]
    fn added_snapshots_get_the_numbers_the_tree_gives_them() {
        let mut tree = SnapshotTree::new();
        tree.insert(snap(1), None).expect("insert");
        tree.insert(snap(2), Some(snap(1).uuid)).expect("insert");
        tree.remove(&snap(2).uuid).expect("remove");
        let mut seqs = RowSeqs::new(&tree);
        let planned = [seqs.add(snap(3).uuid), seqs.add(snap(4).uuid)];
        assert_eq!(
            seqs.of(&snap(3).uuid),
            planned[0],
            "a snapshot added earlier in the plan"
        );
        assert_eq!(seqs.of(&snap(1).uuid), Some(0), "a snapshot of the tree");
        assert_eq!(
            seqs.of(&snap(2).uuid),
            None,
            "a removed snapshot has no row"
        );
        tree.insert(snap(3), None).expect("insert");
        tree.insert(snap(4), None).expect("insert");
        let applied = [3, 4].map(|i| {
            tree.creation_seq(&snap(i).uuid)
                .and_then(|s| i64::try_from(s).ok())
        });
        assert_eq!(
            planned, applied,
            "the numbers the tree gave the added snapshots"
        );
        assert_eq!(
            planned,
            [Some(2), Some(3)],
            "never a removed snapshot's number"
        );
    }
}
