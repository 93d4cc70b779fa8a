//! The libvirt backend on a real libvirtd with QEMU: internal and external snapshots, shut
//! off and running, every delete mode and revert, through the engine and the plugin. Data
//! is checked through the disks (qemu-io offline, HMP qemu-io through libvirt's monitor
//! while running) and libvirt's view through virsh (`snapshot-list`, `domblklist`).

#[macro_use]
mod common;

use snaptree_engine::{DeleteMode, Domain, ErrorCode, NoProgress, PowerState, Uuid};

const K64: u64 = 64 * 1024;

fn open(d: &common::TestDomain) -> Domain {
    let backend = common::plugin().open_domain(&d.snaptree_xml).unwrap();
    Domain::ephemeral(&d.snaptree_xml, Box::new(backend)).unwrap()
}

fn create(dom: &mut Domain, name: &str) -> Uuid {
    dom.create_snapshot(&format!(
        "<domainsnapshot><name>{name}</name></domainsnapshot>"
    ))
    .unwrap()
}

fn s(u: Uuid) -> String {
    u.to_string()
}

/// (name, parent) pairs as libvirt should list them.
fn pairs(list: &[(Uuid, Option<Uuid>)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(u, p)| (s(*u), p.map(s).unwrap_or_default()))
        .collect();
    v.sort();
    v
}

#[test]
fn internal_snapshots_of_a_shut_off_domain_every_delete_mode_and_revert() {
    let rig = rig_or_skip!();
    let d = rig.define("int-off", 2, "internal");
    let mut dom = open(&d);
    for f in &d.files {
        common::image_write(f, 0x11, 0, K64);
    }
    let a = create(&mut dom, "a");
    for f in &d.files {
        common::image_write(f, 0x22, common::MIB, K64);
    }
    let b = create(&mut dom, "b");
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None), (b, Some(a))]));
    assert_eq!(rig.current(&d.name), Some(s(b)));
    // libvirt shows snaptree's name as the description.
    assert!(
        rig.virsh(&["snapshot-dumpxml", &d.name, &s(a)])
            .contains("<description>a</description>")
    );

    dom.revert(&a, None, &mut NoProgress).unwrap();
    for f in &d.files {
        assert!(common::image_reads(f, None, 0x11, 0, K64));
        assert!(
            common::image_reads(f, None, 0x00, common::MIB, K64),
            "revert left b's data"
        );
        assert!(common::image_reads(f, Some(&s(b)), 0x22, common::MIB, K64));
    }
    assert_eq!(rig.current(&d.name), Some(s(a)));
    let c = create(&mut dom, "c");
    assert_eq!(
        rig.parents(&d.name),
        pairs(&[(a, None), (b, Some(a)), (c, Some(a))])
    );

    // Internal merge: libvirt cannot; refused before anything runs.
    let e = dom
        .delete(&b, DeleteMode::MergeForce, &mut NoProgress)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(e.to_string().contains("libvirt"), "{e}");
    assert_eq!(rig.parents(&d.name).len(), 3);

    dom.delete(&b, DeleteMode::Discard, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None), (c, Some(a))]));
    let tags = std::process::Command::new("qemu-img")
        .args(["snapshot", "-U", "-l"])
        .arg(&d.files[0])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tags.stdout).contains(&s(b)),
        "b's data was not freed"
    );

    dom.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(c, None)]));
    for f in &d.files {
        assert!(common::image_reads(f, Some(&s(c)), 0x11, 0, K64));
    }

    // Retire keeps the data and libvirt's entry (the physical tree); delete-all frees both.
    let e2 = create(&mut dom, "e");
    dom.delete(&e2, DeleteMode::Retire, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(c, None), (e2, Some(c))]));
    dom.check_agreement().unwrap();
    dom.delete_all(&mut NoProgress).unwrap();
    assert_eq!(rig.parents(&d.name), vec![]);
    assert_eq!(rig.current(&d.name), None);
    for f in &d.files {
        assert!(
            common::image_reads(f, None, 0x11, 0, K64),
            "delete-all changed the live state"
        );
    }
}

#[test]
fn internal_snapshots_of_a_running_domain_with_memory_and_revert() {
    let rig = rig_or_skip!();
    let d = rig.define("int-live", 1, "internal");
    rig.virsh(&["start", &d.name]);
    let mut dom = open(&d);
    rig.guest_write(&d.name, 0, 0x33, 0, K64);
    let a = create(&mut dom, "a");
    rig.guest_write(&d.name, 0, 0x44, common::MIB, K64);
    let b = create(&mut dom, "b");
    assert_eq!(
        dom.tree().unwrap().get(&a).unwrap().state,
        PowerState::Running
    );
    dom.revert(&a, None, &mut NoProgress).unwrap();
    assert_eq!(rig.virsh(&["domstate", &d.name]).trim(), "running");
    assert!(rig.guest_reads(&d.name, 0, 0x33, 0, K64));
    assert!(
        rig.guest_reads(&d.name, 0, 0x00, common::MIB, K64),
        "revert kept b's write"
    );
    dom.revert(&b, None, &mut NoProgress).unwrap();
    assert!(rig.guest_reads(&d.name, 0, 0x44, common::MIB, K64));
    // Revert to "shut off": libvirt has no flag for it; the backend stops the domain.
    dom.revert(&a, Some(PowerState::Shutoff), &mut NoProgress)
        .unwrap();
    assert_eq!(rig.virsh(&["domstate", &d.name]).trim(), "shut off");
    assert!(common::image_reads(&d.files[0], None, 0x33, 0, K64));
    rig.virsh(&["start", &d.name]);
    dom.delete(&b, DeleteMode::Discard, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None)]));
    assert!(rig.guest_reads(&d.name, 0, 0x33, 0, K64));
    dom.check_agreement().unwrap();
}

/// Writes `pattern` at `slot` MiB on every disk of a shut-off domain's active images.
fn write_all(rig: &common::Rig, name: &str, pattern: u8, slot: u64) {
    for f in rig.blklist(name) {
        common::image_write(&f, pattern, slot * common::MIB, K64);
    }
}

fn live_reads(rig: &common::Rig, name: &str, pattern: u8, slot: u64) -> bool {
    rig.blklist(name)
        .iter()
        .all(|f| common::image_reads(f, None, pattern, slot * common::MIB, K64))
}

#[test]
fn external_snapshots_of_a_shut_off_domain_merge_consolidate_discard() {
    let rig = rig_or_skip!();
    let d = rig.define("ext-off", 2, "external");
    let mut dom = open(&d);
    write_all(&rig, &d.name, 0x11, 0);
    let a = create(&mut dom, "a");
    write_all(&rig, &d.name, 0x22, 1);
    let b = create(&mut dom, "b");
    write_all(&rig, &d.name, 0x33, 2);
    let c = create(&mut dom, "c");
    write_all(&rig, &d.name, 0x44, 3);
    // Each disk runs on an overlay named after the newest snapshot.
    for (f, base) in rig.blklist(&d.name).iter().zip(&d.files) {
        assert!(f.to_string_lossy().ends_with(&s(c)), "{}", f.display());
        assert_ne!(f, base);
    }
    // Σ(a) is the base image as it was.
    for f in &d.files {
        assert!(common::image_reads(f, None, 0x11, 0, K64));
        assert!(common::image_reads(f, None, 0x00, common::MIB, K64));
    }
    // libvirt 9.0 cannot revert to external snapshots: refused before anything runs.
    let e = dom.revert(&a, None, &mut NoProgress).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");

    // MERGE c into b: b survives (its uuid), with c's content; c's entry is gone.
    dom.delete(&c, DeleteMode::Merge, &mut NoProgress).unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None), (b, Some(a))]));
    assert_eq!(rig.current(&d.name), Some(s(b)));
    assert!(
        live_reads(&rig, &d.name, 0x44, 3),
        "merge changed the live state"
    );
    dom.check_agreement().unwrap();

    // CONSOLIDATE a: b's content and the live state unchanged.
    dom.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(b, None)]));
    for slot in 0..4u64 {
        assert!(live_reads(
            &rig,
            &d.name,
            [0x11, 0x22, 0x33, 0x44][slot as usize],
            slot
        ));
    }
    // b's content is c's: slot 2 written, slot 3 not.
    let xml = rig.virsh(&["snapshot-dumpxml", &d.name, &s(b)]);
    let overlay = xml
        .split("<source file='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("b's overlay");
    let chain = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(overlay)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&chain.stdout);
    let backing = text
        .split("\"full-backing-filename\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("b's overlay has a backing file");
    assert!(common::image_reads(
        std::path::Path::new(backing),
        None,
        0x33,
        2 * common::MIB,
        K64
    ));
    assert!(common::image_reads(
        std::path::Path::new(backing),
        None,
        0x00,
        3 * common::MIB,
        K64
    ));

    // DISCARD the last one: the live state keeps every byte, libvirt holds nothing.
    dom.delete(&b, DeleteMode::Discard, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), vec![]);
    for slot in 0..4u64 {
        assert!(live_reads(
            &rig,
            &d.name,
            [0x11, 0x22, 0x33, 0x44][slot as usize],
            slot
        ));
    }
    dom.check_agreement().unwrap();
}

#[test]
fn external_snapshots_of_a_running_domain_commit_through_qemu() {
    let rig = rig_or_skip!();
    let d = rig.define("ext-live", 1, "external");
    rig.virsh(&["start", &d.name]);
    let mut dom = open(&d);
    let mut snaps = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        rig.guest_write(&d.name, 0, 0x10 + i as u8, i as u64 * common::MIB, K64);
        snaps.push(create(&mut dom, name));
    }
    rig.guest_write(&d.name, 0, 0x20, 3 * common::MIB, K64);
    let [a, b, c] = [snaps[0], snaps[1], snaps[2]];
    assert!(rig.blklist(&d.name)[0].to_string_lossy().ends_with(&s(c)));
    // Intermediate commit (b's overlay is not the active image).
    dom.delete(&b, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None), (c, Some(a))]));
    // Active commit with pivot: discarding the current leaf.
    dom.delete(&c, DeleteMode::Discard, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None)]));
    assert_eq!(rig.current(&d.name), Some(s(a)));
    assert!(rig.blklist(&d.name)[0].to_string_lossy().ends_with(&s(a)));
    for (i, p) in [0x10u8, 0x11, 0x12, 0x20].into_iter().enumerate() {
        assert!(
            rig.guest_reads(&d.name, 0, p, i as u64 * common::MIB, K64),
            "slot {i}"
        );
    }
    // MERGE into the base (no parent): only the entry goes.
    dom.delete(&a, DeleteMode::Merge, &mut NoProgress).unwrap();
    assert_eq!(rig.parents(&d.name), vec![]);
    assert!(rig.guest_reads(&d.name, 0, 0x10, 0, K64));
    dom.check_agreement().unwrap();
}

#[test]
fn deleting_an_external_snapshot_never_destroys_internal_snapshots_in_its_overlay() {
    let rig = rig_or_skip!();
    let d = rig.define("hazard", 1, "external");
    let mut dom = open(&d);
    let a = create(&mut dom, "a");
    let _b = create(&mut dom, "b");
    // Someone takes an internal snapshot inside a's overlay (b's content), behind libvirt.
    let overlay = d.files[0].with_extension(s(a));
    assert!(overlay.is_file(), "{}", overlay.display());
    let st = std::process::Command::new("qemu-img")
        .args(["snapshot", "-c", "precious"])
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(st.success());
    let before = rig.parents(&d.name);
    let e = dom
        .delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(e.to_string().contains("precious"), "{e}");
    assert_eq!(rig.parents(&d.name), before, "libvirt's tree changed");
    let tags = std::process::Command::new("qemu-img")
        .args(["snapshot", "-U", "-l"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tags.stdout).contains("precious"));
    dom.check_agreement().unwrap();
}

/// After a lost state store libvirt keeps the old snapshots, named by uuid. A create that
/// reuses one of those uuids used to return at once because libvirt had a snapshot of that
/// name, so the engine recorded a snapshot whose data was the old one's; now the create
/// step refuses one that is not libvirt's current snapshot (a finished earlier run of the
/// same step is), and nothing changes.
#[test]
fn a_create_reusing_the_uuid_of_a_snapshot_a_lost_store_left_is_refused() {
    let rig = rig_or_skip!();
    let d = rig.define("reuse", 1, "internal");
    let old = create(&mut open(&d), "old");
    // The store is lost: a new, empty domain over the same libvirt domain.
    let mut dom = open(&d);
    let fresh = create(&mut dom, "fresh");
    let before = rig.parents(&d.name);
    snaptree_tests::assert_reused_uuid_refused(&mut dom, old, "libvirt");
    assert_eq!(
        rig.parents(&d.name),
        before,
        "expected libvirt's tree unchanged"
    );
    assert_eq!(
        rig.current(&d.name),
        Some(s(fresh)),
        "expected libvirt's current unchanged"
    );
}
