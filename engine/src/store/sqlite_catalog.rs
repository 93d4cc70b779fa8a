//! [`SqliteCatalog`]: the [`Catalog`] of a state directory's SQLite database, with the
//! domains' lock files (and the change signal in them) next to it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::catalog::{Catalog, Holdings, Inserted};
use super::sqlite::{all_domains, domain_by_name, domain_by_uuid};
use super::{DB_FILE, DomainLock, SqliteStore, StoredDomain, db_error, open_and_migrate};
use crate::error::{Error, Result};
use crate::journal::DomainStore;

/// A state directory's database, opened and migrated.
pub struct SqliteCatalog {
    dir: PathBuf,
    path: PathBuf,
    db: Mutex<super::Db>,
}

/// A poisoned mutex means a thread panicked mid-call; the database handle stays usable.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SqliteCatalog {
    /// Opens the database of `dir` (creating the directory and database if needed) and
    /// brings its schema to the current version.
    pub fn open(dir: &Path) -> Result<SqliteCatalog> {
        let db = open_and_migrate(dir)?;
        Ok(SqliteCatalog {
            dir: dir.to_path_buf(),
            path: dir.join(DB_FILE),
            db: Mutex::new(db),
        })
    }

    fn err<'a, D: std::fmt::Display + 'a>(
        &'a self,
        what: D,
    ) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
        move |e| db_error(what, &self.path, e)
    }

    fn lock_of(&self, d: &StoredDomain, timeout: Duration) -> Result<DomainLock> {
        DomainLock::open(&self.dir, &d.uuid, &d.name, timeout)
    }
}

/// What a domain holds, read on `db`.
fn holdings(db: &rusqlite::Connection, id: i64) -> rusqlite::Result<Holdings> {
    let snapshots: i64 = db
        .prepare_cached("SELECT count(*) FROM snapshots WHERE domain_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    let retired: i64 = db
        .prepare_cached("SELECT count(*) FROM retired WHERE domain_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    let journaled = db
        .prepare_cached("SELECT 1 FROM journal WHERE domain_id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some();
    Ok((snapshots as u64, retired as u64, journaled))
}

impl Catalog for SqliteCatalog {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn domain_by_name(&self, name: &str) -> Result<Option<StoredDomain>> {
        domain_by_name(&locked(&self.db), &self.path, name)
    }

    fn domain_by_uuid(&self, uuid: &Uuid) -> Result<Option<StoredDomain>> {
        domain_by_uuid(&locked(&self.db), &self.path, uuid)
    }

    fn all_domains(&self) -> Result<Vec<StoredDomain>> {
        all_domains(&locked(&self.db), &self.path)
    }

    fn holdings(&self, d: &StoredDomain) -> Result<Holdings> {
        holdings(&locked(&self.db), d.id)
            .map_err(self.err(format_args!("cannot read domain '{}'", d.name)))
    }

    fn insert_domain(
        &self,
        uuid: &Uuid,
        name: &str,
        backend_type: &str,
        xml: &str,
    ) -> Result<Inserted> {
        let mut db = locked(&self.db);
        let what = format!("cannot define domain '{name}'");
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err(&what))?;
        // Read again inside the write transaction: another process may have just defined it.
        if domain_by_name(&tx, &self.path, name)?.is_some() {
            return Ok(Inserted::NameTaken);
        }
        if let Some(other) = domain_by_uuid(&tx, &self.path, uuid)? {
            return Ok(Inserted::UuidTaken(other.name));
        }
        tx.execute(
            "INSERT INTO domains (uuid, name, type, xml) VALUES (?1, ?2, ?3, ?4)",
            params![uuid.to_string(), name, backend_type, xml],
        )
        .map_err(self.err(&what))?;
        tx.commit().map_err(self.err(&what))?;
        drop(db);
        // Create the lock file now, so it exists before the first mutation.
        DomainLock::open(&self.dir, uuid, name, Duration::ZERO)?;
        Ok(Inserted::Done)
    }

    fn update_domain(
        &self,
        existing: &StoredDomain,
        backend_type: &str,
        xml: &str,
        timeout: Duration,
        check: &dyn Fn(&StoredDomain, Holdings) -> Result<()>,
    ) -> Result<()> {
        let name = &existing.name;
        let mut lock = self.lock_of(existing, timeout)?;
        lock.acquire()?;
        let mut db = locked(&self.db);
        let what = format!("cannot redefine domain '{name}'");
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err(&what))?;
        let current = domain_by_name(&tx, &self.path, name)?
            .filter(|d| d.id == existing.id)
            .ok_or_else(|| Error::NoDomain(name.clone()))?;
        check(
            &current,
            holdings(&tx, current.id).map_err(self.err(&what))?,
        )?;
        tx.execute(
            "UPDATE domains SET xml = ?2, type = ?3, generation = generation + 1 WHERE id = ?1",
            params![current.id, xml, backend_type],
        )
        .map_err(self.err(&what))?;
        // The generation moves: open handles must notice (the change signal, as around
        // every commit of the domain).
        lock.begin_change()?;
        let committed = tx.commit().map_err(self.err(&what));
        lock.end_change()?;
        committed
    }

    fn remove_domain(
        &self,
        d: &StoredDomain,
        timeout: Duration,
        decide: &dyn Fn(Holdings) -> Result<bool>,
    ) -> Result<bool> {
        let name = &d.name;
        let mut lock = self.lock_of(d, timeout)?;
        lock.acquire()?;
        let mut db = locked(&self.db);
        let what = format!("cannot undefine domain '{name}'");
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err(&what))?;
        let Some(now) = domain_by_name(&tx, &self.path, name)?.filter(|x| x.id == d.id) else {
            return Err(Error::NoDomain(name.to_string()));
        };
        if !decide(holdings(&tx, now.id).map_err(self.err(&what))?)? {
            return Ok(false);
        }
        // `decide` refused a domain that has snapshots; rows left by a store edited by hand
        // go too (they have no foreign key to cascade on: schema version 6).
        tx.execute("DELETE FROM snapshots WHERE domain_id = ?1", [now.id])
            .and_then(|_| tx.execute("DELETE FROM domains WHERE id = ?1", [now.id]))
            .map_err(self.err(&what))?;
        // Open handles must notice the domain is gone (the change signal).
        lock.begin_change()?;
        let committed = tx.commit().map_err(self.err(&what));
        lock.end_change()?;
        committed?;
        // A waiter on this lock file finds the domain gone (ids are never reused).
        let _ = std::fs::remove_file(lock.file_path());
        Ok(true)
    }

    fn open_store(&self, d: &StoredDomain, timeout: Duration) -> Result<Box<dyn DomainStore>> {
        Ok(Box::new(SqliteStore::open(&self.dir, d, timeout)?))
    }
}
