//! The conformance kit against the libvirt backend, through the plugin, on a real libvirtd
//! with QEMU: random operation sequences checked against the reference model after every
//! step (content by digest through the test hooks, tree by agreement with libvirt's
//! snapshot metadata), with faults, capability subsets and reopened stores. Each case gets
//! a fresh two-disk domain, shut off; reverts to a running state (internal disks: a
//! snapshot with memory, or `REVERT_RUNNING`) leave it running, and later steps, guest
//! writes (HMP `qemu-io`) and digests (force-share copies) then run against a live QEMU.
//! External domains stay shut off: libvirt 9.0 cannot revert them, and nothing else in
//! the kit starts a domain.
//!
//! `PROPTEST_CASES` sets the number of sequences per disk mode; without it, and at least
//! under `CI=true`, 12 each (24 in all).

#[macro_use]
mod common;

use std::cell::RefCell;
use std::time::Instant;

use snaptree_check::{Config, Subject, Tuning, run};
use snaptree_engine::flags;

const CASES: u32 = 12;

fn conform(mode: &str) {
    let rig = rig_or_skip!();
    let case = RefCell::new(0u32);
    let factory = || -> Result<Subject, String> {
        let mut n = case.borrow_mut();
        if *n > 0 {
            rig.undefine(&format!("{mode}-{}", *n));
        }
        *n += 1;
        let d = rig.define(&format!("{mode}-{}", *n), 2, mode);
        let backend = common::plugin()
            .open_domain(&d.snaptree_xml)
            .map_err(|e| e.full_message())?;
        Ok(Subject {
            domain_xml: d.snaptree_xml,
            backend: Box::new(backend),
        })
    };
    let mut config = Config::from_env_or_ci(CASES, CASES);
    config.max_steps = 16;
    // No `adopt`: after a lost store the old snapshots stay beside the new tree, and a
    // create that reuses one's uuid is refused.
    config.reach.adopts = false;
    config.tuning = Tuning {
        revert_flags: vec![0, flags::REVERT_SHUTOFF, flags::REVERT_RUNNING],
        ..Tuning::default()
    };
    // Shrinking replays sequences on a real libvirtd: bounded so a failure reports in minutes.
    config.max_shrink_iters = 100;
    let started = Instant::now();
    match run(&config, &factory) {
        Ok(report) => eprintln!(
            "libvirt conformance ({mode} disks): {} sequences, {} steps, {:.1?}",
            report.cases,
            report.steps,
            started.elapsed()
        ),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn internal_disks_conform() {
    conform("internal");
}

#[test]
fn external_disks_conform() {
    conform("external");
}
