//! Benchmark: requests per complete poll, poll wall time, /metrics size, scrape latency and
//! the daemon's peak RSS, for 1k, 10k and 100k keys.
//!
//! Run with `cargo bench --bench poll_and_scrape` (add `-- 1000 10000` to choose sizes). The
//! simulated management API runs in this process; the daemon is the release binary in its own
//! process, so its peak RSS (VmHWM from /proc) is its alone. Scrapes ask for gzip, as Prometheus
//! does; plain-text scrapes are measured separately.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cometapi_keymon::simulator::{Simulator, SimulatorConfig};

const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");

struct Figures {
    keys: usize,
    requests: usize,
    poll_seconds: f64,
    metrics_bytes: usize,
    gzip_bytes: usize,
    series: usize,
    gzip_median_ms: f64,
    gzip_p99_ms: f64,
    plain_median_ms: f64,
    plain_p99_ms: f64,
    peak_rss_mib: f64,
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|argument| argument.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut results = Vec::new();
    for keys in sizes {
        results.push(runtime.block_on(measure(keys)));
    }
    println!();
    println!("| keys | requests/poll | poll wall time | /metrics size (gzip) | series | scrape gzip median / p99 | scrape plain median / p99 | daemon peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for figures in results {
        println!(
            "| {} | {} (ceil(N/100)+1 = {}) | {:.2} s | {:.1} MB ({:.1} MB) | {} | {:.2} / {:.2} ms | {:.1} / {:.1} ms | {:.1} MiB |",
            figures.keys,
            figures.requests,
            figures.keys.div_ceil(100) + 1,
            figures.poll_seconds,
            figures.metrics_bytes as f64 / 1e6,
            figures.gzip_bytes as f64 / 1e6,
            figures.series,
            figures.gzip_median_ms,
            figures.gzip_p99_ms,
            figures.plain_median_ms,
            figures.plain_p99_ms,
            figures.peak_rss_mib,
        );
    }
}

async fn measure(keys: usize) -> Figures {
    eprintln!("seeding a simulated account with {keys} keys ...");
    let simulator = Simulator::start(
        SimulatorConfig {
            keys,
            max_tokens_per_user: usize::MAX,
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");
    let directory = tempfile::tempdir().unwrap();
    let token_file = directory.path().join("token");
    std::fs::write(&token_file, simulator.access_token()).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = directory.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[poll]\ninterval = \"1h\"\ntimeout = \"30s\"\nrequests_per_minute = 1000000\n\
             [log]\nlevel = \"warn,cometapi_keymon::app=info\"\n[[accounts]]\nname = \"bench\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\n",
            simulator.base_url(),
            token_file.display()
        ),
    )
    .unwrap();

    let mut child = Command::new(BINARY)
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let log = Arc::new(Mutex::new(String::new()));
    let captured = Arc::clone(&log);
    let reader = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            captured.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let address = loop {
        let text = log.lock().unwrap().clone();
        if let Some(start) = text.find("address=http://") {
            break text[start + "address=".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect::<String>();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon exited:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let plain = reqwest::Client::builder().no_gzip().build().unwrap();
    let gzip = reqwest::Client::builder().no_gzip().build().unwrap();
    let started = Instant::now();
    while plain
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the first poll did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let text = plain
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let poll_seconds = sample(
        &text,
        "cometapi_poll_duration_seconds_sum{account=\"bench\"}",
    );
    let series = text.lines().filter(|line| !line.starts_with('#')).count();
    let requests = simulator.requests().len();

    let mut gzip_timings = Vec::new();
    let mut gzip_bytes = 0;
    for _ in 0..200 {
        let start = Instant::now();
        let body = gzip
            .get(format!("{address}/metrics"))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        gzip_timings.push(start.elapsed().as_secs_f64() * 1e3);
        gzip_bytes = body.len();
    }
    let mut plain_timings = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        let body = plain
            .get(format!("{address}/metrics"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        plain_timings.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(body.len(), text.len());
    }
    let peak_rss_mib = peak_rss_kib(child.id()) as f64 / 1024.0;
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status();
    let _ = child.wait();
    simulator.shutdown().await;
    let (gzip_median_ms, gzip_p99_ms) = median_and_p99(&mut gzip_timings);
    let (plain_median_ms, plain_p99_ms) = median_and_p99(&mut plain_timings);
    Figures {
        keys,
        requests,
        poll_seconds,
        metrics_bytes: text.len(),
        gzip_bytes,
        series,
        gzip_median_ms,
        gzip_p99_ms,
        plain_median_ms,
        plain_p99_ms,
        peak_rss_mib,
    }
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median_and_p99(timings: &mut [f64]) -> (f64, f64) {
    timings.sort_by(f64::total_cmp);
    let at = |fraction: f64| timings[((timings.len() - 1) as f64 * fraction).round() as usize];
    (at(0.5), at(0.99))
}
