//! The command line: a subcommand per mode of the bench and the flags of
//! `run`, apart from what the modes do, so that the flags the README points
//! at (`tessera-bench run --help`) live in one place.

use crate::load;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Load generator for Tessera (loopback only).
#[derive(Debug, Parser)]
#[command(name = "tessera-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
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
    /// HTTP forward-auth (`GET /gateway/auth`, as a gateway asks) over the
    /// working set of tokens seen before.
    ForwardAuth,
    /// nginx in front of an application, alone and asking Tessera about
    /// every request (examples/gateway/nginx.conf), over keep-alive
    /// HTTP/1.1; needs nginx (scripts/services.sh installs it).
    Nginx,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The tessera binary (default: beside this one).
    #[arg(long)]
    pub tessera: Option<PathBuf>,
    /// Postgres URL of an existing database to use instead of the embedded
    /// SQLite store (it is migrated).
    #[arg(long, env = "TESSERA_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL: the deny-list with --database-url, and the peer's Redis.
    #[arg(long, env = "TESSERA_BENCH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Modes to run, comma-separated; health always runs first.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Health, Mode::Verify, Mode::VerifyRepeat, Mode::Issue, Mode::Refresh, Mode::Revoke])]
    pub modes: Vec<Mode>,
    /// Also run the Redis-deny-list peer (needs --redis-url).
    #[arg(long)]
    pub peer: bool,
    /// HTTP/2 connections of the loaded phase.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Calls in flight in the loaded phase.
    #[arg(long, default_value_t = 128)]
    pub in_flight: usize,
    /// Seconds measured in the loaded phase of each mode.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of calls before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured with one call at a time (latency); 0 skips.
    #[arg(long, default_value_t = 2.0)]
    pub single_duration: f64,
    /// First-seen tokens issued for `verify` (it stops when they run out).
    #[arg(long, default_value_t = 60_000)]
    pub pool: usize,
    /// Tokens in the `verify-repeat` / `verify-strong` working set.
    #[arg(long, default_value_t = 1_000)]
    pub working_set: usize,
    /// Most calls in one phase, warm-up included.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_requests: u64,
    /// Serve with a callers file and present a service key on every call
    /// (the cost of caller authentication).
    #[arg(long)]
    pub callers: bool,
    /// Fail (exit 1) on gross regressions, judged as ratios to the floor of
    /// this run: single-call Verify p50 over 5x health's, Issue over 30x,
    /// loaded Verify under 0.1x the floor, or any failed call.
    #[arg(long)]
    pub check: bool,
}

impl RunArgs {
    pub fn spec(&self, single: bool) -> load::Spec {
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
