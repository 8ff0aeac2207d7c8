//! Maestro's PostgreSQL state store: several `mc serve` instances and many CI machines record
//! into one database, with the file store's guarantees enforced by the database.
//!
//! # Brief overview
//!
//! * [`PgStore`] implements [`maestro_core::state::StateStore`]: jobs and their specs byte for
//!   byte, history append-only (the store's role has no `UPDATE`/`DELETE` on it and a trigger
//!   refuses them anyway), each transition checked under the job's row lock in the transaction
//!   that inserts it, and its audit record chained in that same transaction.
//! * Leases are rows with an expiry and a fencing token: a holder renews them while it lives;
//!   one that lost its lease (expired, taken over) can record nothing more for the job.
//! * The audit trail ([`StateStore::audit`](maestro_core::state::StateStore::audit)) is the same hash chain as the file store's, one
//!   line per row.
//! * [`PgStore::claim_queued`] takes a queued job for one server (`FOR UPDATE SKIP LOCKED`).
//! * A page of the listing walks an index newest first and stops after the page, filtered by
//!   one kind of filter or not, and the count of older jobs is a kept counter less the newer
//!   jobs: both cost the same at 1 job and at 100,000 (schema version 2, `docs/postgres.md`).
//! * Every call runs on the store's own thread and runtime (tokio-postgres), so the synchronous
//!   trait can be called from inside tokio tasks.
#![deny(missing_docs)]

mod audit;
mod db;
mod logs;
mod schema;
mod store;
mod tls;

pub use store::{PgOptions, PgStore};
pub use tls::{TlsError, percent_decode};

/// Why the PostgreSQL store failed (the `source` of the core's errors).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The state URL cannot be used.
    #[error(
        "the state URL cannot be read as a PostgreSQL URL such as postgres://user@host:5432/db: {}",
        describe_url_error(.0)
    )]
    Url(#[source] tokio_postgres::Error),
    /// The database said no, or the connection failed.
    #[error("{}", describe_db_error(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The state URL's TLS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No connection could be had from the pool.
    #[error("cannot connect: {}", describe_pool_error(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The store's thread could not start or is gone.
    #[error("the store's thread: {0}")]
    Thread(String),
    /// The database's schema is newer than this program.
    #[error(
        "the database's schema is at version {found}, newer than this mc knows ({known}): upgrade mc"
    )]
    SchemaTooNew {
        /// The newest version applied.
        found: i32,
        /// The newest version this program knows.
        known: i32,
    },
    /// This process held the job's lease and lost it: it expired, or another holder took it.
    #[error(
        "this process no longer holds the lease of job {job_id} (it expired or {holder} took it over); nothing more is recorded by it"
    )]
    LeaseLost {
        /// The job.
        job_id: maestro_core::JobId,
        /// Who holds it now, as far as the database says.
        holder: String,
    },
    /// Another live process holds the job's lease.
    #[error("job {job_id} is driven by {holder}, which holds its lease")]
    HeldElsewhere {
        /// The job.
        job_id: maestro_core::JobId,
        /// Who holds it.
        holder: String,
    },
    /// Something stored is not what Maestro writes.
    #[error("{0}")]
    Corrupt(String),
}

/// A database error with the server's own message and detail, not just "db error".
/// A connection that could not be made, with what the database or TLS said (the pool's own
/// words, "Error occurred while creating a new object", say nothing a person can act on).
fn describe_pool_error(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(error) => describe_db_error(error),
        other => other.to_string(),
    }
}

fn describe_db_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// What is wrong with a state URL: the driver's reason (`unknown option \`passfile\``), which
/// its error keeps as its source behind a bare "invalid connection string".
fn describe_url_error(error: &tokio_postgres::Error) -> String {
    std::error::Error::source(error).map_or_else(|| error.to_string(), ToString::to_string)
}
