//! Which executors this build of `mc` offers: the built-ins, then plugins.

use std::sync::Arc;

use maestro_core::executor::ExecutorRegistry;
use maestro_core::local::LocalExecutor;

/// The registry for a state root.
pub(crate) fn build(_state_root: &std::path::Path) -> ExecutorRegistry {
    let mut registry = ExecutorRegistry::new();
    registry.register("local", Arc::new(LocalExecutor::new()));
    registry
}
