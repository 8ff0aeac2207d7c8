//! One running plugin process: handshake, requests and their replies, task events, shutdown.

use maestro_plugin_protocol::framing::take_line_piece;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use maestro_plugin_protocol::{
    HostHello, HostMessage, MAX_LINE_BYTES, PROTOCOL, PluginHello, PluginMessage,
    SUPPORTED_VERSIONS, Unreadable, choose_version,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use crate::groups::{Group, Rejected};

/// How many lines of a plugin's stderr are kept for error messages.
const STDERR_TAIL_LINES: usize = 5;

/// The longest stderr line passed on to diagnostics; the rest is cut.
const STDERR_LINE_BYTES: usize = 4096;

/// How many undelivered events one task may have queued before the plugin's output is paused.
const TASK_EVENT_QUEUE: usize = 32;

/// An event of one task.
#[derive(Debug)]
pub(crate) enum TaskEvent {
    /// A log event.
    Log(maestro_plugin_protocol::Log),
    /// The exit event.
    Exit(maestro_plugin_protocol::Exit),
}

/// Why talking to the plugin failed.
#[derive(Debug)]
pub(crate) enum ConnectionError {
    /// The plugin could not be started or broke the handshake.
    Unavailable(String),
    /// The plugin is gone or stopped answering.
    Lost(String),
}

impl std::fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(message) | Self::Lost(message) => f.write_str(message),
        }
    }
}

type Pending = HashMap<u64, oneshot::Sender<PluginMessage>>;
type TaskRoutes = HashMap<String, mpsc::Sender<TaskEvent>>;

struct Shared {
    name: String,
    pending: Mutex<Pending>,
    tasks: Mutex<TaskRoutes>,
    task_groups: Mutex<HashMap<String, Group>>,
    /// Tasks whose exit event arrived, with how many log events followed it. Rule 3 of §4.3
    /// allows one exit per task and nothing of the task after it: what breaks it is ignored with
    /// a warning (once per task for late logs, which may come by the thousand). One entry per
    /// step: a connection serves one job.
    exited: Mutex<HashMap<String, u64>>,
    stderr_tail: Mutex<VecDeque<String>>,
    death: Mutex<Option<String>>,
    stderr_closed: tokio_util::sync::CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn die(&self, reason: String) {
        let mut death = lock(&self.death);
        if death.is_none() {
            *death = Some(reason);
        }
        drop(death);
        // Dropping the senders wakes every waiter with "closed".
        lock(&self.pending).clear();
        lock(&self.tasks).clear();
    }

    fn stderr_tail(&self) -> String {
        let tail = lock(&self.stderr_tail);
        if tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
            format!("; its last stderr lines: {}", lines.join(" | "))
        }
    }
}

/// A started plugin process that completed the handshake.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    hello: PluginHello,
    version: u32,
    writer: Mutex<Option<mpsc::Sender<String>>>,
    child: tokio::sync::Mutex<Option<Child>>,
    /// The plugin's process (and so its process group) id.
    pid: Option<i32>,
    /// The plugin's own process group.
    group: Option<Group>,
    next_id: AtomicU64,
    /// The plugin's process, registered as this program's (see `maestro_core::children`).
    _registered: maestro_core::children::Registered,
}

/// Kills a plugin's process group when dropped, unless emptied first.
struct KillOnDrop(Option<Group>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            group.kill();
        }
    }
}

/// A connection dropped without [`Connection::shutdown`] (the future that held it was
/// abandoned, as when `mc submit` is cancelled while a plugin validates its steps) kills the
/// plugin's group and its tasks' groups: no plugin outlives the `mc` that started it.
impl Drop for Connection {
    fn drop(&mut self) {
        if self.child.get_mut().is_some() {
            self.kill(format!(
                "plugin {} was abandoned without a shutdown",
                self.shared.name
            ));
        }
    }
}

/// Read one line into `line` (newline removed), keeping at most `max` bytes. `Ok(None)` at end
/// of input; `Ok(Some(true))` when the line was longer than `max`.
pub(crate) async fn read_bounded_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(too_long));
        }
        read_any = true;
        let piece = take_line_piece(available, line, max);
        too_long |= piece.truncated;
        reader.consume(piece.consumed);
        if piece.complete {
            return Ok(Some(too_long));
        }
    }
}

/// Starts a plugin's process: its stdin, stdout and stderr piped, in a process group of its
/// own, killed when its `Child` is dropped, and registered as one of this program's processes
/// (`maestro_core::children`) for as long as the registration is held, so that a bare step's
/// orphan search never takes it for an orphan (`mc serve` runs plugin and bare jobs at once).
pub(crate) fn spawn_plugin(
    command: &mut tokio::process::Command,
) -> io::Result<(Child, maestro_core::children::Registered)> {
    let _spawning = maestro_core::children::spawning();
    let child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let registered = maestro_core::children::Registered::register(child.id());
    Ok((child, registered))
}

impl Connection {
    /// Start the plugin at `path` in a process group of its own and complete the handshake
    /// within `handshake_timeout`.
    pub(crate) async fn open(
        name: &str,
        path: &Path,
        handshake_timeout: Duration,
    ) -> Result<Self, ConnectionError> {
        let (mut child, registered) = spawn_plugin(&mut tokio::process::Command::new(path))
            .map_err(|error| {
                ConnectionError::Unavailable(format!(
                    "cannot start plugin {name} ({}): {error}",
                    path.display()
                ))
            })?;
        let pid = child.id().and_then(|id| i32::try_from(id).ok());
        let group = child.id().and_then(Group::of_child);
        // Until the handshake is done, an abandoned open (its future dropped: Ctrl-C during
        // admission's wait for a hello) takes the plugin's whole group with it; `kill_on_drop`
        // alone would kill only the plugin's own process.
        let mut abandoned = KillOnDrop(group);
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            pending: Mutex::default(),
            tasks: Mutex::default(),
            task_groups: Mutex::default(),
            exited: Mutex::default(),
            stderr_tail: Mutex::default(),
            death: Mutex::default(),
            stderr_closed: tokio_util::sync::CancellationToken::new(),
        });
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ConnectionError::Unavailable(format!(
                "plugin {name}: its pipes were not created"
            )));
        };
        tokio::spawn(forward_stderr(Arc::clone(&shared), stderr));
        let mut stdout = BufReader::with_capacity(64 * 1024, stdout);

        let first = tokio::time::timeout(handshake_timeout, async {
            let mut line = Vec::new();
            read_bounded_line(&mut stdout, &mut line, MAX_LINE_BYTES)
                .await
                .map(|read| read.map(|too_long| (line, too_long)))
        })
        .await;
        let fail = |problem: String| {
            if let Some(group) = &group {
                group.kill();
            }
            problem
        };
        let hello_line = match first {
            Err(_) => {
                return Err(ConnectionError::Unavailable(fail(format!(
                    "plugin {name} ({}) sent no hello within {} ms",
                    path.display(),
                    handshake_timeout.as_millis()
                ))));
            }
            Ok(Err(error)) => {
                return Err(ConnectionError::Unavailable(fail(format!(
                    "plugin {name}: cannot read its hello: {error}"
                ))));
            }
            Ok(Ok(None)) => {
                let status = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                // Let its stderr forwarder record why.
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    shared.stderr_closed.cancelled(),
                )
                .await;
                let status = match status {
                    Ok(Ok(status)) => format!(" ({status})"),
                    _ => String::new(),
                };
                return Err(ConnectionError::Unavailable(fail(format!(
                    "plugin {name} ({}) exited before its hello{status}{}",
                    path.display(),
                    shared.stderr_tail()
                ))));
            }
            Ok(Ok(Some((_, true)))) => {
                return Err(ConnectionError::Unavailable(fail(format!(
                    "plugin {name}: its hello is longer than {MAX_LINE_BYTES} bytes"
                ))));
            }
            Ok(Ok(Some((line, false)))) => line,
        };
        let hello = match PluginMessage::from_line(&String::from_utf8_lossy(&hello_line)) {
            Ok(PluginMessage::Hello(hello)) => hello,
            Ok(_) | Err(_) => {
                let shown: String = String::from_utf8_lossy(&hello_line)
                    .chars()
                    .take(120)
                    .collect();
                return Err(ConnectionError::Unavailable(fail(format!(
                    "plugin {name} ({}) did not start with a hello: its first line is {shown:?}",
                    path.display()
                ))));
            }
        };
        if hello.protocol != PROTOCOL {
            return Err(ConnectionError::Unavailable(fail(format!(
                "plugin {name} ({}) speaks protocol {:?}, not {PROTOCOL:?}",
                path.display(),
                hello.protocol
            ))));
        }
        let Some(version) = choose_version(&hello.versions) else {
            return Err(ConnectionError::Unavailable(fail(format!(
                "plugin {name} ({}) speaks protocol versions {:?}; this mc speaks {:?}: upgrade one of them",
                path.display(),
                hello.versions,
                SUPPORTED_VERSIONS
            ))));
        };

        let (writer_tx, writer_rx) = mpsc::channel::<String>(256);
        tokio::spawn(write_lines(Arc::clone(&shared), stdin, writer_rx));
        let answer = HostMessage::Hello(HostHello { version }).to_line();
        if writer_tx.send(answer).await.is_err() {
            return Err(ConnectionError::Unavailable(fail(format!(
                "plugin {name}: cannot write to it"
            ))));
        }
        tokio::spawn(route(Arc::clone(&shared), stdout));
        // From here the connection kills the group when it is dropped without a shutdown.
        abandoned.0 = None;
        Ok(Self {
            shared,
            hello,
            version,
            writer: Mutex::new(Some(writer_tx)),
            child: tokio::sync::Mutex::new(Some(child)),
            pid,
            group,
            next_id: AtomicU64::new(1),
            _registered: registered,
        })
    }

    /// The plugin's hello.
    pub(crate) fn hello(&self) -> &PluginHello {
        &self.hello
    }

    /// The protocol version in use.
    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    /// A fresh request id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Wait (at most `limit`) for the plugin's stderr to close, so that its last words are in
    /// [`death`](Self::death).
    pub(crate) async fn settle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.shared.stderr_closed.cancelled()).await;
    }

    /// Why the connection died, if it did, with the plugin's last stderr lines.
    pub(crate) fn death(&self) -> Option<String> {
        lock(&self.shared.death)
            .clone()
            .map(|reason| format!("{reason}{}", self.shared.stderr_tail()))
    }

    fn lost(&self, fallback: &str) -> ConnectionError {
        ConnectionError::Lost(
            self.death()
                .unwrap_or_else(|| format!("plugin {}: {fallback}", self.shared.name)),
        )
    }

    /// Write `message` without waiting for an answer.
    pub(crate) async fn send(&self, message: &HostMessage) -> Result<(), ConnectionError> {
        let writer = lock(&self.writer).clone();
        match writer {
            Some(writer) => writer
                .send(message.to_line())
                .await
                .map_err(|_| self.lost("its stdin is closed")),
            None => Err(self.lost("it was shut down")),
        }
    }

    /// Send `message` (whose id is `id`) and return where its reply will arrive.
    pub(crate) async fn begin_request(
        &self,
        id: u64,
        message: &HostMessage,
    ) -> Result<oneshot::Receiver<PluginMessage>, ConnectionError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        if lock(&self.shared.death).is_some() {
            return Err(self.lost("it is gone"));
        }
        lock(&self.shared.pending).insert(id, reply_tx);
        self.send(message).await?;
        Ok(reply_rx)
    }

    /// Send `message` (whose id is `id`) and wait up to `timeout` for the reply.
    pub(crate) async fn request(
        &self,
        id: u64,
        message: &HostMessage,
        timeout: Duration,
    ) -> Result<PluginMessage, ConnectionError> {
        let reply_rx = self.begin_request(id, message).await?;
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(self.lost("it closed its output")),
            Err(_) => {
                lock(&self.shared.pending).remove(&id);
                Err(ConnectionError::Lost(format!(
                    "plugin {} did not answer a {} request within {} ms",
                    self.shared.name,
                    message_type(message),
                    timeout.as_millis()
                )))
            }
        }
    }

    /// Receive the events of `task` from now on.
    pub(crate) fn subscribe(&self, task: &str) -> mpsc::Receiver<TaskEvent> {
        let (events_tx, events_rx) = mpsc::channel(TASK_EVENT_QUEUE);
        if lock(&self.shared.death).is_none() {
            lock(&self.shared.tasks).insert(task.to_owned(), events_tx);
        }
        events_rx
    }

    /// The process group `task` runs in, when the host could check it (see
    /// [`Connection::record_task_group`]).
    pub(crate) fn task_group(&self, task: &str) -> Option<Group> {
        lock(&self.shared.task_groups).get(task).copied()
    }

    /// Stop receiving the events of `task`.
    pub(crate) fn unsubscribe(&self, task: &str) {
        lock(&self.shared.tasks).remove(task);
        lock(&self.shared.task_groups).remove(task);
    }

    /// Remember the process group a task runs in, to kill it if the plugin must be killed, when
    /// `/proc` shows that the plugin created it (see [`Group::reported`]); else ignore it with a
    /// warning.
    pub(crate) fn record_task_group(&self, task: &str, pgid: i32) {
        let Some(plugin_pid) = self.pid else {
            return;
        };
        match Group::reported(pgid, plugin_pid) {
            Ok(group) => {
                lock(&self.shared.task_groups).insert(task.to_owned(), group);
            }
            Err(Rejected::Gone) => tracing::debug!(
                plugin = %self.shared.name,
                task,
                pgid,
                "the reported process group has no leader on this machine; ignored"
            ),
            Err(Rejected::NotThePlugins(why)) => tracing::warn!(
                plugin = %self.shared.name,
                task,
                "plugin {} reported process group {pgid} for task {task}, which it did not create ({why}); ignored: the host will never signal it",
                self.shared.name
            ),
        }
    }

    /// Kill the plugin's process group and the groups of its unfinished tasks, now.
    pub(crate) fn kill(&self, reason: String) {
        self.shared.die(reason);
        // The task groups were checked while their leaders were the plugin's; each is checked
        // again for reuse of its number before it is signalled.
        let tasks: Vec<Group> = lock(&self.shared.task_groups)
            .drain()
            .map(|(_, group)| group)
            .collect();
        if let Some(group) = &self.group {
            group.kill();
        }
        for group in tasks {
            group.kill();
        }
    }

    /// Close the plugin's stdin and let it exit within `grace`; then kill whatever is left.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        lock(&self.writer).take();
        let mut child = self.child.lock().await;
        if let Some(child) = child.as_mut() {
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    plugin = %self.shared.name,
                    "plugin did not exit within {} ms of the end of its input; killing it",
                    grace.as_millis()
                ),
            }
        }
        self.kill(format!("plugin {} was shut down", self.shared.name));
        if let Some(mut child) = child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
        }
    }
}

fn message_type(message: &HostMessage) -> &'static str {
    match message {
        HostMessage::Hello(_) => "hello",
        HostMessage::Describe(_) => "describe",
        HostMessage::Validate(_) => "validate",
        HostMessage::Start(_) => "start",
        HostMessage::Stop(_) => "stop",
        HostMessage::Destroy(_) => "destroy",
        HostMessage::Ping(_) => "ping",
    }
}

async fn write_lines(
    shared: Arc<Shared>,
    mut stdin: tokio::process::ChildStdin,
    mut lines: mpsc::Receiver<String>,
) {
    while let Some(line) = lines.recv().await {
        if let Err(error) = stdin.write_all(line.as_bytes()).await {
            shared.die(format!(
                "plugin {}: cannot write to it: {error}",
                shared.name
            ));
            return;
        }
    }
    // Dropping stdin here is the end of input that tells the plugin to exit.
}

async fn forward_stderr(shared: Arc<Shared>, stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    while let Ok(Some(_)) = read_bounded_line(&mut reader, &mut line, STDERR_LINE_BYTES).await {
        let text = String::from_utf8_lossy(&line).into_owned();
        tracing::warn!("[plugin {}] {text}", shared.name);
        let mut tail = lock(&shared.stderr_tail);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    }
    shared.stderr_closed.cancel();
}

async fn route(shared: Arc<Shared>, mut stdout: BufReader<ChildStdout>) {
    let mut line = Vec::new();
    let reason = loop {
        match read_bounded_line(&mut stdout, &mut line, MAX_LINE_BYTES).await {
            Ok(None) => {
                break format!("plugin {} exited (its output closed) mid-step", shared.name);
            }
            Err(error) => break format!("plugin {}: cannot read its output: {error}", shared.name),
            Ok(Some(true)) => {
                break format!(
                    "plugin {} wrote a line longer than {MAX_LINE_BYTES} bytes, which breaks the protocol",
                    shared.name
                );
            }
            Ok(Some(false)) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let message = match PluginMessage::from_line(&text) {
            Ok(message) => message,
            Err(Unreadable::UnknownType { message_type, .. }) => {
                tracing::debug!(plugin = %shared.name, message_type, "ignoring an unknown message type");
                continue;
            }
            Err(unreadable) => {
                let shown: String = text.chars().take(200).collect();
                tracing::warn!(plugin = %shared.name, "plugin {} wrote an unreadable line ({unreadable}): {shown:?}", shared.name);
                continue;
            }
        };
        match message {
            PluginMessage::Log(log) => {
                let late = lock(&shared.exited).get_mut(&log.task).map(|late| {
                    *late += 1;
                    *late
                });
                if let Some(late) = late {
                    if late == 1 {
                        tracing::warn!(
                            plugin = %shared.name,
                            task = %log.task,
                            seq = log.seq,
                            "plugin {} sent a log event for task {} after its exit event, which breaks rule 3 of §4.3; ignored (and any more)",
                            shared.name,
                            log.task
                        );
                    }
                    continue;
                }
                let route = lock(&shared.tasks).get(&log.task).cloned();
                if let Some(route) = route {
                    // Waiting here pauses the plugin's output while the step's log catches up.
                    let _ = route.send(TaskEvent::Log(log)).await;
                }
            }
            PluginMessage::Exit(exit) => {
                let first = match lock(&shared.exited).entry(exit.task.clone()) {
                    Entry::Occupied(_) => false,
                    Entry::Vacant(entry) => {
                        entry.insert(0);
                        true
                    }
                };
                if !first {
                    tracing::warn!(
                        plugin = %shared.name,
                        task = %exit.task,
                        "plugin {} sent a second exit event for task {}, which breaks rule 3 of §4.3 (one exit per task); ignored",
                        shared.name,
                        exit.task
                    );
                    continue;
                }
                let route = lock(&shared.tasks).get(&exit.task).cloned();
                if let Some(route) = route {
                    let _ = route.send(TaskEvent::Exit(exit)).await;
                }
            }
            PluginMessage::Hello(_) => {
                tracing::warn!(plugin = %shared.name, "plugin sent a second hello; ignored");
            }
            reply => {
                let waiter = reply
                    .reply_to()
                    .and_then(|id| lock(&shared.pending).remove(&id));
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(reply);
                    }
                    None => {
                        tracing::debug!(plugin = %shared.name, ?reply, "reply nobody waits for")
                    }
                }
            }
        }
    };
    tracing::debug!(plugin = %shared.name, %reason, "plugin connection ended");
    shared.die(reason);
}
