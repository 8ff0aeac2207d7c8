//! `mc`'s diagnostics: the tracing subscriber (only `mc` installs one) and the queue that keeps
//! a stderr nobody reads from ever stalling a job.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Diagnostics go to stderr; only `mc` installs a subscriber. `MAESTRO_LOG` takes a full filter.
///
/// Events are written by a thread of their own and dropped when stderr does not keep up: a
/// stderr nobody reads must never stall a running job (a plugin's stderr, for one, becomes
/// events). The thread starts with the first event: most runs have none, and a thread is a
/// noticeable part of a short command's cost. Call [`Diagnostics::drain`] before exiting so
/// queued events are not lost.
pub(crate) fn install_tracing(verbose: u8) -> Diagnostics {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let mut filter =
        EnvFilter::try_from_env("MAESTRO_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // The HTTP stack under the Docker client logs request bodies at debug level, and a
    // container's configuration holds its secrets (JSON-escaped, past what masking can
    // recognise): those never reach diagnostics, whatever the filter asks.
    for quiet in ["bollard=info", "hyper=info", "hyper_util=info", "h2=info"] {
        if let Ok(directive) = quiet.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let writer = QueueWriter {
        shared: Arc::new(Queue::default()),
    };
    let queue = Arc::clone(&writer.shared);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(crate::printer::colours_on(&std::io::stderr()))
        .try_init();
    Diagnostics { queue }
}

/// How many events may wait for stderr before new ones are dropped.
const DIAGNOSTICS_BACKLOG: usize = 1024;

/// The diagnostics queue, to be drained before `mc` exits.
pub(crate) struct Diagnostics {
    queue: Arc<Queue>,
}

impl Diagnostics {
    /// Wait (a little) for queued events to reach stderr.
    pub(crate) fn drain(&self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.queue.queued.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Hands each formatted event to the diagnostics thread, or drops it when the queue is full.
#[derive(Clone)]
struct QueueWriter {
    shared: Arc<Queue>,
}

/// The events on their way to stderr, and the thread that writes them once there is one.
#[derive(Default)]
struct Queue {
    /// The sending end, made with the thread by the first event; `None` when no thread could
    /// be started (the events are then dropped, as when the queue is full).
    sender: OnceLock<Option<SyncSender<Vec<u8>>>>,
    /// Events sent and not yet written.
    queued: AtomicUsize,
}

impl Queue {
    fn sender(self: &Arc<Self>) -> Option<&SyncSender<Vec<u8>>> {
        self.sender
            .get_or_init(|| {
                let (sender, events) = sync_channel::<Vec<u8>>(DIAGNOSTICS_BACKLOG);
                let written = Arc::clone(self);
                std::thread::Builder::new()
                    .name("diagnostics".into())
                    .spawn(move || {
                        for event in events {
                            let _ = std::io::stderr().lock().write_all(&event);
                            written.queued.fetch_sub(1, Ordering::Release);
                        }
                    })
                    .ok()
                    .map(|_| sender)
            })
            .as_ref()
    }
}

/// One event being formatted; sent when the formatter is done with it.
struct EventBuffer {
    queue: QueueWriter,
    bytes: Vec<u8>,
}

impl Write for EventBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        // Secret values a library quoted in an event are masked like step output.
        if let Some(masked) = maestro_core::secret::mask_diagnostic(&self.bytes) {
            self.bytes = masked;
        }
        let queue = &self.queue.shared;
        let Some(sender) = queue.sender() else {
            return;
        };
        queue.queued.fetch_add(1, Ordering::Release);
        if sender.try_send(std::mem::take(&mut self.bytes)).is_err() {
            queue.queued.fetch_sub(1, Ordering::Release);
        }
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        EventBuffer {
            queue: self.clone(),
            bytes: Vec::new(),
        }
    }
}
