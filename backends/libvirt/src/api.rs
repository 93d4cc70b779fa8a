//! Safe handles over the loaded libvirt functions: a connection, a domain, a snapshot,
//! each freed on drop, and libvirt's last error turned into a [`LibvirtError`].

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_ulong, c_void};
use std::fmt;
use std::path::Path;

use crate::sys::{self, ConnectPtr, DomainPtr, Libvirt, SnapshotPtr};

/// A failed libvirt call: what was being done, and libvirt's own sentence and code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtError {
    /// What the backend was doing ("delete snapshot X of domain 'vm'").
    pub what: String,
    /// libvirt's message (`virGetLastErrorMessage`).
    pub message: String,
    /// libvirt's error code (`virErrorNumber`), 0 when none was set.
    pub code: i32,
}

impl fmt::Display for LibvirtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {}: {}", self.what, self.message)
    }
}

impl std::error::Error for LibvirtError {}

/// Result of a libvirt call.
pub type Result<T> = std::result::Result<T, LibvirtError>;

fn last_error(lib: &Libvirt, what: impl Into<String>) -> LibvirtError {
    // SAFETY: both read libvirt's thread-local last error; the message pointer is owned by
    // libvirt and copied before any other libvirt call on this thread.
    let (message, code) = unsafe {
        let m = (lib.get_last_error_message)();
        let message = if m.is_null() {
            "no message".to_owned()
        } else {
            CStr::from_ptr(m).to_string_lossy().into_owned()
        };
        (message, (lib.get_last_error_code)())
    };
    LibvirtError {
        what: what.into(),
        message,
        code,
    }
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| LibvirtError {
        what: what.to_owned(),
        message: "the text contains a NUL byte".into(),
        code: 0,
    })
}

/// Takes a string libvirt allocated for the caller, copies it, and frees it.
fn take_string(_lib: &Libvirt, p: *mut c_char) -> String {
    // SAFETY: `p` is a NUL-terminated string libvirt allocated with malloc for the
    // caller; it is copied, then freed once.
    unsafe {
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        sys::free(p as *mut c_void);
        s
    }
}

/// An open connection to a libvirt daemon (`virConnectOpen`).
pub struct Connection {
    lib: &'static Libvirt,
    ptr: ConnectPtr,
    uri: String,
}

// SAFETY: libvirt connections are thread-safe (libvirt serialises calls on a connection);
// the handle is only moved between threads, one call at a time.
unsafe impl Send for Connection {}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("uri", &self.uri)
            .finish()
    }
}

impl Connection {
    /// Opens `uri` (`qemu:///system`, `qemu+ssh://host/system`, ...).
    pub fn open(uri: &str) -> std::result::Result<Connection, String> {
        let lib = sys::libvirt()?;
        let c = cstring(uri, "open the connection").map_err(|e| e.to_string())?;
        // SAFETY: `c` is a valid C string for the duration of the call.
        let ptr = unsafe { (lib.connect_open)(c.as_ptr()) };
        if ptr.is_null() {
            return Err(last_error(lib, format!("connect to libvirt at '{uri}'")).to_string());
        }
        Ok(Connection {
            lib,
            ptr,
            uri: uri.to_owned(),
        })
    }

    /// The URI it was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The daemon's libvirt version, as `major * 1_000_000 + minor * 1000 + release`.
    pub fn lib_version(&self) -> Result<u64> {
        let mut v: c_ulong = 0;
        // SAFETY: a live connection and a valid out-pointer.
        if unsafe { (self.lib.connect_get_lib_version)(self.ptr, &mut v) } < 0 {
            return Err(last_error(self.lib, "read libvirt's version"));
        }
        Ok(v as u64)
    }

    /// Looks a domain up by name.
    pub fn domain(&self, name: &str) -> Result<Domain> {
        let what = format!("find domain '{name}'");
        let c = cstring(name, &what)?;
        // SAFETY: a live connection and a valid C string.
        let ptr = unsafe { (self.lib.domain_lookup_by_name)(self.ptr, c.as_ptr()) };
        if ptr.is_null() {
            return Err(last_error(self.lib, what));
        }
        Ok(Domain {
            lib: self.lib,
            ptr,
            name: name.to_owned(),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the connection is live and closed exactly once; domains hold their own
        // reference to it inside libvirt.
        unsafe { (self.lib.connect_close)(self.ptr) };
    }
}

/// A libvirt domain (`virDomainPtr`).
pub struct Domain {
    lib: &'static Libvirt,
    ptr: DomainPtr,
    name: String,
}

// SAFETY: as for Connection: libvirt objects are thread-safe and used one call at a time.
unsafe impl Send for Domain {}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain").field("name", &self.name).finish()
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: one reference, released once.
        unsafe { (self.lib.domain_free)(self.ptr) };
    }
}

impl Domain {
    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `virDomainGetState`: the raw state number.
    pub fn state(&self) -> Result<c_int> {
        let (mut state, mut reason) = (0, 0);
        // SAFETY: a live domain and valid out-pointers.
        if unsafe { (self.lib.domain_get_state)(self.ptr, &mut state, &mut reason, 0) } < 0 {
            return Err(last_error(
                self.lib,
                format!("read the state of domain '{}'", self.name),
            ));
        }
        Ok(state)
    }

    /// The domain's XML (`flags`: `XML_INACTIVE` for the persistent definition).
    pub fn xml(&self, flags: c_uint) -> Result<String> {
        // SAFETY: a live domain; the result is a string we own.
        let p = unsafe { (self.lib.domain_get_xml_desc)(self.ptr, flags) };
        if p.is_null() {
            return Err(last_error(
                self.lib,
                format!("read the definition of domain '{}'", self.name),
            ));
        }
        Ok(take_string(self.lib, p))
    }

    /// Stops the domain at once (`virDomainDestroy`).
    pub fn destroy(&self) -> Result<()> {
        // SAFETY: a live domain.
        if unsafe { (self.lib.domain_destroy)(self.ptr) } < 0 {
            return Err(last_error(self.lib, format!("stop domain '{}'", self.name)));
        }
        Ok(())
    }

    /// Starts the domain (`virDomainCreate`).
    pub fn start(&self) -> Result<()> {
        // SAFETY: a live domain.
        if unsafe { (self.lib.domain_create)(self.ptr) } < 0 {
            return Err(last_error(
                self.lib,
                format!("start domain '{}'", self.name),
            ));
        }
        Ok(())
    }

    /// `virDomainSnapshotCreateXML`.
    pub fn create_snapshot(&self, xml: &str, flags: c_uint, what: &str) -> Result<Snapshot> {
        let c = cstring(xml, what)?;
        // SAFETY: a live domain and a valid C string.
        let ptr = unsafe { (self.lib.snapshot_create_xml)(self.ptr, c.as_ptr(), flags) };
        self.snapshot_or_error(ptr, what)
    }

    /// The snapshot named `name`, or None when libvirt has none by that name.
    pub fn snapshot(&self, name: &str) -> Result<Option<Snapshot>> {
        let what = format!("find snapshot {name} of domain '{}'", self.name);
        let c = cstring(name, &what)?;
        // SAFETY: a live domain and a valid C string.
        let ptr = unsafe { (self.lib.snapshot_lookup_by_name)(self.ptr, c.as_ptr(), 0) };
        self.optional(ptr, &what)
    }

    /// The current snapshot, if any.
    pub fn current(&self) -> Result<Option<Snapshot>> {
        let what = format!("read the current snapshot of domain '{}'", self.name);
        // SAFETY: a live domain.
        let has = unsafe { (self.lib.has_current_snapshot)(self.ptr, 0) };
        if has < 0 {
            return Err(last_error(self.lib, what));
        }
        if has == 0 {
            return Ok(None);
        }
        // SAFETY: a live domain.
        let ptr = unsafe { (self.lib.snapshot_current)(self.ptr, 0) };
        self.optional(ptr, &what)
    }

    /// Every snapshot libvirt holds for the domain.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let mut list: *mut SnapshotPtr = std::ptr::null_mut();
        // SAFETY: a live domain and a valid out-pointer; on success libvirt hands us an
        // array of `n` snapshot references plus the array itself, all ours to free.
        let n = unsafe { (self.lib.list_all_snapshots)(self.ptr, &mut list, 0) };
        if n < 0 {
            return Err(last_error(
                self.lib,
                format!("list the snapshots of domain '{}'", self.name),
            ));
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            // SAFETY: `i < n`, within the array libvirt returned.
            let ptr = unsafe { *list.add(i) };
            out.push(Snapshot { lib: self.lib, ptr });
        }
        if !list.is_null() {
            // SAFETY: the array (not its elements, now owned by `out`) is freed once.
            unsafe { sys::free(list as *mut c_void) };
        }
        Ok(out)
    }

    /// A monitor command through libvirt (`virDomainQemuMonitorCommand`, HMP when `hmp`).
    pub fn monitor_command(&self, command: &str, hmp: bool) -> Result<String> {
        let what = format!("run a monitor command on domain '{}'", self.name);
        let Some(f) = self.lib.qemu_monitor_command else {
            return Err(LibvirtError {
                what,
                message: "libvirt-qemu.so.0 is not installed".into(),
                code: 0,
            });
        };
        let c = cstring(command, &what)?;
        let mut out: *mut c_char = std::ptr::null_mut();
        let flags = if hmp { sys::MONITOR_HMP } else { 0 };
        // SAFETY: a live domain, a valid C string and out-pointer.
        if unsafe { f(self.ptr, c.as_ptr(), &mut out, flags) } < 0 {
            return Err(last_error(self.lib, what));
        }
        Ok(if out.is_null() {
            String::new()
        } else {
            take_string(self.lib, out)
        })
    }

    /// Starts a block commit on disk `disk` (`virDomainBlockCommit`): `top`'s data into
    /// `base`, both files of the disk's chain; `active` for a commit of the active image
    /// (a job that ends only by a pivot); `bandwidth` in bytes per second, 0 for no limit.
    pub fn block_commit(
        &self,
        disk: &str,
        base: &Path,
        top: &Path,
        bandwidth: u64,
        active: bool,
    ) -> Result<()> {
        let what = format!(
            "commit {} into {} on disk {disk} of domain '{}'",
            top.display(),
            base.display(),
            self.name
        );
        let d = cstring(disk, &what)?;
        let b = cstring(&base.to_string_lossy(), &what)?;
        let t = cstring(&top.to_string_lossy(), &what)?;
        let mut flags = sys::BLOCK_COMMIT_BANDWIDTH_BYTES;
        if active {
            flags |= sys::BLOCK_COMMIT_ACTIVE;
        }
        // SAFETY: a live domain and valid C strings for the duration of the call.
        let rc = unsafe {
            (self.lib.block_commit)(
                self.ptr,
                d.as_ptr(),
                b.as_ptr(),
                t.as_ptr(),
                bandwidth as c_ulong,
                flags,
            )
        };
        if rc < 0 {
            return Err(last_error(self.lib, what));
        }
        Ok(())
    }

    /// The block job running on disk `disk`, if any (`virDomainGetBlockJobInfo`).
    pub fn block_job(&self, disk: &str) -> Result<Option<sys::BlockJobInfo>> {
        let what = format!(
            "read the block job of disk {disk} of domain '{}'",
            self.name
        );
        let d = cstring(disk, &what)?;
        let mut info = sys::BlockJobInfo::default();
        // SAFETY: a live domain, a valid C string and a valid out-pointer of the header's
        // layout.
        match unsafe { (self.lib.get_block_job_info)(self.ptr, d.as_ptr(), &mut info, 0) } {
            rc if rc < 0 => Err(last_error(self.lib, what)),
            0 => Ok(None),
            _ => Ok(Some(info)),
        }
    }

    /// Ends the block job on disk `disk` (`virDomainBlockJobAbort`, synchronous): with
    /// `pivot`, a ready active commit switches the disk onto its base; without, the job
    /// stops where it is.
    pub fn block_job_abort(&self, disk: &str, pivot: bool) -> Result<()> {
        let what = format!(
            "{} the block job of disk {disk} of domain '{}'",
            if pivot { "pivot" } else { "abort" },
            self.name
        );
        let d = cstring(disk, &what)?;
        let flags = if pivot { sys::BLOCK_JOB_ABORT_PIVOT } else { 0 };
        // SAFETY: a live domain and a valid C string.
        if unsafe { (self.lib.block_job_abort)(self.ptr, d.as_ptr(), flags) } < 0 {
            return Err(last_error(self.lib, what));
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) the domain's `<metadata>` element of namespace
    /// `uri` (prefix `key`), in the definitions `flags` names (`AFFECT_LIVE`, `AFFECT_CONFIG`).
    pub fn set_metadata(
        &self,
        xml: Option<&str>,
        key: &str,
        uri: &str,
        flags: c_uint,
    ) -> Result<()> {
        let what = format!("record snaptree's metadata in domain '{}'", self.name);
        let x = xml.map(|x| cstring(x, &what)).transpose()?;
        let k = cstring(key, &what)?;
        let u = cstring(uri, &what)?;
        // SAFETY: a live domain and valid C strings (or NULL: remove) for the call.
        let rc = unsafe {
            (self.lib.set_metadata)(
                self.ptr,
                sys::METADATA_ELEMENT,
                x.as_ref().map_or(std::ptr::null(), |x| x.as_ptr()),
                k.as_ptr(),
                u.as_ptr(),
                flags,
            )
        };
        if rc < 0 {
            return Err(last_error(self.lib, what));
        }
        Ok(())
    }

    /// The domain's `<metadata>` element of namespace `uri`, if it has one.
    pub fn metadata(&self, uri: &str, flags: c_uint) -> Result<Option<String>> {
        let what = format!("read snaptree's metadata of domain '{}'", self.name);
        let u = cstring(uri, &what)?;
        // SAFETY: a live domain and a valid C string; the result is a string we own.
        let p =
            unsafe { (self.lib.get_metadata)(self.ptr, sys::METADATA_ELEMENT, u.as_ptr(), flags) };
        if !p.is_null() {
            return Ok(Some(take_string(self.lib, p)));
        }
        let e = last_error(self.lib, what);
        if e.code == sys::ERR_NO_DOMAIN_METADATA {
            // SAFETY: clears the consumed last error.
            unsafe { (self.lib.reset_last_error)() };
            return Ok(None);
        }
        Err(e)
    }

    fn snapshot_or_error(&self, ptr: SnapshotPtr, what: &str) -> Result<Snapshot> {
        if ptr.is_null() {
            return Err(last_error(self.lib, what));
        }
        Ok(Snapshot { lib: self.lib, ptr })
    }

    fn optional(&self, ptr: SnapshotPtr, what: &str) -> Result<Option<Snapshot>> {
        if !ptr.is_null() {
            return Ok(Some(Snapshot { lib: self.lib, ptr }));
        }
        let e = last_error(self.lib, what);
        if e.code == sys::ERR_NO_DOMAIN_SNAPSHOT {
            // SAFETY: clears this thread's last error, which we have consumed.
            unsafe { (self.lib.reset_last_error)() };
            return Ok(None);
        }
        Err(e)
    }
}

/// A libvirt snapshot (`virDomainSnapshotPtr`).
pub struct Snapshot {
    lib: &'static Libvirt,
    ptr: SnapshotPtr,
}

// SAFETY: as for Connection.
unsafe impl Send for Snapshot {}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Snapshot").field(&self.name()).finish()
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // SAFETY: one reference, released once.
        unsafe { (self.lib.snapshot_free)(self.ptr) };
    }
}

impl Snapshot {
    /// The snapshot's name.
    pub fn name(&self) -> String {
        // SAFETY: a live snapshot; the name is owned by the object and copied at once.
        unsafe {
            let p = (self.lib.snapshot_get_name)(self.ptr);
            if p.is_null() {
                return String::new();
            }
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }

    /// The parent snapshot, or None for a root.
    pub fn parent(&self) -> Result<Option<Snapshot>> {
        // Every libvirt call clears the last error: name the snapshot before the call.
        let what = format!("read the parent of snapshot {}", self.name());
        // SAFETY: a live snapshot.
        let ptr = unsafe { (self.lib.snapshot_get_parent)(self.ptr, 0) };
        if !ptr.is_null() {
            return Ok(Some(Snapshot { lib: self.lib, ptr }));
        }
        let e = last_error(self.lib, what);
        if e.code == sys::ERR_NO_DOMAIN_SNAPSHOT {
            // SAFETY: clears the consumed last error.
            unsafe { (self.lib.reset_last_error)() };
            return Ok(None);
        }
        Err(e)
    }

    /// The snapshot's XML (with secure details, so that it can be redefined).
    pub fn xml(&self) -> Result<String> {
        let what = format!("read the definition of snapshot {}", self.name());
        // SAFETY: a live snapshot; the result is a string we own.
        let p = unsafe { (self.lib.snapshot_get_xml_desc)(self.ptr, sys::XML_SECURE) };
        if p.is_null() {
            return Err(last_error(self.lib, what));
        }
        Ok(take_string(self.lib, p))
    }

    /// `virDomainSnapshotDelete`.
    pub fn delete(&self, flags: c_uint) -> Result<()> {
        let what = format!("delete snapshot {}", self.name());
        // SAFETY: a live snapshot.
        if unsafe { (self.lib.snapshot_delete)(self.ptr, flags) } < 0 {
            return Err(last_error(self.lib, what));
        }
        Ok(())
    }

    /// `virDomainRevertToSnapshot`.
    pub fn revert(&self, flags: c_uint) -> Result<()> {
        let what = format!("revert to snapshot {}", self.name());
        // SAFETY: a live snapshot.
        if unsafe { (self.lib.revert_to_snapshot)(self.ptr, flags) } < 0 {
            return Err(last_error(self.lib, what));
        }
        Ok(())
    }
}
