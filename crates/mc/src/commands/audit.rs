//! `mc audit verify`: check the audit log's chain and every job's history against it.

use crate::cli::{AuditCommand, GlobalArgs, OutputFormat};
use crate::exit::{Code, Failure};
use crate::printer;

pub(crate) fn run(global: &GlobalArgs, command: AuditCommand) -> Result<Code, Failure> {
    let AuditCommand::Verify {
        expect_head,
        output,
    } = command;
    if let Some(head) = &expect_head
        && (head.trim().len() != 64 || !head.trim().chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(Failure::usage(format!(
            "--expect-head {head:?} is not a SHA-256 hash (64 hex digits)"
        ))
        .hint("use the hash an earlier `mc audit verify` printed"));
    }
    let store = super::store(global)?;
    let verification = store
        .audit()
        .verify(expect_head.as_deref(), Some(store.as_ref()))
        .map_err(Failure::system)?;
    match output {
        OutputFormat::Json => printer::json(&verification),
        OutputFormat::Text => {
            let mut text = String::new();
            if let Some(problem) = &verification.problem {
                text.push_str(&format!("tampered: {}\n", problem.message));
            }
            for job in &verification.jobs {
                text.push_str(&format!("tampered: {}\n", job.message));
            }
            if verification.intact()
                && let Some(head) = &verification.head
            {
                text.push_str(head);
                text.push('\n');
            }
            printer::out(&text);
            for note in &verification.notes {
                eprintln!("note: {note}");
            }
            if verification.intact() {
                match &verification.head {
                    Some(_) => eprintln!(
                        "audit log intact: {} records; its head hash is on stdout: keep it elsewhere and check it later with --expect-head",
                        verification.records
                    ),
                    None => eprintln!("audit log is empty"),
                }
            }
        }
    }
    Ok(if verification.intact() {
        Code::Success
    } else {
        Code::JobFailed
    })
}
