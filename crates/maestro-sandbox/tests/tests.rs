//! Black-box tests of the sandbox: the crate's shim, driven through the public API.

mod util;

mod confinement;
mod failures;
mod filesystem;
mod launcher;
mod processes;
