//! Black-box tests of the `mc` binary, all built into one test binary (as ripgrep does).
#![allow(
    unreachable_pub,
    reason = "helpers are shared between the modules of this one test binary"
)]

mod util;

mod cli;
mod concurrency;
mod control;
mod conventions;
mod docker;
mod errors;
mod hostile;
mod live;
mod logs;
mod plugins;
mod policies;
mod postgres;
mod records;
mod sandbox;
mod secrets;
mod server;
mod snapshots;
mod state;
mod status;
mod steps;
mod swarm;
