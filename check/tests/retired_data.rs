//! Retired data on the strict delta-chain simulator (SEMANTICS.md §7.2, issue 16
//! divergences 1, 2 and 4): freed in physical dependency order, freed as soon as nothing
//! depends on it, consolidated by `reclaim`, and revert refused before it runs when the
//! backend cannot leave the domain in the state the revert asks for.

use snaptree_check::SimBackend;
use snaptree_engine::{
    Backend, Capabilities, ContentRef, DeleteMode, Domain, ErrorCode, NoProgress, PowerMask,
    PowerState, Step, StepKind, Uuid,
};

const XML: &str = "<domain type='sim'><name>vm</name></domain>";

fn domain(sim: SimBackend) -> Domain {
    Domain::ephemeral(XML, Box::new(sim)).unwrap()
}

/// Writes guest data, then takes a snapshot named `name` with uuid `u`.
fn snap(d: &mut Domain, name: &str, u: u128, seed: u64) -> Uuid {
    d.backend().test_hooks().unwrap().write_guest(seed).unwrap();
    d.create_snapshot(&format!(
        "<domainsnapshot><name>{name}</name><uuid>{}</uuid></domainsnapshot>",
        Uuid::from_u128(u)
    ))
    .unwrap()
}

fn digest(d: &mut Domain, of: ContentRef) -> String {
    d.backend()
        .test_hooks()
        .unwrap()
        .content_digest(of)
        .unwrap()
}

fn layers(d: &mut Domain) -> Vec<Uuid> {
    d.backend()
        .list_physical()
        .unwrap()
        .parents
        .keys()
        .copied()
        .collect()
}

fn discards(plan: &snaptree_engine::Plan) -> Vec<Uuid> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::DiscardLeaf { snapshot } => Some(*snapshot),
            _ => None,
        })
        .collect()
}

#[test]
fn delete_all_frees_retired_data_dependents_first() {
    // Uuids increase with creation, so a sorted-uuid order frees a (below b) first.
    let mut d = domain(SimBackend::new());
    let a = snap(&mut d, "a", 1, 1);
    let b = snap(&mut d, "b", 2, 2);
    // b is the live state's base, so retiring it keeps its data; a keeps it because b
    // sits on it.
    d.delete(&a, DeleteMode::Retire, &mut NoProgress).unwrap();
    d.delete(&b, DeleteMode::Retire, &mut NoProgress).unwrap();
    let live = digest(&mut d, ContentRef::Live);
    let plan = d.delete_all(&mut NoProgress).unwrap();
    assert_eq!(
        plan.steps.first(),
        Some(&Step::DetachLive),
        "expected delete-all to detach the live state first"
    );
    assert_eq!(
        discards(&plan),
        vec![b, a],
        "expected b (stored on a) freed before a"
    );
    assert!(layers(&mut d).is_empty(), "expected no data left");
    assert_eq!(digest(&mut d, ContentRef::Live), live);
}

#[test]
fn the_simulator_refuses_to_discard_a_retired_layer_something_depends_on() {
    let mut sim = SimBackend::new();
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    for (s, parent) in [(a, None), (b, Some(a))] {
        sim.execute(
            &Step::Create {
                snapshot: s,
                parent,
                name: s.to_string(),
                description: String::new(),
            },
            &mut NoProgress,
        )
        .unwrap();
    }
    sim.execute(&Step::Forget { snapshot: a }, &mut NoProgress)
        .unwrap();
    let err = sim
        .execute(&Step::DiscardLeaf { snapshot: a }, &mut NoProgress)
        .expect_err("expected discard_leaf of a retired layer under b refused");
    assert!(
        err.to_string().contains("precondition"),
        "expected a precondition violation, got: {err}"
    );
    // Not retired: the same.
    let mut sim2 = SimBackend::new();
    sim2.execute(
        &Step::Create {
            snapshot: a,
            parent: None,
            name: "a".into(),
            description: String::new(),
        },
        &mut NoProgress,
    )
    .unwrap();
    sim2.execute(
        &Step::Create {
            snapshot: b,
            parent: Some(a),
            name: "b".into(),
            description: String::new(),
        },
        &mut NoProgress,
    )
    .unwrap();
    sim2.execute(&Step::Forget { snapshot: b }, &mut NoProgress)
        .unwrap();
    assert!(
        sim2.execute(&Step::DiscardLeaf { snapshot: a }, &mut NoProgress)
            .is_err(),
        "expected discard_leaf of a under retired b refused"
    );
}

#[test]
fn retired_data_is_freed_by_the_operation_that_leaves_it_without_dependents() {
    // create a; create r; create x; revert a; delete r; delete x --delete
    let mut d = domain(SimBackend::new());
    let a = snap(&mut d, "a", 1, 1);
    let r = snap(&mut d, "r", 2, 2);
    let x = snap(&mut d, "x", 3, 3);
    d.revert(&a, None, &mut NoProgress).unwrap();
    d.delete(&r, DeleteMode::Retire, &mut NoProgress).unwrap();
    assert!(
        layers(&mut d).contains(&r),
        "expected r's data kept while x sits on it"
    );
    let plan = d.delete(&x, DeleteMode::Discard, &mut NoProgress).unwrap();
    assert_eq!(
        discards(&plan),
        vec![x, r],
        "expected x freed, then r in the same plan"
    );
    assert!(!layers(&mut d).contains(&r), "expected no data of r left");
    assert!(
        d.tree().unwrap().retired().is_empty(),
        "expected r no longer retired"
    );
}

#[test]
fn a_revert_frees_the_retired_layer_the_live_state_leaves() {
    // create a; create r; delete r; revert a
    let mut d = domain(SimBackend::new());
    let a = snap(&mut d, "a", 1, 1);
    let r = snap(&mut d, "r", 2, 2);
    d.delete(&r, DeleteMode::Retire, &mut NoProgress).unwrap();
    assert!(
        layers(&mut d).contains(&r),
        "expected r's data kept: the live state sits on it"
    );
    let plan = d.revert(&a, None, &mut NoProgress).unwrap();
    assert_eq!(discards(&plan), vec![r], "expected the revert to free r");
    assert_eq!(layers(&mut d), vec![a]);
    assert!(d.tree().unwrap().retired().is_empty());
}

#[test]
fn retiring_a_leaf_the_live_state_does_not_use_frees_it_at_once() {
    let mut d = domain(SimBackend::new());
    let a = snap(&mut d, "a", 1, 1);
    let b = snap(&mut d, "b", 2, 2);
    d.revert(&a, None, &mut NoProgress).unwrap();
    let plan = d.delete(&b, DeleteMode::Retire, &mut NoProgress).unwrap();
    assert_eq!(discards(&plan), vec![b]);
    assert_eq!(layers(&mut d), vec![a]);
    assert!(d.tree().unwrap().retired().is_empty());
}

#[test]
fn discarding_a_snapshot_frees_the_retired_layer_above_it_first() {
    // create s; create r; delete r (retire; live sits on r); delete s --discard
    let mut d = domain(SimBackend::new());
    let s = snap(&mut d, "s", 1, 1);
    let r = snap(&mut d, "r", 2, 2);
    d.delete(&r, DeleteMode::Retire, &mut NoProgress).unwrap();
    let live = digest(&mut d, ContentRef::Live);
    let plan = d.delete(&s, DeleteMode::Discard, &mut NoProgress).unwrap();
    assert_eq!(discards(&plan), vec![r, s]);
    assert!(layers(&mut d).is_empty());
    assert_eq!(digest(&mut d, ContentRef::Live), live);
}

#[test]
fn reclaim_consolidates_retired_data_that_still_has_dependents() {
    let mut d = domain(SimBackend::new());
    let a = snap(&mut d, "a", 1, 1);
    let r = snap(&mut d, "r", 2, 2);
    let x = snap(&mut d, "x", 3, 3);
    d.backend().test_hooks().unwrap().write_guest(4).unwrap();
    d.delete(&r, DeleteMode::Retire, &mut NoProgress).unwrap();
    let before: Vec<String> = [
        ContentRef::Live,
        ContentRef::Snapshot(a),
        ContentRef::Snapshot(x),
    ]
    .into_iter()
    .map(|c| digest(&mut d, c))
    .collect();
    let plan = d.reclaim(&mut NoProgress).unwrap();
    assert_eq!(plan.steps, vec![Step::Consolidate { snapshot: r }]);
    let after: Vec<String> = [
        ContentRef::Live,
        ContentRef::Snapshot(a),
        ContentRef::Snapshot(x),
    ]
    .into_iter()
    .map(|c| digest(&mut d, c))
    .collect();
    assert_eq!(after, before, "expected every content unchanged");
    assert!(!layers(&mut d).contains(&r));
    assert!(d.tree().unwrap().retired().is_empty());
    d.check_agreement().unwrap();
    // Nothing left to reclaim: an empty plan.
    assert!(d.reclaim(&mut NoProgress).unwrap().steps.is_empty());
}

#[test]
fn reclaim_is_refused_before_anything_runs_without_consolidate() {
    let caps = Capabilities::ALL.with(StepKind::Consolidate, PowerMask::NONE);
    let mut d = domain(SimBackend::new().with_capabilities(caps));
    snap(&mut d, "a", 1, 1);
    let r = snap(&mut d, "r", 2, 2);
    snap(&mut d, "x", 3, 3);
    d.delete(&r, DeleteMode::Retire, &mut NoProgress).unwrap();
    let err = d.reclaim(&mut NoProgress).unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationInvalid, "{err}");
    assert!(layers(&mut d).contains(&r), "expected nothing changed");
    assert!(d.tree().unwrap().retired().contains(&r));
}

#[test]
fn a_revert_that_would_leave_a_state_the_backend_cannot_reach_is_refused_first() {
    // Like QEMU offline: every step, but only while shut off.
    let caps = Capabilities::all_in(PowerState::Shutoff.bit());
    let mut sim = SimBackend::new().with_capabilities(caps);
    sim.set_power_state(PowerState::Shutoff);
    let mut d = domain(sim);
    let a = snap(&mut d, "a", 1, 1);
    d.backend().test_hooks().unwrap().write_guest(9).unwrap();
    let live = digest(&mut d, ContentRef::Live);
    for force in [Some(PowerState::Running), Some(PowerState::Paused)] {
        let err = d.revert(&a, force, &mut NoProgress).unwrap_err();
        assert_eq!(err.code(), ErrorCode::OperationInvalid, "{err}");
        assert!(
            err.to_string().contains("would leave"),
            "expected the message to name the resulting state: {err}"
        );
        assert_eq!(
            digest(&mut d, ContentRef::Live),
            live,
            "expected the refused revert to change nothing"
        );
    }
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);
    d.revert(&a, Some(PowerState::Shutoff), &mut NoProgress)
        .unwrap();
}

#[test]
fn a_revert_to_a_running_snapshot_is_refused_when_the_backend_cannot_leave_it_running() {
    // Like QEMU live with external disks: reverts only while shut off.
    let caps = Capabilities::ALL.with(StepKind::Revert, PowerState::Shutoff.bit());
    let mut sim = SimBackend::new().with_capabilities(caps);
    sim.set_power_state(PowerState::Running);
    let mut d = domain(sim);
    let a = snap(&mut d, "a", 1, 1);
    // The same domain, now shut off: reverting to running `a` would start it.
    set_power(&mut d, PowerState::Shutoff);
    let err = d.revert(&a, None, &mut NoProgress).unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationInvalid, "{err}");
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);
    d.revert(&a, Some(PowerState::Shutoff), &mut NoProgress)
        .unwrap();
}

/// Changes the simulated power state through the engine's boxed backend: a revert step
/// to the current content with the wanted state, run directly on the backend.
fn set_power(d: &mut Domain, state: PowerState) {
    let current = d.tree().unwrap().current().unwrap().uuid;
    d.backend()
        .execute(
            &Step::Revert {
                snapshot: current,
                state,
            },
            &mut NoProgress,
        )
        .unwrap();
}

#[test]
fn metadata_without_the_layout_of_retired_data_learns_it_from_the_backend() {
    use snaptree_engine::{MemoryStore, SnapshotTree, xml::DomainXml};
    // The backend's disk: a, then r on a, then x on r, live on x; r retired.
    let mut sim = SimBackend::new();
    let (a, r, x) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    for (s, parent) in [(a, None), (r, Some(a)), (x, Some(r))] {
        sim.execute(
            &Step::Create {
                snapshot: s,
                parent,
                name: s.to_string(),
                description: String::new(),
            },
            &mut NoProgress,
        )
        .unwrap();
    }
    sim.execute(&Step::Forget { snapshot: r }, &mut NoProgress)
        .unwrap();
    // Metadata as a store before schema version 3 kept it: no place for r.
    let mut tree = SnapshotTree::new();
    let snapshot = |u: Uuid, name: &str| snaptree_engine::Snapshot {
        uuid: u,
        name: name.into(),
        description: String::new(),
        creation_date: 0,
        state: PowerState::Shutoff,
        expires: None,
        pinned: false,
    };
    tree.insert(snapshot(a, "a"), None).unwrap();
    tree.insert(snapshot(x, "x"), Some(a)).unwrap();
    tree.set_current(Some(x)).unwrap();
    tree.add_retired(r);
    assert!(!tree.physical_known());
    let mut d = Domain::from_parts(
        DomainXml::parse(XML).unwrap(),
        XML.into(),
        Uuid::from_u128(99),
        tree,
        Box::new(sim),
        Box::new(MemoryStore::default()),
    )
    .unwrap();
    let t = d.cached_tree();
    assert!(t.physical_known(), "expected the layout learned on open");
    assert_eq!(t.retired_parent(&r), Some(Some(a)));
    assert_eq!(t.on_retired(&x), Some(r));
    // Now the engine knows x sits on r: once the live state is elsewhere, discarding x
    // frees r after it.
    let plan = d.revert(&a, None, &mut NoProgress).unwrap();
    assert!(discards(&plan).is_empty(), "expected r kept: x is on it");
    let plan = d.delete(&x, DeleteMode::Discard, &mut NoProgress).unwrap();
    assert_eq!(discards(&plan), vec![x, r]);
    assert_eq!(layers(&mut d), vec![a]);
}

#[test]
fn would_discard_names_the_victims_parents_first() {
    let mut d = domain(SimBackend::new());
    let p = snap(&mut d, "p", 1, 1);
    let s = snap(&mut d, "s", 2, 2);
    d.revert(&p, None, &mut NoProgress).unwrap();
    // Siblings of s: z (created first, uuid high) with child c, and b with child a.
    let z = snap(&mut d, "z", 90, 3);
    snap(&mut d, "c", 10, 4);
    d.revert(&p, None, &mut NoProgress).unwrap();
    snap(&mut d, "b", 50, 5);
    snap(&mut d, "a", 5, 6);
    let _ = z;
    let err = d
        .delete(&s, DeleteMode::Merge, &mut NoProgress)
        .unwrap_err();
    match err {
        snaptree_engine::Error::WouldDiscard { victims, .. } => {
            assert_eq!(
                victims,
                ["z", "c", "b", "a"],
                "expected a topological order"
            )
        }
        other => panic!("expected WOULD_DISCARD, got {other}"),
    }
    let err = d
        .delete(&p, DeleteMode::Discard, &mut NoProgress)
        .unwrap_err();
    match err {
        snaptree_engine::Error::WouldDiscard { victims, .. } => {
            assert_eq!(
                victims,
                ["s", "z", "c", "b", "a"],
                "expected a topological order"
            )
        }
        other => panic!("expected WOULD_DISCARD, got {other}"),
    }
}
