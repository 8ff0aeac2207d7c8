//! Running one step: in a container of its own, or as an exec in a job's shared container.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, EventsOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use maestro_core::executor::{
    StepControl, StepOutcome, StepOutput, StepRequest, StopReason, Stream,
};
use tokio::time::{Instant, sleep_until};

use crate::config::{removed_by_engine, step_exec};
use crate::engine::{CALL_TIMEOUT, call, inspect, kill, short};
use crate::error::{DockerError, is_not_found};
use crate::events::JobEvents;

/// How long output is still read after the engine reported the exit. The attach stream closes
/// right after the exit; this only bounds an engine that keeps it open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long the exit status may lag behind the end of the output before we ask for it directly.
const STATUS_AFTER_OUTPUT: Duration = Duration::from_secs(5);
/// How often a container's state is polled when the engine's wait cannot tell us.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// How long a container that is gone (removed by the engine on exit) may wait for its `die`
/// event before the step is given up as lost.
const DIE_EVENT_AFTER_REMOVAL: Duration = Duration::from_secs(5);
/// How long a container may take to die after SIGKILL before the step is given up as lost.
const AFTER_KILL: Duration = Duration::from_secs(15);
/// How often a running exec whose output is still open is asked whether it has exited (a
/// process it left in the background can hold its output open).
const EXEC_POLL: Duration = Duration::from_secs(1);

/// Record one frame of output under its stream; stdin echoes cannot occur (stdin is closed).
fn record(output: &mut StepOutput, frame: LogOutput) -> std::io::Result<()> {
    match frame {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            output.write(Stream::Stdout, &message)
        }
        LogOutput::StdErr { message } => output.write(Stream::Stderr, &message),
        LogOutput::StdIn { .. } => Ok(()),
    }
}

/// An instant far enough away to stand for "never" in a `select!` branch that is disabled.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Run `step` in the created (not yet started) container `id`: attach, start, stream the
/// output, honour `control`, and read the exit status and OOM flag.
///
/// The exit is taken from whichever answers first: the job's event stream (`events`, the
/// `die` event) or the engine's `wait`. A container without a memory limit is removed by the
/// engine once it exits ([`removed_by_engine`]), after which only the stream can tell its
/// exit. The caller removes the container (and waits until it is gone) when this returns an
/// error, the step was stopped, or the engine does not remove it.
pub(crate) async fn run_container(
    docker: &Docker,
    id: &str,
    step: &StepRequest,
    output: &mut StepOutput,
    control: &StepControl,
    events: &JobEvents,
) -> Result<StepOutcome, DockerError> {
    let what = || format!("container {} of step {:?}", short(id), step.name);
    // Attach before start, so not even the first line of a step that prints and exits at once
    // is lost: the engine registers the attach before it answers, and the process cannot write
    // before the start we send after that. Not with `logs`: replaying the log as well can
    // deliver a line twice when the start races the replay (seen on 20.10), and a fresh
    // container has no log to replay. Attaching to a container that already stopped would
    // hang, which is why this never runs on a started container.
    let options = AttachContainerOptionsBuilder::new()
        .stream(true)
        .logs(false)
        .stdout(true)
        .stderr(true)
        .build();
    let attached = call(
        || format!("attach to the {}", what()),
        CALL_TIMEOUT,
        docker.attach_container(id, Some(options)),
    )
    .await?;
    let mut frames = attached.output;
    // The write half stays open until the step is over: closing it could end the attach early.
    let _stdin = attached.input;
    let started = SystemTime::now();
    call(
        || format!("start the {}", what()),
        CALL_TIMEOUT,
        docker.start_container(id, None::<bollard::query_parameters::StartContainerOptions>),
    )
    .await?;
    tracing::debug!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, container = short(id), "container started");

    // Built and first polled only now that the container runs: `not-running` then means "until
    // it exits", and a wait first polled after the exit still answers at once.
    let wait_options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(id, Some(wait_options));
    // The `die` event: usually tens of milliseconds before the wait answers.
    let died = events.exit_of(id);
    tokio::pin!(died);
    let mut listening = true;

    let stop = control.stop_requested();
    tokio::pin!(stop);
    let mut open = true;
    let mut waiting = true;
    let mut exit: Option<i64> = None;
    let mut stopped: Option<StopReason> = None;
    let mut kill_at: Option<Instant> = None;
    let mut give_up_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let mut status_due: Option<Instant> = None;
    let mut vanished_at: Option<Instant> = None;
    loop {
        if exit.is_some() && !open {
            break;
        }
        tokio::select! {
            died = &mut died, if listening && exit.is_none() => {
                listening = false;
                // `None`: the stream ended; the wait (or polling) answers instead.
                if let Some(code) = died {
                    exit = Some(code);
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
            }
            frame = frames.next(), if open => match frame {
                Some(Ok(frame)) => record(output, frame)?,
                Some(Err(error)) => {
                    tracing::warn!(step = %step.name, %error, "reading the container's output failed");
                    open = false;
                    status_due = Some(Instant::now() + STATUS_AFTER_OUTPUT);
                }
                None => {
                    open = false;
                    status_due = Some(Instant::now() + STATUS_AFTER_OUTPUT);
                }
            },
            waited = wait.next(), if waiting && exit.is_none() => {
                waiting = false;
                let code = match waited {
                    Some(Ok(response)) => Some(response.status_code),
                    Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Some(code),
                    // Already removed by the engine after its exit: the event stream has it.
                    Some(Err(error)) if listening && is_not_found(&error) => {
                        tracing::debug!(step = %step.name, %error, "the container was gone before the wait reached the engine");
                        None
                    }
                    Some(Err(error)) => {
                        tracing::warn!(step = %step.name, %error, "waiting for the container failed; reading its state instead");
                        None
                    }
                    None => None,
                };
                match code {
                    Some(code) => {
                        exit = Some(code);
                        drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                    // The wait broke off: poll the container's state instead.
                    None => status_due = Some(Instant::now()),
                }
            }
            reason = &mut stop, if stopped.is_none() && exit.is_none() => {
                tracing::info!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, ?reason, "stopping container step");
                stopped = Some(reason);
                kill(docker, id, "SIGTERM").await?;
                kill_at = Some(Instant::now() + control.grace());
            }
            () = sleep_until(kill_at.unwrap_or_else(far_future)), if kill_at.is_some() && exit.is_none() => {
                tracing::info!(step = %step.name, "grace period over, killing container step");
                kill(docker, id, "SIGKILL").await?;
                kill_at = None;
                give_up_at = Some(Instant::now() + AFTER_KILL);
            }
            () = sleep_until(give_up_at.unwrap_or_else(far_future)), if give_up_at.is_some() && exit.is_none() => {
                return Err(DockerError::Lost(format!(
                    "step {:?}: container {} did not stop within {} s of SIGKILL; the engine may be unhealthy",
                    step.name, short(id), AFTER_KILL.as_secs()
                )));
            }
            () = sleep_until(drain_until.unwrap_or_else(far_future)), if drain_until.is_some() && open => {
                output.note("the container's output stayed open after it exited; stopped reading")?;
                open = false;
            }
            () = sleep_until(status_due.unwrap_or_else(far_future)), if status_due.is_some() && exit.is_none() => {
                // The output ended but the wait did not answer, or the wait broke off: ask for
                // the state directly.
                match inspect_exit(docker, id).await {
                    Ok(Some(code)) => {
                        exit = Some(code);
                        drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                    Ok(None) => status_due = Some(Instant::now() + STATUS_POLL),
                    // Gone: it exited and the engine removed it, so its `die` event is logged
                    // (the stream replays it); give the stream a bounded moment to deliver it.
                    Err(DockerError::Api { source, .. }) if is_not_found(&source) && listening => {
                        status_due = None;
                        vanished_at = Some(Instant::now() + DIE_EVENT_AFTER_REMOVAL);
                    }
                    Err(DockerError::Api { source, .. }) if is_not_found(&source) => {
                        return Err(DockerError::Lost(format!(
                            "step {:?}: container {} was removed by the engine before its exit code could be read (the engine's event stream broke); check the engine (docker info)",
                            step.name, short(id)
                        )));
                    }
                    Err(error) => return Err(error),
                }
            }
            () = sleep_until(vanished_at.unwrap_or_else(far_future)), if vanished_at.is_some() && exit.is_none() => {
                return Err(DockerError::Lost(format!(
                    "step {:?}: container {} is gone and the engine reported no exit code for it",
                    step.name, short(id)
                )));
            }
        }
    }
    let code = exit;
    let mut oom_killed = false;
    if code != Some(0) {
        // The `oom` event is what sets the state's flag too. A container under a memory limit
        // is not removed by the engine, so its state can still be read, and its `oom` event,
        // should it come after the exit, is still logged (searched for by `was_oom_killed`).
        oom_killed = events.oom_seen(id)
            || (!removed_by_engine(step)
                && match inspect_state(docker, id).await {
                    Ok(state) => state.oom_killed,
                    Err(DockerError::Api { source, .. }) if is_not_found(&source) => false,
                    Err(error) => return Err(error),
                })
            || was_oom_killed(docker, id, step, code, started).await;
    }
    Ok(StepOutcome {
        exit_code: code.and_then(|code| i32::try_from(code).ok()),
        signal: None,
        stopped,
        oom_killed,
        teardown: None,
    })
}

/// How long after the exit the engine's events are searched for an OOM kill.
const OOM_EVENT_WINDOW: Duration = Duration::from_secs(1);

/// Whether a step that died by SIGKILL under a memory limit was killed for memory, when the
/// container's state does not say so. Docker 20.10 sets the state's flag only when the kernel's
/// OOM event reaches it before the exit event, which it often does not; the `oom` event itself
/// is always logged, so the engine's event log is searched (only in this rare, failed case).
async fn was_oom_killed(
    docker: &Docker,
    id: &str,
    step: &StepRequest,
    code: Option<i64>,
    started: SystemTime,
) -> bool {
    if code != Some(137) || step.container.memory_bytes.is_none() {
        return false;
    }
    let unix = |at: SystemTime| {
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    };
    let since = unix(started).saturating_sub(1).to_string();
    let until = unix(SystemTime::now() + OOM_EVENT_WINDOW).to_string();
    let filters = HashMap::from([
        ("container", vec![id]),
        ("type", vec!["container"]),
        ("event", vec!["oom"]),
    ]);
    let options = EventsOptionsBuilder::new()
        .since(&since)
        .until(&until)
        .filters(&filters)
        .build();
    let mut events = docker.events(Some(options));
    let limit = OOM_EVENT_WINDOW + Duration::from_secs(2);
    matches!(
        tokio::time::timeout(limit, events.next()).await,
        Ok(Some(Ok(_)))
    )
}

/// What an exited container's state says.
struct ExitState {
    exit_code: Option<i64>,
    oom_killed: bool,
}

async fn inspect_state(docker: &Docker, id: &str) -> Result<ExitState, DockerError> {
    let state = inspect(docker, id, CALL_TIMEOUT)
        .await?
        .state
        .unwrap_or_default();
    Ok(ExitState {
        exit_code: if state.running == Some(true) {
            None
        } else {
            state.exit_code
        },
        oom_killed: state.oom_killed.unwrap_or(false),
    })
}

/// The exit code of a container that no longer runs, or `None` while it runs.
async fn inspect_exit(docker: &Docker, id: &str) -> Result<Option<i64>, DockerError> {
    Ok(inspect_state(docker, id).await?.exit_code)
}

/// How an exec ended, and whether its container had to be killed to stop it.
pub(crate) struct ExecEnd {
    /// The step's outcome.
    pub(crate) outcome: StepOutcome,
    /// The shared container was killed (timeout or cancel) and must not be used again.
    pub(crate) container_killed: bool,
}

/// Run `step` as an exec in the running shared container `id`. A timeout or cancel kills the
/// whole container: an exec's processes cannot be signalled through the engine, and the job
/// ends anyway.
pub(crate) async fn run_exec(
    docker: &Docker,
    id: &str,
    step: &StepRequest,
    output: &mut StepOutput,
    control: &StepControl,
) -> Result<ExecEnd, DockerError> {
    let what = || format!("step {:?} in container {}", step.name, short(id));
    let exec_started = SystemTime::now();
    let exec = call(
        || format!("create an exec for {}", what()),
        CALL_TIMEOUT,
        docker.create_exec(id, step_exec(step)),
    )
    .await?;
    let started = call(
        || format!("start the exec of {}", what()),
        CALL_TIMEOUT,
        docker.start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(64 * 1024),
            }),
        ),
    )
    .await?;
    let StartExecResults::Attached {
        output: mut frames,
        input: _stdin,
    } = started
    else {
        return Err(DockerError::Lost(format!(
            "the engine started the exec of {} detached; its output cannot be read",
            what()
        )));
    };
    tracing::debug!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, container = short(id), "exec started");

    let stop = control.stop_requested();
    tokio::pin!(stop);
    let mut open = true;
    let mut stopped: Option<StopReason> = None;
    let mut poll_at = Instant::now() + EXEC_POLL;
    let mut drain_until: Option<Instant> = None;
    while open {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(frame)) => record(output, frame)?,
                Some(Err(error)) => {
                    tracing::warn!(step = %step.name, %error, "reading the exec's output failed");
                    open = false;
                }
                None => open = false,
            },
            reason = &mut stop, if stopped.is_none() => {
                tracing::info!(job_id = %step.job_id, trace_id = %step.trace_id, step = %step.name, ?reason, "stopping exec step: killing its shared container");
                stopped = Some(reason);
                kill(docker, id, "SIGKILL").await?;
                // The output closes when the container dies; bound the wait for that.
                drain_until = Some(Instant::now() + AFTER_KILL);
            }
            () = sleep_until(poll_at), if drain_until.is_none() => {
                if exec_exit(docker, &exec.id).await?.is_some() {
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                } else {
                    poll_at = Instant::now() + EXEC_POLL;
                }
            }
            () = sleep_until(drain_until.unwrap_or_else(far_future)), if drain_until.is_some() => {
                if stopped.is_none() {
                    output.note("the step's output stayed open after it exited (a background process holds it); stopped reading")?;
                }
                open = false;
            }
        }
    }
    // The exit code lags the end of the output by a moment: ask until the exec is done.
    let deadline = Instant::now() + STATUS_AFTER_OUTPUT;
    let mut code = None;
    while stopped.is_none() {
        code = exec_exit(docker, &exec.id).await?;
        if code.is_some() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if code.is_none() && stopped.is_none() {
        return Err(DockerError::Lost(format!(
            "the exec of {} ended its output but the engine reports no exit code",
            what()
        )));
    }
    let mut oom_killed = false;
    if code.is_some_and(|code| code != 0) {
        oom_killed = inspect_state(docker, id)
            .await
            .is_ok_and(|state| state.oom_killed)
            || was_oom_killed(docker, id, step, code, exec_started).await;
    }
    Ok(ExecEnd {
        outcome: StepOutcome {
            exit_code: code.and_then(|code| i32::try_from(code).ok()),
            signal: None,
            stopped,
            oom_killed,
            teardown: None,
        },
        container_killed: stopped.is_some(),
    })
}

/// The exit code of a finished exec, or `None` while it runs.
async fn exec_exit(docker: &Docker, exec_id: &str) -> Result<Option<i64>, DockerError> {
    let inspected = call(
        || format!("inspect exec {}", short(exec_id)),
        CALL_TIMEOUT,
        docker.inspect_exec(exec_id),
    )
    .await?;
    Ok(if inspected.running == Some(true) {
        None
    } else {
        inspected.exit_code
    })
}
