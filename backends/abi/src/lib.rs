//! Rust bindings of the snaptree backend plugin ABI, `include/snaptree_backend.h`.
//!
//! [`bindings`] is bindgen's output for the header, committed, with bindgen's compile-time
//! layout assertions. The test `tests/bindings.rs` fails when it is stale; regenerate with
//! `SNAPTREE_REGEN=1 cargo test -p snaptree-abi --test bindings`. The few items here that
//! are not generated are the header's function-like macros, which bindgen cannot translate,
//! and [`convert`], the engine's values as the ABI numbers them, which the plugin host and
//! the SDK share.

/// bindgen's output for `include/snaptree_backend.h`.
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs
)]
// Generated code: its `Default` impls zero the structs in `unsafe` blocks without our
// `SAFETY:` comments. Zero is a valid value of every field (integers, raw pointers,
// `Option` of function pointers).
#[allow(clippy::undocumented_unsafe_blocks)]
pub mod bindings {
    include!("bindings.rs");
}

pub use bindings::*;

pub mod convert;

/// The size of the ABI 1.0 vtable: the end of `write_guest`, its last slot. A plugin whose
/// `struct_size` is smaller is refused; slots past a plugin's `struct_size` (added by later
/// minor versions) read as NULL.
pub const VTABLE_MIN_SIZE: usize =
    std::mem::offset_of!(snaptree_backend_vtable, write_guest) + std::mem::size_of::<usize>();

/// The major part of an ABI version (`SNAPTREE_BACKEND_ABI_VERSION >> 16`).
pub const fn abi_major(version: u32) -> u32 {
    version >> 16
}

/// The minor part of an ABI version.
pub const fn abi_minor(version: u32) -> u32 {
    version & 0xffff
}

/// The capability bits allowing `step` (a `SNAPTREE_STEP_*`) in the power states of `mask`
/// (`SNAPTREE_POWER_MASK_*` bits): the header's `SNAPTREE_CAP`.
pub const fn cap(step: u32, mask: u8) -> u64 {
    (mask as u64) << (8 * step)
}

/// The power mask of `step` in a capabilities bitmask: byte `step`, reserved bits cleared.
pub const fn step_mask(capabilities: u64, step: u32) -> u8 {
    ((capabilities >> (8 * step)) as u8) & SNAPTREE_POWER_MASK_ANY as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_1_0_vtable_ends_at_write_guest_1_1_appends_adopt_1_2_the_manifest_1_3_estimate() {
        assert_eq!(
            VTABLE_MIN_SIZE,
            std::mem::offset_of!(snaptree_backend_vtable, adopt),
            "ABI 1.1 appends adopt right after 1.0's last slot"
        );
        assert_eq!(
            std::mem::offset_of!(snaptree_backend_vtable, adopt) + std::mem::size_of::<usize>(),
            std::mem::offset_of!(snaptree_backend_vtable, save_manifest),
            "ABI 1.2 appends save_manifest right after 1.1's adopt"
        );
        assert_eq!(
            std::mem::offset_of!(snaptree_backend_vtable, load_manifest)
                + std::mem::size_of::<usize>(),
            std::mem::offset_of!(snaptree_backend_vtable, estimate),
            "ABI 1.3 appends estimate right after 1.2's load_manifest"
        );
        assert_eq!(
            std::mem::offset_of!(snaptree_backend_vtable, estimate) + std::mem::size_of::<usize>(),
            std::mem::size_of::<snaptree_backend_vtable>(),
            "ABI 1.3 ends at estimate"
        );
        assert_eq!(SNAPTREE_BACKEND_ABI_MINOR, 3);
        assert_eq!(
            abi_major(SNAPTREE_BACKEND_ABI_VERSION),
            SNAPTREE_BACKEND_ABI_MAJOR
        );
        assert_eq!(
            abi_minor(SNAPTREE_BACKEND_ABI_VERSION),
            SNAPTREE_BACKEND_ABI_MINOR
        );
    }

    #[test]
    fn capability_bytes_round_trip() {
        let caps = cap(SNAPTREE_STEP_REVERT, 4) | cap(SNAPTREE_STEP_FORGET, 7) | 0xf8 << 16;
        assert_eq!(step_mask(caps, SNAPTREE_STEP_CREATE), 0);
        assert_eq!(step_mask(caps, SNAPTREE_STEP_REVERT), 4);
        assert_eq!(
            step_mask(caps, SNAPTREE_STEP_DISCARD_LEAF),
            0,
            "reserved bits are ignored"
        );
        assert_eq!(step_mask(caps, SNAPTREE_STEP_FORGET), 7);
    }
}
