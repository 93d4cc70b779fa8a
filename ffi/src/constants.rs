//! The error codes and flag bits of the C API. The values are the engine's
//! (`snaptree_engine::ErrorCode` and `snaptree_engine::flags`); they are written as
//! literals so that cbindgen can copy them into the header, and checked equal at compile
//! time below.

use std::ffi::{c_int, c_uint};

use snaptree_engine::{ErrorCode, flags};

/// Error code: an argument is invalid (a NULL or non-UTF-8 argument, unknown flag bits, two
/// exclusive flags, a bad name).
pub const SNAPTREE_ERR_INVALID_ARG: c_int = 1;
/// Error code: an XML document is malformed or refused (the message gives line and column).
pub const SNAPTREE_ERR_XML_ERROR: c_int = 2;
/// Error code: no domain of that name or uuid.
pub const SNAPTREE_ERR_NO_DOMAIN: c_int = 3;
/// Error code: no snapshot of that name or uuid (also: a snapshot handle whose snapshot was
/// deleted, no current snapshot, no parent).
pub const SNAPTREE_ERR_NO_SNAPSHOT: c_int = 4;
/// Error code: a snapshot of that name or uuid already exists.
pub const SNAPTREE_ERR_SNAPSHOT_EXISTS: c_int = 5;
/// Error code: the delete would discard snapshots that only a FORCE flag may remove; the
/// message names every one of them.
pub const SNAPTREE_ERR_WOULD_DISCARD: c_int = 6;
/// Error code: the backend cannot do this, or not in the domain's power state; or the
/// domain cannot be undefined while it has snapshots.
pub const SNAPTREE_ERR_OPERATION_INVALID: c_int = 7;
/// Error code: the backend failed; the message is the backend's own.
pub const SNAPTREE_ERR_BACKEND: c_int = 8;
/// Error code: a backend plugin cannot be loaded (missing file, wrong ABI version, missing
/// symbol).
pub const SNAPTREE_ERR_PLUGIN: c_int = 9;
/// Error code: the metadata store failed.
pub const SNAPTREE_ERR_STORAGE: c_int = 10;
/// Error code: another process or thread held the domain for longer than the lock timeout.
pub const SNAPTREE_ERR_BUSY: c_int = 11;
/// Error code: a bug in snaptree (including a panic caught at the API boundary).
pub const SNAPTREE_ERR_INTERNAL: c_int = 12;
/// Error code: an operation stopped part-way (a step after the first failed, or the final
/// commit did). It stays journaled; reads show the state before it until the next call on
/// the domain, or `snaptree_domain_recover`, finishes it. The message names the operation,
/// the step and the backend's reason.
pub const SNAPTREE_ERR_INCOMPLETE: c_int = 13;
/// Error code: the operation does not fit: a file system it writes on has less free space
/// than the backend estimates it needs. Nothing ran; the message names the file system, the
/// bytes needed and the bytes free.
pub const SNAPTREE_ERR_NO_SPACE: c_int = 14;

/// `snaptree_snapshot_create_xml` flag: REDEFINE: import the snapshot's whole metadata
/// and adopt data the backend already holds instead of freezing the live state
/// (libvirt's `VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE`, same value).
pub const SNAPTREE_SNAPSHOT_CREATE_REDEFINE: c_uint = 1;
/// `snaptree_snapshot_create_xml` flag, with REDEFINE only: make the redefined snapshot
/// current (libvirt's `VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT`, same value).
pub const SNAPTREE_SNAPSHOT_CREATE_CURRENT: c_uint = 2;

/// `snaptree_snapshot_delete` flag: merge the snapshot into its parent; refused with
/// `SNAPTREE_ERR_WOULD_DISCARD` when the parent has other children.
pub const SNAPTREE_SNAPSHOT_DELETE_MERGE: c_uint = 1;
/// `snaptree_snapshot_delete` flag: merge into the parent after discarding the siblings and
/// their descendants.
pub const SNAPTREE_SNAPSHOT_DELETE_MERGE_FORCE: c_uint = 2;
/// `snaptree_snapshot_delete` flag: discard a snapshot without children and free its data;
/// refused with `SNAPTREE_ERR_WOULD_DISCARD` when it has children.
pub const SNAPTREE_SNAPSHOT_DELETE_DISCARD: c_uint = 4;
/// `snaptree_snapshot_delete` flag: discard the snapshot and all its descendants.
pub const SNAPTREE_SNAPSHOT_DELETE_DISCARD_FORCE: c_uint = 8;
/// `snaptree_snapshot_delete` flag: remove the snapshot and push its data into whatever
/// depended on it; every other content is unchanged.
pub const SNAPTREE_SNAPSHOT_DELETE_CONSOLIDATE: c_uint = 16;
/// `snaptree_snapshot_delete` flag: discard every descendant of the snapshot, keep it.
pub const SNAPTREE_SNAPSHOT_DELETE_CHILDREN_ONLY: c_uint = 32;

/// `snaptree_snapshot_num` / `snaptree_snapshot_list_names` flag: roots only.
pub const SNAPTREE_SNAPSHOT_LIST_ROOTS: c_uint = 1;
/// `snaptree_snapshot_num` / `snaptree_snapshot_list_names` flag: leaves only.
pub const SNAPTREE_SNAPSHOT_LIST_LEAVES: c_uint = 2;
/// `snaptree_snapshot_num` / `snaptree_snapshot_list_names` flag: every snapshot, parents
/// before children (without a flag: every snapshot in creation order).
pub const SNAPTREE_SNAPSHOT_LIST_TOPOLOGICAL: c_uint = 4;

/// `snaptree_domain_create_from_snapshot` flag: leave the domain running.
pub const SNAPTREE_SNAPSHOT_REVERT_RUNNING: c_uint = 1;
/// `snaptree_domain_create_from_snapshot` flag: leave the domain paused.
pub const SNAPTREE_SNAPSHOT_REVERT_PAUSED: c_uint = 2;
/// `snaptree_domain_create_from_snapshot` flag: leave the domain shut off.
pub const SNAPTREE_SNAPSHOT_REVERT_SHUTOFF: c_uint = 4;

/// `snaptree_domain_create_from_snapshot` flag: KEEP_LIVE (SEMANTICS.md section 7.4):
/// first snapshot the live state as `pre-revert-<creationdate>` (or the name given to
/// `snaptree_domain_create_from_snapshot_keep`), then revert, as one operation: after a
/// crash, recovery leaves neither or both. Refused with `SNAPTREE_ERR_OPERATION_INVALID`
/// before anything runs on a backend that cannot create in the live power state.
pub const SNAPTREE_SNAPSHOT_REVERT_KEEP_LIVE: c_uint = 8;

/// `snaptree_domain_prune` flag: report what would be removed and change nothing.
pub const SNAPTREE_DOMAIN_PRUNE_DRY_RUN: c_uint = 1;

/// `snaptree_domain_undefine` flag: delete every snapshot of the domain first (and free
/// their data); without it a domain with snapshots is refused with
/// `SNAPTREE_ERR_OPERATION_INVALID`.
pub const SNAPTREE_DOMAIN_UNDEFINE_SNAPSHOTS: c_uint = 1;

/// The size of the buffer `snaptree_snapshot_get_uuid_string` fills: 36 characters and a NUL.
pub const SNAPTREE_UUID_BUFLEN: c_int = 37;

// The C values are the engine's: a mismatch does not compile.
const _: () = {
    assert!(SNAPTREE_ERR_INVALID_ARG == ErrorCode::InvalidArg as c_int);
    assert!(SNAPTREE_ERR_XML_ERROR == ErrorCode::XmlError as c_int);
    assert!(SNAPTREE_ERR_NO_DOMAIN == ErrorCode::NoDomain as c_int);
    assert!(SNAPTREE_ERR_NO_SNAPSHOT == ErrorCode::NoSnapshot as c_int);
    assert!(SNAPTREE_ERR_SNAPSHOT_EXISTS == ErrorCode::SnapshotExists as c_int);
    assert!(SNAPTREE_ERR_WOULD_DISCARD == ErrorCode::WouldDiscard as c_int);
    assert!(SNAPTREE_ERR_OPERATION_INVALID == ErrorCode::OperationInvalid as c_int);
    assert!(SNAPTREE_ERR_BACKEND == ErrorCode::Backend as c_int);
    assert!(SNAPTREE_ERR_PLUGIN == ErrorCode::Plugin as c_int);
    assert!(SNAPTREE_ERR_STORAGE == ErrorCode::Storage as c_int);
    assert!(SNAPTREE_ERR_BUSY == ErrorCode::Busy as c_int);
    assert!(SNAPTREE_ERR_INTERNAL == ErrorCode::Internal as c_int);
    assert!(SNAPTREE_ERR_INCOMPLETE == ErrorCode::Incomplete as c_int);
    assert!(SNAPTREE_ERR_NO_SPACE == ErrorCode::NoSpace as c_int);
    assert!(SNAPTREE_SNAPSHOT_CREATE_REDEFINE == flags::CREATE_REDEFINE);
    assert!(SNAPTREE_SNAPSHOT_CREATE_CURRENT == flags::CREATE_CURRENT);
    assert!(SNAPTREE_SNAPSHOT_DELETE_MERGE == flags::DELETE_MERGE);
    assert!(SNAPTREE_SNAPSHOT_DELETE_MERGE_FORCE == flags::DELETE_MERGE_FORCE);
    assert!(SNAPTREE_SNAPSHOT_DELETE_DISCARD == flags::DELETE_DISCARD);
    assert!(SNAPTREE_SNAPSHOT_DELETE_DISCARD_FORCE == flags::DELETE_DISCARD_FORCE);
    assert!(SNAPTREE_SNAPSHOT_DELETE_CONSOLIDATE == flags::DELETE_CONSOLIDATE);
    assert!(SNAPTREE_SNAPSHOT_DELETE_CHILDREN_ONLY == flags::DELETE_CHILDREN_ONLY);
    assert!(SNAPTREE_SNAPSHOT_LIST_ROOTS == flags::LIST_ROOTS);
    assert!(SNAPTREE_SNAPSHOT_LIST_LEAVES == flags::LIST_LEAVES);
    assert!(SNAPTREE_SNAPSHOT_LIST_TOPOLOGICAL == flags::LIST_TOPOLOGICAL);
    assert!(SNAPTREE_SNAPSHOT_REVERT_RUNNING == flags::REVERT_RUNNING);
    assert!(SNAPTREE_SNAPSHOT_REVERT_PAUSED == flags::REVERT_PAUSED);
    assert!(SNAPTREE_SNAPSHOT_REVERT_SHUTOFF == flags::REVERT_SHUTOFF);
    assert!(SNAPTREE_SNAPSHOT_REVERT_KEEP_LIVE == flags::REVERT_KEEP_LIVE);
    assert!(SNAPTREE_DOMAIN_PRUNE_DRY_RUN == flags::PRUNE_DRY_RUN);
};
