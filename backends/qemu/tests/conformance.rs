//! The backend conformance kit against the QEMU backend on real qcow2 images: random
//! operation sequences checked against the reference model after every step (content by
//! digest, tree by agreement). `PROPTEST_CASES` raises the number of sequences; under
//! `CI=true` all-external and all-internal domains run at least 60 each.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use snaptree_backend_qemu::QemuBackend;
use snaptree_check::{Config, Subject, Tuning, run};
use snaptree_engine::flags;

/// Small disks: the kit's guest writes land in the first 4 MiB.
const SIZE: u64 = 4 * common::MIB;

/// Makes a fresh domain per case in its own directory under `root`, removing the previous
/// case's directory (its domain is gone by then: proptest runs cases one after another).
struct Factory {
    root: tempfile::TempDir,
    modes: &'static [&'static str],
    state: Mutex<(usize, Option<PathBuf>)>,
}

impl Factory {
    fn new(modes: &'static [&'static str]) -> Factory {
        Factory {
            root: tempfile::tempdir().unwrap(),
            modes,
            state: Mutex::new((0, None)),
        }
    }

    fn subject(&self) -> Result<Subject, String> {
        let mut state = self.state.lock().unwrap();
        if let Some(old) = state.1.take() {
            let _ = std::fs::remove_dir_all(old);
        }
        state.0 += 1;
        let dir = self.root.path().join(format!("case-{}", state.0));
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let disks = common::create_disks(&dir, self.modes, SIZE);
        state.1 = Some(dir);
        let domain_xml = common::domain_xml(&disks, self.modes);
        let backend = QemuBackend::open(&domain_xml).map_err(|e| e.to_string())?;
        Ok(Subject {
            domain_xml,
            backend: Box::new(backend),
        })
    }
}

/// Sequences each disk mode runs at least under `CI=true` (docs/model-checker.md); a
/// domain mixing the modes, whose steps are each mode's, runs its default.
const CI_CASES: u32 = 60;

fn config(default_cases: u32, ci_cases: u32) -> Config {
    let mut c = Config::from_env_or_ci(default_cases, ci_cases);
    c.max_steps = 16;
    // The offline backend cannot start a guest: reverts keep the domain shut off.
    c.tuning = Tuning {
        revert_flags: vec![0, flags::REVERT_SHUTOFF],
        ..Tuning::default()
    };
    // Shrinking replays sequences on real disks; bound it so a failure reports in minutes.
    c.max_shrink_iters = 300;
    c
}

fn conform(modes: &'static [&'static str], default_cases: u32, ci_cases: u32) {
    let factory = Factory::new(modes);
    let started = Instant::now();
    match run(&config(default_cases, ci_cases), &|| factory.subject()) {
        Ok(report) => eprintln!(
            "qemu conformance {modes:?}: {} sequences, {} steps, {:.1?}",
            report.cases,
            report.steps,
            started.elapsed()
        ),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn one_external_and_one_internal_disk_conform() {
    conform(&["external", "internal"], 24, 24);
}

#[test]
fn external_disks_conform() {
    conform(&["external", "external"], 24, CI_CASES);
}

#[test]
fn internal_disks_conform() {
    conform(&["internal", "internal"], 24, CI_CASES);
}
