//! `DockerExecutor` against the real Docker engine: output, exit codes, limits, stops, cleanup.

mod support;

use std::time::Duration;

use maestro_core::executor::{
    CommandLine, Executor, ExecutorError, StopReason, Teardown, TeardownMethod,
};
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
    job.assert_containers_go();
}

#[test]
fn a_container_that_exited_is_removed_by_the_engine_even_if_mc_goes_away() {
    // `mc` killed right after a step ended: here the whole runtime the executor lives in is
    // dropped as soon as the step returns, with no `finish`, so any removal the executor had
    // still to send dies with it. The engine removes the container by itself (auto-remove).
    let job = TestJob::new();
    let step = job.step(0, "quick", "echo done");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ran = runtime.block_on(async {
        let executor = DockerExecutor::new();
        executor.prepare(std::slice::from_ref(&step)).await.unwrap();
        job.run(&executor, &step).await
    });
    drop(runtime);
    assert_eq!(ran.outcome().exit_code, Some(0), "{:?}", ran.result);
    assert_eq!(ran.stdout(), ["done"]);
    job.assert_containers_go();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_run_without_prepare_still_gets_its_exit_code_and_output() {
    // Without `prepare` no event stream was subscribed for the job: the step subscribes one
    // itself, and the exit code and the output still arrive.
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let step = job.step(0, "unprepared", "echo out; echo err >&2; exit 7");
    let ran = job.run(&executor, &step).await;
    executor.finish(job.id).await;
    assert_eq!(ran.outcome().exit_code, Some(7), "{:?}", ran.result);
    assert_eq!(ran.stdout(), ["out"]);
    assert_eq!(ran.stderr(), ["err"]);
    job.assert_containers_go();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cancelled_after_a_step_that_exited_leaves_nothing() {
    // Step 0 exits by itself and the engine starts tearing its container down; step 1 is
    // cancelled before it starts. Both containers are gone when `finish` returns: the executor
    // removes (and waits for) the one the engine may not have removed yet. Without that,
    // step 0's container was still there here (3 runs in 3).
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let steps = [job.step(0, "first", "true"), job.step(1, "second", "true")];
    executor.prepare(&steps).await.unwrap();
    assert_eq!(
        job.run(&executor, &steps[0]).await.outcome().exit_code,
        Some(0)
    );
    let cancel = CancellationToken::new();
    cancel.cancel();
    let ran = job
        .run_cancellable(&executor, &steps[1], cancel, Duration::from_secs(1))
        .await;
    assert_eq!(ran.outcome().stopped, Some(StopReason::Cancelled));
    executor.finish(job.id).await;
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
    job.assert_containers_go();
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
    job.assert_containers_go();
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
    job.assert_containers_go();
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
                     {{len .Mounts}} {{(index .Mounts 0).Destination}} {{.HostConfig.AutoRemove}}",
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
            "67108864 500000000 32 none true 1234:1234 false true limited {} 1 /workspace false",
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
    // Long enough for the step to get going (and print) even on a loaded machine.
    step.timeout = Duration::from_secs(5);
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
        ran.elapsed >= Duration::from_secs(6),
        "killed before the timeout and the grace period passed: {:?}",
        ran.elapsed
    );
    assert!(
        ran.elapsed < Duration::from_secs(15),
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
        "trap 'echo got TERM; exit 143' TERM; echo waiting; touch started; sleep 60 & wait",
    );
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let cancel = CancellationToken::new();
    let marker = job.workspace.path().join("started");
    let trigger = {
        let cancel = cancel.clone();
        async move {
            // Cancel only once the step runs with its trap set, however loaded the machine.
            support::wait_for(&marker, Duration::from_secs(60)).await;
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
async fn sigterm_reaches_a_shell_step_through_the_engines_init() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    // Without an init, the shell is PID 1: a child of it never gets SIGTERM, and a command
    // without a handler ignores it, so every stop waits out the grace period.
    let mut trapping = job.step(
        0,
        "trapping",
        "sh -c 'trap \"echo child > child-got-term; exit 0\" TERM; while :; do sleep 0.1; done' & \
         trap 'wait; echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
    );
    trapping.timeout = Duration::from_secs(5);
    let mut plain = job.step(1, "plain", "sleep 300");
    plain.timeout = Duration::from_secs(5);
    let steps = [trapping, plain];
    executor.prepare(&steps).await.unwrap();
    let grace = Duration::from_secs(10);
    let ran = job
        .run_cancellable(&executor, &steps[0], CancellationToken::new(), grace)
        .await;
    let outcome = ran.outcome();
    assert_eq!(outcome.stopped, Some(StopReason::TimedOut));
    assert_eq!(ran.stdout(), ["ready", "got-term"], "{:?}", ran.lines);
    assert_eq!(outcome.exit_code, Some(0), "the trap's own exit");
    assert!(
        job.workspace.path().join("child-got-term").exists(),
        "the step's child got SIGTERM too"
    );
    assert!(ran.elapsed >= Duration::from_secs(5), "{:?}", ran.elapsed);
    assert!(
        ran.elapsed < Duration::from_secs(10),
        "waited for the grace period: {:?}",
        ran.elapsed
    );
    // A plain command without a trap dies of SIGTERM at once, not of SIGKILL later.
    let ran = job
        .run_cancellable(&executor, &steps[1], CancellationToken::new(), grace)
        .await;
    executor.finish(job.id).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.stopped, Some(StopReason::TimedOut));
    assert_eq!(outcome.exit_code, Some(143), "128 + SIGTERM");
    assert!(ran.elapsed >= Duration::from_secs(5), "{:?}", ran.elapsed);
    assert!(
        ran.elapsed < Duration::from_secs(10),
        "waited for the grace period: {:?}",
        ran.elapsed
    );
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_after_a_step_of_another_runtime_gets_the_image_that_step_made() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let images = support::TestImages::default();
    let image = format!("maestro-test/retag-{}:latest", job.id);
    // Steps 1 and 3 are another runtime's (say a local `docker build -t`): this executor gets
    // steps 0, 2 and 4. Neither prepare nor step 0 may create step 2's container before
    // step 1 made its image, nor step 2 step 4's before step 3 made it anew.
    let first = job.step(0, "before", "true");
    let mut second = job.step(2, "uses-the-tag", "cat /tag");
    second.container.image = Some(image.clone());
    second.container.pull = Some(PullPolicy::Never);
    let mut third = second.clone();
    third.index = 4;
    third.name = "uses-the-new-tag".to_owned();
    let steps = [first, second, third];
    executor.prepare(&steps).await.unwrap();
    assert_eq!(
        job.run(&executor, &steps[0]).await.outcome().exit_code,
        Some(0)
    );
    images.build(&image, "/tag", "one");
    let ran = job.run(&executor, &steps[1]).await;
    assert_eq!(ran.outcome().exit_code, Some(0), "{:?}", ran.lines);
    assert_eq!(ran.stdout(), ["one"]);
    images.build(&image, "/tag", "two");
    let ran = job.run(&executor, &steps[2]).await;
    assert_eq!(ran.stdout(), ["two"], "a container of the stale image ran");
    executor.finish(job.id).await;
    job.assert_containers_go();

    // A job that does not start with a docker step gets nothing made at prepare either.
    let executor = DockerExecutor::new();
    let later = TestJob::new();
    let image = format!("maestro-test/retag-{}:latest", later.id);
    let mut only = later.step(1, "after-a-local-step", "cat /tag");
    only.container.image = Some(image.clone());
    only.container.pull = Some(PullPolicy::Never);
    executor.prepare(std::slice::from_ref(&only)).await.unwrap();
    images.build(&image, "/tag", "fresh");
    let ran = later.run(&executor, &only).await;
    assert_eq!(ran.stdout(), ["fresh"], "{:?}", ran.result);
    executor.finish(later.id).await;
    later.assert_containers_go();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_of_a_later_step_is_pulled_when_the_step_runs_not_ahead() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let first = job.step(0, "first", "true");
    let mut unpullable = job.step(1, "unpullable", "true");
    unpullable.container.image = Some("maestro-test/not-in-any-registry:2".to_owned());
    let mut never = job.step(2, "never", "true");
    never.container.image = Some("maestro-test/not-in-any-registry:3".to_owned());
    never.container.pull = Some(PullPolicy::Never);
    let steps = [first, unpullable, never];
    executor.prepare(&steps).await.unwrap();
    assert_eq!(
        job.run(&executor, &steps[0]).await.outcome().exit_code,
        Some(0)
    );
    // Not created ahead (the image is absent): created, and the pull tried, as the step runs.
    let ran = job.run(&executor, &steps[1]).await;
    match &ran.result {
        Err(ExecutorError::StepFailed { message }) => {
            assert!(message.contains("cannot pull image"), "{message}");
            assert!(message.contains("not-in-any-registry:2"), "{message}");
        }
        other => panic!("expected a failed pull, got {other:?}"),
    }
    let ran = job.run(&executor, &steps[2]).await;
    match &ran.result {
        Err(ExecutorError::StepFailed { message }) => {
            assert!(message.contains("pull policy is never"), "{message}");
        }
        other => panic!("expected a missing image, got {other:?}"),
    }
    executor.finish(job.id).await;
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
    job.assert_containers_go();
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
    // The runner skips the rest; the container made ready for step 1 must not outlive the job,
    // and the executor removes it itself: it is gone when `finish` returns.
    executor.finish(job.id).await;
    let left = job.containers();
    for skipped in ["skipped", "also-skipped"] {
        let of_step = containers_labelled(&format!("maestro.step={skipped}"));
        assert!(
            !left.iter().any(|id| of_step.contains(id)),
            "the container made ahead for {skipped} remains"
        );
    }
    // The step that ran exited by itself: the engine removes its container.
    job.assert_containers_go();
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
    step.timeout = Duration::from_secs(5);
    executor.prepare(std::slice::from_ref(&step)).await.unwrap();
    let ran = job.run(&executor, &step).await;
    let outcome = ran.outcome();
    assert_eq!(outcome.stopped, Some(StopReason::TimedOut));
    assert_eq!(ran.stdout(), ["started"]);
    assert!(
        ran.elapsed >= Duration::from_secs(5),
        "stopped before the timeout: {:?}",
        ran.elapsed
    );
    assert!(
        ran.elapsed < Duration::from_secs(15),
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
        .filter(|resource| resource.job_id == dead_id)
        .collect();
    assert_eq!(mine.len(), 1, "{removed:?}");
    assert_eq!(mine[0].kind, "container", "{:?}", mine[0]);
    assert_eq!(mine[0].step.as_deref(), Some("left"), "{:?}", mine[0]);
    assert!(!removed.iter().any(|resource| resource.job_id == live_id));
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
    /// The image this test builds is removed when it ends, however it ends.
    struct RemoveImage(&'static str);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["image", "rm", "--force", self.0])
                .output();
        }
    }
    let _remove = RemoveImage("maestro-test/entrypoint:latest");
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
    job.assert_containers_go();
}

/// Whether container `id` (a full or short id) is unknown to the engine: `docker inspect`
/// fails with "No such".
fn is_gone(id: &str) -> bool {
    let output = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.Id}}", id])
        .output()
        .expect("the docker CLI runs");
    !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("No such")
}

/// The capability bits of a `CapBnd:` line of `/proc/self/status`.
fn bounding_set(lines: &[&str]) -> u64 {
    let line = lines
        .iter()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .expect("a CapBnd line");
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The capability numbers the executor drops, and some it keeps (linux/capability.h).
const DROPPED: [(u32, &str); 5] = [
    (13, "NET_RAW"),
    (27, "MKNOD"),
    (29, "AUDIT_WRITE"),
    (18, "SYS_CHROOT"),
    (31, "SETFCAP"),
];
const KEPT: [(u32, &str); 6] = [
    (0, "CHOWN"),
    (1, "DAC_OVERRIDE"),
    (3, "FOWNER"),
    (5, "KILL"),
    (6, "SETGID"),
    (7, "SETUID"),
];

fn assert_contained(status: &[&str]) {
    assert!(status.contains(&"NoNewPrivs:\t1"), "{status:?}");
    assert!(
        status.contains(&"Seccomp:\t2"),
        "the engine's filter: {status:?}"
    );
    let bounding = bounding_set(status);
    for (bit, name) in DROPPED {
        assert_eq!(bounding & (1 << bit), 0, "{name} is dropped: {bounding:#x}");
    }
    for (bit, name) in KEPT {
        assert_ne!(bounding & (1 << bit), 0, "{name} is kept: {bounding:#x}");
    }
}

const STATUS: &str = "grep -E '^(NoNewPrivs|Seccomp|CapBnd):' /proc/self/status";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_container_gets_no_new_privileges_the_default_seccomp_and_only_the_workspace() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    let step = job.step(0, "contained", &format!("{STATUS}; sleep 2"));
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
                    "{{json .HostConfig.SecurityOpt}}|{{json .HostConfig.CapDrop}}|\
                     {{json .HostConfig.CapAdd}}|{{.HostConfig.Privileged}}|\
                     {{range .Mounts}}{{.Type}} {{.Source}} {{.Destination}} {{.RW}};{{end}}|\
                     {{json .HostConfig.Binds}}",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    };
    let (ran, seen) = tokio::join!(job.run(&executor, &step), check);
    executor.finish(job.id).await;
    assert_eq!(ran.outcome().exit_code, Some(0), "{:?}", ran.lines);
    assert_contained(&ran.stdout());
    let workspace = std::fs::canonicalize(job.workspace.path()).unwrap();
    assert_eq!(
        seen.expect("the container was seen running"),
        format!(
            "[\"no-new-privileges\"]|[\"NET_RAW\",\"MKNOD\",\"AUDIT_WRITE\",\"SYS_CHROOT\",\"SETFCAP\"]|\
             null|false|bind {} /workspace true;|null",
            workspace.display()
        ),
        "no seccomp=unconfined, no privileges, only the workspace mounted"
    );
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_outcome_carries_a_verified_teardown_and_its_container_is_gone() {
    let executor = DockerExecutor::new();
    let job = TestJob::new();
    // Removed by the engine (auto-remove), by the executor (memory limit), and after a timeout.
    let exits = job.step(0, "exits", "hostname");
    let mut limited = job.step(1, "limited", "hostname; exit 3");
    limited.container.memory_bytes = Some(64 << 20);
    let mut stuck = job.step(2, "stuck", "hostname; sleep 60");
    stuck.timeout = Duration::from_secs(2);
    let steps = [exits, limited, stuck];
    executor.prepare(&steps).await.unwrap();
    for step in &steps {
        let ran = job
            .run_cancellable(
                &executor,
                step,
                CancellationToken::new(),
                Duration::from_millis(500),
            )
            .await;
        let outcome = ran.outcome();
        assert_eq!(
            outcome.teardown,
            Some(Teardown::verified(TeardownMethod::ContainerRemoved)),
            "{}: {outcome:?}",
            step.name
        );
        let [host] = ran.stdout()[..] else {
            panic!("{}: {:?}", step.name, ran.lines);
        };
        // No waiting: the step ended only once the engine reported its container gone.
        assert!(
            is_gone(host),
            "{}: container {host} is still there",
            step.name
        );
    }
    executor.finish(job.id).await;
    job.assert_no_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_container_holds_execs_to_the_same_defaults_and_its_removal_is_verified() {
    let executor = DockerExecutor::new();
    let job = TestJob::reusing();
    let steps = [
        job.step(0, "first", STATUS),
        job.step(1, "last", &format!("{STATUS}; hostname")),
    ];
    executor.prepare(&steps).await.unwrap();
    let first = job.run(&executor, &steps[0]).await;
    assert_contained(&first.stdout());
    assert_eq!(
        first.outcome().teardown,
        None,
        "the container is kept for the next step: nothing removed to verify yet"
    );
    let last = job.run(&executor, &steps[1]).await;
    let stdout = last.stdout();
    assert_contained(&stdout);
    assert_eq!(
        last.outcome().teardown,
        Some(Teardown::verified(TeardownMethod::ContainerRemoved)),
        "no later step needs it: removed, and verified, with the last step"
    );
    let host = stdout.last().unwrap();
    assert!(is_gone(host), "container {host} is still there");
    executor.finish(job.id).await;
    job.assert_no_containers();
}
