//! `tessera`: serve, migrate, healthcheck. `main` only wires telemetry
//! (`telemetry.rs`), configuration, build and run.

#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use tessera::cli::{Cli, Command};
use tessera::telemetry::Telemetry;
use tessera::{Application, Config};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(mut cfg: Config, telemetry: &mut Telemetry) -> Result<(), tessera::AppError> {
    cfg.edge.trace_context = telemetry.traces();
    let app = Application::build(cfg).await?;
    telemetry.export_metrics(&app.metrics());
    let addr = app.local_addr();
    tracing::info!(%addr, "serving");
    // A line on stdout that scripts and tests can wait for.
    println!("tessera listening on {addr}");
    app.run(shutdown_signal()).await
}

async fn healthcheck(endpoint: String, ca: Option<std::path::PathBuf>) -> bool {
    let check = async {
        let tls = match ca {
            Some(ca) => Some(tessera_grpc::tls::ClientTls::load(&ca, None).ok()?),
            None => None,
        };
        let channel = tessera_grpc::net::endpoint(&endpoint, tls.as_ref())
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut client = HealthClient::new(channel);
        let r = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(r.into_inner().status == ServingStatus::Serving as i32)
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[tokio::main]
async fn main() -> ExitCode {
    tessera::install_crypto_provider();
    let cli = Cli::parse();
    // Only a server exports telemetry; the other commands only log.
    let mut telemetry = match Telemetry::init(matches!(cli.command, Command::Serve(_))) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tessera: telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => match args.into_config() {
            Ok(cfg) => serve(cfg, &mut telemetry).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("configuration: {e}")),
        },
        Command::Migrate { database_url } => async {
            let store = tessera_storage::SqlStore::connect(&database_url).await?;
            store.migrate().await?;
            store.close().await;
            Ok::<(), tessera_domain::error::DomainError>(())
        }
        .await
        .map_err(|e| e.to_string()),
        Command::Keys(cmd) => tessera::keys_cli::run(cmd).await,
        Command::Callers(tessera::cli::CallersCommand::Add {
            name,
            rpcs,
            audiences,
            revoke,
        }) => tessera::callers_cli::add(&name, &rpcs, &audiences, &revoke),
        Command::Healthcheck {
            endpoint,
            peer_ca_file,
        } => {
            if healthcheck(endpoint, peer_ca_file).await {
                println!("SERVING");
                return ExitCode::SUCCESS;
            }
            println!("NOT_SERVING");
            return ExitCode::FAILURE;
        }
    };
    // Flushing waits for the exporter, which needs the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tessera failed");
            eprintln!("tessera: {e}");
            ExitCode::FAILURE
        }
    }
}
