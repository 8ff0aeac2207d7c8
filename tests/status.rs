//! `mc status`: the list's header, filters, limit notice and pages, a running job's current step, and
//! text from specs that never reaches the terminal as control sequences.

use crate::util::*;

#[test]
fn pages_follow_each_other_with_before_newest_first() {
    let env = Env::new();
    let ok = env.write("ok.yaml", &job_yaml("ok", "  - name: s\n    run: 'true'\n"));
    let bad = env.write(
        "bad.yaml",
        &job_yaml("bad", "  - name: s\n    run: exit 3\n"),
    );
    for file in [&ok, &bad, &ok, &bad, &ok] {
        env.submit(file, &["--quiet"]);
    }
    let ids = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = ids(&parse_json(&env.run(&["status", "--output", "json"])));
    assert_eq!(all.len(), 5);
    let first = env.run(&["status", "--limit", "2", "--output", "json"]);
    assert_eq!(ids(&parse_json(&first)), all[..2]);
    assert!(
        text(&first.stderr).contains(&format!("`--before {}` the next page", all[1])),
        "{}",
        text(&first.stderr)
    );
    let second = parse_json(&env.run(&[
        "status", "--limit", "2", "--before", &all[1], "--output", "json",
    ]));
    assert_eq!(ids(&second), all[2..4]);
    let last = env.run(&[
        "status", "--limit", "2", "--before", &all[3], "--output", "json",
    ]);
    assert_eq!(ids(&parse_json(&last)), all[4..]);
    assert!(text(&last.stderr).is_empty(), "{}", text(&last.stderr));
    // Filters apply within the pages: the failed jobs older than the newest one.
    let failed = parse_json(&env.run(&[
        "status", "--state", "failed", "--before", &all[0], "--output", "json",
    ]));
    assert_eq!(ids(&failed), [all[1].clone(), all[3].clone()]);
    // A filtered listing is not counted (that would read every older job): its note points
    // at the next page.
    let cut = env.run(&["status", "--state", "failed", "--limit", "1"]);
    assert!(
        text(&cut.stderr).contains(&format!(
            "showing the newest 1 matching jobs; `--before {}` shows the next page",
            all[1]
        )),
        "{}",
        text(&cut.stderr)
    );
}

#[test]
fn the_list_has_a_header_durations_filters_and_says_when_the_limit_cut_it() {
    let env = Env::new();
    let ok = env.write("ok.yaml", &job_yaml("ok", "  - name: s\n    run: 'true'\n"));
    let bad = env.write(
        "bad.yaml",
        &job_yaml("bad", "  - name: s\n    run: exit 3\n"),
    );
    for file in [&ok, &ok, &bad] {
        env.submit(file, &["--quiet"]);
    }
    let list = env.run(&["status"]);
    assert!(list.status.success());
    let listing = text(&list.stdout);
    let mut lines = listing.lines();
    let header = lines.next().unwrap();
    for column in [
        "JOB ID",
        "STATE",
        "NAME",
        "OWNER",
        "ENV",
        "SUBMITTED",
        "DURATION",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert_eq!(lines.count(), 3, "{listing}");
    assert!(text(&list.stderr).is_empty(), "{}", text(&list.stderr));

    let failed = parse_json(&env.run(&["status", "--state", "failed", "--output", "json"]));
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed[0]["name"], "bad");
    assert!(failed[0]["duration_seconds"].as_f64().unwrap() >= 0.0);
    let both = parse_json(&env.run(&[
        "status",
        "--state",
        "FAILED,succeeded",
        "--since",
        "1h",
        "--owner",
        "ANA",
        "--output",
        "json",
    ]));
    assert_eq!(both.as_array().unwrap().len(), 3, "{both}");
    let none = parse_json(&env.run(&["status", "--env", "prod", "--output", "json"]));
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");
    let future = parse_json(&env.run(&[
        "status",
        "--since",
        "2999-01-01T00:00:00Z",
        "--output",
        "json",
    ]));
    assert_eq!(future.as_array().unwrap().len(), 0);

    let limited = env.run(&["status", "--limit", "2"]);
    assert_eq!(
        text(&limited.stdout).lines().count(),
        3,
        "header and two jobs"
    );
    assert!(
        text(&limited.stderr).contains("showing the newest 2 of 3 jobs"),
        "{}",
        text(&limited.stderr)
    );

    for (args, message) in [
        (["status", "--state", "done"], "unknown state \"done\""),
        (
            ["status", "--since", "yesterday"],
            "is neither a duration ago",
        ),
    ] {
        let output = env.run(&args);
        assert_eq!(output.status.code(), Some(2));
        assert!(
            text(&output.stderr).contains(message),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn a_running_job_shows_its_current_step_and_how_long_it_has_run() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "r",
            "  - name: quick\n    run: 'true'\n  - name: slow\n    run: touch started; sleep 30\n",
        ),
    );
    let mut child = env
        .mc()
        .args(["submit", file.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    assert!(wait_for_file(&env.path().join("started"), 20));
    let job_id = env.job_ids().remove(0);
    let shown = parse_json(&env.run(&["status", &job_id, "--output", "json"]));
    let text_view = text(&env.run(&["status", &job_id]).stdout);
    send_signal(child.id(), rustix::process::Signal::INT);
    let _ = child.wait();
    assert_eq!(shown["state"], "RUNNING");
    assert_eq!(shown["current_step"]["name"], "slow", "{shown}");
    assert_eq!(shown["current_step"]["runtime"], "local");
    assert!(shown["current_step"]["elapsed_seconds"].as_f64().unwrap() >= 0.0);
    assert!(
        text_view.contains("running   step slow (local) for "),
        "{text_view}"
    );
    // Once it has ended, no current step.
    let ended = parse_json(&env.run(&["status", &job_id, "--output", "json"]));
    assert_eq!(ended["state"], "CANCELLED");
    assert!(ended["current_step"].is_null());
}

#[test]
fn control_characters_from_a_spec_are_escaped_in_text_output() {
    let env = Env::new();
    // A denial quotes the command it denies; `mc validate` never runs it.
    let denied = env.write(
        "denied.yaml",
        &job_yaml(
            "esc",
            "  - name: s\n    run: \"rm -rf / # \\e[31mred\\e[0m\"\n    isolation: none\n",
        ),
    );
    let validated = env.run(&["validate", denied.to_str().unwrap()]);
    assert_eq!(
        validated.status.code(),
        Some(3),
        "{}",
        text(&validated.stderr)
    );
    assert!(
        !validated.stdout.contains(&0x1b),
        "{}",
        text(&validated.stdout)
    );
    // A job submitted from a file whose name holds an escape sequence.
    let file = env.write(
        "job-\u{1b}[31m.yaml",
        &job_yaml("esc", "  - name: s\n    run: 'true'\n"),
    );
    let (output, json) = env.submit(&file, &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let job_id = json["job_id"].as_str().unwrap();
    let shown = env.run(&["status", job_id]);
    assert!(!shown.stdout.contains(&0x1b), "{}", text(&shown.stdout));
    assert!(
        text(&shown.stdout).contains("job-\\u{1b}[31m.yaml"),
        "{}",
        text(&shown.stdout)
    );
}

#[test]
fn diagnostics_sent_to_a_pipe_carry_no_colour_codes() {
    let env = Env::new();
    let file = env.write("j.yaml", &job_yaml("c", "  - name: s\n    run: 'true'\n"));
    let output = env.run(&["-vv", "submit", file.to_str().unwrap(), "--quiet"]);
    assert!(output.status.success());
    assert!(
        !output.stderr.is_empty(),
        "-vv writes diagnostics to stderr"
    );
    assert!(!output.stderr.contains(&0x1b), "{}", text(&output.stderr));
}
