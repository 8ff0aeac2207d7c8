//! `mc submit`: run a job in the foreground.

use std::sync::Arc;
use std::time::Duration;

use maestro_core::output::OutputObserver;
use maestro_core::runner::{JobReport, RunnerConfig, describe, status_name};
use maestro_core::state::StepStatus;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, OutputFormat, SubmitArgs};
use crate::exit::{Code, Failure};
use crate::printer::{self, LivePrinter};
use crate::registry::Lifetime;
use crate::settings;

pub(crate) fn run(global: &GlobalArgs, args: SubmitArgs) -> Result<Code, Failure> {
    if args.detach {
        return Err(Failure::usage(
            "--detach needs --server (or MAESTRO_SERVER): a local job runs in the foreground",
        ));
    }
    let settings = settings::resolve(
        global,
        &settings::Flags {
            default_step_timeout: args.policy.default_step_timeout.clone(),
            max_step_timeout: args.policy.max_step_timeout.clone(),
            allowed_host_access: args.policy.allowed_host_access.clone(),
            stop_grace: args.stop_grace.clone(),
            max_step_output: args.max_step_output.clone(),
        },
    )?;
    let state_root = settings.state_root;
    let config = RunnerConfig {
        policy: settings.policy,
        stop_grace: settings.stop_grace,
        max_step_output: settings.max_step_output,
    };
    let request = super::read_request(&args.file, args.trace_id.as_deref(), args.runtime.clone())?;
    // Kept to place a spec error at its line, should admission refuse the spec.
    let (source, spec_bytes) = (request.source.clone(), request.spec_bytes.clone());
    let runner = super::open_runner(&state_root, config, Lifetime::Command);
    let printer =
        (!args.quiet).then(|| Arc::new(LivePrinter::start(args.output == OutputFormat::Json)));
    let observer = printer
        .clone()
        .map(|printer| printer as Arc<dyn OutputObserver>);
    let report = super::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        watch_signals(cancel.clone())?;
        runner
            .submit(request, observer, cancel)
            .await
            .map_err(|error| super::admission_failure(&source, &spec_bytes, error))
    });
    // Its executors let go of what they hold (the sandbox launcher exits meanwhile; `main`
    // reaps it) while the report is printed.
    drop(runner);
    if let Some(printer) = printer {
        // Live lines come before the summary (or the error), unless the terminal stopped
        // reading them.
        printer.finish(Duration::from_secs(5));
    }
    Ok(print_report(&report?, args.output))
}

/// Print a finished job's report (its summary on stdout, its error on stderr) and give the exit
/// code it means; `mc --server URL submit` prints the server's record of the job with it.
pub(crate) fn print_report(report: &JobReport, output: OutputFormat) -> Code {
    match output {
        OutputFormat::Json => printer::json(&json!({
            "job_id": report.job_id,
            "state": report.state,
            "trace_id": report.trace_id,
            "steps": report.steps,
            "policies": report.policies.verdicts,
            "error": report.error,
        })),
        OutputFormat::Text => printer::out(&text_report(report)),
    }
    if let Some(error) = &report.error {
        eprintln!("error: {error}");
    }
    exit_code(report)
}

/// SIGINT and SIGTERM cancel the job: the running step is stopped, the job recorded
/// `CANCELLED`, and `mc` exits 130 once everything is cleaned up.
pub(crate) fn watch_signals(cancel: CancellationToken) -> Result<(), Failure> {
    let install = |kind| {
        signal(kind).map_err(|error| Failure::system(format!("cannot watch signals: {error}")))
    };
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        cancel.cancel();
        // Not on this thread: a stderr that nobody reads must not hold up the cancel.
        std::thread::spawn(|| eprintln!("mc: signal received, stopping the job"));
    });
    Ok(())
}

fn exit_code(report: &JobReport) -> Code {
    Code::for_job(report.state, report.failure)
}

fn text_report(report: &JobReport) -> String {
    let mut text = format!(
        "job {} {} (trace_id {})\n",
        report.job_id, report.state, report.trace_id
    );
    for verdict in report.policies.denials() {
        for reason in &verdict.reasons {
            text.push_str(&format!(
                "  denied by {}: {}\n",
                verdict.policy,
                printer::field(reason)
            ));
        }
    }
    for step in &report.steps {
        text.push_str(&format!(
            "  step {:<20} {:<10} {:>8}  {}\n",
            printer::field(&step.name),
            status_name(step.status),
            match step.status {
                StepStatus::Skipped => "-".to_owned(),
                _ => printer::millis(step.duration_ms),
            },
            printer::field(&describe(step))
        ));
    }
    text
}
