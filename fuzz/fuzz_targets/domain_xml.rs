//! Any input to the domain XML parser either parses or is refused with XML_ERROR.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snaptree_engine::ErrorCode;
use snaptree_engine::xml::DomainXml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match DomainXml::parse(text) {
        Ok(d) => {
            assert!(snaptree_engine::name::validate_name("domain", &d.name).is_ok());
        }
        Err(e) => assert_eq!(e.code(), ErrorCode::XmlError, "{e}"),
    }
});
