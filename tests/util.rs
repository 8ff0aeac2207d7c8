//! Helpers shared by the black-box tests: a temporary workspace and state root, and `mc`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The `mc` binary under test.
pub fn mc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mc")
}

/// A temporary directory holding a workspace (the directory `mc` runs in) and a state root.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("maestro-test-")
            .tempdir()
            .expect("tempdir");
        let state = dir.path().join("state");
        Self { dir, state }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file in the workspace and return its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write test file");
        path
    }

    /// `mc` with this state root, run in the workspace, with a clean Maestro environment.
    pub fn mc(&self) -> Command {
        let mut command = Command::new(mc_bin());
        command
            .current_dir(self.dir.path())
            .env("MAESTRO_HOME", &self.state)
            // No maestro.toml of the machine's user: only those a test writes.
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env_remove("MAESTRO_ALLOWED_HOST_ACCESS")
            .env_remove("TRACE_ID")
            .env_remove("MAESTRO_LOG")
            .env_remove("MAESTRO_PLUGIN_PATH")
            .env_remove("MAESTRO_DEFAULT_STEP_TIMEOUT")
            .env_remove("MAESTRO_MAX_STEP_TIMEOUT")
            .env_remove("MAESTRO_STOP_GRACE")
            .env_remove("MAESTRO_SERVER")
            .env_remove("MAESTRO_TOKEN")
            .env_remove("MAESTRO_CA_CERT");
        command
    }

    /// Run `mc` with `args`; a run that takes more than two minutes fails the test.
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(self.mc().args(args), 120)
    }

    /// `mc submit FILE --output json`: the output and the parsed JSON object.
    pub fn submit(&self, file: &Path, extra: &[&str]) -> (Output, Value) {
        let mut args = vec![
            "submit",
            file.to_str().expect("utf-8 path"),
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        let output = self.run(&args);
        let json = parse_json(&output);
        (output, json)
    }

    /// `mc status JOB --output json`.
    pub fn status(&self, job_id: &str) -> Value {
        let output = self.run(&["status", job_id, "--output", "json"]);
        assert!(
            output.status.success(),
            "mc status failed: {}",
            text(&output.stderr)
        );
        parse_json(&output)
    }

    /// A job's record as the file store reads it (its journal, or an older version's
    /// `state.json` and `steps.json`), as JSON: `meta`, `transitions`, `steps`.
    pub fn stored(&self, job_id: &str) -> serde_json::Value {
        use maestro_core::state::StateStore;
        let job_id = maestro_core::JobId::try_parse(job_id).expect("a job id");
        let record = maestro_core::state::FileStore::new(&self.state)
            .load(job_id)
            .expect("the job's record");
        serde_json::to_value(record).expect("a record as JSON")
    }

    /// The job ids of this state root, newest first.
    pub fn job_ids(&self) -> Vec<String> {
        let jobs = self.state.join("jobs");
        let mut ids: Vec<String> = match std::fs::read_dir(jobs) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        };
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// Every record of the audit log, parsed (a line that does not parse fails the test).
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state.join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("torn audit line {line:?}: {e}"))
            })
            .collect()
    }

    /// The recorded log of a step.
    pub fn step_log(&self, job_id: &str, step: &str) -> String {
        std::fs::read_to_string(
            self.state
                .join("jobs")
                .join(job_id)
                .join("logs")
                .join(format!("{step}.log")),
        )
        .unwrap_or_default()
    }
}

/// Run `command` to completion, failing the test if it takes longer than `seconds`: a hang
/// must fail the suite, not freeze it.
pub fn output_within(command: &mut Command, seconds: u64) -> Output {
    maestro_test_support::output_within(command, std::time::Duration::from_secs(seconds))
}

/// Wait for a spawned `mc` with the same two-minute limit as [`Env::run`].
pub fn output_within_child(child: std::process::Child) -> Output {
    maestro_test_support::wait_within(child, std::time::Duration::from_secs(120))
}

/// The approval a job's `RUNNING` transition carries (from `GET /v1/jobs/{id}`).
pub fn approval_of(job: &Value) -> Value {
    job["transitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|transition| transition["state"] == "RUNNING")
        .map(|running| running["detail"]["approval"].clone())
        .unwrap_or_else(|| panic!("job has no RUNNING transition: {job:#}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parse the single JSON object `mc … --output json` prints on stdout.
pub fn parse_json(output: &Output) -> Value {
    let stdout = text(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}):\n{stdout}\nstderr:\n{}",
            text(&output.stderr)
        )
    })
}

/// A YAML job with the given steps (already indented YAML list items).
pub fn job_yaml(name: &str, steps: &str) -> String {
    format!("name: {name}\nowner: ana\nenvironment: dev\nsteps:\n{steps}")
}

/// A YAML job whose local steps run on the bare host (`isolation: none`): for tests of what
/// process groups do, which look at the steps' host pids.
pub fn bare_job_yaml(name: &str, steps: &str) -> String {
    format!("name: {name}\nowner: ana\nenvironment: dev\nisolation: none\nsteps:\n{steps}")
}

pub use maestro_test_support::pid_alive;

/// Wait up to `seconds` for `path` to exist.
pub fn wait_for_file(path: &Path, seconds: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Send `signal` to `pid`.
pub fn send_signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, signal).expect("kill");
}

/// Run `mc` inside a bubblewrap jail: the whole filesystem read-only except the test's own
/// directory, no network, its own user and pid namespaces (capabilities only inside them). Tests that submit destructive
/// commands use it so that even a broken policy could not harm the machine.
pub fn jailed(env: &Env, args: &[&str]) -> Output {
    let status = Command::new("bwrap").arg("--version").output();
    assert!(
        status.is_ok_and(|o| o.status.success()),
        "bubblewrap (bwrap) is required for destructive-command tests: apt-get install -y bubblewrap"
    );
    let dir = env.path().to_str().expect("utf-8 path");
    // The fresh /tmp hides everything under it; a checkout (and so `mc`) may live there too.
    let bin_dir = Path::new(mc_bin())
        .parent()
        .and_then(Path::to_str)
        .expect("utf-8 path");
    let mut command = Command::new("bwrap");
    command
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
        .args([
            "--tmpfs",
            "/tmp",
            "--ro-bind",
            bin_dir,
            bin_dir,
            "--bind",
            dir,
            dir,
        ])
        // The project's standard jail: every namespace of its own, the user's included, so that
        // `mc` inside can still build its own sandbox for the steps (which needs to map root
        // into a user namespace, and so CAP_SETFCAP in the jail's).
        .args(["--unshare-all"])
        .args(["--chdir", dir, "--die-with-parent", "--"])
        .arg(mc_bin())
        .args(args)
        .env("MAESTRO_HOME", &env.state)
        .env_remove("TRACE_ID");
    command.output().expect("run bwrap")
}

/// The job id of `mc submit --output json`'s report.
pub fn job_id(json: &Value) -> &str {
    json["job_id"].as_str().expect("a job id")
}

/// The output lines of a step log with the given tag (`out` or `err`), without time stamps.
pub fn log_lines(log: &str, tag: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let _time = parts.next()?;
            (parts.next()? == tag).then(|| parts.next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// A certificate authority of the test's own, made in `dir`, and a certificate it signs for
/// `127.0.0.1` and `localhost` (clients refuse a self-signed CA certificate used as a server's
/// own): the paths of the CA's certificate, the server's certificate and its key, in PEM.
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let extensions = dir.join("server.ext");
    std::fs::write(
        &extensions,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is needed (apt-get install -y openssl)");
        assert!(made.status.success(), "{}", text(&made.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=maestro-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "cert.pem",
        "-extfile",
        extensions.to_str().unwrap(),
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}
