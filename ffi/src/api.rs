//! The exported functions, in the order of the header.
//!
//! Each body runs inside `boundary::call`: see `boundary.rs`. Every function documents
//! its pointer requirements under "Safety": handles are those this library returned and
//! not yet freed; strings are NUL-terminated.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use snaptree_engine::flags::CreateMode;
use snaptree_engine::store::StoreLocation;
use snaptree_engine::{Connection, Error, Filter, NoProgress, Operation, Snapshot, Step, flags};
use snaptree_host::{Plugin, PluginHost};

use crate::boundary::{self, Call};
use crate::constants::SNAPTREE_DOMAIN_UNDEFINE_SNAPSHOTS;
use crate::fork;
use crate::handles::{ConnShared, snaptree_conn, snaptree_domain, snaptree_snapshot};
use crate::strings;

// ---- connections ----

/// Drops a handle being freed, or, in a process forked since its connection was opened,
/// leaks it: dropping the last handle there would close the parent's store connection and
/// backends from the child (`fork.rs`).
fn release<T>(handle: Box<T>, inherited: impl FnOnce(&T) -> bool) {
    if inherited(&handle) {
        std::mem::forget(handle);
    } else {
        drop(handle);
    }
}

/// Opens a connection to a store: `state_dir` names a state directory (SQLite, created if
/// needed; a relative path is resolved against the working directory now, so a later
/// `chdir` does not move the store) or a PostgreSQL database several hosts share (a
/// `postgresql://` URI, docs/fleet.md); when it is NULL, `$SNAPTREE_STORE` if set, else the default state
/// directory (`$SNAPTREE_STATE_DIR`, else the XDG data directory). The `null`
/// backend is always available; other backend types are loaded on first use as plugins
/// `libsnaptree_backend_<type>.so` from `$SNAPTREE_BACKEND_PATH` and the directory of the
/// running program, after any loaded with `snaptree_conn_load_backend`. `flags` must be 0.
///
/// Returns a connection to close with `snaptree_conn_close`, or NULL on error.
///
/// # Safety
/// `state_dir` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_conn_open(
    state_dir: *const c_char,
    flags: c_uint,
) -> *mut snaptree_conn {
    boundary::call("snaptree_conn_open", ptr::null_mut(), |call| {
        // SAFETY: the caller passes NULL or a NUL-terminated string (documented).
        let dir = unsafe { call.opt_str(state_dir, "state_dir") }?;
        call.flags(flags, 0)?;
        // Resolved once: the fork check and the open must name the same store.
        let location = StoreLocation::resolve(dir)?;
        // Declared before the connection, so dropped after it when the open fails.
        let opening = fork::before_open(&location)?;
        let conn = Connection::open_at(&location)?;
        let shared = ConnShared::new(conn, &opening, PluginHost::new())?;
        drop(opening);
        Ok(Box::into_raw(Box::new(snaptree_conn {
            shared: Arc::new(shared),
        })))
    })
}

/// Closes a connection handle. Domain and snapshot handles made from it stay usable until
/// they are freed; the connection's resources are released with the last of them.
///
/// Returns 0, or -1 when `conn` is NULL.
///
/// # Safety
/// `conn` is NULL or a connection from `snaptree_conn_open` not yet closed; it must not be
/// used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_conn_close(conn: *mut snaptree_conn) -> c_int {
    boundary::call("snaptree_conn_close", -1, |call| {
        call.out(conn, "conn")?;
        // SAFETY: a non-NULL `conn` came from Box::into_raw in snaptree_conn_open and is
        // closed once (documented); ownership returns to Rust here.
        let conn = unsafe { Box::from_raw(conn) };
        release(conn, |c| c.shared.inherited());
        Ok(0)
    })
}

/// Loads a backend plugin for this connection: `path` is either one plugin file (loaded
/// now, and used for the backend type it declares, replacing any other provider of that
/// type), or a directory searched for `libsnaptree_backend_<type>.so`, before the default
/// search path, for backend types this connection has not used yet. `flags` must be 0.
///
/// Returns 0, or -1 on error (`SNAPTREE_ERR_PLUGIN` for a missing file or directory, a file
/// that is not a plugin, a wrong ABI version).
///
/// # Safety
/// `conn` is a live connection; `path` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_conn_load_backend(
    conn: *mut snaptree_conn,
    path: *const c_char,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_conn_load_backend", -1, |call| {
        // SAFETY: `conn` is NULL or a live connection handle (documented).
        let conn = unsafe { call.arg(conn, "conn") }?;
        // SAFETY: `path` is NULL or a NUL-terminated string (documented).
        let path = Path::new(unsafe { call.str(path, "path") }?);
        call.flags(flags, 0)?;
        let engine = conn.shared.engine()?;
        if path.is_dir() {
            conn.shared
                .host
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .add_path(path)?;
        } else {
            let plugin = Plugin::load(path)?;
            engine.register_provider(plugin.name(), plugin.provider());
        }
        Ok(0)
    })
}

// ---- domains ----

/// Defines a domain from its `<domain type='...'>` XML, or replaces the XML of the domain
/// of that name (handles already made keep the XML they were opened with). The backend
/// type must be available. `flags` must be 0.
///
/// Returns a domain handle to free with `snaptree_domain_free`, or NULL on error.
///
/// # Safety
/// `conn` is a live connection; `xml` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_define_xml(
    conn: *mut snaptree_conn,
    xml: *const c_char,
    flags: c_uint,
) -> *mut snaptree_domain {
    boundary::call("snaptree_domain_define_xml", ptr::null_mut(), |call| {
        // SAFETY: `conn` is NULL or a live connection handle (documented).
        let conn = unsafe { call.arg(conn, "conn") }?;
        // SAFETY: `xml` is NULL or a NUL-terminated string (documented).
        let xml = unsafe { call.str(xml, "xml") }?;
        call.flags(flags, 0)?;
        let info = conn.shared.engine()?.define_domain(xml)?;
        // A redefinition: new handles open the domain with its new XML.
        conn.shared.forget(&info.uuid);
        let dom = conn.shared.domain(&info.name)?;
        Ok(snaptree_domain::boxed(&conn.shared, dom))
    })
}

/// Looks up a defined domain by name.
///
/// Returns a domain handle to free with `snaptree_domain_free`, or NULL on error
/// (`SNAPTREE_ERR_NO_DOMAIN` when there is none of that name).
///
/// # Safety
/// `conn` is a live connection; `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_lookup_by_name(
    conn: *mut snaptree_conn,
    name: *const c_char,
) -> *mut snaptree_domain {
    boundary::call("snaptree_domain_lookup_by_name", ptr::null_mut(), |call| {
        // SAFETY: `conn` is NULL or a live connection handle (documented).
        let conn = unsafe { call.arg(conn, "conn") }?;
        // SAFETY: `name` is NULL or a NUL-terminated string (documented).
        let name = unsafe { call.str(name, "name") }?;
        let dom = conn.shared.domain(name)?;
        Ok(snaptree_domain::boxed(&conn.shared, dom))
    })
}

/// Removes a domain's definition and metadata. A domain with snapshots is refused with
/// `SNAPTREE_ERR_OPERATION_INVALID` unless `flags` has `SNAPTREE_DOMAIN_UNDEFINE_SNAPSHOTS`,
/// which deletes every snapshot first (freeing their data). The handle must still be freed;
/// calls on it, and on snapshot handles of the domain, then fail with
/// `SNAPTREE_ERR_NO_DOMAIN`.
///
/// Returns 0, or -1 on error.
///
/// # Safety
/// `dom` is a live domain handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_undefine(
    dom: *mut snaptree_domain,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_domain_undefine", -1, |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        call.flags(flags, SNAPTREE_DOMAIN_UNDEFINE_SNAPSHOTS)?;
        let conn = dom.conn.engine()?;
        // The name may have been given to another domain since this handle was made.
        if conn.lookup_domain(&dom.dom.name)?.uuid != dom.dom.uuid {
            return Err(Error::NoDomain(dom.dom.name.clone()));
        }
        conn.undefine_domain(
            &dom.dom.name,
            flags & SNAPTREE_DOMAIN_UNDEFINE_SNAPSHOTS != 0,
        )?;
        dom.conn.forget(&dom.dom.uuid);
        dom.dom.close();
        Ok(0)
    })
}

/// Frees a domain handle (NULL: nothing). Does not change the last error.
///
/// # Safety
/// `dom` is NULL or a live domain handle; it must not be used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_free(dom: *mut snaptree_domain) {
    boundary::call_keeping_error("snaptree_domain_free", (), |_| {
        if !dom.is_null() {
            // SAFETY: a non-NULL `dom` came from Box::into_raw in this library and is freed
            // once (documented).
            release(unsafe { Box::from_raw(dom) }, |h| h.inherited());
        }
        Ok(())
    })
}

/// Finishes an operation that stopped part-way (`SNAPTREE_ERR_INCOMPLETE`) now, and
/// reports every operation this handle finished that no earlier call of this function
/// reported: including one that opening the domain (its first use through this handle) or
/// a later mutation already finished, since those finish pending operations first.
/// `flags` must be 0. When `report` is not NULL, on success `*report` receives a string to
/// free with `snaptree_free`: one line per finished operation ("delete (MERGE) of snapshot
/// 'b' (1 of 3 steps had been done)"), empty when there was none.
///
/// Returns the number of operations finished (0: nothing was pending), or -1 on error
/// (`SNAPTREE_ERR_INCOMPLETE` when finishing fails again; nothing more changed then).
///
/// # Safety
/// `dom` is a live domain handle; `report` is NULL or valid for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_recover(
    dom: *mut snaptree_domain,
    flags: c_uint,
    report: *mut *mut c_char,
) -> c_int {
    boundary::call("snaptree_domain_recover", -1, |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        call.flags(flags, 0)?;
        let done = dom.with(|d| d.recover())?;
        let count = call.count(done.len())?;
        if !report.is_null() {
            let text: String = done.iter().map(|r| r.describe() + "\n").collect();
            let text = strings::to_c(&text)?;
            // SAFETY: `report` is non-NULL and valid for writing one pointer (documented).
            unsafe { report.write(text) };
        }
        Ok(count)
    })
}

/// Whether an operation on the domain is journaled and not finished: one that stopped
/// part-way (`SNAPTREE_ERR_INCOMPLETE`), or one running in another handle or process right
/// now. Until it finishes, every read shows the state before it. `flags` must be 0.
///
/// Returns 1 if there is one, 0 if not, -1 on error.
///
/// # Safety
/// `dom` is a live domain handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_has_pending(
    dom: *mut snaptree_domain,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_domain_has_pending", -1, |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        call.flags(flags, 0)?;
        dom.with(|d| Ok(c_int::from(d.pending()?.is_some())))
    })
}

// ---- snapshots (the proposal's calls) ----

/// Takes a snapshot of a domain from a `<domainsnapshot>` document: its `name`, `uuid` and
/// `description` are used (a missing name or uuid is generated), every other element is
/// ignored. The new snapshot's parent is the current snapshot; it becomes current.
///
/// With `SNAPTREE_SNAPSHOT_CREATE_REDEFINE` the live state is not frozen: the document's
/// metadata is imported whole (name, uuid, parent by uuid or name, creation date or
/// libvirt's `creationTime`, state in snaptree's or libvirt's words, description; every
/// other element ignored), as `virsh snapshot-dumpxml` writes it, and the backend adopts
/// the data it already holds for that snapshot and parent. A missing uuid is the existing
/// snapshot's of that name, else one derived from the domain's uuid and the name. The
/// parent must exist (`SNAPTREE_ERR_NO_SNAPSHOT`); the same name, uuid and parent as an
/// existing snapshot replaces its description, creation date and state; any other clash
/// is `SNAPTREE_ERR_SNAPSHOT_EXISTS`; a backend that cannot adopt, or holds no such data,
/// is `SNAPTREE_ERR_OPERATION_INVALID`. The snapshot becomes current only with
/// `SNAPTREE_SNAPSHOT_CREATE_CURRENT` (which needs REDEFINE).
///
/// Returns a handle on the snapshot to free with `snaptree_snapshot_free`, or NULL on
/// error (`SNAPTREE_ERR_XML_ERROR`, `SNAPTREE_ERR_SNAPSHOT_EXISTS`, ...).
///
/// # Safety
/// `dom` is a live domain handle; `xml` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_create_xml(
    dom: *mut snaptree_domain,
    xml: *const c_char,
    flags: c_uint,
) -> *mut snaptree_snapshot {
    boundary::call("snaptree_snapshot_create_xml", ptr::null_mut(), |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        // SAFETY: `xml` is NULL or a NUL-terminated string (documented).
        let xml = unsafe { call.str(xml, "xml") }?;
        let uuid = match flags::create_mode(flags)? {
            CreateMode::Create => dom.with(|d| d.create_snapshot(xml))?,
            CreateMode::Redefine { current } => dom.with(|d| d.redefine_snapshot(xml, current))?,
        };
        Ok(dom.snapshot(uuid))
    })
}

/// The `<domainsnapshot>` document of a snapshot (name, uuid, description, creation date,
/// state, parent, domain). `flags` must be 0.
///
/// Returns a string to free with `snaptree_free`, or NULL on error.
///
/// # Safety
/// `snap` is a live snapshot handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_get_xml_desc(
    snap: *mut snaptree_snapshot,
    flags: c_uint,
) -> *mut c_char {
    boundary::call("snaptree_snapshot_get_xml_desc", ptr::null_mut(), |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        call.flags(flags, 0)?;
        let xml = snap.with(|d| d.snapshot_xml(&snap.uuid))?;
        strings::to_c(&xml)
    })
}

/// Counts a domain's snapshots: all of them (`flags` 0 or
/// `SNAPTREE_SNAPSHOT_LIST_TOPOLOGICAL`), the roots (`SNAPTREE_SNAPSHOT_LIST_ROOTS`) or the
/// leaves (`SNAPTREE_SNAPSHOT_LIST_LEAVES`); the flags are exclusive.
///
/// Returns the count, or -1 on error.
///
/// # Safety
/// `dom` is a live domain handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_num(dom: *mut snaptree_domain, flags: c_uint) -> c_int {
    boundary::call("snaptree_snapshot_num", -1, |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        let filter = flags::list_filter(flags)?;
        let n = dom.read(|t| Ok(t.count(filter)))?;
        call.count(n)
    })
}

/// Lists the names of a domain's snapshots into `names`, at most `nameslen` of them: with
/// `flags` 0 every snapshot in creation order, with `SNAPTREE_SNAPSHOT_LIST_TOPOLOGICAL`
/// parents before children, with `SNAPTREE_SNAPSHOT_LIST_ROOTS` or `_LEAVES` the roots or
/// the leaves (oldest first). Each name written is a string to free with `snaptree_free`.
/// On error nothing is written.
///
/// Returns the number of names written, or -1 on error.
///
/// # Safety
/// `dom` is a live domain handle; `names` has room for `nameslen` pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_list_names(
    dom: *mut snaptree_domain,
    names: *mut *mut c_char,
    nameslen: c_int,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_snapshot_list_names", -1, |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        let names = call.out(names, "names")?;
        let slots = call.len(nameslen, "nameslen")?;
        let filter = flags::list_filter(flags)?;
        // The names are copied out while the tree is borrowed: no copy of them in between.
        // One copy of the writer per listing (no call through a trait object per name).
        /// # Safety
        /// `names` is valid for writing `slots` pointers.
        unsafe fn write<'a>(
            names: *mut *mut c_char,
            slots: usize,
            listed: impl Iterator<Item = &'a Snapshot>,
        ) -> snaptree_engine::Result<usize> {
            // SAFETY: as this function requires.
            unsafe { strings::write_names(names, slots, listed.map(|s| s.name.as_str())) }
        }
        // SAFETY (each call): the caller made `names` valid for `nameslen` (= slots)
        // pointers.
        let written = dom.read(|t| match filter {
            // SAFETY: as above.
            Filter::All => unsafe { write(names, slots, t.iter()) },
            // SAFETY: as above.
            Filter::Roots => unsafe { write(names, slots, t.roots()) },
            // SAFETY: as above.
            Filter::Leaves => unsafe { write(names, slots, t.leaves()) },
            // SAFETY: as above.
            Filter::Topological => unsafe { write(names, slots, t.topological().into_iter()) },
        })?;
        call.count(written)
    })
}

/// Looks up a snapshot of a domain by name. `flags` must be 0.
///
/// Returns a snapshot handle to free with `snaptree_snapshot_free`, or NULL on error
/// (`SNAPTREE_ERR_NO_SNAPSHOT` when there is none of that name).
///
/// # Safety
/// `dom` is a live domain handle; `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_lookup_by_name(
    dom: *mut snaptree_domain,
    name: *const c_char,
    flags: c_uint,
) -> *mut snaptree_snapshot {
    boundary::call(
        "snaptree_snapshot_lookup_by_name",
        ptr::null_mut(),
        |call| {
            // SAFETY: `dom` is NULL or a live domain handle (documented).
            let dom = unsafe { call.arg(dom, "dom") }?;
            // SAFETY: `name` is NULL or a NUL-terminated string (documented).
            let name = unsafe { call.str(name, "name") }?;
            call.flags(flags, 0)?;
            let uuid = dom.read(|t| t.require_uuid_by_name(name, &dom.dom.name))?;
            Ok(dom.snapshot(uuid))
        },
    )
}

/// The current snapshot of a domain: the one its live state derives from. `flags` must
/// be 0.
///
/// Returns a snapshot handle to free with `snaptree_snapshot_free`, or NULL on error
/// (`SNAPTREE_ERR_NO_SNAPSHOT` when the domain has no current snapshot).
///
/// # Safety
/// `dom` is a live domain handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_current(
    dom: *mut snaptree_domain,
    flags: c_uint,
) -> *mut snaptree_snapshot {
    boundary::call("snaptree_snapshot_current", ptr::null_mut(), |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        call.flags(flags, 0)?;
        let name = &dom.dom.name;
        let uuid = dom.read(|t| {
            t.current().map(|s| s.uuid).ok_or_else(|| {
                Error::NoSnapshot(format!("domain '{name}' has no current snapshot"))
            })
        })?;
        Ok(dom.snapshot(uuid))
    })
}

/// Reverts the domain to a snapshot: the live state becomes the snapshot's content, the
/// snapshot becomes current, and the domain's power state becomes the snapshot's unless
/// `flags` has one of `SNAPTREE_SNAPSHOT_REVERT_RUNNING`, `_PAUSED` or `_SHUTOFF`. Unsaved
/// live changes are discarded, unless `flags` has `SNAPTREE_SNAPSHOT_REVERT_KEEP_LIVE`:
/// then they are first kept as a new snapshot named `pre-revert-<creationdate>` (to name
/// it, or to get a handle on it, use `snaptree_domain_create_from_snapshot_keep`).
///
/// Returns 0, or -1 on error.
///
/// # Safety
/// `snap` is a live snapshot handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_create_from_snapshot(
    snap: *mut snaptree_snapshot,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_domain_create_from_snapshot", -1, |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        let (state, keep_live) = flags::revert_flags(flags)?;
        if keep_live {
            snap.with(|d| d.revert_keep_live(&snap.uuid, state, None, &mut NoProgress))?;
        } else {
            snap.with(|d| d.revert(&snap.uuid, state, &mut NoProgress))?;
        }
        Ok(0)
    })
}

/// KEEP_LIVE revert (SEMANTICS.md section 7.4) with the kept snapshot named: first
/// snapshots the live state as `keep_name` (NULL: `pre-revert-<creationdate>`), then
/// reverts to `snap`, as one operation: after a crash, recovery leaves neither or both.
/// `flags` may have `SNAPTREE_SNAPSHOT_REVERT_RUNNING`, `_PAUSED` or `_SHUTOFF` (and
/// `_KEEP_LIVE`, implied). "Undo the revert" is a revert to the returned snapshot.
///
/// Returns a handle on the kept snapshot, to free with `snaptree_snapshot_free`, or NULL
/// on error (`SNAPTREE_ERR_SNAPSHOT_EXISTS` when `keep_name` is taken,
/// `SNAPTREE_ERR_OPERATION_INVALID` when the backend cannot create in the live power
/// state: nothing ran).
///
/// # Safety
/// `snap` is a live snapshot handle; `keep_name` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_create_from_snapshot_keep(
    snap: *mut snaptree_snapshot,
    keep_name: *const c_char,
    flags: c_uint,
) -> *mut snaptree_snapshot {
    boundary::call(
        "snaptree_domain_create_from_snapshot_keep",
        ptr::null_mut(),
        |call| {
            // SAFETY: `snap` is NULL or a live snapshot handle (documented).
            let snap = unsafe { call.arg(snap, "snap") }?;
            // SAFETY: `keep_name` is NULL or a NUL-terminated string (documented).
            let keep_name = unsafe { call.opt_str(keep_name, "keep_name") }?;
            let (state, _) = flags::revert_flags(flags)?;
            let plan =
                snap.with(|d| d.revert_keep_live(&snap.uuid, state, keep_name, &mut NoProgress))?;
            match plan.operation {
                Operation::RevertKeepLive { keep, .. } => Ok(snap.sibling(keep)),
                _ => Err(Error::Internal(
                    "a KEEP_LIVE revert planned another operation".into(),
                )),
            }
        },
    )
}

/// Renames a snapshot (metadata only). Handles on it keep working. `flags` must be 0.
///
/// Returns 0, or -1 on error (`SNAPTREE_ERR_SNAPSHOT_EXISTS` when the name is taken,
/// `SNAPTREE_ERR_INVALID_ARG` for an invalid name).
///
/// # Safety
/// `snap` is a live snapshot handle; `newname` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_rename(
    snap: *mut snaptree_snapshot,
    newname: *const c_char,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_snapshot_rename", -1, |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        // SAFETY: `newname` is NULL or a NUL-terminated string (documented).
        let newname = unsafe { call.str(newname, "newname") }?;
        call.flags(flags, 0)?;
        snap.with(|d| d.rename(&snap.uuid, newname))?;
        Ok(0)
    })
}

/// Deletes a snapshot. Without a flag the snapshot is retired: it leaves the tree, its
/// children move to its parent, its data stays. At most one of the flags
/// `SNAPTREE_SNAPSHOT_DELETE_MERGE`, `_MERGE_FORCE`, `_DISCARD`, `_DISCARD_FORCE`,
/// `_CONSOLIDATE`, `_CHILDREN_ONLY` selects another mode (SEMANTICS.md section 2); two are
/// `SNAPTREE_ERR_INVALID_ARG`. The handle must still be freed.
///
/// Returns 0, or -1 on error (`SNAPTREE_ERR_WOULD_DISCARD` naming the snapshots only the
/// FORCE variant would remove).
///
/// # Safety
/// `snap` is a live snapshot handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_delete(
    snap: *mut snaptree_snapshot,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_snapshot_delete", -1, |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        let mode = flags::delete_mode(flags)?;
        snap.with(|d| d.delete(&snap.uuid, mode, &mut NoProgress))?;
        Ok(0)
    })
}

/// What a snapshot holds, as its backend estimates it (SEMANTICS.md 7.7): `*held`, the bytes
/// only its own data holds, and `*frees`, the bytes a `SNAPTREE_SNAPSHOT_DELETE_CONSOLIDATE`
/// delete of it would free (what it holds less what its dependents must take over). Nothing
/// changes. `flags` must be 0.
///
/// Returns 1 and writes both, 0 when the backend cannot estimate (nothing written), or -1
/// on error.
///
/// # Safety
/// `snap` is a live snapshot handle; `held` and `frees` point to writable
/// `unsigned long long`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_get_size(
    snap: *mut snaptree_snapshot,
    held: *mut std::ffi::c_ulonglong,
    frees: *mut std::ffi::c_ulonglong,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_snapshot_get_size", -1, |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        let held = call.out(held, "held")?;
        let frees = call.out(frees, "frees")?;
        call.flags(flags, 0)?;
        match snap.with(|d| d.snapshot_size(&snap.uuid))? {
            Some(size) => {
                // SAFETY: both out-pointers are non-NULL (checked) and writable (documented).
                unsafe {
                    held.write(size.held);
                    frees.write(size.frees);
                }
                Ok(1)
            }
            None => Ok(0),
        }
    })
}

/// Frees a snapshot handle (NULL: nothing). The snapshot itself is not touched. Does not
/// change the last error.
///
/// # Safety
/// `snap` is NULL or a live snapshot handle; it must not be used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_free(snap: *mut snaptree_snapshot) {
    boundary::call_keeping_error("snaptree_snapshot_free", (), |_| {
        if !snap.is_null() {
            // SAFETY: a non-NULL `snap` came from Box::into_raw in this library and is freed
            // once (documented).
            release(unsafe { Box::from_raw(snap) }, |h| h.inherited());
        }
        Ok(())
    })
}

/// Frees a string this library returned (`snaptree_snapshot_get_xml_desc`,
/// `snaptree_snapshot_get_name`, the names of the listing functions). NULL: nothing. Does
/// not change the last error.
///
/// # Safety
/// `ptr` is NULL or a string returned by this library and not freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_free(ptr: *mut c_void) {
    boundary::call_keeping_error("snaptree_free", (), |_| {
        // SAFETY: NULL or a live string from strings::to_c (documented).
        unsafe { strings::release(ptr) };
        Ok(())
    })
}

// ---- beyond the proposal ----

/// The parent of a snapshot. `flags` must be 0.
///
/// Returns a snapshot handle to free with `snaptree_snapshot_free`, or NULL on error
/// (`SNAPTREE_ERR_NO_SNAPSHOT` when the snapshot is a root).
///
/// # Safety
/// `snap` is a live snapshot handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_get_parent(
    snap: *mut snaptree_snapshot,
    flags: c_uint,
) -> *mut snaptree_snapshot {
    boundary::call("snaptree_snapshot_get_parent", ptr::null_mut(), |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        call.flags(flags, 0)?;
        let domain = &snap.dom.name;
        let parent = snap.read(|t, s| {
            t.parent(&s.uuid).map(|p| p.uuid).ok_or_else(|| {
                Error::NoSnapshot(format!(
                    "snapshot '{}' of domain '{domain}' has no parent",
                    s.name
                ))
            })
        })?;
        Ok(snap.sibling(parent))
    })
}

/// Counts the children of a snapshot. `flags` must be 0.
///
/// Returns the count, or -1 on error.
///
/// # Safety
/// `snap` is a live snapshot handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_num_children(
    snap: *mut snaptree_snapshot,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_snapshot_num_children", -1, |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        call.flags(flags, 0)?;
        let n = snap.read(|t, s| Ok(t.num_children(&s.uuid)))?;
        call.count(n)
    })
}

/// Lists the names of a snapshot's children, oldest first, into `names`, at most
/// `nameslen` of them. Each name written is a string to free with `snaptree_free`. On error
/// nothing is written. `flags` must be 0.
///
/// Returns the number of names written, or -1 on error.
///
/// # Safety
/// `snap` is a live snapshot handle; `names` has room for `nameslen` pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_list_children_names(
    snap: *mut snaptree_snapshot,
    names: *mut *mut c_char,
    nameslen: c_int,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_snapshot_list_children_names", -1, |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        let names = call.out(names, "names")?;
        let slots = call.len(nameslen, "nameslen")?;
        call.flags(flags, 0)?;
        let written = snap.read(|t, s| {
            let children = t.children(&s.uuid);
            // SAFETY: the caller made `names` valid for `nameslen` (= slots) pointers.
            unsafe { strings::write_names(names, slots, children.iter().map(|c| c.name.as_str())) }
        })?;
        call.count(written)
    })
}

/// Whether a snapshot is its domain's current snapshot. `flags` must be 0.
///
/// Returns 1 if it is, 0 if not, -1 on error.
///
/// # Safety
/// `snap` is a live snapshot handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_is_current(
    snap: *mut snaptree_snapshot,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_snapshot_is_current", -1, |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        call.flags(flags, 0)?;
        snap.read(|t, s| Ok(c_int::from(t.current().is_some_and(|c| c.uuid == s.uuid))))
    })
}

/// The snapshot's name as it is now. The name can change at any time (a rename from
/// another thread or process), so this returns a copy: a string the caller frees with
/// `snaptree_free`.
///
/// Returns the name, or NULL on error.
///
/// # Safety
/// `snap` is a live snapshot handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_get_name(snap: *mut snaptree_snapshot) -> *mut c_char {
    boundary::call("snaptree_snapshot_get_name", ptr::null_mut(), |call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        let name = snap.read(|_, s| Ok(s.name.clone()))?;
        strings::to_c(&name)
    })
}

/// Writes the snapshot's uuid into `buf` as 36 lower-case characters and a NUL
/// (`SNAPTREE_UUID_BUFLEN` bytes). Fails with `SNAPTREE_ERR_NO_SNAPSHOT`, writing nothing,
/// once the snapshot is deleted.
///
/// Returns 0, or -1 on error.
///
/// # Safety
/// `snap` is a live snapshot handle; `buf` has room for `SNAPTREE_UUID_BUFLEN` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_get_uuid_string(
    snap: *mut snaptree_snapshot,
    buf: *mut c_char,
) -> c_int {
    boundary::call("snaptree_snapshot_get_uuid_string", -1, |call: &Call| {
        // SAFETY: `snap` is NULL or a live snapshot handle (documented).
        let snap = unsafe { call.arg(snap, "snap") }?;
        let buf = call.out(buf, "buf")?;
        let uuid = snap.read(|_, s| Ok(s.uuid))?;
        let mut text = [0u8; 37];
        uuid.hyphenated().encode_lower(&mut text[..36]);
        // SAFETY: the caller made `buf` valid for SNAPTREE_UUID_BUFLEN (37) bytes; `text` is
        // a local array, so the two do not overlap.
        unsafe { ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len()) };
        Ok(0)
    })
}

/// Deletes every snapshot of a domain and frees their data; the live state is unchanged
/// and the domain has no current snapshot afterwards. `flags` must be 0.
///
/// Returns 0, or -1 on error.
///
/// # Safety
/// `dom` is a live domain handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_snapshot_delete_all(
    dom: *mut snaptree_domain,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_snapshot_delete_all", -1, |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        call.flags(flags, 0)?;
        dom.with(|d| d.delete_all(&mut NoProgress))?;
        Ok(0)
    })
}

/// Frees the data of every retired snapshot of a domain (deleted without a flag, data
/// kept because something was stored on it): each is consolidated into what depends on
/// it, so every snapshot's content and the live state stay as they are (SEMANTICS.md
/// §7.2). On success `*freed`, when `freed` is not NULL, is the number of retired
/// snapshots whose data was freed (backends do not report bytes). `flags` must be 0.
///
/// Returns 0, or -1 on error (`SNAPTREE_ERR_OPERATION_INVALID`, before anything runs, when
/// the backend cannot consolidate and there is retired data to reclaim).
///
/// # Safety
/// `dom` is a live domain handle; `freed` is NULL or valid for writing one `unsigned int`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_reclaim(
    dom: *mut snaptree_domain,
    freed: *mut c_uint,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_domain_reclaim", -1, |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        call.flags(flags, 0)?;
        let plan = dom.with(|d| d.reclaim(&mut NoProgress))?;
        let n = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Consolidate { .. } | Step::DiscardLeaf { .. }))
            .count();
        let n = c_uint::try_from(n).unwrap_or(c_uint::MAX);
        if !freed.is_null() {
            // SAFETY: a non-NULL `freed` is valid for one write (documented); written only
            // on success.
            unsafe { freed.write(n) };
        }
        Ok(0)
    })
}

/// Prune (SEMANTICS.md section 7.5): deletes with CONSOLIDATE, oldest first, every
/// expired snapshot and every one outside the domain's retention policy; never the current
/// snapshot, never a pinned one. Each delete is its own operation: survivors' contents and
/// the live state are unchanged. With `SNAPTREE_DOMAIN_PRUNE_DRY_RUN` nothing changes and
/// the result says what would be removed.
///
/// `names` receives up to `nameslen` names of the removed (or to-be-removed) snapshots,
/// in order, each to free with `snaptree_free`; it may be NULL when `nameslen` is 0.
///
/// Returns how many snapshots were (or would be) removed — more than `nameslen` means
/// the list was cut — or -1 on error. A delete that fails stops the prune: the ones before
/// it stay done, and calling again continues.
///
/// # Safety
/// `dom` is a live domain handle; `names` is NULL or valid for writing `nameslen` pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snaptree_domain_prune(
    dom: *mut snaptree_domain,
    names: *mut *mut c_char,
    nameslen: c_int,
    flags: c_uint,
) -> c_int {
    boundary::call("snaptree_domain_prune", -1, |call| {
        // SAFETY: `dom` is NULL or a live domain handle (documented).
        let dom = unsafe { call.arg(dom, "dom") }?;
        let slots = call.len(nameslen, "nameslen")?;
        call.flags(flags, flags::PRUNE_DRY_RUN)?;
        let out = if slots > 0 {
            Some(call.out(names, "names")?)
        } else {
            None
        };
        let list = if flags & flags::PRUNE_DRY_RUN != 0 {
            dom.with(|d| d.plan_prune())?
        } else {
            dom.with(|d| d.prune(&mut NoProgress))?
        };
        if let Some(out) = out {
            // SAFETY: the caller made `names` valid for `nameslen` (= slots) pointers.
            unsafe { strings::write_names(out, slots, list.iter().map(|p| p.name.as_str())) }?;
        }
        call.count(list.len())
    })
}

// ---- errors ----

/// The code (`SNAPTREE_ERR_*`) of the last error of a call on this thread, or 0 when the
/// last call succeeded. Freeing handles and strings, and reading the last error, do not
/// change it.
#[unsafe(no_mangle)]
pub extern "C" fn snaptree_last_error_code() -> c_int {
    boundary::call_keeping_error("snaptree_last_error_code", 0, |_| Ok(boundary::last_code()))
}

/// The message of the last error of a call on this thread: a sentence naming the domain,
/// snapshot or file involved; NULL when the last call succeeded. The string belongs to the
/// library: it stays valid until the next call of a snaptree function on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn snaptree_last_error_message() -> *const c_char {
    boundary::call_keeping_error("snaptree_last_error_message", ptr::null(), |_| {
        Ok(boundary::last_message())
    })
}
