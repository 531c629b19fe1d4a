//! The durable job queue: a table in larder's own database, workers inside the server.
//!
//! A job is stored (and committed) before `POST /process` answers 202. Workers claim jobs
//! with a lease, extend it while they run, and every write they make names them, so a job
//! whose worker died is taken up again after the lease and never completes twice.

pub mod import;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::state::AppState;
use crate::store;

/// The job kinds `POST /process` accepts.
pub const IMPORT_ITEMS: &str = "import_items";
/// A kind that panics on purpose; it exists only with `LARDER_TEST_HOOKS`.
pub const TEST_PANIC: &str = "test_panic";

/// Attempts before a job is `failed`.
pub const MAX_ATTEMPTS: i32 = 5;

/// The handle handlers use to wake workers when a job is stored.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub wake: Arc<Notify>,
}

impl Queue {
    /// Wakes this process's idle workers (other processes hear PostgreSQL's `NOTIFY`).
    pub fn wake_workers(&self) {
        self.wake.notify_waiters();
    }
}

const STATUSES: [&str; 4] = ["queued", "running", "succeeded", "failed"];

/// Sets the queue gauges (depth, jobs by status) before `/metrics` renders.
pub async fn record_queue_metrics(state: &AppState) {
    let counts = match store::jobs::counts(&state.db).await {
        Ok(counts) => counts,
        Err(error) => {
            tracing::warn!(%error, "counting jobs for the metrics failed");
            return;
        }
    };
    for status in STATUSES {
        let count = counts
            .iter()
            .find(|(name, _)| name == status)
            .map_or(0, |(_, count)| *count);
        metrics::gauge!("jobs", "status" => status).set(count as f64);
        if status == "queued" {
            metrics::gauge!("job_queue_depth").set(count as f64);
        }
    }
}
