//! A plugin that prints to stdout everywhere it should not, for the SDK's own tests: the SDK must
//! keep every stray print off the protocol stream.

use maestro_plugin_sdk::protocol::Start;
use maestro_plugin_sdk::{Plugin, PluginInfo, TaskCommand, TaskError};
use serde_json::Value;

struct Noisy;

impl Plugin for Noisy {
    fn command(&self, task: &Start) -> Result<TaskCommand, TaskError> {
        println!("stray print while starting task {}", task.task);
        // A helper child that inherits the plugin's stdout, as careless plugins do.
        let _ = std::process::Command::new("echo")
            .arg("stray child output")
            .status();
        Ok(TaskCommand::local(task))
    }

    fn validate(&self, step: &str, _with: Option<&Value>) -> Result<(), String> {
        println!("stray print while validating {step}");
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    maestro_plugin_sdk::serve(PluginInfo::new("noisy", "0.0.0"), Noisy)
}
