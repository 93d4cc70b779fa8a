//! The VM's run state (`query-status`) and the commands that change it (`stop`, `cont`,
//! `quit`).

use serde_json::Value;

use crate::client::Qmp;
use crate::error::{Error, Result};

/// QEMU's `RunState`, as `query-status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunState {
    /// vCPUs run.
    Running,
    /// Stopped by `stop`, or after a successful `snapshot-load` into a paused VM.
    Paused,
    /// Started with `-S` and never continued.
    Prelaunch,
    /// The guest shut down and QEMU was told to stay (`-no-shutdown`).
    Shutdown,
    /// The guest suspended itself (ACPI S3).
    Suspended,
    /// A snapshot is being loaded, or a `snapshot-load` failed: QEMU leaves the VM stopped
    /// in this state after a failed load, until `cont`.
    RestoreVm,
    /// A snapshot is being saved.
    SaveVm,
    /// Stopped because of a disk I/O error (`werror=stop`).
    IoError,
    /// The guest panicked (pvpanic).
    GuestPanicked,
    /// Any other state QEMU names (`debug`, `inmigrate`, `postmigrate`, `internal-error`,
    /// `watchdog`, `finish-migrate`, `colo`, …), verbatim.
    Other(String),
}

impl RunState {
    /// Parses QEMU's state name.
    pub fn from_qemu(name: &str) -> RunState {
        match name {
            "running" => RunState::Running,
            "paused" => RunState::Paused,
            "prelaunch" => RunState::Prelaunch,
            "shutdown" => RunState::Shutdown,
            "suspended" => RunState::Suspended,
            "restore-vm" => RunState::RestoreVm,
            "save-vm" => RunState::SaveVm,
            "io-error" => RunState::IoError,
            "guest-panicked" => RunState::GuestPanicked,
            other => RunState::Other(other.to_owned()),
        }
    }

    /// The power state a snapshot records (SEMANTICS.md §1). Every state in which the
    /// process lives but vCPUs do not run is `Paused`: a snapshot taken then is resumable
    /// with `cont`. Only a guest that shut down is `Shutoff`.
    pub fn power_state(&self) -> PowerState {
        match self {
            RunState::Running => PowerState::Running,
            RunState::Shutdown => PowerState::Shutoff,
            _ => PowerState::Paused,
        }
    }
}

/// The three power states of snaptree's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    /// The VM runs.
    Running,
    /// The VM exists with its memory, vCPUs stopped.
    Paused,
    /// No VM runs (here: the guest shut down inside a QEMU that stayed).
    Shutoff,
}

/// The reply of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// QEMU's run state.
    pub state: RunState,
    /// QEMU's own `running` flag (vCPUs run).
    pub running: bool,
}

impl Qmp {
    /// `query-status`: the VM's run state.
    pub fn query_status(&mut self) -> Result<Status> {
        let reply = self.execute("query-status", Value::Null)?;
        let state = reply
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::protocol(format!("query-status without status: {reply}")))?;
        Ok(Status {
            state: RunState::from_qemu(state),
            running: reply
                .get("running")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// `stop`: pauses the vCPUs (a `STOP` event follows). Stopping a paused VM is a no-op.
    pub fn stop(&mut self) -> Result<()> {
        self.execute("stop", Value::Null).map(drop)
    }

    /// `cont`: resumes the vCPUs (a `RESUME` event follows). Also the way out of
    /// [`RunState::RestoreVm`] after a failed `snapshot-load`.
    pub fn cont(&mut self) -> Result<()> {
        self.execute("cont", Value::Null).map(drop)
    }

    /// `quit`: QEMU exits after replying. The connection is then closed: every later
    /// command fails with [`Error::ProcessDied`].
    pub fn quit(&mut self) -> Result<()> {
        match self.execute("quit", Value::Null) {
            // QEMU may close the socket before its reply is read; it is quitting either way.
            Ok(_) | Err(Error::ProcessDied { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
