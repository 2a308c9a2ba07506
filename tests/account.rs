//! The account's money end to end over loopback: the simulator's wallet, usage records and
//! subscriptions against what the daemon exports, per server generation, across a simulated
//! midnight, with failing routes, and the exact request count of a poll.
//!
//! Over 600 lines on purpose: one test per account-money behaviour.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cometapi_keymon::api::REQUESTS_PER_POLL_BEYOND_PAGES;
use cometapi_keymon::clock::Clock;
use cometapi_keymon::simulator::{
    hour_bucket, Fault, FaultEndpoint, FaultKind, FaultTimes, ServerGeneration, Simulator,
    SimulatorConfig, UsageRecord, SIMULATED_MODELS,
};
use support::*;

const WAIT: Duration = Duration::from_secs(20);
const DAY: i64 = 86_400;

async fn simulator_of(generation: ServerGeneration, keys: usize) -> Simulator {
    start_simulator_with(SimulatorConfig {
        keys,
        generation,
        ..SimulatorConfig::default()
    })
    .await
}

/// Some traffic on the first `keys` usable keys of the simulator, over several models.
fn traffic(simulator: &Simulator, keys: usize, round: i64) -> usize {
    let now = simulator.now();
    let usable: Vec<i64> = simulator
        .tokens()
        .into_iter()
        .filter(|token| {
            token.status == 1
                && !token.is_expired_at(now)
                && (token.unlimited_quota || token.remain_quota > 10_000)
        })
        .map(|token| token.id)
        .take(keys)
        .collect();
    let mut admitted = 0;
    for (index, id) in usable.iter().enumerate() {
        let model = SIMULATED_MODELS[(index + round as usize) % SIMULATED_MODELS.len()];
        let quota = 100 * (index as i64 + 1) + round;
        if simulator
            .consume_model(*id, model, quota, quota / 4)
            .is_ok()
        {
            admitted += 1;
        }
    }
    admitted
}

/// The spend by key and model the records imply for the UTC day of `now`.
fn expected_key_model_series(simulator: &Simulator, now: i64) -> BTreeMap<(String, Series), f64> {
    let day_start = now - now.rem_euclid(DAY);
    let mut sums: BTreeMap<(i64, String, String), (i64, i64, i64)> = BTreeMap::new();
    for record in simulator.usage_records() {
        let bucket = hour_bucket(record.at);
        if bucket < day_start || bucket > now || record.use_group.is_empty() {
            continue;
        }
        let entry = sums
            .entry((record.token_id, record.use_group, record.model_name))
            .or_default();
        entry.0 += record.quota;
        entry.1 += 1;
        entry.2 += record.tokens;
    }
    let mut expected = BTreeMap::new();
    for ((key_id, group, model), (quota, requests, tokens)) in sums {
        let key_id = key_id.to_string();
        let labels = [
            ("account", "main"),
            ("key_id", key_id.as_str()),
            ("model", model.as_str()),
            ("group", group.as_str()),
        ];
        for (name, value) in [
            ("cometapi_key_model_used_quota_total", quota),
            ("cometapi_key_model_requests_total", requests),
            ("cometapi_key_model_tokens_total", tokens),
        ] {
            expected.insert((name.to_owned(), Series::new(name, &labels)), value as f64);
        }
    }
    expected
}

fn key_model_series(metrics: &Metrics) -> BTreeMap<(String, Series), f64> {
    metrics
        .series
        .iter()
        .filter(|(series, _)| is_key_model_spend(&series.name))
        .map(|(series, value)| ((series.name.clone(), series.clone()), *value))
        .collect()
}

fn wallet_matches(metrics: &Metrics, simulator: &Simulator) -> bool {
    let wallet = simulator.wallet();
    let account = [("account", "main")];
    metrics.get("cometapi_account_quota", &account) == Some(wallet.quota as f64)
        && metrics.get("cometapi_account_used_quota", &account) == Some(wallet.used_quota as f64)
        && metrics.get("cometapi_account_requests_total", &account)
            == Some(wallet.request_count as f64)
}

/// Any series or TYPE line of a family whose name starts with `prefix` (for
/// `cometapi_key_model_`, only the spend families, not `cometapi_key_model_restricted`).
fn families_present(metrics: &Metrics, prefix: &str) -> bool {
    let matches = |name: &str| {
        name.starts_with(prefix) && (prefix != "cometapi_key_model_" || is_key_model_spend(name))
    };
    metrics.series.keys().any(|series| matches(&series.name))
        || metrics.types.keys().any(|name| matches(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_and_todays_spend_by_key_and_model_equal_the_simulators_records() {
    let simulator = simulator_of(ServerGeneration::NewApiLatest, 120).await;
    assert!(traffic(&simulator, 12, 0) > 5);
    let daemon = start_daemon_for(&simulator, every(1)).await;
    let metrics = daemon
        .wait_for("wallet and spend", WAIT, |metrics| {
            metrics.up("main") == 1.0
                && wallet_matches(metrics, &simulator)
                && key_model_series(metrics)
                    == expected_key_model_series(&simulator, simulator.now())
        })
        .await;
    let wallet = simulator.wallet();
    assert_eq!(
        metrics.value(
            "cometapi_account_info",
            &[
                ("account", "main"),
                ("user_id", &wallet.user_id.to_string()),
                ("group", &wallet.group)
            ]
        ),
        1.0
    );
    assert_eq!(
        metrics.types["cometapi_key_model_used_quota_total"],
        "counter"
    );
    assert_eq!(metrics.types["cometapi_account_requests_total"], "counter");
    assert!(
        !families_present(&metrics, "cometapi_model_"),
        "per-model families only where the server has no spend by key"
    );

    // More traffic: the next polls follow the records exactly.
    assert!(traffic(&simulator, 20, 1) > 5);
    daemon
        .wait_for("the new traffic", WAIT, |metrics| {
            wallet_matches(metrics, &simulator)
                && key_model_series(metrics)
                    == expected_key_model_series(&simulator, simulator.now())
        })
        .await;

    // Subscriptions, with the plan title from the plans and no next reset where none is set.
    for subscription in simulator.subscriptions() {
        let id = subscription.id.to_string();
        let plan = simulator
            .plans()
            .into_iter()
            .find(|plan| plan.id == subscription.plan_id)
            .map(|plan| plan.title)
            .unwrap_or_default();
        let labels = [("account", "main"), ("subscription_id", id.as_str())];
        assert_eq!(
            metrics.value(
                "cometapi_subscription_info",
                &[
                    ("account", "main"),
                    ("subscription_id", &id),
                    ("plan_id", &subscription.plan_id.to_string()),
                    ("plan", &plan),
                    ("status", &subscription.status),
                ]
            ),
            1.0
        );
        assert_eq!(
            metrics.value("cometapi_subscription_amount_total", &labels),
            subscription.amount_total as f64
        );
        assert_eq!(
            metrics.value("cometapi_subscription_amount_used", &labels),
            subscription.amount_used as f64
        );
        assert_eq!(
            metrics.value("cometapi_subscription_end_timestamp_seconds", &labels),
            subscription.end_time as f64
        );
        assert_eq!(
            metrics.get(
                "cometapi_subscription_next_reset_timestamp_seconds",
                &labels
            ),
            (subscription.next_reset_time > 0).then_some(subscription.next_reset_time as f64)
        );
    }
    // The status page shows the wallet.
    let page = reqwest::get(daemon.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let wallet_now = simulator.wallet();
    assert!(
        page.contains(&format!(
            "(${:.2}) <span class=\"muted\">= {} quota units</span> left",
            wallet_now.quota as f64 / simulator.quota_per_unit(),
            wallet_now.quota,
        )),
        "{page}"
    );
    // Plans are read at most once an hour, however many polls ran.
    let polls = simulator
        .requests()
        .iter()
        .filter(|request| request.path == "/api/status")
        .count();
    let plan_reads = simulator
        .requests()
        .iter()
        .filter(|request| request.path == "/api/subscription/plans")
        .count();
    assert!(polls >= 2, "{polls} polls");
    assert_eq!(plan_reads, 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_counters_start_again_at_a_simulated_midnight() {
    let simulator = simulator_of(ServerGeneration::NewApiLatest, 60).await;
    // Daemon and server 40 s before the next midnight (UTC), moved together.
    let real_now = unix_now();
    let before_midnight = real_now - real_now.rem_euclid(DAY) + DAY - 40;
    let offset = Arc::new(AtomicI64::new(before_midnight - real_now));
    simulator.set_clock_offset(offset.load(Ordering::SeqCst));
    assert!(traffic(&simulator, 10, 0) > 3);
    let yesterday = expected_key_model_series(&simulator, simulator.now());
    assert!(!yesterday.is_empty());
    let config = test_config(vec![account_for("main", &simulator)], every(1));
    let daemon = start_daemon_with_clock(config, Clock::offset_by(offset.clone())).await;
    daemon
        .wait_for("the evening's spend", WAIT, |metrics| {
            key_model_series(metrics) == yesterday
        })
        .await;

    // Midnight passes; the new day's first requests go to other keys and models.
    offset.fetch_add(60, Ordering::SeqCst);
    simulator.set_clock_offset(offset.load(Ordering::SeqCst));
    assert!(traffic(&simulator, 3, 2) > 1);
    let today = expected_key_model_series(&simulator, simulator.now());
    assert!(!today.is_empty() && today != yesterday);
    let metrics = daemon
        .wait_for("the counters to start again", WAIT, |metrics| {
            key_model_series(metrics) == today
        })
        .await;
    // Every counter of the new day is below (a reset) or new, never yesterday's sum.
    let before_total: f64 = yesterday
        .iter()
        .filter(|((name, _), _)| name == "cometapi_key_model_used_quota_total")
        .map(|(_, value)| value)
        .sum();
    let after_total: f64 = key_model_series(&metrics)
        .iter()
        .filter(|((name, _), _)| name == "cometapi_key_model_used_quota_total")
        .map(|(_, value)| value)
        .sum();
    assert!(after_total < before_total, "{after_total} < {before_total}");
    assert!(
        wallet_matches(&metrics, &simulator),
        "the wallet does not reset"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_the_routes_export_none_of_their_families_and_still_complete() {
    // one-api: the wallet only.
    let one_api = simulator_of(ServerGeneration::OneApi, 30).await;
    traffic(&one_api, 5, 0);
    let daemon = start_daemon_for(&one_api, every(1)).await;
    let metrics = daemon
        .wait_for("three polls", WAIT, |metrics| {
            metrics.up("main") == 1.0 && poll_count(metrics, "main") >= 3.0
        })
        .await;
    assert!(wallet_matches(&metrics, &one_api));
    for prefix in [
        "cometapi_key_model_",
        "cometapi_model_",
        "cometapi_subscription_",
    ] {
        assert!(
            !families_present(&metrics, prefix),
            "one-api exports no {prefix}*"
        );
    }
    for reason in ["usage_failed", "subscriptions_failed"] {
        assert_eq!(metrics.errors("main", reason), 0.0, "a 404 is no failure");
    }
    daemon.stop().await;

    // new-api before 2026-02: the wallet and spend by model, no subscriptions.
    let older = simulator_of(ServerGeneration::NewApiBeforeSubscriptions, 30).await;
    traffic(&older, 8, 0);
    let daemon = start_daemon_for(&older, every(1)).await;
    let metrics = daemon
        .wait_for("spend by model", WAIT, |metrics| {
            metrics.family("cometapi_model_used_quota_total").len() > 1
        })
        .await;
    let now = older.now();
    let mut by_model: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for record in older.usage_records() {
        if record.at >= now - now.rem_euclid(DAY) {
            let entry = by_model.entry(record.model_name).or_default();
            entry.0 += record.quota;
            entry.1 += 1;
            entry.2 += record.tokens;
        }
    }
    for (model, (quota, requests, tokens)) in &by_model {
        let labels = [("account", "main"), ("model", model.as_str())];
        assert_eq!(
            metrics.value("cometapi_model_used_quota_total", &labels),
            *quota as f64
        );
        assert_eq!(
            metrics.value("cometapi_model_requests_total", &labels),
            *requests as f64
        );
        assert_eq!(
            metrics.value("cometapi_model_tokens_total", &labels),
            *tokens as f64
        );
    }
    assert_eq!(
        metrics.family("cometapi_model_used_quota_total").len(),
        by_model.len()
    );
    assert!(!families_present(&metrics, "cometapi_key_model_"));
    assert!(!families_present(&metrics, "cometapi_subscription_"));
    assert!(wallet_matches(&metrics, &older));
    daemon.stop().await;

    // A server answering 404 for the wallet: no wallet series, the poll completes.
    let no_wallet = simulator_of(ServerGeneration::NewApiLatest, 30).await;
    no_wallet.push_fault(Fault {
        endpoint: FaultEndpoint::User,
        page: None,
        times: FaultTimes::Always,
        kind: FaultKind::HttpStatus {
            status: 404,
            body: r#"{"error":{"message":"Invalid URL (GET /api/user/self)","type":"invalid_request_error","param":"","code":""}}"#.into(),
            retry_after: None,
        },
    });
    let daemon = start_daemon_for(&no_wallet, every(3_600)).await;
    let metrics = daemon.first_poll().await;
    assert!(!families_present(&metrics, "cometapi_account_"));
    assert!(families_present(&metrics, "cometapi_subscription_"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_usage_read_keeps_the_keys_and_wallet_current_and_the_spend_at_its_last_values() {
    let simulator = simulator_of(ServerGeneration::NewApiLatest, 80).await;
    traffic(&simulator, 10, 0);
    let daemon = start_daemon_for(&simulator, every(1)).await;
    let before = daemon
        .wait_for("the spend", WAIT, |metrics| {
            !key_model_series(metrics).is_empty()
                && key_model_series(metrics)
                    == expected_key_model_series(&simulator, simulator.now())
        })
        .await;
    for endpoint in [FaultEndpoint::FlowUsage, FaultEndpoint::Subscriptions] {
        simulator.push_fault(Fault {
            endpoint,
            page: None,
            times: FaultTimes::Always,
            kind: FaultKind::HttpStatus {
                status: 502,
                body: "<html>bad gateway</html>".into(),
                retry_after: None,
            },
        });
    }
    traffic(&simulator, 10, 1);
    let (busy_id, busy_used) = {
        let token = simulator
            .tokens()
            .into_iter()
            .find(|token| token.used_quota > 0)
            .unwrap();
        (token.id.to_string(), token.used_quota as f64)
    };
    let during = daemon
        .wait_for(
            "the failures to be counted with current keys",
            WAIT,
            |metrics| {
                metrics.errors("main", "usage_failed") >= 2.0
                    && metrics.errors("main", "subscriptions_failed") >= 2.0
                    && wallet_matches(metrics, &simulator)
                    && metrics.get(
                        "cometapi_key_used_quota",
                        &[("account", "main"), ("key_id", &busy_id)],
                    ) == Some(busy_used)
            },
        )
        .await;
    assert_eq!(during.up("main"), 1.0, "the poll still completes");
    assert_eq!(
        key_model_series(&during),
        key_model_series(&before),
        "the spend keeps its last values"
    );
    assert_eq!(
        during.family("cometapi_subscription_info"),
        before.family("cometapi_subscription_info")
    );
    for reason in cometapi_keymon::api::POLL_ERROR_REASONS {
        assert_eq!(during.errors("main", reason), 0.0, "{reason}");
    }
    assert!(
        during.value(
            "cometapi_api_requests_total",
            &[("account", "main"), ("endpoint", "usage"), ("code", "502")]
        ) >= 2.0
    );

    simulator.clear_faults();
    daemon
        .wait_for("recovery", WAIT, |metrics| {
            key_model_series(metrics) == expected_key_model_series(&simulator, simulator.now())
        })
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_wallet_read_fails_the_poll_with_its_reason() {
    let simulator = simulator_of(ServerGeneration::NewApiLatest, 30).await;
    let daemon = start_daemon_for(&simulator, every(1)).await;
    let good = daemon.first_poll().await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::User,
        page: None,
        times: FaultTimes::Always,
        kind: FaultKind::HttpStatus {
            status: 500,
            body: String::new(),
            retry_after: None,
        },
    });
    simulator.update_wallet(|wallet| wallet.quota -= 1_000);
    let failed = daemon
        .wait_for("the wallet failure", WAIT, |metrics| {
            metrics.errors("main", "http_5xx") >= 1.0 && metrics.up("main") == 0.0
        })
        .await;
    assert_eq!(
        failed.get("cometapi_account_quota", &[("account", "main")]),
        good.get("cometapi_account_quota", &[("account", "main")]),
        "the last complete snapshot, wallet included, is still served"
    );
    daemon.stop().await;
}

/// Splits the recorded requests into polls (each starts with `/api/status`).
fn requests_per_poll(simulator: &Simulator) -> Vec<Vec<String>> {
    let mut polls: Vec<Vec<String>> = Vec::new();
    for request in simulator.requests() {
        if request.path == "/api/status" {
            polls.push(Vec::new());
        }
        if let Some(poll) = polls.last_mut() {
            poll.push(request.path.clone());
        }
    }
    polls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_costs_exactly_its_pages_plus_the_documented_constant() {
    let keys: usize = 250;
    let pages = keys.div_ceil(100);
    let simulator = simulator_of(ServerGeneration::NewApiLatest, keys).await;
    let daemon = start_daemon_for(&simulator, every(1)).await;
    let metrics = daemon
        .wait_for("four polls", WAIT, |metrics| {
            poll_count(metrics, "main") >= 4.0
        })
        .await;
    daemon.stop().await;
    let polls = requests_per_poll(&simulator);
    let constant = REQUESTS_PER_POLL_BEYOND_PAGES as usize;
    assert_eq!(constant, 4, "status, wallet, usage, subscriptions");
    for (index, poll) in polls.iter().enumerate().take(4) {
        let plans = usize::from(index == 0);
        assert_eq!(
            poll.len(),
            pages + constant + plans,
            "poll {index}: {poll:?}"
        );
    }
    for endpoint in ["list", "status", "user", "usage", "subscriptions", "plans"] {
        assert!(
            metrics.value(
                "cometapi_api_requests_total",
                &[("account", "main"), ("endpoint", endpoint), ("code", "200")]
            ) >= 1.0,
            "{endpoint}"
        );
    }

    // usage = false for the account: no spend request, no spend series.
    let simulator = simulator_of(ServerGeneration::NewApiLatest, keys).await;
    traffic(&simulator, 5, 0);
    let mut account = account_for("main", &simulator);
    account.usage = false;
    let daemon = start_daemon(test_config(vec![account], every(1))).await;
    let metrics = daemon
        .wait_for("three polls", WAIT, |metrics| {
            poll_count(metrics, "main") >= 3.0
        })
        .await;
    daemon.stop().await;
    assert!(!families_present(&metrics, "cometapi_key_model_"));
    for (index, poll) in requests_per_poll(&simulator).iter().enumerate().take(3) {
        let plans = usize::from(index == 0);
        assert_eq!(
            poll.len(),
            pages + constant - 1 + plans,
            "poll {index}: {poll:?}"
        );
        assert!(!poll.iter().any(|path| path.starts_with("/api/data/")));
    }

    // The server's data export off: no spend request either.
    let simulator = simulator_of(ServerGeneration::NewApiLatest, 30).await;
    simulator.set_data_export(false);
    let daemon = start_daemon_for(&simulator, every(1)).await;
    let metrics = daemon
        .wait_for("two polls", WAIT, |metrics| {
            poll_count(metrics, "main") >= 2.0
        })
        .await;
    daemon.stop().await;
    assert!(!families_present(&metrics, "cometapi_key_model_"));
    assert!(requests_per_poll(&simulator)
        .iter()
        .flatten()
        .all(|path| !path.starts_with("/api/data/")));

    // one-api: the first poll finds no flow route, the second no hourly route; then neither is
    // asked within the hour, and no poll costs more than the constant.
    let simulator = simulator_of(ServerGeneration::OneApi, 30).await;
    let daemon = start_daemon_for(&simulator, every(1)).await;
    daemon
        .wait_for("four polls", WAIT, |metrics| {
            poll_count(metrics, "main") >= 4.0
        })
        .await;
    daemon.stop().await;
    let polls = requests_per_poll(&simulator);
    assert!(polls[0].contains(&"/api/data/flow/self".to_owned()));
    assert!(polls[1].contains(&"/api/data/self".to_owned()));
    for poll in &polls[2..4] {
        assert!(
            !poll.iter().any(|path| path.starts_with("/api/data/")),
            "{poll:?}"
        );
    }
    for poll in &polls[..4] {
        assert!(poll.len() <= 1 + constant, "{poll:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_a_group_and_yesterdays_rows_are_not_counted() {
    let simulator = simulator_of(ServerGeneration::NewApiLatest, 30).await;
    let now = simulator.now();
    let id = simulator.tokens()[0].id;
    for (at, group, quota) in [
        (now - now.rem_euclid(DAY) - 60, "default", 7_000),
        (now, "", 9_000),
        (now, "vip", 11),
    ] {
        simulator.record_usage(UsageRecord {
            at,
            token_id: id,
            token_name: "k".into(),
            use_group: group.into(),
            model_name: "gpt-4.1".into(),
            quota,
            tokens: 1,
        });
    }
    let daemon = start_daemon_for(&simulator, every(3_600)).await;
    let metrics = daemon.first_poll().await;
    daemon.stop().await;
    let family = metrics.family("cometapi_key_model_used_quota_total");
    assert_eq!(family.len(), 1, "{family:?}");
    assert_eq!(family.values().next(), Some(&11.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_wallet_disables_the_low_priority_keys_and_only_them() {
    let simulator = simulator_of(ServerGeneration::NewApiLatest, 40).await;
    let now = simulator.now();
    let vip_enabled: Vec<i64> = simulator
        .tokens()
        .into_iter()
        .filter(|token| token.group == "vip" && token.status == 1 && !token.is_expired_at(now))
        .map(|token| token.id)
        .collect();
    assert!(!vip_enabled.is_empty(), "the seed has enabled vip keys");
    let policy = "[policy]\nstate_dir = \"state\"\ndry_run = false\n\
        [[policy.rules]]\nname = \"shed-vip\"\naction = \"disable\"\ngroups = [\"vip\"]\n\
        when.account_quota_below = 1000000\nwhen.status = [\"enabled\"]\n";
    let directory = tempfile::tempdir().unwrap();
    let path = write_policy_config(directory.path(), &simulator, policy);
    let config = cometapi_keymon::config::load(Some(&path)).unwrap();

    // A wallet of 2,000,000 units: above the threshold, nothing is written.
    simulator.update_wallet(|wallet| wallet.quota = 2_000_000);
    let daemon = start_daemon(config).await;
    daemon
        .wait_for("a few polls", WAIT, |metrics| {
            poll_count(metrics, "main") >= 3.0
        })
        .await;
    assert!(
        simulator
            .requests()
            .iter()
            .all(|request| request.method == "GET"),
        "no write while the wallet is above the threshold"
    );

    // The wallet drops below it: every enabled vip key is disabled (status_only), nothing else.
    simulator.update_wallet(|wallet| wallet.quota = 400_000);
    daemon
        .wait_for("the vip keys disabled", WAIT, |_| {
            vip_enabled
                .iter()
                .all(|id| simulator.token(*id).is_some_and(|token| token.status == 2))
        })
        .await;
    daemon.stop().await;
    let writes: Vec<_> = simulator
        .requests()
        .into_iter()
        .filter(|request| request.method == "PUT")
        .collect();
    assert_eq!(writes.len(), vip_enabled.len(), "{writes:?}");
    assert!(writes
        .iter()
        .all(|request| request.query.as_deref() == Some("status_only=true")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_the_spend_read_ends_the_polls_reads_and_keeps_it_complete() {
    let simulator = simulator_of(ServerGeneration::NewApiLatest, 30).await;
    traffic(&simulator, 5, 0);
    let daemon = start_daemon_for(&simulator, every(1)).await;
    let before = daemon
        .wait_for("the spend", WAIT, |metrics| {
            !key_model_series(metrics).is_empty()
        })
        .await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::FlowUsage,
        page: None,
        times: FaultTimes::Once,
        kind: FaultKind::HttpStatus {
            status: 429,
            body: String::new(),
            retry_after: Some(1),
        },
    });
    let after = daemon
        .wait_for("the refusal counted and a poll after it", WAIT, |metrics| {
            metrics.errors("main", "usage_failed") == 1.0
                && poll_count(metrics, "main") >= poll_count(&before, "main") + 3.0
        })
        .await;
    daemon.stop().await;
    assert_eq!(after.up("main"), 1.0);
    assert_eq!(
        after.errors("main", "http_429"),
        0.0,
        "the poll itself completed"
    );
    let requests = simulator.requests();
    let refused = requests
        .iter()
        .position(|request| request.status == 429)
        .expect("the 429");
    assert_eq!(
        requests[refused + 1].path,
        "/api/status",
        "nothing more in the poll that was refused: {:?}",
        &requests[refused..(refused + 3).min(requests.len())]
    );
    assert_eq!(
        after.family("cometapi_subscription_info"),
        before.family("cometapi_subscription_info"),
        "the subscriptions kept their values"
    );
}
