//! The plugin executor against misbehaving plugins: every failure ends in time, named, no panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use maestro_core::JobId;
use maestro_core::executor::{
    CommandLine, ContainerSettings, Executor, ExecutorError, StepControl, StepOutcome, StepOutput,
    StepRequest, StopReason, TeardownMethod,
};
use maestro_core::trace::TraceId;
use maestro_plugin_host::{PluginExecutor, PluginOptions};

mod common;
use common::install_script;
use tokio_util::sync::CancellationToken;

fn plugin(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("mc-executor-{name}"));
    install_script(
        &path,
        &format!(
            "#!/usr/bin/env python3\nimport json, os, sys, time\n\
             def send(m):\n    sys.stdout.write(json.dumps(m) + '\\n'); sys.stdout.flush()\n{body}"
        ),
    );
    path
}

const HANDSHAKE: &str = "send({'type': 'hello', 'protocol': 'maestro-executor', 'versions': [1]})\n\
                         sys.stdin.readline()\n";

fn serve_then(on_start: &str) -> String {
    format!(
        "{HANDSHAKE}for line in sys.stdin:\n    req = json.loads(line)\n    \
         if req['type'] == 'describe':\n        send({{'type': 'described', 'id': req['id'], 'name': 't'}})\n    \
         elif req['type'] == 'start':\n        send({{'type': 'started', 'id': req['id'], 'task': req['task']}})\n{on_start}\n"
    )
}

/// Short deadlines, but generous enough for a Python start on a loaded machine.
fn options(handshake: Duration) -> PluginOptions {
    PluginOptions {
        handshake_timeout: handshake,
        request_timeout: Duration::from_secs(1),
        ping_interval: Duration::from_millis(200),
        stop_slack: Duration::from_millis(200),
        shutdown_grace: Duration::from_millis(500),
    }
}

fn step(dir: &Path) -> StepRequest {
    StepRequest {
        job_id: JobId::now_v7(),
        job_name: "j".to_owned(),
        trace_id: TraceId::parse("t").unwrap(),
        index: 0,
        name: "s".to_owned(),
        runtime: "t".to_owned(),
        command: CommandLine::Shell("true".to_owned()),
        env: BTreeMap::new(),
        host_env: Default::default(),
        secrets: Default::default(),
        span_id: maestro_core::trace::SpanId::generate(),
        workspace: dir.to_path_buf(),
        workdir: None,
        timeout: Duration::from_secs(60),
        container: ContainerSettings::default(),
        reuse_container: false,
        with: None,
        isolation: Default::default(),
        writable_paths: Vec::new(),
        host_access: Vec::new(),
    }
}

async fn run(path: &Path, dir: &Path) -> (Result<(), ExecutorError>, Duration) {
    run_with(path, dir, Duration::from_secs(10)).await
}

async fn run_with(
    path: &Path,
    dir: &Path,
    handshake: Duration,
) -> (Result<(), ExecutorError>, Duration) {
    let executor = PluginExecutor::with_options("t", path, options(handshake));
    let request = step(dir);
    let began = Instant::now();
    let result = async {
        executor.prepare(std::slice::from_ref(&request)).await?;
        let log = std::fs::File::create(dir.join("s.log")).unwrap();
        let mut output = StepOutput::new("s", log, "h", None).unwrap();
        let control = StepControl::new(
            tokio::time::Instant::now() + Duration::from_secs(60),
            Duration::from_millis(300),
            CancellationToken::new(),
        );
        executor
            .run(&request, &mut output, &control)
            .await
            .map(drop)
    }
    .await;
    executor.finish(request.job_id).await;
    (result, began.elapsed())
}

fn message(result: Result<(), ExecutorError>) -> String {
    match result {
        Ok(()) => panic!("expected a failure"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn a_plugin_that_never_says_hello_is_unavailable_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = plugin(dir.path(), "mute", "time.sleep(3600)\n");
    let (result, took) = run_with(&path, dir.path(), Duration::from_millis(500)).await;
    assert!(matches!(result, Err(ExecutorError::Unavailable { .. })));
    assert!(message(result).contains("sent no hello within 500 ms"));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn a_plugin_that_dies_at_once_is_unavailable_with_its_last_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = plugin(
        dir.path(),
        "dies",
        "sys.stderr.write('no licence\\n'); sys.exit(2)\n",
    );
    let (result, _) = run(&path, dir.path()).await;
    let text = message(result);
    assert!(text.contains("exited before its hello"), "{text}");
    assert!(text.contains("no licence"), "{text}");
}

#[tokio::test]
async fn a_plugin_that_stops_answering_pings_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = plugin(
        dir.path(),
        "frozen",
        &serve_then("        time.sleep(3600)"),
    );
    let (result, took) = run(&path, dir.path()).await;
    assert!(matches!(result, Err(ExecutorError::StepFailed { .. })));
    assert!(message(result).contains("stopped answering pings"));
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test]
async fn garbage_and_a_huge_line_fail_the_step_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = plugin(
        dir.path(),
        "garbage",
        &serve_then(
            "        sys.stdout.write('not json\\n[1,2]\\n{\"no\": \"type\"}\\n' + 'x' * (2 * 1024 * 1024) + '\\n'); sys.stdout.flush(); time.sleep(3600)",
        ),
    );
    let (result, took) = run(&path, dir.path()).await;
    let text = message(result);
    assert!(text.contains("longer than 1048576 bytes"), "{text}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test]
async fn an_exit_event_for_an_executor_fault_fails_the_step_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = plugin(
        dir.path(),
        "faulty",
        &serve_then(
            "        send({'type': 'exit', 'task': req['task'], 'reason': 'error', 'fault': 'executor', 'message': 'cluster is full'})",
        ),
    );
    let (result, _) = run(&path, dir.path()).await;
    let text = message(result);
    assert!(text.contains("cluster is full"), "{text}");
    assert!(text.contains("plugin t"), "{text}");
}

/// A process of the test's own, leading its own process group (so that only the host's check
/// of who created it, not the check that it leads a group, can save it), killed on drop.
struct Bystander(std::process::Child);

impl Bystander {
    fn start() -> Self {
        use std::os::unix::process::CommandExt;
        Self(
            std::process::Command::new("sleep")
                .arg("60")
                .process_group(0)
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap()
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run one step of `path` whose timeout is `timeout`; the outcome, the step log and the time taken.
async fn run_timed_out(
    path: &Path,
    dir: &Path,
    timeout: Duration,
) -> (Result<StepOutcome, ExecutorError>, String, Duration) {
    let executor = PluginExecutor::with_options("t", path, options(Duration::from_secs(10)));
    let request = step(dir);
    let began = Instant::now();
    let log_path = dir.join("s.log");
    let result = async {
        executor.prepare(std::slice::from_ref(&request)).await?;
        let log = std::fs::File::create(&log_path).unwrap();
        let mut output = StepOutput::new("s", log, "h", None).unwrap();
        let control = StepControl::new(
            tokio::time::Instant::now() + timeout,
            Duration::from_millis(300),
            CancellationToken::new(),
        );
        executor.run(&request, &mut output, &control).await
    }
    .await;
    executor.finish(request.job_id).await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    (result, log, began.elapsed())
}

/// A plugin that reports `pgid` for its task and then hangs (answering nothing, ignoring stop),
/// so the host has to kill it, and with it every task group it believes in.
fn hangs_reporting(pgid: i32) -> String {
    format!(
        "{HANDSHAKE}for line in sys.stdin:\n    req = json.loads(line)\n    \
         if req['type'] == 'describe':\n        send({{'type': 'described', 'id': req['id'], 'name': 't'}})\n    \
         elif req['type'] == 'start':\n        send({{'type': 'started', 'id': req['id'], 'task': req['task'], 'pgid': {pgid}}})\n        \
         time.sleep(3600)\n"
    )
}

#[tokio::test]
async fn reported_pgids_the_plugin_did_not_create_are_never_signalled() {
    let mut bystander = Bystander::start();
    for pgid in [-999_999, -1, 0, 1, bystander.pid()] {
        let dir = tempfile::tempdir().unwrap();
        let path = plugin(dir.path(), "liar", &hangs_reporting(pgid));
        let (result, log, took) =
            run_timed_out(&path, dir.path(), Duration::from_millis(300)).await;
        // No panic, the step is recorded as timed out (killed after its grace), in time.
        let outcome = result.unwrap_or_else(|error| panic!("pgid {pgid}: {error}"));
        assert_eq!(outcome.stopped, Some(StopReason::TimedOut), "pgid {pgid}");
        assert_eq!(outcome.signal, Some(9), "pgid {pgid}");
        assert!(log.contains("plugin t did not end the step"), "{log}");
        assert!(took < Duration::from_secs(5), "pgid {pgid}: {took:?}");
        assert!(
            bystander.alive(),
            "pgid {pgid}: an unrelated process group was killed"
        );
    }
}

#[tokio::test]
async fn a_task_group_the_plugin_created_is_killed_with_the_hung_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("task.pid");
    let path = plugin(
        dir.path(),
        "hangs",
        &format!(
            "{HANDSHAKE}import subprocess\nfor line in sys.stdin:\n    req = json.loads(line)\n    \
             if req['type'] == 'describe':\n        send({{'type': 'described', 'id': req['id'], 'name': 't'}})\n    \
             elif req['type'] == 'start':\n        \
             p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n        \
             open({pid_file:?}, 'w').write(str(p.pid))\n        \
             send({{'type': 'started', 'id': req['id'], 'task': req['task'], 'pgid': p.pid}})\n        \
             time.sleep(3600)\n",
            pid_file = pid_file.display().to_string()
        ),
    );
    let (result, _, _) = run_timed_out(&path, dir.path(), Duration::from_millis(300)).await;
    assert_eq!(result.unwrap().stopped, Some(StopReason::TimedOut));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Killed; its parent (the killed plugin) is gone, so init reaps it shortly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(Instant::now() < deadline, "task {pid} outlived the plugin");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_step_the_plugin_does_not_stop_when_cancelled_is_recorded_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let path = plugin(dir.path(), "stubborn", &hangs_reporting(-5));
    let executor = PluginExecutor::with_options("t", &path, options(Duration::from_secs(10)));
    let request = step(dir.path());
    executor
        .prepare(std::slice::from_ref(&request))
        .await
        .unwrap();
    let log_path = dir.path().join("s.log");
    let mut output =
        StepOutput::new("s", std::fs::File::create(&log_path).unwrap(), "h", None).unwrap();
    let cancel = CancellationToken::new();
    let control = StepControl::new(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_millis(300),
        cancel.clone(),
    );
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let outcome = executor.run(&request, &mut output, &control).await.unwrap();
    canceller.await.unwrap();
    executor.finish(request.job_id).await;
    assert_eq!(outcome.stopped, Some(StopReason::Cancelled));
    assert_eq!(outcome.signal, Some(9));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("the job was cancelled"), "{log}");
}

/// A plugin that starts its task in a process group of its own with a background child, reports
/// the group, and sends the task's exit while the child still runs in that group.
fn leaves_a_child_in_the_group(pid_file: &Path) -> String {
    format!(
        "{HANDSHAKE}import subprocess\nfor line in sys.stdin:\n    req = json.loads(line)\n    \
         if req['type'] == 'describe':\n        send({{'type': 'described', 'id': req['id'], 'name': 't'}})\n    \
         elif req['type'] == 'start':\n        \
         p = subprocess.Popen(['sh', '-c', 'sleep 60 & echo $! > {pid_file}; wait'], start_new_session=True)\n        \
         send({{'type': 'started', 'id': req['id'], 'task': req['task'], 'pgid': p.pid}})\n        \
         while not os.path.exists({pid_file:?}) or not open({pid_file:?}).read().strip(): time.sleep(0.01)\n        \
         send({{'type': 'exit', 'task': req['task'], 'code': 0, 'reason': 'completed', 'teardown': {{'verified': True}}}})\n",
        pid_file = pid_file.display().to_string()
    )
}

#[tokio::test]
async fn a_task_that_leaves_a_process_in_its_group_fails_its_teardown_whatever_the_plugin_says() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let path = plugin(dir.path(), "leaky", &leaves_a_child_in_the_group(&pid_file));
    let (result, _, _) = run_timed_out(&path, dir.path(), Duration::from_secs(30)).await;
    let outcome = result.unwrap();
    let teardown = outcome.teardown.expect("the host checks a group it knows");
    assert_eq!(teardown.method, TeardownMethod::ProcessGroup);
    assert!(!teardown.verified, "{teardown:?}");
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        teardown
            .remaining
            .iter()
            .any(|line| line.starts_with(&format!("pid {child} (sleep)"))),
        "{teardown:?}"
    );
    // The host killed it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task's child {child} outlived the step"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_plugin_reported_teardown_is_recorded_as_the_plugins_word() {
    for (report, verified) in [
        ("{'verified': True}", Some(true)),
        (
            "{'verified': False, 'remaining': ['remote pid 7 (make)']}",
            Some(false),
        ),
        ("None", None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let body = serve_then(&format!(
            "        send({{'type': 'exit', 'task': req['task'], 'code': 0, 'reason': 'completed', 'teardown': {report}}})"
        ));
        let path = plugin(dir.path(), "remote", &body);
        let (result, _, _) = run_timed_out(&path, dir.path(), Duration::from_secs(30)).await;
        let outcome = result.unwrap();
        match verified {
            None => assert_eq!(outcome.teardown, None, "{report}"),
            Some(verified) => {
                let teardown = outcome.teardown.unwrap();
                assert_eq!(teardown.method, TeardownMethod::PluginReported, "{report}");
                assert_eq!(teardown.verified, verified, "{report}");
                assert_eq!(teardown.remaining.is_empty(), verified, "{report}");
            }
        }
    }
}

#[tokio::test]
async fn an_empty_group_confirms_a_plugin_that_says_its_task_left_nothing_and_proves_nothing_alone()
{
    for (report, expected) in [
        ("{'verified': True}", Some(TeardownMethod::ProcessGroup)),
        ("None", None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = plugin(
            dir.path(),
            "tidy",
            &format!(
                "{HANDSHAKE}import subprocess\nfor line in sys.stdin:\n    req = json.loads(line)\n    \
                 if req['type'] == 'describe':\n        send({{'type': 'described', 'id': req['id'], 'name': 't'}})\n    \
                 elif req['type'] == 'start':\n        \
                 p = subprocess.Popen(['sleep', '0.3'], start_new_session=True)\n        \
                 send({{'type': 'started', 'id': req['id'], 'task': req['task'], 'pgid': p.pid}})\n        \
                 p.wait()\n        \
                 send({{'type': 'exit', 'task': req['task'], 'code': 0, 'reason': 'completed', 'teardown': {report}}})\n"
            ),
        );
        let (result, _, _) = run_timed_out(&path, dir.path(), Duration::from_secs(30)).await;
        let teardown = result.unwrap().teardown;
        assert_eq!(teardown.as_ref().map(|t| t.method), expected, "{report}");
        assert!(teardown.is_none_or(|t| t.verified), "{report}");
    }
}

/// A plugin's process is registered as one this program started, from its start until the
/// executor is done with it: a bare step's orphan search under `mc serve` (another job, at the
/// same time) never takes it for an orphan of that step and kills it.
#[tokio::test]
async fn a_plugins_process_is_registered_as_ours_while_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("plugin.pid");
    let body = format!(
        "open({:?}, 'w').write(str(os.getpid()))\n{}",
        pid_file.display().to_string(),
        serve_then("        pass")
    );
    let path = plugin(dir.path(), "registered", &body);
    let executor = PluginExecutor::with_options("t", &path, options(Duration::from_secs(10)));
    let request = step(dir.path());
    executor
        .prepare(std::slice::from_ref(&request))
        .await
        .unwrap();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the plugin wrote its pid")
        .trim()
        .parse()
        .unwrap();
    assert!(
        maestro_core::children::Registered::contains(pid),
        "the plugin's process {pid} is not registered"
    );
    executor.finish(request.job_id).await;
    assert!(
        !maestro_core::children::Registered::contains(pid),
        "the plugin's process {pid} is still registered after finish"
    );
}

/// Whether process `pid` is alive: it exists and is not a zombie waiting to be reaped.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// How many times the plugin whose body starts with [`counting_starts`] was started.
fn starts(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .count()
}

/// A line of Python recording each start of the plugin in `file`.
fn counting_starts(file: &Path) -> String {
    format!(
        "open({:?}, 'a').write('started\\n')\n",
        file.display().to_string()
    )
}

/// §3: one hello deadline per job. A plugin that sent no hello to admission's probe is not
/// started again by its `validate` nor by `prepare`: both fail at once with the probe's error.
#[tokio::test]
async fn a_plugin_that_sent_no_hello_is_not_started_again_for_the_same_job() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("starts");
    let path = plugin(
        dir.path(),
        "mute",
        &format!("{}time.sleep(3600)\n", counting_starts(&started)),
    );
    let handshake = Duration::from_secs(1);
    let executor = PluginExecutor::with_options("t", &path, options(handshake));
    let request = step(dir.path());
    let steps = std::slice::from_ref(&request);
    let began = Instant::now();
    assert!(matches!(
        executor.containment(&request).await,
        maestro_core::executor::Containment::None
    ));
    let validated = executor.validate_steps(steps).await;
    let prepared = executor.prepare(steps).await;
    let took = began.elapsed();
    executor.finish(request.job_id).await;
    assert_eq!(starts(&started), 1, "the plugin was started more than once");
    for result in [validated, prepared] {
        assert!(
            matches!(result, Err(ExecutorError::Unavailable { .. })),
            "{result:?}"
        );
        let text = message(result);
        assert!(text.contains("sent no hello within 1000 ms"), "{text}");
    }
    assert!(
        took < 2 * handshake,
        "one hello deadline, not more: {took:?}"
    );

    // Another job is another chance: the failure belongs to the job it happened in.
    let other = step(dir.path());
    let _ = executor.prepare(std::slice::from_ref(&other)).await;
    executor.finish(other.job_id).await;
    assert_eq!(starts(&started), 2);
}

/// A plugin that announces `validate` and never answers it costs one reply deadline: `prepare`
/// fails at once with the same error instead of starting it and asking again.
#[tokio::test]
async fn a_plugin_that_never_answers_validate_is_waited_for_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("starts");
    let body = format!(
        "{}send({{'type': 'hello', 'protocol': 'maestro-executor', 'versions': [1], 'capabilities': ['validate']}})\n\
         sys.stdin.readline()\n\
         for line in sys.stdin:\n    req = json.loads(line)\n    \
         if req['type'] == 'describe':\n        send({{'type': 'described', 'id': req['id'], 'name': 't'}})\n",
        counting_starts(&started)
    );
    let path = plugin(dir.path(), "silent", &body);
    let executor = PluginExecutor::with_options("t", &path, options(Duration::from_secs(10)));
    let request = step(dir.path());
    let steps = std::slice::from_ref(&request);
    let _ = executor.containment(&request).await;
    let began = Instant::now();
    let validated = executor.validate_steps(steps).await;
    let prepared = executor.prepare(steps).await;
    let took = began.elapsed();
    executor.finish(request.job_id).await;
    for result in [validated, prepared] {
        assert!(
            matches!(result, Err(ExecutorError::Unavailable { .. })),
            "{result:?}"
        );
        let text = message(result);
        assert!(
            text.contains("did not answer a validate request within 1000 ms"),
            "{text}"
        );
    }
    // Admission's probe, then its validation; `prepare` starts nothing.
    assert_eq!(starts(&started), 2, "the plugin was started again");
    assert!(
        took < Duration::from_millis(1900),
        "one reply deadline, not two: {took:?}"
    );
}

/// An admission abandoned while it waits for a plugin's hello (`mc submit` cancelled by
/// Ctrl-C drops it) kills the plugin and what it started in its process group at once.
#[tokio::test]
async fn an_abandoned_wait_for_a_hello_kills_the_plugin_and_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let body = format!(
        "import subprocess\n\
         child = subprocess.Popen(['sleep', '3600'])\n\
         open({0:?} + '.tmp', 'w').write('%d %d' % (os.getpid(), child.pid))\n\
         os.rename({0:?} + '.tmp', {0:?})\n\
         time.sleep(3600)\n",
        pids.display().to_string()
    );
    let path = plugin(dir.path(), "slow", &body);
    let executor = PluginExecutor::with_options("t", &path, options(Duration::from_secs(30)));
    let request = step(dir.path());
    let began = Instant::now();
    tokio::select! {
        _ = executor.containment(&request) => panic!("the plugin never says hello"),
        () = async {
            while !pids.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => {}
    }
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for pid in &pids {
        if alive(*pid) {
            // Not left behind by the test either.
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("process {pid} of the abandoned plugin outlived the wait ({pids:?})");
        }
    }
    assert!(began.elapsed() < Duration::from_secs(10));
}
