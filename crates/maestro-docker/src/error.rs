//! What can go wrong talking to the Docker engine, and how it reaches the runner.

use std::time::Duration;

use maestro_core::executor::ExecutorError;

/// An error of this crate; [`DockerError::into_executor_error`] maps it at the executor boundary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    /// The engine does not answer at all.
    #[error(
        "cannot reach the Docker engine at {host}: {reason}; start the engine or point DOCKER_HOST at a running one"
    )]
    Unreachable {
        /// `DOCKER_HOST`, or the default socket.
        host: String,
        /// Why, as one line.
        reason: String,
    },
    /// The engine answered a request with an error.
    #[error("cannot {action}: {}", describe(.source))]
    Api {
        /// What was being done, e.g. `create the container of step "build"`.
        action: String,
        /// bollard's error.
        source: bollard::errors::Error,
    },
    /// The engine did not answer a request in time.
    #[error("cannot {action}: the Docker engine did not answer within {} s; check that it is healthy (docker info)", .after.as_secs())]
    Timeout {
        /// What was being done.
        action: String,
        /// How long we waited.
        after: Duration,
    },
    /// The image is missing and the pull policy forbids pulling it.
    #[error(
        "image {image:?} is not present on the Docker engine and the step's pull policy is never; build or load it first, or set pull: if-not-present"
    )]
    ImageMissing {
        /// The image reference.
        image: String,
    },
    /// Pulling the image failed.
    #[error(
        "cannot pull image {image:?}: {reason}; check the image name and that its registry is reachable"
    )]
    Pull {
        /// The image reference.
        image: String,
        /// What the engine said.
        reason: String,
    },
    /// The caller's Docker configuration cannot give the registry's credentials.
    #[error("cannot pull image {image:?}: {source}")]
    Credentials {
        /// The image reference.
        image: String,
        /// What was wrong with the configuration or its helper.
        source: crate::credentials::CredentialsError,
    },
    /// Pulling the image took too long or stalled.
    #[error(
        "pulling image {image:?} made no progress for {} s; check that its registry is reachable, or load the image beforehand", .after.as_secs()
    )]
    PullStalled {
        /// The image reference.
        image: String,
        /// How long without progress (or in total).
        after: Duration,
    },
    /// A container was to be created ahead of its step, but its image is not on the engine yet:
    /// it is created (and the image pulled, as the step's policy says) when the step runs.
    #[error(
        "image {image:?} is not on the Docker engine yet; the container is created when its step runs"
    )]
    NotAhead {
        /// The image reference.
        image: String,
    },
    /// The step's workspace cannot be mounted (see `config::workspace_source`).
    #[error("{0}")]
    Workspace(String),
    /// The job finished while the container was still being created for it.
    #[error("{0}: the job finished while its container was being created")]
    Abandoned(String),
    /// A container or exec ended in a state we cannot read an exit status from.
    #[error("{0}")]
    Lost(String),
    /// Writing the step's output failed.
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

impl DockerError {
    /// An API error while doing `action`.
    pub(crate) fn api(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        Self::Api {
            action: action.into(),
            source,
        }
    }

    /// Whether the engine may have done what we asked although we saw an error (the request
    /// timed out or the connection broke after it was sent), so a container may exist that we
    /// do not know the id of.
    pub(crate) fn is_ambiguous(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Api { source, .. } => match source {
                // The engine answered, or the request never reached it.
                bollard::errors::Error::DockerResponseServerError { .. }
                | bollard::errors::Error::SocketNotFoundError(_)
                | bollard::errors::Error::UnsupportedURISchemeError { .. } => false,
                bollard::errors::Error::HyperLegacyError { err } => !err.is_connect(),
                _ => true,
            },
            _ => false,
        }
    }

    /// Whether the engine could not be reached for this request (refused, no socket): the
    /// engine is gone, not the step's doing.
    pub(crate) fn is_engine_gone(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api { source, .. } => match source {
                bollard::errors::Error::SocketNotFoundError(_) => true,
                bollard::errors::Error::HyperLegacyError { err } => err.is_connect(),
                _ => false,
            },
            _ => false,
        }
    }

    /// The error as the runner wants it: an unreachable engine is `Unavailable` (a system
    /// problem, exit code 4); anything else about one step fails that step.
    pub(crate) fn into_executor_error(self) -> ExecutorError {
        match self {
            Self::Output(error) => ExecutorError::Output(error),
            error @ Self::Unreachable { .. } => ExecutorError::Unavailable {
                message: error.to_string(),
            },
            error => ExecutorError::StepFailed {
                message: error.to_string(),
            },
        }
    }
}

/// Whether `error` is the engine saying that a container or image does not exist.
pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Whether `error` is the engine refusing a creation because the name is taken.
pub(crate) fn is_name_conflict(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// Whether `error` is the engine refusing because a container is not running (or already
/// being removed): harmless when we wanted it stopped or gone.
pub(crate) fn is_conflict(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// One line saying why a bollard call failed: the engine's own message when it answered, else
/// the chain of causes (so "connection refused" or "no such file or directory" is visible).
pub(crate) fn describe(error: &bollard::errors::Error) -> String {
    use bollard::errors::Error;
    let text = match error {
        Error::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        Error::RequestTimeoutError => "the engine did not answer in time".to_owned(),
        Error::SocketNotFoundError(path) => format!("socket {path} does not exist"),
        Error::UnsupportedURISchemeError { uri } => {
            format!(
                "{uri:?} is not a supported address; use unix:///path/to/docker.sock or tcp://host:port"
            )
        }
        // "Error in the hyper legacy client: client error (Connect): tcp connect error: ..."
        // says the same thing three times; the transport's own cause is the useful part.
        Error::HyperLegacyError { err } => {
            let parts = chain_parts(err);
            let useful = parts.len().saturating_sub(2);
            parts[useful.min(parts.len().saturating_sub(1))..].join(": ")
        }
        other => chain_parts(other).join(": "),
    };
    one_line(&text)
}

fn chain_parts(error: &dyn std::error::Error) -> Vec<String> {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_engine_is_unavailable_and_names_the_host() {
        let error = DockerError::Unreachable {
            host: "unix:///nonexistent.sock".to_owned(),
            reason: "no such file".to_owned(),
        }
        .into_executor_error();
        assert!(matches!(error, ExecutorError::Unavailable { .. }));
        assert!(error.to_string().starts_with(
            "cannot reach the Docker engine at unix:///nonexistent.sock: no such file"
        ));
    }

    #[test]
    fn server_errors_are_not_ambiguous_but_timeouts_are() {
        let server = DockerError::api(
            "create",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "No such image: x:latest\n".to_owned(),
            },
        );
        assert!(!server.is_ambiguous());
        assert_eq!(server.to_string(), "cannot create: No such image: x:latest");
        let timeout = DockerError::Timeout {
            action: "create".to_owned(),
            after: Duration::from_secs(30),
        };
        assert!(timeout.is_ambiguous());
        assert!(matches!(
            timeout.into_executor_error(),
            ExecutorError::StepFailed { .. }
        ));
    }
}
