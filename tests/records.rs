//! Trustworthy records: a private state root, no planted link followed, a tamper-evident audit
//! log, job histories covered by it, and `mc gc` settling every crash window.

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;

use maestro_core::state::file::JOURNAL;
use maestro_core::state::journal::reseal;

use crate::util::{
    Env, bare_job_yaml, output_within, output_within_child, parse_json, send_signal, text,
    wait_for_file,
};

/// Every file and directory under `root`, with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = vec![(root.to_path_buf(), mode(root))];
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(modes(&path));
        } else {
            found.push((path.clone(), mode(&path)));
        }
    }
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// `mc` run by a shell that set `umask` first.
fn mc_with_umask(env: &Env, umask: &str, args: &[&str]) -> Output {
    let mut shell = std::process::Command::new("sh");
    shell
        .current_dir(env.path())
        .env("MAESTRO_HOME", &env.state)
        .env("MC", crate::util::mc_bin())
        .env_remove("TRACE_ID")
        .args(["-c", &format!("umask {umask}; exec \"$MC\" \"$@\""), "sh"])
        .args(args);
    output_within(&mut shell, 120)
}

#[test]
fn the_state_root_is_private_whatever_the_umask() {
    for umask in ["000", "022", "277"] {
        let env = Env::new();
        let file = env.write(
            "j.yaml",
            &bare_job_yaml(
                "p",
                "  - name: a\n    run: echo one\n  - name: b\n    run: exit 3\n",
            ),
        );
        let output = mc_with_umask(&env, umask, &["submit", file.to_str().unwrap(), "--quiet"]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
        let gc = mc_with_umask(&env, umask, &["gc"]);
        assert!(gc.status.success(), "{}", text(&gc.stderr));
        let all = modes(&env.state);
        assert!(all.len() > 10, "{all:?}");
        for (path, mode) in all {
            let wanted = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(
                mode,
                wanted,
                "umask {umask}: {} is {mode:o}",
                path.display()
            );
        }
    }
}

/// A directory outside the state root that links are planted to point at, with a file in it.
fn outside(env: &Env) -> (PathBuf, PathBuf) {
    let dir = env.path().join("outside");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("target");
    std::fs::write(&file, "untouched\n").unwrap();
    (dir, file)
}

fn assert_untouched(dir: &Path, file: &Path) {
    assert_eq!(std::fs::read_to_string(file).unwrap(), "untouched\n");
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "something was written outside: {names:?}");
}

fn assert_refused(output: &Output, link: &Path) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing to follow the symbolic link {}",
            link.display()
        )),
        "the error must name {}: {stderr}",
        link.display()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_planted_audit_log_or_jobs_link_is_refused_never_followed() {
    let env = Env::new();
    let (dir, target) = outside(&env);
    let file = env.write(
        "j.yaml",
        &bare_job_yaml("l", "  - name: a\n    run: echo one\n"),
    );
    std::fs::create_dir_all(&env.state).unwrap();
    symlink(&target, env.state.join("audit.log")).unwrap();
    let output = env.run(&["submit", file.to_str().unwrap(), "--quiet"]);
    assert_refused(&output, &env.state.join("audit.log"));
    let verify = env.run(&["audit", "verify"]);
    assert_refused(&verify, &env.state.join("audit.log"));
    assert_untouched(&dir, &target);

    std::fs::remove_file(env.state.join("audit.log")).unwrap();
    // The refused submit stored its job before its first audit record failed.
    std::fs::remove_dir_all(env.state.join("jobs")).unwrap();
    symlink(&dir, env.state.join("jobs")).unwrap();
    let output = env.run(&["submit", file.to_str().unwrap(), "--quiet"]);
    assert_refused(&output, &env.state.join("jobs"));
    for args in [&["status"][..], &["gc"][..]] {
        assert_refused(&env.run(args), &env.state.join("jobs"));
    }
    assert_untouched(&dir, &target);
}

/// Submit a three-step job whose first step waits for `go`; call `plant(job_dir)` while it
/// waits, then let it go and return `mc`'s output.
fn plant_mid_run(env: &Env, plant: impl FnOnce(&Path)) -> (Output, String) {
    let file = env.write(
        "j.yaml",
        &bare_job_yaml(
            "m",
            "  - name: a\n    run: touch ready; while [ ! -e go ]; do sleep 0.02; done; echo a-out\n  - name: b\n    run: echo b-out\n  - name: c\n    run: echo c-out\n",
        ),
    );
    let child = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&env.path().join("ready"), 20),
        "the step never started"
    );
    let job_id = env.job_ids()[0].clone();
    plant(&env.state.join("jobs").join(&job_id));
    std::fs::write(env.path().join("go"), "").unwrap();
    (output_within_child(child), job_id)
}

#[test]
fn a_logs_directory_swapped_for_a_link_mid_run_gets_nothing() {
    let env = Env::new();
    let (dir, target) = outside(&env);
    let (output, job_id) = plant_mid_run(&env, |job| {
        std::fs::rename(job.join("logs"), job.join("logs.moved")).unwrap();
        symlink(&dir, job.join("logs")).unwrap();
    });
    let logs = env.state.join("jobs").join(&job_id).join("logs");
    assert_refused(&output, &logs);
    assert_untouched(&dir, &target);
    // The job is recorded FAILED with the reason, not left for gc.
    let status = env.status(&job_id);
    assert_eq!(status["state"], "FAILED", "{status}");
    let logs_output = env.run(&["logs", &job_id]);
    assert_refused(&logs_output, &logs);
}

#[test]
fn a_log_file_link_is_refused_never_followed() {
    let env = Env::new();
    let (dir, target) = outside(&env);
    let (output, job_id) = plant_mid_run(&env, |job| {
        symlink(&target, job.join("logs").join("b.log")).unwrap();
    });
    let link = env
        .state
        .join("jobs")
        .join(&job_id)
        .join("logs")
        .join("b.log");
    assert_refused(&output, &link);
    assert_untouched(&dir, &target);
    assert_refused(&env.run(&["logs", &job_id]), &link);
}

#[test]
fn a_lock_or_lease_link_is_refused_never_followed() {
    let env = Env::new();
    let (dir, target) = outside(&env);
    let (output, job_id) = plant_mid_run(&env, |job| {
        std::fs::rename(job.join(JOURNAL), job.join("journal.saved")).unwrap();
        symlink(&target, job.join(JOURNAL)).unwrap();
    });
    let job = env.state.join("jobs").join(&job_id);
    assert_refused(&output, &job.join(JOURNAL));
    assert_untouched(&dir, &target);
    assert_refused(&env.run(&["status", &job_id]), &job.join(JOURNAL));
    // Its history back (still RUNNING: nothing more could be recorded), and a `lease` link
    // planted (an older version's jobs have a lease file, and it is used where present).
    std::fs::remove_file(job.join(JOURNAL)).unwrap();
    std::fs::rename(job.join("journal.saved"), job.join(JOURNAL)).unwrap();
    symlink(&target, job.join("lease")).unwrap();
    assert_refused(&env.run(&["status", &job_id]), &job.join("lease"));
    assert_refused(&env.run(&["gc"]), &job.join("lease"));
    assert_untouched(&dir, &target);
}

#[test]
fn the_state_root_may_be_reached_through_a_symlinked_parent() {
    let env = Env::new();
    std::fs::create_dir_all(env.path().join("real")).unwrap();
    symlink(env.path().join("real"), env.path().join("via")).unwrap();
    let file = env.write(
        "j.yaml",
        &bare_job_yaml("v", "  - name: a\n    run: echo one\n"),
    );
    let output = env
        .mc()
        .env("MAESTRO_HOME", env.path().join("via/state"))
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(env.path().join("real/state/audit.log").exists());
}

/// `mc audit verify`: its exit code, stdout and stderr.
fn verify(env: &Env, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    let output = env.run(&args);
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

fn submit_some(env: &Env, count: usize) -> Vec<String> {
    let file = env.write(
        "j.yaml",
        &bare_job_yaml(
            "a",
            "  - name: a\n    run: echo one\n  - name: b\n    run: echo two\n",
        ),
    );
    for _ in 0..count {
        let output = env.run(&["submit", file.to_str().unwrap(), "--quiet"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    env.job_ids()
}

fn audit_lines(env: &Env) -> Vec<String> {
    std::fs::read_to_string(env.state.join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(env: &Env, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(env.state.join("audit.log"), text).unwrap();
}

#[test]
fn audit_verify_finds_each_tampering_at_its_line() {
    let env = Env::new();
    submit_some(&env, 2);
    let (code, stdout, stderr) = verify(&env, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let head = stdout.trim().to_owned();
    assert_eq!(head.len(), 64, "{stdout}");
    assert_eq!(verify(&env, &["--expect-head", &head]).0, Some(0));
    let original = audit_lines(&env);
    assert!(original.len() > 8);

    let mut edited = original.clone();
    edited[4] = edited[4].replacen("\"owner\":\"ana\"", "\"owner\":\"eve\"", 1);
    assert_ne!(edited[4], original[4]);
    write_lines(&env, &edited);
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("line 5: the record was edited"), "{stdout}");
    // The records past the edited one are still the log's: no job's history is taken for
    // one the log does not show.
    assert_eq!(stdout.matches("tampered:").count(), 1, "{stdout}");
    assert!(!stdout.contains("a crash"), "{stdout}");

    let mut removed = original.clone();
    removed.remove(4);
    write_lines(&env, &removed);
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("line 5: 1 record(s) removed"), "{stdout}");

    let mut reordered = original.clone();
    reordered.swap(4, 5);
    write_lines(&env, &reordered);
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("line 5: records are out of order"),
        "{stdout}"
    );

    let mut truncated = original.join("\n");
    truncated.truncate(truncated.len() - 20);
    std::fs::write(env.state.join("audit.log"), truncated).unwrap();
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains(&format!(
            "line {}: the last record is cut short",
            original.len()
        )),
        "{stdout}"
    );

    // Cut whole records from the end: the chain alone cannot tell (the job whose records went
    // can), the anchored head can.
    write_lines(&env, &original[..original.len() - 2]);
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(!stdout.contains("tampered: line"), "{stdout}");
    assert!(stdout.contains("the audit log does not show"), "{stdout}");
    let (code, stdout, _) = verify(&env, &["--expect-head", &head]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("is not a record of the log"), "{stdout}");

    let (code, _, stderr) = verify(&env, &["--expect-head", "nonsense"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn a_record_a_crash_cut_short_at_the_end_is_closed_by_gc() {
    let env = Env::new();
    submit_some(&env, 1);
    // What a crash mid-append leaves: part of a record that describes no history change (a
    // prune or a cancel request), no newline.
    let last = audit_lines(&env).pop().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(env.state.join("audit.log"))
        .unwrap();
    std::io::Write::write_all(&mut file, &last.as_bytes()[..last.len() / 2]).unwrap();
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("the last record is cut short"), "{stdout}");

    let output = env.run(&["gc"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("cut short by a crash"),
        "{}",
        text(&output.stdout)
    );
    let (code, stdout, stderr) = verify(&env, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("torn write") || stdout.contains("torn write"),
        "{stdout}{stderr}"
    );
    // Settled: a second gc has nothing to do.
    let output = env.run(&["gc"]);
    assert_eq!(text(&output.stdout).trim(), "nothing to collect");
}

#[test]
fn an_anchored_head_catches_a_whole_rewrite_from_the_tampered_point() {
    let env = Env::new();
    submit_some(&env, 1);
    let (_, stdout, _) = verify(&env, &[]);
    let head = stdout.trim().to_owned();
    let original = audit_lines(&env);
    // Cut the log at line 4 and let `mc` re-append after it: a chain rebuilt correctly from
    // the tampered point, as a forger who knows the format would.
    write_lines(&env, &original[..4]);
    let reject = env.write("bad.yaml", "name: [\n");
    let _ = env.run(&["submit", reject.to_str().unwrap()]);
    let (code, stdout, _) = verify(&env, &[]);
    // The job's history no longer matches what the log says of it; the chain itself is whole.
    assert_eq!(code, Some(1), "{stdout}");
    assert!(!stdout.contains("tampered: line"), "{stdout}");
    let (code, stdout, _) = verify(&env, &["--expect-head", &head]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains(&format!("the anchored head {head} is not a record")),
        "{stdout}"
    );
}

#[test]
fn audit_verify_names_a_job_whose_history_records_were_removed_or_reordered() {
    let env = Env::new();
    let ids = submit_some(&env, 1);
    let journal = env.state.join("jobs").join(&ids[0]).join(JOURNAL);
    let original = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let transitions: Vec<usize> = (0..lines.len())
        .filter(|index| lines[*index].starts_with("transition "))
        .collect();
    let steps: Vec<usize> = (0..lines.len())
        .filter(|index| lines[*index].starts_with("step "))
        .collect();
    assert_eq!((transitions.len(), steps.len()), (3, 2), "{original}");
    let removed: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != transitions[1])
        .map(|(_, line)| *line)
        .collect();
    let mut first_step_last = lines.clone();
    first_step_last.swap(steps[0], steps[1]);
    for (what, kept, message) in [
        ("removed", removed, "its transitions no longer match"),
        (
            "reordered",
            first_step_last,
            "its step results no longer match",
        ),
    ] {
        std::fs::write(&journal, format!("{}\n", kept.join("\n"))).unwrap();
        let (code, stdout, _) = verify(&env, &[]);
        assert_eq!(code, Some(1), "{what}: {stdout}");
        assert!(stdout.contains(message), "{what}: {stdout}");
    }
    std::fs::write(&journal, &original).unwrap();
    assert_eq!(verify(&env, &[]).0, Some(0));
}

#[test]
fn audit_verify_names_a_job_whose_history_was_edited() {
    let env = Env::new();
    let ids = submit_some(&env, 2);
    assert_eq!(verify(&env, &[]).0, Some(0));
    let journal = env.state.join("jobs").join(&ids[1]).join(JOURNAL);
    let original = std::fs::read_to_string(&journal).unwrap();
    // Edited as text: the record's checksum no longer matches; it is corrupt, never read.
    let edited = original.replace("SUCCEEDED", "CANCELLED");
    std::fs::write(&journal, &edited).unwrap();
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains(&format!("job {}: corrupt state file", ids[1]))
            && stdout.contains("does not match its checksum"),
        "{stdout}"
    );
    let status = env.run(&["status", &ids[1]]);
    assert!(!status.status.success(), "{}", text(&status.stdout));
    // Nor is it hidden from a listing: the others are listed, it is named, the listing fails.
    let listing = env.run(&["status"]);
    assert_eq!(listing.status.code(), Some(4), "{}", text(&listing.stderr));
    assert!(
        text(&listing.stdout).contains(&ids[0]),
        "{}",
        text(&listing.stdout)
    );
    assert!(
        text(&listing.stderr).contains(&format!("job {} is not listed", ids[1])),
        "{}",
        text(&listing.stderr)
    );
    // A page it is not on (a newer job alone) says nothing of it.
    let newer: Vec<String> = submit_some(&env, 1)
        .into_iter()
        .filter(|id| !ids.contains(id))
        .collect();
    assert_eq!(newer.len(), 1, "{newer:?}");
    let page = env.run(&["status", "--limit", "1"]);
    assert_eq!(page.status.code(), Some(0), "{}", text(&page.stderr));
    assert!(
        text(&page.stdout).contains(&newer[0]),
        "{}",
        text(&page.stdout)
    );
    // Edited by someone who knows the format (every frame recomputed): the audit log's
    // digests still tell.
    std::fs::write(&journal, reseal(edited.as_bytes())).unwrap();
    assert_eq!(env.status(&ids[1])["state"], "CANCELLED");
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains(&format!(
            "job {}: its transitions no longer match their last recorded digest",
            ids[1]
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(&ids[0]), "{stdout}");
    // gc does not bless an edited history with a recovered record; it says so, and exits as
    // `mc audit verify` does for tampering (1), not as for a system error.
    let gc = env.run(&["gc"]);
    assert!(text(&gc.stderr).contains(&ids[1]), "{}", text(&gc.stderr));
    assert!(
        text(&gc.stderr).contains("not reconciled"),
        "{}",
        text(&gc.stderr)
    );
    assert_eq!(gc.status.code(), Some(1), "{}", text(&gc.stderr));
    assert!(
        !text(&gc.stdout).contains("nothing to collect"),
        "{}",
        text(&gc.stdout)
    );
    assert_eq!(verify(&env, &[]).0, Some(1));

    // The files written once, the spec and job.json, are covered by the SUBMITTED record.
    let spec = env.state.join("jobs").join(&ids[0]).join("spec.yaml");
    let edited = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("echo one", "echo 1");
    std::fs::write(&spec, edited).unwrap();
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains(&format!(
            "job {}: spec.yaml no longer matches its recorded digest",
            ids[0]
        )),
        "{stdout}"
    );
}

#[test]
fn the_chain_holds_under_many_concurrent_submits() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &bare_job_yaml(
            "c",
            "  - name: a\n    run: echo one\n  - name: b\n    run: exit 2\n",
        ),
    );
    let children: Vec<_> = (0..24)
        .map(|_| {
            env.mc()
                .args(["submit", file.to_str().unwrap(), "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = output_within_child(child);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    }
    let (code, stdout, stderr) = verify(&env, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let records = env.audit();
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..records.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        records
            .iter()
            .filter(|r| r["event"] == "job.transition")
            .count(),
        24 * 3
    );
}

/// Jobs that are not terminal, per `mc status`.
fn unsettled(env: &Env) -> Vec<Value> {
    env.job_ids()
        .iter()
        .map(|id| env.status(id))
        .filter(|status| {
            !matches!(
                status["state"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "DENIED" | "CANCELLED")
            )
        })
        .collect()
}

fn staging_dirs(env: &Env) -> Vec<String> {
    match std::fs::read_dir(env.state.join("jobs")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".new-"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Processes whose environment names one of `job_ids`.
fn processes_of(job_ids: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let environ = String::from_utf8_lossy(&environ);
        if job_ids
            .iter()
            .any(|id| environ.contains(&format!("MAESTRO_JOB_ID={id}")))
        {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

/// After one `mc gc`: nothing unsettled, no staging directory, an audit log that matches
/// every history, no process; a second gc has nothing to do.
pub fn assert_one_gc_settles_everything(env: &Env) {
    let gc = env.run(&["gc", "--output", "json"]);
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    assert_eq!(unsettled(env), Vec::<Value>::new());
    assert_eq!(staging_dirs(env), Vec::<String>::new());
    let (code, stdout, stderr) = verify(env, &[]);
    assert_eq!(
        code,
        Some(0),
        "audit and histories disagree after gc: {stdout}{stderr}"
    );
    let ids = env.job_ids();
    // A killed sandboxed step's namespace dies with its shim, within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !processes_of(&ids).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_of(&ids), Vec::<String>::new());
    let again = parse_json(&env.run(&["gc", "--output", "json"]));
    for key in ["abandoned_jobs", "recovered", "removed", "errors"] {
        assert_eq!(again[key], serde_json::json!([]), "second gc: {again}");
    }
}

/// A small deterministic generator, so a failing run can be repeated.
pub struct Spread(u64);

impl Spread {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn sixty_kills_of_mc_submit_at_random_points_are_all_settled_by_one_gc() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &bare_job_yaml(
            "k",
            "  - name: a\n    run: echo one\n  - name: b\n    run: echo two; sleep 0.01\n  - name: c\n    run: exit 1\n  - name: d\n    run: echo skipped\n",
        ),
    );
    let mut spread = Spread::new(0x5eed_1234);
    // Batches of six at once: the kills land at every point of a submit while the test
    // stays short.
    for _ in 0..10 {
        let children: Vec<_> = (0..6)
            .map(|_| {
                let child = env
                    .mc()
                    .args(["submit", file.to_str().unwrap(), "--quiet"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                (child, Duration::from_micros(spread.below(50_000)))
            })
            .collect();
        let started = std::time::Instant::now();
        let mut children = children;
        children.sort_by_key(|(_, at)| *at);
        for (child, at) in &mut children {
            if let Some(wait) = at.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            if child.try_wait().unwrap().is_none() {
                send_signal(child.id(), Signal::KILL);
            }
        }
        for (mut child, _) in children {
            child.wait().unwrap();
        }
    }
    assert_one_gc_settles_everything(&env);
}

/// What no crash leaves is neither blessed by gc nor passed by verify: an audit log removed
/// (every job's history unaudited), a job directory copied under another id (gc would record
/// the original's history again at every run), a job directory removed by hand.
#[test]
fn gc_and_verify_tell_a_removed_log_or_a_copied_or_removed_job_from_a_crash() {
    let env = Env::new();
    let ids = submit_some(&env, 2);
    let log = env.state.join("audit.log");
    let original = std::fs::read(&log).unwrap();

    std::fs::remove_file(&log).unwrap();
    let gc = env.run(&["gc"]);
    let stderr = text(&gc.stderr);
    assert_eq!(gc.status.code(), Some(1), "{stderr}");
    for id in &ids {
        assert!(
            stderr.contains(&format!("job {id}: the audit log has none of its history")),
            "{stderr}"
        );
    }
    assert!(
        !text(&gc.stdout).contains("recovered"),
        "{}",
        text(&gc.stdout)
    );
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("which no crash leaves"), "{stdout}");
    std::fs::write(&log, &original).unwrap();
    assert_eq!(verify(&env, &[]).0, Some(0));

    let copy = "01a233f9-ffff-7000-8000-000000000001";
    let jobs = env.state.join("jobs");
    let status = Command::new("cp")
        .arg("-a")
        .arg(jobs.join(&ids[0]))
        .arg(jobs.join(copy))
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..2 {
        let gc = env.run(&["gc"]);
        let stderr = text(&gc.stderr);
        assert_eq!(gc.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "it is the record of job {}, not of job {copy}",
                ids[0]
            )),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read(&log).unwrap(), original, "gc wrote nothing");
    assert_eq!(verify(&env, &[]).0, Some(1));
    std::fs::remove_dir_all(jobs.join(copy)).unwrap();

    std::fs::remove_dir_all(jobs.join(&ids[1])).unwrap();
    let (code, stdout, _) = verify(&env, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "job {}: the audit log records its history (last at line",
            ids[1]
        )) && stdout.contains("removed by hand"),
        "{stdout}"
    );
}

#[test]
fn gc_leaves_a_record_that_does_not_check_out_and_exits_as_verify_does() {
    let env = Env::new();
    let ids = submit_some(&env, 1);
    let journal = env.state.join("jobs").join(&ids[0]).join("history.journal");
    let edited = std::fs::read_to_string(&journal)
        .unwrap()
        .replacen("RUNNING", "RUNNINH", 1);
    std::fs::write(&journal, edited).unwrap();
    let gc = env.run(&["gc"]);
    let stderr = text(&gc.stderr);
    assert_eq!(gc.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&ids[0]) && stderr.contains("not reconciled"),
        "{stderr}"
    );
    assert_eq!(verify(&env, &[]).0, Some(1));
}
