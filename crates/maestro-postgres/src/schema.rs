//! Versioned migrations, run by the store itself when it connects: each applied version is a
//! row of `schema_migrations`; a run that applies anything holds an advisory lock, so stores
//! starting at once apply each version once. A store that finds every version it knows applied,
//! and no other, opens after one read, without the lock.

use deadpool_postgres::Pool;

use crate::PgError;

/// The migrations, in order: version, name, SQL.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "history", include_str!("../migrations/0001_history.sql")),
    (
        2,
        "constant_pages",
        include_str!("../migrations/0002_constant_pages.sql"),
    ),
    (
        3,
        "owner_turns",
        include_str!("../migrations/0003_owner_turns.sql"),
    ),
];

/// The advisory lock key held while migrating ("maestro" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x6d61_6573_7472_6f01;

/// Apply the migrations the database lacks; the versions applied now.
pub(crate) async fn migrate(pool: &Pool) -> Result<Vec<i32>, PgError> {
    let mut client = pool.get().await?;
    if is_current(&client).await {
        return Ok(Vec::new());
    }
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let applied: Vec<i32> = transaction
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    if let Some(found) = applied.iter().copied().max().filter(|found| *found > known) {
        return Err(PgError::SchemaTooNew { found, known });
    }
    let mut now = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
        tracing::info!(version, name, "applied a schema migration");
        now.push(*version);
    }
    transaction.commit().await?;
    Ok(now)
}

/// Whether every known migration, and none other, is applied: one read without the lock, for
/// the common case (every `mc` opens the store, and the schema is nearly always current), in
/// one round trip. Anything else (no table yet, a migration missing, a newer schema, an error)
/// is left to the locked path, which decides and says why.
async fn is_current(client: &tokio_postgres::Client) -> bool {
    let Ok(messages) = client
        .simple_query("SELECT version FROM schema_migrations ORDER BY version")
        .await
    else {
        return false;
    };
    let applied: Vec<&str> = messages
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .collect();
    let known: Vec<String> = MIGRATIONS
        .iter()
        .map(|(version, _, _)| version.to_string())
        .collect();
    applied == known
}
