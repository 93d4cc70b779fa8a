//! Hostile plugins: each is refused with a PLUGIN error naming the file and the reason,
//! or fails its calls with a BACKEND error, and nothing crashes or changes metadata.

mod common;

use common::{assert_plugin_error, compile_hostile};
use snaptree_engine::{Backend, DeleteMode, Domain, ErrorCode, NoProgress, StepKind};
use snaptree_host::{Plugin, PluginHost};

fn domain_xml(ty: &str) -> String {
    format!("<domain type='{ty}'><name>vm</name></domain>")
}

#[test]
fn a_file_that_is_not_a_shared_library_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("libsnaptree_backend_x.so");
    std::fs::write(&file, b"this is not an ELF file\n").unwrap();
    let e = Plugin::load(&file).unwrap_err();
    assert_plugin_error(&e, &file, "is not a shared library or cannot be opened");
}

#[test]
fn a_missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("libsnaptree_backend_gone.so");
    let e = Plugin::load(&file).unwrap_err();
    assert_plugin_error(&e, &file, "cannot be opened");
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "noentry", "NO_ENTRY");
    let e = Plugin::load(&file).unwrap_err();
    assert_plugin_error(&e, &file, "has no entry symbol snaptree_backend_entry");
}

#[test]
fn an_entry_returning_null_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "nullentry", "NULL_ENTRY");
    let e = Plugin::load(&file).unwrap_err();
    assert_plugin_error(&e, &file, "returned NULL");
}

#[test]
fn a_newer_abi_major_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "newer", "NEWER_MAJOR");
    let e = Plugin::load(&file).unwrap_err();
    assert_plugin_error(
        &e,
        &file,
        "ABI major version 2 (version 2.0) is newer than the supported 1",
    );
}

#[test]
fn an_older_abi_major_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "older", "OLDER_MAJOR");
    let e = Plugin::load(&file).unwrap_err();
    assert_plugin_error(
        &e,
        &file,
        "ABI major version 0 (version 0.9) is older than the supported 1",
    );
}

#[test]
fn a_smaller_vtable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "small", "SMALL_STRUCT");
    let e = Plugin::load(&file).unwrap_err();
    assert_plugin_error(
        &e,
        &file,
        &format!(
            "struct_size 16 is smaller than the {} bytes ABI 1.0 requires",
            snaptree_abi::VTABLE_MIN_SIZE
        ),
    );
}

#[test]
fn a_null_mandatory_function_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "nullrevert", "NULL_MANDATORY");
    let e = Plugin::load(&file).unwrap_err();
    assert_plugin_error(&e, &file, "mandatory function revert is NULL");
}

#[test]
fn a_newer_minor_version_loads_and_its_extra_slots_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "newerminor", "NEWER_MINOR");
    let p = Plugin::load(&file).expect("a 1.7 plugin loads in a 1.0 host");
    assert_eq!(p.abi_version(), 1 << 16 | 7);
    assert_eq!(p.name(), "newerminor");
}

#[test]
fn failing_steps_give_backend_errors_and_change_no_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "failing", "FAILING");
    let plugin = Plugin::load(&file).unwrap();
    let mut d = Domain::ephemeral(
        &domain_xml("failing"),
        Box::new(plugin.open_domain(&domain_xml("failing")).unwrap()),
    )
    .unwrap();
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
        "backend 'failing': create failed: the disk is on fire"
    );
    assert!(
        d.tree().unwrap().is_empty(),
        "a failed create must add no snapshot"
    );
}

#[test]
fn a_return_code_other_than_0_or_minus_1_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "badreturn", "BAD_RETURN");
    let plugin = Plugin::load(&file).unwrap();
    let xml = domain_xml("badreturn");
    let mut d = Domain::ephemeral(&xml, Box::new(plugin.open_domain(&xml).unwrap())).unwrap();
    let e = d
        .create_snapshot("<domainsnapshot><name>s1</name></domainsnapshot>")
        .unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::Backend,
        "expected a BACKEND error, got {e}"
    );
    assert!(
        e.to_string()
            .contains("create returned 5, which is neither 0"),
        "got {e}"
    );
    assert!(d.tree().unwrap().is_empty());
}

#[test]
fn a_power_state_the_abi_does_not_define_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "badpower", "BAD_POWER");
    let plugin = Plugin::load(&file).unwrap();
    let mut backend = plugin.open_domain(&domain_xml("badpower")).unwrap();
    let e = backend.power_state().unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::Backend,
        "expected a BACKEND error, got {e}"
    );
    assert!(
        e.to_string()
            .contains("power_state reported 9, which is not a power state"),
        "got {e}"
    );
}

#[test]
fn null_optional_slots_are_unsupported_whatever_the_capabilities_claim() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "minimal", "DEFAULT");
    let plugin = Plugin::load(&file).unwrap();
    let caps = plugin.capabilities();
    assert!(caps.supports(StepKind::Create));
    assert!(
        !caps.supports(StepKind::MergeIntoParent),
        "merge_into_parent is NULL but claimed: it must be unsupported"
    );
    assert!(!caps.supports(StepKind::Consolidate));
    assert!(!caps.supports(StepKind::Forget));
    assert!(!plugin.has_test_hooks());

    let xml = domain_xml("minimal");
    let mut d = Domain::ephemeral(&xml, Box::new(plugin.open_domain(&xml).unwrap())).unwrap();
    let s1 = d
        .create_snapshot("<domainsnapshot><name>s1</name></domainsnapshot>")
        .unwrap();
    let e = d
        .delete(&s1, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::OperationInvalid,
        "expected OPERATION_INVALID, got {e}"
    );
    assert_eq!(
        e.to_string(),
        "backend 'minimal' cannot consolidate snapshots"
    );
    assert!(
        d.tree().unwrap().contains(&s1),
        "a refused delete must change nothing"
    );
    // forget is optional: the engine drops it, and retire works.
    d.delete(&s1, DeleteMode::Retire, &mut NoProgress)
        .expect("retire without a forget slot");
    assert!(d.backend().test_hooks().is_none());
}

#[test]
fn a_plugin_whose_name_disagrees_with_its_file_name_is_refused_by_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "liar", "DEFAULT");
    let renamed = dir.path().join("libsnaptree_backend_honest.so");
    std::fs::rename(&file, &renamed).unwrap();
    let mut host = PluginHost::isolated();
    host.add_path(dir.path()).unwrap();
    let e = host.plugin("honest").unwrap_err();
    assert_plugin_error(
        &e,
        &renamed,
        "declares backend 'liar', but its file name says 'honest'",
    );
}

#[test]
fn listing_shows_broken_and_good_plugins_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("libsnaptree_backend_broken.so");
    std::fs::write(&broken, b"garbage").unwrap();
    let good = compile_hostile(dir.path(), "good", "DEFAULT");
    let newer = compile_hostile(dir.path(), "newer", "NEWER_MAJOR");
    std::fs::write(dir.path().join("not_a_plugin.so"), b"ignored: wrong name").unwrap();

    let mut host = PluginHost::isolated();
    host.add_path(dir.path()).unwrap();
    let list = host.list();
    let names: Vec<_> = list
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "libsnaptree_backend_broken.so",
            "libsnaptree_backend_good.so",
            "libsnaptree_backend_newer.so"
        ],
        "expected every plugin file, sorted, and nothing else"
    );
    let e = list[0].plugin.as_ref().unwrap_err();
    assert_plugin_error(e, &broken, "is not a shared library");
    let p = list[1]
        .plugin
        .as_ref()
        .expect("the good plugin loads next to a broken one");
    assert_eq!(p.name(), "good");
    assert_eq!(p.path(), std::fs::canonicalize(&good).unwrap());
    assert!(list[1].active);
    assert_plugin_error(
        list[2].plugin.as_ref().unwrap_err(),
        &newer,
        "newer than the supported",
    );
    assert!(!list[0].active && !list[2].active);

    // And lookup still finds the good one.
    assert_eq!(host.plugin("good").unwrap().name(), "good");
    assert_plugin_error(
        &host.plugin("broken").unwrap_err(),
        &broken,
        "is not a shared library",
    );
}

#[test]
fn an_abi_1_0_plugin_still_loads_and_cannot_adopt() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "old", "ABI_1_0");
    let plugin = Plugin::load(&file).unwrap();
    assert_eq!(plugin.abi_version(), 1 << 16, "the plugin says ABI 1.0");
    let xml = domain_xml("old");
    let backend = plugin.open_domain(&xml).unwrap();
    assert!(
        !backend.can_adopt(),
        "the adopt slot lies past a 1.0 plugin's struct_size: it must read as NULL"
    );
    let mut d = Domain::ephemeral(&xml, Box::new(backend)).unwrap();
    // Everything 1.0 offers still works.
    d.create_snapshot("<domainsnapshot><name>s1</name></domainsnapshot>")
        .unwrap();
    // A REDEFINE of a new snapshot is refused before the plugin is called (its trap
    // would abort the process).
    let e = d
        .redefine_snapshot("<domainsnapshot><name>held</name></domainsnapshot>", false)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(e.to_string().contains("backend 'old' cannot adopt"), "{e}");
    assert_eq!(d.tree().unwrap().len(), 1);
    // Replacing the metadata of a snapshot it made needs no adoption.
    d.redefine_snapshot(
        "<domainsnapshot><name>s1</name><description>x</description></domainsnapshot>",
        false,
    )
    .unwrap();
}

#[test]
fn a_1_1_plugin_adopts_through_its_slot_and_its_refusal_keeps_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "adopter", "ADOPTS");
    let plugin = Plugin::load(&file).unwrap();
    let xml = domain_xml("adopter");
    let backend = plugin.open_domain(&xml).unwrap();
    assert!(backend.can_adopt());
    let mut d = Domain::ephemeral(&xml, Box::new(backend)).unwrap();
    let e = d
        .redefine_snapshot("<domainsnapshot><name>other</name></domainsnapshot>", false)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(
        e.to_string()
            .contains("backend 'adopter': no data for snapshot 'other'"),
        "{e}"
    );
    assert!(d.tree().unwrap().is_empty());
    d.redefine_snapshot("<domainsnapshot><name>held</name></domainsnapshot>", true)
        .unwrap();
    assert_eq!(
        d.tree().unwrap().current().map(|c| c.name.as_str()),
        Some("held")
    );
}

#[test]
fn a_1_2_plugin_keeps_the_manifest_of_every_operation_and_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "keeper", "MANIFEST");
    let plugin = Plugin::load(&file).unwrap();
    assert!(plugin.keeps_manifest());
    let xml = domain_xml("keeper");
    let mut d = Domain::ephemeral(&xml, Box::new(plugin.open_domain(&xml).unwrap())).unwrap();
    assert!(d.backend_manifest().unwrap().is_none(), "nothing kept yet");
    d.create_snapshot(
        "<domainsnapshot><name>s1</name><description>one &amp; only</description></domainsnapshot>",
    )
    .unwrap();
    let m = d
        .backend_manifest()
        .unwrap()
        .expect("a manifest after a create");
    assert_eq!(m.documents.len(), 1);
    assert!(
        m.documents[0].contains("<name>s1</name>")
            && m.documents[0].contains("one &amp; only")
            && m.documents[0].contains("<active>1</active>"),
        "{}",
        m.documents[0]
    );
    let uuid = d.tree().unwrap().current().unwrap().uuid;
    d.rename(&uuid, "renamed").unwrap();
    let m = d.backend_manifest().unwrap().unwrap();
    assert!(
        m.documents[0].contains("<name>renamed</name>"),
        "{}",
        m.documents[0]
    );
    // Without the slots, nothing is asked for.
    let plain = compile_hostile(dir.path(), "plain", "PLAIN");
    let plain = Plugin::load(&plain).unwrap();
    assert!(!plain.keeps_manifest());
}

#[test]
fn a_manifest_that_is_not_utf8_is_refused_naming_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "garbler", "BAD_MANIFEST");
    let plugin = Plugin::load(&file).unwrap();
    let xml = domain_xml("garbler");
    let mut d = Domain::ephemeral(&xml, Box::new(plugin.open_domain(&xml).unwrap())).unwrap();
    let e = d.backend_manifest().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Backend, "{e}");
    assert!(
        e.to_string().contains("garbler") && e.to_string().contains("not UTF-8"),
        "{e}"
    );
}

#[test]
fn a_manifest_that_cannot_be_saved_leaves_the_operation_incomplete_until_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = compile_hostile(dir.path(), "flaky", "MANIFEST_FAILS_ONCE");
    let plugin = Plugin::load(&file).unwrap();
    let xml = domain_xml("flaky");
    let mut d = Domain::ephemeral(&xml, Box::new(plugin.open_domain(&xml).unwrap())).unwrap();
    // The steps ran, but the manifest beside the data could not follow: the store must not
    // record an operation the manifest does not show.
    let e = d
        .create_snapshot("<domainsnapshot><name>s1</name></domainsnapshot>")
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Incomplete, "{e}");
    assert!(
        e.full_message()
            .contains("the disk holding the manifest is full"),
        "{}",
        e.full_message()
    );
    assert!(d.backend_manifest().unwrap().is_none());
    // The next call finishes it: manifest first, then the store.
    let recovered = d.recover().unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(d.tree().unwrap().len(), 1);
    let m = d
        .backend_manifest()
        .unwrap()
        .expect("saved by the roll-forward");
    assert!(m.documents[0].contains("<name>s1</name>"));
}
