//! Gap-free logs through the real `mc`: numbered lines, resuming with `--since-seq`, the output
//! cap's truncation record, and gaps in a plugin's log events.

use std::path::Path;
use std::process::Stdio;

use crate::util::{Env, job_yaml, output_within_child, text, wait_for_file};

/// The output lines of a log (notes left out), without their time stamps: `(seq, "out text")`.
fn numbered(log: &str) -> Vec<(u64, String)> {
    log.lines()
        .filter(|line| !line.starts_with("# "))
        .map(|line| {
            let (first, rest) = line.split_once(' ').unwrap();
            let seq = first.rsplit_once('#').unwrap().1.parse().unwrap();
            (seq, rest.to_owned())
        })
        .collect()
}

#[test]
fn lines_are_numbered_per_step_and_logs_resume_after_a_sequence_number() {
    let env = Env::new();
    let file = env.write(
        "seq.yaml",
        &job_yaml(
            "seq",
            "  - name: a\n    run: 'for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2'\n  - name: b\n    run: 'echo b1; echo b2'\n",
        ),
    );
    let (output, report) = env.submit(&file, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let job_id = report["job_id"].as_str().unwrap();
    let lines = numbered(&env.step_log(job_id, "a"));
    // Numbered 1 to 6 in the order recorded. Which of two pipes the kernel makes readable
    // first is not Maestro's to decide, so the stderr line may come anywhere among the
    // stdout lines; within a stream, the order is the step's.
    let seqs: Vec<u64> = lines.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "{lines:?}");
    let out: Vec<&str> = lines
        .iter()
        .map(|(_, text)| text.as_str())
        .filter(|text| text.starts_with("out "))
        .collect();
    assert_eq!(
        out,
        [
            "out line 1",
            "out line 2",
            "out line 3",
            "out line 4",
            "out line 5"
        ]
    );
    assert_eq!(
        lines.iter().filter(|(_, text)| text == "err oops").count(),
        1,
        "{lines:?}"
    );
    assert_eq!(numbered(&env.step_log(job_id, "b"))[0].0, 1, "per step");

    let resumed = env.run(&["logs", job_id, "--step", "a", "--since-seq", "4"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let resumed = text(&resumed.stdout);
    let shown: Vec<u64> = numbered(&resumed).into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(shown, [5, 6], "{resumed}");
    assert!(
        !resumed.contains("# maestro job_id"),
        "no header: {resumed}"
    );
    assert!(
        resumed.contains("# maestro step=a status=succeeded"),
        "the footer follows: {resumed}"
    );

    let everything = text(&env.run(&["logs", job_id]).stdout);
    assert!(everything.contains(" out line 1\n") && everything.contains(" out b2\n"));
}

#[test]
fn follow_resumes_after_a_sequence_number_while_the_job_runs() {
    let env = Env::new();
    let file = env.write(
        "follow.yaml",
        &job_yaml(
            "follow",
            "  - name: slow\n    run: 'echo one; echo two; echo three; touch started; sleep 1; echo four; echo five'\n",
        ),
    );
    let submit = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for_file(&env.path().join("started"), 30));
    let job_id = env.job_ids()[0].clone();
    let follow = env
        .mc()
        .args(["logs", &job_id, "--follow", "--since-seq", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = output_within_child(follow);
    let submitted = output_within_child(submit);
    assert!(submitted.status.success());
    let followed = text(&followed.stdout);
    let shown: Vec<String> = numbered(&followed).into_iter().map(|(_, l)| l).collect();
    assert_eq!(shown, ["out three", "out four", "out five"], "{followed}");
}

#[test]
fn output_past_the_cap_is_dropped_with_a_record_of_how_much() {
    let env = Env::new();
    let file = env.write(
        "cap.yaml",
        &job_yaml(
            "cap",
            "  - name: loud\n    run: 'i=0; while [ $i -lt 100 ]; do echo 0123456789012345678901234567890123456789012345678; i=$((i+1)); done'\n",
        ),
    );
    let (output, report) = env.submit(&file, &["--max-step-output", "1k"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let step = &report["steps"][0];
    assert_eq!(step["output_bytes"], 5000);
    assert_eq!(step["output_dropped_bytes"], 5000 - 1024, "{step}");
    let job_id = report["job_id"].as_str().unwrap();
    let log = env.step_log(job_id, "loud");
    assert!(
        log.contains("# truncated: the step's output passed the cap of 1024 bytes; the rest is not recorded\n"),
        "{log}"
    );
    assert!(
        log.contains("# truncated: 3976 bytes of output dropped after the cap of 1024 bytes\n"),
        "{log}"
    );
    let lines = numbered(&log);
    assert_eq!(
        lines.len(),
        21,
        "20 whole lines and the start of the 21st: {log}"
    );
    let logs = env.run(&["logs", job_id]);
    assert!(
        text(&logs.stderr).contains("mc: the log of step \"loud\" is truncated"),
        "{}",
        text(&logs.stderr)
    );
    let status = text(&env.run(&["status", job_id]).stdout);
    assert!(
        status.contains("log truncated: 3976 bytes of output dropped"),
        "{status}"
    );

    // The environment variable sets it too; a bad size is one usage error.
    let output = crate::util::output_within(
        env.mc().env("MAESTRO_MAX_STEP_OUTPUT", "100").args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
        ]),
        120,
    );
    let report = crate::util::parse_json(&output);
    assert_eq!(report["steps"][0]["output_dropped_bytes"], 4900);
    let bad = env.run(&[
        "submit",
        file.to_str().unwrap(),
        "--max-step-output",
        "lots",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--max-step-output lots: must be a size"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn a_gap_in_a_plugins_log_events_is_recorded_as_such() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let plugins = env.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // The Python plugin, made to skip two sequence numbers after its second event.
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/mc-executor-pyproc"),
    )
    .unwrap();
    assert!(source.contains("self.seq += 1"));
    let lossy = source.replace("self.seq += 1", "self.seq += 3 if self.seq == 1 else 1");
    let script = plugins.join("mc-executor-lossy");
    std::fs::write(&script, lossy).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = env.write(
        "gap.yaml",
        &job_yaml(
            "gap",
            "  - name: s\n    runtime: lossy\n    run: 'echo a; sleep 0.2; echo b; sleep 0.2; echo c'\n",
        ),
    );
    let output = crate::util::output_within(
        env.mc()
            .env("MAESTRO_PLUGIN_PATH", &plugins)
            .args(["submit", file.to_str().unwrap()]),
        120,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let log = env.step_log(&env.job_ids()[0], "s");
    assert!(
        log.contains("# gap: plugin lossy log events 2 to 3 of this step never arrived\n"),
        "{log}"
    );
    assert!(log.contains(" out c\n"), "{log}");
}

#[test]
fn logs_as_json_lines_or_raw_text_and_follow_ends_with_the_jobs_exit_code() {
    let env = Env::new();
    // A line longer than the 64 KiB line cap, without a newline before the next one.
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "j",
            "  - name: a\n    run: echo one\n\
             \x20 - name: e\n    run: echo two >&2\n\
             \x20 - name: b\n    run: head -c 70000 /dev/zero | tr '\\0' x; echo; exit 42\n",
        ),
    );
    let (output, json) = env.submit(&file, &["--quiet"]);
    assert_eq!(output.status.code(), Some(1));
    let job_id = json["job_id"].as_str().unwrap();

    let lines = env.run(&["logs", job_id, "--output", "json"]);
    assert!(lines.status.success());
    let objects: Vec<serde_json::Value> = text(&lines.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(objects[0]["step"], "a");
    assert_eq!(objects[0]["seq"], 1);
    assert_eq!(objects[0]["stream"], "stdout");
    assert_eq!(objects[0]["text"], "one");
    assert!(objects[0]["time"].as_str().unwrap().ends_with('Z'));
    // Each stream keeps its own order; across streams the order is the one the lines were
    // read in, so the stderr line comes from a step of its own to have a fixed place.
    assert_eq!(objects[1]["step"], "e");
    assert_eq!(objects[1]["stream"], "stderr");
    assert_eq!(objects[1]["text"], "two");
    assert_eq!(objects[2]["step"], "b");
    assert_eq!(objects[2]["continues"], true, "the cut line goes on");
    let long: String = objects[2..]
        .iter()
        .map(|o| o["text"].as_str().unwrap())
        .collect();
    assert_eq!(long, "x".repeat(70_000));

    let raw = env.run(&["logs", job_id, "--raw"]);
    assert!(raw.status.success());
    assert_eq!(
        text(&raw.stdout),
        format!("one\ntwo\n{}\n", "x".repeat(70_000)),
        "the text as the steps wrote it"
    );

    // Following a finished job ends at once, with the job's exit code.
    let followed = env.run(&["logs", job_id, "--follow", "--raw", "--step", "a"]);
    assert_eq!(
        followed.status.code(),
        Some(1),
        "{}",
        text(&followed.stderr)
    );
    let ok = env.write("ok.yaml", &job_yaml("ok", "  - name: s\n    run: 'true'\n"));
    let (_, ok_json) = env.submit(&ok, &["--quiet"]);
    let followed_ok = env.run(&["logs", ok_json["job_id"].as_str().unwrap(), "--follow"]);
    assert_eq!(followed_ok.status.code(), Some(0));
}
