//! A job's step logs as JSON lines, read once or followed as they grow.
//!
//! Each line of a step's log becomes `{"seq": N, "step": "...", "line": "..."}`; `seq` counts
//! lines across the job's steps in the spec's order and never changes (logs are append-only),
//! so a client that lost its connection resumes with `?after=N`.

use std::convert::Infallible;
use std::io::Read;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use maestro_core::JobId;
use maestro_core::spec::SpecFormat;
use maestro_core::state::{FileStore, JobRecord, StateStore};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::error::ApiError;

const POLL: Duration = Duration::from_millis(100);

/// The step names of a stored job, in the spec's order.
pub(crate) fn step_names(store: &FileStore, record: &JobRecord) -> Result<Vec<String>, ApiError> {
    let job_id = record.meta.job_id;
    let spec_path = store.job_dir(job_id).join(&record.meta.spec_file);
    let spec_bytes = std::fs::read(&spec_path).map_err(|error| {
        ApiError::internal(format!("cannot read {}: {error}", spec_path.display()))
    })?;
    let spec = maestro_core::spec::parse(
        &spec_bytes,
        SpecFormat::from_file_name(&record.meta.spec_file),
    )
    .map_err(|error| {
        ApiError::internal(format!(
            "stored spec of job {job_id} no longer parses: {error}"
        ))
    })?;
    Ok(spec.steps.into_iter().map(|step| step.name).collect())
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
        let entry = json!({ "seq": self.seq, "step": step, "line": text });
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
    store: &FileStore,
    job_id: JobId,
    steps: &[String],
    after: u64,
) -> Result<Vec<u8>, ApiError> {
    let mut lines = Lines { seq: 0, after };
    let mut out = Vec::new();
    for step in steps {
        let mut buffer = match std::fs::read(store.step_log_path(job_id, step)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(ApiError::internal(format!(
                    "cannot read the log of step {step:?}: {error}"
                )));
            }
        };
        lines.drain(&mut out, step, &mut buffer);
        if !buffer.is_empty() {
            lines.push(&mut out, step, &buffer);
        }
    }
    Ok(out)
}

fn is_over(store: &FileStore, job_id: JobId) -> bool {
    store.load(job_id).map_or(true, |record| {
        record.state().is_terminal() || store.is_abandoned(&record).unwrap_or(true)
    })
}

fn step_done(store: &FileStore, job_id: JobId, step: &str) -> bool {
    store.load(job_id).map_or(true, |record| {
        record.steps.iter().any(|done| done.name == step)
    }) || is_over(store, job_id)
}

/// The log as it grows, until the job ends; then one `{"end": true, "state": ...}` line.
pub(crate) fn follow(
    store: FileStore,
    job_id: JobId,
    steps: Vec<String>,
    after: u64,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _permit = permit;
        let mut lines = Lines { seq: 0, after };
        for step in &steps {
            let path = store.step_log_path(job_id, step);
            let mut file = loop {
                if let Ok(file) = std::fs::File::open(&path) {
                    break Some(file);
                }
                if step_done(&store, job_id, step) || sender.is_closed() {
                    break None;
                }
                tokio::time::sleep(POLL).await;
            };
            let Some(file) = file.as_mut() else {
                continue;
            };
            let mut buffer = Vec::new();
            loop {
                // Whether the step had ended before this read: if so, the read got its tail.
                let done = step_done(&store, job_id, step);
                let mut chunk = Vec::new();
                // A failed read keeps what it got; the next poll reads on from there.
                let _ = file.read_to_end(&mut chunk);
                buffer.extend_from_slice(&chunk);
                let mut out = Vec::new();
                lines.drain(&mut out, step, &mut buffer);
                if done && !buffer.is_empty() {
                    lines.push(&mut out, step, &buffer);
                    buffer.clear();
                }
                if !out.is_empty() && sender.send(Bytes::from(out)).await.is_err() {
                    return;
                }
                if done {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        while !is_over(&store, job_id) {
            if sender.is_closed() {
                return;
            }
            tokio::time::sleep(POLL).await;
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
