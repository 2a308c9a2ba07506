//! The real binary as an operator runs it: exit codes and messages for bad configuration,
//! env-only mode, SIGTERM, secrets kept out of every output, and `promtool check metrics`.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cometapi_keymon::simulator::{Fault, FaultEndpoint, FaultKind, FaultTimes, Simulator};
use support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");

use support::process::DaemonProcess;

fn write_token_file(directory: &Path, token: &str) -> PathBuf {
    let path = directory.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn write_config(directory: &Path, simulator: &Simulator, extra_poll: &str) -> PathBuf {
    let token_file = write_token_file(directory, &simulator.access_token());
    let path = directory.join("keymon.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[poll]\ninterval = \"1s\"\ntimeout = \"2s\"\nrequests_per_minute = 6000\n{extra_poll}\n\n\
         [[accounts]]\nname = \"main\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\n",
        simulator.base_url(),
        token_file.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run_to_end(arguments: &[&str], environment: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BINARY);
    command
        .args(arguments)
        .env_remove("RUST_LOG")
        .env_remove("COMETAPI_ACCESS_TOKEN");
    for (key, value) in environment {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_configurations_exit_2_naming_the_file_and_the_key() {
    let directory = tempfile::tempdir().unwrap();
    let token_file = write_token_file(directory.path(), "tok-ABCDEFGHIJKLMNOP");
    let account = format!(
        "[[accounts]]\nname = \"main\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let cases = [
        (
            "unknown key",
            format!("[poll]\nintervall = \"60s\"\n{account}"),
            "intervall",
        ),
        (
            "bad duration",
            format!("[poll]\ninterval = \"ten\"\n{account}"),
            "interval",
        ),
        (
            "five-field cron",
            format!("[poll]\ncron = \"*/5 * * * *\"\n{account}"),
            "cron",
        ),
        (
            "missing token file",
            "[[accounts]]\nname = \"main\"\ntoken_file = \"/nonexistent/token\"\n".to_owned(),
            "/nonexistent/token",
        ),
        ("duplicate account", format!("{account}{account}"), "main"),
        (
            "inline token",
            "[[accounts]]\nname = \"main\"\ntoken = \"tok-INLINE-SECRET\"\n".to_owned(),
            "token",
        ),
    ];
    for (what, text, key) in cases {
        let path = directory
            .path()
            .join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&path, &text).unwrap();
        for subcommand in ["run", "check-config"] {
            let (code, stdout, stderr) =
                run_to_end(&[subcommand, "--config", path.to_str().unwrap()], &[]);
            assert_eq!(
                code, 2,
                "{what} ({subcommand}): stdout {stdout}\nstderr {stderr}"
            );
            assert!(
                stderr.contains(path.to_str().unwrap()),
                "{what}: the message names the file: {stderr}"
            );
            assert!(
                stderr.contains(key),
                "{what}: the message names {key:?}: {stderr}"
            );
            assert!(
                stderr.lines().count() <= 3,
                "{what}: short message: {stderr}"
            );
            assert!(
                !stderr.contains("tok-INLINE-SECRET") && !stderr.contains("tok-ABCDEFGHIJKLMNOP"),
                "{what}: no secret: {stderr}"
            );
        }
    }
    let (code, _, stderr) = run_to_end(&["run"], &[]);
    assert_eq!(code, 2, "no config at all: {stderr}");
    assert!(stderr.contains("COMETAPI_ACCESS_TOKEN"));
    let (code, _, _) = run_to_end(&["run", "--no-such-flag"], &[]);
    assert_eq!(code, 2, "bad usage");
}

#[test]
fn version_prints_the_crate_version() {
    let (code, stdout, _) = run_to_end(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_only_mode_runs_one_default_account_and_stops_on_sigterm() {
    let simulator = start_simulator(120).await;
    let token = simulator.access_token();
    let base_url = simulator.base_url();
    let daemon = DaemonProcess::start(
        &["run"],
        &[
            ("COMETAPI_ACCESS_TOKEN", token.as_str()),
            ("COMETAPI_BASE_URL", base_url.as_str()),
            ("KEYMON_SERVER__LISTEN", "127.0.0.1:0"),
        ],
    );
    let metrics = daemon
        .wait_for_metrics("the first poll", |metrics| {
            metrics.get("cometapi_up", &[("account", "default")]) == Some(1.0)
        })
        .await;
    assert_eq!(metrics.family("cometapi_key_info").len(), 120);
    let (readyz, _) = daemon.get("/readyz").await;
    assert_eq!(readyz, 200);
    let (index_status, index) = daemon.get("/").await;
    assert_eq!(index_status, 200);
    assert!(index.contains("/metrics") && index.contains("default"));
    let (exited_cleanly, took, stderr) = daemon.terminate();
    assert!(exited_cleanly, "exit status 0 after SIGTERM:\n{stderr}");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_poll_stops_within_seconds() {
    let simulator = start_simulator(150).await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: None,
        times: FaultTimes::Always,
        kind: FaultKind::Delay(Duration::from_secs(30)),
    });
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &simulator, "");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("timeout = \"2s\"", "timeout = \"60s\""),
    )
    .unwrap();
    let daemon = DaemonProcess::start(&["run", "--config", config.to_str().unwrap()], &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (exited_cleanly, took, stderr) = daemon.terminate();
    assert!(exited_cleanly, "{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "stopped in {took:?} although a request was hanging"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_key_values_never_appear_in_logs_metrics_errors_or_output() {
    let simulator = start_simulator(200).await;
    let token = simulator.access_token();
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &simulator, "");
    let key_values: Vec<String> = simulator
        .tokens()
        .iter()
        .map(|token| token.key.clone())
        .collect();
    let masked: Vec<String> = key_values
        .iter()
        .map(|key| format!("{}**********{}", &key[..4], &key[key.len() - 4..]))
        .collect();

    let daemon = DaemonProcess::start(
        &["run", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "trace")],
    );
    daemon
        .wait_for_metrics("the first poll", |metrics| metrics.up("main") == 1.0)
        .await;
    // A hostile server echoing secrets back in its errors.
    let echo = format!("invalid token {token} for key {}", key_values[0]);
    let faults = [
        FaultKind::SuccessFalse {
            message: echo.clone(),
        },
        FaultKind::HttpStatus {
            status: 401,
            body: format!(r#"{{"success":false,"message":"{echo}"}}"#),
            retry_after: None,
        },
        FaultKind::HttpStatus {
            status: 500,
            body: echo.clone(),
            retry_after: None,
        },
        FaultKind::MalformedJson,
    ];
    let mut outputs = Vec::new();
    for (index, fault) in faults.into_iter().enumerate() {
        simulator.clear_faults();
        simulator.push_fault(Fault {
            endpoint: FaultEndpoint::List,
            page: None,
            times: FaultTimes::Always,
            kind: fault,
        });
        let metrics = daemon
            .wait_for_metrics("a failed poll", |metrics| {
                metrics
                    .family("cometapi_poll_errors_total")
                    .values()
                    .sum::<f64>()
                    >= (index + 1) as f64
            })
            .await;
        outputs.push(metrics.text);
        outputs.push(daemon.get("/").await.1);
    }
    simulator.clear_faults();
    let (_, _, stderr) = daemon.terminate();
    outputs.push(stderr.clone());
    assert!(
        stderr.contains("poll failed"),
        "the failures were logged:\n{stderr}"
    );

    let (_, table, table_errors) = run_to_end(&["scan", "--config", config.to_str().unwrap()], &[]);
    let (_, json, json_errors) = run_to_end(
        &[
            "scan",
            "--config",
            config.to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
    );
    let (_, effective, _) =
        run_to_end(&["check-config", "--config", config.to_str().unwrap()], &[]);
    assert!(table.contains("main: 200 keys"), "{table}");
    outputs.extend([table, table_errors, json, json_errors, effective]);

    for output in &outputs {
        assert!(!output.contains(&token), "access token leaked:\n{output}");
        for (key, masked_key) in key_values.iter().zip(&masked) {
            assert!(!output.contains(key.as_str()), "key leaked:\n{output}");
            assert!(
                !output.contains(masked_key.as_str()),
                "masked key leaked:\n{output}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_prints_the_wallet_spend_and_subscriptions_and_warns_when_a_part_fails() {
    use cometapi_keymon::simulator::{Fault, FaultEndpoint, FaultKind, FaultTimes};
    let simulator = start_simulator(20).await;
    let spender = seeded_id(&simulator, "never-used");
    simulator
        .consume_model(spender, "claude-sonnet-4", 1_000_000, 50)
        .unwrap();
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &simulator, "");
    let path = config.to_str().unwrap();
    let (code, json, stderr) = run_to_end(&["scan", "--config", path, "--output", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let document: serde_json::Value = serde_json::from_str(&json).unwrap();
    let wallet = simulator.wallet();
    let money = &document["accounts"][0];
    assert_eq!(money["wallet"]["quota"], wallet.quota);
    assert_eq!(
        money["wallet"]["quota_usd"],
        wallet.quota as f64 / 500_000.0
    );
    assert_eq!(
        money["spend_today"]["by_model"][0]["model"],
        "claude-sonnet-4"
    );
    assert_eq!(money["spend_today"]["usd"], 2.0);
    assert_eq!(document["keys"].as_array().map(Vec::len), Some(20));

    // The spend read fails: the keys and the wallet are still printed, with a warning, exit 0.
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::FlowUsage,
        page: None,
        times: FaultTimes::Always,
        kind: FaultKind::HttpStatus {
            status: 503,
            body: String::new(),
            retry_after: None,
        },
    });
    let (code, table, stderr) = run_to_end(&["scan", "--config", path], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(table.contains("main: wallet "), "{table}");
    assert!(!table.contains("spent today"), "{table}");
    assert!(
        stderr.contains("warning: account main: GET /api/data/flow/self: HTTP 503"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_the_wallet_a_subscription_and_todays_spend_by_key_and_model() {
    let daemon = DaemonProcess::start(&["demo", "--listen", "127.0.0.1:0", "--keys", "60"], &[]);
    let metrics = daemon
        .wait_for_metrics("the money families", |metrics| {
            !metrics
                .family("cometapi_key_model_used_quota_total")
                .is_empty()
        })
        .await;
    assert_eq!(metrics.family("cometapi_account_quota").len(), 1);
    let subscriptions = metrics.family("cometapi_subscription_info");
    assert!(
        subscriptions
            .keys()
            .any(|series| series.label("status") == Some("active")
                && series.label("plan") == Some("Pro monthly")),
        "{subscriptions:?}"
    );
    let models: std::collections::BTreeSet<&str> = metrics
        .series
        .keys()
        .filter(|series| series.name == "cometapi_key_model_used_quota_total")
        .filter_map(|series| series.label("model"))
        .collect();
    assert!(
        models.len() >= 5,
        "spend on every simulated model: {models:?}"
    );
    let (status, page) = daemon.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains(" units (") && page.contains("USD)"), "{page}");
    let (clean, _, logs) = daemon.terminate();
    assert!(clean, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_exits_1_when_the_token_is_refused() {
    let simulator = start_simulator(10).await;
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &simulator, "");
    std::fs::write(directory.path().join("token"), "tok-wrong-token\n").unwrap();
    let (code, _, stderr) = run_to_end(&["scan", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("account main") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!stderr.contains("tok-wrong-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_check_metrics() {
    let Some(promtool) = tools::require_tool("promtool") else {
        return;
    };
    let simulator = start_simulator(1_100).await;
    // Spend today on both, the second on a server without spend by key: every money family.
    let second = start_simulator_with(cometapi_keymon::simulator::SimulatorConfig {
        keys: 40,
        generation: cometapi_keymon::simulator::ServerGeneration::NewApiBeforeSubscriptions,
        ..cometapi_keymon::simulator::SimulatorConfig::default()
    })
    .await;
    for server in [&simulator, &second] {
        let spender = seeded_id(server, "never-used");
        server.consume_model(spender, "gpt-4.1", 5_000, 40).unwrap();
    }
    let daemon = start_daemon(test_config(
        vec![
            account_for("main", &simulator),
            account_for("second", &second),
        ],
        every(1),
    ))
    .await;
    daemon
        .wait_for(
            "both accounts with their spend",
            Duration::from_secs(20),
            |metrics| {
                metrics.up("main") == 1.0
                    && metrics.up("second") == 1.0
                    && !metrics
                        .family("cometapi_key_model_used_quota_total")
                        .is_empty()
                    && !metrics.family("cometapi_model_used_quota_total").is_empty()
                    && !metrics
                        .family("cometapi_subscription_amount_total")
                        .is_empty()
            },
        )
        .await;
    for gzip in [false, true] {
        let text = daemon.scrape_text(gzip).await;
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let mut report = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut report)
            .unwrap();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut report)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success() && report.trim().is_empty(),
            "promtool check metrics: {status}\n{report}"
        );
    }
    daemon.stop().await;
}

/// A poll that fails before any has completed says that nothing is served yet; one that fails
/// after a complete poll says the previous snapshot is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_poll_says_whether_anything_is_served() {
    let simulator = start_simulator(5).await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::Any,
        page: None,
        times: FaultTimes::Times(2),
        kind: FaultKind::HttpStatus {
            status: 503,
            body: String::new(),
            retry_after: None,
        },
    });
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &simulator, "max_retries = 0");
    let daemon = DaemonProcess::start(&["run", "--config", config.to_str().unwrap()], &[]);
    daemon
        .wait_for_metrics("a complete poll", |metrics| metrics.up("main") == 1.0)
        .await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::Any,
        page: None,
        times: FaultTimes::Once,
        kind: FaultKind::HttpStatus {
            status: 503,
            body: String::new(),
            retry_after: None,
        },
    });
    daemon
        .wait_for_metrics("the failure after it", |metrics| metrics.up("main") == 0.0)
        .await;
    let (_, _, logs) = daemon.terminate();
    let first_failure = logs
        .lines()
        .find(|line| line.contains("poll failed"))
        .expect("a failure was logged");
    assert!(
        first_failure.contains("nothing is served for this account yet"),
        "{first_failure}"
    );
    let last_failure = logs
        .lines()
        .rfind(|line| line.contains("poll failed"))
        .unwrap();
    assert!(
        last_failure.contains("still serving the previous snapshot"),
        "{last_failure}"
    );
}
