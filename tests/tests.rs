//! Black-box tests of the `mc` binary, all built into one test binary (as ripgrep does).
#![allow(
    unreachable_pub,
    reason = "helpers are shared between the modules of this one test binary"
)]

mod util;

mod cli;
mod concurrency;
mod control;
mod docker;
mod hostile;
mod live;
mod plugins;
mod policies;
mod sandbox;
mod state;
mod status;
mod steps;
mod swarm;
