//! [`StoreLocation`]: which store a path or URI names, and opening its catalog.

use std::path::PathBuf;

use super::catalog::Catalog;
use super::{DB_FILE, SqliteCatalog, default_state_dir};
use crate::error::Result;

/// Environment variable naming the store: a state directory or a `postgresql://` URI.
/// Unset or empty: `$SNAPTREE_STATE_DIR` and the XDG default (SQLite).
pub const STORE_ENV: &str = "SNAPTREE_STORE";

/// Where a connection's store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A state directory with a SQLite database: one host.
    Dir(PathBuf),
    /// A PostgreSQL database, by libpq-style URI: a fleet of hosts.
    Postgres(String),
}

impl StoreLocation {
    /// A `postgresql://` or `postgres://` URI names PostgreSQL; anything else is a path.
    pub fn parse(text: &str) -> StoreLocation {
        if text.starts_with("postgresql://") || text.starts_with("postgres://") {
            StoreLocation::Postgres(text.to_string())
        } else {
            StoreLocation::Dir(PathBuf::from(text))
        }
    }

    /// The store a caller names: `store` parsed, or, when it is None, [`from_env`].
    ///
    /// [`from_env`]: StoreLocation::from_env
    pub fn resolve(store: Option<&str>) -> Result<StoreLocation> {
        match store {
            Some(s) => Ok(StoreLocation::parse(s)),
            None => StoreLocation::from_env(),
        }
    }

    /// `$SNAPTREE_STORE` if set and not empty, else the default state directory.
    pub fn from_env() -> Result<StoreLocation> {
        match std::env::var(STORE_ENV) {
            Ok(v) if !v.trim().is_empty() => Ok(StoreLocation::parse(v.trim())),
            _ => Ok(StoreLocation::Dir(default_state_dir()?)),
        }
    }

    /// Opens (creating and migrating) the store: what a connection reports as its state
    /// directory and database, and the catalog.
    pub(crate) fn open_catalog(&self) -> Result<(PathBuf, PathBuf, Box<dyn Catalog>)> {
        match self {
            StoreLocation::Dir(dir) => {
                // Made absolute once: a domain's database is opened by path when it is first
                // used, which a later change of the working directory must not move.
                let dir = std::path::absolute(dir).map_err(|e| crate::error::Error::Storage {
                    context: format!("cannot resolve the state directory {}", dir.display()),
                    source: Some(Box::new(e)),
                })?;
                let catalog = SqliteCatalog::open(&dir)?;
                Ok((dir.clone(), dir.join(DB_FILE), Box::new(catalog)))
            }
            #[cfg(feature = "postgres")]
            StoreLocation::Postgres(uri) => {
                let catalog = super::postgres::PgCatalog::open(uri)?;
                let shown = PathBuf::from(catalog.location());
                Ok((shown.clone(), shown, Box::new(catalog)))
            }
            #[cfg(not(feature = "postgres"))]
            StoreLocation::Postgres(_) => Err(crate::error::Error::InvalidArg(
                "this snaptree was built without PostgreSQL support (the cargo feature `postgres` of snaptree-engine)"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_postgres_and_anything_else_is_a_directory() {
        assert_eq!(
            StoreLocation::parse("postgresql://h/db"),
            StoreLocation::Postgres("postgresql://h/db".into())
        );
        assert_eq!(
            StoreLocation::parse("postgres:///db"),
            StoreLocation::Postgres("postgres:///db".into())
        );
        assert_eq!(
            StoreLocation::parse("/var/lib/snaptree"),
            StoreLocation::Dir("/var/lib/snaptree".into())
        );
        assert_eq!(
            StoreLocation::parse("postgresql-state"),
            StoreLocation::Dir("postgresql-state".into())
        );
    }
}
