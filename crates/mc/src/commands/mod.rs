//! One module per subcommand; each parses nothing and decides nothing, it calls the library.

mod cancel;
mod gc;
mod logs;
mod plugins;
mod prune;
mod remote;
mod serve;
mod status;
mod submit;
mod tokens;
mod validate;

pub(crate) use plugins::plugin_dirs;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use maestro_core::JobId;
use maestro_core::audit::AuditLog;
use maestro_core::control::{LookupError, find_job as find_job_in};
use maestro_core::runner::{Runner, RunnerConfig, SubmitRequest};
use maestro_core::spec::{MAX_SPEC_BYTES, SpecFormat};
use maestro_core::state::{FileStore, JobRecord, StateStore};
use maestro_core::trace::TraceId;

use crate::cli::{Cli, Command};
use crate::exit::{Code, Failure};
use crate::{registry, settings};

pub(crate) fn dispatch(cli: Cli) -> Result<Code, Failure> {
    if let Some(server) = cli.global.server.as_deref().filter(|url| !url.is_empty()) {
        return remote::run(server, cli.command);
    }
    match cli.command {
        Command::Submit(args) => submit::run(&cli.global, args),
        Command::Validate(args) => validate::run(&cli.global, args),
        Command::Status(args) => status::run(&cli.global, args),
        Command::Logs(args) => logs::run(&cli.global, args),
        Command::Cancel(args) => cancel::run(&cli.global, args),
        Command::Gc(args) => gc::run(&cli.global, args),
        Command::Prune(args) => prune::run(&cli.global, args),
        Command::Plugins(command) => plugins::run(&cli.global, command),
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::Tokens(command) => tokens::run(&cli.global, command),
        Command::Approve(_) | Command::Reject(_) => Err(Failure::usage(
            "approvals are given through the server that holds the job: pass --server URL (or set MAESTRO_SERVER) and MAESTRO_TOKEN",
        )),
    }
}

/// A tokio runtime for one command. One thread: a job's work is sequential, and reading a
/// step's output on the thread that records it avoids a cross-thread wake-up per chunk.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::system(format!("cannot start the async runtime: {error}")))
}

/// The job a command-line argument names: a whole id or an unambiguous prefix (see
/// [`maestro_core::control::find_job`]); only the parsed id is ever turned into a path.
fn find_job(store: &dyn StateStore, text: &str) -> Result<JobId, Failure> {
    find_job_in(store, text).map_err(|error| match error {
        LookupError::Store(error) => Failure::from(error),
        LookupError::NoMatch { .. } => Failure::usage(error).hint("`mc status` lists the jobs"),
        LookupError::NotAJobId { .. } => Failure::usage(error).hint(
            "job ids are UUIDs such as 0192f0c1-aaaa-7bbb-8ccc-123456789abc, or a prefix of one; `mc status` lists them",
        ),
        LookupError::Ambiguous { .. } => Failure::usage(error),
    })
}

/// The step names of a stored job, in the spec's order: the stored spec is the authority on
/// which steps exist.
fn stored_step_names(store: &FileStore, record: &JobRecord) -> Result<Vec<String>, Failure> {
    let job_id = record.meta.job_id;
    let spec_path = store.job_dir(job_id).join(&record.meta.spec_file);
    let spec_bytes = std::fs::read(&spec_path).map_err(|error| {
        Failure::system(format!("cannot read {}: {error}", spec_path.display()))
    })?;
    let spec = maestro_core::spec::parse(
        &spec_bytes,
        SpecFormat::from_file_name(&record.meta.spec_file),
    )
    .map_err(|error| {
        Failure::system(format!(
            "stored spec of job {job_id} no longer parses: {error}"
        ))
    })?;
    Ok(spec.steps.into_iter().map(|step| step.name).collect())
}

/// Read a spec file into a request: at most a little over the size limit is read, so a huge or
/// endless file (`/dev/zero`) cannot exhaust memory.
fn read_request(
    file: &Path,
    trace_id: Option<&str>,
    runtime_override: Option<String>,
) -> Result<SubmitRequest, Failure> {
    let cannot = |error: std::io::Error| {
        Failure::usage(format!("cannot read job spec {}: {error}", file.display()))
    };
    let handle = std::fs::File::open(file).map_err(cannot)?;
    let mut spec_bytes = Vec::new();
    handle
        .take(MAX_SPEC_BYTES as u64 + 1)
        .read_to_end(&mut spec_bytes)
        .map_err(cannot)?;
    let inherited = std::env::var("TRACE_ID").ok();
    let trace_id = TraceId::resolve(trace_id, inherited.as_deref()).map_err(|error| {
        let origin = if trace_id.is_some() {
            "--trace-id"
        } else {
            "TRACE_ID"
        };
        Failure::usage(format!("invalid {origin}: {error}"))
    })?;
    Ok(SubmitRequest {
        spec_bytes,
        source: file.display().to_string(),
        format: SpecFormat::from_file_name(&file.to_string_lossy()),
        trace_id,
        runtime_override,
        invocation_dir: settings::current_dir()?,
    })
}

/// The store, the audit log and a runner over them.
fn open_runner(state_root: &Path, config: RunnerConfig) -> Runner {
    Runner::new(
        Arc::new(FileStore::new(state_root)),
        AuditLog::new(state_root),
        Arc::new(registry::build(state_root)),
        config,
    )
}

/// Who asks, for the audit record: the account of this process's real uid, as the kernel and
/// `/etc/passwd` say (not `$USER`, which the caller sets).
pub(crate) fn who() -> String {
    let uid = rustix::process::getuid().as_raw();
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        });
    match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}
