//! The PostgreSQL store against a real PostgreSQL 15: the state-store contract (the same suite
//! the file store runs), and what only a database can promise.

use std::sync::Arc;
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::state::{JobMeta, JobState, StateError, StateStore, Transition};
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
        "SELECT string_agg(version::text, ',') FROM schema_migrations",
    );
    assert_eq!(versions, "1");
}
