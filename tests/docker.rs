//! The `docker` runtime through the real `mc` binary and the real Docker engine.
//!
//! These tests need a running engine and the image `maestro-test/busybox:latest`, which they
//! build with `docker/build-test-image.sh` (from Debian's busybox-static). They fail, never
//! skip, when either is missing. Every test checks at its end that no container labelled with
//! its jobs' ids is left; tests run in parallel, so each looks only at its own jobs.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use maestro_test_support::docker::{
    IMAGE, containers_labelled, containers_left_after, ensure_image, inspect, remove_labelled,
};

use crate::util::{Env, job_id, job_yaml, log_lines, parse_json, send_signal, text, wait_for_file};

/// A test environment with the image ready; dropping it removes any container its jobs left
/// (only a test that failed before its own check can leave one), so a failure does not leak
/// onto the shared engine.
fn docker_env() -> DockerEnv {
    ensure_image();
    DockerEnv(Env::new())
}

struct DockerEnv(Env);

impl std::ops::Deref for DockerEnv {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.0
    }
}

impl Drop for DockerEnv {
    fn drop(&mut self) {
        for job_id in self.0.job_ids() {
            remove_labelled(&format!("maestro.job_id={job_id}"));
        }
    }
}

/// A job whose steps default to the docker runtime and the test image.
fn docker_job(name: &str, steps: &str) -> String {
    job_yaml(name, steps).replacen(
        "steps:\n",
        &format!("runtime: docker\nimage: {IMAGE}\nsteps:\n"),
        1,
    )
}

fn containers_of_job(job_id: &str) -> Vec<String> {
    containers_labelled(&format!("maestro.job_id={job_id}"))
}

/// How long the engine may take to remove a container whose step exited by itself.
const AUTO_REMOVE_WITHIN: Duration = Duration::from_secs(10);

/// No container of `job_id` is left once the engine has removed those of steps that exited by
/// themselves (auto-remove, within [`AUTO_REMOVE_WITHIN`]); what `mc` removes itself is gone
/// when it exits.
fn assert_containers_go(job_id: &str) {
    let left = containers_left_after(&format!("maestro.job_id={job_id}"), AUTO_REMOVE_WITHIN);
    assert!(
        left.is_empty(),
        "containers of job {job_id} remain after {AUTO_REMOVE_WITHIN:?}: {left:?}"
    );
}

/// No container of `job_id` is left on the engine now: for steps that were stopped, could not
/// run, or ran under a memory limit, whose containers `mc` removes before it exits.
fn assert_no_containers(job_id: &str) {
    let left = containers_of_job(job_id);
    assert!(
        left.is_empty(),
        "containers of job {job_id} remain: {left:?}"
    );
}

fn spawn_submit(env: &Env, file: &std::path::Path, extra: &[&str]) -> std::process::Child {
    env.mc()
        .args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mc")
}

fn exit_code(output: &Output) -> Option<i32> {
    output.status.code()
}

#[test]
fn docker_steps_record_both_streams_and_exit_codes() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job(
            "streams",
            "  - name: talk\n    run: echo to-out; echo to-err >&2; echo again\n  - name: fail\n    run: exit 3\n",
        ),
    );
    let (output, json) = env.submit(&file, &["--quiet"]);
    assert_eq!(exit_code(&output), Some(1), "{}", text(&output.stderr));
    assert_eq!(json["state"], "FAILED");
    assert_eq!(json["steps"][0]["status"], "succeeded");
    assert_eq!(json["steps"][0]["runtime"], "docker");
    assert_eq!(json["steps"][1]["status"], "failed");
    assert_eq!(json["steps"][1]["exit_code"], 3);
    let log = env.step_log(job_id(&json), "talk");
    assert_eq!(log_lines(&log, "out"), ["to-out", "again"]);
    assert_eq!(log_lines(&log, "err"), ["to-err"]);
    assert_containers_go(job_id(&json));
}

#[test]
fn docker_steps_see_trace_id_and_env() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job(
            "env",
            "  - name: show\n    env:\n      GREETING: hello there\n    run: echo \"$TRACE_ID|$GREETING|$MAESTRO_STEP|$MAESTRO_JOB_ID\"\n",
        ),
    );
    let (output, json) = env.submit(&file, &["--quiet", "--trace-id", "trace-docker-env-1"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let id = job_id(&json);
    let log = env.step_log(id, "show");
    assert_eq!(
        log_lines(&log, "out"),
        [format!("trace-docker-env-1|hello there|show|{id}")]
    );
    assert_containers_go(id);
}

#[test]
fn docker_steps_share_the_workspace_with_each_other_and_the_host() {
    let env = docker_env();
    env.write("input.txt", "from the host\n");
    let file = env.write(
        "j.yaml",
        &docker_job(
            "workspace",
            "  - name: write\n    run: cat input.txt > made.txt; echo made in a container >> made.txt\n  - name: read\n    run: pwd; cat /workspace/made.txt\n",
        ),
    );
    let (output, json) = env.submit(&file, &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let log = env.step_log(job_id(&json), "read");
    assert_eq!(
        log_lines(&log, "out"),
        ["/workspace", "from the host", "made in a container"]
    );
    let on_host = std::fs::read_to_string(env.path().join("made.txt")).unwrap();
    assert_eq!(on_host, "from the host\nmade in a container\n");
    assert_containers_go(job_id(&json));
}

#[test]
fn docker_resource_limits_are_visible_with_docker_inspect() {
    let env = docker_env();
    let trace = format!("trace-limits-{}", std::process::id());
    let file = env.write(
        "j.yaml",
        &docker_job(
            "limits",
            "  - name: limited\n    memory: 64m\n    cpus: 0.5\n    pids_limit: 50\n    network: none\n    user: \"1000:1000\"\n    read_only_rootfs: true\n    run: sleep 4\n",
        ),
    );
    let child = spawn_submit(&env, &file, &["--trace-id", &trace]);
    let label = format!("maestro.trace_id={trace}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline && seen.is_none() {
        for id in containers_labelled(&label) {
            if inspect(&id, "{{.State.Running}}") == "true" {
                seen = Some(inspect(
                    &id,
                    "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} \
                     {{.HostConfig.NetworkMode}} {{.HostConfig.ReadonlyRootfs}} {{.Config.User}} \
                     {{.HostConfig.Privileged}} {{index .Config.Labels \"maestro.managed\"}} \
                     {{index .Config.Labels \"maestro.step\"}} {{len .Mounts}}",
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        seen.expect("the step's container was seen running"),
        "67108864 500000000 50 none true 1000:1000 false true limited 1"
    );
    assert_no_containers(job_id(&parse_json(&output)));
}

#[test]
fn docker_timeout_kills_a_step_that_ignores_sigterm() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job(
            "timeout",
            "  - name: stubborn\n    timeout_seconds: 5\n    run: trap '' TERM; echo started; sleep 60\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = env.submit(&file, &["--quiet", "--stop-grace", "0.5"]);
    assert_eq!(exit_code(&output), Some(1), "{}", text(&output.stderr));
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "stopped before its timeout: {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(json["state"], "FAILED");
    assert_eq!(json["steps"][0]["status"], "timed_out");
    assert_eq!(json["steps"][0]["timed_out"], true);
    assert_eq!(
        log_lines(&env.step_log(job_id(&json), "stubborn"), "out"),
        ["started"]
    );
    assert_no_containers(job_id(&json));
}

#[test]
fn docker_timeout_sends_sigterm_that_the_step_and_its_children_get() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job(
            "term",
            "  - name: trapping\n    timeout_seconds: 5\n    run: |\n      sh -c 'trap \"echo child > child-got-term; exit 0\" TERM; while :; do sleep 0.1; done' &\n      trap 'wait; echo got-term; exit 0' TERM\n      echo ready\n      while :; do sleep 0.1; done\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = env.submit(&file, &["--quiet", "--stop-grace", "10"]);
    let took = started.elapsed();
    assert_eq!(exit_code(&output), Some(1), "{}", text(&output.stderr));
    assert_eq!(json["steps"][0]["status"], "timed_out");
    assert!(
        took >= Duration::from_secs(5),
        "stopped before its timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(11),
        "waited for the grace period: {took:?}"
    );
    let id = job_id(&json);
    assert_eq!(
        log_lines(&env.step_log(id, "trapping"), "out"),
        ["ready", "got-term"]
    );
    assert!(
        env.path().join("child-got-term").exists(),
        "the child got SIGTERM"
    );
    assert_no_containers(id);

    // A command with no handler of its own ends at SIGTERM, not at SIGKILL after the grace.
    let file = env.write(
        "plain.yaml",
        &docker_job(
            "plain",
            "  - name: sleeper\n    timeout_seconds: 3\n    run: sleep 300\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = env.submit(&file, &["--quiet", "--stop-grace", "10"]);
    let took = started.elapsed();
    assert_eq!(exit_code(&output), Some(1), "{}", text(&output.stderr));
    assert_eq!(json["steps"][0]["status"], "timed_out");
    assert_eq!(json["steps"][0]["exit_code"], 143, "{json}");
    assert!(
        took >= Duration::from_secs(3),
        "stopped before its timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(9),
        "waited for the grace period: {took:?}"
    );
    assert_no_containers(job_id(&json));
}

#[test]
fn docker_sigint_cancels_the_job_and_removes_the_container() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job(
            "cancel",
            "  - name: long\n    run: touch started; sleep 300\n  - name: after\n    run: touch after-ran\n",
        ),
    );
    let child = spawn_submit(&env, &file, &[]);
    assert!(
        wait_for_file(&env.path().join("started"), 30),
        "the step never started"
    );
    send_signal(child.id(), Signal::INT);
    let output = child.wait_with_output().unwrap();
    assert_eq!(exit_code(&output), Some(130), "{}", text(&output.stderr));
    let json = parse_json(&output);
    assert_eq!(json["state"], "CANCELLED");
    assert_eq!(json["steps"][0]["status"], "cancelled");
    assert_eq!(json["steps"][1]["status"], "skipped");
    assert!(!env.path().join("after-ran").exists());
    // Gone before `mc` exited, not some time later.
    assert_no_containers(job_id(&json));
}

#[test]
fn docker_missing_image_with_pull_never_fails_the_step_naming_the_image() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job(
            "missing",
            "  - name: nope\n    image: maestro-test/not-built:1\n    pull: never\n    run: \"true\"\n",
        ),
    );
    let (output, json) = env.submit(&file, &["--quiet"]);
    assert_eq!(exit_code(&output), Some(1), "{}", text(&output.stderr));
    assert_eq!(json["state"], "FAILED");
    assert_eq!(json["steps"][0]["status"], "failed");
    let error = json["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("maestro-test/not-built:1"), "{json}");
    assert!(error.contains("never"), "{json}");
    assert_no_containers(job_id(&json));
}

#[test]
fn docker_engine_wanting_tls_is_refused_before_any_step_with_exit_4() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job("tls", "  - name: s\n    run: touch ran\n"),
    );
    let output = env
        .mc()
        .env("DOCKER_HOST", "tcp://127.0.0.1:2376")
        .env("DOCKER_TLS_VERIFY", "1")
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), Some(4), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot reach the Docker engine at tcp://127.0.0.1:2376: DOCKER_TLS_VERIFY is set, but Maestro does not speak TLS"),
        "{stderr}"
    );
    assert!(!env.path().join("ran").exists());
}

#[test]
fn docker_unreachable_engine_fails_the_job_before_any_step_with_exit_4() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job("unreachable", "  - name: s\n    run: touch ran\n"),
    );
    let started = Instant::now();
    let output = env
        .mc()
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(exit_code(&output), Some(4), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot reach the Docker engine at unix:///nonexistent.sock: "),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let json = parse_json(&output);
    assert_eq!(json["state"], "FAILED");
    assert!(!env.path().join("ran").exists());
    let status = env.status(job_id(&json));
    let transitions = status["transitions"].as_array().unwrap();
    let last = transitions.last().unwrap();
    assert_eq!(last["state"], "FAILED");
    assert!(
        last["detail"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot reach the Docker engine"),
        "{last}"
    );
}

#[test]
fn docker_and_local_steps_mix_in_one_job() {
    let env = docker_env();
    // The test image has no /usr; the host has one.
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "mixed",
            &format!(
                "  - name: in-container\n    runtime: docker\n    image: {IMAGE}\n    run: test ! -d /usr && echo container > where.txt\n  - name: on-host\n    run: test -d /usr && echo host >> where.txt\n"
            ),
        ),
    );
    let (output, json) = env.submit(&file, &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(json["steps"][0]["runtime"], "docker");
    assert_eq!(json["steps"][1]["runtime"], "local");
    let where_ = std::fs::read_to_string(env.path().join("where.txt")).unwrap();
    assert_eq!(where_, "container\nhost\n");
    assert_containers_go(job_id(&json));
}

#[test]
fn docker_runtime_flag_applies_to_steps_that_name_none() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "flag",
            &format!(
                "  - name: boxed\n    image: {IMAGE}\n    run: test ! -d /usr\n  - name: host\n    runtime: local\n    run: test -d /usr\n"
            ),
        ),
    );
    let (output, json) = env.submit(&file, &["--quiet", "--runtime", "docker"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(json["steps"][0]["runtime"], "docker");
    assert_eq!(json["steps"][1]["runtime"], "local");
    assert_containers_go(job_id(&json));
}

#[test]
fn docker_gc_removes_the_container_of_a_killed_mc_and_settles_the_job() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job(
            "killed",
            "  - name: long\n    run: touch started; sleep 300\n",
        ),
    );
    let mut child = spawn_submit(&env, &file, &[]);
    assert!(
        wait_for_file(&env.path().join("started"), 30),
        "the step never started"
    );
    send_signal(child.id(), Signal::KILL);
    child.wait().unwrap();
    let ids = env.job_ids();
    assert_eq!(ids.len(), 1);
    let id = ids[0].as_str();
    assert_eq!(
        containers_of_job(id).len(),
        1,
        "the killed mc left its container"
    );
    assert_eq!(env.status(id)["state"], "RUNNING");

    let output = env.run(&["gc"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = text(&output.stdout);
    assert!(report.contains(&format!("job {id}")), "{report}");
    assert!(
        report
            .lines()
            .any(|line| line.contains("docker container") && line.contains(id)),
        "{report}"
    );
    assert_no_containers(id);
    assert_eq!(env.status(id)["state"], "FAILED");
}

/// A relay of the engine's socket, which the test kills to take the engine away mid-step.
const SOCKET_RELAY: &str = r#"
import socket, sys, threading
listen, target = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX)
server.bind(listen)
server.listen(64)
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
while True:
    client, _ = server.accept()
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(target)
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
"#;

/// The engine going away while a step runs is the backend vanishing: exit 4, and the user is
/// told its container may still be there and that `mc gc` removes it, which it does once the
/// engine answers again.
#[test]
fn docker_engine_lost_mid_step_is_exit_4_and_gc_removes_what_it_left() {
    let env = docker_env();
    let engine = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    // Outside the workspace: a workspace holding the engine's socket is refused.
    let relay_dir = tempfile::tempdir().unwrap();
    let relay_socket = relay_dir.path().join("relay.sock");
    let mut relay = Command::new("python3")
        .args(["-c", SOCKET_RELAY])
        .arg(&relay_socket)
        .arg(&engine)
        .spawn()
        .expect("python3 runs the socket relay");
    assert!(wait_for_file(&relay_socket, 10), "the relay never listened");
    let file = env.write(
        "j.yaml",
        &docker_job(
            "lost",
            "  - name: long\n    run: touch started; sleep 300\n  - name: after\n    run: echo after\n",
        ),
    );
    let child = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .env("DOCKER_HOST", format!("unix://{}", relay_socket.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mc");
    let started = wait_for_file(&env.path().join("started"), 30);
    send_signal(relay.id(), Signal::KILL);
    relay.wait().unwrap();
    assert!(started, "the step never started");
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(exit_code(&output), Some(4), "{stderr}");
    assert!(
        stderr.contains("the engine stopped answering while the step ran")
            && stderr.contains("`mc gc` removes it"),
        "{stderr}"
    );
    let id = env.job_ids()[0].clone();
    assert_eq!(env.status(&id)["state"], "FAILED");
    let gc = env.run(&["gc"]);
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    assert_no_containers(&id);
}

#[test]
fn docker_reuse_container_runs_the_steps_in_one_container() {
    let env = docker_env();
    let yaml = docker_job(
        "reuse",
        "  - name: first\n    run: echo kept > /tmp/state; hostname > /workspace/host1\n  - name: second\n    run: cat /tmp/state; hostname > /workspace/host2\n  - name: third\n    run: echo $MAESTRO_STEP; exit 5\n",
    )
    .replacen("steps:\n", "reuse_container: true\nsteps:\n", 1);
    let file = env.write("j.yaml", &yaml);
    let (output, json) = env.submit(&file, &["--quiet"]);
    assert_eq!(exit_code(&output), Some(1), "{}", text(&output.stderr));
    assert_eq!(json["steps"][0]["status"], "succeeded");
    assert_eq!(json["steps"][1]["status"], "succeeded");
    assert_eq!(json["steps"][2]["exit_code"], 5);
    let id = job_id(&json);
    assert_eq!(log_lines(&env.step_log(id, "second"), "out"), ["kept"]);
    assert_eq!(log_lines(&env.step_log(id, "third"), "out"), ["third"]);
    let host1 = std::fs::read_to_string(env.path().join("host1")).unwrap();
    let host2 = std::fs::read_to_string(env.path().join("host2")).unwrap();
    assert_eq!(host1, host2, "both steps ran in the same container");
    assert_no_containers(id);
}

#[test]
fn docker_step_without_an_image_is_refused_before_anything_runs() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "imageless",
            "  - name: s\n    runtime: docker\n    run: \"true\"\n",
        ),
    );
    let output = env.run(&["submit", file.to_str().unwrap(), "--quiet"]);
    assert_eq!(exit_code(&output), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("\"s\"") && stderr.contains("image"),
        "{stderr}"
    );
}

/// Submit `yaml` from the test's workspace and expect a refusal before anything is stored:
/// exit 2, a one-line error naming the step, no job, no container.
fn assert_refused(env: &DockerEnv, yaml: &str, expected: &[&str]) {
    let trace = format!(
        "trace-refused-{}-{}",
        std::process::id(),
        env.job_ids().len()
    );
    let file = env.write("refused.yaml", yaml);
    let output = env.run(&[
        "submit",
        file.to_str().unwrap(),
        "--quiet",
        "--trace-id",
        &trace,
    ]);
    assert_eq!(exit_code(&output), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    for part in expected {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }
    assert_eq!(
        stderr
            .lines()
            .filter(|line| line.starts_with("error"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(env.job_ids().is_empty(), "a job was stored");
    assert!(
        containers_labelled(&format!("maestro.trace_id={trace}")).is_empty(),
        "a container was created"
    );
}

#[test]
fn docker_workspace_of_the_host_root_or_the_engine_socket_is_refused() {
    let env = docker_env();
    let step = "  - name: s\n    run: touch /workspace/ran\n";
    let at = |workdir: &str| {
        docker_job("hostile", step).replacen(
            "steps:\n",
            &format!("workdir: {workdir}\nsteps:\n"),
            1,
        )
    };
    assert_refused(
        &env,
        &at("/"),
        &["step \"s\"", "workspace /", "host's root"],
    );
    assert_refused(
        &env,
        &at("/run"),
        &["step \"s\"", "workspace /run", "socket"],
    );
    assert_refused(
        &env,
        &at("/var/run"),
        &["step \"s\"", "workspace /var/run", "socket"],
    );
    assert_refused(
        &env,
        &at("/nonexistent/maestro-workspace"),
        &["step \"s\"", "/nonexistent/maestro-workspace"],
    );
    // `mc submit` started in / with no workdir: the invocation directory is the workspace.
    let file = env.write("from-root.yaml", &docker_job("from-root", step));
    let trace = format!("trace-from-root-{}", std::process::id());
    let output = env
        .mc()
        .current_dir("/")
        .args([
            "submit",
            file.to_str().unwrap(),
            "--quiet",
            "--trace-id",
            &trace,
        ])
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("host's root"),
        "{}",
        text(&output.stderr)
    );
    assert!(env.job_ids().is_empty());
    assert!(containers_labelled(&format!("maestro.trace_id={trace}")).is_empty());
}

#[test]
fn docker_step_after_a_local_step_runs_the_image_that_step_tagged() {
    let env = docker_env();
    let tag = format!(
        "maestro-test/retag-{}-{}:latest",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos())
    );
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["image", "rm", &self.0])
                .output();
        }
    }
    let _untag = Untag(tag.clone());
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "retag",
            &format!(
                "  - name: first\n    runtime: docker\n    image: {IMAGE}\n    run: \"true\"\n  - name: tag\n    host_access: [docker-socket]\n    run: docker tag {IMAGE} {tag}\n  - name: use\n    runtime: docker\n    image: {tag}\n    pull: never\n    run: echo tagged\n"
            ),
        ),
    );
    // The Docker socket is root on the host: hidden from sandboxed steps unless the spec asks
    // for it and the administrator allows it.
    let (denied, _) = env.submit(&file, &["--quiet"]);
    assert_eq!(denied.status.code(), Some(3), "{}", text(&denied.stderr));
    let (output, json) = env.submit(
        &file,
        &["--quiet", "--allowed-host-access", "docker-socket"],
    );
    assert!(output.status.success(), "{} {json}", text(&output.stderr));
    let id = job_id(&json);
    assert_eq!(log_lines(&env.step_log(id, "use"), "out"), ["tagged"]);
    assert_containers_go(id);
}

#[test]
fn docker_kills_of_mc_submit_at_random_points_leave_no_container_after_one_gc() {
    let env = docker_env();
    let file = env.write(
        "j.yaml",
        &docker_job(
            "killed-early",
            "  - name: a\n    run: echo one\n  - name: b\n    run: sleep 5\n",
        ),
    );
    let mut spread = crate::records::Spread::new(0xd0c4_e125);
    for _ in 0..10 {
        let mut child = spawn_submit(&env, &file, &[]);
        std::thread::sleep(Duration::from_millis(10 + spread.below(140)));
        send_signal(child.id(), Signal::KILL);
        child.wait().unwrap();
        // At once, as an operator's script would: the engine may still be creating a
        // container the killed `mc` asked for.
        crate::records::assert_one_gc_settles_everything(&env);
        for job_id in env.job_ids() {
            assert_no_containers(&job_id);
        }
    }
    // Nothing lands later either.
    std::thread::sleep(Duration::from_secs(2));
    for job_id in env.job_ids() {
        assert_no_containers(&job_id);
    }
}
