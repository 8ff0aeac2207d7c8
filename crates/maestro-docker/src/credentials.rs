//! Registry credentials for an image, found where the `docker` CLI finds them: the caller's
//! Docker configuration (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), through a
//! credential helper (`credHelpers` for the registry, else `credsStore`) or the file's own
//! `auths` entry.
//!
//! Why here and not in the engine: the engine has no access to the caller's configuration; the
//! CLI reads it and sends the credentials with each pull or service creation. Maestro does the
//! same, so a private image pulls for `mc` exactly when it pulls for `docker` in the same shell.
//!
//! The values are secrets: they are handed to bollard for the one request that needs them,
//! never logged ([`RegistryCredentials`]' `Debug` shows only the registry), never stored, and
//! no error message quotes them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

/// The key Docker Hub's credentials are stored under, by the CLI and by credential helpers.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";
/// How long a credential helper may take to answer.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials for one registry. `Debug` names the registry only.
#[derive(Clone)]
pub struct RegistryCredentials {
    registry: String,
    credentials: DockerCredentials,
}

impl RegistryCredentials {
    /// The registry these are for, as the configuration names it (`127.0.0.1:5000`,
    /// `https://index.docker.io/v1/`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// What bollard sends in the `X-Registry-Auth` header.
    pub fn docker_credentials(&self) -> DockerCredentials {
        self.credentials.clone()
    }
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// Why the credentials for an image could not be read. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The configuration file exists but cannot be read.
    #[error("cannot read the Docker configuration {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not the JSON the docker CLI writes.
    #[error("the Docker configuration {} is not valid: {source}; fix it or point DOCKER_CONFIG elsewhere", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// An `auths` entry whose `auth` is not base64 of `user:password`.
    #[error("the Docker configuration {}: the credentials for registry {registry} are not base64 of user:password; run docker login {registry} again", path.display())]
    BadAuth {
        /// The file.
        path: PathBuf,
        /// The registry.
        registry: String,
    },
    /// A credential helper failed.
    #[error(
        "the Docker credential helper docker-credential-{helper} failed for registry {registry}: {reason}"
    )]
    Helper {
        /// The helper's name (`docker-credential-<name>`).
        helper: String,
        /// The registry.
        registry: String,
        /// What went wrong (never the helper's output).
        reason: String,
    },
}

/// The registry `image` is pulled from, as the configuration keys it: the first path component
/// when it names a host (it holds a `.` or a `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => DOCKER_HUB,
    }
}

/// The credentials the caller's Docker configuration holds for `image`'s registry; `None` when
/// there is no configuration or it holds nothing for that registry (a public image).
pub fn for_image(image: &str) -> Result<Option<RegistryCredentials>, CredentialsError> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    for_image_in(image, &path, &mut |helper, registry| {
        run_helper(helper, registry)
    })
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The parts of the CLI's `config.json` that hold credentials.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// A helper's answer to `get`.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// What a helper gave: `None` when it holds nothing for the registry.
type HelperResult = Result<Option<HelperAnswerPair>, String>;
/// (user name, secret).
type HelperAnswerPair = (String, String);

fn for_image_in(
    image: &str,
    path: &Path,
    helper: &mut dyn FnMut(&str, &str) -> HelperResult,
) -> Result<Option<RegistryCredentials>, CredentialsError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let config: ConfigFile =
        serde_json::from_slice(&text).map_err(|source| CredentialsError::Parse {
            path: path.to_owned(),
            source,
        })?;
    let registry = registry_of(image);
    let wanted = hostname(registry);

    let helper_name = config
        .cred_helpers
        .iter()
        .find(|(key, _)| hostname(key) == wanted)
        .map(|(_, name)| name.clone())
        .or_else(|| config.creds_store.clone().filter(|name| !name.is_empty()));
    if let Some(name) = helper_name {
        let answer = helper(&name, registry).map_err(|reason| CredentialsError::Helper {
            helper: name.clone(),
            registry: registry.to_owned(),
            reason,
        })?;
        if let Some((username, secret)) = answer {
            let mut credentials = DockerCredentials {
                serveraddress: Some(registry.to_owned()),
                ..DockerCredentials::default()
            };
            // The helpers' convention for an identity token.
            if username == "<token>" {
                credentials.identitytoken = Some(secret);
            } else {
                credentials.username = Some(username);
                credentials.password = Some(secret);
            }
            return Ok(Some(RegistryCredentials {
                registry: registry.to_owned(),
                credentials,
            }));
        }
    }

    let Some((key, entry)) = config.auths.iter().find(|(key, _)| hostname(key) == wanted) else {
        return Ok(None);
    };
    let mut credentials = DockerCredentials {
        serveraddress: Some(registry.to_owned()),
        username: entry.username.clone(),
        password: entry.password.clone(),
        identitytoken: entry.identitytoken.clone(),
        registrytoken: entry.registrytoken.clone(),
        ..DockerCredentials::default()
    };
    if let Some(auth) = entry.auth.as_deref().filter(|auth| !auth.is_empty()) {
        let bad = || CredentialsError::BadAuth {
            path: path.to_owned(),
            registry: key.clone(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
        credentials.username = Some(username.to_owned());
        credentials.password = Some(password.to_owned());
    }
    let empty = credentials.username.is_none()
        && credentials.identitytoken.is_none()
        && credentials.registrytoken.is_none();
    Ok((!empty).then(|| RegistryCredentials {
        registry: registry.to_owned(),
        credentials,
    }))
}

/// A configuration key reduced to its host, as the CLI compares them: `https://host/v1/` →
/// `host`. Docker Hub's several spellings are one.
fn hostname(key: &str) -> &str {
    let host = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "docker.io" | "registry-1.docker.io" => "index.docker.io",
        other => other,
    }
}

/// `docker-credential-<helper> get`, the registry on stdin; `None` when it has nothing for it.
fn run_helper(helper: &str, registry: &str) -> HelperResult {
    if helper.is_empty()
        || !helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("its name is not a plain program name".to_owned());
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(registry.as_bytes());
    }
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < HELPER_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it did not answer within {} s",
                    HELPER_TIMEOUT.as_secs()
                ));
            }
            Err(error) => return Err(format!("cannot wait for it: {error}")),
        }
    };
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)
            .map_err(|error| format!("cannot read its answer: {error}"))?;
    }
    if !status.success() {
        // Helpers print this (and exit 1) for a registry they hold nothing for.
        if String::from_utf8_lossy(&stdout).contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("it exited with {status}"));
    }
    let answer: HelperAnswer = serde_json::from_slice(&stdout)
        .map_err(|_| "its answer is not the JSON credential helpers give".to_owned())?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((answer.username, answer.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    fn no_helper(_: &str, _: &str) -> HelperResult {
        panic!("no helper is configured")
    }

    #[test]
    fn registries_are_the_first_component_when_it_names_a_host() {
        assert_eq!(registry_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/org/app"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("org/app:1"), DOCKER_HUB);
        assert_eq!(registry_of("busybox"), DOCKER_HUB);
    }

    #[test]
    fn auths_entries_are_decoded_and_matched_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="}}}"#,
        );
        let found = for_image_in("127.0.0.1:5000/app:1", &path, &mut no_helper)
            .unwrap()
            .unwrap();
        let credentials = found.docker_credentials();
        assert_eq!(credentials.username.as_deref(), Some("user"));
        assert_eq!(credentials.password.as_deref(), Some("pa:ss"));
        assert_eq!(credentials.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        let hub = for_image_in("library/busybox", &path, &mut no_helper)
            .unwrap()
            .unwrap();
        assert_eq!(hub.docker_credentials().username.as_deref(), Some("hub"));
        assert!(
            for_image_in("ghcr.io/app", &path, &mut no_helper)
                .unwrap()
                .is_none()
        );
        // The secret never shows in Debug.
        let shown = format!("{found:?}");
        assert!(
            !shown.contains("pa:ss") && shown.contains("127.0.0.1:5000"),
            "{shown}"
        );
    }

    #[test]
    fn helpers_come_first_and_token_usernames_become_identity_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"{"auths":{"ghcr.io":{}},"credHelpers":{"ghcr.io":"gh"},"credsStore":"store"}"#,
        );
        let mut asked = Vec::new();
        let mut helper = |name: &str, registry: &str| -> HelperResult {
            asked.push(format!("{name} {registry}"));
            Ok(Some(("<token>".to_owned(), "tok".to_owned())))
        };
        let found = for_image_in("ghcr.io/app", &path, &mut helper)
            .unwrap()
            .unwrap();
        assert_eq!(
            found.docker_credentials().identitytoken.as_deref(),
            Some("tok")
        );
        let _ = for_image_in("quay.io/app", &path, &mut helper).unwrap();
        assert_eq!(asked, ["gh ghcr.io", "store quay.io"]);
    }

    #[test]
    fn a_missing_file_is_no_credentials_and_bad_ones_say_which_registry() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        assert!(
            for_image_in("a.io/x", &missing, &mut no_helper)
                .unwrap()
                .is_none()
        );
        let path = write(dir.path(), r#"{"auths":{"a.io":{"auth":"!!!"}}}"#);
        let error = for_image_in("a.io/x", &path, &mut no_helper).unwrap_err();
        assert!(error.to_string().contains("registry a.io"), "{error}");
        let path = write(dir.path(), "{not json");
        let error = for_image_in("a.io/x", &path, &mut no_helper).unwrap_err();
        assert!(error.to_string().contains("is not valid"), "{error}");
    }

    #[test]
    fn a_helper_failure_names_the_helper_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), r#"{"credsStore":"no-such-helper-for-maestro"}"#);
        let error = for_image_in("a.io/x", &path, &mut |name, registry| {
            run_helper(name, registry)
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("docker-credential-no-such-helper-for-maestro"),
            "{error}"
        );
    }
}
