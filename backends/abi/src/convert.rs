//! The engine's values as the ABI numbers them, and back: power states, capability
//! bitmasks and uuids. Written by hand beside the generated bindings; the plugin host
//! (reading what a plugin says) and the SDK (writing what a Rust plugin says) both convert
//! through here, so the two sides of the boundary cannot drift apart.

use std::ffi::c_int;

use snaptree_engine::{Capabilities, PowerMask, PowerState, StepKind, Uuid};

use crate::bindings::{
    SNAPTREE_POWER_PAUSED, SNAPTREE_POWER_RUNNING, SNAPTREE_POWER_SHUTOFF, snaptree_uuid,
};
use crate::{cap, step_mask};

/// A power state as the ABI numbers it (`SNAPTREE_POWER_*`).
pub fn power_to_abi(state: PowerState) -> c_int {
    (match state {
        PowerState::Running => SNAPTREE_POWER_RUNNING,
        PowerState::Paused => SNAPTREE_POWER_PAUSED,
        PowerState::Shutoff => SNAPTREE_POWER_SHUTOFF,
    }) as c_int
}

/// The power state an ABI number stands for; `None` for a number the ABI does not define,
/// which each side refuses with its own error.
pub fn power_from_abi(state: c_int) -> Option<PowerState> {
    PowerState::ALL
        .into_iter()
        .find(|s| power_to_abi(*s) == state)
}

/// The ABI number of a step (`SNAPTREE_STEP_*`): the byte of the capability bitmask that
/// holds its power mask.
pub fn step_to_abi(kind: StepKind) -> u32 {
    kind as u32
}

/// The step of an ABI step number, if it is one.
pub fn step_from_abi(step: c_int) -> Option<StepKind> {
    StepKind::ALL.into_iter().find(|k| *k as c_int == step)
}

/// Capabilities as the ABI's bitmask: one byte of `SNAPTREE_POWER_MASK_*` bits per step.
pub fn capabilities_to_abi(caps: Capabilities) -> u64 {
    StepKind::ALL.into_iter().fold(0, |bits, kind| {
        bits | cap(step_to_abi(kind), caps.power_states(kind).0)
    })
}

/// The capabilities a bitmask declares; reserved bits are ignored.
pub fn capabilities_from_abi(bits: u64) -> Capabilities {
    StepKind::ALL
        .into_iter()
        .fold(Capabilities::NONE, |caps, kind| {
            caps.with(kind, PowerMask(step_mask(bits, step_to_abi(kind))))
        })
}

/// A uuid as the ABI passes it.
pub fn uuid_to_abi(uuid: &Uuid) -> snaptree_uuid {
    snaptree_uuid {
        bytes: *uuid.as_bytes(),
    }
}

/// The uuid the ABI passed.
pub fn uuid_from_abi(uuid: &snaptree_uuid) -> Uuid {
    Uuid::from_bytes(uuid.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::*;

    #[test]
    fn step_kinds_are_numbered_as_the_abi_says() {
        let abi_order = [
            SNAPTREE_STEP_CREATE,
            SNAPTREE_STEP_REVERT,
            SNAPTREE_STEP_DISCARD_LEAF,
            SNAPTREE_STEP_MERGE_INTO_PARENT,
            SNAPTREE_STEP_CONSOLIDATE,
            SNAPTREE_STEP_DETACH_LIVE,
            SNAPTREE_STEP_FORGET,
        ];
        assert_eq!(StepKind::ALL.len(), SNAPTREE_STEP_COUNT as usize);
        for (kind, n) in StepKind::ALL.into_iter().zip(abi_order) {
            assert_eq!(
                step_to_abi(kind),
                n,
                "step {} has ABI number {n}",
                kind.name()
            );
        }
    }

    #[test]
    fn power_states_and_masks_match_the_abi() {
        let numbers = [
            (PowerState::Running, SNAPTREE_POWER_RUNNING),
            (PowerState::Paused, SNAPTREE_POWER_PAUSED),
            (PowerState::Shutoff, SNAPTREE_POWER_SHUTOFF),
        ];
        for (state, n) in numbers {
            assert_eq!(power_to_abi(state), n as c_int, "{state:?}");
            assert_eq!(power_from_abi(n as c_int), Some(state), "{n}");
        }
        assert_eq!(PowerState::ALL.len(), numbers.len());
        assert_eq!(
            PowerState::Running.bit().0 as u32,
            SNAPTREE_POWER_MASK_RUNNING
        );
        assert_eq!(
            PowerState::Paused.bit().0 as u32,
            SNAPTREE_POWER_MASK_PAUSED
        );
        assert_eq!(
            PowerState::Shutoff.bit().0 as u32,
            SNAPTREE_POWER_MASK_SHUTOFF
        );
        assert_eq!(
            snaptree_engine::ErrorCode::Backend as u32,
            SNAPTREE_BACKEND_ERR_BACKEND
        );
        assert_eq!(
            snaptree_engine::ErrorCode::InvalidArg as u32,
            SNAPTREE_BACKEND_ERR_INVALID_ARG
        );
        assert_eq!(
            snaptree_engine::ErrorCode::OperationInvalid as u32,
            SNAPTREE_BACKEND_ERR_OPERATION_INVALID
        );
    }

    #[test]
    fn unknown_power_numbers_are_refused() {
        for n in [0, -1, 4, c_int::MAX, c_int::MIN] {
            assert_eq!(power_from_abi(n), None, "{n} is not a power state");
        }
    }

    #[test]
    fn capabilities_round_trip_through_the_bitmask() {
        let caps = Capabilities::ALL
            .with(StepKind::Revert, PowerState::Shutoff.bit())
            .with(StepKind::Consolidate, PowerMask::NONE)
            .with(
                StepKind::Forget,
                PowerMask(PowerState::Running.bit().0 | PowerState::Paused.bit().0),
            );
        let bits = capabilities_to_abi(caps);
        assert_eq!(
            bits,
            cap(SNAPTREE_STEP_CREATE, 7)
                | cap(SNAPTREE_STEP_REVERT, SNAPTREE_POWER_MASK_SHUTOFF as u8)
                | cap(SNAPTREE_STEP_DISCARD_LEAF, 7)
                | cap(SNAPTREE_STEP_MERGE_INTO_PARENT, 7)
                | cap(SNAPTREE_STEP_DETACH_LIVE, 7)
                | cap(
                    SNAPTREE_STEP_FORGET,
                    (SNAPTREE_POWER_MASK_RUNNING | SNAPTREE_POWER_MASK_PAUSED) as u8
                )
        );
        assert_eq!(capabilities_from_abi(bits), caps);
    }

    #[test]
    fn reserved_capability_bits_are_ignored() {
        // The high five bits of each step's byte, and the bytes past the last step.
        let reserved = 0xf8f8_f8f8_f8f8_f8f8 | (0xff << (8 * SNAPTREE_STEP_COUNT));
        assert_eq!(capabilities_from_abi(reserved), Capabilities::NONE);
        let revert_paused = cap(SNAPTREE_STEP_REVERT, SNAPTREE_POWER_MASK_PAUSED as u8);
        assert_eq!(
            capabilities_from_abi(reserved | revert_paused),
            Capabilities::NONE.with(StepKind::Revert, PowerState::Paused.bit())
        );
    }

    #[test]
    fn uuids_cross_unchanged() {
        let uuid = Uuid::from_bytes(*b"0123456789abcdef");
        assert_eq!(uuid_to_abi(&uuid).bytes, *b"0123456789abcdef");
        assert_eq!(uuid_from_abi(&uuid_to_abi(&uuid)), uuid);
    }
}
