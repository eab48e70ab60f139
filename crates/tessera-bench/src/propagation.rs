//! How long a revocation takes to reach every verifier: one issuer and
//! several introspection instances (split roles, Postgres + the bench's own
//! Redis), tokens revoked through the first verifier, and the time from each
//! `Revoke`'s answer until every verifier answers REVOKED — with Redis up
//! (the pub/sub fast path) and with Redis killed (the reconcile from
//! Postgres).

use crate::server::{self, Server};
use crate::workload::Clients;
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_bench::OwnRedis;

const ISSUER: &str = "https://bench.tessera.invalid";

/// Starts one `tessera serve` with `role_args`.
async fn serve(
    bin: &Path,
    common: &[String],
    role_args: &[String],
    kek: &str,
) -> Result<Server, String> {
    let dir = std::env::temp_dir().join(format!(
        "tessera-bench-{}-{}",
        std::process::id(),
        server::free_port()?
    ));
    let mut args = vec![
        "serve".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
    ];
    args.extend_from_slice(common);
    args.extend_from_slice(role_args);
    let envs = [
        ("TESSERA_KEK", kek.to_owned()),
        ("TESSERA_LOG", "error".to_owned()),
    ];
    let s = server::spawn(bin, &args, &envs, Some(dir)).await?;
    server::wait_serving(&s.url).await?;
    Ok(s)
}

fn quantiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    format!(
        "{} | {:.2} ms | {:.2} ms | {:.2} ms",
        v.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    )
}

/// Until every verifier rejects each of `tokens` (revoked at `acked`).
async fn until_rejected(
    verifiers: &mut [Clients],
    tokens: &[String],
    acked: &[Instant],
) -> Result<Vec<Duration>, String> {
    let mut last = vec![None; tokens.len()];
    let mut pending: Vec<(usize, usize)> = (0..tokens.len())
        .flat_map(|t| (0..verifiers.len()).map(move |v| (t, v)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} (token, verifier) pairs never rejected",
                pending.len()
            ));
        }
        let mut still = Vec::new();
        for (t, v) in pending {
            if verifiers[v].is_revoked(&tokens[t]).await? {
                last[t] = Some(acked[t].elapsed());
            } else {
                still.push((t, v));
            }
        }
        pending = still;
    }
    Ok(last.into_iter().flatten().collect())
}

/// One issuer and `verifiers` introspection instances on `database_url`
/// and `redis`, all serving.
async fn topology(
    bin: &Path,
    database_url: &str,
    redis: &OwnRedis,
    verifiers: usize,
) -> Result<(Server, Vec<Server>), String> {
    let kek = server::random_kek().map_err(|e| e.to_string())?;
    let common = common_args(database_url, redis);
    // The issuer names the first verifier as its revocation endpoint before
    // that verifier starts, so the verifier's port is chosen here.
    let first = server::free_port()?;
    let issuer = serve(bin, &common, &issuer_args(first), &kek).await?;
    let mut servers = Vec::new();
    for i in 0..verifiers {
        let listen = if i == 0 {
            format!("127.0.0.1:{first}")
        } else {
            "127.0.0.1:0".into()
        };
        let role = verifier_args(listen, &issuer.url);
        servers.push(serve(bin, &common, &role, &kek).await?);
    }
    Ok((issuer, servers))
}

/// What every instance shares: the issuer name, the database, and Redis
/// under a prefix of this run's own.
fn common_args(database_url: &str, redis: &OwnRedis) -> Vec<String> {
    let prefix = format!("tessera-bench-prop-{}:", std::process::id());
    [
        "--issuer",
        ISSUER,
        "--database-url",
        database_url,
        "--redis-url",
        &redis.url(),
        "--redis-prefix",
        &prefix,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The issuer's role; it migrates the database, being the first to start.
fn issuer_args(first_verifier_port: u16) -> Vec<String> {
    vec![
        "--role".into(),
        "issuer".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--migrate".into(),
        "--revocation-endpoint".into(),
        format!("http://127.0.0.1:{first_verifier_port}"),
    ]
}

/// An introspection instance's role, taking its keys from `issuer_url`.
fn verifier_args(listen: String, issuer_url: &str) -> Vec<String> {
    vec![
        "--role".into(),
        "introspection".into(),
        "--listen".into(),
        listen,
        "--issuer-endpoint".into(),
        issuer_url.to_owned(),
    ]
}

/// The whole run; prints a markdown table.
pub async fn run(bin: &Path, database_url: &str, verifiers: usize, n: usize) -> Result<(), String> {
    let mut redis = OwnRedis::start()?;
    let (issuer, servers) = topology(bin, database_url, &redis, verifiers).await?;
    let mut issuing = Clients::connect(&issuer.url)
        .await
        .map_err(|e| e.to_string())?;
    let mut tokens = Vec::with_capacity(2 * n);
    for i in 0..2 * n as u64 {
        tokens.push(issuing.issue(i).await?.0);
    }
    let mut clients = Vec::new();
    for s in &servers {
        clients.push(Clients::connect(&s.url).await.map_err(|e| e.to_string())?);
    }
    // Redis up: one token at a time, polled as fast as the verifiers answer.
    let mut up = Vec::with_capacity(n);
    for t in &tokens[..n] {
        clients[0].revoke_token(t).await?;
        let acked = [Instant::now()];
        up.extend(until_rejected(&mut clients, std::slice::from_ref(t), &acked).await?);
    }
    // Redis killed: batches of 100, each polled until every verifier rejects.
    redis.stop();
    let mut down = Vec::with_capacity(n);
    for batch in tokens[n..].chunks(100) {
        let mut acked = Vec::with_capacity(batch.len());
        for t in batch {
            clients[0].revoke_token(t).await?;
            acked.push(Instant::now());
        }
        down.extend(until_rejected(&mut clients, batch, &acked).await?);
    }
    println!(
        "Propagation: {verifiers} introspection instances and one issuer (split roles, Postgres), revocations through the first verifier; time from the `Revoke` answer until every verifier answers REVOKED.\n"
    );
    println!("| Redis | revocations | p50 | p99 | max |\n|---|---:|---:|---:|---:|");
    println!("| up (pub/sub) | {} |", quantiles(up));
    println!("| killed (reconcile, default 1 s) | {} |", quantiles(down));
    drop(servers);
    drop(issuer);
    Ok(())
}
