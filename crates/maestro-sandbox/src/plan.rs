//! What the caller asks the shim to run, and how.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One step to run in the sandbox: sent by the caller to the shim as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SandboxPlan {
    /// The program and its arguments; the program is looked up in `PATH` like a shell would.
    pub argv: Vec<String>,
    /// The directory the step starts in (inside the sandbox, which shows host paths unchanged).
    pub workdir: PathBuf,
    /// The job's workspace: the one tree the step may always write to.
    pub workspace: PathBuf,
    /// More paths the step may write to (caches, say). Each must exist; none may lie inside a
    /// `read_only` path.
    #[serde(default)]
    pub writable: Vec<PathBuf>,
    /// Paths that stay read-only even when they lie inside the workspace or a writable path
    /// (Maestro's state root, which holds the audit log the step must not rewrite).
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
    /// Host resources that are hidden by default and that this step may see.
    #[serde(default)]
    pub expose: Vec<HostAccess>,
    /// Whether the step shares the host's network.
    #[serde(default)]
    pub network: NetworkMode,
    /// Where the hidden resources live, as the *caller* sees it. The shim's own environment is
    /// the step's (a spec may set `HOME`), so a caller that cares sends its own here; without
    /// it the shim falls back to its environment.
    #[serde(default)]
    pub host: Option<HostEnvironment>,
    /// Build the sandbox now, but start the step only once the caller says so (`go` on the
    /// control socket, which [`crate::Control::wait_started`] sends). A caller can so have
    /// the sandbox built while it does what must come before the step (making the job's
    /// `RUNNING` durable): the sandbox is private until the step starts in it. A caller that
    /// goes away instead of saying `go` gets the sandbox torn down, and nothing ran. Only
    /// for a plan sent on the control socket: a plan read from a file starts at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
}

/// Whether a step shares the host's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// The host's network namespace: the step can reach whatever the host can.
    #[default]
    Host,
    /// A network namespace of its own with only a loopback interface (up): the step can talk
    /// to itself on 127.0.0.1 and nothing else.
    None,
}

/// A host resource holding credentials or giving control of the machine, hidden from every
/// step unless the step's plan names it in [`SandboxPlan::expose`].
///
/// Directories are covered by an empty read-only tmpfs, files and sockets by `/dev/null`.
/// Paths under `~` are taken in the caller's `HOME` and in the account's home directory from
/// the password database, when they differ (see [`HostEnvironment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostAccess {
    /// Container engine sockets, which are root on the host for whoever can reach them:
    /// `/run/docker.sock`, `/var/run/docker.sock`, `/run/containerd/containerd.sock`,
    /// `/run/podman/podman.sock`, `$XDG_RUNTIME_DIR/docker.sock`,
    /// `$XDG_RUNTIME_DIR/podman/podman.sock` and the path of a `unix://` `DOCKER_HOST`.
    DockerSocket,
    /// `~/.docker` (registry logins in `config.json`).
    DockerConfig,
    /// `~/.ssh` (keys, `known_hosts`, configuration).
    Ssh,
    /// `~/.aws` (AWS credentials and profiles).
    Aws,
    /// `~/.kube` (Kubernetes contexts and tokens).
    Kube,
    /// `~/.config/gcloud` (Google Cloud credentials).
    Gcloud,
    /// `~/.azure` (Azure CLI tokens).
    Azure,
    /// `~/.gnupg` (private keys, agent sockets).
    Gnupg,
    /// `~/.config/gh` (GitHub CLI tokens).
    GithubCli,
    /// `~/.netrc` (passwords for curl, git and others).
    Netrc,
    /// `~/.git-credentials` and `~/.config/git/credentials` (git's plain-text store).
    GitCredentials,
    /// `~/.pgpass` (PostgreSQL passwords).
    Pgpass,
    /// `~/.cargo/credentials.toml` and `~/.cargo/credentials` (crates.io tokens).
    CargoCredentials,
    /// `~/.pypirc` (PyPI upload tokens).
    Pypi,
    /// `~/.vault-token` (HashiCorp Vault token).
    Vault,
}

impl HostAccess {
    /// Every resource, in a fixed order.
    pub const ALL: [HostAccess; 15] = [
        HostAccess::DockerSocket,
        HostAccess::DockerConfig,
        HostAccess::Ssh,
        HostAccess::Aws,
        HostAccess::Kube,
        HostAccess::Gcloud,
        HostAccess::Azure,
        HostAccess::Gnupg,
        HostAccess::GithubCli,
        HostAccess::Netrc,
        HostAccess::GitCredentials,
        HostAccess::Pgpass,
        HostAccess::CargoCredentials,
        HostAccess::Pypi,
        HostAccess::Vault,
    ];

    /// The paths this resource stands for, given the caller's environment. Paths that do not
    /// exist are listed too; the shim skips them.
    pub fn paths(self, environment: &HostEnvironment) -> Vec<PathBuf> {
        let home = |relative: &[&str]| -> Vec<PathBuf> {
            let mut homes: Vec<&PathBuf> = environment
                .home
                .iter()
                .chain(&environment.account_home)
                .collect();
            homes.dedup();
            homes
                .into_iter()
                .flat_map(|home| relative.iter().map(|path| home.join(path)))
                .collect()
        };
        match self {
            HostAccess::DockerSocket => {
                let mut paths: Vec<PathBuf> = [
                    "/run/docker.sock",
                    "/var/run/docker.sock",
                    "/run/containerd/containerd.sock",
                    "/run/podman/podman.sock",
                ]
                .iter()
                .map(PathBuf::from)
                .collect();
                if let Some(runtime) = &environment.runtime_dir {
                    paths.push(runtime.join("docker.sock"));
                    paths.push(runtime.join("podman/podman.sock"));
                }
                if let Some(host) = &environment.docker_host {
                    paths.push(host.clone());
                }
                paths
            }
            HostAccess::DockerConfig => home(&[".docker"]),
            HostAccess::Ssh => home(&[".ssh"]),
            HostAccess::Aws => home(&[".aws"]),
            HostAccess::Kube => home(&[".kube"]),
            HostAccess::Gcloud => home(&[".config/gcloud"]),
            HostAccess::Azure => home(&[".azure"]),
            HostAccess::Gnupg => home(&[".gnupg"]),
            HostAccess::GithubCli => home(&[".config/gh"]),
            HostAccess::Netrc => home(&[".netrc"]),
            HostAccess::GitCredentials => home(&[".git-credentials", ".config/git/credentials"]),
            HostAccess::Pgpass => home(&[".pgpass"]),
            HostAccess::CargoCredentials => {
                home(&[".cargo/credentials.toml", ".cargo/credentials"])
            }
            HostAccess::Pypi => home(&[".pypirc"]),
            HostAccess::Vault => home(&[".vault-token"]),
        }
    }
}

/// The parts of the caller's environment that say where hidden resources live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEnvironment {
    /// `HOME`.
    pub home: Option<PathBuf>,
    /// The home directory of the process's user in the password database: hidden too, so that a
    /// `HOME` pointed elsewhere does not uncover the account's real `~/.ssh`.
    #[serde(default)]
    pub account_home: Option<PathBuf>,
    /// `XDG_RUNTIME_DIR`.
    pub runtime_dir: Option<PathBuf>,
    /// The socket path of `DOCKER_HOST` when it is a `unix://` address.
    pub docker_host: Option<PathBuf>,
}

impl HostEnvironment {
    /// Reads `HOME`, `XDG_RUNTIME_DIR` and `DOCKER_HOST` from this process's environment.
    pub fn from_process() -> Self {
        let absolute = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|path| path.is_absolute())
        };
        let account_home = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|user| user.dir)
            .filter(|path| path.is_absolute());
        HostEnvironment {
            home: absolute("HOME"),
            account_home,
            runtime_dir: absolute("XDG_RUNTIME_DIR"),
            docker_host: std::env::var("DOCKER_HOST")
                .ok()
                .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
                .filter(|path| path.is_absolute()),
        }
    }
}

impl SandboxPlan {
    /// The paths to hide from this step: those of every resource it does not expose.
    pub fn hidden_paths(&self, environment: &HostEnvironment) -> Vec<PathBuf> {
        HostAccess::ALL
            .iter()
            .filter(|access| !self.expose.contains(access))
            .flat_map(|access| access.paths(environment))
            .collect()
    }
}

/// System trees: nothing in them, and nothing that holds them, is ever writable in a sandbox.
/// (The `sandbox-limits` policy applies the same lists to the paths a spec names; the sandbox
/// applies them to the real paths it binds, which a link may have moved.)
pub const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

/// Directories that hold other people's data or the system's state: never writable as a whole,
/// though a directory of the job's own below them may be (`/var/lib/ci/cache`).
pub const SHARED_DIRS: &[&str] = &[
    "/var",
    "/var/lib",
    "/var/cache",
    "/var/log",
    "/home",
    "/root",
    "/opt",
    "/srv",
    "/mnt",
    "/media",
];

/// Why `path` (absolute, without `.`, `..` or links) may never be a step's writable tree.
pub fn never_writable(path: &Path) -> Option<&'static str> {
    let tree = SYSTEM_TREES
        .iter()
        .any(|dir| path.starts_with(dir) || Path::new(dir).starts_with(path));
    if tree {
        Some("is, holds or lies in a system directory")
    } else if SHARED_DIRS.iter().any(|dir| path == Path::new(dir)) {
        Some("is a directory shared by the whole machine")
    } else {
        None
    }
}

/// Whether `inner` is `outer` or lies beneath it (both already canonical).
pub(crate) fn is_within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_access_names_are_kebab_case() {
        let names = serde_json::to_string(&HostAccess::ALL).unwrap();
        assert!(names.contains("\"docker-socket\""), "{names}");
        assert!(names.contains("\"git-credentials\""), "{names}");
        assert!(names.contains("\"github-cli\""), "{names}");
        let back: Vec<HostAccess> = serde_json::from_str(&names).unwrap();
        assert_eq!(back, HostAccess::ALL);
    }

    #[test]
    fn exposing_ssh_removes_only_ssh_from_the_hidden_paths() {
        let environment = HostEnvironment {
            home: Some("/home/u".into()),
            ..HostEnvironment::default()
        };
        let mut plan = SandboxPlan {
            argv: vec!["true".into()],
            workdir: "/w".into(),
            workspace: "/w".into(),
            writable: vec![],
            read_only: vec![],
            expose: vec![],
            network: NetworkMode::Host,
            host: None,
            hold: false,
        };
        assert!(
            plan.hidden_paths(&environment)
                .contains(&PathBuf::from("/home/u/.ssh"))
        );
        plan.expose.push(HostAccess::Ssh);
        let hidden = plan.hidden_paths(&environment);
        assert!(!hidden.contains(&PathBuf::from("/home/u/.ssh")));
        assert!(hidden.contains(&PathBuf::from("/home/u/.aws")));
        assert!(hidden.contains(&PathBuf::from("/run/docker.sock")));
    }

    #[test]
    fn a_plan_without_optional_fields_parses() {
        let plan: SandboxPlan =
            serde_json::from_str(r#"{"argv":["true"],"workdir":"/w","workspace":"/w"}"#).unwrap();
        assert_eq!(plan.network, NetworkMode::Host);
        assert!(plan.expose.is_empty());
        assert!(!plan.hold);
    }

    #[test]
    fn both_homes_are_hidden_when_they_differ() {
        let environment = HostEnvironment {
            home: Some("/tmp/ci-home".into()),
            account_home: Some("/root".into()),
            ..HostEnvironment::default()
        };
        let paths = HostAccess::Ssh.paths(&environment);
        assert_eq!(
            paths,
            [
                PathBuf::from("/tmp/ci-home/.ssh"),
                PathBuf::from("/root/.ssh")
            ]
        );
        let same = HostEnvironment {
            home: Some("/root".into()),
            account_home: Some("/root".into()),
            ..HostEnvironment::default()
        };
        assert_eq!(HostAccess::Ssh.paths(&same), [PathBuf::from("/root/.ssh")]);
    }
}
