//! The C API's error codes and flag bits are the engine's: the Rust constants of this
//! crate, and the `#define`s of the committed header, against `snaptree_engine::ErrorCode`
//! and `snaptree_engine::flags`. (`ffi/src/constants.rs` also checks the Rust constants at
//! compile time.)

use std::collections::BTreeMap;

use snaptree_engine::{ErrorCode, flags};

/// Every `#define NAME VALUE` of include/snaptree.h with a numeric value.
fn header_defines() -> BTreeMap<String, i64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../include/snaptree.h");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("#define ")?.split_whitespace();
            let (name, value) = (parts.next()?, parts.next()?);
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn error_codes_are_the_engines() {
    let rust = [
        snaptree::SNAPTREE_ERR_INVALID_ARG,
        snaptree::SNAPTREE_ERR_XML_ERROR,
        snaptree::SNAPTREE_ERR_NO_DOMAIN,
        snaptree::SNAPTREE_ERR_NO_SNAPSHOT,
        snaptree::SNAPTREE_ERR_SNAPSHOT_EXISTS,
        snaptree::SNAPTREE_ERR_WOULD_DISCARD,
        snaptree::SNAPTREE_ERR_OPERATION_INVALID,
        snaptree::SNAPTREE_ERR_BACKEND,
        snaptree::SNAPTREE_ERR_PLUGIN,
        snaptree::SNAPTREE_ERR_STORAGE,
        snaptree::SNAPTREE_ERR_BUSY,
        snaptree::SNAPTREE_ERR_INTERNAL,
        snaptree::SNAPTREE_ERR_INCOMPLETE,
        snaptree::SNAPTREE_ERR_NO_SPACE,
    ];
    let header = header_defines();
    assert_eq!(
        rust.len(),
        ErrorCode::ALL.len(),
        "a code of SEMANTICS.md §6 has no SNAPTREE_ERR_ constant"
    );
    for (code, value) in ErrorCode::ALL.into_iter().zip(rust) {
        assert_eq!(value, code as i32, "SNAPTREE_ERR_{} in Rust", code.name());
        let name = format!("SNAPTREE_ERR_{}", code.name());
        assert_eq!(
            header.get(&name),
            Some(&(code as i64)),
            "{name} in include/snaptree.h"
        );
    }
    let in_header = header
        .keys()
        .filter(|k| k.starts_with("SNAPTREE_ERR_"))
        .count();
    assert_eq!(
        in_header,
        ErrorCode::ALL.len(),
        "include/snaptree.h defines an error code the engine lacks"
    );
}

#[test]
fn flags_are_the_engines() {
    let header = header_defines();
    let pairs = [
        (
            "SNAPTREE_SNAPSHOT_DELETE_MERGE",
            snaptree::SNAPTREE_SNAPSHOT_DELETE_MERGE,
            flags::DELETE_MERGE,
        ),
        (
            "SNAPTREE_SNAPSHOT_DELETE_MERGE_FORCE",
            snaptree::SNAPTREE_SNAPSHOT_DELETE_MERGE_FORCE,
            flags::DELETE_MERGE_FORCE,
        ),
        (
            "SNAPTREE_SNAPSHOT_DELETE_DISCARD",
            snaptree::SNAPTREE_SNAPSHOT_DELETE_DISCARD,
            flags::DELETE_DISCARD,
        ),
        (
            "SNAPTREE_SNAPSHOT_DELETE_DISCARD_FORCE",
            snaptree::SNAPTREE_SNAPSHOT_DELETE_DISCARD_FORCE,
            flags::DELETE_DISCARD_FORCE,
        ),
        (
            "SNAPTREE_SNAPSHOT_DELETE_CONSOLIDATE",
            snaptree::SNAPTREE_SNAPSHOT_DELETE_CONSOLIDATE,
            flags::DELETE_CONSOLIDATE,
        ),
        (
            "SNAPTREE_SNAPSHOT_DELETE_CHILDREN_ONLY",
            snaptree::SNAPTREE_SNAPSHOT_DELETE_CHILDREN_ONLY,
            flags::DELETE_CHILDREN_ONLY,
        ),
        (
            "SNAPTREE_SNAPSHOT_LIST_ROOTS",
            snaptree::SNAPTREE_SNAPSHOT_LIST_ROOTS,
            flags::LIST_ROOTS,
        ),
        (
            "SNAPTREE_SNAPSHOT_LIST_LEAVES",
            snaptree::SNAPTREE_SNAPSHOT_LIST_LEAVES,
            flags::LIST_LEAVES,
        ),
        (
            "SNAPTREE_SNAPSHOT_LIST_TOPOLOGICAL",
            snaptree::SNAPTREE_SNAPSHOT_LIST_TOPOLOGICAL,
            flags::LIST_TOPOLOGICAL,
        ),
        (
            "SNAPTREE_SNAPSHOT_REVERT_RUNNING",
            snaptree::SNAPTREE_SNAPSHOT_REVERT_RUNNING,
            flags::REVERT_RUNNING,
        ),
        (
            "SNAPTREE_SNAPSHOT_REVERT_PAUSED",
            snaptree::SNAPTREE_SNAPSHOT_REVERT_PAUSED,
            flags::REVERT_PAUSED,
        ),
        (
            "SNAPTREE_SNAPSHOT_REVERT_SHUTOFF",
            snaptree::SNAPTREE_SNAPSHOT_REVERT_SHUTOFF,
            flags::REVERT_SHUTOFF,
        ),
        (
            "SNAPTREE_SNAPSHOT_CREATE_REDEFINE",
            snaptree::SNAPTREE_SNAPSHOT_CREATE_REDEFINE,
            flags::CREATE_REDEFINE,
        ),
        (
            "SNAPTREE_SNAPSHOT_CREATE_CURRENT",
            snaptree::SNAPTREE_SNAPSHOT_CREATE_CURRENT,
            flags::CREATE_CURRENT,
        ),
    ];
    for (name, rust, engine) in pairs {
        assert_eq!(rust, engine, "{name} in Rust");
        assert_eq!(
            header.get(name),
            Some(&i64::from(engine)),
            "{name} in include/snaptree.h"
        );
    }
    // Each delete flag is one mode of the engine's decoder, distinct from the others.
    let delete: Vec<u32> = pairs[..6].iter().map(|p| p.2).collect();
    for (i, f) in delete.iter().enumerate() {
        assert_eq!(f.count_ones(), 1, "{} is one bit", pairs[i].0);
        assert_eq!(flags::delete_flags(flags::delete_mode(*f).unwrap()), *f);
    }
    assert_eq!(
        delete.iter().fold(0, |a, f| a | f).count_ones(),
        6,
        "the delete flags are distinct bits"
    );
}
