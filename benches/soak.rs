//! Soak benchmark: the release daemon against the simulated management API for thousands of
//! polls, with churn, printing the daemon's memory, file descriptors and threads as it goes.
//!
//! Run with `cargo bench --bench soak`. Defaults: 5,000 keys, one poll per second, 2,000 polls
//! (about 34 minutes), a report every 500 polls. `SOAK_POLLS`, `SOAK_KEYS` and `SOAK_REPORT_EVERY`
//! change them (e.g. `SOAK_POLLS=200 SOAK_REPORT_EVERY=50` for a short run).
//!
//! While it runs, the simulated server sees churn: every second a key created, one deleted and
//! two renamed (to names never used before, so nothing can be cached by name), and spend every
//! 100 ms. A scan that overlaps a create or delete fails as incomplete (the ids do not add up),
//! as it should; the report counts complete and failed polls apart. Meanwhile the
//! daemon is scraped four times a second: gzip on a kept-alive connection, gzip and plain text on
//! a new connection each. The daemon is its own process, so VmRSS, `/proc/PID/fd` and
//! `/proc/PID/task` are its alone. The verdict compares the figures after warm-up (the first
//! report after poll 0) with the last ones: RSS within 5 %, the same file descriptors.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cometapi_keymon::simulator::{SimToken, Simulator, SimulatorConfig};
use tokio_util::sync::CancellationToken;

#[path = "common/daemon.rs"]
mod daemon;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}")),
        Err(_) => default,
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    polls: u64,
    failed: u64,
    elapsed_s: f64,
    rss_kib: u64,
    fds: usize,
    threads: usize,
    keys: usize,
    scrapes: u64,
}

fn main() {
    let polls = env_number("SOAK_POLLS", 2_000);
    let keys = env_number("SOAK_KEYS", 5_000) as usize;
    let report_every = env_number("SOAK_REPORT_EVERY", 500).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let samples = runtime.block_on(soak(polls, keys, report_every));
    println!();
    println!("| polls (failed) | elapsed | RSS | open fds | threads | keys | scrapes |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for sample in &samples {
        println!(
            "| {} ({}) | {:.0} s | {:.1} MiB | {} | {} | {} | {} |",
            sample.polls,
            sample.failed,
            sample.elapsed_s,
            sample.rss_kib as f64 / 1024.0,
            sample.fds,
            sample.threads,
            sample.keys,
            sample.scrapes
        );
    }
    let warmed = samples.get(1).copied().unwrap_or(samples[0]);
    let last = *samples.last().unwrap();
    let peak_after_warmup = samples[1.min(samples.len() - 1)..]
        .iter()
        .map(|sample| sample.rss_kib)
        .max()
        .unwrap();
    let growth = (last.rss_kib as f64 / warmed.rss_kib as f64 - 1.0) * 100.0;
    let peak_growth = (peak_after_warmup as f64 / warmed.rss_kib as f64 - 1.0) * 100.0;
    let rss_flat = growth.abs() <= 5.0 && peak_growth <= 5.0;
    let fds_flat = samples[1.min(samples.len() - 1)..]
        .iter()
        .all(|sample| sample.fds == warmed.fds);
    println!();
    println!(
        "RSS after warm-up (poll {}) {:.1} MiB, last {:.1} MiB: {growth:+.1} % (peak {peak_growth:+.1} %) — {}",
        warmed.polls,
        warmed.rss_kib as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        if rss_flat { "flat within 5 %" } else { "GROWS" }
    );
    println!(
        "open fds after warm-up {}, last {} — {}",
        warmed.fds,
        last.fds,
        if fds_flat { "flat" } else { "CHANGED" }
    );
    if !(rss_flat && fds_flat) {
        std::process::exit(1);
    }
}

async fn soak(polls: u64, keys: usize, report_every: u64) -> Vec<Sample> {
    eprintln!("soak: {keys} keys, {polls} polls at 1/s, a report every {report_every} polls");
    let simulator = Arc::new(
        Simulator::start(
            SimulatorConfig {
                keys,
                max_tokens_per_user: usize::MAX,
                ..SimulatorConfig::default()
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("simulator starts"),
    );
    let daemon = daemon::start_daemon(
        &simulator,
        "soak",
        "interval = \"1s\"\ntimeout = \"10s\"\n",
        true,
    )
    .await;
    let mut child = daemon.child;
    let pid = child.id();
    let address = daemon.address;
    let metrics_url = format!("{address}/metrics");

    let stop = CancellationToken::new();
    let live_keys = Arc::new(Mutex::new(
        simulator
            .tokens()
            .into_iter()
            .map(|token| token.id)
            .collect::<Vec<i64>>(),
    ));
    tokio::spawn(churn(
        Arc::clone(&simulator),
        Arc::clone(&live_keys),
        stop.clone(),
    ));
    let scrapes = Arc::new(AtomicU64::new(0));
    tokio::spawn(scrape_loop(
        metrics_url.clone(),
        Arc::clone(&scrapes),
        stop.clone(),
    ));

    // Polls completed, read from the daemon's own histogram on a separate connection.
    let reader = reqwest::Client::new();
    let poll_count = || async {
        let text = reader
            .get(&metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let all = text
            .lines()
            .find_map(|line| {
                line.strip_prefix("cometapi_poll_duration_seconds_count{account=\"soak\"} ")
            })
            .and_then(|value| value.trim().parse::<u64>().ok())?;
        let failed: u64 = text
            .lines()
            .filter(|line| line.starts_with("cometapi_poll_errors_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        Some((all, failed))
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next_report = 0;
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited during the soak"
        );
        let (done, failed) = poll_count().await.unwrap_or((0, 0));
        if done >= next_report.max(1) {
            let sample = Sample {
                polls: done,
                failed,
                elapsed_s: started.elapsed().as_secs_f64(),
                rss_kib: proc_status_kib(pid, "VmRSS:"),
                fds: count_entries(&format!("/proc/{pid}/fd")),
                threads: count_entries(&format!("/proc/{pid}/task")),
                keys: live_keys.lock().unwrap().len(),
                scrapes: scrapes.load(Ordering::Relaxed),
            };
            eprintln!(
                "soak: poll {:>5} ({} failed)  {:>6.0} s  RSS {:>6.1} MiB  fds {:>3}  threads {:>3}  keys {}  scrapes {}",
                sample.polls,
                sample.failed,
                sample.elapsed_s,
                sample.rss_kib as f64 / 1024.0,
                sample.fds,
                sample.threads,
                sample.keys,
                sample.scrapes
            );
            samples.push(sample);
            if done >= polls {
                break;
            }
            next_report = (done / report_every + 1) * report_every;
            // The simulator records every request; keep the benchmark's own memory bounded.
            simulator.clear_requests();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.cancel();
    let peak_kib = proc_status_kib(pid, "VmHWM:");
    eprintln!("soak: daemon peak RSS {:.1} MiB", peak_kib as f64 / 1024.0);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    samples
}

/// Every 100 ms ten spends (one a refund); every second one key created, one deleted and two
/// renamed to names never seen before, so polls see a changed listing of about the same size.
/// (Creates and deletes every 100 ms would make nearly every 5,000-key scan incomplete.)
async fn churn(
    simulator: Arc<Simulator>,
    live_keys: Arc<Mutex<Vec<i64>>>,
    stop: CancellationToken,
) {
    let user_id = simulator
        .tokens()
        .first()
        .map(|token| token.user_id)
        .unwrap_or(5678);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut step: u64 = 0;
    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        step += 1;
        let mut ids = live_keys.lock().unwrap();
        if step.is_multiple_of(10) {
            let created = simulator.insert_token(SimToken {
                user_id,
                name: format!("soak-new-{step}"),
                remain_quota: 5_000_000,
                group: ["default", "vip", ""][(step % 3) as usize].into(),
                created_time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64,
                ..SimToken::default()
            });
            ids.push(created);
            if ids.len() > 1 {
                let index = (next() as usize) % ids.len();
                let removed = ids.swap_remove(index);
                simulator.delete_token(removed);
            }
            for rename in 0..2 {
                let id = ids[(next() as usize) % ids.len()];
                simulator.update_token(id, |token| {
                    token.name = format!("soak-renamed-{step}-{rename}");
                });
            }
        }
        for spend in 0..10 {
            let id = ids[(next() as usize) % ids.len()];
            let quota = if spend == 9 {
                -500
            } else {
                100 + (next() % 20_000) as i64
            };
            // Refused spends (disabled, exhausted, expired keys) are part of the traffic.
            let _ = simulator.consume(id, quota);
        }
    }
}

/// Four scrapes a second: gzip on a kept-alive connection, gzip on a new connection, plain text
/// on a new connection, and gzip kept-alive again.
async fn scrape_loop(url: String, scrapes: Arc<AtomicU64>, stop: CancellationToken) {
    let kept_alive = reqwest::Client::builder().no_gzip().build().unwrap();
    let fresh = reqwest::Client::builder()
        .no_gzip()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        round += 1;
        let (client, gzip) = match round % 4 {
            1 => (&fresh, true),
            2 => (&fresh, false),
            _ => (&kept_alive, true),
        };
        let mut request = client.get(&url);
        if gzip {
            request = request.header("Accept-Encoding", "gzip");
        }
        match request.send().await {
            Ok(response) if response.status() == 200 => {
                if response.bytes().await.is_ok() {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(response) => eprintln!("soak: scrape answered {}", response.status()),
            Err(error) => eprintln!("soak: scrape failed: {error}"),
        }
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn count_entries(directory: &str) -> usize {
    std::fs::read_dir(directory)
        .map(|entries| entries.count())
        .unwrap_or(0)
}
