//! Literal code given to interpreters (`python3 -c`, `perl -e`, `ruby -e`, `node -e`, `php -r`,
//! `awk`): the shell commands it runs and the language's own recursive deletes, writes to
//! devices and fork loops.

use super::Rule;
use super::commands::Stdin;
use super::paths::{self, AbsPath, Danger};
use super::words::{self, Resolved, Seg, Word};
use super::{Analyzer, Scope};

/// Most string literals of one program we analyse as shell, and most calls we follow.
const MAX_LITERALS: usize = 16;

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
                    };
                }
                if arg == "--" && lang == Lang::Awk {
                    if let Some(program) = args.get(i) {
                        code.push(program);
                    }
                    return Program {
                        code,
                        has_program: true,
                    };
                }
                return Program {
                    code,
                    has_program: arg != "-",
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
                    };
                }
                break;
            }
            if program_letters.contains(c) {
                return Program {
                    code,
                    has_program: true,
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
    Program { code, has_program }
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
        for call in calls(
            code,
            &["exec", "eval", "compile", "instance_eval", "Function"],
            &lits,
            false,
        )
        .iter()
        .take(4)
        {
            for lit in call_literals(call, &lits) {
                let inner = lit.text.clone();
                self.analyse_code(name, shown, &inner, scope, depth + 1);
            }
        }
        for call in calls(code, &shell_calls, &lits, bare_words)
            .iter()
            .take(MAX_LITERALS)
        {
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
            scripts.extend(lits.iter().take(MAX_LITERALS).map(|l| l.text.clone()));
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
        }
        let before = self.findings_len();
        for script in scripts.iter().take(2 * MAX_LITERALS) {
            self.analyse_nested(script, scope, depth + 1);
        }
        let found_shell = self.findings_len() > before;
        self.native_deletes(shown, code, &lits, scope);
        self.native_device_writes(shown, code, &lits, scope);
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
            for path in call_paths(span, &call, lits, scope) {
                let Some(danger) = paths::classify(&path) else {
                    continue;
                };
                let rule = match danger {
                    Danger::Root => Rule::RmRoot,
                    Danger::Home => Rule::RmHome,
                    Danger::SystemDir(_) => Rule::RmSystemDir,
                };
                self.report(
                    rule,
                    format!("`{shown}` deletes {} ({})", danger.describe(), call.name),
                );
            }
        }
        for call in calls(code, FILE_DELETES, lits, true) {
            self.file_delete(shown, call_literals(&call, lits).first().copied(), scope);
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

/// The paths a tree-delete call names: its first literal, or the home directory when the
/// arguments name it (`Path.home()`, `os.path.expanduser('~')`, `Dir.home`, `os.homedir()`).
fn call_paths(span: &str, call: &Call<'_>, lits: &[Literal], scope: &Scope) -> Vec<AbsPath> {
    let home = [
        "expanduser",
        "Path.home",
        "Dir.home",
        "homedir",
        "HOME",
        "home_dir",
    ]
    .iter()
    .any(|h| span.contains(h));
    let first = call_literals(call, lits).first().map(|l| l.text.clone());
    match first {
        Some(text) if home && (text == "~" || text.starts_with("~/") || text == "HOME") => {
            vec![AbsPath::home().join(text.trim_start_matches('~').trim_start_matches("HOME"))]
        }
        Some(text) => {
            let word = Word {
                raw: text.clone(),
                cands: vec![Resolved(vec![Seg::Text(text)])],
            };
            paths::static_paths(&word, scope.cwd.as_ref())
        }
        None if home => vec![AbsPath::home()],
        None => Vec::new(),
    }
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
        scope: &Scope,
        depth: usize,
    ) {
        let program = program_words(name, args);
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
            for text in stdin.texts.iter().take(4) {
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
