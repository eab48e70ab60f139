//! `tessera-bench`: Tessera's speed over the wire. A closed-loop load
//! generator over real gRPC against the release `tessera` binary on
//! loopback, bounded in time and in count. Every run measures the floor
//! first (gRPC health `Check` on the same server), so each figure is a ratio
//! measured in the same run; server CPU per call comes from `/proc`. It also
//! runs the design Tessera replaces (jsonwebtoken plus a Redis `EXISTS` per
//! call) as a peer on the same box. See BENCHMARKS.md.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod client;
mod flood;
mod gateway;
mod load;
mod peer;
mod propagation;
mod report;
mod run;
mod server;
mod workload;

use clap::Parser;
use cli::{Cli, Cmd};
use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Run(a) => match run::run(*a).await {
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
            let bin = tessera.unwrap_or_else(beside_me);
            let done =
                propagation::run(&bin, &database_url, verifiers.max(1), revocations.max(1)).await;
            exit("propagation", done)
        }
        Cmd::Flood {
            tessera,
            duration,
            flood_rate,
            flooders,
        } => {
            let bin = tessera.unwrap_or_else(beside_me);
            exit(
                "flood",
                flood::run(&bin, duration, flood_rate.max(1), flooders.max(1)).await,
            )
        }
        Cmd::Peer {
            listen,
            issuer_endpoint,
            issuer,
            redis_url,
        } => exit(
            "peer",
            peer::serve(listen, &issuer_endpoint, &issuer, &redis_url).await,
        ),
    }
}

/// The `tessera` binary beside this one, the default of `--tessera`.
fn beside_me() -> PathBuf {
    std::env::current_exe()
        .unwrap_or_default()
        .with_file_name("tessera")
}

/// The exit code of a subcommand other than `run`, its error on stderr.
fn exit(mode: &str, done: Result<(), String>) -> ExitCode {
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-bench {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}
