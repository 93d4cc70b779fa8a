//! Real qcow2 data for the CLI tests on the QEMU backend: 64 KiB slots written and read
//! back with `qemu-io`, and the check that the QEMU plugin and tools are there.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The size of one slot.
pub const CHUNK: u64 = 64 * 1024;

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs a tool and expects success.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `pattern` into slot `slot` of `file`.
pub fn write(file: &Path, slot: u64, pattern: u8) {
    let cmd = format!("write -P {pattern:#x} {} {CHUNK}", slot * CHUNK);
    run("qemu-io", &["-f", "qcow2", "-c", &cmd, p(file)]);
}

/// Asserts `file` reads `pattern` in each of `slots` (0..4), zeroes elsewhere.
pub fn assert_reads(file: &Path, slots: &[(u64, u8)], what: &str) {
    for slot in 0..4 {
        let pattern = slots
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(0, |(_, v)| *v);
        let cmd = format!("read -P {pattern:#x} {} {CHUNK}", slot * CHUNK);
        let out = Command::new("qemu-io")
            .args(["-f", "qcow2", "-r", "-U", "-c", &cmd, p(file)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("verification failed"),
            "{what}: {} slot {slot} should read {pattern:#x}: {text}",
            file.display()
        );
    }
}

/// Whether qemu-img, qemu-io and the QEMU plugin beside the `snaptree` binary are there;
/// says so visibly (and fails under CI) when not, naming `what` cannot run.
pub fn plugin_present(what: &str) -> bool {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_snaptree"));
    let plugin = exe.with_file_name("libsnaptree_backend_qemu.so");
    let tools = ["qemu-img", "qemu-io"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if plugin.is_file() && tools {
        return true;
    }
    snaptree_tests::skip::cannot_run(
        what,
        "needs qemu-img, qemu-io and the qemu plugin beside the snaptree binary (cargo build -p snaptree-backend-qemu)",
    );
    false
}
