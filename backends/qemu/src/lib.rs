//! snaptree's QEMU backend: snapshots of a domain whose disks are qcow2 files, done offline
//! with `qemu-img` (through the `snaptree-qemu-img` wrapper), and — when the domain XML names
//! QEMU's QMP socket (`<qmp socket='PATH'/>` inside `<domain>`) and the VM runs or is paused —
//! live snapshots over QMP (through `snaptree-qmp`): with memory for internal-mode disks
//! (`live::internal`), disk-only for external-mode disks (`live::external`: a `transaction` of
//! `blockdev-snapshot` for create, `block-stream`, intermediate `block-commit` and active
//! `block-commit` with pivot for discard, consolidate, merge and detach, revert only shut
//! off).
//!
//! Live mode, per step, for a domain whose disks are all in internal mode (a domain mixing
//! the modes keeps every step shut off, so the engine refuses them while it runs):
//! create = `snapshot-save` (tag = snapshot uuid, VM state on the first disk), revert =
//! `snapshot-load` then `stop`/`cont` to the step's state (a revert to "shut off" while the
//! VM runs is refused), discard/consolidate = `snapshot-delete`, merge = the offline borrow
//! sequence with the VM stopped and memory saved, detach/forget = the record only. The
//! `<disk>.snaptree.json` record is kept exactly as offline, so both modes read one tree.
//!
//! Each `<disk>` of the domain keeps its snapshots in the mode its `snapshot` attribute says:
//!
//! - `external` (default): each snapshot is a read-only qcow2 layer
//!   `<disk>.snapshots/<snapshot uuid>.qcow2` beside the disk, holding its content as a delta
//!   over its physical parent; the disk file itself is always the live state, an overlay on
//!   the layer it derives from. The domain's configuration never changes.
//! - `internal`: qcow2 internal snapshots inside the disk file, tagged with the snapshot
//!   uuid, and `<disk>.snaptree.json` beside it recording their physical tree.
//!
//! The engine guarantees each step's precondition (SEMANTICS.md §4); the backend plans the
//! step from what it finds on disk (`external`, `internal`), checks every image it will
//! write is not held by another process, and runs it (`exec`): reversible operations
//! first, undone on failure, then the rest. Every step can be re-run after a crash at any
//! point and finishes the job; each planner documents why. When a domain has no snapshot
//! left, its disks are standalone images again with nothing of snaptree beside them.
//!
//! Modules, in layers whose imports run one way (each imports only from the layers above
//! it in this list):
//!
//! - foundation: `error` (typed failures, flattened to the engine's error in one place),
//!   `config` (the domain document, parsed once), `disk` (files of a disk), `records` (every
//!   restart record), `ctx` (every change to disk, timed and crash-injectable), `handle` /
//!   `stats` (measurements), `guest` (the test hooks' guest data);
//! - `offline`: `ops` (physical operations), `exec` (running a step), `external` /
//!   `internal` / `meta` (the two modes), `scan` (what an external disk holds), `header`;
//! - `live`: `session` (the QMP connection), `internal` (snapshots with memory), `chain`
//!   (QEMU's view of external chains), `external` / `create` / `pivot` (disk-only steps);
//! - top: `backend` (dispatch), `provider` / `plugin` (the engine's and the SDK's entry
//!   points), `hooks` (the conformance kit's test hooks, feature `test-hooks` only).

// The SDK's export macro defines the `#[unsafe(no_mangle)]` entry symbol; nothing else
// here is unsafe.
#![deny(unsafe_code)]

mod adopt;
mod backend;
mod config;
mod ctx;
mod disk;
mod error;
#[cfg(feature = "test-hooks")]
mod guest;
mod handle;
#[cfg(feature = "test-hooks")]
mod hooks;
mod live;
mod offline;
#[cfg(feature = "plugin")]
mod plugin;
mod provider;
mod reaper;
mod records;
mod stats;

pub use backend::QemuBackend;
pub use handle::QemuHandle;
#[cfg(feature = "plugin")]
pub use plugin::QemuPlugin;
pub use provider::{QEMU_BACKEND, QemuProvider};
pub use stats::{Choice, ConsolidatePolicy, ConsolidateRecord, Stats};
