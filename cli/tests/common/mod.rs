//! Running the `snaptree` binary of this build on a state directory, shared by the CLI tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `snaptree --state-dir STATE ARGS…`, ignoring any plugin path of the caller's
/// environment.
pub fn run(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snaptree"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("SNAPTREE_BACKEND_PATH")
        .output()
        .expect("snaptree runs")
}

/// Runs and expects success; returns stdout.
pub fn ok(state: &Path, args: &[&str]) -> String {
    let out = run(state, args);
    assert!(
        out.status.success(),
        "expected `snaptree {}` to succeed, got {:?}\nstderr: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
