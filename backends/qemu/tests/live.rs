//! Live mode against a real `qemu-system-x86_64` (the `snaptree-qmp` rig: a tiny machine
//! whose firmware counts timer ticks in guest RAM, disks on virtio): trees of snapshots with
//! memory while data is written into the disks, revert with the recorded or a forced power
//! state, the delete modes live mode supports, refusals, a QEMU killed mid-job, and the
//! conformance kit. Each test starts its own QEMU, killed when the rig is dropped.
//!
//! Without qemu-system-x86_64 each test prints a `SKIPPED:` line, or fails under CI
//! (`snaptree_tests::skip`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use snaptree_backend_qemu::{ConsolidatePolicy, QemuBackend};
use snaptree_check::{Config, Subject, Transition, Tuning, run, run_sequence};
use snaptree_engine::{
    Backend, Capabilities, DeleteMode, Domain, Error, ErrorCode, NoProgress, PhysicalTree,
    PowerState, Progress, Result, Step, StepKind, TestHooks, Uuid, flags,
};
use snaptree_tests::rig::{self, Rig, TICKS_PER_SECOND};
use snaptree_tests::skip;

const SIZE: u64 = 4 * common::MIB;
const CHUNK: u64 = common::CHUNK;
const WAIT: Duration = Duration::from_secs(20);

/// A running QEMU on fresh qcow2 disks, and the domain XML naming its spare QMP socket.
struct LiveVm {
    rig: Rig,
    disks: Vec<PathBuf>,
    modes: Vec<&'static str>,
    xml: String,
    // Last: removed after QEMU is killed.
    dir: tempfile::TempDir,
}

/// True when QEMU is here; otherwise says so (or fails, under CI).
fn qemu_present() -> bool {
    if rig::qemu_available() {
        return true;
    }
    skip::cannot_run(
        "the live QEMU test",
        "qemu-system-x86_64, qemu-img or qemu-io is not on PATH",
    );
    false
}

fn start_rig(dir: &Path, disks: &[PathBuf]) -> Rig {
    start_rig_with(dir, disks, serde_json::json!({}))
}

/// A rig whose disks' `-blockdev` nodes carry extra `options`.
fn start_rig_with(dir: &Path, disks: &[PathBuf], options: serde_json::Value) -> Rig {
    let mut b = Rig::builder(dir).node_options(options);
    for (i, d) in disks.iter().enumerate() {
        b = b.disk(&format!("vd{i}"), d);
    }
    let mut rig = b.start().expect("start QEMU");
    rig.wait_counter(3, WAIT).expect("the guest counter runs");
    rig
}

impl LiveVm {
    fn start(modes: &[&'static str]) -> Option<LiveVm> {
        LiveVm::start_with(modes, serde_json::json!({}))
    }

    /// As [`LiveVm::start`], the disks' nodes with extra `-blockdev` options.
    fn start_with(modes: &[&'static str], options: serde_json::Value) -> Option<LiveVm> {
        if !qemu_present() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let disks = common::create_disks(dir.path(), modes, SIZE);
        let rig = start_rig_with(dir.path(), &disks, options);
        let xml = common::domain_xml(&disks, modes).replace(
            "</domain>",
            &format!("<qmp socket='{}'/></domain>", rig.spare_socket().display()),
        );
        Some(LiveVm {
            rig,
            disks,
            modes: modes.to_vec(),
            xml,
            dir,
        })
    }

    fn domain(&self) -> Domain {
        Domain::ephemeral(
            &self.xml,
            Box::new(QemuBackend::open_xml(&self.xml).unwrap()),
        )
        .unwrap()
    }

    /// Kills QEMU and starts a new one on the same disks and sockets.
    fn restart(&mut self) {
        self.rig.kill();
        self.rig = start_rig(self.dir.path(), &self.disks);
    }

    /// Guest I/O: `pattern` over one chunk at `offset` of every disk, flushed.
    fn write(&mut self, pattern: u8, offset: u64) {
        let qoms: Vec<String> = self.rig.disks().iter().map(|d| d.qom_path()).collect();
        for q in qoms {
            let qmp = self.rig.qmp();
            qmp.qemu_io(&q, &format!("write -P {pattern} {offset} {CHUNK}"))
                .unwrap();
            qmp.qemu_io(&q, "flush").unwrap();
        }
    }

    /// Every disk's live content reads `pattern` over the chunk at `offset`.
    fn assert_reads(&mut self, pattern: u8, offset: u64, what: &str) {
        let qoms: Vec<String> = self.rig.disks().iter().map(|d| d.qom_path()).collect();
        for q in qoms {
            self.rig.qmp().qemu_io(&q, "flush").unwrap();
        }
        for d in &self.disks {
            assert!(
                rig::verify_pattern(d, pattern, offset, CHUNK).unwrap(),
                "{what}: {} should read {pattern:#x} at {offset}",
                d.display()
            );
        }
    }

    fn counter(&mut self) -> u64 {
        self.rig.counter().unwrap().unwrap()
    }

    fn status(&mut self) -> PowerState {
        match self.rig.qmp().query_status().unwrap().state.power_state() {
            snaptree_qmp::PowerState::Running => PowerState::Running,
            snaptree_qmp::PowerState::Paused => PowerState::Paused,
            snaptree_qmp::PowerState::Shutoff => PowerState::Shutoff,
        }
    }

    /// The internal snapshot tags of every disk, read while QEMU holds them.
    fn tags(&self) -> Vec<Vec<String>> {
        self.disks.iter().map(|d| tags_of(d)).collect()
    }

    /// The snaptree files beside the disks (not the rig's own files).
    fn snaptree_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('d') && n.contains(".qcow2"))
            .collect();
        v.sort();
        v
    }
}

fn tags_of(image: &Path) -> Vec<String> {
    let out = Command::new("qemu-img")
        .args(["snapshot", "-U", "-l"])
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

/// Runs `op` while a watcher on the rig's own QMP socket kills QEMU as soon as a job
/// matching `job` exists; returns whether it did, and what `op` returned.
fn kill_qemu_during<T: Send>(
    rig: &mut Rig,
    job: impl Fn(&snaptree_qmp::JobInfo) -> bool + Send,
    op: impl FnOnce() -> T,
) -> (bool, T) {
    std::thread::scope(|scope| {
        let watcher = scope.spawn(move || {
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                let jobs = rig.qmp().query_jobs().unwrap_or_default();
                if jobs.iter().any(&job) {
                    rig.kill();
                    return true;
                }
            }
            false
        });
        let result = op();
        (watcher.join().unwrap(), result)
    })
}

fn snap(d: &mut Domain, name: &str) -> Uuid {
    common::snap(d, name)
}

/// Takes a snapshot and returns the counter just before and just after it.
fn snap_timed(vm: &mut LiveVm, d: &mut Domain, name: &str) -> (Uuid, u64, u64) {
    let before = vm.counter();
    let u = snap(d, name);
    let after = vm.counter();
    (u, before, after)
}

/// Reverts to `u` once the guest counter has gone well past `after`, and checks the
/// restored memory: the counter reads at or above `before` (its value at snapshot time)
/// and below its value before the revert.
fn revert_and_check_memory(
    vm: &mut LiveVm,
    d: &mut Domain,
    u: Uuid,
    (before, after): (u64, u64),
    force: Option<PowerState>,
) {
    let pre = vm
        .rig
        .wait_counter(after + TICKS_PER_SECOND / 2, WAIT)
        .unwrap();
    d.revert(&u, force, &mut NoProgress).unwrap();
    let post = vm.counter();
    assert!(
        post >= before && post < pre,
        "restored counter {post}: expected at least {before} (at snapshot time) and below {pre} (before the revert)"
    );
}

#[test]
fn a_tree_of_live_snapshots_keeps_every_disk_and_the_memory() {
    let Some(mut vm) = LiveVm::start(&["internal", "internal"]) else {
        return;
    };
    let mut d = vm.domain();
    assert_eq!(d.power_state().unwrap(), PowerState::Running);

    vm.write(0x11, 0);
    let (s1, b1, a1) = snap_timed(&mut vm, &mut d, "s1");
    vm.write(0x22, CHUNK);
    let (s2, b2, a2) = snap_timed(&mut vm, &mut d, "s2");
    vm.write(0x44, 3 * CHUNK);
    // Back to s1, then a sibling of s2.
    revert_and_check_memory(&mut vm, &mut d, s1, (b1, a1), None);
    vm.assert_reads(0x11, 0, "s1");
    vm.assert_reads(0, CHUNK, "s1");
    vm.assert_reads(0, 3 * CHUNK, "s1");
    vm.write(0x33, 2 * CHUNK);
    let (s3, b3, a3) = snap_timed(&mut vm, &mut d, "s3");
    // A grandchild.
    vm.write(0x55, 0);
    let (s4, b4, a4) = snap_timed(&mut vm, &mut d, "s4");
    d.check_agreement().unwrap();
    {
        let tree = d.tree().unwrap();
        assert_eq!(tree.parent(&s2).map(|p| p.uuid), Some(s1));
        assert_eq!(tree.parent(&s3).map(|p| p.uuid), Some(s1));
        assert_eq!(tree.parent(&s4).map(|p| p.uuid), Some(s3));
        for u in [s1, s2, s3, s4] {
            assert_eq!(tree.get(&u).unwrap().state, PowerState::Running);
        }
    }
    for tags in vm.tags() {
        assert_eq!(tags.len(), 4, "{tags:?}");
    }

    // Every snapshot's data and memory, in an order that crosses the tree.
    let expect: [(Uuid, (u64, u64), [u8; 4]); 4] = [
        (s2, (b2, a2), [0x11, 0x22, 0, 0]),
        (s4, (b4, a4), [0x55, 0, 0x33, 0]),
        (s1, (b1, a1), [0x11, 0, 0, 0]),
        (s3, (b3, a3), [0x11, 0, 0x33, 0]),
    ];
    for (u, times, data) in expect {
        vm.write(0x77, 3 * CHUNK); // unsaved changes the revert discards
        revert_and_check_memory(&mut vm, &mut d, u, times, None);
        assert_eq!(vm.status(), PowerState::Running);
        for (i, p) in data.iter().enumerate() {
            vm.assert_reads(*p, i as u64 * CHUNK, &format!("snapshot {u}"));
        }
        assert_eq!(d.tree().unwrap().current().map(|c| c.uuid), Some(u));
        d.check_agreement().unwrap();
    }
}

#[test]
fn revert_honours_the_recorded_state_and_the_flags() {
    let Some(mut vm) = LiveVm::start(&["internal"]) else {
        return;
    };
    let mut d = vm.domain();
    vm.write(0x11, 0);
    let (running, rb, ra) = snap_timed(&mut vm, &mut d, "running");
    vm.rig.qmp().stop().unwrap();
    assert_eq!(d.power_state().unwrap(), PowerState::Paused);
    vm.write(0x22, 0);
    let (paused, pb, pa) = snap_timed(&mut vm, &mut d, "paused");
    assert_eq!(pb, pa, "the counter stands still while paused");
    {
        let tree = d.tree().unwrap();
        assert_eq!(tree.get(&running).unwrap().state, PowerState::Running);
        assert_eq!(tree.get(&paused).unwrap().state, PowerState::Paused);
    }
    vm.rig.qmp().cont().unwrap();

    // Recorded states.
    revert_and_check_memory(&mut vm, &mut d, paused, (pb, pa), None);
    assert_eq!(vm.status(), PowerState::Paused);
    assert_eq!(d.power_state().unwrap(), PowerState::Paused);
    vm.assert_reads(0x22, 0, "paused");
    let c = vm.counter();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(vm.counter(), c, "paused after the revert");
    d.revert(&running, None, &mut NoProgress).unwrap();
    assert_eq!(vm.status(), PowerState::Running);
    vm.assert_reads(0x11, 0, "running");
    let post = vm.counter();
    assert!(post >= rb, "{post} >= {rb}");
    let _ = ra;

    // Forced states.
    d.revert(&running, Some(PowerState::Paused), &mut NoProgress)
        .unwrap();
    assert_eq!(vm.status(), PowerState::Paused);
    d.revert(&paused, Some(PowerState::Running), &mut NoProgress)
        .unwrap();
    assert_eq!(vm.status(), PowerState::Running);
    vm.assert_reads(0x22, 0, "paused, forced running");
    vm.rig.wait_counter(pa + 3, WAIT).unwrap();

    // SHUTOFF while the VM runs: refused, nothing changed.
    vm.write(0x33, 0);
    let tags = vm.tags();
    let e = d
        .revert(&running, Some(PowerState::Shutoff), &mut NoProgress)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(
        e.full_message().contains("cannot shut the guest off"),
        "{e}"
    );
    assert_eq!(vm.status(), PowerState::Running);
    vm.assert_reads(0x33, 0, "after a refused revert");
    assert_eq!(vm.tags(), tags);
    assert_eq!(d.tree().unwrap().current().map(|c| c.uuid), Some(paused));
    d.check_agreement().unwrap();
}

#[test]
fn discard_consolidate_and_delete_all_while_running() {
    let Some(mut vm) = LiveVm::start(&["internal", "internal"]) else {
        return;
    };
    let mut d = vm.domain();
    let before_files = vm.snaptree_files();
    vm.write(0x11, 0);
    let s1 = snap(&mut d, "s1");
    vm.write(0x22, CHUNK);
    let s2 = snap(&mut d, "s2");
    vm.write(0x33, 2 * CHUNK);
    let (s3, b3, a3) = snap_timed(&mut vm, &mut d, "s3");
    let s4 = snap(&mut d, "s4");

    // Consolidate the middle: its child keeps its content.
    let mut reports = Vec::new();
    let mut progress = |f: f64| {
        reports.push(f);
        true
    };
    d.delete(&s2, DeleteMode::Consolidate, &mut progress)
        .unwrap();
    assert!(reports.last() == Some(&1.0), "{reports:?}");
    assert_eq!(d.tree().unwrap().parent(&s3).map(|p| p.uuid), Some(s1));
    d.check_agreement().unwrap();
    for tags in vm.tags() {
        assert!(!tags.contains(&s2.to_string()));
        assert_eq!(tags.len(), 3);
    }
    revert_and_check_memory(&mut vm, &mut d, s3, (b3, a3), None);
    vm.assert_reads(0x11, 0, "s3");
    vm.assert_reads(0x22, CHUNK, "s3");
    vm.assert_reads(0x33, 2 * CHUNK, "s3");

    // Discard a leaf; a retire leaves its data (known as retired).
    d.delete(&s4, DeleteMode::Discard, &mut NoProgress).unwrap();
    d.delete(&s1, DeleteMode::Retire, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert_eq!(vm.tags()[0].len(), 2);
    // Children only, then delete-all.
    let s5 = snap(&mut d, "s5");
    d.delete(&s3, DeleteMode::ChildrenOnly, &mut NoProgress)
        .unwrap();
    assert!(d.tree().unwrap().get(&s5).is_none());
    d.check_agreement().unwrap();
    d.delete_all(&mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert_eq!(vm.tags(), vec![Vec::<String>::new(); 2]);
    assert_eq!(vm.snaptree_files(), before_files, "no snaptree file left");
    assert_eq!(vm.status(), PowerState::Running);
    vm.assert_reads(0x33, 2 * CHUNK, "live state after delete-all");
}

/// The live counterpart of `foreign.rs`'s test of the same name: after a lost store, a
/// create reusing the uuid of an internal snapshot the live state does not derive from is
/// refused before QEMU saves anything, and that snapshot's data stays.
#[test]
fn a_live_create_reusing_the_uuid_of_data_a_lost_store_left_is_refused() {
    let Some(mut vm) = LiveVm::start(&["internal", "internal"]) else {
        return;
    };
    vm.write(0x11, 0);
    let old = snap(&mut vm.domain(), "old");
    // The store is lost: a new, empty domain over the same disks.
    let mut d = vm.domain();
    vm.write(0x22, CHUNK);
    snap(&mut d, "fresh");
    let tags = vm.tags();
    snaptree_tests::assert_reused_uuid_refused(&mut d, old, "live");
    assert_eq!(vm.tags(), tags, "expected every disk's tags unchanged");
    assert_eq!(vm.status(), PowerState::Running);
    vm.assert_reads(0x22, CHUNK, "the live state");
}

#[test]
fn an_external_disk_while_running_is_refused_and_nothing_changes() {
    let Some(mut vm) = LiveVm::start(&["internal", "external"]) else {
        return;
    };
    let mut d = vm.domain();
    vm.write(0x11, 0);
    let files = vm.snaptree_files();
    let e = d
        .create_snapshot("<domainsnapshot><name>s</name></domainsnapshot>")
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    let msg = e.full_message();
    assert!(
        msg.contains("'qemu'") && msg.contains("shut off") && msg.contains("running"),
        "{msg}"
    );
    assert_eq!(vm.snaptree_files(), files);
    assert_eq!(vm.tags(), vec![Vec::<String>::new(); 2]);
    assert!(d.tree().unwrap().is_empty());
    assert_eq!(vm.status(), PowerState::Running);
    vm.assert_reads(0x11, 0, "unchanged");
}

#[test]
fn qemu_killed_mid_job_is_incomplete_and_the_journal_finishes_after_a_restart() {
    let Some(mut vm) = LiveVm::start(&["internal", "internal"]) else {
        return;
    };
    let mut d = vm.domain();
    vm.write(0x11, 0);
    let s1 = snap(&mut d, "s1");
    vm.write(0x22, CHUNK);
    let s2 = snap(&mut d, "s2");

    // QEMU dies while one of delete-all's snapshot-delete jobs exists (a watcher on the
    // rig's own QMP socket kills it as soon as it sees one): the step after detach_live.
    let (killed, e) = kill_qemu_during(
        &mut vm.rig,
        |j| j.id.starts_with("snaptree-delete"),
        || d.delete_all(&mut NoProgress),
    );
    let e = e.unwrap_err();
    assert!(killed);
    assert_eq!(e.code(), ErrorCode::Incomplete, "{e}");
    assert!(e.full_message().contains("died"), "{e}");
    // Nothing listens: the domain is shut off now.
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);

    // A new QEMU on the same disks: the next operation first finishes delete-all.
    vm.restart();
    assert_eq!(d.power_state().unwrap(), PowerState::Running);
    vm.write(0x33, 2 * CHUNK);
    let s3 = snap(&mut d, "s3");
    assert_eq!(d.recoveries().len(), 1);
    {
        let tree = d.tree().unwrap();
        assert!(tree.get(&s1).is_none() && tree.get(&s2).is_none());
        assert_eq!(tree.len(), 1);
    }
    d.check_agreement().unwrap();
    for tags in vm.tags() {
        assert_eq!(tags, vec![s3.to_string()]);
    }
    vm.write(0x44, 2 * CHUNK);
    d.revert(&s3, None, &mut NoProgress).unwrap();
    vm.assert_reads(0x11, 0, "s3");
    vm.assert_reads(0x22, CHUNK, "s3");
    vm.assert_reads(0x33, 2 * CHUNK, "s3");
    // The images are sound (leaked clusters of the killed job are not errors).
    for disk in &vm.disks {
        let out = Command::new("qemu-img")
            .args(["check", "-U"])
            .arg(disk)
            .output()
            .unwrap();
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(3),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The one refusal docs/qemu-live.md and ARCHITECTURE.md document beyond the declared
/// capabilities: a merge of S into P while the running disk derives from P but not from S
/// (the running image would have to move onto S's branch). Predicted here from the
/// physical tree before the step, independently of the backend's own check.
fn documented_live_refusal(step: &Step, before: &PhysicalTree) -> bool {
    let Step::MergeIntoParent {
        snapshot,
        parent: Some(parent),
    } = step
    else {
        return false;
    };
    let mut chain = Vec::new();
    let mut at = before.live_parent;
    while let Some(u) = at {
        if chain.contains(&u) {
            break;
        }
        chain.push(u);
        at = before.parents.get(&u).copied().flatten();
    }
    chain.contains(parent) && !chain.contains(snapshot)
}

/// The conformance kit's model starts every domain shut off, and records that state in
/// every snapshot taken before a revert changes it. This adapter lets the kit drive a VM
/// that runs from the start: while the model believes "shut off", the VM runs, so the
/// adapter reports it as shut off, and a revert to "shut off" (a snapshot taken then)
/// resumes it running. The capabilities are the backend's own, unchanged.
///
/// Every step is first run live. A step refused live with `OPERATION_INVALID` is accepted
/// only when the backend's declared capabilities predict that refusal in the VM's real
/// power state, or it is the one documented limitation (`documented_live_refusal`); then, with `restart`, it is run the way a user would: QEMU is shut down,
/// the step runs offline and QEMU is started again in the state wanted (paused if asked).
/// A refusal the declaration does not predict is returned as is, and the kit fails: a
/// live path that refuses wrongly, or a wrong declaration, cannot hide here.
struct ModelAlias {
    inner: Box<dyn Backend>,
    alias: bool,
    restart: Option<std::sync::Arc<Mutex<LiveVm>>>,
}

impl ModelAlias {
    /// Runs `step` offline on a QEMU shut down for it, then starts QEMU again.
    fn offline(
        &mut self,
        step: &Step,
        paused: bool,
        progress: &mut dyn Progress,
    ) -> Option<Result<()>> {
        let vm = self.restart.as_ref()?;
        let mut vm = vm.lock().unwrap();
        vm.rig.kill();
        let done = self.inner.execute(step, progress);
        vm.rig = start_rig(vm.dir.path(), &vm.disks);
        if paused {
            vm.rig.qmp().stop().unwrap();
        }
        Some(done)
    }
}

impl Backend for ModelAlias {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn power_state(&mut self) -> Result<PowerState> {
        Ok(match self.inner.power_state()? {
            PowerState::Running if self.alias => PowerState::Shutoff,
            s => s,
        })
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        let (real, after) = match step {
            Step::Revert { snapshot, state } => {
                let want = match state {
                    PowerState::Shutoff => PowerState::Running,
                    s => *s,
                };
                (
                    Step::Revert {
                        snapshot: *snapshot,
                        state: want,
                    },
                    want,
                )
            }
            other => (other.clone(), self.inner.power_state()?),
        };
        let live = self.inner.power_state()?;
        let before = self.inner.list_physical()?;
        let done = match self.inner.execute(&real, progress) {
            Err(e) if e.code() == ErrorCode::OperationInvalid => {
                let declared = self.inner.capabilities();
                if declared.allows(real.kind(), live) && !documented_live_refusal(&real, &before) {
                    return Err(Error::OperationInvalid(format!(
                        "refused live although backend '{}' declares that it can {} while {live}: {}",
                        self.inner.name(),
                        real.kind().verb(),
                        e.full_message()
                    )));
                }
                // Predicted: run it offline. A revert offline leaves the domain shut off;
                // QEMU started again then runs (or is paused) as the revert wanted.
                let offline_step = match &real {
                    Step::Revert { snapshot, .. } => Step::Revert {
                        snapshot: *snapshot,
                        state: PowerState::Shutoff,
                    },
                    other => other.clone(),
                };
                match self.offline(&offline_step, after == PowerState::Paused, progress) {
                    Some(done) => done,
                    None => Err(e),
                }
            }
            done => done,
        };
        if done.is_ok()
            && let Step::Revert { state, .. } = step
        {
            self.alias = *state == PowerState::Shutoff;
        }
        done
    }

    fn list_physical(&mut self) -> Result<PhysicalTree> {
        self.inner.list_physical()
    }

    fn test_hooks(&mut self) -> Option<&mut dyn TestHooks> {
        self.inner.test_hooks()
    }
}

#[test]
fn live_mode_conforms() {
    let Some(vm) = LiveVm::start(&["internal", "internal"]) else {
        return;
    };
    let vm = Mutex::new(vm);
    let factory = || -> std::result::Result<Subject, String> {
        let mut vm = vm.lock().unwrap();
        // A fresh domain on the same running QEMU: no snapshot, no record, running.
        for i in 0..vm.disks.len() {
            let meta = PathBuf::from(format!("{}.snaptree.json", vm.disks[i].display()));
            let _ = std::fs::remove_file(meta);
        }
        let qmp = vm.rig.qmp();
        let devices = qmp.query_block().map_err(|e| e.to_string())?;
        for (n, dev) in devices.iter().enumerate() {
            let Some(ins) = &dev.inserted else { continue };
            for s in &ins.image.snapshots {
                let id = format!("reset-{n}-{}", s.name);
                let nodes = [ins.node_name.as_str()];
                qmp.snapshot_delete(
                    &snaptree_qmp::InternalSnapshotSpec {
                        job_id: &id,
                        tag: &s.name,
                        vmstate: &ins.node_name,
                        devices: &nodes,
                    },
                    &mut |_| true,
                    WAIT,
                )
                .map_err(|e| e.to_string())?;
            }
        }
        if !qmp.query_status().map_err(|e| e.to_string())?.running {
            qmp.cont().map_err(|e| e.to_string())?;
        }
        let backend = QemuBackend::open_xml(&vm.xml).map_err(|e| e.full_message())?;
        Ok(Subject {
            domain_xml: vm.xml.clone(),
            backend: Box::new(ModelAlias {
                inner: Box::new(backend),
                alias: true,
                restart: None,
            }),
        })
    };
    let mut config = Config::from_env_or_ci(10, 30);
    config.max_steps = 12;
    config.max_shrink_iters = 100;
    // The kit's adapter offers no `adopt` (live adoption has its own tests,
    // `live_adopt.rs`): a lost store's data stays beside the new tree, and creates reuse
    // its uuids.
    config.reach.adopts = false;
    config.tuning = Tuning {
        revert_flags: vec![0, flags::REVERT_RUNNING, flags::REVERT_PAUSED],
        delete_flags: vec![
            0,
            flags::DELETE_DISCARD,
            flags::DELETE_DISCARD_FORCE,
            flags::DELETE_CONSOLIDATE,
            flags::DELETE_CHILDREN_ONLY,
            flags::DELETE_MERGE,
            flags::DELETE_MERGE_FORCE,
        ],
    };
    let started = Instant::now();
    match run(&config, &factory) {
        Ok(report) => eprintln!(
            "qemu live conformance: {} sequences, {} steps, {:.1?}",
            report.cases,
            report.steps,
            started.elapsed()
        ),
        Err(failure) => panic!("{failure}"),
    }
    let modes = vm.lock().unwrap().modes.clone();
    assert_eq!(modes, ["internal", "internal"]);
}

/// A consolidate by active commit (pivot) interrupted before each of its changes in
/// turn, then run again by a new process, first with QEMU running on, then with QEMU
/// killed and started again from the disk paths (whose backing nodes then have no names of
/// their own, so the re-run streams instead): the layer is gone, every write is in the
/// live state, the guest runs and no record or stale file is left.
#[test]
fn an_external_live_pivot_survives_a_crash_before_every_change() {
    let Some(mut vm) = LiveVm::start(&["external", "external"]) else {
        return;
    };
    let files = vm.snaptree_files();
    let mut round = 0u128;
    for restart_qemu in [false, true] {
        for k in 0.. {
            round += 1;
            let n = Uuid::from_u128(0x9140_0000 + round);
            let create = Step::Create {
                snapshot: n,
                parent: None,
                name: format!("n{round}"),
                description: String::new(),
            };
            let pattern = 0x30 + round as u8;
            vm.write(pattern, 0);
            QemuBackend::open_xml(&vm.xml)
                .unwrap()
                .execute(&create, &mut NoProgress)
                .unwrap();
            vm.write(pattern, CHUNK);
            let step = Step::Consolidate { snapshot: n };
            let mut b = QemuBackend::open_xml(&vm.xml).unwrap();
            b.handle()
                .set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
            b.handle().simulate_crash_after(k);
            let result = b.execute(&step, &mut NoProgress);
            let crashed = b.handle().crashes() > 0;
            drop(b);
            if !crashed {
                result.unwrap();
                assert!(k >= 5, "a two-disk pivot makes at least 5 changes: {k}");
                break;
            }
            let what = format!("crash before change {k} (QEMU restarted: {restart_qemu})");
            if restart_qemu {
                vm.restart();
            }
            let mut again = QemuBackend::open_xml(&vm.xml).unwrap();
            again
                .handle()
                .set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
            again
                .execute(&step, &mut NoProgress)
                .unwrap_or_else(|e| panic!("re-run after a {what}: {e}"));
            let tree = again.list_physical().unwrap();
            assert!(
                tree.parents.is_empty() && tree.live_parent.is_none(),
                "{what}: {tree:?}"
            );
            assert_eq!(vm.status(), PowerState::Running, "{what}");
            vm.write(pattern, 2 * CHUNK);
            for i in 0..3 {
                vm.assert_reads(pattern, i * CHUNK, &what);
            }
            let pid = vm.rig.pid();
            assert!(
                rig::stale_images(pid).is_empty(),
                "{what}: {:?}",
                rig::stale_images(pid)
            );
            assert_eq!(vm.snaptree_files(), files, "{what}: no record left");
        }
    }
}

/// A pivot that fails after the commit job ran (S's layer already took data, no backing
/// link changed yet): the engine keeps its journal entry instead of forgetting the step,
/// because the record in the snapshot directory keeps the physical tree from reading as
/// unchanged; the next operation finishes the consolidate first.
#[test]
fn a_failed_live_commit_is_finished_not_forgotten() {
    let Some(mut vm) = LiveVm::start(&["external", "external"]) else {
        return;
    };
    let backend = QemuBackend::open_xml(&vm.xml).unwrap();
    let handle = backend.handle();
    let mut d = Domain::ephemeral(&vm.xml, Box::new(backend)).unwrap();
    vm.write(0x11, 0);
    let a = snap(&mut d, "a");
    vm.write(0x22, CHUNK);
    handle.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    // Changes of the pivot on the first disk: the record (written, renamed), the commit
    // job, then the pause: fail right there, after the job ran.
    handle.simulate_crash_after(3);
    let e = d
        .delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap_err();
    assert_eq!(handle.crashes(), 1, "{e}");
    vm.write(0x33, 2 * CHUNK);
    let b = snap(&mut d, "b");
    assert_eq!(
        d.recoveries().len(),
        1,
        "the consolidate was finished first"
    );
    assert!(d.tree().unwrap().get(&a).is_none());
    d.check_agreement().unwrap();
    assert!(!layer(&vm.disks[0], &a).exists());
    assert_layer_reads(&vm, &b, 0x33, 2 * CHUNK, "b");
    for (p, i) in [(0x11, 0), (0x22, 1), (0x33, 2)] {
        vm.assert_reads(p, i * CHUNK, "live");
    }
    assert_eq!(vm.status(), PowerState::Running);
}

/// QEMU killed in the middle of a live `block-stream` (delete-all's first step, throttled so
/// the watcher sees the job): a `BACKEND` error naming QEMU's death, and since a half-done
/// stream changes no content and no backing link, the operation changed nothing; with a new
/// QEMU on the same disks, the tree and every byte are as before and delete-all works.
#[test]
fn qemu_killed_mid_stream_is_a_backend_error_and_changes_nothing() {
    let Some(mut vm) = LiveVm::start(&["external", "external"]) else {
        return;
    };
    let backend = QemuBackend::open_xml(&vm.xml).unwrap();
    let handle = backend.handle();
    let mut d = Domain::ephemeral(&vm.xml, Box::new(backend)).unwrap();
    for i in 0..32 {
        vm.write(0x40 + i as u8, i * CHUNK);
    }
    let a = snap(&mut d, "a");
    vm.write(0x99, 40 * CHUNK);
    handle.set_block_job_speed(Some(256 * 1024));
    let (killed, e) = kill_qemu_during(
        &mut vm.rig,
        |j| j.id.starts_with("snaptree-stream"),
        || d.delete_all(&mut NoProgress),
    );
    assert!(killed, "the watcher saw the stream job");
    let e = e.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Backend, "{e}");
    assert!(e.full_message().contains("died"), "{}", e.full_message());
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);

    handle.set_block_job_speed(None);
    vm.restart();
    let pid = vm.rig.pid();
    assert!(d.recoveries().is_empty(), "nothing to finish");
    assert!(d.tree().unwrap().get(&a).is_some(), "a is still there");
    d.check_agreement().unwrap();
    for i in 0..32 {
        vm.assert_reads(0x40 + i as u8, i * CHUNK, "live after the kill");
        assert_layer_reads(&vm, &a, 0x40 + i as u8, i * CHUNK, "a after the kill");
    }
    vm.assert_reads(0x99, 40 * CHUNK, "live after the kill");
    vm.write(0xaa, 41 * CHUNK);
    d.delete_all(&mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert!(!layer(&vm.disks[0], &a).exists());
    for i in 0..32 {
        vm.assert_reads(0x40 + i as u8, i * CHUNK, "live after delete-all");
    }
    vm.assert_reads(0xaa, 41 * CHUNK, "live after delete-all");
    assert!(
        rig::stale_images(pid).is_empty(),
        "{:?}",
        rig::stale_images(pid)
    );
    for disk in &vm.disks {
        let out = Command::new("qemu-img")
            .args(["check", "-U"])
            .arg(disk)
            .output()
            .unwrap();
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(3),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// QEMU killed in the middle of a live merge's `block-commit` (throttled so the watcher sees
/// the job): a `BACKEND` error, and since P's layer already took part of S's data, the
/// engine keeps its journal entry; with a new QEMU on the same disks, the next operation
/// finishes the merge first, and P then holds S's content.
#[test]
fn qemu_killed_mid_commit_is_finished_by_the_next_operation() {
    let Some(mut vm) = LiveVm::start(&["external", "external"]) else {
        return;
    };
    let backend = QemuBackend::open_xml(&vm.xml).unwrap();
    let handle = backend.handle();
    let mut d = Domain::ephemeral(&vm.xml, Box::new(backend)).unwrap();
    vm.write(0x11, 0);
    let p = snap(&mut d, "p");
    for i in 1..33 {
        vm.write(0x40 + i as u8, i * CHUNK);
    }
    let s = snap(&mut d, "s");
    vm.write(0x99, 40 * CHUNK);
    handle.set_block_job_speed(Some(256 * 1024));
    let (killed, e) = kill_qemu_during(
        &mut vm.rig,
        |j| j.id.starts_with("snaptree-commit") && j.current_progress > 0,
        || d.delete(&s, DeleteMode::Merge, &mut NoProgress),
    );
    assert!(killed, "the watcher saw the commit job");
    let e = e.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Incomplete, "{e}");
    assert!(e.full_message().contains("died"), "{}", e.full_message());

    handle.set_block_job_speed(None);
    vm.restart();
    vm.write(0xaa, 41 * CHUNK);
    let b = snap(&mut d, "b");
    assert_eq!(d.recoveries().len(), 1, "the merge was finished first");
    assert!(d.tree().unwrap().get(&s).is_none());
    d.check_agreement().unwrap();
    assert!(!layer(&vm.disks[0], &s).exists());
    assert_layer_reads(&vm, &p, 0x11, 0, "p after the merge");
    for i in 1..33 {
        assert_layer_reads(&vm, &p, 0x40 + i as u8, i * CHUNK, "p took s's data");
        vm.assert_reads(0x40 + i as u8, i * CHUNK, "live after the merge");
    }
    assert_layer_reads(&vm, &p, 0x00, 40 * CHUNK, "p has nothing written after s");
    vm.assert_reads(0x99, 40 * CHUNK, "live");
    assert_layer_reads(&vm, &b, 0xaa, 41 * CHUNK, "b");
    assert!(
        rig::stale_images(vm.rig.pid()).is_empty(),
        "{:?}",
        rig::stale_images(vm.rig.pid())
    );
}

/// The guest's disk keeps the VM manager's I/O options (cache mode, detect-zeroes with
/// discard) across live snapshots and a pivot: the new overlays and re-homed nodes repeat
/// them, since `blockdev-add` and `blockdev-reopen` reset whatever they are not given.
#[test]
fn live_external_snapshots_keep_the_disks_io_options() {
    let options = serde_json::json!({
        "detect-zeroes": "unmap",
        "discard": "unmap",
        "cache": { "no-flush": true },
    });
    let Some(mut vm) = LiveVm::start_with(&["external", "external"], options) else {
        return;
    };
    let backend = QemuBackend::open_xml(&vm.xml).unwrap();
    let handle = backend.handle();
    let mut d = Domain::ephemeral(&vm.xml, Box::new(backend)).unwrap();
    let active_options = |vm: &mut LiveVm| -> Vec<snaptree_qmp::IoOptions> {
        let qmp = vm.rig.qmp();
        let nodes: Vec<String> = qmp
            .query_block()
            .unwrap()
            .into_iter()
            .filter_map(|b| b.inserted.map(|i| i.node_name))
            .collect();
        nodes.iter().map(|n| qmp.io_options(n).unwrap()).collect()
    };
    let before = active_options(&mut vm);
    assert_eq!(before[0].detect_zeroes.as_deref(), Some("unmap"));
    assert!(before[0].cache.is_some_and(|c| c.no_flush), "{before:?}");
    vm.write(0x11, 0);
    let a = snap(&mut d, "a");
    assert_eq!(active_options(&mut vm), before, "after a live create");
    vm.write(0x22, CHUNK);
    handle.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    d.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    assert_eq!(active_options(&mut vm), before, "after a pivot");
    vm.assert_reads(0x22, CHUNK, "live");
}

/// `<driver discard='unmap'>` of the domain XML holds on the overlays a live create opens
/// and on the node a pivot re-homes (QEMU does not report `discard`, so snaptree repeats
/// the domain's own setting): a guest discard still frees the data afterwards.
#[test]
fn live_external_snapshots_keep_the_domains_discard_setting() {
    let options = serde_json::json!({ "discard": "unmap" });
    let Some(mut vm) = LiveVm::start_with(&["external"], options) else {
        return;
    };
    vm.xml = vm.xml.replace(
        "snapshot='external'>",
        "snapshot='external'><driver name='qemu' type='qcow2' discard='unmap'/>",
    );
    assert!(vm.xml.contains("discard='unmap'"), "{}", vm.xml);
    let backend = QemuBackend::open_xml(&vm.xml).unwrap();
    let handle = backend.handle();
    let mut d = Domain::ephemeral(&vm.xml, Box::new(backend)).unwrap();
    let qom = vm.rig.disks()[0].qom_path();
    let discard_reads_zeros = |vm: &mut LiveVm, slot: u64, what: &str| {
        vm.write(0x5a, slot * CHUNK);
        vm.rig
            .qmp()
            .qemu_io(&qom, &format!("discard {} {CHUNK}", slot * CHUNK))
            .unwrap();
        vm.assert_reads(0x00, slot * CHUNK, what);
    };
    discard_reads_zeros(&mut vm, 1, "before any snapshot");
    vm.write(0x11, 0);
    let a = snap(&mut d, "a");
    discard_reads_zeros(&mut vm, 2, "after a live create");
    handle.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    d.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    discard_reads_zeros(&mut vm, 3, "after a pivot");
    vm.assert_reads(0x11, 0, "live");
}

/// A merge that would move the running disk onto another branch is refused while the VM
/// runs, and nothing changes; the same merge with the domain shut off works.
#[test]
fn an_external_merge_across_the_running_branch_is_refused_live() {
    let Some(mut vm) = LiveVm::start(&["external", "external"]) else {
        return;
    };
    let mut d = vm.domain();
    vm.write(0x11, 0);
    let a = snap(&mut d, "a");
    vm.write(0x22, CHUNK);
    let b = snap(&mut d, "b");
    // Back on a's branch: shut down, revert offline, start again.
    vm.rig.kill();
    d.revert(&a, Some(PowerState::Shutoff), &mut NoProgress)
        .unwrap();
    vm.rig = start_rig(vm.dir.path(), &vm.disks);
    vm.write(0x33, 2 * CHUNK);
    let files = vm.snaptree_files();
    let e = d
        .delete(&b, DeleteMode::Merge, &mut NoProgress)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(
        e.full_message().contains("shut the domain down"),
        "{}",
        e.full_message()
    );
    assert_eq!(vm.snaptree_files(), files);
    d.check_agreement().unwrap();
    assert!(d.tree().unwrap().get(&b).is_some());
    vm.assert_reads(0x33, 2 * CHUNK, "unchanged");
    assert_layer_reads(&vm, &b, 0x22, CHUNK, "b unchanged");
}

/// A fresh running QEMU on two external disks, behind [`ModelAlias`] with restarts.
fn live_external_subject() -> std::result::Result<Subject, String> {
    live_external_subject_with(|b| b)
}

/// As [`live_external_subject`], the backend wrapped by `wrap` inside the adapter.
fn live_external_subject_with(
    wrap: impl FnOnce(Box<dyn Backend>) -> Box<dyn Backend>,
) -> std::result::Result<Subject, String> {
    let vm = LiveVm::start(&["external", "external"]).ok_or("no QEMU")?;
    let backend = QemuBackend::open_xml(&vm.xml).map_err(|e| e.full_message())?;
    let xml = vm.xml.clone();
    Ok(Subject {
        domain_xml: xml,
        backend: Box::new(ModelAlias {
            inner: wrap(Box::new(backend)),
            alias: true,
            restart: Some(std::sync::Arc::new(Mutex::new(vm))),
        }),
    })
}

/// A backend whose declaration is wrong: it claims every step in every power state.
struct ClaimsEverything(Box<dyn Backend>);

impl Backend for ClaimsEverything {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn power_state(&mut self) -> Result<PowerState> {
        self.0.power_state()
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        self.0.execute(step, progress)
    }

    fn list_physical(&mut self) -> Result<PhysicalTree> {
        self.0.list_physical()
    }

    fn test_hooks(&mut self) -> Option<&mut dyn TestHooks> {
        self.0.test_hooks()
    }
}

fn create(name: &str, n: u128) -> Transition {
    Transition::Create {
        name: name.into(),
        uuid: Uuid::from_u128(n),
    }
}

fn revert_to(name: &str, flags: u32) -> Transition {
    Transition::Revert {
        name: name.into(),
        flags,
    }
}

/// The kit's adapter retries offline only what the declared capabilities predict: an
/// external domain declaring that it can revert while running (it cannot) fails the kit
/// at the first revert, instead of being reverted offline behind the engine's back.
#[test]
fn the_live_kit_fails_a_refusal_the_declared_capabilities_do_not_predict() {
    if !qemu_present() {
        return;
    }
    let subject = live_external_subject_with(|b| Box::new(ClaimsEverything(b))).unwrap();
    let sequence = [create("a", 1), revert_to("a", flags::REVERT_RUNNING)];
    let failure = run_sequence(subject, &sequence, None)
        .expect_err("the live revert is refused, unpredicted by the declaration");
    assert!(
        failure.contains("step 2")
            && failure.contains("refused live although backend 'qemu' declares")
            && failure.contains("revert"),
        "{failure}"
    );
}

/// The conformance kit against live mode with external disks: every case on a fresh
/// running QEMU; the kit's reverts shut it down and start it again (see [`ModelAlias`]).
#[test]
fn live_external_mode_conforms() {
    if !qemu_present() {
        return;
    }
    let mut config = Config::from_env_or_ci(8, 30);
    config.max_steps = 12;
    config.max_shrink_iters = 100;
    // The kit's adapter offers no `adopt` (live adoption has its own tests,
    // `live_adopt.rs`): a lost store's data stays beside the new tree, and creates reuse
    // its uuids.
    config.reach.adopts = false;
    let started = Instant::now();
    match run(&config, &live_external_subject) {
        Ok(report) => eprintln!(
            "qemu live external conformance: {} sequences, {} steps, {:.1?}",
            report.cases,
            report.steps,
            started.elapsed()
        ),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn qemu_killed_mid_create_leaves_nothing_once_settled() {
    // QEMU dies while the snapshot-save job of the second create exists. The watcher
    // kills as soon as it sees the job, but the job can end before the kill lands (seen
    // once in CI): then the create has finished and there is nothing to test, so the
    // scenario starts again on a fresh VM.
    const ATTEMPTS: usize = 5;
    let mut attempt = 0;
    let (mut vm, mut d, s1, e) = loop {
        attempt += 1;
        let Some(mut vm) = LiveVm::start(&["internal", "internal"]) else {
            return;
        };
        let mut d = vm.domain();
        vm.write(0x11, 0);
        let s1 = snap(&mut d, "s1");
        vm.write(0x22, CHUNK);
        let (killed, created) = kill_qemu_during(
            &mut vm.rig,
            |j| j.id.starts_with("snaptree-save"),
            || d.create_snapshot("<domainsnapshot><name>s2</name></domainsnapshot>"),
        );
        assert!(
            killed,
            "expected the watcher to see the save job and kill QEMU"
        );
        match created {
            Err(e) => break (vm, d, s1, e),
            Ok(_) if attempt < ATTEMPTS => {
                eprintln!("attempt {attempt}: the save job ended before the kill; again");
            }
            Ok(u) => panic!(
                "in {ATTEMPTS} attempts the kill never landed while the save job ran (the last create made {u})"
            ),
        }
    };
    assert_eq!(e.code(), ErrorCode::Backend, "{e}");
    assert!(e.full_message().contains("died"), "{e}");
    assert_eq!(d.tree().unwrap().len(), 1);

    // Shut off now: the leftover of the killed save is removed offline, and the tree
    // the disks hold agrees with the engine's.
    assert_eq!(d.power_state().unwrap(), PowerState::Shutoff);
    d.check_agreement().unwrap();
    for tags in vm.tags() {
        assert_eq!(tags, vec![s1.to_string()]);
    }
    assert!(
        !vm.snaptree_files()
            .iter()
            .any(|f| f.contains("live-create")),
        "{:?}",
        vm.snaptree_files()
    );

    // A new QEMU: live snapshots go on.
    vm.restart();
    vm.write(0x33, 2 * CHUNK);
    let s3 = snap(&mut d, "s3");
    d.check_agreement().unwrap();
    assert_eq!(d.tree().unwrap().parent(&s3).map(|p| p.uuid), Some(s1));
    vm.write(0x44, 0);
    d.revert(&s1, None, &mut NoProgress).unwrap();
    vm.assert_reads(0x11, 0, "s1");
    vm.assert_reads(0, 2 * CHUNK, "s1");
    d.revert(&s3, None, &mut NoProgress).unwrap();
    vm.assert_reads(0x33, 2 * CHUNK, "s3");
}

#[test]
fn a_live_merge_moves_disks_and_memory_into_the_parent_and_keeps_the_live_state() {
    let Some(mut vm) = LiveVm::start(&["internal", "internal"]) else {
        return;
    };
    let mut d = vm.domain();
    vm.write(0x11, 0);
    let s1 = snap(&mut d, "s1");
    vm.write(0x22, CHUNK);
    let (s2, b2, a2) = snap_timed(&mut vm, &mut d, "s2");
    let s3 = snap(&mut d, "s3");
    vm.write(0x33, 2 * CHUNK);
    vm.rig
        .wait_counter(a2 + TICKS_PER_SECOND / 2, WAIT)
        .unwrap();

    // Paused first: the merge keeps the run state, whatever it is.
    vm.rig.qmp().stop().unwrap();
    let paused_at = vm.counter();
    let mut reports = Vec::new();
    let mut progress = |f: f64| {
        reports.push(f);
        true
    };
    d.delete(&s2, DeleteMode::Merge, &mut progress).unwrap();
    assert_eq!(reports.last(), Some(&1.0), "{reports:?}");
    assert!(reports.windows(2).all(|w| w[0] <= w[1]), "{reports:?}");
    assert_eq!(vm.status(), PowerState::Paused);
    assert_eq!(vm.counter(), paused_at, "the live memory is back");
    vm.assert_reads(0x33, 2 * CHUNK, "live after the merge");
    vm.rig.qmp().cont().unwrap();
    {
        let tree = d.tree().unwrap();
        assert!(tree.get(&s2).is_none());
        assert_eq!(tree.parent(&s3).map(|p| p.uuid), Some(s1));
    }
    d.check_agreement().unwrap();
    for tags in vm.tags() {
        assert_eq!(tags.len(), 2, "{tags:?}");
    }

    // Running: merge s3 (same content as s2) into s1.
    d.delete(&s3, DeleteMode::Merge, &mut NoProgress).unwrap();
    assert_eq!(vm.status(), PowerState::Running);
    assert!(vm.counter() >= paused_at);
    d.check_agreement().unwrap();

    // s1 now holds s2's disks and memory.
    revert_and_check_memory(&mut vm, &mut d, s1, (b2, a2), None);
    vm.assert_reads(0x11, 0, "s1 after the merges");
    vm.assert_reads(0x22, CHUNK, "s1 after the merges");
    vm.assert_reads(0, 2 * CHUNK, "s1 after the merges");
    for tags in vm.tags() {
        assert_eq!(tags, vec![s1.to_string()]);
    }
    assert!(
        !vm.snaptree_files().iter().any(|f| f.contains("live-merge")),
        "{:?}",
        vm.snaptree_files()
    );
}

#[test]
fn qemu_killed_mid_merge_is_finished_by_the_next_operation() {
    let Some(mut vm) = LiveVm::start(&["internal", "internal"]) else {
        return;
    };
    let mut d = vm.domain();
    vm.write(0x11, 0);
    let s1 = snap(&mut d, "s1");
    vm.write(0x22, CHUNK);
    let s2 = snap(&mut d, "s2");
    vm.write(0x33, 2 * CHUNK);

    // QEMU dies once the merge has borrowed the live state (its first snapshot-load).
    let (killed, e) = kill_qemu_during(
        &mut vm.rig,
        |j| j.id.starts_with("snaptree-load"),
        || d.delete(&s2, DeleteMode::Merge, &mut NoProgress),
    );
    assert!(killed);
    let e = e.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Incomplete, "{e}");
    assert!(e.full_message().contains("died"), "{e}");

    // A new QEMU: the next operation first finishes the merge (the engine kept its
    // journal entry: the interrupted merge left the physical tree changed), then runs.
    vm.restart();
    let s3 = snap(&mut d, "s3");
    assert_eq!(d.recoveries().len(), 1);
    {
        let tree = d.tree().unwrap();
        assert!(tree.get(&s2).is_none());
        assert_eq!(tree.parent(&s3).map(|p| p.uuid), Some(s1));
    }
    d.check_agreement().unwrap();
    assert_eq!(vm.status(), PowerState::Running);
    // The live state at the time of the merge came back from the stash, and s3 holds it.
    vm.assert_reads(0x33, 2 * CHUNK, "live after the finished merge");
    for tags in vm.tags() {
        assert_eq!(tags.len(), 2, "{tags:?}");
        assert!(tags.contains(&s1.to_string()) && tags.contains(&s3.to_string()));
    }
    vm.write(0x44, 0);
    d.revert(&s1, None, &mut NoProgress).unwrap();
    vm.assert_reads(0x11, 0, "s1 holds s2");
    vm.assert_reads(0x22, CHUNK, "s1 holds s2");
    vm.assert_reads(0, 2 * CHUNK, "s1 holds s2");
    assert!(
        !vm.snaptree_files().iter().any(|f| f.contains("live-")),
        "{:?}",
        vm.snaptree_files()
    );
}

/// `target/<profile>/libsnaptree_backend_qemu.so`, beside the test binary's `deps`.
fn plugin() -> snaptree_host::Plugin {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let file = dir.join("libsnaptree_backend_qemu.so");
    assert!(file.is_file(), "expected the plugin at {}", file.display());
    let mut host = snaptree_host::PluginHost::isolated();
    host.add_path(&file).unwrap();
    host.plugin("qemu").unwrap()
}

#[test]
fn the_plugin_runs_live_mode_through_the_c_abi() {
    let Some(mut vm) = LiveVm::start(&["internal"]) else {
        return;
    };
    let p = plugin();
    let backend = p.open_domain(&vm.xml).unwrap();
    assert!(
        backend
            .capabilities()
            .allows(StepKind::Create, PowerState::Running)
    );
    let mut d = Domain::ephemeral(&vm.xml, Box::new(backend)).unwrap();
    assert_eq!(d.power_state().unwrap(), PowerState::Running);
    vm.write(0x11, 0);
    let (s, b, a) = snap_timed(&mut vm, &mut d, "s");
    assert_eq!(
        d.tree().unwrap().get(&s).unwrap().state,
        PowerState::Running
    );
    vm.write(0x22, 0);
    revert_and_check_memory(&mut vm, &mut d, s, (b, a), Some(PowerState::Paused));
    assert_eq!(vm.status(), PowerState::Paused);
    vm.assert_reads(0x11, 0, "s through the plugin");
    d.check_agreement().unwrap();
    d.delete(&s, DeleteMode::Discard, &mut NoProgress).unwrap();
    assert_eq!(vm.tags(), vec![Vec::<String>::new()]);
}

/// Through the plugin's C ABI, an all-external domain declares live disk-only snapshots:
/// create and delete while running, revert only shut off (refused by the engine, naming the
/// backend, before anything runs).
#[test]
fn the_plugin_declares_and_runs_external_live_mode_through_the_c_abi() {
    let Some(mut vm) = LiveVm::start(&["external"]) else {
        return;
    };
    let p = plugin();
    let backend = p.open_domain(&vm.xml).unwrap();
    let caps = backend.capabilities();
    assert!(caps.allows(StepKind::Create, PowerState::Running));
    assert!(caps.allows(StepKind::Consolidate, PowerState::Paused));
    assert!(!caps.allows(StepKind::Revert, PowerState::Running));
    assert!(caps.allows(StepKind::Revert, PowerState::Shutoff));
    let mut d = Domain::ephemeral(&vm.xml, Box::new(backend)).unwrap();
    vm.write(0x11, 0);
    let s = snap(&mut d, "s");
    vm.write(0x22, 0);
    assert_layer_reads(&vm, &s, 0x11, 0, "s through the plugin");
    let e = d.revert(&s, None, &mut NoProgress).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    d.delete(&s, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    d.check_agreement().unwrap();
    vm.assert_reads(0x22, 0, "live through the plugin");
    assert_eq!(vm.status(), PowerState::Running);
}

// ---- external (disk-only) live mode ----

/// The layer file of snapshot `u` of disk `disk`.
fn layer(disk: &Path, u: &Uuid) -> PathBuf {
    PathBuf::from(format!("{}.snapshots/{u}.qcow2", disk.display()))
}

/// The image (a layer, read while QEMU may hold it) reads `pattern` over the chunk at
/// `offset` on every disk.
fn assert_layer_reads(vm: &LiveVm, u: &Uuid, pattern: u8, offset: u64, what: &str) {
    for d in &vm.disks {
        let l = layer(d, u);
        assert!(
            rig::verify_pattern(&l, pattern, offset, CHUNK).unwrap(),
            "{what}: {} should read {pattern:#x} at {offset}",
            l.display()
        );
    }
}

#[test]
fn a_tree_of_external_live_snapshots_keeps_every_layer_while_the_guest_runs() {
    let Some(mut vm) = LiveVm::start(&["external", "external"]) else {
        return;
    };
    let pid = vm.rig.pid();
    let backend = QemuBackend::open_xml(&vm.xml).unwrap();
    let handle = backend.handle();
    let mut d = Domain::ephemeral(&vm.xml, Box::new(backend)).unwrap();
    let files = vm.snaptree_files();
    vm.write(0x11, 0);
    let a = snap(&mut d, "a");
    vm.write(0x22, CHUNK);
    let before = vm.counter();
    let b = snap(&mut d, "b");
    vm.write(0x33, 2 * CHUNK);
    let c = snap(&mut d, "c");
    vm.write(0x44, 3 * CHUNK);
    assert_eq!(vm.status(), PowerState::Running);
    assert!(vm.counter() >= before, "the guest kept running");
    assert!(
        rig::stale_images(pid).is_empty(),
        "{:?}",
        rig::stale_images(pid)
    );
    d.check_agreement().unwrap();
    assert_layer_reads(&vm, &a, 0x11, 0, "a");
    assert_layer_reads(&vm, &a, 0x00, CHUNK, "a");
    assert_layer_reads(&vm, &b, 0x22, CHUNK, "b");
    assert_layer_reads(&vm, &b, 0x00, 2 * CHUNK, "b");
    assert_layer_reads(&vm, &c, 0x33, 2 * CHUNK, "c");
    assert_layer_reads(&vm, &c, 0x00, 3 * CHUNK, "c");
    vm.assert_reads(0x44, 3 * CHUNK, "live");

    // A revert while running is refused (no memory in a disk-only snapshot).
    let e = d.revert(&a, None, &mut NoProgress).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(e.full_message().contains("'qemu'"), "{}", e.full_message());
    vm.assert_reads(0x44, 3 * CHUNK, "unchanged by the refused revert");

    // Merge c into b: an intermediate commit while the guest writes.
    let mut reports = Vec::new();
    d.delete(&c, DeleteMode::Merge, &mut |f: f64| {
        reports.push(f);
        true
    })
    .unwrap();
    assert_eq!(reports.last(), Some(&1.0), "{reports:?}");
    d.check_agreement().unwrap();
    assert_layer_reads(&vm, &b, 0x33, 2 * CHUNK, "b after the merge");
    assert_layer_reads(&vm, &b, 0x22, CHUNK, "b after the merge");
    assert!(!layer(&vm.disks[0], &c).exists(), "c's layer is gone");
    vm.write(0x55, 4 * CHUNK);

    // Consolidate b (in the chain): streamed into the live image.
    let mut reports = Vec::new();
    d.delete(&b, DeleteMode::Consolidate, &mut |f: f64| {
        reports.push(f);
        true
    })
    .unwrap();
    assert!(
        reports.len() > 1,
        "job progress reached the callback: {reports:?}"
    );
    d.check_agreement().unwrap();
    assert!(!layer(&vm.disks[0], &b).exists(), "b's layer is gone");
    for (p, i) in [(0x11, 0), (0x22, 1), (0x33, 2), (0x44, 3), (0x55, 4)] {
        vm.assert_reads(p, i * CHUNK, "live after consolidating b");
    }
    assert_layer_reads(&vm, &a, 0x00, CHUNK, "a untouched");

    // A branch QEMU does not hold is changed offline: d on a, then discard a's other
    // child e... built by an offline revert in the conformance test; here, a leaf in
    // the chain is discarded after a new snapshot.
    let e1 = snap(&mut d, "e1");
    vm.write(0x66, 5 * CHUNK);
    d.delete(&e1, DeleteMode::Merge, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert_layer_reads(&vm, &a, 0x55, 4 * CHUNK, "a took e1's data");
    vm.assert_reads(0x66, 5 * CHUNK, "live after merging e1");

    // Consolidate by active commit: the live image's data goes down into the layer, QEMU
    // pivots onto it and it takes the disk path.
    let f1 = snap(&mut d, "f1");
    vm.write(0x77, 6 * CHUNK);
    handle.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    d.delete(&f1, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    handle.set_consolidate_policy(ConsolidatePolicy::Cheapest);
    d.check_agreement().unwrap();
    assert!(!layer(&vm.disks[0], &f1).exists(), "f1's layer is gone");
    assert_eq!(
        vm.status(),
        PowerState::Running,
        "the guest runs again after the pivot"
    );
    assert!(
        rig::stale_images(pid).is_empty(),
        "{:?}",
        rig::stale_images(pid)
    );
    vm.write(0x78, 7 * CHUNK);
    for (p, i) in [(0x66, 5), (0x77, 6), (0x78, 7)] {
        vm.assert_reads(p, i * CHUNK, "live after the pivot");
    }
    assert_layer_reads(&vm, &a, 0x00, 6 * CHUNK, "a untouched by the pivot");

    // Delete-all: the live image is detached from every layer, while running.
    d.delete_all(&mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert_eq!(vm.snaptree_files(), files, "no snaptree file left");
    for (p, i) in [
        (0x11, 0),
        (0x22, 1),
        (0x33, 2),
        (0x44, 3),
        (0x55, 4),
        (0x66, 5),
    ] {
        vm.assert_reads(p, i * CHUNK, "live after delete-all");
    }
    assert_eq!(vm.status(), PowerState::Running);
    assert!(
        rig::stale_images(pid).is_empty(),
        "{:?}",
        rig::stale_images(pid)
    );
    assert_eq!(
        rig::open_images(pid).len(),
        2,
        "QEMU holds only the two disks"
    );
}

/// A live create interrupted before each of its changes in turn, then run again by a new
/// process, as the journal does; first with QEMU running on (the guest keeps writing),
/// then with QEMU killed and started again from the disk paths before the re-run (a VM
/// manager restarting it). Each time the snapshot ends up on both disks and from one point
/// in time (the same data on every disk), the guest's writes are all in the live state,
/// and QEMU holds no file under a stale name.
#[test]
fn an_external_live_create_survives_a_crash_before_every_change() {
    let Some(mut vm) = LiveVm::start(&["external", "external"]) else {
        return;
    };
    vm.write(0x11, 0);
    let mut parent = None;
    let mut round = 0u8;
    for restart_qemu in [false, true] {
        for k in 0.. {
            round += 1;
            let n = Uuid::from_u128(0x5eed_0000 + u128::from(round));
            let step = Step::Create {
                snapshot: n,
                parent,
                name: format!("n{round}"),
                description: String::new(),
            };
            let before = 0x20 + round;
            vm.write(before, CHUNK);
            let mut b = QemuBackend::open_xml(&vm.xml).unwrap();
            b.handle().simulate_crash_after(k);
            let result = b.execute(&step, &mut NoProgress);
            let crashed = b.handle().crashes() > 0;
            if !crashed {
                result.unwrap();
                assert!(
                    k >= 8,
                    "a live create of two disks makes at least 8 changes: {k}"
                );
                parent = Some(n);
                break;
            }
            assert!(result.is_err(), "a simulated crash fails the step");
            // The process is gone: so is its QMP session (QEMU serves one at a time).
            drop(b);
            let what = format!("crash before change {k} (QEMU restarted: {restart_qemu})");
            if restart_qemu {
                vm.restart();
            }
            let after = 0x80 + round;
            vm.write(after, 2 * CHUNK);
            let mut again = QemuBackend::open_xml(&vm.xml).unwrap();
            again
                .execute(&step, &mut NoProgress)
                .unwrap_or_else(|e| panic!("re-run after a {what}: {e}"));
            let tree = again.list_physical().unwrap();
            assert_eq!(tree.live_parent, Some(n), "{what}");
            assert_eq!(tree.parents.get(&n), Some(&parent), "{what}");
            vm.assert_reads(0x11, 0, &what);
            vm.assert_reads(before, CHUNK, &what);
            vm.assert_reads(after, 2 * CHUNK, &format!("{what}: the guest's writes"));
            assert_layer_reads(&vm, &n, before, CHUNK, &what);
            // One point in time: N holds the later write on every disk or on none.
            let later: Vec<bool> = vm
                .disks
                .iter()
                .map(|d| rig::verify_pattern(&layer(d, &n), after, 2 * CHUNK, CHUNK).unwrap())
                .collect();
            assert!(
                later.iter().all(|x| *x == later[0]),
                "{what}: N holds the write made after the crash on some disks only: {later:?}"
            );
            let pid = vm.rig.pid();
            assert!(
                rig::stale_images(pid).is_empty(),
                "{what}: {:?}",
                rig::stale_images(pid)
            );
            assert_eq!(vm.status(), PowerState::Running);
            parent = Some(n);
        }
    }
}

/// A consolidate of a snapshot off the running branch, whose one dependent is committed
/// into it offline while QEMU runs the other branch: the commit's unfinished-step marker
/// goes in that disk's snapshot directory (the live reshape gave the offline plans no live
/// image, and this panicked; found by `live_external_mode_conforms` once committing ties
/// became the cheaper choice).
#[test]
fn a_commit_off_the_running_branch_runs_while_the_vm_runs() {
    let Some(mut vm) = LiveVm::start(&["external", "external"]) else {
        return;
    };
    let mut d = vm.domain();
    let a = snap(&mut d, "a");
    let b = snap(&mut d, "b");
    snap(&mut d, "c");
    // Back on a's branch: b (with its one dependent c) is off the running chain.
    vm.rig.kill();
    d.revert(&a, Some(PowerState::Shutoff), &mut NoProgress)
        .unwrap();
    vm.rig = start_rig(vm.dir.path(), &vm.disks);
    vm.write(0x33, 2 * CHUNK);
    d.delete(&b, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    d.check_agreement().unwrap();
    assert!(d.tree().unwrap().get(&b).is_none(), "expected b gone");
    vm.assert_reads(0x33, 2 * CHUNK, "the running VM's data unchanged");
}
