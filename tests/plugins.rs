//! Executor plugins through the real `mc`: discovery, failures of every kind, cancel, trace ids, ssh.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use maestro_test_support::{Sshd, cmdlines_holding, output_within, wait_within};

use crate::util::{Env, job_id, job_yaml, parse_json, pid_alive, send_signal, text, wait_for_file};

/// How long any one `mc` run of these tests may take before it is killed and the test fails.
const MC_DEADLINE: Duration = Duration::from_secs(60);

/// Wait for `child` (spawned with piped stdout and stderr) and collect its output, but at most
/// until [`MC_DEADLINE`]: a hang fails the test instead of freezing the suite.
fn wait_with_deadline(child: Child) -> Output {
    wait_within(child, MC_DEADLINE)
}

/// Run `command` (an `mc` invocation) like `Command::output`, with [`MC_DEADLINE`].
fn output_within_deadline(command: &mut Command) -> Output {
    output_within(command, MC_DEADLINE)
}

/// The Python plugin written without the SDK, shipped in `plugins/`.
fn pyproc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/mc-executor-pyproc")
}

/// A directory of plugins for one test, passed to `mc` as `MAESTRO_PLUGIN_PATH`.
struct Plugins {
    dir: PathBuf,
}

impl Plugins {
    fn new(env: &Env) -> Self {
        let dir = env.path().join("plugins");
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// Install an executable `mc-executor-<name>` with `content`.
    fn script(&self, name: &str, content: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(format!("mc-executor-{name}"));
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Install the Python plugin as runtime `name`, recording its pid in `<dir>/<name>.pid`.
    fn pyproc(&self, name: &str) {
        self.script(
            name,
            &format!(
                "#!/bin/sh\necho $$ > '{}/{name}.pid'\nexec python3 '{}'\n",
                self.dir.display(),
                pyproc().display()
            ),
        );
    }

    fn mc(&self, env: &Env) -> Command {
        let mut command = env.mc();
        command.env("MAESTRO_PLUGIN_PATH", &self.dir);
        command
    }

    fn submit(&self, env: &Env, file: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
        let output = output_within_deadline(
            self.mc(env)
                .args([
                    "submit",
                    file.to_str().unwrap(),
                    "--output",
                    "json",
                    "--quiet",
                ])
                .args(extra),
        );
        let json = parse_json(&output);
        (output, json)
    }
}

/// A plugin in Python that does the handshake and then misbehaves as `on_start` says.
fn python_plugin(versions: &str, on_start: &str) -> String {
    format!(
        r#"#!/usr/bin/env python3
import json, os, sys, time
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
send({{"type": "hello", "protocol": "maestro-executor", "versions": {versions}, "plugin": "t", "version": "0"}})
sys.stdin.readline()
for line in sys.stdin:
    req = json.loads(line)
    if req["type"] == "describe":
        send({{"type": "described", "id": req["id"], "name": "t"}})
    elif req["type"] == "ping":
        send({{"type": "pong", "id": req["id"]}})
    elif req["type"] == "start":
        send({{"type": "started", "id": req["id"], "task": req["task"]}})
        send({{"type": "log", "task": req["task"], "seq": 0, "stream": "stdout", "text": "working"}})
{on_start}
    else:
        send({{"type": "ok", "id": req.get("id")}})
"#
    )
}

#[test]
fn a_job_mixes_local_and_plugin_steps() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    plugins.pyproc("pyproc");
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "mixed",
            "  - name: here\n    run: echo local > made.txt\n\
             \x20 - name: there\n    runtime: pyproc\n    run: cat made.txt; echo plugin >> made.txt; echo to-err >&2\n\
             \x20 - name: back\n    run: cat made.txt\n",
        ),
    );
    let (output, json) = plugins.submit(&env, &file, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(json["state"], "SUCCEEDED");
    assert_eq!(json["steps"][1]["runtime"], "pyproc");
    // The plugin's task left nothing behind, as it reported: the host saw its group empty (or
    // the task ended before the host could check the group, and the plugin's word stands).
    let teardown = &json["steps"][1]["teardown"];
    assert_eq!(teardown["verified"], true, "{json}");
    assert!(
        ["process_group", "plugin_reported"].contains(&teardown["method"].as_str().unwrap()),
        "{json}"
    );
    let there = env.step_log(job_id(&json), "there");
    assert!(there.contains(" out local\n"), "{there}");
    assert!(there.contains(" err to-err\n"), "{there}");
    assert!(
        env.step_log(job_id(&json), "back")
            .contains(" out plugin\n")
    );
}

#[test]
fn the_trace_id_reaches_the_plugin_task_environment() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    plugins.pyproc("pyproc");
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "trace",
            "  - name: t\n    runtime: pyproc\n    command: [sh, -c, 'echo trace=$TRACE_ID']\n",
        ),
    );
    let (output, json) = plugins.submit(&env, &file, &["--trace-id", "trace-plugin-42"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(json["trace_id"], "trace-plugin-42");
    let log = env.step_log(job_id(&json), "t");
    assert!(log.contains(" out trace=trace-plugin-42\n"), "{log}");
}

#[test]
fn a_missing_plugin_is_a_spec_error_before_anything_runs() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "missing",
            "  - name: first\n    run: touch ran.txt\n  - name: s\n    runtime: nosuchplugin\n    run: 'true'\n",
        ),
    );
    let output = output_within_deadline(plugins.mc(&env).args([
        "submit",
        file.to_str().unwrap(),
        "--quiet",
    ]));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("nosuchplugin"), "{stderr}");
    assert!(stderr.contains("mc-executor-"), "{stderr}");
    assert!(!env.path().join("ran.txt").exists(), "nothing may run");
}

#[test]
fn a_plugin_speaking_the_wrong_protocol_version_is_rejected_clearly() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    plugins.script("future", &python_plugin("[99]", ""));
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "future",
            "  - name: s\n    runtime: future\n    run: 'true'\n",
        ),
    );
    let (output, json) = plugins.submit(&env, &file, &[]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    let everything = format!("{json} {}", text(&output.stderr));
    assert!(
        everything.contains("protocol versions [99]"),
        "{everything}"
    );
    assert!(everything.contains("future"), "{everything}");
}

#[test]
fn a_plugin_that_crashes_mid_step_fails_the_step_naming_the_plugin() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    plugins.script(
        "crashy",
        &python_plugin(
            "[1]",
            "        sys.stderr.write('crashy: out of luck\\n'); sys.stderr.flush(); os._exit(3)",
        ),
    );
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "crash",
            "  - name: s\n    runtime: crashy\n    run: 'true'\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = plugins.submit(&env, &file, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(json["state"], "FAILED");
    let error = json["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("crashy"), "{json}");
    assert!(error.contains("out of luck"), "{json}");
    assert!(env.step_log(job_id(&json), "s").contains(" out working\n"));
}

#[test]
fn a_plugin_that_hangs_is_killed_after_the_timeout_and_grace() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    plugins.script(
        "hangs",
        &python_plugin(
            "[1]",
            &format!(
                "        open('{}/hangs.pid', 'w').write(str(os.getpid()))\n        time.sleep(3600)",
                env.path().display()
            ),
        ),
    );
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "hang",
            "  - name: s\n    runtime: hangs\n    timeout_seconds: 1\n    run: 'true'\n",
        ),
    );
    let started = Instant::now();
    let (output, json) = plugins.submit(&env, &file, &["--stop-grace", "0.5"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(json["state"], "FAILED");
    // Recorded like a local step killed after its timeout and grace period.
    assert_eq!(json["steps"][0]["status"], "timed_out", "{json}");
    assert_eq!(json["steps"][0]["timed_out"], true, "{json}");
    assert_eq!(json["steps"][0]["signal"], 9, "{json}");
    let log = env.step_log(job_id(&json), "s");
    assert!(
        log.contains("plugin hangs did not end the step"),
        "the step log must say what happened: {log}"
    );
    let pid: i32 = std::fs::read_to_string(env.path().join("hangs.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!pid_alive(pid), "the hung plugin must be killed");
}

#[test]
fn process_groups_a_plugin_did_not_create_are_never_signalled() {
    use std::os::unix::process::CommandExt;
    // Leads its own group, as a task would, but is the test's: only the host's check of who
    // created it can save it when the host kills the hung plugin "and its tasks".
    let mut bystander = Command::new("sleep")
        .arg("120")
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let bystander_pid = i32::try_from(bystander.id()).unwrap();
    for pgid in [-999_999, 1, bystander_pid] {
        let env = Env::new();
        let plugins = Plugins::new(&env);
        let script = python_plugin("[1]", "        time.sleep(3600)");
        let started = r#"send({"type": "started", "id": req["id"], "task": req["task"]})"#;
        assert!(script.contains(started));
        plugins.script(
            "liar",
            &script.replace(
                started,
                &format!(
                    r#"send({{"type": "started", "id": req["id"], "task": req["task"], "pgid": {pgid}}})"#
                ),
            ),
        );
        let file = env.write(
            "j.yaml",
            &job_yaml(
                "liar",
                "  - name: s\n    runtime: liar\n    timeout_seconds: 1\n    run: 'true'\n",
            ),
        );
        let (output, json) = plugins.submit(&env, &file, &["--stop-grace", "0.5"]);
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("panicked"), "pgid {pgid}: {stderr}");
        assert_eq!(output.status.code(), Some(1), "pgid {pgid}: {stderr}");
        assert_eq!(
            json["steps"][0]["status"], "timed_out",
            "pgid {pgid}: {json}"
        );
        assert!(
            stderr.contains(&format!("reported process group {pgid}")),
            "pgid {pgid}: the host must say it ignored the pgid: {stderr}"
        );
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "pgid {pgid}: mc killed an unrelated process group"
        );
    }
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn ctrl_c_during_a_plugin_step_stops_the_task_and_cancels_the_job() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    plugins.pyproc("pyproc");
    let task_pid = env.path().join("task.pid");
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "cancel",
            &format!(
                "  - name: long\n    runtime: pyproc\n    run: echo $$ > {}; exec sleep 300\n",
                task_pid.display()
            ),
        ),
    );
    let child: Child = plugins
        .mc(&env)
        .args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = wait_for_pid(&task_pid, "the plugin task never started");
    let plugin_pid: i32 = std::fs::read_to_string(plugins.dir.join("pyproc.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    send_signal(child.id(), rustix::process::Signal::INT);
    let output = wait_with_deadline(child);
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let json = parse_json(&output);
    assert_eq!(json["state"], "CANCELLED");
    let deadline = Instant::now() + Duration::from_secs(5);
    while (pid_alive(pid) || pid_alive(plugin_pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_alive(pid),
        "the plugin's task {pid} outlived the cancel"
    );
    assert!(
        !pid_alive(plugin_pid),
        "the plugin {plugin_pid} outlived the job"
    );
}

#[test]
fn plugins_list_and_check_through_mc() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    plugins.pyproc("pyproc");
    plugins.script("local", "#!/bin/sh\nexit 0\n");
    let list = output_within_deadline(
        plugins
            .mc(&env)
            .args(["plugins", "list", "--output", "json"]),
    );
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed = parse_json(&list);
    let listed = listed.as_array().unwrap();
    let py = listed.iter().find(|c| c["name"] == "pyproc").unwrap();
    assert_eq!(py["active"], true);
    assert_eq!(py["protocol_versions"], serde_json::json!([1]));
    let local = listed.iter().find(|c| c["name"] == "local").unwrap();
    assert_eq!(local["active"], false);
    assert!(
        local["warnings"].to_string().contains("built-in"),
        "{local}"
    );

    // The kit runs ~31 checks (10 MB of output among them): more than one `mc` run's deadline
    // on a loaded machine.
    let kit_deadline = Duration::from_secs(300);
    let check = output_within(
        plugins.mc(&env).args(["plugins", "check", "pyproc"]),
        kit_deadline,
    );
    let report = text(&check.stdout);
    assert!(check.status.success(), "{report}{}", text(&check.stderr));
    assert!(report.contains("PASS 10 MB of output"), "{report}");
    assert!(report.contains(" passed, 0 failed"), "{report}");

    let check = output_within(
        plugins
            .mc(&env)
            .args(["plugins", "check", "pyproc", "--output", "json"]),
        kit_deadline,
    );
    assert!(check.status.success(), "{}", text(&check.stderr));
    let report = parse_json(&check);
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["checks_failed"], 0, "{report}");
    assert_eq!(report["document"], "docs/plugin-protocol.md", "{report}");
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.len() >= 29, "{report}");
    assert!(
        checks
            .iter()
            .all(|c| c["passed"] == true
                && c["section"].as_str().is_some_and(|s| s.starts_with('§'))),
        "{report}"
    );
}

/// Mutants of the Python plugin, each breaking one rule of `docs/plugin-protocol.md` (see its
/// docstring in `tests/fixtures/plugins/mutants/`), and the check of that rule.
const MUTANTS: &[(&str, &str)] = &[
    ("whole-lines", "long lines in 64 KiB pieces"),
    ("unmarked-pieces", "long lines in 64 KiB pieces"),
    ("refuses-validate", "validate"),
    ("silent-validate", "validate"),
    ("destroy-keeps-running", "destroy"),
    ("destroy-unknown-error", "destroy"),
    ("leaves-leftovers", "nothing left after exit"),
    ("waits-for-daemon", "output held open by a daemon"),
    ("signal-as-code", "exit by signal"),
    ("code-as-signal", "exit by signal"),
    ("no-unsupported", "unsupported request"),
    ("reason-from-code", "stop signal and reason"),
    ("sigterm-only", "stop signal and reason"),
    ("no-escalation-at-eof", "end of input"),
    ("accepts-any-version", "unknown protocol version"),
    ("silent-on-malformed", "malformed line"),
    ("strict-fields", "unknown fields ignored"),
    ("ignores-workspace", "env and workdir"),
    ("runs-anywhere", "workdir that does not exist"),
    ("secret-on-stderr", "secrets stay in the environment"),
    ("cannot-run-exit-0", "start that cannot run"),
    ("prints-on-stdout", "clean protocol stream"),
    ("bare-env", "env and workdir"),
    ("kill-at-once", "stop signal and reason"),
    ("late-stop-reply", "stop escalation (task ignores SIGTERM)"),
    ("inherited-stdin", "task stdin"),
    ("drops-an-exit", "ordering rules"),
];

/// The kit is only worth its PASS if it fails broken plugins: every mutant fails the check of the
/// rule it breaks, and `--output json` names what was expected, what arrived and the section.
/// (Other checks may fail too: only the named one is asserted, as timing checks of a loaded
/// machine are not the point here.) Three at a time, to keep a 2-core machine usable.
#[test]
fn the_conformance_kit_fails_every_mutant_on_the_rule_it_breaks() {
    let env = Env::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins/mutants");
    let mut wrong = Vec::new();
    for batch in MUTANTS.chunks(3) {
        let children: Vec<(&str, &str, Child)> = batch
            .iter()
            .map(|(mutant, check)| {
                let child = env
                    .mc()
                    .args(["plugins", "check", "--output", "json"])
                    .arg(dir.join(format!("mc-executor-{mutant}")))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (*mutant, *check, child)
            })
            .collect();
        for (mutant, check, child) in children {
            let output = wait_within(child, Duration::from_secs(300));
            assert_eq!(
                output.status.code(),
                Some(1),
                "mutant {mutant}: {}",
                text(&output.stderr)
            );
            let report = parse_json(&output);
            assert_eq!(report["passed"], false, "{report}");
            let checks = report["checks"].as_array().unwrap();
            let named = checks
                .iter()
                .find(|c| c["name"] == check)
                .unwrap_or_else(|| panic!("no check named {check:?} in {report}"));
            if named["passed"] != false {
                let failed: Vec<&serde_json::Value> =
                    checks.iter().filter(|c| c["passed"] == false).collect();
                wrong.push(format!(
                    "mutant {mutant} passed {check:?}; it failed {failed:?}"
                ));
                continue;
            }
            for field in ["expected", "detail", "section"] {
                assert!(
                    named[field].as_str().is_some_and(|v| !v.is_empty()),
                    "mutant {mutant}: check {check:?} has no {field}: {named}"
                );
            }
            assert!(
                named["section"].as_str().unwrap().starts_with('§'),
                "{named}"
            );
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A failed check in the text report says what was expected, what arrived and where the rule is.
#[test]
fn a_failed_check_says_what_was_expected_what_arrived_and_where() {
    let env = Env::new();
    let mutant = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plugins/mutants/mc-executor-signal-as-code");
    let output = output_within(
        env.mc().args(["plugins", "check"]).arg(&mutant),
        Duration::from_secs(300),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let report = text(&output.stdout);
    assert!(
        report.contains(
            "FAIL exit by signal: a task killed by signal 15 was reported as Completed code Some(143) signal None, expected completed with signal 15 and code null\n  \
             expected: a task killed by signal n is reported with signal n and code null; one that exits 143 with code 143 and signal null\n  \
             arrived:  a task killed by signal 15 was reported as Completed code Some(143) signal None, expected completed with signal 15 and code null\n  \
             see:      docs/plugin-protocol.md, §4.3 start (exit fields)\n"
        ),
        "{report}"
    );
    assert!(report.contains("PASS echo: "), "{report}");
}

/// The ssh plugin's binary, built from the current sources (never a stale copy): `cargo build`
/// of the package into the target directory and profile `mc` itself was built in, so it lands
/// next to `mc` (a no-op taking well under a second when it is up to date). Built once per run.
fn ssh_plugin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mc = Path::new(crate::util::mc_bin());
            let profile_dir = mc.parent().expect("mc lives in a profile directory");
            let target_dir = profile_dir
                .parent()
                .expect("and that in a target directory");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(other) => other,
            };
            let mut build = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "mc-executor-ssh",
                    "--profile",
                    profile,
                ])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdin(Stdio::null())
                .spawn()
                .expect("run cargo to build mc-executor-ssh");
            let deadline = Instant::now() + Duration::from_secs(600);
            let status = loop {
                if let Some(status) = build.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() >= deadline {
                    let _ = build.kill();
                    let _ = build.wait();
                    panic!("building mc-executor-ssh took more than 600 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(status.success(), "cannot build mc-executor-ssh");
            let plugin = mc.with_file_name("mc-executor-ssh");
            assert!(plugin.exists(), "cargo did not put {}", plugin.display());
            plugin
        })
        .clone()
}

#[test]
fn the_ssh_plugin_runs_a_step_on_a_real_sshd() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    std::fs::copy(ssh_plugin(), plugins.dir.join("mc-executor-ssh")).unwrap();
    let sshd = Sshd::start_in(&env.path().join("sshd"));
    let user = text(&Command::new("id").arg("-un").output().unwrap().stdout);
    let secret =
        format!("mc-secret-{}-{}", std::process::id(), env.path().display()).replace('/', "-");
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "ssh",
            &format!(
                "  - name: remote\n    runtime: ssh\n    workdir: {d}\n    env: {{ GREETING: \"it's $HOME\", TOKEN: \"{secret}\" }}\n    \
                 with: {{ host: 127.0.0.1, port: {port}, user: {user}, identity_file: {d}/user_key, known_hosts: {d}/known_hosts }}\n    \
                 run: echo \"$GREETING|$TRACE_ID|$(pwd)\"; printf '%s' \"$TOKEN\" > seen.txt; sleep 1\n\
                 \x20 - name: local\n    run: echo back home\n",
                d = sshd.dir().display(),
                port = sshd.port(),
                user = user.trim(),
            ),
        ),
    );
    // Watch every process's command line (mc, the plugin, ssh, sshd's session, the remote shells)
    // for the secret for as long as the job runs.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scanner = {
        let done = std::sync::Arc::clone(&done);
        let needle = secret.clone().into_bytes();
        std::thread::spawn(move || {
            let mut scans = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let found = cmdlines_holding(&needle);
                if !found.is_empty() {
                    return Err(found);
                }
                scans += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(scans)
        })
    };
    let (output, json) = plugins.submit(&env, &file, &["--trace-id", "trace-ssh-1"]);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let scans = scanner
        .join()
        .unwrap()
        .unwrap_or_else(|found| panic!("the secret is in a command line: {found:?}"));
    assert!(output.status.success(), "{}\n{json}", text(&output.stderr));
    assert!(scans > 10, "only {scans} scans while the job ran");
    let log = env.step_log(job_id(&json), "remote");
    assert!(
        log.contains(&format!(
            " out it's $HOME|trace-ssh-1|{}\n",
            sshd.dir().display()
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(sshd.path("seen.txt")).unwrap(),
        secret,
        "the remote step must see the value"
    );
}

/// A plugin that announces the `contained` capability has its steps treated as contained by
/// policy: a command that cannot be analysed is allowed there (with a note), and denied in a
/// plugin's steps that does not announce it. `mc validate` runs nothing of the job.
#[test]
fn only_plugins_that_announce_containment_get_unreadable_commands_allowed() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    let hello = |capabilities: &str| {
        format!(
            "#!/bin/sh\necho '{{\"type\":\"hello\",\"protocol\":\"maestro-executor\",\"versions\":[1],\"plugin\":\"t\",\"version\":\"0\",\"capabilities\":{capabilities}}}'\ncat > /dev/null\n"
        )
    };
    plugins.script("boxed", &hello(r#"["shell","contained"]"#));
    plugins.script("bare", &hello(r#"["shell"]"#));
    for (runtime, allowed) in [("boxed", true), ("bare", false)] {
        let file = env.write(
            &format!("{runtime}.yaml"),
            &job_yaml(
                runtime,
                &format!("  - name: s\n    runtime: {runtime}\n    run: $(echo rm) -rf /\n"),
            ),
        );
        let output = output_within_deadline(plugins.mc(&env).args([
            "validate",
            file.to_str().unwrap(),
            "--output",
            "json",
        ]));
        let json = parse_json(&output);
        let verdict = &json["policies"][1];
        assert_eq!(verdict["policy"], "no-destruction");
        assert_eq!(verdict["allowed"], allowed, "{runtime}: {json}");
        assert_eq!(output.status.code(), Some(if allowed { 0 } else { 3 }));
        if allowed {
            assert!(
                verdict["notes"][0]
                    .as_str()
                    .is_some_and(|n| n.contains("container")),
                "{json}"
            );
        } else {
            assert!(
                verdict["reasons"][0]
                    .as_str()
                    .is_some_and(|r| r.contains("not")),
                "{json}"
            );
        }
    }
    // A literal destruction is denied whatever the plugin says of itself.
    let file = env.write(
        "literal.yaml",
        &job_yaml("l", "  - name: s\n    runtime: boxed\n    run: rm -rf /\n"),
    );
    let output =
        output_within_deadline(plugins.mc(&env).args(["validate", file.to_str().unwrap()]));
    assert_eq!(output.status.code(), Some(3));
    assert!(env.job_ids().is_empty(), "validate stored a job");
}

#[test]
fn validate_asks_the_plugin_so_submit_never_rejects_what_validate_allowed() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    std::fs::copy(ssh_plugin(), plugins.dir.join("mc-executor-ssh")).unwrap();
    // The SSH plugin needs a host: its own validate says so.
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "ssh",
            "  - name: remote\n    runtime: ssh\n    with: { port: 22 }\n    run: 'true'\n",
        ),
    );
    let validated =
        output_within_deadline(plugins.mc(&env).args(["validate", file.to_str().unwrap()]));
    assert_eq!(
        validated.status.code(),
        Some(2),
        "{}",
        text(&validated.stderr)
    );
    assert!(
        text(&validated.stderr).contains("plugin ssh rejects its settings"),
        "{}",
        text(&validated.stderr)
    );
    let submitted = output_within_deadline(plugins.mc(&env).args([
        "submit",
        file.to_str().unwrap(),
        "--quiet",
    ]));
    assert_eq!(
        submitted.status.code(),
        Some(2),
        "{}",
        text(&submitted.stderr)
    );
    assert!(env.job_ids().is_empty(), "an invalid spec is not stored");
}

/// Install `mc-executor-<name>` as a shell script that records each start in `<dir>/<name>.starts`
/// and its pid in `<dir>/<name>.pid`, then runs `python3 -c <main>`.
fn counted_python(plugins: &Plugins, name: &str, main: &str) -> PathBuf {
    let dir = plugins.dir.display();
    plugins.script(
        name,
        &format!(
            "#!/bin/sh\necho started >> '{dir}/{name}.starts'\necho $$ > '{dir}/{name}.pid'\nexec python3 -c '{main}'\n"
        ),
    );
    plugins.dir.join(format!("{name}.starts"))
}

fn starts(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .count()
}

/// §3 promises one 10 s hello deadline per command: a plugin that never says hello is started
/// once by `mc submit` (admission's probe; its validation and `prepare` fail at once with the
/// probe's error) and once by `mc validate`, not three and two times.
#[test]
fn a_plugin_that_never_says_hello_is_started_once_per_command() {
    let submit_env = Env::new();
    let validate_env = Env::new();
    let mut runs = Vec::new();
    for (env, command) in [(&submit_env, "submit"), (&validate_env, "validate")] {
        let plugins = Plugins::new(env);
        let starts_file = counted_python(&plugins, "mute", "import time; time.sleep(3600)");
        let file = env.write(
            "j.yaml",
            &job_yaml("mute", "  - name: s\n    runtime: mute\n    run: 'true'\n"),
        );
        let child = plugins
            .mc(env)
            .args([command, file.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        runs.push((command, starts_file, Instant::now(), child));
    }
    for (command, starts_file, began, child) in runs {
        let output = wait_with_deadline(child);
        let took = began.elapsed();
        let stderr = text(&output.stderr);
        assert_eq!(
            starts(&starts_file),
            1,
            "mc {command} started the plugin again: {stderr}"
        );
        assert!(
            took < Duration::from_secs(18),
            "mc {command} took {took:?}: more than one hello deadline\n{stderr}"
        );
        if command == "submit" {
            assert_eq!(output.status.code(), Some(4), "{stderr}");
            assert!(stderr.contains("sent no hello within 10000 ms"), "{stderr}");
        }
    }
}

/// A plugin announcing `validate` that never answers it costs one 10 s reply deadline: the
/// job then fails at `prepare` with that error, the plugin not started a third time.
#[test]
fn a_plugin_that_never_answers_validate_is_waited_for_once() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    let main = r#"
import json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
send({"type": "hello", "protocol": "maestro-executor", "versions": [1], "plugin": "quiet", "version": "0", "capabilities": ["validate"]})
sys.stdin.readline()
for line in sys.stdin:
    req = json.loads(line)
    if req["type"] == "describe":
        send({"type": "described", "id": req["id"], "name": "quiet"})
"#;
    let starts_file = counted_python(&plugins, "quiet", main);
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "quiet",
            "  - name: s\n    runtime: quiet\n    run: 'true'\n",
        ),
    );
    let began = Instant::now();
    let (output, json) = plugins.submit(&env, &file, &[]);
    let took = began.elapsed();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        format!("{json} {stderr}").contains("did not answer a validate request within 10000 ms"),
        "{json} {stderr}"
    );
    assert!(
        took < Duration::from_secs(18),
        "took {took:?}: two validate deadlines"
    );
    // Admission's probe of its hello, then its validation.
    assert_eq!(starts(&starts_file), 2, "{stderr}");
}

/// Ctrl-C while `mc submit` (or `mc validate`) waits for a plugin before the job is stored:
/// a prompt exit 130, no job stored, and the plugin killed.
#[test]
fn ctrl_c_while_admission_waits_for_a_plugin_stores_nothing_and_kills_it() {
    for command in ["submit", "validate"] {
        let env = Env::new();
        let plugins = Plugins::new(&env);
        counted_python(&plugins, "sleepy", "import time; time.sleep(3600)");
        let file = env.write(
            "j.yaml",
            &job_yaml(
                "sleepy",
                "  - name: s\n    runtime: sleepy\n    run: 'true'\n",
            ),
        );
        let child = plugins
            .mc(&env)
            .args([command, file.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let plugin_pid = wait_for_pid(
            &plugins.dir.join("sleepy.pid"),
            &format!("mc {command}: the plugin never started"),
        );
        // Well inside the hello deadline: mc is waiting for the plugin.
        std::thread::sleep(Duration::from_millis(500));
        let signalled = Instant::now();
        send_signal(child.id(), rustix::process::Signal::INT);
        let output = wait_with_deadline(child);
        let took = signalled.elapsed();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "mc {command}: {stderr}");
        assert!(
            took < Duration::from_secs(4),
            "mc {command} exited {took:?} after SIGINT"
        );
        assert!(
            env.job_ids().is_empty(),
            "mc {command} stored a job after Ctrl-C: {:?}",
            env.job_ids()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(plugin_pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if pid_alive(plugin_pid) {
            send_signal(
                u32::try_from(plugin_pid).unwrap(),
                rustix::process::Signal::KILL,
            );
            panic!("mc {command}: the plugin {plugin_pid} outlived mc");
        }
    }
}

/// Rule 3 of §4.3: one exit per task, nothing after it. The host keeps the first exit and says
/// what it ignored.
#[test]
fn a_second_exit_and_a_log_after_exit_are_ignored_with_a_warning() {
    let env = Env::new();
    let plugins = Plugins::new(&env);
    plugins.script(
        "chatty",
        &python_plugin(
            "[1]",
            r#"        send({"type": "exit", "task": req["task"], "code": 0, "signal": None, "reason": "completed"})
        send({"type": "log", "task": req["task"], "seq": 1, "stream": "stdout", "text": "too late"})
        send({"type": "exit", "task": req["task"], "code": 3, "signal": None, "reason": "completed"})"#,
        ),
    );
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "chatty",
            "  - name: s\n    runtime: chatty\n    run: 'true'\n",
        ),
    );
    let (output, json) = plugins.submit(&env, &file, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(json["steps"][0]["exit_code"], 0, "{json}");
    assert!(
        stderr.contains("sent a log event for task") && stderr.contains("after its exit event"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sent a second exit event for task"),
        "{stderr}"
    );
    assert!(!env.step_log(job_id(&json), "s").contains("too late"));
}

/// The pid a process writes to `file` once it runs (within 20 s, else `never` is the failure),
/// read whole: the writer may not have finished the line when the file appears.
fn wait_for_pid(file: &std::path::Path, never: &str) -> i32 {
    assert!(wait_for_file(file, 20), "{never}");
    loop {
        if let Ok(pid) = std::fs::read_to_string(file).unwrap().trim().parse() {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
