//! The backend conformance kit against the QEMU backend on real qcow2 images: random
//! operation sequences checked against the reference model after every step (content by
//! digest, tree by agreement). `PROPTEST_CASES` raises the number of sequences; under
//! `CI=true` all-external and all-internal domains run at least 60 each.
//!
//! The adopted-names runs start each sequence from a tree another tool made (a prelude):
//! internal snapshots tagged by name with `qemu-img snapshot -c NAME`, external overlays
//! named as libvirt names them (`<stem>.<name>`, made with `qemu-img create -b`). The kit
//! adopts it (REDEFINE) parents first, then every step of the random sequence runs on data
//! the backend finds through the adopted tags and files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use snaptree_backend_qemu::QemuBackend;
use snaptree_check::{Adopted, Build, Config, Prelude, Reach, Subject, Tuning, run, run_adopted};
use snaptree_engine::{Backend, ContentRef, flags};

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

/// Makes a fresh domain per case holding a prelude's tree, made with `qemu-img` and the
/// backend's guest-write hook (the kit's guest data), with no snaptree metadata.
struct PreludeFactory {
    root: tempfile::TempDir,
    modes: &'static [&'static str],
    prelude: Prelude,
    state: Mutex<(usize, Option<PathBuf>)>,
}

fn qemu_img(args: &[&str]) -> Result<(), String> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| format!("qemu-img {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn path(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

fn tools_present(what: &str) -> bool {
    let ok = |t: &str| Command::new(t).arg("--version").output().is_ok();
    if ok("qemu-img") && ok("qemu-io") {
        return true;
    }
    snaptree_tests::skip::cannot_run(what, "qemu-img or qemu-io is missing");
    false
}

impl PreludeFactory {
    fn new(modes: &'static [&'static str], prelude: Prelude) -> PreludeFactory {
        PreludeFactory {
            root: tempfile::tempdir().unwrap(),
            modes,
            prelude,
            state: Mutex::new((0, None)),
        }
    }

    /// The backend's test hooks on the disks as they are now.
    fn hooks_on<T>(
        &self,
        lives: &[PathBuf],
        f: impl FnOnce(&mut dyn snaptree_engine::TestHooks) -> snaptree_engine::Result<T>,
    ) -> Result<T, String> {
        let xml = common::domain_xml(lives, self.modes);
        let mut b = QemuBackend::open(&xml).map_err(|e| e.full_message())?;
        let hooks = b
            .test_hooks()
            .ok_or("the QEMU backend offers no test hooks")?;
        f(hooks).map_err(|e| e.full_message())
    }

    fn adopted(&self) -> Result<Adopted, String> {
        let mut state = self.state.lock().unwrap();
        if let Some(old) = state.1.take() {
            let _ = std::fs::remove_dir_all(old);
        }
        state.0 += 1;
        let dir = self.root.path().join(format!("case-{}", state.0));
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        state.1 = Some(dir.clone());
        // Each disk's live image: the disk itself (internal), or the newest overlay
        // (external: libvirt's `<stem>.<name>` backed by the image before it).
        let mut lives = common::create_disks(&dir, self.modes, SIZE);
        let mut digests = Vec::new();
        for step in self.prelude.build() {
            match step {
                Build::Write { token, seed } => {
                    let digest = self.hooks_on(&lives, |h| {
                        h.write_guest(seed)?;
                        h.content_digest(ContentRef::Live)
                    })?;
                    digests.push((token, digest));
                }
                Build::Snapshot { name } => {
                    for (i, mode) in self.modes.iter().enumerate() {
                        if *mode == "internal" {
                            qemu_img(&["snapshot", "-c", &name, path(&lives[i])?])?;
                        } else {
                            let overlay = dir.join(format!("d{i}.{name}"));
                            qemu_img(&[
                                "create",
                                "-q",
                                "-f",
                                "qcow2",
                                "-F",
                                "qcow2",
                                "-b",
                                path(&lives[i])?,
                                path(&overlay)?,
                            ])?;
                            lives[i] = overlay;
                        }
                    }
                }
                Build::Revert { name } => {
                    for (i, mode) in self.modes.iter().enumerate() {
                        if *mode != "internal" {
                            return Err(format!(
                                "expected a chain on external disk {i}: an overlay chain cannot branch (revert to '{name}')"
                            ));
                        }
                        qemu_img(&["snapshot", "-a", &name, path(&lives[i])?])?;
                    }
                }
            }
        }
        let domain_xml = common::domain_xml(&lives, self.modes);
        let backend = QemuBackend::open(&domain_xml).map_err(|e| e.full_message())?;
        Ok(Adopted {
            subject: Subject {
                domain_xml,
                backend: Box::new(backend),
            },
            digests,
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

/// Sequences each adopted-names run makes by default (`PROPTEST_CASES` raises it).
const ADOPTED_CASES: u32 = 10;

fn conform_adopted(modes: &'static [&'static str], prelude: Prelude) {
    conform_adopted_n(modes, prelude, ADOPTED_CASES);
}

fn conform_adopted_n(modes: &'static [&'static str], prelude: Prelude, default_cases: u32) {
    if !tools_present("the conformance kit on adopted qcow2 trees") {
        return;
    }
    let len = prelude.snapshots.len();
    let factory = PreludeFactory::new(modes, prelude.clone());
    let mut c = config(default_cases, default_cases);
    c.reach = Reach {
        prelude: Some(prelude),
        ..Reach::default()
    };
    let started = Instant::now();
    match run_adopted(&c, &|| factory.adopted()) {
        Ok(report) => {
            let adopted = report
                .coverage
                .get("prelude expected: success")
                .copied()
                .unwrap_or(0);
            let want = report.cases as usize * len;
            assert!(
                adopted >= want,
                "expected every sequence to adopt the prelude's {len} snapshots ({want} REDEFINEs), the coverage counts {adopted}"
            );
            eprintln!(
                "qemu conformance on adopted names {modes:?}: {} sequences, {} steps, {:.1?}",
                report.cases,
                report.steps,
                started.elapsed()
            )
        }
        Err(failure) => panic!("{failure}"),
    }
}

/// Two internal disks whose snapshots `qemu-img snapshot -c` tagged by name (one by its
/// creation seconds, libvirt's default name), with a branch: s1 → 1700000100 → s3 (the
/// live state's), s1 → alt.
#[test]
fn internal_snapshots_tagged_by_name_conform_once_adopted() {
    conform_adopted(
        &["internal", "internal"],
        Prelude::branched(&["s1", "1700000100", "s3"], "alt"),
    );
}

/// Two external disks whose chains libvirt-style overlays make (`d<i>.qcow2` ← `d<i>.s1` ←
/// `d<i>.1700000100` ← `d<i>.s3`, the live image).
#[test]
fn libvirt_overlay_chains_conform_once_adopted() {
    conform_adopted(
        &["external", "external"],
        Prelude::chain(&["s1", "1700000100", "s3"]),
    );
}

/// A domain mixing the modes, with one snapshot made outside snaptree: `d0.qcow2` (its data)
/// ← `d0.s1` (the live image) on the external disk, the tag `s1` on the internal one. (A
/// longer tree cannot be listed half-way through its import on a mixed domain:
/// docs/model-checker.md, "Adopted names".)
#[test]
fn mixed_domain_conforms_once_its_snapshot_is_adopted() {
    conform_adopted_n(&["external", "internal"], Prelude::chain(&["s1"]), 8);
}
