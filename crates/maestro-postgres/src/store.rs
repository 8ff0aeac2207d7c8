//! [`PgStore`]: the [`StateStore`] over PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use maestro_core::JobId;
use maestro_core::audit::{AuditLog, chain_lines};
use maestro_core::identity::normalize;
use maestro_core::progress::JobFilter;
use maestro_core::state::{
    DescribeCreate, DescribeWrite, HistoryBytes, HistoryDigests, HistoryEntry, JobLease, JobMeta,
    JobPage, JobRecord, JobState, LogReader, LogSink, PageQuery, StateError, StateStore,
    StepRecord, Transition, array_bytes, sha256_hex,
};
use tokio_postgres::types::ToSql;

use crate::PgError;
use crate::audit::{AUDIT_LOCK, PgAudit, insert_lines, last_line};
use crate::db::Db;
use crate::logs::{PgLogReader, PgLogSink};

/// How the store behaves.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long a lease lasts without being renewed: a holder that dies is told dead after at
    /// most this long. Leases are renewed every third of it.
    pub lease_ttl: Duration,
    /// Connections the store opens at most.
    pub max_connections: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(15),
            max_connections: 16,
        }
    }
}

/// The PostgreSQL state store. Cloning it is cheap and shares its connections and leases.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) pool: Pool,
    describe: String,
    /// This process's name in `lease_holder`: host, pid and a random part.
    holder: String,
    ttl: Duration,
    /// The leases this store holds: job → fencing token.
    held: Arc<Mutex<HashMap<JobId, i64>>>,
    /// Leases taken for the server's queue, handed to the first `acquire_lease` of the job.
    claimed: Mutex<HashMap<JobId, JobLease>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.inner.describe)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A failed write, before it becomes a [`StateError`].
enum WriteError {
    NotFound,
    Illegal { from: String, to: JobState },
    Pg(PgError),
}

impl<E: Into<PgError>> From<E> for WriteError {
    fn from(error: E) -> Self {
        Self::Pg(error.into())
    }
}

/// A job's lease held by this store: renewed while it lives, let go when dropped.
struct LeaseGuard {
    inner: Arc<Inner>,
    job_id: JobId,
    token: i64,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        lock(&self.inner.held).remove(&self.job_id);
        let pool = self.inner.pool.clone();
        let (job_id, token) = (self.job_id, self.token);
        let released = self.inner.db.run(async move {
            let client = pool.get().await?;
            client
                .execute(
                    "UPDATE jobs SET lease_expires_at = NULL WHERE job_id = $1 AND lease_token = $2",
                    &[&job_id, &token],
                )
                .await?;
            Ok::<_, PgError>(())
        });
        if let Err(error) = released
            .map_err(|gone| PgError::Thread(gone.to_string()))
            .and_then(|r| r)
        {
            // It expires by itself within the lease's time.
            tracing::warn!(%job_id, %error, "cannot let a job's lease go");
        }
    }
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user[:password]@host[:port]/database`, or
    /// `postgres:///database?host=/run/postgresql` for a Unix socket), apply the migrations it lacks, and start
    /// renewing the leases this store will hold.
    pub fn connect(url: &str, options: PgOptions) -> Result<Self, PgError> {
        let (url, tls) = crate::tls::split_url(url);
        let mut config = tokio_postgres::Config::from_str(&url).map_err(PgError::Url)?;
        let tls = crate::tls::configure(&mut config, &tls)?;
        let describe = describe_config(&config);
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(2))
            .build()
            .map_err(|error| PgError::Thread(error.to_string()))?;
        let db = Db::start().map_err(|error| PgError::Thread(error.to_string()))?;
        let migrating = pool.clone();
        let applied = db
            .run(async move { crate::schema::migrate(&migrating).await })
            .map_err(|gone| PgError::Thread(gone.to_string()))??;
        if !applied.is_empty() {
            tracing::info!(?applied, store = %describe, "schema migrated");
        }
        let holder = format!(
            "{}:{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "host".to_owned()),
            std::process::id(),
            &JobId::new_v4().simple().to_string()[..8]
        );
        let held = Arc::new(Mutex::new(HashMap::new()));
        db.spawn(renew_leases(
            pool.clone(),
            Arc::clone(&held),
            options.lease_ttl,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                pool,
                describe,
                holder,
                ttl: options.lease_ttl,
                held,
                claimed: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Run `future` on the store's thread.
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, PgError> {
        self.inner
            .db
            .run(future)
            .map_err(|gone| PgError::Thread(gone.to_string()))?
    }

    pub(crate) fn backend(
        &self,
        action: &'static str,
        what: String,
    ) -> impl FnOnce(PgError) -> StateError {
        move |error| StateError::Backend {
            action,
            what,
            source: Box::new(error),
        }
    }

    /// A job that is not here; whether `mc prune` removed it is asked of the database (only on
    /// this path). A failure to ask leaves it "not found".
    fn not_found(&self, job_id: JobId) -> StateError {
        let pool = self.pool();
        let pruned = self
            .run(async move {
                let row = pool
                    .get()
                    .await?
                    .query_opt(
                        "SELECT 1 FROM jobs WHERE job_id = $1 AND pruned_at IS NOT NULL",
                        &[&job_id],
                    )
                    .await?;
                Ok::<_, PgError>(row.is_some())
            })
            .unwrap_or(false);
        StateError::NotFound {
            job_id,
            store: self.describe(),
            pruned,
        }
    }

    fn pool(&self) -> Pool {
        self.inner.pool.clone()
    }

    fn ttl_seconds(&self) -> f64 {
        self.inner.ttl.as_secs_f64()
    }

    fn lease(&self, job_id: JobId, token: i64) -> JobLease {
        lock(&self.inner.held).insert(job_id, token);
        JobLease::new(LeaseGuard {
            inner: Arc::clone(&self.inner),
            job_id,
            token,
        })
    }

    /// In one transaction: insert the job (with `create`), then append each history entry (a
    /// transition when its state is given, else a step result), checked and fenced under the
    /// job's row lock; with `describe`, the audit records it makes of the history's digests
    /// after each entry are chained in the same transaction. The new job's fencing token (with
    /// `create`) and the digests after each entry.
    fn write(
        &self,
        job_id: JobId,
        create: Option<NewJob>,
        entries: Vec<RawEntry>,
        describe: Option<&DescribeWrite<'_>>,
    ) -> Result<(Option<i64>, Vec<HistoryDigests>), StateError> {
        let fence = lock(&self.inner.held).get(&job_id).copied();
        let audited = describe.is_some();
        let pool = self.pool();
        let first = self.inner.db.run(async move {
            let mut client = pool.get().await?;
            client.batch_execute("BEGIN").await?;
            let result = async {
                let token = match &create {
                    Some(job) => Some(job.insert(&client, job_id).await?),
                    None => None,
                };
                let fence = token.or(fence);
                let histories = append_entries(&client, job_id, fence, entries).await?;
                // The audit trail's last line, under the audit lock until the commit.
                let last = if audited {
                    client
                        .execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
                        .await?;
                    last_line(&client).await?
                } else {
                    None
                };
                Ok::<_, WriteError>((token, histories, last))
            }
            .await;
            match result {
                Ok((token, histories, last)) => Ok((client, token, histories, last)),
                Err(error) => {
                    rollback(&mut client).await;
                    Err(error)
                }
            }
        });
        let what = || format!("the history of job {job_id} in {}", self.describe());
        let (client, token, histories, last) = match first {
            Err(gone) => {
                return Err(self.backend("record", what())(PgError::Thread(
                    gone.to_string(),
                )));
            }
            Ok(Err(WriteError::NotFound)) => return Err(self.not_found(job_id)),
            Ok(Err(WriteError::Illegal { from, to })) => {
                return Err(StateError::IllegalTransition { job_id, from, to });
            }
            Ok(Err(WriteError::Pg(error))) => return Err(self.backend("record", what())(error)),
            Ok(Ok(done)) => done,
        };
        let digests: Result<Vec<HistoryDigests>, String> =
            histories.iter().map(HistoryBytes::digests).collect();
        let lines: Result<Vec<u8>, StateError> = match (&digests, describe) {
            (Err(message), _) => Err(StateError::Corrupt {
                what: what(),
                message: message.clone(),
            }),
            (Ok(_), None) => Ok(Vec::new()),
            (Ok(digests), Some(describe)) => {
                // The caller's code runs while the transaction is open: should it panic, the
                // connection must not go back to the pool inside the transaction (its row and
                // audit locks would stay held).
                let records = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    describe(digests)
                })) {
                    Ok(records) => records,
                    Err(panic) => {
                        let mut client: Object = client;
                        let _ = self
                            .inner
                            .db
                            .run(async move { rollback(&mut client).await });
                        std::panic::resume_unwind(panic);
                    }
                };
                match records.first() {
                    None => Ok(Vec::new()),
                    Some(first) => {
                        chain_lines(&records, first, last.as_deref(), true).map_err(|error| {
                            self.backend("record", what())(PgError::Corrupt(error.to_string()))
                        })
                    }
                }
            }
        };
        let commit = self.inner.db.run(async move {
            let mut client: Object = client;
            let lines = match lines {
                Ok(lines) => lines,
                Err(error) => {
                    rollback(&mut client).await;
                    return Err(error);
                }
            };
            let result = async {
                insert_lines(&client, &lines).await?;
                client.batch_execute("COMMIT").await?;
                Ok::<_, PgError>(())
            }
            .await;
            if let Err(error) = result {
                rollback(&mut client).await;
                return Err(StateError::Backend {
                    action: "record",
                    what: format!("the history of job {job_id}"),
                    source: Box::new(error),
                });
            }
            Ok(())
        });
        match commit {
            Err(gone) => Err(self.backend("record", what())(PgError::Thread(
                gone.to_string(),
            ))),
            Ok(result) => result.and_then(|()| {
                digests
                    .map(|digests| (token, digests))
                    .map_err(|message| StateError::Corrupt {
                        what: what(),
                        message,
                    })
            }),
        }
    }

    /// The digests after the one entry of a write.
    fn only(
        &self,
        job_id: JobId,
        mut digests: Vec<HistoryDigests>,
    ) -> Result<HistoryDigests, StateError> {
        digests.pop().ok_or_else(|| StateError::Corrupt {
            what: format!("the history of job {job_id} in {}", self.describe()),
            message: "a write of one entry gave no digests".to_owned(),
        })
    }

    /// The entries of `entries` as the database stores them.
    fn entries_of(
        job_id: JobId,
        entries: &[HistoryEntry<'_>],
    ) -> Result<Vec<RawEntry>, StateError> {
        entries
            .iter()
            .map(|entry| match entry {
                HistoryEntry::Transition(transition) => {
                    Ok((Some(transition.state), entry_bytes(job_id, transition)?))
                }
                HistoryEntry::Step(step) => Ok((None, entry_bytes(job_id, step)?)),
            })
            .collect()
    }

    /// A new job's row, and the digests of what it holds that `mc audit verify` checks.
    fn new_job(
        &self,
        meta: &JobMeta,
        spec_bytes: &[u8],
    ) -> Result<(NewJob, BTreeMap<String, String>), StateError> {
        let job_id = meta.job_id;
        let meta_bytes = serde_json::to_vec_pretty(meta).map_err(|error| StateError::Corrupt {
            what: format!("job {job_id}"),
            message: error.to_string(),
        })?;
        let files = BTreeMap::from([
            ("job.json".to_owned(), sha256_hex(&meta_bytes)),
            (meta.spec_file.clone(), sha256_hex(spec_bytes)),
        ]);
        let job = NewJob {
            meta: meta_bytes,
            spec: spec_bytes.to_vec(),
            spec_file: meta.spec_file.clone(),
            owner: meta.owner.clone(),
            environment: meta.environment.clone(),
            owner_key: meta.owner.as_deref().map(normalize),
            environment_key: meta.environment.as_deref().map(normalize),
            submitted_at: meta.submitted_at.clone(),
            holder: self.inner.holder.clone(),
            ttl: self.ttl_seconds(),
        };
        Ok((job, files))
    }

    /// Take a queued job (oldest first) whose lease nobody holds, with `FOR UPDATE SKIP
    /// LOCKED`: servers asking at once get different jobs. The lease is taken in the same
    /// transaction and handed to the next [`StateStore::acquire_lease`] of the job (the
    /// runner's `reload`). `None` when nothing is queued and free.
    pub fn claim_queued(&self) -> Result<Option<JobId>, StateError> {
        self.claim(None)
    }

    /// Take this queued job, as [`claim_queued`](Self::claim_queued) takes the oldest (to
    /// cancel it); `false` when it is not queued and free.
    pub fn claim_queued_job(&self, job_id: JobId) -> Result<bool, StateError> {
        Ok(self.claim(Some(job_id))?.is_some())
    }

    fn claim(&self, only: Option<JobId>) -> Result<Option<JobId>, StateError> {
        let pool = self.pool();
        let holder = self.inner.holder.clone();
        let ttl = self.ttl_seconds();
        let claimed = self
            .run(async move {
                let mut client = pool.get().await?;
                let transaction = client.transaction().await?;
                // Jobs awaiting approval first (they are only held, for an approver), then
                // owners in turn: the one served longest ago (or never), its oldest job.
                let row = transaction
                    .query_opt(
                        "SELECT j.job_id, coalesce(j.owner_key, ''),
                                coalesce(j.state, 'SUBMITTED') = 'SUBMITTED'
                         FROM server_queue q JOIN jobs j USING (job_id)
                         LEFT JOIN owner_turns t ON t.owner_key = coalesce(j.owner_key, '')
                         WHERE j.pruned_at IS NULL
                           AND (j.lease_expires_at IS NULL OR j.lease_expires_at <= now())
                           AND (j.state IS NULL OR j.state IN ('SUBMITTED', 'AWAITING_APPROVAL'))
                           AND ($1::uuid IS NULL OR j.job_id = $1)
                         ORDER BY coalesce(j.state, 'SUBMITTED') = 'AWAITING_APPROVAL' DESC,
                                  coalesce(t.turn, 0), q.job_id
                         LIMIT 1
                         FOR UPDATE OF j SKIP LOCKED",
                        &[&only],
                    )
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let job_id: JobId = row.get(0);
                let (owner_key, runs): (String, bool) = (row.get(1), row.get(2));
                // A claim that takes a job to run it (not to cancel it) is its owner's turn.
                if runs && only.is_none() {
                    transaction
                        .execute(
                            "INSERT INTO owner_turns (owner_key, turn)
                             VALUES ($1, nextval('owner_turn_numbers'))
                             ON CONFLICT (owner_key) DO UPDATE SET turn = EXCLUDED.turn",
                            &[&owner_key],
                        )
                        .await?;
                }
                let token: i64 = transaction
                    .query_one(
                        "UPDATE jobs SET lease_token = lease_token + 1, lease_holder = $2,
                             claimed_by = $2, lease_expires_at = now() + make_interval(secs => $3)
                         WHERE job_id = $1 RETURNING lease_token",
                        &[&job_id, &holder, &ttl],
                    )
                    .await?
                    .get(0);
                transaction.commit().await?;
                Ok(Some((job_id, token)))
            })
            .map_err(self.backend("claim a job of", "the queue".to_owned()))?;
        Ok(claimed.map(|(job_id, token)| {
            let lease = self.lease(job_id, token);
            lock(&self.inner.claimed).insert(job_id, lease);
            job_id
        }))
    }

    /// How many jobs of `owner` (compared as policy compares owners) wait in the servers'
    /// shared queue for a slot (`SUBMITTED`), whichever server accepted them.
    pub fn waiting_of(&self, owner: &str) -> Result<usize, StateError> {
        let pool = self.pool();
        let owner_key = normalize(owner);
        let count = self
            .run(async move {
                let row = pool
                    .get()
                    .await?
                    .query_one(
                        "SELECT count(*) FROM server_queue q JOIN jobs j USING (job_id)
                         WHERE j.owner_key = $1 AND j.pruned_at IS NULL
                           AND coalesce(j.state, 'SUBMITTED') = 'SUBMITTED'",
                        &[&owner_key],
                    )
                    .await?;
                Ok(row.get::<_, i64>(0))
            })
            .map_err(self.backend("count the jobs of an owner in", "the queue".to_owned()))?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Put a job in the servers' shared queue (durable before this returns).
    pub fn queue_job(&self, job_id: JobId) -> Result<(), StateError> {
        self.queue_sql(
            "INSERT INTO server_queue (job_id) VALUES ($1) ON CONFLICT DO NOTHING",
            job_id,
        )
    }

    /// Let go of the lease [`claim_queued`](Self::claim_queued) took for a job that will not
    /// run here after all (the job stays queued for whoever may run it).
    pub fn release_claim(&self, job_id: JobId) {
        lock(&self.inner.claimed).remove(&job_id);
    }

    /// Take a job out of the shared queue (it ended).
    pub fn unqueue_job(&self, job_id: JobId) -> Result<(), StateError> {
        lock(&self.inner.claimed).remove(&job_id);
        self.queue_sql("DELETE FROM server_queue WHERE job_id = $1", job_id)
    }

    fn queue_sql(&self, sql: &'static str, job_id: JobId) -> Result<(), StateError> {
        let pool = self.pool();
        self.run(async move {
            pool.get().await?.execute(sql, &[&job_id]).await?;
            Ok(())
        })
        .map_err(self.backend("write", "the queue".to_owned()))
    }

    /// The jobs in the shared queue, oldest first.
    pub fn queued_jobs(&self) -> Result<Vec<JobId>, StateError> {
        let pool = self.pool();
        self.run(async move {
            let rows = pool
                .get()
                .await?
                .query("SELECT job_id FROM server_queue ORDER BY job_id", &[])
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .map_err(self.backend("read", "the queue".to_owned()))
    }

    /// Whether some job is unfinished, held by nobody and not waiting in the shared queue: its
    /// driver died, and garbage collection has something to settle.
    pub fn has_abandoned(&self) -> Result<bool, StateError> {
        let pool = self.pool();
        self.run(async move {
            let row = pool
                .get()
                .await?
                .query_opt(
                    "SELECT 1 FROM jobs WHERE pruned_at IS NULL
                       AND (state IS NULL OR state IN ('SUBMITTED', 'AWAITING_APPROVAL', 'RUNNING'))
                       AND (lease_expires_at IS NULL OR lease_expires_at <= now())
                       AND NOT (EXISTS (SELECT 1 FROM server_queue q WHERE q.job_id = jobs.job_id)
                           AND (state IS NULL OR state IN ('SUBMITTED', 'AWAITING_APPROVAL')))
                     LIMIT 1",
                    &[],
                )
                .await?;
            Ok(row.is_some())
        })
        .map_err(self.backend("read", "the jobs".to_owned()))
    }

    /// How long a lease outlives its holder.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.ttl
    }
}

/// `postgres://user@host:port/db` without the password, for messages.
fn describe_config(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or_default(),
        config.get_dbname().unwrap_or_default()
    )
}

pub(crate) async fn rollback(client: &mut Object) {
    let _ = client.batch_execute("ROLLBACK").await;
}

/// The JSON entries of one of a job's history tables, in order.
async fn history_entries(
    client: &Object,
    table: &str,
    job_id: JobId,
) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
    Ok(client
        .query(
            &format!("SELECT entry FROM {table} WHERE job_id = $1 ORDER BY seq"),
            &[&job_id],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Inside an open transaction: lock the job's row and check the fence (once), then insert each
/// entry in order, a transition checked against the lifecycle from the state before it; the
/// history after each entry. The job's history is read once, not once per entry.
async fn append_entries(
    client: &Object,
    job_id: JobId,
    fence: Option<i64>,
    entries: Vec<RawEntry>,
) -> Result<Vec<HistoryBytes>, WriteError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let Some(row) = client
        .query_opt(
            "SELECT state, lease_token, coalesce(lease_holder, ''),
                    coalesce(lease_expires_at > now(), false)
             FROM jobs WHERE job_id = $1 AND pruned_at IS NULL FOR UPDATE",
            &[&job_id],
        )
        .await?
    else {
        return Err(WriteError::NotFound);
    };
    let state: Option<String> = row.get(0);
    let token: i64 = row.get(1);
    let holder: String = row.get(2);
    let live: bool = row.get(3);
    match fence {
        Some(mine) if mine != token || !live => {
            return Err(WriteError::Pg(PgError::LeaseLost {
                job_id,
                holder: if live { holder } else { "nobody".to_owned() },
            }));
        }
        None if live => return Err(WriteError::Pg(PgError::HeldElsewhere { job_id, holder })),
        _ => {}
    }
    let mut state = match state.as_deref() {
        None => None,
        Some(name) => Some(
            parse_state(name)
                .ok_or_else(|| PgError::Corrupt(format!("job {job_id} has state {name:?}")))?,
        ),
    };
    let mut transitions = history_entries(client, "transitions", job_id).await?;
    let mut steps = history_entries(client, "step_results", job_id).await?;
    let bytes =
        |entries: &[Vec<u8>]| array_bytes(&entries.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let moved = entries.iter().any(|(to, _)| to.is_some());
    let mut histories = Vec::with_capacity(entries.len());
    for (to, entry) in entries {
        let (table, written) = match to {
            Some(next) => {
                let legal = state.map_or(next.can_start(), |from| from.can_transition_to(next));
                if !legal {
                    return Err(WriteError::Illegal {
                        from: state.map_or_else(|| "none".to_owned(), |s| s.as_str().to_owned()),
                        to: next,
                    });
                }
                state = Some(next);
                ("transitions", &mut transitions)
            }
            None => ("step_results", &mut steps),
        };
        let seq = i32::try_from(written.len() + 1).unwrap_or(i32::MAX);
        client
            .execute(
                &format!("INSERT INTO {table} (job_id, seq, entry) VALUES ($1, $2, $3)"),
                &[&job_id, &seq, &entry],
            )
            .await?;
        written.push(entry);
        histories.push(HistoryBytes {
            state: bytes(&transitions),
            steps: bytes(&steps),
        });
    }
    if let (true, Some(state)) = (moved, state) {
        client
            .execute(
                "UPDATE jobs SET state = $2 WHERE job_id = $1",
                &[&job_id, &state.as_str()],
            )
            .await?;
    }
    Ok(histories)
}

fn parse_state(name: &str) -> Option<JobState> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// Renew every lease this store holds, every third of their time, until the store is gone.
async fn renew_leases(pool: Pool, held: Arc<Mutex<HashMap<JobId, i64>>>, ttl: Duration) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    let seconds = ttl.as_secs_f64();
    loop {
        tokio::time::sleep(period).await;
        if Arc::strong_count(&held) == 1 {
            return;
        }
        let (ids, tokens): (Vec<JobId>, Vec<i64>) =
            lock(&held).iter().map(|(id, t)| (*id, *t)).unzip();
        if ids.is_empty() {
            continue;
        }
        let renewed = async {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $3)
                     FROM unnest($1::uuid[], $2::bigint[]) AS held(job_id, token)
                     WHERE j.job_id = held.job_id AND j.lease_token = held.token
                       AND j.lease_expires_at > now()
                     RETURNING j.job_id",
                    &[&ids, &tokens, &seconds],
                )
                .await?;
            Ok::<Vec<JobId>, PgError>(rows.iter().map(|row| row.get(0)).collect())
        }
        .await;
        match renewed {
            Ok(renewed) => {
                for job_id in ids.iter().filter(|id| !renewed.contains(id)) {
                    // Checked again at every write (the fence), which refuses it.
                    tracing::warn!(%job_id, "lost the lease of a job: it expired or was taken over");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot renew leases"),
        }
    }
}

/// One job's record from its row and its history's entries.
fn record(meta: &[u8], transitions: &[Vec<u8>], steps: &[Vec<u8>]) -> Result<JobRecord, String> {
    let meta: JobMeta = serde_json::from_slice(meta).map_err(|e| format!("job record: {e}"))?;
    let transitions = transitions
        .iter()
        .map(|entry| serde_json::from_slice::<Transition>(entry))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a transition: {e}"))?;
    let steps = steps
        .iter()
        .map(|entry| serde_json::from_slice::<StepRecord>(entry))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a step result: {e}"))?;
    Ok(JobRecord {
        meta,
        transitions,
        steps,
    })
}

const RECORD_COLUMNS: &str = "j.job_id, j.meta,
    (SELECT coalesce(array_agg(entry ORDER BY seq), '{}') FROM transitions t WHERE t.job_id = j.job_id),
    (SELECT coalesce(array_agg(entry ORDER BY seq), '{}') FROM step_results s WHERE s.job_id = j.job_id)";

type Row = (JobId, Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The live jobs older than `$1`: all of them (`job_counts`) less the newer ones.
const COUNT_OLDER: &str = "SELECT (SELECT coalesce(sum(jobs), 0) FROM job_counts)::bigint
    - (SELECT count(*) FROM jobs WHERE job_id >= $1 AND pruned_at IS NULL)";

/// How far before `since` a page reaches by job id. A job's id is drawn before its admission
/// and its `submitted_at` stamped after it, so a job submitted just after `since` may have an id
/// from just before; the jobs of this margin that were submitted before `since` are read and
/// left out by the filter, on the one page that reaches that far.
const SINCE_MARGIN_MS: i64 = 60_000;

/// A listing filter as the SQL of a page applies it.
#[derive(Debug, Clone, Default)]
struct PageFilter {
    /// The states' names, each once (none: any state).
    states: Vec<String>,
    /// The owner, normalized as `owner_key` is.
    owner_key: Option<String>,
    /// The environment, normalized as `environment_key` is.
    environment_key: Option<String>,
    /// The smallest job id the page may hold: the first version 7 id of the millisecond
    /// [`SINCE_MARGIN_MS`] before `since` (ids sort by creation time).
    oldest: Option<JobId>,
}

impl PageFilter {
    fn of(filter: &JobFilter) -> Self {
        let mut states: Vec<String> = filter
            .states
            .iter()
            .map(|state| state.as_str().to_owned())
            .collect();
        states.sort();
        states.dedup();
        Self {
            states,
            owner_key: filter.owner.as_deref().map(normalize),
            environment_key: filter.environment.as_deref().map(normalize),
            oldest: filter.since.map(|since| {
                // A version 7 id holds 48 bits of Unix milliseconds above its 80 others.
                let ms = since
                    .as_millisecond()
                    .saturating_sub(SINCE_MARGIN_MS)
                    .clamp(0, (1 << 48) - 1);
                JobId::from_u128(u128::from(ms.unsigned_abs()) << 80)
            }),
        }
    }
}

/// A query parameter of a page.
type Param = Box<dyn ToSql + Sync + Send>;

/// One batch of a page: the jobs older than the cursor that the filter's indexed conditions
/// let through, newest first, at most `batch`. Only the conditions of the filters given are in
/// the SQL, so the planner sees each as an index condition. Without states it is one walk
/// newest first of the partial index of live jobs that serves the filter (by owner, by
/// environment, or all of them, with `since` as the walk's end); with states, one such walk
/// per state on the index by state (`= ANY` would gather every matching job and sort them),
/// the walks merged by a sort of at most states × batch ids, then the records of the batch.
struct PageSql {
    text: String,
    params: Vec<Param>,
}

impl PageSql {
    fn new(before: Option<JobId>, filter: &PageFilter, batch: i64) -> Self {
        fn bind(params: &mut Vec<Param>, param: Param) -> String {
            params.push(param);
            format!("${}", params.len())
        }
        let mut params = Vec::new();
        let mut conditions = vec!["j.pruned_at IS NULL".to_owned()];
        if let Some(before) = before {
            conditions.push(format!(
                "j.job_id < {}",
                bind(&mut params, Box::new(before))
            ));
        }
        if let Some(owner) = &filter.owner_key {
            let owner = bind(&mut params, Box::new(owner.clone()));
            conditions.push(format!("j.owner_key = {owner}"));
        }
        if let Some(environment) = &filter.environment_key {
            let environment = bind(&mut params, Box::new(environment.clone()));
            conditions.push(format!("j.environment_key = {environment}"));
        }
        if let Some(oldest) = filter.oldest {
            conditions.push(format!(
                "j.job_id >= {}",
                bind(&mut params, Box::new(oldest))
            ));
        }
        let limit = bind(&mut params, Box::new(batch));
        let text = if filter.states.is_empty() {
            format!(
                "SELECT {RECORD_COLUMNS} FROM jobs j
                 WHERE {}
                 ORDER BY j.job_id DESC LIMIT {limit}",
                conditions.join(" AND ")
            )
        } else {
            let states = bind(&mut params, Box::new(filter.states.clone()));
            format!(
                "SELECT {RECORD_COLUMNS}
                 FROM (SELECT walk.job_id
                       FROM unnest({states}::text[]) AS wanted(state)
                       CROSS JOIN LATERAL (
                           SELECT j.job_id FROM jobs j
                           WHERE coalesce(j.state, 'SUBMITTED') = wanted.state AND {}
                           ORDER BY j.job_id DESC LIMIT {limit}
                       ) AS walk
                       ORDER BY walk.job_id DESC LIMIT {limit}) AS batch
                 JOIN jobs j ON j.job_id = batch.job_id
                 ORDER BY j.job_id DESC",
                conditions.join(" AND ")
            )
        };
        Self { text, params }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|param| &**param as &(dyn ToSql + Sync))
            .collect()
    }
}

fn row_of(row: &tokio_postgres::Row) -> Row {
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

impl PgStore {
    /// A job's record and history, as one row; `what` names it in an error.
    fn job_row(&self, job_id: JobId, what: String) -> Result<Row, StateError> {
        let pool = self.pool();
        self.run(async move {
            let row = pool
                .get()
                .await?
                .query_opt(
                    &format!(
                        "SELECT {RECORD_COLUMNS} FROM jobs j WHERE j.job_id = $1 AND j.pruned_at IS NULL"
                    ),
                    &[&job_id],
                )
                .await?;
            Ok(row.as_ref().map(row_of))
        })
        .map_err(self.backend("read", what))?
        .ok_or_else(|| self.not_found(job_id))
    }
}

impl StateStore for PgStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn create_job(&self, meta: &JobMeta, spec_bytes: &[u8]) -> Result<JobLease, StateError> {
        self.create_job_with_history(meta, spec_bytes, &[])
            .map(|(lease, _)| lease)
    }

    fn append_transition(
        &self,
        job_id: JobId,
        transition: &Transition,
    ) -> Result<HistoryDigests, StateError> {
        let digests = self.append_history(job_id, &[HistoryEntry::Transition(transition)])?;
        self.only(job_id, digests)
    }

    fn append_step(&self, job_id: JobId, step: &StepRecord) -> Result<HistoryDigests, StateError> {
        let digests = self.append_history(job_id, &[HistoryEntry::Step(step)])?;
        self.only(job_id, digests)
    }

    fn append_history(
        &self,
        job_id: JobId,
        entries: &[HistoryEntry<'_>],
    ) -> Result<Vec<HistoryDigests>, StateError> {
        let entries = Self::entries_of(job_id, entries)?;
        Ok(self.write(job_id, None, entries, None)?.1)
    }

    fn append_history_audited(
        &self,
        _audit: &AuditLog,
        job_id: JobId,
        entries: &[HistoryEntry<'_>],
        describe: &DescribeWrite<'_>,
    ) -> Result<Vec<HistoryDigests>, StateError> {
        let entries = Self::entries_of(job_id, entries)?;
        Ok(self.write(job_id, None, entries, Some(describe))?.1)
    }

    fn create_job_with_history(
        &self,
        meta: &JobMeta,
        spec_bytes: &[u8],
        entries: &[HistoryEntry<'_>],
    ) -> Result<(JobLease, Vec<HistoryDigests>), StateError> {
        let (job, _) = self.new_job(meta, spec_bytes)?;
        let entries = Self::entries_of(meta.job_id, entries)?;
        let (token, digests) = self.write(meta.job_id, Some(job), entries, None)?;
        Ok((self.lease(meta.job_id, token.unwrap_or_default()), digests))
    }

    fn create_job_audited(
        &self,
        _audit: &AuditLog,
        meta: &JobMeta,
        spec_bytes: &[u8],
        entries: &[HistoryEntry<'_>],
        describe: &DescribeCreate<'_>,
    ) -> Result<(JobLease, Vec<HistoryDigests>), StateError> {
        let (job, files) = self.new_job(meta, spec_bytes)?;
        let entries = Self::entries_of(meta.job_id, entries)?;
        let describe = |digests: &[HistoryDigests]| describe(digests, &files);
        let (token, digests) = self.write(meta.job_id, Some(job), entries, Some(&describe))?;
        Ok((self.lease(meta.job_id, token.unwrap_or_default()), digests))
    }

    fn load(&self, job_id: JobId) -> Result<JobRecord, StateError> {
        let row = self.job_row(job_id, format!("job {job_id}"))?;
        record(&row.1, &row.2, &row.3).map_err(|message| StateError::Corrupt {
            what: format!("job {job_id} in {}", self.describe()),
            message,
        })
    }

    fn spec(&self, job_id: JobId) -> Result<Vec<u8>, StateError> {
        let pool = self.pool();
        self.run(async move {
            let row = pool
                .get()
                .await?
                .query_opt(
                    "SELECT spec FROM jobs WHERE job_id = $1 AND pruned_at IS NULL",
                    &[&job_id],
                )
                .await?;
            Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
        })
        .map_err(self.backend("read", format!("the spec of job {job_id}")))?
        .ok_or_else(|| self.not_found(job_id))
    }

    fn history(&self, job_id: JobId) -> Result<HistoryBytes, StateError> {
        let row = self.job_row(job_id, format!("the history of job {job_id}"))?;
        let bytes = |entries: &[Vec<u8>]| {
            array_bytes(&entries.iter().map(Vec::as_slice).collect::<Vec<_>>())
        };
        Ok(HistoryBytes {
            state: bytes(&row.2),
            steps: bytes(&row.3),
        })
    }

    fn file_digests(&self, job_id: JobId) -> Result<BTreeMap<String, String>, StateError> {
        let pool = self.pool();
        let (meta, spec, spec_file) = self
            .run(async move {
                let row = pool
                    .get()
                    .await?
                    .query_opt(
                        "SELECT meta, spec, spec_file FROM jobs WHERE job_id = $1 AND pruned_at IS NULL",
                        &[&job_id],
                    )
                    .await?;
                Ok(row.map(|row| {
                    (
                        row.get::<_, Vec<u8>>(0),
                        row.get::<_, Vec<u8>>(1),
                        row.get::<_, String>(2),
                    )
                }))
            })
            .map_err(self.backend("read", format!("job {job_id}")))?
            .ok_or_else(|| self.not_found(job_id))?;
        Ok(BTreeMap::from([
            ("job.json".to_owned(), sha256_hex(&meta)),
            (spec_file, sha256_hex(&spec)),
        ]))
    }

    fn list(&self) -> Result<Vec<JobId>, StateError> {
        let pool = self.pool();
        self.run(async move {
            let rows = pool
                .get()
                .await?
                .query(
                    "SELECT job_id FROM jobs WHERE pruned_at IS NULL ORDER BY job_id DESC",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .map_err(self.backend("list", format!("the jobs in {}", self.describe())))
    }

    /// One indexed walk newest first per batch (see `PageSql`), stopped by its `LIMIT`, and
    /// one record per job it returns: a page costs the same at 1 job and at 100,000, with or
    /// without one filter. Every job is checked against the filter again in Rust (an owner
    /// written before schema version 2 was normalized by SQL, and `since` is bounded by the job
    /// id); with several filters one of them walks an index and the others are checked on the
    /// way, so the cost grows with how many jobs the walk passes that fail the others.
    fn list_page(&self, query: &PageQuery) -> Result<JobPage, StateError> {
        let filter = PageFilter::of(&query.filter);
        let batch: i64 = if query.limit == 0 {
            1000
        } else {
            i64::try_from(query.limit + 1).unwrap_or(i64::MAX).max(16)
        };
        let mut page = JobPage::default();
        let mut cursor = query.before;
        loop {
            let pool = self.pool();
            let sql = PageSql::new(cursor, &filter, batch);
            let rows = self
                .run(async move {
                    let rows = pool.get().await?.query(&sql.text, &sql.params()).await?;
                    Ok(rows.iter().map(row_of).collect::<Vec<Row>>())
                })
                .map_err(self.backend("list", format!("the jobs in {}", self.describe())))?;
            let fetched = rows.len();
            for (job_id, meta, transitions, steps) in rows {
                cursor = Some(job_id);
                let record = match record(&meta, &transitions, &steps) {
                    Ok(record) => record,
                    Err(error) => {
                        tracing::debug!(%job_id, %error, "job skipped in the listing");
                        // Only one this page would have shown: past a full page, the next's.
                        if query.limit == 0 || page.jobs.len() < query.limit {
                            page.unreadable.push((job_id, error.to_string()));
                        }
                        continue;
                    }
                };
                if !query.filter.matches(&record) {
                    continue;
                }
                if query.limit != 0 && page.jobs.len() == query.limit {
                    page.next_cursor = page.jobs.last().map(|last| last.meta.job_id);
                    return Ok(page);
                }
                page.jobs.push(record);
            }
            if i64::try_from(fetched).unwrap_or(i64::MAX) < batch {
                return Ok(page);
            }
        }
    }

    /// The live jobs counted by `job_counts` (kept by a trigger), less those at or after
    /// `cursor`, counted on the live-jobs index: the newer side is what the pages before it
    /// showed, so the note under the first pages costs about one page, whatever the store's size.
    fn count_older(&self, cursor: JobId) -> Result<usize, StateError> {
        let pool = self.pool();
        let count = self
            .run(async move {
                let row = pool.get().await?.query_one(COUNT_OLDER, &[&cursor]).await?;
                Ok(row.get::<_, i64>(0))
            })
            .map_err(self.backend("count", format!("the jobs in {}", self.describe())))?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    fn is_live(&self, job_id: JobId) -> Result<bool, StateError> {
        let pool = self.pool();
        self.run(async move {
            let row = pool
                .get()
                .await?
                .query_opt(
                    "SELECT coalesce(lease_expires_at > now(), false) OR (EXISTS (SELECT 1 FROM server_queue q WHERE q.job_id = jobs.job_id)
                           AND (state IS NULL OR state IN ('SUBMITTED', 'AWAITING_APPROVAL'))) FROM jobs
                     WHERE job_id = $1 AND pruned_at IS NULL",
                    &[&job_id],
                )
                .await?;
            Ok(row.map(|row| row.get::<_, bool>(0)))
        })
        .map_err(self.backend("read", format!("the lease of job {job_id}")))?
        .ok_or_else(|| self.not_found(job_id))
    }

    fn try_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError> {
        let pool = self.pool();
        let holder = self.inner.holder.clone();
        let ttl = self.ttl_seconds();
        let taken = self
            .run(async move {
                let client = pool.get().await?;
                let row = client
                    .query_opt(
                        "UPDATE jobs SET lease_token = lease_token + 1, lease_holder = $2,
                             claimed_by = $2, lease_expires_at = now() + make_interval(secs => $3)
                         WHERE job_id = $1 AND pruned_at IS NULL
                           AND (lease_expires_at IS NULL OR lease_expires_at <= now())
                           AND NOT (EXISTS (SELECT 1 FROM server_queue q WHERE q.job_id = jobs.job_id)
                           AND (state IS NULL OR state IN ('SUBMITTED', 'AWAITING_APPROVAL')))
                         RETURNING lease_token",
                        &[&job_id, &holder, &ttl],
                    )
                    .await?;
                if let Some(row) = row {
                    return Ok(Some(Some(row.get::<_, i64>(0))));
                }
                let exists = client
                    .query_opt(
                        "SELECT 1 FROM jobs WHERE job_id = $1 AND pruned_at IS NULL",
                        &[&job_id],
                    )
                    .await?
                    .is_some();
                Ok(exists.then_some(None))
            })
            .map_err(self.backend("take", format!("the lease of job {job_id}")))?
            .ok_or_else(|| self.not_found(job_id))?;
        Ok(taken.map(|token| self.lease(job_id, token)))
    }

    fn acquire_lease(&self, job_id: JobId) -> Result<Option<JobLease>, StateError> {
        if let Some(lease) = lock(&self.inner.claimed).remove(&job_id) {
            return Ok(Some(lease));
        }
        self.try_lease(job_id)
    }

    fn remove_dead_staging(&self) -> Result<Vec<String>, StateError> {
        // A job is stored in one transaction: a submission that died left nothing half-made.
        Ok(Vec::new())
    }

    fn remove_job(&self, job_id: JobId) -> Result<(), StateError> {
        let pool = self.pool();
        let removed = self
            .run(async move {
                let mut client = pool.get().await?;
                let transaction = client.transaction().await?;
                let Some(row) = transaction
                    .query_opt(
                        "SELECT state, coalesce(lease_expires_at > now(), false) FROM jobs
                         WHERE job_id = $1 AND pruned_at IS NULL FOR UPDATE",
                        &[&job_id],
                    )
                    .await?
                else {
                    return Ok(None);
                };
                let state: Option<String> = row.get(0);
                let live: bool = row.get(1);
                let ended = state
                    .as_deref()
                    .and_then(parse_state)
                    .is_some_and(JobState::is_terminal);
                if !ended || live {
                    return Ok(Some(false));
                }
                // History stays (the database refuses to delete it); the job is hidden and its
                // logs, notes and queue entry go.
                for sql in [
                    "UPDATE jobs SET pruned_at = now() WHERE job_id = $1",
                    "DELETE FROM log_chunks WHERE job_id = $1",
                    "DELETE FROM step_logs WHERE job_id = $1",
                    "DELETE FROM notes WHERE job_id = $1",
                    "DELETE FROM server_queue WHERE job_id = $1",
                ] {
                    transaction.execute(sql, &[&job_id]).await?;
                }
                transaction.commit().await?;
                Ok(Some(true))
            })
            .map_err(self.backend("remove", format!("job {job_id}")))?;
        match removed {
            None => Err(self.not_found(job_id)),
            Some(false) => Err(StateError::StillRunning { job_id }),
            Some(true) => Ok(()),
        }
    }

    fn create_step_log(&self, job_id: JobId, step: &str) -> Result<Box<dyn LogSink>, StateError> {
        let pool = self.pool();
        let name = step.to_owned();
        self.run(async move {
            pool.get()
                .await?
                .execute(
                    "INSERT INTO step_logs (job_id, step) VALUES ($1, $2)",
                    &[&job_id, &name],
                )
                .await?;
            Ok(())
        })
        .map_err(self.backend(
            "create",
            format!("the log of step {step:?} of job {job_id}"),
        ))?;
        Ok(Box::new(PgLogSink::new(self.clone(), job_id, step)))
    }

    fn open_step_log(&self, job_id: JobId, step: &str) -> Result<Option<LogReader>, StateError> {
        let pool = self.pool();
        let name = step.to_owned();
        let exists = self
            .run(async move {
                let row = pool
                    .get()
                    .await?
                    .query_opt(
                        "SELECT 1 FROM step_logs WHERE job_id = $1 AND step = $2",
                        &[&job_id, &name],
                    )
                    .await?;
                Ok(row.is_some())
            })
            .map_err(self.backend("open", format!("the log of step {step:?} of job {job_id}")))?;
        Ok(exists.then(|| Box::new(PgLogReader::new(self.clone(), job_id, step)) as LogReader))
    }

    fn append_note(&self, job_id: JobId, name: &str, line: &[u8]) -> Result<(), StateError> {
        let pool = self.pool();
        let (note, bytes) = (name.to_owned(), line.to_vec());
        self.run(async move {
            pool.get()
                .await?
                .execute(
                    "INSERT INTO notes (job_id, name, seq, bytes)
                     SELECT $1, $2, coalesce(max(seq), 0) + 1, $3 FROM notes
                     WHERE job_id = $1 AND name = $2",
                    &[&job_id, &note, &bytes],
                )
                .await?;
            Ok(())
        })
        .map_err(self.backend("write", format!("note {name:?} of job {job_id}")))
    }

    fn read_note(&self, job_id: JobId, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let pool = self.pool();
        let note = name.to_owned();
        self.run(async move {
            let rows = pool
                .get()
                .await?
                .query(
                    "SELECT bytes FROM notes WHERE job_id = $1 AND name = $2 ORDER BY seq",
                    &[&job_id, &note],
                )
                .await?;
            Ok((!rows.is_empty()).then(|| {
                rows.iter()
                    .flat_map(|row| row.get::<_, Vec<u8>>(0))
                    .collect()
            }))
        })
        .map_err(self.backend("read", format!("note {name:?} of job {job_id}")))
    }

    fn audit(&self) -> AuditLog {
        AuditLog::over(Arc::new(PgAudit::new(self.clone())))
    }
}

impl PgStore {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn describe_store(&self) -> String {
        self.inner.describe.clone()
    }
}

/// A history entry as the database stores it: the state it moves to (a transition) or `None`
/// (a step result), and its JSON bytes.
type RawEntry = (Option<JobState>, Vec<u8>);

/// A job's row, inserted by the write that creates it.
struct NewJob {
    meta: Vec<u8>,
    spec: Vec<u8>,
    spec_file: String,
    owner: Option<String>,
    environment: Option<String>,
    /// `owner` and `environment` normalized, as a filter compares them (`identity::normalize`).
    owner_key: Option<String>,
    environment_key: Option<String>,
    submitted_at: String,
    holder: String,
    ttl: f64,
}

impl NewJob {
    /// Insert the row, its lease held by this store; the lease's fencing token.
    async fn insert(&self, client: &Object, job_id: JobId) -> Result<i64, PgError> {
        let row = client
            .query_one(
                "INSERT INTO jobs (job_id, meta, spec, spec_file, owner, environment,
                     owner_key, environment_key, submitted_at, lease_token, lease_holder,
                     claimed_by, lease_expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10,
                     now() + make_interval(secs => $11))
                 RETURNING lease_token",
                &[
                    &job_id,
                    &self.meta,
                    &self.spec,
                    &self.spec_file,
                    &self.owner,
                    &self.environment,
                    &self.owner_key,
                    &self.environment_key,
                    &self.submitted_at,
                    &self.holder,
                    &self.ttl,
                ],
            )
            .await?;
        Ok(row.get::<_, i64>(0))
    }
}

fn entry_bytes(job_id: JobId, entry: &impl serde::Serialize) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(entry).map_err(|error| StateError::Corrupt {
        what: format!("job {job_id}"),
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use maestro_core::JobId;
    use maestro_core::progress::JobFilter;
    use maestro_core::state::JobState;
    use maestro_test_support::postgres::Postgres;

    use super::{PageFilter, PageSql, PgOptions, PgStore};

    #[test]
    fn a_url_the_driver_cannot_read_says_which_part() {
        for (url, says) in [
            (
                "postgres://m@127.0.0.1:1/db?unknownparam=1",
                "unknown option `unknownparam`",
            ),
            (
                "postgres://m@127.0.0.1:1/db?port=abc",
                "invalid value for option `port`",
            ),
        ] {
            let Err(error) = PgStore::connect(url, PgOptions::default()) else {
                panic!("{url}: the URL should be refused");
            };
            assert!(
                matches!(error, super::PgError::Url(_)) && error.to_string().ends_with(says),
                "{url}: {error}"
            );
        }
    }

    /// `EXPLAIN` of one batch of a page.
    fn plan(store: &PgStore, before: Option<JobId>, filter: &JobFilter) -> String {
        let sql = PageSql::new(before, &PageFilter::of(filter), 51);
        let pool = store.pool();
        store
            .run(async move {
                let rows = pool
                    .get()
                    .await?
                    .query(&format!("EXPLAIN {}", sql.text), &sql.params())
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| row.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join("\n"))
            })
            .unwrap()
    }

    /// Each page with one filter (or none) is a walk of an index newest first stopped by its
    /// `LIMIT`: no sequential scan, no bitmap scan of `jobs` (unordered), and no sort but the
    /// merge of the walks of the states (at most states × batch ids).
    #[test]
    fn every_single_filter_page_walks_an_index() {
        let postgres = Postgres::shared();
        let url = postgres.database();
        let store = PgStore::connect(&url, PgOptions::default()).unwrap();
        // 20,000 jobs: most succeeded, a few running; 100 owners, 3 environments.
        postgres.psql_admin(
            Postgres::name_of(&url),
            "INSERT INTO jobs (job_id, meta, spec, spec_file, owner, environment, owner_key,
                               environment_key, submitted_at, state)
             SELECT gen_random_uuid(), '\\x7b7d', '\\x7b7d', 'spec.json', 'o' || n % 100,
                    'e' || n % 3, 'o' || n % 100, 'e' || n % 3, '2026-01-01T00:00:00Z',
                    CASE WHEN n % 500 = 0 THEN 'RUNNING' ELSE 'SUCCEEDED' END
             FROM generate_series(1, 20000) AS n;
             ANALYZE jobs",
        );
        let states = |states: &[JobState]| JobFilter {
            states: states.to_vec(),
            ..JobFilter::default()
        };
        let single = [
            ("none", JobFilter::default()),
            ("a rare state", states(&[JobState::Running])),
            ("a common state", states(&[JobState::Succeeded])),
            (
                "three states",
                states(&[JobState::Running, JobState::Submitted, JobState::Failed]),
            ),
            (
                "an owner",
                JobFilter {
                    owner: Some(" O7 ".to_owned()),
                    ..JobFilter::default()
                },
            ),
            (
                "an environment",
                JobFilter {
                    environment: Some("e1".to_owned()),
                    ..JobFilter::default()
                },
            ),
            (
                "since",
                JobFilter {
                    since: Some("2026-01-01T00:00:00Z".parse().unwrap()),
                    ..JobFilter::default()
                },
            ),
        ];
        let cursor = JobId::from_u128(u128::MAX / 2);
        for (name, filter) in &single {
            for before in [None, Some(cursor)] {
                let plan = plan(&store, before, filter);
                let context = format!("{name}, before {before:?}:\n{plan}");
                assert!(!plan.contains("Seq Scan"), "{context}");
                assert!(!plan.contains("Bitmap Heap Scan on jobs"), "{context}");
                // (Unfiltered, the primary key walked backward costs the same as the index of
                // live jobs while nothing is pruned: the planner may take either.)
                assert!(plan.contains("Index Scan"), "{context}");
                if filter.states.is_empty() {
                    assert!(plan.starts_with("Limit"), "{context}");
                    assert!(!plan.contains("Sort"), "{context}");
                } else {
                    // Each state's walk is an index scan under its own LIMIT.
                    let walk = plan
                        .lines()
                        .position(|line| line.contains("jobs_live_state_newest_first"))
                        .unwrap_or_else(|| panic!("{context}"));
                    let above = plan.lines().nth(walk - 1).unwrap_or_default();
                    assert!(above.trim_start().starts_with("->  Limit"), "{context}");
                }
            }
        }
        // The count under the first page reads the newer side (51 jobs) on an index.
        let first_page: JobId = postgres
            .psql_admin(
                Postgres::name_of(&url),
                "SELECT job_id FROM jobs ORDER BY job_id DESC OFFSET 50 LIMIT 1",
            )
            .parse()
            .unwrap();
        let pool = store.pool();
        let count = store
            .run(async move {
                let rows = pool
                    .get()
                    .await?
                    .query(&format!("EXPLAIN {}", super::COUNT_OLDER), &[&first_page])
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| row.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join("\n"))
            })
            .unwrap();
        assert!(!count.contains("Seq Scan on jobs"), "{count}");
        assert!(count.contains("Index"), "{count}");
        // Every filter at once is valid SQL too.
        let all = JobFilter {
            states: vec![JobState::Running, JobState::Succeeded],
            owner: Some("o7".to_owned()),
            environment: Some("e1".to_owned()),
            since: Some("2026-01-01T00:00:00Z".parse().unwrap()),
        };
        plan(&store, Some(cursor), &all);
    }
}
