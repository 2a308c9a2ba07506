//! Benchmark of policy enforcement. Run with `cargo bench --bench policy`.
//!
//! 1. `evaluate` (pure) over 100 000 keys and three rules: the work after every complete poll.
//! 2. 20 live actions against the simulated server on loopback (fresh GET, synced intent, PUT,
//!    read-back GET, synced outcome): the time per action and the read-to-write window the audit
//!    log records.

use std::time::{Duration, Instant};

use cometapi_keymon::api::{ApiClient, IgnoreRequests};
use cometapi_keymon::config::{AccountConfig, PollConfig, TokenSource};
use cometapi_keymon::policy::history::PolicyHistory;
use cometapi_keymon::policy::rules::{ActionKind, Conditions, PolicyConfig, Rule, Selector, TopUp};
use cometapi_keymon::policy::{evaluate, EvaluationMode, PolicyEngine};
use cometapi_keymon::secret::Secret;
use cometapi_keymon::simulator::{Simulator, SimulatorConfig};
use cometapi_keymon::snapshot::Snapshot;

mod common;

const NOW: i64 = 1_790_000_000;

fn rules() -> Vec<Rule> {
    let rule = |name: &str, action, conditions, top_up, selector| Rule {
        name: name.into(),
        action,
        selector,
        conditions,
        top_up,
        schedule: None,
    };
    vec![
        rule(
            "disable-expired",
            ActionKind::Disable,
            Conditions {
                expired: Some(true),
                ..Conditions::default()
            },
            None,
            Selector::default(),
        ),
        rule(
            "team-top-up",
            ActionKind::TopUp,
            Conditions {
                remaining_fraction_below: Some(0.1),
                ..Conditions::default()
            },
            Some(TopUp {
                to: 5_000_000,
                enable: true,
            }),
            Selector {
                name_matches: Some(regex::Regex::new("^team-").unwrap()),
                ..Selector::default()
            },
        ),
        rule(
            "unused",
            ActionKind::Disable,
            Conditions {
                unused_for: Some(Duration::from_secs(90 * 86_400)),
                status: Some(vec![cometapi_keymon::snapshot::KeyStatus::Enabled]),
                ..Conditions::default()
            },
            None,
            Selector::default(),
        ),
    ]
}

fn policy(state_dir: std::path::PathBuf, max_actions_per_poll: u32) -> PolicyConfig {
    PolicyConfig {
        dry_run: false,
        state_dir,
        max_actions_per_poll,
        protected_keys: Vec::new(),
        cooldown: Duration::from_secs(86_400),
        max_key_count_drop: 0.2,
        rules: rules(),
    }
}

fn evaluate_100k() {
    let keys = common::synthetic_keys(100_000);
    let snapshot = Snapshot::new("main", keys, 500_000.0, NOW);
    let policy = policy(std::env::temp_dir(), 20);
    let history = PolicyHistory::default();
    let mut timings = Vec::new();
    let mut decisions = 0;
    for _ in 0..11 {
        let started = Instant::now();
        let evaluation = evaluate(
            &policy,
            &snapshot,
            Some(100_000),
            &history,
            NOW,
            EvaluationMode::Daemon,
        );
        timings.push(started.elapsed());
        decisions = evaluation.decisions.len();
    }
    timings.sort();
    println!(
        "evaluate 100000 keys x 3 rules: median {:.1} ms ({} decisions, circuit open as planned)",
        timings[5].as_secs_f64() * 1e3,
        decisions
    );
}

async fn live_actions() {
    let simulator = Simulator::start(
        SimulatorConfig {
            keys: 200,
            ..SimulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    // 20 limited keys named team-*, each below 10% of its quota.
    let ids: Vec<i64> = simulator
        .tokens()
        .iter()
        .take(60)
        .map(|token| token.id)
        .collect();
    let mut chosen = 0;
    for id in ids {
        let token = simulator.token(id).unwrap();
        if token.unlimited_quota || chosen == 20 {
            continue;
        }
        simulator.update_token(id, |token| {
            token.name = format!("team-{id}");
            token.remain_quota = 10;
            token.used_quota = 1_000_000;
            token.status = 1;
            token.expired_time = -1;
        });
        chosen += 1;
    }
    let account = AccountConfig {
        name: "main".into(),
        base_url: simulator.base_url(),
        token: Secret::new(simulator.access_token()),
        token_source: TokenSource::Env("BENCH".into()),
        user_id: None,
        requests_per_minute: 60_000,
        usage: true,
    };
    let settings = cometapi_keymon::config::client_settings(&account, &PollConfig::default());
    let client = ApiClient::new(
        settings,
        std::sync::Arc::new(IgnoreRequests),
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let listing = cometapi_keymon::api::scan_account(&client).await.unwrap();
    let snapshot = Snapshot::new(
        "main",
        listing.keys,
        listing.quota_per_unit,
        NOW + 1_000_000,
    );
    let state = std::env::temp_dir().join(format!("keymon-policy-bench-{}", std::process::id()));
    let engine = PolicyEngine::open(
        policy(state.clone(), 1_000),
        &["main".to_owned()],
        &prometheus::Registry::new(),
    )
    .unwrap();
    simulator.clear_requests();
    let started = Instant::now();
    engine.after_complete_poll(&client, &snapshot).await;
    let elapsed = started.elapsed();
    let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let mut windows: Vec<u64> = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["event"] == "outcome")
        .filter_map(|entry| entry["read_to_write_ms"].as_u64())
        .collect();
    windows.sort_unstable();
    let actions = windows.len();
    println!(
        "{actions} live actions: {:.1} ms in all, {:.2} ms per action, {} requests; read-to-write window median {} ms, max {} ms",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3 / actions.max(1) as f64,
        simulator.requests().len(),
        windows.get(actions / 2).copied().unwrap_or(0),
        windows.last().copied().unwrap_or(0),
    );
    let _ = std::fs::remove_dir_all(&state);
    simulator.shutdown().await;
}

fn main() {
    evaluate_100k();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(live_actions());
}
