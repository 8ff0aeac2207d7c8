//! Where the server keeps its queue durably: the [`JobQueue`] trait, and [`FileQueue`], the
//! append-only queue log in the state root (the file store's server).
//!
//! A queue is *local* (the file store: the jobs a server accepted are its own to run, and a
//! restart of it picks them up) or *shared* (a database: every server on it takes jobs from
//! one queue, each job claimed by exactly one, and a dead server's jobs are settled by
//! another once their leases expire).

use std::path::{Path, PathBuf};
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::state::StateError;

use crate::queue_log::QueueLog;

/// Why the queue could not be written or read.
pub type QueueError = Box<dyn std::error::Error + Send + Sync>;

/// The durable record of the jobs a server accepted and that have not ended.
pub trait JobQueue: Send + Sync {
    /// Where the queue is, for messages.
    fn describe(&self) -> String;
    /// Note an accepted job, durably, before its `201`.
    fn mark(&self, job_id: JobId) -> Result<(), QueueError>;
    /// Forget a job that ended.
    fn unmark(&self, job_id: JobId);
    /// The jobs noted and not forgotten, oldest first.
    fn marked(&self) -> Result<Vec<JobId>, QueueError>;
    /// Forget every job but `open` (those that have not ended). By default each other job is
    /// [`unmark`](Self::unmark)ed.
    fn keep_only(&self, open: &[JobId]) -> Result<(), QueueError> {
        let open: std::collections::HashSet<&JobId> = open.iter().collect();
        for job_id in self.marked()? {
            if !open.contains(&job_id) {
                self.unmark(job_id);
            }
        }
        Ok(())
    }
    /// Whether every server on this queue runs its jobs (see the module's docs).
    fn is_shared(&self) -> bool {
        false
    }
    /// A shared queue: take a waiting job nobody holds for this server; its lease goes to the
    /// runner's next `reload` of it. `None` when nothing waits.
    fn claim(&self) -> Result<Option<JobId>, StateError> {
        Ok(None)
    }
    /// A shared queue: let go of the claim [`claim`](Self::claim) took on a job this server
    /// will not run after all.
    fn release(&self, job_id: JobId) {
        let _ = job_id;
    }
    /// A shared queue: take this waiting job for this server if nobody holds it (to cancel it),
    /// as [`claim`](Self::claim) does; `false` when it is not waiting or someone holds it.
    fn take(&self, job_id: JobId) -> Result<bool, StateError> {
        let _ = job_id;
        Ok(false)
    }
    /// A shared queue: whether some job is unfinished and held by nobody (its server died), so
    /// that garbage collection has something to settle.
    fn has_abandoned(&self) -> Result<bool, StateError> {
        Ok(false)
    }
    /// A shared queue: how many jobs of `owner` wait in it for a slot, whichever server
    /// accepted them (for `--queue-limit-per-owner`); `None` for a queue of this server alone,
    /// whose scheduler counts its own.
    fn waiting_of(&self, owner: &str) -> Result<Option<usize>, QueueError> {
        let _ = owner;
        Ok(None)
    }
    /// A shared queue: how often to look for jobs a dead server left.
    fn settle_every(&self) -> Option<Duration> {
        None
    }
}

/// The file store's queue: the append-only `<state root>/server/queue.log`
/// (`QueueLog`), plus the marker files (`server/queue/<job_id>`) of servers from before the
/// log, which a start takes over.
pub struct FileQueue {
    log: QueueLog,
    legacy_dir: PathBuf,
}

impl FileQueue {
    /// The queue of the server of `state_root`.
    pub fn new(state_root: &Path) -> Self {
        let server_dir = state_root.join("server");
        Self {
            log: QueueLog::new(&server_dir),
            legacy_dir: server_dir.join("queue"),
        }
    }
}

impl JobQueue for FileQueue {
    fn describe(&self) -> String {
        self.log.path().display().to_string()
    }

    fn mark(&self, job_id: JobId) -> Result<(), QueueError> {
        Ok(self.log.add(job_id)?)
    }

    fn unmark(&self, job_id: JobId) {
        self.log.remove(job_id);
    }

    fn marked(&self) -> Result<Vec<JobId>, QueueError> {
        let mut ids = self.log.open_jobs()?;
        if let Ok(entries) = std::fs::read_dir(&self.legacy_dir) {
            ids.extend(
                entries.filter_map(Result::ok).filter_map(|entry| {
                    JobId::try_parse(&entry.file_name().to_string_lossy()).ok()
                }),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Rewrites the log with `open` alone, atomically, and removes the markers of an older
    /// server. Only at start-up, before anything is appended: the log is not open yet.
    fn keep_only(&self, open: &[JobId]) -> Result<(), QueueError> {
        self.log.rewrite(open)?;
        if self.legacy_dir.exists() {
            std::fs::remove_dir_all(&self.legacy_dir)?;
        }
        Ok(())
    }
}
