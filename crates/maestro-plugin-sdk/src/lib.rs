//! Write a Maestro executor plugin: implement [`Plugin`], call [`serve`].
//!
//! # Brief overview
//!
//! A plugin turns each task Maestro sends into a local command (an `ssh` client, a `podman run`,
//! a `kubectl exec`) through its one required method, [`Plugin::command`]. [`serve`] does the rest
//! of the protocol of `docs/plugin-protocol.md`:
//!
//! * the handshake, `describe`, `validate` (through the defaulted [`Plugin::validate`]), `ping`
//!   and `unsupported` answers to requests it does not know;
//! * JSON Lines framing with bounded line lengths, on a private copy of the real stdout: fd 1 is
//!   pointed at stderr, so a stray `println!` (the plugin's or a library's) lands in Maestro's
//!   diagnostics instead of corrupting the protocol, and fd 0 at `/dev/null`;
//! * each task in a process group of its own, its output streamed as numbered log events (lines
//!   cut at [`protocol::LOG_CHUNK_BYTES`], non-UTF-8 sent as base64), exactly one exit event last;
//! * `stop` (signal, then `SIGKILL` after the grace period), a backstop for the task's timeout,
//!   and on end of input (the host went away) the killing of every task still running.
//!
//! ```no_run
//! use maestro_plugin_sdk::{Plugin, PluginInfo, TaskCommand, TaskError, protocol::Start};
//!
//! struct Here;
//!
//! impl Plugin for Here {
//!     fn command(&self, task: &Start) -> Result<TaskCommand, TaskError> {
//!         Ok(TaskCommand::local(task))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     maestro_plugin_sdk::serve(PluginInfo::new("here", env!("CARGO_PKG_VERSION")), Here)
//! }
//! ```
#![deny(missing_docs)]

mod serve;
mod stdio;
mod task;

use std::process::ExitStatus;

pub use maestro_plugin_protocol as protocol;
use protocol::{Setting, Start};
use serde_json::Value;

pub use serve::{run_task, serve};
pub use task::{TaskCommand, local_workdir};

/// Who a plugin is, for its hello and its `describe` answer.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// The runtime name, such as `ssh` (the executable is `mc-executor-<name>`).
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// One line saying what it runs steps on.
    pub description: String,
    /// The `with` settings it reads.
    pub settings: Vec<Setting>,
}

impl PluginInfo {
    /// A plugin called `name` at `version`, with no description or settings yet.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            description: String::new(),
            settings: Vec::new(),
        }
    }

    /// Set the one-line description.
    pub fn description(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }

    /// Document a `with` setting.
    pub fn setting(mut self, name: &str, required: bool, description: &str) -> Self {
        self.settings.push(Setting {
            name: name.to_owned(),
            required,
            description: description.to_owned(),
        });
        self
    }
}

/// Why a plugin will not run a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// The task's settings are wrong (the spec's fault): answered with code `invalid`.
    Invalid(String),
    /// The plugin cannot run it for reasons of its own: answered with code `failed`.
    Failed(String),
}

/// A failure of the executor, rather than of the task, read from a finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorFailure {
    /// One line for the user.
    pub message: String,
}

/// An executor plugin: how to run a task as a local command.
pub trait Plugin: Send + Sync + 'static {
    /// The command that runs `task`. The SDK starts it in a process group of its own with its
    /// stdout and stderr piped into log events; see [`TaskCommand::local`] for the plain case.
    fn command(&self, task: &Start) -> Result<TaskCommand, TaskError>;

    /// Whether every task this plugin runs is contained (in a container, a VM, a sandbox of its
    /// own), announced as the `contained` capability. Say so only when it is true: policy lets
    /// commands it cannot analyse run in contained steps. `false` unless overridden.
    fn contained(&self) -> bool {
        false
    }

    /// Whether a task's processes all run in the local process group the SDK starts its
    /// command in, so that an empty group means nothing of the task is left: then each `exit`
    /// reports the group's teardown. A plugin whose command is only a client of something
    /// elsewhere (a remote host, a cluster) returns `false`, and its exits report no teardown:
    /// the SDK cannot see the remote processes, and must not vouch for them; its hello then
    /// announces the `remote` capability. `true` unless overridden.
    fn tasks_are_local(&self) -> bool {
        true
    }

    /// Check a step's `with` object before the job runs; the message reaches the user as a spec
    /// error. Accepts everything unless overridden.
    fn validate(&self, _step: &str, _with: Option<&Value>) -> Result<(), String> {
        Ok(())
    }

    /// Whether a command that ended with `status` failed as an executor rather than as the task
    /// (`ssh` exits 255 when it cannot connect); `stderr_tail` holds the last bytes it wrote to
    /// stderr. `None`, the default, reports the status as the task's own.
    fn executor_failure(
        &self,
        _task: &Start,
        _status: ExitStatus,
        _stderr_tail: &[u8],
    ) -> Option<ExecutorFailure> {
        None
    }
}
