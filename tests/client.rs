//! The management API client against the simulator: every endpoint, safe writes, auth modes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cometapi_keymon::api::{scan_account, ApiClient, ApiError, IgnoreRequests, KeyRecord};
use cometapi_keymon::config::PollConfig;
use cometapi_keymon::simulator::{AuthMode, Simulator, SimulatorConfig};
use support::*;
use tokio_util::sync::CancellationToken;

fn client_for(simulator: &Simulator, user_id: Option<i64>) -> ApiClient {
    let mut account = account_for("main", simulator);
    account.user_id = user_id;
    let poll = PollConfig {
        timeout: Duration::from_secs(5),
        ..PollConfig::default()
    };
    let mut settings = cometapi_keymon::config::client_settings(&account, &poll);
    settings.requests_per_minute = 6_000;
    ApiClient::new(settings, Arc::new(IgnoreRequests), CancellationToken::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_status_and_delete_keep_every_other_field() {
    let simulator = start_simulator(30).await;
    let client = client_for(&simulator, None);

    let name = format!("keymon-test-{}", unix_now());
    let new_key = KeyRecord {
        name: name.clone(),
        expired_time: -1,
        remain_quota: 123_456,
        model_limits_enabled: true,
        model_limits: "gpt-4.1".into(),
        allow_ips: Some("10.0.0.0/8\n2001:db8::1".into()),
        group: "vip".into(),
        ..KeyRecord::default()
    };
    client.create_key(&new_key).await.unwrap();
    let created = simulator
        .tokens()
        .into_iter()
        .find(|token| token.name == name)
        .expect("the key was created");

    let fetched = client.get_key(created.id).await.unwrap();
    assert_eq!(
        (
            fetched.remain_quota,
            fetched.expired_time,
            fetched.group.as_str()
        ),
        (123_456, -1, "vip")
    );

    // A rename through a full update built from the fresh read keeps quota, expiry, IP and model limits.
    let renamed = KeyRecord {
        name: format!("{name}-renamed"),
        ..fetched.clone()
    };
    let answer = client.update_key(&renamed).await.unwrap();
    assert_eq!(answer.name, renamed.name);
    let after_rename = simulator.token(created.id).unwrap();
    assert_eq!(
        after_rename,
        cometapi_keymon::simulator::SimToken {
            name: renamed.name.clone(),
            ..created.clone()
        }
    );

    // Status only: nothing but the status moves.
    client.update_key_status(&answer, 2).await.unwrap();
    let disabled = simulator.token(created.id).unwrap();
    assert_eq!(
        disabled,
        cometapi_keymon::simulator::SimToken {
            status: 2,
            ..after_rename.clone()
        }
    );
    let status_request = simulator
        .requests()
        .into_iter()
        .rev()
        .find(|request| request.method == "PUT")
        .unwrap();
    assert_eq!(status_request.query.as_deref(), Some("status_only=true"));
    let body: serde_json::Value = serde_json::from_str(&status_request.body).unwrap();
    for field in ["id", "status"].into_iter().chain(EDITABLE_FIELDS) {
        assert!(
            body.get(field).is_some(),
            "status-only body carries {field}: {body}"
        );
    }
    let full_update = simulator
        .requests()
        .into_iter()
        .find(|request| request.method == "PUT")
        .unwrap();
    assert_eq!(full_update.query, None, "the rename was a full update");
    assert!(
        !serde_json::from_str::<serde_json::Value>(&full_update.body)
            .unwrap()
            .as_object()
            .unwrap()
            .contains_key("status")
    );

    client.delete_key(created.id).await.unwrap();
    assert!(simulator.token(created.id).is_none());
    match client.get_key(created.id).await {
        Err(error @ ApiError::KeyNotFound { .. }) => {
            assert_eq!(error.reason(), Some("api_error"));
            assert_eq!(
                error.to_string(),
                format!("account main has no key {}", created.id)
            );
        }
        other => panic!("a deleted key is refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_is_sent_raw_and_a_wrong_one_is_http_401() {
    let simulator = start_simulator(5).await;
    let client = client_for(&simulator, None);
    assert_eq!(scan_account(&client).await.unwrap().keys.len(), 5);
    let mut account = account_for("main", &simulator);
    account.token = cometapi_keymon::secret::Secret::new("not-the-token");
    let wrong = ApiClient::new(
        cometapi_keymon::config::client_settings(&account, &PollConfig::default()),
        Arc::new(IgnoreRequests),
        CancellationToken::new(),
    )
    .unwrap();
    let error = scan_account(&wrong).await.unwrap_err();
    assert_eq!(error.reason(), Some("http_401"), "{error}");
    assert!(!error.to_string().contains("not-the-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_servers_get_new_api_user_when_configured() {
    let simulator = start_simulator_with(SimulatorConfig {
        keys: 12,
        auth_mode: AuthMode::Legacy,
        user_id: 42,
        ..SimulatorConfig::default()
    })
    .await;
    let without_user = scan_account(&client_for(&simulator, None))
        .await
        .unwrap_err();
    assert_eq!(without_user.reason(), Some("http_401"));
    let listing = scan_account(&client_for(&simulator, Some(42)))
        .await
        .unwrap();
    assert_eq!(listing.keys.len(), 12);
    assert!(simulator
        .requests()
        .iter()
        .any(|request| request.new_api_user.as_deref() == Some("42")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The server answers HTTP 200 `success:false`, but it is the same refusal as a newer server's
/// 401: counted as `http_401`, so one alert covers both generations.
async fn a_bad_pat_on_a_legacy_server_is_http_200_success_false_and_counted_as_http_401() {
    let simulator = start_simulator_with(SimulatorConfig {
        keys: 3,
        auth_mode: AuthMode::Legacy,
        user_id: 42,
        ..SimulatorConfig::default()
    })
    .await;
    let mut account = account_for("main", &simulator);
    account.token = cometapi_keymon::secret::Secret::new("not-the-token");
    account.user_id = Some(42);
    let client = ApiClient::new(
        cometapi_keymon::config::client_settings(&account, &PollConfig::default()),
        Arc::new(IgnoreRequests),
        CancellationToken::new(),
    )
    .unwrap();
    let error = scan_account(&client).await.unwrap_err();
    assert_eq!(error.reason(), Some("http_401"), "{error}");
    assert!(
        error.to_string().contains("access token rejected"),
        "{error}"
    );
}

/// A server older than 2025-06 answers the listing with a bare array and a 0-based `p`; the
/// scan notices on page 1, starts again from `p=0` and stops at the first short page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_array_listings_of_older_servers_are_read_from_page_zero() {
    use cometapi_keymon::simulator::{Fault, FaultEndpoint, FaultKind, FaultTimes};
    let simulator = start_simulator(3).await;
    let record = |id: i64| {
        serde_json::json!({
            "id": id, "user_id": 1, "key": "k", "status": 1, "name": format!("old-{id}"),
            "created_time": 1_700_000_000, "accessed_time": 0, "expired_time": -1,
            "remain_quota": id * 10, "unlimited_quota": false, "used_quota": 0,
            "models": "", "subnet": ""
        })
    };
    // one-api pages hold 10 keys: ids 25..16 on p=0, 15..6 on p=1, 5..1 on p=2.
    let page = |ids: std::ops::RangeInclusive<i64>| {
        let items: Vec<serde_json::Value> = ids.rev().map(record).collect();
        serde_json::json!({ "success": true, "message": "", "data": items }).to_string()
    };
    let answer = |page_number: i64, times: FaultTimes, body: String| Fault {
        endpoint: FaultEndpoint::List,
        page: Some(page_number),
        times,
        kind: FaultKind::HttpStatus {
            status: 200,
            body,
            retry_after: None,
        },
    };
    // The simulator parses `p` like the newest server (p=0 is page 1), so the answers are queued
    // in request order: p=1, p=0, p=1, p=2.
    for body in [page(6..=15), page(16..=25), page(6..=15)] {
        simulator.push_fault(answer(1, FaultTimes::Once, body));
    }
    simulator.push_fault(answer(2, FaultTimes::Once, page(1..=5)));

    let listing = scan_account(&client_for(&simulator, None)).await.unwrap();
    let ids: Vec<i64> = listing.keys.iter().map(|key| key.id).collect();
    assert_eq!(ids, (1..=25).collect::<Vec<_>>());
    assert_eq!(listing.keys[4].remain_quota, 50);
    let pages: Vec<String> = simulator
        .requests()
        .iter()
        .filter(|request| request.path == "/api/token/")
        .map(|request| {
            request
                .query
                .clone()
                .unwrap_or_default()
                .split('&')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(pages, ["p=1", "p=0", "p=1", "p=2"]);
}

/// one-api: the first poll learns on `p=1` that the listing is a bare array and reads it from
/// `p=0`; every later poll starts at `p=0`, so it costs exactly the status request and
/// `floor(N / 10) + 1` pages of 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_api_polls_cost_no_extra_request_once_the_listing_form_is_known() {
    let simulator = start_simulator_with(SimulatorConfig {
        keys: 25,
        ..SimulatorConfig::one_api()
    })
    .await;
    let client = client_for(&simulator, None);
    let list_pages = |simulator: &Simulator| -> Vec<String> {
        simulator
            .requests()
            .iter()
            .filter(|request| request.path == "/api/token/")
            .map(|request| {
                let query = request.query.clone().unwrap_or_default();
                query.split('&').next().unwrap().to_owned()
            })
            .collect()
    };
    let first = scan_account(&client).await.unwrap();
    assert_eq!(first.keys.len(), 25);
    assert_eq!(list_pages(&simulator), ["p=1", "p=0", "p=1", "p=2"]);
    assert_eq!((first.requests, simulator.requests().len()), (5, 5));
    for _ in 0..2 {
        simulator.clear_requests();
        let later = scan_account(&client).await.unwrap();
        assert_eq!(later.keys.len(), 25);
        assert_eq!(list_pages(&simulator), ["p=0", "p=1", "p=2"]);
        assert_eq!(
            (later.requests, simulator.requests().len()),
            (4, 4),
            "status + 3 pages"
        );
    }
    // Exactly a multiple of 10: the last page is empty, as on the real server.
    for id in simulator.tokens().iter().take(5).map(|token| token.id) {
        simulator.delete_token(id);
    }
    simulator.clear_requests();
    let twenty = scan_account(&client).await.unwrap();
    assert_eq!((twenty.keys.len(), simulator.requests().len()), (20, 4));
}

/// A server known to answer with a bare array that is upgraded to the paginated listing: the
/// next poll's `p=0` brings an envelope, and the scan reads it from page 1 like any new server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_server_is_read_with_pages_again() {
    use cometapi_keymon::api::ListingForm;
    use cometapi_keymon::simulator::{Fault, FaultEndpoint, FaultKind, FaultTimes};
    let simulator = start_simulator(150).await;
    // Before the upgrade: one bare page of 3 keys, then an empty one (asked as p=1, p=0 and p=1;
    // the simulator parses p=0 as page 1 too).
    let three = serde_json::json!({
        "success": true, "message": "",
        "data": [{"id": 3, "name": "a"}, {"id": 2, "name": "b"}, {"id": 1, "name": "c"}]
    })
    .to_string();
    let empty = r#"{"success":true,"message":"","data":[]}"#.to_owned();
    for bare in [three.clone(), three, empty] {
        simulator.push_fault(Fault {
            endpoint: FaultEndpoint::List,
            page: Some(1),
            times: FaultTimes::Once,
            kind: FaultKind::HttpStatus {
                status: 200,
                body: bare.clone(),
                retry_after: None,
            },
        });
    }
    let client = client_for(&simulator, None);
    assert_eq!(scan_account(&client).await.unwrap().keys.len(), 3);
    assert_eq!(client.listing_form(), ListingForm::BareZeroBased);
    simulator.clear_requests();
    let listing = scan_account(&client).await.unwrap();
    assert_eq!(listing.keys.len(), 150);
    let pages: Vec<String> = simulator
        .requests()
        .iter()
        .filter(|request| request.path == "/api/token/")
        .map(|request| {
            let query = request.query.clone().unwrap_or_default();
            query.split('&').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(pages, ["p=0", "p=1", "p=2"]);
    assert_eq!(client.listing_form(), ListingForm::Paginated);
}
