//! The libvirt C functions this backend calls, declared by hand from libvirt's public
//! headers (`libvirt/libvirt-*.h`, stable ABI since 1.0) and loaded at run time from
//! `libvirt.so.0` (and `libvirt-qemu.so.0` for the monitor command) with libloading.
//!
//! Why not the `virt` crate or a build-time link: the plugin then builds without
//! libvirt's development files, loads on a host without libvirt (the host can still list
//! it), and a domain opened there fails with a sentence naming the missing library or
//! symbol instead of a dynamic-linker error that keeps the whole plugin from loading.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use std::sync::OnceLock;

use libloading::Library;

/// `virConnectPtr`.
pub type ConnectPtr = *mut c_void;
/// `virDomainPtr`.
pub type DomainPtr = *mut c_void;
/// `virDomainSnapshotPtr`.
pub type SnapshotPtr = *mut c_void;

/// `VIR_ERR_NO_DOMAIN_SNAPSHOT`.
pub const ERR_NO_DOMAIN_SNAPSHOT: c_int = 72;
/// `VIR_ERR_NO_DOMAIN_METADATA`.
pub const ERR_NO_DOMAIN_METADATA: c_int = 80;
/// `VIR_DOMAIN_METADATA_ELEMENT`: a namespaced element of the domain's `<metadata>`.
pub const METADATA_ELEMENT: c_int = 2;
/// `VIR_DOMAIN_AFFECT_LIVE`.
pub const AFFECT_LIVE: c_uint = 1;
/// `VIR_DOMAIN_AFFECT_CONFIG`.
pub const AFFECT_CONFIG: c_uint = 2;

/// `VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE`.
pub const CREATE_REDEFINE: c_uint = 1;
/// `VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT`.
pub const CREATE_CURRENT: c_uint = 2;
/// `VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY`.
pub const CREATE_DISK_ONLY: c_uint = 16;
/// `VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC`.
pub const CREATE_ATOMIC: c_uint = 128;
/// `VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY`.
pub const DELETE_METADATA_ONLY: c_uint = 2;
/// `VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING`.
pub const REVERT_RUNNING: c_uint = 1;
/// `VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED`.
pub const REVERT_PAUSED: c_uint = 2;
/// `VIR_DOMAIN_XML_SECURE`.
pub const XML_SECURE: c_uint = 1;
/// `VIR_DOMAIN_XML_INACTIVE`.
pub const XML_INACTIVE: c_uint = 2;
/// `VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP`.
pub const MONITOR_HMP: c_uint = 1;
/// `VIR_DOMAIN_BLOCK_COMMIT_ACTIVE`: commit the active image (a job that ends in a pivot).
pub const BLOCK_COMMIT_ACTIVE: c_uint = 4;
/// `VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES`: the bandwidth is in bytes per second.
pub const BLOCK_COMMIT_BANDWIDTH_BYTES: c_uint = 16;
/// `VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT`: finish a ready active commit by pivoting onto its base.
pub const BLOCK_JOB_ABORT_PIVOT: c_uint = 2;

/// `virDomainBlockJobInfo`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct BlockJobInfo {
    /// `virDomainBlockJobType`.
    pub kind: c_int,
    /// The bandwidth limit (MiB/s unless asked in bytes).
    pub bandwidth: c_ulong,
    /// Work done so far, in the job's own unit.
    pub cur: u64,
    /// Work in all (it may grow while the guest writes).
    pub end: u64,
}

/// `virDomainBlockJobType` values this backend tells apart.
pub mod job {
    use std::ffi::c_int;
    /// `VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT`.
    pub const COMMIT: c_int = 3;
    /// `VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT`.
    pub const ACTIVE_COMMIT: c_int = 4;
}

/// `virDomainState` values this backend tells apart.
pub mod state {
    use std::ffi::c_int;
    /// `VIR_DOMAIN_RUNNING`.
    pub const RUNNING: c_int = 1;
    /// `VIR_DOMAIN_BLOCKED` (running, waiting on a resource).
    pub const BLOCKED: c_int = 2;
    /// `VIR_DOMAIN_PAUSED`.
    pub const PAUSED: c_int = 3;
    /// `VIR_DOMAIN_PMSUSPENDED` (the guest suspended itself; QEMU is stopped).
    pub const PMSUSPENDED: c_int = 7;
}

/// Declares the table of functions and its loader in one place, so a name cannot be
/// declared with one signature and loaded as another.
macro_rules! functions {
    ($( $(#[$doc:meta])* $field:ident = $sym:literal : fn($($arg:ty),*) -> $ret:ty; )*) => {
        /// The functions of `libvirt.so.0`, loaded once per process.
        #[allow(missing_docs)]
        pub struct Libvirt {
            $( $(#[$doc])* pub $field: unsafe extern "C" fn($($arg),*) -> $ret, )*
            /// `virDomainQemuMonitorCommand` from `libvirt-qemu.so.0`, when present.
            pub qemu_monitor_command: Option<
                unsafe extern "C" fn(DomainPtr, *const c_char, *mut *mut c_char, c_uint) -> c_int,
            >,
        }

        impl Libvirt {
            fn load() -> Result<Libvirt, String> {
                // SAFETY: loading libvirt runs its constructors, which only initialise
                // libvirt's own global state; it is a system library meant to be dlopened.
                let lib = unsafe { Library::new("libvirt.so.0") }.map_err(|e| {
                    format!("libvirt is not installed here (libvirt.so.0 cannot be loaded: {e})")
                })?;
                // The library stays loaded for the life of the process: the table points into it.
                let lib: &'static Library = Box::leak(Box::new(lib));
                let qemu: Option<&'static Library> =
                    // SAFETY: as above, for libvirt's QEMU-specific library.
                    unsafe { Library::new("libvirt-qemu.so.0") }
                        .ok()
                        .map(|l| &*Box::leak(Box::new(l)));
                Ok(Libvirt {
                    $( $field: {
                        // SAFETY: the symbol is declared above with the signature of
                        // libvirt's public header; the library is never unloaded.
                        let sym = unsafe {
                            lib.get::<unsafe extern "C" fn($($arg),*) -> $ret>(
                                concat!($sym, "\0").as_bytes(),
                            )
                        }
                        .map_err(|_| format!("libvirt.so.0 has no {}: libvirt is too old", $sym))?;
                        *sym
                    }, )*
                    qemu_monitor_command: qemu.and_then(|l| {
                        // SAFETY: declared with the signature of libvirt-qemu.h; never unloaded.
                        unsafe {
                            l.get::<unsafe extern "C" fn(
                                DomainPtr, *const c_char, *mut *mut c_char, c_uint,
                            ) -> c_int>(b"virDomainQemuMonitorCommand\0")
                        }
                        .ok()
                        .map(|s| *s)
                    }),
                })
            }
        }
    };
}

functions! {
    connect_open = "virConnectOpen": fn(*const c_char) -> ConnectPtr;
    connect_close = "virConnectClose": fn(ConnectPtr) -> c_int;
    connect_get_lib_version = "virConnectGetLibVersion": fn(ConnectPtr, *mut c_ulong) -> c_int;
    set_error_func = "virSetErrorFunc": fn(*mut c_void, Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>) -> ();
    get_last_error_message = "virGetLastErrorMessage": fn() -> *const c_char;
    get_last_error_code = "virGetLastErrorCode": fn() -> c_int;
    reset_last_error = "virResetLastError": fn() -> ();
    domain_lookup_by_name = "virDomainLookupByName": fn(ConnectPtr, *const c_char) -> DomainPtr;
    domain_free = "virDomainFree": fn(DomainPtr) -> c_int;
    domain_get_state = "virDomainGetState": fn(DomainPtr, *mut c_int, *mut c_int, c_uint) -> c_int;
    domain_get_xml_desc = "virDomainGetXMLDesc": fn(DomainPtr, c_uint) -> *mut c_char;
    domain_destroy = "virDomainDestroy": fn(DomainPtr) -> c_int;
    domain_create = "virDomainCreate": fn(DomainPtr) -> c_int;
    snapshot_create_xml = "virDomainSnapshotCreateXML": fn(DomainPtr, *const c_char, c_uint) -> SnapshotPtr;
    snapshot_lookup_by_name = "virDomainSnapshotLookupByName": fn(DomainPtr, *const c_char, c_uint) -> SnapshotPtr;
    snapshot_free = "virDomainSnapshotFree": fn(SnapshotPtr) -> c_int;
    snapshot_get_parent = "virDomainSnapshotGetParent": fn(SnapshotPtr, c_uint) -> SnapshotPtr;
    snapshot_current = "virDomainSnapshotCurrent": fn(DomainPtr, c_uint) -> SnapshotPtr;
    has_current_snapshot = "virDomainHasCurrentSnapshot": fn(DomainPtr, c_uint) -> c_int;
    list_all_snapshots = "virDomainListAllSnapshots": fn(DomainPtr, *mut *mut SnapshotPtr, c_uint) -> c_int;
    snapshot_get_name = "virDomainSnapshotGetName": fn(SnapshotPtr) -> *const c_char;
    snapshot_get_xml_desc = "virDomainSnapshotGetXMLDesc": fn(SnapshotPtr, c_uint) -> *mut c_char;
    snapshot_delete = "virDomainSnapshotDelete": fn(SnapshotPtr, c_uint) -> c_int;
    revert_to_snapshot = "virDomainRevertToSnapshot": fn(SnapshotPtr, c_uint) -> c_int;
    block_commit = "virDomainBlockCommit": fn(DomainPtr, *const c_char, *const c_char, *const c_char, c_ulong, c_uint) -> c_int;
    get_block_job_info = "virDomainGetBlockJobInfo": fn(DomainPtr, *const c_char, *mut BlockJobInfo, c_uint) -> c_int;
    block_job_abort = "virDomainBlockJobAbort": fn(DomainPtr, *const c_char, c_uint) -> c_int;
    set_metadata = "virDomainSetMetadata": fn(DomainPtr, c_int, *const c_char, *const c_char, *const c_char, c_uint) -> c_int;
    get_metadata = "virDomainGetMetadata": fn(DomainPtr, c_int, *const c_char, c_uint) -> *mut c_char;
}

unsafe extern "C" {
    /// The C library's `free`: libvirt hands out strings and arrays allocated with malloc
    /// for the caller to free (its own `virFree` is not exported).
    pub fn free(p: *mut c_void);
}

/// libvirt's default error handler prints every error to stderr; the backend reports
/// errors itself. The body is empty, so nothing can unwind across the C boundary.
unsafe extern "C" fn quiet(_user_data: *mut c_void, _error: *mut c_void) {}

/// The loaded library, or a sentence saying why it cannot be used here.
pub fn libvirt() -> Result<&'static Libvirt, String> {
    static LIB: OnceLock<Result<Libvirt, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let lib = Libvirt::load()?;
        // SAFETY: a valid function pointer with the handler's signature; the global
        // handler is only consulted by libvirt when an error is raised.
        unsafe { (lib.set_error_func)(std::ptr::null_mut(), Some(quiet)) };
        Ok(lib)
    })
    .as_ref()
    .map_err(Clone::clone)
}
