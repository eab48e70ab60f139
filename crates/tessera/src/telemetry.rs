//! Logs, traces and metrics out of the process: the only place an exporter
//! is wired (the library crates use the `tracing` and OpenTelemetry APIs
//! only).
//!
//! - Logs go to stderr, filtered by `TESSERA_LOG`, as text or one JSON
//!   object per line (`--log-format`); text is coloured only when stderr is
//!   a terminal, so a redirected log carries no escape codes. The audit
//!   trail goes to its own sink (`crate::audit_log`).
//! - Traces go over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and nowhere otherwise.
//!   The other standard variables are read as the OpenTelemetry SDK
//!   documents them: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER`(`_ARG`), `OTEL_BSP_*`,
//!   `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`, `…_COMPRESSION`;
//!   `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM CA) for an `https://`
//!   collector; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//!   turn it off. Trace context travels as W3C `traceparent`.
//! - Metrics go the same way (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
//!   `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_METRICS_EXPORTER=none`): every
//!   counter and gauge of `/metrics`, read when exported. The latency
//!   histograms stay on `/metrics`: the spans carry each call's duration.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{MeterProvider as _, ObservableCounter, ObservableGauge};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal as _;
use std::sync::Arc;
use tessera_telemetry::metrics::{Kind, Metrics};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

/// How the general log is written (`--log-format`, `TESSERA_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`),
    /// for log collectors.
    Json,
}

/// The general log's layer: stderr in `format`, colours only on a terminal.
fn log_layer(format: LogFormat) -> crate::audit_log::BoxedLayer<Registry> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => layer.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => layer.json().with_ansi(false).boxed(),
    };
    layer
        .with_filter(crate::audit_log::general_filter())
        .with_filter(
            // Asked per event for the SDK's targets (a rate limit cannot be
            // cached per call site); every other call site passes, cached.
            tracing_subscriber::filter::dynamic_filter_fn(|meta, _| exporter_logs(meta))
                .with_callsite_filter(|meta| {
                    if meta.target().starts_with("opentelemetry") {
                        tracing::subscriber::Interest::sometimes()
                    } else {
                        tracing::subscriber::Interest::always()
                    }
                }),
        )
        .boxed()
}

/// How often one kind of OpenTelemetry warning or error (an export that
/// failed, spans dropped) is logged: a collector that is down would
/// otherwise write a line per batch.
const EXPORTER_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The SDK's and exporter's own events (`internal-logs`): warnings and
/// errors only, each kind at most once per [`EXPORTER_LOG_EVERY`]. Every
/// other event passes.
fn exporter_logs(meta: &tracing::Metadata<'_>) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    if !meta.target().starts_with("opentelemetry") {
        return true;
    }
    if !meta.is_event() || *meta.level() > tracing::Level::WARN {
        return false;
    }
    static LAST: OnceLock<Mutex<HashMap<tracing::callsite::Identifier, Instant>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    match last.get(&meta.callsite()) {
        Some(at) if now.duration_since(*at) < EXPORTER_LOG_EVERY => false,
        _ => {
            last.insert(meta.callsite(), now);
            true
        }
    }
}

/// What was installed; [`Telemetry::shutdown`] flushes it.
#[derive(Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    counters: Vec<ObservableCounter<u64>>,
    gauges: Vec<ObservableGauge<i64>>,
}

/// A standard variable, when set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// True when OTLP export of `signal` (`TRACES`, `METRICS`) is configured.
fn wanted(signal: &str) -> bool {
    let off = |name: &str| var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled
        && !off(&format!("OTEL_{signal}_EXPORTER"))
        && (var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some())
}

/// The process's resource: the SDK's detectors (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), and `service.name = tessera` when neither
/// names the service.
fn resource() -> Resource {
    let named = var("OTEL_SERVICE_NAME").is_some()
        || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name("tessera").build()
    }
}

/// An OTLP exporter builder set for gRPC, with TLS when a CA is given.
fn over_grpc<B: WithExportConfig + WithTonicConfig>(builder: B) -> Result<B, String> {
    let builder = builder.with_protocol(opentelemetry_otlp::Protocol::Grpc);
    Ok(match tls()? {
        Some(tls) => builder.with_tls_config(tls),
        None => builder,
    })
}

/// TLS for an `https://` collector: the CA of `OTEL_EXPORTER_OTLP_CERTIFICATE`.
fn tls() -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    let Some(path) = var("OTEL_EXPORTER_OTLP_CERTIFICATE") else {
        return Ok(None);
    };
    let pem =
        std::fs::read(&path).map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE {path}: {e}"))?;
    Ok(Some(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
    ))
}

/// Which spans and events are exported: Tessera's at INFO and above,
/// never the transport's (h2, hyper, tonic, tower), whose own calls to
/// the collector would otherwise be traced in turn.
fn span_filter() -> EnvFilter {
    EnvFilter::new("info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off")
}

impl Telemetry {
    /// Installs the log subscriber (logs in `format`), and with `export`
    /// (the `serve` command) the OTLP pipelines the environment asks for.
    /// Call inside the Tokio runtime: the exporter's channel lives on it.
    pub fn init(
        export: bool,
        audit: Option<&std::path::Path>,
        format: LogFormat,
    ) -> Result<Self, String> {
        let fmt = log_layer(format);
        let audit = crate::audit_log::layer(audit)?;
        let mut me = Self::default();
        if !(export && wanted("TRACES")) {
            tracing_subscriber::registry().with(fmt).with(audit).init();
            return me.with_metrics(export);
        }
        if var("OTEL_EXPORTER_OTLP_PROTOCOL").is_some_and(|p| p != "grpc") {
            eprintln!(
                "tessera: OTEL_EXPORTER_OTLP_PROTOCOL: Tessera exports OTLP over gRPC only; using grpc"
            );
        }
        let exporter = over_grpc(opentelemetry_otlp::SpanExporter::builder().with_tonic())?
            .build()
            .map_err(|e| format!("OTLP trace export: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let spans = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tessera"))
            .with_filter(span_filter());
        tracing_subscriber::registry()
            .with(fmt)
            .with(audit)
            .with(spans)
            .init();
        me.tracer = Some(provider);
        me.with_metrics(export)
    }

    fn with_metrics(mut self, export: bool) -> Result<Self, String> {
        if !(export && wanted("METRICS")) {
            return Ok(self);
        }
        let exporter = over_grpc(opentelemetry_otlp::MetricExporter::builder().with_tonic())?
            .build()
            .map_err(|e| format!("OTLP metric export: {e}"))?;
        self.meter = Some(
            SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(resource())
                .build(),
        );
        Ok(self)
    }

    /// True when traces are exported: the server then joins callers'
    /// trace context (`Edge::trace_context`).
    pub fn traces(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports every counter and gauge of `metrics` that exists now (call
    /// once the application is built: the gauges of its roles are there),
    /// read at each export, as `/metrics` reads them at each scrape.
    pub fn export_metrics(&mut self, metrics: &Arc<Metrics>) {
        let Some(provider) = &self.meter else {
            return;
        };
        let meter = provider.meter("tessera");
        for family in metrics.sample() {
            let (name, metrics) = (family.name, metrics.clone());
            let points = move || {
                metrics
                    .sample()
                    .into_iter()
                    .find(|f| f.name == name)
                    .map(|f| f.samples)
                    .unwrap_or_default()
            };
            let attributes = |labels: &[(&'static str, &'static str)]| -> Vec<KeyValue> {
                labels.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect()
            };
            match family.kind {
                Kind::Counter => self.counters.push(
                    meter
                        .u64_observable_counter(name)
                        .with_description(family.help)
                        .with_callback(move |o| {
                            for (labels, v) in points() {
                                o.observe(u64::try_from(v).unwrap_or(0), &attributes(&labels));
                            }
                        })
                        .build(),
                ),
                Kind::Gauge => self.gauges.push(
                    meter
                        .i64_observable_gauge(name)
                        .with_description(family.help)
                        .with_unit(if family.unit.is_some() { "s" } else { "1" })
                        .with_callback(move |o| {
                            for (labels, v) in points() {
                                o.observe(v, &attributes(&labels));
                            }
                        })
                        .build(),
                ),
            }
        }
    }

    /// Sends what is still buffered (at exit).
    pub fn shutdown(self) {
        if let Some(t) = self.tracer
            && let Err(e) = t.shutdown()
        {
            eprintln!("tessera: flushing traces: {e}");
        }
        if let Some(m) = self.meter
            && let Err(e) = m.shutdown()
        {
            eprintln!("tessera: flushing metrics: {e}");
        }
    }
}
