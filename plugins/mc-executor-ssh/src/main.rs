//! `mc-executor-ssh`: runs Maestro steps on a remote host through the system `ssh` client.

mod remote;
mod settings;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, ExitStatus};

use maestro_plugin_sdk::protocol::Start;
use maestro_plugin_sdk::{ExecutorFailure, Plugin, PluginInfo, TaskCommand, TaskError};
use serde_json::Value;

use settings::SshSettings;

/// The exit code `ssh` uses for its own failures (cannot connect, authentication refused).
const SSH_FAILED: i32 = 255;

struct Ssh;

impl Plugin for Ssh {
    fn validate(&self, _step: &str, with: Option<&Value>) -> Result<(), String> {
        SshSettings::parse(with).map(|_| ())
    }

    /// The local process is only the `ssh` client: its group being empty says nothing about
    /// the remote command.
    fn tasks_are_local(&self) -> bool {
        false
    }

    fn command(&self, task: &Start) -> Result<TaskCommand, TaskError> {
        let settings = SshSettings::parse(task.with.as_ref()).map_err(TaskError::Invalid)?;
        let script =
            remote::script(task, settings.remote_grace_seconds).map_err(TaskError::Invalid)?;
        let mut command = Command::new(&settings.ssh_program);
        // The arguments are fixed: the task (its environment may hold secrets, and arguments are
        // public in `ps` on both machines) follows on ssh's stdin.
        command.args(settings.ssh_args()).arg(remote::BOOTSTRAP);
        // ssh must not see the end of its input before the task ends: the remote wrapper takes
        // the end of the session's input as the signal to kill the remote process group.
        Ok(TaskCommand::new(command)
            .input(remote::input(&script))
            .keep_stdin_open(true))
    }

    fn executor_failure(
        &self,
        task: &Start,
        status: ExitStatus,
        stderr_tail: &[u8],
    ) -> Option<ExecutorFailure> {
        if status.code() != Some(SSH_FAILED) || status.signal().is_some() {
            return None;
        }
        let target = SshSettings::parse(task.with.as_ref())
            .map(|s| s.target())
            .unwrap_or_default();
        let said = String::from_utf8_lossy(stderr_tail);
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Some(ExecutorFailure {
            message: format!("ssh to {target} failed (exit 255): {last}"),
        })
    }
}

fn main() -> ExitCode {
    let mut info = PluginInfo::new("ssh", env!("CARGO_PKG_VERSION"))
        .description("runs steps on a remote host over SSH (the system ssh client)");
    for (name, required, description) in settings::DOCUMENTED {
        info = info.setting(name, *required, description);
    }
    maestro_plugin_sdk::serve(info, Ssh)
}
