//! The store's own thread: a single-threaded tokio runtime that owns the connection pool.
//!
//! [`maestro_core::state::StateStore`] is synchronous and is called from inside tokio tasks
//! (`mc serve`, the runner). Blocking on a future there is not allowed (a nested runtime
//! panics), so each call sends its future to this thread over a channel and waits for the
//! answer on a plain `std` channel, which may block any thread. The thread ends when the last
//! handle is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A handle on the store's thread.
#[derive(Clone)]
pub(crate) struct Db {
    tasks: mpsc::UnboundedSender<Task>,
}

/// The thread is gone (it panicked, or could not start its runtime).
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL store's thread is gone")]
pub(crate) struct ThreadGone;

impl Db {
    /// Start the thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (tasks, mut receiver) = mpsc::unbounded_channel::<Task>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("maestro-postgres".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(task) = receiver.recv().await {
                        tokio::spawn(task);
                    }
                });
            })?;
        Ok(Self { tasks })
    }

    /// Run `future` on the store's thread and wait for its output.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, ThreadGone> {
        let (sender, receiver) = std_mpsc::sync_channel(1);
        self.tasks
            .send(Box::pin(async move {
                let _ = sender.send(future.await);
            }))
            .map_err(|_| ThreadGone)?;
        receiver.recv().map_err(|_| ThreadGone)
    }

    /// Start `future` on the store's thread without waiting for it.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        let _ = self.tasks.send(Box::pin(future));
    }
}
