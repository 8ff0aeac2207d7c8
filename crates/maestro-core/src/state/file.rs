//! The file store: each job a directory under the state root (`var/maestro`).
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
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    HistoryBytes, HistoryDigests, JobLease, JobMeta, JobPage, JobRecord, LogReader, LogSink,
    PageQuery, StateError, StateStore, StepRecord, Transition, sha256_hex,
};
use crate::JobId;
use crate::audit::AuditLog;
use crate::root::{Access, Dir, StateRoot};

/// The file-backed store.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: StateRoot,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let what = path.display().to_string();
    move |source| StateError::Backend {
        action,
        what,
        source: Box::new(source),
    }
}

fn corrupt(path: &Path, message: impl ToString) -> StateError {
    StateError::Corrupt {
        what: path.display().to_string(),
        message: message.to_string(),
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
                store: self.describe(),
            }),
            Err(source) => Err(io_error("open", &self.job_dir(job_id))(source)),
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
                store: self.describe(),
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
        let json = serde_json::to_vec(entry).map_err(|error| corrupt(&path, error))?;
        let trimmed = trim_ascii_end(existing);
        let mut content = match trimmed.strip_suffix(b"]") {
            Some(body) if trim_ascii_end(body).ends_with(b"[") => trim_ascii_end(body).to_vec(),
            Some(body) => {
                let mut body = trim_ascii_end(body).to_vec();
                body.push(b',');
                body
            }
            None => {
                return Err(corrupt(&path, "not a JSON array"));
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
        let entries =
            serde_json::from_slice(&bytes).map_err(|error| corrupt(&dir.join(name), error))?;
        Ok((bytes, entries))
    }

    fn digests(dir: &Dir, state: &[u8], steps: &[u8]) -> Result<HistoryDigests, StateError> {
        HistoryBytes {
            state: state.to_vec(),
            steps: steps.to_vec(),
        }
        .digests()
        .map_err(|message| corrupt(dir.path(), message))
    }

    /// The path of a step's log. Step names are validated (`[A-Za-z0-9._-]`, never `.` or
    /// `..`), so it stays inside the job's directory.
    pub fn step_log_path(&self, job_id: JobId, step: &str) -> PathBuf {
        self.job_dir(job_id)
            .join("logs")
            .join(format!("{step}.log"))
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
    fn describe(&self) -> String {
        self.root().display().to_string()
    }

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
            Ok(JobLease::new(lease))
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
        let meta = serde_json::from_slice(&meta_bytes)
            .map_err(|error| corrupt(&dir.join("job.json"), error))?;
        let (_, transitions) = self.read_array(job_id, &dir, "state.json")?;
        let (_, steps) = self.read_array(job_id, &dir, "steps.json")?;
        Ok(JobRecord {
            meta,
            transitions,
            steps,
        })
    }

    fn spec(&self, job_id: JobId) -> Result<Vec<u8>, StateError> {
        let dir = self.open_job(job_id)?;
        let meta_bytes = self.read_bytes(job_id, &dir, "job.json")?;
        let meta: JobMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|error| corrupt(&dir.join("job.json"), error))?;
        // `spec_file` is a plain name Maestro wrote; refuse anything else.
        if meta.spec_file.contains('/') || meta.spec_file.starts_with('.') {
            return Err(corrupt(
                &dir.join("job.json"),
                "spec_file is not a plain file name",
            ));
        }
        self.read_bytes(job_id, &dir, &meta.spec_file)
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
        let meta: JobMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|error| corrupt(&dir.join("job.json"), error))?;
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
                store: self.describe(),
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

    /// Costs one read of the `jobs/` directory's names (no job is opened for it) and one load
    /// per job looked at from the cursor on: a page of unfiltered jobs reads `limit` records
    /// whatever the store's size. A job that cannot be read is skipped with a warning.
    fn list_page(&self, query: &PageQuery) -> Result<JobPage, StateError> {
        let ids = self.list()?;
        let start = match query.before {
            // Ids are newest first; the page starts after the cursor.
            Some(cursor) => ids.partition_point(|id| *id >= cursor),
            None => 0,
        };
        let mut page = JobPage::default();
        for job_id in &ids[start..] {
            let record = match self.load(*job_id) {
                Ok(record) => record,
                // Pruned between the listing and the load.
                Err(StateError::NotFound { .. }) => continue,
                Err(error) => {
                    tracing::warn!(%job_id, %error, "job skipped in the listing");
                    continue;
                }
            };
            if !query.filter.matches(&record) {
                continue;
            }
            if query.limit != 0 && page.jobs.len() == query.limit {
                page.next_cursor = page.jobs.last().map(|last| last.meta.job_id);
                break;
            }
            page.jobs.push(record);
        }
        Ok(page)
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
            Ok(()) => Ok(Some(JobLease::new(file))),
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

    fn create_step_log(&self, job_id: JobId, step: &str) -> Result<Box<dyn LogSink>, StateError> {
        let path = self.step_log_path(job_id, step);
        let logs_path = self.job_dir(job_id).join("logs");
        let logs = self
            .open_job(job_id)?
            .subdir("logs")
            .map_err(io_error("open", &logs_path))?
            .ok_or_else(|| {
                io_error("open", &logs_path)(io::Error::from(io::ErrorKind::NotFound))
            })?;
        let file = logs
            .open(&format!("{step}.log"), Access::CreateNew)
            .map_err(io_error("create", &path))?;
        logs.sync().map_err(io_error("sync", &logs_path))?;
        Ok(Box::new(file))
    }

    fn open_step_log(&self, job_id: JobId, step: &str) -> Result<Option<LogReader>, StateError> {
        let path = self.step_log_path(job_id, step);
        let logs = self
            .open_job(job_id)?
            .subdir("logs")
            .map_err(io_error("open", &path))?;
        let Some(logs) = logs else {
            return Ok(None);
        };
        match logs.open(&format!("{step}.log"), Access::Read) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("open", &path)(error)),
        }
    }

    fn append_note(&self, job_id: JobId, name: &str, line: &[u8]) -> Result<(), StateError> {
        let dir = self.open_job(job_id)?;
        let mut file = dir
            .open(name, Access::AppendOrCreate)
            .map_err(io_error("open", &dir.join(name)))?;
        io::Write::write_all(&mut file, line).map_err(io_error("write", &dir.join(name)))
    }

    fn read_note(&self, job_id: JobId, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let dir = self.open_job(job_id)?;
        match dir.read(name) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("read", &dir.join(name))(error)),
        }
    }

    fn audit(&self) -> AuditLog {
        AuditLog::new(self.root())
    }
}

#[cfg(test)]
mod contract {
    use super::FileStore;

    crate::state_store_contract!({
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        (dir, store)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::JobState;
    use crate::trace::TraceId;

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
