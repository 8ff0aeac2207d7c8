//! The ssh plugin against a real OpenSSH server started on a loopback port for each test.
//!
//! Needs Debian's `openssh-server` and `openssh-client` (`apt-get install -y openssh-server
//! openssh-client`); the server runs as the current user with a generated host key and user key.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_core::JobId;
use maestro_core::executor::{
    CommandLine, ContainerSettings, Executor, ExecutorError, StepControl, StepOutput, StepRequest,
    StopReason,
};
use maestro_core::trace::TraceId;
use maestro_plugin_host::PluginExecutor;
use maestro_test_support::{Sshd, cmdlines_holding};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PLUGIN: &str = env!("CARGO_BIN_EXE_mc-executor-ssh");

fn step(name: &str, command: &str, with: Value, workspace: &Path) -> StepRequest {
    let trace_id = TraceId::parse("trace-ssh-e2e").unwrap();
    StepRequest {
        job_id: JobId::now_v7(),
        job_name: "ssh-test".to_owned(),
        trace_id: trace_id.clone(),
        index: 0,
        name: name.to_owned(),
        runtime: "ssh".to_owned(),
        command: CommandLine::Shell(command.to_owned()),
        env: BTreeMap::from([
            ("TRACE_ID".to_owned(), trace_id.to_string()),
            ("GREETING".to_owned(), "it's a \"test\" $HOME".to_owned()),
        ]),
        host_env: Default::default(),
        secrets: Default::default(),
        span_id: maestro_core::trace::SpanId::generate(),
        workspace: workspace.to_path_buf(),
        workdir: Some(workspace.display().to_string()),
        timeout: Duration::from_secs(60),
        container: ContainerSettings::default(),
        reuse_container: false,
        with: Some(with),
        isolation: Default::default(),
        writable_paths: Vec::new(),
        host_access: Vec::new(),
    }
}

fn output(dir: &Path) -> (StepOutput, PathBuf) {
    let path = dir.join("step.log");
    let log = std::fs::File::create(&path).unwrap();
    (StepOutput::new("s", log, "test", None).unwrap(), path)
}

fn control(cancel: &CancellationToken) -> StepControl {
    StepControl::new(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(1),
        cancel.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_plugin_passes_the_conformance_kit_against_a_real_sshd() {
    let sshd = Sshd::start();
    let report = maestro_plugin_test_support::check_with(PLUGIN, sshd.with()).await;
    eprintln!("{}", report.text());
    report.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_runs_remotely_with_env_workdir_and_trace_id() {
    let sshd = Sshd::start();
    let executor = PluginExecutor::new("ssh", Path::new(PLUGIN));
    let work = sshd.path("work");
    std::fs::create_dir(&work).unwrap();
    let request = step(
        "remote",
        "printf '%s|%s|%s\\n' \"$TRACE_ID\" \"$GREETING\" \"$(pwd)\"; exit 3",
        sshd.with(),
        &work,
    );
    executor
        .prepare(std::slice::from_ref(&request))
        .await
        .unwrap();
    let (mut out, log) = output(sshd.dir());
    let cancel = CancellationToken::new();
    let outcome = executor
        .run(&request, &mut out, &control(&cancel))
        .await
        .unwrap();
    out.finish("done").unwrap();
    executor.finish(request.job_id).await;
    assert_eq!(outcome.exit_code, Some(3));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains(&format!(
            "out trace-ssh-e2e|it's a \"test\" $HOME|{}\n",
            work.display()
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_step_kills_the_remote_process() {
    let sshd = Sshd::start();
    let executor = Arc::new(PluginExecutor::new("ssh", Path::new(PLUGIN)));
    let pid_file = sshd.path("remote.pid");
    let request = step(
        "sleepy",
        &format!("echo $$ > {}; exec sleep 300", pid_file.display()),
        sshd.with(),
        sshd.dir(),
    );
    executor
        .prepare(std::slice::from_ref(&request))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let (mut out, _) = output(sshd.dir());
    let runner = {
        let executor = Arc::clone(&executor);
        let request = request.clone();
        let control = control(&cancel);
        tokio::spawn(async move {
            let outcome = executor.run(&request, &mut out, &control).await;
            (outcome, out)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the remote task never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cancel.cancel();
    let (outcome, _) = runner.await.unwrap();
    let outcome = outcome.unwrap();
    assert_eq!(outcome.stopped, Some(StopReason::Cancelled));
    executor.finish(request.job_id).await;
    // The remote command (a process of the sshd side) must be gone within its remote grace.
    let gone_by = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if status.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            Instant::now() < gone_by,
            "remote process {pid} survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_a_spec_error_and_a_dead_host_an_executor_failure() {
    let dir = tempfile::tempdir().unwrap();
    let executor = PluginExecutor::new("ssh", Path::new(PLUGIN));
    let bad = step(
        "bad",
        "true",
        json!({"host": "-oProxyCommand=evil"}),
        dir.path(),
    );
    match executor.prepare(std::slice::from_ref(&bad)).await {
        Err(ExecutorError::InvalidStep { message }) => {
            assert!(message.contains("must not start with '-'"), "{message}");
            assert!(message.contains("ssh"), "{message}");
        }
        other => panic!("expected InvalidStep, got {other:?}"),
    }
    executor.finish(bad.job_id).await;

    // A port nobody listens on: ssh itself fails, which is the executor's fault, not the step's.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = step(
        "dead",
        "true",
        json!({"host": "127.0.0.1", "port": port, "connect_timeout_seconds": 2}),
        dir.path(),
    );
    executor.prepare(std::slice::from_ref(&dead)).await.unwrap();
    let (mut out, _) = output(dir.path());
    let cancel = CancellationToken::new();
    match executor.run(&dead, &mut out, &control(&cancel)).await {
        Err(ExecutorError::StepFailed { message }) => {
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            assert!(message.contains("exit 255"), "{message}");
        }
        other => panic!("expected StepFailed, got {other:?}"),
    }
    executor.finish(dead.job_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_env_values_never_appear_in_any_command_line() {
    let sshd = Sshd::start();
    let executor = PluginExecutor::new("ssh", Path::new(PLUGIN));
    let secret = format!("mc-secret-{}-{}", std::process::id(), JobId::now_v7());
    let seen = sshd.path("seen.txt");
    let mut request = step(
        "secretive",
        // The command names the variable, never its value; it runs long enough to be watched.
        &format!(
            "printf '%s' \"$MC_TEST_SECRET\" > {}; sleep 2",
            seen.display()
        ),
        sshd.with(),
        sshd.dir(),
    );
    request
        .env
        .insert("MC_TEST_SECRET".to_owned(), secret.clone());
    executor
        .prepare(std::slice::from_ref(&request))
        .await
        .unwrap();
    let (mut out, _) = output(sshd.dir());
    let cancel = CancellationToken::new();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Scan every command line (the plugin's ssh client, sshd's session, the remote shells)
    // for as long as the step runs.
    let scanner = {
        let done = Arc::clone(&done);
        let needle = secret.clone().into_bytes();
        std::thread::spawn(move || {
            let mut scans = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let found = cmdlines_holding(&needle);
                if !found.is_empty() {
                    return Err(found);
                }
                scans += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(scans)
        })
    };
    let outcome = executor.run(&request, &mut out, &control(&cancel)).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    executor.finish(request.job_id).await;
    let scans = scanner.join().unwrap().unwrap_or_else(|found| {
        panic!("the secret is in a command line: {found:?}");
    });
    assert_eq!(outcome.unwrap().exit_code, Some(0));
    assert!(scans > 10, "only {scans} scans while the step ran");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), secret);
}
