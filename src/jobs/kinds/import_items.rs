//! `import_items`: creates the given items for the job's owner, in chunks of 1,000 rows
//! growing to 8,000 (one transaction each).
//!
//! Each chunk's items, rejections and the job's `done` cursor commit together, so a retried
//! job resumes after its last committed chunk; `(job_id, job_index)` is unique, so a row is
//! never created twice. Rows are parsed one chunk at a time from the stored array text, so
//! memory stays bounded by the payload text plus one chunk.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::domain::error::FieldError;
use crate::domain::fields::not_an_object;
use crate::domain::item::ItemDraft;
use crate::jobs::Job;
use crate::jobs::context::{JobContext, JobError, Outcome};
use crate::store::jobs::{Chunk, Claimed, Held, ImportRow, Rejection};
use crate::store::{self, Db};

/// Rows in a job's first chunk: a small import shows progress (and stops when cancelled)
/// after a few milliseconds.
pub const CHUNK: usize = 1000;

/// Rows in a chunk once the import has run a while. A commit's cost is mostly the index
/// pages it dirties, and the price-ordered listing indexes (migration 0007) take rows in
/// random order, so a commit of 1,000 rows writes about as many pages as one of 8,000
/// (`bench/run.sh`'s 100,000-item import on SQLite, one host, 2026-12-05: 49,831 items/s
/// in 1,000-row chunks, 98,971 growing to 8,000). 8,000 rows hold SQLite's write lock for
/// tens of milliseconds, the bound a creation waits during an import.
pub const CHUNK_MAX: usize = 8000;

/// Where the chunk that starts at row `done` ends: the chunk doubles what is done so far,
/// from [`CHUNK`] to [`CHUNK_MAX`] rows (1,000, 1,000, 2,000, 4,000, 8,000, 8,000, …).
/// It depends on `done` alone, so a resumed job cuts its chunks as the first attempt did.
pub fn chunk_end(done: usize, total: usize) -> usize {
    (done + done.clamp(CHUNK, CHUNK_MAX)).min(total)
}

/// The most rejected rows a job keeps (with their errors); the count is always exact.
pub const KEPT_REJECTIONS: i64 = 100;

/// How often a long import logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The `result` of a finished import: every created id, and the first
/// [`KEPT_REJECTIONS`] rejected rows; the counts are exact.
#[derive(Serialize)]
struct ImportResult<'a> {
    created_count: usize,
    created: Vec<i64>,
    rejected_count: i64,
    rejected: Vec<RejectedRow<'a>>,
}

#[derive(Serialize)]
struct RejectedRow<'a> {
    index: i64,
    errors: &'a RawValue,
}

/// A row as an item draft, or its errors with `loc` relative to the row (`["price"]`).
fn parse_row(row: &RawValue) -> Result<ItemDraft, Vec<FieldError>> {
    match serde_json::from_str::<Value>(row.get()) {
        Ok(value) => ItemDraft::try_from(&value),
        // The payload was checked to be JSON when the job was accepted.
        Err(_) => Err(vec![not_an_object()]),
    }
}

/// The `import_items` kind.
pub struct ImportItems;

impl Job for ImportItems {
    fn kind(&self) -> &'static str {
        super::IMPORT_ITEMS
    }

    fn run<'a>(
        &'a self,
        job: &'a Claimed,
        context: &'a JobContext,
    ) -> BoxFuture<'a, Result<Outcome, JobError>> {
        Box::pin(run(job, context))
    }

    fn result<'a>(
        &'a self,
        db: &'a Db,
        job_id: uuid::Uuid,
    ) -> BoxFuture<'a, Result<Option<String>, JobError>> {
        Box::pin(async move { import_result(db, job_id).await.map(Some) })
    }
}

async fn run(job: &Claimed, context: &JobContext) -> Result<Outcome, JobError> {
    let rows: Vec<&RawValue> = serde_json::from_str(&job.payload)
        .map_err(|e| JobError::permanent(format!("the stored payload is not a JSON array: {e}")))?;
    let total = rows.len() as i64;
    let mut done = job.done.clamp(0, total);
    if done > 0 {
        tracing::info!(job_id = %job.id, done, total, attempt = job.attempts, "resuming import");
    }
    let mut rejected_count = job.rejected_count;
    let started = Instant::now();
    let mut logged = Instant::now();
    while done < total {
        if context.stop.is_cancelled() {
            return Ok(Outcome::Interrupted);
        }
        let end = chunk_end(done as usize, rows.len());
        let mut valid = Vec::with_capacity(end - done as usize);
        let mut rejected = Vec::new();
        for (offset, row) in rows[done as usize..end].iter().enumerate() {
            let index = done + offset as i64;
            match parse_row(row) {
                Ok(draft) => valid.push(ImportRow { index, draft }),
                Err(errors) => {
                    if rejected_count < KEPT_REJECTIONS {
                        rejected.push(Rejection {
                            index,
                            errors: serde_json::to_string(&errors).expect("field errors serialise"),
                        });
                    }
                    rejected_count += 1;
                }
            }
        }
        let chunk = Chunk {
            rows: &valid,
            rejections: &rejected,
            done: end as i64,
            rejected_count,
        };
        // With tracing on, each committed chunk is a span under the job's attempt.
        let span = tracing::info_span!(
            target: crate::telemetry::SPANS,
            "job.chunk",
            otel.name = "import_items chunk",
            job.id = %job.id,
            chunk.first = done,
            chunk.rows = end as i64 - done,
            chunk.rejected = rejected.len(),
        );
        let committed = context
            .persist(|| {
                store::jobs::commit_chunk(
                    &context.db,
                    job,
                    &context.worker,
                    context.lease_ms,
                    &chunk,
                )
            })
            .instrument(span)
            .await?;
        let cancel_requested = match committed {
            None => return Ok(Outcome::Interrupted),
            Some(Held::Lost) => return Ok(Outcome::LeaseLost),
            Some(Held::Yes { cancel_requested }) => cancel_requested,
        };
        done = end as i64;
        if cancel_requested && done < total {
            tracing::info!(job_id = %job.id, done, total, "import cancelled");
            return Ok(Outcome::Cancelled);
        }
        if logged.elapsed() >= PROGRESS_EVERY {
            logged = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(job_id = %job.id, done, total, rows_per_sec = rate as u64, "import progress");
        }
        // Let other tasks (and other writers queued on SQLite's one connection) in between chunks.
        tokio::task::yield_now().await;
    }
    finish(job, context).await
}

/// Builds `result` from what the chunks committed and marks the job succeeded.
async fn finish(job: &Claimed, context: &JobContext) -> Result<Outcome, JobError> {
    let result = import_result(&context.db, job.id).await?;
    let succeeded = context
        .persist(|| store::jobs::succeed(&context.db, job.id, &context.worker, &result))
        .await?;
    Ok(match succeeded {
        Some(true) => Outcome::Succeeded,
        Some(false) => Outcome::LeaseLost,
        None => Outcome::Interrupted,
    })
}

/// The `result` of the chunks committed so far: every created id, the first rejected rows
/// and the exact counts (the job row's `rejected_count`).
async fn import_result(db: &Db, job_id: uuid::Uuid) -> Result<String, JobError> {
    let rejected_count = store::jobs::find(db, job_id)
        .await
        .map_err(JobError::store)?
        .map_or(0, |job| job.rejected_count);
    let created = store::jobs::created_ids(db, job_id)
        .await
        .map_err(JobError::store)?;
    let stored = store::jobs::rejections(db, job_id)
        .await
        .map_err(JobError::store)?;
    let mut rejected = Vec::with_capacity(stored.len());
    let mut raw = Vec::with_capacity(stored.len());
    for (index, errors) in stored {
        let errors = RawValue::from_string(errors)
            .map_err(|e| JobError::permanent(format!("a stored rejection is not JSON: {e}")))?;
        raw.push((index, errors));
    }
    for (index, errors) in &raw {
        rejected.push(RejectedRow {
            index: *index,
            errors,
        });
    }
    Ok(serde_json::to_string(&ImportResult {
        created_count: created.len(),
        created,
        rejected_count,
        rejected,
    })
    .expect("a result serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_double_from_the_first_to_the_largest_and_end_at_the_total() {
        let mut ends = Vec::new();
        let mut done = 0;
        while done < 40_000 {
            done = chunk_end(done, 40_000);
            ends.push(done);
        }
        assert_eq!(
            ends,
            [1000, 2000, 4000, 8000, 16_000, 24_000, 32_000, 40_000]
        );
        assert_eq!(chunk_end(0, 10), 10);
        assert_eq!(chunk_end(2000, 2500), 2500);
        // A resumed job cuts the same chunks.
        assert_eq!(chunk_end(4000, 100_000), 8000);
    }
}
