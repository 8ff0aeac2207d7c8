//! Scripts the step writes and then runs: `echo 'rm -rf /usr' > x.sh && sh x.sh`.
//!
//! `bash script.sh` is not a finding when the script is part of the checkout (we cannot see
//! it, and it is reviewed with the job). A file the same command writes is different: what
//! it holds is decided by the command itself, at run time, so running it is `dynamic-code`.
//! When every write to it was static text (`echo`, `printf`, a here-document through `cat`,
//! `tee` of such text) that text is analysed as well, so a destructive command in it is
//! reported as such.
//!
//! Files are tracked for the whole analysis (a subshell's or a nested shell's writes land on
//! the same disk), in the order the script is walked; writes are recognised in redirections,
//! `tee`, `cp`/`mv`/`install`/`ln`, `dd of=`, `sed -i`, `curl -o|-O` and `wget`.

use super::Rule;
use super::commands::{Stdin, basename};
use super::paths::{self, AbsPath};
use super::words::{self, Word};
use super::{Analyzer, Scope};

/// Most written files whose text is remembered (for analysis when they are run).
const MAX_WRITTEN_TEXTS: usize = 16;

/// Most written files remembered at all; past it, every file run by a shell or interpreter
/// (`sh f.sh`, `. f.sh`, `python3 f.py`) counts as written, but not a file executed by its
/// path (`./gradlew`, `./node_modules/.bin/jest`): those are mostly part of the checkout.
const MAX_WRITTEN_FILES: usize = 256;

/// Longest text remembered for one written file; longer text is only known at run time.
const MAX_WRITTEN_BYTES: usize = 64 * 1024;

/// A file the step writes.
#[derive(Clone, Debug)]
pub(crate) struct WrittenFile {
    /// Where, when static; None when its name is only known at run time.
    path: Option<AbsPath>,
    /// The name as written, to match a run-time name spelled the same (`> "$F"`, `sh "$F"`).
    raw: String,
    /// Its text, when every write to it was static.
    text: Option<String>,
    /// The command that wrote it, for messages.
    writer: String,
}

/// How a written file is run.
#[derive(Clone, Copy)]
pub(crate) enum Runner<'a> {
    /// By a new shell (`sh x.sh`).
    Shell,
    /// Executed by its path (`./x.sh`): a new shell, or the interpreter its `#!` line names.
    Executed,
    /// In this shell (`. ./x.sh`, `source x.sh`).
    Source,
    /// By an interpreter (`python3 x.py`).
    Interpreter(&'a str),
}

/// The interpreter a `#!` line names (`#!/usr/bin/env python3` is `python3`).
fn shebang(text: &str) -> Option<&str> {
    let line = text.strip_prefix("#!")?.lines().next()?;
    let mut words = line.split_whitespace();
    let mut program = basename(words.next()?);
    if program == "env" {
        program = words.find(|w| !w.starts_with('-'))?;
    }
    Some(program)
}

/// The file name a URL is saved under by `wget URL` or `curl -O URL`.
fn url_file_name(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let (_, name) = path.split_once("://")?.1.rsplit_once('/')?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// Short options of `curl` and `wget` that take a value, the output file's among them.
const CURL_SHORT_VALUES: &str = "dHuxAebcFKmrTwXYyzECPQto";
const WGET_SHORT_VALUES: &str = "oaeDIXltTwQPUhBiYO";

/// The files `curl -o FILE`/`curl -O URL` and `wget URL`/`wget -O FILE URL` save to (options
/// clustered or not: `curl -fsSLo FILE`, `wget -qO FILE`); `-` is standard output.
fn download_files(name: &str, args: &[Word]) -> Vec<Word> {
    let (output, short_values) = match name {
        "curl" => ('o', CURL_SHORT_VALUES),
        _ => ('O', WGET_SHORT_VALUES),
    };
    let long_output = if name == "curl" {
        "--output"
    } else {
        "--output-document"
    };
    let mut files = Vec::new();
    let mut urls = Vec::new();
    let mut remote_name = name == "wget";
    let mut i = 0;
    while let Some(word) = args.get(i) {
        i += 1;
        let Some(arg) = word.lit() else { continue };
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((key, file)) if format!("--{key}") == long_output => {
                    files.push(Word::literal(file));
                }
                None if arg == long_output => {
                    files.extend(args.get(i).cloned());
                    i += 1;
                }
                None if name == "curl" && long.starts_with("remote-name") => remote_name = true,
                _ => {}
            }
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            urls.extend(url_file_name(&arg));
            continue;
        };
        if name == "curl" && cluster.contains('O') {
            remote_name = true;
        }
        if let Some(at) = cluster.find(|c| short_values.contains(c)) {
            let attached = &cluster[at + 1..];
            if cluster[at..].starts_with(output) {
                files.push(if attached.is_empty() {
                    args.get(i).cloned().unwrap_or_else(|| Word::literal("-"))
                } else {
                    Word::literal(attached)
                });
            }
            if attached.is_empty() {
                i += 1;
            }
        }
    }
    // wget names the file after the URL unless -O says otherwise; curl only with -O.
    let named = !files.is_empty();
    files.retain(|f| f.lit().as_deref() != Some("-"));
    if remote_name && !(name == "wget" && named) {
        files.extend(urls.iter().map(|u| Word::literal(u)));
    }
    files
}

impl Analyzer {
    /// Remembers that `target` is written (appended to when `append`), with `text` when the
    /// written text is static.
    pub(crate) fn record_write(
        &mut self,
        target: &Word,
        cwd: Option<&AbsPath>,
        append: bool,
        text: Option<String>,
        writer: &str,
    ) {
        let path = target
            .lit()
            .and_then(|_| paths::static_paths(target, cwd).into_iter().next());
        if target.lit().is_some() && path.is_none() {
            return;
        }
        if !self.spend_bytes(text.as_ref().map_or(0, String::len)) {
            return;
        }
        let same = |f: &WrittenFile| match (&path, &f.path) {
            (Some(p), Some(q)) => p == q,
            (None, None) => f.raw == target.raw,
            _ => false,
        };
        if let Some(at) = self.written.iter().position(same) {
            let file = &mut self.written[at];
            file.text = match (append, file.text.take(), text) {
                (false, _, new) => new,
                (true, Some(old), Some(new)) => Some(old + &new),
                (true, _, _) => None,
            }
            .filter(|t| t.len() <= MAX_WRITTEN_BYTES && at < MAX_WRITTEN_TEXTS);
            writer.clone_into(&mut file.writer);
            return;
        }
        if self.written.len() >= MAX_WRITTEN_FILES {
            self.written_overflow = true;
            return;
        }
        let keeps_text = self.written.len() < MAX_WRITTEN_TEXTS;
        self.written.push(WrittenFile {
            path,
            raw: target.raw.clone(),
            // Appending to a file we did not see written adds to text we cannot see.
            text: text.filter(|_| !append && keeps_text),
            writer: words::excerpt(writer),
        });
    }

    /// The files a command writes with its own arguments: `tee FILE`, `cp SRC DEST`,
    /// `dd of=FILE`, `sed -i … FILE`, `curl -o FILE`, `wget [-O FILE] URL`.
    pub(crate) fn record_command_writes(
        &mut self,
        name: &str,
        shown: &str,
        args: &[Word],
        stdin: &Stdin,
        cwd: Option<&AbsPath>,
    ) {
        let has_option = |test: fn(&str) -> bool| {
            args.iter()
                .filter_map(Word::lit)
                .any(|a| a.starts_with('-') && test(&a))
        };
        let operands: Vec<&Word> = args
            .iter()
            .filter(|w| w.lit().is_none_or(|a| !a.starts_with('-')))
            .collect();
        match name {
            "tee" => {
                let append =
                    has_option(|a| a == "--append" || (!a.starts_with("--") && a.contains('a')));
                let text =
                    (!stdin.unknown && !stdin.texts.is_empty()).then(|| stdin.texts.concat());
                for file in operands {
                    self.record_write(file, cwd, append, text.clone(), shown);
                }
            }
            "cp" | "mv" | "install" | "ln" | "rsync" => {
                let [sources @ .., dest] = operands.as_slice() else {
                    return;
                };
                self.record_write(dest, cwd, false, None, shown);
                // DEST may be a directory: SRC lands in it under its own name.
                let Some(dir) = dest.lit() else { return };
                for source in sources.iter().filter_map(|s| s.lit()) {
                    let inside = Word::literal(&format!("{dir}/{}", basename(&source)));
                    self.record_write(&inside, cwd, false, None, shown);
                }
            }
            "dd" => {
                for file in args.iter().filter_map(|w| w.lit()) {
                    if let Some(file) = file.strip_prefix("of=") {
                        self.record_write(&Word::literal(file), cwd, false, None, shown);
                    }
                }
            }
            // `sed -i SCRIPT FILE…` rewrites each FILE (the script is the first operand unless
            // `-e`/`-f` gives it).
            "sed" if has_option(|a| a.starts_with("-i") || a.starts_with("--in-place")) => {
                let script_given = has_option(|a| {
                    matches!(a, "-e" | "-f")
                        || a.starts_with("--expression")
                        || a.starts_with("--file")
                });
                for file in operands.iter().skip(usize::from(!script_given)) {
                    self.record_write(file, cwd, false, None, shown);
                }
            }
            "curl" | "wget" => {
                for file in download_files(name, args) {
                    self.record_write(&file, cwd, false, None, shown);
                }
            }
            _ => {}
        }
    }

    /// `file` is run as a script: when the step wrote it, that is code only known at run time,
    /// and its text, if static, is analysed as the runner would read it.
    ///
    /// `args` are the words after the file (`sh clean.sh build`): the script's positional
    /// parameters. A value of them only known at run time is never read as empty (the caller
    /// passed a word), so `rm -rf "$1"/*` with it is `dynamic-argument`, not `/*`.
    pub(crate) fn run_written(
        &mut self,
        shown: &str,
        file: &Word,
        args: &[Word],
        runner: Runner<'_>,
        scope: &mut Scope,
        depth: usize,
    ) {
        let path = file.lit().and_then(|_| {
            paths::static_paths(file, scope.cwd.as_ref())
                .into_iter()
                .next()
        });
        let found = self
            .written
            .iter()
            .find(|f| match (&path, &f.path) {
                (Some(p), Some(q)) => p == q,
                (None, None) => f.raw == file.raw,
                _ => false,
            })
            .cloned();
        let writer = match &found {
            Some(written) => format!("`{}`", written.writer),
            None if self.written_overflow && !matches!(runner, Runner::Executed) => {
                "one of many commands".to_owned()
            }
            None => return,
        };
        self.report(
            Rule::DynamicCode,
            format!(
                "`{shown}` runs `{}`, which the step itself writes ({writer}), so the code it \
                 runs is only known at run time",
                words::excerpt(&file.raw)
            ),
        );
        let Some(text) = found.and_then(|f| f.text) else {
            return;
        };
        match (runner, shebang(&text)) {
            (Runner::Interpreter(name), _) | (Runner::Shell | Runner::Executed, Some(name))
                if super::rules::is_interpreter(name) || super::interpreters::is_awk(name) =>
            {
                self.analyse_code(name, shown, &text, scope, depth);
            }
            (Runner::Source, _) if args.is_empty() => {
                self.analyse_script(&text, scope, depth + 1);
            }
            // `source x.sh ARGS` runs in this shell with ARGS as its positional parameters
            // for the while.
            (Runner::Source, _) => {
                let saved_vars: Vec<(String, Option<Vec<words::Resolved>>)> = (1..10)
                    .map(|n| (n.to_string(), scope.vars.remove(&n.to_string())))
                    .collect();
                let args = bind_positionals(scope, None, args);
                let saved_positional = scope.positional.replace(args);
                self.analyse_script(&text, scope, depth + 1);
                scope.positional = saved_positional;
                for (name, value) in saved_vars {
                    scope.vars.remove(&name);
                    if let Some(value) = value {
                        scope.vars.insert(name, value);
                    }
                }
            }
            _ => {
                let mut inner = scope.child(scope.cwd.clone());
                let args = bind_positionals(&mut inner, Some(file), args);
                inner.positional = Some(args);
                self.analyse_script(&text, &mut inner, depth + 1);
            }
        }
    }
}

/// Binds `$0` (when given) and `$1`, `$2`, … in `scope` to a script's arguments, and returns
/// them as words for `"$@"`. A run-time value of an argument is never empty: the argument
/// was given, and reading it as empty would turn `"$1"/*` into `/*`.
fn bind_positionals(scope: &mut Scope, zero: Option<&Word>, args: &[Word]) -> Vec<Word> {
    if let Some(zero) = zero {
        scope.vars.insert("0".to_owned(), zero.cands.clone());
    }
    let args: Vec<Word> = args.iter().map(given_argument).collect();
    for (n, arg) in args.iter().enumerate() {
        scope.vars.insert((n + 1).to_string(), arg.cands.clone());
    }
    args
}

/// An argument word whose run-time parts are known to be given (not empty).
fn given_argument(word: &Word) -> Word {
    let cands = word
        .cands
        .iter()
        .map(|res| {
            words::Resolved(
                res.0
                    .iter()
                    .map(|seg| match seg {
                        words::Seg::Unknown { .. } => words::Seg::Unknown {
                            may_be_empty: false,
                        },
                        other => other.clone(),
                    })
                    .collect(),
            )
        })
        .collect();
    Word {
        raw: word.raw.clone(),
        cands,
    }
}
