//! The boundary, exercised in-process through the vtable a plugin would export.

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

use snaptree_abi as abi;
use snaptree_engine::{
    Capabilities, ErrorCode, PhysicalTree, PowerMask, PowerState, Progress, Step, StepKind,
};

use crate::boundary::write_error;
use crate::vtable::{VtableCell, entry};
use crate::{PluginError, PluginResult, SnaptreeBackend};

struct Probe {
    state: PowerState,
}

impl SnaptreeBackend for Probe {
    const NAME: &'static CStr = c"probe";

    fn capabilities() -> Capabilities {
        // No consolidate, no detach_live: their slots must be NULL.
        Capabilities::ALL
            .with(StepKind::Consolidate, PowerMask::NONE)
            .with(StepKind::DetachLive, PowerMask::NONE)
            .with(StepKind::Revert, PowerState::Shutoff.bit())
    }

    fn open(domain_xml: &str) -> PluginResult<Self> {
        if domain_xml.contains("refuse") {
            return Err(PluginError::backend("refused to open"));
        }
        Ok(Probe {
            state: PowerState::Paused,
        })
    }

    fn power_state(&mut self) -> PluginResult<PowerState> {
        if self.state == PowerState::Running {
            panic!("power_state panicked on purpose");
        }
        Ok(self.state)
    }

    fn execute(&mut self, step: &Step, _progress: &mut dyn Progress) -> PluginResult<()> {
        match step {
            Step::Revert { state, .. } => {
                self.state = *state;
                Ok(())
            }
            _ => Err(PluginError::backend("x".repeat(2000))),
        }
    }

    fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        Ok(PhysicalTree::default())
    }
}

fn vt() -> &'static abi::snaptree_backend_vtable {
    static CELL: OnceLock<VtableCell> = OnceLock::new();
    // SAFETY: `entry` returns a pointer into the static cell, valid forever.
    unsafe { &*entry::<Probe>(&CELL) }
}

fn open() -> *mut c_void {
    let xml = c"<domain type='probe'><name>p</name></domain>";
    let mut handle = std::ptr::null_mut();
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: a valid string of the length given, out-pointer and error struct.
    let rc = unsafe {
        vt().open_domain.unwrap()(xml.as_ptr(), xml.count_bytes(), &mut handle, 0, &mut err)
    };
    assert_eq!(rc, 0);
    handle
}

fn close(handle: *mut c_void) {
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: an open handle, closed once.
    unsafe { vt().close_domain.unwrap()(handle, 0, &mut err) };
}

fn message(err: &abi::snaptree_backend_error) -> String {
    let bytes: Vec<u8> = err
        .message
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8(bytes).expect("the message is valid UTF-8")
}

fn power(handle: *mut c_void, flags: u32) -> (c_int, c_int, abi::snaptree_backend_error) {
    let mut state = 42;
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: the handle is open or NULL (tested); out-pointer and error struct are valid.
    let rc = unsafe { vt().power_state.unwrap()(handle, &mut state, flags, &mut err) };
    (rc, state, err)
}

#[test]
fn the_vtable_declares_the_abi_and_nulls_unsupported_slots() {
    let t = vt();
    assert_eq!(t.abi_version, abi::SNAPTREE_BACKEND_ABI_VERSION);
    assert_eq!(
        t.struct_size as usize,
        std::mem::size_of::<abi::snaptree_backend_vtable>()
    );
    // SAFETY: the name is the 'static C string of `Probe::NAME`.
    assert_eq!(unsafe { CStr::from_ptr(t.name) }, c"probe");
    assert!(
        t.consolidate.is_none() && t.detach_live.is_none(),
        "unsupported optional steps have NULL slots"
    );
    assert!(t.merge_into_parent.is_some() && t.forget.is_some());
    assert!(
        t.content_digest.is_none() && t.write_guest.is_none(),
        "no test hooks unless TEST_HOOKS"
    );
    assert!(t.adopt.is_none(), "no adopt slot unless ADOPT");
    assert!(t.estimate.is_none(), "no estimate slot unless ESTIMATE");
    assert_eq!(
        abi::step_mask(t.capabilities, abi::SNAPTREE_STEP_REVERT),
        abi::SNAPTREE_POWER_MASK_SHUTOFF as u8
    );
    assert_eq!(
        abi::step_mask(t.capabilities, abi::SNAPTREE_STEP_CONSOLIDATE),
        0
    );
    assert_eq!(abi::step_mask(t.capabilities, abi::SNAPTREE_STEP_CREATE), 7);
}

#[test]
fn unknown_flag_bits_are_refused_and_out_parameters_untouched() {
    let h = open();
    let (rc, state, err) = power(h, 0x4);
    assert_eq!(
        (rc, state),
        (-1, 42),
        "a refused call leaves its out-parameter alone"
    );
    assert_eq!(err.code, ErrorCode::InvalidArg as i32);
    assert_eq!(message(&err), "unknown flag bits 0x4");
    let (rc, state, _) = power(h, 0);
    assert_eq!((rc, state), (0, abi::SNAPTREE_POWER_PAUSED as c_int));
    close(h);
}

#[test]
fn a_null_handle_is_refused() {
    let (rc, state, err) = power(std::ptr::null_mut(), 0);
    assert_eq!(
        (rc, state, err.code),
        (-1, 42, ErrorCode::InvalidArg as i32)
    );
    assert_eq!(message(&err), "the domain handle is NULL");
}

#[test]
fn open_errors_reach_the_error_struct_and_leave_the_handle_alone() {
    let xml = c"<domain type='probe'><name>refuse</name></domain>";
    let mut handle = 7usize as *mut c_void;
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: valid arguments for the call.
    let rc = unsafe {
        vt().open_domain.unwrap()(xml.as_ptr(), xml.count_bytes(), &mut handle, 0, &mut err)
    };
    assert_eq!(
        (rc, handle as usize, err.code),
        (-1, 7, ErrorCode::Backend as i32)
    );
    assert_eq!(message(&err), "refused to open");
}

#[test]
fn a_panic_becomes_a_backend_error_and_poisons_the_domain() {
    let h = open();
    let snapshot = abi::snaptree_uuid::default();
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: an open handle and valid arguments. Reverting to "running" makes the next
    // power_state panic.
    let rc = unsafe {
        vt().revert.unwrap()(
            h,
            &snapshot,
            abi::SNAPTREE_POWER_RUNNING as c_int,
            None,
            std::ptr::null_mut(),
            0,
            &mut err,
        )
    };
    assert_eq!(rc, 0);
    let (rc, state, err) = power(h, 0);
    assert_eq!((rc, state, err.code), (-1, 42, ErrorCode::Backend as i32));
    assert_eq!(
        message(&err),
        "backend 'probe' panicked: power_state panicked on purpose"
    );
    let (rc, _, err) = power(h, 0);
    assert_eq!(rc, -1);
    assert_eq!(
        message(&err),
        "backend 'probe' panicked earlier on this domain; close and reopen it"
    );
    close(h);
}

#[test]
fn a_revert_to_an_unknown_power_state_is_refused_and_changes_nothing() {
    let h = open();
    let snapshot = abi::snaptree_uuid::default();
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: an open handle and valid arguments; 9 is no SNAPTREE_POWER_* value.
    let rc =
        unsafe { vt().revert.unwrap()(h, &snapshot, 9, None, std::ptr::null_mut(), 0, &mut err) };
    assert_eq!((rc, err.code), (-1, ErrorCode::InvalidArg as i32));
    assert_eq!(message(&err), "unknown power state 9");
    let (rc, state, _) = power(h, 0);
    assert_eq!(
        (rc, state),
        (0, abi::SNAPTREE_POWER_PAUSED as c_int),
        "the refused revert must not reach the backend"
    );
    close(h);
}

#[test]
fn long_messages_are_truncated_to_the_buffer() {
    let h = open();
    let snapshot = abi::snaptree_uuid::default();
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: an open handle and valid arguments.
    let rc = unsafe {
        vt().discard_leaf.unwrap()(h, &snapshot, None, std::ptr::null_mut(), 0, &mut err)
    };
    assert_eq!(rc, -1);
    assert_eq!(
        message(&err),
        "x".repeat(abi::SNAPTREE_BACKEND_ERROR_MESSAGE_SIZE as usize - 1)
    );
    close(h);

    // A multi-byte character straddling the end is dropped whole, so the text stays UTF-8.
    let mut err = abi::snaptree_backend_error::default();
    write_error(
        &mut err,
        &PluginError::backend(format!("{}é", "a".repeat(510))),
    );
    assert_eq!(message(&err), "a".repeat(510));
}

/// A plugin that adopts: data is held for snapshots named "held" on the base only.
struct Adopter;

impl SnaptreeBackend for Adopter {
    const NAME: &'static CStr = c"adopter";
    const ADOPT: bool = true;

    fn capabilities() -> Capabilities {
        Capabilities::ALL
    }

    fn open(_domain_xml: &str) -> PluginResult<Self> {
        Ok(Adopter)
    }

    fn power_state(&mut self) -> PluginResult<PowerState> {
        Ok(PowerState::Shutoff)
    }

    fn execute(&mut self, _step: &Step, _progress: &mut dyn Progress) -> PluginResult<()> {
        Ok(())
    }

    fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        Ok(PhysicalTree::default())
    }

    fn adopt(&mut self, adoption: &crate::Adoption) -> PluginResult<()> {
        if adoption.name == "held" && adoption.parent.is_none() {
            Ok(())
        } else {
            Err(PluginError::operation_invalid(format!(
                "no data for '{}' on {:?}",
                adoption.name, adoption.parent
            )))
        }
    }
}

#[test]
fn adopt_reaches_the_trait_with_its_arguments_and_errors_keep_their_code() {
    static CELL: OnceLock<VtableCell> = OnceLock::new();
    // SAFETY: `entry` returns a pointer into the static cell, valid forever.
    let t = unsafe { &*entry::<Adopter>(&CELL) };
    let f = t.adopt.expect("ADOPT gives an adopt slot");
    let xml = c"<domain type='adopter'><name>p</name></domain>";
    let mut handle = std::ptr::null_mut();
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: a valid string of the length given, out-pointer and error struct.
    let rc = unsafe {
        t.open_domain.unwrap()(xml.as_ptr(), xml.count_bytes(), &mut handle, 0, &mut err)
    };
    assert_eq!(rc, 0);
    let snapshot = abi::snaptree_uuid { bytes: [7; 16] };
    let parent = abi::snaptree_uuid { bytes: [8; 16] };
    // SAFETY: an open handle; valid uuids, names and error structs for each call.
    unsafe {
        let mut err = abi::snaptree_backend_error::default();
        assert_eq!(
            f(
                handle,
                &snapshot,
                std::ptr::null(),
                c"held".as_ptr(),
                0,
                &mut err
            ),
            0
        );
        let mut err = abi::snaptree_backend_error::default();
        assert_eq!(
            f(handle, &snapshot, &parent, c"held".as_ptr(), 0, &mut err),
            -1
        );
        assert_eq!(err.code as u32, abi::SNAPTREE_BACKEND_ERR_OPERATION_INVALID);
        assert!(
            message(&err).contains("no data for 'held' on Some("),
            "{}",
            message(&err)
        );
        let mut err = abi::snaptree_backend_error::default();
        assert_eq!(
            f(
                handle,
                &snapshot,
                std::ptr::null(),
                std::ptr::null(),
                0,
                &mut err
            ),
            -1
        );
        assert_eq!(err.code as u32, abi::SNAPTREE_BACKEND_ERR_INVALID_ARG);
        let mut err = abi::snaptree_backend_error::default();
        assert_eq!(
            f(
                handle,
                &snapshot,
                std::ptr::null(),
                c"held".as_ptr(),
                1,
                &mut err
            ),
            -1
        );
        assert_eq!(err.code as u32, abi::SNAPTREE_BACKEND_ERR_INVALID_ARG);
        let mut err = abi::snaptree_backend_error::default();
        t.close_domain.unwrap()(handle, 0, &mut err);
    }
}

/// A plugin that estimates: a merge writes 10 bytes on file system 3 (`/m`), a discard
/// frees 4, and a create cannot be estimated.
struct Estimator;

impl SnaptreeBackend for Estimator {
    const NAME: &'static CStr = c"estimator";
    const ESTIMATE: bool = true;

    fn capabilities() -> Capabilities {
        Capabilities::ALL
    }

    fn open(_domain_xml: &str) -> PluginResult<Self> {
        Ok(Estimator)
    }

    fn power_state(&mut self) -> PluginResult<PowerState> {
        Ok(PowerState::Shutoff)
    }

    fn execute(&mut self, _step: &Step, _progress: &mut dyn Progress) -> PluginResult<()> {
        Ok(())
    }

    fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        Ok(PhysicalTree::default())
    }

    fn estimate(&mut self, step: &Step) -> PluginResult<Option<Vec<crate::SpaceUse>>> {
        let on = |written, freed| crate::SpaceUse {
            fs: 3,
            path: "/m".into(),
            written,
            freed,
            free: 100,
        };
        Ok(match step {
            Step::MergeIntoParent {
                parent: Some(_), ..
            } => Some(vec![on(10, 0)]),
            Step::DiscardLeaf { .. } => Some(vec![on(0, 4)]),
            _ => None,
        })
    }
}

unsafe extern "C" fn collect_space(ctx: *mut std::ffi::c_void, u: *const abi::snaptree_space_use) {
    // SAFETY: the test passes a Vec as ctx and the SDK a valid entry with a valid path.
    unsafe {
        let out = &mut *ctx.cast::<Vec<(u64, u64, u64, u64, String)>>();
        let u = &*u;
        out.push((
            u.fs_id,
            u.bytes_written,
            u.bytes_freed,
            u.bytes_free,
            CStr::from_ptr(u.path).to_string_lossy().into_owned(),
        ));
    }
}

#[test]
fn estimate_reaches_the_trait_and_reports_each_file_system_or_unknown() {
    static CELL: OnceLock<VtableCell> = OnceLock::new();
    // SAFETY: `entry` returns a pointer into the static cell, valid forever.
    let t = unsafe { &*entry::<Estimator>(&CELL) };
    let f = t.estimate.expect("ESTIMATE gives an estimate slot");
    let xml = c"<domain type='estimator'><name>p</name></domain>";
    let mut handle = std::ptr::null_mut();
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: a valid string of the length given, out-pointer and error struct.
    let rc = unsafe {
        t.open_domain.unwrap()(xml.as_ptr(), xml.count_bytes(), &mut handle, 0, &mut err)
    };
    assert_eq!(rc, 0);
    let s = abi::snaptree_uuid { bytes: [7; 16] };
    let p = abi::snaptree_uuid { bytes: [8; 16] };
    let call = |step: u32, parent: *const abi::snaptree_uuid, flags: u32| {
        let mut out: Vec<(u64, u64, u64, u64, String)> = Vec::new();
        let mut known = -1;
        let mut err = abi::snaptree_backend_error::default();
        // SAFETY: an open handle, valid uuids, callback context, out-pointer and error.
        let rc = unsafe {
            f(
                handle,
                step as i32,
                &s,
                parent,
                Some(collect_space),
                (&raw mut out).cast(),
                &mut known,
                flags,
                &mut err,
            )
        };
        (rc, known, out, err.code)
    };
    let (rc, known, out, _) = call(abi::SNAPTREE_STEP_MERGE_INTO_PARENT, &p, 0);
    assert_eq!((rc, known), (0, 1));
    assert_eq!(out, vec![(3, 10, 0, 100, "/m".to_string())]);
    let (rc, known, out, _) = call(abi::SNAPTREE_STEP_DISCARD_LEAF, std::ptr::null(), 0);
    assert_eq!((rc, known, out[0].2), (0, 1, 4));
    let (rc, known, out, _) = call(abi::SNAPTREE_STEP_CREATE, std::ptr::null(), 0);
    assert_eq!(
        (rc, known, out.len()),
        (0, 0, 0),
        "unknown, nothing reported"
    );
    let (rc, _, _, code) = call(abi::SNAPTREE_STEP_DISCARD_LEAF, std::ptr::null(), 1);
    assert_eq!(
        (rc, code as u32),
        (-1, abi::SNAPTREE_BACKEND_ERR_INVALID_ARG),
        "unknown flag bits"
    );
    let (rc, _, _, code) = call(99, std::ptr::null(), 0);
    assert_eq!(
        (rc, code as u32),
        (-1, abi::SNAPTREE_BACKEND_ERR_INVALID_ARG),
        "unknown step"
    );
    let mut err = abi::snaptree_backend_error::default();
    // SAFETY: the handle is open and closed once.
    assert_eq!(unsafe { t.close_domain.unwrap()(handle, 0, &mut err) }, 0);
}
