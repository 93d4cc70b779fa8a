//! The backend type itself, without the engine: every step re-run after it finished
//! finishes without doing it twice (the engine re-runs an interrupted step after a crash),
//! a cancel before a step changes nothing, and an expired session is renewed.

#[macro_use]
mod common;

use common::VcsimExt;
use snaptree_backend_esx::EsxBackend;
use snaptree_backend_esx::vim;
use snaptree_engine::{NoProgress, PhysicalTree, PowerState, Step, Uuid};
use snaptree_sdk::SnaptreeBackend;

fn run(b: &mut EsxBackend, step: &Step) {
    b.execute(step, &mut NoProgress)
        .unwrap_or_else(|e| panic!("{step:?}: {e}"));
}

fn create(snapshot: Uuid, parent: Option<Uuid>) -> Step {
    Step::Create {
        snapshot,
        parent,
        name: "n".into(),
        description: String::new(),
    }
}

#[test]
fn every_step_can_be_run_again() {
    let sim = vcsim_or_skip!();
    let mut b = sim.direct(&sim.vm().name);
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    for step in [
        create(a, None),
        create(a, None),
        create(c, Some(a)),
        create(c, Some(a)),
    ] {
        run(&mut b, &step);
    }
    let p = b.list_physical().unwrap();
    assert_eq!(
        p.parents.len(),
        2,
        "a re-run create makes no second snapshot"
    );
    assert_eq!(p.live_parent, Some(c));

    let revert = Step::Revert {
        snapshot: a,
        state: PowerState::Shutoff,
    };
    run(&mut b, &revert);
    run(&mut b, &revert);
    assert_eq!(b.power_state().unwrap(), PowerState::Shutoff);
    assert_eq!(b.list_physical().unwrap().live_parent, Some(a));

    // c first: vcsim crashes removing a current root while others remain (engine.rs).
    for step in [
        Step::Forget { snapshot: c },
        Step::DiscardLeaf { snapshot: c },
        Step::DiscardLeaf { snapshot: c },
        Step::Consolidate { snapshot: a },
        Step::Consolidate { snapshot: a },
    ] {
        run(&mut b, &step);
    }
    assert_eq!(b.list_physical().unwrap(), PhysicalTree::default());
}

#[test]
fn a_cancel_before_the_step_changes_nothing() {
    let sim = vcsim_or_skip!();
    let mut b = sim.direct(&sim.vm().name);
    let a = Uuid::new_v4();
    let mut cancel = |_: f64| false;
    let e = b.execute(&create(a, None), &mut cancel).unwrap_err();
    assert!(
        e.message().contains("cancelled") && e.message().contains("nothing changed"),
        "{e}"
    );
    assert_eq!(b.list_physical().unwrap(), PhysicalTree::default());

    run(&mut b, &create(a, None));
    let mut fractions = Vec::new();
    let mut record = |f: f64| {
        fractions.push(f);
        true
    };
    b.execute(&Step::DiscardLeaf { snapshot: a }, &mut record)
        .unwrap();
    assert_eq!(fractions.first(), Some(&0.0));
    assert_eq!(fractions.last(), Some(&1.0));
}

#[test]
fn merge_and_detach_live_are_not_offered() {
    let caps = EsxBackend::capabilities();
    use snaptree_engine::StepKind::*;
    for k in [Create, Revert, DiscardLeaf, Consolidate, Forget] {
        assert!(
            PowerState::ALL.into_iter().all(|s| caps.allows(k, s)),
            "{k:?} in every power state"
        );
    }
    assert!(!caps.supports(MergeIntoParent) && !caps.supports(DetachLive));
    let p = common::plugin();
    assert_eq!(p.name(), "esx");
    assert!(
        !p.has_test_hooks(),
        "vcsim simulates no disks: no test hooks"
    );
    assert!(!p.capabilities().supports(MergeIntoParent));
}

#[test]
fn an_expired_session_is_renewed() {
    let sim = vcsim_or_skip!();
    let mut b = sim.direct(&sim.vm().name);
    // End the session behind the backend's back, as vCenter does after 30 idle minutes.
    let sm = b.session().content().session_manager.clone();
    b.session().call("Logout", &sm, "").unwrap();
    let vm = b.vm().clone();
    let e = vim::retrieve(b.session(), &vm.moref, &["name"]);
    assert!(e.is_ok(), "the call after logout logs in again: {e:?}");
    assert_eq!(b.power_state().unwrap(), PowerState::Running);
}
