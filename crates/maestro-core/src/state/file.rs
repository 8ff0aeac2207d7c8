//! The file store: each job a directory under the state root (`var/maestro`), its history an
//! append-only journal.
//!
//! Layout of a state root:
//!
//! ```text
//! audit.log                 JSON lines, see crate::audit
//! jobs.index                every job's id in creation order, fixed-size lines (see below)
//! jobs.pruned               the ids of jobs `mc prune` removed, the same way
//! jobs/<job_id>/job.json    what was submitted, by whom, when (written once)
//! jobs/<job_id>/spec.<ext>  the spec, byte for byte as submitted (written once)
//! jobs/<job_id>/history.journal  the history: transitions and step results, append-only records
//! jobs/<job_id>/logs/       one log per step
//! jobs/.new-<id>/           a job being stored, flock-ed by its `mc`, then renamed into place
//! ```
//!
//! **The lease** is an exclusive `flock` on the job's directory, held by the `mc` that drives
//! the job for as long as it lives: the lock taken on the staging directory, kept through the
//! rename. (Jobs stored by earlier versions have a `lease` file instead, flock-ed the same way;
//! it is used where present. A file per job cost an inode per job, which on a file system
//! without a journal is a scan past every recently deleted one.)
//!
//! Everything is opened beneath the root without following links, files `0600` and
//! directories `0700` (see [`crate::root`]).
//!
//! **The journal** ([`super::journal`]) is written in place: each append (one or several
//! records due at once: a step's result with the job's final state) is one `write` of complete
//! records under an exclusive `flock` on the journal, after the transition was checked against
//! the journal as it is, then one `fdatasync`. Earlier bytes are never rewritten; a torn tail a
//! crash left (never acknowledged) is ignored by readers and cut off by the next append.
//! Readers take no lock. A job is stored in a hidden staging directory, its files (the journal
//! with its first transition included) fsynced there, and renamed into place, so no reader
//! sees a job without its spec and metadata.
//!
//! **Old roots** keep `state.json` and `steps.json` (append-only JSON arrays, each append an
//! atomic rewrite) instead of a journal: such jobs are read and appended to as before, and
//! their history digests are the same, since a journal's digests are those of the arrays its
//! records would make.
//!
//! **The index** `jobs.index` holds a header line then one 37-byte line per job
//! (`<hyphenated id>\n`), appended (and fdatasynced) under an exclusive `flock` on `jobs/`
//! before the job is renamed into place: a listing reads it from the end, so a page costs the
//! same at 1 and 100,000 jobs. A line whose job is missing (a submission that died, a pruned
//! job) is skipped. A root without an index (an older version's) gets one built from `jobs/`
//! on first listing.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{self, Kind};
use super::{
    FileDigest, HistoryBytes, HistoryDigests, HistoryEntry, JobLease, JobMeta, JobPage, JobRecord,
    JobState, LogReader, LogSink, PageQuery, StateError, StateStore, StepRecord, Transition,
    array_bytes, sha256_hex,
};
use crate::JobId;
use crate::audit::AuditLog;
use crate::root::{Access, Dir, StateRoot};

/// The file-backed store.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: StateRoot,
    /// From how long a sync is taken for a disk's wait rather than CPU ([`SLOW_SYNC`]).
    slow_sync: std::time::Duration,
}

/// The journal's name in a job's directory.
pub const JOURNAL: &str = "history.journal";
/// The index of job ids in the state root.
pub const INDEX: &str = "jobs.index";
/// The ids of pruned jobs in the state root.
pub const PRUNED: &str = "jobs.pruned";
/// A sync slower than this is the disk's wait, not CPU: a new job's other syncs are then
/// issued at once, from threads, rather than one after another (see `create_job_with_history`).
const SLOW_SYNC: std::time::Duration = std::time::Duration::from_micros(500);

/// The length of one line of the index: a hyphenated id and a newline.
const INDEX_LINE: usize = 37;

/// The index's first line (as long as an id's).
fn index_header() -> Vec<u8> {
    format!("{:-<36}\n", "#maestro-jobs-index-v1-").into_bytes()
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

/// A job's history as read from its journal: the entries' exact bytes, in order.
#[derive(Default)]
struct Entries<'a> {
    transitions: Vec<&'a [u8]>,
    steps: Vec<&'a [u8]>,
}

impl<'a> Entries<'a> {
    fn of(records: &[journal::Record<'a>]) -> Self {
        let mut entries = Self::default();
        for record in records {
            entries.push(record.kind, record.payload);
        }
        entries
    }

    fn push(&mut self, kind: Kind, payload: &'a [u8]) {
        match kind {
            Kind::Transition => self.transitions.push(payload),
            Kind::Step => self.steps.push(payload),
        }
    }

    fn digests(&self) -> HistoryDigests {
        let digest = |entries: &[&[u8]]| FileDigest {
            entries: entries.len(),
            sha256: sha256_hex(&array_bytes(entries)),
        };
        HistoryDigests {
            state: digest(&self.transitions),
            steps: digest(&self.steps),
        }
    }

    fn bytes(&self) -> HistoryBytes {
        HistoryBytes {
            state: array_bytes(&self.transitions),
            steps: array_bytes(&self.steps),
        }
    }
}

/// The state a transition's JSON records.
#[derive(Deserialize)]
struct StateOnly {
    state: JobState,
}

impl FileStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: StateRoot::new(root),
            slow_sync: SLOW_SYNC,
        }
    }

    /// This store with every sync taken for slow: a new job's syncs are always issued at once,
    /// from threads (the path a slow disk takes), for the tests to cover it on any disk.
    #[cfg(test)]
    pub(crate) fn syncing_at_once(mut self) -> Self {
        self.slow_sync = std::time::Duration::ZERO;
        self
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

    /// A job's journal.
    pub fn journal_path(&self, job_id: JobId) -> PathBuf {
        self.job_dir(job_id).join(JOURNAL)
    }

    fn job_rel(job_id: JobId) -> PathBuf {
        Path::new("jobs").join(job_id.hyphenated().to_string())
    }

    /// The job's directory, opened beneath the root without following links.
    fn open_job(&self, job_id: JobId) -> Result<Dir, StateError> {
        match self.root.open_dir(&Self::job_rel(job_id)) {
            Ok(Some(dir)) => Ok(dir),
            Ok(None) => Err(self.not_found(job_id)),
            Err(source) => Err(io_error("open", &self.job_dir(job_id))(source)),
        }
    }

    /// A job that is not here (whether it was pruned is not asked: see [`Self::explain`]).
    fn not_found(&self, job_id: JobId) -> StateError {
        StateError::NotFound {
            job_id,
            store: self.describe(),
            pruned: false,
        }
    }

    /// `error`, saying whether a job not found was removed by `mc prune` (read from
    /// `jobs.pruned`, whole): only where a job was asked for by id, never on listing paths,
    /// which pass over every pruned job's index line.
    fn explain(&self, error: StateError) -> StateError {
        match error {
            StateError::NotFound {
                job_id,
                store,
                pruned: false,
            } => {
                let id = job_id.hyphenated().to_string();
                let pruned = matches!(
                    self.root.open_dir(Path::new("")),
                    Ok(Some(root)) if root.read(PRUNED).is_ok_and(|bytes| {
                        bytes.split(|b| *b == b'\n').any(|line| line == id.as_bytes())
                    })
                );
                StateError::NotFound {
                    job_id,
                    store,
                    pruned,
                }
            }
            other => other,
        }
    }

    /// Add `job_id` to `jobs.pruned`, under the lock of `jobs/` taken on a handle of its own
    /// (released on return, so a long gc does not hold up submissions). With `once`, not if
    /// it is there already, which reads the file whole: only gc asks, for a removal a killed
    /// prune left half done (a prune counts its job as it takes it out, under the same lock,
    /// so the two never count one job twice).
    fn count_pruned(&self, job_id: JobId, once: bool) -> Result<(), StateError> {
        let path = self.root().join(PRUNED);
        let Some(lock) = self.jobs()? else {
            return Ok(());
        };
        lock.lock().map_err(io_error("lock", &self.jobs_dir()))?;
        let root = self
            .root
            .create_dir_all(Path::new(""))
            .map_err(io_error("open", self.root()))?;
        let id = job_id.hyphenated().to_string();
        let counted = once
            && match root.read(PRUNED) {
                Ok(bytes) => bytes
                    .split(|b| *b == b'\n')
                    .any(|line| line == id.as_bytes()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => false,
                Err(error) => return Err(io_error("read", &path)(error)),
            };
        if !counted {
            let mut file = root
                .open(PRUNED, Access::AppendOrCreate)
                .map_err(io_error("open", &path))?;
            file.write_all(format!("{id}\n").as_bytes())
                .map_err(io_error("write", &path))?;
        }
        Ok(())
    }

    /// Whether `jobs.index` has a line for `job_id` (read whole: only `mc gc` asks, for a
    /// submission that died).
    fn indexed(&self, job_id: JobId) -> Result<bool, StateError> {
        let path = self.root().join(INDEX);
        let Some(root) = self
            .root
            .open_dir(Path::new(""))
            .map_err(io_error("open", self.root()))?
        else {
            return Ok(false);
        };
        let id = job_id.hyphenated().to_string();
        match root.read(INDEX) {
            Ok(bytes) => Ok(bytes
                .split(|b| *b == b'\n')
                .any(|line| line == id.as_bytes())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(io_error("read", &path)(error)),
        }
    }

    /// Count `job_id` as pruned and remove `jobs/.pruned-<id>` (a prune killed midway, or one
    /// running now: the removal is idempotent).
    fn finish_pruning(&self, jobs: &Dir, job_id: JobId) -> Result<(), StateError> {
        self.count_pruned(job_id, true)?;
        let name = format!(".pruned-{}", job_id.hyphenated());
        match jobs.remove_dir_all(&name) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                Err(io_error("remove", &jobs.join(&name))(error))
            }
            _ => Ok(()),
        }
    }

    /// A job's record, as [`StateStore::load`] reads it, without asking whether a missing job
    /// was pruned (listings pass over pruned jobs' index lines).
    fn read_record(&self, job_id: JobId) -> Result<JobRecord, StateError> {
        let dir = self.open_job(job_id)?;
        let meta_bytes = self.read_bytes(job_id, &dir, "job.json")?;
        let meta: JobMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|error| corrupt(&dir.join("job.json"), error))?;
        // A job directory copied (or renamed) by hand: its record is another job's, and read
        // as this one it would have gc record the other's history again, and again.
        if meta.job_id != job_id {
            return Err(corrupt(
                &dir.join("job.json"),
                format!(
                    "it is the record of job {}, not of job {job_id}: the directory was copied or renamed by hand",
                    meta.job_id
                ),
            ));
        }
        let Some(bytes) = self.read_journal(job_id, &dir)? else {
            let (_, transitions) = self.read_array(job_id, &dir, "state.json")?;
            let (_, steps) = self.read_array(job_id, &dir, "steps.json")?;
            return Ok(JobRecord {
                meta,
                transitions,
                steps,
            });
        };
        let parsed = Self::parse_journal(&dir, &bytes)?;
        let mut record = JobRecord {
            meta,
            transitions: Vec::new(),
            steps: Vec::new(),
        };
        for (index, entry) in parsed.records.iter().enumerate() {
            let what = |error: serde_json::Error| {
                corrupt(&dir.join(JOURNAL), format!("record {}: {error}", index + 1))
            };
            match entry.kind {
                Kind::Transition => record
                    .transitions
                    .push(serde_json::from_slice(entry.payload).map_err(what)?),
                Kind::Step => record
                    .steps
                    .push(serde_json::from_slice(entry.payload).map_err(what)?),
            }
        }
        Ok(record)
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
            self.not_found(job_id)
        } else {
            io_error(action, &dir.join(name))(source)
        }
    }

    /// The journal's bytes; `None` for a job of an older version (`state.json`, `steps.json`).
    fn read_journal(&self, job_id: JobId, dir: &Dir) -> Result<Option<Vec<u8>>, StateError> {
        match dir.read(JOURNAL) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                match dir.open("state.json", Access::Read) {
                    Ok(_) => Ok(None),
                    Err(source) => Err(self.missing_or(job_id, dir, "read", JOURNAL, source)),
                }
            }
            Err(error) => Err(io_error("read", &dir.join(JOURNAL))(error)),
        }
    }

    fn parse_journal<'a>(dir: &Dir, bytes: &'a [u8]) -> Result<journal::Parsed<'a>, StateError> {
        journal::parse(bytes).map_err(|error| corrupt(&dir.join(JOURNAL), error))
    }

    /// Check `entries` against the journal as it is and append them with one write and one
    /// fdatasync, under the journal's lock; the digests after each.
    fn append_to_journal(
        &self,
        dir: &Dir,
        job_id: JobId,
        entries: &[HistoryEntry<'_>],
    ) -> Result<Vec<HistoryDigests>, StateError> {
        let path = dir.join(JOURNAL);
        let mut file = dir
            .open(JOURNAL, Access::Append)
            .map_err(io_error("open", &path))?;
        file.lock().map_err(io_error("lock", &path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_error("read", &path))?;
        let parsed = Self::parse_journal(dir, &bytes)?;
        let current = Entries::of(&parsed.records);
        let state = match current.transitions.last() {
            Some(last) => Some(
                serde_json::from_slice::<StateOnly>(last)
                    .map_err(|error| corrupt(&path, error))?
                    .state,
            ),
            None => None,
        };
        let (frames, payloads) = Self::frames(&path, job_id, state, entries)?;
        if parsed.valid_len < bytes.len() {
            // A torn tail a crash left, never acknowledged: cut it, or the next record would
            // be glued to it.
            tracing::warn!(path = %path.display(), "cutting the torn tail of a journal");
            file.set_len(parsed.valid_len as u64)
                .map_err(io_error("truncate", &path))?;
        }
        file.write_all(&frames).map_err(io_error("write", &path))?;
        file.sync_data().map_err(io_error("sync", &path))?;
        Ok(Self::digests_after(current, &payloads))
    }

    /// The digests of the history after each of `payloads` is added to `current`.
    fn digests_after<'a>(
        mut current: Entries<'a>,
        payloads: &'a [(Kind, Vec<u8>)],
    ) -> Vec<HistoryDigests> {
        let mut digests = Vec::with_capacity(payloads.len());
        for (kind, payload) in payloads {
            current.push(*kind, payload);
            digests.push(current.digests());
        }
        digests
    }

    /// The records of `entries`, each transition checked from `state` (the last recorded
    /// one): the bytes to append, and each entry's kind and payload.
    #[expect(clippy::type_complexity, reason = "a private helper's pair of results")]
    fn frames(
        path: &Path,
        job_id: JobId,
        mut state: Option<JobState>,
        entries: &[HistoryEntry<'_>],
    ) -> Result<(Vec<u8>, Vec<(Kind, Vec<u8>)>), StateError> {
        let mut payloads = Vec::with_capacity(entries.len());
        for entry in entries {
            let (kind, payload) = match entry {
                HistoryEntry::Transition(transition) => {
                    let legal = match state {
                        None => transition.state.can_start(),
                        Some(from) => from.can_transition_to(transition.state),
                    };
                    if !legal {
                        return Err(StateError::IllegalTransition {
                            job_id,
                            from: state.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                            to: transition.state,
                        });
                    }
                    state = Some(transition.state);
                    (Kind::Transition, serde_json::to_vec(transition))
                }
                HistoryEntry::Step(step) => (Kind::Step, serde_json::to_vec(step)),
            };
            payloads.push((kind, payload.map_err(|error| corrupt(path, error))?));
        }
        let mut frames = Vec::new();
        for (kind, payload) in &payloads {
            journal::encode(*kind, payload, &mut frames);
        }
        Ok((frames, payloads))
    }

    /// Append `entry` to the JSON array `name` whose bytes are `existing`, keeping every
    /// existing byte; the file's new bytes. (Jobs of older versions.)
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

    /// A transition appended to an older version's `state.json`.
    fn append_legacy_transition(
        &self,
        job_id: JobId,
        dir: &Dir,
        transition: &Transition,
    ) -> Result<HistoryDigests, StateError> {
        let _lock = self.lock_state(dir)?;
        let (bytes, history) = self.read_array::<Transition>(job_id, dir, "state.json")?;
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
        let state = self.append_to_array(dir, "state.json", &bytes, transition)?;
        let steps = self.read_bytes(job_id, dir, "steps.json")?;
        Self::digests(dir, &state, &steps)
    }

    /// A step result appended to an older version's `steps.json`.
    fn append_legacy_step(
        &self,
        job_id: JobId,
        dir: &Dir,
        step: &StepRecord,
    ) -> Result<HistoryDigests, StateError> {
        let _lock = self.lock_state(dir)?;
        let (bytes, _) = self.read_array::<serde_json::Value>(job_id, dir, "steps.json")?;
        let steps = self.append_to_array(dir, "steps.json", &bytes, step)?;
        let state = self.read_bytes(job_id, dir, "state.json")?;
        Self::digests(dir, &state, &steps)
    }

    /// The path of a step's log. Step names are validated (`[A-Za-z0-9._-]`, never `.` or
    /// `..`), so it stays inside the job's directory.
    pub fn step_log_path(&self, job_id: JobId, step: &str) -> PathBuf {
        self.job_dir(job_id)
            .join("logs")
            .join(format!("{step}.log"))
    }

    /// What the job's lease locks, and its path for messages: the job's directory, or the
    /// `lease` file of a job an older version stored.
    fn lease_of(&self, job_id: JobId) -> Result<(File, PathBuf), StateError> {
        let dir = self.open_job(job_id)?;
        match dir.open("lease", Access::Read) {
            Ok(file) => Ok((file, dir.join("lease"))),
            Err(source)
                if source.kind() == io::ErrorKind::NotFound
                    && dir.open("job.json", Access::Read).is_ok() =>
            {
                let path = dir.path().to_path_buf();
                Ok((dir.into_file(), path))
            }
            Err(source) => Err(self.missing_or(job_id, &dir, "open", "lease", source)),
        }
    }

    fn jobs(&self) -> Result<Option<Dir>, StateError> {
        self.root
            .open_dir(Path::new("jobs"))
            .map_err(io_error("open", &self.jobs_dir()))
    }

    /// Append `job_id` to the index (durably), under the lock on `jobs/`; an index that is
    /// missing or not as this version writes it is built first.
    fn index_job(&self, jobs: &Dir, job_id: JobId) -> Result<(), StateError> {
        let path = self.root().join(INDEX);
        jobs.lock().map_err(io_error("lock", &self.jobs_dir()))?;
        let root = self
            .root
            .create_dir_all(Path::new(""))
            .map_err(io_error("open", self.root()))?;
        let mut file = self.index_file(&root, jobs)?;
        let length = file.metadata().map_err(io_error("read", &path))?.len();
        let whole = length - length % INDEX_LINE as u64;
        let mut line = format!("{}\n", job_id.hyphenated());
        if whole != length {
            // A last line without its newline. A whole id of a job in place lost only its
            // newline (a job is renamed into place after its line is synced, so not by a
            // crash): ended, it stays listed. Anything else is a line torn by a crash, for a
            // job never put in place: cut, so that every line stays where it belongs.
            let mut rest = vec![0; usize::try_from(length - whole).unwrap_or(0)];
            let kept = file.read_exact_at(&mut rest, whole).is_ok()
                && rest.len() == INDEX_LINE - 1
                && std::str::from_utf8(&rest)
                    .ok()
                    .and_then(|text| JobId::try_parse(text).ok())
                    .is_some_and(|listed| {
                        jobs.subdir(&listed.hyphenated().to_string())
                            .is_ok_and(|dir| dir.is_some())
                    });
            if kept {
                line.insert(0, '\n');
            } else {
                file.set_len(whole).map_err(io_error("truncate", &path))?;
            }
        }
        file.write_all(line.as_bytes())
            .map_err(io_error("write", &path))?;
        file.sync_data().map_err(io_error("sync", &path))
    }

    /// The index opened for appending, built from `jobs/` (whose lock the caller holds) if it
    /// is missing or not as this version writes it.
    fn index_file(&self, root: &Dir, jobs: &Dir) -> Result<File, StateError> {
        let path = self.root().join(INDEX);
        let mut file = root
            .open(INDEX, Access::AppendOrCreate)
            .map_err(io_error("open", &path))?;
        let mut header = vec![0; INDEX_LINE];
        let current = file.read_exact_at(&mut header, 0).is_ok() && header == index_header();
        if current {
            return Ok(file);
        }
        let mut ids: Vec<JobId> = jobs
            .entries()
            .map_err(io_error("read", &self.jobs_dir()))?
            .into_iter()
            .filter_map(|(name, _)| JobId::try_parse(&name.to_string_lossy()).ok())
            .collect();
        ids.sort_unstable();
        let mut content = index_header();
        for id in &ids {
            content.extend_from_slice(format!("{}\n", id.hyphenated()).as_bytes());
        }
        root.write_atomic(INDEX, &content)
            .map_err(io_error("write", &path))?;
        tracing::info!(path = %path.display(), jobs = ids.len(), "built the index of jobs");
        file = root
            .open(INDEX, Access::AppendOrCreate)
            .map_err(io_error("open", &path))?;
        Ok(file)
    }

    /// The index for reading, built first if needed; `None` when there are no jobs.
    fn read_index(&self) -> Result<Option<Index>, StateError> {
        let Some(jobs) = self.jobs()? else {
            return Ok(None);
        };
        let path = self.root().join(INDEX);
        let root = self
            .root
            .open_dir(Path::new(""))
            .map_err(io_error("open", self.root()))?
            .ok_or_else(|| io_error("open", self.root())(io::ErrorKind::NotFound.into()))?;
        let file = match root.open(INDEX, Access::Read) {
            Ok(file) => Some(file),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error("open", &path)(error)),
        };
        let valid = |file: &File| {
            let mut header = vec![0; INDEX_LINE];
            file.read_exact_at(&mut header, 0).is_ok() && header == index_header()
        };
        let file = match file {
            Some(file) if valid(&file) => file,
            _ => {
                jobs.lock().map_err(io_error("lock", &self.jobs_dir()))?;
                drop(self.index_file(&root, &jobs)?);
                root.open(INDEX, Access::Read)
                    .map_err(io_error("open", &path))?
            }
        };
        let length = file.metadata().map_err(io_error("read", &path))?.len();
        let lines = usize::try_from(length).unwrap_or(usize::MAX) / INDEX_LINE;
        Ok(Some(Index {
            file,
            path,
            entries: lines.saturating_sub(1),
        }))
    }

    /// How many pruned jobs are older than `cursor`.
    fn pruned_older(&self, cursor: JobId) -> Result<usize, StateError> {
        let path = self.root().join(PRUNED);
        let root = match self.root.open_dir(Path::new("")) {
            Ok(Some(root)) => root,
            Ok(None) => return Ok(0),
            Err(error) => return Err(io_error("open", self.root())(error)),
        };
        let bytes = match root.read(PRUNED) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(io_error("read", &path)(error)),
        };
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| JobId::try_parse(&String::from_utf8_lossy(line)).ok())
            .filter(|id| *id < cursor)
            .count())
    }

    /// The listing by reading `jobs/` (when the index cannot be used).
    fn list_page_by_scan(&self, query: &PageQuery) -> Result<JobPage, StateError> {
        let ids = self.list()?;
        let start = match query.before {
            // Ids are newest first; the page starts after the cursor.
            Some(cursor) => ids.partition_point(|id| *id >= cursor),
            None => 0,
        };
        let mut page = JobPage::default();
        let mut scan = Scan::default();
        for job_id in &ids[start..] {
            if self.page_push(&mut page, query, &mut scan, *job_id) {
                break;
            }
        }
        Ok(page)
    }

    /// Add `job_id` to `page` if the filter lets it through; whether the page is complete
    /// (this job, matching, was one too many: it is where the next page starts; or the page
    /// looked at as many jobs as it may, and the next starts after the last of them).
    fn page_push(
        &self,
        page: &mut JobPage,
        query: &PageQuery,
        scan: &mut Scan,
        job_id: JobId,
    ) -> bool {
        if query.max_examined != 0 && scan.examined == query.max_examined {
            page.next_cursor = scan.last;
            return true;
        }
        scan.examined += 1;
        scan.last = Some(job_id);
        let record = match self.read_record(job_id) {
            Ok(record) => record,
            // Pruned, or a submission that died before its job was in place.
            Err(StateError::NotFound { .. }) => return false,
            Err(error) => {
                tracing::debug!(%job_id, %error, "job skipped in the listing");
                // Only one this page would have shown: past a full page, it is the next one's.
                if query.limit == 0 || page.jobs.len() < query.limit {
                    page.unreadable.push((job_id, error.to_string()));
                }
                return false;
            }
        };
        if !query.filter.matches(&record) {
            return false;
        }
        if query.limit != 0 && page.jobs.len() == query.limit {
            page.next_cursor = page.jobs.last().map(|last| last.meta.job_id);
            return true;
        }
        page.jobs.push(record);
        false
    }
}

/// A step's log being written. Its directory entry is made durable with its content, when
/// the step ends (before its result is recorded), rather than when it is created: the step
/// starts one sync sooner, and both syncs run at once.
struct StepLog {
    file: File,
    logs: Dir,
}

impl Write for StepLog {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.file.write(bytes)
    }

    fn write_vectored(&mut self, buffers: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.file.write_vectored(buffers)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl LogSink for StepLog {
    fn sync(&mut self) -> io::Result<()> {
        let (file, logs) = (&self.file, &self.logs);
        std::thread::scope(|scope| {
            let directory = scope.spawn(|| logs.sync());
            let content = file.sync_all();
            let directory = directory
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a sync thread panicked")));
            content.and(directory)
        })
    }
}

/// How far a page's walk through the jobs has gone.
#[derive(Default)]
struct Scan {
    /// Jobs looked at.
    examined: usize,
    /// The last of them.
    last: Option<JobId>,
}

/// `jobs.index` opened for reading.
struct Index {
    file: File,
    path: PathBuf,
    /// Lines after the header.
    entries: usize,
}

impl Index {
    /// How many lines are read at once from the end.
    const CHUNK: usize = 128;

    /// The ids of lines `start..end` (after the header).
    fn read(&self, start: usize, end: usize) -> Result<Vec<Option<JobId>>, StateError> {
        let mut bytes = vec![0; (end - start) * INDEX_LINE];
        self.file
            .read_exact_at(&mut bytes, ((start + 1) * INDEX_LINE) as u64)
            .map_err(io_error("read", &self.path))?;
        Ok(bytes
            .chunks(INDEX_LINE)
            .map(|line| {
                std::str::from_utf8(&line[..INDEX_LINE - 1])
                    .ok()
                    .and_then(|text| JobId::try_parse(text).ok())
            })
            .collect())
    }

    fn id_at(&self, position: usize) -> Result<Option<JobId>, StateError> {
        Ok(self.read(position, position + 1)?.pop().flatten())
    }

    /// The line of `cursor`: found by bisection (ids are in creation order, which is their
    /// order but for submissions that overlapped), then looked for around it, then anywhere.
    fn position(&self, cursor: JobId) -> Result<Option<usize>, StateError> {
        let (mut low, mut high) = (0, self.entries);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.id_at(middle)? {
                Some(id) if id < cursor => low = middle + 1,
                _ => high = middle,
            }
        }
        const AROUND: usize = 256;
        let start = low.saturating_sub(AROUND);
        let end = (low + AROUND).min(self.entries);
        if let Some(found) = self
            .read(start, end)?
            .iter()
            .position(|id| *id == Some(cursor))
        {
            return Ok(Some(start + found));
        }
        let mut end = self.entries;
        while end > 0 {
            let start = end.saturating_sub(Self::CHUNK * 8);
            if let Some(found) = self
                .read(start, end)?
                .iter()
                .rposition(|id| *id == Some(cursor))
            {
                return Ok(Some(start + found));
            }
            end = start;
        }
        Ok(None)
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
        self.create_job_with_history(meta, spec_bytes, &[])
            .map(|(lease, _)| lease)
    }

    fn create_job_with_history(
        &self,
        meta: &JobMeta,
        spec_bytes: &[u8],
        entries: &[HistoryEntry<'_>],
    ) -> Result<(JobLease, Vec<HistoryDigests>), StateError> {
        let jobs_path = self.jobs_dir();
        let jobs = self
            .root
            .create_dir_all(Path::new("jobs"))
            .map_err(io_error("create", &jobs_path))?;
        // Build the job in a hidden directory and rename it into place, so no reader ever sees
        // a job without its spec and metadata.
        let staging_name = format!(".new-{}", meta.job_id.simple());
        let staging_path = jobs.join(&staging_name);
        // The staging directory is flock-ed by its `mc`: one nobody holds is a dead
        // submission's, and `mc gc` removes it. `mc gc` may take one for dead between its
        // creation and the lock: then it is gone, and made again. Renamed into place, the
        // same directory's lock is the job's lease.
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
            staging
                .create_dir("logs")
                .map_err(io_error("create", &staging.join("logs")))?;
            // The journal with the first entries, checked from an empty history.
            let journal_path = staging.join(JOURNAL);
            let (frames, payloads) = Self::frames(&journal_path, meta.job_id, None, entries)?;
            let mut files = Vec::with_capacity(3);
            for (name, content) in [
                (meta.spec_file.as_str(), spec_bytes.to_vec()),
                (
                    "job.json",
                    serde_json::to_vec_pretty(meta).unwrap_or_default(),
                ),
                (JOURNAL, frames),
            ] {
                let path = staging.join(name);
                let mut file = staging
                    .open(name, Access::CreateNew)
                    .map_err(io_error("create", &path))?;
                file.write_all(&content).map_err(io_error("write", &path))?;
                files.push((file, path));
            }
            // Everything is made durable before the rename that makes the job visible: its
            // files, the staging directory (their entries) and the job's line in the index
            // (so no job is ever missing from it). The staging directory is invisible until
            // renamed, so its files need no rename of their own.
            //
            // How they are made depends on the disk, measured on the first of them. Where a
            // sync is fast (a flush the disk's cache acknowledges at once) its cost is CPU, and
            // threads to overlap the others would cost more than they save (more so while the
            // first step's sandbox is built on the other CPU): the rest follow in this thread.
            // Where it is slow (a flush that waits for the medium) the rest are issued at once
            // from threads, and the disk completes them together: one more wait, not four.
            let mut files = files.into_iter();
            let (first, first_path) = files.next().expect("three files were written");
            let clock = std::time::Instant::now();
            first.sync_all().map_err(io_error("sync", &first_path))?;
            let rest: Vec<(File, PathBuf)> = files.collect();
            if clock.elapsed() < self.slow_sync {
                for (file, path) in &rest {
                    file.sync_all().map_err(io_error("sync", path))?;
                }
                staging.sync().map_err(io_error("sync", &staging_path))?;
                self.index_job(&jobs, meta.job_id)?;
            } else {
                std::thread::scope(|scope| {
                    let syncs: Vec<_> = rest
                        .iter()
                        .map(|(file, path)| {
                            scope.spawn(move || file.sync_all().map_err(io_error("sync", path)))
                        })
                        .collect();
                    let directory =
                        scope.spawn(|| staging.sync().map_err(io_error("sync", &staging_path)));
                    let indexed = self.index_job(&jobs, meta.job_id);
                    syncs
                        .into_iter()
                        .chain([directory])
                        .map(|sync| {
                            sync.join().unwrap_or_else(|_| {
                                Err(io_error("sync", &staging_path)(io::Error::other(
                                    "a sync thread panicked",
                                )))
                            })
                        })
                        .chain([indexed])
                        .collect::<Result<Vec<()>, StateError>>()
                })?;
            }
            let digests = Self::digests_after(Entries::default(), &payloads);
            let target = meta.job_id.hyphenated().to_string();
            jobs.rename(&staging_name, &jobs, &target)
                .map_err(io_error("rename", &jobs.join(&target)))?;
            jobs.sync().map_err(io_error("sync", &jobs_path))?;
            Ok(digests)
        })();
        match result {
            Ok(digests) => Ok((JobLease::new(staging.into_file()), digests)),
            Err(error) => {
                let _ = jobs.remove_dir_all(&staging_name);
                Err(error)
            }
        }
    }

    fn append_transition(
        &self,
        job_id: JobId,
        transition: &Transition,
    ) -> Result<HistoryDigests, StateError> {
        let mut digests = self.append_history(job_id, &[HistoryEntry::Transition(transition)])?;
        digests
            .pop()
            .ok_or_else(|| corrupt(&self.journal_path(job_id), "nothing was appended"))
    }

    fn append_step(&self, job_id: JobId, step: &StepRecord) -> Result<HistoryDigests, StateError> {
        let mut digests = self.append_history(job_id, &[HistoryEntry::Step(step)])?;
        digests
            .pop()
            .ok_or_else(|| corrupt(&self.journal_path(job_id), "nothing was appended"))
    }

    fn append_history(
        &self,
        job_id: JobId,
        entries: &[HistoryEntry<'_>],
    ) -> Result<Vec<HistoryDigests>, StateError> {
        let dir = self.open_job(job_id)?;
        match dir.open(JOURNAL, Access::Read) {
            Ok(_) if entries.is_empty() => Ok(Vec::new()),
            Ok(_) => self.append_to_journal(&dir, job_id, entries),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if let Err(source) = dir.open("state.json", Access::Read) {
                    return Err(self.missing_or(job_id, &dir, "open", JOURNAL, source));
                }
                // A job of an older version: one atomic rewrite per entry, as it was written.
                entries
                    .iter()
                    .map(|entry| match entry {
                        HistoryEntry::Transition(transition) => {
                            self.append_legacy_transition(job_id, &dir, transition)
                        }
                        HistoryEntry::Step(step) => self.append_legacy_step(job_id, &dir, step),
                    })
                    .collect()
            }
            Err(error) => Err(io_error("open", &dir.join(JOURNAL))(error)),
        }
    }

    fn load(&self, job_id: JobId) -> Result<JobRecord, StateError> {
        self.read_record(job_id)
            .map_err(|error| self.explain(error))
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

    /// A journal's history is given as the JSON arrays its records make (each entry's exact
    /// bytes), the form the digests are computed over for both layouts.
    fn history(&self, job_id: JobId) -> Result<HistoryBytes, StateError> {
        let dir = self.open_job(job_id)?;
        match self.read_journal(job_id, &dir)? {
            Some(bytes) => {
                let parsed = Self::parse_journal(&dir, &bytes)?;
                Ok(Entries::of(&parsed.records).bytes())
            }
            None => {
                let _lock = self.lock_state(&dir)?;
                Ok(HistoryBytes {
                    state: self.read_bytes(job_id, &dir, "state.json")?,
                    steps: self.read_bytes(job_id, &dir, "steps.json")?,
                })
            }
        }
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
    /// finished by the next one. Its id is added to `jobs.pruned`, for counts.
    fn remove_job(&self, job_id: JobId) -> Result<(), StateError> {
        let record = self.load(job_id)?;
        if !record.state().is_terminal() || self.is_live(job_id)? {
            return Err(StateError::StillRunning { job_id });
        }
        let jobs_path = self.jobs_dir();
        let jobs = self.jobs()?.ok_or_else(|| self.not_found(job_id))?;
        let staged = format!(".pruned-{}", job_id.hyphenated());
        {
            // Taken out and counted under the lock gc counts half-done removals under.
            let lock = self.jobs()?.ok_or_else(|| self.not_found(job_id))?;
            lock.lock().map_err(io_error("lock", &jobs_path))?;
            jobs.rename(&job_id.hyphenated().to_string(), &jobs, &staged)
                .map_err(io_error("rename", &jobs.join(&staged)))?;
            jobs.sync().map_err(io_error("sync", &jobs_path))?;
            let path = self.root().join(PRUNED);
            let mut file = self
                .root
                .create_dir_all(Path::new(""))
                .map_err(io_error("open", self.root()))?
                .open(PRUNED, Access::AppendOrCreate)
                .map_err(io_error("open", &path))?;
            file.write_all(format!("{}\n", job_id.hyphenated()).as_bytes())
                .map_err(io_error("write", &path))?;
        }
        // Removed through directory descriptors: no link inside is ever followed. Any removal
        // an earlier prune left half done is finished too.
        jobs.remove_dir_all(&staged)
            .map_err(io_error("remove", &jobs.join(&staged)))?;
        for (name, _) in jobs.entries().map_err(io_error("read", &jobs_path))? {
            if let Some(pruned) = name
                .to_string_lossy()
                .strip_prefix(".pruned-")
                .and_then(|id| JobId::try_parse(id).ok())
            {
                self.finish_pruning(&jobs, pruned)?;
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<JobId>, StateError> {
        let jobs = self.jobs_dir();
        let Some(dir) = self.jobs()? else {
            return Ok(Vec::new());
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

    /// Reads `jobs.index` from the end (the cursor found by bisection), and loads one job per
    /// line from there: an unfiltered page costs `limit` loads whatever the store's size. A
    /// filtered page loads every job it looks at until `limit` match, so its cost grows with
    /// how rare matches are, up to `query.max_examined` loads when that is set (the server sets
    /// it; the page then ends short, with a cursor). A job that cannot be read is skipped with a warning; a store
    /// whose index cannot be read or built is listed by reading `jobs/` instead.
    fn list_page(&self, query: &PageQuery) -> Result<JobPage, StateError> {
        let index = match self.read_index() {
            Ok(Some(index)) => index,
            Ok(None) => return Ok(JobPage::default()),
            Err(error) => {
                tracing::warn!(%error, "listing by reading every job's name");
                return self.list_page_by_scan(query);
            }
        };
        let mut end = match query.before {
            Some(cursor) => match index.position(cursor)? {
                Some(position) => position,
                // Not a job of this store: the jobs older than it, by id.
                None => return self.list_page_by_scan(query),
            },
            None => index.entries,
        };
        let mut page = JobPage::default();
        let mut scan = Scan::default();
        while end > 0 {
            let start = end.saturating_sub(Index::CHUNK);
            for job_id in index.read(start, end)?.into_iter().rev().flatten() {
                if self.page_push(&mut page, query, &mut scan, job_id) {
                    return Ok(page);
                }
            }
            end = start;
        }
        Ok(page)
    }

    /// The cursor's line in the index, less the pruned jobs older than it.
    fn count_older(&self, cursor: JobId) -> Result<usize, StateError> {
        let position = match self.read_index() {
            Ok(Some(index)) => index.position(cursor)?,
            Ok(None) => return Ok(0),
            Err(error) => {
                tracing::warn!(%error, "counting by reading every job's name");
                None
            }
        };
        match position {
            Some(position) => Ok(position.saturating_sub(self.pruned_older(cursor)?)),
            None => Ok(self.list()?.iter().filter(|id| **id < cursor).count()),
        }
    }

    fn is_live(&self, job_id: JobId) -> Result<bool, StateError> {
        let (file, path) = self.lease_of(job_id)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(fs::TryLockError::WouldBlock) => Ok(true),
            Err(fs::TryLockError::Error(error)) => Err(io_error("lock", &path)(error)),
        }
    }

    fn try_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError> {
        let (file, path) = self.lease_of(job_id)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(JobLease::new(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(error)) => Err(io_error("lock", &path)(error)),
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
            // A job `mc prune` was removing when it died: out of every listing already, its
            // removal is finished (and counted, if the prune died before it counted it).
            if let Some(job_id) = name
                .strip_prefix(".pruned-")
                .and_then(|id| JobId::try_parse(id).ok())
            {
                self.finish_pruning(&jobs, job_id)?;
                removed.push(format!(
                    "finished removing job {job_id}, which a killed `mc prune` left half removed"
                ));
                continue;
            }
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
            // The submission may have died after it gave the job its line in the index: that
            // line now names no job, and is counted out with the pruned ones, so a listing's
            // total stays true.
            if let Some(job_id) = name
                .strip_prefix(".new-")
                .and_then(|id| JobId::try_parse(id).ok())
                && self.indexed(job_id)?
            {
                self.count_pruned(job_id, true)?;
            }
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
        Ok(Box::new(StepLog { file, logs }))
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
        let path = dir.join(name);
        let mut file = dir
            .open(name, Access::AppendOrCreate)
            .map_err(io_error("open", &path))?;
        let new = file.metadata().map_err(io_error("read", &path))?.len() == 0;
        io::Write::write_all(&mut file, line).map_err(io_error("write", &path))?;
        file.sync_data().map_err(io_error("sync", &path))?;
        if new {
            // Its entry in the job's directory, the first time.
            dir.sync().map_err(io_error("sync", dir.path()))?;
        }
        Ok(())
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

    /// The same contract with a new job's syncs issued at once from threads, as on a slow disk.
    mod syncing_at_once {
        use super::FileStore;

        crate::state_store_contract!({
            let dir = tempfile::tempdir().unwrap();
            let store = FileStore::new(dir.path()).syncing_at_once();
            (dir, store)
        });
    }
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
    fn the_lease_is_the_job_directorys_lock_and_an_older_jobs_lease_file_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        let lease = store.create_job(&meta(id), b"{}").unwrap();
        assert!(
            !store.job_dir(id).join("lease").exists(),
            "no file per lease"
        );
        assert!(store.is_live(id).unwrap());
        assert!(
            store.try_lease(id).unwrap().is_none(),
            "held by its creator"
        );
        // Another process's lock on the directory is what a reader sees.
        let other = File::open(store.job_dir(id)).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(lease);
        assert!(!store.is_live(id).unwrap());
        let taken = store.try_lease(id).unwrap().expect("free once dropped");
        assert!(store.is_live(id).unwrap());
        drop(taken);

        // A job an older version stored: its `lease` file is the lease, not the directory.
        let old = JobId::now_v7();
        old_layout_job(&store, old, &[JobState::Submitted, JobState::Running]);
        assert!(!store.is_live(old).unwrap());
        let holder = File::open(store.job_dir(old).join("lease")).unwrap();
        holder.lock().unwrap();
        assert!(store.is_live(old).unwrap());
        assert!(store.try_lease(old).unwrap().is_none());
        drop(holder);
        assert!(store.try_lease(old).unwrap().is_some());
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
        let first = fs::read(store.journal_path(id)).unwrap();
        store
            .append_transition(id, &transition(JobState::Running))
            .unwrap();
        let second = fs::read(store.journal_path(id)).unwrap();
        assert!(second.starts_with(&first), "earlier bytes must be kept");
        assert!(second.len() > first.len());
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
        let before = fs::read(store.journal_path(id)).unwrap();
        let err = store
            .append_transition(id, &transition(JobState::Running))
            .unwrap_err();
        assert!(matches!(err, StateError::IllegalTransition { .. }));
        assert_eq!(fs::read(store.journal_path(id)).unwrap(), before);
    }

    #[test]
    fn a_group_with_an_illegal_transition_writes_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        let submitted = transition(JobState::Submitted);
        let (_lease, digests) = store
            .create_job_with_history(&meta(id), b"{}", &[HistoryEntry::Transition(&submitted)])
            .unwrap();
        assert_eq!(digests.len(), 1);
        let before = fs::read(store.journal_path(id)).unwrap();
        let step = StepRecord::skipped("a", "local");
        let succeeded = transition(JobState::Succeeded);
        let error = store
            .append_history(
                id,
                &[
                    HistoryEntry::Step(&step),
                    HistoryEntry::Transition(&succeeded),
                ],
            )
            .unwrap_err();
        assert!(
            error.to_string().contains("SUBMITTED -> SUCCEEDED"),
            "{error}"
        );
        assert_eq!(fs::read(store.journal_path(id)).unwrap(), before);
        // That the same group is written after RUNNING, one digest per entry, every backend
        // shows in the contract's `grouped_entries_append_in_order`.
    }

    #[test]
    fn a_torn_tail_is_ignored_and_a_later_append_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        let _lease = store.create_job(&meta(id), b"{}").unwrap();
        store
            .append_transition(id, &transition(JobState::Submitted))
            .unwrap();
        let intact = fs::read(store.journal_path(id)).unwrap();
        store
            .append_transition(id, &transition(JobState::Running))
            .unwrap();
        let whole = fs::read(store.journal_path(id)).unwrap();
        // A crash in the middle of the RUNNING record: cut it anywhere.
        for cut in [intact.len() + 1, intact.len() + 30, whole.len() - 1] {
            fs::write(store.journal_path(id), &whole[..cut]).unwrap();
            let record = store.load(id).unwrap();
            assert_eq!(record.state(), JobState::Submitted, "cut at {cut}");
            assert_eq!(
                store.history(id).unwrap().digests().unwrap().state.entries,
                1
            );
        }
        // The next append cuts the torn tail and is read back whole.
        store
            .append_transition(id, &transition(JobState::Cancelled))
            .unwrap();
        let record = store.load(id).unwrap();
        let states: Vec<JobState> = record.transitions.iter().map(|t| t.state).collect();
        assert_eq!(states, [JobState::Submitted, JobState::Cancelled]);
        assert!(
            fs::read(store.journal_path(id))
                .unwrap()
                .starts_with(&intact)
        );
    }

    #[test]
    fn an_edited_or_garbage_record_is_corrupt_never_misread() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        let _lease = store.create_job(&meta(id), b"{}").unwrap();
        for state in [JobState::Submitted, JobState::Running, JobState::Failed] {
            store.append_transition(id, &transition(state)).unwrap();
        }
        let whole = fs::read_to_string(store.journal_path(id)).unwrap();
        let edited = whole.replace("\"FAILED\"", "\"PASSED\"");
        assert_ne!(edited, whole);
        let mut garbage = whole.clone().into_bytes();
        garbage.extend_from_slice(b"\0\0\0\0\n");
        for bytes in [edited.into_bytes(), garbage] {
            fs::write(store.journal_path(id), &bytes).unwrap();
            let error = store.load(id).unwrap_err();
            assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
            assert!(matches!(store.history(id), Err(StateError::Corrupt { .. })));
            let error = store
                .append_transition(id, &transition(JobState::Succeeded))
                .unwrap_err();
            assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
            assert_eq!(fs::read(store.journal_path(id)).unwrap(), bytes);
        }
    }

    /// A job as an older version stored it: `state.json` and `steps.json`, no journal.
    fn old_layout_job(store: &FileStore, id: JobId, transitions: &[JobState]) {
        let job = store.job_dir(id);
        fs::create_dir_all(job.join("logs")).unwrap();
        fs::write(
            job.join("job.json"),
            serde_json::to_vec_pretty(&meta(id)).unwrap(),
        )
        .unwrap();
        fs::write(job.join("spec.yaml"), b"{}").unwrap();
        fs::write(job.join("lease"), b"").unwrap();
        let entries: Vec<Vec<u8>> = transitions
            .iter()
            .map(|state| serde_json::to_vec(&transition(*state)).unwrap())
            .collect();
        let entries: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        fs::write(job.join("state.json"), array_bytes(&entries)).unwrap();
        fs::write(job.join("steps.json"), b"[]\n").unwrap();
    }

    #[test]
    fn jobs_of_an_older_version_are_read_and_appended_to_as_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        old_layout_job(&store, id, &[JobState::Submitted, JobState::Running]);
        let record = store.load(id).unwrap();
        assert_eq!(record.state(), JobState::Running);
        let before = store.history(id).unwrap();
        assert_eq!(
            before.state,
            fs::read(store.job_dir(id).join("state.json")).unwrap()
        );
        let step = StepRecord::skipped("a", "local");
        let done = transition(JobState::Succeeded);
        let digests = store
            .append_history(
                id,
                &[HistoryEntry::Step(&step), HistoryEntry::Transition(&done)],
            )
            .unwrap();
        assert!(!store.journal_path(id).exists(), "no journal is started");
        let after = store.history(id).unwrap();
        assert_eq!(digests.last().unwrap(), &after.digests().unwrap());
        assert!(
            after
                .state
                .starts_with(&before.state[..before.state.len() - 3])
        );
        assert_eq!(store.load(id).unwrap().steps, [step]);
        assert!(matches!(
            store.append_transition(id, &transition(JobState::Running)),
            Err(StateError::IllegalTransition { .. })
        ));
    }

    #[test]
    fn a_journal_has_the_digests_its_entries_would_have_as_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let id = JobId::now_v7();
        let _lease = store.create_job(&meta(id), b"{}").unwrap();
        let submitted = transition(JobState::Submitted);
        store.append_transition(id, &submitted).unwrap();
        let step = StepRecord::skipped("a", "local");
        let digest = store.append_step(id, &step).unwrap();
        let history = store.history(id).unwrap();
        let expected = HistoryBytes {
            state: array_bytes(&[&serde_json::to_vec(&submitted).unwrap()]),
            steps: array_bytes(&[&serde_json::to_vec(&step).unwrap()]),
        };
        assert_eq!(
            (history.state.clone(), history.steps.clone()),
            (expected.state, expected.steps)
        );
        assert_eq!(digest, history.digests().unwrap());
    }

    #[test]
    fn the_index_lists_pages_and_is_built_for_an_older_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        // An older root: jobs, no index.
        let old: Vec<JobId> = (0..3).map(|_| JobId::now_v7()).collect();
        for id in &old {
            old_layout_job(&store, *id, &[JobState::Submitted, JobState::Denied]);
        }
        assert!(!dir.path().join(INDEX).exists());
        let page = store
            .list_page(&PageQuery {
                limit: 2,
                ..PageQuery::default()
            })
            .unwrap();
        let ids: Vec<JobId> = page.jobs.iter().map(|r| r.meta.job_id).collect();
        assert_eq!(ids, [old[2], old[1]]);
        assert_eq!(page.next_cursor, Some(old[1]));
        let index = fs::read(dir.path().join(INDEX)).unwrap();
        assert_eq!(index.len(), 4 * INDEX_LINE, "a header and three jobs");
        // New jobs are appended to it.
        let new = JobId::now_v7();
        drop(store.create_job(&meta(new), b"{}").unwrap());
        assert_eq!(
            fs::read(dir.path().join(INDEX)).unwrap().len(),
            5 * INDEX_LINE
        );
        let page = store
            .list_page(&PageQuery {
                before: Some(old[2]),
                limit: 1,
                ..PageQuery::default()
            })
            .unwrap();
        assert_eq!(page.jobs[0].meta.job_id, old[1]);
        assert_eq!(store.count_older(old[2]).unwrap(), 2);
        assert_eq!(store.count_older(new).unwrap(), 3);
        // A pruned job is skipped, and no longer counted.
        store.remove_job(old[1]).unwrap();
        let all = store.list_page(&PageQuery::default()).unwrap();
        let ids: Vec<JobId> = all.jobs.iter().map(|r| r.meta.job_id).collect();
        assert_eq!(ids, [new, old[2], old[0]]);
        assert_eq!(store.count_older(new).unwrap(), 2);
        // A line torn by a crash is cut before the next one.
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(INDEX))
            .unwrap();
        io::Write::write_all(&mut file, b"01a2").unwrap();
        let last = JobId::now_v7();
        drop(store.create_job(&meta(last), b"{}").unwrap());
        let page = store
            .list_page(&PageQuery {
                limit: 1,
                ..PageQuery::default()
            })
            .unwrap();
        assert_eq!(page.jobs[0].meta.job_id, last);
        assert_eq!(page.next_cursor, Some(last));
        // A job in place whose line lost only its newline stays listed once the next job is.
        let path = dir.path().join(INDEX);
        let index = fs::read(&path).unwrap();
        fs::write(&path, &index[..index.len() - 1]).unwrap();
        let after = JobId::now_v7();
        drop(store.create_job(&meta(after), b"{}").unwrap());
        let all = store.list_page(&PageQuery::default()).unwrap();
        let ids: Vec<JobId> = all.jobs.iter().map(|r| r.meta.job_id).collect();
        assert_eq!(ids, [after, last, new, old[2], old[0]]);
    }

    #[test]
    fn a_filtered_page_looks_at_no_more_jobs_than_allowed_and_ends_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let jobs: Vec<JobId> = (0..5).map(|_| JobId::now_v7()).collect();
        for (i, id) in jobs.iter().enumerate() {
            let end = if i == 0 {
                JobState::Succeeded
            } else {
                JobState::Denied
            };
            old_layout_job(&store, *id, &[JobState::Submitted, end]);
        }
        let mut query = PageQuery {
            limit: 10,
            max_examined: 2,
            ..PageQuery::default()
        };
        query.filter.states = vec![JobState::Succeeded];
        // Newest first: two jobs looked at, none matching, the next page after the second.
        let mut cursors = Vec::new();
        let found = loop {
            let page = store.list_page(&query).unwrap();
            if !page.jobs.is_empty() {
                break page;
            }
            cursors.push(page.next_cursor.expect("a short page has a cursor"));
            query.before = page.next_cursor;
        };
        assert_eq!(cursors, [jobs[3], jobs[1]]);
        assert_eq!(found.jobs.len(), 1);
        assert_eq!(found.jobs[0].meta.job_id, jobs[0]);
        assert_eq!(found.next_cursor, None, "nothing older");
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
