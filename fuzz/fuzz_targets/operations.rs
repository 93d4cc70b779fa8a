//! Operation sequences decoded from the input drive the engine over the delta-chain
//! simulator next to the reference model; every invariant of SEMANTICS.md §3 is checked
//! after every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snaptree_check::{SimBackend, Subject, run_sequence, transitions_from_bytes};

fuzz_target!(|data: &[u8]| {
    let transitions = transitions_from_bytes(&data[..data.len().min(3 * 64)]);
    let subject = Subject {
        domain_xml: "<domain type='sim'><name>fuzz</name></domain>".into(),
        backend: Box::new(SimBackend::new()),
    };
    if let Err(failure) = run_sequence(subject, &transitions, None) {
        panic!("invariant broken: {failure}\nsequence: {transitions:#?}");
    }
});
