//! The PostgreSQL rig: a private PostgreSQL server (Debian's `postgresql` package,
//! `scripts/setup`) in a temporary directory, on a Unix socket only, stopped by pid when
//! dropped. As root, `initdb` and `postgres` run as the package's `postgres` user (they
//! refuse root), in a directory it owns.
//!
//! [`PgRig::start`] returns None after [`crate::skip::cannot_run`] when no server can be
//! started here (under CI that fails the test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A running private PostgreSQL server.
#[derive(Debug)]
pub struct PgRig {
    dir: PathBuf,
    bin: PathBuf,
    /// Run the server's commands as this user (root only).
    as_user: Option<String>,
    pid: Option<u32>,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The server the tests of one process share while any of them runs (it stops when the
/// last one drops it; a later test starts another).
static SHARED: Mutex<Weak<PgRig>> = Mutex::new(Weak::new());

/// The directory of PostgreSQL's server programs: `initdb` on PATH, else Debian's
/// `/usr/lib/postgresql/<version>/bin`, the newest.
fn server_bin() -> Option<PathBuf> {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Ok(real) = std::fs::canonicalize(&p) {
            return real.parent().map(Path::to_path_buf);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PgRig {
    /// Starts a server, or reports why it cannot ([`crate::skip::cannot_run`]) and returns
    /// None.
    pub fn start(what: &str) -> Option<PgRig> {
        match PgRig::try_start() {
            Ok(rig) => Some(rig),
            Err(why) => {
                crate::skip::cannot_run(what, &why);
                None
            }
        }
    }

    /// The server shared by this process's running tests, started if none runs; None after
    /// [`crate::skip::cannot_run`] when none can start.
    pub fn shared(what: &str) -> Option<Arc<PgRig>> {
        let mut slot = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(rig) = slot.upgrade() {
            return Some(rig);
        }
        let rig = Arc::new(PgRig::start(what)?);
        *slot = Arc::downgrade(&rig);
        Some(rig)
    }

    fn try_start() -> Result<PgRig, String> {
        let bin =
            server_bin().ok_or("PostgreSQL's initdb is not installed (package postgresql)")?;
        let as_user = is_root().then(|| "postgres".to_string());
        let base = std::env::temp_dir().join(format!(
            "snaptree-pg-{}-{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("sock")).map_err(|e| e.to_string())?;
        let mut rig = PgRig {
            dir: base,
            bin,
            as_user,
            pid: None,
        };
        if let Some(user) = &rig.as_user {
            let ok = Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(&rig.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("cannot give {} to user {user}", rig.dir.display()));
            }
        }
        let data = rig.dir.join("data");
        let out = rig
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        rig.start_server()?;
        Ok(rig)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = match &self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        c.current_dir(&self.dir);
        c
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// (Re)starts the server after [`PgRig::stop`].
    pub fn start_server(&mut self) -> Result<(), String> {
        let data = self.dir.join("data");
        let opts = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c max_connections=200",
            self.socket_dir().display()
        );
        let out = self
            .command("pg_ctl")
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "-D"])
            .arg(&data)
            .arg("start")
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log.lines().last().unwrap_or("")
            ));
        }
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            .ok_or("the server wrote no postmaster.pid")?;
        self.pid = Some(pid);
        Ok(())
    }

    /// Stops the server (fast shutdown: open connections are cut), by its pid, and waits
    /// until it is gone.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URI of database `db` on this server.
    pub fn uri(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@/{db}?host={}",
            self.socket_dir().display()
        )
    }

    /// A client of database `db`, for tests reading rows as an oracle.
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.uri(db), postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the rig's database {db}: {e}"))
    }

    /// Creates a fresh, empty database and returns its URI.
    pub fn fresh_db(&self) -> String {
        let n = NEXT_DB.fetch_add(1, Ordering::SeqCst);
        let db = format!("t{}_{n}", std::process::id());
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap_or_else(|e| panic!("cannot create database {db}: {e}"));
        self.uri(&db)
    }
}

impl Drop for PgRig {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
