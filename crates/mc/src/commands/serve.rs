//! `mc serve`: the HTTP API around the same runner, store and executors as `mc submit`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::runner::RunnerConfig;
use maestro_core::state::{StateError, StateStore};
use maestro_postgres::PgStore;
use maestro_server::queue::{JobQueue, QueueError};
use maestro_server::{ServerConfig, ServerError, TlsFiles};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, ServeArgs};
use crate::exit::{Code, Failure};
use crate::registry::Lifetime;
use crate::{registry, settings};

pub(crate) fn run(global: &GlobalArgs, args: ServeArgs) -> Result<Code, Failure> {
    let settings = settings::resolve(
        global,
        &settings::Flags {
            default_step_timeout: args.policy.default_step_timeout.clone(),
            max_step_timeout: args.policy.max_step_timeout.clone(),
            allowed_host_access: args.policy.allowed_host_access.clone(),
            stop_grace: args.stop_grace.clone(),
            max_step_output: args.max_step_output.clone(),
        },
    )?;
    let state_root = settings.state_root.clone();
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        Failure::usage(format!(
            "--listen {:?} is not an address and port such as 127.0.0.1:7878",
            args.listen
        ))
    })?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(Failure::usage(
                "--tls-cert and --tls-key go together: give both PEM files, or neither",
            ));
        }
    };
    maestro_server::check_listen(listen, args.insecure_listen, tls.is_some())
        .map_err(Failure::usage)?;
    if args.queue_limit_per_owner == Some(0) {
        return Err(Failure::usage(
            "--queue-limit-per-owner must be at least 1 (leave it out for no cap per owner)",
        ));
    }
    if args.max_concurrent_jobs == 0 {
        return Err(Failure::usage("--max-concurrent-jobs must be at least 1"));
    }
    let stop_grace = settings.stop_grace;
    let seconds = |name: &str, value: f64| {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|duration| !duration.is_zero() && *duration <= Duration::from_secs(86_400))
            .ok_or_else(|| {
                Failure::usage(format!("{name} {value} is not between 0 and 86400 seconds"))
            })
    };
    let config = ServerConfig {
        listen,
        insecure_listen: args.insecure_listen,
        tls,
        max_concurrent_jobs: args.max_concurrent_jobs,
        queue_limit: args.queue_limit,
        queue_limit_per_owner: args.queue_limit_per_owner,
        drain_grace: seconds("--drain-grace", args.drain_grace)?,
        cancel_wait: stop_grace + Duration::from_secs(30),
        header_timeout: seconds("--header-timeout", args.header_timeout)?,
        body_timeout: seconds("--header-timeout", args.header_timeout)?,
        approval_timeout: (args.approval_timeout > 0)
            .then(|| Duration::from_secs(args.approval_timeout)),
        max_log_followers: 64,
        max_connections: 1024,
        invocation_dir: settings::current_dir()?,
    };
    let runner = Arc::new(super::open_runner(
        &state_root,
        RunnerConfig {
            policy: settings.policy,
            stop_grace,
            max_step_output: settings.max_step_output,
        },
        Lifetime::Server,
    ));
    let gc_executors = registry::build(&state_root, Lifetime::Command).builtin_executors();
    let store = super::open_store(&state_root);
    let queue = super::database()
        .map(|database| Arc::new(SharedQueue(database.clone())) as Arc<dyn JobQueue>);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::system(format!("cannot start the async runtime: {error}")))?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone())?;
        maestro_server::serve(
            config,
            state_root,
            store,
            queue,
            runner,
            gc_executors,
            shutdown,
            |url| {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "mc serve: listening on {url}");
                let _ = stdout.flush();
            },
        )
        .await
        .map_err(|error| match error {
            ServerError::NotLoopback(_) | ServerError::Tls { .. } => Failure::usage(error),
            error => Failure::system(error),
        })
    })?;
    Ok(Code::Success)
}

/// SIGTERM and SIGINT start the drain: no new requests, running jobs get the grace period.
fn watch_signals(shutdown: CancellationToken) -> Result<(), Failure> {
    let install = |kind| {
        signal(kind).map_err(|error| Failure::system(format!("cannot watch signals: {error}")))
    };
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        shutdown.cancel();
    });
    Ok(())
}

/// The servers' shared queue in the PostgreSQL store (`--state-url`): every `mc serve` on the
/// database claims jobs from it.
struct SharedQueue(PgStore);

impl JobQueue for SharedQueue {
    fn describe(&self) -> String {
        format!("the server_queue table of {}", self.0.describe())
    }

    fn mark(&self, job_id: JobId) -> Result<(), QueueError> {
        Ok(self.0.queue_job(job_id)?)
    }

    fn unmark(&self, job_id: JobId) {
        if let Err(error) = self.0.unqueue_job(job_id) {
            tracing::warn!(%job_id, %error, "cannot take a job out of the shared queue");
        }
    }

    fn marked(&self) -> Result<Vec<JobId>, QueueError> {
        Ok(self.0.queued_jobs()?)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn claim(&self) -> Result<Option<JobId>, StateError> {
        self.0.claim_queued()
    }

    fn release(&self, job_id: JobId) {
        self.0.release_claim(job_id);
    }

    fn take(&self, job_id: JobId) -> Result<bool, StateError> {
        self.0.claim_queued_job(job_id)
    }

    fn has_abandoned(&self) -> Result<bool, StateError> {
        self.0.has_abandoned()
    }

    fn waiting_of(&self, owner: &str) -> Result<Option<usize>, QueueError> {
        Ok(Some(self.0.waiting_of(owner)?))
    }

    fn settle_every(&self) -> Option<Duration> {
        Some(self.0.lease_ttl())
    }
}
