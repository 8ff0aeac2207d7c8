//! `mc logs`: a job's recorded output, step by step, optionally followed live.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::state::{FileStore, StateStore};

use crate::cli::{GlobalArgs, LogsArgs};
use crate::exit::{Code, Failure};
use crate::settings;

const POLL: Duration = Duration::from_millis(100);

pub(crate) fn run(global: &GlobalArgs, args: LogsArgs) -> Result<Code, Failure> {
    let store = FileStore::new(settings::state_root(global)?);
    let job_id = super::find_job(&store, &args.job_id)?;
    let record = store.load(job_id)?;
    let mut steps = super::stored_step_names(&store, &record)?;
    if let Some(only) = &args.step {
        if !steps.contains(only) {
            return Err(Failure::usage(format!("job {job_id} has no step {only:?}"))
                .hint(format!("its steps are: {}", steps.join(", "))));
        }
        steps.retain(|name| name == only);
    }
    let mut stdout = io::stdout().lock();
    for step in &steps {
        let printed = if args.follow {
            follow_step(&store, job_id, step, &mut stdout)?
        } else {
            print_file(&store, job_id, step, &mut stdout)?
        };
        if !printed && args.follow && is_over(&store, job_id)? {
            break;
        }
    }
    Ok(Code::Success)
}

/// Whether nothing more will be written for the job: it ended, or its `mc` died.
fn is_over(store: &FileStore, job_id: JobId) -> Result<bool, Failure> {
    let record = store.load(job_id)?;
    Ok(record.state().is_terminal() || store.is_abandoned(&record)?)
}

fn copy_out(reader: &mut impl Read, stdout: &mut impl Write) -> Result<(), Failure> {
    match io::copy(reader, stdout) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => Err(Failure::system(format!("cannot print the log: {error}"))),
    }
}

fn print_file(
    store: &FileStore,
    job_id: JobId,
    step: &str,
    stdout: &mut impl Write,
) -> Result<bool, Failure> {
    match store.open_step_log(job_id, step)? {
        Some(mut file) => copy_out(&mut file, stdout).map(|()| true),
        None => Ok(false),
    }
}

/// Print a step's log as it grows, until the step's result is recorded (then the log is
/// complete) or the job ends without the step having run.
fn follow_step(
    store: &FileStore,
    job_id: JobId,
    step: &str,
    stdout: &mut impl Write,
) -> Result<bool, Failure> {
    let mut file: File = loop {
        match store.open_step_log(job_id, step)? {
            Some(file) => break file,
            None => {
                let record = store.load(job_id)?;
                if record.steps.iter().any(|s| s.name == step) || is_over(store, job_id)? {
                    return Ok(false);
                }
                std::thread::sleep(POLL);
            }
        }
    };
    loop {
        copy_out(&mut file, stdout)?;
        let _ = stdout.flush();
        let record = store.load(job_id)?;
        if record.steps.iter().any(|s| s.name == step) || is_over(store, job_id)? {
            // The result is recorded after the log is complete: one last read gets the tail.
            copy_out(&mut file, stdout)?;
            return Ok(true);
        }
        std::thread::sleep(POLL);
    }
}
