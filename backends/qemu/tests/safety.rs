//! KEEP_LIVE revert (SEMANTICS.md §7.4) on real qcow2 disks, both storage modes, two disks:
//! every byte of the live state before the revert comes back by reverting to the kept
//! snapshot; and a process SIGKILLed anywhere inside the one plan (before, between and
//! after its create and revert halves) leaves, after recovery, both halves done.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Layout, Vm, assert_live, write};
use snaptree_backend_qemu::{QemuBackend, QemuProvider};
use snaptree_engine::conn::Connection;
use snaptree_engine::testing::{Fault, FaultAction, FaultSwitch, FaultyBackend, STALL_MARKER};
use snaptree_engine::{Domain, NoProgress, Operation};

const CHILD_ENV: &str = "SNAPTREE_QEMU_KEEP_LIVE_CHILD";

/// The live layout written before the revert: slots 0-2 differ from snapshot A's.
fn live_before() -> Layout {
    BTreeMap::from([(0, 0x44), (1, 0x22), (2, 0x33), (9, 0x99)])
}

fn layout_a() -> Layout {
    BTreeMap::from([(0, 0x11)])
}

/// A (slot 0), then B (slot 1), then live writes: the tree A → B, current B.
fn build(vm: &Vm, d: &mut Domain) {
    write(vm, 0, 0x11);
    common::snap(d, "A");
    write(vm, 1, 0x22);
    common::snap(d, "B");
    write(vm, 2, 0x33);
    write(vm, 0, 0x44);
    write(vm, 9, 0x99);
    assert_live(vm, &live_before(), "before the revert");
}

#[test]
fn keep_live_revert_then_revert_to_the_kept_snapshot_brings_back_every_byte() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for modes in [
        ["external", "external"],
        ["internal", "internal"],
        ["external", "internal"],
    ] {
        let vm = Vm::new(&modes);
        let (mut d, _) = vm.domain();
        build(&vm, &mut d);
        let a = common::uuid(&mut d, "A");
        let plan = d
            .revert_keep_live(&a, None, Some("kept"), &mut NoProgress)
            .unwrap();
        assert!(
            matches!(plan.operation, Operation::RevertKeepLive { .. }),
            "{modes:?}: {plan:?}"
        );
        assert_live(
            &vm,
            &layout_a(),
            &format!("{modes:?}: after the revert to A"),
        );
        let kept = common::uuid(&mut d, "kept");
        let tree = d.tree().unwrap();
        assert_eq!(tree.current().map(|c| c.uuid), Some(a), "{modes:?}");
        assert_eq!(
            tree.parent(&kept).map(|p| p.name.as_str()),
            Some("B"),
            "{modes:?}: K is a child of the snapshot current before"
        );
        d.check_agreement().unwrap();
        // Undo the revert: a revert to K.
        d.revert(&kept, None, &mut NoProgress).unwrap();
        assert_live(&vm, &live_before(), &format!("{modes:?}: after undoing"));
        // Without a name: pre-revert-<creationdate>.
        let plan = d.revert_keep_live(&a, None, None, &mut NoProgress).unwrap();
        let Operation::RevertKeepLive { keep_name, .. } = &plan.operation else {
            panic!("{plan:?}")
        };
        let date = d.tree().unwrap().by_name(keep_name).unwrap().creation_date;
        assert_eq!(*keep_name, format!("pre-revert-{date}"));
        d.check_agreement().unwrap();
        // A taken name is refused before anything runs.
        let files = vm.files();
        let e = d
            .revert_keep_live(&a, None, Some("B"), &mut NoProgress)
            .unwrap_err();
        assert!(e.to_string().contains("'B'"), "{e}");
        assert_eq!(
            vm.files(),
            files,
            "{modes:?}: a refused KEEP_LIVE changed files"
        );
    }
}

// ---- SIGKILL inside the plan ----

fn open(state: &Path, switch: Option<FaultSwitch>) -> Domain {
    let conn = Connection::open(Some(state)).unwrap();
    conn.register_provider("qemu", Arc::new(QemuProvider));
    let xml = conn.domain_xml("vm").unwrap();
    let backend: Box<dyn snaptree_engine::Backend> = match switch {
        Some(s) => Box::new(FaultyBackend::new(
            Box::new(QemuBackend::open(&xml).unwrap()),
            s,
        )),
        None => Box::new(QemuBackend::open(&xml).unwrap()),
    };
    conn.open_domain_with_backend("vm", backend).unwrap()
}

/// Entry point of the child process (a no-op in a normal test run): stalls at the fault
/// the spec names, to be killed there.
#[test]
fn keep_live_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let state = PathBuf::from(parts.next().unwrap());
    let at_step: usize = parts.next().unwrap().parse().unwrap();
    let after_step = parts.next().unwrap() == "after";
    let switch = FaultSwitch::new();
    let mut d = open(&state, Some(switch.clone()));
    let a = common::uuid(&mut d, "A");
    switch.arm(Fault {
        at_step,
        action: FaultAction::Stall,
        after_step,
    });
    d.revert_keep_live(&a, None, Some("kept"), &mut NoProgress)
        .unwrap();
    panic!("the fault did not fire");
}

/// Runs the child until it stalls at the fault, then SIGKILLs its process group (its
/// qemu-img children too) and waits until the group is gone.
fn kill_at(state: &Path, at_step: usize, after: bool) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "keep_live_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}|{at_step}|{}",
                state.display(),
                if after { "after" } else { "before" }
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(STALL_MARKER) {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended before stalling at step {at_step}"
        );
    }
    let group = format!("-{}", child.id());
    Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("kill")
        .args(["-0", "--", &group])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the killed group does not go away"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigkill_inside_a_keep_live_revert_leaves_both_halves_after_recovery() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for modes in [["external", "external"], ["internal", "internal"]] {
        // Step 0 is the create of K, step 1 the revert: killed before each, and after
        // each ran but before the journal recorded it.
        for (at_step, after) in [(0, false), (0, true), (1, false), (1, true)] {
            let what = format!(
                "{modes:?} killed {} step {at_step}",
                if after { "after" } else { "before" }
            );
            let vm = Vm::new(&modes);
            let state = vm.dir.path().join("state");
            let conn = Connection::open(Some(&state)).unwrap();
            conn.register_provider("qemu", Arc::new(QemuProvider));
            conn.define_domain(&vm.xml).unwrap();
            drop(conn);
            let mut d = open(&state, None);
            build(&vm, &mut d);
            drop(d);
            kill_at(&state, at_step, after);
            let mut d = open(&state, None);
            assert_eq!(d.recoveries().len(), 1, "{what}: expected a roll-forward");
            assert_eq!(d.recoveries()[0].steps_done_before, at_step, "{what}");
            d.check_agreement()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let a = common::uuid(&mut d, "A");
            let kept = common::uuid(&mut d, "kept");
            assert_eq!(
                d.tree().unwrap().current().map(|c| c.uuid),
                Some(a),
                "{what}: current"
            );
            assert_live(&vm, &layout_a(), &format!("{what}: live is A"));
            d.revert(&kept, None, &mut NoProgress).unwrap();
            assert_live(
                &vm,
                &live_before(),
                &format!("{what}: K holds the live state"),
            );
        }
    }
}

// ---- prune (SEMANTICS.md §7.5) ----

/// Unix seconds of 2025-MM-DD HH:00 UTC, counted here by month lengths (2025 is not a
/// leap year), independently of the engine's calendar code.
fn date_2025(month: u32, day: u32, hour: i64) -> i64 {
    const LEN: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    // 2025-01-01 is day 20089 since 1970-01-01.
    let days = 20_089 + LEN[..(month - 1) as usize].iter().sum::<i64>() + i64::from(day) - 1;
    days * 86_400 + hour * 3_600
}

/// The snapshots' dates: 30 over five months, several in some weeks and months.
fn dates() -> Vec<(u32, u32, i64)> {
    (0..30u32)
        .map(|i| {
            let month = 1 + i / 6;
            let day = 1 + (i % 6) * 4;
            (month, day, i64::from(i % 3) * 5)
        })
        .collect()
}

#[test]
fn prune_removes_exactly_what_the_policy_and_expiry_say_and_keeps_every_survivors_data() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let vm = Vm::new(&["external", "internal"]);
    let (mut d, _) = vm.domain();
    let mut layout = Layout::new();
    let mut layouts = Vec::new();
    let mut uuids = Vec::new();
    for i in 0..30u8 {
        let slot = u64::from(i % 16);
        write(&vm, slot, 0x10 + i);
        layout.insert(slot, 0x10 + i);
        let name = format!("s{i:02}");
        // s27 expired long ago.
        let expires = if i == 27 {
            "<expires>1000</expires>"
        } else {
            ""
        };
        let u = d
            .create_snapshot(&format!(
                "<domainsnapshot><name>{name}</name>{expires}</domainsnapshot>"
            ))
            .unwrap();
        uuids.push(u);
        layouts.push(layout.clone());
    }
    // Creation dates spread over months, set through REDEFINE of each existing snapshot.
    let dates = dates();
    for (i, u) in uuids.iter().enumerate() {
        let (m, day, h) = dates[i];
        let parent = match i {
            0 => String::new(),
            _ => format!("<parent><uuid>{}</uuid></parent>", uuids[i - 1]),
        };
        d.redefine_snapshot(
            &format!(
                "<domainsnapshot><name>s{i:02}</name><uuid>{u}</uuid>{parent}<state>shutoff</state><creationdate>{}</creationdate></domainsnapshot>",
                date_2025(m, day, h)
            ),
            false,
        )
        .unwrap();
    }
    d.set_pinned(&uuids[3], true).unwrap();
    write(&vm, 15, 0xEE);
    let mut live = layout.clone();
    live.insert(15, 0xEE);
    assert_live(&vm, &live, "before prune");
    d.set_retention_policy(Some(&snaptree_engine::Policy {
        last: 3,
        weekly: 4,
        monthly: 3,
        ..Default::default()
    }))
    .unwrap();

    // The expected survivors, computed here: the newest 3; the newest of each of the 4
    // most recent ISO weeks and 3 most recent months that have one; the pinned s03; the
    // current s29; and not the expired s27.
    let mut newest_first: Vec<usize> = (0..30).collect();
    newest_first
        .sort_by_key(|i| std::cmp::Reverse(date_2025(dates[*i].0, dates[*i].1, dates[*i].2)));
    let mut keep: std::collections::BTreeSet<usize> = newest_first[..3].iter().copied().collect();
    // Weeks counted from Monday 1970-01-05 (day 4).
    let week = |i: usize| {
        (date_2025(dates[i].0, dates[i].1, dates[i].2).div_euclid(86_400) - 4).div_euclid(7)
    };
    let month = |i: usize| i64::from(dates[i].0);
    for (key, n) in [(&week as &dyn Fn(usize) -> i64, 4), (&month, 3)] {
        let mut seen = Vec::new();
        for &i in &newest_first {
            if seen.len() == n {
                break;
            }
            if !seen.contains(&key(i)) {
                seen.push(key(i));
                keep.insert(i);
            }
        }
    }
    keep.insert(3);
    keep.insert(29);
    keep.remove(&27);
    let mut expected_victims: Vec<usize> = (0..30).filter(|i| !keep.contains(i)).collect();
    expected_victims.sort_by_key(|i| date_2025(dates[*i].0, dates[*i].1, dates[*i].2));
    let expected_names: Vec<String> = expected_victims
        .iter()
        .map(|i| format!("s{i:02}"))
        .collect();
    assert!(expected_victims.contains(&27) && expected_names.len() > 10);

    let digest = |d: &mut Domain, u| {
        d.backend()
            .test_hooks()
            .unwrap()
            .content_digest(snaptree_engine::ContentRef::Snapshot(u))
            .unwrap()
    };
    let before: Vec<String> = uuids.iter().map(|u| digest(&mut d, *u)).collect();

    // --dry-run: the list, nothing changed.
    let files = vm.files();
    let plan = d.plan_prune().unwrap();
    let names: Vec<String> = plan.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, expected_names, "dry run");
    assert_eq!(
        plan.iter().find(|p| p.name == "s27").unwrap().reason,
        snaptree_engine::PruneReason::Expired
    );
    assert_eq!(vm.files(), files, "the dry run changed files");
    assert_eq!(d.tree().unwrap().len(), 30);

    let pruned = d.prune(&mut NoProgress).unwrap();
    let names: Vec<String> = pruned.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, expected_names, "prune");
    // The bytes each delete frees come from the backend's estimate; the first delete's
    // is taken against the same data in the dry run and in the run.
    assert!(
        plan.iter().chain(&pruned).all(|p| p.freed.is_some()),
        "the QEMU backend estimates every prune delete: {:?}",
        plan.iter()
            .chain(&pruned)
            .map(|p| p.freed)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        plan[0].freed, pruned[0].freed,
        "the first delete's estimate, dry run and run"
    );
    let tree = d.tree().unwrap().clone();
    let survivors: Vec<String> = tree.topological().iter().map(|s| s.name.clone()).collect();
    let want: Vec<String> = keep.iter().map(|i| format!("s{i:02}")).collect();
    assert_eq!(survivors, want);
    d.check_agreement().unwrap();
    assert_live(&vm, &live, "after prune");
    for &i in &keep {
        assert_eq!(
            digest(&mut d, uuids[i]),
            before[i],
            "s{i:02}'s content changed"
        );
    }
    // And read back through qemu-io: revert to each survivor.
    for &i in &keep {
        d.revert(&uuids[i], None, &mut NoProgress).unwrap();
        assert_live(&vm, &layouts[i], &format!("survivor s{i:02}"));
    }
    // Nothing more to prune.
    d.revert(&uuids[29], None, &mut NoProgress).unwrap();
    assert!(d.plan_prune().unwrap().is_empty());
}
