//! The one way a test that cannot run on this machine (a tool is not installed) says so:
//! one `SKIPPED:` line that the test harness does not swallow, and under CI a failure, so a
//! green run never hides an untested part. What the tests need is `scripts/setup`'s list.

use std::io::Write;

/// True when the `CI` environment variable says this is a CI run: set to anything but
/// empty, `0` or `false` (`.ci/run` sets `CI=true`, as CI services do).
pub fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Reports that `what` cannot be tested here because `why` (naming the missing tool).
///
/// Under CI this panics, failing the calling test. Otherwise it writes one line to the
/// process's standard error itself and returns, and the caller skips. The line goes through
/// `std::io::stderr()`, not `eprintln!`: libtest captures the print macros of a passing
/// test, not writes to the stream, so the line shows in a plain `cargo test`.
#[track_caller]
pub fn cannot_run(what: &str, why: &str) {
    // libtest runs each test on a thread named after it.
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let reason =
        format!("{what}{test} cannot run here: {why}; scripts/setup installs what the tests need");
    if ci() {
        panic!("{reason}. CI is set, where no test may skip");
    }
    // On a line of its own, whatever libtest has half-written to stdout, in one write.
    let line = format!("\nSKIPPED: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
