//! Failures and cancels: a step that fails (or is cancelled) before its point of no return
//! is undone on every disk, so the operation fails with nothing changed; past that point a
//! cancel is not honoured and the step finishes. Progress comes from `qemu-img -p`.

mod common;

use common::{Layout, MIB, Vm, assert_internal_snapshot, assert_live, revert, snap, uuid, write};
use snaptree_backend_qemu::{ConsolidatePolicy, QemuBackend};
use snaptree_engine::{
    Backend, ContentRef, DeleteMode, Domain, ErrorCode, NoProgress, PowerState, TestHooks,
};
use snaptree_qemu_img as qi;

fn layout(writes: &[(u64, u8)]) -> Layout {
    writes.iter().copied().collect()
}

/// Digests of the live state and of every snapshot in the tree.
fn contents(d: &mut Domain) -> Vec<String> {
    let uuids: Vec<_> = d.tree().unwrap().iter().map(|s| s.uuid).collect();
    let hooks = d.backend().test_hooks().unwrap();
    let mut out = vec![hooks.content_digest(ContentRef::Live).unwrap()];
    for u in uuids {
        out.push(hooks.content_digest(ContentRef::Snapshot(u)).unwrap());
    }
    out
}

#[test]
fn a_create_failing_on_the_second_disk_undoes_the_first() {
    let vm = Vm::new(&["external", "external"]);
    let (mut d, _) = vm.domain();
    write(&vm, 0, 1);
    // The second disk's snapshot directory cannot be created: a file has its name.
    std::fs::write(vm.dir.path().join("d1.qcow2.snapshots"), b"in the way").unwrap();
    let files = vm.files();
    let e = d
        .create_snapshot("<domainsnapshot><name>A</name></domainsnapshot>")
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Backend, "{e}");
    assert!(
        e.to_string().contains("d1.qcow2.snapshots")
            && e.to_string().contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(vm.files(), files, "the first disk was not restored exactly");
    assert!(d.tree().unwrap().is_empty());
    assert_live(&vm, &layout(&[(0, 1)]), "after the failed create");
    std::fs::remove_file(vm.dir.path().join("d1.qcow2.snapshots")).unwrap();
    d.check_agreement().unwrap();
    snap(&mut d, "A");
    d.check_agreement().unwrap();
}

#[test]
fn a_create_failing_on_an_internal_disk_undoes_the_external_one() {
    let vm = Vm::new(&["external", "internal"]);
    let (mut d, _) = vm.domain();
    write(&vm, 0, 1);
    // The internal disk's metadata file cannot be written: a directory has its temp name.
    std::fs::create_dir(vm.dir.path().join("d1.qcow2.snaptree.json.tmp")).unwrap();
    let files = vm.files();
    let e = d
        .create_snapshot("<domainsnapshot><name>A</name></domainsnapshot>")
        .unwrap_err();
    assert!(
        e.to_string().contains("snaptree.json.tmp")
            && e.to_string().contains("nothing was changed"),
        "{e}"
    );
    // The internal disk was written (snapshot created, then deleted): same files, same data.
    assert_eq!(
        vm.files().keys().collect::<Vec<_>>(),
        files.keys().collect::<Vec<_>>()
    );
    assert_eq!(vm.files()[&vm.disks[0]], files[&vm.disks[0]]);
    assert_live(&vm, &layout(&[(0, 1)]), "after the failed create");
    assert!(
        qi::info(&vm.disks[1]).unwrap().snapshots.is_empty(),
        "the internal snapshot was not undone"
    );
    d.check_agreement().unwrap();
}

#[test]
fn a_revert_failing_on_the_second_disk_undoes_the_first() {
    let vm = Vm::new(&["external", "external"]);
    let (mut d, _) = vm.domain();
    write(&vm, 0, 1);
    snap(&mut d, "A");
    write(&vm, 1, 2);
    // The second disk cannot build its new overlay: a directory has its temporary name.
    std::fs::create_dir(vm.dir.path().join("d1.qcow2.snapshots/.fresh.qcow2")).unwrap();
    let files = vm.files();
    let u = uuid(&mut d, "A");
    let e = d.revert(&u, None, &mut NoProgress).unwrap_err();
    assert!(
        e.to_string().contains(".fresh.qcow2") && e.to_string().contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(vm.files(), files);
    assert_live(&vm, &layout(&[(0, 1), (1, 2)]), "after the failed revert");
    std::fs::remove_dir(vm.dir.path().join("d1.qcow2.snapshots/.fresh.qcow2")).unwrap();
    d.check_agreement().unwrap();
    d.revert(&u, None, &mut NoProgress).unwrap();
    assert_live(&vm, &layout(&[(0, 1)]), "after the revert");
}

#[test]
fn a_revert_that_would_start_the_guest_is_refused_before_anything() {
    let vm = Vm::new(&["external", "internal"]);
    let (mut d, _) = vm.domain();
    snap(&mut d, "A");
    write(&vm, 0, 1);
    let files = vm.files();
    let u = uuid(&mut d, "A");
    for state in [PowerState::Running, PowerState::Paused] {
        let e = d.revert(&u, Some(state), &mut NoProgress).unwrap_err();
        assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
        // The engine refuses it from the declared capabilities (revert only while shut
        // off) before the backend sees it (SEMANTICS.md §4).
        assert!(
            e.to_string()
                .contains(&format!("would leave domain 'vm' {}", state.as_str())),
            "{e}"
        );
    }
    assert_eq!(vm.files(), files);
    d.revert(&u, Some(PowerState::Shutoff), &mut NoProgress)
        .unwrap();
    assert_eq!(
        d.tree().unwrap().get(&u).unwrap().state,
        PowerState::Shutoff
    );
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);
}

#[test]
fn a_cancel_before_the_point_of_no_return_changes_nothing() {
    let vm = Vm::new(&["external", "external"]);
    let (mut d, _) = vm.domain();
    write(&vm, 0, 1);
    snap(&mut d, "A");
    write(&vm, 1, 2);
    snap(&mut d, "B");
    revert(&mut d, "A");
    write(&vm, 2, 3);
    snap(&mut d, "C");
    // A has two dependents: consolidating it rebases both up, all reversible.
    let before = contents(&mut d);
    let files = vm.files();
    let u = uuid(&mut d, "A");
    let mut calls = 0;
    let e = d
        .delete(&u, DeleteMode::Consolidate, &mut |_f: f64| {
            calls += 1;
            false
        })
        .unwrap_err();
    assert!(calls > 0);
    assert!(
        e.to_string().contains("cancelled") && e.to_string().contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(contents(&mut d), before);
    assert_eq!(
        vm.files().keys().collect::<Vec<_>>(),
        files.keys().collect::<Vec<_>>()
    );
    d.check_agreement().unwrap();
    assert!(d.tree().unwrap().get(&u).is_some());
}

#[test]
fn a_cancel_past_the_point_of_no_return_finishes_the_step() {
    let vm = Vm::new(&["external"]);
    let (mut d, h) = vm.domain();
    write(&vm, 0, 1);
    snap(&mut d, "A");
    write(&vm, 1, 2);
    h.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    let u = uuid(&mut d, "A");
    d.delete(&u, DeleteMode::Consolidate, &mut |_f: f64| false)
        .unwrap();
    assert!(d.tree().unwrap().is_empty());
    assert_live(&vm, &layout(&[(0, 1), (1, 2)]), "after the commit");
    common::assert_standalone(&vm);
}

#[test]
fn progress_comes_from_qemu_img_and_ends_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("big.qcow2");
    qi::create(&disk, 256 * MIB).unwrap();
    let xml = common::domain_xml(std::slice::from_ref(&disk), &["external"]);
    let mut b = QemuBackend::open(&xml).unwrap();
    qi::io_write_pattern(&disk, 0x11, 0, 128 * MIB).unwrap();
    let a = snaptree_engine::Uuid::from_u128(1);
    b.execute(
        &snaptree_engine::Step::Create {
            snapshot: a,
            parent: None,
            name: "A".into(),
            description: String::new(),
        },
        &mut NoProgress,
    )
    .unwrap();
    qi::io_write_pattern(&disk, 0x22, 0, 64 * MIB).unwrap();
    let before = b.content_digest(ContentRef::Live).unwrap();
    let mut seen = Vec::new();
    b.execute(&snaptree_engine::Step::DetachLive, &mut |f: f64| {
        seen.push(f);
        true
    })
    .unwrap();
    assert!(seen.iter().any(|f| *f > 0.0 && *f < 1.0), "{seen:?}");
    assert_eq!(seen.last(), Some(&1.0));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(b.content_digest(ContentRef::Live).unwrap(), before);
}

/// A commit step that fails past `qemu-img commit` (here a crash right after it, before the
/// layer takes the dependent's name) has changed a layer's content but no backing link: the record
/// the executor leaves in the snapshot directory keeps the physical tree from reading as
/// unchanged, so the engine keeps its journal entry, and the next operation finishes the
/// consolidate instead of leaving a snapshot whose content changed.
#[test]
fn a_commit_failing_half_way_is_finished_not_forgotten() {
    let vm = Vm::new(&["external", "external"]);
    let (mut d, handle) = vm.domain();
    write(&vm, 0, 1);
    let a = snap(&mut d, "A");
    write(&vm, 1, 2);
    handle.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    // The changes of a commit consolidate on the first disk: the record (written,
    // renamed), the commit itself, then the rename: fail right before that.
    handle.simulate_crash_after(3);
    d.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap_err();
    assert_eq!(handle.crashes(), 1);
    write(&vm, 2, 3);
    snap(&mut d, "B");
    assert_eq!(
        d.recoveries().len(),
        1,
        "the consolidate was finished first"
    );
    assert!(d.tree().unwrap().get(&a).is_none());
    d.check_agreement().unwrap();
    assert_live(
        &vm,
        &layout(&[(0, 1), (1, 2), (2, 3)]),
        "after the finished consolidate",
    );
}

/// A merge of internal snapshots (the live state borrowed as a stash while S's content is
/// saved as P) failing before each of its changes in turn, the error returned to the
/// engine: either the operation changed nothing at all — P still holds its own content —
/// or the engine kept its journal entry and the next operation finishes the merge. Never a
/// forgotten step with P's content already replaced.
#[test]
fn an_internal_merge_failing_anywhere_is_finished_or_changed_nothing() {
    for k in 0.. {
        let vm = Vm::new(&["internal"]);
        let (mut d, handle) = vm.domain();
        write(&vm, 0, 1);
        let p = snap(&mut d, "P");
        write(&vm, 1, 2);
        let s = snap(&mut d, "S");
        write(&vm, 2, 3);
        handle.simulate_crash_after(k);
        let result = d.delete(&s, DeleteMode::Merge, &mut NoProgress);
        if handle.crashes() == 0 {
            result.unwrap();
            assert!(k >= 6, "an internal merge makes at least 6 changes: {k}");
            break;
        }
        assert!(result.is_err(), "change {k}: a failure is reported");
        // The next operation: it finishes the merge first if the step was kept. (Nothing
        // writes in between: a merge of internal snapshots borrows the live image, which
        // holds the live state again only once the step is finished.)
        snap(&mut d, "N");
        write(&vm, 3, 4);
        let what = format!("failure before change {k}");
        if d.recoveries().is_empty() {
            assert!(
                d.tree().unwrap().get(&s).is_some(),
                "{what}: nothing changed"
            );
            assert_internal_snapshot(&vm, p, &layout(&[(0, 1)]), &what);
            assert_internal_snapshot(&vm, s, &layout(&[(0, 1), (1, 2)]), &what);
        } else {
            assert!(d.tree().unwrap().get(&s).is_none(), "{what}: merged");
            assert_internal_snapshot(&vm, p, &layout(&[(0, 1), (1, 2)]), &what);
        }
        d.check_agreement().unwrap();
        assert_live(&vm, &layout(&[(0, 1), (1, 2), (2, 3), (3, 4)]), &what);
    }
}
