//! `DockerExecutor` against the real Docker engine: output, exit codes, limits, stops, cleanup.

mod support;

use std::time::Duration;

use maestro_core::executor::{CommandLine, Executor, ExecutorError, StopReason};
use maestro_core::spec::{Network, PullPolicy};
use maestro_docker::DockerExecutor;
use support::{TestJob, containers_labelled, inspect};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_streams_are_recorded_apart_and_the_exit_code_is_kept() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let step = job.step(0, "print", "echo one; echo two >&2; echo three; exit 3");
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    executor.finish(job.id).await;
    assert_eq!(ran.outcome().exit_code, Some(3));
    assert!(!ran.outcome().succeeded());
    assert_eq!(ran.stdout(), ["one", "three"]);
    assert_eq!(ran.stderr(), ["two"]);
    job.assert_no_containers();
}

/// How many print-and-exit steps the lost-line test runs (40 in a row passed while tuning).
const STRESS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_prints_and_exits_at_once_loses_no_line() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let steps: Vec<_> = (0..STRESS)
        .map(|index| {
            job.step(
                index,
                &format!("quick{index}"),
                "echo first; echo second >&2",
            )
        })
        .collect();
    executor.prepare(&steps).await.unwrap();
    for step in &steps {
        let ran = job.run(&executor, step).await;
        assert_eq!(ran.outcome().exit_code, Some(0), "{}", step.name);
        assert_eq!(ran.stdout(), ["first"], "{} {:?}", step.name, ran.lines);
        assert_eq!(ran.stderr(), ["second"], "{} {:?}", step.name, ran.lines);
    }
    executor.finish(job.id).await;
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_trace_id_and_workdir_reach_the_container() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(
        0,
        "env",
        "echo \"$TRACE_ID|$MAESTRO_JOB_ID|$MAESTRO_STEP|$CUSTOM\"; pwd",
    );
    step.env
        .insert("CUSTOM".to_owned(), "a value with spaces".to_owned());
    let mut nested = job.step(1, "nested", "pwd");
    nested.workdir = Some("sub/dir".to_owned());
    let argv = job.step_with(
        2,
        "argv",
        CommandLine::Argv(vec![
            "echo".to_owned(),
            "a  b".to_owned(),
            "$HOME".to_owned(),
        ]),
    );
    let steps = [step, nested, argv];
    executor.prepare(&steps).await.unwrap();
    let ran = job.run(&executor, &steps[0]).await;
    assert_eq!(
        ran.stdout(),
        [
            format!("{}|{}|env|a value with spaces", job.trace_id, job.id).as_str(),
            "/workspace"
        ]
    );
    let ran = job.run(&executor, &steps[1]).await;
    assert_eq!(ran.stdout(), ["/workspace/sub/dir"]);
    let ran = job.run(&executor, &steps[2]).await;
    assert_eq!(ran.stdout(), ["a  b $HOME"], "argv runs without a shell");
    executor.finish(job.id).await;
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_share_the_workspace_with_each_other_and_the_host() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let steps = [
        job.step(0, "write", "echo built > artifact.txt"),
        job.step(1, "read", "cat /workspace/artifact.txt"),
    ];
    executor.prepare(&steps).await.unwrap();
    assert_eq!(
        job.run(&executor, &steps[0]).await.outcome().exit_code,
        Some(0)
    );
    let ran = job.run(&executor, &steps[1]).await;
    executor.finish(job.id).await;
    assert_eq!(ran.stdout(), ["built"]);
    let on_host = std::fs::read_to_string(job.workspace.path().join("artifact.txt")).unwrap();
    assert_eq!(on_host, "built\n");
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_labels_and_isolation_are_visible_on_the_running_container() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(0, "limited", "sleep 3");
    step.container.memory_bytes = Some(64 << 20);
    step.container.cpus = Some(0.5);
    step.container.pids_limit = Some(32);
    step.container.network = Some(Network::None);
    step.container.read_only_rootfs = Some(true);
    step.container.user = Some("1234:1234".to_owned());
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let check = async {
        let label = format!("maestro.job_id={}", job.id);
        for _ in 0..100 {
            let running: Vec<_> = containers_labelled(&label)
                .into_iter()
                .filter(|id| inspect(id, "{{.State.Running}}") == "true")
                .collect();
            if let [id] = running.as_slice() {
                return Some(inspect(
                    id,
                    "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} \
                     {{.HostConfig.NetworkMode}} {{.HostConfig.ReadonlyRootfs}} {{.Config.User}} \
                     {{.HostConfig.Privileged}} {{index .Config.Labels \"maestro.managed\"}} \
                     {{index .Config.Labels \"maestro.step\"}} {{index .Config.Labels \"maestro.trace_id\"}} \
                     {{len .Mounts}} {{(index .Mounts 0).Destination}}",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    };
    let (ran, seen) = tokio::join!(job.run(&executor, &step), check);
    executor.finish(job.id).await;
    assert_eq!(ran.outcome().exit_code, Some(0));
    assert_eq!(
        seen.expect("the container was seen running"),
        format!(
            "67108864 500000000 32 none true 1234:1234 false true limited {} 1 /workspace",
            job.trace_id
        )
    );
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(0, "stubborn", "trap '' TERM; echo started; sleep 60");
    step.timeout = Duration::from_secs(2);
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job
        .run_cancellable(
            &executor,
            &step,
            CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await;
    executor.finish(job.id).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.stopped, Some(StopReason::TimedOut));
    assert_eq!(
        outcome.exit_code,
        Some(137),
        "SIGKILL after the grace period"
    );
    assert_eq!(ran.stdout(), ["started"]);
    assert!(
        ran.elapsed < Duration::from_secs(10),
        "took {:?}",
        ran.elapsed
    );
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_step_stops_gracefully_and_its_container_goes() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let step = job.step(
        0,
        "cancelled",
        "trap 'echo got TERM; exit 143' TERM; echo waiting; sleep 60 & wait",
    );
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let cancel = CancellationToken::new();
    let trigger = {
        let cancel = cancel.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        }
    };
    let (ran, ()) = tokio::join!(
        job.run_cancellable(&executor, &step, cancel, Duration::from_secs(5)),
        trigger
    );
    executor.finish(job.id).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.stopped, Some(StopReason::Cancelled));
    assert_eq!(
        outcome.exit_code,
        Some(143),
        "the step's own TERM handler ran"
    );
    assert_eq!(ran.stdout(), ["waiting", "got TERM"]);
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_with_pull_never_fails_the_step_naming_the_image() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(0, "missing", "true");
    step.container.image = Some("maestro-test/does-not-exist:never".to_owned());
    step.container.pull = Some(PullPolicy::Never);
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    executor.finish(job.id).await;
    match ran.result {
        Err(ExecutorError::StepFailed { message }) => {
            assert!(
                message.contains("maestro-test/does-not-exist:never"),
                "{message}"
            );
            assert!(message.contains("pull policy is never"), "{message}");
        }
        other => panic!("expected a failed step, got {other:?}"),
    }
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_the_step_in_bounded_time() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(0, "unpullable", "true");
    step.container.image = Some("maestro-test/not-in-any-registry:1".to_owned());
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    executor.finish(job.id).await;
    match ran.result {
        Err(ExecutorError::StepFailed { message }) => {
            assert!(
                message.contains("maestro-test/not-in-any-registry:1"),
                "{message}"
            );
            assert!(message.contains("pull"), "{message}");
        }
        other => panic!("expected a failed step, got {other:?}"),
    }
    assert!(
        ran.elapsed < Duration::from_secs(70),
        "took {:?}",
        ran.elapsed
    );
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_always_pulls_even_a_present_image() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(0, "always", "true");
    step.container.pull = Some(PullPolicy::Always);
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    executor.finish(job.id).await;
    // The test image exists locally but was never in a registry, and none is reachable here.
    match ran.result {
        Err(ExecutorError::StepFailed { message }) => {
            assert!(message.contains("cannot pull image"), "{message}");
            assert!(message.contains(support::IMAGE), "{message}");
        }
        other => panic!("expected a failed pull, got {other:?}"),
    }
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_memory_kill_is_reported() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(
        0,
        "hungry",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
    );
    step.container.memory_bytes = Some(16 << 20);
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    executor.finish(job.id).await;
    let outcome = ran.outcome();
    assert!(outcome.oom_killed, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(137));
    assert!(!outcome.succeeded());
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_is_recorded_whole() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let step = job.step(
        0,
        "loud",
        "yes line | head -n 200000; head -c 3000000 /dev/zero | tr '\\0' x >&2",
    );
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    executor.finish(job.id).await;
    assert_eq!(ran.outcome().exit_code, Some(0));
    assert_eq!(ran.bytes, 200_000 * 5 + 3_000_000);
    let stdout = ran.stdout();
    assert_eq!(stdout.len(), 200_000);
    assert!(stdout.iter().all(|line| *line == "line"));
    let cut: usize = ran
        .lines
        .iter()
        .filter(|(tag, _)| tag.starts_with("err"))
        .map(|(_, text)| text.len())
        .sum();
    assert_eq!(
        cut, 3_000_000,
        "a line without newline is kept, cut into pieces"
    );
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_created_ahead_for_steps_that_never_run_are_removed() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let steps = [
        job.step(0, "fails", "exit 1"),
        job.step(1, "skipped", "true"),
        job.step(2, "also-skipped", "true"),
    ];
    executor.prepare(&steps).await.unwrap();
    assert_eq!(
        job.run(&executor, &steps[0]).await.outcome().exit_code,
        Some(1)
    );
    // The runner skips the rest; the container made ready for step 1 must not outlive the job.
    executor.finish(job.id).await;
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_before_its_first_step_leaves_nothing() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let step = job.step(0, "never-run", "true");
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    executor.finish(job.id).await;
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_container_runs_steps_as_execs_in_one_container() {
    let executor = DockerExecutor::new();
    let job = TestJob::reusing();
    let steps = [
        job.step(
            0,
            "first",
            "echo kept > /tmp/state; echo $MAESTRO_STEP; echo warn >&2",
        ),
        job.step(
            1,
            "second",
            "cat /tmp/state; echo $MAESTRO_STEP; pwd; exit 4",
        ),
        job.step(2, "third", "cat /tmp/state; echo $TRACE_ID"),
    ];
    executor.prepare(&steps).await.unwrap();
    let first = job.run(&executor, &steps[0]).await;
    assert_eq!(first.outcome().exit_code, Some(0));
    assert_eq!(first.stdout(), ["first"]);
    assert_eq!(first.stderr(), ["warn"]);
    assert_eq!(job.containers().len(), 1, "one container for the job");
    let second = job.run(&executor, &steps[1]).await;
    assert_eq!(second.outcome().exit_code, Some(4));
    assert_eq!(second.stdout(), ["kept", "second", "/workspace"]);
    assert_eq!(job.containers().len(), 1, "still one container");
    let third = job.run(&executor, &steps[2]).await;
    assert_eq!(third.stdout(), ["kept", job.trace_id.as_str()]);
    executor.finish(job.id).await;
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_container_is_killed_when_a_step_times_out() {
    let executor = DockerExecutor::new();
    let job = TestJob::reusing();
    let mut step = job.step(0, "stuck", "trap '' TERM; echo started; sleep 60");
    step.timeout = Duration::from_secs(2);
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.stopped, Some(StopReason::TimedOut));
    assert_eq!(ran.stdout(), ["started"]);
    assert!(
        ran.elapsed < Duration::from_secs(10),
        "took {:?}",
        ran.elapsed
    );
    executor.finish(job.id).await;
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_with_different_settings_get_different_shared_containers() {
    let executor = DockerExecutor::new();
    let job = TestJob::reusing();
    let open = job.step(0, "open", "hostname");
    let mut closed = job.step(1, "closed", "hostname");
    closed.container.network = Some(Network::None);
    let open_again = job.step(2, "open-again", "hostname");
    let steps = [open, closed, open_again];
    executor.prepare(&steps).await.unwrap();
    let mut hosts = Vec::new();
    for step in &steps {
        let ran = job.run(&executor, step).await;
        assert_eq!(ran.outcome().exit_code, Some(0));
        hosts.push(ran.stdout().concat());
    }
    assert_eq!(hosts[0], hosts[2], "same settings, same container");
    assert_ne!(hosts[0], hosts[1], "other settings, other container");
    executor.finish(job.id).await;
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_removes_only_containers_of_jobs_that_are_not_live() {
    let executor = DockerExecutor::new();
    let dead = TestJob::new();
    let live = TestJob::new();
    for job in [&dead, &live] {
        executor
            .prepare(&[job.step(0, "left", "true")])
            .await
            .unwrap();
    }
    // prepare creates the first container in the background: wait until both exist.
    for _ in 0..100 {
        if dead.containers().len() == 1 && live.containers().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (dead_id, live_id) = (dead.id, live.id);
    // A fresh executor, as `mc gc` has: it knows nothing of the jobs.
    let removed = DockerExecutor::new()
        .collect_garbage(&move |job_id| job_id != dead_id)
        .await
        .unwrap();
    let mine: Vec<_> = removed
        .iter()
        .filter(|line| line.contains(&dead_id.to_string()))
        .collect();
    assert_eq!(mine.len(), 1, "{removed:?}");
    assert!(mine[0].contains("step left"), "{}", mine[0]);
    assert!(
        !removed
            .iter()
            .any(|line| line.contains(&live_id.to_string()))
    );
    dead.assert_no_containers();
    assert_eq!(live.containers().len(), 1);
    executor.finish(dead.id).await;
    executor.finish(live.id).await;
    live.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_step_requires_an_image() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(0, "imageless", "true");
    step.container.image = None;
    match executor.check_step(&step) {
        Err(ExecutorError::InvalidStep { message }) => {
            assert!(message.contains("\"imageless\""), "{message}");
        }
        other => panic!("expected an invalid step, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_command_runs_whatever_entrypoint_the_image_declares() {
    support::ensure_image();
    let dockerfile = format!(
        "FROM {}\nENTRYPOINT [\"echo\", \"from-entrypoint\"]\n",
        support::IMAGE
    );
    let mut build = std::process::Command::new("docker")
        .args([
            "build",
            "--quiet",
            "--tag",
            "maestro-test/entrypoint:latest",
            "-",
        ])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    build
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    let built = build.wait_with_output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let mut step = job.step(0, "entry", "echo from-step");
    step.container.image = Some("maestro-test/entrypoint:latest".to_owned());
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    executor.finish(job.id).await;
    assert_eq!(
        ran.stdout(),
        ["from-step"],
        "{:?} {:?}",
        ran.result,
        ran.lines
    );
    job.assert_no_containers();
}
