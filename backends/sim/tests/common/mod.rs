//! A thin wrapper over the sim plugin's raw vtable, so the tests talk to the C code
//! exactly as a host would, flags and NULL pointers included.
#![allow(dead_code)]

use std::ffi::{CString, c_char, c_int, c_void};
use std::path::Path;
use std::sync::OnceLock;

use snaptree_abi as abi;

/// The sim's vtable, loaded once per test process.
pub fn vtable() -> &'static abi::snaptree_backend_vtable {
    // The address, since raw pointers inside the table are not `Sync`.
    static TABLE: OnceLock<usize> = OnceLock::new();
    let address = *TABLE.get_or_init(|| {
        // SAFETY: the sim is a trusted plugin built by this crate; it is never unloaded.
        let lib = unsafe { libloading::Library::new(snaptree_backend_sim::PLUGIN_PATH) }
            .expect("load the sim plugin");
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        // SAFETY: the entry symbol has the ABI's type.
        let entry = unsafe {
            lib.get::<unsafe extern "C" fn() -> *const abi::snaptree_backend_vtable>(
                b"snaptree_backend_entry",
            )
        }
        .expect("the sim exports its entry");
        // SAFETY: calling the entry as the ABI declares it.
        unsafe { entry() as usize }
    });
    // SAFETY: the entry returned a pointer to a static table in a library never unloaded.
    unsafe { &*(address as *const abi::snaptree_backend_vtable) }
}

/// A failed call: the code and message from the error struct.
pub type Failure = (i32, String);

/// Interprets a call's return value and error struct.
pub fn check(rc: c_int, err: &abi::snaptree_backend_error) -> Result<(), Failure> {
    match rc {
        0 => Ok(()),
        -1 => {
            let bytes: Vec<u8> = err
                .message
                .iter()
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect();
            Err((err.code, String::from_utf8_lossy(&bytes).into_owned()))
        }
        other => panic!("the sim returned {other}, neither 0 nor -1"),
    }
}

/// A uuid from a small number.
pub fn uuid(n: u8) -> abi::snaptree_uuid {
    let mut bytes = [0u8; 16];
    bytes[15] = n;
    bytes[6] = 0x40; // looks like a v4 uuid; the sim does not care
    abi::snaptree_uuid { bytes }
}

/// An open sim domain.
#[derive(Debug)]
pub struct Sim {
    pub handle: *mut c_void,
}

impl Sim {
    /// Opens the sim domain keeping its layers in `dir`.
    pub fn open(dir: &Path) -> Sim {
        Sim::try_open(dir, 0).expect("open the sim domain")
    }

    /// Opens with explicit flags.
    pub fn try_open(dir: &Path, flags: u32) -> Result<Sim, Failure> {
        let xml = CString::new(snaptree_backend_sim::domain_xml("vm", dir)).unwrap();
        let mut handle = std::ptr::null_mut();
        let mut err = abi::snaptree_backend_error::default();
        let f = vtable().open_domain.unwrap();
        // SAFETY: valid string, out-pointer and error struct for the call.
        let rc = unsafe {
            f(
                xml.as_ptr(),
                xml.as_bytes().len(),
                &mut handle,
                flags,
                &mut err,
            )
        };
        check(rc, &err).map(|()| Sim { handle })
    }

    /// Runs `f` with a fresh error struct and checks the result.
    pub fn call(
        &self,
        f: impl FnOnce(*mut c_void, *mut abi::snaptree_backend_error) -> c_int,
    ) -> Result<(), Failure> {
        let mut err = abi::snaptree_backend_error::default();
        let rc = f(self.handle, &mut err);
        check(rc, &err)
    }

    pub fn create(&self, snap: u8, flags: u32) -> Result<(), Failure> {
        let f = vtable().create.unwrap();
        let s = uuid(snap);
        // SAFETY: an open handle; the arguments outlive the call.
        self.call(|h, e| unsafe {
            f(
                h,
                &s,
                std::ptr::null(),
                c"n".as_ptr(),
                c"".as_ptr(),
                None,
                std::ptr::null_mut(),
                flags,
                e,
            )
        })
    }

    pub fn revert(&self, snap: u8, state: c_int, flags: u32) -> Result<(), Failure> {
        let f = vtable().revert.unwrap();
        let s = uuid(snap);
        // SAFETY: as for `create`.
        self.call(|h, e| unsafe { f(h, &s, state, None, std::ptr::null_mut(), flags, e) })
    }

    pub fn discard_leaf(&self, snap: u8, flags: u32) -> Result<(), Failure> {
        let f = vtable().discard_leaf.unwrap();
        let s = uuid(snap);
        // SAFETY: as for `create`.
        self.call(|h, e| unsafe { f(h, &s, None, std::ptr::null_mut(), flags, e) })
    }

    pub fn merge(&self, snap: u8, parent: Option<u8>, flags: u32) -> Result<(), Failure> {
        let f = vtable().merge_into_parent.unwrap();
        let s = uuid(snap);
        let p = parent.map(uuid);
        let pp = p.as_ref().map_or(std::ptr::null(), |p| p as *const _);
        // SAFETY: as for `create`.
        self.call(|h, e| unsafe { f(h, &s, pp, None, std::ptr::null_mut(), flags, e) })
    }

    pub fn consolidate(&self, snap: u8, flags: u32) -> Result<(), Failure> {
        let f = vtable().consolidate.unwrap();
        let s = uuid(snap);
        // SAFETY: as for `create`.
        self.call(|h, e| unsafe { f(h, &s, None, std::ptr::null_mut(), flags, e) })
    }

    pub fn detach_live(&self, flags: u32) -> Result<(), Failure> {
        let f = vtable().detach_live.unwrap();
        // SAFETY: as for `create`.
        self.call(|h, e| unsafe { f(h, None, std::ptr::null_mut(), flags, e) })
    }

    pub fn forget(&self, snap: u8, flags: u32) -> Result<(), Failure> {
        let f = vtable().forget.unwrap();
        let s = uuid(snap);
        // SAFETY: as for `create`.
        self.call(|h, e| unsafe { f(h, &s, flags, e) })
    }

    pub fn power_state(&self, flags: u32) -> Result<c_int, Failure> {
        let f = vtable().power_state.unwrap();
        let mut state = 42;
        // SAFETY: as for `create`.
        self.call(|h, e| unsafe { f(h, &mut state, flags, e) })?;
        Ok(state)
    }

    pub fn write_guest(&self, seed: u64) {
        let f = vtable().write_guest.unwrap();
        // SAFETY: as for `create`.
        self.call(|h, e| unsafe { f(h, seed, 0, e) })
            .expect("write_guest");
    }

    /// The digest of a snapshot (`Some`) or of the live state.
    pub fn digest(&self, snap: Option<u8>) -> Result<String, Failure> {
        let f = vtable().content_digest.unwrap();
        let s = snap.map(uuid);
        let sp = s.as_ref().map_or(std::ptr::null(), |s| s as *const _);
        let mut buf = [0 as c_char; 256];
        // SAFETY: as for `create`; the buffer has the length passed.
        self.call(|h, e| unsafe { f(h, sp, buf.as_mut_ptr(), buf.len(), 0, e) })?;
        let bytes: Vec<u8> = buf
            .iter()
            .map(|&c| c as u8)
            .take_while(|&b| b != 0)
            .collect();
        Ok(String::from_utf8(bytes).unwrap())
    }

    /// Every layer with its parent (by last byte), and the live parent.
    pub fn physical(&self) -> (Vec<(u8, Option<u8>)>, Option<u8>) {
        unsafe extern "C" fn collect(
            ctx: *mut c_void,
            s: *const abi::snaptree_uuid,
            p: *const abi::snaptree_uuid,
        ) {
            // SAFETY: ctx is the Vec passed below; s and p are valid or NULL during the call.
            unsafe {
                let v = &mut *ctx.cast::<Vec<(u8, Option<u8>)>>();
                v.push(((*s).bytes[15], p.as_ref().map(|p| p.bytes[15])));
            }
        }
        let f = vtable().list_physical.unwrap();
        let mut layers: Vec<(u8, Option<u8>)> = Vec::new();
        let mut live = abi::snaptree_uuid::default();
        let mut has_live = 0;
        let ctx = (&raw mut layers).cast::<c_void>();
        // SAFETY: as for `create`; the callback and its context live across the call.
        self.call(|h, e| unsafe { f(h, Some(collect), ctx, &mut live, &mut has_live, 0, e) })
            .expect("list_physical");
        layers.sort();
        (layers, (has_live != 0).then_some(live.bytes[15]))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let f = vtable().close_domain.unwrap();
        let mut err = abi::snaptree_backend_error::default();
        // SAFETY: the handle is open and closed once here.
        unsafe { f(self.handle, 0, &mut err) };
    }
}
