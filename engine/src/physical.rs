//! The physical side of a plan (SEMANTICS.md §7.2): where every snapshot's and retired
//! snapshot's data is stored, what depends on what, and which retired data an operation
//! leaves without dependents, so that the same plan frees it.
//!
//! The engine's picture of the physical layout follows one rule every backend step keeps:
//! a layer that goes away (`discard_leaf`, `consolidate`, `merge_into_parent`) leaves its
//! dependents on its own physical parent. A backend that moves a dependent further down
//! (QEMU rebases a merged snapshot onto its parent first) only ever has fewer dependents on
//! a retired layer than the engine thinks, so the engine may keep retired data longer than
//! needed (until `reclaim`), never free data something still uses.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::plan::{Edit, Operation, Plan, Step, apply_edits};
use crate::tree::SnapshotTree;

/// The physical graph of a tree: every snapshot and retired layer with its physical
/// parent, and the layer the live state sits on.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Layer to physical parent (None: the base).
    parent: BTreeMap<Uuid, Option<Uuid>>,
    /// Layers in a parents-first order: snapshots in creation order, then retired layers
    /// by uuid, each placed after its parent.
    order: Vec<Uuid>,
    /// The layer the live state sits on (None: the base, or detached).
    live: Option<Uuid>,
    retired: BTreeSet<Uuid>,
    /// Layer to the layers stored directly on it, in `order`.
    children: BTreeMap<Uuid, Vec<Uuid>>,
}

impl Layout {
    /// The layout the tree records. `INTERNAL` when a retired layer's parent is unknown
    /// (the domain must learn it from its backend first, see `Domain`).
    pub fn of(tree: &SnapshotTree) -> Result<Layout> {
        let mut parent = BTreeMap::new();
        for s in tree.iter() {
            let p = match tree.on_retired(&s.uuid) {
                Some(r) => Some(r),
                None => tree.parent(&s.uuid).map(|p| p.uuid),
            };
            parent.insert(s.uuid, p);
        }
        for r in tree.retired() {
            let p = tree.retired_parent(r).ok_or_else(|| {
                Error::Internal(format!(
                    "the physical parent of retired snapshot {r} is not known"
                ))
            })?;
            parent.insert(*r, p);
        }
        let live = tree
            .live_on_retired()
            .or_else(|| tree.current().map(|c| c.uuid));
        let seeds: Vec<Uuid> = tree
            .iter()
            .map(|s| s.uuid)
            .chain(tree.retired().iter().copied())
            .collect();
        let order = parents_first(&parent, &seeds)?;
        let mut children: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
        for u in &order {
            if let Some(Some(p)) = parent.get(u) {
                children.entry(*p).or_default().push(*u);
            }
        }
        Ok(Layout {
            parent,
            order,
            live,
            retired: tree.retired().clone(),
            children,
        })
    }

    /// The physical parent of a layer.
    pub fn parent(&self, layer: &Uuid) -> Option<Uuid> {
        self.parent.get(layer).copied().flatten()
    }

    /// The layers stored directly on `layer`.
    pub fn dependents(&self, layer: &Uuid) -> Vec<Uuid> {
        self.children.get(layer).cloned().unwrap_or_default()
    }

    /// The layers of `set`, dependents before what they depend on.
    pub fn dependents_first(&self, set: &BTreeSet<Uuid>) -> Vec<Uuid> {
        self.order
            .iter()
            .rev()
            .filter(|u| set.contains(*u))
            .copied()
            .collect()
    }

    /// The retired layers with nothing stored on them (no layer, not the live state).
    fn without_dependents(&self) -> BTreeSet<Uuid> {
        let used: BTreeSet<Uuid> = self
            .parent
            .values()
            .flatten()
            .copied()
            .chain(self.live)
            .collect();
        self.retired
            .iter()
            .filter(|r| !used.contains(*r))
            .copied()
            .collect()
    }

    /// The first layer at or below `at` that is not in `gone`.
    fn surviving(&self, mut at: Option<Uuid>, gone: &BTreeSet<Uuid>) -> Option<Uuid> {
        while let Some(u) = at {
            if !gone.contains(&u) {
                return Some(u);
            }
            at = self.parent(&u);
        }
        None
    }
}

/// Orders `layers` parents first (a retired layer may sort before its parent by uuid).
fn parents_first(parent: &BTreeMap<Uuid, Option<Uuid>>, seeds: &[Uuid]) -> Result<Vec<Uuid>> {
    let mut placed: BTreeSet<Uuid> = BTreeSet::new();
    let mut order = Vec::with_capacity(seeds.len());
    for seed in seeds {
        let mut chain = Vec::new();
        let mut at = Some(*seed);
        while let Some(u) = at {
            if placed.contains(&u) || !parent.contains_key(&u) {
                break;
            }
            if chain.len() > parent.len() {
                return Err(Error::Internal(
                    "the recorded physical layout has a cycle".into(),
                ));
            }
            chain.push(u);
            at = parent[&u];
        }
        for u in chain.into_iter().rev() {
            placed.insert(u);
            order.push(u);
        }
    }
    Ok(order)
}

/// Completes a plan the planner built from the metadata alone:
///
/// - its `discard_leaf` steps (one contiguous run: descendants, victims, everything) are
///   re-ordered by physical dependency, and retired layers stacked on a discarded snapshot
///   (only discarded snapshots or the live state can be stored on them) are freed with it;
/// - after its steps, every retired layer left without dependents is freed
///   (`discard_leaf`, dependents first);
/// - edits record the new physical layout.
///
/// A domain without retired data whose plan retires nothing has nothing to do here: its
/// physical layout is its tree, and the planner's leaves-first order is already
/// dependents first. That keeps plans O(answer) for such domains; with retired data a
/// plan costs O(snapshots).
pub fn complete(tree: &SnapshotTree, mut plan: Plan) -> Result<Plan> {
    let retires = plan.edits.iter().any(|e| matches!(e, Edit::Retire { .. }));
    if tree.retired().is_empty() && !retires {
        return Ok(plan);
    }
    let layout = Layout::of(tree)?;
    let detach = plan.steps.contains(&Step::DetachLive);
    // 1. The run of discard_leaf steps, with the retired layers stacked on them.
    let discarded: BTreeSet<Uuid> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::DiscardLeaf { snapshot } => Some(*snapshot),
            _ => None,
        })
        .collect();
    let stacked = stacked_retired(&layout, &discarded, detach)?;
    let mut freed: BTreeSet<Uuid> = discarded.union(&stacked).copied().collect();
    if !freed.is_empty() {
        let at = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::DiscardLeaf { .. }))
            .unwrap_or(plan.steps.len());
        plan.steps
            .retain(|s| !matches!(s, Step::DiscardLeaf { .. }));
        let run = layout
            .dependents_first(&freed)
            .into_iter()
            .map(|snapshot| Step::DiscardLeaf { snapshot });
        plan.steps.splice(at..at, run);
    }
    // Layers the other steps remove; their dependents move onto their parents.
    for s in &plan.steps {
        if let Step::MergeIntoParent { snapshot, .. } | Step::Consolidate { snapshot } = s {
            freed.insert(*snapshot);
        }
    }
    // 2. The metadata after the plan.
    let mut after = tree.clone();
    apply_edits(&mut after, &plan.edits)?;
    // 3. The physical layout after the steps.
    let mut parent: BTreeMap<Uuid, Option<Uuid>> = BTreeMap::new();
    let mut live = if detach {
        None
    } else {
        layout.surviving(layout.live, &freed)
    };
    for s in &plan.steps {
        match s {
            Step::Create { snapshot, .. } => {
                parent.insert(*snapshot, live);
                live = Some(*snapshot);
            }
            Step::Revert { snapshot, .. } => live = Some(*snapshot),
            _ => {}
        }
    }
    // A REDEFINE adopts data stored on the snapshot's parent, and with CURRENT says the
    // live state derives from the snapshot.
    if let Operation::Redefine {
        snapshot,
        parent: meta_parent,
        adopt,
        current,
        ..
    } = &plan.operation
    {
        if *adopt {
            parent.insert(*snapshot, *meta_parent);
        }
        if *current {
            live = Some(*snapshot);
        }
    }
    for (u, p) in &layout.parent {
        if !freed.contains(u) {
            parent.insert(*u, layout.surviving(*p, &freed));
        }
    }
    let mut after_layout = Layout {
        parent,
        order: Vec::new(),
        live,
        retired: after.retired().difference(&freed).copied().collect(),
        children: BTreeMap::new(),
    };
    // 4. Retired data left without dependents, freed by the same plan.
    let mut reclaimed = BTreeSet::new();
    loop {
        let idle = after_layout.without_dependents();
        if idle.is_empty() {
            break;
        }
        for r in idle {
            after_layout.parent.remove(&r);
            after_layout.retired.remove(&r);
            reclaimed.insert(r);
        }
    }
    // The order among them is the one before the plan: moving dependents onto a
    // surviving ancestor keeps which of them sits above which.
    let order = layout.dependents_first(&reclaimed);
    for r in &order {
        plan.steps.push(Step::DiscardLeaf { snapshot: *r });
        plan.edits.push(Edit::Unretire { snapshot: *r });
    }
    // Retired layers freed with a discarded snapshot.
    for r in layout.dependents_first(&stacked) {
        if after.retired().contains(&r) {
            plan.edits.push(Edit::Unretire { snapshot: r });
        }
    }
    let mut recorded = tree.clone();
    apply_edits(&mut recorded, &plan.edits)?;
    record_layout(&recorded, &after_layout, &mut plan.edits)?;
    Ok(plan)
}

/// The retired layers whose physical chain ends on a discarded snapshot and on which only
/// discarded layers (and perhaps the live state, which the backend keeps valid) are
/// stored: `discard_leaf` of the snapshot needs them gone first. A retired layer stacked
/// on a discarded snapshot with a surviving snapshot on it would mean the recorded layout
/// is wrong: `INTERNAL`.
fn stacked_retired(
    layout: &Layout,
    discarded: &BTreeSet<Uuid>,
    detach: bool,
) -> Result<BTreeSet<Uuid>> {
    let mut stacked: BTreeSet<Uuid> = layout
        .retired
        .iter()
        .filter(|r| {
            let mut at = layout.parent(r);
            while let Some(u) = at {
                if discarded.contains(&u) {
                    return true;
                }
                if !layout.retired.contains(&u) {
                    return false;
                }
                at = layout.parent(&u);
            }
            false
        })
        .copied()
        .collect();
    if detach {
        stacked.extend(layout.retired.iter().copied());
    }
    loop {
        let keep: Vec<Uuid> = stacked
            .iter()
            .filter(|r| {
                layout
                    .dependents(r)
                    .iter()
                    .any(|d| !discarded.contains(d) && !stacked.contains(d))
            })
            .copied()
            .collect();
        if keep.is_empty() {
            break;
        }
        for r in keep {
            stacked.remove(&r);
        }
    }
    for d in discarded {
        if let Some(kept) = layout
            .dependents(d)
            .into_iter()
            .find(|u| !discarded.contains(u) && !stacked.contains(u))
        {
            return Err(Error::Internal(format!(
                "snapshot {d} would be discarded while {kept} is still stored on it"
            )));
        }
    }
    Ok(stacked)
}

/// Appends the edits that make `tree`'s recorded layout `layout`.
fn record_layout(tree: &SnapshotTree, layout: &Layout, edits: &mut Vec<Edit>) -> Result<()> {
    let as_retired = |u: Option<Uuid>, what: &dyn Fn() -> String| -> Result<Option<Uuid>> {
        match u {
            Some(r) if tree.retired().contains(&r) => Ok(Some(r)),
            _ => Err(Error::Internal(format!(
                "{} would be stored on {u:?}, which is neither its parent nor retired",
                what()
            ))),
        }
    };
    for r in tree.retired() {
        let Some(p) = layout.parent.get(r).copied() else {
            return Err(Error::Internal(format!(
                "retired snapshot {r} has no physical place"
            )));
        };
        if tree.retired_parent(r) != Some(p) {
            edits.push(Edit::SetRetiredParent {
                snapshot: *r,
                parent: p,
            });
        }
    }
    for s in tree.iter() {
        let p = layout.parent.get(&s.uuid).copied().flatten();
        let meta = tree.parent(&s.uuid).map(|p| p.uuid);
        let on = if p == meta {
            None
        } else {
            as_retired(p, &|| format!("snapshot {}", s.uuid))?
        };
        if tree.on_retired(&s.uuid) != on {
            edits.push(Edit::SetOnRetired {
                snapshot: s.uuid,
                retired: on,
            });
        }
    }
    let current = tree.current().map(|c| c.uuid);
    let on = if layout.live == current {
        None
    } else {
        as_retired(layout.live, &|| "the live state".to_string())?
    };
    if tree.live_on_retired() != on {
        edits.push(Edit::SetLiveOnRetired { retired: on });
    }
    Ok(())
}
