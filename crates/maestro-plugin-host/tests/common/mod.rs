//! Helpers shared by the plugin host's tests.

use std::path::Path;
use std::process::Command;

/// Writes the executable `path` with `text` without this process ever holding it open for
/// writing: the text goes to a file beside it, which `install` copies. A test thread that
/// forks while this one writes (the tests of a file run at once and spawn plugins) would
/// otherwise hold the descriptor until its exec, and executing the script then fails with
/// "Text file busy".
pub(crate) fn install_script(path: &Path, text: &str) {
    let source = path.with_extension("source");
    std::fs::write(&source, text).unwrap();
    let status = Command::new("install")
        .args(["-m", "0755"])
        .arg(&source)
        .arg(path)
        .status()
        .expect("run install (coreutils)");
    assert!(status.success(), "install {}", path.display());
}
