//! The conformance kit behind `mc plugins check`: drive a plugin over the raw protocol and judge
//! every line it writes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use maestro_plugin_protocol::{
    Command, Describe, ErrorCode, Exit, ExitReason, HostHello, HostMessage, Log, MAX_LINE_BYTES,
    PROTOCOL, Ping, PluginMessage, Start, Stop, Stream, choose_version,
};
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::connection::read_bounded_line;
use crate::groups::{Group, Rejected};

/// The outcome of one conformance check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// What was checked, such as `exit codes 0/1/42`.
    pub name: String,
    /// Whether the plugin passed.
    pub passed: bool,
    /// What was seen, one line.
    pub detail: String,
}

const TEN_MB: usize = 10 * 1024 * 1024;

/// The checks, in the order they run and are reported.
const CHECKS: &[&str] = &[
    "handshake",
    "describe",
    "ping",
    "unsupported request",
    "echo",
    "exit codes 0/1/42",
    "env and workdir",
    "non-UTF-8 output",
    "10 MB of output",
    "child writing to inherited stdout",
    "stop",
    "stop escalation (task ignores SIGTERM)",
    "concurrent tasks",
    "containment claim",
    "ordering rules",
    "clean protocol stream",
    "end of input",
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
    next_id: u64,
    next_task: u64,
    with: Option<serde_json::Value>,
    /// The plugin's own process group.
    group: Option<Group>,
    /// Task process groups the plugin reported and `/proc` confirmed it created.
    task_groups: Vec<Group>,
    /// Reported `pgid`s that name something the plugin did not create.
    bad_pgids: Vec<String>,
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
        let mut child = tokio::process::Command::new(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
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
        let tail = Arc::clone(&stderr_tail);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while let Ok(Some(_)) = read_bounded_line(&mut reader, &mut line, 4096).await {
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                if tail.len() == 3 {
                    tail.pop_front();
                }
                tail.push_back(String::from_utf8_lossy(&line).into_owned());
            }
        });
        Ok(Self {
            child,
            stdin: Some(stdin),
            lines,
            transcript: Vec::new(),
            bad_lines: Vec::new(),
            stderr_tail,
            next_id: 1,
            next_task: 1,
            with,
            group,
            task_groups: Vec::new(),
            bad_pgids: Vec::new(),
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

    async fn stop(&mut self, task: &str, grace: Duration) -> Result<(), String> {
        let id = self.id();
        let stop = HostMessage::Stop(Stop {
            id,
            task: task.to_owned(),
            signal: "SIGTERM".to_owned(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        });
        self.send(&stop).await?;
        match self
            .reply(id, Instant::now() + Duration::from_secs(5))
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
    match result {
        Ok(detail) => CheckResult {
            name: name.to_owned(),
            passed: true,
            detail,
        },
        Err(detail) => CheckResult {
            name: name.to_owned(),
            passed: false,
            detail,
        },
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

/// Whether process group `group` is empty within `limit` (zombies may take a moment to be reaped).
async fn group_gone(group: &Group, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while group.alive() {
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
                .map(|name| verdict(name, Err(detail.clone())))
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
                .map(|name| verdict(name, Err("not run: the handshake failed".to_owned()))),
        );
        return results;
    }
    results.push(verdict("describe", describe(&mut session).await));
    results.push(verdict("ping", ping(&mut session).await));
    results.push(verdict(
        "unsupported request",
        unsupported(&mut session).await,
    ));
    results.push(verdict("echo", echo(&mut session).await));
    results.push(verdict("exit codes 0/1/42", exit_codes(&mut session).await));
    results.push(verdict(
        "env and workdir",
        env_and_workdir(&mut session).await,
    ));
    results.push(verdict("non-UTF-8 output", non_utf8(&mut session).await));
    results.push(verdict(
        "10 MB of output",
        ten_megabytes(&mut session).await,
    ));
    results.push(verdict(
        "child writing to inherited stdout",
        inherited_stdout(&mut session).await,
    ));
    results.push(verdict("stop", stop(&mut session).await));
    results.push(verdict(
        "stop escalation (task ignores SIGTERM)",
        stop_escalation(&mut session).await,
    ));
    results.push(verdict("concurrent tasks", concurrent(&mut session).await));
    results.push(verdict(
        "containment claim",
        containment(&mut session).await,
    ));
    results.push(verdict("ordering rules", ordering(&session)));
    results.push(verdict("clean protocol stream", clean_stream(&session)));
    results.push(verdict("end of input", end_of_input(&mut session).await));
    results
}

async fn handshake(session: &mut Session) -> Result<String, String> {
    session
        .wait_for(0, Instant::now() + Duration::from_secs(5), "hello", |_| {
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
        .reply(id, Instant::now() + Duration::from_secs(5))
        .await?
    {
        PluginMessage::Described(described) if !described.name.is_empty() => Ok(format!(
            "{} {}: {}",
            described.name, described.version, described.description
        )),
        other => Err(format!("expected described, got {}", short(&other))),
    }
}

async fn ping(session: &mut Session) -> Result<String, String> {
    let id = session.id();
    let sent = Instant::now();
    session.send(&HostMessage::Ping(Ping { id })).await?;
    match session
        .reply(id, Instant::now() + Duration::from_secs(5))
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
        .reply(id, Instant::now() + Duration::from_secs(5))
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

async fn exit_codes(session: &mut Session) -> Result<String, String> {
    for code in [0, 1, 42] {
        let run = session
            .shell(&format!("exit {code}"), Duration::from_secs(10))
            .await?;
        expect_completed(&run, code)?;
    }
    Ok("0, 1 and 42 reported as given".to_owned())
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
    if out == expected {
        Ok("variables arrived verbatim; the task ran in its workdir".to_owned())
    } else {
        Err(format!("expected {expected:?}, got {out:?}"))
    }
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
    let (task, _) = session.start_ready("echo ready; exec sleep 60").await?;
    let asked = Instant::now();
    session.stop(&task, Duration::from_secs(2)).await?;
    let run = session
        .exit_of(&task, asked + Duration::from_millis(3500))
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

async fn stop_escalation(session: &mut Session) -> Result<String, String> {
    let (task, pgid) = session
        .start_ready("trap '' TERM; echo ready; while :; do sleep 0.05; done")
        .await?;
    let asked = Instant::now();
    let grace = Duration::from_millis(500);
    session.stop(&task, grace).await?;
    let run = session
        .exit_of(&task, asked + grace + Duration::from_secs(3))
        .await?;
    let took = asked.elapsed();
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

async fn concurrent(session: &mut Session) -> Result<String, String> {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..3 {
        let task = session.task_id();
        let (id, message) =
            session.start_message(&task, Command::Shell(format!("sleep 1; echo done-{n}")));
        session.start(&task, message, id).await?;
        tasks.push(task);
    }
    let mut outputs = Vec::new();
    for task in &tasks {
        let run = session
            .exit_of(task, began + Duration::from_secs(15))
            .await?;
        expect_completed(&run, 0)?;
        outputs.push(run.stdout_text());
    }
    let took = began.elapsed();
    let expected: Vec<String> = (0..3).map(|n| format!("done-{n}\n")).collect();
    if outputs != expected {
        return Err(format!("outputs were {outputs:?}"));
    }
    // Run one after the other they would take 3 s; the margin is for slow task start-up (an
    // ssh connection each, a loaded machine).
    if took >= Duration::from_millis(2500) {
        return Err(format!(
            "three 1 s tasks took {} ms: they did not run at once",
            took.as_millis()
        ));
    }
    Ok(format!("three 1 s tasks in {} ms", took.as_millis()))
}

fn ordering(session: &Session) -> Result<String, String> {
    #[derive(Default)]
    struct Seen {
        started: bool,
        exits: usize,
        next_seq: u64,
    }
    let mut tasks: HashMap<&str, Seen> = HashMap::new();
    let mut problems = Vec::new();
    for message in &session.transcript {
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
    session.stdin.take();
    let closed = Instant::now();
    let exited = tokio::time::timeout(Duration::from_secs(5), session.child.wait()).await;
    let result = match exited {
        Err(_) => Err("the plugin did not exit within 5 s of the end of its input".to_owned()),
        Ok(Err(error)) => Err(format!("cannot wait for the plugin: {error}")),
        Ok(Ok(_)) => {
            let left = match pgid {
                Some(group) => !group_gone(&group, Duration::from_secs(2)).await,
                None => false,
            };
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
        if let Some(group) = pgid {
            group.kill();
        }
    }
    result
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
