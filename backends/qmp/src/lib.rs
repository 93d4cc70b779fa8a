//! A small typed client for QEMU's machine protocol (QMP) over its Unix socket: what live
//! snapshots of a running `qemu-system` need. (The test rig that starts one lives in the
//! dev-only crate `snaptree-tests`, `snaptree_tests::rig`.)
//!
//! [`Qmp`] speaks the protocol (greeting, `qmp_capabilities`, commands matched to their
//! replies by id, events buffered, deadlines on every read) and turns failures into an
//! [`Error`]: QMP's own `class`/`desc`, a job's error, a timeout, or
//! [`Error::ProcessDied`] when the socket reaches end of file. Typed helpers cover the run
//! state (`query-status`, `stop`, `cont`), the block graph (`query-block`,
//! `query-named-block-nodes`, `blockdev-add`, `blockdev-create`), external snapshots of
//! several disks at once (`transaction` of `blockdev-snapshot`), `block-commit` and
//! `block-stream` run to their end, internal snapshots with memory (`snapshot-save` /
//! `-load` / `-delete`), jobs with a progress callback that can cancel, and guest memory
//! (`pmemsave`).
//!
//! The client is blocking and single-threaded: one command at a time, events collected as
//! they pass. Writing to a socket whose QEMU died is safe even in a host that does not
//! ignore SIGPIPE: std sends on Unix sockets with `MSG_NOSIGNAL` (checked with strace), so
//! the death surfaces as [`Error::ProcessDied`].
//!
//! Modules, one job each: `wire` (JSON lines with deadlines), `message` (classifying what
//! QEMU sends), `client` (the session), `status`, `block`, `create`, `transaction`, `job`,
//! `blockjob`, `savevm`, `memory` (typed commands).

#![forbid(unsafe_code)]

mod block;
mod blockjob;
mod client;
mod create;
mod error;
mod job;
mod memory;
mod message;
mod savevm;
mod status;
mod transaction;
mod wire;

pub use block::{Backing, BlockDevice, BlockNode, CacheInfo, Inserted, IoOptions, qcow2_node};
pub use blockjob::{Commit, Stream};
pub use client::Qmp;
pub use create::NewOverlay;
pub use error::{Error, Result};
pub use job::{JobInfo, JobStatus, Until};
pub use message::Event;
pub use savevm::InternalSnapshotSpec;
/// QEMU's `ImageInfo` and `SnapshotInfo`, defined once in the qemu-img wrapper.
pub use snaptree_qemu_img::{ImageInfo, InternalSnapshot};
pub use status::{PowerState, RunState, Status};
pub use transaction::Action;
