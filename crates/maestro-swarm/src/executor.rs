//! [`SwarmExecutor`]: a step as a replicated-job service, watched to its end and removed.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::models::{Task, TaskState};
use bollard::query_parameters::LogsOptions;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Stream, StreamExt};
use maestro_core::JobId;
use maestro_core::executor::{
    Containment, Executor, ExecutorError, RemovedResource, StepControl, StepOutcome, StepOutput,
    StepRequest, StopReason, Teardown, TeardownMethod,
};
use maestro_docker::{EngineConnection, LABEL_JOB_ID, LABEL_MANAGED, LABEL_STEP};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{self, LABEL_RUNTIME, LABEL_SERVICE_ID, RUNTIME};
use crate::engine::{self, SwarmError, short};

/// How often a step's task is asked for its state, and a teardown checked, once
/// [`FAST_POLL_FOR`] has passed.
const POLL: Duration = Duration::from_millis(100);
/// The interval before that: most steps and teardowns end within seconds, and every poll's
/// delay is added to the step's wall time; a request to the manager's local socket costs far
/// less than the milliseconds saved.
const FAST_POLL: Duration = Duration::from_millis(20);
/// How long polling stays fast.
const FAST_POLL_FOR: Duration = Duration::from_secs(3);

/// The polling interval `elapsed` into a wait.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < FAST_POLL_FOR {
        FAST_POLL
    } else {
        POLL
    }
}
/// How long the engine may take to tear a task down after its service was removed, beyond the
/// step's grace period.
const TEARDOWN_SLACK: Duration = Duration::from_secs(10);
/// How long reading the rest of a finished task's output may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stream that follows a stopped container may take to end.
const FOLLOW_END_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times in a row asking for the task's state may fail before the step is lost.
const MAX_POLL_ERRORS: u32 = 20;
/// How many times a follow stream that ended early is opened again.
const MAX_LOG_REOPENS: u32 = 50;
/// How long `finish` and `mc gc` may spend in all.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(40);

type LogStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The `swarm` runtime: each step a one-task replicated-job service on the swarm whose manager
/// `DOCKER_HOST` (else the default socket) names. See the crate documentation.
#[derive(Default)]
pub struct SwarmExecutor {
    connection: tokio::sync::Mutex<Option<Docker>>,
    /// Each job's images, pinned once per job (so all its steps run the same bytes) and ahead
    /// of its first step (`prepare` starts them), with the credentials for their registries.
    pins: std::sync::Mutex<HashMap<(JobId, String), Pin>>,
    /// How many services each job created (or may have) whose removal, with their task's
    /// containers, no step's teardown verified: `finish` sweeps the job's labels only then.
    unsettled: std::sync::Mutex<HashMap<JobId, usize>>,
    /// The step indices of each job's swarm steps, from `prepare`.
    steps: std::sync::Mutex<HashMap<JobId, Vec<usize>>>,
    /// Removals handed to the background by steps another swarm step of the job follows;
    /// `finish` awaits them.
    removals: std::sync::Mutex<HashMap<JobId, Vec<tokio::task::JoinHandle<Teardown>>>>,
}

/// An image being pinned, or pinned: the pinned reference and the registry credentials, or
/// why not (one line).
type Pin = Shared<BoxFuture<'static, Result<Pinned, String>>>;

/// An image pinned to its digest, and the credentials for its registry.
#[derive(Clone)]
struct Pinned {
    image: String,
    credentials: Option<DockerCredentials>,
}

impl SwarmExecutor {
    /// An executor that connects when a job is prepared.
    pub fn new() -> Self {
        Self::default()
    }

    /// The manager's client, connecting (and checking that the engine is an active manager)
    /// the first time.
    async fn manager(&self) -> Result<Docker, ExecutorError> {
        let mut connection = self.connection.lock().await;
        if let Some(docker) = connection.as_ref() {
            return Ok(docker.clone());
        }
        let EngineConnection {
            docker,
            version,
            host,
        } = maestro_docker::connect_engine()
            .await
            .map_err(|message| ExecutorError::Unavailable { message })?;
        engine::check_manager(&docker, &host, &version)
            .await
            .map_err(|message| ExecutorError::Unavailable { message })?;
        *connection = Some(docker.clone());
        Ok(docker)
    }

    /// `image` pinned for `job_id`, starting the work if nothing asked before. The work runs
    /// on its own task, so it goes on while the runner records the job's start.
    fn pin(&self, docker: &Docker, job_id: JobId, image: &str) -> Pin {
        let mut pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        pins.entry((job_id, image.to_owned()))
            .or_insert_with(|| {
                let docker = docker.clone();
                let image = image.to_owned();
                let task = tokio::spawn(async move {
                    let credentials = registry_credentials(&image).await?;
                    let pinned =
                        engine::resolve_image(&docker, &image, credentials.clone()).await?;
                    Ok(Pinned {
                        image: pinned,
                        credentials,
                    })
                });
                async move {
                    task.await
                        .map_err(|error| format!("cannot pin the image: {error}"))?
                }
                .boxed()
                .shared()
            })
            .clone()
    }
}

/// How a watched task ended.
enum Ended {
    /// Its command exited with this code.
    Exited(i32),
    /// It could not run, or the swarm lost it: one line saying why.
    Failed(String),
    /// The step was told to stop.
    Stopped(StopReason),
}

/// The follow stream of a service's output, opened again (skipping what was written) when it
/// ends before the task does.
struct Follow {
    stream: Option<LogStream>,
    /// The task's container, when it runs on the manager's own engine: its output is read
    /// there, straight from the engine that holds it, rather than relayed by the swarm (the
    /// same messages, one per line, in the same order).
    container: Option<String>,
    /// Whether the current stream follows that container: the engine ends such a stream once
    /// the container stopped and its output was read to the end.
    follows_container: bool,
    /// A stream that followed the container ended: every message of the task was written.
    complete: bool,
    /// Messages written to the step's log so far.
    written: usize,
    /// Messages of the current stream still to skip (already written from an earlier one).
    skip: usize,
    reopens: u32,
}

impl Follow {
    fn new() -> Self {
        Self {
            stream: None,
            container: None,
            follows_container: false,
            complete: false,
            written: 0,
            skip: 0,
            reopens: 0,
        }
    }

    fn open(&mut self, docker: &Docker, service: &str, follow: bool) {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            ..LogsOptions::default()
        };
        self.follows_container = follow && self.container.is_some();
        self.stream = Some(match &self.container {
            Some(container) => Box::pin(docker.logs(container, Some(options))),
            None => Box::pin(docker.service_logs(service, Some(options))),
        });
        self.skip = self.written;
    }

    /// Write one message unless it was written already.
    fn write(&mut self, output: &mut StepOutput, message: LogOutput) -> std::io::Result<()> {
        if self.skip > 0 {
            self.skip -= 1;
            return Ok(());
        }
        self.written += 1;
        let (stream, bytes) = match message {
            LogOutput::StdErr { message } => (maestro_core::executor::Stream::Stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (maestro_core::executor::Stream::Stdout, message)
            }
            LogOutput::StdIn { .. } => return Ok(()),
        };
        output.write(stream, &bytes)
    }

    /// The next message of the current stream; `None` when it ended (or failed, which the
    /// final read makes up for).
    async fn next(&mut self) -> Option<LogOutput> {
        let stream = self.stream.as_mut()?;
        match stream.next().await {
            Some(Ok(message)) => Some(message),
            Some(Err(error)) => {
                tracing::debug!(%error, "the service's log stream failed");
                self.stream = None;
                None
            }
            None => {
                self.complete |= self.follows_container;
                self.stream = None;
                None
            }
        }
    }

    /// Write what was not written of a task that ended: the rest of a stream that follows its
    /// container, then the whole output read once more without following, of which only what
    /// was not written yet is written (a followed service's stream may lag behind the task and
    /// never ends; on a loaded engine a container's followed stream was seen to end a few dozen
    /// lines short of its last output, so its end is not taken for the end of the output).
    async fn drain(
        &mut self,
        docker: &Docker,
        service: &str,
        output: &mut StepOutput,
    ) -> std::io::Result<()> {
        if self.follows_container && self.stream.is_some() {
            let rest = async {
                while let Some(message) = self.next().await {
                    self.write(output, message)?;
                }
                Ok::<(), std::io::Error>(())
            };
            if let Ok(result) = tokio::time::timeout(FOLLOW_END_TIMEOUT, rest).await {
                result?;
            }
        }
        self.open(docker, service, false);
        let read = async {
            while let Some(message) = self.next().await {
                self.write(output, message)?;
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(DRAIN_TIMEOUT, read).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    service,
                    "reading the rest of the task's output took too long; the step's log may be incomplete"
                );
                Ok(())
            }
        }
    }
}

/// What the manager's own engine said about the task's container.
#[derive(Debug, PartialEq, Eq)]
enum LocalEvent {
    /// The container started: the command runs.
    Started,
    /// The container that started exited with this code.
    Exited(i32),
}

/// The task's container as the manager's own engine reports it, when the task runs there: its
/// `die` event says the command ended as soon as it did, where the task's state reaches the
/// manager only with the node's next batched status report (≈ 0.1–0.2 s later). A task on
/// another node, or an event stream that fails, leaves the polled task state to tell.
struct LocalTask {
    events: Option<engine::EventStream>,
    /// The container the engine reported started.
    started: Option<String>,
}

impl LocalTask {
    fn new(docker: &Docker, service_name: &str) -> Self {
        Self {
            events: Some(engine::container_events(docker, service_name)),
            started: None,
        }
    }

    /// The next event that matters; `None` for one that does not, or when the stream ended.
    async fn next(&mut self) -> Option<LocalEvent> {
        let events = self.events.as_mut()?;
        match events.next().await {
            Some(Ok(event)) => {
                let actor = event.actor.unwrap_or_default();
                let id = actor.id.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                local_event(
                    event.action.as_deref().unwrap_or_default(),
                    id,
                    attributes.get("exitCode").map(String::as_str),
                    &mut self.started,
                )
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "the manager's event stream failed; polling the task alone");
                self.events = None;
                None
            }
            None => {
                self.events = None;
                None
            }
        }
    }
}

/// What event `action` of container `id` means, given the container that `started` earlier.
/// Only the `die` of a container that started counts as the command's end: a container that
/// could not start is the task state's to describe ("before its command ran").
fn local_event(
    action: &str,
    id: String,
    exit_code: Option<&str>,
    started: &mut Option<String>,
) -> Option<LocalEvent> {
    match action {
        "start" if !id.is_empty() => {
            *started = Some(id);
            Some(LocalEvent::Started)
        }
        "die" if started.as_deref() == Some(id.as_str()) => exit_code
            .and_then(|code| code.parse().ok())
            .map(LocalEvent::Exited),
        _ => None,
    }
}

/// What the state of `tasks` (newest first) means for the step, if it ended.
fn evaluate(
    step: &StepRequest,
    image: &str,
    tasks: &[Task],
    waited: Duration,
    schedule_timeout: Duration,
) -> Option<Ended> {
    let name = &step.name;
    let task = tasks.first();
    let status = task
        .and_then(|task| task.status.clone())
        .unwrap_or_default();
    let reason = status
        .err
        .clone()
        .filter(|err| !err.is_empty())
        .or_else(|| status.message.clone().filter(|message| !message.is_empty()))
        .unwrap_or_else(|| "no reason given".to_owned());
    let exit_code = status
        .container_status
        .as_ref()
        .and_then(|container| container.exit_code)
        .and_then(|code| i32::try_from(code).ok());
    let state = status.state;
    if engine::is_unscheduled(state) {
        if waited < schedule_timeout {
            return None;
        }
        return Some(Ended::Failed(format!(
            "step {name:?}: no swarm node took its task within {} s (schedule_timeout_seconds): {reason}",
            schedule_timeout.as_secs()
        )));
    }
    let node = task
        .and_then(|task| task.node_id.as_deref())
        .map_or("?", short);
    match state? {
        TaskState::COMPLETE => Some(Ended::Exited(exit_code.unwrap_or(0))),
        TaskState::FAILED => Some(match exit_code {
            Some(code) if code != 0 => Ended::Exited(code),
            _ => Ended::Failed(format!(
                "step {name:?}: its task failed on node {node} before its command ran: {reason}"
            )),
        }),
        TaskState::REJECTED => Some(Ended::Failed(format!(
            "step {name:?}: node {node} rejected its task for image {image}: {reason}"
        ))),
        state @ (TaskState::SHUTDOWN | TaskState::ORPHANED | TaskState::REMOVE) => {
            Some(Ended::Failed(format!(
                "step {name:?}: the swarm lost its task (state {state}, node {node}: {reason}); this is a failure of the cluster, not of the step"
            )))
        }
        _ => None,
    }
}

impl SwarmExecutor {
    /// Watch service `service` until its task ends or the step must stop, streaming its output.
    #[expect(
        clippy::too_many_arguments,
        reason = "the two streams it reads and the step's sinks, each borrowed from run_step"
    )]
    async fn watch(
        docker: &Docker,
        step: &StepRequest,
        image: &str,
        service: &str,
        follow: &mut Follow,
        local: &mut LocalTask,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<Ended, ExecutorError> {
        let created = Instant::now();
        let schedule_timeout = config::schedule_timeout(step);
        let poll = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(poll);
        let mut poll_errors = 0;
        let mut running = false;
        let mut last_state = None;
        loop {
            tokio::select! {
                biased;
                reason = control.stop_requested() => return Ok(Ended::Stopped(reason)),
                message = follow.next(), if follow.stream.is_some() => {
                    if let Some(message) = message {
                        follow.write(output, message)?;
                    }
                }
                event = local.next(), if local.events.is_some() => match event {
                    Some(LocalEvent::Started) => {
                        follow.container.clone_from(&local.started);
                        if !running {
                            running = true;
                            tracing::debug!(service, "the task's container started on the manager");
                        }
                        if follow.stream.is_none() && !follow.complete && follow.reopens < MAX_LOG_REOPENS {
                            follow.reopens += 1;
                            follow.open(docker, service, true);
                        }
                    }
                    Some(LocalEvent::Exited(code)) => {
                        tracing::debug!(service, code, "the task's container exited on the manager");
                        return Ok(Ended::Exited(code));
                    }
                    None => {}
                },
                () = &mut poll => {
                    poll.as_mut().reset(Instant::now() + poll_interval(created.elapsed()));
                    let tasks = match engine::tasks(docker, service).await {
                        Ok(tasks) => {
                            poll_errors = 0;
                            tasks
                        }
                        Err(error) => {
                            poll_errors += 1;
                            if poll_errors >= MAX_POLL_ERRORS {
                                return Ok(Ended::Failed(format!(
                                    "step {:?}: lost track of its task: {error}", step.name
                                )));
                            }
                            continue;
                        }
                    };
                    let state = tasks.first().and_then(|task| task.status.as_ref()).and_then(|status| status.state);
                    if state != last_state {
                        tracing::debug!(service, state = ?state, "task state");
                        last_state = state;
                    }
                    // A task has output once its container runs (before, the stream would end at
                    // once); the final read covers whatever this misses.
                    if state == Some(TaskState::RUNNING) && !running {
                        running = true;
                        tracing::debug!(service, "the task runs");
                    }
                    if let Some(ended) = evaluate(step, image, &tasks, created.elapsed(), schedule_timeout) {
                        return Ok(ended);
                    }
                    // Follow the output once the task is on a node; open the stream again if it
                    // ended while the task runs.
                    if running
                        && follow.stream.is_none()
                        && !follow.complete
                        && follow.reopens < MAX_LOG_REOPENS
                    {
                        follow.reopens += 1;
                        follow.open(docker, service, true);
                    }
                }
            }
        }
    }

    /// Remove service `service` and every container of its task, and check that they are gone.
    /// With `grace`, the task may still run: it is stopped first, and gets its grace period
    /// (plus slack) to exit before its container is forced away; its output meanwhile is still
    /// written. `container` is the task's container on the manager's own engine, when it ran
    /// there: it is removed at once rather than when the engine's task reaper gets to it.
    async fn tear_down(
        docker: &Docker,
        service: &str,
        container: Option<&str>,
        grace: Option<Duration>,
        follow: &mut Follow,
        output: &mut StepOutput,
    ) -> Teardown {
        if let Some(grace) = grace {
            // Removing a job service does not stop its task (Docker 20.10): stop it first, with
            // the step's grace period, wherever it runs, still recording its output meanwhile.
            if let Err(error) = engine::stop_tasks(docker, service).await {
                tracing::warn!(%error, service, "cannot stop the step's task through the swarm");
            }
            let until = Instant::now() + grace + TEARDOWN_SLACK;
            let mut tick = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    message = follow.next(), if follow.stream.is_some() => {
                        if let Some(message) = message
                            && let Err(error) = follow.write(output, message)
                        {
                            tracing::warn!(%error, "cannot record the step's output");
                            follow.stream = None;
                        }
                    }
                    _ = tick.tick() => {
                        let active = engine::has_active_tasks(docker, service).await.unwrap_or(true);
                        if !active || Instant::now() >= until {
                            break;
                        }
                    }
                }
            }
        }
        follow.stream = None;
        Self::remove_and_verify(docker, service, container).await
    }

    /// Remove service `service` and every container of its task (`container`, when known, is
    /// the one on the manager's own engine), and check that they are gone, for
    /// [`TEARDOWN_SLACK`] at most.
    async fn remove_and_verify(
        docker: &Docker,
        service: &str,
        container: Option<&str>,
    ) -> Teardown {
        let label = format!("{LABEL_SERVICE_ID}={service}");
        // The engine would remove the task's container too, but only once the node's agent
        // has seen the service go (tens of milliseconds later, more under load); a forced
        // removal at the same time ends the step sooner. Its output was read already.
        let remove_container = async {
            match container {
                Some(container) => engine::remove_container(docker, container).await,
                None => Ok(()),
            }
        };
        let (service_removed, container_removed) =
            tokio::join!(engine::remove_service(docker, service), remove_container);
        if let Err(error) = service_removed {
            tracing::warn!(%error, service, "cannot remove the step's service");
        }
        if let Err(error) = container_removed {
            tracing::debug!(%error, "cannot remove the task's container yet");
        }
        tracing::debug!(service, "service removed");
        let removed = Instant::now();
        let until = removed + TEARDOWN_SLACK;
        let labels = [label.as_str()];
        loop {
            let mut remaining = Vec::new();
            let (exists, containers) = tokio::join!(
                engine::service_exists(docker, service),
                engine::containers(docker, &labels)
            );
            match exists {
                Ok(false) => {}
                Ok(true) => {
                    remaining.push(format!("service {} still exists", short(service)));
                    let _ = engine::remove_service(docker, service).await;
                }
                Err(error) => remaining.push(format!("service {}: {error}", short(service))),
            }
            match containers {
                Ok(containers) => {
                    for container in containers {
                        if let Err(error) = engine::remove_container(docker, &container.id).await {
                            tracing::debug!(%error, "cannot remove a task container yet");
                        }
                        remaining.push(format!("container {} still exists", short(&container.id)));
                    }
                }
                Err(error) => {
                    remaining.push(format!("containers of service {}: {error}", short(service)))
                }
            }
            tracing::debug!(?remaining, "teardown check");
            if remaining.is_empty() {
                return Teardown::verified(TeardownMethod::ContainerRemoved);
            }
            if Instant::now() >= until {
                return Teardown::failed(TeardownMethod::ContainerRemoved, remaining);
            }
            tokio::time::sleep(poll_interval(removed.elapsed())).await;
        }
    }
}

#[async_trait]
impl Executor for SwarmExecutor {
    fn check_step(&self, step: &StepRequest) -> Result<(), ExecutorError> {
        config::check_step(step).map_err(|message| ExecutorError::InvalidStep { message })
    }

    async fn containment(&self, _step: &StepRequest) -> Containment {
        Containment::Container
    }

    async fn prepare(&self, steps: &[StepRequest]) -> Result<(), ExecutorError> {
        let docker = self.manager().await?;
        if let Some(first) = steps.first() {
            self.steps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(first.job_id, steps.iter().map(|step| step.index).collect());
        }
        for step in steps {
            if let Some(image) = step.container.image.as_deref() {
                drop(self.pin(&docker, step.job_id, image));
            }
        }
        Ok(())
    }

    async fn run(
        &self,
        step: &StepRequest,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, ExecutorError> {
        let span = tracing::info_span!("swarm_step", job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name);
        self.run_step(step, output, control).instrument(span).await
    }

    async fn finish(&self, job_id: JobId) {
        self.steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&job_id);
        let removals = self
            .removals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&job_id)
            .unwrap_or_default();
        for removal in removals {
            match removal.await {
                Ok(teardown) if teardown.verified => self.unsettle(job_id, -1),
                Ok(teardown) => {
                    tracing::warn!(remaining = ?teardown.remaining, "a step's service or containers remain")
                }
                Err(error) => tracing::warn!(%error, "a step's removal did not finish"),
            }
        }
        self.pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(job, _), _| *job != job_id);
        self.sweep_job(job_id).await;
    }

    async fn collect_garbage(
        &self,
        is_live: &(dyn Fn(JobId) -> bool + Send + Sync),
    ) -> Result<Vec<RemovedResource>, ExecutorError> {
        self.garbage(is_live).await
    }
}

impl SwarmExecutor {
    async fn run_step(
        &self,
        step: &StepRequest,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, ExecutorError> {
        let docker = self.manager().await?;
        let requested = step.container.image.as_deref().unwrap_or_default();
        let pin = self.pin(&docker, step.job_id, requested);
        let Pinned { image, credentials } = tokio::select! {
            biased;
            reason = control.stop_requested() => return Ok(StepOutcome { stopped: Some(reason), ..StepOutcome::default() }),
            pinned = pin => pinned.map_err(|message| ExecutorError::StepFailed {
                message: format!("step {:?}: {message}", step.name),
            })?,
        };
        tracing::debug!(image, "image pinned");
        let spec = config::service_spec(step, &image, control.grace());
        self.unsettle(step.job_id, 1);
        let service = engine::create_service(&docker, spec, credentials)
            .await
            .map_err(|error| ExecutorError::StepFailed {
                message: format!("step {:?}: {error}", step.name),
            })?;
        tracing::debug!(service, "service created");
        let mut local = LocalTask::new(&docker, &config::service_name(step));
        let mut follow = Follow::new();
        let shown = if image == requested {
            requested.to_owned()
        } else {
            format!("{requested} ({image})")
        };
        let ended = Self::watch(
            &docker,
            step,
            &shown,
            &service,
            &mut follow,
            &mut local,
            output,
            control,
        )
        .await;
        local.events = None;
        tracing::debug!(service, "task ended");
        let mut drained = Ok(());
        if let Ok(Ended::Exited(_)) = &ended {
            drained = follow.drain(&docker, &service, output).await;
            tracing::debug!(service, "output drained");
        }
        if let Ok(Ended::Exited(code)) = &ended
            && drained.is_ok()
            && self.followed(step)
        {
            // The command ended and its output is in the step's log: nothing of the step runs
            // or is still to be read. The service goes now; the exited container's removal
            // (the slow part: its filesystem) overlaps the next step, and the job does not
            // end before it was verified (`finish`).
            if let Err(error) = engine::remove_service(&docker, &service).await {
                tracing::warn!(%error, service, "cannot remove the step's service");
            }
            let (docker, container) = (docker.clone(), local.started.clone());
            let removal = tokio::spawn(async move {
                Self::remove_and_verify(&docker, &service, container.as_deref()).await
            });
            self.removals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(step.job_id)
                .or_default()
                .push(removal);
            return Ok(StepOutcome::exited(*code));
        }
        // Only a task that ended by itself is known to run nothing any more.
        let grace = match &ended {
            Ok(Ended::Exited(_)) => None,
            _ => Some(control.grace()),
        };
        let teardown = Self::tear_down(
            &docker,
            &service,
            local.started.as_deref(),
            grace,
            &mut follow,
            output,
        )
        .await;
        drained?;
        let ended = ended?;
        if teardown.verified {
            self.unsettle(step.job_id, -1);
        } else {
            tracing::warn!(remaining = ?teardown.remaining, "the step's service or containers remain");
        }
        match ended {
            Ended::Exited(code) => Ok(StepOutcome {
                teardown: Some(teardown),
                ..StepOutcome::exited(code)
            }),
            Ended::Stopped(reason) => Ok(StepOutcome {
                stopped: Some(reason),
                teardown: Some(teardown),
                ..StepOutcome::default()
            }),
            Ended::Failed(message) => Err(ExecutorError::StepFailed { message }),
        }
    }

    /// Whether another swarm step of the job comes after `step`.
    fn followed(&self, step: &StepRequest) -> bool {
        self.steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&step.job_id)
            .is_some_and(|indices| indices.iter().any(|index| *index > step.index))
    }

    /// Count `change` more services of `job_id` that may remain.
    fn unsettle(&self, job_id: JobId, change: isize) {
        let mut unsettled = self
            .unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = unsettled.entry(job_id).or_default();
        *count = count.saturating_add_signed(change);
    }

    async fn sweep_job(&self, job_id: JobId) {
        let unsettled = self
            .unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&job_id);
        if unsettled == Some(0) {
            // Every step's teardown found its service and containers gone.
            return;
        }
        let docker = match self.connection.lock().await.clone() {
            Some(docker) => docker,
            None => return,
        };
        let job = format!("{LABEL_JOB_ID}={job_id}");
        let runtime = format!("{LABEL_RUNTIME}={RUNTIME}");
        let sweep = async {
            if let Ok(services) = engine::services(&docker, &[&job, &runtime]).await {
                for service in &services {
                    tracing::warn!(service = %service.name, "removing a service the job left");
                }
                for (_, error) in retire(&docker, &services).await {
                    tracing::warn!(%error, "cannot remove a service the job left");
                }
            }
            if let Ok(containers) = engine::containers(&docker, &[&job, &runtime]).await {
                for container in containers {
                    tracing::warn!(container = %container.name, "removing a task container the job left");
                    let _ = engine::remove_container(&docker, &container.id).await;
                }
            }
        };
        if tokio::time::timeout(SWEEP_TIMEOUT, sweep).await.is_err() {
            tracing::warn!(%job_id, "the swarm manager did not answer in time; run mc gc later");
        }
    }

    async fn garbage(
        &self,
        is_live: &(dyn Fn(JobId) -> bool + Send + Sync),
    ) -> Result<Vec<RemovedResource>, ExecutorError> {
        if !maestro_docker::engine_configured() {
            return Ok(Vec::new());
        }
        let connection = match maestro_docker::connect_engine().await {
            Ok(connection) => connection,
            // The docker runtime reports an engine that does not answer.
            Err(_) => return Ok(Vec::new()),
        };
        let docker = connection.docker;
        let managed = format!("{LABEL_MANAGED}=true");
        let runtime = format!("{LABEL_RUNTIME}={RUNTIME}");
        let dead = |labels: &std::collections::HashMap<String, String>| {
            labels
                .get(LABEL_JOB_ID)
                .and_then(|id| id.parse::<JobId>().ok())
                .filter(|id| !is_live(*id))
                .map(|id| (id, labels.get(LABEL_STEP).cloned().unwrap_or_default()))
        };
        let mut removed = Vec::new();
        let collect = async {
            let is_manager = engine::check_manager(&docker, &connection.host, &connection.version)
                .await
                .is_ok();
            if is_manager {
                let services = engine::services(&docker, &[&managed, &runtime])
                    .await
                    .map_err(unavailable)?;
                let services: Vec<_> = services
                    .into_iter()
                    .filter(|service| dead(&service.labels).is_some())
                    .collect();
                let failed = retire(&docker, &services).await;
                if let Some((_, error)) = failed.first() {
                    return Err(unavailable(SwarmError::Api {
                        action: "remove the services of dead jobs".to_owned(),
                        reason: error.to_string(),
                        status: None,
                    }));
                }
                for service in services {
                    let Some((job, step)) = dead(&service.labels) else {
                        continue;
                    };
                    removed.push(RemovedResource {
                        runtime: RUNTIME.to_owned(),
                        kind: "service".to_owned(),
                        id: short(&service.id).to_owned(),
                        name: Some(service.name.clone()),
                        job_id: job,
                        step: Some(step),
                    });
                }
            }
            let containers = engine::containers(&docker, &[&managed, &runtime])
                .await
                .map_err(unavailable)?;
            for container in containers {
                let Some((job, step)) = dead(&container.labels) else {
                    continue;
                };
                engine::remove_container(&docker, &container.id)
                    .await
                    .map_err(unavailable)?;
                removed.push(RemovedResource {
                    runtime: RUNTIME.to_owned(),
                    kind: "task container".to_owned(),
                    id: short(&container.id).to_owned(),
                    name: Some(container.name.clone()),
                    job_id: job,
                    step: Some(step),
                });
            }
            Ok::<(), ExecutorError>(())
        };
        match tokio::time::timeout(SWEEP_TIMEOUT, collect).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ExecutorError::Unavailable {
                    message:
                        "the swarm manager did not answer within 20 s while collecting garbage"
                            .to_owned(),
                });
            }
        }
        Ok(removed)
    }
}

/// Stop the tasks of `services` (see [`engine::stop_tasks`]), give them [`TEARDOWN_SLACK`] to
/// exit, then remove the services; the services that could not be removed, with why.
async fn retire<'a>(
    docker: &Docker,
    services: &'a [engine::Labelled],
) -> Vec<(&'a engine::Labelled, SwarmError)> {
    for service in services {
        if let Err(error) = engine::stop_tasks(docker, &service.id).await {
            tracing::debug!(%error, service = %service.name, "cannot stop a service's task");
        }
    }
    let until = Instant::now() + TEARDOWN_SLACK;
    for service in services {
        while Instant::now() < until
            && engine::has_active_tasks(docker, &service.id)
                .await
                .unwrap_or(false)
        {
            tokio::time::sleep(POLL).await;
        }
    }
    let mut failed = Vec::new();
    for service in services {
        if let Err(error) = engine::remove_service(docker, &service.id).await {
            failed.push((service, error));
        }
    }
    failed
}

fn unavailable(error: SwarmError) -> ExecutorError {
    ExecutorError::Unavailable {
        message: error.to_string(),
    }
}

/// The caller's credentials for `image`'s registry, read off the runtime's threads (a
/// credential helper is a program that may take a moment). The error names the registry and
/// the helper, never a secret.
async fn registry_credentials(image: &str) -> Result<Option<DockerCredentials>, String> {
    let image = image.to_owned();
    let found = tokio::task::spawn_blocking(move || maestro_docker::credentials::for_image(&image))
        .await
        .map_err(|error| format!("cannot read the registry credentials: {error}"))?
        .map_err(|error| error.to_string())?;
    if let Some(found) = &found {
        tracing::debug!(registry = found.registry(), "registry credentials found");
    }
    Ok(found.map(|found| found.docker_credentials()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use bollard::models::{ContainerStatus, TaskStatus};
    use maestro_core::executor::{CommandLine, ContainerSettings};
    use maestro_core::trace::TraceId;

    use super::*;

    fn step() -> StepRequest {
        StepRequest {
            host_env: Default::default(),
            secrets: Default::default(),
            span_id: maestro_core::trace::SpanId::generate(),
            job_id: JobId::now_v7(),
            job_name: "j".to_owned(),
            trace_id: TraceId::parse("trace-1").unwrap(),
            index: 0,
            name: "build".to_owned(),
            runtime: RUNTIME.to_owned(),
            command: CommandLine::Shell("true".to_owned()),
            env: BTreeMap::new(),
            workspace: PathBuf::from("/src"),
            workdir: None,
            timeout: Duration::from_secs(10),
            container: ContainerSettings::default(),
            reuse_container: false,
            with: None,
            isolation: Default::default(),
            writable_paths: Vec::new(),
            host_access: Vec::new(),
        }
    }

    fn task(state: TaskState, exit_code: Option<i64>, err: &str) -> Task {
        Task {
            node_id: Some("node1234567890abcdef".to_owned()),
            status: Some(TaskStatus {
                state: Some(state),
                err: Some(err.to_owned()),
                container_status: exit_code.map(|code| ContainerStatus {
                    exit_code: Some(code),
                    ..ContainerStatus::default()
                }),
                ..TaskStatus::default()
            }),
            ..Task::default()
        }
    }

    fn ended(tasks: &[Task], waited: u64) -> Option<Ended> {
        evaluate(
            &step(),
            "app:1",
            tasks,
            Duration::from_secs(waited),
            Duration::from_secs(60),
        )
    }

    fn failure(ended: Option<Ended>) -> String {
        match ended {
            Some(Ended::Failed(message)) => message,
            _ => panic!("expected a failure"),
        }
    }

    #[test]
    fn exit_codes_come_from_the_container_status_not_the_message() {
        assert!(matches!(
            ended(&[task(TaskState::COMPLETE, Some(0), "")], 1),
            Some(Ended::Exited(0))
        ));
        assert!(matches!(
            ended(
                &[task(TaskState::FAILED, Some(42), "task: non-zero exit (3)")],
                1
            ),
            Some(Ended::Exited(42))
        ));
        let message = failure(ended(
            &[task(
                TaskState::FAILED,
                Some(0),
                "starting container failed: boom",
            )],
            1,
        ));
        assert!(message.contains("before its command ran: starting container failed: boom"));
    }

    #[test]
    fn pending_tasks_fail_only_after_the_schedule_timeout_with_the_engines_reason() {
        let pending = [task(
            TaskState::PENDING,
            None,
            "no suitable node (scheduling constraints not satisfied on 1 node)",
        )];
        assert!(ended(&pending, 59).is_none());
        let message = failure(ended(&pending, 60));
        assert!(message.contains("within 60 s"), "{message}");
        assert!(message.contains("no suitable node"), "{message}");
        assert!(ended(&[], 10).is_none(), "no task yet");
        assert!(failure(ended(&[], 61)).contains("no reason given"));
        assert!(ended(&[task(TaskState::RUNNING, None, "")], 600).is_none());
    }

    #[test]
    fn only_the_death_of_a_container_that_started_ends_the_step() {
        let mut started = None;
        assert_eq!(
            local_event("die", "c1".to_owned(), Some("127"), &mut started),
            None,
            "a container that never started is the task state's to describe"
        );
        assert_eq!(
            local_event("start", "c1".to_owned(), None, &mut started),
            Some(LocalEvent::Started)
        );
        assert_eq!(started.as_deref(), Some("c1"));
        assert_eq!(
            local_event("die", "c2".to_owned(), Some("0"), &mut started),
            None,
            "another container"
        );
        assert_eq!(
            local_event("die", "c1".to_owned(), None, &mut started),
            None,
            "no exit code: the task state tells"
        );
        assert_eq!(
            local_event("die", "c1".to_owned(), Some("42"), &mut started),
            Some(LocalEvent::Exited(42))
        );
    }

    #[test]
    fn rejected_and_lost_tasks_say_what_happened() {
        let message = failure(ended(
            &[task(TaskState::REJECTED, None, "No such image: app:1")],
            1,
        ));
        assert!(message.contains("image app:1"), "{message}");
        assert!(message.contains("No such image"), "{message}");
        for state in [TaskState::SHUTDOWN, TaskState::ORPHANED, TaskState::REMOVE] {
            let message = failure(ended(&[task(state, None, "node down")], 1));
            assert!(message.contains("failure of the cluster"), "{message}");
        }
    }
}
