//! Which executors this build of `mc` offers: the built-ins, then plugins.

use std::path::Path;
use std::sync::Arc;

use maestro_core::executor::ExecutorRegistry;
use maestro_docker::DockerExecutor;
use maestro_local::{LocalConfig, LocalExecutor};
use maestro_plugin_host::PluginProvider;
use maestro_swarm::SwarmExecutor;

use crate::commands::plugin_dirs;

/// How long the program that uses a registry runs, which decides how it starts sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// One command: the sandbox launcher `main` forked for a local `mc submit`, if it did,
    /// forks each sandboxed step's shim; otherwise each step executes its shim.
    Command,
    /// A server running many steps: a sandbox launcher, started with the first sandboxed step,
    /// forks each step's shim (cheaper per step than executing it).
    Server,
}

/// The registry for a state root: `local`, `docker` and `swarm`, then plugins found as `mc-executor-<name>` in
/// `MAESTRO_PLUGIN_PATH`, `<state root>/plugins`, then `PATH`. Built-in names always win.
pub(crate) fn build(state_root: &Path, lifetime: Lifetime) -> ExecutorRegistry {
    let mut registry = ExecutorRegistry::new();
    let forked = match lifetime {
        Lifetime::Command => crate::shim::take_forked_launcher(),
        Lifetime::Server => None,
    };
    let local = LocalConfig {
        sandbox_shim: Some((
            crate::shim::program(),
            vec![crate::shim::ARGUMENT.to_owned()],
        )),
        sandbox_launcher: (lifetime == Lifetime::Server || forked.is_some()).then(|| {
            (
                crate::shim::program(),
                vec![crate::shim::LAUNCHER_ARGUMENT.to_owned()],
            )
        }),
        protected_paths: vec![state_root.to_path_buf()],
    };
    let mut local = LocalExecutor::new(local);
    if let Some(forked) = forked {
        local = local.with_forked_launcher(forked);
    }
    registry.register("local", Arc::new(local));
    registry.register(
        "docker",
        Arc::new(DockerExecutor::with_journal(crate::commands::open_store(
            state_root,
        ))),
    );
    registry.register(maestro_swarm::RUNTIME, Arc::new(SwarmExecutor::new()));
    let search = format!(
        "$MAESTRO_PLUGIN_PATH, {} and $PATH (`mc plugins list` shows what is found)",
        state_root.join("plugins").display()
    );
    registry.add_provider(Box::new(
        PluginProvider::new(plugin_dirs(state_root)).describing_search_as(search),
    ));
    registry
}
