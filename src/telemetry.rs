//! Logs (text or JSON lines), traces over OpenTelemetry, and the Prometheus recorder.
//!
//! Tracing is on only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. Off, no OpenTelemetry layer is installed
//! and larder's spans are disabled at their callsites (the log filter turns [`SPANS`] off),
//! so a request makes no span: an access log line is one event, as before (a span per
//! request costs a quarter more instructions, `http::layers`). On, spans (the request, each
//! store call under it, each job attempt and chunk) go to a batch processor whose own
//! thread exports them over OTLP/HTTP (protobuf), so no request waits on the collector; the
//! standard `OTEL_*` variables apply (endpoint, headers, timeout, sampler, service name,
//! default `larder`), and every log line written inside a span carries its trace id.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The target of larder's own spans (requests, job attempts and chunks). A target of their
/// own, so the log filter can turn them all off whatever `LARDER_LOG_LEVEL` says.
pub const SPANS: &str = "larder::spans";
/// The target of the store's spans (one per call): exported only under a request or a job,
/// so the workers' polling and the periodic sweeps make no traces of their own.
pub const DB_SPANS: &str = "larder::spans::db";

/// Whether this process exports spans (set once, by [`init`]).
static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans: the request path asks before it makes a span, so
/// with tracing off a request pays one load and a branch.
pub fn tracing_on() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// What [`init`] started; dropping it sends the spans still waiting (bounded by
/// [`FLUSH_TIMEOUT`]) and then the last log lines.
pub struct Telemetry {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    _logs: tracing_appender::non_blocking::WorkerGuard,
}

/// How long the last spans may take to go out at exit (a collector that is down must not
/// hold the process: the exporter's own retries stop within its timeout).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.traces.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take()
            && let Err(error) = traces.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(%error, "the last spans were not all exported");
        }
    }
}

/// Whether the environment asks for traces: an OTLP endpoint is set (and the SDK is not
/// disabled with `OTEL_SDK_DISABLED=true`).
pub fn tracing_configured() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Starts logging to stdout through a writer thread, so a request never waits on the
/// terminal or pipe, and, when [`tracing_configured`], the span exporter, whose HTTP
/// requests run on `runtime`. Keep the result alive until exit. An unusable `OTEL_*`
/// setting (an endpoint that is not a URL) is an error.
pub fn init(
    filter: &str,
    format: LogFormat,
    runtime: &tokio::runtime::Handle,
) -> Result<Telemetry, String> {
    let traces = if tracing_configured() {
        Some(otel::provider(runtime)?)
    } else {
        None
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(64 * 1024)
        .lossy(false)
        .finish(std::io::stdout());
    // Colour only on a terminal: in a file or a pipe the escape codes are noise, and
    // writing them was half of a request's instructions (callgrind, /healthz).
    let ansi = std::io::stdout().is_terminal();
    // A second initialisation (tests start many servers in one process) keeps the first.
    let _already_set = match &traces {
        None => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(log_filter(filter))
                .with_writer(writer)
                .with_ansi(ansi)
                .with_target(true);
            match format {
                LogFormat::Text => builder.try_init().is_err(),
                LogFormat::Json => builder.json().flatten_event(true).try_init().is_err(),
            }
        }
        Some(provider) => {
            let installed = otel::install(provider, log_filter(filter), format, writer).is_ok();
            TRACING.store(installed, Ordering::Relaxed);
            !installed
        }
    };
    Ok(Telemetry {
        traces,
        _logs: guard,
    })
}

/// For `larder check`: whether tracing is on, its settings checked (the exporter is made,
/// nothing is sent).
pub fn check_tracing() -> Result<bool, String> {
    if !tracing_configured() {
        return Ok(false);
    }
    otel::exporter(&tokio::runtime::Handle::current())?;
    Ok(true)
}

/// `LARDER_LOG_LEVEL`, with larder's spans off: they are for the exporter, never the log.
fn log_filter(filter: &str) -> EnvFilter {
    EnvFilter::builder()
        .parse_lossy(filter)
        .add_directive(format!("{SPANS}=off").parse().expect("a valid directive"))
}

/// Continues the trace of an incoming request's W3C `traceparent` (and `tracestate`) in
/// `span`; without one, the span starts a trace. Nothing to do for a disabled span.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if span.is_disabled() {
        return;
    }
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// Tracing's moving parts, used only when it is on.
mod otel {
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use bytes::Bytes;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_http::{HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::WithHttpConfig;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
    use tracing_subscriber::fmt::{FmtContext, MakeWriter};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
    use tracing_subscriber::{EnvFilter, Layer, filter};

    use super::{DB_SPANS, SPANS};
    use crate::config::LogFormat;

    /// The tracer provider: resource (service name `larder` unless `OTEL_SERVICE_NAME` or
    /// `OTEL_RESOURCE_ATTRIBUTES` names one), sampler from `OTEL_TRACES_SAMPLER` (the SDK's
    /// default: parent-based, always on), and the OTLP/HTTP exporter behind the SDK's batch
    /// processor (`OTEL_BSP_*`).
    pub(super) fn provider(runtime: &tokio::runtime::Handle) -> Result<SdkTracerProvider, String> {
        let exporter = exporter(runtime)?;
        let detected = Resource::builder().build();
        let named = detected
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
        let resource = if named {
            detected
        } else {
            Resource::builder().with_service_name("larder").build()
        };
        Ok(SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build())
    }

    /// The OTLP/HTTP exporter the `OTEL_EXPORTER_OTLP_*` variables describe.
    pub(super) fn exporter(
        runtime: &tokio::runtime::Handle,
    ) -> Result<opentelemetry_otlp::SpanExporter, String> {
        let client = OnRuntime {
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(
                export_timeout(),
                None,
            ),
            runtime: runtime.clone(),
        };
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .build()
            .map_err(|error| error.to_string())
    }

    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`, in
    /// milliseconds; 10 s by default, as the exporter's.
    fn export_timeout() -> Duration {
        [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
    }

    /// The registry with three layers: the log lines (`LARDER_LOG_LEVEL`, larder's spans
    /// off, each line with the trace id of the span it is written in), the exporter's
    /// (larder's spans; a store call's only under another span; warnings and errors as
    /// span events), and nothing else.
    pub(super) fn install<W>(
        provider: &SdkTracerProvider,
        filter: EnvFilter,
        format: LogFormat,
        writer: W,
    ) -> Result<(), TryInitError>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let exported = filter::dynamic_filter_fn(|meta, context| match meta.target() {
            SPANS => true,
            DB_SPANS => context.lookup_current().is_some(),
            _ => meta.is_event() && *meta.level() <= Level::WARN,
        })
        .with_max_level_hint(Level::INFO);
        let spans = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("larder"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(exported);
        let ansi = false;
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_target(true);
        let lines = match format {
            LogFormat::Text => lines
                .event_format(WithTraceId {
                    inner: format::format().with_ansi(ansi).with_target(true),
                    json: false,
                })
                .with_filter(filter)
                .boxed(),
            LogFormat::Json => lines
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .map_event_format(|inner| WithTraceId { inner, json: true })
                .with_filter(filter)
                .boxed(),
        };
        tracing_subscriber::registry()
            .with(lines)
            .with(spans)
            .try_init()
    }

    /// A log line format that adds the current trace id: `trace_id=<32 hex>` at the end of a
    /// text line, a `"trace_id"` member in a JSON one. A line written outside any span is
    /// the inner format's, unchanged.
    struct WithTraceId<E> {
        inner: E,
        json: bool,
    }

    /// The trace of the span this thread is in (the exporter's layer makes an entered
    /// span's context current), if any.
    pub(super) fn current_trace_id() -> Option<opentelemetry::trace::TraceId> {
        opentelemetry::Context::map_current(|context| {
            let span = context.span();
            let span = span.span_context();
            span.is_valid().then(|| span.trace_id())
        })
    }

    impl<S, N, E> FormatEvent<S, N> for WithTraceId<E>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        E: FormatEvent<S, N>,
    {
        fn format_event(
            &self,
            context: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let Some(trace_id) = current_trace_id() else {
                return self.inner.format_event(context, writer, event);
            };
            let mut line = String::with_capacity(256);
            self.inner
                .format_event(context, Writer::new(&mut line), event)?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            match line.strip_suffix('}') {
                Some(open) if self.json => writeln!(writer, "{open},\"trace_id\":\"{trace_id}\"}}"),
                _ => writeln!(writer, "{line} trace_id={trace_id}"),
            }
        }
    }

    /// hyper's client, its requests run on the server's runtime: the batch processor
    /// exports from a thread of its own, which has no runtime for hyper's connections and
    /// timers.
    #[derive(Debug)]
    struct OnRuntime {
        client: opentelemetry_http::hyper::HyperClient,
        runtime: tokio::runtime::Handle,
    }

    impl HttpClient for OnRuntime {
        fn send_bytes<'a, 'b>(
            &'a self,
            request: Request<Bytes>,
        ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
        where
            'a: 'b,
            Self: 'b,
        {
            let client = self.client.clone();
            let sent = self
                .runtime
                .spawn(async move { client.send_bytes(request).await });
            Box::pin(async move { sent.await? })
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_filter_turns_larder_spans_off_whatever_the_level() {
        for level in ["info", "trace", "larder=trace", "larder::spans=trace,warn"] {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(log_filter(level))
                .with_writer(std::io::sink)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let request = tracing::info_span!(target: SPANS, "request");
                assert!(request.is_disabled(), "{level}");
                let db = tracing::info_span!(target: DB_SPANS, "items.find");
                assert!(db.is_disabled(), "{level}");
                assert!(tracing::enabled!(target: "larder::access", tracing::Level::WARN));
            });
        }
    }
}
