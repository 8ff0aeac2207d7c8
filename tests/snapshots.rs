//! Snapshots (insta) of what people read: `mc validate`, error messages, `mc config`, `--help`.
//! A change to any of them shows up in review as a changed `.snap` file, never by accident.
//! Temporary paths are replaced by `[TEMP]`.

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
