//! Everything `mc` prints: data on stdout, diagnostics on stderr.

use std::io::{self, Write};
use std::sync::Mutex;

use maestro_core::executor::Stream;
use maestro_core::output::OutputObserver;
use serde::Serialize;

/// Write `text` to stdout. A closed pipe (`mc status | head`) is not an error: stop quietly.
pub(crate) fn out(text: &str) {
    let mut stdout = io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Print `value` as one line of JSON on stdout.
pub(crate) fn json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => out(&format!("{text}\n")),
        Err(error) => eprintln!("error: cannot encode output: {error}"),
    }
}

/// Prints step output live, each line prefixed by the step's name: stdout lines to stdout and
/// stderr lines to stderr, or everything to stderr when stdout is reserved for JSON.
pub(crate) struct LivePrinter {
    all_to_stderr: bool,
    lock: Mutex<()>,
}

impl LivePrinter {
    pub(crate) fn new(all_to_stderr: bool) -> Self {
        Self {
            all_to_stderr,
            lock: Mutex::new(()),
        }
    }
}

impl OutputObserver for LivePrinter {
    fn output(&self, step: &str, stream: Stream, lines: &[u8]) {
        let _guard = self.lock.lock();
        let mut text = Vec::with_capacity(lines.len() + 16 * (step.len() + 3));
        for line in lines.split_inclusive(|&b| b == b'\n') {
            text.extend_from_slice(step.as_bytes());
            text.extend_from_slice(b" | ");
            text.extend_from_slice(line);
        }
        // A reader that went away must not stop the job: the output is recorded regardless.
        let _ = if stream == Stream::Stderr || self.all_to_stderr {
            io::stderr().lock().write_all(&text)
        } else {
            let mut stdout = io::stdout().lock();
            stdout.write_all(&text).and_then(|()| stdout.flush())
        };
    }
}
