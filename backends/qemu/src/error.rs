//! [`QemuError`]: every failure of the backend, typed, and the one place it becomes the
//! engine's [`Error`] (`From<QemuError> for Error`, used at the engine's traits).
//!
//! A failure that wraps another keeps it as a value (a `#[source]`, or a field where the
//! wrapped message comes first), so that a simulated crash is still recognised however
//! deep it is ([`QemuError::is_simulated_crash`]).

use std::path::PathBuf;

use snaptree_engine::Error;
use snaptree_engine::error::chain_message;
use snaptree_qemu_img as qi;
use snaptree_qmp as qmp;

/// The backend's name, as in `<domain type='qemu'>`.
pub(crate) const NAME: &str = "qemu";

/// The result type inside the backend.
pub(crate) type Result<T, E = QemuError> = std::result::Result<T, E>;

/// A failure of the QEMU backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QemuError {
    /// A sentence naming the object at fault (a disk, a file, a snapshot).
    #[error("{0}")]
    Failed(String),
    /// The step is not possible in the domain's state or configuration (`OPERATION_INVALID`).
    #[error("{0}")]
    OperationInvalid(String),
    /// The restart tests' crash before a change to the disk: nothing after it runs, not
    /// even an undo, as after a real crash.
    #[error("simulated crash before: {before}")]
    SimulatedCrash {
        /// The change that did not happen.
        before: String,
    },
    /// An image held by another process (a running VM).
    #[error(
        "{} is in use by another process (is the VM running?): {}",
        image.display(),
        message.trim()
    )]
    Locked {
        /// The locked image (perhaps a backing file of the one asked for).
        image: PathBuf,
        /// qemu's own message.
        message: String,
    },
    /// A qemu-img or qemu-io call failed.
    #[error(transparent)]
    QemuImg(qi::Error),
    /// A file-system call failed.
    #[error("{what}")]
    Io {
        /// What could not be done, naming the file.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A QMP command of the running QEMU failed.
    #[error("cannot {what}")]
    Qmp {
        /// What could not be done.
        what: String,
        /// QMP's error.
        #[source]
        source: qmp::Error,
    },
    /// The QMP socket the domain names could not be used.
    #[error("QMP socket {}", socket.display())]
    QmpSocket {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: qmp::Error,
    },
    /// `query-status` failed for another reason than a QEMU that died.
    #[error("query-status")]
    QueryStatus(#[source] qmp::Error),
    /// A QMP command was needed, but no QEMU listens any more.
    #[error("cannot {what}: no QEMU listens on {}", socket.display())]
    NoQemu {
        /// What could not be done.
        what: String,
        /// The domain's QMP socket.
        socket: PathBuf,
    },
    /// An engine error (a malformed domain document): passed on as it is.
    #[error(transparent)]
    Engine(#[from] Error),
    /// A step failed before it changed anything.
    #[error("cannot {verb}, nothing was changed")]
    NothingChanged {
        /// The step's verb.
        verb: &'static str,
        /// Why.
        #[source]
        source: Box<QemuError>,
    },
    /// A failure, and what it left behind or what finishes it.
    #[error("{}; {then}", first.full_message())]
    Then {
        /// The failure.
        first: Box<QemuError>,
        /// What it means for the step.
        then: String,
    },
    /// A failure whose undo failed too.
    #[error(
        "{}; undoing the changes already made also failed: {}",
        cause.full_message(),
        failures.iter().map(QemuError::full_message).collect::<Vec<_>>().join("; ")
    )]
    Undo {
        /// The failure that started the undo.
        cause: Box<QemuError>,
        /// The undo operations that failed.
        failures: Vec<QemuError>,
    },
    /// A failed live create whose partial snapshot could not be removed either.
    #[error(
        "{}; removing the partial snapshot {tag} also failed ({}): the next step removes it",
        cause.full_message(),
        failure.full_message()
    )]
    PartialSnapshotLeft {
        /// Why the create failed.
        cause: Box<QemuError>,
        /// The snapshot's tag.
        tag: String,
        /// Why it could not be removed.
        failure: Box<QemuError>,
    },
}

/// A [`QemuError::Failed`]: a sentence naming the object at fault.
pub(crate) fn error(message: impl Into<String>) -> QemuError {
    QemuError::Failed(message.into())
}

impl QemuError {
    /// The message with every cause, as one sentence.
    pub(crate) fn full_message(&self) -> String {
        chain_message(self)
    }

    /// `self`, followed by what it means for the step.
    pub(crate) fn then(self, then: impl Into<String>) -> QemuError {
        QemuError::Then {
            first: Box::new(self),
            then: then.into(),
        }
    }

    /// Whether a simulated crash caused this failure: then nothing may run after it.
    pub(crate) fn is_simulated_crash(&self) -> bool {
        match self {
            QemuError::SimulatedCrash { .. } => true,
            QemuError::NothingChanged { source, .. } => source.is_simulated_crash(),
            QemuError::Then { first, .. } => first.is_simulated_crash(),
            QemuError::Undo { cause, failures } => {
                cause.is_simulated_crash() || failures.iter().any(QemuError::is_simulated_crash)
            }
            QemuError::PartialSnapshotLeft { cause, failure, .. } => {
                cause.is_simulated_crash() || failure.is_simulated_crash()
            }
            _ => false,
        }
    }
}

impl From<qi::Error> for QemuError {
    fn from(e: qi::Error) -> QemuError {
        match e {
            qi::Error::Locked { image, message } => QemuError::Locked { image, message },
            other => QemuError::QemuImg(other),
        }
    }
}

/// The one place a backend failure becomes the engine's error: engine errors and refusals
/// keep their code, everything else is a `BACKEND` error with the whole chain as message.
impl From<QemuError> for Error {
    fn from(e: QemuError) -> Error {
        match e {
            QemuError::Engine(e) => e,
            QemuError::OperationInvalid(message) => Error::OperationInvalid(message),
            other => Error::Backend {
                backend: NAME.into(),
                message: other.full_message(),
            },
        }
    }
}
