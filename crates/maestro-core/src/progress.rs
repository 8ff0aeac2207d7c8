//! Where a job stands, read out of its record: its policy verdicts, its duration, the step it
//! is running now. `mc status` (and later the server) show these; they are derived here, once.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use jiff::Timestamp;

use crate::JobId;
use crate::state::{JobRecord, JobState, StateStore};
use crate::trace::TraceId;

/// The first line of every step log (after its `# `): who the step is and when it started.
pub fn step_log_header(
    job_id: JobId,
    step: &str,
    runtime: &str,
    trace_id: &TraceId,
    started_at: &str,
) -> String {
    format!(
        "maestro job_id={job_id} step={step} runtime={runtime} trace_id={trace_id} started={started_at}"
    )
}

/// The step a job is running now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentStep {
    /// Its name.
    pub name: String,
    /// Its runtime.
    pub runtime: String,
    /// When it started, RFC 3339 UTC.
    pub started_at: String,
    /// How long it has been running, in seconds.
    pub elapsed_seconds: f64,
}

/// The policy verdicts recorded with the job's admission decision (`null` before it).
pub fn verdicts(record: &JobRecord) -> serde_json::Value {
    record
        .transitions
        .iter()
        .find_map(|transition| transition.detail.get("policies").cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Why the job failed, as its last transition records it (absent for other states, and in
/// records of older versions).
pub fn failure(record: &JobRecord) -> Option<crate::runner::FailureKind> {
    let last = record.transitions.last()?;
    serde_json::from_value(last.detail.get("failure")?.clone()).ok()
}

/// How long the job has taken: from its first transition to its last when it has ended, to now
/// while it has not.
pub fn duration(record: &JobRecord) -> Option<Duration> {
    let first = timestamp(&record.transitions.first()?.at)?;
    let last = if record.state().is_terminal() {
        timestamp(&record.transitions.last()?.at)?
    } else {
        jiff::Timestamp::now()
    };
    Duration::try_from(last.duration_since(first)).ok()
}

/// [`duration`] in seconds, to the microsecond its timestamps have: the number every listing
/// shows, the same whether a server sends it or `mc` reads it (`as_secs_f64` alone gives
/// `28.560670000000002`, which a JSON reader may take back as `28.56067`).
pub fn duration_seconds(record: &JobRecord) -> Option<f64> {
    duration(record).map(|duration| {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        #[expect(
            clippy::cast_precision_loss,
            reason = "durations are far below 2^52 µs"
        )]
        let micros = micros as f64;
        micros / 1e6
    })
}

/// When the job was submitted, for filters (`--since`).
pub fn submitted_at(record: &JobRecord) -> Option<jiff::Timestamp> {
    timestamp(&record.meta.submitted_at)
}

fn timestamp(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// The step `record`'s job is running now: the first of `steps` (the spec's step names, in
/// order) that has no result yet but has started (its log exists). `None` when the job is not
/// running, or between two steps.
pub fn current_step(
    store: &dyn StateStore,
    record: &JobRecord,
    steps: &[String],
) -> Option<CurrentStep> {
    if record.state() != JobState::Running {
        return None;
    }
    let name = steps
        .iter()
        .find(|name| !record.steps.iter().any(|step| &step.name == *name))?;
    let log = store
        .open_step_log(record.meta.job_id, name)
        .ok()
        .flatten()?;
    let header = header_line(log)?;
    let field = |key: &str| {
        header
            .split_whitespace()
            .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let started_at = field("started")?;
    let elapsed = timestamp(&started_at)
        .and_then(|started| Duration::try_from(jiff::Timestamp::now().duration_since(started)).ok())
        .unwrap_or_default();
    Some(CurrentStep {
        name: name.clone(),
        runtime: field("runtime").unwrap_or_default(),
        started_at,
        elapsed_seconds: elapsed.as_secs_f64(),
    })
}

/// Every job state, in lifecycle order.
pub const STATES: [JobState; 7] = [
    JobState::Submitted,
    JobState::AwaitingApproval,
    JobState::Running,
    JobState::Denied,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Cancelled,
];

/// Which jobs a listing shows; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in one of these states (all when empty).
    pub states: Vec<JobState>,
    /// Only jobs of this owner, compared as policy compares identities.
    pub owner: Option<String>,
    /// Only jobs for this environment, compared the same way.
    pub environment: Option<String>,
    /// Only jobs submitted at or after this time.
    pub since: Option<jiff::Timestamp>,
}

/// Why a filter given on a command line cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Not a state name.
    #[error(
        "unknown state {0:?}: states are submitted, awaiting_approval, running, denied, succeeded, failed, cancelled"
    )]
    State(String),
    /// Neither a duration nor a time.
    #[error(
        "{0:?} is neither a duration ago (30m, 2h, 7d) nor an RFC 3339 time (2026-11-30T10:00:00Z)"
    )]
    Since(String),
}

impl JobFilter {
    /// A state by its name, any case.
    pub fn parse_state(text: &str) -> Result<JobState, FilterError> {
        STATES
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| FilterError::State(text.to_owned()))
    }

    /// `--since`: a duration before `now` (`45s`, `30m`, `2h`, `7d`, `2w`) or an RFC 3339 time.
    pub fn parse_since(text: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp, FilterError> {
        let invalid = || FilterError::Since(text.to_owned());
        if let Ok(time) = text.parse::<jiff::Timestamp>() {
            return Ok(time);
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let (number, unit) = text.split_at(split);
        let number: i64 = number.parse().map_err(|_| invalid())?;
        let seconds_per_unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(invalid()),
        };
        let seconds = number.checked_mul(seconds_per_unit).ok_or_else(invalid)?;
        let span = jiff::SignedDuration::from_secs(seconds);
        now.checked_sub(span).map_err(|_| invalid())
    }

    /// Whether it lets every job through.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
            && self.owner.is_none()
            && self.environment.is_none()
            && self.since.is_none()
    }

    /// Whether `record` passes every condition.
    pub fn matches(&self, record: &JobRecord) -> bool {
        let same = |wanted: &Option<String>, value: &Option<String>| match wanted {
            None => true,
            Some(wanted) => value
                .as_deref()
                .is_some_and(|value| crate::identity::same_identity(wanted, value)),
        };
        (self.states.is_empty() || self.states.contains(&record.state()))
            && same(&self.owner, &record.meta.owner)
            && same(&self.environment, &record.meta.environment)
            && self.since.is_none_or(|since| {
                submitted_at(record).is_some_and(|submitted| submitted >= since)
            })
    }
}

/// The first line of a step log, at most 4 KiB, when it is a Maestro header.
fn header_line(log: impl Read) -> Option<String> {
    let mut line = String::new();
    BufReader::new(log.take(4096)).read_line(&mut line).ok()?;
    line.starts_with("# maestro ").then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_ago_and_times() {
        let now: jiff::Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let since = |text| JobFilter::parse_since(text, now).map(|t| t.to_string());
        assert_eq!(since("30m").unwrap(), "2026-11-30T11:30:00Z");
        assert_eq!(since("2d").unwrap(), "2026-11-28T12:00:00Z");
        assert_eq!(
            since("2026-11-01T00:00:00Z").unwrap(),
            "2026-11-01T00:00:00Z"
        );
        for bad in ["", "h", "5y", "-3h", "99999999999999999999d", "yesterday"] {
            assert!(since(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            JobFilter::parse_state("Running").unwrap(),
            JobState::Running
        );
        assert!(JobFilter::parse_state("done").is_err());
    }
    use crate::state::{FileStore, JobMeta, StepRecord, Transition};

    /// A job's metadata, for a store.
    fn meta(job_id: JobId, trace_id: &TraceId) -> JobMeta {
        JobMeta {
            job_id,
            name: "j".to_owned(),
            owner: None,
            environment: None,
            trace_id: trace_id.clone(),
            submitted_at: crate::time::now_rfc3339(),
            spec_file: "spec.json".to_owned(),
            source: "j.json".to_owned(),
            driver: None,
        }
    }

    #[test]
    fn a_duration_in_seconds_is_to_the_microsecond_and_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let job_id = JobId::now_v7();
        let trace_id = TraceId::parse("t").unwrap();
        let meta = meta(job_id, &trace_id);
        let _lease = store.create_job(&meta, b"{}").unwrap();
        for (state, at) in [
            (JobState::Submitted, "2026-12-01T21:00:00.000000Z"),
            (JobState::Running, "2026-12-01T21:00:00.100000Z"),
            (JobState::Succeeded, "2026-12-01T21:00:28.560670Z"),
        ] {
            let transition = Transition {
                state,
                at: at.to_owned(),
                trace_id: trace_id.clone(),
                detail: serde_json::json!({}),
            };
            store.append_transition(job_id, &transition).unwrap();
        }
        let seconds = duration_seconds(&store.load(job_id).unwrap()).unwrap();
        // `as_secs_f64` gives 28.560670000000002, which a JSON reader may take back as
        // 28.56067: a server's answer and `mc`'s own would differ.
        assert_eq!(serde_json::json!(seconds).to_string(), "28.56067");
        let read_back: f64 = serde_json::from_str("28.56067").unwrap();
        assert_eq!(read_back.to_bits(), seconds.to_bits());
    }

    #[test]
    fn the_current_step_is_the_first_started_one_without_a_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let job_id = JobId::now_v7();
        let trace_id = TraceId::parse("t").unwrap();
        let meta = meta(job_id, &trace_id);
        let _lease = store.create_job(&meta, b"{}").unwrap();
        for state in [JobState::Submitted, JobState::Running] {
            let transition = Transition {
                state,
                at: crate::time::now_rfc3339(),
                trace_id: trace_id.clone(),
                detail: serde_json::json!({}),
            };
            store.append_transition(job_id, &transition).unwrap();
        }
        store
            .append_step(job_id, &StepRecord::skipped("one", "local"))
            .unwrap();
        let steps = ["one".to_owned(), "two".to_owned(), "three".to_owned()];
        let record = store.load(job_id).unwrap();
        assert_eq!(
            current_step(&store, &record, &steps),
            None,
            "two has not started"
        );

        let started = "2026-11-30T10:00:00.000000Z";
        let mut log = store.create_step_log(job_id, "two").unwrap();
        let header = step_log_header(job_id, "two", "docker", &trace_id, started);
        std::io::Write::write_all(&mut log, format!("# {header}\n").as_bytes()).unwrap();
        let current = current_step(&store, &record, &steps).unwrap();
        assert_eq!(current.name, "two");
        assert_eq!(current.runtime, "docker");
        assert_eq!(current.started_at, started);
        assert!(current.elapsed_seconds > 3600.0, "{current:?}");
        assert!(duration(&record).is_some());
    }
}
