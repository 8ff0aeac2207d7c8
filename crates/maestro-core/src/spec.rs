//! Job specs: the types a user writes, how they are parsed, and the checks that need no policy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod errors;
mod locate;

/// The largest spec file accepted, in bytes. A spec is a few kilobytes; anything near this is a
/// mistake or an attack, and refusing it early keeps the parser's memory bounded.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;
/// The most steps a job may have.
pub const MAX_STEPS: usize = 1000;
/// The longest timeout a spec or a setting may name: one year. Policy keeps real timeouts far
/// lower; this bound only keeps deadline arithmetic finite.
pub const MAX_TIMEOUT_SECONDS: u64 = 365 * 24 * 3600;

/// A job as the user wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name: `[A-Za-z0-9._-]`, 1 to 64 characters.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    /// Who is responsible for the job; `owner-present` decides whether it is acceptable.
    #[serde(default)]
    pub owner: Option<String>,
    /// The target environment, e.g. `dev`, `staging`, `prod`.
    #[serde(default)]
    pub environment: Option<String>,
    /// Who approved the job, when it needs approval.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// The runtime for steps that name none; `local` when absent.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[a-z0-9_-]{1,64}$"))]
    pub runtime: Option<String>,
    /// The container image for container steps that name none.
    #[serde(default)]
    pub image: Option<String>,
    /// Extra environment variables for every step.
    #[serde(default, deserialize_with = "unique_keys")]
    pub env: BTreeMap<String, String>,
    /// Secrets, by the name of the variable a step receives them in, and where each value is
    /// read from when the job starts. Values are never part of the spec.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Variables of the caller's environment passed to every step besides the default
    /// allowlist (see `docs/spec.md`), by name.
    #[serde(default)]
    pub env_passthrough: Vec<String>,
    /// The job's workspace directory (relative paths are taken from where `mc` was started);
    /// the directory `mc` was started in when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Run the container steps of this job that share an image and settings as execs in one
    /// container kept for the job, instead of one container per step.
    #[serde(default)]
    pub reuse_container: bool,
    /// How local steps are contained: `sandbox` (the default) or `none`. A step may override it.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Paths a sandboxed local step may write besides its workspace and private `/tmp` (e.g. a
    /// build cache); relative paths are taken from the workspace. Steps add their own.
    #[serde(default)]
    pub writable_paths: Vec<String>,
    /// Host resources a sandboxed local step may see although the sandbox hides them by default
    /// (the Docker socket, credential directories); policy `sandbox-limits` decides which are
    /// acceptable. Steps add their own.
    #[serde(default)]
    pub host_access: Vec<HostAccess>,
    /// The steps, run in order.
    #[schemars(length(min = 1, max = MAX_STEPS))]
    pub steps: Vec<StepSpec>,
}

/// Who approved a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The approver.
    pub approved_by: String,
    /// Why it was approved.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The step's name, unique within the job: `[A-Za-z0-9._-]`, 1 to 64 characters.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    /// A shell line run with `/bin/sh -c`. Exactly one of `run` and `command` is given.
    #[serde(default)]
    pub run: Option<String>,
    /// An argv list run without a shell. Exactly one of `run` and `command` is given.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The step's timeout; a configurable default applies when absent.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<u64>,
    /// The runtime that runs this step.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[a-z0-9_-]{1,64}$"))]
    pub runtime: Option<String>,
    /// The container image, for container runtimes.
    #[serde(default)]
    pub image: Option<String>,
    /// Extra environment variables for this step (they override the job's).
    #[serde(default, deserialize_with = "unique_keys")]
    pub env: BTreeMap<String, String>,
    /// The job's secrets this step receives in its environment, by name.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Variables of the caller's environment passed to this step besides the job's.
    #[serde(default)]
    pub env_passthrough: Vec<String>,
    /// The working directory; relative paths are taken from the job's workspace.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Container memory limit such as `256m` or `1g`.
    #[serde(default)]
    pub memory: Option<String>,
    /// Container CPU limit such as `0.5`.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Container process limit.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub pids_limit: Option<i64>,
    /// Container network: `bridge` (default) or `none`.
    #[serde(default)]
    pub network: Option<Network>,
    /// The user a container step runs as, e.g. `1000:1000`.
    #[serde(default)]
    pub user: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[serde(default)]
    pub read_only_rootfs: Option<bool>,
    /// When to pull the step's image.
    #[serde(default)]
    pub pull: Option<PullPolicy>,
    /// Swarm placement constraints such as `node.labels.gpu==true` (the swarm runtime only).
    #[serde(default)]
    pub placement: Vec<String>,
    /// How long a swarm task may wait for a node that fits before the step fails (the swarm
    /// runtime only; 60 s when absent).
    #[serde(default)]
    pub schedule_timeout_seconds: Option<u64>,
    /// Settings handed verbatim to a plugin executor; core checks only that it is an object.
    #[serde(default)]
    pub with: Option<serde_json::Value>,
    /// This step's containment, overriding the job's `isolation`.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Paths this step may write besides those the job lists.
    #[serde(default)]
    pub writable_paths: Vec<String>,
    /// Host resources this step may see besides those the job lists.
    #[serde(default)]
    pub host_access: Vec<HostAccess>,
}

/// Where a secret's value is read from: exactly one of `env` and `file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A variable of the environment `mc` was started with.
    #[serde(default)]
    pub env: Option<String>,
    /// A file (one trailing newline is dropped).
    #[serde(default)]
    pub file: Option<String>,
}

/// Variables Maestro sets in every step's environment; a spec may not set, pass through or
/// name a secret after them.
pub const RESERVED_ENV: [&str; 4] = ["TRACE_ID", "TRACEPARENT", "MAESTRO_JOB_ID", "MAESTRO_STEP"];

/// How a local step is contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// In a kernel sandbox: read-only host, private `/tmp` and `/dev`, own PID namespace, no
    /// capabilities, seccomp; see `docs/sandbox.md`.
    #[default]
    Sandbox,
    /// On the bare host, in a process group of its own: the explicit opt-out.
    None,
}

/// A host resource that the sandbox hides unless a spec asks for it by name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum HostAccess {
    /// The Docker, containerd and podman sockets: whoever talks to them is root on the host.
    DockerSocket,
    /// `~/.docker` (registry credentials).
    DockerConfig,
    /// `~/.ssh`.
    Ssh,
    /// `~/.aws`.
    Aws,
    /// `~/.kube`.
    Kube,
    /// `~/.config/gcloud`.
    Gcloud,
    /// `~/.azure`.
    Azure,
    /// `~/.gnupg`.
    Gnupg,
    /// `~/.config/gh`.
    GithubCli,
    /// `~/.netrc`.
    Netrc,
    /// `~/.git-credentials`.
    GitCredentials,
    /// `~/.pgpass`.
    Pgpass,
    /// `~/.cargo/credentials.toml` and `~/.cargo/credentials`.
    CargoCredentials,
    /// `~/.pypirc`.
    Pypi,
    /// `~/.vault-token`.
    Vault,
}

impl HostAccess {
    /// Every host resource, in declaration order.
    pub const ALL: [HostAccess; 15] = [
        Self::DockerSocket,
        Self::DockerConfig,
        Self::Ssh,
        Self::Aws,
        Self::Kube,
        Self::Gcloud,
        Self::Azure,
        Self::Gnupg,
        Self::GithubCli,
        Self::Netrc,
        Self::GitCredentials,
        Self::Pgpass,
        Self::CargoCredentials,
        Self::Pypi,
        Self::Vault,
    ];

    /// The name a spec uses, e.g. `docker-socket`.
    pub fn name(self) -> &'static str {
        match self {
            Self::DockerSocket => "docker-socket",
            Self::DockerConfig => "docker-config",
            Self::Ssh => "ssh",
            Self::Aws => "aws",
            Self::Kube => "kube",
            Self::Gcloud => "gcloud",
            Self::Azure => "azure",
            Self::Gnupg => "gnupg",
            Self::GithubCli => "github-cli",
            Self::Netrc => "netrc",
            Self::GitCredentials => "git-credentials",
            Self::Pgpass => "pgpass",
            Self::CargoCredentials => "cargo-credentials",
            Self::Pypi => "pypi",
            Self::Vault => "vault",
        }
    }
}

impl fmt::Display for HostAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A container step's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The engine's default bridge network.
    Bridge,
    /// No network at all.
    None,
}

/// When a container step's image is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull only when the image is not present locally.
    #[default]
    IfNotPresent,
    /// Pull before every step.
    Always,
    /// Never pull; a missing image fails the step.
    Never,
}

/// The format a spec file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl SpecFormat {
    /// The format of a spec file, from its extension: YAML for `.yaml`/`.yml`, JSON otherwise.
    pub fn from_file_name(file_name: &str) -> Self {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Self::Yaml
        } else {
            Self::Json
        }
    }

    /// The format of a spec given as `file_name` (`-` for standard input) holding `bytes`:
    /// JSON for `.json`, YAML for `.yaml`/`.yml`, and for any other name (`.txt`, none, standard
    /// input) JSON when the text starts with `{` or `[`, YAML otherwise.
    pub fn detect(file_name: &str, bytes: &[u8]) -> Self {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            return Self::Json;
        }
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            return Self::Yaml;
        }
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        match bytes.iter().find(|byte| !byte.is_ascii_whitespace()) {
            Some(b'{' | b'[') => Self::Json,
            _ => Self::Yaml,
        }
    }

    /// The extension the stored copy of the spec keeps.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Yaml => "yaml",
        }
    }
}

/// Why a spec was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file is larger than [`MAX_SPEC_BYTES`].
    #[error("spec is {size} bytes; at most {MAX_SPEC_BYTES} are accepted")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The file is not valid UTF-8.
    #[error("spec is not valid UTF-8 text")]
    NotUtf8,
    /// The file does not parse, or has a field of the wrong type or an unknown field.
    #[error("{}", render_position(*.line, *.column, .message))]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// Where in the document, e.g. `steps[0]`; empty for the top level or when unknown.
        path: String,
        /// The line, from 1, when the parser knows it.
        line: Option<u64>,
        /// The column, from 1, when the parser knows it.
        column: Option<u64>,
        /// What is wrong and what to do, in people's words; it names the field.
        message: String,
    },
    /// The spec parses but breaks one or more rules.
    #[error("{}", .problems.join("; "))]
    Invalid {
        /// Every problem found, each naming the field.
        problems: Vec<String>,
    },
}

fn render_position(line: Option<u64>, column: Option<u64>, message: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("line {line}, column {column}: {message}"),
        (Some(line), None) => format!("line {line}: {message}"),
        _ => message.to_owned(),
    }
}

impl SpecError {
    /// The error as one line that starts with where it is: `job.yaml:5:5: …` (file, line,
    /// column, as compilers write it); each broken rule of a spec that parses is placed at its
    /// field in `spec_bytes` (the text the spec was parsed from) when it can be found there.
    pub fn describe(&self, source: &str, spec_bytes: &[u8]) -> String {
        match self {
            Self::Invalid { problems } => {
                let positions = std::str::from_utf8(spec_bytes)
                    .map(locate::positions)
                    .unwrap_or_default();
                problems
                    .iter()
                    .map(
                        |problem| match locate::position_of_problem(&positions, problem) {
                            Some((line, column)) => format!("{source}:{line}:{column}: {problem}"),
                            None => format!("{source}: {problem}"),
                        },
                    )
                    .collect::<Vec<_>>()
                    .join("; ")
            }
            Self::Syntax {
                line: Some(line),
                column,
                message,
                ..
            } => match column {
                Some(column) => format!("{source}:{line}:{column}: {message}"),
                None => format!("{source}:{line}: {message}"),
            },
            Self::Syntax { message, .. } => format!("{source}: {message}"),
            other => format!("{source}: {other}"),
        }
    }
}

impl fmt::Display for SpecFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "JSON",
            Self::Yaml => "YAML",
        })
    }
}

/// Parse and validate a spec. Unknown fields are errors that name the field and where it is:
/// a misspelt `timout_seconds` silently ignored would bypass `max-step-timeout`.
pub fn parse(bytes: &[u8], format: SpecFormat) -> Result<JobSpec, SpecError> {
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge { size: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SpecError::NotUtf8)?;
    // A byte-order mark some editors put first: YAML allows it, JSON does not, and the JSON
    // parser's "expected value" at 1:1 would not say what is there.
    let text = match (format, text.strip_prefix('\u{feff}')) {
        (SpecFormat::Json, Some(_)) => {
            return Err(SpecError::Syntax {
                format: "JSON",
                path: String::new(),
                line: Some(1),
                column: Some(1),
                message: "invalid JSON: the file starts with a byte-order mark (U+FEFF), which JSON does not allow; save it as UTF-8 without a BOM".to_owned(),
            });
        }
        (SpecFormat::Yaml, Some(rest)) => rest,
        (_, None) => text,
    };
    // Only comments is as empty as nothing at all.
    let blank = match format {
        SpecFormat::Yaml => text
            .lines()
            .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#')),
        SpecFormat::Json => text.trim().is_empty(),
    };
    if blank {
        return Err(SpecError::Syntax {
            format: match format {
                SpecFormat::Json => "JSON",
                SpecFormat::Yaml => "YAML",
            },
            path: String::new(),
            line: None,
            column: None,
            message: "the spec is empty; a job needs at least a `name` and `steps`".to_owned(),
        });
    }
    let spec: JobSpec = match format {
        SpecFormat::Json => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let spec =
                serde_path_to_error::deserialize(&mut deserializer).map_err(errors::from_json)?;
            deserializer.end().map_err(errors::from_json_tail)?;
            spec
        }
        SpecFormat::Yaml => parse_yaml(text)?,
    };
    validate(&spec)?;
    Ok(spec)
}

fn parse_yaml(text: &str) -> Result<JobSpec, SpecError> {
    // YAML aliases can expand exponentially ("billion laughs"); serde-saphyr's default budget
    // bounds that, and the size cap above bounds the rest. Duplicate keys are errors (its
    // default): which of two `timeout_seconds` wins must never be a guess.
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let mut failed_at = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            failed_at = Some(error.path().clone());
            error.into_inner()
        })
    })
    .map_err(|error| errors::from_yaml(&error, failed_at.as_ref()))
}

/// The JSON Schema of a job spec, generated from [`JobSpec`] and its field docs, pretty-printed
/// with a final newline (what `mc schema` prints and `docs/job-spec.schema.json` holds).
pub fn json_schema() -> String {
    let mut schema = schemars::schema_for!(JobSpec);
    schema.insert(
        "title".to_owned(),
        serde_json::Value::from("Maestro job spec"),
    );
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A map of strings whose keys must be unique. YAML duplicates are refused by the parser; JSON
/// allows `{"A": "1", "A": "2"}` and a plain map would keep the last one silently.
fn unique_keys<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct UniqueKeys;

    impl<'de> serde::de::Visitor<'de> for UniqueKeys {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a map of variable names to strings")
        }

        fn visit_map<A>(self, mut map: A) -> Result<Self::Value, A::Error>
        where
            A: serde::de::MapAccess<'de>,
        {
            let mut values = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if values.contains_key(&key) {
                    return Err(serde::de::Error::custom(format_args!(
                        "duplicate field `{key}`"
                    )));
                }
                values.insert(key, value);
            }
            Ok(values)
        }
    }

    deserializer.deserialize_map(UniqueKeys)
}

/// Whether `name` is 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name != "."
        && name != ".."
}

fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `value` is a memory size such as `512k`, `256m`, `1g` or a plain byte count.
pub fn parse_memory(value: &str) -> Option<i64> {
    let value = value.trim().to_ascii_lowercase();
    let value = value.strip_suffix('b').unwrap_or(&value);
    let (digits, unit) = match value.char_indices().last()? {
        (i, c @ ('k' | 'm' | 'g' | 't')) => (&value[..i], Some(c)),
        _ => (value, None),
    };
    let number: i64 = digits.parse().ok()?;
    let factor: i64 = match unit {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(_) => 1 << 40,
    };
    number.checked_mul(factor).filter(|bytes| *bytes > 0)
}

fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    let mut problems = Vec::new();
    if !is_valid_name(&spec.name) {
        problems.push(format!(
            "name {:?} must be 1 to 64 characters of letters, digits, '.', '_' or '-'",
            truncate(&spec.name)
        ));
    }
    check_env("env", &spec.env, &mut problems);
    check_secrets(spec, &mut problems);
    check_passthrough("env_passthrough", &spec.env_passthrough, &mut problems);
    for (field, value) in [
        ("owner", spec.owner.as_deref()),
        ("environment", spec.environment.as_deref()),
        (
            "approval.approved_by",
            spec.approval.as_ref().map(|a| a.approved_by.as_str()),
        ),
    ] {
        if let Some(problem) = value.and_then(crate::identity::check) {
            problems.push(format!(
                "{field} {:?} {problem}",
                truncate(value.unwrap_or_default())
            ));
        }
    }
    if let Some(workdir) = &spec.workdir
        && (workdir.is_empty() || workdir.contains('\0'))
    {
        problems.push("workdir must be a non-empty path".to_owned());
    }
    if let Some(runtime) = &spec.runtime {
        check_runtime_name("runtime", runtime, &mut problems);
    }
    check_paths("writable_paths", &spec.writable_paths, &mut problems);
    if spec.steps.is_empty() {
        problems.push("steps must list at least one step".to_owned());
    }
    if spec.steps.len() > MAX_STEPS {
        problems.push(format!(
            "steps lists {} steps; at most {MAX_STEPS} are allowed",
            spec.steps.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for (index, step) in spec.steps.iter().enumerate() {
        let at = format!("steps[{index}]");
        if !is_valid_name(&step.name) {
            problems.push(format!(
                "{at}.name {:?} must be 1 to 64 characters of letters, digits, '.', '_' or '-'",
                truncate(&step.name)
            ));
        } else if !seen.insert(step.name.as_str()) {
            problems.push(format!(
                "{at}.name {:?} is used by an earlier step",
                step.name
            ));
        }
        match (&step.run, &step.command) {
            (Some(_), Some(_)) => {
                problems.push(format!("{at} has both run and command; give exactly one"))
            }
            (None, None) => problems.push(format!(
                "{at} has neither run nor command; give exactly one"
            )),
            (Some(run), None) if run.trim().is_empty() => {
                problems.push(format!("{at}.run is empty"))
            }
            (None, Some(argv)) if argv.is_empty() || argv[0].is_empty() => {
                problems.push(format!("{at}.command must be a non-empty argv list"))
            }
            _ => {}
        }
        if let Some(run) = &step.run
            && run.contains('\0')
        {
            problems.push(format!("{at}.run contains a NUL byte"));
        }
        if let Some(argv) = &step.command
            && argv.iter().any(|arg| arg.contains('\0'))
        {
            problems.push(format!("{at}.command contains a NUL byte"));
        }
        match step.timeout_seconds {
            Some(0) => problems.push(format!("{at}.timeout_seconds must be at least 1")),
            Some(seconds) if seconds > MAX_TIMEOUT_SECONDS => problems.push(format!(
                "{at}.timeout_seconds must be at most {MAX_TIMEOUT_SECONDS} (one year)"
            )),
            _ => {}
        }
        if let Some(runtime) = &step.runtime {
            check_runtime_name(&format!("{at}.runtime"), runtime, &mut problems);
        }
        check_env(&format!("{at}.env"), &step.env, &mut problems);
        check_passthrough(
            &format!("{at}.env_passthrough"),
            &step.env_passthrough,
            &mut problems,
        );
        for (position, name) in step.secrets.iter().enumerate() {
            if !spec.secrets.contains_key(name) {
                problems.push(format!(
                    "{at}.secrets[{position}]: {:?} is not a secret of the job (declare it under secrets)",
                    truncate(name)
                ));
            } else if step.env.contains_key(name) {
                problems.push(format!(
                    "{at}.secrets[{position}]: {name} is also set in {at}.env; a variable is either a secret or not"
                ));
            }
        }
        if let Some(memory) = &step.memory
            && parse_memory(memory).is_none()
        {
            problems.push(format!(
                "{at}.memory {:?} is not a size such as 256m or 1g",
                truncate(memory)
            ));
        }
        if let Some(cpus) = step.cpus
            && !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0)
        {
            problems.push(format!("{at}.cpus must be a number above 0, such as 0.5"));
        }
        if let Some(pids) = step.pids_limit
            && pids < 1
        {
            problems.push(format!("{at}.pids_limit must be at least 1"));
        }
        check_placement(&format!("{at}.placement"), &step.placement, &mut problems);
        match step.schedule_timeout_seconds {
            Some(0) => problems.push(format!("{at}.schedule_timeout_seconds must be at least 1")),
            Some(seconds) if seconds > MAX_SCHEDULE_TIMEOUT_SECONDS => problems.push(format!(
                "{at}.schedule_timeout_seconds must be at most {MAX_SCHEDULE_TIMEOUT_SECONDS} (one day)"
            )),
            _ => {}
        }
        if let Some(with) = &step.with
            && !with.is_object()
        {
            problems.push(format!("{at}.with must be an object"));
        }
        if let Some(workdir) = &step.workdir
            && (workdir.is_empty() || workdir.contains('\0'))
        {
            problems.push(format!("{at}.workdir must be a non-empty path"));
        }
        check_paths(
            &format!("{at}.writable_paths"),
            &step.writable_paths,
            &mut problems,
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SpecError::Invalid { problems })
    }
}

/// Whether `runtime` is 1 to 64 characters of `[a-z0-9_-]`. A runtime name becomes part of a
/// plugin's file name (`mc-executor-<name>`), so it must never be able to smuggle a path.
pub fn is_valid_runtime_name(runtime: &str) -> bool {
    (1..=64).contains(&runtime.len())
        && runtime
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn check_runtime_name(at: &str, runtime: &str, problems: &mut Vec<String>) {
    if !is_valid_runtime_name(runtime) {
        let lower = runtime.to_ascii_lowercase();
        let suggestion = if lower != runtime && is_valid_runtime_name(&lower) {
            format!("; did you mean {lower:?}?")
        } else {
            String::new()
        };
        problems.push(format!(
            "{at} {:?} must be 1 to 64 characters of lower-case letters, digits, '-' or '_'{suggestion}",
            truncate(runtime)
        ));
    }
}

fn check_env(at: &str, env: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    for (name, value) in env {
        if !is_valid_env_name(name) {
            problems.push(format!(
                "{at}: {:?} is not a valid variable name",
                truncate(name)
            ));
        }
        if name == "TRACE_ID" {
            problems.push(format!(
                "{at}: TRACE_ID is set by Maestro; pass --trace-id to choose it"
            ));
        } else if RESERVED_ENV.contains(&name.as_str()) {
            problems.push(format!("{at}: {name} is set by Maestro"));
        }
        if value.contains('\0') {
            problems.push(format!("{at}.{name} contains a NUL byte"));
        }
    }
}

fn check_secrets(spec: &JobSpec, problems: &mut Vec<String>) {
    for (name, source) in &spec.secrets {
        let at = format!("secrets.{}", truncate(name));
        if !is_valid_env_name(name) {
            problems.push(format!(
                "secrets: {:?} is not a valid variable name",
                truncate(name)
            ));
            continue;
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            problems.push(format!("{at}: {name} is set by Maestro"));
        }
        if spec.env.contains_key(name) {
            problems.push(format!(
                "{at}: {name} is also set in env; a variable is either a secret or not"
            ));
        }
        match (&source.env, &source.file) {
            (Some(_), Some(_)) => problems.push(format!(
                "{at} has both env and file; give exactly one source"
            )),
            (None, None) => problems.push(format!(
                "{at} has neither env nor file; give exactly one source"
            )),
            (Some(variable), None) if !is_valid_env_name(variable) => problems.push(format!(
                "{at}.env: {:?} is not a valid variable name",
                truncate(variable)
            )),
            (None, Some(path)) if path.is_empty() || path.contains('\0') || path.len() > 4096 => {
                problems.push(format!(
                    "{at}.file must be a non-empty path of at most 4096 bytes"
                ))
            }
            _ => {}
        }
    }
}

fn check_passthrough(at: &str, names: &[String], problems: &mut Vec<String>) {
    for (position, name) in names.iter().enumerate() {
        if !is_valid_env_name(name) {
            problems.push(format!(
                "{at}[{position}]: {:?} is not a valid variable name",
                truncate(name)
            ));
        } else if RESERVED_ENV.contains(&name.as_str()) {
            problems.push(format!("{at}[{position}]: {name} is set by Maestro"));
        }
    }
}

/// The most `writable_paths` entries a job or step may list.
const MAX_WRITABLE_PATHS: usize = 64;

fn check_paths(at: &str, paths: &[String], problems: &mut Vec<String>) {
    if paths.len() > MAX_WRITABLE_PATHS {
        problems.push(format!(
            "{at} lists {} paths; at most {MAX_WRITABLE_PATHS} are allowed",
            paths.len()
        ));
    }
    for path in paths {
        if path.is_empty() || path.contains('\0') || path.len() > 4096 {
            problems.push(format!(
                "{at}: {:?} must be a non-empty path of at most 4096 bytes",
                truncate(path)
            ));
        }
    }
}

/// The longest a swarm task may be allowed to wait for a node: one day.
const MAX_SCHEDULE_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;
/// The most placement constraints a step may list, and the longest one.
const MAX_PLACEMENT_CONSTRAINTS: usize = 32;
const MAX_PLACEMENT_LENGTH: usize = 256;

/// Placement constraints are `attribute==value` or `attribute!=value`, as Swarm takes them; the
/// engine checks the attributes themselves.
fn check_placement(at: &str, placement: &[String], problems: &mut Vec<String>) {
    if placement.len() > MAX_PLACEMENT_CONSTRAINTS {
        problems.push(format!(
            "{at} lists {} constraints; at most {MAX_PLACEMENT_CONSTRAINTS} are allowed",
            placement.len()
        ));
        return;
    }
    for (index, constraint) in placement.iter().enumerate() {
        let well_formed = constraint.len() <= MAX_PLACEMENT_LENGTH
            && !constraint.chars().any(char::is_control)
            && ["==", "!="].iter().any(|operator| {
                constraint
                    .split_once(operator)
                    .is_some_and(|(attribute, value)| {
                        !attribute.trim().is_empty() && !value.trim().is_empty()
                    })
            });
        if !well_formed {
            problems.push(format!(
                "{at}[{index}] {:?} is not a constraint such as node.labels.gpu==true or node.role!=manager",
                truncate(constraint)
            ));
        }
    }
}

/// Cut a user-supplied value for an error message, so a hostile megabyte name stays one line.
fn truncate(value: &str) -> String {
    if value.chars().count() <= 80 {
        value.to_owned()
    } else {
        let mut cut: String = value.chars().take(80).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Result<JobSpec, SpecError> {
        parse(text.as_bytes(), SpecFormat::Json)
    }

    const HELLO: &str = r#"{"name":"hello","owner":"ana","environment":"dev",
        "steps":[{"name":"greet","run":"echo hi"}]}"#;

    #[test]
    fn parses_a_minimal_json_spec() {
        let spec = json(HELLO).unwrap();
        assert_eq!(spec.name, "hello");
        assert_eq!(spec.steps[0].run.as_deref(), Some("echo hi"));
    }

    #[test]
    fn parses_yaml_with_a_with_object() {
        let text = "name: y\nowner: ana\nenvironment: dev\nsteps:\n  - name: s\n    command: [echo, hi]\n    runtime: ssh\n    with: { host: 127.0.0.1, port: 2222 }\n";
        let spec = parse(text.as_bytes(), SpecFormat::Yaml).unwrap();
        assert_eq!(spec.steps[0].command.as_ref().unwrap(), &["echo", "hi"]);
        assert_eq!(spec.steps[0].with.as_ref().unwrap()["port"], 2222);
    }

    #[test]
    fn unknown_field_is_named_with_its_place() {
        let text = r#"{"name":"x","steps":[{"name":"s","run":"true","timout_seconds":5}]}"#;
        let message = json(text).unwrap_err().to_string();
        assert!(message.contains("timout_seconds"), "{message}");
        assert!(message.contains("steps[0]"), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn unknown_yaml_field_is_named_with_its_line() {
        let text = "name: x\nsteps:\n  - name: s\n    run: 'true'\n    timout_seconds: 5\n";
        let message = parse(text.as_bytes(), SpecFormat::Yaml)
            .unwrap_err()
            .to_string();
        assert!(message.contains("timout_seconds"), "{message}");
        assert!(message.contains('5'), "line number expected: {message}");
    }

    #[test]
    fn reports_every_problem() {
        let text =
            r#"{"name":"bad name","steps":[{"name":"a","run":"x","command":["y"]},{"name":"a"}]}"#;
        let SpecError::Invalid { problems } = json(text).unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn accepts_swarm_placement_and_schedule_timeout() {
        let spec = json(
            r#"{"name":"x","steps":[{"name":"s","run":"true","placement":["node.labels.gpu==true","node.role!=manager"],"schedule_timeout_seconds":5}]}"#,
        )
        .unwrap();
        assert_eq!(spec.steps[0].placement.len(), 2);
        assert_eq!(spec.steps[0].schedule_timeout_seconds, Some(5));
    }

    #[test]
    fn rejects_bad_values() {
        for (text, needle) in [
            (r#"{"name":"x","steps":[]}"#, "at least one step"),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","timeout_seconds":0}]}"#,
                "at least 1",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","timeout_seconds":-3}]}"#,
                "steps[0].timeout_seconds",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","memory":"lots"}]}"#,
                "memory",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","timeout_seconds":18446744073709551615}]}"#,
                "one year",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","with":[1]}]}"#,
                "with must be an object",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","runtime":"../x"}]}"#,
                "runtime",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","runtime":"Docker"}]}"#,
                "did you mean \"docker\"?",
            ),
            (
                r#"{"name":"x","steps":[{"name":"..","run":"true"}]}"#,
                "steps[0].name",
            ),
            (
                r#"{"name":"x","env":{"TRACE_ID":"a"},"steps":[{"name":"s","run":"true"}]}"#,
                "TRACE_ID",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","network":"host"}]}"#,
                "host",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","placement":["node.role"]}]}"#,
                "steps[0].placement[0]",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","placement":["==x"]}]}"#,
                "node.labels.gpu==true",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","schedule_timeout_seconds":0}]}"#,
                "schedule_timeout_seconds must be at least 1",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","schedule_timeout_seconds":86401}]}"#,
                "one day",
            ),
            (r#"{"name":"x","#, "invalid JSON"),
            ("[1,2", "must be a map of job fields"),
        ] {
            let message = json(text).unwrap_err().to_string();
            assert!(message.contains(needle), "{text}: {message}");
        }
    }

    #[test]
    fn secrets_and_passthrough_are_validated_with_their_field_paths() {
        let good = json(
            r#"{"name":"x","secrets":{"TOKEN":{"env":"CI_TOKEN"},"DB":{"file":"/run/db"}},
                "env_passthrough":["SSH_AUTH_SOCK"],
                "steps":[{"name":"s","run":"true","secrets":["TOKEN"],"env_passthrough":["X"]}]}"#,
        )
        .unwrap();
        assert_eq!(good.secrets["TOKEN"].env.as_deref(), Some("CI_TOKEN"));
        assert_eq!(good.steps[0].secrets, ["TOKEN"]);
        for (text, needle) in [
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","secrets":["NOPE"]}]}"#,
                "steps[0].secrets[0]: \"NOPE\" is not a secret of the job",
            ),
            (
                r#"{"name":"x","secrets":{"T":{"env":"A","file":"/f"}},"steps":[{"name":"s","run":"true"}]}"#,
                "secrets.T has both env and file",
            ),
            (
                r#"{"name":"x","secrets":{"T":{}},"steps":[{"name":"s","run":"true"}]}"#,
                "secrets.T has neither env nor file",
            ),
            (
                r#"{"name":"x","secrets":{"T":{"env":"A B"}},"steps":[{"name":"s","run":"true"}]}"#,
                "secrets.T.env: \"A B\" is not a valid variable name",
            ),
            (
                r#"{"name":"x","secrets":{"1T":{"env":"A"}},"steps":[{"name":"s","run":"true"}]}"#,
                "secrets: \"1T\" is not a valid variable name",
            ),
            (
                r#"{"name":"x","secrets":{"T":{"value":"x"}},"steps":[{"name":"s","run":"true"}]}"#,
                "unknown field `value`",
            ),
            (
                r#"{"name":"x","secrets":{"TRACEPARENT":{"env":"A"}},"steps":[{"name":"s","run":"true"}]}"#,
                "TRACEPARENT is set by Maestro",
            ),
            (
                r#"{"name":"x","env":{"T":"v"},"secrets":{"T":{"env":"A"}},"steps":[{"name":"s","run":"true"}]}"#,
                "either a secret or not",
            ),
            (
                r#"{"name":"x","env_passthrough":["A-B"],"steps":[{"name":"s","run":"true"}]}"#,
                "env_passthrough[0]",
            ),
            (
                r#"{"name":"x","steps":[{"name":"s","run":"true","env_passthrough":["MAESTRO_JOB_ID"]}]}"#,
                "steps[0].env_passthrough[0]: MAESTRO_JOB_ID is set by Maestro",
            ),
        ] {
            let message = json(text).unwrap_err().to_string();
            assert!(message.contains(needle), "{text}: {message}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
    }

    #[test]
    fn rejects_huge_and_binary_input() {
        let huge = vec![b' '; MAX_SPEC_BYTES + 1];
        assert!(matches!(
            parse(&huge, SpecFormat::Json),
            Err(SpecError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(&[0xff, 0xfe], SpecFormat::Json),
            Err(SpecError::NotUtf8)
        ));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256m"), Some(256 << 20));
        assert_eq!(parse_memory("1G"), Some(1 << 30));
        assert_eq!(parse_memory("512kb"), Some(512 << 10));
        assert_eq!(parse_memory("1000"), Some(1000));
        assert_eq!(parse_memory("0"), None);
        assert_eq!(parse_memory("m"), None);
        assert_eq!(parse_memory("99999999999999999g"), None);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics_on_json(text in ".{0,400}") {
            let _ = parse(text.as_bytes(), SpecFormat::Json);
        }

        #[test]
        fn parser_never_panics_on_yaml(text in ".{0,400}") {
            let _ = parse(text.as_bytes(), SpecFormat::Yaml);
        }

        #[test]
        fn parser_never_panics_on_structured_yaml(
            name in "[a-z ]{0,8}", run in ".{0,40}", key in "[a-z_]{1,12}", timeout in proptest::num::i64::ANY
        ) {
            let text = format!("name: {name}\nsteps:\n  - name: s\n    run: {run:?}\n    {key}: {timeout}\n");
            let _ = parse(text.as_bytes(), SpecFormat::Yaml);
        }
    }
}
