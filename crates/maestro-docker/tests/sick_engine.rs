//! A fake engine on a unix socket that answers `/_ping` and then fails or never answers: the API
//! version agreed, and how long `finish` may be held by an engine that stopped answering.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use maestro_core::executor::Executor;
use maestro_docker::DockerExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

mod support;

/// What the fake engine does with anything but a ping.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answer 500 at once.
    Fail,
    /// Keep the connection open and never answer.
    Hang,
}

/// A fake engine reporting `api_version` in its pings; it records every request line.
struct FakeEngine {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeEngine {
    fn start(api_version: &str, behaviour: Behaviour) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let version = api_version.to_owned();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                let version = version.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let line = text.lines().next().unwrap_or_default().to_owned();
                    seen.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line.clone());
                    if line.contains("/_ping") {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nApi-Version: {version}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        return;
                    }
                    match behaviour {
                        Behaviour::Fail => {
                            let body = r#"{"message":"the fake engine refuses"}"#;
                            let answer = format!(
                                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = stream.write_all(answer.as_bytes()).await;
                        }
                        Behaviour::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            drop(stream);
                        }
                    }
                });
            }
        });
        Self {
            _dir: dir,
            socket,
            requests,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Wait until a request whose line contains `path` arrived, and return its request line.
    async fn call_to(&self, path: &str) -> String {
        for _ in 0..500 {
            if let Some(line) = self.requests().into_iter().find(|line| line.contains(path)) {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the executor made no call to {path}; requests: {:?}",
            self.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_version_is_the_lower_of_the_engines_and_bollards() {
    let newest = bollard::API_DEFAULT_VERSION.to_string();
    for (engine, expected) in [
        ("1.41", "1.41".to_owned()),
        ("1.44", "1.44".to_owned()),
        ("1.52", "1.52".to_owned()),
        ("1.99", newest.clone()),
    ] {
        let fake = FakeEngine::start(engine, Behaviour::Fail);
        let job = support::TestJob::new();
        let executor = DockerExecutor::with_host(fake.host());
        executor
            .prepare(&[job.step(0, "first", "true")])
            .await
            .unwrap();
        let call = fake.call_to("/containers/create").await;
        assert!(
            call.starts_with(&format!("POST /v{expected}/containers/create")),
            "engine {engine}: {call}"
        );
        let events = fake.call_to("/events").await;
        assert!(
            events.starts_with(&format!("GET /v{expected}/events")),
            "engine {engine}: {events}"
        );
        executor.finish(job.id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_stops_answering_holds_finish_for_a_bounded_time() {
    let fake = FakeEngine::start("1.41", Behaviour::Hang);
    let job = support::TestJob::new();
    let executor = DockerExecutor::with_host(fake.host());
    executor
        .prepare(&[job.step(0, "first", "true"), job.step(1, "second", "true")])
        .await
        .unwrap();
    // The container of the first step is being created (the engine never answers) when the
    // job ends: the creation is abandoned, and the look for leftovers hangs as well.
    fake.call_to("/containers/create").await;
    let started = std::time::Instant::now();
    executor.finish(job.id).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(25), "finish took {took:?}");
    let lists = fake
        .requests()
        .into_iter()
        .filter(|line| line.contains("/containers/json"))
        .count();
    assert!(
        lists >= 1,
        "the abandoned creation was followed by a look for the job's containers: {:?}",
        fake.requests()
    );
}
