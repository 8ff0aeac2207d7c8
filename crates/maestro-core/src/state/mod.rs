//! Job state: the lifecycle rules, what is recorded of a job, and the [`StateStore`] every
//! backend implements.
//!
//! The runner, the server and `mc` know only [`StateStore`]: a job's history, its leases, its
//! step logs (written through a [`LogSink`], read through a [`LogReader`]), its listing and the
//! audit trail are all behind it, and a backend's own errors travel as the `source` of a
//! [`StateError`]. [`FileStore`] (in [`mod@file`]) is the embedded default; a second backend runs the
//! same behaviour tests (`contract`, behind the `store-contract` feature) unchanged.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::JobId;
use crate::audit::{AuditError, AuditLog, AuditRecord};
use crate::trace::TraceId;

#[cfg(any(test, feature = "store-contract"))]
pub mod contract;
pub mod file;
pub mod journal;

pub use file::FileStore;

/// The states of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Stored; policies not yet decided.
    Submitted,
    /// A policy denied it; nothing ran.
    Denied,
    /// Steps are running.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed, or the job could not run.
    Failed,
    /// Stopped at the user's request.
    Cancelled,
    /// On a server: every policy but the approval of a production job passed, and the job waits
    /// for an approver other than its owner (`POST /v1/jobs/{id}/approve`).
    AwaitingApproval,
}

impl JobState {
    /// Whether a job may be in this state first (only `SUBMITTED`).
    pub fn can_start(self) -> bool {
        self == Self::Submitted
    }

    /// Whether a job in this state may move to `next`.
    ///
    /// `SUBMITTED → FAILED` exists for jobs allowed by policy whose executor cannot be used (an
    /// unreachable engine): they fail before running anything. `AWAITING_APPROVAL` (server only)
    /// ends in `RUNNING` once approved, `DENIED` when rejected, or `CANCELLED`/`FAILED` as
    /// `SUBMITTED` does. Terminal states go nowhere.
    pub fn can_transition_to(self, next: Self) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (
                Submitted,
                Denied | Running | Failed | Cancelled | AwaitingApproval
            ) | (Running, Succeeded | Failed | Cancelled)
                | (AwaitingApproval, Denied | Running | Failed | Cancelled)
        )
    }

    /// Whether no transition leaves this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Denied | Self::Succeeded | Self::Failed | Self::Cancelled
        )
    }

    /// The state's name as recorded, e.g. `RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "SUBMITTED",
            Self::Denied => "DENIED",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::AwaitingApproval => "AWAITING_APPROVAL",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The state entered.
    pub state: JobState,
    /// When, in RFC 3339 UTC.
    pub at: String,
    /// The job's trace id.
    pub trace_id: TraceId,
    /// Why, and anything worth keeping (policy verdicts, the error).
    pub detail: serde_json::Value,
}

/// What is known of a job from the moment it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMeta {
    /// The job's id.
    pub job_id: JobId,
    /// The job's name.
    pub name: String,
    /// Its owner as written.
    pub owner: Option<String>,
    /// Its environment as written.
    pub environment: Option<String>,
    /// Its trace id.
    pub trace_id: TraceId,
    /// When it was submitted.
    pub submitted_at: String,
    /// The stored spec's file name, e.g. `spec.yaml`.
    pub spec_file: String,
    /// The spec's path as given to `mc submit`.
    pub source: String,
    /// The process that drives the job, for `mc cancel` (absent in records of older versions,
    /// and where `/proc` could not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<crate::control::Driver>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Exit code 0.
    Succeeded,
    /// Non-zero exit, killed by a signal or out of memory.
    Failed,
    /// Stopped by its timeout.
    TimedOut,
    /// Stopped by cancellation.
    Cancelled,
    /// The executor could not run it.
    Error,
    /// Not run, because an earlier step did not succeed.
    Skipped,
    /// It ended, but something of it remained after it was killed (see its `teardown`).
    TeardownFailed,
}

/// The recorded result of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's name.
    pub name: String,
    /// The runtime that ran it.
    pub runtime: String,
    /// How it ended.
    pub status: StepStatus,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Whether its timeout stopped it.
    pub timed_out: bool,
    /// Whether it ran out of memory.
    pub oom_killed: bool,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// When it started (absent when skipped).
    pub started_at: Option<String>,
    /// When it finished (absent when skipped).
    pub finished_at: Option<String>,
    /// Bytes of output it produced.
    pub output_bytes: u64,
    /// Bytes of its output not recorded because they came past the output cap (its log ends
    /// with a note saying so).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_dropped_bytes: u64,
    /// The executor's error, when it could not run the step.
    pub error: Option<String>,
    /// How the executor verified that nothing of the step was left behind (absent when it
    /// cannot tell, and for skipped steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<crate::executor::Teardown>,
    /// The step's span id in the job's trace (the one in its `TRACEPARENT`); absent for
    /// skipped steps and in records older than trace context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl StepRecord {
    /// The record of a step that did not run.
    pub fn skipped(name: &str, runtime: &str) -> Self {
        Self {
            name: name.to_owned(),
            runtime: runtime.to_owned(),
            status: StepStatus::Skipped,
            exit_code: None,
            signal: None,
            timed_out: false,
            oom_killed: false,
            duration_ms: 0,
            started_at: None,
            finished_at: None,
            output_bytes: 0,
            output_dropped_bytes: 0,
            error: None,
            teardown: None,
            span_id: None,
        }
    }
}

/// Everything recorded about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// What was submitted.
    pub meta: JobMeta,
    /// The history, oldest first.
    pub transitions: Vec<Transition>,
    /// Step results, in the order the steps ended.
    pub steps: Vec<StepRecord>,
}

/// How a server's jobs name their source: `POST /v1/jobs by <identity>`.
pub const SERVER_SOURCE: &str = "POST /v1/jobs by ";

impl JobRecord {
    /// The job's current state (`SUBMITTED` if no transition is recorded yet).
    pub fn state(&self) -> JobState {
        self.transitions
            .last()
            .map_or(JobState::Submitted, |transition| transition.state)
    }

    /// Whether the job waits for a server to run it: a server's job (its record names no
    /// driver process) still `SUBMITTED` or `AWAITING_APPROVAL`. Its server holds it while it
    /// runs, and a stopped server takes it up again at its next start (and settles there what
    /// it can no longer run): nobody holding it is not abandonment, and `mc gc` leaves it.
    pub fn waits_for_a_server(&self) -> bool {
        self.meta.driver.is_none()
            && self.meta.source.starts_with(SERVER_SOURCE)
            && matches!(
                self.state(),
                JobState::Submitted | JobState::AwaitingApproval
            )
    }
}

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The backend could not read or write something of the store; its own error is the source.
    #[error("cannot {action} {what}: {source}")]
    Backend {
        /// What was being done, e.g. `write`.
        action: &'static str,
        /// What it was done to, e.g. a file's path.
        what: String,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No job has this id (any more: `pruned` when `mc prune` removed it).
    #[error("{}", not_found_message(*job_id, store, *pruned))]
    NotFound {
        /// The id asked for.
        job_id: JobId,
        /// The store searched, as [`StateStore::describe`] says.
        store: String,
        /// The job was there and `mc prune` removed it: its records are in the audit log.
        pruned: bool,
    },
    /// The transition is not allowed from the job's current state; nothing was written.
    #[error("illegal transition for job {job_id}: {from} -> {to}")]
    IllegalTransition {
        /// The job.
        job_id: JobId,
        /// Its current state (`none` before the first transition).
        from: String,
        /// The state asked for.
        to: JobState,
    },
    /// The job has not ended, or a live process holds it; nothing was removed.
    #[error("job {job_id} has not ended (or a live mc still holds it); it is kept")]
    StillRunning {
        /// The job.
        job_id: JobId,
    },
    /// Something stored is not what Maestro writes.
    #[error("corrupt state file {what}: {message}")]
    Corrupt {
        /// What is corrupt, e.g. a file's path.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// The audit record of a change could not be written (with a backend that writes both in
    /// one transaction, the change was not written either).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A step's log could not be written.
    #[error("cannot write the log of step {step:?} of job {job_id}: {source}")]
    Log {
        /// The job.
        job_id: JobId,
        /// The step.
        step: String,
        /// The cause.
        source: io::Error,
    },
}

fn not_found_message(job_id: JobId, store: &str, pruned: bool) -> String {
    if pruned {
        format!(
            "job {job_id} was pruned from {store} (`mc prune`); the audit log keeps its records"
        )
    } else {
        format!("no job {job_id} in {store}")
    }
}

/// Holding a lease says "a live process drives this job"; dropping it (or the holder dying,
/// however it dies) lets it go, which is how a job left `RUNNING` by a killed `mc` is told
/// apart. What holds it is the backend's: a flock-ed file, a database session.
pub struct JobLease {
    _guard: Box<dyn Any + Send + Sync>,
}

impl JobLease {
    /// A lease held for as long as `guard` lives.
    pub fn new(guard: impl Any + Send + Sync) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for JobLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobLease")
    }
}

/// Where a step's output is recorded as it runs.
pub trait LogSink: io::Write + Send {
    /// Make everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

impl LogSink for std::fs::File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

impl LogSink for Box<dyn LogSink> {
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

/// A step's log opened for reading: it reads what is recorded so far, and reading again after
/// the end gets what was recorded since (the way a file read at its end does).
pub type LogReader = Box<dyn io::Read + Send>;

/// Which jobs a page of the listing holds.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Only jobs older than this one (the previous page's `next_cursor`).
    pub before: Option<JobId>,
    /// At most this many jobs (all when 0).
    pub limit: usize,
    /// Only jobs this filter lets through.
    pub filter: crate::progress::JobFilter,
    /// At most this many jobs are looked at (all when 0): a backend that filters by reading
    /// jobs then ends the page early, short of `limit` (even empty), with a `next_cursor` after
    /// the last job it looked at, so that a page costs the same however rare matches are. A
    /// backend that filters by index ignores it.
    pub max_examined: usize,
}

/// One page of the listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobPage {
    /// The jobs' records, newest first.
    pub jobs: Vec<JobRecord>,
    /// Where the next page starts, if there are more jobs.
    pub next_cursor: Option<JobId>,
    /// Jobs the walk came to and could not read (a corrupt history), with why: left out of
    /// `jobs`, never misread, and said, so that a listing does not hide them.
    pub unreadable: Vec<(JobId, String)>,
}

/// The digest of one of a job's append-only history files as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// How many entries the file held.
    pub entries: usize,
    /// SHA-256 of its exact bytes, in hex.
    pub sha256: String,
}

/// The digests of a job's history after a write, recorded in the audit record of the change
/// that wrote it so that `mc audit verify` can tell a history edited since. They are those of
/// its transitions and its step results as two JSON arrays of the entries' exact bytes (see
/// [`array_bytes`]): what `state.json` and `steps.json` held before the journal, and what a
/// journal's records make (ADR 0023), so both layouts and every backend digest alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryDigests {
    /// The transitions (recorded under the name `state.json`).
    #[serde(rename = "state.json")]
    pub state: FileDigest,
    /// The step results (recorded under the name `steps.json`).
    #[serde(rename = "steps.json")]
    pub steps: FileDigest,
}

/// The bytes of a job's history as two JSON arrays (see [`array_bytes`]).
#[derive(Debug, Clone)]
pub struct HistoryBytes {
    /// The transitions (`state.json` in older roots).
    pub state: Vec<u8>,
    /// The step results (`steps.json` in older roots).
    pub steps: Vec<u8>,
}

impl HistoryBytes {
    /// The digests of these bytes (entries counted as Maestro writes them).
    pub fn digests(&self) -> Result<HistoryDigests, String> {
        Ok(HistoryDigests {
            state: digest_of(&self.state)?,
            steps: digest_of(&self.steps)?,
        })
    }
}

/// SHA-256 of `bytes` in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

fn digest_of(bytes: &[u8]) -> Result<FileDigest, String> {
    let entries = array_entries(bytes)
        .ok_or("not a history file as Maestro writes it")?
        .len();
    Ok(FileDigest {
        entries,
        sha256: sha256_hex(bytes),
    })
}

/// The entries of a history file in the exact form [`FileStore`] writes it (`[]\n` when empty,
/// else `[`, one compact JSON entry per line separated by `,`, then `]`), as byte slices; `None`
/// for anything else.
pub fn array_entries(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    if bytes == b"[]\n" {
        return Some(Vec::new());
    }
    let body = bytes.strip_prefix(b"[\n")?.strip_suffix(b"\n]\n")?;
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    let last = lines.len() - 1;
    lines
        .into_iter()
        .enumerate()
        .map(|(index, line)| {
            if index == last {
                Some(line)
            } else {
                line.strip_suffix(b",")
            }
        })
        .collect()
}

/// The bytes of a history file holding `entries`, exactly as [`FileStore`] writes it: so the
/// history after the first `k` entries of a file can be rebuilt (and its recorded digest
/// checked) from the file as it is now.
pub fn array_bytes(entries: &[&[u8]]) -> Vec<u8> {
    if entries.is_empty() {
        return b"[]\n".to_vec();
    }
    let mut bytes = b"[".to_vec();
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            bytes.push(b',');
        }
        bytes.push(b'\n');
        bytes.extend_from_slice(entry);
    }
    bytes.extend_from_slice(b"\n]\n");
    bytes
}

/// One entry of a job's history, for [`StateStore::append_history`].
#[derive(Debug, Clone, Copy)]
pub enum HistoryEntry<'a> {
    /// A transition (checked against the lifecycle).
    Transition(&'a Transition),
    /// A step's result.
    Step(&'a StepRecord),
}

/// Makes the audit records of a history write from the history's digests after each entry.
pub type DescribeWrite<'a> = dyn Fn(&[HistoryDigests]) -> Vec<AuditRecord> + Send + Sync + 'a;

/// Makes the audit records of a new job from the history's digests after each of its first
/// entries and the digests of the files written once (`job.json`, the spec).
pub type DescribeCreate<'a> =
    dyn Fn(&[HistoryDigests], &BTreeMap<String, String>) -> Vec<AuditRecord> + Send + Sync + 'a;

/// Where jobs are recorded: the only thing the runner, the server and `mc` know of storage.
///
/// A backend keeps every guarantee the contract tests check: history is append-only, an illegal
/// transition is refused without writing anything, a lease is held by one holder at a time and
/// lost when its holder dies, a step's log is readable while it is written.
pub trait StateStore: Send + Sync {
    /// Where this store is, for messages (e.g. the state root's path).
    fn describe(&self) -> String;
    /// Store a new job: its metadata and the spec exactly as submitted. Returns the lease the
    /// caller holds while it drives the job.
    fn create_job(&self, meta: &JobMeta, spec_bytes: &[u8]) -> Result<JobLease, StateError>;
    /// Append a transition, if it is legal from the job's current state; the history's digests
    /// after the write.
    fn append_transition(
        &self,
        job_id: JobId,
        transition: &Transition,
    ) -> Result<HistoryDigests, StateError>;
    /// Append a step result; the history's digests after the write.
    fn append_step(&self, job_id: JobId, step: &StepRecord) -> Result<HistoryDigests, StateError>;
    /// Append several entries due at once (a step's result and the job's final state), in
    /// order; the history's digests after each. A backend that can writes them with one
    /// durable write (group commit) and refuses them all, writing nothing, if a transition
    /// among them is illegal; this default appends them one by one.
    fn append_history(
        &self,
        job_id: JobId,
        entries: &[HistoryEntry<'_>],
    ) -> Result<Vec<HistoryDigests>, StateError> {
        entries
            .iter()
            .map(|entry| match entry {
                HistoryEntry::Transition(transition) => self.append_transition(job_id, transition),
                HistoryEntry::Step(step) => self.append_step(job_id, step),
            })
            .collect()
    }
    /// [`StateStore::create_job`] with the first entries of its history (its `SUBMITTED`
    /// transition), which a backend that can makes durable with the job itself; the history's
    /// digests after each entry.
    fn create_job_with_history(
        &self,
        meta: &JobMeta,
        spec_bytes: &[u8],
        entries: &[HistoryEntry<'_>],
    ) -> Result<(JobLease, Vec<HistoryDigests>), StateError> {
        let lease = self.create_job(meta, spec_bytes)?;
        let digests = self.append_history(meta.job_id, entries)?;
        Ok((lease, digests))
    }
    /// [`StateStore::append_history`] and the audit records `describe` makes of it (to
    /// `audit`, this store's audit log). By default one write after the other (a crash between
    /// them is what `mc gc` recovers); a backend with transactions writes both in one, so that
    /// neither exists without the other.
    fn append_history_audited(
        &self,
        audit: &AuditLog,
        job_id: JobId,
        entries: &[HistoryEntry<'_>],
        describe: &DescribeWrite<'_>,
    ) -> Result<Vec<HistoryDigests>, StateError> {
        let digests = self.append_history(job_id, entries)?;
        audit.append_all(&describe(&digests))?;
        Ok(digests)
    }
    /// [`StateStore::create_job_with_history`] and the audit records `describe` makes of it,
    /// as [`append_history_audited`](Self::append_history_audited) does.
    fn create_job_audited(
        &self,
        audit: &AuditLog,
        meta: &JobMeta,
        spec_bytes: &[u8],
        entries: &[HistoryEntry<'_>],
        describe: &DescribeCreate<'_>,
    ) -> Result<(JobLease, Vec<HistoryDigests>), StateError> {
        let (lease, digests) = self.create_job_with_history(meta, spec_bytes, entries)?;
        let files = self.file_digests(meta.job_id)?;
        audit.append_all(&describe(&digests, &files))?;
        Ok((lease, digests))
    }
    /// Read one job.
    fn load(&self, job_id: JobId) -> Result<JobRecord, StateError>;
    /// The spec exactly as submitted.
    fn spec(&self, job_id: JobId) -> Result<Vec<u8>, StateError>;
    /// The exact bytes of a job's history.
    fn history(&self, job_id: JobId) -> Result<HistoryBytes, StateError>;
    /// SHA-256 (hex) of each file written once when the job was stored (`job.json` and the
    /// spec), by name.
    fn file_digests(&self, job_id: JobId) -> Result<BTreeMap<String, String>, StateError>;
    /// Every job id, newest first (for whole-store work: `mc gc`, `mc prune`, audit checks).
    fn list(&self) -> Result<Vec<JobId>, StateError>;
    /// One page of the listing, newest first: the jobs older than `query.before` that
    /// `query.filter` lets through. A backend answers it without reading every job (see each backend's
    /// docs for its cost).
    fn list_page(&self, query: &PageQuery) -> Result<JobPage, StateError>;
    /// How many jobs are older than `cursor` (for the note under a truncated listing). This
    /// default counts [`StateStore::list`]; a backend with an index answers without it.
    fn count_older(&self, cursor: JobId) -> Result<usize, StateError> {
        Ok(self.list()?.iter().filter(|id| **id < cursor).count())
    }
    /// Whether a live process holds the job's lease.
    fn is_live(&self, job_id: JobId) -> Result<bool, StateError>;
    /// Take the job's lease if nobody holds it (`None` if a live process does): whoever holds
    /// it is the only one to move the job on.
    fn try_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError>;
    /// Remove what submissions that died before their job was in place left; one line each.
    fn remove_dead_staging(&self) -> Result<Vec<String>, StateError>;
    /// Whether a job is unfinished and no live process drives it: the `mc` that ran it died
    /// (SIGKILL, power loss). Nothing will ever move it on but `mc gc`.
    fn is_abandoned(&self, record: &JobRecord) -> Result<bool, StateError> {
        Ok(!record.state().is_terminal()
            && !record.waits_for_a_server()
            && !self.is_live(record.meta.job_id)?)
    }
    /// Remove an ended job's record and logs for good (`mc prune`). A job that has not ended,
    /// or that a live process still holds, is refused and kept.
    fn remove_job(&self, job_id: JobId) -> Result<(), StateError>;
    /// Take the lease of a stored job that no live process holds (a server picking up the jobs
    /// it queued before a restart). `None` when a live process holds it.
    fn acquire_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError> {
        let _ = job_id;
        Ok(None)
    }
    /// Create the log of a step (a new log; an existing one is an error).
    fn create_step_log(&self, job_id: JobId, step: &str) -> Result<Box<dyn LogSink>, StateError>;
    /// A step's log, opened for reading; `None` if it does not exist yet.
    fn open_step_log(&self, job_id: JobId, step: &str) -> Result<Option<LogReader>, StateError>;
    /// Append `line` to the job's note `name` (a plain name), durably: what an executor notes
    /// before a request it is about to make, for `mc gc`; a decision a server took on a job
    /// (an approval acknowledged to its approver), for the server that applies it.
    fn append_note(&self, job_id: JobId, name: &str, line: &[u8]) -> Result<(), StateError>;
    /// The job's note `name`, if it has one.
    fn read_note(&self, job_id: JobId, name: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// The audit trail kept with this store.
    fn audit(&self) -> AuditLog;
}
