//! Malformed and hostile input: always one clear error line and exit 2, never a panic or hang.

use std::time::{Duration, Instant};

use crate::util::{Env, text};

fn rejects(env: &Env, name: &str, content: &[u8], needle: &str) {
    let path = env.path().join(name);
    std::fs::write(&path, content).unwrap();
    let started = Instant::now();
    let output = env.run(&["submit", path.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{name} took too long"
    );
    assert!(
        stderr.contains(needle),
        "{name}: expected {needle:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{name}: {stderr}"
    );
    assert!(stderr.len() < 2000, "{name}: error is not short: {stderr}");
}

#[test]
fn malformed_specs_are_rejected_with_one_clear_line() {
    let env = Env::new();
    rejects(
        &env,
        "bad.json",
        b"{\"name\": \"x\", ",
        "bad.json:1:14: invalid JSON: the text ends before every",
    );
    rejects(
        &env,
        "typo.json",
        br#"{"name":"x","owner":"a","steps":[{"name":"s","run":"true","timout_seconds":5}]}"#,
        "unknown field `timout_seconds`",
    );
    rejects(
        &env,
        "typo.yaml",
        b"name: x\nowner: a\nsteps:\n  - name: s\n    run: 'true'\n    timout_seconds: 5\n",
        "timout_seconds",
    );
    rejects(
        &env,
        "wrongtype.json",
        br#"{"name":"x","steps":[{"name":"s","run":["a"]}]}"#,
        "steps[0].run",
    );
    rejects(
        &env,
        "binary.json",
        &[0xff, 0x00, 0xfe, 0x12],
        "not valid UTF-8",
    );
    rejects(&env, "empty.json", b"", "empty.json: the spec is empty");
    rejects(
        &env,
        "nosteps.yaml",
        b"name: x\nsteps: []\n",
        "at least one step",
    );
    rejects(
        &env,
        "dupe.json",
        br#"{"name":"x","steps":[{"name":"s","run":"a"},{"name":"s","run":"b"}]}"#,
        "used by an earlier step",
    );
    rejects(
        &env,
        "pathname.json",
        br#"{"name":"../../etc","steps":[{"name":"s","run":"a"}]}"#,
        "name",
    );
    rejects(
        &env,
        "stepname.json",
        br#"{"name":"x","steps":[{"name":"../x","run":"a"}]}"#,
        "steps[0].name",
    );
    rejects(&env, "huge.json", &vec![b' '; 2 * 1024 * 1024], "at most");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    rejects(
        &env,
        "deep.json",
        deep.as_bytes(),
        "must be a map of job fields",
    );
    let deep = format!(
        "{{\"name\":\"x\",\"steps\":[{{\"name\":\"s\",\"run\":\"hi\",\"with\":{}{}}}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    rejects(
        &env,
        "deep-with.json",
        deep.as_bytes(),
        "nested more than 128 levels deep",
    );
    // The bomb sits in `with`, which takes any value: only the budget stops it.
    let laughs = "name: x\nsteps:\n  - name: s\n    run: hi\n    with:\n      a: &a [x, x, x, x, x, x, x, x, x, x]\n      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n      g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    rejects(
        &env,
        "laughs.yaml",
        laughs.as_bytes(),
        "it holds more than 250000 values",
    );
    assert!(env.job_ids().is_empty(), "a rejected spec was stored");
}

#[test]
fn unreadable_and_endless_spec_files() {
    let env = Env::new();
    let output = env.run(&["submit", "does-not-exist.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("cannot read job spec does-not-exist.json"));
    let output = env.run(&["submit", env.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let started = Instant::now();
    let output = env.run(&["submit", "/dev/zero"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    assert_eq!(env.run(&["submit"]).status.code(), Some(2));
    assert_eq!(env.run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        env.run(&["submit", "x.json", "--output", "xml"])
            .status
            .code(),
        Some(2)
    );
    let file = env.write(
        "j.json",
        r#"{"name":"j","owner":"a","steps":[{"name":"s","run":"true"}]}"#,
    );
    let output = env.run(&["submit", file.to_str().unwrap(), "--max-step-timeout", "0"]);
    assert_eq!(output.status.code(), Some(2));
}
