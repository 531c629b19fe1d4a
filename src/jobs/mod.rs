//! The durable job queue: a table in larder's own database, workers inside the server.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::state::AppState;

/// The handle handlers use to wake workers when a job is stored.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub wake: Arc<Notify>,
}

/// Sets the queue gauges (depth, jobs by status) before `/metrics` renders.
pub async fn record_queue_metrics(_state: &AppState) {}
