//! `mc plugins`: list and check executor plugins.

use std::path::{Path, PathBuf};

use maestro_plugin_host::{CheckResult, check_plugin_with, find_plugin, list_plugins, search_dirs};
use serde::Serialize;

use crate::cli::{GlobalArgs, OutputFormat, PluginsCommand};
use crate::exit::{Code, Failure};
use crate::registry::Lifetime;
use crate::{printer, registry, settings};

pub(crate) fn run(global: &GlobalArgs, command: PluginsCommand) -> Result<Code, Failure> {
    let state_root = settings::state_root(global)?;
    let dirs = plugin_dirs(&state_root);
    match command {
        PluginsCommand::List { output } => list(&state_root, &dirs, output),
        PluginsCommand::Check {
            plugin,
            with,
            output,
        } => check(&dirs, &plugin, with.as_deref(), output),
    }
}

/// The plugin search directories, in order (the same list `mc submit` uses).
pub(crate) fn plugin_dirs(state_root: &Path) -> Vec<PathBuf> {
    search_dirs(
        std::env::var_os("MAESTRO_PLUGIN_PATH").as_deref(),
        state_root,
        std::env::var_os("PATH").as_deref(),
    )
}

fn list(state_root: &Path, dirs: &[PathBuf], output: OutputFormat) -> Result<Code, Failure> {
    let registry = registry::build(state_root, Lifetime::Command);
    let builtins = registry.builtin_names();
    let candidates = super::runtime()?.block_on(list_plugins(dirs, &builtins));
    match output {
        OutputFormat::Json => printer::json(&candidates),
        OutputFormat::Text => {
            let mut text = String::new();
            for candidate in &candidates {
                let versions: Vec<String> = candidate
                    .protocol_versions
                    .iter()
                    .map(u32::to_string)
                    .collect();
                text.push_str(&format!(
                    "{}{}\t{}\tprotocol {}\tversion {}\t{}\n",
                    if candidate.active { "" } else { "(inactive) " },
                    candidate.name,
                    candidate.path.display(),
                    if versions.is_empty() {
                        "?".to_owned()
                    } else {
                        versions.join(",")
                    },
                    candidate.plugin_version.as_deref().unwrap_or("?"),
                    candidate.capabilities.join(","),
                ));
                for warning in &candidate.warnings {
                    text.push_str(&format!("  warning: {warning}\n"));
                }
            }
            if candidates.is_empty() {
                text.push_str("no plugins found\n");
            }
            printer::out(&text);
        }
    }
    Ok(Code::Success)
}

fn check(
    dirs: &[PathBuf],
    plugin: &str,
    with: Option<&str>,
    output: OutputFormat,
) -> Result<Code, Failure> {
    let with = with
        .map(
            |text| match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) if value.is_object() => Ok(value),
                Ok(_) => Err(Failure::usage("--with must be a JSON object")),
                Err(error) => Err(Failure::usage(format!("--with is not valid JSON: {error}"))),
            },
        )
        .transpose()?;
    let path = if plugin.contains('/') {
        PathBuf::from(plugin)
    } else {
        find_plugin(plugin, dirs).ok_or_else(|| {
            let found = maestro_plugin_host::plugin_names(dirs);
            let mut message = format!("no plugin named {plugin:?} was found");
            if let Some(close) =
                maestro_core::suggest::did_you_mean(plugin, found.iter().map(String::as_str))
            {
                message.push_str(&format!("; did you mean {close:?}?"));
            }
            Failure::usage(message).hint("pass a path to the executable, or see `mc plugins list`")
        })?
    };
    if !path.is_file() {
        return Err(Failure::usage(format!("{} is not a file", path.display())));
    }
    let results = super::runtime()?.block_on(check_plugin_with(&path, with));
    let failed = results.iter().filter(|r| !r.passed).count();
    match output {
        OutputFormat::Json => printer::json(&CheckReport {
            plugin: &path,
            passed: failed == 0,
            checks_passed: results.len() - failed,
            checks_failed: failed,
            document: DOCUMENT,
            checks: &results,
        }),
        OutputFormat::Text => printer::out(&check_text(&results)),
    }
    Ok(if failed == 0 {
        Code::Success
    } else {
        Code::JobFailed
    })
}

/// The document every check's section refers to.
const DOCUMENT: &str = "docs/plugin-protocol.md";

/// What `mc plugins check --output json` prints: one object.
#[derive(Serialize)]
struct CheckReport<'a> {
    plugin: &'a Path,
    passed: bool,
    checks_passed: usize,
    checks_failed: usize,
    document: &'static str,
    checks: &'a [CheckResult],
}

/// One line per check; a failed one says what was expected, what arrived and where the rule is.
fn check_text(results: &[CheckResult]) -> String {
    let mut text = String::new();
    for result in results {
        let verdict = if result.passed { "PASS" } else { "FAIL" };
        text.push_str(&format!("{verdict} {}: {}\n", result.name, result.detail));
        if !result.passed {
            text.push_str(&format!(
                "  expected: {}\n  arrived:  {}\n  see:      {DOCUMENT}, {}\n",
                result.expected, result.detail, result.section
            ));
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    text.push_str(&format!(
        "{} passed, {failed} failed\n",
        results.len() - failed
    ));
    text
}
