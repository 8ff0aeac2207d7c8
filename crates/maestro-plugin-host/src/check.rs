//! The conformance kit behind `mc plugins check`: drive a plugin over the raw protocol and judge
//! every line it writes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use maestro_plugin_protocol::{
    Command, Describe, Destroy, ErrorCode, Exit, ExitReason, HostHello, HostMessage,
    LOG_CHUNK_BYTES, Log, MAX_LINE_BYTES, PROTOCOL, Ping, PluginMessage, Start, Stop, Stream,
    choose_version,
};
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::connection::read_bounded_line;
use crate::groups::{Group, Rejected};

use maestro_plugin_protocol::capability::REMOTE;

/// The outcome of one conformance check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// What was checked, such as `exit codes 0/1/42`.
    pub name: String,
    /// Whether the plugin passed.
    pub passed: bool,
    /// What was seen, one line: for a failed check, what arrived instead of what was expected.
    pub detail: String,
    /// The rule the check holds the plugin to: what was expected.
    pub expected: String,
    /// The section of `docs/plugin-protocol.md` that states the rule, such as `§4.3 start`.
    pub section: String,
}

const TEN_MB: usize = 10 * 1024 * 1024;

/// A variable the kit sets in the plugin's own environment: a local plugin's tasks start from it.
const INHERITED_NAME: &str = "MC_CHECK_INHERITED";
const INHERITED_VALUE: &str = "from the plugin's environment";

/// How many of a plugin's stderr lines the kit keeps to search for secrets.
const STDERR_KEPT: usize = 100_000;

/// One check of the kit: its name, the rule it holds a plugin to, and where the document says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckRule {
    /// The check's name, as reported.
    pub name: &'static str,
    /// The rule, one sentence.
    pub expected: &'static str,
    /// The section of `docs/plugin-protocol.md` stating it.
    pub section: &'static str,
}

const fn rule(name: &'static str, expected: &'static str, section: &'static str) -> CheckRule {
    CheckRule {
        name,
        expected,
        section,
    }
}

/// The checks, in the order they run and are reported.
pub const CHECKS: &[CheckRule] = &[
    rule(
        "handshake",
        "the first line is a hello, within 10 s, naming protocol maestro-executor and a version this mc speaks",
        "§3 Handshake",
    ),
    rule(
        "describe",
        "describe is answered with described within 10 s, naming the plugin as its hello did",
        "§4.1 describe",
    ),
    rule(
        "ping",
        "ping is answered with pong within 10 s",
        "§4.6 ping",
    ),
    rule(
        "unsupported request",
        "a request of unknown type is answered with an error of code unsupported echoing its id",
        "§2 Process model",
    ),
    rule(
        "unknown fields ignored",
        "requests carrying fields the plugin does not know are served as if the fields were absent",
        "§2 Process model",
    ),
    rule(
        "malformed line",
        "a line that is not JSON is answered with an error of code malformed and id null, and the plugin keeps serving",
        "§4 Requests and replies",
    ),
    rule(
        "validate",
        "validate of the settings the kit runs tasks with is answered ok within 10 s (a plugin not announcing `validate` may answer unsupported)",
        "§4.2 validate",
    ),
    rule(
        "echo",
        "an argv task's output arrives as log events and it exits completed, code 0",
        "§4.3 start",
    ),
    rule(
        "task stdin",
        "a task's stdin is not the plugin's (the protocol stream): a task reading its input sees its end at once",
        "§4.3 start (task environment and directory)",
    ),
    rule(
        "exit codes 0/1/42",
        "exit codes are reported as given, with reason completed and no signal",
        "§4.3 start (exit fields)",
    ),
    rule(
        "exit by signal",
        "a task killed by signal n is reported with signal n and code null; one that exits 143 with code 143 and signal null",
        "§4.3 start (exit fields)",
    ),
    rule(
        "env and workdir",
        "a local task starts from the plugin's own environment plus env, verbatim; it runs in workdir, in workspace/workdir for a relative one, in workspace when workdir is absent",
        "§4.3 start (task environment and directory)",
    ),
    rule(
        "workdir that does not exist",
        "a task whose workdir does not exist never runs elsewhere: an error reply, an exit with reason error, or a non-zero exit code",
        "§4.3 start (task environment and directory)",
    ),
    rule(
        "start that cannot run",
        "a command that cannot be run gets an error reply (no events), or started then an exit with reason error or a non-zero code",
        "§4.3 start (a start that cannot run)",
    ),
    rule(
        "secrets stay in the environment",
        "env values reach the task's environment and never a command line or the plugin's stderr",
        "§4.3 start (task environment and directory)",
    ),
    rule(
        "non-UTF-8 output",
        "output that is not UTF-8 arrives byte for byte (as base64 data)",
        "§4.3 start (log fields)",
    ),
    rule(
        "long lines in 64 KiB pieces",
        "a line longer than 64 KiB arrives in pieces of at most 65536 bytes, in order, every piece but the last marked partial",
        "§4.3 start (log fields)",
    ),
    rule(
        "10 MB of output",
        "10 MB of output arrive complete",
        "§4.3 start (log fields)",
    ),
    rule(
        "child writing to inherited stdout",
        "output of the task's children arrives as log events, never as lines on the plugin's stdout",
        "§2 Process model",
    ),
    rule(
        "nothing left after exit",
        "when the task's main process exits, whatever it left in its process group is killed before the exit event",
        "§4.3 start (teardown)",
    ),
    rule(
        "output held open by a daemon",
        "when a daemonised grandchild keeps the task's output open, the exit event still arrives within about 1 s of the main process's exit",
        "§4.3 start (teardown)",
    ),
    rule(
        "stop",
        "stop is answered ok at once (also for an unknown task), pings are answered while a task runs, and the stopped task exits with reason stopped",
        "§4.4 stop",
    ),
    rule(
        "stop signal and reason",
        "stop's signal (a name such as SIGINT) is delivered with its grace period; a task that traps SIGTERM and exits 0 is reported with reason stopped and code 0",
        "§4.4 stop",
    ),
    rule(
        "stop escalation (task ignores SIGTERM)",
        "stop is answered before the task's exit; a task ignoring the signal is killed once grace_ms has passed, with nothing left in its group",
        "§4.4 stop",
    ),
    rule(
        "destroy",
        "destroy is answered ok (also for a finished or unknown task); a running task is killed at once and still gets its exit event, reason stopped",
        "§4.5 destroy",
    ),
    rule(
        "concurrent tasks",
        "several tasks run at once: three tasks that never end by themselves all print their first line before any is stopped",
        "§4 Requests and replies",
    ),
    rule(
        "containment claim",
        "a plugin announcing contained runs tasks that cannot write outside what they were given",
        "§3 Handshake (capabilities)",
    ),
    rule(
        "ordering rules",
        "started before any event of its task, seq from 0 up by 1, exactly one exit per task after all its logs",
        "§4.3 start (ordering rules)",
    ),
    rule(
        "clean protocol stream",
        "every stdout line is a protocol message of at most 1 MiB; a pgid names a process group the plugin created",
        "§2 Process model, §4.3 start",
    ),
    rule(
        "end of input",
        "at the end of its input the plugin stops every task (SIGKILL at most 1 s after SIGTERM) and exits",
        "§2 Process model",
    ),
    rule(
        "unknown protocol version",
        "a plugin told a version it does not speak exits non-zero",
        "§3 Handshake",
    ),
];

enum Line {
    Message(PluginMessage),
    Bad(String),
}

struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Line>,
    transcript: Vec<PluginMessage>,
    bad_lines: Vec<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Every stderr line (up to [`STDERR_KEPT`]), searched for secrets.
    stderr_all: Arc<Mutex<Vec<String>>>,
    next_id: u64,
    next_task: u64,
    with: Option<serde_json::Value>,
    /// The plugin's own process group.
    group: Option<Group>,
    /// Task process groups the plugin reported and `/proc` confirmed it created.
    task_groups: Vec<Group>,
    /// Reported `pgid`s that name something the plugin did not create.
    bad_pgids: Vec<String>,
    /// The plugin's process, registered as this program's (see `maestro_core::children`).
    _registered: maestro_core::children::Registered,
}

enum Outcome {
    Refused(maestro_plugin_protocol::ErrorReply),
    Ran(TaskRun),
}

struct TaskRun {
    logs: Vec<Log>,
    exit: Exit,
}

impl TaskRun {
    fn output(&self, stream: Stream) -> Vec<u8> {
        let mut bytes = Vec::new();
        for log in self.logs.iter().filter(|log| log.stream == stream) {
            bytes.extend_from_slice(&log.bytes().unwrap_or_default());
            if !log.partial {
                bytes.push(b'\n');
            }
        }
        bytes
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.output(Stream::Stdout)).into_owned()
    }
}

impl Session {
    fn spawn(path: &Path, with: Option<serde_json::Value>) -> std::io::Result<Self> {
        let (mut child, registered) = crate::connection::spawn_plugin(
            tokio::process::Command::new(path).env(INHERITED_NAME, INHERITED_VALUE),
        )?;
        let group = child.id().and_then(Group::of_child);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("pipes were not created"));
        };
        let (lines_tx, lines) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, stdout);
            let mut line = Vec::new();
            while let Ok(Some(too_long)) =
                read_bounded_line(&mut reader, &mut line, MAX_LINE_BYTES).await
            {
                let text = String::from_utf8_lossy(&line);
                let parsed = if too_long {
                    Line::Bad(format!("a line longer than {MAX_LINE_BYTES} bytes"))
                } else {
                    match PluginMessage::from_line(&text) {
                        Ok(message) => Line::Message(message),
                        Err(error) => {
                            let shown: String = text.chars().take(100).collect();
                            Line::Bad(format!("{error}: {shown:?}"))
                        }
                    }
                };
                if lines_tx.send(parsed).await.is_err() {
                    break;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_all = Arc::new(Mutex::new(Vec::new()));
        let tail = Arc::clone(&stderr_tail);
        let all = Arc::clone(&stderr_all);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while let Ok(Some(_)) = read_bounded_line(&mut reader, &mut line, 4096).await {
                let text = String::from_utf8_lossy(&line).into_owned();
                {
                    let mut all = all.lock().unwrap_or_else(PoisonError::into_inner);
                    if all.len() < STDERR_KEPT {
                        all.push(text.clone());
                    }
                }
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                if tail.len() == 3 {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
        });
        Ok(Self {
            child,
            stdin: Some(stdin),
            lines,
            transcript: Vec::new(),
            bad_lines: Vec::new(),
            stderr_tail,
            stderr_all,
            next_id: 1,
            next_task: 1,
            with,
            group,
            task_groups: Vec::new(),
            bad_pgids: Vec::new(),
            _registered: registered,
        })
    }

    fn stderr_hint(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
            format!(" (its stderr: {})", lines.join(" | "))
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn task_id(&mut self) -> String {
        self.next_task += 1;
        format!("check-{}", self.next_task)
    }

    async fn send_raw(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("its stdin is closed")?;
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|error| format!("cannot write to the plugin: {error}"))
    }

    async fn send(&mut self, message: &HostMessage) -> Result<(), String> {
        self.send_raw(&message.to_line()).await
    }

    /// Read messages into the transcript until `done` holds for one at index `from` or later.
    async fn wait_for(
        &mut self,
        from: usize,
        deadline: Instant,
        what: &str,
        mut done: impl FnMut(&PluginMessage) -> bool,
    ) -> Result<usize, String> {
        if let Some(found) = self.transcript[from.min(self.transcript.len())..]
            .iter()
            .position(&mut done)
        {
            return Ok(from + found);
        }
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => return Err(format!("no {what} in time")),
                Ok(None) => {
                    return Err(format!(
                        "the plugin closed its output while waiting for {what}{}",
                        self.stderr_hint()
                    ));
                }
                Ok(Some(Line::Message(message))) => {
                    let hit = done(&message);
                    self.transcript.push(message);
                    if hit {
                        return Ok(self.transcript.len() - 1);
                    }
                }
                Ok(Some(Line::Bad(problem))) => self.bad_lines.push(problem),
            }
        }
    }

    async fn reply(&mut self, id: u64, deadline: Instant) -> Result<PluginMessage, String> {
        let from = self.transcript.len();
        let at = self
            .wait_for(from, deadline, "reply", |m| m.reply_to() == Some(id))
            .await?;
        Ok(self.transcript[at].clone())
    }

    fn start_message(&mut self, task: &str, command: Command) -> (u64, HostMessage) {
        let id = self.id();
        (
            id,
            HostMessage::Start(Start {
                id,
                task: task.to_owned(),
                step: "check".to_owned(),
                job_id: "00000000-0000-0000-0000-000000000000".to_owned(),
                trace_id: "mc-plugins-check".to_owned(),
                command,
                env: BTreeMap::new(),
                workspace: None,
                workdir: None,
                timeout_ms: Some(120_000),
                with: self.with.clone(),
            }),
        )
    }

    /// Send a start and wait for its `started` reply; returns the task's process group, if the
    /// plugin reported one and `/proc` confirms the plugin created it.
    async fn start(
        &mut self,
        task: &str,
        message: HostMessage,
        id: u64,
    ) -> Result<Option<Group>, String> {
        self.send(&message).await?;
        match self
            .reply(id, Instant::now() + Duration::from_secs(10))
            .await?
        {
            PluginMessage::Started(started) if started.task == task => {
                Ok(started.pgid.and_then(|pgid| self.check_group(task, pgid)))
            }
            other => Err(format!("start answered with {}", short(&other))),
        }
    }

    /// Believe a reported `pgid` only as far as [`Group::reported`] does.
    fn check_group(&mut self, task: &str, pgid: i32) -> Option<Group> {
        let plugin_pid = self.child.id().and_then(|pid| i32::try_from(pid).ok())?;
        match Group::reported(pgid, plugin_pid) {
            Ok(group) => {
                self.task_groups.push(group);
                Some(group)
            }
            Err(Rejected::Gone) => None,
            Err(Rejected::NotThePlugins(why)) => {
                tracing::warn!(
                    task,
                    pgid,
                    "ignoring a process group the plugin did not create: {why}"
                );
                self.bad_pgids
                    .push(format!("task {task} reported pgid {pgid}: {why}"));
                None
            }
        }
    }

    async fn exit_of(&mut self, task: &str, deadline: Instant) -> Result<TaskRun, String> {
        self.wait_for(
            0,
            deadline,
            "exit event",
            |m| matches!(m, PluginMessage::Exit(exit) if exit.task == task),
        )
        .await?;
        Ok(self.task_run(task))
    }

    fn task_run(&self, task: &str) -> TaskRun {
        let mut run = TaskRun {
            logs: Vec::new(),
            exit: Exit {
                task: task.to_owned(),
                code: None,
                signal: None,
                reason: ExitReason::Error,
                fault: None,
                message: None,
                teardown: None,
            },
        };
        for message in &self.transcript {
            match message {
                PluginMessage::Log(log) if log.task == task => run.logs.push(log.clone()),
                PluginMessage::Exit(exit) if exit.task == task => run.exit = exit.clone(),
                _ => {}
            }
        }
        run
    }

    async fn run(
        &mut self,
        command: Command,
        env: BTreeMap<String, String>,
        workdir: Option<String>,
        limit: Duration,
    ) -> Result<TaskRun, String> {
        let task = self.task_id();
        let (id, mut message) = self.start_message(&task, command);
        if let HostMessage::Start(start) = &mut message {
            start.env = env;
            start.workdir = workdir;
        }
        self.start(&task, message, id).await?;
        self.exit_of(&task, Instant::now() + limit).await
    }

    async fn shell(&mut self, line: &str, limit: Duration) -> Result<TaskRun, String> {
        self.run(
            Command::Shell(line.to_owned()),
            BTreeMap::new(),
            None,
            limit,
        )
        .await
    }

    /// Start `line` and wait until its stdout says `ready`.
    async fn start_ready(&mut self, line: &str) -> Result<(String, Option<Group>), String> {
        let task = self.task_id();
        let (id, message) = self.start_message(&task, Command::Shell(line.to_owned()));
        let pgid = self.start(&task, message, id).await?;
        let wanted = task.clone();
        self.wait_for(
            0,
            Instant::now() + Duration::from_secs(10),
            "\"ready\" line",
            |m| {
                matches!(m, PluginMessage::Log(log)
                    if log.task == wanted && log.text.as_deref() == Some("ready"))
            },
        )
        .await?;
        Ok((task, pgid))
    }

    /// Whether the plugin's hello announced capability `name`.
    fn announces(&self, name: &str) -> bool {
        matches!(
            self.transcript.first(),
            Some(PluginMessage::Hello(hello)) if hello.capabilities.iter().any(|c| c == name)
        )
    }

    /// Send a request and wait up to 10 s for its reply.
    async fn request(&mut self, message: &HostMessage) -> Result<PluginMessage, String> {
        let id = message.id().unwrap_or_default();
        self.send(message).await?;
        self.reply(id, Instant::now() + Duration::from_secs(10))
            .await
    }

    /// Start a task that may be refused: its `error` reply, or how it ended.
    async fn start_outcome(
        &mut self,
        task: &str,
        message: HostMessage,
        limit: Duration,
    ) -> Result<Outcome, String> {
        let id = message.id().unwrap_or_default();
        self.send(&message).await?;
        match self
            .reply(id, Instant::now() + Duration::from_secs(10))
            .await?
        {
            PluginMessage::Error(error) => Ok(Outcome::Refused(error)),
            PluginMessage::Started(started) if started.task == task => {
                if let Some(pgid) = started.pgid {
                    self.check_group(task, pgid);
                }
                Ok(Outcome::Ran(
                    self.exit_of(task, Instant::now() + limit).await?,
                ))
            }
            other => Err(format!("start answered with {}", short(&other))),
        }
    }

    async fn stop(&mut self, task: &str, grace: Duration) -> Result<(), String> {
        self.stop_with(task, "SIGTERM", grace).await
    }

    async fn stop_with(&mut self, task: &str, signal: &str, grace: Duration) -> Result<(), String> {
        let id = self.id();
        let stop = HostMessage::Stop(Stop {
            id,
            task: task.to_owned(),
            signal: signal.to_owned(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        });
        self.send(&stop).await?;
        match self
            .reply(id, Instant::now() + Duration::from_secs(10))
            .await?
        {
            PluginMessage::Ok(_) => Ok(()),
            other => Err(format!("stop answered with {}", short(&other))),
        }
    }
}

fn short(message: &PluginMessage) -> String {
    let line = message.to_line();
    line.trim_end().chars().take(160).collect()
}

fn verdict(name: &str, result: Result<String, String>) -> CheckResult {
    let rule = CHECKS
        .iter()
        .find(|rule| rule.name == name)
        .copied()
        .unwrap_or(CheckRule {
            name: "",
            expected: "",
            section: "",
        });
    let (passed, detail) = match result {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    CheckResult {
        name: name.to_owned(),
        passed,
        detail,
        expected: rule.expected.to_owned(),
        section: rule.section.to_owned(),
    }
}

fn expect_completed(run: &TaskRun, code: i32) -> Result<(), String> {
    if run.exit.reason == ExitReason::Completed && run.exit.code == Some(code) {
        Ok(())
    } else {
        Err(format!(
            "expected completed with code {code}, got {:?} code {:?} signal {:?}{}",
            run.exit.reason,
            run.exit.code,
            run.exit.signal,
            run.exit
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ))
    }
}

/// Whether process group `group` holds no live process within `limit`. A zombie does not count
/// (as for the host's own teardown check): who reaps an orphan is up to the machine's init.
async fn group_gone(group: &Group, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while group.alive() && !group.members().is_empty() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Run the conformance kit against the plugin executable at `path`: one [`CheckResult`] per
/// check, in order. A plugin that fails the handshake fails every later check too.
pub async fn check_plugin(path: &Path) -> Vec<CheckResult> {
    check_plugin_with(path, None).await
}

/// [`check_plugin`] for a plugin that needs settings: `with` is sent in every task, as a step's
/// `with` object would be (an ssh plugin needs a host to run anything).
pub async fn check_plugin_with(path: &Path, with: Option<serde_json::Value>) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let mut session = match Session::spawn(path, with) {
        Ok(session) => session,
        Err(error) => {
            let detail = format!("cannot start {}: {error}", path.display());
            return CHECKS
                .iter()
                .map(|rule| verdict(rule.name, Err(detail.clone())))
                .collect();
        }
    };
    let handshake = handshake(&mut session).await;
    let handshake_ok = handshake.is_ok();
    results.push(verdict("handshake", handshake));
    if !handshake_ok {
        results.extend(
            CHECKS[1..]
                .iter()
                .map(|rule| verdict(rule.name, Err("not run: the handshake failed".to_owned()))),
        );
        return results;
    }
    results.push(verdict("describe", describe(&mut session).await));
    results.push(verdict("ping", ping(&mut session).await));
    results.push(verdict(
        "unsupported request",
        unsupported(&mut session).await,
    ));
    results.push(verdict(
        "unknown fields ignored",
        unknown_fields(&mut session).await,
    ));
    results.push(verdict("malformed line", malformed(&mut session).await));
    results.push(verdict("validate", validate(&mut session).await));
    results.push(verdict("echo", echo(&mut session).await));
    results.push(verdict("task stdin", task_stdin(&mut session).await));
    results.push(verdict("exit codes 0/1/42", exit_codes(&mut session).await));
    results.push(verdict(
        "exit by signal",
        exit_by_signal(&mut session).await,
    ));
    results.push(verdict(
        "env and workdir",
        env_and_workdir(&mut session).await,
    ));
    results.push(verdict(
        "workdir that does not exist",
        missing_workdir(&mut session).await,
    ));
    results.push(verdict(
        "start that cannot run",
        cannot_run(&mut session).await,
    ));
    results.push(verdict(
        "secrets stay in the environment",
        secrets(&mut session).await,
    ));
    results.push(verdict("non-UTF-8 output", non_utf8(&mut session).await));
    results.push(verdict(
        "long lines in 64 KiB pieces",
        long_lines(&mut session).await,
    ));
    results.push(verdict(
        "10 MB of output",
        ten_megabytes(&mut session).await,
    ));
    results.push(verdict(
        "child writing to inherited stdout",
        inherited_stdout(&mut session).await,
    ));
    results.push(verdict(
        "nothing left after exit",
        nothing_left(&mut session).await,
    ));
    results.push(verdict(
        "output held open by a daemon",
        output_held_open(&mut session).await,
    ));
    results.push(verdict("stop", stop(&mut session).await));
    results.push(verdict(
        "stop signal and reason",
        stop_signal_and_reason(&mut session).await,
    ));
    results.push(verdict(
        "stop escalation (task ignores SIGTERM)",
        stop_escalation(&mut session).await,
    ));
    results.push(verdict("destroy", destroy(&mut session).await));
    results.push(verdict("concurrent tasks", concurrent(&mut session).await));
    results.push(verdict(
        "containment claim",
        containment(&mut session).await,
    ));
    results.push(verdict("ordering rules", ordering(&mut session).await));
    results.push(verdict("clean protocol stream", clean_stream(&session)));
    results.push(verdict("end of input", end_of_input(&mut session).await));
    drop(session);
    results.push(verdict(
        "unknown protocol version",
        unknown_version(path).await,
    ));
    results
}

async fn handshake(session: &mut Session) -> Result<String, String> {
    session
        .wait_for(0, Instant::now() + Duration::from_secs(10), "hello", |_| {
            true
        })
        .await
        .map_err(|error| format!("{error}{}", session.stderr_hint()))?;
    let PluginMessage::Hello(hello) = &session.transcript[0] else {
        return Err(format!(
            "the first line is not a hello: {}",
            short(&session.transcript[0])
        ));
    };
    if hello.protocol != PROTOCOL {
        return Err(format!(
            "protocol is {:?}, expected {PROTOCOL:?}",
            hello.protocol
        ));
    }
    let Some(version) = choose_version(&hello.versions) else {
        return Err(format!(
            "versions {:?} include none this mc speaks",
            hello.versions
        ));
    };
    let detail = format!(
        "plugin {:?} {} speaks version {version}",
        hello.plugin, hello.version
    );
    session
        .send(&HostMessage::Hello(HostHello { version }))
        .await?;
    Ok(detail)
}

async fn describe(session: &mut Session) -> Result<String, String> {
    let id = session.id();
    session
        .send(&HostMessage::Describe(Describe { id }))
        .await?;
    match session
        .reply(id, Instant::now() + Duration::from_secs(10))
        .await?
    {
        PluginMessage::Described(described) if !described.name.is_empty() => {
            if let Some(PluginMessage::Hello(hello)) = session.transcript.first()
                && hello.plugin != described.name
            {
                return Err(format!(
                    "described names the plugin {:?}, its hello {:?}",
                    described.name, hello.plugin
                ));
            }
            Ok(format!(
                "{} {}: {}",
                described.name, described.version, described.description
            ))
        }
        other => Err(format!("expected described, got {}", short(&other))),
    }
}

async fn ping(session: &mut Session) -> Result<String, String> {
    let id = session.id();
    let sent = Instant::now();
    session.send(&HostMessage::Ping(Ping { id })).await?;
    match session
        .reply(id, Instant::now() + Duration::from_secs(10))
        .await?
    {
        PluginMessage::Pong(_) => Ok(format!("pong in {} µs", sent.elapsed().as_micros())),
        other => Err(format!("expected pong, got {}", short(&other))),
    }
}

async fn unsupported(session: &mut Session) -> Result<String, String> {
    let id = session.id();
    session
        .send_raw(&format!(
            "{{\"type\":\"mc-check-no-such-request\",\"id\":{id},\"extra\":[1]}}\n"
        ))
        .await?;
    match session
        .reply(id, Instant::now() + Duration::from_secs(10))
        .await?
    {
        PluginMessage::Error(error) if error.code == ErrorCode::Unsupported => {
            Ok("answered with an unsupported error".to_owned())
        }
        other => Err(format!(
            "expected an error with code unsupported, got {}",
            short(&other)
        )),
    }
}

async fn echo(session: &mut Session) -> Result<String, String> {
    let text = "hello from mc plugins check";
    let run = session
        .run(
            Command::Argv(vec!["echo".to_owned(), text.to_owned()]),
            BTreeMap::new(),
            None,
            Duration::from_secs(10),
        )
        .await?;
    expect_completed(&run, 0)?;
    let out = run.stdout_text();
    if out == format!("{text}\n") {
        Ok("argv task printed its line and exited 0".to_owned())
    } else {
        Err(format!("stdout was {out:?}"))
    }
}

async fn task_stdin(session: &mut Session) -> Result<String, String> {
    let task = session.task_id();
    let (id, message) =
        session.start_message(&task, Command::Shell("cat; echo input-closed".to_owned()));
    let group = session.start(&task, message, id).await?;
    let run = match session
        .exit_of(&task, Instant::now() + Duration::from_secs(10))
        .await
    {
        Ok(run) => run,
        Err(error) => {
            // A `cat` reading the protocol stream would eat every later request: end it.
            if let Some(group) = group {
                group.kill();
            }
            return Err(format!(
                "a task running `cat` did not end: {error} (is its stdin the plugin's own?)"
            ));
        }
    };
    expect_completed(&run, 0)?;
    if run.stdout_text() == "input-closed\n" {
        Ok("a task reading its stdin saw its end at once".to_owned())
    } else {
        Err(format!(
            "a task running `cat` printed {:?}: it read something",
            run.stdout_text()
        ))
    }
}

async fn exit_codes(session: &mut Session) -> Result<String, String> {
    for code in [0, 1, 42] {
        let run = session
            .shell(&format!("exit {code}"), Duration::from_secs(10))
            .await?;
        expect_completed(&run, code)?;
    }
    Ok("0, 1 and 42 reported as given".to_owned())
}

async fn unknown_fields(session: &mut Session) -> Result<String, String> {
    let id = session.id();
    session
        .send_raw(&format!(
            "{{\"type\":\"ping\",\"id\":{id},\"mc_check_unknown\":{{\"nested\":[1,\"two\"]}}}}\n"
        ))
        .await?;
    match session
        .reply(id, Instant::now() + Duration::from_secs(10))
        .await?
    {
        PluginMessage::Pong(_) => {}
        other => {
            return Err(format!(
                "a ping with an unknown field was answered with {}",
                short(&other)
            ));
        }
    }
    let task = session.task_id();
    let (id, message) = session.start_message(
        &task,
        Command::Argv(vec!["echo".to_owned(), "unknown-fields".to_owned()]),
    );
    let mut value = serde_json::to_value(&message).map_err(|error| error.to_string())?;
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "mc_check_unknown".to_owned(),
            serde_json::json!({"future": true}),
        );
    }
    session.send_raw(&format!("{value}\n")).await?;
    match session
        .reply(id, Instant::now() + Duration::from_secs(10))
        .await?
    {
        PluginMessage::Started(started) if started.task == task => {
            if let Some(pgid) = started.pgid {
                session.check_group(&task, pgid);
            }
        }
        other => {
            return Err(format!(
                "a start with an unknown field was answered with {}",
                short(&other)
            ));
        }
    }
    let run = session
        .exit_of(&task, Instant::now() + Duration::from_secs(10))
        .await?;
    expect_completed(&run, 0)?;
    if run.stdout_text() == "unknown-fields\n" {
        Ok("a ping and a start with unknown fields were served".to_owned())
    } else {
        Err(format!("stdout was {:?}", run.stdout_text()))
    }
}

async fn malformed(session: &mut Session) -> Result<String, String> {
    let from = session.transcript.len();
    session.send_raw("this line is not JSON {\n").await?;
    let id = session.id();
    session.send(&HostMessage::Ping(Ping { id })).await?;
    let at = session
        .wait_for(
            from,
            Instant::now() + Duration::from_secs(10),
            "pong after a malformed line",
            |m| m.reply_to() == Some(id),
        )
        .await?;
    if !matches!(session.transcript[at], PluginMessage::Pong(_)) {
        return Err(format!(
            "the ping after a malformed line was answered with {}",
            short(&session.transcript[at])
        ));
    }
    let answered = session.transcript[from..at].iter().any(|m| {
        matches!(m, PluginMessage::Error(error)
            if error.code == ErrorCode::Malformed && error.id.is_none())
    });
    if answered {
        Ok("answered malformed (id null) and kept serving".to_owned())
    } else {
        Err("no error with code malformed and id null arrived before the next reply".to_owned())
    }
}

async fn validate(session: &mut Session) -> Result<String, String> {
    let announced = session.announces(maestro_plugin_protocol::capability::VALIDATE);
    let id = session.id();
    let with = session.with.clone();
    let reply = session
        .request(&HostMessage::Validate(maestro_plugin_protocol::Validate {
            id,
            step: "check".to_owned(),
            with,
        }))
        .await
        .map_err(|error| format!("validate: {error}"))?;
    match reply {
        PluginMessage::Ok(_) => Ok("the kit's settings were accepted".to_owned()),
        PluginMessage::Error(error) if error.code == ErrorCode::Unsupported && !announced => {
            Ok("not announced; answered unsupported".to_owned())
        }
        PluginMessage::Error(error) => Err(format!(
            "the settings every task of the kit runs with were refused ({:?}: {}){}",
            error.code,
            error.message,
            if announced {
                ""
            } else {
                " by a plugin that does not announce `validate`"
            }
        )),
        other => Err(format!("validate answered with {}", short(&other))),
    }
}

async fn exit_by_signal(session: &mut Session) -> Result<String, String> {
    let remote = session.announces(REMOTE);
    for signal in [15, 9] {
        let run = session
            .shell(&format!("kill -{signal} $$"), Duration::from_secs(10))
            .await?;
        let exact = run.exit.signal == Some(signal) && run.exit.code.is_none();
        let remote_code =
            remote && run.exit.code == Some(128 + signal) && run.exit.signal.is_none();
        if run.exit.reason != ExitReason::Completed || !(exact || remote_code) {
            return Err(format!(
                "a task killed by signal {signal} was reported as {:?} code {:?} signal {:?}, expected completed with signal {signal} and code null",
                run.exit.reason, run.exit.code, run.exit.signal
            ));
        }
    }
    let run = session.shell("exit 143", Duration::from_secs(10)).await?;
    if run.exit.reason != ExitReason::Completed
        || run.exit.code != Some(143)
        || run.exit.signal.is_some()
    {
        return Err(format!(
            "a task that exited 143 was reported as {:?} code {:?} signal {:?}, expected completed with code 143 and signal null",
            run.exit.reason, run.exit.code, run.exit.signal
        ));
    }
    Ok(if remote {
        "signals 15 and 9 and exit 143 reported (a remote plugin may give 128+n)".to_owned()
    } else {
        "signals 15 and 9 reported as signals, exit 143 as a code".to_owned()
    })
}

/// What a start that should not run arrived as: `Ok` when it was refused or failed.
fn refused_or_failed(outcome: &Outcome, what: &str) -> Result<String, String> {
    match outcome {
        Outcome::Refused(error) if error.code == ErrorCode::Unsupported => Err(format!(
            "{what}: answered unsupported, which is for unknown request types"
        )),
        Outcome::Refused(error) => Ok(format!("refused ({:?}: {})", error.code, error.message)),
        Outcome::Ran(run)
            if run.exit.reason == ExitReason::Completed && run.exit.code == Some(0) =>
        {
            Err(format!(
                "{what}: it ran and exited 0, printing {:?}",
                run.stdout_text()
            ))
        }
        Outcome::Ran(run) => match (run.exit.reason, run.exit.code) {
            (ExitReason::Error, _) => Ok(format!(
                "exit with reason error: {}",
                run.exit.message.as_deref().unwrap_or("")
            )),
            (ExitReason::Completed, Some(code)) if code != 0 => Ok(format!("exit code {code}")),
            (reason, code) => Err(format!(
                "{what}: reported as {reason:?} code {code:?} signal {:?}",
                run.exit.signal
            )),
        },
    }
}

async fn missing_workdir(session: &mut Session) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|error| format!("cannot make a temp dir: {error}"))?;
    let missing = dir.path().join("no-such-directory");
    let task = session.task_id();
    let (_, mut message) = session.start_message(&task, Command::Shell("pwd".to_owned()));
    if let HostMessage::Start(start) = &mut message {
        start.workdir = Some(missing.to_string_lossy().into_owned());
    }
    let outcome = session
        .start_outcome(&task, message, Duration::from_secs(10))
        .await?;
    refused_or_failed(&outcome, "a task whose workdir does not exist")
}

async fn cannot_run(session: &mut Session) -> Result<String, String> {
    let task = session.task_id();
    let (_, message) = session.start_message(
        &task,
        Command::Argv(vec!["/nonexistent/mc-check-no-such-program".to_owned()]),
    );
    let outcome = session
        .start_outcome(&task, message, Duration::from_secs(10))
        .await?;
    refused_or_failed(&outcome, "a command that does not exist")
}

/// Command lines of every process on this machine holding `needle`, as `pid: cmdline`.
fn cmdlines_holding(needle: &[u8]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && cmdline.windows(needle.len()).any(|w| w == needle)
        {
            found.push(format!(
                "pid {pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

async fn secrets(session: &mut Session) -> Result<String, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let secret = format!("mc-check-secret-{}-{nanos}", std::process::id());
    let task = session.task_id();
    let (id, mut message) = session.start_message(
        &task,
        Command::Shell("[ -n \"$MC_CHECK_SECRET\" ] && echo ready; exec sleep 60".to_owned()),
    );
    if let HostMessage::Start(start) = &mut message {
        start.env = BTreeMap::from([("MC_CHECK_SECRET".to_owned(), secret.clone())]);
    }
    session.start(&task, message, id).await?;
    let wanted = task.clone();
    let ready = session
        .wait_for(
            0,
            Instant::now() + Duration::from_secs(10),
            "\"ready\" line",
            |m| {
                matches!(m, PluginMessage::Log(log)
                    if log.task == wanted && log.text.as_deref() == Some("ready"))
                    || matches!(m, PluginMessage::Exit(exit) if exit.task == wanted)
            },
        )
        .await;
    let in_cmdlines = cmdlines_holding(secret.as_bytes());
    let exited = session
        .transcript
        .iter()
        .any(|m| matches!(m, PluginMessage::Exit(exit) if exit.task == task));
    if !exited {
        session.stop(&task, Duration::from_secs(1)).await?;
    }
    ready?;
    session
        .exit_of(&task, Instant::now() + Duration::from_secs(10))
        .await?;
    let run = session.task_run(&task);
    if !run.stdout_text().contains("ready") {
        return Err("the variable MC_CHECK_SECRET did not reach the task's environment".to_owned());
    }
    if !in_cmdlines.is_empty() {
        return Err(format!(
            "an env value is in a command line: {}",
            in_cmdlines.join("; ")
        ));
    }
    let in_stderr = session
        .stderr_all
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .any(|line| line.contains(&secret));
    if in_stderr {
        return Err("an env value appeared on the plugin's stderr".to_owned());
    }
    Ok("the value reached the task's environment only".to_owned())
}

async fn long_lines(session: &mut Session) -> Result<String, String> {
    const LONG: usize = 300_000;
    let run = session
        .shell(
            &format!("head -c {LONG} /dev/zero | tr '\\000' x; echo; echo after"),
            Duration::from_secs(30),
        )
        .await?;
    expect_completed(&run, 0)?;
    let pieces: Vec<&Log> = run
        .logs
        .iter()
        .filter(|log| log.stream == Stream::Stdout)
        .collect();
    if let Some(big) = pieces
        .iter()
        .find(|log| log.bytes().map(|b| b.len()).unwrap_or(0) > LOG_CHUNK_BYTES)
    {
        return Err(format!(
            "a log event (seq {}) carries {} bytes, more than the {LOG_CHUNK_BYTES} of a piece",
            big.seq,
            big.bytes().map(|b| b.len()).unwrap_or(0)
        ));
    }
    let mut expected = vec![b'x'; LONG];
    expected.extend_from_slice(b"\nafter\n");
    let out = run.output(Stream::Stdout);
    if out != expected {
        let newlines = out.iter().filter(|b| **b == b'\n').count();
        return Err(format!(
            "a {LONG}-byte line and a short one arrived as {} bytes with {newlines} line ends in {} events (pieces of a line must be marked partial)",
            out.len(),
            pieces.len()
        ));
    }
    Ok(format!("{LONG} bytes in {} pieces", pieces.len() - 1))
}

async fn nothing_left(session: &mut Session) -> Result<String, String> {
    let remote = session.announces(REMOTE);
    let task = session.task_id();
    let (id, message) = session.start_message(
        &task,
        Command::Shell("sleep 30 >/dev/null 2>&1 </dev/null & echo $!".to_owned()),
    );
    let group = session.start(&task, message, id).await?;
    let run = session
        .exit_of(&task, Instant::now() + Duration::from_secs(10))
        .await?;
    expect_completed(&run, 0)?;
    if let Some(group) = group
        && !group_gone(&group, Duration::from_secs(1)).await
    {
        let members = group.members();
        group.kill();
        return Err(format!(
            "1 s after the exit event, the task's process group {} still holds {}",
            group.pgid(),
            members.join(", ")
        ));
    }
    if !remote {
        let printed = run.stdout_text();
        if let Ok(pid) = printed.trim().parse::<i32>()
            && pid > 1
        {
            let deadline = Instant::now() + Duration::from_secs(1);
            while sleeping(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if sleeping(pid) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                return Err(format!(
                    "1 s after the exit event, the task's background process {pid} (sleep) still runs"
                ));
            }
        }
    }
    Ok(match group {
        Some(_) => "the task's group was empty after its exit event".to_owned(),
        None if remote => "no local process group reported (a remote plugin)".to_owned(),
        None => "the task's background process was gone after its exit event".to_owned(),
    })
}

/// A daemonised grandchild (out of the task's group with `setsid`) keeps the task's stdout open
/// for seconds after the main process exited: the plugin must not wait for it (§4.3, "output
/// pipes held open"), so the exit event must arrive well before the daemon ends. The daemon
/// is killed afterwards whatever happened. Not checked for a remote plugin, whose client
/// rightly waits for the remote side to close the session.
async fn output_held_open(session: &mut Session) -> Result<String, String> {
    if session.announces(REMOTE) {
        return Ok(
            "not checked for a remote plugin (its client waits for the remote side)".to_owned(),
        );
    }
    let task = session.task_id();
    // The daemon says its own pid (`setsid` may fork, so `$!` need not be it), then becomes the
    // `sleep` that holds the pipe; the main process gives it a moment to say it, and exits.
    let (id, message) = session.start_message(
        &task,
        Command::Shell("setsid sh -c 'echo $$; exec sleep 8' & sleep 0.3".to_owned()),
    );
    session.start(&task, message, id).await?;
    let started = Instant::now();
    let arrived = session
        .exit_of(&task, started + Duration::from_secs(5))
        .await;
    let daemon = session
        .task_run(&task)
        .stdout_text()
        .lines()
        .next()
        .and_then(|line| line.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 1);
    let alive = daemon.is_some_and(sleeping);
    if let Some(pid) = daemon
        && alive
        && let Some(pid) = rustix::process::Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let run = arrived.map_err(|error| {
        format!("{error}: the plugin waited for a daemon that kept the task's stdout open (it sleeps 8 s)")
    })?;
    expect_completed(&run, 0)?;
    if !alive {
        return Err(format!(
            "the task's daemon (a sleep 8 under setsid, pid {daemon:?}) was not running when the exit event arrived; stderr: {}",
            String::from_utf8_lossy(&run.output(Stream::Stderr)).trim()
        ));
    }
    Ok(format!(
        "the exit event arrived {} ms after the start while a daemon held the task's stdout",
        started.elapsed().as_millis()
    ))
}

/// Whether `pid` is a live (not zombie) `sleep`.
fn sleeping(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let comm = stat.get(stat.find('(').map_or(0, |open| open + 1)..close);
    let state = stat.get(close + 2..close + 3);
    comm == Some("sleep") && !matches!(state, Some("Z" | "X"))
}

/// A plugin announcing `contained` is taken at its word by policy, which then lets commands it
/// cannot analyse run in its steps. Check the word: a task must not be able to create a file in
/// a directory of this machine outside what it was given.
async fn containment(session: &mut Session) -> Result<String, String> {
    let claims = matches!(
        session.transcript.first(),
        Some(PluginMessage::Hello(hello)) if hello.capabilities.iter().any(|c| c == maestro_plugin_protocol::capability::CONTAINED)
    );
    if !claims {
        return Ok("not claimed: policy treats this plugin's steps as not contained".to_owned());
    }
    let canary = tempfile::tempdir().map_err(|error| format!("cannot make a temp dir: {error}"))?;
    let target = canary.path().join("written-by-a-task");
    let run = session
        .shell(
            &format!("touch '{}' 2>/dev/null; true", target.display()),
            Duration::from_secs(10),
        )
        .await?;
    expect_completed(&run, 0)?;
    if target.exists() {
        Err(format!(
            "the plugin announces `contained`, yet a task created {} on this machine (see \"capabilities\" in docs/plugin-protocol.md): drop the capability or contain the tasks",
            target.display()
        ))
    } else {
        Ok("claimed, and a task could not write outside what it was given".to_owned())
    }
}

async fn env_and_workdir(session: &mut Session) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|error| format!("cannot make a temp dir: {error}"))?;
    let dir_path = dir
        .path()
        .canonicalize()
        .map_err(|error| format!("cannot resolve the temp dir: {error}"))?;
    let value = "spaces, 'quotes', \"double\" and $NOT_EXPANDED";
    let env = BTreeMap::from([
        ("MC_CHECK_VALUE".to_owned(), value.to_owned()),
        ("TRACE_ID".to_owned(), "mc-plugins-check".to_owned()),
    ]);
    let run = session
        .run(
            Command::Shell(
                "printf '%s|%s|%s\\n' \"$MC_CHECK_VALUE\" \"$TRACE_ID\" \"$(pwd -P)\"".to_owned(),
            ),
            env,
            Some(dir_path.to_string_lossy().into_owned()),
            Duration::from_secs(10),
        )
        .await?;
    expect_completed(&run, 0)?;
    let expected = format!("{value}|mc-plugins-check|{}\n", dir_path.display());
    let out = run.stdout_text();
    if out != expected {
        return Err(format!("expected {expected:?}, got {out:?}"));
    }
    if session.announces(REMOTE) {
        return Ok(
            "variables arrived verbatim; the task ran in its workdir (workspace not checked: a remote plugin)"
                .to_owned(),
        );
    }
    let run = session
        .shell(
            &format!("printf '%s\\n' \"${INHERITED_NAME}\""),
            Duration::from_secs(10),
        )
        .await?;
    expect_completed(&run, 0)?;
    if run.stdout_text() != format!("{INHERITED_VALUE}\n") {
        return Err(format!(
            "a task did not start from the plugin's own environment: {INHERITED_NAME}, set for the plugin, was {:?} in the task",
            run.stdout_text().trim_end()
        ));
    }
    let sub = dir_path.join("sub");
    std::fs::create_dir(&sub).map_err(|error| format!("cannot make a directory: {error}"))?;
    for (workdir, expected) in [(Some("sub"), &sub), (None, &dir_path)] {
        let task = session.task_id();
        let (id, mut message) = session.start_message(&task, Command::Shell("pwd -P".to_owned()));
        if let HostMessage::Start(start) = &mut message {
            start.workspace = Some(dir_path.to_string_lossy().into_owned());
            start.workdir = workdir.map(str::to_owned);
        }
        session.start(&task, message, id).await?;
        let run = session
            .exit_of(&task, Instant::now() + Duration::from_secs(10))
            .await?;
        expect_completed(&run, 0)?;
        let out = run.stdout_text();
        if out.trim_end() != expected.to_string_lossy() {
            return Err(format!(
                "with workspace {} and workdir {workdir:?} the task ran in {:?}, expected {}",
                dir_path.display(),
                out.trim_end(),
                expected.display()
            ));
        }
    }
    Ok(
        "variables arrived verbatim; the task ran in its workdir, workspace/workdir and workspace"
            .to_owned(),
    )
}

async fn non_utf8(session: &mut Session) -> Result<String, String> {
    let run = session
        .shell("printf 'caf\\351\\n'", Duration::from_secs(10))
        .await?;
    expect_completed(&run, 0)?;
    let out = run.output(Stream::Stdout);
    if out == b"caf\xe9\n" {
        Ok("bytes arrived intact".to_owned())
    } else {
        Err(format!("stdout bytes were {out:?}"))
    }
}

async fn ten_megabytes(session: &mut Session) -> Result<String, String> {
    let started = Instant::now();
    let line = "0123456789".repeat(10);
    let run = session
        .shell(
            &format!("yes {line} | head -c {TEN_MB}"),
            Duration::from_secs(120),
        )
        .await?;
    expect_completed(&run, 0)?;
    let out = run.output(Stream::Stdout);
    let complete = out.len() == TEN_MB && out.starts_with(line.as_bytes());
    if !complete {
        return Err(format!("got {} bytes of {TEN_MB}", out.len()));
    }
    Ok(format!(
        "{TEN_MB} bytes in {} log events, {} ms",
        run.logs.len(),
        started.elapsed().as_millis()
    ))
}

async fn inherited_stdout(session: &mut Session) -> Result<String, String> {
    let bad_before = session.bad_lines.len();
    let run = session
        .shell(
            "echo from-task; sh -c 'echo from-child'; sh -c 'echo from-child-stderr >&2'; (echo from-subshell)",
            Duration::from_secs(10),
        )
        .await?;
    expect_completed(&run, 0)?;
    let out = run.stdout_text();
    let err = String::from_utf8_lossy(&run.output(Stream::Stderr)).into_owned();
    if session.bad_lines.len() > bad_before {
        return Err(format!(
            "non-protocol lines on the plugin's stdout: {}",
            session.bad_lines[bad_before..].join("; ")
        ));
    }
    if out == "from-task\nfrom-child\nfrom-subshell\n" && err == "from-child-stderr\n" {
        Ok("children's output arrived as log events".to_owned())
    } else {
        Err(format!("stdout {out:?}, stderr {err:?}"))
    }
}

async fn stop(session: &mut Session) -> Result<String, String> {
    session
        .stop("mc-check-no-such-task", Duration::from_secs(1))
        .await
        .map_err(|error| format!("stop of an unknown task: {error}"))?;
    let (task, _) = session.start_ready("echo ready; exec sleep 60").await?;
    let id = session.id();
    match session.request(&HostMessage::Ping(Ping { id })).await {
        Ok(PluginMessage::Pong(_)) => {}
        Ok(other) => {
            return Err(format!(
                "a ping while a task runs was answered with {}",
                short(&other)
            ));
        }
        Err(error) => return Err(format!("a ping while a task runs: {error}")),
    }
    let asked = Instant::now();
    session.stop(&task, Duration::from_secs(2)).await?;
    let run = session
        .exit_of(&task, asked + Duration::from_secs(5))
        .await?;
    if run.exit.reason != ExitReason::Stopped {
        return Err(format!(
            "exit reason {:?}, expected stopped",
            run.exit.reason
        ));
    }
    Ok(format!(
        "stopped in {} ms (signal {:?})",
        asked.elapsed().as_millis(),
        run.exit.signal
    ))
}

async fn stop_signal_and_reason(session: &mut Session) -> Result<String, String> {
    let (task, _) = session.start_ready("echo ready; exec sleep 60").await?;
    let asked = Instant::now();
    let grace = Duration::from_secs(2);
    session.stop_with(&task, "SIGINT", grace).await?;
    let run = session
        .exit_of(&task, asked + grace + Duration::from_secs(3))
        .await?;
    if run.exit.reason != ExitReason::Stopped {
        return Err(format!(
            "stopped with SIGINT: exit reason {:?}, expected stopped",
            run.exit.reason
        ));
    }
    let interrupted = run.exit.signal;
    let (task, _) = session
        .start_ready("trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done")
        .await?;
    let asked = Instant::now();
    session.stop(&task, Duration::from_secs(5)).await?;
    let run = session
        .exit_of(&task, asked + Duration::from_secs(8))
        .await?;
    if run.exit.reason != ExitReason::Stopped {
        return Err(format!(
            "a task that exits 0 on SIGTERM was reported with reason {:?} (code {:?}), expected stopped",
            run.exit.reason, run.exit.code
        ));
    }
    if !session.announces(REMOTE) && (run.exit.code != Some(0) || run.exit.signal.is_some()) {
        return Err(format!(
            "a task that exits 0 on SIGTERM, stopped with SIGTERM and 5 s of grace, ended with code {:?} signal {:?}: it did not get SIGTERM, or not its grace period",
            run.exit.code, run.exit.signal
        ));
    }
    Ok(format!(
        "SIGINT ended a task (signal {interrupted:?}); a task exiting 0 on SIGTERM reported stopped"
    ))
}

async fn destroy(session: &mut Session) -> Result<String, String> {
    let finished = session
        .run(
            Command::Argv(vec!["true".to_owned()]),
            BTreeMap::new(),
            None,
            Duration::from_secs(10),
        )
        .await?;
    expect_completed(&finished, 0)?;
    for (task, what) in [
        (finished.exit.task.clone(), "a finished task"),
        ("mc-check-no-such-task".to_owned(), "an unknown task"),
    ] {
        let id = session.id();
        match session
            .request(&HostMessage::Destroy(Destroy { id, task }))
            .await
        {
            Ok(PluginMessage::Ok(_)) => {}
            Ok(other) => {
                return Err(format!(
                    "destroy of {what} was answered with {}",
                    short(&other)
                ));
            }
            Err(error) => return Err(format!("destroy of {what}: {error}")),
        }
    }
    let (task, pgid) = session.start_ready("echo ready; exec sleep 60").await?;
    let asked = Instant::now();
    let id = session.id();
    match session
        .request(&HostMessage::Destroy(Destroy {
            id,
            task: task.clone(),
        }))
        .await
    {
        Ok(PluginMessage::Ok(_)) => {}
        Ok(other) => {
            return Err(format!(
                "destroy of a running task was answered with {}",
                short(&other)
            ));
        }
        Err(error) => return Err(format!("destroy of a running task: {error}")),
    }
    let run = session
        .exit_of(&task, asked + Duration::from_secs(5))
        .await
        .map_err(|error| format!("after destroy of a running task: {error} (within 5 s)"))?;
    if run.exit.reason != ExitReason::Stopped {
        return Err(format!(
            "a destroyed running task exited with reason {:?}, expected stopped",
            run.exit.reason
        ));
    }
    if let Some(group) = pgid
        && !group_gone(&group, Duration::from_secs(2)).await
    {
        return Err(format!(
            "process group {} still has processes 2 s after destroy",
            group.pgid()
        ));
    }
    Ok(format!(
        "answered ok; the running task was killed, exit after {} ms",
        asked.elapsed().as_millis()
    ))
}

async fn stop_escalation(session: &mut Session) -> Result<String, String> {
    let (task, pgid) = session
        .start_ready("trap '' TERM; echo ready; while :; do sleep 0.05; done")
        .await?;
    let asked = Instant::now();
    let grace = Duration::from_millis(1500);
    let from = session.transcript.len();
    session.stop(&task, grace).await?;
    let run = session
        .exit_of(&task, asked + grace + Duration::from_secs(3))
        .await?;
    let took = asked.elapsed();
    let exit_at = session.transcript[from..]
        .iter()
        .position(|m| matches!(m, PluginMessage::Exit(exit) if exit.task == task));
    let ok_at = session.transcript[from..]
        .iter()
        .position(|m| matches!(m, PluginMessage::Ok(_)));
    if let (Some(exit_at), Some(ok_at)) = (exit_at, ok_at)
        && exit_at < ok_at
    {
        return Err(format!(
            "stop was answered only after the task's exit event, {} ms after it was sent: ok is due at once, before the grace period",
            took.as_millis()
        ));
    }
    if run.exit.reason != ExitReason::Stopped {
        return Err(format!(
            "exit reason {:?}, expected stopped",
            run.exit.reason
        ));
    }
    if let Some(group) = pgid
        && !group_gone(&group, Duration::from_secs(2)).await
    {
        return Err(format!(
            "process group {} still has processes 2 s after the exit event",
            group.pgid()
        ));
    }
    Ok(format!(
        "killed after the {} ms grace period, exit after {} ms (signal {:?})",
        grace.as_millis(),
        took.as_millis(),
        run.exit.signal
    ))
}

/// Three tasks that never end by themselves all run at once: each says `ready` before any is
/// stopped. No clock is involved, so a slow machine cannot fail a plugin that runs tasks at once.
async fn concurrent(session: &mut Session) -> Result<String, String> {
    let mut tasks = Vec::new();
    for n in 0..3 {
        match session.start_ready("echo ready; exec sleep 60").await {
            Ok((task, _)) => tasks.push(task),
            Err(error) => {
                for task in &tasks {
                    let _ = session.stop(task, Duration::from_millis(100)).await;
                }
                return Err(format!(
                    "with {n} tasks running, another did not run: {error}"
                ));
            }
        }
    }
    for task in &tasks {
        session.stop(task, Duration::from_secs(1)).await?;
    }
    for task in &tasks {
        session
            .exit_of(task, Instant::now() + Duration::from_secs(10))
            .await?;
    }
    Ok("three tasks ran at once".to_owned())
}

/// How long, after a `destroy`, the kit waits for the exit events still owed (§4.5: a destroyed
/// task's exit follows at once) before it holds their absence against the ordering rules.
const OWED_EXITS_WITHIN: Duration = Duration::from_secs(10);

/// The tasks the plugin said `started` for and sent no `exit` for yet, in the order started.
fn tasks_without_exit(transcript: &[PluginMessage]) -> Vec<String> {
    let mut open: Vec<&str> = Vec::new();
    let mut exited: Vec<&str> = Vec::new();
    for message in transcript {
        match message {
            PluginMessage::Started(started)
                if !open.contains(&started.task.as_str())
                    && !exited.contains(&started.task.as_str()) =>
            {
                open.push(&started.task);
            }
            PluginMessage::Exit(exit) => {
                open.retain(|task| *task != exit.task);
                exited.push(&exit.task);
            }
            _ => {}
        }
    }
    open.into_iter().map(str::to_owned).collect()
}

/// Rule 3 of §4.3 asks for exactly one `exit` per started task. A task some earlier check left
/// running (because that check failed) still owes one: it is destroyed first, and its exit
/// given [`OWED_EXITS_WITHIN`], so that only a plugin that never sends it fails here.
async fn ordering(session: &mut Session) -> Result<String, String> {
    let owed = tasks_without_exit(&session.transcript);
    if !owed.is_empty() {
        for task in &owed {
            let id = session.id();
            let destroy = HostMessage::Destroy(Destroy {
                id,
                task: task.clone(),
            });
            if session.send(&destroy).await.is_err() {
                break;
            }
        }
        let deadline = Instant::now() + OWED_EXITS_WITHIN;
        while !tasks_without_exit(&session.transcript).is_empty() {
            let from = session.transcript.len();
            if session
                .wait_for(from, deadline, "exit event", |m| {
                    matches!(m, PluginMessage::Exit(_))
                })
                .await
                .is_err()
            {
                break;
            }
        }
    }
    judge_ordering(&session.transcript)
}

fn judge_ordering(transcript: &[PluginMessage]) -> Result<String, String> {
    #[derive(Default)]
    struct Seen {
        started: bool,
        exits: usize,
        next_seq: u64,
    }
    let mut tasks: HashMap<&str, Seen> = HashMap::new();
    let mut problems = Vec::new();
    for message in transcript {
        match message {
            PluginMessage::Started(started) => {
                let seen = tasks.entry(&started.task).or_default();
                if seen.started {
                    problems.push(format!("task {} started twice", started.task));
                }
                if seen.next_seq > 0 || seen.exits > 0 {
                    problems.push(format!(
                        "task {}: events before its started reply",
                        started.task
                    ));
                }
                seen.started = true;
            }
            PluginMessage::Log(log) => {
                let seen = tasks.entry(&log.task).or_default();
                if !seen.started {
                    problems.push(format!("task {}: log before its started reply", log.task));
                }
                if seen.exits > 0 {
                    problems.push(format!("task {}: log after its exit event", log.task));
                }
                if log.seq != seen.next_seq {
                    problems.push(format!(
                        "task {}: log seq {} where {} was due",
                        log.task, log.seq, seen.next_seq
                    ));
                }
                seen.next_seq = log.seq + 1;
            }
            PluginMessage::Exit(exit) => {
                let seen = tasks.entry(&exit.task).or_default();
                if !seen.started {
                    problems.push(format!("task {}: exit before its started reply", exit.task));
                }
                seen.exits += 1;
            }
            _ => {}
        }
    }
    for (task, seen) in &tasks {
        if seen.exits > 1 {
            problems.push(format!("task {task}: {} exit events", seen.exits));
        }
    }
    // Listed first, in the order the tasks started: the problem that hides best.
    let missing = tasks_without_exit(transcript);
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(3).map(String::as_str).collect();
        problems.insert(
            0,
            format!(
                "{} of {} started tasks never sent their exit event, not even within {} s of a destroy ({}{}): exactly one exit per started task is owed",
                missing.len(),
                tasks.len(),
                OWED_EXITS_WITHIN.as_secs(),
                shown.join(", "),
                if missing.len() > shown.len() { ", …" } else { "" }
            ),
        );
    }
    if problems.is_empty() {
        Ok(format!(
            "{} tasks: started first, logs numbered from 0, one exit event last",
            tasks.len()
        ))
    } else {
        problems.truncate(5);
        Err(problems.join("; "))
    }
}

fn clean_stream(session: &Session) -> Result<String, String> {
    if !session.bad_pgids.is_empty() {
        let mut shown = session.bad_pgids.clone();
        shown.truncate(3);
        return Err(format!(
            "{} started replies name a process group the plugin did not create (a pgid must be that of a task's own group, led by a process the plugin started): {}",
            session.bad_pgids.len(),
            shown.join("; ")
        ));
    }
    if session.bad_lines.is_empty() {
        Ok(format!(
            "{} lines, every one a protocol message",
            session.transcript.len()
        ))
    } else {
        let mut shown = session.bad_lines.clone();
        shown.truncate(3);
        Err(format!(
            "{} unreadable lines: {}",
            session.bad_lines.len(),
            shown.join("; ")
        ))
    }
}

async fn end_of_input(session: &mut Session) -> Result<String, String> {
    let (_, pgid) = session.start_ready("echo ready; exec sleep 60").await?;
    let (_, stubborn) = session
        .start_ready("trap '' TERM; echo ready; while :; do sleep 0.05; done")
        .await?;
    session.stdin.take();
    let closed = Instant::now();
    let exited = tokio::time::timeout(Duration::from_secs(5), session.child.wait()).await;
    let result = match exited {
        Err(_) => Err("the plugin did not exit within 5 s of the end of its input".to_owned()),
        Ok(Err(error)) => Err(format!("cannot wait for the plugin: {error}")),
        Ok(Ok(_)) => {
            let mut left = false;
            for group in [pgid, stubborn].into_iter().flatten() {
                left |= !group_gone(&group, Duration::from_secs(2)).await;
            }
            if left {
                Err("the plugin exited but left its running task behind".to_owned())
            } else {
                Ok(format!(
                    "exited {} ms after its input closed, its task gone",
                    closed.elapsed().as_millis()
                ))
            }
        }
    };
    if result.is_err() {
        if let Some(group) = &session.group {
            group.kill();
        }
        for group in [pgid, stubborn].into_iter().flatten() {
            group.kill();
        }
    }
    result
}

async fn unknown_version(path: &Path) -> Result<String, String> {
    let mut session = Session::spawn(path, None)
        .map_err(|error| format!("cannot start {}: {error}", path.display()))?;
    session
        .wait_for(0, Instant::now() + Duration::from_secs(10), "hello", |_| {
            true
        })
        .await?;
    session
        .send_raw("{\"type\":\"hello\",\"version\":999999}\n")
        .await?;
    let exited = tokio::time::timeout(Duration::from_secs(5), session.child.wait()).await;
    match exited {
        Err(_) => Err("the plugin still runs 5 s after the host chose version 999999".to_owned()),
        Ok(Err(error)) => Err(format!("cannot wait for the plugin: {error}")),
        Ok(Ok(status)) if status.success() => {
            Err("told version 999999, the plugin exited 0".to_owned())
        }
        Ok(Ok(status)) => Ok(format!("exited with {status}")),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(group) = &self.group {
            group.kill();
        }
        // Only the groups `/proc` confirmed the plugin created, never a number taken on trust.
        for group in &self.task_groups {
            group.kill();
        }
    }
}
