//! Process containment: exit statuses, `kill -9 -1`, and the teardown of what a step leaves.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use maestro_sandbox::{ExitKind, SandboxError, command};

use crate::util::{As, Dir, SHIM, run, shell_plan, signal_of, wait_for_sleeper, wait_no_sleepers};

#[tokio::test]
async fn exit_codes_and_signals_mirror_the_steps() {
    let workspace = Dir::new("ws");
    for who in [As::Me, As::Nobody] {
        let run_3 = run(&shell_plan(workspace.path(), "exit 3"), who, &[]).await;
        assert_eq!(run_3.status.code(), Some(3));
        assert_eq!(run_3.report.unwrap().exit, Some(ExitKind::Code(3)));

        let term = run(&shell_plan(workspace.path(), "kill -TERM $$"), who, &[]).await;
        assert_eq!(signal_of(&term.status), Some(15), "{:?}", term.status);
        assert_eq!(term.report.unwrap().exit, Some(ExitKind::Signal(15)));
    }
}

/// A program that cannot be executed is the step's failure, told apart from a sandbox that
/// could not be built: `CannotStart` with the reason, and exit code 127 like a shell.
#[tokio::test]
async fn a_missing_program_cannot_start_and_exits_127_like_a_shell() {
    let workspace = Dir::new("ws");
    let mut plan = shell_plan(workspace.path(), "");
    plan.argv = vec!["maestro-no-such-program".into()];
    let run = run(&plan, As::Me, &[]).await;
    assert!(
        matches!(&run.started, Err(SandboxError::CannotStart { message }) if message == "No such file or directory"),
        "{:?}",
        run.started
    );
    assert_eq!(run.status.code(), Some(127));
}

/// Run as uid 65534 on purpose: were the PID namespace missing, `kill -9 -1` as root would
/// kill every process on the machine; as 65534 it can only reach 65534's.
#[tokio::test]
async fn kill_minus_one_inside_kills_only_the_steps_processes() {
    let mut sentinel = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["sleep", "421"])
        .spawn()
        .expect("start the sentinel");
    let workspace = Dir::new("ws");
    let plan = shell_plan(
        workspace.path(),
        "sleep 422 & sleep 0.1; ps -e -o comm= | sort | tr '\\n' ' '; echo; kill -9 -1; sleep 0.2; ps -e -o comm= | sort | tr '\\n' ' '",
    );
    let run = run(&plan, As::Nobody, &[]).await;
    let alive = sentinel.try_wait().expect("poll the sentinel").is_none();
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    run.assert_success();
    assert!(alive, "the sentinel outside was killed");
    let lines: Vec<&str> = run.stdout.lines().collect();
    // Before: init (the shim), the shell, sleep, ps; after: no sleep any more.
    assert!(lines[0].contains("sleep"), "{}", run.stdout);
    assert!(!lines[1].contains("sleep"), "{}", run.stdout);
    assert!(lines[1].contains("maestro-sandbox"), "{}", run.stdout);
}

const ESCAPES: &str = "setsid sleep {a} &\n(sleep {b} &)\nenv -i /bin/sleep {c} &\n";

pub(crate) fn escapes(a: &str, b: &str, c: &str) -> String {
    ESCAPES
        .replace("{a}", a)
        .replace("{b}", b)
        .replace("{c}", c)
}

#[tokio::test]
async fn nothing_a_step_started_survives_its_end() {
    for (who, numbers) in [
        (As::Me, ["411", "412", "413"]),
        (As::Nobody, ["431", "432", "433"]),
    ] {
        let workspace = Dir::new("ws");
        let script = format!(
            "{}sleep 0.2; ps -e -o comm= | grep -c sleep",
            escapes(numbers[0], numbers[1], numbers[2])
        );
        let run = run(&shell_plan(workspace.path(), &script), who, &[]).await;
        run.assert_success();
        // All three were running when the step ended...
        assert_eq!(run.stdout.trim(), "3", "{}", run.stderr);
        // ...and none is left (the shim's report already checked; this is /proc seen from here).
        assert_eq!(wait_no_sleepers(&numbers, Duration::ZERO), vec![]);
        let report = run.report.unwrap();
        assert!(report.teardown.verified && report.teardown.remaining.is_empty());
        assert_ne!(report.teardown.pid_namespace_inode, 0);
    }
}

#[tokio::test]
async fn nothing_survives_when_the_shim_is_killed_mid_step() {
    let workspace = Dir::new("ws");
    let script = format!("{}sleep 417", escapes("414", "415", "416"));
    let plan = shell_plan(workspace.path(), &script);
    let (mut command, mut control) = command(Path::new(SHIM), &[], &plan).unwrap();
    command.stdout(Stdio::null()).process_group(0);
    let mut child = tokio::process::Command::from(command).spawn().unwrap();
    control.wait_started().await.unwrap();
    wait_for_sleeper("417").await;
    let group = nix::unistd::Pid::from_raw(-(child.id().unwrap() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(signal_of(&status), Some(9));
    let left = wait_no_sleepers(&["414", "415", "416", "417"], Duration::from_secs(5));
    assert_eq!(left, vec![]);
    assert!(matches!(
        control.finish().await,
        Err(SandboxError::Vanished)
    ));
}

#[tokio::test]
async fn a_caller_that_goes_away_takes_the_sandbox_with_it() {
    let workspace = Dir::new("ws");
    let script = format!("{}sleep 427", escapes("424", "425", "426"));
    let plan = shell_plan(workspace.path(), &script);
    let (mut command, mut control) = command(Path::new(SHIM), &[], &plan).unwrap();
    command.stdout(Stdio::null()).process_group(0);
    let mut child = tokio::process::Command::from(command).spawn().unwrap();
    control.wait_started().await.unwrap();
    // Closing the control socket is what the kernel does when the caller dies.
    drop(control);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the shim ends once its caller is gone")
        .unwrap();
    assert_eq!(signal_of(&status), Some(9));
    assert_eq!(
        wait_no_sleepers(&["424", "425", "426", "427"], Duration::from_secs(5)),
        vec![]
    );
}
