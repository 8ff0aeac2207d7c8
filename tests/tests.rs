//! Black-box tests of the `mc` binary, all built into one test binary (as ripgrep does).

mod util;

mod cli;
mod concurrency;
mod hostile;
mod policies;
mod state;
mod steps;
