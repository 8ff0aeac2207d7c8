//! Step logs in the database, in chunks: each `write` is one row of `log_chunks`, committed
//! without waiting for the disk (`synchronous_commit = off`) so a busy step costs one round trip
//! per chunk; `sync` (at the step's end) commits synchronously, which makes every earlier
//! chunk durable too (the write-ahead log is flushed in order).

use std::io;

use maestro_core::JobId;
use maestro_core::state::LogSink;

use crate::PgError;
use crate::store::PgStore;

/// Chunks read per query.
const CHUNKS_PER_READ: i64 = 64;

/// A step's log being written.
pub(crate) struct PgLogSink {
    store: PgStore,
    job_id: JobId,
    step: String,
    next_seq: i32,
}

impl PgLogSink {
    pub(crate) fn new(store: PgStore, job_id: JobId, step: &str) -> Self {
        Self {
            store,
            job_id,
            step: step.to_owned(),
            next_seq: 1,
        }
    }

    fn run(
        &self,
        future: impl Future<Output = Result<(), PgError>> + Send + 'static,
    ) -> io::Result<()> {
        self.store
            .inner()
            .db
            .run(future)
            .map_err(io::Error::other)?
            .map_err(io::Error::other)
    }
}

impl io::Write for PgLogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let pool = self.store.inner().pool.clone();
        let (job_id, step, seq, bytes) =
            (self.job_id, self.step.clone(), self.next_seq, buf.to_vec());
        self.run(async move {
            let mut client = pool.get().await?;
            let transaction = client.transaction().await?;
            transaction
                .batch_execute("SET LOCAL synchronous_commit TO off")
                .await?;
            transaction
                .execute(
                    "INSERT INTO log_chunks (job_id, step, seq, bytes) VALUES ($1, $2, $3, $4)",
                    &[&job_id, &step, &seq, &bytes],
                )
                .await?;
            transaction.commit().await?;
            Ok(())
        })?;
        self.next_seq += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogSink for PgLogSink {
    fn sync(&mut self) -> io::Result<()> {
        let pool = self.store.inner().pool.clone();
        let (job_id, step) = (self.job_id, self.step.clone());
        self.run(async move {
            pool.get()
                .await?
                .execute(
                    "UPDATE step_logs SET synced_at = now() WHERE job_id = $1 AND step = $2",
                    &[&job_id, &step],
                )
                .await?;
            Ok(())
        })
    }
}

/// A step's log being read: what is recorded so far, and more on a later read.
pub(crate) struct PgLogReader {
    store: PgStore,
    job_id: JobId,
    step: String,
    next_seq: i32,
    buffer: Vec<u8>,
    position: usize,
}

impl PgLogReader {
    pub(crate) fn new(store: PgStore, job_id: JobId, step: &str) -> Self {
        Self {
            store,
            job_id,
            step: step.to_owned(),
            next_seq: 1,
            buffer: Vec::new(),
            position: 0,
        }
    }
}

impl io::Read for PgLogReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position == self.buffer.len() {
            let pool = self.store.inner().pool.clone();
            let (job_id, step, from) = (self.job_id, self.step.clone(), self.next_seq);
            let chunks = self
                .store
                .inner()
                .db
                .run(async move {
                    let rows = pool
                        .get()
                        .await?
                        .query(
                            "SELECT seq, bytes FROM log_chunks
                             WHERE job_id = $1 AND step = $2 AND seq >= $3
                             ORDER BY seq LIMIT $4",
                            &[&job_id, &step, &from, &CHUNKS_PER_READ],
                        )
                        .await?;
                    Ok::<_, PgError>(
                        rows.iter()
                            .map(|row| (row.get::<_, i32>(0), row.get::<_, Vec<u8>>(1)))
                            .collect::<Vec<_>>(),
                    )
                })
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?;
            self.buffer.clear();
            self.position = 0;
            for (seq, bytes) in chunks {
                // Chunks are written one after the other; stop at a gap rather than skip it.
                if seq != self.next_seq {
                    break;
                }
                self.buffer.extend_from_slice(&bytes);
                self.next_seq += 1;
            }
        }
        let count = buf.len().min(self.buffer.len() - self.position);
        buf[..count].copy_from_slice(&self.buffer[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}
