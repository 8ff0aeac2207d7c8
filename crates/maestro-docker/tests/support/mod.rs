//! Helpers for the executor's tests against the real Docker engine: the test image, steps,
//! running one step into a log, and checking that nothing was left behind.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "each test binary uses its own subset of these helpers"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::executor::{
    CommandLine, ContainerSettings, Executor, ExecutorError, StepControl, StepOutcome, StepOutput,
    StepRequest,
};
use maestro_core::trace::TraceId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use maestro_test_support::docker::{
    IMAGE, containers_labelled, containers_left_after, ensure_image, inspect, remove_labelled,
};

/// How long the engine may take to remove a container that exited by itself.
pub const AUTO_REMOVE_WITHIN: Duration = Duration::from_secs(10);

/// A job under test: its id, trace id, workspace and log directory.
pub struct TestJob {
    pub id: JobId,
    pub trace_id: TraceId,
    pub workspace: tempfile::TempDir,
    pub logs: tempfile::TempDir,
    pub reuse_container: bool,
}

impl TestJob {
    pub fn new() -> Self {
        ensure_image();
        Self {
            id: JobId::now_v7(),
            trace_id: TraceId::generate(),
            workspace: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            reuse_container: false,
        }
    }

    pub fn reusing() -> Self {
        let mut job = Self::new();
        job.reuse_container = true;
        job
    }

    /// A `run:` step at position `index`.
    pub fn step(&self, index: usize, name: &str, run: &str) -> StepRequest {
        self.step_with(index, name, CommandLine::Shell(run.to_owned()))
    }

    pub fn step_with(&self, index: usize, name: &str, command: CommandLine) -> StepRequest {
        let env = BTreeMap::from([
            ("TRACE_ID".to_owned(), self.trace_id.to_string()),
            ("MAESTRO_JOB_ID".to_owned(), self.id.to_string()),
            ("MAESTRO_STEP".to_owned(), name.to_owned()),
        ]);
        StepRequest {
            job_id: self.id,
            job_name: "test".to_owned(),
            trace_id: self.trace_id.clone(),
            index,
            name: name.to_owned(),
            runtime: "docker".to_owned(),
            command,
            env,
            host_env: Default::default(),
            secrets: Default::default(),
            span_id: maestro_core::trace::SpanId::generate(),
            workspace: self.workspace.path().to_path_buf(),
            workdir: None,
            timeout: Duration::from_secs(60),
            container: ContainerSettings {
                image: Some(IMAGE.to_owned()),
                ..ContainerSettings::default()
            },
            reuse_container: self.reuse_container,
            with: None,
            isolation: Default::default(),
            writable_paths: Vec::new(),
            host_access: Vec::new(),
        }
    }

    fn log_path(&self, step: &StepRequest) -> PathBuf {
        self.logs.path().join(format!("{}.log", step.name))
    }

    /// Run one step to the end under its timeout, or until `cancel` fires.
    pub async fn run_cancellable(
        &self,
        executor: &dyn Executor,
        step: &StepRequest,
        cancel: CancellationToken,
        grace: Duration,
    ) -> Ran {
        let path = self.log_path(step);
        let mut output = StepOutput::new(
            &step.name,
            std::fs::File::create(&path).unwrap(),
            "header",
            None,
        )
        .unwrap();
        let control = StepControl::new(Instant::now() + step.timeout, grace, cancel);
        let started = std::time::Instant::now();
        let result = executor.run(step, &mut output, &control).await;
        let elapsed = started.elapsed();
        let bytes = output.bytes();
        output.finish("footer").unwrap();
        Ran {
            result,
            lines: read_log(&path),
            bytes,
            elapsed,
        }
    }

    pub async fn run(&self, executor: &dyn Executor, step: &StepRequest) -> Ran {
        self.run_cancellable(
            executor,
            step,
            CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await
    }

    /// The ids of containers that carry this job's label, running or not.
    pub fn containers(&self) -> Vec<String> {
        containers_labelled(&format!("maestro.job_id={}", self.id))
    }

    /// Assert that nothing of this job is left on the engine once the engine has removed the
    /// containers of steps that exited by themselves (auto-remove, within a bound): what the
    /// executor removes itself is gone already, so this holds for every path.
    pub fn assert_containers_go(&self) {
        let left =
            containers_left_after(&format!("maestro.job_id={}", self.id), AUTO_REMOVE_WITHIN);
        assert!(
            left.is_empty(),
            "containers of job {} remain after {AUTO_REMOVE_WITHIN:?}: {left:?}",
            self.id
        );
    }

    /// Assert that nothing of this job is left on the engine now: for steps that were stopped,
    /// could not run, or ran under a memory limit, whose containers the executor removes
    /// itself (and `finish` waits for).
    pub fn assert_no_containers(&self) {
        let left = self.containers();
        assert!(
            left.is_empty(),
            "containers of job {} remain: {left:?}",
            self.id
        );
    }
}

impl Drop for TestJob {
    /// A test that failed before `finish` must not leave its containers on a shared engine.
    fn drop(&mut self) {
        remove_labelled(&format!("maestro.job_id={}", self.id));
    }
}

/// Wait up to `limit` for `path` to exist.
pub async fn wait_for(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Images a test builds, removed (tags and the images themselves) when it is dropped.
#[derive(Default)]
pub struct TestImages(std::sync::Mutex<Vec<String>>);

impl TestImages {
    /// Tag a copy of the test image that holds `path` with `content` as `image` (as a step of
    /// another runtime running `docker build -t` would), replacing an earlier tag of that name.
    pub fn build(&self, image: &str, path: &str, content: &str) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("content"), content).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {IMAGE}\nCOPY content {path}\n"),
        )
        .unwrap();
        let output = Command::new("docker")
            .args(["build", "--quiet", "--tag", image])
            .arg(dir.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("the docker CLI runs");
        assert!(
            output.status.success(),
            "docker build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let mut built = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        built.push(image.to_owned());
        built.push(id);
    }
}

impl Drop for TestImages {
    fn drop(&mut self) {
        let built = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !built.is_empty() {
            let _ = Command::new("docker")
                .args(["image", "rm", "--force"])
                .args(built.iter().filter(|name| !name.is_empty()))
                .output();
        }
    }
}

/// One step's result and its log, without the notes.
pub struct Ran {
    pub result: Result<StepOutcome, ExecutorError>,
    /// `(tag, text)` per output line: tag is `out`, `err`, `out+` or `err+`.
    pub lines: Vec<(String, String)>,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Ran {
    pub fn outcome(&self) -> &StepOutcome {
        match &self.result {
            Ok(outcome) => outcome,
            Err(error) => panic!("the step could not run: {error}"),
        }
    }

    pub fn stdout(&self) -> Vec<&str> {
        self.tagged("out")
    }

    pub fn stderr(&self) -> Vec<&str> {
        self.tagged("err")
    }

    fn tagged(&self, tag: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(t, _)| t == tag)
            .map(|(_, text)| text.as_str())
            .collect()
    }
}

fn read_log(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("# "))
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let _time = parts.next();
            let tag = parts.next().unwrap_or_default().to_owned();
            let text = parts.next().unwrap_or_default().to_owned();
            (tag, text)
        })
        .collect()
}
