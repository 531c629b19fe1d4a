//! What a job's run function gets and returns: its context (database, worker, lease, stop
//! signal, storage-fault retries), how an attempt ended, and why it failed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Db, StoreError};

/// What a running job needs: the database, who it is, its lease, and the signal to stop.
#[derive(Clone)]
pub struct JobContext {
    pub db: Db,
    pub worker: Arc<str>,
    pub lease_ms: i64,
    /// Cancelled at shutdown or when the lease is lost: the job stops at its next chunk.
    pub stop: CancellationToken,
}

/// How often a job retries a write that failed for lack of storage: often, so that once
/// space is back the job's holder commits (and extends its lease) before another worker
/// could take the job over; a failed write costs little.
const STORAGE_RETRY: Duration = Duration::from_millis(200);

impl JobContext {
    /// Runs one of the job's writes until it succeeds, waiting out storage faults: a full
    /// disk or an unwritable file is not the job's fault, so it costs no attempt, and
    /// nothing is counted done that did not commit. `None` when the job is told to stop
    /// while it waits.
    pub async fn persist<T, W, F>(&self, mut write: W) -> Result<Option<T>, JobError>
    where
        W: FnMut() -> F,
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut waiting = false;
        loop {
            match write().await {
                Ok(value) => {
                    if waiting {
                        tracing::info!(worker = %self.worker, "storage is back: the job goes on");
                    }
                    return Ok(Some(value));
                }
                Err(error) if error.is_storage() => {
                    if !waiting {
                        tracing::warn!(worker = %self.worker, %error, "a job's write failed for lack of storage; retrying until it succeeds");
                        waiting = true;
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(STORAGE_RETRY) => {}
                    }
                }
                Err(error) => return Err(JobError::store(error)),
            }
        }
    }
}

/// How an attempt ended, short of an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Stopped on request (shutdown): hand the job back.
    Interrupted,
    /// Another worker holds the job now: leave it alone.
    LeaseLost,
    /// A cancel was asked for: the job stopped after its last committed chunk.
    Cancelled,
}

/// Why an attempt failed.
#[derive(Debug)]
pub struct JobError {
    pub message: String,
    /// Retrying cannot help (the payload itself is bad).
    pub permanent: bool,
}

impl JobError {
    pub fn permanent(message: impl Into<String>) -> Self {
        JobError {
            message: message.into(),
            permanent: true,
        }
    }

    pub fn store(error: StoreError) -> Self {
        JobError {
            message: error.to_string(),
            permanent: false,
        }
    }
}
