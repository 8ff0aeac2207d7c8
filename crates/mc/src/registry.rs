//! Which executors this build of `mc` offers: the built-ins, then plugins.

use std::path::Path;
use std::sync::Arc;

use maestro_core::executor::ExecutorRegistry;
use maestro_core::local::LocalExecutor;
use maestro_docker::DockerExecutor;
use maestro_plugin_host::PluginProvider;

use crate::commands::plugin_dirs;

/// The registry for a state root: `local` and `docker`, then plugins found as `mc-executor-<name>` in
/// `MAESTRO_PLUGIN_PATH`, `<state root>/plugins`, then `PATH`. Built-in names always win.
pub(crate) fn build(state_root: &Path) -> ExecutorRegistry {
    let mut registry = ExecutorRegistry::new();
    registry.register("local", Arc::new(LocalExecutor::new()));
    registry.register("docker", Arc::new(DockerExecutor::new()));
    registry.add_provider(Box::new(PluginProvider::new(plugin_dirs(state_root))));
    registry
}
