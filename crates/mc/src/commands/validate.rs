//! `mc validate`: every check `mc submit` makes before running, and nothing else.

use maestro_core::runner::RunnerConfig;
use serde_json::json;

use crate::cli::{GlobalArgs, OutputFormat, ValidateArgs};
use crate::exit::{Code, Failure};
use crate::registry::Lifetime;
use crate::{printer, settings};

pub(crate) fn run(global: &GlobalArgs, args: ValidateArgs) -> Result<Code, Failure> {
    let settings = settings::resolve(
        global,
        &settings::Flags {
            default_step_timeout: args.policy.default_step_timeout.clone(),
            max_step_timeout: args.policy.max_step_timeout.clone(),
            allowed_host_access: args.policy.allowed_host_access.clone(),
            stop_grace: None,
            max_step_output: None,
        },
    )?;
    let state_root = settings.state_root;
    let config = RunnerConfig {
        policy: settings.policy,
        ..RunnerConfig::default()
    };
    let request = super::read_request(&args.file, None, args.runtime.clone())?;
    let runner = super::open_runner(&state_root, config, Lifetime::Command);
    // Admission may ask plugins how they contain their steps (their hello), which is async,
    // and waits for them: SIGINT/SIGTERM end that wait (and the plugins) at once, exit 130.
    let validation = super::runtime()?
        .block_on(async {
            let cancel = tokio_util::sync::CancellationToken::new();
            super::submit::watch_signals(cancel.clone())?;
            tokio::select! {
                biased;
                validation = runner.validate(&request) => Ok(validation),
                () = cancel.cancelled() => Err(Failure::new(Code::Cancelled, "cancelled: nothing was validated")),
            }
        })?
        .map_err(|error| super::admission_failure(&request.source, &request.spec_bytes, error))?;
    let allowed = validation.policies.allowed();
    match args.output {
        OutputFormat::Json => printer::json(&json!({
            "name": validation.spec.name,
            "allowed": allowed,
            "policies": validation.policies.verdicts,
        })),
        OutputFormat::Text => {
            let mut text = String::new();
            for verdict in &validation.policies.verdicts {
                if verdict.allowed {
                    text.push_str(&format!("allowed  {}\n", verdict.policy));
                }
                for reason in &verdict.reasons {
                    text.push_str(&format!("denied   {}: {reason}\n", verdict.policy));
                }
                for note in &verdict.notes {
                    text.push_str(&format!("note     {}: {note}\n", verdict.policy));
                }
            }
            text.push_str(&format!(
                "job {:?} would be {}\n",
                validation.spec.name,
                if allowed { "allowed" } else { "denied" }
            ));
            printer::out(&text);
        }
    }
    Ok(if allowed { Code::Success } else { Code::Denied })
}
