//! The audit trail: one JSON line per event, append-only and hash-chained, kept by the state
//! store's [`AuditStorage`] (`audit.log` in the state root for the file store).
//!
//! Each record is appended with a single `write` under an exclusive lock on the file and then
//! fsynced, so concurrent `mc` processes never interleave lines and an acknowledged record
//! survives a crash. Each record carries its sequence number (`seq`) and the SHA-256 of the
//! previous record's exact bytes (`prev`, the line without its newline), starting from a genesis
//! record (`seq` 0, `prev` all zeros): an edited, removed or reordered record breaks the chain at
//! the next one, which [`AuditLog::verify`] reports. A crash in the middle of an append can at
//! worst leave a last line without its newline; the next append ends it and chains past it, and
//! readers skip a line that does not parse.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};

use crate::JobId;
use crate::group_commit::GroupCommit;
use crate::root::{Access, StateRoot};
use crate::state::{HistoryDigests, StateStore, array_bytes, array_entries, sha256_hex};
use crate::time::now_rfc3339;
use crate::trace::TraceId;

/// The `prev` of the genesis record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The event of the record that starts the chain.
pub const GENESIS_EVENT: &str = "audit.genesis";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its place in the log, from 0 (the genesis record); set when it is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// SHA-256 (hex) of the previous record's exact bytes; set when it is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
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
            seq: None,
            prev: None,
            at: now_rfc3339(),
            job_id,
            trace_id: trace_id.clone(),
            owner: owner.map(str::to_owned),
            event: event.to_owned(),
            details,
        }
    }

    /// The digests of the job's history this record says were written with it, if any.
    pub fn history(&self) -> Option<HistoryDigests> {
        serde_json::from_value(self.details.get("history")?.clone()).ok()
    }
}

/// Why an audit record could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} audit log {log}: {source}")]
pub struct AuditError {
    /// What was being done: `append to`, `read`.
    pub action: &'static str,
    /// The audit log, as its storage describes it (a file's path).
    pub log: String,
    /// The storage's error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What [`AuditStorage::append_locked`] calls under the lock: given the last complete line (if
/// any) and whether the trail ends cleanly, the bytes to append.
pub type Extend<'a> = dyn FnMut(Option<&[u8]>, bool) -> io::Result<Vec<u8>> + 'a;

/// An error of an audit storage, kept as it is.
pub type StorageError = Box<dyn std::error::Error + Send + Sync>;

/// Where an audit trail's bytes are kept: a sequence of lines, only ever appended to. The chain
/// (sequence numbers, hashes, the genesis record) is [`AuditLog`]'s, the same on every storage.
pub trait AuditStorage: Send + Sync {
    /// Where the trail is, for messages.
    fn describe(&self) -> String;
    /// Under the trail's exclusive lock, call `extend` with the last complete line (without
    /// its newline; `None` when there is none) and whether the trail is empty or ends with a
    /// newline, and append what it returns; durable before this returns.
    fn append_locked(&self, extend: &mut Extend<'_>) -> Result<(), StorageError>;
    /// The trail's bytes (empty when nothing was appended yet).
    fn read(&self) -> Result<Vec<u8>, StorageError>;

    /// The bytes of a record a crash cut short that end the trail (a last line that is not a
    /// whole record and has no newline), if any. The default: none (a storage whose appends are
    /// atomic, such as a database's, never tears one).
    fn torn_tail(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(None)
    }

    /// Call `line` with each line of the trail (without its newline), oldest first. The default
    /// reads the whole trail; a storage that can stream overrides it, so that a reader keeps
    /// one line in memory rather than the trail.
    fn for_each_line(&self, line: &mut dyn FnMut(&[u8])) -> Result<(), StorageError> {
        for each in self.read()?.split(|b| *b == b'\n') {
            line(each);
        }
        Ok(())
    }
}

/// The audit log: the hash chain over an [`AuditStorage`].
#[derive(Clone)]
pub struct AuditLog {
    storage: Arc<dyn AuditStorage>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.storage.describe())
    }
}

/// `audit.log` in a state root: each append is one `write` under an exclusive `flock`, then
/// `fdatasync` after the lock is let go, shared with the appends of this process written
/// meanwhile (group commit): the chain is extended one append at a time, and a server's
/// concurrent jobs do not wait for each other's syncs one after another ([`GroupCommit`]).
#[derive(Debug, Clone)]
pub struct FileAudit {
    root: StateRoot,
    path: PathBuf,
    syncs: Arc<GroupCommit>,
}

impl FileAudit {
    /// The audit log `audit.log` in `state_root`.
    pub fn new(state_root: &Path) -> Self {
        let path = state_root.join("audit.log");
        // One group per file in this process, however many handles on it are made.
        static GROUPS: OnceLock<Mutex<BTreeMap<PathBuf, Arc<GroupCommit>>>> = OnceLock::new();
        let syncs = Arc::clone(
            GROUPS
                .get_or_init(Mutex::default)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(path.clone())
                .or_default(),
        );
        Self {
            root: StateRoot::new(state_root),
            path,
            syncs,
        }
    }
}

impl AuditStorage for FileAudit {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn append_locked(&self, extend: &mut Extend<'_>) -> Result<(), StorageError> {
        let root = self.root.create_dir_all(Path::new(""))?;
        let file = root.open("audit.log", Access::AppendOrCreate)?;
        file.lock()?;
        let (ends_with_newline, last) = tail(&file)?;
        let lines = extend(last.as_deref(), ends_with_newline)?;
        (&file).write_all(&lines)?;
        let number = self.syncs.written();
        // The next append may extend the chain while this one syncs; it is durable before
        // this returns all the same.
        file.unlock()?;
        self.syncs.sync_through(number, || file.sync_data())?;
        Ok(())
    }

    fn torn_tail(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let root = match self.root.open_dir(Path::new("")) {
            Ok(Some(root)) => root,
            Ok(None) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let file = match root.open("audit.log", Access::Read) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        Ok(tail_lines(&file)?.unterminated.filter(|piece| {
            serde_json::from_slice::<Link>(piece).map_or(true, |link| link.seq.is_none())
        }))
    }

    fn read(&self) -> Result<Vec<u8>, StorageError> {
        let root = match self.root.open_dir(Path::new("")) {
            Ok(Some(root)) => root,
            Ok(None) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        match root.read("audit.log") {
            Ok(bytes) => Ok(bytes),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(error.into()),
        }
    }

    fn for_each_line(&self, line: &mut dyn FnMut(&[u8])) -> Result<(), StorageError> {
        let root = match self.root.open_dir(Path::new("")) {
            Ok(Some(root)) => root,
            Ok(None) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let file = match root.open("audit.log", Access::Read) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let mut reader = io::BufReader::with_capacity(64 * 1024, file);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            if io::BufRead::read_until(&mut reader, b'\n', &mut buffer)? == 0 {
                return Ok(());
            }
            line(buffer.strip_suffix(b"\n").unwrap_or(&buffer));
        }
    }
}

/// What was wrong with a chain, found by [`AuditLog::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tampering {
    /// A record's bytes changed (or it no longer parses).
    Edited,
    /// Records are missing.
    Removed,
    /// Records are out of order.
    Reordered,
    /// The last record was cut short.
    Truncated,
    /// The anchored head is not in the log: rewritten from some point, or cut at a line end.
    HeadMismatch,
}

/// The first problem found in a chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainProblem {
    /// The line (from 1) of the first record concerned.
    pub line: usize,
    /// What happened to it.
    pub kind: Tampering,
    /// One line saying so.
    pub message: String,
}

/// A job whose history no longer matches what the audit log recorded of it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryProblem {
    /// The job.
    pub job_id: JobId,
    /// One line saying what does not match.
    pub message: String,
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Lines read.
    pub records: usize,
    /// SHA-256 of the last record of the intact chain: anchor it elsewhere, check it later
    /// with `--expect-head`.
    pub head: Option<String>,
    /// The first break in the chain, if any.
    pub problem: Option<ChainProblem>,
    /// Jobs whose history does not match their last recorded digests.
    pub jobs: Vec<HistoryProblem>,
    /// Things worth knowing that are not tampering (a torn line a crash left and the chain
    /// skips, records appended after the anchored head).
    pub notes: Vec<String>,
}

impl Verification {
    /// Whether nothing was found wrong.
    pub fn intact(&self) -> bool {
        self.problem.is_none() && self.jobs.is_empty()
    }
}

/// The parts of a record the chain is checked with.
#[derive(Deserialize)]
struct Link {
    seq: Option<u64>,
    prev: Option<String>,
    event: Option<String>,
}

impl AuditLog {
    /// The audit log `audit.log` in `state_root`.
    pub fn new(state_root: &Path) -> Self {
        Self::over(Arc::new(FileAudit::new(state_root)))
    }

    /// The audit log kept in `storage`.
    pub fn over(storage: Arc<dyn AuditStorage>) -> Self {
        Self { storage }
    }

    fn error(
        &self,
        action: &'static str,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> AuditError {
        let log = self.storage.describe();
        move |source| AuditError {
            action,
            log,
            source,
        }
    }

    /// Append `record` durably.
    pub fn append(&self, record: &AuditRecord) -> Result<(), AuditError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Append `records` durably, in order, with one write and one fsync: records made at one
    /// moment (every policy's verdict) cost one disk flush, not one each.
    pub fn append_all(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let mut extend = |last: Option<&[u8]>, ends_with_newline: bool| {
            chain_lines(records, first, last, ends_with_newline)
        };
        self.storage
            .append_locked(&mut extend)
            .map_err(self.error("append to"))
    }

    /// Close a record a crash cut short at the end of the trail: a record noting it
    /// (`audit.torn_write`) is appended, its line first ending the torn one, so that the chain
    /// visibly skips it ([`verify_chain`] notes it) instead of ending in it, which reads as the
    /// last record cut short by hand. `mc gc`'s: a crash leaves nothing that stays unsettled.
    /// Returns the torn record's length, if there was one.
    pub fn seal_torn_tail(&self, trace_id: &TraceId) -> Result<Option<usize>, AuditError> {
        // A look without the lock first: nearly always there is nothing to do.
        if self
            .storage
            .torn_tail()
            .map_err(self.error("read"))?
            .is_none()
        {
            return Ok(None);
        }
        let storage = Arc::clone(&self.storage);
        let mut sealed = None;
        let mut extend = |last: Option<&[u8]>, ends_with_newline: bool| {
            // Again under the lock: an append may have ended the line meanwhile (then there is
            // nothing to note), and no append is half written while it is held.
            if ends_with_newline {
                return Ok(Vec::new());
            }
            let Some(torn) = storage.torn_tail().map_err(io::Error::other)? else {
                return Ok(Vec::new());
            };
            let record = AuditRecord::new(
                None,
                trace_id,
                None,
                "audit.torn_write",
                serde_json::json!({
                    "bytes": torn.len(),
                    "sha256": sha256_hex(&torn),
                    "reason": "the log ended in a record cut short (a crash mid-append, or a cut by hand, which only an anchored head tells apart); found by mc gc, the chain skips it",
                }),
            );
            sealed = Some(torn.len());
            chain_lines(
                std::slice::from_ref(&record),
                &record,
                last,
                ends_with_newline,
            )
        };
        self.storage
            .append_locked(&mut extend)
            .map_err(self.error("append to"))?;
        Ok(sealed)
    }

    fn read_bytes(&self) -> Result<Vec<u8>, AuditError> {
        self.storage.read().map_err(self.error("read"))
    }

    /// Call `record` with every record that parses, oldest first, one at a time (the log is
    /// streamed where its storage can: memory does not grow with the log).
    pub fn for_each(&self, record: &mut dyn FnMut(AuditRecord)) -> Result<(), AuditError> {
        self.storage
            .for_each_line(&mut |line| {
                if let Ok(parsed) = serde_json::from_slice(line) {
                    record(parsed);
                }
            })
            .map_err(self.error("read"))
    }

    /// Every record that parses, oldest first.
    pub fn read_all(&self) -> Result<Vec<AuditRecord>, AuditError> {
        Ok(self
            .read_bytes()?
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect())
    }

    /// Walk the chain from the genesis record and report the first record that was edited,
    /// removed, reordered or cut short; with `expect_head`, also check that this hash (printed
    /// by an earlier verification and kept elsewhere) is still a record of the chain. With a
    /// `store`, also check each job's history against the digests last recorded for it.
    pub fn verify(
        &self,
        expect_head: Option<&str>,
        store: Option<&dyn StateStore>,
    ) -> Result<Verification, AuditError> {
        // The store's jobs are listed before the log is read: a job pruned meanwhile then has
        // its `job.pruned` record in what is read, and is not taken for one removed by hand.
        let listed = store.map(StateStore::list);
        let bytes = self.read_bytes()?;
        let mut verification = verify_chain(&bytes, expect_head);
        if let (Some(store), Some(listed)) = (store, listed) {
            // Every record that parses, those past a broken link included: the chain's problem
            // is reported once, and the histories are compared with what the log does record
            // (without them, every job recorded past an edited line looked unaudited).
            let records: Vec<(usize, AuditRecord)> = bytes
                .split(|b| *b == b'\n')
                .enumerate()
                .filter_map(|(index, line)| {
                    serde_json::from_slice::<AuditRecord>(line)
                        .ok()
                        .map(|record| (index + 1, record))
                })
                .collect();
            verification.jobs = check_histories(store, listed, &records);
        }
        Ok(verification)
    }
}

/// The lines (each ending in a newline) that append `records` to a trail whose last complete
/// line is `last` (`None` when empty; a genesis record then starts the chain, stamped with
/// `first`'s trace id) and that ends with a newline or not: what [`AuditLog::append_all`] gives
/// its storage under the lock, public so that a database backend can write the same lines in the
/// transaction of the change they describe.
pub fn chain_lines(
    records: &[AuditRecord],
    first: &AuditRecord,
    last: Option<&[u8]>,
    ends_with_newline: bool,
) -> io::Result<Vec<u8>> {
    let mut lines = Vec::new();
    // A crash mid-append can leave a last line without its newline; end it first, or
    // this record would be glued to it and lost to every reader. The chain skips it.
    if !ends_with_newline {
        lines.push(b'\n');
    }
    let (mut seq, mut prev) = match last {
        Some(line) => {
            let seq = serde_json::from_slice::<Link>(line)
                .ok()
                .and_then(|link| link.seq)
                .map_or(1, |seq| seq + 1);
            (seq, sha256_hex(line))
        }
        None => {
            let genesis = AuditRecord::new(
                None,
                &first.trace_id,
                None,
                GENESIS_EVENT,
                serde_json::json!({
                    "chain": "each record's prev is the SHA-256 of the previous record's exact bytes (its line without the newline)"
                }),
            );
            let line = chained(&genesis, 0, GENESIS_PREV)?;
            let hash = sha256_hex(&line);
            lines.extend_from_slice(&line);
            lines.push(b'\n');
            (1, hash)
        }
    };
    for record in records {
        let line = chained(record, seq, &prev)?;
        prev = sha256_hex(&line);
        seq += 1;
        lines.extend_from_slice(&line);
        lines.push(b'\n');
    }
    Ok(lines)
}

/// `record` serialized with its place in the chain.
fn chained(record: &AuditRecord, seq: u64, prev: &str) -> io::Result<Vec<u8>> {
    let mut record = record.clone();
    record.seq = Some(seq);
    record.prev = Some(prev.to_owned());
    serde_json::to_vec(&record).map_err(io::Error::other)
}

/// Whether `file` is empty or ends in `\n`, and its last record (without the newline): its last
/// complete line or, when a crash tore away only the newline after a whole record, that record,
/// which the verifier counts as one ([`verify_chain`]) and the next append must chain from.
fn tail(file: &File) -> io::Result<(bool, Option<Vec<u8>>)> {
    let tail = tail_lines(file)?;
    let whole = tail
        .unterminated
        .filter(|line| serde_json::from_slice::<Link>(line).is_ok_and(|link| link.seq.is_some()));
    Ok((tail.ends_with_newline, whole.or(tail.last)))
}

/// The end of a trail, as [`tail_lines`] reads it.
struct Tail {
    /// Whether the trail is empty or ends in `\n`.
    ends_with_newline: bool,
    /// Its last complete line, without the newline.
    last: Option<Vec<u8>>,
    /// What follows that line when the trail does not end in a newline.
    unterminated: Option<Vec<u8>>,
}

/// The end of the trail `file`.
fn tail_lines(file: &File) -> io::Result<Tail> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(Tail {
            ends_with_newline: true,
            last: None,
            unterminated: None,
        });
    }
    let mut buffer: Vec<u8> = Vec::new();
    let mut position = length;
    loop {
        let chunk = position.min(8192);
        position -= chunk;
        let mut read = vec![0u8; usize::try_from(chunk).unwrap_or(8192)];
        file.read_exact_at(&mut read, position)?;
        read.extend_from_slice(&buffer);
        buffer = read;
        let ends_with_newline = buffer.last() == Some(&b'\n');
        let after = |end: usize| (!ends_with_newline).then(|| buffer[end + 1..].to_vec());
        match buffer.iter().rposition(|b| *b == b'\n') {
            Some(end) => {
                let start = buffer[..end].iter().rposition(|b| *b == b'\n');
                if start.is_some() || position == 0 {
                    let first = start.map_or(0, |start| start + 1);
                    return Ok(Tail {
                        ends_with_newline,
                        last: Some(buffer[first..end].to_vec()),
                        unterminated: after(end),
                    });
                }
            }
            None if position == 0 => {
                return Ok(Tail {
                    ends_with_newline: false,
                    last: None,
                    unterminated: Some(buffer),
                });
            }
            None => {}
        }
    }
}

/// Check the chain of the log `bytes`.
pub fn verify_chain(bytes: &[u8], expect_head: Option<&str>) -> Verification {
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // A log ending in a newline splits into an empty last piece: not a line.
    let complete = bytes.is_empty() || bytes.ends_with(b"\n");
    if complete {
        lines.pop();
    }
    let hashes: Vec<String> = lines.iter().map(|line| sha256_hex(line)).collect();
    let links: Vec<Option<Link>> = lines
        .iter()
        .map(|line| serde_json::from_slice(line).ok())
        .collect();
    let mut verification = Verification {
        records: lines.len(),
        head: None,
        problem: None,
        jobs: Vec::new(),
        notes: Vec::new(),
    };
    let problem = |line: usize, kind: Tampering, message: String| {
        Some(ChainProblem {
            line,
            kind,
            message,
        })
    };
    let truncated = |index: usize| !complete && index + 1 == lines.len();
    // The chained lines seen so far (index of the last one) and the next expected seq.
    let mut last: Option<usize> = None;
    let mut expected = 0u64;
    for (index, link) in links.iter().enumerate() {
        let number = index + 1;
        let Some(link) = link else {
            if truncated(index) {
                verification.problem = problem(
                    number,
                    Tampering::Truncated,
                    format!("line {number}: the last record is cut short"),
                );
                break;
            }
            // A torn line a crash left: the next append chained past it.
            let wanted_prev = last.map_or(GENESIS_PREV, |last| hashes[last].as_str());
            let skipped = links
                .get(index + 1)
                .and_then(Option::as_ref)
                .is_some_and(|next| {
                    next.seq == Some(expected) && next.prev.as_deref() == Some(wanted_prev)
                });
            if skipped {
                verification.notes.push(format!(
                    "line {number}: a torn write left by a crash; the chain skips it"
                ));
                continue;
            }
            verification.problem = problem(
                number,
                Tampering::Edited,
                format!("line {number}: not a record (edited)"),
            );
            break;
        };
        let Some(seq) = link.seq else {
            verification.problem = problem(
                number,
                Tampering::Edited,
                format!(
                    "line {number}: the record has no sequence number (edited, or written before the log was chained)"
                ),
            );
            break;
        };
        let prev = link.prev.as_deref().unwrap_or("");
        let Some(previous) = last else {
            // The first line must be the genesis record.
            if seq == 0 && prev == GENESIS_PREV && link.event.as_deref() == Some(GENESIS_EVENT) {
                last = Some(index);
                expected = 1;
                continue;
            }
            verification.problem = if seq > 0 {
                problem(
                    number,
                    Tampering::Removed,
                    format!(
                        "line {number}: records 0 to {} were removed from the start of the log",
                        seq - 1
                    ),
                )
            } else {
                problem(
                    number,
                    Tampering::Edited,
                    format!("line {number}: the genesis record was edited"),
                )
            };
            break;
        };
        if seq == expected && prev == hashes[previous] {
            last = Some(index);
            expected += 1;
            continue;
        }
        let found_later = |wanted: u64| {
            links[index + 1..]
                .iter()
                .any(|later| later.as_ref().is_some_and(|l| l.seq == Some(wanted)))
        };
        verification.problem = if seq == expected {
            let edited = previous + 1;
            problem(
                edited,
                Tampering::Edited,
                format!(
                    "line {edited}: the record was edited (line {number} recorded another hash for it)"
                ),
            )
        } else if seq < expected || found_later(expected) {
            problem(
                number,
                Tampering::Reordered,
                format!(
                    "line {number}: records are out of order (record {seq} where record {expected} belongs)"
                ),
            )
        } else {
            problem(
                number,
                Tampering::Removed,
                format!(
                    "line {number}: {} record(s) removed before it (records {expected} to {})",
                    seq - expected,
                    seq - 1
                ),
            )
        };
        break;
    }
    if verification.problem.is_none() {
        verification.head = last.map(|index| hashes[index].clone());
        if let Some(expected_head) = expect_head {
            let expected_head = expected_head.trim().to_ascii_lowercase();
            match hashes.iter().position(|hash| *hash == expected_head) {
                Some(index) if Some(index) == last => {}
                Some(index) if links[index].is_some() => {
                    verification.notes.push(format!(
                        "the anchored head is line {}; {} line(s) were appended after it",
                        index + 1,
                        lines.len() - index - 1
                    ));
                }
                _ => {
                    let number = lines.len();
                    verification.problem = problem(
                        number,
                        Tampering::HeadMismatch,
                        format!(
                            "the anchored head {expected_head} is not a record of the log: it was rewritten from some point, or records were cut from its end"
                        ),
                    );
                    verification.head = None;
                }
            }
        }
    }
    verification
}

/// Each job's history against the last digests recorded for it in `records` (with their line
/// numbers). A job a live `mc` drives may be one write ahead of its record.
fn check_histories(
    store: &dyn StateStore,
    listed: Result<Vec<JobId>, crate::state::StateError>,
    records: &[(usize, AuditRecord)],
) -> Vec<HistoryProblem> {
    let mut recorded: BTreeMap<JobId, (usize, HistoryDigests)> = BTreeMap::new();
    // Every digest recorded for a job, not only the last: a history cut back and extended
    // again (a final record removed, then `FAILED` appended) matches its last record, and not
    // the ones before it.
    let mut every: BTreeMap<JobId, Vec<(usize, HistoryDigests)>> = BTreeMap::new();
    let mut files: BTreeMap<JobId, (usize, BTreeMap<String, String>)> = BTreeMap::new();
    for (line, record) in records {
        if let (Some(job_id), Some(history)) = (record.job_id, record.history()) {
            recorded.insert(job_id, (*line, history.clone()));
            every.entry(job_id).or_default().push((*line, history));
        }
        if let (Some(job_id), Some(digests)) = (
            record.job_id,
            record
                .details
                .get("files")
                .and_then(|files| serde_json::from_value(files.clone()).ok()),
        ) {
            files.insert(job_id, (*line, digests));
        }
    }
    let mut problems = Vec::new();
    let jobs = match listed {
        Ok(jobs) => jobs,
        Err(error) => {
            return vec![HistoryProblem {
                job_id: JobId::nil(),
                message: error.to_string(),
            }];
        }
    };
    let listed: std::collections::HashSet<JobId> = jobs.iter().copied().collect();
    for job_id in jobs.into_iter().rev() {
        let history = match store.history(job_id) {
            Ok(history) => history,
            Err(error) => {
                problems.push(HistoryProblem {
                    job_id,
                    message: format!("job {job_id}: {error}"),
                });
                continue;
            }
        };
        if let Some((line, digests)) = files.get(&job_id) {
            match store.file_digests(job_id) {
                Ok(current) => {
                    for (name, digest) in digests {
                        if current.get(name) != Some(digest) {
                            problems.push(HistoryProblem {
                                job_id,
                                message: format!(
                                    "job {job_id}: {name} no longer matches its recorded digest (audit line {line}): it was edited"
                                ),
                            });
                        }
                    }
                }
                Err(error) => problems.push(HistoryProblem {
                    job_id,
                    message: format!("job {job_id}: {error}"),
                }),
            }
        }
        if let Some(message) = earlier_mismatch(
            job_id,
            &history.state,
            &history.steps,
            every.get(&job_id).map_or(&[][..], Vec::as_slice),
        ) {
            problems.push(HistoryProblem { job_id, message });
            continue;
        }
        let live = store.is_live(job_id).unwrap_or(false);
        if let Some(message) = history_mismatch(
            job_id,
            &history.state,
            &history.steps,
            recorded.get(&job_id),
            live,
            &|| {
                let record = store.load(job_id).ok()?;
                spec_step_names(store, &record.meta)
            },
        ) {
            problems.push(HistoryProblem { job_id, message });
        }
    }
    // A job the log records is in the store, unless the log also records its pruning: a job
    // removed by hand takes its history with it, and the log is what says it was there.
    let pruned: std::collections::HashSet<JobId> = records
        .iter()
        .filter(|(_, record)| record.event == "job.pruned")
        .filter_map(|(_, record)| record.job_id)
        .collect();
    for (job_id, (line, _)) in &recorded {
        // Listed before the log was read, so a job pruned meanwhile has its `job.pruned` in
        // `records`; one stored meanwhile is in the log and not in the listing: asked again.
        let missing = !listed.contains(job_id)
            && !pruned.contains(job_id)
            && matches!(
                store.history(*job_id),
                Err(crate::state::StateError::NotFound { .. })
            );
        if missing {
            problems.push(HistoryProblem {
                job_id: *job_id,
                message: format!(
                    "job {job_id}: the audit log records its history (last at line {line}), but the store has no such job and the log no record of its pruning: it was removed by hand"
                ),
            });
        }
    }
    problems
}

/// The first of a job's recorded digests that its history no longer begins with: an entry
/// that was audited has been changed or removed since. (The last digest is left to
/// [`history_mismatch`], which also tells a crash's unaudited entries from an edit.)
fn earlier_mismatch(
    job_id: JobId,
    state: &[u8],
    steps: &[u8],
    recorded: &[(usize, HistoryDigests)],
) -> Option<String> {
    let (Some(states), Some(step_entries)) = (array_entries(state), array_entries(steps)) else {
        return None;
    };
    let (_, earlier) = recorded.split_last()?;
    for (line, digests) in earlier {
        for (name, entries, digest) in [
            ("its transitions", &states, &digests.state),
            ("its step results", &step_entries, &digests.steps),
        ] {
            let kept = entries.len() >= digest.entries
                && sha256_hex(&array_bytes(&entries[..digest.entries])) == digest.sha256;
            if !kept {
                return Some(format!(
                    "job {job_id}: {name} no longer match what audit line {line} recorded: the history was edited"
                ));
            }
        }
    }
    None
}

/// A job's history as entries: its transitions and its step results, each with how many of
/// the first were audited.
pub(crate) struct Unaudited<'a> {
    pub(crate) states: &'a [&'a [u8]],
    pub(crate) audited_states: usize,
    pub(crate) steps: &'a [&'a [u8]],
    pub(crate) audited_steps: usize,
}

/// Why entries a job's history holds beyond what was audited cannot be what a crash left, or
/// `None` when they can: a crash leaves only what the runner would have audited next. So:
/// transitions the lifecycle allows, at times that do not go back; nothing after a final
/// state; step results that are the spec's steps (`spec_steps`, when the spec could be read),
/// in order; and `SUCCEEDED` only after a succeeded result for every step.
pub(crate) fn illegal_continuation(
    history: &Unaudited<'_>,
    spec_steps: Option<&[String]>,
) -> Option<String> {
    let value = |entry: &[u8]| serde_json::from_slice::<serde_json::Value>(entry).ok();
    let state_of = |entry: &[u8]| {
        value(entry).and_then(|value| {
            serde_json::from_value::<crate::state::JobState>(value["state"].clone()).ok()
        })
    };
    let time_of = |entry: &[u8]| {
        value(entry).and_then(|value| value["at"].as_str()?.parse::<jiff::Timestamp>().ok())
    };
    let Unaudited {
        states,
        audited_states,
        steps,
        audited_steps,
    } = *history;
    let mut previous = match audited_states.checked_sub(1) {
        Some(last) => Some(state_of(states.get(last)?)?),
        None => None,
    };
    let mut previous_time = audited_states
        .checked_sub(1)
        .and_then(|last| time_of(states.get(last)?));
    if steps.len() > audited_steps
        && let Some(state) = previous.filter(|state| state.is_terminal())
    {
        return Some(format!(
            "step results recorded after the final state {state}"
        ));
    }
    for (index, entry) in steps.iter().enumerate().skip(audited_steps) {
        let name = value(entry).and_then(|value| value["name"].as_str().map(str::to_owned));
        if let Some(spec_steps) = spec_steps
            && name.as_deref() != spec_steps.get(index).map(String::as_str)
        {
            return Some(format!(
                "step result {} is {}, not the job's step {} ({})",
                index + 1,
                name.map_or_else(|| "not a step".to_owned(), |name| format!("{name:?}")),
                index + 1,
                spec_steps
                    .get(index)
                    .map_or_else(|| "it has no more".to_owned(), |name| format!("{name:?}"))
            ));
        }
    }
    for (index, entry) in states.iter().enumerate().skip(audited_states) {
        let Some(next) = state_of(entry) else {
            return Some(format!("transition {} is not a state", index + 1));
        };
        let legal = match previous {
            None => next.can_start(),
            Some(state) => state.can_transition_to(next),
        };
        if !legal {
            return Some(match previous {
                None => format!("the history starts with {next}"),
                Some(state) => format!(
                    "transition {} is {state} -> {next}, which no job makes",
                    index + 1
                ),
            });
        }
        let at = time_of(entry);
        if let (Some(before), Some(at)) = (previous_time, at)
            && at < before
        {
            return Some(format!(
                "transition {} ({next}) is dated before the one it follows",
                index + 1
            ));
        }
        if next == crate::state::JobState::Succeeded
            && let Some(spec_steps) = spec_steps
        {
            let all_succeeded = steps.len() == spec_steps.len()
                && steps
                    .iter()
                    .all(|step| value(step).is_some_and(|value| value["status"] == "succeeded"));
            if !all_succeeded {
                return Some(format!(
                    "transition {} is SUCCEEDED without a succeeded result for each of the job's {} steps",
                    index + 1,
                    spec_steps.len()
                ));
            }
        }
        previous = Some(next);
        previous_time = at.or(previous_time);
    }
    None
}

/// The names of the steps of the job `meta` describes, from its stored spec; `None` when it
/// cannot be read.
pub(crate) fn spec_step_names(
    store: &dyn StateStore,
    meta: &crate::state::JobMeta,
) -> Option<Vec<String>> {
    let bytes = store.spec(meta.job_id).ok()?;
    let format = crate::spec::SpecFormat::from_file_name(&meta.spec_file);
    let spec = crate::spec::parse(&bytes, format).ok()?;
    Some(spec.steps.into_iter().map(|step| step.name).collect())
}

/// What is wrong with a job's history files given the last digests recorded for them.
fn history_mismatch(
    job_id: JobId,
    state: &[u8],
    steps: &[u8],
    recorded: Option<&(usize, HistoryDigests)>,
    live: bool,
    spec_steps: &dyn Fn() -> Option<Vec<String>>,
) -> Option<String> {
    let empty = sha256_hex(b"[]\n");
    let (line, digests) = match recorded {
        Some((line, digests)) => (Some(*line), digests.clone()),
        None => (
            None,
            HistoryDigests {
                state: crate::state::FileDigest {
                    entries: 0,
                    sha256: empty.clone(),
                },
                steps: crate::state::FileDigest {
                    entries: 0,
                    sha256: empty,
                },
            },
        ),
    };
    let at = line.map_or_else(
        || "no audit record has its digest".to_owned(),
        |line| format!("audit line {line}"),
    );
    // Entries past the recorded ones, per file; an edit anywhere is said first.
    let mut extras = Vec::new();
    for (name, noun, bytes, digest) in [
        ("its transitions", "transition", state, &digests.state),
        ("its step results", "step result", steps, &digests.steps),
    ] {
        if sha256_hex(bytes) == digest.sha256 {
            continue;
        }
        match prefix_matches(bytes, digest) {
            Some(extra) => extras.push(format!(
                "{extra} {noun}{}",
                if extra == 1 { "" } else { "s" }
            )),
            None => {
                return Some(format!(
                    "job {job_id}: {name} no longer match their last recorded digest ({at}): the history was edited"
                ));
            }
        }
    }
    // A job a live `mc` drives may be one write ahead of its record.
    if extras.is_empty() || live {
        return None;
    }
    if line.is_none()
        && let (Some(states), Some(step_entries)) = (array_entries(state), array_entries(steps))
        && beyond_creation(states.len(), step_entries.len())
    {
        return Some(format!(
            "job {job_id}: the audit log has none of its history, yet it has {}, past its creation, which no crash leaves: the log lost its records, or the job was made by hand",
            extras.join(" and ")
        ));
    }
    if let Some(why) = unaudited_but_illegal(state, steps, &digests, spec_steps) {
        return Some(format!(
            "job {job_id}: its history goes on past what {at} recorded with what no crash leaves ({why}): the history was edited"
        ));
    }
    Some(format!(
        "job {job_id}: its history has {} the audit log does not show (after {at}): a crash; `mc gc` records them",
        extras.join(" and ")
    ))
}

/// Whether a history of `states` transitions and `steps` step results goes past its job's
/// creation. The runner audits a creation (`SUBMITTED` and the state it is stored with) before
/// it writes anything else for the job, and a crash loses only the records of a job's last
/// write: such a history with no audit record at all lost its records some other way.
pub(crate) fn beyond_creation(states: usize, steps: usize) -> bool {
    steps > 0 || states > 2
}

/// [`illegal_continuation`] of a history whose first entries are what `digests` recorded.
fn unaudited_but_illegal(
    state: &[u8],
    steps: &[u8],
    digests: &HistoryDigests,
    spec_steps: &dyn Fn() -> Option<Vec<String>>,
) -> Option<String> {
    let states = array_entries(state)?;
    let step_entries = array_entries(steps)?;
    let history = Unaudited {
        states: &states,
        audited_states: digests.state.entries,
        steps: &step_entries,
        audited_steps: digests.steps.entries,
    };
    illegal_continuation(&history, spec_steps().as_deref())
}

/// How many entries `bytes` holds beyond the `digest.entries` first ones, if those are exactly
/// what `digest` recorded.
pub fn prefix_matches(bytes: &[u8], digest: &crate::state::FileDigest) -> Option<usize> {
    let entries = array_entries(bytes)?;
    if entries.len() < digest.entries {
        return None;
    }
    (sha256_hex(&array_bytes(&entries[..digest.entries])) == digest.sha256)
        .then(|| entries.len() - digest.entries)
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    #[test]
    fn a_whole_record_without_its_newline_is_chained_from() {
        // A crash that tore away only the newline after a record: the verifier counts the
        // record, so the next append must chain from it, not from the line before it.
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        let trace = TraceId::parse("t").unwrap();
        let record =
            |event: &str| AuditRecord::new(None, &trace, None, event, serde_json::Value::Null);
        log.append_all(&[record("one"), record("two")]).unwrap();
        let path = dir.path().join("audit.log");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(log.verify(None, None).unwrap().intact());
        log.append(&record("three")).unwrap();
        let verification = log.verify(None, None).unwrap();
        assert!(verification.intact(), "{verification:?}");
        assert!(verification.notes.is_empty(), "{verification:?}");
        let events: Vec<String> = log
            .read_all()
            .unwrap()
            .into_iter()
            .map(|record| record.event)
            .collect();
        assert_eq!(events, [GENESIS_EVENT, "one", "two", "three"]);
    }

    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        let trace = TraceId::parse("t").unwrap();
        let record =
            |event: &str| AuditRecord::new(None, &trace, None, event, serde_json::Value::Null);
        log.append(&record("before")).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("audit.log"))
            .unwrap();
        file.write_all(b"{\"at\":\"torn").unwrap();
        log.append(&record("after")).unwrap();
        let records = log.read_all().unwrap();
        let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(events, [GENESIS_EVENT, "before", "after"]);
        let verification = log.verify(None, None).unwrap();
        assert!(verification.intact(), "{verification:?}");
        assert_eq!(verification.notes.len(), 1, "{verification:?}");
        // Streamed, the records are the same, a last line without its newline included.
        file.write_all(b"{\"at\":\"torn again").unwrap();
        let mut streamed = Vec::new();
        log.for_each(&mut |record| streamed.push(record.event))
            .unwrap();
        assert_eq!(streamed, [GENESIS_EVENT, "before", "after"]);
        let mut lines = 0;
        FileAudit::new(dir.path())
            .for_each_line(&mut |line| {
                lines += 1;
                assert!(!line.ends_with(b"\n"));
            })
            .unwrap();
        assert_eq!(lines, 5, "four lines and the torn last one");
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
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(text.lines().count(), 201, "200 and the genesis record");
        assert_eq!(log.read_all().unwrap().len(), 201);
        let verification = log.verify(None, None).unwrap();
        assert!(verification.intact(), "{verification:?}");
        assert!(verification.head.is_some());
        // Every append written was made durable (some by another's sync), counted by the one
        // group every handle on this file shares.
        let (written, synced, syncing) = FileAudit::new(dir.path()).syncs.numbers();
        assert_eq!((synced, syncing), (written, false));
        assert!(written >= 200, "{written}");
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    fn log_of(count: usize) -> (tempfile::TempDir, AuditLog, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        let trace = TraceId::parse("t").unwrap();
        for n in 0..count {
            log.append(&AuditRecord::new(
                None,
                &trace,
                None,
                "test",
                serde_json::json!({ "n": n }),
            ))
            .unwrap();
        }
        let bytes = std::fs::read(dir.path().join("audit.log")).unwrap();
        (dir, log, bytes)
    }

    fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn join(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line);
            bytes.push(b'\n');
        }
        bytes
    }

    #[test]
    fn an_intact_chain_has_a_head_that_can_be_anchored() {
        let (_dir, _log, bytes) = log_of(5);
        let verification = verify_chain(&bytes, None);
        assert!(verification.intact(), "{verification:?}");
        let head = verification.head.unwrap();
        assert_eq!(head, sha256_hex(lines(&bytes).last().unwrap()));
        assert!(verify_chain(&bytes, Some(&head)).intact());
        let earlier = sha256_hex(&lines(&bytes)[3]);
        let anchored = verify_chain(&bytes, Some(&earlier));
        assert!(anchored.intact());
        assert_eq!(anchored.notes.len(), 1);
        assert!(verify_chain(b"", None).intact());
    }

    #[test]
    fn each_tampering_is_found_at_its_line() {
        let (_dir, _log, bytes) = log_of(6);
        let original = lines(&bytes);
        let check = |lines: &[Vec<u8>], kind: Tampering, line: usize| {
            let problem = verify_chain(&join(lines), None).problem.expect("a problem");
            assert_eq!((problem.kind, problem.line), (kind, line), "{problem:?}");
        };
        let mut edited = original.clone();
        edited[2] = String::from_utf8(edited[2].clone())
            .unwrap()
            .replace("\"n\":1", "\"n\":7")
            .into_bytes();
        check(&edited, Tampering::Edited, 3);
        let mut removed = original.clone();
        removed.remove(3);
        check(&removed, Tampering::Removed, 4);
        let mut reordered = original.clone();
        reordered.swap(3, 4);
        check(&reordered, Tampering::Reordered, 4);
        let mut truncated = join(&original);
        truncated.truncate(truncated.len() - 10);
        let problem = verify_chain(&truncated, None).problem.unwrap();
        assert_eq!((problem.kind, problem.line), (Tampering::Truncated, 7));
        check(&original[1..], Tampering::Removed, 1);
    }

    #[test]
    fn an_anchored_head_catches_a_rewrite_from_the_tampered_point() {
        let (dir, log, bytes) = log_of(4);
        let head = verify_chain(&bytes, None).head.unwrap();
        // Rewrite: keep the first three lines and re-append different records after them,
        // chained correctly, as someone who knows the format would.
        let kept = join(&lines(&bytes)[..3]);
        std::fs::write(dir.path().join("audit.log"), &kept).unwrap();
        let trace = TraceId::parse("t").unwrap();
        for n in 0..3 {
            log.append(&AuditRecord::new(
                None,
                &trace,
                None,
                "forged",
                serde_json::json!({ "n": n }),
            ))
            .unwrap();
        }
        let forged = std::fs::read(dir.path().join("audit.log")).unwrap();
        assert!(
            verify_chain(&forged, None).intact(),
            "the chain alone cannot tell"
        );
        let problem = verify_chain(&forged, Some(&head)).problem.unwrap();
        assert_eq!(problem.kind, Tampering::HeadMismatch);
        drop(dir);
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;
    use crate::state::FileDigest;

    fn digest(entries: &[&[u8]]) -> FileDigest {
        FileDigest {
            entries: entries.len(),
            sha256: sha256_hex(&array_bytes(entries)),
        }
    }

    #[test]
    fn entries_past_the_record_are_a_crash_only_when_nothing_recorded_was_edited() {
        let submitted: &[u8] = br#"{"state":"SUBMITTED","at":"2026-12-01T10:00:00.000000Z"}"#;
        let running: &[u8] = br#"{"state":"RUNNING","at":"2026-12-01T10:00:00.000001Z"}"#;
        let failed: &[u8] = br#"{"state":"FAILED","at":"2026-12-01T10:00:01.000000Z"}"#;
        let step_a: &[u8] = br#"{"name":"a","status":"failed"}"#;
        let edited_a: &[u8] = br#"{"name":"a","status":"succeeded"}"#;
        let recorded = HistoryDigests {
            state: digest(&[submitted, running]),
            steps: digest(&[step_a]),
        };
        let mismatch = |states: &[&[u8]], steps: &[&[u8]]| {
            history_mismatch(
                JobId::nil(),
                &array_bytes(states),
                &array_bytes(steps),
                Some(&(7, recorded.clone())),
                false,
                &|| None,
            )
        };
        // A crash: the final transition written, not audited.
        let crash = mismatch(&[submitted, running, failed], &[step_a]).unwrap();
        assert!(
            crash.contains("its history has 1 transition the audit log does not show"),
            "{crash}"
        );
        // The same, and an audited step result changed: an edit, whatever else is past.
        let edit = mismatch(&[submitted, running, failed], &[edited_a]).unwrap();
        assert!(edit.contains("the history was edited"), "{edit}");
        assert!(edit.contains("its step results"), "{edit}");
        // Nothing past the record: nothing to say.
        assert_eq!(mismatch(&[submitted, running], &[step_a]), None);
    }
}
