//! The runner: validate, persist, evaluate policies, run the steps, record everything.
//!
//! The runner knows the [`Executor`] trait, the [`ExecutorRegistry`], [`evaluate_policies`] and
//! the [`StateStore`] trait, and nothing about any particular executor. Its order of work is the
//! safety argument of the whole system: a job is stored and `SUBMITTED` before its policies are
//! evaluated, every verdict is recorded, and only an allowed job is handed to an executor.

use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::JobId;
use crate::audit::{AuditError, AuditLog, AuditRecord, prefix_matches};
use crate::executor::{
    Executor, ExecutorError, ExecutorRegistry, RemovedResource, StepControl, StepOutcome,
    StepRequest, StopReason, UnknownRuntime,
};
use crate::output::{OutputObserver, StepOutput};
use crate::plan::{PlanOptions, PlannedStep, plan_steps};
use crate::policy::{PolicyConfig, PolicyReport, evaluate_policies};
use crate::secret::{CallerEnv, Masker, read_secrets};
use crate::spec::{
    JobSpec, MAX_TIMEOUT_SECONDS, SpecError, SpecFormat, is_valid_runtime_name, parse,
};
use crate::state::{
    FileDigest, HistoryDigests, HistoryEntry, JobLease, JobMeta, JobRecord, JobState, StateError,
    StateStore, StepRecord, StepStatus, Transition, array_bytes, array_entries, sha256_hex,
};
use crate::time::now_rfc3339;
use crate::trace::TraceId;

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Policy settings (default and maximum step timeouts).
    pub policy: PolicyConfig,
    /// How long a stopped step may take to exit before it is killed.
    pub stop_grace: Duration,
    /// How many bytes of a step's output are recorded at most; the log says how much more was
    /// dropped.
    pub max_step_output: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            policy: PolicyConfig::default(),
            stop_grace: Duration::from_secs(5),
            max_step_output: crate::output::DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// A job to submit or validate.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// The spec file's bytes, exactly as read.
    pub spec_bytes: Vec<u8>,
    /// The spec file's path as the user gave it.
    pub source: String,
    /// Its format.
    pub format: SpecFormat,
    /// The request's trace id.
    pub trace_id: TraceId,
    /// The runtime for steps that name none, from the command line.
    pub runtime_override: Option<String>,
    /// The directory `mc` was started in.
    pub invocation_dir: PathBuf,
    /// The environment `mc` was started with: where `env` secrets, allowlisted variables and
    /// `env_passthrough` come from. Its `Debug` shows names only.
    pub caller_env: CallerEnv,
}

/// Why a request did not produce a job, or a job could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A step names a runtime nobody provides.
    #[error(transparent)]
    UnknownRuntime(#[from] UnknownRuntime),
    /// An executor refused a step's settings.
    #[error("{0}")]
    InvalidStep(String),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// On a server: the spec names an owner other than the identity that submits it.
    #[error(
        "the spec's owner {spec_owner:?} is not the identity that submits it ({identity:?}); on a server a job's owner is whoever submits it: omit owner, or submit with {spec_owner:?}'s token"
    )]
    OwnerMismatch {
        /// The spec's `owner`.
        spec_owner: String,
        /// The authenticated identity.
        identity: String,
    },
    /// The submission was cancelled (SIGINT/SIGTERM) during admission, before the job was
    /// stored: nothing was stored and nothing ran.
    #[error("cancelled before the job was stored: nothing ran")]
    Cancelled,
}

impl RunError {
    /// Whether the error is the user's (bad input) rather than the system's.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::Spec(_)
                | Self::UnknownRuntime(_)
                | Self::InvalidStep(_)
                | Self::OwnerMismatch { .. }
        )
    }
}

/// Why a job that was stored did not succeed, when that was not a step's own doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A step ran and failed (non-zero exit, timeout, out of memory).
    StepFailed,
    /// An executor refused the job's settings before anything ran.
    InvalidStep,
    /// An executor's backend could not be used (engine unreachable, plugin will not start).
    ExecutorUnavailable,
    /// A step left something behind that could not be removed: the job cannot have succeeded.
    TeardownFailed,
    /// A secret's value could not be read (or was refused) when the job started; nothing ran.
    SecretUnavailable,
}

/// The outcome of a submitted job.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The job's id.
    pub job_id: JobId,
    /// Its final state.
    pub state: JobState,
    /// Its trace id.
    pub trace_id: TraceId,
    /// Every policy's verdict.
    pub policies: PolicyReport,
    /// Every step's result, skipped ones included.
    pub steps: Vec<StepRecord>,
    /// Why the job failed, when it did.
    pub failure: Option<FailureKind>,
    /// The message that goes with `failure`.
    pub error: Option<String>,
}

/// What `mc validate` reports: the parsed spec and the verdicts it would get.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The spec.
    pub spec: JobSpec,
    /// The policies' verdicts.
    pub policies: PolicyReport,
}

/// Runs jobs.
pub struct Runner {
    store: Arc<dyn StateStore>,
    audit: AuditLog,
    registry: Arc<ExecutorRegistry>,
    config: RunnerConfig,
}

/// A job admitted for storage: parsed, planned, every step's executor found and satisfied.
struct Admitted {
    spec: JobSpec,
    steps: Vec<StepRequest>,
    executors: Vec<Arc<dyn Executor>>,
    /// The plan as policy reads it: each step's runtime and how its executor contains it.
    plan: Vec<PlannedStep>,
}

impl Runner {
    /// A runner over a store, an audit log and the executors of a registry.
    pub fn new(
        store: Arc<dyn StateStore>,
        audit: AuditLog,
        registry: Arc<ExecutorRegistry>,
        config: RunnerConfig,
    ) -> Self {
        Self {
            store,
            audit,
            registry,
            config,
        }
    }

    async fn admit(&self, request: &SubmitRequest, job_id: JobId) -> Result<Admitted, RunError> {
        let spec = parse(&request.spec_bytes, request.format)?;
        if let Some(runtime) = &request.runtime_override
            && !is_valid_runtime_name(runtime)
        {
            return Err(RunError::InvalidStep(format!(
                "runtime {runtime:?} must be 1 to 64 characters of lower-case letters, digits, '-' or '_'"
            )));
        }
        let options = PlanOptions {
            default_timeout: self.config.policy.default_step_timeout,
            runtime_override: request.runtime_override.clone(),
            invocation_dir: request.invocation_dir.clone(),
            caller_env: request.caller_env.clone(),
        };
        let steps = plan_steps(job_id, &spec, &request.trace_id, &options);
        let mut executors = Vec::with_capacity(steps.len());
        let mut plan = Vec::with_capacity(steps.len());
        // Every step's problems, said together: fixing one should not reveal the next.
        let mut refused = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            let executor = self.registry.resolve(&step.runtime).map_err(|error| {
                let origin = if spec.steps.get(index).is_some_and(|s| s.runtime.is_some()) {
                    "its runtime field"
                } else if request.runtime_override.is_some() {
                    "--runtime"
                } else {
                    "the job's runtime field"
                };
                error.named_by(&step.name, origin)
            })?;
            if let Err(error) = executor.check_step(step) {
                refused.push(error.to_string());
            }
            plan.push(PlannedStep {
                name: step.name.clone(),
                runtime: step.runtime.clone(),
                containment: executor.containment(step).await,
                workspace: step.workspace.clone(),
                writable_paths: step.writable_paths.clone(),
                host_access: step.host_access.clone(),
            });
            executors.push(executor);
        }
        if !refused.is_empty() {
            return Err(RunError::InvalidStep(refused.join("; ")));
        }
        // Settings only the backend can judge (a plugin's `with`), once per runtime, with the
        // runtime's steps in order.
        let mut runtimes: Vec<&str> = Vec::new();
        for step in &steps {
            if !runtimes.contains(&step.runtime.as_str()) {
                runtimes.push(&step.runtime);
            }
        }
        for runtime in runtimes {
            let Some(index) = steps.iter().position(|step| step.runtime == runtime) else {
                continue;
            };
            let own: Vec<StepRequest> = steps
                .iter()
                .filter(|step| step.runtime == runtime)
                .cloned()
                .collect();
            match executors[index].validate_steps(&own).await {
                Ok(()) => {}
                Err(ExecutorError::InvalidStep { message }) => {
                    return Err(RunError::InvalidStep(message));
                }
                Err(error) => {
                    tracing::debug!(runtime, %error, "runtime could not validate its steps now");
                }
            }
        }
        Ok(Admitted {
            spec,
            steps,
            executors,
            plan,
        })
    }

    /// Parse, validate and evaluate every policy, storing and running nothing.
    pub async fn validate(&self, request: &SubmitRequest) -> Result<Validation, RunError> {
        let admitted = self.admit(request, JobId::nil()).await?;
        let policies = evaluate_policies(&admitted.spec, &admitted.plan, &self.config.policy);
        Ok(Validation {
            spec: admitted.spec,
            policies,
        })
    }

    /// [`Runner::validate`] as [`Runner::accept`] would admit the job from `identity`: its
    /// owner is `identity` (a spec's `owner` must be the same identity) and a spec's
    /// `approval` block does not count, so a production job gets the approval policy's denial
    /// that means `AWAITING_APPROVAL` on the server.
    pub async fn validate_as(
        &self,
        request: &SubmitRequest,
        identity: &str,
    ) -> Result<Validation, RunError> {
        let mut admitted = self.admit(request, JobId::nil()).await?;
        if let Some(owner) = &admitted.spec.owner
            && !crate::identity::same_identity(owner, identity)
        {
            return Err(RunError::OwnerMismatch {
                spec_owner: owner.clone(),
                identity: identity.to_owned(),
            });
        }
        admitted.spec.owner = Some(identity.to_owned());
        admitted.spec.approval = None;
        let policies = evaluate_policies(&admitted.spec, &admitted.plan, &self.config.policy);
        Ok(Validation {
            spec: admitted.spec,
            policies,
        })
    }

    /// Submit a job and run it to the end. `observer` sees step output live; cancelling
    /// `cancel` stops the running step and ends the job `CANCELLED`.
    pub async fn submit(
        &self,
        request: SubmitRequest,
        observer: Option<Arc<dyn OutputObserver>>,
        cancel: CancellationToken,
    ) -> Result<JobReport, RunError> {
        let job_id = JobId::now_v7();
        let span = tracing::info_span!("job", %job_id, trace_id = %request.trace_id);
        async {
            // Admission may wait on a backend (a plugin's hello or `validate`, 10 s each): a
            // cancel meanwhile ends the submission at once, storing nothing. One that needs no
            // wait is polled first and not interrupted: its job is stored and recorded
            // `CANCELLED` before anything runs.
            let admitted = tokio::select! {
                biased;
                admitted = self.admit(&request, job_id) => admitted,
                () = cancel.cancelled() => return Err(RunError::Cancelled),
            };
            let admitted = match admitted {
                Ok(admitted) => admitted,
                Err(error) => {
                    self.audit.append(&AuditRecord::new(
                        None,
                        &request.trace_id,
                        None,
                        "job.rejected",
                        json!({ "source": request.source, "error": error.to_string() }),
                    ))?;
                    return Err(error);
                }
            };
            let meta = JobMeta {
                job_id,
                name: admitted.spec.name.clone(),
                owner: admitted.spec.owner.clone(),
                environment: admitted.spec.environment.clone(),
                trace_id: request.trace_id.clone(),
                submitted_at: now_rfc3339(),
                spec_file: format!("spec.{}", request.format.extension()),
                source: request.source.clone(),
                driver: crate::control::Driver::current(),
            };
            let policies = evaluate_policies(&admitted.spec, &admitted.plan, &self.config.policy);
            // What follows `SUBMITTED` is decided now and stored with the job, in the same
            // durable write and audit append: a denial, a secret that cannot be read, or
            // `RUNNING`. One sync point before anything runs instead of two. Secret values are
            // read only for a job policy allows, and no executor sees them before `RUNNING`
            // is on record.
            let secrets = SecretDecl::of(&admitted.spec);
            let policy_detail = serde_json::to_value(&policies.verdicts).unwrap_or_default();
            let values = policies
                .allowed()
                .then(|| read_secrets(&secrets.sources, &request.caller_env));
            let next = match &values {
                None => (JobState::Denied, json!({ "policies": policy_detail })),
                // Its failure kind on record, so a later `mc logs --follow` exits as `mc submit`.
                Some(Err(error)) => (
                    JobState::Failed,
                    json!({
                        "policies": policy_detail,
                        "error": error.to_string(),
                        "failure": FailureKind::SecretUnavailable,
                    }),
                ),
                Some(Ok(_)) => (JobState::Running, json!({ "policies": policy_detail })),
            };
            // The first step's executor builds what the step needs (a sandbox, held) while the
            // job's records sync: private work, and nothing of the step runs before `run`.
            let staged = match (&values, admitted.steps.first(), admitted.executors.first()) {
                (Some(Ok(values)), Some(first), Some(executor)) => {
                    let mut step = first.clone();
                    step.secrets = secrets_of(secrets.per_step.first(), values);
                    Some((Arc::clone(executor), step))
                }
                _ => None,
            };
            let stored = match &staged {
                Some((executor, step)) => {
                    let mut staging = std::pin::pin!(executor.stage(step));
                    // One poll sends the work on its way (to another process); the store's
                    // syncs run meanwhile, and the staging is awaited after them.
                    let polled =
                        std::future::poll_fn(|cx| Poll::Ready(staging.as_mut().poll(cx))).await;
                    let stored = self.store_job(&meta, &request.spec_bytes, &policies, Some(next));
                    if polled.is_pending() {
                        staging.await;
                    }
                    if stored.is_err() {
                        executor.finish(job_id).await;
                    }
                    stored
                }
                None => self.store_job(&meta, &request.spec_bytes, &policies, Some(next)),
            };
            drop(staged);
            let lease = stored?;
            if let Some(observer) = &observer {
                observer.job_stored(job_id, &meta.trace_id);
            }
            let job = JobRun {
                runner: self,
                meta,
                _lease: lease,
                observer,
                cancel,
                caller_env: request.caller_env,
                masker: Arc::new(Masker::default()),
            };
            match values {
                None => Ok(job.report(JobState::Denied, policies, Vec::new(), None)),
                Some(Err(error)) => {
                    let message = error.to_string();
                    tracing::info!(%message, "a secret could not be read");
                    Ok(job.report(
                        JobState::Failed,
                        policies,
                        Vec::new(),
                        Some((FailureKind::SecretUnavailable, message)),
                    ))
                }
                Some(Ok(values)) => {
                    let Admitted {
                        steps, executors, ..
                    } = admitted;
                    job.execute_allowed(steps, executors, policies, secrets, values)
                        .await
                }
            }
        }
        .instrument(span)
        .await
    }
}

impl Runner {
    /// Store a job with its `SUBMITTED` transition and, when it is already known, the
    /// transition after it (`next`: a state and its detail), made durable together (one group
    /// commit), and audit them with every policy's verdict (`policies`, evaluated before
    /// anything is stored or runs): one audit append for them all, in the same transaction as
    /// the job where the store has transactions.
    fn store_job(
        &self,
        meta: &JobMeta,
        spec_bytes: &[u8],
        policies: &PolicyReport,
        next: Option<(JobState, serde_json::Value)>,
    ) -> Result<JobLease, RunError> {
        let detail = json!({ "source": meta.source, "spec_file": meta.spec_file });
        let transition = Transition {
            state: JobState::Submitted,
            at: now_rfc3339(),
            trace_id: meta.trace_id.clone(),
            detail: detail.clone(),
        };
        let next = next.map(|(state, detail)| Transition {
            state,
            at: now_rfc3339(),
            trace_id: meta.trace_id.clone(),
            detail,
        });
        let record = |event: &str, details: serde_json::Value| {
            AuditRecord::new(
                Some(meta.job_id),
                &meta.trace_id,
                meta.owner.as_deref(),
                event,
                details,
            )
        };
        let describe = |digests: &[HistoryDigests],
                        files: &std::collections::BTreeMap<String, String>| {
            // The files written once, when the job was stored: their digests go on record too.
            let mut records = vec![record(
                "job.transition",
                json!({
                    "state": JobState::Submitted,
                    "detail": detail,
                    "history": digests.first(),
                    "files": files,
                }),
            )];
            records.extend(policies.verdicts.iter().map(|verdict| {
                record(
                    "policy.decision",
                    serde_json::to_value(verdict).unwrap_or_default(),
                )
            }));
            // The next transition's record, as `JobRun::record` makes it.
            records.extend(next.as_ref().map(|next| {
                record(
                    "job.transition",
                    json!({ "state": next.state, "detail": next.detail, "history": digests.get(1) }),
                )
            }));
            records
        };
        let mut entries = vec![HistoryEntry::Transition(&transition)];
        entries.extend(next.as_ref().map(HistoryEntry::Transition));
        let (lease, _) =
            self.store
                .create_job_audited(&self.audit, meta, spec_bytes, &entries, &describe)?;
        tracing::info!(state = %JobState::Submitted, "job state changed");
        if let Some(next) = &next {
            tracing::info!(state = %next.state, "job state changed");
        }
        Ok(lease)
    }
}

/// The policy a server replaces with approval through its API: on a server a production job
/// waits in `AWAITING_APPROVAL` instead of being denied by it.
pub const APPROVAL_POLICY: &str = "prod-requires-approval";

/// What became of a job a server accepted ([`Runner::accept`]).
#[derive(Debug)]
pub enum Accepted {
    /// A policy denied it: recorded `DENIED`, nothing will run.
    Denied(JobReport),
    /// Every policy allowed it: recorded `SUBMITTED`, ready to run.
    Queued(PendingJob),
    /// Every policy but approval allowed it: recorded `AWAITING_APPROVAL`.
    AwaitingApproval(PendingJob),
}

/// A stored job a server holds (its lease included) until it runs it with
/// [`Runner::run_pending`] or ends it with [`Runner::reject`].
pub struct PendingJob {
    meta: JobMeta,
    lease: JobLease,
    steps: Vec<StepRequest>,
    executors: Vec<Arc<dyn Executor>>,
    policies: PolicyReport,
    approval: Option<serde_json::Value>,
    secrets: SecretDecl,
    caller_env: CallerEnv,
}

impl std::fmt::Debug for PendingJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingJob")
            .field("job_id", &self.meta.job_id)
            .finish_non_exhaustive()
    }
}

/// Why an approval is refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// Four eyes: the owner cannot approve their own job.
    #[error(
        "{approver:?} owns job {job_id} and cannot approve it: an identity with the approve role other than the owner must"
    )]
    OwnJob {
        /// The job.
        job_id: JobId,
        /// Who tried.
        approver: String,
    },
}

impl ApprovalError {
    /// Whether `approver` may decide on job `job_id` of `owner` (four eyes: never its owner).
    pub fn check(job_id: JobId, owner: Option<&str>, approver: &str) -> Result<(), Self> {
        if crate::identity::same_identity(owner.unwrap_or_default(), approver) {
            return Err(Self::OwnJob {
                job_id,
                approver: approver.to_owned(),
            });
        }
        Ok(())
    }
}

impl PendingJob {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.meta.job_id
    }

    /// What was stored about it.
    pub fn meta(&self) -> &JobMeta {
        &self.meta
    }

    /// Every policy's verdict.
    pub fn policies(&self) -> &PolicyReport {
        &self.policies
    }

    /// Record who approved the job (never its owner); it then runs as an allowed job does, and
    /// its `RUNNING` record names the approver.
    pub fn approve(&mut self, approver: &str, reason: Option<&str>) -> Result<(), ApprovalError> {
        self.approve_at(approver, reason, &now_rfc3339())
    }

    /// [`PendingJob::approve`] with the time the approval was given (RFC 3339): one taken
    /// earlier, on record, and applied now (after a restart, or by the server that holds the
    /// job).
    pub fn approve_at(
        &mut self,
        approver: &str,
        reason: Option<&str>,
        at: &str,
    ) -> Result<(), ApprovalError> {
        ApprovalError::check(self.meta.job_id, self.meta.owner.as_deref(), approver)?;
        self.approval = Some(json!({ "approved_by": approver, "reason": reason, "at": at }));
        Ok(())
    }
}

impl Runner {
    /// A server's submission: admit, store and decide as [`Runner::submit`] does, but do not
    /// run. The job's owner is `identity` (a spec's `owner`, if any, must be the same identity),
    /// and a spec's `approval` block does not count: a production job waits for an approval
    /// given through the server instead (`AWAITING_APPROVAL`).
    pub async fn accept(
        &self,
        request: SubmitRequest,
        identity: &str,
    ) -> Result<Accepted, RunError> {
        let job_id = JobId::now_v7();
        let span = tracing::info_span!("job", %job_id, trace_id = %request.trace_id);
        async {
            let admitted = self.admit(&request, job_id).await.and_then(|mut admitted| {
                match &admitted.spec.owner {
                    Some(owner) if !crate::identity::same_identity(owner, identity) => {
                        return Err(RunError::OwnerMismatch {
                            spec_owner: owner.clone(),
                            identity: identity.to_owned(),
                        });
                    }
                    _ => {}
                }
                admitted.spec.owner = Some(identity.to_owned());
                admitted.spec.approval = None;
                Ok(admitted)
            });
            let admitted = match admitted {
                Ok(admitted) => admitted,
                Err(error) => {
                    self.audit.append(&AuditRecord::new(
                        None,
                        &request.trace_id,
                        Some(identity),
                        "job.rejected",
                        json!({ "source": request.source, "error": error.to_string() }),
                    ))?;
                    return Err(error);
                }
            };
            let meta = JobMeta {
                job_id,
                name: admitted.spec.name.clone(),
                owner: Some(identity.to_owned()),
                environment: admitted.spec.environment.clone(),
                trace_id: request.trace_id.clone(),
                submitted_at: now_rfc3339(),
                spec_file: format!("spec.{}", request.format.extension()),
                source: request.source.clone(),
                // The server is not the job's driver for `mc cancel`: signalling it would stop
                // the whole server. Server jobs are cancelled through its API.
                driver: None,
            };
            let policies =
                evaluate_policies(&admitted.spec, &admitted.plan, &self.config.policy);
            let policy_detail = serde_json::to_value(&policies.verdicts).unwrap_or_default();
            let denials: Vec<&crate::policy::Verdict> = policies.denials().collect();
            let awaiting = !denials.is_empty()
                && denials.iter().all(|verdict| verdict.policy == APPROVAL_POLICY);
            let denied = !denials.is_empty() && !awaiting;
            // A denial or the wait for approval is stored with the job (one durable write);
            // a queued job stays `SUBMITTED` until it runs.
            let next = if denied {
                Some((JobState::Denied, json!({ "policies": policy_detail })))
            } else if awaiting {
                Some((
                    JobState::AwaitingApproval,
                    json!({
                        "policies": policy_detail,
                        "approval": {
                            "required": "a production job runs only when an identity with the approve role other than its owner approves it",
                        },
                    }),
                ))
            } else {
                None
            };
            let lease = self.store_job(&meta, &request.spec_bytes, &policies, next)?;
            let job = JobRun {
                runner: self,
                meta,
                _lease: lease,
                observer: None,
                cancel: CancellationToken::new(),
                caller_env: CallerEnv::default(),
                masker: Arc::new(Masker::default()),
            };
            if denied {
                return Ok(Accepted::Denied(job.report(
                    JobState::Denied,
                    policies,
                    Vec::new(),
                    None,
                )));
            }
            let JobRun { meta, _lease, .. } = job;
            let pending = PendingJob {
                meta,
                lease: _lease,
                secrets: SecretDecl::of(&admitted.spec),
                steps: admitted.steps,
                executors: admitted.executors,
                policies,
                approval: None,
                caller_env: request.caller_env.clone(),
            };
            Ok(if awaiting {
                Accepted::AwaitingApproval(pending)
            } else {
                Accepted::Queued(pending)
            })
        }
        .instrument(span)
        .await
    }

    /// Run a job a server accepted (and, if it awaited approval, approved). Cancelling `cancel`
    /// before it starts records it `CANCELLED` with nothing run.
    pub async fn run_pending(
        &self,
        job: PendingJob,
        cancel: CancellationToken,
    ) -> Result<JobReport, RunError> {
        let PendingJob {
            meta,
            lease,
            steps,
            executors,
            policies,
            approval,
            secrets,
            caller_env,
        } = job;
        let span = tracing::info_span!("job", job_id = %meta.job_id, trace_id = %meta.trace_id);
        let run = JobRun {
            runner: self,
            meta,
            _lease: lease,
            observer: None,
            cancel,
            caller_env,
            masker: Arc::new(Masker::default()),
        };
        run.execute(steps, executors, policies, approval, secrets)
            .instrument(span)
            .await
    }

    /// End a job awaiting approval: `DENIED`, with who rejected it and why.
    pub fn reject(
        &self,
        job: PendingJob,
        rejected_by: &str,
        reason: Option<&str>,
    ) -> Result<JobReport, RunError> {
        self.deny_pending(
            job,
            json!({ "reason": "rejected", "rejected_by": rejected_by, "note": reason }),
        )
    }

    /// End a job that has not run `DENIED`, with `detail` saying why (a rejection, an approval
    /// that did not come in time).
    pub fn deny_pending(
        &self,
        job: PendingJob,
        detail: serde_json::Value,
    ) -> Result<JobReport, RunError> {
        let PendingJob {
            meta,
            lease,
            policies,
            ..
        } = job;
        let run = JobRun {
            runner: self,
            meta,
            _lease: lease,
            observer: None,
            cancel: CancellationToken::new(),
            caller_env: CallerEnv::default(),
            masker: Arc::new(Masker::default()),
        };
        run.record(JobState::Denied, detail)?;
        Ok(run.report(JobState::Denied, policies, Vec::new(), None))
    }

    /// Pick up a job a server accepted before it stopped: one still `SUBMITTED` or
    /// `AWAITING_APPROVAL` whose lease nobody holds. Its stored spec (`spec_bytes`) is admitted
    /// again under the same id; `None` when the job is in another state or a live process
    /// holds it.
    pub async fn reload(
        &self,
        job_id: JobId,
        spec_bytes: Vec<u8>,
        invocation_dir: PathBuf,
    ) -> Result<Option<(PendingJob, JobState)>, RunError> {
        let record = self.store.load(job_id)?;
        let state = record.state();
        if !matches!(state, JobState::Submitted | JobState::AwaitingApproval) {
            return Ok(None);
        }
        let Some(lease) = self.store.acquire_lease(job_id)? else {
            return Ok(None);
        };
        let request = SubmitRequest {
            spec_bytes,
            source: record.meta.source.clone(),
            format: SpecFormat::from_file_name(&record.meta.spec_file),
            trace_id: record.meta.trace_id.clone(),
            runtime_override: None,
            invocation_dir,
            // A server's own environment is where its jobs' `env` secrets come from, its
            // `MAESTRO_*` settings left out.
            caller_env: CallerEnv::from_process_for_jobs(),
        };
        let mut admitted = self.admit(&request, job_id).await?;
        admitted.spec.owner = record.meta.owner.clone();
        admitted.spec.approval = None;
        let policies = evaluate_policies(&admitted.spec, &admitted.plan, &self.config.policy);
        Ok(Some((
            PendingJob {
                meta: record.meta,
                lease,
                secrets: SecretDecl::of(&admitted.spec),
                steps: admitted.steps,
                executors: admitted.executors,
                policies,
                approval: None,
                caller_env: request.caller_env,
            },
            state,
        )))
    }
}

/// The secrets a job declares, kept from its spec until its steps start: where each value is
/// read from, and which secrets each step (in order) receives. Values are read only then.
#[derive(Debug, Clone, Default)]
struct SecretDecl {
    sources: std::collections::BTreeMap<String, crate::spec::SecretSource>,
    per_step: Vec<Vec<String>>,
}

impl SecretDecl {
    fn of(spec: &JobSpec) -> Self {
        Self {
            sources: spec.secrets.clone(),
            per_step: spec.steps.iter().map(|step| step.secrets.clone()).collect(),
        }
    }
}

/// The secrets a step receives: those it names (`names`), with their values.
fn secrets_of(
    names: Option<&Vec<String>>,
    values: &std::collections::BTreeMap<String, crate::secret::Secret>,
) -> crate::secret::StepSecrets {
    names
        .into_iter()
        .flatten()
        .filter_map(|name| Some((name.clone(), values.get(name)?.clone())))
        .collect()
}

/// One job being driven; holding it holds the job's lease.
struct JobRun<'a> {
    runner: &'a Runner,
    meta: JobMeta,
    _lease: JobLease,
    observer: Option<Arc<dyn OutputObserver>>,
    cancel: CancellationToken,
    caller_env: CallerEnv,
    /// Masks the job's secret values in everything recorded about its steps.
    masker: Arc<Masker>,
}

impl JobRun<'_> {
    fn record(&self, state: JobState, detail: serde_json::Value) -> Result<(), RunError> {
        let transition = Transition {
            state,
            at: now_rfc3339(),
            trace_id: self.meta.trace_id.clone(),
            detail: detail.clone(),
        };
        // (`SUBMITTED`, with the digests of the files written once, is `store_job`'s.)
        let describe = |history: &[HistoryDigests]| {
            let details = json!({ "state": state, "detail": detail, "history": history.last() });
            vec![self.audit_record("job.transition", details)]
        };
        self.runner.store.append_history_audited(
            &self.runner.audit,
            self.meta.job_id,
            &[HistoryEntry::Transition(&transition)],
            &describe,
        )?;
        tracing::info!(state = %state, "job state changed");
        Ok(())
    }

    /// Store the step results in `steps` and, with `last`, the job's final transition: one
    /// durable write to the store and one audit append for them all. Then the steps that ran
    /// are shown as finished: nothing is seen before it is on record.
    fn store_steps(
        &self,
        steps: &mut Vec<StepRecord>,
        last: Option<(JobState, serde_json::Value)>,
    ) -> Result<(), RunError> {
        let transition = last.as_ref().map(|(state, detail)| Transition {
            state: *state,
            at: now_rfc3339(),
            trace_id: self.meta.trace_id.clone(),
            detail: detail.clone(),
        });
        let mut entries: Vec<HistoryEntry<'_>> = steps.iter().map(HistoryEntry::Step).collect();
        entries.extend(transition.as_ref().map(HistoryEntry::Transition));
        if entries.is_empty() {
            return Ok(());
        }
        let describe = |digests: &[HistoryDigests]| {
            let mut records = Vec::new();
            for (record, history) in steps.iter().zip(digests) {
                // A skipped step has no audit record of its own: the next record carries the
                // digests of the history with its entry in it.
                if record.status == StepStatus::Skipped {
                    continue;
                }
                let mut details = serde_json::to_value(record).unwrap_or_default();
                if let Some(details) = details.as_object_mut() {
                    details.insert("history".to_owned(), json!(history));
                }
                records.push(self.audit_record("step.finished", details));
                if let Some(teardown) = record.teardown.as_ref().filter(|t| !t.verified) {
                    records.push(self.audit_record(
                        "step.teardown_failed",
                        json!({ "step": record.name, "span_id": record.span_id, "teardown": teardown }),
                    ));
                }
            }
            if let (Some((state, detail)), Some(history)) = (&last, digests.last()) {
                records.push(self.audit_record(
                    "job.transition",
                    json!({ "state": state, "detail": detail, "history": history }),
                ));
            }
            records
        };
        self.runner.store.append_history_audited(
            &self.runner.audit,
            self.meta.job_id,
            &entries,
            &describe,
        )?;
        if let Some((state, _)) = &last {
            tracing::info!(state = %state, "job state changed");
        }
        if let Some(observer) = &self.observer {
            for record in steps.iter().filter(|r| r.status != StepStatus::Skipped) {
                observer.step_finished(record);
            }
        }
        steps.clear();
        Ok(())
    }

    fn audit_record(&self, event: &str, details: serde_json::Value) -> AuditRecord {
        AuditRecord::new(
            Some(self.meta.job_id),
            &self.meta.trace_id,
            self.meta.owner.as_deref(),
            event,
            details,
        )
    }

    fn report(
        &self,
        state: JobState,
        policies: PolicyReport,
        steps: Vec<StepRecord>,
        failure: Option<(FailureKind, String)>,
    ) -> JobReport {
        let (failure, error) = failure.unzip();
        JobReport {
            job_id: self.meta.job_id,
            state,
            trace_id: self.meta.trace_id.clone(),
            policies,
            steps,
            failure,
            error,
        }
    }

    /// Read the secrets, prepare the executors, run the steps and finish: the part of a job a
    /// server runs after policy allowed it and it was approved (`approval` goes into
    /// `RUNNING`'s record).
    async fn execute(
        self,
        steps: Vec<StepRequest>,
        executors: Vec<Arc<dyn Executor>>,
        policies: PolicyReport,
        approval: Option<serde_json::Value>,
        secrets: SecretDecl,
    ) -> Result<JobReport, RunError> {
        let policy_detail = serde_json::to_value(&policies.verdicts).unwrap_or_default();
        // Secret values are read now, once the job may run and before any executor sees it;
        // a source that cannot be read fails the job with nothing run. Messages name the
        // secret and its source, never a value.
        let values = match read_secrets(&secrets.sources, &self.caller_env) {
            Ok(values) => values,
            Err(error) => {
                let message = error.to_string();
                tracing::info!(%message, "a secret could not be read");
                self.record(
                    JobState::Failed,
                    json!({
                        "policies": policy_detail,
                        "error": message,
                        "failure": FailureKind::SecretUnavailable,
                    }),
                )?;
                return Ok(self.report(
                    JobState::Failed,
                    policies,
                    Vec::new(),
                    Some((FailureKind::SecretUnavailable, message)),
                ));
            }
        };
        // Cancelled while it waited (a server stopping, `DELETE` on the job): it never ran.
        if self.cancel.is_cancelled() {
            self.record(
                JobState::Cancelled,
                json!({ "policies": policy_detail, "reason": "cancelled before it started" }),
            )?;
            return Ok(self.report(JobState::Cancelled, policies, Vec::new(), None));
        }
        let mut detail = json!({ "policies": policy_detail });
        if let Some(approval) = approval {
            detail["approval"] = approval;
        }
        self.record(JobState::Running, detail)?;
        self.execute_allowed(steps, executors, policies, secrets, values)
            .await
    }

    /// Prepare the executors, give each step its secrets (from `values`), run the steps and
    /// finish: the part of a job after `RUNNING` is on record. Executors are prepared only
    /// then, because preparing is the job's first effect outside the store (a plugin process
    /// started, an image looked up).
    async fn execute_allowed(
        mut self,
        mut steps: Vec<StepRequest>,
        executors: Vec<Arc<dyn Executor>>,
        policies: PolicyReport,
        secrets: SecretDecl,
        values: std::collections::BTreeMap<String, crate::secret::Secret>,
    ) -> Result<JobReport, RunError> {
        self.masker = Arc::new(Masker::new(values.values()));
        crate::secret::mask_in_diagnostics(Arc::clone(&self.masker));
        for (step, names) in steps.iter_mut().zip(&secrets.per_step) {
            step.secrets = secrets_of(Some(names), &values);
        }
        drop(values);

        // Each distinct executor, in the order its first step appears, with its steps.
        let mut groups: Vec<(Arc<dyn Executor>, Vec<StepRequest>)> = Vec::new();
        for (executor, step) in executors.iter().zip(&steps) {
            match groups
                .iter_mut()
                .find(|(known, _)| Arc::ptr_eq(known, executor))
            {
                Some((_, group)) => group.push(step.clone()),
                None => groups.push((Arc::clone(executor), vec![step.clone()])),
            }
        }

        let prepared = self.prepare(&groups).await;
        let result = match prepared {
            Ok(()) => self.run_steps(&steps, &executors, policies).await,
            Err(failure) => {
                let (state, failure) = match failure {
                    None => (JobState::Cancelled, None),
                    Some(failure) => (JobState::Failed, Some(failure)),
                };
                let detail = json!({
                    "policies": serde_json::to_value(&policies.verdicts).unwrap_or_default(),
                    "error": failure.as_ref().map(|(_, message)| message),
                });
                self.record(state, detail)
                    .map(|()| self.report(state, policies, Vec::new(), failure))
            }
        };
        // The store or the audit log failed mid-job (a planted link refused, a full disk):
        // record the job FAILED with the reason if that can still be written, rather than
        // leave it for `mc gc`.
        if let Err(error @ (RunError::State(_) | RunError::Audit(_))) = &result {
            let _ = self.record(
                JobState::Failed,
                json!({ "reason": "state", "error": error.to_string() }),
            );
        }
        // Every executor that was prepared (or tried to be) releases its resources, on every
        // path: containers and plugin processes must not outlive the job.
        for (executor, _) in groups.iter().rev() {
            executor.finish(self.meta.job_id).await;
        }
        result
    }

    /// Prepare every executor. `Err(None)` means cancelled meanwhile.
    async fn prepare(
        &self,
        groups: &[(Arc<dyn Executor>, Vec<StepRequest>)],
    ) -> Result<(), Option<(FailureKind, String)>> {
        for (executor, group) in groups {
            let outcome = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(None),
                outcome = executor.prepare(group) => outcome,
            };
            if let Err(error) = outcome {
                let kind = match error {
                    ExecutorError::InvalidStep { .. } => FailureKind::InvalidStep,
                    _ => FailureKind::ExecutorUnavailable,
                };
                let message = self.masker.mask_str(&error.to_string());
                tracing::info!(error = %message, "executor could not prepare the job");
                return Err(Some((kind, message)));
            }
        }
        if self.cancel.is_cancelled() {
            return Err(None);
        }
        Ok(())
    }

    /// Run the steps and record their results and the job's end.
    async fn run_steps(
        &self,
        steps: &[StepRequest],
        executors: &[Arc<dyn Executor>],
        policies: PolicyReport,
    ) -> Result<JobReport, RunError> {
        let mut records = Vec::with_capacity(steps.len());
        let mut failure: Option<(FailureKind, String)> = None;
        let mut cancelled = false;
        // Step results not stored yet: each is stored before anything else is seen to happen
        // (the next step starting, the step's line on the terminal), the last ones together
        // with the job's final state (one group commit).
        let mut unstored: Vec<StepRecord> = Vec::new();
        for (step, executor) in steps.iter().zip(executors) {
            if failure.is_some() || cancelled || self.cancel.is_cancelled() {
                cancelled |= self.cancel.is_cancelled();
                let record = StepRecord::skipped(&step.name, &step.runtime);
                unstored.push(record.clone());
                records.push(record);
                continue;
            }
            self.store_steps(&mut unstored, None)?;
            let record = self.run_step(step, executor.as_ref()).await?;
            unstored.push(record.clone());
            match record.status {
                StepStatus::Succeeded => {}
                StepStatus::Cancelled => cancelled = true,
                StepStatus::Error => {
                    failure = Some((
                        FailureKind::ExecutorUnavailable,
                        record.error.clone().unwrap_or_default(),
                    ))
                }
                StepStatus::TeardownFailed => {
                    failure = Some((FailureKind::TeardownFailed, describe(&record)))
                }
                _ => {
                    failure = Some((
                        FailureKind::StepFailed,
                        format!("step {:?} {}", step.name, describe(&record)),
                    ))
                }
            }
            records.push(record);
        }
        let (state, detail) = if cancelled {
            (
                JobState::Cancelled,
                // Ctrl-C, `mc cancel`, a server's API or its shutdown: who asked is on the
                // audit record of the request (`job.cancel_requested`), where there is one.
                json!({ "reason": "cancelled" }),
            )
        } else if let Some((kind, message)) = &failure {
            (
                JobState::Failed,
                json!({ "error": message, "failure": kind }),
            )
        } else {
            (JobState::Succeeded, json!({}))
        };
        self.store_steps(&mut unstored, Some((state, detail)))?;
        let failure = if cancelled { None } else { failure };
        Ok(self.report(state, policies, records, failure))
    }

    async fn run_step(
        &self,
        step: &StepRequest,
        executor: &dyn Executor,
    ) -> Result<StepRecord, RunError> {
        let span = tracing::info_span!("step", step = %step.name, runtime = %step.runtime);
        async {
            let started_at = now_rfc3339();
            let log = self
                .runner
                .store
                .create_step_log(self.meta.job_id, &step.name)?;
            let header = crate::progress::step_log_header(
                self.meta.job_id,
                &step.name,
                &step.runtime,
                &self.meta.trace_id,
                &started_at,
            );
            let log_error = |source| StateError::Log {
                job_id: self.meta.job_id,
                step: step.name.clone(),
                source,
            };
            if let Some(observer) = &self.observer {
                observer.step_started(&step.name, &step.runtime);
            }
            let mut output = StepOutput::new(&step.name, log, &header, self.observer.clone())
                .map_err(log_error)?;
            output.mask_with(Arc::clone(&self.masker));
            output.limit(self.runner.config.max_step_output);
            // A deadline beyond what `Instant` can hold means none: use one that never fires.
            let deadline = Instant::now()
                .checked_add(step.timeout)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(MAX_TIMEOUT_SECONDS));
            let control =
                StepControl::new(deadline, self.runner.config.stop_grace, self.cancel.clone());
            let clock = std::time::Instant::now();
            let result = executor.run(step, &mut output, &control).await;
            let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
            let bytes = output.bytes();
            let dropped = output.dropped();
            let mut record = StepRecord {
                status: StepStatus::Succeeded,
                duration_ms,
                started_at: Some(started_at),
                finished_at: Some(now_rfc3339()),
                output_bytes: bytes,
                output_dropped_bytes: dropped,
                span_id: Some(step.span_id.to_string()),
                ..StepRecord::skipped(&step.name, &step.runtime)
            };
            match result {
                Ok(outcome) => apply_outcome(&mut record, &outcome),
                Err(error) => {
                    // An executor's message may quote the step's output.
                    let message = self.masker.mask_str(&error.to_string());
                    tracing::info!(error = %message, "executor could not run the step");
                    record.status = if matches!(
                        error,
                        ExecutorError::StepFailed { .. } | ExecutorError::InvalidStep { .. }
                    ) {
                        StepStatus::Failed
                    } else {
                        StepStatus::Error
                    };
                    if self.cancel.is_cancelled() {
                        record.status = StepStatus::Cancelled;
                    }
                    record.error = Some(message);
                }
            }
            let footer = format!(
                "maestro step={} status={} {}",
                step.name,
                status_name(record.status),
                describe(&record)
            );
            output.finish(&footer).map_err(log_error)?;
            if let Some(teardown) = record.teardown.as_ref().filter(|t| !t.verified) {
                tracing::warn!(remaining = ?teardown.remaining, "step left processes or containers behind");
            }
            tracing::info!(
                status = status_name(record.status),
                duration_ms,
                "step finished"
            );
            // Stored (and shown) by `store_steps`, with whatever else is due at the same time.
            Ok(record)
        }
        .instrument(span)
        .await
    }
}

fn apply_outcome(record: &mut StepRecord, outcome: &StepOutcome) {
    record.exit_code = outcome.exit_code;
    record.signal = outcome.signal;
    record.oom_killed = outcome.oom_killed;
    record.timed_out = outcome.stopped == Some(StopReason::TimedOut);
    record.teardown = outcome.teardown.clone();
    record.status = match outcome.stopped {
        Some(StopReason::TimedOut) => StepStatus::TimedOut,
        Some(StopReason::Cancelled) => StepStatus::Cancelled,
        None if outcome.succeeded() => StepStatus::Succeeded,
        None => StepStatus::Failed,
    };
    // A step that left something behind did not succeed, whatever its exit code said.
    if record.status == StepStatus::Succeeded
        && outcome.teardown.as_ref().is_some_and(|t| !t.verified)
    {
        record.status = StepStatus::TeardownFailed;
    }
}

/// The name of a step status as recorded, e.g. `timed_out`.
pub fn status_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::TimedOut => "timed_out",
        StepStatus::Cancelled => "cancelled",
        StepStatus::Error => "error",
        StepStatus::Skipped => "skipped",
        StepStatus::TeardownFailed => "teardown_failed",
    }
}

/// A short human description of how a step ended, e.g. `exited with code 3`.
pub fn describe(record: &StepRecord) -> String {
    if let Some(error) = &record.error {
        return format!("could not run: {error}");
    }
    let mut text = match (record.status, record.exit_code, record.signal) {
        (StepStatus::Skipped, _, _) => "was skipped".to_owned(),
        // The duration includes the stop grace a step that ignored SIGTERM was given.
        (StepStatus::TimedOut, _, _) => format!(
            "timed out (stopped {} ms after it started, its stop grace included)",
            record.duration_ms
        ),
        (StepStatus::Cancelled, _, _) => "was cancelled".to_owned(),
        (_, Some(code), _) => format!("exited with code {code}"),
        (_, None, Some(signal)) => format!("was killed by signal {signal}"),
        (_, None, None) => "ended without an exit status".to_owned(),
    };
    if record.oom_killed {
        text.push_str(" (out of memory)");
    }
    if record.output_dropped_bytes > 0 {
        text.push_str(&format!(
            " (log truncated: {} bytes of output dropped)",
            record.output_dropped_bytes
        ));
    }
    if let Some(teardown) = record.teardown.as_ref().filter(|t| !t.verified) {
        text.push_str(&format!(
            "; teardown failed ({} not confirmed), still there: {}",
            teardown.method.describe(),
            teardown.remaining.join(", ")
        ));
    }
    text
}

/// What `mc gc` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Jobs found unfinished with no live `mc`, now recorded `FAILED`.
    pub abandoned_jobs: Vec<JobId>,
    /// History entries a crash left out of the audit log, now appended to it as recovered
    /// records, one line each.
    pub recovered: Vec<String>,
    /// Resources the executors removed (processes, containers).
    pub removed: Vec<RemovedResource>,
    /// What else was settled, one line each: staging directories of dead submissions removed,
    /// requests a dead `mc` left in flight with a backend fenced.
    pub settled: Vec<String>,
    /// Jobs left as found because their history is not what the audit log and a crash leave
    /// (edited: `mc audit verify` says how), one line each. Nothing is recorded for them.
    pub unreconciled: Vec<String>,
    /// What could not be read, cleaned or recorded, one line each.
    pub errors: Vec<String>,
}

/// Why a job's history was not reconciled with the audit log.
enum NotReconciled {
    /// It could not be read.
    Unreadable(String),
    /// It is not what a crash leaves.
    NotACrash(String),
}

impl GcReport {
    /// Whether there was nothing to do.
    pub fn is_empty(&self) -> bool {
        self.abandoned_jobs.is_empty()
            && self.recovered.is_empty()
            && self.removed.is_empty()
            && self.settled.is_empty()
    }
}

/// What the audit log says of each job: the last recorded digests of its history, and whether
/// it has records from before histories were recorded (which are not reconciled).
#[derive(Default)]
struct Audited {
    digests: std::collections::HashMap<JobId, HistoryDigests>,
    legacy: std::collections::HashSet<JobId>,
}

impl Audited {
    /// Read the log's records one at a time, keeping what concerns `job_ids` alone.
    fn read(
        audit: &AuditLog,
        job_ids: &std::collections::HashSet<JobId>,
    ) -> Result<Self, RunError> {
        let mut audited = Self::default();
        audit.for_each(&mut |record| {
            let Some(job_id) = record.job_id.filter(|job_id| job_ids.contains(job_id)) else {
                return;
            };
            match record.history() {
                Some(history) => {
                    audited.digests.insert(job_id, history);
                }
                None if record.event == "job.transition" => {
                    audited.legacy.insert(job_id);
                }
                None => {}
            }
        })?;
        for job_id in audited.digests.keys() {
            audited.legacy.remove(job_id);
        }
        Ok(audited)
    }
}

/// Settle what killed `mc`s left behind, so that a second run finds nothing to do:
///
/// * staging directories of submissions that died before their job was in place are removed;
/// * history entries a crash kept out of the audit log (written to the job's journal,
///   killed before the audit append) are appended to it, marked `recovered`, never rewritten;
/// * jobs left unfinished with no live `mc` (their lease is free) are recorded `FAILED`, a job
///   killed before its first transition first `SUBMITTED`; a job waiting for a server
///   ([`JobRecord::waits_for_a_server`]) is left for that server, which takes it up again when
///   it starts;
/// * each executor removes what such jobs left (processes, containers).
///
/// gc holds the lease of every job it settles until the executors are done, so no other `mc`
/// (another gc) moves them meanwhile.
pub async fn collect_garbage(
    store: Arc<dyn StateStore>,
    audit: &AuditLog,
    executors: &[Arc<dyn Executor>],
) -> Result<GcReport, RunError> {
    let job_ids = store.list()?;
    collect_garbage_of(store, audit, executors, &job_ids, Waiting::Leave).await
}

/// What garbage collection does with the jobs that wait for a server
/// ([`JobRecord::waits_for_a_server`]) and that nobody holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Leave them for a server to run (`mc gc`, a server settling dead servers' jobs).
    Leave,
    /// Settle them as abandoned: a starting server, after taking up every job its queue
    /// still holds, settles those it can no longer run.
    Settle,
}

/// [`collect_garbage`] for `job_ids` only (staging directories and each executor's sweep of
/// what dead jobs left are still taken care of whole), `waiting` saying what becomes of the
/// jobs that wait for a server. A server starting up passes the jobs it may have left in
/// flight, found reading one record at a time, rather than have every record and the whole
/// audit log read again; with no job given, the audit log is not read.
pub async fn collect_garbage_of(
    store: Arc<dyn StateStore>,
    audit: &AuditLog,
    executors: &[Arc<dyn Executor>],
    job_ids: &[JobId],
    waiting: Waiting,
) -> Result<GcReport, RunError> {
    let mut report = GcReport::default();
    match store.remove_dead_staging() {
        Ok(removed) => report.settled.extend(removed),
        Err(error) => report.errors.push(error.to_string()),
    }
    let wanted: std::collections::HashSet<JobId> = job_ids.iter().copied().collect();
    // A record a crash cut short at the log's end is closed first (a record noting it), so
    // that the chain skips it rather than end in it.
    match audit.seal_torn_tail(&TraceId::generate()) {
        Ok(Some(bytes)) => report.settled.push(format!(
            "audit log: its last record was cut short by a crash ({bytes} bytes); a record now notes it and the chain skips it"
        )),
        Ok(None) => {}
        Err(error) => report.errors.push(error.to_string()),
    }
    let mut audited = if job_ids.is_empty() {
        Audited::default()
    } else {
        Audited::read(audit, &wanted)?
    };
    let mut reread = false;
    let mut leases = Vec::new();
    for &job_id in job_ids {
        let lease = match store.try_lease(job_id) {
            Ok(Some(lease)) => lease,
            // A live `mc` drives it.
            Ok(None) => continue,
            Err(error) => {
                report.errors.push(format!("job {job_id}: {error}"));
                continue;
            }
        };
        let record = match store.load(job_id) {
            Ok(record) => record,
            // A record that does not check out was edited: left as found, as verify reports.
            Err(error @ crate::state::StateError::Corrupt { .. }) => {
                report.unreconciled.push(format!(
                    "job {job_id}: {error}; not reconciled (see `mc audit verify`)"
                ));
                continue;
            }
            Err(error) => {
                report.errors.push(format!("job {job_id}: {error}"));
                continue;
            }
        };
        // A history that is not what its audit records and a crash leave is not settled
        // either: recording `FAILED` after an edit would make the edit look like a crash.
        let mut reconciled = true;
        if audited.legacy.contains(&job_id) {
            // Recorded before histories were; nothing to reconcile with.
        } else {
            let mut missing = unaudited(store.as_ref(), &record, audited.digests.get(&job_id));
            if matches!(&missing, Ok(records) if !records.is_empty()) && !reread {
                // Another gc may have recovered them since the log was read: read it again,
                // now that this job's lease is ours.
                audited = Audited::read(audit, &wanted)?;
                reread = true;
                missing = unaudited(store.as_ref(), &record, audited.digests.get(&job_id));
            }
            reconciled = missing.is_ok();
            match missing {
                Ok(records) if !records.is_empty() => {
                    audit.append_all(&records)?;
                    if let Some(history) = records.last().and_then(AuditRecord::history) {
                        audited.digests.insert(job_id, history);
                    }
                    report.recovered.extend(records.iter().map(|record| {
                        format!(
                            "job {job_id}: recovered the audit record of {}",
                            describe_recovered(record)
                        )
                    }));
                }
                Ok(_) => {}
                Err(NotReconciled::Unreadable(message)) => report.errors.push(message),
                Err(NotReconciled::NotACrash(message)) => report.unreconciled.push(message),
            }
        }
        let left_for_a_server = waiting == Waiting::Leave && record.waits_for_a_server();
        if !record.state().is_terminal() && reconciled && !left_for_a_server {
            match settle(store.as_ref(), audit, &record) {
                Ok(()) => report.abandoned_jobs.push(job_id),
                Err(error) => report.errors.push(format!("job {job_id}: {error}")),
            }
        }
        // Terminal or not: its `mc` may have died in `finish` with a request in flight.
        for executor in executors {
            match executor.settle_job(job_id).await {
                Ok(settled) => report.settled.extend(settled),
                Err(error) => report.errors.push(format!("job {job_id}: {error}")),
            }
        }
        if !record.state().is_terminal() {
            leases.push(lease);
        }
    }
    let is_live = {
        let store = Arc::clone(&store);
        move |job_id: JobId| match store.load(job_id) {
            Ok(record) => !record.state().is_terminal() && store.is_live(job_id).unwrap_or(true),
            // Unknown here: another state root's job, not ours to touch.
            Err(_) => true,
        }
    };
    for executor in executors {
        match executor.collect_garbage(&is_live).await {
            Ok(removed) => report.removed.extend(removed),
            Err(error) => report.errors.push(error.to_string()),
        }
    }
    drop(leases);
    Ok(report)
}

/// Record `FAILED` for a job no live `mc` drives (after `SUBMITTED` if it has no transition).
fn settle(store: &dyn StateStore, audit: &AuditLog, record: &JobRecord) -> Result<(), RunError> {
    let job_id = record.meta.job_id;
    let mut steps = Vec::new();
    if record.transitions.is_empty() {
        steps.push((
            JobState::Submitted,
            json!({
                "source": record.meta.source,
                "spec_file": record.meta.spec_file,
                "recovered": true,
                "reason": "the mc that stored this job died before recording it; found by mc gc",
            }),
        ));
    }
    steps.push((
        JobState::Failed,
        json!({
            "reason": "abandoned",
            "error": "the mc process driving this job exited without finishing it; found by mc gc",
            "last_state": record.state(),
        }),
    ));
    let transitions: Vec<Transition> = steps
        .iter()
        .map(|(state, detail)| Transition {
            state: *state,
            at: now_rfc3339(),
            trace_id: record.meta.trace_id.clone(),
            detail: detail.clone(),
        })
        .collect();
    let entries: Vec<HistoryEntry<'_>> = transitions.iter().map(HistoryEntry::Transition).collect();
    let digests = store.append_history(job_id, &entries)?;
    let mut records = Vec::new();
    for ((state, detail), history) in steps.into_iter().zip(digests) {
        let mut details = json!({ "state": state, "detail": detail, "history": history });
        if state == JobState::Submitted {
            details["files"] = json!(store.file_digests(job_id)?);
        }
        records.push(AuditRecord::new(
            Some(job_id),
            &record.meta.trace_id,
            record.meta.owner.as_deref(),
            "job.transition",
            details,
        ));
    }
    audit.append_all(&records)?;
    Ok(())
}

/// The audit records a job's history has and the audit log lacks (a crash between a history
/// write and its audit append), marked `recovered`: step results first, then transitions, as
/// the runner writes them. An error when the history is not an extension of what was recorded.
fn unaudited(
    store: &dyn StateStore,
    record: &JobRecord,
    recorded: Option<&HistoryDigests>,
) -> Result<Vec<AuditRecord>, NotReconciled> {
    let job_id = record.meta.job_id;
    let history = store
        .history(job_id)
        .map_err(|error| NotReconciled::Unreadable(format!("job {job_id}: {error}")))?;
    // Not a history as Maestro writes it: edited by hand, not a crash's.
    let current = history.digests().map_err(|message| {
        NotReconciled::NotACrash(format!(
            "job {job_id}: {message}; not reconciled (see `mc audit verify`)"
        ))
    })?;
    let empty = FileDigest {
        entries: 0,
        sha256: sha256_hex(b"[]\n"),
    };
    let recorded = recorded.cloned().unwrap_or_else(|| HistoryDigests {
        state: empty.clone(),
        steps: empty,
    });
    if current == recorded {
        return Ok(Vec::new());
    }
    let (Some(states), Some(steps)) =
        (array_entries(&history.state), array_entries(&history.steps))
    else {
        return Err(NotReconciled::NotACrash(format!(
            "job {job_id}: its history is not as Maestro writes it; not reconciled (see `mc audit verify`)"
        )));
    };
    // Nothing of it audited, and more than a crash leaves unaudited: the log lost its records
    // some other way (removed or replaced), and gc does not bless that.
    if recorded.state.entries == 0
        && recorded.steps.entries == 0
        && crate::audit::beyond_creation(states.len(), steps.len())
    {
        return Err(NotReconciled::NotACrash(format!(
            "job {job_id}: the audit log has none of its history, yet it goes on past its creation ({} transition{}, {} step result{}), which no crash leaves; not reconciled (see `mc audit verify`)",
            states.len(),
            if states.len() == 1 { "" } else { "s" },
            steps.len(),
            if steps.len() == 1 { "" } else { "s" },
        )));
    }
    if prefix_matches(&history.state, &recorded.state).is_none()
        || prefix_matches(&history.steps, &recorded.steps).is_none()
    {
        return Err(NotReconciled::NotACrash(format!(
            "job {job_id}: its history no longer matches its last audit record; not reconciled (see `mc audit verify`)"
        )));
    }
    // What a crash leaves is what the runner would have audited next: legal transitions, and
    // nothing after a final state. Anything else was written by hand, and is not blessed.
    let history = crate::audit::Unaudited {
        states: &states,
        audited_states: recorded.state.entries,
        steps: &steps,
        audited_steps: recorded.steps.entries,
    };
    let spec_steps = crate::audit::spec_step_names(store, &record.meta);
    if let Some(why) = crate::audit::illegal_continuation(&history, spec_steps.as_deref()) {
        return Err(NotReconciled::NotACrash(format!(
            "job {job_id}: its history goes on past its last audit record with what no crash leaves ({why}); not reconciled (see `mc audit verify`)"
        )));
    }
    let digest = |entries: &[&[u8]]| {
        let bytes = array_bytes(entries);
        FileDigest {
            entries: entries.len(),
            sha256: sha256_hex(&bytes),
        }
    };
    let new = |event: &str, details: serde_json::Value| {
        AuditRecord::new(
            Some(job_id),
            &record.meta.trace_id,
            record.meta.owner.as_deref(),
            event,
            details,
        )
    };
    let mut records = Vec::new();
    let state_at = recorded.state.entries;
    for count in recorded.steps.entries + 1..=steps.len() {
        let mut details: serde_json::Value =
            serde_json::from_slice(steps[count - 1]).unwrap_or_default();
        if let Some(object) = details.as_object_mut() {
            object.insert("recovered".to_owned(), json!(true));
            object.insert(
                "history".to_owned(),
                json!(HistoryDigests {
                    state: digest(&states[..state_at]),
                    steps: digest(&steps[..count]),
                }),
            );
        }
        records.push(new("step.finished", details));
    }
    for count in state_at + 1..=states.len() {
        let transition: serde_json::Value =
            serde_json::from_slice(states[count - 1]).unwrap_or_default();
        let mut details = json!({
            "state": transition["state"],
            "detail": transition["detail"],
            "recovered": true,
            "history": HistoryDigests {
                state: digest(&states[..count]),
                steps: digest(&steps),
            },
        });
        if transition["state"] == json!(JobState::Submitted) {
            let files = store
                .file_digests(job_id)
                .map_err(|error| NotReconciled::Unreadable(format!("job {job_id}: {error}")))?;
            details["files"] = json!(files);
        }
        records.push(new("job.transition", details));
    }
    Ok(records)
}

fn describe_recovered(record: &AuditRecord) -> String {
    match record.event.as_str() {
        "job.transition" => format!(
            "transition {}",
            record.details["state"].as_str().unwrap_or("?")
        ),
        "step.finished" => format!("step {:?}", record.details["name"].as_str().unwrap_or("?")),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::state::FileStore;

    /// An executor that records what the runner asked of it.
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<String>>,
        fail_prepare: bool,
        exit_code: i32,
        /// Report every step's teardown as failed, with a process left behind.
        leave_behind: bool,
        /// What `stage` saw, in order.
        stages: Mutex<Vec<String>>,
        /// The request `stage` was given, to compare with the one `run` is given.
        staged: Mutex<Option<StepRequest>>,
        /// The state root, for `stage` to look up the job's state in.
        root: Option<PathBuf>,
    }

    impl Recording {
        /// The job's state in the store, or "not stored" (with a state root to look in).
        fn stored_state(&self, job_id: JobId) -> String {
            let Some(root) = &self.root else {
                return "not looked up".to_owned();
            };
            match FileStore::new(root).load(job_id) {
                Ok(record) => format!("stored {}", record.state()),
                Err(_) => "not stored".to_owned(),
            }
        }
    }

    #[async_trait]
    impl Executor for Recording {
        async fn stage(&self, step: &StepRequest) {
            let seen = format!(
                "stage {} with {} secret(s), job {}",
                step.name,
                step.secrets.len(),
                self.stored_state(step.job_id)
            );
            self.stages.lock().unwrap().push(seen);
            *self.staged.lock().unwrap() = Some(step.clone());
            // Pending once: the runner stores the job meanwhile.
            tokio::task::yield_now().await;
            let seen = format!("staged, job {}", self.stored_state(step.job_id));
            self.stages.lock().unwrap().push(seen);
        }

        async fn prepare(&self, steps: &[StepRequest]) -> Result<(), ExecutorError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("prepare {}", steps.len()));
            if self.fail_prepare {
                return Err(ExecutorError::Unavailable {
                    message: "engine down".to_owned(),
                });
            }
            Ok(())
        }

        async fn run(
            &self,
            step: &StepRequest,
            output: &mut StepOutput,
            _control: &StepControl,
        ) -> Result<StepOutcome, ExecutorError> {
            let as_staged = self.staged.lock().unwrap().as_ref() == Some(step);
            self.calls.lock().unwrap().push(if as_staged {
                format!("run {} as staged", step.name)
            } else {
                format!("run {}", step.name)
            });
            output.write(
                crate::output::Stream::Stdout,
                step.env["TRACE_ID"].as_bytes(),
            )?;
            // A step that prints the secrets it received.
            for (name, secret) in &step.secrets {
                output.write(
                    crate::output::Stream::Stdout,
                    format!("\n{name}={}\n", secret.expose()).as_bytes(),
                )?;
            }
            let mut outcome = StepOutcome::exited(self.exit_code);
            if self.leave_behind {
                outcome.teardown = Some(crate::executor::Teardown::failed(
                    crate::executor::TeardownMethod::ProcessGroup,
                    vec!["pid 4242 (sleep)".to_owned()],
                ));
            }
            Ok(outcome)
        }

        async fn finish(&self, _job_id: JobId) {
            self.calls.lock().unwrap().push("finish".to_owned());
        }
    }

    fn runner(dir: &std::path::Path, executor: Arc<Recording>) -> Runner {
        let mut registry = ExecutorRegistry::new();
        registry.register("local", executor);
        Runner::new(
            Arc::new(FileStore::new(dir)),
            AuditLog::new(dir),
            Arc::new(registry),
            RunnerConfig::default(),
        )
    }

    fn request(spec: &str) -> SubmitRequest {
        SubmitRequest {
            spec_bytes: spec.as_bytes().to_vec(),
            source: "job.json".to_owned(),
            format: SpecFormat::Json,
            trace_id: TraceId::parse("trace-1").unwrap(),
            runtime_override: None,
            invocation_dir: PathBuf::from("/"),
            caller_env: CallerEnv::default(),
        }
    }

    const GOOD: &str =
        r#"{"name":"j","owner":"ana","steps":[{"name":"a","run":"x"},{"name":"b","run":"y"}]}"#;

    #[tokio::test]
    async fn denied_jobs_never_reach_an_executor() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let report = runner(dir.path(), executor.clone())
            .submit(
                request(r#"{"name":"j","steps":[{"name":"a","run":"x"}]}"#),
                None,
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Denied);
        assert!(
            executor.calls.lock().unwrap().is_empty(),
            "not even prepare"
        );
        assert!(executor.stages.lock().unwrap().is_empty(), "nor stage");
    }

    #[tokio::test]
    async fn the_first_step_is_staged_with_its_secrets_while_the_job_is_stored_then_run_as_staged()
    {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording {
            root: Some(dir.path().to_path_buf()),
            ..Recording::default()
        });
        let report = submit_with_token(dir.path(), &executor).await;
        assert_eq!(report.state, JobState::Succeeded);
        // Started before the job was stored, done once it is durable with RUNNING: the work
        // overlaps the store's syncs.
        assert_eq!(
            *executor.stages.lock().unwrap(),
            [
                "stage a with 1 secret(s), job not stored",
                "staged, job stored RUNNING"
            ]
        );
        assert_eq!(
            *executor.calls.lock().unwrap(),
            ["prepare 2", "run a as staged", "run b", "finish"]
        );
        // A job whose secret cannot be read is never staged.
        let executor = Arc::new(Recording::default());
        let report = runner(dir.path(), executor.clone())
            .submit(self::request(WITH_SECRET), None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Failed);
        assert!(executor.stages.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn allowed_jobs_prepare_once_run_in_order_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let report = runner(dir.path(), executor.clone())
            .submit(request(GOOD), None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Succeeded);
        assert_eq!(
            *executor.calls.lock().unwrap(),
            ["prepare 2", "run a as staged", "run b", "finish"]
        );
        let log =
            std::fs::read_to_string(FileStore::new(dir.path()).step_log_path(report.job_id, "a"))
                .unwrap();
        assert!(log.contains(" out trace-1\n"), "{log}");
    }

    #[tokio::test]
    async fn a_failed_step_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording {
            exit_code: 2,
            ..Recording::default()
        });
        let report = runner(dir.path(), executor.clone())
            .submit(request(GOOD), None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Failed);
        assert_eq!(report.failure, Some(FailureKind::StepFailed));
        assert_eq!(report.steps[1].status, StepStatus::Skipped);
        assert_eq!(
            *executor.calls.lock().unwrap(),
            ["prepare 2", "run a as staged", "finish"]
        );
    }

    #[tokio::test]
    async fn a_job_is_stored_with_its_verdicts_and_running_before_any_executor_is_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording {
            fail_prepare: true,
            ..Recording::default()
        });
        let store = FileStore::new(dir.path());
        let report = runner(dir.path(), executor.clone())
            .submit(request(GOOD), None, CancellationToken::new())
            .await
            .unwrap();
        // The history the job was created with, before anything else was written: SUBMITTED
        // and RUNNING with every verdict, in the journal's first write.
        let journal = std::fs::read_to_string(
            dir.path()
                .join("jobs")
                .join(report.job_id.to_string())
                .join("history.journal"),
        )
        .unwrap();
        let records: Vec<&str> = journal.lines().collect();
        assert!(records[0].contains(r#""state":"SUBMITTED""#), "{journal}");
        assert!(
            records[1].contains(r#""state":"RUNNING""#)
                && records[1].contains(r#""policy":"owner-present""#),
            "{journal}"
        );
        // Audited in the same order, each transition with the digests of the history up to
        // its own entry, and `mc audit verify` agrees.
        let audit = AuditLog::new(dir.path());
        let events: Vec<(String, serde_json::Value)> = audit
            .read_all()
            .unwrap()
            .into_iter()
            .filter(|record| record.job_id == Some(report.job_id))
            .map(|record| (record.event, record.details))
            .collect();
        let names: Vec<&str> = events.iter().map(|(event, _)| event.as_str()).collect();
        let decisions = names.iter().filter(|e| **e == "policy.decision").count();
        assert!(decisions >= 1, "{names:?}");
        assert_eq!(names[0], "job.transition");
        assert_eq!(names[1 + decisions], "job.transition", "{names:?}");
        assert_eq!(events[0].1["state"], "SUBMITTED");
        assert_eq!(events[0].1["history"]["state.json"]["entries"], 1);
        assert_eq!(events[1 + decisions].1["state"], "RUNNING");
        assert_eq!(
            events[1 + decisions].1["history"]["state.json"]["entries"],
            2
        );
        let verification = audit.verify(None, Some(&store)).unwrap();
        assert!(verification.intact(), "{verification:?}");
    }

    #[tokio::test]
    async fn an_unavailable_executor_fails_the_job_before_any_step_runs() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording {
            fail_prepare: true,
            ..Recording::default()
        });
        let report = runner(dir.path(), executor.clone())
            .submit(request(GOOD), None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Failed);
        assert_eq!(report.failure, Some(FailureKind::ExecutorUnavailable));
        assert_eq!(report.error.as_deref(), Some("engine down"));
        assert_eq!(*executor.calls.lock().unwrap(), ["prepare 2", "finish"]);
        // RUNNING is on record before the executor is prepared: preparing is already an
        // effect outside the store (a plugin process, an image looked up).
        let record = FileStore::new(dir.path()).load(report.job_id).unwrap();
        let states: Vec<JobState> = record.transitions.iter().map(|t| t.state).collect();
        assert_eq!(
            states,
            [JobState::Submitted, JobState::Running, JobState::Failed]
        );
        assert!(record.steps.is_empty(), "{:?}", record.steps);
    }

    #[tokio::test]
    async fn a_job_cancelled_before_it_runs_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let cancel = CancellationToken::new();
        cancel.cancel();
        let report = runner(dir.path(), executor.clone())
            .submit(request(GOOD), None, cancel)
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Cancelled);
        assert!(
            !executor
                .calls
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.starts_with("run"))
        );
    }

    /// The journal of `job_id` in the state root `dir`.
    fn journal_of(dir: &std::path::Path, job_id: JobId) -> PathBuf {
        dir.join("jobs")
            .join(job_id.to_string())
            .join(crate::state::file::JOURNAL)
    }

    /// `verification` found one job's history wrong, and says `needle` of it.
    fn assert_one_problem(verification: &crate::audit::Verification, needle: &str) {
        assert_eq!(verification.jobs.len(), 1, "{verification:?}");
        assert!(
            verification.jobs[0].message.contains(needle),
            "{needle}: {verification:?}"
        );
    }

    /// Submits [`WITH_SECRET`] with its secret in the caller's environment.
    async fn submit_with_token(dir: &std::path::Path, executor: &Arc<Recording>) -> JobReport {
        let mut request = request(WITH_SECRET);
        request.caller_env = CallerEnv::from_pairs([("CI_TOKEN", "value-of-the-token")]);
        runner(dir, Arc::clone(executor))
            .submit(request, None, CancellationToken::new())
            .await
            .unwrap()
    }

    const WITH_SECRET: &str = r#"{"name":"j","owner":"ana",
        "secrets":{"TOKEN":{"env":"CI_TOKEN"}},
        "steps":[{"name":"a","run":"x","secrets":["TOKEN"]},{"name":"b","run":"y"}]}"#;

    #[tokio::test]
    async fn secrets_reach_the_steps_that_name_them_masked_in_their_logs() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let report = submit_with_token(dir.path(), &executor).await;
        assert_eq!(report.state, JobState::Succeeded);
        let store = FileStore::new(dir.path());
        let log = std::fs::read_to_string(store.step_log_path(report.job_id, "a")).unwrap();
        assert!(log.contains(" out TOKEN=***\n"), "{log}");
        let log = std::fs::read_to_string(store.step_log_path(report.job_id, "b")).unwrap();
        assert!(!log.contains("TOKEN"), "only the steps that name it: {log}");
        assert!(report.steps[0].span_id.is_some());
    }

    #[tokio::test]
    async fn an_unreadable_secret_fails_the_job_before_any_executor_is_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let report = runner(dir.path(), executor.clone())
            .submit(request(WITH_SECRET), None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Failed);
        assert_eq!(report.failure, Some(FailureKind::SecretUnavailable));
        assert_eq!(
            report.error.as_deref(),
            Some("secret TOKEN: environment variable CI_TOKEN is not set")
        );
        assert!(
            executor.calls.lock().unwrap().is_empty(),
            "not even prepare"
        );
    }

    #[tokio::test]
    async fn on_a_server_production_waits_for_another_identitys_approval() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let runner = runner(dir.path(), executor.clone());
        // The spec's own approval block does not count on a server.
        let prod = r#"{"name":"j","environment":"prod","approval":{"approved_by":"bo"},"steps":[{"name":"a","run":"x"}]}"#;
        let Accepted::AwaitingApproval(mut job) =
            runner.accept(request(prod), "ana").await.unwrap()
        else {
            panic!("a production job awaits approval");
        };
        assert!(executor.calls.lock().unwrap().is_empty());
        assert_eq!(job.meta().owner.as_deref(), Some("ana"));
        assert!(matches!(
            job.approve("ＡＮＡ", None),
            Err(ApprovalError::OwnJob { .. })
        ));
        job.approve("bo", Some("CHG-1")).unwrap();
        let report = runner
            .run_pending(job, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Succeeded);
        let record = FileStore::new(dir.path()).load(report.job_id).unwrap();
        let states: Vec<JobState> = record.transitions.iter().map(|t| t.state).collect();
        assert_eq!(
            states,
            [
                JobState::Submitted,
                JobState::AwaitingApproval,
                JobState::Running,
                JobState::Succeeded
            ]
        );
        assert_eq!(
            record.transitions[2].detail["approval"]["approved_by"],
            "bo"
        );
    }

    #[tokio::test]
    async fn on_a_server_a_job_cancelled_while_it_waited_never_runs_nor_prepares() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let runner = runner(dir.path(), executor.clone());
        let Accepted::Queued(job) = runner.accept(request(GOOD), "ana").await.unwrap() else {
            panic!("an allowed job is queued");
        };
        let cancel = CancellationToken::new();
        cancel.cancel();
        let report = runner.run_pending(job, cancel).await.unwrap();
        assert_eq!(report.state, JobState::Cancelled);
        assert!(executor.calls.lock().unwrap().is_empty());
        let record = FileStore::new(dir.path()).load(report.job_id).unwrap();
        let states: Vec<JobState> = record.transitions.iter().map(|t| t.state).collect();
        assert_eq!(states, [JobState::Submitted, JobState::Cancelled]);
    }

    #[tokio::test]
    async fn on_a_server_the_owner_is_the_caller_and_other_denials_are_final() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let runner = runner(dir.path(), executor.clone());
        let error = runner.accept(request(GOOD), "bo").await.unwrap_err();
        assert!(matches!(error, RunError::OwnerMismatch { .. }), "{error}");
        let no_owner = r#"{"name":"j","steps":[{"name":"a","run":"x"}]}"#;
        let Accepted::Queued(job) = runner.accept(request(no_owner), "bo").await.unwrap() else {
            panic!("owner-present is satisfied by the caller");
        };
        let report = runner
            .run_pending(job, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Succeeded);
        let long = r#"{"name":"j","environment":"prod","steps":[{"name":"a","run":"x","timeout_seconds":999999}]}"#;
        let Accepted::Denied(report) = runner.accept(request(long), "bo").await.unwrap() else {
            panic!("a denial by another policy is final, approval or not");
        };
        assert_eq!(report.state, JobState::Denied);
    }

    #[tokio::test]
    async fn a_step_that_leaves_something_behind_fails_the_job_and_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording {
            leave_behind: true,
            ..Recording::default()
        });
        let report = runner(dir.path(), executor.clone())
            .submit(request(GOOD), None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.state, JobState::Failed);
        assert_eq!(report.failure, Some(FailureKind::TeardownFailed));
        assert_eq!(report.steps[0].status, StepStatus::TeardownFailed);
        assert_eq!(report.steps[1].status, StepStatus::Skipped);
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("pid 4242 (sleep)")),
            "{report:?}"
        );
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(
            audit.matches("\"step.teardown_failed\"").count(),
            1,
            "{audit}"
        );
    }

    fn stored_meta(job_id: JobId) -> JobMeta {
        JobMeta {
            job_id,
            name: "j".to_owned(),
            owner: Some("ana".to_owned()),
            environment: None,
            trace_id: TraceId::parse("t").unwrap(),
            submitted_at: now_rfc3339(),
            spec_file: "spec.json".to_owned(),
            source: "job.json".to_owned(),
            driver: None,
        }
    }

    fn transition(state: JobState) -> Transition {
        Transition {
            state,
            at: now_rfc3339(),
            trace_id: TraceId::parse("t").unwrap(),
            detail: json!({}),
        }
    }

    /// A job stored as the runner stores it: created with `states` in its history, and those
    /// audited (with their digests) before anything else is written for it.
    fn created_and_audited(
        store: &dyn StateStore,
        audit: &AuditLog,
        job_id: JobId,
        spec: &[u8],
        states: &[JobState],
    ) {
        let transitions: Vec<Transition> = states.iter().map(|state| transition(*state)).collect();
        let entries: Vec<HistoryEntry<'_>> =
            transitions.iter().map(HistoryEntry::Transition).collect();
        let describe = |digests: &[HistoryDigests],
                        files: &std::collections::BTreeMap<String, String>| {
            transitions
                .iter()
                .zip(digests)
                .enumerate()
                .map(|(index, (transition, history))| {
                    let mut details =
                        json!({ "state": transition.state, "detail": {}, "history": history });
                    if index == 0 {
                        details["files"] = json!(files);
                    }
                    AuditRecord::new(
                        Some(job_id),
                        &transition.trace_id,
                        Some("ana"),
                        "job.transition",
                        details,
                    )
                })
                .collect()
        };
        drop(
            store
                .create_job_audited(audit, &stored_meta(job_id), spec, &entries, &describe)
                .unwrap(),
        );
    }

    #[tokio::test]
    async fn gc_settles_every_crash_window_and_a_second_gc_has_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(FileStore::new(dir.path()));
        let audit = AuditLog::new(dir.path());
        // Killed before its first transition: its history is empty.
        let empty = JobId::now_v7();
        drop(store.create_job(&stored_meta(empty), b"{}").unwrap());
        // Killed between a history write and its audit record (its creation audited first,
        // as the runner audits it before anything else is written for the job).
        let unaudited = JobId::now_v7();
        created_and_audited(
            store.as_ref(),
            &audit,
            unaudited,
            b"{}",
            &[JobState::Submitted],
        );
        store
            .append_transition(unaudited, &transition(JobState::Running))
            .unwrap();
        store
            .append_step(unaudited, &StepRecord::skipped("a", "local"))
            .unwrap();
        // Killed while staging.
        std::fs::create_dir_all(
            dir.path()
                .join("jobs")
                .join(format!(".new-{}", JobId::now_v7().simple())),
        )
        .unwrap();

        let report = collect_garbage(Arc::clone(&store), &audit, &[])
            .await
            .unwrap();
        assert_eq!(report.abandoned_jobs.len(), 2, "{report:?}");
        assert_eq!(report.recovered.len(), 2, "{report:?}");
        assert_eq!(report.settled.len(), 1, "{report:?}");
        assert!(report.removed.is_empty(), "{report:?}");
        assert!(report.errors.is_empty(), "{report:?}");
        for job_id in [empty, unaudited] {
            assert_eq!(store.load(job_id).unwrap().state(), JobState::Failed);
        }
        let states: Vec<JobState> = store
            .load(empty)
            .unwrap()
            .transitions
            .iter()
            .map(|t| t.state)
            .collect();
        assert_eq!(states, [JobState::Submitted, JobState::Failed]);
        let verification = audit.verify(None, Some(store.as_ref())).unwrap();
        assert!(verification.intact(), "{verification:?}");
        let recovered = audit
            .read_all()
            .unwrap()
            .into_iter()
            .filter(|record| record.details["recovered"] == json!(true))
            .count();
        assert_eq!(
            recovered, 2,
            "the two records the crash kept out of the log"
        );
        let submitted = audit
            .read_all()
            .unwrap()
            .into_iter()
            .filter(|record| record.job_id == Some(empty))
            .map(|record| record.details["detail"]["recovered"].clone())
            .collect::<Vec<_>>();
        assert_eq!(
            submitted,
            [json!(true), json!(null)],
            "SUBMITTED, then FAILED"
        );

        let again = collect_garbage(Arc::clone(&store), &audit, &[])
            .await
            .unwrap();
        assert!(again.is_empty() && again.errors.is_empty(), "{again:?}");
    }

    /// A history cut back (its audited final record removed) or extended by hand (a
    /// transition no job makes) is not what a crash leaves: `mc gc` neither settles nor
    /// recovers it, and `mc audit verify` keeps saying it was edited, before and after gc.
    /// What a crash left unaudited is recovered only when it is what the runner would have
    /// written next: the spec's steps in order, `SUCCEEDED` only after every step succeeded,
    /// times that do not go back. A forged tail on a crashed job is neither recovered nor
    /// settled, and verification keeps calling it an edit.
    #[tokio::test]
    async fn gc_recovers_a_crashed_jobs_tail_only_when_the_runner_could_have_written_it() {
        let succeeded = |name: &str| StepRecord {
            status: StepStatus::Succeeded,
            exit_code: Some(0),
            ..StepRecord::skipped(name, "local")
        };
        let dated = |state: JobState, at: &str| Transition {
            at: at.to_owned(),
            ..transition(state)
        };
        type Tail = Vec<Result<StepRecord, Transition>>;
        let cases: Vec<(&str, Tail, bool)> = vec![
            (
                "both steps, then SUCCEEDED",
                vec![
                    Ok(succeeded("a")),
                    Ok(succeeded("b")),
                    Err(transition(JobState::Succeeded)),
                ],
                true,
            ),
            ("the first step only", vec![Ok(succeeded("a"))], true),
            (
                "a step the spec does not have",
                vec![Ok(succeeded("zzz")), Err(transition(JobState::Succeeded))],
                false,
            ),
            (
                "SUCCEEDED with a step missing",
                vec![Ok(succeeded("a")), Err(transition(JobState::Succeeded))],
                false,
            ),
            (
                "SUCCEEDED dated before RUNNING",
                vec![
                    Ok(succeeded("a")),
                    Ok(succeeded("b")),
                    Err(dated(JobState::Succeeded, "2001-01-01T00:00:00.000000Z")),
                ],
                false,
            ),
        ];
        for (case, tail, recoverable) in cases {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn StateStore> = Arc::new(FileStore::new(dir.path()));
            let audit = AuditLog::new(dir.path());
            let job_id = JobId::now_v7();
            // Killed after its creation was audited (SUBMITTED and RUNNING on record, as the
            // runner stores and audits them before anything else).
            created_and_audited(
                store.as_ref(),
                &audit,
                job_id,
                GOOD.as_bytes(),
                &[JobState::Submitted, JobState::Running],
            );
            for entry in &tail {
                match entry {
                    Ok(step) => drop(store.append_step(job_id, step).unwrap()),
                    Err(transition) => {
                        // Dated now (after RUNNING), unless the case dates it itself.
                        let mut transition = transition.clone();
                        if !transition.at.starts_with("2001") {
                            transition.at = now_rfc3339();
                        }
                        drop(store.append_transition(job_id, &transition).unwrap())
                    }
                }
            }
            let gc = collect_garbage(Arc::clone(&store), &audit, &[])
                .await
                .unwrap();
            let verification = audit.verify(None, Some(store.as_ref())).unwrap();
            if recoverable {
                assert!(gc.errors.is_empty(), "{case}: {gc:?}");
                assert!(!gc.recovered.is_empty(), "{case}: {gc:?}");
                assert!(verification.intact(), "{case}: {verification:?}");
            } else {
                assert!(gc.recovered.is_empty(), "{case}: {gc:?}");
                assert!(gc.abandoned_jobs.is_empty(), "{case}: {gc:?}");
                assert!(
                    gc.unreconciled
                        .iter()
                        .any(|error| error.contains("no crash leaves")),
                    "{case}: {gc:?}"
                );
                assert!(!verification.intact(), "{case}: {verification:?}");
                assert!(
                    verification.jobs[0]
                        .message
                        .contains("the history was edited"),
                    "{case}: {verification:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn gc_settles_no_history_cut_back_or_extended_by_hand_and_verify_keeps_seeing_it() {
        for edit in ["cut the final record", "append an illegal transition"] {
            let dir = tempfile::tempdir().unwrap();
            let report = runner(dir.path(), Arc::new(Recording::default()))
                .submit(request(GOOD), None, CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(report.state, JobState::Succeeded);
            let store: Arc<dyn StateStore> = Arc::new(FileStore::new(dir.path()));
            let path = journal_of(dir.path(), report.job_id);
            let journal = std::fs::read_to_string(&path).unwrap();
            let mut lines: Vec<&str> = journal.lines().collect();
            match edit {
                "cut the final record" => {
                    lines.pop();
                }
                _ => {
                    let running = *lines
                        .iter()
                        .find(|line| line.contains("\"RUNNING\""))
                        .unwrap();
                    lines.push(running);
                }
            }
            let edited = lines.join("\n") + "\n";
            std::fs::write(&path, crate::state::journal::reseal(edited.as_bytes())).unwrap();
            let audit = AuditLog::new(dir.path());
            let before = audit.verify(None, Some(store.as_ref())).unwrap();
            assert_eq!(before.jobs.len(), 1, "{edit}: {before:?}");
            assert!(
                before.jobs[0].message.contains("the history was edited"),
                "{edit}: {before:?}"
            );
            let gc = collect_garbage(Arc::clone(&store), &audit, &[])
                .await
                .unwrap();
            assert!(gc.recovered.is_empty(), "{edit}: {gc:?}");
            assert!(gc.abandoned_jobs.is_empty(), "{edit}: settled: {gc:?}");
            assert!(gc.errors.is_empty(), "{edit}: {gc:?}");
            assert_eq!(gc.unreconciled.len(), 1, "{edit}: {gc:?}");
            assert!(
                gc.unreconciled[0].contains("not reconciled"),
                "{edit}: {gc:?}"
            );
            let after = audit.verify(None, Some(store.as_ref())).unwrap();
            assert!(!after.intact(), "{edit}: gc blessed the edit: {after:?}");
            assert_eq!(after.jobs[0].message, before.jobs[0].message, "{edit}");
        }
    }

    /// Cut back and extended again (the final record replaced by another): the last audit
    /// record would match a history rewritten to it, the ones before it do not.
    #[tokio::test]
    async fn verify_checks_a_history_against_every_digest_recorded_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let report = runner(dir.path(), Arc::new(Recording::default()))
            .submit(request(GOOD), None, CancellationToken::new())
            .await
            .unwrap();
        let store: Arc<dyn StateStore> = Arc::new(FileStore::new(dir.path()));
        let audit = AuditLog::new(dir.path());
        assert!(audit.verify(None, Some(store.as_ref())).unwrap().intact());
        // Keep only SUBMITTED and RUNNING, then record FAILED through the store and audit it
        // as the runner would: the newest digest matches, the step results' earlier one not.
        let path = journal_of(dir.path(), report.job_id);
        let journal = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = journal
            .lines()
            .filter(|line| line.starts_with("transition") && !line.contains("SUCCEEDED"))
            .collect();
        let edited = kept.join("\n") + "\n";
        std::fs::write(&path, crate::state::journal::reseal(edited.as_bytes())).unwrap();
        let record = store.load(report.job_id).unwrap();
        assert_eq!(record.state(), JobState::Running);
        settle(store.as_ref(), &audit, &record).unwrap();
        let verification = audit.verify(None, Some(store.as_ref())).unwrap();
        assert_one_problem(&verification, "no longer match what audit line");
    }

    #[tokio::test]
    async fn gc_does_not_bless_an_edited_history() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(Recording::default());
        let report = runner(dir.path(), executor)
            .submit(request(GOOD), None, CancellationToken::new())
            .await
            .unwrap();
        let store: Arc<dyn StateStore> = Arc::new(FileStore::new(dir.path()));
        let path = journal_of(dir.path(), report.job_id);
        let edited = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"succeeded\"", "\"failed\"");
        // Edited the way someone who knows the format would: each record's frame made to
        // match its new payload.
        std::fs::write(&path, crate::state::journal::reseal(edited.as_bytes())).unwrap();
        let audit = AuditLog::new(dir.path());
        let gc = collect_garbage(Arc::clone(&store), &audit, &[])
            .await
            .unwrap();
        assert!(gc.recovered.is_empty(), "{gc:?}");
        assert_eq!(gc.unreconciled.len(), 1, "{gc:?}");
        let verification = audit.verify(None, Some(store.as_ref())).unwrap();
        assert_one_problem(&verification, "its step results no longer");
        assert!(
            verification.jobs[0]
                .message
                .contains("the history was edited")
        );
    }
}
