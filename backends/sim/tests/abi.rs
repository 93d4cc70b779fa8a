//! The sim at the ABI level: flags, NULL arguments, out-parameters, and re-running steps.

mod common;

use common::{Sim, vtable};
use snaptree_abi as abi;

const INVALID_ARG: i32 = abi::SNAPTREE_BACKEND_ERR_INVALID_ARG as i32;

#[test]
fn the_vtable_declares_abi_1_0_and_every_step_in_every_state() {
    let vt = vtable();
    assert_eq!(vt.abi_version, abi::SNAPTREE_BACKEND_ABI_VERSION);
    assert_eq!(
        vt.struct_size as usize,
        std::mem::size_of::<abi::snaptree_backend_vtable>()
    );
    for step in 0..abi::SNAPTREE_STEP_COUNT {
        assert_eq!(
            abi::step_mask(vt.capabilities, step),
            7,
            "expected step {step} in every power state"
        );
    }
    assert!(
        vt.domain_capabilities.is_none(),
        "the sim's capabilities do not depend on the domain"
    );
}

#[test]
fn every_function_refuses_unknown_flag_bits() {
    let dir = tempfile::tempdir().unwrap();
    let e = Sim::try_open(dir.path(), 1).expect_err("open_domain must refuse flag 1");
    assert_eq!(e.0, INVALID_ARG);
    assert!(e.1.contains("unknown flag bits 0x1"), "got {e:?}");

    let sim = Sim::open(dir.path());
    sim.write_guest(1);
    sim.create(1, 0).unwrap();
    for (what, result) in [
        ("power_state", sim.power_state(0x10).map(|_| ())),
        ("create", sim.create(2, 0x2)),
        (
            "revert",
            sim.revert(1, abi::SNAPTREE_POWER_RUNNING as i32, 0x4),
        ),
        ("discard_leaf", sim.discard_leaf(1, 0x8)),
        ("merge_into_parent", sim.merge(1, None, 0x100)),
        ("consolidate", sim.consolidate(1, 0x80000000)),
        ("detach_live", sim.detach_live(0x20)),
        ("forget", sim.forget(1, 0x40)),
    ] {
        let e = result
            .err()
            .unwrap_or_else(|| panic!("{what} must refuse unknown flags"));
        assert_eq!(e.0, INVALID_ARG, "{what}: {e:?}");
        assert!(e.1.starts_with("unknown flag bits 0x"), "{what}: {e:?}");
    }
    // Nothing changed: the snapshot is there and live still sits on it.
    assert_eq!(sim.physical(), (vec![(1, None)], Some(1)));
    assert_eq!(
        sim.power_state(0).unwrap(),
        abi::SNAPTREE_POWER_SHUTOFF as i32
    );

    let f = vtable().close_domain.unwrap();
    let other = Sim::open(dir.path());
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: an open handle, closed here once (and forgotten below so Drop does not close it again).
    let rc = unsafe { f(other.handle, 0x2, &mut err) };
    std::mem::forget(other);
    assert_eq!(
        (rc, err.code),
        (-1, INVALID_ARG),
        "close_domain must refuse unknown flags (and still free the handle)"
    );
}

#[test]
fn null_arguments_are_refused_and_out_parameters_untouched_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::open(dir.path());
    let mut state = 42;
    let mut err = abi::snaptree_backend_error::default();
    let f = vtable().power_state.unwrap();
    // SAFETY: a NULL handle is what is being tested; the out-pointer and error are valid.
    let rc = unsafe { f(std::ptr::null_mut(), &mut state, 0, &mut err) };
    assert_eq!(
        (rc, err.code, state),
        (-1, INVALID_ARG, 42),
        "a NULL handle is refused and the state left alone"
    );

    let mut err = abi::snaptree_backend_error::default();
    let revert = vtable().revert.unwrap();
    // SAFETY: a NULL snapshot is what is being tested.
    let rc = unsafe {
        revert(
            sim.handle,
            std::ptr::null(),
            1,
            None,
            std::ptr::null_mut(),
            0,
            &mut err,
        )
    };
    assert_eq!((rc, err.code), (-1, INVALID_ARG));

    let e = sim
        .revert(9, 77, 0)
        .expect_err("an unknown power state is refused");
    assert_eq!(e.0, INVALID_ARG, "got {e:?}");
}

#[test]
fn digests_ignore_zero_blocks_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::open(dir.path());
    let empty = sim.digest(None).unwrap();
    assert_eq!(empty.len(), 16);
    sim.write_guest(7);
    let written = sim.digest(None).unwrap();
    assert_ne!(written, empty);
    sim.create(1, 0).unwrap();
    assert_eq!(
        sim.digest(None).unwrap(),
        written,
        "the same content on another layout has the same digest"
    );
    let e = sim
        .digest(Some(99))
        .expect_err("a missing layer has no digest");
    assert!(e.1.contains("has no layer"), "got {e:?}");
}

#[test]
fn re_running_a_finished_step_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::open(dir.path());
    sim.write_guest(1);
    sim.create(1, 0).unwrap();
    sim.create(1, 0).unwrap(); // again: a re-run after the live layer switched over
    sim.write_guest(2);
    sim.create(2, 0).unwrap();
    sim.write_guest(3);
    sim.create(3, 0).unwrap();
    sim.write_guest(4);
    let digests = |sim: &Sim| [1, 2, 3].map(|s| sim.digest(Some(s)).ok());
    let (before, live) = (digests(&sim), sim.digest(None).unwrap());

    sim.consolidate(2, 0).unwrap();
    sim.consolidate(2, 0).unwrap();
    assert_eq!(digests(&sim), [before[0].clone(), None, before[2].clone()]);
    sim.merge(3, Some(1), 0).unwrap();
    sim.merge(3, Some(1), 0).unwrap();
    assert_eq!(
        sim.digest(Some(1)).ok(),
        before[2],
        "merge made s1 s3's content, once"
    );
    sim.detach_live(0).unwrap();
    sim.detach_live(0).unwrap();
    sim.discard_leaf(1, 0).unwrap();
    sim.discard_leaf(1, 0).unwrap();
    assert_eq!(sim.physical(), (vec![], None));
    assert_eq!(
        sim.digest(None).unwrap(),
        live,
        "the live content survived it all"
    );
}

#[test]
fn a_create_interrupted_between_its_two_writes_finishes_when_re_run() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::open(dir.path());
    sim.write_guest(1);
    sim.create(1, 0).unwrap();
    sim.write_guest(2);
    let live = sim.digest(None).unwrap();
    let saved = std::fs::read(dir.path().join("live.layer")).unwrap();
    sim.create(2, 0).unwrap();
    // As if killed after writing the new layer and before switching the live layer over.
    std::fs::write(dir.path().join("live.layer"), &saved).unwrap();
    sim.create(2, 0).unwrap();
    assert_eq!(sim.digest(Some(2)).unwrap(), live);
    assert_eq!(sim.digest(None).unwrap(), live);
    assert_eq!(sim.physical(), (vec![(1, None), (2, Some(1))], Some(2)));
}

#[test]
fn discard_leaf_refuses_a_layer_another_layer_is_stored_on_retired_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::open(dir.path());
    sim.write_guest(1);
    sim.create(1, 0).unwrap();
    sim.write_guest(2);
    sim.create(2, 0).unwrap();
    // 1 retired: its data stays under 2, and the engine must never free it first.
    sim.forget(1, 0).unwrap();
    let before = sim.physical();
    let e = sim
        .discard_leaf(1, 0)
        .expect_err("expected discard_leaf of a layer under another refused");
    assert!(
        e.1.contains("stored on"),
        "expected the message to say what is stored on it: {e:?}"
    );
    assert_eq!(
        sim.physical(),
        before,
        "expected the refusal to change nothing"
    );
    // The live state alone may be stored on a discarded layer: the step keeps it valid.
    let live = sim.digest(None).unwrap();
    sim.discard_leaf(2, 0).unwrap();
    sim.discard_leaf(1, 0).unwrap();
    assert_eq!(sim.digest(None).unwrap(), live);
    assert_eq!(sim.physical(), (vec![], None));
}
