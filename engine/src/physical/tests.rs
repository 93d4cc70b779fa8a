//! `complete` against its oracle (the O(snapshots) algorithm it replaced, `oracle.rs`) on
//! random operation sequences that build trees with retired data. Every plan the planner
//! completes in an engine test is checked the same way (`complete` calls the oracle under
//! `cfg(test)`); these sequences make sure many such plans exist. More sequences:
//! `SNAPTREE_PHYSICAL_CASES=N`.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::{Layout, oracle};
use crate::model::PowerState;
use crate::plan::{DeleteMode, Plan, apply_edits};
use crate::planner::{
    CreateContext, RedefineContext, plan_create, plan_delete, plan_delete_all, plan_reclaim,
    plan_redefine, plan_revert,
};
use crate::tree::SnapshotTree;
use crate::xml::SnapshotXml;

/// A small deterministic generator (splitmix64), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_u128((u128::from(self.next()) << 64) | u128::from(self.next()))
    }
}

fn cases() -> usize {
    std::env::var("SNAPTREE_PHYSICAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// One random operation planned on `tree` (None: refused, as the planner may).
fn random_plan(tree: &SnapshotTree, rng: &mut Rng, n: &mut usize) -> Option<Plan> {
    let snaps: Vec<Uuid> = tree.iter().map(|s| s.uuid).collect();
    let pick = |rng: &mut Rng| snaps[rng.below(snaps.len())];
    let roll = rng.below(100);
    *n += 1;
    let plan = if roll < 30 || snaps.is_empty() {
        let xml = SnapshotXml {
            name: Some(format!("s{n}")),
            uuid: Some(rng.uuid()),
            ..SnapshotXml::default()
        };
        let ctx = CreateContext {
            live_state: PowerState::Running,
            now: 0,
            fresh_uuid: rng.uuid(),
        };
        plan_create(tree, "d", &xml, ctx)
    } else if roll < 42 {
        plan_revert(tree, "d", &pick(rng), None)
    } else if roll < 88 {
        let mode = DeleteMode::ALL[rng.below(DeleteMode::ALL.len())];
        // RETIRE most often: it is what makes retired data.
        let mode = if rng.below(2) == 0 {
            DeleteMode::Retire
        } else {
            mode
        };
        plan_delete(tree, "d", &pick(rng), mode)
    } else if roll < 91 {
        plan_reclaim(tree)
    } else if roll < 92 {
        plan_delete_all(tree)
    } else {
        let xml = SnapshotXml {
            name: Some(format!("s{n}")),
            uuid: Some(rng.uuid()),
            parent_uuid: (rng.below(4) != 0).then(|| pick(rng)),
            ..SnapshotXml::default()
        };
        let ctx = RedefineContext {
            domain_uuid: Uuid::nil(),
            now: 0,
            current: rng.below(2) == 0,
        };
        plan_redefine(tree, "d", &xml, ctx)
    };
    plan.ok()
}

/// The parents-first order, parents and dependents of every layer, against the oracle's.
fn same_layout(tree: &SnapshotTree) {
    let all: BTreeSet<Uuid> = tree
        .iter()
        .map(|s| s.uuid)
        .chain(tree.retired().iter().copied())
        .collect();
    let new = Layout::of(tree).expect("layout");
    let old = oracle::Layout::of(tree).expect("oracle layout");
    assert_eq!(new.dependents_first(&all), old.dependents_first(&all));
    for u in &all {
        assert_eq!(new.parent(u), old.parent(u), "parent of {u}");
        assert_eq!(new.dependents(u), old.dependents(u), "dependents of {u}");
    }
}

#[test]
fn complete_matches_its_oracle_on_random_trees_with_retired_data() {
    let before = oracle::CHECKED.with(|c| c.get());
    let mut with_retired = 0;
    for case in 0..cases() {
        let mut rng = Rng(case as u64);
        let mut tree = SnapshotTree::new();
        let mut n = 0;
        let steps = 20 + rng.below(60);
        for _ in 0..steps {
            // Plans not applied are checked too: every delete mode of a random snapshot.
            if !tree.is_empty() {
                let s = tree.iter().nth(rng.below(tree.len())).map(|s| s.uuid);
                for mode in DeleteMode::ALL {
                    let _ = plan_delete(&tree, "d", &s.expect("a snapshot"), mode);
                }
            }
            if let Some(plan) = random_plan(&tree, &mut rng, &mut n) {
                apply_edits(&mut tree, &plan.edits).expect("the plan applies");
            }
            if !tree.retired().is_empty() {
                with_retired += 1;
                same_layout(&tree);
            }
        }
    }
    let checked = oracle::CHECKED.with(|c| c.get()) - before;
    // Not vacuous: most states hold retired data, and each plans several operations.
    assert!(
        with_retired > cases() * 10 && checked > cases() * 50,
        "only {with_retired} states with retired data, {checked} plans checked"
    );
}
