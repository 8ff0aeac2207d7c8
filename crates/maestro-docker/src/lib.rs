//! Maestro's Docker executor: the `docker` runtime, steps in containers on a Docker engine.
//!
//! # Brief overview
//!
//! * [`DockerExecutor`] implements [`maestro_core::executor::Executor`]. Register it under the
//!   runtime name `docker`; it connects to the engine lazily (honouring `DOCKER_HOST`) when a
//!   job is prepared.
//! * Every container carries the labels [`LABEL_MANAGED`], [`LABEL_JOB_ID`], [`LABEL_STEP`] and
//!   [`LABEL_TRACE_ID`]; `mc gc` finds leftovers of dead `mc` processes by them.
//! * The job's workspace is bind-mounted at [`WORKSPACE`], the default working directory; it is
//!   the only mount, and containers run with no-new-privileges, the engine's default seccomp
//!   profile and fewer capabilities, so every step is `Containment::Container` to policy.
//! * A step ends once the engine reports its container removed, which its outcome records as a
//!   verified `TeardownMethod::ContainerRemoved` teardown.
//!
//! See `docs/executors.md` for the fields, the lifecycle and the cleanup guarantees.
#![deny(missing_docs)]

mod config;
pub mod credentials;
mod engine;
mod error;
mod events;
mod executor;
mod step;

pub use config::{
    DROPPED_CAPABILITIES, INIT_SIGNALS_GROUP, LABEL_JOB_ID, LABEL_MANAGED, LABEL_STEP,
    LABEL_TRACE_ID, WORKSPACE, check_image_and_command,
};
pub use executor::DockerExecutor;

/// A connection to the engine `DOCKER_HOST` (else the default socket) names, for other
/// executors built on bollard (the swarm runtime): the engine answered `/_ping`, and every
/// request the client sends carries the agreed API version in its path.
#[derive(Debug, Clone)]
pub struct EngineConnection {
    /// The client.
    pub docker: bollard::Docker,
    /// The API version agreed with the engine.
    pub version: bollard::ClientVersion,
    /// The engine's address, for messages.
    pub host: String,
}

/// Connect to the engine as the docker runtime does; the error is one line saying why not.
pub async fn connect_engine() -> Result<EngineConnection, String> {
    let host = engine::engine_host();
    let version = engine::ping(&host)
        .await
        .map_err(|error| error.to_string())?;
    let docker = engine::client(&host, &version).map_err(|error| error.to_string())?;
    Ok(EngineConnection {
        docker,
        version,
        host,
    })
}

/// Whether an engine is configured at all: `DOCKER_HOST` is set, or the default socket exists.
pub fn engine_configured() -> bool {
    engine::engine_configured()
}
