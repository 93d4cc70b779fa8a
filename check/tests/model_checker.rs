//! The model checker against the engine with the in-memory delta-chain simulator.
//! `PROPTEST_CASES` raises the number of sequences (CI default: 2,000 of up to 40 steps).

use snaptree_check::Reach;
use snaptree_check::{Config, Coverage, Decoders, SimBackend, Subject, run};
use snaptree_engine::{DeleteMode, Error, NullBackend, PowerState, flags};

fn sim_subject() -> Result<Subject, String> {
    Ok(Subject {
        domain_xml: "<domain type='sim'><name>mc</name></domain>".into(),
        backend: Box::new(SimBackend::new()),
    })
}

fn config(default_cases: u32) -> Config {
    let mut c = Config::from_env(default_cases);
    c.reach = Reach {
        kit_power: true,
        ..Reach::default()
    };
    c
}

/// Every arm of the generator and every outcome the model can expect, reached at least once.
const MUST_REACH: &[&str] = &[
    "transition: create",
    "transition: guest write",
    "transition: revert",
    "transition: revert keeping the live state",
    "transition: policy",
    "transition: prune",
    "transition: rename",
    "transition: delete",
    "transition: delete-all",
    "transition: recover",
    "transition: reclaim",
    "transition: power change",
    "transition: reopen",
    "transition: second handle",
    "transition: faulted",
    "create: generated name",
    "create: generated uuid",
    "create: retired uuid",
    "create: taken uuid",
    "create: description",
    "create: invalid name",
    "flags: unknown bit",
    "flags: two or more at once",
    "target: invalid name",
    "target: unknown name",
    "target: uuid",
    "target: uuid of a retired snapshot",
    "target: unknown uuid",
    "rename: invalid new name",
    "expected: success",
    "expected: INVALID_ARG",
    "expected: XML_ERROR",
    "expected: NO_SNAPSHOT",
    "expected: SNAPSHOT_EXISTS",
    "expected: WOULD_DISCARD",
    "expected: OPERATION_INVALID",
    "expected: BACKEND",
    "expected: INCOMPLETE",
    "roll-forward: by reopen",
    "roll-forward: by second handle",
    "roll-forward: by recover",
    "roll-forward: by create",
    "roll-forward: by delete",
    "roll-forward: failed again",
    "run: restricted capabilities",
    "run: SQLite store",
    // REDEFINE (SEMANTICS.md §7.3) on a backend with data.
    "transition: redefine",
    "transition: lose metadata",
    "transition: second handle redefine",
    "transition: faulted redefine",
    "redefine: existing snapshot",
    "redefine: new snapshot",
    "redefine: data no metadata knows",
    "redefine: root",
    "redefine: parent by uuid",
    "redefine: parent by name",
    "redefine: CURRENT",
    "redefine: creationdate",
    "redefine: replaced description, date, state",
    "redefine: adopted",
    "redefine: adopted, current moved",
    "redefine: clash",
    "redefine: missing parent",
    "redefine: adoption refused (no such data on that parent)",
];

/// What the metadata-only run must reach: REDEFINE adopting anything, CURRENT on any
/// snapshot.
const MUST_REACH_NULL: &[&str] = &[
    "transition: redefine",
    "transition: lose metadata",
    "redefine: existing snapshot",
    "redefine: new snapshot",
    "redefine: data no metadata knows",
    "redefine: parent by uuid",
    "redefine: parent by name",
    "redefine: CURRENT",
    "redefine: replaced description, date, state",
    "redefine: adopted",
    "redefine: adopted, current moved",
    "redefine: clash",
    "redefine: missing parent",
    "expected: INVALID_ARG",
    "expected: XML_ERROR",
];

fn print_coverage(c: &Coverage) {
    eprintln!("coverage:");
    for (label, n) in c {
        eprintln!("  {n:>8}  {label}");
    }
}

#[test]
fn engine_with_simulator_matches_the_reference_model() {
    let config = config(2000);
    let started = std::time::Instant::now();
    match run(&config, &sim_subject) {
        Ok(report) => {
            eprintln!(
                "model checker: {} sequences, {} steps, {:.1?}",
                report.cases,
                report.steps,
                started.elapsed()
            );
            print_coverage(&report.coverage);
            if config.cases >= 2000 {
                let missed: Vec<&&str> = MUST_REACH
                    .iter()
                    .filter(|l| !report.coverage.contains_key(**l))
                    .collect();
                assert!(
                    missed.is_empty(),
                    "expected every generator arm and outcome reached, never reached: {missed:?}"
                );
            }
        }
        Err(failure) => panic!("{failure}"),
    }
}

/// The metadata-only backend (null) adopts anything (SEMANTICS.md §7.3), so every
/// REDEFINE of a new snapshot with an existing parent succeeds and CURRENT may name any
/// snapshot; tree level only (null has no content).
#[test]
fn engine_with_the_null_backend_matches_the_reference_model() {
    let mut config = config(500);
    config.tree_only = true;
    config.reach.metadata_only = true;
    // A metadata-only backend runs no journal: an injected fault has nothing to leave
    // half-done, so the kit's fault model does not apply.
    config.reach.faults = false;
    let null = || {
        Ok(Subject {
            domain_xml: "<domain type='null'><name>mc</name></domain>".into(),
            backend: Box::new(NullBackend::new()),
        })
    };
    match run(&config, &null) {
        Ok(report) => {
            eprintln!(
                "model checker (null): {} sequences, {} steps",
                report.cases, report.steps
            );
            print_coverage(&report.coverage);
            if config.cases >= 500 {
                let missed: Vec<&&str> = MUST_REACH_NULL
                    .iter()
                    .filter(|l| !report.coverage.contains_key(**l))
                    .collect();
                assert!(
                    missed.is_empty(),
                    "expected every REDEFINE arm reached on the null backend, never reached: {missed:?}"
                );
            }
        }
        Err(failure) => panic!("{failure}"),
    }
}

fn swapped_merge(word: u32) -> Result<DeleteMode, Error> {
    match flags::delete_mode(word)? {
        DeleteMode::Merge => Ok(DeleteMode::MergeForce),
        DeleteMode::MergeForce => Ok(DeleteMode::Merge),
        m => Ok(m),
    }
}

fn first_of_two(word: u32) -> Result<DeleteMode, Error> {
    // Accepts two flags at once by taking the lowest.
    let low = word & word.wrapping_neg();
    flags::delete_mode(if word & 63 == word { low } else { word })
}

fn revert_running_is_paused(word: u32) -> Result<Option<PowerState>, Error> {
    Ok(match flags::revert_state(word)? {
        Some(PowerState::Running) => Some(PowerState::Paused),
        s => s,
    })
}

/// The model decodes flags on its own: an engine decoder that swaps MERGE and
/// MERGE_FORCE, accepts two flags at once, or maps RUNNING to PAUSED is caught.
#[test]
fn a_wrong_flag_decoding_in_the_system_is_caught() {
    let cases: [(&str, Decoders); 3] = [
        (
            "MERGE and MERGE_FORCE swapped",
            Decoders {
                delete: swapped_merge,
                ..Decoders::default()
            },
        ),
        (
            "two delete flags accepted",
            Decoders {
                delete: first_of_two,
                ..Decoders::default()
            },
        ),
        (
            "RUNNING decoded as PAUSED",
            Decoders {
                revert: revert_running_is_paused,
                ..Decoders::default()
            },
        ),
    ];
    for (what, decoders) in cases {
        // A run stops at its first failure, so a generous bound costs nothing when the bug is
        // caught early; 300 sequences once missed the MERGE/MERGE_FORCE swap (the sequences
        // are random, and the swap shows only where a merge has siblings).
        let mut c = config(5000);
        c.cases = 5000;
        c.max_shrink_iters = 200;
        c.decoders = decoders;
        match run(&c, &sim_subject) {
            Ok(r) => panic!(
                "expected the checker to catch {what}, {} sequences passed",
                r.cases
            ),
            Err(failure) => eprintln!("{what}: caught\n{failure}"),
        }
    }
}
