//! The `run` mode: start `tessera` (and, with `--peer`, the Redis-deny-list
//! peer), measure each mode in a single-call phase and a loaded one, the
//! floor (health `Check`) first, and print the table. Each figure is read as
//! a ratio to the floor of the same run (BENCHMARKS.md).

use crate::cli::{Mode, RunArgs};
use crate::report::{Report, Row};
use crate::server::{self, Server};
use crate::workload::{self, Clients, Workload};
use crate::{client, load};
use clap::ValueEnum;
use std::path::PathBuf;
use std::sync::Arc;

/// The `iss` of the server under test; the peer is told to expect it too.
const ISSUER: &str = "https://bench.tessera.invalid";

/// The whole run. `Ok(false)` when `--check` finds a gross regression.
pub async fn run(a: RunArgs) -> Result<bool, String> {
    let bin = tessera_bin(&a)?;
    let store = server::Store {
        database_url: a.database_url.clone(),
        redis_url: a.database_url.as_ref().and(a.redis_url.clone()),
    };
    // Bound, not dropped: the files must outlive the server given them.
    let (mut extra, _callers_file) = if a.callers {
        callers_file()?
    } else {
        (Vec::new(), None)
    };
    let gateways = a
        .modes
        .iter()
        .any(|m| matches!(m, Mode::ForwardAuth | Mode::Nginx));
    let _routes_file = match gateways {
        true => Some(routes_file(&mut extra)?),
        false => None,
    };
    let srv = server::tessera(&bin, &store, ISSUER, &extra).await?;
    server::wait_serving(&srv.url).await?;
    let idle_rss = srv.pid.and_then(server::rss_bytes);
    let bench = Bench {
        a: &a,
        tessera: &srv.url,
    };
    let mut phase = 0;
    let mut rows = bench.modes(&srv, &mut phase).await?;
    if a.peer {
        rows.extend(bench.peer(&mut phase).await?);
    }
    let report = Report {
        rows,
        store: if a.database_url.is_some() {
            "Postgres + Redis"
        } else {
            "embedded SQLite"
        },
        connections: a.connections,
        in_flight: a.in_flight,
        idle_rss,
        final_rss: srv.pid.and_then(server::rss_bytes),
    };
    println!("{}", report.markdown());
    Ok(!a.check || report.check())
}

/// `--tessera`, or the `tessera` binary beside this one.
fn tessera_bin(a: &RunArgs) -> Result<PathBuf, String> {
    Ok(match &a.tessera {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("tessera"),
    })
}

/// What every phase shares: the flags, and the Tessera server that prepares
/// the workloads (the peer verifies tokens Tessera issued, so its workloads
/// are prepared there too).
struct Bench<'a> {
    a: &'a RunArgs,
    tessera: &'a str,
}

impl Bench<'_> {
    /// One phase of `mode` against `target`; `phase` keeps each phase's
    /// subjects and jtis apart from every other's.
    async fn phase(
        &self,
        mode: Mode,
        target: &Server,
        phase: u64,
        single: bool,
    ) -> Result<load::Stats, String> {
        let w = Arc::new(prepare(mode, self.tessera, self.a, phase, single).await?);
        Ok(load::run(&target.url, target.pid, w, self.a.spec(single)).await)
    }

    /// Every mode asked for against Tessera (`srv`), health first: the
    /// floor the others are divided by.
    async fn modes(&self, srv: &Server, phase: &mut u64) -> Result<Vec<Row>, String> {
        let mut modes = vec![Mode::Health];
        let nginx = self.a.modes.contains(&Mode::Nginx);
        modes.extend(
            (self.a.modes.iter().copied()).filter(|m| !matches!(m, Mode::Health | Mode::Nginx)),
        );
        let mut rows = Vec::new();
        for m in modes {
            let name = m
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned());
            let mut row = Row::new(name);
            if self.a.single_duration > 0.0 {
                *phase += 1;
                row.single = Some(self.phase(m, srv, *phase, true).await?);
            }
            *phase += 1;
            row.loaded = Some(self.phase(m, srv, *phase, false).await?);
            eprintln!("{}", row.progress());
            rows.push(row);
        }
        if nginx {
            rows.extend(self.nginx(srv, phase).await?);
        }
        Ok(rows)
    }

    /// nginx in front of an application, alone and then asking Tessera
    /// (`srv`) about every request, over the same working set of tokens.
    /// Tessera's CPU is counted in the second; the first has none of it.
    async fn nginx(&self, srv: &Server, phase: &mut u64) -> Result<Vec<Row>, String> {
        let app = crate::gateway::App::start().await?;
        *phase += 1;
        let tokens = issue_many(self.tessera, self.a.working_set, *phase * 100_000_000).await?;
        let tokens: Vec<String> = tokens.into_iter().map(|t| t.0).collect();
        let key = workload::service_key();
        let mut rows = Vec::new();
        for (name, ask) in [("nginx alone", false), ("nginx + Tessera", true)] {
            let gw = crate::gateway::Nginx::start(self.tessera, app.addr, key, ask).await?;
            let pid = srv.pid.filter(|_| ask);
            let mut row = Row::new(name.into());
            for single in [true, false] {
                if single && self.a.single_duration <= 0.0 {
                    continue;
                }
                let w = Arc::new(Workload::Gateway {
                    tokens: tokens.clone(),
                    next: 0.into(),
                    via: Some(gw.addr),
                });
                let stats = load::run(self.tessera, pid, w, self.a.spec(single)).await;
                match single {
                    true => row.single = Some(stats),
                    false => row.loaded = Some(stats),
                }
            }
            eprintln!("{}", row.progress());
            rows.push(row);
        }
        Ok(rows)
    }

    /// The peer's floor and its Verify, the peer started here as a child
    /// of this binary and stopped when done.
    async fn peer(&self, phase: &mut u64) -> Result<Vec<Row>, String> {
        let redis = self.a.redis_url.clone().ok_or("--peer needs --redis-url")?;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let args = [
            "peer",
            "--issuer-endpoint",
            self.tessera,
            "--issuer",
            ISSUER,
            "--redis-url",
            &redis,
        ]
        .map(str::to_owned);
        let peer = server::spawn(&me, &args, &[], None).await?;
        server::wait_serving(&peer.url).await?;
        let mut rows = Vec::new();
        for (name, mode) in [
            ("peer health", Mode::Health),
            ("peer verify", Mode::VerifyRepeat),
        ] {
            *phase += 2;
            let mut row = Row::new(name.into());
            if self.a.single_duration > 0.0 {
                row.single = Some(self.phase(mode, &peer, *phase, true).await?);
            }
            row.loaded = Some(self.phase(mode, &peer, *phase + 1, false).await?);
            eprintln!("{}", row.progress());
            rows.push(row);
        }
        Ok(rows)
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
        Mode::ForwardAuth | Mode::Nginx => {
            let tokens = issue_many(url, a.working_set, base).await?;
            Workload::Gateway {
                tokens: tokens.into_iter().map(|t| t.0).collect(),
                next: 0.into(),
                via: None,
            }
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

/// A callers file admitting one bench caller to everything the modes call;
/// its key is presented on every call. Returns the server arguments and
/// the file (removed on drop).
fn callers_file() -> Result<(Vec<String>, Option<TempFile>), String> {
    let (key, hash) = client::new_service_key()?;
    let path =
        std::env::temp_dir().join(format!("tessera-bench-callers-{}.toml", std::process::id()));
    let text = format!(
        "[[caller]]\nid = \"bench\"\nkey_sha256 = [\"{hash}\"]\nrpcs = [\"Issue\", \"Refresh\", \"Revoke\", \"Verify\"]\nverify_strong = true\naudiences = [\"*\"]\nrevoke = [\"jti\", \"family\", \"subject\"]\ngateway = true\n"
    );
    std::fs::write(&path, text).map_err(|e| format!("callers file: {e}"))?;
    workload::present_service_key(key);
    let args = vec!["--callers-file".to_owned(), path.display().to_string()];
    Ok((args, Some(TempFile(path))))
}

/// The bench's routes file ([`crate::gateway::routes_toml`]), its flag
/// added to `args`.
fn routes_file(args: &mut Vec<String>) -> Result<TempFile, String> {
    let path =
        std::env::temp_dir().join(format!("tessera-bench-routes-{}.toml", std::process::id()));
    std::fs::write(&path, crate::gateway::routes_toml(workload::AUDIENCE))
        .map_err(|e| format!("routes file: {e}"))?;
    args.extend([
        "--gateway-routes-file".to_owned(),
        path.display().to_string(),
    ]);
    Ok(TempFile(path))
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
