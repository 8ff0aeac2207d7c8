//! The one-line failures of sandbox setup, as the shim reports them.

use nix::errno::Errno;

/// A setup step of the sandbox failed; the message names what, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SetupFailure {
    /// What failed and why, e.g. `cannot bind /w read-write: No such file or directory`.
    pub(crate) message: String,
    /// Whose failure it is.
    pub(crate) kind: FailureKind,
}

/// Whose failure a [`SetupFailure`] is, which decides what the caller is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The machine's: the sandbox could not be built here.
    Setup,
    /// The step's: the sandbox was complete but its program could not be executed (not
    /// found, not executable).
    CannotStart,
    /// The step's: it asks for what no sandbox gives (a writable path that is, through a
    /// link, a system directory). Not the machine's problem, and no reason to drop the sandbox.
    Refused,
}

impl FailureKind {
    /// The word that names it on init's status pipe.
    pub(crate) fn word(self) -> &'static str {
        match self {
            FailureKind::Setup => "setup",
            FailureKind::CannotStart => "cannot-start",
            FailureKind::Refused => "refused",
        }
    }
}

impl SetupFailure {
    /// A failure with this message.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self::of(FailureKind::Setup, message)
    }

    /// The step's program could not be executed: `message` says why.
    pub(crate) fn cannot_start(message: impl Into<String>) -> Self {
        Self::of(FailureKind::CannotStart, message)
    }

    /// The step asks for what no sandbox gives: `message` says what.
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self::of(FailureKind::Refused, message)
    }

    /// A failure of this kind.
    pub(crate) fn of(kind: FailureKind, message: impl Into<String>) -> Self {
        SetupFailure {
            message: message.into(),
            kind,
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
