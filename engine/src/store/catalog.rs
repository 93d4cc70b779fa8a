//! [`Catalog`]: the store-wide half of a store (the domains table, and defining, redefining
//! and undefining a domain under its lock), one implementation per store. The per-handle
//! half is [`crate::DomainStore`], which [`Catalog::open_store`] makes.

use std::time::Duration;

use uuid::Uuid;

use super::StoredDomain;
use crate::error::Result;
use crate::journal::DomainStore;

/// What a domain holds that keeps it from being undefined or changing type: (snapshots,
/// retired snapshots whose data is kept, whether a journal entry exists).
pub type Holdings = (u64, u64, bool);

/// How [`Catalog::insert_domain`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The domain is defined.
    Done,
    /// A domain of that name exists (another process may just have defined it).
    NameTaken,
    /// The uuid belongs to the named domain.
    UuidTaken(String),
}

/// The store-wide operations of a store, shared by a [`crate::Connection`]'s threads.
pub trait Catalog: Send + Sync {
    /// Where the store is, for messages: the database file, or the URI without its password.
    fn location(&self) -> String;
    /// The domain named `name`, if any.
    fn domain_by_name(&self, name: &str) -> Result<Option<StoredDomain>>;
    /// The domain with uuid `uuid`, if any.
    fn domain_by_uuid(&self, uuid: &Uuid) -> Result<Option<StoredDomain>>;
    /// Every domain, by name.
    fn all_domains(&self) -> Result<Vec<StoredDomain>>;
    /// What a domain holds.
    fn holdings(&self, d: &StoredDomain) -> Result<Holdings>;
    /// Inserts a new domain in one transaction that first checks the name and uuid are free.
    fn insert_domain(
        &self,
        uuid: &Uuid,
        name: &str,
        backend_type: &str,
        xml: &str,
    ) -> Result<Inserted>;
    /// Replaces a domain's XML and type holding its lock (up to `timeout`, then `BUSY`),
    /// moving its generation so open handles notice. `check` sees the row and its
    /// holdings inside the transaction and may refuse. `NO_DOMAIN` if it is gone.
    fn update_domain(
        &self,
        existing: &StoredDomain,
        backend_type: &str,
        xml: &str,
        timeout: Duration,
        check: &dyn Fn(&StoredDomain, Holdings) -> Result<()>,
    ) -> Result<()>;
    /// Removes a domain holding its lock, if `decide` (given its holdings inside the
    /// transaction) says so: Ok(true) removed, Ok(false) not now (the caller retries), an
    /// error refuses. `NO_DOMAIN` if it is gone.
    fn remove_domain(
        &self,
        d: &StoredDomain,
        timeout: Duration,
        decide: &dyn Fn(Holdings) -> Result<bool>,
    ) -> Result<bool>;
    /// Opens the per-handle store of a domain: its own connection, lock and journal.
    fn open_store(&self, d: &StoredDomain, timeout: Duration) -> Result<Box<dyn DomainStore>>;
}
