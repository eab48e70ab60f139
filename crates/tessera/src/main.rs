//! `tessera`: serve, migrate, healthcheck. `main` only wires telemetry,
//! configuration, build and run.

#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use tessera::cli::{Cli, Command};
use tessera::{Application, Config};

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

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

async fn serve(cfg: Config) -> Result<(), tessera::AppError> {
    let app = Application::build(cfg).await?;
    let addr = app.local_addr();
    tracing::info!(%addr, "serving");
    // A line on stdout that scripts and tests can wait for.
    println!("tessera listening on {addr}");
    app.run(shutdown_signal()).await
}

#[tokio::main]
async fn main() -> ExitCode {
    tessera::install_crypto_provider();
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => match args.into_config() {
            Ok(cfg) => serve(cfg).await.map_err(|e| e.to_string()),
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
        Command::Revoke(args) => tessera::revoke_cli::run(*args).await,
        Command::Token(cmd) => match tessera::inspect_cli::run(cmd).await {
            Ok(true) => Ok(()),
            // The explanation is printed: a refusal is an answer, not an error.
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Callers(tessera::callers_cli::CallersCommand::Add {
            name,
            rpcs,
            audiences,
            revoke,
        }) => tessera::callers_cli::add(&name, &rpcs, &audiences, &revoke),
        Command::Healthcheck { remote } => {
            if remote.healthcheck().await {
                println!("SERVING");
                return ExitCode::SUCCESS;
            }
            println!("NOT_SERVING");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tessera failed");
            eprintln!("tessera: {e}");
            ExitCode::FAILURE
        }
    }
}
