//! The workers: claim a job, run it in its own task (so a panic fails the attempt, not the
//! worker), heartbeat its lease while it runs, then record the outcome: succeeded, retried
//! with exponential backoff, failed after the last attempt, handed back at shutdown, or
//! cancelled when its owner asked (the request is in the job's row: a chunk commit or a
//! heartbeat reads it, and a change to the job told by any process makes the worker look).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Kinds;
use super::context::{JobContext, JobError, Outcome};
use sqlx::postgres::{PgListener, PgPool};

use crate::store::jobs::{CHANNEL, Claimed, EVENTS_CHANNEL, Held};
use crate::store::{self, Db, StoreError, now_millis};

/// How long an idle worker sleeps when nothing woke it: the fallback to notifications.
const POLL: Duration = Duration::from_secs(1);
/// The first retry waits this long, each further one twice as long, up to `BACKOFF_MAX`.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Settings the workers share.
#[derive(Clone)]
pub struct WorkerConfig {
    pub db: Db,
    pub wake: Arc<Notify>,
    pub lease: Duration,
    pub kinds: Kinds,
}

/// Starts `count` workers; they stop (handing back what they hold) when `stop` is cancelled.
pub fn spawn_workers(
    config: WorkerConfig,
    count: usize,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let process = uuid::Uuid::new_v4().simple().to_string();
    (0..count)
        .map(|n| {
            let id: Arc<str> = format!("{}-{}/{n}", std::process::id(), &process[..8]).into();
            tokio::spawn(work(config.clone(), id, stop.clone()))
        })
        .collect()
}

async fn work(config: WorkerConfig, id: Arc<str>, stop: CancellationToken) {
    let lease_ms = i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX / 2);
    tracing::debug!(worker = %id, "worker started");
    while !stop.is_cancelled() {
        // Registered before the claim, so a job stored between the claim and the wait still
        // wakes this worker.
        let notified = config.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match store::jobs::claim(&config.db, &id, lease_ms).await {
            Ok(Some(job)) => {
                let span = attempt_span(&job);
                run_attempt(&config, &id, lease_ms, job, &stop)
                    .instrument(span)
                    .await;
                continue;
            }
            Ok(None) => {}
            // Logged once by the storage health when the fault starts.
            Err(error) if error.is_storage() => {
                tracing::debug!(worker = %id, %error, "claiming a job failed")
            }
            Err(error) => tracing::warn!(worker = %id, %error, "claiming a job failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = &mut notified => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    tracing::debug!(worker = %id, "worker stopped");
}

/// With tracing on, a job's attempt is a trace: its chunks (`jobs::kinds`), heartbeats and
/// the store calls that end it are its children.
fn attempt_span(job: &Claimed) -> tracing::Span {
    tracing::info_span!(
        target: crate::telemetry::SPANS,
        "job",
        otel.name = %format_args!("job {}", job.kind),
        job.id = %job.id,
        job.kind = %job.kind,
        job.attempt = job.attempts,
    )
}

async fn run_attempt(
    config: &WorkerConfig,
    worker: &Arc<str>,
    lease_ms: i64,
    job: Claimed,
    stop: &CancellationToken,
) {
    let db = &config.db;
    if job.cancel_requested {
        // Asked while an earlier worker held it (and died, or failed the attempt).
        finish_cancelled(config, worker, &job).await;
        return;
    }
    if job.attempts > job.max_attempts {
        // Its workers kept dying (the lease ran out every time): stop trying.
        let error = format!(
            "gave up after {} attempts whose worker stopped",
            job.max_attempts
        );
        record(
            &job,
            worker,
            store::jobs::fail(db, job.id, worker, &error).await,
        );
        return;
    }
    tracing::info!(job_id = %job.id, kind = %job.kind, attempt = job.attempts, worker = %worker, "job started");
    let job_stop = stop.child_token();
    let context = JobContext {
        db: db.clone(),
        worker: worker.clone(),
        lease_ms,
        stop: job_stop.clone(),
    };
    let started = Instant::now();
    let kinds = config.kinds.clone();
    let shared = Arc::new(job);
    let task = {
        let job = shared.clone();
        tokio::spawn(async move { run_kind(&kinds, &job, &context).await }.in_current_span())
    };
    let (outcome, cancel_seen) =
        heartbeat_until_done(db, &shared, worker, lease_ms, task, &job_stop).await;
    let job = &*shared;
    let seconds = started.elapsed().as_secs_f64();
    let label = match &outcome {
        Ok(Ok(Outcome::Succeeded)) => "succeeded",
        Ok(Ok(Outcome::Cancelled)) => "cancelled",
        Ok(Ok(Outcome::Interrupted)) if cancel_seen && !stop.is_cancelled() => "cancelled",
        Ok(Ok(Outcome::Interrupted)) if stop.is_cancelled() => "interrupted",
        Ok(Ok(Outcome::Interrupted | Outcome::LeaseLost)) => "lease_lost",
        _ => "error",
    };
    metrics::histogram!("job_duration_seconds", "kind" => job.kind.clone(), "outcome" => label)
        .record(seconds);
    match outcome {
        Ok(Ok(Outcome::Succeeded)) => {
            tracing::info!(job_id = %job.id, seconds, rows = job.total, "job succeeded");
        }
        Ok(Ok(Outcome::Cancelled)) => finish_cancelled(config, worker, job).await,
        Ok(Ok(Outcome::Interrupted)) if cancel_seen && !stop.is_cancelled() => {
            finish_cancelled(config, worker, job).await
        }
        Ok(Ok(Outcome::Interrupted)) if stop.is_cancelled() => {
            tracing::info!(job_id = %job.id, "job handed back to the queue");
            record(job, worker, store::jobs::release(db, job.id, worker).await);
        }
        // Interrupted but not shutting down: the heartbeat found the lease gone.
        Ok(Ok(Outcome::Interrupted | Outcome::LeaseLost)) => {
            tracing::warn!(job_id = %job.id, worker = %worker, "lease lost: another worker has the job");
        }
        Ok(Err(error)) => attempt_failed(db, job, worker, &error.message, error.permanent).await,
        Err(join) => {
            let message = if join.is_panic() {
                let payload = join.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                format!("the job panicked: {text}")
            } else {
                "the job was cancelled".to_string()
            };
            attempt_failed(db, job, worker, &message, false).await;
        }
    }
}

/// Ends a job whose cancel was asked for, with the result of what it committed.
async fn finish_cancelled(config: &WorkerConfig, worker: &str, job: &Claimed) {
    let db = &config.db;
    let result = super::stopped_result(db, &config.kinds, &job.kind, job.id).await;
    tracing::info!(job_id = %job.id, "job cancelled");
    record(
        job,
        worker,
        store::jobs::cancelled(db, job.id, worker, result.as_deref()).await,
    );
}

/// Waits for the job's task, extending the lease every third of it. When the lease is gone,
/// tells the job to stop (its next chunk commit would be refused anyway); when a cancel was
/// asked for, too (and says so: the second value). A change to the job told by any process
/// makes it look at once, instead of at the next heartbeat.
async fn heartbeat_until_done(
    db: &Db,
    job: &Claimed,
    worker: &str,
    lease_ms: i64,
    mut task: JoinHandle<Result<Outcome, JobError>>,
    job_stop: &CancellationToken,
) -> (
    Result<Result<Outcome, JobError>, tokio::task::JoinError>,
    bool,
) {
    let period = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000).max(100));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = db.job_events().subscribe();
    let mut cancel_seen = false;
    loop {
        tokio::select! {
            result = &mut task => return (result, cancel_seen),
            _ = beat.tick() => match store::jobs::heartbeat(db, job.id, worker, lease_ms).await {
                Ok(Held::Yes { cancel_requested }) => {
                    if cancel_requested {
                        cancel_seen = true;
                        job_stop.cancel();
                    }
                }
                Ok(Held::Lost) => job_stop.cancel(),
                Err(error) if error.is_storage() => {
                    tracing::debug!(job_id = %job.id, %error, "heartbeat failed for lack of storage")
                }
                Err(error) => tracing::warn!(job_id = %job.id, %error, "heartbeat failed"),
            },
            changed = changes.recv(), if !cancel_seen => {
                let ours = match changed {
                    Ok(id) => id == job.id,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
                };
                if ours
                    && let Ok(Some(row)) = store::jobs::find(db, job.id).await
                    && row.cancel_requested
                {
                    cancel_seen = true;
                    job_stop.cancel();
                }
            }
        }
    }
}

async fn run_kind(kinds: &Kinds, job: &Claimed, context: &JobContext) -> Result<Outcome, JobError> {
    match kinds.get(&job.kind) {
        Some(kind) => kind.run(job, context).await,
        None => Err(JobError::permanent(format!(
            "unknown job kind {:?}",
            job.kind
        ))),
    }
}

/// Retries with exponential backoff, or fails the job after its last attempt.
async fn attempt_failed(db: &Db, job: &Claimed, worker: &str, message: &str, permanent: bool) {
    if permanent || job.attempts >= job.max_attempts {
        tracing::error!(job_id = %job.id, attempt = job.attempts, error = message, "job failed");
        record(
            job,
            worker,
            store::jobs::fail(db, job.id, worker, message).await,
        );
    } else {
        let delay = backoff(job.attempts);
        tracing::warn!(job_id = %job.id, attempt = job.attempts, error = message, retry_in = ?delay, "job attempt failed");
        let run_at = now_millis() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        record(
            job,
            worker,
            store::jobs::retry(db, job.id, worker, message, run_at).await,
        );
    }
}

/// The wait before retrying after failed attempt `attempt` (1-based): 1 s, 2 s, 4 s, …
pub fn backoff(attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

fn record(job: &Claimed, worker: &str, result: Result<bool, StoreError>) {
    match result {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(job_id = %job.id, worker, "the job was no longer held by this worker")
        }
        Err(error) => {
            tracing::error!(job_id = %job.id, %error, "recording the job's outcome failed")
        }
    }
}

/// Wakes this process's workers on every PostgreSQL `NOTIFY` on `CHANNEL`, so a job stored
/// by any process sharing the queue starts at once, and tells this process's followers of a
/// job (`events`) every change on `EVENTS_CHANNEL`. Polling covers what a lost connection
/// misses.
pub fn spawn_listener(
    pool: PgPool,
    wake: Arc<Notify>,
    events: crate::store::jobs::JobEvents,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let listening = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen_all([CHANNEL, EVENTS_CHANNEL]).await?;
                // Anything stored while this process was not listening.
                wake.notify_waiters();
                loop {
                    let notification = listener.recv().await?;
                    if notification.channel() == EVENTS_CHANNEL {
                        if let Ok(id) = notification.payload().parse() {
                            events.send(id);
                        }
                    } else {
                        wake.notify_waiters();
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                result = listening => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "listening for job notifications failed; polling until it is back");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
