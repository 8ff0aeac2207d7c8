//! The audit trail in PostgreSQL: one chained record per row of `audit_log`, appended under an
//! advisory lock held to the end of the transaction, so the chain has one writer at a time
//! across every process using the database.

use maestro_core::audit::{AuditStorage, Extend, StorageError};

use crate::PgError;
use crate::store::{PgStore, rollback};

/// The advisory lock key of the audit chain ("maestro" in ASCII, then 2).
pub(crate) const AUDIT_LOCK: i64 = 0x6d61_6573_7472_6f02;

/// The audit trail kept in the store's database.
pub(crate) struct PgAudit {
    store: PgStore,
}

impl PgAudit {
    pub(crate) fn new(store: PgStore) -> Self {
        Self { store }
    }
}

/// The trail's last line, inside a transaction holding [`AUDIT_LOCK`].
pub(crate) async fn last_line(
    client: &tokio_postgres::Client,
) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT line FROM audit_log ORDER BY seq DESC LIMIT 1", &[])
        .await?
        .map(|row| row.get(0)))
}

/// Insert `lines` (newline-ended, as the chain makes them) after the trail's last row.
pub(crate) async fn insert_lines(
    client: &tokio_postgres::Client,
    lines: &[u8],
) -> Result<(), tokio_postgres::Error> {
    let lines: Vec<Vec<u8>> = lines
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    client
        .execute(
            "INSERT INTO audit_log (seq, line)
             SELECT (SELECT coalesce(max(seq), 0) FROM audit_log) + n, line
             FROM unnest($1::bytea[]) WITH ORDINALITY AS new(line, n)",
            &[&lines],
        )
        .await?;
    Ok(())
}

impl AuditStorage for PgAudit {
    fn describe(&self) -> String {
        format!("the audit_log table of {}", self.store.describe_store())
    }

    fn append_locked(&self, extend: &mut Extend<'_>) -> Result<(), StorageError> {
        let pool = self.store.inner().pool.clone();
        let db = &self.store.inner().db;
        let (client, last) = db
            .run(async move {
                let mut client = pool.get().await?;
                let locked = async {
                    client.batch_execute("BEGIN").await?;
                    client
                        .execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
                        .await?;
                    last_line(&client).await
                }
                .await;
                match locked {
                    Ok(last) => Ok((client, last)),
                    Err(error) => {
                        rollback(&mut client).await;
                        Err(PgError::from(error))
                    }
                }
            })
            .map_err(|gone| PgError::Thread(gone.to_string()))??;
        // Should the caller's code panic inside the transaction, the connection is rolled back
        // before it goes back to the pool (or the audit lock would stay held).
        let lines = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            extend(last.as_deref(), true)
        })) {
            Ok(lines) => lines,
            Err(panic) => {
                let mut client = client;
                let _ = db.run(async move { rollback(&mut client).await });
                std::panic::resume_unwind(panic);
            }
        };
        db.run(async move {
            let mut client = client;
            let lines = match lines {
                Ok(lines) => lines,
                Err(error) => {
                    rollback(&mut client).await;
                    return Err(StorageError::from(error));
                }
            };
            let written = async {
                insert_lines(&client, &lines).await?;
                client.batch_execute("COMMIT").await
            }
            .await;
            if let Err(error) = written {
                rollback(&mut client).await;
                return Err(Box::new(PgError::from(error)) as StorageError);
            }
            Ok(())
        })
        .map_err(|gone| Box::new(PgError::Thread(gone.to_string())) as StorageError)?
    }

    fn read(&self) -> Result<Vec<u8>, StorageError> {
        let pool = self.store.inner().pool.clone();
        let lines = self
            .store
            .inner()
            .db
            .run(async move {
                let rows = pool
                    .get()
                    .await?
                    .query("SELECT line FROM audit_log ORDER BY seq", &[])
                    .await?;
                Ok::<_, PgError>(
                    rows.iter()
                        .map(|row| row.get::<_, Vec<u8>>(0))
                        .collect::<Vec<_>>(),
                )
            })
            .map_err(|gone| PgError::Thread(gone.to_string()))??;
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
        }
        Ok(bytes)
    }
}
