//! The conformance kit against the backend written in C, loaded as a `.so` through the
//! plugin host, and the `snaptree-conformance` command a backend author would run.

use snaptree_check::Reach;
use snaptree_check::{Config, Subject, run};
use snaptree_host::Plugin;

#[test]
fn the_c_sim_plugin_passes_the_conformance_kit() {
    let plugin = Plugin::load(snaptree_backend_sim::plugin_path()).expect("the C sim plugin loads");
    let root = tempfile_dir();
    let counter = std::cell::Cell::new(0);
    let factory = || -> Result<Subject, String> {
        counter.set(counter.get() + 1);
        let dir = root.join(format!("case{}", counter.get()));
        let xml = snaptree_backend_sim::domain_xml("conf", &dir);
        let backend = plugin.open_domain(&xml).map_err(|e| e.full_message())?;
        Ok(Subject {
            domain_xml: xml,
            backend: Box::new(backend),
        })
    };
    // CI promises at least 200 sequences on the C plugin (docs/model-checker.md).
    let mut config = Config::from_env_or_ci(300, 200);
    // The plugin's power state is bookkeeping (it records what a revert leaves), so the
    // kit may change it; capabilities are restricted and faults injected by the kit's
    // wrapper (the plugin has no hooks for either).
    config.reach = Reach {
        kit_power: true,
        // The plugin's merge into the base moves the live state onto the base, below
        // retired data the engine's layout (and the model's) still has it on
        // (docs/model-checker.md); after a lost store the import would then name the
        // wrong snapshot current. REDEFINE still runs (replace, clashes, refused adoption).
        lose_metadata: false,
        ..Reach::default()
    };
    match run(&config, &factory) {
        Ok(r) => {
            eprintln!("C sim plugin: {} sequences, {} steps", r.cases, r.steps);
            for label in [
                "transition: faulted",
                "expected: INCOMPLETE",
                "expected: OPERATION_INVALID",
                "transition: reopen",
                "transition: second handle",
            ] {
                if config.cases >= 200 {
                    assert!(
                        r.coverage.contains_key(label),
                        "expected the kit to reach '{label}' on the C plugin"
                    );
                }
            }
        }
        Err(failure) => panic!("{failure}"),
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_conformance_command_runs_against_a_plugin_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snaptree-conformance"))
        .arg(snaptree_backend_sim::PLUGIN_PATH)
        .args(["--cases", "20", "--steps", "15"])
        .env_remove("PROPTEST_CASES")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "expected success: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("conformance passed: 20 sequences"),
        "{stdout}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snaptree-conformance"))
        .arg(snaptree_backend_sim::PLUGIN_PATH)
        .args(["--cases", "10", "--steps", "15", "--tree-only"])
        .env_remove("PROPTEST_CASES")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("conformance passed: 10 sequences"),
        "expected a tree-level pass: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snaptree-conformance"))
        .arg("/nonexistent/libsnaptree_backend_x.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("libsnaptree_backend_x.so"));
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("snaptree-c-sim-conf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
