//! Maestro's core: job specs, policies, append-only state, audit, the `Executor` trait and the runner.
//!
//! # Brief overview
//!
//! * [`spec::JobSpec`] is a parsed job spec; [`spec::parse`] reads JSON or YAML and rejects unknown
//!   fields (its errors name the field, line and column, with a "did you mean" from
//!   [`suggest::did_you_mean`]), and [`plan::plan_steps`] resolves it into per-step
//!   [`executor::StepRequest`]s.
//! * [`policy::evaluate_policies`] is the only policy entry point: every policy, every verdict.
//! * [`state::StateStore`] is all the runner, the server and `mc` know of storage: a job's
//!   history (append-only), leases, step logs, listing and audit trail; [`state::FileStore`]
//!   keeps them under `var/maestro`, and [`audit::AuditLog`] chains the trail over the store's
//!   [`audit::AuditStorage`]. [`follow`] reads a job's logs in the spec's order, to their end.
//! * [`executor::Executor`] is the boundary every runtime implements (the local, Docker and plugin
//!   executors live in crates of their own), and [`executor::ExecutorRegistry`] maps runtime
//!   names to executors.
//! * [`runner::Runner`] ties them together: validate, persist, evaluate, run, record.
//!
//! This crate knows no container engine and no plugin: those are executors in crates of their own.
#![deny(missing_docs)]

pub mod audit;
pub mod children;
pub mod control;
pub mod executor;
pub mod follow;
pub mod group_commit;
pub mod identity;
pub mod output;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod prune;
pub mod root;
pub mod runner;
pub mod secret;
pub mod spec;
pub mod state;
pub mod suggest;
pub mod time;
pub mod trace;

pub use uuid::Uuid as JobId;
