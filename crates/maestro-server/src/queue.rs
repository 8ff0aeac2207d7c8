//! Where the server keeps its queue durably: the [`JobQueue`] trait, and [`FileQueue`], one
//! marker file per job in the state root (the file store's server).
//!
//! A queue is *local* (the file store: the jobs a server accepted are its own to run, and a
//! restart of it picks them up) or *shared* (a database: every server on it takes jobs from
//! one queue, each job claimed by exactly one, and a dead server's jobs are settled by
//! another once their leases expire).

use std::path::{Path, PathBuf};
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::state::StateError;

/// The durable record of the jobs a server accepted and that have not ended.
pub trait JobQueue: Send + Sync {
    /// Where the queue is, for messages.
    fn describe(&self) -> String;
    /// Note an accepted job, durably, before its `201`.
    fn mark(&self, job_id: JobId) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// Forget a job that ended.
    fn unmark(&self, job_id: JobId);
    /// The jobs noted and not forgotten, oldest first.
    fn marked(&self) -> Vec<JobId>;
    /// Whether every server on this queue runs its jobs (see the module's docs).
    fn is_shared(&self) -> bool {
        false
    }
    /// A shared queue: take a waiting job nobody holds for this server; its lease goes to the
    /// runner's next `reload` of it. `None` when nothing waits.
    fn claim(&self) -> Result<Option<JobId>, StateError> {
        Ok(None)
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
    /// A shared queue: how often to look for jobs a dead server left.
    fn settle_every(&self) -> Option<Duration> {
        None
    }
}

/// A marker file per accepted job, `<state root>/server/queue/<job_id>`, written before the
/// job's `201` and removed once the job has ended. Job ids are version 7 UUIDs, so the
/// markers' names sort in order of submission.
pub struct FileQueue {
    dir: PathBuf,
}

impl FileQueue {
    /// The queue of the server of `state_root`.
    pub fn new(state_root: &Path) -> Self {
        Self {
            dir: state_root.join("server").join("queue"),
        }
    }
}

impl JobQueue for FileQueue {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn mark(&self, job_id: JobId) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(job_id.hyphenated().to_string());
        std::fs::File::create(&path)?.sync_all()?;
        crate::sync_dir(&self.dir)?;
        Ok(())
    }

    fn unmark(&self, job_id: JobId) {
        let _ = std::fs::remove_file(self.dir.join(job_id.hyphenated().to_string()));
    }

    fn marked(&self) -> Vec<JobId> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<JobId> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| JobId::try_parse(&entry.file_name().to_string_lossy()).ok())
            .collect();
        ids.sort_unstable();
        ids
    }
}
