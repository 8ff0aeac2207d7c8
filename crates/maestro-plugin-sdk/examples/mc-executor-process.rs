//! The smallest useful plugin: runs each step as a plain process on this machine.
//!
//! Install it as `mc-executor-process` in a plugin directory and a step with `runtime: process`
//! runs through it. It is the template for new plugins and the subject of `bench/plugin.sh`.

use maestro_plugin_sdk::protocol::Start;
use maestro_plugin_sdk::{Plugin, PluginInfo, TaskCommand, TaskError};

struct Process;

impl Plugin for Process {
    fn command(&self, task: &Start) -> Result<TaskCommand, TaskError> {
        Ok(TaskCommand::local(task))
    }
}

fn main() -> std::process::ExitCode {
    let info = PluginInfo::new("process", env!("CARGO_PKG_VERSION"))
        .description("runs steps as plain processes on this machine");
    maestro_plugin_sdk::serve(info, Process)
}
