//! The objects behind the opaque handles, and how they share state.
//!
//! - A connection ([`snaptree_conn`]) is an `Arc` of [`ConnShared`]: the engine
//!   [`Connection`], the plugin host behind its resolver, and a cache of the domains this
//!   connection has opened. Closing the handle drops one reference; domain and snapshot
//!   handles hold their own, so they stay usable after `snaptree_conn_close`.
//! - A domain handle ([`snaptree_domain`]) holds the connection and an `Arc` of the
//!   domain's [`DomainShared`]: its name, its uuid and the engine [`Domain`] behind a
//!   mutex, opened on first use. Every handle on the same domain from the same connection
//!   shares that one `DomainShared`, so operations on one domain through one connection
//!   run one at a time (the engine's per-domain lock orders them against other
//!   connections and processes), while operations on different domains run in parallel.
//! - Both hold the connection and the domain's state through one `Arc` of a
//!   [`DomainRef`], which a domain handle makes and its snapshot handles share.
//! - A snapshot handle ([`snaptree_snapshot`]) is a domain plus a snapshot uuid: it names
//!   its snapshot by uuid, so it survives a rename, and every call on it fails with
//!   `NO_SNAPSHOT` once the snapshot is gone.
//!
//! No lock of this crate is held while another is taken, except the domain mutex around
//! the connection's short-lived internal locks when a domain is opened on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use snaptree_engine::{Connection, Domain, Error, ErrorCode, Result, SnapshotTree, Uuid};
use snaptree_host::PluginHost;

use crate::fork;

/// A poisoned mutex means a thread panicked in a call that the boundary turned into
/// `INTERNAL`; the engine objects it guards reload their state on next use.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every handle of one connection shares.
pub(crate) struct ConnShared {
    /// The engine connection: reached through [`ConnShared::engine`], which refuses a
    /// forked child.
    conn: Connection,
    /// The fork generation the connection was opened at (`fork.rs`).
    born: u64,
    /// The plugin host its resolver asks for unknown backend types.
    pub(crate) host: Arc<RwLock<PluginHost>>,
    /// The domains opened through this connection, by uuid.
    domains: Mutex<HashMap<Uuid, Arc<DomainShared>>>,
    /// The SQLite database file's entry in `fork.rs`'s registry (None: PostgreSQL). The
    /// last field: dropped after the connection and the domains, whose SQLite connections
    /// must be closed before the entry goes.
    _store: Option<fork::StoreRecord>,
}

impl ConnShared {
    /// Wraps an engine connection opened as `opening` describes (`fork.rs`); unknown
    /// backend types are looked up by `host`.
    pub(crate) fn new(
        conn: Connection,
        opening: &fork::Opening,
        host: PluginHost,
    ) -> Result<ConnShared> {
        let born = opening.born;
        let store = fork::after_open(opening, conn.db_path())?;
        let host = Arc::new(RwLock::new(host));
        let resolver_host = Arc::clone(&host);
        conn.set_resolver(Box::new(move |backend_type| {
            resolver_host
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .provider_for(backend_type)
        }));
        Ok(ConnShared {
            conn,
            born,
            host,
            domains: Mutex::new(HashMap::new()),
            _store: store,
        })
    }

    /// The engine connection, unless this process forked since it was opened: a child
    /// shares the parent's files but not its locks or threads (`fork.rs`).
    pub(crate) fn engine(&self) -> Result<&Connection> {
        if self.inherited() {
            return Err(Error::OperationInvalid(format!(
                "the connection to {} was opened before this process forked; a forked child \
                 cannot use it (to use this store, run a program with exec)",
                self.conn.store_location()
            )));
        }
        Ok(&self.conn)
    }

    /// Whether this process is a fork of the one that opened the connection.
    pub(crate) fn inherited(&self) -> bool {
        fork::generation() != self.born
    }

    /// The shared state of the domain named `name` (`NO_DOMAIN` when it is not defined).
    pub(crate) fn domain(&self, name: &str) -> Result<Arc<DomainShared>> {
        let info = self.engine()?.lookup_domain(name)?;
        let mut domains = lock(&self.domains);
        let entry = domains.entry(info.uuid).or_insert_with(|| {
            Arc::new(DomainShared {
                name: info.name,
                uuid: info.uuid,
                engine: Mutex::new(None),
            })
        });
        Ok(Arc::clone(entry))
    }

    /// Forgets the cached domain of a uuid: new handles open it afresh (after a
    /// redefinition, with the new XML). Handles already made keep theirs.
    pub(crate) fn forget(&self, uuid: &Uuid) {
        lock(&self.domains).remove(uuid);
    }
}

/// What every handle on one domain from one connection shares.
pub(crate) struct DomainShared {
    /// The domain's name.
    pub(crate) name: String,
    /// The domain's uuid.
    pub(crate) uuid: Uuid,
    /// The engine domain, opened on first use.
    engine: Mutex<Option<Domain>>,
}

impl DomainShared {
    /// Runs `f` on the engine domain, opening it first if needed. The domain mutex is held
    /// for exactly this one engine call.
    pub(crate) fn with<T>(
        &self,
        conn: &Connection,
        f: impl FnOnce(&mut Domain) -> Result<T>,
    ) -> Result<T> {
        let mut engine = lock(&self.engine);
        let domain = match &mut *engine {
            Some(d) => d,
            slot @ None => {
                let d = conn.open_domain(&self.name)?;
                if d.uuid() != self.uuid {
                    // Undefined and defined again under the same name: not this domain.
                    return Err(Error::NoDomain(self.name.clone()));
                }
                slot.insert(d)
            }
        };
        let result = f(domain);
        if result
            .as_ref()
            .is_err_and(|e| e.code() == ErrorCode::NoDomain)
        {
            // The domain was undefined (perhaps by another process, perhaps defined again
            // since): open it afresh next time rather than keep a handle on a dead row.
            *engine = None;
        }
        result
    }

    /// Runs `f` on the domain's tree, reloaded first if another handle or process changed it.
    pub(crate) fn read<T>(
        &self,
        conn: &Connection,
        f: impl FnOnce(&SnapshotTree) -> Result<T>,
    ) -> Result<T> {
        self.with(conn, |d| f(d.tree()?))
    }

    /// Closes the engine domain (after an undefine): the next use opens it again, and
    /// finds it gone.
    pub(crate) fn close(&self) {
        let old = lock(&self.engine).take();
        drop(old);
    }
}

/// An open connection to a state directory (opaque to C).
pub struct snaptree_conn {
    pub(crate) shared: Arc<ConnShared>,
}

/// A domain as a handle sees it: the connection and the domain's shared state. Domain
/// and snapshot handles hold it through one `Arc`, so that making and freeing a snapshot
/// handle (every lookup) moves one reference count, not two.
pub struct DomainRef {
    /// Before `conn`, so dropped first: the domain's SQLite connection closes before the
    /// connection's registry entry can go (`ConnShared`'s last field).
    pub(crate) dom: Arc<DomainShared>,
    pub(crate) conn: Arc<ConnShared>,
}

/// A domain (opaque to C): usable from several threads; freed with `snaptree_domain_free`.
pub struct snaptree_domain {
    inner: Arc<DomainRef>,
}

/// A snapshot, named by its uuid (opaque to C): usable from several threads; freed with
/// `snaptree_snapshot_free`.
pub struct snaptree_snapshot {
    inner: Arc<DomainRef>,
    pub(crate) uuid: Uuid,
}

impl std::ops::Deref for snaptree_domain {
    type Target = DomainRef;

    fn deref(&self) -> &DomainRef {
        &self.inner
    }
}

impl std::ops::Deref for snaptree_snapshot {
    type Target = DomainRef;

    fn deref(&self) -> &DomainRef {
        &self.inner
    }
}

impl DomainRef {
    /// Runs `f` on the engine domain.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Domain) -> Result<T>) -> Result<T> {
        self.dom.with(self.conn.engine()?, f)
    }

    /// Whether this process is a fork of the one that made the handle: freeing it must
    /// then release nothing (`fork.rs`).
    pub(crate) fn inherited(&self) -> bool {
        self.conn.inherited()
    }
}

impl snaptree_domain {
    /// A new handle on `dom`, boxed for C.
    pub(crate) fn boxed(conn: &Arc<ConnShared>, dom: Arc<DomainShared>) -> *mut snaptree_domain {
        Box::into_raw(Box::new(snaptree_domain {
            inner: Arc::new(DomainRef {
                conn: Arc::clone(conn),
                dom,
            }),
        }))
    }

    /// Runs `f` on the domain's current tree.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&SnapshotTree) -> Result<T>) -> Result<T> {
        self.dom.read(self.conn.engine()?, f)
    }

    /// A new snapshot handle on a snapshot of this domain, boxed for C.
    pub(crate) fn snapshot(&self, uuid: Uuid) -> *mut snaptree_snapshot {
        Box::into_raw(Box::new(snaptree_snapshot {
            inner: Arc::clone(&self.inner),
            uuid,
        }))
    }
}

impl snaptree_snapshot {
    /// Runs `f` on the tree and this handle's snapshot, which must still exist
    /// (`NO_SNAPSHOT` otherwise).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&SnapshotTree, &snaptree_engine::Snapshot) -> Result<T>,
    ) -> Result<T> {
        let name = &self.dom.name;
        self.dom.read(self.conn.engine()?, |tree| {
            f(tree, tree.require(&self.uuid, name)?)
        })
    }

    /// A new snapshot handle on another snapshot of the same domain, boxed for C.
    pub(crate) fn sibling(&self, uuid: Uuid) -> *mut snaptree_snapshot {
        Box::into_raw(Box::new(snaptree_snapshot {
            inner: Arc::clone(&self.inner),
            uuid,
        }))
    }
}

// Handles are used from several C threads at once: they must be Send and Sync.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<snaptree_conn>();
    shareable::<snaptree_domain>();
    shareable::<snaptree_snapshot>();
};
