//! The runner: validate, persist, evaluate policies, run the steps, record everything.
//!
//! The runner knows the [`Executor`] trait, the [`ExecutorRegistry`], [`evaluate_policies`] and
//! the [`StateStore`] trait, and nothing about any particular executor. Its order of work is the
//! safety argument of the whole system: a job is stored and `SUBMITTED` before its policies are
//! evaluated, every verdict is recorded, and only an allowed job is handed to an executor.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::JobId;
use crate::audit::{AuditError, AuditLog, AuditRecord};
use crate::executor::{
    Executor, ExecutorError, ExecutorRegistry, StepControl, StepOutcome, StepRequest, StopReason,
    UnknownRuntime,
};
use crate::output::{OutputObserver, StepOutput};
use crate::plan::{PlanOptions, PlannedStep, plan_steps};
use crate::policy::{PolicyConfig, PolicyReport, evaluate_policies};
use crate::spec::{
    JobSpec, MAX_TIMEOUT_SECONDS, SpecError, SpecFormat, is_valid_runtime_name, parse,
};
use crate::state::{
    JobLease, JobMeta, JobState, StateError, StateStore, StepRecord, StepStatus, Transition,
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
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            policy: PolicyConfig::default(),
            stop_grace: Duration::from_secs(5),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
        };
        let steps = plan_steps(job_id, &spec, &request.trace_id, &options);
        let mut executors = Vec::with_capacity(steps.len());
        let mut plan = Vec::with_capacity(steps.len());
        for step in &steps {
            let executor = self.registry.resolve(&step.runtime)?;
            executor
                .check_step(step)
                .map_err(|error| RunError::InvalidStep(error.to_string()))?;
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
            let admitted = match self.admit(&request, job_id).await {
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
            let lease = self.store.create_job(&meta, &request.spec_bytes)?;
            if let Some(observer) = &observer {
                observer.job_stored(job_id, &meta.trace_id);
            }
            let job = JobRun {
                runner: self,
                meta,
                _lease: lease,
                observer,
                cancel,
            };
            job.run(admitted).await
        }
        .instrument(span)
        .await
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
        let owner = self.meta.owner.as_deref().unwrap_or_default();
        if crate::identity::same_identity(owner, approver) {
            return Err(ApprovalError::OwnJob {
                job_id: self.meta.job_id,
                approver: approver.to_owned(),
            });
        }
        self.approval =
            Some(json!({ "approved_by": approver, "reason": reason, "at": now_rfc3339() }));
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
            let lease = self.store.create_job(&meta, &request.spec_bytes)?;
            let job = JobRun {
                runner: self,
                meta,
                _lease: lease,
                observer: None,
                cancel: CancellationToken::new(),
            };
            let policies = job.decide(&admitted.spec, &admitted.plan)?;
            let policy_detail = serde_json::to_value(&policies.verdicts).unwrap_or_default();
            let denials: Vec<&crate::policy::Verdict> = policies.denials().collect();
            let awaiting = !denials.is_empty()
                && denials.iter().all(|verdict| verdict.policy == APPROVAL_POLICY);
            if !denials.is_empty() && !awaiting {
                job.record(JobState::Denied, json!({ "policies": policy_detail }))?;
                return Ok(Accepted::Denied(job.report(
                    JobState::Denied,
                    policies,
                    Vec::new(),
                    None,
                )));
            }
            if awaiting {
                job.record(
                    JobState::AwaitingApproval,
                    json!({
                        "policies": policy_detail,
                        "approval": {
                            "required": "a production job runs only when an identity with the approve role other than its owner approves it",
                        },
                    }),
                )?;
            }
            let JobRun { meta, _lease, .. } = job;
            let pending = PendingJob {
                meta,
                lease: _lease,
                steps: admitted.steps,
                executors: admitted.executors,
                policies,
                approval: None,
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
        } = job;
        let span = tracing::info_span!("job", job_id = %meta.job_id, trace_id = %meta.trace_id);
        let run = JobRun {
            runner: self,
            meta,
            _lease: lease,
            observer: None,
            cancel,
        };
        run.execute(steps, executors, policies, approval)
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
        };
        let mut admitted = self.admit(&request, job_id).await?;
        admitted.spec.owner = record.meta.owner.clone();
        admitted.spec.approval = None;
        let policies = evaluate_policies(&admitted.spec, &admitted.plan, &self.config.policy);
        Ok(Some((
            PendingJob {
                meta: record.meta,
                lease,
                steps: admitted.steps,
                executors: admitted.executors,
                policies,
                approval: None,
            },
            state,
        )))
    }
}

/// One job being driven; holding it holds the job's lease.
struct JobRun<'a> {
    runner: &'a Runner,
    meta: JobMeta,
    _lease: JobLease,
    observer: Option<Arc<dyn OutputObserver>>,
    cancel: CancellationToken,
}

impl JobRun<'_> {
    fn record(&self, state: JobState, detail: serde_json::Value) -> Result<(), RunError> {
        let transition = Transition {
            state,
            at: now_rfc3339(),
            trace_id: self.meta.trace_id.clone(),
            detail: detail.clone(),
        };
        self.runner
            .store
            .append_transition(self.meta.job_id, &transition)?;
        self.audit(
            "job.transition",
            json!({ "state": state, "detail": detail }),
        )?;
        tracing::info!(state = %state, "job state changed");
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

    fn audit(&self, event: &str, details: serde_json::Value) -> Result<(), RunError> {
        self.runner
            .audit
            .append(&self.audit_record(event, details))?;
        Ok(())
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

    async fn run(self, admitted: Admitted) -> Result<JobReport, RunError> {
        let Admitted {
            spec,
            steps,
            executors,
            plan,
        } = admitted;
        let policies = self.decide(&spec, &plan)?;
        let policy_detail = serde_json::to_value(&policies.verdicts).unwrap_or_default();
        if !policies.allowed() {
            self.record(JobState::Denied, json!({ "policies": policy_detail }))?;
            return Ok(self.report(JobState::Denied, policies, Vec::new(), None));
        }
        self.execute(steps, executors, policies, None).await
    }

    /// Record `SUBMITTED`, evaluate every policy and audit each verdict.
    fn decide(&self, spec: &JobSpec, plan: &[PlannedStep]) -> Result<PolicyReport, RunError> {
        self.record(
            JobState::Submitted,
            json!({ "source": self.meta.source, "spec_file": self.meta.spec_file }),
        )?;
        let policies = evaluate_policies(spec, plan, &self.runner.config.policy);
        let decisions: Vec<AuditRecord> = policies
            .verdicts
            .iter()
            .map(|verdict| {
                self.audit_record(
                    "policy.decision",
                    serde_json::to_value(verdict).unwrap_or_default(),
                )
            })
            .collect();
        self.runner.audit.append_all(&decisions)?;
        Ok(policies)
    }

    /// Prepare the executors, run the steps and finish: the part of a job after policy allowed
    /// it (and, on a server, after it was approved: `approval` goes into `RUNNING`'s record).
    async fn execute(
        self,
        steps: Vec<StepRequest>,
        executors: Vec<Arc<dyn Executor>>,
        policies: PolicyReport,
        approval: Option<serde_json::Value>,
    ) -> Result<JobReport, RunError> {
        let policy_detail = serde_json::to_value(&policies.verdicts).unwrap_or_default();
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
            Ok(()) => {
                self.run_steps(&steps, &executors, policies, policy_detail, approval)
                    .await
            }
            Err(failure) => {
                let (state, failure) = match failure {
                    None => (JobState::Cancelled, None),
                    Some(failure) => (JobState::Failed, Some(failure)),
                };
                let detail = json!({
                    "policies": policy_detail,
                    "error": failure.as_ref().map(|(_, message)| message),
                });
                self.record(state, detail)
                    .map(|()| self.report(state, policies, Vec::new(), failure))
            }
        };
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
                tracing::info!(%error, "executor could not prepare the job");
                return Err(Some((kind, error.to_string())));
            }
        }
        if self.cancel.is_cancelled() {
            return Err(None);
        }
        Ok(())
    }

    async fn run_steps(
        &self,
        steps: &[StepRequest],
        executors: &[Arc<dyn Executor>],
        policies: PolicyReport,
        policy_detail: serde_json::Value,
        approval: Option<serde_json::Value>,
    ) -> Result<JobReport, RunError> {
        let mut detail = json!({ "policies": policy_detail });
        if let Some(approval) = approval {
            detail["approval"] = approval;
        }
        self.record(JobState::Running, detail)?;
        let mut records = Vec::with_capacity(steps.len());
        let mut failure: Option<(FailureKind, String)> = None;
        let mut cancelled = false;
        for (step, executor) in steps.iter().zip(executors) {
            if failure.is_some() || cancelled || self.cancel.is_cancelled() {
                cancelled |= self.cancel.is_cancelled();
                let record = StepRecord::skipped(&step.name, &step.runtime);
                self.runner.store.append_step(self.meta.job_id, &record)?;
                records.push(record);
                continue;
            }
            let record = self.run_step(step, executor.as_ref()).await?;
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
                json!({ "reason": "cancelled by signal" }),
            )
        } else if let Some((_, message)) = &failure {
            (JobState::Failed, json!({ "error": message }))
        } else {
            (JobState::Succeeded, json!({}))
        };
        self.record(state, detail)?;
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
            let log_path = self
                .runner
                .store
                .step_log_path(self.meta.job_id, &step.name);
            if let Some(observer) = &self.observer {
                observer.step_started(&step.name, &step.runtime);
            }
            let mut output = StepOutput::new(&step.name, log, &header, self.observer.clone())
                .map_err(|source| StateError::Io {
                    action: "write",
                    path: log_path.clone(),
                    source,
                })?;
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
            let mut record = StepRecord {
                status: StepStatus::Succeeded,
                duration_ms,
                started_at: Some(started_at),
                finished_at: Some(now_rfc3339()),
                output_bytes: bytes,
                ..StepRecord::skipped(&step.name, &step.runtime)
            };
            match result {
                Ok(outcome) => apply_outcome(&mut record, &outcome),
                Err(error) => {
                    tracing::info!(%error, "executor could not run the step");
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
                    record.error = Some(error.to_string());
                }
            }
            let footer = format!(
                "maestro step={} status={} {}",
                step.name,
                status_name(record.status),
                describe(&record)
            );
            output.finish(&footer).map_err(|source| StateError::Io {
                action: "write",
                path: log_path,
                source,
            })?;
            self.runner.store.append_step(self.meta.job_id, &record)?;
            self.audit(
                "step.finished",
                serde_json::to_value(&record).unwrap_or_default(),
            )?;
            if let Some(teardown) = record.teardown.as_ref().filter(|t| !t.verified) {
                tracing::warn!(remaining = ?teardown.remaining, "step left processes or containers behind");
                self.audit(
                    "step.teardown_failed",
                    json!({ "step": step.name, "teardown": teardown }),
                )?;
            }
            tracing::info!(
                status = status_name(record.status),
                duration_ms,
                "step finished"
            );
            if let Some(observer) = &self.observer {
                observer.step_finished(&record);
            }
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
        (StepStatus::TimedOut, _, _) => format!("timed out after {} ms", record.duration_ms),
        (StepStatus::Cancelled, _, _) => "was cancelled".to_owned(),
        (_, Some(code), _) => format!("exited with code {code}"),
        (_, None, Some(signal)) => format!("was killed by signal {signal}"),
        (_, None, None) => "ended without an exit status".to_owned(),
    };
    if record.oom_killed {
        text.push_str(" (out of memory)");
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
    /// Resources the executors removed, one line each.
    pub removed: Vec<String>,
    /// Executors that could not be cleaned, one line each.
    pub errors: Vec<String>,
}

/// Find jobs left unfinished by an `mc` that died (no process holds their lease), record them
/// `FAILED`, and let each executor remove what such jobs left behind.
///
/// A job is abandoned exactly when its state is not terminal and its lease is free: the lease
/// is a lock the kernel releases when the driving process dies, however it dies.
pub async fn collect_garbage(
    store: Arc<dyn StateStore>,
    audit: &AuditLog,
    executors: &[Arc<dyn Executor>],
) -> Result<GcReport, RunError> {
    let mut report = GcReport::default();
    for job_id in store.list()? {
        let record = match store.load(job_id) {
            Ok(record) => record,
            Err(error) => {
                report.errors.push(format!("job {job_id}: {error}"));
                continue;
            }
        };
        if !store.is_abandoned(&record)? {
            continue;
        }
        let detail = json!({
            "reason": "abandoned",
            "error": "the mc process driving this job exited without finishing it; found by mc gc",
            "last_state": record.state(),
        });
        let transition = Transition {
            state: JobState::Failed,
            at: now_rfc3339(),
            trace_id: record.meta.trace_id.clone(),
            detail: detail.clone(),
        };
        match store.append_transition(job_id, &transition) {
            Ok(()) => {}
            // Another `mc gc` got there first.
            Err(StateError::IllegalTransition { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
        audit.append(&AuditRecord::new(
            Some(job_id),
            &record.meta.trace_id,
            record.meta.owner.as_deref(),
            "job.transition",
            json!({ "state": JobState::Failed, "detail": detail }),
        ))?;
        report.abandoned_jobs.push(job_id);
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
    Ok(report)
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
    }

    #[async_trait]
    impl Executor for Recording {
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
            self.calls
                .lock()
                .unwrap()
                .push(format!("run {}", step.name));
            output.write(
                crate::output::Stream::Stdout,
                step.env["TRACE_ID"].as_bytes(),
            )?;
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
            ["prepare 2", "run a", "run b", "finish"]
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
            ["prepare 2", "run a", "finish"]
        );
    }

    #[tokio::test]
    async fn an_unavailable_executor_fails_the_job_before_running() {
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
        let record = FileStore::new(dir.path()).load(report.job_id).unwrap();
        let states: Vec<JobState> = record.transitions.iter().map(|t| t.state).collect();
        assert_eq!(states, [JobState::Submitted, JobState::Failed]);
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
}
