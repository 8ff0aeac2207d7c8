//! How a step's request becomes a replicated-job service: checks, labels, limits, command.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    Limit, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges, TaskSpecLogDriver, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use maestro_core::executor::StepRequest;
use maestro_core::spec::{Network, PullPolicy};
use maestro_docker::{
    DROPPED_CAPABILITIES, INIT_SIGNALS_GROUP, LABEL_JOB_ID, LABEL_MANAGED, LABEL_STEP,
    LABEL_TRACE_ID, WORKSPACE,
};

/// The runtime name `mc` registers this executor under.
pub const RUNTIME: &str = "swarm";
/// Marks the services and task containers of the swarm runtime (value [`RUNTIME`]), so that
/// cleanup never mistakes a docker step's container for a task's.
pub const LABEL_RUNTIME: &str = "maestro.runtime";
/// How long a task may stay pending (no node fits) when the step does not say.
pub const DEFAULT_SCHEDULE_TIMEOUT: Duration = Duration::from_secs(60);
/// The label the engine puts on every task container: the id of its service.
pub(crate) const LABEL_SERVICE_ID: &str = "com.docker.swarm.service.id";
/// The engine refuses memory limits below 6 MiB.
const MIN_MEMORY_BYTES: i64 = 6 * 1024 * 1024;

/// Check a step's settings for the swarm runtime; nothing here needs the engine.
pub(crate) fn check_step(step: &StepRequest) -> Result<(), String> {
    let name = &step.name;
    let Some(image) = step.container.image.as_deref() else {
        return Err(format!(
            "step {name:?} runs on the swarm runtime but names no image; set image on the step or a default image on the job"
        ));
    };
    maestro_docker::check_image_and_command(step, image, "swarm")?;
    let settings = &step.container;
    if let Some(memory) = settings.memory_bytes
        && memory < MIN_MEMORY_BYTES
    {
        return Err(format!(
            "step {name:?}: memory must be at least 6m; the Docker engine refuses smaller limits"
        ));
    }
    if let Some(cpus) = settings.cpus
        && cpus < 0.01
    {
        return Err(format!(
            "step {name:?}: cpus must be at least 0.01; the Docker engine refuses smaller limits"
        ));
    }
    if let Some(user) = settings.user.as_deref()
        && !is_valid_user(user)
    {
        return Err(format!(
            "step {name:?}: user {:?} is not a user such as 1000, 1000:1000 or nobody",
            user.chars().take(80).collect::<String>()
        ));
    }
    if settings.network == Some(Network::None) {
        return Err(format!(
            "step {name:?}: network: none is not available on the swarm runtime (a service can join the swarm's networks and the nodes' host and bridge networks, not none; without any its task gets the node's default bridge); remove it or use the docker runtime"
        ));
    }
    if matches!(settings.pull, Some(PullPolicy::Always | PullPolicy::Never)) {
        return Err(format!(
            "step {name:?}: the swarm runtime pins the image to its digest and each node pulls it when missing, so pull: always and pull: never cannot be honoured; remove pull"
        ));
    }
    if let Some(workdir) = step.workdir.as_deref() {
        if workdir.chars().any(char::is_control) {
            return Err(format!(
                "step {name:?}: workdir contains a control character"
            ));
        }
        let assumes_workspace = !workdir.starts_with('/')
            || workdir == WORKSPACE
            || workdir.starts_with(&format!("{WORKSPACE}/"));
        if assumes_workspace {
            return Err(format!(
                "step {name:?}: workdir {:?} assumes the job's workspace, but swarm nodes do not share the submitter's disk and no workspace is mounted; use an absolute directory inside the image (such as /tmp), or drop workdir",
                workdir.chars().take(80).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// `user`, `uid`, `user:group` or `uid:gid`, as `docker run --user` takes it.
fn is_valid_user(user: &str) -> bool {
    let part_ok = |part: &str| {
        (1..=64).contains(&part.len())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let mut parts = user.splitn(2, ':');
    parts.next().is_some_and(part_ok) && parts.next().is_none_or(part_ok)
}

/// How long the step's task may stay pending.
pub(crate) fn schedule_timeout(step: &StepRequest) -> Duration {
    step.container
        .schedule_timeout
        .unwrap_or(DEFAULT_SCHEDULE_TIMEOUT)
}

/// The labels of a step's service and of its task's container.
pub(crate) fn labels(step: &StepRequest) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_JOB_ID.to_owned(), step.job_id.to_string()),
        (LABEL_STEP.to_owned(), step.name.clone()),
        (LABEL_TRACE_ID.to_owned(), step.trace_id.to_string()),
        (LABEL_RUNTIME.to_owned(), RUNTIME.to_owned()),
    ])
}

/// The service's name: `maestro-<job id>-<step index>` (step names may be longer than the
/// 63 characters a service name may have).
pub(crate) fn service_name(step: &StepRequest) -> String {
    format!("maestro-{}-{}", step.job_id, step.index)
}

/// The service for `step`, running `image` (already pinned to its digest): a replicated job of
/// one task that is never restarted, stopped with `grace` before it is killed.
pub(crate) fn service_spec(step: &StepRequest, image: &str, grace: Duration) -> ServiceSpec {
    let settings = &step.container;
    // The step's declared secrets too, as for a Docker step (never in argv).
    let mut env: Vec<String> = step
        .env_with_secrets()
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    let (name, value) = INIT_SIGNALS_GROUP;
    if !step.env.contains_key(name) {
        env.push(format!("{name}={value}"));
    }
    let limits = Limit {
        nano_cpus: settings.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        memory_bytes: settings.memory_bytes,
        pids: settings.pids_limit,
    };
    ServiceSpec {
        name: Some(service_name(step)),
        labels: Some(labels(step)),
        mode: Some(ServiceSpecMode {
            // Never global-job: it runs a task on every node, and restarts failing ones.
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: Some(1),
                total_completions: Some(1),
            }),
            ..ServiceSpecMode::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_owned()),
                labels: Some(labels(step)),
                // `Command` replaces the image's entrypoint, as the docker runtime does.
                command: Some(step.command.to_argv()),
                env: Some(env),
                dir: step.workdir.clone(),
                user: settings.user.clone(),
                read_only: settings.read_only_rootfs,
                init: Some(true),
                capability_drop: Some(DROPPED_CAPABILITIES.map(str::to_owned).to_vec()),
                // As on the docker runtime. Engines of API 1.50 and later apply it; Docker
                // 20.10 (API 1.41) accepts the field and drops it (its task runs with
                // `NoNewPrivs: 0`, which the tests check), so there it is asked for in vain.
                privileges: Some(TaskSpecContainerSpecPrivileges {
                    no_new_privileges: Some(true),
                    ..TaskSpecContainerSpecPrivileges::default()
                }),
                stop_grace_period: Some(i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX)),
                ..TaskSpecContainerSpec::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(limits),
                ..TaskSpecResources::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                max_attempts: Some(0),
                ..TaskSpecRestartPolicy::default()
            }),
            placement: (!settings.placement.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(settings.placement.clone()),
                ..TaskSpecPlacement::default()
            }),
            // The output is read back through the manager (service logs), which needs a log
            // driver the engine can read, whatever the node's default.
            log_driver: Some(TaskSpecLogDriver {
                name: Some("json-file".to_owned()),
                options: None,
            }),
            ..TaskSpec::default()
        }),
        ..ServiceSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use maestro_core::JobId;
    use maestro_core::executor::{CommandLine, ContainerSettings};
    use maestro_core::trace::TraceId;

    use super::*;

    fn step() -> StepRequest {
        StepRequest {
            host_env: Default::default(),
            secrets: Default::default(),
            span_id: maestro_core::trace::SpanId::generate(),
            job_id: JobId::now_v7(),
            job_name: "j".to_owned(),
            trace_id: TraceId::parse("trace-1").unwrap(),
            index: 2,
            name: "build".to_owned(),
            runtime: RUNTIME.to_owned(),
            command: CommandLine::Shell("echo hi".to_owned()),
            env: BTreeMap::from([("TRACE_ID".to_owned(), "trace-1".to_owned())]),
            workspace: PathBuf::from("/src"),
            workdir: None,
            timeout: Duration::from_secs(10),
            container: ContainerSettings {
                image: Some("maestro-test/busybox:latest".to_owned()),
                ..ContainerSettings::default()
            },
            reuse_container: false,
            with: None,
            isolation: Default::default(),
            writable_paths: Vec::new(),
            host_access: Vec::new(),
        }
    }

    #[test]
    fn a_step_is_a_replicated_job_of_one_task_never_restarted() {
        let mut step = step();
        step.container.memory_bytes = Some(64 << 20);
        step.container.cpus = Some(0.5);
        step.container.pids_limit = Some(32);
        step.container.user = Some("1000:1000".to_owned());
        step.container.placement = vec!["node.role==manager".to_owned()];
        let spec = service_spec(&step, "sha256:abc", Duration::from_secs(3));
        let mode = spec.mode.unwrap();
        assert!(mode.global_job.is_none() && mode.global.is_none() && mode.replicated.is_none());
        let job = mode.replicated_job.unwrap();
        assert_eq!(
            (job.max_concurrent, job.total_completions),
            (Some(1), Some(1))
        );
        let task = spec.task_template.unwrap();
        assert_eq!(
            task.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!(limits.nano_cpus, Some(500_000_000));
        assert_eq!(limits.memory_bytes, Some(64 << 20));
        assert_eq!(limits.pids, Some(32));
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            ["node.role==manager"]
        );
        let container = task.container_spec.unwrap();
        assert_eq!(container.image.as_deref(), Some("sha256:abc"));
        assert_eq!(container.command.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(container.user.as_deref(), Some("1000:1000"));
        assert_eq!(container.stop_grace_period, Some(3_000_000_000));
        assert!(container.mounts.is_none(), "no workspace, no mount");
        assert_eq!(
            container.privileges.unwrap().no_new_privileges,
            Some(true),
            "as on the docker runtime, where the engine applies it"
        );
        let env = container.env.unwrap();
        assert!(env.contains(&"TRACE_ID=trace-1".to_owned()), "{env:?}");
        let labels = container.labels.unwrap();
        assert_eq!(labels[LABEL_JOB_ID], step.job_id.to_string());
        assert_eq!(labels[LABEL_RUNTIME], RUNTIME);
        assert_eq!(spec.labels.unwrap()[LABEL_STEP], "build");
        assert_eq!(spec.name.unwrap(), format!("maestro-{}-2", step.job_id));
    }

    #[test]
    fn settings_that_assume_the_submitters_disk_or_cannot_be_honoured_are_refused() {
        for (workdir, refused) in [
            ("build", true),
            ("./x", true),
            ("/workspace", true),
            ("/workspace/sub", true),
            ("/tmp", false),
            ("/workspaces", false),
        ] {
            let mut step = step();
            step.workdir = Some(workdir.to_owned());
            let result = check_step(&step);
            assert_eq!(result.is_err(), refused, "{workdir}: {result:?}");
            if let Err(message) = result {
                assert!(message.contains("workspace"), "{message}");
            }
        }
        let mut step = step();
        step.container.image = None;
        assert!(check_step(&step).unwrap_err().contains("names no image"));
        let mut step = self::step();
        step.container.network = Some(Network::None);
        assert!(check_step(&step).unwrap_err().contains("network: none"));
        let mut step = self::step();
        step.container.pull = Some(PullPolicy::Never);
        assert!(check_step(&step).unwrap_err().contains("pull"));
        let mut step = self::step();
        step.container.memory_bytes = Some(1024);
        assert!(check_step(&step).unwrap_err().contains("6m"));
        let mut step = self::step();
        step.with = Some(serde_json::json!({}));
        assert!(check_step(&step).is_err());
        assert!(check_step(&self::step()).is_ok());
    }
}
