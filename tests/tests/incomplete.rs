//! SEMANTICS.md §7.1: an operation interrupted part-way returns `INCOMPLETE` (never
//! `BACKEND`), stays journaled, leaves every read showing the state before it, is listed as
//! pending, and is finished by the next call or by `recover`; a roll-forward that fails again
//! is `INCOMPLETE` again and changes nothing more. On the delta-chain simulator, so steps
//! really change a physical tree.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use snaptree_check::SimBackend;
use snaptree_engine::testing::{Fault, FaultAction, FaultSwitch, FaultyBackend, SharedBackend};
use snaptree_engine::xml::DomainXml;
use snaptree_engine::{
    Backend, Connection, DeleteMode, Domain, DomainStore, ErrorCode, JournalEntry, MemoryStore,
    NoProgress, NullBackend, PhysicalTree, Plan, SnapshotTree, Uuid,
};
use snaptree_tests::{Canon, build_base, contents, fresh, journal_rows, null_domain, open_with};

fn physical(sim: &SharedBackend) -> PhysicalTree {
    sim.with(|b| b.list_physical()).unwrap()
}

struct Rig {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    conn: Connection,
    sim: SharedBackend,
    switch: FaultSwitch,
    d: Domain,
    b: Uuid,
}

/// The base tree on a simulator, opened through a fault switch; `b` has three descendants,
/// so DISCARD_FORCE of b is a plan of four steps.
fn rig(like: &Path) -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    snaptree_tests::store_like(like, &dir);
    let conn = fresh(&dir, "vm");
    let sim = SharedBackend::new(Box::new(SimBackend::new()));
    let switch = FaultSwitch::new();
    let mut d = open_with(
        &conn,
        "vm",
        Box::new(FaultyBackend::new(Box::new(sim.clone()), switch.clone())),
    );
    build_base(&mut d).unwrap();
    d.check_agreement().unwrap();
    let b = d.tree().unwrap().require_name("b", "vm").unwrap().uuid;
    Rig {
        _tmp: tmp,
        dir,
        conn,
        sim,
        switch,
        d,
        b,
    }
}

fn fail_at(switch: &FaultSwitch, k: usize) {
    switch.arm(Fault {
        at_step: k,
        action: FaultAction::Fail,
        after_step: false,
    });
}

/// The tree and content DISCARD_FORCE of b leaves, from a healthy run.
fn state_after_discard_force_of_b(like: &Path) -> (Canon, BTreeMap<Option<Uuid>, String>) {
    let mut r = rig(like);
    r.d.delete(&r.b, DeleteMode::DiscardForce, &mut NoProgress)
        .unwrap();
    let canon = Canon::of(r.d.tree().unwrap()).without_dates();
    let content = contents(&mut r.d, &r.sim);
    (canon, content)
}

fn journal_steps_done(dir: &Path) -> i64 {
    let rows = journal_rows(dir);
    assert_eq!(rows.len(), 1, "expected one journal entry, found {rows:?}");
    rows[0].1
}

snaptree_tests::both_stores! {
    fn a_failure_at_step_2_is_incomplete_reads_show_the_state_before_and_recover_finishes_it(like) {
        let (after, after_content) = state_after_discard_force_of_b(like);
        let mut r = rig(like);
        let plan = r.d.plan_delete(&r.b, DeleteMode::DiscardForce).unwrap();
        assert_eq!(plan.steps.len(), 4);
        let before = Canon::of(r.d.tree().unwrap()).without_dates();
        let before_content = contents(&mut r.d, &r.sim);

        fail_at(&r.switch, 1);
        let err =
            r.d.delete(&r.b, DeleteMode::DiscardForce, &mut NoProgress)
                .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::Incomplete,
            "expected INCOMPLETE: {err}"
        );
        let text = err.full_message();
        for part in [
            "delete (DISCARD_FORCE) of snapshot 'b'",
            "domain 'vm'",
            "step 2 of 4 (discard_leaf)",
            "the next call on the domain finishes it",
            "injected failure",
        ] {
            assert!(text.contains(part), "expected {part:?} in: {text}");
        }
        assert!(
            !err.to_string().contains("injected failure"),
            "the source is not repeated in the message itself: {err}"
        );

        // Every read shows the state before; the operation is pending, one step done.
        assert_eq!(Canon::of(r.d.tree().unwrap()).without_dates(), before);
        let c = r.d.tree().unwrap().require_name("c", "vm").unwrap().uuid;
        assert!(r.d.snapshot_xml(&c).unwrap().contains("<name>c</name>"));
        let pending =
            r.d.pending()
                .unwrap()
                .expect("expected a pending operation");
        assert_eq!(pending.entry.plan, plan);
        assert_eq!(pending.entry.steps_done, 1);
        assert_eq!(pending.operation, "delete (DISCARD_FORCE) of snapshot 'b'");
        // The same without opening the domain (what `list` shows).
        let listed = r.conn.pending_operation("vm").unwrap();
        assert_eq!(listed.as_ref(), Some(&pending));
        assert_eq!(journal_steps_done(&r.dir), 1);
        assert!(r.d.recoveries().is_empty());

        // recover finishes it and says what it did.
        let done = r.d.recover().unwrap();
        assert_eq!(done.len(), 1, "expected one recovery");
        assert_eq!(done[0].plan, plan);
        assert_eq!(done[0].steps_done_before, 1);
        assert_eq!(done[0].operation, "delete (DISCARD_FORCE) of snapshot 'b'");
        assert_eq!(r.d.recoveries(), done);
        assert!(r.d.pending().unwrap().is_none());
        assert!(r.conn.pending_operation("vm").unwrap().is_none());
        assert!(journal_rows(&r.dir).is_empty());
        assert_eq!(Canon::of(r.d.tree().unwrap()).without_dates(), after);
        assert_eq!(contents(&mut r.d, &r.sim), after_content);
        assert_ne!(before_content, after_content);
        r.d.check_agreement().unwrap();
        // Nothing left to do, nothing new to report.
        assert_eq!(r.d.recover().unwrap(), []);
    }
}

snaptree_tests::both_stores! {
    fn a_roll_forward_that_fails_again_is_incomplete_again_and_changes_nothing_more(like) {
        let (after, after_content) = state_after_discard_force_of_b(like);
        let mut r = rig(like);
        let before = Canon::of(r.d.tree().unwrap()).without_dates();
        fail_at(&r.switch, 1);
        r.d.delete(&r.b, DeleteMode::DiscardForce, &mut NoProgress)
            .unwrap_err();
        let physical_stopped = physical(&r.sim);

        // The re-run of step 2 fails at once: nothing more changes, physically or in metadata.
        fail_at(&r.switch, 0);
        let err = r.d.recover().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Incomplete, "{err}");
        assert!(err.to_string().contains("step 2 of 4"), "{err}");
        assert_eq!(physical(&r.sim), physical_stopped);
        assert_eq!(journal_steps_done(&r.dir), 1);
        assert_eq!(Canon::of(r.d.tree().unwrap()).without_dates(), before);
        assert!(r.d.recoveries().is_empty());

        // A mutation first finishes the pending operation; when that fails it is INCOMPLETE,
        // the new operation does not run, and the step that did complete is recorded.
        fail_at(&r.switch, 1);
        let err =
            r.d.create_snapshot("<domainsnapshot><name>z</name></domainsnapshot>")
                .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Incomplete, "{err}");
        assert!(err.to_string().contains("step 3 of 4"), "{err}");
        assert_eq!(journal_steps_done(&r.dir), 2);
        assert_eq!(Canon::of(r.d.tree().unwrap()).without_dates(), before);
        assert!(r.d.tree().unwrap().by_name("z").is_none());

        // Another handle opening the domain tries too; failing, it still opens and lists.
        fail_at(&r.switch, 0);
        let mut other = open_with(
            &r.conn,
            "vm",
            Box::new(FaultyBackend::new(
                Box::new(r.sim.clone()),
                r.switch.clone(),
            )),
        );
        assert_eq!(r.switch.fired(), 4, "opening tried to roll forward");
        assert_eq!(Canon::of(other.tree().unwrap()).without_dates(), before);
        assert_eq!(other.pending().unwrap().unwrap().entry.steps_done, 2);
        drop(other);

        // Healthy again: recover finishes from step 3.
        let done = r.d.recover().unwrap();
        assert_eq!(done.len(), 1, "expected one recovery");
        assert_eq!(done[0].steps_done_before, 2);
        assert_eq!(Canon::of(r.d.tree().unwrap()).without_dates(), after);
        assert_eq!(contents(&mut r.d, &r.sim), after_content);
        r.d.check_agreement().unwrap();
    }
}

snaptree_tests::both_stores! {
    fn a_first_step_that_changed_the_physical_tree_before_failing_is_incomplete(like) {
        let mut r = rig(like);
        let before = Canon::of(r.d.tree().unwrap()).without_dates();
        r.switch.arm(Fault {
            at_step: 0,
            action: FaultAction::Fail,
            after_step: true,
        });
        let err =
            r.d.create_snapshot("<domainsnapshot><name>n</name></domainsnapshot>")
                .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Incomplete, "{err}");
        assert!(
            err.to_string()
                .contains("create of snapshot 'n' on domain 'vm' stopped at step 1 of 1 (create)"),
            "{err}"
        );
        assert_eq!(Canon::of(r.d.tree().unwrap()).without_dates(), before);
        assert!(r.d.pending().unwrap().is_some());
        assert_eq!(r.d.recover().unwrap().len(), 1);
        assert!(r.d.tree().unwrap().by_name("n").is_some());
        r.d.check_agreement().unwrap();
    }
}

snaptree_tests::both_stores! {
    fn recover_reports_what_opening_the_domain_already_finished(like) {
        let mut r = rig(like);
        fail_at(&r.switch, 2);
        r.d.delete(&r.b, DeleteMode::DiscardForce, &mut NoProgress)
            .unwrap_err();
        drop(r.d);
        let mut d = open_with(&r.conn, "vm", Box::new(r.sim.clone()));
        assert!(d.pending().unwrap().is_none(), "opening finished it");
        let done = d.recover().unwrap();
        assert_eq!(done.len(), 1, "expected the recovery the open did");
        assert_eq!(done[0].steps_done_before, 2);
        assert_eq!(done[0].operation, "delete (DISCARD_FORCE) of snapshot 'b'");
        assert_eq!(d.recover().unwrap(), [], "reported once");
    }
}

snaptree_tests::both_stores! {
    fn a_cleanly_failed_first_step_stays_backend_and_leaves_nothing_pending(like) {
        let mut r = rig(like);
        fail_at(&r.switch, 0);
        let err =
            r.d.delete(&r.b, DeleteMode::DiscardForce, &mut NoProgress)
                .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Backend, "{err}");
        assert!(r.d.pending().unwrap().is_none());
        assert!(journal_rows(&r.dir).is_empty());
        assert_eq!(r.d.recover().unwrap(), []);
    }
}

/// A memory store whose commit can be made to fail, as a full disk under SQLite would.
struct CommitFails {
    inner: MemoryStore,
    fail: Arc<AtomicBool>,
}

impl DomainStore for CommitFails {
    fn lock(&mut self) -> snaptree_engine::Result<()> {
        self.inner.lock()
    }
    fn unlock(&mut self) {
        self.inner.unlock();
    }
    fn changed(&mut self) -> snaptree_engine::Result<bool> {
        self.inner.changed()
    }
    fn load_tree(&mut self) -> snaptree_engine::Result<SnapshotTree> {
        self.inner.load_tree()
    }
    fn pending(&mut self) -> snaptree_engine::Result<Option<JournalEntry>> {
        self.inner.pending()
    }
    fn journal_begin(&mut self, plan: &Plan) -> snaptree_engine::Result<()> {
        self.inner.journal_begin(plan)
    }
    fn journal_step_done(&mut self, index: usize) -> snaptree_engine::Result<()> {
        self.inner.journal_step_done(index)
    }
    fn commit(&mut self, plan: &Plan, before: &SnapshotTree) -> snaptree_engine::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(snaptree_engine::Error::Storage {
                context: "injected commit failure".into(),
                source: None,
            });
        }
        self.inner.commit(plan, before)
    }
    fn journal_abort(&mut self) -> snaptree_engine::Result<()> {
        self.inner.journal_abort()
    }
}

#[test]
fn a_failed_final_commit_after_every_step_is_incomplete_and_finished_without_rerunning() {
    let fail = Arc::new(AtomicBool::new(true));
    let switch = FaultSwitch::new();
    let text = null_domain("vm");
    let mut d = Domain::from_parts(
        DomainXml::parse(&text).unwrap(),
        text.clone(),
        Uuid::new_v4(),
        SnapshotTree::new(),
        Box::new(FaultyBackend::new(
            Box::new(NullBackend::new()),
            switch.clone(),
        )),
        Box::new(CommitFails {
            inner: MemoryStore::default(),
            fail: fail.clone(),
        }),
    )
    .unwrap();
    let err = d
        .create_snapshot("<domainsnapshot><name>s</name></domainsnapshot>")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Incomplete, "{err}");
    assert!(
        err.to_string().contains("stopped at the final commit"),
        "{err}"
    );
    assert!(err.full_message().contains("injected commit failure"));
    assert!(d.tree().unwrap().is_empty(), "nothing committed");
    assert_eq!(d.pending().unwrap().unwrap().entry.steps_done, 1);
    fail.store(false, Ordering::SeqCst);
    let executed = switch.executed();
    let done = d.recover().unwrap();
    assert_eq!(done.len(), 1, "expected one recovery");
    assert_eq!(done[0].steps_done_before, 1);
    assert_eq!(switch.executed(), executed, "no step is re-run");
    assert!(d.tree().unwrap().by_name("s").is_some());
}

/// The shared simulator with every step failing: a fault that lasts (a full disk).
struct StepsFail(SharedBackend);

impl Backend for StepsFail {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capabilities(&self) -> snaptree_engine::Capabilities {
        self.0.capabilities()
    }
    fn is_metadata_only(&self) -> bool {
        false
    }
    fn power_state(&mut self) -> snaptree_engine::Result<snaptree_engine::PowerState> {
        self.0.power_state()
    }
    fn execute(
        &mut self,
        step: &snaptree_engine::Step,
        _progress: &mut dyn snaptree_engine::Progress,
    ) -> snaptree_engine::Result<()> {
        Err(snaptree_engine::Error::Backend {
            backend: self.0.name().to_string(),
            message: format!("no space left for {}", step.kind().name()),
        })
    }
    fn list_physical(&mut self) -> snaptree_engine::Result<PhysicalTree> {
        self.0.list_physical()
    }
}

struct StepsFailProvider(SharedBackend);

impl snaptree_engine::BackendProvider for StepsFailProvider {
    fn open(&self, _domain: &DomainXml, _xml: &str) -> snaptree_engine::Result<Box<dyn Backend>> {
        Ok(Box::new(StepsFail(self.0.clone())))
    }
}

snaptree_tests::both_stores! {
    fn undefine_with_an_operation_that_cannot_finish_is_incomplete_and_keeps_the_domain(like) {
        let r = rig(like);
        let mut d = r.d;
        fail_at(&r.switch, 1);
        d.delete(&r.b, DeleteMode::DiscardForce, &mut NoProgress)
            .unwrap_err();
        drop(d);
        let physical_stopped = physical(&r.sim);
        r.conn
            .register_provider("null", Arc::new(StepsFailProvider(r.sim.clone())));
        for delete_snapshots in [false, true] {
            let e = r.conn.undefine_domain("vm", delete_snapshots).unwrap_err();
            assert_eq!(
                e.code(),
                ErrorCode::Incomplete,
                "expected INCOMPLETE, not BUSY: {e}"
            );
            assert!(e.to_string().contains("step 2 of 4"), "{e}");
            assert!(e.full_message().contains("no space left"), "{e}");
            assert!(r.conn.lookup_domain("vm").is_ok(), "the domain is kept");
            assert_eq!(journal_steps_done(&r.dir), 1);
            assert_eq!(physical(&r.sim), physical_stopped);
        }
    }
}
