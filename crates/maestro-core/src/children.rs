//! The processes this program started on purpose: a step's process, a sandbox shim or launcher,
//! a plugin. Executors register them here from their spawn until they are done with them.
//!
//! Why: a host that runs bare steps is their child subreaper, so a step's process that loses
//! its parent becomes this program's child, and the local executor takes a child that was not
//! there before a bare step, and is not registered here, for an orphan of that step: it kills
//! it. Under `mc serve` other jobs' executors start children meanwhile (another step, a plugin
//! for a plugin job); registered, they are never taken for one. (`maestro-core` knows no
//! executor: this is a list of process ids and one lock, shared by the executors that spawn.)

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Held shared while a process is spawned, exclusively while a search for orphans runs: between
/// its fork and its exec a new child still has this program's environment, not yet its own,
/// and it cannot be registered before `spawn` returns; with the lock, no child is in that state
/// during a search.
static SPAWNING: RwLock<()> = RwLock::new(());

/// The pids registered, from their spawn until their [`Registered`] is dropped.
static REGISTERED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Hold while spawning a process you will register; never across an `await`.
pub fn spawning() -> RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(PoisonError::into_inner)
}

/// For a search for orphans: no process is being spawned while the returned guard is held, and
/// the set is every process registered at that moment.
pub fn searching() -> (RwLockWriteGuard<'static, ()>, BTreeSet<i32>) {
    let guard = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
    let registered = REGISTERED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    (guard, registered)
}

/// A process this program started, registered as such until dropped.
#[derive(Debug)]
pub struct Registered(Option<i32>);

impl Registered {
    /// Registers the process just spawned (`pid` as `Child::id` gives it); call it with
    /// [`spawning`] still held.
    pub fn register(pid: Option<u32>) -> Self {
        let pid = pid.and_then(|pid| i32::try_from(pid).ok());
        if let Some(pid) = pid {
            REGISTERED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(pid);
        }
        Self(pid)
    }

    /// Whether `pid` is registered now.
    pub fn contains(pid: i32) -> bool {
        REGISTERED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&pid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            REGISTERED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_registered_until_its_registration_is_dropped() {
        let registered = Registered::register(Some(999_999_001));
        assert!(Registered::contains(999_999_001));
        assert!(searching().1.contains(&999_999_001));
        drop(registered);
        assert!(!Registered::contains(999_999_001));
        // A pid that does not fit is not registered, and nothing breaks.
        drop(Registered::register(Some(u32::MAX)));
        drop(Registered::register(None));
    }
}
