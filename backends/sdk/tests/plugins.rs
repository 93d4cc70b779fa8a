//! Rust plugins written with the SDK (the crate's examples, built as real shared objects
//! by `cargo test -p snaptree-sdk`), loaded through the host and driven by the engine.

use std::path::PathBuf;

use snaptree_engine::{
    ContentRef, DeleteMode, Domain, ErrorCode, NoProgress, PowerState, StepKind,
};
use snaptree_host::{Plugin, PluginHost};

/// `target/<profile>/examples`, where cargo puts the example plugins.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
}

fn plugin(ty: &str) -> Plugin {
    let mut host = PluginHost::isolated();
    let dir = examples_dir();
    assert!(
        dir.join(format!("libsnaptree_backend_{ty}.so")).is_file(),
        "expected the example plugin in {}; `cargo test -p snaptree-sdk` builds it (a filtered `--test` run does not)",
        dir.display()
    );
    host.add_path(&dir).unwrap();
    host.plugin(ty).unwrap()
}

fn domain(ty: &str, name: &str, extra: &str) -> Domain {
    let xml = format!("<domain type='{ty}'><name>{name}</name>{extra}</domain>");
    Domain::ephemeral(&xml, Box::new(plugin(ty).open_domain(&xml).unwrap())).unwrap()
}

#[test]
fn a_rust_plugin_declares_its_name_capabilities_and_hooks() {
    let p = plugin("memory");
    assert_eq!(p.name(), "memory");
    assert_eq!(p.abi_version(), snaptree_abi::SNAPTREE_BACKEND_ABI_VERSION);
    assert!(p.has_test_hooks());
    assert!(
        StepKind::ALL
            .into_iter()
            .all(|k| p.capabilities().supports(k))
    );
}

#[test]
fn a_rust_plugin_runs_operations_through_the_engine() {
    let mut d = domain("memory", "ops", "");
    fn hooks(d: &mut Domain) -> &mut dyn snaptree_engine::TestHooks {
        d.backend()
            .test_hooks()
            .expect("the memory plugin has test hooks")
    }
    hooks(&mut d).write_guest(1).unwrap();
    let s1 = d
        .create_snapshot("<domainsnapshot><name>s1</name></domainsnapshot>")
        .unwrap();
    let frozen = hooks(&mut d)
        .content_digest(ContentRef::Snapshot(s1))
        .unwrap();
    assert_eq!(
        frozen,
        hooks(&mut d).content_digest(ContentRef::Live).unwrap()
    );
    hooks(&mut d).write_guest(2).unwrap();
    let s2 = d
        .create_snapshot("<domainsnapshot><name>s2</name></domainsnapshot>")
        .unwrap();
    d.revert(&s1, Some(PowerState::Running), &mut NoProgress)
        .unwrap();
    assert_eq!(
        hooks(&mut d).content_digest(ContentRef::Live).unwrap(),
        frozen
    );
    assert_eq!(d.power_state().unwrap(), PowerState::Running);
    d.check_agreement().unwrap();
    d.delete(&s2, DeleteMode::Merge, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    d.delete_all(&mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert!(d.tree().unwrap().is_empty());
}

#[test]
fn a_rust_plugin_error_is_a_backend_error_and_changes_no_metadata() {
    let mut d = domain("memory", "failing", "<memory fail='create'/>");
    let e = d
        .create_snapshot("<domainsnapshot><name>s1</name></domainsnapshot>")
        .unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::Backend,
        "expected a BACKEND error, got {e}"
    );
    assert_eq!(
        e.to_string(),
        "backend 'memory': injected failure in create"
    );
    assert!(d.tree().unwrap().is_empty());
}

#[test]
fn a_panicking_rust_plugin_gives_an_error_and_the_host_survives() {
    let mut d = domain("panicky", "vm", "");
    let e = d
        .create_snapshot("<domainsnapshot><name>s1</name></domainsnapshot>")
        .unwrap_err();
    // The poisoned domain cannot list its physical tree after the step, so the engine
    // cannot tell that the step changed nothing: it keeps the journal entry, and the
    // operation is INCOMPLETE with the panic as its reason (SEMANTICS.md §7.1).
    assert_eq!(
        e.code(),
        ErrorCode::Incomplete,
        "expected an INCOMPLETE error, got {e}"
    );
    let reason = std::error::Error::source(&e).map(ToString::to_string);
    assert_eq!(
        reason.as_deref(),
        Some("backend 'panicky': backend 'panicky' panicked: boom in create")
    );
    assert!(
        d.tree().unwrap().is_empty(),
        "a panicking create must add no snapshot"
    );

    // The domain is poisoned now: later calls are refused, still without a crash.
    let e = d.power_state().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Backend);
    assert!(
        e.to_string().contains("panicked earlier on this domain"),
        "got {e}"
    );
}

#[test]
fn a_rust_plugin_panicking_while_opening_gives_a_backend_error() {
    let xml = "<domain type='panicky'><name>vm</name><panicky at='open'/></domain>";
    let e = plugin("panicky").open_domain(xml).unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::Backend,
        "expected a BACKEND error, got {e}"
    );
    assert!(
        e.to_string().contains("panicked: boom while opening"),
        "got {e}"
    );
}

#[test]
fn a_rust_plugins_data_survives_reopening() {
    let s1 = {
        let mut d = domain("memory", "persist", "");
        d.backend().test_hooks().unwrap().write_guest(5).unwrap();
        d.create_snapshot("<domainsnapshot><name>s1</name></domainsnapshot>")
            .unwrap()
    };
    let mut b = plugin("memory")
        .open_domain("<domain type='memory'><name>persist</name></domain>")
        .unwrap();
    let tree = snaptree_engine::Backend::list_physical(&mut b).unwrap();
    assert_eq!(tree.live_parent, Some(s1));
}
