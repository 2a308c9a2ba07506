//! `cometapi-keymon keys` as an operator runs it: the real binary against an in-process simulator
//! through a config file and a token file, judged by the simulator's record of every request and
//! by the records it holds afterwards. A full PUT must carry every editable field as the fresh
//! read had it except the intended change; enable/disable must use `status_only`; refusals the
//! server would make are found before writing; `create` finds the id the server does not return;
//! and no output of any command contains the access token or a key value, full or masked.
//!
//! Over 600 lines on purpose: one test per `keys` subcommand behaviour.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cometapi_keymon::simulator::{RecordedRequest, SimToken, Simulator, STATUS_DISABLED};
use serde_json::Value;
use support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");

/// Seeded edge cases (see `simulator::seed`).
const UNLIMITED_RESTRICTED: i64 = 1001; // "unlimited-negative-remain": group, model limits, CIDRs
const OVERDRAWN: i64 = 1002; // limited, remain_quota -4200, enabled
const NEVER_USED: i64 = 1003; // limited, enabled
const MARKED_EXPIRED: i64 = 1006; // status 3, expiry 20 days ago
const MARKED_EXHAUSTED: i64 = 1007; // status 4, remain_quota 0
const DISABLED: i64 = 1009;
const EXPIRES_IN_A_WEEK: i64 = 1012; // limited, with an expiry

struct Account {
    simulator: Simulator,
    _directory: tempfile::TempDir,
    config: PathBuf,
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Account {
    async fn start() -> Account {
        Account::with_accounts(&["main"]).await
    }

    /// A config with these account names, all on one simulator of 40 keys.
    async fn with_accounts(names: &[&str]) -> Account {
        let simulator = start_simulator(40).await;
        let directory = tempfile::tempdir().unwrap();
        let config = write_config(directory.path(), &simulator, names);
        Account {
            simulator,
            _directory: directory,
            config,
        }
    }

    /// Runs `cometapi-keymon keys --config FILE ARGUMENTS...` and checks that no secret leaked.
    fn keys(&self, arguments: &[&str]) -> Outcome {
        let mut all = vec!["keys", "--config", self.config.to_str().unwrap()];
        all.extend_from_slice(arguments);
        let outcome = run(&all, &[]);
        assert_no_secret(&self.simulator, &outcome);
        outcome
    }

    fn requests(&self, method: &str) -> Vec<RecordedRequest> {
        self.simulator
            .requests()
            .into_iter()
            .filter(|request| request.method == method)
            .collect()
    }

    fn token(&self, id: i64) -> SimToken {
        self.simulator.token(id).expect("the key exists")
    }
}

fn run(arguments: &[&str], environment: &[(&str, &str)]) -> Outcome {
    let mut command = Command::new(BINARY);
    command
        .args(arguments)
        .env_remove("RUST_LOG")
        .env_remove("KEYMON_CONFIG")
        .env_remove("COMETAPI_ACCESS_TOKEN");
    for (key, value) in environment {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn assert_no_secret(simulator: &Simulator, outcome: &Outcome) {
    let token = simulator.access_token();
    for text in [&outcome.stdout, &outcome.stderr] {
        assert!(!text.contains(&token), "access token leaked:\n{text}");
        for record in simulator.tokens() {
            let key = &record.key;
            let masked = format!("{}**********{}", &key[..4], &key[key.len() - 4..]);
            assert!(!text.contains(key.as_str()), "key leaked:\n{text}");
            assert!(!text.contains(&masked), "masked key leaked:\n{text}");
        }
    }
}

fn write_config(directory: &Path, simulator: &Simulator, names: &[&str]) -> PathBuf {
    let token_file = directory.join("token");
    std::fs::write(&token_file, format!("{}\n", simulator.access_token())).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut text = "[poll]\ntimeout = \"5s\"\nrequests_per_minute = 6000\n".to_owned();
    for name in names {
        text.push_str(&format!(
            "\n[[accounts]]\nname = \"{name}\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\n",
            simulator.base_url(),
            token_file.display()
        ));
    }
    let path = directory.join("keymon.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The editable fields of a stored record, by their JSON names (`allow_ips` null as "").
fn editable_values(token: &SimToken) -> Value {
    serde_json::json!({
        "name": token.name,
        "expired_time": token.expired_time,
        "remain_quota": token.remain_quota,
        "unlimited_quota": token.unlimited_quota,
        "model_limits_enabled": token.model_limits_enabled,
        "model_limits": token.model_limits,
        "allow_ips": token.allow_ips.clone().unwrap_or_default(),
        "group": token.group,
        "cross_group_retry": token.cross_group_retry,
    })
}

fn body(request: &RecordedRequest) -> Value {
    serde_json::from_str(&request.body).expect("a JSON body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_name_sends_one_full_put_that_keeps_every_other_field() {
    let account = Account::start().await;
    for id in [UNLIMITED_RESTRICTED, EXPIRES_IN_A_WEEK] {
        account.simulator.clear_requests();
        let before = account.token(id);
        let new_name = format!("renamed-{id}");
        let outcome = account.keys(&["update", &id.to_string(), "--name", &new_name]);
        assert_eq!(outcome.code, 0, "{}", outcome.stderr);
        assert!(
            outcome
                .stdout
                .contains(&format!("\"{}\" → \"{new_name}\"", before.name)),
            "before → after shown: {}",
            outcome.stdout
        );

        let puts = account.requests("PUT");
        assert_eq!(puts.len(), 1, "exactly one write");
        assert_eq!(puts[0].query, None, "a full update, not status_only");
        let sent = body(&puts[0]);
        let mut expected = editable_values(&before);
        expected["name"] = new_name.clone().into();
        for field in EDITABLE_FIELDS {
            assert_eq!(sent[field], expected[field], "key {id}: field {field}");
        }
        assert_eq!(sent["id"], id);
        assert!(sent.get("status").is_none(), "no status in a full PUT");
        let gets = account.requests("GET");
        assert_eq!(gets.len(), 2, "a fresh read and a read back");
        assert!(gets
            .iter()
            .all(|get| get.path == format!("/api/token/{id}")));

        let after = account.token(id);
        assert_eq!(
            after,
            SimToken {
                name: new_name,
                ..before.clone()
            },
            "only the name changed on the server"
        );
        assert!(after.expired_time == -1 || after.expired_time > unix_now());
    }
    let restricted = account.token(UNLIMITED_RESTRICTED);
    assert_eq!(restricted.group, "default");
    assert_eq!(restricted.model_limits, "gpt-4.1,claude-sonnet-4");
    assert_eq!(
        restricted.allow_ips.as_deref(),
        Some("10.0.0.0/8\n2001:db8::1")
    );
    assert!(restricted.unlimited_quota);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_of_several_fields_changes_exactly_those_and_prints_json() {
    let account = Account::start().await;
    let before = account.token(UNLIMITED_RESTRICTED);
    let outcome = account.keys(&[
        "--output",
        "json",
        "update",
        "1001",
        "--limited",
        "--remaining-quota",
        "777",
        "--clear-model-limits",
        "--expires",
        "30d",
    ]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let answer: Value = serde_json::from_str(&outcome.stdout).expect("JSON output");
    assert_eq!(answer["changed"], true);
    let changed: Vec<&str> = answer["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        [
            "expired_time",
            "remain_quota",
            "unlimited_quota",
            "model_limits_enabled",
            "model_limits"
        ]
    );
    assert_eq!(answer["key"]["remain_quota"], 777);
    assert!(answer["key"].get("key").is_none(), "no key value field");

    let after = account.token(UNLIMITED_RESTRICTED);
    let in_30_days = unix_now() + 30 * 86_400;
    assert!((after.expired_time - in_30_days).abs() < 60);
    assert_eq!(
        after,
        SimToken {
            remain_quota: 777,
            unlimited_quota: false,
            model_limits_enabled: false,
            model_limits: String::new(),
            expired_time: after.expired_time,
            ..before
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_the_server_would_refuse_are_stopped_before_writing() {
    let account = Account::start().await;
    let outcome = account.keys(&["update", "1003"]);
    assert_eq!(outcome.code, 2, "no field named: {}", outcome.stderr);
    assert!(outcome.stderr.contains("--name"), "{}", outcome.stderr);
    let long_name = "名".repeat(17);
    let outcome = account.keys(&["update", "1003", "--name", &long_name]);
    assert_eq!(outcome.code, 2, "51 bytes: {}", outcome.stderr);
    assert!(outcome.stderr.contains("50 bytes"), "{}", outcome.stderr);
    assert!(
        account.simulator.requests().is_empty(),
        "usage errors send nothing"
    );

    let outcome = account.keys(&["update", "1003", "--remaining-quota", "-5"]);
    assert_eq!(
        outcome.code, 2,
        "negative quota on a limited key: {}",
        outcome.stderr
    );
    let outcome = account.keys(&["update", &OVERDRAWN.to_string(), "--name", "x"]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("account main, key 1002")
            && outcome.stderr.contains("--remaining-quota"),
        "explains the overdrawn key: {}",
        outcome.stderr
    );
    assert!(account.requests("PUT").is_empty(), "nothing was written");

    let outcome = account.keys(&["update", "1003", "--allow-ips", "10.0.0.0/33"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    let outcome = account.keys(&["update", "1003", "--expires", "tomorrow"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_by_the_server_is_reported_scrubbed_with_exit_1() {
    let account = Account::start().await;
    // Above the server's maximum quota, which the command cannot know.
    let outcome = account.keys(&["update", "1003", "--remaining-quota", "500000000000001"]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("account main, key 1003")
            && outcome.stderr.contains("Quota value exceeds valid range"),
        "{}",
        outcome.stderr
    );
    assert_eq!(account.token(NEVER_USED).remain_quota, 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_uses_status_only_and_changes_nothing_else() {
    let account = Account::start().await;
    for id in [NEVER_USED, OVERDRAWN] {
        account.simulator.clear_requests();
        let before = account.token(id);
        let outcome = account.keys(&["disable", &id.to_string()]);
        assert_eq!(outcome.code, 0, "key {id}: {}", outcome.stderr);
        assert!(
            outcome.stdout.contains("enabled → disabled"),
            "{}",
            outcome.stdout
        );
        let puts = account.requests("PUT");
        assert_eq!(puts.len(), 1);
        assert_eq!(puts[0].query.as_deref(), Some("status_only=true"));
        assert_eq!(body(&puts[0])["status"], STATUS_DISABLED);
        assert_eq!(
            account.token(id),
            SimToken {
                status: STATUS_DISABLED,
                ..before
            },
            "only the status changed (the overdrawn key keeps its negative quota)"
        );
    }
    account.simulator.clear_requests();
    let outcome = account.keys(&["disable", "1003"]);
    assert_eq!(outcome.code, 0);
    assert!(
        outcome.stdout.contains("already disabled"),
        "{}",
        outcome.stdout
    );
    assert!(
        account.requests("PUT").is_empty(),
        "no write when already so"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_of_an_expired_or_exhausted_key_is_refused_before_any_write() {
    let account = Account::start().await;
    let outcome = account.keys(&["enable", &MARKED_EXPIRED.to_string()]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("key 1006") && outcome.stderr.contains("--expires"),
        "says to move the expiry: {}",
        outcome.stderr
    );
    let outcome = account.keys(&["enable", &MARKED_EXHAUSTED.to_string()]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("--remaining-quota"),
        "says to add quota: {}",
        outcome.stderr
    );
    assert!(account.requests("PUT").is_empty());

    // The fix the message suggests, then enable: a full PUT (which must not trip the
    // server's enable guard) followed by a status_only PUT.
    let outcome = account.keys(&["update", "1006", "--expires", "30d"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let outcome = account.keys(&["enable", "1006"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome.stdout.contains("expired → enabled"),
        "{}",
        outcome.stdout
    );
    assert_eq!(account.token(MARKED_EXPIRED).status, 1);
    let puts = account.requests("PUT");
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[1].query.as_deref(), Some("status_only=true"));

    let before = account.token(DISABLED);
    let outcome = account.keys(&["enable", &DISABLED.to_string()]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(
        account.token(DISABLED),
        SimToken {
            status: 1,
            ..before
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_prints_the_new_id_even_when_the_name_is_taken() {
    let account = Account::start().await;
    let existing = account.simulator.insert_token(SimToken {
        name: "deploy-bot".into(),
        user_id: 5678,
        remain_quota: 1_000,
        ..SimToken::default()
    });
    let outcome = account.keys(&[
        "create",
        "--name",
        "deploy-bot",
        "--remaining-quota",
        "1000",
        "--group",
        "default",
        "--allow-ips",
        "198.51.100.10,203.0.113.0/24",
    ]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let newest = account.simulator.tokens().last().unwrap().clone();
    assert!(newest.id > existing);
    assert_eq!(
        outcome.stdout.trim(),
        format!("created key {} (deploy-bot) in account main", newest.id)
    );
    assert_eq!(newest.name, "deploy-bot");
    assert_eq!(newest.remain_quota, 1_000);
    assert_eq!(newest.expired_time, -1, "never expires");
    assert_eq!(newest.group, "default");
    assert_eq!(
        newest.allow_ips.as_deref(),
        Some("198.51.100.10\n203.0.113.0/24")
    );
    let posts = account.requests("POST");
    assert_eq!(posts.len(), 1);
    let sent = body(&posts[0]);
    assert_eq!(sent["expired_time"], -1, "never is sent explicitly");
    assert!(sent.get("id").is_none() && sent.get("status").is_none());

    let outcome = account.keys(&[
        "-o",
        "json",
        "create",
        "--name",
        "deploy-bot",
        "--unlimited",
        "--expires",
        "2030-01-01",
    ]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let created: Value = serde_json::from_str(&outcome.stdout).expect("JSON output");
    let newest = account.simulator.tokens().last().unwrap().clone();
    assert_eq!(created["id"], newest.id);
    assert_eq!(created["unlimited_quota"], true);
    assert_eq!(newest.expired_time, 1_893_456_000);

    let outcome = account.keys(&["create", "--name", "no-quota"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_get_print_tables_and_json_without_key_values() {
    let account = Account::start().await;
    let spender = account
        .simulator
        .tokens()
        .into_iter()
        .find(|token| token.name == "never-used")
        .unwrap()
        .id;
    account
        .simulator
        .consume_model(spender, "gpt-4.1", 250_000, 900)
        .unwrap();
    let wallet = account.simulator.wallet();
    let outcome = account.keys(&["list"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome.stdout.contains("main: 40 keys"),
        "{}",
        outcome.stdout
    );
    // Header, 40 keys, the summary, the wallet, today's spend, two subscriptions.
    assert_eq!(
        outcome.stdout.lines().count(),
        1 + 40 + 1 + 1 + 1 + 2,
        "{}",
        outcome.stdout
    );
    let wallet_line = format!(
        "main: wallet {:.2}M (${:.2}) left",
        wallet.quota as f64 / 1e6,
        wallet.quota as f64 / 500_000.0
    );
    assert!(
        outcome.stdout.contains(&wallet_line),
        "{wallet_line} in {}",
        outcome.stdout
    );
    assert!(
        outcome
            .stdout
            .contains(&format!("{} requests", wallet.request_count)),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.contains(
            "main: spent today (since 00:00 UTC) 250.00K ($0.50) in 1 requests on 1 models"
        ),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.contains("(Pro monthly) active"),
        "{}",
        outcome.stdout
    );

    let outcome = account.keys(&["list", "--output", "json"]);
    let document: Value = serde_json::from_str(&outcome.stdout).expect("JSON output");
    let money = &document["accounts"][0];
    assert_eq!(money["account"], "main");
    assert_eq!(money["wallet"]["quota"], wallet.quota);
    assert_eq!(money["wallet"]["used_quota"], wallet.used_quota);
    assert_eq!(money["wallet"]["request_count"], wallet.request_count);
    assert_eq!(money["spend_today"]["quota"], 250_000);
    assert_eq!(
        money["spend_today"]["by_key_and_model"][0]["key_id"],
        spender
    );
    assert_eq!(money["spend_today"]["by_key_and_model"][0]["tokens"], 900);
    assert_eq!(
        money["subscriptions"].as_array().map(Vec::len),
        Some(account.simulator.subscriptions().len())
    );
    let keys = document["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 40);
    assert_eq!(keys[0]["id"], 1001);
    assert_eq!(keys[0]["ip_restricted"], true);
    assert!(keys.iter().all(|key| key.get("key").is_none()));

    let outcome = account.keys(&["get", "1001"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    for expected in [
        "unlimited-negative-remain",
        "10.0.0.0/8, 2001:db8::1",
        "gpt-4.1",
    ] {
        assert!(outcome.stdout.contains(expected), "{}", outcome.stdout);
    }
    let outcome = account.keys(&["get", "1001", "-o", "json"]);
    let key: Value = serde_json::from_str(&outcome.stdout).expect("JSON output");
    assert_eq!(key["allow_ips"], "10.0.0.0/8\n2001:db8::1");
    assert_eq!(key["group"], "default");
    assert_eq!(key["status"], "enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_exits_1_naming_the_account_and_the_id() {
    let account = Account::start().await;
    for arguments in [
        &["get", "999999"][..],
        &["disable", "999999"],
        &["update", "999999", "--name", "x"],
    ] {
        let outcome = account.keys(arguments);
        assert_eq!(outcome.code, 1, "{arguments:?}: {}", outcome.stderr);
        assert_eq!(
            outcome.stderr.trim_end(),
            "cometapi-keymon: account main has no key 999999",
            "{arguments:?}"
        );
        assert_eq!(outcome.stderr.lines().count(), 1);
    }
    assert!(account.requests("PUT").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_needs_yes_and_then_deletes() {
    let account = Account::start().await;
    let outcome = account.keys(&["delete", "1003"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("--yes"));
    assert!(account.simulator.requests().is_empty());
    let outcome = account.keys(&["delete", "1003", "--yes"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(account.simulator.token(NEVER_USED).is_none());
    let outcome = account.keys(&["delete", "1003", "--yes"]);
    assert_eq!(outcome.code, 1, "already gone: {}", outcome.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_must_be_chosen_when_there_are_several() {
    let account = Account::with_accounts(&["main", "second"]).await;
    let outcome = account.keys(&["list"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("main, second") && outcome.stderr.contains("--account"),
        "{}",
        outcome.stderr
    );
    let outcome = account.keys(&["--account", "third", "get", "1001"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("\"third\"") && outcome.stderr.contains("main, second"));
    assert!(account.simulator.requests().is_empty());
    let outcome = account.keys(&["get", "1001", "--account", "second"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_only_mode_works_and_a_refused_token_is_exit_1_without_the_token() {
    let simulator = start_simulator(12).await;
    let token = simulator.access_token();
    let base_url = simulator.base_url();
    let outcome = run(
        &["keys", "get", "1001"],
        &[
            ("COMETAPI_ACCESS_TOKEN", token.as_str()),
            ("COMETAPI_BASE_URL", base_url.as_str()),
        ],
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_no_secret(&simulator, &outcome);
    let outcome = run(
        &["keys", "list"],
        &[
            ("COMETAPI_ACCESS_TOKEN", "tok-wrong-but-long-enough"),
            ("COMETAPI_BASE_URL", base_url.as_str()),
        ],
    );
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("account default") && outcome.stderr.contains("401"),
        "{}",
        outcome.stderr
    );
    assert!(!outcome.stderr.contains("tok-wrong-but-long-enough"));
}
