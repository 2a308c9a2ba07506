//! End-to-end tests of the simulator over real loopback sockets with a plain HTTP client
//! (reqwest, redirects and automatic gzip off so the bytes on the wire are what we assert).
//!
//! Longer than our usual ~600 lines on purpose: one test per simulated server behaviour.

use std::io::Read;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::*;

const ACCESS_TOKEN: &str = "test-access-token-0123456789abcd";
const OWNER: i64 = 5678;

fn config(keys: usize) -> SimulatorConfig {
    SimulatorConfig {
        keys,
        access_token: ACCESS_TOKEN.to_string(),
        ..SimulatorConfig::default()
    }
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn item_ids(&self) -> Vec<i64> {
        self.json()["data"]["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item["id"].as_i64())
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Api {
    simulator: Simulator,
    http: reqwest::Client,
}

impl Api {
    async fn start(config: SimulatorConfig) -> Api {
        let listen = "127.0.0.1:0".parse().expect("literal address");
        let simulator = Simulator::start(config, listen)
            .await
            .expect("simulator starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .build()
            .expect("client builds");
        Api { simulator, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.simulator.base_url())
    }

    /// A request carrying the raw access token.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("Authorization", ACCESS_TOKEN)
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Reply {
        let response = builder.send().await.expect("request succeeds");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body reads");
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    async fn with_body(&self, method: Method, path: &str, body: &str) -> Reply {
        self.send(self.request(method, path).body(body.to_string()))
            .await
    }

    fn id_named(&self, name: &str) -> i64 {
        self.simulator
            .tokens()
            .into_iter()
            .find(|token| token.name == name)
            .map(|token| token.id)
            .unwrap_or_else(|| panic!("no seeded key named {name:?}"))
    }
}

fn failure(message: &str) -> String {
    format!(
        "{{\"message\":{},\"success\":false}}",
        serde_json::to_string(message).unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------------
// Status, listing, serialization.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_no_auth_and_reports_quota_per_unit() {
    let api = Api::start(config(5)).await;
    let reply = api.send(api.http.get(api.url("/api/status"))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(reply.body.starts_with("{\"data\":{"), "{}", reply.body);
    assert!(reply.body.ends_with("},\"message\":\"\",\"success\":true}"));
    let data = &reply.json()["data"];
    assert_eq!(data["quota_per_unit"], 500000);
    assert!(reply.body.contains("\"quota_per_unit\":500000,"));
    assert_eq!(data["quota_display_type"], "USD");
    assert_eq!(data["usd_exchange_rate"], 7.3);
    assert_eq!(data["enable_batch_update"], false);
    assert_eq!(api.simulator.quota_per_unit(), 500000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_follows_get_page_query_quirks() {
    let api = Api::start(config(250)).await;
    let newest = FIRST_SEEDED_ID + 249;

    let default_page = api.get("/api/token/").await;
    let data = &default_page.json()["data"];
    assert_eq!(
        (data["page"].as_i64(), data["page_size"].as_i64()),
        (Some(1), Some(10))
    );
    assert_eq!(data["total"], 250);
    assert_eq!(
        default_page.item_ids(),
        (newest - 9..=newest).rev().collect::<Vec<_>>(),
        "newest first"
    );
    assert!(default_page
        .body
        .starts_with("{\"data\":{\"page\":1,\"page_size\":10,\"total\":250,\"items\":[{\"id\":"));

    let capped = api.get("/api/token/?p=1&page_size=500").await;
    assert_eq!(capped.json()["data"]["page_size"], 100);
    assert_eq!(capped.item_ids().len(), 100);

    for (query, expected_size) in [
        ("size=50", 50),
        ("ps=7", 7),
        ("page_size=0&size=20", 20),
        ("page_size=abc&ps=3&size=40", 3),
    ] {
        let reply = api.get(&format!("/api/token/?p=1&{query}")).await;
        assert_eq!(reply.json()["data"]["page_size"], expected_size, "{query}");
        assert_eq!(reply.item_ids().len(), expected_size as usize, "{query}");
    }

    let everything = api.get("/api/token/?p=1&page_size=-1").await;
    assert_eq!(everything.json()["data"]["page_size"], -1);
    assert_eq!(everything.item_ids().len(), 250);

    let past_end = api.get("/api/token/?p=99&page_size=20").await;
    assert!(
        past_end
            .body
            .starts_with("{\"data\":{\"page\":99,\"page_size\":20,\"total\":250,\"items\":[]}"),
        "{}",
        past_end.body
    );

    let negative = api.get("/api/token/?p=-3&page_size=20").await;
    assert_eq!(negative.json()["data"]["page"], -3);
    assert_eq!(negative.item_ids().first(), Some(&newest));

    let zero = api.get("/api/token/?p=0").await;
    assert_eq!(zero.json()["data"]["page"], 1);

    let second = api.get("/api/token/?p=2&page_size=100").await;
    assert_eq!(
        second.item_ids(),
        (newest - 199..=newest - 100).rev().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_items_are_masked_in_model_order_and_escaped_like_go() {
    let api = Api::start(config(30)).await;
    let reply = api.get("/api/token/?p=1&page_size=100").await;
    let items = reply.json()["data"]["items"].clone();
    let items = items.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 30);
    for item in &items {
        let id = item["id"].as_i64().unwrap_or_default();
        let full = api.simulator.token(id).expect("listed key exists").key;
        let shown = item["key"].as_str().unwrap_or_default();
        assert_eq!(shown, format!("{}**********{}", &full[..4], &full[44..]));
    }

    let script_id = api.id_named("<script>alert(1)</script> & more");
    assert!(reply
        .body
        .contains("\"name\":\"\\u003cscript\\u003ealert(1)\\u003c/script\\u003e \\u0026 more\""));

    let token = api.simulator.token(script_id).expect("seeded");
    let expected = format!(
        "{{\"id\":{},\"user_id\":{OWNER},\"key\":\"{}\",\"status\":1,\"name\":\"\\u003cscript\\u003ealert(1)\\u003c/script\\u003e \\u0026 more\",\"created_time\":{},\"accessed_time\":{},\"expired_time\":-1,\"remain_quota\":{},\"unlimited_quota\":false,\"model_limits_enabled\":false,\"model_limits\":\"\",\"allow_ips\":\"\",\"used_quota\":{},\"group\":\"\",\"cross_group_retry\":false,\"DeletedAt\":null,\"auto_groups\":null}}",
        token.id,
        mask_token_key(&token.key),
        token.created_time,
        token.accessed_time,
        token.remain_quota,
        token.used_quota
    );
    assert!(reply.body.contains(&expected), "{}", reply.body);

    let newline_id = api.id_named("first line\nsecond line");
    let one = api.get(&format!("/api/token/{newline_id}")).await;
    assert!(one.body.contains("\"name\":\"first line\\nsecond line\""));
    let null_ips_id = api.id_named("overdrawn-still-enabled");
    let one = api.get(&format!("/api/token/{null_ips_id}")).await;
    assert!(one.body.contains("\"allow_ips\":null,"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_mode_returns_full_keys() {
    let api = Api::start(SimulatorConfig {
        mask_keys: false,
        ..config(3)
    })
    .await;
    let reply = api.get(&format!("/api/token/{FIRST_SEEDED_ID}")).await;
    let full = api.simulator.token(FIRST_SEEDED_ID).expect("seeded").key;
    assert_eq!(reply.json()["data"]["key"], full.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_one_answers_go_error_messages() {
    let api = Api::start(config(5)).await;
    assert_eq!(
        api.get("/api/token/999999").await.body,
        failure("record not found")
    );
    let bad = api.get("/api/token/abc").await;
    assert_eq!(bad.status, 200);
    assert_eq!(
        bad.body,
        failure("strconv.Atoi: parsing \"abc\": invalid syntax")
    );
    assert_eq!(
        api.get("/api/token/0").await.body,
        failure("id 或 userId 为空！")
    );
    let foreign = api.simulator.insert_token(SimToken {
        user_id: 42,
        name: "someone else's".into(),
        ..SimToken::default()
    });
    assert_eq!(
        api.get(&format!("/api/token/{foreign}")).await.body,
        failure("record not found")
    );
    let found = api.get(&format!("/api/token/{FIRST_SEEDED_ID}")).await;
    assert_eq!(found.json()["data"]["id"], FIRST_SEEDED_ID);
    assert!(found.body.ends_with(",\"message\":\"\",\"success\":true}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_exactly_unless_percent_is_used() {
    let api = Api::start(config(30)).await;
    let exact = api.get("/api/token/search?keyword=disabled").await;
    assert_eq!(exact.item_ids(), vec![api.id_named("disabled")]);
    let fuzzy = api.get("/api/token/search?keyword=expired%25").await;
    assert_eq!(
        fuzzy.item_ids(),
        vec![
            api.id_named("expired"),
            api.id_named("expired-still-enabled")
        ]
    );
    assert_eq!(fuzzy.json()["data"]["total"], 2);
    for _ in 2..10 {
        assert_eq!(api.get("/api/token/search?keyword=x").await.status, 200);
    }
    let limited = api.get("/api/token/search?keyword=x").await;
    assert_eq!((limited.status, limited.body.as_str()), (429, ""));
    assert_eq!(limited.header("retry-after"), Some("60"));
    assert_eq!(
        api.get("/api/token/").await.status,
        200,
        "only search is limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_key_reveal_validates_the_id_list() {
    let api = Api::start(config(3)).await;
    let empty = api
        .with_body(Method::POST, "/api/token/batch/keys", r#"{"ids":[]}"#)
        .await;
    assert_eq!(empty.body, failure("Invalid parameters"));
    let ids: Vec<String> = (0..101).map(|id| id.to_string()).collect();
    let too_many = api
        .with_body(
            Method::POST,
            "/api/token/batch/keys",
            &format!("{{\"ids\":[{}]}}", ids.join(",")),
        )
        .await;
    assert_eq!(
        too_many.body,
        failure("Too many items in batch request, maximum is 100")
    );
}

// ---------------------------------------------------------------------------------------------
// Create.

fn newest_token(api: &Api) -> SimToken {
    api.simulator
        .tokens()
        .into_iter()
        .max_by_key(|token| token.id)
        .expect("population not empty")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_answers_without_data_and_applies_gorm_defaults() {
    let api = Api::start(config(3)).await;
    let before = unix_now();
    let reply = api
        .with_body(
            Method::POST,
            "/api/token/",
            r#"{"name":"fresh","allow_ips":null,"expired_time":0,"status":2,"remain_quota":500,"group":"vip","cross_group_retry":true,"id":7,"key":"mine"}"#,
        )
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "{\"message\":\"\",\"success\":true}")
    );
    let created = newest_token(&api);
    assert_eq!(created.id, FIRST_SEEDED_ID + 3);
    assert_eq!(created.name, "fresh");
    assert_eq!(created.user_id, OWNER);
    assert_eq!(created.status, STATUS_ENABLED, "body status ignored");
    assert_eq!(created.expired_time, -1, "0 becomes the column default");
    assert_eq!(
        created.allow_ips.as_deref(),
        Some(""),
        "null becomes the column default"
    );
    assert_eq!(created.remain_quota, 500);
    assert_eq!(created.used_quota, 0);
    assert!(
        !created.cross_group_retry,
        "only group auto keeps cross_group_retry"
    );
    assert_eq!(created.key.len(), 48);
    assert!(created.key.bytes().all(|byte| byte.is_ascii_alphanumeric()));
    assert!(created.created_time >= before && created.created_time <= unix_now());
    assert_eq!(created.accessed_time, created.created_time);

    api.with_body(Method::POST, "/api/token/", r#"{"name":"auto","group":"auto","cross_group_retry":true,"unlimited_quota":true,"remain_quota":-5}"#)
        .await;
    let auto = newest_token(&api);
    assert!(auto.cross_group_retry && auto.unlimited_quota);
    assert_eq!(
        auto.remain_quota, -5,
        "unlimited keys skip the quota checks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validates_like_the_server() {
    let api = Api::start(SimulatorConfig {
        max_tokens_per_user: 4,
        ..config(3)
    })
    .await;
    let seventeen_cjk = "密".repeat(17);
    let cases = [
        (
            format!("{{\"name\":\"{seventeen_cjk}\"}}"),
            "Token name is too long".to_string(),
        ),
        (
            r#"{"remain_quota":-1}"#.to_string(),
            "Quota value cannot be negative".to_string(),
        ),
        (
            r#"{"remain_quota":500000000000001}"#.to_string(),
            "Quota value exceeds valid range, maximum is 500000000000000".to_string(),
        ),
        (String::new(), "EOF".to_string()),
        (
            r#"{"remain_quota":"5"}"#.to_string(),
            "json: cannot unmarshal string into Go struct field Token.remain_quota of type int"
                .to_string(),
        ),
    ];
    for (body, expected) in cases {
        let reply = api.with_body(Method::POST, "/api/token/", &body).await;
        assert_eq!(
            (reply.status, reply.body),
            (200, failure(&expected)),
            "{body}"
        );
    }
    let chinese = api
        .send(
            api.request(Method::POST, "/api/token/")
                .header("Accept-Language", "zh-CN")
                .body(format!("{{\"name\":\"{seventeen_cjk}\"}}")),
        )
        .await;
    assert_eq!(chinese.body, failure("令牌名称过长"));

    let sixteen_cjk = format!(
        "{{\"name\":\"{}\",\"remain_quota\":500000000000000}}",
        "密".repeat(16)
    );
    let ok = api
        .with_body(Method::POST, "/api/token/", &sixteen_cjk)
        .await;
    assert_eq!(ok.body, "{\"message\":\"\",\"success\":true}");
    let refused = api.with_body(Method::POST, "/api/token/", "{}").await;
    assert_eq!(refused.body, failure("已达到最大令牌数量限制 (4)"));
    assert_eq!(api.simulator.tokens().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Update.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_update_resets_omitted_fields_and_ignores_status() {
    let api = Api::start(config(30)).await;
    let id = api.id_named("unlimited-negative-remain");
    let before = api.simulator.token(id).expect("seeded");
    assert!(before.unlimited_quota && before.model_limits_enabled && before.group == "default");

    let reply = api
        .with_body(
            Method::PUT,
            "/api/token/",
            &format!(r#"{{"id":{id},"name":"renamed","status":2}}"#),
        )
        .await;
    let data = &reply.json()["data"];
    assert_eq!(data["name"], "renamed");
    assert_eq!(data["status"], 1, "status is ignored without status_only");
    assert_eq!(data["expired_time"], 0);
    assert_eq!(data["remain_quota"], 0);
    assert_eq!(data["unlimited_quota"], false);
    assert_eq!(data["model_limits_enabled"], false);
    assert_eq!(data["model_limits"], "");
    assert_eq!(data["allow_ips"], Value::Null);
    assert_eq!(data["group"], "");
    assert_eq!(data["used_quota"], before.used_quota);
    assert_eq!(data["key"], mask_token_key(&before.key).as_str());

    let after = api.simulator.token(id).expect("still there");
    assert_eq!(after.expired_time, 0);
    assert_eq!(after.allow_ips, None);
    assert_eq!(
        (after.key, after.created_time, after.accessed_time),
        (before.key, before.created_time, before.accessed_time)
    );

    let auto_id = api.id_named("auto-group-cross-retry");
    api.with_body(
        Method::PUT,
        "/api/token/",
        &format!(r#"{{"id":{auto_id},"group":"vip","cross_group_retry":true,"expired_time":-1}}"#),
    )
    .await;
    assert!(
        !api.simulator
            .token(auto_id)
            .expect("exists")
            .cross_group_retry
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_only_update_changes_only_the_status() {
    let api = Api::start(config(30)).await;
    let id = api.id_named("big-numbers");
    let before = api.simulator.token(id).expect("seeded");
    let reply = api
        .with_body(
            Method::PUT,
            "/api/token/?status_only=false",
            &format!(r#"{{"id":{id},"status":99,"name":"ignored","remain_quota":5}}"#),
        )
        .await;
    assert_eq!(
        reply.json()["data"]["status"],
        99,
        "any integer, any non-empty flag"
    );
    let after = api.simulator.token(id).expect("exists");
    assert_eq!(
        after,
        SimToken {
            status: 99,
            ..before
        }
    );

    let too_long = api
        .with_body(
            Method::PUT,
            "/api/token/?status_only=true",
            &format!(r#"{{"id":{id},"status":2,"name":"{}"}}"#, "x".repeat(51)),
        )
        .await;
    assert_eq!(
        too_long.body,
        failure("Token name is too long"),
        "validation runs first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_guard_checks_the_stored_row() {
    let api = Api::start(config(30)).await;
    let expired = api.id_named("expired");
    let exhausted = api.id_named("exhausted");
    let lazily_expired = api.id_named("expired-still-enabled");
    let enable = |id: i64| format!(r#"{{"id":{id},"status":1}}"#);

    let reply = api
        .with_body(Method::PUT, "/api/token/?status_only=1", &enable(expired))
        .await;
    assert_eq!(reply.body, failure("Token has expired and cannot be enabled. Please modify the expiration time or set it to never expire"));
    let reply = api
        .with_body(Method::PUT, "/api/token/?status_only=1", &enable(exhausted))
        .await;
    assert_eq!(reply.body, failure("Token quota is exhausted and cannot be enabled. Please modify the remaining quota or set it to unlimited"));
    let full_put_with_status =
        format!(r#"{{"id":{exhausted},"status":1,"remain_quota":1000,"expired_time":-1}}"#);
    let reply = api
        .with_body(Method::PUT, "/api/token/", &full_put_with_status)
        .await;
    assert!(
        reply.body.contains("quota is exhausted"),
        "guard runs on a full PUT too"
    );
    assert_eq!(
        api.simulator
            .token(exhausted)
            .map(|token| token.remain_quota),
        Some(0)
    );

    let reply = api
        .with_body(
            Method::PUT,
            "/api/token/?status_only=1",
            &enable(lazily_expired),
        )
        .await;
    assert_eq!(
        reply.json()["success"],
        true,
        "stored status 1 passes the guard"
    );

    let fix =
        format!(r#"{{"id":{exhausted},"remain_quota":1000,"expired_time":-1,"name":"exhausted"}}"#);
    assert_eq!(
        api.with_body(Method::PUT, "/api/token/", &fix).await.json()["success"],
        true
    );
    assert_eq!(
        api.simulator.token(exhausted).map(|token| token.status),
        Some(STATUS_EXHAUSTED)
    );
    let reply = api
        .with_body(
            Method::PUT,
            "/api/token/?status_only=true",
            &enable(exhausted),
        )
        .await;
    assert_eq!(reply.json()["data"]["status"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_errors_match_the_server() {
    let api = Api::start(config(5)).await;
    let cases = [
        (String::new(), "EOF"),
        ("{}".to_string(), "id 或 userId 为空！"),
        (r#"{"name":"no id"}"#.to_string(), "id 或 userId 为空！"),
        (r#"{"id":999999}"#.to_string(), "record not found"),
        (
            r#"{"id":"1001"}"#.to_string(),
            "json: cannot unmarshal string into Go struct field Token.id of type int",
        ),
        (
            r#"{"id":1001,"remain_quota":-3}"#.to_string(),
            "Quota value cannot be negative",
        ),
    ];
    for (body, expected) in cases {
        let reply = api.with_body(Method::PUT, "/api/token/", &body).await;
        assert_eq!(
            (reply.status, reply.body),
            (200, failure(expected)),
            "{body}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Delete and key reveal.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_soft_and_ids_are_never_reused() {
    let api = Api::start(config(10)).await;
    let last = FIRST_SEEDED_ID + 9;
    let path = format!("/api/token/{last}");
    let reply = api.send(api.request(Method::DELETE, &path)).await;
    assert_eq!(reply.body, "{\"message\":\"\",\"success\":true}");
    let again = api.send(api.request(Method::DELETE, &path)).await;
    assert_eq!(again.body, failure("record not found"));
    let bad = api
        .send(api.request(Method::DELETE, "/api/token/abc"))
        .await;
    assert_eq!(bad.body, failure("id 或 userId 为空！"));

    let batch = api
        .with_body(
            Method::POST,
            "/api/token/batch",
            r#"{"ids":[1001,1002,999999,1001]}"#,
        )
        .await;
    assert_eq!(batch.body, "{\"data\":2,\"message\":\"\",\"success\":true}");
    let empty = api
        .with_body(Method::POST, "/api/token/batch", r#"{"ids":[]}"#)
        .await;
    assert_eq!(empty.body, failure("Invalid parameters"));

    api.with_body(Method::POST, "/api/token/", r#"{"name":"after delete"}"#)
        .await;
    assert_eq!(newest_token(&api).id, last + 1);
    assert_eq!(api.get("/api/token/").await.json()["data"]["total"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reveal_returns_the_full_key_within_the_critical_limit() {
    let api = Api::start(config(5)).await;
    let full = api.simulator.token(FIRST_SEEDED_ID).expect("seeded").key;
    let path = format!("/api/token/{FIRST_SEEDED_ID}/key");
    let reply = api.send(api.request(Method::POST, &path)).await;
    assert_eq!(
        reply.body,
        format!("{{\"data\":{{\"key\":\"{full}\"}},\"message\":\"\",\"success\":true}}")
    );
    let batch = api
        .with_body(
            Method::POST,
            "/api/token/batch/keys",
            r#"{"ids":[1002,1001,999]}"#,
        )
        .await;
    let keys = &batch.json()["data"]["keys"];
    assert_eq!(keys["1001"], full.as_str());
    assert!(keys.get("999").is_none());
    for _ in 2..20 {
        assert_eq!(api.send(api.request(Method::POST, &path)).await.status, 200);
    }
    let limited = api.send(api.request(Method::POST, &path)).await;
    assert_eq!((limited.status, limited.body.as_str()), (429, ""));
    assert_eq!(limited.header("retry-after"), Some("1200"));
}

// ---------------------------------------------------------------------------------------------
// Authentication, rate limiting, routing, gzip.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_auth_answers_401_with_a_code() {
    let api = Api::start(config(3)).await;
    let unauthorized =
        "{\"code\":\"AUTH_UNAUTHORIZED\",\"message\":\"Unauthorized, invalid access token\",\"success\":false}";
    let missing = api.send(api.http.get(api.url("/api/token/"))).await;
    assert_eq!((missing.status, missing.body.as_str()), (401, unauthorized));
    for header in [
        "wrong-token",
        "Basic test",
        &format!("Token {ACCESS_TOKEN}"),
    ] {
        let reply = api
            .send(
                api.http
                    .get(api.url("/api/token/"))
                    .header("Authorization", header),
            )
            .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (401, unauthorized),
            "{header}"
        );
    }
    for header in [
        ACCESS_TOKEN.to_string(),
        format!("Bearer {ACCESS_TOKEN}"),
        format!("bEaReR   {ACCESS_TOKEN}  "),
    ] {
        let reply = api
            .send(
                api.http
                    .get(api.url("/api/token/"))
                    .header("Authorization", header.as_str())
                    .header("New-Api-User", "999"),
            )
            .await;
        assert_eq!(reply.status, 200, "{header}");
        assert_eq!(reply.json()["success"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_auth_mixes_200_and_401_and_requires_new_api_user() {
    let api = Api::start(SimulatorConfig {
        auth_mode: AuthMode::Legacy,
        ..config(3)
    })
    .await;
    let list = |authorization: Option<String>, user: Option<&str>| {
        let mut builder = api.http.get(api.url("/api/token/"));
        if let Some(authorization) = authorization {
            builder = builder.header("Authorization", authorization);
        }
        if let Some(user) = user {
            builder = builder.header("New-Api-User", user);
        }
        builder
    };
    let cases = [
        (
            None,
            Some("5678"),
            401,
            "Unauthorized, not logged in and no access token provided",
        ),
        (
            Some("nope".to_string()),
            Some("5678"),
            200,
            "Unauthorized, invalid access token",
        ),
        (
            Some(format!("bearer {ACCESS_TOKEN}")),
            Some("5678"),
            200,
            "Unauthorized, invalid access token",
        ),
        (
            Some(ACCESS_TOKEN.to_string()),
            None,
            401,
            "Unauthorized, New-Api-User header not provided",
        ),
        (
            Some(ACCESS_TOKEN.to_string()),
            Some("abc"),
            401,
            "Unauthorized, New-Api-User header format error",
        ),
        (
            Some(ACCESS_TOKEN.to_string()),
            Some("999"),
            401,
            "Unauthorized, New-Api-User does not match logged in user",
        ),
    ];
    for (authorization, user, status, message) in cases {
        let reply = api.send(list(authorization.clone(), user)).await;
        assert_eq!(
            (reply.status, reply.body),
            (status, failure(message)),
            "{authorization:?} {user:?}"
        );
    }
    let ok = api
        .send(list(Some(format!("Bearer {ACCESS_TOKEN}")), Some("5678")))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["data"]["total"], 3);
    assert_eq!(
        ok.header("auth-version"),
        Some("864b7076dbcd0a3c01b5520316720ebf")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rate_limit_answers_429_with_an_empty_body() {
    let api = Api::start(SimulatorConfig {
        rate_limit: Some(RateLimit {
            requests: 3,
            window: Duration::from_secs(60),
            send_retry_after: true,
        }),
        ..config(3)
    })
    .await;
    for _ in 0..2 {
        assert_eq!(api.get("/api/token/").await.status, 200);
    }
    assert_eq!(
        api.send(api.http.get(api.url("/api/status"))).await.status,
        200
    );
    let limited = api.send(api.http.get(api.url("/api/token/"))).await;
    assert_eq!(
        (limited.status, limited.body.as_str()),
        (429, ""),
        "before auth, empty body"
    );
    assert_eq!(limited.header("retry-after"), Some("60"));
    assert_eq!(limited.header("content-type"), None);

    api.simulator.set_rate_limit(Some(RateLimit {
        requests: 1,
        window: Duration::from_secs(30),
        send_retry_after: false,
    }));
    assert_eq!(api.get("/api/token/").await.status, 200);
    let limited = api.get("/api/token/").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), None);
    api.simulator.set_rate_limit(None);
    assert_eq!(api.get("/api/token/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slashes_redirect_and_unknown_routes_are_openai_style_404() {
    let api = Api::start(config(3)).await;
    let list = api.get("/api/token?p=2").await;
    assert_eq!(
        (list.status, list.header("location")),
        (301, Some("/api/token/?p=2"))
    );
    assert!(list.body.contains("Moved Permanently"));
    let put = api.with_body(Method::PUT, "/api/token", "{}").await;
    assert_eq!(
        (put.status, put.header("location")),
        (307, Some("/api/token/"))
    );
    let one = api.get("/api/token/1001/").await;
    assert_eq!(
        (one.status, one.header("location")),
        (301, Some("/api/token/1001"))
    );
    let unknown = api.get("/api/tokens").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.body,
        "{\"error\":{\"message\":\"Invalid URL (GET /api/tokens)\",\"type\":\"invalid_request_error\",\"param\":\"\",\"code\":\"\"}}"
    );
    let patch = api.send(api.request(Method::PATCH, "/api/token/")).await;
    assert_eq!(patch.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_gzipped_when_the_client_accepts_it() {
    let api = Api::start(config(30)).await;
    let plain = api.get("/api/token/?page_size=30").await;
    let response = api
        .request(Method::GET, "/api/token/?page_size=30")
        .header("Accept-Encoding", "gzip, deflate")
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(
        response
            .headers()
            .get("content-encoding")
            .and_then(|value| value.to_str().ok()),
        Some("gzip")
    );
    let compressed = response.bytes().await.expect("body reads");
    assert!(compressed.len() < plain.body.len());
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, plain.body);
}

// ---------------------------------------------------------------------------------------------
// Faults.

fn fault(endpoint: FaultEndpoint, times: FaultTimes, kind: FaultKind) -> Fault {
    Fault {
        endpoint,
        page: None,
        times,
        kind,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_status_faults_are_answered_verbatim_then_consumed() {
    let api = Api::start(config(3)).await;
    let kinds = [
        (500, String::new(), None),
        (
            502,
            "<html><body>Bad Gateway</body></html>".to_string(),
            None,
        ),
        (
            401,
            r#"{"code":"AUTH_UNAUTHORIZED","message":"x","success":false}"#.to_string(),
            None,
        ),
        (429, String::new(), Some(7)),
    ];
    for (status, body, retry_after) in kinds.clone() {
        api.simulator.push_fault(fault(
            FaultEndpoint::List,
            FaultTimes::Once,
            FaultKind::HttpStatus {
                status,
                body,
                retry_after,
            },
        ));
    }
    for (status, body, retry_after) in kinds {
        let reply = api.get("/api/token/").await;
        assert_eq!((reply.status, reply.body.as_str()), (status, body.as_str()));
        assert_eq!(
            reply.header("retry-after"),
            retry_after.map(|s| s.to_string()).as_deref()
        );
        if status == 502 {
            assert_eq!(
                reply.header("content-type"),
                Some("text/html; charset=utf-8")
            );
        }
    }
    assert_eq!(api.get("/api/token/").await.status, 200, "all consumed");

    api.simulator.push_fault(fault(
        FaultEndpoint::Update,
        FaultTimes::Times(2),
        FaultKind::HttpStatus {
            status: 503,
            body: String::new(),
            retry_after: None,
        },
    ));
    assert_eq!(
        api.get("/api/token/").await.status,
        200,
        "other endpoints unaffected"
    );
    for _ in 0..2 {
        assert_eq!(
            api.with_body(Method::PUT, "/api/token/", "{}").await.status,
            503
        );
    }
    assert_eq!(
        api.with_body(Method::PUT, "/api/token/", "{}").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_checked_after_auth_and_can_target_a_page() {
    let api = Api::start(config(30)).await;
    api.simulator.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: Some(2),
        times: FaultTimes::Always,
        kind: FaultKind::SuccessFalse {
            message: "boom".into(),
        },
    });
    let unauthenticated = api.send(api.http.get(api.url("/api/token/?p=2"))).await;
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(api.get("/api/token/?p=1").await.json()["success"], true);
    for _ in 0..2 {
        assert_eq!(api.get("/api/token/?p=2").await.body, failure("boom"));
    }
    api.simulator.clear_faults();
    assert_eq!(api.get("/api/token/?p=2").await.json()["success"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_fault_trips_a_client_timeout() {
    let api = Api::start(config(3)).await;
    api.simulator.push_fault(fault(
        FaultEndpoint::Status,
        FaultTimes::Once,
        FaultKind::Delay(Duration::from_millis(1500)),
    ));
    let error = api
        .http
        .get(api.url("/api/status"))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("times out");
    assert!(error.is_timeout(), "{error}");
    let started = std::time::Instant::now();
    assert_eq!(
        api.send(api.http.get(api.url("/api/status"))).await.status,
        200
    );
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_wrong_shape_bodies_reach_the_client() {
    let api = Api::start(config(3)).await;
    api.simulator.push_fault(fault(
        FaultEndpoint::Any,
        FaultTimes::Once,
        FaultKind::MalformedJson,
    ));
    let malformed = api.get("/api/token/").await;
    assert_eq!(malformed.status, 200);
    assert_eq!(
        malformed.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(serde_json::from_str::<Value>(&malformed.body).is_err());

    api.simulator.push_fault(fault(
        FaultEndpoint::List,
        FaultTimes::Once,
        FaultKind::WrongShape,
    ));
    let wrong = api.get("/api/token/").await;
    assert_eq!(wrong.json()["data"]["items"], "nope");
    assert_eq!(wrong.json()["success"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_is_an_error_for_the_client() {
    let api = Api::start(config(30)).await;
    api.simulator.push_fault(fault(
        FaultEndpoint::List,
        FaultTimes::Once,
        FaultKind::TruncatedBody,
    ));
    let response = api
        .request(Method::GET, "/api/token/?page_size=30")
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(response.status().as_u16(), 200);
    let declared = response.content_length().expect("length declared");
    assert!(declared > 1000);
    let error = response
        .bytes()
        .await
        .expect_err("the body stops short of Content-Length");
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert_eq!(
        api.get("/api/token/").await.status,
        200,
        "next request is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_streamed_with_the_requested_size() {
    let api = Api::start(config(3)).await;
    let size = 3 * 1024 * 1024 + 17;
    api.simulator.push_fault(fault(
        FaultEndpoint::List,
        FaultTimes::Once,
        FaultKind::Oversized { bytes: size },
    ));
    let response = api
        .request(Method::GET, "/api/token/")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.content_length(), Some(size as u64));
    let body = response.bytes().await.expect("body reads");
    assert_eq!(body.len(), size);
    let parsed: Value = serde_json::from_slice(&body).expect("valid JSON");
    assert_eq!(parsed["success"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_fault_drops_the_request() {
    let api = Api::start(config(3)).await;
    api.simulator.push_fault(fault(
        FaultEndpoint::Get,
        FaultTimes::Once,
        FaultKind::CloseConnection,
    ));
    let outcome = api.request(Method::GET, "/api/token/1001").send().await;
    assert!(outcome.is_err(), "no response expected");
    let recorded = api.simulator.requests();
    assert_eq!(recorded.last().map(|request| request.status), Some(0));
    assert_eq!(api.get("/api/token/1001").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_shifts_the_next_page() {
    let api = Api::start(config(40)).await;
    api.simulator.push_fault(Fault {
        endpoint: FaultEndpoint::List,
        page: Some(1),
        times: FaultTimes::Once,
        kind: FaultKind::Churn {
            create: 3,
            delete: 2,
        },
    });
    let first = api.get("/api/token/?p=1&page_size=10").await;
    assert_eq!(
        first.json()["data"]["total"],
        40,
        "answered before the churn"
    );
    let second = api.get("/api/token/?p=2&page_size=10").await;
    assert_eq!(second.json()["data"]["total"], 41);
    let first_ids = first.item_ids();
    assert_eq!(
        &second.item_ids()[..3],
        &first_ids[7..],
        "three new keys pushed rows down"
    );
    assert!(
        api.simulator.token(FIRST_SEEDED_ID).is_none(),
        "oldest deleted"
    );
    assert!(api.simulator.token(FIRST_SEEDED_ID + 1).is_none());
    assert_eq!(newest_token(&api).id, FIRST_SEEDED_ID + 42);
}

// ---------------------------------------------------------------------------------------------
// Runtime, population, bookkeeping.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_follows_the_relay_rules() {
    let api = Api::start(config(0)).await;
    let simulator = &api.simulator;
    let now = unix_now();
    let limited = simulator.insert_token(SimToken {
        user_id: OWNER,
        remain_quota: 100,
        ..SimToken::default()
    });
    assert_eq!(
        simulator.consume(limited, 150),
        Ok(()),
        "the overdrawing request is admitted"
    );
    let token = simulator.token(limited).expect("exists");
    assert_eq!(
        (token.remain_quota, token.used_quota, token.status),
        (-50, 150, 1)
    );
    assert!(token.accessed_time >= now);
    assert_eq!(
        simulator.consume(limited, 1),
        Err(RelayRejection::Exhausted)
    );
    assert_eq!(
        simulator.token(limited).map(|token| token.status),
        Some(STATUS_EXHAUSTED)
    );
    assert_eq!(
        simulator.consume(limited, 1),
        Err(RelayRejection::Exhausted)
    );
    assert_eq!(simulator.consume(limited, -30), Ok(()), "refund");
    assert_eq!(
        simulator
            .token(limited)
            .map(|token| (token.remain_quota, token.used_quota)),
        Some((-20, 120))
    );

    let expired = simulator.insert_token(SimToken {
        user_id: OWNER,
        remain_quota: 100,
        expired_time: now - 10,
        accessed_time: 5,
        ..SimToken::default()
    });
    assert_eq!(simulator.consume(expired, 1), Err(RelayRejection::Expired));
    let token = simulator.token(expired).expect("exists");
    assert_eq!(token.status, STATUS_EXPIRED);
    assert!(token.accessed_time >= now);

    let unlimited = simulator.insert_token(SimToken {
        user_id: OWNER,
        unlimited_quota: true,
        ..SimToken::default()
    });
    assert_eq!(simulator.consume(unlimited, 70), Ok(()));
    assert_eq!(
        simulator.token(unlimited).map(|token| token.remain_quota),
        Some(-70)
    );

    let disabled = simulator.insert_token(SimToken {
        user_id: OWNER,
        status: STATUS_DISABLED,
        remain_quota: 10,
        ..SimToken::default()
    });
    assert_eq!(
        simulator.consume(disabled, 1),
        Err(RelayRejection::Disabled)
    );
    assert_eq!(simulator.consume(999_999, 1), Err(RelayRejection::NotFound));
    assert!(simulator.delete_token(disabled));
    assert_eq!(
        simulator.consume(disabled, 1),
        Err(RelayRejection::NotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mode_never_flips_the_status() {
    let api = Api::start(SimulatorConfig {
        redis_mode: true,
        ..config(0)
    })
    .await;
    let empty = api.simulator.insert_token(SimToken {
        user_id: OWNER,
        ..SimToken::default()
    });
    let expired = api.simulator.insert_token(SimToken {
        user_id: OWNER,
        remain_quota: 5,
        expired_time: 1,
        ..SimToken::default()
    });
    assert_eq!(
        api.simulator.consume(empty, 1),
        Err(RelayRejection::Exhausted)
    );
    assert_eq!(
        api.simulator.consume(expired, 1),
        Err(RelayRejection::Expired)
    );
    assert_eq!(
        api.simulator.token(empty).map(|token| token.status),
        Some(STATUS_ENABLED)
    );
    assert_eq!(
        api.simulator.token(expired).map(|token| token.status),
        Some(STATUS_ENABLED)
    );
}

#[test]
fn seeded_population_holds_every_edge_case_even_at_thirty_keys() {
    let now = 1_780_000_000;
    let tokens = seed_tokens(&config(30), now);
    assert_eq!(tokens.len(), 30);
    assert_eq!(tokens, seed_tokens(&config(30), now), "deterministic");
    assert_ne!(
        tokens[0].key,
        seed_tokens(
            &SimulatorConfig {
                seed: 8,
                ..config(30)
            },
            now
        )[0]
        .key
    );
    let has = |what: &str, predicate: &dyn Fn(&SimToken) -> bool| {
        assert!(tokens.iter().any(predicate), "missing edge case: {what}");
    };
    has("unlimited with negative remain", &|t| {
        t.unlimited_quota && t.remain_quota < 0
    });
    has("overdrawn limited, still enabled", &|t| {
        !t.unlimited_quota && t.remain_quota < 0 && t.status == 1
    });
    has("never expires", &|t| t.expired_time == -1);
    has("expired but enabled", &|t| {
        t.status == 1 && t.expired_time != -1 && t.expired_time < now
    });
    has("status 3", &|t| t.status == 3 && t.expired_time < now);
    has("status 4 with remain 0", &|t| {
        t.status == 4 && t.remain_quota == 0
    });
    has("exhausted but enabled", &|t| {
        t.status == 1 && !t.unlimited_quota && t.remain_quota == 0
    });
    has("disabled", &|t| t.status == 2);
    has("unknown status", &|t| !(1..=4).contains(&t.status));
    has("expires within a day", &|t| {
        t.expired_time > now + 3600 && t.expired_time < now + 86_400
    });
    has("expires within a week", &|t| {
        t.expired_time > now + 86_400 && t.expired_time < now + 7 * 86_400
    });
    has("never used", &|t| {
        t.accessed_time == t.created_time && t.used_quota == 0
    });
    has("accessed_time 0", &|t| t.accessed_time == 0);
    has("values above 2^31", &|t| {
        t.remain_quota > 1 << 40 && t.used_quota > 1 << 40
    });
    has("quotes", &|t| t.name.contains('"'));
    has("backslash", &|t| t.name.contains('\\'));
    has("newline", &|t| t.name.contains('\n'));
    has("tab", &|t| t.name.contains('\t'));
    has("CJK", &|t| t.name == "生产密钥");
    has("emoji", &|t| t.name.contains('🚀'));
    has("html", &|t| {
        t.name.contains("<script>") && t.name.contains('&')
    });
    has("empty name", &|t| t.name.is_empty());
    has("50-byte name", &|t| t.name.len() == 50);
    has("allow_ips null", &|t| t.allow_ips.is_none());
    has("allow_ips empty", &|t| t.allow_ips.as_deref() == Some(""));
    has("allow_ips multi-line", &|t| {
        t.allow_ips.as_deref() == Some("10.0.0.0/8\n2001:db8::1")
    });
    has("model limits on with list", &|t| {
        t.model_limits_enabled && !t.model_limits.is_empty()
    });
    has("model limits on, empty", &|t| {
        t.model_limits_enabled && t.model_limits.is_empty()
    });
    has("model limits off with list", &|t| {
        !t.model_limits_enabled && !t.model_limits.is_empty()
    });
    for group in ["", "default", "vip"] {
        has(group, &|t| t.group == group);
    }
    has("auto with cross_group_retry", &|t| {
        t.group == "auto" && t.cross_group_retry
    });

    for (index, token) in tokens.iter().enumerate() {
        assert_eq!(token.id, FIRST_SEEDED_ID + index as i64);
        assert_eq!(token.user_id, OWNER);
        assert_eq!(token.key.len(), 48);
        assert!(token.key.bytes().all(|byte| byte.is_ascii_alphanumeric()));
        assert!(token.created_time < now && token.created_time > now - 401 * 86_400);
        assert!(token.expired_time == -1 || (token.expired_time - now).abs() > 3600);
    }
    let keys: std::collections::HashSet<&str> = tokens.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys.len(), 30);
}

#[test]
fn random_part_of_the_population_is_realistic() {
    let now = 1_780_000_000;
    let tokens = seed_tokens(&config(5_000), now);
    let enabled = tokens.iter().filter(|t| t.status == STATUS_ENABLED).count();
    assert!(
        enabled > 4_000 && enabled < 4_900,
        "mostly enabled: {enabled}"
    );
    assert!(tokens
        .windows(2)
        .all(|pair| pair[0].created_time < pair[1].created_time));
    assert!(tokens
        .iter()
        .filter(|t| t.status == STATUS_EXPIRED)
        .all(|t| t.is_expired_at(now)));
    assert!(tokens
        .iter()
        .all(|t| t.expired_time == -1 || (t.expired_time - now).abs() > 3600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_recorded_with_the_status_answered() {
    let api = Api::start(config(3)).await;
    api.send(
        api.request(Method::PUT, "/api/token/?status_only=1")
            .header("New-Api-User", "5678")
            .body(r#"{"id":1001,"status":2}"#),
    )
    .await;
    api.send(api.http.get(api.url("/api/token/"))).await;
    let recorded = api.simulator.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].method, "PUT");
    assert_eq!(recorded[0].path, "/api/token/");
    assert_eq!(recorded[0].query.as_deref(), Some("status_only=1"));
    assert_eq!(recorded[0].body, r#"{"id":1001,"status":2}"#);
    assert!(recorded[0].authorization_present);
    assert_eq!(recorded[0].new_api_user.as_deref(), Some("5678"));
    assert_eq!(recorded[0].status, 200);
    assert!(!recorded[1].authorization_present);
    assert_eq!(recorded[1].status, 401);
    assert!(recorded[0].at <= recorded[1].at);
    api.simulator.clear_requests();
    assert!(api.simulator.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_population_pages_are_correct_at_the_far_end() {
    let api = Api::start(config(100_000)).await;
    let last_page = api.get("/api/token/?p=1000&page_size=100").await;
    assert_eq!(
        last_page.item_ids(),
        (FIRST_SEEDED_ID..FIRST_SEEDED_ID + 100)
            .rev()
            .collect::<Vec<_>>()
    );
    assert_eq!(last_page.json()["data"]["total"], 100_000);
    assert_eq!(
        api.get("/api/token/?p=1001&page_size=100").await.item_ids(),
        Vec::<i64>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_quotas_until_cancelled() {
    let api = Api::start(config(30)).await;
    let total_used =
        |api: &Api| -> i64 { api.simulator.tokens().iter().map(|t| t.used_quota).sum() };
    let before = total_used(&api);
    let edge_cases_before: Vec<SimToken> =
        api.simulator.tokens()[..seed::edge_case_count()].to_vec();
    let stop = CancellationToken::new();
    let traffic = api
        .simulator
        .spawn_traffic(Duration::from_millis(5), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    traffic
        .await
        .expect("the traffic task ends without panicking");
    let after = total_used(&api);
    assert_ne!(before, after);
    for seeded in &edge_cases_before {
        let current = api
            .simulator
            .token(seeded.id)
            .expect("edge case still there");
        assert_eq!(&current, seeded, "edge case {:?} left alone", current.name);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(after, total_used(&api), "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_listen_address_still_gives_a_loopback_base_url() {
    let listen = "0.0.0.0:0".parse().expect("literal address");
    let simulator = Simulator::start(config(1), listen).await.expect("starts");
    let base_url = simulator.base_url();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    let status = reqwest::get(format!("{base_url}/api/status"))
        .await
        .expect("reachable");
    assert_eq!(status.status().as_u16(), 200);
    simulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_listener() {
    let api = Api::start(config(1)).await;
    let address = api.simulator.addr();
    assert_eq!(api.simulator.base_url(), format!("http://{address}"));
    assert_eq!(api.simulator.access_token(), ACCESS_TOKEN);
    api.simulator.clone().shutdown().await;
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

#[test]
fn config_debug_redacts_the_access_token() {
    let printed = format!("{:?}", config(1));
    assert!(!printed.contains(ACCESS_TOKEN));
    assert!(printed.contains("redacted"));
    let generated = SimulatorConfig::default().access_token;
    assert_eq!(generated.len(), 32);
    assert!(generated.bytes().all(|byte| byte.is_ascii_alphanumeric()));
    assert_ne!(generated, SimulatorConfig::default().access_token);
}

// ---------------------------------------------------------------------------------------------
// The account's routes (reference §13).

fn generation_config(generation: ServerGeneration) -> SimulatorConfig {
    SimulatorConfig {
        generation,
        ..config(30)
    }
}

#[tokio::test]
async fn account_routes_exist_only_in_the_generations_that_have_them() {
    let paths = [
        "/api/user/self",
        "/api/data/self?start_timestamp=1&end_timestamp=2",
        "/api/data/flow/self?start_timestamp=1&end_timestamp=2",
        "/api/subscription/self",
        "/api/subscription/plans",
    ];
    let expected = [
        (ServerGeneration::OneApi, [200, 404, 404, 404, 404]),
        (
            ServerGeneration::NewApiBeforeSubscriptions,
            [200, 200, 404, 404, 404],
        ),
        (
            ServerGeneration::NewApiBeforeFlow,
            [200, 200, 404, 200, 200],
        ),
        (ServerGeneration::NewApiLatest, [200, 200, 200, 200, 200]),
    ];
    for (generation, statuses) in expected {
        let api = Api::start(generation_config(generation)).await;
        for (path, status) in paths.iter().zip(statuses) {
            let reply = api.get(path).await;
            assert_eq!(
                reply.status, status,
                "{generation:?} {path}: {}",
                reply.body
            );
            if status == 404 {
                assert!(reply.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Invalid URL (GET /api/"));
            } else {
                assert_eq!(reply.json()["success"], true, "{path}");
            }
        }
        let user = api.get("/api/user/self").await.json();
        assert_eq!(user["data"]["id"], OWNER);
        assert_eq!(user["data"]["group"], "default");
        assert_eq!(
            user["data"].get("setting").is_some(),
            generation != ServerGeneration::OneApi,
            "one-api has no setting"
        );
        api.simulator.shutdown().await;
    }
}

#[tokio::test]
async fn relay_charges_wallet_and_key_together_and_records_usage_by_key_group_and_model() {
    let api = Api::start(config(40)).await;
    let id = api.id_named("never-used");
    let before_key = api.simulator.token(id).unwrap();
    let before = api.simulator.wallet();
    api.simulator
        .consume_model(id, "gpt-4.1", 1_000, 120)
        .unwrap();
    api.simulator.consume_model(id, "gpt-4.1", 500, 30).unwrap();
    api.simulator.consume(id, -200).unwrap();
    let after = api.simulator.wallet();
    let after_key = api.simulator.token(id).unwrap();
    assert_eq!(after.quota, before.quota - 1_300);
    assert_eq!(after.used_quota, before.used_quota + 1_300);
    assert_eq!(
        after.request_count,
        before.request_count + 2,
        "a refund is no request"
    );
    assert_eq!(after_key.used_quota, before_key.used_quota + 1_300);
    let user = api.get("/api/user/self").await.json();
    assert_eq!(user["data"]["quota"], after.quota);
    assert_eq!(user["data"]["request_count"], after.request_count);

    let now = api.simulator.now();
    let flow = api
        .get(&format!(
            "/api/data/flow/self?start_timestamp={}&end_timestamp={now}",
            now - 3_600
        ))
        .await
        .json();
    let rows = flow["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["token_id"], id);
    assert_eq!(rows[0]["model_name"], "gpt-4.1");
    assert_eq!(rows[0]["use_group"], "default");
    assert_eq!(rows[0]["count"], 2);
    assert_eq!(rows[0]["quota"], 1_500);
    assert_eq!(rows[0]["token_used"], 150);

    // The wallet at 0 refuses every key, without flipping its status.
    api.simulator.update_wallet(|wallet| wallet.quota = 0);
    assert_eq!(
        api.simulator.consume(id, 10),
        Err(RelayRejection::WalletEmpty)
    );
    assert_eq!(api.simulator.token(id).unwrap().status, STATUS_ENABLED);

    // Data export off: nothing more is recorded, and /api/status says so.
    api.simulator
        .update_wallet(|wallet| wallet.quota = 1_000_000);
    api.simulator.set_data_export(false);
    api.simulator.consume(id, 10).unwrap();
    assert_eq!(api.simulator.usage_records().len(), 2);
    let status = api.get("/api/status").await.json();
    assert_eq!(status["data"]["enable_data_export"], false);
}

#[tokio::test]
async fn usage_shows_up_after_the_recording_lag_and_each_route_fails_on_its_own() {
    let api = Api::start(SimulatorConfig {
        usage_recording_lag: Duration::from_secs(300),
        ..config(40)
    })
    .await;
    let id = api.id_named("never-used");
    api.simulator.consume(id, 1_000).unwrap();
    let now = api.simulator.now();
    let flow_path = format!(
        "/api/data/flow/self?start_timestamp={}&end_timestamp={}",
        now - 3_600,
        now + 400
    );
    assert_eq!(
        api.get(&flow_path).await.json()["data"],
        serde_json::json!([])
    );
    api.simulator.set_clock_offset(301);
    assert_eq!(api.get(&flow_path).await.json()["data"][0]["quota"], 1_000);

    for (endpoint, path) in [
        (FaultEndpoint::User, "/api/user/self"),
        (FaultEndpoint::FlowUsage, flow_path.as_str()),
        (
            FaultEndpoint::HourlyUsage,
            "/api/data/self?start_timestamp=1&end_timestamp=2",
        ),
        (FaultEndpoint::Subscriptions, "/api/subscription/self"),
        (FaultEndpoint::Plans, "/api/subscription/plans"),
    ] {
        api.simulator.push_fault(Fault {
            endpoint,
            page: None,
            times: FaultTimes::Once,
            kind: FaultKind::HttpStatus {
                status: 502,
                body: String::new(),
                retry_after: None,
            },
        });
        assert_eq!(api.get("/api/status").await.status, 200);
        assert_eq!(api.get("/api/token/").await.status, 200);
        assert_eq!(api.get(path).await.status, 502, "{endpoint:?}");
        assert_eq!(api.get(path).await.status, 200, "{endpoint:?}");
    }
}

#[tokio::test]
async fn subscriptions_list_active_ones_separately_and_plans_may_be_unlisted() {
    let api = Api::start(config(30)).await;
    let reply = api.get("/api/subscription/self").await.json();
    let all = reply["data"]["all_subscriptions"].as_array().unwrap();
    let active = reply["data"]["subscriptions"].as_array().unwrap();
    assert_eq!(all.len(), api.simulator.subscriptions().len());
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["subscription"]["status"], "active");
    assert!(active[0]["subscription"]["plan_id"].is_i64());
    let plans = api.get("/api/subscription/plans").await.json();
    assert_eq!(plans["data"][0]["plan"]["title"], "Pro monthly");
    api.simulator.set_plans_listed(false);
    let plans = api.get("/api/subscription/plans").await.json();
    assert_eq!(plans["data"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_api_lists_a_bare_array_from_page_zero_ten_keys_a_page() {
    let api = Api::start(SimulatorConfig {
        keys: 25,
        access_token: ACCESS_TOKEN.to_string(),
        ..SimulatorConfig::one_api()
    })
    .await;
    let ids = |reply: &Reply| -> Vec<i64> {
        reply.json()["data"]
            .as_array()
            .expect("a bare array")
            .iter()
            .map(|item| item["id"].as_i64().unwrap())
            .collect()
    };
    let all: Vec<i64> = api
        .simulator
        .tokens()
        .iter()
        .rev()
        .map(|token| token.id)
        .collect();
    let first = api.get("/api/token/?p=0&page_size=100&size=100").await;
    assert_eq!(
        ids(&first),
        all[..10],
        "p=0 is the first page; 10 keys whatever is asked"
    );
    assert_eq!(ids(&api.get("/api/token/?p=2").await), all[20..]);
    assert_eq!(ids(&api.get("/api/token/?p=-4").await), all[..10]);
    assert!(ids(&api.get("/api/token/?p=3").await).is_empty());
    let record = &first.json()["data"][0];
    assert!(record.get("subnet").is_some() && record.get("models").is_some());
    assert!(record.get("allow_ips").is_none() && record.get("model_limits").is_none());
    assert_eq!(
        record["key"].as_str().unwrap().len(),
        48,
        "one-api does not mask keys"
    );
    // one-api's auth: no New-Api-User needed; an unknown token is HTTP 200, in Chinese.
    let wrong = api
        .send(
            api.http
                .get(api.url("/api/token/?p=0"))
                .header("Authorization", "nope")
                .header("Accept-Language", "en"),
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.body),
        (200, failure("无权进行此操作，access token 无效"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_api_before_i18n_answers_in_chinese_whatever_is_asked() {
    let api = Api::start(SimulatorConfig {
        keys: 3,
        access_token: ACCESS_TOKEN.to_string(),
        ..SimulatorConfig::new_api_2026_01()
    })
    .await;
    let missing_user = api
        .send(
            api.request(Method::GET, "/api/token/")
                .header("Accept-Language", "en"),
        )
        .await;
    assert_eq!(
        (missing_user.status, missing_user.body),
        (401, failure("无权进行此操作，未提供 New-Api-User"))
    );
    let mismatch = api
        .send(
            api.request(Method::GET, "/api/token/")
                .header("New-Api-User", "7"),
        )
        .await;
    assert_eq!(
        (mismatch.status, mismatch.body),
        (
            401,
            failure("无权进行此操作，New-Api-User 与登录用户不匹配")
        )
    );
    let ok = api
        .send(
            api.request(Method::GET, "/api/token/")
                .header("New-Api-User", "5678"),
        )
        .await;
    assert_eq!(ok.json()["data"]["total"], 3);
    assert_eq!(
        ok.json()["data"]["items"][0]["key"].as_str().unwrap().len(),
        48
    );
}
