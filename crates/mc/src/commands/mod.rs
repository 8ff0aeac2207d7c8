//! One module per subcommand; each parses nothing and decides nothing, it calls the library.

mod audit;
mod cancel;
mod completions;
mod config;
mod gc;
mod logs;
mod man;
mod plugins;
mod prune;
mod remote;
mod schema;
mod serve;
mod status;
mod submit;
mod tokens;
mod validate;

pub(crate) use plugins::plugin_dirs;

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::Arc;

use maestro_core::JobId;
use maestro_core::control::{LookupError, find_job as find_job_in};
use maestro_core::runner::{RunError, Runner, RunnerConfig, SubmitRequest};
use maestro_core::spec::{MAX_SPEC_BYTES, SpecFormat};
use maestro_core::state::{FileStore, JobRecord, StateStore};
use maestro_core::trace::TraceId;
use maestro_postgres::{PgOptions, PgStore};

use crate::cli::{Cli, Command};
use crate::exit::{Code, Failure};
use crate::registry::Lifetime;
use crate::{registry, settings};

pub(crate) fn dispatch(cli: Cli) -> Result<Code, Failure> {
    if let Some(server) = cli.global.server.as_deref().filter(|url| !url.is_empty()) {
        return remote::run(server, cli.global.ca_cert.as_deref(), cli.command);
    }
    let uses_store = matches!(
        cli.command,
        Command::Submit(_)
            | Command::Validate(_)
            | Command::Status(_)
            | Command::Logs(_)
            | Command::Cancel(_)
            | Command::Gc(_)
            | Command::Prune(_)
            | Command::Audit(_)
            | Command::Serve(_)
    );
    if uses_store {
        connect_database(&cli.global)?;
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
        Command::Audit(command) => audit::run(&cli.global, command),
        Command::Config(args) => config::run(&cli.global, args),
        Command::Schema => schema::run(),
        Command::Completions { shell } => completions::run(shell),
        Command::Man { command } => man::run(command.as_deref()),
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

/// The step names of a stored job, in the spec's order (see [`maestro_core::follow`]).
fn stored_step_names(store: &dyn StateStore, record: &JobRecord) -> Result<Vec<String>, Failure> {
    Ok(maestro_core::follow::step_names(store, record)?)
}

/// What `mc submit -` and `mc validate -` read: the spec from standard input.
pub(crate) const STDIN: &str = "-";

/// Read a spec file (or standard input, `-`) into a request: at most a little over the size
/// limit is read, so a huge or endless file (`/dev/zero`) cannot exhaust memory.
fn read_request(
    file: &Path,
    trace_id: Option<&str>,
    runtime_override: Option<String>,
) -> Result<SubmitRequest, Failure> {
    let from_stdin = file.as_os_str() == STDIN;
    let source = if from_stdin {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let cannot =
        |error: std::io::Error| Failure::usage(format!("cannot read job spec {source}: {error}"));
    let limit = MAX_SPEC_BYTES as u64 + 1;
    let mut spec_bytes = Vec::new();
    let size = if from_stdin {
        if std::io::stdin().is_terminal() {
            eprintln!("mc: reading the job spec from standard input; end it with Ctrl-D");
        }
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut spec_bytes)
            .map_err(cannot)?;
        None
    } else {
        let handle = std::fs::File::open(file).map_err(cannot)?;
        let size = handle
            .metadata()
            .ok()
            .filter(|meta| meta.is_file())
            .map(|meta| meta.len());
        handle
            .take(limit)
            .read_to_end(&mut spec_bytes)
            .map_err(cannot)?;
        size
    };
    if spec_bytes.len() > MAX_SPEC_BYTES {
        return Err(too_large(&source, size));
    }
    let inherited = std::env::var("TRACE_ID").ok();
    let trace_id = TraceId::resolve(trace_id, inherited.as_deref()).map_err(|error| {
        let origin = if trace_id.is_some() {
            "--trace-id"
        } else {
            "TRACE_ID"
        };
        Failure::usage(format!("invalid {origin}: {error}"))
    })?;
    let format = SpecFormat::detect(&file.to_string_lossy(), &spec_bytes);
    Ok(SubmitRequest {
        spec_bytes,
        source,
        format,
        trace_id,
        runtime_override,
        invocation_dir: settings::current_dir()?,
        caller_env: maestro_core::secret::CallerEnv::from_process(),
    })
}

/// A spec over the limit, with its real size when it is a file (only the first bytes past the
/// limit were read, so the count of bytes read says nothing about the size).
fn too_large(source: &str, size: Option<u64>) -> Failure {
    let limit = format!(
        "{} ({MAX_SPEC_BYTES} bytes)",
        human_size(MAX_SPEC_BYTES as u64)
    );
    let message = match size {
        Some(size) if size > MAX_SPEC_BYTES as u64 => format!(
            "{source} is {} ({size} bytes); a job spec may be at most {limit}",
            human_size(size)
        ),
        _ => format!("{source} is larger than {limit}, the most a job spec may be"),
    };
    Failure::usage(message).hint("a job spec is a few kilobytes; is this the right file?")
}

/// A size for people: `1 MiB`, `1.9 MiB`, `512 KiB`, `12 bytes`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An error of admission (`mc submit`, `mc validate`): spec errors start with the file, line and
/// column they are at.
fn admission_failure(source: &str, spec_bytes: &[u8], error: RunError) -> Failure {
    match error {
        RunError::Spec(error) => Failure::usage(error.describe(source, spec_bytes)),
        // SIGINT/SIGTERM while admission waited (on a plugin): exit 130, as for a running job.
        error @ RunError::Cancelled => Failure::new(Code::Cancelled, error),
        other => Failure::from(other),
    }
}

/// The state store at `state_root`: the one place `mc` chooses a backend; every command
/// knows only [`StateStore`].
pub(crate) fn open_store(state_root: &Path) -> Arc<dyn StateStore> {
    match DATABASE.get() {
        Some(store) => Arc::new(store.clone()),
        None => Arc::new(FileStore::new(state_root)),
    }
}

/// The PostgreSQL store, when `--state-url` (or `MAESTRO_STATE_URL`, or `state_url` in a
/// `maestro.toml`) names one: connected once per process, before the command runs, so that
/// every part of it (runner, executors' notes, server) shares its connections and leases.
static DATABASE: std::sync::OnceLock<PgStore> = std::sync::OnceLock::new();

/// The PostgreSQL store this process records into, if any.
pub(crate) fn database() -> Option<&'static PgStore> {
    DATABASE.get()
}

fn connect_database(global: &crate::cli::GlobalArgs) -> Result<(), Failure> {
    let settings = settings::resolve(global, &settings::Flags::default())?;
    let Some(url) = settings.state_url else {
        return Ok(());
    };
    let options = PgOptions {
        lease_ttl: settings.lease_ttl,
        ..PgOptions::default()
    };
    // The state root still holds tokens and plugins, and steps are kept from writing to it:
    // it exists whatever the store.
    maestro_core::root::StateRoot::new(&settings.state_root)
        .create_dir_all(Path::new(""))
        .map_err(|error| {
            Failure::system(format!(
                "cannot create the state root {}: {error}",
                settings.state_root.display()
            ))
        })?;
    let store = PgStore::connect(&url, options).map_err(|error| {
        let message = format!(
            "cannot use the database {}: {error}",
            settings::without_password(&url)
        );
        // A URL that cannot be used is the user's to fix; the rest is the database's.
        match error {
            maestro_postgres::PgError::Url(_) | maestro_postgres::PgError::Tls(_) => {
                Failure::usage(message)
            }
            _ => Failure::system(message),
        }
    })?;
    let _ = DATABASE.set(store);
    Ok(())
}

/// The state store the command line and settings name.
fn store(global: &crate::cli::GlobalArgs) -> Result<Arc<dyn StateStore>, Failure> {
    Ok(open_store(&settings::state_root(global)?))
}

/// The store, its audit log and a runner over them.
fn open_runner(state_root: &Path, config: RunnerConfig, lifetime: Lifetime) -> Runner {
    let store = open_store(state_root);
    let audit = store.audit();
    Runner::new(
        store,
        audit,
        Arc::new(registry::build(state_root, lifetime)),
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

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(12), "12 bytes");
        assert_eq!(human_size(1024 * 1024), "1 MiB");
        assert_eq!(human_size(2_000_000), "1.9 MiB");
        assert_eq!(human_size(1024 * 1024 + 1), "1.0 MiB");
    }
}
