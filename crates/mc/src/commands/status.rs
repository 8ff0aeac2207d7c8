//! `mc status`: one job's record, or the list of jobs.

use maestro_core::runner::{describe, status_name};
use maestro_core::state::{FileStore, JobRecord, StateStore, StepRecord, StepStatus};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, OutputFormat, StatusArgs};
use crate::exit::{Code, Failure};
use crate::{printer, settings};

pub(crate) fn run(global: &GlobalArgs, args: StatusArgs) -> Result<Code, Failure> {
    let store = FileStore::new(settings::state_root(global)?);
    match &args.job_id {
        Some(text) => show(&store, &super::find_job(&store, text)?, args.output),
        None => list(&store, args.limit, args.output),
    }
}

/// The policy verdicts recorded with the job's decision.
fn policies(record: &JobRecord) -> Value {
    record
        .transitions
        .iter()
        .find_map(|transition| transition.detail.get("policies").cloned())
        .unwrap_or(Value::Null)
}

fn show(
    store: &FileStore,
    job_id: &maestro_core::JobId,
    output: OutputFormat,
) -> Result<Code, Failure> {
    let record = store.load(*job_id)?;
    let stale = store.is_abandoned(&record)?;
    match output {
        OutputFormat::Json => printer::json(&json!({
            "job_id": record.meta.job_id,
            "name": record.meta.name,
            "owner": record.meta.owner,
            "environment": record.meta.environment,
            "state": record.state(),
            "stale": stale,
            "trace_id": record.meta.trace_id,
            "submitted_at": record.meta.submitted_at,
            "policies": policies(&record),
            "transitions": record.transitions,
            "steps": record.steps,
        })),
        OutputFormat::Text => printer::out(&render(&record, stale)),
    }
    Ok(Code::Success)
}

fn render(record: &JobRecord, stale: bool) -> String {
    let meta = &record.meta;
    let mut text = format!(
        "job       {}\nname      {}\nowner     {}\nenv       {}\nstate     {}{}\ntrace_id  {}\nspec      {} (stored as {})\n",
        meta.job_id,
        meta.name,
        meta.owner.as_deref().unwrap_or("-"),
        meta.environment.as_deref().unwrap_or("-"),
        record.state(),
        if stale {
            " (stale: no live mc drives it; run `mc gc`)"
        } else {
            ""
        },
        meta.trace_id,
        meta.source,
        meta.spec_file,
    );
    if let Value::Array(verdicts) = policies(record) {
        text.push_str("policies:\n");
        for verdict in verdicts {
            let name = verdict["policy"].as_str().unwrap_or("?");
            if verdict["allowed"].as_bool() == Some(true) {
                text.push_str(&format!("  allowed  {name}\n"));
            }
            for reason in verdict["reasons"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "  denied   {name}: {}\n",
                    reason.as_str().unwrap_or("")
                ));
            }
            for note in verdict["notes"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "  note     {name}: {}\n",
                    note.as_str().unwrap_or("")
                ));
            }
        }
    }
    text.push_str("transitions:\n");
    for transition in &record.transitions {
        let error = transition.detail.get("error").and_then(Value::as_str);
        text.push_str(&format!(
            "  {}  {:<10}{}\n",
            transition.at,
            transition.state.as_str(),
            error.map(|e| format!("  {e}")).unwrap_or_default()
        ));
    }
    if !record.steps.is_empty() {
        text.push_str("steps:\n");
        for step in &record.steps {
            text.push_str(&format!(
                "  {:<20} {:<8} {:<10} {}{}\n",
                step.name,
                step.runtime,
                status_name(step.status),
                describe(step),
                teardown(step)
            ));
        }
    }
    text
}

/// How the step's teardown was verified, for the text view; failures are already in `describe`.
fn teardown(step: &StepRecord) -> String {
    match &step.teardown {
        Some(teardown) if teardown.verified => {
            format!("; teardown verified: {}", teardown.method.describe())
        }
        Some(_) => String::new(),
        None if step.status == StepStatus::Skipped => String::new(),
        None => "; teardown not verified by its runtime".to_owned(),
    }
}

fn list(store: &FileStore, limit: usize, output: OutputFormat) -> Result<Code, Failure> {
    let mut rows = Vec::new();
    for job_id in store.list()?.into_iter().take(limit) {
        match store.load(job_id) {
            Ok(record) => {
                let stale = store.is_abandoned(&record)?;
                rows.push((record, stale));
            }
            Err(error) => eprintln!("warning: {error}"),
        }
    }
    match output {
        OutputFormat::Json => printer::json(
            &rows
                .iter()
                .map(|(record, stale)| {
                    json!({
                        "job_id": record.meta.job_id,
                        "name": record.meta.name,
                        "owner": record.meta.owner,
                        "state": record.state(),
                        "stale": stale,
                        "submitted_at": record.meta.submitted_at,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Text => {
            let mut text = String::new();
            for (record, stale) in &rows {
                text.push_str(&format!(
                    "{}  {:<10} {:<24} {:<12} {}{}\n",
                    record.meta.job_id,
                    record.state().as_str(),
                    record.meta.name,
                    record.meta.owner.as_deref().unwrap_or("-"),
                    record.meta.submitted_at,
                    if *stale { "  (stale)" } else { "" }
                ));
            }
            printer::out(&text);
        }
    }
    Ok(Code::Success)
}
