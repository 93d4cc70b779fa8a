//! An open domain: its tree, its backend and its store, and the executor that runs a plan
//! through the backend with the intent journal around it.

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::backend::{Backend, NoProgress, PhysicalTree, Progress};
use crate::error::{Error, Result};
use crate::journal::{DomainStore, JournalEntry, MemoryStore};
use crate::model::PowerState;
use crate::plan::{DeleteMode, Plan, Step, StepKind};
use crate::planner::{self, CreateContext};
use crate::tree::SnapshotTree;
use crate::xml::{DomainXml, SnapshotXml};

/// What recovery did when a domain was found with an interrupted operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The plan that was rolled forward.
    pub plan: Plan,
    /// How many of its steps had been done before the interruption.
    pub steps_done_before: usize,
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
        };
        if d.store.try_lock()? {
            let result = d.sync_locked();
            d.store.unlock();
            result?;
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
        Ok(())
    }

    fn roll_forward(&mut self, entry: JournalEntry) -> Result<()> {
        let JournalEntry { plan, steps_done } = entry;
        // A step interrupted mid-way is re-run: backends make every step restartable.
        for (i, step) in plan.steps.iter().enumerate().skip(steps_done) {
            self.backend.execute(step, &mut NoProgress).map_err(|e| {
                Error::Backend {
                    backend: self.backend.name().to_string(),
                    message: format!(
                        "domain '{}' has an interrupted operation that cannot be completed yet (step {} of {}, {}): {}",
                        self.xml.name,
                        i + 1,
                        plan.steps.len(),
                        step.kind().name(),
                        e.full_message()
                    ),
                }
            })?;
            self.store.journal_step_done(i)?;
        }
        self.commit(&plan)?;
        self.recoveries.push(Recovery {
            plan,
            steps_done_before: steps_done,
        });
        Ok(())
    }

    fn commit(&mut self, plan: &Plan) -> Result<()> {
        self.store.commit(plan)?;
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
        self.fit(
            planner::plan_create(&self.tree, &self.xml.name, &xml, ctx)?,
            live_state,
        )
    }

    /// Plans a revert.
    pub fn plan_revert(
        &mut self,
        snapshot: &Uuid,
        force_state: Option<PowerState>,
    ) -> Result<Plan> {
        self.refresh()?;
        let plan = planner::plan_revert(&self.tree, &self.xml.name, snapshot, force_state)?;
        let state = self.backend.power_state()?;
        self.fit(plan, state)
    }

    /// Plans a rename.
    pub fn plan_rename(&mut self, snapshot: &Uuid, new_name: &str) -> Result<Plan> {
        self.refresh()?;
        planner::plan_rename(&self.tree, &self.xml.name, snapshot, new_name)
    }

    /// Plans a delete.
    pub fn plan_delete(&mut self, snapshot: &Uuid, mode: DeleteMode) -> Result<Plan> {
        self.refresh()?;
        let plan = planner::plan_delete(&self.tree, &self.xml.name, snapshot, mode)?;
        let state = self.backend.power_state()?;
        self.fit(plan, state)
    }

    /// Plans a delete-all.
    pub fn plan_delete_all(&mut self) -> Result<Plan> {
        self.refresh()?;
        let plan = planner::plan_delete_all(&self.tree);
        let state = self.backend.power_state()?;
        self.fit(plan, state)
    }

    /// Checks a plan against the backend's capabilities in the live power state, and drops
    /// the optional steps (`forget`, `detach_live`) the backend does not implement.
    fn fit(&self, mut plan: Plan, live: PowerState) -> Result<Plan> {
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
                    if live == PowerState::Shutoff {
                        "shut off"
                    } else {
                        live.as_str()
                    }
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
            let plan = planner::plan_delete_all(&d.tree);
            let state = d.backend.power_state()?;
            let plan = d.fit(plan, state)?;
            d.run(plan, progress)
        })
    }

    /// Runs a plan: journal, steps, commit. A failure in the first step that left the
    /// physical tree as it was drops the journal entry (backends undo a step that fails);
    /// any other failure leaves the entry, and the next use of the domain rolls the
    /// operation forward.
    fn run(&mut self, plan: Plan, progress: &mut dyn Progress) -> Result<Plan> {
        let journaled = !plan.steps.is_empty() && !self.backend.is_metadata_only();
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
        for (i, step) in plan.steps.iter().enumerate() {
            if let Err(e) = self.backend.execute(step, progress) {
                if journaled && i == 0 && self.first_step_left_nothing(physical_before.as_ref()) {
                    self.store.journal_abort()?;
                }
                return Err(e);
            }
            if journaled {
                self.store.journal_step_done(i)?;
            }
        }
        self.commit(&plan)?;
        Ok(plan)
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
