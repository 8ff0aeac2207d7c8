//! The command line's shape: clap types only.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Maestro runs jobs safely: policy before anything runs, every state change on record
#[derive(Debug, Parser)]
#[command(
    name = "mc",
    version,
    after_help = "Examples:
  mc submit examples/hello.yaml
  mc status"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// State root, relative to the current directory
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Talk to a Maestro server (http://HOST:PORT or https://HOST:PORT) instead of the local
    /// state root; the token comes from MAESTRO_TOKEN. submit, validate, status, logs, cancel,
    /// approve and reject
    #[arg(long, global = true, env = "MAESTRO_SERVER", value_name = "URL")]
    pub(crate) server: Option<String>,
    /// With an https --server: trust the CA certificates of this PEM file (default: the
    /// system's)
    #[arg(long, global = true, env = "MAESTRO_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Record jobs in this PostgreSQL database instead of the state root's files
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) state_url: Option<String>,
    /// With --state-url: seconds a job's lease outlives its holder
    #[arg(long, global = true, value_name = "SECONDS")]
    pub(crate) lease_ttl: Option<String>,
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
    /// Stop a running job from another terminal, as Ctrl-C in its own would
    Cancel(CancelArgs),
    /// Record jobs abandoned by a killed mc as failed and remove what they left behind
    Gc(GcArgs),
    /// Remove old jobs' records and logs (never running ones); the audit log keeps them
    Prune(PruneArgs),
    /// Executor plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// The audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show every setting's effective value and where it came from
    Config(ConfigArgs),
    /// Print the JSON Schema of a job spec (for editors; also in docs/job-spec.schema.json)
    #[command(after_help = "Examples:
  mc schema > job-spec.schema.json")]
    Schema,
    /// Print a shell completion script
    #[command(after_help = "Examples:
  mc completions bash > ~/.local/share/bash-completion/completions/mc
  mc completions zsh > ~/.zfunc/_mc
  mc completions fish > ~/.config/fish/completions/mc.fish")]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of mc or of one of its commands
    #[command(after_help = "Examples:
  mc man | man -l -
  mc man submit > mc-submit.1")]
    Man {
        /// A command, e.g. submit (default: mc itself)
        command: Option<String>,
    },
    /// Serve the HTTP API: a durable queue, approvals, jobs that outlive their client
    Serve(ServeArgs),
    /// The server's bearer tokens: identities and roles
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Approve a job awaiting approval on a server (never one's own); needs --server
    Approve(DecisionArgs),
    /// Reject a job awaiting approval on a server: it ends DENIED; needs --server
    Reject(DecisionArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the audit log's hash chain and check every job's history against it; prints the
    /// head hash when intact (exit 0), the first tampered record otherwise (exit 1)
    Verify {
        /// A head hash printed by an earlier verification and kept elsewhere: the log must
        /// still contain it
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mc config
  MAESTRO_STOP_GRACE=10 mc config --output json")]
pub(crate) struct ConfigArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

/// The policy settings a command can be given; unset ones come from the environment,
/// `maestro.toml` or the defaults (see `settings.rs`).
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Timeout of steps that give none, in seconds
    #[arg(long, value_name = "SECONDS")]
    pub(crate) default_step_timeout: Option<String>,
    /// Largest step timeout max-step-timeout allows, in seconds
    #[arg(long, value_name = "SECONDS")]
    pub(crate) max_step_timeout: Option<String>,
    /// Hidden host resources a sandboxed step may ask for with host_access (comma separated, or
    /// `none`)
    #[arg(long, value_name = "NAMES")]
    pub(crate) allowed_host_access: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mc submit examples/hello.yaml
  mc submit - --output json < job.yaml")]
pub(crate) struct SubmitArgs {
    /// The job spec: a JSON or YAML file, or - for standard input
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
    /// With --server: print the job id as soon as the job is accepted; do not follow it
    #[arg(long)]
    pub(crate) detach: bool,
    /// Seconds a stopped step gets to exit before it is killed
    #[arg(long, value_name = "SECONDS")]
    pub(crate) stop_grace: Option<String>,
    /// Most output recorded per step (bytes, or 512k, 64m, 1g); the rest is dropped and the log
    /// says how much
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_step_output: Option<String>,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mc validate examples/denied.yaml
  mc validate - < job.yaml")]
pub(crate) struct ValidateArgs {
    /// The job spec: a JSON or YAML file, or - for standard input
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
#[command(after_help = "Examples:
  mc status
  mc status 0192f0c1-aaaa-7bbb-8ccc-123456789abc --output json")]
pub(crate) struct StatusArgs {
    /// The job's id or an unambiguous prefix of it (omit to list jobs)
    pub(crate) job_id: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
    /// How many jobs to list, newest first (0: all)
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// List only jobs older than this one (the last of the previous page): the next page
    #[arg(long, value_name = "JOB_ID", conflicts_with = "job_id")]
    pub(crate) before: Option<String>,
    /// Only jobs in these states (comma-separated, e.g. running,failed)
    #[arg(long, value_delimiter = ',', value_name = "STATE")]
    pub(crate) state: Vec<String>,
    /// Only jobs of this owner (compared as policy compares owners)
    #[arg(long, value_name = "OWNER")]
    pub(crate) owner: Option<String>,
    /// Only jobs for this environment
    #[arg(long = "env", value_name = "ENVIRONMENT")]
    pub(crate) environment: Option<String>,
    /// Only jobs submitted since then: a duration ago (30m, 2h, 7d) or an RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    pub(crate) since: Option<String>,
    /// Refresh every second, in place on a terminal, until Ctrl-C (a single job: until it ends)
    #[arg(long)]
    pub(crate) watch: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mc logs 0192f0c1-aaaa-7bbb-8ccc-123456789abc
  mc logs 0192f0c1-aaaa-7bbb-8ccc-123456789abc --step build --follow")]
pub(crate) struct LogsArgs {
    /// The job's id, or an unambiguous prefix of it
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
    /// `json`: one object per output line (step, seq, time, stream, text)
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, conflicts_with = "raw")]
    pub(crate) output: OutputFormat,
    /// Only the text, exactly as the steps wrote it: no time, stream or step
    #[arg(long)]
    pub(crate) raw: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mc cancel 0192f0c1-aaaa-7bbb-8ccc-123456789abc\n  mc cancel 0192f0c1a   # any unambiguous prefix\n\n\
Exit codes: 0 the job was cancelled, or had already ended (nothing to do); 1 it did not end in \
time; 2 no such job; 4 its process cannot be identified or signalled, or is gone (a killed mc's \
job: `mc gc` settles it)."
)]
pub(crate) struct CancelArgs {
    /// The job's id, or any unambiguous prefix of it
    pub(crate) job_id: String,
    /// How long to wait for the job to end, in seconds
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub(crate) wait: u64,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mc prune --older-than 30d --dry-run\n  mc prune --older-than 7d --state failed,cancelled\n\n\
Exit codes: 0 done (also when nothing was old enough); 2 a bad argument; 4 the state root \
cannot be read or changed."
)]
pub(crate) struct PruneArgs {
    /// Remove jobs that ended longer ago than this (30m, 12h, 30d, 2w) or before this RFC 3339 time
    #[arg(long, value_name = "AGE")]
    pub(crate) older_than: String,
    /// Only jobs that ended in these states (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "STATE")]
    pub(crate) state: Vec<String>,
    /// Say what would be removed; remove nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mc gc
  mc gc --output json")]
pub(crate) struct GcArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PluginsCommand {
    /// List every executor plugin found, with warnings about unusable ones
    #[command(after_help = "Examples:
  mc plugins list
  MAESTRO_PLUGIN_PATH=plugins/mc-executor-ssh mc plugins list --output json")]
    List {
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Run the conformance kit against a plugin (a path or a runtime name)
    #[command(after_help = "Examples:
  mc plugins check ssh --with '{\"host\": \"127.0.0.1\"}'
  mc plugins check ./target/debug/mc-executor-pyproc
  mc plugins check ./mc-executor-mine --output json")]
    Check {
        /// Path to an executable, or the runtime name of a discovered plugin
        plugin: String,
        /// The `with` object (JSON) handed to every task, for plugins that need settings
        #[arg(long, value_name = "JSON")]
        with: Option<String>,
        /// Output format (json: one object with every check, for CI)
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mc tokens add ana --roles submit\n  mc serve --listen 127.0.0.1:7878 --max-concurrent-jobs 4\n\n\
SIGTERM or Ctrl-C: stop accepting (503), let running jobs finish within --drain-grace, then \
cancel them. See docs/server.md."
)]
pub(crate) struct ServeArgs {
    /// Address and port to listen on (port 0: any free port, printed on stdout)
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR:PORT")]
    pub(crate) listen: String,
    /// Listen on a non-loopback address without TLS
    #[arg(long)]
    pub(crate) insecure_listen: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM)
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Jobs that run at once
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub(crate) max_concurrent_jobs: usize,
    /// Jobs that may wait for a slot; more are refused with 429
    #[arg(long, default_value_t = 1000, value_name = "M")]
    pub(crate) queue_limit: usize,
    /// Jobs one owner may have waiting for a slot; more of theirs are refused with 429 (default:
    /// no cap but --queue-limit)
    #[arg(long, value_name = "N")]
    pub(crate) queue_limit_per_owner: Option<usize>,
    /// On SIGTERM, seconds running jobs get to finish before they are cancelled
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub(crate) drain_grace: f64,
    /// Seconds a production job may await approval after its submission before it is DENIED
    /// (0: for ever)
    #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
    pub(crate) approval_timeout: u64,
    /// Seconds a client may take to send a request's headers (and may leave a body silent)
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub(crate) header_timeout: f64,
    /// Seconds a stopped step gets to exit before it is killed
    #[arg(long, value_name = "SECONDS")]
    pub(crate) stop_grace: Option<String>,
    /// Most output recorded per step (bytes, or 512k, 64m, 1g)
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_step_output: Option<String>,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Make a token; it is printed once (the last line of stdout) and only its hash is kept
    Add {
        /// The identity requests with the token act as (the owner of jobs it submits)
        identity: String,
        /// Comma-separated: submit, approve, cancel, admin
        #[arg(long, value_delimiter = ',', required = true, value_name = "ROLES")]
        roles: Vec<String>,
    },
    /// List tokens (ids, identities, roles; never the tokens)
    List {
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Revoke a token by its id, or every token of an identity
    Revoke {
        /// A token id (from `mc tokens list`) or an identity
        which: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DecisionArgs {
    /// The job's id, or an unambiguous prefix of it
    pub(crate) job_id: String,
    /// Why (kept in the job's record and the audit log)
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

impl Cli {
    /// Whether the command was asked for `--output json`: its one JSON object on stdout is then
    /// the contract, a failure's included.
    pub(crate) fn wants_json(&self) -> bool {
        let output = match &self.command {
            Command::Submit(args) => args.output,
            Command::Validate(args) => args.output,
            Command::Status(args) => args.output,
            Command::Logs(args) => args.output,
            Command::Cancel(args) => args.output,
            Command::Gc(args) => args.output,
            Command::Prune(args) => args.output,
            Command::Config(args) => args.output,
            Command::Approve(args) | Command::Reject(args) => args.output,
            Command::Audit(AuditCommand::Verify { output, .. })
            | Command::Plugins(
                PluginsCommand::List { output } | PluginsCommand::Check { output, .. },
            )
            | Command::Tokens(TokensCommand::List { output }) => *output,
            Command::Schema
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Serve(_)
            | Command::Tokens(_) => OutputFormat::Text,
        };
        output == OutputFormat::Json
    }
}

/// The whole command line, as `mc` parses and documents it: clap's types, each setting's help
/// completed from `settings::SETTINGS`, and the exit codes under every command's help.
pub(crate) fn command() -> clap::Command {
    with_exit_codes(crate::settings::document(Cli::command()))
}

fn with_exit_codes(command: clap::Command) -> clap::Command {
    let after = command
        .get_after_help()
        .map(|help| help.to_string())
        .unwrap_or_default();
    // A command that says its own exit codes (`cancel`, `prune`) keeps them alone: two blocks
    // would contradict each other.
    let help = if after.contains("Exit codes:") {
        after
    } else if after.is_empty() {
        crate::exit::EXIT_CODES_HELP.to_owned()
    } else {
        format!("{after}\n\n{}", crate::exit::EXIT_CODES_HELP)
    };
    command.after_help(help).mut_subcommands(with_exit_codes)
}
