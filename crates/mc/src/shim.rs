//! `mc` doubles as the sandbox shim for local steps: re-executing the binary that is already
//! running needs no second program installed beside it, and `/proc/self/exe` finds it even if
//! the file was replaced meanwhile.

use std::path::PathBuf;

/// The hidden first argument that turns `mc` into the shim. Not a subcommand: clap never sees it.
pub(crate) const ARGUMENT: &str = "__maestro-sandbox-shim";

/// The hidden first argument that turns `mc` into the sandbox launcher, which forks shims for
/// `mc serve` (see `maestro_sandbox::Launcher`).
pub(crate) const LAUNCHER_ARGUMENT: &str = "__maestro-sandbox-launcher";

/// The program the local executor starts as the shim.
pub(crate) fn program() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// Becomes the shim or the launcher, never returning, when `mc` was started as one.
pub(crate) fn run_if_requested() {
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(first) if first == ARGUMENT => maestro_sandbox::run_shim(args),
        Some(first) if first == LAUNCHER_ARGUMENT => maestro_sandbox::run_launcher(),
        _ => {}
    }
}
