//! Benchmark: requests per complete poll, poll wall time, /metrics size, scrape latency and
//! throughput side by side with nginx serving the same bytes, and the daemon's peak RSS, for 1k,
//! 10k and 100k keys; each size once with `[poll] usage = false` and once with usage on and
//! today's spend recorded for every key on 2 of 20 models (so the spend by key and model adds
//! 2 × 3 series per key), which shows what the account's money reads add per poll (wallet,
//! usage, subscriptions, plans) and per scrape.
//!
//! Run with `cargo bench --bench poll_and_scrape` (add `-- 10000 100000` to choose sizes). The
//! simulated management API runs in this process; the daemon is the release binary in its own
//! process, so its RSS (VmRSS, VmHWM from /proc) is its alone.
//!
//! The reference is Debian's nginx (`/usr/sbin/nginx`, started here as a child with a generated
//! config and a temporary prefix) serving the daemon's own `/metrics` body from files: the text
//! as `metrics.txt` and the daemon's gzip body as `metrics.txt.gz` (`gzip_static on`), so both
//! servers send the same bytes. Every timed scrape opens a new connection (`Connection: close`,
//! read to EOF), with the same in-bench client for both, ours and nginx's alternating.
//! Throughput at 8 concurrent clients is measured with `hey -c 8 -disable-keepalive`.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cometapi_keymon::simulator::{Simulator, SimulatorConfig, UsageRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "common/daemon.rs"]
mod daemon;
const NGINX: &str = "/usr/sbin/nginx";

/// Models the spend is spread over; each key spends on two of them.
const MODELS: usize = 20;

/// Median and p99 of one server's scrapes, in ms.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    median_ms: f64,
    p99_ms: f64,
}

/// Ours and nginx's figure for the same measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Pair<T> {
    ours: T,
    nginx: T,
}

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
    gzip: Pair<Latency>,
    plain: Pair<Latency>,
    gzip_rps: Pair<f64>,
    plain_rps: Pair<f64>,
    /// VmHWM after the gzip scrapes, before any plain one.
    rss_before_plain_mib: f64,
    /// VmHWM at the end.
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
        for usage in [false, true] {
            results.push(runtime.block_on(measure(keys, usage)));
        }
    }
    println!();
    println!("| keys | usage | requests/poll (account routes; list pages) | poll wall time | /metrics size (gzip) | series | daemon peak RSS: gzip scrapes only / after plain ones |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for figures in &results {
        println!(
            "| {} | {} | {} ({}; ceil(N/100) = {}) | {:.2} s | {:.1} MB ({:.1} MB) | {} | {:.1} MiB / {:.1} MiB |",
            figures.keys,
            if figures.usage { "on, 2 of 20 models per key" } else { "off" },
            figures.requests,
            figures.money_requests,
            figures.keys.div_ceil(100),
            figures.poll_seconds,
            figures.metrics_bytes as f64 / 1e6,
            figures.gzip_bytes as f64 / 1e6,
            figures.series,
            figures.rss_before_plain_mib,
            figures.peak_rss_mib,
        );
    }
    println!();
    println!("Ours (nginx): ratio. Latency: new connection per scrape; req/s: hey -c 8 -disable-keepalive.");
    println!();
    println!("| keys | usage | gzip median | gzip p99 | plain median | plain p99 | gzip req/s at 8 | plain req/s at 8 |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for figures in &results {
        let latency =
            |ours: f64, nginx: f64| format!("{} ({}): {:.2}×", ms(ours), ms(nginx), ours / nginx);
        let rate = |ours: f64, nginx: f64| format!("{ours:.0} ({nginx:.0}): {:.2}×", ours / nginx);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            figures.keys,
            if figures.usage { "on" } else { "off" },
            latency(figures.gzip.ours.median_ms, figures.gzip.nginx.median_ms),
            latency(figures.gzip.ours.p99_ms, figures.gzip.nginx.p99_ms),
            latency(figures.plain.ours.median_ms, figures.plain.nginx.median_ms),
            latency(figures.plain.ours.p99_ms, figures.plain.nginx.p99_ms),
            rate(figures.gzip_rps.ours, figures.gzip_rps.nginx),
            rate(figures.plain_rps.ours, figures.plain_rps.nginx),
        );
    }
    for pair in results.chunks(2) {
        if let [off, on] = pair {
            let extra_requests = on.requests as i64 - off.requests as i64;
            println!(
                "{} keys: usage on adds {} series, {:.1} MB of text ({:.2} MB gzip), {} request{} per poll",
                off.keys,
                on.series as i64 - off.series as i64,
                (on.metrics_bytes as f64 - off.metrics_bytes as f64) / 1e6,
                (on.gzip_bytes as f64 - off.gzip_bytes as f64) / 1e6,
                extra_requests,
                if extra_requests == 1 { "" } else { "s" },
            );
        }
    }
}

/// Milliseconds with two significant decimals below 10 ms, one below 100 ms.
fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2} ms")
    } else if value < 100.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.0} ms")
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
    let daemon = daemon::start_daemon(
        &simulator,
        "bench",
        &format!("interval = \"1h\"\ntimeout = \"30s\"\nusage = {usage}\n"),
        false,
    )
    .await;
    let mut child = daemon.child;
    let address = daemon.address;
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

    // The same bytes for nginx: the daemon's gzip body, and the text it holds. (Fetched with
    // gzip, so the daemon holds no plain copy until the plain scrapes below.)
    let gzip_body = gzip
        .get(format!("{address}/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut reference_text = Vec::new();
    flate2::read::GzDecoder::new(&gzip_body[..])
        .read_to_end(&mut reference_text)
        .unwrap();
    let text = String::from_utf8(reference_text.clone()).unwrap();
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
    let nginx = Nginx::start(&reference_text, &gzip_body);
    let ours_address: SocketAddr = address.trim_start_matches("http://").parse().unwrap();
    let mut client = RawClient::new(reference_text.len() + (1 << 20));

    let gzip_rounds = if keys >= 100_000 { 100 } else { 200 };
    let mut gzip_timings = Pair::<Vec<f64>>::default();
    for _ in 0..gzip_rounds {
        let received = client.scrape(ours_address, "/metrics", true).await;
        gzip_timings.ours.push(received.0);
        assert!(received.1 > gzip_body.len() / 2);
        let received = client.scrape(nginx.address, "/metrics.txt", true).await;
        gzip_timings.nginx.push(received.0);
        assert!(received.1 > gzip_body.len(), "nginx sent the .gz file");
    }
    let gzip_url = |base: String| (base, true);
    let gzip_requests = if keys >= 100_000 { 400 } else { 2_000 };
    let gzip_rps = Pair {
        ours: hey(gzip_url(format!("{address}/metrics")), gzip_requests),
        nginx: hey(
            gzip_url(format!("http://{}/metrics.txt", nginx.address)),
            gzip_requests,
        ),
    };
    let rss_before_plain_mib = peak_rss_kib(child.id()) as f64 / 1024.0;

    let plain_rounds = if keys >= 100_000 { 30 } else { 100 };
    let mut plain_timings = Pair::<Vec<f64>>::default();
    for _ in 0..plain_rounds {
        let received = client.scrape(ours_address, "/metrics", false).await;
        plain_timings.ours.push(received.0);
        assert!(received.1 > reference_text.len(), "the whole text");
        let received = client.scrape(nginx.address, "/metrics.txt", false).await;
        plain_timings.nginx.push(received.0);
        assert!(received.1 > reference_text.len(), "the whole text");
    }
    let plain_requests = if keys >= 100_000 { 200 } else { 800 };
    let plain_rps = Pair {
        ours: hey((format!("{address}/metrics"), false), plain_requests),
        nginx: hey(
            (format!("http://{}/metrics.txt", nginx.address), false),
            plain_requests,
        ),
    };
    let peak_rss_mib = peak_rss_kib(child.id()) as f64 / 1024.0;
    drop(nginx);
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status();
    let _ = child.wait();
    simulator.shutdown().await;
    Figures {
        keys,
        usage,
        requests,
        money_requests,
        poll_seconds,
        metrics_bytes: text.len(),
        gzip_bytes: gzip_body.len(),
        series,
        gzip: Pair {
            ours: latency(&mut gzip_timings.ours),
            nginx: latency(&mut gzip_timings.nginx),
        },
        plain: Pair {
            ours: latency(&mut plain_timings.ours),
            nginx: latency(&mut plain_timings.nginx),
        },
        gzip_rps,
        plain_rps,
        rss_before_plain_mib,
        peak_rss_mib,
    }
}

/// One GET per new connection, `Connection: close`, read to EOF: the same for both servers.
struct RawClient {
    buffer: Vec<u8>,
}

impl RawClient {
    fn new(capacity: usize) -> RawClient {
        RawClient {
            buffer: Vec::with_capacity(capacity),
        }
    }

    /// (milliseconds until the server closed, bytes received including the head)
    async fn scrape(&mut self, address: SocketAddr, path: &str, gzip: bool) -> (f64, usize) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Connection: close\r\n\r\n",
            if gzip {
                "Accept-Encoding: gzip\r\n"
            } else {
                ""
            }
        );
        self.buffer.clear();
        let started = Instant::now();
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.read_to_end(&mut self.buffer).await.unwrap();
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        assert!(
            self.buffer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&self.buffer[..self.buffer.len().min(200)])
        );
        (elapsed, self.buffer.len())
    }
}

/// Requests per second at 8 concurrent clients, a new connection per request.
fn hey((url, gzip): (String, bool), requests: usize) -> f64 {
    let mut command = Command::new("hey");
    command.args([
        "-n",
        &requests.to_string(),
        "-c",
        "8",
        "-disable-keepalive",
        "-disable-compression",
    ]);
    if gzip {
        command.args(["-H", "Accept-Encoding: gzip"]);
    }
    let output = command.arg(&url).output().expect("hey is installed");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("[200]\t") && !report.contains("Error distribution"),
        "hey against {url}:\n{report}"
    );
    report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in:\n{report}"))
}

/// Debian's nginx on 127.0.0.1 serving `metrics.txt` and `metrics.txt.gz` from a temporary
/// prefix; stopped (by its pid) when dropped.
struct Nginx {
    child: Child,
    address: SocketAddr,
    _prefix: tempfile::TempDir,
}

impl Nginx {
    fn start(text: &[u8], gzip: &[u8]) -> Nginx {
        let prefix = tempfile::tempdir().unwrap();
        let root = prefix.path().join("html");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("metrics.txt"), text).unwrap();
        std::fs::write(root.join("metrics.txt.gz"), gzip).unwrap();
        // nginx workers may run as nobody: let them read the files.
        for path in [prefix.path(), &root] {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let config = prefix.path().join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "daemon off;\nworker_processes auto;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
                 client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n\
                 uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n\
                 default_type \"text/plain; version=0.0.4; charset=utf-8\";\n\
                 server {{\n    listen {address};\n    root {root};\n    location / {{ gzip_static on; }}\n  }}\n}}\n",
                prefix = prefix.path().display(),
                root = root.display(),
            ),
        )
        .unwrap();
        let child = Command::new(NGINX)
            .args([
                "-p",
                prefix.path().to_str().unwrap(),
                "-c",
                config.to_str().unwrap(),
            ])
            .args(["-e", prefix.path().join("error.log").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            address,
            _prefix: prefix,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop; the master takes its workers along.
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -QUIT {}", self.child.id())])
            .status();
        let _ = self.child.wait();
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

fn latency(timings: &mut [f64]) -> Latency {
    timings.sort_by(f64::total_cmp);
    let at = |fraction: f64| timings[((timings.len() - 1) as f64 * fraction).round() as usize];
    Latency {
        median_ms: at(0.5),
        p99_ms: at(0.99),
    }
}
