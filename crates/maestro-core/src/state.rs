//! Job state: the lifecycle rules and the append-only, crash-safe file store under `var/maestro`.
//!
//! Layout of a state root:
//!
//! ```text
//! audit.log                 JSON lines, see crate::audit
//! jobs/<job_id>/job.json    what was submitted, by whom, when (written once)
//! jobs/<job_id>/spec.<ext>  the spec, byte for byte as submitted
//! jobs/<job_id>/state.json  append-only JSON array of transitions
//! jobs/<job_id>/steps.json  append-only JSON array of step results
//! jobs/<job_id>/logs/       one log per step
//! jobs/<job_id>/lease       flock-ed by the `mc` that drives the job, for as long as it lives
//! jobs/<job_id>/state.lock  flock-ed around each read-check-write of state.json/steps.json
//! jobs/.new-<id>/           a job being stored, flock-ed by its `mc` until renamed into place
//! ```
//!
//! Everything is opened beneath the root without following links, files `0600` and
//! directories `0700` (see [`crate::root`]).
//!
//! Every file is replaced atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves the old or the new content, never a torn one. Appending to a JSON array copies
//! the existing bytes unchanged and adds the new entry: existing entries are never rewritten.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::JobId;
use crate::root::{Access, Dir, StateRoot};
use crate::trace::TraceId;

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

impl JobRecord {
    /// The job's current state (`SUBMITTED` if no transition is recorded yet).
    pub fn state(&self) -> JobState {
        self.transitions
            .last()
            .map_or(JobState::Submitted, |transition| transition.state)
    }
}

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or directory of the store could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `write`.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// No job has this id.
    #[error("no job {job_id} in {}", root.display())]
    NotFound {
        /// The id asked for.
        job_id: JobId,
        /// The state root searched.
        root: PathBuf,
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
    /// A stored file is not what Maestro writes.
    #[error("corrupt state file {}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Holding a lease says "a live process drives this job"; the kernel drops it when the process
/// dies however it dies, which is how a job left `RUNNING` by a killed `mc` is told apart.
#[derive(Debug)]
pub struct JobLease {
    _file: File,
}

/// The digest of one of a job's append-only history files as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// How many entries the file held.
    pub entries: usize,
    /// SHA-256 of its exact bytes, in hex.
    pub sha256: String,
}

/// The digests of a job's history (`state.json` and `steps.json`) after a write, recorded in
/// the audit record of the change that wrote it so that `mc audit verify` can tell a history
/// edited since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryDigests {
    /// `state.json`.
    #[serde(rename = "state.json")]
    pub state: FileDigest,
    /// `steps.json`.
    #[serde(rename = "steps.json")]
    pub steps: FileDigest,
}

/// The raw bytes of a job's history files.
#[derive(Debug, Clone)]
pub struct HistoryBytes {
    /// `state.json`.
    pub state: Vec<u8>,
    /// `steps.json`.
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

/// Where jobs are recorded. The runner uses only this trait.
pub trait StateStore: Send + Sync {
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
    /// Read one job.
    fn load(&self, job_id: JobId) -> Result<JobRecord, StateError>;
    /// The exact bytes of a job's history files.
    fn history(&self, job_id: JobId) -> Result<HistoryBytes, StateError>;
    /// SHA-256 (hex) of each file written once when the job was stored (`job.json` and the
    /// spec), by name.
    fn file_digests(&self, job_id: JobId) -> Result<BTreeMap<String, String>, StateError>;
    /// Every job id, newest first.
    fn list(&self) -> Result<Vec<JobId>, StateError>;
    /// Whether a live process holds the job's lease.
    fn is_live(&self, job_id: JobId) -> Result<bool, StateError>;
    /// Take the job's lease if nobody holds it (`None` if a live process does): whoever holds
    /// it is the only one to move the job on.
    fn try_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError>;
    /// Remove the staging directories of submissions whose `mc` died before the job was in
    /// place; their names, one line each.
    fn remove_dead_staging(&self) -> Result<Vec<String>, StateError>;
    /// Whether a job is unfinished and no live process drives it: the `mc` that ran it died
    /// (SIGKILL, power loss). Nothing will ever move it on but `mc gc`.
    fn is_abandoned(&self, record: &JobRecord) -> Result<bool, StateError> {
        Ok(!record.state().is_terminal() && !self.is_live(record.meta.job_id)?)
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
    /// Create the log file of a step (a new file; an existing one is an error).
    fn create_step_log(&self, job_id: JobId, step: &str) -> Result<File, StateError>;
    /// The path of a step's log.
    fn step_log_path(&self, job_id: JobId, step: &str) -> PathBuf;
    /// A step's log, opened for reading (beneath the state root, through no link); `None` if
    /// it does not exist yet.
    fn open_step_log(&self, job_id: JobId, step: &str) -> Result<Option<File>, StateError>;
}

/// The file-backed store.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: StateRoot,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io {
        action,
        path,
        source,
    }
}

impl FileStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: StateRoot::new(root),
        }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The directory of every job.
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.path().join("jobs")
    }

    /// A job's directory. Only ever built from a parsed [`JobId`], never from user text.
    pub fn job_dir(&self, job_id: JobId) -> PathBuf {
        self.jobs_dir().join(job_id.hyphenated().to_string())
    }

    fn job_rel(job_id: JobId) -> PathBuf {
        Path::new("jobs").join(job_id.hyphenated().to_string())
    }

    /// The job's directory, opened beneath the root without following links.
    fn open_job(&self, job_id: JobId) -> Result<Dir, StateError> {
        match self.root.open_dir(&Self::job_rel(job_id)) {
            Ok(Some(dir)) => Ok(dir),
            Ok(None) => Err(StateError::NotFound {
                job_id,
                root: self.root().to_path_buf(),
            }),
            Err(source) => Err(StateError::Io {
                action: "open",
                path: self.job_dir(job_id),
                source,
            }),
        }
    }

    fn lock_state(&self, dir: &Dir) -> Result<File, StateError> {
        let file = dir
            .open("state.lock", Access::WriteOrCreate)
            .map_err(io_error("open", &dir.join("state.lock")))?;
        file.lock()
            .map_err(io_error("lock", &dir.join("state.lock")))?;
        Ok(file)
    }

    fn missing_or(
        &self,
        job_id: JobId,
        dir: &Dir,
        action: &'static str,
        name: &str,
        source: io::Error,
    ) -> StateError {
        if source.kind() == io::ErrorKind::NotFound && dir.open("job.json", Access::Read).is_err() {
            StateError::NotFound {
                job_id,
                root: self.root().to_path_buf(),
            }
        } else {
            io_error(action, &dir.join(name))(source)
        }
    }

    /// Append `entry` to the JSON array `name` whose bytes are `existing`, keeping every
    /// existing byte; the file's new bytes.
    fn append_to_array<T: Serialize>(
        &self,
        dir: &Dir,
        name: &str,
        existing: &[u8],
        entry: &T,
    ) -> Result<Vec<u8>, StateError> {
        let path = dir.join(name);
        let json = serde_json::to_vec(entry).map_err(|error| StateError::Corrupt {
            path: path.clone(),
            message: error.to_string(),
        })?;
        let trimmed = trim_ascii_end(existing);
        let mut content = match trimmed.strip_suffix(b"]") {
            Some(body) if trim_ascii_end(body).ends_with(b"[") => trim_ascii_end(body).to_vec(),
            Some(body) => {
                let mut body = trim_ascii_end(body).to_vec();
                body.push(b',');
                body
            }
            None => {
                return Err(StateError::Corrupt {
                    path,
                    message: "not a JSON array".to_owned(),
                });
            }
        };
        content.push(b'\n');
        content.extend_from_slice(&json);
        content.extend_from_slice(b"\n]\n");
        dir.write_atomic(name, &content)
            .map_err(io_error("write", &path))?;
        Ok(content)
    }

    fn read_bytes(&self, job_id: JobId, dir: &Dir, name: &str) -> Result<Vec<u8>, StateError> {
        dir.read(name)
            .map_err(|source| self.missing_or(job_id, dir, "read", name, source))
    }

    fn read_array<T: for<'de> Deserialize<'de>>(
        &self,
        job_id: JobId,
        dir: &Dir,
        name: &str,
    ) -> Result<(Vec<u8>, Vec<T>), StateError> {
        let bytes = self.read_bytes(job_id, dir, name)?;
        let entries = serde_json::from_slice(&bytes).map_err(|error| StateError::Corrupt {
            path: dir.join(name),
            message: error.to_string(),
        })?;
        Ok((bytes, entries))
    }

    fn digests(dir: &Dir, state: &[u8], steps: &[u8]) -> Result<HistoryDigests, StateError> {
        HistoryBytes {
            state: state.to_vec(),
            steps: steps.to_vec(),
        }
        .digests()
        .map_err(|message| StateError::Corrupt {
            path: dir.path().to_path_buf(),
            message,
        })
    }

    /// The bytes of the stored spec `spec_file` (a plain name from the job's `job.json`).
    pub fn read_spec(&self, job_id: JobId, spec_file: &str) -> Result<Vec<u8>, StateError> {
        let dir = self.open_job(job_id)?;
        self.read_bytes(job_id, &dir, spec_file)
    }

    /// Append `line` to the job's note `name` (a plain file name), creating it. Not fsynced:
    /// a note only has to outlive the process that wrote it (an executor noting a request it
    /// is about to make, for `mc gc`), which the page cache does.
    pub fn append_note(&self, job_id: JobId, name: &str, line: &[u8]) -> Result<(), StateError> {
        let dir = self.open_job(job_id)?;
        let mut file = dir
            .open(name, Access::AppendOrCreate)
            .map_err(io_error("open", &dir.join(name)))?;
        io::Write::write_all(&mut file, line).map_err(io_error("write", &dir.join(name)))
    }

    /// The job's note `name`, if it has one.
    pub fn read_note(&self, job_id: JobId, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let dir = self.open_job(job_id)?;
        match dir.read(name) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("read", &dir.join(name))(error)),
        }
    }

    fn lease_of(&self, job_id: JobId) -> Result<File, StateError> {
        let dir = self.open_job(job_id)?;
        dir.open("lease", Access::Read)
            .map_err(|source| self.missing_or(job_id, &dir, "open", "lease", source))
    }
}

fn trim_ascii_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

impl StateStore for FileStore {
    fn create_job(&self, meta: &JobMeta, spec_bytes: &[u8]) -> Result<JobLease, StateError> {
        let jobs_path = self.jobs_dir();
        let jobs = self
            .root
            .create_dir_all(Path::new("jobs"))
            .map_err(io_error("create", &jobs_path))?;
        // Build the job in a hidden directory and rename it into place, so no reader ever sees
        // a job without its spec and metadata.
        let staging_name = format!(".new-{}", meta.job_id.simple());
        let staging_path = jobs.join(&staging_name);
        // The staging directory is flock-ed by its `mc` until it is renamed into place: one
        // nobody holds is a dead submission's, and `mc gc` removes it. `mc gc` may take one
        // for dead between its creation and the lock: then it is gone, and made again.
        let staging = loop {
            let staging = jobs
                .create_dir(&staging_name)
                .map_err(io_error("create", &staging_path))?;
            staging.lock().map_err(io_error("lock", &staging_path))?;
            if !staging
                .is_removed()
                .map_err(io_error("lock", &staging_path))?
            {
                break staging;
            }
        };
        let result = (|| {
            let lease_path = staging.join("lease");
            let lease = staging
                .open("lease", Access::CreateNew)
                .map_err(io_error("create", &lease_path))?;
            lease.lock().map_err(io_error("lock", &lease_path))?;
            staging
                .create_dir("logs")
                .map_err(io_error("create", &staging.join("logs")))?;
            for (name, content) in [
                (meta.spec_file.as_str(), spec_bytes.to_vec()),
                (
                    "job.json",
                    serde_json::to_vec_pretty(meta).unwrap_or_default(),
                ),
                ("state.json", b"[]\n".to_vec()),
                ("steps.json", b"[]\n".to_vec()),
            ] {
                // The staging directory is invisible until renamed, so its files need no
                // rename of their own: written, fsynced, then the directory is fsynced once.
                staging
                    .write_new(name, &content)
                    .map_err(io_error("write", &staging.join(name)))?;
            }
            staging.sync().map_err(io_error("sync", &staging_path))?;
            let target = meta.job_id.hyphenated().to_string();
            jobs.rename(&staging_name, &jobs, &target)
                .map_err(io_error("rename", &jobs.join(&target)))?;
            jobs.sync().map_err(io_error("sync", &jobs_path))?;
            Ok(JobLease { _file: lease })
        })();
        if result.is_err() {
            let _ = jobs.remove_dir_all(&staging_name);
        }
        result
    }

    fn append_transition(
        &self,
        job_id: JobId,
        transition: &Transition,
    ) -> Result<HistoryDigests, StateError> {
        let dir = self.open_job(job_id)?;
        let _lock = self.lock_state(&dir)?;
        let (bytes, history) = self.read_array::<Transition>(job_id, &dir, "state.json")?;
        let legal = match history.last() {
            None => transition.state.can_start(),
            Some(last) => last.state.can_transition_to(transition.state),
        };
        if !legal {
            return Err(StateError::IllegalTransition {
                job_id,
                from: history
                    .last()
                    .map_or_else(|| "none".to_owned(), |t| t.state.to_string()),
                to: transition.state,
            });
        }
        let state = self.append_to_array(&dir, "state.json", &bytes, transition)?;
        let steps = self.read_bytes(job_id, &dir, "steps.json")?;
        Self::digests(&dir, &state, &steps)
    }

    fn append_step(&self, job_id: JobId, step: &StepRecord) -> Result<HistoryDigests, StateError> {
        let dir = self.open_job(job_id)?;
        let _lock = self.lock_state(&dir)?;
        let (bytes, _) = self.read_array::<serde_json::Value>(job_id, &dir, "steps.json")?;
        let steps = self.append_to_array(&dir, "steps.json", &bytes, step)?;
        let state = self.read_bytes(job_id, &dir, "state.json")?;
        Self::digests(&dir, &state, &steps)
    }

    fn load(&self, job_id: JobId) -> Result<JobRecord, StateError> {
        let dir = self.open_job(job_id)?;
        let meta_bytes = self.read_bytes(job_id, &dir, "job.json")?;
        let meta = serde_json::from_slice(&meta_bytes).map_err(|error| StateError::Corrupt {
            path: dir.join("job.json"),
            message: error.to_string(),
        })?;
        let (_, transitions) = self.read_array(job_id, &dir, "state.json")?;
        let (_, steps) = self.read_array(job_id, &dir, "steps.json")?;
        Ok(JobRecord {
            meta,
            transitions,
            steps,
        })
    }

    fn history(&self, job_id: JobId) -> Result<HistoryBytes, StateError> {
        let dir = self.open_job(job_id)?;
        let _lock = self.lock_state(&dir)?;
        Ok(HistoryBytes {
            state: self.read_bytes(job_id, &dir, "state.json")?,
            steps: self.read_bytes(job_id, &dir, "steps.json")?,
        })
    }

    fn file_digests(&self, job_id: JobId) -> Result<BTreeMap<String, String>, StateError> {
        let dir = self.open_job(job_id)?;
        let meta_bytes = self.read_bytes(job_id, &dir, "job.json")?;
        let meta: JobMeta =
            serde_json::from_slice(&meta_bytes).map_err(|error| StateError::Corrupt {
                path: dir.join("job.json"),
                message: error.to_string(),
            })?;
        let spec = self.read_bytes(job_id, &dir, &meta.spec_file)?;
        Ok(BTreeMap::from([
            ("job.json".to_owned(), sha256_hex(&meta_bytes)),
            (meta.spec_file, sha256_hex(&spec)),
        ]))
    }

    /// The job's directory is first renamed out of `jobs/` (`jobs/.pruned-<id>`), so that it
    /// disappears from every listing at once, then removed; a removal cut short by a crash is
    /// finished by the next one.
    fn remove_job(&self, job_id: JobId) -> Result<(), StateError> {
        let record = self.load(job_id)?;
        if !record.state().is_terminal() || self.is_live(job_id)? {
            return Err(StateError::StillRunning { job_id });
        }
        let jobs_path = self.jobs_dir();
        let jobs = self
            .root
            .open_dir(Path::new("jobs"))
            .map_err(io_error("open", &jobs_path))?
            .ok_or_else(|| StateError::NotFound {
                job_id,
                root: self.root().to_path_buf(),
            })?;
        let staged = format!(".pruned-{}", job_id.hyphenated());
        jobs.rename(&job_id.hyphenated().to_string(), &jobs, &staged)
            .map_err(io_error("rename", &jobs.join(&staged)))?;
        jobs.sync().map_err(io_error("sync", &jobs_path))?;
        for (name, _) in jobs.entries().map_err(io_error("read", &jobs_path))? {
            let name = name.to_string_lossy();
            if name.starts_with(".pruned-") {
                // Removed through directory descriptors: no link inside is ever followed.
                jobs.remove_dir_all(&name)
                    .map_err(io_error("remove", &jobs.join(&*name)))?;
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<JobId>, StateError> {
        let jobs = self.jobs_dir();
        let dir = match self.root.open_dir(Path::new("jobs")) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(Vec::new()),
            Err(error) => return Err(io_error("read", &jobs)(error)),
        };
        let mut ids: Vec<JobId> = dir
            .entries()
            .map_err(io_error("read", &jobs))?
            .into_iter()
            .filter_map(|(name, _)| JobId::try_parse(&name.to_string_lossy()).ok())
            .collect();
        // Version 7 ids sort by creation time, so newest first is a reverse sort.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    fn is_live(&self, job_id: JobId) -> Result<bool, StateError> {
        let file = self.lease_of(job_id)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(fs::TryLockError::WouldBlock) => Ok(true),
            Err(fs::TryLockError::Error(error)) => {
                Err(io_error("lock", &self.job_dir(job_id).join("lease"))(error))
            }
        }
    }

    fn try_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError> {
        let file = self.lease_of(job_id)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(JobLease { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(error)) => {
                Err(io_error("lock", &self.job_dir(job_id).join("lease"))(error))
            }
        }
    }

    fn remove_dead_staging(&self) -> Result<Vec<String>, StateError> {
        let jobs_path = self.jobs_dir();
        let jobs = match self.root.open_dir(Path::new("jobs")) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(Vec::new()),
            Err(error) => return Err(io_error("read", &jobs_path)(error)),
        };
        let mut removed = Vec::new();
        for (name, _) in jobs.entries().map_err(io_error("read", &jobs_path))? {
            let name = name.to_string_lossy().into_owned();
            let staging_of_a_job = name
                .strip_prefix(".new-")
                .is_some_and(|id| JobId::try_parse(id).is_ok());
            if !staging_of_a_job {
                continue;
            }
            let path = jobs.join(&name);
            let staging = match jobs.subdir(&name) {
                Ok(Some(staging)) => staging,
                Ok(None) => continue,
                Err(error) => return Err(io_error("open", &path)(error)),
            };
            // Held until the directory is gone: its `mc`, were it alive after all, notices
            // the removal once it gets the lock and starts again.
            if !staging.try_lock().map_err(io_error("lock", &path))? {
                continue;
            }
            jobs.remove_dir_all(&name)
                .map_err(io_error("remove", &path))?;
            removed.push(format!(
                "removed the staging directory {} of a submission that died",
                path.display()
            ));
        }
        if !removed.is_empty() {
            jobs.sync().map_err(io_error("sync", &jobs_path))?;
        }
        Ok(removed)
    }

    fn acquire_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError> {
        self.try_lease(job_id)
    }

    fn create_step_log(&self, job_id: JobId, step: &str) -> Result<File, StateError> {
        let path = self.step_log_path(job_id, step);
        let logs_path = self.job_dir(job_id).join("logs");
        let logs = self
            .open_job(job_id)?
            .subdir("logs")
            .map_err(io_error("open", &logs_path))?
            .ok_or_else(|| StateError::Io {
                action: "open",
                path: logs_path.clone(),
                source: io::Error::from(io::ErrorKind::NotFound),
            })?;
        let file = logs
            .open(&format!("{step}.log"), Access::CreateNew)
            .map_err(io_error("create", &path))?;
        logs.sync().map_err(io_error("sync", &logs_path))?;
        Ok(file)
    }

    fn open_step_log(&self, job_id: JobId, step: &str) -> Result<Option<File>, StateError> {
        let path = self.step_log_path(job_id, step);
        let logs = self
            .open_job(job_id)?
            .subdir("logs")
            .map_err(io_error("open", &path))?;
        let Some(logs) = logs else {
            return Ok(None);
        };
        match logs.open(&format!("{step}.log"), Access::Read) {
            Ok(file) => Ok(Some(file)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("open", &path)(error)),
        }
    }

    fn step_log_path(&self, job_id: JobId, step: &str) -> PathBuf {
        // Step names are validated ([A-Za-z0-9._-], never "." or ".."), so this stays inside.
        self.job_dir(job_id)
            .join("logs")
            .join(format!("{step}.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(job_id: JobId) -> JobMeta {
        JobMeta {
            job_id,
            name: "j".to_owned(),
            owner: Some("ana".to_owned()),
            environment: None,
            trace_id: TraceId::parse("t").unwrap(),
            submitted_at: crate::time::now_rfc3339(),
            spec_file: "spec.yaml".to_owned(),
            source: "job.yaml".to_owned(),
            driver: None,
        }
    }

    fn transition(state: JobState) -> Transition {
        Transition {
            state,
            at: crate::time::now_rfc3339(),
            trace_id: TraceId::parse("t").unwrap(),
            detail: serde_json::json!({"n": 1}),
        }
    }

    #[test]
    fn lifecycle_rules() {
        use JobState::*;
        let all = [
            Submitted,
            Denied,
            Running,
            Succeeded,
            Failed,
            Cancelled,
            AwaitingApproval,
        ];
        assert!(Submitted.can_start());
        assert!(all.iter().filter(|s| s.can_start()).count() == 1);
        assert!(Submitted.can_transition_to(Running));
        assert!(Submitted.can_transition_to(Denied));
        assert!(Running.can_transition_to(Succeeded));
        assert!(!Submitted.can_transition_to(Succeeded));
        assert!(!Running.can_transition_to(Denied));
        assert!(!Running.can_transition_to(Running));
        assert!(Submitted.can_transition_to(AwaitingApproval));
        assert!(AwaitingApproval.can_transition_to(Running));
        assert!(AwaitingApproval.can_transition_to(Denied));
        assert!(AwaitingApproval.can_transition_to(Cancelled));
        assert!(!AwaitingApproval.can_transition_to(Succeeded));
        assert!(!Running.can_transition_to(AwaitingApproval));
        assert!(!AwaitingApproval.is_terminal());
        for terminal in [Denied, Succeeded, Failed, Cancelled] {
            assert!(terminal.is_terminal());
            assert!(all.iter().all(|next| !terminal.can_transition_to(*next)));
        }
    }

    #[test]
    fn stores_spec_verbatim_and_appends_without_rewriting() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        let spec = b"name: j  # a comment kept as is\r\nsteps: []\n";
        let lease = store.create_job(&meta(id), spec).unwrap();
        assert_eq!(fs::read(store.job_dir(id).join("spec.yaml")).unwrap(), spec);
        store
            .append_transition(id, &transition(JobState::Submitted))
            .unwrap();
        let first = fs::read(store.job_dir(id).join("state.json")).unwrap();
        store
            .append_transition(id, &transition(JobState::Running))
            .unwrap();
        let second = fs::read(store.job_dir(id).join("state.json")).unwrap();
        let prefix = &first[..first.len() - 3]; // without the closing "\n]\n"
        assert!(second.starts_with(prefix), "earlier bytes must be kept");
        let record = store.load(id).unwrap();
        assert_eq!(record.state(), JobState::Running);
        assert_eq!(record.transitions.len(), 2);
        assert!(store.is_live(id).unwrap());
        drop(lease);
        assert!(!store.is_live(id).unwrap());
    }

    #[test]
    fn illegal_transitions_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        let _lease = store.create_job(&meta(id), b"{}").unwrap();
        let err = store
            .append_transition(id, &transition(JobState::Running))
            .unwrap_err();
        assert!(err.to_string().contains("none -> RUNNING"), "{err}");
        store
            .append_transition(id, &transition(JobState::Submitted))
            .unwrap();
        store
            .append_transition(id, &transition(JobState::Denied))
            .unwrap();
        let before = fs::read(store.job_dir(id).join("state.json")).unwrap();
        let err = store
            .append_transition(id, &transition(JobState::Running))
            .unwrap_err();
        assert!(matches!(err, StateError::IllegalTransition { .. }));
        assert_eq!(
            fs::read(store.job_dir(id).join("state.json")).unwrap(),
            before
        );
    }

    #[test]
    fn unknown_jobs_are_not_found_and_listing_is_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        assert!(store.list().unwrap().is_empty());
        let missing = JobId::now_v7();
        assert!(matches!(
            store.load(missing),
            Err(StateError::NotFound { .. })
        ));
        assert!(matches!(
            store.append_transition(missing, &transition(JobState::Submitted)),
            Err(StateError::NotFound { .. })
        ));
        let a = JobId::now_v7();
        let b = JobId::now_v7();
        store.create_job(&meta(a), b"{}").unwrap();
        store.create_job(&meta(b), b"{}").unwrap();
        fs::create_dir_all(store.jobs_dir().join("not-a-job")).unwrap();
        assert_eq!(store.list().unwrap(), vec![b, a]);
    }

    #[test]
    fn steps_append_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        store.create_job(&meta(id), b"{}").unwrap();
        for name in ["a", "b"] {
            store
                .append_step(id, &StepRecord::skipped(name, "local"))
                .unwrap();
        }
        let names: Vec<String> = store
            .load(id)
            .unwrap()
            .steps
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
