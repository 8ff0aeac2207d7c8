//! Job control from a second terminal: `mc cancel`, and job ids given as prefixes.

use std::process::Child;

use crate::util::*;

/// A running `mc submit`, killed if the test ends without having reaped it.
struct Submitted(Option<Child>);

impl Submitted {
    fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    fn still_running(&mut self) -> bool {
        self.0.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    fn output(mut self) -> std::process::Output {
        output_within_child(self.0.take().unwrap())
    }
}

impl Drop for Submitted {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `mc submit` of a job whose one step touches `started` and sleeps; returns once the step
/// runs, with the job's id.
fn running_job(env: &Env) -> (Submitted, String) {
    let file = env.write(
        "j.yaml",
        &job_yaml("c", "  - name: long\n    run: touch started; sleep 300\n"),
    );
    let child = Submitted(Some(
        env.mc()
            .args(["submit", file.to_str().unwrap(), "--quiet"])
            .spawn()
            .unwrap(),
    ));
    assert!(
        wait_for_file(&env.path().join("started"), 20),
        "the step never started"
    );
    let running = env
        .job_ids()
        .into_iter()
        .find(|id| env.status(id)["state"] == "RUNNING")
        .expect("a running job");
    (child, running)
}

#[test]
fn cancel_from_another_terminal_ends_the_job_cancelled_and_the_audit_names_who() {
    let env = Env::new();
    let (child, job_id) = running_job(&env);
    // A prefix is enough.
    let output = output_within(env.mc().args(["cancel", &job_id[..13]]), 60);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains(&format!("job {job_id} CANCELLED")),
        "{}",
        text(&output.stdout)
    );
    // The submitting mc exits as it does on Ctrl-C.
    let submitted = child.output();
    assert_eq!(submitted.status.code(), Some(130));
    assert_eq!(env.status(&job_id)["state"], "CANCELLED");
    let request = env
        .audit()
        .into_iter()
        .find(|record| record["event"] == "job.cancel_requested")
        .expect("an audit record of the request");
    assert_eq!(request["job_id"], job_id.as_str());
    let by = request["details"]["by"].as_str().unwrap();
    let uid = rustix::process::getuid().as_raw();
    assert!(by.contains(&format!("uid {uid}")), "{by}");

    // Cancelling a finished job is a clear no-op.
    let again = output_within(env.mc().args(["cancel", &job_id]), 30);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("already ended CANCELLED; nothing to cancel"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn a_recorded_process_that_is_not_the_one_running_is_never_signalled() {
    let env = Env::new();
    let (mut child, job_id) = running_job(&env);
    // Make the record name the driver's pid with another start time, as a reused pid would.
    let meta_path = env.state.join("jobs").join(&job_id).join("job.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert_eq!(meta["driver"]["pid"], child.id(), "{meta}");
    let start = meta["driver"]["start_time"].as_u64().unwrap();
    meta["driver"]["start_time"] = (start + 1).into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();

    let output = output_within(env.mc().args(["cancel", &job_id]), 30);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("cannot be identified"),
        "{}",
        text(&output.stderr)
    );
    // Still running: nothing was signalled.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.still_running(), "the job's mc was signalled");
    send_signal(child.id(), rustix::process::Signal::INT);
    assert_eq!(child.output().status.code(), Some(130));
}

#[test]
fn job_ids_can_be_given_as_unambiguous_prefixes() {
    let env = Env::new();
    let file = env.write("j.yaml", &job_yaml("p", "  - name: s\n    run: echo hi\n"));
    let (first, json) = env.submit(&file, &["--quiet"]);
    assert!(first.status.success());
    let job_id = json["job_id"].as_str().unwrap().to_owned();
    let (second, _) = env.submit(&file, &["--quiet"]);
    assert!(second.status.success());

    // Unique: the whole id minus its last characters, with or without hyphens, any case.
    for prefix in [
        job_id[..30].to_owned(),
        job_id.replace('-', "")[..28].to_uppercase(),
    ] {
        let shown = parse_json(&output_within(
            env.mc().args(["status", &prefix, "--output", "json"]),
            30,
        ));
        assert_eq!(shown["job_id"], job_id.as_str(), "{prefix}");
        let logs = output_within(env.mc().args(["logs", &prefix]), 30);
        assert!(text(&logs.stdout).contains("hi"), "{prefix}");
    }
    // Two jobs submitted in the same second share their first characters (UUIDv7).
    let ambiguous = output_within(env.mc().args(["status", &job_id[..4]]), 30);
    assert_eq!(ambiguous.status.code(), Some(2));
    let message = text(&ambiguous.stderr);
    assert!(message.contains("names 2 jobs"), "{message}");
    assert!(message.contains("give more of the id"), "{message}");
    for bad in ["../../etc", "zzzz"] {
        let output = output_within(env.mc().args(["status", bad]), 30);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert!(
            text(&output.stderr).contains("is not a job id or a prefix of one"),
            "{}",
            text(&output.stderr)
        );
    }
    let none = output_within(env.mc().args(["status", "ffffffff"]), 30);
    assert_eq!(none.status.code(), Some(2));
    assert!(text(&none.stderr).contains("no job id starts with"));
}

/// A prune killed after it took the job out of `jobs/` (renamed `.pruned-<id>`) and before
/// it counted and removed it: gc finishes the removal and counts it once, so listings' totals
/// stay true, and the job is said to be pruned.
#[test]
fn gc_finishes_a_prune_that_was_killed_midway() {
    let env = Env::new();
    let file = env.write("ok.yaml", &job_yaml("ok", "  - name: s\n    run: 'true'\n"));
    for _ in 0..2 {
        env.submit(&file, &[]);
    }
    let ids = env.job_ids();
    let jobs = env.state.join("jobs");
    std::fs::rename(jobs.join(&ids[1]), jobs.join(format!(".pruned-{}", ids[1]))).unwrap();
    let gc = env.run(&["gc"]);
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    assert!(
        text(&gc.stdout).contains(&format!("finished removing job {}", ids[1])),
        "{}",
        text(&gc.stdout)
    );
    assert!(!jobs.join(format!(".pruned-{}", ids[1])).exists());
    let pruned = std::fs::read_to_string(env.state.join("jobs.pruned")).unwrap();
    assert_eq!(pruned, format!("{}\n", ids[1]));
    let again = env.run(&["gc"]);
    assert!(
        text(&again.stdout).contains("nothing to collect"),
        "{}",
        text(&again.stdout)
    );
    let status = env.run(&["status", &ids[1]]);
    assert!(
        text(&status.stderr).contains("was pruned"),
        "{}",
        text(&status.stderr)
    );
    // One job left, and the listing says one.
    let listed = env.run(&["status", "--limit", "1"]);
    assert!(
        !text(&listed.stderr).contains("of 2 jobs"),
        "{}",
        text(&listed.stderr)
    );
}

/// A submission that died after it gave its job a line in the index, before the job was in
/// place: gc removes its staging directory and counts the line out, so a listing's total is
/// the number of jobs it lists.
#[test]
fn gc_counts_out_the_index_line_of_a_submission_that_died() {
    let env = Env::new();
    let file = env.write("ok.yaml", &job_yaml("ok", "  - name: s\n    run: 'true'\n"));
    env.submit(&file, &[]);
    // Died between the first job and the next: its id and its line lie between theirs.
    let first = env.job_ids()[0].clone();
    assert_ne!(&first[32..], "ffff");
    let dead = format!("{}ffff", &first[..32]);
    let mut index = std::fs::OpenOptions::new()
        .append(true)
        .open(env.state.join("jobs.index"))
        .unwrap();
    std::io::Write::write_all(&mut index, format!("{dead}\n").as_bytes()).unwrap();
    std::fs::create_dir(
        env.state
            .join("jobs")
            .join(format!(".new-{}", dead.replace('-', ""))),
    )
    .unwrap();
    env.submit(&file, &[]);
    let total = |env: &Env| text(&env.run(&["status", "--limit", "1"]).stderr);
    assert!(total(&env).contains("of 3 jobs"), "{}", total(&env));
    let gc = env.run(&["gc"]);
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    assert!(total(&env).contains("of 2 jobs"), "{}", total(&env));
    let listed = parse_json(&env.run(&["status", "--output", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

#[test]
fn prune_removes_old_ended_jobs_never_running_ones_and_the_audit_keeps_them() {
    let env = Env::new();
    let ok = env.write("ok.yaml", &job_yaml("ok", "  - name: s\n    run: 'true'\n"));
    let bad = env.write(
        "bad.yaml",
        &job_yaml("bad", "  - name: s\n    run: exit 1\n"),
    );
    env.submit(&ok, &["--quiet"]);
    let (_, failed) = env.submit(&bad, &["--quiet"]);
    let failed_id = failed["job_id"].as_str().unwrap().to_owned();
    let (running, running_id) = running_job(&env);

    let nothing = env.run(&["prune", "--older-than", "1h"]);
    assert!(nothing.status.success());
    assert!(text(&nothing.stdout).contains("nothing to prune"));

    let dry = parse_json(&env.run(&[
        "prune",
        "--older-than",
        "0s",
        "--dry-run",
        "--output",
        "json",
    ]));
    assert_eq!(dry["removed"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(env.job_ids().len(), 3, "a dry run removes nothing");

    let pruned = env.run(&["prune", "--older-than", "0s", "--state", "failed"]);
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    assert!(
        text(&pruned.stdout).contains(&format!("removed job {failed_id} FAILED bad")),
        "{}",
        text(&pruned.stdout)
    );
    let left = env.job_ids();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&failed_id));
    assert!(!env.state.join("jobs").join(&failed_id).exists());
    // Asked for by id, it is said to be pruned, not unknown.
    for command in [
        &["status", failed_id.as_str()][..],
        &["logs", failed_id.as_str()],
    ] {
        let gone = env.run(command);
        assert_eq!(gone.status.code(), Some(2));
        assert!(
            text(&gone.stderr).contains(&format!("job {failed_id} was pruned")),
            "{}",
            text(&gone.stderr)
        );
    }
    let records: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|record| record["event"] == "job.pruned")
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["job_id"], failed_id.as_str());
    // The job's earlier audit records are still there.
    assert!(env.audit().iter().any(|record| {
        record["job_id"] == failed_id.as_str() && record["event"] == "step.finished"
    }));

    // Everything that has ended goes; the running job stays.
    env.run(&["prune", "--older-than", "0s"]);
    assert_eq!(env.job_ids(), [running_id]);
    drop(running);
    let bad_age = env.run(&["prune", "--older-than", "soon"]);
    assert_eq!(bad_age.status.code(), Some(2));
    assert!(text(&bad_age.stderr).contains("--older-than"));
}
