//! The closed-loop engine: `in_flight` workers share `connections` HTTP/2
//! connections; each sends its next call as soon as the last one answered.
//! A run warms up, then measures for a fixed time, and stops early when the
//! request budget or the workload's supply (e.g. first-seen tokens) runs out.

use crate::workload::{Clients, Slot, Workload};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The shape of one measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// HTTP/2 connections (each its own TCP connection).
    pub connections: usize,
    /// Calls in flight at once (closed loop: one per worker).
    pub in_flight: usize,
    /// Calls before measuring starts, by time.
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// Most calls in one phase, warm-up included.
    pub max_requests: u64,
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Calls that completed inside the measured window.
    pub requests: u64,
    /// Of those, calls that failed (an error status, or a token not valid).
    pub errors: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Latency of each measured call, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// Server CPU time (user + system) spent during the window.
    pub server_cpu: Option<Duration>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl Stats {
    /// Completed calls per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// The `q` quantile of latency, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
    /// Server CPU per completed call, microseconds.
    pub fn cpu_per_request_us(&self) -> Option<f64> {
        self.server_cpu
            .map(|c| c.as_secs_f64() * 1e6 / (self.requests.max(1) as f64))
    }
}

/// The window shared by the workers of one phase.
struct Window {
    start: OnceLock<Instant>,
    stop: AtomicBool,
    sent: AtomicU64,
    max: u64,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(work: Arc<Workload>, clients: Clients, window: Arc<Window>) -> Tally {
    let mut slot = Slot::default();
    let mut tally = Tally::default();
    while !window.stop.load(Ordering::Relaxed)
        && window.sent.fetch_add(1, Ordering::Relaxed) < window.max
    {
        let began = Instant::now();
        let Some(result) = work.call(&mut slot, &clients).await else {
            break; // supply exhausted
        };
        let in_window = window.start.get().is_some_and(|s| began >= *s);
        if !in_window || window.stop.load(Ordering::Relaxed) {
            continue;
        }
        tally
            .latencies_us
            .push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
        if let Err(e) = result {
            tally.errors += 1;
            tally.first_error.get_or_insert(e);
        }
    }
    tally
}

/// Runs one phase of `work` over fresh connections to `url`, measuring the
/// CPU of the server process `pid`.
pub async fn run(url: &str, pid: Option<u32>, work: Arc<Workload>, spec: Spec) -> Stats {
    let conns = match connect(url, spec.connections).await {
        Ok(conns) => conns,
        Err(e) => {
            return Stats {
                first_error: Some(e),
                errors: 1,
                ..Stats::default()
            };
        }
    };
    let window = Arc::new(Window {
        start: OnceLock::new(),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        max: spec.max_requests,
    });
    let mut workers = Workers::start(&work, &conns, &window, spec.in_flight);
    warm_up(&work, &window, spec.warmup, &mut workers).await;
    let cpu0 = pid.and_then(crate::server::cpu_time);
    let t0 = Instant::now();
    let _ = window.start.set(t0);
    tokio::select! {
        () = tokio::time::sleep(spec.duration) => {}
        () = workers.all_stopped() => {}
    }
    window.stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu1 = pid.and_then(crate::server::cpu_time);
    let mut stats = Stats {
        elapsed,
        server_cpu: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        ..Stats::default()
    };
    workers.join(&mut stats).await;
    stats
}

/// `n` fresh connections to `url` (at least one), or why one failed.
async fn connect(url: &str, n: usize) -> Result<Vec<Clients>, String> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        conns.push(
            Clients::connect(url)
                .await
                .map_err(|e| format!("connect {url}: {e}"))?,
        );
    }
    Ok(conns)
}

/// The workers of one phase, spread over the connections round-robin.
struct Workers {
    handles: Vec<tokio::task::JoinHandle<Tally>>,
    /// Turns true when the last worker has stopped (supply or budget spent).
    done: tokio::sync::watch::Receiver<bool>,
    /// Held for the whole phase: if a worker panics, the last sender could
    /// go without sending, and a closed `done` would end the phase at once
    /// instead of at its time limit.
    _done_tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Workers {
    /// Spawns `in_flight` workers (at least one).
    fn start(
        work: &Arc<Workload>,
        conns: &[Clients],
        window: &Arc<Window>,
        in_flight: usize,
    ) -> Self {
        let (done_tx, done) = tokio::sync::watch::channel(false);
        let done_tx = Arc::new(done_tx);
        let live = Arc::new(Mutex::new(in_flight.max(1)));
        let mut handles = Vec::new();
        for i in 0..in_flight.max(1) {
            let (work, clients, window) =
                (work.clone(), conns[i % conns.len()].clone(), window.clone());
            let (done_tx, live) = (done_tx.clone(), live.clone());
            handles.push(tokio::spawn(async move {
                let t = worker(work, clients, window).await;
                let mut n = live.lock().unwrap_or_else(|p| p.into_inner());
                *n -= 1;
                if *n == 0 {
                    let _ = done_tx.send(true);
                }
                t
            }));
        }
        Self {
            handles,
            done,
            _done_tx: done_tx,
        }
    }

    /// Resolves once every worker has stopped.
    async fn all_stopped(&mut self) {
        let _ = self.done.wait_for(|d| *d).await;
    }

    /// Waits for every worker and adds its tally to `stats`; the latencies
    /// end sorted, and the first error is the first worker's that had one.
    async fn join(self, stats: &mut Stats) {
        for h in self.handles {
            if let Ok(t) = h.await {
                stats.latencies_us.extend(t.latencies_us);
                stats.errors += t.errors;
                if stats.first_error.is_none() {
                    stats.first_error = t.first_error;
                }
            }
        }
        stats.requests = stats.latencies_us.len() as u64;
        stats.latencies_us.sort_unstable();
    }
}

/// Warm-up ends by time, or once a tenth of a finite supply is spent
/// (first-seen tokens must be left for the measured window), or when every
/// worker has stopped.
async fn warm_up(work: &Workload, window: &Window, warmup: Duration, workers: &mut Workers) {
    let warm_cap = work.supply().map_or(u64::MAX, |n| n as u64 / 10);
    let warm = async {
        while window.sent.load(Ordering::Relaxed) < warm_cap {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::select! {
        () = tokio::time::sleep(warmup) => {}
        () = warm => {}
        () = workers.all_stopped() => {}
    }
}
