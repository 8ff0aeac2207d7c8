//! Test support for Maestro executor plugin crates, as `nu-plugin-test-support` is for nushell's.
//!
//! # Brief overview
//!
//! A plugin crate adds this crate as a dev-dependency; its tests then need no built `mc`:
//!
//! * [`check`] and [`check_with`] run the conformance kit of `mc plugins check` in the test's own
//!   process against the crate's plugin executable (`env!("CARGO_BIN_EXE_mc-executor-<name>")`)
//!   and return a [`Report`]; [`Report::assert_conforms`] fails the test with every failed
//!   check's rule, what arrived and the section of `docs/plugin-protocol.md` stating the rule,
//!   and [`Report::assert_fails`] lets a crate keep broken variants of its own plugin honest.
//! * [`run`] drives one task through the crate's [`Plugin`] implementation, exactly as the SDK's
//!   `serve` would for a `start` request, without a plugin process: build the request with
//!   [`shell`] or [`argv`] and read the [`TaskRun`].
//!
//! ```no_run
//! # async fn example() {
//! let report = maestro_plugin_test_support::check("target/debug/mc-executor-mine").await;
//! report.assert_conforms();
//! # }
//! ```
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;

pub use maestro_plugin_host::CheckResult;
use maestro_plugin_sdk::Plugin;
use maestro_plugin_sdk::protocol::{
    Command, ErrorReply, Exit, Log, PluginMessage, Start, Started, Stream,
};
use serde_json::Value;

/// What the conformance kit said about a plugin: one [`CheckResult`] per check, in order.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every check's result.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|result| result.passed)
    }

    /// The checks that failed.
    pub fn failed(&self) -> Vec<&CheckResult> {
        self.results
            .iter()
            .filter(|result| !result.passed)
            .collect()
    }

    /// The report as `mc plugins check` prints it.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for result in &self.results {
            let verdict = if result.passed { "PASS" } else { "FAIL" };
            text.push_str(&format!("{verdict} {}: {}\n", result.name, result.detail));
            if !result.passed {
                text.push_str(&format!(
                    "  expected: {}\n  arrived:  {}\n  see:      docs/plugin-protocol.md, {}\n",
                    result.expected, result.detail, result.section
                ));
            }
        }
        text
    }

    /// Fail the calling test, with the whole report, unless every check passed.
    #[track_caller]
    pub fn assert_conforms(&self) {
        assert!(
            self.passed(),
            "the plugin fails the conformance kit:\n{}",
            self.text()
        );
    }

    /// Fail the calling test unless the check named `check` failed (for a deliberately broken
    /// plugin: the kit must catch it).
    #[track_caller]
    pub fn assert_fails(&self, check: &str) {
        let Some(result) = self.results.iter().find(|result| result.name == check) else {
            panic!("the kit has no check named {check:?}:\n{}", self.text());
        };
        assert!(
            !result.passed,
            "check {check:?} passed, expected it to fail:\n{}",
            self.text()
        );
    }
}

/// Run the conformance kit against the plugin executable at `plugin`.
pub async fn check(plugin: impl AsRef<Path>) -> Report {
    Report {
        results: maestro_plugin_host::check_plugin(plugin.as_ref()).await,
    }
}

/// [`check`] for a plugin that needs settings: `with` is every task's `with` object (and what
/// `validate` is asked about), as `mc plugins check --with` gives it.
pub async fn check_with(plugin: impl AsRef<Path>, with: Value) -> Report {
    Report {
        results: maestro_plugin_host::check_plugin_with(plugin.as_ref(), Some(with)).await,
    }
}

/// A `start` request for `command`, as the host would send it for a step named `test`: task id
/// `test-1`, no workspace or workdir, an empty `env`, a 60 s timeout. Change its fields as needed.
pub fn start(command: Command) -> Start {
    Start {
        id: 1,
        task: "test-1".to_owned(),
        step: "test".to_owned(),
        job_id: "00000000-0000-0000-0000-000000000000".to_owned(),
        trace_id: "plugin-test".to_owned(),
        command,
        env: BTreeMap::new(),
        workspace: None,
        workdir: None,
        timeout_ms: Some(60_000),
        with: None,
    }
}

/// [`start`] for a shell line.
pub fn shell(line: &str) -> Start {
    start(Command::Shell(line.to_owned()))
}

/// [`start`] for an argv.
pub fn argv(words: &[&str]) -> Start {
    start(Command::Argv(
        words.iter().map(|w| (*w).to_owned()).collect(),
    ))
}

/// How one task went, as the host would have seen it.
#[derive(Debug, Clone)]
pub struct TaskRun {
    /// The reply to the start: `started`, or the `error` that refused it.
    pub reply: Result<Started, ErrorReply>,
    /// The task's log events, in order.
    pub logs: Vec<Log>,
    /// Its exit event (none when it was refused).
    pub exit: Option<Exit>,
}

impl TaskRun {
    /// The bytes of `stream`, each non-partial piece followed by a newline.
    pub fn output(&self, stream: Stream) -> Vec<u8> {
        let mut bytes = Vec::new();
        for log in self.logs.iter().filter(|log| log.stream == stream) {
            bytes.extend_from_slice(&log.bytes().unwrap_or_default());
            if !log.partial {
                bytes.push(b'\n');
            }
        }
        bytes
    }

    /// Standard output as text (lossy).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output(Stream::Stdout)).into_owned()
    }

    /// Standard error as text (lossy).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output(Stream::Stderr)).into_owned()
    }

    /// The exit code, when the task exited with one.
    pub fn code(&self) -> Option<i32> {
        self.exit.as_ref().and_then(|exit| exit.code)
    }
}

/// Run `start` as one task of `plugin`, in this process, to its end (its `timeout_ms` is the
/// SDK's backstop). Needs a Tokio runtime (`#[tokio::test]`).
pub async fn run<P: Plugin>(plugin: P, start: Start) -> TaskRun {
    let messages = maestro_plugin_sdk::run_task(plugin, start).await;
    let mut run = TaskRun {
        reply: Err(ErrorReply {
            id: None,
            code: maestro_plugin_sdk::protocol::ErrorCode::Failed,
            message: "no reply".to_owned(),
        }),
        logs: Vec::new(),
        exit: None,
    };
    for message in messages {
        match message {
            PluginMessage::Started(started) => run.reply = Ok(started),
            PluginMessage::Error(error) => run.reply = Err(error),
            PluginMessage::Log(log) => run.logs.push(log),
            PluginMessage::Exit(exit) => run.exit = Some(exit),
            _ => {}
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use maestro_plugin_sdk::protocol::{ExitReason, Start};
    use maestro_plugin_sdk::{TaskCommand, TaskError};

    use super::*;

    struct Local;

    impl Plugin for Local {
        fn command(&self, task: &Start) -> Result<TaskCommand, TaskError> {
            if task.with.is_some() {
                return Err(TaskError::Invalid("no settings are read".to_owned()));
            }
            Ok(TaskCommand::local(task))
        }
    }

    #[tokio::test]
    async fn a_task_runs_through_the_plugin_to_its_exit() {
        let mut start = shell("echo \"$GREETING\"; echo oops >&2; exit 3");
        start
            .env
            .insert("GREETING".to_owned(), "hi there".to_owned());
        let run = run(Local, start).await;
        assert!(run.reply.is_ok(), "{:?}", run.reply);
        assert_eq!(run.stdout(), "hi there\n");
        assert_eq!(run.stderr(), "oops\n");
        assert_eq!(run.code(), Some(3));
        assert_eq!(run.exit.unwrap().reason, ExitReason::Completed);
    }

    #[tokio::test]
    async fn a_refused_task_has_its_error_and_no_events() {
        let mut start = argv(&["true"]);
        start.with = Some(serde_json::json!({"x": 1}));
        let run = run(Local, start).await;
        let error = run.reply.unwrap_err();
        assert_eq!(error.message, "no settings are read");
        assert!(run.logs.is_empty() && run.exit.is_none());
    }
}
