//! Policies: every one is evaluated before a job may run, and every verdict is kept.
//!
//! [`evaluate_policies`] is the only entry point the runner uses. Adding a policy means adding a
//! function to [`POLICIES`]; nothing else changes. Policies see the spec only, never the runtime
//! that will run it, so moving a step to another executor cannot change a verdict.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use maestro_analyser::{Finding, Kind, Rule, analyse_argv, analyse_shell};

use crate::spec::JobSpec;

/// Settings the policies depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// The timeout of a step that gives none.
    pub default_step_timeout: Duration,
    /// The largest effective step timeout `max-step-timeout` allows.
    pub max_step_timeout: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            default_step_timeout: Duration::from_secs(600),
            max_step_timeout: Duration::from_secs(3600),
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
}

/// Every policy's verdict on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// The verdicts, in the order the policies are listed in [`POLICIES`].
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

type PolicyFn = fn(&JobSpec, &PolicyConfig) -> Vec<String>;

/// Every policy, by name: each returns the reasons it denies a job, none when it allows it.
pub const POLICIES: &[(&str, PolicyFn)] = &[
    ("owner-present", owner_present),
    ("no-destruction", no_destruction),
    ("prod-requires-approval", prod_requires_approval),
    ("max-step-timeout", max_step_timeout),
];

/// Evaluate every policy on `spec`. Never stops at the first denial: a user fixing a job wants
/// every reason at once.
pub fn evaluate_policies(spec: &JobSpec, config: &PolicyConfig) -> PolicyReport {
    let verdicts = POLICIES
        .iter()
        .map(|(name, policy)| {
            let reasons = policy(spec, config);
            Verdict {
                policy: (*name).to_owned(),
                allowed: reasons.is_empty(),
                reasons,
            }
        })
        .collect();
    PolicyReport { verdicts }
}

fn owner_present(spec: &JobSpec, _config: &PolicyConfig) -> Vec<String> {
    match spec.owner.as_deref().map(str::trim) {
        Some(owner) if !owner.is_empty() => Vec::new(),
        Some(_) => vec!["owner is blank; name the person or team responsible".to_owned()],
        None => vec!["owner is missing; name the person or team responsible".to_owned()],
    }
}

fn no_destruction(spec: &JobSpec, _config: &PolicyConfig) -> Vec<String> {
    let mut reasons = Vec::new();
    for step in &spec.steps {
        let mut merged_env = spec.env.clone();
        merged_env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let findings = match (&step.run, &step.command) {
            (Some(line), _) => analyse_shell(line, &merged_env),
            (None, Some(argv)) => analyse_argv(argv, &merged_env),
            (None, None) => Vec::new(),
        };
        reasons.extend(findings.into_iter().map(|finding| {
            format!(
                "step {:?}: {} [{}]",
                step.name,
                finding.reason,
                finding.rule.id()
            )
        }));
    }
    reasons
}

/// Whether an environment name means production, whatever its case or surrounding blanks.
fn is_production(environment: &str) -> bool {
    let environment = environment.trim();
    environment.eq_ignore_ascii_case("prod") || environment.eq_ignore_ascii_case("production")
}

fn prod_requires_approval(spec: &JobSpec, _config: &PolicyConfig) -> Vec<String> {
    let Some(environment) = spec.environment.as_deref() else {
        return Vec::new();
    };
    if !is_production(environment) {
        return Vec::new();
    }
    let approver = spec
        .approval
        .as_ref()
        .map(|approval| approval.approved_by.trim())
        .filter(|approver| !approver.is_empty());
    match approver {
        None => vec![format!(
            "environment {environment:?} needs approval.approved_by naming who approved the job"
        )],
        Some(approver)
            if spec
                .owner
                .as_deref()
                .is_some_and(|owner| owner.trim().eq_ignore_ascii_case(approver)) =>
        {
            vec![format!(
                "approver {approver:?} is the job's owner; someone else must approve a production job"
            )]
        }
        Some(_) => Vec::new(),
    }
}

fn max_step_timeout(spec: &JobSpec, config: &PolicyConfig) -> Vec<String> {
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SpecFormat, parse};

    fn spec(text: &str) -> JobSpec {
        parse(text.as_bytes(), SpecFormat::Json).unwrap()
    }

    fn denied_by(report: &PolicyReport) -> Vec<&str> {
        report.denials().map(|v| v.policy.as_str()).collect()
    }

    #[test]
    fn a_good_job_is_allowed_by_every_policy() {
        let report = evaluate_policies(
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
        let report = evaluate_policies(
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
            owner_present(
                &spec(r#"{"name":"j","steps":[{"name":"s","run":"true"}]}"#),
                &config
            )
            .len(),
            1
        );
        assert_eq!(
            owner_present(
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
            prod_requires_approval(&base("Production", ""), &config).len(),
            1
        );
        assert_eq!(
            prod_requires_approval(&base("prod", r#""approval":{"approved_by":" "},"#), &config)
                .len(),
            1
        );
        assert_eq!(
            prod_requires_approval(
                &base("prod", r#""approval":{"approved_by":"ANA"},"#),
                &config
            )
            .len(),
            1
        );
        assert!(
            prod_requires_approval(
                &base(
                    "prod",
                    r#""approval":{"approved_by":"bo","reason":"release"},"#
                ),
                &config
            )
            .is_empty()
        );
        assert!(prod_requires_approval(&base("staging", ""), &config).is_empty());
        assert!(prod_requires_approval(&base("production-like", ""), &config).is_empty());
    }

    #[test]
    fn step_timeouts_use_the_default_when_absent() {
        let job = spec(
            r#"{"name":"j","steps":[{"name":"a","run":"true"},{"name":"b","run":"true","timeout_seconds":3601}]}"#,
        );
        let config = PolicyConfig::default();
        assert_eq!(max_step_timeout(&job, &config).len(), 1);
        let strict = PolicyConfig {
            default_step_timeout: Duration::from_secs(900),
            max_step_timeout: Duration::from_secs(600),
        };
        assert_eq!(max_step_timeout(&job, &strict).len(), 2);
    }

    #[test]
    fn argv_commands_are_analysed_too() {
        let job = spec(
            r#"{"name":"j","owner":"a","steps":[{"name":"s","command":["sh","-c","rm -rf /"]}]}"#,
        );
        assert_eq!(
            denied_by(&evaluate_policies(&job, &PolicyConfig::default())),
            ["no-destruction"]
        );
    }
}
