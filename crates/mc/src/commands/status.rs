//! `mc status`: one job's record, or the list of jobs.

use std::time::Duration;

use maestro_core::JobId;
use maestro_core::progress::{self, JobFilter};
use maestro_core::runner::{describe, status_name};
use maestro_core::state::{JobRecord, PageQuery, StateStore, StepRecord, StepStatus};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, OutputFormat, StatusArgs};
use crate::exit::{Code, Failure};
use crate::printer::{self, field};

const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) fn run(global: &GlobalArgs, args: StatusArgs) -> Result<Code, Failure> {
    let store = super::store(global)?;
    let store = store.as_ref();
    let job_id = match &args.job_id {
        Some(text) => Some(super::find_job(store, text)?),
        None => None,
    };
    let filter = filter(&args)?;
    let before = args
        .before
        .as_deref()
        // A whole id needs no job of its own: the job may have been pruned since.
        .map(|text| match JobId::try_parse(text) {
            Ok(job_id) => Ok(job_id),
            Err(_) => super::find_job(store, text),
        })
        .transpose()?;
    loop {
        if args.watch {
            printer::clear_screen();
        }
        let running = match job_id {
            Some(job_id) => show(store, job_id, args.output)?,
            None => {
                list(store, &filter, before, args.limit, args.output)?;
                true
            }
        };
        if !args.watch || !running {
            return Ok(Code::Success);
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
}

fn filter(args: &StatusArgs) -> Result<JobFilter, Failure> {
    let states = args
        .state
        .iter()
        .map(|text| JobFilter::parse_state(text))
        .collect::<Result<_, _>>()
        .map_err(Failure::usage)?;
    let since = args
        .since
        .as_deref()
        .map(|text| JobFilter::parse_since(text, progress::Timestamp::now()))
        .transpose()
        .map_err(Failure::usage)?;
    Ok(JobFilter {
        states,
        owner: args.owner.clone(),
        environment: args.environment.clone(),
        since,
    })
}

/// `12.3s`, `4m05s`, `2h03m`.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{:.1}s", duration.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// Prints one job; true while it is still running.
fn show(store: &dyn StateStore, job_id: JobId, output: OutputFormat) -> Result<bool, Failure> {
    let record = store.load(job_id)?;
    let stale = store.is_abandoned(&record)?;
    let current = if record.state().is_terminal() {
        None
    } else {
        progress::current_step(store, &record, &super::stored_step_names(store, &record)?)
    };
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
            "duration_seconds": progress::duration(&record).map(|d| d.as_secs_f64()),
            "current_step": current,
            "policies": progress::verdicts(&record),
            "transitions": record.transitions,
            "steps": record.steps,
        })),
        OutputFormat::Text => printer::out(&render(&record, stale, current.as_ref())),
    }
    Ok(!record.state().is_terminal() && !stale)
}

fn render(record: &JobRecord, stale: bool, current: Option<&progress::CurrentStep>) -> String {
    let meta = &record.meta;
    let mut text = format!(
        "job       {}\nname      {}\nowner     {}\nenv       {}\nstate     {}{}\ntrace_id  {}\nspec      {} (stored as {})\n",
        meta.job_id,
        field(&meta.name),
        field(meta.owner.as_deref().unwrap_or("-")),
        field(meta.environment.as_deref().unwrap_or("-")),
        record.state(),
        if stale {
            " (stale: no live mc drives it; run `mc gc`)"
        } else {
            ""
        },
        meta.trace_id,
        field(&meta.source),
        meta.spec_file,
    );
    if let Some(duration) = progress::duration(record) {
        text.push_str(&format!("duration  {}\n", human(duration)));
    }
    if let Some(current) = current {
        text.push_str(&format!(
            "running   step {} ({}) for {}\n",
            field(&current.name),
            current.runtime,
            human(Duration::from_secs_f64(current.elapsed_seconds))
        ));
    }
    if let Value::Array(verdicts) = progress::verdicts(record) {
        text.push_str("policies:\n");
        for verdict in verdicts {
            let name = verdict["policy"].as_str().unwrap_or("?");
            if verdict["allowed"].as_bool() == Some(true) {
                text.push_str(&format!("  allowed  {name}\n"));
            }
            for reason in verdict["reasons"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "  denied   {name}: {}\n",
                    field(reason.as_str().unwrap_or(""))
                ));
            }
            for note in verdict["notes"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "  note     {name}: {}\n",
                    field(note.as_str().unwrap_or(""))
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
            error.map(|e| format!("  {}", field(e))).unwrap_or_default()
        ));
    }
    if !record.steps.is_empty() {
        text.push_str("steps:\n");
        for step in &record.steps {
            text.push_str(&format!(
                "  {:<20} {:<8} {:<10} {}{}\n",
                field(&step.name),
                field(&step.runtime),
                status_name(step.status),
                field(&describe(step)),
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

fn list(
    store: &dyn StateStore,
    filter: &JobFilter,
    before: Option<JobId>,
    limit: usize,
    output: OutputFormat,
) -> Result<(), Failure> {
    let page = store.list_page(&PageQuery {
        before,
        limit,
        filter: filter.clone(),
    })?;
    let mut rows = Vec::with_capacity(page.jobs.len());
    for record in page.jobs {
        let stale = store.is_abandoned(&record)?;
        rows.push((record, stale));
    }
    // A truncated listing without a filter says how many jobs there are, counted by their ids
    // alone (no job is read); with a filter, counting would read every older job, so the note
    // only points at the next page.
    let matching = match page.next_cursor {
        Some(cursor) if filter.is_empty() => Some(rows.len() + store.count_older(cursor)?),
        Some(_) | None => None,
    };
    match output {
        OutputFormat::Json => printer::json(
            &rows
                .iter()
                .map(|(record, stale)| {
                    json!({
                        "job_id": record.meta.job_id,
                        "name": record.meta.name,
                        "owner": record.meta.owner,
                        "environment": record.meta.environment,
                        "state": record.state(),
                        "stale": stale,
                        "submitted_at": record.meta.submitted_at,
                        "duration_seconds": progress::duration(record).map(|d| d.as_secs_f64()),
                    })
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Text => {
            let mut text = format!(
                "{:<36}  {:<10} {:<24} {:<12} {:<10} {:<27} {}\n",
                "JOB ID", "STATE", "NAME", "OWNER", "ENV", "SUBMITTED", "DURATION"
            );
            for (record, stale) in &rows {
                text.push_str(&format!(
                    "{}  {:<10} {:<24} {:<12} {:<10} {:<27} {}{}\n",
                    record.meta.job_id,
                    record.state().as_str(),
                    field(&record.meta.name),
                    field(record.meta.owner.as_deref().unwrap_or("-")),
                    field(record.meta.environment.as_deref().unwrap_or("-")),
                    record.meta.submitted_at,
                    progress::duration(record).map_or_else(|| "-".to_owned(), human),
                    if *stale { "  (stale: run `mc gc`)" } else { "" }
                ));
            }
            printer::out(&text);
        }
    }
    if let (Some(next), Some((last, _))) = (page.next_cursor, rows.last()) {
        let last = last.meta.job_id;
        debug_assert_eq!(next, last);
        match matching {
            Some(matching) => eprintln!(
                "note: showing the newest {} of {matching} jobs; `--limit {matching}` (or 0) shows them all, `--before {last}` the next page",
                rows.len(),
            ),
            None => eprintln!(
                "note: showing the newest {} matching jobs; `--before {last}` shows the next page, `--limit 0` them all",
                rows.len(),
            ),
        }
    }
    Ok(())
}
