//! `snaptree adopt DOMAIN_XML`: a state directory lost after a session of creates, a
//! revert, a branch, a rename and a merge on two real qcow2 disks (one external, one
//! internal) is rebuilt from the manifests the QEMU backend keeps beside the disks: the
//! tree, every name, description and parent, and current come back, and every snapshot
//! still reverts to its own data (`qemu-io read -P`).
//!
//! Needs the QEMU plugin beside the `snaptree` binary (any workspace build).

mod common;
#[path = "common/qcow.rs"]
mod qcow;

use std::path::Path;

use qcow::{assert_reads, p, run, write};

/// What the tree looks like through the CLI: each snapshot's parent, description line
/// and state from its XML, and current.
fn picture(state: &Path) -> String {
    let mut out = String::new();
    let names = common::ok(state, &["snapshot-list", "vm", "--name"]);
    for name in names.lines().filter(|n| !n.is_empty()) {
        let parent = common::run(state, &["snapshot-parent", "vm", name]);
        let xml = common::ok(state, &["snapshot-dumpxml", "vm", name]);
        let keep = |tag: &str| {
            xml.lines()
                .find(|l| l.trim_start().starts_with(tag))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        out.push_str(&format!(
            "{name} <- {} {} {} {}\n",
            String::from_utf8_lossy(&parent.stdout).trim(),
            keep("<description>"),
            keep("<state>"),
            keep("<creationTime>").replace("creationTime", "creationdate")
                + &keep("<creationdate>")
                + &keep("<expires>"),
        ));
    }
    out.push_str(&format!(
        "current: {}",
        common::ok(state, &["snapshot-current", "vm", "--name"])
    ));
    // Pins, expiry and the policy, as prune would apply them.
    out.push_str(&common::ok(state, &["policy", "vm"]));
    out.push_str(&common::ok(state, &["prune", "vm", "--dry-run"]));
    out
}

#[test]
fn a_lost_state_directory_is_rebuilt_from_the_manifests_beside_the_disks() {
    if !qcow::plugin_present("adopt from the manifests beside the disks") {
        return;
    }
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let vda = dir.join("vda.qcow2");
    let vdb = dir.join("vdb.qcow2");
    for d in [&vda, &vdb] {
        run("qemu-img", &["create", "-q", "-f", "qcow2", p(d), "4M"]);
    }
    let domain = dir.join("vm.xml");
    std::fs::write(
        &domain,
        format!(
            "<domain type='qemu'><name>vm</name><uuid>7d1a3c52-9a0e-4c55-8f0f-0d3c1b6e2a11</uuid><devices>\
             <disk type='file' device='disk' snapshot='external'><source file='{}'/><target dev='vda'/></disk>\
             <disk type='file' device='disk' snapshot='internal'><source file='{}'/><target dev='vdb'/></disk>\
             </devices></domain>",
            vda.display(),
            vdb.display()
        ),
    )
    .unwrap();
    let first = tempfile::tempdir().unwrap();
    let st = first.path();
    let both = |slot: u64, pattern: u8| {
        write(&vda, slot, pattern);
        write(&vdb, slot, pattern);
    };
    common::ok(st, &["define", p(&domain)]);
    both(0, 0x11);
    common::ok(
        st,
        &[
            "snapshot-create-as",
            "vm",
            "--name",
            "A",
            "--description",
            "base <install> & 'tools'",
        ],
    );
    both(1, 0x22);
    // Expired long ago: prune would take it.
    common::ok(
        st,
        &[
            "snapshot-create-as",
            "vm",
            "--name",
            "B",
            "--expires",
            "@1000",
        ],
    );
    both(2, 0x33);
    common::ok(st, &["snapshot-create-as", "vm", "--name", "gone"]);
    // Merged into B: B now holds gone's content.
    common::ok(st, &["snapshot-delete", "vm", "gone", "--merge"]);
    common::ok(st, &["snapshot-revert", "vm", "A"]);
    both(3, 0x44);
    common::ok(
        st,
        &[
            "snapshot-create-as",
            "vm",
            "--name",
            "C",
            "--description",
            "a branch",
        ],
    );
    common::ok(st, &["snapshot-rename", "vm", "C", "branch"]);
    both(1, 0x55);
    common::ok(st, &["snapshot-pin", "vm", "A"]);
    common::ok(st, &["policy", "vm", "last=1"]);
    let before = picture(st);
    assert!(
        before.contains("<expires>1000</expires>")
            && before.contains("last=1")
            && before.contains("would remove 'B' (expired")
            && !before.contains("would remove 'A'"),
        "expected B expired and A pinned: {before}"
    );
    assert!(before.contains("current: branch"), "{before}");
    let live: Vec<(u64, u8)> = vec![(0, 0x11), (1, 0x55), (3, 0x44)];
    assert_reads(&vda, &live, "live before");

    // The state directory is lost; the disks and what lies beside them remain.
    drop(first);
    let second = tempfile::tempdir().unwrap();
    let st = second.path();
    let plan = common::ok(st, &["adopt", p(&domain), "--dry-run"]);
    assert!(
        plan.contains("define domain 'vm' on backend 'qemu'")
            && plan.contains("redefine 'A', child of nothing")
            && plan.contains("redefine 'branch', child of 'A'")
            && plan.contains("current: 'branch'"),
        "{plan}"
    );
    assert!(
        !common::ok(st, &["list"]).contains("vm"),
        "a dry run defines nothing"
    );
    let out = common::ok(st, &["adopt", p(&domain)]);
    assert!(
        out.contains("Adopted 3 snapshots into domain 'vm', current 'branch'"),
        "{out}"
    );
    assert_eq!(picture(st), before, "the tree rebuilt from the manifests");
    assert_reads(&vda, &live, "live after adopt");
    assert_reads(&vdb, &live, "live after adopt");

    // Adopting again changes nothing (it replaces what is there: how an adoption that
    // stopped part-way is finished).
    common::ok(st, &["adopt", p(&domain)]);
    assert_eq!(picture(st), before, "after a second adopt");
    // The store is trusted over a manifest that does not list what the store has.
    let mut beside = vda.as_os_str().to_owned();
    beside.push(".snaptree-manifest.xml");
    let older = std::fs::read(&beside).unwrap();
    common::ok(st, &["snapshot-create-as", "vm", "--name", "newer"]);
    for d in [&vda, &vdb] {
        let mut m = d.as_os_str().to_owned();
        m.push(".snaptree-manifest.xml");
        std::fs::write(&m, &older).unwrap();
    }
    let again = common::run(st, &["adopt", p(&domain)]);
    assert_eq!(again.status.code(), Some(17), "OPERATION_INVALID");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("(first 'newer')"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    common::ok(st, &["snapshot-delete", "vm", "newer", "--consolidate"]);

    // Every snapshot still reverts to its own data, and deletes work on the adopted tree.
    for (name, slots) in [
        ("A", vec![(0, 0x11)]),
        ("B", vec![(0, 0x11), (1, 0x22), (2, 0x33)]),
        ("branch", vec![(0, 0x11), (3, 0x44)]),
    ] {
        common::ok(st, &["snapshot-revert", "vm", name]);
        assert_reads(&vda, &slots, name);
        assert_reads(&vdb, &slots, name);
    }
    common::ok(st, &["snapshot-delete", "vm", "A", "--consolidate"]);
    common::ok(st, &["snapshot-revert", "vm", "B"]);
    assert_reads(
        &vda,
        &[(0, 0x11), (1, 0x22), (2, 0x33)],
        "B after A's consolidate",
    );
    assert_reads(
        &vdb,
        &[(0, 0x11), (1, 0x22), (2, 0x33)],
        "B after A's consolidate",
    );
    common::ok(st, &["snapshot-delete-all", "vm"]);
    for d in [&vda, &vdb] {
        let mut m = d.as_os_str().to_owned();
        m.push(".snaptree-manifest.xml");
        assert!(
            !Path::new(&m).exists(),
            "no manifest is left beside {} once no snapshot is",
            d.display()
        );
    }
}

#[test]
fn adopt_without_a_manifest_names_what_is_missing_and_defines_nothing() {
    if !qcow::plugin_present("adopt from the manifests beside the disks") {
        return;
    }
    let files = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let vda = files.path().join("vda.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&vda), "4M"]);
    let domain = files.path().join("vm.xml");
    std::fs::write(
        &domain,
        format!(
            "<domain type='qemu'><name>vm</name><devices><disk type='file' device='disk' snapshot='external'>\
             <source file='{}'/><target dev='vda'/></disk></devices></domain>",
            vda.display()
        ),
    )
    .unwrap();
    let out = common::run(state.path(), &["adopt", p(&domain)]);
    assert_eq!(out.status.code(), Some(14), "NO_SNAPSHOT");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("no manifest beside the data of domain 'vm'"),
        "{e}"
    );
    assert!(!common::ok(state.path(), &["list"]).contains("vm"));
    // A manifest cut short is refused, naming where it lies, and defines nothing either.
    let mut m = vda.as_os_str().to_owned();
    m.push(".snaptree-manifest.xml");
    std::fs::write(&m, "<!-- not snaptree's -->\n").unwrap();
    let out = common::run(state.path(), &["adopt", p(&domain)]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("beside the data of domain 'vm'"),
        "{e}"
    );
    assert!(!common::ok(state.path(), &["list"]).contains("vm"));
}
