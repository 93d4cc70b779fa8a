//! What the backend measured about itself: time spent inside qemu-img and qemu-io, and the
//! choices consolidate made, so a benchmark can report the engine's overhead and the bytes
//! the per-disk choice saved.

use std::time::Duration;

use snaptree_engine::Uuid;

/// How a layer that is being freed hands its data to the files that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsolidatePolicy {
    /// Per disk, whichever moves fewer bytes (measured with `qemu-img map`).
    #[default]
    Cheapest,
    /// Commit whenever it is valid (one dependent), as `qemu-img commit`-based tools do.
    AlwaysCommit,
    /// Always rebase the dependents onto the freed layer's parent.
    AlwaysRebase,
}

/// Which way a freed layer's data went on one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Nothing depended on the layer: it was deleted.
    Nothing,
    /// Its only dependent was committed down into it, and it took the dependent's place.
    Commit,
    /// Every dependent was rebased (safe mode) onto the layer's parent.
    Rebase,
}

/// One layer freed by discard, consolidate or a merge into the base, on one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsolidateRecord {
    /// The snapshot whose layer was freed.
    pub snapshot: Uuid,
    /// The disk's label.
    pub disk: String,
    /// How many files depended on the layer.
    pub dependents: usize,
    /// What was done.
    pub choice: Choice,
    /// Bytes a commit would copy (the dependent's own data), when a commit was valid.
    pub commit_estimate: Option<u64>,
    /// Bytes rebasing could copy at most (the layer's own data, once per dependent).
    pub rebase_estimate: u64,
    /// Bytes actually copied, measured on the files after the fact.
    pub bytes_moved: u64,
}

/// Counters of one backend (shared by its handles).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Wall time spent waiting for qemu-img / qemu-io subprocesses.
    pub qemu_time: Duration,
    /// How many such subprocesses ran.
    pub qemu_calls: u64,
    /// Wall time spent in the backend's own file-system work: renames, links, deleting
    /// freed layers (and waiting for their blocks to be freed before a step or an
    /// estimate), metadata files, the fsyncs that make them durable, and the qemu-img work
    /// done in process (new overlays, snapshot tables, lock tests). Part of the backend's
    /// time on top of qemu-img, spent in the kernel, not computing.
    pub fs_time: Duration,
    /// Removed layers whose blocks were given back after the call that removed them
    /// returned, by the backend's own thread (the name is gone at once either way).
    pub deferred_frees: u64,
    /// The freed layers, in order (the latest thousand).
    pub consolidations: Vec<ConsolidateRecord>,
}

impl Stats {
    /// Total bytes copied by all freed layers.
    pub fn bytes_moved(&self) -> u64 {
        self.consolidations.iter().map(|r| r.bytes_moved).sum()
    }
}
