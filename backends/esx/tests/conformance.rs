//! The conformance kit against the ESX backend, through the plugin
//! `libsnaptree_backend_esx.so`, on vcsim, at tree level: vcsim simulates the snapshot tree
//! and power states, not disks, and the backend has no test hooks, so guest writes are not
//! run and contents are not compared. Everything else is checked after every step: the
//! forest, names, uuids, recorded power states, current, the retired set, the exact error
//! code of every refused operation (with `OPERATION_INVALID` for the merges the backend
//! declares impossible) and the agreement of the engine's tree with vSphere's.
//!
//! One vcsim serves the whole run; every case starts from its VM with no snapshot,
//! powered off (the reference model's starting state). `SNAPTREE_ESX_CASES` (or
//! `PROPTEST_CASES`) sets the number of sequences; under `CI=true` it is at least 20.

#[macro_use]
mod common;

use common::VcsimExt;
use std::time::Instant;

use snaptree_backend_esx::vim::{self, VmPower};
use snaptree_check::{Config, Subject, run};
use snaptree_engine::NoProgress;

/// Sequences without an override: 20 (what CI runs), cheap enough for every run.
const DEFAULT_CASES: u32 = 20;

fn cases() -> u32 {
    let wanted = std::env::var("SNAPTREE_ESX_CASES")
        .ok()
        .or_else(|| std::env::var("PROPTEST_CASES").ok())
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("SNAPTREE_ESX_CASES/PROPTEST_CASES: not a number: {v}"))
        })
        .unwrap_or(DEFAULT_CASES);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        wanted.max(DEFAULT_CASES)
    } else {
        wanted
    }
}

#[test]
fn the_esx_backend_conforms_at_tree_level() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut direct = sim.direct(&vm);
    let vmref = direct.vm().clone();
    let direct = std::cell::RefCell::new(&mut direct);
    let factory = || -> Result<Subject, String> {
        // Reset behind the engine's back, as another vSphere client would: no snapshot,
        // powered off. The previous case's domain is gone by now.
        let mut direct = direct.borrow_mut();
        let session = direct.session();
        vim::run_task(
            session,
            "RemoveAllSnapshots_Task",
            &vmref.moref,
            "",
            "remove every snapshot",
            &mut NoProgress,
        )
        .map_err(|e| format!("reset: {e}"))?;
        // vcsim leaves the removed snapshots' memory files behind, and numbers each new
        // one past every file it finds (logging each): long runs would slow down.
        remove_snapshot_files(&sim.path(""));
        if vim::power(session, &vmref).map_err(|e| format!("reset: {e}"))? != VmPower::Off {
            vim::set_power(session, &vmref, VmPower::Off, &mut NoProgress)
                .map_err(|e| format!("reset: {e}"))?;
        }
        let xml = sim.domain_xml(&vm, "");
        let backend = common::plugin()
            .open_domain(&xml)
            .map_err(|e| e.full_message())?;
        Ok(Subject {
            domain_xml: xml,
            backend: Box::new(backend),
        })
    };
    let mut config = Config::from_env(DEFAULT_CASES);
    config.cases = cases();
    config.max_steps = 30;
    config.tree_only = true;
    // No `adopt`: after a lost store the old snapshots stay beside the new tree, and a
    // create that reuses one's uuid is refused.
    config.reach.adopts = false;
    // Shrinking replays sequences over SOAP: bounded so that a failure reports in minutes.
    config.max_shrink_iters = 300;
    let started = Instant::now();
    match run(&config, &factory) {
        Ok(report) => {
            eprintln!(
                "esx conformance (tree level, vcsim): {} sequences, {} steps, {:.1?}",
                report.cases,
                report.steps,
                started.elapsed()
            );
            for (label, n) in &report.coverage {
                if label.contains("lost store") || label.starts_with("transition: lose") {
                    eprintln!("  {label}: {n}");
                }
            }
        }
        Err(failure) => panic!("{failure}"),
    }
}

fn remove_snapshot_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            remove_snapshot_files(&path);
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("-Snapshot") && n.ends_with(".vmsn"))
        {
            let _ = std::fs::remove_file(path);
        }
    }
}
