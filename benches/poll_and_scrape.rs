//! Benchmark: requests per complete poll, poll wall time, /metrics size, scrape latency and
//! the daemon's peak RSS, for 1k, 10k and 100k keys; each size once with `[poll] usage = false`
//! and once with usage on and today's spend recorded for every key on 2 of 20 models (so the
//! spend by key and model adds 2 × 3 series per key), which shows what the account's money reads
//! add per poll (wallet, usage, subscriptions, plans) and per scrape.
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

use cometapi_keymon::simulator::{Simulator, SimulatorConfig, UsageRecord};

/// Models the spend is spread over; each key spends on two of them.
const MODELS: usize = 20;

const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");

struct Figures {
    keys: usize,
    usage: bool,
    requests: usize,
    /// Requests to the account's routes (/api/user, /api/data, /api/subscription).
    money_requests: usize,
    poll_seconds: f64,
    metrics_bytes: usize,
    gzip_bytes: usize,
    series: usize,
    gzip_median_ms: f64,
    gzip_p99_ms: f64,
    plain_median_ms: f64,
    plain_p99_ms: f64,
    peak_rss_mib: f64,
    /// nginx serving the same bytes from a file (`gzip_static` with a `.gz` copy), same client.
    nginx_gzip_median_ms: f64,
    nginx_plain_median_ms: f64,
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
        for usage in [false, true] {
            results.push(runtime.block_on(measure(keys, usage)));
        }
    }
    println!();
    println!("| keys | usage | requests/poll (account routes; list pages) | poll wall time | /metrics size (gzip) | series | scrape gzip median / p99 | scrape plain median / p99 | daemon peak RSS |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for figures in &results {
        println!(
            "| {} | {} | {} ({}; ceil(N/100) = {}) | {:.2} s | {:.1} MB ({:.1} MB) | {} | {:.2} / {:.2} ms | {:.1} / {:.1} ms | {:.1} MiB |",
            figures.keys,
            if figures.usage { "on, 2 of 20 models per key" } else { "off" },
            figures.requests,
            figures.money_requests,
            figures.keys.div_ceil(100),
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
    println!();
    println!("| keys | usage | scrape gzip median: daemon / nginx (same bytes) | scrape plain median: daemon / nginx |");
    println!("|---:|---|---:|---:|");
    for figures in &results {
        println!(
            "| {} | {} | {:.2} / {:.2} ms ({:.1}x) | {:.1} / {:.1} ms ({:.1}x) |",
            figures.keys,
            if figures.usage { "on" } else { "off" },
            figures.gzip_median_ms,
            figures.nginx_gzip_median_ms,
            figures.gzip_median_ms / figures.nginx_gzip_median_ms,
            figures.plain_median_ms,
            figures.nginx_plain_median_ms,
            figures.plain_median_ms / figures.nginx_plain_median_ms,
        );
    }
    for pair in results.chunks(2) {
        if let [off, on] = pair {
            println!(
                "{} keys: usage on adds {} series, {:.1} MB of text ({:.2} MB gzip), {} requests per poll",
                off.keys,
                on.series as i64 - off.series as i64,
                (on.metrics_bytes as f64 - off.metrics_bytes as f64) / 1e6,
                (on.gzip_bytes as f64 - off.gzip_bytes as f64) / 1e6,
                on.requests as i64 - off.requests as i64,
            );
        }
    }
}

async fn measure(keys: usize, usage: bool) -> Figures {
    eprintln!("seeding a simulated account with {keys} keys (usage {usage}) ...");
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
    if usage {
        let now = simulator.now();
        for (index, token) in simulator.tokens().into_iter().enumerate() {
            for model in [index % MODELS, (index + 7) % MODELS] {
                simulator.record_usage(UsageRecord {
                    at: now - 60,
                    token_id: token.id,
                    token_name: token.name.clone(),
                    use_group: if token.group.is_empty() {
                        "default".into()
                    } else {
                        token.group.clone()
                    },
                    model_name: format!("model-{model:02}"),
                    quota: 1_000 + index as i64,
                    tokens: 100 + model as i64,
                });
            }
        }
    }
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
            "[server]\nlisten = \"127.0.0.1:0\"\n[poll]\ninterval = \"1h\"\ntimeout = \"30s\"\nrequests_per_minute = 1000000\nusage = {usage}\n\
             [log]\nlevel = \"warn,cometapi_keymon::app=info\"\n[[accounts]]\nname = \"bench\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\n",
            simulator.base_url(),
            token_file.display(),
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
    let money_requests = simulator
        .requests()
        .iter()
        .filter(|request| {
            ["/api/user/", "/api/data/", "/api/subscription/"]
                .iter()
                .any(|prefix| request.path.starts_with(prefix))
        })
        .count();

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
    let gzip_body = gzip
        .get(format!("{address}/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (nginx_gzip_median_ms, nginx_plain_median_ms) =
        nginx_reference(directory.path(), text.as_bytes(), &gzip_body).await;
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status();
    let _ = child.wait();
    simulator.shutdown().await;
    let (gzip_median_ms, gzip_p99_ms) = median_and_p99(&mut gzip_timings);
    let (plain_median_ms, plain_p99_ms) = median_and_p99(&mut plain_timings);
    Figures {
        keys,
        usage,
        requests,
        money_requests,
        poll_seconds,
        metrics_bytes: text.len(),
        gzip_bytes,
        series,
        gzip_median_ms,
        gzip_p99_ms,
        plain_median_ms,
        plain_p99_ms,
        peak_rss_mib,
        nginx_gzip_median_ms,
        nginx_plain_median_ms,
    }
}

/// Median scrape times (gzip, plain) of nginx serving `plain` and its gzip copy `gzipped` (the
/// daemon's own gzip answer) from files, measured with the same client loop as the daemon.
async fn nginx_reference(directory: &std::path::Path, plain: &[u8], gzipped: &[u8]) -> (f64, f64) {
    let root = directory.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("metrics"), plain).unwrap();
    std::fs::write(root.join("metrics.gz"), gzipped).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prefix = directory.join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let config = prefix.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "worker_processes 1;\nerror_log {prefix}/error.log;\npid {prefix}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; default_type text/plain; gzip_static on;\n\
             client_body_temp_path {prefix}; proxy_temp_path {prefix}; fastcgi_temp_path {prefix};\n\
             uwsgi_temp_path {prefix}; scgi_temp_path {prefix};\n\
             server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            prefix = prefix.display(),
            root = root.display(),
        ),
    )
    .unwrap();
    let mut nginx = Command::new("nginx")
        .args([
            "-p",
            prefix.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "-g",
            "daemon off; user root;",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts (apt-get install nginx)");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let started = Instant::now();
    while client.get(&url).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut gzip_timings = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let body = client
            .get(&url)
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        gzip_timings.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(body.len(), gzipped.len(), "nginx serves the gzip copy");
    }
    let mut plain_timings = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        plain_timings.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(body.len(), plain.len());
    }
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", nginx.id())])
        .status();
    let _ = nginx.wait();
    (
        median_and_p99(&mut gzip_timings).0,
        median_and_p99(&mut plain_timings).0,
    )
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
