//! The PostgreSQL store: the same tables as SQLite (one schema description,
//! `store/schema.rs`) in a database several hosts share (SEMANTICS.md §7.6,
//! docs/fleet.md).
//!
//! - The per-domain lock is a session-level advisory lock on the handle's own connection
//!   (`pg_try_advisory_lock(LOCK_CLASS, domain id)`), polled until the timeout, then `BUSY`;
//!   PostgreSQL releases it when the holder's connection ends, however the holder died.
//! - A reader notices another host's commit by reading the domain's `generation` before
//!   every read (one indexed query, one round trip; BENCHMARKS.md). The change signal in
//!   a lock file is a local-host mechanism and is not used here.
//! - The journal is the `journal` table: whichever host opens the domain next rolls it
//!   forward, through the engine's unchanged logic.
//! - A connection that drops is `STORAGE` for the call that saw it (`INCOMPLETE` when a
//!   plan's steps had begun); the next call reconnects, unless the handle held the lock
//!   (then the lock is gone and the call fails until the engine lets it go).

mod catalog;
mod import;
mod store;

pub use catalog::PgCatalog;
pub use import::copy_from_sqlite;
pub use store::PgStore;

use crate::error::{Error, Result};
use crate::store::redact::redact;
use crate::store::schema::{Dialect, MIGRATIONS, SCHEMA_VERSION, render};

/// The first key of every snaptree advisory lock (`'snap'`), so they do not collide with
/// another application's locks on the same database; the second is the domain id.
pub const LOCK_CLASS: i32 = 0x736e_6170;

/// The advisory lock (transaction-level) that serializes schema migrations.
const MIGRATION_LOCK: i64 = 0x736e_6170_0000_0000;

/// Opens a client on `uri`. Messages name the URI without its password.
pub(crate) fn connect(uri: &str) -> Result<postgres::Client> {
    let mut config: postgres::Config = uri.parse().map_err(|e| {
        Error::InvalidArg(format!(
            "'{}' is not a PostgreSQL connection URI: {e}",
            redact(uri)
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name(&application_name());
    }
    config
        .connect(postgres::NoTls)
        .map_err(|e| Error::storage(format!("cannot connect to {}", redact(uri)), e))
}

/// What `pg_stat_activity` shows for every snaptree connection: `snaptree PID@HOST`, so an
/// operator sees which host and process holds a domain's lock (docs/fleet.md). The host is
/// `$SNAPTREE_HOST` when set (several snaptree "hosts" on one machine), else the kernel's
/// host name. PostgreSQL keeps 63 bytes: a long host name is cut, never the pid.
pub(crate) fn application_name() -> String {
    let host = std::env::var("SNAPTREE_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut name = format!("snaptree {}@{host}", std::process::id());
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// A storage error about the store at `location`.
pub(crate) fn pg_error(what: impl std::fmt::Display, location: &str, e: postgres::Error) -> Error {
    Error::storage(format!("{what} in {location}"), e)
}

fn too_new(location: &str, version: i64) -> Error {
    Error::Storage {
        context: format!(
            "{location} has schema version {version}, newer than this snaptree knows ({SCHEMA_VERSION}); use a newer snaptree"
        ),
        source: None,
    }
}

/// The schema version of the database (0: none yet).
pub(crate) fn schema_version(
    client: &mut impl postgres::GenericClient,
    location: &str,
) -> Result<i64> {
    let exists: bool = client
        .query_one("SELECT to_regclass('snaptree_schema') IS NOT NULL", &[])
        .map_err(|e| pg_error("cannot read the schema version", location, e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_opt("SELECT version FROM snaptree_schema", &[])
        .map_err(|e| pg_error("cannot read the schema version", location, e))?
        .map_or(0, |r| r.get(0)))
}

/// Brings the schema to [`SCHEMA_VERSION`] (up to `target`, for tests of single steps) in
/// one transaction. Concurrent openers on any host serialize on an advisory lock and read
/// the version again under it, so each migration runs once.
pub(crate) fn migrate_to(client: &mut postgres::Client, location: &str, target: i64) -> Result<()> {
    let version = schema_version(client, location)?;
    if version == target {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(too_new(location, version));
    }
    let mut tx = client
        .transaction()
        .map_err(|e| pg_error("cannot begin the schema migration", location, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| pg_error("cannot lock the schema for its migration", location, e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS snaptree_schema (version BIGINT NOT NULL)")
        .map_err(|e| pg_error("cannot create the schema version table", location, e))?;
    let version = schema_version(&mut tx, location)?;
    if version > SCHEMA_VERSION {
        return Err(too_new(location, version));
    }
    if version >= target {
        return Ok(());
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(version as usize)
    {
        tx.batch_execute(&render(sql, Dialect::Postgres))
            .map_err(|e| {
                pg_error(
                    format_args!("cannot migrate the schema from version {i} to {}", i + 1),
                    location,
                    e,
                )
            })?;
    }
    tx.execute("DELETE FROM snaptree_schema", &[])
        .and_then(|_| {
            tx.execute(
                "INSERT INTO snaptree_schema (version) VALUES ($1)",
                &[&target],
            )
        })
        .map_err(|e| pg_error("cannot record the schema version", location, e))?;
    tx.commit()
        .map_err(|e| pg_error("cannot commit the schema migration", location, e))
}

/// Takes the advisory lock of domain `id` on `client`, polling until `timeout`, then
/// `BUSY` naming the domain.
pub(crate) fn acquire(
    client: &mut postgres::Client,
    location: &str,
    id: i64,
    name: &str,
    timeout: std::time::Duration,
) -> Result<()> {
    poll(name, timeout, || try_acquire(client, location, id, name))
        .map_err(|e| with_holder(e, client, id))
}

/// A `BUSY` error completed with the holder of domain `id`'s advisory lock, as
/// `pg_stat_activity` names it (snaptree connections: `snaptree PID@HOST`); any other error
/// as it is. Finding the holder is best effort: the error stays `BUSY` whatever happens.
pub(crate) fn with_holder(e: Error, client: &mut postgres::Client, id: i64) -> Error {
    let Error::Busy {
        domain,
        waited_ms,
        holder: None,
    } = e
    else {
        return e;
    };
    let holder = client
        .query_opt(
            "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
             LIMIT 1",
            &[&i64::from(LOCK_CLASS), &id],
        )
        .ok()
        .flatten()
        .map(|row| {
            let app: Option<String> = row.get(0);
            let pid: i32 = row.get(1);
            match app.filter(|a| !a.is_empty()) {
                Some(a) => format!("{a}, server process {pid}"),
                None => format!("PostgreSQL server process {pid}"),
            }
        });
    Error::Busy {
        domain,
        waited_ms,
        holder,
    }
}

/// Calls `try_once` with growing pauses until it returns true, or `BUSY` naming domain
/// `name` once `timeout` has passed.
pub(crate) fn poll(
    name: &str,
    timeout: std::time::Duration,
    mut try_once: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        if try_once()? {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::Busy {
                domain: name.to_string(),
                waited_ms: waited.as_millis() as u64,
                holder: None,
            });
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}

/// The advisory lock key of domain `id`.
pub(crate) fn lock_key(id: i64, name: &str) -> Result<i32> {
    i32::try_from(id).map_err(|_| {
        Error::Internal(format!(
            "domain '{name}' has an id ({id}) too large for a lock key"
        ))
    })
}

/// Takes the advisory lock of domain `id` if free: true if taken.
pub(crate) fn try_acquire(
    client: &mut postgres::Client,
    location: &str,
    id: i64,
    name: &str,
) -> Result<bool> {
    let key = i32::try_from(id).map_err(|_| {
        Error::Internal(format!(
            "domain '{name}' has an id ({id}) too large for a lock key"
        ))
    })?;
    client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &key])
        .map(|r| r.get::<_, bool>(0))
        .map_err(|e| pg_error(format_args!("cannot lock domain '{name}'"), location, e))
}
