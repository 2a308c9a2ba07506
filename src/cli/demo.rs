//! `cometapi-keymon demo`: the daemon against the built-in simulated management API on
//! loopback, with live quota traffic and a dry-run policy on the `vip` group, so every metric
//! family and the audit log have something to show. Needs no account.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::shared::{apply_web_config_flag, failure, init_tracing, runtime};
use crate::app::{AppError, Daemon};
use crate::config::{
    AccountConfig, Config, ConfigSource, LogConfig, LogFormat, PollConfig, PollSchedule,
    ServerConfig, TokenSource,
};
use crate::policy::rules::{
    ActionKind, Conditions, PolicyConfig, Rule, Selector, TopUp, DEFAULT_MAX_KEY_COUNT_DROP,
};
use crate::secret::Secret;
use crate::shutdown;
use crate::simulator::{Simulator, SimulatorConfig, SIMULATED_MODELS};

pub fn run(listen: SocketAddr, keys: usize, web_config_file: Option<PathBuf>) -> ExitCode {
    init_tracing(&LogConfig {
        level: "info".into(),
        format: LogFormat::Text,
    });
    runtime().block_on(async move {
        let shutdown = match shutdown::on_signals() {
            Ok(shutdown) => shutdown,
            Err(error) => return failure(format!("cannot install signal handlers: {error}")),
        };
        let simulator_config = SimulatorConfig {
            keys,
            ..SimulatorConfig::default()
        };
        let simulator =
            match Simulator::start(simulator_config, SocketAddr::from(([127, 0, 0, 1], 0))).await {
                Ok(simulator) => simulator,
                Err(error) => {
                    return failure(format!(
                        "cannot start the simulated management API: {error}"
                    ))
                }
            };
        spend_a_little_on_every_model(&simulator);
        let _traffic = simulator.spawn_traffic(Duration::from_secs(1), shutdown.clone());
        let mut config = demo_config(listen, &simulator);
        if let Err(code) = apply_web_config_flag(&mut config, web_config_file) {
            return code;
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let daemon = match Daemon::bind(config).await {
            Ok(daemon) => daemon,
            Err(error @ AppError::Tls(_)) => {
                eprintln!("cometapi-keymon: {error}");
                return ExitCode::from(2);
            }
            Err(error) => {
                return failure(format!("{error} (choose another address with --listen)"))
            }
        };
        let address = crate::http::display_url(daemon.local_addr(), daemon.scheme());
        println!(
            "cometapi-keymon demo: a simulated account with {keys} keys at {}",
            simulator.base_url()
        );
        println!("  metrics:  {address}/metrics");
        println!("  status:   {address}/");
        println!("  polling every 15 s; the simulator spends quota every second. Ctrl-C stops.");
        println!(
            "  money:    the wallet (cometapi_account_*), today's spend by key and model \
             (cometapi_key_model_*_total) and the subscriptions (cometapi_subscription_*)"
        );
        println!(
            "  policy:   dry run (nothing is written); audit log in {}",
            demo_state_dir().join("audit.jsonl").display()
        );
        let result = daemon.run(shutdown).await;
        simulator.shutdown().await;
        let _ = std::fs::remove_dir_all(demo_state_dir());
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => failure(error.to_string()),
        }
    })
}

/// Some spend on the first usable keys across every simulated model, so the first poll already
/// shows today's spend by key and model (the background traffic adds to it every second).
fn spend_a_little_on_every_model(simulator: &Simulator) {
    let now = simulator.now();
    let usable = simulator
        .tokens()
        .into_iter()
        .filter(|token| {
            token.status == crate::simulator::STATUS_ENABLED
                && !token.is_expired_at(now)
                && (token.unlimited_quota || token.remain_quota > 100_000)
        })
        .take(24);
    for (index, token) in usable.enumerate() {
        let model = SIMULATED_MODELS[index % SIMULATED_MODELS.len()];
        let quota = 5_000 + 2_500 * index as i64;
        // A refused relay request is part of the traffic, not an error.
        let _ = simulator.consume_model(token.id, model, quota, quota / 8);
    }
}

/// The configuration `demo` runs with: one account against the simulator, polled every 15 s.
fn demo_config(listen: SocketAddr, simulator: &Simulator) -> Config {
    // The simulator has no rate limit of its own; a generous budget keeps the demo brisk.
    let requests_per_minute = 6_000;
    Config {
        server: ServerConfig {
            listen,
            ..ServerConfig::default()
        },
        poll: PollConfig {
            schedule: PollSchedule::Interval(Duration::from_secs(15)),
            requests_per_minute,
            ..PollConfig::default()
        },
        log: LogConfig::default(),
        accounts: vec![AccountConfig {
            name: "demo".into(),
            base_url: simulator.base_url(),
            token: Secret::new(simulator.access_token()),
            token_source: TokenSource::Env("(built-in simulator)".into()),
            user_id: None,
            requests_per_minute,
            usage: true,
        }],
        source: ConfigSource::Environment,
        policy: Some(demo_policy()),
        warnings: Vec::new(),
    }
}

/// Where `demo` keeps its (dry-run) policy state: a directory of its own, removed at exit.
fn demo_state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("cometapi-keymon-demo-{}", std::process::id()))
}

/// A dry-run policy for `demo`, so the policy metrics and the audit log have something to show:
/// for the `vip` group, disable expired keys, top up keys below 5% of their quota, and a
/// nightly restore.
fn demo_policy() -> PolicyConfig {
    let rule = |name: &str, action, conditions, top_up, schedule: Option<&str>| Rule {
        name: name.into(),
        action,
        selector: Selector {
            groups: Some(vec!["vip".into()]),
            ..Selector::default()
        },
        conditions,
        top_up,
        schedule: schedule.map(str::to_owned),
    };
    let restore = TopUp {
        to: 5_000_000,
        enable: true,
    };
    PolicyConfig {
        dry_run: true,
        state_dir: demo_state_dir(),
        max_actions_per_poll: 100,
        protected_keys: Vec::new(),
        cooldown: Duration::from_secs(3_600),
        max_key_count_drop: DEFAULT_MAX_KEY_COUNT_DROP,
        rules: vec![
            rule(
                "disable-expired",
                ActionKind::Disable,
                Conditions {
                    expired: Some(true),
                    ..Conditions::default()
                },
                None,
                None,
            ),
            rule(
                "top-up-low",
                ActionKind::TopUp,
                Conditions {
                    remaining_fraction_below: Some(0.05),
                    ..Conditions::default()
                },
                Some(restore),
                None,
            ),
            rule(
                "nightly-restore",
                ActionKind::TopUp,
                Conditions::default(),
                Some(restore),
                Some("0 0 0 * * *"),
            ),
        ],
    }
}
