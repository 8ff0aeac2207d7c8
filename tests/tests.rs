//! Black-box tests of the `mc` binary, all built into one test binary (as ripgrep does).
#![allow(
    unreachable_pub,
    reason = "helpers are shared between the modules of this one test binary"
)]

mod util;

mod cli;
mod concurrency;
mod conventions;
mod docker;
mod errors;
mod hostile;
mod plugins;
mod policies;
mod sandbox;
mod snapshots;
mod state;
mod steps;
