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

/// For what looks like a local `mc submit`, forks the sandbox launcher now, first thing in
/// `main`: `mc` has one thread and almost no memory yet, so the fork is cheap, and `mc` does not
/// pay for the pages it would otherwise share with the helper (every page written after the
/// fork is copied). Its step shims are then forked from it instead of executing `mc` again,
/// which spares each sandbox the start of a large program (see
/// `maestro_sandbox::Launcher::fork`). Clap has not run yet, so this is a guess from the raw
/// arguments, checked once clap has ([`keep_launcher_for`]): a wrong one costs a fork (or, the
/// other way, executed shims), never a behaviour. Other commands run no local step, or are
/// long-lived (`mc serve` starts its launcher by executing `mc`: a fork of the server would
/// carry its memory).
pub(crate) fn fork_launcher_if_submit() {
    let mut args = std::env::args_os().skip(1);
    let submit = args.any(|arg| arg == "submit");
    let remote = std::env::args_os().any(|arg| arg.as_encoded_bytes().starts_with(b"--server"))
        || std::env::var_os("MAESTRO_SERVER").is_some_and(|url| !url.is_empty());
    if !submit || remote {
        return;
    }
    let forked = Launcher::fork().map_err(|error| error.to_string());
    *FORKED_LAUNCHER
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(forked);
}

/// Lets go of (and reaps) the launcher [`fork_launcher_if_submit`] forked, unless `cli` is a
/// local `mc submit`, which takes it ([`take_forked_launcher`]).
pub(crate) fn keep_launcher_for(cli: &Cli) {
    let remote = cli
        .global
        .server
        .as_deref()
        .is_some_and(|url| !url.is_empty());
    if remote || !matches!(cli.command, Command::Submit(_)) {
        release_launcher();
    }
}

/// Lets go of (and reaps) a forked launcher nothing took: a command that ended before it built
/// its executors. (A static is never dropped: without this its helper would outlive `mc` as a
/// zombie for the system to reap.)
///
/// Call it last thing before `mc` exits: it also reaps every forked launcher let go of
/// (dropping one does not wait for its exit, which happens meanwhile).
pub(crate) fn release_launcher() {
    drop(
        FORKED_LAUNCHER
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(),
    );
    Launcher::reap_forked();
}

/// The launcher [`fork_launcher_if_submit`] forked, once; `None` if it forked none or could not
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
