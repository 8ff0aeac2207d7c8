//! The plugin executor: one more implementation of core's `Executor`, backed by a plugin process.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use maestro_core::JobId;
use maestro_core::executor::{
    CommandLine, Containment, Executor, ExecutorError, ExecutorProvider, StepControl, StepOutcome,
    StepOutput, StepRequest, StopReason, Stream, Teardown, TeardownMethod,
};
use maestro_plugin_protocol::{
    Command, Describe, Destroy, ErrorCode, ErrorReply, Exit, ExitReason, Fault, HostMessage, Ping,
    PluginMessage, Start, Started, Stop, Validate, capability,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::connection::{Connection, ConnectionError, TaskEvent};
use crate::discovery;
use crate::groups::Group;

/// How long the host waits for a plugin's hello (`docs/plugin-protocol.md` §3), everywhere: jobs,
/// admission's probe, `mc plugins list`.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the host waits for a reply to a request (§4).
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a plugin may take to exit once its input is closed before its group is killed (§2).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long a task's process group may take to empty after its exit event (processes the
/// plugin has just killed leave it when they are reaped) before the host kills what is left
/// and records the step's teardown as failed.
const GROUP_EMPTY_WITHIN: Duration = Duration::from_millis(250);

/// How long a plugin's failure (no hello, no answer to `validate`) is remembered for the job it
/// happened in. Admission's probe, its `validate` and the job's `prepare` follow one another
/// within moments, so a plugin that failed once is not started (and waited for) again in the
/// same command; a server job that waited for an approval meanwhile tries the plugin afresh.
const FAILURE_KEPT: Duration = Duration::from_secs(120);

/// How many jobs' plugin failures are remembered at most (a server admits many jobs; one whose
/// admission failed never reaches `finish`, which forgets its entry).
const FAILURES_KEPT: usize = 64;

/// Deadlines the host keeps with a plugin.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// How long a plugin may take to send its hello after it was started.
    pub handshake_timeout: Duration,
    /// How long a plugin may take to answer a request.
    pub request_timeout: Duration,
    /// How often a plugin running a step is pinged.
    pub ping_interval: Duration,
    /// How long past a step's grace period its exit event may arrive before the plugin is killed.
    pub stop_slack: Duration,
    /// How long a plugin may take to exit once its input is closed.
    pub shutdown_grace: Duration,
}

impl Default for PluginOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: HELLO_TIMEOUT,
            request_timeout: REPLY_TIMEOUT,
            ping_interval: Duration::from_secs(10),
            stop_slack: Duration::from_secs(1),
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Runs steps through the plugin executable at `path`: one plugin process per job, started by
/// [`prepare`](Executor::prepare) (or by the first step) and shut down by
/// [`finish`](Executor::finish).
pub struct PluginExecutor {
    name: String,
    path: PathBuf,
    options: PluginOptions,
    connections: Mutex<HashMap<JobId, Arc<Connection>>>,
    next_task: AtomicU64,
    /// The capabilities its hello announced (how it contains its steps, whether it validates
    /// settings), read before policy and kept once read.
    announced: Mutex<Probe>,
    /// Why the plugin failed for a job (no hello, no answer to `validate`), and when: the same
    /// job (or command) fails at once with this first error instead of starting the plugin
    /// again and waiting out the same deadline once more (`docs/plugin-protocol.md` §3: one
    /// 10 s deadline). Newest last; see [`FAILURE_KEPT`] and [`FAILURES_KEPT`].
    failures: std::sync::Mutex<VecDeque<Failure>>,
}

/// What asking the plugin for its hello found: its capabilities, kept once read, or its last
/// failure, kept for one hello deadline so that questions waiting for the same answer (a
/// server admitting many jobs at once) get it at once instead of each waiting out a deadline.
#[derive(Default)]
struct Probe {
    capabilities: Option<Vec<String>>,
    failed: Option<(Instant, String)>,
}

/// A plugin's failure for one job.
struct Failure {
    job_id: JobId,
    at: Instant,
    message: String,
}

impl PluginExecutor {
    /// The executor for the plugin `name` at `path`, with default deadlines.
    pub fn new(name: &str, path: &Path) -> Self {
        Self::with_options(name, path, PluginOptions::default())
    }

    /// The executor for the plugin `name` at `path`.
    pub fn with_options(name: &str, path: &Path, options: PluginOptions) -> Self {
        Self {
            name: name.to_owned(),
            path: path.to_path_buf(),
            options,
            connections: Mutex::default(),
            next_task: AtomicU64::new(1),
            announced: Mutex::default(),
            failures: std::sync::Mutex::default(),
        }
    }

    /// The plugin's runtime name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn connection(&self, job_id: JobId) -> Result<Arc<Connection>, ExecutorError> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(&job_id) {
            return Ok(Arc::clone(connection));
        }
        let connection = Arc::new(self.open(job_id).await?);
        connections.insert(job_id, Arc::clone(&connection));
        Ok(connection)
    }

    /// Start the plugin for `job_id` and complete the handshake, unless it already failed for
    /// that job: then its first error, at once. A failure is remembered for the job.
    async fn open(&self, job_id: JobId) -> Result<Connection, ExecutorError> {
        if let Some(message) = self.failure(job_id) {
            tracing::debug!(plugin = %self.name, %message, "not started again: it already failed for this job");
            return Err(ExecutorError::Unavailable { message });
        }
        match Connection::open(&self.name, &self.path, self.options.handshake_timeout).await {
            Ok(connection) => {
                tracing::debug!(plugin = %self.name, version = connection.version(), "plugin started");
                Ok(connection)
            }
            Err(error) => {
                let error = unavailable(error);
                self.remember(job_id, &error);
                Err(error)
            }
        }
    }

    /// Why the plugin failed for `job_id`, if it did lately (see [`FAILURE_KEPT`]).
    fn failure(&self, job_id: JobId) -> Option<String> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures
            .iter()
            .rev()
            .find(|failure| failure.job_id == job_id && failure.at.elapsed() < FAILURE_KEPT)
            .map(|failure| failure.message.clone())
    }

    /// Remember that the plugin failed for `job_id` with `error`. Only the plugin's own failures
    /// (`Unavailable`) are: a rejection of the spec's settings ends the job anyway. The first
    /// failure of a job is the one kept.
    fn remember(&self, job_id: JobId, error: &ExecutorError) {
        let ExecutorError::Unavailable { message } = error else {
            return;
        };
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.retain(|failure| failure.at.elapsed() < FAILURE_KEPT);
        if failures.iter().any(|failure| failure.job_id == job_id) {
            return;
        }
        if failures.len() == FAILURES_KEPT {
            failures.pop_front();
        }
        failures.push_back(Failure {
            job_id,
            at: Instant::now(),
            message: message.clone(),
        });
    }

    /// Forget the plugin's failure for `job_id`: the job is over.
    fn forget(&self, job_id: JobId) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|failure| failure.job_id != job_id);
    }

    fn lost(&self, step: &StepRequest, error: &ConnectionError) -> ExecutorError {
        ExecutorError::StepFailed {
            message: format!("{error} (step {:?})", step.name),
        }
    }
}

fn unavailable(error: ConnectionError) -> ExecutorError {
    ExecutorError::Unavailable {
        message: error.to_string(),
    }
}

fn start_message(id: u64, task: &str, step: &StepRequest) -> HostMessage {
    HostMessage::Start(Start {
        id,
        task: task.to_owned(),
        step: step.name.clone(),
        job_id: step.job_id.to_string(),
        trace_id: step.trace_id.to_string(),
        command: match &step.command {
            CommandLine::Shell(line) => Command::Shell(line.clone()),
            CommandLine::Argv(argv) => Command::Argv(argv.clone()),
        },
        env: step.env_with_secrets(),
        workspace: Some(step.workspace.to_string_lossy().into_owned()),
        workdir: step.workdir.clone(),
        timeout_ms: Some(u64::try_from(step.timeout.as_millis()).unwrap_or(u64::MAX)),
        with: step.with.clone(),
    })
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Executor for PluginExecutor {
    fn check_step(&self, step: &StepRequest) -> Result<(), ExecutorError> {
        let refused = step.container.fields_set();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(ExecutorError::InvalidStep {
                message: format!(
                    "step {:?} runs on plugin runtime {}, which cannot honour {}; pass plugin settings in `with`",
                    step.name,
                    self.name,
                    refused.join(", ")
                ),
            })
        }
    }

    /// What the plugin announces: `contained` in its hello makes its steps contained; anything
    /// else, or a plugin that cannot be started, is the safe answer, not contained (a plugin
    /// that cannot start fails the job at `prepare` anyway, with the same error and without
    /// being started again). Read once: the plugin is started, read and stopped, as
    /// `mc plugins list` does; nothing of the job is sent to it.
    async fn containment(&self, step: &StepRequest) -> Containment {
        match self.announced(step.job_id).await {
            Ok(capabilities) if capabilities.iter().any(|c| c == capability::CONTAINED) => {
                Containment::Container
            }
            _ => Containment::None,
        }
    }

    /// The plugin's own `validate` of each step's `with`, on a connection of its own (started,
    /// asked, stopped, as for `containment`): nothing of the job is run. A plugin that failed
    /// its hello for the job is not started again: its first error, at once; one that does not
    /// answer a `validate` is remembered the same way, so `prepare` does not wait for it again.
    async fn validate_steps(&self, steps: &[StepRequest]) -> Result<(), ExecutorError> {
        let Some(job_id) = steps.first().map(|step| step.job_id) else {
            return Ok(());
        };
        // A plugin that does not validate (as its hello said) is not started again for nothing.
        let capabilities = self
            .announced(job_id)
            .await
            .map_err(|message| ExecutorError::Unavailable { message })?;
        if !capabilities.iter().any(|c| c == capability::VALIDATE) {
            return Ok(());
        }
        let connection = self.open(job_id).await?;
        let result = self.validate_on(&connection, steps).await;
        connection.shutdown(self.options.shutdown_grace).await;
        if let Err(error) = &result {
            self.remember(job_id, error);
        }
        result
    }

    async fn prepare(&self, steps: &[StepRequest]) -> Result<(), ExecutorError> {
        let Some(first) = steps.first() else {
            return Ok(());
        };
        let connection = self.connection(first.job_id).await?;
        let id = connection.next_id();
        match connection
            .request(
                id,
                &HostMessage::Describe(Describe { id }),
                self.options.request_timeout,
            )
            .await
            .map_err(unavailable)?
        {
            PluginMessage::Described(described) => {
                tracing::debug!(plugin = %self.name, version = %described.version, "plugin described itself");
            }
            other => {
                return Err(ExecutorError::Unavailable {
                    message: format!(
                        "plugin {} answered describe with {}",
                        self.name,
                        summary(&other)
                    ),
                });
            }
        }
        self.validate_on(&connection, steps).await
    }

    async fn run(
        &self,
        step: &StepRequest,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, ExecutorError> {
        let connection = self.connection(step.job_id).await?;
        let task = format!(
            "{}-{}",
            step.index,
            self.next_task.fetch_add(1, Ordering::Relaxed)
        );
        let mut events = connection.subscribe(&task);
        let id = connection.next_id();
        let reply = connection
            .request(
                id,
                &start_message(id, &task, step),
                self.options.request_timeout,
            )
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                connection.unsubscribe(&task);
                connection.settle(Duration::from_millis(200)).await;
                let error = match connection.death() {
                    Some(death) => ConnectionError::Lost(death),
                    None => error,
                };
                return Err(self.lost(step, &error));
            }
        };
        match reply {
            PluginMessage::Started(Started { pgid, .. }) => {
                if let Some(pgid) = pgid {
                    connection.record_task_group(&task, pgid);
                }
            }
            PluginMessage::Error(ErrorReply { message, .. }) => {
                connection.unsubscribe(&task);
                return Err(ExecutorError::StepFailed {
                    message: format!(
                        "plugin {} could not start step {:?}: {message}",
                        self.name, step.name
                    ),
                });
            }
            other => {
                connection.unsubscribe(&task);
                return Err(ExecutorError::StepFailed {
                    message: format!(
                        "plugin {} answered start with {}",
                        self.name,
                        summary(&other)
                    ),
                });
            }
        }
        tracing::debug!(plugin = %self.name, step = %step.name, %task, "plugin task started");

        // Taken now: a plugin killed while following the task takes its groups' record with it.
        let group = connection.task_group(&task);
        let mut result = self
            .follow(&connection, step, &task, &mut events, output, control)
            .await;
        connection.unsubscribe(&task);
        if let (Ok(outcome), Some(group)) = (&mut result, group) {
            outcome.teardown = verify_group(group, outcome.teardown.take()).await;
        }
        if result.is_ok() && connection.death().is_none() {
            // Fire and forget: the plugin frees the task; nothing waits for the answer.
            let id = connection.next_id();
            let _ = connection
                .send(&HostMessage::Destroy(Destroy {
                    id,
                    task: task.clone(),
                }))
                .await;
        }
        result
    }

    async fn finish(&self, job_id: JobId) {
        self.forget(job_id);
        let connection = self.connections.lock().await.remove(&job_id);
        if let Some(connection) = connection {
            connection.shutdown(self.options.shutdown_grace).await;
        }
    }
}

impl PluginExecutor {
    /// The capabilities of the plugin's hello, read once and kept: the plugin is started, read
    /// and stopped, as `mc plugins list` does; nothing of the job is sent to it. When it cannot
    /// be started, or sends no hello, the error is remembered for `job_id` (see
    /// [`PluginExecutor::open`]): every later question of the same job gets it at once.
    async fn announced(&self, job_id: JobId) -> Result<Vec<String>, String> {
        // Held while the plugin is probed: questions about the same plugin wait for one answer.
        let mut probe = self.announced.lock().await;
        if let Some(capabilities) = probe.capabilities.as_ref() {
            return Ok(capabilities.clone());
        }
        if let Some((at, error)) = &probe.failed
            && at.elapsed() < self.options.handshake_timeout
        {
            return Err(error.clone());
        }
        match self.open(job_id).await {
            Ok(connection) => {
                let capabilities = connection.hello().capabilities.clone();
                connection.shutdown(self.options.shutdown_grace).await;
                probe.capabilities = Some(capabilities.clone());
                Ok(capabilities)
            }
            Err(error) => {
                tracing::debug!(plugin = %self.name, %error, "plugin could not be asked what it announces");
                probe.failed = Some((Instant::now(), error.to_string()));
                Err(error.to_string())
            }
        }
    }

    /// Asks the plugin, when it has the `validate` capability, whether each step's `with` is
    /// acceptable.
    async fn validate_on(
        &self,
        connection: &Connection,
        steps: &[StepRequest],
    ) -> Result<(), ExecutorError> {
        if !connection
            .hello()
            .capabilities
            .iter()
            .any(|c| c == capability::VALIDATE)
        {
            return Ok(());
        }
        for step in steps {
            let id = connection.next_id();
            let request = HostMessage::Validate(Validate {
                id,
                step: step.name.clone(),
                with: step.with.clone(),
            });
            match connection
                .request(id, &request, self.options.request_timeout)
                .await
                .map_err(unavailable)?
            {
                PluginMessage::Ok(_) => {}
                PluginMessage::Error(ErrorReply {
                    code: ErrorCode::Unsupported,
                    ..
                }) => return Ok(()),
                PluginMessage::Error(ErrorReply { message, .. }) => {
                    return Err(ExecutorError::InvalidStep {
                        message: format!(
                            "step {:?}: plugin {} rejects its settings: {message}",
                            step.name, self.name
                        ),
                    });
                }
                other => {
                    return Err(ExecutorError::Unavailable {
                        message: format!(
                            "plugin {} answered validate with {}",
                            self.name,
                            summary(&other)
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stream `task`'s events into `output` until its exit event, honouring `control`.
    async fn follow(
        &self,
        connection: &Connection,
        step: &StepRequest,
        task: &str,
        events: &mut tokio::sync::mpsc::Receiver<TaskEvent>,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, ExecutorError> {
        let stop = control.stop_requested();
        tokio::pin!(stop);
        let mut stop_reason: Option<StopReason> = None;
        let mut give_up_at: Option<Instant> = None;
        let mut next_seq: u64 = 0;
        let mut warned_seq = false;
        let mut ping_at = Instant::now() + self.options.ping_interval;
        let mut ping: Option<tokio::sync::oneshot::Receiver<PluginMessage>> = None;
        let mut ping_deadline = Instant::now();
        let mut line = Vec::new();
        let exit: Exit = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(TaskEvent::Log(log)) => {
                        // The plugin numbers its log events from 0: a jump is output lost on
                        // the way, recorded as such in the step's log (a note, never silence).
                        if log.seq != next_seq {
                            if !warned_seq {
                                warned_seq = true;
                                tracing::warn!(plugin = %self.name, step = %step.name, expected = next_seq, got = log.seq, "plugin log events out of sequence");
                            }
                            output.note(&if log.seq > next_seq {
                                format!(
                                    "gap: plugin {} log events {next_seq} to {} of this step never arrived",
                                    self.name,
                                    log.seq - 1
                                )
                            } else {
                                format!(
                                    "gap: plugin {} sent log event {} again or out of order (expected {next_seq})",
                                    self.name, log.seq
                                )
                            })?;
                        }
                        next_seq = next_seq.max(log.seq.saturating_add(1));
                        let stream = match log.stream {
                            maestro_plugin_protocol::Stream::Stdout => Stream::Stdout,
                            maestro_plugin_protocol::Stream::Stderr => Stream::Stderr,
                        };
                        line.clear();
                        match log.bytes() {
                            Ok(bytes) => line.extend_from_slice(&bytes),
                            Err(_) => line.extend_from_slice(b"<plugin sent invalid base64>"),
                        }
                        if !log.partial {
                            line.push(b'\n');
                        }
                        output.write(stream, &line)?;
                    }
                    Some(TaskEvent::Exit(exit)) => break exit,
                    None => {
                        connection.settle(Duration::from_millis(200)).await;
                        let reason = connection
                            .death()
                            .unwrap_or_else(|| format!("plugin {} stopped reporting", self.name));
                        connection.kill(reason.clone());
                        return Err(ExecutorError::StepFailed { message: reason });
                    }
                },
                reason = &mut stop, if stop_reason.is_none() => {
                    tracing::info!(plugin = %self.name, step = %step.name, ?reason, "asking the plugin to stop the step");
                    stop_reason = Some(reason);
                    give_up_at = Some(Instant::now() + control.grace() + self.options.stop_slack);
                    let id = connection.next_id();
                    let stop = HostMessage::Stop(Stop {
                        id,
                        task: task.to_owned(),
                        signal: "SIGTERM".to_owned(),
                        grace_ms: duration_ms(control.grace()),
                    });
                    // The answer does not matter: the exit event (or the deadline) decides.
                    let _ = connection.send(&stop).await;
                }
                () = tokio::time::sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() => {
                    let reason = format!(
                        "plugin {} did not end the step within {} ms of being asked to stop it ({}); the plugin and its tasks were killed",
                        self.name,
                        duration_ms(control.grace() + self.options.stop_slack),
                        match stop_reason {
                            Some(StopReason::Cancelled) => "the job was cancelled",
                            _ => "the step timed out",
                        }
                    );
                    tracing::warn!(plugin = %self.name, step = %step.name, "{reason}");
                    connection.kill(reason.clone());
                    output.note(&reason)?;
                    // The step was stopped, as asked, only harder: it is recorded like a local
                    // step killed after its grace period (timed out or cancelled, signal 9).
                    return Ok(StepOutcome {
                        exit_code: None,
                        signal: Some(9),
                        stopped: stop_reason,
                        oom_killed: false,
                        teardown: None,
                    });
                }
                () = tokio::time::sleep_until(ping_at), if ping.is_none() => {
                    let id = connection.next_id();
                    match connection.begin_request(id, &HostMessage::Ping(Ping { id })).await {
                        Ok(reply) => {
                            ping = Some(reply);
                            ping_deadline = Instant::now() + self.options.request_timeout;
                        }
                        // A dead connection shows as the end of the task's events.
                        Err(_) => ping_at = Instant::now() + self.options.ping_interval,
                    }
                }
                _ = async {
                    match ping.as_mut() {
                        Some(reply) => reply.await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    ping = None;
                    ping_at = Instant::now() + self.options.ping_interval;
                }
                () = tokio::time::sleep_until(ping_deadline), if ping.is_some() => {
                    // A plugin that stops answering pings is hung: it is killed.
                    let reason = format!(
                        "plugin {} stopped answering pings (none answered within {} ms); the plugin and its tasks were killed",
                        self.name,
                        duration_ms(self.options.request_timeout)
                    );
                    connection.kill(reason.clone());
                    return Err(ExecutorError::StepFailed { message: reason });
                }
            }
        };
        outcome(&self.name, exit, stop_reason, output)
    }
}

/// Checks the task's process group after its exit event, against `reported`, the plugin's
/// word. A live process left in the group is killed and listed, and fails the teardown whatever
/// the plugin said. An empty group confirms a plugin that said its task left nothing; without
/// the plugin's word it proves nothing (the group may hold only a client of a remote task), and
/// the teardown stays unverified.
async fn verify_group(group: Group, reported: Option<Teardown>) -> Option<Teardown> {
    let deadline = Instant::now() + GROUP_EMPTY_WITHIN;
    loop {
        // Zombies are still in the group until their new parent reaps them: only live
        // processes count.
        let members = if group.alive() {
            group.members()
        } else {
            Vec::new()
        };
        if members.is_empty() {
            return reported.map(|teardown| match teardown.verified {
                true => Teardown::verified(TeardownMethod::ProcessGroup),
                false => teardown,
            });
        }
        if Instant::now() >= deadline {
            tracing::warn!(pgid = group.pgid(), remaining = ?members, "a plugin task left processes in its group; killed");
            group.kill();
            return Some(Teardown::failed(TeardownMethod::ProcessGroup, members));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn outcome(
    plugin: &str,
    exit: Exit,
    stop_reason: Option<StopReason>,
    output: &mut StepOutput,
) -> Result<StepOutcome, ExecutorError> {
    let mut outcome = StepOutcome {
        exit_code: exit.code,
        signal: exit.signal,
        stopped: stop_reason,
        oom_killed: false,
        // The plugin's word, when it gave one; the caller replaces it with its own check of
        // the task's process group when it could check one.
        teardown: exit.teardown.map(|teardown| Teardown {
            method: TeardownMethod::PluginReported,
            verified: teardown.verified,
            remaining: teardown.remaining,
        }),
    };
    match exit.reason {
        ExitReason::Completed => {}
        ExitReason::Stopped => {
            outcome.stopped = stop_reason.or(Some(StopReason::Cancelled));
        }
        ExitReason::TimedOut => {
            outcome.stopped = stop_reason.or(Some(StopReason::TimedOut));
        }
        ExitReason::Error => {
            let message = exit.message.unwrap_or_else(|| "no reason given".to_owned());
            if exit.fault == Some(Fault::Task) {
                output.note(&format!("plugin {plugin}: {message}"))?;
                if outcome.signal.is_none() && matches!(outcome.exit_code, None | Some(0)) {
                    outcome.exit_code = Some(1);
                }
            } else {
                return Err(ExecutorError::StepFailed {
                    message: format!("plugin {plugin}: {message}"),
                });
            }
        }
    }
    Ok(outcome)
}

fn summary(message: &PluginMessage) -> String {
    match message {
        PluginMessage::Error(ErrorReply { code, message, .. }) => {
            format!("an error ({code:?}): {message}")
        }
        other => {
            let line = other.to_line();
            let shown: String = line.trim_end().chars().take(120).collect();
            format!("an unexpected message {shown}")
        }
    }
}

/// Provides a [`PluginExecutor`] for every runtime name that has a plugin executable in the
/// search directories.
pub struct PluginProvider {
    dirs: Vec<PathBuf>,
    options: PluginOptions,
    search_description: Option<String>,
}

impl PluginProvider {
    /// A provider searching `dirs` in order (see [`search_dirs`](crate::search_dirs)).
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self::with_options(dirs, PluginOptions::default())
    }

    /// A provider whose executors keep the deadlines in `options`.
    pub fn with_options(dirs: Vec<PathBuf>, options: PluginOptions) -> Self {
        Self {
            dirs,
            options,
            search_description: None,
        }
    }

    /// Say where plugins are looked for in these words (e.g. `$MAESTRO_PLUGIN_PATH,
    /// <state root>/plugins and $PATH`) rather than by listing every directory, which for a
    /// `PATH` is a wall of text.
    pub fn describing_search_as(mut self, description: impl Into<String>) -> Self {
        self.search_description = Some(description.into());
        self
    }
}

impl ExecutorProvider for PluginProvider {
    fn provide(&self, runtime: &str) -> Option<Arc<dyn Executor>> {
        let path = discovery::find_plugin(runtime, &self.dirs)?;
        tracing::debug!(runtime, path = %path.display(), "runtime provided by a plugin");
        Some(Arc::new(PluginExecutor::with_options(
            runtime,
            &path,
            self.options.clone(),
        )))
    }

    fn names(&self) -> Vec<String> {
        crate::discovery::plugin_names(&self.dirs)
    }

    fn searched(&self) -> String {
        if let Some(description) = &self.search_description {
            return format!(
                "plugins ({}<runtime>) are looked for in {description}",
                maestro_plugin_protocol::EXECUTABLE_PREFIX
            );
        }
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|dir| dir.display().to_string())
            .collect();
        format!(
            "no plugin executable {}<runtime> in {}",
            maestro_plugin_protocol::EXECUTABLE_PREFIX,
            if dirs.is_empty() {
                "any directory (none to search)".to_owned()
            } else {
                dirs.join(", ")
            }
        )
    }
}
