//! Shared helpers of snaptree's integration tests: a canonical form of a tree to compare
//! states exactly, the invariants of SEMANTICS.md §3.1-2, a base tree that exercises every
//! delete mode with multi-step plans, and the operations the crash tests run. [`skip`] is
//! how any crate's test that cannot run here (a missing tool) says so, or fails under CI;
//! [`rig`] starts a real `qemu-system-x86_64` for the QEMU crates' live tests,
//! [`libvirt_rig`] a private libvirtd for the libvirt backend's, [`vcsim`] VMware's
//! simulator for the ESX backend's, and [`lock::LockHolder`] holds an image's lock as a
//! running VM would. Every rig lives here, in this dev-only crate, and none in a backend.

pub mod libvirt_rig;
pub mod lock;
pub mod pg_rig;
pub mod rig;
pub mod skip;
pub mod vcsim;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use snaptree_engine::testing::SharedBackend;
use snaptree_engine::{
    Backend, Connection, ContentRef, DeleteMode, Domain, Error, NoProgress, Plan, PowerState,
    Result, SnapshotTree, Uuid,
};

/// One snapshot as the canonical form shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonSnapshot {
    /// uuid.
    pub uuid: Uuid,
    /// name.
    pub name: String,
    /// parent's uuid.
    pub parent: Option<Uuid>,
    /// description.
    pub description: String,
    /// creation date (Unix seconds); zeroed by [`Canon::without_dates`].
    pub creation_date: i64,
    /// state.
    pub state: PowerState,
    /// children's uuids, in the tree's sibling order.
    pub children: Vec<Uuid>,
}

/// Everything observable about a tree, in a form `==` compares exactly: snapshots in
/// creation order (with their children in sibling order), current, retired uuids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canon {
    /// Snapshots in creation order.
    pub snapshots: Vec<CanonSnapshot>,
    /// current.
    pub current: Option<Uuid>,
    /// retired uuids.
    pub retired: BTreeSet<Uuid>,
}

impl Canon {
    /// The canonical form of a tree.
    pub fn of(tree: &SnapshotTree) -> Canon {
        Canon {
            snapshots: tree
                .iter()
                .map(|s| CanonSnapshot {
                    uuid: s.uuid,
                    name: s.name.clone(),
                    parent: tree.parent(&s.uuid).map(|p| p.uuid),
                    description: s.description.clone(),
                    creation_date: s.creation_date,
                    state: s.state,
                    children: tree.children(&s.uuid).iter().map(|c| c.uuid).collect(),
                })
                .collect(),
            current: tree.current().map(|c| c.uuid),
            retired: tree.retired().clone(),
        }
    }

    /// The same with every creation date zeroed (for states built in different seconds).
    pub fn without_dates(mut self) -> Canon {
        for s in &mut self.snapshots {
            s.creation_date = 0;
        }
        self
    }

    /// Names, in creation order.
    pub fn names(&self) -> Vec<&str> {
        self.snapshots.iter().map(|s| s.name.as_str()).collect()
    }
}

/// Checks SEMANTICS.md §3 invariants 1 and 2 on a tree, independently of how the tree
/// maintains them: a forest (every parent exists, no cycle), current valid, names and
/// uuids unique, every child listed under its parent.
pub fn check_invariants(tree: &SnapshotTree) -> std::result::Result<(), String> {
    let mut names = BTreeSet::new();
    let mut uuids = BTreeSet::new();
    let n = tree.len();
    let mut count = 0;
    for s in tree.iter() {
        count += 1;
        if !names.insert(s.name.clone()) {
            return Err(format!("name '{}' twice", s.name));
        }
        if !uuids.insert(s.uuid) {
            return Err(format!("uuid {} twice", s.uuid));
        }
        snaptree_engine::name::validate_name("snapshot", &s.name).map_err(|e| e.to_string())?;
        let mut at = s.uuid;
        let mut hops = 0;
        while let Some(p) = tree.parent(&at) {
            if !tree.contains(&p.uuid) {
                return Err(format!("parent {} of {} missing", p.uuid, at));
            }
            if !tree.children(&p.uuid).iter().any(|c| c.uuid == at) {
                return Err(format!(
                    "{at} is not listed among the children of its parent {}",
                    p.uuid
                ));
            }
            at = p.uuid;
            hops += 1;
            if hops > n {
                return Err(format!("cycle above {}", s.uuid));
            }
        }
    }
    if count != n {
        return Err(format!("iter() gave {count} snapshots, len() says {n}"));
    }
    if let Some(c) = tree.current()
        && !tree.contains(&c.uuid)
    {
        return Err(format!("current {} is not a snapshot", c.uuid));
    }
    for r in tree.retired() {
        if tree.contains(r) {
            return Err(format!("retired {r} is still in the tree"));
        }
    }
    Ok(())
}

/// Whether this process holds an open descriptor on the removed file `path` (as the kernel
/// names it: give a canonical path).
pub fn holds_removed(path: &Path) -> bool {
    let removed = format!("{} (deleted)", path.display());
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd lists this process's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| target.to_string_lossy() == removed)
}

/// A fixed uuid per base-tree name, so that separately built copies are identical.
pub fn fixed_uuid(name: &str) -> Uuid {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in name.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    uuid::Builder::from_random_bytes(h.to_le_bytes()).into_uuid()
}

/// The XML of a domain on the null backend.
pub fn null_domain(name: &str) -> String {
    format!("<domain type='null'><name>{name}</name></domain>")
}

/// A snapshot document naming `name`, with a uuid derived from the name.
pub fn snapshot_xml(name: &str, description: &str) -> String {
    format!(
        "<domainsnapshot><name>{name}</name><uuid>{}</uuid><description>{description}</description></domainsnapshot>",
        fixed_uuid(name)
    )
}

/// Writes guest data into the live state when the backend has test hooks (the simulator).
fn write_guest(d: &mut Domain, seed: u64) -> Result<()> {
    if let Some(h) = d.backend().test_hooks() {
        h.write_guest(seed)?;
    }
    Ok(())
}

/// Builds the base tree every crash test starts from, on an open domain:
///
/// ```text
/// a ── b ── c ── d      (current: d, live state written since)
/// │    └── e
/// └── f ── g
/// h
/// retired: r0 (a and h were its children)
/// ```
///
/// so that DISCARD_FORCE, MERGE_FORCE, CHILDREN_ONLY and delete-all have plans of several
/// steps, states and descriptions vary, and a retired uuid exists.
pub fn build_base(d: &mut Domain) -> Result<()> {
    let mut seed = 1;
    let mut create = |d: &mut Domain, name: &str| -> Result<()> {
        write_guest(d, seed)?;
        seed += 1;
        d.create_snapshot(&snapshot_xml(name, &format!("snapshot {name}")))?;
        Ok(())
    };
    let by = |d: &mut Domain, name: &str| -> Result<Uuid> {
        Ok(d.tree()?.require_name(name, "test")?.uuid)
    };
    create(d, "r0")?;
    create(d, "a")?;
    create(d, "b")?;
    create(d, "c")?;
    // Later snapshots record a running domain.
    let c = by(d, "c")?;
    d.revert(&c, Some(PowerState::Running), &mut NoProgress)?;
    create(d, "d")?;
    let b = by(d, "b")?;
    d.revert(&b, None, &mut NoProgress)?;
    create(d, "e")?;
    let a = by(d, "a")?;
    d.revert(&a, Some(PowerState::Paused), &mut NoProgress)?;
    create(d, "f")?;
    create(d, "g")?;
    let r0 = by(d, "r0")?;
    d.revert(&r0, None, &mut NoProgress)?;
    create(d, "h")?;
    let dd = by(d, "d")?;
    d.revert(&dd, None, &mut NoProgress)?;
    write_guest(d, 99)?;
    d.delete(&r0, DeleteMode::Retire, &mut NoProgress)?;
    Ok(())
}

/// The operations of the crash tests, by name; [`run_op`] runs one.
pub const OPS: &[&str] = &[
    "create",
    "revert:b",
    "revert-running:e",
    "rename:c",
    "delete-retire:c",
    "delete-discard:e",
    "delete-discard-force:b",
    "delete-merge:g",
    "delete-merge-force:c",
    "delete-consolidate:b",
    "delete-children-only:a",
    "delete-all",
];

/// Runs operation `op` (one of [`OPS`]) on a domain built by [`build_base`]; returns its
/// plan (for create, a plan of one step and no edits, as only the step count is used).
pub fn run_op(d: &mut Domain, op: &str) -> Result<Plan> {
    let (kind, target) = op.split_once(':').unwrap_or((op, ""));
    let uuid =
        |d: &mut Domain| -> Result<Uuid> { Ok(d.tree()?.require_name(target, "test")?.uuid) };
    let mode = |m: &str| -> DeleteMode {
        match m {
            "delete-retire" => DeleteMode::Retire,
            "delete-discard" => DeleteMode::Discard,
            "delete-discard-force" => DeleteMode::DiscardForce,
            "delete-merge" => DeleteMode::Merge,
            "delete-merge-force" => DeleteMode::MergeForce,
            "delete-consolidate" => DeleteMode::Consolidate,
            "delete-children-only" => DeleteMode::ChildrenOnly,
            other => panic!("unknown op {other}"),
        }
    };
    match kind {
        "create" => {
            write_guest(d, 1234)?;
            d.create_snapshot(&snapshot_xml("new", "made by the operation under test"))?;
            Ok(Plan {
                operation: snaptree_engine::Operation::Create { name: "new".into() },
                steps: vec![],
                edits: vec![],
            })
        }
        "revert" => {
            let u = uuid(d)?;
            d.revert(&u, None, &mut NoProgress)
        }
        "revert-running" => {
            let u = uuid(d)?;
            d.revert(&u, Some(PowerState::Running), &mut NoProgress)
        }
        "rename" => {
            let u = uuid(d)?;
            d.rename(&u, &format!("{target}-renamed"))
        }
        "delete-all" => d.delete_all(&mut NoProgress),
        m => {
            let u = uuid(d)?;
            d.delete(&u, mode(m), &mut NoProgress)
        }
    }
}

/// How many physical steps the plan of `op` has on the base tree (planned, not run).
pub fn steps_of(d: &mut Domain, op: &str) -> Result<usize> {
    let (kind, target) = op.split_once(':').unwrap_or((op, ""));
    let uuid = d.tree()?.by_name(target).map(|s| s.uuid);
    let need = || uuid.ok_or_else(|| Error::NoSnapshot(target.to_string()));
    let plan = match kind {
        "create" => d.plan_create("<domainsnapshot><name>new</name></domainsnapshot>")?,
        "revert" => d.plan_revert(&need()?, None)?,
        "revert-running" => d.plan_revert(&need()?, Some(PowerState::Running))?,
        "rename" => d.plan_rename(&need()?, "x")?,
        "delete-all" => d.plan_delete_all()?,
        _ => {
            let m = match kind {
                "delete-retire" => DeleteMode::Retire,
                "delete-discard" => DeleteMode::Discard,
                "delete-discard-force" => DeleteMode::DiscardForce,
                "delete-merge" => DeleteMode::Merge,
                "delete-merge-force" => DeleteMode::MergeForce,
                "delete-consolidate" => DeleteMode::Consolidate,
                _ => DeleteMode::ChildrenOnly,
            };
            d.plan_delete(&need()?, m)?
        }
    };
    Ok(plan.steps.len())
}

// ---- one test source, both stores ----

/// The file beside a test's state directory that redirects its store to PostgreSQL: it
/// holds the URI ([`both_stores!`] writes it). Without it the state directory's SQLite
/// database is the store. Every helper and worker opens stores through [`store_of`], so
/// one test body runs on either.
pub fn redirect_file(dir: &Path) -> PathBuf {
    let mut p = dir.as_os_str().to_owned();
    p.push(".store");
    PathBuf::from(p)
}

/// The store of a test's state directory: its PostgreSQL URI if redirected, else the
/// directory itself.
pub fn store_of(dir: &Path) -> PathBuf {
    match std::fs::read_to_string(redirect_file(dir)) {
        Ok(uri) => PathBuf::from(uri.trim()),
        Err(_) => dir.to_path_buf(),
    }
}

/// Prepares `new` as a state directory whose store is like `like`'s: nothing to do on
/// SQLite (the directory is its own store); on PostgreSQL, a fresh database on the same
/// server, redirected to.
pub fn store_like(like: &Path, new: &Path) {
    if !on_postgres(like) {
        return;
    }
    let uri = store_of(like).to_string_lossy().into_owned();
    let (head, rest) = uri.split_once("@/").expect("a rig URI");
    let (_, query) = rest.split_once('?').expect("a rig URI");
    let n = NEXT_STORE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let db = format!("s{}_{n}", std::process::id());
    let mut c = postgres::Client::connect(&format!("{head}@/postgres?{query}"), postgres::NoTls)
        .expect("connect to the rig");
    c.batch_execute(&format!("CREATE DATABASE {db}"))
        .expect("create a database");
    std::fs::create_dir_all(new).expect("create the state directory");
    std::fs::write(redirect_file(new), format!("{head}@/{db}?{query}")).expect("redirect");
}

static NEXT_STORE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Reads a test's store by plain SQL, sharing no code with the engine: the oracle that
/// handles are compared with.
pub enum Oracle {
    /// The state directory's SQLite database.
    Sqlite(rusqlite::Connection),
    /// The PostgreSQL database.
    Postgres(Box<postgres::Client>),
}

impl std::fmt::Debug for Oracle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Oracle")
    }
}

impl Oracle {
    /// Connects to the store of a test's state directory.
    pub fn open(dir: &Path) -> Oracle {
        if on_postgres(dir) {
            let uri = store_of(dir);
            return Oracle::Postgres(Box::new(
                postgres::Client::connect(&uri.to_string_lossy(), postgres::NoTls)
                    .expect("connect to the test's database"),
            ));
        }
        let db = rusqlite::Connection::open(dir.join("snaptree.db")).expect("open db");
        db.busy_timeout(std::time::Duration::from_secs(30))
            .expect("busy timeout");
        Oracle::Sqlite(db)
    }

    /// (generation, number of snapshots) of `domain` as committed now, in one read.
    pub fn generation_and_count(&mut self, domain: &str) -> (u64, usize) {
        const SQL: &str = "SELECT generation, (SELECT count(*) FROM snapshots s WHERE s.domain_id = d.id) \
                           FROM domains d WHERE name = ";
        match self {
            Oracle::Sqlite(db) => db
                .query_row(&format!("{SQL}?1"), [domain], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as usize))
                })
                .expect("read the domain"),
            Oracle::Postgres(c) => {
                let r = c
                    .query_one(&format!("{SQL}$1"), &[&domain])
                    .expect("read the domain");
                (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as usize)
            }
        }
    }
}

/// True when the test's store is PostgreSQL.
pub fn on_postgres(dir: &Path) -> bool {
    redirect_file(dir).exists()
}

/// Opens the store of a test's state directory ([`store_of`]).
pub fn connect(dir: &Path) -> Connection {
    Connection::open(Some(&store_of(dir)))
        .unwrap_or_else(|e| panic!("open the store of {}: {}", dir.display(), e.full_message()))
}

/// Runs each test body twice, as `NAME::sqlite` (a state directory) and `NAME::postgres`
/// (a fresh database on the shared [`pg_rig::PgRig`], reached through the redirect file):
/// `both_stores! { fn name(dir) { ... } }`, `dir` being the state directory (`&Path`).
#[macro_export]
macro_rules! both_stores {
    ($( $(#[$meta:meta])* fn $name:ident($dir:ident) $body:block )*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn body($dir: &std::path::Path) $body
                #[test]
                fn sqlite() {
                    let tmp = tempfile::tempdir().unwrap();
                    body(&tmp.path().join("state"));
                }
                #[test]
                fn postgres() {
                    let Some(rig) = $crate::pg_rig::PgRig::shared(concat!(stringify!($name), " on PostgreSQL")) else {
                        return;
                    };
                    let tmp = tempfile::tempdir().unwrap();
                    let dir = tmp.path().join("state");
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write($crate::redirect_file(&dir), rig.fresh_db()).unwrap();
                    body(&dir);
                }
            }
        )*
    };
}

/// A domain's lock held from outside the engine's handles, the way another process or host
/// would: the lock file (SQLite) or the advisory lock `(0x736e6170, domain id)` on a
/// connection of its own (PostgreSQL). Released when dropped.
pub enum HeldLock {
    /// The lock file, held.
    File(snaptree_engine::store::DomainLock),
    /// The connection holding the advisory lock.
    Postgres(Box<postgres::Client>),
}

impl std::fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeldLock::File(_) => "HeldLock::File",
            HeldLock::Postgres(_) => "HeldLock::Postgres",
        })
    }
}

/// A client of the test's PostgreSQL store, under application name `name`.
fn pg_client(dir: &Path, name: &str) -> postgres::Client {
    let mut config: postgres::Config = store_of(dir)
        .to_string_lossy()
        .parse()
        .expect("the test's database URI");
    config.application_name(name);
    config
        .connect(postgres::NoTls)
        .expect("connect to the test's database")
}

/// After process `pid` was killed: on PostgreSQL, waits (up to 30 s) until the server has
/// ended that process's sessions, so what it had in flight (a commit, the domain's
/// advisory lock) is settled before the test looks: SQLite's file locks and commits are
/// settled when the kernel reaps the process, PostgreSQL's when the server notices the
/// closed connection, which under load takes a moment. No-op on SQLite.
pub fn wait_for_sessions_of_dead(dir: &Path, pid: u32) {
    if !on_postgres(dir) {
        return;
    }
    let mut c = pg_client(dir, "snaptree-tests");
    let pattern = format!("snaptree {pid}@%");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
                &[&pattern],
            )
            .expect("query pg_stat_activity")
            .get(0);
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected PostgreSQL to end the sessions of killed process {pid} within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Takes `domain`'s lock in the test's store (waiting up to 30 s).
pub fn hold_lock(dir: &Path, domain: &str) -> HeldLock {
    let conn = connect(dir);
    let info = conn.lookup_domain(domain).expect("the domain to lock");
    if on_postgres(dir) {
        // Named as snaptree names its connections, so a BUSY error can name this holder.
        let mut c = pg_client(dir, &format!("snaptree {}@lock-holder", std::process::id()));
        let id: i64 = c
            .query_one("SELECT id FROM domains WHERE name = $1", &[&domain])
            .expect("the domain's row")
            .get(0);
        c.execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&0x736e_6170_i32, &(id as i32)],
        )
        .expect("the advisory lock");
        return HeldLock::Postgres(Box::new(c));
    }
    let mut lock = snaptree_engine::store::DomainLock::open(
        dir,
        &info.uuid,
        &info.name,
        std::time::Duration::from_secs(30),
    )
    .expect("open the lock file");
    lock.acquire().expect("take the lock");
    HeldLock::File(lock)
}

/// Opens (creating) a state directory and defines `domain` on the null backend.
pub fn fresh(dir: &Path, domain: &str) -> Connection {
    let c = connect(dir);
    c.define_domain(&null_domain(domain)).expect("define");
    c
}

/// Opens `domain` with a backend of the caller's.
pub fn open_with(c: &Connection, domain: &str, backend: Box<dyn Backend>) -> Domain {
    c.open_domain_with_backend(domain, backend)
        .expect("open domain")
}

/// The journal rows of a state directory's store, read with SQL: (domain id, steps_done).
pub fn journal_rows(dir: &Path) -> Vec<(i64, i64)> {
    if on_postgres(dir) {
        let mut c = pg_client(dir, "snaptree-tests");
        return c
            .query("SELECT domain_id, steps_done FROM journal", &[])
            .expect("query")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    }
    let db = rusqlite::Connection::open(dir.join("snaptree.db")).expect("open db");
    let mut st = db
        .prepare("SELECT domain_id, steps_done FROM journal")
        .expect("prepare");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

// ---- the C sim plugin (crash tests with data across processes) ----

/// The C sim plugin this build produced (`snaptree_backend_sim::PLUGIN_PATH`), loaded once
/// per process.
pub fn sim_plugin() -> snaptree_host::Plugin {
    snaptree_host::Plugin::load(snaptree_backend_sim::PLUGIN_PATH).unwrap_or_else(|e| {
        panic!(
            "expected to load the C sim plugin {}: {}",
            snaptree_backend_sim::PLUGIN_PATH,
            e.full_message()
        )
    })
}

/// Opens (creating) a state directory with the C sim plugin registered for type `sim`.
pub fn sim_connection(dir: &Path) -> Connection {
    let c = connect(dir);
    c.register_provider(snaptree_backend_sim::TYPE, sim_plugin().provider());
    c
}

/// The XML of a snapshot with a fixed uuid ([`fixed_uuid`]) and a description.
pub fn fixed_snapshot_xml(name: &str, description: &str) -> String {
    snapshot_xml(name, description)
}

/// As [`run_op`], except that `create` writes no guest data first: the operation is then
/// exactly one plan, so a crash test knows the content before it without running it.
/// For create, the plan returned is a placeholder, as with [`run_op`].
pub fn run_op_without_writes(d: &mut Domain, op: &str) -> Result<Plan> {
    if op != "create" {
        return run_op(d, op);
    }
    d.create_snapshot(&snapshot_xml("new", "made by the operation under test"))?;
    // As in run_op: a placeholder plan (create_snapshot returns only the uuid).
    Ok(Plan {
        operation: snaptree_engine::Operation::Create { name: "new".into() },
        steps: vec![],
        edits: vec![],
    })
}

/// The live content and every snapshot's content of a domain on a shared simulator, by digest
/// (None: the live state).
pub fn contents(d: &mut Domain, sim: &SharedBackend) -> BTreeMap<Option<Uuid>, String> {
    let uuids: Vec<Uuid> = d.tree().unwrap().iter().map(|s| s.uuid).collect();
    sim.with(|b| {
        let hooks = b.test_hooks().expect("the simulator has test hooks");
        let mut out = BTreeMap::new();
        out.insert(None, hooks.content_digest(ContentRef::Live).unwrap());
        for u in uuids {
            out.insert(
                Some(u),
                hooks.content_digest(ContentRef::Snapshot(u)).unwrap(),
            );
        }
        out
    })
}

/// Creates a snapshot `again` with the uuid `old` of a snapshot a lost store left on the
/// backend, and asserts the backend refused it: `BACKEND`, a message naming `old`, and no
/// snapshot `old` recorded. Returns the message.
pub fn assert_reused_uuid_refused(d: &mut Domain, old: Uuid, what: &str) -> String {
    let err = d
        .create_snapshot(&format!(
            "<domainsnapshot><name>again</name><uuid>{old}</uuid></domainsnapshot>"
        ))
        .expect_err("expected a create reusing an old snapshot's uuid refused");
    let message = err.full_message();
    assert_eq!(
        err.code(),
        snaptree_engine::ErrorCode::Backend,
        "{what}: {message}"
    );
    assert!(
        message.contains(&old.to_string()),
        "{what}: expected the error to name {old}: {message}"
    );
    assert!(
        d.tree().unwrap().get(&old).is_none(),
        "{what}: expected no snapshot {old} recorded"
    );
    message
}
