//! Policy enforcement against the simulated management API, checked through the simulator's
//! record of every request and the state it ends in: no write in dry run or from a failed
//! poll; disable through `status_only`; every PUT body equal to the fresh read except the
//! intended change; re-enabling an exhausted key quota first, status second; the circuit at
//! the action limit; protected keys; a refusal not retried; a key changed under the plan.
//!
//! Over 600 lines on purpose: one test per enforcement guarantee.

mod support;

use std::path::Path;
use std::time::Duration;

use cometapi_keymon::config;
use cometapi_keymon::simulator::{
    Fault, FaultEndpoint, FaultKind, FaultTimes, RecordedRequest, SimToken, Simulator,
};
use serde_json::Value;
use support::*;

/// Live policy with one rule: disable key `id` once it is past its expiry.
fn disable_expired_live(id: i64) -> String {
    format!(
        "[policy]\ndry_run = false\nstate_dir = \"state\"\n\
         [[policy.rules]]\nname = \"disable-expired\"\naction = \"disable\"\n\
         key_ids = [{id}]\nwhen.expired = true\n"
    )
}

async fn start_policy_daemon(dir: &Path, simulator: &Simulator, policy: &str) -> TestDaemon {
    let path = write_policy_config(dir, simulator, policy);
    let config = config::load(Some(&path)).expect("the test config is valid");
    start_daemon(config).await
}

fn puts(simulator: &Simulator) -> Vec<RecordedRequest> {
    simulator
        .requests()
        .into_iter()
        .filter(|request| request.method == "PUT")
        .collect()
}

fn key_reads(simulator: &Simulator) -> Vec<RecordedRequest> {
    simulator
        .requests()
        .into_iter()
        .filter(|request| {
            request.method == "GET"
                && request.path.starts_with("/api/token/")
                && request.path != "/api/token/"
        })
        .collect()
}

fn actions(metrics: &Metrics, rule: &str, action: &str, outcome: &str) -> f64 {
    metrics
        .get(
            "cometapi_policy_actions_total",
            &[
                ("account", "main"),
                ("rule", rule),
                ("action", action),
                ("outcome", outcome),
            ],
        )
        .unwrap_or(0.0)
}

async fn wait_for_outcome(daemon: &TestDaemon, rule: &str, action: &str, outcome: &str) -> Metrics {
    daemon
        .wait_for(
            &format!("{rule} {action} {outcome}"),
            Duration::from_secs(20),
            |metrics| actions(metrics, rule, action, outcome) >= 1.0,
        )
        .await
}

/// The editable fields of a simulator record as the JSON a PUT carries.
fn editable_json(token: &SimToken) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("name".into(), token.name.clone().into());
    map.insert("expired_time".into(), token.expired_time.into());
    map.insert("remain_quota".into(), token.remain_quota.into());
    map.insert("unlimited_quota".into(), token.unlimited_quota.into());
    map.insert(
        "model_limits_enabled".into(),
        token.model_limits_enabled.into(),
    );
    map.insert("model_limits".into(), token.model_limits.clone().into());
    map.insert(
        "allow_ips".into(),
        token
            .allow_ips
            .clone()
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    map.insert("group".into(), token.group.clone().into());
    map.insert("cross_group_retry".into(), token.cross_group_retry.into());
    map
}

/// Asserts that `body` carries every editable field of `fresh`, changed only in `changed`.
#[track_caller]
fn assert_full_record_except(body: &str, fresh: &SimToken, changed: &[(&str, Value)]) {
    let body: Value = serde_json::from_str(body).expect("a PUT body is JSON");
    let expected = editable_json(fresh);
    assert_eq!(body["id"], Value::from(fresh.id), "{body}");
    for field in EDITABLE_FIELDS {
        let wanted = changed
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| expected[field].clone());
        assert_eq!(body[field], wanted, "field {field} of {body}");
    }
}

#[tokio::test]
async fn dry_run_counts_and_audits_but_never_reads_or_writes_a_key() {
    let simulator = start_simulator(40).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(
        dir.path(),
        &simulator,
        "[policy]\nstate_dir = \"state\"\nmax_actions_per_poll = 1000\n\
         [[policy.rules]]\nname = \"disable-expired\"\naction = \"disable\"\nwhen.expired = true\n",
    )
    .await;
    let metrics = wait_for_outcome(&daemon, "disable-expired", "disable", "dry_run").await;
    assert_eq!(metrics.value("cometapi_policy_dry_run", &[]), 1.0);
    let page = reqwest::get(daemon.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<dt>policy</dt>") && page.contains("dry run (nothing is written)"),
        "the status page shows what the policy did: {page}"
    );
    // More polls, and still nothing.
    daemon
        .wait_for("three polls", Duration::from_secs(20), |metrics| {
            metrics.get(
                "cometapi_poll_duration_seconds_count",
                &[("account", "main")],
            ) >= Some(3.0)
        })
        .await;
    daemon.stop().await;
    assert!(puts(&simulator).is_empty(), "dry run wrote");
    assert!(key_reads(&simulator).is_empty(), "dry run read keys");
    let expired_id = seeded_id(&simulator, "expired-still-enabled");
    let entries = audit_entries(&dir.path().join("state"));
    let entry = entries
        .iter()
        .find(|entry| entry["key_id"] == expired_id)
        .expect("the expired key is in the audit log");
    assert_eq!(entry["dry_run"], true);
    assert_eq!(entry["outcome"], "dry_run");
    assert_eq!(entry["changes"][0]["field"], "status");
    assert_eq!(
        entries
            .iter()
            .filter(|entry| entry["key_id"] == expired_id)
            .count(),
        1,
        "the cooldown keeps a dry run from logging the same key every poll"
    );
    assert_eq!(simulator.token(expired_id).unwrap().status, 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("state/audit.jsonl")), 0o600);
    assert_eq!(mode(&dir.path().join("state")), 0o700);
}

#[tokio::test]
async fn a_failed_poll_is_never_acted_on() {
    let simulator = start_simulator(250).await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: Some(2),
        times: FaultTimes::Always,
        kind: FaultKind::HttpStatus {
            status: 502,
            body: String::new(),
            retry_after: None,
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(
        dir.path(),
        &simulator,
        "[policy]\ndry_run = false\nstate_dir = \"state\"\nmax_actions_per_poll = 1000\n\
         [[policy.rules]]\nname = \"disable-expired\"\naction = \"disable\"\nwhen.expired = true\n",
    )
    .await;
    let metrics = daemon
        .wait_for("three failed polls", Duration::from_secs(20), |metrics| {
            metrics.errors("main", "http_5xx") >= 3.0
        })
        .await;
    assert_eq!(
        metrics.get(
            "cometapi_policy_last_evaluation_timestamp_seconds",
            &[("account", "main")]
        ),
        None,
        "no evaluation from a failed poll"
    );
    daemon.stop().await;
    assert!(puts(&simulator).is_empty());
    assert!(key_reads(&simulator).is_empty());
    assert!(audit_entries(&dir.path().join("state")).is_empty());
}

#[tokio::test]
async fn disable_reads_fresh_and_writes_status_only_with_the_full_record() {
    let simulator = start_simulator(40).await;
    let id = seeded_id(&simulator, "expired-still-enabled");
    simulator.update_token(id, |token| {
        token.allow_ips = Some("10.0.0.0/8".into());
        token.group = "team".into();
        token.model_limits_enabled = true;
        token.model_limits = "gpt-4.1".into();
    });
    let before = simulator.token(id).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(dir.path(), &simulator, &disable_expired_live(id)).await;
    wait_for_outcome(&daemon, "disable-expired", "disable", "applied").await;
    // Two more polls: the key is disabled now, so the rule has nothing to change.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    daemon.stop().await;

    let writes = puts(&simulator);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].query.as_deref(), Some("status_only=true"));
    assert_full_record_except(&writes[0].body, &before, &[]);
    let body: Value = serde_json::from_str(&writes[0].body).unwrap();
    assert_eq!(body["status"], 2);
    let reads = key_reads(&simulator);
    assert_eq!(reads.len(), 2, "a fresh read before and a read-back after");
    assert!(reads[0].at < writes[0].at && writes[0].at < reads[1].at);

    let after = simulator.token(id).unwrap();
    assert_eq!(after.status, 2);
    assert_eq!(
        SimToken { status: 1, ..after },
        before,
        "only the status changed"
    );

    let entries = audit_entries(&dir.path().join("state"));
    let events: Vec<&str> = entries
        .iter()
        .map(|entry| entry["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["intent", "outcome"]);
    assert_eq!(entries[0]["action_id"], entries[1]["action_id"]);
    assert_eq!(entries[1]["outcome"], "applied");
    assert_eq!(entries[1]["dry_run"], false);
    assert_eq!(
        entries[0]["changes"],
        serde_json::json!([{"field": "status", "before": 1, "after": 2}])
    );
}

#[tokio::test]
async fn top_up_writes_the_fresh_record_with_only_the_quota_changed() {
    let simulator = start_simulator(40).await;
    let id = seeded_id(&simulator, "never-used");
    simulator.update_token(id, |token| {
        token.remain_quota = 1_000;
        token.used_quota = 99_000;
        token.expired_time = 4_000_000_000;
        token.allow_ips = Some("192.0.2.7\n10.0.0.0/8".into());
        token.model_limits_enabled = true;
        token.model_limits = "gpt-4.1,claude-sonnet-4".into();
        token.group = "team".into();
        token.name = "team-a".into();
    });
    let before = simulator.token(id).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(
        dir.path(),
        &simulator,
        "[policy]\ndry_run = false\nstate_dir = \"state\"\n\
         [[policy.rules]]\nname = \"team-top-up\"\naction = \"top_up\"\nname_matches = \"^team-\"\n\
         when.remaining_fraction_below = 0.1\ntop_up.to = 500000\n",
    )
    .await;
    let metrics = wait_for_outcome(&daemon, "team-top-up", "top_up", "applied").await;
    assert_eq!(
        metrics.value(
            "cometapi_policy_topup_quota_total",
            &[("account", "main"), ("rule", "team-top-up")]
        ),
        499_000.0
    );
    daemon.stop().await;

    let writes = puts(&simulator);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].query, None, "a quota change is a full PUT");
    assert_full_record_except(
        &writes[0].body,
        &before,
        &[("remain_quota", 500_000.into())],
    );
    let body: Value = serde_json::from_str(&writes[0].body).unwrap();
    assert!(
        body.get("status").is_none(),
        "a full PUT never carries status"
    );
    let after = simulator.token(id).unwrap();
    assert_eq!(
        SimToken {
            remain_quota: before.remain_quota,
            ..after
        },
        before,
        "expiry, IPs, models, group and name kept"
    );
    assert_eq!(simulator.token(id).unwrap().remain_quota, 500_000);
    let outcome = audit_entries(&dir.path().join("state")).pop().unwrap();
    assert_eq!(outcome["used_quota_at_poll"], 99_000);
    assert_eq!(outcome["used_quota_at_read"], 99_000);
    assert!(outcome["read_to_write_ms"].as_u64().is_some());
}

#[tokio::test]
async fn an_exhausted_key_gets_its_quota_first_and_its_status_second() {
    let simulator = start_simulator(40).await;
    let id = seeded_id(&simulator, "exhausted");
    assert_eq!(simulator.token(id).unwrap().status, 4);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(
        dir.path(),
        &simulator,
        &format!(
            "[policy]\ndry_run = false\nstate_dir = \"state\"\n\
             [[policy.rules]]\nname = \"revive\"\naction = \"top_up\"\nkey_ids = [{id}]\n\
             top_up.to = 200000\ntop_up.enable = true\n"
        ),
    )
    .await;
    wait_for_outcome(&daemon, "revive", "top_up", "applied").await;
    daemon.stop().await;
    let writes = puts(&simulator);
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert_eq!(writes[0].query, None);
    assert_eq!(writes[1].query.as_deref(), Some("status_only=true"));
    let second: Value = serde_json::from_str(&writes[1].body).unwrap();
    assert_eq!(
        (second["status"].clone(), second["remain_quota"].clone()),
        (1.into(), 200_000.into())
    );
    let after = simulator.token(id).unwrap();
    assert_eq!((after.status, after.remain_quota), (1, 200_000));
}

#[tokio::test]
async fn the_circuit_opens_at_the_limit_and_nothing_is_written() {
    let simulator = start_simulator(40).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(
        dir.path(),
        &simulator,
        "[policy]\ndry_run = false\nstate_dir = \"state\"\nmax_actions_per_poll = 2\n\
         [[policy.rules]]\nname = \"everyone\"\naction = \"top_up\"\ntop_up.to = 400000000\n",
    )
    .await;
    let metrics = daemon
        .wait_for("the circuit", Duration::from_secs(20), |metrics| {
            metrics.get("cometapi_policy_circuit_open", &[("account", "main")]) == Some(1.0)
        })
        .await;
    assert!(actions(&metrics, "everyone", "top_up", "suppressed_limit") > 2.0);
    assert_eq!(actions(&metrics, "everyone", "top_up", "applied"), 0.0);
    daemon.stop().await;
    assert!(puts(&simulator).is_empty());
    assert!(key_reads(&simulator).is_empty());
}

#[tokio::test]
async fn protected_keys_are_never_touched() {
    let simulator = start_simulator(40).await;
    let protected = seeded_id(&simulator, "expired-still-enabled");
    let other = seeded_id(&simulator, "overdrawn-still-enabled");
    simulator.update_token(other, |token| token.expired_time = 1_000_000_000);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(
        dir.path(),
        &simulator,
        &format!(
            "[policy]\ndry_run = false\nstate_dir = \"state\"\nprotected_keys = [\"main:{protected}\"]\n\
             [[policy.rules]]\nname = \"disable-expired\"\naction = \"disable\"\n\
             key_ids = [{protected}, {other}]\nwhen.expired = true\n"
        ),
    )
    .await;
    wait_for_outcome(&daemon, "disable-expired", "disable", "applied").await;
    let metrics = wait_for_outcome(
        &daemon,
        "disable-expired",
        "disable",
        "suppressed_protected",
    )
    .await;
    assert_eq!(
        actions(&metrics, "disable-expired", "disable", "applied"),
        1.0
    );
    daemon.stop().await;
    assert_eq!(simulator.token(protected).unwrap().status, 1);
    let overdrawn = simulator.token(other).unwrap();
    assert_eq!((overdrawn.status, overdrawn.remain_quota), (2, -4_200));
    // The server validates the quota even in status-only mode: an overdrawn key's negative
    // remain is sent as 0 (and ignored), or the disable would be refused.
    let writes = puts(&simulator);
    assert_eq!(writes.len(), 1);
    let body: Value = serde_json::from_str(&writes[0].body).unwrap();
    assert_eq!(
        (body["status"].clone(), body["remain_quota"].clone()),
        (2.into(), 0.into())
    );
    let protected_path = format!("/api/token/{protected}");
    assert!(simulator.requests().iter().all(|request| {
        request.path != protected_path && !request.body.contains(&format!("\"id\":{protected}"))
    }));
}

#[tokio::test]
async fn a_refusal_is_rejected_once_not_retried_every_poll() {
    let simulator = start_simulator(40).await;
    let id = seeded_id(&simulator, "expired");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(
        dir.path(),
        &simulator,
        &format!(
            "[policy]\ndry_run = false\nstate_dir = \"state\"\n\
             [[policy.rules]]\nname = \"re-enable\"\naction = \"enable\"\nkey_ids = [{id}]\n\
             when.status = [\"expired\"]\n"
        ),
    )
    .await;
    wait_for_outcome(&daemon, "re-enable", "enable", "rejected").await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let metrics = daemon.metrics().await;
    daemon.stop().await;
    assert_eq!(actions(&metrics, "re-enable", "enable", "rejected"), 1.0);
    assert_eq!(puts(&simulator).len(), 1, "refused once, then left alone");
    assert_eq!(simulator.token(id).unwrap().status, 3);
    let outcome = audit_entries(&dir.path().join("state")).pop().unwrap();
    assert!(outcome["detail"]
        .as_str()
        .unwrap()
        .contains("expired and cannot be enabled"));
}

#[tokio::test]
async fn a_key_changed_under_the_plan_is_skipped() {
    let simulator = start_simulator(40).await;
    let id = seeded_id(&simulator, "expired-still-enabled");
    // The fresh read waits 2 s on the server; meanwhile a person disables the key by hand.
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::Get,
        page: None,
        times: FaultTimes::Once,
        kind: FaultKind::Delay(Duration::from_secs(2)),
    });
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(dir.path(), &simulator, &disable_expired_live(id)).await;
    daemon.first_poll().await;
    simulator.update_token(id, |token| token.status = 2);
    wait_for_outcome(&daemon, "disable-expired", "disable", "skipped_changed").await;
    daemon.stop().await;
    assert!(puts(&simulator).is_empty());
}

#[tokio::test]
async fn a_failed_write_is_checked_by_reading_not_retried_blindly() {
    let simulator = start_simulator(40).await;
    let id = seeded_id(&simulator, "expired-still-enabled");
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::Update,
        page: None,
        times: FaultTimes::Once,
        kind: FaultKind::HttpStatus {
            status: 502,
            body: "<html>bad gateway</html>".into(),
            retry_after: None,
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(dir.path(), &simulator, &disable_expired_live(id)).await;
    wait_for_outcome(&daemon, "disable-expired", "disable", "failed").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    daemon.stop().await;
    assert_eq!(puts(&simulator).len(), 1, "no blind retry of a write");
    // The fresh read, then the read that showed the write had not landed.
    assert_eq!(key_reads(&simulator).len(), 2);
    assert_eq!(simulator.token(id).unwrap().status, 1);
    let outcome = audit_entries(&dir.path().join("state")).pop().unwrap();
    assert_eq!(outcome["outcome"], "failed");
    assert!(
        outcome["detail"].as_str().unwrap().contains("502"),
        "{outcome}"
    );
}

#[tokio::test]
async fn an_answer_holding_another_key_is_never_written_back() {
    let simulator = start_simulator(40).await;
    let id = seeded_id(&simulator, "expired-still-enabled");
    let other = seeded_id(&simulator, "disabled");
    // A broken cache in front of the server answers the fresh read with another key's record.
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::Get,
        page: None,
        times: FaultTimes::Once,
        kind: FaultKind::HttpStatus {
            status: 200,
            body: format!(
                "{{\"data\":{{\"id\":{other},\"status\":1,\"name\":\"x\",\"expired_time\":1,\
                 \"remain_quota\":5}},\"message\":\"\",\"success\":true}}"
            ),
            retry_after: None,
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(dir.path(), &simulator, &disable_expired_live(id)).await;
    wait_for_outcome(&daemon, "disable-expired", "disable", "failed").await;
    daemon.stop().await;
    assert!(puts(&simulator).is_empty(), "{:?}", puts(&simulator));
    let outcome = audit_entries(&dir.path().join("state")).pop().unwrap();
    assert!(
        outcome["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("asked for key {id}, the answer holds key {other}")),
        "{outcome}"
    );
}

#[tokio::test]
async fn a_scheduled_rule_polls_and_acts_at_its_time_not_at_the_next_interval() {
    let simulator = start_simulator(40).await;
    let id = seeded_id(&simulator, "never-used");
    simulator.update_token(id, |token| token.remain_quota = 100);
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy_config(
        dir.path(),
        &simulator,
        &format!(
            "[policy]\ndry_run = false\nstate_dir = \"state\"\n\
             [[policy.rules]]\nname = \"restore\"\naction = \"top_up\"\nkey_ids = [{id}]\n\
             top_up.to = 500000\nschedule = \"*/4 * * * * *\"\n"
        ),
    );
    let mut config = config::load(Some(&path)).unwrap();
    // Polls an hour apart: only the rule's own schedule can bring the grant within seconds.
    config.poll.schedule = every(3_600);
    let daemon = start_daemon(config).await;
    let metrics = wait_for_outcome(&daemon, "restore", "top_up", "applied").await;
    daemon.stop().await;
    assert!(
        metrics
            .get(
                "cometapi_poll_duration_seconds_count",
                &[("account", "main")]
            )
            .unwrap()
            >= 2.0,
        "the first poll arms the rule; a poll at its time grants"
    );
    assert_eq!(simulator.token(id).unwrap().remain_quota, 500_000);
}

/// A rule on explicit keys needs no condition: `enable` with only `key_ids` re-enables exactly
/// those keys (one status-only write each) and touches no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enable_rule_on_explicit_key_ids_enables_exactly_those_keys() {
    let simulator = start_simulator(40).await;
    let disabled: Vec<i64> = simulator
        .tokens()
        .iter()
        .filter(|token| token.status == 2)
        .map(|token| token.id)
        .collect();
    assert!(
        !disabled.is_empty(),
        "the seeded population has disabled keys"
    );
    let chosen = disabled[0];
    let policy = format!(
        "[policy]\ndry_run = false\nstate_dir = \"state\"\n\
         [[policy.rules]]\nname = \"release\"\naction = \"enable\"\nkey_ids = [{chosen}]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_policy_daemon(dir.path(), &simulator, &policy).await;
    wait_for_outcome(&daemon, "release", "enable", "applied").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    daemon.stop().await;
    let writes = puts(&simulator);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].query.as_deref(), Some("status_only=true"));
    assert_eq!(simulator.token(chosen).unwrap().status, 1);
    for other in &disabled[1..] {
        assert_eq!(
            simulator.token(*other).unwrap().status,
            2,
            "key {other} untouched"
        );
    }
}
