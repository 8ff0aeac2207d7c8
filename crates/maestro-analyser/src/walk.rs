//! Walking `brush-parser`'s syntax tree down to simple commands.

use std::rc::Rc;

use brush_parser::ast::{
    AndOr, AssignmentName, AssignmentValue, Command, CommandPrefixOrSuffixItem, CompoundCommand,
    CompoundList, CompoundListItem, ExtendedTestExpr, FunctionBody, FunctionDefinition,
    IoFileRedirectKind, IoFileRedirectTarget, IoRedirect, Pipeline, Program, SeparatorOperator,
    SimpleCommand,
};

use super::Rule;
use super::commands::{Redirect, SimpleCmd, Stdin};
use super::words::{Resolved, Word};
use super::{Analyzer, Scope};

impl Analyzer {
    pub(crate) fn walk_program(&mut self, program: &Program, scope: &mut Scope, depth: usize) {
        for list in &program.complete_commands {
            self.walk_list(list, scope, depth);
        }
    }

    fn walk_list(&mut self, list: &CompoundList, scope: &mut Scope, depth: usize) {
        for CompoundListItem(and_or, _) in &list.0 {
            if self.exhausted() {
                return;
            }
            self.walk_pipeline(&and_or.first, scope, depth);
            for next in &and_or.additional {
                let (AndOr::And(p) | AndOr::Or(p)) = next;
                self.walk_pipeline(p, scope, depth);
            }
        }
    }

    fn walk_pipeline(&mut self, pipeline: &Pipeline, scope: &mut Scope, depth: usize) {
        let stages: Vec<Option<SimpleCmd>> = pipeline
            .seq
            .iter()
            .map(|command| self.walk_command(command, scope, depth))
            .collect();
        self.check_pipeline(&stages, scope, depth);
    }

    /// Lowers a simple command (returned for the pipeline checks); walks anything else in place.
    fn walk_command(
        &mut self,
        command: &Command,
        scope: &mut Scope,
        depth: usize,
    ) -> Option<SimpleCmd> {
        match command {
            Command::Simple(simple) => Some(self.lower_simple(simple, scope, depth)),
            Command::Compound(compound, redirects) => {
                self.walk_compound(compound, scope, depth);
                if let Some(list) = redirects {
                    self.check_bare_redirects(&list.0, scope, depth);
                }
                None
            }
            Command::Function(definition) => {
                self.walk_function(definition, scope, depth);
                None
            }
            Command::ExtendedTest(test, redirects) => {
                self.walk_test_expr(&test.expr, scope, depth);
                if let Some(list) = redirects {
                    self.check_bare_redirects(&list.0, scope, depth);
                }
                None
            }
        }
    }

    /// Redirections on a compound command (`{ …; } > /dev/sda`).
    fn check_bare_redirects(&mut self, redirects: &[IoRedirect], scope: &mut Scope, depth: usize) {
        let mut cmd = SimpleCmd::default();
        for redirect in redirects {
            if let Some(r) = self.lower_redirect(redirect, scope, depth) {
                cmd.redirects.push(r);
            }
        }
        self.check_simple(&cmd, &Stdin::default(), scope, depth);
    }

    fn walk_compound(&mut self, compound: &CompoundCommand, scope: &mut Scope, depth: usize) {
        match compound {
            CompoundCommand::BraceGroup(group) => self.walk_list(&group.list, scope, depth),
            CompoundCommand::Subshell(sub) => {
                // A subshell's `cd` and assignments do not leak out.
                let mut inner = self.fork(scope);
                self.walk_list(&sub.list, &mut inner, depth);
            }
            CompoundCommand::ForClause(clause) => {
                let values = match &clause.values {
                    Some(words) => {
                        let mut values: Vec<Resolved> = Vec::new();
                        for word in words {
                            for w in self.resolve_word(&word.value, scope, depth) {
                                values.extend(w.cands);
                            }
                        }
                        values.truncate(super::words::MAX_CANDIDATES);
                        values
                    }
                    None => vec![Resolved::unknown(true)],
                };
                if values.is_empty() {
                    return;
                }
                scope.vars.insert(clause.variable_name.clone(), values);
                self.walk_list(&clause.body.list, scope, depth);
            }
            CompoundCommand::ArithmeticForClause(clause) => {
                self.walk_list(&clause.body.list, scope, depth);
            }
            CompoundCommand::CaseClause(clause) => {
                self.resolve_word(&clause.value.value, scope, depth);
                for item in &clause.cases {
                    for pattern in &item.patterns {
                        self.resolve_word(&pattern.value, scope, depth);
                    }
                    if let Some(list) = &item.cmd {
                        self.walk_list(list, scope, depth);
                    }
                }
            }
            CompoundCommand::IfClause(clause) => {
                self.walk_list(&clause.condition, scope, depth);
                self.walk_list(&clause.then, scope, depth);
                for branch in clause.elses.iter().flatten() {
                    if let Some(condition) = &branch.condition {
                        self.walk_list(condition, scope, depth);
                    }
                    self.walk_list(&branch.body, scope, depth);
                }
            }
            CompoundCommand::WhileClause(clause) | CompoundCommand::UntilClause(clause) => {
                self.walk_list(&clause.0, scope, depth);
                self.walk_list(&clause.1.list, scope, depth);
            }
            CompoundCommand::Coprocess(coproc) => {
                if let Some(cmd) = self.walk_command(&coproc.body, scope, depth) {
                    self.check_pipeline(&[Some(cmd)], scope, depth);
                }
            }
            CompoundCommand::Arithmetic(arithmetic) => {
                // brush-parser reads `( (rm -rf /) )` as the arithmetic command `((…))`, where
                // bash runs nested subshells. Reading the expression as a script as well costs
                // nothing for real arithmetic (`i++` names no destructive command) and also
                // covers command substitutions inside it.
                self.analyse_nested(&arithmetic.expr.value, scope, depth + 1);
            }
        }
    }

    fn walk_test_expr(&mut self, expr: &ExtendedTestExpr, scope: &mut Scope, depth: usize) {
        // Only for the command substitutions inside; a test itself destroys nothing.
        match expr {
            ExtendedTestExpr::And(a, b) | ExtendedTestExpr::Or(a, b) => {
                self.walk_test_expr(a, scope, depth);
                self.walk_test_expr(b, scope, depth);
            }
            ExtendedTestExpr::Not(e) | ExtendedTestExpr::Parenthesized(e) => {
                self.walk_test_expr(e, scope, depth);
            }
            ExtendedTestExpr::UnaryTest(_, w) => {
                self.resolve_word(&w.value, scope, depth);
            }
            ExtendedTestExpr::BinaryTest(_, a, b) => {
                self.resolve_word(&a.value, scope, depth);
                self.resolve_word(&b.value, scope, depth);
            }
        }
    }

    fn walk_function(&mut self, definition: &FunctionDefinition, scope: &mut Scope, depth: usize) {
        let name = definition.fname.value.clone();
        if compound_forks(&name, &definition.body.0) {
            self.report(
                Rule::ForkBomb,
                format!(
                    "function `{name}` is a fork bomb: it runs itself in a pipeline or in the \
                     background, multiplying processes until the machine stalls"
                ),
            );
        }
        let body = Rc::new(definition.body.clone());
        scope.functions.insert(name, Rc::clone(&body));
        // Checked once as written (arguments unknown), and again at each call with them bound.
        let mut inner = self.fork(scope);
        inner.defining = true;
        self.walk_function_body(&body, &mut inner, depth);
    }

    pub(crate) fn walk_function_body(
        &mut self,
        body: &FunctionBody,
        scope: &mut Scope,
        depth: usize,
    ) {
        self.walk_compound(&body.0, scope, depth);
        if let Some(list) = &body.1 {
            self.check_bare_redirects(&list.0, scope, depth);
        }
    }

    pub(crate) fn lower_simple(
        &mut self,
        simple: &SimpleCommand,
        scope: &mut Scope,
        depth: usize,
    ) -> SimpleCmd {
        let mut cmd = SimpleCmd::default();
        let prefix = simple.prefix.iter().flat_map(|p| p.0.iter());
        for item in prefix {
            self.lower_item(item, &mut cmd, scope, depth, true);
        }
        if let Some(word) = &simple.word_or_name {
            cmd.words
                .extend(self.resolve_word(&word.value, scope, depth));
        }
        let suffix = simple.suffix.iter().flat_map(|s| s.0.iter());
        for item in suffix {
            self.lower_item(item, &mut cmd, scope, depth, false);
        }
        cmd
    }

    fn lower_item(
        &mut self,
        item: &CommandPrefixOrSuffixItem,
        cmd: &mut SimpleCmd,
        scope: &mut Scope,
        depth: usize,
        in_prefix: bool,
    ) {
        match item {
            CommandPrefixOrSuffixItem::IoRedirect(redirect) => {
                if let Some(r) = self.lower_redirect(redirect, scope, depth) {
                    cmd.redirects.push(r);
                }
            }
            CommandPrefixOrSuffixItem::Word(word) => {
                cmd.words
                    .extend(self.resolve_word(&word.value, scope, depth));
            }
            CommandPrefixOrSuffixItem::AssignmentWord(assignment, word) => {
                if !in_prefix {
                    // `export X=/`, `declare X=/`: an argument of the builtin.
                    cmd.words
                        .extend(self.resolve_word(&word.value, scope, depth));
                    return;
                }
                let value = match &assignment.value {
                    AssignmentValue::Scalar(value) => {
                        self.resolve_single(&value.value, scope, depth, 0)
                    }
                    AssignmentValue::Array(items) => {
                        for (key, value) in items {
                            if let Some(key) = key {
                                self.resolve_single(&key.value, scope, depth, 0);
                            }
                            self.resolve_single(&value.value, scope, depth, 0);
                        }
                        vec![Resolved::unknown(true)]
                    }
                };
                if let AssignmentName::VariableName(name) = &assignment.name
                    && !assignment.append
                {
                    cmd.assignments.push((name.clone(), value));
                }
            }
            CommandPrefixOrSuffixItem::ProcessSubstitution(_, sub) => {
                let mut inner = self.fork(scope);
                self.walk_list(&sub.list, &mut inner, depth);
                cmd.words.push(Word {
                    raw: "<(…)".into(),
                    cands: vec![Resolved::unknown(false)],
                });
            }
        }
    }

    fn lower_redirect(
        &mut self,
        redirect: &IoRedirect,
        scope: &mut Scope,
        depth: usize,
    ) -> Option<Redirect> {
        match redirect {
            IoRedirect::File(fd, kind, target) => match target {
                IoFileRedirectTarget::Filename(word) | IoFileRedirectTarget::Duplicate(word) => {
                    let writes = match kind {
                        IoFileRedirectKind::Write
                        | IoFileRedirectKind::Append
                        | IoFileRedirectKind::Clobber
                        | IoFileRedirectKind::ReadAndWrite => true,
                        // `>& file` is bash for `&> file` unless the word is a descriptor.
                        IoFileRedirectKind::DuplicateOutput => !word
                            .value
                            .trim_end_matches('-')
                            .chars()
                            .all(|c| c.is_ascii_digit()),
                        _ => false,
                    };
                    let cands = self.resolve_single(&word.value, scope, depth, 0);
                    if matches!(kind, IoFileRedirectKind::Read) && fd.is_none_or(|fd| fd == 0) {
                        return Some(Redirect::InputUnknown);
                    }
                    writes.then(|| Redirect::Write {
                        op: format!("{}{}", fd.map(|n| n.to_string()).unwrap_or_default(), kind),
                        target: Word {
                            raw: word.value.clone(),
                            cands,
                        },
                    })
                }
                IoFileRedirectTarget::ProcessSubstitution(_, sub) => {
                    let mut inner = self.fork(scope);
                    self.walk_list(&sub.list, &mut inner, depth);
                    matches!(kind, IoFileRedirectKind::Read).then_some(Redirect::InputUnknown)
                }
                IoFileRedirectTarget::Fd(_) => None,
            },
            IoRedirect::HereDocument(_, doc) => {
                let text = doc.doc.value.clone();
                if doc.requires_expansion
                    && let Ok(pieces) =
                        brush_parser::word::parse_heredoc(&text, &super::parser_options())
                {
                    // Only for the command substitutions inside, which run.
                    for piece in pieces {
                        self.resolve_heredoc_piece(&piece.piece, scope, depth);
                    }
                }
                Some(Redirect::InputText(text))
            }
            IoRedirect::HereString(_, word) => {
                let cands = self.resolve_single(&word.value, scope, depth, 0);
                cands.first().map(|c| Redirect::InputText(c.render()))
            }
            IoRedirect::OutputAndError(word, append) => {
                let cands = self.resolve_single(&word.value, scope, depth, 0);
                Some(Redirect::Write {
                    op: if *append { "&>>" } else { "&>" }.into(),
                    target: Word {
                        raw: word.value.clone(),
                        cands,
                    },
                })
            }
        }
    }

    fn resolve_heredoc_piece(
        &mut self,
        piece: &brush_parser::word::WordPiece,
        scope: &Scope,
        depth: usize,
    ) {
        use brush_parser::word::WordPiece;
        match piece {
            WordPiece::CommandSubstitution(script)
            | WordPiece::BackquotedCommandSubstitution(script) => {
                self.analyse_nested(script, scope, depth + 1);
            }
            WordPiece::DoubleQuotedSequence(inner)
            | WordPiece::GettextDoubleQuotedSequence(inner) => {
                for p in inner {
                    self.resolve_heredoc_piece(&p.piece, scope, depth);
                }
            }
            _ => {}
        }
    }
}

/// The name a pipeline element runs, if it is a simple command with a static name.
fn simple_name(command: &Command) -> Option<String> {
    let Command::Simple(simple) = command else {
        return None;
    };
    let word = simple.word_or_name.as_ref()?;
    Some(brush_parser::unquote_str(&word.value))
}

/// Whether a function body (not counting nested function definitions) starts copies of the
/// function concurrently: `name | name`, `name &`. That is the structure of `:(){ :|:& };:`
/// whatever the function is called; plain recursion (`walk() { …; walk "$d"; }`) is not flagged.
fn compound_forks(name: &str, compound: &CompoundCommand) -> bool {
    match compound {
        CompoundCommand::BraceGroup(group) => list_forks(name, &group.list),
        CompoundCommand::Subshell(sub) => list_forks(name, &sub.list),
        CompoundCommand::ForClause(c) => list_forks(name, &c.body.list),
        CompoundCommand::ArithmeticForClause(c) => list_forks(name, &c.body.list),
        CompoundCommand::CaseClause(c) => c
            .cases
            .iter()
            .filter_map(|item| item.cmd.as_ref())
            .any(|list| list_forks(name, list)),
        CompoundCommand::IfClause(c) => {
            list_forks(name, &c.condition)
                || list_forks(name, &c.then)
                || c.elses.iter().flatten().any(|branch| {
                    branch
                        .condition
                        .as_ref()
                        .is_some_and(|cond| list_forks(name, cond))
                        || list_forks(name, &branch.body)
                })
        }
        CompoundCommand::WhileClause(c) | CompoundCommand::UntilClause(c) => {
            list_forks(name, &c.0) || list_forks(name, &c.1.list)
        }
        CompoundCommand::Coprocess(c) => simple_name(&c.body).as_deref() == Some(name),
        CompoundCommand::Arithmetic(_) => false,
    }
}

fn list_forks(name: &str, list: &CompoundList) -> bool {
    list.0.iter().any(|CompoundListItem(and_or, separator)| {
        let background = matches!(separator, SeparatorOperator::Async);
        let pipelines =
            std::iter::once(&and_or.first).chain(and_or.additional.iter().map(|next| {
                let (AndOr::And(p) | AndOr::Or(p)) = next;
                p
            }));
        pipelines.into_iter().any(|pipeline| {
            let calls_self = pipeline
                .seq
                .iter()
                .any(|c| simple_name(c).as_deref() == Some(name));
            if calls_self && (background || pipeline.seq.len() > 1) {
                return true;
            }
            pipeline.seq.iter().any(|c| match c {
                Command::Compound(inner, _) => {
                    // `{ f; } &` backgrounds the whole group.
                    (background && compound_calls(name, inner)) || compound_forks(name, inner)
                }
                _ => false,
            })
        })
    })
}

/// Whether a compound command calls `name` anywhere directly inside it.
fn compound_calls(name: &str, compound: &CompoundCommand) -> bool {
    let list = match compound {
        CompoundCommand::BraceGroup(g) => &g.list,
        CompoundCommand::Subshell(s) => &s.list,
        _ => return false,
    };
    list.0.iter().any(|CompoundListItem(and_or, _)| {
        std::iter::once(&and_or.first)
            .chain(and_or.additional.iter().map(|next| {
                let (AndOr::And(p) | AndOr::Or(p)) = next;
                p
            }))
            .any(|p| {
                p.seq
                    .iter()
                    .any(|c| simple_name(c).as_deref() == Some(name))
            })
    })
}
