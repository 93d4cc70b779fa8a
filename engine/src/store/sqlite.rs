//! [`SqliteStore`]: the [`DomainStore`] of one domain handle, on the state directory's
//! SQLite database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::lock::DomainLock;
use super::row_seqs::RowSeqs;
use super::tree_rows::{Row, TreeBuilder};
use super::{DB_FILE, SCHEMA_VERSION, db_error, open_db, unix_now};
use crate::error::{Error, Result};
use crate::journal::{DomainStore, JournalEntry};
use crate::model::{PowerState, Snapshot};
use crate::plan::{Edit, Operation, Plan};
use crate::tree::SnapshotTree;

/// A domain's row in the `domains` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDomain {
    /// The row id (never reused).
    pub id: i64,
    /// The domain's uuid.
    pub uuid: Uuid,
    /// The domain's name.
    pub name: String,
    /// Its backend type (the `type` attribute of its XML).
    pub backend_type: String,
    /// Its XML as defined.
    pub xml: String,
    /// How many commits the domain has seen.
    pub generation: u64,
}

const DOMAIN_COLUMNS: &str = "id, uuid, name, type, xml, generation";

fn domain_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredDomain> {
    Ok(StoredDomain {
        id: row.get(0)?,
        uuid: uuid_column(row, 1)?,
        name: row.get(2)?,
        backend_type: row.get(3)?,
        xml: row.get(4)?,
        generation: row.get::<_, i64>(5)? as u64,
    })
}

/// Reads the domain named `name`, if any.
pub(crate) fn domain_by_name(
    db: &rusqlite::Connection,
    path: &Path,
    name: &str,
) -> Result<Option<StoredDomain>> {
    db.prepare_cached(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = ?1"
    ))
    .and_then(|mut s| s.query_row([name], domain_from_row).optional())
    .map_err(|e| db_error(format_args!("cannot read domain '{name}'"), path, e))
}

/// Reads the domain with uuid `uuid`, if any.
pub(crate) fn domain_by_uuid(
    db: &rusqlite::Connection,
    path: &Path,
    uuid: &Uuid,
) -> Result<Option<StoredDomain>> {
    db.prepare_cached(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains WHERE uuid = ?1"
    ))
    .and_then(|mut s| s.query_row([uuid.to_string()], domain_from_row).optional())
    .map_err(|e| {
        db_error(
            format_args!("cannot read the domain with uuid {uuid}"),
            path,
            e,
        )
    })
}

/// Every domain, by name.
pub(crate) fn all_domains(db: &rusqlite::Connection, path: &Path) -> Result<Vec<StoredDomain>> {
    db.prepare_cached(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY name"
    ))
    .and_then(|mut s| s.query_map([], domain_from_row)?.collect())
    .map_err(|e| db_error("cannot list the domains", path, e))
}

fn uuid_column(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let text = row.get_ref(i)?.as_str()?;
    Uuid::parse_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn opt_uuid_column(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<Uuid>> {
    match row.get_ref(i)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => uuid_column(row, i).map(Some),
    }
}

fn state_column(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<PowerState> {
    let text = row.get_ref(i)?.as_str()?;
    PowerState::parse(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create { .. } => "create",
        Operation::Revert { .. } | Operation::RevertKeepLive { .. } => "revert",
        Operation::Pin { .. } => "pin",
        Operation::Rename { .. } => "rename",
        Operation::Delete { .. } => "delete",
        Operation::DeleteAll => "delete-all",
        Operation::Reclaim => "reclaim",
        Operation::RecordLayout => "record of the physical layout",
        Operation::Redefine { .. } => "redefine",
    }
}

/// The store of one open domain handle: its own SQLite connection (so `PRAGMA data_version`
/// reports every other handle's commits), its lock file (and the change signal in it), and
/// the generation it loaded.
pub struct SqliteStore {
    db: super::Db,
    path: PathBuf,
    domain_id: i64,
    name: String,
    lock: DomainLock,
    /// The generation of the tree the engine holds; None forces a reload.
    loaded: Option<i64>,
    /// How many snapshot rows the domain has at generation `loaded`.
    rows: i64,
    /// `PRAGMA data_version` when the generation was last read.
    data_version: Option<i64>,
    /// The change signal as loaded before the store read that `loaded` reflects (or as
    /// this handle's own commit left it), when it was even: while the signal still has
    /// this value, nothing was committed since and the tree is current.
    seen: Option<u64>,
    /// The change signal, even, at which this handle knew the domain had no journal entry
    /// (read before a journal read that found none, or as its own commit, which removes
    /// the entry, left it): while the signal still has this value there is none, since
    /// only [`DomainStore::journal_begin`] adds one and it moves the signal.
    no_journal_at: Option<u64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("domain", &self.name)
            .field("loaded", &self.loaded)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the store of a stored domain in a state directory whose schema is current
    /// (as [`crate::Connection::open`] leaves it).
    pub fn open(
        state_dir: &Path,
        domain: &StoredDomain,
        lock_timeout: Duration,
    ) -> Result<SqliteStore> {
        let path = state_dir.join(DB_FILE);
        let db = open_db(&path)?;
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db_error("cannot read the schema version", &path, e))?;
        if version != SCHEMA_VERSION {
            return Err(Error::Storage {
                context: format!(
                    "{} has schema version {version}, this snaptree uses {SCHEMA_VERSION}: open it through a connection first",
                    path.display()
                ),
                source: None,
            });
        }
        let lock = DomainLock::open(state_dir, &domain.uuid, &domain.name, lock_timeout)?;
        Ok(SqliteStore {
            db,
            path,
            domain_id: domain.id,
            name: domain.name.clone(),
            lock,
            loaded: None,
            rows: 0,
            data_version: None,
            seen: None,
            no_journal_at: None,
        })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.path
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        self.lock.file_path()
    }

    /// Changes how long [`DomainStore::lock`] waits before `BUSY`.
    pub fn set_lock_timeout(&mut self, timeout: Duration) {
        self.lock.set_timeout(timeout);
    }

    /// Maps a SQLite error to `STORAGE` naming the database; `what` is only formatted then
    /// (the change check runs before every read).
    fn err<'a, D: std::fmt::Display + 'a>(
        &'a self,
        what: D,
    ) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
        move |e| db_error(what, &self.path, e)
    }

    fn read_data_version(&self) -> Result<i64> {
        self.db
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(self.err("cannot check for changes"))
    }

    fn read_generation(&self) -> Result<i64> {
        self.db
            .prepare_cached("SELECT generation FROM domains WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([self.domain_id], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map_err(self.err(format_args!(
                "cannot read the generation of domain '{}'",
                self.name
            )))?
            .ok_or_else(|| Error::NoDomain(self.name.clone()))
    }

    fn corrupt(&self, why: impl std::fmt::Display) -> Error {
        Error::Storage {
            context: format!(
                "the stored snapshots of domain '{}' in {} are inconsistent: {why}",
                self.name,
                self.path.display()
            ),
            source: None,
        }
    }

    /// Reads the domain's tree and generation in one read transaction. Rows come in `seq`
    /// (creation) order, so the tree's sibling order is the stored one; a parent is always
    /// older than its children in practice, and a row whose parent comes later is attached
    /// once every row is in.
    fn read_tree(&mut self) -> Result<(SnapshotTree, i64)> {
        // Loaded before anything is read: a commit that the read below misses moves it.
        let signal = self.lock.change_signal();
        let data_version = self.read_data_version()?;
        let what = format!("cannot load the snapshots of domain '{}'", self.name);
        let tx = self
            .db
            .unchecked_transaction()
            .map_err(|e| db_error(&what, &self.path, e))?;
        let (generation, current, live_on) = tx
            .prepare_cached(
                "SELECT generation, current_uuid, live_on_retired FROM domains WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([self.domain_id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        opt_uuid_column(r, 1)?,
                        opt_uuid_column(r, 2)?,
                    ))
                })
                .optional()
            })
            .map_err(|e| db_error(&what, &self.path, e))?
            .ok_or_else(|| Error::NoDomain(self.name.clone()))?;
        // Counted first so that the tree's indexes never grow while loading (rehashing a
        // million-entry table several times cost more than this count).
        let count = tx
            .prepare_cached("SELECT count(*) FROM snapshots WHERE domain_id = ?1")
            .and_then(|mut s| s.query_row([self.domain_id], |r| r.get::<_, i64>(0)))
            .map_err(|e| db_error(&what, &self.path, e))?;
        self.rows = count;
        let builder = TreeBuilder::fill(count, |sink| {
            tx.prepare_cached(
                "SELECT uuid, name, parent_uuid, description, creation_date, state, on_retired, expires, pinned, seq FROM snapshots \
                 WHERE domain_id = ?1 ORDER BY seq",
            )
            .and_then(|mut s| {
                let mut rows = s.query([self.domain_id])?;
                while let Some(row) = rows.next()? {
                    let snapshot = Snapshot {
                        uuid: uuid_column(row, 0)?,
                        name: row.get(1)?,
                        description: row.get(3)?,
                        creation_date: row.get(4)?,
                        state: state_column(row, 5)?,
                        expires: row.get(7)?,
                        pinned: row.get::<_, i64>(8)? != 0,
                    };
                    sink(Row {
                        snapshot,
                        parent: opt_uuid_column(row, 2)?,
                        on_retired: opt_uuid_column(row, 6)?,
                        seq: row.get(9)?,
                    });
                }
                Ok(())
            })
        })
        .map_err(|e| db_error(&what, &self.path, e))?;
        let retired: Vec<(Uuid, Option<Option<Uuid>>)> = tx
            .prepare_cached(
                "SELECT uuid, parent_uuid, parent_known FROM retired WHERE domain_id = ?1",
            )
            .and_then(|mut s| {
                s.query_map([self.domain_id], |r| {
                    let known: i64 = r.get(2)?;
                    let parent = opt_uuid_column(r, 1)?;
                    Ok((uuid_column(r, 0)?, (known != 0).then_some(parent)))
                })?
                .collect()
            })
            .map_err(|e| db_error(&what, &self.path, e))?;
        tx.finish().map_err(|e| db_error(&what, &self.path, e))?;
        let tree = builder
            .finish(current, retired, live_on)
            .map_err(|why| self.corrupt(why))?;
        self.data_version = Some(data_version);
        self.seen = signal.is_multiple_of(2).then_some(signal);
        Ok((tree, generation))
    }

    fn set_synchronous(&self, level: &str) -> Result<()> {
        self.db
            .execute_batch(&format!("PRAGMA synchronous={level}"))
            .map_err(self.err(format_args!("cannot set synchronous={level}")))
    }

    /// Commits a plan's edits with the change signal around the commit (odd before it can
    /// be visible, even after), so that no reader trusts its tree across it; returns the
    /// new generation and the signal as this commit left it.
    fn signalled_commit(&mut self, plan: &Plan, before: &SnapshotTree) -> Result<(i64, u64)> {
        #[cfg(feature = "testing")]
        crate::testing::commit_point(crate::testing::CommitPoint::BeforeSignal);
        self.lock.begin_change()?;
        #[cfg(feature = "testing")]
        crate::testing::commit_point(crate::testing::CommitPoint::Signalled);
        let committed = self.try_commit(plan, before);
        #[cfg(feature = "testing")]
        crate::testing::commit_point(crate::testing::CommitPoint::Committed);
        // Ended whatever happened: a failed commit rolled back, and readers that fell back
        // to the store during it saw the truth.
        let signal = self.lock.end_change()?;
        #[cfg(feature = "testing")]
        crate::testing::commit_point(crate::testing::CommitPoint::Ended);
        Ok((committed?, signal))
    }

    fn try_commit(&mut self, plan: &Plan, before: &SnapshotTree) -> Result<i64> {
        let Some(expected) = self.loaded else {
            return Err(Error::Internal(format!(
                "a commit to domain '{}' on a handle whose tree is not loaded",
                self.name
            )));
        };
        let id = self.domain_id;
        let path = &self.path;
        let name = &self.name;
        let what = format!(
            "cannot commit the {} of domain '{name}'",
            operation_name(&plan.operation)
        );
        let sql = |e: rusqlite::Error| db_error(&what, path, e);
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let missing = |snapshot: &Uuid| {
            Error::Internal(format!(
                "the plan edits snapshot {snapshot}, which domain '{name}' does not have in {}",
                path.display()
            ))
        };
        let one = |n: usize, snapshot: &Uuid| -> Result<()> {
            match n {
                1 => Ok(()),
                _ => Err(missing(snapshot)),
            }
        };
        let mut seqs = RowSeqs::new(plan, before);
        // One statement on one snapshot's row: `?1` the domain, `?2` the row's `seq`, `?3`
        // its uuid (a row that is not the expected one is not touched), then `values`.
        let row = |statement: &str,
                   seq: Option<i64>,
                   snapshot: &Uuid,
                   values: &[&dyn rusqlite::ToSql]|
         -> Result<()> {
            let uuid = snapshot.to_string();
            let mut all: Vec<&dyn rusqlite::ToSql> = vec![&id, &seq, &uuid];
            all.extend_from_slice(values);
            let n = tx
                .prepare_cached(statement)
                .and_then(|mut st| st.execute(all.as_slice()))
                .map_err(sql)?;
            one(n, snapshot)
        };
        let mut current: Option<Option<Uuid>> = None;
        let mut live_on: Option<Option<Uuid>> = None;
        let removes = plan
            .edits
            .iter()
            .filter(|e| matches!(e, Edit::Remove { .. }))
            .count() as i64;
        let adds = plan
            .edits
            .iter()
            .filter(|e| matches!(e, Edit::Add { .. }))
            .count() as i64;
        // A plan that removes every snapshot (a delete of the only root with everything
        // under it, delete-all) empties the domain with one statement at its last removal,
        // instead of one statement per row: its removals are distinct snapshots of the tree
        // (`RowSeqs` refuses any other), as many as the rows loaded at `expected`, which
        // the generation check below confirms before anything is kept.
        let mut all_removed_at =
            (removes > 1 && removes == self.rows && adds == 0).then_some(removes);
        for edit in &plan.edits {
            // Refused before its row is touched if it does not fit the tree (`RowSeqs`).
            let seq = seqs.row(edit).map_err(|why| {
                Error::Internal(format!(
                    "the plan of domain '{name}' {why} (in {})",
                    path.display()
                ))
            })?;
            match edit {
                Edit::Add {
                    snapshot: s,
                    parent,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO snapshots (domain_id, seq, uuid, name, parent_uuid, description, creation_date, state, expires, pinned) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            id,
                            seq,
                            s.uuid.to_string(),
                            s.name,
                            parent.map(|p| p.to_string()),
                            s.description,
                            s.creation_date,
                            s.state.as_str(),
                            s.expires,
                            i64::from(s.pinned)
                        ])
                    })
                    .map_err(sql)?;
                }
                Edit::Remove { snapshot } if all_removed_at.is_some() => {
                    let left = all_removed_at.map_or(0, |n| n - 1);
                    all_removed_at = Some(left);
                    if left == 0 {
                        let n = tx
                            .prepare_cached("DELETE FROM snapshots WHERE domain_id = ?1")
                            .and_then(|mut st| st.execute([id]))
                            .map_err(sql)?;
                        if n as i64 != removes {
                            return Err(Error::Internal(format!(
                                "the plan removes {removes} snapshots of domain '{name}' (all of them, as loaded), but {} holds {n} (last: {snapshot})",
                                path.display()
                            )));
                        }
                    }
                }
                Edit::Remove { snapshot } => row(
                    "DELETE FROM snapshots WHERE domain_id = ?1 AND seq = ?2 AND uuid = ?3",
                    seq,
                    snapshot,
                    &[],
                )?,
                Edit::SetParent { snapshot, parent } => row(
                    "UPDATE snapshots SET parent_uuid = ?4 WHERE domain_id = ?1 AND seq = ?2 AND uuid = ?3",
                    seq,
                    snapshot,
                    &[&parent.map(|p| p.to_string())],
                )?,
                Edit::Rename { snapshot, name } => row(
                    "UPDATE snapshots SET name = ?4 WHERE domain_id = ?1 AND seq = ?2 AND uuid = ?3",
                    seq,
                    snapshot,
                    &[name],
                )?,
                Edit::SetState { snapshot, state } => row(
                    "UPDATE snapshots SET state = ?4 WHERE domain_id = ?1 AND seq = ?2 AND uuid = ?3",
                    seq,
                    snapshot,
                    &[&state.as_str()],
                )?,
                Edit::SetCurrent { current: c } => current = Some(*c),
                Edit::Retire { snapshot } => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO retired (domain_id, uuid) VALUES (?1, ?2)",
                    )
                    .and_then(|mut st| st.execute(params![id, snapshot.to_string()]))
                    .map_err(sql)?;
                }
                Edit::ClearRetired => {
                    tx.prepare_cached("DELETE FROM retired WHERE domain_id = ?1")
                        .and_then(|mut st| st.execute([id]))
                        .map_err(sql)?;
                    tx.prepare_cached(
                        "UPDATE snapshots SET on_retired = NULL WHERE domain_id = ?1 AND on_retired IS NOT NULL",
                    )
                    .and_then(|mut st| st.execute([id]))
                    .map_err(sql)?;
                    live_on = Some(None);
                }
                Edit::Unretire { snapshot } => {
                    let n = tx
                        .prepare_cached("DELETE FROM retired WHERE domain_id = ?1 AND uuid = ?2")
                        .and_then(|mut st| st.execute(params![id, snapshot.to_string()]))
                        .map_err(sql)?;
                    one(n, snapshot)?;
                }
                Edit::SetRetiredParent { snapshot, parent } => {
                    let n = tx
                        .prepare_cached(
                            "UPDATE retired SET parent_uuid = ?3, parent_known = 1 WHERE domain_id = ?1 AND uuid = ?2",
                        )
                        .and_then(|mut st| {
                            st.execute(params![
                                id,
                                snapshot.to_string(),
                                parent.map(|p| p.to_string())
                            ])
                        })
                        .map_err(sql)?;
                    one(n, snapshot)?;
                }
                Edit::SetOnRetired { snapshot, retired } => row(
                    "UPDATE snapshots SET on_retired = ?4 WHERE domain_id = ?1 AND seq = ?2 AND uuid = ?3",
                    seq,
                    snapshot,
                    &[&retired.map(|r| r.to_string())],
                )?,
                Edit::SetLiveOnRetired { retired } => live_on = Some(*retired),
                Edit::SetPinned { snapshot, pinned } => row(
                    "UPDATE snapshots SET pinned = ?4 WHERE domain_id = ?1 AND seq = ?2 AND uuid = ?3",
                    seq,
                    snapshot,
                    &[&i64::from(*pinned)],
                )?,
                // REDEFINE of an existing snapshot (SEMANTICS.md §7.3).
                Edit::Redefine {
                    snapshot,
                    description,
                    creation_date,
                    state,
                } => row(
                    "UPDATE snapshots SET description = ?4, creation_date = ?5, state = ?6 \
                     WHERE domain_id = ?1 AND seq = ?2 AND uuid = ?3",
                    seq,
                    snapshot,
                    &[description, creation_date, &state.as_str()],
                )?,
            }
        }
        if let Some(l) = live_on {
            tx.prepare_cached("UPDATE domains SET live_on_retired = ?2 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![id, l.map(|u| u.to_string())]))
                .map_err(sql)?;
        }
        let next = expected + 1;
        let n = match current {
            Some(c) => tx
                .prepare_cached("UPDATE domains SET generation = ?3, current_uuid = ?4 WHERE id = ?1 AND generation = ?2")
                .and_then(|mut st| st.execute(params![id, expected, next, c.map(|u| u.to_string())])),
            None => tx
                .prepare_cached("UPDATE domains SET generation = ?3 WHERE id = ?1 AND generation = ?2")
                .and_then(|mut st| st.execute(params![id, expected, next])),
        }
        .map_err(sql)?;
        if n != 1 {
            let exists = tx
                .prepare_cached("SELECT 1 FROM domains WHERE id = ?1")
                .and_then(|mut st| st.exists([id]))
                .map_err(sql)?;
            return Err(if exists {
                Error::Storage {
                    context: format!(
                        "{what}: it was changed in {} while this handle held its lock (expected generation {expected})",
                        path.display()
                    ),
                    source: None,
                }
            } else {
                Error::NoDomain(name.clone())
            });
        }
        tx.prepare_cached("DELETE FROM journal WHERE domain_id = ?1")
            .and_then(|mut st| st.execute([id]))
            .map_err(sql)?;
        #[cfg(feature = "testing")]
        crate::testing::commit_point(crate::testing::CommitPoint::Written);
        tx.commit().map_err(sql)?;
        Ok(next)
    }
}

impl DomainStore for SqliteStore {
    fn retention_policy(&mut self) -> Result<Option<crate::retention::Policy>> {
        super::retention::read_policy(&self.db, &self.path, self.domain_id, &self.name)
    }

    fn set_retention_policy(&mut self, policy: Option<&crate::retention::Policy>) -> Result<()> {
        super::retention::write_policy(&self.db, &self.path, self.domain_id, &self.name, policy)
    }

    fn lock(&mut self) -> Result<()> {
        self.lock.acquire()
    }

    fn try_lock(&mut self) -> Result<bool> {
        self.lock.try_acquire()
    }

    fn unlock(&mut self) {
        self.lock.release();
    }

    fn changed(&mut self) -> Result<bool> {
        // The fast path: the signal is even and where it was when this handle last read the
        // store (or committed), so no commit became visible since (ARCHITECTURE.md, "The
        // change signal").
        let signal = self.lock.change_signal();
        if self.loaded.is_some() && signal.is_multiple_of(2) && self.seen == Some(signal) {
            return Ok(false);
        }
        // The signal moved, or a commit is under way (or its writer died mid-way): ask
        // SQLite, whose own counter costs no I/O when nothing changed.
        let dv = self.read_data_version()?;
        let unchanged = if self.data_version == Some(dv) && self.loaded.is_some() {
            true
        } else {
            let generation = self.read_generation()?;
            self.data_version = Some(dv);
            self.loaded == Some(generation)
        };
        if unchanged {
            // Both reads came after the signal was loaded: every commit before it is in.
            self.seen = signal.is_multiple_of(2).then_some(signal);
        }
        Ok(!unchanged)
    }

    fn load_tree(&mut self) -> Result<SnapshotTree> {
        match self.read_tree() {
            Ok((tree, generation)) => {
                self.loaded = Some(generation);
                Ok(tree)
            }
            Err(e) => {
                self.loaded = None;
                Err(e)
            }
        }
    }

    fn pending(&mut self) -> Result<Option<JournalEntry>> {
        // Every operation asks under the lock; almost always nothing is pending, and the
        // signal says so with one load instead of a read transaction (four `fcntl` calls).
        let signal = self.lock.change_signal();
        if signal.is_multiple_of(2) && self.no_journal_at == Some(signal) {
            return Ok(None);
        }
        #[cfg(feature = "testing")]
        crate::testing::count_journal_read();
        let row: Option<(String, i64)> = self
            .db
            .prepare_cached("SELECT plan, steps_done FROM journal WHERE domain_id = ?1")
            .and_then(|mut s| {
                s.query_row([self.domain_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(self.err(format_args!(
                "cannot read the journal of domain '{}'",
                self.name
            )))?;
        let Some((json, steps_done)) = row else {
            // Loaded before the read: an entry added since moved it.
            self.no_journal_at = signal.is_multiple_of(2).then_some(signal);
            return Ok(None);
        };
        let plan: Plan = serde_json::from_str(&json).map_err(|e| {
            Error::storage(
                format!(
                    "the journal entry of domain '{}' in {} cannot be read",
                    self.name,
                    self.path.display()
                ),
                e,
            )
        })?;
        Ok(Some(JournalEntry {
            plan,
            steps_done: steps_done.max(0) as usize,
        }))
    }

    fn journal_begin(&mut self, plan: &Plan) -> Result<()> {
        let json = serde_json::to_string(plan)
            .map_err(|e| Error::Internal(format!("a plan cannot be written as JSON: {e}")))?;
        // Marked as a change, so that no handle goes on trusting that the domain has no
        // entry (`pending`); a writer that dies in between leaves the signal odd.
        let before = self.lock.change_signal();
        self.no_journal_at = None;
        self.lock.begin_change()?;
        // The entry must survive a power loss before the first physical step runs: this one
        // transaction waits for the write-ahead log to reach the disk.
        let written = self.set_synchronous("FULL").and_then(|()| {
            self.db
                .prepare_cached(
                    "INSERT INTO journal (domain_id, plan, steps_done, begun_at, pid) VALUES (?1, ?2, 0, ?3, ?4)",
                )
                .and_then(|mut s| {
                    s.execute(params![self.domain_id, json, unix_now(), std::process::id()])
                })
                .map(drop)
                .map_err(self.err(format_args!(
                    "cannot journal the {} of domain '{}'",
                    operation_name(&plan.operation),
                    self.name
                )))
        });
        let after = self.lock.end_change()?;
        // Only lock holders write, and an entry is not a change to the tree: a tree current
        // at `before` is current at `after`.
        if self.seen == Some(before) {
            self.seen = Some(after);
        }
        let restored = self.set_synchronous("NORMAL");
        written?;
        restored
    }

    fn journal_step_done(&mut self, index: usize) -> Result<()> {
        let n = self
            .db
            .prepare_cached("UPDATE journal SET steps_done = ?2 WHERE domain_id = ?1")
            .and_then(|mut s| s.execute(params![self.domain_id, (index + 1) as i64]))
            .map_err(self.err(format_args!(
                "cannot record step {} of domain '{}' as done",
                index + 1,
                self.name
            )))?;
        match n {
            1 => Ok(()),
            _ => Err(Error::Internal(format!(
                "domain '{}' has no journal entry to mark step {} in",
                self.name,
                index + 1
            ))),
        }
    }

    fn commit(&mut self, plan: &Plan, before: &SnapshotTree) -> Result<()> {
        match self.signalled_commit(plan, before) {
            Ok((generation, signal)) => {
                // The commit checked the stored generation was the one this tree was loaded
                // at, and only lock holders commit: the tree with these edits is current
                // as of the signal this commit left.
                self.loaded = Some(generation);
                self.rows += plan
                    .edits
                    .iter()
                    .map(|e| match e {
                        Edit::Add { .. } => 1,
                        Edit::Remove { .. } => -1,
                        _ => 0,
                    })
                    .sum::<i64>();
                self.seen = Some(signal);
                // The same transaction removed the journal entry.
                self.no_journal_at = Some(signal);
                Ok(())
            }
            Err(e) => {
                // The transaction rolled back; whatever the engine holds, reload next time.
                self.loaded = None;
                self.no_journal_at = None;
                Err(e)
            }
        }
    }

    fn journal_abort(&mut self) -> Result<()> {
        // Durable too: an abort lost to a power loss would bring the entry back, and the
        // operation the caller saw fail would then be rolled forward.
        self.set_synchronous("FULL")?;
        self.no_journal_at = None;
        let removed = self
            .db
            .prepare_cached("DELETE FROM journal WHERE domain_id = ?1")
            .and_then(|mut s| s.execute([self.domain_id]))
            .map_err(self.err(format_args!(
                "cannot remove the journal entry of domain '{}'",
                self.name
            )));
        let restored = self.set_synchronous("NORMAL");
        removed?;
        restored
    }

    fn generation(&self) -> Option<u64> {
        self.loaded.map(|g| g as u64)
    }
}
