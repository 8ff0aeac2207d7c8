//! `mc prune`: remove old jobs' records and logs; the audit log keeps them.

use maestro_core::progress::{JobFilter, Timestamp};
use maestro_core::prune::{PruneError, prune};

use crate::cli::{GlobalArgs, OutputFormat, PruneArgs};
use crate::exit::{Code, Failure};
use crate::printer::{self, field};

pub(crate) fn run(global: &GlobalArgs, args: PruneArgs) -> Result<Code, Failure> {
    let store = super::store(global)?;
    let ended_before = JobFilter::parse_since(&args.older_than, Timestamp::now())
        .map_err(|error| Failure::usage(format!("--older-than: {error}")))?;
    let filter = JobFilter {
        states: args
            .state
            .iter()
            .map(|text| JobFilter::parse_state(text))
            .collect::<Result<_, _>>()
            .map_err(Failure::usage)?,
        ..JobFilter::default()
    };
    let pruned = prune(
        store.as_ref(),
        &store.audit(),
        &filter,
        ended_before,
        &super::who(),
        args.dry_run,
    )
    .map_err(|error| match error {
        PruneError::Store(error) => Failure::from(error),
        PruneError::Audit(_) => Failure::system(error),
    })?;
    match args.output {
        OutputFormat::Json => printer::json(&serde_json::json!({
            "dry_run": args.dry_run,
            "removed": pruned,
        })),
        OutputFormat::Text => {
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            let mut text = String::new();
            for job in &pruned {
                text.push_str(&format!(
                    "{verb} job {} {} {} (ended {})\n",
                    job.job_id,
                    job.state,
                    field(&job.name),
                    job.ended_at
                ));
            }
            text.push_str(&match pruned.len() {
                0 => "nothing to prune\n".to_owned(),
                1 => format!("{verb} 1 job; the audit log keeps its records\n"),
                count => format!("{verb} {count} jobs; the audit log keeps their records\n"),
            });
            printer::out(&text);
        }
    }
    Ok(Code::Success)
}
