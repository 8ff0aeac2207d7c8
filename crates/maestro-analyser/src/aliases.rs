//! Aliases: `alias k='rm -rf'` then `k /usr` runs `rm -rf /usr`. `sh` (dash) expands aliases
//! even when not interactive, and bash does with `expand_aliases`, so a command that starts
//! with an alias is analysed as the alias body followed by the remaining words.

use brush_parser::ast::{Command, Program};

use super::Rule;
use super::commands::{SimpleCmd, Stdin};
use super::words::{Resolved, Seg, Word};
use super::{Analyzer, Scope};

/// Most body values kept for one alias (`alias k="$X"` inside a `for` loop may have several).
const MAX_BODIES: usize = 2;

/// `NAME=BODY` as given to `alias`: the name and the body's values. Alias names may hold
/// characters variable names may not (`alias ..='cd ..'`, `alias k-rm=…`).
pub(crate) fn alias_definition(word: &Word) -> Option<(String, Vec<Resolved>)> {
    let mut name = None;
    let mut bodies = Vec::new();
    for res in word.cands.iter().take(MAX_BODIES) {
        let Some(Seg::Text(first)) = res.0.first() else {
            return None;
        };
        let (n, v) = first.split_once('=')?;
        if n.is_empty()
            || n.contains(['/', '$', '`', '\'', '"', '\\'])
            || n.contains(char::is_whitespace)
        {
            return None;
        }
        name = Some(n.to_owned());
        let mut body = Resolved::text(v);
        for seg in res.0.iter().skip(1) {
            body.push_seg(seg.clone());
        }
        bodies.push(body);
    }
    name.map(|n| (n, bodies))
}

/// The alias a command word names, when the shell would expand it: a literal word written
/// without quotes or escapes (`\k` and `'k'` are never expanded).
fn alias_name<'a>(word: &Word, scope: &'a Scope) -> Option<(String, &'a [String])> {
    let name = word.lit()?;
    if word.raw != name {
        return None;
    }
    let bodies = scope.aliases.get(&name)?;
    Some((name, bodies.as_slice()))
}

/// The alias text that starts `argv`, the aliases it used and how many words it replaces. A
/// body ending in a blank makes the next word an alias position too (`alias s='sudo '`), as in
/// the shell; each alias is expanded once per command, so recursive ones end.
fn alias_prefix(argv: &[Word], scope: &Scope) -> Option<(Vec<String>, Vec<String>, usize)> {
    let (first, bodies) = alias_name(argv.first()?, scope)?;
    let mut used = vec![first];
    let mut texts: Vec<String> = bodies.iter().take(MAX_BODIES).cloned().collect();
    let mut consumed = 1;
    while texts[0].ends_with([' ', '\t'])
        && let Some((next, more)) = argv.get(consumed).and_then(|w| alias_name(w, scope))
        && !used.contains(&next)
    {
        let more = more.first().cloned().unwrap_or_default();
        for text in &mut texts {
            text.push_str(&more);
        }
        used.push(next);
        consumed += 1;
    }
    Some((used, texts, consumed))
}

/// The single simple command a program consists of, if it is nothing more (`rm -rf`,
/// `sudo `, `X=1 make`): then its words can be put in front of the remaining ones directly.
fn only_simple_command(program: &Program) -> Option<&brush_parser::ast::SimpleCommand> {
    let [complete] = program.complete_commands.as_slice() else {
        return None;
    };
    let [item] = complete.0.as_slice() else {
        return None;
    };
    if !item.0.additional.is_empty()
        || !matches!(item.1, brush_parser::ast::SeparatorOperator::Sequence)
    {
        return None;
    }
    match item.0.first.seq.as_slice() {
        [Command::Simple(simple)] if !item.0.first.bang && item.0.first.timed.is_none() => {
            Some(simple)
        }
        _ => None,
    }
}

impl Analyzer {
    /// `alias NAME=BODY…`: each body is analysed as it is written (it may run later anyway)
    /// and remembered for the commands that start with NAME. A definition only known at run
    /// time (`alias "$X"`) defines commands we cannot see.
    pub(crate) fn define_aliases(
        &mut self,
        shown: &str,
        args: &[Word],
        scope: &mut Scope,
        depth: usize,
    ) {
        for word in args {
            let Some((alias, values)) = alias_definition(word) else {
                if word.lit().is_none() {
                    self.report(
                        Rule::DynamicCode,
                        format!(
                            "`{shown}` defines an alias only known at run time, so the commands \
                             it stands for cannot be shown to be safe"
                        ),
                    );
                }
                continue;
            };
            for value in &values {
                self.analyse_nested(&value.render(), scope, depth + 1);
            }
            scope
                .aliases
                .insert(alias, values.iter().map(Resolved::render).collect());
        }
    }

    /// When `argv` starts with an alias, analyses its expansion and returns true. The aliases
    /// used are hidden while their bodies are analysed (`alias ls='ls --color'` must not
    /// expand again), and the expansion runs in this shell: its `cd` and assignments last.
    pub(crate) fn expand_alias(
        &mut self,
        argv: &[Word],
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) -> bool {
        let Some((used, texts, consumed)) = alias_prefix(argv, scope) else {
            return false;
        };
        let hidden: Vec<(String, Vec<String>)> = used
            .iter()
            .filter_map(|name| scope.aliases.remove_entry(name))
            .collect();
        let rest = argv.get(consumed..).unwrap_or_default();
        for text in &texts {
            self.analyse_alias_body(text, rest, stdin, scope, depth + 1);
        }
        scope.aliases.extend(hidden);
        true
    }

    /// A body that is one simple command gets the remaining words (and the command's standard
    /// input) appended as they are; any other body is analysed as a script ending in `"$@"`,
    /// the remaining words.
    fn analyse_alias_body(
        &mut self,
        body: &str,
        rest: &[Word],
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) {
        if self.too_deep(body, depth) {
            return;
        }
        let program = self
            .use_parser
            .then(|| super::parse_program(body))
            .flatten();
        if let Some(simple) = program.as_ref().and_then(only_simple_command) {
            let lowered = self.lower_simple(simple, scope, depth);
            let cmd = SimpleCmd {
                words: lowered
                    .words
                    .into_iter()
                    .chain(rest.iter().cloned())
                    .collect(),
                ..lowered
            };
            self.check_simple(&cmd, stdin, scope, depth);
            return;
        }
        let saved = scope.positional.replace(rest.to_vec());
        self.analyse_script(&format!("{body} \"$@\""), scope, depth);
        scope.positional = saved;
    }
}
