//! The retention policy of a domain in SQLite (schema version 5, table `retention`): one
//! row per domain that has a policy, the policy as JSON. Kept apart from the snapshot
//! rows: the policy is read fresh under the domain lock by every `prune`, so it needs no
//! generation or change signal of its own.

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::db_error;
use crate::error::{Error, Result};
use crate::retention::Policy;

/// The domain's policy, if it has one.
pub(crate) fn read_policy(
    db: &rusqlite::Connection,
    path: &Path,
    domain_id: i64,
    domain: &str,
) -> Result<Option<Policy>> {
    let text: Option<String> = db
        .prepare_cached("SELECT policy FROM retention WHERE domain_id = ?1")
        .and_then(|mut s| s.query_row([domain_id], |r| r.get(0)).optional())
        .map_err(|e| {
            db_error(
                format_args!("cannot read the retention policy of domain '{domain}'"),
                path,
                e,
            )
        })?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| Error::Storage {
            context: format!(
                "the retention policy of domain '{domain}' in {} is unreadable",
                path.display()
            ),
            source: Some(Box::new(e)),
        })
    })
    .transpose()
}

/// Sets (or, with None, removes) the domain's policy.
pub(crate) fn write_policy(
    db: &rusqlite::Connection,
    path: &Path,
    domain_id: i64,
    domain: &str,
    policy: Option<&Policy>,
) -> Result<()> {
    let what = format_args!("cannot store the retention policy of domain '{domain}'");
    let result = match policy {
        Some(p) => {
            let json =
                serde_json::to_string(p).map_err(|e| Error::Internal(format!("{what}: {e}")))?;
            db.prepare_cached(
                "INSERT INTO retention (domain_id, policy) VALUES (?1, ?2) \
                 ON CONFLICT (domain_id) DO UPDATE SET policy = excluded.policy",
            )
            .and_then(|mut s| s.execute(params![domain_id, json]))
        }
        None => db
            .prepare_cached("DELETE FROM retention WHERE domain_id = ?1")
            .and_then(|mut s| s.execute([domain_id])),
    };
    result.map(|_| ()).map_err(|e| db_error(what, path, e))
}
