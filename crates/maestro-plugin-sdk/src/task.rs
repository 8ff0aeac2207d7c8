//! One task: a local command in its own process group, its output as log events, its exit.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use maestro_plugin_protocol::{
    Exit, ExitReason, Fault, LOG_CHUNK_BYTES, Log, PluginMessage, Start, Stream, TaskTeardown,
};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Plugin;

/// How long a task's output is still read after its main process exited and its group was
/// killed: only a process that left the group (with `setsid`) can hold the pipes that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How long the task's process group may take to empty after its `SIGKILL` before the exit
/// event reports it not verified.
const GROUP_EMPTY_WITHIN: Duration = Duration::from_secs(1);

/// The grace period of the SDK's own timeout backstop.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// How many bytes of a task's stderr are kept for [`Plugin::executor_failure`].
const STDERR_TAIL_BYTES: usize = 4096;

/// The local command that runs a task, as built by [`Plugin::command`].
#[derive(Debug)]
pub struct TaskCommand {
    command: std::process::Command,
    keep_stdin_open: bool,
    input: Option<Vec<u8>>,
}

impl TaskCommand {
    /// Run `command`. Its stdout and stderr are always piped to log events; its stdin is
    /// `/dev/null` unless [`keep_stdin_open`](Self::keep_stdin_open) is set.
    pub fn new(command: std::process::Command) -> Self {
        Self {
            command,
            keep_stdin_open: false,
            input: None,
        }
    }

    /// Run `task` as given, on this machine: its argv (or `/bin/sh -c` line) with its `env` added
    /// to the plugin's environment, in [`local_workdir`].
    pub fn local(task: &Start) -> Self {
        let argv = task.command.to_argv();
        let mut command = std::process::Command::new(argv.first().map_or("", String::as_str));
        command.args(argv.iter().skip(1)).envs(&task.env);
        if let Some(dir) = local_workdir(task) {
            command.current_dir(dir);
        }
        Self::new(command)
    }

    /// Give the command a stdin pipe that stays open until the task ends, instead of
    /// `/dev/null`: for clients such as `ssh` that must not see end of input early.
    pub fn keep_stdin_open(mut self, keep: bool) -> Self {
        self.keep_stdin_open = keep;
        self
    }

    /// Write `bytes` to the command's stdin (a pipe) as soon as it starts: a way to hand it data
    /// that must not appear in its arguments, which every user of the machine can read in `ps`.
    /// The pipe is closed after them unless [`keep_stdin_open`](Self::keep_stdin_open) is set.
    pub fn input(mut self, bytes: Vec<u8>) -> Self {
        self.input = Some(bytes);
        self
    }

    /// The command, to adjust.
    pub fn command_mut(&mut self) -> &mut std::process::Command {
        &mut self.command
    }
}

/// The directory a task runs in on this machine: its `workdir`, relative ones taken from its
/// `workspace`; else the workspace; else none (the plugin's own directory).
pub fn local_workdir(task: &Start) -> Option<PathBuf> {
    match (&task.workdir, &task.workspace) {
        (Some(dir), _) if Path::new(dir).is_absolute() => Some(PathBuf::from(dir)),
        (Some(dir), Some(workspace)) => Some(Path::new(workspace).join(dir)),
        (Some(dir), None) => Some(PathBuf::from(dir)),
        (None, Some(workspace)) => Some(PathBuf::from(workspace)),
        (None, None) => None,
    }
}

/// What the serve loop may ask of a running task.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control {
    /// Send `signal` to the task's process group, then `SIGKILL` after `grace`.
    Stop { signal: Signal, grace: Duration },
    /// Send `SIGKILL` to the task's process group now.
    Kill,
}

/// A started task.
pub(crate) struct Spawned {
    child: tokio::process::Child,
    /// The task's process group (its main process's pid).
    pub(crate) pgid: i32,
    /// What to write to its stdin first.
    input: Option<Vec<u8>>,
    /// Whether its stdin stays open until the task ends (else it is closed after `input`).
    keep_stdin_open: bool,
}

/// Start `command` in a process group of its own.
pub(crate) fn spawn(command: TaskCommand) -> io::Result<Spawned> {
    let mut child = tokio::process::Command::from(command.command);
    child
        .process_group(0)
        .stdin(if command.keep_stdin_open || command.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = child.spawn()?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| io::Error::other("spawned process has no pid"))?;
    Ok(Spawned {
        child,
        pgid,
        input: command.input,
        keep_stdin_open: command.keep_stdin_open,
    })
}

/// Waits until no live process is left in the task's (killed) group, and says whether that
/// happened. A killed process stays in the group as a zombie until its new parent (the
/// machine's init or a subreaper) reaps it, which is harmless and not waited for; one still
/// running after [`GROUP_EMPTY_WITHIN`] is reported.
async fn group_emptied(pgid: i32) -> TaskTeardown {
    let deadline = Instant::now() + GROUP_EMPTY_WITHIN;
    loop {
        let alive = pgid > 1
            && Pid::from_raw(pgid)
                .is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok());
        let remaining = if alive {
            live_members(pgid)
        } else {
            Vec::new()
        };
        if remaining.is_empty() {
            return TaskTeardown {
                verified: true,
                remaining,
            };
        }
        if Instant::now() >= deadline {
            return TaskTeardown {
                verified: false,
                remaining,
            };
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The processes of group `pgid` that are not zombies, as `pid 123 (sleep)`, from `/proc`.
fn live_members(pgid: i32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members = Vec::new();
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`: comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut fields = stat.get(close + 1..).unwrap_or_default().split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|group| group.parse::<i32>().ok());
        if group == Some(pgid) && !matches!(state, Some("Z" | "X")) {
            let command: String = stat[open + 1..close]
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            members.push(format!("pid {} ({command})", stat[..open].trim()));
        }
    }
    members
}

fn signal_group(pgid: i32, signal: Signal) {
    // Never 0, 1 or negative: those mean "my own group" or "every process" to kill(2).
    if pgid > 1
        && let Some(pid) = Pid::from_raw(pgid)
    {
        // ESRCH (already gone) is the common, harmless failure.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Turns output chunks into numbered log events, cutting long lines.
struct LogWriter {
    task: String,
    seq: u64,
    out: mpsc::Sender<String>,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    async fn emit(&mut self, stream: Stream, bytes: &[u8], partial: bool) {
        let log = Log::from_bytes(&self.task, self.seq, stream, bytes, partial);
        self.seq += 1;
        // A closed channel means the host is gone; the task is killed on the way out anyway.
        let _ = self.out.send(PluginMessage::Log(log).to_line()).await;
    }

    /// Emit `line` (a whole line when `terminated`) in pieces of at most [`LOG_CHUNK_BYTES`].
    async fn emit_cut(&mut self, stream: Stream, mut line: &[u8], terminated: bool) {
        while line.len() > LOG_CHUNK_BYTES {
            let cut = utf8_cut(line, LOG_CHUNK_BYTES);
            self.emit(stream, &line[..cut], true).await;
            line = &line[cut..];
        }
        if terminated || !line.is_empty() {
            self.emit(stream, line, !terminated).await;
        }
    }

    async fn push(&mut self, stream: Stream, mut chunk: &[u8]) {
        let index = stream_index(stream);
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            if self.pending[index].is_empty() {
                self.emit_cut(stream, &chunk[..end], true).await;
            } else {
                let mut line = std::mem::take(&mut self.pending[index]);
                line.extend_from_slice(&chunk[..end]);
                self.emit_cut(stream, &line, true).await;
            }
            chunk = &chunk[end + 1..];
        }
        self.pending[index].extend_from_slice(chunk);
        if self.pending[index].len() >= LOG_CHUNK_BYTES {
            let pending = std::mem::take(&mut self.pending[index]);
            let cut = pending.len() - pending.len() % LOG_CHUNK_BYTES;
            let cut = utf8_cut(&pending, cut);
            self.emit_cut(stream, &pending[..cut], false).await;
            self.pending[index] = pending[cut..].to_vec();
        }
    }

    async fn finish(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let pending = std::mem::take(&mut self.pending[stream_index(stream)]);
            if !pending.is_empty() {
                self.emit_cut(stream, &pending, false).await;
            }
        }
    }
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// Where to cut `bytes` at most `max` bytes in without splitting a UTF-8 character.
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    match std::str::from_utf8(&bytes[..max]) {
        Err(error) if error.error_len().is_none() && error.valid_up_to() + 4 > max => {
            error.valid_up_to().max(1)
        }
        _ => max,
    }
}

async fn read_some(
    pipe: &mut Option<impl tokio::io::AsyncRead + Unpin>,
    buffer: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buffer).await,
        None => std::future::pending().await,
    }
}

/// Drive a started task to its end and say how it ended. Every log event is queued on `out`
/// before this returns; the caller sends the exit event.
pub(crate) async fn run<P: Plugin>(
    start: &Start,
    spawned: Spawned,
    out: mpsc::Sender<String>,
    mut control: mpsc::UnboundedReceiver<Control>,
    plugin: Arc<P>,
) -> Exit {
    let Spawned {
        mut child,
        pgid,
        input,
        keep_stdin_open,
    } = spawned;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    // Written by a task of its own, so that a command slow to read its input never holds up its
    // output; the pipe closes when that task ends (without `keep_stdin_open`) or is aborted.
    let stdin = child.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            if let Some(input) = input {
                // A command that exits without reading its input is not an error of the SDK's.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.flush().await;
            }
            if keep_stdin_open {
                std::future::pending::<()>().await;
            }
            drop(stdin);
        })
    });
    let mut logs = LogWriter {
        task: start.task.clone(),
        seq: 0,
        out,
        pending: [Vec::new(), Vec::new()],
    };
    let mut stderr_tail: Vec<u8> = Vec::new();
    let mut out_buffer = vec![0u8; 64 * 1024];
    let mut err_buffer = vec![0u8; 64 * 1024];
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let timeout_at = start
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut stopped: Option<ExitReason> = None;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let mut status: Option<io::Result<ExitStatus>> = None;
    let mut control_open = true;

    while status.is_none() || stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buffer) => match read {
                Ok(0) | Err(_) => stdout = None,
                Ok(n) => logs.push(Stream::Stdout, &out_buffer[..n]).await,
            },
            read = read_some(&mut stderr, &mut err_buffer) => match read {
                Ok(0) | Err(_) => stderr = None,
                Ok(n) => {
                    stderr_tail.extend_from_slice(&err_buffer[..n]);
                    if stderr_tail.len() > STDERR_TAIL_BYTES {
                        stderr_tail.drain(..stderr_tail.len() - STDERR_TAIL_BYTES);
                    }
                    logs.push(Stream::Stderr, &err_buffer[..n]).await;
                }
            },
            result = child.wait(), if status.is_none() => {
                status = Some(result);
                // The task is over: whatever it left running in its group goes with it (as on
                // the local runtime), which also closes the pipes those leftovers held.
                signal_group(pgid, Signal::KILL);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            message = control.recv(), if control_open => match message {
                Some(Control::Stop { signal, grace }) if status.is_none() && stopped.is_none() => {
                    signal_group(pgid, signal);
                    stopped = Some(ExitReason::Stopped);
                    kill_at = Some(Instant::now() + grace);
                }
                Some(Control::Kill) => {
                    signal_group(pgid, Signal::KILL);
                    stopped.get_or_insert(ExitReason::Stopped);
                }
                Some(Control::Stop { .. }) => {}
                None => control_open = false,
            },
            () = tokio::time::sleep_until(timeout_at.unwrap_or(far)),
                if timeout_at.is_some() && stopped.is_none() && status.is_none() => {
                signal_group(pgid, Signal::TERM);
                stopped = Some(ExitReason::TimedOut);
                kill_at = Some(Instant::now() + TIMEOUT_GRACE);
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(far)),
                if kill_at.is_some() && status.is_none() => {
                signal_group(pgid, Signal::KILL);
                kill_at = None;
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() => {
                break;
            }
        }
    }
    // Whatever the task left behind in its group dies with it.
    signal_group(pgid, Signal::KILL);
    let teardown = if plugin.tasks_are_local() {
        Some(group_emptied(pgid).await)
    } else {
        None
    };
    if let Some(stdin) = stdin {
        stdin.abort();
        let _ = stdin.await;
    }
    logs.finish().await;

    let mut exit = Exit {
        task: start.task.clone(),
        code: None,
        signal: None,
        reason: stopped.unwrap_or(ExitReason::Completed),
        fault: None,
        message: None,
        teardown,
    };
    match status {
        Some(Ok(status)) => {
            exit.code = status.code();
            exit.signal = status.signal();
            if exit.reason == ExitReason::Completed
                && let Some(failure) = plugin.executor_failure(start, status, &stderr_tail)
            {
                exit.reason = ExitReason::Error;
                exit.fault = Some(Fault::Executor);
                exit.message = Some(failure.message);
            }
        }
        Some(Err(error)) => {
            exit.reason = ExitReason::Error;
            exit.fault = Some(Fault::Executor);
            exit.message = Some(format!("cannot wait for the task's process: {error}"));
        }
        None => {
            exit.reason = ExitReason::Error;
            exit.fault = Some(Fault::Executor);
            exit.message = Some("the task's process was lost".to_owned());
        }
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_never_split_a_character() {
        let text = "aé".repeat(10);
        let bytes = text.as_bytes();
        assert_eq!(utf8_cut(bytes, 2), 1);
        assert_eq!(utf8_cut(bytes, 3), 3);
        assert_eq!(utf8_cut(b"\xff\xfe\xfd", 2), 2);
    }

    struct Unused;

    impl Plugin for Unused {
        fn command(&self, _task: &Start) -> Result<TaskCommand, crate::TaskError> {
            Err(crate::TaskError::Failed("unused".to_owned()))
        }
    }

    /// Run `command` as a task to its end: its stdout text and its exit.
    async fn drive(command: TaskCommand) -> (String, Exit) {
        let start = Start {
            id: 1,
            task: "t".to_owned(),
            step: "s".to_owned(),
            job_id: String::new(),
            trace_id: String::new(),
            command: maestro_plugin_protocol::Command::Shell(String::new()),
            env: std::collections::BTreeMap::new(),
            workspace: None,
            workdir: None,
            timeout_ms: Some(20_000),
            with: None,
        };
        let (out, mut rx) = mpsc::channel(1000);
        let (_control_tx, control) = mpsc::unbounded_channel();
        let spawned = spawn(command).unwrap();
        let exit = run(&start, spawned, out, control, Arc::new(Unused)).await;
        let mut text = String::new();
        while let Ok(line) = rx.try_recv() {
            if let Ok(PluginMessage::Log(log)) = PluginMessage::from_line(&line) {
                text.push_str(&String::from_utf8_lossy(&log.bytes().unwrap()));
                text.push('\n');
            }
        }
        (text, exit)
    }

    #[tokio::test]
    async fn input_reaches_stdin_and_the_pipe_closes_after_it_unless_kept_open() {
        let mut cat = std::process::Command::new("sh");
        cat.args(["-c", "cat; echo eof"]);
        let (text, exit) = drive(TaskCommand::new(cat).input(b"one\ntwo\n".to_vec())).await;
        assert_eq!(text, "one\ntwo\neof\n");
        assert_eq!(exit.code, Some(0));

        // Kept open: the command reads its line and sees no end of input while it runs.
        let mut reader = std::process::Command::new("sh");
        reader.args([
            "-c",
            "read -r line; echo \"got $line\"; exec 3<&0; \
             (cat <&3 >/dev/null; echo eof-seen) & sleep 0.3; kill $! 2>/dev/null; echo done",
        ]);
        let (text, _) = drive(
            TaskCommand::new(reader)
                .input(b"secret\n".to_vec())
                .keep_stdin_open(true),
        )
        .await;
        assert!(text.starts_with("got secret\n"), "{text}");
        assert!(!text.contains("eof-seen"), "{text}");
        assert!(text.ends_with("done\n"), "{text}");
    }

    #[tokio::test]
    async fn long_lines_become_partial_pieces_with_increasing_seq() {
        let (out, mut rx) = mpsc::channel(1000);
        let mut logs = LogWriter {
            task: "t".to_owned(),
            seq: 0,
            out,
            pending: [Vec::new(), Vec::new()],
        };
        let long = vec![b'x'; LOG_CHUNK_BYTES * 2 + 5];
        logs.push(Stream::Stdout, &long).await;
        logs.push(Stream::Stdout, b"\nshort\ntail").await;
        logs.finish().await;
        drop(logs);
        let mut events = Vec::new();
        while let Some(line) = rx.recv().await {
            match PluginMessage::from_line(&line).unwrap() {
                PluginMessage::Log(log) => events.push(log),
                other => panic!("{other:?}"),
            }
        }
        let shape: Vec<(u64, usize, bool)> = events
            .iter()
            .map(|log| (log.seq, log.bytes().unwrap().len(), log.partial))
            .collect();
        assert_eq!(
            shape,
            [
                (0, LOG_CHUNK_BYTES, true),
                (1, LOG_CHUNK_BYTES, true),
                (2, 5, false),
                (3, 5, false),
                (4, 4, true)
            ]
        );
    }

    #[tokio::test]
    async fn what_the_task_leaves_in_its_group_is_killed_and_the_exit_says_the_group_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let mut leaky = std::process::Command::new("sh");
        leaky.args([
            "-c",
            &format!("sleep 60 & echo $! > {}", pid_file.display()),
        ]);
        let (_, exit) = drive(TaskCommand::new(leaky)).await;
        assert_eq!(exit.code, Some(0));
        assert_eq!(
            exit.teardown,
            Some(TaskTeardown {
                verified: true,
                remaining: Vec::new()
            })
        );
        let child = std::fs::read_to_string(&pid_file).unwrap();
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", child.trim())).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z"),
            "the task's background child still runs: {stat}"
        );
    }
}
