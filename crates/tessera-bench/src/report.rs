//! The run's table: every figure beside its ratio to the floor (health
//! `Check`) measured on the same server in the same run.

use crate::load::Stats;
use std::fmt::Write;

/// Both phases of one mode.
pub struct Row {
    /// The mode's name.
    pub name: String,
    /// One call at a time.
    pub single: Option<Stats>,
    /// The loaded phase.
    pub loaded: Option<Stats>,
}

impl Row {
    /// An empty row.
    pub fn new(name: String) -> Self {
        Self {
            name,
            single: None,
            loaded: None,
        }
    }

    /// One line for stderr while the run goes on.
    pub fn progress(&self) -> String {
        let l = self.loaded.as_ref();
        format!(
            "{:<14} single p50 {:>7.3} ms | loaded {:>8.0}/s p50 {:>7.3} ms p99 {:>7.3} ms cpu {:>6.1} µs/call, {} errors{}",
            self.name,
            self.single
                .as_ref()
                .map_or(f64::NAN, |s| s.quantile_ms(0.5)),
            l.map_or(0.0, Stats::rate),
            l.map_or(f64::NAN, |s| s.quantile_ms(0.5)),
            l.map_or(f64::NAN, |s| s.quantile_ms(0.99)),
            l.and_then(Stats::cpu_per_request_us).unwrap_or(f64::NAN),
            self.errors(),
            self.first_error()
                .map_or(String::new(), |e| format!(" (first: {e})")),
        )
    }

    fn errors(&self) -> u64 {
        self.single.as_ref().map_or(0, |s| s.errors) + self.loaded.as_ref().map_or(0, |s| s.errors)
    }

    fn first_error(&self) -> Option<&str> {
        [&self.single, &self.loaded]
            .into_iter()
            .flatten()
            .find_map(|s| s.first_error.as_deref())
    }
}

/// A whole run.
pub struct Report {
    /// Rows, the floor first.
    pub rows: Vec<Row>,
    /// Which store the server used.
    pub store: &'static str,
    /// Connections of the loaded phase.
    pub connections: usize,
    /// Calls in flight of the loaded phase.
    pub in_flight: usize,
    /// Server RSS right after start.
    pub idle_rss: Option<u64>,
    /// Server RSS at the end.
    pub final_rss: Option<u64>,
}

fn mib(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

impl Report {
    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    fn single_p50(&self, name: &str) -> Option<f64> {
        self.row(name)?.single.as_ref().map(|s| s.quantile_ms(0.5))
    }

    fn rate(&self, name: &str) -> Option<f64> {
        self.row(name)?.loaded.as_ref().map(Stats::rate)
    }

    /// The markdown table.
    pub fn markdown(&self) -> String {
        let floor_p50 = self.single_p50("health");
        let floor_rate = self.rate("health");
        let floor_cpu = self
            .row("health")
            .and_then(|r| r.loaded.as_ref())
            .and_then(Stats::cpu_per_request_us);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Store: {}; loaded phase: {} connections, {} calls in flight; server RSS {} after start, {} at the end.\n",
            self.store,
            self.connections,
            self.in_flight,
            mib(self.idle_rss),
            mib(self.final_rss)
        );
        out.push_str("| mode | single p50 | ×floor | loaded req/s | ×floor | p50 | p99 | max | server CPU/call | errors |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let s = r.single.as_ref();
            let l = r.loaded.as_ref();
            let sp = s.map(|s| s.quantile_ms(0.5));
            let rate = l.map(Stats::rate);
            let cpu = l.and_then(Stats::cpu_per_request_us);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                sp.map_or("–".into(), |v| format!("{v:.3} ms")),
                ratio(sp, floor_p50),
                rate.map_or("–".into(), |v| format!("{v:.0}")),
                ratio(rate, floor_rate),
                l.map_or("–".into(), |s| format!("{:.2} ms", s.quantile_ms(0.5))),
                l.map_or("–".into(), |s| format!("{:.2} ms", s.quantile_ms(0.99))),
                l.map_or("–".into(), |s| format!("{:.2} ms", s.quantile_ms(1.0))),
                cpu.map_or("–".into(), |c| match floor_cpu {
                    Some(f) if r.name != "health" => format!("{c:.1} µs (+{:.1})", c - f),
                    _ => format!("{c:.1} µs"),
                }),
                r.errors(),
            );
        }
        self.comparisons(&mut out);
        out
    }

    /// The lines comparing two rows: Tessera against the peer, nginx with
    /// Tessera against nginx alone.
    fn comparisons(&self, out: &mut String) {
        if let (Some(t), Some(p)) = (self.rate("verify"), self.rate("peer verify")) {
            let _ = writeln!(
                out,
                "\nFirst-seen Verify against the Redis-per-request peer: {:.2}×.",
                t / p
            );
        }
        if let (Some(t), Some(p)) = (self.rate("verify-repeat"), self.rate("peer verify")) {
            let _ = writeln!(out, "Repeat Verify against the peer: {:.2}×.", t / p);
        }
        if let (Some(with), Some(alone)) = (self.rate("nginx + Tessera"), self.rate("nginx alone"))
        {
            let p50 = |name| self.single_p50(name).unwrap_or(f64::NAN);
            let _ = writeln!(
                out,
                "\nnginx asking Tessera ÷ nginx alone: {:.2}× the throughput, {:.2}× the single-call p50.",
                with / alone,
                p50("nginx + Tessera") / p50("nginx alone"),
            );
        }
    }

    /// The CI guard: gross regressions only, as ratios within this run.
    pub fn check(&self) -> bool {
        let mut ok = true;
        let mut fail = |msg: String| {
            eprintln!("bench check FAILED: {msg}");
            ok = false;
        };
        for r in &self.rows {
            if r.errors() > 0 {
                fail(format!("{}: {} calls failed", r.name, r.errors()));
            }
        }
        let floor = self.single_p50("health").unwrap_or(f64::NAN);
        for (mode, limit) in [
            ("verify", 5.0),
            ("verify-repeat", 5.0),
            ("forward-auth", 5.0),
            ("issue", 30.0),
        ] {
            if let Some(p) = self.single_p50(mode)
                && p.partial_cmp(&(floor * limit)) != Some(std::cmp::Ordering::Less)
            {
                fail(format!(
                    "single-call {mode} p50 {p:.3} ms is over {limit}× health's {floor:.3} ms"
                ));
            }
        }
        if let (Some(v), Some(f)) = (self.rate("verify"), self.rate("health"))
            && v.partial_cmp(&(f * 0.1)) != Some(std::cmp::Ordering::Greater)
        {
            fail(format!(
                "loaded verify {v:.0}/s is under 0.1× the floor's {f:.0}/s"
            ));
        }
        ok
    }
}

fn ratio(v: Option<f64>, floor: Option<f64>) -> String {
    match (v, floor) {
        (Some(v), Some(f)) if f > 0.0 => format!("{:.2}×", v / f),
        _ => "–".into(),
    }
}
