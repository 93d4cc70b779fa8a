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
//!
//! Cost: the physical layout is the metadata tree except around retired layers (the
//! snapshots stored on one, the live state on one, the retired layers' own parents), so
//! [`Layout`] records only that difference and reads the rest from the tree when asked.
//! A plan costs O(what it touches + retired layers and what is stored on them), not
//! O(snapshots): the layout after the plan is the layout before plus the layers whose
//! physical parent the plan frees or creates, and the edits are checked only for those.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::plan::{Edit, Operation, Plan, Step};
use crate::tree::SnapshotTree;

/// Hash maps and sets keyed by uuid, with the tree's fast hasher (SipHash showed in the
/// profile of a plan).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;

/// Where a layer sits in the parents-first order of the layout: the first seed (snapshots
/// in creation order, then retired layers by uuid) whose physical chain holds it, then its
/// height within that chain (what is stored on a layer comes after it).
type Rank = (Seed, u64);

/// The seeds of the parents-first order, in that order (the derived `Ord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seed {
    /// A snapshot, by creation sequence.
    Snapshot(u64),
    /// A retired layer nothing but retired layers is stored on, by uuid.
    Retired(Uuid),
}

/// The physical graph of a tree: every snapshot and retired layer with its physical
/// parent, and the layer the live state sits on. Only the part that differs from the
/// metadata (retired layers and what is stored on them) is held; the rest is the tree's.
#[derive(Debug)]
pub struct Layout<'t> {
    tree: &'t SnapshotTree,
    /// Retired layer to the snapshots recorded as stored on it.
    snapshots_on: HashMap<Uuid, Vec<Uuid>>,
    /// Layer to the retired layers stored on it.
    retired_on: HashMap<Uuid, Vec<Uuid>>,
    /// Each retired layer's height: retired layers below it, down to the first layer that
    /// is not retired.
    height: HashMap<Uuid, u64>,
    /// Each retired layer's rank, computed when first asked (most plans order nothing).
    retired_rank: std::cell::OnceCell<HashMap<Uuid, Rank>>,
    /// The layer the live state sits on (None: the base, or detached).
    live: Option<Uuid>,
}

impl<'t> Layout<'t> {
    /// The layout the tree records, in O(retired layers + snapshots stored on them).
    /// `INTERNAL` when a retired layer's parent is unknown (the domain must learn it from
    /// its backend first, see `Domain`) or the retired layers' parents form a cycle.
    pub fn of(tree: &'t SnapshotTree) -> Result<Layout<'t>> {
        let retired = tree.retired();
        let mut retired_on: HashMap<Uuid, Vec<Uuid>> = HashMap::default();
        for r in retired {
            let p = tree.retired_parent(r).ok_or_else(|| {
                Error::Internal(format!(
                    "the physical parent of retired snapshot {r} is not known"
                ))
            })?;
            if let Some(p) = p {
                retired_on.entry(p).or_default().push(*r);
            }
        }
        let mut snapshots_on: HashMap<Uuid, Vec<Uuid>> = HashMap::default();
        for (s, r) in tree.stored_on_retired() {
            snapshots_on.entry(r).or_default().push(s);
        }
        let mut layout = Layout {
            tree,
            snapshots_on,
            retired_on,
            height: HashMap::default(),
            retired_rank: std::cell::OnceCell::new(),
            live: tree
                .live_on_retired()
                .or_else(|| tree.current().map(|c| c.uuid)),
        };
        layout.height = layout.heights()?;
        Ok(layout)
    }

    /// The height of every retired layer; `INTERNAL` when retired layers are stored on
    /// each other in a cycle.
    fn heights(&self) -> Result<HashMap<Uuid, u64>> {
        let retired = self.tree.retired();
        let mut height: HashMap<Uuid, u64> =
            HashMap::with_capacity_and_hasher(retired.len(), Default::default());
        for r in retired {
            let mut chain = Vec::new();
            let mut at = *r;
            let base = loop {
                if let Some(h) = height.get(&at) {
                    break *h + 1;
                }
                if chain.len() > retired.len() {
                    return Err(Error::Internal(
                        "the recorded physical layout has a cycle".into(),
                    ));
                }
                chain.push(at);
                match self.parent(&at) {
                    Some(p) if retired.contains(&p) => at = p,
                    _ => break 0,
                }
            };
            for (i, u) in chain.iter().rev().enumerate() {
                height.insert(*u, base + i as u64);
            }
        }
        Ok(height)
    }

    /// The ranks of the retired layers. A retired layer is placed by the first seed stored
    /// on it through retired layers only: a snapshot on it or on a retired layer above it
    /// (what is stored on that snapshot is created after it), else the least retired uuid
    /// among the retired layers above it and itself. Layers placed by one seed lie on one
    /// chain of retired layers, ordered by their height on it.
    fn rank_retired(&self) -> HashMap<Uuid, Rank> {
        let retired = self.tree.retired();
        let mut seed: HashMap<Uuid, Seed> =
            HashMap::with_capacity_and_hasher(retired.len(), Default::default());
        for r in retired {
            let own = self
                .snapshots_on
                .get(r)
                .into_iter()
                .flatten()
                .filter(|s| self.parent(s) == Some(*r))
                .filter_map(|s| self.tree.creation_seq(s))
                .min()
                .map_or(Seed::Retired(*r), Seed::Snapshot);
            seed.insert(*r, own);
        }
        // Highest first, so each layer hands its seed down once it has its own.
        let mut by_height: Vec<(u64, Uuid)> = self.height.iter().map(|(u, h)| (*h, *u)).collect();
        by_height.sort_unstable_by(|a, b| b.cmp(a));
        for (_, r) in &by_height {
            if let Some(p) = self.parent(r).filter(|p| retired.contains(p)) {
                let mine = seed[r];
                let theirs = seed.get_mut(&p).expect("every retired layer has a seed");
                *theirs = (*theirs).min(mine);
            }
        }
        by_height
            .into_iter()
            .map(|(h, r)| (r, (seed[&r], h)))
            .collect()
    }

    /// The layer's physical parent: `None` when it is not a layer, `Some(None)` for one on
    /// the base.
    fn parent_of(&self, layer: &Uuid) -> Option<Option<Uuid>> {
        if self.tree.retired().contains(layer) {
            // Known: `of` refused otherwise.
            self.tree.retired_parent(layer)
        } else if self.tree.contains(layer) {
            Some(
                self.tree
                    .on_retired(layer)
                    .or_else(|| self.tree.parent(layer).map(|p| p.uuid)),
            )
        } else {
            None
        }
    }

    /// The physical parent of a layer.
    pub fn parent(&self, layer: &Uuid) -> Option<Uuid> {
        self.parent_of(layer).flatten()
    }

    /// Where a layer sits in the parents-first order; None for what is not a layer.
    fn rank(&self, layer: &Uuid) -> Option<Rank> {
        let ranks = self.retired_rank.get_or_init(|| self.rank_retired());
        if let Some(r) = ranks.get(layer) {
            return Some(*r);
        }
        self.tree
            .creation_seq(layer)
            .map(|seq| (Seed::Snapshot(seq), u64::MAX))
    }

    /// The layers stored directly on `layer`, in no particular order.
    fn dependents_unordered(&self, layer: &Uuid) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = self
            .snapshots_on
            .get(layer)
            .into_iter()
            .flatten()
            .chain(self.retired_on.get(layer).into_iter().flatten())
            .copied()
            .collect();
        if self.tree.contains(layer) {
            out.extend(self.tree.children(layer).iter().map(|c| c.uuid));
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|c| self.parent_of(c) == Some(Some(*layer)));
        out
    }

    /// How many layers not in `gone` are stored directly on `layer` (what
    /// `dependents_unordered` counts, without building the list).
    fn dependents_not_in(&self, layer: &Uuid, gone: &BTreeSet<Uuid>) -> usize {
        if self.tree.contains(layer) {
            return self
                .dependents_unordered(layer)
                .iter()
                .filter(|c| !gone.contains(*c))
                .count();
        }
        let retired = self.tree.retired();
        let on = |c: &&Uuid| !gone.contains(*c) && self.parent_of(c) == Some(Some(*layer));
        // A uuid both retired and a snapshot is listed in both; count it once.
        let snapshots = self.snapshots_on.get(layer).into_iter().flatten();
        let snapshots = snapshots
            .filter(|c| !retired.contains(*c))
            .filter(on)
            .count();
        let layers = self.retired_on.get(layer).into_iter().flatten();
        snapshots + layers.filter(on).count()
    }

    /// The layers stored directly on `layer`, parents-first.
    pub fn dependents(&self, layer: &Uuid) -> Vec<Uuid> {
        let mut out = self.dependents_unordered(layer);
        out.sort_by_cached_key(|u| self.rank(u));
        out
    }

    /// The layers of `set`, dependents before what they depend on.
    pub fn dependents_first(&self, set: &BTreeSet<Uuid>) -> Vec<Uuid> {
        let mut ranked: Vec<(Rank, Uuid)> = set
            .iter()
            .filter_map(|u| self.rank(u).map(|r| (r, *u)))
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        ranked.into_iter().map(|(_, u)| u).collect()
    }

    /// The first layer at or below `at` that is not in `gone`; `known` remembers the
    /// answer for each layer of `gone` passed, so a run of them is walked once.
    fn surviving(
        &self,
        at: Option<Uuid>,
        gone: &BTreeSet<Uuid>,
        known: &mut HashMap<Uuid, Option<Uuid>>,
    ) -> Option<Uuid> {
        let mut passed = Vec::new();
        let mut at = at;
        let found = loop {
            match at {
                Some(u) if gone.contains(&u) => {
                    if let Some(k) = known.get(&u) {
                        break *k;
                    }
                    passed.push(u);
                    at = self.parent(&u);
                }
                other => break other,
            }
        };
        for u in passed {
            known.insert(u, found);
        }
        found
    }
}

/// The metadata after a plan's edits, held as what the edits change on top of the tree
/// before (the same rules as `apply_edits` on a `SnapshotTree`, without its checks: the
/// planner's edits are valid).
struct EditedTree<'t> {
    tree: &'t SnapshotTree,
    /// Snapshots added, in order, with their parents.
    added: HashMap<Uuid, usize>,
    /// Snapshots whose metadata parent the edits set.
    parent: HashMap<Uuid, Option<Uuid>>,
    /// Snapshots removed (or added back: false).
    removed: HashMap<Uuid, bool>,
    current: Option<Uuid>,
    retired: BTreeSet<Uuid>,
    /// After `ClearRetired`: the tree's physical records are gone.
    cleared: bool,
    retired_parent: HashMap<Uuid, Option<Option<Uuid>>>,
    on_retired: HashMap<Uuid, Option<Uuid>>,
    live_on_retired: Option<Uuid>,
    /// Whether an edit set a retired layer's physical parent.
    placed_retired: bool,
    /// Snapshots an edit changed the parent, existence or physical place of.
    touched: HashSet<Uuid>,
}

impl<'t> EditedTree<'t> {
    fn new(tree: &'t SnapshotTree) -> EditedTree<'t> {
        EditedTree {
            tree,
            added: HashMap::default(),
            parent: HashMap::default(),
            removed: HashMap::default(),
            current: tree.current().map(|c| c.uuid),
            retired: tree.retired().clone(),
            cleared: false,
            retired_parent: HashMap::default(),
            on_retired: HashMap::default(),
            live_on_retired: tree.live_on_retired(),
            placed_retired: false,
            touched: HashSet::default(),
        }
    }

    fn apply(&mut self, edits: &[Edit]) {
        for edit in edits {
            match edit {
                Edit::Add { snapshot, parent } => {
                    let n = self.added.len();
                    self.added.insert(snapshot.uuid, n);
                    self.parent.insert(snapshot.uuid, *parent);
                    self.removed.insert(snapshot.uuid, false);
                    self.touched.insert(snapshot.uuid);
                }
                Edit::Remove { snapshot } => {
                    self.removed.insert(*snapshot, true);
                    self.on_retired.insert(*snapshot, None);
                    self.touched.insert(*snapshot);
                }
                Edit::SetParent { snapshot, parent } => {
                    self.parent.insert(*snapshot, *parent);
                    self.touched.insert(*snapshot);
                }
                Edit::SetCurrent { current } => self.current = *current,
                Edit::Retire { snapshot } => {
                    self.retired.insert(*snapshot);
                }
                Edit::ClearRetired => {
                    self.retired.clear();
                    self.cleared = true;
                    self.retired_parent.clear();
                    self.on_retired.clear();
                    self.live_on_retired = None;
                }
                Edit::Unretire { snapshot } => {
                    self.retired.remove(snapshot);
                    self.retired_parent.insert(*snapshot, None);
                }
                Edit::SetRetiredParent { snapshot, parent } => {
                    self.retired_parent.insert(*snapshot, Some(*parent));
                    self.placed_retired = true;
                }
                Edit::SetOnRetired { snapshot, retired } => {
                    self.on_retired.insert(*snapshot, *retired);
                    self.touched.insert(*snapshot);
                }
                Edit::SetLiveOnRetired { retired } => self.live_on_retired = *retired,
                Edit::Rename { .. }
                | Edit::SetState { .. }
                | Edit::Redefine { .. }
                | Edit::SetPinned { .. } => {}
            }
        }
    }

    fn contains(&self, s: &Uuid) -> bool {
        match self.removed.get(s) {
            Some(gone) => !gone,
            None => self.tree.contains(s),
        }
    }

    /// Creation order after the edits: the tree's snapshots, then those added.
    fn order(&self, s: &Uuid) -> (u64, u64) {
        match self.added.get(s) {
            Some(n) => (1, *n as u64),
            None => (0, self.tree.creation_seq(s).unwrap_or(0)),
        }
    }

    fn parent(&self, s: &Uuid) -> Option<Uuid> {
        match self.parent.get(s) {
            Some(p) => *p,
            None => self.tree.parent(s).map(|p| p.uuid),
        }
    }

    fn on_retired(&self, s: &Uuid) -> Option<Uuid> {
        match self.on_retired.get(s) {
            Some(r) => *r,
            None if self.cleared => None,
            None => self.tree.on_retired(s),
        }
    }

    fn retired_parent(&self, r: &Uuid) -> Option<Option<Uuid>> {
        match self.retired_parent.get(r) {
            Some(p) => *p,
            None if self.cleared => None,
            None => self.tree.retired_parent(r),
        }
    }
}

/// The physical layout after a plan's steps: the layout before, with the layers the plan
/// moves (their physical parent freed), creates or adopts, without the layers it frees.
struct LayoutAfter<'l, 't> {
    before: &'l Layout<'t>,
    freed: &'l BTreeSet<Uuid>,
    /// Layers whose physical parent differs from the one before.
    moved: HashMap<Uuid, Option<Uuid>>,
    /// Retired layers freed because nothing depends on them any more.
    reclaimed: BTreeSet<Uuid>,
    live: Option<Uuid>,
}

impl LayoutAfter<'_, '_> {
    /// A layer's physical parent; None when it is not a layer any more.
    fn parent_of(&self, layer: &Uuid) -> Option<Option<Uuid>> {
        if self.reclaimed.contains(layer) {
            return None;
        }
        if let Some(p) = self.moved.get(layer) {
            return Some(*p);
        }
        if self.freed.contains(layer) {
            return None;
        }
        self.before.parent_of(layer)
    }
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
/// dependents first. With retired data a plan costs O(what it touches + retired layers
/// and what is stored on them).
pub fn complete(tree: &SnapshotTree, plan: Plan) -> Result<Plan> {
    #[cfg(test)]
    let asked = plan.clone();
    let done = complete_affected(tree, plan);
    #[cfg(test)]
    oracle::assert_same(tree, asked, &done);
    done
}

fn complete_affected(tree: &SnapshotTree, mut plan: Plan) -> Result<Plan> {
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
    let mut edited = EditedTree::new(tree);
    edited.apply(&plan.edits);
    let retired_after = edited.retired.clone();
    // 3. The physical layout after the steps.
    let mut known = HashMap::default();
    let mut after = LayoutAfter {
        before: &layout,
        freed: &freed,
        moved: HashMap::default(),
        reclaimed: BTreeSet::new(),
        live: if detach {
            None
        } else {
            layout.surviving(layout.live, &freed, &mut known)
        },
    };
    for s in &plan.steps {
        match s {
            Step::Create { snapshot, .. } => {
                after.moved.insert(*snapshot, after.live);
                after.live = Some(*snapshot);
            }
            Step::Revert { snapshot, .. } => after.live = Some(*snapshot),
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
            after.moved.insert(*snapshot, *meta_parent);
        }
        if *current {
            after.live = Some(*snapshot);
        }
    }
    // What was stored on a freed layer now sits on the first survivor below it.
    for f in &freed {
        for c in layout.dependents_unordered(f) {
            if !freed.contains(&c) {
                let p = layout.surviving(Some(*f), &freed, &mut known);
                after.moved.insert(c, p);
            }
        }
    }
    // 4. Retired data left without dependents, freed by the same plan.
    let mut users: HashMap<Uuid, usize> = retired_after
        .difference(&freed)
        .map(|r| (*r, layout.dependents_not_in(r, &freed)))
        .collect();
    for p in after.moved.values().flatten().chain(after.live.iter()) {
        if let Some(n) = users.get_mut(p) {
            *n += 1;
        }
    }
    let mut idle: Vec<Uuid> = users
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(r, _)| *r)
        .collect();
    while let Some(r) = idle.pop() {
        let below = after.parent_of(&r).flatten();
        after.reclaimed.insert(r);
        if let Some(p) = below
            && !after.reclaimed.contains(&p)
            && let Some(n) = users.get_mut(&p)
        {
            *n -= 1;
            if *n == 0 {
                idle.push(p);
            }
        }
    }
    // The order among them is the one before the plan: moving dependents onto a
    // surviving ancestor keeps which of them sits above which.
    let mut appended = Vec::new();
    for r in layout.dependents_first(&after.reclaimed) {
        plan.steps.push(Step::DiscardLeaf { snapshot: r });
        appended.push(Edit::Unretire { snapshot: r });
    }
    // Retired layers freed with a discarded snapshot.
    for r in layout.dependents_first(&stacked) {
        if retired_after.contains(&r) {
            appended.push(Edit::Unretire { snapshot: r });
        }
    }
    edited.apply(&appended);
    plan.edits.extend(appended);
    let mut check: Vec<Uuid> = layout
        .snapshots_on
        .values()
        .flatten()
        .chain(edited.touched.iter())
        .chain(after.moved.keys())
        .chain(freed.iter())
        .chain(after.reclaimed.iter())
        .copied()
        .collect();
    check.sort_unstable();
    check.dedup();
    record_layout(&edited, &after, check, &mut plan.edits)?;
    Ok(plan)
}

/// The retired layers whose physical chain ends on a discarded snapshot and on which only
/// discarded layers (and perhaps the live state, which the backend keeps valid) are
/// stored: `discard_leaf` of the snapshot needs them gone first. A retired layer stacked
/// on a discarded snapshot with a surviving snapshot on it would mean the recorded layout
/// is wrong: `INTERNAL`.
fn stacked_retired(
    layout: &Layout<'_>,
    discarded: &BTreeSet<Uuid>,
    detach: bool,
) -> Result<BTreeSet<Uuid>> {
    let retired = layout.tree.retired();
    if discarded.is_empty() && !detach {
        // Only a discarded snapshot or a detach stacks anything.
        return Ok(BTreeSet::new());
    }
    let mut stacked: BTreeSet<Uuid> = if detach {
        retired.clone()
    } else {
        retired
            .iter()
            .filter(|r| {
                let mut at = layout.parent(r);
                while let Some(u) = at {
                    if discarded.contains(&u) {
                        return true;
                    }
                    if !retired.contains(&u) {
                        return false;
                    }
                    at = layout.parent(&u);
                }
                false
            })
            .copied()
            .collect()
    };
    loop {
        let keep: Vec<Uuid> = stacked
            .iter()
            .filter(|r| {
                layout
                    .dependents_unordered(r)
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

/// Appends the edits that make the edited tree's recorded layout `layout`. `check` holds
/// every snapshot whose record might change: those stored on a retired layer before,
/// those the edits touch, those the plan moves, frees or creates. Any other snapshot sits
/// on its unchanged metadata parent both before and after, so it needs no edit.
fn record_layout(
    tree: &EditedTree<'_>,
    layout: &LayoutAfter<'_, '_>,
    mut check: Vec<Uuid>,
    edits: &mut Vec<Edit>,
) -> Result<()> {
    let as_retired = |u: Option<Uuid>, what: &dyn Fn() -> String| -> Result<Option<Uuid>> {
        match u {
            Some(r) if tree.retired.contains(&r) => Ok(Some(r)),
            _ => Err(Error::Internal(format!(
                "{} would be stored on {u:?}, which is neither its parent nor retired",
                what()
            ))),
        }
    };
    // A retired layer the plan neither moves, frees nor retires keeps the parent the tree
    // records for it, unless the edits cleared or set those records.
    let all = tree.cleared || tree.placed_retired;
    let changed = |r: &&Uuid| {
        all || layout.moved.contains_key(*r)
            || layout.freed.contains(*r)
            || layout.reclaimed.contains(*r)
            || !tree.tree.retired().contains(*r)
    };
    for r in tree.retired.iter().filter(changed) {
        let Some(p) = layout.parent_of(r) else {
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
    check.retain(|s| tree.contains(s));
    check.sort_by_cached_key(|s| tree.order(s));
    for s in check {
        let p = layout.parent_of(&s).flatten();
        let meta = tree.parent(&s);
        let on = if p == meta {
            None
        } else {
            as_retired(p, &|| format!("snapshot {s}"))?
        };
        if tree.on_retired(&s) != on {
            edits.push(Edit::SetOnRetired {
                snapshot: s,
                retired: on,
            });
        }
    }
    let on = if layout.live == tree.current {
        None
    } else {
        as_retired(layout.live, &|| "the live state".to_string())?
    };
    if tree.live_on_retired != on {
        edits.push(Edit::SetLiveOnRetired { retired: on });
    }
    Ok(())
}
