//! `mc --server URL` (or `MAESTRO_SERVER`, with `MAESTRO_TOKEN`): submit, validate, status,
//! logs, cancel, approve and reject through a Maestro server's API instead of the local state
//! root.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::executor::Stream;
use maestro_core::output::OutputObserver;
use maestro_core::policy::PolicyReport;
use maestro_core::runner::JobReport;
use maestro_core::spec::SpecFormat;
use maestro_core::state::{JobState, StepRecord};
use maestro_core::trace::TraceId;
use maestro_server::client::{Answer, Client};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cli::{
    CancelArgs, Command, DecisionArgs, LogsArgs, OutputFormat, StatusArgs, SubmitArgs, ValidateArgs,
};
use crate::exit::{Code, Failure};
use crate::printer::{self, LivePrinter, field};

use super::status::{JobRow, JobView};
use super::submit::print_report;

pub(crate) fn run(server: &str, ca_cert: Option<&Path>, command: Command) -> Result<Code, Failure> {
    let token = std::env::var("MAESTRO_TOKEN")
        .ok()
        .filter(|token| !token.trim().is_empty());
    let trace_id = match &command {
        Command::Submit(args) => args.trace_id.clone(),
        _ => None,
    };
    let client = Client::new(server, token, ca_cert)
        .map_err(Failure::usage)?
        .with_trace_id(trace_id);
    let runtime = super::runtime()?;
    match command {
        Command::Submit(args) => runtime.block_on(submit(&client, args)),
        Command::Validate(args) => runtime.block_on(validate(&client, args)),
        Command::Status(args) => runtime.block_on(status(&client, args)),
        Command::Logs(args) => runtime.block_on(logs(&client, args)),
        Command::Cancel(args) => runtime.block_on(cancel(&client, args)),
        Command::Approve(args) => runtime.block_on(decide(&client, "approve", args)),
        Command::Reject(args) => runtime.block_on(decide(&client, "reject", args)),
        _ => Err(Failure::usage(
            "this command does not talk to a server (only submit, validate, status, logs, cancel, approve and reject do)",
        )
        .hint("drop --server, or unset MAESTRO_SERVER, to run it on the local state root")),
    }
}

/// An error answer as a failure with the exit code the local command would give.
fn failure(answer: &Answer) -> Failure {
    let message = answer.error();
    match answer.status {
        401 => Failure::usage(message)
            .hint("set MAESTRO_TOKEN to a token from `mc tokens add` on the server"),
        403 if answer.json().get("verdicts").is_some() => Failure::new(Code::Denied, message),
        404 if message.contains("was pruned") => Failure::usage(message),
        // The API's own pointer, in words for the command line.
        404 => Failure::usage(
            message
                .strip_suffix("; GET /v1/jobs lists the jobs")
                .unwrap_or(&message)
                .to_owned(),
        )
        .hint("`mc status` lists the server's jobs"),
        400 | 403 | 409 | 413 | 415 => Failure::usage(message),
        _ => Failure::system(format!("the server answered {}: {message}", answer.status)),
    }
}

fn unreachable(error: maestro_server::client::ClientError) -> Failure {
    let certificate = error
        .to_string()
        .to_ascii_lowercase()
        .contains("certificate");
    let failure = Failure::system(error);
    if certificate {
        failure.hint("the server's certificate is not trusted: MAESTRO_CA_CERT (or --ca-cert) names the PEM file of the CA that signed it")
    } else {
        failure.hint("is `mc serve` running there? MAESTRO_SERVER or --server names it")
    }
}

async fn submit(client: &Client, args: SubmitArgs) -> Result<Code, Failure> {
    if args.runtime.is_some() {
        return Err(Failure::usage("--runtime cannot be used with --server"));
    }
    let request = super::read_request(&args.file, args.trace_id.as_deref(), None)?;
    let content_type = content_type(request.format);
    // Watched from before the job exists: Ctrl-C at any moment cancels it on the server.
    let interrupted = CancellationToken::new();
    if !args.detach {
        super::submit::watch_signals(interrupted.clone())?;
    }
    let answer = client
        .request(
            "POST",
            "/v1/jobs",
            Some(content_type),
            request.spec_bytes.clone(),
        )
        .await
        .map_err(unreachable)?;
    if answer.status != 201 {
        let body = answer.json();
        // Denied by policy: the job is on record, and is reported as a local denial is.
        if answer.status == 403
            && body.get("verdicts").is_some()
            && let Some(job_id) = body["job_id"].as_str()
        {
            let job = fetch(client, job_id).await?;
            return Ok(print_report(&report_of(&job)?, args.output));
        }
        return Err(failure(&answer));
    }
    let submitted = answer.json();
    let job_id = submitted["job_id"].as_str().unwrap_or_default().to_owned();
    if args.detach {
        match args.output {
            OutputFormat::Json => printer::json(&submitted),
            OutputFormat::Text => printer::out(&format!("{job_id}\n")),
        }
        return Ok(Code::Success);
    }
    // The same live printer as a local `mc submit`: step output as it comes, then the summary.
    let live =
        (!args.quiet).then(|| Arc::new(LivePrinter::start(args.output == OutputFormat::Json)));
    if let (Some(live), Ok(job_id), Ok(trace_id)) = (
        &live,
        JobId::try_parse(&job_id),
        serde_json::from_value::<TraceId>(submitted["trace_id"].clone()),
    ) {
        live.job_stored(job_id, &trace_id);
    }
    let job = tokio::select! {
        followed = follow(client, &job_id, None, match live.as_deref() {
            Some(live) => Lines::Live(live),
            None => Lines::Nowhere,
        }) => {
            if let Err(failure) = followed {
                // The job is the server's whatever becomes of this connection (a server that
                // stops keeps it queued, or records how it ended).
                if let Some(live) = &live {
                    live.finish(Duration::from_secs(5));
                }
                return Err(failure.hint(format!(
                    "job {job_id} is on record on the server, which runs or settles it whatever becomes of this connection: `mc status {job_id}` through the server once it answers"
                )));
            }
            fetch(client, &job_id).await?
        }
        () = interrupted.cancelled() => cancel_and_wait(client, &job_id).await?,
    };
    if let Some(live) = live {
        live.finish(Duration::from_secs(5));
    }
    Ok(print_report(&report_of(&job)?, args.output))
}

/// The server's record of a job (`GET /v1/jobs/{id}`) as the report a local run gives.
fn report_of(job: &Value) -> Result<JobReport, Failure> {
    fn field<T: serde::de::DeserializeOwned>(job: &Value, name: &str) -> Result<T, Failure> {
        serde_json::from_value(job[name].clone()).map_err(|error| {
            Failure::system(format!(
                "the server's record of the job has no valid {name:?}: {error}"
            ))
        })
    }
    let last = job["transitions"]
        .as_array()
        .and_then(|transitions| transitions.last())
        .map(|last| &last["detail"]);
    let job_id: String = field(job, "job_id")?;
    Ok(JobReport {
        job_id: JobId::try_parse(&job_id).map_err(|error| {
            Failure::system(format!(
                "the server answered a bad job id {job_id:?}: {error}"
            ))
        })?,
        state: field(job, "state")?,
        trace_id: field(job, "trace_id")?,
        // `null` before policy decided.
        policies: PolicyReport {
            verdicts: field::<Option<_>>(job, "verdicts")?.unwrap_or_default(),
        },
        steps: field(job, "steps")?,
        failure: last.and_then(|detail| serde_json::from_value(detail["failure"].clone()).ok()),
        error: last.and_then(|detail| detail["error"].as_str().map(str::to_owned)),
    })
}

fn content_type(format: SpecFormat) -> &'static str {
    match format {
        SpecFormat::Json => "application/json",
        SpecFormat::Yaml => "application/yaml",
    }
}

/// A request without a body that must be answered `200`; the answer.
async fn ok(client: &Client, method: &str, path: &str) -> Result<Answer, Failure> {
    let answer = client
        .request(method, path, None, Vec::new())
        .await
        .map_err(unreachable)?;
    if answer.status != 200 {
        return Err(failure(&answer));
    }
    Ok(answer)
}

/// A job's record on the server.
async fn fetch(client: &Client, job_id: &str) -> Result<Value, Failure> {
    Ok(ok(client, "GET", &format!("/v1/jobs/{job_id}"))
        .await?
        .json())
}

/// Ctrl-C while following: cancel the job on the server (as a local Ctrl-C stops the local
/// job) and wait until it has ended; its record.
async fn cancel_and_wait(client: &Client, job_id: &str) -> Result<Value, Failure> {
    ok(client, "POST", &format!("/v1/jobs/{job_id}/cancel")).await?;
    // The server answers once the job is recorded, or after its own bound; then poll.
    loop {
        let job = fetch(client, job_id).await?;
        let ended = !matches!(
            job["state"].as_str(),
            Some("SUBMITTED" | "RUNNING" | "AWAITING_APPROVAL")
        );
        if ended {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `mc validate` through the server: every check it would make on submission, as it would
/// make them for this token's identity.
async fn validate(client: &Client, args: ValidateArgs) -> Result<Code, Failure> {
    if args.runtime.is_some() {
        return Err(Failure::usage("--runtime cannot be used with --server"));
    }
    let request = super::read_request(&args.file, None, None)?;
    let answer = client
        .request_with_headers(
            "POST",
            "/v1/validate",
            &[("x-spec-source", request.source.as_str())],
            Some(content_type(request.format)),
            request.spec_bytes.clone(),
        )
        .await
        .map_err(unreachable)?;
    if answer.status != 200 {
        return Err(failure(&answer));
    }
    let body = answer.json();
    let allowed = body["allowed"] == true;
    let awaits_approval = body["awaits_approval"] == true;
    match args.output {
        OutputFormat::Json => printer::json(&json!({
            "name": body["name"],
            "allowed": allowed,
            "awaits_approval": awaits_approval,
            "policies": body["policies"],
        })),
        OutputFormat::Text => {
            let mut text = String::new();
            let text_of =
                |value: &Value| value.as_str().map(field).unwrap_or_else(|| "-".to_owned());
            for verdict in body["policies"].as_array().into_iter().flatten() {
                let policy = text_of(&verdict["policy"]);
                if verdict["allowed"] == true {
                    text.push_str(&format!("allowed  {policy}\n"));
                }
                for reason in verdict["reasons"].as_array().into_iter().flatten() {
                    text.push_str(&format!("denied   {policy}: {}\n", text_of(reason)));
                }
                for note in verdict["notes"].as_array().into_iter().flatten() {
                    text.push_str(&format!("note     {policy}: {}\n", text_of(note)));
                }
            }
            let name = body["name"].as_str().unwrap_or_default();
            text.push_str(&match (allowed, awaits_approval) {
                (true, true) => format!(
                    "job {name:?} would be allowed, then await approval by another identity (mc approve)\n"
                ),
                (true, false) => format!("job {name:?} would be allowed\n"),
                (false, _) => format!("job {name:?} would be denied\n"),
            });
            printer::out(&text);
        }
    }
    Ok(if allowed { Code::Success } else { Code::Denied })
}

/// Where a followed job's log lines go.
enum Lines<'a> {
    /// Output lines to the live printer, as a local run hands them over (`mc submit`).
    Live(&'a LivePrinter),
    /// Every line as recorded, printed as `mc logs` prints them (`mc logs --follow`).
    Recorded(&'a std::sync::Mutex<super::logs::Recorded>),
    /// Nowhere (`mc submit --quiet`): only the job's end matters.
    Nowhere,
}

/// Follow a job's log until the job ends, its lines (only `step`'s, if given) going to `lines`;
/// the state the stream ended with (`{"end": true, "state": ...}`), if it said.
async fn follow(
    client: &Client,
    job_id: &str,
    step: Option<&str>,
    lines: Lines<'_>,
) -> Result<Option<JobState>, Failure> {
    // Recorded lines go to stdout as they are read, so a reader that stops reading stops the
    // response too. The live view's entries go through a channel to the loop below, which may
    // wait for the server (a step's result) without holding the response up; the live
    // printer drops what a terminal cannot take.
    let live = match lines {
        Lines::Live(live) => Some(live),
        Lines::Recorded(_) | Lines::Nowhere => None,
    };
    let (sender, mut entries) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let streamed = async move {
        let mut pending = Vec::new();
        let mut printed = Ok(());
        let mut ended = None;
        let streamed = client
            .stream(&format!("/v1/jobs/{job_id}/logs?follow=true"), |chunk| {
                pending.extend_from_slice(chunk);
                while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let Ok(entry) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    if entry["end"] == true {
                        ended = serde_json::from_value::<JobState>(entry["state"].clone()).ok();
                        continue;
                    }
                    if step.is_some_and(|step| entry["step"] != step) {
                        continue;
                    }
                    match lines {
                        Lines::Live(_) => {
                            let _ = sender.send(entry);
                        }
                        Lines::Recorded(recorded) => {
                            if let (Some(step), Some(text), Ok(())) =
                                (entry["step"].as_str(), entry["line"].as_str(), &printed)
                            {
                                printed = recorded
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .line(step, text);
                            }
                        }
                        Lines::Nowhere => {}
                    }
                }
            })
            .await;
        (streamed, printed, ended)
    };
    let shown = async {
        while let Some(entry) = entries.recv().await {
            if let Some(live) = live {
                show_live(client, job_id, live, &entry).await;
            }
        }
    };
    let ((status, printed, ended), ()) = tokio::join!(streamed, shown);
    printed?;
    let status = status.map_err(unreachable)?;
    if status != 200 {
        return Err(Failure::system(format!(
            "the server answered {status} to the log request"
        )));
    }
    Ok(ended)
}

/// One line of a followed log, as a local run shows it: output lines to the live printer and,
/// in the terminal view, each step's start (from its log's header) and its end (the step's
/// result, fetched once its log's footer arrives).
async fn show_live(client: &Client, job_id: &str, live: &LivePrinter, entry: &Value) {
    let Some(name) = entry["step"].as_str() else {
        return;
    };
    if let (Ok(stream), Some(text)) = (
        serde_json::from_value::<Stream>(entry["stream"].clone()),
        entry["text"].as_str(),
    ) {
        live.output(name, stream, format!("{text}\n").as_bytes());
        return;
    }
    if !live.is_view() {
        return;
    }
    let Some(note) = entry["line"]
        .as_str()
        .and_then(|line| line.strip_prefix("# maestro "))
    else {
        return;
    };
    if note.starts_with("job_id=") {
        let runtime = note
            .split_whitespace()
            .find_map(|word| word.strip_prefix("runtime="))
            .unwrap_or("-");
        live.step_started(name, runtime);
    } else if note.starts_with("step=") {
        // The footer is written before the result is recorded: wait a little for it.
        for _ in 0..100 {
            let record = fetch(client, job_id).await.ok().and_then(|job| {
                let steps: Vec<StepRecord> = serde_json::from_value(job["steps"].clone()).ok()?;
                steps.into_iter().find(|step| step.name == name)
            });
            if let Some(record) = record {
                live.step_finished(&record);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn status(client: &Client, args: StatusArgs) -> Result<Code, Failure> {
    loop {
        if args.watch {
            printer::clear_screen();
        }
        let running = match &args.job_id {
            Some(job_id) => {
                let view: JobView = decode(fetch(client, job_id).await?, "job")?;
                view.print(args.output);
                view.running()
            }
            None => {
                list(client, &args).await?;
                true
            }
        };
        if !args.watch || !running {
            return Ok(Code::Success);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A server's answer as `T`, or a line saying what it lacks.
fn decode<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, Failure> {
    serde_json::from_value(value).map_err(|error| {
        Failure::system(format!(
            "the server's answer is not a {what} this mc understands ({error}); are mc and the server the same version?"
        ))
    })
}

/// `mc status` against a server: pages (short ones too: a server looks at a bounded number of
/// jobs per page) until `--limit` jobs are shown or the listing ends, printed as a local listing.
async fn list(client: &Client, args: &StatusArgs) -> Result<(), Failure> {
    let mut filters = Vec::new();
    if !args.state.is_empty() {
        filters.push(format!("state={}", encode(&args.state.join(","))));
    }
    for (name, value) in [
        ("owner", &args.owner),
        ("environment", &args.environment),
        ("since", &args.since),
    ] {
        if let Some(value) = value {
            filters.push(format!("{name}={}", encode(value)));
        }
    }
    let mut rows: Vec<JobRow> = Vec::new();
    let mut unreadable: Vec<(String, String)> = Vec::new();
    let mut cursor = args.before.clone();
    let (next, total) = loop {
        let wanted = match args.limit {
            0 => 500,
            limit => (limit - rows.len()).clamp(1, 500),
        };
        let mut query = filters.clone();
        query.push(format!("limit={wanted}"));
        if let Some(cursor) = &cursor {
            query.push(format!("cursor={}", encode(cursor)));
        }
        let answer = ok(client, "GET", &format!("/v1/jobs?{}", query.join("&"))).await?;
        let mut body = answer.json();
        let page: Vec<JobRow> = decode(body["jobs"].take(), "job listing")?;
        for job in body["unreadable"].as_array().into_iter().flatten() {
            unreadable.push((
                job["job_id"].as_str().unwrap_or("?").to_owned(),
                job["error"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        let shown_before = rows.len();
        rows.extend(page);
        let next: Option<String> = decode(body["next_cursor"].take(), "job listing")?;
        let total: Option<usize> = decode(body["total"].take(), "job listing")?;
        let full = args.limit != 0 && rows.len() >= args.limit;
        match next {
            Some(next) if !full => cursor = Some(next),
            next => break (next, total.map(|total| total + shown_before)),
        }
    };
    let next = next
        .map(|next| {
            JobId::try_parse(&next)
                .map_err(|_| Failure::system(format!("the server answered a bad cursor {next:?}")))
        })
        .transpose()?;
    super::status::print_list(&rows, next, total, args.output);
    super::status::fail_for_unreadable(&unreadable)
}

/// Percent-encode a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

async fn logs(client: &Client, args: LogsArgs) -> Result<Code, Failure> {
    let job = fetch(client, &args.job_id).await?;
    if let Some(step) = &args.step {
        // The job's steps: those its record names (a result, or the one running). A job that
        // ran has a result for every step once it has ended (those after a failure skipped);
        // before that, or for one that never ran, a step is taken on trust.
        let known: Vec<&str> = job["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(job.get("current_step"))
            .filter_map(|step| step["name"].as_str())
            .collect();
        let ended = report_of(&job)?.state.is_terminal();
        if ended && !known.is_empty() && !known.contains(&step.as_str()) {
            return Err(Failure::usage(format!(
                "job {} has no step {step:?}",
                job["job_id"].as_str().unwrap_or(&args.job_id)
            ))
            .hint(format!("its steps are: {}", known.join(", "))));
        }
    }
    let recorded = std::sync::Mutex::new(super::logs::Recorded::new(&args));
    if args.follow {
        let ended = follow(
            client,
            &args.job_id,
            args.step.as_deref(),
            Lines::Recorded(&recorded),
        )
        .await
        .map_err(|failure| {
            // The server went (it stops, or the connection broke): the job goes on where it
            // runs, and its log can be followed again from where this one stopped.
            failure.hint(format!(
                "the job goes on; follow it again through a server that answers: `mc logs {} --follow --since-seq N` (N: the last line number shown, per step)",
                args.job_id
            ))
        })?;
        recorded
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .finish()?;
        // Followed to its end: exit as `mc submit` of the job did, as a local follow does. A
        // server that stops right after (it drains) may not answer any more: the end the
        // stream gave is the job's state.
        let report = match (fetch(client, &args.job_id).await, ended) {
            (Ok(job), _) => report_of(&job)?,
            (Err(_), Some(state)) if state.is_terminal() => {
                return Ok(Code::for_job(state, None));
            }
            (Err(failure), _) => return Err(failure),
        };
        if !report.state.is_terminal() {
            eprintln!(
                "mc: job {} is {} and its log ended: the server no longer drives it",
                report.job_id, report.state
            );
        }
        return Ok(Code::for_job(report.state, report.failure));
    }
    let answer = ok(client, "GET", &format!("/v1/jobs/{}/logs", args.job_id)).await?;
    let mut recorded = recorded
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for line in answer.body.split(|&byte| byte == b'\n') {
        let Ok(entry) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if args
            .step
            .as_deref()
            .is_some_and(|step| entry["step"] != step)
        {
            continue;
        }
        if let (Some(step), Some(line)) = (entry["step"].as_str(), entry["line"].as_str()) {
            recorded.line(step, line)?;
        }
    }
    recorded.finish()?;
    Ok(Code::Success)
}

async fn cancel(client: &Client, args: CancelArgs) -> Result<Code, Failure> {
    let answer = ok(client, "POST", &format!("/v1/jobs/{}/cancel", args.job_id)).await?;
    let body = answer.json();
    match args.output {
        OutputFormat::Json => printer::json(&body),
        OutputFormat::Text => printer::out(&format!(
            "{}\n",
            body["message"].as_str().unwrap_or_default()
        )),
    }
    Ok(Code::Success)
}

async fn decide(client: &Client, verb: &str, args: DecisionArgs) -> Result<Code, Failure> {
    let body = serde_json::to_vec(&json!({ "reason": args.reason })).unwrap_or_default();
    let answer = client
        .request(
            "POST",
            &format!("/v1/jobs/{}/{verb}", args.job_id),
            Some("application/json"),
            body,
        )
        .await
        .map_err(unreachable)?;
    if answer.status != 200 {
        return Err(failure(&answer));
    }
    let body = answer.json();
    match args.output {
        OutputFormat::Json => printer::json(&body),
        OutputFormat::Text => printer::out(&format!(
            "{}\n",
            body["message"].as_str().unwrap_or_default()
        )),
    }
    Ok(Code::Success)
}
