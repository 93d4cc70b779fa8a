//! [`RigError`]: why the test rig could not do what it was asked.

use std::io;
use std::time::Duration;

/// Result of the rig's functions.
pub type Result<T, E = RigError> = std::result::Result<T, E>;

/// Why the rig could not start QEMU, prepare its files or read the guest.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// Starting QEMU or preparing or checking its files failed.
    #[error("test rig: {message}")]
    Rig {
        /// What failed, with QEMU's stderr when it exited early.
        message: String,
        /// The operating system's error, when there is one.
        #[source]
        source: Option<io::Error>,
    },
    /// QEMU (or the guest) did not get there in time.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// What was awaited.
        waiting_for: String,
        /// How long the rig waited.
        after: Duration,
    },
    /// A QMP exchange with the rig's QEMU failed.
    #[error(transparent)]
    Qmp(#[from] snaptree_qmp::Error),
}
