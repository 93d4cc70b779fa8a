//! The error type shared by every function of the crate.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result of every fallible function of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a QMP exchange or a QEMU job did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The QMP socket could not be connected to (no QEMU listening there, wrong path).
    #[error("cannot connect to the QMP socket {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The QEMU process is gone: the socket reached end of file or the peer reset it. Kept
    /// apart from [`Error::Io`] because the caller's reaction differs: nothing more can be
    /// asked of this QEMU, and a job that was running has an unknown outcome.
    #[error("the QEMU process died (QMP connection closed) during {during}")]
    ProcessDied {
        /// What the client was doing: the command or job it was waiting for.
        during: String,
    },

    /// Reading or writing the socket failed for another reason.
    #[error("QMP socket I/O failed during {during}")]
    Io {
        /// The command or wait in progress.
        during: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// QEMU did not answer (or the awaited event or job state did not come) in time.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// The command, event or job state awaited.
        waiting_for: String,
        /// How long the client waited.
        after: Duration,
    },

    /// QEMU answered a command with an error.
    #[error("QMP command {command} failed: {desc} ({class})")]
    Command {
        /// The command name, e.g. `blockdev-add`.
        command: String,
        /// QMP's error class, e.g. `GenericError`, `DeviceNotFound`.
        class: String,
        /// QEMU's human-readable description.
        desc: String,
    },

    /// A job concluded with an error (the `error` member of `query-jobs`).
    #[error("QEMU job {id} ({kind}) failed: {desc}")]
    Job {
        /// The job id.
        id: String,
        /// The job type, e.g. `commit`, `snapshot-save`.
        kind: String,
        /// QEMU's description of the failure.
        desc: String,
    },

    /// A job was cancelled because the progress callback asked for it.
    #[error("QEMU job {id} was cancelled")]
    Cancelled {
        /// The job id.
        id: String,
    },

    /// QEMU sent something this client does not understand, or a reply of an unexpected
    /// shape.
    #[error("unexpected QMP message: {message}")]
    Protocol {
        /// What was wrong, with the offending text.
        message: String,
    },
}

impl Error {
    /// True when the QEMU process is gone, so the caller can treat it apart from a failed
    /// command (a journal can then resume the operation against a restarted VM).
    pub fn is_process_died(&self) -> bool {
        matches!(self, Error::ProcessDied { .. })
    }

    /// QMP's error class when QEMU rejected a command.
    pub fn qmp_class(&self) -> Option<&str> {
        match self {
            Error::Command { class, .. } => Some(class),
            _ => None,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol {
            message: message.into(),
        }
    }
}
