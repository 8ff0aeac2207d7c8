//! Maestro's Swarm executor: the `swarm` runtime, each step a one-shot service on a Docker Swarm.
//!
//! # Brief overview
//!
//! * [`SwarmExecutor`] implements [`maestro_core::executor::Executor`]. Register it under the
//!   runtime name `swarm`; it talks to the manager `DOCKER_HOST` (else the default socket) names,
//!   and refuses, before any step runs, an engine that is not an active swarm manager.
//! * Each step becomes a replicated-job service (one task, never restarted) whose service and
//!   task containers carry the Docker runtime's labels plus [`LABEL_RUNTIME`]` = swarm`; `mc gc`
//!   finds leftovers of dead `mc` processes by them.
//! * Nodes do not share the submitter's disk: no workspace is mounted, and a `workdir` that
//!   assumes one is refused.
//! * A step ends once its service and every container of its task are gone, which its outcome
//!   records as a verified `TeardownMethod::ContainerRemoved` teardown; a step that another
//!   swarm step of the job follows and whose command exited removes its service at once and
//!   hands its exited container's removal to the background, which the job's `finish` awaits.
//!
//! See `docs/executors.md` for the fields, the lifecycle and the cleanup guarantees.
#![deny(missing_docs)]

mod config;
mod engine;
mod executor;

pub use config::{DEFAULT_SCHEDULE_TIMEOUT, LABEL_RUNTIME, RUNTIME};
pub use executor::SwarmExecutor;
pub use maestro_docker::{LABEL_JOB_ID, LABEL_MANAGED, LABEL_STEP, LABEL_TRACE_ID};
