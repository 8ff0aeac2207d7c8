//! `mc serve` black-box: a real server on a loopback port, driven with curl.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Env, job_yaml, mc_bin, text};

/// A running `mc serve`, killed (by pid) when dropped, also when a test panics.
pub struct Server {
    child: Option<Child>,
    pub url: String,
}

impl Server {
    /// `mc` pointed at this server with `token`, in `env`'s workspace.
    pub fn mc(&self, env: &Env, token: &str) -> Command {
        let mut command = env.mc();
        command
            .env("MAESTRO_SERVER", &self.url)
            .env("MAESTRO_TOKEN", token);
        command
    }

    /// `mc ARGS` through this server, within two minutes.
    pub fn run(&self, env: &Env, token: &str, args: &[&str]) -> Output {
        crate::util::output_within(self.mc(env, token).args(args), 120)
    }

    pub fn start(env: &Env, extra: &[&str]) -> Self {
        Self::start_with(env, extra, &[])
    }

    /// [`Server::start`] with `vars` in the server's environment.
    pub fn start_with(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> Self {
        let mut child = env
            .mc()
            .envs(vars.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mc serve");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let mut server = Self {
            child: Some(child),
            url: String::new(),
        };
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("mc serve printed its address");
        server.url = line
            .trim()
            .strip_prefix("mc serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `curl` a request; the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut command = Command::new("curl");
        command.args([
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(content_type) = content_type {
            command.args(["-H", &format!("Content-Type: {content_type}")]);
        }
        if body.is_some() {
            command.args(["--data-binary", "@-"]);
        }
        command.arg(format!("{}{path}", self.url));
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        if let Some(body) = body {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())
                .expect("write body");
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("curl output");
        let out = text(&output.stdout);
        let (body, code) = out.rsplit_once('\n').expect("status line");
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    pub fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let (code, text) = self.request(
            method,
            path,
            token,
            body.map(|(content_type, _)| content_type),
            body.map(|(_, body)| body),
        );
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, value)
    }

    pub fn submit_yaml(&self, token: &str, spec: &str) -> (u16, Value) {
        self.json(
            "POST",
            "/v1/jobs",
            Some(token),
            Some(("application/yaml", spec)),
        )
    }

    /// Poll the job until it is in `state` (or fail after `seconds`).
    pub fn wait_state(&self, token: &str, job_id: &str, state: &str, seconds: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let (code, job) = self.json("GET", &format!("/v1/jobs/{job_id}"), Some(token), None);
            assert_eq!(code, 200, "{job}");
            if job["state"] == state {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job never reached {state}: {job:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        crate::util::send_signal(self.pid(), signal);
    }

    /// Wait for the server to exit by itself.
    pub fn wait_exit(&mut self, seconds: u64) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mc serve did not exit within {seconds} s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Make a token; the last line of `mc tokens add`'s stdout.
pub fn token(env: &Env, identity: &str, roles: &str) -> String {
    let output = env.run(&["tokens", "add", identity, "--roles", roles]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .last()
        .expect("token line")
        .to_owned()
}

fn spec(name: &str, run: &str) -> String {
    job_yaml(name, &format!("  - name: a\n    run: {run}\n"))
}

#[test]
fn serve_refuses_a_non_loopback_address_without_insecure_listen() {
    let env = Env::new();
    let output = env.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("TLS"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
}

#[test]
fn tokens_are_printed_once_stored_hashed_listed_and_revoked() {
    let env = Env::new();
    let token = token(&env, "ana", "submit,approve");
    assert!(token.starts_with("mct_"), "{token}");
    let file = std::fs::read_to_string(env.state.join("tokens.json")).unwrap();
    assert!(!file.contains(&token), "only the hash is stored");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.state.join("tokens.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The state root it created is the owner's alone, as every command creates it.
    let mode = std::fs::metadata(&env.state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the state root tokens add created");
    let list = text(&env.run(&["tokens", "list"]).stdout);
    assert!(
        list.contains("ana") && list.contains("submit,approve"),
        "{list}"
    );
    assert!(!list.contains(&token));
    let bad = env.run(&["tokens", "add", "bo", "--roles", "root"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("unknown role \"root\""));
    assert!(env.run(&["tokens", "revoke", "ana"]).status.success());
    let list = text(&env.run(&["tokens", "list", "--output", "json"]).stdout);
    assert_eq!(serde_json::from_str::<Value>(&list).unwrap(), json!([]));
}

#[test]
fn a_job_submitted_through_the_api_runs_and_is_on_record() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);

    let (code, health) = server.json("GET", "/v1/health", None, None);
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));
    let (code, body) = server.json("GET", "/v1/jobs", None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Authorization"));
    let (code, body) = server.json("GET", "/v1/jobs", Some("mct_nope"), None);
    assert_eq!(code, 401, "{body}");

    let spec_text = "# kept byte for byte\nname: hi\nenvironment: dev\nsteps:\n  - name: a\n    run: echo hello from the server\n";
    let (code, submitted) = server.submit_yaml(&ana, spec_text);
    assert_eq!(code, 201, "{submitted}");
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    let job = server.wait_state(&ana, &job_id, "SUCCEEDED", 60);
    assert_eq!(
        job["owner"], "ana",
        "the owner is the authenticated identity"
    );
    assert_eq!(job["steps"][0]["status"], "succeeded");
    let states: Vec<&str> = job["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["SUBMITTED", "RUNNING", "SUCCEEDED"]);
    assert!(
        job["verdicts"].as_array().is_some_and(|v| v.len() == 5),
        "{job}"
    );
    let stored = std::fs::read(env.state.join("jobs").join(&job_id).join("spec.yaml")).unwrap();
    assert_eq!(stored, spec_text.as_bytes());

    let (code, logs) = server.request(
        "GET",
        &format!("/v1/jobs/{job_id}/logs"),
        Some(&ana),
        None,
        None,
    );
    assert_eq!(code, 200);
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l["line"]
            .as_str()
            .unwrap()
            .ends_with("hello from the server")),
        "{logs}"
    );
    assert_eq!(lines[0]["seq"], 1);

    let (code, list) = server.json(
        "GET",
        "/v1/jobs?state=succeeded&owner=ana",
        Some(&ana),
        None,
    );
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["jobs"][0]["job_id"], job_id.as_str());
    let (code, list) = server.json("GET", "/v1/jobs?state=bogus", Some(&ana), None);
    assert_eq!(code, 400);
    assert!(
        list["error"].as_str().unwrap().contains("unknown state"),
        "{list}"
    );

    let (code, metrics) = server.request("GET", "/v1/metrics", Some(&ana), None, None);
    assert_eq!(code, 200);
    assert!(metrics.contains("maestro_queue_depth 0"), "{metrics}");
    assert!(
        metrics.contains("maestro_jobs{state=\"SUCCEEDED\"} 1"),
        "{metrics}"
    );

    let audit = std::fs::read_to_string(env.state.join("audit.log")).unwrap();
    assert!(!audit.contains(&ana), "tokens never reach the audit log");
    let submitted_record = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["event"] == "api.job_submitted")
        .expect("the submission is audited");
    assert_eq!(submitted_record["details"]["identity"], "ana");
    assert_eq!(submitted_record["trace_id"], submitted["trace_id"]);
}

#[test]
fn bad_requests_get_one_clear_message_each() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let viewer = token(&env, "vi", "cancel");
    let server = Server::start(&env, &[]);

    let (code, body) = server.submit_yaml(&viewer, &spec("j", "true"));
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("submit role"),
        "{body}"
    );

    let (code, body) = server.submit_yaml(
        &ana,
        "name: j\nsteps:\n  - name: a\n    run: true\n    bogus: 1\n",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("bogus"), "{body}");

    let (code, body) = server.json("POST", "/v1/jobs", Some(&ana), Some(("text/plain", "x")));
    assert_eq!(code, 415, "{body}");

    let big = format!("name: j\n# {}\nsteps: []\n", "x".repeat(2 * 1024 * 1024));
    let (code, body) = server.submit_yaml(&ana, &big);
    assert_eq!(code, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");

    let (code, body) = server.submit_yaml(&ana, &spec("j", "rm -rf /"));
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["state"], "DENIED");
    assert!(
        body["verdicts"].as_array().is_some_and(|v| v.len() == 5),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("no-destruction"),
        "{body}"
    );

    let other = "name: j\nowner: bo\nsteps:\n  - name: a\n    run: true\n";
    let (code, body) = server.submit_yaml(&ana, other);
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("owner \"bo\""),
        "{body}"
    );

    let (code, body) = server.json("GET", "/v1/jobs/not-a-job", Some(&ana), None);
    assert_eq!(code, 400, "{body}");
    // A path that is not UTF-8 is refused in JSON too, on every route that takes a job id.
    for (method, path) in [
        ("GET", "/v1/jobs/%ff%fe"),
        ("GET", "/v1/jobs/%ff%fe/logs"),
        ("POST", "/v1/jobs/%ff%fe/cancel"),
    ] {
        let (code, body) = server.json(method, path, Some(&ana), None);
        assert_eq!(code, 400, "{method} {path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("not a job id")),
            "{method} {path}: {body}"
        );
    }
    let (code, body) = server.json(
        "GET",
        "/v1/jobs/0192f0c1-aaaa-7bbb-8ccc-123456789abc",
        Some(&ana),
        None,
    );
    assert_eq!(code, 404, "{body}");
    let (code, body) = server.json("GET", "/nowhere", Some(&ana), None);
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].is_string());
}

const PROD: &str = "name: release\nenvironment: production\napproval:\n  approved_by: bo\nsteps:\n  - name: a\n    run: echo released\n";

#[test]
fn production_jobs_wait_for_an_approver_other_than_the_owner() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit,approve");
    let bo = token(&env, "bo", "approve");
    let cy = token(&env, "cy", "submit");
    let server = Server::start(&env, &[]);

    // The spec's own approval block does not count on the server.
    let (code, submitted) = server.submit_yaml(&ana, PROD);
    assert_eq!(code, 201, "{submitted}");
    assert_eq!(submitted["state"], "AWAITING_APPROVAL");
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    let approve = format!("/v1/jobs/{job_id}/approve");
    let (code, body) = server.json("POST", &approve, Some(&ana), None);
    assert_eq!(code, 403, "four eyes: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("owns job"),
        "{body}"
    );
    let (code, body) = server.json("POST", &approve, Some(&cy), None);
    assert_eq!(code, 403, "no approve role: {body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.wait_state(&ana, &job_id, "AWAITING_APPROVAL", 5)["steps"],
        json!([])
    );

    let (code, body) = server.json(
        "POST",
        &approve,
        Some(&bo),
        Some(("application/json", r#"{"reason":"CHG-1"}"#)),
    );
    assert_eq!(code, 200, "{body}");
    let job = server.wait_state(&ana, &job_id, "SUCCEEDED", 60);
    let approval = crate::util::approval_of(&job);
    assert_eq!(approval["approved_by"], "bo");
    assert_eq!(approval["reason"], "CHG-1");
    let (code, _) = server.json("POST", &approve, Some(&bo), None);
    assert_eq!(code, 409, "nothing left to approve");

    // Rejected: DENIED, never run.
    let (_, submitted) = server.submit_yaml(&ana, PROD);
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    let (code, body) = server.json(
        "POST",
        &format!("/v1/jobs/{job_id}/reject"),
        Some(&bo),
        None,
    );
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("DENIED")),
        "{body}"
    );
    let job = server.wait_state(&ana, &job_id, "DENIED", 5);
    assert_eq!(job["steps"], json!([]));
    let audit = std::fs::read_to_string(env.state.join("audit.log")).unwrap();
    assert!(audit.contains("\"job.approved\"") && audit.contains("\"job.rejected_by_approver\""));
}

#[test]
fn the_queue_runs_in_order_refuses_when_full_and_cancels() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(
        &env,
        &[
            "--max-concurrent-jobs",
            "1",
            "--queue-limit",
            "1",
            "--stop-grace",
            "1",
        ],
    );

    let (code, first) = server.submit_yaml(&ana, &spec("first", "sleep 30"));
    assert_eq!(code, 201, "{first}");
    let first = first["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &first, "RUNNING", 30);
    let (code, second) = server.submit_yaml(&ana, &spec("second", "true"));
    assert_eq!(code, 201, "{second}");
    let second = second["job_id"].as_str().unwrap().to_owned();
    let (code, full) = server.submit_yaml(&ana, &spec("third", "true"));
    assert_eq!(code, 429, "{full}");
    assert!(
        full["error"].as_str().unwrap().contains("queue is full"),
        "{full}"
    );
    let (_, metrics) = server.request("GET", "/v1/metrics", Some(&ana), None, None);
    assert!(
        metrics.contains("maestro_queue_depth 1") && metrics.contains("maestro_jobs_running 1"),
        "{metrics}"
    );

    // Cancelled while queued: never runs.
    let (code, body) = server.json(
        "POST",
        &format!("/v1/jobs/{second}/cancel"),
        Some(&ana),
        None,
    );
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("CANCELLED")),
        "{body}"
    );
    // Cancelled while running: stopped as Ctrl-C would.
    let (code, body) = server.json(
        "POST",
        &format!("/v1/jobs/{first}/cancel"),
        Some(&ana),
        None,
    );
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("CANCELLED")),
        "{body}"
    );
    let job = server.wait_state(&ana, &first, "CANCELLED", 5);
    assert_eq!(job["steps"][0]["status"], "cancelled");
    let job = server.wait_state(&ana, &second, "CANCELLED", 5);
    assert_eq!(job["steps"], json!([]), "nothing of it ran");
    assert!(
        !env.state
            .join("jobs")
            .join(&second)
            .join("logs/a.log")
            .exists()
    );
}

#[test]
fn sigterm_drains_running_jobs_and_refuses_new_ones() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let mut server = Server::start(&env, &["--drain-grace", "1", "--stop-grace", "1"]);
    let (_, short) = server.submit_yaml(&ana, &spec("short", "sleep 0.2"));
    let (_, long) = server.submit_yaml(&ana, &spec("long", "sleep 60"));
    let long = long["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &long, "RUNNING", 30);
    // Followed through the server while it drains: the follow ends with the job's end and
    // exits as the job did (cancelled: 130), though the server answers nothing after.
    let follower = server
        .mc(&env, &ana)
        .args(["logs", &long, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.signal(rustix::process::Signal::TERM);
    std::thread::sleep(Duration::from_millis(300));
    let (code, body) = server.submit_yaml(&ana, &spec("late", "true"));
    assert_eq!(code, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("shutting down"));
    let status = server.wait_exit(30);
    assert!(status.success(), "{status:?}");
    let followed = crate::util::output_within_child(follower);
    assert_eq!(
        followed.status.code(),
        Some(130),
        "{}{}",
        text(&followed.stdout),
        text(&followed.stderr)
    );
    let store = |id: &str| {
        env.stored(id)["transitions"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(store(short["job_id"].as_str().unwrap()), "SUCCEEDED");
    assert_eq!(store(&long), "CANCELLED");
}

#[test]
fn after_a_crash_queued_jobs_run_and_running_ones_are_settled_abandoned() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let mut server = Server::start(&env, &["--max-concurrent-jobs", "1"]);
    let (_, running) = server.submit_yaml(&ana, &spec("running", "sleep 60"));
    let running = running["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &running, "RUNNING", 30);
    let (_, queued) = server.submit_yaml(&ana, &spec("queued", "echo after the crash"));
    let queued = queued["job_id"].as_str().unwrap().to_owned();
    server.kill();

    let server = Server::start(&env, &["--max-concurrent-jobs", "1"]);
    let job = server.wait_state(&ana, &running, "FAILED", 10);
    let last = job["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["detail"]["reason"], "abandoned", "{last}");
    server.wait_state(&ana, &queued, "SUCCEEDED", 60);
    let (_, list) = server.json(
        "GET",
        "/v1/jobs?state=submitted,running,awaiting_approval",
        Some(&ana),
        None,
    );
    assert_eq!(list["jobs"], json!([]), "nothing stays unfinished");
}

#[test]
fn followed_logs_stream_until_the_job_ends_and_resume_after_a_sequence_number() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);
    let spec_text = job_yaml(
        "chatty",
        "  - name: a\n    run: for i in 1 2 3; do echo line-$i; sleep 0.3; done\n  - name: b\n    run: echo last-line\n",
    );
    let (_, submitted) = server.submit_yaml(&ana, &spec_text);
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    let (code, body) = server.request(
        "GET",
        &format!("/v1/jobs/{job_id}/logs?follow=true"),
        Some(&ana),
        None,
        None,
    );
    assert_eq!(code, 200);
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["end"], true, "{body}");
    assert_eq!(last["state"], "SUCCEEDED");
    let text_of = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l["line"].as_str().map(str::to_owned))
            .collect()
    };
    let all = text_of(&lines);
    for needle in ["line-1", "line-2", "line-3", "last-line"] {
        assert!(
            all.iter().any(|l| l.ends_with(needle)),
            "{needle} in {body}"
        );
    }
    // A client that got the first three lines resumes after seq 3.
    let (_, rest) = server.request(
        "GET",
        &format!("/v1/jobs/{job_id}/logs?follow=true&after=3"),
        Some(&ana),
        None,
        None,
    );
    let rest: Vec<Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rest[0]["seq"], 4);
    assert_eq!(text_of(&rest), all[3..]);
}

#[test]
fn a_client_sending_a_byte_a_second_blocks_no_one_and_is_cut_off() {
    let env = Env::new();
    let server = Server::start(&env, &["--header-timeout", "2"]);
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let request = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut cut_off = false;
    for byte in request.iter().take(6) {
        if slow.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        let begun = Instant::now();
        let (code, _) = server.request("GET", "/v1/health", None, None, None);
        assert_eq!(code, 200);
        assert!(
            begun.elapsed() < Duration::from_secs(1),
            "another client was held up"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    if !cut_off {
        let mut buffer = Vec::new();
        let _ = slow.read_to_end(&mut buffer);
        let answer = String::from_utf8_lossy(&buffer);
        assert!(
            !answer.contains("200 OK"),
            "a request that took 6 s for its headers was served: {answer}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn the_served_openapi_document_is_the_committed_one() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let (code, served) = server.request("GET", "/v1/openapi.json", None, None, None);
    assert_eq!(code, 200);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert!(
        served == committed,
        "docs/openapi.json is stale: regenerate it with `MAESTRO_WRITE_OPENAPI=1 cargo test -p maestro-server openapi`"
    );
    let _ = mc_bin();
}

#[test]
fn the_cli_is_a_client_with_server_and_maestro_token() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);
    let remote = |args: &[&str], token: &str| {
        crate::util::output_within(
            env.mc()
                .env("MAESTRO_SERVER", &server.url)
                .env("MAESTRO_TOKEN", token)
                // The client must not need the state root: point it elsewhere.
                .env("MAESTRO_HOME", env.path().join("elsewhere"))
                .args(args),
            120,
        )
    };
    let file = env.write("job.yaml", &spec("remote", "echo through the server"));
    let output = remote(&["submit", file.to_str().unwrap()], &ana);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("through the server"),
        "live output: {stdout}"
    );
    assert!(stdout.contains("SUCCEEDED"), "{stdout}");

    let output = remote(&["submit", "--detach", file.to_str().unwrap()], &ana);
    assert_eq!(output.status.code(), Some(0));
    let job_id = text(&output.stdout).trim().to_owned();
    server.wait_state(&ana, &job_id, "SUCCEEDED", 60);
    let output = remote(&["status", &job_id, "--output", "json"], &ana);
    let job: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(job["state"], "SUCCEEDED");
    // The same output as a local `mc status` of the same state root, in both formats, for one
    // job and for the listing (every job has ended: nothing moves between the two).
    for args in [
        &["status", &job_id, "--output", "json"][..],
        &["status", &job_id],
        &["status", "--output", "json"],
        &["status"],
        &["status", "--limit", "1"],
        &["status", "--state", "succeeded", "--limit", "0"],
        &["logs", &job_id],
        &["logs", &job_id, "--output", "json"],
        &["logs", &job_id, "--raw"],
        &["logs", &job_id, "--since-seq", "1"],
        &["logs", &job_id, "--step", "a", "--raw"],
        &["logs", &job_id, "--step", "nope"],
    ] {
        let (here, there) = (env.run(args), remote(args, &ana));
        assert_eq!(
            (
                text(&there.stdout),
                text(&there.stderr),
                there.status.code()
            ),
            (text(&here.stdout), text(&here.stderr), here.status.code()),
            "mc {args:?} through the server differs from a local one"
        );
    }
    let output = remote(&["logs", &job_id], &ana);
    assert!(text(&output.stdout).contains("through the server"));
    // A job the server does not have: one line in the command line's words, and a hint.
    let output = remote(&["status", "01a23396-042e-75e0-9cc8-f7f1f55c1616"], &ana);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("error: no job") && !stderr.contains("GET /v1/jobs"),
        "{stderr}"
    );
    assert!(stderr.contains("`mc status` lists"), "{stderr}");
    let output = remote(&["cancel", &job_id], &ana);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).contains("already ended"));
    let output = remote(&["status"], &ana);
    assert!(text(&output.stdout).contains(&job_id));

    let denied = env.write("denied.yaml", &spec("bad", "rm -rf /"));
    let output = remote(&["submit", denied.to_str().unwrap()], &ana);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let output = remote(&["status"], "mct_wrong");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("MAESTRO_TOKEN"));
    let output = remote(&["gc"], &ana);
    assert_eq!(output.status.code(), Some(2), "not a client command yet");

    // Approvals from the command line: four eyes hold there too.
    let bo = token(&env, "bo", "approve");
    let prod = env.write("prod.yaml", PROD);
    let output = remote(&["submit", "--detach", prod.to_str().unwrap()], &ana);
    let job_id = text(&output.stdout).trim().to_owned();
    server.wait_state(&ana, &job_id, "AWAITING_APPROVAL", 10);
    let output = remote(&["approve", &job_id], &ana);
    assert_eq!(output.status.code(), Some(2), "ana has no approve role");
    let output = remote(&["approve", &job_id, "--reason", "CHG-7"], &bo);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("approved by bo"));
    server.wait_state(&ana, &job_id, "SUCCEEDED", 60);
    let local = env.run(&["approve", &job_id]);
    assert_eq!(local.status.code(), Some(2));
    assert!(text(&local.stderr).contains("--server"));
}

#[test]
fn with_a_certificate_the_server_speaks_https_and_may_listen_beyond_loopback() {
    let env = Env::new();
    let (ca, cert, key) = crate::util::certificates(env.path());
    let only_one = env.run(&["serve", "--tls-cert", cert.to_str().unwrap()]);
    assert_eq!(only_one.status.code(), Some(2));
    assert!(text(&only_one.stderr).contains("go together"));
    let bad = env.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        key.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("no certificate"),
        "{}",
        text(&bad.stderr)
    );

    let mut child = env
        .mc()
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mc serve");
    // Owned like Server: killed on every path.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server {
        child: Some(child),
        url: String::new(),
    };
    let port = line.trim().rsplit(':').next().unwrap().to_owned();
    assert!(line.contains("https://0.0.0.0:"), "{line}");
    let url = format!("https://127.0.0.1:{port}/v1/health");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        text(&output.stdout).contains("\"ok\""),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            &format!("http://127.0.0.1:{port}/v1/health"),
        ])
        .output()
        .unwrap();
    assert!(
        !text(&plain.stdout).contains("\"ok\""),
        "plain HTTP is not served"
    );

    // The CLI speaks HTTPS too, trusting the CA of MAESTRO_CA_CERT (or --ca-cert).
    let ana = token(&env, "ana", "submit");
    let file = env.write("job.yaml", &spec("over-tls", "echo over tls"));
    let server_url = format!("https://127.0.0.1:{port}");
    let client = |ca: Option<&std::path::Path>| {
        let mut command = env.mc();
        command
            .env("MAESTRO_SERVER", &server_url)
            .env("MAESTRO_TOKEN", &ana)
            .args(["submit", file.to_str().unwrap()]);
        if let Some(ca) = ca {
            command.env("MAESTRO_CA_CERT", ca);
        }
        crate::util::output_within(&mut command, 120)
    };
    let output = client(Some(&ca));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(text(&output.stdout).contains("over tls"));
    assert!(text(&output.stdout).contains("SUCCEEDED"));
    let untrusted = client(None);
    assert_ne!(untrusted.status.code(), Some(0));
    assert!(
        text(&untrusted.stderr).contains("MAESTRO_CA_CERT"),
        "{}",
        text(&untrusted.stderr)
    );
    let not_a_ca = client(Some(&key));
    assert_eq!(
        not_a_ca.status.code(),
        Some(2),
        "{}",
        text(&not_a_ca.stderr)
    );
    assert!(
        text(&not_a_ca.stderr).contains("MAESTRO_CA_CERT"),
        "{}",
        text(&not_a_ca.stderr)
    );
    drop(server);
}

#[test]
fn an_approved_job_waiting_for_its_turn_takes_no_second_decision() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let bo = token(&env, "bo", "approve");
    let server = Server::start(&env, &["--max-concurrent-jobs", "1", "--stop-grace", "1"]);
    // The one slot busy, so the approved job waits in the queue.
    let (code, busy) = server.submit_yaml(&ana, &spec("busy", "sleep 61.27"));
    assert_eq!(code, 201, "{busy}");
    let busy = busy["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &busy, "RUNNING", 30);
    let (code, submitted) = server.submit_yaml(&ana, PROD);
    assert_eq!(code, 201, "{submitted}");
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    let (code, body) = server.json(
        "POST",
        &format!("/v1/jobs/{job_id}/approve"),
        Some(&bo),
        None,
    );
    assert_eq!(code, 200, "{body}");
    for verb in ["approve", "reject"] {
        let (code, body) = server.json(
            "POST",
            &format!("/v1/jobs/{job_id}/{verb}"),
            Some(&bo),
            None,
        );
        assert_eq!(code, 409, "{verb}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("approved already"),
            "{verb}: {body}"
        );
    }
    // The server dies before its turn comes. Meanwhile the job waits for a server: not stale,
    // and `mc gc` leaves it (the running one it settles).
    let mut server = server;
    server.kill();
    let listing = env.run(&["status", "--output", "json"]);
    assert!(listing.status.success(), "{}", text(&listing.stderr));
    let jobs: Value = serde_json::from_slice(&listing.stdout).unwrap();
    let waiting = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["job_id"] == job_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(waiting["state"], "AWAITING_APPROVAL", "{waiting}");
    assert_eq!(waiting["stale"], false, "{waiting}");
    // In the table, its name lines up with the header, past the long state.
    let table = text(&env.run(&["status"]).stdout);
    let header = table.lines().next().unwrap();
    let row = table
        .lines()
        .find(|line| line.starts_with(&job_id))
        .unwrap();
    assert_eq!(row.find("release"), header.find("NAME"), "{table}");
    let gc = env.run(&["gc"]);
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    assert!(text(&gc.stdout).contains(&busy), "{}", text(&gc.stdout));
    assert!(!text(&gc.stdout).contains(&job_id), "{}", text(&gc.stdout));
    // Started again, the server runs it with the approval it had: no second decision.
    let server = Server::start(&env, &["--max-concurrent-jobs", "1", "--stop-grace", "1"]);
    let job = server.wait_state(&ana, &job_id, "SUCCEEDED", 60);
    assert_eq!(
        crate::util::approval_of(&job)["approved_by"],
        "bo",
        "{job:#}"
    );
}

#[test]
fn a_job_nobody_approves_in_time_is_denied() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &["--approval-timeout", "1"]);
    let (code, submitted) = server.submit_yaml(&ana, PROD);
    assert_eq!(
        (code, submitted["state"].as_str()),
        (201, Some("AWAITING_APPROVAL")),
        "{submitted}"
    );
    let job = server.wait_state(&ana, submitted["job_id"].as_str().unwrap(), "DENIED", 20);
    let last = job["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["detail"]["reason"], "approval_timeout", "{last}");
    assert_eq!(job["steps"], json!([]));
}

#[test]
fn listing_pages_newest_first_with_a_cursor_and_keeps_the_callers_trace_id() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        let (code, submitted) = server.submit_yaml(&ana, &spec(name, "true"));
        assert_eq!(code, 201, "{submitted}");
        ids.push(submitted["job_id"].as_str().unwrap().to_owned());
    }
    let (_, first) = server.json("GET", "/v1/jobs?limit=2", Some(&ana), None);
    let page: Vec<&str> = first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [ids[2].as_str(), ids[1].as_str()], "newest first");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = server.json(
        "GET",
        &format!("/v1/jobs?limit=2&cursor={cursor}"),
        Some(&ana),
        None,
    );
    assert_eq!(second["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(second["jobs"][0]["job_id"], ids[0].as_str());
    assert!(second["next_cursor"].is_null());
    let (code, body) = server.json("GET", "/v1/jobs?cursor=nope", Some(&ana), None);
    assert_eq!(code, 400, "{body}");
    // A prefix of a job id, as job ids are taken everywhere (`mc status --before 01a2…`).
    let prefix = &cursor[..30];
    let (code, body) = server.json(
        "GET",
        &format!("/v1/jobs?limit=2&cursor={prefix}"),
        Some(&ana),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["jobs"][0]["job_id"], ids[0].as_str(), "{body}");

    let output = Command::new("curl")
        .args([
            "-sS",
            "-H",
            &format!("Authorization: Bearer {ana}"),
            "-H",
            "X-Trace-Id: release-42",
        ])
        .args([
            "-H",
            "Content-Type: application/yaml",
            "--data-binary",
            &spec("traced", "true"),
        ])
        .arg(format!("{}/v1/jobs", server.url))
        .output()
        .unwrap();
    let submitted: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(submitted["trace_id"], "release-42", "{submitted}");
    let job = server.wait_state(&ana, submitted["job_id"].as_str().unwrap(), "SUCCEEDED", 60);
    assert_eq!(job["trace_id"], "release-42");
}

/// When a job entered `RUNNING`: (date, seconds into the day), comparable.
fn started_at(job: &Value) -> (String, f64) {
    let at = job["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|transition| transition["state"] == "RUNNING")
        .unwrap_or_else(|| panic!("never ran: {job:#}"))["at"]
        .as_str()
        .unwrap()
        .to_owned();
    let (date, time) = at.split_once('T').unwrap();
    let seconds = time
        .trim_end_matches('Z')
        .split(':')
        .map(|part| part.parse::<f64>().unwrap())
        .fold(0.0, |total, part| total * 60.0 + part);
    (date.to_owned(), seconds)
}

#[test]
fn one_owners_burst_does_not_starve_another_also_after_a_restart() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let bo = token(&env, "bo", "submit");
    let args = ["--max-concurrent-jobs", "1"];
    let mut server = Server::start(&env, &args);
    let (_, blocker) = server.submit_yaml(&ana, &spec("blocker", "sleep 60"));
    let blocker = blocker["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &blocker, "RUNNING", 30);
    let mut burst = Vec::new();
    for (index, expected_position) in (1..=4).zip(0..) {
        let (code, job) = server.submit_yaml(&ana, &spec(&format!("burst-{index}"), "true"));
        assert_eq!(code, 201, "{job}");
        assert_eq!(job["queue_position"], expected_position, "{job}");
        burst.push(job["job_id"].as_str().unwrap().to_owned());
    }
    let bo_spec = spec("late", "true").replace("owner: ana", "owner: bo");
    let (code, late) = server.submit_yaml(&bo, &bo_spec);
    assert_eq!(code, 201, "{late}");
    assert_eq!(
        late["queue_position"], 1,
        "bo's job waits for one of ana's, not four: {late}"
    );
    let late = late["job_id"].as_str().unwrap().to_owned();

    // The order is kept in the state root: a crash and a restart do not lose it.
    server.kill();
    let server = Server::start(&env, &args);
    let mut started: Vec<((String, f64), String)> = burst
        .iter()
        .chain([&late])
        .map(|job_id| {
            let job = server.wait_state(&ana, job_id, "SUCCEEDED", 60);
            (started_at(&job), job["name"].as_str().unwrap().to_owned())
        })
        .collect();
    started.sort_by(|left, right| left.0.partial_cmp(&right.0).unwrap());
    let order: Vec<&str> = started.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(
        order,
        ["burst-1", "late", "burst-2", "burst-3", "burst-4"],
        "owners take turns, each owner's jobs in order"
    );
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_served_schema() {
    let env = Env::new();
    let admin = token(&env, "ana", "submit,approve,cancel,admin");
    let server = Server::start(&env, &[]);
    // Something in the store (finished, so that a followed log ends at once).
    let (_, done) = server.submit_yaml(&admin, &spec("done", "echo done"));
    server.wait_state(&admin, done["job_id"].as_str().unwrap(), "SUCCEEDED", 60);
    let reports = env.path().join("schemathesis-report");
    let run = Command::new("schemathesis")
        .current_dir(env.path())
        .args(["run", &format!("{}/v1/openapi.json", server.url)])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance",
            "--max-examples",
            "50",
            "--request-timeout",
            "20",
            "--report-dir",
        ])
        .arg(&reports)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let run = match run {
        // A few hundred requests per operation; minutes on a loaded machine.
        Ok(child) => maestro_test_support::wait_within(child, Duration::from_secs(900)),
        Err(error) => panic!(
            "schemathesis is missing ({error}): install it with scripts/test-prerequisites.sh (pip, from PyPI)"
        ),
    };
    let report = format!("{}{}", text(&run.stdout), text(&run.stderr));
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(
        report.contains("passed") && !report.contains("Authentication failed"),
        "schemathesis did not reach the API with the token:\n{report}"
    );
}

#[test]
fn ctrl_c_of_a_client_following_its_job_cancels_the_job_on_the_server() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &["--stop-grace", "1"]);
    let file = env.write(
        "job.yaml",
        &spec("long", "echo started; sleep 60; echo never"),
    );
    for signal in [rustix::process::Signal::INT, rustix::process::Signal::TERM] {
        let mut child = env
            .mc()
            .env("MAESTRO_SERVER", &server.url)
            .env("MAESTRO_TOKEN", &ana)
            .args(["submit", file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mc submit");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // The step's first line (after the log's header), however the client prefixes it.
        while line.starts_with('#') || !line.trim_end().ends_with("started") {
            line.clear();
            assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "the step's output");
        }
        crate::util::send_signal(child.id(), signal);
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let output = crate::util::output_within_child(child);
        assert_eq!(
            output.status.code(),
            Some(130),
            "{rest}{}",
            text(&output.stderr)
        );
        assert!(rest.contains("CANCELLED"), "{rest}");
        assert!(!rest.contains("never"), "{rest}");
        let job_id = rest
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("a summary line: {rest}"))
            .to_owned();
        let (code, job) = server.json("GET", &format!("/v1/jobs/{job_id}"), Some(&ana), None);
        assert_eq!(code, 200, "{job}");
        assert_eq!(job["state"], "CANCELLED", "{job:#}");
        assert_eq!(job["steps"][0]["status"], "cancelled", "{job:#}");
    }
}

#[test]
fn validate_through_the_server_gives_the_local_messages_and_exit_codes() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);
    let remote = |args: &[&str]| {
        crate::util::output_within(
            env.mc()
                .env("MAESTRO_SERVER", &server.url)
                .env("MAESTRO_TOKEN", &ana)
                .env("MAESTRO_HOME", env.path().join("elsewhere"))
                .args(args),
            120,
        )
    };
    let good = env.write("good.yaml", &spec("good", "echo fine"));
    let denied = env.write("denied.yaml", &spec("bad", "rm -rf /"));
    let broken = env.write(
        "broken.yaml",
        "name: broken\nowner: ana\nenvironment: dev\nsteps:\n  - name: a\n    runn: true\n",
    );
    for (file, code) in [(&good, 0), (&denied, 3), (&broken, 2)] {
        for output in ["text", "json"] {
            let args = ["validate", file.to_str().unwrap(), "--output", output];
            let local = env.run(&args);
            let through = remote(&args);
            assert_eq!(local.status.code(), Some(code), "{}", text(&local.stderr));
            assert_eq!(
                through.status.code(),
                Some(code),
                "{}",
                text(&through.stderr)
            );
            if output == "text" {
                assert_eq!(text(&through.stdout), text(&local.stdout));
                assert_eq!(text(&through.stderr), text(&local.stderr));
            } else if code != 2 {
                let local: Value = serde_json::from_slice(&local.stdout).unwrap();
                let through: Value = serde_json::from_slice(&through.stdout).unwrap();
                assert_eq!(through["allowed"], local["allowed"]);
                assert_eq!(through["policies"], local["policies"]);
            }
        }
    }
    // On the server a production job's own approval block does not count: it would wait.
    let prod = env.write("prod.yaml", PROD);
    let output = remote(&["validate", prod.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("await approval"),
        "{}",
        text(&output.stdout)
    );
    let (code, jobs) = server.json("GET", "/v1/jobs", Some(&ana), None);
    assert_eq!(
        (code, jobs["jobs"].clone()),
        (200, json!([])),
        "nothing stored"
    );
}

#[test]
fn concurrent_bare_steps_of_different_jobs_do_not_take_each_other_for_orphans() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &["--max-concurrent-jobs", "8"]);
    // Short steps: one's exit (a zombie for a moment) overlaps another's teardown.
    let spec = crate::util::bare_job_yaml("bare", "  - name: a\n    run: \"true\"\n");
    let ids: Vec<String> = (0..40)
        .map(|_| {
            let (code, job) = server.submit_yaml(&ana, &spec);
            assert_eq!(code, 201, "{job}");
            job["job_id"].as_str().unwrap().to_owned()
        })
        .collect();
    for job_id in ids {
        server.wait_state(&ana, &job_id, "SUCCEEDED", 60);
    }
}

/// `mc submit` output with what differs between two runs of a job (ids, times) replaced, so that
/// a local and a remote run compare equal.
fn comparable(output: &str, json: bool) -> String {
    if json {
        let Ok(mut value) = serde_json::from_str::<Value>(output.trim()) else {
            return output.to_owned();
        };
        for key in ["job_id", "trace_id"] {
            if value.get(key).is_some() {
                value[key] = json!("<id>");
            }
        }
        for step in value["steps"].as_array_mut().into_iter().flatten() {
            for key in ["started_at", "finished_at", "duration_ms", "span_id"] {
                if step.get(key).is_some() {
                    step[key] = json!("<time>");
                }
            }
        }
        return format!("{value:#}\n");
    }
    let is_id = |word: &str| {
        let word = word.trim_matches(|c| c == '(' || c == ')');
        word.len() >= 32 && word.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    };
    let is_duration = |word: &str| {
        word.strip_suffix("ms")
            .is_some_and(|n| n.parse::<u64>().is_ok())
            || word
                .strip_suffix('s')
                .is_some_and(|n| n.parse::<f64>().is_ok())
    };
    output
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|word| {
                    if is_id(word) {
                        "<id>"
                    } else if is_duration(word) {
                        "<time>"
                    } else {
                        word
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect()
}

#[test]
fn submit_through_the_server_prints_what_a_local_submit_prints() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);
    let remote = |args: &[&str]| {
        crate::util::output_within(
            env.mc()
                .env("MAESTRO_SERVER", &server.url)
                .env("MAESTRO_TOKEN", &ana)
                .env("MAESTRO_HOME", env.path().join("elsewhere"))
                .args(args),
            120,
        )
    };
    let chatty = env.write(
        "chatty.yaml",
        &job_yaml(
            "chatty",
            "  - name: a\n    run: echo out-1; echo err-1 >&2; echo out-2\n  - name: b\n    run: printf 'no newline'\n",
        ),
    );
    let failing = env.write(
        "failing.yaml",
        &job_yaml(
            "failing",
            "  - name: a\n    run: echo before; exit 3\n  - name: b\n    run: echo never\n",
        ),
    );
    let denied = env.write("denied.yaml", &spec("bad", "rm -rf /"));
    for (file, code) in [(&chatty, 0), (&failing, 1), (&denied, 3)] {
        for output in ["text", "json", "quiet"] {
            let args = match output {
                "quiet" => vec!["submit", file.to_str().unwrap(), "--quiet"],
                _ => vec!["submit", file.to_str().unwrap(), "--output", output],
            };
            let local = env.run(&args);
            let through = remote(&args);
            let shown = |output: &std::process::Output| {
                format!(
                    "exit {:?}\n--- stdout\n{}--- stderr\n{}",
                    output.status.code(),
                    text(&output.stdout),
                    text(&output.stderr)
                )
            };
            assert_eq!(local.status.code(), Some(code), "{}", shown(&local));
            assert_eq!(through.status.code(), Some(code), "{}", shown(&through));
            let json = output == "json";
            assert_eq!(
                comparable(&text(&through.stdout), json),
                comparable(&text(&local.stdout), json),
                "stdout of {file:?} --output {output}\nlocal:\n{}\nremote:\n{}",
                shown(&local),
                shown(&through)
            );
            // With `--output json` a step's stdout and stderr lines both go to stderr, in the
            // order their pipes were read: that interleaving is not the same from one run to the
            // next, locally or not, so they are compared as sets there.
            let lines = |output: &std::process::Output| {
                let mut lines: Vec<String> = comparable(&text(&output.stderr), false)
                    .lines()
                    .map(str::to_owned)
                    .collect();
                if json {
                    lines.sort();
                }
                lines
            };
            assert_eq!(
                lines(&through),
                lines(&local),
                "stderr of {file:?} --output {output}\nlocal:\n{}\nremote:\n{}",
                shown(&local),
                shown(&through)
            );
        }
    }
    // What the comparison rests on is there: live lines, the summary, the error.
    let output = remote(&["submit", chatty.to_str().unwrap()]);
    assert_eq!(
        text(&output.stdout).lines().take(2).collect::<Vec<_>>(),
        ["a | out-1", "a | out-2"],
        "{}",
        text(&output.stdout)
    );
    assert!(text(&output.stderr).contains("a | err-1"));
    let output = remote(&["submit", failing.to_str().unwrap()]);
    assert!(
        text(&output.stderr).starts_with("error: "),
        "{}",
        text(&output.stderr)
    );
}

/// What a terminal shows at the end of `text` written to it: `\r\x1b[K` (back to the line's
/// start, erase it) keeps only what follows on that line; carriage returns of the pty dropped.
fn screen(text: &str) -> String {
    text.replace("\r\n", "\n")
        .lines()
        .map(|line| line.rsplit("\r\u{1b}[K").next().unwrap_or(line).to_owned() + "\n")
        .collect()
}

#[test]
fn on_a_terminal_submit_through_the_server_shows_each_step_as_a_local_submit_does() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);
    let job = env.write(
        "steps.yaml",
        &job_yaml(
            "steps",
            "  - name: first\n    run: echo out-1\n  - name: quiet\n    run: \"true\"\n  - name: last\n    run: echo err-1 >&2; exit 4\n",
        ),
    );
    // `script` gives `mc` a terminal (a pty) and copies what it shows.
    let on_a_terminal = |remote: bool| {
        let line = format!("{} submit {}", mc_bin(), job.display());
        let mut script = Command::new("script");
        script
            .args(["-qec", &line, "/dev/null"])
            .current_dir(env.path())
            .env("NO_COLOR", "1");
        // The environment a test's `mc` gets.
        for (key, value) in env.mc().get_envs() {
            match value {
                Some(value) => script.env(key, value),
                None => script.env_remove(key),
            };
        }
        if remote {
            script
                .env("MAESTRO_SERVER", &server.url)
                .env("MAESTRO_TOKEN", &ana)
                .env("MAESTRO_HOME", env.path().join("elsewhere"));
        }
        let output = crate::util::output_within(&mut script, 120);
        assert_eq!(
            output.status.code(),
            Some(1),
            "the job fails: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        comparable(&screen(&text(&output.stdout)), false)
    };
    let (local, remote) = (on_a_terminal(false), on_a_terminal(true));
    assert_eq!(
        remote, local,
        "through the server:\n{remote}\nlocally:\n{local}"
    );
    // What the comparison rests on: each step's start and end, its output under it.
    let shown: Vec<&str> = local.lines().collect();
    for expected in [
        "▶ first (local) <time>",
        "| out-1",
        "✔ first succeeded in <time> — exited with code 0",
        "✔ quiet succeeded in <time> — exited with code 0",
        "▶ last (local) <time>",
        "! err-1",
    ] {
        assert!(
            shown.contains(&expected),
            "{expected:?} not shown:\n{local}"
        );
    }
    assert!(
        shown
            .iter()
            .any(|line| line.starts_with("✘ last failed in")),
        "{local}"
    );
}

/// The value of a metric line (`name{labels} value`) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn one_owner_may_queue_no_more_than_the_per_owner_limit_and_metrics_count_every_transition() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let bo = token(&env, "bo", "submit");
    let mut server = Server::start(
        &env,
        &[
            "--max-concurrent-jobs",
            "1",
            "--queue-limit-per-owner",
            "2",
            "--stop-grace",
            "1",
        ],
    );
    let (code, first) = server.submit_yaml(&ana, &spec("first", "sleep 30"));
    assert_eq!(code, 201, "{first}");
    let first = first["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &first, "RUNNING", 30);
    for name in ["second", "third"] {
        let (code, body) = server.submit_yaml(&ana, &spec(name, "true"));
        assert_eq!(code, 201, "{body}");
    }
    let (code, refused) = server.submit_yaml(&ana, &spec("fourth", "true"));
    assert_eq!(code, 429, "{refused}");
    assert_eq!(
        refused["error"],
        "ana has 2 jobs waiting to run, the most one owner may queue (--queue-limit-per-owner 2, counted on every server of a shared queue); retry when some have started"
    );
    // Another owner's line is its own.
    let bo_spec = spec("bos", "true").replace("owner: ana", "owner: bo");
    let (code, body) = server.submit_yaml(&bo, &bo_spec);
    assert_eq!(code, 201, "{body}");
    let (code, denied) = server.submit_yaml(
        &bo,
        &spec("bad", "rm -rf /").replace("owner: ana", "owner: bo"),
    );
    assert_eq!(code, 403, "{denied}");

    let (_, metrics) = server.request("GET", "/v1/metrics", Some(&ana), None, None);
    for (name, value) in [
        ("maestro_queue_depth", 3.0),
        ("maestro_jobs{state=\"SUBMITTED\"}", 3.0),
        ("maestro_jobs{state=\"RUNNING\"}", 1.0),
        ("maestro_jobs{state=\"DENIED\"}", 1.0),
        ("maestro_step_duration_seconds_count", 0.0),
    ] {
        assert_eq!(metric(&metrics, name), Some(value), "{name} in\n{metrics}");
    }
    let (code, body) = server.json(
        "POST",
        &format!("/v1/jobs/{first}/cancel"),
        Some(&ana),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let (_, metrics) = server.request("GET", "/v1/metrics", Some(&ana), None, None);
        if metric(&metrics, "maestro_jobs{state=\"SUCCEEDED\"}") == Some(3.0) {
            break metrics;
        }
        assert!(Instant::now() < deadline, "the queue never ran:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let expected = [
        ("maestro_jobs{state=\"SUBMITTED\"}", 0.0),
        ("maestro_jobs{state=\"RUNNING\"}", 0.0),
        ("maestro_jobs{state=\"SUCCEEDED\"}", 3.0),
        ("maestro_jobs{state=\"CANCELLED\"}", 1.0),
        ("maestro_jobs{state=\"DENIED\"}", 1.0),
        // The cancelled step and three `true`s; nothing skipped.
        ("maestro_step_duration_seconds_count", 4.0),
        ("maestro_step_duration_seconds_bucket{le=\"+Inf\"}", 4.0),
    ];
    for (name, value) in expected {
        assert_eq!(metric(&settled, name), Some(value), "{name} in\n{settled}");
    }
    // A new server counts the same from the records.
    server.kill();
    let server = Server::start(&env, &[]);
    let (_, metrics) = server.request("GET", "/v1/metrics", Some(&ana), None, None);
    for (name, value) in expected {
        assert_eq!(
            metric(&metrics, name),
            Some(value),
            "{name} after a restart in\n{metrics}"
        );
    }
    let output = env.run(&["serve", "--queue-limit-per-owner", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("--queue-limit-per-owner must be at least 1"),
        "{}",
        text(&output.stderr)
    );
}

/// Live processes whose command line is `args` exactly (NUL-separated, as `/proc` holds it).
fn processes_running(args: &[&str]) -> Vec<i32> {
    let wanted = args.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| line == wanted.as_bytes())
                && crate::util::pid_alive(*pid)
        })
        .collect()
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Polls `condition` for up to `seconds`.
fn eventually(seconds: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

#[test]
fn the_servers_sandboxes_come_from_one_launcher_that_is_replaced_when_killed_and_dies_with_the_server()
 {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let mut server = Server::start(&env, &["--max-concurrent-jobs", "4"]);
    let launcher_args = ["/proc/self/exe", "__maestro-sandbox-launcher"];
    let server_launchers = |server: &Server| -> Vec<i32> {
        processes_running(&launcher_args)
            .into_iter()
            .filter(|pid| parent_of(*pid) == Some(server.pid() as i32))
            .collect()
    };

    // A sandboxed step runs as the launcher's grandchild (launcher -> shim -> init -> step)
    // with its own environment, output and exit code.
    let first = spec("first", "echo \"out $GREETING\"; echo err >&2; exit 3")
        .replace("    run:", "    env:\n      GREETING: hello\n    run:");
    let (code, job) = server.submit_yaml(&ana, &first);
    assert_eq!(code, 201, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let job = server.wait_state(&ana, &job_id, "FAILED", 60);
    assert_eq!(job["steps"][0]["exit_code"], 3, "{job:#}");
    let (_, logs) = server.request(
        "GET",
        &format!("/v1/jobs/{job_id}/logs"),
        Some(&ana),
        None,
        None,
    );
    assert!(logs.contains("out hello"), "{logs}");
    assert!(logs.contains("err"), "{logs}");
    let launchers = server_launchers(&server);
    assert_eq!(launchers.len(), 1, "one launcher per server: {launchers:?}");
    let launcher = launchers[0];

    // Killing the launcher ends the step it was running (nothing of it stays), and the next
    // sandboxed step gets a new launcher.
    let (_, long) = server.submit_yaml(&ana, &spec("long", "sleep 71.3"));
    let long = long["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &long, "RUNNING", 60);
    assert!(
        eventually(10, || !processes_running(&["sleep", "71.3"]).is_empty()),
        "the step started"
    );
    let step = processes_running(&["sleep", "71.3"])[0];
    let mut ancestor = Some(step);
    let mut ancestors = Vec::new();
    while let Some(pid) = ancestor.filter(|pid| *pid > 1) {
        ancestors.push(pid);
        ancestor = parent_of(pid);
    }
    assert!(
        ancestors.contains(&launcher),
        "the step {step} descends from the launcher {launcher}: {ancestors:?}"
    );
    crate::util::send_signal(launcher as u32, rustix::process::Signal::KILL);
    let job = server.wait_state(&ana, &long, "FAILED", 30);
    assert!(
        eventually(10, || processes_running(&["sleep", "71.3"]).is_empty()),
        "the step died with its launcher: {job:#}"
    );
    let (_, again) = server.submit_yaml(&ana, &spec("again", "echo again"));
    let again = again["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &again, "SUCCEEDED", 60);
    let replaced = server_launchers(&server);
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_ne!(replaced[0], launcher, "a new launcher");

    // A server that is SIGKILLed takes its launcher and every running step with it.
    let (_, doomed) = server.submit_yaml(&ana, &spec("doomed", "sleep 72.3"));
    let doomed = doomed["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &doomed, "RUNNING", 60);
    assert!(eventually(10, || !processes_running(&["sleep", "72.3"]).is_empty()));
    server.kill();
    assert!(
        eventually(10, || processes_running(&["sleep", "72.3"]).is_empty()
            && !crate::util::pid_alive(replaced[0])),
        "the launcher and its steps outlived the server"
    );
}

/// `mc logs --follow` through a server exits as the job ended, as a local follow does: 0 for a
/// success, 1 for a failed step.
#[test]
fn logs_follow_through_the_server_exits_as_the_job_ended() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);
    let remote = |args: &[&str]| server.run(&env, &ana, args);
    for (name, command, code) in [("passes", "echo fine", 0), ("fails", "echo bad; exit 3", 1)] {
        let file = env.write(&format!("{name}.yaml"), &spec(name, command));
        let submitted = remote(&["submit", file.to_str().unwrap(), "--detach"]);
        assert_eq!(
            submitted.status.code(),
            Some(0),
            "{}",
            text(&submitted.stderr)
        );
        let job_id = text(&submitted.stdout).trim().to_owned();
        let followed = remote(&["logs", &job_id, "--follow"]);
        assert_eq!(
            followed.status.code(),
            Some(code),
            "{name}: {}{}",
            text(&followed.stdout),
            text(&followed.stderr)
        );
        let first_word = command
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("echo ");
        assert!(
            text(&followed.stdout).contains(first_word),
            "{}",
            text(&followed.stdout)
        );
        // Followed through the server, the formats are a local `mc logs`'s.
        for format in [&["--raw"][..], &["--output", "json"], &["--since-seq", "1"]] {
            let mut args = vec!["logs", job_id.as_str()];
            args.extend_from_slice(format);
            let here = env.run(&args);
            args.push("--follow");
            let there = remote(&args);
            assert_eq!(text(&there.stdout), text(&here.stdout), "{args:?}");
        }
    }
}

/// A job whose history cannot be read is not hidden from a listing: the API names it under
/// `unreadable`, and `mc status` through the server names it and fails, as locally.
#[test]
fn a_listing_through_the_server_names_a_job_it_cannot_read() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start(&env, &[]);
    let mut ids = Vec::new();
    for name in ["kept", "broken"] {
        let (code, body) = server.submit_yaml(&ana, &spec(name, "echo fine"));
        assert_eq!(code, 201, "{body}");
        let job_id = body["job_id"].as_str().unwrap().to_owned();
        server.wait_state(&ana, &job_id, "SUCCEEDED", 60);
        ids.push(job_id);
    }
    let journal = env.state.join("jobs").join(&ids[1]).join("history.journal");
    let edited = std::fs::read_to_string(&journal)
        .unwrap()
        .replace("SUCCEEDED", "CANCELLED");
    std::fs::write(&journal, edited).unwrap();
    let (code, body) = server.json("GET", "/v1/jobs", Some(&ana), None);
    assert_eq!(code, 200, "{body}");
    let listed: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[0].as_str()], "{body}");
    assert_eq!(body["unreadable"][0]["job_id"], ids[1].as_str(), "{body}");
    assert!(
        body["unreadable"][0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("checksum")),
        "{body}"
    );
    let listing = server.run(&env, &ana, &["status"]);
    assert_eq!(listing.status.code(), Some(4), "{}", text(&listing.stderr));
    assert!(text(&listing.stdout).contains(&ids[0]));
    assert!(
        text(&listing.stderr).contains(&format!("job {} is not listed", ids[1])),
        "{}",
        text(&listing.stderr)
    );
}

#[test]
fn a_servers_own_settings_never_reach_a_job() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let server = Server::start_with(
        &env,
        &[],
        &[
            ("MAESTRO_PROBE_SETTING", "server-only-0x51"),
            ("OPERATOR_VISIBLE", "for-jobs-0x52"),
        ],
    );
    // Passed through by name, and asked for as a secret: the server's `MAESTRO_*` variables
    // are neither; its other variables are, by name.
    let spec = job_yaml(
        "probe",
        "  - name: a\n    isolation: none\n    env_passthrough: [MAESTRO_PROBE_SETTING, OPERATOR_VISIBLE]\n    run: printf '[%s][%s]' \"$MAESTRO_PROBE_SETTING\" \"$OPERATOR_VISIBLE\"\n",
    );
    let (code, body) = server.submit_yaml(&ana, &spec);
    assert_eq!(code, 201, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &job_id, "SUCCEEDED", 60);
    let (code, logs) = server.request(
        "GET",
        &format!("/v1/jobs/{job_id}/logs"),
        Some(&ana),
        None,
        None,
    );
    assert_eq!(code, 200, "{logs}");
    assert!(logs.contains("[][for-jobs-0x52]"), "{logs}");
    assert!(!logs.contains("server-only-0x51"), "{logs}");
    let secret = "name: secret\nowner: ana\nenvironment: dev\nsecrets:\n  S: { env: MAESTRO_PROBE_SETTING }\nsteps:\n  - name: a\n    isolation: none\n    secrets: [S]\n    run: 'true'\n";
    let (code, body) = server.submit_yaml(&ana, secret);
    assert_eq!(code, 201, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    let job = server.wait_state(&ana, &job_id, "FAILED", 60);
    assert!(!job.to_string().contains("server-only-0x51"), "{job}");
}

#[test]
fn a_submit_following_a_queued_job_while_the_server_stops_says_the_job_is_kept() {
    let env = Env::new();
    let ana = token(&env, "ana", "submit");
    let flags = [
        "--max-concurrent-jobs",
        "1",
        "--drain-grace",
        "1",
        "--stop-grace",
        "1",
    ];
    let mut server = Server::start(&env, &flags);
    let (_, busy) = server.submit_yaml(&ana, &spec("busy", "sleep 60"));
    let busy = busy["job_id"].as_str().unwrap().to_owned();
    server.wait_state(&ana, &busy, "RUNNING", 30);
    let file = env.write("queued.yaml", &spec("queued", "echo ran after the restart"));
    let submit = server
        .mc(&env, &ana)
        .args(["submit", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    server.signal(rustix::process::Signal::TERM);
    assert!(server.wait_exit(30).success());
    let output = crate::util::output_within_child(submit);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("is on record on the server"), "{stderr}");
    // It was kept: the next start runs it.
    let queued = env
        .job_ids()
        .into_iter()
        .find(|id| id != &busy)
        .expect("the queued job is on record");
    let server = Server::start(&env, &flags);
    server.wait_state(&ana, &queued, "SUCCEEDED", 60);
}
