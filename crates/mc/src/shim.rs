//! `mc` doubles as the sandbox shim for local steps: re-executing the binary that is already
//! running needs no second program installed beside it, and `/proc/self/exe` finds it even if
//! the file was replaced meanwhile.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use maestro_sandbox::{ForkedLauncher, Launcher};

use crate::cli::{Cli, Command};

/// The launcher `main` forked for this process's sandboxes, until the local executor takes it.
static FORKED_LAUNCHER: Mutex<Option<Result<ForkedLauncher, String>>> = Mutex::new(None);

/// The hidden first argument that turns `mc` into the shim. Not a subcommand: clap never sees it.
pub(crate) const ARGUMENT: &str = "__maestro-sandbox-shim";

/// The hidden first argument that turns `mc` into the sandbox launcher, which forks shims for
/// `mc serve` (see `maestro_sandbox::Launcher`), and replaces a forked one that failed.
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

/// For a local `mc submit`, forks the sandbox launcher now, while `mc` has one thread: its step
/// shims are then forked from it instead of executing `mc` again, which spares each sandbox the
/// start of a large program (see `maestro_sandbox::Launcher::fork`). Costs a fork of a small
/// process when the job has no sandboxed step. Other commands run no local step, or are
/// long-lived (`mc serve` starts its launcher by executing `mc`: a fork of the server would
/// carry its memory).
pub(crate) fn fork_launcher_for(cli: &Cli) {
    let remote = cli
        .global
        .server
        .as_deref()
        .is_some_and(|url| !url.is_empty());
    if remote || !matches!(cli.command, Command::Submit(_)) {
        return;
    }
    let forked = Launcher::fork().map_err(|error| error.to_string());
    *FORKED_LAUNCHER
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(forked);
}

/// The launcher [`fork_launcher_for`] forked, once; `None` if it forked none or could not
/// (why is logged: sandboxes are then built by executed shims, as before).
pub(crate) fn take_forked_launcher() -> Option<ForkedLauncher> {
    let forked = FORKED_LAUNCHER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()?;
    forked
        .inspect_err(|error| tracing::debug!(%error, "no forked sandbox launcher"))
        .ok()
}
