//! The calls made on the swarm manager, each under a deadline of ours, and what they mean.
//!
//! bollard's own timeout covers only a response's headers, so every call is wrapped in
//! [`tokio::time::timeout`]: a hung manager fails a step, it never hangs `mc`.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{EventMessage, LocalNodeState, ServiceSpec, Task, TaskState};
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, ListServicesOptionsBuilder,
    ListTasksOptionsBuilder, RemoveContainerOptionsBuilder, UpdateServiceOptionsBuilder,
};
use futures::Stream;

/// How long one ordinary API call may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The oldest API version with job-mode services (Docker 20.10).
const MIN_MINOR_VERSION: usize = 41;

/// What went wrong talking to the manager, as one lower-case line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SwarmError {
    /// The engine answered an API call with an error.
    #[error("cannot {action}: {reason}")]
    Api {
        /// What was being done.
        action: String,
        /// What the engine (or the transport) said.
        reason: String,
        /// The HTTP status, when the engine answered.
        status: Option<u16>,
    },
    /// The engine did not answer in time.
    #[error(
        "cannot {action}: the swarm manager did not answer within {} s; check that it is healthy (docker info)", .after.as_secs()
    )]
    Timeout {
        /// What was being done.
        action: String,
        /// How long we waited.
        after: Duration,
    },
}

impl SwarmError {
    /// Whether the engine said the object does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Api {
                status: Some(404),
                ..
            }
        )
    }
}

/// bollard's error as one line.
fn describe(error: &bollard::errors::Error) -> (String, Option<u16>) {
    use bollard::errors::Error;
    match error {
        Error::DockerResponseServerError {
            status_code,
            message,
        } => (one_line(message), Some(*status_code)),
        other => {
            let mut parts = vec![other.to_string()];
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !parts.iter().any(|part| part.contains(&text)) {
                    parts.push(text);
                }
                source = cause.source();
            }
            (one_line(&parts.join(": ")), None)
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Run one API call under `limit`, naming `action` in any error.
pub(crate) async fn call<T>(
    action: impl FnOnce() -> String,
    limit: Duration,
    request: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, SwarmError> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            let (reason, status) = describe(&error);
            Err(SwarmError::Api {
                action: action(),
                reason,
                status,
            })
        }
        Err(_) => Err(SwarmError::Timeout {
            action: action(),
            after: limit,
        }),
    }
}

/// Why the engine at `host` cannot run swarm steps, if it cannot: it must speak API 1.41 or
/// later (job-mode services) and be an active manager of a swarm.
pub(crate) async fn check_manager(
    docker: &Docker,
    host: &str,
    version: &bollard::ClientVersion,
) -> Result<(), String> {
    if version.major_version == 1 && version.minor_version < MIN_MINOR_VERSION {
        return Err(format!(
            "the Docker engine at {host} speaks API {version}, but swarm jobs need API 1.41 (Docker 20.10) or later"
        ));
    }
    let info = call(
        || "ask the engine about its swarm".to_owned(),
        CALL_TIMEOUT,
        docker.info(),
    )
    .await
    .map_err(|error| format!("{error} (engine at {host})"))?;
    let swarm = info.swarm.unwrap_or_default();
    let state = swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY);
    let manager = swarm.control_available.unwrap_or(false);
    if state == LocalNodeState::ACTIVE && manager {
        return Ok(());
    }
    let what = if state == LocalNodeState::ACTIVE {
        "is a swarm worker, not a manager".to_owned()
    } else {
        let shown = state.to_string();
        let shown = if shown.is_empty() { "unknown" } else { &shown };
        format!("is not an active swarm member (swarm state: {shown})")
    };
    Err(format!(
        "the Docker engine at {host} {what}; point DOCKER_HOST at a swarm manager, or make this engine one (docker swarm init)"
    ))
}

/// `image` pinned so that every node runs the same bytes: the manager's copy's registry digest
/// (`repo@sha256:…`) or, for an image that was never pushed, its id (which nodes never try to
/// pull); an image the manager lacks is asked of its registry. The error is one line naming
/// the image. `credentials` are the caller's for the image's registry (a private image).
pub(crate) async fn resolve_image(
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
) -> Result<String, String> {
    if image.contains('@') {
        return Ok(image.to_owned());
    }
    let local = call(
        || format!("inspect image {image:?}"),
        CALL_TIMEOUT,
        docker.inspect_image(image),
    )
    .await;
    match local {
        Ok(inspect) => {
            let repository = repository(image);
            let pinned = inspect
                .repo_digests
                .unwrap_or_default()
                .into_iter()
                .find(|digest| {
                    digest.split_once('@').is_some_and(|(repo, _)| {
                        repo == repository || repo.ends_with(&format!("/{repository}"))
                    })
                });
            match (pinned, inspect.id) {
                (Some(pinned), _) => Ok(pinned),
                (None, Some(id)) => Ok(id),
                (None, None) => Err(format!(
                    "image {image:?}: the swarm manager reported no id for it"
                )),
            }
        }
        Err(error) if error.is_not_found() => {
            let remote = call(
                || format!("ask the registry of image {image:?} for its digest"),
                CALL_TIMEOUT,
                docker.inspect_registry_image(image, credentials),
            )
            .await;
            match remote {
                Ok(inspect) => match inspect.descriptor.digest {
                    Some(digest) => Ok(format!("{image}@{digest}")),
                    None => Err(format!(
                        "image {image:?}: its registry reported no digest for it"
                    )),
                },
                Err(error) => Err(format!(
                    "image {image:?} is not on the swarm manager, and its registry cannot give its digest ({}); push it to a registry the nodes can reach, or build it on the manager",
                    match error {
                        SwarmError::Api { reason, .. } => reason,
                        timeout => timeout.to_string(),
                    }
                )),
            }
        }
        Err(error) => Err(error.to_string()),
    }
}

/// The repository part of an image reference: `maestro-test/busybox:latest` →
/// `maestro-test/busybox` (a registry's port is not a tag).
fn repository(image: &str) -> &str {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// Create the service; its id. `credentials` go with it to the manager, which hands them to
/// the node that runs the task, so that node can pull a private image (what `docker service
/// create --with-registry-auth` does).
pub(crate) async fn create_service(
    docker: &Docker,
    spec: ServiceSpec,
    credentials: Option<DockerCredentials>,
) -> Result<String, SwarmError> {
    let name = spec.name.clone().unwrap_or_default();
    let created = call(
        || format!("create service {name}"),
        CALL_TIMEOUT,
        docker.create_service(spec, credentials),
    )
    .await?;
    created.id.ok_or_else(|| SwarmError::Api {
        action: format!("create service {name}"),
        reason: "the manager returned no service id".to_owned(),
        status: None,
    })
}

/// A stream of the manager's own engine's events.
pub(crate) type EventStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<EventMessage, bollard::errors::Error>> + Send>>;

/// How far back [`container_events`] replays: enough to cover the moments between creating a
/// service and reading its events, and a manager whose clock is somewhat off ours.
const EVENTS_REPLAY: Duration = Duration::from_secs(60);

/// The `start` and `die` events of the task containers of service `name` that run on the
/// manager's own engine, from a minute ago on: the engine replays what it still holds from
/// then and follows with what comes, in one subscription, so an event between the service's
/// creation and this call is not missed (service names are unique to a job's step, so
/// nothing older matches). A task on another node sends nothing here; its state is polled.
pub(crate) fn container_events(docker: &Docker, name: &str) -> EventStream {
    let since = std::time::SystemTime::now()
        .checked_sub(EVENTS_REPLAY)
        .and_then(|then| then.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_secs());
    let label = format!("com.docker.swarm.service.name={name}");
    let filters = HashMap::from([
        ("type", vec!["container"]),
        ("event", vec!["start", "die"]),
        ("label", vec![label.as_str()]),
    ]);
    let options = EventsOptionsBuilder::new()
        .since(&since.to_string())
        .filters(&filters)
        .build();
    Box::pin(docker.events(Some(options)))
}

/// The tasks of service `id`, newest first.
pub(crate) async fn tasks(docker: &Docker, id: &str) -> Result<Vec<Task>, SwarmError> {
    let filters = HashMap::from([("service", vec![id])]);
    let options = ListTasksOptionsBuilder::new().filters(&filters).build();
    let mut tasks = call(
        || format!("list the tasks of service {}", short(id)),
        CALL_TIMEOUT,
        docker.list_tasks(Some(options)),
    )
    .await?;
    tasks.sort_by_key(|task| std::cmp::Reverse(task.version.as_ref().and_then(|v| v.index)));
    Ok(tasks)
}

/// Remove service `id`; one that is already gone is fine.
pub(crate) async fn remove_service(docker: &Docker, id: &str) -> Result<(), SwarmError> {
    match call(
        || format!("remove service {}", short(id)),
        CALL_TIMEOUT,
        docker.delete_service(id),
    )
    .await
    {
        Err(error) if !error.is_not_found() => Err(error),
        _ => Ok(()),
    }
}

/// A placement constraint no node satisfies (node ids are 25 random characters).
pub(crate) const NOWHERE: &str = "node.id==maestro-stopped";

/// Stop the task of service `id`, however far it got, on whichever node it runs: the service
/// is updated to a placement no node satisfies, so the engine shuts the task down (SIGTERM,
/// then SIGKILL after the service's grace period) and its replacement stays pending. Removing
/// a job service does not stop its running task on Docker 20.10, hence this first step.
pub(crate) async fn stop_tasks(docker: &Docker, id: &str) -> Result<(), SwarmError> {
    let service = call(
        || format!("inspect service {}", short(id)),
        CALL_TIMEOUT,
        docker.inspect_service(id, None),
    )
    .await?;
    let version = service
        .version
        .and_then(|version| version.index)
        .and_then(|index| i32::try_from(index).ok())
        .ok_or_else(|| SwarmError::Api {
            action: format!("stop the task of service {}", short(id)),
            reason: "the manager reported no usable service version".to_owned(),
            status: None,
        })?;
    let mut spec = service.spec.unwrap_or_default();
    let task = spec.task_template.get_or_insert_with(Default::default);
    let placement = task.placement.get_or_insert_with(Default::default);
    let constraints = placement.constraints.get_or_insert_with(Vec::new);
    if constraints.iter().any(|constraint| constraint == NOWHERE) {
        return Ok(());
    }
    constraints.push(NOWHERE.to_owned());
    let options = UpdateServiceOptionsBuilder::new().version(version).build();
    call(
        || format!("stop the task of service {}", short(id)),
        CALL_TIMEOUT,
        docker.update_service(id, spec, options, None),
    )
    .await
    .map(drop)
}

/// Whether a task in `state` may have a container running on a node.
pub(crate) fn is_active(state: Option<TaskState>) -> bool {
    matches!(
        state,
        Some(
            TaskState::ASSIGNED
                | TaskState::ACCEPTED
                | TaskState::PREPARING
                | TaskState::READY
                | TaskState::STARTING
                | TaskState::RUNNING
        )
    )
}

/// Whether any task of service `id` may still have a running container.
pub(crate) async fn has_active_tasks(docker: &Docker, id: &str) -> Result<bool, SwarmError> {
    Ok(tasks(docker, id)
        .await?
        .iter()
        .any(|task| is_active(task.status.as_ref().and_then(|status| status.state))))
}

/// Whether service `id` still exists.
pub(crate) async fn service_exists(docker: &Docker, id: &str) -> Result<bool, SwarmError> {
    match call(
        || format!("inspect service {}", short(id)),
        CALL_TIMEOUT,
        docker.inspect_service(id, None),
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(error) if error.is_not_found() => Ok(false),
        Err(error) => Err(error),
    }
}

/// A labelled object: its id, name and labels.
#[derive(Debug, Clone)]
pub(crate) struct Labelled {
    /// The object's id.
    pub(crate) id: String,
    /// Its name.
    pub(crate) name: String,
    /// Its labels.
    pub(crate) labels: HashMap<String, String>,
}

/// Every container, running or not, carrying all of `labels` (`key` or `key=value`).
pub(crate) async fn containers(
    docker: &Docker,
    labels: &[&str],
) -> Result<Vec<Labelled>, SwarmError> {
    let filters = HashMap::from([("label", labels.to_vec())]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let summaries = call(
        || format!("list containers labelled {}", labels.join(", ")),
        CALL_TIMEOUT,
        docker.list_containers(Some(options)),
    )
    .await?;
    Ok(summaries
        .into_iter()
        .filter_map(|summary| {
            Some(Labelled {
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

/// Every service carrying all of `labels`.
pub(crate) async fn services(
    docker: &Docker,
    labels: &[&str],
) -> Result<Vec<Labelled>, SwarmError> {
    let filters = HashMap::from([("label", labels.to_vec())]);
    let options = ListServicesOptionsBuilder::new().filters(&filters).build();
    let services = call(
        || format!("list services labelled {}", labels.join(", ")),
        CALL_TIMEOUT,
        docker.list_services(Some(options)),
    )
    .await?;
    Ok(services
        .into_iter()
        .filter_map(|service| {
            let spec = service.spec.unwrap_or_default();
            Some(Labelled {
                id: service.id?,
                name: spec.name.unwrap_or_default(),
                labels: spec.labels.unwrap_or_default(),
            })
        })
        .collect())
}

/// Remove container `id`, forced; one that is already gone (or being removed) is fine.
pub(crate) async fn remove_container(docker: &Docker, id: &str) -> Result<(), SwarmError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match call(
        || format!("remove container {}", short(id)),
        CALL_TIMEOUT,
        docker.remove_container(id, Some(options)),
    )
    .await
    {
        Err(SwarmError::Api {
            status: Some(404 | 409),
            ..
        }) => Ok(()),
        other => other,
    }
}

/// Whether a task in `state` has not been placed on a node yet.
pub(crate) fn is_unscheduled(state: Option<TaskState>) -> bool {
    matches!(
        state,
        None | Some(TaskState::NEW | TaskState::ALLOCATED | TaskState::PENDING)
    )
}

/// The first 12 characters of an id.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_of_an_image_reference() {
        assert_eq!(
            repository("maestro-test/busybox:latest"),
            "maestro-test/busybox"
        );
        assert_eq!(repository("127.0.0.1:5000/app"), "127.0.0.1:5000/app");
        assert_eq!(repository("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app");
        assert_eq!(repository("alpine"), "alpine");
    }
}
