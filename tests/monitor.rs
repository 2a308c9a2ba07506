//! The monitor end to end over loopback: the simulator, the daemon, and scrapes of /metrics.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cometapi_keymon::simulator::{
    Fault, FaultEndpoint, FaultKind, FaultTimes, SimToken, Simulator,
};
use support::*;

/// The per-key series the simulator's records imply, computed from the records alone.
fn expected_key_series(account: &str, tokens: &[SimToken], now: i64) -> BTreeMap<Series, f64> {
    let mut expected = BTreeMap::new();
    for token in tokens {
        let id = token.id.to_string();
        let labels = [("account", account), ("key_id", id.as_str())];
        let mut put = |name: &str, value: f64| {
            expected.insert(Series::new(name, &labels), value);
        };
        let expired = token.expired_time != -1 && token.expired_time < now;
        let usable =
            token.status == 1 && !expired && (token.unlimited_quota || token.remain_quota > 0);
        put("cometapi_key_usable", f64::from(u8::from(usable)));
        if !token.unlimited_quota {
            put("cometapi_key_remaining_quota", token.remain_quota as f64);
        }
        put("cometapi_key_used_quota", token.used_quota as f64);
        put(
            "cometapi_key_unlimited_quota",
            f64::from(u8::from(token.unlimited_quota)),
        );
        if token.expired_time != -1 {
            put(
                "cometapi_key_expiration_timestamp_seconds",
                token.expired_time as f64,
            );
        }
        put(
            "cometapi_key_created_timestamp_seconds",
            token.created_time as f64,
        );
        if token.accessed_time != 0 {
            put(
                "cometapi_key_last_access_timestamp_seconds",
                token.accessed_time as f64,
            );
        }
        let ip_restricted = token
            .allow_ips
            .as_deref()
            .is_some_and(|ips| ips.lines().any(|line| !line.trim().is_empty()));
        put(
            "cometapi_key_ip_restricted",
            f64::from(u8::from(ip_restricted)),
        );
        let model_restricted = token.model_limits_enabled
            && token
                .model_limits
                .split(',')
                .any(|model| !model.trim().is_empty());
        put(
            "cometapi_key_model_restricted",
            f64::from(u8::from(model_restricted)),
        );
        let status_name = match token.status {
            1 => "enabled",
            2 => "disabled",
            3 => "expired",
            4 => "exhausted",
            _ => "unknown",
        };
        for status in ["enabled", "disabled", "expired", "exhausted", "unknown"] {
            expected.insert(
                Series::new(
                    "cometapi_key_status",
                    &[("account", account), ("key_id", &id), ("status", status)],
                ),
                f64::from(u8::from(status == status_name)),
            );
        }
        expected.insert(
            Series::new(
                "cometapi_key_info",
                &[
                    ("account", account),
                    ("key_id", &id),
                    ("name", &token.name),
                    ("group", &token.group),
                ],
            ),
            1.0,
        );
    }
    expected
}

fn list_and_status_requests(simulator: &Simulator) -> usize {
    simulator
        .requests()
        .iter()
        .filter(|request| request.path.starts_with("/api/token") || request.path == "/api/status")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_poll_of_1234_keys_exports_exactly_the_series_the_records_imply() {
    let simulator = start_simulator(1_234).await;
    let daemon = start_daemon_for(&simulator, every(3_600)).await;
    // Ready means the series are there: /readyz must not turn 200 before the render is swapped in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(daemon.url("/readyz")).await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = daemon.metrics().await;
    assert_eq!(metrics.up("main"), 1.0);
    let tokens = simulator.tokens();
    assert_eq!(tokens.len(), 1_234);

    let expected = expected_key_series("main", &tokens, unix_now());
    let actual = metrics.key_series();
    let missing: Vec<_> = expected
        .keys()
        .filter(|series| !actual.contains_key(*series))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|series| !expected.contains_key(*series))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    for (series, value) in &expected {
        assert_eq!(actual[series], *value, "{series:?}");
    }

    let mut by_status = BTreeMap::new();
    for token in &tokens {
        let status = match token.status {
            1 => "enabled",
            2 => "disabled",
            3 => "expired",
            4 => "exhausted",
            _ => "unknown",
        };
        *by_status.entry(status).or_insert(0.0) += 1.0;
    }
    for status in ["enabled", "disabled", "expired", "exhausted", "unknown"] {
        let count = metrics.value("cometapi_keys", &[("account", "main"), ("status", status)]);
        assert_eq!(
            count,
            by_status.get(status).copied().unwrap_or(0.0),
            "{status}"
        );
    }
    assert_eq!(
        metrics.value("cometapi_quota_per_unit", &[("account", "main")]),
        simulator.quota_per_unit()
    );

    // ceil(1234 / 100) list pages plus the status request, nothing more.
    assert_eq!(list_and_status_requests(&simulator), 13 + 1);
    assert_eq!(
        metrics.value(
            "cometapi_api_requests_total",
            &[("account", "main"), ("endpoint", "list"), ("code", "200")]
        ),
        13.0
    );
    assert!(
        metrics.value(
            "cometapi_last_poll_success_timestamp_seconds",
            &[("account", "main")]
        ) >= (unix_now() - 30) as f64
    );

    // The gzip scrape carries the same text as the plain one.
    let gzip_text = daemon.scrape_text(true).await;
    assert_eq!(Metrics::parse(&gzip_text).key_series(), actual);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_request_uses_p_from_1_and_page_size_100() {
    let simulator = start_simulator(250).await;
    let daemon = start_daemon_for(&simulator, every(3_600)).await;
    daemon.first_poll().await;
    let pages: Vec<String> = simulator
        .requests()
        .iter()
        .filter(|request| request.path == "/api/token/")
        .map(|request| request.query.clone().unwrap_or_default())
        .collect();
    assert_eq!(pages.len(), 3);
    for (index, query) in pages.iter().enumerate() {
        let parameters: BTreeMap<&str, &str> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .collect();
        assert_eq!(parameters["p"], (index + 1).to_string());
        assert_eq!(parameters["page_size"], "100");
    }
    for request in simulator.requests() {
        if request.path.starts_with("/api/token") {
            assert!(
                request.authorization_present,
                "token routes carry the access token"
            );
        }
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_created_and_deleted_between_pages_still_yield_exactly_the_right_key_set() {
    let simulator = start_simulator(1_050).await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: Some(3),
        times: FaultTimes::Once,
        kind: FaultKind::Churn {
            create: 3,
            delete: 2,
        },
    });
    let daemon = start_daemon_for(&simulator, every(3_600)).await;
    let metrics = daemon.first_poll().await;
    let expected_ids: BTreeSet<String> = simulator
        .tokens()
        .iter()
        .map(|token| token.id.to_string())
        .collect();
    let exported_ids: BTreeSet<String> = metrics
        .family("cometapi_key_info")
        .keys()
        .map(|series| series.label("key_id").unwrap().to_owned())
        .collect();
    assert_eq!(exported_ids, expected_ids);
    assert_eq!(exported_ids.len(), 1_051);
    // The status request, a first pass of 11 pages that did not add up, one re-scan of 11.
    assert_eq!(list_and_status_requests(&simulator), 1 + 11 + 11);
    assert_eq!(metrics.errors("main", "incomplete"), 0.0);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_keeps_changing_is_incomplete_and_not_served() {
    let simulator = start_simulator(300).await;
    let daemon = start_daemon_for(&simulator, every(3_600)).await;
    let before = daemon.first_poll().await;
    daemon.stop().await;

    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: Some(2),
        times: FaultTimes::Always,
        kind: FaultKind::Churn {
            create: 1,
            delete: 0,
        },
    });
    let daemon = start_daemon_for(&simulator, every(3_600)).await;
    let after = daemon
        .wait_for("an incomplete poll", Duration::from_secs(20), |metrics| {
            metrics.errors("main", "incomplete") == 1.0
        })
        .await;
    assert_eq!(after.up("main"), 0.0);
    assert!(
        after.key_series().is_empty(),
        "nothing partial is ever served"
    );
    assert!(!before.key_series().is_empty());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_polls_on_its_ticks() {
    let simulator = start_simulator(20).await;
    let schedule = cometapi_keymon::config::PollSchedule::Cron("* * * * * *".into());
    let daemon = start_daemon_for(&simulator, schedule).await;
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let polls = daemon.metrics().await.value(
        "cometapi_poll_duration_seconds_count",
        &[("account", "main")],
    );
    // The poll at start plus one per cron tick: about 4 in 3.3 s, never a tight loop.
    assert!((3.0..=6.0).contains(&polls), "{polls} polls in 3.3 s");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_grows_faster_than_it_is_read_gives_up_after_a_few_pages() {
    let simulator = start_simulator(150).await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: None,
        times: FaultTimes::Always,
        kind: FaultKind::Churn {
            create: 100,
            delete: 0,
        },
    });
    let daemon = start_daemon_for(&simulator, every(3_600)).await;
    let metrics = daemon
        .wait_for("an incomplete poll", Duration::from_secs(20), |metrics| {
            metrics.errors("main", "incomplete") == 1.0
        })
        .await;
    assert_eq!(metrics.up("main"), 0.0);
    // Each pass stops 5 pages past what its first page's total implies: 150 keys allow 7 pages;
    // 7 pages later the second pass starts at 850 keys and allows 14.
    let list_requests = simulator
        .requests()
        .iter()
        .filter(|request| request.path == "/api/token/")
        .count();
    assert_eq!(list_requests, 7 + 14);
    daemon.stop().await;
}

/// Requests the daemon counted for `account` (every endpoint and code).
fn requests_of(metrics: &Metrics, account: &str) -> f64 {
    metrics
        .family("cometapi_api_requests_total")
        .iter()
        .filter(|(series, _)| series.label("account") == Some(account))
        .map(|(_, value)| value)
        .sum()
}

/// Three accounts on one server share its request budget: the server (limit on, 48 requests per
/// 60 s per client IP, like new-api's limiter) never answers 429 while the accounts, polling every
/// second at a budget of 24 per minute, take turns. With a budget each they would send three
/// times as much and be refused within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_on_one_server_share_its_budget_and_are_never_rate_limited() {
    use cometapi_keymon::simulator::{RateLimit, SimulatorConfig};
    let simulator = start_simulator_with(cometapi_keymon::simulator::SimulatorConfig {
        keys: 150,
        rate_limit: Some(RateLimit {
            requests: 48,
            window: Duration::from_secs(60),
            send_retry_after: true,
        }),
        ..SimulatorConfig::default()
    })
    .await;
    let names = ["a", "b", "c"];
    let accounts = names
        .iter()
        .map(|name| {
            let mut account = account_for(name, &simulator);
            account.requests_per_minute = 24;
            account
        })
        .collect();
    let mut config = test_config(accounts, every(1));
    // 24 a minute: one minute's burst covers the three first polls (status, pages, wallet,
    // spend, subscriptions, plans: 7 requests each), and the worst 60 s stays within the 48.
    config.poll.requests_per_minute = 24;
    let started = std::time::Instant::now();
    let daemon = start_daemon(config).await;
    daemon
        .wait_for(
            "every account's first poll",
            Duration::from_secs(20),
            |metrics| names.iter().all(|name| metrics.up(name) == 1.0),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let metrics = daemon.metrics().await;
    let elapsed = started.elapsed().as_secs_f64();
    daemon.stop().await;

    let refused = simulator
        .requests()
        .iter()
        .filter(|request| request.status == 429)
        .count();
    assert_eq!(refused, 0, "the server was never asked too much");
    let total = simulator.requests().len() as f64;
    // One minute's burst, then one request per 2.5 s for all three together.
    assert!(
        total <= 24.0 + elapsed / 2.5 + 1.0,
        "{total} requests in {elapsed:.1} s"
    );
    let counts: Vec<f64> = names
        .iter()
        .map(|name| requests_of(&metrics, name))
        .collect();
    let (least, most) = counts
        .iter()
        .fold((f64::MAX, 0.0f64), |(least, most), count| {
            (least.min(*count), most.max(*count))
        });
    assert!(
        least >= 3.0 && most - least <= 3.0,
        "fair shares: {counts:?}"
    );
}

/// A 429 to one account holds back every account of that server for its `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_account_of_the_server() {
    let simulator = start_simulator(30).await;
    let accounts = vec![account_for("a", &simulator), account_for("b", &simulator)];
    let daemon = start_daemon(test_config(accounts, every(1))).await;
    daemon
        .wait_for("both first polls", Duration::from_secs(20), |metrics| {
            metrics.up("a") == 1.0 && metrics.up("b") == 1.0
        })
        .await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::Any,
        page: None,
        times: FaultTimes::Once,
        kind: FaultKind::HttpStatus {
            status: 429,
            body: String::new(),
            retry_after: Some(2),
        },
    });
    daemon
        .wait_for("the 429 counted", Duration::from_secs(20), |metrics| {
            metrics.errors("a", "http_429") + metrics.errors("b", "http_429") == 1.0
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    daemon.stop().await;
    let requests = simulator.requests();
    let limited = requests
        .iter()
        .find(|request| request.status == 429)
        .expect("the 429 was answered")
        .at;
    let during_pause = requests
        .iter()
        .filter(|request| {
            request.at > limited + Duration::from_millis(300)
                && request.at < limited + Duration::from_millis(1_800)
        })
        .count();
    assert_eq!(
        during_pause, 0,
        "no account sent anything while the server was paused"
    );
    assert!(
        requests
            .iter()
            .any(|request| request.at > limited + Duration::from_secs(2)),
        "polling resumed after the pause"
    );
}
