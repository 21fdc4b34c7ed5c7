//! How a subcommand fails: a one-line message and an exit status.

use std::fmt;

/// A failure of a command: a one-line message and the process exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    /// Exit status (non-zero).
    pub(crate) code: u8,
    /// What failed, naming the file, directory or process involved.
    pub(crate) message: String,
}

impl CliError {
    /// A failure with exit status 1.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self::with_code(1, message)
    }

    /// A failure with the given exit status.
    pub(crate) fn with_code(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
