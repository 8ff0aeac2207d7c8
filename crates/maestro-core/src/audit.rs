//! The audit trail: `audit.log` in the state root, one JSON line per event, append-only.
//!
//! Each record is appended with a single `write` under an exclusive lock on the file and then
//! fsynced, so concurrent `mc` processes never interleave lines and an acknowledged record
//! survives a crash. A crash in the middle of an append can at worst leave a last line without
//! its newline; readers skip a line that does not parse.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::JobId;
use crate::time::now_rfc3339;
use crate::trace::TraceId;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, RFC 3339 UTC.
    pub at: String,
    /// The job (absent for a submission rejected before it got an id).
    pub job_id: Option<JobId>,
    /// The request's trace id.
    pub trace_id: TraceId,
    /// The job's owner as written.
    pub owner: Option<String>,
    /// What happened: `job.rejected`, `policy.decision`, `job.transition`, `step.finished`.
    pub event: String,
    /// The particulars.
    pub details: serde_json::Value,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn new(
        job_id: Option<JobId>,
        trace_id: &TraceId,
        owner: Option<&str>,
        event: &str,
        details: serde_json::Value,
    ) -> Self {
        Self {
            at: now_rfc3339(),
            job_id,
            trace_id: trace_id.clone(),
            owner: owner.map(str::to_owned),
            event: event.to_owned(),
            details,
        }
    }
}

/// Why an audit record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot append to audit log {}: {source}", path.display())]
pub struct AuditError {
    /// The audit log.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

/// The audit log of a state root.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The audit log `audit.log` in `state_root`.
    pub fn new(state_root: &Path) -> Self {
        Self {
            path: state_root.join("audit.log"),
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `record` durably.
    pub fn append(&self, record: &AuditRecord) -> Result<(), AuditError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Append `records` durably, in order, with one write and one fsync: records made at one
    /// moment (every policy's verdict) cost one disk flush, not one each.
    pub fn append_all(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let wrap = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let mut line = Vec::new();
        for record in records {
            serde_json::to_writer(&mut line, record).map_err(|e| wrap(io::Error::other(e)))?;
            line.push(b'\n');
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(wrap)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(wrap)?;
        file.lock().map_err(wrap)?;
        // A crash mid-append can leave a last line without its newline; end it first, or this
        // record would be glued to it and lost to every reader.
        if !ends_with_newline(&mut file).map_err(wrap)? {
            line.insert(0, b'\n');
        }
        file.write_all(&line).map_err(wrap)?;
        file.sync_data().map_err(wrap)
    }

    /// Every record that parses, oldest first.
    pub fn read_all(&self) -> Result<Vec<AuditRecord>, AuditError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(AuditError {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }
}

/// Whether `file` is empty or ends in `\n`.
fn ends_with_newline(file: &mut std::fs::File) -> io::Result<bool> {
    let length = file.seek(SeekFrom::End(0))?;
    if length == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        std::fs::write(log.path(), b"{\"at\":\"torn").unwrap();
        let trace = TraceId::parse("t").unwrap();
        log.append(&AuditRecord::new(
            None,
            &trace,
            None,
            "after",
            serde_json::Value::Null,
        ))
        .unwrap();
        let records = log.read_all().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].event, "after");
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        let trace = TraceId::parse("t").unwrap();
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let log = log.clone();
                let trace = trace.clone();
                scope.spawn(move || {
                    for n in 0..25 {
                        let details =
                            serde_json::json!({"thread": thread, "n": n, "pad": "x".repeat(5000)});
                        log.append(&AuditRecord::new(
                            None,
                            &trace,
                            Some("ana"),
                            "test",
                            details,
                        ))
                        .unwrap();
                    }
                });
            }
        });
        let text = fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 200);
        assert_eq!(log.read_all().unwrap().len(), 200);
    }
}
