//! Parse errors in the words of the person who wrote the spec: which field, where, what to do.
//!
//! The JSON and YAML parsers each speak their own dialect ("expected sequence start",
//! "invalid type: string, expected a sequence", "budget breached: …"). Both are mapped here to
//! one [`Problem`], and every problem is told the same way, whatever the format.

use serde_path_to_error::{Path, Segment};

use super::{HostAccess, SpecError};
use crate::suggest::did_you_mean;

/// One step of a field path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where in the document: `steps[0].command`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldPath(Vec<Step>);

impl FieldPath {
    fn from_path(path: &Path) -> Self {
        Self(
            path.iter()
                .filter_map(|segment| match segment {
                    Segment::Seq { index } => Some(Step::Index(*index)),
                    Segment::Map { key } => Some(Step::Key(key.clone())),
                    Segment::Enum { variant } => Some(Step::Key(variant.clone())),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path without a trailing key equal to `field` (parsers disagree on whether the
    /// path of an unknown or duplicate field includes the field).
    fn without_last_key(&self, field: &str) -> Self {
        let mut steps = self.0.clone();
        if matches!(steps.last(), Some(Step::Key(key)) if key == field) {
            steps.pop();
        }
        Self(steps)
    }

    /// The path as written in messages; `the job` for the top level.
    fn place(&self) -> String {
        if self.is_empty() {
            "the job".to_owned()
        } else {
            self.to_string()
        }
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (position, step) in self.0.iter().enumerate() {
            match step {
                Step::Index(index) => write!(f, "[{index}]")?,
                Step::Key(key) if position == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
            }
        }
        Ok(())
    }
}

/// What went wrong, whatever the parser.
#[derive(Debug, Clone, PartialEq)]
enum Problem {
    UnknownField {
        field: String,
        expected: Vec<String>,
    },
    MissingField {
        field: String,
    },
    DuplicateKey {
        key: Option<String>,
    },
    /// A value of the wrong type, or out of its type's range.
    WrongType {
        /// What was found, when it can be shown exactly.
        found: Option<String>,
        /// What the parser expected, for fields this module has no words for.
        expected: Option<String>,
    },
    UnknownVariant {
        variant: String,
        expected: Vec<String>,
    },
    TooDeep {
        limit: usize,
    },
    TooLarge {
        what: String,
    },
    /// Not well-formed JSON or YAML; the text is already in people's words.
    Syntax(String),
    Other(String),
}

/// A JSON parse error, with the path serde_path_to_error tracked.
pub(super) fn from_json(error: serde_path_to_error::Error<serde_json::Error>) -> SpecError {
    let path = FieldPath::from_path(error.path());
    let inner = error.into_inner();
    let (line, column) = (inner.line() as u64, inner.column() as u64);
    let text = strip_position(&inner.to_string());
    let problem = match inner.classify() {
        serde_json::error::Category::Data => from_serde_text(&text),
        _ if text.contains("recursion limit exceeded") => Problem::TooDeep { limit: 128 },
        serde_json::error::Category::Eof => Problem::Syntax(
            "invalid JSON: the text ends before every `{`, `[` and `\"` is closed".to_owned(),
        ),
        _ => Problem::Syntax(format!("invalid JSON: {text}")),
    };
    located("JSON", &path, line, column, &problem)
}

/// Text after a complete JSON document.
pub(super) fn from_json_tail(error: serde_json::Error) -> SpecError {
    let problem =
        Problem::Syntax("invalid JSON: there is more text after the spec's closing `}`".to_owned());
    located(
        "JSON",
        &FieldPath::default(),
        error.line() as u64,
        error.column() as u64,
        &problem,
    )
}

/// A YAML parse error; `path` is where deserialization was when it failed, if it got that far.
pub(super) fn from_yaml(error: &serde_saphyr::Error, path: Option<&Path>) -> SpecError {
    let path = path.map(FieldPath::from_path).unwrap_or_default();
    let (line, column) = error
        .location()
        .map(|location| (location.line(), location.column()))
        .unwrap_or((0, 0));
    located("YAML", &path, line, column, &yaml_problem(error))
}

fn located(
    format: &'static str,
    path: &FieldPath,
    line: u64,
    column: u64,
    problem: &Problem,
) -> SpecError {
    // serde reads a struct from a list too, field by field (`steps: [[a, b]]` fails at
    // `steps[0][0]`): the mistake is the list where a map belongs.
    let map_given_a_list = match problem {
        Problem::WrongType { .. } => path.0.iter().enumerate().position(|(at, step)| {
            matches!(step, Step::Index(_))
                && (at == 0
                    || matches!(path.0[at - 1], Step::Index(_))
                    || path.0[at - 1] == Step::Key("approval".into()))
        }),
        _ => None,
    };
    let (path, problem) = match map_given_a_list {
        Some(at) => (
            &FieldPath(path.0[..at].to_vec()),
            &Problem::WrongType {
                found: Some("a list".to_owned()),
                expected: Some("a map".to_owned()),
            },
        ),
        None => (path, problem),
    };
    SpecError::Syntax {
        format,
        path: path.to_string(),
        line: (line > 0).then_some(line),
        column: (line > 0 && column > 0).then_some(column),
        message: describe(path, problem),
    }
}

fn yaml_problem(error: &serde_saphyr::Error) -> Problem {
    use serde_saphyr::Error;
    use serde_saphyr::budget::BudgetBreach;
    let limits = serde_saphyr::Budget::default();
    match error.without_snippet() {
        Error::AliasError { error, .. } => yaml_problem(error),
        Error::SerdeUnknownField { field, expected, .. } => Problem::UnknownField {
            field: field.clone(),
            expected: expected.iter().map(|name| (*name).to_owned()).collect(),
        },
        Error::SerdeMissingField { field, .. } => Problem::MissingField {
            field: (*field).to_owned(),
        },
        Error::DuplicateMappingKey { key, .. } => Problem::DuplicateKey { key: key.clone() },
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } => Problem::UnknownVariant {
            variant: variant.clone(),
            expected: expected.iter().map(|name| (*name).to_owned()).collect(),
        },
        Error::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | Error::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => Problem::WrongType {
            found: shown(unexpected),
            expected: Some(expected.clone()),
        },
        Error::NullIntoString { .. } => Problem::WrongType {
            found: Some("empty".to_owned()),
            expected: None,
        },
        Error::Unexpected { .. }
        | Error::InvalidScalar { .. }
        | Error::InvalidBooleanStrict { .. }
        | Error::SerdeInvalidLength { .. }
        | Error::QuotingRequired { .. }
        | Error::InvalidCharNull { .. }
        | Error::InvalidCharNotSingleScalar { .. }
        | Error::NonFiniteFloat { .. }
        | Error::UnexpectedValueForUnitEnumVariant { .. }
        | Error::ExternallyTaggedEnumExpectedScalarOrMapping { .. }
        | Error::ExpectedStringKeyForExternallyTaggedEnum { .. } => Problem::WrongType {
            found: None,
            expected: None,
        },
        Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => Problem::TooDeep {
                limit: limits.max_depth,
            },
            BudgetBreach::Nodes { .. } => Problem::TooLarge {
                what: format!("it holds more than {} values", limits.max_nodes),
            },
            BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => Problem::TooLarge {
                what: "it uses more YAML aliases (`*name`) than a spec can need".to_owned(),
            },
            _ => Problem::TooLarge {
                what: "it is far larger than a job spec can need".to_owned(),
            },
        },
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. }
        | Error::AliasReplayCounterOverflow { .. } => Problem::TooLarge {
            what: "its YAML aliases (`*name`) expand to more than a spec can need".to_owned(),
        },
        Error::MultipleDocuments { .. } => Problem::Other(
            "the file holds more than one YAML document (a `---` line after content); a spec is one document"
                .to_owned(),
        ),
        Error::Eof { .. } => {
            Problem::Syntax("invalid YAML: the text ends in the middle of a value".to_owned())
        }
        Error::UnknownAnchor { .. } => Problem::Syntax(
            "invalid YAML: an alias (`*name`) refers to no anchor (`&name`) defined before it"
                .to_owned(),
        ),
        Error::UnsupportedTag { tag, .. } => {
            Problem::Other(format!("the YAML tag {tag} is not supported in a spec"))
        }
        Error::ExternalMessage { msg, .. } => Problem::Syntax(yaml_syntax(msg)),
        Error::Message { msg, .. } => from_serde_text(msg),
        Error::InvalidUtf8Input => Problem::Other("the spec is not valid UTF-8 text".to_owned()),
        other => Problem::Syntax(format!(
            "invalid YAML: {}",
            strip_position(&other.to_string())
        )),
    }
}

/// A YAML scanner or parser message, told as what to fix. Most of them, in a spec, come from
/// indentation.
fn yaml_syntax(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    if lower.contains("tab") {
        "invalid YAML: a tab is used for indentation; YAML indents with spaces only".to_owned()
    } else if [
        "did not find expected key",
        "did not find expected '-'",
        "mapping values are not allowed",
        "indentation",
        "block sequence entries are not allowed",
        "did not find expected <document start>",
    ]
    .iter()
    .any(|pattern| lower.contains(pattern))
    {
        "invalid YAML: this line's indentation does not fit the lines above; fields of one \
         map start in the same column, and what is nested under a field is indented further, \
         with spaces"
            .to_owned()
    } else if lower.contains("could not find expected ':'") {
        "invalid YAML: a `key: value` line is missing its `:` (or a quote is not closed)".to_owned()
    } else {
        let message = message
            .strip_prefix("while scanning ")
            .or_else(|| message.strip_prefix("while parsing "))
            .map_or(message, |rest| {
                rest.split_once(", ").map_or(rest, |(_, m)| m)
            });
        format!("invalid YAML: {message}")
    }
}

/// serde's own messages, as both parsers pass them on: `unknown field `x`, expected …`,
/// `missing field `x``, `invalid type: string "a", expected u64`, ….
fn from_serde_text(text: &str) -> Problem {
    let quoted = backticked(text);
    if text.starts_with("unknown field") {
        let mut names = quoted.into_iter();
        Problem::UnknownField {
            field: names.next().unwrap_or_default(),
            expected: names.collect(),
        }
    } else if text.starts_with("unknown variant") {
        let mut names = quoted.into_iter();
        Problem::UnknownVariant {
            variant: names.next().unwrap_or_default(),
            expected: names.collect(),
        }
    } else if text.starts_with("missing field") {
        Problem::MissingField {
            field: quoted.into_iter().next().unwrap_or_default(),
        }
    } else if text.starts_with("duplicate field") {
        Problem::DuplicateKey {
            key: quoted.into_iter().next(),
        }
    } else if let Some(rest) = text
        .strip_prefix("invalid type: ")
        .or_else(|| text.strip_prefix("invalid value: "))
    {
        let (unexpected, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        Problem::WrongType {
            found: shown(unexpected),
            expected: (!expected.is_empty()).then(|| expected.to_owned()),
        }
    } else if text.starts_with("invalid length") {
        Problem::WrongType {
            found: None,
            expected: None,
        }
    } else {
        Problem::Other(text.to_owned())
    }
}

/// The names between backticks in a serde message, in order.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// What was found, from serde's `Unexpected` text, when it can be shown exactly. Floating point
/// values are not shown: the parser may have rounded what was written.
fn shown(unexpected: &str) -> Option<String> {
    let value = |rest: &str| rest.trim_matches('`').to_owned();
    if let Some(rest) = unexpected.strip_prefix("string ") {
        Some(truncate(rest))
    } else if let Some(rest) = unexpected
        .strip_prefix("integer ")
        .or_else(|| unexpected.strip_prefix("boolean "))
    {
        Some(value(rest))
    } else {
        match unexpected {
            "map" => Some("a map".to_owned()),
            "sequence" => Some("a list".to_owned()),
            "unit" | "null" | "unit value" => Some("empty".to_owned()),
            _ => None,
        }
    }
}

fn truncate(value: &str) -> String {
    if value.chars().count() <= 60 {
        value.to_owned()
    } else {
        let mut cut: String = value.chars().take(60).collect();
        cut.push('…');
        cut
    }
}

/// serde_json appends ` at line L column C`; the position is reported on its own.
fn strip_position(text: &str) -> String {
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let text = match text.rfind(" at line ") {
        Some(cut) if text[cut..].contains(" column ") => &text[..cut],
        _ => text,
    };
    // serde-saphyr's rendering starts with `line L column C: `.
    match text
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, rest)) if position.contains(" column ") => rest.to_owned(),
        _ => text.to_owned(),
    }
}

/// What a field must hold, in people's words, for the fields of a spec. `None` for fields this
/// table does not know (the parser's own words are used then).
fn expectation(path: &FieldPath) -> Option<String> {
    let steps = &path.0;
    let last = steps.last();
    let parent = steps.len().checked_sub(2).and_then(|at| steps.get(at));
    let text = match (key_of(parent), last) {
        (_, None) => {
            "a map of job fields, e.g. `{name: hello, steps: [{name: greet, run: echo hi}]}`"
        }
        (Some("env"), Some(Step::Key(_))) => {
            "a string; quote numbers and booleans, e.g. `\"1\"` or `\"true\"`"
        }
        (Some("command"), Some(Step::Index(_))) => {
            "a string: each item of `command` is one argument"
        }
        (Some("steps"), Some(Step::Index(_))) => {
            "a step: a map with a `name` and a `run` or `command`"
        }
        (Some("writable_paths"), Some(Step::Index(_))) => "a path (a string)",
        (Some("host_access"), Some(Step::Index(_))) => {
            return Some(format!(
                "one of {}",
                or_list(HostAccess::ALL.iter().map(|h| h.name()))
            ));
        }
        (_, Some(Step::Key(field))) => match field.as_str() {
            "command" => "a list of strings, e.g. `[echo, hi]`; to run a shell line use `run`",
            "run" => {
                "a string: one shell line, e.g. `make test`; to give a list of arguments use `command`"
            }
            "env" => "a map of variable names to strings, e.g. `{GREETING: hello}`",
            "steps" => "a list of steps, e.g. `[{name: greet, run: echo hi}]`",
            "timeout_seconds" => "a whole number of seconds, at least 1, e.g. `300`",
            "pids_limit" => "a whole number, at least 1, e.g. `100`",
            "cpus" => "a number above 0, e.g. `0.5`",
            "reuse_container" | "read_only_rootfs" => "`true` or `false`",
            "isolation" => "`sandbox` or `none`",
            "network" => "`bridge` or `none`",
            "pull" => "`if-not-present`, `always` or `never`",
            "writable_paths" => "a list of paths, e.g. `[target, .cache]`",
            "host_access" => "a list of host resource names, e.g. `[ssh, aws]`",
            "approval" => "a map such as `{approved_by: lee, reason: release 1.2}`",
            "memory" => "a size such as `256m` or `1g`",
            "with" => "a map of settings for the plugin",
            "name" | "owner" | "environment" | "runtime" | "image" | "workdir" | "user"
            | "approved_by" | "reason" => "a string",
            _ => return None,
        },
        _ => return None,
    };
    Some(text.to_owned())
}

fn key_of(step: Option<&Step>) -> Option<&str> {
    match step {
        Some(Step::Key(key)) => Some(key.as_str()),
        _ => None,
    }
}

/// `a`, `b` or `c`.
fn or_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.into_iter().map(|name| format!("`{name}`")).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The one-line message for a problem at a path.
fn describe(path: &FieldPath, problem: &Problem) -> String {
    match problem {
        Problem::UnknownField { field, expected } => {
            let container = path.without_last_key(field);
            let mut text = if container.is_empty() {
                format!("unknown field `{field}`")
            } else {
                format!("unknown field `{field}` in {container}")
            };
            match did_you_mean(field, expected.iter().map(String::as_str)) {
                Some(close) => text.push_str(&format!("; did you mean `{close}`?")),
                None if !expected.is_empty() => {
                    text.push_str(&format!("; the fields here are {}", expected.join(", ")))
                }
                None => {}
            }
            text
        }
        Problem::MissingField { field } => {
            format!("{} has no `{field}`, which is required", path.place())
        }
        Problem::DuplicateKey { key } => {
            let container = match key {
                Some(key) => path.without_last_key(key),
                None => path.clone(),
            };
            let key = key
                .as_deref()
                .map_or_else(|| "a key".to_owned(), |key| format!("`{key}`"));
            format!("{key} is given twice in {}; keep one", container.place())
        }
        Problem::WrongType { found, expected } => {
            let must = expectation(path)
                .or_else(|| expected.clone())
                .unwrap_or_else(|| "of another type".to_owned());
            // What was found goes before the tip: "must be a list, not "x"; to … use …".
            let (what, tip) = match must.split_once("; ") {
                Some((what, tip)) => (what.to_owned(), format!("; {tip}")),
                None => (must.clone(), String::new()),
            };
            let found = found
                .as_ref()
                .map(|found| format!(", not {found}"))
                .unwrap_or_default();
            if path.is_empty() {
                format!("a job spec must be {what}{found}{tip}")
            } else {
                format!("{path} must be {what}{found}{tip}")
            }
        }
        Problem::UnknownVariant { variant, expected } => {
            let mut text = format!(
                "{} must be {}, not `{variant}`",
                path.place(),
                or_list(expected.iter().map(String::as_str))
            );
            if let Some(close) = did_you_mean(variant, expected.iter().map(String::as_str)) {
                text.push_str(&format!("; did you mean `{close}`?"));
            }
            text
        }
        Problem::TooDeep { limit } => {
            format!("the spec is nested more than {limit} levels deep; a job spec needs a handful")
        }
        Problem::TooLarge { what } => {
            format!("the spec is refused before it is read in full: {what}")
        }
        Problem::Syntax(text) => text.clone(),
        Problem::Other(text) => match path.is_empty() {
            true => text.clone(),
            false => format!("{path}: {text}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(steps: &[Step]) -> FieldPath {
        FieldPath(steps.to_vec())
    }

    #[test]
    fn paths_read_as_written() {
        let at = path(&[
            Step::Key("steps".into()),
            Step::Index(2),
            Step::Key("command".into()),
        ]);
        assert_eq!(at.to_string(), "steps[2].command");
        assert_eq!(FieldPath::default().place(), "the job");
    }

    #[test]
    fn serde_messages_are_classified() {
        assert_eq!(
            from_serde_text("unknown field `timout_seconds`, expected one of `name`, `run`"),
            Problem::UnknownField {
                field: "timout_seconds".into(),
                expected: vec!["name".into(), "run".into()],
            }
        );
        assert_eq!(
            from_serde_text("invalid type: string \"echo hi\", expected a sequence"),
            Problem::WrongType {
                found: Some("\"echo hi\"".into()),
                expected: Some("a sequence".into()),
            }
        );
        assert_eq!(
            from_serde_text("invalid value: integer `-3`, expected u64"),
            Problem::WrongType {
                found: Some("-3".into()),
                expected: Some("u64".into()),
            }
        );
        assert_eq!(
            from_serde_text("duplicate field `name`"),
            Problem::DuplicateKey {
                key: Some("name".into())
            }
        );
    }

    #[test]
    fn floats_are_never_echoed_rounded() {
        assert_eq!(shown("floating point `1.8446744073709552e19`"), None);
    }

    #[test]
    fn wrong_types_say_what_the_field_holds() {
        let command = path(&[
            Step::Key("steps".into()),
            Step::Index(0),
            Step::Key("command".into()),
        ]);
        let message = describe(
            &command,
            &Problem::WrongType {
                found: Some("\"echo hi\"".into()),
                expected: None,
            },
        );
        assert_eq!(
            message,
            "steps[0].command must be a list of strings, e.g. `[echo, hi]`, not \"echo hi\"; to run a shell line use `run`"
        );
    }

    /// Words of the parsers that must never reach a person.
    const JARGON: [&str; 12] = [
        "sequence start",
        "mapping start",
        "scalar",
        "u64",
        "i64",
        "f64",
        "Options",
        "budget",
        "invalid type",
        "expected one of",
        "struct ",
        "error:",
    ];

    fn yaml_error(text: &str) -> SpecError {
        super::super::parse(text.as_bytes(), super::super::SpecFormat::Yaml).unwrap_err()
    }

    fn json_error(text: &str) -> SpecError {
        super::super::parse(text.as_bytes(), super::super::SpecFormat::Json).unwrap_err()
    }

    #[test]
    fn every_field_kind_given_the_wrong_type_says_what_it_holds() {
        let job_fields = [
            ("name", "[a]", "name must be a string"),
            ("owner", "{a: b}", "owner must be a string"),
            ("approval", "yes", "approval must be a map such as"),
            (
                "env",
                "[A]",
                "env must be a map of variable names to strings",
            ),
            ("env", "{A: [1]}", "env.A must be a string"),
            (
                "reuse_container",
                "maybe",
                "reuse_container must be `true` or `false`",
            ),
            (
                "isolation",
                "jail",
                "isolation must be `sandbox` or `none`, not `jail`",
            ),
            (
                "writable_paths",
                "target",
                "writable_paths must be a list of paths",
            ),
            (
                "writable_paths",
                "[[a]]",
                "writable_paths[0] must be a path",
            ),
            (
                "host_access",
                "ssh",
                "host_access must be a list of host resource names",
            ),
            ("host_access", "[shh]", "did you mean `ssh`?"),
            ("steps", "3", "steps must be a list of steps"),
        ];
        for (field, value, expected) in job_fields {
            let text = format!("name: x\n{field}: {value}\nsteps: [{{name: s, run: hi}}]\n");
            let text = if field == "name" || field == "steps" {
                format!("{field}: {value}\n")
            } else {
                text
            };
            let message = yaml_error(&text).to_string();
            assert!(message.contains(expected), "{field}: {value}: {message}");
            assert!(message.starts_with("line "), "{field}: {message}");
            for word in JARGON {
                assert!(
                    !message.contains(word),
                    "{field}: jargon {word:?} in {message}"
                );
            }
        }
        let step_fields = [
            (
                "run",
                "[a, b]",
                "steps[0].run must be a string: one shell line",
            ),
            (
                "command",
                "echo hi",
                "steps[0].command must be a list of strings",
            ),
            ("command", "[[a]]", "steps[0].command[0] must be a string"),
            (
                "timeout_seconds",
                "1.5",
                "steps[0].timeout_seconds must be a whole number",
            ),
            (
                "timeout_seconds",
                "-1",
                "steps[0].timeout_seconds must be a whole number",
            ),
            ("cpus", "lots", "steps[0].cpus must be a number above 0"),
            (
                "pids_limit",
                "many",
                "steps[0].pids_limit must be a whole number",
            ),
            ("memory", "[1]", "steps[0].memory must be a size such as"),
            (
                "network",
                "host",
                "steps[0].network must be `bridge` or `none`, not `host`",
            ),
            (
                "pull",
                "sometimes",
                "steps[0].pull must be `if-not-present`, `always` or `never`",
            ),
            (
                "read_only_rootfs",
                "perhaps",
                "steps[0].read_only_rootfs must be `true` or `false`",
            ),
            ("env", "FOO", "steps[0].env must be a map"),
            ("user", "[1]", "steps[0].user must be a string"),
        ];
        for (field, value, expected) in step_fields {
            let text = format!("name: x\nsteps:\n  - name: s\n    {field}: {value}\n");
            let message = yaml_error(&text).to_string();
            assert!(message.contains(expected), "{field}: {value}: {message}");
            assert!(message.starts_with("line 4, column "), "{field}: {message}");
            for word in JARGON {
                assert!(
                    !message.contains(word),
                    "{field}: jargon {word:?} in {message}"
                );
            }
            // The same mistake in JSON reads the same.
            if let Ok(value) = serde_saphyr::from_str::<serde_json::Value>(value) {
                let text = format!(r#"{{"name":"x","steps":[{{"name":"s","{field}":{value}}}]}}"#);
                let message = json_error(&text).to_string();
                assert!(
                    message.contains(expected),
                    "JSON {field}: {value}: {message}"
                );
                for word in JARGON {
                    assert!(
                        !message.contains(word),
                        "JSON {field}: jargon {word:?} in {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn duplicate_keys_and_unknown_fields_at_any_depth() {
        let message =
            yaml_error("name: x\napproval:\n  approved_by: a\n  approved_by: b\nsteps: []\n")
                .to_string();
        assert_eq!(
            message,
            "line 4, column 3: `approved_by` is given twice in approval; keep one"
        );
        let message = yaml_error("name: x\napproval: {aproved_by: a}\nsteps: []\n").to_string();
        assert_eq!(
            message,
            "line 2, column 12: unknown field `aproved_by` in approval; did you mean `approved_by`?"
        );
        let message =
            json_error(r#"{"name":"x","steps":[{"name":"s","run":"a","env":{"A":"1","A":"2"}}]}"#)
                .to_string();
        assert_eq!(
            message,
            "line 1, column 66: `A` is given twice in steps[0].env; keep one"
        );
        let message = yaml_error("name: x\nenv:\n  A: b\n  A: c\nsteps: []\n").to_string();
        assert_eq!(
            message,
            "line 4, column 3: `A` is given twice in env; keep one"
        );
        let message = yaml_error("nmae: x\nsteps: []\n").to_string();
        assert_eq!(
            message,
            "line 1, column 1: unknown field `nmae`; did you mean `name`?"
        );
    }

    #[test]
    fn positions_are_stripped_from_parser_text() {
        assert_eq!(
            strip_position("expected `,` or `}` at line 3 column 7"),
            "expected `,` or `}`"
        );
        assert_eq!(
            strip_position("error: line 6 column 4: duplicate mapping key"),
            "duplicate mapping key"
        );
    }
}
