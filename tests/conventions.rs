//! The conventions of a good CLI: completions, a man page, the spec's schema, `--help` with
//! examples and exit codes, and `maestro.toml` with `mc config`.

use crate::util::{Env, text};

#[test]
fn the_committed_schema_is_what_mc_schema_prints() {
    let env = Env::new();
    let output = env.run(&["schema"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/job-spec.schema.json"),
    )
    .expect("docs/job-spec.schema.json");
    assert!(
        text(&output.stdout) == committed,
        "docs/job-spec.schema.json is stale: run `mc schema > docs/job-spec.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(schema["type"], "object");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown fields are errors"
    );
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["name", "steps"]);
}

#[test]
fn examples_point_editors_at_the_schema() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            let first = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                first.lines().next(),
                Some("# yaml-language-server: $schema=../docs/job-spec.schema.json"),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn completions_and_man_pages_are_generated() {
    let env = Env::new();
    for (shell, needle) in [
        ("bash", "complete -F _mc"),
        ("zsh", "#compdef mc"),
        ("fish", "complete -c mc"),
    ] {
        let output = env.run(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(
            script.contains("submit") && script.contains("validate"),
            "{shell}"
        );
    }
    let output = env.run(&["man"]);
    assert!(output.status.success());
    let page = text(&output.stdout);
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "roff: {page}");
    assert!(page.contains(".TH MC 1"), "{page}");
    let output = env.run(&["man", "submit"]);
    let page = text(&output.stdout);
    assert!(page.contains(".TH MC-SUBMIT 1"), "{page}");
    assert!(page.contains("stop\\-grace"), "{page}");
    let output = env.run(&["man", "sumbit"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr)
            .starts_with("error: mc has no command \"sumbit\"; did you mean \"submit\"?"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let env = Env::new();
    for command in [
        &["--help"][..],
        &["submit", "--help"],
        &["validate", "--help"],
        &["status", "--help"],
        &["logs", "--help"],
        &["gc", "--help"],
        &["config", "--help"],
        &["schema", "--help"],
        &["completions", "--help"],
        &["man", "--help"],
        &["plugins", "list", "--help"],
        &["plugins", "check", "--help"],
    ] {
        let output = env.run(command);
        assert!(output.status.success(), "{command:?}");
        let help = text(&output.stdout);
        assert!(help.contains("Examples:\n  mc "), "{command:?}: {help}");
        assert!(help.contains("Exit codes:\n  0 "), "{command:?}: {help}");
        assert!(
            help.contains("  3    denied by policy"),
            "{command:?}: {help}"
        );
    }
    let help = text(&env.run(&["submit", "--help"]).stdout);
    assert!(
        help.contains("[env: MAESTRO_STOP_GRACE] [maestro.toml: stop_grace] [default: 5]"),
        "{help}"
    );
}

fn config_rows(env: &Env, extra_env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let mut command = env.mc();
    command.args(["config", "--output", "json"]);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let output = crate::util::output_within(&mut command, 60);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json = crate::util::parse_json(&output);
    json["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let from = &row["from"];
            let origin = match from["name"].as_str() {
                Some(name) => format!("{} {name}", from["kind"].as_str().unwrap()),
                None => from["kind"].as_str().unwrap().to_owned(),
            };
            (
                row["key"].as_str().unwrap().to_owned(),
                row["value"].as_str().unwrap().to_owned(),
                origin,
            )
        })
        .collect()
}

fn row<'a>(rows: &'a [(String, String, String)], key: &str) -> (&'a str, &'a str) {
    let (_, value, origin) = rows.iter().find(|(k, _, _)| k == key).unwrap();
    (value, origin)
}

#[test]
fn settings_come_from_flags_then_environment_then_files_then_defaults() {
    let env = Env::new();
    let rows = config_rows(&env, &[]);
    assert_eq!(row(&rows, "stop_grace"), ("5", "default"));
    assert_eq!(row(&rows, "max_step_timeout"), ("3600", "default"));

    // The user's file, then the state root's own file, which wins over it.
    let user = env.path().join("xdg/maestro/maestro.toml");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(
        &user,
        "stop_grace = 2\nmax_step_timeout = 1200\nallowed_host_access = [\"ssh\", \"aws\"]\n",
    )
    .unwrap();
    std::fs::create_dir_all(&env.state).unwrap();
    let root_file = env.state.join("maestro.toml");
    std::fs::write(&root_file, "max_step_timeout = 900\n").unwrap();
    let rows = config_rows(&env, &[]);
    let from_user = format!("file {}", user.display());
    assert_eq!(row(&rows, "stop_grace"), ("2", from_user.as_str()));
    assert_eq!(
        row(&rows, "allowed_host_access"),
        ("ssh,aws", from_user.as_str())
    );
    let from_root = format!("file {}", root_file.display());
    assert_eq!(row(&rows, "max_step_timeout"), ("900", from_root.as_str()));

    // The environment beats the files.
    let rows = config_rows(&env, &[("MAESTRO_STOP_GRACE", "0.5")]);
    assert_eq!(row(&rows, "stop_grace"), ("0.5", "env MAESTRO_STOP_GRACE"));

    // A flag beats the environment, and the file's max_step_timeout is enforced by policy.
    let spec = env.write(
        "j.yaml",
        "name: j\nowner: ana\nsteps:\n  - name: s\n    run: 'true'\n    timeout_seconds: 1000\n",
    );
    let output = env.run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stdout));
    let mut command = env.mc();
    command
        .args([
            "validate",
            spec.to_str().unwrap(),
            "--max-step-timeout",
            "1000",
        ])
        .env("MAESTRO_MAX_STEP_TIMEOUT", "10");
    let output = crate::util::output_within(&mut command, 60);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
}

#[test]
fn bad_settings_name_where_they_came_from() {
    let env = Env::new();
    let user = env.path().join("xdg/maestro/maestro.toml");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(&user, "stop_grce = 2\n").unwrap();
    let output = env.run(&["config"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr).lines().next().unwrap(),
        format!(
            "error: {}: unknown setting `stop_grce`; did you mean `stop_grace`?",
            user.display()
        )
    );
    std::fs::write(&user, "stop_grace = \"soon\"\n").unwrap();
    let output = env.run(&["config"]);
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: stop_grace = soon in {}: must be a number of seconds from 0 to 3600, such as 5 or 0.5\n",
            user.display()
        )
    );
    std::fs::remove_file(&user).unwrap();

    // A number out of range is echoed as it was written, never rounded.
    let spec = env.write(
        "j.yaml",
        "name: j\nowner: ana\nsteps: [{name: s, run: 'true'}]\n",
    );
    let output = env.run(&[
        "submit",
        spec.to_str().unwrap(),
        "--stop-grace",
        "18446744073709551615",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "error: --stop-grace 18446744073709551615: must be a number of seconds from 0 to 3600, such as 5 or 0.5\n"
    );
    let mut command = env.mc();
    command
        .args(["validate", spec.to_str().unwrap()])
        .env("MAESTRO_MAX_STEP_TIMEOUT", "-1");
    let output = crate::util::output_within(&mut command, 60);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "error: MAESTRO_MAX_STEP_TIMEOUT=-1: must be a whole number of seconds from 1 to 31536000 (one year)\n"
    );
    let output = env.run(&[
        "validate",
        spec.to_str().unwrap(),
        "--allowed-host-access",
        "shh",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).starts_with(
            "error: --allowed-host-access shh: unknown host resource \"shh\"; did you mean \"ssh\"?"
        ),
        "{}",
        text(&output.stderr)
    );
    assert!(env.job_ids().is_empty());
}
