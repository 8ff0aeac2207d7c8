//! The launcher: shims forked by a long-lived helper behave as executed ones, and nothing of
//! theirs outlives the helper or its caller.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use maestro_sandbox::{ExitKind, Launched, Launcher, SandboxError};
use tokio::io::AsyncReadExt;

use crate::processes::escapes;
use crate::util::{
    As, Dir, SHIM, run, shell_plan, signal_of, sleepers, wait_for_sleeper, wait_no_sleepers,
};

/// Whether `pid` runs (a zombie does not).
fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn start() -> Launcher {
    Launcher::start(Path::new(SHIM), &["--launcher"]).expect("start the launcher")
}

const PATH: (&str, &str) = ("PATH", "/usr/local/bin:/usr/bin:/bin");

fn environment<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a OsStr, &'a OsStr)> {
    pairs
        .iter()
        .map(|(name, value)| (OsStr::new(*name), OsStr::new(*value)))
        .collect()
}

/// Both outputs, read to their end.
async fn output(launched: &mut Launched) -> (String, String) {
    let (mut stdout, mut stderr) = launched.take_output().expect("output pipes");
    let (mut out, mut err) = (String::new(), String::new());
    let (read_out, read_err) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err)
    );
    read_out.unwrap();
    read_err.unwrap();
    (out, err)
}

/// Launches `plan` with `pairs` as its environment and runs it to its end: its exit status,
/// stdout, stderr and the sandbox's report.
async fn run_launched(
    launcher: &Launcher,
    plan: &maestro_sandbox::SandboxPlan,
    pairs: &[(&str, &str)],
) -> (
    std::process::ExitStatus,
    String,
    String,
    maestro_sandbox::Report,
) {
    let (mut launched, mut control) = launcher
        .launch(plan, environment(pairs))
        .await
        .expect("launch");
    control.wait_started().await.expect("started");
    let (out, err) = output(&mut launched).await;
    let status = launched.wait().await.expect("status");
    let report = control.finish().await.expect("report");
    (status, out, err, report)
}

#[tokio::test]
async fn a_launched_step_has_only_its_environment_its_output_and_its_exit() {
    let workspace = Dir::new("ws");
    let launcher = start();
    assert!(launcher.is_usable());
    let plan = shell_plan(
        workspace.path(),
        "echo \"out $GREETING\"; echo err >&2; env | sort > env.txt; exit 7",
    );
    let pairs = [PATH, ("GREETING", "hello"), ("SECRET_ONE", "s3cr3t-value")];
    let (status, out, err, report) = run_launched(&launcher, &plan, &pairs).await;
    assert_eq!(status.code(), Some(7), "{out}{err}");
    assert_eq!(out, "out hello\n");
    assert_eq!(err, "err\n");
    assert_eq!(report.exit, Some(ExitKind::Code(7)));
    assert!(report.teardown.verified, "{report:?}");
    let seen = std::fs::read_to_string(workspace.join("env.txt")).unwrap();
    assert!(seen.contains("SECRET_ONE=s3cr3t-value"), "{seen}");
    // Nothing of the test's (the launcher's caller's) environment: only what was passed, and
    // what the sandbox sets itself.
    assert!(!seen.contains("CARGO"), "{seen}");

    // A second step through the same launcher, dying of a signal, mirrored as such.
    let plan = shell_plan(workspace.path(), "kill -TERM $$");
    let (mut launched, mut control) = launcher.launch(&plan, environment(&[PATH])).await.unwrap();
    control.wait_started().await.unwrap();
    let status = launched.wait().await.unwrap();
    assert_eq!(signal_of(&status), Some(15));
    assert_eq!(
        control.finish().await.unwrap().exit,
        Some(ExitKind::Signal(15))
    );
}

#[tokio::test]
async fn the_launcher_survives_stop_signals_and_ends_once_its_caller_and_last_step_let_go() {
    let workspace = Dir::new("ws");
    let launcher = start();
    let pid = launcher.id().expect("running") as i32;
    let script = format!("{}sleep 517", escapes("514", "515", "516"));
    let (launched, mut control) = launcher
        .launch(&shell_plan(workspace.path(), &script), environment(&[PATH]))
        .await
        .unwrap();
    control.wait_started().await.unwrap();
    wait_for_sleeper("517").await;
    // A stop meant for its caller (a supervisor signals every process of a service) leaves the
    // launcher and its steps running.
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sleepers("517").is_empty(), "a stop signal killed the step");
    // Dropping the launcher does not end a step it runs: the step holds it.
    drop(launcher);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !sleepers("517").is_empty(),
        "dropping the launcher killed the step"
    );
    assert!(pid_alive(pid), "the launcher ended under a running step");
    // Once nothing holds it (as when its caller dies: the kernel closes the caller's end), the
    // launcher kills what it still runs and exits. `drop` of the shim kills it first here; what
    // the launcher does on its own is what the server test sees when `mc serve` is SIGKILLed.
    drop(launched);
    drop(control);
    assert_eq!(
        wait_no_sleepers(&["514", "515", "516", "517"], Duration::from_secs(5)),
        vec![]
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pid_alive(pid), "the launcher outlived its last user");
}

#[tokio::test]
async fn a_killed_launchers_steps_die_with_it_and_it_refuses_further_work() {
    let workspace = Dir::new("ws");
    let launcher = start();
    let script = format!("{}sleep 527", escapes("524", "525", "526"));
    let (mut launched, mut control) = launcher
        .launch(&shell_plan(workspace.path(), &script), environment(&[PATH]))
        .await
        .unwrap();
    control.wait_started().await.unwrap();
    wait_for_sleeper("527").await;
    let pid = launcher.id().expect("running") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), launched.wait())
        .await
        .expect("the wait ends with the launcher");
    assert!(waited.is_err(), "no status without a launcher: {waited:?}");
    assert_eq!(
        wait_no_sleepers(&["524", "525", "526", "527"], Duration::from_secs(5)),
        vec![]
    );
    let again = launcher
        .launch(&shell_plan(workspace.path(), "true"), environment(&[PATH]))
        .await;
    assert!(
        matches!(again, Err(SandboxError::Io { .. } | SandboxError::Vanished)),
        "{again:?}"
    );
    assert!(
        !launcher.is_usable(),
        "a caller can tell it needs a new one"
    );
}

#[tokio::test]
async fn concurrent_launches_each_run_their_own_step_which_starts_as_an_executed_one_does() {
    let workspace = Dir::new("ws");
    // What a step starts with that a fork could carry over from the launcher: its signal mask,
    // ignored signals, descriptor limit and open descriptors.
    let script = "grep -E '^Sig(Blk|Ign)' /proc/self/status; ulimit -n; ls /proc/self/fd | wc -l; echo \"n=$N\"";
    let executed = run(&shell_plan(workspace.path(), script), As::Me, &[]).await;
    executed.assert_success();
    let expected = executed
        .stdout
        .rsplit_once("n=")
        .expect("the step's output")
        .0
        .to_owned();

    let launcher = std::sync::Arc::new(start());
    let mut steps = tokio::task::JoinSet::new();
    for n in 0..16 {
        let launcher = std::sync::Arc::clone(&launcher);
        let plan = shell_plan(workspace.path(), script);
        steps.spawn(async move {
            let number = n.to_string();
            let pairs = [PATH, ("N", number.as_str())];
            let (status, out, err, report) = run_launched(&launcher, &plan, &pairs).await;
            assert!(status.success(), "{out}{err}");
            assert!(report.teardown.verified);
            (n, out)
        });
    }
    let mut seen = Vec::new();
    while let Some(step) = steps.join_next().await {
        let (n, out) = step.expect("a step's task");
        assert_eq!(out, format!("{expected}n={n}\n"), "step {n}");
        seen.push(n);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..16).collect::<Vec<_>>());
}

#[test]
fn a_process_with_threads_cannot_fork_a_launcher() {
    // A second thread (the harness may have more) could hold a lock a forked child needs: the
    // fork is refused, and says why.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || released.recv());
    let error = Launcher::fork().expect_err("a multi-threaded process forked a launcher");
    drop(release);
    let _ = other.join();
    assert!(
        matches!(&error, SandboxError::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY)),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("cannot fork the sandbox launcher"),
        "{error}"
    );
}

/// The children of `pid`, from `/proc`.
fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

/// Waits until the launched shim's init (its one child) is in a mount namespace of its own:
/// the sandbox is being built. Its pid.
async fn wait_for_init(launched: &Launched) -> i32 {
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    for _ in 0..500 {
        if let Some(&init) = children_of(launched.id()).first()
            && std::fs::read_link(format!("/proc/{init}/ns/mnt")).is_ok_and(|mnt| mnt != ours)
        {
            return init;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the held sandbox's init never entered a mount namespace of its own");
}

fn held(plan: maestro_sandbox::SandboxPlan) -> maestro_sandbox::SandboxPlan {
    maestro_sandbox::SandboxPlan { hold: true, ..plan }
}

#[tokio::test]
async fn a_held_sandbox_is_built_but_runs_nothing_until_the_caller_says_go() {
    let workspace = Dir::new("ws");
    let launcher = start();
    let plan = held(shell_plan(
        workspace.path(),
        "echo ran > ran.txt; echo started; exit 3",
    ));
    let (mut launched, mut control) = launcher.launch(&plan, environment(&[PATH])).await.unwrap();
    let init = wait_for_init(&launched).await;
    // Built, or being built, and holding: the step has not run, however long we wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pid_alive(init), "init {init} gave up while holding");
    assert!(
        !workspace.join("ran.txt").exists(),
        "the step ran before the caller said go"
    );
    assert_eq!(
        children_of(init.unsigned_abs()),
        Vec::<i32>::new(),
        "init started something before go"
    );
    control.wait_started().await.expect("started once told to");
    let (out, err) = output(&mut launched).await;
    let status = launched.wait().await.unwrap();
    assert_eq!(status.code(), Some(3), "{out}{err}");
    assert_eq!(out, "started\n");
    assert!(workspace.join("ran.txt").exists());
    let report = control.finish().await.unwrap();
    assert_eq!(report.exit, Some(ExitKind::Code(3)));
    assert!(report.teardown.verified, "{report:?}");
}

#[tokio::test]
async fn a_held_sandbox_told_to_go_at_once_runs_even_before_the_shim_has_read_its_plan() {
    // `go` right behind the plan in the socket: the shim must not lose it with the plan's line.
    let workspace = Dir::new("ws");
    let launcher = start();
    for round in 0..5 {
        let plan = held(shell_plan(workspace.path(), &format!("echo round {round}")));
        let (mut launched, mut control) =
            launcher.launch(&plan, environment(&[PATH])).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), control.wait_started())
            .await
            .expect("a go sent with the plan was lost")
            .unwrap();
        let (out, _) = output(&mut launched).await;
        assert_eq!(out, format!("round {round}\n"));
        assert!(launched.wait().await.unwrap().success());
        assert!(control.finish().await.unwrap().teardown.verified);
    }
}

#[tokio::test]
async fn a_held_sandbox_never_told_to_go_is_torn_down_and_ran_nothing() {
    let workspace = Dir::new("ws");
    let launcher = start();
    let plan = held(shell_plan(workspace.path(), "echo ran > ran.txt"));
    // Let go by `finish` without a go: the step never starts, the report says so.
    let (mut launched, control) = launcher.launch(&plan, environment(&[PATH])).await.unwrap();
    let init = wait_for_init(&launched).await;
    let report = tokio::time::timeout(Duration::from_secs(20), control.finish())
        .await
        .expect("a held sandbox let go of must end")
        .unwrap();
    assert_eq!(report.exit, None, "{report:?}");
    let status = launched.wait().await.unwrap();
    assert!(!status.success());
    // Dropped without a word (the caller's crash): the same.
    let (dropped, control) = launcher.launch(&plan, environment(&[PATH])).await.unwrap();
    let dropped_init = wait_for_init(&dropped).await;
    drop(control);
    drop(dropped);
    for _ in 0..500 {
        if !pid_alive(init) && !pid_alive(dropped_init) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!pid_alive(init), "init {init} outlived its held sandbox");
    assert!(
        !pid_alive(dropped_init),
        "init {dropped_init} outlived its dropped sandbox"
    );
    assert!(!workspace.join("ran.txt").exists(), "a step ran without go");
}

#[tokio::test]
async fn a_held_sandbox_that_cannot_be_built_says_why_when_told_to_go() {
    let workspace = Dir::new("ws");
    let launcher = start();
    let mut plan = held(shell_plan(workspace.path(), "echo ran > ran.txt"));
    plan.writable.push(workspace.join("does-not-exist"));
    let (mut launched, mut control) = launcher.launch(&plan, environment(&[PATH])).await.unwrap();
    // The shim has failed and gone by the time the caller says go.
    let status = tokio::time::timeout(Duration::from_secs(20), launched.wait())
        .await
        .expect("a sandbox that cannot be built ends")
        .unwrap();
    assert!(!status.success());
    // A writable path that is not there is the step's mistake: refused, and said.
    match control.wait_started().await {
        Err(SandboxError::Refused { message }) => {
            assert!(message.contains("does-not-exist"), "{message}")
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert!(!workspace.join("ran.txt").exists());
}
