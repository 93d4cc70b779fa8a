//! The error type shared by every function of the crate.

use std::io;
use std::path::PathBuf;

/// Result of every fallible function of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a `qemu-img` / `qemu-io` operation did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program could not be started at all (not installed, not executable).
    #[error("could not run {command}")]
    Spawn {
        /// The binary that was run (`qemu-img` or `qemu-io`).
        program: String,
        /// The subcommand and image path, e.g. `qemu-img commit /vm/top.qcow2`.
        command: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The program ran and reported a failure.
    #[error("{command} failed: {message}")]
    Failed {
        /// The subcommand and image path, e.g. `qemu-img commit /vm/top.qcow2`.
        command: String,
        /// qemu's own message (its stderr, trimmed; its stdout when stderr was empty).
        message: String,
    },

    /// The file system of a path cannot be examined (`stat`, `statvfs`).
    #[error("cannot read the free space of the file system of {}", path.display())]
    Space {
        /// The path asked about.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// Another process holds a lock on an image of the chain (usually a running VM).
    #[error("{} is locked by another process", image.display())]
    Locked {
        /// The locked file, as qemu names it; may be a backing file of the image operated on.
        image: PathBuf,
        /// qemu's own message, trimmed.
        message: String,
    },

    /// The program succeeded but its output was not what this crate expects.
    #[error("could not parse the output of {command}")]
    Parse {
        /// The subcommand and image path.
        command: String,
        /// The JSON decoding error.
        #[source]
        source: serde_json::Error,
    },

    /// Reading or creating a scratch file failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// Refused to overwrite an existing file.
    #[error("{} already exists", image.display())]
    AlreadyExists {
        /// The path that already exists.
        image: PathBuf,
    },

    /// An internal snapshot tag qemu would misinterpret.
    #[error("snapshot tag {tag:?} of {} is unusable: {reason}", image.display())]
    InvalidTag {
        /// The image the tag was meant for.
        image: PathBuf,
        /// The tag as given.
        tag: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A path that must be embedded in a JSON image specification is not UTF-8.
    #[error("{} is not valid UTF-8", image.display())]
    NonUtf8Path {
        /// The path concerned.
        image: PathBuf,
    },
}
