//! Secrets through the real `mc`: delivered to local, Docker and plugin steps, never recorded,
//! masked wherever output is shown; the clean environment of local steps; TRACEPARENT.

use std::path::Path;
use std::process::Output;

use maestro_test_support::docker::{IMAGE, ensure_image, remove_labelled};

use crate::util::{Env, job_yaml, parse_json, text};

/// A value with characters that percent-encoding and both base64 alphabets change.
const TOKEN: &str = "s3cr3t/T0ken+with spaces&more?=";
/// A multi-line value, read from a file.
const KEY: &str =
    "-----BEGIN TEST KEY-----\nline-alpha-11112222\nline-beta-33334444\n-----END TEST KEY-----";

fn base64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every form of the test's secrets that must never be found anywhere.
fn forbidden() -> Vec<String> {
    let mut all = Vec::new();
    for value in [TOKEN, KEY] {
        all.push(value.to_owned());
        all.push(base64(value.as_bytes(), false));
        all.push(base64(value.as_bytes(), true));
        all.push(
            base64(value.as_bytes(), false)
                .trim_end_matches('=')
                .to_owned(),
        );
        all.push(percent(value));
    }
    all.extend(KEY.lines().map(str::to_owned));
    all.push(base64(b"line-alpha-11112222", false));
    // Parts a leak would show even when cut.
    all.push("T0ken+with".to_owned());
    all.push("line-alpha".to_owned());
    all
}

/// Fail if any byte of the state root (every file, whatever its name) or of `outputs` holds a
/// form of a secret.
fn assert_nothing_leaked(env: &Env, outputs: &[(&str, &[u8])]) {
    let forbidden = forbidden();
    let mut files = Vec::new();
    let mut pending = vec![env.state.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("audit.log")),
        "the state root has an audit log: {files:?}"
    );
    let mut haystacks: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (f.display().to_string(), std::fs::read(f).unwrap()))
        .collect();
    haystacks.extend(outputs.iter().map(|(n, b)| ((*n).to_owned(), b.to_vec())));
    for (name, bytes) in &haystacks {
        for needle in &forbidden {
            assert!(
                !bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes()),
                "{needle:?} found in {name}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

/// The job of these tests: `TOKEN` from the caller's environment, `KEY` (multi-line) from a
/// file; the step checks it received both, then leaks them every way the masking covers.
fn secret_job(env: &Env, name: &str, header: &str, script: &str) -> std::path::PathBuf {
    env.write("expected-token", TOKEN);
    env.write("key-file", &format!("{KEY}\n"));
    let key_file = env.path().join("key-file");
    let indented: String = script.lines().map(|l| format!("      {l}\n")).collect();
    let yaml = job_yaml(
        name,
        &format!(
            "  - name: leak\n    secrets: [TOKEN, KEY]\n    run: |\n{indented}  - name: nothing\n    run: 'echo no secrets here'\n"
        ),
    )
    .replacen(
        "steps:\n",
        &format!(
            "{header}secrets:\n  TOKEN: {{ env: CI_TOKEN }}\n  KEY: {{ file: {} }}\nsteps:\n",
            key_file.display()
        ),
        1,
    );
    env.write(&format!("{name}.yaml"), &yaml)
}

/// What the step prints: the values and their encodings, a value split across two writes
/// with a pause between, on both streams.
const LEAKS: &str = r#"[ "$TOKEN" = "$(cat expected-token)" ] && echo token-delivered
[ "$KEY" = "$(cat key-file)" ] && echo key-delivered
printf 'plain %s\n' "$TOKEN"
printf '%s' "$TOKEN" | base64
printf '%s' "$TOKEN" | base64 | tr '+/' '-_'
printf '%s\n' "$KEY"
echo "$TOKEN" | base64
printf '%s' "$KEY" | base64 | tr -d '\n'; echo
printf 'split '; printf '%s' "$TOKEN" | head -c 9; sleep 1; printf '%s' "$TOKEN" | tail -c +10; echo ' end'
echo "on stderr $TOKEN" >&2
"#;

/// Submit `file` with the secret's source in the environment, diagnostics on, live output on.
fn submit(env: &Env, file: &Path, plugin_dir: Option<&Path>) -> Output {
    let mut command = env.mc();
    command
        .env("CI_TOKEN", TOKEN)
        .env("MAESTRO_LOG", "trace")
        .args(["-vv", "submit", file.to_str().unwrap()]);
    if let Some(dir) = plugin_dir {
        command.env("MAESTRO_PLUGIN_PATH", dir);
    }
    crate::util::output_within(&mut command, 120)
}

/// Check a finished job: delivered, masked, nothing leaked anywhere.
fn check_job(env: &Env, submitted: &Output) {
    let stdout = text(&submitted.stdout);
    assert!(
        submitted.status.success(),
        "{stdout}\n{}",
        text(&submitted.stderr)
    );
    let job_id = env.job_ids()[0].clone();
    let log = env.step_log(&job_id, "leak");
    assert!(log.contains("token-delivered"), "{log}");
    assert!(log.contains("key-delivered"), "{log}");
    assert!(log.contains(" out plain ***\n"), "{log}");
    assert!(log.contains(" out split *** end\n"), "{log}");
    assert!(log.contains(" err on stderr ***\n"), "{log}");
    assert!(
        stdout.contains("plain ***"),
        "live output is masked: {stdout}"
    );
    let logs = env.run(&["logs", &job_id]);
    assert!(text(&logs.stdout).contains("plain ***"));
    let status_json = env.run(&["status", &job_id, "--output", "json"]);
    let status_text = env.run(&["status", &job_id]);
    let list = env.run(&["status", "--output", "json"]);
    assert_nothing_leaked(
        env,
        &[
            ("submit stdout", &submitted.stdout),
            ("submit stderr", &submitted.stderr),
            ("mc logs", &logs.stdout),
            ("mc status --output json", &status_json.stdout),
            ("mc status", &status_text.stdout),
            ("mc status list", &list.stdout),
        ],
    );
}

#[test]
fn secrets_reach_local_steps_and_are_never_recorded_or_shown() {
    for isolation in ["sandbox", "none"] {
        let env = Env::new();
        let file = secret_job(
            &env,
            "local-secrets",
            &format!("isolation: {isolation}\n"),
            &format!(
                "{LEAKS}python3 -c 'import os,urllib.parse as u; print(\"url\", u.quote(os.environ[\"TOKEN\"], safe=\"\"))'\npython3 -c 'import os,json; print(json.dumps(dict(os.environ)))'\n"
            ),
        );
        let submitted = submit(&env, &file, None);
        check_job(&env, &submitted);
        let log = env.step_log(&env.job_ids()[0], "leak");
        assert!(log.contains(" out url ***\n"), "{isolation}: {log}");
        assert!(
            log.contains(r#""TOKEN": "***""#) && log.contains(r#""KEY": "***""#),
            "{isolation}: a JSON dump of the environment is masked: {log}"
        );
    }
}

#[test]
fn secrets_reach_docker_steps_and_are_never_recorded_or_shown() {
    ensure_image();
    let env = Env::new();
    let file = secret_job(
        &env,
        "docker-secrets",
        &format!("runtime: docker\nimage: {IMAGE}\n"),
        LEAKS,
    );
    let submitted = submit(&env, &file, None);
    for job_id in env.job_ids() {
        remove_labelled(&format!("maestro.job_id={job_id}"));
    }
    check_job(&env, &submitted);
}

#[test]
fn secrets_reach_plugin_steps_and_are_never_recorded_or_shown() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let plugins = env.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let pyproc = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/mc-executor-pyproc");
    let script = plugins.join("mc-executor-pyproc");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec python3 '{}'\n", pyproc.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = secret_job(&env, "plugin-secrets", "runtime: pyproc\n", LEAKS);
    let submitted = submit(&env, &file, Some(&plugins));
    check_job(&env, &submitted);
}

#[test]
fn a_missing_or_short_secret_fails_the_job_before_anything_runs() {
    let env = Env::new();
    let yaml = job_yaml(
        "missing-secret",
        "  - name: first\n    secrets: [TOKEN]\n    run: 'touch ran'\n",
    )
    .replacen(
        "steps:\n",
        "secrets:\n  TOKEN: { env: CI_TOKEN_NOT_SET }\nsteps:\n",
        1,
    );
    let file = env.write("missing.yaml", &yaml);
    let output = env.run(&["submit", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("secret TOKEN: environment variable CI_TOKEN_NOT_SET is not set"),
        "{stderr}"
    );
    assert!(!env.path().join("ran").exists(), "nothing ran");
    let status = env.status(&env.job_ids()[0]);
    assert_eq!(status["state"], "FAILED", "{status}");

    let yaml = yaml.replace(
        "{ env: CI_TOKEN_NOT_SET }",
        &format!("{{ file: {}/nope }}", env.path().display()),
    );
    let file = env.write("unreadable.yaml", &yaml);
    let output = env.run(&["submit", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("secret TOKEN: cannot read file"),
        "{}",
        text(&output.stderr)
    );

    let file = env.write(
        "short.yaml",
        &yaml.replace(
            &format!("{{ file: {}/nope }}", env.path().display()),
            "{ env: SHORT_TOKEN }",
        ),
    );
    let output = output_with(&env, &file, ("SHORT_TOKEN", "x9z"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr
            .contains("secret TOKEN (from environment variable SHORT_TOKEN) is 3 characters long"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("x9z"),
        "the value is never shown: {stderr}"
    );
    assert!(!env.path().join("ran").exists(), "nothing ran");
}

fn output_with(env: &Env, file: &Path, (name, value): (&str, &str)) -> Output {
    crate::util::output_within(
        env.mc()
            .env(name, value)
            .args(["submit", file.to_str().unwrap()]),
        120,
    )
}

#[test]
fn secret_spec_mistakes_are_one_line_usage_errors() {
    let env = Env::new();
    for (secrets, step_extra, needle) in [
        (
            "",
            "    secrets: [NOPE]\n",
            "steps[0].secrets[0]: \"NOPE\" is not a secret of the job",
        ),
        (
            "secrets:\n  T: { env: A, file: /x }\n",
            "",
            "secrets.T has both env and file",
        ),
        (
            "secrets:\n  T: {}\n",
            "",
            "secrets.T has neither env nor file",
        ),
        (
            "secrets:\n  T: { env: 'A B' }\n",
            "",
            "secrets.T.env: \"A B\" is not a valid variable name",
        ),
        (
            "env_passthrough: ['BAD-NAME']\n",
            "",
            "env_passthrough[0]: \"BAD-NAME\" is not a valid variable name",
        ),
    ] {
        let yaml = job_yaml(
            "bad-secrets",
            &format!("  - name: s\n{step_extra}    run: 'touch ran'\n"),
        )
        .replacen("steps:\n", &format!("{secrets}steps:\n"), 1);
        let file = env.write("bad.yaml", &yaml);
        for command in ["validate", "submit"] {
            let output = env.run(&[command, file.to_str().unwrap()]);
            assert_eq!(output.status.code(), Some(2), "{yaml}");
            let stderr = text(&output.stderr);
            assert!(stderr.contains(needle), "{yaml}\n{stderr}");
            assert_eq!(
                stderr.lines().filter(|l| l.starts_with("error:")).count(),
                1,
                "{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    assert!(!env.path().join("ran").exists());
    assert!(env.job_ids().is_empty(), "nothing stored");
}

#[test]
fn local_steps_get_a_clean_environment_with_named_pass_throughs() {
    for isolation in ["sandbox", "none"] {
        let env = Env::new();
        let yaml = job_yaml(
            "clean-env",
            "  - name: look\n    env_passthrough: [STEP_PASS]\n    env: { FROM_SPEC: spec }\n    run: |\n      env | cut -d= -f1 | sort > names.out\n      printf '%s' \"$TRACEPARENT\" > traceparent.out\n      printf '%s %s %s' \"$JOB_PASS\" \"$STEP_PASS\" \"$LANG\" > values.out\n",
        )
        .replacen(
            "steps:\n",
            &format!("isolation: {isolation}\nenv_passthrough: [JOB_PASS, NEVER_SET]\nsteps:\n"),
            1,
        );
        let file = env.write("clean.yaml", &yaml);
        let output = crate::util::output_within(
            env.mc()
                .env("MAESTRO_TEST_CANARY", "must-not-pass")
                .env("AWS_SECRET_ACCESS_KEY", "must-not-pass")
                .env("JOB_PASS", "job-passed")
                .env("STEP_PASS", "step-passed")
                .env("LANG", "C.UTF-8")
                .args(["submit", file.to_str().unwrap(), "--output", "json"]),
            120,
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        let report = parse_json(&output);
        let names = std::fs::read_to_string(env.path().join("names.out")).unwrap();
        let names: Vec<&str> = names.lines().collect();
        for present in [
            "PATH",
            "LANG",
            "FROM_SPEC",
            "JOB_PASS",
            "STEP_PASS",
            "TRACE_ID",
            "TRACEPARENT",
            "MAESTRO_JOB_ID",
            "MAESTRO_STEP",
        ] {
            assert!(
                names.contains(&present),
                "{isolation}: {present} missing from {names:?}"
            );
        }
        for absent in [
            "MAESTRO_TEST_CANARY",
            "AWS_SECRET_ACCESS_KEY",
            "MAESTRO_HOME",
            "NEVER_SET",
        ] {
            assert!(
                !names.contains(&absent),
                "{isolation}: {absent} leaked into {names:?}"
            );
        }
        let values = std::fs::read_to_string(env.path().join("values.out")).unwrap();
        assert_eq!(values, "job-passed step-passed C.UTF-8");
        // TRACEPARENT: the job's trace, the step's own span, recorded in its step record and
        // in the audit record of the step.
        let traceparent = std::fs::read_to_string(env.path().join("traceparent.out")).unwrap();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[0], "00");
        assert_eq!(
            parts[1],
            report["trace_id"].as_str().unwrap(),
            "a generated trace id is already 32 hex"
        );
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
        assert_eq!(report["steps"][0]["span_id"], parts[2], "{report}");
        let job_id = report["job_id"].as_str().unwrap();
        assert_eq!(env.status(job_id)["steps"][0]["span_id"], parts[2]);
        let finished: Vec<_> = env
            .audit()
            .into_iter()
            .filter(|r| r["event"] == "step.finished")
            .collect();
        assert_eq!(finished[0]["details"]["span_id"], parts[2]);
    }
}

#[test]
fn docker_and_plugin_steps_get_traceparent_too() {
    ensure_image();
    let env = Env::new();
    let yaml = job_yaml(
        "traceparent-docker",
        "  - name: show\n    run: 'echo \"tp=$TRACEPARENT\"'\n",
    )
    .replacen(
        "steps:\n",
        &format!("runtime: docker\nimage: {IMAGE}\nsteps:\n"),
        1,
    );
    let file = env.write("tp.yaml", &yaml);
    let (output, report) = env.submit(&file, &["--trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"]);
    for job_id in env.job_ids() {
        remove_labelled(&format!("maestro.job_id={job_id}"));
    }
    assert!(output.status.success(), "{}", text(&output.stderr));
    let span = report["steps"][0]["span_id"].as_str().unwrap().to_owned();
    let log = env.step_log(report["job_id"].as_str().unwrap(), "show");
    assert!(
        log.contains(&format!(
            " out tp=00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01\n"
        )),
        "{log}"
    );

    // A plugin step: the same trace, a span of its own. A trace id that is not 32 hex digits
    // is hashed into one, the same for every step.
    use std::os::unix::fs::PermissionsExt;
    let plugins = env.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let pyproc = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/mc-executor-pyproc");
    let script = plugins.join("mc-executor-pyproc");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec python3 '{}'\n", pyproc.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = env.write(
        "tp-plugin.yaml",
        &job_yaml(
            "traceparent-plugin",
            "  - name: one\n    runtime: pyproc\n    run: 'echo \"tp=$TRACEPARENT\"'\n  - name: two\n    runtime: pyproc\n    run: 'echo \"tp=$TRACEPARENT\"'\n",
        ),
    );
    let output = crate::util::output_within(
        env.mc().env("MAESTRO_PLUGIN_PATH", &plugins).args([
            "submit",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--trace-id",
            "release-42",
        ]),
        120,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = parse_json(&output);
    let job_id = report["job_id"].as_str().unwrap();
    let traces: Vec<String> = ["one", "two"]
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let log = env.step_log(job_id, step);
            let line = log
                .lines()
                .find(|l| l.contains(" out tp="))
                .unwrap_or_else(|| panic!("{log}"));
            let parts: Vec<&str> = line.rsplit_once("tp=").unwrap().1.split('-').collect();
            assert_eq!(parts.len(), 4, "{line}");
            assert_eq!(
                parts[2],
                report["steps"][index]["span_id"].as_str().unwrap()
            );
            assert_eq!(parts[1].len(), 32);
            parts[1].to_owned()
        })
        .collect();
    assert_eq!(traces[0], traces[1], "one trace for the job");
}
