//! Restartability: for every step kind, a crash is simulated right before each of the step's
//! changes to the disk in turn (the backend stops there and undoes nothing, as a crash
//! would), then the step is run again by a fresh backend, as the engine's recovery does. The
//! re-run must finish the step: every content as the step's contract says, the same physical
//! tree as an uninterrupted run, no leftover files, and images `qemu-img check` accepts.
//! A second variant crashes the re-run too before running it a third time.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{Vm, revert, snap, write};
use snaptree_backend_qemu::{ConsolidatePolicy, QemuBackend};
use snaptree_engine::{
    Backend, ContentRef, DeleteMode, Domain, NoProgress, PhysicalTree, PowerState, Step, TestHooks,
    Uuid,
};

/// What a step must do to contents.
#[derive(Default)]
struct Expect {
    /// Snapshots whose content must not change.
    same: Vec<Uuid>,
    /// (p, s): p ends with the content s had.
    takes: Vec<(Uuid, Uuid)>,
    /// Snapshots whose data must be gone.
    gone: Vec<Uuid>,
    /// The live content ends as this snapshot's (revert); `None`: unchanged.
    live_from: Option<Uuid>,
    /// A new snapshot that must hold the live content (create).
    new: Option<Uuid>,
}

type Build = fn(&Vm, &mut Domain) -> (Step, Expect);

/// The tree A → B → C, A → D, live = D + a write, current D.
fn tree(vm: &Vm, d: &mut Domain) -> BTreeMap<&'static str, Uuid> {
    write(vm, 0, 1);
    let a = snap(d, "A");
    write(vm, 1, 2);
    let b = snap(d, "B");
    write(vm, 2, 3);
    let c = snap(d, "C");
    revert(d, "A");
    write(vm, 3, 4);
    let dd = snap(d, "D");
    write(vm, 4, 5);
    BTreeMap::from([("A", a), ("B", b), ("C", c), ("D", dd)])
}

fn all_but(t: &BTreeMap<&str, Uuid>, except: &[&str]) -> Vec<Uuid> {
    t.iter()
        .filter(|(n, _)| !except.contains(n))
        .map(|(_, u)| *u)
        .collect()
}

fn delete(d: &mut Domain, u: Uuid, mode: DeleteMode) {
    d.delete(&u, mode, &mut NoProgress).unwrap();
}

/// Runs `build`'s step with a crash before each change in turn, then again, and checks.
fn crash_everywhere(modes: &[&'static str], policy: ConsolidatePolicy, build: Build) {
    let vm = Vm::new(modes);
    let (step, expect) = {
        let (mut d, _) = vm.domain();
        build(&vm, &mut d)
    };
    let (mut probe, _) = vm.backend();
    let mut before = BTreeMap::new();
    for u in expect
        .same
        .iter()
        .chain(expect.takes.iter().map(|(_, s)| s))
        .chain(&expect.live_from)
    {
        before.insert(*u, digest(&mut probe, ContentRef::Snapshot(*u)));
    }
    let live_before = digest(&mut probe, ContentRef::Live);
    let backup = tempfile::tempdir().unwrap();
    copy_tree(vm.dir.path(), backup.path());

    let run = |crash_at: Option<usize>| -> (QemuBackend, bool) {
        let (mut b, h) = vm.backend();
        h.set_consolidate_policy(policy);
        if let Some(k) = crash_at {
            h.simulate_crash_after(k);
        }
        let result = b.execute(&step, &mut NoProgress);
        let crashed = h.crashes() > 0;
        if !crashed {
            result.unwrap_or_else(|e| panic!("{step:?}: {e}"));
        }
        (b, crashed)
    };
    let verify =
        |b: &mut QemuBackend, reference: Option<&PhysicalTree>, what: &str| -> PhysicalTree {
            let physical = b.list_physical().unwrap_or_else(|e| panic!("{what}: {e}"));
            if let Some(r) = reference {
                assert_eq!(
                    &physical, r,
                    "{what}: physical tree differs from an uninterrupted run"
                );
            }
            for u in &expect.same {
                assert_eq!(
                    digest(b, ContentRef::Snapshot(*u)),
                    before[u],
                    "{what}: snapshot {u} changed"
                );
            }
            for (p, s) in &expect.takes {
                assert_eq!(
                    digest(b, ContentRef::Snapshot(*p)),
                    before[s],
                    "{what}: {p} does not hold {s}'s content"
                );
            }
            for u in &expect.gone {
                assert!(
                    !physical.parents.contains_key(u),
                    "{what}: {u} still has data"
                );
            }
            let live = digest(b, ContentRef::Live);
            match expect.live_from {
                Some(s) => assert_eq!(live, before[&s], "{what}: live is not {s}'s content"),
                None => assert_eq!(live, live_before, "{what}: live changed"),
            }
            if let Some(n) = expect.new {
                assert_eq!(
                    digest(b, ContentRef::Snapshot(n)),
                    live_before,
                    "{what}: new snapshot"
                );
            }
            check_images(vm.dir.path(), what);
            physical
        };

    let (mut clean, _) = run(None);
    let reference = verify(&mut clean, None, "uninterrupted run");
    for k in 0.. {
        for twice in [false, true] {
            restore(backup.path(), vm.dir.path());
            let (_, crashed) = run(Some(k));
            if !crashed {
                assert!(k > 0, "expected the step to change something");
                eprintln!(
                    "{step:?}: crashed before each of its {k} changes (once, and again in the re-run), each recovered"
                );
                return;
            }
            if twice {
                // The first re-run is interrupted half-way too.
                let _ = run(Some(k / 2));
            }
            let (mut again, crashed) = run(None);
            assert!(!crashed);
            verify(
                &mut again,
                Some(&reference),
                &format!("crash before change {k} (twice: {twice})"),
            );
        }
    }
}

fn digest(b: &mut QemuBackend, of: ContentRef) -> String {
    b.content_digest(of)
        .unwrap_or_else(|e| panic!("digest of {of:?}: {e}"))
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn restore(backup: &Path, dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap()
        } else {
            std::fs::remove_file(&p).unwrap()
        }
    }
    copy_tree(backup, dir);
}

/// Every qcow2 file under `dir` passes `qemu-img check` (leaked clusters, which an
/// interrupted qemu-img may leave, are harmless and allowed).
fn check_images(dir: &Path, what: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            check_images(&p, what);
        } else if p.extension().is_some_and(|x| x == "qcow2") {
            let out = Command::new("qemu-img")
                .args(["check", "-q", "-f", "qcow2"])
                .arg(&p)
                .output()
                .unwrap();
            let code = out.status.code();
            assert!(
                code == Some(0) || code == Some(3),
                "{what}: qemu-img check {}: {:?} {}",
                p.display(),
                code,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

const MIXED: &[&str] = &["external", "internal"];
const INTERNAL: &[&str] = &["internal"];

fn create(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    let n = Uuid::from_u128(0x5eed);
    let step = Step::Create {
        snapshot: n,
        parent: Some(t["D"]),
        name: "N".into(),
        description: String::new(),
    };
    (
        step,
        Expect {
            same: all_but(&t, &[]),
            new: Some(n),
            ..Expect::default()
        },
    )
}

fn revert_step(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    let step = Step::Revert {
        snapshot: t["B"],
        state: PowerState::Shutoff,
    };
    (
        step,
        Expect {
            same: all_but(&t, &[]),
            live_from: Some(t["B"]),
            ..Expect::default()
        },
    )
}

fn discard_live_parent(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    (
        Step::DiscardLeaf { snapshot: t["D"] },
        Expect {
            same: all_but(&t, &["D"]),
            gone: vec![t["D"]],
            ..Expect::default()
        },
    )
}

fn consolidate_root(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    (
        Step::Consolidate { snapshot: t["A"] },
        Expect {
            same: all_but(&t, &["A"]),
            gone: vec![t["A"]],
            ..Expect::default()
        },
    )
}

fn consolidate_single_child(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    (
        Step::Consolidate { snapshot: t["B"] },
        Expect {
            same: all_but(&t, &["B"]),
            gone: vec![t["B"]],
            ..Expect::default()
        },
    )
}

fn merge_leaf(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    let step = Step::MergeIntoParent {
        snapshot: t["C"],
        parent: Some(t["B"]),
    };
    (
        step,
        Expect {
            same: all_but(&t, &["B", "C"]),
            takes: vec![(t["B"], t["C"])],
            gone: vec![t["C"]],
            ..Expect::default()
        },
    )
}

/// D into A while A's layer also carries a retired layer (B) with the live state on it.
/// (A retired layer with nothing on it is freed at once, SEMANTICS.md §7.2, so B keeps
/// the live state.)
fn merge_with_other_dependents(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    delete(d, t["C"], DeleteMode::Discard);
    revert(d, "B");
    write(vm, 5, 6);
    delete(d, t["B"], DeleteMode::Retire);
    let step = Step::MergeIntoParent {
        snapshot: t["D"],
        parent: Some(t["A"]),
    };
    let expect = Expect {
        same: vec![t["B"]],
        takes: vec![(t["A"], t["D"])],
        gone: vec![t["D"]],
        ..Expect::default()
    };
    (step, expect)
}

/// C into A across the retired B between them; A also carries the live state.
fn merge_across_retired(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    delete(d, t["B"], DeleteMode::Retire);
    delete(d, t["D"], DeleteMode::Discard);
    let step = Step::MergeIntoParent {
        snapshot: t["C"],
        parent: Some(t["A"]),
    };
    let expect = Expect {
        same: vec![t["B"]],
        takes: vec![(t["A"], t["C"])],
        gone: vec![t["C"]],
        ..Expect::default()
    };
    (step, expect)
}

fn merge_into_base(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    let step = Step::MergeIntoParent {
        snapshot: t["A"],
        parent: None,
    };
    (
        step,
        Expect {
            same: all_but(&t, &["A"]),
            gone: vec![t["A"]],
            ..Expect::default()
        },
    )
}

fn detach(vm: &Vm, d: &mut Domain) -> (Step, Expect) {
    let t = tree(vm, d);
    (
        Step::DetachLive,
        Expect {
            same: all_but(&t, &[]),
            ..Expect::default()
        },
    )
}

#[test]
fn create_restarts() {
    crash_everywhere(MIXED, ConsolidatePolicy::Cheapest, create);
}

#[test]
fn revert_restarts() {
    crash_everywhere(MIXED, ConsolidatePolicy::Cheapest, revert_step);
}

#[test]
fn discard_restarts_by_rebase_and_by_commit() {
    crash_everywhere(MIXED, ConsolidatePolicy::AlwaysRebase, discard_live_parent);
    crash_everywhere(MIXED, ConsolidatePolicy::AlwaysCommit, discard_live_parent);
}

#[test]
fn consolidate_restarts() {
    crash_everywhere(MIXED, ConsolidatePolicy::Cheapest, consolidate_root);
    crash_everywhere(
        MIXED,
        ConsolidatePolicy::AlwaysCommit,
        consolidate_single_child,
    );
    crash_everywhere(
        MIXED,
        ConsolidatePolicy::AlwaysRebase,
        consolidate_single_child,
    );
}

#[test]
fn merge_restarts() {
    crash_everywhere(MIXED, ConsolidatePolicy::Cheapest, merge_leaf);
    crash_everywhere(INTERNAL, ConsolidatePolicy::Cheapest, merge_leaf);
}

#[test]
fn merge_with_other_dependents_restarts() {
    crash_everywhere(
        MIXED,
        ConsolidatePolicy::Cheapest,
        merge_with_other_dependents,
    );
    crash_everywhere(MIXED, ConsolidatePolicy::Cheapest, merge_across_retired);
}

#[test]
fn merge_into_base_restarts() {
    crash_everywhere(MIXED, ConsolidatePolicy::AlwaysCommit, merge_into_base);
}

#[test]
fn detach_restarts() {
    crash_everywhere(MIXED, ConsolidatePolicy::Cheapest, detach);
}
