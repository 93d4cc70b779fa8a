//! [`Connection`]: a state directory opened — its domains, the backends that serve them,
//! and durable [`Domain`] handles on them.
//!
//! ```no_run
//! # fn main() -> snaptree_engine::Result<()> {
//! use snaptree_engine::{Connection, NoProgress};
//! let conn = Connection::open(None)?; // $SNAPTREE_STATE_DIR, else the XDG data directory
//! conn.define_domain("<domain type='null'><name>vm1</name></domain>")?;
//! let mut vm = conn.open_domain("vm1")?;
//! let uuid = vm.create_snapshot("<domainsnapshot><name>before-upgrade</name></domainsnapshot>")?;
//! vm.delete(&uuid, snaptree_engine::DeleteMode::Discard, &mut NoProgress)?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use crate::backend::{Backend, BackendProvider, NoProgress};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::null::{NULL_BACKEND, NullProvider};
use crate::store::{self, DB_FILE, DomainLock, SqliteStore, StoredDomain};
use crate::xml::DomainXml;

/// Finds a provider for a backend type the registry does not know (the plugin host
/// installs one that loads `.so` plugins).
pub type Resolver = Box<dyn Fn(&str) -> Result<Arc<dyn BackendProvider>> + Send + Sync>;

/// What a connection says about a defined domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// The domain's name.
    pub name: String,
    /// The domain's uuid.
    pub uuid: Uuid,
    /// Its backend type (the `type` attribute).
    pub backend_type: String,
}

impl From<&StoredDomain> for DomainInfo {
    fn from(d: &StoredDomain) -> DomainInfo {
        DomainInfo {
            name: d.name.clone(),
            uuid: d.uuid,
            backend_type: d.backend_type.clone(),
        }
    }
}

/// An open state directory. Every method takes `&self`: a connection can be shared by
/// threads (`Connection: Send + Sync`); each [`Domain`] it opens is an independent handle
/// with its own database connection and lock file, consistent with every other handle on
/// the same domain in this or any other process.
pub struct Connection {
    dir: PathBuf,
    db_path: PathBuf,
    db: Mutex<rusqlite::Connection>,
    providers: RwLock<HashMap<String, Arc<dyn BackendProvider>>>,
    resolver: RwLock<Option<Resolver>>,
    lock_timeout: Mutex<Duration>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<String> = self
            .providers
            .read()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        types.sort();
        f.debug_struct("Connection")
            .field("state_dir", &self.dir)
            .field("backends", &types)
            .finish()
    }
}

/// A poisoned mutex means a thread panicked mid-call; the data it guards (a database
/// handle, a map) stays usable.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connection {
    /// Opens a state directory (`None`: [`store::default_state_dir`]), creating it (0700)
    /// and its database (0600) if needed and migrating an older schema. The lock timeout
    /// comes from `$SNAPTREE_LOCK_TIMEOUT_MS`, else 30 seconds. The `null` backend is
    /// registered.
    pub fn open(state_dir: Option<&Path>) -> Result<Connection> {
        let dir = match state_dir {
            Some(d) => d.to_path_buf(),
            None => store::default_state_dir()?,
        };
        let lock_timeout = store::lock_timeout_from_env()?;
        let db = store::open_and_migrate(&dir)?;
        let mut providers: HashMap<String, Arc<dyn BackendProvider>> = HashMap::new();
        providers.insert(NULL_BACKEND.to_string(), Arc::new(NullProvider));
        Ok(Connection {
            db_path: dir.join(DB_FILE),
            dir,
            db: Mutex::new(db),
            providers: RwLock::new(providers),
            resolver: RwLock::new(None),
            lock_timeout: Mutex::new(lock_timeout),
        })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// How long a mutation of a domain opened from now on waits for its lock before `BUSY`.
    pub fn lock_timeout(&self) -> Duration {
        *locked(&self.lock_timeout)
    }

    /// Sets the lock timeout for domains opened from now on, and for this connection's own
    /// define and undefine.
    pub fn set_lock_timeout(&self, timeout: Duration) {
        *locked(&self.lock_timeout) = timeout;
    }

    /// Registers (or replaces) the provider of a backend type.
    pub fn register_provider(&self, backend_type: &str, provider: Arc<dyn BackendProvider>) {
        let mut p = self
            .providers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.insert(backend_type.to_string(), provider);
    }

    /// Installs the resolver asked for backend types the registry does not know. A
    /// provider it returns is registered, so it is asked once per type.
    pub fn set_resolver(&self, resolver: Resolver) {
        *self
            .resolver
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(resolver);
    }

    /// The registered backend types, sorted.
    pub fn backend_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .providers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The provider of a backend type: the registry's, else the resolver's.
    pub fn provider(&self, backend_type: &str) -> Result<Arc<dyn BackendProvider>> {
        if let Some(p) = self
            .providers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(backend_type)
        {
            return Ok(p.clone());
        }
        let resolver = self
            .resolver
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match resolver.as_ref() {
            Some(resolve) => {
                let p = resolve(backend_type)?;
                drop(resolver);
                self.register_provider(backend_type, p.clone());
                Ok(p)
            }
            None => Err(Error::InvalidArg(format!(
                "no backend for domain type '{}' is available (known types: {})",
                backend_type.escape_default(),
                self.backend_types().join(", ")
            ))),
        }
    }

    fn lock_of(&self, d: &StoredDomain) -> Result<DomainLock> {
        DomainLock::open(&self.dir, &d.uuid, &d.name, self.lock_timeout())
    }

    /// Maps a SQLite error to `STORAGE` naming the database; `what` is only formatted then.
    fn err<'a, D: std::fmt::Display + 'a>(
        &'a self,
        what: D,
    ) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
        move |e| store::db_error(what, &self.db_path, e)
    }

    /// The stored domain named `name`, or `NO_DOMAIN`.
    fn stored(&self, name: &str) -> Result<StoredDomain> {
        let db = locked(&self.db);
        store::sqlite::domain_by_name(&db, &self.db_path, name)?
            .ok_or_else(|| Error::NoDomain(name.to_string()))
    }

    /// Defines a domain from its XML, or replaces the XML of the domain of that name.
    ///
    /// A new name inserts the domain (with the XML's uuid, else a fresh one; a uuid that
    /// belongs to another domain is `INVALID_ARG`). An existing name with the same uuid, or
    /// no uuid in the XML, replaces its XML; another uuid is `INVALID_ARG`. Changing the
    /// backend type of a domain that has snapshots is `OPERATION_INVALID`: the new backend
    /// would not find their data. Handles already open keep the XML they were opened with.
    pub fn define_domain(&self, xml: &str) -> Result<DomainInfo> {
        let parsed = DomainXml::parse(xml)?;
        self.provider(&parsed.backend_type)?;
        let name = parsed.name.clone();
        if let Some(existing) = {
            let db = locked(&self.db);
            store::sqlite::domain_by_name(&db, &self.db_path, &name)?
        } {
            return self.redefine(&existing, &parsed, xml);
        }
        let uuid = parsed.uuid.unwrap_or_else(Uuid::new_v4);
        let mut db = locked(&self.db);
        let what = format!("cannot define domain '{name}'");
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err(&what))?;
        // Read again inside the write transaction: another process may have just defined it.
        if store::sqlite::domain_by_name(&tx, &self.db_path, &name)?.is_some() {
            drop(tx);
            drop(db);
            return self.define_domain(xml);
        }
        if let Some(other) = store::sqlite::domain_by_uuid(&tx, &self.db_path, &uuid)? {
            return Err(Error::InvalidArg(format!(
                "cannot define domain '{name}': uuid {uuid} already belongs to domain '{}'",
                other.name
            )));
        }
        tx.execute(
            "INSERT INTO domains (uuid, name, type, xml) VALUES (?1, ?2, ?3, ?4)",
            params![uuid.to_string(), name, parsed.backend_type, xml],
        )
        .map_err(self.err(&what))?;
        tx.commit().map_err(self.err(&what))?;
        let info = DomainInfo {
            name,
            uuid,
            backend_type: parsed.backend_type,
        };
        // Create the lock file now, so it exists before the first mutation.
        DomainLock::open(&self.dir, &info.uuid, &info.name, self.lock_timeout())?;
        Ok(info)
    }

    fn redefine(
        &self,
        existing: &StoredDomain,
        parsed: &DomainXml,
        xml: &str,
    ) -> Result<DomainInfo> {
        let name = &existing.name;
        if let Some(u) = parsed.uuid
            && u != existing.uuid
        {
            return Err(Error::InvalidArg(format!(
                "domain '{name}' already exists with uuid {}, not {u}",
                existing.uuid
            )));
        }
        let mut lock = self.lock_of(existing)?;
        lock.acquire()?;
        let mut db = locked(&self.db);
        let what = format!("cannot redefine domain '{name}'");
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err(&what))?;
        let current = store::sqlite::domain_by_name(&tx, &self.db_path, name)?
            .filter(|d| d.id == existing.id)
            .ok_or_else(|| Error::NoDomain(name.clone()))?;
        if current.backend_type != parsed.backend_type {
            let (snapshots, retired, journaled) =
                counts(&tx, current.id).map_err(self.err(&what))?;
            if snapshots + retired > 0 || journaled {
                return Err(Error::OperationInvalid(format!(
                    "cannot change the type of domain '{name}' from '{}' to '{}' while it has snapshots: \
                     the new backend would not find their data",
                    current.backend_type, parsed.backend_type
                )));
            }
        }
        tx.execute(
            "UPDATE domains SET xml = ?2, type = ?3, generation = generation + 1 WHERE id = ?1",
            params![current.id, xml, parsed.backend_type],
        )
        .map_err(self.err(&what))?;
        // The generation moves: open handles must notice (the change signal, as around
        // every commit of the domain).
        lock.begin_change()?;
        let committed = tx.commit().map_err(self.err(&what));
        lock.end_change()?;
        committed?;
        Ok(DomainInfo {
            name: name.clone(),
            uuid: current.uuid,
            backend_type: parsed.backend_type.clone(),
        })
    }

    /// Removes a domain's definition and metadata. A domain with snapshots (or retired
    /// snapshots whose data is kept) is refused with `OPERATION_INVALID` saying how many,
    /// unless `delete_snapshots`: then every snapshot is first deleted through the backend
    /// (delete-all, which frees their data). An interrupted operation is rolled forward
    /// first.
    pub fn undefine_domain(&self, name: &str, delete_snapshots: bool) -> Result<()> {
        // Snapshots may be created between the delete-all and the lock; try a few times.
        let start = std::time::Instant::now();
        for _ in 0..5 {
            let d = self.stored(name)?;
            let (snapshots, retired, journaled) = {
                let db = locked(&self.db);
                counts(&db, d.id).map_err(self.err(format_args!("cannot read domain '{name}'")))?
            };
            if journaled || (delete_snapshots && snapshots + retired > 0) {
                // Opening rolls an interrupted operation forward; one that cannot finish
                // is reported (INCOMPLETE) rather than retried until BUSY.
                let mut dom = self.open_domain(name)?;
                dom.recover()?;
                if delete_snapshots {
                    let t = dom.tree()?;
                    if !t.is_empty() || !t.retired().is_empty() {
                        dom.delete_all(&mut NoProgress)?;
                    }
                }
            }
            let mut lock = self.lock_of(&d)?;
            lock.acquire()?;
            let mut db = locked(&self.db);
            let what = format!("cannot undefine domain '{name}'");
            let tx = db
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(self.err(&what))?;
            let Some(now) =
                store::sqlite::domain_by_name(&tx, &self.db_path, name)?.filter(|x| x.id == d.id)
            else {
                return Err(Error::NoDomain(name.to_string()));
            };
            let (snapshots, retired, journaled) = counts(&tx, now.id).map_err(self.err(&what))?;
            if journaled || (delete_snapshots && snapshots + retired > 0) {
                continue;
            }
            if snapshots + retired > 0 {
                let mut parts = Vec::new();
                if snapshots > 0 {
                    parts.push(format!(
                        "{snapshots} snapshot{}",
                        if snapshots == 1 { "" } else { "s" }
                    ));
                }
                if retired > 0 {
                    parts.push(format!(
                        "{retired} retired snapshot{} whose data is kept",
                        if retired == 1 { "" } else { "s" }
                    ));
                }
                return Err(Error::OperationInvalid(format!(
                    "cannot undefine domain '{name}': it has {}; delete them first, or undefine it with its snapshots",
                    parts.join(" and ")
                )));
            }
            tx.execute("DELETE FROM domains WHERE id = ?1", [now.id])
                .map_err(self.err(&what))?;
            // Open handles must notice the domain is gone (the change signal).
            lock.begin_change()?;
            let committed = tx.commit().map_err(self.err(&what));
            lock.end_change()?;
            committed?;
            // A waiter on this lock file finds the domain gone (ids are never reused).
            let _ = std::fs::remove_file(lock.file_path());
            return Ok(());
        }
        // Other handles kept starting operations on it.
        Err(Error::Busy {
            domain: name.to_string(),
            waited_ms: start.elapsed().as_millis() as u64,
        })
    }

    /// Every defined domain, by name.
    pub fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let db = locked(&self.db);
        Ok(store::sqlite::all_domains(&db, &self.db_path)?
            .iter()
            .map(DomainInfo::from)
            .collect())
    }

    /// The domain named `name`, or `NO_DOMAIN`.
    pub fn lookup_domain(&self, name: &str) -> Result<DomainInfo> {
        self.stored(name).map(|d| DomainInfo::from(&d))
    }

    /// The domain with uuid `uuid`, or `NO_DOMAIN`.
    pub fn lookup_domain_by_uuid(&self, uuid: &Uuid) -> Result<DomainInfo> {
        let db = locked(&self.db);
        store::sqlite::domain_by_uuid(&db, &self.db_path, uuid)?
            .map(|d| DomainInfo::from(&d))
            .ok_or_else(|| Error::NoDomain(uuid.to_string()))
    }

    /// The stored XML of a domain.
    pub fn domain_xml(&self, name: &str) -> Result<String> {
        self.stored(name).map(|d| d.xml)
    }

    /// The operation journaled on a domain and not finished, if any, read from the store
    /// without opening the domain's backend and without rolling anything forward: what
    /// `list` shows. `NO_DOMAIN` when it is not defined.
    pub fn pending_operation(&self, name: &str) -> Result<Option<crate::journal::Pending>> {
        use crate::journal::DomainStore;
        let d = self.stored(name)?;
        let mut store = SqliteStore::open(&self.dir, &d, self.lock_timeout())?;
        let Some(entry) = store.pending()? else {
            return Ok(None);
        };
        let tree = store.load_tree()?;
        Ok(Some(crate::journal::Pending {
            operation: entry.plan.operation.describe(&tree),
            entry,
        }))
    }

    /// Opens a domain: loads its tree from the store in one pass, opens its backend through
    /// the registry, and rolls forward an operation a crash interrupted (reported by
    /// [`Domain::recoveries`]). `NO_DOMAIN` when it is not defined.
    pub fn open_domain(&self, name: &str) -> Result<Domain> {
        let d = self.stored(name)?;
        let xml = DomainXml::parse(&d.xml)?;
        let backend = self.provider(&d.backend_type)?.open(&xml, &d.xml)?;
        self.assemble(d, xml, backend)
    }

    /// Opens a domain with a backend the caller made (tests wrap the registry's backend to
    /// inject faults; tools may bring their own).
    pub fn open_domain_with_backend(
        &self,
        name: &str,
        backend: Box<dyn Backend>,
    ) -> Result<Domain> {
        let d = self.stored(name)?;
        let xml = DomainXml::parse(&d.xml)?;
        self.assemble(d, xml, backend)
    }

    fn assemble(
        &self,
        d: StoredDomain,
        xml: DomainXml,
        backend: Box<dyn Backend>,
    ) -> Result<Domain> {
        let mut store = SqliteStore::open(&self.dir, &d, self.lock_timeout())?;
        let tree = crate::journal::DomainStore::load_tree(&mut store)?;
        Domain::from_parts(xml, d.xml, d.uuid, tree, backend, Box::new(store))
    }
}

/// (snapshots, retired, whether a journal entry exists) of a domain.
fn counts(db: &rusqlite::Connection, id: i64) -> rusqlite::Result<(u64, u64, bool)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn conn() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(Some(&dir.path().join("state"))).unwrap();
        (dir, c)
    }

    #[test]
    fn define_insert_replace_and_refuse_another_uuid() {
        let (_d, c) = conn();
        let u = Uuid::new_v4();
        let info = c
            .define_domain(&format!(
                "<domain type='null'><name>vm</name><uuid>{u}</uuid></domain>"
            ))
            .unwrap();
        assert_eq!(info.uuid, u);
        // Same name, no uuid: replaces the XML, keeps the uuid.
        let again = c
            .define_domain(
                "<domain type='null'><name>vm</name><description>x</description></domain>",
            )
            .unwrap();
        assert_eq!(again.uuid, u);
        assert!(c.domain_xml("vm").unwrap().contains("<description>x"));
        let other = Uuid::new_v4();
        let err = c
            .define_domain(&format!(
                "<domain type='null'><name>vm</name><uuid>{other}</uuid></domain>"
            ))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArg, "{err}");
        // Another name with a taken uuid.
        let err = c
            .define_domain(&format!(
                "<domain type='null'><name>vm2</name><uuid>{u}</uuid></domain>"
            ))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArg);
        assert!(err.to_string().contains("'vm'"), "{err}");
        let err = c
            .define_domain("<domain type='nosuch'><name>vm3</name></domain>")
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArg);
        assert!(err.to_string().contains("nosuch"), "{err}");
        assert_eq!(c.list_domains().unwrap().len(), 1);
    }

    #[test]
    fn open_missing_domain_is_no_domain_naming_it() {
        let (_d, c) = conn();
        let err = c.open_domain("ghost").unwrap_err();
        assert_eq!(err.code(), ErrorCode::NoDomain);
        assert!(err.to_string().contains("'ghost'"));
    }

    #[test]
    fn undefine_refuses_with_the_count_unless_told() {
        let (_d, c) = conn();
        c.define_domain("<domain type='null'><name>vm</name></domain>")
            .unwrap();
        let mut d = c.open_domain("vm").unwrap();
        d.create_snapshot("<domainsnapshot><name>a</name></domainsnapshot>")
            .unwrap();
        d.create_snapshot("<domainsnapshot><name>b</name></domainsnapshot>")
            .unwrap();
        let err = c.undefine_domain("vm", false).unwrap_err();
        assert_eq!(err.code(), ErrorCode::OperationInvalid);
        assert!(err.to_string().contains("2 snapshots"), "{err}");
        c.undefine_domain("vm", true).unwrap();
        assert!(c.list_domains().unwrap().is_empty());
        // The old handle finds its domain gone.
        let err = d.tree().unwrap_err();
        assert_eq!(err.code(), ErrorCode::NoDomain, "{err}");
        let err = c.undefine_domain("vm", false).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NoDomain);
    }

    #[test]
    fn resolver_is_asked_for_unknown_types_once() {
        let (_d, c) = conn();
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = asked.clone();
        c.set_resolver(Box::new(move |t| {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if t == "plug" {
                Ok(Arc::new(NullProvider) as Arc<dyn BackendProvider>)
            } else {
                Err(Error::Plugin {
                    path: PathBuf::from(format!("/plugins/{t}.so")),
                    reason: "not found".into(),
                })
            }
        }));
        c.define_domain("<domain type='plug'><name>p</name></domain>")
            .unwrap();
        c.open_domain("p").unwrap();
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        let err = c
            .define_domain("<domain type='other'><name>q</name></domain>")
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Plugin);
    }
}
