//! `mc cancel`: stop a running job from another terminal, as Ctrl-C in its own would.

use std::time::{Duration, Instant};

use maestro_core::control::{CancelError, CancelOutcome, request_cancel};
use serde_json::json;

use crate::cli::{CancelArgs, GlobalArgs, OutputFormat};
use crate::exit::{Code, Failure};
use crate::printer;

const POLL: Duration = Duration::from_millis(50);

pub(crate) fn run(global: &GlobalArgs, args: CancelArgs) -> Result<Code, Failure> {
    let store = super::store(global)?;
    let job_id = super::find_job(store.as_ref(), &args.job_id)?;
    let outcome =
        request_cancel(store.as_ref(), &store.audit(), job_id, &super::who()).map_err(|error| {
            match error {
                CancelError::Store(error) => Failure::from(error),
                CancelError::Audit(_) => Failure::system(error),
                CancelError::Unidentified { .. } => {
                    Failure::system(error).hint("`mc gc` settles a job whose mc is gone")
                }
                CancelError::ServerJob { job_id } => Failure::usage(error).hint(format!(
                    "cancel it through a server: `mc --server URL cancel {job_id}` (any server of a shared database)"
                )),
                CancelError::Signal { .. } => Failure::system(error)
                    .hint("only the user who runs a job (or root) can cancel it"),
            }
        })?;
    let (state, message, code) = match outcome {
        CancelOutcome::AlreadyEnded(state) => (
            state,
            format!("job {job_id} already ended {state}; nothing to cancel"),
            Code::Success,
        ),
        CancelOutcome::Abandoned => {
            let state = store.load(job_id)?.state();
            (
                state,
                format!(
                    "job {job_id} is {state} but no mc runs it any more (it was killed); nothing to cancel: `mc gc` records it failed"
                ),
                // Not cancelled, and not ended: there is no process to signal.
                Code::System,
            )
        }
        CancelOutcome::Requested { pid } => {
            // The job's own mc records CANCELLED once its running step is stopped.
            let deadline = Instant::now() + Duration::from_secs(args.wait);
            loop {
                let state = store.load(job_id)?.state();
                if state.is_terminal() {
                    break (
                        state,
                        format!("job {job_id} {state} (its mc, process {pid}, stopped it)"),
                        Code::Success,
                    );
                }
                if Instant::now() >= deadline {
                    break (
                        state,
                        format!(
                            "job {job_id} is still {state} {} s after its mc (process {pid}) was asked to stop it; it may still be stopping a step: see `mc status {job_id}`",
                            args.wait
                        ),
                        Code::JobFailed,
                    );
                }
                std::thread::sleep(POLL);
            }
        }
    };
    match args.output {
        OutputFormat::Json => printer::json(&json!({
            "job_id": job_id,
            "state": state,
            "message": message,
        })),
        OutputFormat::Text => printer::out(&format!("{message}\n")),
    }
    Ok(code)
}
