//! The durable job queue: a table in larder's own database, workers inside the server.
//!
//! A job is stored (and committed) before `POST /process` answers 202. Workers claim jobs
//! with a lease, extend it while they run, and every write they make names them, so a job
//! whose worker died is taken up again after the lease and never completes twice.

pub mod context;
pub mod kinds;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::job::JobStatus;
use crate::store::jobs::{Cancel, Claimed};
use crate::store::{self, Db, StoreResult, now_millis};
use context::{JobContext, JobError, Outcome};

/// A kind of job: the name clients give as `kind`, and how one runs. The payload is stored as
/// the request gave it and read by `run`, a chunk at a time.
pub trait Job: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn run<'a>(
        &'a self,
        job: &'a Claimed,
        context: &'a JobContext,
    ) -> BoxFuture<'a, Result<Outcome, JobError>>;

    /// The `result` of a job stopped before its end (cancelled): what its committed work
    /// did, read from the database. None by default (a kind with nothing to report).
    fn result<'a>(
        &'a self,
        _db: &'a Db,
        _job_id: Uuid,
    ) -> BoxFuture<'a, Result<Option<String>, JobError>> {
        Box::pin(async { Ok(None) })
    }
}

/// The kinds this process accepts and runs: larder's own, plus any the embedding program
/// (the tests) adds through the app builder.
#[derive(Clone)]
pub struct Kinds(Arc<HashMap<&'static str, Arc<dyn Job>>>);

impl Default for Kinds {
    fn default() -> Self {
        Kinds::empty().with(kinds::import_items::ImportItems)
    }
}

impl Kinds {
    pub fn empty() -> Self {
        Kinds(Arc::new(HashMap::new()))
    }

    /// These kinds and `job`.
    pub fn with(self, job: impl Job) -> Self {
        let mut kinds = Arc::unwrap_or_clone(self.0);
        kinds.insert(job.kind(), Arc::new(job));
        Kinds(Arc::new(kinds))
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Job>> {
        self.0.get(kind)
    }

    /// The accepted names as `'a', 'b'`, sorted, for a validation message.
    pub fn expected(&self) -> String {
        let mut names: Vec<_> = self.0.keys().map(|name| format!("'{name}'")).collect();
        names.sort();
        names.join(" or ")
    }
}

/// Attempts before a job is `failed`.
pub const MAX_ATTEMPTS: i32 = 5;

/// The handle handlers use to wake workers when a job is stored, and the kinds they accept.
#[derive(Clone, Default)]
pub struct Queue {
    pub wake: Arc<Notify>,
    pub kinds: Kinds,
    /// Cancelled when the server begins to shut down: followers of a job's events let go
    /// (their connection would otherwise hold the shutdown for the whole grace period).
    pub closing: CancellationToken,
}

impl Queue {
    /// Wakes this process's idle workers (other processes hear PostgreSQL's `NOTIFY`).
    pub fn wake_workers(&self) {
        self.wake.notify_waiters();
    }
}

/// Sets the queue gauges (depth, jobs by status) before `/metrics` renders.
pub async fn record_queue_metrics(db: &Db) {
    let counts = match store::jobs::counts(db).await {
        Ok(counts) => counts,
        Err(error) => {
            tracing::warn!(%error, "counting jobs for the metrics failed");
            return;
        }
    };
    for status in JobStatus::ALL {
        let count = counts
            .iter()
            .find(|(name, _)| name == status.as_str())
            .map_or(0, |(_, count)| *count);
        metrics::gauge!("jobs", "status" => status.as_str()).set(count as f64);
        if status == JobStatus::Queued {
            metrics::gauge!("job_queue_depth").set(count as f64);
        }
    }
}

/// The `result` of a cancelled job of `kind`, or None (a kind that reports none, or one that
/// could not be read: logged).
pub async fn stopped_result(db: &Db, kinds: &Kinds, kind: &str, job_id: Uuid) -> Option<String> {
    let job = kinds.get(kind)?;
    match job.result(db, job_id).await {
        Ok(result) => result,
        Err(error) => {
            tracing::warn!(%job_id, error = %error.message, "reading a cancelled job's result failed");
            None
        }
    }
}

/// Cancels a job (`POST /jobs/{id}/cancel`): a queued one at once, with the result of what
/// earlier attempts committed; a running one is asked to stop after its current chunk, which
/// its worker learns from the database (in whichever process it runs).
pub async fn cancel(
    db: &Db,
    kinds: &Kinds,
    kind: &str,
    job_id: Uuid,
) -> StoreResult<Option<Cancel>> {
    let outcome = store::jobs::cancel(db, job_id).await?;
    if outcome == Some(Cancel::Cancelled)
        && let Some(result) = stopped_result(db, kinds, kind, job_id).await
    {
        store::jobs::set_cancelled_result(db, job_id, &result).await?;
    }
    Ok(outcome)
}

/// The counter of jobs the retention sweep forgot.
pub const EXPIRED_METRIC: &str = "jobs_expired_total";

/// Forgets finished jobs older than `retention` every so often (a tenth of the retention,
/// between 100 ms and a minute), counting them in [`EXPIRED_METRIC`].
pub async fn sweep_expired(db: Db, retention: Duration, stop: CancellationToken) {
    metrics::describe_counter!(
        EXPIRED_METRIC,
        "Finished jobs forgotten after LARDER_JOB_RETENTION (their ids are kept)"
    );
    metrics::counter!(EXPIRED_METRIC).increment(0);
    let every = (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store::jobs::expire(&db, now_millis().saturating_sub(retention_ms)).await {
            Ok(0) => {}
            Ok(expired) => {
                tracing::info!(expired, "expired finished jobs");
                metrics::counter!(EXPIRED_METRIC).increment(expired);
            }
            Err(error) if error.is_storage() => {
                tracing::debug!(%error, "expiring jobs failed for lack of storage")
            }
            Err(error) => tracing::warn!(%error, "expiring jobs failed"),
        }
    }
}
