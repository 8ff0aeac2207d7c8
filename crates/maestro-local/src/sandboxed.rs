//! Sandboxed steps: the glue between a [`StepRequest`] and `maestro-sandbox`.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use maestro_core::executor::{ExecutorError, StepRequest, Teardown, TeardownMethod};
use maestro_core::spec::Network;
use maestro_sandbox::{
    Control, ForkedLauncher, HostAccess, HostEnvironment, Launched, Launcher, NetworkMode,
    SandboxError, SandboxPlan,
};

use crate::{LocalConfig, leftovers};

/// Fails closed, with one line, when this machine or this build cannot sandbox a step.
pub(crate) fn check(config: &LocalConfig) -> Result<(), ExecutorError> {
    shim(config)?;
    maestro_sandbox::check_support()
        .map(|_| ())
        .map_err(|error| ExecutorError::Unavailable {
            message: error.to_string(),
        })
}

/// The shim program and its leading arguments, or the refusal when this build has none.
fn shim(config: &LocalConfig) -> Result<(&Path, Vec<&str>), ExecutorError> {
    match &config.sandbox_shim {
        Some((program, args)) => Ok((program, args.iter().map(String::as_str).collect())),
        None => Err(ExecutorError::Unavailable {
            message: "this program cannot start the sandbox (no shim configured); set `isolation: none` on the step to run it without the sandbox".to_owned(),
        }),
    }
}

/// Builds a sandbox like `step`'s around `true` and waits for it: proof, before the job runs
/// anything, that this machine can contain the step. Paths an earlier step may still create
/// (its workdir, its writable paths) are left out.
pub(crate) async fn probe(config: &LocalConfig, step: &StepRequest) -> Result<(), ExecutorError> {
    let plan = SandboxPlan {
        argv: vec!["true".to_owned()],
        workdir: step.workspace.clone(),
        writable: Vec::new(),
        expose: Vec::new(),
        ..plan(config, step)
    };
    let (mut command, control) = spawnable(config, step, &plan)?;
    // Its stdin is the control socket; only its output is discarded.
    let (_registered, mut child) = {
        let _spawning = crate::leftovers::spawning();
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| ExecutorError::Unavailable {
                message: format!("cannot start the sandbox shim: {error}"),
            })?;
        (crate::leftovers::StepChild::register(child.id()), child)
    };
    drop(command);
    let report = tokio::time::timeout(SETUP_WITHIN, control.finish()).await;
    let _ = child.kill().await;
    match report {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(unavailable(step, error)),
        Err(_) => Err(ExecutorError::Unavailable {
            message: format!(
                "a test sandbox was not ready after {} s; nothing of the job ran",
                SETUP_WITHIN.as_secs()
            ),
        }),
    }
}

/// The sandbox plan of `step`, running its own command in its workspace.
fn plan(config: &LocalConfig, step: &StepRequest) -> SandboxPlan {
    SandboxPlan {
        argv: step.command.to_argv(),
        workdir: step.workspace.clone(),
        workspace: step.workspace.clone(),
        writable: step.writable_paths.clone(),
        read_only: config.protected_paths.clone(),
        expose: Vec::new(),
        network: match step.container.network {
            Some(Network::None) => NetworkMode::None,
            _ => NetworkMode::Host,
        },
        // `mc`'s own HOME, not the step's: a spec setting `HOME` must not uncover `~/.ssh`.
        host: Some(HostEnvironment::from_process()),
        hold: false,
    }
}

/// The shim's command for `plan`, and the channel to it.
fn spawnable(
    config: &LocalConfig,
    step: &StepRequest,
    plan: &SandboxPlan,
) -> Result<(tokio::process::Command, Control), ExecutorError> {
    let (program, args) = shim(config)?;
    let (command, control) =
        maestro_sandbox::command(program, &args, plan).map_err(|error| unavailable(step, error))?;
    Ok((tokio::process::Command::from(command), control))
}

/// The command that runs `step` in a sandbox, in `workdir`, and the channel to its shim.
pub(crate) fn command(
    config: &LocalConfig,
    step: &StepRequest,
    workdir: &Path,
) -> Result<(tokio::process::Command, Control), ExecutorError> {
    check(config)?;
    let plan = step_plan(config, step, workdir)?;
    spawnable(config, step, &plan)
}

/// The plan that runs `step` in `workdir`, with the host resources it asked for.
fn step_plan(
    config: &LocalConfig,
    step: &StepRequest,
    workdir: &Path,
) -> Result<SandboxPlan, ExecutorError> {
    let expose =
        step.host_access
            .iter()
            .map(|access| {
                // Both enums are the same list under the same kebab-case names: the spec's
                // vocabulary in core, its paths in the sandbox crate.
                serde_json::from_value::<HostAccess>(serde_json::Value::from(access.name()))
                    .map_err(|_| ExecutorError::InvalidStep {
                        message: format!(
                            "step {:?}: host_access {access} is not known to the sandbox",
                            step.name
                        ),
                    })
            })
            .collect::<Result<_, _>>()?;
    Ok(SandboxPlan {
        workdir: workdir.to_path_buf(),
        expose,
        ..plan(config, step)
    })
}

/// The launcher of an executor that has one (see [`LocalConfig::sandbox_launcher`]): a helper
/// the host forked before it started threads, if it gave one, taken on first use; else started
/// on first use; and started again when it fails.
#[derive(Debug, Default)]
pub(crate) struct LauncherSlot {
    current: Mutex<Option<Arc<RegisteredLauncher>>>,
    forked: Mutex<Option<ForkedLauncher>>,
}

/// A launcher, registered as a step child for as long as it runs (so that a bare step's orphan
/// scan never takes it for one of its own). Each step it runs holds it: a launcher replaced
/// after a failure keeps running, and registered, until its last step ends.
#[derive(Debug)]
pub(crate) struct RegisteredLauncher {
    launcher: Launcher,
    _registered: leftovers::StepChild,
}

impl LauncherSlot {
    /// A slot whose first launcher is `forked`.
    pub(crate) fn with_forked(forked: ForkedLauncher) -> Self {
        Self {
            current: Mutex::default(),
            forked: Mutex::new(Some(forked)),
        }
    }

    fn get_or_start(
        &self,
        program: &Path,
        args: &[String],
    ) -> Result<Arc<RegisteredLauncher>, SandboxError> {
        let mut slot = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = slot.as_ref()
            && current.launcher.is_usable()
        {
            return Ok(Arc::clone(current));
        }
        let forked = self
            .forked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let registered = {
            let _spawning = leftovers::spawning();
            let launcher = match forked.map(Launcher::adopt) {
                Some(Ok(launcher)) => launcher,
                Some(Err(error)) => {
                    tracing::debug!(%error, "cannot use the forked sandbox launcher; starting one");
                    Launcher::start(program, &args)?
                }
                None => Launcher::start(program, &args)?,
            };
            let registered = leftovers::StepChild::register(launcher.id());
            Arc::new(RegisteredLauncher {
                launcher,
                _registered: registered,
            })
        };
        tracing::debug!(pid = ?registered.launcher.id(), "sandbox launcher started");
        *slot = Some(Arc::clone(&registered));
        Ok(registered)
    }
}

/// Has the launcher fork `step`'s shim, with `environment` as all of its environment: the
/// shim, its output pipes, the channel to it and the launcher (hold it as long as the shim). A
/// launcher that failed is replaced, once.
///
/// `hold`: the sandbox is built at once and the step starts only when
/// [`Control::wait_started`] says so (see [`stage`]).
pub(crate) async fn launch(
    config: &LocalConfig,
    slot: &LauncherSlot,
    step: &StepRequest,
    workdir: &Path,
    environment: &[(&OsStr, &OsStr)],
    hold: bool,
) -> Result<(Launched, Control, Arc<RegisteredLauncher>), ExecutorError> {
    check(config)?;
    let Some((program, args)) = &config.sandbox_launcher else {
        return Err(ExecutorError::Unavailable {
            message: "this program has no sandbox launcher configured".to_owned(),
        });
    };
    let plan = SandboxPlan {
        hold,
        ..step_plan(config, step, workdir)?
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = slot
            .get_or_start(program, args)
            .map_err(|error| cannot_launch(step, error))?;
        match current
            .launcher
            .launch(&plan, environment.iter().copied())
            .await
        {
            Ok((launched, control)) => return Ok((launched, control, current)),
            // The launcher failed (`get_or_start` replaces it): once more with a new one.
            Err(error) if !current.launcher.is_usable() && attempts < 2 => {
                tracing::warn!(%error, "the sandbox launcher failed; starting a new one");
            }
            Err(error) => return Err(cannot_launch(step, error)),
        }
    }
}

/// A step's sandbox built ahead of the step ([`maestro_core::executor::Executor::stage`]):
/// the shim's init holds the step until [`Control::wait_started`] lets it start.
#[derive(Debug)]
pub(crate) struct Staged {
    /// The request it was built for: only the very same request may take it.
    step: StepRequest,
    pub(crate) launched: Launched,
    pub(crate) control: Control,
    pub(crate) launcher: Arc<RegisteredLauncher>,
}

/// The sandboxes built ahead of their steps, shared by an executor's clones. Dropping one (its
/// job ended before the step ran) closes its control socket: the shim tears the sandbox down,
/// and the step never ran.
#[derive(Debug, Default)]
pub(crate) struct StagedSlot(Mutex<Vec<Staged>>);

impl StagedSlot {
    /// The sandbox staged for `step`, if it was built for exactly this request. Any other staged
    /// for the same step of the same job is dropped.
    pub(crate) fn take(&self, step: &StepRequest) -> Option<Staged> {
        let mut staged = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let position = staged.iter().position(|staged| {
            staged.step.job_id == step.job_id && staged.step.index == step.index
        })?;
        let taken = staged.swap_remove(position);
        (taken.step == *step).then_some(taken)
    }

    /// Drops whatever is still staged for `job_id`.
    pub(crate) fn release(&self, job_id: maestro_core::JobId) {
        let released: Vec<Staged> = {
            let mut staged = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let (released, kept) = std::mem::take(&mut *staged)
                .into_iter()
                .partition(|staged| staged.step.job_id == job_id);
            *staged = kept;
            released
        };
        if !released.is_empty() {
            tracing::debug!(%job_id, count = released.len(), "staged sandboxes released unused");
        }
    }
}

/// Builds `step`'s sandbox through the launcher, the step held, and keeps it in `slot` for
/// [`StagedSlot::take`]. Nothing is said of a failure: the step's run builds its sandbox again
/// and reports what goes wrong then.
pub(crate) async fn stage(
    config: &LocalConfig,
    launcher: &LauncherSlot,
    slot: &StagedSlot,
    step: &StepRequest,
    workdir: &Path,
    environment: &[(&OsStr, &OsStr)],
) {
    match launch(config, launcher, step, workdir, environment, true).await {
        Ok((launched, control, launcher)) => slot
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Staged {
                step: step.clone(),
                launched,
                control,
                launcher,
            }),
        Err(error) => {
            tracing::debug!(step = %step.name, %error, "the step's sandbox was not built ahead; it is built when the step runs");
        }
    }
}

/// A shim the launcher could not start: as a shim that could not be executed, the step's
/// failure to start (a resource shortage, a launcher that failed twice), not a sandbox this
/// machine cannot build, which is said as such.
fn cannot_launch(step: &StepRequest, error: SandboxError) -> ExecutorError {
    match error {
        SandboxError::Unsupported { .. } | SandboxError::Setup { .. } => unavailable(step, error),
        SandboxError::InvalidPlan { message } => ExecutorError::InvalidStep {
            message: format!("step {:?}: {message}", step.name),
        },
        other => ExecutorError::StepFailed {
            message: format!("step {:?}: cannot start its sandbox: {other}", step.name),
        },
    }
}

/// How long building a sandbox may take before the step is failed as a system error. It takes
/// milliseconds; only a wedged kernel or filesystem (a hung NFS mount) takes longer.
const SETUP_WITHIN: Duration = Duration::from_secs(30);

/// Waits until the sandbox is complete and the step is about to run.
pub(crate) async fn started(
    control: &mut Control,
    step: &StepRequest,
) -> Result<(), ExecutorError> {
    match tokio::time::timeout(SETUP_WITHIN, control.wait_started()).await {
        // The program is missing or not executable: the spec's mistake, said as for a bare step.
        Ok(Err(SandboxError::CannotStart { message })) => Err(ExecutorError::StepFailed {
            message: format!(
                "step {:?}: cannot start {:?}: {message}",
                step.name,
                step.command
                    .to_argv()
                    .first()
                    .map(String::as_str)
                    .unwrap_or_default()
            ),
        }),
        Ok(Err(SandboxError::Refused { message })) => Err(ExecutorError::InvalidStep {
            message: format!("step {:?}: {message}; nothing of it ran", step.name),
        }),
        Ok(started) => started.map_err(|error| unavailable(step, error)),
        Err(_) => Err(ExecutorError::Unavailable {
            message: format!(
                "step {:?}: the sandbox was not ready after {} s; nothing of the step ran",
                step.name,
                SETUP_WITHIN.as_secs()
            ),
        }),
    }
}

/// The sandbox's own account of the step's teardown; when the shim was killed before it could
/// give one (the step outlived its grace period), `mc` checks the PID namespace itself.
///
/// `reap_init`: whether the namespace's init may have been re-parented to this process (the
/// shim was this process's child). A launched shim's init is the launcher's to reap; its pid,
/// once reaped there, may already be another process's.
pub(crate) async fn teardown(control: Control, step: &StepRequest, reap_init: bool) -> Teardown {
    let namespace = control.pid_namespace_inode();
    let report = control.finish().await;
    if let Ok(maestro_sandbox::Report {
        unreaped_init: Some(init),
        ..
    }) = &report
        && reap_init
    {
        leftovers::reap_sandbox_init(*init);
    }
    match report {
        Ok(report) if report.teardown.verified => Teardown::verified(TeardownMethod::PidNamespace),
        Ok(report) => Teardown::failed(TeardownMethod::PidNamespace, report.teardown.remaining),
        Err(error) => match namespace {
            Some(inode) => leftovers::verify_pid_namespace(inode).await,
            None => {
                tracing::warn!(step = %step.name, %error, "sandbox gave no teardown report");
                Teardown::failed(
                    TeardownMethod::PidNamespace,
                    vec![format!("the sandbox gave no teardown report: {error}")],
                )
            }
        },
    }
}

/// A sandbox that could not be built: the machine's problem, said in one line with the way
/// out. The step did not run.
fn unavailable(step: &StepRequest, error: SandboxError) -> ExecutorError {
    let message = match error {
        // `check_support`'s refusals already end with the opt-out.
        SandboxError::Unsupported { message } => format!("step {:?}: {message}", step.name),
        other => format!(
            "step {:?}: {other}; nothing of the step ran (set `isolation: none` on the step to run it without the sandbox)",
            step.name
        ),
    };
    ExecutorError::Unavailable { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sandbox-limits` refuses by name, the sandbox refuses by real path: the lists must
    /// be the same, or a path one allows the other would refuse (or worse, let through).
    #[test]
    fn never_writable_paths_are_the_same_in_policy_and_the_sandbox() {
        assert_eq!(
            maestro_core::policy::SYSTEM_TREES,
            maestro_sandbox::SYSTEM_TREES
        );
        assert_eq!(
            maestro_core::policy::SHARED_DIRS,
            maestro_sandbox::SHARED_DIRS
        );
    }

    /// The spec's vocabulary (core) and the sandbox's paths (maestro-sandbox) name the same
    /// resources: a name added to one and not the other would be refused at run time.
    #[test]
    fn host_access_names_are_the_same_in_core_and_the_sandbox() {
        let core: Vec<&str> = maestro_core::spec::HostAccess::ALL
            .iter()
            .map(|access| access.name())
            .collect();
        let sandbox: Vec<String> = HostAccess::ALL
            .iter()
            .map(|access| {
                serde_json::to_value(access)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(core, sandbox);
    }
}
