//! The durable record of the jobs a server accepted and has not finished: one append-only file,
//! `<state root>/server/queue.log`, of `+<job id>` lines (accepted; durable before the `201`)
//! and `-<job id>` lines (ended and torn down).
//!
//! It replaces a marker file per job (`server/queue/<job id>`): creating and removing a file
//! per job cost two fsyncs and an inode each, and ext4 spends real CPU time finding a free inode
//! among recently deleted ones. Here acceptances that arrive together share one `fdatasync`
//! (group commit), and an end is appended without one: an end lost in a crash only means the
//! next start looks at a job that has ended, and forgets it. Each start rewrites the file with
//! only the jobs still open (atomically: a temporary file, fsync, rename), and so does a running
//! server once the file has more than [`COMPACT_AFTER`] lines and four times as many as there
//! are open jobs, so the file stays about as small as the queue however long the server runs.

use std::collections::{BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use maestro_core::JobId;
use maestro_core::group_commit::GroupCommit;

/// Lines a running server's log may hold before it is rewritten with the open jobs alone.
const COMPACT_AFTER: usize = 4096;

/// The open file and what it holds.
#[derive(Default)]
struct Appender {
    file: Option<File>,
    /// The jobs added and not removed, once known (after [`QueueLog::rewrite`]).
    open: Option<BTreeSet<JobId>>,
    /// Lines in the file.
    lines: usize,
}

/// `server/queue.log`.
pub(crate) struct QueueLog {
    path: PathBuf,
    file: Mutex<Appender>,
    /// Appends numbered, and synced in groups.
    sync: GroupCommit,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl QueueLog {
    /// The log of the server whose directory is `server_dir` (`<state root>/server`).
    pub(crate) fn new(server_dir: &Path) -> Self {
        Self {
            path: server_dir.join("queue.log"),
            file: Mutex::new(Appender::default()),
            sync: GroupCommit::default(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Append `line` (`+` or `-`, then `job_id`), opening (and, the first time, creating) the
    /// file; the append's number.
    fn append(&self, line: &[u8], job_id: JobId, added: bool) -> io::Result<u64> {
        let mut appender = lock(&self.file);
        let file = &mut appender.file;
        if file.is_none() {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            crate::create_private_dir(dir)?;
            let created = !self.path.exists();
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if created {
                crate::sync_dir(dir)?;
            }
            *file = Some(opened);
        }
        let Some(open) = file.as_mut() else {
            return Err(io::Error::other("the queue log is not open"));
        };
        // One write per line: appends of other threads never split it.
        open.write_all(line)?;
        appender.lines += 1;
        if let Some(open) = appender.open.as_mut() {
            if added {
                open.insert(job_id);
            } else {
                open.remove(&job_id);
            }
        }
        let number = self.sync.written();
        // Only after an end (the file then holds a job that no longer needs a line), so that a
        // submission never waits for a rewrite nor fails of one.
        let oversized = !added
            && appender.lines > COMPACT_AFTER
            && appender
                .open
                .as_ref()
                .is_some_and(|open| appender.lines > 4 * open.len());
        if oversized {
            let open: Vec<JobId> = appender.open.iter().flatten().copied().collect();
            // Under the file's lock: no append falls between the copy and the rename. The new
            // file is durable before the rename, so it holds every append made so far durably.
            // Failing, the old file stays, and grows until the next start.
            if let Err(error) = self.replace(&mut appender, &open) {
                tracing::warn!(%error, path = %self.path.display(), "cannot rewrite the queue log; it is rewritten at the next start");
            }
        }
        Ok(number)
    }

    /// Make append `number` durable, with one `fdatasync` for every append written meanwhile.
    fn sync_through(&self, number: u64) -> io::Result<()> {
        self.sync.sync_through(number, || {
            let opened = lock(&self.file).file.as_ref().map(File::try_clone);
            match opened {
                Some(file) => file?.sync_data(),
                // No open file: an end rewrote the log since this append was written (appends
                // reopen it). The rewrite, durable, holds every line written before it and
                // said so; a rewrite that failed half-way did not, and that is this error.
                None if self.sync.is_durable(number) => Ok(()),
                None => Err(io::Error::other(
                    "the queue log was rewritten and the rewrite did not complete",
                )),
            }
        })
    }

    /// Record `job_id` as accepted, durably.
    pub(crate) fn add(&self, job_id: JobId) -> io::Result<()> {
        let number = self.append(
            format!("+{}\n", job_id.hyphenated()).as_bytes(),
            job_id,
            true,
        )?;
        self.sync_through(number)
    }

    /// Record that `job_id` has ended (not synced: see the module's comment).
    pub(crate) fn remove(&self, job_id: JobId) {
        let line = format!("-{}\n", job_id.hyphenated());
        if let Err(error) = self.append(line.as_bytes(), job_id, false) {
            tracing::warn!(%job_id, %error, path = %self.path.display(), "cannot record the end of a queued job; the next start forgets it");
        }
    }

    /// The jobs added and not removed, in the order they were added.
    pub(crate) fn open_jobs(&self) -> io::Result<Vec<JobId>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut order = Vec::new();
        let mut ended = HashSet::new();
        for line in text.lines() {
            // A line cut short by a crash does not parse, and is skipped.
            let (sign, id) = line.split_at(line.len().min(1));
            let Ok(job_id) = JobId::try_parse(id) else {
                continue;
            };
            match sign {
                "+" => order.push(job_id),
                "-" => {
                    ended.insert(job_id);
                }
                _ => {}
            }
        }
        let mut seen = HashSet::new();
        order.retain(|job_id| !ended.contains(job_id) && seen.insert(*job_id));
        Ok(order)
    }

    /// Rewrite the file with `jobs` alone, atomically (at start-up); from then on the log
    /// knows which jobs are open and rewrites itself when it grows.
    pub(crate) fn rewrite(&self, jobs: &[JobId]) -> io::Result<()> {
        let mut appender = lock(&self.file);
        self.replace(&mut appender, jobs)
    }

    /// Replace the file by one that holds `jobs` alone (the caller holds the file's lock).
    fn replace(&self, appender: &mut Appender, jobs: &[JobId]) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::create_private_dir(dir)?;
        let staging = dir.join("queue.log.new");
        let mut text = String::with_capacity(jobs.len() * 38);
        for job_id in jobs {
            text.push('+');
            text.push_str(&job_id.hyphenated().to_string());
            text.push('\n');
        }
        {
            let mut file = File::create(&staging)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&staging, &self.path)?;
        // From the rename on, appends go to the new file whatever the directory's sync says.
        *appender = Appender {
            file: None,
            open: Some(jobs.iter().copied().collect()),
            lines: jobs.len(),
        };
        crate::sync_dir(dir)?;
        // The new file, durable, holds what every append so far left open: an append waiting
        // for its sync (whose file is gone) is durable now.
        self.sync.all_durable();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn open_jobs_are_those_added_and_not_removed_in_order_also_after_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let log = QueueLog::new(&dir.path().join("server"));
        assert!(log.open_jobs().unwrap().is_empty(), "no file yet");
        let jobs: Vec<JobId> = (0..4).map(|_| JobId::now_v7()).collect();
        for job_id in &jobs {
            log.add(*job_id).unwrap();
        }
        log.remove(jobs[1]);
        assert_eq!(log.open_jobs().unwrap(), [jobs[0], jobs[2], jobs[3]]);
        // A crash in the middle of an append leaves a cut line: it is skipped.
        let mut file = OpenOptions::new().append(true).open(log.path()).unwrap();
        file.write_all(b"-0192").unwrap();
        drop(file);
        let reopened = QueueLog::new(&dir.path().join("server"));
        assert_eq!(reopened.open_jobs().unwrap(), [jobs[0], jobs[2], jobs[3]]);
        reopened.rewrite(&[jobs[2], jobs[3]]).unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        reopened.remove(jobs[2]);
        assert_eq!(reopened.open_jobs().unwrap(), [jobs[3]]);
    }

    #[test]
    fn concurrent_adds_are_all_durable_and_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(QueueLog::new(dir.path()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    (0..25)
                        .map(|_| {
                            let job_id = JobId::now_v7();
                            log.add(job_id).unwrap();
                            job_id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut added: Vec<JobId> = threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        let mut open = log.open_jobs().unwrap();
        added.sort_unstable();
        open.sort_unstable();
        assert_eq!(open, added);
        let (written, synced, _) = log.sync.numbers();
        assert_eq!((written, synced), (200, 200));
    }

    #[test]
    fn a_running_log_is_rewritten_with_the_open_jobs_once_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let log = QueueLog::new(dir.path());
        log.rewrite(&[]).unwrap();
        let kept = JobId::now_v7();
        log.add(kept).unwrap();
        for _ in 0..COMPACT_AFTER {
            let job_id = JobId::now_v7();
            log.add(job_id).unwrap();
            log.remove(job_id);
        }
        let lines = std::fs::read_to_string(log.path()).unwrap().lines().count();
        assert!(lines < COMPACT_AFTER / 2, "{lines} lines");
        assert_eq!(log.open_jobs().unwrap(), [kept]);
        let later = JobId::now_v7();
        log.add(later).unwrap();
        assert_eq!(log.open_jobs().unwrap(), [kept, later]);
    }

    #[test]
    fn adds_racing_a_rewrite_all_succeed_and_stay_open() {
        // An add whose line went in just before another thread's end rewrote the file must
        // not find the log closed when it syncs: the rewrite made its line durable.
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(QueueLog::new(dir.path()));
        log.rewrite(&[]).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for round in 0..COMPACT_AFTER / 2 {
                        let job_id = JobId::now_v7();
                        log.add(job_id).unwrap();
                        if round % 64 == 0 {
                            kept.push(job_id);
                        } else {
                            log.remove(job_id);
                        }
                    }
                    kept
                })
            })
            .collect();
        let mut kept: Vec<JobId> = threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        let lines = std::fs::read_to_string(log.path()).unwrap().lines().count();
        assert!(
            lines < 2 * COMPACT_AFTER,
            "the log was rewritten: {lines} lines"
        );
        let mut open = log.open_jobs().unwrap();
        kept.sort_unstable();
        open.sort_unstable();
        assert_eq!(open, kept);
    }
}
