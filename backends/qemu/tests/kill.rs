//! A process running an operation through the engine (durable SQLite store, intent journal)
//! is killed with SIGKILL — together with the qemu-img it is running — at spread-out moments
//! of a commit or a rebase of 160 MiB. Reopening the domain rolls the operation forward, and
//! no data is lost: the operation either never started or is complete, with every content as
//! the operation's contract says.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::MIB;
use snaptree_backend_qemu::{ConsolidatePolicy, QemuBackend, QemuProvider};
use snaptree_engine::conn::Connection;
use snaptree_engine::{ContentRef, DeleteMode, Domain, NoProgress, Uuid};
use snaptree_qemu_img as qi;

const CHILD_ENV: &str = "SNAPTREE_QEMU_KILL_CHILD";
const SIZE: u64 = 256 * MIB;

/// The operations killed, with the consolidate policy that makes them commit or rebase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A's only dependent B is committed down into A (160 MiB).
    ConsolidateByCommit,
    /// B's only dependent, the live overlay, is rebased onto A (160 MiB).
    ConsolidateByRebase,
    /// B is committed into A, the live overlay moved onto A.
    Merge,
    /// The live overlay is flattened, then every layer deleted.
    DeleteAll,
}

impl Op {
    const ALL: [Op; 4] = [
        Op::ConsolidateByCommit,
        Op::ConsolidateByRebase,
        Op::Merge,
        Op::DeleteAll,
    ];

    fn policy(self) -> ConsolidatePolicy {
        match self {
            Op::ConsolidateByRebase => ConsolidatePolicy::AlwaysRebase,
            _ => ConsolidatePolicy::AlwaysCommit,
        }
    }

    fn run(self, d: &mut Domain) {
        let by_name = |d: &mut Domain, n: &str| common::uuid(d, n);
        match self {
            Op::ConsolidateByCommit => {
                let a = by_name(d, "A");
                d.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
                    .unwrap();
            }
            Op::ConsolidateByRebase => {
                let b = by_name(d, "B");
                d.delete(&b, DeleteMode::Consolidate, &mut NoProgress)
                    .unwrap();
            }
            Op::Merge => {
                let b = by_name(d, "B");
                d.delete(&b, DeleteMode::Merge, &mut NoProgress).unwrap();
            }
            Op::DeleteAll => {
                d.delete_all(&mut NoProgress).unwrap();
            }
        }
    }
}

/// A durable domain with the tree A → B, live on B, two disks (external, internal).
struct Setup {
    root: tempfile::TempDir,
    uuids: BTreeMap<&'static str, Uuid>,
    /// Content digests before the operation: "A", "B", "live".
    before: BTreeMap<&'static str, String>,
}

impl Setup {
    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
    fn vm(&self) -> PathBuf {
        self.root.path().join("vm")
    }
    fn disks(&self) -> Vec<PathBuf> {
        vec![self.vm().join("d0.qcow2"), self.vm().join("d1.qcow2")]
    }
}

fn open(state: &Path, policy: ConsolidatePolicy) -> Domain {
    let conn = Connection::open(Some(state)).unwrap();
    conn.register_provider("qemu", Arc::new(QemuProvider));
    let xml = conn.domain_xml("vm").unwrap();
    let backend = QemuBackend::open(&xml).unwrap();
    backend.handle().set_consolidate_policy(policy);
    conn.open_domain_with_backend("vm", Box::new(backend))
        .unwrap()
}

fn setup() -> Setup {
    let root = tempfile::tempdir().unwrap();
    let s = Setup {
        root,
        uuids: BTreeMap::new(),
        before: BTreeMap::new(),
    };
    std::fs::create_dir(s.vm()).unwrap();
    let disks = s.disks();
    for d in &disks {
        qi::create(d, SIZE).unwrap();
    }
    let xml = common::domain_xml(&disks, &["external", "internal"]);
    let conn = Connection::open(Some(&s.state())).unwrap();
    conn.register_provider("qemu", Arc::new(QemuProvider));
    conn.define_domain(&xml).unwrap();
    drop(conn);
    let mut d = open(&s.state(), ConsolidatePolicy::Cheapest);
    let write = |pattern: u8, offset: u64, len: u64| {
        qi::io_write_pattern(&disks[0], pattern, offset, len).unwrap();
        qi::io_write_pattern(&disks[1], pattern, offset, MIB).unwrap();
    };
    write(0x11, 0, 160 * MIB);
    let a = common::snap(&mut d, "A");
    write(0x22, 64 * MIB, 160 * MIB);
    let b = common::snap(&mut d, "B");
    write(0x33, 200 * MIB, 32 * MIB);
    let hooks = d.backend().test_hooks().unwrap();
    let before = BTreeMap::from([
        ("A", hooks.content_digest(ContentRef::Snapshot(a)).unwrap()),
        ("B", hooks.content_digest(ContentRef::Snapshot(b)).unwrap()),
        ("live", hooks.content_digest(ContentRef::Live).unwrap()),
    ]);
    Setup {
        uuids: BTreeMap::from([("A", a), ("B", b)]),
        before,
        ..s
    }
}

/// Entry point of the child process (a no-op in a normal test run).
#[test]
fn kill_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (state, op) = spec.split_once('|').unwrap();
    let op = Op::ALL
        .into_iter()
        .find(|o| format!("{o:?}") == op)
        .unwrap();
    let mut d = open(Path::new(state), op.policy());
    println!("READY");
    op.run(&mut d);
    println!("DONE");
}

/// Runs `op` in a child process; kills it (and its qemu-img) `after` it started the
/// operation, if given. Returns how long the operation ran.
fn child(s: &Setup, op: Op, kill_after: Option<Duration>) -> Duration {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, format!("{}|{op:?}", s.state().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child died before starting"
        );
    }
    let started = Instant::now();
    if let Some(delay) = kill_after {
        std::thread::sleep(delay);
        // The whole process group: the qemu-img child dies mid-write too, as in a crash.
        Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status()
            .unwrap();
    }
    let status = child.wait().unwrap();
    let ran = started.elapsed();
    // The grandchild qemu-img is reaped by init, not by us: wait until the group is gone,
    // so its image locks are released, as after a real crash and reboot.
    let group = format!("-{}", child.id());
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
            "the killed process group does not go away"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    if kill_after.is_none() {
        assert!(status.success(), "the child failed");
    }
    ran
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn restore(backup: &Path, s: &Setup) {
    for dir in [s.state(), s.vm()] {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    copy_tree(&backup.join("state"), &s.state());
    copy_tree(&backup.join("vm"), &s.vm());
}

/// Checks the reopened domain: either the operation never happened or it is complete.
/// Returns whether it was complete.
fn verify(s: &Setup, op: Op, d: &mut Domain, what: &str) -> bool {
    d.check_agreement()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let tree = d.tree().unwrap().clone();
    let digest = |d: &mut Domain, of| {
        d.backend()
            .test_hooks()
            .unwrap()
            .content_digest(of)
            .unwrap()
    };
    assert_eq!(
        digest(d, ContentRef::Live),
        s.before["live"],
        "{what}: live content"
    );
    let (a, b) = (s.uuids["A"], s.uuids["B"]);
    let complete = match op {
        Op::ConsolidateByCommit => !tree.contains(&a),
        Op::ConsolidateByRebase | Op::Merge => !tree.contains(&b),
        Op::DeleteAll => tree.is_empty(),
    };
    let want: Vec<(Uuid, &str)> = match (op, complete) {
        (_, false) => vec![(a, "A"), (b, "B")],
        (Op::ConsolidateByCommit, true) => vec![(b, "B")],
        (Op::ConsolidateByRebase, true) => vec![(a, "A")],
        (Op::Merge, true) => vec![(a, "B")],
        (Op::DeleteAll, true) => vec![],
    };
    assert_eq!(tree.len(), want.len(), "{what}");
    for (u, content) in want {
        assert_eq!(
            digest(d, ContentRef::Snapshot(u)),
            s.before[content],
            "{what}: snapshot {u} should hold {content}'s content"
        );
    }
    if op == Op::DeleteAll && complete {
        for disk in s.disks() {
            let info = qi::info(&disk).unwrap();
            assert!(
                info.backing_filename.is_none() && info.snapshots.is_empty(),
                "{what}: {} not standalone",
                disk.display()
            );
        }
        assert!(!s.vm().join("d0.qcow2.snapshots").exists());
    }
    complete
}

#[test]
fn killed_mid_commit_or_rebase_the_operation_is_rolled_forward_without_loss() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    // SNAPTREE_KILLS raises the number of kills per operation.
    let kills: u32 = std::env::var("SNAPTREE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for op in Op::ALL {
        let s = setup();
        let backup = tempfile::tempdir().unwrap();
        copy_tree(&s.state(), &backup.path().join("state"));
        copy_tree(&s.vm(), &backup.path().join("vm"));
        let clean = child(&s, op, None);
        let mut d = open(&s.state(), op.policy());
        assert!(verify(&s, op, &mut d, "uninterrupted"));
        drop(d);
        let (mut rolled, mut before, mut after) = (0, 0, 0);
        for i in 0..kills {
            restore(backup.path(), &s);
            let delay = clean.mul_f64((f64::from(i) + 0.5) / f64::from(kills));
            child(&s, op, Some(delay));
            let mut d = open(&s.state(), op.policy());
            let what = format!("{op:?} killed after {delay:.0?} of {clean:.0?}");
            if !d.recoveries().is_empty() {
                rolled += 1;
            }
            if verify(&s, op, &mut d, &what) {
                after += 1
            } else {
                before += 1
            }
            check_images(&s.vm(), &what);
        }
        eprintln!(
            "{op:?}: runs {clean:.0?}; {kills} kills: {rolled} rolled forward by recovery, {after} complete, {before} not started"
        );
        assert!(rolled > 0, "{op:?}: no kill landed mid-operation");
    }
}

fn check_images(dir: &Path, what: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            check_images(&p, what);
        } else if p.extension().is_some_and(|x| x == "qcow2") {
            let out = Command::new("qemu-img")
                .args(["check", "-q", "-f", "qcow2"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                matches!(out.status.code(), Some(0 | 3)),
                "{what}: qemu-img check {} exited with {:?}: {}{}",
                p.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
