//! The error a plugin reports to the host.

use snaptree_engine::ErrorCode;

/// An error with one of the codes a plugin may report (normally `BACKEND`) and a sentence
/// naming the object concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    code: ErrorCode,
    message: String,
}

/// The result of a plugin call.
pub type PluginResult<T> = Result<T, PluginError>;

impl PluginError {
    /// The backend failed: the usual error.
    pub fn backend(message: impl Into<String>) -> PluginError {
        PluginError {
            code: ErrorCode::Backend,
            message: message.into(),
        }
    }

    /// An argument is invalid.
    pub fn invalid_arg(message: impl Into<String>) -> PluginError {
        PluginError {
            code: ErrorCode::InvalidArg,
            message: message.into(),
        }
    }

    /// The backend cannot do this now, for example in this power state.
    pub fn operation_invalid(message: impl Into<String>) -> PluginError {
        PluginError {
            code: ErrorCode::OperationInvalid,
            message: message.into(),
        }
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<std::io::Error> for PluginError {
    fn from(e: std::io::Error) -> PluginError {
        PluginError::backend(e.to_string())
    }
}

impl From<snaptree_engine::Error> for PluginError {
    /// Keeps the code; a `BACKEND` error keeps only its message, since the host adds the
    /// backend's name again.
    fn from(e: snaptree_engine::Error) -> PluginError {
        match e {
            snaptree_engine::Error::Backend { message, .. } => PluginError::backend(message),
            other => PluginError {
                code: other.code(),
                message: other.full_message(),
            },
        }
    }
}
