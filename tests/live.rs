//! `mc submit`'s live view on a terminal (run under `script`, which gives it a pty), and the
//! plain prefixed lines everywhere else.

use std::process::Command;

use crate::util::*;

/// `mc submit FILE` on a pseudo-terminal; what the terminal received.
fn on_a_terminal(env: &Env, file: &std::path::Path, no_color: bool) -> String {
    let command = format!("{} submit {}", mc_bin(), file.display());
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .current_dir(env.path())
        .env("MAESTRO_HOME", &env.state)
        .env_remove("NO_COLOR");
    if no_color {
        script.env("NO_COLOR", "1");
    }
    let output = output_within(&mut script, 60);
    text(&output.stdout)
}

#[test]
fn on_a_terminal_the_job_id_comes_first_then_each_step_with_its_output_and_end() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "live",
            "  - name: talk\n    run: echo said; echo warned >&2\n  - name: fail\n    run: exit 3\n",
        ),
    );
    let screen = on_a_terminal(&env, &file, false);
    let first = screen.lines().next().unwrap_or_default();
    assert!(
        first.contains("job") && first.contains("trace_id"),
        "{screen}"
    );
    assert!(screen.contains("▶"), "{screen}");
    assert!(screen.contains("  | said"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|line| line.contains("warned") && line.contains('!')),
        "{screen}"
    );
    assert!(screen.contains("✔"), "{screen}");
    assert!(
        screen.contains("\x1b[31m✘"),
        "a failed step is red: {screen}"
    );
    // The summary lists every step with its duration.
    assert!(screen.contains("  step talk"), "{screen}");
    assert!(screen.contains("ms  exited with code 3"), "{screen}");

    let plain = on_a_terminal(&env, &file, true);
    assert!(plain.contains("✘ fail failed"), "{plain}");
    assert!(!plain.contains("\x1b[3"), "NO_COLOR: no colours: {plain}");
}

#[test]
fn in_a_pipe_lines_are_plain_and_prefixed() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml("piped", "  - name: talk\n    run: echo said\n"),
    );
    let output = env.run(&["submit", file.to_str().unwrap()]);
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("talk | said\n"), "{stdout}");
    assert!(
        !stdout.contains('▶') && !output.stdout.contains(&0x1b),
        "{stdout}"
    );
}
