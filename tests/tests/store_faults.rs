//! Crash safety (SEMANTICS.md §3.6): for every operation kind and every step k, a failure
//! or a crash at step k leaves, after recovery with a healthy backend, exactly the state
//! before the operation or exactly the state after it — tree and content — never a mix.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use snaptree_check::SimBackend;
use snaptree_engine::testing::{
    Fault, FaultAction, FaultSwitch, FaultyBackend, STALL_MARKER, SharedBackend,
};
use snaptree_engine::{ErrorCode, NullBackend, Uuid};
use snaptree_tests::{
    Canon, OPS, both_stores, build_base, check_invariants, contents, fresh, journal_rows,
    open_with, run_op, steps_of, store_like,
};

const WORKER: &str = env!("CARGO_BIN_EXE_store-worker");

/// A state directory holding the base tree on a fresh simulator.
fn base_on_sim(dir: &Path) -> (snaptree_engine::Connection, SharedBackend) {
    let c = fresh(dir, "vm");
    let sim = SharedBackend::new(Box::new(SimBackend::new()));
    let mut d = open_with(&c, "vm", Box::new(sim.clone()));
    build_base(&mut d).unwrap();
    d.check_agreement().unwrap();
    (c, sim)
}

struct Expected {
    steps: usize,
    before: Canon,
    before_content: BTreeMap<Option<Uuid>, String>,
    after: Canon,
    after_content: BTreeMap<Option<Uuid>, String>,
}

fn expected(op: &str) -> Expected {
    let tmp = tempfile::tempdir().unwrap();
    let (c, sim) = base_on_sim(&tmp.path().join("e"));
    let mut d = open_with(&c, "vm", Box::new(sim.clone()));
    let steps = steps_of(&mut d, op).unwrap();
    let before = Canon::of(d.tree().unwrap()).without_dates();
    let before_content = contents(&mut d, &sim);
    run_op(&mut d, op).unwrap();
    d.check_agreement().unwrap();
    let after = Canon::of(d.tree().unwrap()).without_dates();
    let after_content = contents(&mut d, &sim);
    assert_ne!(before, after, "{op} changes nothing?");
    Expected {
        steps,
        before,
        before_content,
        after,
        after_content,
    }
}

both_stores! {
    fn a_failure_at_every_step_of_every_operation_leaves_before_or_after_on_the_simulator(base) {
        let mut cases = 0;
        for op in OPS {
            let exp = expected(op);
            if exp.steps == 0 {
                // A rename has no physical step: nothing to fail, nothing journaled.
                continue;
            }
            for k in 0..exp.steps {
                for after_step in [false, true] {
                    cases += 1;
                    let what = format!(
                        "{op}, fault at step {k} of {}{}",
                        exp.steps,
                        if after_step { " after it ran" } else { "" }
                    );
                    let dir = &base.join(format!("f{cases}"));
                    store_like(base, dir);
                    let (c, sim) = base_on_sim(dir);
                    let switch = FaultSwitch::new();
                    let mut d = open_with(
                        &c,
                        "vm",
                        Box::new(FaultyBackend::new(Box::new(sim.clone()), switch.clone())),
                    );
                    switch.arm(Fault {
                        at_step: k,
                        action: FaultAction::Fail,
                        after_step,
                    });
                    let err = run_op(&mut d, op).expect_err(&what);
                    assert_eq!(switch.fired(), 1, "{what}");
                    // A first step that failed cleanly drops the journal entry and is BACKEND;
                    // one that failed after changing the physical tree keeps it, to be finished
                    // on the next use, and is INCOMPLETE (SEMANTICS.md §7.1).
                    let clean_first = k == 0 && !after_step;
                    let kept = journal_rows(dir).len() == 1;
                    if clean_first {
                        assert!(
                            !kept,
                            "{what}: a cleanly failed first step leaves no journal entry"
                        );
                    } else if k > 0 {
                        assert!(kept, "{what}: expected the journal entry to stay");
                    }
                    let want = if kept {
                        ErrorCode::Incomplete
                    } else {
                        ErrorCode::Backend
                    };
                    assert_eq!(err.code(), want, "{what}: {err}");
                    drop(d);
                    // Recovery: a new handle with a healthy backend on the same physical state.
                    let mut d = open_with(&c, "vm", Box::new(sim.clone()));
                    check_invariants(d.cached_tree()).unwrap_or_else(|e| panic!("{what}: {e}"));
                    d.check_agreement()
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let state = Canon::of(d.tree().unwrap()).without_dates();
                    let content = contents(&mut d, &sim);
                    let rolled_forward = !d.recoveries().is_empty();
                    if k == 0 && after_step && !rolled_forward {
                        // The step ran but left the physical tree agreeing with the old
                        // metadata (a retire's forget): dropping the operation is "before".
                        assert_eq!(state, exp.before, "{what}: expected the state before");
                        assert_eq!(
                            content, exp.before_content,
                            "{what}: expected the content before"
                        );
                    } else if k == 0 && !after_step {
                        assert!(d.recoveries().is_empty(), "{what}");
                        assert_eq!(state, exp.before, "{what}: expected the state before");
                        assert_eq!(
                            content, exp.before_content,
                            "{what}: expected the content before"
                        );
                    } else {
                        assert_eq!(d.recoveries().len(), 1, "{what}");
                        assert_eq!(d.recoveries()[0].steps_done_before, k, "{what}");
                        assert_eq!(state, exp.after, "{what}: expected the state after");
                        assert_eq!(
                            content, exp.after_content,
                            "{what}: expected the content after"
                        );
                    }
                    assert!(journal_rows(dir).is_empty(), "{what}");
                }
            }
        }
        assert!(cases >= 40, "only {cases} cases");
    }
}

/// Runs the crash worker for `op` at step `k` and SIGKILLs it there.
fn kill_at(dir: &Path, op: &str, k: usize, after_step: bool) {
    let mut child = Command::new(WORKER)
        .args([
            "crash",
            dir.to_str().unwrap(),
            "vm",
            op,
            &k.to_string(),
            if after_step { "1" } else { "0" },
            "stall",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() != STALL_MARKER {
        let out = child.wait_with_output().unwrap();
        panic!(
            "{op} at {k}: the worker did not stall: {line:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{op} at {k}");
    snaptree_tests::wait_for_sessions_of_dead(dir, child.id());
}

both_stores! {
    fn a_process_killed_at_every_step_of_every_operation_is_rolled_forward(dir) {
        let base = dir;
        let mut cases = 0;
        for op in OPS {
            // The state after, from a healthy run on a copy.
            let e = dir.join(format!("e-{op}"));
            store_like(dir, &e);
            let c = fresh(&e, "vm");
            build_base(&mut c.open_domain("vm").unwrap()).unwrap();
            // A fresh handle, as the killed process had: the null backend keeps its power state
            // in memory, so a new process starts shut off.
            let mut d = c.open_domain("vm").unwrap();
            let steps = steps_of(&mut d, op).unwrap();
            run_op(&mut d, op).unwrap();
            let after = Canon::of(d.tree().unwrap()).without_dates();
            for k in 0..steps {
                for after_step in [false, true] {
                    cases += 1;
                    let what = format!(
                        "{op}, killed at step {k} of {steps}{}",
                        if after_step { " after it ran" } else { "" }
                    );
                    let dir = &dir.join(format!("k{cases}"));
                    store_like(base, dir);
                    let c = fresh(dir, "vm");
                    build_base(&mut c.open_domain("vm").unwrap()).unwrap();
                    kill_at(dir, op, k, after_step);
                    // The plan was journaled (durably) before step 0: a crash anywhere after that
                    // rolls forward to the state after.
                    assert_eq!(journal_rows(dir).len(), 1, "{what}");
                    let switch = FaultSwitch::new();
                    let d = open_with(
                        &c,
                        "vm",
                        Box::new(FaultyBackend::new(
                            Box::new(NullBackend::new()),
                            switch.clone(),
                        )),
                    );
                    assert_eq!(d.recoveries().len(), 1, "{what}");
                    assert_eq!(d.recoveries()[0].steps_done_before, k, "{what}");
                    assert_eq!(
                        switch.executed(),
                        steps - k,
                        "{what}: re-runs the interrupted step and the rest"
                    );
                    check_invariants(d.cached_tree()).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(Canon::of(d.cached_tree()).without_dates(), after, "{what}");
                    assert!(journal_rows(dir).is_empty(), "{what}");
                }
            }
        }
        assert!(cases >= 50, "only {cases} cases");
    }
}

both_stores! {
    fn a_handle_that_found_no_pending_plan_finds_the_one_a_killed_process_left(dir) {
        // A handle that checked for an interrupted operation and found none may skip the
        // next check while the change signal has not moved (SqliteStore::pending): a plan
        // journaled since by another process, which then died before committing, must move
        // it.
        let c = fresh(dir, "vm");
        let mut d = c.open_domain("vm").unwrap();
        build_base(&mut d).unwrap();
        assert!(d.recover().unwrap().is_empty(), "expected nothing pending yet");
        let before = Canon::of(d.tree().unwrap()).without_dates();
        kill_at(dir, "delete-all", 1, true);
        assert_eq!(journal_rows(dir).len(), 1, "expected the killed plan journaled");
        assert_eq!(
            Canon::of(d.tree().unwrap()).without_dates(),
            before,
            "expected the tree of before while the plan is pending"
        );
        let recovered = d.recover().unwrap();
        assert_eq!(recovered.len(), 1, "expected the killed plan rolled forward by the old handle");
        assert_eq!(recovered[0].steps_done_before, 1, "expected step 0 recorded done");
        assert!(journal_rows(dir).is_empty(), "expected the journal entry gone");
        assert!(
            d.tree().unwrap().is_empty(),
            "expected the tree after delete-all, found {:?}",
            Canon::of(d.tree().unwrap()).names()
        );
    }
}

both_stores! {
    fn a_process_that_aborts_mid_plan_is_rolled_forward(dir) {
        let tmp = tempfile::tempdir().unwrap();
        let c = fresh(dir, "vm");
        let mut d = c.open_domain("vm").unwrap();
        build_base(&mut d).unwrap();
        drop(d);
        let status = Command::new(WORKER)
            .args([
                "crash",
                dir.to_str().unwrap(),
                "vm",
                "delete-all",
                "3",
                "1",
                "abort",
            ])
            .current_dir(tmp.path())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(6), "expected SIGABRT: {status:?}");
        let d = c.open_domain("vm").unwrap();
        assert_eq!(d.recoveries().len(), 1);
        assert_eq!(d.recoveries()[0].steps_done_before, 3);
        assert!(
            d.cached_tree().is_empty()
                && d.cached_tree().retired().is_empty()
                && d.cached_tree().current().is_none()
        );
    }
}
