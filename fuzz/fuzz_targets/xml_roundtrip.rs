//! What snaptree formats must parse back to the same value, and formatting is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snaptree_engine::xml::SnapshotXml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(value) = SnapshotXml::parse(text) else { return };
    let formatted = value.format();
    let back = SnapshotXml::parse(&formatted).unwrap_or_else(|e| panic!("own output refused: {e}\n{formatted}"));
    assert_eq!(back, value, "round trip changed the value:\n{formatted}");
    assert_eq!(back.format(), formatted, "formatting is not stable");
});
