//! kill -9 in the middle of a step, then run the step again: it must finish, and every
//! content must be what an uninterrupted run gives.
//!
//! The test re-runs its own binary as the child (the `crash_child` test, active only with
//! `SIM_CRASH_CHILD` set), which opens the domain, says "start", runs one step and says
//! "done". The parent kills it at fractions of the step's measured duration.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::Sim;

const CHILD_ENV: &str = "SIM_CRASH_CHILD";
const ATTEMPTS: u32 = 12;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// consolidate(s1), where s1 has many children and the live layer on it.
    Consolidate,
    /// merge_into_parent(s2, s1), where s1 also has retired layers and s2 many children.
    Merge,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Consolidate => "consolidate",
            Op::Merge => "merge",
        }
    }

    fn run(self, sim: &Sim) {
        match self {
            Op::Consolidate => sim.consolidate(1, 0).expect("consolidate"),
            Op::Merge => sim.merge(2, Some(1), 0).expect("merge"),
        }
    }

    /// The layer whose file the step removes last: present means unfinished.
    fn removed(self) -> u8 {
        match self {
            Op::Consolidate => 1,
            Op::Merge => 2,
        }
    }

    fn setup(self, dir: &Path) {
        let sim = Sim::open(dir);
        sim.write_guest(1);
        sim.create(1, 0).unwrap();
        let children: &[u8] = match self {
            Op::Consolidate => &[1],
            Op::Merge => {
                // Retired siblings of s2 on s1, then s2 itself.
                for i in 0..10 {
                    sim.revert(1, 3, 0).unwrap();
                    sim.write_guest(200 + i);
                    sim.create(100 + i as u8, 0).unwrap();
                }
                sim.revert(1, 3, 0).unwrap();
                sim.write_guest(2);
                sim.create(2, 0).unwrap();
                &[2]
            }
        };
        let parent = children[0];
        for i in 0..40u8 {
            sim.revert(parent, 3, 0).unwrap();
            sim.write_guest(300 + u64::from(i));
            sim.create(150 + i, 0).unwrap();
        }
        sim.revert(parent, 1, 0).unwrap();
        sim.write_guest(3);
    }

    /// What every layer's content must be after the step: unchanged, except s1 under merge.
    fn expected(self, sim: &Sim) -> BTreeMap<Option<u8>, String> {
        let (layers, _) = sim.physical();
        let mut all: BTreeMap<Option<u8>, String> = layers
            .iter()
            .map(|(s, _)| (Some(*s), sim.digest(Some(*s)).unwrap()))
            .collect();
        all.insert(None, sim.digest(None).unwrap());
        let gone = all.remove(&Some(self.removed())).unwrap();
        if let Op::Merge = self {
            all.insert(Some(1), gone);
        }
        all
    }
}

fn contents(sim: &Sim) -> BTreeMap<Option<u8>, String> {
    let (layers, _) = sim.physical();
    let mut all: BTreeMap<Option<u8>, String> = layers
        .iter()
        .map(|(s, _)| (Some(*s), sim.digest(Some(*s)).unwrap()))
        .collect();
    all.insert(None, sim.digest(None).unwrap());
    all
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The child: runs one step in the directory the parent prepared.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (op, dir) = spec.split_once(':').unwrap();
    let op = if op == "consolidate" {
        Op::Consolidate
    } else {
        Op::Merge
    };
    let sim = Sim::open(Path::new(dir));
    let mut out = std::io::stdout();
    writeln!(out, "start").unwrap();
    out.flush().unwrap();
    op.run(&sim);
    writeln!(out, "done").unwrap();
}

fn crash_and_rerun(op: Op) {
    let template = tempfile::tempdir().unwrap();
    op.setup(template.path());
    let expected = op.expected(&Sim::open(template.path()));

    // How long the step takes here, uninterrupted.
    let timed = tempfile::tempdir().unwrap();
    copy_dir(template.path(), timed.path());
    let sim = Sim::open(timed.path());
    let started = Instant::now();
    op.run(&sim);
    let duration = started.elapsed();
    assert_eq!(
        contents(&sim),
        expected,
        "{}: the uninterrupted step gives the expected contents",
        op.name()
    );

    let mut interrupted = 0;
    for k in 1..=ATTEMPTS {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}:{}", op.name(), dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("the child says start").unwrap();
            if line.ends_with("start") {
                break;
            }
        }
        std::thread::sleep(duration * k / (ATTEMPTS + 1));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let layer = dir.path().join(format!(
            "00000000-0000-4000-0000-0000000000{:02x}.layer",
            op.removed()
        ));
        let unfinished = layer.exists();
        interrupted += u32::from(unfinished);
        let sim = Sim::open(dir.path());
        op.run(&sim);
        assert!(
            !layer.exists(),
            "{}: the re-run removed the layer",
            op.name()
        );
        assert_eq!(
            contents(&sim),
            expected,
            "{}: killed after {:?} of {duration:?} (unfinished: {unfinished}), then re-run",
            op.name(),
            duration * k / (ATTEMPTS + 1)
        );
    }
    eprintln!(
        "{}: {interrupted} of {ATTEMPTS} kills landed mid-step ({duration:?} uninterrupted)",
        op.name()
    );
    assert!(
        interrupted > 0,
        "{}: no kill landed before the step finished ({duration:?} uninterrupted); the test proved nothing",
        op.name()
    );
}

#[test]
fn a_consolidate_killed_mid_step_finishes_when_re_run() {
    crash_and_rerun(Op::Consolidate);
}

#[test]
fn a_merge_killed_mid_step_finishes_when_re_run() {
    crash_and_rerun(Op::Merge);
}
