//! `snaptree store migrate`: a host's SQLite state moved into a PostgreSQL store.

use std::path::Path;
use std::time::Duration;

use super::{PgCatalog, connect, pg_error};
use crate::error::{Error, Result};
use crate::store::catalog::Catalog;
use crate::store::redact::redact;
use crate::store::{DB_FILE, DomainLock, SqliteCatalog, db_error};

/// Copies every domain of the state directory `from` (its snapshots, retired uuids and
/// any pending journal entry) into the PostgreSQL store `to`, in one transaction, holding
/// each source domain's lock (up to `timeout`) so no mutation runs meanwhile. A domain
/// whose name or uuid the target already has refuses the whole copy, naming it; the
/// source is left as it was. Returns the names copied.
pub fn copy_from_sqlite(from: &Path, to: &str, timeout: Duration) -> Result<Vec<String>> {
    let source = SqliteCatalog::open(from)?;
    let target = PgCatalog::open(to)?;
    let domains = source.all_domains()?;
    let mut locks = Vec::new();
    for d in &domains {
        if let Some(other) = target
            .domain_by_name(&d.name)?
            .or(target.domain_by_uuid(&d.uuid)?)
        {
            return Err(Error::InvalidArg(format!(
                "cannot migrate domain '{}' into {}: it already holds domain '{}' ({})",
                d.name,
                redact(to),
                other.name,
                other.uuid
            )));
        }
        let mut lock = DomainLock::open(from, &d.uuid, &d.name, timeout)?;
        lock.acquire()?;
        locks.push(lock);
    }
    let path = from.join(DB_FILE);
    let db = rusqlite::Connection::open(&path)
        .map_err(|e| db_error("cannot open the metadata database", &path, e))?;
    let location = redact(to);
    let mut client = connect(to)?;
    let mut tx = client
        .transaction()
        .map_err(|e| pg_error("cannot begin the migration", &location, e))?;
    let read = |what: &str, e| db_error(format_args!("cannot read {what}"), &path, e);
    for d in &domains {
        let (current, live_on): (Option<String>, Option<String>) = db
            .query_row(
                "SELECT current_uuid, live_on_retired FROM domains WHERE id = ?1",
                [d.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| read("a domain", e))?;
        let pg = |e| {
            pg_error(
                format_args!("cannot migrate domain '{}'", d.name),
                &location,
                e,
            )
        };
        let id: i64 = tx
            .query_one(
                "INSERT INTO domains (uuid, name, type, xml, current_uuid, generation, live_on_retired) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &d.uuid.to_string(),
                    &d.name,
                    &d.backend_type,
                    &d.xml,
                    &current,
                    &(d.generation as i64),
                    &live_on,
                ],
            )
            .map_err(pg)?
            .get(0);
        let mut st = db
            .prepare(
                "SELECT seq, uuid, name, parent_uuid, description, creation_date, state, on_retired, expires, pinned \
                 FROM snapshots WHERE domain_id = ?1 ORDER BY seq",
            )
            .map_err(|e| read("snapshots", e))?;
        let mut rows = st.query([d.id]).map_err(|e| read("snapshots", e))?;
        while let Some(r) = rows.next().map_err(|e| read("snapshots", e))? {
            let get = |e| read("snapshots", e);
            let (seq, uuid, name): (i64, String, String) = (
                r.get(0).map_err(get)?,
                r.get(1).map_err(get)?,
                r.get(2).map_err(get)?,
            );
            let parent: Option<String> = r.get(3).map_err(get)?;
            let description: String = r.get(4).map_err(get)?;
            let date: i64 = r.get(5).map_err(get)?;
            let state: String = r.get(6).map_err(get)?;
            let on_retired: Option<String> = r.get(7).map_err(get)?;
            let expires: Option<i64> = r.get(8).map_err(get)?;
            let pinned: i64 = r.get(9).map_err(get)?;
            tx.execute(
                "INSERT INTO snapshots (domain_id, seq, uuid, name, parent_uuid, description, creation_date, state, on_retired, expires, pinned) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &id,
                    &seq,
                    &uuid,
                    &name,
                    &parent,
                    &description,
                    &date,
                    &state,
                    &on_retired,
                    &expires,
                    &pinned,
                ],
            )
            .map_err(pg)?;
        }
        // The retention policy (schema version 5), as the JSON both stores keep.
        let policy: Option<String> = {
            use rusqlite::OptionalExtension;
            db.query_row(
                "SELECT policy FROM retention WHERE domain_id = ?1",
                [d.id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| read("the retention policy", e))?
        };
        if let Some(policy) = policy {
            tx.execute(
                "INSERT INTO retention (domain_id, policy) VALUES ($1, $2)",
                &[&id, &policy],
            )
            .map_err(pg)?;
        }
        let mut st = db
            .prepare("SELECT uuid, parent_uuid, parent_known FROM retired WHERE domain_id = ?1")
            .map_err(|e| read("retired snapshots", e))?;
        let mut rows = st.query([d.id]).map_err(|e| read("retired snapshots", e))?;
        while let Some(r) = rows.next().map_err(|e| read("retired snapshots", e))? {
            let get = |e| read("retired snapshots", e);
            let uuid: String = r.get(0).map_err(get)?;
            let parent: Option<String> = r.get(1).map_err(get)?;
            let known: i64 = r.get(2).map_err(get)?;
            tx.execute(
                "INSERT INTO retired (domain_id, uuid, parent_uuid, parent_known) VALUES ($1, $2, $3, $4)",
                &[&id, &uuid, &parent, &known],
            )
            .map_err(pg)?;
        }
        let journal: Option<(String, i64, Option<i64>, Option<i64>)> = {
            use rusqlite::OptionalExtension;
            db.query_row(
                "SELECT plan, steps_done, begun_at, pid FROM journal WHERE domain_id = ?1",
                [d.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| read("the journal", e))?
        };
        if let Some((plan, done, begun, pid)) = journal {
            tx.execute(
                "INSERT INTO journal (domain_id, plan, steps_done, begun_at, pid) VALUES ($1, $2, $3, $4, $5)",
                &[&id, &plan, &done, &begun, &pid],
            )
            .map_err(pg)?;
        }
    }
    tx.commit()
        .map_err(|e| pg_error("cannot commit the migration", &location, e))?;
    drop(locks);
    Ok(domains.into_iter().map(|d| d.name).collect())
}
