//! The PostgreSQL store through the real `mc`: every command with `--state-url` /
//! `MAESTRO_STATE_URL` against a real PostgreSQL 15 (started as `nobody` by the fixture), and
//! several `mc serve` sharing one database's queue.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_test_support::postgres::Postgres;
use serde_json::Value;

use crate::util::{Env, job_id, job_yaml, output_within, parse_json, text};

/// A workspace whose `mc` records into a fresh database.
struct PgEnv {
    env: Env,
    url: String,
    postgres: Arc<Postgres>,
}

impl PgEnv {
    fn new() -> Self {
        let postgres = Postgres::shared();
        let url = postgres.database();
        Self {
            env: Env::new(),
            url,
            postgres,
        }
    }

    fn mc(&self) -> Command {
        let mut command = self.env.mc();
        command.env("MAESTRO_STATE_URL", &self.url);
        command
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        output_within(self.mc().args(args), 120)
    }

    /// Wait (ten seconds at most) until a server holds `job_id`.
    fn wait_claimed(&self, job_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .sql(&format!(
                "SELECT coalesce(claimed_by, '') FROM jobs WHERE job_id = '{job_id}'"
            ))
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "a server should hold job {job_id}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run `sql` in the database as the superuser; its output.
    fn sql(&self, sql: &str) -> String {
        self.postgres.psql_admin(Postgres::name_of(&self.url), sql)
    }
}

#[test]
fn every_command_records_into_the_database() {
    let pg = PgEnv::new();
    let spec = pg.env.write(
        "job.yaml",
        &job_yaml(
            "pg",
            "  - name: hello\n    command: [\"sh\", \"-c\", \"echo hello from postgres\"]\n",
        ),
    );
    let output = pg.run(&["submit", spec.to_str().unwrap(), "--output", "json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = parse_json(&output);
    let id = job_id(&report).to_owned();
    assert_eq!(report["state"], "SUCCEEDED", "{report:#}");
    // Nothing of the job is on disk: the database holds it.
    assert!(pg.env.job_ids().is_empty());
    assert_eq!(
        pg.sql(&format!("SELECT state FROM jobs WHERE job_id = '{id}'")),
        "SUCCEEDED"
    );
    // The spec is stored byte for byte.
    let stored = pg.sql(&format!(
        "SELECT encode(spec, 'hex') FROM jobs WHERE job_id = '{id}'"
    ));
    let written = std::fs::read(&spec).unwrap();
    assert_eq!(
        stored,
        written
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );

    let status = pg.run(&["status", &id, "--output", "json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status: Value = parse_json(&status);
    assert_eq!(status["state"], "SUCCEEDED", "{status:#}");
    let list = pg.run(&["status", "--output", "json"]);
    assert!(text(&list.stdout).contains(&id), "{}", text(&list.stdout));

    let logs = pg.run(&["logs", &id]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    assert!(
        text(&logs.stdout).contains("hello from postgres"),
        "{}",
        text(&logs.stdout)
    );

    let verify = pg.run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let events = pg.sql("SELECT count(*) FROM audit_log");
    assert!(events.parse::<u32>().unwrap() >= 5, "{events}");

    let cancel = pg.run(&["cancel", &id]);
    assert!(
        text(&cancel.stdout).contains("SUCCEEDED") || text(&cancel.stderr).contains("SUCCEEDED"),
        "{}{}",
        text(&cancel.stdout),
        text(&cancel.stderr)
    );
    let gc = pg.run(&["gc"]);
    assert!(gc.status.success(), "{}", text(&gc.stderr));

    let prune = pg.run(&["prune", "--older-than", "0s"]);
    assert!(prune.status.success(), "{}", text(&prune.stderr));
    let gone = pg.run(&["status", &id]);
    assert_eq!(gone.status.code(), Some(2), "{}", text(&gone.stderr));
    assert!(
        text(&gone.stderr).contains(&format!("job {id} was pruned")),
        "{}",
        text(&gone.stderr)
    );
    // Pruned: hidden and its logs gone, its history kept (the database refuses to delete it).
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM transitions WHERE job_id = '{id}'"
        )),
        "3"
    );
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM log_chunks WHERE job_id = '{id}'"
        )),
        "0"
    );
    let verify = pg.run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
}

#[test]
fn a_bad_state_url_is_one_line() {
    let pg = PgEnv::new();
    let output = output_within(
        pg.env
            .mc()
            .args(["status", "--state-url", "mysql://nowhere/db"]),
        60,
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("only PostgreSQL URLs"), "{stderr}");
    let output = output_within(
        pg.env.mc().args([
            "status",
            "--state-url",
            "postgres://maestro:secret@127.0.0.1:1/none",
        ]),
        60,
    );
    assert_ne!(output.status.code(), Some(0));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot use the database") && !stderr.contains("secret"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    // A job the database does not have: the hint names the database's settings.
    let output = pg.run(&["status", "01a23396-042e-75e0-9cc8-f7f1f55c1616"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("MAESTRO_STATE_URL") && !stderr.contains("MAESTRO_HOME"),
        "{stderr}"
    );
}

#[test]
fn logs_follow_a_running_job_through_the_database() {
    let pg = PgEnv::new();
    let spec = pg.env.write(
        "slow.yaml",
        &job_yaml(
            "slow",
            "  - name: tick\n    command: [\"sh\", \"-c\", \"for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done\"]\n",
        ),
    );
    let submit = pg
        .mc()
        .args(["submit", spec.to_str().unwrap(), "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Follow from the moment the job runs: the rest of its output comes while it is followed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        // Until mc has connected, the database has no tables yet.
        let found = pg.postgres.psql(
            "postgres",
            Postgres::name_of(&pg.url),
            "SELECT job_id FROM jobs WHERE state = 'RUNNING'",
        );
        let found = text(&found.stdout).trim().to_owned();
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "the job never ran");
        std::thread::sleep(Duration::from_millis(50));
    };
    let follow = output_within(pg.mc().args(["logs", &id, "--follow"]), 120);
    assert!(follow.status.success(), "{}", text(&follow.stderr));
    let out = text(&follow.stdout);
    for i in 1..=6 {
        assert!(out.contains(&format!("tick {i}")), "{out}");
    }
    let submitted = crate::util::output_within_child(submit);
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    assert_eq!(
        pg.sql(&format!("SELECT state FROM jobs WHERE job_id = '{id}'")),
        "SUCCEEDED"
    );
}

/// The `claimed_by` of every job, by job id.
fn claims(pg: &PgEnv) -> Vec<(String, String)> {
    pg.sql("SELECT job_id || ' ' || coalesce(claimed_by, '') FROM jobs ORDER BY job_id")
        .lines()
        .filter_map(|line| {
            let (id, by) = line.split_once(' ')?;
            Some((id.to_owned(), by.to_owned()))
        })
        .collect()
}

/// The pid in a lease holder's name (`host:pid:random`).
fn holder_pid(holder: &str) -> Option<u32> {
    holder.split(':').nth(1)?.parse().ok()
}

/// The server of the two that holds (claimed) `job_id`, and the other one.
fn holder_and_other<'a>(
    pg: &PgEnv,
    servers: &'a [crate::server::Server; 2],
    job_id: &str,
) -> (&'a crate::server::Server, &'a crate::server::Server) {
    let holder = pg.sql(&format!(
        "SELECT claimed_by FROM jobs WHERE job_id = '{job_id}'"
    ));
    match holder_pid(&holder) {
        Some(pid) if pid == servers[0].pid() => (&servers[0], &servers[1]),
        Some(pid) if pid == servers[1].pid() => (&servers[1], &servers[0]),
        _ => panic!("one of the two servers holds job {job_id}: {holder:?}"),
    }
}

#[test]
fn two_servers_share_one_queue_and_run_each_job_once() {
    let pg = PgEnv::new();
    let token = crate::server::token(&pg.env, "ana", "submit");
    let flags = [
        "--state-url",
        pg.url.as_str(),
        "--max-concurrent-jobs",
        "4",
        "--lease-ttl",
        "2",
    ];
    let first = crate::server::Server::start(&pg.env, &flags);
    let second = crate::server::Server::start(&pg.env, &flags);
    let ran = pg.env.path().join("ran");
    std::fs::write(&ran, "").unwrap();
    let spec = crate::util::bare_job_yaml(
        "shared",
        &format!(
            "  - name: once\n    command: [\"sh\", \"-c\", \"echo $MAESTRO_JOB_ID >> {}\"]\n",
            ran.display()
        ),
    );
    let mut submitted = Vec::new();
    for index in 0..200 {
        // As a load balancer would: half the submissions to each server.
        let server = if index % 2 == 0 { &first } else { &second };
        let (code, body) = server.submit_yaml(&token, &spec);
        assert_eq!(code, 201, "{body}");
        submitted.push(body["job_id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ended = pg.sql("SELECT count(*) FROM jobs WHERE state = 'SUCCEEDED'");
        if ended == "200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ended} of 200 jobs succeeded: {}",
            pg.sql("SELECT state || ' ' || count(*) FROM jobs GROUP BY state")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each job ran exactly once: its step appended its id once.
    let lines = std::fs::read_to_string(&ran).unwrap();
    let mut ran_ids: Vec<&str> = lines.lines().collect();
    ran_ids.sort_unstable();
    let mut expected: Vec<&str> = submitted.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ran_ids, expected, "a job ran twice or not at all");
    // Both servers ran some of them, and the queue is empty.
    let pids: std::collections::BTreeSet<u32> = claims(&pg)
        .iter()
        .filter_map(|(_, by)| holder_pid(by))
        .collect();
    assert!(
        pids.contains(&first.pid()) && pids.contains(&second.pid()),
        "both servers should have run jobs: {pids:?} vs {} and {}",
        first.pid(),
        second.pid()
    );
    assert_eq!(pg.sql("SELECT count(*) FROM server_queue"), "0");
    let verify = pg.run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    // Each server's metrics catch up with the jobs it accepted and the other ran: within a few
    // lease periods, none is counted as waiting or running any more.
    for server in [&first, &second] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, metrics) = server.request("GET", "/v1/metrics", Some(&token), None, None);
            assert_eq!(code, 200, "{metrics}");
            let count = |state: &str| {
                metrics
                    .lines()
                    .find_map(|line| {
                        line.strip_prefix(&format!("maestro_jobs{{state=\"{state}\"}} "))
                    })
                    .map(str::to_owned)
            };
            let (waiting, running) = (count("SUBMITTED"), count("RUNNING"));
            if waiting.as_deref() == Some("0") && running.as_deref() == Some("0") {
                break;
            }
            assert!(Instant::now() < deadline, "stale counts: {metrics}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The long step's command line, as `/proc` holds it.
const SLEEP: &[u8] = b"sleep\x0061.37";

#[test]
fn a_killed_servers_jobs_are_settled_by_another() {
    let pg = PgEnv::new();
    let token = crate::server::token(&pg.env, "ana", "submit");
    let flags = [
        "--state-url",
        pg.url.as_str(),
        "--max-concurrent-jobs",
        "1",
        "--lease-ttl",
        "3",
    ];
    let mut doomed = crate::server::Server::start(&pg.env, &flags);
    let long = job_yaml(
        "long",
        "  - name: wait\n    command: [\"sleep\", \"61.37\"]\n",
    );
    let (code, body) = doomed.submit_yaml(&token, &long);
    assert_eq!(code, 201, "{body}");
    let running = body["job_id"].as_str().unwrap().to_owned();
    doomed.wait_state(&token, &running, "RUNNING", 60);
    let deadline = Instant::now() + Duration::from_secs(30);
    while maestro_test_support::cmdlines_holding(SLEEP).is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A second job waits behind it (one slot).
    let (code, body) = doomed.submit_yaml(
        &token,
        &job_yaml("after", "  - name: quick\n    command: [\"true\"]\n"),
    );
    assert_eq!(code, 201, "{body}");
    let waiting = body["job_id"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pg.sql(&format!(
            "SELECT coalesce(state, 'none') FROM jobs WHERE job_id = '{waiting}'"
        )),
        "SUBMITTED"
    );
    let doomed_pid = doomed.pid();
    // The survivor is up before the kill, and the running job's log is followed through it:
    // the follow ends when the survivor has settled the job, with its final state.
    let survivor = crate::server::Server::start(&pg.env, &flags);
    let follower = survivor
        .mc(&pg.env, &token)
        .args(["logs", &running, "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    doomed.kill();
    // The running job is settled once its lease expires; the waiting one runs on the survivor.
    let settled = survivor.wait_state(&token, &running, "FAILED", 60);
    let followed = crate::util::output_within_child(follower);
    let stderr = text(&followed.stderr);
    assert!(
        !stderr.contains("no longer drives it") && followed.status.code() != Some(0),
        "the follow ended before the job did: {stderr}"
    );
    let last = settled["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["detail"]["reason"], "abandoned", "{settled:#}");
    survivor.wait_state(&token, &waiting, "SUCCEEDED", 60);
    let claims = claims(&pg);
    let by = |id: &str| {
        claims
            .iter()
            .find(|(job, _)| job == id)
            .and_then(|(_, by)| holder_pid(by))
    };
    assert_eq!(by(&waiting), Some(survivor.pid()), "{claims:?}");
    // The survivor's garbage collection took the dead server's lease to settle the job.
    assert_eq!(by(&running), Some(survivor.pid()), "{claims:?}");
    assert_ne!(survivor.pid(), doomed_pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !maestro_test_support::cmdlines_holding(SLEEP).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the killed server's step is still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_job_waiting_in_the_shared_queue_is_cancelled_through_any_server() {
    let pg = PgEnv::new();
    let token = crate::server::token(&pg.env, "ana", "submit");
    let flags = [
        "--state-url",
        pg.url.as_str(),
        "--max-concurrent-jobs",
        "1",
        "--queue-limit-per-owner",
        "1",
    ];
    let first = crate::server::Server::start(&pg.env, &flags);
    let second = crate::server::Server::start(&pg.env, &flags);
    let long = job_yaml(
        "busy",
        "  - name: wait\n    command: [\"sleep\", \"62.41\"]\n",
    );
    // Both servers' one slot busy (one at a time: ana may have one job waiting).
    let mut busy = Vec::new();
    for (server, running) in [(&first, "1"), (&second, "2")] {
        let (code, body) = server.submit_yaml(&token, &long);
        assert_eq!(code, 201, "{body}");
        busy.push(body["job_id"].as_str().unwrap().to_owned());
        let deadline = Instant::now() + Duration::from_secs(60);
        while pg.sql("SELECT count(*) FROM jobs WHERE state = 'RUNNING'") != running {
            assert!(Instant::now() < deadline, "the long jobs should run");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let quick = job_yaml("queued", "  - name: quick\n    command: [\"true\"]\n");
    let (code, body) = first.submit_yaml(&token, &quick);
    assert_eq!(code, 201, "{body}");
    let waiting = body["job_id"].as_str().unwrap().to_owned();
    // The per-owner cap counts ana's jobs waiting on every server of the queue.
    let (code, body) = second.submit_yaml(&token, &quick);
    assert_eq!(code, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ana has 1 jobs waiting to run"),
        "{body}"
    );
    // Submitted to the first server, cancelled through the second.
    let (code, body) = second.json(
        "POST",
        &format!("/v1/jobs/{waiting}/cancel"),
        Some(&token),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "CANCELLED", "{body}");
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM server_queue WHERE job_id = '{waiting}'"
        )),
        "0"
    );
    let steps = pg.sql(&format!(
        "SELECT count(*) FROM step_logs WHERE job_id = '{waiting}'"
    ));
    assert_eq!(steps, "0", "nothing of a job cancelled while waiting runs");
    // Nothing of ana's waits any more: the other server takes one again.
    let (code, body) = second.submit_yaml(&token, &quick);
    assert_eq!(code, 201, "{body}");
    // `mc cancel` on the database cannot reach a server's job: it says to go through one.
    let output = pg.run(&["cancel", &busy[0]]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("mc --server URL cancel"),
        "{}",
        text(&output.stderr)
    );
    // A job running on the first server is cancelled through the second too: the first stops
    // it, as Ctrl-C would.
    let (code, body) = second.json(
        "POST",
        &format!("/v1/jobs/{}/cancel", busy[0]),
        Some(&token),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let record = first.wait_state(&token, &busy[0], "CANCELLED", 30);
    assert_eq!(record["state"], "CANCELLED", "{record}");
    // Through the command line as well, the other way round.
    let output = first.run(&pg.env, &token, &["cancel", &busy[1]]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    second.wait_state(&token, &busy[1], "CANCELLED", 30);
}

#[test]
fn an_approved_job_runs_with_its_approval_on_a_shared_queue() {
    let pg = PgEnv::new();
    let ana = crate::server::token(&pg.env, "ana", "submit");
    let bo = crate::server::token(&pg.env, "bo", "approve");
    let flags = ["--state-url", pg.url.as_str()];
    let first = crate::server::Server::start(&pg.env, &flags);
    let second = crate::server::Server::start(&pg.env, &flags);
    let prod =
        "name: release\nenvironment: production\nsteps:\n  - name: a\n    run: echo released\n";
    let (code, submitted) = first.submit_yaml(&ana, prod);
    assert_eq!(code, 201, "{submitted}");
    assert_eq!(submitted["state"], "AWAITING_APPROVAL");
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    // Neither server runs it while it waits for its approval.
    std::thread::sleep(Duration::from_millis(800));
    first.wait_state(&ana, &job_id, "AWAITING_APPROVAL", 5);
    // The decision goes through the server that does not hold the job.
    let elsewhere = |job_id: &str| {
        let holder = pg.sql(&format!(
            "SELECT claimed_by FROM jobs WHERE job_id = '{job_id}'"
        ));
        match holder_pid(&holder) {
            Some(pid) if pid == first.pid() => &second,
            Some(pid) if pid == second.pid() => &first,
            _ => panic!("one of the two servers holds job {job_id}: {holder:?}"),
        }
    };
    let other = elsewhere(&job_id);
    // Four eyes hold there too: ana cannot approve her own job even with the role.
    let ana_approver = crate::server::token(&pg.env, "ana", "approve");
    let (code, body) = other.json(
        "POST",
        &format!("/v1/jobs/{job_id}/approve"),
        Some(&ana_approver),
        None,
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = other.json(
        "POST",
        &format!("/v1/jobs/{job_id}/approve"),
        Some(&bo),
        Some(("application/json", r#"{"reason":"CHG-7"}"#)),
    );
    assert_eq!(code, 200, "{body}");
    let job = first.wait_state(&ana, &job_id, "SUCCEEDED", 60);
    let approval = crate::util::approval_of(&job);
    assert_eq!(approval["approved_by"], "bo", "{job:#}");
    assert_eq!(approval["reason"], "CHG-7", "{job:#}");
    // Its log is in the database: followed through the other server.
    let (code, log) = second.request(
        "GET",
        &format!("/v1/jobs/{job_id}/logs?follow=true"),
        Some(&ana),
        None,
        None,
    );
    assert_eq!(code, 200, "{log}");
    assert!(log.contains("released"), "{log}");

    // A rejection through the server that does not hold the job ends it DENIED.
    let (code, submitted) = second.submit_yaml(&ana, prod);
    assert_eq!(code, 201, "{submitted}");
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    pg.wait_claimed(&job_id);
    let (code, body) = elsewhere(&job_id).json(
        "POST",
        &format!("/v1/jobs/{job_id}/reject"),
        Some(&bo),
        Some(("application/json", r#"{"reason":"not today"}"#)),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "DENIED", "{body}");
    let job = first.wait_state(&ana, &job_id, "DENIED", 10);
    let denied = job["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(denied["detail"]["rejected_by"], "bo", "{job:#}");
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM server_queue WHERE job_id = '{job_id}'"
        )),
        "0"
    );

    // Cancelled by its owner through the server that does not hold it: CANCELLED, not run.
    let (code, submitted) = first.submit_yaml(&ana, prod);
    assert_eq!(code, 201, "{submitted}");
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    pg.wait_claimed(&job_id);
    let (code, body) = elsewhere(&job_id).json(
        "POST",
        &format!("/v1/jobs/{job_id}/cancel"),
        Some(&ana),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "CANCELLED", "{body}");
    let steps = pg.sql(&format!(
        "SELECT count(*) FROM step_logs WHERE job_id = '{job_id}'"
    ));
    assert_eq!(
        steps, "0",
        "nothing of a job cancelled while it waited runs"
    );
}

#[test]
fn audit_verify_finds_a_record_edited_behind_the_databases_back() {
    let pg = PgEnv::new();
    let spec = pg.env.write(
        "job.yaml",
        &job_yaml("audited", "  - name: a\n    command: [\"true\"]\n"),
    );
    let output = pg.run(&["submit", spec.to_str().unwrap(), "--quiet"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let verify = pg.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    // Only an owner who disables the triggers can change a record; the chain still tells (the
    // record of RUNNING, which later records chain from).
    pg.sql(
        "ALTER TABLE audit_log DISABLE TRIGGER USER;
         UPDATE audit_log SET line = convert_to(replace(convert_from(line, 'UTF8'), '\"RUNNING\"', '\"PAUSING\"'), 'UTF8')
           WHERE convert_from(line, 'UTF8') LIKE '%\"RUNNING\"%';
         ALTER TABLE audit_log ENABLE TRIGGER USER;",
    );
    let edited = pg.sql(
        "SELECT count(*) FROM audit_log WHERE convert_from(line, 'UTF8') LIKE '%\"PAUSING\"%'",
    );
    assert_ne!(edited, "0", "the edit did not happen");
    let verify = pg.run(&["audit", "verify"]);
    assert!(!verify.status.success(), "{}", text(&verify.stdout));
    let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(said.contains("edited"), "{said}");
}

#[test]
fn a_database_beyond_loopback_is_reached_inside_verified_tls() {
    let env = Env::new();
    let (ca, cert, key) = crate::util::certificates(env.path());
    // A server of this test's own that refuses plain TCP connections (pg_hba: hostnossl reject).
    let postgres = Postgres::start_tls(&cert, &key);
    let plain = postgres.database();
    let with = |query: &str| format!("{plain}?{query}");
    let status = |url: &str| output_within(env.mc().args(["status", "--state-url", url]), 60);

    // Verified against the test's CA: the connection is TLS (the server takes no other).
    let verified = with(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let output = status(&verified);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let job = env.write(
        "job.yaml",
        &job_yaml("tls", "  - name: s\n    command: [\"true\"]\n"),
    );
    let output = output_within(
        env.mc().env("MAESTRO_STATE_URL", &verified).args([
            "submit",
            job.to_str().unwrap(),
            "--output",
            "json",
        ]),
        120,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(parse_json(&output)["state"], "SUCCEEDED");

    // `require` verifies too: the system's authorities do not know the test's CA.
    let output = status(&with("sslmode=require"));
    assert_ne!(output.status.code(), Some(0));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("certificate") && stderr.lines().count() == 1,
        "{stderr}"
    );
    // Through the server's Unix socket nothing crosses a network: no TLS, whatever sslmode
    // says (as libpq), and the connection is made.
    let socket = postgres.socket_url("maestro", Postgres::name_of(&plain));
    for url in [
        socket.clone(),
        format!("{socket}&sslmode=disable"),
        format!("{socket}&sslmode=require"),
    ] {
        let output = status(&url);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{url}: {}",
            text(&output.stderr)
        );
    }
    // Without TLS the server itself says no.
    let output = status(&with("sslmode=disable"));
    assert_ne!(output.status.code(), Some(0));
    assert!(
        text(&output.stderr).contains("no encryption"),
        "{}",
        text(&output.stderr)
    );
    // Bad settings are one line each.
    for (query, says) in [
        ("sslmode=allow", "sslmode=\"allow\" is not one of"),
        (
            "sslmode=require&sslrootcert=/nonexistent/ca.pem",
            "cannot use sslrootcert /nonexistent/ca.pem",
        ),
    ] {
        let output = status(&with(query));
        assert_eq!(
            output.status.code(),
            Some(2),
            "{query}: {}",
            text(&output.stderr)
        );
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(says) && stderr.lines().count() == 1,
            "{query}: {stderr}"
        );
    }
}

#[test]
fn a_job_an_mc_submit_runs_is_not_cancelled_through_a_server() {
    let pg = PgEnv::new();
    let token = crate::server::token(&pg.env, "ana", "submit");
    let server = crate::server::Server::start(&pg.env, &["--state-url", pg.url.as_str()]);
    let spec = pg.env.write(
        "long.yaml",
        &job_yaml(
            "local",
            "  - name: wait\n    command: [\"sleep\", \"63.29\"]\n",
        ),
    );
    let submit = pg
        .mc()
        .args(["submit", spec.to_str().unwrap(), "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job_id = loop {
        let id = pg.sql("SELECT coalesce(max(job_id::text), '') FROM jobs WHERE state = 'RUNNING'");
        if !id.is_empty() {
            break id;
        }
        assert!(Instant::now() < deadline, "the job should run");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The server cannot stop a process on another machine: it says who can, and records
    // nothing for a server to apply.
    let (code, body) = server.json(
        "POST",
        &format!("/v1/jobs/{job_id}/cancel"),
        Some(&token),
        None,
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("mc cancel"),
        "{body}"
    );
    // `mc cancel` on its machine does.
    let output = pg.run(&["cancel", &job_id]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let status = maestro_test_support::wait_within(submit, Duration::from_secs(60));
    assert_eq!(status.status.code(), Some(130));
}

#[test]
fn a_cancel_that_finds_the_job_ended_otherwise_says_so() {
    let pg = PgEnv::new();
    let token = crate::server::token(&pg.env, "ana", "submit");
    let flags = ["--state-url", pg.url.as_str(), "--lease-ttl", "2"];
    let mut stopped = crate::server::Server::start(&pg.env, &flags);
    let (code, body) = stopped.submit_yaml(
        &token,
        &job_yaml(
            "frozen",
            "  - name: wait\n    command: [\"sleep\", \"64.83\"]\n",
        ),
    );
    assert_eq!(code, 201, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    stopped.wait_state(&token, &job_id, "RUNNING", 60);
    let other = crate::server::Server::start(&pg.env, &flags);
    // The server that runs it stops answering: its lease runs out, and the other server
    // settles the job FAILED before the cancel it records can be applied.
    stopped.signal(rustix::process::Signal::STOP);
    let (code, body) = other.json(
        "POST",
        &format!("/v1/jobs/{job_id}/cancel"),
        Some(&token),
        None,
    );
    stopped.signal(rustix::process::Signal::CONT);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "FAILED", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ended FAILED before the cancel reached it"),
        "{body}"
    );
    stopped.kill();
}

#[test]
fn an_approved_job_waiting_for_a_slot_is_cancelled_and_decided_once_through_any_server() {
    let pg = PgEnv::new();
    let ana = crate::server::token(&pg.env, "ana", "submit");
    let bo = crate::server::token(&pg.env, "bo", "approve");
    let flags = ["--state-url", pg.url.as_str(), "--max-concurrent-jobs", "1"];
    let servers = [
        crate::server::Server::start(&pg.env, &flags),
        crate::server::Server::start(&pg.env, &flags),
    ];
    // Both servers' one slot busy.
    let long = job_yaml(
        "busy",
        "  - name: wait\n    command: [\"sleep\", \"65.17\"]\n",
    );
    let mut busy = Vec::new();
    for (server, running) in servers.iter().zip(["1", "2"]) {
        let (code, body) = server.submit_yaml(&ana, &long);
        assert_eq!(code, 201, "{body}");
        busy.push(body["job_id"].as_str().unwrap().to_owned());
        let deadline = Instant::now() + Duration::from_secs(60);
        while pg.sql("SELECT count(*) FROM jobs WHERE state = 'RUNNING'") != running {
            assert!(Instant::now() < deadline, "the long jobs should run");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let prod =
        "name: release\nenvironment: production\nsteps:\n  - name: a\n    run: echo released\n";
    let (code, submitted) = servers[0].submit_yaml(&ana, prod);
    assert_eq!(code, 201, "{submitted}");
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    pg.wait_claimed(&job_id);
    let (holding, other) = holder_and_other(&pg, &servers, &job_id);
    // Approved where it is held; it waits for the slot there.
    let approve = format!("/v1/jobs/{job_id}/approve");
    let (code, body) = holding.json("POST", &approve, Some(&bo), None);
    assert_eq!(code, 200, "{body}");
    // No second decision through the other server either.
    for verb in ["approve", "reject"] {
        let (code, body) = other.json(
            "POST",
            &format!("/v1/jobs/{job_id}/{verb}"),
            Some(&bo),
            None,
        );
        assert_eq!(code, 409, "{verb}: {body}");
    }
    // Cancelled through the other server: the holder ends it before it runs.
    let (code, body) = other.json(
        "POST",
        &format!("/v1/jobs/{job_id}/cancel"),
        Some(&ana),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "CANCELLED", "{body}");
    let steps = pg.sql(&format!(
        "SELECT count(*) FROM step_logs WHERE job_id = '{job_id}'"
    ));
    assert_eq!(steps, "0", "a cancelled job does not run");

    // Approved through the server that does not hold it, then rejected through its holder at
    // once (before the holder looks at the decisions on record): the first decision counts,
    // and the second is refused, not answered 200 too.
    let (code, submitted) = servers[0].submit_yaml(&ana, prod);
    assert_eq!(code, 201, "{submitted}");
    let second = submitted["job_id"].as_str().unwrap().to_owned();
    pg.wait_claimed(&second);
    let (holding, other) = holder_and_other(&pg, &servers, &second);
    let (code, body) = other.json(
        "POST",
        &format!("/v1/jobs/{second}/approve"),
        Some(&bo),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = holding.json(
        "POST",
        &format!("/v1/jobs/{second}/reject"),
        Some(&bo),
        None,
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("approved already"),
        "{body}"
    );
    let rejections = pg.sql(&format!(
        "SELECT count(*) FROM audit_log WHERE convert_from(line, 'UTF8') LIKE '%{second}%job.rejected_by_approver%' OR convert_from(line, 'UTF8') LIKE '%job.rejected_by_approver%{second}%'"
    ));
    assert_eq!(rejections, "0", "a refused decision is not audited");
    let (code, body) = holding.json(
        "POST",
        &format!("/v1/jobs/{second}/cancel"),
        Some(&ana),
        None,
    );
    assert_eq!(code, 200, "{body}");
    for id in &busy {
        let (code, body) = other.json("POST", &format!("/v1/jobs/{id}/cancel"), Some(&ana), None);
        assert_eq!(code, 200, "{body}");
    }
}
