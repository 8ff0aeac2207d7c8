//! Turning a validated spec into the per-step requests executors receive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::JobId;
use crate::executor::{CommandLine, ContainerSettings, StepRequest};
use crate::secret::CallerEnv;
use crate::spec::{JobSpec, parse_memory};
use crate::trace::{SpanId, TraceId};

/// The caller's variables every local step receives (when set): what programs need to find
/// their tools, their home, their language and their terminal, and nothing that usually
/// carries a credential. A spec names any other in `env_passthrough`.
pub const CALLER_ENV_ALLOWLIST: [&str; 13] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "TZ",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
];

/// Whether the caller's variable `name` is on the allowlist: [`CALLER_ENV_ALLOWLIST`], or a
/// locale variable (`LC_*`).
pub fn is_allowlisted(name: &str) -> bool {
    CALLER_ENV_ALLOWLIST.contains(&name) || name.starts_with("LC_")
}

/// The runtime of steps that name none, when neither the request nor the spec names one.
pub const DEFAULT_RUNTIME: &str = "local";

/// How the executor that runs a step contains it. Policy reads this as data (it never learns
/// which executor runs a step): code nobody can read is allowed only inside containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Containment {
    /// A local step in Maestro's kernel sandbox.
    Sandbox,
    /// A container run by an engine (or a plugin that declares its steps contained).
    Container,
    /// Nothing contains it: `isolation: none`, or a plugin whose steps run on a bare host.
    None,
}

impl Containment {
    /// Whether anything contains the step.
    pub fn is_contained(self) -> bool {
        !matches!(self, Self::None)
    }
}

/// One step of the resolved plan, as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The step's name.
    pub name: String,
    /// The runtime that runs it (a name, nothing more).
    pub runtime: String,
    /// How it is contained.
    pub containment: Containment,
    /// The job's workspace, which a sandboxed step may write.
    pub workspace: PathBuf,
    /// The absolute paths it asks to write besides its workspace (sandboxed steps).
    pub writable_paths: Vec<PathBuf>,
    /// The hidden host resources it asks to see (sandboxed steps).
    pub host_access: Vec<crate::spec::HostAccess>,
}

/// Request-wide choices that shape a plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The timeout of steps that give none.
    pub default_timeout: Duration,
    /// The runtime for steps that name none (`mc submit --runtime`); beats the spec's default.
    pub runtime_override: Option<String>,
    /// The directory `mc` was started in; the workspace unless the spec names one, and the base
    /// of a relative spec `workdir`.
    pub invocation_dir: PathBuf,
    /// The environment `mc` was started with: the source of the allowlisted variables and of
    /// `env_passthrough`.
    pub caller_env: CallerEnv,
}

/// The job's workspace: the spec's `workdir` (relative to the invocation directory), else the
/// invocation directory.
pub fn workspace(spec: &JobSpec, invocation_dir: &Path) -> PathBuf {
    match &spec.workdir {
        Some(dir) => invocation_dir.join(dir),
        None => invocation_dir.to_path_buf(),
    }
}

/// Resolve every step of `spec` into a [`StepRequest`].
pub fn plan_steps(
    job_id: JobId,
    spec: &JobSpec,
    trace_id: &TraceId,
    options: &PlanOptions,
) -> Vec<StepRequest> {
    let workspace = workspace(spec, &options.invocation_dir);
    spec.steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let command = match (&step.run, &step.command) {
                (Some(line), _) => CommandLine::Shell(line.clone()),
                (None, Some(argv)) => CommandLine::Argv(argv.clone()),
                // Validation guarantees exactly one; an empty argv fails at spawn, not here.
                (None, None) => CommandLine::Argv(Vec::new()),
            };
            // Named pass-through variables first, so that the spec's own values win.
            let mut env: BTreeMap<String, String> = spec
                .env_passthrough
                .iter()
                .chain(&step.env_passthrough)
                .filter_map(|name| {
                    let value = options.caller_env.get(name)?.to_str()?;
                    Some((name.clone(), value.to_owned()))
                })
                .collect();
            env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let span_id = SpanId::generate();
            env.insert("TRACE_ID".to_owned(), trace_id.to_string());
            env.insert("TRACEPARENT".to_owned(), trace_id.traceparent(&span_id));
            env.insert("MAESTRO_JOB_ID".to_owned(), job_id.to_string());
            env.insert("MAESTRO_STEP".to_owned(), step.name.clone());
            let host_env = options
                .caller_env
                .iter()
                .filter(|(name, _)| is_allowlisted(name))
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect();
            let writable_paths = spec
                .writable_paths
                .iter()
                .chain(&step.writable_paths)
                .map(|path| workspace.join(path))
                .collect();
            let mut host_access: Vec<_> = spec
                .host_access
                .iter()
                .chain(&step.host_access)
                .copied()
                .collect();
            host_access.sort_unstable();
            host_access.dedup();
            let runtime = step
                .runtime
                .clone()
                .or_else(|| options.runtime_override.clone())
                .or_else(|| spec.runtime.clone())
                .unwrap_or_else(|| DEFAULT_RUNTIME.to_owned());
            StepRequest {
                job_id,
                job_name: spec.name.clone(),
                trace_id: trace_id.clone(),
                index,
                name: step.name.clone(),
                runtime,
                command,
                env,
                host_env,
                secrets: BTreeMap::new(),
                span_id,
                workspace: workspace.clone(),
                workdir: step.workdir.clone(),
                timeout: step
                    .timeout_seconds
                    .map_or(options.default_timeout, Duration::from_secs),
                container: ContainerSettings {
                    image: step.image.clone().or_else(|| spec.image.clone()),
                    memory_bytes: step.memory.as_deref().and_then(parse_memory),
                    cpus: step.cpus,
                    pids_limit: step.pids_limit,
                    network: step.network,
                    user: step.user.clone(),
                    read_only_rootfs: step.read_only_rootfs,
                    pull: step.pull,
                    placement: step.placement.clone(),
                    schedule_timeout: step.schedule_timeout_seconds.map(Duration::from_secs),
                },
                reuse_container: spec.reuse_container,
                with: step.with.clone(),
                isolation: step.isolation.or(spec.isolation).unwrap_or_default(),
                writable_paths,
                host_access,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SpecFormat, parse};

    #[test]
    fn resolves_runtime_env_and_timeouts() {
        let spec = parse(
            br#"{"name":"j","runtime":"docker","image":"img","env":{"A":"job","B":"job"},
                "steps":[{"name":"a","run":"true","env":{"B":"step"}},
                         {"name":"b","command":["x"],"runtime":"local","timeout_seconds":7,"image":"other"}]}"#,
            SpecFormat::Json,
        )
        .unwrap();
        let trace = TraceId::parse("t-1").unwrap();
        let id = JobId::now_v7();
        let options = PlanOptions {
            default_timeout: Duration::from_secs(60),
            runtime_override: Some("ssh".to_owned()),
            invocation_dir: PathBuf::from("/work"),
            caller_env: CallerEnv::from_pairs([
                ("PATH", "/bin"),
                ("LC_ALL", "C"),
                ("AWS_SECRET_ACCESS_KEY", "no"),
                ("SSH_AUTH_SOCK", "/agent"),
            ]),
        };
        let steps = plan_steps(id, &spec, &trace, &options);
        assert_eq!(steps[0].runtime, "ssh", "--runtime beats the spec default");
        assert_eq!(steps[1].runtime, "local", "a step's own runtime wins");
        assert_eq!(steps[0].env["A"], "job");
        assert_eq!(steps[0].env["B"], "step");
        assert_eq!(steps[0].env["TRACE_ID"], "t-1");
        assert_eq!(steps[0].env["MAESTRO_STEP"], "a");
        assert_eq!(steps[0].timeout, Duration::from_secs(60));
        assert_eq!(steps[1].timeout, Duration::from_secs(7));
        assert_eq!(steps[0].container.image.as_deref(), Some("img"));
        assert_eq!(steps[1].container.image.as_deref(), Some("other"));
        assert_eq!(steps[0].command, CommandLine::Shell("true".to_owned()));
        assert_eq!(steps[0].workspace, PathBuf::from("/work"));
        assert_eq!(
            steps[0].host_env.keys().collect::<Vec<_>>(),
            ["LC_ALL", "PATH"],
            "only allowlisted variables of the caller"
        );
        assert!(!steps[0].env.contains_key("SSH_AUTH_SOCK"));
        let traceparent = &steps[0].env["TRACEPARENT"];
        assert!(traceparent.ends_with(&format!("-{}-01", steps[0].span_id)));
        assert_ne!(steps[0].span_id, steps[1].span_id);
    }

    #[test]
    fn passes_named_variables_through_below_the_spec_env() {
        let spec = parse(
            br#"{"name":"j","env_passthrough":["SSH_AUTH_SOCK","UNSET"],"env":{"B":"spec"},
                "steps":[{"name":"a","run":"true","env_passthrough":["B","C"]}]}"#,
            SpecFormat::Json,
        )
        .unwrap();
        let options = PlanOptions {
            default_timeout: Duration::from_secs(60),
            runtime_override: None,
            invocation_dir: PathBuf::from("/work"),
            caller_env: CallerEnv::from_pairs([
                ("SSH_AUTH_SOCK", "/agent"),
                ("B", "caller"),
                ("C", "caller"),
            ]),
        };
        let steps = plan_steps(JobId::now_v7(), &spec, &TraceId::generate(), &options);
        assert_eq!(steps[0].env["SSH_AUTH_SOCK"], "/agent");
        assert_eq!(steps[0].env["B"], "spec", "the spec's value wins");
        assert_eq!(steps[0].env["C"], "caller");
        assert!(!steps[0].env.contains_key("UNSET"));
    }
}
