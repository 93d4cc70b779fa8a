//! [`NameIndex`]: a tree's snapshot names to its nodes. The hash table holds only node
//! indexes (4-byte buckets; a `HashMap<String, _>` kept a second copy of every name in
//! 32-byte buckets: about 90 bytes a snapshot at a million, and slower to fill). Beside it,
//! by node index, a dense array of [`Key`]s: each snapshot's uuid and, when it is short,
//! its name. A lookup by name compares against the key and answers the uuid from it, so it
//! reads the table and one key: not the graph's node and the name's heap bytes, two more
//! cache misses a lookup in a large tree (at 100,000 snapshots they were most of a
//! lookup's time). Long names are compared through the node. Every operation is given the
//! function that reads a node's name.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use petgraph::stable_graph::NodeIndex;
use uuid::Uuid;

/// Names up to this many bytes are kept in the key; longer ones are read from the node.
const INLINE: usize = 23;

/// `Key::len` of a name longer than [`INLINE`].
const LONG: u8 = u8::MAX;

/// What a lookup by name needs of one snapshot, 40 bytes.
#[derive(Debug, Clone, Copy)]
struct Key {
    uuid: Uuid,
    /// The name's length, or [`LONG`].
    len: u8,
    bytes: [u8; INLINE],
}

impl Key {
    const VACANT: Key = Key {
        uuid: Uuid::nil(),
        len: 0,
        bytes: [0; INLINE],
    };

    fn new(name: &str, uuid: Uuid) -> Key {
        let mut key = Key {
            uuid,
            len: LONG,
            bytes: [0; INLINE],
        };
        if name.len() <= INLINE {
            key.bytes[..name.len()].copy_from_slice(name.as_bytes());
            key.len = name.len() as u8;
        }
        key
    }

    /// The name, when short enough to be kept here.
    fn short(&self) -> Option<&[u8]> {
        (self.len != LONG).then(|| &self.bytes[..usize::from(self.len)])
    }
}

/// Names to node indexes; see the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameIndex {
    table: HashTable<NodeIndex>,
    hasher: foldhash::fast::RandomState,
    /// By node index; entries of nodes not indexed are stale and never read.
    keys: Vec<Key>,
}

impl NameIndex {
    /// Makes room for `n` more names without rehashing while they are added.
    pub(crate) fn reserve<'a>(&mut self, n: usize, name_of: impl Fn(NodeIndex) -> &'a str) {
        let (hasher, keys) = (&self.hasher, &self.keys);
        self.table
            .reserve(n, |i| hash_of(hasher, keys, *i, &name_of));
        self.keys.reserve(n);
    }

    /// The node named `name`.
    pub(crate) fn get<'a>(
        &self,
        name: &str,
        name_of: impl Fn(NodeIndex) -> &'a str,
    ) -> Option<NodeIndex> {
        self.table
            .find(self.hasher.hash_one(name), |i| self.is(*i, name, &name_of))
            .copied()
    }

    /// The uuid of the snapshot named `name`, read from its key alone.
    pub(crate) fn uuid<'a>(
        &self,
        name: &str,
        name_of: impl Fn(NodeIndex) -> &'a str,
    ) -> Option<Uuid> {
        self.get(name, name_of).map(|i| self.keys[i.index()].uuid)
    }

    /// Indexes node `i` (snapshot `uuid`) under `name`, which must not be indexed yet (the
    /// caller checked with [`NameIndex::get`]); `name_of` must already give `name` for `i`.
    pub(crate) fn insert_new<'a>(
        &mut self,
        name: &str,
        i: NodeIndex,
        uuid: Uuid,
        name_of: impl Fn(NodeIndex) -> &'a str,
    ) {
        let at = i.index();
        if self.keys.len() <= at {
            self.keys.resize(at + 1, Key::VACANT);
        }
        self.keys[at] = Key::new(name, uuid);
        let (hasher, keys) = (&self.hasher, &self.keys);
        self.table.insert_unique(hasher.hash_one(name), i, |j| {
            hash_of(hasher, keys, *j, &name_of)
        });
    }

    /// Removes `name`; `name_of` must still give it for its node. Returns the node.
    pub(crate) fn remove<'a>(
        &mut self,
        name: &str,
        name_of: impl Fn(NodeIndex) -> &'a str,
    ) -> Option<NodeIndex> {
        let hash = self.hasher.hash_one(name);
        let keys = &self.keys;
        self.table
            .find_entry(hash, |i| matches(keys, *i, name, &name_of))
            .ok()
            .map(|e| e.remove().0)
    }

    /// Forgets every name.
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.keys.clear();
    }

    fn is<'a>(&self, i: NodeIndex, name: &str, name_of: &impl Fn(NodeIndex) -> &'a str) -> bool {
        matches(&self.keys, i, name, name_of)
    }
}

/// Whether indexed node `i` is named `name`: from its key when the name is short.
fn matches<'a>(
    keys: &[Key],
    i: NodeIndex,
    name: &str,
    name_of: &impl Fn(NodeIndex) -> &'a str,
) -> bool {
    match keys[i.index()].short() {
        Some(short) => short == name.as_bytes(),
        None => name_of(i) == name,
    }
}

/// The hash of indexed node `i`'s name (rehashing reads the keys, not the nodes, where it
/// can).
fn hash_of<'a>(
    hasher: &foldhash::fast::RandomState,
    keys: &[Key],
    i: NodeIndex,
    name_of: &impl Fn(NodeIndex) -> &'a str,
) -> u64 {
    match keys[i.index()].short() {
        // The same hash as of the `&str` (a `str` hashes its bytes, then a terminator).
        Some(short) => hasher.hash_one(std::str::from_utf8(short).unwrap_or_default()),
        None => hasher.hash_one(name_of(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_names_are_found_with_their_uuids_and_survive_growth_and_removal() {
        let names: Vec<String> = (0..2_000)
            .map(|n| {
                if n % 3 == 0 {
                    format!("a-name-longer-than-twenty-three-bytes-{n}")
                } else {
                    format!("s{n}")
                }
            })
            .collect();
        let name_of = |i: NodeIndex| names[i.index()].as_str();
        let mut index = NameIndex::default();
        for (n, name) in names.iter().enumerate() {
            let i = NodeIndex::new(n);
            assert_eq!(index.get(name, name_of), None, "expected '{name}' absent");
            index.insert_new(name, i, Uuid::from_u128(n as u128 + 1), name_of);
        }
        for (n, name) in names.iter().enumerate() {
            assert_eq!(
                index.get(name, name_of),
                Some(NodeIndex::new(n)),
                "'{name}'"
            );
            assert_eq!(
                index.uuid(name, name_of),
                Some(Uuid::from_u128(n as u128 + 1))
            );
        }
        // A prefix of a kept name, one a byte longer, and the 23/24-byte boundary.
        assert_eq!(index.get("s1", name_of), Some(NodeIndex::new(1)));
        assert_eq!(index.get("s", name_of), None);
        assert_eq!(index.get("s10000", name_of), None);
        assert_eq!(
            Key::new(&"x".repeat(23), Uuid::nil())
                .short()
                .map(<[u8]>::len),
            Some(23)
        );
        assert_eq!(Key::new(&"x".repeat(24), Uuid::nil()).short(), None);
        for (n, name) in names.iter().enumerate().filter(|(n, _)| n % 2 == 0) {
            assert_eq!(index.remove(name, name_of), Some(NodeIndex::new(n)));
        }
        for (n, name) in names.iter().enumerate() {
            let want = (n % 2 == 1).then(|| NodeIndex::new(n));
            assert_eq!(index.get(name, name_of), want, "'{name}' after removals");
        }
    }
}
