//! [`LockHolder`]: another process holding a qcow2 image's lock, as a running VM would: what
//! the lock tests of the QEMU crates (qemu-img wrapper, backend) start.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Opens `image` read-write in a background qemu-io.
    pub fn hold(image: &Path) -> Self {
        LockHolder::open(image, false)
    }

    /// Opens `image` read-only in a background qemu-io (a shared lock, as a backing file
    /// holder takes).
    pub fn hold_read_only(image: &Path) -> Self {
        LockHolder::open(image, true)
    }

    /// Opens `image` read-only sharing every permission (`qemu-io -r -U`, as a
    /// `qemu-img info -U` takes): it blocks no writer.
    pub fn hold_force_share(image: &Path) -> Self {
        LockHolder::spawn(image, &["-r", "-U"])
    }

    fn open(image: &Path, read_only: bool) -> Self {
        LockHolder::spawn(image, if read_only { &["-r"] } else { &[] })
    }

    fn spawn(image: &Path, options: &[&str]) -> Self {
        let mut cmd = Command::new("qemu-io");
        cmd.args(options);
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
