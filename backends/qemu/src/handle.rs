//! State shared between a backend and the handles tests and benchmarks keep on it after the
//! backend has been boxed into an engine `Domain`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::reaper::Reaper;
use crate::stats::{ConsolidatePolicy, Stats};

/// What the backend and its handles share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stats: Mutex<Stats>,
    /// Changes to the disk left before a simulated crash, when armed.
    pub(crate) crash_in: Mutex<Option<usize>>,
    /// How many simulated crashes fired, for the tests (the backend itself recognises a
    /// simulated crash by its error, `QemuError::SimulatedCrash`).
    pub(crate) crashes: AtomicUsize,
    pub(crate) policy: Mutex<ConsolidatePolicy>,
    /// Directories with entry changes not yet made durable.
    pub(crate) dirty: Mutex<BTreeSet<PathBuf>>,
    /// The rate limit of live block jobs, bytes per second (`None`: as fast as possible).
    pub(crate) job_speed: Mutex<Option<u64>>,
    /// Whether consolidate measures the bytes it moved (`qemu-img map` before and after).
    pub(crate) measure_moved: AtomicBool,
    /// Closes the files of removed layers off the steps' path ([`crate::reaper`]).
    pub(crate) reaper: Reaper,
}

/// A handle on a [`QemuBackend`](crate::QemuBackend) that stays usable after the backend was
/// given to a `Domain`: statistics, the consolidate policy, and crash simulation.
#[derive(Debug, Clone, Default)]
pub struct QemuHandle(pub(crate) Arc<Shared>);

impl QemuHandle {
    /// A copy of the statistics so far.
    pub fn stats(&self) -> Stats {
        self.0
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Clears the statistics.
    pub fn reset_stats(&self) {
        *self.0.stats.lock().unwrap_or_else(|p| p.into_inner()) = Stats::default();
    }

    /// Chooses how freed layers hand their data to their dependents (default: cheapest).
    pub fn set_consolidate_policy(&self, policy: ConsolidatePolicy) {
        *self.0.policy.lock().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// Limits live block jobs (stream, commit) to `bytes_per_second`, so that a busy host
    /// keeps I/O for its guests; `None` (the default) runs them as fast as possible.
    pub fn set_block_job_speed(&self, bytes_per_second: Option<u64>) {
        *self.0.job_speed.lock().unwrap_or_else(|p| p.into_inner()) = bytes_per_second;
    }

    /// Makes consolidate measure the bytes each freed layer moved
    /// ([`ConsolidateRecord::bytes_moved`](crate::ConsolidateRecord)), at the cost of one or
    /// two `qemu-img map` runs per moved file; off by default (the choice itself is always
    /// measured and recorded).
    pub fn set_measure_moved_bytes(&self, on: bool) {
        self.0.measure_moved.store(on, Ordering::Relaxed);
    }

    /// The policy in force.
    pub fn consolidate_policy(&self) -> ConsolidatePolicy {
        *self.0.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the backend fail like a crash right before its `changes`-th next change to the
    /// disk (0: the very next), without undoing anything; then disarms. For restart tests:
    /// re-running the step afterwards must finish it.
    pub fn simulate_crash_after(&self, changes: usize) {
        *self.0.crash_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(changes);
    }

    /// How many simulated crashes have fired so far.
    pub fn crashes(&self) -> usize {
        self.0.crashes.load(Ordering::SeqCst)
    }

    /// Test hook: makes the thread that gives freed layers' blocks back wait `delay` before
    /// each file, so that a test can check that steps and estimates wait for it.
    #[cfg(feature = "test-hooks")]
    pub fn delay_frees(&self, delay: std::time::Duration) {
        self.0.reaper.delay_closes(delay);
    }

    /// Disarms a crash that has not fired.
    pub fn disarm_crash(&self) {
        *self.0.crash_in.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
