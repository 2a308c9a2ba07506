//! Every kind of server fault: the daemon keeps running, keeps serving the last snapshot, sets
//! `cometapi_up` to 0, counts the right reason, and recovers on the next good poll.

mod support;

use std::time::Duration;

use cometapi_keymon::simulator::{Fault, FaultEndpoint, FaultKind, FaultTimes};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

async fn fault_is_survived(endpoint: FaultEndpoint, kind: FaultKind, reason: &str) {
    let simulator = start_simulator(150).await;
    let daemon = start_daemon_for(&simulator, every(1)).await;
    let good = daemon.first_poll().await;
    let good_keys = good.key_series();
    assert!(!good_keys.is_empty());

    simulator.push_fault(Fault {
        endpoint,
        page: None,
        times: FaultTimes::Always,
        kind,
    });
    let failed = daemon
        .wait_for(&format!("reason {reason}"), WAIT, |metrics| {
            metrics.errors("main", reason) >= 1.0 && metrics.up("main") == 0.0
        })
        .await;
    assert_eq!(
        failed.key_series(),
        good_keys,
        "the last complete snapshot is still served"
    );
    for other in cometapi_keymon::api::POLL_ERROR_REASONS
        .iter()
        .filter(|other| **other != reason)
    {
        assert_eq!(
            failed.errors("main", other),
            0.0,
            "only {reason} is counted, not {other}"
        );
    }
    let healthz = reqwest::get(daemon.url("/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200, "the daemon keeps running");

    simulator.clear_faults();
    let recovered = daemon
        .wait_for("recovery", WAIT, |metrics| metrics.up("main") == 1.0)
        .await;
    assert_eq!(recovered.key_series(), good_keys);
    daemon.stop().await;
}

fn status(status: u16, body: &str) -> FaultKind {
    FaultKind::HttpStatus {
        status,
        body: body.into(),
        retry_after: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_500() {
    fault_is_survived(FaultEndpoint::List, status(500, ""), "http_5xx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_with_an_html_page() {
    fault_is_survived(
        FaultEndpoint::Any,
        status(502, "<html><body>502 Bad Gateway</body></html>"),
        "http_5xx",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rejected_401() {
    let body = r#"{"code":"AUTH_UNAUTHORIZED","message":"Unauthorized, invalid access token","success":false}"#;
    fault_is_survived(FaultEndpoint::List, status(401, body), "http_401").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_privilege_403() {
    fault_is_survived(
        FaultEndpoint::List,
        status(
            403,
            r#"{"code":"AUTH_INSUFFICIENT_PRIVILEGE","success":false}"#,
        ),
        "http_403",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_429_with_retry_after() {
    let kind = FaultKind::HttpStatus {
        status: 429,
        body: String::new(),
        retry_after: Some(1),
    };
    fault_is_survived(FaultEndpoint::List, kind, "http_429").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_404() {
    let body = r#"{"error":{"message":"Invalid URL (GET /api/token/)","type":"invalid_request_error","param":"","code":""}}"#;
    fault_is_survived(FaultEndpoint::List, status(404, body), "http_other").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_times_out() {
    fault_is_survived(
        FaultEndpoint::List,
        FaultKind::Delay(Duration::from_secs(4)),
        "timeout",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_json() {
    fault_is_survived(FaultEndpoint::List, FaultKind::MalformedJson, "decode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_of_the_wrong_shape() {
    fault_is_survived(FaultEndpoint::List, FaultKind::WrongShape, "decode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body() {
    fault_is_survived(FaultEndpoint::List, FaultKind::TruncatedBody, "decode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body() {
    fault_is_survived(
        FaultEndpoint::List,
        FaultKind::Oversized {
            bytes: 12 * 1024 * 1024,
        },
        "body_too_large",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_false() {
    let kind = FaultKind::SuccessFalse {
        message: "record not found".into(),
    };
    fault_is_survived(FaultEndpoint::List, kind, "api_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_without_an_answer() {
    fault_is_survived(FaultEndpoint::List, FaultKind::CloseConnection, "connect").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_endpoint_failure_fails_the_poll() {
    fault_is_survived(FaultEndpoint::Status, status(500, ""), "http_5xx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_connect_error_and_readyz_stays_503() {
    let mut account = account_for("main", &start_simulator(1).await);
    account.base_url = "http://127.0.0.1:9".into();
    let daemon = start_daemon(test_config(vec![account], every(1))).await;
    let metrics = daemon
        .wait_for("a connect error", WAIT, |metrics| {
            metrics.errors("main", "connect") >= 1.0
        })
        .await;
    assert_eq!(metrics.up("main"), 0.0);
    assert!(metrics.key_series().is_empty());
    let readyz = reqwest::get(daemon.url("/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(readyz.text().await.unwrap().contains("main"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_server_errors_are_retried_within_the_poll() {
    let simulator = start_simulator(150).await;
    simulator.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: Some(2),
        times: FaultTimes::Once,
        kind: status(503, ""),
    });
    let daemon = start_daemon_for(&simulator, every(3_600)).await;
    let metrics = daemon.first_poll().await;
    assert_eq!(
        metrics.errors("main", "http_5xx"),
        0.0,
        "one retry absorbed the 503"
    );
    assert_eq!(
        metrics.value(
            "cometapi_api_requests_total",
            &[("account", "main"), ("endpoint", "list"), ("code", "503")]
        ),
        1.0
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_of_one_account_never_overlap_and_a_slow_account_does_not_delay_another() {
    let slow = start_simulator(150).await;
    let fast = start_simulator(50).await;
    slow.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: None,
        times: FaultTimes::Always,
        kind: FaultKind::Delay(Duration::from_millis(1_300)),
    });
    let mut config = test_config(
        vec![account_for("slow", &slow), account_for("fast", &fast)],
        every(1),
    );
    // Slow, but never slow enough to time out: a retried page would blur the request pattern.
    config.poll.timeout = Duration::from_secs(10);
    let daemon = start_daemon(config).await;
    let metrics = daemon
        .wait_for("skipped ticks on the slow account", WAIT, |metrics| {
            metrics.value("cometapi_poll_skipped_total", &[("account", "slow")]) >= 2.0
                && metrics.value(
                    "cometapi_poll_duration_seconds_count",
                    &[("account", "fast")],
                ) >= 4.0
        })
        .await;
    assert_eq!(
        metrics.value("cometapi_poll_skipped_total", &[("account", "fast")]),
        0.0
    );
    // Requests of the slow account come in whole polls: status, page 1, page 2, wallet,
    // usage, subscriptions (and the plans on the first poll), then the next poll's status.
    let sequence: Vec<String> = slow
        .requests()
        .iter()
        .map(|request| match request.path.as_str() {
            "/api/status" => "status".to_owned(),
            "/api/token/" => request
                .query
                .clone()
                .unwrap_or_default()
                .split('&')
                .next()
                .unwrap_or_default()
                .to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let mut polls: Vec<Vec<&str>> = Vec::new();
    for entry in &sequence {
        if entry == "status" {
            polls.push(Vec::new());
        }
        polls
            .last_mut()
            .expect("the first request is a status")
            .push(entry);
    }
    let whole_poll = [
        "status",
        "p=1",
        "p=2",
        "/api/user/self",
        "/api/data/flow/self",
        "/api/subscription/self",
    ];
    let last = polls.len() - 1;
    for (index, poll) in polls.iter().enumerate() {
        let expected: Vec<&str> = if index == 0 {
            whole_poll
                .iter()
                .copied()
                .chain(["/api/subscription/plans"])
                .collect()
        } else {
            whole_poll.to_vec()
        };
        // The last poll may still be running.
        let complete = if index == last {
            expected.starts_with(poll)
        } else {
            *poll == expected
        };
        assert!(complete, "poll {index} was {poll:?}; sequence {sequence:?}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_bare_array_after_paginated_listings_is_not_an_empty_account() {
    let body = r#"{"data":[],"message":"","success":true}"#;
    fault_is_survived(FaultEndpoint::List, status(200, body), "decode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_without_total_cannot_be_checked_and_is_not_served() {
    let body = r#"{"data":{"page":1,"page_size":100,"items":[]},"message":"","success":true}"#;
    fault_is_survived(FaultEndpoint::List, status(200, body), "decode").await;
}
