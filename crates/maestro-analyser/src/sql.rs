//! Recognising schema-destroying statements in text handed to database clients.

/// Finds `DROP DATABASE`, `DROP TABLE` or `DROP SCHEMA` as SQL tokens: case-insensitive, with any
/// whitespace or SQL comments between the keywords (`drop/**/table`, `DROP\n  TABLE`), and not
/// as part of a longer identifier (`drop_table`, `backdrop table`). Returns the statement kind.
pub(crate) fn sql_drop(text: &str) -> Option<&'static str> {
    let tokens = sql_tokens(text);
    tokens.windows(2).find_map(|pair| {
        if !pair[0].eq_ignore_ascii_case("drop") {
            return None;
        }
        let target = &pair[1];
        if target.eq_ignore_ascii_case("database") {
            Some("DROP DATABASE")
        } else if target.eq_ignore_ascii_case("table") {
            Some("DROP TABLE")
        } else if target.eq_ignore_ascii_case("schema") {
            Some("DROP SCHEMA")
        } else {
            None
        }
    })
}

/// Splits text into identifier-like tokens, treating comments and punctuation as separators.
fn sql_tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            current.push(c);
            i += 1;
            continue;
        } else {
            i += 1;
        }
        if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// MongoDB shell code that drops a database or a collection.
pub(crate) fn mongo_drop(text: &str) -> Option<&'static str> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.contains("dropDatabase(") {
        Some("dropDatabase()")
    } else if compact.contains(".drop(") {
        Some("drop()")
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
