//! Sandboxed steps: the glue between a [`StepRequest`] and `maestro-sandbox`.

use std::path::Path;

use maestro_core::executor::{ExecutorError, StepRequest, Teardown, TeardownMethod};
use maestro_core::spec::Network;
use maestro_sandbox::{Control, HostAccess, NetworkMode, SandboxError, SandboxPlan};

use crate::LocalConfig;

/// Fails closed, with one line, when this machine or this build cannot sandbox a step.
pub(crate) fn check(config: &LocalConfig) -> Result<(), ExecutorError> {
    if config.sandbox_shim.is_none() {
        return Err(ExecutorError::Unavailable {
            message: "this program cannot start the sandbox (no shim configured); set `isolation: none` on the step to run it without the sandbox".to_owned(),
        });
    }
    maestro_sandbox::check_support()
        .map(|_| ())
        .map_err(|error| ExecutorError::Unavailable {
            message: error.to_string(),
        })
}

/// The command that runs `argv` for `step` in a sandbox, and the channel to its shim.
pub(crate) fn command(
    config: &LocalConfig,
    step: &StepRequest,
    argv: &[String],
    workdir: &Path,
) -> Result<(tokio::process::Command, Control), ExecutorError> {
    check(config)?;
    let Some((shim, shim_args)) = &config.sandbox_shim else {
        unreachable!("check() refuses a missing shim");
    };
    let expose = step
        .host_access
        .iter()
        .filter_map(|access| access.name().parse::<HostAccess>().ok())
        .collect();
    let plan = SandboxPlan {
        argv: argv.to_vec(),
        workdir: workdir.to_path_buf(),
        workspace: step.workspace.clone(),
        writable: step.writable_paths.clone(),
        read_only: config.protected_paths.clone(),
        expose,
        network: match step.container.network {
            Some(Network::None) => NetworkMode::None,
            _ => NetworkMode::Host,
        },
    };
    let shim_args: Vec<&str> = shim_args.iter().map(String::as_str).collect();
    let (command, control) =
        maestro_sandbox::command(shim, &shim_args, &plan).map_err(|error| unavailable(step, error))?;
    Ok((tokio::process::Command::from(command), control))
}

/// Waits until the sandbox is complete and the step is about to run.
pub(crate) async fn started(control: &mut Control, step: &StepRequest) -> Result<(), ExecutorError> {
    control
        .wait_started()
        .await
        .map_err(|error| unavailable(step, error))
}

/// The sandbox's own account of the step's teardown.
pub(crate) async fn teardown(control: Control, step: &StepRequest) -> Teardown {
    match control.finish().await {
        Ok(report) if report.teardown.verified => Teardown::verified(TeardownMethod::PidNamespace),
        Ok(report) => Teardown::failed(TeardownMethod::PidNamespace, report.teardown.remaining),
        Err(error) => {
            tracing::warn!(step = %step.name, %error, "sandbox gave no teardown report");
            Teardown::failed(
                TeardownMethod::PidNamespace,
                vec![format!("the sandbox gave no teardown report: {error}")],
            )
        }
    }
}

fn unavailable(step: &StepRequest, error: SandboxError) -> ExecutorError {
    ExecutorError::Unavailable {
        message: format!("step {:?}: {error}", step.name),
    }
}
