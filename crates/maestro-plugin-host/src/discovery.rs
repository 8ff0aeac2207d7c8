//! Where plugins are looked for, and what `mc plugins list` shows about each candidate.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use maestro_plugin_protocol::{Describe, EXECUTABLE_PREFIX, HostMessage, PluginMessage};
use serde::Serialize;

use crate::connection::Connection;
use crate::executor::{HELLO_TIMEOUT, REPLY_TIMEOUT, SHUTDOWN_GRACE};

/// The directories searched for plugins, in order: those of `MAESTRO_PLUGIN_PATH` (colon
/// separated), then `<state root>/plugins`, then those of `PATH`. Empty entries are skipped; a
/// directory listed twice is kept at its first place.
pub fn search_dirs(
    plugin_path_env: Option<&OsStr>,
    state_root: &Path,
    path_env: Option<&OsStr>,
) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(paths) = plugin_path_env {
        dirs.extend(std::env::split_paths(paths));
    }
    dirs.push(state_root.join("plugins"));
    if let Some(paths) = path_env {
        dirs.extend(std::env::split_paths(paths));
    }
    let mut seen = HashSet::new();
    dirs.retain(|dir| !dir.as_os_str().is_empty() && seen.insert(dir.clone()));
    dirs
}

/// Whether `name` can be a runtime name, which a spec's `runtime:` can select: 1 to 64 of
/// `[a-z0-9_-]` (exactly [`maestro_core::spec::is_valid_runtime_name`]). A plugin file with any
/// other name can never be used.
pub fn is_valid_name(name: &str) -> bool {
    maestro_core::spec::is_valid_runtime_name(name)
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first executable `mc-executor-<name>` in `dirs`.
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if !is_valid_name(name) {
        return None;
    }
    let file = format!("{EXECUTABLE_PREFIX}{name}");
    dirs.iter()
        .map(|dir| dir.join(&file))
        .find(|path| is_executable_file(path))
}

/// The runtime names of the usable plugin executables in `dirs` (valid names, executable
/// files), sorted, without starting any of them.
pub fn plugin_names(dirs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let file = entry.file_name().to_str()?.to_owned();
            let name = file.strip_prefix(EXECUTABLE_PREFIX)?.to_owned();
            (is_valid_name(&name) && is_executable_file(&entry.path())).then_some(name)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One `mc-executor-*` file found in a search directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginCandidate {
    /// The runtime name it would provide.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Whether a step naming this runtime would run on it: the first usable match, not shadowed
    /// by a built-in runtime.
    pub active: bool,
    /// The protocol versions its hello announced (empty when it could not be asked).
    pub protocol_versions: Vec<u32>,
    /// Its own version, from its hello.
    pub plugin_version: Option<String>,
    /// Its capabilities, from its hello.
    pub capabilities: Vec<String>,
    /// Its one-line description, from `describe`.
    pub description: Option<String>,
    /// What is wrong with it, one line each: shadowed, not executable, unusable.
    pub warnings: Vec<String>,
}

/// Every plugin candidate in `dirs`, in search order, each started once to read its hello and
/// description (with a deadline), with warnings about shadowed, unusable or non-executable files.
/// Candidates named like one of `builtin_names` are listed with a warning and never active.
pub async fn list_plugins(dirs: &[PathBuf], builtin_names: &[&str]) -> Vec<PluginCandidate> {
    let mut candidates = Vec::new();
    let mut first_usable: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let file = entry.file_name().to_str()?.to_owned();
                let name = file.strip_prefix(EXECUTABLE_PREFIX)?.to_owned();
                Some((name, entry.path()))
            })
            .collect();
        names.sort();
        for (name, path) in names {
            let mut warnings = Vec::new();
            let meta = std::fs::metadata(&path);
            let is_file = meta.as_ref().is_ok_and(std::fs::Metadata::is_file);
            let executable = is_executable_file(&path);
            if !is_valid_name(&name) {
                warnings.push(format!(
                    "{name:?} is not a valid runtime name (1 to 64 of lower-case letters, digits, '-', '_'): no spec can select it; ignored"
                ));
            } else if !is_file {
                warnings.push("not a regular file; ignored".to_owned());
            } else if !executable {
                warnings.push("not executable (chmod +x it); ignored".to_owned());
            }
            let usable_file = is_valid_name(&name) && is_file && executable;
            if builtin_names.contains(&name.as_str()) {
                warnings.push(format!(
                    "{name:?} is a built-in runtime, which a plugin can never replace; this file is never used"
                ));
            }
            let mut active = false;
            if usable_file && !builtin_names.contains(&name.as_str()) {
                match first_usable.get(&name) {
                    Some(winner) => warnings.push(format!("shadowed by {}", winner.display())),
                    None => {
                        first_usable.insert(name.clone(), path.clone());
                        active = true;
                    }
                }
            }
            candidates.push((
                usable_file,
                PluginCandidate {
                    name,
                    path,
                    active,
                    protocol_versions: Vec::new(),
                    plugin_version: None,
                    capabilities: Vec::new(),
                    description: None,
                    warnings,
                },
            ));
        }
    }
    let mut probes = tokio::task::JoinSet::new();
    for (index, (usable_file, candidate)) in candidates.iter().enumerate() {
        if *usable_file {
            let name = candidate.name.clone();
            let path = candidate.path.clone();
            probes.spawn(async move { (index, probe(&name, &path).await) });
        }
    }
    let mut listed: Vec<PluginCandidate> = candidates.into_iter().map(|(_, c)| c).collect();
    while let Some(joined) = probes.join_next().await {
        let Ok((index, probed)) = joined else {
            continue;
        };
        let candidate = &mut listed[index];
        match probed {
            Ok(found) => {
                candidate.protocol_versions = found.protocol_versions;
                candidate.plugin_version = found.plugin_version;
                candidate.capabilities = found.capabilities;
                candidate.description = found.description;
            }
            Err(problem) => {
                candidate.warnings.push(format!("unusable: {problem}"));
                candidate.active = false;
            }
        }
    }
    listed
}

struct Probed {
    protocol_versions: Vec<u32>,
    plugin_version: Option<String>,
    capabilities: Vec<String>,
    description: Option<String>,
}

async fn probe(name: &str, path: &Path) -> Result<Probed, String> {
    let connection = Connection::open(name, path, HELLO_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;
    let hello = connection.hello().clone();
    let id = connection.next_id();
    let described = connection
        .request(id, &HostMessage::Describe(Describe { id }), REPLY_TIMEOUT)
        .await;
    connection.shutdown(SHUTDOWN_GRACE).await;
    let description = match described {
        Ok(PluginMessage::Described(described)) => {
            Some(described.description).filter(|d| !d.is_empty())
        }
        Ok(_) => None,
        Err(error) => return Err(error.to_string()),
    };
    Ok(Probed {
        protocol_versions: hello.versions,
        plugin_version: Some(hello.version).filter(|v| !v.is_empty()),
        capabilities: hello.capabilities,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_is_plugin_path_then_state_root_then_path() {
        let dirs = search_dirs(
            Some(OsStr::new("/a::/b")),
            Path::new("/state"),
            Some(OsStr::new("/usr/bin:/a:/bin")),
        );
        assert_eq!(
            dirs,
            ["/a", "/b", "/state/plugins", "/usr/bin", "/bin"].map(PathBuf::from)
        );
        assert_eq!(
            search_dirs(None, Path::new("/s"), None),
            [PathBuf::from("/s/plugins")]
        );
    }

    #[test]
    fn names_cannot_escape_their_directory() {
        assert!(is_valid_name("ssh"));
        assert!(is_valid_name("my_vm-2"));
        for bad in ["", "../x", "a/b", ".hidden", "sp ace", "Foo", "vm-2.0"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert!(!is_valid_name(&"a".repeat(65)));
        assert_eq!(find_plugin("../../bin/sh", &[PathBuf::from("/tmp")]), None);
    }

    #[tokio::test]
    async fn files_no_spec_can_select_are_listed_inactive_with_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in ["Foo.x", "vm-2.0", "UPPER"] {
            let path = dir.path().join(format!("{EXECUTABLE_PREFIX}{name}"));
            // It would pass the handshake if it were ever started; it must not be.
            std::fs::write(&path, "#!/bin/sh\ntouch \"$0.ran\"\nexit 1\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let listed = list_plugins(&[dir.path().to_path_buf()], &["local"]).await;
        assert_eq!(listed.len(), 3);
        for candidate in &listed {
            assert!(!candidate.active, "{candidate:?}");
            let warnings = candidate.warnings.join("; ");
            assert!(warnings.contains("no spec can select it"), "{warnings}");
            let ran = format!("{}.ran", candidate.path.display());
            assert!(!Path::new(&ran).exists(), "{ran}: it was started");
        }
        assert_eq!(
            find_plugin("Foo.x", &[dir.path().to_path_buf()]),
            None,
            "a name no spec can select is never found"
        );
    }
}
