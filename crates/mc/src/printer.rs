//! Everything `mc` prints: data on stdout, diagnostics on stderr.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maestro_core::executor::Stream;
use maestro_core::output::OutputObserver;
use serde::Serialize;

/// Write `text` to stdout. A reader that went away (`mc status | head`) is not an error worth
/// reporting, and must not change the exit code the command computed.
///
/// Control characters other than newline and tab are escaped (`\u{1b}`): text from specs and
/// records never drives the terminal (an owner holding `\e[31m` must not colour the list).
pub(crate) fn out(text: &str) {
    let text = escape_controls(text, &['\n', '\t']);
    let mut stdout = io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// `text` from a spec or a record, for one field of a line: every control character escaped,
/// newlines included, so a value cannot break a row or fake another one.
pub(crate) fn field(text: &str) -> String {
    escape_controls(text, &[])
}

fn escape_controls(text: &str, kept: &[char]) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && !kept.contains(&c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether colours (and other terminal sequences) may go to `stream`: it is a terminal, and
/// `NO_COLOR` (<https://no-color.org>) is not set to a non-empty value.
pub(crate) fn colours_on(stream: &impl io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Clear a terminal before a `--watch` refresh; nothing when stdout is not a terminal.
pub(crate) fn clear_screen() {
    if io::stdout().is_terminal() {
        let mut stdout = io::stdout().lock();
        let _ = stdout
            .write_all(b"\x1b[H\x1b[2J")
            .and_then(|()| stdout.flush());
    }
}

/// Print `value` as one line of JSON on stdout.
pub(crate) fn json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => out(&format!("{text}\n")),
        Err(error) => eprintln!("error: cannot encode output: {error}"),
    }
}

/// How many batches of live output may wait for a slow terminal before lines are dropped.
const LIVE_BACKLOG: usize = 256;
/// How many bytes of live output may wait for a slow terminal before lines are dropped.
const LIVE_BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// A batch of lines for the printing thread.
struct Batch {
    to_stderr: bool,
    text: Vec<u8>,
}

/// Prints step output live, each line prefixed by the step's name: stdout lines to stdout and
/// stderr lines to stderr, or everything to stderr when stdout is reserved for JSON.
///
/// Printing happens on a thread of its own behind a bounded queue, and lines that do not fit
/// are dropped (the step log has them all): a terminal that stops reading (`mc submit | less`,
/// paused) must never stop a timeout or a cancel from being honoured.
pub(crate) struct LivePrinter {
    all_to_stderr: bool,
    sender: Mutex<Option<SyncSender<Batch>>>,
    done: Mutex<Option<Receiver<()>>>,
    dropped: AtomicU64,
    queued_bytes: Arc<AtomicUsize>,
}

impl LivePrinter {
    pub(crate) fn start(all_to_stderr: bool) -> Self {
        let (sender, batches) = sync_channel::<Batch>(LIVE_BACKLOG);
        let (finished, done) = sync_channel(1);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let dequeued = Arc::clone(&queued_bytes);
        std::thread::spawn(move || {
            for batch in batches {
                dequeued.fetch_sub(batch.text.len(), Ordering::Relaxed);
                // A reader that went away must not stop the job: the output is recorded anyway.
                let _ = if batch.to_stderr {
                    io::stderr().lock().write_all(&batch.text)
                } else {
                    let mut stdout = io::stdout().lock();
                    stdout.write_all(&batch.text).and_then(|()| stdout.flush())
                };
            }
            let _ = finished.send(());
        });
        Self {
            all_to_stderr,
            sender: Mutex::new(Some(sender)),
            done: Mutex::new(Some(done)),
            dropped: AtomicU64::new(0),
            queued_bytes,
        }
    }

    /// Let the printing thread drain what is queued, waiting at most `wait`; then say on stderr
    /// if live lines were not shown. Called after the job, when blocking is harmless.
    pub(crate) fn finish(&self, wait: Duration) {
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        self.notify_dropped(&sender);
        drop(sender);
        let drained = match self.done.lock().ok().and_then(|mut d| d.take()) {
            Some(done) => done.recv_timeout(wait).is_ok(),
            None => true,
        };
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 || !drained {
            eprintln!(
                "mc: some live output was not shown (the terminal was not reading); `mc logs` has all of it"
            );
        }
    }

    fn notify_dropped(&self, sender: &Option<SyncSender<Batch>>) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if let (Some(sender), true) = (sender, dropped > 0) {
            let text = format!(
                "mc: {dropped} lines of live output were not shown (the terminal was not reading); `mc logs` has them\n"
            );
            if sender
                .try_send(Batch {
                    to_stderr: true,
                    text: text.into_bytes(),
                })
                .is_err()
            {
                // Still no room: keep counting, the notice goes out with a later batch.
                self.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
        }
    }
}

impl OutputObserver for LivePrinter {
    fn output(&self, step: &str, stream: Stream, lines: &[u8]) {
        let mut text = Vec::with_capacity(lines.len() + 16 * (step.len() + 3));
        let mut count = 0;
        for line in lines.split_inclusive(|&b| b == b'\n') {
            text.extend_from_slice(step.as_bytes());
            text.extend_from_slice(b" | ");
            text.extend_from_slice(line);
            count += 1;
        }
        let Ok(guard) = self.sender.lock() else {
            return;
        };
        let Some(sender) = guard.as_ref() else {
            return;
        };
        let size = text.len();
        if self.queued_bytes.load(Ordering::Relaxed) + size > LIVE_BACKLOG_BYTES {
            self.dropped.fetch_add(count, Ordering::Relaxed);
            return;
        }
        let batch = Batch {
            to_stderr: stream == Stream::Stderr || self.all_to_stderr,
            text,
        };
        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        match sender.try_send(batch) {
            Ok(()) => self.notify_dropped(&guard),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                self.dropped.fetch_add(count, Ordering::Relaxed);
            }
        }
    }
}
