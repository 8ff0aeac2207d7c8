//! The shim's outer process: namespaces, the namespace's init, supervision, the report.
//!
//! The shim runs as a freshly exec'd program (`mc` itself, or this crate's
//! `maestro-sandbox-shim`) and never starts a thread: that is what lets it fork and run Rust
//! code in the children (see `sys.rs`). It does as little as it can on the way to the step's
//! `exec`: one read of the plan, two `unshare` (user, then PID: the shim itself stays in the
//! host's mount namespace), three small writes under `/proc/self`, one fork for the namespace's
//! init and one (in init) for the step. After the step, init kills and reaps every other
//! process of the namespace and says so; the shim then reports and exits without waiting for
//! init's own exit, which tears the mounts down (see `supervise`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, getgid, getuid};

use crate::failure::{Context, FailureKind, SetupFailure, one_line};
use crate::plan::{HostEnvironment, SandboxPlan};
use crate::report::{ExitKind, Message, Report, TeardownReport};
use crate::sys::{self, Forked};
use crate::{SETUP_FAILED_EXIT_CODE, namespace};

/// The longest plan the shim accepts, in bytes: a guard against a caller that never sends a
/// newline.
const MAX_PLAN_BYTES: u64 = 4 * 1024 * 1024;

/// Signals the shim must survive: a caller that sends SIGTERM to the process group means it
/// for the step (which is in the group too, and may stop gracefully), and the shim has to stay
/// alive to report how the step ended.
const SURVIVED_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// The shim's stdin: the caller's control socket, or a plain file or pipe when the shim is run
/// by hand (`maestro-sandbox-shim < plan.json`, as the benchmark does).
struct Channel {
    stream: Option<UnixStream>,
    input: OwnedFd,
    /// Where the plan comes from when it is not the control channel (`--plan-file`).
    plan_file: Option<OsString>,
}

impl Channel {
    fn from_stdin(plan_file: Option<OsString>) -> Result<Channel, SetupFailure> {
        let input = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context(|| "cannot use standard input as the control channel".to_owned())?;
        let is_socket = nix::sys::stat::fstat(&input)
            .map(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFSOCK)
            .unwrap_or(false);
        let stream = if is_socket {
            Some(UnixStream::from(input.try_clone().context(|| {
                "cannot duplicate the control socket".to_owned()
            })?))
        } else {
            None
        };
        Ok(Channel {
            stream,
            input,
            plan_file,
        })
    }

    /// Reads the plan, and whatever the caller sent after it (its `go` for a held plan may
    /// already be there): no byte past the plan's line is lost, as a buffered reader would.
    fn read_plan(&self) -> Result<(SandboxPlan, Vec<u8>), SetupFailure> {
        if let Some(path) = &self.plan_file {
            let text = std::fs::read(path)
                .context(|| format!("cannot read the plan file {}", Path::new(path).display()))?;
            let plan = serde_json::from_slice(&text)
                .context(|| "cannot parse the sandbox plan".to_owned())?;
            return Ok((plan, Vec::new()));
        }
        let mut reader = File::from(
            self.input
                .try_clone()
                .context(|| "cannot duplicate standard input".to_owned())?,
        );
        let mut received = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            let searched = received.len();
            let count = match reader.read(&mut chunk) {
                Ok(count) => count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(SetupFailure::new(format!(
                        "cannot read the sandbox plan: {error}"
                    )));
                }
            };
            if count == 0 {
                break received.len();
            }
            received.extend_from_slice(&chunk[..count]);
            if let Some(at) = received[searched..].iter().position(|&byte| byte == b'\n') {
                break searched + at;
            }
            if received.len() as u64 > MAX_PLAN_BYTES {
                return Err(SetupFailure::new(format!(
                    "cannot parse the sandbox plan: it is longer than {MAX_PLAN_BYTES} bytes"
                )));
            }
        };
        let rest = received.split_off((end + 1).min(received.len()));
        let plan = serde_json::from_slice(&received)
            .context(|| "cannot parse the sandbox plan".to_owned())?;
        Ok((plan, rest))
    }

    /// Sends one message; a caller that went away is not an error (there is no one to tell).
    fn send(&self, message: &Message) {
        if let Some(mut stream) = self.stream.as_ref() {
            let mut line = serde_json::to_vec(message).unwrap_or_default();
            line.push(b'\n');
            let _ = stream.write_all(&line);
        }
    }
}

/// The shim's entry point; see [`crate::run_shim`].
pub(crate) fn run(mut args: impl Iterator<Item = OsString>) -> ! {
    // `--plan-file PATH` reads the plan from a file, for running the shim by hand or from a
    // benchmark; without it (as `mc` runs it) the plan comes on the control socket.
    let plan_file = match args.next() {
        Some(flag) if flag == "--plan-file" => args.next(),
        _ => None,
    };
    let channel = match Channel::from_stdin(plan_file) {
        Ok(channel) => channel,
        Err(failure) => {
            let _ = writeln!(std::io::stderr(), "maestro-sandbox: {failure}");
            std::process::exit(SETUP_FAILED_EXIT_CODE)
        }
    };
    match supervise(&channel) {
        Ok((report, status)) => {
            channel.send(&Message::Finished(report));
            mirror(status)
        }
        Err(failure) if failure.kind == FailureKind::Refused => {
            channel.send(&Message::Refused {
                message: one_line(&failure.message),
            });
            if channel.stream.is_none() {
                let _ = writeln!(std::io::stderr(), "maestro-sandbox: {failure}");
            }
            std::process::exit(SETUP_FAILED_EXIT_CODE)
        }
        Err(failure) if failure.kind == FailureKind::CannotStart => {
            channel.send(&Message::CannotStart {
                message: one_line(&failure.message),
            });
            if channel.stream.is_none() {
                let _ = writeln!(std::io::stderr(), "maestro-sandbox: {failure}");
            }
            std::process::exit(crate::confine::EXEC_FAILED_EXIT_CODE)
        }
        Err(failure) => {
            channel.send(&Message::Setup {
                message: one_line(&failure.message),
            });
            // Only a caller that does not read the socket (a person at a terminal) needs it
            // on stderr too.
            if channel.stream.is_none() {
                let _ = writeln!(std::io::stderr(), "maestro-sandbox: {failure}");
            }
            std::process::exit(SETUP_FAILED_EXIT_CODE)
        }
    }
}

/// Everything between reading the plan and the end of the namespace's init.
fn supervise(channel: &Channel) -> Result<(Report, Option<ExitKind>), SetupFailure> {
    let (plan, from_caller) = channel.read_plan()?;
    if plan.argv.is_empty() {
        return Err(SetupFailure::new("the sandbox plan has an empty argv"));
    }
    let mut survived = SigSet::empty();
    for signal in SURVIVED_SIGNALS {
        survived.add(signal);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&survived), None)
        .context(|| "cannot block termination signals in the shim".to_owned())?;
    // If the caller dies without closing the socket (it cannot, it is dead: the kernel closes
    // it), the HUP below already catches it; PDEATHSIG also covers a caller that is SIGKILLed
    // while the shim is still reading the plan. It fires when the caller's *thread* that
    // spawned the shim exits, which is why the caller must spawn from a long-lived thread.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .context(|| "cannot set the shim's parent-death signal".to_owned())?;

    let environment = plan
        .host
        .clone()
        .unwrap_or_else(HostEnvironment::from_process);
    enter_namespaces()?;
    // init -> shim, one per line: "started <pid namespace inode>", "setup <message>",
    // "cannot-start <message>", "exit <code>" or "signal <number>", then "empty" once init has
    // killed and reaped every other process of the namespace; end of file means init is gone.
    let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context(|| "cannot create the status pipe".to_owned())?;
    // shim -> init, for a held plan: one byte once the caller said `go`; end of file means the
    // shim is gone. Without a control socket there is no one to say it: the step starts at once.
    let go = if plan.hold && channel.stream.is_some() {
        Some(
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .context(|| "cannot create the start pipe".to_owned())?,
        )
    } else {
        None
    };
    let init = match sys::fork().context(|| "cannot fork the namespace's init".to_owned())? {
        Forked::Child => {
            drop(status_read);
            let go = go.map(|(read, write)| {
                drop(write);
                read
            });
            namespace::run_init(&plan, &environment, status_write, go)
        }
        Forked::Parent(init) => init,
    };
    drop(status_write);
    let go = go.map(|(read, write)| {
        drop(read);
        write
    });
    let watched = watch(channel, init, status_read, go, from_caller)?;
    if watched.emptied {
        // Init killed and reaped every other process of the namespace (see
        // `namespace::empty_namespace`) and is exiting now. It is not waited for: its exit
        // tears down the step's mounts and namespaces, which is the slow part of the end and
        // off the path between the step's end and the caller's. It cannot outlive the shim
        // (PDEATHSIG), and the kernel's zap of the namespace on its exit is the backstop.
        let teardown = TeardownReport {
            pid_namespace_inode: watched.pid_namespace_inode,
            verified: true,
            remaining: Vec::new(),
        };
        return Ok((
            Report {
                exit: watched.exit,
                teardown,
                unreaped_init: Some(init.as_raw()),
            },
            watched.exit,
        ));
    }
    // Init ended without saying the namespace was empty (it was killed, or could not reap):
    // wait for it and rely on the kernel, or look.
    let pid_namespace_inode = watched.pid_namespace_inode;
    let reaped = waitpid(init, None);
    let status = match reaped {
        Ok(WaitStatus::Exited(..)) => watched.exit,
        // Init itself was killed (the caller went away, or SIGKILLed the group): the step died
        // with it, whatever it reported.
        _ => None,
    };
    let teardown = match reaped {
        // The kernel's guarantee: when the init of a PID namespace exits, the kernel SIGKILLs
        // every other process of the namespace and waits until all of them are released
        // (`zap_pid_ns_processes`) before init can be waited for. So once init is reaped, the
        // namespace is empty and a scan of /proc could only confirm it.
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) if pid_namespace_inode != 0 => {
            TeardownReport {
                pid_namespace_inode,
                verified: true,
                remaining: Vec::new(),
            }
        }
        // Init could not be waited for: look.
        _ => verify_teardown(pid_namespace_inode, init.as_raw()),
    };
    Ok((
        Report {
            exit: status,
            teardown,
            unreaped_init: None,
        },
        status,
    ))
}

/// `unshare` the user namespace (mapping the caller's ids to themselves) and the PID namespace
/// (which only the shim's children enter). The mount, IPC, UTS (and network) namespaces are
/// init's own (`namespace::enter`): the shim stays out of them, so that its exit has no mounts
/// to tear down.
fn enter_namespaces() -> Result<(), SetupFailure> {
    let (uid, gid) = (getuid(), getgid());
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|errno| {
        let hint = match errno {
            nix::errno::Errno::EPERM => {
                " (kernel.unprivileged_userns_clone=0, or an AppArmor or seccomp policy?)"
            }
            nix::errno::Errno::ENOSPC => {
                " (user.max_user_namespaces reached, or nesting forbidden by an outer sandbox?)"
            }
            nix::errno::Errno::EINVAL => " (the shim is not single-threaded?)",
            _ => "",
        };
        SetupFailure::new(format!(
            "cannot create a user namespace: {}{hint}",
            errno.desc()
        ))
    })?;
    // A process that is not root in the parent namespace may only write its gid_map after
    // giving up setgroups(2) for good.
    std::fs::write("/proc/self/setgroups", b"deny")
        .context(|| "cannot write /proc/self/setgroups".to_owned())?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))
        .context(|| "cannot write /proc/self/uid_map".to_owned())?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
        .context(|| "cannot write /proc/self/gid_map".to_owned())?;
    unshare(CloneFlags::CLONE_NEWPID).context(|| "cannot create the PID namespace".to_owned())?;
    Ok(())
}

/// What init told the shim about the step.
struct Watched {
    /// How the step's main process ended, as init reported it.
    exit: Option<ExitKind>,
    /// The inode of the step's PID namespace, 0 if init never said.
    pid_namespace_inode: u64,
    /// Init reported that it killed and reaped every other process of the namespace.
    emptied: bool,
}

/// Waits until init reports the namespace empty (or ends without saying so) while watching
/// the caller: a caller that closes its end of the control socket (or dies) gets its sandbox
/// killed. For a held plan, `go` is the pipe on which init waits to start the step: it gets its
/// byte once the caller's `go` line arrives (`from_caller`: what came after the plan so far).
/// Returns what init reported, or the setup failure it reported.
fn watch(
    channel: &Channel,
    init: Pid,
    status_read: OwnedFd,
    mut go: Option<OwnedFd>,
    mut from_caller: Vec<u8>,
) -> Result<Watched, SetupFailure> {
    release_if_go(&mut go, &mut from_caller);
    let mut status_pipe = File::from(status_read);
    let mut received = Vec::new();
    let mut caller_open = channel.stream.is_some();
    let mut exit = None;
    let mut setup = None;
    let mut pid_namespace_inode = 0;
    let mut emptied = false;
    while !emptied {
        let mut buffer = [0u8; 512];
        let (status_ready, caller_gone) = {
            let mut fds = vec![PollFd::new(status_pipe.as_fd(), PollFlags::POLLIN)];
            if caller_open {
                fds.push(PollFd::new(channel.input.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(SetupFailure::new(format!(
                        "cannot wait for the sandbox: {}",
                        errno.desc()
                    )));
                }
            }
            let ready = |fd: &PollFd| !fd.revents().unwrap_or(PollFlags::empty()).is_empty();
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if caller_gone {
            // After the plan the caller sends only its `go` (for a held plan); anything else is
            // ignored. Nothing (end of file) or an error means it is gone.
            match nix::unistd::read(&channel.input, &mut buffer) {
                Ok(0) | Err(_) => {
                    caller_open = false;
                    let _ = kill(init, Signal::SIGKILL);
                }
                Ok(count) if go.is_some() => {
                    from_caller.extend_from_slice(&buffer[..count]);
                    release_if_go(&mut go, &mut from_caller);
                }
                Ok(_) => {}
            }
        }
        if status_ready {
            let count = status_pipe.read(&mut buffer).unwrap_or(0);
            if count == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..count]);
            while let Some(end) = received.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = received.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]);
                match line.split_once(' ').unwrap_or((&line, "")) {
                    ("started", inode) => {
                        pid_namespace_inode = inode.parse().unwrap_or(0);
                        channel.send(&Message::Started {
                            pid_namespace_inode,
                        })
                    }
                    ("setup", message) => setup = Some(SetupFailure::new(message)),
                    ("cannot-start", message) => setup = Some(SetupFailure::cannot_start(message)),
                    ("refused", message) => setup = Some(SetupFailure::refused(message)),
                    ("exit", code) => exit = code.parse().ok().map(ExitKind::Code),
                    ("signal", number) => exit = number.parse().ok().map(ExitKind::Signal),
                    ("empty", _) => emptied = true,
                    _ => {}
                }
            }
        }
    }
    match setup {
        Some(failure) => {
            let _ = waitpid(init, None);
            Err(failure)
        }
        None => Ok(Watched {
            exit,
            pid_namespace_inode,
            emptied,
        }),
    }
}

/// Lets init start the step once the caller's `go` line is among the bytes it sent after the
/// plan (init reads one byte from `go`; the pipe is closed after it either way).
fn release_if_go(go: &mut Option<OwnedFd>, from_caller: &mut Vec<u8>) {
    if go.is_none() {
        from_caller.clear();
        return;
    }
    if from_caller.windows(3).any(|window| window == b"go\n") {
        if let Some(pipe) = go.take() {
            let _ = nix::unistd::write(&pipe, b"g");
        }
        from_caller.clear();
    } else if from_caller.len() > 64 {
        // Not a `go` in sight after this much: keep only what may begin one.
        from_caller.drain(..from_caller.len() - 2);
    }
}

/// Scans `/proc` for processes still in the step's PID namespace; kills and lists any. Only
/// used when init could not be waited for (otherwise the kernel's guarantee holds).
///
/// Every process of the namespace was created after its init (host pid `init`), so while the
/// host's pids have not wrapped around since (`kernel.ns_last_pid` is still at least `init`),
/// only pids from `init` up are read: a handful, where reading all costs about a millisecond
/// per hundred processes. After a wrap-around every process is read.
pub(crate) fn verify_teardown(pid_namespace_inode: u64, init: i32) -> TeardownReport {
    if pid_namespace_inode == 0 {
        // Init was killed before it could name its namespace: nothing can be checked.
        return TeardownReport::default();
    }
    let wanted = format!("pid:[{pid_namespace_inode}]");
    let mut remaining = Vec::new();
    let mut scanned = false;
    let last_pid = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    let first = match last_pid {
        Some(last) if last >= init => init,
        _ => 0,
    };
    if let Ok(entries) = std::fs::read_dir("/proc") {
        scanned = true;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|name| name.parse::<i32>().ok()) else {
                continue;
            };
            if pid < first {
                continue;
            }
            // Processes of other users are unreadable (EACCES); they cannot be the step's,
            // which runs as the caller's own uid with no way to change it.
            let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
                continue;
            };
            if link.as_os_str() != wanted.as_str() {
                continue;
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            remaining.push(format!("pid {pid} ({})", command.trim()));
        }
    }
    TeardownReport {
        pid_namespace_inode,
        verified: scanned && remaining.is_empty(),
        remaining,
    }
}

/// Exits the way the step did, so that the caller's `wait` on the shim sees the step's status.
fn mirror(status: Option<ExitKind>) -> ! {
    match status {
        Some(ExitKind::Code(code)) => std::process::exit(code),
        Some(ExitKind::Signal(number)) => die_of(number),
        // The step died with its sandbox, killed for the caller: die the same way.
        None => die_of(Signal::SIGKILL as i32),
    }
}

/// Dies of signal `number`, without a core dump; exits 128 + number if the signal does not kill.
fn die_of(number: i32) -> ! {
    if let Ok(signal) = Signal::try_from(number) {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        let _ = sys::default_disposition(signal);
        let mut only = SigSet::empty();
        only.add(signal);
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
        let _ = nix::sys::signal::raise(signal);
    }
    std::process::exit(128 + number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_without_processes_verifies_and_the_scan_is_cheap() {
        // No namespace has inode 1: the scan reads every process and finds none.
        let start = std::time::Instant::now();
        let report = verify_teardown(1, 1);
        let elapsed = start.elapsed();
        let start = std::time::Instant::now();
        let recent = verify_teardown(1, nix::unistd::getpid().as_raw());
        eprintln!(
            "teardown scan of /proc: {elapsed:?} for all, {:?} from this pid up",
            start.elapsed()
        );
        assert!(recent.verified);
        assert!(report.verified && report.remaining.is_empty(), "{report:?}");
    }
}
