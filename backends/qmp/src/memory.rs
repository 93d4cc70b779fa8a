//! Looking inside the VM from the monitor: guest memory (`pmemsave`), HMP commands, and
//! `qemu-io` against a device's block backend (writing disk data with no guest OS).

use std::fs;
use std::path::Path;

use serde_json::json;

use crate::client::Qmp;
use crate::error::{Error, Result};

impl Qmp {
    /// `pmemsave`: QEMU writes `size` bytes of guest physical memory from `addr` into the
    /// file `path` (created by the QEMU process, so it must be able to write there).
    pub fn pmemsave(&mut self, addr: u64, size: u64, path: &Path) -> Result<()> {
        self.execute(
            "pmemsave",
            json!({ "val": addr, "size": size, "filename": path.to_string_lossy() }),
        )
        .map(drop)
    }

    /// Reads guest physical memory through [`Qmp::pmemsave`] into the scratch file
    /// `scratch`, which is removed afterwards. Works while the VM runs.
    pub fn read_guest_memory(&mut self, addr: u64, size: u64, scratch: &Path) -> Result<Vec<u8>> {
        self.pmemsave(addr, size, scratch)?;
        let bytes = fs::read(scratch).map_err(|source| Error::Io {
            during: format!("reading the pmemsave file {}", scratch.display()),
            source,
        });
        // Best effort: a leftover scratch file is harmless and the read already succeeded.
        let _ = fs::remove_file(scratch);
        let bytes = bytes?;
        if bytes.len() as u64 != size {
            return Err(Error::protocol(format!(
                "pmemsave wrote {} bytes, {size} asked",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// `human-monitor-command`: runs an HMP command line and returns its text output.
    pub fn human_monitor_command(&mut self, command_line: &str) -> Result<String> {
        let reply = self.execute(
            "human-monitor-command",
            json!({ "command-line": command_line }),
        )?;
        reply
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::protocol(format!("HMP reply is not text: {reply}")))
    }

    /// HMP `qemu-io -d QOM_PATH "COMMAND"`: runs one qemu-io command (`write -P 0xaa 0 1M`,
    /// `flush`, …) against a device's block backend, as guest I/O would. `qom_path` is the
    /// `qdev` of `query-block`, e.g. `/machine/peripheral/vd0/virtio-backend`: addressing
    /// the device's backend rather than its node avoids the permission conflict with the
    /// device (field notes).
    ///
    /// qemu-io prints its results on QEMU's stdout, not in the reply; a non-empty reply is
    /// an error message (an unknown device, a malformed command) and becomes
    /// [`Error::Command`]. Read data back from outside (`qemu-io -U -r` after a `flush`).
    pub fn qemu_io(&mut self, qom_path: &str, command: &str) -> Result<()> {
        if command.contains('"') {
            return Err(Error::protocol(format!(
                "a qemu-io command cannot contain a double quote: {command}"
            )));
        }
        let reply = self.human_monitor_command(&format!("qemu-io -d {qom_path} \"{command}\""))?;
        if reply.trim().is_empty() {
            Ok(())
        } else {
            Err(Error::Command {
                command: format!("qemu-io {command}"),
                class: "HMP".to_owned(),
                desc: reply.trim().to_owned(),
            })
        }
    }
}
