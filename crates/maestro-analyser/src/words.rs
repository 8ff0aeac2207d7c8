//! Shell words after quote removal and (static) expansion.
//!
//! A word is resolved to a small set of candidate values, each a sequence of segments: literal
//! text, the home directory, or an unknown run-time value. Candidates come from `${X:-default}`,
//! `for` loop variables and brace expansion; the rules deny when any candidate is destructive.

use brush_parser::word::{Parameter, ParameterExpr, SpecialParameter, TildeExpr, WordPiece};

use super::{Analyzer, Scope};

/// Most alternative values kept for one word. Enough for `for d in / /usr /etc`, small enough
/// that products of several multi-valued parts cannot explode.
pub(crate) const MAX_CANDIDATES: usize = 8;

/// Longest value (in bytes, roughly) tracked for one word or variable; longer ones become unknown.
pub(crate) const MAX_VALUE_BYTES: usize = 4096;

/// Most segments (text runs, unknowns) tracked in one value.
const MAX_SEGMENTS: usize = 64;

/// Most words one brace expansion may produce, and the longest word we brace-expand.
const MAX_BRACE_WORDS: usize = 64;
const MAX_BRACE_INPUT: usize = 4096;

/// How many `${X:-${Y:-…}}` defaults we follow inside one word.
const MAX_DEFAULT_NESTING: usize = 4;

/// One segment of a resolved word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// Literal characters (quotes already removed).
    Text(String),
    /// The invoking user's home directory (`~`, `$HOME`).
    Home,
    /// A value only known at run time. `may_be_empty` is false when the shell guarantees a
    /// non-empty value (`${X:?}`, command substitutions, special parameters), which decides
    /// whether `"$X"/*` could collapse to `/*`.
    Unknown {
        /// Whether the value can expand to nothing.
        may_be_empty: bool,
    },
}

/// One candidate value of a word.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Resolved(pub(crate) Vec<Seg>);

impl Resolved {
    pub(crate) fn text(s: &str) -> Self {
        let mut r = Self::default();
        r.push_text(s);
        r
    }

    pub(crate) fn unknown(may_be_empty: bool) -> Self {
        Self(vec![Seg::Unknown { may_be_empty }])
    }

    pub(crate) fn push_text(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(Seg::Text(last)) = self.0.last_mut() {
            last.push_str(s);
        } else {
            self.0.push(Seg::Text(s.to_owned()));
        }
        self.clamp();
    }

    /// Appends a segment that is not text.
    pub(crate) fn push_seg(&mut self, seg: Seg) {
        match seg {
            Seg::Text(t) => self.push_text(&t),
            other => {
                self.0.push(other);
                self.clamp();
            }
        }
    }

    fn append(&mut self, other: &Self) {
        for seg in &other.0 {
            match seg {
                Seg::Text(t) => self.push_text(t),
                other => self.push_seg(other.clone()),
            }
        }
    }

    /// The bytes this value holds, as counted against the analysis's budgets.
    pub(crate) fn weight(&self) -> usize {
        self.0
            .iter()
            .map(|seg| match seg {
                Seg::Text(t) => t.len() + 8,
                _ => 8,
            })
            .sum()
    }

    /// A value longer than [`MAX_VALUE_BYTES`] (or of more than [`MAX_SEGMENTS`] parts) is no
    /// longer tracked: it becomes a non-empty unknown, which the rules treat as any run-time
    /// value (`x=$x$x` thirty times would otherwise hold a gigabyte).
    fn clamp(&mut self) {
        if self.0.len() > MAX_SEGMENTS || self.weight() > MAX_VALUE_BYTES {
            let may_be_empty = !self.0.iter().any(|seg| match seg {
                Seg::Text(_) | Seg::Home => true,
                Seg::Unknown { may_be_empty } => !may_be_empty,
            });
            *self = Self::unknown(may_be_empty);
        }
    }

    /// The value, when it is entirely static.
    pub(crate) fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Text(t) => out.push_str(t),
                _ => return None,
            }
        }
        Some(out)
    }

    /// Spells the value back as shell source, for strings that a shell will parse again
    /// (`sh -c "$X …"`). Unknown parts become references to a variable that is never set, so the
    /// inner analysis treats them as unknown too, with the same emptiness.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Text(t) => out.push_str(t),
                Seg::Home => out.push_str("$HOME"),
                Seg::Unknown { may_be_empty: true } => out.push_str("${__maestro_unknown__}"),
                Seg::Unknown {
                    may_be_empty: false,
                } => out.push_str("${__maestro_unknown__:?}"),
            }
        }
        out
    }
}

/// One argv element as the command will see it.
#[derive(Clone, Debug)]
pub(crate) struct Word {
    /// Source spelling, for messages.
    pub(crate) raw: String,
    /// Possible values (at least one).
    pub(crate) cands: Vec<Resolved>,
}

impl Word {
    /// A word whose only value is the given literal text.
    pub(crate) fn literal(s: &str) -> Self {
        Self {
            raw: s.to_owned(),
            cands: vec![Resolved::text(s)],
        }
    }

    /// An argv element passed without a shell. Taken literally, except that the home-directory
    /// spellings keep their meaning (see `analyse_argv`).
    pub(crate) fn argv_literal(s: &str) -> Self {
        let home_rest = if let Some(rest) = s.strip_prefix("${HOME}") {
            Some(rest)
        } else if let Some(rest) = s.strip_prefix("$HOME") {
            Some(rest)
        } else if s == "~" || s.starts_with("~/") {
            s.get(1..)
        } else {
            None
        };
        let res = match home_rest {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                let mut r = Resolved(vec![Seg::Home]);
                r.push_text(rest);
                r
            }
            _ => Resolved::text(s),
        };
        Self {
            raw: s.to_owned(),
            cands: vec![res],
        }
    }

    /// Roughly how many bytes this word holds.
    pub(crate) fn weight(&self) -> usize {
        self.raw.len() + self.cands.iter().map(Resolved::weight).sum::<usize>()
    }

    /// The value when it is a single static string (what option parsing needs).
    pub(crate) fn lit(&self) -> Option<String> {
        match self.cands.as_slice() {
            [only] => only.literal(),
            _ => None,
        }
    }

    /// All static values among the candidates.
    pub(crate) fn literals(&self) -> Vec<String> {
        self.cands.iter().filter_map(Resolved::literal).collect()
    }
}

/// Joins words back into a command line for messages.
pub(crate) fn display(words: &[Word]) -> String {
    let joined = words
        .iter()
        .map(|w| w.raw.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    excerpt(&joined)
}

/// Shortens text for a message, on a character boundary, flattening newlines.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 120;
    let flat: String = s
        .trim()
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .take(MAX_CHARS + 1)
        .collect();
    if flat.chars().count() > MAX_CHARS {
        let cut: String = flat.chars().take(MAX_CHARS).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// Builds the cartesian product of per-piece alternatives, capped at [`MAX_CANDIDATES`].
fn concat_alternatives(mut acc: Vec<Resolved>, alts: &[Resolved]) -> Vec<Resolved> {
    if let [only] = alts {
        // The common case, done in place: a word of many pieces must stay linear.
        for a in &mut acc {
            a.append(only);
        }
        return acc;
    }
    let mut out = Vec::new();
    for a in &acc {
        for b in alts {
            if out.len() >= MAX_CANDIDATES {
                return out;
            }
            let mut c = a.clone();
            c.append(b);
            out.push(c);
        }
    }
    out
}

impl Analyzer {
    /// Resolves one source word into argv elements (more than one after brace expansion),
    /// analysing any command substitutions inside it along the way.
    pub(crate) fn resolve_word(&mut self, raw: &str, scope: &Scope, depth: usize) -> Vec<Word> {
        if matches!(raw, "\"$@\"" | "$@" | "$*" | "${@}" | "\"${@}\"")
            && let Some(words) = &scope.positional
        {
            return words.clone();
        }
        let mut out = Vec::new();
        for expanded in brace_expand(raw) {
            let cands = self.resolve_single(&expanded, scope, depth, 0);
            let word = Word {
                raw: expanded,
                cands,
            };
            // Field splitting: an unquoted expansion with a known value containing blanks
            // becomes several words (`RM="rm -rf"; $RM /`).
            // A known IFS (`IFS=,; cmd=rm,-rf,/; $cmd`) splits at its characters instead.
            let unquoted = !word.raw.contains(['\'', '"', '\\']) && word.raw.contains('$');
            let ifs = scope
                .vars
                .get("IFS")
                .and_then(|values| values.first())
                .and_then(Resolved::literal);
            let is_sep = |c: char| match &ifs {
                Some(ifs) => ifs.contains(c),
                None => c.is_whitespace(),
            };
            match word.lit() {
                Some(value) if unquoted && value.contains(is_sep) => {
                    out.extend(
                        value
                            .split(is_sep)
                            .filter(|part| !part.is_empty())
                            .map(Word::literal),
                    );
                }
                _ => out.push(word),
            }
        }
        out
    }

    /// Resolves a word without brace expansion (assignment values, defaults, redirect targets).
    pub(crate) fn resolve_single(
        &mut self,
        raw: &str,
        scope: &Scope,
        depth: usize,
        nesting: usize,
    ) -> Vec<Resolved> {
        if !self.spend(1) {
            return vec![Resolved::unknown(true)];
        }
        // The word parser recurses like the program parser, so it gets the same opener bound.
        if self.use_parser
            && super::count_openers(raw) <= super::MAX_OPENERS
            && let Ok(pieces) = brush_parser::word::parse(raw, &super::parser_options())
        {
            let pieces: Vec<WordPiece> = pieces.into_iter().map(|p| p.piece).collect();
            return self.resolve_pieces(&pieces, scope, depth, nesting, true);
        }
        vec![self.resolve_fallback(raw, scope, depth)]
    }

    fn resolve_pieces(
        &mut self,
        pieces: &[WordPiece],
        scope: &Scope,
        depth: usize,
        nesting: usize,
        at_word_start: bool,
    ) -> Vec<Resolved> {
        let mut acc = vec![Resolved::default()];
        for (i, piece) in pieces.iter().enumerate() {
            let alts = self.resolve_piece(piece, scope, depth, nesting, at_word_start && i == 0);
            acc = concat_alternatives(acc, &alts);
        }
        acc
    }

    fn resolve_piece(
        &mut self,
        piece: &WordPiece,
        scope: &Scope,
        depth: usize,
        nesting: usize,
        at_word_start: bool,
    ) -> Vec<Resolved> {
        match piece {
            WordPiece::Text(t) | WordPiece::SingleQuotedText(t) => vec![Resolved::text(t)],
            WordPiece::AnsiCQuotedText(t) => vec![Resolved::text(&decode_ansi_c(t))],
            WordPiece::EscapeSequence(e) => {
                let unescaped: String = e.chars().skip(1).filter(|&c| c != '\n').collect();
                vec![Resolved::text(&unescaped)]
            }
            WordPiece::DoubleQuotedSequence(inner)
            | WordPiece::GettextDoubleQuotedSequence(inner) => {
                let inner: Vec<WordPiece> = inner.iter().map(|p| p.piece.clone()).collect();
                self.resolve_pieces(&inner, scope, depth, nesting, false)
            }
            WordPiece::TildeExpansion(t) => match t {
                TildeExpr::Home | TildeExpr::UserHome(_) if at_word_start => {
                    vec![Resolved(vec![Seg::Home])]
                }
                TildeExpr::WorkingDir => vec![working_dir(scope)],
                _ => vec![Resolved::unknown(false)],
            },
            WordPiece::ParameterExpansion(expr) => {
                self.resolve_parameter(expr, scope, depth, nesting)
            }
            WordPiece::CommandSubstitution(script)
            | WordPiece::BackquotedCommandSubstitution(script) => {
                self.analyse_nested(script, scope, depth + 1);
                vec![Resolved::unknown(false)]
            }
            WordPiece::ArithmeticExpression(expr) => {
                // For the command substitutions inside (`$(( $(cmd) + 1 ))`), and for the same
                // `$( (…) )` ambiguity as arithmetic commands have.
                self.analyse_nested(&expr.value, scope, depth + 1);
                vec![Resolved::unknown(false)]
            }
        }
    }

    fn resolve_parameter(
        &mut self,
        expr: &ParameterExpr,
        scope: &Scope,
        depth: usize,
        nesting: usize,
    ) -> Vec<Resolved> {
        match expr {
            ParameterExpr::Parameter {
                parameter,
                indirect: false,
            } => lookup(parameter, scope),
            ParameterExpr::UseDefaultValues {
                parameter,
                indirect: false,
                default_value,
                ..
            }
            | ParameterExpr::AssignDefaultValues {
                parameter,
                indirect: false,
                default_value,
                ..
            } => {
                // Either the variable's own (then non-empty) value or the default.
                let mut out: Vec<Resolved> = lookup(parameter, scope)
                    .into_iter()
                    .map(|r| match r.0.as_slice() {
                        [Seg::Unknown { .. }] => Resolved::unknown(false),
                        _ => r,
                    })
                    .collect();
                let default = default_value.as_deref().unwrap_or("");
                if nesting < MAX_DEFAULT_NESTING {
                    for d in self.resolve_single(default, scope, depth, nesting + 1) {
                        if out.len() < MAX_CANDIDATES && !out.contains(&d) {
                            out.push(d);
                        }
                    }
                } else {
                    out.push(Resolved::unknown(true));
                }
                out
            }
            ParameterExpr::IndicateErrorIfNullOrUnset {
                parameter,
                indirect: false,
                ..
            } => lookup(parameter, scope)
                .into_iter()
                .map(|r| match r.0.as_slice() {
                    [Seg::Unknown { .. }] => Resolved::unknown(false),
                    _ => r,
                })
                .collect(),
            _ => vec![Resolved::unknown(true)],
        }
    }

    /// Quote removal for words `brush-parser` could not parse: handles quotes, escapes, `$NAME`,
    /// `${…}`, `$(…)` and backquotes well enough, treating anything odd as unknown.
    pub(crate) fn resolve_fallback(&mut self, raw: &str, scope: &Scope, depth: usize) -> Resolved {
        let chars: Vec<char> = raw.chars().collect();
        let mut out = Resolved::default();
        let mut i = 0;
        let mut in_double = false;
        if chars.first() == Some(&'~') {
            let end = chars.iter().position(|&c| c == '/').unwrap_or(chars.len());
            out.push_seg(Seg::Home);
            i = end;
        }
        while i < chars.len() {
            let c = chars[i];
            match c {
                '\'' if !in_double => {
                    let end = find_char(&chars, i + 1, '\'');
                    out.push_text(&collect(&chars, i + 1, end));
                    i = end + 1;
                }
                '"' => {
                    in_double = !in_double;
                    i += 1;
                }
                '\\' => {
                    if let Some(&next) = chars.get(i + 1)
                        && next != '\n'
                    {
                        out.push_text(&next.to_string());
                    }
                    i += 2;
                }
                '`' => {
                    let end = find_char(&chars, i + 1, '`');
                    let inner = collect(&chars, i + 1, end);
                    self.analyse_nested(&inner, scope, depth + 1);
                    out.push_seg(Seg::Unknown {
                        may_be_empty: false,
                    });
                    i = end + 1;
                }
                '$' => i = self.fallback_dollar(&chars, i, &mut out, scope, depth, in_double),
                _ => {
                    out.push_text(&c.to_string());
                    i += 1;
                }
            }
        }
        out
    }

    fn fallback_dollar(
        &mut self,
        chars: &[char],
        i: usize,
        out: &mut Resolved,
        scope: &Scope,
        depth: usize,
        in_double: bool,
    ) -> usize {
        match chars.get(i + 1) {
            Some('(') => {
                let end = matching_close(chars, i + 1, '(', ')');
                if chars.get(i + 2) != Some(&'(') {
                    let inner = collect(chars, i + 2, end);
                    self.analyse_nested(&inner, scope, depth + 1);
                }
                out.push_seg(Seg::Unknown {
                    may_be_empty: false,
                });
                end + 1
            }
            Some('{') => {
                let end = matching_close(chars, i + 1, '{', '}');
                let inner = collect(chars, i + 2, end);
                if inner == "HOME" && !scope.vars.contains_key("HOME") {
                    out.push_seg(Seg::Home);
                } else {
                    out.push_seg(Seg::Unknown { may_be_empty: true });
                }
                end + 1
            }
            Some('\'') if !in_double => {
                let end = find_char(chars, i + 2, '\'');
                out.push_text(&decode_ansi_c(&collect(chars, i + 2, end)));
                end + 1
            }
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let mut end = i + 1;
                while chars
                    .get(end)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    end += 1;
                }
                let name = collect(chars, i + 1, end);
                match lookup(&Parameter::Named(name), scope).into_iter().next() {
                    Some(r) => out.append(&r),
                    None => out.push_seg(Seg::Unknown { may_be_empty: true }),
                }
                end
            }
            Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(*c) => {
                out.push_seg(Seg::Unknown { may_be_empty: true });
                i + 2
            }
            _ => {
                out.push_text("$");
                i + 1
            }
        }
    }
}

/// Known values of a parameter in `scope`; the environment is otherwise unknown.
fn lookup(parameter: &Parameter, scope: &Scope) -> Vec<Resolved> {
    let name = match parameter {
        Parameter::Named(n) => n.clone(),
        Parameter::Positional(n) => n.to_string(),
        Parameter::Special(SpecialParameter::AllPositionalParameters { .. }) => {
            return vec![Resolved::unknown(true)];
        }
        Parameter::Special(_) => return vec![Resolved::unknown(false)],
        _ => return vec![Resolved::unknown(true)],
    };
    if let Some(values) = scope.vars.get(&name)
        && !values.is_empty()
    {
        return values.clone();
    }
    // The step's environment is known, except `HOME`: whatever it is set to, it stays the home
    // directory for the rules (`rm -rf "$HOME"` is `rm-home` with any value).
    if name != "HOME"
        && let Some(value) = scope.env.get(&name)
    {
        return vec![Resolved::text(value)];
    }
    match name.as_str() {
        "HOME" => vec![Resolved(vec![Seg::Home])],
        // Always set by the shell to an absolute path, so never empty.
        "PWD" => vec![working_dir(scope)],
        _ => vec![Resolved::unknown(true)],
    }
}

/// The value of `$PWD` (and `~+`): the working directory when a `cd` made it known, else a
/// run-time value that is never empty (the shell always sets it).
fn working_dir(scope: &Scope) -> Resolved {
    match &scope.cwd {
        Some(cwd) if cwd.is_known() => {
            let mut value = match cwd.anchor {
                super::paths::Anchor::Home => Resolved(vec![Seg::Home]),
                _ => Resolved::default(),
            };
            value.push_text(cwd.display().trim_start_matches('~'));
            value
        }
        _ => Resolved::unknown(false),
    }
}

fn find_char(chars: &[char], from: usize, target: char) -> usize {
    let mut i = from;
    while i < chars.len() {
        if chars[i] == '\\' && target != '\'' {
            i += 2;
            continue;
        }
        if chars[i] == target {
            return i;
        }
        i += 1;
    }
    chars.len()
}

/// Index of the bracket closing the one at `open_at`, skipping quoted text; the end of input
/// when unbalanced.
pub(crate) fn matching_close(chars: &[char], open_at: usize, open: char, close: char) -> usize {
    let mut level = 0usize;
    let mut i = open_at;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            i += 2;
            continue;
        }
        if c == '\'' {
            i = find_char(chars, i + 1, '\'') + 1;
            continue;
        }
        if c == open {
            level += 1;
        } else if c == close {
            level = level.saturating_sub(1);
            if level == 0 {
                return i;
            }
        }
        i += 1;
    }
    chars.len()
}

fn collect(chars: &[char], from: usize, to: usize) -> String {
    chars
        .get(from..to.min(chars.len()))
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// Decodes the common escapes of `$'…'` strings; unknown escapes keep their character.
pub(crate) fn decode_ansi_c(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'e' | 'E' => out.push('\u{1b}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            'x' => {
                let mut value = 0u32;
                let mut seen = 0;
                while seen < 2
                    && let Some(d) = chars.peek().and_then(|c| c.to_digit(16))
                {
                    value = value * 16 + d;
                    chars.next();
                    seen += 1;
                }
                out.push(char::from_u32(value).unwrap_or('?'));
            }
            '0'..='7' => {
                let mut value = e.to_digit(8).unwrap_or(0);
                let mut seen = 1;
                while seen < 3
                    && let Some(d) = chars.peek().and_then(|c| c.to_digit(8))
                {
                    value = value * 8 + d;
                    chars.next();
                    seen += 1;
                }
                out.push(char::from_u32(value).unwrap_or('?'));
            }
            other => out.push(other),
        }
    }
    out
}

/// Bash brace expansion (`/{usr,etc}` → `/usr /etc`, `{rm,-rf,/}` → three words) on the raw
/// word, outside quotes and `${…}`. Sequences like `{1..3}` are left alone: they cannot spell a
/// path we care about. Iterative and capped, since hostile input can nest braces deeply.
pub(crate) fn brace_expand(raw: &str) -> Vec<String> {
    if raw.len() > MAX_BRACE_INPUT || !raw.contains('{') {
        return vec![raw.to_owned()];
    }
    let mut done = Vec::new();
    let mut work = vec![raw.to_owned()];
    while let Some(word) = work.pop() {
        if done.len() + work.len() >= MAX_BRACE_WORDS {
            done.push(word);
            continue;
        }
        match first_brace_group(&word) {
            Some((open, close, commas)) => {
                let mut bounds = vec![open];
                bounds.extend(commas);
                bounds.push(close);
                let prefix = word.get(..open).unwrap_or("");
                let suffix = word.get(close + 1..).unwrap_or("");
                // Pushed in reverse so that the work stack pops them in source order.
                for pair in bounds.windows(2).rev() {
                    let alt = word.get(pair[0] + 1..pair[1]).unwrap_or("");
                    work.push(format!("{prefix}{alt}{suffix}"));
                }
            }
            None => done.push(word),
        }
    }
    done
}

/// Byte offsets of the first expandable `{…,…}` group: its braces and its top-level commas.
fn first_brace_group(word: &str) -> Option<(usize, usize, Vec<usize>)> {
    let bytes = word.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let mut candidates = Vec::new();
    while i < bytes.len() {
        let b = bytes[i];
        match (quote, b) {
            (None, b'\\') | (Some(b'"'), b'\\') => i += 1,
            (None, b'\'') | (None, b'"') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'$') if bytes.get(i + 1) == Some(&b'{') => {
                // Skip the parameter expansion: its braces are not brace expansion.
                let mut level = 0;
                while i < bytes.len() {
                    match bytes[i] {
                        b'{' => level += 1,
                        b'}' => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            (None, b'{') => candidates.push(i),
            (None, b'}') => {
                if let Some(open) = candidates.pop() {
                    let commas = top_level_commas(bytes, open, i);
                    if !commas.is_empty() && candidates.is_empty() {
                        return Some((open, i, commas));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn top_level_commas(bytes: &[u8], open: usize, close: usize) -> Vec<usize> {
    let mut level = 0usize;
    let mut quote: Option<u8> = None;
    let mut commas = Vec::new();
    let mut i = open + 1;
    while i < close {
        let b = bytes[i];
        match (quote, b) {
            (None, b'\\') | (Some(b'"'), b'\\') => i += 1,
            (None, b'\'') | (None, b'"') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'{') => level += 1,
            (None, b'}') => level = level.saturating_sub(1),
            (None, b',') if level == 0 => commas.push(i),
            _ => {}
        }
        i += 1;
    }
    commas
}
