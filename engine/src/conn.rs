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

use uuid::Uuid;

use crate::backend::{Backend, BackendProvider, NoProgress};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::null::{NULL_BACKEND, NullProvider};
use crate::store::catalog::{Catalog, Inserted};
use crate::store::{self, StoreLocation, StoredDomain};
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

/// An open store: a state directory (SQLite) or a PostgreSQL database several hosts share.
/// Every method takes `&self`: a connection can be shared by threads (`Connection: Send +
/// Sync`); each [`Domain`] it opens is an independent handle with its own database
/// connection and lock, consistent with every other handle on the same domain in this or
/// any other process (or, on PostgreSQL, host).
///
/// Neither a connection nor a domain may be used in a child process forked without `exec`,
/// nor may the child open the SQLite store its parent had open: it would share the
/// parent's database files without its locks (and SQLite's per-process record of them),
/// and the backends' threads do not exist there. The C API enforces this
/// (`ffi/src/fork.rs`); a Rust program that forks runs a program with `exec` instead.
pub struct Connection {
    dir: PathBuf,
    db_path: PathBuf,
    catalog: Box<dyn Catalog>,
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

/// A poisoned mutex means a thread panicked mid-call; the data it guards stays usable.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connection {
    /// Opens a store, creating its schema if needed and migrating an older one. `store` is
    /// a state directory (SQLite, created 0700 with its database 0600 if needed) or a
    /// `postgresql://` (or `postgres://`) URI; `None` is `$SNAPTREE_STORE` if set, else
    /// [`store::default_state_dir`]. The lock timeout comes from
    /// `$SNAPTREE_LOCK_TIMEOUT_MS`, else 30 seconds. The `null` backend is registered.
    pub fn open(store: Option<&Path>) -> Result<Connection> {
        let store = store.map(Path::to_string_lossy);
        Connection::open_at(&StoreLocation::resolve(store.as_deref())?)
    }

    /// Opens the store at `location`, as [`Connection::open`] does: for a caller that
    /// resolved the location itself and must open exactly that store.
    pub fn open_at(location: &StoreLocation) -> Result<Connection> {
        let lock_timeout = store::lock_timeout_from_env()?;
        let (dir, db_path, catalog) = location.open_catalog()?;
        let mut providers: HashMap<String, Arc<dyn BackendProvider>> = HashMap::new();
        providers.insert(NULL_BACKEND.to_string(), Arc::new(NullProvider));
        Ok(Connection {
            db_path,
            dir,
            catalog,
            providers: RwLock::new(providers),
            resolver: RwLock::new(None),
            lock_timeout: Mutex::new(lock_timeout),
        })
    }

    /// The state directory; on PostgreSQL, the URI without its password.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// The database file; on PostgreSQL, the URI without its password.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Where the store is, for messages: the database file or the URI without password.
    pub fn store_location(&self) -> String {
        self.catalog.location()
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

    /// The stored domain named `name`, or `NO_DOMAIN`.
    fn stored(&self, name: &str) -> Result<StoredDomain> {
        self.catalog
            .domain_by_name(name)?
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
        if let Some(existing) = self.catalog.domain_by_name(&name)? {
            return self.redefine(&existing, &parsed, xml);
        }
        let uuid = parsed.uuid.unwrap_or_else(Uuid::new_v4);
        match self
            .catalog
            .insert_domain(&uuid, &name, &parsed.backend_type, xml)?
        {
            Inserted::Done => Ok(DomainInfo {
                name,
                uuid,
                backend_type: parsed.backend_type,
            }),
            // Another process has just defined it: this is a redefinition after all.
            Inserted::NameTaken => self.define_domain(xml),
            Inserted::UuidTaken(other) => Err(Error::InvalidArg(format!(
                "cannot define domain '{name}': uuid {uuid} already belongs to domain '{other}'"
            ))),
        }
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
        let new_type = parsed.backend_type.as_str();
        self.catalog.update_domain(
            existing,
            new_type,
            xml,
            self.lock_timeout(),
            &|current, (snapshots, retired, journaled)| {
                if current.backend_type != new_type && (snapshots + retired > 0 || journaled) {
                    return Err(Error::OperationInvalid(format!(
                        "cannot change the type of domain '{name}' from '{}' to '{new_type}' while it has snapshots: \
                         the new backend would not find their data",
                        current.backend_type
                    )));
                }
                Ok(())
            },
        )?;
        Ok(DomainInfo {
            name: name.clone(),
            uuid: existing.uuid,
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
            let (snapshots, retired, journaled) = self.catalog.holdings(&d)?;
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
            let removed = self.catalog.remove_domain(
                &d,
                self.lock_timeout(),
                &|(snapshots, retired, journaled)| {
                    if journaled || (delete_snapshots && snapshots + retired > 0) {
                        return Ok(false);
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
                    Ok(true)
                },
            )?;
            if removed {
                return Ok(());
            }
        }
        // Other handles kept starting operations on it.
        Err(Error::Busy {
            domain: name.to_string(),
            waited_ms: start.elapsed().as_millis() as u64,
            holder: None,
        })
    }

    /// Every defined domain, by name.
    pub fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        Ok(self
            .catalog
            .all_domains()?
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
        self.catalog
            .domain_by_uuid(uuid)?
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
        let d = self.stored(name)?;
        let mut store = self.catalog.open_store(&d, self.lock_timeout())?;
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
        let mut store = self.catalog.open_store(&d, self.lock_timeout())?;
        let tree = store.load_tree()?;
        Domain::from_parts(xml, d.xml, d.uuid, tree, backend, store)
    }
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
