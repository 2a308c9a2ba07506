//! End to end with the real Prometheus server from Debian's `prometheus` package: the daemon
//! binary polls the in-process simulator every second, Prometheus (on loopback) scrapes it every
//! second and evaluates the shipped `deploy/prometheus/alerts.yml`, with the `for:` durations
//! shortened by this test (the shipped file keeps realistic ones). Through Prometheus' HTTP API
//! the test checks that the key series arrive with exactly the simulator's values, that every
//! dashboard query evaluates without error, that the expired and exhausted alerts fire for
//! exactly the right keys while no exporter alert does, that the wallet and subscription alerts
//! fire for exactly the low wallet and the active subscription ending soon, and that
//! CometAPIExporterDown fires once the daemon is stopped. Every process is stopped by its pid, also when an assertion fails.
//!
//! Over 600 lines on purpose: one real-Prometheus scenario per alert group, sharing one harness.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cometapi_keymon::simulator::{SimToken, STATUS_DISABLED, STATUS_EXHAUSTED};
use serde_json::Value;
use support::deploy::*;
use support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");
const JOB_NAME: &str = "cometapi-keymon";
const KEYS: usize = 30;
const EXPIRED_STILL_ENABLED: &str = "1005";
const EXHAUSTED: &str = "1007";
const EXPIRES_WITHIN_A_DAY: &str = "1011";
const EXPIRES_WITHIN_A_WEEK: &str = "1012";
/// Dashboard panels allowed to be empty here: there is no Prometheus data from 24 h ago.
const PANELS_EMPTY_WITHOUT_HISTORY: &[&str] = &["Top spenders, last 24 h (USD)"];

/// A dry-run policy whose plan (every limited key topped up) is over its limit of one action,
/// so the circuit opens and CometAPIPolicyCircuitOpen fires; and a scheduled rule, so every
/// policy family has series. Dry run: nothing is written, the simulator's records stay as seeded.
const DRY_RUN_POLICY: &str = "[policy]\nstate_dir = \"state\"\nmax_actions_per_poll = 1\n\
    [[policy.rules]]\nname = \"everyone\"\naction = \"top_up\"\ntop_up.to = 400000000000\n\
    [[policy.rules]]\nname = \"nightly\"\naction = \"top_up\"\ngroups = [\"vip\"]\n\
    top_up.to = 1000\nschedule = \"0 0 0 * * *\"\n";

/// A child process with its output in a log file; killed by its pid when dropped.
struct ChildProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> ChildProcess {
        let output = File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| panic!("{name} starts: {error}"));
        ChildProcess { name, child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM by pid (the shell's builtin `kill`), then waits for the exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id();
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid} ({})", self.name);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} ignored SIGTERM for 15 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill sends SIGKILL to this child's pid only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_loopback_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts `cometapi-keymon run` on an ephemeral port and returns it with its `host:port`.
fn start_daemon_binary(directory: &Path, base_url: &str, token: &str) -> (ChildProcess, String) {
    let token_file = directory.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = directory.join("keymon.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[poll]\ninterval = \"1s\"\ntimeout = \"2s\"\n\
             requests_per_minute = 6000\n\n[[accounts]]\nname = \"main\"\nbase_url = \"{base_url}\"\n\
             token_file = \"{}\"\n\n{DRY_RUN_POLICY}",
            token_file.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(BINARY);
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("COMETAPI_ACCESS_TOKEN");
    let mut daemon = ChildProcess::spawn(
        "cometapi-keymon",
        &mut command,
        directory.join("daemon.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = daemon.log_text();
        if let Some(start) = log.find("address=http://") {
            let address: String = log[start + "address=http://".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            return (daemon, address);
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("the daemon exited early with {status}:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not log its address:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shipped alerts.yml with every `for:` cut to 1 s, so alerts fire within seconds; the
/// expressions are untouched.
fn alerts_with_short_for_durations() -> String {
    let shipped = read_text("deploy/prometheus/alerts.yml");
    let mut shortened = 0;
    let text: Vec<String> = shipped
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for: ") {
            Some(_) => {
                shortened += 1;
                format!("{}for: 1s", &line[..line.len() - line.trim_start().len()])
            }
            None => line.to_owned(),
        })
        .collect();
    assert!(
        shortened >= 10,
        "only {shortened} `for:` lines found in alerts.yml"
    );
    text.join("\n") + "\n"
}

fn start_prometheus(directory: &Path, target: &str) -> (ChildProcess, String) {
    std::fs::write(
        directory.join("alerts.yml"),
        alerts_with_short_for_durations(),
    )
    .unwrap();
    std::fs::write(
        directory.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - alerts.yml\n\
             scrape_configs:\n  - job_name: {JOB_NAME}\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_loopback_port());
    let mut command = Command::new(prometheus_tool("prometheus"));
    command.current_dir(directory).args([
        format!(
            "--config.file={}",
            directory.join("prometheus.yml").display()
        ),
        format!("--storage.tsdb.path={}", directory.join("data").display()),
        format!("--web.listen-address={address}"),
    ]);
    let prometheus =
        ChildProcess::spawn("prometheus", &mut command, directory.join("prometheus.log"));
    (prometheus, format!("http://{address}"))
}

struct PrometheusApi {
    client: reqwest::Client,
    base: String,
}

impl PrometheusApi {
    async fn wait_ready(&self, prometheus: &ChildProcess) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .client
                .get(format!("{}/-/ready", self.base))
                .send()
                .await;
            if ready.is_ok_and(|response| response.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready after 30 s:\n{}",
                prometheus.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .expect("Prometheus answers");
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// An instant query: (labels, value) of every resulting series.
    async fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.get("/api/v1/query", &[("query", promql)]).await;
        assert_eq!(data["resultType"], "vector", "{promql}");
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| {
                let labels = serde_json::from_value(sample["metric"].clone()).unwrap();
                let value = sample["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// key_id → value of a per-key family of account main.
    async fn per_key(&self, metric: &str) -> BTreeMap<String, f64> {
        self.query(&format!("{metric}{{job=\"{JOB_NAME}\",account=\"main\"}}"))
            .await
            .into_iter()
            .map(|(labels, value)| (labels["key_id"].clone(), value))
            .collect()
    }

    /// Active alerts: (alertname, state, labels).
    async fn alerts(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        let data = self.get("/api/v1/alerts", &[]).await;
        data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(alert["labels"].clone()).unwrap();
                (
                    labels["alertname"].clone(),
                    alert["state"].as_str().unwrap().to_owned(),
                    labels,
                )
            })
            .collect()
    }

    /// key_ids of the firing alerts named `alertname`, with the `name` label each carries.
    async fn firing_keys(&self, alertname: &str) -> BTreeMap<String, String> {
        self.alerts()
            .await
            .into_iter()
            .filter(|(name, state, _)| name == alertname && state == "firing")
            .map(|(_, _, labels)| (labels["key_id"].clone(), labels["name"].clone()))
            .collect()
    }
}

/// Polls `check` until it returns Some, or panics after `timeout` with the last state.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn ids_and_names(tokens: &[&SimToken]) -> BTreeMap<String, String> {
    tokens
        .iter()
        .map(|token| (token.id.to_string(), token.name.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_and_fires_the_shipped_alerts() {
    if !tools::tools_available(&["prometheus", "promtool"]) {
        return;
    }
    let started = Instant::now();
    // Declared first, dropped last: the processes below are killed before their files go.
    let directory = tempfile::tempdir().unwrap();
    let simulator = start_simulator(KEYS).await;
    // The account's money: some spend today, a wallet of 4 USD, and the active subscription
    // ending in 3 days with 95 % used, so the account alerts have something to fire on.
    let spender = seeded_id(&simulator, "never-used");
    for (model, quota) in [
        ("gpt-4.1", 3_000),
        ("claude-sonnet-4", 2_000),
        ("gpt-4.1", 500),
    ] {
        simulator
            .consume_model(spender, model, quota, quota / 5)
            .unwrap();
    }
    simulator.update_wallet(|wallet| wallet.quota = 2_000_000);
    let active_subscription = simulator
        .subscriptions()
        .into_iter()
        .find(|subscription| subscription.status == "active")
        .expect("the seeded active subscription");
    simulator.update_subscription(active_subscription.id, |subscription| {
        subscription.end_time = unix_now() + 3 * 86_400;
        subscription.amount_used = subscription.amount_total / 100 * 95;
    });
    let (mut daemon, target) = start_daemon_binary(
        directory.path(),
        &simulator.base_url(),
        &simulator.access_token(),
    );
    let (mut prometheus, base) = start_prometheus(directory.path(), &target);
    let api = PrometheusApi {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base,
    };
    api.wait_ready(&prometheus).await;

    // The first scrape of a complete poll.
    let daemon_log = || daemon.log_text();
    eventually(
        "cometapi_up == 1 in Prometheus",
        Duration::from_secs(30),
        || async {
            let up = api
                .query(&format!(
                    "cometapi_up{{job=\"{JOB_NAME}\",account=\"main\"}}"
                ))
                .await;
            match up.first() {
                Some((_, value)) if *value == 1.0 => Ok(()),
                other => Err(format!("{other:?}\n{}", daemon_log())),
            }
        },
    )
    .await;

    // Exact values, compared with the simulator's records (no traffic runs: they are static).
    let tokens = simulator.tokens();
    assert_eq!(tokens.len(), KEYS);
    let info = api.per_key("cometapi_key_info").await;
    assert_eq!(info.len(), KEYS, "one cometapi_key_info per key");
    let remaining = api.per_key("cometapi_key_remaining_quota").await;
    let expected_remaining: BTreeMap<String, f64> = tokens
        .iter()
        .filter(|token| !token.unlimited_quota)
        .map(|token| (token.id.to_string(), token.remain_quota as f64))
        .collect();
    assert_eq!(
        remaining, expected_remaining,
        "remaining quota of every limited key"
    );
    assert_eq!(remaining["1002"], -4_200.0, "overdrawn-still-enabled");
    let used = api.per_key("cometapi_key_used_quota").await;
    let expected_used: BTreeMap<String, f64> = tokens
        .iter()
        .map(|token| (token.id.to_string(), token.used_quota as f64))
        .collect();
    assert_eq!(used, expected_used, "used quota of every key");
    let expiration = api
        .per_key("cometapi_key_expiration_timestamp_seconds")
        .await;
    let expected_expiration: BTreeMap<String, f64> = tokens
        .iter()
        .filter(|token| token.expired_time != -1)
        .map(|token| (token.id.to_string(), token.expired_time as f64))
        .collect();
    assert_eq!(
        expiration, expected_expiration,
        "expiry of every expiring key"
    );
    assert_eq!(
        api.per_key("cometapi_key_usable").await[EXPIRED_STILL_ENABLED],
        0.0
    );
    let exhausted_count = api
        .query(&format!(
            "cometapi_keys{{job=\"{JOB_NAME}\",account=\"main\",status=\"exhausted\"}}"
        ))
        .await;
    let expected_exhausted_count = tokens
        .iter()
        .filter(|token| token.status == STATUS_EXHAUSTED)
        .count() as f64;
    assert_eq!(exhausted_count[0].1, expected_exhausted_count);
    let per_unit = api.query("cometapi_quota_per_unit").await;
    assert_eq!(per_unit[0].1, simulator.quota_per_unit());
    let wallet = api.query("cometapi_account_quota").await;
    assert_eq!(wallet[0].1, simulator.wallet().quota as f64, "the wallet");
    let spend = api
        .query("sum(cometapi_key_model_used_quota_total{model=\"gpt-4.1\"})")
        .await;
    assert_eq!(spend[0].1, 3_500.0, "today's spend on one model");

    // The alerts: exactly the keys past expiry / out of quota that are not disabled.
    let now = unix_now();
    let expired: Vec<&SimToken> = tokens
        .iter()
        .filter(|t| t.expired_time != -1 && t.expired_time < now && t.status != STATUS_DISABLED)
        .collect();
    let exhausted: Vec<&SimToken> = tokens
        .iter()
        .filter(|t| !t.unlimited_quota && t.remain_quota <= 0 && t.status != STATUS_DISABLED)
        .collect();
    let expected_expired = ids_and_names(&expired);
    let expected_exhausted = ids_and_names(&exhausted);
    assert_eq!(
        expected_expired[EXPIRED_STILL_ENABLED],
        "expired-still-enabled"
    );
    assert_eq!(expected_exhausted[EXHAUSTED], "exhausted");
    for (alertname, expected) in [
        ("CometAPIKeyExpired", &expected_expired),
        ("CometAPIKeyQuotaExhausted", &expected_exhausted),
    ] {
        eventually(alertname, Duration::from_secs(30), || async {
            let firing = api.firing_keys(alertname).await;
            if &firing == expected {
                Ok(())
            } else {
                Err(format!("firing {firing:?}, expected {expected:?}"))
            }
        })
        .await;
    }
    let critical = api.firing_keys("CometAPIKeyExpiringCritical").await;
    let soon = api.firing_keys("CometAPIKeyExpiringSoon").await;
    assert!(critical.contains_key(EXPIRES_WITHIN_A_DAY), "{critical:?}");
    assert!(
        !critical.contains_key(EXPIRES_WITHIN_A_WEEK),
        "{critical:?}"
    );
    assert!(soon.contains_key(EXPIRES_WITHIN_A_WEEK), "{soon:?}");
    // A healthy exporter: none of the exporter alerts is even pending.
    let exporter_alerts: BTreeSet<String> = alert_names_of_group("cometapi-exporter");
    let active: Vec<_> = api
        .alerts()
        .await
        .into_iter()
        .filter(|(name, _, _)| exporter_alerts.contains(name))
        .collect();
    assert!(
        active.is_empty(),
        "exporter alerts active while healthy: {active:?}"
    );

    // The dry-run plan is over its limit: the circuit-open alert fires for the account.
    eventually(
        "CometAPIPolicyCircuitOpen",
        Duration::from_secs(30),
        || async {
            let alerts = api.alerts().await;
            let open = alerts.iter().any(|(name, state, labels)| {
                name == "CometAPIPolicyCircuitOpen"
                    && state == "firing"
                    && labels["account"] == "main"
            });
            if open {
                Ok(())
            } else {
                Err(format!("{alerts:?}"))
            }
        },
    )
    .await;

    // The account alerts: the wallet below 10 USD and (spent fast from now on) predicted to run
    // out; the active subscription ending within 7 days and almost used up, the expired one not.
    let wallet_spender = simulator.clone();
    let spending = tokio::spawn(async move {
        loop {
            wallet_spender.update_wallet(|wallet| {
                wallet.quota -= 20_000;
                wallet.used_quota += 20_000;
            });
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let active_id = active_subscription.id.to_string();
    for (alertname, label, expected) in [
        ("CometAPIWalletLow", "account", "main"),
        ("CometAPIWalletExhaustionPredicted", "account", "main"),
        (
            "CometAPISubscriptionEndingSoon",
            "subscription_id",
            active_id.as_str(),
        ),
        (
            "CometAPISubscriptionAlmostUsed",
            "subscription_id",
            active_id.as_str(),
        ),
    ] {
        eventually(alertname, Duration::from_secs(30), || async {
            let firing: BTreeSet<String> = api
                .alerts()
                .await
                .into_iter()
                .filter(|(name, state, _)| name == alertname && state == "firing")
                .map(|(_, _, labels)| labels[label].clone())
                .collect();
            if firing == BTreeSet::from([expected.to_owned()]) {
                Ok(())
            } else {
                Err(format!("firing {firing:?}, expected {expected}"))
            }
        })
        .await;
    }
    spending.abort();

    // Every dashboard query evaluates against the real data; all but a known few return series.
    let dashboard = read_json(DASHBOARD);
    for (id, title, reference, expression) in dashboard_queries(&dashboard) {
        let result = api.query(&with_variables_substituted(&expression)).await;
        if !PANELS_EMPTY_WITHOUT_HISTORY.contains(&title.as_str()) {
            assert!(
                !result.is_empty(),
                "dashboard panel {id} ({title}) query {reference} returns nothing: {expression}"
            );
        }
    }

    // Stop the daemon: Prometheus' scrapes fail and CometAPIExporterDown fires for it.
    let status = daemon.terminate();
    assert!(
        status.success(),
        "the daemon exits cleanly on SIGTERM: {status}"
    );
    eventually("CometAPIExporterDown", Duration::from_secs(30), || async {
        let alerts = api.alerts().await;
        let down = alerts.iter().any(|(name, state, labels)| {
            name == "CometAPIExporterDown" && state == "firing" && labels["instance"] == target
        });
        if down {
            Ok(())
        } else {
            Err(format!("{alerts:?}"))
        }
    })
    .await;

    let status = prometheus.terminate();
    assert!(status.success(), "Prometheus exits cleanly: {status}");
    simulator.shutdown().await;
    eprintln!(
        "end-to-end test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Alert names of one group of the shipped alerts.yml.
fn alert_names_of_group(group: &str) -> BTreeSet<String> {
    let alerts = read_yaml("deploy/prometheus/alerts.yml");
    alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"] == group)
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|rule| rule["alert"].as_str().unwrap().to_owned())
        .collect()
}
