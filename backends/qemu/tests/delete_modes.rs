//! Every delete mode on real qcow2 disks, in both storage modes, with two disks: a distinct
//! pattern is written before each snapshot of a small tree, and after the delete every
//! surviving snapshot must revert to exactly its data (checked with `qemu-io read -P`), the
//! live data must be unchanged, and deleting everything must leave standalone disks.
//!
//! The tree (slot: pattern written before the snapshot):
//!
//! ```text
//! A {0:1, 1:1}
//! ├── B {1:2, 2:2}
//! │   └── C {2:3, 3:3}
//! └── D {4:4}            live = D + {5:5}, current D
//! ```

mod common;

use std::collections::BTreeMap;

use common::{
    Layout, Vm, assert_internal_snapshot, assert_live, assert_standalone, revert, snap, uuid, write,
};
use snaptree_backend_qemu::{Choice, ConsolidatePolicy, QemuHandle};
use snaptree_engine::{DeleteMode, Domain, ErrorCode, NoProgress};
use snaptree_tests::holds_removed;

struct Fixture {
    vm: Vm,
    d: Domain,
    h: QemuHandle,
    live: Layout,
}

fn layout(writes: &[(u64, u8)]) -> Layout {
    let mut l = Layout::new();
    for (slot, p) in writes {
        l.insert(*slot, *p);
    }
    l
}

fn a() -> Layout {
    layout(&[(0, 1), (1, 1)])
}
fn b() -> Layout {
    layout(&[(0, 1), (1, 2), (2, 2)])
}
fn c() -> Layout {
    layout(&[(0, 1), (1, 2), (2, 3), (3, 3)])
}
fn d() -> Layout {
    layout(&[(0, 1), (1, 1), (4, 4)])
}

fn fixture(modes: &[&'static str]) -> Fixture {
    let vm = Vm::new(modes);
    let (mut dom, h) = vm.domain();
    write(&vm, 0, 1);
    write(&vm, 1, 1);
    snap(&mut dom, "A");
    write(&vm, 1, 2);
    write(&vm, 2, 2);
    snap(&mut dom, "B");
    write(&vm, 2, 3);
    write(&vm, 3, 3);
    snap(&mut dom, "C");
    revert(&mut dom, "A");
    write(&vm, 4, 4);
    snap(&mut dom, "D");
    write(&vm, 5, 5);
    let mut live = d();
    live.insert(5, 5);
    assert_live(&vm, &live, "before the delete");
    Fixture {
        vm,
        d: dom,
        h,
        live,
    }
}

fn delete(f: &mut Fixture, name: &str, mode: DeleteMode) {
    let u = uuid(&mut f.d, name);
    f.d.delete(&u, mode, &mut NoProgress)
        .unwrap_or_else(|e| panic!("delete {name} {mode:?}: {e}"));
}

/// After a delete: the tree has exactly `survivors` (name, parent, content), the physical
/// tree agrees, the live data is unchanged, every survivor reverts to its data; then
/// delete-all leaves standalone disks with the live data intact.
fn check(
    mut f: Fixture,
    what: &str,
    current: Option<&str>,
    survivors: &[(&str, Option<&str>, Layout)],
) {
    f.d.check_agreement()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_live(&f.vm, &f.live, &format!("{what}: live after the delete"));
    let tree = f.d.tree().unwrap().clone();
    let shape: BTreeMap<String, Option<String>> = tree
        .iter()
        .map(|s| (s.name.clone(), tree.parent(&s.uuid).map(|p| p.name.clone())))
        .collect();
    let want: BTreeMap<String, Option<String>> = survivors
        .iter()
        .map(|(n, p, _)| (n.to_string(), p.map(str::to_string)))
        .collect();
    assert_eq!(shape, want, "{what}: tree");
    assert_eq!(
        tree.current().map(|c| c.name.as_str()),
        current,
        "{what}: current"
    );
    for (name, _, content) in survivors {
        let u = uuid(&mut f.d, name);
        assert_internal_snapshot(
            &f.vm,
            u,
            content,
            &format!("{what}: snapshot {name} in place"),
        );
    }
    for (name, _, content) in survivors {
        revert(&mut f.d, name);
        assert_live(&f.vm, content, &format!("{what}: revert to {name}"));
    }
    // Back to a live state that differs from every snapshot, then delete everything.
    common::write(&f.vm, 7, 7);
    let mut live = survivors
        .last()
        .map(|s| s.2.clone())
        .unwrap_or_else(|| f.live.clone());
    live.insert(7, 7);
    f.d.delete_all(&mut NoProgress).unwrap();
    f.d.check_agreement().unwrap();
    assert_live(&f.vm, &live, &format!("{what}: live after delete-all"));
    assert_standalone(&f.vm);
}

const EXTERNAL: &[&str] = &["external", "external"];
const INTERNAL: &[&str] = &["internal", "internal"];
const MIXED: &[&str] = &["external", "internal"];

fn retire(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "B", DeleteMode::Retire);
    check(
        f,
        "retire B",
        Some("D"),
        &[
            ("A", None, a()),
            ("C", Some("A"), c()),
            ("D", Some("A"), d()),
        ],
    );
}

fn merge(modes: &[&'static str]) {
    let mut f = fixture(modes);
    // A has two children: MERGE of B is refused, naming D, and changes nothing.
    let u = uuid(&mut f.d, "B");
    let e =
        f.d.delete(&u, DeleteMode::Merge, &mut NoProgress)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::WouldDiscard, "{e}");
    assert!(e.to_string().contains("'D'"), "{e}");
    // C into B: B takes C's content.
    delete(&mut f, "C", DeleteMode::Merge);
    check(
        f,
        "merge C into B",
        Some("D"),
        &[
            ("A", None, a()),
            ("B", Some("A"), c()),
            ("D", Some("A"), d()),
        ],
    );
}

fn merge_root_into_base(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "A", DeleteMode::Merge);
    check(
        f,
        "merge A into the base",
        Some("D"),
        &[("B", None, b()), ("C", Some("B"), c()), ("D", None, d())],
    );
}

fn merge_force(modes: &[&'static str]) {
    let mut f = fixture(modes);
    // D (current, the live state's parent) is discarded; A takes B's content.
    delete(&mut f, "B", DeleteMode::MergeForce);
    check(
        f,
        "merge-force B into A",
        Some("A"),
        &[("A", None, b()), ("C", Some("A"), c())],
    );
}

fn discard(modes: &[&'static str]) {
    let mut f = fixture(modes);
    let u = uuid(&mut f.d, "B");
    let e =
        f.d.delete(&u, DeleteMode::Discard, &mut NoProgress)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::WouldDiscard, "{e}");
    delete(&mut f, "C", DeleteMode::Discard);
    // D is the live state's parent: discarding it keeps the live data.
    delete(&mut f, "D", DeleteMode::Discard);
    check(
        f,
        "discard C and D",
        Some("A"),
        &[("A", None, a()), ("B", Some("A"), b())],
    );
}

fn discard_force(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "B", DeleteMode::DiscardForce);
    check(
        f,
        "discard-force B",
        Some("D"),
        &[("A", None, a()), ("D", Some("A"), d())],
    );
}

fn consolidate(modes: &[&'static str]) {
    let mut f = fixture(modes);
    // A root with two children, then a snapshot with one child (C) and D, which the live
    // state depends on.
    delete(&mut f, "A", DeleteMode::Consolidate);
    delete(&mut f, "B", DeleteMode::Consolidate);
    delete(&mut f, "D", DeleteMode::Consolidate);
    check(f, "consolidate A, B, D", None, &[("C", None, c())]);
}

/// The same with the dependents committed down wherever that is valid (one dependent), and
/// with them always rebased up.
fn consolidate_by_commit(modes: &[&'static str]) {
    let mut f = fixture(modes);
    f.h.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    delete(&mut f, "A", DeleteMode::Consolidate);
    delete(&mut f, "B", DeleteMode::Consolidate);
    delete(&mut f, "D", DeleteMode::Consolidate);
    if modes.contains(&"external") {
        let choices: Vec<Choice> =
            f.h.stats()
                .consolidations
                .iter()
                .map(|r| r.choice)
                .collect();
        // A has two dependents (B, D): only a rebase is valid; B and D have one each.
        assert!(
            choices.contains(&Choice::Rebase) && choices.contains(&Choice::Commit),
            "{choices:?}"
        );
    }
    check(
        f,
        "consolidate A, B, D by commit",
        None,
        &[("C", None, c())],
    );
}

fn consolidate_by_rebase(modes: &[&'static str]) {
    let mut f = fixture(modes);
    f.h.set_consolidate_policy(ConsolidatePolicy::AlwaysRebase);
    delete(&mut f, "B", DeleteMode::Consolidate);
    delete(&mut f, "D", DeleteMode::Consolidate);
    check(
        f,
        "consolidate B, D by rebase",
        Some("A"),
        &[("A", None, a()), ("C", Some("A"), c())],
    );
}

/// Discarding the live state's parent by committing the live overlay into it.
fn discard_by_commit(modes: &[&'static str]) {
    let mut f = fixture(modes);
    f.h.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    delete(&mut f, "D", DeleteMode::Discard);
    delete(&mut f, "C", DeleteMode::Discard);
    check(
        f,
        "discard D and C by commit",
        Some("A"),
        &[("A", None, a()), ("B", Some("A"), b())],
    );
}

fn children_only(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "A", DeleteMode::ChildrenOnly);
    check(f, "children-only A", Some("A"), &[("A", None, a())]);
}

fn delete_all(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "B", DeleteMode::Retire);
    f.d.delete_all(&mut NoProgress).unwrap();
    assert!(f.d.tree().unwrap().is_empty());
    f.d.check_agreement().unwrap();
    assert_live(&f.vm, &f.live, "delete-all");
    assert_standalone(&f.vm);
}

/// A chain of retired layers (C on retired B on retired A, D on retired A): delete-all
/// frees them dependents first (SEMANTICS.md §7.2).
fn delete_all_retired_chain(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "B", DeleteMode::Retire);
    delete(&mut f, "A", DeleteMode::Retire);
    assert_eq!(f.d.tree().unwrap().retired().len(), 2);
    f.d.check_agreement().unwrap();
    f.d.delete_all(&mut NoProgress).unwrap();
    assert!(f.d.tree().unwrap().retired().is_empty());
    f.d.check_agreement().unwrap();
    assert_live(&f.vm, &f.live, "delete-all");
    assert_standalone(&f.vm);
}

/// Retired B's data is freed by the discard of C, the last thing stored on it.
fn retired_freed_when_idle(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "B", DeleteMode::Retire);
    let b =
        f.d.tree()
            .unwrap()
            .retired()
            .iter()
            .next()
            .copied()
            .unwrap();
    let c = uuid(&mut f.d, "C");
    let plan =
        f.d.delete(&c, DeleteMode::Discard, &mut NoProgress)
            .unwrap();
    assert_eq!(
        plan.steps,
        vec![
            snaptree_engine::Step::DiscardLeaf { snapshot: c },
            snaptree_engine::Step::DiscardLeaf { snapshot: b },
        ]
    );
    assert!(f.d.tree().unwrap().retired().is_empty());
    let physical = f.d.backend().list_physical().unwrap();
    assert!(
        !physical.parents.contains_key(&b),
        "expected B's data freed"
    );
    check(
        f,
        "discard C under retired B",
        Some("D"),
        &[("A", None, a()), ("D", Some("A"), d())],
    );
}

/// reclaim consolidates retired B into C: every content unchanged, B's data gone.
fn reclaim(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "B", DeleteMode::Retire);
    let b =
        f.d.tree()
            .unwrap()
            .retired()
            .iter()
            .next()
            .copied()
            .unwrap();
    let plan = f.d.reclaim(&mut NoProgress).unwrap();
    assert_eq!(
        plan.steps,
        vec![snaptree_engine::Step::Consolidate { snapshot: b }]
    );
    assert!(f.d.tree().unwrap().retired().is_empty());
    let physical = f.d.backend().list_physical().unwrap();
    assert!(
        !physical.parents.contains_key(&b),
        "expected B's data freed"
    );
    check(
        f,
        "reclaim after retire B",
        Some("D"),
        &[
            ("A", None, a()),
            ("C", Some("A"), c()),
            ("D", Some("A"), d()),
        ],
    );
}

/// Removing snapshots one by one (the last by a merge into the base) also ends standalone.
fn last_delete_leaves_standalone_disks(modes: &[&'static str]) {
    let mut f = fixture(modes);
    delete(&mut f, "C", DeleteMode::Discard);
    delete(&mut f, "B", DeleteMode::Consolidate);
    delete(&mut f, "D", DeleteMode::Discard);
    delete(&mut f, "A", DeleteMode::Merge);
    assert!(f.d.tree().unwrap().is_empty());
    f.d.check_agreement().unwrap();
    assert_live(&f.vm, &f.live, "after the last delete");
    assert_standalone(&f.vm);
}

/// Consolidate measures the bytes it moved only when asked (each measurement is a
/// `qemu-img map` process); the choice is recorded either way.
#[test]
fn consolidate_measures_moved_bytes_only_when_asked() {
    let mut f = fixture(EXTERNAL);
    delete(&mut f, "B", DeleteMode::Consolidate);
    let stats = f.h.stats();
    assert!(!stats.consolidations.is_empty(), "{stats:?}");
    assert_eq!(stats.bytes_moved(), 0, "{stats:?}");
    f.h.set_measure_moved_bytes(true);
    delete(&mut f, "D", DeleteMode::Consolidate);
    assert!(f.h.stats().bytes_moved() > 0, "{:?}", f.h.stats());
    check(
        f,
        "consolidate B, D",
        Some("A"),
        &[("A", None, a()), ("C", Some("A"), c())],
    );
}

/// A freed layer's name is gone when the delete returns, its blocks are given back by the
/// backend's own thread (the delete does not wait for the file system to free them), and
/// nothing of it is held once the backend is closed.
#[test]
fn a_freed_layer_is_gone_at_once_and_given_back_off_the_delete() {
    let mut f = fixture(EXTERNAL);
    let before = f.vm.files();
    // The fixture's revert freed layers of its own.
    f.h.reset_stats();
    delete(&mut f, "C", DeleteMode::Discard);
    let freed = removed_layers(&before, &f.vm.files());
    assert_eq!(
        freed.len(),
        f.vm.disks.len(),
        "discarding C removes its layer on each disk, removed: {freed:?}"
    );
    let deferred = f.h.stats().deferred_frees;
    assert_eq!(
        deferred as usize,
        freed.len(),
        "each removed layer went to the backend's thread"
    );
    drop(f.d);
    for p in &freed {
        assert!(
            !holds_removed(p),
            "no descriptor of the removed {} is open once the backend is closed",
            p.display()
        );
    }
}

/// The layers gone between two listings of the domain's files, by the names the kernel shows
/// for a removed file that is still open.
fn removed_layers(
    before: &BTreeMap<std::path::PathBuf, (u64, std::time::SystemTime)>,
    after: &BTreeMap<std::path::PathBuf, (u64, std::time::SystemTime)>,
) -> Vec<std::path::PathBuf> {
    before
        .keys()
        .filter(|p| !after.contains_key(*p) && p.extension().is_some_and(|e| e == "qcow2"))
        .map(|p| {
            let dir = p.parent().unwrap().canonicalize().unwrap();
            dir.join(p.file_name().unwrap())
        })
        .collect()
}

/// Every space estimate waits until the blocks earlier steps freed are free, so the free
/// space it reads is what they left: with the backend's thread slowed to a second and a half
/// a file, the freed layers are still held right after the delete, and no longer once an
/// estimate or the next operation (whose space check is one) has run. (The step's own wait,
/// for a step run without a check, fails this test only together with the estimate's.)
#[test]
fn an_estimate_and_the_next_step_wait_for_the_freed_blocks() {
    for next in ["an estimate", "the next step"] {
        let mut f = fixture(EXTERNAL);
        let before = f.vm.files();
        f.h.delay_frees(std::time::Duration::from_millis(1500));
        delete(&mut f, "C", DeleteMode::Discard);
        let freed = removed_layers(&before, &f.vm.files());
        assert_eq!(freed.len(), f.vm.disks.len(), "C's layers: {freed:?}");
        assert!(
            freed.iter().all(|p| holds_removed(p)),
            "right after the delete the slowed thread still holds {freed:?}"
        );
        if next == "an estimate" {
            let u = uuid(&mut f.d, "D");
            let plan = f.d.plan_delete(&u, DeleteMode::Consolidate).unwrap();
            assert!(
                f.d.estimate_space(&plan).unwrap().is_some(),
                "the QEMU backend estimates an offline delete"
            );
        } else {
            snap(&mut f.d, "E");
        }
        assert!(
            !freed.iter().any(|p| holds_removed(p)),
            "once {next} has run, nothing of {freed:?} is held"
        );
    }
}

macro_rules! per_mode {
    ($($case:ident),* $(,)?) => {
        mod external {
            $(#[test] fn $case() { super::$case(super::EXTERNAL) })*
        }
        mod internal {
            $(#[test] fn $case() { super::$case(super::INTERNAL) })*
        }
        mod mixed {
            $(#[test] fn $case() { super::$case(super::MIXED) })*
        }
    };
}

per_mode!(
    delete_all_retired_chain,
    retired_freed_when_idle,
    reclaim,
    retire,
    merge,
    merge_root_into_base,
    merge_force,
    discard,
    discard_force,
    consolidate,
    consolidate_by_commit,
    consolidate_by_rebase,
    discard_by_commit,
    children_only,
    delete_all,
    last_delete_leaves_standalone_disks,
);

/// The cheapest consolidate counts what a safe rebase scans, not only what it copies: it
/// reads and compares every cluster the dependent does not hold, in both backing chains.
/// A snapshot with nothing of its own on a 1 GiB disk is consolidated by a commit (a
/// rebase took 150 ms of qemu-img scanning zeros, the commit a few); a small layer under a
/// dependent that holds most of a small disk is still rebased.
#[test]
fn the_cheapest_consolidate_counts_the_rebase_scan() {
    let choice_for = |size: u64, layer_slots: u64, child_slots: u64| -> Vec<Choice> {
        let dir = tempfile::tempdir().unwrap();
        let disks = common::create_disks(dir.path(), EXTERNAL, size);
        let xml = common::domain_xml(&disks, EXTERNAL);
        let vm = common::Vm {
            dir,
            disks,
            modes: EXTERNAL.to_vec(),
            xml,
        };
        let (mut d, h) = vm.domain();
        h.set_consolidate_policy(ConsolidatePolicy::Cheapest);
        for slot in 0..layer_slots {
            common::write(&vm, slot, 0x10);
        }
        let s = common::snap(&mut d, "s");
        for slot in 0..child_slots {
            common::write(&vm, slot, 0x20);
        }
        d.delete(&s, DeleteMode::Consolidate, &mut NoProgress)
            .unwrap();
        let mut live = Layout::new();
        for slot in 0..layer_slots.max(child_slots) {
            live.insert(slot, if slot < child_slots { 0x20 } else { 0x10 });
        }
        common::assert_live(&vm, &live, "after the consolidate");
        // One freed layer per disk.
        h.stats().consolidations.iter().map(|r| r.choice).collect()
    };
    let disks = EXTERNAL.len();
    assert_eq!(
        choice_for(1 << 30, 0, 0),
        vec![Choice::Commit; disks],
        "expected an empty snapshot on a 1 GiB disk committed on every disk"
    );
    assert_eq!(
        choice_for(1 << 30, 1, 2),
        vec![Choice::Commit; disks],
        "expected a commit of 2 slots over a rebase of 1 that scans 1 GiB"
    );
    assert_eq!(
        choice_for(common::SIZE, 1, 16),
        vec![Choice::Rebase; disks],
        "expected a rebase of 1 slot under a dependent holding the whole 1 MiB it writes"
    );
}
