//! Building QEMU's command line for a rig and starting it.

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::error::{Result, RigError as Error};
use super::host::{Accel, find_in_path, qemu_binary};
use super::{Rig, RigDisk, firmware};
use snaptree_qmp::Qmp;

/// Longest socket path a `sockaddr_un` takes, minus the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Describes a [`Rig`] before starting it.
#[derive(Debug)]
pub struct RigBuilder {
    dir: PathBuf,
    disks: Vec<RigDisk>,
    accel: Accel,
    die_with_parent: bool,
    start_timeout: Duration,
    node_options: serde_json::Map<String, Value>,
}

impl RigBuilder {
    pub(super) fn new(dir: PathBuf) -> Self {
        RigBuilder {
            dir,
            disks: Vec::new(),
            accel: Accel::detect(),
            die_with_parent: true,
            // Generous: the whole start takes 50–100 ms, but CI machines are shared.
            start_timeout: Duration::from_secs(20),
            node_options: serde_json::Map::new(),
        }
    }

    /// Adds `options` (a JSON object, e.g. `{"detect-zeroes": "unmap", "discard": "unmap"}`)
    /// to every disk's qcow2 `-blockdev`, as a VM manager's own settings would be.
    pub fn node_options(mut self, options: Value) -> Self {
        if let Value::Object(map) = options {
            self.node_options.extend(map);
        }
        self
    }

    /// Adds a virtio disk with device id `id` on the existing qcow2 image `path`; its node
    /// is named `<id>-img`.
    pub fn disk(mut self, id: &str, path: impl Into<PathBuf>) -> Self {
        self.disks.push(RigDisk {
            id: id.to_owned(),
            node: format!("{id}-img"),
            path: path.into(),
        });
        self
    }

    /// Overrides the accelerator ([`Accel::detect`] by default).
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// Whether QEMU gets a parent-death signal (default true, when `setpriv` exists).
    pub fn die_with_parent(mut self, on: bool) -> Self {
        self.die_with_parent = on;
        self
    }

    /// Starts QEMU and connects to its QMP socket; fails with QEMU's stderr if it exits
    /// before the socket answers.
    pub fn start(self) -> Result<Rig> {
        let socket = self.dir.join("rig.qmp");
        let spare_socket = self.dir.join("spare.qmp");
        for s in [&socket, &spare_socket] {
            if s.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(rig_error(
                    format!("socket path too long: {}", s.display()),
                    None,
                ));
            }
            // A stale socket from an earlier run would make the first connect hit a dead
            // listener; QEMU recreates it.
            let _ = fs::remove_file(s);
        }
        let bios = self.dir.join("rig-firmware.bin");
        fs::write(&bios, firmware::image())
            .map_err(|e| rig_error(format!("cannot write {}", bios.display()), Some(e)))?;
        let mut command = self.command(&bios, &socket, &spare_socket);
        let stderr_path = self.dir.join("qemu.stderr");
        command
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir.join("qemu.stdout"))?)
            .stderr(log_file(&stderr_path)?);
        let child = command
            .spawn()
            .map_err(|e| rig_error(format!("cannot start {:?}", qemu_binary()), Some(e)))?;
        // From here on the child must die on every error path, until the Rig owns it.
        let mut guard = ChildGuard(Some(child));
        let qmp = wait_for_qmp(&mut guard, &socket, &stderr_path, self.start_timeout)?;
        let child = guard.0.take().expect("the guard still holds the child");
        Ok(Rig {
            child,
            qmp,
            dir: self.dir,
            spare_socket,
            disks: self.disks,
            accel: self.accel,
        })
    }

    fn command(&self, bios: &Path, socket: &Path, spare: &Path) -> Command {
        let qemu = qemu_binary();
        let setpriv = find_in_path(&PathBuf::from("setpriv"));
        let mut command = match setpriv {
            Some(setpriv) if self.die_with_parent => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&qemu);
                c
            }
            _ => Command::new(&qemu),
        };
        command
            .args(["-nodefaults", "-no-user-config", "-M", "pc", "-m", "64"])
            .args(["-accel", self.accel.as_arg(), "-display", "none"])
            .arg("-bios")
            .arg(bios);
        for s in [socket, spare] {
            command
                .arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", s.display()));
        }
        for disk in &self.disks {
            let mut node = json!({
                "driver": "qcow2",
                "node-name": disk.node,
                "file": {
                    "driver": "file",
                    "filename": disk.path.to_string_lossy(),
                    "node-name": format!("{}-file", disk.node),
                },
            });
            for (k, v) in &self.node_options {
                node[k] = v.clone();
            }
            command.arg("-blockdev").arg(node.to_string());
            command
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive={},id={}", disk.node, disk.id));
        }
        command
    }
}

/// Kills the child if dropped while still holding it.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_qmp(
    guard: &mut ChildGuard,
    socket: &Path,
    stderr_path: &Path,
    timeout: Duration,
) -> Result<Qmp> {
    let deadline = Instant::now() + timeout;
    let child = guard.0.as_mut().expect("the guard holds the child");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = fs::read_to_string(stderr_path).unwrap_or_default();
            return Err(rig_error(
                format!(
                    "QEMU exited ({status}) before QMP answered: {}",
                    stderr.trim()
                ),
                None,
            ));
        }
        // QEMU creates the socket and listens before it runs the guest; until then
        // connect fails with "not found" or "refused".
        if let Ok(stream) = UnixStream::connect(socket) {
            return Ok(Qmp::handshake(stream, Qmp::DEFAULT_TIMEOUT)?);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                waiting_for: format!("QEMU's QMP socket {}", socket.display()),
                after: timeout,
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn log_file(path: &Path) -> Result<File> {
    File::create(path).map_err(|e| rig_error(format!("cannot create {}", path.display()), Some(e)))
}

fn rig_error(message: String, source: Option<std::io::Error>) -> Error {
    Error::Rig { message, source }
}
