//! Several hosts on one PostgreSQL store (SEMANTICS.md §7.6): a host SIGKILLed while it
//! holds a domain's lock mid-plan, with data on the C sim backend; PostgreSQL stopped and
//! restarted in the middle of a sequence.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use snaptree_engine::testing::STALL_MARKER;
use snaptree_engine::{ContentRef, Domain, ErrorCode, Uuid};
use snaptree_tests::pg_rig::PgRig;
use snaptree_tests::{
    Canon, build_base, journal_rows, redirect_file, run_op_without_writes, sim_connection,
};

const WORKER: &str = env!("CARGO_BIN_EXE_store-worker");

/// A host: its own state directory, redirected to the shared database.
fn host(root: &Path, name: &str, uri: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(redirect_file(&dir), uri).unwrap();
    dir
}

/// Every snapshot's content digest and the live one, by snapshot name ("" = live).
fn contents_by_name(d: &mut Domain) -> BTreeMap<String, String> {
    let named: Vec<(Uuid, String)> = d
        .tree()
        .unwrap()
        .iter()
        .map(|s| (s.uuid, s.name.clone()))
        .collect();
    let hooks = d.backend().test_hooks().expect("the sim has test hooks");
    let mut out = BTreeMap::new();
    out.insert(
        String::new(),
        hooks.content_digest(ContentRef::Live).unwrap(),
    );
    for (u, name) in named {
        out.insert(name, hooks.content_digest(ContentRef::Snapshot(u)).unwrap());
    }
    out
}

/// The base tree on the C sim in `layers`, defined through host `dir`.
fn build(dir: &Path, layers: &Path) {
    let c = sim_connection(dir);
    c.define_domain(&snaptree_backend_sim::domain_xml("vm", layers))
        .unwrap();
    let mut d = c.open_domain("vm").unwrap();
    build_base(&mut d).unwrap();
    d.check_agreement().unwrap();
}

#[test]
fn a_host_killed_holding_the_lock_mid_plan_is_finished_by_another_host_with_its_data() {
    let Some(rig) = PgRig::shared("a host killed holding the lock") else {
        return;
    };
    let op = "delete-discard-force:b";
    let tmp = tempfile::tempdir().unwrap();
    // The expected state: the same base and operation, run healthily on its own database
    // and layer directory.
    let reference = host(tmp.path(), "reference", &rig.fresh_db());
    build(&reference, &tmp.path().join("ref-layers"));
    let (want_tree, want_content) = {
        let c = sim_connection(&reference);
        let mut d = c.open_domain("vm").unwrap();
        run_op_without_writes(&mut d, op).unwrap();
        (
            Canon::of(d.tree().unwrap()).without_dates(),
            contents_by_name(&mut d),
        )
    };

    let uri = rig.fresh_db();
    let layers = tmp.path().join("layers"); // the shared storage every host reaches
    let a = host(tmp.path(), "host-a", &uri);
    let b = host(tmp.path(), "host-b", &uri);
    build(&a, &layers);
    let before = {
        let c = sim_connection(&a);
        let mut d = c.open_domain("vm").unwrap();
        (
            Canon::of(d.tree().unwrap()).without_dates(),
            contents_by_name(&mut d),
        )
    };
    assert_ne!(before.0, want_tree, "the operation changes the tree");

    // Host A runs the operation and stalls after its step 1 ran, holding the lock.
    let mut child = Command::new(WORKER)
        .args(["crash-sim", a.to_str().unwrap(), "vm", op, "1", "1"])
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), STALL_MARKER, "host A did not stall mid-plan");
    assert_eq!(
        journal_rows(&a).len(),
        1,
        "the plan is journaled in PostgreSQL"
    );

    // Host B: reads work, the lock is held (BUSY after the timeout).
    let c = sim_connection(&b);
    c.set_lock_timeout(Duration::from_millis(150));
    let mut d = c.open_domain("vm").unwrap();
    assert!(
        d.recoveries().is_empty(),
        "the open could not take the lock"
    );
    assert_eq!(Canon::of(d.tree().unwrap()).without_dates(), before.0);
    let err = d.recover().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Busy, "{err}");

    // Host A dies: PostgreSQL ends its session and its advisory lock with it (once it
    // notices the closed connection: the open below takes the lock only if it is free).
    child.kill().unwrap();
    child.wait().unwrap();
    snaptree_tests::wait_for_sessions_of_dead(&a, child.id());
    c.set_lock_timeout(Duration::from_secs(10));
    let mut d = c.open_domain("vm").unwrap();
    assert_eq!(
        d.recoveries().len(),
        1,
        "host B rolled host A's plan forward"
    );
    assert_eq!(d.recoveries()[0].steps_done_before, 1);
    assert!(journal_rows(&b).is_empty());
    d.check_agreement().unwrap();
    assert_eq!(Canon::of(d.tree().unwrap()).without_dates(), want_tree);
    assert_eq!(contents_by_name(&mut d), want_content);
    // Survivors kept their content exactly (DISCARD), the live state too.
    for (name, digest) in &want_content {
        assert_eq!(before.1.get(name), Some(digest), "content of '{name}'");
    }
}

#[test]
fn postgresql_stopped_mid_sequence_gives_clear_errors_loses_nothing_and_work_resumes() {
    let Some(mut rig) = PgRig::start("PostgreSQL restarted mid-sequence") else {
        return;
    };
    let uri = rig.fresh_db();
    let tmp = tempfile::tempdir().unwrap();
    let dir = host(tmp.path(), "host", &uri);
    let c = snaptree_tests::fresh(&dir, "vm");
    let mut d = c.open_domain("vm").unwrap();
    for i in 0..5 {
        d.create_snapshot(&format!(
            "<domainsnapshot><name>s{i}</name></domainsnapshot>"
        ))
        .unwrap();
    }
    let before = Canon::of(d.tree().unwrap()).without_dates();
    rig.stop();
    // Every call is STORAGE naming the store; nothing is half-written.
    let err = d
        .create_snapshot("<domainsnapshot><name>lost</name></domainsnapshot>")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Storage, "{err}");
    let text = err.full_message();
    assert!(text.contains("postgresql://postgres@/"), "{text}");
    let err = c.list_domains().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Storage, "{err}");
    let err = d.tree().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Storage, "{err}");
    rig.start_server().unwrap();
    // The same handle and connection reconnect; the five snapshots are there, "lost" not.
    assert_eq!(Canon::of(d.tree().unwrap()).without_dates(), before);
    d.create_snapshot("<domainsnapshot><name>after</name></domainsnapshot>")
        .unwrap();
    assert_eq!(c.list_domains().unwrap().len(), 1);
    let mut again = c.open_domain("vm").unwrap();
    let names = Canon::of(again.tree().unwrap()).names().join(",");
    assert_eq!(names, "s0,s1,s2,s3,s4,after");
}

/// The columns of every table, as the database itself reports them.
fn pg_columns(c: &mut postgres::Client) -> Vec<(String, String)> {
    c.query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> 'snaptree_schema' \
         ORDER BY table_name, ordinal_position",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn sqlite_columns(db: &rusqlite::Connection) -> Vec<(String, String)> {
    let mut st = db
        .prepare(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn one_schema_description_builds_the_same_tables_on_both_stores_and_migrates_old_ones() {
    let Some(rig) = PgRig::shared("schema migrations on PostgreSQL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    drop(snaptree_engine::Connection::open(Some(&dir)).unwrap());
    let sqlite = sqlite_columns(&rusqlite::Connection::open(dir.join("snaptree.db")).unwrap());
    assert!(sqlite.len() > 20, "{sqlite:?}");
    // From nothing.
    let uri = rig.fresh_db();
    drop(snaptree_engine::Connection::open(Some(std::path::Path::new(&uri))).unwrap());
    let db = uri
        .split("@/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let mut c = rig.client(&db);
    assert_eq!(pg_columns(&mut c), sqlite);
    let v: i64 = c
        .query_one("SELECT version FROM snaptree_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, snaptree_engine::store::SCHEMA_VERSION);
    // From version 1, with a journaled plan from then: migrated on open, every step once.
    let uri = rig.fresh_db();
    let db = uri
        .split("@/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let mut c = rig.client(&db);
    let v1 = snaptree_engine::store::render(
        snaptree_engine::store::MIGRATIONS[0],
        snaptree_engine::store::Dialect::Postgres,
    );
    c.batch_execute(&v1).unwrap();
    c.batch_execute(
        "CREATE TABLE snaptree_schema (version BIGINT NOT NULL); \
         INSERT INTO snaptree_schema VALUES (1); \
         INSERT INTO domains (uuid, name, type, xml) VALUES \
         ('9d6c2a47-3b8e-4a59-9a53-5b5e8a1f0001', 'old', 'null', '<domain type=''null''><name>old</name></domain>')",
    )
    .unwrap();
    let conn = snaptree_engine::Connection::open(Some(std::path::Path::new(&uri))).unwrap();
    assert_eq!(pg_columns(&mut c), sqlite);
    let mut d = conn.open_domain("old").unwrap();
    d.create_snapshot("<domainsnapshot><name>s</name></domainsnapshot>")
        .unwrap();
    // A newer schema than this snaptree knows is refused, naming the store.
    c.execute("UPDATE snaptree_schema SET version = 99", &[])
        .unwrap();
    let err = snaptree_engine::Connection::open(Some(std::path::Path::new(&uri))).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Storage);
    assert!(err.to_string().contains("newer"), "{err}");
}

/// A backend that, at step `at`, ends every snaptree connection to the database (as a
/// network cut or a server-side kill would) and then runs the step.
struct CutConnectionsAt {
    inner: Box<dyn snaptree_engine::Backend>,
    at: usize,
    seen: usize,
    admin: postgres::Client,
}

impl snaptree_engine::Backend for CutConnectionsAt {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> snaptree_engine::Capabilities {
        self.inner.capabilities()
    }
    fn is_metadata_only(&self) -> bool {
        self.inner.is_metadata_only()
    }
    fn power_state(&mut self) -> snaptree_engine::Result<snaptree_engine::PowerState> {
        self.inner.power_state()
    }
    fn execute(
        &mut self,
        step: &snaptree_engine::Step,
        progress: &mut dyn snaptree_engine::Progress,
    ) -> snaptree_engine::Result<()> {
        if self.seen == self.at {
            let cut = self
                .admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name LIKE 'snaptree %' AND datname = current_database()",
                    &[],
                )
                .unwrap();
            assert!(!cut.is_empty(), "expected snaptree connections to cut");
        }
        self.seen += 1;
        self.inner.execute(step, progress)
    }
    fn list_physical(&mut self) -> snaptree_engine::Result<snaptree_engine::PhysicalTree> {
        self.inner.list_physical()
    }
}

#[test]
fn a_connection_lost_mid_plan_is_incomplete_and_the_next_open_finishes_it() {
    use snaptree_check::SimBackend;
    use snaptree_engine::testing::SharedBackend;
    let Some(rig) = PgRig::shared("a connection lost mid-plan") else {
        return;
    };
    let op = "delete-all";
    let tmp = tempfile::tempdir().unwrap();
    let base = |name: &str| {
        let dir = host(tmp.path(), name, &rig.fresh_db());
        let c = snaptree_tests::fresh(&dir, "vm");
        let sim = SharedBackend::new(Box::new(SimBackend::new()));
        let mut d = snaptree_tests::open_with(&c, "vm", Box::new(sim.clone()));
        build_base(&mut d).unwrap();
        (dir, c, sim)
    };
    let (_, rc, rsim) = base("reference");
    let want = {
        let mut d = snaptree_tests::open_with(&rc, "vm", Box::new(rsim.clone()));
        snaptree_tests::run_op(&mut d, op).unwrap();
        Canon::of(d.tree().unwrap()).without_dates()
    };
    let (dir, c, sim) = base("host");
    let uri = std::fs::read_to_string(redirect_file(&dir)).unwrap();
    let before = {
        let mut d = snaptree_tests::open_with(&c, "vm", Box::new(sim.clone()));
        Canon::of(d.tree().unwrap()).without_dates()
    };
    let admin = postgres::Client::connect(&uri, postgres::NoTls).unwrap();
    let mut d = snaptree_tests::open_with(
        &c,
        "vm",
        Box::new(CutConnectionsAt {
            inner: Box::new(sim.clone()),
            at: 2,
            seen: 0,
            admin,
        }),
    );
    let err = snaptree_tests::run_op(&mut d, op).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Incomplete, "{}", err.full_message());
    assert!(
        err.full_message().contains("postgresql://"),
        "{}",
        err.full_message()
    );
    // Reads (reconnecting) show the state before; the plan waits in the journal.
    assert_eq!(Canon::of(d.tree().unwrap()).without_dates(), before);
    assert_eq!(journal_rows(&dir).len(), 1);
    drop(d);
    // The next open (on the same connection object, which reconnects) finishes it.
    let mut d = snaptree_tests::open_with(&c, "vm", Box::new(sim.clone()));
    assert_eq!(d.recoveries().len(), 1);
    assert!(journal_rows(&dir).is_empty());
    d.check_agreement().unwrap();
    assert_eq!(Canon::of(d.tree().unwrap()).without_dates(), want);
}

/// Every snaptree connection names its process and host in `pg_stat_activity`
/// (`snaptree PID@HOST`), so the holders query of docs/fleet.md says which host holds a
/// domain's lock.
#[test]
fn a_connection_names_its_process_and_host_to_postgresql() {
    let Some(rig) = PgRig::shared("application name") else {
        return;
    };
    let uri = rig.fresh_db();
    let conn = snaptree_engine::Connection::open(Some(Path::new(&uri))).unwrap();
    conn.define_domain("<domain type='null'><name>vm</name></domain>")
        .unwrap();
    let mut d = conn.open_domain("vm").unwrap();
    d.create_snapshot("<domainsnapshot><name>a</name></domainsnapshot>")
        .unwrap();
    let host = std::env::var("SNAPTREE_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
                .to_string()
        });
    let want = format!("snaptree {}@{host}", std::process::id());
    let mut admin = postgres::Client::connect(&uri, postgres::NoTls).unwrap();
    let names: Vec<String> = admin
        .query(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'snaptree %'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == &want[..want.len().min(63)]),
        "expected every snaptree connection named {want:?}, got {names:?}"
    );
}
