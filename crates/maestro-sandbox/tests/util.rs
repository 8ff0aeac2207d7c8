//! Helpers: temporary directories, running the shim through the public API, /proc lookups.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use maestro_sandbox::{NetworkMode, Report, SandboxError, SandboxPlan, command};

/// The shim built by this crate.
pub(crate) const SHIM: &str = env!("CARGO_BIN_EXE_maestro-sandbox-shim");

/// A temporary directory outside `/tmp` (the sandbox replaces `/tmp`), removed on drop.
/// World-writable so that the same directory serves runs as uid 65534.
pub(crate) struct Dir(tempfile::TempDir);

impl Dir {
    pub(crate) fn new(name: &str) -> Dir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create a temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod 0777");
        Dir(dir)
    }

    /// A directory under `/tmp`, for the one test about workspaces there.
    pub(crate) fn in_tmp(name: &str) -> Dir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        Dir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    pub(crate) fn join(&self, relative: &str) -> PathBuf {
        self.0.path().join(relative)
    }
}

/// A plan that runs `sh -c script` in `workspace`.
pub(crate) fn shell_plan(workspace: &Path, script: &str) -> SandboxPlan {
    SandboxPlan {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        workdir: workspace.to_path_buf(),
        workspace: workspace.to_path_buf(),
        writable: vec![],
        read_only: vec![],
        expose: vec![],
        network: NetworkMode::Host,
        host: None,
        hold: false,
    }
}

/// Who runs the shim.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum As {
    /// The test's own user (root on the test machines).
    Me,
    /// uid and gid 65534 through `setpriv`.
    Nobody,
}

/// Everything a run produced.
pub(crate) struct Run {
    pub(crate) started: Result<(), SandboxError>,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) report: Result<Report, SandboxError>,
}

impl Run {
    /// Panics with the run's output unless the shim exited 0 with a verified teardown.
    pub(crate) fn assert_success(&self) {
        assert!(
            self.status.success() && self.started.is_ok(),
            "status {:?}, started {:?}\nstdout: {}\nstderr: {}",
            self.status,
            self.started,
            self.stdout,
            self.stderr
        );
        let report = self.report.as_ref().expect("a report");
        assert!(report.teardown.verified, "{report:?}");
    }
}

/// The command prefix that runs the shim as `who`, or through `wrapper`.
fn program(who: As, wrapper: &[&str]) -> (String, Vec<String>) {
    let mut words: Vec<String> = wrapper.iter().map(|word| word.to_string()).collect();
    if who == As::Nobody {
        words.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ]
            .map(String::from),
        );
    }
    words.push(SHIM.to_owned());
    let program = words.remove(0);
    (program, words)
}

/// Runs `plan` through the public API, as `who`, with `env` added to the shim's environment.
pub(crate) async fn run(plan: &SandboxPlan, who: As, env: &[(&str, &Path)]) -> Run {
    run_wrapped(plan, who, env, &[]).await
}

/// [`run`], with the shim started through `wrapper` (e.g. bwrap).
pub(crate) async fn run_wrapped(
    plan: &SandboxPlan,
    who: As,
    env: &[(&str, &Path)],
    wrapper: &[&str],
) -> Run {
    let (program, args) = program(who, wrapper);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut command, mut control) = command(Path::new(&program), &args, plan).expect("command");
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut command = tokio::process::Command::from(command);
    let child = command.spawn().expect("spawn the shim");
    drop(command);
    let started = control.wait_started().await;
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the shim ends within a minute")
        .expect("wait for the shim");
    let report = control.finish().await;
    Run {
        started,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report,
    }
}

/// Waits (up to 5 s) until a `sleep SECONDS` process runs: the step has started.
pub(crate) async fn wait_for_sleeper(seconds: &str) {
    for _ in 0..500 {
        if !sleepers(seconds).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the step (sleep {seconds}) is not running");
}

/// The pids of processes whose command line is `sleep <seconds>` (any path to sleep).
pub(crate) fn sleepers(seconds: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("list /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let words: Vec<&[u8]> = cmdline
            .split(|&b| b == 0)
            .filter(|w| !w.is_empty())
            .collect();
        if words.len() == 2 && words[0].ends_with(b"sleep") && words[1] == seconds.as_bytes() {
            found.push(pid);
        }
    }
    found
}

/// Waits up to `limit` for no `sleep <seconds>` to remain.
pub(crate) fn wait_no_sleepers(seconds: &[&str], limit: Duration) -> Vec<(String, Vec<i32>)> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<(String, Vec<i32>)> = seconds
            .iter()
            .map(|s| (s.to_string(), sleepers(s)))
            .filter(|(_, pids)| !pids.is_empty())
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The signal a status was killed by.
pub(crate) fn signal_of(status: &ExitStatus) -> Option<i32> {
    status.signal()
}
