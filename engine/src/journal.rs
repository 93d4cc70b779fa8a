//! The persistence a domain needs: a lock, change detection, and the intent journal.
//! [`MemoryStore`] keeps it all in memory; the SQLite store keeps it on disk.

use crate::error::Result;
use crate::plan::Plan;
use crate::tree::SnapshotTree;

/// An operation that was journaled and not yet committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The plan.
    pub plan: Plan,
    /// How many of its steps are known to be done.
    pub steps_done: usize,
}

/// An operation journaled and not finished (SEMANTICS.md §7.1), as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The operation in words, naming snapshots as the tree before it does (the tree every
    /// read shows until it finishes).
    pub operation: String,
    /// The plan and how many of its steps are done.
    pub entry: JournalEntry,
}

/// Where a domain's metadata and journal live.
pub trait DomainStore: Send {
    /// Takes the domain's lock (waiting up to the store's timeout, then `BUSY`).
    fn lock(&mut self) -> Result<()>;
    /// Takes the domain's lock if it is free, without waiting; false if another handle
    /// holds it.
    fn try_lock(&mut self) -> Result<bool> {
        self.lock().map(|()| true)
    }
    /// Releases the lock.
    fn unlock(&mut self);
    /// Whether the stored domain changed since this handle last loaded or committed it.
    /// Must be cheap: it runs before every read.
    fn changed(&mut self) -> Result<bool>;
    /// Loads the stored tree.
    fn load_tree(&mut self) -> Result<SnapshotTree>;
    /// The journal entry left by an interrupted operation, if any.
    fn pending(&mut self) -> Result<Option<JournalEntry>>;
    /// Records the intent to run `plan`, durably, before its first step.
    fn journal_begin(&mut self, plan: &Plan) -> Result<()>;
    /// Records that step `index` of the journaled plan is done.
    fn journal_step_done(&mut self, index: usize) -> Result<()>;
    /// Applies the plan's edits to the stored metadata and removes the journal entry, in
    /// one transaction. `before` is the tree the plan was made on, as loaded or last
    /// committed by this handle: a store keys its rows by the tree's sequence numbers
    /// (`SnapshotTree::next_seq` for added snapshots).
    fn commit(&mut self, plan: &Plan, before: &SnapshotTree) -> Result<()>;
    /// Removes the journal entry of a plan none of whose steps ran.
    fn journal_abort(&mut self) -> Result<()>;
    /// The generation (commit count) of the stored domain as this handle last loaded or
    /// committed it, for stores that keep one.
    fn generation(&self) -> Option<u64> {
        None
    }
    /// The domain's retention policy (SEMANTICS.md §7.5), if it has one. Called under
    /// the domain lock by `prune`, so a store reads it fresh. A store that keeps no
    /// policies says so.
    fn retention_policy(&mut self) -> Result<Option<crate::retention::Policy>> {
        Err(crate::Error::OperationInvalid(
            "this metadata store keeps no retention policies".into(),
        ))
    }
    /// Sets the domain's retention policy, or with None removes it; called under the
    /// domain lock.
    fn set_retention_policy(&mut self, _policy: Option<&crate::retention::Policy>) -> Result<()> {
        Err(crate::Error::OperationInvalid(
            "this metadata store keeps no retention policies".into(),
        ))
    }
}

/// A store that keeps nothing beyond the process: for ephemeral domains and tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pending: Option<JournalEntry>,
    policy: Option<crate::retention::Policy>,
}

impl DomainStore for MemoryStore {
    fn lock(&mut self) -> Result<()> {
        Ok(())
    }
    fn unlock(&mut self) {}
    fn changed(&mut self) -> Result<bool> {
        Ok(false)
    }
    fn load_tree(&mut self) -> Result<SnapshotTree> {
        Err(crate::Error::Internal(
            "a memory store has no stored tree to load".into(),
        ))
    }
    fn pending(&mut self) -> Result<Option<JournalEntry>> {
        Ok(self.pending.clone())
    }
    fn journal_begin(&mut self, plan: &Plan) -> Result<()> {
        self.pending = Some(JournalEntry {
            plan: plan.clone(),
            steps_done: 0,
        });
        Ok(())
    }
    fn journal_step_done(&mut self, index: usize) -> Result<()> {
        if let Some(p) = &mut self.pending {
            p.steps_done = index + 1;
        }
        Ok(())
    }
    fn commit(&mut self, _plan: &Plan, _before: &SnapshotTree) -> Result<()> {
        self.pending = None;
        Ok(())
    }
    fn journal_abort(&mut self) -> Result<()> {
        self.pending = None;
        Ok(())
    }
    fn retention_policy(&mut self) -> Result<Option<crate::retention::Policy>> {
        Ok(self.policy)
    }
    fn set_retention_policy(&mut self, policy: Option<&crate::retention::Policy>) -> Result<()> {
        self.policy = policy.copied();
        Ok(())
    }
}
