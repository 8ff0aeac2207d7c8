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
//! ```
//!
//! Every file is replaced atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves the old or the new content, never a torn one. Appending to a JSON array copies
//! the existing bytes unchanged and adds the new entry: existing entries are never rewritten.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::JobId;
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
    /// The executor's error, when it could not run the step.
    pub error: Option<String>,
    /// How the executor verified that nothing of the step was left behind (absent when it
    /// cannot tell, and for skipped steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<crate::executor::Teardown>,
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
            error: None,
            teardown: None,
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

/// Where jobs are recorded. The runner uses only this trait.
pub trait StateStore: Send + Sync {
    /// Store a new job: its metadata and the spec exactly as submitted. Returns the lease the
    /// caller holds while it drives the job.
    fn create_job(&self, meta: &JobMeta, spec_bytes: &[u8]) -> Result<JobLease, StateError>;
    /// Append a transition, if it is legal from the job's current state.
    fn append_transition(&self, job_id: JobId, transition: &Transition) -> Result<(), StateError>;
    /// Append a step result.
    fn append_step(&self, job_id: JobId, step: &StepRecord) -> Result<(), StateError>;
    /// Read one job.
    fn load(&self, job_id: JobId) -> Result<JobRecord, StateError>;
    /// Every job id, newest first.
    fn list(&self) -> Result<Vec<JobId>, StateError>;
    /// Whether a live process holds the job's lease.
    fn is_live(&self, job_id: JobId) -> Result<bool, StateError>;
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
}

/// The file-backed store.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
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
        Self { root: root.into() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of every job.
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// A job's directory. Only ever built from a parsed [`JobId`], never from user text.
    pub fn job_dir(&self, job_id: JobId) -> PathBuf {
        self.jobs_dir().join(job_id.hyphenated().to_string())
    }

    fn lock_state(&self, job_id: JobId) -> Result<File, StateError> {
        let path = self.job_dir(job_id).join("state.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| self.missing_or(job_id, "open", &path, source))?;
        file.lock().map_err(io_error("lock", &path))?;
        Ok(file)
    }

    fn missing_or(
        &self,
        job_id: JobId,
        action: &'static str,
        path: &Path,
        source: io::Error,
    ) -> StateError {
        if source.kind() == io::ErrorKind::NotFound
            && !self.job_dir(job_id).join("job.json").exists()
        {
            StateError::NotFound {
                job_id,
                root: self.root.clone(),
            }
        } else {
            io_error(action, path)(source)
        }
    }

    /// Append `entry` to the JSON array in `path`, keeping every existing byte.
    fn append_to_array<T: Serialize>(
        &self,
        path: &Path,
        existing: &[u8],
        entry: &T,
    ) -> Result<(), StateError> {
        let json = serde_json::to_vec(entry).map_err(|error| StateError::Corrupt {
            path: path.to_path_buf(),
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
                    path: path.to_path_buf(),
                    message: "not a JSON array".to_owned(),
                });
            }
        };
        content.push(b'\n');
        content.extend_from_slice(&json);
        content.extend_from_slice(b"\n]\n");
        write_atomic(path, &content).map_err(io_error("write", path))
    }

    fn read_array<T: for<'de> Deserialize<'de>>(
        &self,
        job_id: JobId,
        name: &str,
    ) -> Result<(Vec<u8>, Vec<T>), StateError> {
        let path = self.job_dir(job_id).join(name);
        let bytes =
            fs::read(&path).map_err(|source| self.missing_or(job_id, "read", &path, source))?;
        let entries = serde_json::from_slice(&bytes).map_err(|error| StateError::Corrupt {
            path: path.clone(),
            message: error.to_string(),
        })?;
        Ok((bytes, entries))
    }
}

fn trim_ascii_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Replace `path` with `content` so that a crash leaves either the old file or the new one:
/// write a temporary file beside it, fsync it, rename it over, fsync the directory.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        write_new(&temp, content)?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_new(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

/// fsync a directory, so a rename or a new entry in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl StateStore for FileStore {
    fn create_job(&self, meta: &JobMeta, spec_bytes: &[u8]) -> Result<JobLease, StateError> {
        let jobs = self.jobs_dir();
        fs::create_dir_all(&jobs).map_err(io_error("create", &jobs))?;
        // Build the job in a hidden directory and rename it into place, so no reader ever sees
        // a job without its spec and metadata.
        let staging = jobs.join(format!(".new-{}", meta.job_id.simple()));
        let result = (|| {
            fs::create_dir(&staging).map_err(io_error("create", &staging))?;
            fs::create_dir(staging.join("logs")).map_err(io_error("create", &staging))?;
            let lease_path = staging.join("lease");
            let lease = File::create(&lease_path).map_err(io_error("create", &lease_path))?;
            lease.lock().map_err(io_error("lock", &lease_path))?;
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
                let path = staging.join(name);
                write_new(&path, &content).map_err(io_error("write", &path))?;
            }
            sync_dir(&staging).map_err(io_error("sync", &staging))?;
            let target = self.job_dir(meta.job_id);
            fs::rename(&staging, &target).map_err(io_error("rename", &target))?;
            sync_dir(&jobs).map_err(io_error("sync", &jobs))?;
            Ok(JobLease { _file: lease })
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    fn append_transition(&self, job_id: JobId, transition: &Transition) -> Result<(), StateError> {
        let _lock = self.lock_state(job_id)?;
        let (bytes, history) = self.read_array::<Transition>(job_id, "state.json")?;
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
        let path = self.job_dir(job_id).join("state.json");
        self.append_to_array(&path, &bytes, transition)
    }

    fn append_step(&self, job_id: JobId, step: &StepRecord) -> Result<(), StateError> {
        let _lock = self.lock_state(job_id)?;
        let (bytes, _) = self.read_array::<serde_json::Value>(job_id, "steps.json")?;
        let path = self.job_dir(job_id).join("steps.json");
        self.append_to_array(&path, &bytes, step)
    }

    fn load(&self, job_id: JobId) -> Result<JobRecord, StateError> {
        let meta_path = self.job_dir(job_id).join("job.json");
        let meta_bytes = fs::read(&meta_path)
            .map_err(|source| self.missing_or(job_id, "read", &meta_path, source))?;
        let meta = serde_json::from_slice(&meta_bytes).map_err(|error| StateError::Corrupt {
            path: meta_path,
            message: error.to_string(),
        })?;
        let (_, transitions) = self.read_array(job_id, "state.json")?;
        let (_, steps) = self.read_array(job_id, "steps.json")?;
        Ok(JobRecord {
            meta,
            transitions,
            steps,
        })
    }

    /// The job's directory is first renamed out of `jobs/` (`jobs/.pruned-<id>`), so that it
    /// disappears from every listing at once, then removed; a removal cut short by a crash is
    /// finished by the next one.
    fn remove_job(&self, job_id: JobId) -> Result<(), StateError> {
        let record = self.load(job_id)?;
        if !record.state().is_terminal() || self.is_live(job_id)? {
            return Err(StateError::StillRunning { job_id });
        }
        let jobs = self.jobs_dir();
        let staged = jobs.join(format!(".pruned-{}", job_id.hyphenated()));
        fs::rename(self.job_dir(job_id), &staged).map_err(io_error("rename", &staged))?;
        sync_dir(&jobs).map_err(io_error("sync", &jobs))?;
        if let Ok(entries) = fs::read_dir(&jobs) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".pruned-") {
                    // remove_dir_all never follows a symlink out of the directory.
                    fs::remove_dir_all(entry.path()).map_err(io_error("remove", &entry.path()))?;
                }
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<JobId>, StateError> {
        let jobs = self.jobs_dir();
        let entries = match fs::read_dir(&jobs) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error("read", &jobs)(error)),
        };
        let mut ids: Vec<JobId> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| JobId::try_parse(&entry.file_name().to_string_lossy()).ok())
            .collect();
        // Version 7 ids sort by creation time, so newest first is a reverse sort.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    fn is_live(&self, job_id: JobId) -> Result<bool, StateError> {
        let path = self.job_dir(job_id).join("lease");
        let file =
            File::open(&path).map_err(|source| self.missing_or(job_id, "open", &path, source))?;
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(fs::TryLockError::WouldBlock) => Ok(true),
            Err(fs::TryLockError::Error(error)) => Err(io_error("lock", &path)(error)),
        }
    }

    fn acquire_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError> {
        let path = self.job_dir(job_id).join("lease");
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| self.missing_or(job_id, "open", &path, source))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(JobLease { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(error)) => Err(io_error("lock", &path)(error)),
        }
    }

    fn create_step_log(&self, job_id: JobId, step: &str) -> Result<File, StateError> {
        let path = self.step_log_path(job_id, step);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| self.missing_or(job_id, "create", &path, source))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(io_error("sync", dir))?;
        }
        Ok(file)
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
