//! What snaptree does not own, it leaves alone: an external disk's own backing file (a
//! template image) is the bottom of every chain and never written; internal snapshots made by
//! other tools stay in the image.

mod common;

use common::{Layout, MIB, assert_internal_snapshot, assert_live, revert, snap, write};
use snaptree_backend_qemu::QemuBackend;
use snaptree_engine::{DeleteMode, Domain, NoProgress};
use snaptree_qemu_img as qi;

fn domain(xml: &str) -> Domain {
    Domain::ephemeral(xml, Box::new(QemuBackend::open(xml).unwrap())).unwrap()
}

#[test]
fn a_template_backing_file_is_kept_and_never_written() {
    let vm = common::Vm::new(&["external"]);
    // Make d0 an overlay on a template holding 0x07 in slot 9.
    let template = vm.dir.path().join("template.qcow2");
    qi::create(&template, common::SIZE).unwrap();
    qi::io_write_pattern(&template, 0x07, 9 * common::CHUNK, common::CHUNK).unwrap();
    std::fs::remove_file(&vm.disks[0]).unwrap();
    qi::create_overlay(&vm.disks[0], &template).unwrap();
    let stamp = std::fs::metadata(&template).unwrap().modified().unwrap();

    let mut d = domain(&vm.xml);
    write(&vm, 0, 1);
    snap(&mut d, "A");
    write(&vm, 1, 2);
    snap(&mut d, "B");
    revert(&mut d, "A");
    let with_template = |l: &[(u64, u8)]| -> Layout {
        let mut l: Layout = l.iter().copied().collect();
        l.insert(9, 0x07);
        l
    };
    assert_live(&vm, &with_template(&[(0, 1)]), "after revert");
    let a = common::uuid(&mut d, "A");
    d.delete(&a, DeleteMode::Merge, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    d.delete_all(&mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert_live(&vm, &with_template(&[(0, 1)]), "after delete-all");
    // Back to what it was: an overlay on the template, nothing else beside it.
    let info = qi::info(&vm.disks[0]).unwrap();
    assert_eq!(
        info.full_backing_filename.as_deref(),
        Some(template.as_path())
    );
    assert!(!vm.dir.path().join("d0.qcow2.snapshots").exists());
    assert_eq!(
        std::fs::metadata(&template).unwrap().modified().unwrap(),
        stamp,
        "the template was written"
    );
}

#[test]
fn internal_snapshots_of_other_tools_are_left_alone() {
    let vm = common::Vm::new(&["internal"]);
    qi::io_write_pattern(&vm.disks[0], 0x05, 0, MIB).unwrap();
    qi::snapshot_create(&vm.disks[0], "before-snaptree").unwrap();
    let mut d = domain(&vm.xml);
    write(&vm, 0, 1);
    snap(&mut d, "A");
    d.check_agreement().unwrap();
    d.delete_all(&mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    let tags: Vec<String> = qi::snapshot_list(&vm.disks[0])
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(tags, vec!["before-snaptree".to_string()]);
    assert!(!vm.dir.path().join("d0.qcow2.snaptree.json").exists());
}

/// After a lost state store the disks keep the old snapshots' data under their uuids. A
/// create that reuses one of those uuids must not take that data for the new snapshot:
/// internal disks used to, because the create step counted any tag of that uuid as its own
/// earlier run. Both modes refuse it now, naming the data, and change nothing.
#[test]
fn a_create_reusing_the_uuid_of_data_a_lost_store_left_is_refused() {
    for mode in ["internal", "external"] {
        let vm = common::Vm::new(&[mode, mode]);
        write(&vm, 0, 1);
        let old = snap(&mut domain(&vm.xml), "old");
        // The store is lost: a new, empty domain over the same disks.
        let mut d = domain(&vm.xml);
        write(&vm, 1, 2);
        snap(&mut d, "fresh");
        write(&vm, 2, 3);
        let files = vm.files();
        snaptree_tests::assert_reused_uuid_refused(&mut d, old, mode);
        assert_eq!(vm.files(), files, "{mode}: expected no file changed");
        assert_live(&vm, &[(0, 1), (1, 2), (2, 3)].into_iter().collect(), mode);
        if mode == "internal" {
            assert_internal_snapshot(&vm, old, &[(0, 1)].into_iter().collect(), "the old data");
        }
    }
}

/// The domain's configuration never changes: the live file keeps its path, its mode and its
/// owner through every step that replaces it (create, revert, a commit that renames a layer
/// over it).
#[test]
fn the_live_file_keeps_its_mode_and_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let vm = common::Vm::new(&["external"]);
    let live = &vm.disks[0];
    std::fs::set_permissions(live, std::fs::Permissions::from_mode(0o640)).unwrap();
    // Changing the owner needs root; without it only the mode is checked.
    let owned = std::os::unix::fs::chown(live, Some(4321), Some(4321)).is_ok();
    let check = |what: &str| {
        let m = std::fs::metadata(live).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640, "{what}: mode");
        if owned {
            assert_eq!((m.uid(), m.gid()), (4321, 4321), "{what}: owner");
        }
    };
    let (mut d, h) = vm.domain();
    write(&vm, 0, 1);
    snap(&mut d, "A");
    check("create");
    write(&vm, 1, 2);
    revert(&mut d, "A");
    check("revert");
    write(&vm, 1, 3);
    h.set_consolidate_policy(snaptree_backend_qemu::ConsolidatePolicy::AlwaysCommit);
    let a = common::uuid(&mut d, "A");
    d.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    check("consolidate by commit");
    assert_live(
        &vm,
        &[(0, 1), (1, 3)].into_iter().collect(),
        "after the commit",
    );
}
