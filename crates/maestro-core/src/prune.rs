//! Removing old jobs (`mc prune`): their records and logs go, the audit log keeps them.

use serde::Serialize;

use crate::JobId;
use crate::audit::{AuditError, AuditLog, AuditRecord};
use crate::progress::{JobFilter, Timestamp};
use crate::state::{JobRecord, JobState, StateError, StateStore};

/// One job that was (or, in a dry run, would be) removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pruned {
    /// The job.
    pub job_id: JobId,
    /// Its name.
    pub name: String,
    /// The state it ended in.
    pub state: JobState,
    /// When it ended (its last transition), RFC 3339 UTC.
    pub ended_at: String,
}

/// Why pruning stopped.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The store could not list, read or remove a job.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The audit record of a removal could not be written; that job was kept.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Removes every job that ended before `ended_before` and passes `filter`, oldest first, and
/// records each removal in the audit log (`job.pruned`, naming `by`) before the job's files go.
/// Jobs that have not ended, or that a live process holds, are never touched. With `dry_run`
/// nothing is removed or recorded: the list says what would be.
pub fn prune(
    store: &dyn StateStore,
    audit: &AuditLog,
    filter: &JobFilter,
    ended_before: Timestamp,
    by: &str,
    dry_run: bool,
) -> Result<Vec<Pruned>, PruneError> {
    let mut pruned = Vec::new();
    let mut ids = store.list()?;
    ids.reverse();
    for job_id in ids {
        let record = match store.load(job_id) {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%job_id, %error, "job not pruned: its record cannot be read");
                continue;
            }
        };
        let Some(ended_at) = ended_at(&record) else {
            continue;
        };
        let old = ended_at
            .parse::<Timestamp>()
            .is_ok_and(|ended| ended < ended_before);
        if !old || !filter.matches(&record) || store.is_live(job_id)? {
            continue;
        }
        let entry = Pruned {
            job_id,
            name: record.meta.name.clone(),
            state: record.state(),
            ended_at,
        };
        if !dry_run {
            audit.append(&AuditRecord::new(
                Some(job_id),
                &record.meta.trace_id,
                record.meta.owner.as_deref(),
                "job.pruned",
                serde_json::json!({ "by": by, "state": entry.state, "ended_at": entry.ended_at }),
            ))?;
            store.remove_job(job_id)?;
        }
        pruned.push(entry);
    }
    Ok(pruned)
}

/// When the job ended: its last transition, if that is terminal.
fn ended_at(record: &JobRecord) -> Option<String> {
    let last = record.transitions.last()?;
    last.state.is_terminal().then(|| last.at.clone())
}
