//! How a step's request becomes a container's configuration: labels, limits, mounts, command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, ExecConfig, HostConfig, HostConfigLogConfig, Mount, MountType,
};
use maestro_core::JobId;
use maestro_core::executor::{ContainerSettings, StepRequest};
use maestro_core::spec::Network;

/// Where the job's workspace is mounted inside every container, and the default working dir.
pub const WORKSPACE: &str = "/workspace";
/// Marks every container Maestro created; `mc gc` looks for it.
pub const LABEL_MANAGED: &str = "maestro.managed";
/// The job a container belongs to.
pub const LABEL_JOB_ID: &str = "maestro.job_id";
/// The step a container runs (`*shared*` for a job's reused container).
pub const LABEL_STEP: &str = "maestro.step";
/// The job's trace id.
pub const LABEL_TRACE_ID: &str = "maestro.trace_id";

/// The step label of a container kept for a job (`reuse_container: true`).
pub(crate) const SHARED_STEP_LABEL: &str = "*shared*";
/// The command that keeps a reused container alive between execs (about 68 years).
const KEEP_ALIVE: [&str; 2] = ["sleep", "2147483647"];
/// Makes the engine's init (tini) forward signals to the step's whole process group, not only
/// to its main process, as the local runtime signals a step's process group: a step's children
/// get SIGTERM too, and can clean up before the grace period ends.
pub const INIT_SIGNALS_GROUP: (&str, &str) = ("TINI_KILL_PROCESS_GROUP", "1");
/// The engine refuses memory limits below 6 MiB.
const MIN_MEMORY_BYTES: i64 = 6 * 1024 * 1024;

/// Where the engine's socket usually is; a workspace must never contain it.
const DEFAULT_SOCKETS: [&str; 2] = ["/run/docker.sock", "/var/run/docker.sock"];
/// Host directories a workspace must never contain: the runtime directories, where the
/// sockets of the engine, containerd and others live (each of them is root on the host), and
/// the engine's and containerd's state (images, other containers' filesystems).
const NEVER_CONTAINED: [&str; 4] = ["/run", "/var/run", "/var/lib/docker", "/var/lib/containerd"];
/// Host directories a workspace must never be nor lie in: runtime sockets and the kernel's
/// interfaces, which no project directory is, and which a container must never get read-write.
const NEVER_INSIDE: [&str; 5] = ["/run", "/var/run", "/proc", "/sys", "/dev"];

/// The no-new-privileges security option: no process of the container can gain privileges
/// through setuid or file capabilities, as a sandboxed local step cannot. The engine's default
/// seccomp profile is kept (no `seccomp=...` option is given, and `Privileged` is false).
pub(crate) const NO_NEW_PRIVILEGES: &str = "no-new-privileges";

/// Capabilities dropped from the engine's default set, which no build step needs:
///
/// * `NET_RAW`: raw and packet sockets (spoofing, sniffing the bridge); `ping` still works on
///   Docker 20.10 and later, which allow ICMP datagram sockets in containers;
/// * `MKNOD`: creating device nodes (FIFOs and sockets need no capability);
/// * `AUDIT_WRITE`: writing to the host kernel's audit log;
/// * `SYS_CHROOT`: `chroot`, a step into another root filesystem;
/// * `SETFCAP`: putting file capabilities on binaries (a package's `setcap` falls back to
///   setuid, and no-new-privileges makes both inert anyway).
///
/// Kept, because ordinary images and package managers need them: `CHOWN`, `DAC_OVERRIDE`,
/// `FOWNER`, `FSETID`, `SETUID`, `SETGID`, `SETPCAP`, `KILL`, `NET_BIND_SERVICE`.
pub const DROPPED_CAPABILITIES: [&str; 5] =
    ["NET_RAW", "MKNOD", "AUDIT_WRITE", "SYS_CHROOT", "SETFCAP"];

/// The paths of the engine's socket that a mounted workspace must not contain: the usual
/// places, and the path of each `unix://` address in `hosts` (`DOCKER_HOST`, the executor's).
pub(crate) fn engine_sockets<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Vec<PathBuf> {
    let mut sockets: Vec<PathBuf> = DEFAULT_SOCKETS.iter().map(PathBuf::from).collect();
    for host in hosts {
        if let Some(path) = host.trim().strip_prefix("unix://")
            && !path.is_empty()
        {
            sockets.push(PathBuf::from(path));
        }
    }
    sockets
}

/// `path` and, when it (or its parent) exists, its canonical form: a socket that does not exist
/// yet still counts, wherever symlinks put it.
fn socket_forms(path: &Path) -> Vec<PathBuf> {
    let mut forms = vec![path.to_path_buf()];
    let resolved = std::fs::canonicalize(path).ok().or_else(|| {
        let parent = std::fs::canonicalize(path.parent()?).ok()?;
        Some(parent.join(path.file_name()?))
    });
    if let Some(resolved) = resolved
        && !forms.contains(&resolved)
    {
        forms.push(resolved);
    }
    forms
}

/// The host directory to mount at [`WORKSPACE`] for `step`: its workspace, canonicalized (so a
/// symlink cannot smuggle another directory in), refused when it is missing, not a directory,
/// the host's root, or contains one of the engine's `sockets` (mounting it would hand the
/// container the engine, that is root on the host). Errors are one line naming the step.
pub(crate) fn workspace_source(step: &StepRequest, sockets: &[PathBuf]) -> Result<PathBuf, String> {
    let name = &step.name;
    let given = &step.workspace;
    if !given.is_absolute() {
        return Err(format!(
            "step {name:?}: the workspace {} is not an absolute path",
            given.display()
        ));
    }
    let workspace = std::fs::canonicalize(given).map_err(|error| {
        format!(
            "step {name:?}: the workspace {} cannot be used ({error}); create it or point workdir at an existing directory",
            given.display()
        )
    })?;
    let shown = if workspace == *given {
        given.display().to_string()
    } else {
        format!("{} (which is {})", given.display(), workspace.display())
    };
    if !workspace.is_dir() {
        return Err(format!(
            "step {name:?}: the workspace {shown} is not a directory; point workdir at a directory"
        ));
    }
    if workspace.parent().is_none() {
        return Err(format!(
            "step {name:?}: the workspace {shown} is the host's root directory, which a container must never get read-write; run mc from a project directory or set workdir to one"
        ));
    }
    for socket in sockets {
        if let Some(inside) = socket_forms(socket)
            .into_iter()
            .find(|form| form.starts_with(&workspace))
        {
            return Err(format!(
                "step {name:?}: the workspace {shown} contains the Docker engine's socket {}, and a container given it would control the engine; run mc from a project directory or set workdir to one",
                inside.display()
            ));
        }
    }
    for system in NEVER_CONTAINED {
        if let Some(inside) = socket_forms(Path::new(system))
            .into_iter()
            .find(|form| form.starts_with(&workspace))
        {
            return Err(format!(
                "step {name:?}: the workspace {shown} contains the host's {}, where the engine's sockets and state live, and a container given it could control the engine; run mc from a project directory or set workdir to one",
                inside.display()
            ));
        }
    }
    for system in NEVER_INSIDE {
        if let Some(system) = socket_forms(Path::new(system))
            .into_iter()
            .find(|form| workspace.starts_with(form))
        {
            return Err(format!(
                "step {name:?}: the workspace {shown} is inside the host's {}, which a container must never get read-write; run mc from a project directory or set workdir to one",
                system.display()
            ));
        }
    }
    Ok(workspace)
}

/// What every container runtime asks of a step (the docker runtime, the swarm runtime): an
/// image reference that can be one, no plugin `with` settings, a command. `runtime` names the
/// runtime in the messages.
pub fn check_image_and_command(
    step: &StepRequest,
    image: &str,
    runtime: &str,
) -> Result<(), String> {
    let name = &step.name;
    if image.is_empty()
        || image.len() > 255
        || image.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "step {name:?}: image {:?} is not an image reference such as alpine:3.20",
            image.chars().take(80).collect::<String>()
        ));
    }
    if step.with.is_some() {
        return Err(format!(
            "step {name:?}: the {runtime} runtime takes no `with` settings; remove them or choose a plugin runtime"
        ));
    }
    if step.command.to_argv().first().is_none_or(String::is_empty) {
        return Err(format!("step {name:?} has an empty command"));
    }
    Ok(())
}

/// Check a step's settings for the docker runtime: everything that needs no engine. The only
/// I/O is resolving the workspace ([`workspace_source`]); nothing is changed.
pub(crate) fn check_step(step: &StepRequest, sockets: &[PathBuf]) -> Result<(), String> {
    let name = &step.name;
    let Some(image) = step.container.image.as_deref() else {
        return Err(format!(
            "step {name:?} runs on the docker runtime but names no image; set image on the step or a default image on the job"
        ));
    };
    check_image_and_command(step, image, "docker")?;
    if !step.container.placement.is_empty() || step.container.schedule_timeout.is_some() {
        return Err(format!(
            "step {name:?}: placement and schedule_timeout_seconds are for the swarm runtime; remove them or set runtime: swarm"
        ));
    }
    if let Some(memory) = step.container.memory_bytes
        && memory < MIN_MEMORY_BYTES
    {
        return Err(format!(
            "step {name:?}: memory must be at least 6m; the Docker engine refuses smaller limits"
        ));
    }
    if let Some(cpus) = step.container.cpus
        && cpus < 0.01
    {
        return Err(format!(
            "step {name:?}: cpus must be at least 0.01; the Docker engine refuses smaller limits"
        ));
    }
    if let Some(user) = step.container.user.as_deref()
        && !is_valid_user(user)
    {
        return Err(format!(
            "step {name:?}: user {:?} is not a user such as 1000, 1000:1000 or nobody",
            user.chars().take(80).collect::<String>()
        ));
    }
    if let Some(workdir) = step.workdir.as_deref()
        && workdir.chars().any(char::is_control)
    {
        return Err(format!(
            "step {name:?}: workdir contains a control character"
        ));
    }
    workspace_source(step, sockets)?;
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

/// The working directory of a step inside its container: a relative `workdir` is taken from
/// the workspace, an absolute one as it is.
pub(crate) fn container_workdir(step: &StepRequest) -> String {
    match step.workdir.as_deref() {
        None | Some("" | ".") => WORKSPACE.to_owned(),
        Some(dir) if dir.starts_with('/') => dir.to_owned(),
        Some(dir) => format!("{WORKSPACE}/{}", dir.trim_start_matches("./")),
    }
}

/// The step's environment as `NAME=value` strings.
pub(crate) fn env_list(step: &StepRequest) -> Vec<String> {
    step.env_with_secrets()
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// The environment of a step's own container: the step's, plus [`INIT_SIGNALS_GROUP`] unless
/// the step sets that variable itself.
fn step_container_env(step: &StepRequest) -> Vec<String> {
    let mut env = env_list(step);
    let (name, value) = INIT_SIGNALS_GROUP;
    if !step.env.contains_key(name) {
        env.push(format!("{name}={value}"));
    }
    env
}

/// The labels of a container of `step`'s job; `step_label` is the step name or
/// [`SHARED_STEP_LABEL`].
pub(crate) fn labels(step: &StepRequest, step_label: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_JOB_ID.to_owned(), step.job_id.to_string()),
        (LABEL_STEP.to_owned(), step_label.to_owned()),
        (LABEL_TRACE_ID.to_owned(), step.trace_id.to_string()),
    ])
}

/// The label value of a placeholder `mc gc` creates to hold a container name (see
/// `Inner::settle_job`).
pub(crate) const PLACEHOLDER_STEP_LABEL: &str = "gc-placeholder";

/// A container that is never started, labelled as `job_id`'s: `mc gc` creates it to hold a
/// name while a creation a killed `mc` asked for may still be under way.
pub(crate) fn placeholder_container(job_id: JobId, image: &str) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["true".to_owned()]),
        network_disabled: Some(true),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_JOB_ID.to_owned(), job_id.to_string()),
            (LABEL_STEP.to_owned(), PLACEHOLDER_STEP_LABEL.to_owned()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Limits, network, mounts and the things a container never gets (privileges, the engine's
/// socket, the host's root): only the workspace is mounted, from `workspace` (the checked,
/// canonical path of [`workspace_source`]).
pub(crate) fn host_config(step: &StepRequest, workspace: &Path) -> HostConfig {
    let settings = &step.container;
    HostConfig {
        mounts: Some(vec![Mount {
            target: Some(WORKSPACE.to_owned()),
            source: Some(workspace.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Mount::default()
        }]),
        memory: settings.memory_bytes,
        // Without a swap limit the engine lets a container swap twice its memory; equal values
        // make `memory` the real ceiling, as a CI user expects.
        memory_swap: settings.memory_bytes,
        nano_cpus: settings.cpus.map(nano_cpus),
        pids_limit: settings.pids_limit,
        network_mode: Some(
            match settings.network.unwrap_or(Network::Bridge) {
                Network::Bridge => "bridge",
                Network::None => "none",
            }
            .to_owned(),
        ),
        readonly_rootfs: settings.read_only_rootfs,
        // The promise of a sandboxed local step, kept by the engine: no privileges, none to
        // gain, the engine's default seccomp profile (never `seccomp=unconfined`), and fewer
        // capabilities than the engine's default (see DROPPED_CAPABILITIES).
        privileged: Some(false),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.to_owned()]),
        cap_drop: Some(DROPPED_CAPABILITIES.map(str::to_owned).to_vec()),
        // The engine's init (docker-init) is PID 1 and forwards signals to the step's process:
        // a shell as PID 1 would ignore SIGTERM, so every stop would wait out the grace period
        // and end in SIGKILL. It also reaps the step's orphaned children.
        init: Some(true),
        // Maestro records the output itself, from the attach stream; a copy kept by the engine
        // would only cost disk (a step that prints gigabytes would fill /var/lib/docker) and
        // the engine's time.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".to_owned()),
            config: None,
        }),
        ..HostConfig::default()
    }
}

/// CPUs as the engine's `NanoCpus`.
fn nano_cpus(cpus: f64) -> i64 {
    // Validation keeps cpus within (0, 1024], so this cannot overflow.
    (cpus * 1e9).round() as i64
}

/// Whether the engine removes `step`'s container by itself once it has exited (auto-remove).
///
/// Why: the engine removes it right after its own teardown (network, mounts), without another
/// request of ours, and the container is not left behind even if `mc` dies after the step. The
/// step still ends only once its `destroy` event says it is gone (a verified teardown). A
/// container that never starts is not covered; the executor removes those.
///
/// Not under a memory limit: Docker 20.10 may process the kernel's OOM notice after the exit,
/// and logs the `oom` event only if the container still exists then. An auto-removed container
/// may be gone by that time, and an OOM kill would be reported as a plain SIGKILL. Those
/// containers are removed by the executor after it has read their state.
pub(crate) fn removed_by_engine(step: &StepRequest) -> bool {
    step.container.memory_bytes.is_none()
}

/// The container of one step: it runs the step's command as its main process (under the
/// engine's init), with `workspace` mounted.
pub(crate) fn step_container(step: &StepRequest, workspace: &Path) -> ContainerCreateBody {
    ContainerCreateBody {
        image: step.container.image.clone(),
        // The step's command is what runs, whatever ENTRYPOINT the image declares; `[""]` is
        // the API's way of saying "no entrypoint".
        entrypoint: Some(vec![String::new()]),
        cmd: Some(step.command.to_argv()),
        env: Some(step_container_env(step)),
        working_dir: Some(container_workdir(step)),
        user: step.container.user.clone(),
        labels: Some(labels(step, &step.name)),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(HostConfig {
            auto_remove: Some(removed_by_engine(step)),
            ..host_config(step, workspace)
        }),
        ..ContainerCreateBody::default()
    }
}

/// The container a job keeps for the steps that share `step`'s settings; steps run in it as
/// execs while it sleeps, with `workspace` mounted.
pub(crate) fn shared_container(step: &StepRequest, workspace: &Path) -> ContainerCreateBody {
    ContainerCreateBody {
        image: step.container.image.clone(),
        entrypoint: Some(vec![String::new()]),
        cmd: Some(KEEP_ALIVE.iter().map(|arg| (*arg).to_owned()).collect()),
        working_dir: Some(WORKSPACE.to_owned()),
        user: step.container.user.clone(),
        labels: Some(labels(step, SHARED_STEP_LABEL)),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        host_config: Some(host_config(step, workspace)),
        ..ContainerCreateBody::default()
    }
}

/// How one step runs as an exec in a shared container.
pub(crate) fn step_exec(step: &StepRequest) -> ExecConfig {
    ExecConfig {
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        env: Some(env_list(step)),
        cmd: Some(step.command.to_argv()),
        working_dir: Some(container_workdir(step)),
        privileged: Some(false),
        ..ExecConfig::default()
    }
}

/// The settings that decide whether two steps may share a container: everything but the pull
/// policy (which says how to get the image, not what the container is).
pub(crate) fn sharing_key(settings: &ContainerSettings) -> ContainerSettings {
    ContainerSettings {
        pull: None,
        ..settings.clone()
    }
}

/// A container name that says whose it is: `maestro-<job id>-<step>`.
pub(crate) fn container_name(step: &StepRequest, suffix: &str) -> String {
    format!("maestro-{}-{suffix}", step.job_id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use maestro_core::JobId;
    use maestro_core::executor::CommandLine;
    use maestro_core::trace::TraceId;

    use super::*;

    fn step() -> StepRequest {
        StepRequest {
            job_id: JobId::now_v7(),
            job_name: "j".to_owned(),
            trace_id: TraceId::parse("trace-1").unwrap(),
            index: 0,
            name: "build".to_owned(),
            runtime: "docker".to_owned(),
            command: CommandLine::Shell("echo hi".to_owned()),
            env: BTreeMap::from([("TRACE_ID".to_owned(), "trace-1".to_owned())]),
            host_env: Default::default(),
            secrets: Default::default(),
            span_id: maestro_core::trace::SpanId::generate(),
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
    fn a_step_container_carries_labels_limits_and_the_workspace() {
        let mut step = step();
        step.container.memory_bytes = Some(256 << 20);
        step.container.cpus = Some(0.5);
        step.container.pids_limit = Some(64);
        step.container.network = Some(Network::None);
        step.container.read_only_rootfs = Some(true);
        step.container.user = Some("1000:1000".to_owned());
        let body = step_container(&step, Path::new("/src"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_JOB_ID], step.job_id.to_string());
        assert_eq!(labels[LABEL_STEP], "build");
        assert_eq!(labels[LABEL_TRACE_ID], "trace-1");
        assert_eq!(body.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(
            body.env.unwrap(),
            ["TRACE_ID=trace-1", "TINI_KILL_PROCESS_GROUP=1"]
        );
        assert_eq!(body.working_dir.as_deref(), Some(WORKSPACE));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.init, Some(true), "the engine's init forwards SIGTERM");
        assert_eq!(
            host.auto_remove,
            Some(false),
            "under a memory limit the executor removes the container, after reading its state"
        );
        assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("none"));
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts.len(), 1, "only the workspace is mounted");
        assert_eq!(mounts[0].source.as_deref(), Some("/src"));
        assert_eq!(mounts[0].target.as_deref(), Some(WORKSPACE));
        assert!(host.binds.is_none());
        let shared = shared_container(&step, Path::new("/src"));
        assert_eq!(shared.host_config.unwrap().init, Some(true));
        step.container.memory_bytes = None;
        let unlimited = step_container(&step, Path::new("/src"));
        assert_eq!(
            unlimited.host_config.unwrap().auto_remove,
            Some(true),
            "the engine removes a step's container once it exited"
        );
    }

    #[test]
    fn workdirs_resolve_under_the_workspace_unless_absolute() {
        let mut step = step();
        assert_eq!(container_workdir(&step), "/workspace");
        step.workdir = Some("sub/dir".to_owned());
        assert_eq!(container_workdir(&step), "/workspace/sub/dir");
        step.workdir = Some("./sub".to_owned());
        assert_eq!(container_workdir(&step), "/workspace/sub");
        step.workdir = Some("/opt".to_owned());
        assert_eq!(container_workdir(&step), "/opt");
    }

    /// `step()` with a workspace that exists.
    fn step_in(workspace: &Path) -> StepRequest {
        StepRequest {
            workspace: workspace.to_path_buf(),
            ..step()
        }
    }

    fn sockets() -> Vec<PathBuf> {
        engine_sockets(["unix:///var/run/docker.sock"])
    }

    #[test]
    fn check_requires_an_image_and_sane_settings() {
        let dir = tempfile::tempdir().unwrap();
        let step = || step_in(dir.path());
        let check_step = |step: &StepRequest| check_step(step, &sockets());
        let mut no_image = step();
        no_image.container.image = None;
        let message = check_step(&no_image).unwrap_err();
        assert!(
            message.contains("\"build\"") && message.contains("no image"),
            "{message}"
        );
        let mut tiny = step();
        tiny.container.memory_bytes = Some(1024);
        assert!(check_step(&tiny).unwrap_err().contains("6m"));
        let mut with = step();
        with.with = Some(serde_json::json!({}));
        assert!(check_step(&with).unwrap_err().contains("with"));
        let mut user = step();
        user.container.user = Some("root; rm".to_owned());
        assert!(check_step(&user).is_err());
        user.container.user = Some("nobody:nogroup".to_owned());
        assert!(check_step(&user).is_ok());
        assert!(check_step(&step()).is_ok());
    }

    #[test]
    fn the_workspace_is_mounted_by_its_canonical_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let source = workspace_source(&step_in(&link), &sockets()).unwrap();
        assert_eq!(source, std::fs::canonicalize(&real).unwrap());
        let dotted = step_in(&real.join("../real"));
        assert_eq!(workspace_source(&dotted, &sockets()).unwrap(), source);
    }

    #[test]
    fn the_host_root_and_directories_holding_the_engine_socket_are_refused() {
        for root in ["/", "/..", "/tmp/.."] {
            let message = check_step(&step_in(Path::new(root)), &sockets()).unwrap_err();
            assert!(
                message.starts_with("step \"build\": the workspace ")
                    && message.contains("host's root"),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
        }
        for dir in ["/run", "/var/run", "/var"] {
            let message = check_step(&step_in(Path::new(dir)), &sockets()).unwrap_err();
            assert!(
                message.contains(&format!("the workspace {dir}")) && message.contains("socket"),
                "{dir}: {message}"
            );
        }
        // A symlink to the socket's directory is refused as the directory itself.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("run");
        std::os::unix::fs::symlink("/run", &link).unwrap();
        let message = check_step(&step_in(&link), &sockets()).unwrap_err();
        assert!(message.contains("(which is /run)"), "{message}");
        // A DOCKER_HOST socket elsewhere counts too, even before it exists.
        let engine = dir.path().join("engine");
        std::fs::create_dir(&engine).unwrap();
        let custom = engine_sockets([format!("unix://{}/d.sock", engine.display()).as_str()]);
        let message = check_step(&step_in(&engine), &custom).unwrap_err();
        assert!(message.contains("d.sock"), "{message}");
        assert!(check_step(&step_in(&engine), &sockets()).is_ok());
        // The tcp address names no path.
        assert_eq!(engine_sockets(["tcp://127.0.0.1:2375"]).len(), 2);
    }

    #[test]
    fn workspaces_holding_or_inside_the_hosts_runtime_and_kernel_directories_are_refused() {
        // Containing the runtime directories or the engine's state, with or without a socket.
        let no_sockets: Vec<PathBuf> = Vec::new();
        for dir in ["/run", "/var/run", "/var", "/var/lib"] {
            let message = check_step(&step_in(Path::new(dir)), &no_sockets).unwrap_err();
            assert!(
                message.contains(&format!("the workspace {dir}"))
                    && (message.contains("contains the host's")
                        || message.contains("is inside the host's")),
                "{dir}: {message}"
            );
        }
        // Inside them: containerd's socket directory, the kernel's interfaces.
        for dir in ["/run/lock", "/proc/self", "/sys/kernel", "/dev/shm"] {
            if !Path::new(dir).is_dir() {
                continue;
            }
            let message = check_step(&step_in(Path::new(dir)), &sockets()).unwrap_err();
            assert!(message.contains("is inside the host's"), "{dir}: {message}");
            assert!(!message.contains('\n'), "{message}");
        }
        // A project directory is fine.
        let dir = tempfile::tempdir().unwrap();
        assert!(check_step(&step_in(dir.path()), &sockets()).is_ok());
    }

    #[test]
    fn containers_get_no_new_privileges_and_fewer_capabilities_never_unconfined() {
        let step = step();
        for host in [
            step_container(&step, Path::new("/src"))
                .host_config
                .unwrap(),
            shared_container(&step, Path::new("/src"))
                .host_config
                .unwrap(),
        ] {
            let security = host.security_opt.unwrap();
            assert_eq!(security, [NO_NEW_PRIVILEGES]);
            assert!(!security.iter().any(|option| option.contains("seccomp")));
            assert_eq!(host.privileged, Some(false));
            assert_eq!(
                host.cap_drop.unwrap(),
                ["NET_RAW", "MKNOD", "AUDIT_WRITE", "SYS_CHROOT", "SETFCAP"]
            );
            assert!(host.cap_add.is_none());
        }
        assert_eq!(step_exec(&step).privileged, Some(false));
    }

    #[test]
    fn a_missing_or_relative_workspace_is_refused_naming_it() {
        let message =
            check_step(&step_in(Path::new("/nonexistent/maestro-ws")), &sockets()).unwrap_err();
        assert!(
            message.contains("\"build\"")
                && message.contains("/nonexistent/maestro-ws")
                && message.contains("No such file"),
            "{message}"
        );
        let message = check_step(&step_in(Path::new("rel")), &sockets()).unwrap_err();
        assert!(message.contains("not an absolute path"), "{message}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let message = check_step(&step_in(&file), &sockets()).unwrap_err();
        assert!(message.contains("not a directory"), "{message}");
    }

    #[test]
    fn steps_share_a_container_whatever_their_pull_policy() {
        let mut a = step().container;
        let mut b = a.clone();
        a.pull = Some(maestro_core::spec::PullPolicy::Never);
        assert_eq!(sharing_key(&a), sharing_key(&b));
        b.memory_bytes = Some(64 << 20);
        assert_ne!(sharing_key(&a), sharing_key(&b));
    }
}
