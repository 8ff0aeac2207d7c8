//! The command line's shape: clap types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Maestro: run jobs safely — policy before anything runs, every state change on record.
#[derive(Debug, Parser)]
#[command(name = "mc", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// State root (default: var/maestro in the current directory)
    #[arg(long, global = true, env = "MAESTRO_HOME", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Diagnostics on stderr: -v info, -vv debug (MAESTRO_LOG takes a tracing filter)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Submit a job and run it in the foreground
    Submit(SubmitArgs),
    /// Parse, validate and evaluate every policy; store and run nothing
    Validate(ValidateArgs),
    /// Show one job, or list jobs newest first
    Status(StatusArgs),
    /// Print a job's recorded output
    Logs(LogsArgs),
    /// Record jobs abandoned by a killed mc as failed and remove what they left behind
    Gc(GcArgs),
    /// Executor plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Timeout of steps that give none, in seconds
    #[arg(
        long,
        env = "MAESTRO_DEFAULT_STEP_TIMEOUT",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub(crate) default_step_timeout: u64,
    /// Largest step timeout max-step-timeout allows, in seconds
    #[arg(
        long,
        env = "MAESTRO_MAX_STEP_TIMEOUT",
        default_value_t = 3600,
        value_name = "SECONDS"
    )]
    pub(crate) max_step_timeout: u64,
    /// Hidden host resources a sandboxed step may ask for with host_access (comma separated, or
    /// `none`); every one but docker-socket by default
    #[arg(long, env = "MAESTRO_ALLOWED_HOST_ACCESS", value_name = "NAMES")]
    pub(crate) allowed_host_access: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The job spec (JSON, or YAML when it ends in .yaml/.yml)
    pub(crate) file: PathBuf,
    /// Runtime for steps that name none
    #[arg(long, value_name = "NAME")]
    pub(crate) runtime: Option<String>,
    /// Trace id (default: $TRACE_ID, else a new one)
    #[arg(long, value_name = "ID")]
    pub(crate) trace_id: Option<String>,
    /// Output format; json prints exactly one object on stdout at the end
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
    /// Do not stream step output live (it is still recorded)
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Seconds a stopped step gets to exit before it is killed
    #[arg(
        long,
        env = "MAESTRO_STOP_GRACE",
        default_value_t = 5.0,
        value_name = "SECONDS"
    )]
    pub(crate) stop_grace: f64,
    /// Most output recorded per step (bytes, or 512k, 64m, 1g); the rest is dropped and the log says how much
    #[arg(
        long,
        env = "MAESTRO_MAX_STEP_OUTPUT",
        default_value = "256m",
        value_name = "SIZE"
    )]
    pub(crate) max_step_output: String,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The job spec
    pub(crate) file: PathBuf,
    /// Runtime for steps that name none
    #[arg(long, value_name = "NAME")]
    pub(crate) runtime: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The job's id (omit to list jobs)
    pub(crate) job_id: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
    /// How many jobs to list
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The job's id
    pub(crate) job_id: String,
    /// Only this step
    #[arg(long, value_name = "NAME")]
    pub(crate) step: Option<String>,
    /// Keep printing until the job ends
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Only output lines numbered above N (each step numbers its lines from 1), and the notes
    /// after them: resume where an earlier read stopped
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) since_seq: u64,
}

#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PluginsCommand {
    /// List every executor plugin found, with warnings about unusable ones
    List {
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Run the conformance kit against a plugin (a path or a runtime name)
    Check {
        /// Path to an executable, or the runtime name of a discovered plugin
        plugin: String,
        /// The `with` object (JSON) handed to every task, for plugins that need settings
        #[arg(long, value_name = "JSON")]
        with: Option<String>,
    },
}
