//! The physical tree of an internal-mode disk. qcow2 internal snapshots are independent of
//! each other (clusters are shared by reference counts, not by backing links), so qemu keeps
//! no parent links: this small JSON file beside the disk does, written atomically.
//!
//! Every change is a pure function of the file's content and the step, and re-applying it to
//! its own result changes nothing, so a step re-run after a crash rewrites the same file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use snaptree_engine::{PhysicalTree, Uuid};

use crate::ctx::Ctx;
use crate::error::{Result, error};

/// The current format.
const VERSION: u32 = 1;

/// The recorded tree of one internal-mode disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    version: u32,
    /// Every internal snapshot with the snapshot the live state derived from when it was taken.
    pub(crate) parents: BTreeMap<Uuid, Option<Uuid>>,
    /// The snapshot the live state derives from.
    pub(crate) live_parent: Option<Uuid>,
    /// Snapshots adopted from data another tool made (REDEFINE, SEMANTICS.md §7.3), with
    /// what holds their data: the internal snapshot tag (internal mode) or the absolute
    /// file (external mode). A snapshot not listed is found under its uuid. An external
    /// disk's file holds only this map.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) names: BTreeMap<Uuid, String>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            version: VERSION,
            parents: BTreeMap::new(),
            live_parent: None,
            names: BTreeMap::new(),
        }
    }
}

impl Meta {
    /// Reads the file; a missing file is an empty tree (a disk that never had snapshots).
    pub(crate) fn load(path: &Path) -> Result<Meta> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Meta::default()),
            Err(e) => return Err(error(format!("cannot read {}: {e}", path.display()))),
        };
        let meta: Meta = serde_json::from_slice(&text).map_err(|e| {
            error(format!(
                "{} is not a snaptree metadata file: {e}",
                path.display()
            ))
        })?;
        if meta.version != VERSION {
            return Err(error(format!(
                "{} has format version {}, expected {VERSION}",
                path.display(),
                meta.version
            )));
        }
        Ok(meta)
    }

    /// Writes the file atomically, or removes it when the tree is empty so that a disk with no
    /// snapshots left has no snaptree file beside it.
    pub(crate) fn store(&self, ctx: Ctx<'_>, path: &Path) -> Result<()> {
        if self.is_empty() {
            return ctx.remove(path);
        }
        let mut text = serde_json::to_vec_pretty(self)
            .map_err(|e| error(format!("cannot encode {}: {e}", path.display())))?;
        text.push(b'\n');
        ctx.write_atomic(path, &text)
    }

    /// No snapshot, a live state that derives from none, nothing adopted.
    pub(crate) fn is_empty(&self) -> bool {
        self.parents.is_empty() && self.live_parent.is_none() && self.names.is_empty()
    }

    /// The tree after snapshot `s`, stored on `parent`'s data under `name` (None: under
    /// its uuid), was adopted (internal mode). Internal snapshots record no parent, so
    /// the live state is taken to derive from the newest snapshot adopted on the one it
    /// derived from: after a tree is adopted parents first, from the last snapshot on its
    /// path (libvirt's current, for a chain). Adopting again what is adopted changes nothing.
    pub(crate) fn adopted(&self, s: Uuid, parent: Option<Uuid>, name: Option<&str>) -> Meta {
        let mut m = self.clone();
        if m.parents.contains_key(&s) {
            return m;
        }
        m.parents.insert(s, parent);
        if let Some(n) = name {
            m.names.insert(s, n.to_owned());
        }
        if m.live_parent == parent {
            m.live_parent = Some(s);
        }
        m
    }

    /// Whether `n` is a snapshot of this disk already that the live state does not derive
    /// from directly: data of an earlier snapshot with that uuid (a lost state store left
    /// it), never what an interrupted create of `n` leaves (unrecorded, or recorded with
    /// the live state on it).
    pub(crate) fn holds_other(&self, n: Uuid) -> bool {
        self.parents.contains_key(&n) && self.live_parent != Some(n)
    }

    /// The tree after `create(n)`: n derives from what the live state derived from.
    pub(crate) fn created(&self, n: Uuid) -> Meta {
        let mut m = self.clone();
        if !m.parents.contains_key(&n) {
            m.parents.insert(n, m.live_parent);
            m.live_parent = Some(n);
        }
        m
    }

    /// The tree after the live state was made to derive from `s` (revert) or from nothing.
    pub(crate) fn with_live(&self, s: Option<Uuid>) -> Meta {
        Meta {
            live_parent: s,
            ..self.clone()
        }
    }

    /// The tree after `s` was removed and everything that derived from it was given to
    /// `heir` (its parent when freed, the parent it merged into when merged).
    pub(crate) fn removed(&self, s: Uuid, heir: Option<Uuid>) -> Meta {
        let mut m = self.clone();
        m.names.remove(&s);
        if m.parents.remove(&s).is_none() {
            return m;
        }
        for p in m.parents.values_mut() {
            if *p == Some(s) {
                *p = heir;
            }
        }
        if m.live_parent == Some(s) {
            m.live_parent = heir;
        }
        m
    }

    /// As the engine's agreement check wants it.
    pub(crate) fn physical(&self) -> PhysicalTree {
        PhysicalTree {
            parents: self.parents.clone(),
            live_parent: self.live_parent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_idempotent() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let m = Meta::default()
            .created(a)
            .created(b)
            .with_live(Some(a))
            .created(c);
        assert_eq!(m.created(c), m);
        assert_eq!(m.parents[&c], Some(a));
        let r = m.removed(a, None);
        assert_eq!(r.parents, BTreeMap::from([(b, None), (c, None)]));
        assert_eq!(r.removed(a, None), r);
        assert!(r.removed(b, None).removed(c, None).is_empty());
    }
}
