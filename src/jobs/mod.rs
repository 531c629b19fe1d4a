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

use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::domain::job::JobStatus;
use crate::store::jobs::Claimed;
use crate::store::{self, Db};
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
