//! One module per subcommand; each parses nothing and decides nothing, it calls the library.

mod gc;
mod logs;
mod plugins;
mod status;
mod submit;
mod validate;

pub(crate) use plugins::plugin_dirs;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use maestro_core::JobId;
use maestro_core::audit::AuditLog;
use maestro_core::runner::{Runner, RunnerConfig, SubmitRequest};
use maestro_core::spec::{MAX_SPEC_BYTES, SpecFormat};
use maestro_core::state::FileStore;
use maestro_core::trace::TraceId;

use crate::cli::{Cli, Command};
use crate::exit::{Code, Failure};
use crate::{registry, settings};

pub(crate) fn dispatch(cli: Cli) -> Result<Code, Failure> {
    match cli.command {
        Command::Submit(args) => submit::run(&cli.global, args),
        Command::Validate(args) => validate::run(&cli.global, args),
        Command::Status(args) => status::run(&cli.global, args),
        Command::Logs(args) => logs::run(&cli.global, args),
        Command::Gc(args) => gc::run(&cli.global, args),
        Command::Plugins(command) => plugins::run(&cli.global, command),
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

/// A job id from the command line. It is parsed as a UUID and only the parsed value is ever
/// turned back into a path, so `../../etc` can never name a file.
fn parse_job_id(text: &str) -> Result<JobId, Failure> {
    JobId::try_parse(text).map_err(|_| {
        let shown: String = text.chars().take(80).collect();
        Failure::usage(format!("{shown:?} is not a job id"))
            .hint("job ids are UUIDs such as 0192f0c1-aaaa-7bbb-8ccc-123456789abc; `mc status` lists them")
    })
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
        caller_env: maestro_core::secret::CallerEnv::from_process(),
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
