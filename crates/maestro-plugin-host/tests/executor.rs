//! The plugin executor against misbehaving plugins: every failure ends in time, named, no panic.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use maestro_core::JobId;
use maestro_core::executor::{
    CommandLine, ContainerSettings, Executor, ExecutorError, StepControl, StepOutput, StepRequest,
};
use maestro_core::trace::TraceId;
use maestro_plugin_host::{PluginExecutor, PluginOptions};
use tokio_util::sync::CancellationToken;

fn plugin(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("mc-executor-{name}"));
    std::fs::write(
        &path,
        format!(
            "#!/usr/bin/env python3\nimport json, os, sys, time\n\
             def send(m):\n    sys.stdout.write(json.dumps(m) + '\\n'); sys.stdout.flush()\n{body}"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
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
        workspace: dir.to_path_buf(),
        workdir: None,
        timeout: Duration::from_secs(60),
        container: ContainerSettings::default(),
        reuse_container: false,
        with: None,
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
