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
mod engine;
mod error;
mod events;
mod executor;
mod step;

pub use config::{LABEL_JOB_ID, LABEL_MANAGED, LABEL_STEP, LABEL_TRACE_ID, WORKSPACE};
pub use executor::DockerExecutor;
