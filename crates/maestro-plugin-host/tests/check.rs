//! The conformance kit against a plugin that reports process groups it did not create.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::install_script;

/// The Python plugin of `plugins/`, changed to report `pgid` for every task (it still stops and
/// kills its real task groups itself).
fn lying_pyproc(dir: &Path, pgid: i32) -> std::path::PathBuf {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/mc-executor-pyproc"),
    )
    .unwrap();
    let needle = "\"pgid\": task.pgid";
    assert!(source.contains(needle), "the pyproc plugin changed");
    let path = dir.join("mc-executor-liar");
    install_script(&path, &source.replace(needle, &format!("\"pgid\": {pgid}")));
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_pgids_the_plugin_did_not_create_fail_the_kit_and_are_never_signalled() {
    // Leads its own group, like a task would, but belongs to the test, not to the plugin.
    let mut bystander = Command::new("sleep")
        .arg("120")
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let bystander_pid = i32::try_from(bystander.id()).unwrap();
    for pgid in [-999_999, 1, bystander_pid] {
        let dir = tempfile::tempdir().unwrap();
        let results = maestro_plugin_host::check_plugin(&lying_pyproc(dir.path(), pgid)).await;
        let report: Vec<String> = results
            .iter()
            .map(|r| {
                let verdict = if r.passed { "PASS" } else { "FAIL" };
                format!("{verdict} {}: {}", r.name, r.detail)
            })
            .collect();
        let report = report.join("\n");
        let failed: Vec<&str> = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(failed, ["clean protocol stream"], "pgid {pgid}:\n{report}");
        assert!(
            report.contains(&format!("reported pgid {pgid}")),
            "{report}"
        );
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "pgid {pgid}: the kit killed an unrelated process group\n{report}"
        );
    }
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A plugin that announces `contained` while running its tasks on this machine fails the
/// kit's "containment claim" check (policy would otherwise trust it); without the claim it
/// passes that check. The task only tries to create a file in a temporary directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_containment_claim_fails_the_kit() {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/mc-executor-pyproc"),
    )
    .unwrap();
    let needle = r#""capabilities": ["argv", "shell", "env", "workdir", "stop", "concurrent"]"#;
    assert!(source.contains(needle), "the pyproc plugin changed");
    let dir = tempfile::tempdir().unwrap();
    for (name, claims) in [("boaster", true), ("honest", false)] {
        let text = if claims {
            source.replace(
                needle,
                r#""capabilities": ["argv", "shell", "env", "workdir", "stop", "concurrent", "contained"]"#,
            )
        } else {
            source.clone()
        };
        let path = dir.path().join(format!("mc-executor-{name}"));
        install_script(&path, &text);
        let results = maestro_plugin_host::check_plugin(&path).await;
        let claim = results
            .iter()
            .find(|r| r.name == "containment claim")
            .expect("the kit has a containment check");
        assert_eq!(claim.passed, !claims, "{name}: {}", claim.detail);
        if claims {
            assert!(
                claim.detail.contains("announces `contained`"),
                "{}",
                claim.detail
            );
        } else {
            assert!(claim.detail.starts_with("not claimed"), "{}", claim.detail);
        }
    }
}

/// Rule 3 of §4.3 (exactly one exit per started task) is the `ordering rules` check's (§9): a
/// plugin that never sends a task's exit event (the mutant drops its first task's) fails it with
/// a line that says so, not only the check that timed out waiting for that event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_sends_an_exit_event_fails_the_ordering_rules() {
    let mutant = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/plugins/mutants/mc-executor-drops-an-exit");
    let results = maestro_plugin_host::check_plugin(&mutant).await;
    let ordering = results
        .iter()
        .find(|r| r.name == "ordering rules")
        .expect("an ordering rules check");
    assert!(!ordering.passed, "{ordering:?}");
    assert!(
        ordering.detail.contains("never sent their exit event"),
        "{ordering:?}"
    );
}
