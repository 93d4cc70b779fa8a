//! Test helpers for crash safety (feature `testing`): a backend wrapper that fails, aborts
//! the process or stalls (to be killed) at step k, and a backend shared by several domain
//! handles so that a recovering handle sees the physical state a failed one left.
//!
//! Both wrap any `Box<dyn Backend>`: the null backend, the model checker's delta-chain
//! simulator, or a real plugin.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, BackendProvider, Capabilities, PhysicalTree, Progress, TestHooks};
use crate::error::{Error, Result};
use crate::model::PowerState;
use crate::plan::Step;
use crate::xml::DomainXml;

/// What happens at the faulty step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// The step returns a `BACKEND` error without running (a backend undoes a failed step).
    Fail,
    /// The process aborts (SIGABRT: no destructor, no flush), before or after the step ran.
    Abort,
    /// The process prints [`STALL_MARKER`] and a newline on stdout, then sleeps forever,
    /// before or after the step ran, so a parent can SIGKILL it at exactly that point.
    Stall,
}

/// What a stalled process prints before it sleeps.
pub const STALL_MARKER: &str = "SNAPTREE-STALLED-AT-FAULT";

/// A fault armed at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The 0-based index, counted over every step executed since the fault was armed.
    pub at_step: usize,
    /// What happens.
    pub action: FaultAction,
    /// Whether the inner backend runs the step first: the fault comes after the physical
    /// work, before the engine records it. With [`FaultAction::Fail`] at a step k > 0 this
    /// makes recovery re-run a step that had finished (restartability); at step 0 it breaks
    /// the backend contract (a failed step must leave nothing behind), so do not.
    pub after_step: bool,
}

#[derive(Debug, Default)]
struct SwitchState {
    fault: Option<Fault>,
    executed: usize,
    fired: usize,
}

/// Arms and observes the faults of every [`FaultyBackend`] made with it.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<Mutex<SwitchState>>);

impl FaultSwitch {
    /// A disarmed switch.
    pub fn new() -> FaultSwitch {
        FaultSwitch::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SwitchState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Arms a one-shot fault; steps are counted from now.
    pub fn arm(&self, fault: Fault) {
        let mut s = self.state();
        s.fault = Some(fault);
        s.executed = 0;
    }

    /// Disarms.
    pub fn disarm(&self) {
        self.state().fault = None;
    }

    /// How many steps ran (or were attempted) since the last arm.
    pub fn executed(&self) -> usize {
        self.state().executed
    }

    /// How many faults fired in all.
    pub fn fired(&self) -> usize {
        self.state().fired
    }
}

/// Wraps a backend and injects a fault at step k. It always reports
/// `is_metadata_only() == false`, so the engine journals every plan, even around the null
/// backend.
pub struct FaultyBackend {
    inner: Box<dyn Backend>,
    switch: FaultSwitch,
}

impl std::fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner.name())
            .field("switch", &self.switch)
            .finish()
    }
}

impl FaultyBackend {
    /// Wraps `inner`; faults are armed through `switch`.
    pub fn new(inner: Box<dyn Backend>, switch: FaultSwitch) -> FaultyBackend {
        FaultyBackend { inner, switch }
    }

    /// The switch.
    pub fn switch(&self) -> &FaultSwitch {
        &self.switch
    }

    fn crash(action: FaultAction) -> ! {
        match action {
            FaultAction::Stall => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{STALL_MARKER}");
                let _ = out.flush();
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            _ => std::process::abort(),
        }
    }
}

impl Backend for FaultyBackend {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn is_metadata_only(&self) -> bool {
        false
    }

    fn power_state(&mut self) -> Result<PowerState> {
        self.inner.power_state()
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        let fault = {
            let mut s = self.switch.state();
            let index = s.executed;
            s.executed += 1;
            match s.fault {
                Some(f) if f.at_step == index => {
                    s.fault = None;
                    s.fired += 1;
                    Some(f)
                }
                _ => None,
            }
        };
        match fault {
            None => self.inner.execute(step, progress),
            Some(Fault {
                action: FaultAction::Fail,
                after_step,
                at_step,
            }) => {
                if after_step {
                    self.inner.execute(step, progress)?;
                }
                Err(Error::Backend {
                    backend: self.inner.name().to_string(),
                    message: format!(
                        "injected failure at step {at_step} ({})",
                        step.kind().name()
                    ),
                })
            }
            Some(Fault {
                action, after_step, ..
            }) => {
                if after_step {
                    let _ = self.inner.execute(step, progress);
                }
                FaultyBackend::crash(action)
            }
        }
    }

    fn list_physical(&mut self) -> Result<PhysicalTree> {
        self.inner.list_physical()
    }

    fn test_hooks(&mut self) -> Option<&mut dyn TestHooks> {
        self.inner.test_hooks()
    }
}

/// Provides [`FaultyBackend`]s around another provider's backends, all on one switch.
pub struct FaultyProvider {
    inner: Arc<dyn BackendProvider>,
    switch: FaultSwitch,
}

impl FaultyProvider {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn BackendProvider>, switch: FaultSwitch) -> FaultyProvider {
        FaultyProvider { inner, switch }
    }
}

impl BackendProvider for FaultyProvider {
    fn open(&self, domain: &DomainXml, xml: &str) -> Result<Box<dyn Backend>> {
        Ok(Box::new(FaultyBackend::new(
            self.inner.open(domain, xml)?,
            self.switch.clone(),
        )))
    }
}

/// One backend used by several handles (each clone is a handle on the same physical
/// state), as two processes share one disk image.
#[derive(Clone)]
pub struct SharedBackend {
    inner: Arc<Mutex<Box<dyn Backend>>>,
    name: String,
}

impl std::fmt::Debug for SharedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBackend")
            .field("name", &self.name)
            .finish()
    }
}

impl SharedBackend {
    /// Shares `inner`.
    pub fn new(inner: Box<dyn Backend>) -> SharedBackend {
        let name = inner.name().to_string();
        SharedBackend {
            inner: Arc::new(Mutex::new(inner)),
            name,
        }
    }

    /// Runs `f` on the shared backend.
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn Backend) -> T) -> T {
        let mut b = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(b.as_mut())
    }
}

impl Backend for SharedBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.with(|b| b.capabilities())
    }

    fn is_metadata_only(&self) -> bool {
        self.with(|b| b.is_metadata_only())
    }

    fn power_state(&mut self) -> Result<PowerState> {
        self.with(|b| b.power_state())
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        self.with(|b| b.execute(step, progress))
    }

    fn list_physical(&mut self) -> Result<PhysicalTree> {
        self.with(|b| b.list_physical())
    }
}

/// A point of a metadata commit (`SqliteStore::commit`) where a test can stop the process
/// to SIGKILL it there: the crash test of the change signal kills a writer at each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitPoint {
    /// Holding the lock, before the change signal is made odd.
    BeforeSignal = 1,
    /// The signal is odd; the SQLite transaction has not begun.
    Signalled = 2,
    /// The edits are written in the open SQLite transaction, not committed.
    Written = 3,
    /// SQLite committed; the signal is still odd.
    Committed = 4,
    /// The signal is even again; the lock is still held.
    Ended = 5,
}

impl CommitPoint {
    /// Every point, in the order a commit passes them.
    pub const ALL: [CommitPoint; 5] = [
        CommitPoint::BeforeSignal,
        CommitPoint::Signalled,
        CommitPoint::Written,
        CommitPoint::Committed,
        CommitPoint::Ended,
    ];

    /// Its name, as the marker prints it.
    pub fn name(self) -> &'static str {
        match self {
            CommitPoint::BeforeSignal => "before-signal",
            CommitPoint::Signalled => "signalled",
            CommitPoint::Written => "written",
            CommitPoint::Committed => "committed",
            CommitPoint::Ended => "ended",
        }
    }
}

/// The armed commit point (0: none) and how many commits pass it first.
static STALL_POINT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
static STALL_AFTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Arms a stall: the `(skip + 1)`-th commit of this process to reach `point` prints
/// [`STALL_MARKER`], a space and the point's name on stdout, then sleeps forever (to be
/// killed there).
pub fn stall_at_commit_point(point: CommitPoint, skip: usize) {
    use std::sync::atomic::Ordering;
    STALL_AFTER.store(skip, Ordering::SeqCst);
    STALL_POINT.store(point as u8, Ordering::SeqCst);
}

/// Called by the store at each commit point.
pub(crate) fn commit_point(point: CommitPoint) {
    use std::sync::atomic::Ordering;
    if STALL_POINT.load(Ordering::Relaxed) != point as u8 {
        return;
    }
    if STALL_AFTER
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{STALL_MARKER} {}", point.name());
    let _ = out.flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

thread_local! {
    /// How many times a store on this thread read its journal table (`journal_reads`).
    static JOURNAL_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times a SQLite store called on this thread read its journal from the database,
/// rather than knowing from the change signal that nothing is pending. Per thread, so that
/// tests running side by side do not count each other's reads.
pub fn journal_reads() -> u64 {
    JOURNAL_READS.with(std::cell::Cell::get)
}

/// Called by the store when it reads its journal.
pub(crate) fn count_journal_read() {
    JOURNAL_READS.with(|n| n.set(n.get() + 1));
}
