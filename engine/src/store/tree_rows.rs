//! [`TreeBuilder`]: a domain's tree built from its stored rows, the same way for both
//! stores, one row at a time (a million rows are never held twice).

use uuid::Uuid;

use crate::model::Snapshot;
use crate::tree::SnapshotTree;

/// Collects the rows of a domain's snapshots in `seq` (creation) order, so the tree's
/// sibling order is the stored one. A parent is always older than its children in
/// practice; a row whose parent comes later is attached once every row is in.
pub(crate) struct TreeBuilder {
    tree: SnapshotTree,
    late: Vec<(Uuid, Uuid)>,
    on_retired: Vec<(Uuid, Uuid)>,
    bad: Option<String>,
}

impl TreeBuilder {
    /// A builder for `count` snapshots (so the tree's indexes never grow while loading).
    pub(crate) fn with_capacity(count: i64) -> TreeBuilder {
        TreeBuilder {
            tree: SnapshotTree::with_capacity(usize::try_from(count).unwrap_or(0)),
            late: Vec::new(),
            on_retired: Vec::new(),
            bad: None,
        }
    }

    /// One row: a snapshot, its parent, and the retired layer it is stored on, if any.
    pub(crate) fn add(&mut self, snapshot: Snapshot, parent: Option<Uuid>, on: Option<Uuid>) {
        if let Some(r) = on {
            self.on_retired.push((snapshot.uuid, r));
        }
        let mut parent = parent;
        if let Some(p) = parent
            && !self.tree.contains(&p)
        {
            self.late.push((snapshot.uuid, p));
            parent = None;
        }
        if let Err(e) = self.tree.insert(snapshot, parent) {
            self.bad.get_or_insert_with(|| e.to_string());
        }
    }

    /// The tree, with its current snapshot, retired uuids (with their physical parent
    /// when known) and the retired layer the live state is on; or why the rows are
    /// inconsistent.
    pub(crate) fn finish(
        self,
        current: Option<Uuid>,
        retired: Vec<(Uuid, Option<Option<Uuid>>)>,
        live_on: Option<Uuid>,
    ) -> Result<SnapshotTree, String> {
        let mut tree = self.tree;
        if let Some(why) = self.bad {
            return Err(why);
        }
        for (child, parent) in self.late {
            if !tree.contains(&parent) {
                return Err(format!(
                    "snapshot {child} has parent {parent}, which does not exist"
                ));
            }
            tree.set_parent(&child, Some(parent))
                .map_err(|e| e.to_string())?;
        }
        if let Some(c) = current {
            tree.set_current(Some(c))
                .map_err(|_| format!("the current snapshot {c} does not exist"))?;
        }
        for (r, _) in &retired {
            tree.add_retired(*r);
        }
        for (r, parent) in retired {
            if let Some(p) = parent {
                tree.set_retired_parent(r, p).map_err(|e| e.to_string())?;
            }
        }
        for (s, r) in self.on_retired {
            tree.set_on_retired(s, Some(r)).map_err(|e| e.to_string())?;
        }
        tree.set_live_on_retired(live_on);
        Ok(tree)
    }
}
