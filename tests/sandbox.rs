//! The local sandbox through `mc`: what a contained step cannot destroy, see, or leave behind.
//!
//! Destructive payloads here aim only at test-owned canaries; payloads naming `/`, a device or
//! the machine's power go only through `mc validate`, which never runs anything.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::{Value, json};

use crate::util::{Env, mc_bin, output_within, parse_json, pid_alive, send_signal, text};

/// The unprivileged user the non-root tests run as.
const NOBODY: u32 = 65534;

/// The full path of `tool` on `PATH`; fails the test, saying what to install, when it is missing.
fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!("{tool} is required by this test and is not on PATH; install it (e.g. apt-get install -y {tool})")
        })
}

/// Fails the test unless it runs as root: CI does, and these tests prove what root cannot do.
fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test must run as root (CI does): it proves that uid 0 gains nothing in the sandbox"
    );
}

/// A directory outside `/tmp`: a sandboxed step has a private `/tmp`, so a target under the
/// host's `/tmp` would be invisible to it and prove nothing.
fn outside_tmp(prefix: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("create CARGO_TARGET_TMPDIR");
    assert!(
        !base.starts_with("/tmp"),
        "CARGO_TARGET_TMPDIR {} is under /tmp, which the sandbox hides; use a target dir elsewhere",
        base.display()
    );
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("tempdir outside /tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A test-owned directory of files outside the workspace that sandboxed steps try to destroy.
struct Canary {
    dir: tempfile::TempDir,
}

/// What a canary holds: every path with its mode, modification time and bytes.
type Snapshot = BTreeMap<PathBuf, (u32, i64, Vec<u8>)>;

impl Canary {
    fn new() -> Self {
        let dir = outside_tmp("maestro-canary-");
        std::fs::write(dir.path().join("a.txt"), "the canary sings\n").unwrap();
        std::fs::write(dir.path().join("f"), "truncate me if you can\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.bin"), [0u8, 1, 2, 255, 254]).unwrap();
        for (path, mode) in [
            ("sub", 0o755),
            ("a.txt", 0o644),
            ("f", 0o644),
            ("sub/b.bin", 0o644),
        ] {
            std::fs::set_permissions(dir.path().join(path), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        Self { dir }
    }

    /// Hand the canary to `uid`, so that only the sandbox stands between it and that user.
    fn give_to(&self, uid: u32) {
        for path in ["", "a.txt", "f", "sub", "sub/b.bin"] {
            let path = self.dir.path().join(path);
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn path_str(&self) -> &str {
        self.path().to_str().expect("utf-8 path")
    }

    fn snapshot(&self) -> Snapshot {
        fn walk(dir: &Path, into: &mut Snapshot) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("canary {} unreadable: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for path in entries {
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let bytes = if meta.is_file() {
                    std::fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                into.insert(path.clone(), (meta.mode(), meta.mtime(), bytes));
                if meta.is_dir() {
                    walk(&path, into);
                }
            }
        }
        let mut snapshot = Snapshot::new();
        let meta = std::fs::symlink_metadata(self.path())
            .unwrap_or_else(|e| panic!("the canary directory is gone: {e}"));
        snapshot.insert(
            self.path().to_owned(),
            (meta.mode(), meta.mtime(), Vec::new()),
        );
        walk(self.path(), &mut snapshot);
        snapshot
    }
}

/// A job of ana's in dev with the given steps.
fn job(name: &str, steps: Value) -> Value {
    json!({ "name": name, "owner": "ana", "environment": "dev", "steps": steps })
}

/// Write `spec` into the workspace as `file` and return its path as a string.
fn spec_file(env: &Env, file: &str, spec: &Value) -> String {
    env.write(file, &spec.to_string())
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

/// `mc validate FILE --output json`: the exit code and the report.
fn validate(env: &Env, spec: &Value) -> (Option<i32>, Value, String) {
    let file = spec_file(env, "validate.json", spec);
    let output = env.run(&["validate", &file, "--output", "json"]);
    let stderr = text(&output.stderr);
    let json = if output.stdout.is_empty() {
        Value::Null
    } else {
        parse_json(&output)
    };
    (output.status.code(), json, stderr)
}

/// The reasons a policy gave in a validate or submit report.
fn reasons(report: &Value, policy: &str) -> Vec<String> {
    report["policies"]
        .as_array()
        .unwrap_or_else(|| panic!("no policies in {report}"))
        .iter()
        .filter(|v| v["policy"] == policy)
        .flat_map(|v| v["reasons"].as_array().cloned().unwrap_or_default())
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Live processes whose command line is exactly `sleep TAG` for one of `tags`: (pid, tag).
fn sleeps(tags: &[&str]) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline
            .split(|&b| b == 0)
            .filter(|arg| !arg.is_empty())
            .collect();
        if let [program, tag] = args[..]
            && Path::new(OsStr::from_bytes(program)).file_name() == Some(OsStr::new("sleep"))
            && let Ok(tag) = std::str::from_utf8(tag)
            && tags.contains(&tag)
            && pid_alive(pid)
        {
            found.push((pid, tag.to_owned()));
        }
    }
    found
}

/// Wait up to `seconds` for every tag to have a live `sleep TAG`.
fn wait_for_sleeps(tags: &[&str], seconds: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let found = sleeps(tags);
        if tags.iter().all(|tag| found.iter().any(|(_, t)| t == tag)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The `sleep TAG` processes still alive after waiting up to `seconds` for them to go.
fn sleeps_left_after(tags: &[&str], seconds: u64) -> Vec<(i32, String)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let found = sleeps(tags);
        if found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills every `sleep TAG` of its tags when dropped, so that a failing test leaves none behind.
struct KillSleeps(&'static [&'static str]);

impl Drop for KillSleeps {
    fn drop(&mut self) {
        for (pid, _) in sleeps(self.0) {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid).expect("pid"),
                Signal::KILL,
            );
        }
    }
}

/// A child process killed and reaped when dropped.
struct KillChild(Child);

impl Drop for KillChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Processes whose environment holds `MAESTRO_JOB_ID=job_id`, as `pid (comm)`.
fn processes_of_job(job_id: &str) -> Vec<String> {
    let needle = format!("MAESTRO_JOB_ID={job_id}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes())
            && pid_alive(pid)
        {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push(format!("{pid} ({})", comm.trim()));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Unprivileged runs (uid 65534 through setpriv)

/// `program` run as uid and gid 65534 with no supplementary groups.
fn as_nobody(program: &Path) -> Command {
    let mut command = Command::new(require_tool("setpriv"));
    command
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ])
        .arg(program);
    command
}

/// Fails, naming the directory at fault, unless uid 65534 can execute the `mc` under test.
fn assert_nobody_can_run_mc() {
    let bin = Path::new(mc_bin());
    let mut blocked = Vec::new();
    for dir in bin.ancestors().skip(1) {
        if let Ok(meta) = dir.metadata()
            && meta.uid() != NOBODY
            && meta.mode() & 0o001 == 0
        {
            blocked.push(format!("{} ({:o})", dir.display(), meta.mode() & 0o7777));
        }
    }
    let mode = bin.metadata().expect("mc binary").mode();
    assert!(
        blocked.is_empty() && mode & 0o001 != 0,
        "uid {NOBODY} cannot execute {}: directories not traversable by others: {blocked:?}, binary mode {:o}; \
         put CARGO_TARGET_DIR somewhere world-traversable (e.g. /work/target-tests, not under /root)",
        bin.display(),
        mode & 0o7777
    );
    let output = output_within(as_nobody(bin).arg("--version"), 30);
    assert!(
        output.status.success(),
        "mc --version as uid {NOBODY} failed: {}",
        text(&output.stderr)
    );
}

/// An [`Env`] whose workspace uid 65534 may write (the tempdir is made world-writable).
fn nobody_env() -> Env {
    assert_nobody_can_run_mc();
    let env = Env::new();
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    env
}

/// `mc ARGS --state-dir STATE` as uid 65534, in the workspace, with `HOME` there too.
fn mc_as_nobody(env: &Env, args: &[&str]) -> Command {
    let mut command = as_nobody(Path::new(mc_bin()));
    command
        .args(args)
        .arg("--state-dir")
        .arg(&env.state)
        .current_dir(env.path())
        .env("HOME", env.path())
        .env_remove("MAESTRO_HOME")
        .env_remove("TRACE_ID")
        .env_remove("MAESTRO_LOG");
    command
}

fn submit_as_nobody(env: &Env, spec: &Value, file: &str) -> (Output, Value) {
    let file = spec_file(env, file, spec);
    let output = output_within(
        &mut mc_as_nobody(env, &["submit", &file, "--output", "json"]),
        120,
    );
    let json = parse_json(&output);
    (output, json)
}

fn status_as_nobody(env: &Env, job_id: &str) -> Value {
    let output = output_within(
        &mut mc_as_nobody(env, &["status", job_id, "--output", "json"]),
        60,
    );
    assert!(
        output.status.success(),
        "mc status as uid {NOBODY} failed: {}",
        text(&output.stderr)
    );
    parse_json(&output)
}

// ---------------------------------------------------------------------------------------------
// Canaries

/// Evasions of a destruction deny-list, each aimed at `$CANARY` only.
fn evasions() -> Vec<(&'static str, String)> {
    vec![
        ("command substitution", r#"$(echo rm) -rf "$CANARY""#.to_owned()),
        ("backticks", r#"`echo rm` -rf "$CANARY""#.to_owned()),
        ("find -delete", r#"find "$CANARY" -delete"#.to_owned()),
        (
            "base64 round trip into sh",
            r#"echo "rm -rf $CANARY" | base64 | base64 -d | sh"#.to_owned(),
        ),
        (
            "python shutil.rmtree",
            r#"python3 -c "import shutil,os; shutil.rmtree(os.environ['CANARY'])""#.to_owned(),
        ),
        (
            "perl unlink",
            r#"perl -e 'for my $f (glob("$ENV{CANARY}/*"), glob("$ENV{CANARY}/sub/*")) { unlink($f) or die "unlink $f: $!\n" }'"#
                .to_owned(),
        ),
        ("chmod -R 000", r#"chmod -R 000 "$CANARY""#.to_owned()),
        ("truncate by redirection", r#": > "$CANARY/f""#.to_owned()),
        ("mv out to /tmp", r#"mv "$CANARY" /tmp/x"#.to_owned()),
        ("rename inside", r#"mv "$CANARY/a.txt" "$CANARY/moved""#.to_owned()),
        ("ln -sf over a file", r#"ln -sf /etc/hostname "$CANARY/f""#.to_owned()),
        (
            "touch a new file",
            r#"touch "$CANARY/new" "$CANARY/sub/new""#.to_owned(),
        ),
    ]
}

/// Run every evasion against `canary` through `submit`, each as its own job; each must be denied
/// or fail, and the canary must stay byte for byte as it was.
fn evasions_leave_the_canary_intact(
    env: &Env,
    canary: &Canary,
    submit: &dyn Fn(&Value, &str) -> (Output, Value),
) {
    let before = canary.snapshot();
    let mut ran = 0;
    for (index, (what, payload)) in evasions().into_iter().enumerate() {
        let seen = format!("seen-{index}");
        // The listing proves the step could see the canary: surviving is not invisibility.
        let run = format!("ls -A \"$CANARY\" > {seen}; {payload}");
        let spec = json!({
            "name": format!("evade-{index}"),
            "owner": "ana",
            "environment": "dev",
            "env": { "CANARY": canary.path_str() },
            "steps": [{ "name": "evade", "run": run }],
        });
        let (output, report) = submit(&spec, &format!("evade-{index}.json"));
        let code = output.status.code();
        match report["state"].as_str() {
            Some("DENIED") => {
                assert_eq!(code, Some(3), "{what}: {report}");
                assert!(!env.path().join(&seen).exists(), "{what}: denied yet ran");
            }
            Some("FAILED") => {
                assert_eq!(code, Some(1), "{what}: {report}");
                let listing = std::fs::read_to_string(env.path().join(&seen))
                    .unwrap_or_else(|e| panic!("{what}: the step never listed the canary: {e}"));
                assert!(
                    listing.lines().any(|l| l == "a.txt"),
                    "{what}: the step could not see the canary, so this proves nothing: {listing:?}"
                );
                assert_eq!(report["steps"][0]["status"], "failed", "{what}: {report}");
                ran += 1;
            }
            other => panic!(
                "{what}: the job must be DENIED or FAILED, not {other:?}: {report}\nstderr: {}",
                text(&output.stderr)
            ),
        }
        assert_eq!(
            canary.snapshot(),
            before,
            "{what}: the canary outside the workspace changed"
        );
    }
    assert!(
        ran > 0,
        "every evasion was denied by policy: the sandbox itself was never tested"
    );
}

#[test]
fn a_canary_outside_the_workspace_survives_every_evasion() {
    require_tool("python3");
    require_tool("perl");
    require_tool("base64");
    let env = Env::new();
    let canary = Canary::new();
    evasions_leave_the_canary_intact(&env, &canary, &|spec, file| {
        env.submit(&env.write(file, &spec.to_string()), &[])
    });
}

#[test]
fn as_nobody_a_canary_it_owns_survives_every_evasion() {
    require_tool("perl");
    require_tool("base64");
    let env = nobody_env();
    let canary = Canary::new();
    // The canary belongs to uid 65534: file permissions would let it do anything; only the
    // sandbox stops it.
    canary.give_to(NOBODY);
    evasions_leave_the_canary_intact(&env, &canary, &|spec, file| {
        submit_as_nobody(&env, spec, file)
    });
}

#[test]
fn root_in_the_sandbox_cannot_modify_a_root_owned_file_outside_the_workspace() {
    require_root();
    let env = Env::new();
    let canary = Canary::new();
    let target = canary.path().join("a.txt");
    assert_eq!(target.metadata().unwrap().uid(), 0);
    let before = canary.snapshot();
    let spec = json!({
        "name": "root-writes",
        "owner": "ana",
        "env": { "F": target.to_str().unwrap() },
        "steps": [{ "name": "s", "run": concat!(
            "id -u > uid; grep CapEff /proc/self/status > caps; cat \"$F\" > read-back; ",
            "(echo pwned > \"$F\") 2>/dev/null && echo write >> succeeded; ",
            "(echo pwned >> \"$F\") 2>/dev/null && echo append >> succeeded; ",
            "chmod 0666 \"$F\" 2>/dev/null && echo chmod >> succeeded; ",
            "chown 65534 \"$F\" 2>/dev/null && echo chown >> succeeded; ",
            "touch -d 2001-01-01 \"$F\" 2>/dev/null && echo touch >> succeeded; ",
            "true"
        ) }],
    });
    let (output, report) = env.submit(&env.write("root.json", &spec.to_string()), &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}\n{}",
        text(&output.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(env.path().join(name)).unwrap_or_default();
    assert_eq!(read("uid").trim(), "0", "the step should run as uid 0");
    assert_eq!(
        read("caps").split_whitespace().nth(1),
        Some("0000000000000000"),
        "root in the sandbox has capabilities: {}",
        read("caps")
    );
    assert_eq!(
        read("read-back"),
        "the canary sings\n",
        "the step could not even read it"
    );
    assert_eq!(
        read("succeeded"),
        "",
        "root in the sandbox modified a root-owned host file"
    );
    assert_eq!(canary.snapshot(), before);
}

// ---------------------------------------------------------------------------------------------
// The state root

/// A step that tries to wipe the state root (relative to the workspace as `root`) and to plant
/// a file in it, then records what happened.
fn wipe_state_root_spec(root: &str) -> Value {
    job(
        "wipe-state",
        json!([{ "name": "wipe", "run": format!(
            "touch workspace-writable; rm -rf ./{top}; echo $? > rm-status; \
             (echo planted > {root}/planted) 2>/dev/null; \
             (echo torn >> {root}/audit.log) 2>/dev/null; ls {root} > listing",
            top = root.split('/').next().unwrap()
        ) }]),
    )
}

fn assert_state_root_survived(env: &Env, state: &Path, report: &Value, status: &Value) {
    let job_id = report["job_id"].as_str().unwrap();
    assert!(
        env.path().join("workspace-writable").exists(),
        "the step never ran: {report}"
    );
    let rm_status = std::fs::read_to_string(env.path().join("rm-status")).unwrap();
    assert_ne!(
        rm_status.trim(),
        "0",
        "rm -rf of the state root reported success"
    );
    assert!(
        !state.join("planted").exists(),
        "a step wrote the state root"
    );
    assert!(state.join("jobs").join(job_id).is_dir());
    let listing = std::fs::read_to_string(env.path().join("listing")).unwrap();
    assert!(
        listing.lines().any(|l| l == "jobs"),
        "the step saw {listing:?}"
    );
    let audit = std::fs::read_to_string(state.join("audit.log")).unwrap();
    assert!(!audit.contains("torn"), "a step appended to the audit log");
    assert_eq!(status["job_id"], job_id);
    assert_eq!(status["state"], "SUCCEEDED", "{status}");
    assert_eq!(status["steps"][0]["teardown"]["verified"], true, "{status}");
}

#[test]
fn the_default_state_root_survives_rm_rf_var_and_status_still_reads_the_job() {
    let env = Env::new();
    let file = spec_file(&env, "wipe.json", &wipe_state_root_spec("var/maestro"));
    // No MAESTRO_HOME: the state root is the default, var/maestro inside the workspace.
    let mut command = env.mc();
    command
        .env_remove("MAESTRO_HOME")
        .args(["submit", &file, "--output", "json"]);
    let output = output_within(&mut command, 120);
    let report = parse_json(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}\n{}",
        text(&output.stderr)
    );
    let job_id = report["job_id"].as_str().unwrap().to_owned();
    let mut command = env.mc();
    command
        .env_remove("MAESTRO_HOME")
        .args(["status", &job_id, "--output", "json"]);
    let status_output = output_within(&mut command, 60);
    assert!(
        status_output.status.success(),
        "mc status cannot read the job after rm -rf ./var: {}",
        text(&status_output.stderr)
    );
    let status = parse_json(&status_output);
    assert_state_root_survived(&env, &env.path().join("var/maestro"), &report, &status);
}

#[test]
fn as_nobody_the_state_root_survives_rm_rf_from_a_sandboxed_step() {
    let env = nobody_env();
    // --state-dir names `state` inside the workspace.
    let (output, report) = submit_as_nobody(&env, &wipe_state_root_spec("state"), "wipe.json");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}\n{}",
        text(&output.stderr)
    );
    assert_eq!(env.state.metadata().unwrap().uid(), NOBODY);
    let status = status_as_nobody(&env, report["job_id"].as_str().unwrap());
    assert_state_root_survived(&env, &env.state, &report, &status);
}

// ---------------------------------------------------------------------------------------------
// Teardown

/// A step that leaves three sleeps behind in three ways (a new session, a double fork, a
/// cleared environment without `MAESTRO_JOB_ID`) and waits until all three run.
fn leave_sleeps_spec(tags: [&str; 3]) -> Value {
    let [a, b, c] = tags;
    let run = format!(
        "setsid sleep {a} >/dev/null 2>&1 & \
         ( (sleep {b} >/dev/null 2>&1 &) & ) ; \
         (unset MAESTRO_JOB_ID; exec env -i sleep {c} >/dev/null 2>&1) & \
         n=0; for i in $(seq 100); do \
           n=$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -oE 'sleep ({a}|{b}|{c}) ' | sort -u | wc -l); \
           [ \"$n\" -eq 3 ] && break; sleep 0.05; done; echo $n > started"
    );
    job("leftovers", json!([{ "name": "leave", "run": run }]))
}

fn assert_teardown_verified_and_nothing_left(
    env: &Env,
    tags: &[&str],
    report: &Value,
    status: &Value,
) {
    let started = std::fs::read_to_string(env.path().join("started")).unwrap_or_default();
    assert_eq!(
        started.trim(),
        "3",
        "the step did not get its three sleeps going, so this proves nothing"
    );
    let left = sleeps(tags);
    assert!(
        left.is_empty(),
        "processes of the step outlived mc submit: {left:?}"
    );
    for record in [&report["steps"][0], &status["steps"][0]] {
        assert_eq!(record["status"], "succeeded", "{record}");
        assert_eq!(record["teardown"]["method"], "pid_namespace", "{record}");
        assert_eq!(record["teardown"]["verified"], true, "{record}");
    }
    assert_eq!(status["state"], "SUCCEEDED");
}

#[test]
fn leftovers_of_a_sandboxed_step_are_gone_when_submit_returns() {
    const TAGS: &[&str] = &["4111", "4112", "4113"];
    let _cleanup = KillSleeps(TAGS);
    let env = Env::new();
    let (output, report) = env.submit(
        &env.write(
            "leave.json",
            &leave_sleeps_spec(["4111", "4112", "4113"]).to_string(),
        ),
        &[],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}\n{}",
        text(&output.stderr)
    );
    let job_id = report["job_id"].as_str().unwrap();
    let status = env.status(job_id);
    assert_teardown_verified_and_nothing_left(&env, TAGS, &report, &status);
    let stored = env.stored(job_id);
    assert_eq!(
        stored["steps"][0]["teardown"],
        json!({ "method": "pid_namespace", "verified": true })
    );
}

#[test]
fn as_nobody_leftovers_of_a_sandboxed_step_are_gone_when_submit_returns() {
    const TAGS: &[&str] = &["4121", "4122", "4123"];
    let _cleanup = KillSleeps(TAGS);
    let env = nobody_env();
    let (output, report) =
        submit_as_nobody(&env, &leave_sleeps_spec(["4121", "4122", "4123"]), "l.json");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}\n{}",
        text(&output.stderr)
    );
    let status = status_as_nobody(&env, report["job_id"].as_str().unwrap());
    assert_teardown_verified_and_nothing_left(&env, TAGS, &report, &status);
}

/// `mc submit FILE --quiet` started in the background (with `extra` in its environment), once
/// its step has created `marker` in the test's directory.
fn submit_until_marker(env: &Env, file: &str, extra: &[(&str, &str)]) -> KillChild {
    let mc = KillChild(
        env.mc()
            .args(["submit", file, "--quiet"])
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        crate::util::wait_for_file(&env.path().join("marker"), 20),
        "the step never started"
    );
    mc
}

#[test]
fn leftovers_of_a_sandboxed_step_die_when_mc_is_killed_with_sigkill() {
    const TAGS: &[&str] = &["4115", "4116", "4117", "4118"];
    let _cleanup = KillSleeps(TAGS);
    let env = Env::new();
    let spec = job(
        "killed",
        json!([{ "name": "s", "run": "sleep 4115 & setsid sleep 4116 >/dev/null 2>&1 & \
            (unset MAESTRO_JOB_ID; exec env -i sleep 4117 >/dev/null 2>&1) & \
            touch marker; sleep 4118" }]),
    );
    let file = spec_file(&env, "killed.json", &spec);
    let mut mc = submit_until_marker(&env, &file, &[]);
    assert!(
        wait_for_sleeps(TAGS, 10),
        "the step's sleeps never all ran: {:?}",
        sleeps(TAGS)
    );
    let job_id = env.job_ids().first().cloned().expect("a job was recorded");
    assert!(
        !processes_of_job(&job_id).is_empty(),
        "no process carries the job id"
    );
    send_signal(mc.0.id(), Signal::KILL);
    let _ = mc.0.wait();
    let left = sleeps_left_after(TAGS, 5);
    let shims = processes_of_job(&job_id);
    assert!(
        left.is_empty(),
        "processes of the step outlived a SIGKILLed mc: {left:?}"
    );
    assert!(
        shims.is_empty(),
        "processes of job {job_id} outlived a SIGKILLed mc: {shims:?}"
    );
}

/// The children of process `pid` (every thread's), with their command names.
fn children(pid: u32) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            found.push((child, comm.trim().to_owned()));
        }
    }
    found
}

/// `mc submit` forks its sandbox launcher before its first thread, and the step's shim is
/// forked from it (not `mc` executed again); the launcher ends with `mc`, whether `mc` exits
/// or is SIGKILLed, and takes the running step with it.
#[test]
fn submit_forks_its_sandboxes_from_a_launcher_that_ends_with_it() {
    const TAGS: &[&str] = &["4124", "4125"];
    let _cleanup = KillSleeps(TAGS);
    let env = Env::new();
    for (round, tag) in [(0, "4124"), (1, "4125")] {
        let _ = std::fs::remove_file(env.path().join("marker"));
        let spec = job(
            "forked",
            json!([{ "name": "s", "run": format!("touch marker; sleep {tag}") }]),
        );
        let file = spec_file(&env, &format!("forked{round}.json"), &spec);
        let mut mc = submit_until_marker(&env, &file, &[("UNRELATED_TOKEN", "hunter2-canary")]);
        let launchers: Vec<(i32, String)> = children(mc.0.id())
            .into_iter()
            .filter(|(_, comm)| comm == "maestro-launch")
            .collect();
        assert_eq!(
            launchers.len(),
            1,
            "mc's children: {:?}",
            children(mc.0.id())
        );
        let launcher = launchers[0].0;
        let shims = children(launcher.unsigned_abs());
        assert_eq!(
            shims.len(),
            1,
            "the launcher's children should be the step's shim: {shims:?}"
        );
        assert_eq!(shims[0].1, "maestro-shim", "{shims:?}");
        // A fork of mc, yet neither shows mc's environment (an executed launcher has none).
        for pid in [launcher, shims[0].0] {
            let environ = std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_else(|error| panic!("cannot read pid {pid}'s environment: {error}"));
            assert!(
                environ.iter().all(|&byte| byte == 0),
                "pid {pid} shows an environment: {}",
                String::from_utf8_lossy(&environ)
            );
        }
        if round == 0 {
            // Stopped as a user stops it: the job is cancelled, then mc exits.
            send_signal(mc.0.id(), Signal::TERM);
            let status = mc.0.wait().unwrap();
            assert_eq!(status.code(), Some(130), "a stopped job exits 130");
        } else {
            send_signal(mc.0.id(), Signal::KILL);
            let _ = mc.0.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while (pid_alive(launcher) || pid_alive(shims[0].0)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !pid_alive(launcher),
            "the launcher outlived mc (round {round})"
        );
        assert!(
            !pid_alive(shims[0].0),
            "the shim outlived mc (round {round})"
        );
        let left = sleeps_left_after(&[tag], 3);
        assert!(
            left.is_empty(),
            "the step outlived mc (round {round}): {left:?}"
        );
    }
}

/// `mc` as `env WRAPPER… mc ARGS…`, with the environment and directory `env.mc()` gives.
fn mc_under_env(env: &Env, wrapper: &[&str], args: &[&str]) -> Command {
    let mc = env.mc();
    let mut command = Command::new("env");
    command.args(wrapper).arg(mc_bin()).args(args);
    if let Some(dir) = mc.get_current_dir() {
        command.current_dir(dir);
    }
    for (name, value) in mc.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command
}

/// A local `mc submit` runs whatever its parent left it: SIGCHLD ignored (with which the kernel
/// reaps children unseen, so neither `mc` nor its sandbox launcher would learn that one ended)
/// and an environment entry no variable API can name (`=x=y`). A sandboxed and a bare step
/// each run to their end, and nothing panics.
#[test]
fn submit_runs_under_an_ignored_sigchld_and_an_odd_environment() {
    let env = Env::new();
    for (round, isolation) in [(0, "sandbox"), (1, "none")] {
        let spec = job(
            "inherited",
            json!([{ "name": "s", "isolation": isolation, "run": "echo ran" }]),
        );
        let file = spec_file(&env, &format!("inherited{round}.json"), &spec);
        let output = output_within(
            &mut mc_under_env(
                &env,
                &["--ignore-signal=CHLD", "=x=y"],
                &["submit", &file, "--output", "json"],
            ),
            60,
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{isolation}: {stderr}");
        let report = parse_json(&output);
        assert_eq!(report["state"], "SUCCEEDED", "{isolation}: {report}");
        assert!(!stderr.contains("panicked"), "{isolation}: {stderr}");
    }
}

#[test]
fn an_isolation_none_step_that_leaves_a_process_is_teardown_failed() {
    const TAGS: &[&str] = &["4114"];
    let _cleanup = KillSleeps(TAGS);
    let env = Env::new();
    let spec = job(
        "bare",
        json!([{ "name": "bare", "isolation": "none",
            "run": "setsid sleep 4114 >/dev/null 2>&1 & \
                    for i in $(seq 100); do [ -s pid ] && break; pgrep -x -f 'sleep 4114' > pid; sleep 0.05; done" }]),
    );
    let (output, report) = env.submit(&env.write("bare.json", &spec.to_string()), &[]);
    let pid = std::fs::read_to_string(env.path().join("pid")).unwrap_or_default();
    let pid = pid.trim();
    assert!(
        !pid.is_empty(),
        "the step never saw its sleep start: {report}"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{report}\n{}",
        text(&output.stderr)
    );
    let job_id = report["job_id"].as_str().unwrap();
    let status = env.status(job_id);
    assert_eq!(status["state"], "FAILED", "{status}");
    let step = &status["steps"][0];
    assert_eq!(step["status"], "teardown_failed", "{step}");
    assert_eq!(step["teardown"]["method"], "process_group", "{step}");
    assert_eq!(step["teardown"]["verified"], false, "{step}");
    let remaining: Vec<&str> = step["teardown"]["remaining"]
        .as_array()
        .unwrap_or_else(|| panic!("no remaining list: {step}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        remaining
            .iter()
            .any(|r| r.contains(&format!("pid {pid} ")) && r.contains("sleep")),
        "remaining should name pid {pid} (sleep): {remaining:?}"
    );
    let audit: Vec<Value> = env
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "step.teardown_failed" && r["job_id"] == job_id)
        .collect();
    assert_eq!(audit.len(), 1, "no step.teardown_failed audit record");
    let left = sleeps_left_after(TAGS, 3);
    assert!(left.is_empty(), "the leftover is still alive: {left:?}");
}

/// A bare step's leftovers are looked for among `mc`'s descendants (it is their reaper), at any
/// depth: an escaped process's own child, a grandchild of `mc` once the step has ended, is found
/// and killed too.
#[test]
fn isolation_none_leftovers_are_found_at_any_depth_below_mc() {
    const TAGS: &[&str] = &["4126", "4127"];
    let _cleanup = KillSleeps(TAGS);
    let env = Env::new();
    let spec = job(
        "bare-tree",
        json!([{ "name": "bare", "isolation": "none",
            "run": "setsid sh -c 'sleep 4126 & exec sleep 4127' >/dev/null 2>&1 & \
                    for i in $(seq 100); do [ -s pids ] && break; \
                      a=$(pgrep -x -f 'sleep 4126'); b=$(pgrep -x -f 'sleep 4127'); \
                      [ -n \"$a\" ] && [ -n \"$b\" ] && echo \"$a $b\" > pids; sleep 0.05; done" }]),
    );
    let (output, report) = env.submit(&env.write("tree.json", &spec.to_string()), &[]);
    let pids = std::fs::read_to_string(env.path().join("pids")).unwrap_or_default();
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(
        pids.len(),
        2,
        "the step never saw both sleeps start: {report}"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{report}\n{}",
        text(&output.stderr)
    );
    let status = env.status(report["job_id"].as_str().unwrap());
    let step = &status["steps"][0];
    assert_eq!(step["status"], "teardown_failed", "{step}");
    let remaining = step["teardown"]["remaining"].to_string();
    for pid in &pids {
        assert!(
            remaining.contains(&format!("pid {pid} (sleep)")),
            "remaining should name pid {pid}: {remaining}"
        );
    }
    let left = sleeps_left_after(TAGS, 3);
    assert!(left.is_empty(), "a leftover is still alive: {left:?}");
}

/// Leftovers whose parents end while `mc` looks for them are re-parented to `mc` meanwhile,
/// perhaps after it read its own children: it looks again until nothing new turns up, and
/// each list of children is read until it holds still. 150 escaped shells, each ending 0.25 s
/// after it started (around the step's end) while its child lives on: none of the children
/// survives. (Without those two rules, one in two runs left one behind.)
#[test]
fn isolation_none_leftovers_whose_parents_end_during_the_search_are_found() {
    const TAGS: &[&str] = &["4128"];
    let _cleanup = KillSleeps(TAGS);
    let env = Env::new();
    let spec = job(
        "bare-churn",
        json!([{ "name": "bare", "isolation": "none",
            "run": "for i in $(seq 150); do \
                      setsid sh -c 'sleep 4128 & sleep 0.25' >/dev/null 2>&1 & \
                    done; sleep 0.2" }]),
    );
    let (output, report) = env.submit(&env.write("churn.json", &spec.to_string()), &[]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{report}\n{}",
        text(&output.stderr)
    );
    let status = env.status(report["job_id"].as_str().unwrap());
    assert_eq!(status["steps"][0]["status"], "teardown_failed", "{status}");
    let left = sleeps_left_after(TAGS, 3);
    assert!(
        left.is_empty(),
        "{} leftovers are still alive: {left:?}",
        left.len()
    );
}

/// Regression: without a PID namespace a leftover that both left its process group and cleared
/// its environment (`setsid env -i`) once escaped detection; `mc` now adopts orphans (it is a
/// child subreaper), so the leftover is found, killed and reported.
#[test]
fn isolation_none_leftover_with_new_session_and_cleared_env_is_found() {
    const TAGS: &[&str] = &["4119"];
    let _cleanup = KillSleeps(TAGS);
    let env = Env::new();
    let spec = job(
        "bare-escape",
        json!([{ "name": "bare", "isolation": "none",
            "run": "setsid env -i sleep 4119 >/dev/null 2>&1 & \
                    for i in $(seq 100); do [ -s pid ] && break; pgrep -x -f 'sleep 4119' > pid; sleep 0.05; done" }]),
    );
    let (output, report) = env.submit(&env.write("escape.json", &spec.to_string()), &[]);
    assert!(
        std::fs::read_to_string(env.path().join("pid")).is_ok_and(|p| !p.trim().is_empty()),
        "the step never saw its sleep start: {report}"
    );
    let left = sleeps(TAGS);
    let step = &report["steps"][0];
    assert!(
        left.is_empty(),
        "sleep 4119 outlived its isolation: none step: {left:?}"
    );
    assert_eq!(step["teardown"]["verified"], false, "{report}");
    assert_eq!(step["status"], "teardown_failed", "{report}");
    assert_eq!(report["state"], "FAILED", "{report}");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        step["teardown"]["remaining"][0]
            .as_str()
            .is_some_and(|r| r.contains("sleep")),
        "{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// kill -9 -1

#[test]
fn as_nobody_kill_minus_one_inside_the_sandbox_spares_the_hosts_processes() {
    let env = nobody_env();
    // A sentinel of the same user outside: `kill -9 -1` as uid 65534 on the bare host would kill
    // it. Never run kill -1 as root.
    let sentinel = KillChild(
        as_nobody(&require_tool("sleep"))
            .arg("4131")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sentinel_pid = i32::try_from(sentinel.0.id()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeps(&["4131"]).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sleeps(&["4131"]).is_empty(), "the sentinel never started");
    let spec = job(
        "kill-all",
        // `kill -9 -1` spelt out is denied by policy; built at run time it cannot be read, so it
        // is allowed only because the step is contained, which is what this test checks.
        json!([{ "name": "s", "run": "id -u > uid; $(echo kill) -9 -1; echo $? > kill-status; touch survived" }]),
    );
    let (output, report) = submit_as_nobody(&env, &spec, "kill.json");
    let uid = std::fs::read_to_string(env.path().join("uid")).unwrap_or_default();
    assert_eq!(
        uid.trim(),
        NOBODY.to_string(),
        "the step did not run as {NOBODY}: {report}"
    );
    assert!(
        env.path().join("kill-status").exists(),
        "the step never ran kill"
    );
    assert!(
        pid_alive(sentinel_pid),
        "kill -9 -1 inside the sandbox killed a host process of the same user"
    );
    assert!(
        output.status.code() == Some(0) || output.status.code() == Some(1),
        "mc did not survive to report: {:?} {}",
        output.status,
        text(&output.stderr)
    );
    assert!(
        report["job_id"].is_string(),
        "the job was not recorded: {report}"
    );
}

// ---------------------------------------------------------------------------------------------
// Missing kernel support

/// `mc ARGS` in a bubblewrap user namespace that forbids nested user namespaces.
fn without_user_namespaces(env: &Env, args: &[&str]) -> Output {
    let mut command = Command::new(require_tool("bwrap"));
    command
        .args([
            "--dev-bind",
            "/",
            "/",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--",
        ])
        .arg(mc_bin())
        .args(args)
        .current_dir(env.path())
        .env("MAESTRO_HOME", &env.state)
        .env_remove("TRACE_ID")
        .env_remove("MAESTRO_LOG");
    output_within(&mut command, 60)
}

/// The one refusal line names what is missing and the opt-out; the step never runs; the same
/// job with `isolation: none` runs.
#[test]
fn without_user_namespaces_a_sandboxed_step_fails_closed_and_isolation_none_still_runs() {
    let env = Env::new();
    let file = spec_file(
        &env,
        "j.json",
        &job("nsless", json!([{ "name": "s", "run": "touch ran" }])),
    );
    let output = without_user_namespaces(&env, &["submit", &file]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "a refusal is one line, not:\n{stderr}"
    );
    assert!(
        stderr.contains("user namespace"),
        "the line should name what is missing: {stderr}"
    );
    // The in-process check cannot see an outer sandbox's nesting ban; the line the shim gives
    // still says how to run anyway.
    assert!(
        stderr.contains("isolation: none"),
        "the refusal should name the opt-out: {stderr}"
    );
    assert!(
        !env.path().join("ran").exists(),
        "the step ran without its sandbox"
    );

    let bare = spec_file(
        &env,
        "bare.json",
        &job(
            "nsless",
            json!([{ "name": "s", "isolation": "none", "run": "touch ran" }]),
        ),
    );
    let output = without_user_namespaces(&env, &["submit", &bare]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(env.path().join("ran").exists());
}

/// Missing sandbox support fails the job before anything runs, even when only building a
/// sandbox finds out (the in-process check cannot see an outer sandbox's nesting ban) and a
/// bare step comes before the first sandboxed one.
#[test]
fn without_user_namespaces_no_step_runs_before_the_refusal() {
    let env = Env::new();
    let file = spec_file(
        &env,
        "j.json",
        &job(
            "nsless",
            json!([
                { "name": "bare", "isolation": "none", "run": "touch first-ran" },
                { "name": "boxed", "run": "touch second-ran" },
            ]),
        ),
    );
    let output = without_user_namespaces(&env, &["submit", &file]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert!(!env.path().join("second-ran").exists());
    assert!(
        !env.path().join("first-ran").exists(),
        "the job was refused for missing sandbox support only after its first step ran: {}",
        text(&output.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// Policy, through mc validate only: nothing here ever runs

fn step_spec(run: &str, isolation: Option<&str>, env_vars: Value) -> Value {
    let mut step = json!({ "name": "s", "run": run });
    if let Some(isolation) = isolation {
        step["isolation"] = json!(isolation);
    }
    json!({ "name": "v", "owner": "ana", "environment": "dev", "env": env_vars, "steps": [step] })
}

#[test]
fn validate_denies_rm_rf_root_everywhere_and_never_runs_an_evasion() {
    let env = Env::new();
    // Contained: allowed on trust of the sandbox or denied; validate runs nothing either way.
    let (code, report, stderr) = validate(&env, &step_spec("$(echo rm) -rf /", None, json!({})));
    assert!(
        code == Some(0) || code == Some(3),
        "{code:?} {report}{stderr}"
    );
    assert_eq!(report["allowed"], code == Some(0), "{report}");
    for isolation in [None, Some("none")] {
        let (code, report, _) = validate(&env, &step_spec("rm -rf /", isolation, json!({})));
        assert_eq!(code, Some(3), "rm -rf / with isolation {isolation:?}");
        assert!(
            reasons(&report, "no-destruction")
                .iter()
                .any(|r| r.contains("rm -rf /")),
            "{report}"
        );
    }
    assert!(
        env.job_ids().is_empty(),
        "mc validate recorded or ran a job"
    );
}

/// `no-destruction` knows the env a step receives (job and step `env`), so
/// `rm -rf "$BUILD_DIR"/*` with `BUILD_DIR: build` is the build directory, not the root.
#[test]
fn spec_env_is_known_so_a_build_dir_glob_is_allowed() {
    let env = Env::new();
    for isolation in [None, Some("none")] {
        let (code, report, stderr) = validate(
            &env,
            &step_spec(
                "rm -rf \"$BUILD_DIR\"/*",
                isolation,
                json!({ "BUILD_DIR": "build" }),
            ),
        );
        assert_eq!(
            code,
            Some(0),
            "isolation {isolation:?}: BUILD_DIR is set to build by the spec: {report}{stderr}"
        );
    }
}

/// A command word made by command substitution cannot be shown harmless: an `isolation: none`
/// step with one is denied, with a reason naming the construct.
#[test]
fn command_substitution_as_the_command_is_denied_in_isolation_none() {
    let env = Env::new();
    for evasion in [
        "$(echo rm) -rf /",
        "`echo rm` -rf /",
        "$(echo rm -rf /)",
        "eval \"$(echo rm) -rf /\"",
    ] {
        let (code, report, stderr) = validate(&env, &step_spec(evasion, Some("none"), json!({})));
        assert_eq!(
            code,
            Some(3),
            "{evasion:?} in an isolation: none step was allowed: {report}{stderr}"
        );
        let found = reasons(&report, "no-destruction");
        assert!(
            found
                .iter()
                .any(|r| r.contains("$(") || r.contains('`') || r.contains("substitution")),
            "{evasion:?}: the reason should name the construct: {found:?}"
        );
    }
}

#[test]
fn validate_refuses_lookalike_identities_and_compares_them_as_read() {
    let env = Env::new();
    for (field, value, needle) in [
        ("environment", "prod\u{200b}", "invisible"),
        ("environment", "\u{0440}rod", "scripts"),
        ("owner", "\u{200b}", "invisible"),
    ] {
        let mut spec = job("ids", json!([{ "name": "s", "run": "true" }]));
        spec[field] = json!(value);
        spec["approval"] = json!({ "approved_by": "bo" });
        let (code, _, stderr) = validate(&env, &spec);
        assert_eq!(code, Some(2), "{field} {value:?}: {stderr}");
        assert!(
            stderr.contains(field) && stderr.contains(needle),
            "{field} {value:?}: unclear message {stderr}"
        );
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{stderr}"
        );
    }
    let mut spec = job("fullwidth", json!([{ "name": "s", "run": "true" }]));
    spec["environment"] = json!("prod");
    spec["approval"] = json!({ "approved_by": "ａｎａ" });
    let (code, report, stderr) = validate(&env, &spec);
    assert_eq!(code, Some(3), "{report}{stderr}");
    assert!(
        !reasons(&report, "prod-requires-approval").is_empty(),
        "{report}"
    );
}

#[test]
fn validate_limits_host_access_and_writable_paths() {
    let env = Env::new();
    for (field, value, needle) in [
        ("host_access", json!(["docker-socket"]), "docker-socket"),
        ("writable_paths", json!(["/etc"]), "/etc"),
        ("writable_paths", json!(["/work/../etc/ssh"]), "/etc"),
    ] {
        let mut spec = job("limits", json!([{ "name": "s", "run": "true" }]));
        spec["steps"][0][field] = value.clone();
        let (code, report, stderr) = validate(&env, &spec);
        assert_eq!(code, Some(3), "{field} {value}: {report}{stderr}");
        let found = reasons(&report, "sandbox-limits");
        assert!(
            found.iter().any(|r| r.contains(needle)),
            "{field} {value}: {found:?}"
        );
    }
    let mut spec = job("limits", json!([{ "name": "s", "run": "true" }]));
    spec["steps"][0]["host_access"] = json!(["ssh"]);
    spec["steps"][0]["writable_paths"] = json!(["cache"]);
    let (code, report, stderr) = validate(&env, &spec);
    assert_eq!(code, Some(0), "{report}{stderr}");
}

/// Policy cannot see where a link leads, least of all one an earlier step makes: the sandbox
/// judges the real path. The second step would only write a marker in the workspace.
#[test]
fn a_writable_path_an_earlier_step_links_to_a_system_directory_is_refused() {
    let env = Env::new();
    let spec = job(
        "links",
        json!([
            { "name": "plant", "run": "ln -s /usr/bin cron" },
            { "name": "use", "writable_paths": ["cron"], "run": "touch used" },
        ]),
    );
    let (code, report, stderr) = validate(&env, &spec);
    assert_eq!(code, Some(0), "policy reads names only: {report}{stderr}");
    let file = spec_file(&env, "links.json", &spec);
    let output = output_within(env.mc().args(["submit", &file, "--output", "json"]), 120);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "step \"use\": /usr/bin (it is {} through a link) is, holds or lies in a system directory, and no step may write it",
            env.path().join("cron").display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("isolation: none"),
        "no reason to drop the sandbox: {stderr}"
    );
    assert!(!env.path().join("used").exists(), "the step ran");
}

// ---------------------------------------------------------------------------------------------
// What a step sees

#[test]
fn credential_dirs_under_home_are_hidden_unless_host_access_names_them() {
    let env = Env::new();
    let home = outside_tmp("maestro-home-");
    for (path, content) in [
        (".ssh/id_test", "ssh secret\n"),
        (".aws/credentials", "aws secret\n"),
        ("visible.txt", "plain file\n"),
    ] {
        let path = home.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let read_all = "for f in visible.txt .ssh/id_test .aws/credentials; do \
                    if cat \"$HOME/$f\" >/dev/null 2>&1 && [ -s \"$HOME/$f\" ]; then echo \"read $f\"; else echo \"hidden $f\"; fi; \
                    done > seen-$MAESTRO_STEP";
    let spec = job(
        "home",
        json!([
            { "name": "default", "run": read_all },
            { "name": "ssh", "run": read_all, "host_access": ["ssh"] },
        ]),
    );
    let file = env.write("home.json", &spec.to_string());
    let output = output_within(
        env.mc()
            .args(["submit", file.to_str().unwrap(), "--output", "json"])
            .env("HOME", home.path()),
        120,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let seen = |step: &str| {
        std::fs::read_to_string(env.path().join(format!("seen-{step}")))
            .unwrap_or_else(|e| panic!("step {step} did not report: {e}"))
    };
    assert_eq!(
        seen("default"),
        "read visible.txt\nhidden .ssh/id_test\nhidden .aws/credentials\n"
    );
    assert_eq!(
        seen("ssh"),
        "read visible.txt\nread .ssh/id_test\nhidden .aws/credentials\n"
    );
}

/// Regression: the hidden paths were computed from the shim's environment, which is the step's:
/// a spec setting `HOME` moved them away and uncovered the caller's real `~/.ssh`.
#[test]
fn a_spec_setting_home_does_not_uncover_the_callers_credentials() {
    let env = Env::new();
    let home = outside_tmp("maestro-home-");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/id_test"), "ssh secret\n").unwrap();
    let elsewhere = outside_tmp("maestro-elsewhere-");
    let real = home.path().join(".ssh/id_test");
    let spec = json!({
        "name": "home-moved", "owner": "ana", "environment": "dev",
        "env": { "HOME": elsewhere.path(), "REAL_KEY": real },
        "steps": [{ "name": "s",
            "run": "if [ -s \"$REAL_KEY\" ] && cat \"$REAL_KEY\" >/dev/null 2>&1; then echo read; else echo hidden; fi > seen" }],
    });
    let file = env.write("moved.json", &spec.to_string());
    let output = output_within(
        env.mc()
            .args(["submit", file.to_str().unwrap(), "--output", "json"])
            .env("HOME", home.path()),
        120,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        std::fs::read_to_string(env.path().join("seen")).unwrap(),
        "hidden\n"
    );
}

#[test]
fn network_none_leaves_only_loopback() {
    let env = Env::new();
    let spec = job(
        "net",
        json!([
            { "name": "none", "network": "none", "run": "cat /proc/net/dev > net-none" },
            { "name": "host", "run": "cat /proc/net/dev > net-host" },
        ]),
    );
    let (output, report) = env.submit(&env.write("net.json", &spec.to_string()), &[]);
    assert_eq!(output.status.code(), Some(0), "{report}");
    let interfaces = |file: &str| -> Vec<String> {
        std::fs::read_to_string(env.path().join(file))
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, _)| name.trim().to_owned())
            .collect()
    };
    assert_eq!(interfaces("net-none"), ["lo"]);
    let host: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .collect();
    assert_eq!(
        interfaces("net-host"),
        host,
        "network: host (the default) shares the host's interfaces"
    );
}

#[test]
fn tmp_inside_is_private_and_empty() {
    let env = Env::new();
    let unique = format!(
        "maestro-private-{}-{}",
        std::process::id(),
        env.path().file_name().unwrap().to_str().unwrap()
    );
    let host_file = PathBuf::from("/tmp").join(format!("{unique}-host"));
    std::fs::write(&host_file, "host only\n").unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(host_file.clone());
    let _remove_inside = Remove(PathBuf::from("/tmp").join(format!("{unique}-inside")));
    let spec = job(
        "tmp",
        json!([{ "name": "s", "run": format!(
            "ls -A /tmp > tmp-listing; echo secret > /tmp/{unique}-inside && echo wrote > wrote; \
             test -e /tmp/{unique}-host && echo visible > host-visible; echo \"$TMPDIR\" > tmpdir; true"
        ) }]),
    );
    let (output, report) = env.submit(&env.write("tmp.json", &spec.to_string()), &[]);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(
        env.path().join("wrote").exists(),
        "the step could not write its /tmp"
    );
    assert!(
        !env.path().join("host-visible").exists(),
        "the host's /tmp is visible inside"
    );
    assert!(
        !PathBuf::from("/tmp")
            .join(format!("{unique}-inside"))
            .exists(),
        "a file written to /tmp inside appeared on the host"
    );
    // A workspace under /tmp has its mount point made in the private /tmp; nothing else is there.
    let listing = std::fs::read_to_string(env.path().join("tmp-listing")).unwrap();
    let expected: Vec<String> = env
        .path()
        .strip_prefix("/tmp")
        .ok()
        .and_then(|rest| rest.components().next())
        .map(|first| first.as_os_str().to_string_lossy().into_owned())
        .into_iter()
        .collect();
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        expected,
        "/tmp inside is not empty"
    );
    assert_eq!(
        std::fs::read_to_string(env.path().join("tmpdir"))
            .unwrap()
            .trim(),
        "/tmp"
    );
}

/// Processes whose working directory is `dir`: `mc`'s forks (launcher, shims) keep its own.
fn processes_in(dir: &Path) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_owned()));
        }
    }
    found
}

/// A local submit builds the first step's sandbox while it stores the job, the step held until
/// `RUNNING` is durable. A job that fails before that step runs (here another runtime's plugin
/// cannot start) has the sandbox torn down: the step never ran, and nothing of it is left.
#[test]
fn a_sandbox_built_ahead_for_a_step_that_never_runs_runs_nothing_and_is_torn_down() {
    let env = Env::new();
    let plugins = env.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let broken = plugins.join("mc-executor-broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = job(
        "ahead",
        json!([
            { "name": "first", "run": "touch ran" },
            { "name": "second", "run": "true", "runtime": "broken" }
        ]),
    );
    let file = spec_file(&env, "ahead.json", &spec);
    // A root that exists (a new root's first job has its sandbox built when the step runs).
    let first = env.run(&[
        "submit",
        &spec_file(
            &env,
            "first.json",
            &job("first", json!([{ "name": "a", "run": "true" }])),
        ),
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let output = output_within(
        env.mc()
            .args(["submit", &file, "--output", "json"])
            .env("MAESTRO_PLUGIN_PATH", &plugins)
            .env("MAESTRO_LOG", "debug"),
        120,
    );
    let report = parse_json(&output);
    assert_eq!(report["state"], "FAILED", "{}", text(&output.stderr));
    assert_eq!(report["steps"], json!([]), "no step ran: {report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("staged sandboxes released unused"),
        "the first step's sandbox was not built ahead, or not released: {stderr}"
    );
    assert!(
        !env.path().join("ran").exists(),
        "the held step ran although its job failed before it"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(env.path()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_in(env.path()), [], "left behind by the job");
}
