//! A job's step logs as JSON lines, read once or followed as they grow.
//!
//! Each line of a step's log becomes `{"seq": N, "step": "...", "line": "..."}`, the line as
//! recorded (time, number, stream, text, as `mc logs` prints it); an output line also carries
//! `"stream"` (`out`/`err`) and `"text"` (what the step wrote), so that `mc --server URL submit`
//! shows it as a local `mc submit` does. `seq` counts lines across the job's steps in the spec's
//! order and never changes (logs are append-only), so a client that lost its connection resumes
//! with `?after=N`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use maestro_core::JobId;
use maestro_core::follow::{self, Event, FollowError, StepFollow};
use maestro_core::output::parse_line;
use maestro_core::state::{JobRecord, StateStore};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::error::ApiError;

fn follow_error(error: FollowError) -> ApiError {
    match error {
        FollowError::State(error) => ApiError::from(error),
        other => ApiError::internal(other),
    }
}

/// The step names of a stored job, in the spec's order.
pub(crate) fn step_names(
    store: &dyn StateStore,
    record: &JobRecord,
) -> Result<Vec<String>, ApiError> {
    follow::step_names(store, record).map_err(follow_error)
}

/// Turns a step's bytes into numbered JSON lines.
struct Lines {
    seq: u64,
    after: u64,
}

impl Lines {
    fn push(&mut self, out: &mut Vec<u8>, step: &str, line: &[u8]) {
        self.seq += 1;
        if self.seq <= self.after {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let mut entry = json!({ "seq": self.seq, "step": step, "line": text });
        if let Some(parsed) = parse_line(line) {
            entry["stream"] = json!(parsed.stream);
            entry["text"] = json!(String::from_utf8_lossy(parsed.text));
            if parsed.continues {
                entry["continues"] = json!(true);
            }
        }
        out.extend_from_slice(entry.to_string().as_bytes());
        out.push(b'\n');
    }

    /// Every complete line of `buffer` (kept: the incomplete rest).
    fn drain(&mut self, out: &mut Vec<u8>, step: &str, buffer: &mut Vec<u8>) {
        while let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            self.push(out, step, &line);
        }
    }
}

/// Everything recorded so far.
pub(crate) fn recorded(
    store: &dyn StateStore,
    job_id: JobId,
    steps: &[String],
    after: u64,
) -> Result<Vec<u8>, ApiError> {
    let mut lines = Lines { seq: 0, after };
    let mut out = Vec::new();
    for step in steps {
        let Some(mut buffer) = follow::read_step_log(store, job_id, step).map_err(follow_error)?
        else {
            continue;
        };
        lines.drain(&mut out, step, &mut buffer);
        if !buffer.is_empty() {
            lines.push(&mut out, step, &buffer);
        }
    }
    Ok(out)
}

/// The log as it grows, until the job ends; then one `{"end": true, "state": ...}` line. The
/// end of each step is the rule of [`maestro_core::follow`], as for `mc logs --follow`.
///
/// A job nobody drives any more (its `mc` or server died) ends the stream with the state it
/// was left in, unless `settled_within` says how long servers take to settle such a job (a
/// shared queue: they do once its lease runs out): the stream waits that long for the state
/// they record.
pub(crate) fn follow(
    store: Arc<dyn StateStore>,
    job_id: JobId,
    steps: Vec<String>,
    after: u64,
    permit: OwnedSemaphorePermit,
    settled_within: Option<Duration>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _permit = permit;
        let mut lines = Lines { seq: 0, after };
        for step in &steps {
            let mut follower = StepFollow::new(job_id, step);
            let mut buffer = Vec::new();
            loop {
                let event = match follower.poll(store.as_ref()) {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(%job_id, %step, %error, "log follow stopped");
                        return;
                    }
                };
                let mut out = Vec::new();
                let done = match event {
                    Event::Bytes(bytes) => {
                        buffer.extend_from_slice(&bytes);
                        lines.drain(&mut out, step, &mut buffer);
                        false
                    }
                    Event::Wait => {
                        if sender.is_closed() {
                            return;
                        }
                        tokio::time::sleep(follow::POLL).await;
                        false
                    }
                    Event::Done { .. } => {
                        if !buffer.is_empty() {
                            lines.push(&mut out, step, &buffer);
                            buffer.clear();
                        }
                        true
                    }
                };
                if !out.is_empty() && sender.send(Bytes::from(out)).await.is_err() {
                    return;
                }
                if done {
                    break;
                }
            }
        }
        let mut abandoned_since: Option<tokio::time::Instant> = None;
        loop {
            match store.load(job_id) {
                Ok(record) if !record.state().is_terminal() => {
                    if store.is_abandoned(&record).unwrap_or(true) {
                        let since = *abandoned_since.get_or_insert_with(tokio::time::Instant::now);
                        if settled_within.is_none_or(|within| since.elapsed() >= within) {
                            break;
                        }
                    } else {
                        abandoned_since = None;
                    }
                }
                // Ended, or no longer readable.
                _ => break,
            }
            if sender.is_closed() {
                return;
            }
            tokio::time::sleep(follow::POLL).await;
        }
        let state = store
            .load(job_id)
            .map(|record| record.state().to_string())
            .unwrap_or_default();
        let end = json!({ "end": true, "state": state });
        let _ = sender.send(Bytes::from(format!("{end}\n"))).await;
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), receiver))
    })
}
