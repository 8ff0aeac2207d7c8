//! The connection to the Docker engine and the calls made on it, each under a deadline of ours.
//!
//! bollard's own timeout covers only a response's headers, and its streams are lazy, so every
//! call here is wrapped in [`tokio::time::timeout`]: a hung engine fails a step, it never hangs
//! `mc`.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use futures::StreamExt;
use maestro_core::spec::PullPolicy;

use crate::error::{DockerError, describe, is_conflict, is_not_found};

/// How long connecting and the first answer (the version handshake) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one ordinary API call (create, start, kill, remove, inspect) may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a pull may go without a progress message before it is given up.
pub(crate) const PULL_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pull may take in all.
pub(crate) const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// bollard's header timeout; ours are shorter, this is only a backstop.
const CLIENT_TIMEOUT_SECS: u64 = 120;

/// The engine address when `DOCKER_HOST` is not set.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The engine address in use: `DOCKER_HOST`, else the default unix socket.
pub(crate) fn engine_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| !host.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
}

/// Whether an engine is configured: `DOCKER_HOST` is set, or the default socket exists.
pub(crate) fn engine_configured() -> bool {
    std::env::var_os("DOCKER_HOST").is_some_and(|host| !host.is_empty())
        || std::path::Path::new(DEFAULT_DOCKER_HOST.trim_start_matches("unix://")).exists()
}

/// The newest API version this executor speaks: bollard's (its models follow that version).
pub(crate) const MAX_API_VERSION: &ClientVersion = bollard::API_DEFAULT_VERSION;

/// The version assumed for an engine whose ping names none, as the docker CLI assumes.
pub(crate) const FALLBACK_API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 24,
};

/// The largest answer head read from `/_ping`.
const MAX_PING_HEAD: usize = 16 * 1024;

/// The API version to speak with an engine whose `/_ping` reported `engine`: the lower of the
/// engine's and ours ([`MAX_API_VERSION`]), as the docker CLI negotiates. An engine older than
/// us gets its own version (20.10 speaks 1.41); a newer one gets ours, which it still accepts
/// (an engine's minimum moves up slowly: Docker 29 accepts 1.44 and later). No version at all
/// means a very old engine: [`FALLBACK_API_VERSION`].
pub(crate) fn negotiate(engine: Option<ClientVersion>) -> ClientVersion {
    let ours = *MAX_API_VERSION;
    match engine {
        Some(engine) if engine < ours => engine,
        Some(_) => ours,
        None => FALLBACK_API_VERSION,
    }
}

/// Ask the engine at `host` whether it answers, and agree on an API version with
/// [`negotiate`] from the `Api-Version` its `GET /_ping` reports, as the docker CLI does.
/// (bollard's negotiation asks `/version`, for which the engine runs `runc --version` and more:
/// measurably slower on every job, and ping gives the same answer.)
pub(crate) async fn ping(host: &str) -> Result<ClientVersion, DockerError> {
    let unreachable = |reason: String| DockerError::Unreachable {
        host: host.to_owned(),
        reason,
    };
    let tls_verify = std::env::var("DOCKER_TLS_VERIFY").ok();
    if let Some(reason) = unsupported(host, tls_verify.as_deref()) {
        return Err(unreachable(reason));
    }
    let version = match tokio::time::timeout(CONNECT_TIMEOUT, ping_head(host)).await {
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(reason)) => return Err(unreachable(reason)),
        Ok(Ok(head)) => api_version(&head).map_err(unreachable)?,
    };
    let agreed = negotiate(version);
    tracing::debug!(%host, engine = ?version, %agreed, "connected to the Docker engine");
    Ok(agreed)
}

/// Why the engine at `host` cannot be used, before anything is sent: Maestro speaks plain HTTP
/// over a unix socket or TCP, so an engine that wants TLS (`DOCKER_TLS_VERIFY` set, as the
/// docker CLI reads it) or one reached over `ssh://` is refused with what to do instead, rather
/// than failing later with a confusing answer.
fn unsupported(host: &str, tls_verify: Option<&str>) -> Option<String> {
    if host.starts_with("ssh://") {
        return Some(
            "ssh:// engine addresses are not supported; forward the engine's socket (ssh -L /tmp/docker.sock:/var/run/docker.sock HOST) and set DOCKER_HOST=unix:///tmp/docker.sock"
                .to_owned(),
        );
    }
    let tls = tls_verify.is_some_and(|value| !value.is_empty());
    if tls && (host.starts_with("tcp://") || host.starts_with("http://")) {
        return Some(
            "DOCKER_TLS_VERIFY is set, but Maestro does not speak TLS to the engine; use the engine's unix socket, or a plain tcp:// address on a trusted network"
                .to_owned(),
        );
    }
    None
}

/// Send `GET /_ping` to `host` and read the answer's head.
async fn ping_head(host: &str) -> Result<Vec<u8>, String> {
    let request =
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: maestro\r\nConnection: close\r\n\r\n";
    let io = |error: std::io::Error| error.to_string();
    if let Some(path) = host.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(path).await.map_err(io)?;
        exchange(stream, request).await.map_err(io)
    } else if let Some(address) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        let address = address.trim_end_matches('/');
        let stream = tokio::net::TcpStream::connect(address).await.map_err(io)?;
        exchange(stream, request).await.map_err(io)
    } else {
        Err(format!(
            "{host:?} is not a supported address; use unix:///path/to/docker.sock or tcp://host:port"
        ))
    }
}

async fn exchange<S>(mut stream: S, request: &[u8]) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < MAX_PING_HEAD {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    Ok(head)
}

/// The `Api-Version` of a `/_ping` answer's head; `None` when the engine sends none (or one
/// that is not `MAJOR.MINOR`).
fn api_version(head: &[u8]) -> Result<Option<ClientVersion>, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/") {
        return Err("the address does not speak HTTP; is it the Docker engine's?".to_owned());
    }
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("the engine answered the ping with {status:?}"));
    }
    Ok(lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("api-version"))
        .and_then(|(_, value)| {
            let (major, minor) = value.trim().split_once('.')?;
            Some(ClientVersion {
                major_version: major.parse().ok()?,
                minor_version: minor.parse().ok()?,
            })
        }))
}

/// A client for the engine at `host` speaking API `version`. No I/O: the first request
/// connects.
///
/// bollard 0.21 builds each request's address by joining the operation's absolute path onto
/// `/vX.Y`, which drops the version: every request would reach the engine unversioned (the
/// engine's newest API, whatever was negotiated). The request modifier puts the agreed version
/// back in front of the path, as the docker CLI sends it.
pub(crate) fn client(host: &str, version: &ClientVersion) -> Result<Docker, DockerError> {
    let prefix = format!("/v{version}");
    built_client(host, version).map(|docker| {
        docker.with_request_modifier(move |mut request| {
            if let Some(uri) = versioned(&request.uri().to_string(), &prefix) {
                match uri.parse() {
                    Ok(uri) => *request.uri_mut() = uri,
                    Err(error) => tracing::debug!(%error, "cannot version a request's address"),
                }
            }
            request
        })
    })
}

/// `uri` (`scheme://authority/path?query`) with `prefix` (`/v1.41`) in front of its path, or
/// `None` when the path already names a version.
fn versioned(uri: &str, prefix: &str) -> Option<String> {
    let after_scheme = uri.find("://").map_or(0, |at| at + 3);
    let path_at = after_scheme + uri[after_scheme..].find('/')?;
    let path = &uri[path_at..];
    let first = path[1..].split(['/', '?']).next().unwrap_or_default();
    let names_version = first.strip_prefix('v').is_some_and(|number| {
        number.split_once('.').is_some_and(|(major, minor)| {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        })
    });
    (!names_version).then(|| format!("{}{prefix}{path}", &uri[..path_at]))
}

fn built_client(host: &str, version: &ClientVersion) -> Result<Docker, DockerError> {
    let built = if host.starts_with("unix://") {
        Docker::connect_with_unix(host, CLIENT_TIMEOUT_SECS, version)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, CLIENT_TIMEOUT_SECS, version)
    } else {
        Err(bollard::errors::Error::UnsupportedURISchemeError {
            uri: host.to_owned(),
        })
    };
    built.map_err(|error| DockerError::Unreachable {
        host: host.to_owned(),
        reason: describe(&error),
    })
}

/// Run one API call under `limit`, naming `action` in any error.
pub(crate) async fn call<T>(
    action: impl FnOnce() -> String,
    limit: Duration,
    request: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerError> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(DockerError::api(action(), error)),
        Err(_) => Err(DockerError::Timeout {
            action: action(),
            after: limit,
        }),
    }
}

/// How a container is created: for a step about to run, getting its image as the step's pull
/// policy says; or ahead of its step, never pulling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Getting {
    /// The step runs now: pull as `policy` says.
    Now(PullPolicy),
    /// The step may never run: create only from an image already present; a missing image is
    /// [`DockerError::NotAhead`], and the step pulls it when (if) it runs.
    Ahead,
}

/// Create a container from `body` named `name`, getting its image first as `getting` says.
///
/// The common case costs one request: the container is created straight away, and only when
/// the engine says the image is missing is it pulled (or the step failed, for `never`).
pub(crate) async fn create_container(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
    getting: Getting,
    what: &str,
) -> Result<String, DockerError> {
    let image = body.image.clone().unwrap_or_default();
    if getting == Getting::Now(PullPolicy::Always) {
        pull(docker, &image).await?;
    }
    let options = || Some(CreateContainerOptionsBuilder::new().name(name).build());
    let action = || format!("create the container of {what}");
    match call(
        action,
        CALL_TIMEOUT,
        docker.create_container(options(), body.clone()),
    )
    .await
    {
        Ok(created) => Ok(created.id),
        Err(DockerError::Api { source, .. }) if is_not_found(&source) => match getting {
            Getting::Ahead => Err(DockerError::NotAhead { image }),
            Getting::Now(PullPolicy::Never) => Err(DockerError::ImageMissing { image }),
            Getting::Now(_) => {
                pull(docker, &image).await?;
                let created = call(
                    action,
                    CALL_TIMEOUT,
                    docker.create_container(options(), body),
                )
                .await?;
                Ok(created.id)
            }
        },
        Err(error) => Err(error),
    }
}

/// Pull `image`, giving up when the registry stalls for [`PULL_STALL_TIMEOUT`] or the whole
/// pull takes longer than [`PULL_TIMEOUT`].
pub(crate) async fn pull(docker: &Docker, image: &str) -> Result<(), DockerError> {
    let (from_image, tag) = split_tag(image);
    let mut options = CreateImageOptionsBuilder::new().from_image(from_image);
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    let credentials =
        crate::credentials::for_image(image).map_err(|source| DockerError::Credentials {
            image: image.to_owned(),
            source,
        })?;
    tracing::info!(
        image,
        with_credentials = credentials.is_some(),
        "pulling image"
    );
    let mut progress = docker.create_image(
        Some(options.build()),
        None,
        credentials.map(|found| found.docker_credentials()),
    );
    let started = tokio::time::Instant::now();
    loop {
        let limit = PULL_STALL_TIMEOUT.min(PULL_TIMEOUT.saturating_sub(started.elapsed()));
        match tokio::time::timeout(limit, progress.next()).await {
            Err(_) => {
                return Err(DockerError::PullStalled {
                    image: image.to_owned(),
                    after: limit,
                });
            }
            Ok(None) => return Ok(()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => {
                let reason = match error {
                    bollard::errors::Error::DockerStreamError { error } => error,
                    other => describe(&other),
                };
                return Err(DockerError::Pull {
                    image: image.to_owned(),
                    reason,
                });
            }
        }
    }
}

/// Split `name[:tag]` for a pull; a digest stays in the name, and no tag means `latest` (the
/// engine would otherwise pull every tag of the repository).
fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last_slash = image.rfind('/').map_or(0, |at| at + 1);
    match image[last_slash..].rfind(':') {
        Some(at) => (
            &image[..last_slash + at],
            Some(&image[last_slash + at + 1..]),
        ),
        None => (image, Some("latest")),
    }
}

/// Send `signal` to a container's main process; a container that is already gone or stopped
/// is not an error.
pub(crate) async fn kill(docker: &Docker, id: &str, signal: &str) -> Result<(), DockerError> {
    let options = KillContainerOptionsBuilder::new().signal(signal).build();
    match call(
        || format!("send {signal} to container {}", short(id)),
        CALL_TIMEOUT,
        docker.kill_container(id, Some(options)),
    )
    .await
    {
        Err(DockerError::Api { source, .. }) if is_not_found(&source) || is_conflict(&source) => {
            Ok(())
        }
        other => other,
    }
}

/// How soon a container that the engine is already removing is first looked for again; the
/// interval doubles up to [`REMOVAL_POLL_MAX`].
const REMOVAL_POLL: Duration = Duration::from_millis(10);
const REMOVAL_POLL_MAX: Duration = Duration::from_millis(250);
/// How long a removal the engine already has under way may take before we give up on it.
const REMOVAL_WAIT: Duration = Duration::from_secs(10);

/// Remove a container and its anonymous volumes, killing it if it still runs, and return once
/// it is gone. A container that is already gone counts as removed; one the engine is already
/// removing (a step container's auto-remove after its exit) is waited for. Takes at most
/// [`CALL_TIMEOUT`] for the first request, then [`REMOVAL_WAIT`] in all for waiting.
pub(crate) async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let mut limit = CALL_TIMEOUT;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut poll = REMOVAL_POLL;
    loop {
        match remove_once(docker, id, limit).await {
            Err(DockerError::Api { source, .. }) if is_not_found(&source) => return Ok(()),
            Err(DockerError::Api { source, .. }) if is_conflict(&source) => {}
            other => return other,
        }
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + REMOVAL_WAIT);
        // The engine is removing it: wait until it is gone, or no longer being removed (its
        // own removal failed), in which case it is removed again.
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(DockerError::Timeout {
                    action: format!("wait for the engine to remove container {}", short(id)),
                    after: REMOVAL_WAIT,
                });
            }
            tokio::time::sleep(poll.min(left)).await;
            poll = (poll * 2).min(REMOVAL_POLL_MAX);
            limit = CALL_TIMEOUT
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .max(REMOVAL_POLL);
            match inspect(docker, id, limit).await {
                Err(DockerError::Api { source, .. }) if is_not_found(&source) => return Ok(()),
                Err(error) => return Err(error),
                Ok(container) => {
                    let status = container.state.and_then(|state| state.status);
                    if status != Some(ContainerStateStatusEnum::REMOVING) {
                        break;
                    }
                }
            }
        }
    }
}

/// Return once the engine has removed container `id`: it answers a wait for the `removed`
/// condition, or no longer knows the container (404). An error when the wait broke off.
pub(crate) async fn wait_removed(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("removed")
        .build();
    match docker.wait_container(id, Some(options)).next().await {
        // bollard reports a non-zero exit code of the container as an error of the wait.
        Some(Ok(_) | Err(bollard::errors::Error::DockerContainerWaitError { .. })) => Ok(()),
        Some(Err(error)) if is_not_found(&error) => Ok(()),
        Some(Err(error)) => Err(DockerError::api(
            format!("wait for container {} to be removed", short(id)),
            error,
        )),
        None => Err(DockerError::Lost(format!(
            "the wait for container {} to be removed ended without an answer",
            short(id)
        ))),
    }
}

/// Inspect container `id`, giving up after `limit`.
pub(crate) async fn inspect(
    docker: &Docker,
    id: &str,
    limit: Duration,
) -> Result<ContainerInspectResponse, DockerError> {
    call(
        || format!("inspect container {}", short(id)),
        limit,
        docker.inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        ),
    )
    .await
}

async fn remove_once(docker: &Docker, id: &str, limit: Duration) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    call(
        || format!("remove container {}", short(id)),
        limit,
        docker.remove_container(id, Some(options)),
    )
    .await
}

/// A container Maestro created, as found by its labels.
#[derive(Debug, Clone)]
pub(crate) struct Managed {
    /// The container's id.
    pub(crate) id: String,
    /// Its name, without the leading `/`.
    pub(crate) name: String,
    /// Its labels.
    pub(crate) labels: HashMap<String, String>,
}

/// Every container, running or not, that carries `label` (`key` or `key=value`).
pub(crate) async fn list_labelled(
    docker: &Docker,
    label: &str,
) -> Result<Vec<Managed>, DockerError> {
    let filters = HashMap::from([("label", vec![label])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let summaries = call(
        || format!("list containers labelled {label}"),
        CALL_TIMEOUT,
        docker.list_containers(Some(options)),
    )
    .await?;
    Ok(summaries
        .into_iter()
        .filter_map(|summary| {
            Some(Managed {
                id: summary.id?,
                name: summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|name| name.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                labels: summary.labels.unwrap_or_default(),
            })
        })
        .collect())
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ping_answer_gives_the_engine_api_version() {
        let head = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nOstype: linux\r\n\r\n";
        assert_eq!(
            api_version(head),
            Ok(Some(ClientVersion {
                major_version: 1,
                minor_version: 41
            }))
        );
        let lower = b"HTTP/1.0 200 OK\r\napi-version:1.24\r\n\r\n";
        assert_eq!(api_version(lower).unwrap().unwrap().minor_version, 24);
        assert_eq!(api_version(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(None));
        assert!(api_version(b"HTTP/1.1 500 Internal Server Error\r\n\r\n").is_err());
        assert!(api_version(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    fn version(minor_version: usize) -> ClientVersion {
        ClientVersion {
            major_version: 1,
            minor_version,
        }
    }

    #[test]
    fn the_api_version_is_the_lower_of_the_engines_and_ours() {
        // Docker 20.10 (Debian's docker.io) speaks 1.41: it gets 1.41.
        assert_eq!(negotiate(Some(version(41))), version(41));
        // Docker 28 and 29 speak 1.50 and 1.52; 29 refuses anything below 1.44.
        assert_eq!(negotiate(Some(version(50))), version(50));
        assert_eq!(negotiate(Some(version(52))), version(52));
        assert!(negotiate(Some(version(52))) >= version(44));
        // An engine newer than bollard gets bollard's version, never one it cannot speak.
        assert_eq!(negotiate(Some(version(99))), *MAX_API_VERSION);
        assert_eq!(
            negotiate(Some(ClientVersion {
                major_version: 2,
                minor_version: 0
            })),
            *MAX_API_VERSION
        );
        assert!(*MAX_API_VERSION >= version(44));
        // No version in the ping: a very old engine, as the docker CLI assumes.
        assert_eq!(negotiate(None), version(24));
    }

    #[test]
    fn tls_and_ssh_engines_are_refused_with_what_to_do() {
        let ssh = unsupported("ssh://ci@build-host", None).unwrap();
        assert!(ssh.contains("ssh -L"), "{ssh}");
        let tls = unsupported("tcp://10.0.0.5:2376", Some("1")).unwrap();
        assert!(tls.contains("DOCKER_TLS_VERIFY"), "{tls}");
        // The docker CLI treats an empty DOCKER_TLS_VERIFY as unset; so does Maestro.
        assert_eq!(unsupported("tcp://10.0.0.5:2375", Some("")), None);
        assert_eq!(unsupported("tcp://10.0.0.5:2375", None), None);
        // A unix socket never uses TLS, whatever the variable says.
        assert_eq!(unsupported("unix:///var/run/docker.sock", Some("1")), None);
    }

    #[test]
    fn requests_carry_the_agreed_version_in_their_path() {
        assert_eq!(
            versioned("unix://2f7661722f72756e/containers/create?name=x", "/v1.41").as_deref(),
            Some("unix://2f7661722f72756e/v1.41/containers/create?name=x")
        );
        assert_eq!(
            versioned("http://127.0.0.1:2375/volumes", "/v1.44").as_deref(),
            Some("http://127.0.0.1:2375/v1.44/volumes")
        );
        assert_eq!(
            versioned("unix://abc/v1.41/containers/json", "/v1.41"),
            None
        );
        assert_eq!(versioned("unix://abc", "/v1.41"), None);
    }

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(split_tag("alpine"), ("alpine", Some("latest")));
        assert_eq!(split_tag("alpine:3.20"), ("alpine", Some("3.20")));
        assert_eq!(
            split_tag("registry:5000/team/app"),
            ("registry:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_tag("registry:5000/team/app:v1"),
            ("registry:5000/team/app", Some("v1"))
        );
        assert_eq!(split_tag("app@sha256:abc"), ("app@sha256:abc", None));
    }
}
