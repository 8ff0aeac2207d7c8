//! The SDK's example plugins and the SDK-less Python plugin pass the conformance kit, through
//! `maestro-plugin-test-support` as any plugin crate's tests would.

use std::path::{Path, PathBuf};

use maestro_plugin_sdk::protocol::{ExitReason, Start};
use maestro_plugin_sdk::{Plugin, TaskCommand, TaskError};
use maestro_plugin_test_support as support;

fn example(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; `cargo test` builds examples beside them.
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} was not built: run `cargo test -p maestro-plugin-sdk` (which builds the examples)",
        path.display()
    );
    path
}

async fn assert_conforms(path: &Path) {
    let report = support::check(path).await;
    eprintln!("{}", report.text());
    assert!(report.results.len() >= 29);
    report.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_example_plugin_passes_the_conformance_kit() {
    assert_conforms(&example("mc-executor-process")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_prints_of_a_plugin_never_reach_the_protocol_stream() {
    // It prints (and runs a child that prints) while validating and starting every task.
    support::check(&example("mc-executor-noisy"))
        .await
        .assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_without_the_sdk_passes_the_conformance_kit() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/mc-executor-pyproc");
    assert_conforms(&script).await;
}

/// The example plugin's `Plugin` implementation (examples cannot be imported: it is repeated).
struct Process;

impl Plugin for Process {
    fn command(&self, task: &Start) -> Result<TaskCommand, TaskError> {
        Ok(TaskCommand::local(task))
    }
}

#[tokio::test]
async fn the_example_runs_a_single_task_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut start =
        support::shell("pwd -P; printf 'caf\\351'; sleep 30 >/dev/null 2>&1 & kill -TERM $$");
    start.workspace = Some(dir.path().to_string_lossy().into_owned());
    let run = support::run(Process, start).await;
    let exit = run.exit.clone().expect("an exit event");
    let mut expected = format!("{}\n", dir.path().canonicalize().unwrap().display()).into_bytes();
    expected.extend_from_slice(b"caf\xe9");
    assert_eq!(
        run.output(maestro_plugin_sdk::protocol::Stream::Stdout),
        expected
    );
    assert_eq!((exit.code, exit.signal), (None, Some(15)));
    assert_eq!(exit.reason, ExitReason::Completed);
    assert_eq!(exit.teardown.map(|t| t.verified), Some(true));
}
