//! Errors that say what to do: where (file, line, column, field) and what to write instead.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::util::{Env, output_within_child, text};

/// `mc validate NAME` on a file holding `content`, run where the file is so the message names
/// it as given: exit 2, and stderr is exactly `error: <expected>`.
fn says(env: &Env, name: &str, content: &str, expected: &str) {
    env.write(name, content);
    let output = env.run(&["validate", name]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
    assert_eq!(stderr, format!("error: {expected}\n"), "{name}");
    assert!(output.stdout.is_empty(), "{name}: data on stdout");
}

#[test]
fn yaml_errors_name_the_file_the_line_the_column_and_the_field() {
    let env = Env::new();
    says(
        &env,
        "typo.yaml",
        "name: x\nsteps:\n  - name: s\n    run: hi\n    timout_seconds: 5\n",
        "typo.yaml:5:5: unknown field `timout_seconds` in steps[0]; did you mean `timeout_seconds`?",
    );
    says(
        &env,
        "command.yaml",
        "name: x\nsteps:\n  - name: s\n    command: echo hi\n",
        "command.yaml:4:14: steps[0].command must be a list of strings, e.g. `[echo, hi]`; to run a shell line use `run`",
    );
    says(
        &env,
        "duplicate.yaml",
        "name: x\nname: y\nsteps:\n  - name: s\n    run: hi\n",
        "duplicate.yaml:2:1: `name` is given twice in the job; keep one",
    );
    says(
        &env,
        "indent.yaml",
        "name: x\nsteps:\n  - name: s\n    run: hi\n   runtime: local\n",
        "indent.yaml:5:4: invalid YAML: this line's indentation does not fit the lines above; fields of one map start in the same column, and what is nested under a field is indented further, with spaces",
    );
    says(
        &env,
        "tab.yaml",
        "name: x\nsteps:\n\t- name: s\n",
        "tab.yaml:3:2: invalid YAML: a tab is used for indentation; YAML indents with spaces only",
    );
    says(
        &env,
        "timeout.yaml",
        "name: x\nsteps:\n  - name: s\n    run: hi\n    timeout_seconds: soon\n",
        "timeout.yaml:5:22: steps[0].timeout_seconds must be a whole number of seconds, at least 1, e.g. `300`",
    );
    says(
        &env,
        "network.yaml",
        "name: x\nsteps:\n  - name: s\n    run: hi\n    network: nnone\n",
        "network.yaml:5:14: steps[0].network must be `bridge` or `none`, not `nnone`; did you mean `none`?",
    );
    says(
        &env,
        "env.yaml",
        "name: x\nsteps:\n  - name: s\n    run: hi\n    env: [A]\n",
        "env.yaml:5:10: steps[0].env must be a map of variable names to strings, e.g. `{GREETING: hello}`",
    );
    says(
        &env,
        "steps.yaml",
        "name: x\nsteps:\n  name: s\n",
        "steps.yaml:3:3: steps must be a list of steps, e.g. `[{name: greet, run: echo hi}]`",
    );
    says(
        &env,
        "noname.yaml",
        "steps:\n  - name: s\n    run: hi\n",
        "noname.yaml:1:1: the job has no `name`, which is required",
    );
    says(
        &env,
        "two.yaml",
        "name: x\nsteps: [{name: s, run: hi}]\n---\nname: y\n",
        "two.yaml:4:1: the file holds more than one YAML document (a `---` line after content); a spec is one document",
    );
}

#[test]
fn json_errors_read_like_yaml_errors() {
    let env = Env::new();
    says(
        &env,
        "typo.json",
        r#"{"name":"x","steps":[{"name":"s","run":"hi","timout_seconds":5}]}"#,
        "typo.json:1:60: unknown field `timout_seconds` in steps[0]; did you mean `timeout_seconds`?",
    );
    says(
        &env,
        "command.json",
        r#"{"name":"x","steps":[{"name":"s","command":"echo hi"}]}"#,
        "command.json:1:52: steps[0].command must be a list of strings, e.g. `[echo, hi]`, not \"echo hi\"; to run a shell line use `run`",
    );
    says(
        &env,
        "duplicate.json",
        r#"{"name":"x","name":"y","steps":[{"name":"s","run":"hi"}]}"#,
        "duplicate.json:1:18: `name` is given twice in the job; keep one",
    );
    // A number too large for the field is never echoed rounded.
    says(
        &env,
        "huge-timeout.json",
        r#"{"name":"x","steps":[{"name":"s","run":"hi","timeout_seconds":18446744073709551616}]}"#,
        "huge-timeout.json:1:82: steps[0].timeout_seconds must be a whole number of seconds, at least 1, e.g. `300`",
    );
    says(
        &env,
        "list.json",
        r#"[{"name":"x"}]"#,
        "list.json:1:1: a job spec must be a map of job fields, e.g. `{name: hello, steps: [{name: greet, run: echo hi}]}`, not a list",
    );
    says(
        &env,
        "trailing.json",
        r#"{"name":"x","steps":[{"name":"s","run":"hi"}]} and more"#,
        "trailing.json:1:48: invalid JSON: there is more text after the spec's closing `}`",
    );
    // A spec that parses but breaks rules: every problem, each at its field.
    says(
        &env,
        "rules.json",
        r#"{"name":"x","env":{"1X":"a"},"steps":[{"name":"s","run":"a","memory":"lots"}]}"#,
        "rules.json:1:13: env: \"1X\" is not a valid variable name; rules.json:1:61: steps[0].memory \"lots\" is not a size such as 256m or 1g",
    );
    says(
        &env,
        "empty.json",
        "",
        "empty.json: the spec is empty; a job needs at least a `name` and `steps`",
    );
    says(
        &env,
        "comments.yaml",
        "# a job, one day\n\n  # indented\n",
        "comments.yaml: the spec is empty; a job needs at least a `name` and `steps`",
    );
    says(
        &env,
        "bom.json",
        "\u{feff}{\"name\": \"x\"}",
        "bom.json:1:1: invalid JSON: the file starts with a byte-order mark (U+FEFF), which JSON does not allow; save it as UTF-8 without a BOM",
    );
}

#[test]
fn limits_are_reported_with_the_real_numbers() {
    let env = Env::new();
    let deep = format!(
        "name: x\nsteps:\n  - name: s\n    run: hi\n    with: {{a: {}{}}}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    says(
        &env,
        "deep.yaml",
        &deep,
        "deep.yaml:5:75: the spec is nested more than 64 levels deep; a job spec needs a handful",
    );
    // A file's real size, not the count of bytes read before giving up.
    env.write("big.json", &" ".repeat(2_000_000));
    let output = env.run(&["validate", "big.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr).lines().next(),
        Some(
            "error: big.json is 1.9 MiB (2000000 bytes); a job spec may be at most 1 MiB (1048576 bytes)"
        )
    );
    // Standard input has no size to tell.
    let output = with_stdin(&env, &["validate", "-"], &vec![b' '; 2_000_000]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr).lines().next(),
        Some("error: <stdin> is larger than 1 MiB (1048576 bytes), the most a job spec may be")
    );
}

#[test]
fn misspelt_runtimes_and_subcommands_get_a_suggestion() {
    let env = Env::new();
    env.write(
        "j.yaml",
        "name: j\nowner: ana\nsteps:\n  - name: s\n    run: hi\n    runtime: dokcer\n",
    );
    let output = env.run(&["validate", "j.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    let plugins = env.state.join("plugins");
    assert_eq!(
        stderr,
        format!(
            "error: unknown runtime \"dokcer\" for step \"s\" (its runtime field; did you mean \"docker\"?): built-in runtimes are docker, local, swarm; \
             plugins (mc-executor-<runtime>) are looked for in $MAESTRO_PLUGIN_PATH, {} and $PATH \
             (`mc plugins list` shows what is found)\n",
            plugins.display()
        )
    );

    // A job of several steps says which one named the runtime, and where.
    env.write(
        "k.yaml",
        "name: k\nowner: ana\nruntime: nosuch\nsteps:\n  - name: a\n    run: hi\n    runtime: local\n  - name: b\n    run: hi\n",
    );
    let output = env.run(&["validate", "k.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "error: unknown runtime \"nosuch\" for step \"b\" (the job's runtime field): "
        ),
        "{stderr}"
    );
    env.write(
        "l.yaml",
        "name: l\nowner: ana\nsteps:\n  - name: c\n    run: hi\n",
    );
    let output = env.run(&["validate", "l.yaml", "--runtime", "nosuch"]);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("error: unknown runtime \"nosuch\" for step \"c\" (--runtime): "),
        "{stderr}"
    );

    let output = env.run(&["subimt", "j.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        // clap also offers `audit`, close enough to `subimt` by its measure.
        text(&output.stderr).contains("similar subcommand")
            && text(&output.stderr).contains("'submit'"),
        "{}",
        text(&output.stderr)
    );
}

fn with_stdin(env: &Env, args: &[&str], input: &[u8]) -> Output {
    let mut child = env
        .mc()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mc");
    let mut stdin = child.stdin.take().expect("stdin");
    // mc may stop reading once it has more than the limit: a broken pipe is expected then.
    let _ = stdin.write_all(input);
    drop(stdin);
    output_within_child(child)
}

#[test]
fn specs_come_from_standard_input_and_from_files_of_any_name() {
    let env = Env::new();
    let yaml =
        "name: from-stdin\nowner: ana\nsteps:\n  - name: s\n    run: echo hello from stdin\n";
    let output = with_stdin(&env, &["submit", "-", "--output", "json"], yaml.as_bytes());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let job_id = env.job_ids()[0].clone();
    let stored = env.state.join("jobs").join(&job_id).join("spec.yaml");
    assert_eq!(
        std::fs::read_to_string(stored).unwrap(),
        yaml,
        "stored byte for byte"
    );
    assert_eq!(env.status(&job_id)["state"], "SUCCEEDED");
    assert!(env.step_log(&job_id, "s").contains("hello from stdin"));

    let json = r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"true"}]}"#;
    let output = with_stdin(&env, &["validate", "-"], json.as_bytes());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("job \"j\" would be allowed"));

    // A .txt or extension-less file holding YAML is read as YAML; JSON is told by its `{`.
    for (name, content) in [("job.txt", yaml), ("Jobfile", yaml), ("job.spec", json)] {
        env.write(name, content);
        let output = env.run(&["validate", name]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}: {}",
            text(&output.stderr)
        );
    }
    env.write("bad.txt", "name: x\nsteps:\n  - name: s\n    comand: [a]\n");
    let output = env.run(&["validate", "bad.txt"]);
    assert_eq!(
        text(&output.stderr),
        "error: bad.txt:4:5: unknown field `comand` in steps[0]; did you mean `command`?\n"
    );
    // A job from standard input is stored as JSON when it is JSON.
    let output = with_stdin(&env, &["submit", "-", "--quiet"], json.as_bytes());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let job_id = env.job_ids()[0].clone();
    let stored = env.state.join("jobs").join(&job_id).join("spec.json");
    assert_eq!(std::fs::read_to_string(stored).unwrap(), json);
}

#[test]
fn an_unreachable_server_is_one_line_in_words() {
    let env = Env::new();
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = env
        .mc()
        .env("MAESTRO_TOKEN", "x")
        .args(["--server", &format!("http://127.0.0.1:{port}"), "status"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "error: cannot reach the server at http://127.0.0.1:{port}"
        )) && first.contains("Connection refused")
            && !first.contains("ConnectError("),
        "{stderr}"
    );
}

/// `--output json` is one JSON object on stdout, a failure's included: a pipeline piping it to
/// `jq` gets the error it can read, with the exit code, not empty input.
#[test]
fn a_failure_under_output_json_is_one_object_on_stdout_too() {
    let env = Env::new();
    let bad = env.write(
        "bad.yaml",
        "name: x\nowner: a\nbogus: 1\nsteps:\n  - name: s\n    run: echo\n",
    );
    let bad = bad.to_str().unwrap();
    for args in [
        &["submit", bad, "--output", "json"][..],
        &["validate", bad, "--output", "json"],
        &["submit", "missing.yaml", "--output", "json"],
        &["status", "nosuchid", "--output", "json"],
        &[
            "logs",
            "0192f0c1-aaaa-7bbb-8ccc-123456789abc",
            "--output",
            "json",
        ],
    ] {
        let output = env.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stdout = text(&output.stdout);
        assert_eq!(stdout.lines().count(), 1, "{args:?}: {stdout}");
        let object: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(object["exit_code"], 2, "{args:?}: {object}");
        let error = object["error"].as_str().unwrap();
        assert!(
            text(&output.stderr).contains(&format!("error: {error}")),
            "{args:?}: the same line on stderr"
        );
    }
    // Text output stays text: nothing on stdout.
    let output = env.run(&["submit", bad]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
}
