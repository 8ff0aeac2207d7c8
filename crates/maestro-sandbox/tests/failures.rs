//! Failing closed: a sandbox that cannot be set up never runs the step, and says why in a line.

use maestro_sandbox::{SETUP_FAILED_EXIT_CODE, SandboxError};

use crate::util::{As, Dir, Run, run, run_wrapped, shell_plan};

fn setup_message(run: &Run) -> &str {
    match &run.started {
        Err(SandboxError::Setup { message }) => message,
        other => panic!(
            "expected a setup error, got {other:?}\nstderr: {}",
            run.stderr
        ),
    }
}

#[tokio::test]
async fn a_missing_writable_path_fails_closed_with_one_line() {
    let workspace = Dir::new("ws");
    let mut plan = shell_plan(workspace.path(), "touch ran");
    plan.writable.push("/nonexistent/maestro-cache".into());
    for who in [As::Me, As::Nobody] {
        let run = run(&plan, who, &[]).await;
        let message = setup_message(&run);
        assert_eq!(
            message,
            "writable path /nonexistent/maestro-cache is not usable: No such file or directory"
        );
        assert_eq!(run.status.code(), Some(SETUP_FAILED_EXIT_CODE));
        assert!(!workspace.join("ran").exists(), "the step ran");
        assert!(matches!(run.report, Err(SandboxError::Setup { .. })));
    }
}

/// A writable `/` (or `/usr`'s parent) would be no sandbox at all: refused by the shim itself,
/// whatever policy said. The step only writes a marker in a directory of the test's own.
#[tokio::test]
async fn a_writable_root_is_refused_by_the_sandbox_itself() {
    let workspace = Dir::new("ws");
    let marker = workspace.join("ran");
    let mut plan = shell_plan(workspace.path(), &format!("touch {}", marker.display()));
    plan.writable.push("/".into());
    let run = run(&plan, As::Me, &[]).await;
    let message = setup_message(&run);
    assert!(
        message.starts_with("/ would make everything writable"),
        "{message}"
    );
    assert!(!marker.exists(), "the step ran");
}

#[tokio::test]
async fn a_writable_path_inside_a_read_only_path_is_refused() {
    let workspace = Dir::new("ws");
    std::fs::create_dir_all(workspace.join("var/cache")).unwrap();
    let mut plan = shell_plan(workspace.path(), "touch ran");
    plan.read_only.push(workspace.join("var"));
    plan.writable.push(workspace.join("var/cache"));
    let run = run(&plan, As::Me, &[]).await;
    let message = setup_message(&run);
    assert!(message.contains("lies inside read-only path"), "{message}");
    assert!(!workspace.join("ran").exists());
}

#[tokio::test]
async fn a_missing_working_directory_fails_closed() {
    let workspace = Dir::new("ws");
    let mut plan = shell_plan(workspace.path(), "touch ran");
    plan.workdir = workspace.join("missing");
    let run = run(&plan, As::Me, &[]).await;
    let message = setup_message(&run);
    assert!(
        message.starts_with("cannot enter the working directory"),
        "{message}"
    );
    assert!(!workspace.join("ran").exists());
}

/// bubblewrap's `--disable-userns` forbids nested user namespaces: the kernel support the
/// sandbox needs is missing, as on a machine that restricts them.
#[tokio::test]
async fn without_user_namespaces_the_step_does_not_run() {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: bwrap is not installed");
        return;
    }
    let workspace = Dir::new("ws");
    let plan = shell_plan(workspace.path(), "touch ran");
    let bwrap = [
        "bwrap",
        "--dev-bind",
        "/",
        "/",
        "--unshare-user",
        "--disable-userns",
        "--",
    ];
    let run = run_wrapped(&plan, As::Me, &[], &bwrap).await;
    let message = setup_message(&run);
    assert!(
        message.starts_with("cannot create a user namespace: "),
        "{message}"
    );
    assert!(!message.contains('\n'));
    assert_eq!(run.status.code(), Some(SETUP_FAILED_EXIT_CODE));
    assert!(!workspace.join("ran").exists(), "the step ran");
}
