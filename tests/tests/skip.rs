//! `snaptree_tests::skip`: a test that cannot run shows one `SKIPPED:` line in a plain
//! `cargo test` (no `--nocapture`) and passes; under CI it fails. Checked on this test
//! binary run again as a child, which runs only [`skip_child`] and skips there.

use std::process::{Command, Output};

use snaptree_tests::skip;

/// Set in the child: [`skip_child`] skips instead of returning at once.
const CHILD_ENV: &str = "SNAPTREE_SKIP_CHILD";

/// Entry point of the child process (a no-op in a normal test run).
#[test]
fn skip_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    skip::cannot_run("the child test", "the tool 'no-such-tool' is not on PATH");
}

/// Runs [`skip_child`] alone in a child test process with `CI` set to `ci` (or unset).
fn run_child(ci: Option<&str>) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("the test knows its own path"));
    cmd.args(["--exact", "skip_child"]).env(CHILD_ENV, "1");
    match ci {
        Some(v) => cmd.env("CI", v),
        None => cmd.env_remove("CI"),
    };
    cmd.output().expect("run the test binary again")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LINE: &str = "SKIPPED: the child test (skip_child) cannot run here: \
                    the tool 'no-such-tool' is not on PATH; scripts/setup installs what the tests need";

#[test]
fn outside_ci_the_skip_line_shows_past_the_harness_capture_and_the_test_passes() {
    for ci in [None, Some(""), Some("0"), Some("false")] {
        let out = run_child(ci);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "expected the skipping child to pass with CI={ci:?}, got {}:\n{stdout}\n{stderr}",
            out.status
        );
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.contains("SKIPPED:"))
                .collect::<Vec<_>>(),
            vec![LINE],
            "expected exactly the one SKIPPED line on the child's stderr with CI={ci:?}"
        );
        assert!(
            stdout.contains("1 passed"),
            "expected the child to run its one test with CI={ci:?}:\n{stdout}"
        );
    }
}

#[test]
fn under_ci_a_skip_fails_the_test() {
    for ci in ["true", "1", "yes"] {
        let out = run_child(Some(ci));
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success(),
            "expected the skipping child to fail with CI={ci}:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("1 failed")
                && stdout.contains("cannot run here")
                && stdout.contains("CI is set, where no test may skip"),
            "expected the child's one test to fail saying why, with CI={ci}:\n{stdout}"
        );
        assert!(
            !stderr.contains("SKIPPED:"),
            "expected no SKIPPED line under CI={ci} (it is a failure, not a skip):\n{stderr}"
        );
    }
}
