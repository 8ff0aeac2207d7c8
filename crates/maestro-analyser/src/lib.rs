//! The `no-destruction` analyser: finds destructive or opaque commands in shell strings and argv
//! lists.
//!
//! # Brief overview
//!
//! * [`analyse_shell`] reads a step's `run` string as `/bin/sh -c` would; [`analyse_argv`] reads a
//!   step's `command` argv, executed without a shell. Both take the environment the step is known
//!   to receive, whose values count as known.
//! * Each returns [`Finding`]s: a [`Rule`] and a reason quoting the command. A rule's [`Kind`]
//!   says whether the command is shown to destroy something ([`Kind::Destructive`]) or cannot be
//!   proven harmless ([`Kind::Opaque`]).
//!
//! # How
//!
//! A script is parsed with `brush-parser` (a real bash parser) and its syntax tree is
//! walked: lists, pipelines, subshells, brace groups, `if`/`while`/`until`/`for`/`case` bodies,
//! function bodies, command and process substitutions, here-documents. Every simple command is
//! reduced to its effective argv (wrappers such as `sudo`, `env`, `nohup`, `timeout` or
//! `busybox` are peeled off, `/usr/bin/rm` becomes `rm`) and handed to the rules in `rules`.
//! Strings that are themselves scripts (`sh -c STRING`, `eval ARGS`, `su -c`, text piped into a
//! shell) are analysed recursively, up to `MAX_DEPTH` levels. A command that starts with an
//! alias is analysed as its expansion (`aliases`); files the script writes are remembered, so
//! that running one is seen to run code made at run time (`written`); commands that delete
//! trees on the side (`rsync --delete`, `tar --remove-files`, `git clean`) are in `trees`.
//! Relative paths are resolved against the working directory the script's `cd`s leave, a climb
//! out of the step's own directory counting as reaching `/` (`paths`).
//!
//! # Failure policy
//!
//! The analysis is a deny-list, so the one thing it must never do is wave a script through because
//! it could not read it:
//!
//! * When `brush-parser` rejects a script (a syntax error, or bash syntax it does not support) the
//!   script goes to `fallback`, a conservative tokenizer that splits it into commands at every
//!   unquoted operator and runs the same rules. It errs toward finding more, never less.
//! * When even that cannot make sense of the script (an unterminated quote or substitution) the
//!   result carries an `unparseable` finding; when the script is larger than
//!   `MAX_SCRIPT_BYTES`, or the analysis would cost more than its work budget, a `too-complex`
//!   one: we cannot prove the script safe, so the policy denies it. Findings made before the
//!   breakage are kept.
//! * Nesting deeper than `MAX_DEPTH` (`sh -c` inside `bash -c` inside `eval` …) yields
//!   `too-deeply-nested`.
//!
//! `brush-parser` recurses once per nesting level and overflows a 2 MiB stack after a few hundred
//! levels, which would abort the whole process rather than panic. The analysis therefore runs on a
//! dedicated thread with a large stack, and scripts with more than `MAX_OPENERS` nesting
//! openers never reach the parser (they go to the iterative fallback instead). A panic in the
//! analysis becomes an `analysis-failed` finding.
//!
//! The rule list, with the spellings each rule understands and the choices made, is in the
//! `no-destruction` section of `docs/policies.md`.

#![deny(missing_docs)]

mod aliases;
mod commands;
mod devices;
mod fallback;
mod interpreters;
mod paths;
mod remote;
mod rule;
mod rules;
mod sql;
mod trees;
mod walk;
mod words;
mod written;

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod evasions_tests;
#[cfg(test)]
mod families_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

pub use rule::{Kind, Rule};
use words::Resolved;

/// One destructive or opaque construct found in a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule that matched; `rule.id()` is its stable identifier, e.g. `"rm-root"`.
    pub rule: Rule,
    /// Human-readable explanation naming the offending command, e.g.
    /// "`rm -rf /` deletes the root filesystem".
    pub reason: String,
}

/// Analyse a shell string as run by `/bin/sh -c` (a step's `run`).
///
/// `env` holds the variables the step is known to receive; their values are known to the
/// analysis (`rm -rf "$BUILD_DIR"/*` with `BUILD_DIR=build` is harmless).
///
/// Returns every destructive or opaque construct found, in source order, without duplicates. An
/// empty vector means nothing destructive was recognised and nothing was beyond the analysis.
/// Scripts that cannot be analysed produce an [`Kind::Opaque`] finding rather than an empty
/// result.
#[must_use]
pub fn analyse_shell(script: &str, env: &BTreeMap<String, String>) -> Vec<Finding> {
    analyse_shell_by(script, env, std::time::Instant::now() + DEADLINE)
}

/// [`analyse_shell`] that gives up, as too complex, at `deadline` if that comes before its own
/// limit: a caller analysing many steps bounds them all together.
#[must_use]
pub fn analyse_shell_by(
    script: &str,
    env: &BTreeMap<String, String>,
    deadline: std::time::Instant,
) -> Vec<Finding> {
    if script.len() > MAX_SCRIPT_BYTES {
        return vec![too_large(script.len())];
    }
    let owned = script.to_owned();
    let env = env.clone();
    isolated(
        move |az| {
            let mut scope = Scope::with_env(&env);
            az.analyse_script(&owned, &mut scope, 0);
        },
        deadline,
    )
}

/// Analyse an argv list executed without a shell (a step's `command`).
///
/// Arguments are literal: no quote removal, globbing or parameter expansion happens. As a
/// deliberate exception, a target spelled `~`, `~/…`, `$HOME` or `${HOME}` still counts as the
/// home directory, and `/*` as everything under `/`: a file literally named like that is almost
/// certainly a mistake, and whatever runs the argv may expand it after all. Strings handed to a
/// shell (`["sh", "-c", STRING]`) are parsed as shell, seeing `env` as their environment.
#[must_use]
pub fn analyse_argv(argv: &[String], env: &BTreeMap<String, String>) -> Vec<Finding> {
    analyse_argv_by(argv, env, std::time::Instant::now() + DEADLINE)
}

/// [`analyse_argv`] that gives up, as too complex, at `deadline` if that comes before its own
/// limit.
#[must_use]
pub fn analyse_argv_by(
    argv: &[String],
    env: &BTreeMap<String, String>,
    deadline: std::time::Instant,
) -> Vec<Finding> {
    let total: usize = argv.iter().map(|a| a.len().saturating_add(1)).sum();
    if total > MAX_SCRIPT_BYTES {
        return vec![too_large(total)];
    }
    let owned = argv.to_vec();
    let env = env.clone();
    isolated(
        move |az| {
            let words: Vec<words::Word> =
                owned.iter().map(|a| words::Word::argv_literal(a)).collect();
            let mut scope = Scope::with_env(&env);
            az.check_argv(&words, &commands::Stdin::default(), &mut scope, 0);
        },
        deadline,
    )
}

/// Largest script (or argv, summed) we analyse. Job steps are short; anything beyond this is more
/// likely an attempt to exhaust the analyser than a real script, and is denied as too complex.
/// It also bounds the one step the deadline cannot interrupt, the parse.
pub(crate) const MAX_SCRIPT_BYTES: usize = 128 << 10;

/// How many levels of script-inside-script (`sh -c`, `eval`, `$(…)`, text piped to a shell) we
/// follow before giving up with `too-deeply-nested`.
pub(crate) const MAX_DEPTH: usize = 8;

/// Upper bound on nesting openers (`(`, `{`, backquotes, compound-command keywords) in a script
/// handed to `brush-parser`. Counting openers regardless of quoting over-approximates the real
/// nesting depth, which is what bounds the parser's recursion; scripts above it use the iterative
/// fallback tokenizer instead.
pub(crate) const MAX_OPENERS: usize = 1000;

/// Stack for the analysis thread. Measured: `brush-parser` in a debug build needs 20 to 40 KiB
/// per nesting level, so `MAX_OPENERS` levels plus `MAX_DEPTH` re-parses fit comfortably. The
/// memory is reserved, not committed, so the cost is address space only.
const ANALYSIS_STACK_BYTES: usize = 256 << 20;

/// Units of work (commands checked, parses, candidate expansions, and one unit per
/// [`BYTES_PER_UNIT`] bytes of state copied) one analysis may spend. It stops exponential blow-ups
/// such as a word with many candidate values fed to nested `sh -c`, and bounds the memory that
/// copies of the shell state can take.
const WORK_BUDGET: usize = 1_000_000;

/// How many bytes of copied state cost one unit of work: [`WORK_BUDGET`] units allow 64 MiB
/// of copies over a whole analysis, far more than any real script needs.
pub(crate) const BYTES_PER_UNIT: usize = 64;

/// Wall-clock time one analysis may take, parse included, before it gives up as too complex.
/// The parser cannot be interrupted, so this is checked between steps of the analysis; scripts
/// are bounded by `MAX_SCRIPT_BYTES` so that one parse stays well below it.
const DEADLINE: std::time::Duration = std::time::Duration::from_millis(750);

fn too_large(len: usize) -> Finding {
    Finding {
        rule: Rule::TooComplex,
        reason: format!(
            "the command is {len} bytes long, more than the {MAX_SCRIPT_BYTES} bytes the \
             no-destruction analysis reads, so it cannot be shown to be safe"
        ),
    }
}

/// What a bug in the analyser turns into: a denial, never an allowance.
fn analysis_failed() -> Finding {
    Finding {
        rule: Rule::AnalysisFailed,
        reason: "the no-destruction analysis failed on this command, so it cannot be shown to be \
                 safe"
            .into(),
    }
}

/// Runs one analysis on its own big-stack thread, so that neither deep recursion in the parser nor
/// a panic anywhere inside can take the caller down.
fn isolated<F>(work: F, deadline: std::time::Instant) -> Vec<Finding>
where
    F: Fn(&mut Analyzer) + Send + Sync + 'static,
{
    isolated_with(work, true, deadline)
}

/// [`analyse_shell`] without the panic safety net, so that a property test can see a panic.
#[cfg(test)]
pub(crate) fn analyse_shell_uncaught(script: &str) -> Vec<Finding> {
    let owned = script.to_owned();
    isolated_with(
        move |az| {
            let mut scope = Scope::default();
            az.analyse_script(&owned, &mut scope, 0);
        },
        false,
        std::time::Instant::now() + DEADLINE,
    )
}

/// [`analyse_argv`] without the panic safety net.
#[cfg(test)]
pub(crate) fn analyse_argv_uncaught(argv: &[String]) -> Vec<Finding> {
    let owned = argv.to_vec();
    isolated_with(
        move |az| {
            let words: Vec<words::Word> =
                owned.iter().map(|a| words::Word::argv_literal(a)).collect();
            let mut scope = Scope::default();
            az.check_argv(&words, &commands::Stdin::default(), &mut scope, 0);
        },
        false,
        std::time::Instant::now() + DEADLINE,
    )
}

/// [`isolated`], where `catch: false` re-raises a panic of the analysis in the caller instead
/// of turning it into an `analysis-failed` finding.
fn isolated_with<F>(work: F, catch: bool, deadline: std::time::Instant) -> Vec<Finding>
where
    F: Fn(&mut Analyzer) + Send + Sync + 'static,
{
    let work = std::sync::Arc::new(work);
    let in_thread = std::sync::Arc::clone(&work);
    let spawned = std::thread::Builder::new()
        .name("no-destruction".into())
        .stack_size(ANALYSIS_STACK_BYTES)
        .spawn(move || {
            let mut az = Analyzer::new(true, deadline);
            in_thread(&mut az);
            az.into_findings()
        });
    match spawned {
        Ok(handle) => match handle.join() {
            Ok(findings) => findings,
            Err(panic) if !catch => std::panic::resume_unwind(panic),
            Err(_) => vec![analysis_failed()],
        },
        Err(_) => {
            // No thread (resource limits): analyse on the caller's stack, but only with the
            // iterative fallback tokenizer, whose recursion is bounded by MAX_DEPTH alone.
            let run = || {
                let mut az = Analyzer::new(false, deadline);
                work(&mut az);
                az.into_findings()
            };
            if !catch {
                return run();
            }
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                .unwrap_or_else(|_| vec![analysis_failed()])
        }
    }
}

/// Shell state we track while walking a script, flow-insensitively and only as far as it is
/// static: literal variable assignments, `for` loop values, positional parameters of `sh -c`, and
/// the working directory after `cd`. Everything else is unknown.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    /// Known values of variables (by name; positional parameters as `"1"`, `"2"`, …).
    vars: HashMap<String, Vec<Resolved>>,
    /// The positional parameters as words, when known, for `"$@"` (`run() { "$@"; }`).
    positional: Option<Vec<words::Word>>,
    /// Working directory after `cd`; None is the step's starting directory.
    cwd: Option<paths::AbsPath>,
    /// The directory before the last `cd` (`cd -`); None is the starting directory.
    oldpwd: Option<paths::AbsPath>,
    /// Directories saved by `pushd`, for `popd`.
    dir_stack: Vec<Option<paths::AbsPath>>,
    /// Aliases defined so far (name to body values), expanded where a command starts.
    aliases: HashMap<String, Vec<String>>,
    /// Functions defined so far, so calls can be re-checked with their arguments bound.
    functions: HashMap<String, std::rc::Rc<brush_parser::ast::FunctionBody>>,
    /// How many function calls deep we are; bounded separately from `MAX_DEPTH` because
    /// recursive functions are normal and must not be reported.
    call_depth: usize,
    /// Whether a function body is being checked as written, with its arguments unknown.
    defining: bool,
    /// The environment the step is known to receive; nested shells inherit it.
    env: Rc<HashMap<String, String>>,
    /// Variables marked for export (`export X=…`, `export X`, `declare -x X`): shells the
    /// step starts (`sh -c …`, `sh x.sh`, `./x.sh`) see their values.
    exported: std::collections::BTreeSet<String>,
}

impl Scope {
    /// Roughly how many bytes a copy of this scope holds.
    pub(crate) fn weight(&self) -> usize {
        let vars: usize = self
            .vars
            .iter()
            .map(|(name, values)| name.len() + values.iter().map(Resolved::weight).sum::<usize>())
            .sum();
        let positional: usize = self
            .positional
            .iter()
            .flatten()
            .map(words::Word::weight)
            .sum();
        let aliases: usize = self
            .aliases
            .iter()
            .map(|(name, bodies)| name.len() + bodies.iter().map(String::len).sum::<usize>())
            .sum();
        let exported: usize = self.exported.iter().map(String::len).sum();
        vars + positional + aliases + exported + 64 * (self.functions.len() + self.dir_stack.len())
    }

    /// The scope a new shell started from this one begins with: the step's environment, the
    /// exported variables' known values and the working directory; positional parameters are
    /// bound by the caller.
    pub(crate) fn child(&self, cwd: Option<paths::AbsPath>) -> Self {
        let vars = self
            .exported
            .iter()
            .filter_map(|name| Some((name.clone(), self.vars.get(name)?.clone())))
            .collect();
        Self {
            vars,
            cwd,
            env: Rc::clone(&self.env),
            exported: self.exported.clone(),
            ..Self::default()
        }
    }

    fn with_env(env: &BTreeMap<String, String>) -> Self {
        Self {
            env: Rc::new(env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            ..Self::default()
        }
    }
}

/// Accumulates findings for one top-level analysis and enforces its limits.
pub(crate) struct Analyzer {
    findings: Vec<Finding>,
    budget: usize,
    budget_reported: bool,
    /// When the analysis must end, reported as too complex past it.
    deadline: std::time::Instant,
    /// Whether `brush-parser` may be used (false when running on a small borrowed stack).
    use_parser: bool,
    /// Plan files written by `terraform plan -destroy -out FILE`, so that a later
    /// `terraform apply FILE` in the same script is seen to destroy.
    pub(crate) destroy_plans: Vec<String>,
    /// Files the script writes, so that running one of them is seen to run code it made.
    pub(crate) written: Vec<written::WrittenFile>,
    /// More files were written than are remembered.
    pub(crate) written_overflow: bool,
}

impl Analyzer {
    fn new(use_parser: bool, deadline: std::time::Instant) -> Self {
        Self {
            findings: Vec::new(),
            budget: WORK_BUDGET,
            budget_reported: false,
            deadline: deadline.min(std::time::Instant::now() + DEADLINE),
            use_parser,
            destroy_plans: Vec::new(),
            written: Vec::new(),
            written_overflow: false,
        }
    }

    /// How many findings so far (to tell whether a check added one).
    pub(crate) fn findings_len(&self) -> usize {
        self.findings.len()
    }

    fn into_findings(self) -> Vec<Finding> {
        self.findings
    }

    /// Records a finding once (the same construct can be reached along several paths, e.g. a
    /// function body checked at definition and again at each call).
    pub(crate) fn report(&mut self, rule: Rule, reason: String) {
        if !self
            .findings
            .iter()
            .any(|f| f.rule == rule && f.reason == reason)
        {
            self.findings.push(Finding { rule, reason });
        }
    }

    /// Takes `units` from the work budget; false (after reporting once) when it is exhausted.
    pub(crate) fn spend(&mut self, units: usize) -> bool {
        if self.budget >= units && std::time::Instant::now() < self.deadline {
            self.budget -= units;
            return true;
        }
        self.budget = 0;
        if !self.budget_reported {
            self.budget_reported = true;
            self.report(
                Rule::TooComplex,
                "the command is too complex for the no-destruction analysis to finish within \
                 its work, memory and time bounds, so it cannot be shown to be safe"
                    .into(),
            );
        }
        false
    }

    /// Whether a budget ran out: the verdict is then `too-complex` and further work is wasted.
    pub(crate) fn exhausted(&self) -> bool {
        self.budget_reported
    }

    /// Takes from the budget for copying `bytes` of state; false when it is exhausted.
    pub(crate) fn spend_bytes(&mut self, bytes: usize) -> bool {
        self.spend(1 + bytes / BYTES_PER_UNIT)
    }

    /// A copy of `scope` for a subshell, function call or nested script, paid for by its size.
    pub(crate) fn fork(&mut self, scope: &Scope) -> Scope {
        self.spend_bytes(scope.weight());
        scope.clone()
    }

    /// Reports (once) that nesting went past `MAX_DEPTH`; true when `depth` is too deep.
    pub(crate) fn too_deep(&mut self, what: &str, depth: usize) -> bool {
        if depth <= MAX_DEPTH {
            return false;
        }
        if !self
            .findings
            .iter()
            .any(|f| f.rule == Rule::TooDeeplyNested)
        {
            self.report(
                Rule::TooDeeplyNested,
                format!(
                    "`{}` is nested more than {MAX_DEPTH} levels deep (commands run by \
                     `sh -c`, `eval`, `$(…)`, `find -exec` …), too deep to be shown safe",
                    words::excerpt(what)
                ),
            );
        }
        true
    }

    /// Analyses `script` as shell source at nesting `depth`, with `scope` as its shell state.
    pub(crate) fn analyse_script(&mut self, script: &str, scope: &mut Scope, depth: usize) {
        if self.too_deep(script, depth) {
            return;
        }
        if script.len() > MAX_SCRIPT_BYTES {
            let finding = too_large(script.len());
            self.report(finding.rule, finding.reason);
            return;
        }
        if !self.spend(1 + script.len() / 256) {
            return;
        }
        if self.use_parser
            && count_openers(script) <= MAX_OPENERS
            && !here_doc_in_expansion(script)
            && let Some(program) = parse_program(script)
        {
            self.walk_program(&program, scope, depth);
            return;
        }
        self.analyse_fallback(script, scope, depth);
    }

    /// Analyses a script in a subshell-like child scope: it sees the parent's variables, but its
    /// own assignments and `cd`s do not leak back.
    pub(crate) fn analyse_nested(&mut self, script: &str, parent: &Scope, depth: usize) {
        let mut child = self.fork(parent);
        self.analyse_script(script, &mut child, depth);
    }
}

/// Whether `script` may hold a here-document inside a `$(…)`, `$((…))` or `$[…]` expansion:
/// it has both an expansion opener and a `<<` that is not `<<<`, anywhere, quoted or not.
///
/// Why: `brush-parser` 0.4 tokenizes those expansions in a loop that, for some malformed
/// here-documents in them, never ends and allocates without bound (`$(<< >#`, seven bytes,
/// took 24 GiB before the kernel killed the process). Such scripts go to the fallback
/// tokenizer instead, which is iterative and bounded. Over-approximating costs only precision
/// on scripts that mix the two.
fn here_doc_in_expansion(script: &str) -> bool {
    let expansion = script.contains("$(") || script.contains("$[");
    expansion
        && script
            .match_indices("<<")
            .any(|(at, _)| script.as_bytes().get(at + 2) != Some(&b'<'))
}

fn parse_program(script: &str) -> Option<brush_parser::ast::Program> {
    let options = parser_options();
    let mut parser =
        brush_parser::Parser::new(std::io::BufReader::new(script.as_bytes()), &options);
    parser.parse_program().ok()
}

/// Bash semantics (not `sh` mode): a superset, so bashisms in a `run` string are still seen.
pub(crate) fn parser_options() -> brush_parser::ParserOptions {
    brush_parser::ParserOptions::default()
}

/// Counts everything that can open a nesting level in `brush-parser`, ignoring quotes and
/// closers on purpose: the count must be an upper bound on the depth even for hostile input whose
/// quotes are arranged to hide openers from a smarter scan.
fn count_openers(script: &str) -> usize {
    let bytes = script.as_bytes();
    let mut count = bytes
        .iter()
        .filter(|&&b| matches!(b, b'(' | b'{' | b'`' | b'['))
        .count();
    for word in script.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
        if matches!(
            word,
            "if" | "while"
                | "until"
                | "for"
                | "case"
                | "select"
                | "function"
                | "then"
                | "do"
                | "elif"
                | "else"
        ) {
            count += 1;
        }
    }
    count
}
