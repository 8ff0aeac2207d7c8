//! The one-line failures of sandbox setup, as the shim reports them.

use nix::errno::Errno;

/// A setup step of the sandbox failed; the message names what, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SetupFailure {
    /// What failed and why, e.g. `cannot bind /w read-write: No such file or directory`.
    pub(crate) message: String,
    /// The sandbox was complete but the step's program could not be executed (not found, not
    /// executable): the step's failure, not the machine's.
    pub(crate) cannot_start: bool,
}

impl SetupFailure {
    /// A failure with this message.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        SetupFailure {
            message: message.into(),
            cannot_start: false,
        }
    }
}

impl SetupFailure {
    /// The step's program could not be executed: `message` says why.
    pub(crate) fn cannot_start(message: impl Into<String>) -> Self {
        SetupFailure {
            message: message.into(),
            cannot_start: true,
        }
    }
}

/// How an error reads at the end of a setup failure: the bare OS description for errnos
/// ("Operation not permitted", not "EPERM: Operation not permitted" nor "(os error 1)").
pub(crate) trait Describe {
    /// The text to put after `what: `.
    fn describe(&self) -> String;
}

impl Describe for Errno {
    fn describe(&self) -> String {
        self.desc().to_owned()
    }
}

impl Describe for std::io::Error {
    fn describe(&self) -> String {
        match self.raw_os_error() {
            Some(code) => Errno::from_raw(code).desc().to_owned(),
            None => self.to_string(),
        }
    }
}

macro_rules! describe_by_display {
    ($($error:ty),*) => {$(
        impl Describe for $error {
            fn describe(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

describe_by_display!(
    caps::errors::CapsError,
    std::num::TryFromIntError,
    landlock::RulesetError,
    seccompiler::Error,
    seccompiler::BackendError,
    serde_json::Error
);

/// Attaches what was being done to an error.
pub(crate) trait Context<T> {
    /// Turns the error into a [`SetupFailure`] reading `what: <error>`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SetupFailure>;
}

impl<T, E: Describe> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SetupFailure> {
        self.map_err(|error| SetupFailure::new(format!("{}: {}", what(), error.describe())))
    }
}

/// Makes sure a message stays on one line, whatever an error's text holds.
pub(crate) fn one_line(message: &str) -> String {
    message.replace(['\n', '\r'], " ")
}
