//! Job control from another process: which process drives a job, and finding a job by a prefix
//! of its id.
//!
//! `mc cancel` in a second terminal must reach the `mc submit` that runs the job, and nothing
//! else: a pid alone can be reused by an unrelated process once the driver is gone. So the job's
//! record names its driver by pid, start time (clock ticks after boot, from `/proc`) and the
//! machine's boot id, and the driver is believed running only while all three still match.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::JobId;
use crate::audit::{AuditError, AuditLog, AuditRecord};
use crate::state::{JobState, StateError, StateStore};

/// The process that drives a job (the `mc submit` running it), recorded when the job is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Driver {
    /// Its process id.
    pub pid: u32,
    /// When it started, in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
    /// The boot it ran in (`/proc/sys/kernel/random/boot_id`): a record from before a reboot
    /// never names a process of this one.
    pub boot_id: String,
}

impl Driver {
    /// This process, when `/proc` can say when it started.
    pub fn current() -> Option<Self> {
        let pid = std::process::id();
        Some(Self {
            pid,
            start_time: start_time(Path::new("/proc/self/stat"))?,
            boot_id: boot_id()?,
        })
    }

    /// Whether the recorded process still runs: same boot, and the process with that pid
    /// started at the recorded time (a reused pid has a later start time).
    pub fn is_running(&self) -> bool {
        boot_id().as_deref() == Some(self.boot_id.as_str())
            && start_time(&Path::new("/proc").join(self.pid.to_string()).join("stat"))
                == Some(self.start_time)
    }
}

/// Field 22 of a `/proc/<pid>/stat` file. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its last `)`.
fn start_time(stat: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let rest = text.get(text.rfind(')')? + 1..)?;
    // After ")": state is field 3, so start time (22) is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(text.trim().to_owned()).filter(|id| !id.is_empty())
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job had already ended, in this state: nothing to do.
    AlreadyEnded(JobState),
    /// The job is unfinished but no process drives it any more (its `mc` was killed): nothing
    /// can be signalled; `mc gc` settles it.
    Abandoned,
    /// The driver was asked to cancel the job (SIGINT, as Ctrl-C in its terminal).
    Requested {
        /// The driver's pid.
        pid: u32,
    },
}

/// Why a cancel request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// The job's record could not be read.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The request could not be put on the audit record; nothing was signalled.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The record does not say which process drives the job, or that process is no longer the
    /// one recorded; nothing was signalled.
    #[error(
        "job {job_id} is running, but the process that runs it cannot be identified ({why}); nothing was signalled"
    )]
    Unidentified {
        /// The job.
        job_id: JobId,
        /// Why not.
        why: String,
    },
    /// A server runs the job (its record names no process: a server's jobs are stopped
    /// through the server, never by a signal); nothing was signalled.
    #[error(
        "job {job_id} is run by a Maestro server, which no signal reaches; nothing was signalled"
    )]
    ServerJob {
        /// The job.
        job_id: JobId,
    },
    /// The driver could not be signalled (another user's job, for example).
    #[error("cannot signal process {pid}, which runs job {job_id}: {source}")]
    Signal {
        /// The job.
        job_id: JobId,
        /// The driver's pid.
        pid: u32,
        /// The cause.
        source: std::io::Error,
    },
}

/// Asks the process that drives `job_id` to cancel it, exactly as Ctrl-C in its own terminal
/// would: SIGINT to that process, after an audit record naming `by`, who asked. The process is
/// held by a pidfd and its start time checked *after* the pidfd is open, so a pid reused by
/// another process between the check and the signal is never signalled.
pub fn request_cancel(
    store: &dyn StateStore,
    audit: &AuditLog,
    job_id: JobId,
    by: &str,
) -> Result<CancelOutcome, CancelError> {
    let record = store.load(job_id)?;
    let state = record.state();
    if state.is_terminal() {
        return Ok(CancelOutcome::AlreadyEnded(state));
    }
    if !store.is_live(job_id)? {
        return Ok(CancelOutcome::Abandoned);
    }
    let unidentified = |why: &str| CancelError::Unidentified {
        job_id,
        why: why.to_owned(),
    };
    let driver = record
        .meta
        .driver
        .as_ref()
        .ok_or(CancelError::ServerJob { job_id })?;
    let pid = i32::try_from(driver.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| unidentified("its record names no valid pid"))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|_| unidentified("the recorded process is gone"))?;
    if !driver.is_running() {
        return Err(unidentified(
            "the recorded pid now belongs to another process",
        ));
    }
    audit.append(&AuditRecord::new(
        Some(job_id),
        &record.meta.trace_id,
        record.meta.owner.as_deref(),
        "job.cancel_requested",
        serde_json::json!({ "by": by, "driver_pid": driver.pid }),
    ))?;
    rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::INT).map_err(|errno| {
        CancelError::Signal {
            job_id,
            pid: driver.pid,
            source: errno.into(),
        }
    })?;
    tracing::info!(%job_id, pid = driver.pid, by, "asked the job's process to cancel it");
    Ok(CancelOutcome::Requested { pid: driver.pid })
}

/// Why a job could not be found from what a person typed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The text cannot be (a prefix of) a job id.
    #[error("{text:?} is not a job id or a prefix of one")]
    NotAJobId {
        /// The text, cut to 80 characters.
        text: String,
    },
    /// No job's id starts with the prefix.
    #[error("no job id starts with {prefix:?}")]
    NoMatch {
        /// The prefix.
        prefix: String,
    },
    /// Several jobs' ids start with the prefix.
    #[error("{prefix:?} names {count} jobs ({}); give more of the id", shown(candidates, *count))]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// How many jobs match.
        count: usize,
        /// Up to five of them, newest first.
        candidates: Vec<JobId>,
    },
    /// The store could not list its jobs.
    #[error(transparent)]
    Store(#[from] StateError),
}

fn shown(candidates: &[JobId], count: usize) -> String {
    let mut text: Vec<String> = candidates.iter().map(ToString::to_string).collect();
    if count > candidates.len() {
        text.push("…".to_owned());
    }
    text.join(", ")
}

/// The job that `text` names: a whole job id, or any prefix of one (with or without its
/// hyphens, any case) that only one job's id starts with, as with docker and git. Only the
/// parsed id is ever used, never the text, so `../x` can never name a path.
pub fn find_job(store: &dyn StateStore, text: &str) -> Result<JobId, LookupError> {
    if let Ok(job_id) = JobId::try_parse(text) {
        return Ok(job_id);
    }
    let prefix = text.to_ascii_lowercase();
    if prefix.is_empty()
        || prefix.len() > 36
        || !prefix.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        return Err(LookupError::NotAJobId {
            text: text.chars().take(80).collect(),
        });
    }
    let simple = prefix.replace('-', "");
    let hyphenated = prefix.contains('-');
    let matches: Vec<JobId> = store
        .list()?
        .into_iter()
        .filter(|job_id| {
            if hyphenated {
                job_id.hyphenated().to_string().starts_with(&prefix)
            } else {
                job_id.simple().to_string().starts_with(&simple)
            }
        })
        .collect();
    match matches.as_slice() {
        [] => Err(LookupError::NoMatch { prefix }),
        [job_id] => Ok(*job_id),
        _ => Err(LookupError::Ambiguous {
            prefix,
            count: matches.len(),
            candidates: matches.into_iter().take(5).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FileStore;
    use crate::state::JobMeta;
    use crate::trace::TraceId;

    #[test]
    fn this_process_is_running_and_a_changed_record_is_not() {
        let me = Driver::current().expect("/proc says when this process started");
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_running());
        let reused = Driver {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!reused.is_running(), "a pid with another start time");
        let rebooted = Driver {
            boot_id: "another-boot".to_owned(),
            ..me.clone()
        };
        assert!(!rebooted.is_running(), "a record from another boot");
        let gone = Driver {
            pid: u32::MAX - 1,
            ..me
        };
        assert!(!gone.is_running());
    }

    fn store_with(ids: &[&str]) -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        for id in ids {
            let job_id = JobId::parse_str(id).unwrap();
            let meta = JobMeta {
                job_id,
                name: "j".to_owned(),
                owner: None,
                environment: None,
                trace_id: TraceId::parse("t").unwrap(),
                submitted_at: "2026-11-30T00:00:00Z".to_owned(),
                spec_file: "spec.json".to_owned(),
                source: "j.json".to_owned(),
                driver: None,
            };
            drop(store.create_job(&meta, b"{}").unwrap());
        }
        (dir, store)
    }

    #[test]
    fn prefixes_find_one_job_or_say_why_not() {
        let a = "0192f0c1-aaaa-7bbb-8ccc-123456789abc";
        let b = "0192f0c1-bbbb-7bbb-8ccc-123456789abc";
        let (_dir, store) = store_with(&[a, b]);
        let a_id = JobId::parse_str(a).unwrap();
        assert_eq!(find_job(&store, a).unwrap(), a_id);
        assert_eq!(find_job(&store, "0192f0c1-a").unwrap(), a_id);
        assert_eq!(
            find_job(&store, "0192F0C1A").unwrap(),
            a_id,
            "no hyphens, any case"
        );
        let ambiguous = find_job(&store, "0192f0c1").unwrap_err();
        assert!(matches!(ambiguous, LookupError::Ambiguous { count: 2, .. }));
        assert!(
            ambiguous.to_string().contains("give more of the id"),
            "{ambiguous}"
        );
        assert!(matches!(
            find_job(&store, "ffff"),
            Err(LookupError::NoMatch { .. })
        ));
        for bad in ["", "../etc", "0192f0c1/..", "xyz", &"a".repeat(40)] {
            assert!(
                matches!(find_job(&store, bad), Err(LookupError::NotAJobId { .. })),
                "{bad:?}"
            );
        }
    }
}
