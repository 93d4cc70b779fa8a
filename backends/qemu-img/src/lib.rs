//! Typed wrapper over the `qemu-img` and `qemu-io` binaries, for managing qcow2 snapshot chains
//! offline (no running QEMU).
//!
//! Every function runs one or a few subprocesses with [`std::process::Command`] (never a shell),
//! always names the image format explicitly (`-f qcow2`, `-F qcow2`) so that qemu never probes a
//! format from guest-controlled bytes, and turns qemu's own stderr into an [`Error`]. Some are
//! cheaper done in process, from the qcow2 specification and checked against qemu in the
//! tests: reading headers, lock bytes, cluster maps and snapshot tables
//! ([`snapshot_list`]), and writing a new empty overlay ([`create_overlay`], byte for byte
//! what `qemu-img create -b` writes).
//!
//! Image locks: qemu locks every image it opens. An image held read-write by another process
//! (a running VM, a `qemu-io` session) makes the functions here fail with [`Error::Locked`],
//! naming the file that is locked — which may be a backing file rather than the path passed in.
//! Only [`info_force_share`] bypasses locks, for display purposes.
//!
//! Functions whose qemu-img subcommand supports `-p` take a progress callback, called with a
//! fraction in `0.0..=1.0` as records arrive, and always at least once with `1.0` on success.

// Unsafe code only in `probe` (one `fcntl` call), each block with its SAFETY comment.
#![deny(unsafe_code)]

mod chain;
mod cmd;
mod digest;
mod error;
mod export;
mod header;
mod info;
mod internal;
mod io;
mod layer;
mod lock;
mod overlay;
#[allow(unsafe_code)]
mod probe;
mod progress;
mod snapshot_table;
mod space;

pub use chain::{commit, rebase_safe, rebase_unsafe};
pub use digest::content_digest;
pub use error::{Error, Result};
pub use header::{HeaderError, Qcow2Header, read_header};
pub use info::{ImageInfo, InternalSnapshot, backing_chain, info, info_force_share};
pub use internal::{
    repair_after_interrupted_snapshot_op, snapshot_apply, snapshot_create, snapshot_delete,
    snapshot_list,
};
pub use io::{io_verify_pattern, io_verify_snapshot_pattern, io_write_pattern};
pub use layer::{
    ClusterMap, allocated_bytes, allocated_bytes_by_map, allocated_clusters, create,
    create_overlay, create_overlay_unopened, mapped_entries, release_copied_clusters,
};
pub use lock::{check_writable, check_writable_by_qemu_io, check_writable_in_process};
pub use space::{FileSystem, allocated_on_disk, file_system, unlinks_open_files};
