//! The C-style flag words of the proposal's API and their translation to engine types.
//! The C API and the CLI both decode flags here, so both refuse the same combinations.

use crate::error::{Error, Result};
use crate::model::PowerState;
use crate::plan::DeleteMode;
use crate::tree::Filter;

/// `snapshot_delete` flag: merge into the parent.
pub const DELETE_MERGE: u32 = 1 << 0;
/// `snapshot_delete` flag: merge after discarding the siblings.
pub const DELETE_MERGE_FORCE: u32 = 1 << 1;
/// `snapshot_delete` flag: discard a snapshot without children.
pub const DELETE_DISCARD: u32 = 1 << 2;
/// `snapshot_delete` flag: discard the snapshot and its descendants.
pub const DELETE_DISCARD_FORCE: u32 = 1 << 3;
/// `snapshot_delete` flag: push the data into the dependents.
pub const DELETE_CONSOLIDATE: u32 = 1 << 4;
/// `snapshot_delete` flag: discard the descendants only.
pub const DELETE_CHILDREN_ONLY: u32 = 1 << 5;

/// Listing flag: roots only.
pub const LIST_ROOTS: u32 = 1 << 0;
/// Listing flag: leaves only.
pub const LIST_LEAVES: u32 = 1 << 1;
/// Listing flag: parents before children.
pub const LIST_TOPOLOGICAL: u32 = 1 << 2;

/// Revert flag: leave the domain running.
pub const REVERT_RUNNING: u32 = 1 << 0;
/// Revert flag: leave the domain paused.
pub const REVERT_PAUSED: u32 = 1 << 1;
/// Revert flag: leave the domain shut off.
pub const REVERT_SHUTOFF: u32 = 1 << 2;

/// Revert flag: KEEP_LIVE (SEMANTICS.md §7.4): snapshot the live state first, in the
/// same operation.
pub const REVERT_KEEP_LIVE: u32 = 1 << 3;

/// `prune` flag: plan only, change nothing (`--dry-run`).
pub const PRUNE_DRY_RUN: u32 = 1 << 0;

/// `snapshot_create` flag: REDEFINE (SEMANTICS.md §7.3): import a snapshot's metadata
/// from its whole XML and adopt data the backend already holds, instead of freezing the
/// live state. libvirt's `VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE` has the same value.
pub const CREATE_REDEFINE: u32 = 1 << 0;
/// `snapshot_create` flag, with REDEFINE only: make the redefined snapshot current.
/// libvirt's `VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT` has the same value.
pub const CREATE_CURRENT: u32 = 1 << 1;

/// What a create flag word asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    /// No flag: freeze the live state as a new snapshot.
    Create,
    /// REDEFINE: import metadata and adopt existing data.
    Redefine {
        /// CURRENT: the snapshot becomes current.
        current: bool,
    },
}

/// The create mode a flag word selects; CURRENT without REDEFINE is `INVALID_ARG`.
pub fn create_mode(flags: u32) -> Result<CreateMode> {
    check_known("create", flags, CREATE_REDEFINE | CREATE_CURRENT)?;
    match (flags & CREATE_REDEFINE != 0, flags & CREATE_CURRENT != 0) {
        (false, false) => Ok(CreateMode::Create),
        (false, true) => Err(Error::InvalidArg(
            "create flag CURRENT needs REDEFINE: a new snapshot is always current".into(),
        )),
        (true, current) => Ok(CreateMode::Redefine { current }),
    }
}

const DELETE_FLAGS: [(u32, DeleteMode); 6] = [
    (DELETE_MERGE, DeleteMode::Merge),
    (DELETE_MERGE_FORCE, DeleteMode::MergeForce),
    (DELETE_DISCARD, DeleteMode::Discard),
    (DELETE_DISCARD_FORCE, DeleteMode::DiscardForce),
    (DELETE_CONSOLIDATE, DeleteMode::Consolidate),
    (DELETE_CHILDREN_ONLY, DeleteMode::ChildrenOnly),
];

/// Refuses bits outside `known`, naming them.
pub fn check_known(what: &str, flags: u32, known: u32) -> Result<()> {
    let unknown = flags & !known;
    if unknown != 0 {
        return Err(Error::InvalidArg(format!(
            "unknown {what} flags 0x{unknown:x}"
        )));
    }
    Ok(())
}

/// The delete mode a flag word selects: none is retire; two or more is `INVALID_ARG`.
pub fn delete_mode(flags: u32) -> Result<DeleteMode> {
    check_known(
        "delete",
        flags,
        DELETE_FLAGS.iter().fold(0, |a, (f, _)| a | f),
    )?;
    let set: Vec<&(u32, DeleteMode)> = DELETE_FLAGS
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .collect();
    match set.as_slice() {
        [] => Ok(DeleteMode::Retire),
        [(_, mode)] => Ok(*mode),
        many => Err(Error::InvalidArg(format!(
            "delete flags {} are mutually exclusive",
            many.iter()
                .map(|(_, m)| m.flag_name())
                .collect::<Vec<_>>()
                .join(" and ")
        ))),
    }
}

/// The flag word of a delete mode.
pub fn delete_flags(mode: DeleteMode) -> u32 {
    DELETE_FLAGS
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or(0, |(f, _)| *f)
}

/// The filter a listing flag word selects.
pub fn list_filter(flags: u32) -> Result<Filter> {
    check_known(
        "listing",
        flags,
        LIST_ROOTS | LIST_LEAVES | LIST_TOPOLOGICAL,
    )?;
    match flags {
        0 => Ok(Filter::All),
        LIST_ROOTS => Ok(Filter::Roots),
        LIST_LEAVES => Ok(Filter::Leaves),
        LIST_TOPOLOGICAL => Ok(Filter::Topological),
        _ => Err(Error::InvalidArg(
            "listing flags ROOTS, LEAVES and TOPOLOGICAL are mutually exclusive".into(),
        )),
    }
}

/// What a revert flag word asks for: the power state it forces, if any, and whether it
/// keeps the live state (KEEP_LIVE).
pub fn revert_flags(flags: u32) -> Result<(Option<PowerState>, bool)> {
    check_known(
        "revert",
        flags,
        REVERT_RUNNING | REVERT_PAUSED | REVERT_SHUTOFF | REVERT_KEEP_LIVE,
    )?;
    Ok((
        revert_state(flags & !REVERT_KEEP_LIVE)?,
        flags & REVERT_KEEP_LIVE != 0,
    ))
}

/// The power state a revert flag word forces, if any (KEEP_LIVE is refused here: see
/// [`revert_flags`]).
pub fn revert_state(flags: u32) -> Result<Option<PowerState>> {
    check_known(
        "revert",
        flags,
        REVERT_RUNNING | REVERT_PAUSED | REVERT_SHUTOFF,
    )?;
    match flags {
        0 => Ok(None),
        REVERT_RUNNING => Ok(Some(PowerState::Running)),
        REVERT_PAUSED => Ok(Some(PowerState::Paused)),
        REVERT_SHUTOFF => Ok(Some(PowerState::Shutoff)),
        _ => Err(Error::InvalidArg(
            "revert flags RUNNING, PAUSED and SHUTOFF are mutually exclusive".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_refuses_flag_words() {
        assert_eq!(delete_mode(0).unwrap(), DeleteMode::Retire);
        for (f, m) in DELETE_FLAGS {
            assert_eq!(delete_mode(f).unwrap(), m);
            assert_eq!(delete_flags(m), f);
        }
        let e = delete_mode(DELETE_MERGE | DELETE_DISCARD).unwrap_err();
        assert!(e.to_string().contains("MERGE and DISCARD"), "{e}");
        assert!(
            delete_mode(1 << 20)
                .unwrap_err()
                .to_string()
                .contains("0x100000")
        );
        assert_eq!(create_mode(0).unwrap(), CreateMode::Create);
        assert_eq!(
            create_mode(CREATE_REDEFINE | CREATE_CURRENT).unwrap(),
            CreateMode::Redefine { current: true }
        );
        assert_eq!(
            create_mode(CREATE_REDEFINE).unwrap(),
            CreateMode::Redefine { current: false }
        );
        let e = create_mode(CREATE_CURRENT).unwrap_err();
        assert!(e.to_string().contains("needs REDEFINE"), "{e}");
        assert!(create_mode(1 << 2).is_err());
        assert!(list_filter(LIST_ROOTS | LIST_LEAVES).is_err());
        assert!(revert_state(REVERT_RUNNING | REVERT_PAUSED).is_err());
        assert_eq!(
            revert_state(REVERT_PAUSED).unwrap(),
            Some(PowerState::Paused)
        );
        assert_eq!(
            revert_flags(REVERT_PAUSED | REVERT_KEEP_LIVE).unwrap(),
            (Some(PowerState::Paused), true)
        );
        assert_eq!(revert_flags(0).unwrap(), (None, false));
        assert!(revert_flags(REVERT_RUNNING | REVERT_SHUTOFF | REVERT_KEEP_LIVE).is_err());
        assert!(revert_flags(1 << 9).is_err());
    }
}
