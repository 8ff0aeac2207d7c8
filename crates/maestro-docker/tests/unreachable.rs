//! An engine that does not answer fails the job before any step, with one clear message.

use std::time::Duration;

use maestro_core::executor::{Executor, ExecutorError};
use maestro_docker::DockerExecutor;

mod support;

#[tokio::test]
async fn a_missing_socket_is_reported_unavailable_naming_the_address() {
    let job = support::TestJob::new();
    let executor = DockerExecutor::with_host("unix:///nonexistent.sock");
    let started = std::time::Instant::now();
    let error = executor
        .prepare(&[job.step(0, "never", "true")])
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    match error {
        ExecutorError::Unavailable { message } => {
            assert!(
                message.starts_with("cannot reach the Docker engine at unix:///nonexistent.sock: "),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    executor.finish(job.id).await;
}

#[tokio::test]
async fn a_refused_tcp_connection_is_reported_unavailable() {
    let job = support::TestJob::new();
    let executor = DockerExecutor::with_host("tcp://127.0.0.1:1");
    let error = executor
        .prepare(&[job.step(0, "never", "true")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExecutorError::Unavailable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("cannot reach the Docker engine at tcp://127.0.0.1:1: "),
        "{message}"
    );
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
    let gc = executor.collect_garbage(&|_| true).await.unwrap_err();
    assert!(matches!(gc, ExecutorError::Unavailable { .. }), "{gc:?}");
    executor.finish(job.id).await;
}
