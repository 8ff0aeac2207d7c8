//! Runs one local step of a Maestro job inside a kernel sandbox.
//!
//! # Brief overview
//!
//! The caller (`mc`) never sandboxes itself: it is multi-threaded, and namespaces and
//! `fork` want a single thread. It re-executes a *shim* instead, with [`command`]: in
//! production `mc` itself with a hidden first argument, whose `main` calls [`run_shim`]; in
//! this crate's tests the `maestro-sandbox-shim` binary. The shim reads a [`SandboxPlan`] on
//! its stdin (a Unix socket, the [`Control`] channel), enters new user and PID namespaces,
//! forks the namespace's init, which enters new mount, IPC, UTS (and network) namespaces,
//! builds the step's filesystem view and forks the step; the step drops its capabilities,
//! applies Landlock and seccomp and executes the program. When the step's process ends, init
//! kills and reaps whatever the step left behind and says so, and the shim reports a
//! [`Report`] and exits the way the step did, without waiting for init's exit.
//!
//! A caller can have a [`Launcher`] instead: a single-threaded helper that forks each step's
//! shim, which then runs the same code from the same starting state, for less CPU than an
//! executed one. A long-lived caller starts it the way the shim is started (calling
//! [`run_launcher`]); a short-lived one forks it from itself before its first thread
//! ([`Launcher::fork`]), which spares even its one step the execution of the shim.
//!
//! [`check_support`] tells, in-process and cheaply, whether the kernel can do all that.
//! `docs/sandbox.md` says what a step can and cannot do inside.

#![deny(missing_docs)]

mod confine;
mod control;
mod failure;
mod launch;
mod launcher;
mod mounts;
mod namespace;
mod netlink;
mod plan;
mod report;
mod shim;
mod support;
#[expect(
    unsafe_code,
    reason = "fork, a signal disposition and two raw syscalls; see sys.rs"
)]
mod sys;

use std::ffi::OsString;

pub use control::{Control, command};
pub use launch::{ForkedLauncher, Launched, Launcher};
pub use plan::{
    HostAccess, HostEnvironment, NetworkMode, SHARED_DIRS, SYSTEM_TREES, SandboxPlan,
    never_writable,
};
pub use report::{ExitKind, Report, TeardownReport};
pub use support::{Support, check_support};

/// The shim's exit code when the sandbox could not be set up and the step never ran (as
/// `env` and `chroot` use 125 for their own failures).
pub const SETUP_FAILED_EXIT_CODE: i32 = 125;

/// The names of the syscalls a step cannot make (they fail with EPERM), without libc's `SYS_`
/// prefix; for documentation and diagnostics.
pub fn refused_syscalls() -> Vec<&'static str> {
    confine::REFUSED_SYSCALLS
        .iter()
        .chain(confine::REFUSED_ARCH_SYSCALLS)
        .map(|(name, _)| name.trim_start_matches("SYS_"))
        .collect()
}

/// What can go wrong on the caller's side of a sandboxed step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel lacks something the sandbox needs; one line, ending with the opt-out.
    #[error("{message}")]
    Unsupported {
        /// What is missing and how to run without the sandbox.
        message: String,
    },
    /// The sandbox could not be set up; the step never ran.
    #[error("cannot set up the sandbox: {message}")]
    Setup {
        /// One line naming what failed.
        message: String,
    },
    /// The sandbox was complete, but the step's program could not be executed (not found, not
    /// executable); the step's failure rather than the machine's.
    #[error("{message}")]
    CannotStart {
        /// Why, e.g. `No such file or directory`.
        message: String,
    },
    /// The step asks for what no sandbox gives (a writable path that is, through a link, a
    /// system directory); the step's mistake, and it never ran.
    #[error("{message}")]
    Refused {
        /// What, in one line.
        message: String,
    },
    /// The plan cannot be run (an empty command).
    #[error("invalid sandbox plan: {message}")]
    InvalidPlan {
        /// What is wrong with it.
        message: String,
    },
    /// The control socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The shim wrote something that is not a report.
    #[error("the sandbox shim sent an unreadable report: {message}")]
    Protocol {
        /// What could not be read.
        message: String,
    },
    /// The shim ended without a report (it was killed).
    #[error("the sandbox shim ended without a report")]
    Vanished,
}

/// The shim's entry point: `main` of the shim program, which `mc` calls when its first
/// argument is the hidden shim argument (`args` are the arguments after it: only
/// `--plan-file PATH`, which reads the plan from a file instead of the control socket, for
/// running the shim by hand or in a benchmark). Must be called in a freshly exec'd process before any thread is started: it forks.
/// Never returns: exits with the step's code, dies of the step's signal, or exits
/// [`SETUP_FAILED_EXIT_CODE`].
pub fn run_shim(args: impl Iterator<Item = OsString>) -> ! {
    shim::run(args)
}

/// The launcher's entry point: `main` of the program a [`Launcher`] starts (`mc` with its
/// hidden launcher argument). Like [`run_shim`], it must be called in a freshly exec'd process
/// before any thread is started, and never returns: it serves requests on its stdin until the
/// caller closes it, then stops the shims it started and exits.
pub fn run_launcher() -> ! {
    launcher::run()
}
