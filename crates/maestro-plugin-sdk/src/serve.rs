//! The protocol loop: handshake, requests, task bookkeeping, shutdown.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use maestro_plugin_protocol::{
    Described, ErrorCode, ErrorReply, HostMessage, PROTOCOL, PluginHello, PluginMessage, Reply,
    SUPPORTED_VERSIONS, Start, Started, Unreadable, capability,
};
use rustix::process::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::stdio::{self, Incoming};
use crate::task::{self, Control};
use crate::{Plugin, PluginInfo, TaskError};

/// How long tasks still running at end of input get between `SIGTERM` and `SIGKILL`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long the plugin waits, at the end, for its last lines to be written.
const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

type Tasks = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>>;

/// Speak the protocol on stdin and stdout until the host closes stdin; a plugin's `main` is one
/// call to this. Returns the process's exit code: success after a normal shutdown, 1 when the
/// host's hello is missing or names a version this SDK does not speak, 2 when stdio cannot be set
/// up.
pub fn serve<P: Plugin>(info: PluginInfo, plugin: P) -> ExitCode {
    let (input, output) = match stdio::take_over() {
        Ok(files) => files,
        Err(error) => {
            eprintln!(
                "mc-executor-{}: cannot set up the protocol streams: {error}",
                info.name
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!(
                "mc-executor-{}: cannot start the runtime: {error}",
                info.name
            );
            return ExitCode::from(2);
        }
    };
    let (out_tx, out_rx) = mpsc::channel::<String>(1024);
    let writer = stdio::spawn_writer(output, out_rx);
    let (in_tx, in_rx) = mpsc::channel::<Incoming>(64);
    stdio::spawn_reader(input, in_tx);
    let code = runtime.block_on(async move {
        let code = run(info, Arc::new(plugin), in_rx, out_tx).await;
        // Every sender is gone now; let the writer finish, within reason.
        let _ = tokio::time::timeout(
            FLUSH_DEADLINE,
            tokio::task::spawn_blocking(move || writer.join()),
        )
        .await;
        code
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

fn capabilities(contained: bool, local: bool) -> Vec<String> {
    let mut capabilities: Vec<String> = [
        capability::ARGV,
        capability::SHELL,
        capability::ENV,
        capability::WORKDIR,
        capability::STOP,
        capability::CONCURRENT,
        capability::VALIDATE,
    ]
    .map(str::to_owned)
    .to_vec();
    if contained {
        capabilities.push(capability::CONTAINED.to_owned());
    }
    if !local {
        capabilities.push(capability::REMOTE.to_owned());
    }
    capabilities
}

fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> String {
    PluginMessage::Error(ErrorReply {
        id,
        code,
        message: message.into(),
    })
    .to_line()
}

fn signal_named(name: &str) -> Signal {
    match name.trim_start_matches("SIG") {
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        "KILL" => Signal::KILL,
        _ => Signal::TERM,
    }
}

async fn run<P: Plugin>(
    info: PluginInfo,
    plugin: Arc<P>,
    mut input: mpsc::Receiver<Incoming>,
    out: mpsc::Sender<String>,
) -> ExitCode {
    let hello = PluginMessage::Hello(PluginHello {
        protocol: PROTOCOL.to_owned(),
        versions: SUPPORTED_VERSIONS.to_vec(),
        plugin: info.name.clone(),
        version: info.version.clone(),
        capabilities: capabilities(plugin.contained(), plugin.tasks_are_local()),
    });
    if out.send(hello.to_line()).await.is_err() {
        return ExitCode::FAILURE;
    }
    match input.recv().await {
        None => return ExitCode::SUCCESS,
        Some(Incoming::Line(line)) => match HostMessage::from_line(&line) {
            Ok(HostMessage::Hello(hello)) if SUPPORTED_VERSIONS.contains(&hello.version) => {}
            Ok(HostMessage::Hello(hello)) => {
                eprintln!(
                    "mc-executor-{}: the host chose protocol version {}, this plugin speaks {:?}",
                    info.name, hello.version, SUPPORTED_VERSIONS
                );
                return ExitCode::FAILURE;
            }
            _ => {
                let _ = out
                    .send(error(
                        None,
                        ErrorCode::Malformed,
                        "expected the host's hello",
                    ))
                    .await;
                eprintln!("mc-executor-{}: the host did not answer hello", info.name);
                return ExitCode::FAILURE;
            }
        },
        Some(Incoming::Unreadable(problem)) => {
            eprintln!("mc-executor-{}: unreadable hello: {problem}", info.name);
            return ExitCode::FAILURE;
        }
    }

    let tasks: Tasks = Arc::default();
    let mut running = JoinSet::new();
    while let Some(incoming) = input.recv().await {
        // Reap finished task drivers so the set stays small.
        while running.try_join_next().is_some() {}
        let reply = match incoming {
            Incoming::Unreadable(problem) => Some(error(None, ErrorCode::Malformed, problem)),
            Incoming::Line(line) => handle(&line, &info, &plugin, &tasks, &out, &mut running).await,
        };
        if let Some(reply) = reply
            && out.send(reply).await.is_err()
        {
            break;
        }
    }

    // End of input: the host is done or gone. Nothing may outlive it.
    for control in tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
    {
        let _ = control.send(Control::Stop {
            signal: Signal::TERM,
            grace: SHUTDOWN_GRACE,
        });
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    ExitCode::SUCCESS
}

async fn handle<P: Plugin>(
    line: &str,
    info: &PluginInfo,
    plugin: &Arc<P>,
    tasks: &Tasks,
    out: &mpsc::Sender<String>,
    running: &mut JoinSet<()>,
) -> Option<String> {
    let message = match HostMessage::from_line(line) {
        Ok(message) => message,
        Err(Unreadable::UnknownType { message_type, id }) => {
            return Some(error(
                id,
                ErrorCode::Unsupported,
                format!("unsupported request type {message_type:?}"),
            ));
        }
        Err(unreadable @ Unreadable::Malformed { id, .. }) => {
            return Some(error(id, ErrorCode::Malformed, unreadable.to_string()));
        }
    };
    let reply = match message {
        HostMessage::Hello(_) => error(None, ErrorCode::Malformed, "hello was already exchanged"),
        HostMessage::Describe(request) => PluginMessage::Described(Described {
            id: request.id,
            name: info.name.clone(),
            version: info.version.clone(),
            description: info.description.clone(),
            capabilities: capabilities(plugin.contained(), plugin.tasks_are_local()),
            settings: info.settings.clone(),
        })
        .to_line(),
        HostMessage::Validate(request) => {
            match plugin.validate(&request.step, request.with.as_ref()) {
                Ok(()) => PluginMessage::Ok(Reply { id: request.id }).to_line(),
                Err(message) => error(Some(request.id), ErrorCode::Invalid, message),
            }
        }
        HostMessage::Ping(request) => PluginMessage::Pong(Reply { id: request.id }).to_line(),
        HostMessage::Stop(request) => {
            if let Some(control) = lock(tasks).get(&request.task) {
                let _ = control.send(Control::Stop {
                    signal: signal_named(&request.signal),
                    grace: Duration::from_millis(request.grace_ms),
                });
            }
            PluginMessage::Ok(Reply { id: request.id }).to_line()
        }
        HostMessage::Destroy(request) => {
            if let Some(control) = lock(tasks).remove(&request.task) {
                let _ = control.send(Control::Kill);
            }
            PluginMessage::Ok(Reply { id: request.id }).to_line()
        }
        HostMessage::Start(start) => return start_task(start, plugin, tasks, out, running).await,
    };
    Some(reply)
}

/// Run one task of `plugin` in this process as [`serve`] would for a `start` request, to its end,
/// and return every message that produced, in order: the reply (`started`, or an `error` when
/// the task could not start), then the task's log events and its exit event. No plugin process
/// and no protocol stream are involved: this is what `maestro-plugin-test-support` drives a
/// plugin crate's `Plugin` implementation with. Needs a Tokio runtime.
pub async fn run_task<P: Plugin>(plugin: P, start: Start) -> Vec<PluginMessage> {
    let plugin = Arc::new(plugin);
    let tasks: Tasks = Arc::default();
    let (out, mut lines) = mpsc::channel::<String>(64);
    let collector = tokio::spawn(async move {
        let mut messages = Vec::new();
        while let Some(line) = lines.recv().await {
            if let Ok(message) = PluginMessage::from_line(&line) {
                messages.push(message);
            }
        }
        messages
    });
    let mut running = JoinSet::new();
    if let Some(reply) = start_task(start, &plugin, &tasks, &out, &mut running).await {
        let _ = out.send(reply).await;
    }
    while running.join_next().await.is_some() {}
    drop(out);
    collector.await.unwrap_or_default()
}

fn lock(
    tasks: &Tasks,
) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Control>>> {
    tasks.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn start_task<P: Plugin>(
    start: Start,
    plugin: &Arc<P>,
    tasks: &Tasks,
    out: &mpsc::Sender<String>,
    running: &mut JoinSet<()>,
) -> Option<String> {
    let id = Some(start.id);
    if lock(tasks).contains_key(&start.task) {
        return Some(error(
            id,
            ErrorCode::Invalid,
            format!("task {:?} is already running", start.task),
        ));
    }
    let command = match plugin.command(&start) {
        Ok(command) => command,
        Err(TaskError::Invalid(message)) => return Some(error(id, ErrorCode::Invalid, message)),
        Err(TaskError::Failed(message)) => return Some(error(id, ErrorCode::Failed, message)),
    };
    let spawned = match task::spawn(command) {
        Ok(spawned) => spawned,
        Err(spawn_error) => {
            return Some(error(
                id,
                ErrorCode::Failed,
                format!(
                    "cannot start {:?}: {spawn_error}",
                    start.command.to_argv().first().cloned().unwrap_or_default()
                ),
            ));
        }
    };
    // The started reply is queued before the driver exists, so it precedes every log event.
    let started = PluginMessage::Started(Started {
        id: start.id,
        task: start.task.clone(),
        pgid: Some(spawned.pgid),
    });
    if out.send(started.to_line()).await.is_err() {
        return None;
    }
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    lock(tasks).insert(start.task.clone(), control_tx);
    let out = out.clone();
    let tasks = Arc::clone(tasks);
    let plugin = Arc::clone(plugin);
    running.spawn(async move {
        let exit = task::run(&start, spawned, out.clone(), control_rx, plugin).await;
        lock(&tasks).remove(&start.task);
        let _ = out.send(PluginMessage::Exit(exit).to_line()).await;
    });
    None
}
