//! Crash safety with data (SEMANTICS.md §3.6 with §3.3-5): a CHILD process runs an
//! operation on a domain whose backend is the C sim plugin (its layers are files, so they
//! survive the process), and is SIGKILLed mid-plan:
//!
//! - at every step k of every operation kind, before step k runs and right after it ran
//!   but before the engine recorded it (the child stalls there; the parent sends SIGKILL);
//! - at random times during long plans (delete-all of 30 snapshots, MERGE_FORCE discarding
//!   18 snapshots, CONSOLIDATE of a snapshot with 10 children), so kills land inside the C
//!   sim's steps.
//!
//! The parent then reopens the domain through `Connection` with the plugin registered,
//! which rolls the journal forward, and checks the tree (against the engine run on the
//! in-memory simulator from the same sequence), the live power state, the content digest
//! of the live state and of every snapshot (against the digests recorded through the
//! plugin's test hooks before the operation), the physical agreement and the invariants.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use snaptree_check::SimBackend;
use snaptree_engine::testing::{FaultSwitch, FaultyProvider, STALL_MARKER};
use snaptree_engine::{ContentRef, Domain, PowerState, Recovery, Result, Uuid};
use std::sync::Arc;

use snaptree_tests::pg_rig::PgRig;
use snaptree_tests::redirect_file;
use snaptree_tests::{
    Canon, OPS, build_base, check_invariants, fixed_snapshot_xml, journal_rows,
    run_op_without_writes, sim_connection, sim_plugin, steps_of,
};

const WORKER: &str = env!("CARGO_BIN_EXE_store-worker");

/// The key of the live state in content maps.
const LIVE: Option<Uuid> = None;

/// Content digests: the live state (key `None`) and every snapshot.
type Contents = BTreeMap<Option<Uuid>, String>;

// ---- fixtures: a prepared state directory and layer directory, restored per case ----

/// A state directory and a C sim layer directory at fixed paths (the domain XML names the
/// layer directory), with a template copy of both taken after `build`.
struct Fixture {
    _root: tempfile::TempDir,
    run: PathBuf,
    template: PathBuf,
    /// On PostgreSQL: the server, the run's database and its template copy.
    pg: Option<(Arc<PgRig>, String, String)>,
}

impl Fixture {
    fn state(&self) -> PathBuf {
        self.run.join("state")
    }

    fn layers(&self) -> PathBuf {
        self.run.join("layers")
    }

    /// On SQLite without `pg`, else in a fresh database of the rig.
    fn new(build: fn(&mut Domain) -> Result<()>, pg: Option<Arc<PgRig>>) -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("run");
        let template = root.path().join("template");
        let mut fx = Fixture {
            _root: root,
            run,
            template,
            pg: None,
        };
        std::fs::create_dir_all(&fx.run).unwrap();
        if let Some(rig) = pg {
            let uri = rig.fresh_db();
            let db = uri
                .split("@/")
                .nth(1)
                .unwrap()
                .split('?')
                .next()
                .unwrap()
                .to_string();
            std::fs::write(redirect_file(&fx.state()), &uri).unwrap();
            fx.pg = Some((rig, db.clone(), format!("{db}_template")));
        }
        {
            let c = sim_connection(&fx.state());
            c.define_domain(&snaptree_backend_sim::domain_xml("vm", &fx.layers()))
                .unwrap();
            let mut d = c.open_domain("vm").unwrap();
            build(&mut d).unwrap();
            d.check_agreement()
                .expect("the prepared tree agrees with the C sim's layers");
        }
        copy_tree(&fx.run, &fx.template);
        if let Some((rig, db, template)) = &fx.pg {
            pg_copy(rig, db, template);
        }
        fx
    }

    /// Puts the prepared state back (no process may have it open).
    fn restore(&self) {
        std::fs::remove_dir_all(&self.run).unwrap();
        copy_tree(&self.template, &self.run);
        if let Some((rig, db, template)) = &self.pg {
            rig.client("postgres")
                .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
                .unwrap();
            pg_copy(rig, template, db);
        }
    }
}

/// Creates database `to` as a copy of `from`, waiting for the server to finish ending the
/// sessions of processes that just closed (or were killed on) `from`.
fn pg_copy(rig: &PgRig, from: &str, to: &str) {
    let mut admin = rig.client("postgres");
    let mut tries = 0;
    loop {
        match admin.batch_execute(&format!("CREATE DATABASE {to} TEMPLATE {from}")) {
            Ok(()) => return,
            Err(e) if tries < 200 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot copy database {from} to {to}: {e}"),
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn write_guest(d: &mut Domain, seed: u64) -> Result<()> {
    d.backend()
        .test_hooks()
        .expect("the backend has test hooks")
        .write_guest(seed)
}

/// 30 snapshots, every one after a guest write:
///
/// ```text
/// s00 ─┬─ t0 ── u0
///      ├─ ...
///      ├─ t4 ── u4 ── v0 ── ... ── v8   (current: v8, live written since)
///      ├─ ...
///      └─ t9 ── u9
/// ```
///
/// so delete-all has 31 steps and MERGE_FORCE of t4 discards 18 snapshots then merges.
fn build_long(d: &mut Domain) -> Result<()> {
    let mut seed = 1000;
    let mut create = |d: &mut Domain, name: &str| -> Result<Uuid> {
        write_guest(d, seed)?;
        seed += 1;
        d.create_snapshot(&fixed_snapshot_xml(name, name))
    };
    let s00 = create(d, "s00")?;
    let mut u4 = None;
    for i in 0..10 {
        d.revert(&s00, None, &mut snaptree_engine::NoProgress)?;
        create(d, &format!("t{i}"))?;
        let u = create(d, &format!("u{i}"))?;
        if i == 4 {
            u4 = Some(u);
        }
    }
    d.revert(&u4.unwrap(), None, &mut snaptree_engine::NoProgress)?;
    for j in 0..9 {
        create(d, &format!("v{j}"))?;
    }
    write_guest(d, 1)
}

// ---- observing a domain ----

/// Everything the checks compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    tree: Canon,
    power: PowerState,
    content: Contents,
}

fn contents(d: &mut Domain) -> Contents {
    let uuids: Vec<Uuid> = d.tree().unwrap().iter().map(|s| s.uuid).collect();
    let hooks = d
        .backend()
        .test_hooks()
        .expect("the backend has test hooks");
    let mut out = Contents::new();
    out.insert(LIVE, hooks.content_digest(ContentRef::Live).unwrap());
    for u in uuids {
        out.insert(
            Some(u),
            hooks
                .content_digest(ContentRef::Snapshot(u))
                .unwrap_or_else(|e| panic!("expected a digest of snapshot {u}: {e}")),
        );
    }
    out
}

fn observe(d: &mut Domain) -> Observed {
    Observed {
        tree: Canon::of(d.tree().unwrap()).without_dates(),
        power: d.power_state().unwrap(),
        content: contents(d),
    }
}

/// Says, by name, where two content maps differ.
fn content_diff(got: &Contents, want: &Contents, names: &Canon) -> String {
    let name = |k: &Option<Uuid>| match k {
        None => "the live state".to_string(),
        Some(u) => match names.snapshots.iter().find(|s| s.uuid == *u) {
            Some(s) => format!("snapshot '{}'", s.name),
            None => format!("snapshot {u}"),
        },
    };
    let mut out = Vec::new();
    for k in got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (got.get(k), want.get(k)) {
            (Some(g), Some(w)) if g == w => {}
            (g, w) => out.push(format!("{}: got {g:?}, expected {w:?}", name(k))),
        }
    }
    out.join("; ")
}

// ---- what to expect ----

/// The states before and after an operation, and its plan length.
struct Expected {
    op: &'static str,
    steps: usize,
    before: Observed,
    after: Observed,
}

/// The tree and power states from the engine on the in-memory simulator (the same build
/// sequence and operation); the contents from the plugin's digests of the prepared tree,
/// by the rule of SEMANTICS.md §2-3: every surviving snapshot keeps its own content, except
/// P under MERGE/MERGE_FORCE, which takes S's; a new snapshot takes the live content; the
/// live content changes only by revert, to S's.
fn expected(
    op: &'static str,
    build: fn(&mut Domain) -> Result<()>,
    prepared: &Observed,
) -> Expected {
    let mut e = Domain::ephemeral(
        "<domain type='sim'><name>vm</name></domain>",
        Box::new(SimBackend::new()),
    )
    .unwrap();
    build(&mut e).unwrap();
    let steps = steps_of(&mut e, op).unwrap();
    let tree_before = Canon::of(e.tree().unwrap()).without_dates();
    let power_before = e.power_state().unwrap();
    assert_eq!(
        (&tree_before, power_before),
        (&prepared.tree, prepared.power),
        "{op}: expected the engine on the in-memory simulator and on the C sim plugin to build the same tree"
    );
    run_op_without_writes(&mut e, op).unwrap();
    let tree_after = Canon::of(e.tree().unwrap()).without_dates();
    let power_after = e.power_state().unwrap();
    assert_ne!(
        tree_before, tree_after,
        "{op}: expected the operation to change the tree"
    );

    let (kind, target) = op.split_once(':').unwrap_or((op, ""));
    let s = prepared
        .tree
        .snapshots
        .iter()
        .find(|x| x.name == target)
        .map(|x| (x.uuid, x.parent));
    let before = &prepared.content;
    let mut content = Contents::new();
    content.insert(
        LIVE,
        match (kind, s) {
            ("revert" | "revert-running", Some((s, _))) => before[&Some(s)].clone(),
            _ => before[&LIVE].clone(),
        },
    );
    for x in &tree_after.snapshots {
        let want = match (kind, s) {
            ("delete-merge" | "delete-merge-force", Some((s, Some(p)))) if x.uuid == p => {
                before[&Some(s)].clone()
            }
            _ => match before.get(&Some(x.uuid)) {
                Some(d) => d.clone(),
                // The snapshot the operation made: it froze the live content.
                None if kind == "create" => before[&LIVE].clone(),
                None => panic!("{op}: snapshot '{}' appeared from nowhere", x.name),
            },
        };
        content.insert(Some(x.uuid), want);
    }
    Expected {
        op,
        steps,
        before: prepared.clone(),
        after: Observed {
            tree: tree_after,
            power: power_after,
            content,
        },
    }
}

/// Opens the prepared domain in this process and observes it; checks that every
/// snapshot's content differs from every other's, so a mix-up cannot go unseen.
fn prepared(fx: &Fixture) -> Observed {
    let c = sim_connection(&fx.state());
    let mut d = c.open_domain("vm").unwrap();
    let o = observe(&mut d);
    let mut seen = BTreeMap::new();
    for (k, digest) in &o.content {
        if let Some(other) = seen.insert(digest.clone(), *k) {
            panic!(
                "expected every prepared content to differ: {k:?} and {other:?} are both {digest}"
            );
        }
    }
    o
}

// ---- the child process ----

fn spawn(fx: &Fixture, args: &[&str]) -> Child {
    let state = fx.state();
    let mut all = vec![args[0], state.to_str().unwrap(), "vm"];
    all.extend(&args[1..]);
    Command::new(WORKER)
        .args(&all)
        .current_dir(&fx.run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn fail_child(mut child: Child, what: &str, line: &str) -> ! {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "{what}: the worker did not do what was expected: first line {line:?}, stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sigkill(fx: &Fixture, mut child: Child, what: &str) {
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "{what}: expected the worker to die of SIGKILL, got {status:?}"
    );
    snaptree_tests::wait_for_sessions_of_dead(&fx.state(), child.id());
}

/// The C sim's temporary files (`.<layer>.tmp`) in a layer directory: a kill cut a write.
fn temporaries(layers: &Path) -> Vec<String> {
    std::fs::read_dir(layers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

// ---- recovery and the checks ----

/// Reopens the domain through `Connection` with the plugin registered (wrapped only to
/// count the steps recovery runs), which rolls an interrupted operation forward.
fn recover(fx: &Fixture, what: &str) -> (Observed, Vec<Recovery>, usize) {
    let c = snaptree_tests::connect(&fx.state());
    let switch = FaultSwitch::new();
    c.register_provider(
        snaptree_backend_sim::TYPE,
        std::sync::Arc::new(FaultyProvider::new(sim_plugin().provider(), switch.clone())),
    );
    let mut d = c.open_domain("vm").unwrap_or_else(|e| {
        panic!(
            "{what}: expected the domain to reopen: {}",
            e.full_message()
        )
    });
    let recoveries = d.recoveries().to_vec();
    let executed = switch.executed();
    check_invariants(d.cached_tree())
        .unwrap_or_else(|e| panic!("{what}: expected the invariants to hold: {e}"));
    d.check_agreement().unwrap_or_else(|e| {
        panic!(
            "{what}: expected the physical layers to agree with the tree: {}",
            e.full_message()
        )
    });
    let o = observe(&mut d);
    assert!(
        journal_rows(&fx.state()).is_empty(),
        "{what}: expected no journal entry after recovery"
    );
    (o, recoveries, executed)
}

fn assert_state(got: &Observed, want: &Observed, which: &str, what: &str) {
    assert_eq!(got.tree, want.tree, "{what}: expected the tree {which}");
    assert_eq!(
        got.power, want.power,
        "{what}: expected the live power state {which}"
    );
    assert!(
        got.content == want.content,
        "{what}: expected the content {which}: {}",
        content_diff(&got.content, &want.content, &want.tree)
    );
}

/// Runs the operation uninterrupted in a child; checks the state after. Returns how long
/// the operation took, from the child's START to its DONE.
fn healthy_run(fx: &Fixture, exp: &Expected) -> Duration {
    let what = format!("{}, uninterrupted in a child", exp.op);
    fx.restore();
    let mut child = spawn(fx, &["run-sim", exp.op]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    if first != "START" {
        fail_child(child, &what, &first);
    }
    let started = Instant::now();
    let done = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let took = started.elapsed();
    let status = child.wait().unwrap();
    assert!(
        status.success() && done.starts_with("DONE"),
        "{what}: expected the worker to finish, got {status:?} and {done:?}"
    );
    let (o, recoveries, _) = recover(fx, &what);
    assert!(recoveries.is_empty(), "{what}: expected nothing to recover");
    assert_state(&o, &exp.after, "after the operation", &what);
    took
}

/// Every operation of `ops` on the tree `build` makes, killed at every step boundary: the
/// number of kills.
fn kill_at_every_step(
    fixture: &str,
    build: fn(&mut Domain) -> Result<()>,
    ops: &[&'static str],
    pg: Option<Arc<PgRig>>,
) -> usize {
    let fx = Fixture::new(build, pg);
    let prepared = prepared(&fx);
    let mut kills = 0;
    for op in ops {
        let exp = expected(op, build, &prepared);
        healthy_run(&fx, &exp);
        // A rename has no physical step: nothing is journaled, there is no point to kill.
        for k in 0..exp.steps {
            for after_step in [false, true] {
                let what = format!(
                    "{op} ({fixture} tree), worker SIGKILLed at step {k} of {}{}",
                    exp.steps,
                    if after_step {
                        " after it ran, before it was recorded"
                    } else {
                        " before it ran"
                    }
                );
                fx.restore();
                let mut child = spawn(
                    &fx,
                    &[
                        "crash-sim",
                        op,
                        &k.to_string(),
                        if after_step { "1" } else { "0" },
                    ],
                );
                let mut line = String::new();
                BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                if line.trim() != STALL_MARKER {
                    fail_child(child, &what, &line);
                }
                sigkill(&fx, child, &what);
                kills += 1;
                let rows = journal_rows(&fx.state());
                assert_eq!(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                    vec![k as i64],
                    "{what}: expected one journal entry with {k} steps done"
                );
                let (o, recoveries, executed) = recover(&fx, &what);
                // The plan was journaled durably before step 0: every kill rolls forward.
                assert_eq!(
                    recoveries.len(),
                    1,
                    "{what}: expected one roll-forward on reopening"
                );
                assert_eq!(
                    recoveries[0].steps_done_before, k,
                    "{what}: expected the roll-forward to start at step {k}"
                );
                assert_eq!(
                    recoveries[0].plan.steps.len(),
                    exp.steps,
                    "{what}: expected the recovered plan to have {} steps",
                    exp.steps
                );
                assert_eq!(
                    executed,
                    exp.steps - k,
                    "{what}: expected recovery to re-run step {k} and the rest"
                );
                assert_state(&o, &exp.after, "after the operation", &what);
            }
        }
    }
    kills
}

#[test]
fn a_worker_killed_at_every_step_of_every_operation_on_the_c_sim_recovers_tree_and_content() {
    every_step_of_every_operation(None);
}

#[test]
fn a_worker_killed_at_every_step_of_every_operation_on_the_c_sim_and_postgresql_recovers_tree_and_content()
 {
    let Some(rig) = PgRig::shared("the crash test on PostgreSQL") else {
        return;
    };
    every_step_of_every_operation(Some(rig));
}

fn every_step_of_every_operation(pg: Option<Arc<PgRig>>) {
    let kills = kill_at_every_step("base", build_base, OPS, pg);
    eprintln!(
        "crash_sim: {kills} SIGKILLs at the step boundaries of {} operations, all rolled forward with the right content",
        OPS.len()
    );
    assert!(kills >= 50, "expected at least 50 kills, made {kills}");
}

/// The base tree, then the live state moved onto f (which has the one child g) and
/// written, so the steps that must keep the live state's content while its physical
/// parent changes under it (MERGE into P = current, CONSOLIDATE of current, discarding
/// current) are exercised too.
fn build_live_on_parent(d: &mut Domain) -> Result<()> {
    build_base(d)?;
    let f = d.tree()?.require_name("f", "test")?.uuid;
    d.revert(&f, None, &mut snaptree_engine::NoProgress)?;
    write_guest(d, 555)
}

const LIVE_ON_PARENT_OPS: &[&str] = &[
    "create",
    "revert:g",
    "delete-retire:f",
    "delete-discard:g",
    "delete-discard-force:f",
    "delete-merge:g",
    "delete-merge-force:g",
    "delete-merge-force:b",
    "delete-consolidate:f",
    "delete-children-only:a",
    "delete-all",
];

#[test]
fn a_worker_killed_at_every_step_with_the_live_state_on_the_merge_parent_recovers_tree_and_content()
{
    live_on_parent(None);
}

#[test]
fn a_worker_killed_at_every_step_with_the_live_state_on_the_merge_parent_on_postgresql_recovers_tree_and_content()
 {
    let Some(rig) = PgRig::shared("the live-on-parent crash test on PostgreSQL") else {
        return;
    };
    live_on_parent(Some(rig));
}

fn live_on_parent(pg: Option<Arc<PgRig>>) {
    let kills = kill_at_every_step("live-on-f", build_live_on_parent, LIVE_ON_PARENT_OPS, pg);
    eprintln!(
        "crash_sim: {kills} SIGKILLs at the step boundaries of {} operations (live state on f), all rolled forward with the right content",
        LIVE_ON_PARENT_OPS.len()
    );
    assert!(kills >= 30, "expected at least 30 kills, made {kills}");
}

/// A small xorshift generator; the seed is printed so a failure can be replayed with
/// `CRASH_SIM_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const RANDOM_KILLS: u32 = 25;

#[test]
fn workers_killed_at_random_times_during_long_plans_on_the_c_sim_leave_before_or_after() {
    random_kills(None);
}

#[test]
fn workers_killed_at_random_times_during_long_plans_on_the_c_sim_and_postgresql_leave_before_or_after()
 {
    let Some(rig) = PgRig::shared("the random-kill crash test on PostgreSQL") else {
        return;
    };
    random_kills(Some(rig));
}

fn random_kills(pg: Option<Arc<PgRig>>) {
    let seed = std::env::var("CRASH_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    let mut rng = Rng(seed);
    let fx = Fixture::new(build_long, pg);
    let prepared = prepared(&fx);
    assert_eq!(
        prepared.tree.snapshots.len(),
        30,
        "expected 30 prepared snapshots"
    );
    let mut report = Vec::new();
    // delete-all: 31 steps; MERGE_FORCE of t4: 18 discards and a merge; CONSOLIDATE of
    // s00: one step that rebases 10 children, so kills land inside it.
    for (op, min_steps) in [
        ("delete-all", 31),
        ("delete-merge-force:t4", 19),
        ("delete-consolidate:s00", 1),
    ] {
        let exp = expected(op, build_long, &prepared);
        assert!(
            exp.steps >= min_steps,
            "{op}: expected a plan of at least {min_steps} steps, got {}",
            exp.steps
        );
        let took = healthy_run(&fx, &exp);
        let mut landed = Vec::new();
        for i in 0..RANDOM_KILLS {
            // Stratified: one random point in each slice of the measured duration.
            let delay = took.mul_f64((f64::from(i) + rng.unit()) / f64::from(RANDOM_KILLS));
            let what = format!(
                "{op} ({} steps), worker SIGKILLed {delay:?} after it started (uninterrupted: {took:?}; CRASH_SIM_SEED={seed})",
                exp.steps
            );
            fx.restore();
            let mut child = spawn(&fx, &["run-sim", op]);
            // Kept open until the child is gone, so a child that finishes first can still
            // write its DONE line.
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            if line.trim() != "START" {
                fail_child(child, &what, &line);
            }
            std::thread::sleep(delay);
            child.kill().unwrap(); // SIGKILL (a no-op on a child that already exited)
            let status = child.wait().unwrap();
            if status.signal() != Some(9) && !status.success() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!(
                    "{what}: expected the worker to die of SIGKILL or to finish cleanly, got {status:?}: {err}"
                );
            }
            drop(stdout);
            snaptree_tests::wait_for_sessions_of_dead(&fx.state(), child.id());
            let journal = journal_rows(&fx.state()).first().map(|r| r.1);
            let cut = temporaries(&fx.layers());
            let (o, recoveries, executed) = recover(&fx, &what);
            let left = temporaries(&fx.layers());
            match (&recoveries[..], journal) {
                ([], None) => {
                    // Killed before the journal entry, or after the commit.
                    if o.tree == exp.before.tree {
                        assert_state(&o, &exp.before, "before the operation", &what);
                        landed.push("before".to_string());
                    } else {
                        assert_state(&o, &exp.after, "after the operation", &what);
                        landed.push(if status.signal() == Some(9) {
                            "after (commit done)".to_string()
                        } else {
                            "after (finished)".to_string()
                        });
                    }
                }
                ([r], Some(done)) => {
                    assert_eq!(
                        r.steps_done_before as i64, done,
                        "{what}: expected the roll-forward to start where the journal says"
                    );
                    assert_eq!(
                        executed,
                        exp.steps - r.steps_done_before,
                        "{what}: expected recovery to run the rest of the plan"
                    );
                    assert_state(
                        &o,
                        &exp.after,
                        "after the operation (rolled forward)",
                        &what,
                    );
                    landed.push(format!(
                        "step {done}{}",
                        if cut.is_empty() {
                            ""
                        } else {
                            " (a layer write cut)"
                        }
                    ));
                    if !left.is_empty() {
                        eprintln!(
                            "{what}: temporary files left after recovery: {left:?} (before: {cut:?})"
                        );
                    }
                }
                (r, j) => panic!(
                    "{what}: expected a roll-forward exactly when a journal entry was left: {} recoveries, journal {j:?}",
                    r.len()
                ),
            }
        }
        let mid = landed.iter().filter(|l| l.starts_with("step")).count();
        report.push(format!(
            "{op}: {took:?} uninterrupted, kills landed at {landed:?}"
        ));
        assert!(
            mid > 0,
            "{op}: expected at least one random kill to land mid-plan (CRASH_SIM_SEED={seed}), got {landed:?}"
        );
    }
    eprintln!(
        "crash_sim random kills (CRASH_SIM_SEED={seed}):\n  {}",
        report.join("\n  ")
    );
}
