//! A test rig: a real `qemu-system-x86_64` with qcow2 disks and a guest whose memory keeps
//! changing, driven over QMP, and killed when the rig is dropped.
//!
//! The machine is `-M pc -m 64` with no guest OS: the firmware ([`firmware`]) counts timer
//! ticks at [`COUNTER_ADDR`], which makes memory state observable ([`Rig::counter`]).
//! Each disk is a qcow2 file opened with `-blockdev` and attached to a `virtio-blk-pci`
//! device (a node without a parent silently loses a snapshot overlay — field notes).
//! QEMU listens on two QMP sockets: one the rig uses ([`Rig::qmp`]) and a spare one
//! ([`Rig::spare_socket`]) for the code under test, since a QMP socket serves one client
//! at a time.
//!
//! No process is left behind: dropping the rig (also while a test panics) kills and reaps
//! QEMU, and when `setpriv` is installed QEMU is started with a parent-death signal, so it
//! also dies if the test process is killed outright. Linux sends that signal when the
//! *thread* that started QEMU ends: keep a rig within the thread that built it, or turn
//! it off with [`RigBuilder::die_with_parent`].

mod builder;
mod error;
mod fds;
pub mod firmware;
mod host;
mod image;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub use builder::RigBuilder;
pub use fds::{open_images, stale_images};
pub use firmware::{COUNTER_ADDR, TICKS_PER_SECOND};
pub use host::{Accel, qemu_available, qemu_binary};
pub use image::{create_qcow2, verify_pattern};

use self::error::RigError as Error;
pub use self::error::{Result, RigError};
use snaptree_qmp::Qmp;

/// A disk of the rig.
#[derive(Debug, Clone)]
pub struct RigDisk {
    /// The device id (`-device virtio-blk-pci,id=ID`).
    pub id: String,
    /// The node name the image was opened as: the active node until a snapshot.
    pub node: String,
    /// The image file.
    pub path: PathBuf,
}

impl RigDisk {
    /// The device's block backend QOM path, as `query-block` reports it in `qdev` and as
    /// HMP `qemu-io -d` wants it.
    pub fn qom_path(&self) -> String {
        format!("/machine/peripheral/{}/virtio-backend", self.id)
    }
}

/// A running QEMU for tests. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Rig {
    child: Child,
    qmp: Qmp,
    dir: PathBuf,
    spare_socket: PathBuf,
    disks: Vec<RigDisk>,
    accel: Accel,
}

impl Rig {
    /// Starts describing a rig whose sockets, firmware and logs go into `dir` (which must
    /// exist; a temporary directory of the test). Socket paths must stay under ~100 bytes.
    pub fn builder(dir: impl Into<PathBuf>) -> RigBuilder {
        RigBuilder::new(dir.into())
    }

    /// The rig's own QMP session.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// A second QMP socket nobody is connected to, for the code under test.
    pub fn spare_socket(&self) -> &Path {
        &self.spare_socket
    }

    /// The disks, in the order they were added.
    pub fn disks(&self) -> &[RigDisk] {
        &self.disks
    }

    /// The accelerator QEMU runs with.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// QEMU's stdout, where HMP `qemu-io` prints its results.
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join("qemu.stdout")
    }

    /// QEMU's stderr.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("qemu.stderr")
    }

    /// The guest's tick counter, read with `pmemsave`; `None` until the firmware ran.
    pub fn counter(&mut self) -> Result<Option<u64>> {
        // Unique per read so that concurrent rigs sharing a directory never collide.
        static READS: AtomicU64 = AtomicU64::new(0);
        let scratch = self.dir.join(format!(
            "pmem-{}-{}.bin",
            self.child.id(),
            READS.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = self.qmp.read_guest_memory(COUNTER_ADDR, 12, &scratch)?;
        Ok(firmware::decode_counter(&bytes))
    }

    /// Waits until the counter reaches `at_least` and returns it.
    pub fn wait_counter(&mut self, at_least: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.counter()?;
            if let Some(v) = value
                && v >= at_least
            {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    waiting_for: format!("the guest counter to reach {at_least} (at {value:?})"),
                    after: timeout,
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills QEMU now (SIGKILL, as a crash would) and reaps it. The QMP session then
    /// reports [`Error::ProcessDied`].
    pub fn kill(&mut self) {
        // An error means the process already exited; reaping it is all that is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.kill();
    }
}
