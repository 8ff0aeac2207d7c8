//! The caller's side of the launcher (see `launcher.rs`): starting the helper, asking it for a
//! shim, and the shim it started, which stands in for the `Child` an executed shim would be.

use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;

use crate::SandboxError;
use crate::control::{Control, channel};
use crate::launcher::{EXITED, FAILED, RECORD_BYTES, REQUEST, REQUEST_FDS, STARTED};
use crate::plan::SandboxPlan;

/// How long the helper may take to take a request and answer it with the shim's pid: it forks
/// at once, so only a wedged helper is slower, and it is then replaced.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A running launcher: forks a shim per [`Launcher::launch`].
///
/// The helper runs until this value and every [`Launched`] shim it started are dropped; then its
/// request socket closes, and it kills whatever it still runs and exits (so does a caller that
/// dies, by any death).
#[derive(Debug)]
pub struct Launcher {
    helper: Arc<Helper>,
}

#[derive(Debug)]
struct Helper {
    /// A `SOCK_SEQPACKET` socket: each request is one message, taken whole or not at all.
    requests: AsyncFd<OwnedFd>,
    /// Set once the helper failed to take or answer a request: it is gone or wedged. A failure
    /// on this side (no descriptor left for the step's pipes) does not set it.
    broken: AtomicBool,
    /// Kept so that the helper is reaped once it has exited.
    process: HelperProcess,
}

/// How the helper came to be, which says how it is reaped.
#[derive(Debug)]
enum HelperProcess {
    /// Executed ([`Launcher::start`]): tokio reaps it.
    Spawned(tokio::process::Child),
    /// Forked from this process ([`Launcher::fork`]).
    Forked(ForkedHelper),
}

/// The pid of a helper forked from this process. Dropped (after its owner's request socket, the
/// field before this one, closed: so it is exiting), it is reaped if it has exited, else kept
/// for [`Launcher::reap_forked`]: nobody waits for it here.
#[derive(Debug)]
struct ForkedHelper(nix::unistd::Pid);

/// How long [`Launcher::reap_forked`] waits for a helper's exit. Once its socket has closed and
/// no shim of it is held, it has nothing left but to stop and exit: well under a millisecond.
const FORKED_EXIT_WITHIN: Duration = Duration::from_millis(100);

/// Forked helpers let go of and not reaped yet, by pidfd (so that reaping can never reach a
/// process that took the number of one reaped elsewhere).
static UNREAPED: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// Reaps the helper `pidfd` names if it has exited; whether it has.
fn reap_if_exited(pidfd: &OwnedFd) -> bool {
    match rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    ) {
        Ok(Some(_)) => true,
        // Still running (`None`); or not a child of ours any more: nothing to wait for.
        Ok(None) => false,
        Err(_) => true,
    }
}

impl Drop for ForkedHelper {
    fn drop(&mut self) {
        let Some(pidfd) = rustix::process::Pid::from_raw(self.0.as_raw()).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        }) else {
            return;
        };
        if !reap_if_exited(&pidfd) {
            UNREAPED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(pidfd);
        }
    }
}

/// A launcher's helper forked from the calling program itself, early, while it had one thread
/// ([`Launcher::fork`]); it becomes a [`Launcher`] inside a tokio runtime
/// ([`Launcher::adopt`]). Dropped unused, its helper exits (reap it with
/// [`Launcher::reap_forked`]).
#[derive(Debug)]
pub struct ForkedLauncher {
    requests: OwnedFd,
    helper: ForkedHelper,
}

impl Helper {
    fn broken(&self, error: SandboxError) -> SandboxError {
        self.broken.store(true, Ordering::Relaxed);
        error
    }
}

impl Launcher {
    /// Starts the helper: `program` with `args` (`mc` with its hidden launcher argument, or
    /// this crate's shim binary with `--launcher`), with an empty environment and stdout, the
    /// caller's stderr, in a process group of its own. Call it inside a tokio runtime.
    pub fn start(program: &Path, args: &[&str]) -> Result<Launcher, SandboxError> {
        let io =
            |what: &'static str| move |source: std::io::Error| SandboxError::Io { what, source };
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|errno| io("cannot create the launcher's socket")(errno.into()))?;
        rustix::io::ioctl_fionbio(&ours, true)
            .map_err(|errno| io("cannot prepare the launcher's socket")(errno.into()))?;
        let requests =
            crate::sys::async_fd(ours).map_err(io("cannot attach the launcher's socket"))?;
        let process = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Out of the caller's process group: a terminal's job-control signals are for the
            // caller (see `launcher.rs` for the stop signals).
            .process_group(0)
            .spawn()
            .map_err(io("cannot start the sandbox launcher"))?;
        Ok(Launcher {
            helper: Arc::new(Helper {
                requests,
                broken: AtomicBool::new(false),
                process: HelperProcess::Spawned(process),
            }),
        })
    }

    /// Forks the helper from this process instead of executing a program: for a short-lived
    /// caller (one `mc submit`), whose shims then cost a fork each instead of the execution of
    /// a large program (see `docs/benchmarks.md`). Call it first thing in `main`: it refuses
    /// (`SandboxError::Io`, `EBUSY`) once the process has more than one thread, as a forked
    /// child of a multi-threaded process may not run ordinary code. The helper holds a copy of
    /// this process's memory as it is at the call (every page this process writes afterwards
    /// is copied while the helper lives: the earlier the call, the cheaper), with an empty
    /// environment and `SIGCHLD` at its default disposition (as this process then has too). It
    /// ends when the returned value, or the [`Launcher`] it becomes, and every shim it started
    /// are dropped, or when this process dies; [`Launcher::reap_forked`] reaps it.
    pub fn fork() -> Result<ForkedLauncher, SandboxError> {
        let io = |what: &'static str| {
            move |errno: Errno| SandboxError::Io {
                what,
                source: errno.into(),
            }
        };
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io("cannot create the launcher's socket"))?;
        match crate::sys::fork_single_threaded().map_err(io("cannot fork the sandbox launcher"))? {
            crate::sys::Forked::Child => {
                // The helper must see its socket close when the caller lets go of it.
                drop(ours);
                crate::launcher::run_forked(theirs)
            }
            crate::sys::Forked::Parent(pid) => Ok(ForkedLauncher {
                requests: ours,
                helper: ForkedHelper(pid),
            }),
        }
    }

    /// Reaps the forked helpers ([`Launcher::fork`]) let go of, waiting for each to exit (at most
    /// 100 ms: it is exiting). Call it last thing before the program exits, once the launchers
    /// are dropped: a helper never reaped stays a zombie while the program lives, and is then
    /// the system's to reap. Dropping a launcher does not wait, so the helper exits while the
    /// program finishes its work.
    pub fn reap_forked() {
        let unreaped = std::mem::take(
            &mut *UNREAPED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for pidfd in unreaped {
            let mut fds = [nix::poll::PollFd::new(
                pidfd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let within = nix::poll::PollTimeout::try_from(FORKED_EXIT_WITHIN)
                .unwrap_or(nix::poll::PollTimeout::ZERO);
            let _ = nix::poll::poll(&mut fds, within);
            // Not exited by now (a wedged helper): the system reaps it once this process is gone.
            reap_if_exited(&pidfd);
        }
    }

    /// A forked helper ([`Launcher::fork`]) as a launcher. Call it inside a tokio runtime.
    pub fn adopt(forked: ForkedLauncher) -> Result<Launcher, SandboxError> {
        let io =
            |what: &'static str| move |source: std::io::Error| SandboxError::Io { what, source };
        let ForkedLauncher { requests, helper } = forked;
        rustix::io::ioctl_fionbio(&requests, true)
            .map_err(|errno| io("cannot prepare the launcher's socket")(errno.into()))?;
        let requests =
            crate::sys::async_fd(requests).map_err(io("cannot attach the launcher's socket"))?;
        Ok(Launcher {
            helper: Arc::new(Helper {
                requests,
                broken: AtomicBool::new(false),
                process: HelperProcess::Forked(helper),
            }),
        })
    }

    /// The helper's pid, while it runs.
    pub fn id(&self) -> Option<u32> {
        match &self.helper.process {
            HelperProcess::Spawned(child) => child.id(),
            HelperProcess::Forked(helper) => Some(helper.0.as_raw().unsigned_abs()),
        }
    }

    /// False once the helper failed to take or answer a request (see [`Launcher::launch`]):
    /// start another. The shims this one started keep it running until they end.
    pub fn is_usable(&self) -> bool {
        !self.helper.broken.load(Ordering::Relaxed)
    }

    /// Forks a shim for `plan` with `environment` (all of it: the shim inherits nothing else),
    /// and the channel to it. The shim is the leader of its own process group, as an executed
    /// shim with `process_group(0)` would be. When the helper failed (it is gone or wedged),
    /// the error is [`SandboxError::Io`] or [`SandboxError::Vanished`] and
    /// [`Launcher::is_usable`] turns false; a failure on this side (no descriptors left) leaves
    /// it usable.
    pub async fn launch<'a>(
        &self,
        plan: &SandboxPlan,
        environment: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
    ) -> Result<(Launched, Control), SandboxError> {
        let io =
            |what: &'static str| move |source: std::io::Error| SandboxError::Io { what, source };
        let environment = environment_file(environment)?;
        let (control_theirs, control) = channel(plan)?;
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|errno| io("cannot create the step's output pipes")(errno.into()))
        };
        let (stdout, stdout_theirs) = pipe()?;
        let (stderr, stderr_theirs) = pipe()?;
        let (reply, reply_theirs) =
            UnixStream::pair().map_err(io("cannot create the launcher's reply socket"))?;
        let fds: [RawFd; REQUEST_FDS] = [
            control_theirs.as_raw_fd(),
            stdout_theirs.as_raw_fd(),
            stderr_theirs.as_raw_fd(),
            reply_theirs.as_raw_fd(),
            environment.as_raw_fd(),
        ];
        let helper = &self.helper;
        let send = |socket: RawFd| {
            sendmsg::<()>(
                socket,
                &[IoSlice::new(&REQUEST)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        };
        // Tried at once: the runtime learns that a new request socket is writable only at its
        // next turn, and a caller that has a shim built ahead of time (a held plan) wants the
        // request on its way before it goes on with its own work.
        let sent = match send(helper.requests.as_raw_fd()) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                let ready = helper
                    .requests
                    .async_io(Interest::WRITABLE, |socket| send(socket.as_raw_fd()));
                tokio::time::timeout(ANSWER_WITHIN, ready).await
            }
            done => Ok(done),
        };
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                let gone = matches!(
                    Errno::from_raw(error.raw_os_error().unwrap_or(0)),
                    Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN
                );
                let error = io("cannot reach the sandbox launcher")(error);
                return Err(if gone { helper.broken(error) } else { error });
            }
            Err(_) => {
                return Err(helper.broken(SandboxError::Io {
                    what: "the sandbox launcher takes no request",
                    source: std::io::ErrorKind::TimedOut.into(),
                }));
            }
        }
        // The helper has its copies now; ours must go, or the step's end is never seen.
        drop((
            control_theirs,
            stdout_theirs,
            stderr_theirs,
            reply_theirs,
            environment,
        ));
        reply
            .set_nonblocking(true)
            .map_err(io("cannot prepare the launcher's reply socket"))?;
        let mut reply = tokio::net::UnixStream::from_std(reply).map_err(io(
            "cannot attach the launcher's reply socket to the runtime",
        ))?;
        let (first, pidfd) =
            match tokio::time::timeout(ANSWER_WITHIN, receive_first(&mut reply)).await {
                Ok(Ok(answer)) => answer,
                // The helper closed the reply unanswered: it is gone, or it could not take the
                // request whole (it is out of descriptors); either way, a new one takes over.
                Ok(Err(error @ (SandboxError::Vanished | SandboxError::Protocol { .. }))) => {
                    return Err(helper.broken(error));
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(helper.broken(SandboxError::Io {
                        what: "the sandbox launcher did not answer",
                        source: std::io::ErrorKind::TimedOut.into(),
                    }));
                }
            };
        let (kind, value) = parse(&first);
        let pidfd = match (kind, pidfd) {
            (STARTED, Some(pidfd)) if value > 0 => pidfd,
            (FAILED, _) => {
                return Err(SandboxError::Io {
                    what: "the sandbox launcher cannot fork the shim",
                    source: std::io::Error::from_raw_os_error(value),
                });
            }
            _ => {
                return Err(helper.broken(SandboxError::Protocol {
                    message: format!("the launcher answered {kind} {value}"),
                }));
            }
        };
        let receiver = |fd: OwnedFd| {
            pipe::Receiver::from_owned_fd(fd)
                .map_err(io("cannot attach the step's output to the runtime"))
        };
        // From here on a failure drops `launched`, which kills the shim.
        let mut launched = Launched {
            pid: value.unsigned_abs(),
            pidfd,
            reply,
            record: [0; RECORD_BYTES],
            filled: 0,
            status: None,
            stdout: None,
            stderr: None,
            _helper: Arc::clone(helper),
        };
        launched.stdout = Some(receiver(stdout)?);
        launched.stderr = Some(receiver(stderr)?);
        Ok((launched, control))
    }
}

/// The environment as `NAME=value` entries, each ended by a NUL byte, in an anonymous memory
/// file (the helper passes it on unread; the forked shim reads it). A NUL inside a name or a
/// value, or an `=` or nothing in a name, is refused, as `std::process::Command` refuses them.
fn environment_file<'a>(
    environment: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
) -> Result<OwnedFd, SandboxError> {
    let mut payload = Vec::new();
    for (name, value) in environment {
        let (name, value) = (name.as_bytes(), value.as_bytes());
        if name.is_empty() || name.contains(&b'=') || name.contains(&0) || value.contains(&0) {
            return Err(SandboxError::InvalidPlan {
                message: format!(
                    "the environment variable {:?} cannot be passed (an empty name, or `=` or a NUL byte where none may be)",
                    String::from_utf8_lossy(name)
                ),
            });
        }
        payload.extend_from_slice(name);
        payload.push(b'=');
        payload.extend_from_slice(value);
        payload.push(0);
    }
    let io = |source: std::io::Error| SandboxError::Io {
        what: "cannot pass the step's environment to the launcher",
        source,
    };
    let memfd =
        rustix::fs::memfd_create("maestro-step-environment", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|errno| io(errno.into()))?;
    let mut file = std::fs::File::from(memfd);
    file.write_all(&payload).map_err(io)?;
    file.rewind().map_err(io)?;
    Ok(OwnedFd::from(file))
}

/// Reads the first reply record and the descriptor that may come with it.
async fn receive_first(
    reply: &mut tokio::net::UnixStream,
) -> Result<([u8; RECORD_BYTES], Option<OwnedFd>), SandboxError> {
    let mut record = [0u8; RECORD_BYTES];
    let (count, fd) = reply
        .async_io(Interest::READABLE, || {
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let mut iov = [IoSliceMut::new(&mut record)];
            let message = recvmsg::<()>(
                reply.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            let mut fd = None;
            // A descriptor this process could not take (it has none left) is an error here,
            // not the launcher's fault.
            for control in message.cmsgs()? {
                if let ControlMessageOwned::ScmRights(received) = control {
                    for owned in crate::sys::own_received(received) {
                        fd.get_or_insert(owned);
                    }
                }
            }
            Ok((message.bytes, fd))
        })
        .await
        .map_err(|source| SandboxError::Io {
            what: "cannot read the launcher's answer",
            source,
        })?;
    if count == 0 {
        return Err(SandboxError::Vanished);
    }
    if count < RECORD_BYTES {
        reply
            .read_exact(&mut record[count..])
            .await
            .map_err(|_| SandboxError::Vanished)?;
    }
    Ok((record, fd))
}

fn parse(record: &[u8; RECORD_BYTES]) -> (i32, i32) {
    let mut kind = [0u8; 4];
    let mut value = [0u8; 4];
    kind.copy_from_slice(&record[..4]);
    value.copy_from_slice(&record[4..]);
    (i32::from_le_bytes(kind), i32::from_le_bytes(value))
}

/// A shim the launcher forked: its pid, its output, and its exit status when the launcher
/// reaps it. Dropped before its exit was seen, it is killed (as `kill_on_drop` would). It keeps
/// its launcher running until it is dropped.
#[derive(Debug)]
pub struct Launched {
    pid: u32,
    pidfd: OwnedFd,
    reply: tokio::net::UnixStream,
    record: [u8; RECORD_BYTES],
    filled: usize,
    status: Option<ExitStatus>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    _helper: Arc<Helper>,
}

impl Launched {
    /// The shim's pid, which is also its process group's id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The read ends of the shim's stdout and stderr, once.
    pub fn take_output(&mut self) -> Option<(pipe::Receiver, pipe::Receiver)> {
        self.stdout.take().zip(self.stderr.take())
    }

    /// Waits for the shim's exit. Cancel-safe: a call dropped before it completes loses
    /// nothing, so it can be one branch of a `select!` among others.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        while self.filled < RECORD_BYTES {
            let count = self.reply.read(&mut self.record[self.filled..]).await?;
            if count == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the sandbox launcher ended before the shim did",
                ));
            }
            self.filled += count;
        }
        match parse(&self.record) {
            (EXITED, raw) => {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                Ok(status)
            }
            (kind, value) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the launcher answered {kind} {value} instead of an exit status"),
            )),
        }
    }

    /// Sends SIGKILL to the shim, unless it is known to have ended. Through its pidfd: never
    /// another process that took its pid.
    pub fn kill(&self) -> std::io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        rustix::process::pidfd_send_signal(self.pidfd.as_fd(), rustix::process::Signal::KILL)
            .map_err(std::io::Error::from)
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
