//! A job's container events, read from the engine's event stream as they happen.
//!
//! Why not only the engine's `wait`: the engine logs a container's `die` event, with its exit
//! code, as soon as it has processed the exit, but answers a `wait` only once it has also torn
//! down the container's network and mounts. On Docker 20.10 that is ≈45 ms later, most of the
//! tail of a short step. The stream also carries the `oom` event, which tells an out-of-memory
//! kill apart from any other SIGKILL, and the `destroy` event, which says that the engine has
//! removed a container it was told to remove on exit.
//!
//! One stream per job, filtered by the job's label and subscribed to before the job's first
//! container is created. It asks for events from a few minutes before the subscription (only
//! this job's can match), so an event the engine logged before the subscription took effect is
//! replayed, not lost; for the same reason a stream that broke is replaced by a new one before
//! the next step starts. [`crate::step`] still waits on the engine's `wait` as well, which
//! answers if the stream stalls; but a container the engine removed on exit can no longer be
//! waited for or inspected, so for those the stream is what tells the exit.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use maestro_core::JobId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::LABEL_JOB_ID;

/// How far before the subscription events are replayed. Only events of this job's label can
/// match, and the job's first container is created after the subscription, so a generous
/// margin costs nothing and covers a clock that differs from the engine's.
const REPLAY_MARGIN: Duration = Duration::from_secs(300);

/// What the stream has told about one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContainerSeen {
    /// The exit code of its `die` event.
    pub(crate) exit_code: Option<i64>,
    /// An `oom` event was logged for it.
    pub(crate) oom: bool,
    /// It was removed (`destroy`).
    pub(crate) destroyed: bool,
}

#[derive(Debug, Default)]
struct Seen {
    containers: HashMap<String, ContainerSeen>,
    /// The stream ended or failed: nothing more will be seen.
    ended: bool,
}

/// The event stream of one job's containers, read by a task of its own until dropped.
#[derive(Debug)]
pub(crate) struct JobEvents {
    seen: watch::Receiver<Seen>,
    task: JoinHandle<()>,
}

impl JobEvents {
    /// Subscribe to the `die`, `oom` and `destroy` events of containers labelled with `job_id`.
    pub(crate) fn subscribe(docker: &Docker, job_id: JobId) -> Self {
        let since = SystemTime::now()
            .checked_sub(REPLAY_MARGIN)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
            .to_string();
        let label = format!("{LABEL_JOB_ID}={job_id}");
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("label", vec![label.as_str()]),
            ("event", vec!["die", "oom", "destroy"]),
        ]);
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        // The stream is lazy: it is polled from here on, by its own task, so that no event
        // waits on a step to ask for it.
        let mut stream = docker.events(Some(options));
        let (sender, seen) = watch::channel(Seen::default());
        let task = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(event)) => {
                        if let Some((id, update)) = parse(&event) {
                            sender.send_modify(|seen| {
                                let entry = seen.containers.entry(id).or_default();
                                entry.exit_code = entry.exit_code.or(update.exit_code);
                                entry.oom |= update.oom;
                                entry.destroyed |= update.destroyed;
                            });
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%job_id, %error, "the engine's event stream failed; exits are read from the wait until a step subscribes anew");
                        break;
                    }
                    None => break,
                }
            }
            sender.send_modify(|seen| seen.ended = true);
        });
        Self { seen, task }
    }

    /// The exit code of container `id` once its `die` event arrives; `None` if the stream
    /// ends first (the caller then relies on the engine's `wait`).
    pub(crate) async fn exit_of(&self, id: &str) -> Option<i64> {
        let mut seen = self.seen.clone();
        let seen = seen
            .wait_for(|seen| seen.ended || exit_code(seen, id).is_some())
            .await
            .ok()?;
        exit_code(&seen, id)
    }

    /// Return once container `id` has been removed (true), or the stream has ended (false).
    pub(crate) async fn removed(&self, id: &str) -> bool {
        let destroyed = |seen: &Seen| seen.containers.get(id).is_some_and(|c| c.destroyed);
        let mut seen = self.seen.clone();
        seen.wait_for(|seen| seen.ended || destroyed(seen))
            .await
            .is_ok_and(|seen| destroyed(&seen))
    }

    /// Whether the stream has ended or failed: nothing more will arrive on it.
    pub(crate) fn ended(&self) -> bool {
        self.seen.borrow().ended
    }

    /// Whether an `oom` event was seen for container `id`.
    pub(crate) fn oom_seen(&self, id: &str) -> bool {
        self.seen
            .borrow()
            .containers
            .get(id)
            .is_some_and(|container| container.oom)
    }
}

impl Drop for JobEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn exit_code(seen: &Seen, id: &str) -> Option<i64> {
    seen.containers
        .get(id)
        .and_then(|container| container.exit_code)
}

/// The container and what a `die` or `oom` event says of it; `None` for anything else.
fn parse(event: &EventMessage) -> Option<(String, ContainerSeen)> {
    let actor = event.actor.as_ref()?;
    let id = actor.id.clone()?;
    let seen = match event.action.as_deref()? {
        "die" => ContainerSeen {
            exit_code: Some(actor.attributes.as_ref()?.get("exitCode")?.parse().ok()?),
            ..ContainerSeen::default()
        },
        "oom" => ContainerSeen {
            oom: true,
            ..ContainerSeen::default()
        },
        "destroy" => ContainerSeen {
            destroyed: true,
            ..ContainerSeen::default()
        },
        _ => return None,
    };
    Some((id, seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("abc".to_owned()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
            }),
            ..EventMessage::default()
        }
    }

    #[test]
    fn die_events_give_the_exit_code_and_oom_events_the_flag() {
        assert_eq!(
            parse(&event("die", &[("exitCode", "137"), ("name", "x")])),
            Some((
                "abc".to_owned(),
                ContainerSeen {
                    exit_code: Some(137),
                    ..ContainerSeen::default()
                }
            ))
        );
        assert_eq!(
            parse(&event("oom", &[])).map(|(_, seen)| seen.oom),
            Some(true)
        );
        // A die event without a readable exit code says nothing: the wait answers instead.
        assert_eq!(parse(&event("die", &[])), None);
        assert_eq!(parse(&event("die", &[("exitCode", "x")])), None);
        assert_eq!(
            parse(&event("destroy", &[])).map(|(_, seen)| seen.destroyed),
            Some(true)
        );
        assert_eq!(parse(&event("start", &[])), None);
    }
}
