//! SEMANTICS.md §7.4: a KEEP_LIVE revert on a backend that cannot create in the live power
//! state is refused before anything runs — no step sent, tree unchanged — although the
//! plain revert is allowed there.

use snaptree_check::SimBackend;
use snaptree_check::harness::KitBackend;
use snaptree_engine::{Domain, ErrorCode, NoProgress, PowerState};

#[test]
fn keep_live_is_refused_up_front_where_the_backend_cannot_create() {
    // create only while running; every other step in every state (model order: create,
    // revert, discard_leaf, merge_into_parent, consolidate, detach_live, forget).
    let kit = KitBackend::new(Box::new(SimBackend::new()), [1, 7, 7, 7, 7, 7, 7], true).unwrap();
    let mut d = Domain::ephemeral(
        "<domain type='sim'><name>vm</name></domain>",
        Box::new(kit.clone()),
    )
    .unwrap();
    kit.set_power(PowerState::Running).unwrap();
    let a = d
        .create_snapshot("<domainsnapshot><name>a</name></domainsnapshot>")
        .unwrap();
    kit.set_power(PowerState::Shutoff).unwrap();
    let before = d.tree().unwrap().clone();
    kit.arm(None);
    let e = d
        .revert_keep_live(&a, Some(PowerState::Shutoff), Some("k"), &mut NoProgress)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(e.to_string().contains("create snapshots"), "{e}");
    assert!(kit.log().is_empty(), "steps ran: {:?}", kit.log());
    assert_eq!(d.tree().unwrap().len(), before.len());
    assert!(d.tree().unwrap().by_name("k").is_none());
    // The same revert without KEEP_LIVE is allowed, and KEEP_LIVE is once running.
    d.revert(&a, Some(PowerState::Shutoff), &mut NoProgress)
        .unwrap();
    kit.set_power(PowerState::Running).unwrap();
    d.revert_keep_live(&a, Some(PowerState::Running), Some("k"), &mut NoProgress)
        .unwrap();
    assert!(d.tree().unwrap().by_name("k").is_some());
}
