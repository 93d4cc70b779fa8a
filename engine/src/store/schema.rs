//! The database schema and its migrations, one description for both stores. Each
//! migration takes the database from version `i` to `i + 1` and runs in the same
//! transaction as the version bump, so a migration is all or nothing. SQLite keeps the
//! version in `PRAGMA user_version`, PostgreSQL in the table `snaptree_schema`.
//!
//! The migrations are written in SQLite's dialect, restricted to what [`render`] carries
//! over to PostgreSQL: `INTEGER` (64-bit in SQLite) becomes `BIGINT`, `INTEGER PRIMARY KEY
//! AUTOINCREMENT` an identity column, `) WITHOUT ROWID` a plain `)`. Everything else
//! (`CREATE TABLE`, `ALTER TABLE ... ADD COLUMN`, `REFERENCES ... ON DELETE CASCADE`,
//! `CHECK`, `DEFAULT`, `CREATE INDEX`) means the same in both. A step appended to
//! [`MIGRATIONS`] runs on both stores; the schema tests build every version on both.

use std::path::Path;

use rusqlite::TransactionBehavior;

use super::db_error;
use crate::error::{Error, Result};

/// Version 1: domains, their snapshots, retired uuids and the intent journal.
///
/// - `domains.id` is AUTOINCREMENT so an id is never reused: a handle of an undefined
///   domain can never mistake a newly defined one for its own.
/// - `snapshots` is clustered by `(domain_id, seq)`: loading a domain is one ordered range
///   scan, and `seq` (one more than the domain's largest at insert) gives creation order —
///   hence sibling order — back on reload.
/// - `domains.generation` counts commits; handles compare it to notice other handles' work.
const V1: &str = "
CREATE TABLE domains (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL UNIQUE,
    type         TEXT NOT NULL,
    xml          TEXT NOT NULL,
    current_uuid TEXT,
    generation   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE snapshots (
    domain_id     INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    uuid          TEXT NOT NULL,
    name          TEXT NOT NULL,
    parent_uuid   TEXT,
    description   TEXT NOT NULL DEFAULT '',
    creation_date INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('running', 'paused', 'shutoff')),
    PRIMARY KEY (domain_id, seq),
    UNIQUE (domain_id, uuid),
    UNIQUE (domain_id, name)
) WITHOUT ROWID;
CREATE TABLE retired (
    domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    uuid      TEXT NOT NULL,
    PRIMARY KEY (domain_id, uuid)
) WITHOUT ROWID;
CREATE TABLE journal (
    domain_id  INTEGER PRIMARY KEY REFERENCES domains(id) ON DELETE CASCADE,
    plan       TEXT NOT NULL,
    steps_done INTEGER NOT NULL DEFAULT 0
);
";

/// Version 2: who journaled a plan and when, for an operator looking at a stuck entry
/// (`sqlite3 snaptree.db 'SELECT * FROM journal'`). Entries from version 1 have neither.
const V2: &str = "
ALTER TABLE journal ADD COLUMN begun_at INTEGER;
ALTER TABLE journal ADD COLUMN pid INTEGER;
";

/// Version 3: where retired data is physically stored (SEMANTICS.md §7.2), so the engine
/// can free it in dependency order and as soon as nothing depends on it.
///
/// - `retired.parent_uuid`: the retired layer's physical parent (a snapshot or another
///   retired layer; NULL: the base), meaningful when `parent_known` is 1. Rows from
///   version 2 have `parent_known` 0: the engine learns their place from the backend the
///   first time it opens the domain under its lock.
/// - `snapshots.on_retired`: the retired layer a snapshot is stored on, when not directly
///   on its parent.
/// - `domains.live_on_retired`: the retired layer the live state is stored on, when not
///   directly on the current snapshot.
const V3: &str = "
ALTER TABLE retired ADD COLUMN parent_uuid TEXT;
ALTER TABLE retired ADD COLUMN parent_known INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshots ADD COLUMN on_retired TEXT;
ALTER TABLE domains ADD COLUMN live_on_retired TEXT;
";

/// Version 4: no table changes. From this version every commit of a domain moves the
/// change signal in its lock file (`store/lock.rs`), which readers trust instead of asking
/// SQLite; the version bump keeps an older snaptree, which commits without moving it, from
/// opening the database (it refuses a newer schema) and leaving readers blind to its commits.
const V4: &str = "";

/// Version 5: safety nets (SEMANTICS.md §7.5).
///
/// - `snapshots.expires`: when `prune` may delete the snapshot, Unix seconds (NULL: never).
/// - `snapshots.pinned`: 1 for a snapshot `prune` never deletes (the policy's keep list).
/// - `retention`: a domain's retention policy, as the JSON of `retention::Policy` (one
///   row per domain that has one), so a new rule is a new JSON field, not a migration.
const V5: &str = "
ALTER TABLE snapshots ADD COLUMN expires INTEGER;
ALTER TABLE snapshots ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
CREATE TABLE retention (
    domain_id INTEGER PRIMARY KEY REFERENCES domains(id) ON DELETE CASCADE,
    policy    TEXT NOT NULL
);
";

/// Version 6: a snapshot row lives in one B-tree. The `UNIQUE (domain_id, uuid)` and
/// `UNIQUE (domain_id, name)` indexes are gone: every create wrote their entries and every
/// delete removed them (on SQLite, most of a delete's work and two of a create's four
/// pages: BENCHMARKS.md). They guarded nothing the engine does not already: only the
/// domain lock's holder commits, the commit checks the generation its tree was loaded at,
/// the tree refuses a second snapshot of a name or uuid, and the loader refuses stored
/// duplicates as inconsistent. Rows are addressed by `(domain_id, seq)`, the key, with the
/// uuid checked in the same statement (`store/row_seqs.rs`). No foreign key either: with
/// one, SQLite checked every deleted row against `domains` (a delete of every snapshot of
/// a domain took two passes over its rows, the second with a lookup a row); undefining a
/// domain deletes its snapshots itself. SQLite cannot drop a table's own constraints, so
/// the table is rebuilt (one copy of every row, once; the old table's pages stay in the
/// file as free pages that later rows reuse). A view an operator defined on `snapshots`
/// makes the migration fail (and roll back) until it is dropped. On PostgreSQL the key
/// keeps the name `snapshots_v6_pkey`. From this version a new row's `seq` is the next
/// number of the committing handle's tree, past every number that tree has held: never
/// reused while the row is there, ordered by creation, possibly with gaps.
const V6: &str = "
CREATE TABLE snapshots_v6 (
    domain_id     INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    uuid          TEXT NOT NULL,
    name          TEXT NOT NULL,
    parent_uuid   TEXT,
    description   TEXT NOT NULL DEFAULT '',
    creation_date INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('running', 'paused', 'shutoff')),
    on_retired    TEXT,
    expires       INTEGER,
    pinned        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain_id, seq)
) WITHOUT ROWID;
INSERT INTO snapshots_v6 (domain_id, seq, uuid, name, parent_uuid, description, creation_date, state, on_retired, expires, pinned)
    SELECT domain_id, seq, uuid, name, parent_uuid, description, creation_date, state, on_retired, expires, pinned FROM snapshots;
DROP TABLE snapshots;
ALTER TABLE snapshots_v6 RENAME TO snapshots;
";

/// Version 7: no table changes. From this version a writer also moves the change signal
/// around the insert of a journal entry, and a handle that found no entry trusts that
/// none was added while the signal stays where it was (`SqliteStore::pending`). The bump
/// keeps an older snaptree, which journals without moving it, from opening the database:
/// a plan it journaled and then died in would go unseen by such a handle, whose next
/// commit removes the entry. As with version 4, an older process that opened the
/// database before the upgrade is not stopped by it: stop every process using a state
/// directory before the first newer one opens it. PostgreSQL has no change signal and
/// gains nothing here, but shares the numbering: the hosts of a fleet move to this
/// version together.
const V7: &str = "";

/// The migrations, in order: `MIGRATIONS[i]` takes version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The SQL dialect a migration is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: the migrations as written.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A migration in `dialect`: SQLite's text as written, or its PostgreSQL translation (the
/// module documentation lists what is translated).
pub fn render(sql: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => sql.to_string(),
        Dialect::Postgres => {
            let sql = sql
                .replace(
                    "INTEGER PRIMARY KEY AUTOINCREMENT",
                    "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                )
                .replace(") WITHOUT ROWID", ")");
            // `INTEGER` as a whole word only (not inside an identifier).
            let mut out = String::with_capacity(sql.len());
            let mut rest = sql.as_str();
            while let Some(i) = rest.find("INTEGER") {
                let before = rest[..i].chars().next_back();
                let after = rest[i + 7..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                out.push_str(&rest[..i]);
                out.push_str(if word(before) || word(after) {
                    "INTEGER"
                } else {
                    "BIGINT"
                });
                rest = &rest[i + 7..];
            }
            out.push_str(rest);
            out
        }
    }
}

fn user_version(db: &rusqlite::Connection) -> rusqlite::Result<i64> {
    db.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn too_new(path: &Path, version: i64) -> Error {
    Error::Storage {
        context: format!(
            "{} has schema version {version}, newer than this snaptree knows ({SCHEMA_VERSION}); use a newer snaptree",
            path.display()
        ),
        source: None,
    }
}

/// Brings the schema to [`SCHEMA_VERSION`]. Concurrent openers serialize on SQLite's write
/// lock; the version is read again inside the transaction, so each migration runs once.
pub(crate) fn migrate(db: &mut rusqlite::Connection, path: &Path) -> Result<()> {
    let version =
        user_version(db).map_err(|e| db_error("cannot read the schema version", path, e))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(too_new(path, version));
    }
    let tx = db
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_error("cannot begin the schema migration", path, e))?;
    let version =
        user_version(&tx).map_err(|e| db_error("cannot read the schema version", path, e))?;
    if version > SCHEMA_VERSION {
        return Err(too_new(path, version));
    }
    if version < 0 {
        return Err(Error::Storage {
            context: format!(
                "{} has a negative schema version {version}: it is not a snaptree database",
                path.display()
            ),
            source: None,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(|e| {
            db_error(
                format_args!("cannot migrate the schema from version {i} to {}", i + 1),
                path,
                e,
            )
        })?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| db_error("cannot record the schema version", path, e))?;
    tx.commit()
        .map_err(|e| db_error("cannot commit the schema migration", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_build_the_current_schema_from_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let mut db = rusqlite::Connection::open(&path).unwrap();
        migrate(&mut db, &path).unwrap();
        assert_eq!(user_version(&db).unwrap(), SCHEMA_VERSION);
        // Idempotent.
        migrate(&mut db, &path).unwrap();
        let cols: Vec<String> = db
            .prepare("SELECT name FROM pragma_table_info('journal')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(cols, ["domain_id", "plan", "steps_done", "begun_at", "pid"]);
        let cols: Vec<String> = db
            .prepare("SELECT name FROM pragma_table_info('retired')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(cols, ["domain_id", "uuid", "parent_uuid", "parent_known"]);
    }

    /// Version 6 rebuilds `snapshots` with one B-tree (its key) and keeps every row,
    /// sequence numbers included.
    #[test]
    fn version_6_keeps_every_row_and_drops_the_indexes_and_the_foreign_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let mut db = rusqlite::Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..5] {
            db.execute_batch(sql).unwrap();
        }
        db.pragma_update(None, "user_version", 5).unwrap();
        db.execute_batch(
            "INSERT INTO domains (uuid, name, type, xml) VALUES ('d', 'vm', 'null', '<domain/>');
             INSERT INTO snapshots (domain_id, seq, uuid, name, parent_uuid, description, creation_date, state, on_retired, expires, pinned)
                 VALUES (1, 4, 'u4', 'a', NULL, 'first', 100, 'running', 'r', 900, 1),
                        (1, 9, 'u9', 'b', 'u4', '', 200, 'shutoff', NULL, NULL, 0);",
        )
        .unwrap();
        let rows = |db: &rusqlite::Connection| -> Vec<String> {
            db.prepare("SELECT * FROM snapshots ORDER BY domain_id, seq")
                .unwrap()
                .query_map([], |r| {
                    (0..11)
                        .map(|i| {
                            r.get::<_, rusqlite::types::Value>(i)
                                .map(|v| format!("{v:?}"))
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map(|v| v.join(","))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let before = rows(&db);
        migrate(&mut db, &path).unwrap();
        assert_eq!(rows(&db), before, "expected every row, column for column");
        let indexes: Vec<(String, String)> = db
            .prepare("SELECT name, origin FROM pragma_index_list('snapshots')")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            indexes.iter().all(|(_, origin)| origin == "pk"),
            "expected no index on snapshots but its key, found {indexes:?}"
        );
        let keys: i64 = db
            .query_row(
                "SELECT count(*) FROM pragma_foreign_key_list('snapshots')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(keys, 0, "expected no foreign key on snapshots");
        // Two snapshots of one name are the engine's to refuse now, not the table's.
        db.execute(
            "INSERT INTO snapshots (domain_id, seq, uuid, name, creation_date, state) VALUES (1, 10, 'u10', 'a', 0, 'shutoff')",
            [],
        )
        .expect("the table itself has no unique name");
    }

    #[test]
    fn postgres_rendering_widens_integers_and_drops_sqlite_only_clauses() {
        let pg = render(
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, \
             MYINTEGER_X TEXT, PRIMARY KEY (id, n)) WITHOUT ROWID;",
            Dialect::Postgres,
        );
        assert_eq!(
            pg,
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL, \
             MYINTEGER_X TEXT, PRIMARY KEY (id, n));"
        );
        for m in MIGRATIONS {
            assert_eq!(&render(m, Dialect::Sqlite), m);
            assert!(!render(m, Dialect::Postgres).contains("INTEGER"));
        }
    }

    #[test]
    fn refuses_a_newer_schema_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let mut db = rusqlite::Connection::open(&path).unwrap();
        db.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
            .unwrap();
        let err = migrate(&mut db, &path).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Storage);
        let text = err.to_string();
        assert!(text.contains("x.db") && text.contains("newer"), "{text}");
    }
}
