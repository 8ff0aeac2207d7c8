//! [`DockerExecutor`]: the `docker` runtime, and the bookkeeping that makes sure no container
//! outlives its job: each one is removed by the executor, or handed to the engine's own
//! auto-remove once it has exited by itself.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use futures::StreamExt;
use maestro_core::JobId;
use maestro_core::executor::{
    ContainerSettings, Containment, Executor, ExecutorError, RemovedResource, StepControl,
    StepOutcome, StepOutput, StepRequest, Teardown, TeardownMethod,
};
use maestro_core::spec::PullPolicy;
use maestro_core::state::StateStore;
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{
    LABEL_JOB_ID, LABEL_MANAGED, LABEL_STEP, check_step, container_name, engine_sockets,
    removed_by_engine, shared_container, sharing_key, step_container, workspace_source,
};
use crate::engine::{self, CALL_TIMEOUT, Getting, call, short};
use crate::error::DockerError;
use crate::events::JobEvents;
use crate::step;

/// How long [`Executor::finish`] may take in all, however sick the engine: it then gives up
/// (logging what may be left, which `mc gc` removes later).
const FINISH_BUDGET: Duration = Duration::from_secs(20);
/// The part of [`FINISH_BUDGET`] given to the job's background work (creations, removals)
/// before `finish` aborts what is left and removes leftovers itself.
const FINISH_TASKS_WAIT: Duration = Duration::from_secs(10);
/// How long after a creation was abandoned mid-request `finish` looks for the job's containers
/// once more: the engine may complete a create it already received after we stopped waiting.
const LATE_SWEEP_DELAY: Duration = Duration::from_secs(1);

/// How many containers `mc gc` removes at once.
const GC_REMOVALS_AT_ONCE: usize = 8;
/// How long a step's container may take to be gone once the step ended (see
/// [`Inner::tear_down`]); a container still there then is a failed teardown.
const TEARDOWN_WITHIN: Duration = Duration::from_secs(10);
/// The part of [`TEARDOWN_WITHIN`] given to the engine's own removal of a container that
/// exited by itself (auto-remove), before the executor removes it itself.
const AUTO_REMOVE_WAIT: Duration = Duration::from_secs(2);

/// Runs steps in containers on a Docker engine.
///
/// Each step gets a fresh container of its image, with the job's workspace bind-mounted at
/// `/workspace`; with `reuse_container: true` the steps of a job that share an image and
/// settings run as execs in one container kept for the job. While a step runs, the container
/// of the job's next step (when that is a docker step too) is already being created. A step
/// container that exited by itself is removed by the engine (auto-remove; not under a memory
/// limit, see `removed_by_engine`); every other one the step ran in (stopped, memory-limited,
/// a shared one no later step needs) is removed by the executor. Either way the step ends only
/// once the engine reports its container gone, which its outcome records as a verified
/// teardown ([`TeardownMethod::ContainerRemoved`]). Containers of steps that could not run,
/// created ahead for steps that never ran, or still held for a job are removed in the
/// background, and [`Executor::finish`] waits for that (within a bound), so nothing outlives
/// the job.
///
/// Creating the executor does no I/O: the engine (`DOCKER_HOST`, else the default unix socket)
/// is connected to in [`Executor::prepare`], with API version negotiation, so that old
/// engines (20.10) and current ones both work.
#[derive(Clone, Default)]
pub struct DockerExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("host", &self.inner.host())
            .field("connected", &self.inner.client.initialized())
            .finish()
    }
}

impl DockerExecutor {
    /// An executor for the engine at `DOCKER_HOST` (or the default socket). Cheap: nothing is
    /// connected until a job is prepared.
    pub fn new() -> Self {
        Self::default()
    }

    /// An executor for the engine at `DOCKER_HOST` (or the default socket) that notes each
    /// container creation among the job's notes in `journal` before asking for it (see
    /// [`Executor::settle_job`]).
    pub fn with_journal(journal: Arc<dyn StateStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                journal: Some(journal),
                ..Inner::default()
            }),
        }
    }

    /// An executor for the engine at `host` (`unix:///path/to/docker.sock` or
    /// `tcp://host:port`), whatever `DOCKER_HOST` says.
    pub fn with_host(host: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                host: Some(host.into()),
                ..Inner::default()
            }),
        }
    }
}

type Created = Result<String, DockerError>;

#[derive(Default)]
struct Inner {
    /// The engine's address, when not taken from `DOCKER_HOST`.
    host: Option<String>,
    /// The store whose jobs' notes record each container creation before it is asked for, so
    /// that `mc gc` can settle those a killed `mc` left in flight.
    journal: Option<Arc<dyn StateStore>>,
    /// The client, built once the engine answered and the API version was agreed.
    client: OnceCell<Docker>,
    jobs: Mutex<HashMap<JobId, Job>>,
}

/// What the executor holds for one job.
#[derive(Default)]
struct Job {
    /// The job's steps that run here, in order (from `prepare`).
    steps: Vec<StepRequest>,
    /// Containers created ahead of their step, by step index.
    precreated: HashMap<usize, oneshot::Receiver<Created>>,
    /// The job's shared containers (`reuse_container`), one per distinct settings.
    shared: Vec<SharedContainer>,
    /// Every container created for the job and not yet known to be removed.
    containers: BTreeSet<String>,
    /// Background work (creations, removals) that `finish` must await.
    tasks: Vec<JoinHandle<()>>,
    /// A creation's outcome is unknown (timed out, connection lost): a container may exist
    /// that we have no id for, so `finish` also looks for the job's containers by label.
    sweep: bool,
    /// A creation was cancelled or aborted mid-way: the engine may still complete it, so
    /// `finish` looks for the job's containers once more after [`LATE_SWEEP_DELAY`].
    abandoned: bool,
    /// Cancelled first thing in `finish`: creations still under way then are for steps that
    /// will never run (and may be pulling an image), so they stop at once.
    cancel: CancellationToken,
    /// The engine's events for the job's containers (exits, OOM kills, removals): subscribed in
    /// `prepare` when the job has steps in containers of their own, or by the first such step;
    /// replaced (with replay) when it broke. Dropped (and the stream closed) in `finish`.
    events: Option<Arc<JobEvents>>,
}

struct SharedContainer {
    key: ContainerSettings,
    id: Option<String>,
    starting: Option<oneshot::Receiver<Created>>,
}

/// Whether a container is a step's own or a job's shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Step,
    Shared,
}

impl Inner {
    fn jobs(&self) -> MutexGuard<'_, HashMap<JobId, Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_job<R>(&self, job_id: JobId, f: impl FnOnce(&mut Job) -> R) -> R {
        f(self.jobs().entry(job_id).or_default())
    }

    /// Change a job the executor still holds; a finished job is not brought back.
    fn update_job(&self, job_id: JobId, f: impl FnOnce(&mut Job)) {
        if let Some(job) = self.jobs().get_mut(&job_id) {
            f(job);
        }
    }

    /// The engine's socket paths, which no workspace may contain: the usual places, and those
    /// of `DOCKER_HOST` and of the address this executor was given.
    fn sockets(&self) -> Vec<PathBuf> {
        let from_env = std::env::var("DOCKER_HOST").ok();
        engine_sockets(from_env.iter().chain(&self.host).map(String::as_str))
    }

    fn host(&self) -> String {
        self.host.clone().unwrap_or_else(engine::engine_host)
    }

    /// The engine: pinged and the API version agreed on first use.
    async fn engine(&self) -> Result<Docker, DockerError> {
        self.client
            .get_or_try_init(|| async {
                let host = self.host();
                let version = engine::ping(&host).await?;
                engine::client(&host, &version)
            })
            .await
            .cloned()
    }

    /// The engine, checked to answer now (a connection made for an earlier job may be stale).
    async fn live_engine(&self) -> Result<Docker, DockerError> {
        if let Some(docker) = self.client.get() {
            engine::ping(&self.host()).await?;
            return Ok(docker.clone());
        }
        self.engine().await
    }

    /// Record that `id` exists for `job_id`; false if the job was already finished.
    fn track(&self, job_id: JobId, id: &str) -> bool {
        match self.jobs().get_mut(&job_id) {
            Some(job) => {
                job.containers.insert(id.to_owned());
                true
            }
            None => false,
        }
    }

    fn untrack(&self, job_id: JobId, id: &str) {
        if let Some(job) = self.jobs().get_mut(&job_id) {
            job.containers.remove(id);
        }
    }

    /// Create (and for a shared container, start) a container for `step` in the background;
    /// the id arrives on the returned channel. The task is the job's until `finish`, which
    /// waits for it, so a container created for a step that never runs is still removed.
    fn spawn_create(
        self: &Arc<Self>,
        docker: &Docker,
        step: &StepRequest,
        kind: Kind,
        getting: Getting,
    ) -> oneshot::Receiver<Created> {
        let (sender, receiver) = oneshot::channel();
        let inner = Arc::clone(self);
        let docker = docker.clone();
        let step = step.clone();
        let job_id = step.job_id;
        // Register the job before the task can look for it.
        let cancel = self.with_job(job_id, |job| job.cancel.clone());
        let task = tokio::spawn(async move {
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    // The request may have reached the engine: look for the container by label.
                    inner.update_job(job_id, |job| {
                        job.sweep = true;
                        job.abandoned = true;
                    });
                    Err(DockerError::Abandoned(format!("step {:?}", step.name)))
                }
                result = inner.create(&docker, &step, kind, getting) => result,
            };
            if let Err(error) = &result {
                if error.is_ambiguous() {
                    inner.update_job(job_id, |job| job.sweep = true);
                }
                tracing::debug!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, %error, "container creation failed");
            }
            // The step may have stopped waiting (cancelled); the container is tracked anyway.
            let _ = sender.send(result);
        });
        self.with_job(job_id, |job| job.tasks.push(task));
        receiver
    }

    async fn create(
        &self,
        docker: &Docker,
        step: &StepRequest,
        kind: Kind,
        getting: Getting,
    ) -> Created {
        // Checked again here, not only when the job was submitted: the path is resolved now,
        // and what gets mounted is what was checked.
        let workspace = workspace_source(step, &self.sockets()).map_err(DockerError::Workspace)?;
        let (body, name, what) = match kind {
            Kind::Step => (
                step_container(step, &workspace),
                container_name(step, &step.name),
                format!("step {:?}", step.name),
            ),
            Kind::Shared => {
                let suffix = format!("shared-{}", step.index);
                (
                    shared_container(step, &workspace),
                    container_name(step, &suffix),
                    format!("the shared container of step {:?}", step.name),
                )
            }
        };
        let image = body.image.clone().unwrap_or_default();
        self.note(
            step.job_id,
            &Note::Create {
                name: name.clone(),
                image,
            },
        )?;
        let created = engine::create_container(docker, &name, body, getting, &what).await;
        if !created.as_ref().is_err_and(DockerError::is_ambiguous) {
            // The engine answered: nothing more of this request can land.
            self.note(step.job_id, &Note::Answered { name: name.clone() })?;
        }
        let id = created?;
        if !self.track(step.job_id, &id) {
            // The job was finished meanwhile: nobody will run or remove this container.
            let _ = engine::remove(docker, &id).await;
            return Err(DockerError::Abandoned(what));
        }
        tracing::debug!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, container = short(&id), ?kind, "container created");
        if kind == Kind::Shared {
            call(
                || format!("start {what}"),
                CALL_TIMEOUT,
                docker.start_container(
                    &id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                ),
            )
            .await?;
        }
        Ok(id)
    }

    /// Note a creation about to be asked for, or answered, in the job's directory.
    fn note(&self, job_id: JobId, note: &Note) -> Result<(), DockerError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(note).unwrap_or_default();
        line.push(b'\n');
        journal
            .append_note(job_id, JOURNAL, &line)
            .map_err(|error| {
                DockerError::Workspace(format!("cannot note a container creation: {error}"))
            })
    }

    /// Make sure that no creation the dead `mc` of `job_id` asked for and got no answer to can
    /// still produce a container: for each such name, take the name with a placeholder
    /// container (never started) so that a creation still in flight fails on it, or remove
    /// the container that landed meanwhile; then release the name. The engine reserves a
    /// name when it begins a creation, so once the placeholder holds the name, a request the
    /// dead `mc` sent cannot land any more: it was read by the engine before gc started and
    /// has reached its name reservation within [`FENCE_HOLD`], or fails on the placeholder.
    async fn settle_job(&self, job_id: JobId) -> Result<Vec<String>, DockerError> {
        let Some(journal) = &self.journal else {
            return Ok(Vec::new());
        };
        let notes = match journal.read_note(job_id, JOURNAL) {
            Ok(Some(notes)) => notes,
            Ok(None) => return Ok(Vec::new()),
            Err(error) => return Err(DockerError::Workspace(error.to_string())),
        };
        let mut pending: Vec<(String, String)> = Vec::new();
        for line in notes.split(|b| *b == b'\n') {
            match serde_json::from_slice::<Note>(line) {
                Ok(Note::Create { name, image }) => {
                    pending.retain(|(known, _)| *known != name);
                    pending.push((name, image));
                }
                Ok(Note::Answered { name }) => pending.retain(|(known, _)| *known != name),
                Err(_) => {}
            }
        }
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let docker = self.engine().await?;
        let fences = pending
            .iter()
            .map(|(name, image)| fence(&docker, job_id, name, image));
        let mut removed = Vec::new();
        for (result, (name, _)) in futures::future::join_all(fences)
            .await
            .into_iter()
            .zip(&pending)
        {
            removed.extend(result?);
            self.note(job_id, &Note::Answered { name: name.clone() })?;
        }
        Ok(removed)
    }

    /// Remove `id` in the background; `finish` waits for it (and retries it if it failed).
    fn spawn_remove(self: &Arc<Self>, docker: &Docker, job_id: JobId, id: String) {
        let inner = Arc::clone(self);
        let docker = docker.clone();
        let task = tokio::spawn(async move {
            match engine::remove(&docker, &id).await {
                Ok(()) => inner.untrack(job_id, &id),
                Err(error) => {
                    tracing::warn!(%job_id, container = short(&id), %error, "could not remove container; will retry when the job finishes");
                }
            }
        });
        self.with_job(job_id, |job| job.tasks.push(task));
    }

    /// Start getting the container of the job's next step ready while `step` runs, when that
    /// step is this executor's. Only the adjacent step: a step of another runtime in between
    /// (a local `docker build -t app:ci`, say) may change the image the next container needs.
    fn prepare_next(self: &Arc<Self>, docker: &Docker, step: &StepRequest) {
        let next = self.with_job(step.job_id, |job| {
            job.steps
                .iter()
                .find(|candidate| candidate.index == step.index + 1)
                .cloned()
        });
        if let Some(next) = next {
            self.prepare_step(docker, &next, Getting::Ahead);
        }
    }

    /// Start creating the container `step` will run in, unless that is under way or done.
    /// Ahead of the step, only from an image already present, and never for `pull: always`
    /// (which pulls as part of the step).
    fn prepare_step(self: &Arc<Self>, docker: &Docker, step: &StepRequest, getting: Getting) {
        if getting == Getting::Ahead && step.container.pull == Some(PullPolicy::Always) {
            return;
        }
        if step.reuse_container {
            let key = sharing_key(&step.container);
            let known = self.with_job(step.job_id, |job| job.shared.iter().any(|s| s.key == key));
            if !known {
                let receiver = self.spawn_create(docker, step, Kind::Shared, getting);
                self.with_job(step.job_id, |job| {
                    job.shared.push(SharedContainer {
                        key,
                        id: None,
                        starting: Some(receiver),
                    });
                });
            }
        } else {
            let known = self.with_job(step.job_id, |job| job.precreated.contains_key(&step.index));
            if !known {
                let receiver = self.spawn_create(docker, step, Kind::Step, getting);
                self.with_job(step.job_id, |job| {
                    job.precreated.insert(step.index, receiver)
                });
            }
        }
    }

    /// Wait for a container being created, unless the step is stopped first.
    async fn await_created(
        receiver: oneshot::Receiver<Created>,
        step: &StepRequest,
        control: &StepControl,
    ) -> Result<Result<String, StepOutcome>, DockerError> {
        tokio::select! {
            biased;
            reason = control.stop_requested() => Ok(Err(StepOutcome {
                stopped: Some(reason),
                ..StepOutcome::default()
            })),
            created = receiver => match created {
                Ok(created) => created.map(Ok),
                Err(_) => Err(DockerError::Lost(format!(
                    "step {:?}: the task creating its container ended without an answer",
                    step.name
                ))),
            },
        }
    }

    async fn run_in_own_container(
        self: &Arc<Self>,
        docker: &Docker,
        step: &StepRequest,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, DockerError> {
        let now = Getting::Now(step.container.pull.unwrap_or_default());
        let ahead = self.with_job(step.job_id, |job| job.precreated.remove(&step.index));
        let created = match ahead {
            Some(receiver) => match Self::await_created(receiver, step, control).await {
                // The image was not there ahead of time: create (and pull) now.
                Err(DockerError::NotAhead { .. }) => None,
                other => Some(other),
            },
            None => None,
        };
        let created = match created {
            Some(created) => created,
            None => {
                let receiver = self.spawn_create(docker, step, Kind::Step, now);
                Self::await_created(receiver, step, control).await
            }
        };
        let id = match created {
            Ok(Ok(id)) => id,
            // Stopped before its container existed: nothing of the step ran, so there is no
            // teardown to verify (a container created meanwhile is removed by `finish`).
            Ok(Err(stopped)) => return Ok(stopped),
            Err(error) => return Err(error),
        };
        self.prepare_next(docker, step);
        let events = self.job_events(docker, step.job_id);
        let result = step::run_container(docker, &id, step, output, control, &events).await;
        match result {
            Ok(mut outcome) => {
                // It exited by itself and the engine removes it (auto-remove, which also holds
                // if `mc` dies now); or it was stopped, or runs under a memory limit, and the
                // executor removes it. Either way the step ends once the engine reports it gone:
                // the job's next container then never starts while this one is torn down (a
                // start overlapping another container's teardown was measured slower than the
                // two in turn), and the outcome says what was verified.
                let by_engine = outcome.stopped.is_none() && removed_by_engine(step);
                outcome.teardown = Some(
                    self.tear_down(docker, step, &id, by_engine.then_some(&*events))
                        .await,
                );
                Ok(outcome)
            }
            // Could not run: remove it in the background (`finish` waits for that).
            Err(error) => {
                self.spawn_remove(docker, step.job_id, id);
                Err(error)
            }
        }
    }

    /// Make sure the container `id` that `step` ran in is gone, within [`TEARDOWN_WITHIN`], and
    /// say how that was checked. With `auto_removed` (the job's event stream), the engine is
    /// removing it (auto-remove), and its `destroy` event or the engine's answer to a wait for
    /// removal is awaited for [`AUTO_REMOVE_WAIT`];
    /// otherwise, or when that does not come, the executor removes it (forced) and waits until
    /// the engine answers that it does not know it any more (404). A container still there at
    /// the deadline is a failed teardown; it stays tracked and is removed in the background
    /// (and by `finish`, and `mc gc` at the latest).
    async fn tear_down(
        self: &Arc<Self>,
        docker: &Docker,
        step: &StepRequest,
        id: &str,
        auto_removed: Option<&JobEvents>,
    ) -> Teardown {
        let started = Instant::now();
        let deadline = started + TEARDOWN_WITHIN;
        let mut gone = false;
        if let Some(events) = auto_removed {
            // Whichever tells first: the `destroy` event on the job's stream, or the engine's
            // answer to a wait for removal (which answers when the stream is silent). When both
            // break off, or neither answers in time, the removal below finds out.
            let destroyed = events.removed(id);
            let waited = engine::wait_removed(docker, id);
            tokio::pin!(destroyed, waited);
            let (mut listening, mut waiting) = (true, true);
            let either = async {
                while listening || waiting {
                    tokio::select! {
                        removed = &mut destroyed, if listening => {
                            if removed {
                                return true;
                            }
                            listening = false;
                        }
                        result = &mut waited, if waiting => {
                            if result.is_ok() {
                                return true;
                            }
                            waiting = false;
                        }
                    }
                }
                false
            };
            gone = tokio::time::timeout(AUTO_REMOVE_WAIT, either)
                .await
                .unwrap_or(false);
        }
        if !gone {
            gone = match tokio::time::timeout_at(deadline, engine::remove(docker, id)).await {
                Ok(Ok(())) => true,
                Ok(Err(error)) => {
                    tracing::warn!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, container = short(id), %error, "could not remove the step's container");
                    false
                }
                Err(_) => false,
            };
        }
        if gone {
            self.untrack(step.job_id, id);
            tracing::debug!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, container = short(id), elapsed_ms = started.elapsed().as_millis(), "step container removed");
            Teardown::verified(TeardownMethod::ContainerRemoved)
        } else {
            tracing::warn!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, container = short(id), within_s = TEARDOWN_WITHIN.as_secs(), "the step's container is still there; removing it in the background");
            self.track(step.job_id, id);
            self.spawn_remove(docker, step.job_id, id.to_owned());
            Teardown::failed(
                TeardownMethod::ContainerRemoved,
                vec![format!("container {} still exists", short(id))],
            )
        }
    }

    /// The job's event stream: the one `prepare` subscribed to, or a new one when there is none
    /// or it broke (the new one replays what the old one missed).
    fn job_events(&self, docker: &Docker, job_id: JobId) -> Arc<JobEvents> {
        self.with_job(job_id, |job| match &job.events {
            Some(events) if !events.ended() => Arc::clone(events),
            _ => {
                let events = Arc::new(JobEvents::subscribe(docker, job_id));
                job.events = Some(Arc::clone(&events));
                events
            }
        })
    }

    async fn run_in_shared_container(
        self: &Arc<Self>,
        docker: &Docker,
        step: &StepRequest,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, DockerError> {
        let key = sharing_key(&step.container);
        let now = Getting::Now(step.container.pull.unwrap_or_default());
        let mut retried = false;
        let id = loop {
            self.prepare_step(docker, step, now);
            let (ready, starting) = self.with_job(step.job_id, |job| {
                match job.shared.iter_mut().find(|shared| shared.key == key) {
                    Some(shared) => (shared.id.clone(), shared.starting.take()),
                    None => (None, None),
                }
            });
            match (ready, starting) {
                (Some(id), _) => break id,
                (None, Some(receiver)) => {
                    match Self::await_created(receiver, step, control).await {
                        Ok(Ok(id)) => {
                            self.with_job(step.job_id, |job| {
                                if let Some(shared) = job.shared.iter_mut().find(|s| s.key == key) {
                                    shared.id = Some(id.clone());
                                }
                            });
                            break id;
                        }
                        Ok(Err(stopped)) => return Ok(stopped),
                        // Not created ahead for want of the image: create (and pull) it now.
                        Err(DockerError::NotAhead { .. }) if !retried => {
                            retried = true;
                            self.forget_shared(step.job_id, &key);
                        }
                        Err(error) => {
                            // Forget it, so that a later step with these settings tries afresh.
                            self.forget_shared(step.job_id, &key);
                            return Err(error);
                        }
                    }
                }
                (None, None) => {
                    return Err(DockerError::Lost(format!(
                        "step {:?}: its shared container was lost by an earlier step",
                        step.name
                    )));
                }
            }
        };
        self.prepare_next(docker, step);
        let end = step::run_exec(docker, &id, step, output, control).await?;
        let needed_later = self.with_job(step.job_id, |job| {
            job.steps
                .iter()
                .any(|later| later.index > step.index && sharing_key(&later.container) == key)
        });
        let mut outcome = end.outcome;
        if end.container_killed || !needed_later {
            // Killed, or no later step runs in it: remove it now rather than when the job
            // finishes, and record its removal as this step's teardown; it covers whatever the
            // steps that shared it left running.
            self.forget_shared(step.job_id, &key);
            outcome.teardown = Some(self.tear_down(docker, step, &id, None).await);
        }
        // Otherwise the container is kept for a later step, with whatever this step left
        // running in it (a service a later step uses is what reuse is for): there is nothing
        // removed yet to verify, so the teardown stays unknown until the step that removes it.
        Ok(outcome)
    }

    fn forget_shared(&self, job_id: JobId, key: &ContainerSettings) {
        self.with_job(job_id, |job| job.shared.retain(|shared| shared.key != *key));
    }

    /// Release everything of `job_id` within [`FINISH_BUDGET`]: stop creations for steps that
    /// will never run, wait for the background work, then remove what is still known (and, if a
    /// creation's outcome is unknown, whatever carries the job's label), all at once.
    async fn finish(&self, job_id: JobId) {
        let started = Instant::now();
        let deadline = started + FINISH_BUDGET;
        match self.jobs().get(&job_id) {
            Some(job) => job.cancel.cancel(),
            None => return,
        }
        loop {
            let mut tasks = match self.jobs().get_mut(&job_id) {
                Some(job) => std::mem::take(&mut job.tasks),
                None => return,
            };
            if tasks.is_empty() {
                break;
            }
            let all = futures::future::join_all(tasks.iter_mut());
            if tokio::time::timeout_at(started + FINISH_TASKS_WAIT, all)
                .await
                .is_err()
            {
                let unfinished = tasks.iter().filter(|task| !task.is_finished()).count();
                tracing::warn!(%job_id, unfinished, "background container work did not end in time; aborting it");
                for task in &tasks {
                    task.abort();
                }
                self.update_job(job_id, |job| {
                    job.sweep = true;
                    job.abandoned = true;
                });
            }
        }
        let Some(job) = self.jobs().remove(&job_id) else {
            return;
        };
        let Some(docker) = self.client.get() else {
            return;
        };
        let work = async {
            remove_all(docker, job_id, job.containers.iter().map(String::as_str)).await;
            if job.sweep {
                sweep(docker, job_id).await;
            }
            if job.abandoned {
                tokio::time::sleep(LATE_SWEEP_DELAY).await;
                sweep(docker, job_id).await;
            }
        };
        if tokio::time::timeout_at(deadline, work).await.is_err() {
            tracing::warn!(%job_id, budget_s = FINISH_BUDGET.as_secs(), "could not remove the job's containers in time; `mc gc` removes what is left");
        }
        tracing::debug!(%job_id, containers = job.containers.len(), elapsed_ms = started.elapsed().as_millis(), "docker job finished");
    }
}

/// The job's note of container creations: one JSON line before each request, one when the
/// engine answered it.
const JOURNAL: &str = "docker-creations";

/// How long a placeholder holds a name: a creation the engine read before gc started reaches
/// its name reservation well within it.
const FENCE_HOLD: Duration = Duration::from_millis(300);

/// How many times a name is contended for before gc gives up on it.
const FENCE_ATTEMPTS: u32 = 100;

/// A line of [`JOURNAL`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Note {
    /// A creation is about to be asked for.
    Create {
        /// The container's name.
        name: String,
        /// Its image.
        image: String,
    },
    /// The engine answered the creation of `name` (or gc settled it).
    Answered {
        /// The container's name.
        name: String,
    },
}

/// Take `name` with a placeholder, removing whatever holds it, then release it; the lines of
/// what was removed.
async fn fence(
    docker: &Docker,
    job_id: JobId,
    name: &str,
    image: &str,
) -> Result<Vec<String>, DockerError> {
    let mut removed = Vec::new();
    for _ in 0..FENCE_ATTEMPTS {
        let body = crate::config::placeholder_container(job_id, image);
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
            .name(name)
            .build();
        let action = || format!("hold the name {name} of a container of job {job_id}");
        match call(
            action,
            CALL_TIMEOUT,
            docker.create_container(Some(options), body),
        )
        .await
        {
            Ok(placeholder) => {
                tokio::time::sleep(FENCE_HOLD).await;
                engine::remove(docker, &placeholder.id).await?;
                return Ok(removed);
            }
            // No such image: no creation from it can land now either.
            Err(DockerError::Api { source, .. }) if crate::error::is_not_found(&source) => {
                return Ok(removed);
            }
            // The name is taken: by the container the dead `mc` asked for (remove it), or by a
            // creation still under way (the removal finds nothing yet; try again).
            Err(DockerError::Api { source, .. }) if crate::error::is_name_conflict(&source) => {
                match engine::inspect(docker, name, CALL_TIMEOUT).await {
                    Ok(container) => {
                        let id = container.id.unwrap_or_else(|| name.to_owned());
                        engine::remove(docker, &id).await?;
                        tracing::info!(%job_id, container = short(&id), "removed a container whose creation its mc did not see answered");
                        removed.push(format!(
                            "removed docker container {name} ({}) of job {job_id}, whose creation its mc did not see answered",
                            short(&id)
                        ));
                    }
                    Err(DockerError::Api { source, .. }) if crate::error::is_not_found(&source) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(error) => return Err(error),
                }
            }
            Err(error) => return Err(error),
        }
    }
    Err(DockerError::Workspace(format!(
        "the name {name} of a container of job {job_id} kept being taken; run mc gc again"
    )))
}

/// Remove the containers `ids` of `job_id`, all at once, logging what could not be removed.
async fn remove_all<'a>(docker: &Docker, job_id: JobId, ids: impl IntoIterator<Item = &'a str>) {
    let removals = ids.into_iter().map(|id| async move {
        if let Err(error) = engine::remove(docker, id).await {
            tracing::warn!(%job_id, container = short(id), %error, "could not remove the job's container");
        }
    });
    futures::future::join_all(removals).await;
}

/// Remove every container labelled with `job_id`: those whose creation we lost track of.
async fn sweep(docker: &Docker, job_id: JobId) {
    let label = format!("{LABEL_JOB_ID}={job_id}");
    match engine::list_labelled(docker, &label).await {
        Ok(leftovers) => {
            remove_all(
                docker,
                job_id,
                leftovers.iter().map(|left| left.id.as_str()),
            )
            .await;
        }
        Err(error) => {
            tracing::warn!(%job_id, %error, "could not look for the job's leftover containers");
        }
    }
}

#[async_trait]
impl Executor for DockerExecutor {
    fn check_step(&self, step: &StepRequest) -> Result<(), ExecutorError> {
        check_step(step, &self.inner.sockets())
            .map_err(|message| ExecutorError::InvalidStep { message })
    }

    /// Every docker step runs in a container of the engine: its own namespaces, the engine's
    /// default seccomp profile, no new privileges, fewer capabilities, and only the workspace
    /// of the host (see `docs/executors.md`, "What a container step can still reach").
    async fn containment(&self, _step: &StepRequest) -> Containment {
        Containment::Container
    }

    async fn prepare(&self, steps: &[StepRequest]) -> Result<(), ExecutorError> {
        let docker = self
            .inner
            .live_engine()
            .await
            .map_err(DockerError::into_executor_error)?;
        let Some(first) = steps.first() else {
            return Ok(());
        };
        // Subscribe before the first container exists, so that no exit can be missed.
        let events = steps
            .iter()
            .any(|step| !step.reuse_container)
            .then(|| Arc::new(JobEvents::subscribe(&docker, first.job_id)));
        self.inner.with_job(first.job_id, |job| {
            job.steps = steps.to_vec();
            job.events = events;
        });
        // Create the first container while the runner records the job as running: the
        // creation is on every job's critical path. Only when the job starts with a step of
        // ours: a step of another runtime before it may build the image it needs.
        if first.index == 0 {
            self.inner.prepare_step(&docker, first, Getting::Ahead);
        }
        tracing::debug!(job_id = %first.job_id, trace_id = %first.trace_id, steps = steps.len(), "docker job prepared");
        Ok(())
    }

    async fn run(
        &self,
        step: &StepRequest,
        output: &mut StepOutput,
        control: &StepControl,
    ) -> Result<StepOutcome, ExecutorError> {
        let docker = self
            .inner
            .engine()
            .await
            .map_err(DockerError::into_executor_error)?;
        let result = if step.reuse_container {
            self.inner
                .run_in_shared_container(&docker, step, output, control)
                .await
        } else {
            self.inner
                .run_in_own_container(&docker, step, output, control)
                .await
        };
        if let Err(error) = &result {
            tracing::debug!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, %error, "docker step could not run");
        }
        // A request cut short (the connection closed under it) may be the engine going away:
        // asked again, an engine that no longer answers is said to be gone.
        let gone = match &result {
            Err(error) if error.is_engine_gone() => true,
            Err(error) if error.is_ambiguous() => engine::ping(&self.inner.host()).await.is_err(),
            _ => false,
        };
        result.map_err(|error| {
            if gone {
                // The engine went away mid-step: the backend vanished (exit 4, as documented),
                // and what it was running cannot be stopped or removed now. Said, with the way
                // out.
                ExecutorError::Unavailable {
                    message: format!(
                        "{error}; the engine stopped answering while the step ran, so its container may still be there: `mc gc` removes it once the engine answers again"
                    ),
                }
            } else {
                error.into_executor_error()
            }
        })
    }

    async fn finish(&self, job_id: JobId) {
        self.inner.finish(job_id).await;
    }

    async fn settle_job(&self, job_id: JobId) -> Result<Vec<String>, ExecutorError> {
        self.inner
            .settle_job(job_id)
            .await
            .map_err(DockerError::into_executor_error)
    }

    async fn collect_garbage(
        &self,
        is_live: &(dyn Fn(JobId) -> bool + Send + Sync),
    ) -> Result<Vec<RemovedResource>, ExecutorError> {
        if self.inner.host.is_none() && !engine::engine_configured() {
            // No DOCKER_HOST and no socket at the default place: Docker is not installed here,
            // so there is nothing of ours to collect (and `mc gc` need not fail for it).
            tracing::debug!("no Docker engine configured; nothing to collect");
            return Ok(Vec::new());
        }
        let docker = self
            .inner
            .engine()
            .await
            .map_err(DockerError::into_executor_error)?;
        let managed = engine::list_labelled(&docker, &format!("{LABEL_MANAGED}=true"))
            .await
            .map_err(|error| ExecutorError::Unavailable {
                message: error.to_string(),
            })?;
        let mut doomed = Vec::new();
        for container in managed {
            // A container whose job id does not parse is not ours to judge: say so, leave it.
            let Some(job_id) = container
                .labels
                .get(LABEL_JOB_ID)
                .and_then(|id| id.parse::<JobId>().ok())
            else {
                tracing::warn!(
                    container = short(&container.id),
                    "left docker container {} ({}): its {LABEL_JOB_ID} label is missing or not a job id; remove it by hand if it is not in use",
                    container.name,
                    short(&container.id)
                );
                continue;
            };
            if !is_live(job_id) {
                doomed.push((job_id, container));
            }
        }
        // A few removals at a time: each may wait for the engine's own removal to end.
        let removals = futures::stream::iter(doomed)
            .map(|(job_id, container)| {
                let docker = &docker;
                async move {
                    let result = engine::remove(docker, &container.id).await;
                    (job_id, container, result)
                }
            })
            .buffered(GC_REMOVALS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut removed = Vec::new();
        for (job_id, container, result) in removals {
            let step = container.labels.get(LABEL_STEP).map_or("?", String::as_str);
            match result {
                Ok(()) => {
                    tracing::info!(%job_id, step, container = short(&container.id), "removed a container of an abandoned job");
                    removed.push(RemovedResource {
                        runtime: "docker".to_owned(),
                        kind: "container".to_owned(),
                        id: short(&container.id).to_owned(),
                        name: Some(container.name.clone()),
                        job_id,
                        step: container.labels.get(LABEL_STEP).cloned(),
                    });
                }
                Err(error) => {
                    tracing::warn!(%job_id, container = short(&container.id), %error, "could not remove a container of an abandoned job");
                }
            }
        }
        Ok(removed)
    }
}
