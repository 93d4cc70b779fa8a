//! The C sim backend, loaded as a real `.so` through the host and driven by the engine.
//! Contents are checked with the digest test hook after every operation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use snaptree_engine::{
    Backend, ContentRef, DeleteMode, Domain, ErrorCode, NoProgress, PhysicalTree, PowerState,
    StepKind, Uuid,
};
use snaptree_host::{Plugin, PluginBackend, PluginHost};

fn host() -> PluginHost {
    let mut host = PluginHost::isolated();
    host.add_path(snaptree_backend_sim::plugin_path().parent().unwrap())
        .unwrap();
    host
}

fn open_backend(dir: &Path) -> PluginBackend {
    host()
        .plugin("sim")
        .unwrap()
        .open_domain(&snaptree_backend_sim::domain_xml("vm", dir))
        .unwrap()
}

fn open(dir: &Path) -> Domain {
    let xml = snaptree_backend_sim::domain_xml("vm", dir);
    let provider = host().provider_for("sim").unwrap();
    let parsed = snaptree_engine::xml::DomainXml::parse(&xml).unwrap();
    Domain::ephemeral(&xml, provider.open(&parsed, &xml).unwrap()).unwrap()
}

fn digest(b: &mut dyn Backend, of: ContentRef) -> String {
    b.test_hooks()
        .expect("the sim has test hooks")
        .content_digest(of)
        .unwrap()
}

fn live(d: &mut Domain) -> String {
    digest(d.backend(), ContentRef::Live)
}

fn snap(d: &mut Domain, s: Uuid) -> String {
    digest(d.backend(), ContentRef::Snapshot(s))
}

fn write(d: &mut Domain, seed: u64) {
    d.backend().test_hooks().unwrap().write_guest(seed).unwrap();
}

fn create(d: &mut Domain, name: &str) -> Uuid {
    let u = d
        .create_snapshot(&format!(
            "<domainsnapshot><name>{name}</name></domainsnapshot>"
        ))
        .unwrap();
    d.check_agreement().unwrap();
    u
}

/// Every surviving snapshot's digest and the live digest, to compare before and after.
fn contents(d: &mut Domain) -> BTreeMap<Option<Uuid>, String> {
    let uuids: Vec<Uuid> = d.tree().unwrap().iter().map(|s| s.uuid).collect();
    let mut all: BTreeMap<Option<Uuid>, String> =
        uuids.into_iter().map(|u| (Some(u), snap(d, u))).collect();
    all.insert(None, live(d));
    all
}

#[test]
fn the_sim_plugin_loads_with_every_step_and_the_test_hooks() {
    let plugin = host().plugin("sim").unwrap();
    assert_eq!(plugin.name(), "sim");
    assert_eq!(
        plugin.abi_version(),
        snaptree_abi::SNAPTREE_BACKEND_ABI_VERSION
    );
    assert!(plugin.has_test_hooks());
    for kind in StepKind::ALL {
        for state in PowerState::ALL {
            assert!(
                plugin.capabilities().allows(kind, state),
                "expected the sim to allow {} while {state}",
                kind.name()
            );
        }
    }
}

#[test]
fn every_operation_keeps_every_content_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = open(dir.path());
    assert_eq!(
        d.power_state().unwrap(),
        PowerState::Shutoff,
        "a new sim domain is shut off"
    );
    let empty = live(&mut d);

    write(&mut d, 1);
    let s1 = create(&mut d, "s1");
    assert_eq!(
        snap(&mut d, s1),
        live(&mut d),
        "create freezes the live content"
    );
    assert_ne!(
        snap(&mut d, s1),
        empty,
        "write_guest changed the live content"
    );

    write(&mut d, 2);
    let s2 = create(&mut d, "s2");
    assert_eq!(snap(&mut d, s2), live(&mut d));
    assert_ne!(snap(&mut d, s1), snap(&mut d, s2));

    // Revert discards unsaved changes and sets the power state.
    write(&mut d, 3);
    assert_ne!(live(&mut d), snap(&mut d, s2));
    d.revert(&s1, Some(PowerState::Running), &mut NoProgress)
        .unwrap();
    assert_eq!(
        live(&mut d),
        snap(&mut d, s1),
        "revert makes the live content the snapshot's"
    );
    assert_eq!(d.power_state().unwrap(), PowerState::Running);
    d.check_agreement().unwrap();

    // A sibling of s2, then discard s2: nothing else changes.
    write(&mut d, 4);
    let s3 = create(&mut d, "s3");
    write(&mut d, 5);
    let before = contents(&mut d);
    d.delete(&s2, DeleteMode::Discard, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    let mut expected = before.clone();
    expected.remove(&Some(s2));
    assert_eq!(
        contents(&mut d),
        expected,
        "discard changes no other content"
    );

    // Merge s3 into s1 while the live state sits on s1: s1 takes s3's content, live keeps its own.
    d.revert(&s1, None, &mut NoProgress).unwrap();
    write(&mut d, 6);
    let (s3_content, live_before) = (snap(&mut d, s3), live(&mut d));
    d.delete(&s3, DeleteMode::Merge, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert_eq!(
        snap(&mut d, s1),
        s3_content,
        "merge makes the parent's content the snapshot's"
    );
    assert_eq!(
        live(&mut d),
        live_before,
        "merge never changes the live content"
    );

    // A chain s1 <- s4 <- s5 <- live; consolidate s4: s5, s1 and live keep their content.
    let s4 = create(&mut d, "s4");
    write(&mut d, 7);
    let s5 = create(&mut d, "s5");
    write(&mut d, 8);
    let before = contents(&mut d);
    d.delete(&s4, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    d.check_agreement().unwrap();
    let mut expected = before.clone();
    expected.remove(&Some(s4));
    assert_eq!(
        contents(&mut d),
        expected,
        "consolidate changes no other content"
    );

    // Retire s1 (forget): its data stays, s5 becomes a root.
    d.delete(&s1, DeleteMode::Retire, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert!(
        d.backend()
            .list_physical()
            .unwrap()
            .parents
            .contains_key(&s1),
        "retire leaves the data"
    );

    // Merge the root s5 into the base; the retired s1 sits on the base and keeps its content.
    let (s1_content, live_before) = (snap(&mut d, s1), live(&mut d));
    d.delete(&s5, DeleteMode::Merge, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert_eq!(live(&mut d), live_before);
    assert_eq!(
        snap(&mut d, s1),
        s1_content,
        "a retired layer keeps its content when the base changes"
    );

    // Delete everything: the live content survives, no layer is left.
    let s6 = create(&mut d, "s6");
    write(&mut d, 9);
    create(&mut d, "s7");
    let _ = s6;
    let live_before = live(&mut d);
    d.delete_all(&mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert_eq!(
        live(&mut d),
        live_before,
        "delete-all keeps the live content"
    );
    assert_eq!(
        d.backend().list_physical().unwrap(),
        PhysicalTree::default(),
        "delete-all frees every layer"
    );
}

#[test]
fn data_survives_reopening_in_a_new_backend_instance() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, s2, digests, physical) = {
        let mut d = open(dir.path());
        write(&mut d, 11);
        let s1 = create(&mut d, "s1");
        write(&mut d, 12);
        let s2 = create(&mut d, "s2");
        write(&mut d, 13);
        d.revert(&s1, Some(PowerState::Paused), &mut NoProgress)
            .unwrap();
        write(&mut d, 14);
        let digests = contents(&mut d);
        let physical = d.backend().list_physical().unwrap();
        (s1, s2, digests, physical)
    };
    let mut b = open_backend(dir.path());
    assert_eq!(b.list_physical().unwrap(), physical);
    assert_eq!(physical.parents.get(&s2), Some(&Some(s1)));
    assert_eq!(physical.live_parent, Some(s1));
    assert_eq!(b.power_state().unwrap(), PowerState::Paused);
    for (of, want) in digests {
        let of = of.map_or(ContentRef::Live, ContentRef::Snapshot);
        assert_eq!(digest(&mut b, of), want, "{of:?} changed across reopening");
    }
}

#[test]
fn progress_is_forwarded_and_a_cancel_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = open(dir.path());
    write(&mut d, 1);
    let s1 = create(&mut d, "s1");
    write(&mut d, 2);

    let seen = RefCell::new(Vec::new());
    let mut record = |f: f64| {
        seen.borrow_mut().push(f);
        true
    };
    d.revert(&s1, None, &mut record).unwrap();
    assert_eq!(
        *seen.borrow(),
        [0.0, 1.0],
        "the sim reports the start and the end of a step"
    );

    write(&mut d, 3);
    let live_before = live(&mut d);
    let mut cancel = |_f: f64| false;
    let e = d.revert(&s1, None, &mut cancel).unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::Backend,
        "expected a BACKEND error, got {e}"
    );
    assert!(e.to_string().contains("cancelled"), "got {e}");
    assert_eq!(
        live(&mut d),
        live_before,
        "a cancelled revert changes nothing"
    );
}

#[test]
fn a_panicking_progress_sink_cancels_the_step_and_the_panic_resumes_in_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = open(dir.path());
    let s1 = create(&mut d, "s1");
    write(&mut d, 5);
    let live_before = live(&mut d);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut explode = |_f: f64| -> bool { panic!("progress sink exploded") };
        let _ = d.revert(&s1, None, &mut explode);
    }));
    let panic = result.expect_err("the progress sink's panic must reach the caller");
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"progress sink exploded")
    );
    let mut b = open_backend(dir.path());
    assert_eq!(
        digest(&mut b, ContentRef::Live),
        live_before,
        "the step was cancelled before any change"
    );
}

#[test]
fn a_step_on_a_missing_layer_is_a_backend_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = open_backend(dir.path());
    let ghost = Uuid::from_u128(0x1234);
    let e = b
        .execute(
            &snaptree_engine::Step::Revert {
                snapshot: ghost,
                state: PowerState::Shutoff,
            },
            &mut NoProgress,
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Backend);
    assert!(
        e.to_string().starts_with(
            "backend 'sim': snapshot 00000000-0000-0000-0000-000000001234 has no layer"
        ),
        "got {e}"
    );
}

#[test]
fn a_domain_without_a_sim_directory_is_refused() {
    let plugin = host().plugin("sim").unwrap();
    let e = plugin
        .open_domain("<domain type='sim'><name>vm</name></domain>")
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Backend);
    assert!(
        e.to_string().contains("no <sim dir='...'/> element"),
        "got {e}"
    );
    let e = plugin
        .open_domain("<domain type='sim'><name>vm</name><sim dir='relative/dir'/></domain>")
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("'relative/dir' is not an absolute path"),
        "got {e}"
    );
}

#[test]
fn the_search_path_finds_the_sim_through_each_source() {
    let plugin_dir = snaptree_backend_sim::plugin_path()
        .parent()
        .unwrap()
        .to_path_buf();
    let want = Plugin::load(snaptree_backend_sim::plugin_path())
        .unwrap()
        .path();

    let env = PluginHost::isolated().with_env_path(Some(
        format!("relative:/nonexistent:{}", plugin_dir.display()).into(),
    ));
    assert_eq!(
        env.plugin("sim").unwrap().path(),
        want,
        "found through $SNAPTREE_BACKEND_PATH"
    );

    let exe = PluginHost::isolated().with_exe_dir(Some(plugin_dir.clone()));
    assert_eq!(
        exe.plugin("sim").unwrap().path(),
        want,
        "found next to the executable"
    );

    let mut file = PluginHost::isolated();
    file.add_path(snaptree_backend_sim::plugin_path()).unwrap();
    assert_eq!(
        file.plugin("sim").unwrap().path(),
        want,
        "found as an added file"
    );

    // The current directory is never searched implicitly: relative entries are ignored.
    let cwd_only = PluginHost::isolated().with_env_path(Some(".:relative:".into()));
    assert!(
        cwd_only.search_path().is_empty(),
        "relative entries must be ignored: {:?}",
        cwd_only.search_path()
    );
    let e = cwd_only.plugin("sim").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Plugin);
    assert!(
        e.to_string().contains("the plugin search path is empty"),
        "got {e}"
    );
}

#[test]
fn an_explicit_path_comes_before_the_environment() {
    let first = tempfile::tempdir().unwrap();
    let copy = first.path().join("libsnaptree_backend_sim.so");
    std::fs::copy(snaptree_backend_sim::plugin_path(), &copy).unwrap();
    let plugin_dir = snaptree_backend_sim::plugin_path().parent().unwrap();
    let mut host = PluginHost::isolated().with_env_path(Some(plugin_dir.as_os_str().to_owned()));
    host.add_path(first.path()).unwrap();
    assert_eq!(
        host.plugin("sim").unwrap().path(),
        std::fs::canonicalize(&copy).unwrap()
    );
    let listed: Vec<_> = host
        .list()
        .into_iter()
        .map(|s| (s.path, s.active))
        .collect();
    assert_eq!(listed.len(), 2, "both copies are listed: {listed:?}");
    assert!(
        listed[0].1 && !listed[1].1,
        "only the first copy is active: {listed:?}"
    );
}

#[test]
fn a_domain_of_another_type_is_refused_by_the_provider() {
    let provider = host().provider_for("sim").unwrap();
    let xml = "<domain type='qemu'><name>vm</name></domain>";
    let parsed = snaptree_engine::xml::DomainXml::parse(xml).unwrap();
    let Err(e) = provider.open(&parsed, xml) else {
        panic!("expected the sim provider to refuse a qemu domain")
    };
    assert_eq!(e.code(), ErrorCode::InvalidArg);
    assert!(
        e.to_string().contains("has type 'qemu', but plugin"),
        "got {e}"
    );
}

/// A lost state directory: a new domain on the same sim directory redefines the tree from
/// the first one's exported XML; the sim adopts each layer with its parent, refuses one it
/// does not hold or holds elsewhere, and afterwards the trees agree and every snapshot
/// reverts to its own content.
#[test]
fn redefine_adopts_the_layers_the_sim_holds_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = open(dir.path());
    write(&mut first, 1);
    let a = create(&mut first, "a");
    write(&mut first, 2);
    let b = create(&mut first, "b");
    first.revert(&a, None, &mut NoProgress).unwrap();
    write(&mut first, 3);
    let c = create(&mut first, "c");
    let contents: Vec<(Uuid, String)> = [a, b, c]
        .into_iter()
        .map(|u| (u, snap(&mut first, u)))
        .collect();
    let docs: Vec<String> = [a, b, c]
        .iter()
        .map(|u| first.snapshot_xml(u).unwrap())
        .collect();
    drop(first);

    let mut second = open(dir.path());
    // Misplaced: c's layer is stored on a, not on b.
    let wrong = docs[2].replace(&format!("<uuid>{a}</uuid>"), &format!("<uuid>{b}</uuid>"));
    let wrong = wrong.replace("<name>a</name>", "<name>b</name>");
    // Missing: no layer has this uuid.
    let ghost = format!(
        "<domainsnapshot><name>ghost</name><uuid>{}</uuid></domainsnapshot>",
        Uuid::new_v4()
    );
    let e = second.redefine_snapshot(&ghost, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(
        e.to_string().contains("no layer for snapshot 'ghost'"),
        "{e}"
    );
    second.redefine_snapshot(&docs[0], false).unwrap();
    second.redefine_snapshot(&docs[1], false).unwrap();
    let e = second.redefine_snapshot(&wrong, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("is stored on {a}, not on {b}")),
        "{e}"
    );
    assert_eq!(second.tree().unwrap().len(), 2, "refusals add nothing");
    second.redefine_snapshot(&docs[2], true).unwrap();
    second
        .check_agreement()
        .expect("the redefined tree agrees with the sim's layers");
    for (u, content) in contents {
        second.revert(&u, None, &mut NoProgress).unwrap();
        assert_eq!(
            live(&mut second),
            content,
            "snapshot {u} reverts to its data"
        );
    }
}
