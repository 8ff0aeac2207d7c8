//! Conservative analysis of scripts `brush-parser` rejects (or that are too deeply nested to hand
//! to it). A flat, iterative tokenizer splits the script into commands at every unquoted
//! operator, keyword and newline, so each command is checked by the same rules as a parsed one.
//! It over-splits rather than under-splits: a fragment that is not really a command can only add
//! findings. Unterminated quotes or substitutions mean we cannot tell where commands start, so
//! they add an `unparseable` finding on top of whatever was found.

use std::collections::VecDeque;

use super::Rule;
use super::commands::{Redirect, SimpleCmd};
use super::words::Word;
use super::{Analyzer, Scope};

/// Characters that end an unquoted word.
fn is_meta(c: char) -> bool {
    matches!(
        c,
        ';' | '&' | '|' | '(' | ')' | '<' | '>' | '\n' | ' ' | '\t'
    )
}

/// Operators, longest first so that `&&` wins over `&`.
const OPERATORS: &[&str] = &[
    ";;&", "&>>", "<<<", "<<-", "&&", "||", ";;", ";&", "|&", "&>", ">>", ">|", ">&", "<<", "<>",
    "<&", ">", "<", "|", "&", ";", "(", ")",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Op(&'static str),
    Newline,
    HereDoc { body: String, expands: bool },
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    complete: bool,
    tokens: Vec<Tok>,
    /// Here-document delimiters waiting for the end of the current line.
    pending: Vec<(String, bool, bool)>,
    expect_delimiter: Option<bool>,
}

impl Lexer {
    fn run(script: &str) -> (Vec<Tok>, bool) {
        let mut lx = Self {
            chars: script.chars().collect(),
            pos: 0,
            complete: true,
            tokens: Vec::new(),
            pending: Vec::new(),
            expect_delimiter: None,
        };
        while lx.pos < lx.chars.len() {
            lx.step();
        }
        if !lx.pending.is_empty() {
            // Bash reads a here-document cut off by the end of input to the end; so do we.
            lx.read_heredocs();
        }
        (lx.tokens, lx.complete)
    }

    fn peek(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn step(&mut self) {
        let Some(c) = self.peek(0) else { return };
        match c {
            ' ' | '\t' | '\r' => self.pos += 1,
            '\\' if self.peek(1) == Some('\n') => self.pos += 2,
            '#' => {
                while self.peek(0).is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            }
            '\n' => {
                self.pos += 1;
                self.tokens.push(Tok::Newline);
                self.read_heredocs();
            }
            '<' | '>' if self.peek(1) == Some('(') => {
                // Process substitution: lex it as a command substitution word.
                self.pos += 1;
                let inner = self.balanced('(', ')');
                self.tokens.push(Tok::Word(format!("$({inner})")));
            }
            c if is_meta(c) => {
                let rest: String = self.chars[self.pos..].iter().take(3).collect();
                let op = OPERATORS
                    .iter()
                    .find(|op| rest.starts_with(**op))
                    .copied()
                    .unwrap_or(";");
                self.pos += op.chars().count().max(1);
                if matches!(op, "<<" | "<<-") {
                    self.expect_delimiter = Some(op == "<<-");
                }
                self.tokens.push(Tok::Op(op));
            }
            _ => self.word(),
        }
    }

    fn word(&mut self) {
        let start = self.pos;
        let mut quoted = false;
        while let Some(c) = self.peek(0) {
            match c {
                c if is_meta(c) => break,
                '\\' => self.pos += 2,
                '\'' => {
                    quoted = true;
                    self.pos += 1;
                    self.skip_until('\'');
                }
                '"' => {
                    quoted = true;
                    self.double_quoted();
                }
                '`' => {
                    self.pos += 1;
                    self.skip_backquoted();
                }
                '$' if matches!(self.peek(1), Some('(')) => {
                    self.pos += 1;
                    self.balanced('(', ')');
                }
                '$' if matches!(self.peek(1), Some('{')) => {
                    self.pos += 1;
                    self.balanced('{', '}');
                }
                _ => self.pos += 1,
            }
        }
        let end = self.pos.min(self.chars.len());
        let raw: String = self.chars[start..end].iter().collect();
        // `2>file`: the digits are a descriptor number, not a word.
        if !raw.is_empty()
            && raw.chars().all(|c| c.is_ascii_digit())
            && matches!(self.peek(0), Some('<' | '>'))
        {
            return;
        }
        if let Some(strip_tabs) = self.expect_delimiter.take() {
            let delimiter: String = raw
                .chars()
                .filter(|c| !matches!(c, '\'' | '"' | '\\'))
                .collect();
            self.pending
                .push((delimiter, strip_tabs, !quoted && !raw.contains('\\')));
        }
        if !raw.is_empty() {
            self.tokens.push(Tok::Word(raw));
        }
    }

    fn skip_until(&mut self, end: char) {
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            if c == end {
                return;
            }
        }
        self.complete = false;
    }

    fn skip_backquoted(&mut self) {
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            match c {
                '\\' => self.pos += 1,
                '`' => return,
                _ => {}
            }
        }
        self.complete = false;
    }

    fn double_quoted(&mut self) {
        self.pos += 1;
        while let Some(c) = self.peek(0) {
            match c {
                '\\' => self.pos += 2,
                '"' => {
                    self.pos += 1;
                    return;
                }
                '`' => {
                    self.pos += 1;
                    self.skip_backquoted();
                }
                '$' if self.peek(1) == Some('(') => {
                    self.pos += 1;
                    self.balanced('(', ')');
                }
                _ => self.pos += 1,
            }
        }
        self.complete = false;
    }

    /// Consumes a bracketed region starting at the opener under the cursor; returns its inside.
    fn balanced(&mut self, open: char, close: char) -> String {
        let start = self.pos + 1;
        let mut level = 0usize;
        while let Some(c) = self.peek(0) {
            match c {
                '\\' => {
                    self.pos += 2;
                    continue;
                }
                '\'' => {
                    self.pos += 1;
                    self.skip_until('\'');
                    continue;
                }
                '"' => {
                    self.double_quoted();
                    continue;
                }
                c if c == open => level += 1,
                c if c == close => {
                    level = level.saturating_sub(1);
                    if level == 0 {
                        let inner: String =
                            self.chars[start.min(self.pos)..self.pos].iter().collect();
                        self.pos += 1;
                        return inner;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        self.complete = false;
        self.chars[start.min(self.chars.len())..].iter().collect()
    }

    fn read_heredocs(&mut self) {
        for (delimiter, strip_tabs, expands) in std::mem::take(&mut self.pending) {
            let mut body = String::new();
            loop {
                if self.pos >= self.chars.len() {
                    break;
                }
                let line_end = self.chars[self.pos..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(self.chars.len(), |p| self.pos + p);
                let line: String = self.chars[self.pos..line_end].iter().collect();
                self.pos = (line_end + 1).min(self.chars.len());
                let compared = if strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if compared == delimiter {
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            self.tokens.push(Tok::HereDoc { body, expands });
        }
    }
}

/// A command as the tokenizer sees it, before word resolution.
#[derive(Default, Debug)]
struct RawCmd {
    words: Vec<String>,
    /// Output redirections: operator and target.
    writes: Vec<(&'static str, String)>,
    /// Text fed to stdin, and whether the shell expands it (running its substitutions).
    inputs: Vec<(String, bool)>,
}

/// What the next word means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Command,
    WriteTarget(&'static str),
    ReadTarget,
    HereString,
    HereDelimiter,
    /// The name after the `function` keyword.
    FunctionName,
    /// Skipping a `for`/`select` header up to its separator, or `case WORD` up to `in`.
    Header {
        until_in: bool,
    },
}

impl Analyzer {
    pub(crate) fn analyse_fallback(&mut self, script: &str, scope: &mut Scope, depth: usize) {
        let (tokens, complete) = Lexer::run(script);
        self.fallback_fork_bombs(&tokens);
        let (cmds, pipelines) = group(&tokens);
        for pipeline in pipelines {
            let mut stages = Vec::new();
            for id in pipeline {
                let Some(raw) = cmds.get(id) else { continue };
                stages.push(Some(self.lower_raw(raw, scope, depth)));
            }
            self.check_pipeline(&stages, scope, depth);
        }
        if !complete {
            self.report(
                Rule::Unparseable,
                format!(
                    "`{}` has an unterminated quote or substitution, so where its commands \
                     begin and end cannot be known",
                    super::words::excerpt(script)
                ),
            );
        }
    }

    fn lower_raw(&mut self, raw: &RawCmd, scope: &Scope, depth: usize) -> SimpleCmd {
        let mut cmd = SimpleCmd::default();
        let mut words = raw.words.iter().peekable();
        while let Some(word) = words.next_if(|w| is_raw_assignment(w)) {
            if let Some((name, value)) = word.split_once('=') {
                let cands = self.resolve_single(value, scope, depth, 0);
                cmd.assignments.push((name.to_owned(), cands));
            }
        }
        for word in words {
            cmd.words.extend(self.resolve_word(word, scope, depth));
        }
        for (op, target) in &raw.writes {
            let cands = self.resolve_single(target, scope, depth, 0);
            cmd.redirects.push(Redirect::Write {
                op: (*op).to_owned(),
                target: Word {
                    raw: target.clone(),
                    cands,
                },
            });
        }
        for (text, expands) in &raw.inputs {
            if *expands {
                for inner in substitutions(text) {
                    self.analyse_nested(&inner, scope, depth + 1);
                }
            }
            cmd.redirects.push(Redirect::InputText(text.clone()));
        }
        cmd
    }

    /// `name() { … name | name … }` or `name &` inside the body, on the token stream; also the
    /// `function name { … }` spelling.
    fn fallback_fork_bombs(&mut self, tokens: &[Tok]) {
        for (i, tok) in tokens.iter().enumerate() {
            let (name, body_start) = match (tok, tokens.get(i + 1), tokens.get(i + 2)) {
                (Tok::Word(name), Some(Tok::Op("(")), Some(Tok::Op(")"))) => (name, i + 3),
                (Tok::Word(kw), Some(Tok::Word(name)), _) if kw == "function" => {
                    let skip = usize::from(tokens.get(i + 2) == Some(&Tok::Op("(")))
                        + usize::from(tokens.get(i + 3) == Some(&Tok::Op(")")));
                    (name, i + 2 + skip)
                }
                _ => continue,
            };
            let mut level = 0usize;
            let mut body = Vec::new();
            for tok in tokens.iter().skip(body_start) {
                match tok {
                    Tok::Word(w) if w == "{" => level += 1,
                    Tok::Word(w) if w == "}" => {
                        level = level.saturating_sub(1);
                        if level == 0 {
                            break;
                        }
                    }
                    Tok::Op("(") => level += 1,
                    Tok::Op(")") => {
                        level = level.saturating_sub(1);
                        if level == 0 {
                            break;
                        }
                    }
                    Tok::Newline if level == 0 => continue,
                    _ if level == 0 => break,
                    _ => {}
                }
                body.push(tok);
            }
            let is_name = |t: &Tok| matches!(t, Tok::Word(w) if w == name);
            let forks = body.windows(2).any(|pair| {
                (is_name(pair[0]) && matches!(pair[1], Tok::Op("|" | "|&" | "&")))
                    || (matches!(pair[0], Tok::Op("|" | "|&")) && is_name(pair[1]))
            });
            if forks {
                self.report(
                    Rule::ForkBomb,
                    format!(
                        "function `{name}` is a fork bomb: it runs itself in a pipeline or in \
                         the background, multiplying processes until the machine stalls"
                    ),
                );
            }
        }
    }
}

fn is_raw_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Splits the token stream into commands and pipelines (lists of command indices).
fn group(tokens: &[Tok]) -> (Vec<RawCmd>, Vec<Vec<usize>>) {
    let mut cmds: Vec<RawCmd> = Vec::new();
    let mut pipelines: Vec<Vec<usize>> = Vec::new();
    let mut pipeline: Vec<usize> = Vec::new();
    let mut current = RawCmd::default();
    let mut expect = Expect::Command;
    let mut heredoc_owners: VecDeque<usize> = VecDeque::new();
    let mut owes_heredoc = 0usize;

    let flush_cmd = |current: &mut RawCmd,
                     cmds: &mut Vec<RawCmd>,
                     pipeline: &mut Vec<usize>,
                     owes: &mut usize,
                     owners: &mut VecDeque<usize>| {
        let cmd = std::mem::take(current);
        if cmd.words.is_empty() && cmd.writes.is_empty() && *owes == 0 {
            return;
        }
        cmds.push(cmd);
        let id = cmds.len() - 1;
        for _ in 0..*owes {
            owners.push_back(id);
        }
        *owes = 0;
        pipeline.push(id);
    };

    for (idx, tok) in tokens.iter().enumerate() {
        match tok {
            Tok::Word(w) => match expect {
                Expect::WriteTarget(op) => {
                    current.writes.push((op, w.clone()));
                    expect = Expect::Command;
                }
                Expect::ReadTarget | Expect::HereDelimiter | Expect::FunctionName => {
                    expect = Expect::Command;
                }
                Expect::HereString => {
                    current.inputs.push((strip_quotes(w), true));
                    expect = Expect::Command;
                }
                Expect::Header { until_in } => {
                    if until_in && w == "in" {
                        expect = Expect::Command;
                    }
                }
                Expect::Command => {
                    if current.words.is_empty() {
                        match w.as_str() {
                            "if" | "then" | "elif" | "else" | "do" | "while" | "until" | "!"
                            | "{" | "time" => continue,
                            "function" => {
                                expect = Expect::FunctionName;
                                continue;
                            }
                            "fi" | "done" | "esac" | "}" => {
                                flush_cmd(
                                    &mut current,
                                    &mut cmds,
                                    &mut pipeline,
                                    &mut owes_heredoc,
                                    &mut heredoc_owners,
                                );
                                continue;
                            }
                            "for" | "select" => {
                                expect = Expect::Header { until_in: false };
                                continue;
                            }
                            "case" => {
                                expect = Expect::Header { until_in: true };
                                continue;
                            }
                            _ => {}
                        }
                    }
                    current.words.push(w.clone());
                }
            },
            Tok::Op(op) => {
                match *op {
                    ">" | ">>" | ">|" | "&>" | "&>>" | "<>" | ">&" => {
                        expect = Expect::WriteTarget(op);
                        continue;
                    }
                    "<" | "<&" => {
                        expect = Expect::ReadTarget;
                        continue;
                    }
                    "<<<" => {
                        expect = Expect::HereString;
                        continue;
                    }
                    "<<" | "<<-" => {
                        owes_heredoc += 1;
                        expect = Expect::HereDelimiter;
                        continue;
                    }
                    _ => {}
                }
                if matches!(expect, Expect::Header { until_in: true }) && *op != ";" {
                    continue;
                }
                if *op == "("
                    && current.words.len() == 1
                    && tokens.get(idx + 1) == Some(&Tok::Op(")"))
                {
                    // `name ()`: a function definition, not a call of `name`.
                    current.words.clear();
                }
                expect = Expect::Command;
                flush_cmd(
                    &mut current,
                    &mut cmds,
                    &mut pipeline,
                    &mut owes_heredoc,
                    &mut heredoc_owners,
                );
                if !matches!(*op, "|" | "|&") {
                    pipelines.push(std::mem::take(&mut pipeline));
                }
            }
            Tok::Newline => {
                if !matches!(expect, Expect::Header { until_in: true }) {
                    expect = Expect::Command;
                }
                flush_cmd(
                    &mut current,
                    &mut cmds,
                    &mut pipeline,
                    &mut owes_heredoc,
                    &mut heredoc_owners,
                );
                pipelines.push(std::mem::take(&mut pipeline));
            }
            Tok::HereDoc { body, expands } => {
                if let Some(owner) = heredoc_owners.pop_front()
                    && let Some(cmd) = cmds.get_mut(owner)
                {
                    // With a quoted delimiter (`<<'EOF'`) the body is literal: nothing in it runs.
                    cmd.inputs.push((body.clone(), *expands));
                }
            }
        }
    }
    flush_cmd(
        &mut current,
        &mut cmds,
        &mut pipeline,
        &mut owes_heredoc,
        &mut heredoc_owners,
    );
    pipelines.push(pipeline);
    (cmds, pipelines)
}

fn strip_quotes(word: &str) -> String {
    word.chars().filter(|c| !matches!(c, '\'' | '"')).collect()
}

/// Command substitutions in a text, ignoring quotes (a here-document's quotes are literal).
fn substitutions(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && chars.get(i + 1) == Some(&'(') {
            let end = super::words::matching_close(&chars, i + 1, '(', ')');
            out.push(
                chars[(i + 2).min(end)..end.min(chars.len())]
                    .iter()
                    .collect(),
            );
            i = end + 1;
        } else if chars[i] == '`' {
            let end = chars[i + 1..]
                .iter()
                .position(|&c| c == '`')
                .map_or(chars.len(), |p| i + 1 + p);
            out.push(chars[i + 1..end].iter().collect());
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}
