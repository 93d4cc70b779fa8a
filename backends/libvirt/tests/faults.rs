//! Faults in the middle of a block commit on a running domain, with real processes killed
//! by pid: libvirtd restarted while the commit runs, QEMU killed while it runs, and a
//! cancel from the progress callback. Each time the engine keeps the operation in its
//! journal (SQLite state directory) and the next open or `recover` finishes it; the data
//! is then checked through the disks and libvirt's view through virsh. Block jobs are
//! slowed with the domain's `bandwidth` so that they are caught running.

#[macro_use]
mod common;

use std::path::PathBuf;

use common::MIB;
use snaptree_engine::{DeleteMode, Domain, ErrorCode, NoProgress, Uuid};

const K64: u64 = 64 * 1024;

fn create(dom: &mut Domain, name: &str) -> Uuid {
    dom.create_snapshot(&format!(
        "<domainsnapshot><name>{name}</name></domainsnapshot>"
    ))
    .unwrap()
}

fn s(u: Uuid) -> String {
    u.to_string()
}

/// The overlay created when snapshot `u` was taken, for base image `file`.
fn overlay(file: &std::path::Path, u: Uuid) -> PathBuf {
    file.with_extension(s(u))
}

/// Every image of every disk's live chain, from `virsh dumpxml`.
fn live_files(rig: &common::Rig, name: &str) -> String {
    rig.virsh(&["dumpxml", name])
}

/// libvirt's (name, parent) pairs, sorted.
fn pairs(list: &[(Uuid, Option<Uuid>)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(u, p)| (s(*u), p.map(s).unwrap_or_default()))
        .collect();
    v.sort();
    v
}

/// The record the backend keeps in the domain's `<metadata>` while a freeing runs.
fn has_record(rig: &common::Rig, name: &str) -> bool {
    rig.virsh(&["dumpxml", name, "--inactive"])
        .contains("snaptree.invalid/libvirt/freeing")
}

#[test]
fn libvirtd_restarted_mid_commit_the_journal_finishes_it() {
    let rig = rig_or_skip!();
    let d = rig.define("restart", 1, "external");
    rig.virsh(&["start", &d.name]);
    let state = tempfile::tempdir().unwrap();
    let conn = common::connection(state.path());
    // 256 KiB/s: the 6 MiB commit below would run for about 24 s, so it is still running
    // after the restart even on a loaded machine; it is sped up before the roll-forward.
    conn.define_domain(&d.limited_xml(MIB / 4)).unwrap();
    let mut dom = conn.open_domain(&d.name).unwrap();
    rig.guest_write(&d.name, 0, 0x11, 0, K64);
    let a = create(&mut dom, "a");
    rig.guest_write(&d.name, 0, 0x22, 2 * MIB, K64);
    let b = create(&mut dom, "b");
    rig.guest_write(&d.name, 0, 0x44, 8 * MIB, 6 * MIB);
    let c = create(&mut dom, "c");
    rig.guest_write(&d.name, 0, 0x55, 3 * MIB, K64);
    let yb = overlay(&d.files[0], b);

    // Consolidate b: an intermediate commit of b's overlay (6 MiB) into a's.
    let err = std::thread::scope(|scope| {
        let run = scope.spawn(|| dom.delete(&b, DeleteMode::Consolidate, &mut NoProgress));
        rig.wait_for_job_progress(&d.name, "vda");
        rig.restart_libvirtd();
        run.join().unwrap().unwrap_err()
    });
    assert_eq!(err.code(), ErrorCode::Incomplete, "{err}");
    // QEMU kept committing; the restarted libvirtd still tracks the job, which the
    // roll-forward takes over rather than starting again.
    assert!(
        rig.block_job(&d.name, "vda").is_some(),
        "the commit ended before the roll-forward; slow it down"
    );
    assert!(has_record(&rig, &d.name));
    drop(dom);
    rig.virsh(&["blockjob", &d.name, "vda", "--bandwidth", "8"]);

    let mut dom = conn.open_domain(&d.name).unwrap();
    assert_eq!(
        dom.recoveries().len(),
        1,
        "the journal was not rolled forward"
    );
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None), (c, Some(a))]));
    assert_eq!(rig.current(&d.name), Some(s(c)));
    assert!(!live_files(&rig, &d.name).contains(&yb.display().to_string()));
    assert!(!yb.exists(), "b's overlay was not removed");
    // c's entry names a's overlay as its image now, not b's.
    assert!(
        !rig.virsh(&["snapshot-dumpxml", &d.name, &s(c)])
            .contains(&yb.display().to_string())
    );
    assert!(!has_record(&rig, &d.name));
    let check = |rig: &common::Rig| {
        assert!(rig.guest_reads(&d.name, 0, 0x11, 0, K64));
        assert!(rig.guest_reads(&d.name, 0, 0x22, 2 * MIB, K64));
        assert!(rig.guest_reads(&d.name, 0, 0x55, 3 * MIB, K64));
        assert!(rig.guest_reads(&d.name, 0, 0x44, 8 * MIB, 6 * MIB));
    };
    check(&rig);
    dom.check_agreement().unwrap();
    // The persistent definition agrees: the domain starts again on the same data.
    rig.virsh(&["destroy", &d.name]);
    rig.virsh(&["start", &d.name]);
    check(&rig);
    // And the rest of the chain still deletes through libvirt's metadata.
    dom.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    assert_eq!(rig.parents(&d.name), pairs(&[(c, None)]));
    check(&rig);
}

#[test]
fn qemu_killed_mid_active_commit_the_journal_finishes_it_once_the_domain_runs() {
    let rig = rig_or_skip!();
    let d = rig.define("killed", 1, "external");
    rig.virsh(&["start", &d.name]);
    let state = tempfile::tempdir().unwrap();
    let conn = common::connection(state.path());
    conn.define_domain(&d.limited_xml(MIB)).unwrap();
    let mut dom = conn.open_domain(&d.name).unwrap();
    rig.guest_write(&d.name, 0, 0x11, 0, K64);
    let a = create(&mut dom, "a");
    let b = create(&mut dom, "b");
    rig.guest_write(&d.name, 0, 0x22, 2 * MIB, K64);
    rig.guest_write(&d.name, 0, 0x44, 8 * MIB, 6 * MIB);
    let yb = overlay(&d.files[0], b);

    // Discard b, the current leaf: an active commit of the live image into a's overlay.
    let err = std::thread::scope(|scope| {
        let run = scope.spawn(|| dom.delete(&b, DeleteMode::Discard, &mut NoProgress));
        rig.wait_for_job_progress(&d.name, "vda");
        rig.kill_qemu(&d.name);
        run.join().unwrap().unwrap_err()
    });
    assert_eq!(err.code(), ErrorCode::Incomplete, "{err}");
    assert!(has_record(&rig, &d.name));
    drop(dom);

    // Shut off, the roll-forward cannot finish: the operation stays pending, and says why.
    let mut dom = conn.open_domain(&d.name).unwrap();
    assert!(dom.pending().unwrap().is_some());
    let e = dom.recover().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Incomplete, "{e}");
    assert!(format!("{e:?}").contains("start the domain"), "{e:?}");
    // libvirt already lists b as gone; its image is still the live one.
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None)]));
    assert_eq!(rig.blklist(&d.name), vec![yb.clone()]);

    rig.virsh(&["start", &d.name]);
    let done = dom.recover().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(dom.pending().unwrap().map(|p| p.operation), None);
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None)]));
    assert_eq!(rig.current(&d.name), Some(s(a)));
    assert_eq!(rig.blklist(&d.name), vec![overlay(&d.files[0], a)]);
    assert!(!yb.exists());
    assert!(!has_record(&rig, &d.name));
    assert!(rig.guest_reads(&d.name, 0, 0x11, 0, K64));
    assert!(rig.guest_reads(&d.name, 0, 0x22, 2 * MIB, K64));
    assert!(rig.guest_reads(&d.name, 0, 0x44, 8 * MIB, 6 * MIB));
    dom.check_agreement().unwrap();
    rig.virsh(&["destroy", &d.name]);
    assert!(
        rig.virsh(&["domblklist", &d.name, "--inactive"])
            .contains(&overlay(&d.files[0], a).display().to_string()),
        "the persistent definition still names b's overlay"
    );
}

#[test]
fn progress_comes_from_the_block_job_and_cancel_aborts_it() {
    let rig = rig_or_skip!();
    let d = rig.define("cancel", 2, "external");
    rig.virsh(&["start", &d.name]);
    let state = tempfile::tempdir().unwrap();
    let conn = common::connection(state.path());
    // 2 MiB/s: each disk's 4 MiB commit runs for about 2 s.
    conn.define_domain(&d.limited_xml(2 * MIB)).unwrap();
    let mut dom = conn.open_domain(&d.name).unwrap();
    let a = create(&mut dom, "a");
    let b = create(&mut dom, "b");
    for disk in 0..2 {
        rig.guest_write(&d.name, disk, 0x66, 8 * MIB, 4 * MIB);
    }
    let c = create(&mut dom, "c");

    let mut seen = Vec::new();
    let err = dom
        .delete(&b, DeleteMode::Consolidate, &mut |f: f64| {
            seen.push(f);
            // Cancel halfway through the first disk's commit.
            f < 0.25
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Incomplete, "{err}");
    assert!(format!("{err:?}").contains("cancelled"), "{err:?}");
    assert!(
        seen.iter().any(|f| *f > 0.0 && *f < 0.25),
        "no progress from the job: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    // The job stopped at once: no job, b's overlay still in the chain.
    assert_eq!(rig.block_job(&d.name, "vda"), None);
    let yb = overlay(&d.files[0], b);
    assert!(live_files(&rig, &d.name).contains(&yb.display().to_string()));
    // b's own content is partly overwritten: libvirt no longer lists it.
    assert_eq!(rig.parents(&d.name), pairs(&[(a, None), (c, Some(a))]));

    dom.recover().unwrap();
    assert!(!live_files(&rig, &d.name).contains(&yb.display().to_string()));
    assert!(!yb.exists());
    for disk in 0..2 {
        assert!(rig.guest_reads(&d.name, disk, 0x66, 8 * MIB, 4 * MIB));
    }
    assert!(!has_record(&rig, &d.name));
    dom.check_agreement().unwrap();
}
