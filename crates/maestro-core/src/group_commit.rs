//! Group commit for an append-only file: appends are numbered as their writes complete, and
//! one sync makes every append written before it began durable, so callers that arrive while
//! a sync runs share the next one instead of each paying for their own. The audit log and the
//! server's queue log use it; each says what its sync is.

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The numbers of one file's appends: written, made durable, and whether a sync runs now.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<Counts>,
    synced: Condvar,
}

#[derive(Debug, Default)]
struct Counts {
    /// The number of the last append written.
    written: u64,
    /// The number of the last append made durable.
    synced: u64,
    /// A caller is syncing now.
    syncing: bool,
}

impl GroupCommit {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number an append whose write has completed.
    pub fn written(&self) -> u64 {
        let mut counts = self.counts();
        counts.written += 1;
        counts.written
    }

    /// Whether append `number` is durable.
    pub fn is_durable(&self, number: u64) -> bool {
        self.counts().synced >= number
    }

    /// Make append `number` durable: return at once if a sync has covered it, wait while
    /// another caller syncs, else run `sync` (which must make durable every append written so
    /// far) for every append written until now.
    pub fn sync_through(
        &self,
        number: u64,
        sync: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let mut counts = self.counts();
        loop {
            if counts.synced >= number {
                return Ok(());
            }
            if !counts.syncing {
                break;
            }
            counts = self
                .synced
                .wait(counts)
                .unwrap_or_else(PoisonError::into_inner);
        }
        counts.syncing = true;
        let target = counts.written;
        drop(counts);
        let result = sync();
        let mut counts = self.counts();
        counts.syncing = false;
        if result.is_ok() {
            counts.synced = counts.synced.max(target);
        }
        self.synced.notify_all();
        result
    }

    /// Every append written so far is durable by other means (the file was replaced by a
    /// durable copy that holds them).
    pub fn all_durable(&self) {
        let mut counts = self.counts();
        counts.synced = counts.synced.max(counts.written);
        self.synced.notify_all();
    }

    /// The numbers of the last append written and of the last made durable, and whether a
    /// sync runs now.
    pub fn numbers(&self) -> (u64, u64, bool) {
        let counts = self.counts();
        (counts.written, counts.synced, counts.syncing)
    }
}
