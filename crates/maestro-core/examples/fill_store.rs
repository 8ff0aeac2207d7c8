//! Fills a file store with finished one-step jobs through the `StateStore` API, for
//! `bench/store.sh`: `fill_store STATE_ROOT COUNT [THREADS]`.
//!
//! Each job is stored as `mc submit` stores one (its `SUBMITTED` transition with it, then
//! `RUNNING`, then its step's result with `SUCCEEDED`), with every fsync, and indexed; only the
//! step does not run. Threads take ids from one counter, so the index stays in creation order.

use std::sync::atomic::{AtomicUsize, Ordering};

use maestro_core::JobId;
use maestro_core::state::{
    FileStore, HistoryEntry, JobMeta, JobState, StateStore, StepRecord, StepStatus, Transition,
};
use maestro_core::trace::TraceId;

fn transition(state: JobState, trace_id: &TraceId) -> Transition {
    Transition {
        state,
        at: maestro_core::time::now_rfc3339(),
        trace_id: trace_id.clone(),
        detail: serde_json::json!({}),
    }
}

fn fill(store: &FileStore, trace_id: &TraceId) -> Result<(), Box<dyn std::error::Error>> {
    let job_id = JobId::now_v7();
    let meta = JobMeta {
        job_id,
        name: "t".to_owned(),
        owner: Some("bench".to_owned()),
        environment: None,
        trace_id: trace_id.clone(),
        submitted_at: maestro_core::time::now_rfc3339(),
        spec_file: "spec.json".to_owned(),
        source: "true.json".to_owned(),
        driver: None,
    };
    let spec = br#"{"name":"t","owner":"bench","steps":[{"name":"s","run":"true"}]}"#;
    let submitted = transition(JobState::Submitted, trace_id);
    let (_lease, _) =
        store.create_job_with_history(&meta, spec, &[HistoryEntry::Transition(&submitted)])?;
    store.append_transition(job_id, &transition(JobState::Running, trace_id))?;
    let step = StepRecord {
        status: StepStatus::Succeeded,
        exit_code: Some(0),
        ..StepRecord::skipped("s", "local")
    };
    let succeeded = transition(JobState::Succeeded, trace_id);
    store.append_history(
        job_id,
        &[
            HistoryEntry::Step(&step),
            HistoryEntry::Transition(&succeeded),
        ],
    )?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(root), Some(count)) = (args.get(1), args.get(2)) else {
        return Err("usage: fill_store STATE_ROOT COUNT [THREADS]".into());
    };
    let count: usize = count.parse()?;
    let threads: usize = args.get(3).map_or(Ok(4), |text| text.parse())?;
    let store = FileStore::new(root);
    let trace_id = TraceId::parse("fill")?;
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        fill(&store, &trace_id).map_err(|error| error.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().map_err(|_| "a worker panicked".to_owned())?)
    })?;
    Ok(())
}
