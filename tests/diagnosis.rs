//! What the client says when the first hour goes wrong: a server that needs `New-Api-User`, a
//! wrong `user_id`, a wrong token on servers that answer it with HTTP 200, an API key pasted as
//! the access token, a host that does not resolve, a port with nothing listening, a `base_url`
//! pointing at the web UI, and a key that does not exist. Each message must say what the server
//! said and what to do, name the account (and host and port where it matters), and never hold
//! the token.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cometapi_keymon::api::{
    scan_account, ApiClient, ApiError, AuthProblem, ClientSettings, IgnoreRequests,
};
use cometapi_keymon::secret::Secret;
use cometapi_keymon::simulator::{AuthMode, Simulator, SimulatorConfig};
use support::*;
use tokio_util::sync::CancellationToken;

fn client(base_url: &str, token: &str, user_id: Option<i64>) -> ApiClient {
    let settings = ClientSettings {
        account: "main".into(),
        base_url: base_url.into(),
        token: Secret::new(token),
        user_id,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        max_body_bytes: 4 * 1024 * 1024,
        max_retries: 0,
        retry_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
        requests_per_minute: 6_000,
    };
    ApiClient::new(settings, Arc::new(IgnoreRequests), CancellationToken::new()).unwrap()
}

async fn scan_error(simulator: &Simulator, token: &str, user_id: Option<i64>) -> ApiError {
    let client = client(&simulator.base_url(), token, user_id);
    let error = scan_account(&client).await.unwrap_err();
    let text = error.to_string();
    assert!(!text.contains(&simulator.access_token()), "{text}");
    assert!(
        !text.contains(token),
        "the configured token is never shown: {text}"
    );
    error
}

async fn simulator_like(config: SimulatorConfig) -> Simulator {
    start_simulator_with(SimulatorConfig { keys: 5, ..config }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_needs_new_api_user_says_so_in_english_and_in_chinese() {
    for config in [
        SimulatorConfig {
            auth_mode: AuthMode::Legacy,
            ..SimulatorConfig::default()
        },
        SimulatorConfig::new_api_2026_01(),
    ] {
        let chinese = config.chinese_messages;
        let simulator = simulator_like(config).await;
        let token = simulator.access_token();

        let missing = scan_error(&simulator, &token, None).await;
        assert!(
            matches!(
                missing,
                ApiError::Unauthorized {
                    problem: AuthProblem::UserIdRequired,
                    ..
                }
            ),
            "{missing:?}"
        );
        let text = missing.to_string();
        assert!(
            text.contains("this server requires user_id (your numeric user id) for account main"),
            "{text}"
        );
        let server_text = if chinese {
            "无权进行此操作，未提供 New-Api-User"
        } else {
            "Unauthorized, New-Api-User header not provided"
        };
        assert!(text.contains(server_text), "the server's words: {text}");
        assert!(!text.contains("access token rejected"), "{text}");
        assert_eq!(missing.reason(), Some("http_401"));

        let wrong_user = scan_error(&simulator, &token, Some(7)).await;
        let text = wrong_user.to_string();
        assert!(text.contains("user_id 7 is not the token's user"), "{text}");
        assert!(!text.contains("access token rejected"), "{text}");
        assert_eq!(wrong_user.reason(), Some("http_401"));

        let client = client(&simulator.base_url(), &token, Some(5678));
        assert_eq!(scan_account(&client).await.unwrap().keys.len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_answered_with_http_200_is_the_same_rejection_as_a_401() {
    let newest = simulator_like(SimulatorConfig::default()).await;
    let expected = scan_error(&newest, "tok-wrong-but-long-enough", None).await;
    assert_eq!(expected.reason(), Some("http_401"));
    assert!(expected
        .to_string()
        .contains("HTTP 401 (access token rejected)"));

    for config in [
        SimulatorConfig {
            auth_mode: AuthMode::Legacy,
            ..SimulatorConfig::default()
        },
        SimulatorConfig::new_api_2026_01(),
        SimulatorConfig::one_api(),
    ] {
        let simulator = simulator_like(config).await;
        let error = scan_error(&simulator, "tok-wrong-but-long-enough", Some(5678)).await;
        assert!(
            matches!(
                error,
                ApiError::Unauthorized {
                    status: 200,
                    problem: AuthProblem::TokenRejected {
                        looks_like_api_key: false
                    },
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.reason(), Some("http_401"), "counted like a 401");
        let text = error.to_string();
        assert!(text.contains("(access token rejected)"), "{text}");
        assert!(
            text.contains("check the access token of account main"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_pasted_as_the_access_token_is_recognised() {
    let pasted_key = "sk-TAsftk8p6XUSRxSkCKF6lqTX4pTpY3nhyB4VdaDVn32jwPQD";
    for config in [
        SimulatorConfig::default(),
        SimulatorConfig::new_api_2026_01(),
    ] {
        let simulator = simulator_like(config).await;
        let error = scan_error(&simulator, pasted_key, Some(5678)).await;
        let text = error.to_string();
        assert!(
            text.contains("has the shape of an API key (sk-...)")
                && text.contains("the management API needs the personal access token (Console → Personal Settings), not an API key"),
            "{text}"
        );
        assert!(!text.contains("TAsftk8p"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_account_host_and_port() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = scan_account(&client(&format!("http://127.0.0.1:{port}"), "tok-x", None))
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains(&format!(
            "cannot connect to 127.0.0.1:{port} (base_url of account main)"
        )),
        "{text}"
    );
    assert_eq!(refused.reason(), Some("connect"));

    let unresolvable = scan_account(&client("https://no-such-host.invalid", "tok-x", None))
        .await
        .unwrap_err();
    let text = unresolvable.to_string();
    assert!(
        text.contains("cannot connect to no-such-host.invalid:443 (base_url of account main)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_pointing_at_the_web_ui_is_named_as_such() {
    let simulator = simulator_like(SimulatorConfig::default()).await;
    let base_url = format!("{}/console/token", simulator.base_url());
    let error = scan_account(&client(&base_url, &simulator.access_token(), None))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("the server answered with an HTML page")
            && text
                .contains("base_url must be the server's root URL, e.g. https://api.cometapi.com")
            && text.contains(&base_url),
        "{text}"
    );
    assert_eq!(error.reason(), Some("decode"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_account_does_not_have_is_named() {
    let simulator = simulator_like(SimulatorConfig::default()).await;
    let client = client(&simulator.base_url(), &simulator.access_token(), None);
    let error = client.get_key(99_999).await.unwrap_err();
    assert_eq!(error.to_string(), "account main has no key 99999");
    assert_eq!(error.reason(), Some("api_error"));
}
