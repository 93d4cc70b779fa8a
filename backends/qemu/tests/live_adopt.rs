//! Live adoption: internal snapshots a running QEMU took under libvirt-style name tags
//! (HMP `savevm NAME`, which libvirt's internal snapshots of a running domain amount to)
//! are adopted while the VM runs, from the tags QEMU reports; then reverts (memory and
//! disks) and deletes run on them live, and the data is read back.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use snaptree_backend_qemu::QemuBackend;
use snaptree_engine::{DeleteMode, Domain, NoProgress};
use snaptree_tests::rig::{self, Rig};
use snaptree_tests::skip;

const CHUNK: u64 = common::CHUNK;
const WAIT: Duration = Duration::from_secs(20);

fn write(rig: &mut Rig, pattern: u8, offset: u64) {
    let qoms: Vec<String> = rig.disks().iter().map(|d| d.qom_path()).collect();
    for q in qoms {
        let qmp = rig.qmp();
        qmp.qemu_io(&q, &format!("write -P {pattern} {offset} {CHUNK}"))
            .unwrap();
        qmp.qemu_io(&q, "flush").unwrap();
    }
}

fn assert_reads(rig: &mut Rig, disks: &[PathBuf], slots: &[(u64, u8)], what: &str) {
    let qoms: Vec<String> = rig.disks().iter().map(|d| d.qom_path()).collect();
    for q in qoms {
        rig.qmp().qemu_io(&q, "flush").unwrap();
    }
    for d in disks {
        for slot in 0..3 {
            let pattern = slots
                .iter()
                .find(|(s, _)| *s == slot)
                .map_or(0, |(_, v)| *v);
            assert!(
                rig::verify_pattern(d, pattern, slot * CHUNK, CHUNK).unwrap(),
                "{what}: {} slot {slot} should read {pattern:#x}",
                d.display()
            );
        }
    }
}

fn snapshot_xml(name: &str, parent: Option<&str>) -> String {
    let parent = parent.map_or(String::new(), |p| {
        format!("<parent><name>{p}</name></parent>")
    });
    format!(
        "<domainsnapshot><name>{name}</name><state>running</state>{parent}\
         <creationTime>1700000000</creationTime><memory snapshot='internal'/>\
         <disks><disk name='vda' snapshot='internal'/><disk name='vdb' snapshot='internal'/></disks>\
         <domain type='kvm'><name>vm</name></domain></domainsnapshot>"
    )
}

#[test]
fn internal_snapshots_a_running_qemu_took_by_name_are_adopted_and_reverted_live() {
    if !rig::qemu_available() {
        skip::cannot_run(
            "live adoption",
            "qemu-system-x86_64, qemu-img or qemu-io is not on PATH",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let modes = ["internal", "internal"];
    let disks = common::create_disks(dir.path(), &modes, 4 * common::MIB);
    let mut b = Rig::builder(dir.path());
    for (i, d) in disks.iter().enumerate() {
        b = b.disk(&format!("vd{i}"), d);
    }
    let mut vm = b.start().expect("start QEMU");
    vm.wait_counter(3, WAIT).expect("the guest counter runs");
    write(&mut vm, 0x11, 0);
    vm.qmp().human_monitor_command("savevm s1").unwrap();
    write(&mut vm, 0x22, CHUNK);
    vm.qmp().human_monitor_command("savevm s2").unwrap();
    write(&mut vm, 0x33, 2 * CHUNK);
    let xml = common::domain_xml(&disks, &modes).replace(
        "</domain>",
        &format!("<qmp socket='{}'/></domain>", vm.spare_socket().display()),
    );
    let mut d = Domain::ephemeral(&xml, Box::new(QemuBackend::open_xml(&xml).unwrap())).unwrap();
    let s1 = d
        .redefine_snapshot(&snapshot_xml("s1", None), false)
        .unwrap();
    let s2 = d
        .redefine_snapshot(&snapshot_xml("s2", Some("s1")), true)
        .unwrap();
    d.check_agreement().unwrap();
    d.revert(&s1, None, &mut NoProgress).unwrap();
    assert_reads(&mut vm, &disks, &[(0, 0x11)], "s1");
    d.revert(&s2, None, &mut NoProgress).unwrap();
    assert_reads(&mut vm, &disks, &[(0, 0x11), (1, 0x22)], "s2");
    // Merge s2 into s1 live; s1 then holds s2's disks.
    d.delete(&s2, DeleteMode::Merge, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    write(&mut vm, 0x44, 2 * CHUNK);
    d.revert(&s1, None, &mut NoProgress).unwrap();
    assert_reads(
        &mut vm,
        &disks,
        &[(0, 0x11), (1, 0x22)],
        "s1 after the merge",
    );
    d.delete_all(&mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert!(!dir.path().join("d0.qcow2.snaptree.json").exists());
}
