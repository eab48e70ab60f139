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
use tokio::task::JoinHandle;

/// What the command line asks of the flood.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Seconds measured alone, and again during the flood.
    seconds: f64,
    /// The flooder's rate limit, calls per second.
    flood_rate: u32,
    /// The flooder's connections.
    flooders: usize,
}

impl Shape {
    /// The flooder's burst: a fifth of its rate, at least one call. The
    /// callers file and the table's heading both state it.
    fn burst(self) -> u32 {
        (self.flood_rate / 5).max(1)
    }
}

/// Starts the server, measures, prints a Markdown table.
pub async fn run(bin: &Path, seconds: f64, flood_rate: u32, flooders: usize) -> Result<(), String> {
    let shape = Shape {
        seconds,
        flood_rate,
        flooders,
    };
    let key = |id: &str, rate: &str| {
        let (k, hash) = crate::client::new_service_key()?;
        let entry = format!(
            "[[caller]]\nid = \"{id}\"\nkey_sha256 = [\"{hash}\"]\nrpcs = [\"Issue\"]\naudiences = [\"*\"]\n{rate}\n"
        );
        Ok::<_, String>((k, entry))
    };
    let (flood_key, flood_entry) = key(
        "flood",
        &format!("rate_per_second = {flood_rate}\nburst = {}", shape.burst()),
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
    let result = measure(bin, &store, &args, (&flood_key, &calm_key), shape).await;
    let _ = std::fs::remove_file(&path);
    result
}

/// The calm caller alone, then during the flood, against one server started
/// with the callers file in `args`.
async fn measure(
    bin: &Path,
    store: &server::Store,
    args: &[String],
    (flood_key, calm_key): (&str, &str),
    shape: Shape,
) -> Result<(), String> {
    let srv = server::tessera(bin, store, "https://bench.tessera.invalid", args).await?;
    server::wait_serving(&srv.url).await?;

    let mut calm = Clients::connect_as(&srv.url, Some(calm_key)).await?;
    let (token, _) = calm.issue(0).await?;
    let duration = Duration::from_secs_f64(shape.seconds);
    let quiet = calm_latencies(&mut calm, &token, duration).await?;

    let flood = Flood::start(&srv.url, flood_key, &token, shape.flooders).await?;
    let started = Instant::now();
    let during = calm_latencies(&mut calm, &token, duration).await?;
    let (ok, refused) = flood.stop().await;
    let secs = started.elapsed().as_secs_f64();
    print_table(
        shape,
        &quiet,
        &during,
        (ok as f64 / secs, refused as f64 / secs),
    );
    if during.is_empty() || quiet.is_empty() {
        return Err("no calm call was measured".into());
    }
    Ok(())
}

/// The flooder: its connections, each sending Verify back to back until
/// stopped, counting the calls accepted and the calls refused.
struct Flood {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Flood {
    /// Connects `flooders` times as the caller of `key` and starts sending.
    async fn start(url: &str, key: &str, token: &str, flooders: usize) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..flooders {
            let mut c = Clients::connect_as(url, Some(key)).await?;
            let (stop, ok, refused) = (stop.clone(), ok.clone(), refused.clone());
            let token = token.to_owned();
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
        Ok(Self {
            stop,
            ok,
            refused,
            tasks,
        })
    }

    /// Stops every connection once its call in flight is answered, so the
    /// counts are final; returns (accepted, refused).
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// The heading and the two rows; `rates` are the flooder's accepted and
/// refused calls per second during the flood.
fn print_table(shape: Shape, quiet: &[Duration], during: &[Duration], rates: (f64, f64)) {
    let Shape {
        seconds,
        flood_rate,
        flooders,
    } = shape;
    println!(
        "Calm caller: sequential Verify, {seconds} s each; flooder: {flooders} connections, one call in flight each, limited to {flood_rate}/s (burst {}).\n",
        shape.burst()
    );
    println!(
        "| | calm p50 | calm p99 | calm max | calm calls | flood accepted/s | flood refused/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!("{}", row("alone", quiet, None));
    println!("{}", row("during the flood", during, Some(rates)));
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
