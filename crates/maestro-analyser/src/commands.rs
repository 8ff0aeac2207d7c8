//! From a simple command to its effective argv: redirections, pipeline input, wrappers
//! (`sudo`, `env`, `timeout`, …) and commands that run scripts (`sh -c`, `eval`, `su -c`, …).

use super::Rule;
use super::paths::{self, AbsPath};
use super::words::{self, Resolved, Word};
use super::written::Runner;
use super::{Analyzer, Scope};

/// How many wrappers we peel off one command (`sudo env nice timeout 5 nohup rm …`). Each level
/// consumes at least one word, so this only guards against silly inputs.
const MAX_WRAPPERS: usize = 32;

/// How many candidate values of one script string (`sh -c "$X"`) we analyse.
const MAX_SCRIPT_CANDIDATES: usize = 4;

/// How many whitespace-separated items of static stdin we hand to `xargs`.
const MAX_XARGS_ITEMS: usize = 64;

/// Nesting of function calls we follow with their arguments bound.
const MAX_CALL_DEPTH: usize = 3;

/// Static text that will arrive on a command's standard input: here-documents, here-strings and
/// the output of `echo`/`printf`/`find` earlier in the pipeline.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stdin {
    pub(crate) texts: Vec<String>,
    /// Some of the input is only known at run time (`curl … | sh`, `sh < file`).
    pub(crate) unknown: bool,
    /// The input lists whole directory trees: `find` prints every path under its start paths,
    /// so `find / | xargs rm -f` deletes everything under `/`.
    pub(crate) listed_trees: bool,
    /// The pipeline stage that writes the input, for messages (`docker ps -aq`).
    pub(crate) origin: Option<String>,
}

impl Stdin {
    /// Roughly how many bytes a copy holds.
    pub(crate) fn weight(&self) -> usize {
        self.texts.iter().map(|t| t.len() + 8).sum()
    }
}

/// Longest static text we track as a pipeline stage's output; beyond it the output counts as
/// unknown (what a shell reading it runs is then only known at run time).
const MAX_PRODUCED_BYTES: usize = 64 * 1024;

/// Joins rendered words with `sep`, or None once the result would exceed [`MAX_PRODUCED_BYTES`].
fn join_bounded<'a>(parts: impl Iterator<Item = &'a Word>, sep: &str) -> Option<String> {
    let mut out = String::new();
    for (n, word) in parts.enumerate() {
        if n > 0 {
            out.push_str(sep);
        }
        out.push_str(&word.cands.first().map(Resolved::render).unwrap_or_default());
        if out.len() > MAX_PRODUCED_BYTES {
            return None;
        }
    }
    Some(out)
}

/// Most static texts tracked on one command's standard input (long pipelines of producers
/// would otherwise copy quadratically many).
const MAX_STDIN_TEXTS: usize = 16;

/// What an unknown text renders as when a shell parses it: a command only known at run time.
const UNKNOWN_TEXT: &str = "${__maestro_unknown__:?}";

/// The variable name that [`Resolved::render`] and [`UNKNOWN_TEXT`] use for unknown values.
pub(crate) const UNKNOWN_MARKER: &str = "__maestro_unknown__";

/// Whether a command word is a pathname pattern the shell expands (`/???/r?`, `/bin/r[m]`):
/// it holds an unquoted `*`, `?` or `[`.
fn is_glob(value: &str, raw: &str) -> bool {
    let bracket = value
        .find('[')
        .is_some_and(|open| value[open + 1..].contains(']'));
    (value.contains(['*', '?']) || bracket) && !raw.contains(['\'', '"', '\\'])
}

/// A write redirection target or a text fed to standard input.
#[derive(Clone, Debug)]
pub(crate) enum Redirect {
    /// Output to a file; `op` is the operator as written (`>`, `2>>`, `&>`), for messages.
    Write {
        op: String,
        target: Word,
    },
    InputText(String),
    /// Input read from a file, a descriptor or a process substitution.
    InputUnknown,
}

/// A simple command with its words resolved.
#[derive(Clone, Debug, Default)]
pub(crate) struct SimpleCmd {
    pub(crate) words: Vec<Word>,
    pub(crate) redirects: Vec<Redirect>,
    pub(crate) assignments: Vec<(String, Vec<Resolved>)>,
}

/// Shells whose `-c STRING` (or stdin) is a script.
fn is_shell(name: &str) -> bool {
    matches!(
        name,
        "sh" | "bash"
            | "dash"
            | "zsh"
            | "ksh"
            | "mksh"
            | "lksh"
            | "pdksh"
            | "oksh"
            | "ash"
            | "hush"
            | "yash"
            | "posh"
            | "rbash"
    )
}

/// The command name as the kernel resolves it: `/usr/bin/rm` and `./rm` are `rm`.
pub(crate) fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Option grammar of a wrapper: short options that take a value, long options that take one.
pub(crate) struct OptSpec {
    pub(crate) short_values: &'static str,
    /// Short options whose argument is optional and only ever attached (`nsenter -m/proc/1/ns/mnt`).
    pub(crate) short_optional: &'static str,
    pub(crate) long_values: &'static [&'static str],
}

impl OptSpec {
    /// A wrapper whose options take no values.
    pub(crate) const FLAGS: OptSpec = OptSpec {
        short_values: "",
        short_optional: "",
        long_values: &[],
    };
}

/// Parsed leading options of a wrapper: the index of its first operand and the options seen.
pub(crate) struct Opts {
    pub(crate) next: usize,
    pub(crate) seen: Vec<(String, Option<String>)>,
    /// Whether the options ended with `--` (everything after it is an operand).
    pub(crate) ended: bool,
}

impl Opts {
    pub(crate) fn has(&self, names: &[&str]) -> bool {
        self.seen.iter().any(|(n, _)| names.contains(&n.as_str()))
    }

    pub(crate) fn value(&self, names: &[&str]) -> Option<&str> {
        self.seen
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Walks a wrapper's options getopt-style, stopping at the first operand or after `--`.
pub(crate) fn parse_opts(argv: &[Word], start: usize, spec: &OptSpec) -> Opts {
    let mut seen = Vec::new();
    let mut i = start;
    let mut ended = false;
    while let Some(word) = argv.get(i) {
        let Some(arg) = word.lit() else { break };
        if arg == "--" {
            i += 1;
            ended = true;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            if value.is_none() && spec.long_values.contains(&name.as_str()) {
                seen.push((name, argv.get(i + 1).and_then(Word::lit)));
                i += 2;
            } else {
                seen.push((name, value));
                i += 1;
            }
            continue;
        }
        let cluster: Vec<char> = arg.chars().skip(1).collect();
        let mut consumed_next = false;
        for (j, &c) in cluster.iter().enumerate() {
            if spec.short_optional.contains(c) {
                let rest: String = cluster.iter().skip(j + 1).collect();
                seen.push((format!("-{c}"), (!rest.is_empty()).then_some(rest)));
                break;
            }
            if spec.short_values.contains(c) {
                let rest: String = cluster.iter().skip(j + 1).collect();
                if rest.is_empty() {
                    seen.push((format!("-{c}"), argv.get(i + 1).and_then(Word::lit)));
                    consumed_next = true;
                } else {
                    seen.push((format!("-{c}"), Some(rest)));
                }
                break;
            }
            seen.push((format!("-{c}"), None));
        }
        i += if consumed_next { 2 } else { 1 };
    }
    Opts {
        next: i,
        seen,
        ended,
    }
}

/// GNU-style option parsing over a whole argv: options may follow operands, `--` ends them.
/// Returns the options seen and the operands in order.
pub(crate) fn getopt_all<'a>(
    argv: &'a [Word],
    spec: &OptSpec,
) -> (Vec<(String, Option<String>)>, Vec<&'a Word>) {
    let mut seen = Vec::new();
    let mut operands = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let o = parse_opts(argv, i, spec);
        seen.extend(o.seen);
        i = o.next;
        if o.ended {
            operands.extend(argv.get(i..).unwrap_or_default());
            break;
        }
        if let Some(word) = argv.get(i) {
            operands.push(word);
            i += 1;
        }
    }
    (seen, operands)
}

/// Skips `NAME=value` operands (as accepted by `env` and `sudo`).
fn skip_assignments(argv: &[Word], mut i: usize) -> usize {
    while argv
        .get(i)
        .and_then(Word::lit)
        .is_some_and(|a| is_assignment(&a))
    {
        i += 1;
    }
    i
}

fn is_assignment(arg: &str) -> bool {
    match arg.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Joins words back into a script string the way `eval`, `ssh` and `watch` do.
fn join_rendered(argv: &[Word]) -> String {
    join_bounded(argv.iter(), " ").unwrap_or_else(|| UNKNOWN_TEXT.to_owned())
}

/// What the wrapper logic decided about the argv at the current position.
enum Next {
    /// Continue with the command at this index (cwd possibly changed by the wrapper).
    Wrapped(usize),
    /// The rest of the command line is a script for a shell; analyse it and stop.
    Script(Vec<String>, Vec<Word>),
    /// Not executed at all, or nothing more we can see (`command -v`, `sudo -l`).
    Stop,
    /// Not a wrapper: apply the rules to the command at the current index.
    Command,
    /// The wrapper runs these commands (`parallel CMD ::: A B` runs `CMD A` and `CMD B`).
    Argvs(Vec<Vec<Word>>),
    /// A shell runs the script file at this index (`bash x.sh`).
    RunsFile(usize),
}

impl Analyzer {
    /// Checks each stage of a pipeline, feeding static output of earlier stages to later ones.
    pub(crate) fn check_pipeline(
        &mut self,
        stages: &[Option<SimpleCmd>],
        scope: &mut Scope,
        depth: usize,
    ) {
        let mut upstream = Stdin::default();
        for cmd in stages.iter().flatten() {
            self.check_simple(cmd, &upstream, scope, depth);
            let produced = producer_text(cmd);
            if !self.spend_bytes(produced.iter().map(String::len).sum()) {
                return;
            }
            // What a stage we cannot read writes (`curl`, `base64 -d`, `cat file`) is unknown.
            upstream.unknown |= produced.is_empty();
            upstream.listed_trees |= cmd
                .words
                .first()
                .and_then(Word::lit)
                .is_some_and(|w| basename(&w) == "find");
            upstream.origin = Some(words::display(&cmd.words));
            upstream.texts.extend(produced);
            if upstream.texts.len() > MAX_STDIN_TEXTS {
                // Keep the first texts and note that more, unknown to us, follows: a shell at
                // the end of a very long pipeline then reads code only known at run time.
                upstream.texts.truncate(MAX_STDIN_TEXTS);
                upstream.texts.push(UNKNOWN_TEXT.to_owned());
            }
        }
    }

    /// Checks redirections, then the command itself; a bare assignment updates the scope.
    pub(crate) fn check_simple(
        &mut self,
        cmd: &SimpleCmd,
        upstream: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) {
        if !self.spend_bytes(upstream.weight()) {
            return;
        }
        let mut stdin = upstream.clone();
        for redirect in &cmd.redirects {
            match redirect {
                Redirect::Write { op, target } => {
                    let shown = format!("{} {op}{}", words::display(&cmd.words), target.raw);
                    self.check_write_target(target, &shown, scope.cwd.as_ref());
                    let text = written_text(cmd, op);
                    let append = op.contains(">>");
                    self.record_write(target, scope.cwd.as_ref(), append, text, &shown);
                }
                Redirect::InputText(text) => stdin.texts.push(text.clone()),
                Redirect::InputUnknown => stdin.unknown = true,
            }
        }
        if cmd.words.is_empty() {
            for (name, values) in &cmd.assignments {
                scope.vars.insert(name.clone(), values.clone());
            }
            return;
        }
        self.check_argv(&cmd.words, &stdin, scope, depth);
    }

    /// A redirection or `tee`/`dd`-style output onto a disk destroys its contents.
    pub(crate) fn check_write_target(&mut self, target: &Word, shown: &str, cwd: Option<&AbsPath>) {
        for path in paths::static_paths(target, cwd) {
            if paths::is_kernel_interface(&path) {
                self.report(
                    Rule::KernelInterfaceWrite,
                    format!(
                        "`{}` writes to the kernel control file {}, which can crash, reboot or \
                         power off the machine",
                        words::excerpt(shown),
                        path.display()
                    ),
                );
            }
            if paths::is_block_device(&path) {
                self.report(
                    Rule::BlockDeviceWrite,
                    format!(
                        "`{}` overwrites the block device {}",
                        words::excerpt(shown),
                        path.display()
                    ),
                );
            }
        }
    }

    /// Peels wrappers off an argv, follows scripts handed to shells, and applies the rules.
    pub(crate) fn check_argv(
        &mut self,
        argv: &[Word],
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) {
        // Messages quote the command as written, wrappers included.
        let shown = words::display(argv);
        let weight = stdin.weight() + argv.iter().map(Word::weight).sum::<usize>();
        if self.too_deep(&shown, depth) || !self.spend_bytes(weight) {
            return;
        }
        if self.expand_alias(argv, stdin, scope, depth) {
            return;
        }
        let mut argv: Vec<Word> = argv.to_vec();
        let mut stdin = stdin.clone();
        let mut i = 0;
        let mut cwd = scope.cwd.clone();
        for _ in 0..MAX_WRAPPERS {
            let Some(word) = argv.get(i) else { return };
            if let Some(lit) = word.lit()
                && is_glob(&lit, &word.raw)
            {
                self.report_dynamic_command(word, scope, "is a glob the shell expands");
                return;
            }
            let Some(lit) = word.lit() else {
                // A command word with several static values (`for c in rm; do $c …`): try each.
                let values = word.literals();
                if values.len() != word.cands.len() {
                    self.report_dynamic_command(word, scope, "is only known at run time");
                }
                if values.len() > 1 {
                    for value in values {
                        let mut variant = argv[i..].to_vec();
                        variant[0] = Word {
                            raw: word.raw.clone(),
                            cands: vec![Resolved::text(&value)],
                        };
                        self.check_argv(&variant, &stdin, scope, depth);
                    }
                }
                return;
            };
            let name = basename(&lit).to_owned();
            if i == 0 && scope.functions.contains_key(&name) {
                self.call_function(&name, &argv[1..], scope, depth);
            }
            match self.unwrap_one(&name, &argv, i, &stdin, &mut cwd) {
                Next::Wrapped(next) => {
                    if name == "xargs" {
                        let arg_file = argv[i + 1..next.min(argv.len())].iter().any(|w| {
                            w.lit().is_some_and(|a| {
                                a.starts_with("--arg-file")
                                    || (!a.starts_with("--")
                                        && a.starts_with('-')
                                        && a.trim_start_matches(['-', '0', 'r', 't', 'x', 'p'])
                                            .starts_with('a'))
                            })
                        });
                        let command = argv.get(next..).unwrap_or_default();
                        let (built, items) = xargs_argv(command, &stdin, arg_file);
                        if stdin.listed_trees {
                            self.rule_listed_delete(&shown, command, &items, scope);
                        }
                        argv = built;
                        stdin = Stdin::default();
                        i = 0;
                    } else {
                        i = next;
                    }
                }
                Next::Script(scripts, positional) => {
                    self.check_dynamic_code(&name, &shown, &scripts, &stdin);
                    for script in scripts.iter().take(MAX_SCRIPT_CANDIDATES) {
                        let mut inner = scope.child(cwd.clone());
                        for (n, value) in positional.iter().enumerate() {
                            inner.vars.insert(n.to_string(), value.cands.clone());
                        }
                        inner.positional = positional.get(1..).map(<[Word]>::to_vec);
                        self.analyse_script(script, &mut inner, depth + 1);
                    }
                    return;
                }
                Next::Stop => return,
                Next::RunsFile(at) => {
                    let args = argv.get(at + 1..).unwrap_or_default();
                    self.run_written(&shown, &argv[at], args, Runner::Shell, scope, depth);
                    return;
                }
                Next::Argvs(argvs) => {
                    for inner in argvs {
                        self.check_argv(&inner, &Stdin::default(), scope, depth + 1);
                    }
                    return;
                }
                Next::Command => {
                    if name == "eval" {
                        let script = join_rendered(&argv[i + 1..]);
                        self.check_dynamic_code(
                            &name,
                            &shown,
                            std::slice::from_ref(&script),
                            &stdin,
                        );
                        self.analyse_script(&script, scope, depth + 1);
                        return;
                    }
                    let saved = std::mem::replace(&mut scope.cwd, cwd);
                    if lit.contains('/') {
                        // `./x.sh`: a file run by path may be one the step wrote.
                        let args = argv.get(i + 1..).unwrap_or_default();
                        self.run_written(&shown, &argv[i], args, Runner::Executed, scope, depth);
                    }
                    self.apply_rules(&name, &shown, &argv[i..], &stdin, scope, depth);
                    // `cd` inside the rules updated scope.cwd; a wrapper's own chdir did not
                    // outlive the command.
                    if !matches!(name.as_str(), "cd" | "pushd" | "popd") {
                        scope.cwd = saved;
                    }
                    return;
                }
            }
        }
    }

    /// Reports a command name that the analysis cannot know (unless it is the positional
    /// parameters of a function checked as written: each call is checked with them bound).
    fn report_dynamic_command(&mut self, word: &Word, scope: &Scope, what: &str) {
        if scope.defining
            && word
                .raw
                .contains(['@', '*', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
        {
            return;
        }
        self.report(
            Rule::DynamicCommand,
            format!(
                "the command name `{}` {what}, so what runs cannot be shown to be safe",
                words::excerpt(&word.raw)
            ),
        );
    }

    /// Code handed to a shell or `eval` that holds a part only known at run time, or a shell
    /// reading standard input we cannot see.
    fn check_dynamic_code(&mut self, name: &str, shown: &str, scripts: &[String], stdin: &Stdin) {
        let reads_unknown_stdin = stdin.unknown && scripts.iter().any(|s| s == UNKNOWN_TEXT);
        let unknown_text = scripts.iter().any(|s| s.contains(UNKNOWN_MARKER));
        if unknown_text || reads_unknown_stdin {
            let source = if reads_unknown_stdin {
                "reads code from standard input that is only known at run time"
            } else {
                "runs code that is only known at run time"
            };
            self.report(
                Rule::DynamicCode,
                format!("`{shown}` ({name}) {source}, so it cannot be shown to be safe"),
            );
        }
    }

    /// Decides what the word at `argv[i]` does when it is a wrapper or a script runner.
    fn unwrap_one(
        &mut self,
        name: &str,
        argv: &[Word],
        i: usize,
        stdin: &Stdin,
        cwd: &mut Option<AbsPath>,
    ) -> Next {
        let rest = &argv[i..];
        match name {
            "sudo" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "CDghpRrTtUu",
                        short_optional: "",
                        long_values: &[
                            "--close-from",
                            "--chdir",
                            "--group",
                            "--host",
                            "--prompt",
                            "--chroot",
                            "--role",
                            "--command-timeout",
                            "--type",
                            "--other-user",
                            "--user",
                        ],
                    },
                );
                // Editing files or listing privileges runs nothing.
                if o.has(&["-e", "--edit", "-l", "--list"]) {
                    return Next::Stop;
                }
                *cwd = chdir(cwd.as_ref(), &o, &["-D", "--chdir"]);
                let next = skip_assignments(argv, o.next);
                if o.has(&["-s", "--shell", "-i", "--login"]) {
                    // With a command, sudo hands it to the shell as one string; without, the
                    // shell reads commands from stdin.
                    let scripts = match argv.get(next..) {
                        Some(rest) if !rest.is_empty() => vec![join_rendered(rest)],
                        _ => stdin.texts.clone(),
                    };
                    return Next::Script(scripts, Vec::new());
                }
                Next::Wrapped(next)
            }
            "doas" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "uC",
                        short_optional: "",
                        long_values: &[],
                    },
                );
                Next::Wrapped(o.next)
            }
            "env" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "uCS",
                        short_optional: "",
                        long_values: &["--unset", "--chdir", "--split-string"],
                    },
                );
                *cwd = chdir(cwd.as_ref(), &o, &["-C", "--chdir"]);
                let next = skip_assignments(argv, o.next);
                if let Some(split) = o.value(&["-S", "--split-string"]) {
                    // `env -S 'rm -rf' /`: the string is split shell-like and prefixed to the
                    // remaining operands.
                    let mut script = split.to_owned();
                    if next < argv.len() {
                        script.push(' ');
                        script.push_str(&join_rendered(&argv[next..]));
                    }
                    return Next::Script(vec![script], Vec::new());
                }
                Next::Wrapped(next)
            }
            "nohup" | "builtin" | "setsid" | "unbuffer" | "catchsegv" | "stdbuf" | "ionice"
            | "chrt" | "nice" | "time" | "exec" | "command" | "taskset" | "numactl" => {
                Self::unwrap_simple(name, argv, i)
            }
            "timeout" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "sk",
                        short_optional: "",
                        long_values: &["--signal", "--kill-after"],
                    },
                );
                // The first operand is the duration.
                Next::Wrapped(o.next + 1)
            }
            "chroot" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "",
                        short_optional: "",
                        long_values: &["--userspec", "--groups"],
                    },
                );
                *cwd = Some(AbsPath::root());
                if o.next + 1 >= argv.len() {
                    return Next::Stop;
                }
                Next::Wrapped(o.next + 1)
            }
            "busybox" | "toybox" => Next::Wrapped(i + 1),
            "unshare" | "nsenter" | "strace" | "ltrace" | "systemd-run" | "prlimit"
            | "fakeroot" | "pkexec" | "cgexec" | "sshpass" | "firejail" | "eatmydata"
            | "chronic" | "proxychains" | "proxychains4" | "torsocks" | "faketime" => {
                wrapper_with_options(name, argv, i, stdin)
            }
            "script" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "cEOIBTm",
                        short_optional: "t",
                        long_values: &[
                            "--command",
                            "--echo",
                            "--log-out",
                            "--log-in",
                            "--log-io",
                            "--log-timing",
                            "--logging-format",
                        ],
                    },
                );
                match o.value(&["-c", "--command"]) {
                    Some(script) => Next::Script(vec![script.to_owned()], Vec::new()),
                    // Without -c, script starts an interactive shell reading standard input.
                    None => Next::Script(stdin_scripts(stdin), Vec::new()),
                }
            }
            "tmux" => tmux(argv, i),
            "screen" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "ScehpstT",
                        short_optional: "",
                        long_values: &[],
                    },
                );
                if o.has(&["-X"]) {
                    // `screen -X stuff TEXT` types TEXT into the session's shell.
                    let rest = argv.get(o.next..).unwrap_or_default();
                    if rest.first().and_then(Word::lit).as_deref() == Some("stuff") {
                        let text = rest.get(1..).map(join_rendered).unwrap_or_default();
                        return Next::Script(vec![words::decode_ansi_c(&text)], Vec::new());
                    }
                    return Next::Stop;
                }
                if o.next < argv.len() {
                    Next::Wrapped(o.next)
                } else {
                    Next::Stop
                }
            }
            "at" | "batch" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "qft",
                        short_optional: "",
                        long_values: &[],
                    },
                );
                // Listing, removing or showing jobs runs nothing; `-f FILE` is a file we cannot
                // see (as `bash script.sh`). Otherwise the job is read from standard input.
                if o.has(&["-l", "-r", "-d", "-c", "-f"]) {
                    return Next::Stop;
                }
                Next::Script(stdin_scripts(stdin), Vec::new())
            }
            "sg" => {
                // sg GROUP [-c] COMMAND: the command goes to /bin/sh -c.
                let mut j = i + 2;
                if argv.get(j).and_then(Word::lit).as_deref() == Some("-c") {
                    j += 1;
                }
                match argv.get(j..) {
                    Some(rest) if !rest.is_empty() => {
                        Next::Script(vec![join_rendered(rest)], Vec::new())
                    }
                    _ => Next::Script(stdin_scripts(stdin), Vec::new()),
                }
            }
            "parallel" => parallel(argv, i, stdin),
            "k3s" | "microk8s" => {
                if rest.get(1).and_then(Word::lit).as_deref() == Some("kubectl") {
                    Next::Wrapped(i + 1)
                } else {
                    Next::Command
                }
            }
            "xargs" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "adEILnPs",
                        short_optional: "",
                        long_values: &[
                            "--arg-file",
                            "--delimiter",
                            "--max-args",
                            "--max-procs",
                            "--max-chars",
                            "--process-slot-var",
                        ],
                    },
                );
                Next::Wrapped(o.next)
            }
            "su" | "runuser" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "cCsgGuw",
                        short_optional: "",
                        long_values: &[
                            "--command",
                            "--session-command",
                            "--shell",
                            "--group",
                            "--supp-group",
                            "--user",
                            "--whitelist-environment",
                        ],
                    },
                );
                if let Some(script) = o.value(&["-c", "--command", "-C", "--session-command"]) {
                    return Next::Script(vec![script.to_owned()], Vec::new());
                }
                if name == "runuser" && o.has(&["-u", "--user"]) {
                    return Next::Wrapped(o.next);
                }
                // `su user` alone opens an interactive shell reading stdin.
                Next::Script(stdin_scripts(stdin), Vec::new())
            }
            "watch" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "nq",
                        short_optional: "d",
                        long_values: &["--interval"],
                    },
                );
                Next::Script(
                    vec![join_rendered(&argv[o.next.min(argv.len())..])],
                    Vec::new(),
                )
            }
            "flock" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "wEc",
                        short_optional: "",
                        long_values: &["--timeout", "--conflict-exit-code", "--command"],
                    },
                );
                if let Some(script) = o.value(&["-c", "--command"]) {
                    return Next::Script(vec![script.to_owned()], Vec::new());
                }
                // flock LOCKFILE [-c CMD | CMD ARGS…]
                let after = parse_opts(
                    argv,
                    o.next + 1,
                    &OptSpec {
                        short_values: "wEc",
                        short_optional: "",
                        long_values: &["--timeout", "--conflict-exit-code", "--command"],
                    },
                );
                if let Some(script) = after.value(&["-c", "--command"]) {
                    return Next::Script(vec![script.to_owned()], Vec::new());
                }
                Next::Wrapped(after.next)
            }
            "ssh" => {
                let o = parse_opts(
                    argv,
                    i + 1,
                    &OptSpec {
                        short_values: "BbcDEeFIiJLlmOoPpQRSWw",
                        short_optional: "",
                        long_values: &[],
                    },
                );
                // ssh HOST COMMAND…: the remote shell runs the joined command.
                if o.next + 1 < argv.len() {
                    return Next::Script(vec![join_rendered(&argv[o.next + 1..])], Vec::new());
                }
                Next::Stop
            }
            "docker" | "podman" | "nerdctl" => container_exec(argv, i),
            "kubectl" | "oc" => {
                // kubectl exec POD -- CMD…
                let is_exec = argv
                    .iter()
                    .skip(i + 1)
                    .find_map(|w| w.lit().filter(|a| !a.starts_with('-')).map(|a| a == "exec"));
                match argv
                    .iter()
                    .skip(i)
                    .position(|w| w.lit().as_deref() == Some("--"))
                {
                    Some(p) if is_exec == Some(true) => Next::Wrapped(i + p + 1),
                    _ => Next::Command,
                }
            }
            n if is_shell(n) => shell_invocation(argv, i, stdin),
            _ => Next::Command,
        }
    }

    /// Wrappers that only take options (and maybe a fixed operand) before the command.
    fn unwrap_simple(name: &str, argv: &[Word], i: usize) -> Next {
        let spec = match name {
            "nice" => OptSpec {
                short_values: "n",
                short_optional: "",
                long_values: &["--adjustment"],
            },
            "time" => OptSpec {
                short_values: "fo",
                short_optional: "",
                long_values: &["--format", "--output"],
            },
            "exec" => OptSpec {
                short_values: "a",
                short_optional: "",
                long_values: &[],
            },
            "stdbuf" => OptSpec {
                short_values: "ioe",
                short_optional: "",
                long_values: &["--input", "--output", "--error"],
            },
            "ionice" => OptSpec {
                short_values: "cnpPu",
                short_optional: "",
                long_values: &["--class", "--classdata", "--pid", "--pgid", "--uid"],
            },
            "taskset" => OptSpec {
                short_values: "",
                short_optional: "",
                long_values: &[],
            },
            "numactl" => OptSpec {
                short_values: "CNmpil",
                short_optional: "",
                long_values: &[],
            },
            _ => OptSpec {
                short_values: "",
                short_optional: "",
                long_values: &[],
            },
        };
        let o = parse_opts(argv, i + 1, &spec);
        if name == "command" && o.has(&["-v", "-V"]) {
            return Next::Stop;
        }
        if name == "taskset" && o.has(&["-p", "--pid"]) {
            return Next::Stop;
        }
        // taskset MASK CMD and chrt PRIO CMD take one operand before the command.
        let fixed = usize::from(matches!(name, "taskset" | "chrt"));
        Next::Wrapped(o.next + fixed)
    }

    /// Re-checks a function body with its positional parameters bound to the call's arguments,
    /// so `nuke() { rm -rf "$1"; }; nuke /` is seen.
    fn call_function(&mut self, name: &str, args: &[Word], scope: &Scope, depth: usize) {
        if scope.call_depth >= MAX_CALL_DEPTH {
            return;
        }
        let Some(body) = scope.functions.get(name).cloned() else {
            return;
        };
        let mut inner = self.fork(scope);
        inner.call_depth += 1;
        for n in 1..10 {
            inner.vars.remove(&n.to_string());
        }
        for (n, arg) in args.iter().enumerate() {
            inner.vars.insert((n + 1).to_string(), arg.cands.clone());
        }
        inner.positional = Some(args.to_vec());
        self.walk_function_body(&body, &mut inner, depth);
    }
}

/// `docker exec CONTAINER CMD…`, `docker compose exec SERVICE CMD…`, `docker run IMAGE CMD…`:
/// the options before the command vary too much to parse, so we look for the first word that is
/// a database client or a shell, the commands whose effect reaches beyond the container.
fn container_exec(argv: &[Word], i: usize) -> Next {
    let runs = argv.iter().skip(i + 1).take(3).any(|w| {
        w.lit()
            .is_some_and(|a| matches!(a.as_str(), "exec" | "run"))
    });
    if !runs {
        return Next::Command;
    }
    let inner = argv.iter().enumerate().skip(i + 2).find(|(_, w)| {
        w.lit().is_some_and(|a| {
            let name = basename(&a);
            super::sql::is_sql_client(name)
                || super::sql::is_mongo_client(name)
                || is_shell(name)
                || matches!(name, "dropdb" | "mysqladmin" | "redis-cli")
        })
    });
    match inner {
        Some((j, _)) => Next::Wrapped(j),
        None => Next::Stop,
    }
}

/// A shell command line: `-c STRING [ARG0 ARGS…]`, a script file, or commands from stdin.
fn shell_invocation(argv: &[Word], i: usize, stdin: &Stdin) -> Next {
    let mut command_mode = false;
    let mut j = i + 1;
    while let Some(word) = argv.get(j) {
        let Some(arg) = word.lit() else { break };
        if arg == "--" || arg == "-" {
            j += 1;
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            j += if matches!(long, "rcfile" | "init-file") {
                2
            } else {
                1
            };
            continue;
        }
        if (arg.starts_with('-') || arg.starts_with('+')) && arg.len() > 1 {
            let mut takes_value = false;
            for c in arg.chars().skip(1) {
                match c {
                    'c' => command_mode = true,
                    'o' | 'O' => takes_value = true,
                    _ => {}
                }
            }
            j += if takes_value { 2 } else { 1 };
            continue;
        }
        break;
    }
    if command_mode {
        let Some(script) = argv.get(j) else {
            return Next::Stop;
        };
        let scripts = script.cands.iter().map(Resolved::render).collect();
        return Next::Script(scripts, argv[(j + 1).min(argv.len())..].to_vec());
    }
    if j < argv.len() {
        // `bash script.sh`: a file we cannot see, unless the step wrote it.
        return Next::RunsFile(j);
    }
    Next::Script(stdin_scripts(stdin), Vec::new())
}

/// New working directory after a wrapper's `-C DIR`/`-D DIR` (`env -C`, `sudo -D`): the
/// directory resolved against `cwd`, or one only known at run time when the option's value is.
fn chdir(cwd: Option<&AbsPath>, opts: &Opts, names: &[&str]) -> Option<AbsPath> {
    if !opts.has(names) {
        return cwd.cloned();
    }
    Some(match opts.value(names) {
        Some(dir) => paths::resolve(cwd, dir),
        None => AbsPath::run_time(),
    })
}

/// `xargs CMD ARGS` run on its input is `CMD ARGS ITEMS…`: the static items, and an unknown
/// one when some input is only known at run time (`cat list | xargs rm -rf`, `xargs -a FILE`).
/// Returns the argv and the items.
fn xargs_argv(command: &[Word], stdin: &Stdin, arg_file: bool) -> (Vec<Word>, Vec<Word>) {
    let mut argv: Vec<Word> = if command.is_empty() {
        vec![Word::literal("echo")]
    } else {
        command.to_vec()
    };
    let mut items: Vec<Word> = input_items(stdin);
    if arg_file {
        items.push(Word {
            raw: "(the items of the -a file)".into(),
            cands: vec![Resolved::unknown(false)],
        });
    }
    argv.extend(items.iter().cloned());
    (argv, items)
}

/// The items a command reading a list on standard input sees: whitespace- or NUL-separated
/// static words, then one unknown item when some of the input is only known at run time.
fn input_items(stdin: &Stdin) -> Vec<Word> {
    let mut items: Vec<Word> = stdin
        .texts
        .iter()
        .flat_map(|t| t.split(|c: char| c.is_whitespace() || c == '\0'))
        .filter(|item| !item.is_empty())
        .take(MAX_XARGS_ITEMS)
        .map(Word::argv_literal)
        .collect();
    if stdin.unknown {
        let origin = stdin.origin.as_deref().unwrap_or("standard input");
        items.push(Word {
            raw: format!("$({origin})"),
            cands: vec![Resolved::unknown(false)],
        });
    }
    items
}

/// What a pipeline stage writes to stdout, when it is static enough to matter: the text of
/// `echo`/`printf` (escapes decoded, as `/bin/sh`'s `echo` does), here-documents passed through
/// `cat`, and the start paths of `find` (which `find` prints first).
fn producer_text(cmd: &SimpleCmd) -> Vec<String> {
    let Some(first) = cmd.words.first().and_then(Word::lit) else {
        return Vec::new();
    };
    let args = &cmd.words[1..];
    let name = basename(&first);
    match name {
        "echo" | "printf" => {
            let shown: Vec<&Word> = args
                .iter()
                .skip_while(|w| {
                    name == "echo"
                        && w.lit().is_some_and(|a| {
                            a.len() > 1
                                && a.starts_with('-')
                                && a.chars().skip(1).all(|c| "neE".contains(c))
                        })
                })
                .collect();
            match join_bounded(shown.into_iter(), " ") {
                Some(text) => vec![words::decode_ansi_c(&text)],
                None => vec![UNKNOWN_TEXT.to_owned()],
            }
        }
        "cat" => cmd
            .redirects
            .iter()
            .filter_map(|r| match r {
                Redirect::InputText(t) => Some(t.clone()),
                Redirect::Write { .. } | Redirect::InputUnknown => None,
            })
            .collect(),
        "find" => {
            let starts = args.iter().take_while(|w| {
                w.lit()
                    .is_none_or(|a| !a.starts_with('-') && a != "(" && a != "!")
            });
            vec![join_bounded(starts, "\n").unwrap_or_else(|| UNKNOWN_TEXT.to_owned())]
        }
        _ => Vec::new(),
    }
}

/// The text a redirection `op` writes to its file: what `echo`/`printf`/`cat <<EOF` print
/// (`echo` ends it with a newline), when it goes to standard output; None when unknown.
fn written_text(cmd: &SimpleCmd, op: &str) -> Option<String> {
    if op.starts_with(|c: char| c.is_ascii_digit() && c != '1') {
        return None;
    }
    let produced = producer_text(cmd);
    if produced.is_empty() || produced.iter().any(|t| t.contains(UNKNOWN_MARKER)) {
        return None;
    }
    let echo = cmd
        .words
        .first()
        .and_then(Word::lit)
        .is_some_and(|w| basename(&w) == "echo");
    let mut text = produced.concat();
    if echo {
        text.push('\n');
    }
    Some(text)
}

/// The scripts a shell reading standard input runs: the static texts, plus an unknown one when
/// some of the input is only known at run time.
fn stdin_scripts(stdin: &Stdin) -> Vec<String> {
    let mut scripts = stdin.texts.clone();
    if stdin.unknown {
        scripts.push(UNKNOWN_TEXT.to_owned());
    }
    scripts
}

/// Wrappers with their own options, then the command; without a command most run a shell that
/// reads standard input.
fn wrapper_with_options(name: &str, argv: &[Word], i: usize, stdin: &Stdin) -> Next {
    let spec = match name {
        "unshare" => OptSpec {
            short_values: "RwSG",
            short_optional: "",
            long_values: &[
                "--setuid",
                "--setgid",
                "--root",
                "--wd",
                "--propagation",
                "--setgroups",
                "--map-user",
                "--map-group",
                "--map-users",
                "--map-groups",
                "--load-interp",
            ],
        },
        "nsenter" => OptSpec {
            short_values: "tSG",
            short_optional: "muinpUCTrwW",
            long_values: &["--target", "--setuid", "--setgid"],
        },
        "strace" => OptSpec {
            short_values: "abeEIoOpPsSuUX",
            short_optional: "",
            long_values: &[
                "--output",
                "--expr",
                "--attach",
                "--user",
                "--string-limit",
                "--columns",
                "--env",
                "--trace",
                "--trace-path",
                "--signal",
                "--status",
                "--summary-sort-by",
                "--abbrev",
                "--verbose",
                "--raw",
                "--read",
                "--write",
                "--quiet",
                "--fault",
                "--inject",
            ],
        },
        "ltrace" => OptSpec {
            short_values: "aADeFlnopsuwx",
            short_optional: "",
            long_values: &["--output", "--library", "--config", "--align", "--indent"],
        },
        "systemd-run" => OptSpec {
            short_values: "puEMH",
            short_optional: "",
            long_values: &[
                "--property",
                "--unit",
                "--description",
                "--slice",
                "--setenv",
                "--machine",
                "--host",
                "--uid",
                "--gid",
                "--nice",
                "--working-directory",
                "--on-active",
                "--on-boot",
                "--on-startup",
                "--on-unit-active",
                "--on-unit-inactive",
                "--on-calendar",
                "--timer-property",
                "--path-property",
                "--socket-property",
                "--service-type",
            ],
        },
        "prlimit" => OptSpec {
            short_values: "op",
            short_optional: "cdefilmnqrstuvxy",
            long_values: &["--pid", "--output"],
        },
        "fakeroot" => OptSpec {
            short_values: "lsib",
            short_optional: "",
            long_values: &["--lib", "--faked"],
        },
        "pkexec" => OptSpec {
            short_values: "",
            short_optional: "",
            long_values: &["--user"],
        },
        "cgexec" => OptSpec {
            short_values: "g",
            short_optional: "",
            long_values: &[],
        },
        "sshpass" => OptSpec {
            short_values: "pfdP",
            short_optional: "",
            long_values: &[],
        },
        "proxychains" | "proxychains4" => OptSpec {
            short_values: "f",
            short_optional: "",
            long_values: &[],
        },
        _ => OptSpec::FLAGS,
    };
    let o = parse_opts(argv, i + 1, &spec);
    // Attaching to running processes runs no command of ours.
    if matches!(name, "strace" | "ltrace" | "prlimit") && o.has(&["-p", "--pid", "--attach"]) {
        return Next::Stop;
    }
    // faketime TIMESTAMP CMD takes one operand first.
    let next = o.next + usize::from(name == "faketime");
    if next < argv.len() {
        return Next::Wrapped(next);
    }
    if matches!(
        name,
        "unshare" | "nsenter" | "fakeroot" | "pkexec" | "systemd-run"
    ) {
        return Next::Script(stdin_scripts(stdin), Vec::new());
    }
    Next::Stop
}

/// `tmux [opts] new-session -d -s NAME CMD \; send-keys 'rm -rf /' Enter …`: the shell
/// commands that new sessions, windows and panes run, `run-shell` commands, and the text
/// typed by `send-keys`.
fn tmux(argv: &[Word], i: usize) -> Next {
    let o = parse_opts(
        argv,
        i + 1,
        &OptSpec {
            short_values: "cfLST",
            short_optional: "",
            long_values: &[],
        },
    );
    let mut scripts = Vec::new();
    if let Some(command) = o.value(&["-c"]) {
        scripts.push(command.to_owned());
    }
    let rest = argv.get(o.next..).unwrap_or_default();
    for sub in rest.split(|w| w.lit().is_some_and(|a| a == ";" || a == "\\;")) {
        let Some(command) = sub.first().and_then(Word::lit) else {
            continue;
        };
        let spec = |short_values: &'static str| OptSpec {
            short_values,
            short_optional: "",
            long_values: &[],
        };
        match command.as_str() {
            "new-session" | "new" | "new-window" | "neww" | "split-window" | "splitw"
            | "respawn-pane" | "respawnp" | "respawn-window" | "respawnw" => {
                let so = parse_opts(sub, 1, &spec("cefFlnstxy"));
                if so.next < sub.len() {
                    scripts.push(join_rendered(&sub[so.next..]));
                }
            }
            "run-shell" | "run" | "if-shell" | "if" | "pipe-pane" | "pipep" | "display-popup"
            | "popup" => {
                let so = parse_opts(sub, 1, &spec("cdehsStTwxy"));
                if let Some(shell) = sub.get(so.next) {
                    scripts.push(
                        shell
                            .cands
                            .first()
                            .map(Resolved::render)
                            .unwrap_or_default(),
                    );
                }
            }
            "send-keys" | "send" => {
                let so = parse_opts(sub, 1, &spec("Nt"));
                let mut typed = String::new();
                for key in sub.get(so.next..).unwrap_or_default() {
                    match key.lit().as_deref() {
                        Some("Enter" | "C-m" | "C-j" | "KPEnter") => typed.push('\n'),
                        Some("Space") => typed.push(' '),
                        _ => typed
                            .push_str(&key.cands.first().map(Resolved::render).unwrap_or_default()),
                    }
                }
                scripts.push(typed);
            }
            _ => {}
        }
    }
    if scripts.is_empty() {
        Next::Stop
    } else {
        Next::Script(scripts, Vec::new())
    }
}

/// Most input items of `parallel` we build commands for.
const MAX_PARALLEL_ITEMS: usize = 8;

/// GNU `parallel CMD ::: A B` runs `CMD A`, `CMD B` (items after `:::`, from `::::` files, or
/// from standard input); `{}` in CMD stands for the item. A CMD of one word with blanks is a
/// shell command line.
fn parallel(argv: &[Word], i: usize, stdin: &Stdin) -> Next {
    let o = parse_opts(
        argv,
        i + 1,
        &OptSpec {
            short_values: "aCdEIjLnNPSs",
            short_optional: "l",
            long_values: &[
                "--jobs",
                "--max-procs",
                "--arg-file",
                "--colsep",
                "--delimiter",
                "--sshlogin",
                "--joblog",
                "--results",
                "--res",
                "--tmpdir",
                "--workdir",
                "--wd",
                "--timeout",
                "--delay",
                "--halt",
                "--retries",
                "--env",
                "--tagstring",
                "--max-args",
                "--replace",
                "--basefile",
                "--return",
                "--memfree",
                "--load",
                "--nice",
                "--block",
                "--sshloginfile",
                "--slf",
            ],
        },
    );
    if o.has(&["--dry-run", "--dryrun"]) {
        return Next::Stop;
    }
    let rest = argv.get(o.next..).unwrap_or_default();
    let is_sep = |w: &Word| {
        w.lit()
            .is_some_and(|a| matches!(a.as_str(), ":::" | ":::+" | "::::" | "::::+"))
    };
    let command_len = rest.iter().position(is_sep).unwrap_or(rest.len());
    let command = &rest[..command_len];
    let mut items: Vec<Word> = Vec::new();
    let mut from_file = o.has(&["-a", "--arg-file"]);
    let mut current_is_file = false;
    for word in &rest[command_len..] {
        if is_sep(word) {
            current_is_file = word.lit().is_some_and(|a| a.starts_with("::::"));
            from_file |= current_is_file;
            continue;
        }
        if !current_is_file {
            items.push(word.clone());
        }
    }
    if command_len == rest.len() && !from_file {
        items = input_items(stdin);
    }
    if from_file {
        items.push(Word {
            raw: "(the items of an argument file)".into(),
            cands: vec![Resolved::unknown(false)],
        });
    }
    items.truncate(MAX_PARALLEL_ITEMS);
    let one_line = command.len() == 1
        && command[0]
            .lit()
            .is_some_and(|c| c.contains(char::is_whitespace));
    if command.is_empty() || one_line {
        // The items themselves are commands, or the command is a shell line.
        let line = command.first().and_then(Word::lit).unwrap_or_default();
        let scripts: Vec<String> = if items.is_empty() {
            vec![line]
        } else {
            items
                .iter()
                .map(|item| {
                    let value = item.cands.first().map(Resolved::render).unwrap_or_default();
                    if line.is_empty() {
                        value
                    } else if line.contains("{}") {
                        line.replace("{}", &value)
                    } else {
                        format!("{line} {value}")
                    }
                })
                .collect()
        };
        return Next::Script(scripts, Vec::new());
    }
    if items.is_empty() {
        return Next::Argvs(vec![command.to_vec()]);
    }
    let argvs = items
        .iter()
        .map(|item| {
            let mut built: Vec<Word> = Vec::new();
            let mut replaced = false;
            for word in command {
                if word
                    .lit()
                    .is_some_and(|a| a.contains("{}") || a.contains("{.}"))
                {
                    built.push(item.clone());
                    replaced = true;
                } else {
                    built.push(word.clone());
                }
            }
            if !replaced {
                built.push(item.clone());
            }
            built
        })
        .collect();
    Next::Argvs(argvs)
}
