//! The binary with a web config, as operators run it: Debian's real Prometheus scrapes it over
//! TLS with basic auth (`up` 1 with the right password, 0 with a wrong one or without TLS),
//! and TLS handshakes that never finish are closed after the timeout and logged as one
//! summary line, not one line per connection. Every process is stopped by its pid.

mod support;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::deploy::prometheus_tool;
use support::process::DaemonProcess;
use support::tls::*;
use support::*;

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-me-please";

/// Prometheus, killed by its pid when dropped.
struct Prometheus {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A token file, a web config with TLS and one user, and keymon.toml; returns its path.
fn write_daemon_files(directory: &Path, base_url: &str, token: &str, ca: &TestCa) -> String {
    write(directory, "token", &format!("{token}\n"));
    std::fs::set_permissions(
        directory.join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    write_pair(directory, &ca.server("keymon"));
    write(
        directory,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  {USER}: {}\n",
            bcrypt_hash(PASSWORD)
        ),
    );
    let config = write(
        directory,
        "keymon.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\n\
             web_config_file = \"web.yml\"\n\n[poll]\ninterval = \"1s\"\n\
             requests_per_minute = 6000\n\n[[accounts]]\nname = \"main\"\n\
             base_url = \"{base_url}\"\ntoken_file = \"token\"\n"
        ),
    );
    config.display().to_string()
}

fn host_port(address: &str) -> String {
    address
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

async fn query(client: &reqwest::Client, base: &str, promql: &str) -> Vec<(Value, f64)> {
    let Ok(response) = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
    else {
        return Vec::new();
    };
    let Ok(text) = response.text().await else {
        return Vec::new();
    };
    let Ok(body) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|sample| {
            let value = sample["value"][1]
                .as_str()
                .unwrap_or("nan")
                .parse()
                .unwrap();
            (sample["metric"].clone(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_with_basic_auth_and_a_wrong_password_is_down() {
    if !support::tools::tools_available(&["prometheus", "promtool"]) {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path();
    let simulator = start_simulator(12).await;
    let ca = TestCa::new("test CA");
    let config = write_daemon_files(path, &simulator.base_url(), &simulator.access_token(), &ca);
    let daemon = DaemonProcess::start(&["run", "--config", &config], &[]);
    assert!(daemon.address.starts_with("https://"), "{}", daemon.address);
    let target = host_port(&daemon.address);

    write(path, "ca.crt", &ca.certificate);
    write(path, "password", PASSWORD);
    write(path, "wrong-password", "not-the-password");
    let job = |name: &str, scheme: &str, password_file: &str| {
        format!(
            "  - job_name: {name}\n    scheme: {scheme}\n    tls_config:\n      ca_file: ca.crt\n      \
             server_name: localhost\n    basic_auth:\n      username: {USER}\n      \
             password_file: {password_file}\n    static_configs:\n      - targets: [\"{target}\"]\n"
        )
    };
    write(
        path,
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}{}",
            job("keymon-tls", "https", "password"),
            job("keymon-wrong-password", "https", "wrong-password"),
            job("keymon-plain-http", "http", "password"),
        ),
    );
    let (valid, report) = support::deploy::promtool(path, &["check", "config", "prometheus.yml"]);
    assert!(valid, "promtool check config: {report}");

    let listen = format!("127.0.0.1:{}", free_loopback_port());
    let log = path.join("prometheus.log");
    let output = File::create(&log).unwrap();
    let prometheus = Prometheus {
        child: Command::new(prometheus_tool("prometheus"))
            .current_dir(path)
            .args([
                "--config.file=prometheus.yml".to_owned(),
                format!("--storage.tsdb.path={}", path.join("data").display()),
                format!("--web.listen-address={listen}"),
            ])
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("prometheus starts"),
        log,
    };
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();

    // What the daemon itself serves after its first poll, to compare Prometheus' series with.
    let direct_client = https_client(&ca.certificate, None);
    let direct_url = format!(
        "https://localhost:{}/metrics",
        target.rsplit(':').next().unwrap()
    );
    let first_poll_deadline = Instant::now() + Duration::from_secs(20);
    let direct_key_series = loop {
        let response = direct_client
            .get(&direct_url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let metrics = Metrics::parse(&response.text().await.unwrap());
        if metrics.up("main") == 1.0 {
            break metrics.family("cometapi_key_remaining_quota").len();
        }
        assert!(Instant::now() < first_poll_deadline, "no first poll");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(45);
    let expected = [
        ("keymon-tls", 1.0),
        ("keymon-wrong-password", 0.0),
        ("keymon-plain-http", 0.0),
    ];
    loop {
        let up = query(&client, &base, "up").await;
        let seen: Vec<(String, f64)> = up
            .iter()
            .map(|(labels, value)| (labels["job"].as_str().unwrap_or("").to_owned(), *value))
            .collect();
        let keys = query(&client, &base, "cometapi_key_remaining_quota").await;
        let all_there = expected
            .iter()
            .all(|(job, value)| seen.iter().any(|(name, up)| name == job && up == value));
        if all_there && !keys.is_empty() && keys.len() == direct_key_series {
            assert!(
                keys.iter().all(|(labels, _)| labels["job"] == "keymon-tls"),
                "series only from the job with the password: {keys:?}"
            );
            break;
        }
        let last = format!("up: {seen:?}; key series: {}", keys.len());
        assert!(
            Instant::now() < deadline,
            "Prometheus did not reach the expected targets: {last}\n{}",
            std::fs::read_to_string(&prometheus.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Prometheus says why the wrong password is down.
    let targets: Value = serde_json::from_str(
        &client
            .get(format!("{base}/api/v1/targets"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let wrong = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|target| target["labels"]["job"] == "keymon-wrong-password")
        .unwrap();
    assert!(
        wrong["lastError"].as_str().unwrap_or("").contains("401"),
        "{wrong}"
    );
    drop(prometheus);
    let (clean, _, logs) = daemon.terminate();
    assert!(clean, "{logs}");
    assert!(!logs.contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_are_closed_and_logged_as_one_summary_line() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path();
    let simulator = start_simulator(3).await;
    let ca = TestCa::new("test CA");
    let config = write_daemon_files(path, &simulator.base_url(), &simulator.access_token(), &ca);
    let daemon = DaemonProcess::start(&["run", "--config", &config], &[]);
    let target = host_port(&daemon.address);

    // Fewer than max_connections_per_peer (32 by default): past it, connections from this one
    // address are refused at accept, before any handshake (tests/http_limits.rs).
    const STALLED: usize = 24;
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(std::net::TcpStream::connect(&target).unwrap());
    }
    // One garbage handshake (plain HTTP to the TLS port) fails at once.
    {
        use std::io::{Read, Write};
        let mut plain = std::net::TcpStream::connect(&target).unwrap();
        plain
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buffer = Vec::new();
        let _ = plain.read_to_end(&mut buffer);
    }
    // header_read_timeout (1 s) bounds the handshake: each stalled connection is closed.
    for mut stream in stalled {
        use std::io::Read;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 16];
        let read = stream.read(&mut buffer);
        assert!(matches!(read, Ok(0)), "expected closed, got {read:?}");
    }
    let client = https_client(&ca.certificate, None);
    let response = client
        .get(format!(
            "https://localhost:{}/healthz",
            target.rsplit(':').next().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (clean, _, logs) = daemon.terminate();
    assert!(clean, "{logs}");
    let summaries: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("TLS handshakes failed"))
        .collect();
    let total: usize = summaries
        .iter()
        .map(|line| {
            let start =
                line.find("failed_handshakes=").expect("a count") + "failed_handshakes=".len();
            line[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, STALLED + 1, "{logs}");
    assert!(
        !summaries.is_empty() && summaries.len() <= 2,
        "one summary per interval, not one line per connection:\n{logs}"
    );
    let warnings = logs.lines().filter(|line| line.contains(" WARN ")).count();
    assert_eq!(warnings, summaries.len(), "no other warnings:\n{logs}");
}
