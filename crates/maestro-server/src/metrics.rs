//! What `/v1/metrics` reports, kept in memory: jobs by state and a histogram of step durations.
//!
//! Counting by reading every job record on each scrape made a scrape cost as much as the store
//! is big (and its memory grow with it). Instead the counts are taken once at start-up, reading
//! one record at a time, and then moved by the server on each transition it drives: a
//! submission, a job's start and end, a cancel, a rejection, an approval that timed out.
//! Only the jobs that have not ended are remembered by id (to move their count when they do);
//! they are in memory anyway (queued, awaiting approval or running).
//!
//! Jobs that a local `mc submit` runs against the same state root while the server runs are not
//! the server's to see: they are counted at its next start.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

use maestro_core::JobId;
use maestro_core::progress::STATES;
use maestro_core::state::{JobState, StateStore, StepRecord, StepStatus};

/// Upper bounds of the step-duration buckets, in seconds (Prometheus' `le`).
const BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Step durations: how many fell in each bucket (not cumulative), their sum and count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(index) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[index] += 1;
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Counts {
    by_state: [u64; STATES.len()],
    /// The state of every job counted that has not ended.
    unended: HashMap<JobId, JobState>,
    steps: Histogram,
}

fn index(state: JobState) -> usize {
    STATES
        .iter()
        .position(|known| *known == state)
        .unwrap_or_default()
}

impl Counts {
    fn set(&mut self, job_id: JobId, state: JobState) {
        // A job counted while it had not ended is remembered; one that is not remembered was
        // not counted yet (a new job).
        if let Some(previous) = self.unended.remove(&job_id) {
            let count = &mut self.by_state[index(previous)];
            *count = count.saturating_sub(1);
        }
        self.by_state[index(state)] += 1;
        if !state.is_terminal() {
            self.unended.insert(job_id, state);
        }
    }

    fn steps(&mut self, steps: &[StepRecord]) {
        for step in steps
            .iter()
            .filter(|step| step.status != StepStatus::Skipped)
        {
            self.steps.observe(step.duration_ms as f64 / 1000.0);
        }
    }
}

/// Jobs by state and step durations, moved on each transition the server drives.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count the jobs of `store`, one record at a time (none is kept); how many could not be
    /// read (they are left out).
    pub(crate) fn seed(
        &self,
        store: &dyn StateStore,
    ) -> Result<usize, maestro_core::state::StateError> {
        let mut unreadable = 0;
        for job_id in store.list()? {
            match store.load(job_id) {
                Ok(record) => {
                    let mut counts = self.counts();
                    counts.set(job_id, record.state());
                    counts.steps(&record.steps);
                }
                Err(error) => {
                    tracing::debug!(%job_id, %error, "job left out of the metrics");
                    unreadable += 1;
                }
            }
        }
        Ok(unreadable)
    }

    /// The jobs counted that have not ended.
    pub(crate) fn unended(&self) -> Vec<JobId> {
        self.counts().unended.keys().copied().collect()
    }

    /// A job is now in `state`.
    pub(crate) fn set(&self, job_id: JobId, state: JobState) {
        self.counts().set(job_id, state);
    }

    /// A job ended in `state` after running `steps`.
    pub(crate) fn ended(&self, job_id: JobId, state: JobState, steps: &[StepRecord]) {
        let mut counts = self.counts();
        counts.set(job_id, state);
        counts.steps(steps);
    }

    /// The Prometheus text of the counts: `maestro_jobs{state=...}` and
    /// `maestro_step_duration_seconds`.
    pub(crate) fn render(&self, text: &mut String) {
        let counts = self.counts();
        text.push_str(
            "# HELP maestro_jobs Jobs in the state root by state.\n# TYPE maestro_jobs gauge\n",
        );
        for (state, count) in STATES.iter().zip(counts.by_state) {
            let _ = writeln!(text, "maestro_jobs{{state=\"{}\"}} {count}", state.as_str());
        }
        text.push_str(
            "# HELP maestro_step_duration_seconds How long steps ran (skipped ones left out).\n# TYPE maestro_step_duration_seconds histogram\n",
        );
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(counts.steps.buckets) {
            cumulative += count;
            let _ = writeln!(
                text,
                "maestro_step_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            text,
            "maestro_step_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            counts.steps.count
        );
        let _ = writeln!(
            text,
            "maestro_step_duration_seconds_sum {}",
            counts.steps.sum_seconds
        );
        let _ = writeln!(
            text,
            "maestro_step_duration_seconds_count {}",
            counts.steps.count
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(metrics: &Metrics, state: JobState) -> u64 {
        metrics.counts().by_state[index(state)]
    }

    #[test]
    fn a_job_moves_from_state_to_state_and_is_forgotten_when_it_ends() {
        let metrics = Metrics::default();
        let job_id = JobId::now_v7();
        metrics.set(job_id, JobState::Submitted);
        metrics.set(JobId::now_v7(), JobState::Submitted);
        assert_eq!(count(&metrics, JobState::Submitted), 2);
        metrics.set(job_id, JobState::Running);
        assert_eq!(count(&metrics, JobState::Submitted), 1);
        assert_eq!(count(&metrics, JobState::Running), 1);
        metrics.ended(job_id, JobState::Succeeded, &[]);
        assert_eq!(count(&metrics, JobState::Running), 0);
        assert_eq!(count(&metrics, JobState::Succeeded), 1);
        assert!(!metrics.counts().unended.contains_key(&job_id));
    }

    #[test]
    fn step_durations_fall_in_cumulative_buckets() {
        let metrics = Metrics::default();
        let mut counts = metrics.counts();
        counts.steps.observe(0.004);
        counts.steps.observe(0.7);
        counts.steps.observe(7200.0);
        drop(counts);
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(
            text.contains("maestro_step_duration_seconds_bucket{le=\"0.01\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("maestro_step_duration_seconds_bucket{le=\"0.5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("maestro_step_duration_seconds_bucket{le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("maestro_step_duration_seconds_bucket{le=\"3600\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("maestro_step_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("maestro_step_duration_seconds_count 3\n"),
            "{text}"
        );
    }
}
