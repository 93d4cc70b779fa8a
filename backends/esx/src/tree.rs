//! The VM's `snapshot` property (`VirtualMachineSnapshotInfo`): the tree vSphere holds,
//! and how it maps back to snaptree's uuids.
//!
//! The backend names every vSphere snapshot by its snaptree uuid (canonical hyphenated
//! lowercase), because vSphere allows duplicate names and snaptree's names change on
//! rename. A snapshot whose name is not such a uuid was made by someone else.

use std::collections::BTreeMap;

use snaptree_engine::{PhysicalTree, Uuid};

use crate::soap::MoRef;
use crate::xml::{Element, SoapElement};

/// One vSphere snapshot and its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotNode {
    /// The snapshot's reference.
    pub moref: MoRef,
    /// Its vSphere name.
    pub name: String,
    /// Its vSphere description.
    pub description: String,
    /// The VM's power state when it was taken (`poweredOn`, …).
    pub state: String,
    /// Its children.
    pub children: Vec<SnapshotNode>,
}

/// The whole tree: the roots and the snapshot the VM's live state derives from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// `currentSnapshot`.
    pub current: Option<MoRef>,
    /// `rootSnapshotList`.
    pub roots: Vec<SnapshotNode>,
}

impl SnapshotInfo {
    /// Reads the value of the `snapshot` property.
    pub fn parse(val: &Element) -> Result<SnapshotInfo, String> {
        let current = val.child("currentSnapshot").and_then(MoRef::from_node);
        let roots = val
            .children_named("rootSnapshotList")
            .map(node)
            .collect::<Result<_, _>>()?;
        Ok(SnapshotInfo { current, roots })
    }

    /// Every snapshot, parents before children, with its parent.
    pub fn walk(&self) -> Vec<(&SnapshotNode, Option<&SnapshotNode>)> {
        let mut out = Vec::new();
        let mut stack: Vec<(&SnapshotNode, Option<&SnapshotNode>)> =
            self.roots.iter().rev().map(|r| (r, None)).collect();
        while let Some((n, parent)) = stack.pop() {
            out.push((n, parent));
            stack.extend(n.children.iter().rev().map(|c| (c, Some(n))));
        }
        out
    }

    /// The snapshot snaptree made for `uuid`, if vSphere still has it.
    pub fn find(&self, uuid: &Uuid) -> Option<&SnapshotNode> {
        let name = uuid.hyphenated().to_string();
        self.walk()
            .into_iter()
            .map(|(n, _)| n)
            .find(|n| n.name == name)
    }

    /// The snapshot with this reference.
    pub fn by_moref(&self, moref: &MoRef) -> Option<&SnapshotNode> {
        self.walk()
            .into_iter()
            .map(|(n, _)| n)
            .find(|n| n.moref == *moref)
    }

    /// Whether `descendant` is `ancestor` or lies below it.
    pub fn is_ancestor_or_self(&self, ancestor: &MoRef, descendant: &MoRef) -> bool {
        self.by_moref(ancestor)
            .is_some_and(|a| contains(a, descendant))
    }

    /// The tree as snaptree's uuids, for the agreement check. Fails, naming it, on a
    /// snapshot snaptree did not make, and on two snapshots with one uuid.
    pub fn physical(&self) -> Result<PhysicalTree, String> {
        let mut tree = PhysicalTree::default();
        let mut uuid_of = BTreeMap::new();
        for (n, _) in self.walk() {
            let uuid = snaptree_uuid(&n.name).ok_or_else(|| {
                format!(
                    "vSphere snapshot '{}' ({}) was not made by snaptree (its name is not a snaptree uuid); remove it in vSphere, or keep other tools off this VM",
                    n.name.escape_default(),
                    n.moref.value
                )
            })?;
            uuid_of.insert(n.moref.clone(), uuid);
        }
        for (n, parent) in self.walk() {
            let uuid = uuid_of[&n.moref];
            let parent = parent.map(|p| uuid_of[&p.moref]);
            if tree.parents.insert(uuid, parent).is_some() {
                return Err(format!(
                    "two vSphere snapshots are named {uuid}; one was made outside snaptree"
                ));
            }
        }
        tree.live_parent = match &self.current {
            Some(c) => Some(*uuid_of.get(c).ok_or_else(|| {
                format!(
                    "vSphere's current snapshot {} is not in the VM's snapshot tree",
                    c.value
                )
            })?),
            None => None,
        };
        Ok(tree)
    }
}

/// The uuid a snapshot name stands for, when it is one written by this backend.
fn snaptree_uuid(name: &str) -> Option<Uuid> {
    Uuid::parse_str(name)
        .ok()
        .filter(|u| u.hyphenated().to_string() == name)
}

fn contains(node: &SnapshotNode, moref: &MoRef) -> bool {
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        if n.moref == *moref {
            return true;
        }
        stack.extend(n.children.iter());
    }
    false
}

/// Reads one `VirtualMachineSnapshotTree` (a `rootSnapshotList` or `childSnapshotList`).
fn node(el: &Element) -> Result<SnapshotNode, String> {
    let moref = el
        .child("snapshot")
        .and_then(MoRef::from_node)
        .ok_or("a snapshot in the VM's snapshot tree has no reference")?;
    Ok(SnapshotNode {
        name: el.child_text("name").unwrap_or_default().to_string(),
        description: el.child_text("description").unwrap_or_default().to_string(),
        state: el.child_text("state").unwrap_or_default().to_string(),
        children: el
            .children_named("childSnapshotList")
            .map(node)
            .collect::<Result<_, _>>()?,
        moref,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml;

    fn entry(moid: &str, name: &str, children: &str) -> String {
        format!(
            "<snapshot type=\"VirtualMachineSnapshot\">{moid}</snapshot><name>{name}</name><state>poweredOff</state>{children}"
        )
    }

    const A: &str = "6f9f1c1e-0000-4000-8000-00000000000a";
    const B: &str = "6f9f1c1e-0000-4000-8000-00000000000b";
    const C: &str = "6f9f1c1e-0000-4000-8000-00000000000c";

    fn info(current: &str, b_name: &str) -> SnapshotInfo {
        let doc = format!(
            "<val><currentSnapshot type=\"VirtualMachineSnapshot\">{current}</currentSnapshot><rootSnapshotList>{}</rootSnapshotList></val>",
            entry(
                "snapshot-1",
                A,
                &format!(
                    "<childSnapshotList>{}</childSnapshotList><childSnapshotList>{}</childSnapshotList>",
                    entry("snapshot-2", b_name, ""),
                    entry("snapshot-3", C, "")
                )
            )
        );
        SnapshotInfo::parse(&xml::parse(&doc).unwrap()).unwrap()
    }

    #[test]
    fn maps_the_tree_to_uuids() {
        let i = info("snapshot-3", B);
        let p = i.physical().unwrap();
        let (a, b, c) = (
            Uuid::parse_str(A).unwrap(),
            Uuid::parse_str(B).unwrap(),
            Uuid::parse_str(C).unwrap(),
        );
        assert_eq!(
            p.parents,
            BTreeMap::from([(a, None), (b, Some(a)), (c, Some(a))])
        );
        assert_eq!(p.live_parent, Some(c));
        assert_eq!(i.find(&b).unwrap().moref.value, "snapshot-2");
        assert!(i.is_ancestor_or_self(
            &MoRef::new("VirtualMachineSnapshot", "snapshot-1"),
            &MoRef::new("VirtualMachineSnapshot", "snapshot-3")
        ));
        assert!(!i.is_ancestor_or_self(
            &MoRef::new("VirtualMachineSnapshot", "snapshot-2"),
            &MoRef::new("VirtualMachineSnapshot", "snapshot-3")
        ));
        assert_eq!(i.walk().len(), 3);
    }

    #[test]
    fn names_foreign_and_duplicate_snapshots() {
        let e = info("snapshot-3", "before upgrade").physical().unwrap_err();
        assert!(
            e.contains("'before upgrade' (snapshot-2) was not made by snaptree"),
            "{e}"
        );
        let e = info("snapshot-3", &B.to_uppercase())
            .physical()
            .unwrap_err();
        assert!(
            e.contains("not made by snaptree"),
            "only the canonical form is ours: {e}"
        );
        let e = info("snapshot-3", C).physical().unwrap_err();
        assert!(e.contains("two vSphere snapshots"), "{e}");
        let e = info("snapshot-9", B).physical().unwrap_err();
        assert!(e.contains("snapshot-9"), "{e}");
    }

    #[test]
    fn an_unset_property_is_an_empty_tree() {
        let p = SnapshotInfo::default().physical().unwrap();
        assert_eq!(p, PhysicalTree::default());
    }
}
