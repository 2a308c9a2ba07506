//! Shared helpers for the integration tests: a simulator and a daemon on 127.0.0.1, scraping,
//! and an independent parser of the Prometheus text format.
#![allow(dead_code)]

pub mod deploy;
pub mod process;
pub mod tls;
pub mod tools;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cometapi_keymon::app::{AppError, Daemon};
use cometapi_keymon::config::{
    AccountConfig, Config, ConfigSource, LogConfig, LogFormat, PollConfig, PollSchedule,
    ServerConfig, TokenSource,
};
use cometapi_keymon::metrics::Exporter;
use cometapi_keymon::secret::Secret;
use cometapi_keymon::simulator::{Simulator, SimulatorConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The fields a full PUT writes (new-api's `UpdateToken` whitelist), by their JSON names: the
/// tests' own list, independent of the crate's.
pub const EDITABLE_FIELDS: [&str; 9] = [
    "name",
    "expired_time",
    "remain_quota",
    "unlimited_quota",
    "model_limits_enabled",
    "model_limits",
    "allow_ips",
    "group",
    "cross_group_retry",
];

pub const LOOPBACK_ANY_PORT: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

pub async fn start_simulator(keys: usize) -> Simulator {
    start_simulator_with(SimulatorConfig {
        keys,
        ..SimulatorConfig::default()
    })
    .await
}

pub async fn start_simulator_with(config: SimulatorConfig) -> Simulator {
    Simulator::start(config, SocketAddr::from(LOOPBACK_ANY_PORT))
        .await
        .expect("simulator starts")
}

pub fn account_for(name: &str, simulator: &Simulator) -> AccountConfig {
    AccountConfig {
        name: name.into(),
        base_url: simulator.base_url(),
        token: Secret::new(simulator.access_token()),
        token_source: TokenSource::Env("TEST_TOKEN".into()),
        user_id: None,
        requests_per_minute: 6_000,
        usage: true,
    }
}

/// A configuration for tests: fast timeouts, one quick retry, generous request budget.
pub fn test_config(accounts: Vec<AccountConfig>, schedule: PollSchedule) -> Config {
    Config {
        server: ServerConfig {
            listen: SocketAddr::from(LOOPBACK_ANY_PORT),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 64,
            ..ServerConfig::default()
        },
        poll: PollConfig {
            schedule,
            timeout: Duration::from_millis(1_500),
            connect_timeout: Duration::from_millis(500),
            requests_per_minute: 6_000,
            max_body_bytes: 4 * 1024 * 1024,
            max_retries: 1,
            retry_backoff: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(2),
            usage: true,
        },
        log: LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        },
        accounts,
        source: ConfigSource::Environment,
        policy: None,
        warnings: Vec::new(),
    }
}

pub fn every(seconds: u64) -> PollSchedule {
    PollSchedule::Interval(Duration::from_secs(seconds))
}

pub struct TestDaemon {
    pub address: SocketAddr,
    pub exporter: Arc<Exporter>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), AppError>>,
}

impl TestDaemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(8), self.task).await;
        result
            .expect("daemon stops within 8 s")
            .expect("daemon task does not panic")
            .expect("daemon ends cleanly");
    }

    /// Plain-text scrape (no gzip), parsed.
    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.scrape_text(false).await)
    }

    pub async fn scrape_text(&self, gzip: bool) -> String {
        let client = reqwest::Client::builder();
        let client = if gzip { client } else { client.no_gzip() };
        let response = client
            .build()
            .unwrap()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        let encoding = response
            .headers()
            .get("content-encoding")
            .map(|value| value.to_str().unwrap().to_owned());
        // reqwest strips the header when it decodes; with no_gzip the server must not compress.
        if !gzip {
            assert_eq!(encoding, None, "no gzip unless asked for");
        }
        response.text().await.expect("scrape body")
    }

    /// Waits for the first complete poll of the account `main`.
    pub async fn first_poll(&self) -> Metrics {
        self.wait_for("the first poll", Duration::from_secs(20), |metrics| {
            metrics.up("main") == 1.0
        })
        .await
    }

    /// Waits until `condition` holds on a scrape, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let metrics = self.metrics().await;
            if condition(&metrics) {
                return metrics;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last scrape:\n{}",
                    metrics.health_lines()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A daemon polling one account named `main` on `simulator`.
pub async fn start_daemon_for(simulator: &Simulator, schedule: PollSchedule) -> TestDaemon {
    start_daemon(test_config(vec![account_for("main", simulator)], schedule)).await
}

pub async fn start_daemon(config: Config) -> TestDaemon {
    start_daemon_with_clock(config, cometapi_keymon::clock::Clock::system()).await
}

/// A daemon whose polls read `clock` (tests move it across midnight with the simulator's).
pub async fn start_daemon_with_clock(
    config: Config,
    clock: cometapi_keymon::clock::Clock,
) -> TestDaemon {
    let mut daemon = Daemon::bind(config).await.expect("daemon binds");
    daemon.set_clock(clock);
    let address = daemon.local_addr();
    let exporter = daemon.exporter();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(shutdown.clone()));
    TestDaemon {
        address,
        exporter,
        shutdown,
        task,
    }
}

/// One parsed exposition: series (name plus sorted labels) to value, and TYPE lines.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub series: BTreeMap<Series, f64>,
    pub types: BTreeMap<String, String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Series {
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Series {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        labels.sort();
        Series {
            name: name.into(),
            labels,
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

impl Metrics {
    /// Parses the text format independently of the daemon's own writer: label values with
    /// `\\`, `\"` and `\n` escapes, one sample per line.
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics {
            text: text.to_owned(),
            ..Metrics::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a kind");
                assert!(
                    metrics.types.insert(name.into(), kind.into()).is_none(),
                    "family {name} declared twice"
                );
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = parse_sample(line);
            assert!(
                metrics.series.insert(series.clone(), value).is_none(),
                "duplicate series {series:?}"
            );
        }
        metrics
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series.get(&Series::new(name, labels)).copied()
    }

    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }

    pub fn family(&self, name: &str) -> BTreeMap<Series, f64> {
        self.series
            .iter()
            .filter(|(series, _)| series.name == name)
            .map(|(series, value)| (series.clone(), *value))
            .collect()
    }

    pub fn up(&self, account: &str) -> f64 {
        self.value("cometapi_up", &[("account", account)])
    }

    pub fn errors(&self, account: &str, reason: &str) -> f64 {
        self.value(
            "cometapi_poll_errors_total",
            &[("account", account), ("reason", reason)],
        )
    }

    /// Only the per-key families (the part that must survive a failed poll unchanged), without
    /// the spend by key and model (`cometapi_key_model_*_total`, which follows the traffic).
    pub fn key_series(&self) -> BTreeMap<Series, f64> {
        self.series
            .iter()
            .filter(|(series, _)| {
                series.name.starts_with("cometapi_key_") && !is_key_model_spend(&series.name)
            })
            .map(|(s, v)| (s.clone(), *v))
            .collect()
    }

    pub fn health_lines(&self) -> String {
        self.text
            .lines()
            .filter(|line| !line.starts_with("cometapi_key_") && !line.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `cometapi_key_model_used_quota_total`, `_requests_total`, `_tokens_total` (not
/// `cometapi_key_model_restricted`).
pub fn is_key_model_spend(name: &str) -> bool {
    name.starts_with("cometapi_key_model_") && name.ends_with("_total")
}

/// Polls (complete and failed) of an account so far.
pub fn poll_count(metrics: &Metrics, account: &str) -> f64 {
    metrics
        .get(
            "cometapi_poll_duration_seconds_count",
            &[("account", account)],
        )
        .unwrap_or(0.0)
}

fn parse_sample(line: &str) -> (Series, f64) {
    let (name_end, has_labels) = match line.find(['{', ' ']) {
        Some(index) => (index, line.as_bytes()[index] == b'{'),
        None => panic!("sample without value: {line:?}"),
    };
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if has_labels {
        let mut characters = rest[1..].char_indices();
        let mut key = String::new();
        let closing_brace;
        loop {
            let (index, character) = characters.next().expect("unterminated labels");
            match character {
                '}' => {
                    closing_brace = index;
                    break;
                }
                ',' => continue,
                '=' => {
                    assert_eq!(
                        characters.next().map(|(_, c)| c),
                        Some('"'),
                        "label value starts with a quote: {line:?}"
                    );
                    let mut value = String::new();
                    loop {
                        let (_, character) = characters.next().expect("unterminated label value");
                        match character {
                            '"' => break,
                            '\\' => match characters.next().map(|(_, c)| c) {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => panic!("invalid escape {other:?} in {line:?}"),
                            },
                            '\n' => panic!("raw newline in label value"),
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
        rest = &rest[1 + closing_brace + 1..];
    }
    let value_text = rest.trim();
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        text => text
            .parse()
            .unwrap_or_else(|_| panic!("bad value {text:?} in {line:?}")),
    };
    labels.sort();
    (
        Series {
            name: name.into(),
            labels,
        },
        value,
    )
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Writes `token` and `keymon.toml` into `dir`: one account `main` on `simulator`, polled every
/// second, listening on any loopback port, with `policy` (TOML text, `[policy]` and rules)
/// appended. `state_dir = "state"` in the policy is relative to `dir`.
pub fn write_policy_config(
    dir: &std::path::Path,
    simulator: &Simulator,
    policy: &str,
) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let token = dir.join("token");
    std::fs::write(&token, simulator.access_token()).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("keymon.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[poll]\ninterval = \"1s\"\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\n\
             requests_per_minute = 6000\nretry_backoff = \"20ms\"\n\n[[accounts]]\nname = \"main\"\n\
             base_url = \"{}\"\ntoken_file = \"token\"\n\n{policy}\n",
            simulator.base_url()
        ),
    )
    .unwrap();
    config
}

/// The audit log of a policy state directory, one JSON value per line.
pub fn audit_entries(state_dir: &std::path::Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(state_dir.join("audit.jsonl")) {
        Ok(text) => text
            .lines()
            .map(|line| serde_json::from_str(line).expect("audit lines are JSON"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The id of the seeded key with this name.
pub fn seeded_id(simulator: &Simulator, name: &str) -> i64 {
    simulator
        .tokens()
        .into_iter()
        .find(|token| token.name == name)
        .unwrap_or_else(|| panic!("no seeded key named {name}"))
        .id
}
