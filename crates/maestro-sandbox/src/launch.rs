//! The caller's side of the launcher (see `launcher.rs`): starting the helper, asking it for a
//! shim, and the shim it started, which stands in for the `Child` an executed shim would be.

use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;

use crate::SandboxError;
use crate::control::{Control, channel};
use crate::launcher::{EXITED, FAILED, MAX_PAYLOAD_BYTES, RECORD_BYTES, REQUEST_FDS, STARTED};
use crate::plan::SandboxPlan;

/// How long sending a request may block: the helper reads at once, so only a wedged helper
/// makes it wait, and then the step fails instead of holding the caller's thread.
const SEND_WITHIN: Duration = Duration::from_secs(10);

/// A running launcher: forks a shim per [`Launcher::launch`].
///
/// Dropping it closes the request socket: the helper then kills every shim it started (with
/// their steps) and exits.
#[derive(Debug)]
pub struct Launcher {
    requests: Mutex<UnixStream>,
    /// Set once the helper failed to take or answer a request: it is gone or wedged, and its
    /// request stream may be out of step. A failure on this side (no descriptors left for a
    /// step's pipes) does not set it: the helper and its running steps are fine.
    broken: AtomicBool,
    /// Kept so that tokio reaps the helper once it has exited.
    helper: tokio::process::Child,
}

impl Launcher {
    /// Starts the helper: `program` with `args` (`mc` with its hidden launcher argument, or
    /// this crate's shim binary with `--launcher`), with an empty environment and stdout, the
    /// caller's stderr, in a process group of its own. Call it inside a tokio runtime.
    pub fn start(program: &Path, args: &[&str]) -> Result<Launcher, SandboxError> {
        let (ours, theirs) = UnixStream::pair().map_err(|source| SandboxError::Io {
            what: "cannot create the launcher's socket",
            source,
        })?;
        let helper = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Out of the caller's process group: a terminal's job-control signals are for the
            // caller (see `launcher.rs` for the stop signals).
            .process_group(0)
            .spawn()
            .map_err(|source| SandboxError::Io {
                what: "cannot start the sandbox launcher",
                source,
            })?;
        ours.set_write_timeout(Some(SEND_WITHIN))
            .map_err(|source| SandboxError::Io {
                what: "cannot prepare the launcher's socket",
                source,
            })?;
        Ok(Launcher {
            requests: Mutex::new(ours),
            broken: AtomicBool::new(false),
            helper,
        })
    }

    /// False once the helper failed to take or answer a request (see [`Launcher::launch`]):
    /// start another. Dropping this one stops whatever it still runs.
    pub fn is_usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }

    /// The helper's pid, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.helper.id()
    }

    /// Forks a shim for `plan` with `environment` (all of it: the shim inherits nothing else),
    /// and the channel to it. The shim is the leader of its own process group, as an executed
    /// shim with `process_group(0)` would be. When the helper failed (it is gone), the error is
    /// [`SandboxError::Io`] or [`SandboxError::Vanished`] and [`Launcher::is_usable`] turns
    /// false.
    pub async fn launch<'a>(
        &self,
        plan: &SandboxPlan,
        environment: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
    ) -> Result<(Launched, Control), SandboxError> {
        let io =
            |what: &'static str| move |source: std::io::Error| SandboxError::Io { what, source };
        let (control_theirs, control) = channel(plan)?;
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|error| io("cannot create the step's output pipes")(error.into()))
        };
        let (stdout, stdout_theirs) = pipe()?;
        let (stderr, stderr_theirs) = pipe()?;
        let (reply, reply_theirs) =
            UnixStream::pair().map_err(io("cannot create the launcher's reply socket"))?;
        let mut payload = Vec::new();
        for (name, value) in environment {
            payload.extend_from_slice(name.as_bytes());
            payload.push(b'=');
            payload.extend_from_slice(value.as_bytes());
            payload.push(0);
        }
        let length = u32::try_from(payload.len())
            .ok()
            .filter(|length| *length <= MAX_PAYLOAD_BYTES)
            .ok_or_else(|| SandboxError::InvalidPlan {
                message: format!("an environment of {} bytes is too large", payload.len()),
            })?;
        let broken = |error: SandboxError| {
            self.broken.store(true, Ordering::Relaxed);
            error
        };
        {
            let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            let fds: [RawFd; REQUEST_FDS] = [
                control_theirs.as_raw_fd(),
                stdout_theirs.as_raw_fd(),
                stderr_theirs.as_raw_fd(),
                reply_theirs.as_raw_fd(),
            ];
            let header = length.to_le_bytes();
            let sent = sendmsg::<()>(
                requests.as_raw_fd(),
                &[IoSlice::new(&header)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(|errno| broken(io("cannot reach the sandbox launcher")(errno.into())))?;
            if sent != header.len() {
                return Err(broken(SandboxError::Protocol {
                    message: "a request to the launcher was cut short".to_owned(),
                }));
            }
            (&*requests)
                .write_all(&payload)
                .map_err(|error| broken(io("cannot reach the sandbox launcher")(error)))?;
        }
        // The helper has its copies now; ours must go, or the step's end is never seen.
        drop((control_theirs, stdout_theirs, stderr_theirs, reply_theirs));
        reply
            .set_nonblocking(true)
            .map_err(io("cannot prepare the launcher's reply socket"))?;
        let mut reply = tokio::net::UnixStream::from_std(reply).map_err(io(
            "cannot attach the launcher's reply socket to the runtime",
        ))?;
        let (first, pidfd) = receive_first(&mut reply).await.map_err(broken)?;
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
                return Err(SandboxError::Protocol {
                    message: format!("the launcher answered {kind} {value}"),
                });
            }
        };
        let receiver = |fd: OwnedFd| {
            pipe::Receiver::from_owned_fd(fd)
                .map_err(io("cannot attach the step's output to the runtime"))
        };
        Ok((
            Launched {
                pid: value.unsigned_abs(),
                pidfd,
                reply,
                record: [0; RECORD_BYTES],
                filled: 0,
                status: None,
                stdout: Some(receiver(stdout)?),
                stderr: Some(receiver(stderr)?),
            },
            control,
        ))
    }
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
            .map_err(|source| SandboxError::Io {
                what: "cannot read the launcher's answer",
                source,
            })?;
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
/// reaps it. Dropped before its exit was seen, it is killed (as `kill_on_drop` would).
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
