//! Any input to the manifest reader (the file a backend keeps beside the data, read by
//! `snaptree adopt`) either reads or is refused with INVALID_ARG or XML_ERROR; never a
//! panic, hang or other code. What reads holds as many documents as it announces, and each
//! document is one the snapshot XML reader takes or refuses the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snaptree_engine::ErrorCode;
use snaptree_engine::xml::SnapshotXml;
use snaptree_engine::xml::manifest;

fn refused_cleanly(e: &snaptree_engine::Error) {
    assert!(
        matches!(e.code(), ErrorCode::XmlError | ErrorCode::InvalidArg),
        "unexpected code {:?}: {e}",
        e.code()
    );
    assert!(!e.to_string().is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match manifest::parse(text, "from the fuzzer") {
        Ok(m) => {
            for doc in &m.documents {
                if let Err(e) = SnapshotXml::parse(doc) {
                    refused_cleanly(&e);
                }
            }
        }
        Err(e) => refused_cleanly(&e),
    }
});
