//! Maestro's server: an HTTP API around the same runner, store and executors as `mc`.
//!
//! # Brief overview
//!
//! * [`serve`] listens (loopback unless TLS or told otherwise), recovers the queue of an earlier run,
//!   and answers `/v1` until its shutdown token fires; then it drains.
//! * [`tokens::TokenStore`] keeps the bearer tokens' hashes, identities and roles
//!   (`mc tokens`).
//! * The API's handlers (`api`) parse, authorise, call [`maestro_core::runner::Runner`] (the
//!   same one `mc submit` uses) and map the outcome to a status; the scheduler queues accepted
//!   jobs durably and runs them with owners taking turns, each owner's first come first served.
//! * [`api::ApiDoc`] is the OpenAPI document, generated from the same types as the routes.
#![deny(missing_docs)]

pub mod api;
mod auth;
pub mod client;
mod error;
mod fair;
mod logs;
mod metrics;
pub mod queue;
mod queue_log;
mod scheduler;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use maestro_core::audit::AuditLog;
use maestro_core::executor::Executor;
use maestro_core::runner::{Runner, Waiting, collect_garbage_of};
use maestro_core::state::StateStore;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use error::ErrorBody;

use crate::error::ApiError;
use crate::queue::{FileQueue, JobQueue};
use crate::scheduler::Scheduler;
use crate::tokens::TokenStore;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Listen on a non-loopback address without TLS anyway.
    pub insecure_listen: bool,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Jobs run at once.
    pub max_concurrent_jobs: usize,
    /// Jobs that may wait for a slot; more are refused with `429`.
    pub queue_limit: usize,
    /// Jobs one owner may have waiting for a slot (`None`: only `queue_limit` bounds them);
    /// more of that owner's are refused with `429`.
    pub queue_limit_per_owner: Option<usize>,
    /// On SIGTERM, how long running jobs get to finish before they are cancelled.
    pub drain_grace: Duration,
    /// How long a cancelled job may take to be recorded (stop grace and a margin).
    pub cancel_wait: Duration,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long a request body may stay silent.
    pub body_timeout: Duration,
    /// How long a job may await approval, from its submission, before it is `DENIED`
    /// (`None`: for ever).
    pub approval_timeout: Option<Duration>,
    /// Clients that may follow logs at once.
    pub max_log_followers: usize,
    /// Open connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// The directory relative workspaces are resolved against (the server's current directory).
    pub invocation_dir: PathBuf,
}

/// A certificate chain and its private key, PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A non-loopback address without TLS and without `--insecure-listen`.
    #[error(
        "refusing to listen on {0} without TLS: it is not a loopback address; give --tls-cert and --tls-key, or --insecure-listen to serve plain HTTP there anyway (behind a TLS-terminating proxy), or listen on 127.0.0.1"
    )]
    NotLoopback(SocketAddr),
    /// The certificate or key cannot be used.
    #[error("cannot use the TLS certificate {} and key {}: {message}", files.cert.display(), files.key.display())]
    Tls {
        /// The files.
        files: TlsFiles,
        /// What is wrong.
        message: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The durable queue could not be read or rewritten at start-up.
    #[error("cannot read or rewrite the queue {what}: {source}")]
    Queue {
        /// Where the queue is.
        what: String,
        /// The cause.
        source: queue::QueueError,
    },
    /// Garbage collection of an earlier run failed.
    #[error("cannot settle the jobs of an earlier run: {0}")]
    Recover(#[from] maestro_core::runner::RunError),
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) runner: Arc<Runner>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) audit: AuditLog,
    pub(crate) tokens: TokenStore,
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) followers: Arc<Semaphore>,
    pub(crate) invocation_dir: PathBuf,
    pub(crate) cancel_wait: Duration,
}

/// Refuse a non-loopback address without TLS unless told otherwise.
pub fn check_listen(
    address: SocketAddr,
    insecure_listen: bool,
    tls: bool,
) -> Result<(), ServerError> {
    if address.ip().is_loopback() || insecure_listen || tls {
        Ok(())
    } else {
        Err(ServerError::NotLoopback(address))
    }
}

async fn refuse_while_draining(
    State(state): State<Arc<AppState>>,
    request: Request<axum::body::Body>,
    next: Next,
) -> Response {
    if state.scheduler.is_draining() && request.uri().path() != "/v1/health" {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down and accepts no requests; retry when it is back",
        )
        .into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; the API is under /v1 and described at /v1/openapi.json",
    )
}

fn router(state: Arc<AppState>, body_timeout: Duration) -> Router {
    Router::new()
        .route("/v1/jobs", post(api::submit_job).get(api::list_jobs))
        .route("/v1/validate", post(api::validate_job))
        .route("/v1/jobs/{id}", get(api::show_job))
        .route("/v1/jobs/{id}/logs", get(api::job_logs))
        .route("/v1/jobs/{id}/cancel", post(api::cancel_job))
        .route("/v1/jobs/{id}/approve", post(api::approve_job))
        .route("/v1/jobs/{id}/reject", post(api::reject_job))
        .route("/v1/health", get(api::health))
        .route("/v1/metrics", get(api::metrics))
        .route("/v1/openapi.json", get(api::openapi))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(maestro_core::spec::MAX_SPEC_BYTES))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            refuse_while_draining,
        ))
        .with_state(state)
}

/// Serve until `shutdown` fires, then drain: stop accepting (`503`), give running jobs
/// `drain_grace`, cancel what still runs, and return once everything is recorded.
///
/// Before listening, the jobs an earlier run of the server accepted are picked up: queued ones
/// are queued again in order, ones awaiting approval wait again, and ones that were running
/// (nobody holds their lease any more) are settled `FAILED` (`abandoned`) by the same garbage
/// collection as `mc gc` (limited to the jobs that may have been in flight), with
/// `gc_executors` removing what they left. `ready` gets the URL
/// of the bound address (useful with port 0).
///
/// `store` is the runner's store; `queue` is where accepted jobs wait (`None`: the queue log in
/// the state root, [`FileQueue`]). With a shared queue the server claims jobs any server
/// accepted, and settles the jobs of servers that died.
#[expect(
    clippy::too_many_arguments,
    reason = "each is one thing the caller chooses"
)]
pub async fn serve(
    config: ServerConfig,
    state_root: PathBuf,
    store: Arc<dyn StateStore>,
    queue: Option<Arc<dyn JobQueue>>,
    runner: Arc<Runner>,
    gc_executors: Vec<Arc<dyn Executor>>,
    shutdown: CancellationToken,
    ready: impl FnOnce(String),
) -> Result<(), ServerError> {
    check_listen(config.listen, config.insecure_listen, config.tls.is_some())?;
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let queue = queue.unwrap_or_else(|| Arc::new(FileQueue::new(&state_root)));
    let audit = store.audit();
    let scheduler = Arc::new(Scheduler::new(
        Arc::clone(&runner),
        Arc::clone(&store),
        queue,
        config.max_concurrent_jobs,
        config.queue_limit,
        config.queue_limit_per_owner,
    ));
    for warning in scheduler.recover(&config.invocation_dir).await {
        tracing::warn!("{warning}");
    }
    // One pass over the store, a record at a time, counts the jobs for `/v1/metrics` and finds
    // those an earlier run may have left in flight: not ended, or still open in the queue log
    // (a job's end is logged only once it has been torn down). Only those go through garbage
    // collection (the queued ones just recovered hold their leases, so it leaves them alone);
    // no other record is read again, nor the audit log when nothing is in flight.
    let metrics = scheduler.metrics();
    match metrics.seed(store.as_ref()) {
        Ok(0) => {}
        Ok(unreadable) => tracing::warn!(unreadable, "jobs that cannot be read are not counted"),
        Err(error) => tracing::warn!(%error, "cannot list the jobs to count them"),
    }
    let mut in_flight = metrics.unended();
    in_flight.extend(scheduler.marked().unwrap_or_default());
    in_flight.sort_unstable();
    in_flight.dedup();
    // The jobs its queue still holds were just taken up (their leases are held): the others
    // that wait for a server are ones it can no longer run, and are settled.
    let report = collect_garbage_of(
        Arc::clone(&store),
        &audit,
        &gc_executors,
        &in_flight,
        Waiting::Settle,
    )
    .await?;
    for job_id in &report.abandoned_jobs {
        metrics.set(*job_id, maestro_core::state::JobState::Failed);
        tracing::warn!(%job_id, "job of an earlier run was abandoned: recorded FAILED");
    }
    for problem in report.unreconciled.iter().chain(&report.errors) {
        tracing::warn!(%problem, "garbage collection at start left a job as found");
    }
    scheduler
        .forget_ended()
        .map_err(|source| ServerError::Queue {
            what: scheduler.describe_queue(),
            source,
        })?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            address: config.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ServerError::Bind {
        address: config.listen,
        source,
    })?;
    let followers = Arc::new(Semaphore::new(config.max_log_followers));
    let state = Arc::new(AppState {
        runner,
        store,
        audit: audit.clone(),
        tokens: TokenStore::new(&state_root),
        scheduler: Arc::clone(&scheduler),
        followers: Arc::clone(&followers),
        invocation_dir: config.invocation_dir.clone(),
        cancel_wait: config.cancel_wait,
    });
    let app = router(state, config.body_timeout);
    let dispatcher = tokio::spawn(Arc::clone(&scheduler).dispatch(config.invocation_dir.clone()));
    tokio::spawn(Arc::clone(&scheduler).settle_dead_servers(audit.clone(), gc_executors));
    if scheduler.is_shared() {
        tokio::spawn(Arc::clone(&scheduler).apply_decisions());
    }
    if let Some(timeout) = config.approval_timeout {
        tokio::spawn(Arc::clone(&scheduler).expire_approvals(timeout));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    ready(format!("{scheme}://{address}"));

    let connections = Arc::new(Semaphore::new(config.max_connections));
    let draining = CancellationToken::new();
    let accept = async {
        loop {
            let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
                return;
            };
            let (stream, _peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(connection(
                stream,
                tls.clone(),
                app.clone(),
                config.header_timeout,
                permit,
            ));
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown.cancelled() => {}
    }
    // Keep answering (503) while draining, so clients learn why; new jobs are refused.
    let answer_while_draining = {
        let draining = draining.clone();
        let app = app.clone();
        let tls = tls.clone();
        let connections = Arc::clone(&connections);
        let header_timeout = config.header_timeout;
        async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                    () = draining.cancelled() => return,
                };
                let permit = Arc::clone(&connections).try_acquire_owned().ok();
                tokio::spawn(connection(
                    stream,
                    tls.clone(),
                    app.clone(),
                    header_timeout,
                    permit,
                ));
            }
        }
    };
    let answering = tokio::spawn(answer_while_draining);
    tracing::warn!("shutting down: refusing new requests, letting running jobs finish");
    scheduler
        .drain(config.drain_grace, config.cancel_wait)
        .await;
    // Every job that ran is recorded now. A client following one gets its last lines and the
    // end (a follow sees the end within a poll) before the connections go: a moment for them,
    // bounded (followers of jobs still queued are cut; the jobs run after the next start).
    let every = u32::try_from(config.max_log_followers).unwrap_or(u32::MAX);
    if tokio::time::timeout(FOLLOWERS_GRACE, followers.acquire_many(every))
        .await
        .is_ok()
    {
        // The last bytes leave through the connections' own tasks.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    draining.cancel();
    let _ = answering.await;
    let _ = dispatcher.await;
    Ok(())
}

/// How long a stopping server waits, once every job is recorded, for its log followers to get
/// the end of the jobs they follow.
const FOLLOWERS_GRACE: Duration = Duration::from_secs(2);

/// Serve one connection (through TLS when configured), holding its slot until it ends.
async fn connection<P: Send + 'static>(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    header_timeout: Duration,
    permit: P,
) {
    let _permit = permit;
    let service = TowerToHyperService::new(app);
    let builder = {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        builder
    };
    let result = match tls {
        None => {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
        Some(acceptor) => {
            // The handshake gets the same time as the headers would.
            match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

mod tls {
    //! The TLS acceptor (rustls with ring) for `--tls-cert`/`--tls-key`.

    use std::sync::Arc;

    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls;

    use super::{ServerError, TlsFiles};

    pub(super) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
        let error = |message: String| ServerError::Tls {
            files: files.clone(),
            message,
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| error(format!("cannot read {}: {e}", path.display())))
        };
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(format!("the certificate is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(error("no certificate in the certificate file".to_owned()));
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| error(format!("the key is not PEM: {e}")))?
            .ok_or_else(|| error("no private key in the key file".to_owned()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| error(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Create `dir` and its missing parents as the owner's alone (0700), as every directory of a
/// state root is: a server's first file may be the first of its state root.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Make a directory's entries durable (after a create or rename in it).
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = api::openapi_json();
        if std::env::var_os("MAESTRO_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the code: regenerate it with `MAESTRO_WRITE_OPENAPI=1 cargo test -p maestro-server openapi`"
        );
    }

    #[test]
    fn only_loopback_addresses_are_served_without_insecure_listen() {
        assert!(check_listen("127.0.0.1:0".parse().unwrap(), false, false).is_ok());
        assert!(check_listen("[::1]:7878".parse().unwrap(), false, false).is_ok());
        let refused = check_listen("0.0.0.0:7878".parse().unwrap(), false, false).unwrap_err();
        assert!(refused.to_string().contains("without TLS"));
        assert!(check_listen("0.0.0.0:7878".parse().unwrap(), true, false).is_ok());
        assert!(check_listen("0.0.0.0:7878".parse().unwrap(), false, true).is_ok());
    }
}
