//! The boundary every runtime implements, and the registry that maps runtime names to executors.
//!
//! The runner knows only [`Executor`] and [`ExecutorRegistry`]; policy and state code know neither.
//! An executor receives a fully resolved [`StepRequest`] (command, environment with `TRACE_ID`,
//! workdir, timeout, container settings, plugin settings), writes the step's output into a
//! [`StepOutput`] as it arrives, and honours the [`StepControl`]: when the deadline passes or the
//! job is cancelled it stops the step gracefully (SIGTERM or its equivalent, then a hard kill after
//! the grace period) and reports which of the two happened.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::JobId;
pub use crate::output::{StepOutput, Stream};
pub use crate::plan::Containment;
use crate::secret::StepSecrets;
use crate::spec::{HostAccess, Isolation, Network, PullPolicy};
use crate::trace::{SpanId, TraceId};

/// What a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    /// A shell line, run with `/bin/sh -c`.
    Shell(String),
    /// An argv list, run without a shell.
    Argv(Vec<String>),
}

impl CommandLine {
    /// The argv that runs this command: `["/bin/sh", "-c", line]` for a shell line.
    pub fn to_argv(&self) -> Vec<String> {
        match self {
            Self::Shell(line) => vec!["/bin/sh".to_owned(), "-c".to_owned(), line.clone()],
            Self::Argv(argv) => argv.clone(),
        }
    }
}

/// Container settings of a step; executors that run no containers reject steps that set them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSettings {
    /// The image (the step's, else the job's default).
    pub image: Option<String>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit in CPUs.
    pub cpus: Option<f64>,
    /// Process limit.
    pub pids_limit: Option<i64>,
    /// Network mode; bridge when absent.
    pub network: Option<Network>,
    /// User to run as.
    pub user: Option<String>,
    /// Read-only root filesystem.
    pub read_only_rootfs: Option<bool>,
    /// When to pull the image.
    pub pull: Option<PullPolicy>,
    /// Swarm placement constraints (the swarm runtime only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
    /// How long a swarm task may wait for a node that fits (the swarm runtime only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout: Option<Duration>,
}

impl ContainerSettings {
    /// The names of the container fields this step sets (for executors that must refuse them).
    pub fn fields_set(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        let Self {
            image: _,
            memory_bytes,
            cpus,
            pids_limit,
            network,
            user,
            read_only_rootfs,
            pull,
            placement,
            schedule_timeout,
        } = self;
        for (set, name) in [
            (memory_bytes.is_some(), "memory"),
            (cpus.is_some(), "cpus"),
            (pids_limit.is_some(), "pids_limit"),
            (network.is_some(), "network"),
            (user.is_some(), "user"),
            (read_only_rootfs.is_some(), "read_only_rootfs"),
            (pull.is_some(), "pull"),
            (!placement.is_empty(), "placement"),
            (schedule_timeout.is_some(), "schedule_timeout_seconds"),
        ] {
            if set {
                fields.push(name);
            }
        }
        fields
    }
}

/// Everything an executor needs to run one step, resolved from the spec and the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRequest {
    /// The job this step belongs to.
    pub job_id: JobId,
    /// The job's name.
    pub job_name: String,
    /// The job's trace id; it is also in `env` as `TRACE_ID`.
    pub trace_id: TraceId,
    /// The step's position in the job, from 0.
    pub index: usize,
    /// The step's name.
    pub name: String,
    /// The runtime that runs it.
    pub runtime: String,
    /// What it runs.
    pub command: CommandLine,
    /// The variables the spec names in `env_passthrough` (from the caller's environment), the
    /// job's `env`, the step's `env`, then `TRACE_ID`, `TRACEPARENT`, `MAESTRO_JOB_ID` and
    /// `MAESTRO_STEP`. Every executor hands the step these and [`secrets`](Self::secrets).
    pub env: BTreeMap<String, String>,
    /// The caller's allowlisted variables (`PATH`, `HOME`, `LANG` …, see
    /// [`crate::plan::CALLER_ENV_ALLOWLIST`]): the base a local step's clean environment
    /// starts from, below `env`. Executors that run steps elsewhere ignore it.
    pub host_env: BTreeMap<String, String>,
    /// The secrets this step receives, by variable name: filled in when the job starts (empty
    /// before). Never serialized; `Debug` shows no value. Executors add them to the step's
    /// environment, never to its argv.
    #[serde(skip)]
    pub secrets: StepSecrets,
    /// The step's span id in the job's trace (also in `env` as part of `TRACEPARENT`).
    pub span_id: SpanId,
    /// The job's workspace on this machine (absolute).
    pub workspace: PathBuf,
    /// The step's `workdir` as written, if any. Local steps resolve a relative one against the
    /// workspace; container steps against `/workspace` inside the container.
    pub workdir: Option<String>,
    /// The step's effective timeout.
    pub timeout: Duration,
    /// Container settings.
    pub container: ContainerSettings,
    /// Whether the job asked to reuse one container for steps that share settings.
    pub reuse_container: bool,
    /// The step's plugin settings, an object, handed to plugins verbatim.
    pub with: Option<serde_json::Value>,
    /// How a local step is contained (the step's `isolation`, else the job's, else sandbox).
    pub isolation: Isolation,
    /// Absolute paths a sandboxed step may write besides its workspace and `/tmp`.
    pub writable_paths: Vec<PathBuf>,
    /// Host resources a sandboxed step may see although they are hidden by default.
    pub host_access: Vec<HostAccess>,
}

impl StepRequest {
    /// The step's environment as an executor hands it over: `env`, then the secrets. The
    /// values are plain strings: pass them to the step and drop them, never log them.
    pub fn env_with_secrets(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.extend(
            self.secrets
                .iter()
                .map(|(name, secret)| (name.clone(), secret.expose().to_owned())),
        );
        env
    }
}

/// Why a step was asked to stop before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Its timeout passed.
    TimedOut,
    /// The job was cancelled (SIGINT/SIGTERM to `mc`).
    Cancelled,
}

/// The clock and the cancel signal a running step must honour.
#[derive(Debug, Clone)]
pub struct StepControl {
    deadline: Instant,
    grace: Duration,
    cancel: CancellationToken,
}

impl StepControl {
    /// A control that fires at `deadline`, or when `cancel` is cancelled.
    pub fn new(deadline: Instant, grace: Duration, cancel: CancellationToken) -> Self {
        Self {
            deadline,
            grace,
            cancel,
        }
    }

    /// Resolves when the step must stop, saying why. Cancellation wins over a deadline that
    /// passes at the same moment, since the user asked for it.
    pub async fn stop_requested(&self) -> StopReason {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => StopReason::Cancelled,
            () = tokio::time::sleep_until(self.deadline) => StopReason::TimedOut,
        }
    }

    /// How long a step may take to exit after a graceful stop before it is killed.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// When the step's timeout expires.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the job has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// How a step that ran ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// The exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when it was killed by one.
    pub signal: Option<i32>,
    /// Set when the step was stopped by its timeout or by cancellation.
    pub stopped: Option<StopReason>,
    /// The step was killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// How the executor made sure nothing of the step was left behind; `None` when it cannot
    /// tell (a plugin that does not report it).
    pub teardown: Option<Teardown>,
}

/// How an executor checked that a step left nothing behind, and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Teardown {
    /// What was checked.
    pub method: TeardownMethod,
    /// True when the check found nothing of the step remaining.
    pub verified: bool,
    /// What remained after the step was killed, one line each (`pid 123 (sleep)`, a container
    /// id); empty when verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remaining: Vec<String>,
}

impl Teardown {
    /// A teardown checked by `method` that found nothing left.
    pub fn verified(method: TeardownMethod) -> Self {
        Self {
            method,
            verified: true,
            remaining: Vec::new(),
        }
    }

    /// A teardown checked by `method` that found `remaining` still there after the kill.
    pub fn failed(method: TeardownMethod, remaining: Vec<String>) -> Self {
        Self {
            method,
            verified: false,
            remaining,
        }
    }
}

/// How a step's teardown was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeardownMethod {
    /// A sandboxed step: its PID namespace ended, and no process of it remains.
    PidNamespace,
    /// An `isolation: none` step: its process group is empty.
    ProcessGroup,
    /// A container step: the engine reports the container removed.
    ContainerRemoved,
    /// A plugin reported its task's process group empty.
    PluginReported,
}

impl TeardownMethod {
    /// A few words for people: `pid namespace gone`, `process group empty` …
    pub fn describe(self) -> &'static str {
        match self {
            Self::PidNamespace => "pid namespace gone",
            Self::ProcessGroup => "process group empty",
            Self::ContainerRemoved => "container removed",
            Self::PluginReported => "plugin reported its task's processes gone",
        }
    }
}

impl StepOutcome {
    /// An outcome for a process that exited with `code`.
    pub fn exited(code: i32) -> Self {
        Self {
            exit_code: Some(code),
            ..Self::default()
        }
    }

    /// Whether the step succeeded: exit code 0 and not stopped.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.stopped.is_none() && !self.oom_killed
    }
}

/// Why an executor could not run a step, as opposed to a step that ran and failed (which is a
/// [`StepOutcome`] with a non-zero exit).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The executor's backend cannot be reached or used (engine down, plugin will not start):
    /// a system error, not the job's fault.
    #[error("{message}")]
    Unavailable {
        /// One line saying what is unavailable and why.
        message: String,
    },
    /// The step's settings are not acceptable to this executor: a mistake in the spec, found
    /// before anything runs.
    #[error("{message}")]
    InvalidStep {
        /// One line naming the step, the setting and the problem.
        message: String,
    },
    /// The step could not be started or was lost while it ran (missing image, spawn failure,
    /// a plugin that crashed).
    #[error("{message}")]
    StepFailed {
        /// One line saying what went wrong.
        message: String,
    },
    /// Writing the step's output to its log failed.
    #[error("cannot record step output: {0}")]
    Output(#[from] std::io::Error),
}

/// A runtime: something that runs steps.
///
/// Only [`Executor::run`] is required; the hooks have sensible defaults. The runner calls, per
/// job: [`check_step`](Executor::check_step) for each of its steps before the job is stored,
/// on a local submit [`stage`](Executor::stage) for the first step while the allowed job is
/// being stored, [`prepare`](Executor::prepare) once after policies allowed the job and
/// `RUNNING` is on record,
/// [`run`](Executor::run) per step, and [`finish`](Executor::finish) once at the end however the
/// job ended (success, failure, cancel). `mc gc` calls
/// [`collect_garbage`](Executor::collect_garbage) on the built-in executors.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Check a step's settings without side effects, before anything is stored or run.
    fn check_step(&self, _step: &StepRequest) -> Result<(), ExecutorError> {
        Ok(())
    }

    /// How this executor contains `step`: handed to policy as data, so that what static
    /// analysis cannot prove harmless is allowed only where the kernel or an engine contains
    /// it. Called during admission, before policy; it may ask the backend (a plugin announces
    /// its containment in its hello) but must not run anything of the job. The default is the
    /// safe answer: not contained.
    async fn containment(&self, _step: &StepRequest) -> Containment {
        Containment::None
    }

    /// Check `steps`' settings with the backend (a plugin's own `validate`), before anything is
    /// stored or run, so that `mc validate` and `mc submit` give the same answer. Return
    /// `InvalidStep` for settings the backend rejects; a backend that cannot be asked now is not
    /// an error here (`prepare` reports it). The default has nothing to ask.
    async fn validate_steps(&self, _steps: &[StepRequest]) -> Result<(), ExecutorError> {
        Ok(())
    }

    /// Build ahead of time what `step`, the job's first step, needs before it can start, while
    /// the runner makes the job durable with `RUNNING`: a local submit polls this once, stores
    /// the job (its syncs), then awaits it. Only work no one outside `mc` and its own children
    /// can see: nothing of the step may run, no container or plugin process may start (a local
    /// step's sandbox is built with the step held until [`run`](Executor::run) lets it start).
    /// Called after policy allowed the job and before [`prepare`](Executor::prepare), with the
    /// step's secrets. `run` of the same step takes what was staged; what no step took is
    /// released by [`finish`](Executor::finish), which is called for a job whose store failed
    /// after staging too. Not a place to fail: what went wrong here, `run` does again and
    /// reports. The default stages nothing.
    async fn stage(&self, _step: &StepRequest) {}

    /// Get ready for a job whose steps for this executor are `steps` (in order): connect to the
    /// backend, start a plugin, validate settings that need the backend. An error here fails the
    /// job before any step runs.
    async fn prepare(&self, _steps: &[StepRequest]) -> Result<(), ExecutorError> {
        Ok(())
    }

    /// Run one step to completion, streaming its output into `output` and honouring `control`.
    async fn run(
        &self,
        step: &StepRequest,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, ExecutorError>;

    /// Release everything held for the job (containers, plugin processes). Called exactly once
    /// per prepared job, on every path. Must not fail: log what could not be cleaned up.
    async fn finish(&self, _job_id: JobId) {}

    /// Remove what this executor left behind for jobs no live `mc` drives any more (after a
    /// SIGKILL or a power loss), and say what was removed, one entry per resource. `is_live`
    /// returns false only for jobs of this state root that no running `mc` drives; it returns
    /// true for live jobs and for jobs this state root does not know (another state root's),
    /// so only resources for which it returns false may be removed.
    async fn collect_garbage(
        &self,
        _is_live: &(dyn Fn(JobId) -> bool + Send + Sync),
    ) -> Result<Vec<RemovedResource>, ExecutorError> {
        Ok(Vec::new())
    }

    /// Settle what the dead `mc` of `job_id` may have left in flight with this executor's
    /// backend (a container creation the engine completes after `mc` died), so that
    /// [`collect_garbage`](Executor::collect_garbage), which `mc gc` calls next, sees it or
    /// it never comes to be. `mc gc` calls it for every job whose lease it holds, i.e. that no
    /// live `mc` drives, and holds the lease meanwhile; what was removed, one line each.
    async fn settle_job(&self, _job_id: JobId) -> Result<Vec<String>, ExecutorError> {
        Ok(Vec::new())
    }
}

/// One resource [`Executor::collect_garbage`] removed: a container, a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedResource {
    /// The runtime it belonged to: `docker`, `local`, ….
    pub runtime: String,
    /// What it was: `container`, `process`, ….
    pub kind: String,
    /// Its id for its runtime: a (short) container id, a pid.
    pub id: String,
    /// Its name, when it has one: a container's name, a process's command.
    pub name: Option<String>,
    /// The job it was left by.
    pub job_id: JobId,
    /// The step it was left by, when known.
    pub step: Option<String>,
}

impl fmt::Display for RemovedResource {
    /// `docker container 3f2a1b9c (maestro-…) of job …, step build`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.runtime, self.kind, self.id)?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        write!(f, " of job {}", self.job_id)?;
        if let Some(step) = &self.step {
            write!(f, ", step {step}")?;
        }
        Ok(())
    }
}

/// Finds executors for runtime names the registry has not been given, such as plugins.
pub trait ExecutorProvider: Send + Sync {
    /// The executor for `runtime`, if this provider has one.
    fn provide(&self, runtime: &str) -> Option<Arc<dyn Executor>>;

    /// Where this provider looked, for the error message when nothing provides a runtime.
    fn searched(&self) -> String;

    /// The runtime names this provider could provide, for "did you mean" when a name is
    /// unknown. Only asked on that error path, so it may look around (list directories).
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// No executor is known for a runtime name.
#[derive(Debug, thiserror::Error)]
#[error("unknown runtime {runtime:?}{}: built-in runtimes are {builtin}{searched}", self.context())]
pub struct UnknownRuntime {
    /// The name asked for.
    pub runtime: String,
    /// Which step asked for it and where the name was written (`"build"`, `its runtime
    /// field`), when the runner knows; see [`UnknownRuntime::named_by`].
    pub named_by: Option<Box<(String, String)>>,
    /// A known runtime close to it, when there is one (`docker` for `dokcer`).
    pub suggestion: Option<String>,
    /// The built-in names, comma separated.
    pub builtin: String,
    /// Where providers looked, prefixed with "; ".
    pub searched: String,
}

impl UnknownRuntime {
    /// The same error, saying that `step` asked for the runtime and where the name was
    /// written (`its runtime field`, `--runtime`, `the job's runtime field`), so a job of
    /// many steps says which one to fix.
    pub fn named_by(mut self, step: &str, origin: &str) -> Self {
        self.named_by = Some(Box::new((step.to_owned(), origin.to_owned())));
        self
    }

    /// ` for step "s" (its runtime field; did you mean "docker"?)`, or the parts known.
    fn context(&self) -> String {
        let mut notes = Vec::new();
        if let Some(named_by) = &self.named_by {
            notes.push(named_by.1.clone());
        }
        if let Some(name) = &self.suggestion {
            notes.push(format!("did you mean {name:?}?"));
        }
        let mut text = self
            .named_by
            .as_ref()
            .map(|named_by| format!(" for step {:?}", named_by.0))
            .unwrap_or_default();
        if !notes.is_empty() {
            text.push_str(&format!(" ({})", notes.join("; ")));
        }
        text
    }
}

/// Maps runtime names to executors: built-ins registered by name, then providers in order.
#[derive(Default)]
pub struct ExecutorRegistry {
    builtin: BTreeMap<String, Arc<dyn Executor>>,
    providers: Vec<Box<dyn ExecutorProvider>>,
    provided: Mutex<BTreeMap<String, Arc<dyn Executor>>>,
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a built-in runtime. Built-in names can never be shadowed by a provider.
    pub fn register(&mut self, runtime: impl Into<String>, executor: Arc<dyn Executor>) {
        self.builtin.insert(runtime.into(), executor);
    }

    /// Add a provider consulted, in order, for names that are not built in.
    pub fn add_provider(&mut self, provider: Box<dyn ExecutorProvider>) {
        self.providers.push(provider);
    }

    /// The names of the built-in runtimes.
    pub fn builtin_names(&self) -> Vec<&str> {
        self.builtin.keys().map(String::as_str).collect()
    }

    /// The built-in executors, for maintenance across all of them (`mc gc`).
    pub fn builtin_executors(&self) -> Vec<Arc<dyn Executor>> {
        self.builtin.values().cloned().collect()
    }

    /// The executor for `runtime`. A provided executor is created once and then reused, so one
    /// job's steps share it.
    pub fn resolve(&self, runtime: &str) -> Result<Arc<dyn Executor>, UnknownRuntime> {
        if let Some(executor) = self.builtin.get(runtime) {
            return Ok(Arc::clone(executor));
        }
        let mut provided = self
            .provided
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(executor) = provided.get(runtime) {
            return Ok(Arc::clone(executor));
        }
        for provider in &self.providers {
            if let Some(executor) = provider.provide(runtime) {
                provided.insert(runtime.to_owned(), Arc::clone(&executor));
                return Ok(executor);
            }
        }
        let searched: Vec<String> = self.providers.iter().map(|p| p.searched()).collect();
        let mut known: Vec<String> = self.builtin.keys().cloned().collect();
        known.extend(self.providers.iter().flat_map(|p| p.names()));
        Err(UnknownRuntime {
            runtime: runtime.to_owned(),
            named_by: None,
            suggestion: crate::suggest::did_you_mean(runtime, known.iter().map(String::as_str))
                .map(str::to_owned),
            builtin: self.builtin_names().join(", "),
            searched: if searched.is_empty() {
                String::new()
            } else {
                format!("; {}", searched.join("; "))
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_resource_reads_as_one_phrase() {
        let job_id: JobId = "0192f0c1-aaaa-7bbb-8ccc-123456789abc".parse().unwrap();
        let container = RemovedResource {
            runtime: "docker".to_owned(),
            kind: "container".to_owned(),
            id: "3f2a1b9c0d1e".to_owned(),
            name: Some("maestro-build".to_owned()),
            job_id,
            step: Some("build".to_owned()),
        };
        assert_eq!(
            container.to_string(),
            "docker container 3f2a1b9c0d1e (maestro-build) of job 0192f0c1-aaaa-7bbb-8ccc-123456789abc, step build"
        );
        let json = serde_json::to_value(&container).unwrap();
        assert_eq!(json["kind"], "container");
        assert_eq!(json["id"], "3f2a1b9c0d1e");
        let process = RemovedResource {
            runtime: "local".to_owned(),
            kind: "process".to_owned(),
            id: "4242".to_owned(),
            name: None,
            job_id,
            step: None,
        };
        assert_eq!(
            process.to_string(),
            "local process 4242 of job 0192f0c1-aaaa-7bbb-8ccc-123456789abc"
        );
    }

    struct Nothing;

    #[async_trait]
    impl Executor for Nothing {
        async fn run(
            &self,
            _step: &StepRequest,
            _output: &mut StepOutput,
            _control: &StepControl,
        ) -> Result<StepOutcome, ExecutorError> {
            Ok(StepOutcome::exited(0))
        }
    }

    struct Named(&'static str);

    impl ExecutorProvider for Named {
        fn provide(&self, runtime: &str) -> Option<Arc<dyn Executor>> {
            (runtime == self.0 || runtime == "local")
                .then(|| Arc::new(Nothing) as Arc<dyn Executor>)
        }
        fn searched(&self) -> String {
            "searched the test provider".to_owned()
        }
    }

    #[test]
    fn builtins_win_and_unknown_names_say_where_we_looked() {
        let local: Arc<dyn Executor> = Arc::new(Nothing);
        let mut registry = ExecutorRegistry::new();
        registry.register("local", Arc::clone(&local));
        registry.add_provider(Box::new(Named("ssh")));
        assert!(Arc::ptr_eq(&registry.resolve("local").unwrap(), &local));
        let ssh = registry.resolve("ssh").unwrap();
        assert!(Arc::ptr_eq(&ssh, &registry.resolve("ssh").unwrap()));
        let message = registry.resolve("nope").err().unwrap().to_string();
        assert!(message.contains("\"nope\""), "{message}");
        assert!(message.contains("local"), "{message}");
        assert!(message.contains("test provider"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn control_reports_timeout_and_cancellation() {
        let cancel = CancellationToken::new();
        let control = StepControl::new(
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(1),
            cancel.clone(),
        );
        assert_eq!(control.stop_requested().await, StopReason::TimedOut);
        cancel.cancel();
        assert_eq!(control.stop_requested().await, StopReason::Cancelled);
        assert!(control.is_cancelled());
    }
}
