//! `mc status`: one job's record, or the list of jobs.

use std::time::Duration;

use maestro_core::JobId;
use maestro_core::progress::{self, JobFilter};
use maestro_core::runner::{describe, status_name};
use maestro_core::state::{
    JobRecord, JobState, PageQuery, StateStore, StepRecord, StepStatus, Transition,
};
use maestro_core::trace::TraceId;
use serde::Deserialize;
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

/// One job as `mc status ID` shows it: read from a local store, or a server's
/// `GET /v1/jobs/{id}` (whose fields it is named after), so that both print the same.
#[derive(Debug, Deserialize)]
pub(crate) struct JobView {
    /// What a listing shows of it.
    #[serde(flatten)]
    row: JobRow,
    trace_id: TraceId,
    source: String,
    spec_file: String,
    current_step: Option<progress::CurrentStep>,
    verdicts: Value,
    transitions: Vec<Transition>,
    steps: Vec<StepRecord>,
}

impl JobView {
    fn of_record(store: &dyn StateStore, record: JobRecord) -> Result<Self, Failure> {
        let stale = store.is_abandoned(&record)?;
        let current_step = if record.state().is_terminal() {
            None
        } else {
            progress::current_step(store, &record, &super::stored_step_names(store, &record)?)
        };
        Ok(Self {
            row: JobRow::of_record(&record, stale),
            verdicts: progress::verdicts(&record),
            current_step,
            trace_id: record.meta.trace_id,
            source: record.meta.source,
            spec_file: record.meta.spec_file,
            transitions: record.transitions,
            steps: record.steps,
        })
    }

    /// Whether a watch goes on: the job is neither over nor stale.
    pub(crate) fn running(&self) -> bool {
        !self.row.state.is_terminal() && !self.row.stale
    }

    pub(crate) fn print(&self, output: OutputFormat) {
        match output {
            OutputFormat::Json => printer::json(&json!({
                "job_id": self.row.job_id,
                "name": self.row.name,
                "owner": self.row.owner,
                "environment": self.row.environment,
                "state": self.row.state,
                "stale": self.row.stale,
                "trace_id": self.trace_id,
                "submitted_at": self.row.submitted_at,
                "duration_seconds": self.row.duration_seconds,
                "current_step": self.current_step,
                "policies": self.verdicts,
                "transitions": self.transitions,
                "steps": self.steps,
            })),
            OutputFormat::Text => printer::out(&self.text()),
        }
    }

    fn text(&self) -> String {
        let row = &self.row;
        let mut text = format!(
            "job       {}\nname      {}\nowner     {}\nenv       {}\nstate     {}{}\ntrace_id  {}\nspec      {} (stored as {})\n",
            row.job_id,
            field(&row.name),
            field(row.owner.as_deref().unwrap_or("-")),
            field(row.environment.as_deref().unwrap_or("-")),
            row.state,
            if row.stale {
                " (stale: no live mc drives it; run `mc gc`)"
            } else {
                ""
            },
            self.trace_id,
            field(&self.source),
            field(&self.spec_file),
        );
        if let Some(duration) = seconds(row.duration_seconds) {
            text.push_str(&format!("duration  {}\n", human(duration)));
        }
        if let Some(current) = &self.current_step {
            text.push_str(&format!(
                "running   step {} ({}) for {}\n",
                field(&current.name),
                field(&current.runtime),
                human(seconds(Some(current.elapsed_seconds)).unwrap_or_default())
            ));
        }
        if let Value::Array(verdicts) = &self.verdicts {
            text.push_str("policies:\n");
            for verdict in verdicts {
                let name = verdict["policy"].as_str().unwrap_or("?");
                if verdict["allowed"].as_bool() == Some(true) {
                    text.push_str(&format!("  allowed  {}\n", field(name)));
                }
                for reason in verdict["reasons"].as_array().into_iter().flatten() {
                    text.push_str(&format!(
                        "  denied   {}: {}\n",
                        field(name),
                        field(reason.as_str().unwrap_or(""))
                    ));
                }
                for note in verdict["notes"].as_array().into_iter().flatten() {
                    text.push_str(&format!(
                        "  note     {}: {}\n",
                        field(name),
                        field(note.as_str().unwrap_or(""))
                    ));
                }
            }
        }
        text.push_str("transitions:\n");
        for transition in &self.transitions {
            let error = transition.detail.get("error").and_then(Value::as_str);
            text.push_str(&format!(
                "  {}  {:<10}{}\n",
                transition.at,
                transition.state.as_str(),
                error.map(|e| format!("  {}", field(e))).unwrap_or_default()
            ));
        }
        if !self.steps.is_empty() {
            text.push_str("steps:\n");
            for step in &self.steps {
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
}

/// A duration in seconds as recorded (`None`, or not a valid duration: none).
fn seconds(value: Option<f64>) -> Option<Duration> {
    value.and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
}

/// Prints one job; true while it is still running.
fn show(store: &dyn StateStore, job_id: JobId, output: OutputFormat) -> Result<bool, Failure> {
    let view = JobView::of_record(store, store.load(job_id)?)?;
    view.print(output);
    Ok(view.running())
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
        max_examined: 0,
    })?;
    let mut rows = Vec::with_capacity(page.jobs.len());
    for record in &page.jobs {
        rows.push(JobRow::of_record(record, store.is_abandoned(record)?));
    }
    // A truncated listing without a filter says how many jobs there are, counted by the
    // store (from its index; no job is read); with a filter, counting would read every older
    // job, so the note only points at the next page.
    let matching = match page.next_cursor {
        Some(cursor) if filter.is_empty() => Some(rows.len() + store.count_older(cursor)?),
        Some(_) | None => None,
    };
    print_list(&rows, page.next_cursor, matching, output);
    let unreadable: Vec<(String, String)> = page
        .unreadable
        .iter()
        .map(|(job_id, error)| (job_id.to_string(), error.clone()))
        .collect();
    fail_for_unreadable(&unreadable)
}

/// Jobs a listing could not read (`(job id, why)`): left out, never misread, and not hidden:
/// each is said on stderr, and the listing fails.
pub(crate) fn fail_for_unreadable(unreadable: &[(String, String)]) -> Result<(), Failure> {
    let Some((first, _)) = unreadable.first() else {
        return Ok(());
    };
    for (job_id, error) in unreadable {
        eprintln!("mc: job {job_id} is not listed: {error}");
    }
    Err(Failure::system(format!(
        "{} job{} of this listing could not be read (job {first} first)",
        unreadable.len(),
        if unreadable.len() == 1 { "" } else { "s" }
    ))
    .hint("`mc status ID` and `mc audit verify` say what is wrong with each"))
}

/// One job of a listing, from a local store or a server's `GET /v1/jobs`.
#[derive(Debug, Deserialize)]
pub(crate) struct JobRow {
    job_id: JobId,
    name: String,
    owner: Option<String>,
    environment: Option<String>,
    state: JobState,
    stale: bool,
    submitted_at: String,
    duration_seconds: Option<f64>,
}

impl JobRow {
    fn of_record(record: &JobRecord, stale: bool) -> Self {
        Self {
            job_id: record.meta.job_id,
            name: record.meta.name.clone(),
            owner: record.meta.owner.clone(),
            environment: record.meta.environment.clone(),
            state: record.state(),
            stale,
            submitted_at: record.meta.submitted_at.clone(),
            duration_seconds: progress::duration_seconds(record),
        }
    }
}

/// Prints a listing, then (on stderr) where it goes on when `next` says it does; `matching`
/// is how many jobs the whole listing holds, when known.
pub(crate) fn print_list(
    rows: &[JobRow],
    next: Option<JobId>,
    matching: Option<usize>,
    output: OutputFormat,
) {
    match output {
        OutputFormat::Json => printer::json(
            &rows
                .iter()
                .map(|row| {
                    json!({
                        "job_id": row.job_id,
                        "name": row.name,
                        "owner": row.owner,
                        "environment": row.environment,
                        "state": row.state,
                        "stale": row.stale,
                        "submitted_at": row.submitted_at,
                        "duration_seconds": row.duration_seconds,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Text => {
            // As wide as the longest state shown (`AWAITING_APPROVAL` is 17), 10 at least.
            let state = rows
                .iter()
                .map(|row| row.state.as_str().len())
                .max()
                .unwrap_or(0)
                .max(10);
            let mut text = format!(
                "{:<36}  {:<state$} {:<24} {:<12} {:<10} {:<27} {}\n",
                "JOB ID", "STATE", "NAME", "OWNER", "ENV", "SUBMITTED", "DURATION"
            );
            for row in rows {
                text.push_str(&format!(
                    "{}  {:<state$} {:<24} {:<12} {:<10} {:<27} {}{}\n",
                    row.job_id,
                    row.state.as_str(),
                    field(&row.name),
                    field(row.owner.as_deref().unwrap_or("-")),
                    field(row.environment.as_deref().unwrap_or("-")),
                    field(&row.submitted_at),
                    seconds(row.duration_seconds).map_or_else(|| "-".to_owned(), human),
                    if row.stale {
                        "  (stale: run `mc gc`)"
                    } else {
                        ""
                    }
                ));
            }
            printer::out(&text);
        }
    }
    if let Some(next) = next {
        match matching {
            Some(matching) => eprintln!(
                "note: showing the newest {} of {matching} jobs; `--limit {matching}` (or 0) shows them all, `--before {next}` the next page",
                rows.len(),
            ),
            None => eprintln!(
                "note: showing the newest {} matching jobs; `--before {next}` shows the next page, `--limit 0` them all",
                rows.len(),
            ),
        }
    }
}
