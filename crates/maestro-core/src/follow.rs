//! A job's step logs in the spec's order, read once or followed to their end: the rules `mc logs`
//! and the server's log stream share.
//!
//! Following is a state machine ([`StepFollow`]) the caller polls and waits between polls as it
//! likes (a thread's sleep, a task's timer), so the same rules serve a blocking command and an
//! async server. The rule for the end of a step: its log is complete once its result is
//! recorded (the runner records a step only after its log is synced), or once the job is over
//! (ended, or its driver died); whatever was written up to that moment is read by one more read
//! after the check, never less.

use std::io::{self, Read};
use std::time::Duration;

use crate::JobId;
use crate::spec::SpecFormat;
use crate::state::{JobRecord, LogReader, StateError, StateStore};

/// How long a follower waits before it polls again when nothing new was written.
pub const POLL: Duration = Duration::from_millis(100);

/// How much of a log one poll returns at most.
const CHUNK: usize = 64 * 1024;

/// Why a job's logs cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The stored spec, which says which steps exist, no longer parses.
    #[error("stored spec of job {job_id} no longer parses: {message}")]
    Spec {
        /// The job.
        job_id: JobId,
        /// The parser's message.
        message: String,
    },
    /// A step's log could not be read.
    #[error("cannot read the log of step {step:?} of job {job_id}: {source}")]
    Read {
        /// The job.
        job_id: JobId,
        /// The step.
        step: String,
        /// The cause.
        source: io::Error,
    },
}

/// The step names of a stored job, in the spec's order: the stored spec is the authority on
/// which steps exist.
pub fn step_names(store: &dyn StateStore, record: &JobRecord) -> Result<Vec<String>, FollowError> {
    let job_id = record.meta.job_id;
    let spec_bytes = store.spec(job_id)?;
    let spec = crate::spec::parse(
        &spec_bytes,
        SpecFormat::from_file_name(&record.meta.spec_file),
    )
    .map_err(|error| FollowError::Spec {
        job_id,
        message: error.to_string(),
    })?;
    Ok(spec.steps.into_iter().map(|step| step.name).collect())
}

/// Whether nothing more will be written for the job: it ended, or no live process drives it.
pub fn is_over(store: &dyn StateStore, job_id: JobId) -> Result<bool, StateError> {
    let record = store.load(job_id)?;
    Ok(record.state().is_terminal() || store.is_abandoned(&record)?)
}

/// Whether the log of `step` is complete: its result is recorded, or the job is over.
pub fn step_is_done(store: &dyn StateStore, job_id: JobId, step: &str) -> Result<bool, StateError> {
    let record = store.load(job_id)?;
    Ok(record.steps.iter().any(|done| done.name == step)
        || record.state().is_terminal()
        || store.is_abandoned(&record)?)
}

/// What one poll of a followed step found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// More of the log, in order (not necessarily whole lines).
    Bytes(Vec<u8>),
    /// Nothing new yet: poll again after a while ([`POLL`]).
    Wait,
    /// The log is complete and was all returned; `ran` says whether the step had a log at all
    /// (a step that never started has none).
    Done {
        /// Whether the step's log existed.
        ran: bool,
    },
}

/// One step's log, followed to its end.
pub struct StepFollow {
    job_id: JobId,
    step: String,
    reader: Option<LogReader>,
    /// The step was seen done: what remains to read is the last of its log.
    finishing: bool,
}

impl StepFollow {
    /// A follower of `step` of `job_id`, from the start of its log.
    pub fn new(job_id: JobId, step: &str) -> Self {
        Self {
            job_id,
            step: step.to_owned(),
            reader: None,
            finishing: false,
        }
    }

    /// Read on: the next bytes of the log, or whether to wait or stop.
    pub fn poll(&mut self, store: &dyn StateStore) -> Result<Event, FollowError> {
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => match store.open_step_log(self.job_id, &self.step)? {
                Some(reader) => self.reader.insert(reader),
                None if step_is_done(store, self.job_id, &self.step)? => {
                    return Ok(Event::Done { ran: false });
                }
                None => return Ok(Event::Wait),
            },
        };
        loop {
            let mut buffer = vec![0u8; CHUNK];
            let count =
                read_some(reader.as_mut(), &mut buffer).map_err(|source| FollowError::Read {
                    job_id: self.job_id,
                    step: self.step.clone(),
                    source,
                })?;
            if count > 0 {
                buffer.truncate(count);
                return Ok(Event::Bytes(buffer));
            }
            if self.finishing {
                return Ok(Event::Done { ran: true });
            }
            if !step_is_done(store, self.job_id, &self.step)? {
                return Ok(Event::Wait);
            }
            // Done before this read: it gets everything, to the end.
            self.finishing = true;
        }
    }
}

fn read_some(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buffer) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Every byte of a step's log recorded so far (`None` when it has none).
pub fn read_step_log(
    store: &dyn StateStore,
    job_id: JobId,
    step: &str,
) -> Result<Option<Vec<u8>>, FollowError> {
    let Some(mut reader) = store.open_step_log(job_id, step)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| FollowError::Read {
            job_id,
            step: step.to_owned(),
            source,
        })?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::state::{FileStore, JobMeta, JobState, StepRecord, Transition};
    use crate::trace::TraceId;

    fn stored(store: &FileStore) -> (JobId, crate::state::JobLease) {
        let job_id = JobId::now_v7();
        let meta = JobMeta {
            job_id,
            name: "j".to_owned(),
            owner: None,
            environment: None,
            trace_id: TraceId::parse("t").unwrap(),
            submitted_at: crate::time::now_rfc3339(),
            spec_file: "spec.yaml".to_owned(),
            source: "job.yaml".to_owned(),
            driver: None,
        };
        let lease = store
            .create_job(
                &meta,
                b"name: j\nsteps:\n  - name: a\n    run: true\n  - name: b\n    run: true\n",
            )
            .unwrap();
        for state in [JobState::Submitted, JobState::Running] {
            let transition = Transition {
                state,
                at: crate::time::now_rfc3339(),
                trace_id: meta.trace_id.clone(),
                detail: serde_json::json!({}),
            };
            store.append_transition(job_id, &transition).unwrap();
        }
        (job_id, lease)
    }

    #[test]
    fn a_step_is_followed_until_its_result_is_recorded_and_its_tail_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let (job_id, _lease) = stored(&store);
        assert_eq!(
            step_names(&store, &store.load(job_id).unwrap()).unwrap(),
            ["a", "b"]
        );
        let mut follow = StepFollow::new(job_id, "a");
        assert_eq!(follow.poll(&store).unwrap(), Event::Wait, "not started yet");
        let mut log = store.create_step_log(job_id, "a").unwrap();
        log.write_all(b"one\n").unwrap();
        assert_eq!(
            follow.poll(&store).unwrap(),
            Event::Bytes(b"one\n".to_vec())
        );
        assert_eq!(follow.poll(&store).unwrap(), Event::Wait);
        // The tail written just before the result is recorded is still read.
        log.write_all(b"two").unwrap();
        store
            .append_step(job_id, &StepRecord::skipped("a", "local"))
            .unwrap();
        assert_eq!(follow.poll(&store).unwrap(), Event::Bytes(b"two".to_vec()));
        assert_eq!(follow.poll(&store).unwrap(), Event::Done { ran: true });
    }

    #[test]
    fn a_step_that_never_ran_ends_when_the_job_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let (job_id, lease) = stored(&store);
        let mut follow = StepFollow::new(job_id, "b");
        assert_eq!(follow.poll(&store).unwrap(), Event::Wait);
        assert!(!is_over(&store, job_id).unwrap());
        drop(lease); // its driver died
        assert!(is_over(&store, job_id).unwrap());
        assert_eq!(follow.poll(&store).unwrap(), Event::Done { ran: false });
        assert_eq!(read_step_log(&store, job_id, "b").unwrap(), None);
    }
}
