//! The engine driving vcsim through the plugin `libsnaptree_backend_esx.so`: a tree, every
//! delete mode, revert with power states, retire and delete-all, and after every step the
//! agreement of the engine's tree with vSphere's (`Domain::check_agreement`).
//!
//! vcsim simulates the snapshot tree, not disks, so what these tests check is the tree,
//! current snapshot and power state vSphere reports. Content (that CONSOLIDATE really
//! pushes data into dependents, that a memory snapshot resumes the guest) can only be
//! checked against a real ESX; the backend has no test hooks, so the conformance kit runs
//! at tree level only (`tests/conformance.rs`).

#[macro_use]
mod common;

use common::VcsimExt;
use snaptree_backend_esx::EsxBackend;
use snaptree_backend_esx::vim::{self, VmPower};
use snaptree_engine::{DeleteMode, Domain, ErrorCode, NoProgress, PhysicalTree, PowerState, Uuid};
use snaptree_sdk::SnaptreeBackend;

fn snap(d: &mut Domain, name: &str) -> Uuid {
    d.create_snapshot(&format!("<domainsnapshot><name>{name}</name><description>about {name}</description></domainsnapshot>"))
        .unwrap_or_else(|e| panic!("create {name}: {}", e.full_message()))
}

fn agree(d: &mut Domain) {
    d.check_agreement()
        .unwrap_or_else(|e| panic!("the trees disagree: {}", e.full_message()));
}

fn delete(d: &mut Domain, s: Uuid, mode: DeleteMode) {
    d.delete(&s, mode, &mut NoProgress)
        .unwrap_or_else(|e| panic!("delete {}: {}", mode.flag_name(), e.full_message()));
    agree(d);
}

fn revert(d: &mut Domain, s: Uuid, force: Option<PowerState>) {
    d.revert(&s, force, &mut NoProgress)
        .unwrap_or_else(|e| panic!("revert: {}", e.full_message()));
    agree(d);
}

fn physical(direct: &mut EsxBackend) -> PhysicalTree {
    direct.list_physical().unwrap()
}

fn current(d: &mut Domain) -> Option<Uuid> {
    d.tree().unwrap().current().map(|c| c.uuid)
}

#[test]
fn a_tree_built_through_the_engine_is_the_tree_vsphere_holds() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    assert_eq!(
        d.power_state().unwrap(),
        PowerState::Running,
        "vcsim starts its VMs"
    );
    agree(&mut d);

    let s1 = snap(&mut d, "s1");
    agree(&mut d);
    let s2 = snap(&mut d, "s2");
    agree(&mut d);
    revert(&mut d, s1, None);
    assert_eq!(current(&mut d), Some(s1));
    let s3 = snap(&mut d, "s3");
    agree(&mut d);

    let p = physical(&mut direct);
    assert_eq!(p.parents.get(&s1), Some(&None));
    assert_eq!(p.parents.get(&s2), Some(&Some(s1)));
    assert_eq!(
        p.parents.get(&s3),
        Some(&Some(s1)),
        "a snapshot after a revert branches"
    );
    assert_eq!(p.live_parent, Some(s3));

    // vSphere names each snapshot by its uuid and carries the user's name and description.
    let vmref = direct.vm().clone();
    let (_, info) = vim::vm_state(direct.session(), &vmref).unwrap();
    let node = info.find(&s1).unwrap();
    assert_eq!(node.name, s1.to_string());
    assert_eq!(node.description, "snaptree: s1\nabout s1");
    assert_eq!(node.state, "poweredOn");
    assert_eq!(
        d.tree().unwrap().get(&s1).unwrap().state,
        PowerState::Running
    );
}

#[test]
fn revert_leaves_the_vm_in_the_snapshots_power_state_or_the_forced_one() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    let vmref = direct.vm().clone();

    let on = snap(&mut d, "on");
    vim::set_power(direct.session(), &vmref, VmPower::Off, &mut NoProgress).unwrap();
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);
    let off = snap(&mut d, "off");
    assert_eq!(
        d.tree().unwrap().get(&off).unwrap().state,
        PowerState::Shutoff
    );

    revert(&mut d, on, None);
    assert_eq!(d.power_state().unwrap(), PowerState::Running);
    revert(&mut d, off, None);
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);
    revert(&mut d, on, Some(PowerState::Paused));
    assert_eq!(
        d.power_state().unwrap(),
        PowerState::Paused,
        "paused is vSphere's suspended"
    );
    revert(&mut d, off, Some(PowerState::Running));
    assert_eq!(d.power_state().unwrap(), PowerState::Running);
    revert(&mut d, on, Some(PowerState::Shutoff));
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);

    // Snapshots of a suspended VM work too (vSphere allows every step in every state).
    revert(&mut d, on, Some(PowerState::Paused));
    let paused = snap(&mut d, "paused");
    assert_eq!(
        d.tree().unwrap().get(&paused).unwrap().state,
        PowerState::Paused
    );
    delete(&mut d, paused, DeleteMode::Discard);
}

/// ```text
/// a ─┬─ b ─┬─ c
///    │     └─ d
///    └─ e ─── f   (current)
/// ```
fn bushy(d: &mut Domain) -> [Uuid; 6] {
    let a = snap(d, "a");
    let b = snap(d, "b");
    let c = snap(d, "c");
    revert(d, b, None);
    let dd = snap(d, "d");
    revert(d, a, None);
    let e = snap(d, "e");
    let f = snap(d, "f");
    agree(d);
    let _ = c;
    [a, b, c, dd, e, f]
}

#[test]
fn merge_is_refused_before_anything_changes_naming_the_backend() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    let [_, _, c, _, _, f] = bushy(&mut d);
    let before = physical(&mut direct);
    for (s, mode) in [(f, DeleteMode::Merge), (c, DeleteMode::MergeForce)] {
        let e = d.delete(&s, mode, &mut NoProgress).unwrap_err();
        assert_eq!(
            e.code(),
            ErrorCode::OperationInvalid,
            "{}",
            e.full_message()
        );
        let msg = e.full_message();
        assert!(msg.contains("'esx'") && msg.contains("merge"), "{msg}");
    }
    // MERGE_FORCE would have discarded d first: the engine refused the plan up front.
    assert_eq!(physical(&mut direct), before);
    agree(&mut d);
}

#[test]
fn every_other_delete_mode_keeps_the_trees_in_agreement() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    let [a, b, c, dd, e, f] = bushy(&mut d);

    let err = d
        .delete(&b, DeleteMode::Discard, &mut NoProgress)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WouldDiscard);

    delete(&mut d, dd, DeleteMode::Discard);
    assert!(!physical(&mut direct).parents.contains_key(&dd));

    // vSphere's own delete: c moves under a.
    delete(&mut d, b, DeleteMode::Consolidate);
    assert_eq!(physical(&mut direct).parents.get(&c), Some(&Some(a)));

    // f was current: vSphere and the engine both move current to e.
    delete(&mut d, e, DeleteMode::ChildrenOnly);
    assert_eq!(current(&mut d), Some(e));
    assert_eq!(physical(&mut direct).live_parent, Some(e));
    assert!(!physical(&mut direct).parents.contains_key(&f));

    delete(&mut d, a, DeleteMode::DiscardForce);
    assert_eq!(physical(&mut direct), PhysicalTree::default());
    assert!(d.tree().unwrap().is_empty());
}

#[test]
fn retire_keeps_the_vsphere_snapshot_and_delete_all_frees_everything() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    let a = snap(&mut d, "a");
    let b = snap(&mut d, "b");
    let c = snap(&mut d, "c");

    // Retire (no flag) leaves the data where it is: vSphere keeps b, the engine forgets it.
    delete(&mut d, b, DeleteMode::Retire);
    assert_eq!(d.tree().unwrap().parent(&c).map(|p| p.uuid), Some(a));
    assert_eq!(physical(&mut direct).parents.get(&c), Some(&Some(b)));

    // Retiring the current snapshot: the engine's current is a, vSphere's stays c.
    delete(&mut d, c, DeleteMode::Retire);
    assert_eq!(current(&mut d), Some(a));
    assert_eq!(physical(&mut direct).live_parent, Some(c));
    let n = snap(&mut d, "n");
    assert_eq!(d.tree().unwrap().parent(&n).map(|p| p.uuid), Some(a));
    assert_eq!(
        physical(&mut direct).parents.get(&n),
        Some(&Some(c)),
        "vSphere grafts it under the retired layer"
    );
    agree(&mut d);

    // A discard of a snapshot with retired children keeps their data (removeChildren=false).
    delete(&mut d, n, DeleteMode::Discard);
    assert_eq!(
        physical(&mut direct).parents.len(),
        3,
        "a and the retired b and c remain"
    );

    // vSphere's current is the retired c here. (Had it been a, vcsim 0.24 alone would
    // crash removing it — see `removing_the_current_root_leaves_no_current` below.)
    d.delete_all(&mut NoProgress).unwrap();
    agree(&mut d);
    assert!(d.tree().unwrap().is_empty());
    assert!(d.tree().unwrap().retired().is_empty());
    assert_eq!(
        physical(&mut direct),
        PhysicalTree::default(),
        "delete-all frees the retired snapshots too"
    );
}

#[test]
fn consolidating_a_root_leaves_several_roots() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    let a = snap(&mut d, "a");
    let b = snap(&mut d, "b");
    revert(&mut d, a, None);
    let c = snap(&mut d, "c");
    delete(&mut d, a, DeleteMode::Consolidate);
    let p = physical(&mut direct);
    assert_eq!(
        (p.parents.get(&b), p.parents.get(&c)),
        (Some(&None), Some(&None))
    );
    revert(&mut d, b, None);
    delete(&mut d, c, DeleteMode::Discard);
    delete(&mut d, b, DeleteMode::Discard);
    assert_eq!(physical(&mut direct), PhysicalTree::default());
}

/// A limit of the simulator, not of the backend: vcsim 0.24's RemoveSnapshot_Task hands a
/// nil parent to its property update when the removed snapshot is the current one and a
/// root while other snapshots remain, and the request dies with a Go panic (the
/// connection closes). A real ESX makes the VM's current snapshot unset, and so does the
/// rig's vcsim (`backends/esx/vcsim/main.go` clears current before such a removal): the
/// engine's current and vSphere's then agree on none.
#[test]
fn removing_the_current_root_leaves_no_current() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    let a = snap(&mut d, "a");
    let b = snap(&mut d, "b");
    revert(&mut d, a, None);
    let c = snap(&mut d, "c");
    delete(&mut d, a, DeleteMode::Consolidate);
    // Now b and c are roots and c is current.
    delete(&mut d, c, DeleteMode::Discard);
    assert_eq!(current(&mut d), None);
    let p = physical(&mut direct);
    assert_eq!(p.live_parent, None, "vSphere has no current snapshot");
    assert_eq!(p.parents.get(&b), Some(&None));
    assert!(
        !sim.log().contains("panic"),
        "vcsim panicked:\n{}",
        sim.log()
    );
}

#[test]
fn delete_all_removes_a_whole_tree() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    bushy(&mut d);
    let plan = d.delete_all(&mut NoProgress).unwrap();
    assert!(
        plan.steps
            .iter()
            .all(|s| matches!(s, snaptree_engine::Step::DiscardLeaf { .. })),
        "detach_live is unsupported, so the engine drops it: {:?}",
        plan.steps
    );
    agree(&mut d);
    assert_eq!(physical(&mut direct), PhysicalTree::default());
    assert_eq!(
        d.power_state().unwrap(),
        PowerState::Running,
        "delete-all leaves the live state alone"
    );
}

#[test]
fn rename_is_metadata_only_so_vsphere_keeps_the_uuid_name() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let mut direct = sim.direct(&vm);
    let s = snap(&mut d, "before");
    d.rename(&s, "after").unwrap();
    agree(&mut d);
    let vmref = direct.vm().clone();
    let (_, info) = vim::vm_state(direct.session(), &vmref).unwrap();
    let node = info.find(&s).unwrap().clone();
    assert_eq!(
        node.description, "snaptree: before\nabout before",
        "the description records the name at creation"
    );
    // vcsim does not implement RenameSnapshot, so a backend that updated the description on
    // rename could only be tested against a real ESX; snaptree's rename needs no call.
    let err = direct
        .session()
        .call("RenameSnapshot", &node.moref, "<name>x</name>")
        .unwrap_err();
    assert_eq!(err.fault_kind(), Some("MethodNotFound"), "{err:?}");
}

/// After a lost state store the VM keeps its old snapshots, named by uuid. A create that
/// reuses one of those uuids must not take that old snapshot for the new one (its data is
/// not the live state): the create step used to return at once when a vSphere snapshot of
/// that name existed, so the engine recorded a snapshot whose data was another's. Found by
/// the tree-level kit (a create reusing a uuid, after a lost store and one new snapshot).
#[test]
fn a_create_reusing_the_uuid_of_a_snapshot_a_lost_store_left_is_refused() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut direct = sim.direct(&vm);
    let old = {
        let mut d = sim.domain(&vm);
        snap(&mut d, "old")
    };
    // The store is lost: a new, empty domain over the same VM.
    let mut d = sim.domain(&vm);
    let fresh = snap(&mut d, "fresh");
    let before = physical(&mut direct);
    snaptree_tests::assert_reused_uuid_refused(&mut d, old, "esx");
    assert_eq!(current(&mut d), Some(fresh), "expected current unchanged");
    assert_eq!(
        physical(&mut direct),
        before,
        "expected vSphere's tree unchanged"
    );

    // A create step run again after vSphere made its snapshot (what a roll-forward does)
    // still counts as done.
    let mut backend = sim.direct(&vm);
    let next = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001);
    for _ in 0..2 {
        backend
            .execute(
                &snaptree_sdk::Step::Create {
                    snapshot: next,
                    name: "next".into(),
                    description: String::new(),
                    parent: Some(fresh),
                },
                &mut NoProgress,
            )
            .unwrap_or_else(|e| panic!("create step: {e}"));
    }
    let after = physical(&mut direct);
    assert_eq!(after.parents.get(&next), Some(&Some(fresh)));
    assert_eq!(
        after.parents.len(),
        before.parents.len() + 1,
        "expected one new snapshot"
    );
}
