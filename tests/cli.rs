//! The everyday commands: submit, status, logs, validate, and their exit codes.

use crate::util::{Env, job_yaml, parse_json, text};

#[test]
fn submit_runs_steps_and_records_everything() {
    let env = Env::new();
    let spec = job_yaml(
        "hello",
        "  - name: greet\n    run: echo \"hi $GREETING trace=$TRACE_ID step=$MAESTRO_STEP\"; echo warn >&2\n    env: { GREETING: there }\n  - name: argv\n    command: [printf, '%s\\n', '$HOME is literal']\n",
    );
    let file = env.write("hello.yaml", &spec);
    let (output, json) = env.submit(&file, &["--trace-id", "trace-abc-1"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(json["state"], "SUCCEEDED");
    assert_eq!(json["trace_id"], "trace-abc-1");
    assert_eq!(json["steps"].as_array().unwrap().len(), 2);
    assert_eq!(json["steps"][0]["exit_code"], 0);
    let job_id = json["job_id"].as_str().unwrap();

    // The spec is stored byte for byte, keeping its extension.
    let stored = std::fs::read(env.state.join("jobs").join(job_id).join("spec.yaml")).unwrap();
    assert_eq!(stored, spec.as_bytes());

    let states: Vec<String> = env.status(job_id)["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["trace_id"], "trace-abc-1");
            assert!(t["at"].as_str().unwrap().ends_with('Z'));
            t["state"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(states, ["SUBMITTED", "RUNNING", "SUCCEEDED"]);

    let log = env.step_log(job_id, "greet");
    assert!(log.starts_with("# maestro "), "{log}");
    assert!(log.lines().next().unwrap().contains("trace_id=trace-abc-1"));
    assert!(
        log.contains(" out hi there trace=trace-abc-1 step=greet\n"),
        "{log}"
    );
    assert!(log.contains(" err warn\n"), "{log}");
    assert!(
        env.step_log(job_id, "argv")
            .contains(" out $HOME is literal\n")
    );

    let audit = env.audit();
    let events: Vec<&str> = audit.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events.iter().filter(|e| **e == "job.transition").count(), 3);
    assert_eq!(
        events.iter().filter(|e| **e == "policy.decision").count(),
        5
    );
    assert_eq!(events.iter().filter(|e| **e == "step.finished").count(), 2);
    // The log starts with the genesis record of its hash chain (see docs/security.md).
    assert_eq!(audit[0]["event"], "audit.genesis");
    assert_eq!(audit[0]["seq"], 0);
    for record in &audit[1..] {
        assert_eq!(record["trace_id"], "trace-abc-1");
        assert_eq!(record["job_id"], job_id);
        assert_eq!(record["owner"], "ana");
        assert!(record["at"].is_string());
    }
}

#[test]
fn text_output_streams_prefixed_lines_and_names_the_job() {
    let env = Env::new();
    let file = env.write(
        "j.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"say","run":"echo one; echo two"}]}"#,
    );
    let output = env.run(&["submit", file.to_str().unwrap()]);
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    assert!(stdout.contains("say | one\nsay | two\n"), "{stdout}");
    let job_id = &env.job_ids()[0];
    assert!(
        stdout.contains(&format!("job {job_id} SUCCEEDED")),
        "{stdout}"
    );
}

#[test]
fn trace_id_comes_from_the_environment_and_is_validated() {
    let env = Env::new();
    let file = env.write(
        "j.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"echo $TRACE_ID"}]}"#,
    );
    let output = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--output", "json"])
        .env("TRACE_ID", "from-env")
        .output()
        .unwrap();
    let json = parse_json(&output);
    assert_eq!(json["trace_id"], "from-env");
    assert!(
        env.step_log(json["job_id"].as_str().unwrap(), "s")
            .contains(" out from-env\n")
    );

    let output = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--trace-id", "bad id;rm"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("invalid --trace-id"),
        "{}",
        text(&output.stderr)
    );
    let output = env
        .mc()
        .args(["submit", file.to_str().unwrap()])
        .env("TRACE_ID", "x/../y")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("invalid TRACE_ID"));
}

#[test]
fn a_failing_step_fails_the_job_and_skips_the_rest() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml("f", "  - name: a\n    run: 'true'\n  - name: b\n    run: exit 7\n  - name: c\n    run: touch never-created\n"),
    );
    let (output, json) = env.submit(&file, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json["state"], "FAILED");
    let statuses: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "failed", "skipped"]);
    assert_eq!(json["steps"][1]["exit_code"], 7);
    assert!(!env.path().join("never-created").exists());
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 7")
    );
}

#[test]
fn validate_stores_and_runs_nothing() {
    let env = Env::new();
    let good = env.write(
        "good.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"touch ran"}]}"#,
    );
    let output = env.run(&["validate", good.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("allowed  owner-present"));
    let denied = env.write(
        "denied.json",
        r#"{"name":"j","steps":[{"name":"s","run":"touch ran"}]}"#,
    );
    let output = env.run(&["validate", denied.to_str().unwrap(), "--output", "json"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(parse_json(&output)["allowed"], false);
    let invalid = env.write(
        "invalid.json",
        r#"{"name":"j","steps":[{"name":"s","runn":"x"}]}"#,
    );
    assert_eq!(
        env.run(&["validate", invalid.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    assert!(!env.path().join("ran").exists());
    assert!(env.job_ids().is_empty(), "validate must store nothing");
}

#[test]
fn status_lists_newest_first_and_rejects_path_like_ids() {
    let env = Env::new();
    let file = env.write(
        "j.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"true"}]}"#,
    );
    let first = env.submit(&file, &[]).1["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = env.submit(&file, &[]).1["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = parse_json(&env.run(&["status", "--output", "json"]));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);

    for hostile in [
        "../../etc",
        "../state/jobs",
        "/etc/passwd",
        "",
        "01a20be7-892f-75f3-a0ea-51ed7b0529ae/../x",
    ] {
        let output = env.run(&["status", hostile]);
        assert_eq!(output.status.code(), Some(2), "{hostile}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains("is not a job id"), "{stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1
        );
        assert!(output.stdout.is_empty());
    }
    let output = env.run(&["status", "01a20be7-892f-75f3-a0ea-51ed7b0529ae"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no job 01a20be7-892f-75f3-a0ea-51ed7b0529ae"));
    assert_eq!(env.run(&["logs", "../../etc"]).status.code(), Some(2));
}

#[test]
fn logs_print_steps_in_order_and_follow_a_running_job() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml("l", "  - name: first\n    run: echo alpha; sleep 1; echo beta\n  - name: second\n    run: echo gamma\n"),
    );
    let mut submit = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let job_id = loop {
        if let Some(id) = env.job_ids().first() {
            break id.clone();
        }
        assert!(std::time::Instant::now() < deadline, "job never appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let state = env.status(&job_id)["state"].clone();
    assert!(
        state == "SUBMITTED" || state == "RUNNING",
        "follow must start while the job runs, not {state}"
    );
    let follow = env.run(&["logs", &job_id, "--follow"]);
    assert!(submit.wait().unwrap().success());
    let followed = text(&follow.stdout);
    let positions: Vec<usize> = [" out alpha", " out beta", " out gamma"]
        .iter()
        .map(|needle| {
            followed
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing from {followed}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{followed}");
    assert!(followed.contains("status=succeeded"));

    let only = text(&env.run(&["logs", &job_id, "--step", "second"]).stdout);
    assert!(only.contains(" out gamma") && !only.contains("alpha"));
    let missing = env.run(&["logs", &job_id, "--step", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("has no step \"nope\""));
}

#[test]
fn unknown_runtime_is_a_spec_error_before_anything_runs() {
    let env = Env::new();
    let file = env.write(
        "j.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"touch ran","runtime":"nosuch"}]}"#,
    );
    let output = env.run(&["submit", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("unknown runtime \"nosuch\""), "{stderr}");
    assert!(!env.path().join("ran").exists());
    assert!(env.job_ids().is_empty());
    let rejected = env.audit();
    assert_eq!(rejected.len(), 2, "the genesis record and the rejection");
    assert_eq!(rejected[0]["event"], "audit.genesis");
    assert_eq!(rejected[1]["event"], "job.rejected");

    let output = env.run(&[
        "submit",
        file.to_str().unwrap(),
        "--runtime",
        "../../bin/sh",
    ]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn local_steps_refuse_container_settings() {
    let env = Env::new();
    let file = env.write(
        "j.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"true","memory":"64m"}]}"#,
    );
    let output = env.run(&["submit", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot honour memory"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn an_unwritable_state_root_is_a_system_error() {
    let env = Env::new();
    let file = env.write(
        "j.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"touch ran"}]}"#,
    );
    let blocker = env.write("blocker", "a file where the state root should be");
    let output = env
        .mc()
        .args(["submit", file.to_str().unwrap()])
        .env("MAESTRO_HOME", &blocker)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!env.path().join("ran").exists());
}

/// Run a one-step job whose step touches `marker` once it has printed what matters, read the
/// job's log `settle_ms` later while the step still runs, then let the job finish.
fn log_while_running(run: &str, marker: &str, settle_ms: u64) -> String {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml("q", &format!("  - name: s\n    run: {run}\n")),
    );
    let child = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(crate::util::wait_for_file(&env.path().join(marker), 10));
    std::thread::sleep(std::time::Duration::from_millis(settle_ms));
    let job_id = env.job_ids()[0].clone();
    let logs = text(&env.run(&["logs", &job_id]).stdout);
    assert_eq!(
        env.status(&job_id)["state"],
        "RUNNING",
        "the step ended too soon to tell"
    );
    assert!(crate::util::output_within_child(child).status.success());
    logs
}

#[test]
fn output_reaches_the_log_while_the_step_is_still_running() {
    // The step is quiet after printing; its output must be in the log well before it ends.
    let logs = log_while_running("echo early; touch printed; sleep 3", "printed", 500);
    assert!(logs.contains(" out early\n"), "{logs}");
}

#[test]
fn a_step_that_trickles_output_is_flushed_to_the_log_on_time() {
    // A line every 5 ms: never quiet for long, never much output.
    let logs = log_while_running(
        "touch started; i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 0.005; done",
        "started",
        800,
    );
    assert!(logs.contains(" out tick 1\n"), "{logs}");
}
