//! Settings resolved in one place: flags, then environment, then defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use maestro_core::policy::PolicyConfig;
use maestro_core::spec::{HostAccess, MAX_TIMEOUT_SECONDS};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Instant;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::{GlobalArgs, PolicyArgs};
use crate::exit::Failure;

/// The state root: `--state-dir`, else `MAESTRO_HOME` (both handled by clap), else
/// `var/maestro` under the current directory, made absolute so that the record of a job does
/// not depend on where a later `mc status` runs.
pub(crate) fn state_root(global: &GlobalArgs) -> Result<PathBuf, Failure> {
    let root = global
        .state_dir
        .clone()
        .unwrap_or_else(|| Path::new("var").join("maestro"));
    if root.as_os_str().is_empty() {
        return Err(Failure::usage("the state root is an empty path")
            .hint("pass --state-dir DIR or set MAESTRO_HOME"));
    }
    Ok(current_dir()?.join(root))
}

pub(crate) fn current_dir() -> Result<PathBuf, Failure> {
    std::env::current_dir()
        .map_err(|error| Failure::system(format!("cannot read the current directory: {error}")))
}

pub(crate) fn policy(args: &PolicyArgs, state_root: &Path) -> Result<PolicyConfig, Failure> {
    for (name, seconds) in [
        ("--max-step-timeout", args.max_step_timeout),
        ("--default-step-timeout", args.default_step_timeout),
    ] {
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
            return Err(Failure::usage(format!(
                "{name} must be between 1 and {MAX_TIMEOUT_SECONDS} seconds, not {seconds}"
            )));
        }
    }
    let allowed_host_access = match args.allowed_host_access.as_deref().map(str::trim) {
        None => PolicyConfig::default_host_access(),
        Some("none" | "") => Default::default(),
        Some(list) => list
            .split(',')
            .map(|name| {
                let name = name.trim();
                serde_json::from_value::<HostAccess>(serde_json::Value::from(name)).map_err(|_| {
                    Failure::usage(format!("--allowed-host-access: unknown host resource {name:?}"))
                        .hint("names are those of a spec's host_access, e.g. ssh,aws,docker-socket; see docs/sandbox.md")
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(PolicyConfig {
        default_step_timeout: Duration::from_secs(args.default_step_timeout),
        max_step_timeout: Duration::from_secs(args.max_step_timeout),
        allowed_host_access,
        // No step may make the state root writable: it holds every job's history.
        protected_paths: vec![state_root.to_path_buf()],
    })
}

/// The per-step output cap, from `--max-step-output` or `MAESTRO_MAX_STEP_OUTPUT`.
pub(crate) fn max_step_output(size: &str) -> Result<u64, Failure> {
    maestro_core::spec::parse_memory(size)
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(|| {
            let shown: String = size.chars().take(40).collect();
            Failure::usage(format!(
                "max step output {shown:?} is not a size such as 64m, 1g or a byte count"
            ))
        })
}

pub(crate) fn stop_grace(seconds: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|grace| *grace <= Duration::from_secs(3600))
        .ok_or_else(|| {
            Failure::usage(format!(
                "stop grace {seconds} is not between 0 and 3600 seconds"
            ))
        })
}

/// Diagnostics go to stderr; only `mc` installs a subscriber. `MAESTRO_LOG` takes a full filter.
///
/// Events are written by a thread of their own and dropped when stderr does not keep up: a
/// stderr nobody reads must never stall a running job (a plugin's stderr, for one, becomes
/// events). Call [`Diagnostics::drain`] before exiting so queued events are not lost.
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
    let (sender, events) = sync_channel::<Vec<u8>>(DIAGNOSTICS_BACKLOG);
    let queued = Arc::new(AtomicUsize::new(0));
    let written = Arc::clone(&queued);
    std::thread::spawn(move || {
        for event in events {
            let _ = std::io::stderr().lock().write_all(&event);
            written.fetch_sub(1, Ordering::Release);
        }
    });
    let writer = QueueWriter {
        sender,
        queued: Arc::clone(&queued),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(crate::printer::colours_on(&std::io::stderr()))
        .try_init();
    Diagnostics { queued }
}

/// How many events may wait for stderr before new ones are dropped.
const DIAGNOSTICS_BACKLOG: usize = 1024;

/// The diagnostics queue, to be drained before `mc` exits.
pub(crate) struct Diagnostics {
    queued: Arc<AtomicUsize>,
}

impl Diagnostics {
    /// Wait (a little) for queued events to reach stderr.
    pub(crate) fn drain(&self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.queued.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Hands each formatted event to the diagnostics thread, or drops it when the queue is full.
#[derive(Clone)]
struct QueueWriter {
    sender: SyncSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
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
        self.queue.queued.fetch_add(1, Ordering::Release);
        if self
            .queue
            .sender
            .try_send(std::mem::take(&mut self.bytes))
            .is_err()
        {
            self.queue.queued.fetch_sub(1, Ordering::Release);
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
