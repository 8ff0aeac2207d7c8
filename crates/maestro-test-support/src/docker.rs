//! The real Docker engine, as tests use it: the test image, and containers found by label.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The image Docker tests run: static busybox on an empty root, built by the repository's script.
pub const IMAGE: &str = "maestro-test/busybox:latest";

/// Build the test image once per test binary (fast when it exists), failing loudly when the
/// engine or busybox-static is missing: Docker tests never skip silently.
pub fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker/build-test-image.sh");
        match Command::new("bash").arg(&script).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "cannot build the Docker test image with {}: {}\nthese tests need a running Docker engine and busybox-static",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => panic!("cannot run {}: {error}", script.display()),
        }
    });
}

/// Every container id, running or not, carrying `label`.
pub fn containers_labelled(label: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label={label}"))
        .output()
        .expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The containers still carrying `label` after waiting up to `limit` for none to be left.
///
/// A step container that exited by itself is removed by the engine (auto-remove), which may
/// finish a moment after `mc` has reported the step: tests of that path wait, within a bound.
pub fn containers_left_after(label: &str, limit: std::time::Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = containers_labelled(label);
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Force-remove every container carrying `label`, quietly (cleanup after a failed test).
pub fn remove_labelled(label: &str) {
    let left = containers_labelled(label);
    if !left.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&left)
            .output();
    }
}

/// `docker inspect --format FORMAT id`.
pub fn inspect(id: &str, format: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "--format", format, id])
        .output()
        .expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "docker inspect failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
