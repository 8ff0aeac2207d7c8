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

/// The step asked for what no sandbox gives: the step's mistake, not the machine's.
fn refusal(run: &Run) -> &str {
    match &run.started {
        Err(SandboxError::Refused { message }) => message,
        other => panic!("expected a refusal, got {other:?}\nstderr: {}", run.stderr),
    }
}

#[tokio::test]
async fn a_missing_writable_path_fails_closed_with_one_line() {
    let workspace = Dir::new("ws");
    let mut plan = shell_plan(workspace.path(), "touch ran");
    plan.writable.push("/nonexistent/maestro-cache".into());
    for who in [As::Me, As::Nobody] {
        let run = run(&plan, who, &[]).await;
        // The spec's mistake, not the machine's.
        let message = refusal(&run);
        assert_eq!(
            message,
            "writable path /nonexistent/maestro-cache is not usable: No such file or directory"
        );
        assert_eq!(run.status.code(), Some(SETUP_FAILED_EXIT_CODE));
        assert!(!workspace.join("ran").exists(), "the step ran");
        assert!(matches!(run.report, Err(SandboxError::Refused { .. })));
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
    let message = refusal(&run);
    assert!(
        message.starts_with("/ is, holds or lies in a system directory, and no step may write it"),
        "{message}"
    );
    assert!(!marker.exists(), "the step ran");
}

/// Policy reads names; the sandbox reads where they lead. A writable path or a workspace that
/// is a link to a system or shared directory (which an earlier step may have made) is refused
/// by the real path, with the name it was given. The step would only write a marker in a
/// directory of the test's own; it never runs.
#[tokio::test]
async fn a_writable_path_or_workspace_through_a_link_is_judged_by_where_it_leads() {
    let workspace = Dir::new("ws");
    let marker = workspace.join("ran");
    for (target, problem) in [
        ("/root", "is a directory shared by the whole machine"),
        ("/usr/local", "is, holds or lies in a system directory"),
        ("/usr/bin", "is, holds or lies in a system directory"),
    ] {
        let link = workspace.join("cache");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
        let mut plan = shell_plan(workspace.path(), &format!("touch {}", marker.display()));
        plan.writable.push(link.clone());
        for who in [As::Me, As::Nobody] {
            let run = run(&plan, who, &[]).await;
            let message = refusal(&run);
            assert_eq!(
                message,
                format!(
                    "{target} (it is {} through a link) {problem}, and no step may write it; give the step a directory of its own",
                    link.display()
                )
            );
            assert!(!marker.exists(), "the step ran");
        }
        // The same link as the workspace itself.
        let mut plan = shell_plan(&link, &format!("touch {}", marker.display()));
        plan.workdir = workspace.path().to_owned();
        let run = run(&plan, As::Me, &[]).await;
        assert!(
            refusal(&run).starts_with(&format!("{target} (it is ")),
            "{}",
            run.stderr
        );
        assert!(!marker.exists(), "the step ran");
    }
    // A link to a directory of the job's own is what it names: writable.
    let own = Dir::new("own");
    let link = workspace.join("cache");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(own.path(), &link).unwrap();
    let mut plan = shell_plan(workspace.path(), "echo made > cache/made");
    plan.writable.push(link);
    let run = run(&plan, As::Me, &[]).await;
    assert!(run.started.is_ok(), "{:?}\n{}", run.started, run.stderr);
    assert_eq!(
        std::fs::read_to_string(own.path().join("made")).unwrap(),
        "made\n"
    );
}

#[tokio::test]
async fn a_writable_path_inside_a_read_only_path_is_refused() {
    let workspace = Dir::new("ws");
    std::fs::create_dir_all(workspace.join("var/cache")).unwrap();
    let mut plan = shell_plan(workspace.path(), "touch ran");
    plan.read_only.push(workspace.join("var"));
    plan.writable.push(workspace.join("var/cache"));
    let run = run(&plan, As::Me, &[]).await;
    let message = refusal(&run);
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
