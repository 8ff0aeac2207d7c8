//! Exit codes and the one-line error reports that go with them.

use std::fmt;

/// `mc`'s exit codes, as documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The job succeeded, or the command did what was asked.
    Success = 0,
    /// The job failed: a step failed or timed out.
    JobFailed = 1,
    /// Invalid input or usage.
    Usage = 2,
    /// Denied by policy.
    Denied = 3,
    /// System error: state root unwritable, executor unavailable.
    System = 4,
    /// Cancelled by SIGINT/SIGTERM.
    Cancelled = 130,
}

impl Code {
    /// The exit code for a job that ended in `state`, failed for `failure`: the same whether
    /// `mc submit` ran it or `mc logs --follow` watched it end.
    pub(crate) fn for_job(
        state: maestro_core::state::JobState,
        failure: Option<maestro_core::runner::FailureKind>,
    ) -> Self {
        use maestro_core::runner::FailureKind;
        use maestro_core::state::JobState;
        match (state, failure) {
            (JobState::Succeeded, _) => Self::Success,
            (JobState::Denied, _) => Self::Denied,
            (JobState::Cancelled, _) => Self::Cancelled,
            (_, Some(FailureKind::ExecutorUnavailable)) => Self::System,
            (_, Some(FailureKind::InvalidStep | FailureKind::SecretUnavailable)) => Self::Usage,
            _ => Self::JobFailed,
        }
    }
}

/// The exit codes as `--help` shows them (the README has the same table).
pub(crate) const EXIT_CODES_HELP: &str = "Exit codes:
  0    success (the job succeeded, or the command did what was asked)
  1    the job failed (a step failed, timed out or ran out of memory), or `mc audit verify`
       found tampering
  2    invalid input or usage (bad spec, unknown field or runtime, bad job id, a secret
       that cannot be read)
  3    denied by policy
  4    system error (state root unwritable, executor unavailable)
  130  cancelled by SIGINT/SIGTERM";

impl From<Code> for std::process::ExitCode {
    fn from(code: Code) -> Self {
        Self::from(code as u8)
    }
}

/// A command that could not do its work: an exit code, a message and maybe a hint.
#[derive(Debug)]
pub(crate) struct Failure {
    code: Code,
    message: String,
    hint: Option<String>,
}

impl Failure {
    /// A user error (exit 2).
    pub(crate) fn usage(message: impl fmt::Display) -> Self {
        Self::new(Code::Usage, message)
    }

    /// A system error (exit 4).
    pub(crate) fn system(message: impl fmt::Display) -> Self {
        Self::new(Code::System, message)
    }

    pub(crate) fn new(code: Code, message: impl fmt::Display) -> Self {
        Self {
            code,
            message: message.to_string(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl fmt::Display) -> Self {
        self.hint = Some(hint.to_string());
        self
    }

    /// Print the error on stderr and give its exit code; with `json` (the command was asked
    /// for `--output json` and printed nothing yet), also as one object on stdout, so that a
    /// pipeline reading stdout gets the failure it can parse:
    /// `{"error": "...", "hint": "..." | null, "exit_code": N}`.
    pub(crate) fn report(self, json: bool) -> Code {
        eprintln!("error: {}", self.message);
        if let Some(hint) = &self.hint {
            eprintln!("hint: {hint}");
        }
        if json && !crate::printer::json_printed() {
            crate::printer::json(&serde_json::json!({
                "error": self.message,
                "hint": self.hint,
                "exit_code": self.code as u8,
            }));
        }
        self.code
    }
}

impl From<maestro_core::runner::RunError> for Failure {
    fn from(error: maestro_core::runner::RunError) -> Self {
        if error.is_user_error() {
            Self::usage(error)
        } else {
            Self::system(error)
        }
    }
}

impl From<maestro_core::follow::FollowError> for Failure {
    fn from(error: maestro_core::follow::FollowError) -> Self {
        match error {
            maestro_core::follow::FollowError::State(error) => Self::from(error),
            other => Self::system(other),
        }
    }
}

impl From<maestro_core::state::StateError> for Failure {
    fn from(error: maestro_core::state::StateError) -> Self {
        match error {
            maestro_core::state::StateError::NotFound { pruned: true, .. } => Self::usage(error),
            maestro_core::state::StateError::NotFound { .. } => {
                let hint = if crate::commands::database().is_some() {
                    "`mc status` lists the jobs of this database; --state-url or MAESTRO_STATE_URL chooses another"
                } else {
                    "`mc status` lists the jobs of this state root; --state-dir or MAESTRO_HOME chooses another"
                };
                Self::usage(error).hint(hint)
            }
            _ => Self::system(error),
        }
    }
}
