//! An open domain: its tree, its backend and its store, and the executor that runs a plan
//! through the backend with the intent journal around it.

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::backend::{Backend, NoProgress, PhysicalTree, Progress};
use crate::error::{Error, ErrorCode, Result};
use crate::journal::{DomainStore, JournalEntry, MemoryStore, Pending};
use crate::model::PowerState;
use crate::plan::{Adoption, DeleteMode, Edit, Operation, Plan, Step, StepKind};
use crate::planner::{self, CreateContext, RedefineContext};
use crate::retention::{self, Policy, Pruned};
use crate::space::{SnapshotSize, SpaceEstimate};
use crate::tree::SnapshotTree;
use crate::xml::{DomainXml, SnapshotXml, manifest};

/// What recovery did when a domain was found with an interrupted operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The plan that was rolled forward.
    pub plan: Plan,
    /// The operation in words, naming snapshots as the tree before it did
    /// ([`Operation::describe`](crate::plan::Operation::describe)).
    pub operation: String,
    /// How many of its steps had been done before the interruption.
    pub steps_done_before: usize,
}

impl Recovery {
    /// What was finished, in words: "delete (MERGE) of snapshot 'b' (1 of 3 steps had been
    /// done)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({} of {} steps had been done)",
            self.operation,
            self.steps_done_before,
            self.plan.step_count()
        )
    }
}

/// An open domain.
pub struct Domain {
    xml: DomainXml,
    xml_text: String,
    uuid: Uuid,
    tree: SnapshotTree,
    backend: Box<dyn Backend>,
    store: Box<dyn DomainStore>,
    recoveries: Vec<Recovery>,
    /// How many of `recoveries` [`Domain::recover`] has returned.
    recoveries_reported: usize,
    /// While set, commits leave the manifest beside the data as it is
    /// ([`Domain::hold_manifest`]).
    manifest_held: bool,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("name", &self.xml.name)
            .field("uuid", &self.uuid)
            .field("backend", &self.backend.name())
            .field("snapshots", &self.tree.len())
            .finish()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Domain {
    /// A domain whose metadata lives only in memory, with the given backend.
    pub fn ephemeral(xml_text: &str, backend: Box<dyn Backend>) -> Result<Domain> {
        let xml = DomainXml::parse(xml_text)?;
        let uuid = xml.uuid.unwrap_or_else(Uuid::new_v4);
        Domain::from_parts(
            xml,
            xml_text.to_string(),
            uuid,
            SnapshotTree::new(),
            backend,
            Box::new(MemoryStore::default()),
        )
    }

    /// Assembles a domain from its stored parts and recovers any interrupted operation.
    ///
    /// Recovery needs the domain lock, but opening does not wait for it: a lock held by
    /// another handle means an operation is running there (its journal entry is not
    /// leftover), and the next mutation through this handle recovers whatever it leaves.
    /// So a read-only user is never blocked by a long operation elsewhere.
    ///
    /// A roll-forward that fails again (`INCOMPLETE`) does not fail the open: the
    /// operation stays pending ([`Domain::pending`]), reads show the state before it, and
    /// the next mutation or [`Domain::recover`] tries again and reports the error.
    pub fn from_parts(
        xml: DomainXml,
        xml_text: String,
        uuid: Uuid,
        tree: SnapshotTree,
        backend: Box<dyn Backend>,
        store: Box<dyn DomainStore>,
    ) -> Result<Domain> {
        let mut d = Domain {
            xml,
            xml_text,
            uuid,
            tree,
            backend,
            store,
            recoveries: Vec::new(),
            recoveries_reported: 0,
            manifest_held: false,
        };
        if d.store.try_lock()? {
            let result = d.sync_on_open();
            d.store.unlock();
            match result {
                Err(e) if e.code() == ErrorCode::Incomplete => {}
                other => other?,
            }
        }
        Ok(d)
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.xml.name
    }

    /// The domain's uuid.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The parsed domain XML.
    pub fn xml(&self) -> &DomainXml {
        &self.xml
    }

    /// The domain XML as defined.
    pub fn xml_text(&self) -> &str {
        &self.xml_text
    }

    /// The backend.
    pub fn backend(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    /// The generation (commit count) of the stored domain as this handle last loaded or
    /// committed it; None for a domain without a durable store.
    pub fn generation(&self) -> Option<u64> {
        self.store.generation()
    }

    /// Interrupted operations this handle rolled forward, oldest first.
    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    /// The operation that is journaled and not committed, if any: one interrupted
    /// part-way (SEMANTICS.md §7.1) or one running in another handle right now. Its plan
    /// says what it will do and `steps_done` how far it got; the tree still shows the
    /// state before it. Listings show it.
    pub fn pending(&mut self) -> Result<Option<Pending>> {
        self.refresh()?;
        Ok(self.store.pending()?.map(|entry| Pending {
            operation: entry.plan.operation.describe(&self.tree),
            entry,
        }))
    }

    /// Finishes an interrupted operation now (`snaptree recover`), under the domain lock,
    /// and says what was finished: every operation this handle rolled forward that an
    /// earlier `recover` has not returned yet, oldest first — including one that opening
    /// the domain or a mutation already finished. Empty: nothing was pending. A
    /// roll-forward that fails again returns `INCOMPLETE` and changes nothing beyond the
    /// steps it completed.
    pub fn recover(&mut self) -> Result<Vec<Recovery>> {
        self.locked(|_| Ok(()))?;
        let new = self.recoveries[self.recoveries_reported..].to_vec();
        self.recoveries_reported = self.recoveries.len();
        Ok(new)
    }

    /// The snapshot tree, reloaded first if another process changed it.
    pub fn tree(&mut self) -> Result<&SnapshotTree> {
        self.refresh()?;
        Ok(&self.tree)
    }

    /// The tree as last loaded, without checking the store.
    pub fn cached_tree(&self) -> &SnapshotTree {
        &self.tree
    }

    /// Reloads the tree if another process or handle changed the stored domain.
    pub fn refresh(&mut self) -> Result<()> {
        if self.store.changed()? {
            self.tree = self.store.load_tree()?;
        }
        Ok(())
    }

    /// Runs `f` under the domain lock, after reloading a changed tree and rolling forward
    /// an interrupted operation.
    fn locked<T>(&mut self, f: impl FnOnce(&mut Domain) -> Result<T>) -> Result<T> {
        self.store.lock()?;
        let result = self.sync_locked().and_then(|()| f(self));
        self.store.unlock();
        result
    }

    fn sync_locked(&mut self) -> Result<()> {
        if self.store.changed()? {
            self.tree = self.store.load_tree()?;
        }
        if let Some(entry) = self.store.pending()? {
            self.roll_forward(entry)?;
        }
        if !self.tree.physical_known() {
            let plan = self.layout_record()?;
            self.commit(&plan)?;
        }
        Ok(())
    }

    /// `sync_locked` for opening: a backend that cannot list its physical tree yet (a step
    /// record left mid-way) must not make the domain unreadable; the layout is learned by
    /// the next mutation, which fails with the backend's reason if it still cannot.
    fn sync_on_open(&mut self) -> Result<()> {
        match self.sync_locked() {
            Err(_) if self.store.pending()?.is_none() && !self.tree.physical_known() => Ok(()),
            other => other,
        }
    }

    /// The edits that record where retired data is stored, learned from the backend's
    /// physical tree (for metadata written before schema version 3). Retired data the
    /// backend no longer holds is forgotten; a metadata-only backend holds none, so its
    /// retired uuids are recorded on the base.
    fn layout_record(&mut self) -> Result<Plan> {
        let mut edits = Vec::new();
        let unknown: Vec<Uuid> = self
            .tree
            .retired()
            .iter()
            .filter(|r| self.tree.retired_parent(r).is_none())
            .copied()
            .collect();
        if self.backend.is_metadata_only() {
            for r in unknown {
                edits.push(Edit::SetRetiredParent {
                    snapshot: r,
                    parent: None,
                });
            }
        } else {
            let physical = self.backend.list_physical()?;
            let retired = self.tree.retired();
            for r in unknown {
                edits.push(match physical.parents.get(&r) {
                    Some(p) => Edit::SetRetiredParent {
                        snapshot: r,
                        parent: *p,
                    },
                    None => Edit::Unretire { snapshot: r },
                });
            }
            for s in self.tree.iter() {
                if let Some(Some(p)) = physical.parents.get(&s.uuid)
                    && retired.contains(p)
                    && self.tree.on_retired(&s.uuid).is_none()
                {
                    edits.push(Edit::SetOnRetired {
                        snapshot: s.uuid,
                        retired: Some(*p),
                    });
                }
            }
            if let Some(p) = physical.live_parent
                && retired.contains(&p)
            {
                edits.push(Edit::SetLiveOnRetired { retired: Some(p) });
            }
        }
        Ok(Plan {
            operation: Operation::RecordLayout,
            steps: Vec::new(),
            edits,
        })
    }

    /// The tree to plan from: the loaded one, or, when it lacks where retired data is
    /// stored (metadata from before schema version 3, not yet recorded because no
    /// mutation ran), a copy completed from the backend.
    fn planning_tree(&mut self) -> Result<Option<SnapshotTree>> {
        if self.tree.physical_known() {
            return Ok(None);
        }
        let plan = self.layout_record()?;
        let mut tree = self.tree.clone();
        planner::apply_edits(&mut tree, &plan.edits)?;
        Ok(Some(tree))
    }

    fn roll_forward(&mut self, entry: JournalEntry) -> Result<()> {
        let JournalEntry { plan, steps_done } = entry;
        let operation = plan.operation.describe(&self.tree);
        // The entry was read back from the store, so it is not the planner's word: one
        // whose edits do not fit the tree must run no step, and its commit would leave
        // rows the loader refuses (a domain nobody could open). It stays pending.
        let committed = plan.current_first();
        let steps = actions(&plan);
        let mut after = self.tree.clone();
        if let Err(e) = planner::apply_edits(&mut after, &committed.edits) {
            let stage = if steps_done < steps.len() {
                Stage::Step(steps_done)
            } else {
                Stage::Commit
            };
            let cause = Error::storage(
                format!(
                    "the journal entry of domain '{}' does not fit its stored snapshots",
                    self.xml.name
                ),
                e,
            );
            return Err(self.incomplete(&plan, stage, cause));
        }
        // A step interrupted mid-way is re-run: backends make every step restartable.
        for (i, action) in steps.iter().enumerate().skip(steps_done) {
            let done = self
                .execute(action, &mut NoProgress)
                .and_then(|()| self.store.journal_step_done(i));
            if let Err(e) = done {
                return Err(self.incomplete(&plan, Stage::Step(i), e));
            }
        }
        self.commit_journaled(&committed)?;
        self.recoveries.push(Recovery {
            plan,
            operation,
            steps_done_before: steps_done,
        });
        Ok(())
    }

    /// Commits a journaled plan whose steps all ran: a store failure here leaves the
    /// journal entry (the commit is one transaction), so the operation is `INCOMPLETE`.
    fn commit_journaled(&mut self, plan: &Plan) -> Result<()> {
        if let Err(e) = self
            .save_manifest(plan)
            .and_then(|()| self.store.commit(plan, &self.tree))
        {
            return Err(self.incomplete(plan, Stage::Commit, e));
        }
        self.apply_committed(plan)
    }

    /// Hands the backend the manifest of the tree after `plan` (`xml::manifest`), when it
    /// keeps one: before the store records the plan, so the manifest beside the data is
    /// never older than it (a crash in between leaves a newer manifest, which is read only
    /// when the store is gone).
    fn save_manifest(&mut self, plan: &Plan) -> Result<()> {
        if !self.backend.keeps_manifest() || self.manifest_held || plan.edits.is_empty() {
            return Ok(());
        }
        let mut after = self.tree.clone();
        planner::apply_edits(&mut after, &plan.edits)?;
        let policy = self.store.retention_policy()?;
        self.write_manifest(&after, policy.as_ref())
    }

    fn write_manifest(&mut self, tree: &SnapshotTree, policy: Option<&Policy>) -> Result<()> {
        let policy = policy
            .map(|p| {
                serde_json::to_string(p).map_err(|e| {
                    Error::Internal(format!("cannot encode the retention policy: {e}"))
                })
            })
            .transpose()?;
        let text = manifest::format(&self.xml.name, self.uuid, tree, policy.as_deref());
        self.backend.save_manifest(&text)
    }

    /// Leaves the manifest beside the data as it is until [`Domain::release_manifest`]:
    /// `snaptree adopt` rebuilds a tree from it one REDEFINE at a time, and a manifest
    /// rewritten after each would lose the snapshots not yet redefined if the adoption
    /// stopped part-way.
    pub fn hold_manifest(&mut self) {
        self.manifest_held = true;
    }

    /// Ends [`Domain::hold_manifest`] and writes the manifest of the tree as it is now.
    pub fn release_manifest(&mut self) -> Result<()> {
        self.manifest_held = false;
        if !self.backend.keeps_manifest() {
            return Ok(());
        }
        self.locked(|d| {
            let policy = d.store.retention_policy()?;
            let tree = d.tree.clone();
            d.write_manifest(&tree, policy.as_ref())
        })
    }

    /// The manifest the backend keeps beside the domain's data, if it keeps one
    /// (`snaptree adopt` rebuilds a lost state directory from it).
    pub fn backend_manifest(&mut self) -> Result<Option<manifest::Manifest>> {
        if !self.backend.keeps_manifest() {
            return Ok(None);
        }
        let what = format!("of domain '{}'", self.xml.name);
        self.backend
            .load_manifest()?
            .filter(|t| !t.is_empty())
            .map(|t| manifest::parse(&t, &what))
            .transpose()
    }

    /// The `INCOMPLETE` error of a journaled plan that stopped at `stage` because of
    /// `cause`, naming the operation as the tree before it does.
    fn incomplete(&self, plan: &Plan, stage: Stage, cause: Error) -> Error {
        let actions = actions(plan);
        let n = actions.len();
        Error::Incomplete {
            domain: self.xml.name.clone(),
            operation: plan.operation.describe(&self.tree),
            stage: match stage {
                Stage::Step(i) => {
                    format!("step {} of {n} ({})", i + 1, actions[i].name())
                }
                Stage::Commit => format!("the final commit (all {n} steps done)"),
            },
            source: Box::new(cause),
        }
    }

    fn commit(&mut self, plan: &Plan) -> Result<()> {
        self.save_manifest(plan)?;
        self.store.commit(plan, &self.tree)?;
        self.apply_committed(plan)
    }

    fn apply_committed(&mut self, plan: &Plan) -> Result<()> {
        // The planner made the edits fit this tree; if they do not, that is a bug, and the
        // stored tree (already committed) is the truth to reload.
        if let Err(e) = planner::apply_edits(&mut self.tree, &plan.edits) {
            if let Ok(tree) = self.store.load_tree() {
                self.tree = tree;
            }
            return Err(Error::Internal(format!(
                "plan did not fit the tree of domain '{}': {e}",
                self.xml.name
            )));
        }
        Ok(())
    }

    /// The live power state.
    pub fn power_state(&mut self) -> Result<PowerState> {
        self.backend.power_state()
    }

    // ---- planning (no change) ----

    /// Plans a create from a `<domainsnapshot>` document.
    pub fn plan_create(&mut self, snapshot_xml: &str) -> Result<Plan> {
        let xml = SnapshotXml::parse_for_create(snapshot_xml)?;
        self.refresh()?;
        let live_state = self.backend.power_state()?;
        let ctx = CreateContext {
            live_state,
            now: now(),
            fresh_uuid: Uuid::new_v4(),
        };
        let learned = self.planning_tree()?;
        let tree = learned.as_ref().unwrap_or(&self.tree);
        self.fit(
            planner::plan_create(tree, &self.xml.name, &xml, ctx)?,
            live_state,
        )
    }

    /// Plans a REDEFINE (SEMANTICS.md §7.3) from a whole `<domainsnapshot>` document;
    /// `current` is the CURRENT flag.
    pub fn plan_redefine(&mut self, snapshot_xml: &str, current: bool) -> Result<Plan> {
        let xml = SnapshotXml::parse_for_redefine(snapshot_xml)?;
        self.refresh()?;
        let live_state = self.backend.power_state()?;
        let ctx = self.redefine_context(current);
        let learned = self.planning_tree()?;
        let tree = learned.as_ref().unwrap_or(&self.tree);
        self.fit(
            planner::plan_redefine(tree, &self.xml.name, &xml, ctx)?,
            live_state,
        )
    }

    fn redefine_context(&self, current: bool) -> RedefineContext {
        RedefineContext {
            domain_uuid: self.uuid,
            now: now(),
            current,
        }
    }

    /// Plans a revert.
    pub fn plan_revert(
        &mut self,
        snapshot: &Uuid,
        force_state: Option<PowerState>,
    ) -> Result<Plan> {
        self.refresh()?;
        let learned = self.planning_tree()?;
        let tree = learned.as_ref().unwrap_or(&self.tree);
        let plan = planner::plan_revert(tree, &self.xml.name, snapshot, force_state)?;
        let state = self.backend.power_state()?;
        self.fit(plan, state)
    }

    /// Plans a KEEP_LIVE revert (SEMANTICS.md §7.4).
    pub fn plan_revert_keep_live(
        &mut self,
        snapshot: &Uuid,
        force_state: Option<PowerState>,
        keep_name: Option<&str>,
    ) -> Result<Plan> {
        self.refresh()?;
        let live_state = self.backend.power_state()?;
        let ctx = CreateContext {
            live_state,
            now: now(),
            fresh_uuid: Uuid::new_v4(),
        };
        let learned = self.planning_tree()?;
        let tree = learned.as_ref().unwrap_or(&self.tree);
        let plan = planner::plan_revert_keep_live(
            tree,
            &self.xml.name,
            snapshot,
            force_state,
            keep_name,
            ctx,
        )?;
        self.fit(plan, live_state)
    }

    /// What `prune` would delete now, in order, each with its CONSOLIDATE plan and the
    /// bytes the backend estimates it frees: changes nothing (`--dry-run`). The estimates
    /// are taken against the data as it is now, so after the first delete they are
    /// approximate where deletes touch the same layers.
    pub fn plan_prune(&mut self) -> Result<Vec<Pruned>> {
        self.refresh()?;
        let policy = self.store.retention_policy()?;
        let learned = self.planning_tree()?;
        let tree = learned.unwrap_or_else(|| self.tree.clone());
        let state = self.backend.power_state()?;
        let mut out = self.prune_plans(tree, policy.as_ref(), state)?;
        for p in &mut out {
            p.freed = self.net_freed(&p.plan);
        }
        Ok(out)
    }

    /// Every prune victim with its CONSOLIDATE plan, each planned on the tree the deletes
    /// before it leave and checked against what the backend can do in power state `state`.
    fn prune_plans(
        &self,
        mut tree: SnapshotTree,
        policy: Option<&Policy>,
        state: PowerState,
    ) -> Result<Vec<Pruned>> {
        let mut out = Vec::new();
        for (uuid, reason) in retention::prune_victims(&tree, policy, now()) {
            let plan = planner::plan_delete(&tree, &self.xml.name, &uuid, DeleteMode::Consolidate)?;
            let plan = self.fit(plan, state)?;
            let name = tree.require(&uuid, &self.xml.name)?.name.clone();
            planner::apply_edits(&mut tree, &plan.edits)?;
            out.push(Pruned {
                uuid,
                name,
                reason,
                plan,
                freed: None,
            });
        }
        Ok(out)
    }

    /// The bytes `plan` frees net of what it writes, summed over every file system, as
    /// the backend estimates them; None when it cannot tell. An estimate that fails is
    /// no estimate: it never stops the operation it describes.
    fn net_freed(&mut self, plan: &Plan) -> Option<u64> {
        let estimate = self.estimate_space(plan).ok().flatten()?;
        let (freed, written) = estimate
            .file_systems
            .iter()
            .fold((0u64, 0u64), |(f, w), fs| (f + fs.freed, w + fs.written));
        Some(freed.saturating_sub(written))
    }

    /// Plans a rename.
    pub fn plan_rename(&mut self, snapshot: &Uuid, new_name: &str) -> Result<Plan> {
        self.refresh()?;
        planner::plan_rename(&self.tree, &self.xml.name, snapshot, new_name)
    }

    /// Plans a delete.
    pub fn plan_delete(&mut self, snapshot: &Uuid, mode: DeleteMode) -> Result<Plan> {
        self.refresh()?;
        let learned = self.planning_tree()?;
        let tree = learned.as_ref().unwrap_or(&self.tree);
        let plan = planner::plan_delete(tree, &self.xml.name, snapshot, mode)?;
        let state = self.backend.power_state()?;
        self.fit(plan, state)
    }

    /// Plans a delete-all.
    pub fn plan_delete_all(&mut self) -> Result<Plan> {
        self.refresh()?;
        let learned = self.planning_tree()?;
        let plan = planner::plan_delete_all(learned.as_ref().unwrap_or(&self.tree))?;
        let state = self.backend.power_state()?;
        self.fit(plan, state)
    }

    /// Plans a reclaim of retired data.
    pub fn plan_reclaim(&mut self) -> Result<Plan> {
        self.refresh()?;
        let learned = self.planning_tree()?;
        let plan = planner::plan_reclaim(learned.as_ref().unwrap_or(&self.tree))?;
        let state = self.backend.power_state()?;
        self.fit(plan, state)
    }

    /// Checks a plan against the backend's capabilities in the live power state, and drops
    /// the optional steps (`forget`, `detach_live`) the backend does not implement.
    fn fit(&self, mut plan: Plan, live: PowerState) -> Result<Plan> {
        if let Some(a) = plan.adoption()
            && !self.backend.can_adopt()
        {
            return Err(Error::OperationInvalid(format!(
                "backend '{}' cannot adopt existing data, so snapshot '{}' cannot be redefined on domain '{}'",
                self.backend.name(),
                a.name,
                self.xml.name
            )));
        }
        let caps = self.backend.capabilities();
        plan.steps.retain(|s| {
            let optional = matches!(s.kind(), StepKind::Forget | StepKind::DetachLive);
            !optional || caps.supports(s.kind())
        });
        for step in &plan.steps {
            let kind = step.kind();
            if !caps.supports(kind) {
                return Err(Error::OperationInvalid(format!(
                    "backend '{}' cannot {}",
                    self.backend.name(),
                    kind.verb()
                )));
            }
            if !caps.allows(kind, live) {
                return Err(Error::OperationInvalid(format!(
                    "backend '{}' can {} only while the domain is {}; domain '{}' is {}",
                    self.backend.name(),
                    kind.verb(),
                    caps.power_states(kind).describe(),
                    self.xml.name,
                    shown_state(live)
                )));
            }
            // A revert leaves the domain in a power state of its own (SEMANTICS.md §4): a
            // backend that cannot revert in that state cannot leave the domain there either.
            if let Step::Revert { state, .. } = step
                && !caps.allows(kind, *state)
            {
                return Err(Error::OperationInvalid(format!(
                    "backend '{}' can {} only while the domain is {}; this revert would leave domain '{}' {}",
                    self.backend.name(),
                    kind.verb(),
                    caps.power_states(kind).describe(),
                    self.xml.name,
                    shown_state(*state)
                )));
            }
        }
        Ok(plan)
    }

    // ---- operations ----

    /// Takes a snapshot; returns its uuid.
    pub fn create_snapshot(&mut self, snapshot_xml: &str) -> Result<Uuid> {
        let xml = SnapshotXml::parse_for_create(snapshot_xml)?;
        let plan = self.locked(|d| {
            let live_state = d.backend.power_state()?;
            let ctx = CreateContext {
                live_state,
                now: now(),
                fresh_uuid: Uuid::new_v4(),
            };
            let plan = d.fit(
                planner::plan_create(&d.tree, &d.xml.name, &xml, ctx)?,
                live_state,
            )?;
            d.run(plan, &mut NoProgress)
        })?;
        match plan
            .steps
            .first()
            .and_then(Step::snapshot)
            .or_else(|| plan.edits.iter().find_map(added))
        {
            Some(u) => Ok(u),
            None => Err(Error::Internal("a create plan added no snapshot".into())),
        }
    }

    /// REDEFINE (SEMANTICS.md §7.3): imports a snapshot's metadata from its whole
    /// `<domainsnapshot>` document (libvirt's `snapshot-dumpxml` output as it is) and has
    /// the backend adopt the data it already holds; the live state is not frozen.
    /// `current` (the CURRENT flag) makes the snapshot current. Returns its uuid.
    pub fn redefine_snapshot(&mut self, snapshot_xml: &str, current: bool) -> Result<Uuid> {
        let xml = SnapshotXml::parse_for_redefine(snapshot_xml)?;
        let plan = self.locked(|d| {
            let live_state = d.backend.power_state()?;
            let ctx = d.redefine_context(current);
            let plan = d.fit(
                planner::plan_redefine(&d.tree, &d.xml.name, &xml, ctx)?,
                live_state,
            )?;
            d.run(plan, &mut NoProgress)
        })?;
        match plan.operation {
            Operation::Redefine { snapshot, .. } => Ok(snapshot),
            _ => Err(Error::Internal(
                "a redefine planned another operation".into(),
            )),
        }
    }

    /// Reverts the live state to a snapshot.
    pub fn revert(
        &mut self,
        snapshot: &Uuid,
        force_state: Option<PowerState>,
        progress: &mut dyn Progress,
    ) -> Result<Plan> {
        self.locked(|d| {
            let plan = planner::plan_revert(&d.tree, &d.xml.name, snapshot, force_state)?;
            let state = d.backend.power_state()?;
            let plan = d.fit(plan, state)?;
            d.run(plan, progress)
        })
    }

    /// KEEP_LIVE revert (SEMANTICS.md §7.4): snapshots the live state as a new snapshot
    /// K (named `keep_name`, else `pre-revert-<creationdate>`), then reverts to
    /// `snapshot`, as one journaled plan: after a crash, recovery leaves neither or both.
    /// A backend that cannot create in the live power state is refused before anything
    /// runs. Returns the plan run; [`Operation::RevertKeepLive`] names K.
    pub fn revert_keep_live(
        &mut self,
        snapshot: &Uuid,
        force_state: Option<PowerState>,
        keep_name: Option<&str>,
        progress: &mut dyn Progress,
    ) -> Result<Plan> {
        self.locked(|d| {
            let live_state = d.backend.power_state()?;
            let ctx = CreateContext {
                live_state,
                now: now(),
                fresh_uuid: Uuid::new_v4(),
            };
            let plan = planner::plan_revert_keep_live(
                &d.tree,
                &d.xml.name,
                snapshot,
                force_state,
                keep_name,
                ctx,
            )?;
            let plan = d.fit(plan, live_state)?;
            d.run(plan, progress)
        })
    }

    /// Pins (`prune` never deletes it) or unpins a snapshot. Metadata only.
    pub fn set_pinned(&mut self, snapshot: &Uuid, pinned: bool) -> Result<Plan> {
        self.locked(|d| {
            let plan = planner::plan_pin(&d.tree, &d.xml.name, snapshot, pinned)?;
            d.run(plan, &mut NoProgress)
        })
    }

    /// The domain's retention policy (SEMANTICS.md §7.5), if it has one.
    pub fn retention_policy(&mut self) -> Result<Option<Policy>> {
        self.store.retention_policy()
    }

    /// Sets the domain's retention policy, or with None removes it. Nothing is deleted
    /// until `prune`.
    pub fn set_retention_policy(&mut self, policy: Option<&Policy>) -> Result<()> {
        self.locked(|d| {
            // The manifest beside the data first, as for every commit.
            if d.backend.keeps_manifest() && !d.manifest_held && !d.tree.is_empty() {
                let tree = d.tree.clone();
                d.write_manifest(&tree, policy)?;
            }
            d.store.set_retention_policy(policy)
        })
    }

    /// Prune (SEMANTICS.md §7.5): deletes with CONSOLIDATE, oldest first, every expired
    /// snapshot and every one the retention policy does not keep; never the current
    /// snapshot, never a pinned one. Each delete is its own plan and journal entry, so
    /// survivors' contents and the live state are unchanged after each. Holds the domain
    /// lock throughout. A delete that fails stops the prune with its error; the deletes
    /// before it stay done, and running prune again continues. Every delete is planned and
    /// checked first: one the backend cannot do in the live power state refuses the prune
    /// before any delete runs. Each victim carries the bytes the backend estimated, just
    /// before its delete ran, that it would free.
    pub fn prune(&mut self, progress: &mut dyn Progress) -> Result<Vec<Pruned>> {
        self.locked(|d| {
            let policy = d.store.retention_policy()?;
            let state = d.backend.power_state()?;
            // Every delete planned and checked up front on a copy of the tree: a backend
            // that cannot consolidate one of them refuses before any runs.
            let planned = d.prune_plans(d.tree.clone(), policy.as_ref(), state)?;
            let mut out = Vec::new();
            for victim in planned {
                let plan = planner::plan_delete(
                    &d.tree,
                    &d.xml.name,
                    &victim.uuid,
                    DeleteMode::Consolidate,
                )?;
                let plan = d.fit(plan, state)?;
                let freed = d.net_freed(&plan);
                let plan = d.run(plan, progress)?;
                out.push(Pruned {
                    plan,
                    freed,
                    ..victim
                });
            }
            Ok(out)
        })
    }

    /// Renames a snapshot.
    pub fn rename(&mut self, snapshot: &Uuid, new_name: &str) -> Result<Plan> {
        self.locked(|d| {
            let plan = planner::plan_rename(&d.tree, &d.xml.name, snapshot, new_name)?;
            d.run(plan, &mut NoProgress)
        })
    }

    /// Deletes a snapshot in a mode.
    pub fn delete(
        &mut self,
        snapshot: &Uuid,
        mode: DeleteMode,
        progress: &mut dyn Progress,
    ) -> Result<Plan> {
        self.locked(|d| {
            let plan = planner::plan_delete(&d.tree, &d.xml.name, snapshot, mode)?;
            let state = d.backend.power_state()?;
            let plan = d.fit(plan, state)?;
            d.run(plan, progress)
        })
    }

    /// Deletes every snapshot.
    pub fn delete_all(&mut self, progress: &mut dyn Progress) -> Result<Plan> {
        self.locked(|d| {
            let plan = planner::plan_delete_all(&d.tree)?;
            let state = d.backend.power_state()?;
            let plan = d.fit(plan, state)?;
            d.run(plan, progress)
        })
    }

    /// Frees the data of every retired snapshot (SEMANTICS.md §7.2): each is consolidated
    /// into what is stored on it, so every snapshot's content and the live state stay as
    /// they are. Returns the plan run: its `consolidate` and `discard_leaf` steps name the
    /// retired snapshots whose data was freed (backends do not report bytes). A backend
    /// that cannot consolidate is refused with `OPERATION_INVALID` before anything runs,
    /// when there is retired data to reclaim.
    pub fn reclaim(&mut self, progress: &mut dyn Progress) -> Result<Plan> {
        self.locked(|d| {
            let plan = planner::plan_reclaim(&d.tree)?;
            let state = d.backend.power_state()?;
            let plan = d.fit(plan, state)?;
            d.run(plan, progress)
        })
    }

    /// The backend's estimate of what `plan` writes and frees on each file system
    /// (SEMANTICS.md §7.7), its steps' estimates summed; `None` when the backend cannot
    /// estimate one of its steps. Changes nothing.
    pub fn estimate_space(&mut self, plan: &Plan) -> Result<Option<SpaceEstimate>> {
        let mut total = SpaceEstimate::default();
        for step in &plan.steps {
            match self.backend.estimate(step)? {
                Some(uses) => total.add(&uses),
                None => return Ok(None),
            }
        }
        Ok(Some(total))
    }

    /// What a snapshot holds (SEMANTICS.md §7.7): the bytes only its data holds, and the
    /// bytes a CONSOLIDATE delete of it would free, summed over every file system, as the
    /// backend estimates them. `None` when the backend cannot estimate, or cannot
    /// consolidate that snapshot now. Changes nothing.
    pub fn snapshot_size(&mut self, snapshot: &Uuid) -> Result<Option<SnapshotSize>> {
        let plan = match self.plan_delete(snapshot, DeleteMode::Consolidate) {
            Ok(plan) => plan,
            Err(e) if e.code() == ErrorCode::OperationInvalid => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(whole) = self.estimate_space(&plan)? else {
            return Ok(None);
        };
        let Some(own) = self.backend.estimate(&Step::Consolidate {
            snapshot: *snapshot,
        })?
        else {
            return Ok(None);
        };
        let held = own.iter().map(|u| u.freed).sum();
        let (freed, written) = whole
            .file_systems
            .iter()
            .fold((0u64, 0u64), |(f, w), fs| (f + fs.freed, w + fs.written));
        Ok(Some(SnapshotSize {
            held,
            frees: freed.saturating_sub(written),
        }))
    }

    /// Refuses, with `NO_SPACE` naming the file system, a plan whose estimated writes do
    /// not fit in the free space there; before anything runs.
    fn check_space(&mut self, plan: &Plan) -> Result<()> {
        let Some(estimate) = self.estimate_space(plan)? else {
            return Ok(());
        };
        match estimate.shortfall() {
            None => Ok(()),
            Some(fs) => Err(Error::NoSpace {
                domain: self.xml.name.clone(),
                operation: plan.operation.describe(&self.tree),
                path: fs.path.clone(),
                needed: fs.written,
                free: fs.free_before,
            }),
        }
    }

    /// Runs a plan: journal, steps, commit. A failure in the first step that left the
    /// physical tree as it was drops the journal entry (backends undo a step that fails)
    /// and returns the error itself: nothing changed. Any other failure leaves the entry,
    /// the next use of the domain rolls the operation forward, and the call returns
    /// `INCOMPLETE` (SEMANTICS.md §7.1) with the failure as its source.
    fn run(&mut self, plan: Plan, progress: &mut dyn Progress) -> Result<Plan> {
        let actions = actions(&plan);
        let journaled = !actions.is_empty() && !self.backend.is_metadata_only();
        if journaled {
            self.check_space(&plan)?;
        }
        // The physical tree before anything runs, to tell a cleanly failed first step
        // from one that changed something (see `first_step_left_nothing`).
        let physical_before = if journaled {
            self.backend.list_physical().ok()
        } else {
            None
        };
        if journaled {
            self.store.journal_begin(&plan)?;
        }
        if !journaled {
            for action in &actions {
                self.execute(action, progress)?;
            }
            self.commit(&plan)?;
            return Ok(plan);
        }
        for (i, action) in actions.iter().enumerate() {
            if let Err(e) = self.execute(action, progress) {
                // An entry that cannot be dropped stays and is rolled forward: incomplete.
                if i == 0
                    && self.first_step_left_nothing(physical_before.as_ref())
                    && self.store.journal_abort().is_ok()
                {
                    return Err(e);
                }
                return Err(self.incomplete(&plan, Stage::Step(i), e));
            }
            // Every step is recorded, the last included: a re-run of a finished step is
            // not always harmless (a revert run again throws away what the guest did
            // since), so a failed commit must not bring one back.
            if let Err(e) = self.store.journal_step_done(i) {
                return Err(self.incomplete(&plan, Stage::Step(i), e));
            }
        }
        self.commit_journaled(&plan)?;
        Ok(plan)
    }

    /// Runs one action of a plan on the backend.
    fn execute(&mut self, action: &Action<'_>, progress: &mut dyn Progress) -> Result<()> {
        match action {
            Action::Adopt(a) => self.backend.adopt(a, progress),
            Action::Step(s) => self.backend.execute(s, progress),
        }
    }

    /// After the first step of a plan failed: whether the backend's physical tree is
    /// still what it was before the step, so the operation can be dropped as if never
    /// begun. Backends undo a failed step, but one that failed past its point of no return
    /// (a disk filling up mid-commit) cannot; then the journal entry stays and the next
    /// use of the domain finishes the operation instead of leaving metadata and data
    /// apart. Comparing with the tree before (not with the metadata) keeps a domain that
    /// had already drifted from being stuck with an entry that can never complete.
    fn first_step_left_nothing(&mut self, before: Option<&PhysicalTree>) -> bool {
        match before {
            // Nothing to compare with (the backend could not list its tree before the
            // step): trust its promise that a failed step changed nothing.
            None => true,
            Some(before) => self.backend.list_physical().is_ok_and(|now| *before == now),
        }
    }

    // ---- views ----

    /// The `<domainsnapshot>` document of a snapshot.
    pub fn snapshot_xml(&mut self, snapshot: &Uuid) -> Result<String> {
        self.refresh()?;
        let s = self.tree.require(snapshot, &self.xml.name)?;
        let parent = self.tree.parent(snapshot);
        Ok(SnapshotXml {
            name: Some(s.name.clone()),
            uuid: Some(s.uuid),
            description: Some(s.description.clone()),
            creation_date: Some(s.creation_date),
            state: Some(s.state),
            domain_uuid: Some(self.uuid),
            parent_name: parent.map(|p| p.name.clone()),
            parent_uuid: parent.map(|p| p.uuid),
            expires: s.expires,
        }
        .format())
    }

    /// Checks SEMANTICS.md §3.7: the backend's physical tree agrees with the engine's
    /// (uuids, parent links, current), counting retired uuids as known.
    pub fn check_agreement(&mut self) -> Result<()> {
        self.refresh()?;
        if self.backend.is_metadata_only() {
            return Ok(());
        }
        let physical = self.backend.list_physical()?;
        agreement(&self.tree, &physical).map_err(|why| Error::Backend {
            backend: self.backend.name().to_string(),
            message: format!(
                "the physical snapshots of domain '{}' disagree with its metadata: {why}",
                self.xml.name
            ),
        })
    }
}

/// One thing a plan runs, in order: its adoption (a REDEFINE's), then its steps. The
/// journal counts actions, so `steps_done` covers the adoption too.
enum Action<'p> {
    /// `adopt(S, parent)`.
    Adopt(Adoption),
    /// A step of SEMANTICS.md §4.
    Step(&'p Step),
}

impl Action<'_> {
    fn name(&self) -> &'static str {
        match self {
            Action::Adopt(_) => "adopt",
            Action::Step(s) => s.kind().name(),
        }
    }
}

fn actions(plan: &Plan) -> Vec<Action<'_>> {
    plan.adoption()
        .map(Action::Adopt)
        .into_iter()
        .chain(plan.steps.iter().map(Action::Step))
        .collect()
}

/// Where a journaled plan stopped.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Step i (0-based) failed, or recording it as done did.
    Step(usize),
    /// Every step ran; committing the edits failed.
    Commit,
}

fn shown_state(state: PowerState) -> &'static str {
    if state == PowerState::Shutoff {
        "shut off"
    } else {
        state.as_str()
    }
}

fn added(e: &crate::plan::Edit) -> Option<Uuid> {
    match e {
        crate::plan::Edit::Add { snapshot, .. } => Some(snapshot.uuid),
        _ => None,
    }
}

/// Compares a tree with a physical tree; the error says the first difference.
pub fn agreement(tree: &SnapshotTree, physical: &PhysicalTree) -> std::result::Result<(), String> {
    let retired = tree.retired();
    // Physical parent, skipping retired layers that sit between a snapshot and its parent.
    let visible_parent = |mut p: Option<Uuid>| -> std::result::Result<Option<Uuid>, String> {
        let mut hops = 0;
        while let Some(u) = p {
            if !retired.contains(&u) {
                break;
            }
            p = *physical
                .parents
                .get(&u)
                .ok_or_else(|| format!("retired layer {u} vanished"))?;
            hops += 1;
            if hops > physical.parents.len() {
                return Err("the physical parents form a cycle".into());
            }
        }
        Ok(p)
    };
    for s in tree.iter() {
        let Some(pp) = physical.parents.get(&s.uuid) else {
            return Err(format!(
                "snapshot '{}' ({}) has no physical data",
                s.name, s.uuid
            ));
        };
        let want = tree.parent(&s.uuid).map(|p| p.uuid);
        let got = visible_parent(*pp)?;
        if got != want {
            return Err(format!(
                "snapshot '{}' has physical parent {got:?}, metadata parent {want:?}",
                s.name
            ));
        }
    }
    for u in physical.parents.keys() {
        if !tree.contains(u) && !retired.contains(u) {
            return Err(format!("physical data for unknown snapshot {u}"));
        }
    }
    let live = visible_parent(physical.live_parent)?;
    let current = tree.current().map(|c| c.uuid);
    if live != current {
        return Err(format!(
            "the live state derives from {live:?}, but current is {current:?}"
        ));
    }
    Ok(())
}
