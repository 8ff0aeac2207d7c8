//! `mc gc`: settle jobs a killed `mc` left behind.

use std::sync::Arc;

use maestro_core::runner::collect_garbage;

use crate::cli::{GcArgs, GlobalArgs, OutputFormat};
use crate::exit::{Code, Failure};
use crate::registry::Lifetime;
use crate::{printer, registry, settings};

pub(crate) fn run(global: &GlobalArgs, args: GcArgs) -> Result<Code, Failure> {
    let state_root = settings::state_root(global)?;
    let registry = registry::build(&state_root, Lifetime::Command);
    let store = super::open_store(&state_root);
    let executors = registry.builtin_executors();
    let report = super::runtime()?.block_on(collect_garbage(
        Arc::clone(&store),
        &store.audit(),
        &executors,
    ))?;
    match args.output {
        OutputFormat::Json => printer::json(&report),
        OutputFormat::Text => {
            let mut text = String::new();
            for job_id in &report.abandoned_jobs {
                text.push_str(&format!("job {job_id}: abandoned, recorded FAILED\n"));
            }
            for recovered in &report.recovered {
                text.push_str(&format!("{recovered}\n"));
            }
            for settled in &report.settled {
                text.push_str(&format!("{settled}\n"));
            }
            for removed in &report.removed {
                text.push_str(&format!("removed {removed}\n"));
            }
            if report.is_empty() && report.unreconciled.is_empty() && report.errors.is_empty() {
                text.push_str("nothing to collect\n");
            }
            printer::out(&text);
        }
    }
    for job in &report.unreconciled {
        eprintln!("warning: {job}");
    }
    for error in &report.errors {
        eprintln!("warning: {error}");
    }
    // An error to read or record is the system's (4); a history gc leaves alone because it
    // is not a crash's is what `mc audit verify` calls tampering (1).
    Ok(if !report.errors.is_empty() {
        Code::System
    } else if !report.unreconciled.is_empty() {
        Code::JobFailed
    } else {
        Code::Success
    })
}
