//! Logs (text or JSON lines) and the Prometheus recorder.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Starts logging to stdout through a writer thread, so a request never waits on the
/// terminal or pipe; keep the guard alive until exit (dropping it flushes the last lines).
pub fn init_logging(
    filter: &str,
    format: LogFormat,
) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(64 * 1024)
        .lossy(false)
        .finish(std::io::stdout());
    let filter = EnvFilter::builder().parse_lossy(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour only on a terminal: in a file or a pipe the escape codes are noise, and
        // writing them was half of a request's instructions (callgrind, /healthz).
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(true);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second initialisation (tests start many servers in one process) keeps the first.
    let _ = result;
    guard
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".to_string()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("the Prometheus recorder is installed once");
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// Histogram samples wait in the recorder until an upkeep folds them into the buckets; with
/// no upkeep but the one a `/metrics` scrape runs, an unscraped server would keep every
/// sample (about 20 bytes per request, without bound). A plain thread, so it outlives any
/// one tokio runtime (the tests start many).
fn spawn_upkeep(handle: PrometheusHandle) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    std::thread::Builder::new()
        .name("metrics-upkeep".to_string())
        .spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                handle.run_upkeep();
            }
        })
        .expect("the metrics upkeep thread starts");
}
