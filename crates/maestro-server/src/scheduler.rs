//! The queue: accepted jobs wait here, durably, and run at most `max_concurrent_jobs` at a
//! time, owners taking turns and each owner's jobs first come first served ([`FairQueue`]).
//!
//! Durability is the [`JobQueue`]'s. With the file store it is a line per accepted job in
//! `<state root>/server/queue.log` ([`crate::queue_log::QueueLog`]), durable before the job's
//! `201`, and another once the job has ended. Job ids are version 7 UUIDs, so they sort in
//! order of submission: after a restart the queue is rebuilt in the same order, each owner's
//! line in its order and owners in the order of their oldest job. (Servers before the log kept
//! a marker file per job, `server/queue/<job_id>`: a start takes those over.)
//!
//! With a shared queue (PostgreSQL), an accepted job is let go into the database's queue and
//! every server's dispatcher claims jobs from it (oldest first, one server each); a server
//! also settles, as `mc gc` does, the jobs of servers whose leases expired.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::audit::AuditLog;
use maestro_core::executor::Executor;
use maestro_core::runner::{PendingJob, RunError, Runner, collect_garbage};
use maestro_core::state::{JobState, StateError, StateStore};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::fair::FairQueue;
use crate::metrics::Metrics;
use crate::queue::{JobQueue, QueueError};

/// The note in which a server records an approver's decision on a job: for another server of a
/// shared queue that holds it awaiting approval, which applies it, and so that an approved job
/// waiting for its turn keeps its approval across a restart.
const DECISIONS: &str = "decisions";

/// The note in which a server records a cancellation of a job that another server of a shared
/// queue runs; the runner stops it as Ctrl-C would.
const CANCELS: &str = "cancels";

/// How often a server of a shared queue looks for decisions on the jobs it holds.
const DECISION_POLL: Duration = Duration::from_millis(250);

/// An approver's decision, taken (authenticated, four eyes checked, audited) by one server of
/// a shared queue for the server that holds the job.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RemoteDecision {
    /// Approved (else rejected).
    pub(crate) approve: bool,
    /// The approver's identity.
    pub(crate) by: String,
    /// Why.
    pub(crate) reason: Option<String>,
    /// When it was decided (RFC 3339); absent in decisions recorded before it was kept.
    #[serde(default)]
    pub(crate) at: Option<String>,
}

/// Jobs waiting, awaiting approval and running.
#[derive(Default)]
struct Jobs {
    queued: FairQueue<PendingJob>,
    awaiting: HashMap<JobId, PendingJob>,
    running: HashMap<JobId, CancellationToken>,
}

/// Where a job the scheduler knows stands.
#[derive(Debug)]
pub(crate) enum Taken {
    /// It was waiting (queued or for approval) and is now the caller's.
    Pending(Box<PendingJob>),
    /// It is running; here is its cancel token.
    Running(CancellationToken),
    /// The scheduler does not hold it (ended, or never a server job).
    Unknown,
}

/// Whose line a job waits in: its owner (on the server, always the authenticated identity).
fn owner_of(job: &PendingJob) -> String {
    job.meta().owner.clone().unwrap_or_default()
}

/// The queue and the jobs it runs.
pub(crate) struct Scheduler {
    jobs: Mutex<Jobs>,
    wake: Notify,
    slots: Arc<Semaphore>,
    queue_limit: usize,
    queue_limit_per_owner: Option<usize>,
    runner: Arc<Runner>,
    store: Arc<dyn StateStore>,
    queue: Arc<dyn JobQueue>,
    draining: AtomicBool,
    metrics: Metrics,
}

impl Scheduler {
    pub(crate) fn new(
        runner: Arc<Runner>,
        store: Arc<dyn StateStore>,
        queue: Arc<dyn JobQueue>,
        max_concurrent_jobs: usize,
        queue_limit: usize,
        queue_limit_per_owner: Option<usize>,
    ) -> Self {
        Self {
            jobs: Mutex::new(Jobs::default()),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(max_concurrent_jobs.max(1))),
            queue_limit,
            queue_limit_per_owner,
            runner,
            store,
            queue,
            draining: AtomicBool::new(false),
            metrics: Metrics::default(),
        }
    }

    /// Jobs by state and step durations, for `/v1/metrics`.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        // A panic while holding the lock cannot leave the maps half-changed in a way that
        // matters more than refusing every request would.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the queue is, for messages.
    pub(crate) fn describe_queue(&self) -> String {
        self.queue.describe()
    }

    /// How many jobs wait for a slot.
    pub(crate) fn depth(&self) -> usize {
        self.jobs().queued.len()
    }

    /// How many jobs run now.
    pub(crate) fn running(&self) -> usize {
        self.jobs().running.len()
    }

    /// How many jobs wait for approval.
    pub(crate) fn awaiting(&self) -> usize {
        self.jobs().awaiting.len()
    }

    /// Whether the queue is full (checked before a job is stored). A shared queue counts
    /// every job in it that has not ended, whichever server accepted or runs it.
    pub(crate) fn is_full(&self) -> bool {
        if self.queue.is_shared() {
            return match self.queue.marked() {
                Ok(ids) => ids.len() >= self.queue_limit,
                Err(error) => {
                    tracing::warn!(%error, "cannot count the shared queue");
                    false
                }
            };
        }
        self.depth() >= self.queue_limit
    }

    /// When `owner` may not queue another job: how many it has waiting, the limit. A shared
    /// queue counts the owner's jobs waiting on every server.
    pub(crate) fn owner_is_full(&self, owner: &str) -> Option<(usize, usize)> {
        let limit = self.queue_limit_per_owner?;
        let waiting = match self.queue.waiting_of(owner) {
            Ok(Some(waiting)) => waiting,
            Ok(None) => self.jobs().queued.len_of(owner),
            Err(error) => {
                tracing::warn!(%error, owner, "cannot count an owner's jobs in the shared queue");
                self.jobs().queued.len_of(owner)
            }
        };
        (waiting >= limit).then_some((waiting, limit))
    }

    pub(crate) fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Note a job in the durable queue, so that a restart (or another server) finds it.
    pub(crate) fn mark(&self, job_id: JobId) -> Result<(), QueueError> {
        self.queue.mark(job_id)
    }

    fn unmark(&self, job_id: JobId) {
        self.queue.unmark(job_id);
    }

    /// Queue an allowed (or approved) job at the back of its owner's line; how many jobs run
    /// before it.
    pub(crate) fn enqueue(&self, job: PendingJob) -> usize {
        if self.queue.is_shared() {
            // Let it go into the shared queue: whichever server has a free slot first claims
            // it (its lease is free, and the queue holds it meanwhile).
            drop(job);
            self.wake.notify_one();
            return self
                .queue
                .marked()
                .map_or(0, |ids| ids.len().saturating_sub(1));
        }
        self.enqueue_approved(job)
    }

    /// Queue an approved job at the back of its owner's line, on this server even with a
    /// shared queue: the approval lives in the job until its `RUNNING` record.
    pub(crate) fn enqueue_approved(&self, job: PendingJob) -> usize {
        let owner = owner_of(&job);
        let ahead = {
            let mut jobs = self.jobs();
            jobs.queued.push(&owner, job);
            jobs.queued.ahead_of_newest(&owner)
        };
        self.wake.notify_one();
        ahead
    }

    /// Hold a job until it is approved or rejected.
    pub(crate) fn hold(&self, job: PendingJob) {
        self.jobs().awaiting.insert(job.job_id(), job);
    }

    /// Take out the jobs that have awaited approval for longer than `timeout` since they were
    /// submitted (so a restart does not reset the clock).
    pub(crate) fn take_expired(&self, timeout: Duration) -> Vec<PendingJob> {
        let now = jiff::Timestamp::now();
        let mut jobs = self.jobs();
        let expired: Vec<JobId> = jobs
            .awaiting
            .values()
            .filter(|job| {
                job.meta()
                    .submitted_at
                    .parse::<jiff::Timestamp>()
                    .ok()
                    .and_then(|at| {
                        jiff::SignedDuration::try_from(timeout)
                            .ok()
                            .map(|t| (at, t))
                    })
                    .and_then(|(at, timeout)| at.checked_add(timeout).ok())
                    .is_some_and(|deadline| deadline <= now)
            })
            .map(PendingJob::job_id)
            .collect();
        expired
            .iter()
            .filter_map(|job_id| jobs.awaiting.remove(job_id))
            .collect()
    }

    /// Whether `job_id` waits in this server's queue for a slot.
    pub(crate) fn is_queued(&self, job_id: JobId) -> bool {
        self.jobs().queued.any(|job| job.job_id() == job_id)
    }

    /// A shared queue: how long a job nobody drives any more (its server died) may wait to
    /// be settled by a server (each looks every lease period; a few of them, and a margin).
    pub(crate) fn settles_abandoned_within(&self) -> Option<Duration> {
        self.queue
            .settle_every()
            .map(|every| every.saturating_mul(3) + Duration::from_secs(10))
    }

    /// Whether the queue is shared by several servers (see [`JobQueue::is_shared`]).
    pub(crate) fn is_shared(&self) -> bool {
        self.queue.is_shared()
    }

    /// Record an approver's decision on a job: for the server of a shared queue that holds it
    /// to apply (it reads them every [`DECISION_POLL`]), and for a restart (`recover`).
    pub(crate) fn record_decision(
        &self,
        job_id: JobId,
        decision: &RemoteDecision,
    ) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(decision).map_err(|error| StateError::Corrupt {
            what: format!("the decision on job {job_id}"),
            message: error.to_string(),
        })?;
        line.push(b'\n');
        self.store.append_note(job_id, DECISIONS, &line)
    }

    /// A shared queue: record `decision` on `job_id` and say which decision counts: `None` when
    /// it is this one (the first on record), else the one that came first. Every server, the
    /// holder included, records before it acts, so two decisions given at once through two
    /// servers are ordered by the store, and only the first is acted on or answered `200`.
    pub(crate) fn claim_decision(
        &self,
        job_id: JobId,
        decision: &RemoteDecision,
    ) -> Result<Option<RemoteDecision>, StateError> {
        if let Some(first) = self.recorded_decision(job_id) {
            return Ok(Some(first));
        }
        self.record_decision(job_id, decision)?;
        Ok(self
            .recorded_decision(job_id)
            .filter(|first| first != decision))
    }

    /// A shared queue: record a cancellation of a job another server runs, for that server to
    /// apply (it reads them every [`DECISION_POLL`]). `by` asked (checked and audited by the
    /// server that records it).
    pub(crate) fn record_cancel(&self, job_id: JobId, by: &str) -> Result<(), StateError> {
        let mut line = serde_json::json!({ "by": by }).to_string().into_bytes();
        line.push(b'\n');
        self.store.append_note(job_id, CANCELS, &line)
    }

    /// A shared queue: apply the decisions that servers recorded for the jobs this one holds
    /// awaiting approval (the first decision of a job counts), and the cancellations recorded
    /// for the jobs it runs, until draining.
    pub(crate) async fn apply_decisions(self: Arc<Self>) {
        while !self.is_draining() {
            // The jobs it runs or holds (those queued here are approved jobs waiting for a
            // slot: a job it claims starts at once): a cancellation recorded for one stops it,
            // or ends it `CANCELLED` before it runs.
            let held: Vec<JobId> = {
                let jobs = self.jobs();
                let mut held: Vec<JobId> = jobs
                    .running
                    .iter()
                    .filter(|(_, token)| !token.is_cancelled())
                    .map(|(job_id, _)| *job_id)
                    .chain(jobs.awaiting.keys().copied())
                    .collect();
                jobs.queued.for_each(|job| held.push(job.job_id()));
                held
            };
            for job_id in held {
                match self.store.read_note(job_id, CANCELS) {
                    Ok(Some(_)) => self.cancel_for_another(job_id).await,
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%job_id, %error, "cannot read the cancellations of a job");
                    }
                }
            }
            let held: Vec<JobId> = self.jobs().awaiting.keys().copied().collect();
            for job_id in held {
                if let Some(decision) = self.recorded_decision(job_id) {
                    self.apply(job_id, decision);
                }
            }
            tokio::time::sleep(DECISION_POLL).await;
        }
    }

    /// The first decision recorded on `job_id` (by any server, this one included), if any.
    pub(crate) fn recorded_decision(&self, job_id: JobId) -> Option<RemoteDecision> {
        match self.store.read_note(job_id, DECISIONS) {
            Ok(bytes) => bytes.and_then(|bytes| {
                bytes
                    .split(|&byte| byte == b'\n')
                    .find_map(|line| serde_json::from_slice::<RemoteDecision>(line).ok())
            }),
            Err(error) => {
                tracing::warn!(%job_id, %error, "cannot read the decisions on a job");
                None
            }
        }
    }

    /// Apply a cancellation another server recorded for a job this one runs or holds.
    async fn cancel_for_another(&self, job_id: JobId) {
        match self.take_for_cancel(job_id) {
            Taken::Running(token) => {
                tracing::info!(%job_id, "cancelled through another server");
                token.cancel();
            }
            Taken::Pending(job) => match self.cancel_pending(*job).await {
                Ok(state) => {
                    tracing::info!(%job_id, %state, "cancelled through another server before it ran");
                }
                Err(error) => tracing::warn!(%job_id, %error, "cannot record a cancellation"),
            },
            Taken::Unknown => {}
        }
    }

    fn apply(&self, job_id: JobId, decision: RemoteDecision) {
        let Some(mut job) = self.take_awaiting(job_id) else {
            return;
        };
        if !decision.approve {
            match self
                .runner
                .reject(job, &decision.by, decision.reason.as_deref())
            {
                Ok(report) => {
                    self.metrics.set(job_id, report.state);
                    tracing::info!(%job_id, rejected_by = %decision.by, "rejected through another server: recorded DENIED");
                }
                Err(error) => tracing::warn!(%job_id, %error, "cannot record a rejection"),
            }
            self.ended(job_id);
            return;
        }
        // The server that took the decision checked it; checked again here all the same.
        let approved = match &decision.at {
            Some(at) => job.approve_at(&decision.by, decision.reason.as_deref(), at),
            None => job.approve(&decision.by, decision.reason.as_deref()),
        };
        match approved {
            Ok(()) => {
                tracing::info!(%job_id, approved_by = %decision.by, "approved through another server");
                self.enqueue_approved(job);
            }
            Err(error) => {
                tracing::warn!(%job_id, %error, "an approval recorded through another server is refused");
                self.hold(job);
            }
        }
    }

    /// End jobs whose approval did not come within `timeout`: `DENIED`, `approval_timeout`.
    pub(crate) async fn expire_approvals(self: Arc<Self>, timeout: Duration) {
        let tick = timeout
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(100));
        while !self.is_draining() {
            for job in self.take_expired(timeout) {
                let job_id = job.job_id();
                let detail = serde_json::json!({
                    "reason": "approval_timeout",
                    "error": format!("no approval within {} s of submission", timeout.as_secs()),
                });
                match self.runner.deny_pending(job, detail) {
                    Ok(_) => {
                        self.metrics.set(job_id, JobState::Denied);
                        tracing::info!(%job_id, "approval timed out: recorded DENIED");
                    }
                    Err(error) => {
                        tracing::warn!(%job_id, %error, "cannot record an approval timeout")
                    }
                }
                self.unmark(job_id);
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// Take a job awaiting approval out of the scheduler.
    pub(crate) fn take_awaiting(&self, job_id: JobId) -> Option<PendingJob> {
        self.jobs().awaiting.remove(&job_id)
    }

    /// Take a job that has not started yet out of the scheduler, or give the running one's
    /// cancel token.
    pub(crate) fn take_for_cancel(&self, job_id: JobId) -> Taken {
        let mut jobs = self.jobs();
        if let Some(token) = jobs.running.get(&job_id) {
            return Taken::Running(token.clone());
        }
        if let Some(job) = jobs.awaiting.remove(&job_id) {
            return Taken::Pending(Box::new(job));
        }
        if let Some(job) = jobs.queued.remove_first(|job| job.job_id() == job_id) {
            return Taken::Pending(Box::new(job));
        }
        Taken::Unknown
    }

    /// Record a job that never started `CANCELLED` (through the runner, as a job cancelled
    /// before it runs is), and forget it.
    pub(crate) async fn cancel_pending(&self, job: PendingJob) -> Result<JobState, String> {
        let job_id = job.job_id();
        let token = CancellationToken::new();
        token.cancel();
        let result = self.runner.run_pending(job, token).await;
        self.unmark(job_id);
        match result {
            Ok(report) => {
                self.metrics.ended(job_id, report.state, &report.steps);
                Ok(report.state)
            }
            Err(error) => {
                self.count_as_recorded(job_id);
                Err(error.to_string())
            }
        }
    }

    /// Count a job in the state its record says (after the runner could not report it).
    fn count_as_recorded(&self, job_id: JobId) {
        if let Ok(record) = self.store.load(job_id) {
            self.metrics.ended(job_id, record.state(), &record.steps);
        }
    }

    /// Forget a job that ended without running (rejected).
    pub(crate) fn ended(&self, job_id: JobId) {
        self.unmark(job_id);
    }

    /// A shared queue: take this job out of it if it waits there and nobody holds it, admitted
    /// again as a claimed job is (to cancel it).
    pub(crate) async fn take_shared(
        &self,
        job_id: JobId,
        invocation_dir: &Path,
    ) -> Option<PendingJob> {
        match self.queue.take(job_id) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(error) => {
                tracing::warn!(%job_id, %error, "cannot take a job from the shared queue");
                return None;
            }
        }
        match self.readmit(job_id, invocation_dir).await {
            Ok(Some((job, _))) => Some(job),
            Ok(None) => {
                // The claim's lease goes with it: the job is not this server's to hold.
                self.queue.release(job_id);
                None
            }
            Err(error) => {
                tracing::warn!(%job_id, %error, "a job taken from the shared queue cannot be admitted again");
                self.queue.release(job_id);
                None
            }
        }
    }

    /// A shared queue: claim a waiting job and admit its stored spec again under its id (a job
    /// awaiting approval is held here until someone decides). `None` when nothing was claimed
    /// that can run now.
    async fn claim(&self, invocation_dir: &Path) -> Option<PendingJob> {
        let job_id = match self.queue.claim() {
            Ok(Some(job_id)) => job_id,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(%error, "cannot claim a job from the shared queue");
                return None;
            }
        };
        match self.readmit(job_id, invocation_dir).await {
            Ok(Some((job, JobState::AwaitingApproval))) => {
                self.hold(job);
                None
            }
            Ok(Some((job, _))) => {
                tracing::info!(%job_id, "claimed a job from the shared queue");
                Some(job)
            }
            Ok(None) => {
                // Nothing to run (it ended meanwhile): the claim's lease goes.
                self.queue.release(job_id);
                None
            }
            Err(error) => {
                // Its lease is let go: garbage collection settles it as abandoned.
                tracing::warn!(%job_id, %error, "a claimed job cannot run any more");
                self.unmark(job_id);
                None
            }
        }
    }

    /// Admit a stored job's spec again under its id (a job claimed or taken from a shared
    /// queue): the runner's `reload`.
    async fn readmit(
        &self,
        job_id: JobId,
        invocation_dir: &Path,
    ) -> Result<Option<(PendingJob, JobState)>, RunError> {
        let spec_bytes = self.store.spec(job_id)?;
        self.runner
            .reload(job_id, spec_bytes, invocation_dir.to_path_buf())
            .await
    }

    /// A shared queue: settle, as `mc gc` does, the jobs of servers that died (their leases
    /// expired), and forget the queue entries of jobs that ended; until draining.
    pub(crate) async fn settle_dead_servers(
        self: Arc<Self>,
        audit: AuditLog,
        executors: Vec<Arc<dyn Executor>>,
    ) {
        let Some(every) = self.queue.settle_every() else {
            return;
        };
        while !self.is_draining() {
            tokio::time::sleep(every).await;
            self.refresh_metrics();
            match self.queue.has_abandoned() {
                Ok(false) => continue,
                Ok(true) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot look for abandoned jobs");
                    continue;
                }
            }
            match collect_garbage(Arc::clone(&self.store), &audit, &executors).await {
                Ok(report) => {
                    for job_id in &report.abandoned_jobs {
                        tracing::warn!(%job_id, "a dead server's job: recorded FAILED");
                    }
                    for problem in report.unreconciled.iter().chain(&report.errors) {
                        tracing::warn!(%problem, "a dead server's job was left as found");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot settle the jobs of dead servers"),
            }
            if let Err(error) = self.forget_ended() {
                tracing::warn!(%error, "cannot forget the jobs that ended");
            }
        }
    }

    /// A shared queue: bring the counts of `/v1/metrics` up to date for the jobs they hold as
    /// unfinished that this server does not drive (another server claimed, ran or ended them),
    /// one record each.
    fn refresh_metrics(&self) {
        let elsewhere: Vec<JobId> = {
            let jobs = self.jobs();
            self.metrics
                .unended()
                .into_iter()
                .filter(|job_id| {
                    !jobs.running.contains_key(job_id)
                        && !jobs.awaiting.contains_key(job_id)
                        && !jobs.queued.any(|job| job.job_id() == *job_id)
                })
                .collect()
        };
        for job_id in elsewhere {
            match self.store.load(job_id) {
                Ok(record) if record.state().is_terminal() => {
                    self.metrics.ended(job_id, record.state(), &record.steps);
                }
                Ok(record) => self.metrics.set(job_id, record.state()),
                Err(error) => tracing::debug!(%job_id, %error, "job left as counted"),
            }
        }
    }

    /// Run queued jobs, in turn, while slots are free; returns when draining.
    pub(crate) async fn dispatch(self: Arc<Self>, invocation_dir: PathBuf) {
        let invocation_dir = invocation_dir.as_path();
        loop {
            let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else {
                return;
            };
            let job = loop {
                if self.is_draining() {
                    return;
                }
                let next = self.jobs().queued.pop();
                if let Some(job) = next {
                    break job;
                }
                if self.queue.is_shared() {
                    if let Some(job) = self.claim(invocation_dir).await {
                        break job;
                    }
                    // Other servers' submissions do not wake this one: look again soon.
                    let _ = tokio::time::timeout(CLAIM_POLL, self.wake.notified()).await;
                } else {
                    self.wake.notified().await;
                }
            };
            let job_id = job.job_id();
            let token = CancellationToken::new();
            self.jobs().running.insert(job_id, token.clone());
            self.metrics.set(job_id, JobState::Running);
            let scheduler = Arc::clone(&self);
            tokio::spawn(async move {
                let _permit = permit;
                match scheduler.runner.run_pending(job, token).await {
                    Ok(report) => {
                        scheduler.metrics.ended(job_id, report.state, &report.steps);
                        tracing::info!(%job_id, state = %report.state, "job ended");
                    }
                    Err(error) => {
                        scheduler.count_as_recorded(job_id);
                        tracing::warn!(%job_id, %error, "job could not be recorded");
                    }
                }
                scheduler.unmark(job_id);
                scheduler.jobs().running.remove(&job_id);
            });
        }
    }

    /// Stop starting jobs; let running ones finish within `grace`, then cancel them as Ctrl-C
    /// would, and wait (up to `cancel_wait`) until they are recorded.
    pub(crate) async fn drain(&self, grace: Duration, cancel_wait: Duration) {
        self.draining.store(true, Ordering::Release);
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + grace;
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tokens: Vec<CancellationToken> = self.jobs().running.values().cloned().collect();
        if !tokens.is_empty() {
            tracing::warn!(
                jobs = tokens.len(),
                "grace period over: cancelling running jobs"
            );
        }
        for token in tokens {
            token.cancel();
        }
        let deadline = tokio::time::Instant::now() + cancel_wait;
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After a restart: queue the jobs this state root's server had accepted and not run
    /// (in order), hold those awaiting approval again, and forget the markers of jobs that
    /// ended. Jobs that were running are left for garbage collection (`FAILED`, `abandoned`).
    pub(crate) async fn recover(&self, invocation_dir: &Path) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.queue.is_shared() {
            // The dispatcher claims them from the shared queue, as any server's does.
            return warnings;
        }
        let ids = match self.queue.marked() {
            Ok(ids) => ids,
            Err(error) => {
                warnings.push(format!(
                    "cannot read the queue {}: {error}",
                    self.queue.describe()
                ));
                return warnings;
            }
        };
        for job_id in ids {
            if let Err(error) = self.store.load(job_id) {
                warnings.push(format!("queued job {job_id}: {error}"));
                self.unmark(job_id);
                continue;
            }
            let spec_bytes = match self.store.spec(job_id) {
                Ok(bytes) => bytes,
                Err(error) => {
                    warnings.push(format!("cannot read the spec of job {job_id}: {error}"));
                    continue;
                }
            };
            match self
                .runner
                .reload(job_id, spec_bytes, invocation_dir.to_path_buf())
                .await
            {
                Ok(Some((job, JobState::AwaitingApproval))) => {
                    self.hold(job);
                    // Approved before the restart, and waiting for its turn: the decision is
                    // on record, and applied again (its four eyes checked again).
                    if let Some(decision) = self.recorded_decision(job_id) {
                        self.apply(job_id, decision);
                    }
                }
                Ok(Some((job, _))) => {
                    self.enqueue(job);
                }
                Ok(None) => {}
                Err(error) => warnings.push(format!(
                    "queued job {job_id} cannot run any more ({error}); it is settled as abandoned"
                )),
            }
        }
        warnings
    }

    /// Forget the jobs that have ended (after garbage collection settled them): the queue keeps
    /// the others alone (the file queue rewrites its log with them and takes over the markers
    /// of an older server).
    pub(crate) fn forget_ended(&self) -> Result<(), QueueError> {
        let mut open = self.queue.marked()?;
        // Only what is known to be over goes: a job that cannot be read now (a passing error
        // of the store) stays, for the next look.
        open.retain(|job_id| match self.store.load(*job_id) {
            Ok(record) => !record.state().is_terminal(),
            Err(StateError::NotFound { .. }) => false,
            Err(_) => true,
        });
        self.queue.keep_only(&open)
    }

    /// The jobs the durable queue holds, oldest first.
    pub(crate) fn marked(&self) -> Result<Vec<JobId>, QueueError> {
        self.queue.marked()
    }
}

/// How often a server with a shared queue looks for jobs other servers accepted.
const CLAIM_POLL: Duration = Duration::from_millis(200);
