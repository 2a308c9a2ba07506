//! Policy enforcement by the real binary, killed and restarted as a crash would: a scheduled
//! top-up grants once per period also when the daemon is SIGKILLed and restarted inside the
//! period; a write killed between its intent and its outcome is reconciled on restart (and
//! not granted again); `plan` shows what the rules would do and never writes, whatever
//! `dry_run` says.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cometapi_keymon::simulator::{Fault, FaultEndpoint, FaultKind, FaultTimes, Simulator};
use support::process::{DaemonProcess, BINARY};
use support::*;

/// Scheduled rules in these tests run every 20 s: long enough that a kill and a restart fit
/// inside one period, short enough for CI.
const PERIOD_SECONDS: i64 = 20;

fn top_up_policy(key_id: i64) -> String {
    format!(
        "[policy]\ndry_run = false\nstate_dir = \"state\"\n\
         [[policy.rules]]\nname = \"restore\"\naction = \"top_up\"\nkey_ids = [{key_id}]\n\
         top_up.to = 500000\nschedule = \"*/{PERIOD_SECONDS} * * * * *\"\n"
    )
}

fn put_count(simulator: &Simulator) -> usize {
    simulator
        .requests()
        .iter()
        .filter(|request| request.method == "PUT")
        .count()
}

fn start(config: &Path) -> DaemonProcess {
    DaemonProcess::start(&["run", "--config", config.to_str().unwrap()], &[])
}

async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The audit entries of one kind.
fn audit_events(state: &Path, event: &str) -> Vec<serde_json::Value> {
    audit_entries(state)
        .into_iter()
        .filter(|entry| entry["event"] == event)
        .collect()
}

/// Waits for `polls` more complete polls of `main`.
async fn wait_for_polls(daemon: &DaemonProcess, polls: f64) {
    let count = |metrics: &Metrics| {
        metrics
            .get(
                "cometapi_poll_duration_seconds_count",
                &[("account", "main")],
            )
            .unwrap_or(0.0)
    };
    let start = count(&daemon.wait_for_metrics("a scrape", |_| true).await);
    daemon
        .wait_for_metrics("more polls", |metrics| {
            count(metrics) >= start + polls && metrics.up("main") == 1.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_top_up_grants_once_per_period_even_across_a_kill() {
    let simulator = start_simulator(30).await;
    let key_id = seeded_id(&simulator, "never-used");
    simulator.update_token(key_id, |token| token.remain_quota = 100);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = write_policy_config(dir.path(), &simulator, &top_up_policy(key_id));

    let started_at = unix_now_seconds();
    let daemon = start(&config);
    // A new scheduled rule is armed at start and first acts at its next scheduled time.
    // The outcome is synced after the PUT's read-back: wait for both, or the audit is read early.
    wait_until("the first grant", Duration::from_secs(45), || {
        put_count(&simulator) == 1 && !audit_events(&state, "outcome").is_empty()
    })
    .await;
    let first = audit_events(&state, "outcome");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["outcome"], "applied");
    let period = first[0]["period"].as_i64().unwrap();
    assert!(
        period > started_at,
        "armed at start, not run: {period} <= {started_at}"
    );
    assert_eq!(period % PERIOD_SECONDS, 0);
    assert_eq!(simulator.token(key_id).unwrap().remain_quota, 500_000);

    // The key spends quota, so the rule would apply again; the daemon crashes and restarts
    // inside the same period.
    simulator.consume(key_id, 100_000).unwrap();
    daemon.kill();
    let daemon = start(&config);
    wait_for_polls(&daemon, 3.0).await;
    let still_same_period = unix_now_seconds() < period + PERIOD_SECONDS;
    assert!(
        still_same_period,
        "the restart took longer than a period; the test cannot tell"
    );
    assert_eq!(put_count(&simulator), 1, "granted twice in one period");
    assert_eq!(simulator.token(key_id).unwrap().remain_quota, 400_000);

    // The next period grants again, once.
    wait_until("the next period's grant", Duration::from_secs(45), || {
        put_count(&simulator) == 2
    })
    .await;
    wait_for_polls(&daemon, 2.0).await;
    assert_eq!(put_count(&simulator), 2);
    let (exit_ok, _, logs) = daemon.terminate();
    assert!(exit_ok, "{logs}");
    let outcomes = audit_events(&state, "outcome");
    assert_eq!(outcomes.len(), 2);
    assert_eq!(
        outcomes[1]["period"].as_i64(),
        Some(period + PERIOD_SECONDS)
    );
    assert!(!logs.contains(&simulator.access_token()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_killed_between_intent_and_outcome_is_reconciled_on_restart() {
    let simulator = start_simulator(30).await;
    let key_id = seeded_id(&simulator, "never-used");
    simulator.update_token(key_id, |token| token.remain_quota = 100);
    // The server holds the PUT for 3 s before applying it: long enough to kill the daemon
    // between its synced intent and the answer.
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::Update,
        page: None,
        times: FaultTimes::Once,
        kind: FaultKind::Delay(Duration::from_secs(3)),
    });
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = write_policy_config(dir.path(), &simulator, &top_up_policy(key_id));
    let daemon = start(&config);
    wait_until("the intent", Duration::from_secs(45), || {
        !audit_events(&state, "intent").is_empty()
    })
    .await;
    // The intent is synced just before the PUT is sent; the server holds the PUT for 3 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.kill();
    assert!(
        audit_events(&state, "outcome").is_empty(),
        "killed before the outcome"
    );
    let intent = audit_events(&state, "intent").remove(0);
    let period = intent["period"].as_i64().unwrap();
    // The server finishes the write after the client is gone.
    wait_until(
        "the server to apply the PUT",
        Duration::from_secs(6),
        || simulator.token(key_id).unwrap().remain_quota == 500_000,
    )
    .await;
    simulator.consume(key_id, 50_000).unwrap();

    let daemon = start(&config);
    wait_until("the reconciled outcome", Duration::from_secs(20), || {
        !audit_events(&state, "outcome").is_empty()
    })
    .await;
    wait_for_polls(&daemon, 2.0).await;
    assert!(
        unix_now_seconds() < period + PERIOD_SECONDS,
        "the restart took longer than a period; the test cannot tell"
    );
    let metrics = daemon.wait_for_metrics("a scrape", |_| true).await;
    let (exit_ok, _, logs) = daemon.terminate();
    assert!(exit_ok, "{logs}");
    let outcome = audit_events(&state, "outcome").remove(0);
    assert_eq!(outcome["action_id"], intent["action_id"]);
    assert_eq!(outcome["reconciled"], true);
    assert_eq!(outcome["outcome"], "applied", "{outcome}");
    assert_eq!(outcome["period"].as_i64(), Some(period));
    assert_eq!(
        put_count(&simulator),
        1,
        "the reconciled grant is in the ledger: no second grant this period"
    );
    assert_eq!(simulator.token(key_id).unwrap().remain_quota, 450_000);
    assert_eq!(
        metrics.get(
            "cometapi_policy_actions_total",
            &[
                ("account", "main"),
                ("rule", "restore"),
                ("action", "top_up"),
                ("outcome", "applied")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_each_rule_and_never_writes_even_with_dry_run_off() {
    let simulator = start_simulator(40).await;
    let expired = seeded_id(&simulator, "expired-still-enabled");
    let low = seeded_id(&simulator, "never-used");
    simulator.update_token(low, |token| token.remain_quota = 100);
    let dir = tempfile::tempdir().unwrap();
    let config = write_policy_config(
        dir.path(),
        &simulator,
        &format!(
            "[policy]\ndry_run = false\nstate_dir = \"state\"\nprotected_keys = [\"main:{low}\"]\n\
             [[policy.rules]]\nname = \"disable-expired\"\naction = \"disable\"\n\
             key_ids = [{expired}]\nwhen.expired = true\n\
             [[policy.rules]]\nname = \"nightly\"\naction = \"top_up\"\nkey_ids = [{low}, {expired}]\n\
             top_up.to = 6000000\nschedule = \"0 0 0 * * *\"\n"
        ),
    );
    let output = Command::new(BINARY)
        .args(["plan", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let line_of = |needles: &[&str]| {
        stdout
            .lines()
            .find(|line| needles.iter().all(|needle| line.contains(needle)))
            .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{stdout}"))
            .to_owned()
    };
    let disable = line_of(&["disable-expired"]);
    assert!(
        disable.contains(&expired.to_string()) && disable.contains("status enabled → disabled")
    );
    assert!(
        disable.contains("now") && disable.contains("would act"),
        "{disable}"
    );
    let nightly = line_of(&[&format!(" {expired} "), "nightly"]);
    assert!(
        nightly.contains("remain_quota 5000000 → 6000000"),
        "{nightly}"
    );
    assert!(nightly.contains("00:00:00 UTC"), "{nightly}");
    let protected = line_of(&[&format!(" {low} "), "nightly"]);
    assert!(protected.contains("protected"), "{protected}");
    assert!(stdout.contains("dry_run = false"));
    assert!(stdout.contains("main: 40 keys, 2 actions"), "{stdout}");
    let wallet = simulator.wallet();
    assert!(
        stdout.contains(&format!(
            "; wallet {:.2}M (${:.2}) left",
            wallet.quota as f64 / 1e6,
            wallet.quota as f64 / 500_000.0
        )),
        "{stdout}"
    );

    let json = Command::new(BINARY)
        .args([
            "plan",
            "--config",
            config.to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(json.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let decisions = plan["accounts"][0]["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3, "{plan}");
    assert!(
        decisions
            .iter()
            .any(|decision| decision["key_id"] == low
                && decision["verdict"] == "suppressed_protected")
    );

    assert!(simulator
        .requests()
        .iter()
        .all(|request| request.method == "GET"));
    // The listing, the status and the account's own reads (the wallet for
    // when.account_quota_below, the spend, the subscriptions), nothing else.
    assert!(simulator.requests().iter().all(|request| {
        request.path == "/api/token/"
            || request.path == "/api/status"
            || request.path == "/api/user/self"
            || request.path.starts_with("/api/data/")
            || request.path.starts_with("/api/subscription/")
    }));
    assert!(
        !dir.path().join("state").exists(),
        "plan wrote the state directory"
    );

    // A state directory plan cannot read (often the daemon's own): a warning, still a plan.
    std::fs::write(dir.path().join("state"), "not a directory").unwrap();
    let unreadable = Command::new(BINARY)
        .args(["plan", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let warning = String::from_utf8_lossy(&unreadable.stderr);
    assert!(unreadable.status.success(), "{warning}");
    assert!(warning.contains("does not know the cooldowns"), "{warning}");
    assert!(String::from_utf8_lossy(&unreadable.stdout).contains("disable-expired"));
    assert!(
        !stdout.contains(&simulator.access_token()) && !stderr.contains(&simulator.access_token())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_refuses_to_start() {
    let simulator = start_simulator(30).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_policy_config(
        dir.path(),
        &simulator,
        "[policy]\nstate_dir = \"state\"\n\
         [[policy.rules]]\nname = \"disable-expired\"\naction = \"disable\"\nwhen.expired = true\n",
    );
    let first = start(&config);
    let second = Command::new(BINARY)
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("policy.state_dir")
            && stderr.contains("another cometapi-keymon holds its lock"),
        "{stderr}"
    );
    let (exit_ok, _, logs) = first.terminate();
    assert!(exit_ok, "{logs}");
}
