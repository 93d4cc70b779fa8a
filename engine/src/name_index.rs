//! [`NameIndex`]: a tree's snapshot names to its nodes, holding only node indexes. The
//! names themselves stay in the nodes, so a name is stored once and a bucket is 4 bytes
//! (a `HashMap<String, _>` kept a second copy of every name and 32-byte buckets: about
//! 90 bytes a snapshot at a million, and slower to fill). Every operation is given the
//! function that reads a node's name.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use petgraph::stable_graph::NodeIndex;

/// Names to node indexes; see the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameIndex {
    table: HashTable<NodeIndex>,
    hasher: foldhash::fast::RandomState,
}

impl NameIndex {
    /// Makes room for `n` more names without rehashing while they are added.
    pub(crate) fn reserve<'a>(&mut self, n: usize, name_of: impl Fn(NodeIndex) -> &'a str) {
        let hasher = &self.hasher;
        self.table.reserve(n, |i| hasher.hash_one(name_of(*i)));
    }

    /// The node named `name`.
    pub(crate) fn get<'a>(
        &self,
        name: &str,
        name_of: impl Fn(NodeIndex) -> &'a str,
    ) -> Option<NodeIndex> {
        self.table
            .find(self.hasher.hash_one(name), |i| name_of(*i) == name)
            .copied()
    }

    /// Indexes node `i` under `name`, which must not be indexed yet (the caller checked
    /// with [`NameIndex::get`]); `name_of` must already give `name` for `i`.
    pub(crate) fn insert_new<'a>(
        &mut self,
        name: &str,
        i: NodeIndex,
        name_of: impl Fn(NodeIndex) -> &'a str,
    ) {
        let hasher = &self.hasher;
        self.table
            .insert_unique(hasher.hash_one(name), i, |j| hasher.hash_one(name_of(*j)));
    }

    /// Removes `name`; `name_of` must still give it for its node. Returns the node.
    pub(crate) fn remove<'a>(
        &mut self,
        name: &str,
        name_of: impl Fn(NodeIndex) -> &'a str,
    ) -> Option<NodeIndex> {
        self.table
            .find_entry(self.hasher.hash_one(name), |i| name_of(*i) == name)
            .ok()
            .map(|e| e.remove().0)
    }
}
