//! The model checker against the engine with the in-memory delta-chain simulator.
//! `PROPTEST_CASES` raises the number of sequences (CI default: 2,000 of up to 40 steps).

use snaptree_check::{Config, SimBackend, Subject, run};

fn sim_subject() -> Result<Subject, String> {
    Ok(Subject {
        domain_xml: "<domain type='sim'><name>mc</name></domain>".into(),
        backend: Box::new(SimBackend::new()),
    })
}

#[test]
fn engine_with_simulator_matches_the_reference_model() {
    let config = Config::from_env(2000);
    let started = std::time::Instant::now();
    match run(&config, &sim_subject) {
        Ok(report) => eprintln!(
            "model checker: {} sequences, {} steps, {:.1?}",
            report.cases,
            report.steps,
            started.elapsed()
        ),
        Err(failure) => panic!("{failure}"),
    }
}
