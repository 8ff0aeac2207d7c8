//! The caller's side: the shim's command and the control socket that carries plan and reports.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::SandboxError;
use crate::plan::SandboxPlan;
use crate::report::{Message, Report};

/// The caller's end of a sandboxed step's control socket.
///
/// Call [`Control::wait_started`] (which sends the plan) once the command is spawned, then
/// [`Control::finish`] once the shim has exited or is exiting.
#[derive(Debug)]
pub struct Control {
    state: State,
    plan: Vec<u8>,
    /// The plan is held ([`SandboxPlan::hold`]) and its `go` not sent yet.
    held: bool,
    pid_namespace_inode: Option<u64>,
    /// The setup failure (or refusal) already reported, returned again by `finish`.
    setup: Option<Failed>,
}

/// A sandbox that was not built, as the shim said it.
#[derive(Debug, Clone)]
enum Failed {
    /// The machine's failure.
    Setup(String),
    /// The step's own mistake.
    Refused(String),
}

impl Failed {
    fn error(self) -> SandboxError {
        match self {
            Failed::Setup(message) => SandboxError::Setup { message },
            Failed::Refused(message) => SandboxError::Refused { message },
        }
    }
}

#[derive(Debug)]
enum State {
    /// Not yet attached to the tokio runtime (that needs a runtime context).
    Std(std::os::unix::net::UnixStream),
    Tokio(BufReader<tokio::net::UnixStream>),
    /// Borrowed out while attaching, or after an I/O error.
    Gone,
}

/// The command that runs `plan` in the sandbox: `shim` with `shim_args` (for `mc`, the hidden
/// shim argument), its stdin the shim's end of the control socket.
///
/// The caller adds the environment, stdout and stderr, `process_group(0)`, then spawns it
/// (through `tokio::process::Command::from`) and drops the command: until it is dropped, it
/// holds a copy of the shim's end of the socket and [`Control::finish`] cannot see the end.
pub fn command(
    shim: &Path,
    shim_args: &[&str],
    plan: &SandboxPlan,
) -> Result<(Command, Control), SandboxError> {
    let (theirs, control) = channel(plan)?;
    let mut command = Command::new(shim);
    command.args(shim_args).stdin(Stdio::from(theirs));
    Ok((command, control))
}

/// The control socket for `plan`: the shim's end (its stdin) and the caller's [`Control`],
/// with the plan already written into it.
pub(crate) fn channel(plan: &SandboxPlan) -> Result<(OwnedFd, Control), SandboxError> {
    if plan.argv.is_empty() {
        return Err(SandboxError::InvalidPlan {
            message: "the command is empty".to_owned(),
        });
    }
    let mut line = serde_json::to_vec(plan).map_err(|error| SandboxError::InvalidPlan {
        message: error.to_string(),
    })?;
    line.push(b'\n');
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|source| SandboxError::Io {
            what: "cannot create the control socket",
            source,
        })?;
    // The plan goes into the socket now, before the shim exists: the shim finds it waiting
    // when it starts instead of waiting for the caller to see the spawn succeed and write it
    // (a round trip through the scheduler saved). A socket buffer holds hundreds of
    // kilobytes; whatever does not fit is sent by `send_plan` once the shim reads.
    ours.set_nonblocking(true)
        .map_err(|source| SandboxError::Io {
            what: "cannot prepare the control socket",
            source,
        })?;
    let written = match (&ours).write(&line) {
        Ok(count) => count,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(source) => {
            return Err(SandboxError::Io {
                what: "cannot send the plan to the shim",
                source,
            });
        }
    };
    line.drain(..written);
    Ok((
        OwnedFd::from(theirs),
        Control {
            state: State::Std(ours),
            plan: line,
            held: plan.hold,
            pid_namespace_inode: None,
            setup: None,
        },
    ))
}

impl Control {
    fn reader(&mut self) -> Result<&mut BufReader<tokio::net::UnixStream>, SandboxError> {
        if let State::Std(_) = self.state {
            let State::Std(stream) = std::mem::replace(&mut self.state, State::Gone) else {
                unreachable!("matched just above");
            };
            let attach = |stream: std::os::unix::net::UnixStream| {
                stream.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(stream)
            };
            let stream = attach(stream).map_err(|source| SandboxError::Io {
                what: "cannot attach the control socket to the runtime",
                source,
            })?;
            self.state = State::Tokio(BufReader::new(stream));
        }
        match &mut self.state {
            State::Tokio(reader) => Ok(reader),
            _ => Err(SandboxError::Vanished),
        }
    }

    /// Sends what is left of the plan (usually nothing: [`command`] writes it into the socket
    /// up front), once; [`Control::wait_started`] and [`Control::finish`] call it.
    pub async fn send_plan(&mut self) -> Result<(), SandboxError> {
        if self.plan.is_empty() {
            return Ok(());
        }
        let plan = std::mem::take(&mut self.plan);
        let reader = self.reader()?;
        reader
            .get_mut()
            .write_all(&plan)
            .await
            .map_err(|source| SandboxError::Io {
                what: "cannot send the plan to the shim",
                source,
            })
    }

    async fn next_message(&mut self) -> Result<Option<Message>, SandboxError> {
        let reader = self.reader()?;
        let mut line = String::new();
        let count = reader
            .read_line(&mut line)
            .await
            .map_err(|source| SandboxError::Io {
                what: "cannot read the shim's report",
                source,
            })?;
        if count == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|error| SandboxError::Protocol {
                message: format!("{error} in {:?}", line.trim_end()),
            })
    }

    /// Sends the plan (and, for a held plan, the `go` that lets the step start) and waits until
    /// the sandbox is set up and the step's program is being executed. A sandbox that could
    /// not be set up is [`SandboxError::Setup`]: the step never ran.
    pub async fn wait_started(&mut self) -> Result<(), SandboxError> {
        self.send_plan().await?;
        // A held sandbox that could not be built has already said why and gone: the `go` then
        // finds the socket closed, and the shim's message, still to be read, is the answer.
        let mut go_failed = None;
        if self.held {
            self.held = false;
            if let Err(source) = self.reader()?.get_mut().write_all(b"go\n").await {
                go_failed = Some(source);
            }
        }
        if self.pid_namespace_inode.is_some() {
            return Ok(());
        }
        let message = self.next_message().await;
        if let (Some(source), Err(_) | Ok(None)) = (go_failed, &message) {
            return Err(SandboxError::Io {
                what: "cannot tell the sandbox to start the step",
                source,
            });
        }
        match message? {
            Some(Message::Started {
                pid_namespace_inode,
            }) => {
                self.pid_namespace_inode = Some(pid_namespace_inode);
                Ok(())
            }
            Some(Message::Setup { message }) => {
                self.setup = Some(Failed::Setup(message.clone()));
                Err(SandboxError::Setup { message })
            }
            Some(Message::CannotStart { message }) => Err(SandboxError::CannotStart { message }),
            Some(Message::Refused { message }) => {
                self.setup = Some(Failed::Refused(message.clone()));
                Err(SandboxError::Refused { message })
            }
            Some(Message::Finished(_)) => Err(SandboxError::Protocol {
                message: "the shim finished before it started".to_owned(),
            }),
            None => Err(SandboxError::Vanished),
        }
    }

    /// The inode of the step's PID namespace, once started.
    pub fn pid_namespace_inode(&self) -> Option<u64> {
        self.pid_namespace_inode
    }

    /// Reads the shim's last report: how the step ended and whether its sandbox is empty.
    /// Call it once the shim has exited or is exiting; a shim that was killed has no report
    /// ([`SandboxError::Vanished`]).
    pub async fn finish(mut self) -> Result<Report, SandboxError> {
        if let Some(failed) = self.setup.take() {
            return Err(failed.error());
        }
        self.send_plan().await?;
        if self.held {
            // Never told to start: the end of what it hears from the caller has the shim tear
            // the sandbox down, and its report follows.
            let _ = self.reader()?.get_mut().shutdown().await;
        }
        loop {
            match self.next_message().await? {
                Some(Message::Started {
                    pid_namespace_inode,
                }) => self.pid_namespace_inode = Some(pid_namespace_inode),
                Some(Message::Setup { message }) => return Err(SandboxError::Setup { message }),
                Some(Message::CannotStart { message }) => {
                    return Err(SandboxError::CannotStart { message });
                }
                Some(Message::Refused { message }) => {
                    return Err(SandboxError::Refused { message });
                }
                Some(Message::Finished(report)) => return Ok(report),
                None => return Err(SandboxError::Vanished),
            }
        }
    }
}
