//! Policies: every one is evaluated before a job may run, and every verdict is kept.
//!
//! [`evaluate_policies`] is the only entry point the runner uses. Adding a policy means adding a
//! function to `POLICIES`; nothing else changes. Policies see the spec and the resolved plan as
//! data (each step's runtime name and [`Containment`]), never an executor: what static analysis
//! cannot prove harmless is allowed exactly when the step is contained, whichever executor
//! contains it.

use std::collections::BTreeSet;
use std::path::{Component, Path};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use maestro_analyser::{
    Finding, Kind, Rule, analyse_argv, analyse_argv_by, analyse_shell, analyse_shell_by,
};

use crate::identity;
use crate::plan::{Containment, PlannedStep};
use crate::spec::{HostAccess, JobSpec};

/// Settings the policies depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// The timeout of a step that gives none.
    pub default_step_timeout: Duration,
    /// The largest effective step timeout `max-step-timeout` allows.
    pub max_step_timeout: Duration,
    /// The hidden host resources `sandbox-limits` lets a step ask for. By default every one but
    /// `docker-socket` (talking to the Docker socket is root on the host).
    pub allowed_host_access: BTreeSet<HostAccess>,
    /// Paths no step may make writable, e.g. Maestro's state root.
    pub protected_paths: Vec<std::path::PathBuf>,
}

impl PolicyConfig {
    /// Every host resource but the Docker socket: the default of `allowed_host_access`.
    pub fn default_host_access() -> BTreeSet<HostAccess> {
        HostAccess::ALL
            .into_iter()
            .filter(|access| *access != HostAccess::DockerSocket)
            .collect()
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            default_step_timeout: Duration::from_secs(600),
            max_step_timeout: Duration::from_secs(3600),
            allowed_host_access: Self::default_host_access(),
            protected_paths: Vec::new(),
        }
    }
}

/// One policy's decision on one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The policy's name, e.g. `no-destruction`.
    pub policy: String,
    /// Whether the policy allows the job.
    pub allowed: bool,
    /// Why it denied the job (empty when allowed).
    pub reasons: Vec<String>,
    /// What it allowed only because of containment, e.g. a command it could not analyse in a
    /// sandboxed step; kept so that the record says what was taken on trust of the kernel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Every policy's verdict on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// The verdicts, in the order the policies are listed in `POLICIES`.
    pub verdicts: Vec<Verdict>,
}

impl PolicyReport {
    /// Whether every policy allows the job.
    pub fn allowed(&self) -> bool {
        self.verdicts.iter().all(|verdict| verdict.allowed)
    }

    /// The verdicts that deny the job.
    pub fn denials(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|verdict| !verdict.allowed)
    }
}

/// What every policy reads: the spec as written and the plan resolved from it.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// The spec.
    pub spec: &'a JobSpec,
    /// One entry per step of the spec, in order.
    pub plan: &'a [PlannedStep],
}

impl PolicyInput<'_> {
    /// How step `index` is contained; not contained when the plan does not say.
    fn containment(&self, index: usize) -> Containment {
        self.plan
            .get(index)
            .map_or(Containment::None, |step| step.containment)
    }
}

/// What one policy decided: reasons to deny (none means allowed) and notes on what it allowed.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    reasons: Vec<String>,
    notes: Vec<String>,
}

impl From<Vec<String>> for Decision {
    fn from(reasons: Vec<String>) -> Self {
        Self {
            reasons,
            notes: Vec::new(),
        }
    }
}

pub(crate) type PolicyFn = fn(&PolicyInput<'_>, &PolicyConfig) -> Decision;

/// Every policy, by name.
pub(crate) const POLICIES: &[(&str, PolicyFn)] = &[
    ("owner-present", owner_present),
    ("no-destruction", no_destruction),
    ("prod-requires-approval", prod_requires_approval),
    ("max-step-timeout", max_step_timeout),
    ("sandbox-limits", sandbox_limits),
];

/// Evaluate every policy on `spec` and its resolved `plan`. Never stops at the first denial: a
/// user fixing a job wants every reason at once.
pub fn evaluate_policies(
    spec: &JobSpec,
    plan: &[PlannedStep],
    config: &PolicyConfig,
) -> PolicyReport {
    let input = PolicyInput { spec, plan };
    let verdicts = POLICIES
        .iter()
        .map(|(name, policy)| {
            let Decision { reasons, notes } = policy(&input, config);
            Verdict {
                policy: (*name).to_owned(),
                allowed: reasons.is_empty(),
                reasons,
                notes,
            }
        })
        .collect();
    PolicyReport { verdicts }
}

fn owner_present(input: &PolicyInput<'_>, _config: &PolicyConfig) -> Decision {
    match input.spec.owner.as_deref().map(identity::normalize) {
        Some(owner) if !owner.is_empty() => Decision::default(),
        Some(_) => vec!["owner is blank; name the person or team responsible".to_owned()].into(),
        None => vec!["owner is missing; name the person or team responsible".to_owned()].into(),
    }
}

/// How long `no-destruction` may take over all of a job's steps together: a spec of a thousand
/// steps is decided as fast as one, and what is left when the time is up counts as too complex.
const ANALYSIS_WITHIN: Duration = Duration::from_millis(900);

fn no_destruction(input: &PolicyInput<'_>, _config: &PolicyConfig) -> Decision {
    let mut decision = Decision::default();
    let deadline = std::time::Instant::now() + ANALYSIS_WITHIN;
    for (index, step) in input.spec.steps.iter().enumerate() {
        // The values the step is known to receive: the job's env, then the step's.
        let mut merged_env = input.spec.env.clone();
        merged_env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let findings = match (&step.run, &step.command) {
            (Some(line), _) => analyse_shell_by(line, &merged_env, deadline),
            (None, Some(argv)) => analyse_argv_by(argv, &merged_env, deadline),
            (None, None) => Vec::new(),
        };
        let containment = input.containment(index);
        for finding in findings {
            let line = format!(
                "step {:?}: {} [{}]",
                step.name,
                finding.reason,
                finding.rule.id()
            );
            if finding.rule.kind() == Kind::Destructive {
                decision.reasons.push(line);
            } else if containment.is_contained() {
                decision.notes.push(format!(
                    "{line}; allowed because the step is contained ({})",
                    containment_name(containment)
                ));
            } else {
                decision.reasons.push(format!(
                    "{line}; what cannot be shown harmless runs only contained, and this step is \
                     not (isolation: none, or a runtime that does not contain its steps)"
                ));
            }
        }
    }
    decision
}

fn containment_name(containment: Containment) -> &'static str {
    match containment {
        Containment::Sandbox => "sandbox",
        Containment::Container => "container",
        Containment::None => "none",
    }
}

/// Whether an environment name means production, as people read it: `PROD`, ` prod `,
/// full-width `ｐｒｏｄ` all do.
fn is_production(environment: &str) -> bool {
    matches!(
        identity::normalize(environment).as_str(),
        "prod" | "production"
    )
}

fn prod_requires_approval(input: &PolicyInput<'_>, _config: &PolicyConfig) -> Decision {
    let spec = input.spec;
    let Some(environment) = spec.environment.as_deref() else {
        return Decision::default();
    };
    if !is_production(environment) {
        return Decision::default();
    }
    let approver = spec
        .approval
        .as_ref()
        .map(|approval| approval.approved_by.trim())
        .filter(|approver| !identity::normalize(approver).is_empty());
    match approver {
        None => vec![format!(
            "environment {environment:?} needs approval.approved_by naming who approved the job"
        )]
        .into(),
        Some(approver)
            if spec
                .owner
                .as_deref()
                .is_some_and(|owner| identity::same_identity(owner, approver)) =>
        {
            vec![format!(
                "approver {approver:?} is the job's owner; someone else must approve a production job"
            )]
            .into()
        }
        Some(_) => Decision::default(),
    }
}

/// System trees: nothing in them, and nothing that holds them, may be writable in a sandbox.
/// The sandbox holds the same lists and applies them again to the real paths it binds (a
/// link can lead where a name does not say); a test of `maestro-local` keeps the two equal.
pub const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

/// Directories that hold other people's data or the system's state: they may not be writable
/// as a whole, though a directory of the job's own below them may (`/var/lib/ci/cache`).
pub const SHARED_DIRS: &[&str] = &[
    "/var",
    "/var/lib",
    "/var/cache",
    "/var/log",
    "/home",
    "/root",
    "/opt",
    "/srv",
    "/mnt",
    "/media",
];

/// Why `path` may not be writable in a sandbox, if it may not.
fn system_path(path: &Path) -> Option<&'static str> {
    let path = lexical(path);
    let tree = SYSTEM_TREES
        .iter()
        .any(|dir| path.starts_with(dir) || Path::new(dir).starts_with(&path));
    if tree {
        Some("is, holds or lies in a system directory")
    } else if SHARED_DIRS.iter().any(|dir| path == Path::new(dir)) {
        Some("is a directory shared by the whole machine")
    } else {
        None
    }
}

fn sandbox_limits(input: &PolicyInput<'_>, config: &PolicyConfig) -> Decision {
    let mut reasons = Vec::new();
    for step in input.plan {
        for access in &step.host_access {
            if !config.allowed_host_access.contains(access) {
                reasons.push(format!(
                    "step {:?}: host_access {access} is not allowed here{}",
                    step.name,
                    if *access == HostAccess::DockerSocket {
                        " (talking to the Docker socket is root on the host); run the step with runtime: docker instead"
                    } else {
                        "; ask an administrator to allow it (MAESTRO_ALLOWED_HOST_ACCESS)"
                    }
                ));
            }
        }
        if step.containment == Containment::Sandbox
            && let Some(problem) = system_path(&step.workspace)
        {
            reasons.push(format!(
                "step {:?}: its workspace {} {problem}, and a sandboxed step may write its whole workspace; run the job from a directory of its own (or set workdir)",
                step.name,
                step.workspace.display()
            ));
        }
        for path in &step.writable_paths {
            let path = lexical(path);
            if let Some(problem) = system_path(&path) {
                reasons.push(format!(
                    "step {:?}: writable_paths {} {problem}; name a directory of the job's own, such as a build cache",
                    step.name,
                    path.display()
                ));
            }
            for protected in &config.protected_paths {
                let protected = lexical(protected);
                if protected.starts_with(&path) || path.starts_with(&protected) {
                    reasons.push(format!(
                        "step {:?}: writable_paths {} overlaps Maestro's state root {}, which no step may write",
                        step.name,
                        path.display(),
                        protected.display()
                    ));
                }
            }
        }
    }
    reasons.into()
}

/// `path` with `.` and `..` resolved lexically (never through the filesystem: policy reads no
/// files), so `/work/../etc` is seen as `/etc`.
fn lexical(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn max_step_timeout(input: &PolicyInput<'_>, config: &PolicyConfig) -> Decision {
    let spec = input.spec;
    let max = config.max_step_timeout.as_secs();
    spec.steps
        .iter()
        .filter_map(|step| {
            let effective = step
                .timeout_seconds
                .unwrap_or(config.default_step_timeout.as_secs());
            (effective > max).then(|| {
                format!(
                    "step {:?}: timeout of {effective} s exceeds the maximum of {max} s",
                    step.name
                )
            })
        })
        .collect::<Vec<_>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SpecFormat, parse};

    fn spec(text: &str) -> JobSpec {
        parse(text.as_bytes(), SpecFormat::Json).unwrap()
    }

    /// The plan of a spec whose every step is contained as `containment` says.
    fn plan(spec: &JobSpec, containment: Containment) -> Vec<PlannedStep> {
        spec.steps
            .iter()
            .map(|step| PlannedStep {
                name: step.name.clone(),
                runtime: "local".to_owned(),
                containment,
                workspace: "/work/job".into(),
                writable_paths: Vec::new(),
                host_access: Vec::new(),
            })
            .collect()
    }

    /// Every verdict on `spec` run on a bare host (the strictest case).
    fn evaluate(spec: &JobSpec, config: &PolicyConfig) -> PolicyReport {
        evaluate_policies(spec, &plan(spec, Containment::None), config)
    }

    /// The reasons one policy gives on `spec`, steps not contained.
    fn reasons(policy: PolicyFn, spec: &JobSpec, config: &PolicyConfig) -> Vec<String> {
        let plan = plan(spec, Containment::None);
        policy(&PolicyInput { spec, plan: &plan }, config).reasons
    }

    fn denied_by(report: &PolicyReport) -> Vec<&str> {
        report.denials().map(|v| v.policy.as_str()).collect()
    }

    #[test]
    fn a_good_job_is_allowed_by_every_policy() {
        let report = evaluate(
            &spec(
                r#"{"name":"j","owner":"ana","environment":"dev","steps":[{"name":"s","run":"rm -rf ./build"}]}"#,
            ),
            &PolicyConfig::default(),
        );
        assert!(report.allowed(), "{report:?}");
        assert_eq!(report.verdicts.len(), POLICIES.len());
    }

    #[test]
    fn every_violation_is_reported() {
        let report = evaluate(
            &spec(
                r#"{"name":"j","owner":"  ","environment":" PROD ",
                    "steps":[{"name":"s","run":"sudo rm -r -f /","timeout_seconds":99999}]}"#,
            ),
            &PolicyConfig::default(),
        );
        assert_eq!(
            denied_by(&report),
            [
                "owner-present",
                "no-destruction",
                "prod-requires-approval",
                "max-step-timeout"
            ]
        );
        assert!(report.verdicts[1].reasons[0].contains("step \"s\""));
    }

    #[test]
    fn owner_missing_or_blank() {
        let config = PolicyConfig::default();
        assert_eq!(
            reasons(
                owner_present,
                &spec(r#"{"name":"j","steps":[{"name":"s","run":"true"}]}"#),
                &config
            )
            .len(),
            1
        );
        assert_eq!(
            reasons(
                owner_present,
                &spec(r#"{"name":"j","owner":"\t","steps":[{"name":"s","run":"true"}]}"#),
                &config
            )
            .len(),
            1
        );
    }

    #[test]
    fn production_needs_an_approver_who_is_not_the_owner() {
        let config = PolicyConfig::default();
        let base = |env: &str, approval: &str| {
            spec(&format!(
                r#"{{"name":"j","owner":"ana","environment":"{env}",{approval}"steps":[{{"name":"s","run":"true"}}]}}"#
            ))
        };
        assert_eq!(
            reasons(prod_requires_approval, &base("Production", ""), &config).len(),
            1
        );
        assert_eq!(
            reasons(
                prod_requires_approval,
                &base("prod", r#""approval":{"approved_by":" "},"#),
                &config
            )
            .len(),
            1
        );
        assert_eq!(
            reasons(
                prod_requires_approval,
                &base("prod", r#""approval":{"approved_by":"ANA"},"#),
                &config
            )
            .len(),
            1
        );
        assert!(
            reasons(
                prod_requires_approval,
                &base(
                    "prod",
                    r#""approval":{"approved_by":"bo","reason":"release"},"#
                ),
                &config
            )
            .is_empty()
        );
        assert!(reasons(prod_requires_approval, &base("staging", ""), &config).is_empty());
        assert!(
            reasons(
                prod_requires_approval,
                &base("production-like", ""),
                &config
            )
            .is_empty()
        );
    }

    #[test]
    fn step_timeouts_use_the_default_when_absent() {
        let job = spec(
            r#"{"name":"j","steps":[{"name":"a","run":"true"},{"name":"b","run":"true","timeout_seconds":3601}]}"#,
        );
        let config = PolicyConfig::default();
        assert_eq!(reasons(max_step_timeout, &job, &config).len(), 1);
        let strict = PolicyConfig {
            default_step_timeout: Duration::from_secs(900),
            max_step_timeout: Duration::from_secs(600),
            ..PolicyConfig::default()
        };
        assert_eq!(reasons(max_step_timeout, &job, &strict).len(), 2);
    }

    #[test]
    fn argv_commands_are_analysed_too() {
        let job = spec(
            r#"{"name":"j","owner":"a","steps":[{"name":"s","command":["sh","-c","rm -rf /"]}]}"#,
        );
        assert_eq!(
            denied_by(&evaluate(&job, &PolicyConfig::default())),
            ["no-destruction"]
        );
    }

    #[test]
    fn what_cannot_be_analysed_runs_only_contained() {
        let job =
            spec(r#"{"name":"j","owner":"a","steps":[{"name":"s","run":"echo 'unterminated"}]}"#);
        let config = PolicyConfig::default();
        let bare = evaluate_policies(&job, &plan(&job, Containment::None), &config);
        assert_eq!(denied_by(&bare), ["no-destruction"], "{bare:?}");
        assert!(bare.verdicts[1].reasons[0].contains("not"), "{bare:?}");
        for contained in [Containment::Sandbox, Containment::Container] {
            let report = evaluate_policies(&job, &plan(&job, contained), &config);
            assert!(report.allowed(), "{report:?}");
            assert_eq!(report.verdicts[1].notes.len(), 1, "{report:?}");
        }
    }

    #[test]
    fn destructive_commands_are_denied_even_contained() {
        let job = spec(r#"{"name":"j","owner":"a","steps":[{"name":"s","run":"rm -rf /"}]}"#);
        let report = evaluate_policies(
            &job,
            &plan(&job, Containment::Sandbox),
            &PolicyConfig::default(),
        );
        assert_eq!(denied_by(&report), ["no-destruction"]);
    }

    #[test]
    fn identities_are_compared_as_people_read_them() {
        let config = PolicyConfig::default();
        let job = spec(
            r#"{"name":"j","owner":"ana","environment":"ＰＲＯＤ","approval":{"approved_by":"ａｎａ"},
                "steps":[{"name":"s","run":"true"}]}"#,
        );
        let found = reasons(prod_requires_approval, &job, &config);
        assert_eq!(found.len(), 1, "full-width ana is ana: {found:?}");
        assert!(found[0].contains("owner"), "{found:?}");
    }

    #[test]
    fn host_access_and_writable_paths_are_limited() {
        let job = spec(r#"{"name":"j","owner":"a","steps":[{"name":"s","run":"true"}]}"#);
        let mut steps = plan(&job, Containment::Sandbox);
        steps[0].host_access = vec![HostAccess::DockerSocket, HostAccess::Ssh];
        steps[0].writable_paths = vec![
            "/work/cache".into(),
            "/work/../etc".into(),
            "/srv/state/jobs".into(),
            "/".into(),
        ];
        let config = PolicyConfig {
            protected_paths: vec!["/srv/state".into()],
            ..PolicyConfig::default()
        };
        let found = evaluate_policies(&job, &steps, &config);
        let limits = &found.verdicts[4];
        assert_eq!(limits.policy, "sandbox-limits");
        assert_eq!(limits.reasons.len(), 5, "{limits:?}");
        assert!(limits.reasons[0].contains("docker-socket"), "{limits:?}");
        assert!(
            limits.reasons.iter().any(|r| r.contains("/etc")),
            "{limits:?}"
        );
        assert!(
            limits.reasons.iter().any(|r| r.contains("state root")),
            "{limits:?}"
        );
        steps[0].host_access = vec![HostAccess::Ssh];
        steps[0].writable_paths = vec!["/work/cache".into(), "/var/lib/ci/cache".into()];
        assert!(evaluate_policies(&job, &steps, &config).allowed());
        for workspace in ["/", "/etc/app", "/usr", "/var", "/home"] {
            steps[0].workspace = workspace.into();
            let found = evaluate_policies(&job, &steps, &config);
            assert!(!found.allowed(), "workspace {workspace}");
            assert!(
                found.verdicts[4].reasons[0].contains("workspace"),
                "{found:?}"
            );
        }
        for workspace in [
            "/root/project",
            "/var/lib/jenkins/ws",
            "/home/ana/src",
            "/tmp/x",
        ] {
            steps[0].workspace = workspace.into();
            assert!(
                evaluate_policies(&job, &steps, &config).allowed(),
                "workspace {workspace}"
            );
        }
        // A bare step's workspace is only its working directory: nothing is made writable.
        steps[0].workspace = "/".into();
        steps[0].containment = Containment::None;
        assert!(evaluate_policies(&job, &steps, &config).allowed());
    }

    #[test]
    fn a_thousand_steps_are_decided_together_within_the_budget() {
        let step = r#"{"name":"s%","run":"x=a; for i in 1 2 3; do x=$x$x; done; case $x in a) echo $x;; esac | grep -c a | tee n.txt"}"#;
        let steps: Vec<String> = (0..1000)
            .map(|i| step.replace('%', &i.to_string()))
            .collect();
        let job = spec(&format!(
            r#"{{"name":"j","owner":"a","steps":[{}]}}"#,
            steps.join(",")
        ));
        let started = std::time::Instant::now();
        let report = evaluate(&job, &PolicyConfig::default());
        // Not a speed test: without the shared budget this takes a thousand analyses' time;
        // with it, 0.9 s plus at most one short analysis, whatever the machine's load.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(report.verdicts.len(), POLICIES.len());
    }
}
