//! Any input to the snapshot XML parsers either parses or is refused with XML_ERROR or
//! INVALID_ARG; never a panic, hang or other code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snaptree_engine::ErrorCode;
use snaptree_engine::xml::SnapshotXml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for result in [SnapshotXml::parse(text), SnapshotXml::parse_for_create(text)] {
        if let Err(e) = result {
            assert!(matches!(e.code(), ErrorCode::XmlError | ErrorCode::InvalidArg), "unexpected code {:?}: {e}", e.code());
            assert!(!e.to_string().is_empty());
        }
    }
});
