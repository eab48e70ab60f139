//! `tessera`: serve, migrate, healthcheck and the operator commands. `main`
//! sets up telemetry (`telemetry.rs`) and dispatches the command: `serve`
//! parses the configuration, builds the application and runs it; each
//! operator command runs its own module's function.

#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use tessera::cli::{Cli, Command};
use tessera::telemetry::Telemetry;
use tessera::{Application, Config};

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

async fn serve(mut cfg: Config, telemetry: &mut Telemetry) -> Result<(), tessera::AppError> {
    cfg.edge.trace_context = telemetry.traces();
    let app = Application::build(cfg).await?;
    telemetry.export_metrics(&app.metrics());
    let addr = app.local_addr();
    let shutdown = shutdown_signal();
    let (tls, callers) = app.guard();
    let callers = callers.map_or_else(|| "no callers file".to_owned(), |n| n.to_string());
    tracing::info!(%addr, tls, %callers, "serving");
    // A line on stdout that scripts and tests can wait for.
    println!("tessera listening on {addr}");
    app.run(shutdown).await
}

/// The logging, trace and metric exporters and the audit sink. Only a
/// server exports telemetry; the other commands only log. The audit trail
/// has its own sink (`--audit-log`, else stderr).
fn telemetry(cli: &Cli) -> Result<Telemetry, String> {
    let audit = match &cli.command {
        Command::Serve(args) => args.audit_log.clone(),
        Command::Keys(tessera::keys_cli::KeysCommand::Rewrap { audit_log, .. }) => {
            audit_log.clone()
        }
        _ => std::env::var_os("TESSERA_AUDIT_LOG").map(std::path::PathBuf::from),
    };
    let export = matches!(cli.command, Command::Serve(_));
    Telemetry::init(export, audit.as_deref(), cli.log_format)
}

/// `tessera migrate`: applies the migrations to the database, says how
/// many it applied (or that none was due), and closes it.
async fn migrate(database_url: &str) -> Result<(), tessera_domain::error::DomainError> {
    let store = tessera_storage::SqlStore::connect(database_url).await?;
    let pending = store.pending_migrations().await?;
    store.migrate().await?;
    store.close().await;
    match pending.as_slice() {
        [] => println!("migrate: nothing to apply: the schema is up to date"),
        [.., last] => println!(
            "migrate: applied {} migration(s); the schema is at version {last}",
            pending.len()
        ),
    }
    Ok(())
}

use tessera::remote::bounded;

#[tokio::main]
async fn main() -> ExitCode {
    tessera::install_crypto_provider();
    let cli = Cli::parse();
    let mut telemetry = match telemetry(&cli) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tessera: configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => match args.into_config() {
            Ok(cfg) => serve(cfg, &mut telemetry).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("configuration: {e}")),
        },
        Command::Migrate { database_url } => {
            migrate(&database_url).await.map_err(|e| e.to_string())
        }
        // A command that asks a server is bounded: a port that never
        // answers must not hang it (`keys rewrap` works on the store).
        Command::Keys(cmd) => tessera::keys_cli::run(cmd).await,
        Command::Revoke(args) => bounded(tessera::revoke_cli::run(*args)).await,
        Command::Token(cmd) => match bounded(tessera::inspect_cli::run(cmd)).await {
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
            verify_strong,
            keys_admin,
            key_file,
        }) => tessera::callers_cli::add(
            &name,
            &rpcs,
            &audiences,
            &revoke,
            (verify_strong, keys_admin),
            key_file.as_deref(),
        ),
        Command::Healthcheck { remote, wait } => return healthcheck(&remote, wait).await,
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir.as_deref()),
    };
    // Flushing waits for the exporter, which needs the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Printed once, on its own: not also as a log line, which would
        // say it twice in a terminal (and in a JSON log, once is enough).
        Err(e) => {
            eprintln!("tessera: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tessera healthcheck`: SERVING (exit 0), NOT_SERVING (exit 1), or
/// UNKNOWN with the reason on stderr when the server could not be asked
/// (exit 1). With `--wait`, asked again until SERVING or the time is up:
/// a script starting a server needs no loop of its own, and one whose
/// server never comes up stops with the reason instead of spinning.
async fn healthcheck(remote: &tessera::remote::RemoteArgs, wait: u64) -> ExitCode {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    let mut answer = remote.healthcheck().await;
    while !matches!(answer, Ok(true)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        answer = remote.healthcheck().await;
    }
    match answer {
        Ok(true) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("NOT_SERVING");
            ExitCode::FAILURE
        }
        Err(why) => {
            println!("UNKNOWN");
            eprintln!("tessera: healthcheck: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `tessera man`: the man page on stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> Result<(), String> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(cmd, dir))
            .map_err(|e| format!("man --dir {}: {e}", dir.display())),
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|e| format!("man: {e}")),
    }
}

/// `tessera completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> Result<(), String> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "tessera", &mut std::io::stdout());
    Ok(())
}
