//! Where the audit trail goes: the events of target
//! `tessera_telemetry::audit::TARGET` (each already one JSON object, built by
//! `tessera_telemetry::audit`), one per line, to their own sink: stderr by
//! default, or a file (`--audit-log`, appended, created 0600). The general
//! log never carries them, and `TESSERA_LOG` does not filter them, so a
//! quiet log level never loses a security event.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tessera_telemetry::audit::TARGET;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// A boxed layer of subscriber `S`.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// Writes each audit event's message (its JSON object) as one line.
struct AuditLines(Sink);

/// The event's `message` field, as formatted.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            // `format_args!` messages Debug-print as their text.
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for AuditLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = Message::default();
        event.record(&mut message);
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line, so concurrent events never interleave; a
        // failed write cannot be reported anywhere better than stderr.
        message.0.push('\n');
        if let Err(e) = out
            .write_all(message.0.as_bytes())
            .and_then(|()| out.flush())
        {
            eprintln!("tessera: audit log write failed: {e}");
        }
    }
}

/// The filter that picks the audit events (and only them).
fn audit_events() -> Targets {
    Targets::new().with_target(TARGET, Level::INFO)
}

/// A layer writing the audit trail to `path` (appended, created 0600), or
/// to stderr without one.
pub fn layer<S>(path: Option<&Path>) -> Result<BoxedLayer<S>, String>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let sink: Box<dyn Write + Send> = match path {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| format!("audit_log {}: {e}", p.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    Ok(Box::new(
        AuditLines(Arc::new(Mutex::new(sink))).with_filter(audit_events()),
    ))
}

/// The general log's filter: `TESSERA_LOG` (default `info`) without the
/// audit events, which have their own sink.
pub fn general_filter() -> tracing_subscriber::EnvFilter {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        // sqlx logs Postgres's NOTICEs at INFO ("relation … already exists,
        // skipping" on every rerun of `migrate`): not news for an operator.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    match format!("{TARGET}=off").parse() {
        Ok(off) => filter.add_directive(off),
        Err(_) => filter,
    }
}

/// A layer that keeps the audit lines in memory, for tests: the layer and
/// the lines written so far.
pub fn capture<S>() -> (BoxedLayer<S>, Arc<Mutex<Vec<u8>>>)
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // tracing caches each callsite's interest process-wide. While at most
    // one dispatcher is registered, a callsite first reached on a thread
    // without a subscriber (another test's server) is cached as `never`,
    // and its events never reach this capture (tokio-rs/tracing#3611). Two
    // always-interested dispatchers, held for the life of the process,
    // make every interest the union over all dispatchers instead; each
    // event still goes to its own thread's subscriber only.
    static ANCHORS: std::sync::OnceLock<[tracing::Dispatch; 2]> = std::sync::OnceLock::new();
    ANCHORS
        .get_or_init(|| [(), ()].map(|()| tracing::Dispatch::new(tracing_subscriber::registry())));
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink: Box<dyn Write + Send> = Box::new(Shared(buffer.clone()));
    let layer = AuditLines(Arc::new(Mutex::new(sink))).with_filter(audit_events());
    (Box::new(layer), buffer)
}

/// A writer into a shared buffer.
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
