//! The namespace's init (pid 1): enters the mount, IPC, UTS (and network) namespaces, sets the
//! sandbox up, starts the step, reaps, empties the namespace, reports.
//!
//! The teardown: when the step's main process has exited, init SIGKILLs every other process of
//! the PID namespace, whatever it did to get away (`setsid`, double forks, a cleared
//! environment), reaps until it has no child left, and only then reports the step's status and
//! "empty" to the shim. Should init die before that, the kernel does the same when a PID
//! namespace's init exits.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::failure::{Context, SetupFailure, one_line};
use crate::plan::{HostEnvironment, NetworkMode, SandboxPlan};
use crate::sys::{self, Forked};
use crate::{SETUP_FAILED_EXIT_CODE, confine, mounts, netlink};

/// The hostname a step sees.
pub(crate) const HOSTNAME: &str = "maestro-sandbox";

/// Runs as pid 1 of the new PID namespace; `status` is the pipe to the outer shim, `go` (for a
/// held plan) the pipe on which the shim says the step may start.
pub(crate) fn run_init(
    plan: &SandboxPlan,
    environment: &HostEnvironment,
    status: OwnedFd,
    go: Option<OwnedFd>,
) -> ! {
    let mut status = File::from(status);
    // The outer shim is in another PID namespace, so this signal is delivered even to an init.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let step = match enter(plan)
        .and_then(|()| prepare(plan, environment))
        .and_then(|()| wait_for_go(go))
        .and_then(|()| start_step(plan))
    {
        Ok(step) => step,
        Err(failure) => {
            let kind = failure.kind.word();
            let _ = writeln!(status, "{kind} {}", one_line(&failure.message));
            std::process::exit(SETUP_FAILED_EXIT_CODE)
        }
    };
    // The namespace's inode names it for the shim's teardown check (the shim cannot read it
    // itself without racing init's exit).
    let inode = std::fs::metadata("/proc/self/ns/pid").map_or(0, |metadata| metadata.ino());
    let _ = writeln!(status, "started {inode}");
    // Init's copies of the caller's stdout and stderr (and of the control socket as stdin) must
    // not keep the caller's pipes open until init's own, slower, exit: the step has its own.
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    // Reap every process that ends up as init's child (orphans are re-parented here) until the
    // step's own process ends.
    let exit = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == step => break Some(format!("exit {code}")),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == step => {
                break Some(format!("signal {}", signal as i32));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break None,
        }
    };
    let mut report = exit.map(|line| line + "\n").unwrap_or_default();
    if empty_namespace() {
        report.push_str("empty\n");
    }
    // One write: the shim acts on "empty" at once, and does not wait for init's exit.
    let _ = status.write_all(report.as_bytes());
    std::process::exit(0)
}

/// Kills every other process of the PID namespace and reaps until none is left; true when the
/// namespace then holds init alone.
///
/// `kill(-1, SIGKILL)` from the init of a PID namespace reaches every process of the namespace
/// (init has every capability in the user namespace that owns them all) and nothing outside it.
/// Every process of the namespace descends from init, and an orphan is re-parented to init
/// before its parent can be reaped, so once `waitpid` says there is no child (ECHILD), no
/// process but init is left.
fn empty_namespace() -> bool {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => return true,
            Err(_) => return false,
        }
    }
}

/// Enters the namespaces only init and the step live in. Init has every capability in the user
/// namespace the shim created, so it can; the shim stays outside, which keeps the teardown of
/// the mounts out of the shim's exit.
fn enter(plan: &SandboxPlan) -> Result<(), SetupFailure> {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if plan.network == NetworkMode::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags)
        .context(|| "cannot create the mount, IPC, UTS (and network) namespaces".to_owned())
}

/// Everything init sets up before the step: mounts, hostname, loopback.
fn prepare(plan: &SandboxPlan, environment: &HostEnvironment) -> Result<(), SetupFailure> {
    mounts::setup(plan, environment)?;
    nix::unistd::sethostname(HOSTNAME).context(|| "cannot set the hostname".to_owned())?;
    if plan.network == NetworkMode::None {
        netlink::loopback_up().context(|| "cannot bring the loopback interface up".to_owned())?;
    }
    Ok(())
}

/// For a held plan: waits, the sandbox complete, until the shim says the step may start (one
/// byte); end of file means the shim and its caller are gone, and the step never starts.
fn wait_for_go(go: Option<OwnedFd>) -> Result<(), SetupFailure> {
    let Some(go) = go else {
        return Ok(());
    };
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&go, &mut byte) {
            Ok(1) => return Ok(()),
            Err(Errno::EINTR) => {}
            Ok(_) | Err(_) => {
                return Err(SetupFailure::new(
                    "the caller went away before the step could start; nothing of it ran",
                ));
            }
        }
    }
}

/// Forks the step and waits until it has exec'd its program, or failed to confine itself.
///
/// The step holds the write end of a close-on-exec pipe: end of file with nothing read means
/// the exec happened; a line means confinement failed and nothing ran, or, with the prefix
/// `exec `, that the program could not be executed (the step then exits 127, like a shell).
fn start_step(plan: &SandboxPlan) -> Result<Pid, SetupFailure> {
    let (exec_read, exec_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context(|| "cannot create the exec pipe".to_owned())?;
    let step = match sys::fork().context(|| "cannot fork the step".to_owned())? {
        Forked::Child => {
            drop(exec_read);
            confine::exec_step(plan, exec_write)
        }
        Forked::Parent(step) => step,
    };
    drop(exec_write);
    let mut message = String::new();
    let _ = File::from(exec_read).read_to_string(&mut message);
    if message.is_empty() {
        return Ok(step);
    }
    let _ = waitpid(step, None);
    Err(match message.trim_end().strip_prefix("exec ") {
        Some(reason) => SetupFailure::cannot_start(reason),
        None => SetupFailure::new(message.trim_end()),
    })
}
