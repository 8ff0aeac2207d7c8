//! The PostgreSQL store against a real PostgreSQL 15: the state-store contract (the same suite
//! the file store runs), and what only a database can promise.

use std::sync::Arc;
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::progress::JobFilter;
use maestro_core::state::{JobMeta, JobState, PageQuery, StateError, StateStore, Transition};
use maestro_core::trace::TraceId;
use maestro_postgres::{PgOptions, PgStore};
use maestro_test_support::postgres::{Postgres, STORE_ROLE};

/// A fresh database on the shared server and a store on it.
fn fresh() -> (Arc<Postgres>, PgStore) {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let store = PgStore::connect(&url, PgOptions::default()).expect("connect to the test database");
    (postgres, store)
}

mod contract {
    maestro_core::state_store_contract!(super::fresh());
}

fn meta(job_id: JobId) -> JobMeta {
    JobMeta {
        job_id,
        name: "pg".to_owned(),
        owner: Some("ana".to_owned()),
        environment: None,
        trace_id: TraceId::parse("pg").unwrap(),
        submitted_at: maestro_core::time::now_rfc3339(),
        spec_file: "spec.yaml".to_owned(),
        source: "job.yaml".to_owned(),
        driver: None,
    }
}

fn transition(state: JobState) -> Transition {
    Transition {
        state,
        at: maestro_core::time::now_rfc3339(),
        trace_id: TraceId::parse("pg").unwrap(),
        detail: serde_json::json!({}),
    }
}

/// Two stores (two connections pools, as two processes would have) move the same job from
/// `SUBMITTED` at once, many times: each time exactly one transition is recorded.
#[test]
fn concurrent_illegal_transitions_from_two_connections_one_wins() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let first = PgStore::connect(&url, PgOptions::default()).unwrap();
    let second = PgStore::connect(&url, PgOptions::default()).unwrap();
    for round in 0..20 {
        let job_id = JobId::now_v7();
        drop(first.create_job(&meta(job_id), b"{}").unwrap());
        first
            .append_transition(job_id, &transition(JobState::Submitted))
            .unwrap();
        let barrier = std::sync::Barrier::new(2);
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                barrier.wait();
                first.append_transition(job_id, &transition(JobState::Running))
            });
            let b = scope.spawn(|| {
                barrier.wait();
                second.append_transition(job_id, &transition(JobState::Denied))
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(
            a.is_ok() != b.is_ok(),
            "round {round}: exactly one must win: {a:?} {b:?}"
        );
        let loser = a.err().or(b.err()).unwrap();
        assert!(
            matches!(loser, StateError::IllegalTransition { .. }),
            "{loser}"
        );
        assert_eq!(first.load(job_id).unwrap().transitions.len(), 2);
        assert_eq!(
            second
                .history(job_id)
                .unwrap()
                .digests()
                .unwrap()
                .state
                .entries,
            2
        );
    }
}

/// The store's own role cannot change or remove history, and the trigger refuses it even to
/// the superuser: the database itself keeps history append-only.
#[test]
fn history_update_and_delete_are_refused_by_the_database() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let database = Postgres::name_of(&url).to_owned();
    let store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let job_id = JobId::now_v7();
    drop(store.create_job(&meta(job_id), b"{}").unwrap());
    store
        .append_transition(job_id, &transition(JobState::Submitted))
        .unwrap();
    store
        .append_step(
            job_id,
            &maestro_core::state::StepRecord::skipped("a", "local"),
        )
        .unwrap();
    store
        .audit()
        .append(&maestro_core::audit::AuditRecord::new(
            Some(job_id),
            &TraceId::parse("pg").unwrap(),
            None,
            "test",
            serde_json::json!({}),
        ))
        .unwrap();
    for sql in [
        "UPDATE transitions SET entry = '\\x7b7d'".to_owned(),
        "DELETE FROM transitions".to_owned(),
        "TRUNCATE transitions".to_owned(),
        "UPDATE step_results SET seq = 2".to_owned(),
        "UPDATE audit_log SET line = '\\x7b7d'".to_owned(),
        "DELETE FROM audit_log".to_owned(),
        format!("DELETE FROM jobs WHERE job_id = '{job_id}'"),
    ] {
        let output = postgres.psql(STORE_ROLE, &database, &sql);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("permission denied"),
            "the store's role ran {sql:?}: {stderr}"
        );
        let output = postgres.psql("postgres", &database, &sql);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("append-only"),
            "the superuser ran {sql:?} past the trigger: {stderr}"
        );
    }
    let output = postgres.psql(
        STORE_ROLE,
        &database,
        &format!("UPDATE jobs SET spec = '\\x00' WHERE job_id = '{job_id}'"),
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("written once"),
        "{output:?}"
    );
    assert_eq!(store.load(job_id).unwrap().transitions.len(), 1);
    assert!(store.audit().verify(None, None).unwrap().intact());
}

/// A holder whose lease expired and was taken over can record nothing more for the job (the
/// fencing token), and the new holder can.
#[test]
fn a_lost_lease_fences_its_old_holder() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let short = PgOptions {
        lease_ttl: Duration::from_secs(2),
        ..PgOptions::default()
    };
    let old = PgStore::connect(&url, short.clone()).unwrap();
    let new = PgStore::connect(&url, short).unwrap();
    let job_id = JobId::now_v7();
    let lease = old.create_job(&meta(job_id), b"{}").unwrap();
    old.append_transition(job_id, &transition(JobState::Submitted))
        .unwrap();
    // While it renews its lease, nobody else takes or writes the job.
    std::thread::sleep(Duration::from_secs(3));
    assert!(new.try_lease(job_id).unwrap().is_none());
    let refused = new
        .append_transition(job_id, &transition(JobState::Running))
        .unwrap_err();
    assert!(refused.to_string().contains("holds its lease"), "{refused}");
    // The old holder stops renewing (a paused or partitioned server): expire the lease by hand.
    postgres.psql_admin(
        Postgres::name_of(&url),
        &format!(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE job_id = '{job_id}'"
        ),
    );
    let taken = new.try_lease(job_id).unwrap().expect("the lease expired");
    let fenced = old
        .append_transition(job_id, &transition(JobState::Running))
        .unwrap_err();
    assert!(
        fenced.to_string().contains("no longer holds the lease"),
        "{fenced}"
    );
    new.append_transition(job_id, &transition(JobState::Failed))
        .unwrap();
    drop(lease);
    drop(taken);
    let states: Vec<JobState> = new
        .load(job_id)
        .unwrap()
        .transitions
        .iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, [JobState::Submitted, JobState::Failed]);
}

/// A second store on the same database finds the schema in place and applies nothing twice.
#[test]
fn migrations_run_once() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let stores: Vec<PgStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| PgStore::connect(&url, PgOptions::default()).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(stores.len(), 3);
    let versions = postgres.psql_admin(
        Postgres::name_of(&url),
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
    );
    assert_eq!(versions, "1,2,3");
}

/// A store that finds the schema current opens without waiting for the migration lock (every
/// `mc` opens the store), and one that finds a schema newer than it knows still refuses it.
#[test]
fn a_current_schema_opens_without_the_migration_lock_and_a_newer_one_is_refused() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let name = Postgres::name_of(&url).to_owned();
    drop(PgStore::connect(&url, PgOptions::default()).unwrap());
    // Another session holds the migration lock ("maestro" in ASCII, then 1) while it sleeps.
    let holder = {
        let (postgres, name) = (Arc::clone(&postgres), name.clone());
        std::thread::spawn(move || {
            postgres.psql(
                STORE_ROLE,
                &name,
                "SELECT pg_advisory_lock(7881692369424379649); SELECT pg_sleep(60)",
            )
        })
    };
    // That key in this test's own database (other tests share the server, and the audit
    // chain takes an advisory lock of its own): the high and low halves of the key.
    let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                AND classid = 1835099507 AND objid = 1953656577";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while postgres.psql_admin(&name, held) != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never taken"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (opened, opening) = std::sync::mpsc::channel();
    let connecting = url.clone();
    std::thread::spawn(move || {
        let _ = opened.send(PgStore::connect(&connecting, PgOptions::default()).is_ok());
    });
    let answer = opening.recv_timeout(Duration::from_secs(10));
    postgres.psql_admin(
        &name,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE '%pg_sleep(60)%' \
         AND pid <> pg_backend_pid()",
    );
    let _ = holder.join();
    assert_eq!(answer, Ok(true), "waited for the migration lock, or failed");

    postgres.psql_admin(
        &name,
        "INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')",
    );
    let Err(error) = PgStore::connect(&url, PgOptions::default()) else {
        panic!("a newer schema is refused");
    };
    let error = error.to_string();
    assert!(error.contains("99"), "{error}");
}

/// A job of `owner` in `environment`, moved through `states`, its lease let go.
fn job(store: &PgStore, owner: &str, environment: Option<&str>, states: &[JobState]) -> JobId {
    let job_id = JobId::now_v7();
    let meta = JobMeta {
        owner: Some(owner.to_owned()),
        environment: environment.map(str::to_owned),
        ..meta(job_id)
    };
    drop(store.create_job(&meta, b"{}").unwrap());
    for state in states {
        store
            .append_transition(job_id, &transition(*state))
            .unwrap();
    }
    job_id
}

/// Every page of the listing with `filter`, `limit` jobs a page: the ids, newest first.
fn listed(store: &PgStore, filter: &JobFilter, limit: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_page(&PageQuery {
                before,
                limit,
                filter: filter.clone(),
                max_examined: 0,
            })
            .unwrap();
        assert!(limit == 0 || page.jobs.len() <= limit);
        ids.extend(page.jobs.iter().map(|record| record.meta.job_id));
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => return ids,
        }
    }
}

/// The live jobs the database counts (`job_counts`), and those it holds.
fn counted(postgres: &Postgres, url: &str) -> (String, String) {
    let database = Postgres::name_of(url);
    (
        postgres.psql_admin(database, "SELECT sum(jobs) FROM job_counts"),
        postgres.psql_admin(
            database,
            "SELECT count(*) FROM jobs WHERE pruned_at IS NULL",
        ),
    )
}

/// The count of older jobs follows submissions and prunes (the kept counter less the newer
/// side), and the counter is the number of live rows.
#[test]
fn counts_follow_inserts_and_prunes() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let newest = JobId::from_u128(u128::MAX);
    assert_eq!(store.count_older(newest).unwrap(), 0);
    let ended = [JobState::Submitted, JobState::Running, JobState::Succeeded];
    let ids: Vec<JobId> = (0..40).map(|_| job(&store, "ana", None, &ended)).collect();
    assert_eq!(store.count_older(newest).unwrap(), 40);
    assert_eq!(store.count_older(ids[0]).unwrap(), 0);
    assert_eq!(store.count_older(ids[25]).unwrap(), 25);
    assert_eq!(counted(&postgres, &url), ("40".to_owned(), "40".to_owned()));
    // Prune every third job: the count drops by the pruned jobs on each side of the cursor.
    for job_id in ids.iter().step_by(3) {
        store.remove_job(*job_id).unwrap();
    }
    // A prune refused (a job still running) changes nothing.
    let running = job(
        &store,
        "ana",
        None,
        &[JobState::Submitted, JobState::Running],
    );
    assert!(matches!(
        store.remove_job(running),
        Err(StateError::StillRunning { .. })
    ));
    let live = |before: usize| (0..before).filter(|n| n % 3 != 0).count();
    assert_eq!(store.count_older(newest).unwrap(), live(40) + 1);
    assert_eq!(store.count_older(running).unwrap(), live(40));
    assert_eq!(store.count_older(ids[25]).unwrap(), live(25));
    assert_eq!(store.count_older(ids[26]).unwrap(), live(26));
    assert_eq!(
        counted(&postgres, &url),
        ((live(40) + 1).to_string(), (live(40) + 1).to_string())
    );
    assert_eq!(store.list().unwrap().len(), live(40) + 1);
    // Submissions from several connections at once are all counted.
    let others: Vec<PgStore> = (0..4)
        .map(|_| PgStore::connect(&url, PgOptions::default()).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for other in &others {
            scope.spawn(|| {
                for _ in 0..10 {
                    job(other, "bo", None, &[JobState::Submitted]);
                }
            });
        }
    });
    assert_eq!(store.count_older(newest).unwrap(), live(40) + 41);
    assert_eq!(
        counted(&postgres, &url),
        ((live(40) + 41).to_string(), (live(40) + 41).to_string())
    );
}

/// A job made by a test: its id, owner, environment and state.
type Made<'a> = (JobId, &'a str, Option<&'a str>, JobState);

/// A page filtered by states, by owner, by environment (both compared normalized) or by the
/// time of submission holds exactly the jobs the filter lets through, newest first, across
/// pages, pruned jobs left out.
#[test]
fn pages_filter_by_each_kind() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let ended = [JobState::Submitted, JobState::Running, JobState::Succeeded];
    let failed = [JobState::Submitted, JobState::Running, JobState::Failed];
    // Submitted long ago: a version 7 id and `submitted_at` of 2020.
    let old_id = JobId::from_u128((1_577_836_800_000_u128 << 80) | (0x7 << 76) | (0x2 << 62) | 1);
    drop(
        store
            .create_job(
                &JobMeta {
                    environment: Some("Prod".to_owned()),
                    submitted_at: "2020-01-01T00:00:00Z".to_owned(),
                    ..meta(old_id)
                },
                b"{}",
            )
            .unwrap(),
    );
    store
        .append_transition(old_id, &transition(JobState::Submitted))
        .unwrap();
    let mut all = vec![(old_id, "ana", Some("Prod"), JobState::Submitted)];
    for n in 0..30 {
        let (owner, environment) = match n % 3 {
            0 => ("ana", Some("Prod")),
            1 => ("Bo", Some("staging")),
            _ => ("ana", None),
        };
        let (states, state): (&[JobState], JobState) = match n % 4 {
            0 => (&ended, JobState::Succeeded),
            1 => (&failed, JobState::Failed),
            2 => (&[JobState::Submitted, JobState::Running], JobState::Running),
            _ => (&[], JobState::Submitted),
        };
        all.push((
            job(&store, owner, environment, states),
            owner,
            environment,
            state,
        ));
    }
    // A pruned job matches no filter.
    let pruned = job(&store, "ana", Some("Prod"), &ended);
    store.remove_job(pruned).unwrap();
    all.reverse();
    let expect = |keep: &dyn Fn(&Made<'_>) -> bool| -> Vec<JobId> {
        all.iter()
            .filter(|job| keep(job))
            .map(|job| job.0)
            .collect()
    };
    let check = |filter: JobFilter, wanted: Vec<JobId>| {
        assert!(!wanted.is_empty(), "{filter:?}");
        for limit in [0, 1, 4, 100] {
            assert_eq!(
                listed(&store, &filter, limit),
                wanted,
                "{filter:?}, limit {limit}"
            );
        }
    };
    check(JobFilter::default(), expect(&|_| true));
    let states = |states: &[JobState]| JobFilter {
        states: states.to_vec(),
        ..JobFilter::default()
    };
    check(
        states(&[JobState::Running]),
        expect(&|job| job.3 == JobState::Running),
    );
    // A job without a transition is SUBMITTED; a state given twice counts once.
    check(
        states(&[JobState::Submitted, JobState::Failed, JobState::Submitted]),
        expect(&|job| matches!(job.3, JobState::Submitted | JobState::Failed)),
    );
    check(
        JobFilter {
            owner: Some(" BO ".to_owned()),
            ..JobFilter::default()
        },
        expect(&|job| job.1 == "Bo"),
    );
    check(
        JobFilter {
            environment: Some("prod".to_owned()),
            ..JobFilter::default()
        },
        expect(&|job| job.2 == Some("Prod")),
    );
    let hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    check(
        JobFilter {
            since: Some(hour_ago),
            ..JobFilter::default()
        },
        expect(&|job| job.0 != old_id),
    );
    check(
        JobFilter {
            states: vec![JobState::Succeeded, JobState::Submitted],
            owner: Some("ana".to_owned()),
            environment: Some("PROD".to_owned()),
            since: Some(hour_ago),
        },
        expect(&|job| {
            job.0 != old_id
                && job.1 == "ana"
                && job.2 == Some("Prod")
                && matches!(job.3, JobState::Succeeded | JobState::Submitted)
        }),
    );
    // A filter nothing matches gives an empty page.
    let none = JobFilter {
        owner: Some("nobody".to_owned()),
        ..JobFilter::default()
    };
    assert!(listed(&store, &none, 5).is_empty());
}

/// `since` compares the time of submission, which is stamped after the job id is drawn (the
/// admission runs in between): a job whose id is from just before `since` but submitted after
/// it is listed, and one submitted before it is not.
#[test]
fn since_lists_a_job_whose_id_is_older_than_its_submission() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
    let at = |ms_from_since: i64| {
        let ms = u128::try_from(since.as_millisecond() + ms_from_since).unwrap();
        let job_id = JobId::from_u128((ms << 80) | (0x7 << 76) | (0x2 << 62) | 7);
        let submitted = since + jiff::SignedDuration::from_millis(ms_from_since + 1500);
        drop(
            store
                .create_job(
                    &JobMeta {
                        submitted_at: submitted.to_string(),
                        ..meta(job_id)
                    },
                    b"{}",
                )
                .unwrap(),
        );
        job_id
    };
    // Ids 2 s and 1 s before `since`: submitted 0.5 s before it, and 0.5 s after it.
    let before = at(-2000);
    let after = at(-1000);
    let page = store
        .list_page(&PageQuery {
            filter: JobFilter {
                since: Some(since),
                ..JobFilter::default()
            },
            ..PageQuery::default()
        })
        .unwrap();
    let ids: Vec<JobId> = page.jobs.iter().map(|r| r.meta.job_id).collect();
    assert_eq!(ids, [after]);
    assert_ne!(before, after);
}

/// A database at version 1 with jobs in it (written the old way, without the normalized
/// columns) is migrated to version 2: its live jobs are counted, a pruned one is not, and
/// filters by owner and environment find the old jobs beside new ones.
#[test]
fn a_version_1_database_migrates_with_counts_and_filters_right() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let database = Postgres::name_of(&url).to_owned();
    let run = |sql: &str| {
        let output = postgres.psql(STORE_ROLE, &database, sql);
        assert!(
            output.status.success(),
            "{sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&format!(
        "CREATE TABLE schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         {}
         INSERT INTO schema_migrations (version, name) VALUES (1, 'history');",
        include_str!("../migrations/0001_history.sql")
    ));
    // Two jobs as version 1 wrote them, one of them pruned.
    let old = |job_id: JobId, owner: &str, environment: &str, pruned: bool| {
        let meta = JobMeta {
            owner: Some(owner.to_owned()),
            environment: Some(environment.to_owned()),
            ..meta(job_id)
        };
        let json = serde_json::to_string_pretty(&meta).unwrap();
        let entry = serde_json::to_string(&transition(JobState::Submitted)).unwrap();
        run(&format!(
            "INSERT INTO jobs (job_id, meta, spec, spec_file, owner, environment, submitted_at,
                               state, pruned_at)
             VALUES ('{job_id}', convert_to('{json}', 'UTF8'), '\\x7b7d', 'spec.yaml',
                     '{owner}', '{environment}', '{}', 'SUBMITTED', {});
             INSERT INTO transitions (job_id, seq, entry)
             VALUES ('{job_id}', 1, convert_to('{entry}', 'UTF8'));",
            meta.submitted_at,
            if pruned { "now()" } else { "NULL" }
        ));
    };
    let gone = JobId::now_v7();
    old(gone, "Old", "Prod", true);
    let kept = JobId::now_v7();
    old(kept, " Old ", "PROD ", false);
    let store = PgStore::connect(&url, PgOptions::default()).unwrap();
    assert_eq!(
        postgres.psql_admin(
            &database,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        "1,2,3"
    );
    let newest = JobId::from_u128(u128::MAX);
    assert_eq!(store.count_older(newest).unwrap(), 1);
    assert_eq!(counted(&postgres, &url), ("1".to_owned(), "1".to_owned()));
    let new = job(&store, "old", Some("prod"), &[JobState::Submitted]);
    let other = job(&store, "new", Some("test"), &[JobState::Submitted]);
    assert_eq!(store.count_older(newest).unwrap(), 3);
    assert_eq!(store.count_older(new).unwrap(), 1);
    let owner = JobFilter {
        owner: Some("OLD".to_owned()),
        ..JobFilter::default()
    };
    assert_eq!(listed(&store, &owner, 1), [new, kept]);
    let environment = JobFilter {
        environment: Some("prod".to_owned()),
        ..JobFilter::default()
    };
    assert_eq!(listed(&store, &environment, 0), [new, kept]);
    let submitted = JobFilter {
        states: vec![JobState::Submitted],
        ..JobFilter::default()
    };
    assert_eq!(listed(&store, &submitted, 2), [other, new, kept]);
    // The old job can still be moved on and pruned, and the count follows.
    store
        .append_transition(kept, &transition(JobState::Denied))
        .unwrap();
    store.remove_job(kept).unwrap();
    assert_eq!(store.count_older(newest).unwrap(), 2);
    assert_eq!(listed(&store, &owner, 0), [new]);
}

/// Owners take turns in the shared queue: a claim takes the job of the owner served longest
/// ago (or never), whichever store (server) claims; `waiting_of` counts an owner's waiting jobs
/// across the queue.
#[test]
fn owners_take_turns_in_the_shared_queue_whoever_claims() {
    let postgres = Postgres::shared();
    let url = postgres.database();
    let first = PgStore::connect(&url, PgOptions::default()).unwrap();
    let second = PgStore::connect(&url, PgOptions::default()).unwrap();
    let queued = |owner: &str| {
        let job_id = job(&first, owner, None, &[JobState::Submitted]);
        first.queue_job(job_id).unwrap();
        job_id
    };
    // Ana queues three jobs, then bo one, then ana a fourth, then cy one.
    let a: Vec<JobId> = (0..3).map(|_| queued("ana")).collect();
    let b = queued("bo");
    let a4 = queued("Ana ");
    let c = queued("cy");
    assert_eq!(
        second.waiting_of("ANA").unwrap(),
        4,
        "compared as owners are"
    );
    assert_eq!(second.waiting_of("bo").unwrap(), 1);
    assert_eq!(second.waiting_of("dee").unwrap(), 0);
    // The two stores claim in turn, as two servers would.
    let mut order = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { &first } else { &second };
        let job_id = store.claim_queued().unwrap().expect("a job waits");
        // Running it: it no longer waits.
        store
            .append_transition(job_id, &transition(JobState::Running))
            .unwrap();
        order.push(job_id);
    }
    assert_eq!(first.claim_queued().unwrap(), None);
    // Ana first (nobody was served yet, hers is the oldest), then bo and cy who never had a
    // turn, then ana's others in order.
    assert_eq!(order, [a[0], b, c, a[1], a[2], a4]);
    assert_eq!(first.waiting_of("ana").unwrap(), 0);
}
