//! Running steps: timeouts that reach grandchildren, cancellation, output volume, workdir.

use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::util::{
    Env, bare_job_yaml, job_yaml, parse_json, pid_alive, send_signal, text, wait_for_file,
};

#[test]
fn a_timeout_kills_the_whole_process_group_even_when_sigterm_is_ignored() {
    let env = Env::new();
    // The step ignores SIGTERM and leaves a grandchild that ignores it too.
    let file = env.write(
        "j.yaml",
        &bare_job_yaml("t", "  - name: stubborn\n    timeout_seconds: 1\n    run: trap '' TERM; sh -c 'trap \"\" TERM; echo $$ > grandchild.pid; sleep 300' & sleep 300\n"),
    );
    let started = Instant::now();
    let (output, json) = env.submit(&file, &["--stop-grace", "0.5"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(json["state"], "FAILED");
    assert_eq!(json["steps"][0]["status"], "timed_out");
    assert_eq!(json["steps"][0]["timed_out"], true);
    assert_eq!(
        json["steps"][0]["signal"], 9,
        "SIGTERM was ignored, so SIGKILL ended it"
    );
    let pid: i32 = std::fs::read_to_string(env.path().join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!pid_alive(pid), "grandchild {pid} survived the timeout");
}

#[test]
fn leftover_background_processes_die_with_their_step() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &bare_job_yaml("bg", "  - name: s\n    run: sleep 300 & echo $! > bg.pid\n"),
    );
    let (output, _) = env.submit(&file, &[]);
    assert!(output.status.success());
    let pid: i32 = std::fs::read_to_string(env.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !pid_alive(pid),
        "background process {pid} outlived its step"
    );
}

#[test]
fn sigint_cancels_the_job_kills_the_step_and_exits_130() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &bare_job_yaml("c", "  - name: long\n    run: echo $$ > step.pid; sleep 300\n  - name: after\n    run: touch after-ran\n"),
    );
    let child = env
        .mc()
        .args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&env.path().join("step.pid"), 10),
        "the step never started"
    );
    std::thread::sleep(Duration::from_millis(100));
    send_signal(child.id(), Signal::INT);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let json = parse_json(&output);
    assert_eq!(json["state"], "CANCELLED");
    assert_eq!(json["steps"][0]["status"], "cancelled");
    assert_eq!(json["steps"][1]["status"], "skipped");
    let pid: i32 = std::fs::read_to_string(env.path().join("step.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!pid_alive(pid), "step process {pid} survived the cancel");
    assert!(!env.path().join("after-ran").exists());
    let states: Vec<String> = env.status(json["job_id"].as_str().unwrap())["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["SUBMITTED", "RUNNING", "CANCELLED"]);
}

#[test]
fn sigterm_cancels_too() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml("c", "  - name: long\n    run: touch started; sleep 300\n"),
    );
    let child = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    assert!(wait_for_file(&env.path().join("started"), 10));
    send_signal(child.id(), Signal::TERM);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
}

#[test]
fn large_output_and_huge_lines_are_recorded_completely() {
    let env = Env::new();
    // 200,000 numbered lines on stdout, and a 200 KiB line without newline on stderr.
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "big",
            "  - name: s\n    run: seq 1 200000; head -c 204800 /dev/zero | tr '\\0' x >&2\n",
        ),
    );
    let (output, json) = env.submit(&file, &["--quiet"]);
    assert!(output.status.success());
    let log = env.step_log(json["job_id"].as_str().unwrap(), "s");
    let out_lines: Vec<&str> = log.lines().filter(|l| l.contains(" out ")).collect();
    assert_eq!(out_lines.len(), 200_000);
    assert!(out_lines[199_999].ends_with(" out 200000"));
    let err_bytes: usize = log
        .lines()
        .filter(|l| l.contains(" err"))
        .map(|l| {
            l.split_once(" err")
                .unwrap()
                .1
                .trim_start_matches('+')
                .trim_start()
                .len()
        })
        .sum();
    assert_eq!(err_bytes, 204_800);
    assert!(log.lines().all(|l| l.len() < 70_000), "a line was not cut");
    assert_eq!(
        json["steps"][0]["output_bytes"],
        output_size(200_000) + 204_800
    );
}

/// Bytes printed by `seq 1 n`.
fn output_size(n: u64) -> u64 {
    (1..=n).map(|i| i.to_string().len() as u64 + 1).sum()
}

#[test]
fn workdir_is_relative_to_the_workspace_and_env_reaches_steps() {
    let env = Env::new();
    std::fs::create_dir(env.path().join("sub")).unwrap();
    let file = env.write(
        "j.yaml",
        "name: w\nowner: ana\nenv: { LEVEL: job, SHARED: job }\nsteps:\n  - name: s\n    workdir: sub\n    env: { SHARED: step }\n    run: pwd; echo $LEVEL $SHARED $MAESTRO_JOB_ID\n",
    );
    let (output, json) = env.submit(&file, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let job_id = json["job_id"].as_str().unwrap();
    let log = env.step_log(job_id, "s");
    assert!(
        log.contains(&format!(
            " out {}\n",
            env.path().join("sub").canonicalize().unwrap().display()
        )),
        "{log}"
    );
    assert!(log.contains(&format!(" out job step {job_id}\n")), "{log}");

    let missing = env.write(
        "m.yaml",
        &job_yaml("m", "  - name: s\n    workdir: nope\n    run: 'true'\n"),
    );
    let (output, json) = env.submit(&missing, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        json["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
}

#[test]
fn a_command_that_cannot_start_fails_its_step_clearly() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml("n", "  - name: s\n    command: [/nonexistent/tool, x]\n"),
    );
    let (output, json) = env.submit(&file, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json["state"], "FAILED");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("cannot start \"/nonexistent/tool\""),
        "{json}"
    );
}

#[test]
fn a_terminal_that_stops_reading_does_not_stop_a_timeout() {
    let env = Env::new();
    // Far more output than a pipe holds, then a step that would run for minutes.
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "stall",
            "  - name: s\n    timeout_seconds: 2\n    run: seq 1 300000; sleep 300\n",
        ),
    );
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut child = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--stop-grace", "0.5"])
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Nobody reads mc's stdout, yet the job must time out and be recorded on time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = env
            .job_ids()
            .first()
            .map(|id| env.status(id))
            .map(|status| (status["state"].clone(), status["steps"].clone()));
        if let Some((state, steps)) = state
            && state == "FAILED"
        {
            break steps;
        }
        assert!(
            Instant::now() < deadline,
            "the timeout was not honoured while stdout was stalled"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state[0]["status"], "timed_out");
    let drain = std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    assert_eq!(child.wait().unwrap().code(), Some(1));
    drain.join().unwrap().unwrap();
}

#[test]
fn a_stderr_that_stops_reading_does_not_stop_a_cancel() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "stall-err",
            "  - name: s\n    run: seq 1 300000 >&2; touch flooded; sleep 300\n",
        ),
    );
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut child = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--stop-grace", "0.5"])
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&env.path().join("flooded"), 30),
        "the step never got going"
    );
    send_signal(child.id(), Signal::TERM);
    // Nobody reads mc's stderr, yet the cancel must be honoured and recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = env
            .job_ids()
            .first()
            .map(|id| env.status(id)["state"].clone());
        if state.as_ref().is_some_and(|s| s == "CANCELLED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cancel was not honoured while stderr was stalled: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let drain = std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    assert_eq!(child.wait().unwrap().code(), Some(130));
    drain.join().unwrap().unwrap();
}
