//! The SDK's example plugin and the SDK-less Python plugin pass the conformance kit.

use std::path::{Path, PathBuf};

fn example(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; `cargo test` builds examples beside them.
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

async fn assert_conforms(path: &Path) {
    let results = maestro_plugin_host::check_plugin(path).await;
    let report: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} {}: {}",
                if r.passed { "PASS" } else { "FAIL" },
                r.name,
                r.detail
            )
        })
        .collect();
    eprintln!("{}", report.join("\n"));
    assert!(results.len() >= 16);
    assert!(results.iter().all(|r| r.passed), "{}", report.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_example_plugin_passes_the_conformance_kit() {
    assert_conforms(&example("mc-executor-process")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_prints_of_a_plugin_never_reach_the_protocol_stream() {
    // It prints (and runs a child that prints) while validating and starting every task.
    let results = maestro_plugin_host::check_plugin(&example("mc-executor-noisy")).await;
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{}: {}", r.name, r.detail))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_without_the_sdk_passes_the_conformance_kit() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/mc-executor-pyproc");
    assert_conforms(&script).await;
}
