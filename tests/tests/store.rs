//! The durable store: round trip, permissions, migration, locking, change detection across
//! handles and processes, journal recovery.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snaptree_engine::store::{DomainLock, SCHEMA_VERSION};
use snaptree_engine::testing::{Fault, FaultAction, FaultSwitch, FaultyBackend, journal_reads};
use snaptree_engine::{
    Connection, DeleteMode, Edit, ErrorCode, NoProgress, NullBackend, Operation, Plan, PowerState,
    Snapshot, Step, Uuid,
};
use snaptree_tests::{
    Canon, build_base, check_invariants, fresh, journal_rows, null_domain, open_with,
};
use snaptree_tests::{Oracle, both_stores};

const WORKER: &str = env!("CARGO_BIN_EXE_store-worker");

fn worker(args: &[&str]) -> String {
    let out = Command::new(WORKER)
        .args(args)
        .output()
        .expect("run worker");
    assert!(
        out.status.success(),
        "worker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

both_stores! {
    fn round_trip_keeps_every_detail(dir) {
        let before = {
            let c = fresh(dir, "vm");
            let mut d = c.open_domain("vm").unwrap();
            build_base(&mut d).unwrap();
            // A merge moves children under the parent after its older children: sibling order
            // must survive the reload as the tree has it.
            let b = d.tree().unwrap().require_name("b", "vm").unwrap().uuid;
            d.create_snapshot("<domainsnapshot><name>b2</name><description>with &lt;markup&gt; and ünïcode</description></domainsnapshot>")
                .unwrap();
            d.revert(&b, Some(PowerState::Running), &mut NoProgress)
                .unwrap();
            let canon = Canon::of(d.tree().unwrap());
            check_invariants(d.cached_tree()).unwrap();
            assert!(!canon.retired.is_empty() && canon.current.is_some());
            assert!(
                canon
                    .snapshots
                    .iter()
                    .any(|s| s.state == PowerState::Running)
            );
            assert!(
                canon
                    .snapshots
                    .iter()
                    .any(|s| s.state == PowerState::Paused)
            );
            canon
        };
        // A new connection, as another process would open it.
        let c = Connection::open(Some(&snaptree_tests::store_of(dir))).unwrap();
        let d = c.open_domain("vm").unwrap();
        assert_eq!(Canon::of(d.cached_tree()), before);
        assert!(d.recoveries().is_empty());
        assert_eq!(
            c.list_domains()
                .unwrap()
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            ["vm"]
        );
    }
}

#[test]
fn permissions_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("deep/state");
    // umask 000 would leave files world-writable if the store relied on it.
    let status = Command::new("sh")
        .args([
            "-c",
            "umask 000; exec \"$0\" setup \"$1\" vm",
            WORKER,
            dir.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // Files SQLite keeps while a connection is open.
    let c = Connection::open(Some(&dir)).unwrap();
    let d = c.open_domain("vm").unwrap();
    assert_eq!(mode(&dir), 0o700, "state dir");
    assert_eq!(mode(&dir.join("locks")), 0o700, "locks dir");
    for f in ["snaptree.db", "snaptree.db-wal", "snaptree.db-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let lock = DomainLock::path(&dir, &d.uuid());
    assert_eq!(mode(&lock), 0o600, "lock file");
}

/// Version 1 of the schema, frozen here exactly as it shipped: the migration must take a
/// database written by it to the current version.
const V1_SCHEMA: &str = "
CREATE TABLE domains (id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL, xml TEXT NOT NULL, current_uuid TEXT, generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE snapshots (domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    uuid TEXT NOT NULL, name TEXT NOT NULL, parent_uuid TEXT, description TEXT NOT NULL DEFAULT '',
    creation_date INTEGER NOT NULL, state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'shutoff')),
    PRIMARY KEY (domain_id, seq), UNIQUE (domain_id, uuid), UNIQUE (domain_id, name)) WITHOUT ROWID;
CREATE TABLE retired (domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE, uuid TEXT NOT NULL,
    PRIMARY KEY (domain_id, uuid)) WITHOUT ROWID;
CREATE TABLE journal (domain_id INTEGER PRIMARY KEY REFERENCES domains(id) ON DELETE CASCADE, plan TEXT NOT NULL,
    steps_done INTEGER NOT NULL DEFAULT 0);
PRAGMA user_version = 1;
";

#[test]
fn a_version_1_database_is_migrated_and_its_journal_rolled_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let u = |n: u128| Uuid::from_u128(n);
    let (dom, a, b, c, old) = (u(100), u(1), u(2), u(3), u(9));
    let pending = Plan {
        operation: Operation::Delete {
            snapshot: c,
            mode: DeleteMode::Discard,
        },
        steps: vec![Step::DiscardLeaf { snapshot: c }],
        edits: vec![
            Edit::Remove { snapshot: c },
            Edit::SetCurrent { current: Some(b) },
        ],
    };
    {
        let db = rusqlite::Connection::open(dir.join("snaptree.db")).unwrap();
        db.execute_batch(V1_SCHEMA).unwrap();
        db.execute(
            "INSERT INTO domains (uuid, name, type, xml, current_uuid, generation) VALUES (?1, 'old', 'null', ?2, ?3, 7)",
            rusqlite::params![dom.to_string(), null_domain("old"), c.to_string()],
        )
        .unwrap();
        // c is older (lower seq) than its parent b, which no operation produces: the loader
        // must not depend on parents coming first.
        for (seq, s, parent, name, state) in [
            (10, a, None, "a", "shutoff"),
            (12, c, Some(b), "c", "running"),
            (15, b, Some(a), "b", "paused"),
        ] {
            db.execute(
                "INSERT INTO snapshots (seq, domain_id, uuid, name, parent_uuid, description, creation_date, state) \
                 VALUES (?1, 1, ?2, ?3, ?4, 'from v1', 1700000000, ?5)",
                rusqlite::params![seq, s.to_string(), name, parent.map(|p: Uuid| p.to_string()), state],
            )
            .unwrap();
        }
        db.execute(
            "INSERT INTO retired (domain_id, uuid) VALUES (1, ?1)",
            [old.to_string()],
        )
        .unwrap();
        db.execute(
            "INSERT INTO journal (domain_id, plan, steps_done) VALUES (1, ?1, 0)",
            [serde_json::to_string(&pending).unwrap()],
        )
        .unwrap();
    }
    let conn = Connection::open(Some(&dir)).unwrap();
    let db = rusqlite::Connection::open(dir.join("snaptree.db")).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION > 1, "expected a migration to have run") };
    let d = conn.open_domain("old").unwrap();
    assert_eq!(d.uuid(), dom);
    // The v1 journal entry was rolled forward and reported.
    assert_eq!(d.recoveries().len(), 1);
    assert_eq!(d.recoveries()[0].plan, pending);
    assert_eq!(d.recoveries()[0].steps_done_before, 0);
    let t = d.cached_tree();
    assert_eq!(Canon::of(t).names(), ["a", "b"]);
    assert_eq!(t.current().unwrap().uuid, b);
    assert_eq!(t.parent(&b).unwrap().uuid, a);
    assert_eq!(t.get(&b).unwrap().state, PowerState::Paused);
    assert_eq!(t.get(&a).unwrap().description, "from v1");
    assert_eq!(t.get(&a).unwrap().creation_date, 1_700_000_000);
    assert!(t.retired().contains(&old));
    // Schema version 3 records where retired data is stored; a version 1 row does not
    // say, so the first open under the lock learned it from the backend (one more commit).
    // The null backend holds no data: the retired uuid is recorded on the base.
    assert_eq!(t.retired_parent(&old), Some(None));
    assert!(t.physical_known());
    assert_eq!(d.generation(), Some(9));
    let db = rusqlite::Connection::open(dir.join("snaptree.db")).unwrap();
    let (parent, known): (Option<String>, i64) = db
        .query_row(
            "SELECT parent_uuid, parent_known FROM retired WHERE uuid = ?1",
            [old.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (parent, known),
        (None, 1),
        "expected the learned place stored"
    );
    assert!(journal_rows(&dir).is_empty());
}

both_stores! {
    fn a_waiting_mutation_is_busy_after_the_timeout_naming_the_domain(dir) {
        let c = fresh(dir, "held");
        c.set_lock_timeout(Duration::from_millis(80));
        let mut d = c.open_domain("held").unwrap();
        // Another handle (in this process) holds the lock.
        let other = snaptree_tests::hold_lock(dir, "held");
        let t = Instant::now();
        let err = d
            .create_snapshot("<domainsnapshot><name>x</name></domainsnapshot>")
            .unwrap_err();
        let waited = t.elapsed();
        assert_eq!(err.code(), ErrorCode::Busy, "{err}");
        assert!(err.to_string().contains("domain 'held'"), "{err}");
        assert!(
            waited >= Duration::from_millis(80) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        // Reads do not need the lock.
        assert!(d.tree().unwrap().is_empty());
        drop(other);
        d.create_snapshot("<domainsnapshot><name>x</name></domainsnapshot>")
            .unwrap();
    }
}

both_stores! {
    fn busy_across_processes_with_the_timeout_from_the_environment(dir) {
        let c = fresh(dir, "vm");
        let d = dir.to_str().unwrap();
        let mut holder = Command::new(WORKER)
            .args(["hold-lock", d, "vm", "3000"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "LOCKED");
        // Opening and reading do not wait for the lock.
        let t = Instant::now();
        let mut reader = c.open_domain("vm").unwrap();
        assert!(reader.tree().unwrap().is_empty());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "open waited {:?}",
            t.elapsed()
        );
        let out = Command::new(WORKER)
            .args(["try-create", d, "vm", "x"])
            .env("SNAPTREE_LOCK_TIMEOUT_MS", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("ERR BUSY") && text.contains("domain 'vm'"),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Both stores tell who holds the lock: PostgreSQL the advisory lock's connection,
        // SQLite the process id the holder keeps in the lock file.
        let holder_name = if snaptree_tests::on_postgres(dir) {
            format!("held by snaptree {}@lock-holder", holder.id())
        } else {
            format!("held by process {} (", holder.id())
        };
        assert!(
            text.contains(&holder_name),
            "expected the BUSY error to say '{holder_name}': {text}"
        );
        let waited: u64 = text
            .split("held it for ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (100..1000).contains(&waited),
            "expected the 100 ms timeout from the environment, waited {waited} ms"
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        // The killed holder's lock died with it.
        let mut dom = c.open_domain("vm").unwrap();
        dom.create_snapshot("<domainsnapshot><name>after</name></domainsnapshot>")
            .unwrap();
    }
}

both_stores! {
    fn a_second_handle_sees_the_first_ones_changes(dir) {
        let c = fresh(dir, "vm");
        let mut one = c.open_domain("vm").unwrap();
        let mut two = c.open_domain("vm").unwrap();
        let a = one
            .create_snapshot("<domainsnapshot><name>a</name></domainsnapshot>")
            .unwrap();
        assert_eq!(two.tree().unwrap().by_name("a").map(|s| s.uuid), Some(a));
        two.rename(&a, "a2").unwrap();
        two.create_snapshot("<domainsnapshot><name>b</name></domainsnapshot>")
            .unwrap();
        let t = one.tree().unwrap();
        assert!(t.by_name("a").is_none());
        assert_eq!(t.current().unwrap().name, "b");
        assert_eq!(t.parent(&t.by_name("b").unwrap().uuid).unwrap().name, "a2");
        assert_eq!(one.generation(), two.generation());
        // A mutation through the stale-looking handle plans on the fresh tree.
        let b = one.cached_tree().by_name("b").unwrap().uuid;
        one.delete(&b, DeleteMode::Discard, &mut NoProgress)
            .unwrap();
        assert_eq!(
            Canon::of(two.tree().unwrap()),
            Canon::of(one.tree().unwrap())
        );
        // A handle of another domain in the same database is not disturbed.
        c.define_domain(&null_domain("other")).unwrap();
        let mut o = c.open_domain("other").unwrap();
        let g = o.generation();
        one.create_snapshot("<domainsnapshot><name>c</name></domainsnapshot>")
            .unwrap();
        assert!(o.tree().unwrap().is_empty());
        assert_eq!(o.generation(), g);
    }
}

both_stores! {
    fn threads_with_their_own_handles_serialize(dir) {
        let c = std::sync::Arc::new(fresh(dir, "vm"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut d = c.open_domain("vm").unwrap();
                    for i in 0..25 {
                        d.create_snapshot(&format!(
                            "<domainsnapshot><name>t{t}-{i}</name></domainsnapshot>"
                        ))
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut d = c.open_domain("vm").unwrap();
        let tree = d.tree().unwrap();
        assert_eq!(tree.len(), 100);
        check_invariants(tree).unwrap();
        assert_eq!(d.generation(), Some(100));
    }
}

both_stores! {
    fn another_process_sees_changes_and_is_seen(dir) {
        let c = fresh(dir, "vm");
        let mut d = c.open_domain("vm").unwrap();
        d.create_snapshot("<domainsnapshot><name>mine</name></domainsnapshot>")
            .unwrap();
        let ds = dir.to_str().unwrap();
        // The child sees this process's commit...
        let out = worker(&["names", ds, "vm"]);
        assert_eq!(out.lines().collect::<Vec<_>>(), ["GEN 1", "mine"]);
        // ...and this handle notices the child's, with no reopen.
        let out = worker(&["create", ds, "vm", "theirs"]);
        assert_eq!(out.trim(), "GEN 2");
        let t = d.tree().unwrap();
        assert_eq!(Canon::of(t).names(), ["mine", "theirs"]);
        assert_eq!(t.current().unwrap().name, "theirs");
        assert_eq!(d.generation(), Some(2));
    }
}

both_stores! {
    fn a_failure_in_step_0_leaves_nothing_journaled_and_the_tree_unchanged(dir) {
        let c = fresh(dir, "vm");
        let switch = FaultSwitch::new();
        let mut d = open_with(
            &c,
            "vm",
            Box::new(FaultyBackend::new(
                Box::new(NullBackend::new()),
                switch.clone(),
            )),
        );
        build_base(&mut d).unwrap();
        let before = Canon::of(d.tree().unwrap());
        let generation = d.generation();
        switch.arm(Fault {
            at_step: 0,
            action: FaultAction::Fail,
            after_step: false,
        });
        let err = d.delete_all(&mut NoProgress).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Backend);
        assert_eq!(switch.fired(), 1);
        assert!(
            journal_rows(dir).is_empty(),
            "expected no journal entry after a failed first step"
        );
        assert_eq!(Canon::of(d.tree().unwrap()), before);
        assert_eq!(d.generation(), generation);
        drop(d);
        let d = c.open_domain("vm").unwrap();
        assert!(d.recoveries().is_empty());
        assert_eq!(Canon::of(d.cached_tree()), before);
    }
}

both_stores! {
    fn a_leftover_journal_entry_is_rolled_forward_on_open_and_reported(dir) {
        let c = fresh(dir, "vm");
        let switch = FaultSwitch::new();
        let mut d = open_with(
            &c,
            "vm",
            Box::new(FaultyBackend::new(
                Box::new(NullBackend::new()),
                switch.clone(),
            )),
        );
        build_base(&mut d).unwrap();
        let b = d.tree().unwrap().require_name("b", "vm").unwrap().uuid;
        let plan = d.plan_delete(&b, DeleteMode::DiscardForce).unwrap();
        assert_eq!(plan.steps.len(), 4);
        switch.arm(Fault {
            at_step: 2,
            action: FaultAction::Fail,
            after_step: false,
        });
        d.delete(&b, DeleteMode::DiscardForce, &mut NoProgress)
            .unwrap_err();
        let rows = journal_rows(dir);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1, 2, "steps 0 and 1 are recorded done");
        drop(d);
        let d = c.open_domain("vm").unwrap();
        assert_eq!(d.recoveries().len(), 1);
        assert_eq!(d.recoveries()[0].plan, plan);
        assert_eq!(d.recoveries()[0].steps_done_before, 2);
        let names = Canon::of(d.cached_tree()).names().join(",");
        assert_eq!(names, "a,f,g,h");
        assert!(journal_rows(dir).is_empty());
    }
}

#[test]
fn a_journal_with_every_step_done_only_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let c = fresh(&dir, "vm");
    let switch = FaultSwitch::new();
    let mut d = open_with(
        &c,
        "vm",
        Box::new(FaultyBackend::new(
            Box::new(NullBackend::new()),
            switch.clone(),
        )),
    );
    build_base(&mut d).unwrap();
    let a = d.tree().unwrap().require_name("a", "vm").unwrap().uuid;
    let plan = d.plan_delete(&a, DeleteMode::ChildrenOnly).unwrap();
    let n = plan.steps.len();
    switch.arm(Fault {
        at_step: n - 1,
        action: FaultAction::Fail,
        after_step: false,
    });
    d.delete(&a, DeleteMode::ChildrenOnly, &mut NoProgress)
        .unwrap_err();
    drop(d);
    // As if the process died right after recording its last step.
    let db = rusqlite::Connection::open(dir.join("snaptree.db")).unwrap();
    db.execute("UPDATE journal SET steps_done = ?1", [n as i64])
        .unwrap();
    let switch = FaultSwitch::new();
    let d = open_with(
        &c,
        "vm",
        Box::new(FaultyBackend::new(
            Box::new(NullBackend::new()),
            switch.clone(),
        )),
    );
    assert_eq!(switch.executed(), 0, "no step is re-run");
    assert_eq!(d.recoveries()[0].steps_done_before, n);
    assert_eq!(Canon::of(d.cached_tree()).names(), ["a", "h"]);
    assert_eq!(d.cached_tree().current().unwrap().name, "a");
}

both_stores! {
    fn a_recovery_that_fails_again_keeps_the_entry_and_names_the_domain(dir) {
        let c = fresh(dir, "vm");
        let switch = FaultSwitch::new();
        let mut d = open_with(
            &c,
            "vm",
            Box::new(FaultyBackend::new(
                Box::new(NullBackend::new()),
                switch.clone(),
            )),
        );
        build_base(&mut d).unwrap();
        switch.arm(Fault {
            at_step: 1,
            action: FaultAction::Fail,
            after_step: false,
        });
        d.delete_all(&mut NoProgress).unwrap_err();
        drop(d);
        switch.arm(Fault {
            at_step: 0,
            action: FaultAction::Fail,
            after_step: false,
        });
        // Opening tries to roll forward; when that fails again the domain still opens, with the
        // operation pending, and the next mutation reports it.
        let mut d = c
            .open_domain_with_backend(
                "vm",
                Box::new(FaultyBackend::new(
                    Box::new(NullBackend::new()),
                    switch.clone(),
                )),
            )
            .unwrap();
        assert_eq!(switch.fired(), 2);
        assert!(d.recoveries().is_empty());
        assert!(d.pending().unwrap().is_some());
        switch.arm(Fault {
            at_step: 0,
            action: FaultAction::Fail,
            after_step: false,
        });
        let err = d
            .create_snapshot("<domainsnapshot><name>z</name></domainsnapshot>")
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Incomplete);
        assert!(
            err.to_string()
                .contains("delete-all on domain 'vm' stopped at step 2 of"),
            "{err}"
        );
        assert!(!d.cached_tree().is_empty(), "nothing committed");
        assert!(
            d.cached_tree().require_name("z", "vm").is_err(),
            "z not made"
        );
        drop(d);
        assert_eq!(journal_rows(dir).len(), 1);
        let d = c.open_domain("vm").unwrap();
        assert_eq!(d.recoveries().len(), 1);
        assert!(d.cached_tree().is_empty());
        assert!(d.cached_tree().retired().is_empty());
    }
}

#[test]
fn storage_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("snaptree.db"),
        b"this is not a database, just some bytes that are long enough....",
    )
    .unwrap();
    let err = Connection::open(Some(&dir)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Storage);
    let text = err.full_message();
    assert!(text.contains("snaptree.db"), "{text}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "expected the SQLite error as the source"
    );
}

both_stores! {
    fn snapshots_keep_their_fields_through_the_store(dir) {
        // A snapshot whose fields all differ from the defaults round-trips through SQL.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let c = fresh(&dir, "vm");
        let mut d = c.open_domain("vm").unwrap();
        let u = d.create_snapshot("<domainsnapshot><name>n 1</name><description>line 1\nline 2 'quoted' \"double\"</description></domainsnapshot>").unwrap();
        let s: Snapshot = d.tree().unwrap().get(&u).unwrap().clone();
        drop(d);
        let d = Connection::open(Some(&snaptree_tests::store_of(&dir)))
            .unwrap()
            .open_domain("vm")
            .unwrap();
        assert_eq!(d.cached_tree().get(&u), Some(&s));
    }
}

both_stores! {
    fn where_retired_data_is_stored_survives_a_reopen(dir) {
        let c = fresh(dir, "vm");
        let mut d = c.open_domain("vm").unwrap();
        let take = |d: &mut snaptree_engine::Domain, name: &str| {
            d.create_snapshot(&format!(
                "<domainsnapshot><name>{name}</name></domainsnapshot>"
            ))
            .unwrap()
        };
        let a = take(&mut d, "a");
        let r = take(&mut d, "r");
        let x = take(&mut d, "x");
        // r retired: x and (through x) the live state are stored on it.
        d.delete(&r, DeleteMode::Retire, &mut NoProgress).unwrap();
        drop(d);
        drop(c);
        let c = Connection::open(Some(&snaptree_tests::store_of(dir))).unwrap();
        let mut d = c.open_domain("vm").unwrap();
        let t = d.tree().unwrap();
        assert_eq!(
            t.retired_parent(&r),
            Some(Some(a)),
            "expected r stored on a"
        );
        assert_eq!(t.on_retired(&x), Some(r), "expected x stored on r");
        assert_eq!(
            t.live_on_retired(),
            None,
            "the live state is on x, the current"
        );
        // After a revert to a, discarding x leaves r idle: the same plan frees it.
        d.revert(&a, None, &mut NoProgress).unwrap();
        let plan = d.delete(&x, DeleteMode::Discard, &mut NoProgress).unwrap();
        assert_eq!(
            plan.steps,
            vec![
                Step::DiscardLeaf { snapshot: x },
                Step::DiscardLeaf { snapshot: r }
            ]
        );
        drop(d);
        let mut d = c.open_domain("vm").unwrap();
        assert!(d.tree().unwrap().retired().is_empty());
    }
}

both_stores! {
    /// A plan that removes every snapshot of a domain empties it in one statement on
    /// SQLite (the rows counted at load, confirmed by the generation check): the other
    /// domains' rows stay, the count stays right across later creates and deletes, and a
    /// delete that leaves some rows removes exactly the ones it names.
    fn removing_every_snapshot_leaves_other_domains_and_later_snapshots_alone(dir) {
        let c = fresh(dir, "vm");
        c.define_domain(&null_domain("other")).unwrap();
        let mut other = c.open_domain("other").unwrap();
        for name in ["o1", "o2", "o3"] {
            other
                .create_snapshot(&format!("<domainsnapshot><name>{name}</name></domainsnapshot>"))
                .unwrap();
        }
        let mut d = c.open_domain("vm").unwrap();
        let create = |d: &mut snaptree_engine::Domain, name: &str| {
            d.create_snapshot(&format!("<domainsnapshot><name>{name}</name></domainsnapshot>"))
                .unwrap()
        };
        for name in ["a", "b", "c"] {
            create(&mut d, name);
        }
        d.delete_all(&mut NoProgress).unwrap();
        assert_eq!(d.tree().unwrap().len(), 0, "delete-all leaves no snapshot");
        let x = create(&mut d, "x");
        create(&mut d, "y");
        d.delete(&x, DeleteMode::DiscardForce, &mut NoProgress).unwrap();
        assert_eq!(d.tree().unwrap().len(), 0, "DISCARD_FORCE of the only root leaves none");
        create(&mut d, "p");
        create(&mut d, "q");
        let r = create(&mut d, "r");
        d.delete(&r, DeleteMode::Discard, &mut NoProgress).unwrap();
        drop(d);
        drop(other);
        // As another process sees it.
        let c = Connection::open(Some(&snaptree_tests::store_of(dir))).unwrap();
        let names = |domain: &str| -> Vec<String> {
            let d = c.open_domain(domain).unwrap();
            d.cached_tree().iter().map(|s| s.name.clone()).collect()
        };
        assert_eq!(names("vm"), ["p", "q"], "vm keeps what the last delete left");
        assert_eq!(names("other"), ["o1", "o2", "o3"], "the other domain is untouched");
    }
}

/// Closing a connection leaves the write-ahead log in place (no checkpoint, no delete: the
/// next command neither recreates it nor syncs its directory) while it is small, and
/// copies it into the database and truncates it once it has grown past 1 MiB, so the next
/// opener reads a short log. Either way another process reads every commit.
#[test]
fn closing_keeps_a_small_log_and_folds_a_large_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wal = dir.join("snaptree.db-wal");
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).ok();
    let names = |dir: &Path| -> usize {
        let c = Connection::open(Some(dir)).unwrap();
        let d = c.open_domain("vm").unwrap();
        d.cached_tree().len()
    };
    {
        let c = fresh(dir, "vm");
        let mut d = c.open_domain("vm").unwrap();
        d.create_snapshot("<domainsnapshot><name>one</name></domainsnapshot>")
            .unwrap();
    }
    let small = wal_len().expect("the log is kept after every connection closed");
    assert!(
        small > 0 && small < 256 << 10,
        "expected a small log left as it was, got {small} bytes"
    );
    assert_eq!(names(dir), 1, "expected the commit read back");
    {
        let c = Connection::open(Some(dir)).unwrap();
        let mut d = c.open_domain("vm").unwrap();
        // Each create adds two or three 2 KiB pages to the log: well past 256 KiB, short
        // of the checkpoint thread's 4000 pages.
        for i in 0..600 {
            d.create_snapshot(&format!(
                "<domainsnapshot><name>s{i}</name></domainsnapshot>"
            ))
            .unwrap();
        }
        let grown = wal_len().unwrap();
        assert!(
            grown >= 256 << 10,
            "expected the log past 256 KiB, got {grown} bytes"
        );
    }
    assert_eq!(
        wal_len(),
        Some(0),
        "expected the large log folded into the database and truncated on close"
    );
    let db_only = rusqlite::Connection::open_with_flags(
        dir.join("snaptree.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let rows: i64 = db_only
        .query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        rows, 601,
        "expected every snapshot in the database after the fold"
    );
    assert_eq!(names(dir), 601, "expected every commit read back");
}

#[test]
fn closing_folds_a_log_past_256_kib() {
    // The next process to open the database reads and checksums the whole log: a log of
    // a few hundred KiB is folded, where 1 MiB used to be the mark.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wal = dir.join("snaptree.db-wal");
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    {
        let c = fresh(dir, "vm");
        let mut d = c.open_domain("vm").unwrap();
        let mut i = 0;
        while wal_len() < 300 << 10 {
            d.create_snapshot(&format!(
                "<domainsnapshot><name>s{i}</name></domainsnapshot>"
            ))
            .unwrap();
            i += 1;
            assert!(i < 2000, "expected the log to grow past 300 KiB");
        }
        let grown = wal_len();
        assert!(
            grown < 1 << 20,
            "expected a log under the old 1 MiB mark, got {grown} bytes"
        );
    }
    assert_eq!(
        wal_len(),
        0,
        "expected a log past 256 KiB folded into the database and truncated on close"
    );
}

/// A SQLite state directory in `dir` holding domain "vm" with snapshots "a" and "b".
fn snapshots_a_and_b(dir: &Path) -> (Connection, snaptree_engine::Domain) {
    let c = Connection::open(Some(dir)).unwrap();
    c.define_domain(&null_domain("vm")).unwrap();
    let mut d = c.open_domain("vm").unwrap();
    for name in ["a", "b"] {
        d.create_snapshot(&format!(
            "<domainsnapshot><name>{name}</name></domainsnapshot>"
        ))
        .unwrap();
    }
    (c, d)
}

both_stores! {
    /// Rows are addressed by the sequence number the handle's tree holds, with the uuid
    /// checked in the same statement (schema version 6 keeps no index by uuid): a stored row
    /// that is not the one the tree expects is never changed, and the commit fails as a bug.
    fn a_commit_never_changes_a_row_its_tree_does_not_expect(dir) {
        let c = fresh(dir, "vm");
        let mut d = c.open_domain("vm").unwrap();
        for name in ["a", "b"] {
            d.create_snapshot(&format!("<domainsnapshot><name>{name}</name></domainsnapshot>"))
                .unwrap();
        }
        let b = d.tree().unwrap().require_name("b", "vm").unwrap().uuid;
        let mut oracle = Oracle::open(dir);
        let rows = |o: &mut Oracle| -> Vec<(String, i64)> {
            const SQL: &str = "SELECT name, seq FROM snapshots ORDER BY name";
            match o {
                Oracle::Sqlite(db) => db
                    .prepare(SQL)
                    .unwrap()
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap(),
                Oracle::Postgres(c) => c
                    .query(SQL, &[])
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect(),
            }
        };
        let before = rows(&mut oracle);
        let (sa, sb) = (before[0].1, before[1].1);
        // Behind the engine's back (no commit, no generation, no change signal): the two
        // rows trade keys.
        let swap = format!(
            "UPDATE snapshots SET seq = -1 WHERE seq = {sa}; \
             UPDATE snapshots SET seq = {sa} WHERE seq = {sb}; \
             UPDATE snapshots SET seq = {sb} WHERE seq = -1;"
        );
        match &mut oracle {
            Oracle::Sqlite(db) => db.execute_batch(&swap).unwrap(),
            Oracle::Postgres(c) => c.batch_execute(&swap).unwrap(),
        }
        let err = d.rename(&b, "renamed").unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::Internal,
            "expected the commit to refuse a row it does not expect: {err}"
        );
        assert!(
            err.full_message().contains(&b.to_string()),
            "expected the error to name snapshot b: {}",
            err.full_message()
        );
        assert_eq!(
            rows(&mut oracle),
            [("a".to_string(), sb), ("b".to_string(), sa)],
            "expected both rows as they were before the failed rename"
        );
    }
}

/// The table no longer refuses a second row of one name or uuid (schema version 6): a
/// database edited by hand into that state is refused by the loader, naming the snapshot.
#[test]
fn a_stored_duplicate_name_or_uuid_is_refused_on_load() {
    for column in ["name", "uuid"] {
        let tmp = tempfile::tempdir().unwrap();
        let (c, d) = snapshots_a_and_b(tmp.path());
        drop(d);
        let db = rusqlite::Connection::open(tmp.path().join("snaptree.db")).unwrap();
        db.execute(
            &format!(
                "UPDATE snapshots SET {column} = (SELECT {column} FROM snapshots WHERE name = 'a') WHERE name = 'b'"
            ),
            [],
        )
        .unwrap();
        let err = c.open_domain("vm").unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::Storage,
            "expected a duplicate {column} refused as inconsistent: {err}"
        );
        assert!(
            err.full_message().contains("inconsistent"),
            "expected the error to say the rows are inconsistent: {}",
            err.full_message()
        );
    }
}

/// A journal entry is read back from the store: one whose edits do not fit the stored tree
/// (here a create of a second snapshot named "a") runs no step and commits nothing. The
/// domain still opens, the entry stays pending, and recovery says why (the table has no
/// unique index that would have refused the row since schema version 6).
#[test]
fn a_journal_entry_that_does_not_fit_the_tree_stays_pending_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, mut d) = snapshots_a_and_b(tmp.path());
    let mut plan = d
        .plan_create("<domainsnapshot><name>c</name></domainsnapshot>")
        .unwrap();
    for edit in &mut plan.edits {
        if let Edit::Add { snapshot, .. } = edit {
            snapshot.name = "a".into();
        }
    }
    drop(d);
    let db = rusqlite::Connection::open(tmp.path().join("snaptree.db")).unwrap();
    db.execute(
        "INSERT INTO journal (domain_id, plan, steps_done) VALUES (1, ?1, 0)",
        [serde_json::to_string(&plan).unwrap()],
    )
    .unwrap();
    let mut d = c
        .open_domain("vm")
        .expect("expected the domain to open with the entry pending");
    assert!(d.pending().unwrap().is_some(), "expected the entry pending");
    let err = d.recover().unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::Incomplete,
        "expected INCOMPLETE: {}",
        err.full_message()
    );
    assert!(
        err.full_message().contains("does not fit"),
        "expected the error to say the entry does not fit: {}",
        err.full_message()
    );
    let count = |table: &str| -> i64 {
        db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("snapshots"), 2, "expected no row added");
    assert_eq!(count("journal"), 1, "expected the entry kept");
    let names: Vec<String> = d.tree().unwrap().iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["a", "b"], "expected the tree as it was");
}

#[test]
fn an_operation_reads_the_journal_only_after_another_handle_changed_the_domain() {
    // Every operation asks whether an interrupted one is pending. While the change signal
    // is where this handle's last look (or its own commit) left it, the answer is known
    // without a read transaction.
    let tmp = tempfile::tempdir().unwrap();
    let c = fresh(tmp.path(), "vm");
    let mut d = c.open_domain("vm").unwrap();
    build_base(&mut d).unwrap();
    let start = journal_reads();
    for i in 0..5 {
        d.create_snapshot(&snaptree_tests::snapshot_xml(&format!("quiet-{i}"), ""))
            .unwrap();
    }
    d.recover().unwrap();
    assert_eq!(
        journal_reads() - start,
        0,
        "expected no journal read while only this handle commits"
    );
    // Another handle commits: the signal moved, so the next operation reads once.
    let mut other = c.open_domain("vm").unwrap();
    other
        .create_snapshot(&snaptree_tests::snapshot_xml("elsewhere", ""))
        .unwrap();
    let start = journal_reads();
    d.create_snapshot(&snaptree_tests::snapshot_xml("after", ""))
        .unwrap();
    d.create_snapshot(&snaptree_tests::snapshot_xml("after-2", ""))
        .unwrap();
    assert_eq!(
        journal_reads() - start,
        1,
        "expected one journal read after another handle's commit, then none"
    );
    assert_eq!(d.tree().unwrap().len(), other.tree().unwrap().len());
}

#[test]
fn a_new_database_has_small_pages_and_an_old_one_keeps_its_own() {
    // A create changes about 150 bytes on two pages, and the write-ahead log holds whole
    // pages: 2 KiB pages write and sync half of what SQLite's default 4 KiB did.
    let page_size = |dir: &Path| -> i64 {
        rusqlite::Connection::open(dir.join("snaptree.db"))
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    };
    let base_in = |dir: &Path| {
        let c = fresh(dir, "vm");
        build_base(&mut c.open_domain("vm").unwrap()).unwrap();
    };
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    base_in(&new);
    assert_eq!(
        page_size(&new),
        2048,
        "expected a new database with 2 KiB pages"
    );

    // A database made with 4 KiB pages (as before) is used as it is, not rebuilt.
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    rusqlite::Connection::open(old.join("snaptree.db"))
        .unwrap()
        .execute_batch(
            "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; CREATE TABLE placeholder (x);",
        )
        .unwrap();
    base_in(&old);
    assert_eq!(
        page_size(&old),
        4096,
        "expected the old database's page size kept"
    );
    let c = Connection::open(Some(&old)).unwrap();
    let d = c.open_domain("vm").unwrap();
    let reopened = Canon::of(d.cached_tree()).without_dates();
    let c = Connection::open(Some(&new)).unwrap();
    let d = c.open_domain("vm").unwrap();
    assert_eq!(
        reopened,
        Canon::of(d.cached_tree()).without_dates(),
        "expected the same tree from both page sizes"
    );
}
