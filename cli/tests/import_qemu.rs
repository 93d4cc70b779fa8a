//! `snaptree import-libvirt` of a kvm domain: the QEMU backend's domain is defined from
//! libvirt's domain XML, and the snapshots libvirt made — internal ones tagged by name on
//! one disk, external `<stem>.<name>` overlays on the other — are adopted as they are.
//! Then reverts and deletes run on them through the CLI, and every snapshot's data is read
//! back with `qemu-io read -P`.
//!
//! Needs the QEMU plugin beside the `snaptree` binary (`target/<profile>/
//! libsnaptree_backend_qemu.so`, built by `cargo build -p snaptree-backend-qemu` or any
//! workspace build).

mod common;
#[path = "common/qcow.rs"]
mod qcow;

use std::path::Path;

use qcow::{assert_reads, p, run, write};

/// Slot → pattern pairs a disk must read.
type Slots = Vec<(u64, u8)>;

/// libvirt's `snapshot-dumpxml` of a disk snapshot: vda internal, vdb external onto
/// `overlay`, the cdrom not snapshotted.
fn snapshot_xml(name: &str, parent: Option<&str>, overlay: &Path, time: u64) -> String {
    let parent = parent.map_or(String::new(), |p| {
        format!("<parent><name>{p}</name></parent>")
    });
    format!(
        "<domainsnapshot>\n  <name>{name}</name>\n  <description>taken by libvirt</description>\n  <state>shutoff</state>\n  {parent}\n  <creationTime>{time}</creationTime>\n  <memory snapshot='no'/>\n  <disks>\n    <disk name='vda' snapshot='internal'/>\n    <disk name='vdb' snapshot='external' type='file'>\n      <driver type='qcow2'/>\n      <source file='{}'/>\n    </disk>\n    <disk name='hdc' snapshot='no'/>\n  </disks>\n  <domain type='kvm'>\n    <name>guest</name>\n  </domain>\n</domainsnapshot>\n",
        overlay.display()
    )
}

#[test]
fn a_kvm_domain_with_internal_and_external_libvirt_snapshots_is_imported_and_every_snapshot_reverts_to_its_data()
 {
    if !qcow::plugin_present("import-libvirt of a kvm domain") {
        return;
    }
    let files = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = files.path();
    let vda = dir.join("vda.qcow2");
    let vdb0 = dir.join("vdb.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&vda), "4M"]);
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&vdb0), "4M"]);
    // s1, s2, then s3 named by its creation seconds, as libvirt would name it.
    let names = ["s1", "s2", "1700000300"];
    let mut vdb = vdb0.clone();
    let mut docs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let pattern = 0x11 * (i as u8 + 1);
        write(&vda, i as u64, pattern);
        write(&vdb, i as u64, pattern + 0x80);
        run("qemu-img", &["snapshot", "-c", name, p(&vda)]);
        let overlay = dir.join(format!("vdb.{name}"));
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                p(&vdb),
                p(&overlay),
            ],
        );
        let doc = dir.join(format!("{name}.xml"));
        let parent = (i > 0).then(|| names[i - 1]);
        std::fs::write(
            &doc,
            snapshot_xml(name, parent, &overlay, 1_700_000_000 + i as u64),
        )
        .unwrap();
        docs.push(doc);
        vdb = overlay;
    }
    write(&vda, 3, 0x44);
    write(&vdb, 3, 0xc4);
    let domain = dir.join("guest.xml");
    std::fs::write(
        &domain,
        format!(
            "<domain type='kvm'>\n  <name>guest</name>\n  <uuid>2f6c2b8e-5a43-4a36-9d65-0c1d6b1b7f10</uuid>\n  <memory unit='KiB'>65536</memory>\n  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' discard='unmap'/>\n      <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source file='{}'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>\n    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <source file='/nonexistent/install.iso'/>\n      <target dev='hdc' bus='ide'/>\n      <readonly/>\n    </disk>\n  </devices>\n</domain>\n",
            vda.display(),
            vdb.display()
        ),
    )
    .unwrap();
    let st = state.path();
    let mut args = vec!["import-libvirt", p(&domain)];
    // Children first on the command line: the import orders them.
    args.extend(docs.iter().rev().map(|d| p(d)));
    args.extend(["--current", names[2]]);
    let mut dry = args.clone();
    dry.push("--dry-run");
    let plan = common::ok(st, &dry);
    assert!(plan.contains("on backend 'qemu'"), "{plan}");
    assert!(
        plan.contains("disk 'vda'") && plan.contains("internal"),
        "{plan}"
    );
    assert!(
        plan.contains("disk 'vdb'") && plan.contains("external"),
        "{plan}"
    );
    assert!(plan.contains("offline"), "{plan}");
    let out = common::ok(st, &args);
    assert!(
        out.contains("Domain 'guest' defined (backend 'qemu')")
            && out.contains("Imported 3 snapshots into domain 'guest', current '1700000300'"),
        "{out}"
    );
    assert_eq!(
        common::ok(st, &["snapshot-parent", "guest", names[2]]),
        "s2\n"
    );
    // Nothing was renamed or copied: the live images are the ones libvirt named.
    assert_reads(
        &vda,
        &[(0, 0x11), (1, 0x22), (2, 0x33), (3, 0x44)],
        "imported",
    );
    assert_reads(
        &vdb,
        &[(0, 0x91), (1, 0xa2), (2, 0xb3), (3, 0xc4)],
        "imported",
    );
    let data = |i: usize| -> (Slots, Slots) {
        (
            (0..=i).map(|s| (s as u64, 0x11 * (s as u8 + 1))).collect(),
            (0..=i)
                .map(|s| (s as u64, 0x11 * (s as u8 + 1) + 0x80))
                .collect(),
        )
    };
    for (i, name) in names.iter().enumerate() {
        common::ok(st, &["snapshot-revert", "guest", name]);
        let (a, b) = data(i);
        assert_reads(&vda, &a, name);
        assert_reads(&vdb, &b, name);
    }
    // Merge s2 into s1: s1 now holds s2's data; s3 keeps its own.
    common::ok(st, &["snapshot-delete", "guest", "s2", "--merge"]);
    common::ok(st, &["snapshot-revert", "guest", "s1"]);
    let (a, b) = data(1);
    assert_reads(&vda, &a, "s1 after the merge");
    assert_reads(&vdb, &b, "s1 after the merge");
    common::ok(st, &["snapshot-revert", "guest", names[2]]);
    let (a, b) = data(2);
    assert_reads(&vda, &a, "s3 after the merge");
    assert_reads(&vdb, &b, "s3 after the merge");
    common::ok(st, &["snapshot-delete-all", "guest"]);
    assert_reads(&vda, &a, "after delete-all");
    assert_reads(&vdb, &b, "after delete-all");
    assert_eq!(common::ok(st, &["snapshot-list", "guest", "--name"]), "");
}

#[test]
fn a_current_snapshot_with_children_on_an_internal_disk_is_refused_before_anything_runs() {
    if !qcow::plugin_present("import-libvirt of a kvm domain") {
        return;
    }
    let files = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = files.path();
    let vda = dir.join("vda.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&vda), "4M"]);
    run("qemu-img", &["snapshot", "-c", "a", p(&vda)]);
    run("qemu-img", &["snapshot", "-c", "b", p(&vda)]);
    let doc = |name: &str, parent: &str| {
        format!(
            "<domainsnapshot><name>{name}</name>{parent}<state>shutoff</state>\
             <disks><disk name='vda' snapshot='internal'/></disks></domainsnapshot>"
        )
    };
    let a = dir.join("a.xml");
    let b = dir.join("b.xml");
    std::fs::write(&a, doc("a", "")).unwrap();
    std::fs::write(&b, doc("b", "<parent><name>a</name></parent>")).unwrap();
    let domain = dir.join("vm.xml");
    std::fs::write(
        &domain,
        format!(
            "<domain type='kvm'><name>vm</name><devices><disk type='file' device='disk'>\
             <driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda'/></disk>\
             </devices></domain>",
            vda.display()
        ),
    )
    .unwrap();
    let out = common::run(
        state.path(),
        &["import-libvirt", p(&domain), p(&a), p(&b), "--current", "a"],
    );
    assert_eq!(out.status.code(), Some(17), "OPERATION_INVALID");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("'a' has a child ('b')"), "{e}");
    assert!(
        !common::ok(state.path(), &["list"]).contains("vm"),
        "nothing defined"
    );
    // With the leaf current, the same files import.
    common::ok(
        state.path(),
        &["import-libvirt", p(&domain), p(&a), p(&b), "--current", "b"],
    );
    assert_eq!(
        common::ok(state.path(), &["snapshot-current", "vm", "--name"]),
        "b\n"
    );
}
