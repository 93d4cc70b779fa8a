//! [`PgStore`]: the [`DomainStore`] of one domain handle on PostgreSQL: its own connection
//! (which holds the domain's advisory lock while it is taken), the generation it loaded,
//! and the journal rows.

use std::collections::HashMap;
use std::time::Duration;

use postgres::{GenericClient, IsolationLevel, Statement};
use uuid::Uuid;

use super::{LOCK_CLASS, connect, lock_key, pg_error, poll, schema_version};
use crate::error::{Error, Result};
use crate::journal::{DomainStore, JournalEntry};
use crate::model::{PowerState, Snapshot};
use crate::plan::{Edit, Plan};
use crate::store::StoredDomain;
use crate::store::redact::redact;
use crate::store::row_seqs::RowSeqs;
use crate::store::schema::SCHEMA_VERSION;
use crate::store::sqlite::operation_name;
use crate::store::tree_rows::{Row, TreeBuilder};
use crate::store::unix_now;
use crate::tree::SnapshotTree;

/// One domain handle's store on PostgreSQL.
pub struct PgStore {
    uri: String,
    location: String,
    /// None after the connection was found lost: the next call reconnects.
    client: Option<postgres::Client>,
    /// Prepared statements of `client` (one round trip a query instead of two).
    statements: HashMap<&'static str, Statement>,
    domain_id: i64,
    name: String,
    timeout: Duration,
    held: bool,
    /// The generation of the tree the engine holds; None forces a reload.
    loaded: Option<i64>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .field("domain", &self.name)
            .field("loaded", &self.loaded)
            .finish()
    }
}

fn parse_uuid(text: &str) -> std::result::Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|e| format!("'{text}' is not a uuid: {e}"))
}

fn parse_opt_uuid(text: Option<String>) -> std::result::Result<Option<Uuid>, String> {
    text.as_deref().map(parse_uuid).transpose()
}

/// A prepared statement of `sql` on `client`, from `cache` when prepared before.
fn prepared(
    cache: &mut HashMap<&'static str, Statement>,
    client: &mut impl GenericClient,
    sql: &'static str,
) -> std::result::Result<Statement, postgres::Error> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(sql)?;
    cache.insert(sql, s.clone());
    Ok(s)
}

impl PgStore {
    /// Opens the store of a stored domain: a new connection to `uri`, whose schema must be
    /// current (as [`crate::Connection::open`] leaves it).
    pub fn open(uri: &str, domain: &StoredDomain, timeout: Duration) -> Result<PgStore> {
        let location = redact(uri);
        let mut client = connect(uri)?;
        let version = schema_version(&mut client, &location)?;
        if version != SCHEMA_VERSION {
            return Err(Error::Storage {
                context: format!(
                    "{location} has schema version {version}, this snaptree uses {SCHEMA_VERSION}: open it through a connection first"
                ),
                source: None,
            });
        }
        Ok(PgStore {
            uri: uri.to_string(),
            location,
            client: Some(client),
            statements: HashMap::new(),
            domain_id: domain.id,
            name: domain.name.clone(),
            timeout,
            held: false,
            loaded: None,
        })
    }

    /// Changes how long [`DomainStore::lock`] waits before `BUSY`.
    pub fn set_lock_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The connection, reconnecting if it was lost, unless this handle holds the lock: a
    /// lost connection lost the lock with it, and nothing may be written until the
    /// engine lets the lock go.
    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.as_ref().is_none_or(postgres::Client::is_closed) {
            self.client = None;
            self.statements.clear();
            if self.held {
                return Err(Error::Storage {
                    context: format!(
                        "the connection to {} was lost while this handle held the lock of domain '{}'; another host may hold it now",
                        self.location, self.name
                    ),
                    source: None,
                });
            }
            self.client = Some(connect(&self.uri)?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs a read; when it failed because the connection was lost and this handle does not
    /// hold the lock, once more on a new connection (a server restart between two reads
    /// is then invisible to readers). Writes are never retried: whether a lost commit
    /// happened is unknown, and the journal decides it on the next open.
    fn read_retrying<T>(&mut self, mut read: impl FnMut(&mut Self) -> Result<T>) -> Result<T> {
        match read(self) {
            Err(e)
                if !self.held
                    && e.code() == crate::ErrorCode::Storage
                    && self
                        .client
                        .as_ref()
                        .is_some_and(postgres::Client::is_closed) =>
            {
                self.client = None;
                read(self)
            }
            other => other,
        }
    }

    fn err<'a, D: std::fmt::Display + 'a>(
        &'a self,
        what: D,
    ) -> impl FnOnce(postgres::Error) -> Error + 'a {
        move |e| pg_error(what, &self.location, e)
    }

    fn corrupt(&self, why: impl std::fmt::Display) -> Error {
        Error::Storage {
            context: format!(
                "the stored snapshots of domain '{}' in {} are inconsistent: {why}",
                self.name, self.location
            ),
            source: None,
        }
    }

    fn read_generation(&mut self) -> Result<Option<i64>> {
        let id = self.domain_id;
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        let stmt = prepared(
            &mut self.statements,
            client,
            "SELECT generation FROM domains WHERE id = $1",
        );
        let row = stmt.and_then(|s| client.query_opt(&s, &[&id]));
        let what = format!("cannot read the generation of domain '{}'", self.name);
        Ok(row.map_err(self.err(what))?.map(|r| r.get(0)))
    }

    /// Reads the domain's tree and generation in one repeatable-read transaction: one
    /// snapshot of the database, whatever other hosts commit meanwhile.
    fn read_tree(&mut self) -> Result<(SnapshotTree, i64)> {
        let id = self.domain_id;
        let what = format!("cannot load the snapshots of domain '{}'", self.name);
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        let read = (|| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let head = tx.query_opt(
                "SELECT generation, current_uuid, live_on_retired, \
                 (SELECT count(*) FROM snapshots WHERE domain_id = $1) FROM domains WHERE id = $1",
                &[&id],
            )?;
            let rows = tx.query(
                "SELECT uuid, name, parent_uuid, description, creation_date, state, on_retired, expires, pinned, seq \
                 FROM snapshots WHERE domain_id = $1 ORDER BY seq",
                &[&id],
            )?;
            let retired = tx.query(
                "SELECT uuid, parent_uuid, parent_known FROM retired WHERE domain_id = $1",
                &[&id],
            )?;
            tx.commit()?;
            Ok::<_, postgres::Error>((head, rows, retired))
        })();
        let (head, rows, retired) = read.map_err(self.err(&what))?;
        let head = head.ok_or_else(|| Error::NoDomain(self.name.clone()))?;
        let generation: i64 = head.get(0);
        let current = parse_opt_uuid(head.get(1)).map_err(|e| self.corrupt(e))?;
        let live_on = parse_opt_uuid(head.get(2)).map_err(|e| self.corrupt(e))?;
        let count: i64 = head.get(3);
        let builder = TreeBuilder::fill(count, |sink| {
            for row in &rows {
                let state: String = row.get(5);
                let snapshot = Snapshot {
                    uuid: parse_uuid(row.get(0)).map_err(|e| self.corrupt(e))?,
                    name: row.get(1),
                    description: row.get(3),
                    creation_date: row.get(4),
                    state: PowerState::parse(&state).map_err(|e| self.corrupt(e))?,
                    expires: row.get(7),
                    pinned: row.get::<_, i64>(8) != 0,
                };
                sink(Row {
                    snapshot,
                    parent: parse_opt_uuid(row.get(2)).map_err(|e| self.corrupt(e))?,
                    on_retired: parse_opt_uuid(row.get(6)).map_err(|e| self.corrupt(e))?,
                    seq: row.get(9),
                });
            }
            Ok::<(), Error>(())
        })?;
        let mut stored_retired = Vec::with_capacity(retired.len());
        for row in &retired {
            let r = parse_uuid(row.get(0)).map_err(|e| self.corrupt(e))?;
            let parent = parse_opt_uuid(row.get(1)).map_err(|e| self.corrupt(e))?;
            stored_retired.push((r, (row.get::<_, i64>(2) != 0).then_some(parent)));
        }
        let tree = builder
            .finish(current, stored_retired, live_on)
            .map_err(|why| self.corrupt(why))?;
        Ok((tree, generation))
    }

    fn try_commit(&mut self, plan: &Plan, before: &SnapshotTree) -> Result<i64> {
        let Some(expected) = self.loaded else {
            return Err(Error::Internal(format!(
                "a commit to domain '{}' on a handle whose tree is not loaded",
                self.name
            )));
        };
        let id = self.domain_id;
        let what = format!(
            "cannot commit the {} of domain '{}'",
            operation_name(&plan.operation),
            self.name
        );
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        let cache = &mut self.statements;
        let name = self.name.clone();
        let location = self.location.clone();
        // Why an edit does not fit: a snapshot that is not stored, or `RowSeqs`' refusal.
        let mut misfit: Option<String> = None;
        // The points of a commit the change-signal test stops writers at: on PostgreSQL
        // the same moments around the transaction (there is no signal to move).
        #[cfg(feature = "testing")]
        {
            crate::testing::commit_point(crate::testing::CommitPoint::BeforeSignal);
            crate::testing::commit_point(crate::testing::CommitPoint::Signalled);
        }
        let result = (|| {
            let mut tx = client.transaction()?;
            let mut run = |tx: &mut postgres::Transaction<'_>,
                           sql: &'static str,
                           params: &[&(dyn postgres::types::ToSql + Sync)]|
             -> std::result::Result<u64, postgres::Error> {
                let s = prepared(cache, tx, sql)?;
                tx.execute(&s, params)
            };
            let mut current: Option<Option<Uuid>> = None;
            let mut live_on: Option<Option<Uuid>> = None;
            let mut seqs = RowSeqs::new(plan, before);
            let text = |u: &Uuid| u.to_string();
            let opt = |u: &Option<Uuid>| u.map(|u| u.to_string());
            for edit in &plan.edits {
                // Refused before its row is touched if it does not fit the tree (`RowSeqs`).
                let seq = match seqs.row(edit) {
                    Ok(seq) => seq,
                    Err(why) => {
                        misfit = Some(why);
                        return Ok(None);
                    }
                };
                let (n, subject) = match edit {
                    Edit::Add {
                        snapshot: s,
                        parent,
                    } => {
                        run(
                            &mut tx,
                            "INSERT INTO snapshots (domain_id, seq, uuid, name, parent_uuid, description, creation_date, state, expires, pinned) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                            &[
                                &id,
                                &seq,
                                &text(&s.uuid),
                                &s.name,
                                &opt(parent),
                                &s.description,
                                &s.creation_date,
                                &s.state.as_str(),
                                &s.expires,
                                &i64::from(s.pinned),
                            ],
                        )?;
                        continue;
                    }
                    Edit::Remove { snapshot } => (
                        run(
                            &mut tx,
                            "DELETE FROM snapshots WHERE domain_id = $1 AND seq = $2 AND uuid = $3",
                            &[&id, &seq, &text(snapshot)],
                        )?,
                        snapshot,
                    ),
                    Edit::SetParent { snapshot, parent } => (
                        run(
                            &mut tx,
                            "UPDATE snapshots SET parent_uuid = $4 WHERE domain_id = $1 AND seq = $2 AND uuid = $3",
                            &[&id, &seq, &text(snapshot), &opt(parent)],
                        )?,
                        snapshot,
                    ),
                    Edit::Rename { snapshot, name } => (
                        run(
                            &mut tx,
                            "UPDATE snapshots SET name = $4 WHERE domain_id = $1 AND seq = $2 AND uuid = $3",
                            &[&id, &seq, &text(snapshot), name],
                        )?,
                        snapshot,
                    ),
                    Edit::SetPinned { snapshot, pinned } => (
                        run(
                            &mut tx,
                            "UPDATE snapshots SET pinned = $4 WHERE domain_id = $1 AND seq = $2 AND uuid = $3",
                            &[&id, &seq, &text(snapshot), &i64::from(*pinned)],
                        )?,
                        snapshot,
                    ),
                    Edit::SetState { snapshot, state } => (
                        run(
                            &mut tx,
                            "UPDATE snapshots SET state = $4 WHERE domain_id = $1 AND seq = $2 AND uuid = $3",
                            &[&id, &seq, &text(snapshot), &state.as_str()],
                        )?,
                        snapshot,
                    ),
                    Edit::SetCurrent { current: c } => {
                        current = Some(*c);
                        continue;
                    }
                    Edit::Retire { snapshot } => {
                        run(
                            &mut tx,
                            "INSERT INTO retired (domain_id, uuid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                            &[&id, &text(snapshot)],
                        )?;
                        continue;
                    }
                    Edit::ClearRetired => {
                        run(&mut tx, "DELETE FROM retired WHERE domain_id = $1", &[&id])?;
                        run(
                            &mut tx,
                            "UPDATE snapshots SET on_retired = NULL WHERE domain_id = $1 AND on_retired IS NOT NULL",
                            &[&id],
                        )?;
                        live_on = Some(None);
                        continue;
                    }
                    Edit::Unretire { snapshot } => (
                        run(
                            &mut tx,
                            "DELETE FROM retired WHERE domain_id = $1 AND uuid = $2",
                            &[&id, &text(snapshot)],
                        )?,
                        snapshot,
                    ),
                    Edit::SetRetiredParent { snapshot, parent } => (
                        run(
                            &mut tx,
                            "UPDATE retired SET parent_uuid = $3, parent_known = 1 WHERE domain_id = $1 AND uuid = $2",
                            &[&id, &text(snapshot), &opt(parent)],
                        )?,
                        snapshot,
                    ),
                    Edit::SetOnRetired { snapshot, retired } => (
                        run(
                            &mut tx,
                            "UPDATE snapshots SET on_retired = $4 WHERE domain_id = $1 AND seq = $2 AND uuid = $3",
                            &[&id, &seq, &text(snapshot), &opt(retired)],
                        )?,
                        snapshot,
                    ),
                    Edit::SetLiveOnRetired { retired } => {
                        live_on = Some(*retired);
                        continue;
                    }
                    Edit::Redefine {
                        snapshot,
                        description,
                        creation_date,
                        state,
                    } => (
                        run(
                            &mut tx,
                            "UPDATE snapshots SET description = $4, creation_date = $5, state = $6 \
                             WHERE domain_id = $1 AND seq = $2 AND uuid = $3",
                            &[
                                &id,
                                &seq,
                                &text(snapshot),
                                description,
                                creation_date,
                                &state.as_str(),
                            ],
                        )?,
                        snapshot,
                    ),
                };
                if n != 1 {
                    misfit = Some(format!("edits snapshot {subject}, which is not stored"));
                    return Ok(None);
                }
            }
            if let Some(l) = live_on {
                run(
                    &mut tx,
                    "UPDATE domains SET live_on_retired = $2 WHERE id = $1",
                    &[&id, &opt(&l)],
                )?;
            }
            let next = expected + 1;
            let n = match current {
                Some(c) => run(
                    &mut tx,
                    "UPDATE domains SET generation = $3, current_uuid = $4 WHERE id = $1 AND generation = $2",
                    &[&id, &expected, &next, &opt(&c)],
                )?,
                None => run(
                    &mut tx,
                    "UPDATE domains SET generation = $3 WHERE id = $1 AND generation = $2",
                    &[&id, &expected, &next],
                )?,
            };
            if n != 1 {
                let exists = tx
                    .query_opt("SELECT 1 FROM domains WHERE id = $1", &[&id])?
                    .is_some();
                return Ok(Some(Err(exists)));
            }
            run(&mut tx, "DELETE FROM journal WHERE domain_id = $1", &[&id])?;
            #[cfg(feature = "testing")]
            crate::testing::commit_point(crate::testing::CommitPoint::Written);
            tx.commit()?;
            #[cfg(feature = "testing")]
            crate::testing::commit_point(crate::testing::CommitPoint::Committed);
            Ok(Some(Ok(next)))
        })();
        #[cfg(feature = "testing")]
        crate::testing::commit_point(crate::testing::CommitPoint::Ended);
        match result.map_err(|e| pg_error(&what, &location, e))? {
            Some(Ok(next)) => Ok(next),
            Some(Err(true)) => Err(Error::Storage {
                context: format!(
                    "{what}: it was changed in {location} while this handle held its lock (expected generation {expected})"
                ),
                source: None,
            }),
            Some(Err(false)) => Err(Error::NoDomain(name)),
            None => Err(Error::Internal(format!(
                "the plan of domain '{name}' {} (in {location})",
                misfit.unwrap_or_default()
            ))),
        }
    }

    fn not_held(&self) -> Result<()> {
        if self.held {
            return Err(Error::Internal(format!(
                "the lock of domain '{}' is taken twice by one handle",
                self.name
            )));
        }
        Ok(())
    }

    /// One attempt at the domain's advisory lock (a prepared statement: one round trip).
    fn try_lock_once(&mut self) -> Result<bool> {
        let key = lock_key(self.domain_id, &self.name)?;
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        let taken = prepared(
            &mut self.statements,
            client,
            "SELECT pg_try_advisory_lock($1, $2)",
        )
        .and_then(|s| client.query_one(&s, &[&LOCK_CLASS, &key]))
        .map(|r| r.get::<_, bool>(0));
        let what = format!("cannot lock domain '{}'", self.name);
        taken.map_err(self.err(what))
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        what: String,
    ) -> Result<u64> {
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        let done =
            prepared(&mut self.statements, client, sql).and_then(|s| client.execute(&s, params));
        done.map_err(self.err(what))
    }
}

impl PgStore {
    /// The domain's retention policy (schema version 5, table `retention`), as the SQLite
    /// store keeps it: one row per domain that has one, the policy as JSON.
    fn read_policy(&mut self) -> Result<Option<crate::retention::Policy>> {
        let id = self.domain_id;
        let what = format!("cannot read the retention policy of domain '{}'", self.name);
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        let row = client
            .query_opt("SELECT policy FROM retention WHERE domain_id = $1", &[&id])
            .map_err(self.err(&what))?;
        row.map(|r| {
            let text: String = r.get(0);
            serde_json::from_str(&text).map_err(|e| Error::Storage {
                context: format!(
                    "the retention policy of domain '{}' in {} is unreadable",
                    self.name, self.location
                ),
                source: Some(Box::new(e)),
            })
        })
        .transpose()
    }

    fn write_policy(&mut self, policy: Option<&crate::retention::Policy>) -> Result<()> {
        let id = self.domain_id;
        let what = format!(
            "cannot store the retention policy of domain '{}'",
            self.name
        );
        let json = policy
            .map(|p| serde_json::to_string(p).map_err(|e| Error::Internal(format!("{what}: {e}"))))
            .transpose()?;
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        let done = match json {
            Some(json) => client.execute(
                "INSERT INTO retention (domain_id, policy) VALUES ($1, $2) \
                 ON CONFLICT (domain_id) DO UPDATE SET policy = excluded.policy",
                &[&id, &json],
            ),
            None => client.execute("DELETE FROM retention WHERE domain_id = $1", &[&id]),
        };
        done.map(drop).map_err(self.err(&what))
    }
}

impl DomainStore for PgStore {
    fn retention_policy(&mut self) -> Result<Option<crate::retention::Policy>> {
        self.read_retrying(PgStore::read_policy)
    }

    fn set_retention_policy(&mut self, policy: Option<&crate::retention::Policy>) -> Result<()> {
        self.write_policy(policy)
    }

    fn lock(&mut self) -> Result<()> {
        self.not_held()?;
        let (name, timeout) = (self.name.clone(), self.timeout);
        if let Err(e) = poll(&name, timeout, || self.try_lock_once()) {
            return Err(match self.client.as_mut() {
                Some(client) => super::with_holder(e, client, self.domain_id),
                None => e,
            });
        }
        self.held = true;
        Ok(())
    }

    fn try_lock(&mut self) -> Result<bool> {
        self.not_held()?;
        let taken = self.try_lock_once()?;
        self.held = taken;
        Ok(taken)
    }

    fn unlock(&mut self) {
        if self.held {
            self.held = false;
            let Ok(key) = lock_key(self.domain_id, &self.name) else {
                return;
            };
            // A closed connection has lost the lock already.
            if let Some(c) = self.client.as_mut()
                && !c.is_closed()
                && let Ok(s) =
                    prepared(&mut self.statements, c, "SELECT pg_advisory_unlock($1, $2)")
            {
                let _ = c.execute(&s, &[&LOCK_CLASS, &key]);
            }
        }
    }

    fn changed(&mut self) -> Result<bool> {
        // One indexed read of the generation: every commit of the domain (on any host)
        // moves it in the same transaction, so a commit that finished before this read
        // began is seen.
        let generation = self
            .read_retrying(PgStore::read_generation)?
            .ok_or_else(|| Error::NoDomain(self.name.clone()))?;
        Ok(self.loaded != Some(generation))
    }

    fn load_tree(&mut self) -> Result<SnapshotTree> {
        match self.read_retrying(PgStore::read_tree) {
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
        self.read_retrying(PgStore::read_pending)
    }

    fn journal_begin(&mut self, plan: &Plan) -> Result<()> {
        self.write_journal(plan)
    }

    fn journal_step_done(&mut self, index: usize) -> Result<()> {
        self.mark_step_done(index)
    }

    fn commit(&mut self, plan: &Plan, before: &SnapshotTree) -> Result<()> {
        match self.try_commit(plan, before) {
            Ok(generation) => {
                self.loaded = Some(generation);
                Ok(())
            }
            Err(e) => {
                self.loaded = None;
                Err(e)
            }
        }
    }

    fn journal_abort(&mut self) -> Result<()> {
        let what = format!("cannot remove the journal entry of domain '{}'", self.name);
        self.execute(
            "DELETE FROM journal WHERE domain_id = $1",
            &[&self.domain_id.clone()],
            what,
        )
        .map(drop)
    }

    fn generation(&self) -> Option<u64> {
        self.loaded.map(|g| g as u64)
    }
}

impl PgStore {
    fn read_pending(&mut self) -> Result<Option<JournalEntry>> {
        let id = self.domain_id;
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        let row = prepared(
            &mut self.statements,
            client,
            "SELECT plan, steps_done FROM journal WHERE domain_id = $1",
        )
        .and_then(|s| client.query_opt(&s, &[&id]));
        let what = format!("cannot read the journal of domain '{}'", self.name);
        let Some(row) = row.map_err(self.err(what))? else {
            return Ok(None);
        };
        let json: String = row.get(0);
        let steps_done: i64 = row.get(1);
        let plan: Plan = serde_json::from_str(&json).map_err(|e| {
            Error::storage(
                format!(
                    "the journal entry of domain '{}' in {} cannot be read",
                    self.name, self.location
                ),
                e,
            )
        })?;
        Ok(Some(JournalEntry {
            plan,
            steps_done: steps_done.max(0) as usize,
        }))
    }

    fn write_journal(&mut self, plan: &Plan) -> Result<()> {
        let json = serde_json::to_string(plan)
            .map_err(|e| Error::Internal(format!("a plan cannot be written as JSON: {e}")))?;
        // Durable before the first physical step: PostgreSQL's commit waits for its
        // write-ahead log to reach the disk (synchronous_commit, on by default).
        let what = format!(
            "cannot journal the {} of domain '{}'",
            operation_name(&plan.operation),
            self.name
        );
        let pid = i64::from(std::process::id());
        self.execute(
            "INSERT INTO journal (domain_id, plan, steps_done, begun_at, pid) VALUES ($1, $2, 0, $3, $4)",
            &[&self.domain_id.clone(), &json, &unix_now(), &pid],
            what,
        )
        .map(drop)
    }

    fn mark_step_done(&mut self, index: usize) -> Result<()> {
        let what = format!(
            "cannot record step {} of domain '{}' as done",
            index + 1,
            self.name
        );
        let n = self.execute(
            "UPDATE journal SET steps_done = $2 WHERE domain_id = $1",
            &[&self.domain_id.clone(), &((index + 1) as i64)],
            what,
        )?;
        match n {
            1 => Ok(()),
            _ => Err(Error::Internal(format!(
                "domain '{}' has no journal entry to mark step {} in",
                self.name,
                index + 1
            ))),
        }
    }
}
