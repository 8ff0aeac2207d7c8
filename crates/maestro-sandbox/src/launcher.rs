//! The launcher: a long-lived, single-threaded helper that forks shims for a busy caller.
//!
//! Executing the shim costs a `mc` start per step: loading a large program, relocating it,
//! faulting its pages in. A caller that runs many steps (`mc serve`) starts this helper once
//! instead (`mc` with a hidden argument) and asks it for each step; the helper forks, and the
//! child becomes the shim in the state an executed shim would start in (its own process group,
//! the caller's control socket on stdin, the step's pipes on stdout and stderr, the step's
//! environment, no other descriptor of the helper's), then runs exactly the shim's code. Forking
//! a small single-threaded process that has already paid for its start saves about a fifth
//! of a sandbox's CPU (see `docs/benchmarks.md`).
//!
//! The helper is sound to fork for the reason the shim is (`sys.rs`): it never starts a thread.
//! It lives as long as its caller holds its request socket (its stdin; the caller's `Launcher`
//! and every shim it started hold it): when the caller lets go of it or goes away (exits,
//! crashes, is SIGKILLed: the kernel closes the socket), the helper kills the process group of
//! every shim still running and exits. Each shim also has the helper as its
//! parent-death signal's parent, so a helper that is killed takes its shims down with it, and
//! each shim's own caller-death checks (the control socket) still apply.
//!
//! # Wire format
//!
//! Request, caller to helper, on the helper's stdin (a Unix `SOCK_SEQPACKET` socket, so that a
//! request is taken whole or not at all and the stream can never get out of step): one message
//! of the 4 bytes [`REQUEST`] with five descriptors (`SCM_RIGHTS`: control socket, stdout,
//! stderr, reply socket, and a memory file holding the shim's environment as `NAME=value`
//! entries, each ended by a NUL byte). The helper never reads that file: the forked shim does,
//! so no step's secrets stay in the helper's memory for later shims to inherit. Replies, helper
//! to caller, on the request's own reply socket, [`RECORD_BYTES`] each: `[STARTED, pid]` with a
//! pidfd of the shim, or `[FAILED, errno]`, then, once the shim has been reaped,
//! `[EXITED, raw wait status]`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::unistd::Pid;

use crate::sys::{self, Forked};

/// Bytes of one reply record: a kind and a value, both `i32` little-endian.
pub(crate) const RECORD_BYTES: usize = 8;
/// Reply: the shim was forked; the value is its pid, and a pidfd comes with it.
pub(crate) const STARTED: i32 = 1;
/// Reply: the fork failed; the value is the errno.
pub(crate) const FAILED: i32 = 2;
/// Reply: the shim was reaped; the value is its raw wait status.
pub(crate) const EXITED: i32 = 3;
/// The bytes of a request (its descriptors carry everything else).
pub(crate) const REQUEST: [u8; 4] = *b"MSL1";
/// Descriptors per request: control socket, stdout, stderr, reply socket, environment.
pub(crate) const REQUEST_FDS: usize = 5;

/// One reply record.
pub(crate) fn record(kind: i32, value: i32) -> [u8; RECORD_BYTES] {
    let mut bytes = [0u8; RECORD_BYTES];
    bytes[..4].copy_from_slice(&kind.to_le_bytes());
    bytes[4..].copy_from_slice(&value.to_le_bytes());
    bytes
}

/// A request as received.
struct Request {
    control: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    reply: UnixStream,
    environment: OwnedFd,
}

/// What one read of the request socket gave.
enum Received {
    Request(Request),
    /// A request that could not be taken whole (this process had no descriptors left for it,
    /// or it is not one); answered `FAILED` when its reply socket came through.
    Refused,
    /// The caller closed the socket, or died.
    End,
}

/// The helper's entry point; see [`crate::run_launcher`].
pub(crate) fn run() -> ! {
    match serve() {
        Ok(()) => std::process::exit(0),
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "maestro-sandbox launcher: {message}");
            std::process::exit(crate::SETUP_FAILED_EXIT_CODE)
        }
    }
}

/// The entry point of a helper forked from its caller (see `Launcher::fork`): takes on the state
/// `Launcher::start` gives an executed helper (requests on stdin, stdout on `/dev/null`, the
/// caller's stderr and nothing else open, its own process group, an empty environment and
/// signal mask), then serves. (Its copies of the caller's output buffers were empty at the fork,
/// and its stdout is `/dev/null`: exiting flushes nothing of the caller's.)
pub(crate) fn run_forked(requests: OwnedFd) -> ! {
    // This is `mc`'s own code on the stack below: nothing may unwind into it.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A helper that cannot set itself up ends quietly: its caller finds it gone at its first
        // request and starts an executed launcher, which says what is wrong (and a job without
        // a sandboxed step never asks).
        if take_on_executed_state(requests).is_err() {
            return crate::SETUP_FAILED_EXIT_CODE;
        }
        match serve() {
            Ok(()) => 0,
            Err(message) => {
                let _ = writeln!(std::io::stderr(), "maestro-sandbox launcher: {message}");
                crate::SETUP_FAILED_EXIT_CODE
            }
        }
    }));
    std::process::exit(code.unwrap_or(crate::SETUP_FAILED_EXIT_CODE))
}

/// [`run_forked`]'s setup: the state an executed helper starts in.
fn take_on_executed_state(requests: OwnedFd) -> Result<(), nix::errno::Errno> {
    // Rust's runtime opened `/dev/null` on any of 0, 1 and 2 the caller was started without,
    // so neither `requests` nor `null` is a standard descriptor that `drop` would close.
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|error| nix::errno::Errno::from_raw(error.raw_os_error().unwrap_or(0)))?;
    nix::unistd::dup2_stdin(&requests)?;
    nix::unistd::dup2_stdout(&null)?;
    drop((requests, null));
    sys::close_from_3()?;
    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    sys::replace_environment(Vec::new());
    sys::scrub_initial_environment();
    // What `ps` and `top` call it (the command line stays the caller's: it is a fork).
    let _ = nix::sys::prctl::set_name(c"maestro-launch");
    Ok(())
}

fn serve() -> Result<(), String> {
    // Shims' exits are read from a signalfd, which an ignored SIGCHLD (a disposition that
    // survives exec, as a parent may leave it) would keep silent: the kernel would reap them
    // unseen.
    sys::default_disposition(Signal::SIGCHLD)
        .map_err(|error| format!("cannot reset SIGCHLD: {error}"))?;
    let requests = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|error| format!("cannot use standard input: {error}"))?;
    // Room for the descriptors of many requests and running shims (a reply socket each); the
    // shims get the caller's limit back (`become_shim`).
    let descriptors = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|error| format!("cannot read the descriptor limit: {error}"))?;
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        descriptors.1,
        descriptors.1,
    );
    let mut children = SigSet::empty();
    children.add(Signal::SIGCHLD);
    // SIGCHLD is read from the signalfd. The stop signals are blocked for good: a terminal's
    // Ctrl-C or a supervisor's SIGTERM to every process of the service is for the caller, which
    // drains its running steps; the launcher ends when the caller does. (A forked shim starts
    // with an empty mask and no pending signal.)
    let mut blocked = children;
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        blocked.add(signal);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)
        .map_err(|error| format!("cannot block signals: {error}"))?;
    let exits = SignalFd::with_flags(&children, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|error| format!("cannot create a signalfd: {error}"))?;
    // A shim does not wait for its namespace's init (see `shim.rs`): once the shim is gone,
    // init is re-parented here and reaped below, not left to the caller.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|error| format!("cannot become a child subreaper: {error}"))?;
    let mut running: HashMap<Pid, UnixStream> = HashMap::new();
    loop {
        let (request_ready, exit_ready) = {
            let mut fds = [
                PollFd::new(requests.as_fd(), PollFlags::POLLIN),
                PollFd::new(exits.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(error) => {
                    stop_all(&running);
                    return Err(format!("cannot poll: {error}"));
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if exit_ready {
            while let Ok(Some(_)) = exits.read_signal() {}
            reap(&mut running);
        }
        if request_ready {
            match receive(&requests) {
                Ok(Received::Request(request)) => {
                    let inherited = Inherited {
                        requests: &requests,
                        exits: &exits,
                        descriptors,
                    };
                    launch(request, inherited, &mut running)
                }
                Ok(Received::Refused) => {}
                // The caller is gone: so are its steps.
                Ok(Received::End) => {
                    stop_all(&running);
                    return Ok(());
                }
                Err(message) => {
                    stop_all(&running);
                    return Err(message);
                }
            }
        }
    }
}

/// Reads one request.
fn receive(requests: &OwnedFd) -> Result<Received, String> {
    let mut header = [0u8; REQUEST.len()];
    let mut space = nix::cmsg_space!([RawFd; REQUEST_FDS]);
    let mut iov = [IoSliceMut::new(&mut header)];
    let message = match recvmsg::<()>(
        requests.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(message) => message,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return Ok(Received::Refused),
        Err(error) => return Err(format!("cannot read a request: {error}")),
    };
    let count = message.bytes;
    let truncated = message
        .flags
        .intersects(MsgFlags::MSG_CTRUNC | MsgFlags::MSG_TRUNC);
    let mut fds = Vec::new();
    if let Ok(controls) = message.cmsgs() {
        for control in controls {
            if let ControlMessageOwned::ScmRights(received) = control {
                fds.extend(sys::own_received(received));
            }
        }
    }
    if count == 0 && fds.is_empty() {
        return Ok(Received::End);
    }
    let Ok([control, stdout, stderr, reply, environment]) = <[OwnedFd; REQUEST_FDS]>::try_from(fds)
    else {
        // Whatever came is closed here; the caller sees its reply socket close unanswered.
        return Ok(Received::Refused);
    };
    let mut reply = UnixStream::from(reply);
    if truncated || header[..count.min(header.len())] != REQUEST[..] {
        let _ = reply.write_all(&record(FAILED, nix::errno::Errno::EPROTO as i32));
        return Ok(Received::Refused);
    }
    Ok(Received::Request(Request {
        control,
        stdout,
        stderr,
        reply,
        environment,
    }))
}

/// What of the helper a forked shim must close or undo.
#[derive(Clone, Copy)]
struct Inherited<'a> {
    requests: &'a OwnedFd,
    exits: &'a SignalFd,
    /// The descriptor limit the helper was started with (soft, hard).
    descriptors: (u64, u64),
}

/// Forks the shim of `request` and tells the caller its pid (or why there is none).
fn launch(request: Request, inherited: Inherited<'_>, running: &mut HashMap<Pid, UnixStream>) {
    let launcher = nix::unistd::getpid();
    match sys::fork() {
        Ok(Forked::Child) => {
            // Nothing of the helper's stays open in the shim: not the request socket, not the
            // signalfd, not the other shims' reply sockets.
            running.clear();
            // The child must never come back into the helper's loop, not even by a panic.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                become_shim(request, launcher, inherited)
            }));
            std::process::exit(crate::SETUP_FAILED_EXIT_CODE)
        }
        Ok(Forked::Parent(pid)) => {
            let Request { mut reply, .. } = request;
            // The pidfd lets the caller signal the shim without racing a reuse of its pid.
            let pidfd = rustix::process::Pid::from_raw(pid.as_raw())
                .ok_or(rustix::io::Errno::SRCH)
                .and_then(|pid| {
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                });
            let sent = match pidfd {
                Ok(pidfd) => send_with_fd(&reply, &record(STARTED, pid.as_raw()), pidfd.as_fd())
                    .map_err(|errno| errno as i32),
                Err(error) => {
                    let _ = reply.write_all(&record(FAILED, error.raw_os_error()));
                    Err(error.raw_os_error())
                }
            };
            if sent.is_ok() {
                running.insert(pid, reply);
            } else {
                // Nobody can wait for it (the caller gave up on the step): the shim goes
                // before it starts anything; it is reaped with the others.
                stop(pid);
            }
        }
        Err(errno) => {
            let Request { mut reply, .. } = request;
            let _ = reply.write_all(&record(FAILED, errno as i32));
        }
    }
}

/// In the forked child: takes on the executed shim's state, then runs the shim.
fn become_shim(request: Request, launcher: Pid, inherited: Inherited<'_>) -> ! {
    let fail = |what: &str, error: &dyn std::fmt::Display| -> ! {
        let _ = writeln!(std::io::stderr(), "maestro-sandbox: {what}: {error}");
        std::process::exit(crate::SETUP_FAILED_EXIT_CODE)
    };
    let Request {
        control,
        stdout,
        stderr,
        reply,
        environment,
    } = request;
    drop(reply);
    sys::close_in_child(inherited.exits.as_raw_fd());
    sys::close_in_child(inherited.requests.as_raw_fd());
    let (soft, hard) = inherited.descriptors;
    if let Err(error) =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
    {
        fail("cannot restore the descriptor limit", &error)
    }
    if let Err(error) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None) {
        fail("cannot reset the signal mask", &error)
    }
    if let Err(error) = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
        fail("cannot start a process group", &error)
    }
    // Dies with the helper (the helper, in turn, stops every shim when its caller goes away).
    if let Err(error) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        fail("cannot set the parent-death signal", &error)
    }
    if nix::unistd::getppid() != launcher {
        fail("the launcher", &"ended before the shim started")
    }
    // What `ps` calls it: a fork keeps the launcher's name.
    let _ = nix::sys::prctl::set_name(c"maestro-shim");
    let duplicated = nix::unistd::dup2_stderr(&stderr)
        .and_then(|()| nix::unistd::dup2_stdout(&stdout))
        .and_then(|()| nix::unistd::dup2_stdin(&control));
    if let Err(error) = duplicated {
        fail("cannot set up the shim's standard descriptors", &error)
    }
    drop((control, stdout, stderr));
    let mut text = Vec::new();
    if let Err(error) = std::fs::File::from(environment).read_to_end(&mut text) {
        fail("cannot read the step's environment", &error)
    }
    let variables = text
        .split(|&byte| byte == 0)
        .filter_map(|entry| {
            let split = entry.iter().position(|&byte| byte == b'=')?;
            Some((
                OsString::from_vec(entry[..split].to_vec()),
                OsString::from_vec(entry[split + 1..].to_vec()),
            ))
        })
        .collect();
    sys::replace_environment(variables);
    crate::shim::run(std::iter::empty())
}

/// Sends `bytes` with `fd` attached.
fn send_with_fd(
    reply: &UnixStream,
    bytes: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> nix::Result<()> {
    let fds = [fd.as_raw_fd()];
    let control = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(bytes)];
    let sent = nix::sys::socket::sendmsg::<()>(
        reply.as_raw_fd(),
        &iov,
        &control,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent == bytes.len() {
        Ok(())
    } else {
        Err(nix::errno::Errno::EMSGSIZE)
    }
}

/// Reaps every child that has ended; a shim's caller gets its wait status.
fn reap(running: &mut HashMap<Pid, UnixStream>) {
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                if let Some(mut reply) = running.remove(&Pid::from_raw(pid.as_raw_nonzero().get()))
                {
                    // A caller that is gone has nobody to tell.
                    let _ = reply.write_all(&record(EXITED, status.as_raw()));
                }
            }
            // No child has ended (`None`), or there is no child at all.
            Ok(None) | Err(_) => return,
        }
    }
}

/// Kills the process group of every running shim: its step and the step's sandbox with it.
fn stop_all(running: &HashMap<Pid, UnixStream>) {
    for pid in running.keys() {
        stop(*pid);
    }
}

/// SIGKILL to the shim `pid` and its process group (which a shim that has only just been forked
/// may not lead yet): init and the step go with it (init's parent-death signal, then the kernel's
/// zap of the PID namespace), and so does anything of the step left in the group.
fn stop(pid: Pid) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
}
