//! The local executor: each step is a process group on this machine.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, sleep_until};

use crate::JobId;
use crate::executor::{
    Executor, ExecutorError, StepControl, StepOutcome, StepOutput, StepRequest, StopReason, Stream,
};
use crate::output::FLUSH_WITHIN;

/// How long output is still read after a step's process exited and its group was killed. Only a
/// process that escaped the group (with `setsid`) can hold the pipes open that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The size asked for a step's stdout pipe, and of the buffer it is read with.
const PIPE_BYTES: usize = 1024 * 1024;

/// Runs steps with `tokio::process`, each in a process group of its own so that a timeout or a
/// cancel can signal the step and every process it started.
#[derive(Debug, Default, Clone)]
pub struct LocalExecutor;

impl LocalExecutor {
    /// A local executor.
    pub fn new() -> Self {
        Self
    }
}

/// Kills a process group when dropped, unless disarmed: if the future running a step is dropped
/// (the runtime shuts down, the caller gives up), the step's processes must not outlive it.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.0 {
            // ESRCH (the group is already gone) is the expected case after a clean exit.
            let _ = kill_process_group(pid, signal);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}

fn resolve_workdir(step: &StepRequest) -> PathBuf {
    match &step.workdir {
        Some(dir) => step.workspace.join(dir),
        None => step.workspace.clone(),
    }
}

/// The job a process belongs to, read from the `MAESTRO_JOB_ID` every step inherits.
fn process_job(pid: i32) -> Option<JobId> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"MAESTRO_JOB_ID="))
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| JobId::try_parse(value).ok())
}

#[async_trait]
impl Executor for LocalExecutor {
    fn check_step(&self, step: &StepRequest) -> Result<(), ExecutorError> {
        let mut refused = step.container.fields_set();
        if step.with.is_some() {
            refused.push("with");
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(ExecutorError::InvalidStep {
                message: format!(
                    "step {:?} runs on the local runtime, which cannot honour {}; remove them or choose a container runtime",
                    step.name,
                    refused.join(", ")
                ),
            })
        }
    }

    /// Processes of a dead `mc`'s steps keep running in their own groups; they are found by
    /// the `MAESTRO_JOB_ID` in their environment (which `/proc` shows) and killed.
    async fn collect_garbage(
        &self,
        is_live: &(dyn Fn(JobId) -> bool + Send + Sync),
    ) -> Result<Vec<String>, ExecutorError> {
        let own = std::process::id();
        let entries = std::fs::read_dir("/proc").map_err(|error| ExecutorError::Unavailable {
            message: format!("cannot list processes in /proc: {error}"),
        })?;
        let mut removed = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            if pid as u32 == own {
                continue;
            }
            let Some(job_id) = process_job(pid) else {
                continue;
            };
            if is_live(job_id) {
                continue;
            }
            if let Some(process) = Pid::from_raw(pid)
                && kill_process(process, Signal::KILL).is_ok()
            {
                let command =
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                removed.push(format!(
                    "local process {pid} ({}) of job {job_id}",
                    command.trim()
                ));
            }
        }
        Ok(removed)
    }

    async fn run(
        &self,
        step: &StepRequest,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, ExecutorError> {
        let argv = step.command.to_argv();
        let Some((program, args)) = argv.split_first() else {
            return Err(ExecutorError::InvalidStep {
                message: format!("step {:?} has an empty command", step.name),
            });
        };
        let workdir = resolve_workdir(step);
        if !workdir.is_dir() {
            return Err(ExecutorError::StepFailed {
                message: format!(
                    "step {:?}: working directory {} does not exist",
                    step.name,
                    workdir.display()
                ),
            });
        }
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .envs(&step.env)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| ExecutorError::StepFailed {
                message: format!("step {:?}: cannot start {program:?}: {error}", step.name),
            })?;
        let mut group = GroupGuard(
            child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .and_then(Pid::from_raw),
        );
        tracing::debug!(step = %step.name, pid = ?child.id(), "local step started");
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return Err(ExecutorError::StepFailed {
                message: format!("step {:?}: output pipes were not created", step.name),
            });
        };
        // Bigger pipes mean fewer wake-ups per gigabyte for a step that prints a lot; a kernel
        // that refuses (over /proc/sys/fs/pipe-max-size) just keeps the default 64 KiB.
        // Only stdout: big pipes count against the user's pipe-buffer allowance.
        let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_BYTES);
        let mut out_buf = vec![0u8; PIPE_BYTES];
        let mut err_buf = vec![0u8; 64 * 1024];
        let (mut out_open, mut err_open) = (true, true);
        let mut status: Option<ExitStatus> = None;
        let mut stopped: Option<StopReason> = None;
        let mut kill_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        let stop = control.stop_requested();
        tokio::pin!(stop);
        output.defer_writes();
        // When gathered output must reach the log at the latest: set when output starts to
        // wait, so a step that trickles a line every few milliseconds is still flushed on time.
        let mut flush_at: Option<Instant> = None;
        loop {
            if status.is_some() && !out_open && !err_open {
                break;
            }
            if output.has_pending() {
                flush_at.get_or_insert_with(|| Instant::now() + FLUSH_WITHIN);
            } else {
                flush_at = None;
            }
            tokio::select! {
                () = sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    output.flush()?;
                    flush_at = None;
                }
                read = stdout.read(&mut out_buf), if out_open => match read {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => output.write(Stream::Stdout, &out_buf[..n])?,
                },
                read = stderr.read(&mut err_buf), if err_open => match read {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => output.write(Stream::Stderr, &err_buf[..n])?,
                },
                waited = child.wait(), if status.is_none() => {
                    let exit = waited.map_err(|error| ExecutorError::StepFailed {
                        message: format!("step {:?}: cannot wait for its process: {error}", step.name),
                    })?;
                    status = Some(exit);
                    // The step is over: whatever it left running in its group goes with it, and
                    // that closes the pipes those leftovers held.
                    group.signal(Signal::KILL);
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                reason = &mut stop, if stopped.is_none() && status.is_none() => {
                    tracing::info!(step = %step.name, ?reason, "stopping local step");
                    stopped = Some(reason);
                    group.signal(Signal::TERM);
                    kill_at = Some(Instant::now() + control.grace());
                }
                () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() && status.is_none() => {
                    tracing::info!(step = %step.name, "grace period over, killing local step");
                    group.signal(Signal::KILL);
                    kill_at = None;
                }
                () = sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() => {
                    output.note("output pipes still open after the step exited (a process left its group); stopped reading")?;
                    break;
                }
            }
        }
        group.disarm();
        let status = status.unwrap_or_default();
        Ok(StepOutcome {
            exit_code: status.code(),
            signal: status.signal(),
            stopped,
            oom_killed: false,
        })
    }
}
