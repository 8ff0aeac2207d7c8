//! Steps against the real engine when its event stream does not help: a proxy in front of the
//! engine's socket passes every request through but answers `/events` itself, with a stream
//! that never delivers anything, or with an error. Exit codes and output must still be right
//! (from the engine's wait), and no container may be left (the executor removes the previous
//! step's container itself when it never hears that the engine did).

use std::path::{Path, PathBuf};

use maestro_core::executor::Executor;
use maestro_docker::DockerExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

mod support;

use support::TestJob;

/// What the proxy does with a request for the engine's event stream.
#[derive(Clone, Copy)]
enum Events {
    /// Answer 200 and then nothing, for as long as the client keeps the connection.
    Silent,
    /// Answer 500 at once.
    Refused,
}

/// A unix socket that forwards every connection to the engine, except those whose first
/// request asks for `/events`. (A connection the client reuses for a later request is passed
/// through whole; a silent event stream holds its connection, so it is never reused.)
struct Proxy {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Proxy {
    fn start(events: Events) -> Self {
        let engine = engine_socket();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &engine, events).await;
                });
            }
        });
        Self { _dir: dir, socket }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

/// The real engine's socket: `DOCKER_HOST` when it is a unix socket, else the default.
fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

async fn serve(mut client: UnixStream, engine: &Path, events: Events) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let first_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if first_line.contains("/events") {
        match events {
            Events::Silent => {
                client
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await?;
                // Hold the stream open, saying nothing, until the client goes away.
                while client.read(&mut chunk).await? != 0 {}
            }
            Events::Refused => {
                let body = r#"{"message":"the proxy refuses the event stream"}"#;
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                client.write_all(answer.as_bytes()).await?;
            }
        }
        return Ok(());
    }
    let mut upstream = UnixStream::connect(engine).await?;
    upstream.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Run a three-step job through `proxy`: output and exit codes must be right, and nothing may
/// be left once the engine has removed what it removes by itself.
async fn three_steps_through(proxy: &Proxy) {
    let executor = DockerExecutor::with_host(proxy.host());
    let job = TestJob::new();
    let steps = [
        job.step(0, "first", "echo one; echo err >&2"),
        job.step(1, "second", "echo two; exit 3"),
        job.step(2, "third", "echo three"),
    ];
    executor.prepare(&steps).await.unwrap();
    let first = job.run(&executor, &steps[0]).await;
    assert_eq!(first.outcome().exit_code, Some(0), "{:?}", first.result);
    assert_eq!(first.stdout(), ["one"]);
    assert_eq!(first.stderr(), ["err"]);
    let second = job.run(&executor, &steps[1]).await;
    assert_eq!(second.outcome().exit_code, Some(3), "{:?}", second.result);
    assert_eq!(second.stdout(), ["two"]);
    let third = job.run(&executor, &steps[2]).await;
    assert_eq!(third.outcome().exit_code, Some(0), "{:?}", third.result);
    assert_eq!(third.stdout(), ["three"]);
    executor.finish(job.id).await;
    job.assert_containers_go();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_event_stream_leaves_exits_to_the_engines_wait() {
    let proxy = Proxy::start(Events::Silent);
    three_steps_through(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_stream_leaves_exits_to_the_engines_wait() {
    let proxy = Proxy::start(Events::Refused);
    three_steps_through(&proxy).await;
}
