//! The `local` runtime: steps on this machine, contained by the kernel sandbox by default.
//!
//! A step with `isolation: sandbox` (the default) runs through `maestro-sandbox`: read-only host,
//! private `/tmp` and `/dev`, its own PID namespace (teardown the kernel guarantees), no
//! capabilities, Landlock and seccomp. A step with `isolation: none` runs on the bare host in a
//! process group of its own. Either way the step's result says how its teardown was verified.

use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep_until};

use maestro_core::JobId;
use maestro_core::executor::{
    Containment, Executor, ExecutorError, RemovedResource, StepControl, StepOutcome, StepOutput,
    StepRequest, StopReason, Stream,
};
use maestro_core::output::FLUSH_WITHIN;
use maestro_core::spec::Isolation;

mod leftovers;
mod sandboxed;

/// How long output is still read after a step's process exited and its group was killed. Only a
/// process that escaped the group (with `setsid`) can hold the pipes open that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The size asked for a step's stdout pipe, and the most its read buffer grows to.
const PIPE_BYTES: usize = 1024 * 1024;

/// The read buffer a step's stdout starts with: it grows to [`PIPE_BYTES`] once a read fills it.
const FIRST_READ_BYTES: usize = 64 * 1024;

/// How long the process group of an `isolation: none` step may take to empty after its kill
/// before what is left is reported as a failed teardown.
const GROUP_EMPTY_WITHIN: Duration = Duration::from_millis(500);

/// Runs steps with `tokio::process`, each in a process group of its own so that a timeout or a
/// cancel can signal the step and every process it started.
#[derive(Debug, Default, Clone)]
pub struct LocalExecutor {
    config: LocalConfig,
    /// The sandbox launcher, when configured; shared by the executor's clones.
    launcher: std::sync::Arc<sandboxed::LauncherSlot>,
    /// Sandboxes built ahead of their steps ([`Executor::stage`]).
    staged: std::sync::Arc<sandboxed::StagedSlot>,
}

/// What the local executor needs from its host program.
#[derive(Debug, Default, Clone)]
pub struct LocalConfig {
    /// The program that sets up the sandbox and its leading arguments (`mc` itself, with its
    /// hidden shim argument). Without one, sandboxed steps are refused before anything runs.
    pub sandbox_shim: Option<(PathBuf, Vec<String>)>,
    /// The program that serves as the sandbox launcher and its leading arguments (`mc` with its
    /// hidden launcher argument). The launcher is started with the first sandboxed step (unless
    /// the host forked one, [`LocalExecutor::with_forked_launcher`]) and forks each step's
    /// shim instead of having the shim executed: the same sandbox, built with about a fifth
    /// less CPU; a launcher that fails is replaced by one started so. Without one, each shim
    /// is executed.
    pub sandbox_launcher: Option<(PathBuf, Vec<String>)>,
    /// Paths no step may ever write, even inside its workspace: Maestro's state root.
    pub protected_paths: Vec<PathBuf>,
}

impl LocalExecutor {
    /// A local executor.
    pub fn new(config: LocalConfig) -> Self {
        Self {
            config,
            launcher: Default::default(),
            staged: Default::default(),
        }
    }

    /// This executor with `forked` as its first sandbox launcher (a helper the host forked from
    /// itself before its first thread: `mc submit`), used when [`LocalConfig::sandbox_launcher`]
    /// is set. Dropped unused (no sandboxed step ran), the helper exits.
    pub fn with_forked_launcher(mut self, forked: maestro_sandbox::ForkedLauncher) -> Self {
        self.launcher = std::sync::Arc::new(sandboxed::LauncherSlot::with_forked(forked));
        self
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

/// A step's own process: the bare step or the shim executed here, or a shim the sandbox
/// launcher forked. Either way it leads its own process group and is killed when dropped.
enum StepProcess {
    Spawned(tokio::process::Child),
    /// With the launcher that forked it, held (with its registration) until the step ends.
    Launched(
        maestro_sandbox::Launched,
        #[expect(dead_code, reason = "held, never read: keeps the launcher registered")]
        std::sync::Arc<sandboxed::RegisteredLauncher>,
    ),
}

impl StepProcess {
    fn id(&self) -> Option<u32> {
        match self {
            StepProcess::Spawned(child) => child.id(),
            StepProcess::Launched(launched, _) => Some(launched.id()),
        }
    }

    /// Cancel-safe in both cases (tokio's `Child::wait` and `Launched::wait` say so).
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            StepProcess::Spawned(child) => child.wait().await,
            StepProcess::Launched(launched, _) => launched.wait().await,
        }
    }

    /// The read ends of stdout and stderr, once.
    fn take_output(&mut self) -> Option<(pipe::Receiver, pipe::Receiver)> {
        match self {
            StepProcess::Spawned(child) => {
                let receiver = |fd: std::io::Result<std::os::fd::OwnedFd>| {
                    fd.and_then(pipe::Receiver::from_owned_fd).ok()
                };
                let stdout = receiver(child.stdout.take()?.into_owned_fd())?;
                let stderr = receiver(child.stderr.take()?.into_owned_fd())?;
                Some((stdout, stderr))
            }
            StepProcess::Launched(launched, _) => launched.take_output(),
        }
    }
}

/// A step's clean environment: the caller's allowlisted variables, the step's own (spec `env`,
/// pass-through, Maestro's), then its secrets. Nothing else of `mc`'s environment.
fn environment_of(step: &StepRequest) -> Vec<(&OsStr, &OsStr)> {
    step.host_env
        .iter()
        .chain(&step.env)
        .map(|(name, value)| (OsStr::new(name), OsStr::new(value)))
        .chain(
            step.secrets
                .iter()
                .map(|(name, secret)| (OsStr::new(name), OsStr::new(secret.expose()))),
        )
        .collect()
}

fn resolve_workdir(step: &StepRequest) -> PathBuf {
    match &step.workdir {
        Some(dir) => step.workspace.join(dir),
        None => step.workspace.clone(),
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn check_step(&self, step: &StepRequest) -> Result<(), ExecutorError> {
        let mut refused = step.container.fields_set();
        if step.with.is_some() {
            refused.push("with");
        }
        match step.isolation {
            // The sandbox gives a step its own network namespace on request.
            Isolation::Sandbox => refused.retain(|field| *field != "network"),
            Isolation::None => {
                if refused.contains(&"network") {
                    refused.retain(|field| *field != "network");
                    refused.push("network (only sandboxed steps get a network namespace)");
                }
                if !step.writable_paths.is_empty() {
                    refused.push("writable_paths (only sandboxed steps have read-only hosts)");
                }
                if !step.host_access.is_empty() {
                    refused.push("host_access (only sandboxed steps hide host resources)");
                }
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(ExecutorError::InvalidStep {
                message: format!(
                    "step {:?} runs on the local runtime, which cannot honour {}; remove {}, or choose a container runtime",
                    step.name,
                    refused.join(", "),
                    if refused.len() == 1 { "it" } else { "them" }
                ),
            })
        }
    }

    async fn containment(&self, step: &StepRequest) -> Containment {
        match step.isolation {
            Isolation::Sandbox => Containment::Sandbox,
            Isolation::None => Containment::None,
        }
    }

    /// A sandboxed step's sandbox, built through the launcher with the step held: the shim
    /// builds it on another CPU while the runner syncs the job's records, and the step starts
    /// only when `run` says so, after `RUNNING` is durable. The sandbox is private until then
    /// (its namespaces are new, its mounts its own); a job that ends before the step runs has
    /// it torn down by `finish`.
    async fn stage(&self, step: &StepRequest) {
        if step.isolation != Isolation::Sandbox || self.config.sandbox_launcher.is_none() {
            return;
        }
        let workdir = resolve_workdir(step);
        // The state root a new job creates as it is stored (its first job's) is not there to
        // be made read-only yet: that sandbox is built when the step runs, as always.
        if !workdir.is_dir()
            || self
                .config
                .protected_paths
                .iter()
                .any(|path| !path.exists())
        {
            return;
        }
        let environment = environment_of(step);
        sandboxed::stage(
            &self.config,
            &self.launcher,
            &self.staged,
            step,
            &workdir,
            &environment,
        )
        .await;
    }

    /// What was staged and never run (the job failed or was cancelled before its first step)
    /// is torn down.
    async fn finish(&self, job_id: JobId) {
        self.staged.release(job_id);
    }

    /// Sandboxed steps need kernel support: checked before the job runs anything, so that a
    /// machine without it fails closed with one line instead of running a step less contained
    /// than its record says.
    async fn prepare(&self, steps: &[StepRequest]) -> Result<(), ExecutorError> {
        if let Some(first) = steps
            .iter()
            .find(|step| step.isolation == Isolation::Sandbox)
        {
            sandboxed::check(&self.config)?;
            // Some restrictions show only when a sandbox is built (an outer sandbox that forbids
            // nested user namespaces). When another step would run before the first sandboxed
            // one, build one now, so that the job fails before anything of it runs.
            if first.index > 0 {
                sandboxed::probe(&self.config, first).await?;
            }
        }
        if steps.iter().any(|step| step.isolation == Isolation::None) {
            leftovers::adopt_orphans();
        }
        Ok(())
    }

    /// Processes of a dead `mc`'s steps keep running in their own groups; they are found by
    /// the `MAESTRO_JOB_ID` in their environment (which `/proc` shows) and killed.
    async fn collect_garbage(
        &self,
        is_live: &(dyn Fn(JobId) -> bool + Send + Sync),
    ) -> Result<Vec<RemovedResource>, ExecutorError> {
        if !std::path::Path::new("/proc/self").exists() {
            return Err(ExecutorError::Unavailable {
                message: "cannot list processes: /proc is not mounted".to_owned(),
            });
        }
        let mut removed = Vec::new();
        // A sandboxed step's shim carries the job in its environment too; killing it takes the
        // step's PID namespace down with it.
        for pid in leftovers::pids() {
            let Some((job_id, _)) = leftovers::process_step(pid) else {
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
                removed.push(RemovedResource {
                    runtime: "local".to_owned(),
                    kind: "process".to_owned(),
                    id: pid.to_string(),
                    name: Some(command.trim().to_owned()).filter(|name| !name.is_empty()),
                    job_id,
                    step: None,
                });
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
        // A bare step's orphans become children of this process (see `prepare`): whatever child
        // appears that was not there before the step is one of them.
        let children_before = match step.isolation {
            Isolation::None => leftovers::own_children(),
            Isolation::Sandbox => Vec::new(),
        };
        let environment = environment_of(step);
        let launched =
            step.isolation == Isolation::Sandbox && self.config.sandbox_launcher.is_some();
        // Registered (when spawned here) while the spawn lock is held; dropped after the child
        // (declared first).
        let (_registered, mut child, mut sandbox) = if launched {
            // Built while the job was stored (`stage`), or now.
            let (launched, control, launcher) = match self.staged.take(step) {
                Some(staged) => {
                    tracing::debug!(step = %step.name, "the step's sandbox was built ahead");
                    (staged.launched, staged.control, staged.launcher)
                }
                None => {
                    sandboxed::launch(
                        &self.config,
                        &self.launcher,
                        step,
                        &workdir,
                        &environment,
                        false,
                    )
                    .await?
                }
            };
            (
                None,
                StepProcess::Launched(launched, launcher),
                Some(control),
            )
        } else {
            let (mut command, sandbox) = match step.isolation {
                Isolation::None => {
                    let mut command = tokio::process::Command::new(program);
                    command
                        .args(args)
                        .current_dir(&workdir)
                        .stdin(Stdio::null());
                    (command, None)
                }
                Isolation::Sandbox => {
                    let (command, control) = sandboxed::command(&self.config, step, &workdir)?;
                    (command, Some(control))
                }
            };
            let (registered, child) = {
                let _spawning = leftovers::spawning();
                let child = command
                    .env_clear()
                    .envs(environment.iter().copied())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|error| ExecutorError::StepFailed {
                        message: format!("step {:?}: cannot start {program:?}: {error}", step.name),
                    })?;
                (leftovers::StepChild::register(child.id()), child)
            };
            // The command holds a copy of the shim's end of the control socket; the shim's death
            // is seen on that socket only once every copy is closed.
            drop(command);
            (Some(registered), StepProcess::Spawned(child), sandbox)
        };
        let mut group = GroupGuard(
            child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .and_then(Pid::from_raw),
        );
        if let Some(control) = sandbox.as_mut() {
            // Nothing of the step runs until the sandbox is complete; a sandbox that cannot be
            // built fails the step as a system error, and the group guard removes the shim.
            sandboxed::started(control, step).await?;
        }
        tracing::debug!(step = %step.name, pid = ?child.id(), "local step started");
        let Some((mut stdout, mut stderr)) = child.take_output() else {
            return Err(ExecutorError::StepFailed {
                message: format!("step {:?}: output pipes were not created", step.name),
            });
        };
        // Bigger pipes mean fewer wake-ups per gigabyte for a step that prints a lot; a kernel
        // that refuses (over /proc/sys/fs/pipe-max-size) just keeps the default 64 KiB.
        // Only stdout: big pipes count against the user's pipe-buffer allowance.
        let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_BYTES);
        // The read buffer starts small and grows to the pipe's size only for a step whose
        // output fills it: a zeroed megabyte per step is most of the allocator's work for the
        // many steps that print little (`mc serve` runs hundreds a second).
        let mut out_buf = vec![0u8; FIRST_READ_BYTES];
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
                    Ok(n) => {
                        output.write(Stream::Stdout, &out_buf[..n])?;
                        if n == out_buf.len() && out_buf.len() < PIPE_BYTES {
                            out_buf.resize(PIPE_BYTES, 0);
                        }
                    }
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
                    if launched {
                        // The launcher reaped the shim before saying so: its group's number may
                        // already be another process's. Nothing of the step is left in it
                        // anyway (init emptied the PID namespace, or the kernel did).
                        group.disarm();
                    } else {
                        // The step is over: whatever it left running in its group goes with it,
                        // and that closes the pipes those leftovers held.
                        group.signal(Signal::KILL);
                    }
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
        let pgid = group.0;
        group.disarm();
        let teardown = match sandbox {
            Some(control) => sandboxed::teardown(control, step, !launched).await,
            None => leftovers::verify_group(pgid, step.job_id, &step.name, &children_before).await,
        };
        let status = status.unwrap_or_default();
        Ok(StepOutcome {
            exit_code: status.code(),
            signal: status.signal(),
            stopped,
            oom_killed: false,
            teardown: Some(teardown),
        })
    }
}
