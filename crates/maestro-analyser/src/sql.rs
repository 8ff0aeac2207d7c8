//! Recognising schema-destroying statements in text handed to database clients.

use super::Rule;

/// Finds statements that destroy a schema or its data, as SQL tokens: `DROP DATABASE|SCHEMA|
/// TABLE|OWNED|KEYSPACE` (rule `sql-drop`), `TRUNCATE`, and `DELETE FROM t` without a `WHERE`
/// or with a trivially true one (rule `sql-delete-all`). Case-insensitive, with any whitespace or
/// comment between the words; the text of string literals and dollar quotes is read as SQL too,
/// since `EXECUTE 'DROP …'` and `DO $$ … $$` run it; MySQL's executable comments `/*! … */` are
/// read as SQL. A keyword inside a longer identifier (`drop_table`) is not one.
pub(crate) fn sql_danger(text: &str) -> Option<(Rule, &'static str)> {
    let tokens = sql_tokens(text);
    let word = |i: usize, w: &str| tokens.get(i).is_some_and(|t| t.eq_ignore_ascii_case(w));
    for i in 0..tokens.len() {
        if word(i, "drop") {
            for (target, kind) in [
                ("database", "DROP DATABASE"),
                ("table", "DROP TABLE"),
                ("schema", "DROP SCHEMA"),
                ("owned", "DROP OWNED"),
                ("keyspace", "DROP KEYSPACE"),
            ] {
                if word(i + 1, target) {
                    return Some((Rule::SqlDrop, kind));
                }
            }
        }
        // Statements also start inside PL/pgSQL and procedure bodies.
        let statement_start = i == 0
            || [
                "begin",
                "then",
                "else",
                "loop",
                "do",
                "as",
                "immediate",
                BOUNDARY,
            ]
            .iter()
            .any(|w| tokens[i - 1].eq_ignore_ascii_case(w));
        if word(i, "truncate") && (statement_start || word(i + 1, "table")) {
            return Some((Rule::SqlDeleteAll, "TRUNCATE"));
        }
        if word(i, "delete") && (1..=3).any(|k| word(i + k, "from")) {
            let statement: Vec<&String> =
                tokens[i..].iter().take_while(|t| *t != BOUNDARY).collect();
            let filter = statement
                .iter()
                .position(|t| t.eq_ignore_ascii_case("where"))
                .map(|w| &statement[w + 1..]);
            let all_rows = match filter {
                None => true,
                Some(condition) => trivially_true(condition),
            };
            if all_rows {
                return Some((Rule::SqlDeleteAll, "DELETE without a WHERE"));
            }
        }
    }
    None
}

/// `WHERE 1=1`, `WHERE true`, `WHERE 1`, `WHERE x = x` (operators are dropped by the tokenizer).
fn trivially_true(condition: &[&String]) -> bool {
    match condition {
        [] => true,
        [one] => one.eq_ignore_ascii_case("true") || one.as_str() == "1",
        [a, b] => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// A token standing for a statement boundary: `;`, and the edges of string literals (whose
/// contents may be statements run by `EXECUTE`).
const BOUNDARY: &str = ";";

/// Splits text into identifier-like tokens, treating comments and punctuation as separators
/// and `;` and quote characters as statement boundaries.
fn sql_tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let mut boundary = false;
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            if matches!(chars.get(i + 2), Some('!' | '+')) {
                // MySQL runs `/*! … */` (and hints are read anyway): keep the contents.
                i += 3;
                while chars.get(i).is_some_and(char::is_ascii_digit) {
                    i += 1;
                }
            } else {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
        } else if c.is_alphanumeric() || c == '_' {
            current.push(c);
            i += 1;
            continue;
        } else {
            boundary = matches!(c, ';' | '\'' | '$' | '`');
            i += 1;
        }
        if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
        if boundary && tokens.last().is_some_and(|t| t != BOUNDARY) {
            tokens.push(BOUNDARY.to_owned());
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// MongoDB shell code that drops a database or a collection, or deletes every document:
/// `db.dropDatabase()`, `db["dropDatabase"]()`, `db.getSiblingDB('x').dropDatabase()`,
/// `db.c.drop()`, `db.runCommand({drop: 'c'})`, `db.c.deleteMany({})`, `db.c.remove({})`.
pub(crate) fn mongo_danger(text: &str) -> Option<(Rule, &'static str)> {
    let mut compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    // Join concatenated string pieces ('drop'+'Database') and turn ["name"] into .name.
    for joint in ["'+'", "\"+\"", "'+\"", "\"+'", "`+`"] {
        compact = compact.replace(joint, "");
    }
    for (open, close) in [("['", "']"), ("[\"", "\"]"), ("[`", "`]")] {
        compact = compact.replace(open, ".").replace(close, "");
    }
    let lower = compact.to_ascii_lowercase();
    if lower.contains("dropdatabase") {
        Some((Rule::SqlDrop, "dropDatabase()"))
    } else if lower.contains(".drop(")
        || lower.contains("{drop:")
        || lower.contains("dropcollection")
    {
        Some((Rule::SqlDrop, "drop()"))
    } else if lower.contains("deletemany({})")
        || lower.contains("deletemany()")
        || lower.contains("remove({})")
        || lower.contains(".remove()")
    {
        Some((Rule::SqlDeleteAll, "deleteMany({})"))
    } else {
        None
    }
}

/// Database clients that execute SQL given as an argument (`-c`, `-e`, `--execute`, `--query`,
/// positional SQL after the database file) or on standard input.
pub(crate) fn is_sql_client(name: &str) -> bool {
    matches!(
        name,
        "psql"
            | "mysql"
            | "mariadb"
            | "sqlite3"
            | "sqlite"
            | "sqlcmd"
            | "clickhouse-client"
            | "clickhouse"
            | "cockroach"
            | "duckdb"
            | "cqlsh"
            | "isql"
            | "bq"
            | "snowsql"
            | "trino"
            | "presto"
            | "vsql"
            | "db2"
            | "sqlplus"
    )
}

/// MongoDB shells, which take JavaScript (`--eval`) instead of SQL.
pub(crate) fn is_mongo_client(name: &str) -> bool {
    matches!(name, "mongo" | "mongosh")
}
