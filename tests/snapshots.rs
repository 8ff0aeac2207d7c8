//! Snapshots (insta) of what people read: `mc validate`, error messages, `mc config`, `--help`,
//! and the text of `submit`, `status`, `logs`, `cancel`, `prune` and `audit verify` for a
//! recorded job. A change to any of them shows up in review as a changed `.snap`
//! file, never by accident. Temporary paths are replaced by `[TEMP]`; in the job commands' text,
//! job ids, trace ids, times, durations and hashes by placeholders.

use crate::util::{Env, text};

/// Run `mc` and give "exit N", then stdout and stderr, with the test's directory filtered out.
fn run(env: &Env, args: &[&str]) -> String {
    let output = env.run(args);
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr)
    )
}

fn settings(env: &Env) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&env.path().display().to_string()), "[TEMP]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn example(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn validate_text_output() {
    let env = Env::new();
    settings(&env).bind(|| {
        insta::assert_snapshot!(
            "validate_allowed",
            run(&env, &["validate", &example("hello.yaml")])
        );
        insta::assert_snapshot!(
            "validate_denied",
            run(&env, &["validate", &example("denied.yaml")])
        );
    });
}

#[test]
fn spec_error_messages() {
    let env = Env::new();
    let cases = [
        (
            "typo.yaml",
            "name: x\nsteps:\n  - name: s\n    run: hi\n    timout_seconds: 5\n",
        ),
        (
            "command.yaml",
            "name: x\nsteps:\n  - name: s\n    command: echo hi\n",
        ),
        (
            "duplicate.yaml",
            "name: x\nname: y\nsteps:\n  - name: s\n    run: hi\n",
        ),
        (
            "indent.yaml",
            "name: x\nsteps:\n  - name: s\n    run: hi\n   runtime: local\n",
        ),
        (
            "runtime.yaml",
            "name: x\nowner: a\nsteps:\n  - name: s\n    run: hi\n    runtime: dokcer\n",
        ),
        (
            "network.json",
            r#"{"name":"x","steps":[{"name":"s","run":"hi","network":"hots"}]}"#,
        ),
        (
            "rules.yaml",
            "name: a b\nsteps:\n  - name: s\n  - name: s\n    run: hi\n    command: [hi]\n",
        ),
        ("empty.txt", ""),
    ];
    let mut all = String::new();
    for (name, content) in cases {
        env.write(name, content);
        all.push_str(&format!(
            "$ mc validate {name}\n{}\n",
            run(&env, &["validate", name])
        ));
    }
    std::fs::write(env.path().join("big.json"), vec![b' '; 2_000_000]).unwrap();
    all.push_str(&format!(
        "$ mc validate big.json\n{}",
        run(&env, &["validate", "big.json"])
    ));
    settings(&env).bind(|| insta::assert_snapshot!("spec_errors", all));
}

#[test]
fn config_and_gc_text_output() {
    let env = Env::new();
    settings(&env).bind(|| {
        insta::assert_snapshot!("config_defaults", run(&env, &["config"]));
        insta::assert_snapshot!("gc_nothing", run(&env, &["gc"]));
    });
}

#[test]
fn submit_help() {
    let env = Env::new();
    settings(&env)
        .bind(|| insta::assert_snapshot!("submit_help", run(&env, &["submit", "--help"])));
}

/// The settings for output that names a job: ids, trace ids, timestamps, durations and hashes
/// vary from run to run; the words and the layout around them must not.
fn job_settings(env: &Env) -> insta::Settings {
    let mut settings = settings(env);
    settings.add_filter(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[JOB_ID]",
    );
    settings.add_filter(r"\b[0-9a-f]{64}\b", "[HASH]");
    settings.add_filter(r"\b[0-9a-f]{32}\b", "[TRACE_ID]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]");
    settings.add_filter(r" +\d+(\.\d+)?(ms|s)\b", " [DUR]");
    settings
}

#[test]
fn job_commands_text_output() {
    let env = Env::new();
    let file = env.write(
        "job.yaml",
        "name: snap\nowner: alice\nenvironment: dev\nsteps:\n  - name: greet\n    run: echo hello\n  - name: warn\n    run: echo careful >&2\n  - name: fail\n    run: exit 3\n  - name: never\n    run: echo unreachable\n",
    );
    let submitted = run(&env, &["submit", file.to_str().unwrap()]);
    let job_id = env.job_ids().remove(0);
    let mut all = format!("$ mc submit job.yaml\n{submitted}\n");
    for args in [
        vec!["status", job_id.as_str()],
        vec!["status"],
        vec!["logs", job_id.as_str()],
        vec!["logs", job_id.as_str(), "--raw"],
        vec!["cancel", job_id.as_str()],
        vec!["audit", "verify"],
        vec!["prune", "--older-than", "0s", "--dry-run"],
        vec!["status", "ffff"],
    ] {
        all.push_str(&format!("$ mc {}\n{}\n", args.join(" "), run(&env, &args)));
    }
    job_settings(&env).bind(|| insta::assert_snapshot!("job_commands", all));
}
