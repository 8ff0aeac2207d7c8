//! Everything `mc` prints: data on stdout, diagnostics on stderr.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maestro_core::executor::Stream;
use maestro_core::output::OutputObserver;
use maestro_core::runner::{describe, status_name};
use maestro_core::state::StepStatus;
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
    JSON_PRINTED.store(true, Ordering::Relaxed);
    match serde_json::to_string(value) {
        Ok(text) => out(&format!("{text}\n")),
        Err(error) => eprintln!("error: cannot encode output: {error}"),
    }
}

/// Whether [`json`] printed anything: a failure after it must not print a second object.
static JSON_PRINTED: AtomicBool = AtomicBool::new(false);

/// Note that data went to stdout outside [`json`] (a stream of log lines).
pub(crate) fn mark_printed() {
    JSON_PRINTED.store(true, Ordering::Relaxed);
}

/// Whether a JSON object (or a stream of them) went to stdout already.
pub(crate) fn json_printed() -> bool {
    JSON_PRINTED.load(Ordering::Relaxed)
}

/// How many batches of live output may wait for a slow terminal before lines are dropped.
const LIVE_BACKLOG: usize = 256;

/// How many bytes of live output may wait for a slow terminal before lines are dropped.
const LIVE_BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// A duration for people: `85ms`, `4.2s`.
pub(crate) fn millis(duration_ms: u64) -> String {
    if duration_ms < 1000 {
        format!("{duration_ms}ms")
    } else {
        format!("{:.1}s", duration_ms as f64 / 1000.0)
    }
}

/// How often the live view on a terminal refreshes a quiet step's elapsed time.
const TICK: Duration = Duration::from_millis(500);

/// What the printing thread is asked to show.
enum Event {
    /// Step output, already formatted.
    Text { to_stderr: bool, text: Vec<u8> },
    /// The job is stored (terminal view only).
    Stored(String),
    /// A step started (terminal view only).
    Started { step: String, runtime: String },
    /// A step ended (terminal view only): its closing line.
    Finished(String),
    /// Time passed: refresh the running step's elapsed time (terminal view only).
    Tick,
}

/// Prints step output live: on a terminal, a live view (the job id at once, each step as it
/// starts with its elapsed time, its output indented under it with stderr marked, its end with
/// state and duration); otherwise each line prefixed by the step's name, stdout lines to stdout
/// and stderr lines to stderr, or everything to stderr when stdout is reserved for JSON.
///
/// Printing happens on a thread of its own behind a bounded queue, and lines that do not fit
/// are dropped (the step log has them all): a terminal that stops reading (`mc submit | less`,
/// paused) must never stop a timeout or a cancel from being honoured.
pub(crate) struct LivePrinter {
    all_to_stderr: bool,
    /// The live view's colours, when stdout is a terminal; `None` for plain lines.
    terminal: Option<Colours>,
    sender: Mutex<Option<SyncSender<Event>>>,
    done: Mutex<Option<Receiver<()>>>,
    dropped: AtomicU64,
    queued_bytes: Arc<AtomicUsize>,
}

/// ANSI colours, or none (`NO_COLOR`).
#[derive(Clone, Copy)]
struct Colours(bool);

impl Colours {
    fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// The terminal view's state, owned by the printing thread.
struct View {
    colours: Colours,
    /// The running step: name, runtime, when it started.
    running: Option<(String, String, std::time::Instant)>,
    /// The running step's status line is on screen without its newline (it is rewritten in
    /// place each tick until output or the step's end follows).
    line_open: bool,
}

impl View {
    fn status_line(&self) -> Option<String> {
        let (step, runtime, started) = self.running.as_ref()?;
        Some(format!(
            "{} {} {} {}",
            self.colours.paint("36", "▶"),
            field(step),
            self.colours.paint("2", &format!("({runtime})")),
            self.colours
                .paint("2", &format!("{:.1}s", started.elapsed().as_secs_f64()))
        ))
    }

    fn show(&mut self, event: Event) {
        let mut stdout = io::stdout().lock();
        let mut text = String::new();
        let close = |text: &mut String, open: &mut bool| {
            if std::mem::take(open) {
                text.push('\n');
            }
        };
        match event {
            Event::Text {
                to_stderr,
                text: lines,
            } => {
                close(&mut text, &mut self.line_open);
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
                let _ = if to_stderr {
                    io::stderr().lock().write_all(&lines)
                } else {
                    stdout.write_all(&lines).and_then(|()| stdout.flush())
                };
                return;
            }
            Event::Stored(line) => {
                close(&mut text, &mut self.line_open);
                text.push_str(&line);
            }
            Event::Started { step, runtime } => {
                close(&mut text, &mut self.line_open);
                self.running = Some((step, runtime, std::time::Instant::now()));
                text.push_str(&self.status_line().unwrap_or_default());
                self.line_open = true;
            }
            Event::Tick => match (self.line_open, self.status_line()) {
                (true, Some(line)) => text.push_str(&format!("\r\x1b[K{line}")),
                _ => return,
            },
            Event::Finished(line) => {
                if std::mem::take(&mut self.line_open) {
                    text.push_str("\r\x1b[K");
                }
                self.running = None;
                text.push_str(&line);
            }
        }
        let _ = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush());
    }
}

impl LivePrinter {
    pub(crate) fn start(all_to_stderr: bool) -> Self {
        let terminal = (!all_to_stderr && io::stdout().is_terminal())
            .then(|| Colours(colours_on(&io::stdout())));
        let (sender, events) = sync_channel::<Event>(LIVE_BACKLOG);
        let (finished, done) = sync_channel(1);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let dequeued = Arc::clone(&queued_bytes);
        let mut view = terminal.map(|colours| View {
            colours,
            running: None,
            line_open: false,
        });
        std::thread::spawn(move || {
            loop {
                // On a terminal, a quiet queue is a tick: the running step's time moves on.
                let event = match &view {
                    Some(_) => match events.recv_timeout(TICK) {
                        Ok(event) => event,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Event::Tick,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    },
                    None => match events.recv() {
                        Ok(event) => event,
                        Err(_) => break,
                    },
                };
                if let Event::Text { text, .. } = &event {
                    dequeued.fetch_sub(text.len(), Ordering::Relaxed);
                }
                // A reader that went away must not stop the job: the output is recorded anyway.
                match (&mut view, event) {
                    (Some(view), event) => view.show(event),
                    (None, Event::Text { to_stderr, text }) => {
                        let _ = if to_stderr {
                            io::stderr().lock().write_all(&text)
                        } else {
                            let mut stdout = io::stdout().lock();
                            stdout.write_all(&text).and_then(|()| stdout.flush())
                        };
                    }
                    (None, _) => {}
                }
            }
            if let Some(view) = &mut view
                && view.line_open
            {
                let _ = io::stdout().lock().write_all(b"\n");
            }
            let _ = finished.send(());
        });
        Self {
            all_to_stderr,
            terminal,
            sender: Mutex::new(Some(sender)),
            done: Mutex::new(Some(done)),
            dropped: AtomicU64::new(0),
            queued_bytes,
        }
    }

    /// Whether this is the terminal view (steps' starts and ends are shown, not only output).
    pub(crate) fn is_view(&self) -> bool {
        self.terminal.is_some()
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

    fn notify_dropped(&self, sender: &Option<SyncSender<Event>>) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if let (Some(sender), true) = (sender, dropped > 0) {
            let text = format!(
                "mc: {dropped} lines of live output were not shown (the terminal was not reading); `mc logs` has them\n"
            );
            if sender
                .try_send(Event::Text {
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

    /// Queues a terminal-view event; dropped (never waited for) when the queue is full.
    fn view(&self, event: impl FnOnce(Colours) -> Event) {
        let Some(colours) = self.terminal else {
            return;
        };
        if let Ok(guard) = self.sender.lock()
            && let Some(sender) = guard.as_ref()
        {
            let _ = sender.try_send(event(colours));
        }
    }
}

impl OutputObserver for LivePrinter {
    fn output(&self, step: &str, stream: Stream, lines: &[u8]) {
        let mut text = Vec::with_capacity(lines.len() + 16 * (step.len() + 3));
        let mut count = 0;
        let stderr_mark = match self.terminal {
            Some(colours) => colours.paint("33", "!"),
            None => String::new(),
        };
        for line in lines.split_inclusive(|&b| b == b'\n') {
            match self.terminal {
                // The live view: indented under the step, stderr lines marked.
                Some(_) if stream == Stream::Stderr => {
                    text.extend_from_slice(format!("  {stderr_mark} ").as_bytes());
                }
                Some(_) => text.extend_from_slice(b"  | "),
                None => {
                    text.extend_from_slice(step.as_bytes());
                    text.extend_from_slice(b" | ");
                }
            }
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
        let batch = Event::Text {
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

    fn job_stored(&self, job_id: maestro_core::JobId, trace_id: &maestro_core::trace::TraceId) {
        self.view(|colours| {
            Event::Stored(format!(
                "{} {job_id} {}\n",
                colours.paint("1", "job"),
                colours.paint("2", &format!("(trace_id {trace_id})"))
            ))
        });
    }

    fn step_started(&self, step: &str, runtime: &str) {
        self.view(|_| Event::Started {
            step: step.to_owned(),
            runtime: runtime.to_owned(),
        });
    }

    fn step_finished(&self, record: &maestro_core::state::StepRecord) {
        self.view(|colours| {
            let (mark, colour) = match record.status {
                StepStatus::Succeeded => ("✔", "32"),
                StepStatus::Skipped => ("-", "2"),
                _ => ("✘", "31"),
            };
            Event::Finished(format!(
                "{} {} {} {}\n",
                colours.paint(colour, mark),
                field(&record.name),
                colours.paint(colour, status_name(record.status)),
                colours.paint(
                    "2",
                    &format!(
                        "in {} — {}",
                        millis(record.duration_ms),
                        field(&describe(record))
                    )
                )
            ))
        });
    }
}
