//! The counters and gauges as families of samples: encoded for `/metrics`
//! by prometheus-client, and read the same way by the OTLP exporter, so
//! the two can never disagree on a name or a label.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Unit;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use tessera_domain::clock::Clock;
use tessera_domain::revocation::MemoryRevocations;

/// State read when the metrics are scraped.
pub(super) struct Scraped {
    pub(super) clock: Arc<dyn Clock>,
    pub(super) view: OnceLock<Arc<MemoryRevocations>>,
    pub(super) view_reconciled_at: AtomicI64,
    /// When the signing key started signing (0: not known here).
    pub(super) key_active_since: AtomicI64,
    /// When the next key signs (0: not known here).
    pub(super) key_next_rotation: AtomicI64,
    /// The last health check: whether the store answered, and each
    /// service's status (`None` before the first check).
    pub(super) health: std::sync::RwLock<Option<Health>>,
}

/// What the last health check found, as gauges.
#[derive(Debug, Clone)]
pub(super) struct Health {
    pub(super) store_up: bool,
    pub(super) services: Vec<(&'static str, bool)>,
}

impl Scraped {
    pub(super) fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            view: OnceLock::new(),
            view_reconciled_at: AtomicI64::new(0),
            key_active_since: AtomicI64::new(0),
            key_next_rotation: AtomicI64::new(0),
            health: std::sync::RwLock::new(None),
        }
    }
}

/// Label names and values of one series.
pub type Labels = Vec<(&'static str, &'static str)>;

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; exposed with a `_total` suffix.
    Counter,
    /// A value now, in whole seconds when `unit` says so.
    Gauge,
}

/// One family at one instant.
#[derive(Debug, Clone)]
pub struct Sampled {
    /// The name without suffixes (`_total`, or the unit's `_seconds`).
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// `Some("seconds")` for times and durations.
    pub unit: Option<&'static str>,
    /// Each series: its labels and value.
    pub samples: Vec<(Labels, i64)>,
}

/// A counter family created at start.
pub(super) struct CounterFamily {
    name: &'static str,
    help: &'static str,
    series: Vec<(Labels, Counter)>,
}

/// Creates the counter series, grouped into families by name.
#[derive(Default)]
pub(super) struct Counters(Vec<CounterFamily>);

impl Counters {
    /// A new series of family `name`; the handle to count with.
    pub(super) fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Counter {
        let counter = Counter::default();
        let series = (labels.to_vec(), counter.clone());
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(f) => f.series.push(series),
            None => self.0.push(CounterFamily {
                name,
                help,
                series: vec![series],
            }),
        }
        counter
    }

    pub(super) fn into_families(self) -> Vec<CounterFamily> {
        self.0
    }
}

/// Every counter and the state gauges, now.
pub(super) fn sample(counters: &[CounterFamily], s: &Scraped) -> Vec<Sampled> {
    let mut out: Vec<Sampled> = counters
        .iter()
        .map(|f| Sampled {
            name: f.name,
            help: f.help,
            kind: Kind::Counter,
            unit: None,
            samples: f
                .series
                .iter()
                .map(|(l, c)| (l.clone(), i64::try_from(c.get()).unwrap_or(i64::MAX)))
                .collect(),
        })
        .collect();
    out.extend(gauges(s));
    out
}

/// A gauge family.
fn gauge(
    name: &'static str,
    help: &'static str,
    unit: Option<&'static str>,
    samples: Vec<(Labels, i64)>,
) -> Sampled {
    Sampled {
        name,
        help,
        kind: Kind::Gauge,
        unit,
        samples,
    }
}

/// The state gauges that are known here, now.
fn gauges(s: &Scraped) -> Vec<Sampled> {
    let mut out = Vec::new();
    let now = s.clock.now();
    if let Some(view) = s.view.get() {
        let sizes = view.sizes();
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        out.push(gauge(
            "tessera_revocation_view_entries",
            "Entries in this instance's revocation view (Verify's step 5), by target.",
            None,
            vec![
                (vec![("target", "jti")], n(sizes.jtis)),
                (vec![("target", "family")], n(sizes.families)),
                (vec![("target", "subject")], n(sizes.subjects)),
                (vec![("target", "key")], n(sizes.keys)),
            ],
        ));
    }
    let at = s.view_reconciled_at.load(Ordering::Relaxed);
    if at > 0 {
        out.push(gauge(
            "tessera_revocation_view_reconciled_timestamp",
            "When the revocation view last caught up with the store.",
            Some("seconds"),
            vec![(vec![], at)],
        ));
        out.push(gauge(
            "tessera_revocation_view_age",
            "How far the revocation view may be behind the store: seconds since it last caught up (NOT_SERVING past --max-view-staleness).",
            Some("seconds"),
            vec![(vec![], now - at)],
        ));
    }
    let since = s.key_active_since.load(Ordering::Relaxed);
    if since > 0 {
        out.push(gauge(
            "tessera_signing_key_age",
            "Seconds since the signing key started signing.",
            Some("seconds"),
            vec![(vec![], now - since)],
        ));
    }
    out.extend(health_gauges(s));
    let next = s.key_next_rotation.load(Ordering::Relaxed);
    if next > 0 {
        out.push(gauge(
            "tessera_key_rotation_due_in",
            "Seconds until the next key takes over signing (negative: overdue, the schedule has not run).",
            Some("seconds"),
            vec![(vec![], next - now)],
        ));
    }
    out
}

/// `tessera_store_up` and `tessera_service_serving`, once a health check
/// has run.
fn health_gauges(s: &Scraped) -> Vec<Sampled> {
    let health = s
        .health
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(h) = health else {
        return Vec::new();
    };
    vec![
        gauge(
            "tessera_store_up",
            "1 when the store (Postgres or SQLite) answered the last health check (every 2 s) within 2 s, else 0.",
            None,
            vec![(vec![], i64::from(h.store_up))],
        ),
        gauge(
            "tessera_service_serving",
            "1 when the service is SERVING (gRPC health, /readyz), else 0, by service.",
            None,
            h.services
                .iter()
                .map(|(s, ok)| (vec![("service", *s)], i64::from(*ok)))
                .collect(),
        ),
    ]
}

/// What the registry encodes on each scrape.
#[derive(Clone)]
pub(super) struct Collected {
    pub(super) counters: Arc<Vec<CounterFamily>>,
    pub(super) scraped: Arc<Scraped>,
}

impl std::fmt::Debug for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collected").finish_non_exhaustive()
    }
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in sample(&self.counters, &self.scraped) {
            let (kind, unit) = match family.kind {
                Kind::Counter => (MetricType::Counter, None),
                Kind::Gauge => (MetricType::Gauge, family.unit.map(|_| Unit::Seconds)),
            };
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, unit.as_ref(), kind)?;
            for (labels, value) in &family.samples {
                let mut series = metric.encode_family(labels)?;
                match family.kind {
                    Kind::Counter => series.encode_counter::<NoLabelSet, _, u64>(
                        &u64::try_from(*value).unwrap_or(0),
                        None,
                    )?,
                    Kind::Gauge => series.encode_gauge(value)?,
                }
            }
        }
        Ok(())
    }
}
