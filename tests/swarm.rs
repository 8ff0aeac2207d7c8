//! The `swarm` runtime through the real `mc` binary, on a real single-node swarm.
//!
//! Each test that needs a swarm holds [`SwarmFixture`]: it serialises the swarm tests (of this
//! binary with a mutex, of other test processes with a file lock), runs `docker swarm init --advertise-addr 127.0.0.1` only when the engine is in no
//! swarm, and in `Drop` (also on panic) removes what its jobs left, then leaves the swarm only if
//! it initialised it (and removes the `docker_gwbridge` network the init created). The tests
//! need a running engine and the image `maestro-test/busybox:latest`; they fail, never skip,
//! when either is missing. Every test checks that no service or container labelled with its
//! jobs' ids remains.

use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

use maestro_test_support::docker::{IMAGE, containers_labelled, ensure_image, remove_labelled};

use crate::util::{Env, job_id, job_yaml, log_lines, parse_json, send_signal, text};

/// Serialises the tests of this binary that change or need the engine's swarm state.
static SWARM: Mutex<()> = Mutex::new(());

/// Serialises them with other test processes on this machine too (another worktree's run):
/// an exclusive `flock` on a file every run opens, released when the file is closed.
const LOCK_FILE: &str = "/tmp/maestro-swarm-tests.lock";

/// Both locks: this binary's mutex, then the machine-wide file lock.
struct Serial {
    _file: std::fs::File,
    _guard: MutexGuard<'static, ()>,
}

fn serial() -> Serial {
    let guard = SWARM.lock().unwrap_or_else(PoisonError::into_inner);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|error| panic!("cannot open {LOCK_FILE}: {error}"));
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|error| panic!("cannot lock {LOCK_FILE}: {error}"));
    Serial {
        _file: file,
        _guard: guard,
    }
}

/// `docker ARGS`, its output; a CLI that cannot run fails the test.
fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run the docker CLI ({error}); these tests need Docker")
        })
}

/// `(LocalNodeState, ControlAvailable)` of the engine.
fn swarm_state() -> (String, bool) {
    let output = docker(&[
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
    ]);
    assert!(
        output.status.success(),
        "docker info failed; these tests need a running Docker engine: {}",
        text(&output.stderr)
    );
    let answer = text(&output.stdout);
    let mut parts = answer.split_whitespace();
    let state = parts.next().unwrap_or_default().to_owned();
    (state, parts.next() == Some("true"))
}

fn network_exists(name: &str) -> bool {
    docker(&["network", "inspect", name]).status.success()
}

/// A single-node swarm for one test, and a test environment whose leftovers it removes.
struct SwarmFixture {
    env: Env,
    initialised: bool,
    gwbridge_created: bool,
    _serial: Serial,
}

impl SwarmFixture {
    fn new() -> Self {
        ensure_image();
        let serial = serial();
        let (state, manager) = swarm_state();
        let mut fixture = Self {
            env: Env::new(),
            initialised: false,
            gwbridge_created: false,
            _serial: serial,
        };
        if state == "active" {
            assert!(
                manager,
                "the Docker engine is a swarm worker; the swarm tests need an engine in no swarm or a manager"
            );
            return fixture;
        }
        let had_gwbridge = network_exists("docker_gwbridge");
        let output = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        assert!(
            output.status.success(),
            "docker swarm init failed: {}",
            text(&output.stderr)
        );
        fixture.initialised = true;
        fixture.gwbridge_created = !had_gwbridge;
        fixture
    }
}

impl std::ops::Deref for SwarmFixture {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

impl Drop for SwarmFixture {
    fn drop(&mut self) {
        for job_id in self.env.job_ids() {
            remove_services(&format!("maestro.job_id={job_id}"));
            remove_labelled(&format!("maestro.job_id={job_id}"));
        }
        if self.initialised {
            let output = docker(&["swarm", "leave", "--force"]);
            if !output.status.success() {
                eprintln!(
                    "docker swarm leave --force failed: {}",
                    text(&output.stderr)
                );
            }
            if self.gwbridge_created {
                let _ = docker(&["network", "rm", "docker_gwbridge"]);
            }
        }
    }
}

/// The ids of the services carrying `label` (none when the engine is in no swarm).
fn services_labelled(label: &str) -> Vec<String> {
    let output = docker(&["service", "ls", "-q", "--filter", &format!("label={label}")]);
    text(&output.stdout).lines().map(str::to_owned).collect()
}

fn remove_services(label: &str) {
    let left = services_labelled(label);
    if !left.is_empty() {
        let _ = Command::new("docker")
            .args(["service", "rm"])
            .args(&left)
            .output();
    }
}

/// `docker KIND inspect --format FORMAT id`.
fn inspect(kind: &str, id: &str, format: &str) -> String {
    let output = docker(&[kind, "inspect", "--format", format, id]);
    assert!(
        output.status.success(),
        "docker {kind} inspect failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout).trim().to_owned()
}

/// Nothing of `job_id` is left: no service, no container.
fn assert_nothing_left(job_id: &str) {
    let label = format!("maestro.job_id={job_id}");
    let services = services_labelled(&label);
    assert!(
        services.is_empty(),
        "services of job {job_id} remain: {services:?}"
    );
    let containers = containers_labelled(&label);
    assert!(
        containers.is_empty(),
        "containers of job {job_id} remain: {containers:?}"
    );
}

/// A job whose steps default to the swarm runtime and the test image.
fn swarm_job(name: &str, steps: &str) -> String {
    job_yaml(name, steps).replacen(
        "steps:\n",
        &format!("runtime: swarm\nimage: {IMAGE}\nsteps:\n"),
        1,
    )
}

fn spawn_submit(env: &Env, file: &std::path::Path) -> std::process::Child {
    env.mc()
        .args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mc")
}

/// Wait until the (only) job of `env` has logged `line` on stdout for `step`; its id.
fn wait_for_log_line(env: &Env, step: &str, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(id) = env.job_ids().first()
            && log_lines(&env.step_log(id, step), "out")
                .iter()
                .any(|l| l == line)
        {
            return id.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("step {step} never logged {line:?}");
}

fn error_of(json: &Value, step: usize) -> String {
    json["steps"][step]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn swarm_steps_record_both_streams_and_exit_codes() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &swarm_job(
            "streams",
            "  - name: talk\n    run: echo to-out; echo to-err >&2; echo again\n  - name: fail\n    run: exit 42\n",
        ),
    );
    let (output, json) = swarm.submit(&file, &["--quiet"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(json["state"], "FAILED");
    assert_eq!(json["steps"][0]["status"], "succeeded", "{json}");
    assert_eq!(json["steps"][0]["runtime"], "swarm");
    assert_eq!(json["steps"][0]["exit_code"], 0);
    // The first step's removal overlapped the second step (another swarm step followed it):
    // its record has no teardown, and the job did not end before it was verified (nothing is
    // left, below). The last step's teardown is its own.
    assert!(json["steps"][0]["teardown"].is_null(), "{json}");
    assert_eq!(json["steps"][1]["status"], "failed");
    assert_eq!(json["steps"][1]["exit_code"], 42);
    assert_eq!(json["steps"][1]["teardown"]["verified"], true, "{json}");
    let log = swarm.step_log(job_id(&json), "talk");
    assert_eq!(log_lines(&log, "out"), ["to-out", "again"], "{log}");
    assert_eq!(log_lines(&log, "err"), ["to-err"], "{log}");
    assert_nothing_left(job_id(&json));

    // Much output, written as fast as the shell can, then an exit at once: all of it, in
    // order, though the step ends as soon as the task's container dies (the stream that
    // follows the container must have ended, or the output is read once more).
    let file = swarm.write(
        "many.yaml",
        &swarm_job(
            "many",
            "  - name: many\n    run: i=0; while [ $i -lt 3000 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done\n",
        ),
    );
    let (output, json) = swarm.submit(&file, &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let log = swarm.step_log(job_id(&json), "many");
    let expected =
        |stream: &str| -> Vec<String> { (0..3000).map(|i| format!("{stream}-{i}")).collect() };
    assert_eq!(log_lines(&log, "out"), expected("out"));
    assert_eq!(log_lines(&log, "err"), expected("err"));
    assert_nothing_left(job_id(&json));

    let file = swarm.write(
        "one.yaml",
        &swarm_job("one", "  - name: fail\n    command: [\"false\"]\n"),
    );
    let (output, json) = swarm.submit(&file, &["--quiet"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(json["steps"][0]["exit_code"], 1, "{json}");
    assert_nothing_left(job_id(&json));
}

/// What the engine applies of the hardening the service asks for: the docker runtime's dropped
/// capabilities everywhere, no-new-privileges only from API 1.50 on (Docker 20.10 accepts the
/// field and drops it: documented, and checked here so that the docs change with the engine).
#[test]
fn swarm_tasks_drop_capabilities_and_get_no_new_privileges_where_the_engine_applies_it() {
    let swarm = SwarmFixture::new();
    let api = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert!(api.status.success(), "{}", text(&api.stderr));
    let api = text(&api.stdout).trim().to_owned();
    let minor: u32 = api
        .strip_prefix("1.")
        .and_then(|minor| minor.parse().ok())
        .unwrap_or_else(|| panic!("unexpected API version {api:?}"));
    let file = swarm.write(
        "j.yaml",
        &swarm_job(
            "hardening",
            "  - name: show\n    run: grep -E '^(NoNewPrivs|CapBnd):' /proc/self/status\n",
        ),
    );
    let (output, json) = swarm.submit(&file, &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines = log_lines(&swarm.step_log(job_id(&json), "show"), "out");
    let field = |name: &str| -> String {
        lines
            .iter()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
            .trim()
            .to_owned()
    };
    let bounding = u64::from_str_radix(&field("CapBnd"), 16).expect("CapBnd is hex");
    // CAP_CHOWN (0) kept; CAP_NET_RAW (13), CAP_SYS_CHROOT (18), CAP_MKNOD (27),
    // CAP_AUDIT_WRITE (29), CAP_SETFCAP (31) dropped.
    assert_ne!(bounding & 1, 0, "CHOWN kept: {bounding:x}");
    for bit in [13, 18, 27, 29, 31] {
        assert_eq!(
            bounding & (1 << bit),
            0,
            "capability {bit} dropped: {bounding:x}"
        );
    }
    let expected = if minor >= 50 { "1" } else { "0" };
    assert_eq!(
        field("NoNewPrivs"),
        expected,
        "engine API {api}: no-new-privileges is applied from API 1.50 on, and docs/executors.md says so"
    );
    assert_nothing_left(job_id(&json));
}

#[test]
fn swarm_steps_see_env_and_trace_id_and_the_runtime_flag_applies() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &job_yaml(
            "env",
            &format!(
                "  - name: show\n    image: {IMAGE}\n    env:\n      GREETING: hello there\n    workdir: /tmp\n    run: echo \"trace=$TRACE_ID greeting=$GREETING step=$MAESTRO_STEP dir=$(pwd)\"; echo \"$TRACEPARENT\"\n"
            ),
        ),
    );
    let (output, json) = swarm.submit(
        &file,
        &[
            "--quiet",
            "--runtime",
            "swarm",
            "--trace-id",
            "trace-swarm-1",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(json["steps"][0]["runtime"], "swarm");
    let lines = log_lines(&swarm.step_log(job_id(&json), "show"), "out");
    assert_eq!(
        lines[0],
        "trace=trace-swarm-1 greeting=hello there step=show dir=/tmp"
    );
    // W3C traceparent: version, the trace's 32 hex digits, the step's span id, sampled.
    let span = json["steps"][0]["span_id"].as_str().expect("span_id");
    let parts: Vec<&str> = lines[1].split('-').collect();
    assert_eq!(parts.len(), 4, "{lines:?}");
    assert_eq!(
        (parts[0], parts[2], parts[3]),
        ("00", span, "01"),
        "{lines:?}"
    );
    assert!(
        parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()),
        "{lines:?}"
    );
    assert_nothing_left(job_id(&json));
}

#[test]
fn swarm_unsatisfiable_placement_fails_after_the_schedule_timeout_with_the_engines_reason() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &swarm_job(
            "nowhere",
            "  - name: placed\n    placement: [\"node.labels.maestro-test-nowhere==true\"]\n    schedule_timeout_seconds: 2\n    run: echo ran\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = swarm.submit(&file, &["--quiet"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        took >= Duration::from_secs(2),
        "failed before the schedule timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(json["steps"][0]["status"], "failed");
    let error = error_of(&json, 0);
    assert!(error.contains("schedule_timeout_seconds"), "{error}");
    assert!(error.contains("no suitable node"), "{error}");
    assert_nothing_left(job_id(&json));
}

#[test]
fn swarm_missing_image_fails_fast_naming_the_image() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &swarm_job(
            "missing",
            "  - name: nope\n    image: maestro-test/not-built-anywhere:1\n    run: \"true\"\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = swarm.submit(&file, &["--quiet"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(json["steps"][0]["status"], "failed");
    let error = error_of(&json, 0);
    assert!(
        error.contains("maestro-test/not-built-anywhere:1"),
        "{error}"
    );
    assert_nothing_left(job_id(&json));
}

#[test]
fn swarm_timeout_kills_a_step_that_ignores_sigterm() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &swarm_job(
            "timeout",
            "  - name: stubborn\n    timeout_seconds: 3\n    run: trap '' TERM; echo started; sleep 60\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = swarm.submit(&file, &["--quiet", "--stop-grace", "0.5"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        took >= Duration::from_secs(3),
        "stopped before its timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(25), "took {took:?}");
    assert_eq!(json["state"], "FAILED");
    assert_eq!(json["steps"][0]["status"], "timed_out", "{json}");
    assert_eq!(json["steps"][0]["teardown"]["verified"], true, "{json}");
    assert_eq!(
        log_lines(&swarm.step_log(job_id(&json), "stubborn"), "out"),
        ["started"]
    );
    assert_nothing_left(job_id(&json));
}

#[test]
fn swarm_timeout_sends_sigterm_that_the_step_gets_within_its_grace_period() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &swarm_job(
            "term",
            "  - name: polite\n    timeout_seconds: 2\n    run: trap 'echo got-term; exit 0' TERM; echo started; sleep 300 & wait\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = swarm.submit(&file, &["--quiet", "--stop-grace", "30"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    // Well within the 30 s grace period: SIGTERM reached the step, which exited by itself.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(json["steps"][0]["status"], "timed_out", "{json}");
    assert_eq!(json["steps"][0]["teardown"]["verified"], true, "{json}");
    // What the step prints after SIGTERM arrives through the follow stream when the engine
    // delivers it before the task is gone (it usually does); it is not asserted, since the
    // engine gives no way to read a stopped task's output afterwards.
    assert_eq!(
        log_lines(&swarm.step_log(job_id(&json), "polite"), "out")
            .first()
            .map(String::as_str),
        Some("started")
    );
    assert_nothing_left(job_id(&json));
}

#[test]
fn swarm_sigint_cancels_the_job_and_removes_the_service() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &swarm_job(
            "cancel",
            "  - name: long\n    memory: 64m\n    cpus: 0.5\n    pids_limit: 50\n    run: echo started; sleep 300\n  - name: after\n    run: echo after\n",
        ),
    );
    let child = spawn_submit(&swarm, &file);
    let id = wait_for_log_line(&swarm, "long", "started");
    let label = format!("maestro.job_id={id}");
    // While it runs: a replicated job of one task, never restarted, labelled, with its limits.
    let services = services_labelled(&label);
    assert_eq!(services.len(), 1);
    let service = inspect(
        "service",
        &services[0],
        "{{.Spec.Mode.ReplicatedJob.MaxConcurrent}} {{.Spec.Mode.ReplicatedJob.TotalCompletions}} {{.Spec.TaskTemplate.RestartPolicy.Condition}} {{index .Spec.Labels \"maestro.step\"}} {{index .Spec.Labels \"maestro.runtime\"}}",
    );
    assert_eq!(service, "1 1 none long swarm");
    let containers = containers_labelled(&label);
    assert_eq!(containers.len(), 1);
    let container = inspect(
        "container",
        &containers[0],
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.Privileged}} {{len .Mounts}}",
    );
    assert_eq!(container, format!("{} 500000000 50 false 0", 64 << 20));
    send_signal(child.id(), Signal::INT);
    let output = crate::util::output_within_child(child);
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let json = parse_json(&output);
    assert_eq!(json["state"], "CANCELLED");
    assert_eq!(json["steps"][0]["status"], "cancelled", "{json}");
    assert_eq!(json["steps"][1]["status"], "skipped");
    // Gone before `mc` exited.
    assert_nothing_left(&id);
}

#[test]
fn swarm_gc_removes_the_service_of_a_killed_mc_and_settles_the_job() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &swarm_job(
            "killed",
            "  - name: long\n    run: echo started; sleep 300\n",
        ),
    );
    let mut child = spawn_submit(&swarm, &file);
    let id = wait_for_log_line(&swarm, "long", "started");
    send_signal(child.id(), Signal::KILL);
    child.wait().unwrap();
    let label = format!("maestro.job_id={id}");
    assert_eq!(
        services_labelled(&label).len(),
        1,
        "the killed mc left its service"
    );
    assert_eq!(swarm.status(&id)["state"], "RUNNING");

    let output = swarm.run(&["gc"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = text(&output.stdout);
    assert!(
        report
            .lines()
            .any(|line| line.contains("swarm service") && line.contains(&id)),
        "{report}"
    );
    // The task container goes with its service; gc has removed what the engine had not.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !containers_labelled(&label).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_nothing_left(&id);
    assert_eq!(swarm.status(&id)["state"], "FAILED");
}

#[test]
fn swarm_docker_and_local_steps_mix_in_one_job() {
    let swarm = SwarmFixture::new();
    let file = swarm.write(
        "j.yaml",
        &job_yaml(
            "mixed",
            &format!(
                "  - name: on-host\n    run: test -d /usr && echo host > where.txt\n  - name: in-container\n    runtime: docker\n    image: {IMAGE}\n    run: test ! -d /usr && echo container >> where.txt\n  - name: on-swarm\n    runtime: swarm\n    image: {IMAGE}\n    run: test ! -d /usr && test ! -e /workspace && echo swarm\n"
            ),
        ),
    );
    let (output, json) = swarm.submit(&file, &["--quiet"]);
    assert!(output.status.success(), "{}\n{json}", text(&output.stderr));
    let runtimes: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["runtime"].as_str().unwrap())
        .collect();
    assert_eq!(runtimes, ["local", "docker", "swarm"]);
    assert_eq!(
        std::fs::read_to_string(swarm.path().join("where.txt")).unwrap(),
        "host\ncontainer\n"
    );
    assert_eq!(
        log_lines(&swarm.step_log(job_id(&json), "on-swarm"), "out"),
        ["swarm"]
    );
    let label = format!("maestro.job_id={}", job_id(&json));
    // The docker step's container is auto-removed by the engine, within moments.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !containers_labelled(&label).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_nothing_left(job_id(&json));
}

#[test]
fn swarm_engine_that_is_not_a_manager_fails_the_job_before_any_step_with_exit_4() {
    ensure_image();
    let _serial = serial();
    let (state, _) = swarm_state();
    assert_eq!(
        state, "inactive",
        "this test needs an engine in no swarm (the swarm tests leave any swarm they make)"
    );
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &swarm_job("no-swarm", "  - name: s\n    run: echo ran\n"),
    );
    let output = env
        .mc()
        .args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("is not an active swarm member"), "{stderr}");
    assert!(stderr.contains("docker swarm init"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let json = parse_json(&output);
    assert_eq!(json["state"], "FAILED");
    assert!(json["steps"][0]["status"] != "succeeded", "{json}");
}

#[test]
fn swarm_workdir_that_assumes_the_workspace_is_refused_before_anything_is_stored() {
    let env = Env::new();
    for workdir in ["build", "/workspace/sub"] {
        let file = env.write(
            "j.yaml",
            &swarm_job(
                "wd",
                &format!("  - name: s\n    workdir: {workdir}\n    run: \"true\"\n"),
            ),
        );
        let output = env.run(&["submit", file.to_str().unwrap(), "--quiet"]);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("do not share the submitter's disk"),
            "{stderr}"
        );
    }
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "wd",
            "  - name: s\n    placement: [\"node.role==manager\"]\n    run: \"true\"\n",
        ),
    );
    let output = env.run(&["submit", file.to_str().unwrap(), "--quiet"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(env.job_ids().is_empty());
}

/// A two-node swarm: the engine under test as the manager, advertising the host end of a veth
/// pair, and a second `dockerd` of the test's own in a network namespace of its own (the other
/// end of the pair) as a worker labelled `maestro-test-node=2`, holding a copy of the test
/// image (loaded, so both nodes have the same image id, which is what the runtime pins a local
/// image to). `Drop`, also on panic, removes the jobs' services, has the worker leave, stops the
/// second engine by pid, leaves the swarm on the manager, and removes `docker_gwbridge` (if the
/// fixture created it), the veth pair, the namespace and the second engine's directories.
struct TwoNodes {
    env: Env,
    netns: String,
    veth: String,
    dir: tempfile::TempDir,
    dockerd: Option<std::process::Child>,
    /// The registries of [`TwoNodes::start_registry`], one per node.
    registries: Vec<std::process::Child>,
    manager_initialised: bool,
    gwbridge_created: bool,
    _serial: Serial,
}

/// The namespace and the host end of the veth pair (names short enough for an interface).
const NETNS: &str = "maestro-swarm-test";
const VETH: &str = "mswarm0";
const MANAGER_ADDRESS: &str = "10.200.0.1";
const WORKER_ADDRESS: &str = "10.200.0.2";
/// Where each node's private registry listens (see [`TwoNodes::start_registry`]).
const REGISTRY: &str = "127.0.0.1:5123";
const REGISTRY_USER: &str = "maestro-test";
const REGISTRY_PASSWORD: &str = "maestro-registry-secret-2f9c";
/// The second engine's cgroup parent, removed with it.
const CGROUP_PARENT: &str = "maestro-swarm-test-node2";

fn run_ok(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} ({error}); the two-node swarm test needs iproute2, util-linux and dockerd"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        text(&output.stderr)
    );
    output
}

impl TwoNodes {
    fn new() -> Self {
        ensure_image();
        let serial = serial();
        let (state, _) = swarm_state();
        assert_eq!(
            state, "inactive",
            "the two-node swarm test needs an engine in no swarm, to make it the manager of a swarm of its own"
        );
        let dir = tempfile::Builder::new()
            .prefix("maestro-node2-")
            .tempdir()
            .expect("tempdir");
        let mut nodes = Self {
            env: Env::new(),
            netns: NETNS.to_owned(),
            veth: VETH.to_owned(),
            dir,
            dockerd: None,
            registries: Vec::new(),
            manager_initialised: false,
            gwbridge_created: false,
            _serial: serial,
        };
        // Leftovers of a run killed before its Drop could run.
        let _ = Command::new("ip").args(["link", "del", VETH]).output();
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
        run_ok("ip", &["netns", "add", NETNS]);
        run_ok(
            "ip",
            &[
                "link", "add", VETH, "type", "veth", "peer", "name", "mswarm1",
            ],
        );
        run_ok("ip", &["link", "set", "mswarm1", "netns", NETNS]);
        run_ok(
            "ip",
            &["addr", "add", &format!("{MANAGER_ADDRESS}/24"), "dev", VETH],
        );
        run_ok("ip", &["link", "set", VETH, "up"]);
        run_ok(
            "ip",
            &[
                "-n",
                NETNS,
                "addr",
                "add",
                &format!("{WORKER_ADDRESS}/24"),
                "dev",
                "mswarm1",
            ],
        );
        run_ok("ip", &["-n", NETNS, "link", "set", "mswarm1", "up"]);
        run_ok("ip", &["-n", NETNS, "link", "set", "lo", "up"]);

        let root = nodes.dir.path();
        let config = serde_json::json!({
            "data-root": root.join("data"),
            "exec-root": root.join("exec"),
            "pidfile": root.join("docker.pid"),
            "hosts": [nodes.worker_host()],
            "bip": "172.31.250.1/24",
            "cgroup-parent": CGROUP_PARENT,
            "storage-driver": "fuse-overlayfs",
            "log-driver": "json-file",
        });
        let config_file = root.join("daemon.json");
        std::fs::write(&config_file, config.to_string()).expect("write daemon.json");
        let log = std::fs::File::create(root.join("dockerd.log")).expect("dockerd log");
        // `ip netns exec` remounts /sys, and dockerd then finds no devices cgroup: nsenter.
        let dockerd = Command::new("unshare")
            .args([
                "--uts",
                "nsenter",
                &format!("--net=/run/netns/{NETNS}"),
                "dockerd",
                "--config-file",
            ])
            .arg(&config_file)
            .stdout(log.try_clone().expect("dockerd log"))
            .stderr(log)
            .spawn()
            .expect("start the second dockerd");
        nodes.dockerd = Some(dockerd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes.worker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not answer within 30 s: {}",
                std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let loaded = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {IMAGE} | docker -H {} load",
                nodes.worker_host()
            ))
            .output()
            .expect("sh");
        assert!(
            loaded.status.success(),
            "cannot load the test image on the second node: {}",
            text(&loaded.stderr)
        );

        nodes.gwbridge_created = !network_exists("docker_gwbridge");
        let init = docker(&["swarm", "init", "--advertise-addr", MANAGER_ADDRESS]);
        assert!(
            init.status.success(),
            "docker swarm init failed: {}",
            text(&init.stderr)
        );
        nodes.manager_initialised = true;
        let token = text(&docker(&["swarm", "join-token", "-q", "worker"]).stdout)
            .trim()
            .to_owned();
        let joined = nodes.worker(&[
            "swarm",
            "join",
            "--token",
            &token,
            &format!("{MANAGER_ADDRESS}:2377"),
        ]);
        assert!(
            joined.status.success(),
            "the second node cannot join: {}",
            text(&joined.stderr)
        );
        let worker_id = text(
            &nodes
                .worker(&["info", "--format", "{{.Swarm.NodeID}}"])
                .stdout,
        )
        .trim()
        .to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = docker(&[
                "node",
                "inspect",
                "--format",
                "{{.Status.State}}",
                &worker_id,
            ]);
            if text(&ready.stdout).trim() == "ready" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the second node never became ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let labelled = docker(&[
            "node",
            "update",
            "--label-add",
            "maestro-test-node=2",
            &worker_id,
        ]);
        assert!(labelled.status.success(), "{}", text(&labelled.stderr));
        nodes
    }

    /// A private registry on both nodes: Debian's `docker-registry` (distribution 2.8) on each
    /// node's `127.0.0.1:REGISTRY_PORT` (engines take loopback registries without TLS), both
    /// serving one storage directory, so one image name pulls the same bytes on either node.
    /// htpasswd auth with [`REGISTRY_USER`] and [`REGISTRY_PASSWORD`]. Stopped by `Drop`.
    fn start_registry(&mut self) {
        let root = self.dir.path().join("registry");
        std::fs::create_dir_all(root.join("storage")).expect("registry storage");
        let htpasswd = run_ok("htpasswd", &["-Bbn", REGISTRY_USER, REGISTRY_PASSWORD]);
        std::fs::write(root.join("htpasswd"), &htpasswd.stdout).expect("htpasswd");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {REGISTRY}\nauth:\n  htpasswd:\n    realm: maestro-test\n    path: {}\n",
            root.join("storage").display(),
            root.join("htpasswd").display()
        );
        let config_file = root.join("config.yml");
        std::fs::write(&config_file, config).expect("registry config");
        let netns = format!("--net=/run/netns/{}", self.netns);
        for (node, prefix) in [
            ("manager", vec![]),
            ("worker", vec!["nsenter", netns.as_str()]),
        ] {
            let log =
                std::fs::File::create(root.join(format!("{node}.log"))).expect("registry log");
            let mut command = match prefix.split_first() {
                Some((program, args)) => {
                    let mut command = Command::new(program);
                    command.args(args).arg("docker-registry");
                    command
                }
                None => Command::new("docker-registry"),
            };
            let child = command
                .arg("serve")
                .arg(&config_file)
                .stdout(log.try_clone().expect("registry log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start docker-registry ({error}); the swarm registry tests need Debian's docker-registry package"));
            self.registries.push(child);
            // Up when it answers /v2/ (401: it wants the credentials).
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let mut probe = match prefix.split_first() {
                    Some((program, args)) => {
                        let mut probe = Command::new(program);
                        probe.args(args).arg("curl");
                        probe
                    }
                    None => Command::new("curl"),
                };
                let answer = probe
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                    .arg(format!("http://{REGISTRY}/v2/"))
                    .output()
                    .expect("curl");
                if text(&answer.stdout) == "401" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the {node}'s registry did not answer on {REGISTRY} within 20 s (is the port taken?): {}",
                    std::fs::read_to_string(root.join(format!("{node}.log"))).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn worker_host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// `docker -H <second engine> ARGS`.
    fn worker(&self, args: &[&str]) -> Output {
        let host = self.worker_host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        for mut registry in self.registries.drain(..) {
            let _ = registry.kill();
            let _ = registry.wait();
        }
        for job_id in self.env.job_ids() {
            remove_services(&format!("maestro.job_id={job_id}"));
            remove_labelled(&format!("maestro.job_id={job_id}"));
            let host = self.worker_host();
            let left = text(
                &docker(&[
                    "-H",
                    &host,
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=maestro.job_id={job_id}"),
                ])
                .stdout,
            );
            for id in left.lines() {
                let _ = docker(&["-H", &host, "rm", "-f", id]);
            }
        }
        if let Some(mut dockerd) = self.dockerd.take() {
            let _ = self.worker(&["swarm", "leave", "--force"]);
            send_signal(dockerd.id(), Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(dockerd.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(dockerd.try_wait(), Ok(None)) {
                let _ = dockerd.kill();
                let _ = dockerd.wait();
            }
        }
        if self.manager_initialised {
            let _ = docker(&["swarm", "leave", "--force"]);
            if self.gwbridge_created {
                let _ = docker(&["network", "rm", "docker_gwbridge"]);
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        // Whatever the second engine left mounted under its directories.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().to_string_lossy().into_owned();
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|target| target.starts_with(&root))
            .collect();
        inside.sort_by_key(|target| std::cmp::Reverse(target.len()));
        for target in inside {
            let _ = Command::new("umount").args(["-l", target]).output();
        }
        // The cgroups the second engine made under its `cgroup-parent`, deepest first.
        let mut cgroups = Vec::new();
        for controller in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            collect_dirs(&controller.path().join(CGROUP_PARENT), &mut cgroups);
        }
        cgroups.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
        for cgroup in cgroups {
            let _ = std::fs::remove_dir(cgroup);
        }
    }
}

/// `dir` and every directory under it, if it exists.
fn collect_dirs(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    found.push(dir.to_path_buf());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            collect_dirs(&entry.path(), found);
        }
    }
}

#[test]
fn swarm_step_placed_on_the_second_node_reports_its_output_and_exit_code_through_the_manager() {
    let nodes = TwoNodes::new();
    let file = nodes.env.write(
        "j.yaml",
        &swarm_job(
            "placed",
            "  - name: there\n    placement: [\"node.labels.maestro-test-node==2\"]\n    run: echo on-worker; echo oops >&2; exit 7\n",
        ),
    );
    let (output, json) = nodes.env.submit(&file, &["--quiet"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}\n{json}",
        text(&output.stderr)
    );
    assert_eq!(json["steps"][0]["exit_code"], 7, "{json}");
    assert_eq!(json["steps"][0]["teardown"]["verified"], true, "{json}");
    let log = nodes.env.step_log(job_id(&json), "there");
    assert_eq!(log_lines(&log, "out"), ["on-worker"], "{log}");
    assert_eq!(log_lines(&log, "err"), ["oops"], "{log}");
    let id = job_id(&json);
    let label = format!("maestro.job_id={id}");
    // It ran on the second node: the manager's engine never had a container of the job, and
    // the service is gone.
    assert!(containers_labelled(&label).is_empty());
    assert!(services_labelled(&label).is_empty());
    // Docker 20.10 leaves the exited container of a finished job task on a worker once its
    // service is removed, and the manager cannot reach it: `mc gc` pointed at that node's
    // engine removes it.
    let filter = format!("label={label}");
    let left = text(
        &nodes
            .worker(&[
                "ps",
                "-aq",
                "--filter",
                &filter,
                "--filter",
                "status=running",
            ])
            .stdout,
    );
    assert!(
        left.trim().is_empty(),
        "a task container still runs on the second node: {left}"
    );
    let gc = nodes
        .env
        .mc()
        .env("DOCKER_HOST", nodes.worker_host())
        .arg("gc")
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    let left = text(&nodes.worker(&["ps", "-aq", "--filter", &filter]).stdout);
    assert!(
        left.trim().is_empty(),
        "containers of the job remain on the second node after mc gc: {left}\n{}",
        text(&gc.stdout)
    );
}

/// A private image on the nodes' registry, pushed with the credentials of `config` (a Docker
/// configuration directory logged in to it); its name and the digest the registry gave it.
/// With `keep_tag`, the manager keeps the pushed tag (so the runtime pins it from the
/// manager's copy); without, the manager has only the test image's other names, and the
/// runtime must ask the registry, with credentials, for the digest.
fn push_private_image(config: &std::path::Path, keep_tag: bool) -> (String, String) {
    let config = config.to_str().expect("utf-8 path");
    let mut login = Command::new("docker")
        .args([
            "--config",
            config,
            "login",
            REGISTRY,
            "-u",
            REGISTRY_USER,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker login");
    {
        use std::io::Write;
        let mut stdin = login.stdin.take().expect("stdin");
        stdin
            .write_all(REGISTRY_PASSWORD.as_bytes())
            .expect("password");
    }
    let login = login.wait_with_output().expect("docker login");
    assert!(
        login.status.success(),
        "docker login: {}",
        text(&login.stderr)
    );
    let image = format!("{REGISTRY}/maestro-swarm-private:{}", std::process::id());
    let tagged = docker(&["tag", IMAGE, &image]);
    assert!(tagged.status.success(), "{}", text(&tagged.stderr));
    let pushed = docker(&["--config", config, "push", &image]);
    assert!(
        pushed.status.success(),
        "docker push: {}",
        text(&pushed.stderr)
    );
    let digest = text(&pushed.stdout)
        .split_whitespace()
        .find(|word| word.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in: {}", text(&pushed.stdout)))
        .to_owned();
    if !keep_tag {
        let untagged = docker(&["rmi", &image]);
        assert!(untagged.status.success(), "{}", text(&untagged.stderr));
        // The digest reference the push left would let the manager pin it from its own copy.
        let _ = docker(&["rmi", &format!("{REGISTRY}/maestro-swarm-private@{digest}")]);
    }
    (image, digest)
}

/// `mc submit FILE --output json --quiet` with `DOCKER_CONFIG` set to `config`.
fn submit_with_docker_config(
    env: &Env,
    file: &std::path::Path,
    config: &std::path::Path,
) -> (Output, Value) {
    let output = env
        .mc()
        .env("DOCKER_CONFIG", config)
        .env("MAESTRO_LOG", "maestro_swarm=debug")
        .args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ])
        .output()
        .unwrap();
    let json = parse_json(&output);
    (output, json)
}

/// Remove every reference to the private image from the engine at `host` (the test image's
/// layers stay: they are the test image's).
fn remove_private_image(args: &[&str]) {
    let mut list = args.to_vec();
    list.extend_from_slice(&[
        "images",
        "--digests",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}",
    ]);
    let listed = text(&docker(&list).stdout);
    for line in listed
        .lines()
        .filter(|line| line.contains("maestro-swarm-private"))
    {
        for reference in line
            .split_whitespace()
            .filter(|r| !r.ends_with(":<none>") && !r.ends_with("@<none>"))
        {
            let mut rmi = args.to_vec();
            rmi.extend_from_slice(&["rmi", reference]);
            let _ = docker(&rmi);
        }
    }
}

/// Every regular file under `dir`, read whole.
fn all_file_bytes(dir: &std::path::Path, found: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            all_file_bytes(&entry.path(), found);
        } else if kind.is_file()
            && let Ok(bytes) = std::fs::read(entry.path())
        {
            found.push((entry.path(), bytes));
        }
    }
}

#[test]
fn swarm_private_image_is_pinned_and_pulled_on_the_second_node_with_the_callers_credentials() {
    let mut nodes = TwoNodes::new();
    nodes.start_registry();
    let config = nodes.dir.path().join("docker-config");
    let (image, digest) = push_private_image(&config, false);
    let host = nodes.worker_host();
    let file = nodes.env.write(
        "j.yaml",
        &swarm_job(
            "private",
            &format!("  - name: there\n    image: {image}\n    placement: [\"node.labels.maestro-test-node==2\"]\n    run: echo private-ok\n"),
        ),
    );
    let (output, json) = submit_with_docker_config(&nodes.env, &file, &config);
    // The second node holds the image under the digest the registry gave at push time: the
    // manager pinned it once, and the node pulled exactly those bytes, with the caller's
    // credentials (a reference `repo@digest` exists on an engine only after such a pull).
    let pinned = format!("{REGISTRY}/maestro-swarm-private@{digest}");
    let held = docker(&[
        "-H", &host, "image", "inspect", "--format", "{{.Id}}", &pinned,
    ]);
    // The second engine goes with the fixture; the manager keeps nothing of the test's.
    remove_private_image(&[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{json}",
        text(&output.stderr)
    );
    let id = job_id(&json).to_owned();
    let log = nodes.env.step_log(&id, "there");
    assert_eq!(log_lines(&log, "out"), ["private-ok"], "{log}");
    assert!(
        held.status.success(),
        "the second node has no image {pinned}: {}\nits images: {}\nmc's diagnostics: {}",
        text(&held.stderr),
        text(&docker(&["-H", &host, "images", "--digests"]).stdout),
        text(&output.stderr)
    );
    // The credentials reached no record and no output.
    let mut files = Vec::new();
    all_file_bytes(&nodes.env.state, &mut files);
    assert!(!files.is_empty());
    for (path, bytes) in files {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(REGISTRY_PASSWORD),
            "the registry password is in {}",
            path.display()
        );
    }
    assert!(!text(&output.stdout).contains(REGISTRY_PASSWORD));
    assert!(!text(&output.stderr).contains(REGISTRY_PASSWORD));
    assert!(services_labelled(&format!("maestro.job_id={id}")).is_empty());
}

#[test]
fn swarm_task_rejected_because_its_node_cannot_pull_the_image_fails_the_step_naming_the_image() {
    let mut nodes = TwoNodes::new();
    nodes.start_registry();
    // Pushed with credentials, but the job is submitted without any: the manager pins the
    // image from its own copy, and the second node is refused by the registry.
    let (image, _) = push_private_image(&nodes.dir.path().join("docker-config"), true);
    let empty = nodes.dir.path().join("no-credentials");
    std::fs::create_dir_all(&empty).unwrap();
    let file = nodes.env.write(
        "j.yaml",
        &swarm_job(
            "rejected",
            &format!("  - name: there\n    image: {image}\n    placement: [\"node.labels.maestro-test-node==2\"]\n    schedule_timeout_seconds: 120\n    run: echo never\n"),
        ),
    );
    let started = Instant::now();
    let (output, json) = submit_with_docker_config(&nodes.env, &file, &empty);
    let elapsed = started.elapsed();
    let host = nodes.worker_host();
    remove_private_image(&[]);
    remove_private_image(&["-H", &host]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}\n{json}",
        text(&output.stderr)
    );
    assert!(
        elapsed < Duration::from_secs(60),
        "a rejected task must not hang: {elapsed:?}"
    );
    assert_eq!(json["steps"][0]["status"], "failed", "{json}");
    let error = error_of(&json, 0);
    assert!(error.contains("maestro-swarm-private"), "{error}");
    assert!(error.contains("rejected"), "{error}");
    assert_nothing_left(job_id(&json));
}
