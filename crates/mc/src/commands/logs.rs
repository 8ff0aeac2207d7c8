//! `mc logs`: a job's recorded output, step by step, optionally followed live.

use std::io::{self, Read, Write};

use maestro_core::JobId;
use maestro_core::follow::{self, Event, StepFollow};
use maestro_core::output::{TRUNCATED_NOTE, line_seq, parse_line};
use maestro_core::progress;
use maestro_core::state::StateStore;

use crate::cli::{GlobalArgs, LogsArgs, OutputFormat};
use crate::exit::{Code, Failure};

pub(crate) fn run(global: &GlobalArgs, args: LogsArgs) -> Result<Code, Failure> {
    let store = super::store(global)?;
    let store = store.as_ref();
    let job_id = super::find_job(store, &args.job_id)?;
    let record = store.load(job_id)?;
    let mut steps = super::stored_step_names(store, &record)?;
    if let Some(only) = &args.step {
        if !steps.contains(only) {
            return Err(Failure::usage(format!("job {job_id} has no step {only:?}"))
                .hint(format!("its steps are: {}", steps.join(", "))));
        }
        steps.retain(|name| name == only);
    }
    let mode = Mode::of(&args);
    let mut stdout = io::stdout().lock();
    for step in &steps {
        let mut printer = LogPrinter::new(step, args.since_seq, mode);
        let printed = if args.follow {
            follow_step(store, job_id, step, &mut printer, &mut stdout)?
        } else {
            print_file(store, job_id, step, &mut printer, &mut stdout)?
        };
        printer.finish(&mut stdout)?;
        if !printed && args.follow && follow::is_over(store, job_id)? {
            break;
        }
    }
    if !args.follow {
        return Ok(Code::Success);
    }
    // Followed to its end: exit as `mc submit` of the job did. The last step's result is
    // recorded just before the job's final transition: wait for that (or for its driver to die).
    while !follow::is_over(store, job_id)? {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let record = store.load(job_id)?;
    if !record.state().is_terminal() {
        eprintln!(
            "mc: job {job_id} is {} but no mc drives it any more (it was killed); `mc gc` records it failed",
            record.state()
        );
        return Ok(Code::JobFailed);
    }
    Ok(Code::for_job(record.state(), progress::failure(&record)))
}

/// How lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As recorded: time, number, stream, text; Maestro's notes too.
    Text,
    /// One JSON object per output line.
    Json,
    /// The text alone, as the step wrote it.
    Raw,
}

impl Mode {
    fn of(args: &LogsArgs) -> Self {
        match (args.raw, args.output) {
            (true, _) => Mode::Raw,
            (false, OutputFormat::Json) => Mode::Json,
            (false, OutputFormat::Text) => Mode::Text,
        }
    }
}

/// Recorded lines that arrive step after step (from a server), printed as `mc logs` prints a
/// local job's: `--since-seq`, `--output json` and `--raw` applied to each step's lines.
pub(crate) struct Recorded {
    since: u64,
    mode: Mode,
    printer: Option<LogPrinter>,
}

impl Recorded {
    pub(crate) fn new(args: &LogsArgs) -> Self {
        Self {
            since: args.since_seq,
            mode: Mode::of(args),
            printer: None,
        }
    }

    /// Print `line` (as recorded, without its newline) of `step`.
    pub(crate) fn line(&mut self, step: &str, line: &str) -> Result<(), Failure> {
        let mut stdout = io::stdout().lock();
        if self
            .printer
            .as_ref()
            .is_none_or(|printer| printer.step != step)
        {
            self.finish()?;
            self.printer = Some(LogPrinter::new(step, self.since, self.mode));
        }
        if let Some(printer) = &mut self.printer {
            printer.feed(line.as_bytes(), &mut stdout)?;
            printer.feed(b"\n", &mut stdout)?;
        }
        let _ = stdout.flush();
        Ok(())
    }

    /// Print what the last step left without a newline.
    pub(crate) fn finish(&mut self) -> Result<(), Failure> {
        match self.printer.take() {
            Some(mut printer) => printer.finish(&mut io::stdout().lock()),
            None => Ok(()),
        }
    }
}

/// Prints one step's log line by line: output lines numbered above `since` and the notes that
/// follow them, and says on stderr when the log was truncated.
struct LogPrinter {
    step: String,
    since: u64,
    mode: Mode,
    /// The number of the last output line seen.
    last_seq: u64,
    /// The start of a line whose end has not been read yet.
    carry: Vec<u8>,
}

impl LogPrinter {
    fn new(step: &str, since: u64, mode: Mode) -> Self {
        Self {
            step: step.to_owned(),
            since,
            mode,
            last_seq: 0,
            carry: Vec::new(),
        }
    }

    /// Print the whole lines of what was read so far; keep an unfinished last line.
    fn feed(&mut self, bytes: &[u8], stdout: &mut impl Write) -> Result<(), Failure> {
        self.carry.extend_from_slice(bytes);
        let Some(end) = self.carry.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let rest = self.carry.split_off(end + 1);
        let whole = std::mem::replace(&mut self.carry, rest);
        let mut out = Vec::with_capacity(whole.len());
        for line in whole.split_inclusive(|b| *b == b'\n') {
            self.line(line, &mut out);
        }
        write_out(stdout, &out)
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        match line_seq(line) {
            Some(seq) => {
                self.last_seq = seq;
                if seq > self.since {
                    self.output_line(line, out);
                }
            }
            None => {
                if self.last_seq >= self.since && self.mode == Mode::Text {
                    out.extend_from_slice(line);
                }
                if let Some(note) = line.strip_prefix(b"# ")
                    && note.starts_with(TRUNCATED_NOTE.as_bytes())
                {
                    eprintln!(
                        "mc: the log of step {:?} is truncated: {}",
                        self.step,
                        String::from_utf8_lossy(&note[TRUNCATED_NOTE.len()..]).trim()
                    );
                }
            }
        }
    }

    fn output_line(&self, line: &[u8], out: &mut Vec<u8>) {
        let parsed = match self.mode {
            Mode::Text => None,
            Mode::Json | Mode::Raw => parse_line(line),
        };
        match (self.mode, parsed) {
            (Mode::Json, Some(parsed)) => {
                let mut object = serde_json::json!({
                    "step": self.step,
                    "seq": parsed.seq,
                    "time": parsed.at,
                    "stream": parsed.stream,
                    "text": String::from_utf8_lossy(parsed.text),
                });
                if parsed.continues {
                    object["continues"] = true.into();
                }
                out.extend_from_slice(object.to_string().as_bytes());
                out.push(b'\n');
            }
            (Mode::Raw, Some(parsed)) => {
                out.extend_from_slice(parsed.text);
                if !parsed.continues {
                    out.push(b'\n');
                }
            }
            _ => out.extend_from_slice(line),
        }
    }

    /// Print a last line that has no newline (a log cut short by a crash).
    fn finish(&mut self, stdout: &mut impl Write) -> Result<(), Failure> {
        if self.carry.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.carry);
        let mut out = Vec::new();
        self.line(&line, &mut out);
        write_out(stdout, &out)
    }
}

fn write_out(stdout: &mut impl Write, bytes: &[u8]) -> Result<(), Failure> {
    // A stream of lines has begun: a failure after it is said on stderr only, not as an
    // object appended to the stream.
    if !bytes.is_empty() {
        crate::printer::mark_printed();
    }
    match stdout.write_all(bytes) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => Err(Failure::system(format!("cannot print the log: {error}"))),
    }
}

fn print_file(
    store: &dyn StateStore,
    job_id: JobId,
    step: &str,
    printer: &mut LogPrinter,
    stdout: &mut impl Write,
) -> Result<bool, Failure> {
    let Some(mut reader) = store.open_step_log(job_id, step)? else {
        return Ok(false);
    };
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(true),
            Ok(count) => printer.feed(&buffer[..count], stdout)?,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(Failure::system(format!("cannot read the log: {error}")));
            }
        }
    }
}

/// Print a step's log as it grows, until it is complete (see [`maestro_core::follow`]); whether
/// the step had a log.
fn follow_step(
    store: &dyn StateStore,
    job_id: JobId,
    step: &str,
    printer: &mut LogPrinter,
    stdout: &mut impl Write,
) -> Result<bool, Failure> {
    let mut follower = StepFollow::new(job_id, step);
    loop {
        match follower.poll(store)? {
            Event::Bytes(bytes) => printer.feed(&bytes, stdout)?,
            Event::Wait => {
                let _ = stdout.flush();
                std::thread::sleep(follow::POLL);
            }
            Event::Done { ran } => return Ok(ran),
        }
    }
}
