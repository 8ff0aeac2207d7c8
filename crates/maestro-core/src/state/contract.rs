//! The behaviour every [`StateStore`] keeps, written once and run against each backend.
//!
//! A backend's tests call [`state_store_contract!`](crate::state_store_contract) with an
//! expression making a fresh, empty store (and whatever must live as long as it, such as a
//! temporary directory): one `#[test]` per rule below is generated. The functions are public so
//! that a backend crate (with the `store-contract` feature) runs exactly the same suite.

use std::io::{Read, Write};

use super::{
    HistoryEntry, JobMeta, JobState, PageQuery, StateError, StateStore, StepRecord, Transition,
};
use crate::JobId;
use crate::audit::AuditRecord;
use crate::progress::JobFilter;
use crate::trace::TraceId;

/// Generates one `#[test]` per contract rule, each on a store made by `$fresh`, an expression
/// returning `(guard, store)`: the guard is kept alive for the test's length.
#[macro_export]
macro_rules! state_store_contract {
    ($fresh:expr) => {
        $crate::state_store_contract!(@tests $fresh;
            jobs_are_stored_verbatim,
            transitions_follow_the_lifecycle,
            illegal_transitions_write_nothing,
            steps_append_in_order,
            unknown_jobs_are_not_found,
            listing_is_newest_first_and_paged,
            pages_filter_by_state,
            leases_have_one_holder,
            only_ended_jobs_are_removed,
            step_logs_are_readable_while_written,
            notes_append_and_read_back,
            digests_describe_the_history,
            grouped_entries_append_in_order,
            audit_trail_is_chained,
            concurrent_transitions_one_wins,
        );
    };
    (@tests $fresh:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                let (_guard, store) = $fresh;
                $crate::state::contract::$name(&store);
            }
        )*
    };
}

fn meta(job_id: JobId, owner: &str) -> JobMeta {
    JobMeta {
        job_id,
        name: "contract".to_owned(),
        owner: Some(owner.to_owned()),
        environment: None,
        trace_id: TraceId::parse("contract").expect("a valid trace id"),
        submitted_at: crate::time::now_rfc3339(),
        spec_file: "spec.yaml".to_owned(),
        source: "job.yaml".to_owned(),
        driver: None,
    }
}

fn transition(state: JobState) -> Transition {
    Transition {
        state,
        at: crate::time::now_rfc3339(),
        trace_id: TraceId::parse("contract").expect("a valid trace id"),
        detail: serde_json::json!({ "by": "contract" }),
    }
}

/// A stored job in `states` (in order), its lease let go.
fn job_in(store: &dyn StateStore, states: &[JobState]) -> JobId {
    let job_id = JobId::now_v7();
    drop(
        store
            .create_job(&meta(job_id, "ana"), b"{}")
            .expect("create"),
    );
    for state in states {
        store
            .append_transition(job_id, &transition(*state))
            .expect("a legal transition");
    }
    job_id
}

/// The spec and metadata come back exactly as stored; a new job has no history.
pub fn jobs_are_stored_verbatim(store: &dyn StateStore) {
    let job_id = JobId::now_v7();
    let spec = b"name: j  # a comment kept as is\r\nsteps: []\n";
    let _lease = store.create_job(&meta(job_id, "ana"), spec).unwrap();
    assert_eq!(store.spec(job_id).unwrap(), spec);
    let record = store.load(job_id).unwrap();
    assert_eq!(record.meta, meta_like(&record.meta, job_id));
    assert!(record.transitions.is_empty() && record.steps.is_empty());
    assert_eq!(record.state(), JobState::Submitted);
    let digests = store.file_digests(job_id).unwrap();
    assert_eq!(
        digests.get("spec.yaml").map(String::as_str),
        Some(super::sha256_hex(spec).as_str())
    );
}

fn meta_like(stored: &JobMeta, job_id: JobId) -> JobMeta {
    JobMeta {
        submitted_at: stored.submitted_at.clone(),
        ..meta(job_id, "ana")
    }
}

/// Legal transitions are recorded in order.
pub fn transitions_follow_the_lifecycle(store: &dyn StateStore) {
    let job_id = job_in(
        store,
        &[JobState::Submitted, JobState::Running, JobState::Succeeded],
    );
    let record = store.load(job_id).unwrap();
    let states: Vec<JobState> = record.transitions.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [JobState::Submitted, JobState::Running, JobState::Succeeded]
    );
    assert_eq!(record.transitions[1].detail["by"], "contract");
}

/// An illegal transition is refused and nothing of the history changes.
pub fn illegal_transitions_write_nothing(store: &dyn StateStore) {
    let job_id = job_in(store, &[]);
    let error = store
        .append_transition(job_id, &transition(JobState::Running))
        .unwrap_err();
    assert!(error.to_string().contains("none -> RUNNING"), "{error}");
    store
        .append_transition(job_id, &transition(JobState::Submitted))
        .unwrap();
    store
        .append_transition(job_id, &transition(JobState::Denied))
        .unwrap();
    let before = store.history(job_id).unwrap();
    for next in [JobState::Running, JobState::Submitted, JobState::Denied] {
        let error = store
            .append_transition(job_id, &transition(next))
            .unwrap_err();
        assert!(
            matches!(error, StateError::IllegalTransition { .. }),
            "{error}"
        );
    }
    let after = store.history(job_id).unwrap();
    assert_eq!((after.state, after.steps), (before.state, before.steps));
}

/// Step results are kept in the order they were appended.
pub fn steps_append_in_order(store: &dyn StateStore) {
    let job_id = job_in(store, &[JobState::Submitted, JobState::Running]);
    for name in ["a", "b", "c"] {
        store
            .append_step(job_id, &StepRecord::skipped(name, "local"))
            .unwrap();
    }
    let names: Vec<String> = store
        .load(job_id)
        .unwrap()
        .steps
        .into_iter()
        .map(|step| step.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

/// Every operation on an unknown id says it is not found.
pub fn unknown_jobs_are_not_found(store: &dyn StateStore) {
    let missing = JobId::now_v7();
    let not_found = |result: Result<(), StateError>| {
        assert!(
            matches!(result, Err(StateError::NotFound { .. })),
            "{result:?}"
        );
    };
    not_found(store.load(missing).map(drop));
    not_found(store.spec(missing).map(drop));
    not_found(store.history(missing).map(drop));
    not_found(
        store
            .append_transition(missing, &transition(JobState::Submitted))
            .map(drop),
    );
    not_found(
        store
            .append_step(missing, &StepRecord::skipped("a", "local"))
            .map(drop),
    );
    assert!(store.list().unwrap().is_empty());
}

/// `list` is newest first; pages follow each other through their cursor without a gap or a
/// repeat, and the last page has no cursor.
pub fn listing_is_newest_first_and_paged(store: &dyn StateStore) {
    let ids: Vec<JobId> = (0..7).map(|_| job_in(store, &[])).collect();
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();
    assert_eq!(store.list().unwrap(), newest_first);
    assert_eq!(store.count_older(ids[3]).unwrap(), 3);
    assert_eq!(store.count_older(ids[0]).unwrap(), 0);
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_page(&PageQuery {
                before,
                limit: 3,
                filter: JobFilter::default(),
                max_examined: 0,
            })
            .unwrap();
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.iter().map(|record| record.meta.job_id));
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    let all = store.list_page(&PageQuery::default()).unwrap();
    assert_eq!(all.jobs.len(), 7);
    assert_eq!(all.next_cursor, None);
}

/// A page holds only the jobs in the states asked for.
pub fn pages_filter_by_state(store: &dyn StateStore) {
    let running = job_in(store, &[JobState::Submitted, JobState::Running]);
    let _denied = job_in(store, &[JobState::Submitted, JobState::Denied]);
    let running_too = job_in(store, &[JobState::Submitted, JobState::Running]);
    let page = store
        .list_page(&PageQuery {
            before: None,
            limit: 1,
            filter: JobFilter {
                states: vec![JobState::Running],
                ..JobFilter::default()
            },
            max_examined: 0,
        })
        .unwrap();
    let ids: Vec<JobId> = page.jobs.iter().map(|r| r.meta.job_id).collect();
    assert_eq!(ids, [running_too]);
    let next = store
        .list_page(&PageQuery {
            before: page.next_cursor,
            limit: 1,
            filter: JobFilter {
                states: vec![JobState::Running],
                ..JobFilter::default()
            },
            max_examined: 0,
        })
        .unwrap();
    let ids: Vec<JobId> = next.jobs.iter().map(|r| r.meta.job_id).collect();
    assert_eq!(ids, [running]);
    // Looking at one job per page at most: pages may come short (a backend that reads jobs to
    // filter them) or full (one that filters by index), and following the cursors gives the
    // same jobs, none twice, none missed.
    let mut query = PageQuery {
        before: None,
        limit: 2,
        filter: JobFilter {
            states: vec![JobState::Running],
            ..JobFilter::default()
        },
        max_examined: 1,
    };
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = store.list_page(&query).unwrap();
        seen.extend(page.jobs.iter().map(|r| r.meta.job_id));
        match page.next_cursor {
            Some(cursor) => query.before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, [running_too, running]);
}

/// A job's lease has one holder at a time; letting it go makes the job abandoned if it has not
/// ended.
pub fn leases_have_one_holder(store: &dyn StateStore) {
    let job_id = JobId::now_v7();
    let lease = store.create_job(&meta(job_id, "ana"), b"{}").unwrap();
    store
        .append_transition(job_id, &transition(JobState::Submitted))
        .unwrap();
    assert!(store.is_live(job_id).unwrap());
    assert!(store.try_lease(job_id).unwrap().is_none());
    let record = store.load(job_id).unwrap();
    assert!(!store.is_abandoned(&record).unwrap());
    drop(lease);
    assert!(!store.is_live(job_id).unwrap());
    assert!(store.is_abandoned(&record).unwrap());
    let again = store.try_lease(job_id).unwrap().expect("nobody holds it");
    assert!(store.is_live(job_id).unwrap());
    assert!(store.try_lease(job_id).unwrap().is_none());
    drop(again);
    assert!(!store.is_live(job_id).unwrap());
}

/// Only a job that has ended and that nobody holds is removed; then it is gone everywhere.
pub fn only_ended_jobs_are_removed(store: &dyn StateStore) {
    let job_id = JobId::now_v7();
    let lease = store.create_job(&meta(job_id, "ana"), b"{}").unwrap();
    store
        .append_transition(job_id, &transition(JobState::Submitted))
        .unwrap();
    assert!(matches!(
        store.remove_job(job_id),
        Err(StateError::StillRunning { .. })
    ));
    store
        .append_transition(job_id, &transition(JobState::Denied))
        .unwrap();
    assert!(matches!(
        store.remove_job(job_id),
        Err(StateError::StillRunning { .. })
    ));
    drop(lease);
    store.remove_job(job_id).unwrap();
    // Gone, and said to be pruned (not never there).
    assert!(matches!(
        store.load(job_id),
        Err(StateError::NotFound { pruned: true, .. })
    ));
    assert!(matches!(
        store.remove_job(job_id),
        Err(StateError::NotFound { pruned: true, .. })
    ));
    assert!(!store.list().unwrap().contains(&job_id));
    assert!(matches!(
        store.load(JobId::now_v7()),
        Err(StateError::NotFound { pruned: false, .. })
    ));
}

/// A step log is read while it is written: a reader at its end gets what is written later.
pub fn step_logs_are_readable_while_written(store: &dyn StateStore) {
    let job_id = job_in(store, &[JobState::Submitted, JobState::Running]);
    assert!(store.open_step_log(job_id, "build").unwrap().is_none());
    let mut sink = store.create_step_log(job_id, "build").unwrap();
    assert!(
        store.create_step_log(job_id, "build").is_err(),
        "a step's log is created once"
    );
    sink.write_all(b"one\n").unwrap();
    sink.flush().unwrap();
    let mut reader = store.open_step_log(job_id, "build").unwrap().unwrap();
    let mut read = Vec::new();
    reader.read_to_end(&mut read).unwrap();
    assert_eq!(read, b"one\n");
    sink.write_all(b"two\n").unwrap();
    sink.sync().unwrap();
    reader.read_to_end(&mut read).unwrap();
    assert_eq!(read, b"one\ntwo\n");
}

/// Notes are appended to and read back whole.
pub fn notes_append_and_read_back(store: &dyn StateStore) {
    let job_id = job_in(store, &[]);
    assert_eq!(store.read_note(job_id, "journal").unwrap(), None);
    store.append_note(job_id, "journal", b"a\n").unwrap();
    store.append_note(job_id, "journal", b"b\n").unwrap();
    assert_eq!(
        store.read_note(job_id, "journal").unwrap().as_deref(),
        Some(&b"a\nb\n"[..])
    );
}

/// The digests returned by a write are those of the history as read back.
pub fn digests_describe_the_history(store: &dyn StateStore) {
    let job_id = job_in(store, &[JobState::Submitted]);
    let after_transition = store
        .append_transition(job_id, &transition(JobState::Running))
        .unwrap();
    assert_eq!(after_transition.state.entries, 2);
    assert_eq!(after_transition.steps.entries, 0);
    let after_step = store
        .append_step(job_id, &StepRecord::skipped("a", "local"))
        .unwrap();
    assert_eq!(after_step.steps.entries, 1);
    assert_eq!(
        store.history(job_id).unwrap().digests().unwrap(),
        after_step
    );
}

/// Entries due at once (a job with its first transition; a step's result with the final
/// state) are stored in order, with the digests after each.
pub fn grouped_entries_append_in_order(store: &dyn StateStore) {
    let job_id = JobId::now_v7();
    let submitted = transition(JobState::Submitted);
    let (lease, digests) = store
        .create_job_with_history(
            &meta(job_id, "ana"),
            b"{}",
            &[HistoryEntry::Transition(&submitted)],
        )
        .expect("create");
    drop(lease);
    assert_eq!(digests.len(), 1);
    assert_eq!(store.load(job_id).unwrap().state(), JobState::Submitted);
    let running = transition(JobState::Running);
    let step = StepRecord::skipped("a", "local");
    let succeeded = transition(JobState::Succeeded);
    let digests = store
        .append_history(
            job_id,
            &[
                HistoryEntry::Transition(&running),
                HistoryEntry::Step(&step),
                HistoryEntry::Transition(&succeeded),
            ],
        )
        .unwrap();
    let counts: Vec<(usize, usize)> = digests
        .iter()
        .map(|digest| (digest.state.entries, digest.steps.entries))
        .collect();
    assert_eq!(counts, [(2, 0), (2, 1), (3, 1)]);
    assert_eq!(
        store.history(job_id).unwrap().digests().unwrap(),
        digests[2]
    );
    let record = store.load(job_id).unwrap();
    assert_eq!(record.state(), JobState::Succeeded);
    assert_eq!(record.steps, [step]);
}

/// The store's audit trail chains its records, and checks each job's history against them.
pub fn audit_trail_is_chained(store: &dyn StateStore) {
    let audit = store.audit();
    let job_id = job_in(store, &[]);
    let history = store
        .append_transition(job_id, &transition(JobState::Submitted))
        .unwrap();
    let trace = TraceId::parse("contract").unwrap();
    audit
        .append(&AuditRecord::new(
            Some(job_id),
            &trace,
            Some("ana"),
            "job.transition",
            serde_json::json!({ "to": "SUBMITTED", "history": history }),
        ))
        .unwrap();
    audit
        .append_all(&[
            AuditRecord::new(Some(job_id), &trace, None, "a", serde_json::json!({})),
            AuditRecord::new(Some(job_id), &trace, None, "b", serde_json::json!({})),
        ])
        .unwrap();
    let records = audit.read_all().unwrap();
    let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(
        events,
        [crate::audit::GENESIS_EVENT, "job.transition", "a", "b"]
    );
    let seqs: Vec<Option<u64>> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [Some(0), Some(1), Some(2), Some(3)]);
    let verification = audit.verify(None, Some(store)).unwrap();
    assert!(verification.intact(), "{verification:?}");
}

/// Two writers moving the same job from one state at once: exactly one succeeds.
pub fn concurrent_transitions_one_wins(store: &dyn StateStore) {
    for _ in 0..5 {
        let job_id = job_in(store, &[JobState::Submitted]);
        let results: Vec<Result<(), StateError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = [JobState::Running, JobState::Denied, JobState::Running]
                .into_iter()
                .map(|next| {
                    scope
                        .spawn(move || store.append_transition(job_id, &transition(next)).map(drop))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("no panic"))
                .collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert_eq!(store.load(job_id).unwrap().transitions.len(), 2);
    }
}
