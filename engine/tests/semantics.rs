//! One test per row of SEMANTICS.md §2, on the metadata-only `null` backend: the tree
//! after each operation, where `current` moves, the exact victims of `WOULD_DISCARD`, and
//! that an error changes nothing.

use snaptree_engine::{
    DeleteMode, Domain, Error, ErrorCode, Filter, NoProgress, NullBackend, PowerState, Uuid, flags,
};

/// A domain with snapshots built from `(name, parent)` pairs, in order; each create
/// reverts to the parent first so the shape is exact. Current ends at the last created.
fn domain(shape: &[(&str, Option<&str>)]) -> Domain {
    let mut d = Domain::ephemeral(
        "<domain type='null'><name>vm</name></domain>",
        Box::new(NullBackend::new()),
    )
    .unwrap();
    for (name, parent) in shape {
        if let Some(p) = parent {
            let u = uuid(&mut d, p);
            d.revert(&u, None, &mut NoProgress).unwrap();
        }
        d.create_snapshot(&format!(
            "<domainsnapshot><name>{name}</name></domainsnapshot>"
        ))
        .unwrap();
    }
    d
}

/// Builds a forest: every root of `shape` is first created under a scaffold snapshot,
/// which is consolidated away at the end so they become roots.
fn forest(shape: &[(&str, Option<&str>)]) -> Domain {
    let mut d = domain(&[("scaffold", None)]);
    for (name, parent) in shape {
        let under = parent.unwrap_or("scaffold");
        let u = uuid(&mut d, under);
        d.revert(&u, None, &mut NoProgress).unwrap();
        d.create_snapshot(&format!(
            "<domainsnapshot><name>{name}</name></domainsnapshot>"
        ))
        .unwrap();
    }
    delete(&mut d, "scaffold", DeleteMode::Consolidate).unwrap();
    d
}

fn uuid(d: &mut Domain, name: &str) -> Uuid {
    d.tree()
        .unwrap()
        .by_name(name)
        .unwrap_or_else(|| panic!("expected snapshot {name}"))
        .uuid
}

/// The tree as sorted "child<parent" strings plus current, for exact comparisons.
fn shape(d: &mut Domain) -> (Vec<String>, Option<String>) {
    let t = d.tree().unwrap();
    let mut v: Vec<String> = t
        .iter()
        .map(|s| {
            format!(
                "{}<{}",
                s.name,
                t.parent(&s.uuid)
                    .map_or("-".to_string(), |p| p.name.clone())
            )
        })
        .collect();
    v.sort();
    (v, t.current().map(|c| c.name.clone()))
}

fn expect_shape(d: &mut Domain, want: &[&str], current: Option<&str>) {
    let (got, cur) = shape(d);
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "expected tree {want:?}");
    assert_eq!(cur.as_deref(), current, "expected current {current:?}");
}

fn delete(d: &mut Domain, name: &str, mode: DeleteMode) -> Result<(), Error> {
    let u = uuid(d, name);
    d.delete(&u, mode, &mut NoProgress).map(drop)
}

/// The standard tree:  a ── b ── c
///                      └── d        current = c
fn standard() -> Domain {
    domain(&[
        ("a", None),
        ("b", Some("a")),
        ("d", Some("a")),
        ("c", Some("b")),
    ])
}

#[test]
fn create_takes_live_parent_state_and_moves_current() {
    let mut d = standard();
    expect_shape(&mut d, &["a<-", "b<a", "c<b", "d<a"], Some("c"));
    let u = d
        .create_snapshot(
            "<domainsnapshot><name>e</name><description>desc</description></domainsnapshot>",
        )
        .unwrap();
    let t = d.tree().unwrap();
    let e = t.get(&u).unwrap();
    assert_eq!(e.description, "desc");
    assert_eq!(
        e.state,
        PowerState::Shutoff,
        "expected the live power state recorded"
    );
    assert_eq!(
        t.parent(&u).unwrap().name,
        "c",
        "expected the parent to be the old current"
    );
    assert_eq!(t.current().unwrap().name, "e");
}

#[test]
fn create_refuses_duplicate_names_and_uuids_and_changes_nothing() {
    let mut d = standard();
    let before = shape(&mut d);
    let e = d
        .create_snapshot("<domainsnapshot><name>a</name></domainsnapshot>")
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::SnapshotExists, "{e}");
    assert!(e.to_string().contains("'a'"), "expected the name in: {e}");
    let a = uuid(&mut d, "a");
    let e = d
        .create_snapshot(&format!(
            "<domainsnapshot><name>new</name><uuid>{a}</uuid></domainsnapshot>"
        ))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::SnapshotExists, "{e}");
    assert_eq!(shape(&mut d), before, "expected errors to change nothing");
}

#[test]
fn create_generates_unique_names_and_uuids() {
    let mut d = standard();
    let u1 = d.create_snapshot("<domainsnapshot/>").unwrap();
    let u2 = d.create_snapshot("<domainsnapshot/>").unwrap();
    assert_ne!(u1, u2);
    let t = d.tree().unwrap();
    assert_ne!(
        t.get(&u1).unwrap().name,
        t.get(&u2).unwrap().name,
        "expected generated names to differ"
    );
}

#[test]
fn create_accepts_every_libvirt_corpus_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus/libvirt-snapshot-xml");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("expected the libvirt corpus at {}", dir.display());
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut d = domain(&[]);
        let u = d
            .create_snapshot(&text)
            .unwrap_or_else(|e| panic!("expected {} accepted: {e}", path.display()));
        let s = d.tree().unwrap().get(&u).unwrap().clone();
        let parsed = snaptree_engine::xml::SnapshotXml::parse_for_create(&text).unwrap();
        if let Some(name) = parsed.name {
            assert_eq!(s.name, name, "{}", path.display());
        }
        assert_eq!(s.description, parsed.description.unwrap_or_default());
        assert_eq!(
            s.state,
            PowerState::Shutoff,
            "expected the document's <state> ignored on create"
        );
        n += 1;
    }
    assert!(n >= 8, "expected the whole corpus, read {n} documents");
}

#[test]
fn revert_sets_current_and_power_state_and_flags_force_it() {
    let mut d = standard();
    let a = uuid(&mut d, "a");
    d.revert(&a, None, &mut NoProgress).unwrap();
    expect_shape(&mut d, &["a<-", "b<a", "c<b", "d<a"], Some("a"));
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);
    d.revert(&a, Some(PowerState::Running), &mut NoProgress)
        .unwrap();
    assert_eq!(
        d.power_state().unwrap(),
        PowerState::Running,
        "expected the flag to force running"
    );
    let e = flags::revert_state(flags::REVERT_RUNNING | flags::REVERT_PAUSED).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArg);
    let e = d
        .revert(&Uuid::new_v4(), None, &mut NoProgress)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoSnapshot);
    assert!(
        e.to_string().contains("'vm'"),
        "expected the domain named: {e}"
    );
}

#[test]
fn rename_changes_only_the_name() {
    let mut d = standard();
    let b = uuid(&mut d, "b");
    d.rename(&b, "bee").unwrap();
    expect_shape(&mut d, &["a<-", "bee<a", "c<bee", "d<a"], Some("c"));
    assert_eq!(uuid(&mut d, "bee"), b, "expected the uuid kept");
    for (name, code) in [
        ("a", ErrorCode::SnapshotExists),
        ("x/y", ErrorCode::InvalidArg),
        ("", ErrorCode::InvalidArg),
    ] {
        let e = d.rename(&b, name).unwrap_err();
        assert_eq!(e.code(), code, "rename to {name:?}: {e}");
    }
    d.rename(&b, "bee").unwrap();
    expect_shape(&mut d, &["a<-", "bee<a", "c<bee", "d<a"], Some("c"));
}

#[test]
fn retire_reparents_children_moves_current_and_remembers_the_uuid() {
    let mut d = standard();
    let b = uuid(&mut d, "b");
    let c = uuid(&mut d, "c");
    d.revert(&b, None, &mut NoProgress).unwrap();
    delete(&mut d, "b", DeleteMode::Retire).unwrap();
    expect_shape(&mut d, &["a<-", "c<a", "d<a"], Some("a"));
    assert!(
        d.tree().unwrap().retired().contains(&b),
        "expected b's uuid remembered as retired"
    );
    // A root's children become roots.
    delete(&mut d, "a", DeleteMode::Retire).unwrap();
    expect_shape(&mut d, &["c<-", "d<-"], None);
    let _ = c;
}

#[test]
fn discard_frees_a_leaf_and_refuses_a_parent_naming_every_descendant() {
    let mut d = standard();
    let e = delete(&mut d, "a", DeleteMode::Discard).unwrap_err();
    match &e {
        Error::WouldDiscard { victims, mode, .. } => {
            assert_eq!(*mode, "DISCARD");
            assert_eq!(
                victims,
                &["b", "c", "d"],
                "expected every descendant in topological order"
            );
        }
        other => panic!("expected WOULD_DISCARD, got {other}"),
    }
    assert!(
        e.to_string().contains("DISCARD_FORCE"),
        "expected the message to name the FORCE flag: {e}"
    );
    expect_shape(&mut d, &["a<-", "b<a", "c<b", "d<a"], Some("c"));
    delete(&mut d, "c", DeleteMode::Discard).unwrap();
    expect_shape(&mut d, &["a<-", "b<a", "d<a"], Some("b"));
}

#[test]
fn discard_force_removes_the_subtree_and_moves_current_to_the_parent() {
    let mut d = standard();
    delete(&mut d, "b", DeleteMode::DiscardForce).unwrap();
    expect_shape(&mut d, &["a<-", "d<a"], Some("a"));
    // current outside the subtree stays.
    let mut d = standard();
    let dd = uuid(&mut d, "d");
    d.revert(&dd, None, &mut NoProgress).unwrap();
    delete(&mut d, "b", DeleteMode::DiscardForce).unwrap();
    expect_shape(&mut d, &["a<-", "d<a"], Some("d"));
}

#[test]
fn merge_refuses_siblings_naming_them_and_their_descendants() {
    let mut d = domain(&[
        ("a", None),
        ("b", Some("a")),
        ("d", Some("a")),
        ("e", Some("d")),
        ("c", Some("b")),
    ]);
    let e = delete(&mut d, "b", DeleteMode::Merge).unwrap_err();
    match &e {
        Error::WouldDiscard { victims, .. } => assert_eq!(victims, &["d", "e"]),
        other => panic!("expected WOULD_DISCARD, got {other}"),
    }
    expect_shape(&mut d, &["a<-", "b<a", "c<b", "d<a", "e<d"], Some("c"));
}

#[test]
fn merge_gives_the_parent_the_childs_state_and_children() {
    let mut d = domain(&[("a", None), ("b", Some("a")), ("c", Some("b"))]);
    // Make b's state differ from a's: revert to a running, create b2 under a? Simpler:
    // record b as running by reverting to a with RUNNING and creating.
    let a = uuid(&mut d, "a");
    let b = uuid(&mut d, "b");
    d.revert(&b, None, &mut NoProgress).unwrap();
    delete(&mut d, "b", DeleteMode::Merge).unwrap();
    expect_shape(&mut d, &["a<-", "c<a"], Some("a"));
    assert_eq!(uuid(&mut d, "a"), a, "expected P to keep its uuid");
    // State transfer: a running snapshot merged into a shut-off parent.
    let mut d = domain(&[("p", None)]);
    let p = uuid(&mut d, "p");
    d.revert(&p, Some(PowerState::Running), &mut NoProgress)
        .unwrap();
    d.create_snapshot("<domainsnapshot><name>s</name></domainsnapshot>")
        .unwrap();
    delete(&mut d, "s", DeleteMode::Merge).unwrap();
    assert_eq!(
        d.tree().unwrap().get(&p).unwrap().state,
        PowerState::Running,
        "expected state(P) := state(S)"
    );
}

#[test]
fn merge_of_a_root_makes_its_children_roots() {
    let mut d = standard();
    delete(&mut d, "d", DeleteMode::DiscardForce).unwrap();
    delete(&mut d, "a", DeleteMode::Merge).unwrap();
    expect_shape(&mut d, &["b<-", "c<b"], Some("c"));
}

#[test]
fn merge_force_discards_siblings_first() {
    let mut d = standard();
    let dd = uuid(&mut d, "d");
    d.revert(&dd, None, &mut NoProgress).unwrap();
    delete(&mut d, "b", DeleteMode::MergeForce).unwrap();
    expect_shape(&mut d, &["a<-", "c<a"], Some("a"));
}

#[test]
fn consolidate_removes_only_the_snapshot() {
    let mut d = standard();
    let b = uuid(&mut d, "b");
    d.revert(&b, None, &mut NoProgress).unwrap();
    delete(&mut d, "b", DeleteMode::Consolidate).unwrap();
    expect_shape(&mut d, &["a<-", "c<a", "d<a"], Some("a"));
    assert!(
        d.tree().unwrap().retired().is_empty(),
        "expected nothing retired"
    );
}

#[test]
fn children_only_keeps_the_snapshot_and_moves_current_to_it() {
    let mut d = standard();
    delete(&mut d, "a", DeleteMode::ChildrenOnly).unwrap();
    expect_shape(&mut d, &["a<-"], Some("a"));
}

#[test]
fn delete_all_removes_everything_including_retired() {
    let mut d = standard();
    delete(&mut d, "b", DeleteMode::Retire).unwrap();
    let plan = d.delete_all(&mut NoProgress).unwrap();
    expect_shape(&mut d, &[], None);
    assert!(d.tree().unwrap().retired().is_empty());
    assert_eq!(plan.removed().len(), 3);
}

#[test]
fn two_delete_flags_or_unknown_bits_are_invalid() {
    for word in [
        flags::DELETE_MERGE | flags::DELETE_DISCARD,
        flags::DELETE_CONSOLIDATE | flags::DELETE_CHILDREN_ONLY,
        1 << 30,
    ] {
        let e = flags::delete_mode(word).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArg, "flags {word:#x}: {e}");
    }
}

#[test]
fn missing_snapshot_is_no_snapshot_for_every_mode() {
    let mut d = standard();
    for mode in DeleteMode::ALL {
        let e = d
            .delete(&Uuid::new_v4(), mode, &mut NoProgress)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NoSnapshot, "{mode:?}: {e}");
    }
}

#[test]
fn capabilities_are_checked_before_anything_runs() {
    use snaptree_check_free::*;
    let mut d = Domain::ephemeral(
        "<domain type='x'><name>vm</name></domain>",
        Box::new(Limited),
    )
    .unwrap();
    let e = d.create_snapshot("<domainsnapshot/>").unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(
        e.to_string().contains("shut off") && e.to_string().contains("running"),
        "expected power states named: {e}"
    );
    assert!(
        e.to_string().contains("'limited'"),
        "expected the backend named: {e}"
    );
    assert!(d.tree().unwrap().is_empty());
}

/// A backend that can only work while shut off but is running, and cannot merge.
mod snaptree_check_free {
    use snaptree_engine::*;

    #[derive(Default)]
    pub struct Limited;

    impl Backend for Limited {
        fn name(&self) -> &str {
            "limited"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::all_in(PowerState::Shutoff.bit())
                .with(StepKind::MergeIntoParent, PowerMask::NONE)
        }
        fn power_state(&mut self) -> Result<PowerState> {
            Ok(PowerState::Running)
        }
        fn execute(&mut self, _: &Step, _: &mut dyn Progress) -> Result<()> {
            panic!("expected no step to run")
        }
        fn list_physical(&mut self) -> Result<PhysicalTree> {
            Ok(PhysicalTree::default())
        }
    }
}

#[test]
fn queries_list_roots_leaves_topological() {
    let mut d = forest(&[("a", None), ("b", Some("a")), ("x", None), ("c", Some("a"))]);
    let t = d.tree().unwrap();
    let names =
        |v: Vec<&snaptree_engine::Snapshot>| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(t.list(Filter::Roots)), ["a", "x"]);
    assert_eq!(names(t.list(Filter::Leaves)), ["b", "x", "c"]);
    assert_eq!(names(t.list(Filter::Topological)), ["a", "b", "c", "x"]);
    assert_eq!(t.count(Filter::Roots), 2);
    assert_eq!(t.count(Filter::Leaves), 3);
    let a = t.by_name("a").unwrap().uuid;
    assert_eq!(names(t.children(&a)), ["b", "c"]);
    assert_eq!(names(t.descendants(&a)), ["b", "c"]);
}

#[test]
fn snapshot_xml_round_trips() {
    let mut d = standard();
    let c = uuid(&mut d, "c");
    let xml = d.snapshot_xml(&c).unwrap();
    let parsed = snaptree_engine::xml::SnapshotXml::parse(&xml).unwrap();
    assert_eq!(parsed.name.as_deref(), Some("c"));
    assert_eq!(parsed.parent_name.as_deref(), Some("b"));
    assert_eq!(parsed.format(), xml, "expected format(parse(x)) == x");
}

/// Every planner path that removes the current snapshot moves `current` first: the tree
/// refuses to remove the current snapshot (an INTERNAL error), so a plan that forgot would
/// fail here instead of silently losing `current`.
#[test]
fn every_delete_of_the_current_snapshot_moves_current_before_removing_it() {
    use snaptree_engine::{Edit, planner};
    for mode in DeleteMode::ALL {
        // current = c, a leaf: every mode but CHILDREN_ONLY removes it, or (CHILDREN_ONLY
        // of b) removes it as a descendant.
        let mut d = standard();
        let target = if mode == DeleteMode::ChildrenOnly {
            "b"
        } else {
            "c"
        };
        let u = uuid(&mut d, target);
        let c = uuid(&mut d, "c");
        let plan = d.plan_delete(&u, mode).unwrap();
        let first_remove = plan
            .edits
            .iter()
            .position(|e| matches!(e, Edit::Remove { snapshot } if *snapshot == c));
        let set_current = plan
            .edits
            .iter()
            .position(|e| matches!(e, Edit::SetCurrent { .. }));
        if let Some(r) = first_remove {
            let s = set_current.unwrap_or_else(|| panic!("{mode:?}: current never moved"));
            assert!(
                s < r,
                "{mode:?}: current moved after c was removed: {plan:?}"
            );
        }
        let mut tree = d.tree().unwrap().clone();
        planner::apply_edits(&mut tree, &plan.edits).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        delete(&mut d, target, mode).unwrap();
        assert!(
            d.tree().unwrap().current().is_some(),
            "{mode:?}: expected current moved, not lost"
        );
    }
}

/// Prune plans and checks every delete before it runs any: on a backend that cannot
/// discard a leaf, the prune whose second delete must free retired data that way is
/// refused, and the first victim (a consolidate the backend could have run) is still there.
#[test]
fn prune_refuses_before_any_delete_when_a_later_one_cannot_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use snaptree_engine::{
        Backend, Capabilities, PhysicalTree, PowerMask, Progress, Step, StepKind,
    };
    /// The null backend; once `no_discard` is set it cannot discard a leaf.
    struct Limited {
        null: NullBackend,
        no_discard: Arc<AtomicBool>,
    }
    impl Backend for Limited {
        fn name(&self) -> &str {
            "limited"
        }
        fn capabilities(&self) -> Capabilities {
            if self.no_discard.load(Ordering::SeqCst) {
                Capabilities::ALL.with(StepKind::DiscardLeaf, PowerMask::NONE)
            } else {
                Capabilities::ALL
            }
        }
        fn power_state(&mut self) -> snaptree_engine::Result<PowerState> {
            self.null.power_state()
        }
        fn execute(
            &mut self,
            step: &Step,
            progress: &mut dyn Progress,
        ) -> snaptree_engine::Result<()> {
            self.null.execute(step, progress)
        }
        fn list_physical(&mut self) -> snaptree_engine::Result<PhysicalTree> {
            self.null.list_physical()
        }
    }
    let no_discard = Arc::new(AtomicBool::new(false));
    let mut d = Domain::ephemeral(
        "<domain type='x'><name>vm</name></domain>",
        Box::new(Limited {
            null: NullBackend::default(),
            no_discard: no_discard.clone(),
        }),
    )
    .unwrap();
    let create = |d: &mut Domain, name: &str, expired: bool| {
        let expires = if expired { "<expires>1</expires>" } else { "" };
        d.create_snapshot(&format!(
            "<domainsnapshot><name>{name}</name>{expires}</domainsnapshot>"
        ))
        .unwrap()
    };
    // r -> x (leaf, expired, the oldest victim); r -> m -> w (expired), then m deleted
    // without a flag (retired: w's data stays on it); r -> z (current). Consolidating w
    // leaves m's data unused, so w's delete also discards m: a step x's delete has not.
    let r = create(&mut d, "r", false);
    create(&mut d, "x", true);
    d.revert(&r, None, &mut NoProgress).unwrap();
    let m = create(&mut d, "m", false);
    create(&mut d, "w", true);
    d.revert(&r, None, &mut NoProgress).unwrap();
    create(&mut d, "z", false);
    d.delete(&m, DeleteMode::Retire, &mut NoProgress).unwrap();
    let victims: Vec<String> = d
        .plan_prune()
        .unwrap()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(
        victims,
        ["x", "w"],
        "expected x, then w, as prune's victims"
    );
    no_discard.store(true, Ordering::SeqCst);
    let before: Vec<String> = d.tree().unwrap().iter().map(|s| s.name.clone()).collect();
    let e = d.prune(&mut NoProgress).unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::OperationInvalid,
        "expected a refusal: {e}"
    );
    let after: Vec<String> = d.tree().unwrap().iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        after, before,
        "expected no delete to have run, x's included"
    );
}

/// Each prune delete carries the bytes the backend estimates it frees, net of what it
/// writes, summed over every file system, in the dry run and in the run; a backend that
/// cannot estimate gives none.
#[test]
fn prune_reports_the_backends_estimate_of_the_bytes_each_delete_frees() {
    use snaptree_engine::space::SpaceUse;
    use snaptree_engine::{Backend, Capabilities, PhysicalTree, Progress, Step};
    /// The null backend, estimating every consolidate on two file systems.
    struct Estimating(NullBackend);
    impl Backend for Estimating {
        fn name(&self) -> &str {
            "estimating"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::ALL
        }
        fn power_state(&mut self) -> snaptree_engine::Result<PowerState> {
            self.0.power_state()
        }
        fn execute(
            &mut self,
            step: &Step,
            progress: &mut dyn Progress,
        ) -> snaptree_engine::Result<()> {
            self.0.execute(step, progress)
        }
        fn list_physical(&mut self) -> snaptree_engine::Result<PhysicalTree> {
            self.0.list_physical()
        }
        fn estimate(&mut self, step: &Step) -> snaptree_engine::Result<Option<Vec<SpaceUse>>> {
            let fs = |fs: u64, written: u64, freed: u64| SpaceUse {
                fs,
                path: format!("/fs{fs}"),
                written,
                freed,
                free: 1 << 40,
            };
            Ok(match step {
                Step::Consolidate { .. } => Some(vec![fs(1, 300, 1000), fs(2, 0, 70)]),
                _ => Some(Vec::new()),
            })
        }
    }
    let expired = |d: &mut Domain, name: &str| {
        d.create_snapshot(&format!(
            "<domainsnapshot><name>{name}</name><expires>1</expires></domainsnapshot>"
        ))
        .unwrap()
    };
    let mut d = Domain::ephemeral(
        "<domain type='x'><name>vm</name></domain>",
        Box::new(Estimating(NullBackend::default())),
    )
    .unwrap();
    expired(&mut d, "old");
    d.create_snapshot("<domainsnapshot><name>now</name></domainsnapshot>")
        .unwrap();
    let planned = d.plan_prune().unwrap();
    assert_eq!(
        planned.iter().map(|p| p.freed).collect::<Vec<_>>(),
        [Some(1000 + 70 - 300)],
        "expected the dry run's estimate: freed minus written over both file systems"
    );
    let pruned = d.prune(&mut NoProgress).unwrap();
    assert_eq!(
        pruned.iter().map(|p| p.freed).collect::<Vec<_>>(),
        [Some(770)],
        "expected the run's estimate, taken before the delete"
    );
    // The null backend cannot estimate: nothing is claimed.
    let mut d = Domain::ephemeral(
        "<domain type='null'><name>vm</name></domain>",
        Box::new(NullBackend::default()),
    )
    .unwrap();
    expired(&mut d, "old");
    d.create_snapshot("<domainsnapshot><name>now</name></domainsnapshot>")
        .unwrap();
    assert_eq!(
        d.plan_prune().unwrap()[0].freed,
        None,
        "expected no estimate"
    );
    assert_eq!(
        d.prune(&mut NoProgress).unwrap()[0].freed,
        None,
        "expected no estimate"
    );
}
