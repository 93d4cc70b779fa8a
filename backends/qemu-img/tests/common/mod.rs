//! Helpers shared by the integration tests: scratch images and a process holding a lock.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use snaptree_qemu_img as qi;

/// Size of every test image.
pub const SIZE: u64 = 4 * MIB;
/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// A temporary directory with helpers to name images in it.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Absolute path of `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// base ← mid ← top with 0xaa everywhere in base, 0xbb at 1–2 MiB in mid and 0xcc at
    /// 2–3 MiB in top.
    pub fn chain(&self) -> (PathBuf, PathBuf, PathBuf) {
        let (base, mid, top) = (
            self.path("base.qcow2"),
            self.path("mid.qcow2"),
            self.path("top.qcow2"),
        );
        qi::create(&base, SIZE).unwrap();
        qi::io_write_pattern(&base, 0xaa, 0, SIZE).unwrap();
        qi::create_overlay(&mid, &base).unwrap();
        qi::io_write_pattern(&mid, 0xbb, MIB, MIB).unwrap();
        qi::create_overlay(&top, &mid).unwrap();
        qi::io_write_pattern(&top, 0xcc, 2 * MIB, MIB).unwrap();
        (base, mid, top)
    }
}

/// The guest view `Scratch::chain` gives at the top, one pattern per MiB.
pub const CHAIN_VIEW: [u8; 4] = [0xaa, 0xbb, 0xcc, 0xaa];

/// Asserts `image` reads `view[i]` in its i-th MiB.
pub fn assert_view(image: &Path, view: &[u8]) {
    for (i, &pattern) in view.iter().enumerate() {
        assert!(
            qi::io_verify_pattern(image, pattern, i as u64 * MIB, MIB).unwrap(),
            "{} MiB {i} should read {pattern:#04x}",
            image.display()
        );
    }
}

/// A `qemu-io` process keeping an image open (and locked) until dropped.
///
/// qemu-io reads commands from its stdin when given no `-c`, so it stays open as long as the
/// pipe does; the answer to a first `length` command proves the image is open, with no sleep.
pub struct LockHolder {
    child: Child,
    stdin: Option<ChildStdin>,
    // Kept open: qemu-io prints a prompt after each command and would die of SIGPIPE.
    stdout: BufReader<ChildStdout>,
}

impl LockHolder {
    /// Opens `image` read-write (or read-only) in a background qemu-io.
    pub fn hold(image: &Path, read_only: bool) -> Self {
        let mut cmd = Command::new("qemu-io");
        if read_only {
            cmd.arg("-r");
        }
        let mut child = cmd
            .args(["-f", "qcow2"])
            .arg(image)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu-io");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Own the child before anything can panic, so that Drop reaps it.
        let mut holder = LockHolder {
            child,
            stdin,
            stdout,
        };
        let pipe = holder.stdin.as_mut().unwrap();
        pipe.write_all(b"length\n").unwrap();
        pipe.flush().unwrap();
        let mut line = String::new();
        holder.stdout.read_line(&mut line).unwrap();
        assert!(
            line.contains("MiB"),
            "qemu-io did not open {}: {line:?}",
            image.display()
        );
        holder
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        // EOF on stdin makes qemu-io quit cleanly; kill it if it does not.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
