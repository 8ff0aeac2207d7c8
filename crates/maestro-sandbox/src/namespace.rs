//! The namespace's init (pid 1): sets the sandbox up, starts the step, reaps, reports.
//!
//! When init exits the kernel SIGKILLs every process left in the PID namespace, whatever it did
//! to get away (`setsid`, double forks, a cleared environment): that is the teardown.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::failure::{Context, SetupFailure, one_line};
use crate::plan::{HostEnvironment, NetworkMode, SandboxPlan};
use crate::sys::{self, Forked};
use crate::{SETUP_FAILED_EXIT_CODE, confine, mounts, netlink};

/// The hostname a step sees.
pub(crate) const HOSTNAME: &str = "maestro-sandbox";

/// Runs as pid 1 of the new PID namespace; `status` is the pipe to the outer shim.
pub(crate) fn run_init(plan: &SandboxPlan, environment: &HostEnvironment, status: OwnedFd) -> ! {
    let mut status = File::from(status);
    // The outer shim is in another PID namespace, so this signal is delivered even to an init.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let step = match prepare(plan, environment).and_then(|()| start_step(plan)) {
        Ok(step) => step,
        Err(failure) => {
            let kind = if failure.cannot_start {
                "cannot-start"
            } else {
                "setup"
            };
            let _ = writeln!(status, "{kind} {}", one_line(&failure.message));
            std::process::exit(SETUP_FAILED_EXIT_CODE)
        }
    };
    // The namespace's inode names it for the shim's teardown check (the shim cannot read it
    // itself without racing init's exit).
    let inode = std::fs::metadata("/proc/self/ns/pid").map_or(0, |metadata| metadata.ino());
    let _ = writeln!(status, "started {inode}");
    // Reap every process that ends up as init's child (orphans are re-parented here) until the
    // step's own process ends; then report it and leave, which ends all the others.
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == step => {
                let _ = writeln!(status, "exit {code}");
                break;
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == step => {
                let _ = writeln!(status, "signal {}", signal as i32);
                break;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    std::process::exit(0)
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

/// Forks the step and waits until it has exec'd its program, or failed to confine itself.
///
/// The step holds the write end of a close-on-exec pipe: end of file with nothing read means
/// the exec happened (or the program could not be found, which the step reports itself with
/// exit code 127, like a shell); a line means confinement failed and nothing ran, or, with
/// the prefix `exec `, that the program could not be executed.
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
