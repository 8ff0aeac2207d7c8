//! The messages Maestro and its executor plugins exchange: types only, no I/O.
//!
//! # Brief overview
//!
//! A plugin is an executable named `mc-executor-<name>` that speaks JSON Lines on its stdin and
//! stdout: one JSON object per line, each with a `type` field. `docs/plugin-protocol.md` is the
//! normative description; this crate is its Rust spelling.
//!
//! * [`PluginMessage`] is everything a plugin writes: its [`PluginHello`] first, then replies to
//!   requests ([`Described`], [`Started`], [`Reply`] for `ok` and `pong`, [`ErrorReply`]) and task
//!   events ([`Log`], [`Exit`]).
//! * [`HostMessage`] is everything the host writes: its [`HostHello`] answering the plugin's, then
//!   requests ([`Describe`], [`Validate`], [`Start`], [`Stop`], [`Destroy`], [`Ping`]).
//! * [`HostMessage::from_line`] and [`PluginMessage::from_line`] parse one line and tell an unknown
//!   message type apart from a malformed one, so a peer can answer `unsupported` or ignore it.
//! * [`base64`] carries output that is not UTF-8 in [`Log::data`].
#![deny(missing_docs)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod base64;
pub mod framing;

/// The protocol's name, sent in the plugin's hello.
pub const PROTOCOL: &str = "maestro-executor";

/// The protocol version this crate describes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every version this crate's host and SDK speak, oldest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[PROTOCOL_VERSION];

/// The prefix of a plugin executable's file name: `mc-executor-ssh` provides runtime `ssh`.
pub const EXECUTABLE_PREFIX: &str = "mc-executor-";

/// The longest line either side may write, newline excluded; longer lines are a protocol error.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// The most output bytes one [`Log`] event should carry; longer lines are cut into `partial` pieces.
pub const LOG_CHUNK_BYTES: usize = 64 * 1024;

/// Capability names a plugin may announce. Unknown names are ignored by the host.
pub mod capability {
    /// Runs argv commands (`{"argv": [...]}`).
    pub const ARGV: &str = "argv";
    /// Runs shell lines (`{"shell": "..."}`).
    pub const SHELL: &str = "shell";
    /// Applies the task's `env`.
    pub const ENV: &str = "env";
    /// Honours the task's `workdir`.
    pub const WORKDIR: &str = "workdir";
    /// Honours `stop` with a grace period.
    pub const STOP: &str = "stop";
    /// Runs several tasks at once.
    pub const CONCURRENT: &str = "concurrent";
    /// Answers `validate` requests; the host skips them for plugins that do not announce this.
    pub const VALIDATE: &str = "validate";
    /// Contains every task it runs (a container, a VM, a sandbox of its own): a task reaches no
    /// more of the machine it runs on than it is given. Policy then allows, in its steps, commands
    /// it cannot analyse, as it does for sandboxed local steps and containers.
    pub const CONTAINED: &str = "contained";
    /// Runs its tasks on another machine, through a local client (such as `ssh`): a reported
    /// `pgid` is only the client's, a task's `workspace` is a path of the host's machine, and a
    /// task killed by signal n may arrive as code 128+n, since the client sees only an exit code.
    /// Informative: the conformance kit then does not look for a task's processes on its machine.
    pub const REMOTE: &str = "remote";
}

/// The JSON Schema of every message of the protocol, generated from these types and their docs,
/// pretty-printed with a final newline: what `docs/plugin-protocol.schema.json` holds. Its
/// `$defs` has `HostMessage` (what the host writes) and `PluginMessage` (what a plugin writes);
/// the document itself accepts either.
pub fn json_schema() -> String {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let host = generator.subschema_for::<HostMessage>();
    let plugin = generator.subschema_for::<PluginMessage>();
    let definitions = generator.take_definitions(true);
    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("Maestro executor plugin protocol ({PROTOCOL}), version {PROTOCOL_VERSION}"),
        "description": "One JSON Lines message of docs/plugin-protocol.md: a HostMessage (host to plugin, on the plugin's stdin) or a PluginMessage (plugin to host, on its stdout). Unknown fields must be ignored by both sides, so objects are open.",
        "oneOf": [host, plugin],
        "$defs": definitions,
    });
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The highest version in `offered` that this crate speaks, if any.
pub fn choose_version(offered: &[u32]) -> Option<u32> {
    offered
        .iter()
        .copied()
        .filter(|version| SUPPORTED_VERSIONS.contains(version))
        .max()
}

/// A message the host writes to a plugin's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// The answer to the plugin's hello: the version both sides now speak.
    Hello(HostHello),
    /// Ask for the plugin's description.
    Describe(Describe),
    /// Ask whether a step's `with` settings are acceptable, before the job runs.
    Validate(Validate),
    /// Start a task.
    Start(Start),
    /// Stop a task gracefully.
    Stop(Stop),
    /// Release everything held for a task; kill it if it still runs.
    Destroy(Destroy),
    /// Check that the plugin still answers.
    Ping(Ping),
}

/// The host's answer to [`PluginHello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostHello {
    /// The version chosen from the plugin's `versions`.
    pub version: u32,
}

/// `describe`: answered by [`Described`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Describe {
    /// The request id, echoed in the reply.
    pub id: u64,
}

/// `validate`: answered by `ok` or by an [`ErrorReply`] with code `invalid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Validate {
    /// The request id, echoed in the reply.
    pub id: u64,
    /// The step's name, for messages.
    pub step: String,
    /// The step's `with` object, verbatim; absent when the step has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<Value>,
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Run this argv without a shell: `{"argv": ["echo", "hi"]}`.
    Argv(Vec<String>),
    /// Run this line with `/bin/sh -c`: `{"shell": "echo hi"}`.
    Shell(String),
}

impl Command {
    /// The argv that runs this command: `["/bin/sh", "-c", line]` for a shell line.
    pub fn to_argv(&self) -> Vec<String> {
        match self {
            Self::Argv(argv) => argv.clone(),
            Self::Shell(line) => vec!["/bin/sh".to_owned(), "-c".to_owned(), line.clone()],
        }
    }
}

/// `start`: answered by [`Started`] (then [`Log`] events and one [`Exit`]) or by an [`ErrorReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Start {
    /// The request id, echoed in the reply.
    pub id: u64,
    /// The task id the host chose; every event of the task carries it.
    pub task: String,
    /// The step's name.
    #[serde(default)]
    pub step: String,
    /// The job's id.
    #[serde(default)]
    pub job_id: String,
    /// The job's trace id (also in `env` as `TRACE_ID`).
    #[serde(default)]
    pub trace_id: String,
    /// What to run.
    pub command: Command,
    /// Environment variables to add to the task's base environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The job's workspace on the host machine (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The step's `workdir` as written; a relative one is meant relative to the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The step's timeout. The host enforces it with `stop`; a plugin may enforce it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The step's `with` object, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<Value>,
}

/// `stop`: answered by `ok` at once; the task's [`Exit`] follows within `grace_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stop {
    /// The request id, echoed in the reply.
    pub id: u64,
    /// The task to stop.
    pub task: String,
    /// The graceful signal's name, `SIGTERM` unless said otherwise.
    #[serde(default = "default_stop_signal")]
    pub signal: String,
    /// How long the task may take to exit after the signal before it is killed (`SIGKILL`).
    pub grace_ms: u64,
}

fn default_stop_signal() -> String {
    "SIGTERM".to_owned()
}

/// `destroy`: answered by `ok`; idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Destroy {
    /// The request id, echoed in the reply.
    pub id: u64,
    /// The task to forget.
    pub task: String,
}

/// `ping`: answered by `pong`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ping {
    /// The request id, echoed in the reply.
    pub id: u64,
}

/// A message a plugin writes to its stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PluginMessage {
    /// The plugin's first line.
    Hello(PluginHello),
    /// The answer to [`Describe`].
    Described(Described),
    /// The answer to a [`Start`] that started its task.
    Started(Started),
    /// The answer to [`Validate`], [`Stop`] and [`Destroy`] when all is well.
    Ok(Reply),
    /// The answer to [`Ping`].
    Pong(Reply),
    /// The answer to a request that failed or is not supported.
    Error(ErrorReply),
    /// Output of a task.
    Log(Log),
    /// The end of a task: exactly one per started task, after all its logs.
    Exit(Exit),
}

/// The plugin's first line: who it is and which protocol versions it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PluginHello {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// The protocol versions the plugin speaks.
    pub versions: Vec<u32>,
    /// The plugin's runtime name, such as `ssh`.
    #[serde(default)]
    pub plugin: String,
    /// The plugin's own version.
    #[serde(default)]
    pub version: String,
    /// What the plugin can do; see [`capability`].
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// A setting a plugin reads from a step's `with` object, for documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Setting {
    /// The key in `with`.
    pub name: String,
    /// Whether a step must give it.
    #[serde(default)]
    pub required: bool,
    /// One line saying what it does.
    #[serde(default)]
    pub description: String,
}

/// The answer to [`Describe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Described {
    /// The request id.
    pub id: u64,
    /// The plugin's runtime name.
    pub name: String,
    /// The plugin's own version.
    #[serde(default)]
    pub version: String,
    /// One line saying what the plugin runs steps on.
    #[serde(default)]
    pub description: String,
    /// What the plugin can do; see [`capability`].
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The `with` settings it reads.
    #[serde(default)]
    pub settings: Vec<Setting>,
}

/// The answer to a [`Start`] that started its task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Started {
    /// The request id.
    pub id: u64,
    /// The task id from the request.
    pub task: String,
    /// The local process group that runs the task, if there is one: the host kills it as a last
    /// resort when the plugin itself had to be killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<i32>,
}

/// An `ok` or `pong` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reply {
    /// The request id.
    pub id: u64,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request type is unknown to the plugin.
    Unsupported,
    /// The request's content (a step's `with`, its command) is not acceptable: the spec's fault.
    Invalid,
    /// The request names a task the plugin does not know.
    UnknownTask,
    /// The line could not be parsed.
    Malformed,
    /// The plugin could not do what was asked (its own fault or its backend's).
    Failed,
    /// A code this crate does not know.
    #[serde(other)]
    #[schemars(skip)]
    Other,
}

/// The answer to a request that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorReply {
    /// The request id, when the request had a readable one.
    #[serde(default)]
    pub id: Option<u64>,
    /// Why it failed.
    pub code: ErrorCode,
    /// One line for the user.
    #[serde(default)]
    pub message: String,
}

/// Which output stream a log event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Output of a task: one line (without its newline), or a piece of one when `partial` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Log {
    /// The task id.
    pub task: String,
    /// 0 for the task's first log event, then one more for each (both streams count together).
    pub seq: u64,
    /// Which stream.
    pub stream: Stream,
    /// The bytes, when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The bytes in base64, when they are not UTF-8 (instead of `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The line goes on in the next log event of the same stream: no newline follows these bytes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Log {
    /// A log event carrying `bytes`: as `text` when they are UTF-8, else as base64 `data`.
    pub fn from_bytes(task: &str, seq: u64, stream: Stream, bytes: &[u8], partial: bool) -> Self {
        let (text, data) = match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(base64::encode(bytes))),
        };
        Self {
            task: task.to_owned(),
            seq,
            stream,
            text,
            data,
            partial,
        }
    }

    /// The bytes this event carries (`text`, else decoded `data`, else nothing).
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match (&self.text, &self.data) {
            (Some(text), _) => Ok(text.as_bytes().to_vec()),
            (None, Some(data)) => base64::decode(data),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// It ran to its end (whatever its exit code).
    Completed,
    /// It was stopped by a `stop` request.
    Stopped,
    /// The plugin stopped it because its `timeout_ms` passed.
    TimedOut,
    /// It could not run or was lost; `fault` says whose fault that is.
    Error,
}

/// Whose fault an [`ExitReason::Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The task's: a command that does not exist, a workdir that is missing.
    Task,
    /// The executor's: a host that cannot be reached, a backend that failed.
    Executor,
}

/// The end of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Exit {
    /// The task id.
    pub task: String,
    /// The exit code, when the task's process exited.
    #[serde(default)]
    pub code: Option<i32>,
    /// The signal number that ended it, when it was killed by one.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why it ended.
    pub reason: ExitReason,
    /// Whose fault an `error` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// One line for the user, mostly for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether every process of the task is gone, as the plugin checked it before sending this
    /// event. Optional: a plugin that cannot tell leaves it out, and the step's record then says
    /// its teardown was not verified (unless the host could check the task's process group
    /// itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<TaskTeardown>,
}

/// A plugin's report that a task left nothing running (see [`Exit::teardown`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TaskTeardown {
    /// True when the plugin checked and found no process of the task left.
    pub verified: bool,
    /// What was still there after the plugin's kill, one line each (`pid 123 (sleep)`); empty
    /// when verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remaining: Vec<String>,
}

/// Why a line is not a message this crate can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// A well-formed object whose `type` this crate does not know.
    UnknownType {
        /// The `type` it has.
        message_type: String,
        /// Its `id`, if it has a numeric one.
        id: Option<u64>,
    },
    /// Not JSON, not an object, no `type`, or fields of the wrong shape.
    Malformed {
        /// Its `id`, if it has a numeric one.
        id: Option<u64>,
        /// What is wrong.
        problem: String,
    },
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownType { message_type, .. } => {
                write!(f, "unsupported message type {message_type:?}")
            }
            Self::Malformed { problem, .. } => write!(f, "malformed message: {problem}"),
        }
    }
}

impl std::error::Error for Unreadable {}

const HOST_TYPES: &[&str] = &[
    "hello", "describe", "validate", "start", "stop", "destroy", "ping",
];
const PLUGIN_TYPES: &[&str] = &[
    "hello",
    "described",
    "started",
    "ok",
    "pong",
    "error",
    "log",
    "exit",
];

fn from_line<T: serde::de::DeserializeOwned>(line: &str, known: &[&str]) -> Result<T, Unreadable> {
    let value: Value = serde_json::from_str(line).map_err(|error| Unreadable::Malformed {
        id: None,
        problem: error.to_string(),
    })?;
    let id = value.get("id").and_then(Value::as_u64);
    let Some(message_type) = value.get("type").and_then(Value::as_str) else {
        return Err(Unreadable::Malformed {
            id,
            problem: "no string \"type\" field".to_owned(),
        });
    };
    if !known.contains(&message_type) {
        return Err(Unreadable::UnknownType {
            message_type: message_type.to_owned(),
            id,
        });
    }
    serde_json::from_value(value).map_err(|error| Unreadable::Malformed {
        id,
        problem: error.to_string(),
    })
}

fn to_line<T: Serialize>(message: &T) -> String {
    // These types hold only strings, numbers, string-keyed maps and JSON values, which always
    // serialize.
    let mut line = serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"));
    line.push('\n');
    line
}

impl HostMessage {
    /// Parse one line (with or without its newline).
    pub fn from_line(line: &str) -> Result<Self, Unreadable> {
        from_line(line, HOST_TYPES)
    }

    /// This message as one line, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }

    /// The request id, for every message but the hello.
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Hello(_) => None,
            Self::Describe(Describe { id })
            | Self::Validate(Validate { id, .. })
            | Self::Start(Start { id, .. })
            | Self::Stop(Stop { id, .. })
            | Self::Destroy(Destroy { id, .. })
            | Self::Ping(Ping { id }) => Some(*id),
        }
    }
}

impl PluginMessage {
    /// Parse one line (with or without its newline).
    pub fn from_line(line: &str) -> Result<Self, Unreadable> {
        from_line(line, PLUGIN_TYPES)
    }

    /// This message as one line, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }

    /// The id of the request this message answers, if it is a reply.
    pub fn reply_to(&self) -> Option<u64> {
        match self {
            Self::Hello(_) | Self::Log(_) | Self::Exit(_) => None,
            Self::Described(Described { id, .. })
            | Self::Started(Started { id, .. })
            | Self::Ok(Reply { id })
            | Self::Pong(Reply { id }) => Some(*id),
            Self::Error(ErrorReply { id, .. }) => *id,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `docs/plugin-protocol.schema.json` is generated from these types; it must never drift.
    #[test]
    fn the_committed_schema_is_generated_from_these_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/plugin-protocol.schema.json");
        let generated = json_schema();
        if std::env::var_os("MAESTRO_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/plugin-protocol.schema.json is stale: run `MAESTRO_WRITE_SCHEMA=1 cargo test -p maestro-plugin-protocol the_committed_schema`"
        );
        let schema: Value = serde_json::from_str(&committed).unwrap();
        let text = schema["$defs"].to_string();
        for message in [
            "hello",
            "describe",
            "validate",
            "start",
            "stop",
            "destroy",
            "ping",
            "described",
            "started",
            "ok",
            "pong",
            "error",
            "log",
            "exit",
        ] {
            assert!(
                text.contains(&format!("\"const\":\"{message}\"")),
                "{message} missing"
            );
        }
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let start = HostMessage::Start(Start {
            id: 3,
            task: "t1".to_owned(),
            step: "build".to_owned(),
            job_id: "j".to_owned(),
            trace_id: "abc".to_owned(),
            command: Command::Argv(vec!["echo".to_owned(), "hi".to_owned()]),
            env: BTreeMap::from([("TRACE_ID".to_owned(), "abc".to_owned())]),
            workspace: Some("/w".to_owned()),
            workdir: None,
            timeout_ms: Some(1000),
            with: Some(json!({"host": "h"})),
        });
        let value: Value = serde_json::from_str(&start.to_line()).unwrap();
        assert_eq!(
            value,
            json!({"type": "start", "id": 3, "task": "t1", "step": "build", "job_id": "j",
                   "trace_id": "abc", "command": {"argv": ["echo", "hi"]},
                   "env": {"TRACE_ID": "abc"}, "workspace": "/w", "timeout_ms": 1000,
                   "with": {"host": "h"}})
        );
        assert!(start.to_line().ends_with('\n'));
        assert_eq!(HostMessage::from_line(&start.to_line()).unwrap(), start);

        let exit = PluginMessage::Exit(Exit {
            task: "t1".to_owned(),
            code: Some(0),
            signal: None,
            reason: ExitReason::Completed,
            fault: None,
            message: None,
            teardown: None,
        });
        assert_eq!(
            serde_json::from_str::<Value>(&exit.to_line()).unwrap(),
            json!({"type": "exit", "task": "t1", "code": 0, "signal": null, "reason": "completed"})
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_told_apart() {
        let hello = PluginMessage::from_line(
            r#"{"type":"hello","protocol":"maestro-executor","versions":[1],"extra":true}"#,
        )
        .unwrap();
        assert!(
            matches!(hello, PluginMessage::Hello(PluginHello { ref versions, .. }) if versions == &[1])
        );
        assert_eq!(
            HostMessage::from_line(r#"{"type":"frobnicate","id":7}"#),
            Err(Unreadable::UnknownType {
                message_type: "frobnicate".to_owned(),
                id: Some(7)
            })
        );
        assert!(matches!(
            HostMessage::from_line(r#"{"type":"stop","id":8}"#),
            Err(Unreadable::Malformed { id: Some(8), .. })
        ));
        assert!(matches!(
            HostMessage::from_line("not json"),
            Err(Unreadable::Malformed { id: None, .. })
        ));
        assert!(matches!(
            HostMessage::from_line("[1]"),
            Err(Unreadable::Malformed { .. })
        ));
        let error = PluginMessage::from_line(r#"{"type":"error","id":1,"code":"brand_new"}"#);
        assert!(matches!(
            error,
            Ok(PluginMessage::Error(ErrorReply {
                code: ErrorCode::Other,
                ..
            }))
        ));
    }

    #[test]
    fn stop_defaults_to_sigterm() {
        let stop = HostMessage::from_line(r#"{"type":"stop","id":1,"task":"t","grace_ms":5}"#);
        assert!(
            matches!(stop, Ok(HostMessage::Stop(Stop { ref signal, .. })) if signal == "SIGTERM")
        );
    }

    #[test]
    fn logs_carry_non_utf8_as_base64() {
        let log = Log::from_bytes("t", 0, Stream::Stdout, b"ok\xff", true);
        assert_eq!(log.text, None);
        assert_eq!(log.data.as_deref(), Some("b2v/"));
        assert_eq!(log.bytes().unwrap(), b"ok\xff");
        let line = PluginMessage::Log(log).to_line();
        assert!(line.contains("\"partial\":true"), "{line}");
        let plain = Log::from_bytes("t", 1, Stream::Stderr, "é".as_bytes(), false);
        assert_eq!(plain.text.as_deref(), Some("é"));
        assert!(!PluginMessage::Log(plain).to_line().contains("partial"));
    }

    #[test]
    fn version_choice_takes_the_highest_common_one() {
        assert_eq!(choose_version(&[1, 99]), Some(1));
        assert_eq!(choose_version(&[2, 3]), None);
        assert_eq!(choose_version(&[]), None);
    }
}
