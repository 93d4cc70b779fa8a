//! [`PgCatalog`]: the [`Catalog`] of a PostgreSQL store.

use std::sync::Mutex;
use std::time::Duration;

use postgres::error::SqlState;
use uuid::Uuid;

use super::{PgStore, acquire, connect, migrate_to, pg_error};
use crate::error::{Error, Result};
use crate::journal::DomainStore;
use crate::store::StoredDomain;
use crate::store::catalog::{Catalog, Holdings, Inserted};
use crate::store::redact::redact;
use crate::store::schema::SCHEMA_VERSION;

/// The columns of a [`StoredDomain`], in its order.
pub(crate) const DOMAIN_COLUMNS: &str = "id, uuid, name, type, xml, generation";

/// A PostgreSQL store, opened and migrated. Its own connection serves the store-wide
/// reads; each domain handle opens another (its lock lives on it).
pub struct PgCatalog {
    uri: String,
    location: String,
    client: Mutex<Option<postgres::Client>>,
}

/// A row of `DOMAIN_COLUMNS`.
pub(crate) fn domain_from_row(row: &postgres::Row, location: &str) -> Result<StoredDomain> {
    let uuid: String = row.get(1);
    Ok(StoredDomain {
        id: row.get(0),
        uuid: Uuid::parse_str(&uuid).map_err(|e| {
            Error::storage(
                format!("the domains table in {location} holds a bad uuid '{uuid}'"),
                e,
            )
        })?,
        name: row.get(2),
        backend_type: row.get(3),
        xml: row.get(4),
        generation: row.get::<_, i64>(5) as u64,
    })
}

fn holdings(
    c: &mut impl postgres::GenericClient,
    id: i64,
) -> std::result::Result<Holdings, postgres::Error> {
    let row = c.query_one(
        "SELECT (SELECT count(*) FROM snapshots WHERE domain_id = $1), \
                (SELECT count(*) FROM retired WHERE domain_id = $1), \
                EXISTS (SELECT 1 FROM journal WHERE domain_id = $1)",
        &[&id],
    )?;
    Ok((
        row.get::<_, i64>(0) as u64,
        row.get::<_, i64>(1) as u64,
        row.get(2),
    ))
}

impl PgCatalog {
    /// Connects to `uri` and brings the schema to the current version.
    pub fn open(uri: &str) -> Result<PgCatalog> {
        let location = redact(uri);
        let mut client = connect(uri)?;
        migrate_to(&mut client, &location, SCHEMA_VERSION)?;
        Ok(PgCatalog {
            uri: uri.to_string(),
            location,
            client: Mutex::new(Some(client)),
        })
    }

    /// Runs `f` on the catalog's connection, reconnecting first if it was lost.
    fn with<T>(&self, f: impl FnOnce(&mut postgres::Client, &str) -> Result<T>) -> Result<T> {
        let mut guard = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.as_ref().is_none_or(postgres::Client::is_closed) {
            *guard = None;
            *guard = Some(connect(&self.uri)?);
        }
        let client = guard.as_mut().expect("connected above");
        f(client, &self.location)
    }

    /// [`PgCatalog::with`] for a read: once more on a new connection when the first try
    /// failed because the connection was lost (a server restart between two calls).
    fn read<T>(&self, mut f: impl FnMut(&mut postgres::Client, &str) -> Result<T>) -> Result<T> {
        match self.with(&mut f) {
            Err(e) if e.code() == crate::ErrorCode::Storage => self.with(f),
            other => other,
        }
    }

    fn one_domain(&self, sql: &str, key: &str, what: String) -> Result<Option<StoredDomain>> {
        self.read(|c, loc| {
            c.query_opt(sql, &[&key])
                .map_err(|e| pg_error(&what, loc, e))?
                .map(|r| domain_from_row(&r, loc))
                .transpose()
        })
    }
}

impl Catalog for PgCatalog {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn domain_by_name(&self, name: &str) -> Result<Option<StoredDomain>> {
        self.one_domain(
            &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1"),
            name,
            format!("cannot read domain '{name}'"),
        )
    }

    fn domain_by_uuid(&self, uuid: &Uuid) -> Result<Option<StoredDomain>> {
        self.one_domain(
            &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE uuid = $1"),
            &uuid.to_string(),
            format!("cannot read the domain with uuid {uuid}"),
        )
    }

    fn all_domains(&self) -> Result<Vec<StoredDomain>> {
        self.read(|c, loc| {
            c.query(
                &format!("SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY name"),
                &[],
            )
            .map_err(|e| pg_error("cannot list the domains", loc, e))?
            .iter()
            .map(|r| domain_from_row(r, loc))
            .collect()
        })
    }

    fn holdings(&self, d: &StoredDomain) -> Result<Holdings> {
        self.read(|c, loc| {
            holdings(c, d.id)
                .map_err(|e| pg_error(format_args!("cannot read domain '{}'", d.name), loc, e))
        })
    }

    fn insert_domain(
        &self,
        uuid: &Uuid,
        name: &str,
        backend_type: &str,
        xml: &str,
    ) -> Result<Inserted> {
        let inserted = self.with(|c, _| {
            Ok(c.execute(
                "INSERT INTO domains (uuid, name, type, xml) VALUES ($1, $2, $3, $4)",
                &[&uuid.to_string(), &name, &backend_type, &xml],
            ))
        })?;
        let what = format!("cannot define domain '{name}'");
        match inserted {
            Ok(_) => Ok(Inserted::Done),
            // Another host may have just defined the name or taken the uuid: the unique
            // constraints decide, and the rows say which.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                if self.domain_by_name(name)?.is_some() {
                    return Ok(Inserted::NameTaken);
                }
                if let Some(other) = self.domain_by_uuid(uuid)? {
                    return Ok(Inserted::UuidTaken(other.name));
                }
                Err(pg_error(what, &self.location, e))
            }
            Err(e) => Err(pg_error(what, &self.location, e)),
        }
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
        // The lock lives on its own connection, closed (and so released) on return.
        let mut lock = connect(&self.uri)?;
        acquire(&mut lock, &self.location, existing.id, name, timeout)?;
        let what = format!("cannot redefine domain '{name}'");
        let loc = &self.location;
        let mut tx = lock.transaction().map_err(|e| pg_error(&what, loc, e))?;
        let current = tx
            .query_opt(
                &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1 FOR UPDATE"),
                &[name],
            )
            .map_err(|e| pg_error(&what, loc, e))?
            .map(|r| domain_from_row(&r, loc))
            .transpose()?
            .filter(|d| d.id == existing.id)
            .ok_or_else(|| Error::NoDomain(name.clone()))?;
        check(
            &current,
            holdings(&mut tx, current.id).map_err(|e| pg_error(&what, loc, e))?,
        )?;
        tx.execute(
            "UPDATE domains SET xml = $2, type = $3, generation = generation + 1 WHERE id = $1",
            &[&current.id, &xml, &backend_type],
        )
        .map_err(|e| pg_error(&what, loc, e))?;
        tx.commit().map_err(|e| pg_error(&what, loc, e))
    }

    fn remove_domain(
        &self,
        d: &StoredDomain,
        timeout: Duration,
        decide: &dyn Fn(Holdings) -> Result<bool>,
    ) -> Result<bool> {
        let name = &d.name;
        let mut lock = connect(&self.uri)?;
        acquire(&mut lock, &self.location, d.id, name, timeout)?;
        let what = format!("cannot undefine domain '{name}'");
        let loc = &self.location;
        let mut tx = lock.transaction().map_err(|e| pg_error(&what, loc, e))?;
        let exists = tx
            .query_opt("SELECT 1 FROM domains WHERE id = $1 FOR UPDATE", &[&d.id])
            .map_err(|e| pg_error(&what, loc, e))?
            .is_some();
        if !exists {
            return Err(Error::NoDomain(name.to_string()));
        }
        if !decide(holdings(&mut tx, d.id).map_err(|e| pg_error(&what, loc, e))?)? {
            return Ok(false);
        }
        // `decide` refused a domain that has snapshots; rows left by a store edited by hand
        // go too (they have no foreign key to cascade on: schema version 6).
        tx.execute("DELETE FROM snapshots WHERE domain_id = $1", &[&d.id])
            .and_then(|_| tx.execute("DELETE FROM domains WHERE id = $1", &[&d.id]))
            .map_err(|e| pg_error(&what, loc, e))?;
        tx.commit().map_err(|e| pg_error(&what, loc, e))?;
        Ok(true)
    }

    fn open_store(&self, d: &StoredDomain, timeout: Duration) -> Result<Box<dyn DomainStore>> {
        Ok(Box::new(PgStore::open(&self.uri, d, timeout)?))
    }
}
