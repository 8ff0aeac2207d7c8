//! The record: append-only transitions, illegal ones refused, jobs abandoned by a killed `mc`.

use std::time::Duration;

use maestro_core::JobId;
use maestro_core::state::{FileStore, JobState, StateError, StateStore, Transition};
use maestro_core::trace::TraceId;
use rustix::process::Signal;

use crate::util::{
    Env, bare_job_yaml, job_yaml, output_within, parse_json, pid_alive, send_signal, text,
    wait_for_file,
};

#[test]
fn illegal_transitions_on_a_recorded_job_are_refused_and_write_nothing() {
    let env = Env::new();
    let file = env.write("j.yaml", &job_yaml("j", "  - name: s\n    run: 'true'\n"));
    let (_, json) = env.submit(&file, &[]);
    let job_id = JobId::try_parse(json["job_id"].as_str().unwrap()).unwrap();
    let store = FileStore::new(&env.state);
    let state_file = store.journal_path(job_id);
    let before = std::fs::read(&state_file).unwrap();
    for state in [
        JobState::Running,
        JobState::Submitted,
        JobState::Failed,
        JobState::Succeeded,
    ] {
        let transition = Transition {
            state,
            at: "2026-01-01T00:00:00Z".to_owned(),
            trace_id: TraceId::parse("t").unwrap(),
            detail: serde_json::Value::Null,
        };
        let error = store.append_transition(job_id, &transition).unwrap_err();
        assert!(
            matches!(error, StateError::IllegalTransition { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("SUCCEEDED -> "), "{error}");
    }
    assert_eq!(std::fs::read(&state_file).unwrap(), before);
}

#[test]
fn a_killed_mc_leaves_a_stale_job_that_gc_settles_and_cleans_up() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &bare_job_yaml(
            "k",
            "  - name: long\n    run: echo $$ > step.pid; sleep 300\n",
        ),
    );
    let mut child = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    assert!(wait_for_file(&env.path().join("step.pid"), 10));
    // The shell creates the file before it writes the pid into it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let step_pid: i32 = loop {
        let text = std::fs::read_to_string(env.path().join("step.pid")).unwrap();
        if let Ok(pid) = text.trim().parse() {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no pid in step.pid");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    send_signal(child.id(), Signal::KILL);
    child.wait().unwrap();
    let job_id = env.job_ids()[0].clone();

    let status = env.status(&job_id);
    assert_eq!(status["state"], "RUNNING");
    assert_eq!(status["stale"], true);
    // Nothing will ever write to this job again, so following its log ends at once, as a
    // failure (the job cannot succeed), saying why.
    let follow = output_within(env.mc().args(["logs", &job_id, "--follow"]), 20);
    assert_eq!(follow.status.code(), Some(1));
    assert!(text(&follow.stderr).contains("no mc drives it any more"));
    assert!(text(&env.run(&["status", &job_id]).stdout).contains("stale"));

    let output = env.run(&["gc", "--output", "json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = parse_json(&output);
    assert_eq!(report["abandoned_jobs"][0], job_id.as_str());
    let removed = report["removed"].as_array().unwrap();
    assert!(
        removed
            .iter()
            .any(|r| r["kind"] == "process" && r["id"] == step_pid.to_string().as_str()),
        "{report}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pid_alive(step_pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_alive(step_pid),
        "gc left the orphaned step {step_pid} running"
    );

    let status = env.status(&job_id);
    assert_eq!(status["state"], "FAILED");
    assert_eq!(status["stale"], false);
    let last = status["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["detail"]["reason"], "abandoned");

    // A second gc finds nothing more to do.
    let again = parse_json(&env.run(&["gc", "--output", "json"]));
    assert!(again["abandoned_jobs"].as_array().unwrap().is_empty());
}

#[test]
fn gc_leaves_live_jobs_alone() {
    let env = Env::new();
    // The step runs until the test says so, after gc has looked at the live job.
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "live",
            "  - name: s\n    run: touch started; while [ ! -e go ]; do sleep 0.05; done\n",
        ),
    );
    let child = env
        .mc()
        .args([
            "submit",
            file.to_str().unwrap(),
            "--quiet",
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_file(&env.path().join("started"), 10));
    let report = parse_json(&env.run(&["gc", "--output", "json"]));
    assert!(report["abandoned_jobs"].as_array().unwrap().is_empty());
    assert!(report["removed"].as_array().unwrap().is_empty());
    let job_id = env.job_ids()[0].clone();
    assert_eq!(
        env.status(&job_id)["state"],
        "RUNNING",
        "gc touched a live job"
    );
    std::fs::write(env.path().join("go"), "").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(parse_json(&output)["state"], "SUCCEEDED");
}

/// An older version's root: jobs with `state.json` and `steps.json` (JSON arrays), no
/// journal, no index. Made here by rewriting a job's journal into the arrays it stands for.
#[test]
fn a_root_of_an_older_version_is_read_listed_verified_and_added_to() {
    use maestro_core::state::array_bytes;
    use maestro_core::state::file::{INDEX, JOURNAL};

    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "j",
            "  - name: a\n    run: echo one\n  - name: b\n    run: 'false'\n",
        ),
    );
    let (_, json) = env.submit(&file, &[]);
    let old = json["job_id"].as_str().unwrap().to_owned();
    let shown = env.status(&old);
    let listed = parse_json(&env.run(&["status", "--output", "json"]));
    let job = env.state.join("jobs").join(&old);
    let journal = std::fs::read_to_string(job.join(JOURNAL)).unwrap();
    let entries = |kind: &str| -> Vec<Vec<u8>> {
        journal
            .lines()
            .filter(|line| line.starts_with(&format!("{kind} ")))
            .map(|line| line.splitn(4, ' ').nth(3).unwrap().as_bytes().to_vec())
            .collect()
    };
    for (name, kind) in [("state.json", "transition"), ("steps.json", "step")] {
        let entries = entries(kind);
        let slices: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        std::fs::write(job.join(name), array_bytes(&slices)).unwrap();
    }
    std::fs::remove_file(job.join(JOURNAL)).unwrap();
    std::fs::remove_file(env.state.join(INDEX)).unwrap();

    // Read exactly as before, and the audit log's digests still hold.
    assert_eq!(env.status(&old), shown);
    assert_eq!(
        parse_json(&env.run(&["status", "--output", "json"])),
        listed
    );
    let verify = env.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    // New jobs get a journal beside it, and both are listed, newest first.
    let (_, json) = env.submit(&file, &[]);
    let new = json["job_id"].as_str().unwrap().to_owned();
    assert!(env.state.join("jobs").join(&new).join(JOURNAL).exists());
    assert!(!job.join(JOURNAL).exists());
    let listed = parse_json(&env.run(&["status", "--output", "json"]));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [new.as_str(), old.as_str()]);
    let verify = env.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
}
