//! The one error type of snaptree and its stable numeric codes (SEMANTICS.md §6).

use std::path::PathBuf;

/// Stable error codes. The numbers are part of the C API and never change or get reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum ErrorCode {
    /// An argument is invalid: a bad name, unknown flag bits, two exclusive flags.
    InvalidArg = 1,
    /// An XML document is malformed or refused.
    XmlError = 2,
    /// No domain of that name or uuid.
    NoDomain = 3,
    /// No snapshot of that name or uuid.
    NoSnapshot = 4,
    /// A snapshot of that name or uuid already exists.
    SnapshotExists = 5,
    /// The operation would discard snapshots that only a FORCE variant may remove.
    WouldDiscard = 6,
    /// The backend cannot do this, or not in the current power state.
    OperationInvalid = 7,
    /// The backend failed; the message is the backend's own.
    Backend = 8,
    /// A backend plugin cannot be loaded.
    Plugin = 9,
    /// The metadata store failed.
    Storage = 10,
    /// Another process or thread holds the domain.
    Busy = 11,
    /// A bug in snaptree.
    Internal = 12,
    /// An operation stopped part-way; it stays journaled and the next call on the domain
    /// (or an explicit recover) finishes it. Until then reads show the state before it.
    Incomplete = 13,
    /// A plan does not fit: a file system it writes on has less free space than the
    /// backend estimates it needs (SEMANTICS.md §7.7). Nothing ran.
    NoSpace = 14,
}

impl ErrorCode {
    /// The upper-case name used in documentation and the C API (`SNAPTREE_ERR_<NAME>`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArg => "INVALID_ARG",
            ErrorCode::XmlError => "XML_ERROR",
            ErrorCode::NoDomain => "NO_DOMAIN",
            ErrorCode::NoSnapshot => "NO_SNAPSHOT",
            ErrorCode::SnapshotExists => "SNAPSHOT_EXISTS",
            ErrorCode::WouldDiscard => "WOULD_DISCARD",
            ErrorCode::OperationInvalid => "OPERATION_INVALID",
            ErrorCode::Backend => "BACKEND",
            ErrorCode::Plugin => "PLUGIN",
            ErrorCode::Storage => "STORAGE",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Incomplete => "INCOMPLETE",
            ErrorCode::NoSpace => "NO_SPACE",
        }
    }

    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidArg,
        ErrorCode::XmlError,
        ErrorCode::NoDomain,
        ErrorCode::NoSnapshot,
        ErrorCode::SnapshotExists,
        ErrorCode::WouldDiscard,
        ErrorCode::OperationInvalid,
        ErrorCode::Backend,
        ErrorCode::Plugin,
        ErrorCode::Storage,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::Incomplete,
        ErrorCode::NoSpace,
    ];

    /// The code with this number, if any.
    pub fn from_i32(n: i32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| *c as i32 == n)
    }
}

/// Every error snaptree reports. Each variant maps to exactly one [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid argument; the text says which and why.
    #[error("{0}")]
    InvalidArg(String),
    /// A malformed or refused XML document.
    #[error("{message} (line {line}, column {column})")]
    Xml {
        /// What is wrong.
        message: String,
        /// 1-based line of the problem.
        line: u64,
        /// 1-based column of the problem.
        column: u64,
    },
    /// No such domain.
    #[error("no domain named '{0}'")]
    NoDomain(String),
    /// No such snapshot; the text names it and its domain.
    #[error("{0}")]
    NoSnapshot(String),
    /// A snapshot with that name or uuid already exists.
    #[error("{0}")]
    SnapshotExists(String),
    /// The delete would discard snapshots only a FORCE mode may remove.
    #[error("{mode} of snapshot '{snapshot}' would discard {}: {}; use {force} to remove them too",
        plural(victims.len(), "snapshot", "snapshots"), quoted_list(victims))]
    WouldDiscard {
        /// The snapshot named by the call.
        snapshot: String,
        /// The mode that refused (`MERGE`, `DISCARD`).
        mode: &'static str,
        /// The FORCE mode that would proceed.
        force: &'static str,
        /// Every snapshot the FORCE mode would remove, in topological order.
        victims: Vec<String>,
    },
    /// The operation is impossible with this backend or in this power state.
    #[error("{0}")]
    OperationInvalid(String),
    /// The backend failed.
    #[error("backend '{backend}': {message}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// The backend's own message.
        message: String,
    },
    /// A plugin cannot be used.
    #[error("plugin {}: {reason}", path.display())]
    Plugin {
        /// The plugin file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The metadata store failed.
    #[error("{context}")]
    Storage {
        /// What the store was doing.
        context: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Another process or thread holds the domain.
    #[error("domain '{domain}' is busy: another operation held it for {waited_ms} ms{}", held_by(.holder))]
    Busy {
        /// The domain.
        domain: String,
        /// How long we waited.
        waited_ms: u64,
        /// Who holds it, where the store can tell (PostgreSQL: the holder connection's
        /// application name, `snaptree PID@HOST`).
        holder: Option<String>,
    },
    /// A bug in snaptree.
    #[error("internal error: {0}")]
    Internal(String),
    /// An operation stopped part-way (SEMANTICS.md §7.1): its plan stays in the journal and
    /// the next call on the domain, or `recover`, finishes it.
    #[error(
        "{operation} on domain '{domain}' stopped at {stage}; the next call on the domain finishes it"
    )]
    Incomplete {
        /// The domain.
        domain: String,
        /// The operation, in words ("delete (MERGE) of snapshot 'b'").
        operation: String,
        /// Where it stopped ("step 2 of 3 (discard_leaf)").
        stage: String,
        /// Why: the backend's (or the store's) own error.
        #[source]
        source: Box<Error>,
    },
    /// A plan does not fit on a file system (SEMANTICS.md §7.7); nothing ran.
    #[error(
        "{operation} on domain '{domain}' needs {} on the file system at {path} but only {} is free",
        bytes(*needed), bytes(*free)
    )]
    NoSpace {
        /// The domain.
        domain: String,
        /// The operation, in words.
        operation: String,
        /// The file system's mount point.
        path: String,
        /// Bytes the plan would write there.
        needed: u64,
        /// Bytes free there.
        free: u64,
    },
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArg(_) => ErrorCode::InvalidArg,
            Error::Xml { .. } => ErrorCode::XmlError,
            Error::NoDomain(_) => ErrorCode::NoDomain,
            Error::NoSnapshot(_) => ErrorCode::NoSnapshot,
            Error::SnapshotExists(_) => ErrorCode::SnapshotExists,
            Error::WouldDiscard { .. } => ErrorCode::WouldDiscard,
            Error::OperationInvalid(_) => ErrorCode::OperationInvalid,
            Error::Backend { .. } => ErrorCode::Backend,
            Error::Plugin { .. } => ErrorCode::Plugin,
            Error::Storage { .. } => ErrorCode::Storage,
            Error::Busy { .. } => ErrorCode::Busy,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Incomplete { .. } => ErrorCode::Incomplete,
            Error::NoSpace { .. } => ErrorCode::NoSpace,
        }
    }

    /// A storage error with context and an underlying cause.
    pub fn storage(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Storage {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The full message including every `source` in the chain, for surfaces
    /// (C API, CLI) that show one string.
    pub fn full_message(&self) -> String {
        chain_message(self)
    }
}

/// Any error's message followed by every `source` in its chain, joined by ": ": for a
/// surface that shows one string, or a backend flattening its own error type.
pub fn chain_message(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The result type of snaptree.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bytes for messages: exact, with a binary-unit reading for large numbers
/// ("29360128 bytes (28.0 MiB)").
pub fn bytes(n: u64) -> String {
    if n < 1 << 20 {
        return format!("{n} bytes");
    }
    let (v, unit) = if n >= 1 << 30 {
        (n as f64 / (1u64 << 30) as f64, "GiB")
    } else {
        (n as f64 / (1u64 << 20) as f64, "MiB")
    };
    format!("{n} bytes ({v:.1} {unit})")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The end of a BUSY message naming the holder, when known.
fn held_by(holder: &Option<String>) -> String {
    holder
        .as_ref()
        .map_or_else(String::new, |h| format!(" (held by {h})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a source of its own, so the chain is three long.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot write the journal")]
    struct Journal(#[source] std::io::Error);

    #[test]
    fn chain_message_joins_every_source() {
        let e = Error::storage(
            "cannot record step 2",
            Journal(std::io::Error::other("disk full")),
        );
        assert_eq!(
            e.full_message(),
            "cannot record step 2: cannot write the journal: disk full"
        );
        assert_eq!(chain_message(&std::io::Error::other("alone")), "alone");
    }
}
