//! What the one-shot commands (`scan`, `plan`, `keys`, `check-config`) and the daemon commands
//! (`run`, `demo`) share: loading the configuration (exit 2 on a mistake), the tokio runtime,
//! logging, the output format flag, one complete scan of every account, and the one-line failure
//! message. Subcommands import from here; nothing imports from `cli/mod.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::ValueEnum;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, BudgetPool, IgnoreRequests};
use crate::clock::Clock;
use crate::config::{self, Config, LogConfig, LogFormat};
use crate::poller::poll_account;
use crate::snapshot::Snapshot;

/// `--output`: a table for people or JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

pub fn load_config(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    config::load(path.as_deref()).map_err(|error| {
        eprintln!("cometapi-keymon: {error}");
        ExitCode::from(2)
    })
}

/// `--web.config.file`, when given, replaces `[server] web_config_file` (exit 2 if it is bad).
pub fn apply_web_config_flag(
    config: &mut Config,
    web_config_file: Option<PathBuf>,
) -> Result<(), ExitCode> {
    let Some(path) = web_config_file else {
        return Ok(());
    };
    config.use_web_config_file(&path).map_err(|error| {
        eprintln!("cometapi-keymon: {error}");
        ExitCode::from(2)
    })
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// For one-shot commands (`scan`, `plan`, `keys`): logs at warn on stderr, and the config's
/// warnings printed plainly.
pub fn init_one_shot(config: &Config) {
    init_tracing(&LogConfig {
        level: "warn".into(),
        format: LogFormat::Text,
    });
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
}

/// One complete poll of every account (keys, wallet, today's spend, subscriptions), concurrently:
/// the snapshots of those that completed (in config order) and whether any failed (each failure
/// printed on stderr; a failed spend or subscriptions read is a warning, not a failure). Exit 2
/// when a client cannot be built (a token that is not a valid header value). The snapshots are
/// as of `now`.
pub async fn scan_every_account(
    config: &Config,
    now: i64,
) -> Result<(Vec<Arc<Snapshot>>, bool), ExitCode> {
    let cancel = CancellationToken::new();
    let mut scans = tokio::task::JoinSet::new();
    // Accounts on one server share its request budget, as in the daemon.
    let budgets = BudgetPool::for_accounts(
        config
            .accounts
            .iter()
            .map(|account| (account.base_url.as_str(), account.requests_per_minute)),
    );
    for (index, account) in config.accounts.iter().enumerate() {
        let settings = config::client_settings(account, &config.poll);
        let observer = Arc::new(IgnoreRequests);
        let client = match ApiClient::new_in_pool(settings, observer, cancel.clone(), &budgets) {
            Ok(client) => client,
            Err(error) => {
                eprintln!("cometapi-keymon: {error}");
                return Err(ExitCode::from(2));
            }
        };
        let usage = account.usage;
        scans.spawn(async move {
            let memory = Default::default();
            let polled = poll_account(&client, &memory, None, &Clock::system(), usage).await;
            (index, polled)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = scans.join_next().await {
        results.push(joined.expect("a scan task does not panic"));
    }
    results.sort_by_key(|(index, _)| *index);
    let mut snapshots = Vec::new();
    let mut failed = false;
    for (index, result) in results {
        let account = &config.accounts[index].name;
        match result {
            Ok(polled) => {
                for partial in &polled.partial_failures {
                    eprintln!(
                        "warning: account {account}: {} (shown without it)",
                        partial.error
                    );
                }
                let mut snapshot = polled.snapshot;
                snapshot.completed_at = now;
                snapshots.push(Arc::new(snapshot));
            }
            Err(error) => {
                eprintln!("cometapi-keymon: account {account}: {error}");
                failed = true;
            }
        }
    }
    Ok((snapshots, failed))
}

pub fn failure(message: String) -> ExitCode {
    eprintln!("cometapi-keymon: {message}");
    ExitCode::from(1)
}

/// Logs go to stderr. `RUST_LOG`, when set, overrides the configured level.
pub fn init_tracing(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},tokio_cron_scheduler=warn,hyper=warn,reqwest=warn",
            log.level
        ))
    });
    // Colours only on a terminal: journald and log files must not get escape codes.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
