//! One caller flooding beside a calm one, over the wire: the release binary
//! with a callers file of two callers, `flood` limited to a rate and `calm`
//! unlimited. The calm caller's single-call Verify latency is measured
//! alone, then while the flooder sends as fast as its connections allow;
//! the flooder's calls beyond its rate are refused (`RESOURCE_EXHAUSTED`).

use crate::server;
use crate::workload::Clients;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Starts the server, measures, prints a Markdown table.
pub async fn run(bin: &Path, seconds: f64, flood_rate: u32, flooders: usize) -> Result<(), String> {
    let key = |id: &str, rate: &str| {
        let (k, hash) = crate::client::new_service_key()?;
        let entry = format!(
            "[[caller]]\nid = \"{id}\"\nkey_sha256 = [\"{hash}\"]\nrpcs = [\"Issue\"]\naudiences = [\"*\"]\n{rate}\n"
        );
        Ok::<_, String>((k, entry))
    };
    let (flood_key, flood_entry) = key(
        "flood",
        &format!(
            "rate_per_second = {flood_rate}\nburst = {}",
            (flood_rate / 5).max(1)
        ),
    )?;
    let (calm_key, calm_entry) = key("calm", "")?;
    let path = std::env::temp_dir().join(format!("tessera-flood-{}.toml", std::process::id()));
    std::fs::write(&path, format!("{flood_entry}\n{calm_entry}"))
        .map_err(|e| format!("callers file: {e}"))?;
    let args = vec!["--callers-file".to_owned(), path.display().to_string()];
    let store = server::Store {
        database_url: None,
        redis_url: None,
    };
    let result = measure(
        bin,
        &store,
        &args,
        (&flood_key, &calm_key),
        seconds,
        flood_rate,
        flooders,
    )
    .await;
    let _ = std::fs::remove_file(&path);
    result
}

async fn measure(
    bin: &Path,
    store: &server::Store,
    args: &[String],
    (flood_key, calm_key): (&str, &str),
    seconds: f64,
    flood_rate: u32,
    flooders: usize,
) -> Result<(), String> {
    let srv = server::tessera(bin, store, "https://bench.tessera.invalid", args).await?;
    server::wait_serving(&srv.url).await?;

    let mut calm = Clients::connect_as(&srv.url, Some(calm_key)).await?;
    let (token, _) = calm.issue(0).await?;
    let duration = Duration::from_secs_f64(seconds);
    let quiet = calm_latencies(&mut calm, &token, duration).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..flooders {
        let mut c = Clients::connect_as(&srv.url, Some(flood_key)).await?;
        let (stop, ok, refused, token) = (stop.clone(), ok.clone(), refused.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.verify_code(&token).await {
                    tonic::Code::Ok => ok.fetch_add(1, Ordering::Relaxed),
                    tonic::Code::ResourceExhausted => refused.fetch_add(1, Ordering::Relaxed),
                    code => {
                        eprintln!("flood: unexpected {code:?}");
                        0
                    }
                };
            }
        }));
    }
    let started = Instant::now();
    let during = calm_latencies(&mut calm, &token, duration).await?;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    println!(
        "Calm caller: sequential Verify, {seconds} s each; flooder: {flooders} connections, one call in flight each, limited to {flood_rate}/s (burst {}).\n",
        (flood_rate / 5).max(1)
    );
    println!(
        "| | calm p50 | calm p99 | calm max | calm calls | flood accepted/s | flood refused/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!("{}", row("alone", &quiet, None));
    println!(
        "{}",
        row(
            "during the flood",
            &during,
            Some((ok as f64 / secs, refused as f64 / secs))
        )
    );
    if during.is_empty() || quiet.is_empty() {
        return Err("no calm call was measured".into());
    }
    Ok(())
}

/// Sequential Verify calls by the calm caller for `d`; every one must be
/// answered (a refusal is an error: the calm caller is never limited).
async fn calm_latencies(
    c: &mut Clients,
    token: &str,
    d: Duration,
) -> Result<Vec<Duration>, String> {
    let until = Instant::now() + d;
    let mut lat = Vec::new();
    while Instant::now() < until {
        let t = Instant::now();
        let code = c.verify_code(token).await;
        if code != tonic::Code::Ok {
            return Err(format!("the calm caller got {code:?}"));
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

fn row(name: &str, lat: &[Duration], flood: Option<(f64, f64)>) -> String {
    let at = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let (a, r) = flood.map_or(("–".into(), "–".into()), |(a, r)| {
        (format!("{a:.0}"), format!("{r:.0}"))
    });
    format!(
        "| {name} | {:.3} ms | {:.3} ms | {:.3} ms | {} | {a} | {r} |",
        at(0.5),
        at(0.99),
        at(1.0),
        lat.len()
    )
}
