//! A step's output on its way to the step log (and to whoever watches live).
//!
//! Executors hand [`StepOutput::write`] raw chunks as they read them; it splits them into lines,
//! stamps, numbers and tags each line, writes it to the log file and passes it to the live
//! observer. The log line format is `<RFC 3339 time>#<seq> <out|err>[+] <text>`: `seq` numbers
//! the step's recorded lines from 1 without gaps (so a reader can resume after the last one it
//! saw), and `+` marks a line cut at [`MAX_LINE_BYTES`] that the next line continues, so a step
//! that prints a gigabyte without a newline still costs bounded memory. Lines starting with `# `
//! are Maestro's own notes (header, footer, truncation, gaps).
//!
//! A step's output is recorded up to a cap ([`DEFAULT_MAX_OUTPUT_BYTES`] unless
//! [`StepOutput::limit`] sets another): past it, nothing more is recorded or shown, a note says
//! so at once, and the footer says how many bytes were dropped.
//!
//! With [`StepOutput::mask_with`], every line (notes included) passes through the job's
//! [`Masker`] before it is recorded or shown: secrets are replaced by `***` in the one place
//! every executor's output goes through. Masking works on whole lines, so a value split
//! between two reads is still seen whole; a line cut at [`MAX_LINE_BYTES`] is cut where no
//! value straddles the cut, the bytes after it carried over to the next piece.

use std::io::{self, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::secret::Masker;
use crate::state::LogSink;
use crate::time::now_rfc3339;

/// The longest line kept in one piece; longer lines are cut into continuation lines.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The output of one step recorded by default; the rest is dropped, and the log says so.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 256 * 1024 * 1024;

/// The start of the notes that say a log was truncated.
pub const TRUNCATED_NOTE: &str = "truncated:";

/// How much output a deferring sink keeps before writing it.
pub const DEFERRED_BYTES: usize = 256 * 1024;

/// How soon an executor that defers writes must flush once its step goes quiet.
pub const FLUSH_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The tag used in step logs: `out` or `err`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Stdout => "out",
            Self::Stderr => "err",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Stdout => 0,
            Self::Stderr => 1,
        }
    }
}

/// Receives a step's output live, as it is recorded (the CLI prints it prefixed by step name).
///
/// The other methods tell where the job is, for a live view; they do nothing unless overridden.
pub trait OutputObserver: Send + Sync {
    /// `lines` holds one or more complete lines of `stream`, each ending in `\n`.
    fn output(&self, step: &str, stream: Stream, lines: &[u8]);

    /// The job is stored under `job_id`: nothing of it has run yet.
    fn job_stored(&self, _job_id: crate::JobId, _trace_id: &crate::trace::TraceId) {}

    /// A step starts on `runtime`.
    fn step_started(&self, _step: &str, _runtime: &str) {}

    /// A step ended; `record` is what was recorded of it.
    fn step_finished(&self, _record: &crate::state::StepRecord) {}
}

/// The output sink an executor writes a step's output into.
pub struct StepOutput {
    step: String,
    log: Box<dyn LogSink>,
    /// Log bytes not yet written: one chunk's, or more with [`StepOutput::defer_writes`].
    pending: Vec<u8>,
    deferred: bool,
    observer: Option<Arc<dyn OutputObserver>>,
    partial: [Vec<u8>; 2],
    live: Vec<u8>,
    bytes: u64,
    masker: Option<Arc<Masker>>,
    /// A line being masked, gathered from its pieces.
    scratch: Vec<u8>,
    /// The sequence number of the last recorded line.
    seq: u64,
    /// How many bytes of output are recorded at most.
    cap: u64,
    /// Bytes of output not recorded because of the cap.
    dropped: u64,
}

impl StepOutput {
    /// A sink writing to `log` (a new, empty log, e.g. a file) whose first line is the note
    /// `header`.
    pub fn new(
        step: &str,
        log: impl LogSink + 'static,
        header: &str,
        observer: Option<Arc<dyn OutputObserver>>,
    ) -> io::Result<Self> {
        let mut output = Self {
            step: step.to_owned(),
            log: Box::new(log),
            pending: Vec::with_capacity(DEFERRED_BYTES + 64 * 1024),
            deferred: false,
            observer,
            partial: [Vec::new(), Vec::new()],
            live: Vec::new(),
            bytes: 0,
            masker: None,
            scratch: Vec::new(),
            seq: 0,
            cap: DEFAULT_MAX_OUTPUT_BYTES,
            dropped: 0,
        };
        output.note(header)?;
        Ok(output)
    }

    /// Mask the job's secrets in everything recorded or shown from now on.
    pub fn mask_with(&mut self, masker: Arc<Masker>) {
        self.masker = (!masker.is_empty()).then_some(masker);
    }

    /// Record at most `cap` bytes of the step's output; the rest is counted, not recorded.
    pub fn limit(&mut self, cap: u64) {
        self.cap = cap;
    }

    /// How many bytes of output were dropped because of the cap.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Record a chunk of `stream` as read from the step: any number of bytes, not necessarily
    /// whole lines. The chunk reaches the log file (not yet fsynced) before this returns, so
    /// `mc logs --follow` sees it.
    pub fn write(&mut self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let recorded = self.bytes - self.dropped;
        self.bytes += chunk.len() as u64;
        if self.dropped > 0 {
            self.dropped += chunk.len() as u64;
            return Ok(());
        }
        let room = self.cap.saturating_sub(recorded);
        let chunk = if (chunk.len() as u64) > room {
            self.dropped = chunk.len() as u64 - room;
            let kept = &chunk[..usize::try_from(room).unwrap_or(chunk.len())];
            self.record(stream, kept)?;
            // Nothing more comes: what was waiting for its newline is recorded now, before the
            // note, less any start of a secret's value at its end (the rest of the value,
            // which masking would need to see it, is dropped).
            if let Some(masker) = &self.masker {
                for partial in &mut self.partial {
                    let end = masker.end_before_partial(partial);
                    self.dropped += (partial.len() - end) as u64;
                    partial.truncate(end);
                }
            }
            self.end_partial_lines();
            let cap = self.cap;
            return self.note(&format!(
                "{TRUNCATED_NOTE} the step's output passed the cap of {cap} bytes; the rest is not recorded"
            ));
        } else {
            chunk
        };
        self.record(stream, chunk)
    }

    fn record(&mut self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        // One timestamp per chunk: formatting one per line would dominate the cost of a step
        // that prints millions of short lines, and lines of one read arrived at the same moment.
        let at = now_rfc3339();
        let index = stream.index();
        let mut rest = chunk;
        while !rest.is_empty() {
            let partial_len = self.partial[index].len();
            match memchr_newline(rest) {
                Some(end) if partial_len + end <= MAX_LINE_BYTES => {
                    let partial = std::mem::take(&mut self.partial[index]);
                    self.emit(&at, false, stream, &partial, &rest[..end]);
                    self.partial[index] = partial;
                    self.partial[index].clear();
                    rest = &rest[end + 1..];
                }
                _ => {
                    let room = MAX_LINE_BYTES - partial_len;
                    let take = room.min(rest.len());
                    self.partial[index].extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.partial[index].len() == MAX_LINE_BYTES {
                        let mut full = std::mem::take(&mut self.partial[index]);
                        // No secret may straddle the cut: what could be the start of one is
                        // carried over to the next piece.
                        let keep = self
                            .masker
                            .as_ref()
                            .map_or(full.len(), |masker| masker.safe_cut(&full));
                        let carried = full.split_off(keep);
                        self.emit(&at, true, stream, &full, &[]);
                        self.partial[index] = carried;
                    }
                }
            }
            // Each line grows by its prefix: a chunk of empty lines would otherwise queue
            // thirty-odd times its own size.
            if self.pending.len() >= DEFERRED_BYTES {
                self.write_pending()?;
            }
        }
        self.flush_live(stream);
        if self.deferred && self.pending.len() < DEFERRED_BYTES {
            return Ok(());
        }
        self.write_pending()
    }

    /// Let [`write`](Self::write) keep up to [`DEFERRED_BYTES`] in memory instead of writing each
    /// chunk at once. An executor that opts in must call [`flush`](Self::flush) when its step
    /// goes quiet (within [`FLUSH_WITHIN`]), so `mc logs --follow` stays current; it saves a
    /// `write` per chunk for a step that prints in small pieces.
    pub fn defer_writes(&mut self) {
        self.deferred = true;
    }

    /// Whether recorded output is waiting to reach the log file.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Write what is waiting to the log file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }

    fn write_pending(&mut self) -> io::Result<()> {
        let result = self.log.write_all(&self.pending);
        self.pending.clear();
        result
    }

    /// Write one of Maestro's own notes (`# …`) into the log.
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        for line in text.lines() {
            self.pending.extend_from_slice(b"# ");
            match &self.masker {
                Some(masker) => masker.mask_into(line.as_bytes(), &mut self.pending),
                None => self.pending.extend_from_slice(line.as_bytes()),
            }
            self.pending.push(b'\n');
        }
        self.write_pending()
    }

    /// How many bytes of output the step produced so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Record any unterminated last lines, then flush and fsync the log so it survives a crash.
    pub fn finish(mut self, footer: &str) -> io::Result<()> {
        self.end_partial_lines();
        if self.dropped > 0 {
            let (dropped, cap) = (self.dropped, self.cap);
            self.note(&format!(
                "{TRUNCATED_NOTE} {dropped} bytes of output dropped after the cap of {cap} bytes"
            ))?;
        }
        self.note(footer)?;
        self.write_pending()?;
        self.log.sync()
    }

    /// Record the unterminated last line of each stream as a line of its own.
    fn end_partial_lines(&mut self) {
        let at = now_rfc3339();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let partial = std::mem::take(&mut self.partial[stream.index()]);
            if !partial.is_empty() {
                self.emit(&at, false, stream, &partial, &[]);
                self.flush_live(stream);
            }
        }
    }

    /// Queue one line: time, the next sequence number and the tag (`+` when `cut`), then the
    /// pending `head` of an earlier chunk and `tail` of this one.
    fn emit(&mut self, at: &str, cut: bool, stream: Stream, head: &[u8], tail: &[u8]) {
        self.seq += 1;
        let pending = &mut self.pending;
        pending.extend_from_slice(at.as_bytes());
        pending.push(b'#');
        push_decimal(pending, self.seq);
        pending.push(b' ');
        pending.extend_from_slice(stream.tag().as_bytes());
        if cut {
            pending.push(b'+');
        }
        pending.push(b' ');
        let body = pending.len();
        match &self.masker {
            Some(masker) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(head);
                self.scratch.extend_from_slice(tail);
                masker.mask_into(&self.scratch, pending);
            }
            None => {
                pending.extend_from_slice(head);
                pending.extend_from_slice(tail);
            }
        }
        pending.push(b'\n');
        if self.observer.is_some() {
            self.live.extend_from_slice(&pending[body..]);
            // `live` only ever holds lines of the stream being written (it is handed over at
            // the end of every write); bound it for a chunk of many lines.
            if self.live.len() >= 64 * 1024 {
                self.flush_live(stream);
            }
        }
    }

    fn flush_live(&mut self, stream: Stream) {
        if let Some(observer) = &self.observer
            && !self.live.is_empty()
        {
            observer.output(&self.step, stream, &self.live);
            self.live.clear();
        }
    }
}

/// Append `value` in decimal, without the formatting machinery (once per line).
fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// One recorded output line of a step log, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// When it was recorded, RFC 3339 UTC.
    pub at: &'a str,
    /// Its number within the step (from 1; 0 in logs written before lines were numbered).
    pub seq: u64,
    /// The stream it came from.
    pub stream: Stream,
    /// The line was cut at [`MAX_LINE_BYTES`]: its text goes on in the next line of the stream.
    pub continues: bool,
    /// What the step wrote, without the newline.
    pub text: &'a [u8],
}

/// Reads a recorded output line (`<time>#<seq> <out|err>[+] <text>`, with or without its
/// newline); `None` for a note (`# …`) or a line that is not one of Maestro's.
pub fn parse_line(line: &[u8]) -> Option<LogLine<'_>> {
    if line.starts_with(b"# ") {
        return None;
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(3, |b| *b == b' ');
    let stamp = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    let (at, seq) = match stamp.rsplit_once('#') {
        Some((at, seq)) => (at, seq.parse().ok()?),
        None => (stamp, 0),
    };
    let (tag, continues) = match tag.strip_suffix(b"+") {
        Some(tag) => (tag, true),
        None => (tag, false),
    };
    let stream = match tag {
        b"out" => Stream::Stdout,
        b"err" => Stream::Stderr,
        _ => return None,
    };
    Some(LogLine {
        at,
        seq,
        stream,
        continues,
        text,
    })
}

/// The sequence number of a recorded output line (`<time>#<seq> <tag> <text>`); `None` for a
/// note, or a line of a log written before lines were numbered.
pub fn line_seq(line: &[u8]) -> Option<u64> {
    if line.starts_with(b"# ") {
        return None;
    }
    let first = line.split(|b| *b == b' ').next()?;
    let hash = first.iter().rposition(|b| *b == b'#')?;
    std::str::from_utf8(&first[hash + 1..]).ok()?.parse().ok()
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use std::fs::File;

    #[test]
    fn recorded_lines_read_back() {
        let line = parse_line(b"2026-11-30T10:00:00.000001Z#7 err+ a b c\n").unwrap();
        assert_eq!(line.at, "2026-11-30T10:00:00.000001Z");
        assert_eq!(
            (line.seq, line.stream, line.continues),
            (7, Stream::Stderr, true)
        );
        assert_eq!(line.text, b"a b c");
        let old = parse_line(b"2026-11-30T10:00:00Z out x").unwrap();
        assert_eq!((old.seq, old.continues, old.text), (0, false, &b"x"[..]));
        let empty = parse_line(b"2026-11-30T10:00:00Z#1 out \n").unwrap();
        assert_eq!(empty.text, b"");
        assert_eq!(parse_line(b"# maestro step=s"), None);
        assert_eq!(parse_line(b"garbage"), None);
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<(Stream, Vec<u8>)>>);

    impl OutputObserver for Collect {
        fn output(&self, _step: &str, stream: Stream, lines: &[u8]) {
            self.0.lock().unwrap().push((stream, lines.to_vec()));
        }
    }

    fn log_lines(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn splits_chunks_into_tagged_lines_and_keeps_streams_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let observer = Arc::new(Collect::default());
        let mut output = StepOutput::new(
            "s",
            File::create(&path).unwrap(),
            "maestro step=s",
            Some(observer.clone()),
        )
        .unwrap();
        output.write(Stream::Stdout, b"one\ntw").unwrap();
        output.write(Stream::Stderr, b"oops\n").unwrap();
        output.write(Stream::Stdout, b"o\nthree").unwrap();
        output.finish("exit=0").unwrap();
        let lines = log_lines(&path);
        assert_eq!(lines[0], "# maestro step=s");
        let bodies: Vec<&str> = lines[1..4]
            .iter()
            .map(|l| l.split_once(' ').unwrap().1)
            .collect();
        assert_eq!(bodies, ["out one", "err oops", "out two"]);
        assert!(lines[4].ends_with(" out three"));
        assert_eq!(lines[5], "# exit=0");
        let seen = observer.0.lock().unwrap();
        assert!(seen.contains(&(Stream::Stderr, b"oops\n".to_vec())));
        assert!(seen.contains(&(Stream::Stdout, b"one\n".to_vec())));
        assert_eq!(output_bytes(&seen), 19);
    }

    fn output_bytes(seen: &[(Stream, Vec<u8>)]) -> usize {
        seen.iter().map(|(_, l)| l.len()).sum()
    }

    #[test]
    fn deferred_writes_wait_for_a_flush_or_enough_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut output = StepOutput::new("s", File::create(&path).unwrap(), "h", None).unwrap();
        output.defer_writes();
        output.write(Stream::Stdout, b"early\n").unwrap();
        assert!(output.has_pending());
        assert!(!std::fs::read_to_string(&path).unwrap().contains("early"));
        output.flush().unwrap();
        assert!(!output.has_pending());
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains(" out early\n")
        );
        let line = vec![b'y'; 1000];
        for _ in 0..(DEFERRED_BYTES / 1000 + 1) {
            output.write(Stream::Stdout, &line).unwrap();
            output.write(Stream::Stdout, b"\n").unwrap();
        }
        assert!(
            std::fs::metadata(&path).unwrap().len() > DEFERRED_BYTES as u64 / 2,
            "a full buffer is written without a flush"
        );
        output.write(Stream::Stderr, b"last\n").unwrap();
        output.finish("f").unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains(" err last\n# f\n")
        );
    }

    #[test]
    fn a_chunk_of_empty_lines_never_queues_much_more_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut output = StepOutput::new("s", File::create(&path).unwrap(), "h", None).unwrap();
        output.defer_writes();
        output
            .write(Stream::Stdout, &vec![b'\n'; 1024 * 1024])
            .unwrap();
        assert!(
            output.pending.len() < DEFERRED_BYTES + 64,
            "{} bytes queued",
            output.pending.len()
        );
        output.finish("f").unwrap();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 1024 * 1024 + 2);
    }

    fn masked(path: &std::path::Path, secrets: &[&str]) -> (StepOutput, Arc<Collect>) {
        let observer = Arc::new(Collect::default());
        let values: Vec<crate::secret::Secret> = secrets
            .iter()
            .map(|v| crate::secret::Secret::new(*v))
            .collect();
        let mut output = StepOutput::new(
            "s",
            File::create(path).unwrap(),
            "h",
            Some(observer.clone()),
        )
        .unwrap();
        output.mask_with(Arc::new(Masker::new(&values)));
        (output, observer)
    }

    #[test]
    fn masks_secrets_in_the_log_the_live_view_and_notes_even_split_between_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let (mut output, observer) = masked(&path, &["tok-ABCDEFGH", "line-one\nline-two"]);
        output.write(Stream::Stdout, b"a tok-ABC").unwrap();
        output.write(Stream::Stdout, b"DEFGH b\nline-").unwrap();
        output.write(Stream::Stderr, b"line-two\n").unwrap();
        output.write(Stream::Stdout, b"one\n").unwrap();
        output.note("quoting tok-ABCDEFGH").unwrap();
        output.write(Stream::Stdout, b"dG9rLUFCQ0RFRkdI").unwrap();
        output.finish("f").unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        for leak in ["ABCDEFGH", "line-one", "line-two", "dG9rLUFCQ0RFRkdI"] {
            assert!(!log.contains(leak), "{leak} in {log}");
        }
        assert!(log.contains(" out a *** b\n"), "{log}");
        assert!(log.contains("# quoting ***\n"), "{log}");
        let seen: Vec<u8> = observer
            .0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, l)| l.clone())
            .collect();
        let seen = String::from_utf8(seen).unwrap();
        assert_eq!(seen, "a *** b\n***\n***\n***\n");
    }

    #[test]
    fn a_secret_across_the_cut_of_a_huge_line_is_still_masked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let secret = "straddling-secret-value";
        let (mut output, _) = masked(&path, &[secret]);
        let mut line = vec![b'x'; MAX_LINE_BYTES - 10];
        line.extend_from_slice(secret.as_bytes());
        line.extend_from_slice(&vec![b'y'; MAX_LINE_BYTES]);
        line.push(b'\n');
        for chunk in line.chunks(4096) {
            output.write(Stream::Stdout, chunk).unwrap();
        }
        output.finish("f").unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(!log.contains("secret"), "the value leaked across a cut");
        assert_eq!(log.matches("***").count(), 1);
        let bodies: usize = log
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.splitn(3, ' ').nth(2).unwrap().len())
            .sum();
        assert_eq!(bodies, line.len() - 1 - secret.len() + 3, "nothing lost");
    }

    #[test]
    fn numbers_lines_without_gaps_across_streams_cuts_and_the_last_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut output = StepOutput::new("s", File::create(&path).unwrap(), "h", None).unwrap();
        output.write(Stream::Stdout, b"one\ntwo\n").unwrap();
        output.write(Stream::Stderr, b"three\n").unwrap();
        output
            .write(Stream::Stdout, &vec![b'x'; MAX_LINE_BYTES + 5])
            .unwrap();
        output.write(Stream::Stdout, b"\nlast").unwrap();
        output.finish("f").unwrap();
        let text = std::fs::read(&path).unwrap();
        let seqs: Vec<Option<u64>> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(line_seq)
            .collect();
        assert_eq!(
            seqs,
            [
                None,
                Some(1),
                Some(2),
                Some(3),
                Some(4),
                Some(5),
                Some(6),
                None
            ]
        );
        let log = String::from_utf8(text).unwrap();
        assert!(log.contains("#4 out+ xxx"), "{}", &log[..200]);
        assert!(log.contains("#6 out last\n"));
    }

    #[test]
    fn output_over_the_cap_is_dropped_and_the_log_says_how_much() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let observer = Arc::new(Collect::default());
        let mut output = StepOutput::new(
            "s",
            File::create(&path).unwrap(),
            "h",
            Some(observer.clone()),
        )
        .unwrap();
        output.limit(10);
        output.write(Stream::Stdout, b"12345\n").unwrap();
        output.write(Stream::Stdout, b"6789\nabcdef\n").unwrap();
        output.write(Stream::Stderr, b"more\n").unwrap();
        assert_eq!(output.dropped(), 8 + 5);
        assert_eq!(output.bytes(), 6 + 12 + 5);
        output.finish("f").unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 6, "{log}");
        assert!(lines[1].ends_with("#1 out 12345"));
        assert!(lines[2].ends_with("#2 out 6789"));
        assert_eq!(
            lines[3],
            "# truncated: the step's output passed the cap of 10 bytes; the rest is not recorded"
        );
        assert_eq!(
            lines[4],
            "# truncated: 13 bytes of output dropped after the cap of 10 bytes"
        );
        let seen = observer.0.lock().unwrap();
        assert_eq!(
            output_bytes(&seen),
            11,
            "nothing past the cap is shown either"
        );
    }

    /// The cap may fall inside a value: its start is not recorded, since the rest that masking
    /// needs to see it never comes; the rest of the line before it is.
    #[test]
    fn the_cap_never_records_the_start_of_a_secret() {
        let secret = "Tok3n-S3cr3t/Value+qa=9!";
        let line = format!("aaaaaaaaaa{secret}\n");
        // From the first byte of the value to its last but one (at its last it is whole).
        for cap in 11..(line.len() - 1) as u64 {
            for reads in [1, 3, 7] {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("s.log");
                let (mut output, observer) = masked(&path, &[secret]);
                output.limit(cap);
                for chunk in line.as_bytes().chunks(reads) {
                    output.write(Stream::Stdout, chunk).unwrap();
                }
                output.finish("f").unwrap();
                let log = std::fs::read_to_string(&path).unwrap();
                assert!(!log.contains("Tok"), "cap {cap}, reads of {reads}: {log}");
                assert!(log.contains("#1 out aaaaaaaaaa\n"), "cap {cap}: {log}");
                let dropped = line.len() as u64 - 10;
                assert!(
                    log.contains(&format!("# truncated: {dropped} bytes of output dropped")),
                    "cap {cap}: {log}"
                );
                let seen = observer.0.lock().unwrap();
                assert_eq!(output_bytes(&seen), 11, "cap {cap}: shown as recorded");
            }
        }
        // A line that only looks like a value's start to a reader, not to the masker, stays.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let (mut output, _) = masked(&path, &[secret]);
        output.limit(8);
        output.write(Stream::Stdout, b"abcdefghij").unwrap();
        output.finish("f").unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(log.contains("#1 out abcdefgh\n"), "{log}");
    }

    proptest::proptest! {
        #[test]
        fn a_secret_never_reaches_the_log_however_the_output_is_split(
            secret in "[a-zA-Z0-9/+= ]{4,40}",
            before in "[a-z\n ]{0,30}",
            after in "[a-z\n ]{0,30}",
            cuts in proptest::collection::vec(1usize..20, 1..10),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.log");
            let (mut output, _) = masked(&path, &[&secret]);
            let text = format!("{before}{secret}{after}\n{secret}");
            let mut rest = text.as_bytes();
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                output.write(Stream::Stdout, chunk).unwrap();
                rest = tail;
            }
            output.finish("f").unwrap();
            let log = std::fs::read_to_string(&path).unwrap();
            proptest::prop_assert!(!log.contains(&secret), "{log}");
        }
    }

    #[test]
    fn cuts_huge_lines_into_continuations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut output = StepOutput::new("s", File::create(&path).unwrap(), "h", None).unwrap();
        let huge = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        for chunk in huge.chunks(1000) {
            output.write(Stream::Stdout, chunk).unwrap();
        }
        output.write(Stream::Stdout, b"\n").unwrap();
        output.finish("f").unwrap();
        let lines = log_lines(&path);
        assert_eq!(lines.len(), 5, "header, two cut pieces, the rest, footer");
        assert!(lines[1].contains(" out+ "));
        assert!(lines[2].contains(" out+ "));
        assert!(lines[3].contains(" out "));
        assert!(lines[3].ends_with(&"x".repeat(10)));
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES + 64));
    }
}
