//! The snapshot forest of one domain: a petgraph `StableGraph` with name and uuid indexes
//! and maintained sets of roots and leaves, so that every query costs O(size of answer).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::Snapshot;
use crate::name::shown;
use crate::name_index::NameIndex;

/// A snapshot in the tree, with the insertion sequence that orders siblings.
#[derive(Debug, Clone)]
struct Node {
    snapshot: Snapshot,
    seq: u64,
}

/// Which snapshots a listing or count covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Every snapshot, in creation order.
    #[default]
    All,
    /// Snapshots without a parent.
    Roots,
    /// Snapshots without children.
    Leaves,
    /// Every snapshot, parents before children.
    Topological,
}

/// The snapshot forest of one domain plus its `current` snapshot and the uuids of retired
/// snapshots (whose data a backend still holds).
#[derive(Debug, Clone, Default)]
pub struct SnapshotTree {
    graph: StableDiGraph<Node, ()>,
    by_name: NameIndex,
    by_uuid: HashMap<Uuid, NodeIndex, foldhash::fast::RandomState>,
    roots: BTreeMap<u64, NodeIndex>,
    leaves: BTreeMap<u64, NodeIndex>,
    all: BTreeMap<u64, NodeIndex>,
    current: Option<NodeIndex>,
    retired: BTreeSet<Uuid>,
    physical: Physical,
    next_seq: u64,
}

/// Where data is physically stored when that differs from the metadata (SEMANTICS.md
/// §7.2): retired layers stay under what was stored on them. A snapshot's physical chain
/// passes only retired layers before it reaches its metadata parent, and so does the live
/// state's before it reaches `current`; so only the retired layer a snapshot or the live
/// state sits on needs recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Physical {
    /// A retired layer's physical parent (a snapshot, another retired layer, None: the
    /// base). Absent: unknown (recorded by a store older than schema version 3).
    retired_parent: HashMap<Uuid, Option<Uuid>>,
    /// The retired layer a snapshot sits on, for snapshots not directly on their parent.
    on_retired: HashMap<Uuid, Uuid>,
    /// The retired layer the live state sits on, if not directly on `current`.
    live_on_retired: Option<Uuid>,
}

impl SnapshotTree {
    /// An empty tree.
    pub fn new() -> SnapshotTree {
        SnapshotTree::default()
    }

    /// Number of snapshots.
    pub fn len(&self) -> usize {
        self.by_uuid.len()
    }

    /// Whether there are no snapshots.
    pub fn is_empty(&self) -> bool {
        self.by_uuid.is_empty()
    }

    fn node(&self, i: NodeIndex) -> &Snapshot {
        &self.graph[i].snapshot
    }

    /// The snapshot with this uuid.
    pub fn get(&self, uuid: &Uuid) -> Option<&Snapshot> {
        self.by_uuid.get(uuid).map(|i| self.node(*i))
    }

    /// The uuid of the snapshot with this name, without reading the snapshot (the name
    /// index keeps it beside short names: a lookup that needs only the uuid, as a handle
    /// does, reads no node).
    pub fn uuid_by_name(&self, name: &str) -> Option<Uuid> {
        self.by_name.uuid(name, |i| &self.graph[i].snapshot.name)
    }

    /// The snapshot with this name.
    pub fn by_name(&self, name: &str) -> Option<&Snapshot> {
        self.by_name
            .get(name, |i| &self.graph[i].snapshot.name)
            .map(|i| self.node(i))
    }

    /// Whether a snapshot with this uuid exists.
    pub fn contains(&self, uuid: &Uuid) -> bool {
        self.by_uuid.contains_key(uuid)
    }

    /// The snapshot with this uuid, or `NO_SNAPSHOT` naming the uuid and `domain`.
    pub fn require(&self, uuid: &Uuid, domain: &str) -> Result<&Snapshot> {
        self.get(uuid).ok_or_else(|| {
            Error::NoSnapshot(format!(
                "domain '{domain}' has no snapshot with uuid {uuid}"
            ))
        })
    }

    /// The uuid of the snapshot with this name (see [`SnapshotTree::uuid_by_name`]), or
    /// `NO_SNAPSHOT` naming it and `domain`.
    pub fn require_uuid_by_name(&self, name: &str, domain: &str) -> Result<Uuid> {
        self.uuid_by_name(name)
            .ok_or_else(|| no_snapshot_named(name, domain))
    }

    /// The snapshot with this name, or `NO_SNAPSHOT` naming it and `domain`.
    pub fn require_name(&self, name: &str, domain: &str) -> Result<&Snapshot> {
        self.by_name(name)
            .ok_or_else(|| no_snapshot_named(name, domain))
    }

    /// The snapshot the live state derives from.
    pub fn current(&self) -> Option<&Snapshot> {
        self.current.map(|i| self.node(i))
    }

    /// The parent of a snapshot (None for roots and unknown uuids).
    pub fn parent(&self, uuid: &Uuid) -> Option<&Snapshot> {
        let i = *self.by_uuid.get(uuid)?;
        self.parent_index(i).map(|p| self.node(p))
    }

    fn parent_index(&self, i: NodeIndex) -> Option<NodeIndex> {
        self.graph.neighbors_directed(i, Direction::Incoming).next()
    }

    fn child_indices(&self, i: NodeIndex) -> Vec<NodeIndex> {
        let mut kids: Vec<NodeIndex> = self
            .graph
            .neighbors_directed(i, Direction::Outgoing)
            .collect();
        kids.sort_by_key(|k| self.graph[*k].seq);
        kids
    }

    /// The children of a snapshot, oldest first.
    pub fn children(&self, uuid: &Uuid) -> Vec<&Snapshot> {
        match self.by_uuid.get(uuid) {
            Some(i) => self
                .child_indices(*i)
                .into_iter()
                .map(|k| self.node(k))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Number of children of a snapshot.
    pub fn num_children(&self, uuid: &Uuid) -> usize {
        self.by_uuid.get(uuid).map_or(0, |i| {
            self.graph
                .neighbors_directed(*i, Direction::Outgoing)
                .count()
        })
    }

    /// Every descendant of a snapshot, parents before children (not the snapshot itself).
    pub fn descendants(&self, uuid: &Uuid) -> Vec<&Snapshot> {
        match self.by_uuid.get(uuid) {
            Some(i) => self
                .preorder(self.child_indices(*i))
                .into_iter()
                .map(|k| self.node(k))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Whether `ancestor` is a proper ancestor of `uuid`. Walks up: O(depth).
    pub fn is_ancestor(&self, ancestor: &Uuid, uuid: &Uuid) -> bool {
        let (Some(a), Some(mut i)) = (self.by_uuid.get(ancestor), self.by_uuid.get(uuid).copied())
        else {
            return false;
        };
        while let Some(p) = self.parent_index(i) {
            if p == *a {
                return true;
            }
            i = p;
        }
        false
    }

    /// Iterative pre-order walk from `starts` (so a 100,000-deep chain cannot overflow the
    /// stack); children in creation order.
    fn preorder(&self, starts: Vec<NodeIndex>) -> Vec<NodeIndex> {
        let mut out = Vec::new();
        let mut stack: Vec<NodeIndex> = starts.into_iter().rev().collect();
        while let Some(i) = stack.pop() {
            out.push(i);
            let kids = self.child_indices(i);
            stack.extend(kids.into_iter().rev());
        }
        out
    }

    /// The snapshots without a parent, oldest first.
    pub fn roots(&self) -> impl Iterator<Item = &Snapshot> + '_ {
        self.roots.values().map(|i| self.node(*i))
    }

    /// The snapshots without children, oldest first.
    pub fn leaves(&self) -> impl Iterator<Item = &Snapshot> + '_ {
        self.leaves.values().map(|i| self.node(*i))
    }

    /// Every snapshot, parents before children.
    pub fn topological(&self) -> Vec<&Snapshot> {
        let roots: Vec<NodeIndex> = self.roots.values().copied().collect();
        self.preorder(roots)
            .into_iter()
            .map(|i| self.node(i))
            .collect()
    }

    /// Every snapshot with its depth, parents before children (for tree views).
    pub fn topological_with_depth(&self) -> Vec<(&Snapshot, usize)> {
        let mut out = Vec::with_capacity(self.len());
        let mut stack: Vec<(NodeIndex, usize)> =
            self.roots.values().rev().map(|i| (*i, 0)).collect();
        while let Some((i, depth)) = stack.pop() {
            out.push((self.node(i), depth));
            stack.extend(
                self.child_indices(i)
                    .into_iter()
                    .rev()
                    .map(|k| (k, depth + 1)),
            );
        }
        out
    }

    /// Every snapshot in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &Snapshot> + '_ {
        self.all.values().map(|i| self.node(*i))
    }

    /// The snapshots a filter selects.
    pub fn list(&self, filter: Filter) -> Vec<&Snapshot> {
        match filter {
            Filter::All => self.iter().collect(),
            Filter::Roots => self.roots().collect(),
            Filter::Leaves => self.leaves().collect(),
            Filter::Topological => self.topological(),
        }
    }

    /// How many snapshots a filter selects, in O(1).
    pub fn count(&self, filter: Filter) -> usize {
        match filter {
            Filter::All | Filter::Topological => self.len(),
            Filter::Roots => self.roots.len(),
            Filter::Leaves => self.leaves.len(),
        }
    }

    /// The uuids of retired snapshots: gone from the tree, data kept by the backend.
    pub fn retired(&self) -> &BTreeSet<Uuid> {
        &self.retired
    }

    // ---- mutation, used by `apply` and the store's loader ----

    fn index(&self, uuid: &Uuid) -> Result<NodeIndex> {
        self.by_uuid
            .get(uuid)
            .copied()
            .ok_or_else(|| Error::Internal(format!("snapshot {uuid} is not in the tree")))
    }

    fn refresh_leaf(&mut self, i: NodeIndex) {
        let seq = self.graph[i].seq;
        if self
            .graph
            .neighbors_directed(i, Direction::Outgoing)
            .next()
            .is_none()
        {
            self.leaves.insert(seq, i);
        } else {
            self.leaves.remove(&seq);
        }
    }

    /// An empty tree with room for `n` snapshots (loading a stored domain: no index is
    /// rehashed while it fills).
    pub fn with_capacity(n: usize) -> SnapshotTree {
        let mut t = SnapshotTree::new();
        t.graph.reserve_nodes(n);
        t.graph.reserve_edges(n);
        t.by_name.reserve(n, |i| &t.graph[i].snapshot.name);
        t.by_uuid.reserve(n);
        t
    }

    /// Adds a snapshot under `parent` (None: a new root).
    pub fn insert(&mut self, snapshot: Snapshot, parent: Option<Uuid>) -> Result<()> {
        let (i, seq, parent) = self.insert_node(snapshot, parent, None)?;
        self.all.insert(seq, i);
        self.leaves.insert(seq, i);
        match parent {
            Some(p) => self.refresh_leaf(p),
            None => {
                self.roots.insert(seq, i);
            }
        }
        Ok(())
    }

    /// Adds a stored snapshot with its stored sequence number `seq`, as
    /// [`SnapshotTree::insert`] does but leaving the creation-order, root and leaf sets
    /// alone: loading a stored domain inserts every row this way, in `seq` order, then
    /// builds the three sets once with [`SnapshotTree::index_orders`] (one ordered pass
    /// instead of three B-tree updates a row; a sixth of a million-snapshot open). Until
    /// then only the node, uuid and name lookups and the parent links are right.
    pub(crate) fn insert_unordered(
        &mut self,
        snapshot: Snapshot,
        parent: Option<Uuid>,
        seq: u64,
    ) -> Result<()> {
        self.insert_node(snapshot, parent, Some(seq)).map(|_| ())
    }

    /// The sequence number [`SnapshotTree::insert`] gives the next snapshot: past every
    /// number this tree has held, so stores key their rows by it (`store/row_seqs.rs`).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Builds the creation-order, root and leaf sets from the nodes, after
    /// [`SnapshotTree::insert_unordered`].
    pub(crate) fn index_orders(&mut self) {
        let g = &self.graph;
        // Node indexes and sequence numbers both grow with insertion: already in order.
        self.all = g.node_indices().map(|i| (g[i].seq, i)).collect();
        // Roots have no edge in, leaves none out.
        let without = |direction| -> BTreeMap<u64, NodeIndex> {
            self.all
                .iter()
                .filter(|(_, i)| g.neighbors_directed(**i, direction).next().is_none())
                .map(|(s, i)| (*s, *i))
                .collect()
        };
        let (roots, leaves) = (without(Direction::Incoming), without(Direction::Outgoing));
        self.roots = roots;
        self.leaves = leaves;
    }

    /// The node of a new snapshot linked under its parent, with its sequence number (the
    /// stored one, else the next) and the parent's node.
    fn insert_node(
        &mut self,
        snapshot: Snapshot,
        parent: Option<Uuid>,
        stored_seq: Option<u64>,
    ) -> Result<(NodeIndex, u64, Option<NodeIndex>)> {
        let twice = || Error::Internal(format!("snapshot '{}' inserted twice", snapshot.name));
        let parent = parent.map(|p| self.index(&p)).transpose()?;
        // One probe of each index, whether the snapshot is new or not.
        let Entry::Vacant(by_uuid) = self.by_uuid.entry(snapshot.uuid) else {
            return Err(twice());
        };
        if self
            .by_name
            .get(&snapshot.name, |i| &self.graph[i].snapshot.name)
            .is_some()
        {
            return Err(twice());
        }
        let seq = stored_seq.unwrap_or(self.next_seq);
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        let uuid = snapshot.uuid;
        let i = self.graph.add_node(Node { snapshot, seq });
        by_uuid.insert(i);
        let graph = &self.graph;
        self.by_name
            .insert_new(&graph[i].snapshot.name, i, uuid, |j| {
                &graph[j].snapshot.name
            });
        if let Some(p) = parent {
            self.graph.add_edge(p, i, ());
        }
        Ok((i, seq, parent))
    }

    /// Removes a snapshot that has no children.
    pub fn remove(&mut self, uuid: &Uuid) -> Result<Snapshot> {
        let i = self.index(uuid)?;
        if self
            .graph
            .neighbors_directed(i, Direction::Outgoing)
            .next()
            .is_some()
        {
            return Err(Error::Internal(format!(
                "snapshot {uuid} removed while it has children"
            )));
        }
        if self.current == Some(i) {
            // The planner moves `current` before removing it; losing it here silently would
            // hide that bug.
            return Err(Error::Internal(format!(
                "snapshot {uuid} removed while it is the current snapshot"
            )));
        }
        let parent = self.parent_index(i);
        self.physical.on_retired.remove(uuid);
        let graph = &self.graph;
        self.by_name
            .remove(&graph[i].snapshot.name, |j| &graph[j].snapshot.name);
        let node = self
            .graph
            .remove_node(i)
            .ok_or_else(|| Error::Internal("node vanished".into()))?;
        self.by_uuid.remove(uuid);
        self.all.remove(&node.seq);
        self.leaves.remove(&node.seq);
        self.roots.remove(&node.seq);
        if let Some(p) = parent {
            self.refresh_leaf(p);
        }
        Ok(node.snapshot)
    }

    /// Whether removing `removals` one at a time, in order, with [`SnapshotTree::remove`]
    /// would leave no snapshot, as far as the tree's shape goes: each is in the tree once
    /// and has no children left when its turn comes (whether one is current is the
    /// caller's to check). Reads only.
    pub(crate) fn removes_all_in_order(&self, removals: &[Uuid]) -> bool {
        use petgraph::visit::NodeIndexable;
        if removals.len() != self.by_uuid.len() {
            return false;
        }
        let mut gone = vec![false; self.graph.node_bound()];
        for uuid in removals {
            let Some(&i) = self.by_uuid.get(uuid) else {
                return false;
            };
            if gone[i.index()]
                || self
                    .graph
                    .neighbors_directed(i, Direction::Outgoing)
                    .any(|c| !gone[c.index()])
            {
                return false;
            }
            gone[i.index()] = true;
        }
        true
    }

    /// Removes every snapshot at once: what removing each in turn leaves (the retired
    /// uuids, the retired layers' physical parents, the live state's retired layer and
    /// `next_seq` kept), without updating five indexes per snapshot. Refused while a
    /// snapshot is current, as its removal would be.
    pub(crate) fn remove_all(&mut self) -> Result<()> {
        if let Some(i) = self.current {
            return Err(Error::Internal(format!(
                "snapshot {} removed while it is the current snapshot",
                self.graph[i].snapshot.uuid
            )));
        }
        self.graph.clear();
        self.by_name.clear();
        self.by_uuid.clear();
        self.roots.clear();
        self.leaves.clear();
        self.all.clear();
        // Kept per snapshot, and `remove` drops each snapshot's entry.
        self.physical.on_retired.clear();
        Ok(())
    }

    /// Moves a snapshot under a new parent (None: makes it a root). Refuses cycles.
    pub fn set_parent(&mut self, uuid: &Uuid, parent: Option<Uuid>) -> Result<()> {
        let i = self.index(uuid)?;
        let new_parent = parent.map(|p| self.index(&p)).transpose()?;
        // Moving a node up to an ancestor (what every delete does to the children of the
        // deleted snapshot) cannot make a cycle; only other moves pay for the O(depth) walk.
        let grandparent = self.parent_index(i).and_then(|old| self.parent_index(old));
        let moving_up = new_parent.is_none() || new_parent == grandparent;
        if let Some(p) = &parent
            && !moving_up
            && (p == uuid || self.is_ancestor(uuid, p))
        {
            return Err(Error::Internal(format!(
                "moving {uuid} under {p} would make a cycle"
            )));
        }
        let seq = self.graph[i].seq;
        if let Some(old) = self.parent_index(i) {
            if let Some(e) = self.graph.find_edge(old, i) {
                self.graph.remove_edge(e);
            }
            self.refresh_leaf(old);
        } else {
            self.roots.remove(&seq);
        }
        match new_parent {
            Some(p) => {
                self.graph.add_edge(p, i, ());
                self.refresh_leaf(p);
            }
            None => {
                self.roots.insert(seq, i);
            }
        }
        Ok(())
    }

    /// Renames a snapshot (the new name must be free).
    pub fn rename(&mut self, uuid: &Uuid, name: &str) -> Result<()> {
        let i = self.index(uuid)?;
        let name_of = |j: NodeIndex| self.graph[j].snapshot.name.as_str();
        if self.by_name.get(name, name_of).is_some_and(|j| j != i) {
            return Err(Error::Internal(format!("rename to taken name '{name}'")));
        }
        // Out of the index under the old name while the node still has it.
        let graph = &self.graph;
        self.by_name
            .remove(&graph[i].snapshot.name, |j| &graph[j].snapshot.name);
        self.graph[i].snapshot.name = name.to_string();
        let graph = &self.graph;
        self.by_name
            .insert_new(name, i, *uuid, |j| &graph[j].snapshot.name);
        Ok(())
    }

    /// Replaces a snapshot's power state.
    pub fn set_state(&mut self, uuid: &Uuid, state: crate::PowerState) -> Result<()> {
        let i = self.index(uuid)?;
        self.graph[i].snapshot.state = state;
        Ok(())
    }

    /// Replaces what a REDEFINE of an existing snapshot replaces: description, creation
    /// date and state.
    pub fn redefine(
        &mut self,
        uuid: &Uuid,
        description: &str,
        creation_date: i64,
        state: crate::PowerState,
    ) -> Result<()> {
        let i = self.index(uuid)?;
        let s = &mut self.graph[i].snapshot;
        s.description = description.to_string();
        s.creation_date = creation_date;
        s.state = state;
        Ok(())
    }

    /// Pins or unpins a snapshot (SEMANTICS.md §7.5: `prune` never deletes a pinned one).
    pub fn set_pinned(&mut self, uuid: &Uuid, pinned: bool) -> Result<()> {
        let i = self.index(uuid)?;
        self.graph[i].snapshot.pinned = pinned;
        Ok(())
    }

    /// Sets `current`.
    pub fn set_current(&mut self, uuid: Option<Uuid>) -> Result<()> {
        self.current = uuid.map(|u| self.index(&u)).transpose()?;
        Ok(())
    }

    /// Records a retired uuid (its physical parent unknown until
    /// [`SnapshotTree::set_retired_parent`]).
    pub fn add_retired(&mut self, uuid: Uuid) {
        self.retired.insert(uuid);
    }

    /// Forgets every retired uuid (their data has been freed).
    pub fn clear_retired(&mut self) {
        self.retired.clear();
        self.physical = Physical::default();
    }

    /// Forgets one retired uuid (its data has been freed).
    pub fn remove_retired(&mut self, uuid: &Uuid) -> Result<()> {
        if !self.retired.remove(uuid) {
            return Err(Error::Internal(format!("{uuid} is not a retired snapshot")));
        }
        self.physical.retired_parent.remove(uuid);
        Ok(())
    }

    /// Records the physical parent of a retired layer.
    pub fn set_retired_parent(&mut self, uuid: Uuid, parent: Option<Uuid>) -> Result<()> {
        if !self.retired.contains(&uuid) {
            return Err(Error::Internal(format!("{uuid} is not a retired snapshot")));
        }
        self.physical.retired_parent.insert(uuid, parent);
        Ok(())
    }

    /// Records the retired layer a snapshot sits on (None: directly on its parent).
    pub fn set_on_retired(&mut self, uuid: Uuid, retired: Option<Uuid>) -> Result<()> {
        self.index(&uuid)?;
        match retired {
            Some(r) => {
                self.physical.on_retired.insert(uuid, r);
            }
            None => {
                self.physical.on_retired.remove(&uuid);
            }
        }
        Ok(())
    }

    /// Records the retired layer the live state sits on (None: directly on `current`).
    pub fn set_live_on_retired(&mut self, retired: Option<Uuid>) {
        self.physical.live_on_retired = retired;
    }

    /// The physical parent of a retired layer: `None` when unknown, `Some(None)` for the
    /// base.
    pub fn retired_parent(&self, uuid: &Uuid) -> Option<Option<Uuid>> {
        self.physical.retired_parent.get(uuid).copied()
    }

    /// The retired layer a snapshot sits on, if not directly on its parent.
    pub fn on_retired(&self, uuid: &Uuid) -> Option<Uuid> {
        self.physical.on_retired.get(uuid).copied()
    }

    /// The retired layer the live state sits on, if not directly on `current`.
    pub fn live_on_retired(&self) -> Option<Uuid> {
        self.physical.live_on_retired
    }

    /// Every snapshot stored on a retired layer, with that layer (any order).
    pub fn stored_on_retired(&self) -> impl Iterator<Item = (Uuid, Uuid)> + '_ {
        self.physical.on_retired.iter().map(|(s, r)| (*s, *r))
    }

    /// A snapshot's place in creation order (what [`SnapshotTree::iter`] sorts by): a
    /// snapshot is always created after its parent.
    pub fn creation_seq(&self, uuid: &Uuid) -> Option<u64> {
        self.by_uuid.get(uuid).map(|i| self.graph[*i].seq)
    }

    /// Whether every retired layer's physical parent is known (false only for metadata
    /// written before schema version 3, until the engine learns it from the backend).
    pub fn physical_known(&self) -> bool {
        self.retired
            .iter()
            .all(|r| self.physical.retired_parent.contains_key(r))
    }
}

/// `NO_SNAPSHOT` for a name `domain` has no snapshot of.
fn no_snapshot_named(name: &str, domain: &str) -> Error {
    Error::NoSnapshot(format!(
        "domain '{domain}' has no snapshot named {}",
        shown(name)
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::PowerState;

    /// A shut-off snapshot named `name` with a fresh uuid.
    pub(crate) fn snap(name: &str) -> Snapshot {
        Snapshot {
            uuid: Uuid::new_v4(),
            name: name.into(),
            description: String::new(),
            creation_date: 0,
            state: PowerState::Shutoff,
            expires: None,
            pinned: false,
        }
    }

    #[test]
    fn maintains_roots_and_leaves_through_edits() {
        let mut t = SnapshotTree::new();
        let a = snap("a");
        let b = snap("b");
        let c = snap("c");
        t.insert(a.clone(), None).unwrap();
        t.insert(b.clone(), Some(a.uuid)).unwrap();
        t.insert(c.clone(), Some(a.uuid)).unwrap();
        let names = |v: Vec<&Snapshot>| v.into_iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(t.roots().collect()), ["a"]);
        assert_eq!(names(t.leaves().collect()), ["b", "c"]);
        t.set_parent(&c.uuid, Some(b.uuid)).unwrap();
        assert_eq!(names(t.leaves().collect()), ["c"]);
        assert_eq!(names(t.topological()), ["a", "b", "c"]);
        assert!(
            t.set_parent(&a.uuid, Some(c.uuid)).is_err(),
            "expected a cycle refused"
        );
        t.set_parent(&b.uuid, None).unwrap();
        assert_eq!(names(t.roots().collect()), ["a", "b"]);
        assert_eq!(names(t.leaves().collect()), ["a", "c"]);
        t.remove(&c.uuid).unwrap();
        assert_eq!(names(t.leaves().collect()), ["a", "b"]);
        assert!(t.remove(&Uuid::new_v4()).is_err());
    }

    /// The uuid a lookup by name answers from the name index's keys follows renames,
    /// removals and a removed node's index taken by a new snapshot, for short and long names.
    #[test]
    fn the_uuid_by_name_follows_renames_removals_and_reused_nodes() {
        let long = "a-snapshot-name-longer-than-the-index-keeps";
        let mut t = SnapshotTree::new();
        let a = snap("a");
        let b = snap(long);
        t.insert(a.clone(), None).unwrap();
        t.insert(b.clone(), Some(a.uuid)).unwrap();
        assert_eq!(t.uuid_by_name("a"), Some(a.uuid));
        assert_eq!(t.uuid_by_name(long), Some(b.uuid));
        t.rename(&a.uuid, "renamed").unwrap();
        t.rename(&b.uuid, "b").unwrap();
        assert_eq!(t.uuid_by_name("a"), None, "expected the old name gone");
        assert_eq!(
            t.uuid_by_name(long),
            None,
            "expected the old long name gone"
        );
        assert_eq!(t.uuid_by_name("renamed"), Some(a.uuid));
        assert_eq!(t.uuid_by_name("b"), Some(b.uuid));
        t.remove(&b.uuid).unwrap();
        assert_eq!(t.uuid_by_name("b"), None);
        // The removed node's index is taken again.
        let c = snap("c");
        t.insert(c.clone(), Some(a.uuid)).unwrap();
        assert_eq!(t.uuid_by_name("c"), Some(c.uuid));
        assert_eq!(t.uuid_by_name("b"), None);
        assert_eq!(t.by_name("c").map(|s| s.uuid), Some(c.uuid));
    }

    #[test]
    fn removing_the_current_snapshot_is_an_internal_error_that_changes_nothing() {
        let mut t = SnapshotTree::new();
        let a = snap("a");
        t.insert(a.clone(), None).unwrap();
        t.set_current(Some(a.uuid)).unwrap();
        let err = t.remove(&a.uuid).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Internal, "{err}");
        assert_eq!(t.current().map(|c| c.uuid), Some(a.uuid));
        assert!(t.contains(&a.uuid), "expected the snapshot kept");
        t.set_current(None).unwrap();
        t.remove(&a.uuid).unwrap();
    }
}

#[cfg(test)]
mod scale_tests {
    use super::*;
    use crate::PowerState;

    fn snap(i: usize) -> Snapshot {
        Snapshot {
            uuid: Uuid::from_u128(i as u128 + 1),
            name: format!("s{i}"),
            description: String::new(),
            creation_date: 0,
            state: PowerState::Shutoff,
            expires: None,
            pinned: false,
        }
    }

    const N: usize = 100_000;

    #[test]
    fn a_100000_deep_chain_answers_every_query_without_overflow() {
        let mut t = SnapshotTree::new();
        let mut parent = None;
        for i in 0..N {
            let s = snap(i);
            let u = s.uuid;
            t.insert(s, parent).unwrap();
            parent = Some(u);
        }
        t.set_current(parent).unwrap();
        assert_eq!(t.topological().len(), N);
        assert_eq!(t.topological_with_depth().last().unwrap().1, N - 1);
        let root = Uuid::from_u128(1);
        assert_eq!(t.descendants(&root).len(), N - 1);
        // Roots and leaves come from maintained sets: the answer is read, not searched for.
        assert_eq!(t.roots().count(), 1);
        assert_eq!(t.leaves().count(), 1);
        assert_eq!(t.leaves().next().unwrap().name, format!("s{}", N - 1));
        assert!(t.is_ancestor(&root, &parent.unwrap()));
        // Dropping a deep tree must not recurse either.
        drop(t);
    }

    #[test]
    fn a_100000_snapshot_bushy_tree_answers_every_query() {
        let mut t = SnapshotTree::new();
        let mut x: u64 = 7;
        for i in 0..N {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let parent = if i == 0 || x >> 60 == 0 {
                None
            } else {
                Some(Uuid::from_u128(((x >> 20) % i as u64) as u128 + 1))
            };
            t.insert(snap(i), parent).unwrap();
        }
        let topo = t.topological();
        assert_eq!(topo.len(), N);
        let leaves = t.count(Filter::Leaves);
        assert_eq!(
            leaves,
            t.iter().filter(|s| t.num_children(&s.uuid) == 0).count()
        );
        assert_eq!(
            t.count(Filter::Roots),
            t.iter().filter(|s| t.parent(&s.uuid).is_none()).count()
        );
    }
}
