//! Literal code given to interpreters (`python3 -c`, `perl -e`, `ruby -e`, `node -e`, `php -r`,
//! `awk`): the shell commands it runs and the language's own recursive deletes, writes to
//! devices and fork loops.

use super::Rule;
use super::commands::Stdin;
use super::paths::{self, AbsPath, Danger};
use super::words::{self, Word};
use super::{Analyzer, Scope};

/// Most string literals of one program we analyse as shell, and most calls we follow.
const MAX_LITERALS: usize = 16;

/// Most shell commands (and path literals) of one program we analyse.
const MAX_SCRIPTS: usize = 8 * MAX_LITERALS;

/// Most programs handed to the language's own `eval`, or read on standard input, we analyse.
const MAX_EVALS: usize = 4;

/// Interpreter families whose option grammar differs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    Perl,
    Ruby,
    Node,
    Php,
    Awk,
    Other,
}

fn lang_of(name: &str) -> Lang {
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    match base {
        "python" | "pypy" => Lang::Python,
        "perl" => Lang::Perl,
        "ruby" => Lang::Ruby,
        "node" | "nodejs" | "deno" | "bun" => Lang::Node,
        "php" => Lang::Php,
        "awk" | "gawk" | "mawk" | "nawk" | "busybox-awk" => Lang::Awk,
        _ => Lang::Other,
    }
}

/// Whether `name` is an awk.
pub(crate) fn is_awk(name: &str) -> bool {
    lang_of(name) == Lang::Awk
}

/// The program text words of an interpreter's command line and whether a program file or
/// module was named instead (so standard input is data, not code).
pub(crate) struct Program<'a> {
    pub(crate) code: Vec<&'a Word>,
    pub(crate) has_program: bool,
    /// The program file, when one is named (`python3 x.py`).
    pub(crate) file: Option<&'a Word>,
}

/// Reads an interpreter's options: which words are inline code.
pub(crate) fn program_words<'a>(name: &str, args: &'a [Word]) -> Program<'a> {
    let lang = lang_of(name);
    let mut code: Vec<&Word> = Vec::new();
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let Some(arg) = word.lit() else {
            // A dynamic word where the program or its options go.
            code.push(word);
            return Program {
                code,
                has_program: true,
                file: None,
            };
        };
        i += 1;
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            if code.is_empty() {
                if lang == Lang::Awk && arg != "-" && arg != "--" {
                    // awk's first operand is the program text.
                    code.push(word);
                    return Program {
                        code,
                        has_program: true,
                        file: None,
                    };
                }
                if arg == "--" && lang == Lang::Awk {
                    if let Some(program) = args.get(i) {
                        code.push(program);
                    }
                    return Program {
                        code,
                        has_program: true,
                        file: None,
                    };
                }
                return Program {
                    code,
                    has_program: arg != "-",
                    file: (arg != "-" && arg != "--").then_some(word),
                };
            }
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (key, value) = match long.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (long, None),
            };
            let is_code = match lang {
                Lang::Node => matches!(key, "eval" | "print"),
                Lang::Awk => key == "source",
                _ => false,
            };
            if is_code {
                match value {
                    Some(_) => code.push(word),
                    None => {
                        if let Some(next) = args.get(i) {
                            code.push(next);
                            i += 1;
                        }
                    }
                }
            } else if lang == Lang::Awk && matches!(key, "file" | "include" | "load") {
                return Program {
                    code,
                    has_program: true,
                    file: None,
                };
            } else if value.is_none()
                && matches!(
                    key,
                    "require" | "import" | "loader" | "assign" | "field-separator"
                )
            {
                i += 1;
            }
            continue;
        }
        // A short-option cluster, read per language.
        let cluster: Vec<char> = arg.chars().skip(1).collect();
        let (code_letters, value_letters, program_letters): (&str, &str, &str) = match lang {
            Lang::Python => ("c", "WXQ", "m"),
            Lang::Perl => ("eE", "MmIidxCF", ""),
            Lang::Ruby => ("e", "rICEFiWxK0", ""),
            Lang::Node => ("ep", "r", ""),
            Lang::Php => ("rBRE", "dcfzt", "f"),
            Lang::Awk => ("e", "Fvfi", "f"),
            Lang::Other => ("ce", "", "m"),
        };
        for (j, &c) in cluster.iter().enumerate() {
            let rest: String = cluster.iter().skip(j + 1).collect();
            if code_letters.contains(c) {
                if rest.is_empty() {
                    if let Some(next) = args.get(i) {
                        code.push(next);
                        i += 1;
                    }
                } else {
                    code.push(word);
                }
                // Python's -c ends the options; perl and ruby take several -e.
                if lang == Lang::Python {
                    return Program {
                        code,
                        has_program: true,
                        file: None,
                    };
                }
                break;
            }
            if program_letters.contains(c) {
                return Program {
                    code,
                    has_program: true,
                    file: None,
                };
            }
            if value_letters.contains(c) {
                if rest.is_empty() {
                    i += 1;
                }
                break;
            }
        }
    }
    let has_program = !code.is_empty();
    Program {
        code,
        has_program,
        file: None,
    }
}

/// A string literal in program text, decoded, with its byte span.
struct Literal {
    text: String,
    start: usize,
    end: usize,
    /// Backquoted (perl, ruby, php run these as shell commands).
    backquoted: bool,
}

/// Finds the quoted string literals of a program: `'…'`, `"…"`, `` `…` `` with backslash escapes,
/// and perl/ruby quote-like operators (`q{…}`, `qq(…)`, `qx{…}`, `%x(…)`, `%q[…]`).
fn literals(code: &str) -> Vec<Literal> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let quote_like = match c {
            b'q' if !prev_is_ident(bytes, i) => match bytes.get(i + 1) {
                Some(b'q' | b'x' | b'w') if bytes.get(i + 2).is_some_and(|d| is_delimiter(*d)) => {
                    Some((i + 2, bytes[i + 1] == b'x'))
                }
                Some(d) if is_delimiter(*d) => Some((i + 1, false)),
                _ => None,
            },
            b'%' => match bytes.get(i + 1) {
                Some(b'x' | b'q' | b'Q' | b'w' | b'W')
                    if bytes.get(i + 2).is_some_and(|d| is_delimiter(*d)) =>
                {
                    Some((i + 2, bytes[i + 1] == b'x'))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some((open_at, backquoted)) = quote_like {
            let open = bytes[open_at];
            let close = match open {
                b'(' => b')',
                b'[' => b']',
                b'{' => b'}',
                b'<' => b'>',
                other => other,
            };
            let end = scan_until(bytes, open_at + 1, close, open);
            out.push(Literal {
                text: code[open_at + 1..end.min(code.len())].to_owned(),
                start: i,
                end: (end + 1).min(code.len()),
                backquoted,
            });
            i = end + 1;
            continue;
        }
        if matches!(c, b'\'' | b'"' | b'`') {
            let end = scan_until(bytes, i + 1, c, 0);
            let raw = &code[i + 1..end.min(code.len())];
            let text = if c == b'\'' {
                raw.replace("\\'", "'").replace("\\\\", "\\")
            } else {
                words::decode_ansi_c(raw)
            };
            out.push(Literal {
                text,
                start: i,
                end: (end + 1).min(code.len()),
                backquoted: c == b'`',
            });
            i = end + 1;
            continue;
        }
        i += 1;
    }
    out
}

fn prev_is_ident(bytes: &[u8], i: usize) -> bool {
    i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b'$')
}

fn is_delimiter(c: u8) -> bool {
    matches!(c, b'(' | b'[' | b'{' | b'<' | b'|' | b'/' | b'!' | b'#')
}

/// Index of the closing `close` from `from`, skipping backslash escapes and nested `open`s.
fn scan_until(bytes: &[u8], from: usize, close: u8, open: u8) -> usize {
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if open != 0 && open != close && c == open {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                return i;
            }
            depth -= 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Functions that run their argument as a shell command (or an argv), in any of the languages.
const SHELL_CALLS: &[&str] = &[
    "system",
    "popen",
    "spawn",
    "spawnSync",
    "exec",
    "execSync",
    "execFile",
    "execFileSync",
    "execv",
    "execvp",
    "execvpe",
    "execl",
    "execlp",
    "execve",
    "spawnv",
    "spawnvp",
    "spawnl",
    "spawnlp",
    "shell_exec",
    "passthru",
    "proc_open",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
    "Popen",
    "capture2",
    "capture2e",
    "capture3",
    "popen2",
    "popen3",
    "run",
    "call",
    "sh",
    "$",
];

/// Functions that delete a directory tree.
const TREE_DELETES: &[&str] = &[
    "rmtree",
    "rm_rf",
    "rm_r",
    "remove_dir",
    "remove_entry",
    "remove_entry_secure",
    "remove_tree",
    "rmSync",
    "rmdirSync",
    "rm",
    "rmdir",
    "removeSync",
    "remove",
    "rimraf",
    "emptyDirSync",
    "emptyDir",
    "delete_dir_all",
];

/// Tree deletes whose names are unambiguous enough to follow when they are used as values
/// (`f = shutil.rmtree`), and those that delete trees only with a `recursive` option.
const INDIRECT_TREE_DELETES: &[&str] = &[
    "rmtree",
    "rm_rf",
    "rm_r",
    "remove_dir",
    "remove_entry",
    "remove_entry_secure",
    "remove_tree",
    "rimraf",
    "removeSync",
    "emptyDirSync",
    "delete_dir_all",
];
const FLAGGED_TREE_DELETES: &[&str] = &["rmSync", "rmdirSync"];

/// Spellings of the home directory in interpreter code.
const HOME_HELPERS: &[&str] = &[
    "expanduser",
    "Path.home",
    "Dir.home",
    "homedir",
    "HOME",
    "home_dir",
];

/// Offsets of `name` as an identifier outside string literals.
fn mentions(code: &str, name: &str, lits: &[Literal]) -> Vec<usize> {
    let bytes = code.as_bytes();
    code.match_indices(name)
        .map(|(at, _)| at)
        .filter(|&at| {
            let inside = lits.iter().any(|l| at > l.start && at < l.end);
            let after = bytes.get(at + name.len());
            !inside
                && !prev_is_ident(bytes, at)
                && !after.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        })
        .collect()
}

/// Whether the identifier ending at `end` is called there: `(` follows, or (perl, ruby) an
/// argument without parentheses.
fn is_called(code: &str, end: usize) -> bool {
    let next = code
        .get(end..)
        .unwrap_or_default()
        .trim_start_matches([' ', '\t'])
        .chars()
        .next();
    matches!(next, Some('(' | '\'' | '"' | '$' | '@'))
}

/// The top-level, comma-separated arguments after the identifier ending at `end`, trimmed:
/// `(-1, 9)`, or without parentheses up to the end of the statement (`kill 9, -1;`).
fn call_arguments(code: &str, end: usize, lits: &[Literal]) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut start = end;
    while bytes.get(start).is_some_and(|c| *c == b' ' || *c == b'\t') {
        start += 1;
    }
    let stop = if bytes.get(start) == Some(&b'(') {
        let close = scan_parens(bytes, start, lits);
        start += 1;
        close
    } else {
        code[start..]
            .find([';', '\n', '}', ')'])
            .map_or(code.len(), |e| start + e)
    };
    let span = code.get(start..stop).unwrap_or_default();
    let mut args = Vec::new();
    let mut level = 0usize;
    let mut current = String::new();
    for c in span.chars() {
        match c {
            '(' | '[' | '{' => level += 1,
            ')' | ']' | '}' => level = level.saturating_sub(1),
            ',' if level == 0 => {
                args.push(std::mem::take(&mut current).trim().to_owned());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    args.push(current.trim().to_owned());
    args
}

/// Functions that delete or overwrite one file.
const FILE_DELETES: &[&str] = &["unlink", "unlinkSync", "delete", "remove", "os.remove"];

/// One call found in program text: the function name and its argument text span.
struct Call<'a> {
    name: &'a str,
    args_start: usize,
    args_end: usize,
    /// `system "…"` without parentheses (perl, ruby).
    bare: bool,
}

/// Finds calls `NAME(…)` and `NAME "…"` of the given functions outside string literals.
fn calls<'a>(code: &str, names: &[&'a str], lits: &[Literal], bare_words: bool) -> Vec<Call<'a>> {
    let bytes = code.as_bytes();
    let in_literal = |at: usize| lits.iter().any(|l| at > l.start && at < l.end);
    let mut out = Vec::new();
    for name in names {
        let mut from = 0;
        while let Some(found) = code[from..].find(name) {
            let at = from + found;
            from = at + name.len();
            if in_literal(at) || (prev_is_ident(bytes, at) && *name != "$") {
                continue;
            }
            let mut j = at + name.len();
            if bytes
                .get(j)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            {
                continue;
            }
            while bytes.get(j).is_some_and(|c| *c == b' ' || *c == b'\t') {
                j += 1;
            }
            match bytes.get(j) {
                Some(b'(') => {
                    let end = scan_parens(bytes, j, lits);
                    out.push(Call {
                        name,
                        args_start: j + 1,
                        args_end: end,
                        bare: false,
                    });
                }
                Some(c)
                    if (matches!(c, b'\'' | b'"' | b'`' | b'[')
                        || (bare_words
                            && (c.is_ascii_alphabetic() || matches!(c, b'$' | b'@'))))
                        && (j > at + name.len() || *name == "$") =>
                {
                    let end = code[j..]
                        .find([';', '\n', '}'])
                        .map_or(code.len(), |e| j + e);
                    // The end must not cut a literal: extend past literals that start inside.
                    let end = lits
                        .iter()
                        .filter(|l| l.start >= j && l.start < end)
                        .map(|l| l.end)
                        .max()
                        .map_or(end, |e| e.max(end));
                    out.push(Call {
                        name,
                        args_start: j,
                        args_end: end.min(code.len()),
                        bare: true,
                    });
                }
                _ => {}
            }
        }
    }
    out
}

/// Index of the `)` closing the `(` at `open`, skipping literals.
fn scan_parens(bytes: &[u8], open: usize, lits: &[Literal]) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        if let Some(lit) = lits.iter().find(|l| l.start == i) {
            i = lit.end.max(i + 1);
            continue;
        }
        match bytes[i] {
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// Identifiers that may appear in a call's arguments without making the command dynamic.
const HARMLESS_ARGUMENT_WORDS: &[&str] = &[
    "shell",
    "True",
    "False",
    "true",
    "false",
    "None",
    "null",
    "nil",
    "check",
    "capture_output",
    "text",
    "stdio",
    "inherit",
    "encoding",
    "stdout",
    "stderr",
    "stdin",
    "subprocess",
    "PIPE",
    "DEVNULL",
    "STDOUT",
    "universal_newlines",
    "timeout",
    "recursive",
    "force",
    "ignore_errors",
    "secure",
    "verbose",
    "noop",
    "maxRetries",
    "os",
    "sh",
    "echo",
];

/// The argument text of a call with its literals removed, reduced to identifiers.
fn dynamic_parts(code: &str, call: &Call<'_>, lits: &[Literal]) -> bool {
    let mut rest = String::new();
    let mut i = call.args_start;
    while i < call.args_end {
        if let Some(lit) = lits.iter().find(|l| l.start == i) {
            rest.push(' ');
            i = lit.end.max(i + 1);
            continue;
        }
        if let Some(c) = code[i..].chars().next() {
            rest.push(c);
            i += c.len_utf8();
        } else {
            break;
        }
    }
    rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || c == '@'))
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
        .any(|w| !HARMLESS_ARGUMENT_WORDS.contains(&w))
}

/// Literals inside a call's argument span.
fn call_literals<'l>(call: &Call<'_>, lits: &'l [Literal]) -> Vec<&'l Literal> {
    lits.iter()
        .filter(|l| l.start >= call.args_start && l.start < call.args_end)
        .collect()
}

/// How two literals of one argument are combined, read from the program text between them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gap {
    /// Concatenated: `"r" + "m"`, `"r" . "m"` (perl, php), `"r" "m"` (awk, python), `..` (lua).
    Join,
    /// Separate elements: `["rm", "-rf"]`, `system("rm", "-rf")`.
    Separate,
    /// `%`-formatting: `"%sm -rf /" % "r"`; the literals after it are the values.
    Format,
    /// Anything else (`c ? "a" : "b"`): combined at run time in a way we do not evaluate.
    Other,
}

fn gap_kind(gap: &str) -> Gap {
    if gap.contains('%') {
        return Gap::Format;
    }
    let bare: String = gap
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | '\\'))
        .collect();
    if matches!(bare.as_str(), "" | "+" | "." | "..") {
        return Gap::Join;
    }
    // Keyword arguments, keys and values (`], shell=True, cwd=`, `{stdio: `, `{"A" => "1"}`)
    // separate too.
    let punctuation: String = bare
        .chars()
        .filter(|c| !c.is_alphanumeric() && *c != '_')
        .collect();
    if !punctuation.is_empty() && punctuation.chars().all(|c| ",[]{}:=>".contains(c)) {
        return Gap::Separate;
    }
    Gap::Other
}

/// Python's `template % values` for the conversions a command would use (`%s`, `%r`, `%d`,
/// `%i`, with flags and width), and `%%`. Values run out: the rest is left as written.
fn percent_format(template: &str, values: &[&str]) -> String {
    let mut out = String::new();
    let mut values = values.iter();
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let spec = &rest[at + 1..];
        if let Some(after) = spec.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        let len = spec
            .find(|c: char| !(c.is_ascii_digit() || "-+ #.".contains(c)))
            .unwrap_or(spec.len());
        match (spec[len..].chars().next(), values.next()) {
            (Some('s' | 'r' | 'd' | 'i' | 'a'), Some(value)) => {
                out.push_str(value);
                rest = &spec[len + 1..];
            }
            _ => {
                out.push('%');
                rest = spec;
            }
        }
    }
    out.push_str(rest);
    out
}

/// What a shell call's argument made of several literals can be: the commands to analyse,
/// and whether it is built at run time in a way we do not evaluate (formatting, templates,
/// operators), which makes it `dynamic-code` unless one of the commands is destructive.
struct Built {
    scripts: Vec<String>,
    run_time: bool,
}

/// An argument made of literals joined by operators (`"r" + "m -rf /"`, `"r" . "m -rf /"`,
/// `"r" "m -rf /"`, `"%sm -rf /" % "r"`, `["r" + "m", "-rf", "/"]`): its elements are the
/// literals concatenated as the language would, so that `rm` is seen. Interpolation in a
/// literal (`` `${x}` ``, `"#{x}"`) is built at run time.
fn built_argument(code: &str, args: &[&Literal], lang: Lang) -> Built {
    let interpolates = |l: &Literal| match lang {
        Lang::Ruby => l.text.contains("#{"),
        Lang::Node | Lang::Perl | Lang::Php => l.text.contains("${"),
        _ => false,
    };
    let mut run_time = args.iter().any(|l| interpolates(l));
    let Some((first, rest)) = args.split_first() else {
        return Built {
            scripts: Vec::new(),
            run_time,
        };
    };
    let mut elements = vec![first.text.clone()];
    let mut combined = false;
    let mut previous = *first;
    for (n, lit) in rest.iter().enumerate() {
        let gap = code.get(previous.end..lit.start).unwrap_or_default();
        previous = lit;
        match gap_kind(gap) {
            Gap::Separate => elements.push(lit.text.clone()),
            Gap::Format => {
                let values: Vec<&str> = rest[n..].iter().map(|l| l.text.as_str()).collect();
                if let Some(last) = elements.last_mut() {
                    *last = percent_format(last, &values);
                }
                combined = true;
                run_time = true;
                break;
            }
            kind => {
                if let Some(last) = elements.last_mut() {
                    last.push_str(&lit.text);
                }
                combined = true;
                run_time |= kind == Gap::Other;
            }
        }
    }
    let scripts = if combined {
        vec![
            elements.join(" "),
            elements
                .iter()
                .map(|e| shell_quote(e))
                .collect::<Vec<_>>()
                .join(" "),
        ]
    } else {
        Vec::new()
    };
    Built { scripts, run_time }
}

/// Quotes text as one shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

impl Analyzer {
    /// Analyses literal interpreter code: shell commands it runs, native deletes and writes,
    /// fork loops. `depth` is the nesting of the interpreter command itself.
    pub(crate) fn analyse_code(
        &mut self,
        name: &str,
        shown: &str,
        code: &str,
        scope: &Scope,
        depth: usize,
    ) {
        if self.too_deep(code, depth + 1) || !self.spend(1 + code.len() / 64) {
            return;
        }
        let lang = lang_of(name);
        let lits = literals(code);
        let mut scripts: Vec<String> = Vec::new();
        let mut dynamic = false;
        // Generic names count only where the program plainly uses the module they belong to.
        let uses_subprocess = code.contains("subprocess") || code.contains("child_process");
        let shell_calls: Vec<&str> = SHELL_CALLS
            .iter()
            .copied()
            .filter(|n| match *n {
                "run" | "call" | "Popen" => uses_subprocess || code.contains("Open3"),
                "sh" | "$" => lang == Lang::Node && (code.contains("zx") || code.contains("execa")),
                "exec" => lang != Lang::Python,
                _ => true,
            })
            .collect();
        let bare_words = matches!(lang, Lang::Perl | Lang::Ruby);
        // Code handed to the language's own eval is code of the same language.
        let evals = calls(
            code,
            &["exec", "eval", "compile", "instance_eval", "Function"],
            &lits,
            false,
        );
        if evals.len() > MAX_EVALS {
            self.code_too_complex(shown, "calls of its own eval");
        }
        for call in evals.iter().take(MAX_EVALS) {
            for lit in call_literals(call, &lits) {
                let inner = lit.text.clone();
                self.analyse_code(name, shown, &inner, scope, depth + 1);
            }
        }
        let shell_runs = calls(code, &shell_calls, &lits, bare_words);
        if shell_runs.len() > MAX_LITERALS {
            self.code_too_complex(shown, "calls that run shell commands");
        }
        for call in shell_runs.iter().take(MAX_LITERALS) {
            let args = call_literals(call, &lits);
            if dynamic_parts(code, call, &lits) || (args.is_empty() && !call.bare) {
                dynamic = true;
            }
            if args.is_empty() {
                continue;
            }
            let texts: Vec<&str> = args.iter().map(|l| l.text.as_str()).collect();
            scripts.push(texts.join(" "));
            if texts.len() > 1 {
                scripts.push(
                    texts
                        .iter()
                        .map(|t| shell_quote(t))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            let built = built_argument(code, &args, lang);
            scripts.extend(built.scripts);
            dynamic |= built.run_time;
        }
        // Backquotes run shell in perl, ruby and php; so do `qx{}` and `%x()`; awk pipes
        // printed text into commands and `system` runs them.
        for lit in &lits {
            let backquote_is_shell =
                matches!(lang, Lang::Perl | Lang::Ruby | Lang::Php | Lang::Other);
            if lit.backquoted && (backquote_is_shell || !code[lit.start..].starts_with('`')) {
                scripts.push(lit.text.clone());
            }
        }
        if lang == Lang::Awk && code.contains('|') {
            // Printed text piped into a command: the commands are literals; what is printed
            // into a shell is only known at run time.
            if lits.len() > MAX_SCRIPTS / 2 {
                self.code_too_complex(shown, "strings that may be commands");
            }
            scripts.extend(lits.iter().take(MAX_SCRIPTS / 2).map(|l| l.text.clone()));
            let shells = ["sh", "bash", "/bin/sh", "/bin/bash", "dash", "zsh"];
            dynamic |= lits.iter().any(|l| shells.contains(&l.text.trim()));
        }
        if dynamic {
            // The command is built at run time from parts of the program: every literal of
            // the program may be in it.
            let all: Vec<String> = lits.iter().map(|l| l.text.clone()).collect();
            let whole: Vec<&str> = all.iter().map(String::as_str).collect();
            scripts.extend(all.iter().take(MAX_LITERALS).cloned());
            scripts.push(whole.join(" "));
            // Parts joined in a variable first: `$c = "r" . "m -rf /"; system($c)`.
            let parts: Vec<&Literal> = lits.iter().take(2 * MAX_LITERALS).collect();
            scripts.extend(built_argument(code, &parts, lang).scripts);
        }
        if scripts.len() > MAX_SCRIPTS {
            self.code_too_complex(shown, "shell commands");
        }
        let before = self.findings_len();
        for script in scripts.iter().take(MAX_SCRIPTS) {
            self.analyse_nested(script, scope, depth + 1);
        }
        let found_shell = self.findings_len() > before;
        self.native_deletes(shown, code, &lits, scope);
        self.native_device_writes(shown, code, &lits, scope);
        self.native_kills(shown, code, &lits, lang);
        if fork_loop(code) {
            self.report(
                Rule::ForkBomb,
                format!("`{shown}` forks in an endless loop, a fork bomb"),
            );
        }
        if dynamic && !found_shell {
            self.report(
                Rule::DynamicCode,
                format!(
                    "`{shown}` ({name}) runs a shell command built at run time, so it cannot be \
                     shown to be safe"
                ),
            );
        }
    }

    /// What lies past one of the bounds above is not waved through: the code is too complex.
    fn code_too_complex(&mut self, shown: &str, what: &str) {
        self.report(
            Rule::TooComplex,
            format!(
                "`{}` holds more {what} than the no-destruction analysis reads, so it cannot be \
                 shown to be safe",
                words::excerpt(shown)
            ),
        );
    }

    /// `shutil.rmtree('/')`, `FileUtils.rm_rf(Dir.home)`, `fs.rmSync('/', {recursive: true})`,
    /// `rmtree("/")`; `os.remove('/dev/sda')`, `unlink('/etc/passwd')`.
    fn native_deletes(&mut self, shown: &str, code: &str, lits: &[Literal], scope: &Scope) {
        for call in calls(code, TREE_DELETES, lits, true) {
            // Node's rmSync/rmdirSync/rm need {recursive: true} for directories.
            let needs_flag = matches!(call.name, "rmSync" | "rmdirSync" | "rm" | "rmdir");
            let span = &code[call.args_start.min(code.len())..call.args_end.min(code.len())];
            if needs_flag && !span.contains("recursive") {
                self.file_delete(shown, call_literals(&call, lits).first().copied(), scope);
                continue;
            }
            for path in call_paths(code, &call, lits, scope) {
                let Some(danger) = paths::classify(&path) else {
                    continue;
                };
                let rule = tree_delete_rule(&danger);
                self.report(
                    rule,
                    format!("`{shown}` deletes {} ({})", danger.describe(), call.name),
                );
            }
        }
        for call in calls(code, FILE_DELETES, lits, true) {
            self.file_delete(shown, call_literals(&call, lits).first().copied(), scope);
        }
        self.indirect_tree_deletes(shown, code, lits, scope);
    }

    /// A tree-delete function used as a value rather than called by its name
    /// (`f = shutil.rmtree; f("/")`, `from shutil import rmtree as r`, `map(shutil.rmtree, …)`):
    /// what it is called on cannot be tied to a call, so every path literal of the program is
    /// a possible target.
    fn indirect_tree_deletes(&mut self, shown: &str, code: &str, lits: &[Literal], scope: &Scope) {
        let flagged: &[&str] = if code.contains("recursive") {
            FLAGGED_TREE_DELETES
        } else {
            &[]
        };
        let used_as_value = |name: &&&str| {
            mentions(code, name, lits)
                .into_iter()
                .any(|at| !is_called(code, at + name.len()))
        };
        let Some(name) = INDIRECT_TREE_DELETES
            .iter()
            .chain(flagged)
            .find(used_as_value)
        else {
            return;
        };
        let home = HOME_HELPERS.iter().any(|h| code.contains(h));
        if lits.len() > MAX_SCRIPTS {
            self.code_too_complex(shown, "strings that may be paths");
        }
        for lit in lits.iter().take(MAX_SCRIPTS) {
            let text = lit.text.as_str();
            if is_string_operand(code, lit, lits) {
                continue;
            }
            let paths: Vec<AbsPath> = if home && (text == "~" || text.starts_with("~/")) {
                vec![AbsPath::home().join(&text[1..])]
            } else {
                interpreter_path(text, scope).into_iter().collect()
            };
            for path in paths {
                let Some(danger) = paths::classify(&path) else {
                    continue;
                };
                let rule = tree_delete_rule(&danger);
                self.report(
                    rule,
                    format!(
                        "`{shown}` may delete {} ({name} is called by another name, and the \
                         program names that path)",
                        danger.describe()
                    ),
                );
            }
        }
    }

    /// `os.kill(-1, 9)`, `kill 9, -1` (perl), `Process.kill(:KILL, -1)`, `process.kill(-1)`,
    /// `posix_kill(1, 9)`: signalling every process or init, as `kill -9 -1` does.
    fn native_kills(&mut self, shown: &str, code: &str, lits: &[Literal], lang: Lang) {
        for name in ["kill", "posix_kill"] {
            for at in mentions(code, name, lits) {
                let args = call_arguments(code, at + name.len(), lits);
                // The signal comes first in perl and ruby, the process second elsewhere.
                let (signal, pids): (Option<&String>, &[String]) = match lang {
                    Lang::Perl | Lang::Ruby => (args.first(), args.get(1..).unwrap_or_default()),
                    _ => (args.get(1), args.get(..1).unwrap_or_default()),
                };
                if signal.is_some_and(|s| s == "0") {
                    continue;
                }
                let target = pids.iter().find_map(|pid| match pid.parse::<i64>() {
                    Ok(-1) => Some("every process it may signal (-1)"),
                    Ok(1) => Some("init (PID 1)"),
                    _ => None,
                });
                if let Some(target) = target {
                    self.report(
                        Rule::MassKill,
                        format!("`{shown}` kills {target}, taking the machine or container down"),
                    );
                }
            }
        }
    }

    fn file_delete(&mut self, shown: &str, path: Option<&Literal>, scope: &Scope) {
        let Some(lit) = path else { return };
        let word = Word::literal(&lit.text);
        for path in paths::static_paths(&word, scope.cwd.as_ref()) {
            if is_system_file(&path) {
                self.report(
                    Rule::SystemFileDelete,
                    format!("`{shown}` deletes the system file {}", path.display()),
                );
            }
        }
    }

    /// `open('/dev/sda', 'wb')`, `File.write('/proc/sysrq-trigger', 'b')`.
    fn native_device_writes(&mut self, shown: &str, code: &str, lits: &[Literal], scope: &Scope) {
        let writes = [
            "write",
            "'w",
            "\"w",
            "'a",
            "\"a",
            "r+",
            ">",
            "O_WRONLY",
            "O_RDWR",
            "file_put_contents",
        ]
        .iter()
        .any(|m| code.contains(m));
        if !writes {
            return;
        }
        for lit in lits {
            let word = Word::literal(lit.text.trim_start_matches(['>', '+', ' ']));
            for path in paths::static_paths(&word, scope.cwd.as_ref()) {
                if paths::is_block_device(&path) {
                    self.report(
                        Rule::BlockDeviceWrite,
                        format!("`{shown}` writes to the block device {}", path.display()),
                    );
                } else if paths::is_kernel_interface(&path) {
                    self.report(
                        Rule::KernelInterfaceWrite,
                        format!(
                            "`{shown}` writes to the kernel control file {}",
                            path.display()
                        ),
                    );
                }
            }
        }
    }
}

/// The paths a tree-delete call names. Only an argument that is wholly a path is read: a
/// literal (`rmtree('/')`), literals joined by the language's concatenation (`'/' + 'usr'`), a
/// path join of literals only (`os.path.join('/', 'usr')`), or a home directory helper on its
/// own (`Path.home()`, `os.path.expanduser('~')`, `Dir.home`, `os.homedir()`). A literal that
/// is a piece of a join with run-time parts (`os.path.join('..', 'build')`,
/// `path.join(__dirname, '..', 'dist')`) names no target, and a relative path never climbs out
/// of the working directory to `/` here (see [`interpreter_path`]).
fn call_paths(code: &str, call: &Call<'_>, lits: &[Literal], scope: &Scope) -> Vec<AbsPath> {
    let mut out = Vec::new();
    for (start, end) in top_level_args(code, call.args_start, call.args_end, lits) {
        match whole_path(code, start, end, lits) {
            Some(WholePath::Home(rest)) => out.push(AbsPath::home().join(&rest)),
            Some(WholePath::Texts(texts)) => {
                for text in texts {
                    out.extend(interpreter_path(&text, scope));
                }
            }
            None => {}
        }
    }
    out
}

/// String methods whose literal arguments are separators or fragments, not paths
/// (`p.rstrip('/')`, `url.split('/')`, `s.replace('/', '_')`).
const STRING_METHODS: &[&str] = &[
    "split",
    "rsplit",
    "strip",
    "rstrip",
    "lstrip",
    "chomp",
    "endswith",
    "startswith",
    "end_with?",
    "start_with?",
    "endsWith",
    "startsWith",
    "replace",
    "replaceAll",
    "sub",
    "gsub",
    "tr",
    "count",
    "find",
    "rfind",
    "index",
    "rindex",
    "indexOf",
    "lastIndexOf",
    "includes",
    "include?",
    "partition",
    "rpartition",
    "removeprefix",
    "removesuffix",
    "delete_prefix",
    "delete_suffix",
];

/// Whether a literal is used as a string rather than as a path: the separator of a join
/// (`'/'.join(parts)`, `'/' .join`) or an argument of a string method (`p.rstrip('/')`).
fn is_string_operand(code: &str, lit: &Literal, lits: &[Literal]) -> bool {
    let after = code.get(lit.end..).unwrap_or_default().trim_start();
    if after.starts_with(".join") {
        return true;
    }
    // The call the literal is an argument of: back from it to the unclosed `(`.
    let bytes = code.as_bytes();
    let mut level = 0usize;
    let mut i = lit.start;
    while i > 0 {
        i -= 1;
        if let Some(inner) = lits.iter().find(|l| l.end == i + 1 && l.start < i) {
            i = inner.start;
            continue;
        }
        match bytes[i] {
            b')' | b']' | b'}' => level += 1,
            b'[' | b'{' if level == 0 => return false,
            b'(' if level == 0 => {
                let callee = code[..i].trim_end();
                let name_at = callee
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '?'))
                    .map_or(0, |at| at + 1);
                let is_method = callee[..name_at].ends_with('.');
                return is_method && STRING_METHODS.contains(&&callee[name_at..]);
            }
            b'(' | b'[' | b'{' => level -= 1,
            b';' | b'\n' if level == 0 => return false,
            _ => {}
        }
    }
    false
}

/// A path literal of interpreter code resolved against the shell's working directory. A
/// relative literal that climbs out of it (`'..'`, `'../../x'`) is not read as reaching `/`,
/// as the shell's `rm -rf ..` is: interpreter code is full of such pieces (`sys.path.insert(0,
/// '..')`, `os.path.join('..', 'build')`) that name no target of a delete.
fn interpreter_path(text: &str, scope: &Scope) -> Option<AbsPath> {
    let path = paths::static_paths(&Word::literal(text), scope.cwd.as_ref())
        .into_iter()
        .next()?;
    let climbed_before = scope.cwd.as_ref().is_some_and(|c| c.climbed);
    (!path.climbed || climbed_before).then_some(path)
}

/// The byte spans of the top-level, comma-separated arguments between `start` and `end`,
/// skipping literals and nested brackets, trimmed of blanks.
fn top_level_args(code: &str, start: usize, end: usize, lits: &[Literal]) -> Vec<(usize, usize)> {
    let bytes = code.as_bytes();
    let end = end.min(bytes.len());
    let mut spans = Vec::new();
    let mut level = 0usize;
    let mut from = start;
    let mut i = start;
    while i < end {
        if let Some(lit) = lits.iter().find(|l| l.start == i) {
            i = lit.end.max(i + 1);
            continue;
        }
        match bytes[i] {
            b'(' | b'[' | b'{' => level += 1,
            b')' | b']' | b'}' => level = level.saturating_sub(1),
            b',' if level == 0 => {
                spans.push((from, i));
                from = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    spans.push((from, end));
    spans
        .into_iter()
        .filter_map(|(s, e)| {
            let text = code.get(s..e.max(s))?;
            let lead = text.len() - text.trim_start().len();
            let trail = text.len() - text.trim_end().len();
            (s + lead < e - trail).then_some((s + lead, e - trail))
        })
        .collect()
}

/// What an argument that is wholly a path names.
enum WholePath {
    /// The home directory and a path in it.
    Home(String),
    /// Path texts (two when a join may reset at an absolute piece, as `os.path.join` does).
    Texts(Vec<String>),
}

/// Reads the argument at `start..end` when it is wholly a path (see [`call_paths`]).
fn whole_path(code: &str, start: usize, end: usize, lits: &[Literal]) -> Option<WholePath> {
    let mut start = start;
    let mut end = end.min(code.len());
    let text = code.get(start..end)?;
    // A keyword argument (`path='/usr'`, `path: '/usr'`) is read by its value.
    if let Some(eq) = text.find(['=', ':'])
        && text[..eq]
            .trim()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !text[..eq].trim().is_empty()
        && !text[eq + 1..].starts_with(['=', ':'])
    {
        start += eq + 1;
        while code
            .as_bytes()
            .get(start)
            .is_some_and(u8::is_ascii_whitespace)
        {
            start += 1;
        }
    }
    // Parentheses around the whole argument.
    while code.as_bytes().get(start) == Some(&b'(')
        && end > start
        && scan_parens(code.as_bytes(), start, lits) + 1 == end
    {
        start += 1;
        end -= 1;
    }
    let inside: Vec<&Literal> = lits
        .iter()
        .filter(|l| l.start >= start && l.start < end)
        .collect();
    // Text outside the literals, which decides how they are combined.
    let outside = |from: usize, to: usize| code.get(from..to.max(from)).unwrap_or_default();
    if let (Some(first), Some(last)) = (inside.first(), inside.last())
        && outside(start, first.start).trim().is_empty()
        && outside(last.end, end).trim().is_empty()
        && inside
            .windows(2)
            .all(|w| gap_kind(outside(w[0].end, w[1].start)) == Gap::Join)
    {
        let joined: String = inside.iter().map(|l| l.text.as_str()).collect();
        return Some(WholePath::Texts(vec![joined]));
    }
    let text = code.get(start..end)?;
    let home_helper = HOME_HELPERS.iter().any(|h| text.contains(h));
    let mut bare = String::new();
    let mut at = start;
    for lit in &inside {
        bare.push_str(outside(at, lit.start));
        bare.push(' ');
        at = lit.end;
    }
    bare.push_str(outside(at, end));
    if home_helper && !bare.contains("join") && !bare.contains(['+', '/', ',']) {
        return match inside.as_slice() {
            [] => Some(WholePath::Home(String::new())),
            [one] if one.text == "HOME" => Some(WholePath::Home(String::new())),
            [one] if one.text == "~" || one.text.starts_with("~/") => {
                Some(WholePath::Home(one.text[1..].to_owned()))
            }
            _ => None,
        };
    }
    // A path join of literals only: `os.path.join('/', 'usr')`, `File.join('/', 'usr')`,
    // `path.resolve('/', 'usr')`, `Path('/usr')`.
    // The `(` of the last call, whose `)` ends the argument (`require('path').join(…)`).
    let open = (start..end).find(|&at| {
        code.as_bytes()[at] == b'('
            && !lits.iter().any(|l| at >= l.start && at < l.end)
            && scan_parens(code.as_bytes(), at, lits) + 1 == end
    })? - start;
    let callee = text[..open].trim_end();
    let joins = [
        "join",
        "resolve",
        "Path",
        "PurePath",
        "PosixPath",
        "expand_path",
    ];
    if !joins.iter().any(|j| callee.ends_with(j)) {
        return None;
    }
    let mut pieces = Vec::new();
    for (s, e) in top_level_args(code, start + open + 1, end - 1, lits) {
        match whole_path(code, s, e, lits)? {
            WholePath::Texts(mut texts) => pieces.push(texts.swap_remove(0)),
            WholePath::Home(_) => return None,
        }
    }
    let concatenated = pieces.join("/");
    let reset = pieces
        .iter()
        .rposition(|p| p.starts_with('/'))
        .map(|at| pieces[at..].join("/"));
    Some(WholePath::Texts(
        std::iter::once(concatenated).chain(reset).collect(),
    ))
}

/// Single files whose deletion breaks the machine: block devices, and files in the top-level
/// system directories that hold the system itself (`/etc`, `/boot`, `/bin`, `/sbin`, `/lib*`,
/// `/usr`).
fn is_system_file(path: &AbsPath) -> bool {
    if path.anchor != paths::Anchor::Root {
        return false;
    }
    if paths::is_block_device(path) {
        return true;
    }
    path.comps.first().is_some_and(|top| {
        matches!(
            top.as_str(),
            "etc" | "boot" | "bin" | "sbin" | "lib" | "lib32" | "lib64" | "libx32" | "usr"
        )
    })
}

/// `while True: os.fork()`, `fork while fork`, `1 while fork`, `loop { fork }`,
/// `while(1){fork}`: a fork inside an unbounded loop.
fn fork_loop(code: &str) -> bool {
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("fork") {
        return false;
    }
    ["while", "loop", "until", "for(;;)", "forever"]
        .iter()
        .any(|l| compact.contains(l))
        && !compact.contains("exit")
}

impl Analyzer {
    /// `python3 -c CODE`, `perl -e CODE`, `awk PROGRAM`, or code on standard input: analyses
    /// literal code, and reports code only known at run time as opaque.
    pub(crate) fn rule_interpreter_code(
        &mut self,
        name: &str,
        shown: &str,
        args: &[Word],
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) {
        let program = program_words(name, args);
        if let Some(file) = program.file {
            self.run_written(
                shown,
                file,
                &[],
                super::written::Runner::Interpreter(name),
                scope,
                depth,
            );
        }
        let mut dynamic = false;
        for word in &program.code {
            let text = word.lit().map(|t| {
                // `-e'code'`, `--eval=code` attached to the option.
                if let Some(rest) = t.strip_prefix("--") {
                    rest.split_once('=')
                        .map_or(t.clone(), |(_, v)| v.to_owned())
                } else if t.starts_with('-') && t.len() > 2 && !is_awk(name) {
                    let letters = t.trim_start_matches('-');
                    let at = letters.find(['e', 'E', 'c', 'r']).map_or(0, |p| p + 1);
                    letters[at..].to_owned()
                } else {
                    t
                }
            });
            match text {
                Some(code) => self.analyse_code(name, shown, &code, scope, depth),
                None => dynamic = true,
            }
        }
        if !program.has_program {
            if stdin.texts.len() > MAX_EVALS {
                self.code_too_complex(shown, "programs on its standard input");
            }
            for text in stdin.texts.iter().take(MAX_EVALS) {
                self.analyse_code(name, shown, text, scope, depth);
            }
        }
        if dynamic || (!program.has_program && stdin.unknown) {
            self.report(
                Rule::DynamicCode,
                format!(
                    "`{shown}` ({name}) runs code that is only known at run time, so it cannot \
                     be shown to be safe"
                ),
            );
        }
    }
}

/// The rule a recursive delete of a path in `danger` breaks, as the shell's `rm -r` would.
fn tree_delete_rule(danger: &Danger) -> Rule {
    match danger {
        Danger::Root => Rule::RmRoot,
        Danger::Home => Rule::RmHome,
        Danger::SystemDir(_) => Rule::RmSystemDir,
    }
}
