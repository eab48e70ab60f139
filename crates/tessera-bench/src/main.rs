//! `tessera-bench`: Tessera's speed over the wire. A closed-loop load
//! generator over real gRPC against the release `tessera` binary on
//! loopback, bounded in time and in count. Every run measures the floor
//! first (gRPC health `Check` on the same server), so each figure is a ratio
//! measured in the same run; server CPU per call comes from `/proc`. It also
//! runs the design Tessera replaces (jsonwebtoken plus a Redis `EXISTS` per
//! call) as a peer on the same box. See BENCHMARKS.md.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod flood;
mod load;
mod peer;
mod propagation;
mod report;
mod server;
mod workload;

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use workload::{Clients, Workload};

/// Load generator for Tessera (loopback only).
#[derive(Debug, Parser)]
#[command(name = "tessera-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the release `tessera` binary on a free loopback port and measure
    /// the chosen modes, the floor first.
    Run(Box<RunArgs>),
    /// How long a revocation takes to reach every verifier, with Redis up and
    /// killed (split roles on Postgres, the bench's own redis-server).
    Propagation {
        /// The tessera binary (default: beside this one).
        #[arg(long)]
        tessera: Option<PathBuf>,
        /// Postgres URL of an existing, empty database (it is migrated).
        #[arg(long, env = "TESSERA_BENCH_DATABASE_URL")]
        database_url: String,
        /// Introspection instances.
        #[arg(long, default_value_t = 3)]
        verifiers: usize,
        /// Revocations measured in each of the two phases.
        #[arg(long, default_value_t = 1000)]
        revocations: usize,
    },
    /// One caller flooding beside a calm one (a callers file with a rate
    /// limit on the flooder): the calm caller's latency alone and during
    /// the flood.
    Flood {
        /// The tessera binary (default: beside this one).
        #[arg(long)]
        tessera: Option<PathBuf>,
        /// Seconds measured alone, and again during the flood.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// The flooder's rate limit, calls per second.
        #[arg(long, default_value_t = 1000)]
        flood_rate: u32,
        /// The flooder's connections (one call in flight on each).
        #[arg(long, default_value_t = 64)]
        flooders: usize,
    },
    /// Serve the Redis-deny-list peer (started by `run --peer`).
    Peer {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The Tessera server to take the JWKS from.
        #[arg(long)]
        issuer_endpoint: String,
        /// The expected `iss`.
        #[arg(long)]
        issuer: String,
        /// Redis holding `deny:<jti>`.
        #[arg(long)]
        redis_url: String,
    },
}

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// gRPC health `Check`: the floor every other figure is divided by.
    Health,
    /// `Verify`, each token seen once (no cache can help).
    Verify,
    /// `Verify` over a working set of tokens seen before.
    VerifyRepeat,
    /// `Verify` with `consistency = STRONG` (a store read per call).
    VerifyStrong,
    /// `Issue`: a login (access token and a new refresh-token family).
    Issue,
    /// `Refresh` along chains of families.
    Refresh,
    /// `Revoke` of a new jti per call.
    Revoke,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The tessera binary (default: beside this one).
    #[arg(long)]
    tessera: Option<PathBuf>,
    /// Postgres URL of an existing database to use instead of the embedded
    /// SQLite store (it is migrated).
    #[arg(long, env = "TESSERA_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Redis URL: the deny-list with --database-url, and the peer's Redis.
    #[arg(long, env = "TESSERA_BENCH_REDIS_URL")]
    redis_url: Option<String>,
    /// Modes to run, comma-separated; health always runs first.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Health, Mode::Verify, Mode::VerifyRepeat, Mode::Issue, Mode::Refresh, Mode::Revoke])]
    modes: Vec<Mode>,
    /// Also run the Redis-deny-list peer (needs --redis-url).
    #[arg(long)]
    peer: bool,
    /// HTTP/2 connections of the loaded phase.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight in the loaded phase.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Seconds measured in the loaded phase of each mode.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of calls before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured with one call at a time (latency); 0 skips.
    #[arg(long, default_value_t = 2.0)]
    single_duration: f64,
    /// First-seen tokens issued for `verify` (it stops when they run out).
    #[arg(long, default_value_t = 60_000)]
    pool: usize,
    /// Tokens in the `verify-repeat` / `verify-strong` working set.
    #[arg(long, default_value_t = 1_000)]
    working_set: usize,
    /// Most calls in one phase, warm-up included.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Serve with a callers file and present a service key on every call
    /// (the cost of caller authentication).
    #[arg(long)]
    callers: bool,
    /// Fail (exit 1) on gross regressions, judged as ratios to the floor of
    /// this run: single-call Verify p50 over 5x health's, Issue over 30x,
    /// loaded Verify under 0.1x the floor, or any failed call.
    #[arg(long)]
    check: bool,
}

impl RunArgs {
    fn spec(&self, single: bool) -> load::Spec {
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        load::Spec {
            connections: if single { 1 } else { self.connections },
            in_flight: if single { 1 } else { self.in_flight },
            warmup: secs(if single { 0.2 } else { self.warmup }),
            duration: secs(if single {
                self.single_duration
            } else {
                self.duration
            }),
            max_requests: self.max_requests,
        }
    }
}

/// Issues `n` tokens (access, refresh) with 64 calls in flight.
async fn issue_many(url: &str, n: usize, first: u64) -> Result<Vec<(String, String)>, String> {
    let clients = Clients::connect(url).await.map_err(|e| e.to_string())?;
    let per = n.div_ceil(64);
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let mut c = clients.clone();
        let count = per.min(n.saturating_sub(t as usize * per));
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(count);
            for i in 0..count as u64 {
                out.push(c.issue(first + t * 1_000_000 + i).await?);
            }
            Ok::<_, String>(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok(all)
}

/// The workload of `mode` for one phase, prepared in advance.
async fn prepare(
    mode: Mode,
    url: &str,
    a: &RunArgs,
    phase: u64,
    single: bool,
) -> Result<Workload, String> {
    let base = phase * 100_000_000;
    Ok(match mode {
        Mode::Health => Workload::Health,
        Mode::Verify => {
            // The single-call phase needs a few thousand; the loaded one the pool.
            let n = if single { 5_000.min(a.pool) } else { a.pool };
            let tokens = issue_many(url, n, base).await?;
            Workload::verify(tokens.into_iter().map(|t| t.0).collect(), false, false)
        }
        Mode::VerifyRepeat | Mode::VerifyStrong => {
            let tokens = issue_many(url, a.working_set, base).await?;
            let tokens = tokens.into_iter().map(|t| t.0).collect();
            Workload::verify(tokens, true, mode == Mode::VerifyStrong)
        }
        Mode::Issue => Workload::Issue { next: base.into() },
        Mode::Refresh => {
            let n = if single { 1 } else { a.in_flight };
            let chains = issue_many(url, n, base).await?;
            Workload::Refresh {
                families: std::sync::Mutex::new(chains.into_iter().map(|t| t.1).collect()),
            }
        }
        Mode::Revoke => Workload::Revoke {
            next: base.into(),
            until: now_unix() + 900,
        },
    })
}

#[allow(clippy::disallowed_methods)] // a client of the real clock, not the domain
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Both phases of one mode against the server at `url`.
async fn measure(
    name: String,
    mode: Mode,
    url: &str,
    pid: Option<u32>,
    a: &RunArgs,
    phase: &mut u64,
) -> Result<report::Row, String> {
    let mut row = report::Row::new(name);
    if a.single_duration > 0.0 {
        *phase += 1;
        let w = Arc::new(prepare(mode, url, a, *phase, true).await?);
        row.single = Some(load::run(url, pid, w, a.spec(true)).await);
    }
    *phase += 1;
    let w = Arc::new(prepare(mode, url, a, *phase, false).await?);
    row.loaded = Some(load::run(url, pid, w, a.spec(false)).await);
    eprintln!("{}", row.progress());
    Ok(row)
}

/// A callers file admitting one bench caller to everything the modes call;
/// its key is presented on every call. Returns the server arguments and
/// the file (removed on drop).
fn callers_file() -> Result<(Vec<String>, Option<TempFile>), String> {
    let (key, hash) = client::new_service_key()?;
    let path =
        std::env::temp_dir().join(format!("tessera-bench-callers-{}.toml", std::process::id()));
    let text = format!(
        "[[caller]]\nid = \"bench\"\nkey_sha256 = [\"{hash}\"]\nrpcs = [\"Issue\", \"Refresh\", \"Revoke\"]\naudiences = [\"*\"]\nrevoke = [\"jti\", \"family\", \"subject\"]\n"
    );
    std::fs::write(&path, text).map_err(|e| format!("callers file: {e}"))?;
    workload::present_service_key(key);
    let args = vec!["--callers-file".to_owned(), path.display().to_string()];
    Ok((args, Some(TempFile(path))))
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn run(a: RunArgs) -> Result<bool, String> {
    let bin = match &a.tessera {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("tessera"),
    };
    let store = server::Store {
        database_url: a.database_url.clone(),
        redis_url: a.database_url.as_ref().and(a.redis_url.clone()),
    };
    let issuer = "https://bench.tessera.invalid";
    let (extra, _callers_file) = if a.callers {
        callers_file()?
    } else {
        (Vec::new(), None)
    };
    let srv = server::tessera(&bin, &store, issuer, &extra).await?;
    server::wait_serving(&srv.url).await?;
    let idle_rss = srv.pid.and_then(server::rss_bytes);
    let mut rows = Vec::new();
    let mut phase = 0;
    let mut modes = vec![Mode::Health];
    modes.extend(a.modes.iter().copied().filter(|m| *m != Mode::Health));
    for m in modes {
        let name = m
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned());
        rows.push(measure(name, m, &srv.url, srv.pid, &a, &mut phase).await?);
    }
    if a.peer {
        let redis = a.redis_url.clone().ok_or("--peer needs --redis-url")?;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let args = [
            "peer",
            "--issuer-endpoint",
            &srv.url,
            "--issuer",
            issuer,
            "--redis-url",
            &redis,
        ]
        .map(str::to_owned);
        let peer = server::spawn(&me, &args, &[], None).await?;
        server::wait_serving(&peer.url).await?;
        // Tokens come from Tessera; the peer verifies them.
        for (name, mode) in [
            ("peer health", Mode::Health),
            ("peer verify", Mode::VerifyRepeat),
        ] {
            phase += 2;
            let single = match a.single_duration > 0.0 {
                true => {
                    let w = Arc::new(prepare(mode, &srv.url, &a, phase, true).await?);
                    Some(load::run(&peer.url, peer.pid, w, a.spec(true)).await)
                }
                false => None,
            };
            let w = Arc::new(prepare(mode, &srv.url, &a, phase + 1, false).await?);
            let mut row = report::Row::new(name.into());
            row.single = single;
            row.loaded = Some(load::run(&peer.url, peer.pid, w, a.spec(false)).await);
            eprintln!("{}", row.progress());
            rows.push(row);
        }
    }
    let rss = srv.pid.and_then(server::rss_bytes);
    let report = report::Report {
        rows,
        store: if a.database_url.is_some() {
            "Postgres + Redis"
        } else {
            "embedded SQLite"
        },
        connections: a.connections,
        in_flight: a.in_flight,
        idle_rss,
        final_rss: rss,
    };
    println!("{}", report.markdown());
    Ok(!a.check || report.check())
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Run(a) => match run(*a).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("tessera-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Propagation {
            tessera,
            database_url,
            verifiers,
            revocations,
        } => {
            let bin = tessera.unwrap_or_else(|| {
                std::env::current_exe()
                    .unwrap_or_default()
                    .with_file_name("tessera")
            });
            match propagation::run(&bin, &database_url, verifiers.max(1), revocations.max(1)).await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tessera-bench propagation: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Flood {
            tessera,
            duration,
            flood_rate,
            flooders,
        } => {
            let bin = tessera.unwrap_or_else(|| {
                std::env::current_exe()
                    .unwrap_or_default()
                    .with_file_name("tessera")
            });
            match flood::run(&bin, duration, flood_rate.max(1), flooders.max(1)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tessera-bench flood: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Peer {
            listen,
            issuer_endpoint,
            issuer,
            redis_url,
        } => match peer::serve(listen, &issuer_endpoint, &issuer, &redis_url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tessera-bench peer: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
