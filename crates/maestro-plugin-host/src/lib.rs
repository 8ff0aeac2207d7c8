//! Maestro's side of executor plugins: discovery, the plugin executor, the conformance kit.
//!
//! # Brief overview
//!
//! * [`PluginExecutor`] implements core's `Executor` by driving one plugin process per job over
//!   the protocol of `maestro-plugin-protocol`; core never knows the difference from a built-in.
//! * [`PluginProvider`] is the registry's `ExecutorProvider`: runtime `ssh` is the first
//!   executable `mc-executor-ssh` in [`search_dirs`] (built-in names always win in the registry).
//! * [`list_plugins`] gathers what `mc plugins list` shows, warnings included.
//! * [`check_plugin`] is the conformance kit behind `mc plugins check`.
//!
//! The host owns the clock: a step's timeout or a cancel becomes a `stop` request. A plugin that
//! does not end the step within the grace period (plus [`PluginOptions::stop_slack`]) is killed
//! with its process group and its tasks' groups, and the step is recorded as stopped (timed out or
//! cancelled, signal 9) with a note in its log naming the plugin; one that stops answering pings
//! or dies is killed the same way and the step fails with a message naming the plugin. A task's
//! group is only ever signalled when `/proc` showed that the plugin created it: a `pgid` in a
//! `started` reply is plugin-supplied data, checked before it is believed. Plugin stderr lines
//! become `tracing` warnings prefixed `[plugin <name>]`.
#![deny(missing_docs)]

mod check;
mod connection;
mod discovery;
mod executor;
mod groups;

pub use check::{CHECKS, CheckResult, CheckRule, check_plugin, check_plugin_with};
pub use discovery::{
    PluginCandidate, find_plugin, is_valid_name, list_plugins, plugin_names, search_dirs,
};
pub use executor::{PluginExecutor, PluginOptions, PluginProvider};
