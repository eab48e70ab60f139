//! `tessera`: serve, migrate, healthcheck. `main` only wires telemetry,
//! configuration, build and run.

#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use tessera::cli::{Cli, Command};
use tessera::{Application, Config};

/// The general log to stderr (`TESSERA_LOG`), and the audit trail to its
/// own sink (`--audit-log`, else stderr; see `tessera::audit_log`).
fn init_tracing(audit: Option<&std::path::Path>) -> Result<(), String> {
    use tracing_subscriber::prelude::*;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tessera::audit_log::general_filter());
    tracing_subscriber::registry()
        .with(logs)
        .with(tessera::audit_log::layer(audit)?)
        .init();
    Ok(())
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled: a signal that arrives between the
/// "listening" line and the start of serving must stop the server
/// gracefully, not kill it (the default action).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

async fn serve(cfg: Config) -> Result<(), tessera::AppError> {
    let app = Application::build(cfg).await?;
    let addr = app.local_addr();
    let shutdown = shutdown_signal();
    tracing::info!(%addr, "serving");
    // A line on stdout that scripts and tests can wait for.
    println!("tessera listening on {addr}");
    app.run(shutdown).await
}

#[tokio::main]
async fn main() -> ExitCode {
    tessera::install_crypto_provider();
    let cli = Cli::parse();
    let audit = match &cli.command {
        Command::Serve(args) => args.audit_log.clone(),
        _ => std::env::var_os("TESSERA_AUDIT_LOG").map(std::path::PathBuf::from),
    };
    if let Err(e) = init_tracing(audit.as_deref()) {
        eprintln!("tessera: configuration: {e}");
        return ExitCode::FAILURE;
    }
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
