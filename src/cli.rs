//! The command line: `run`, `check-config`, `scan`, `keys`, `demo`, `--version`.
//!
//! Each subcommand is one function returning an exit code: 0 success, 1 runtime failure (API
//! unreachable, token refused, port taken), 2 bad usage or bad configuration. Errors are one or
//! two lines on stderr naming what is wrong and where, never a backtrace or a secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::api::{scan_account, ApiClient, ClientSettings, IgnoreRequests};
use crate::app::{AppError, Daemon};
use crate::config::{
    self, AccountConfig, Config, ConfigSource, LogConfig, LogFormat, PollConfig, PollSchedule,
    ServerConfig, TokenSource,
};
use crate::policy::rules::{
    ActionKind, Conditions, PolicyConfig, Rule, Selector, TopUp, DEFAULT_MAX_KEY_COUNT_DROP,
};
use crate::poller::unix_now;
use crate::secret::Secret;
use crate::simulator::{Simulator, SimulatorConfig};
use crate::snapshot::Snapshot;
use crate::{report, shutdown};

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BUILD_GIT_REVISION"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "cometapi-keymon", version = VERSION, about = "Prometheus exporter for the API keys of CometAPI and new-api accounts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: poll every account on schedule and serve /metrics.
    Run {
        /// TOML configuration file; without it, COMETAPI_ACCESS_TOKEN defines one account.
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig {
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Poll every account once and print its keys.
    Scan {
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// The management API of one account: list, get, create, update, disable, enable, delete.
    Keys(crate::keys_command::KeysArguments),
    /// One fresh poll, then what each policy rule would do now; never writes.
    Plan {
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Run the daemon against a built-in simulated account; needs no credentials.
    Demo {
        /// Where the daemon serves /metrics.
        #[arg(long, default_value = "127.0.0.1:9877")]
        listen: SocketAddr,
        /// Number of keys in the simulated account.
        #[arg(long, default_value_t = 1_200)]
        keys: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Scan { config, output } => scan(config, output),
        Command::Keys(arguments) => crate::keys_command::run(arguments),
        Command::Plan { config, output } => crate::plan_command::run(config, output),
        Command::Demo { listen, keys } => demo(listen, keys),
    }
}

pub(crate) fn load_config(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    config::load(path.as_deref()).map_err(|error| {
        eprintln!("cometapi-keymon: {error}");
        ExitCode::from(2)
    })
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_tracing(&config.log);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    runtime().block_on(async move {
        let shutdown = match shutdown::on_signals() {
            Ok(shutdown) => shutdown,
            Err(error) => return failure(format!("cannot install signal handlers: {error}")),
        };
        let daemon = match Daemon::bind(config).await {
            Ok(daemon) => daemon,
            Err(error) => return failure(error.to_string()),
        };
        match daemon.run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            // A token that cannot be sent as a header is a configuration mistake.
            Err(error @ (AppError::Client(_) | AppError::PolicyState(_))) => {
                eprintln!("cometapi-keymon: {error}");
                ExitCode::from(2)
            }
            Err(error) => failure(error.to_string()),
        }
    })
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", config.render_redacted());
    ExitCode::SUCCESS
}

/// For one-shot commands (`scan`, `plan`, `keys`): logs at warn on stderr, and the config's
/// warnings printed plainly.
pub(crate) fn init_one_shot(config: &Config) {
    init_tracing(&LogConfig {
        level: "warn".into(),
        format: LogFormat::Text,
    });
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
}

fn scan(path: Option<PathBuf>, output: OutputFormat) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_one_shot(&config);
    runtime().block_on(async move {
        let now = unix_now();
        let (snapshots, failed) = match scan_every_account(&config, now).await {
            Ok(scanned) => scanned,
            Err(code) => return code,
        };
        match output {
            // A table of nothing is noise; scripts reading JSON still get a (possibly empty) array.
            OutputFormat::Table if snapshots.is_empty() => {}
            OutputFormat::Table => print!("{}", report::table(&snapshots, now)),
            OutputFormat::Json => print!("{}", report::json(&snapshots, now)),
        }
        if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// One complete poll of every account, concurrently: the snapshots of those that completed (in
/// config order) and whether any failed (each failure printed on stderr). Exit 2 when a client
/// cannot be built (a token that is not a valid header value).
pub(crate) async fn scan_every_account(
    config: &Config,
    now: i64,
) -> Result<(Vec<Arc<Snapshot>>, bool), ExitCode> {
    let cancel = CancellationToken::new();
    let mut scans = tokio::task::JoinSet::new();
    for (index, account) in config.accounts.iter().enumerate() {
        let settings = ClientSettings::from_config(account, &config.poll);
        let client = match ApiClient::new(settings, Arc::new(IgnoreRequests), cancel.clone()) {
            Ok(client) => client,
            Err(error) => {
                eprintln!("cometapi-keymon: {error}");
                return Err(ExitCode::from(2));
            }
        };
        scans.spawn(async move { (index, scan_account(&client).await) });
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
            Ok(listing) => snapshots.push(Arc::new(Snapshot::new(
                account.clone(),
                listing.keys,
                listing.quota_per_unit,
                now,
            ))),
            Err(error) => {
                eprintln!("cometapi-keymon: account {account}: {error}");
                failed = true;
            }
        }
    }
    Ok((snapshots, failed))
}

fn demo(listen: SocketAddr, keys: usize) -> ExitCode {
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
        simulator.spawn_traffic(Duration::from_secs(1), shutdown.clone());
        let config = demo_config(listen, &simulator);
        let daemon = match Daemon::bind(config).await {
            Ok(daemon) => daemon,
            Err(error) => {
                return failure(format!("{error} (choose another address with --listen)"))
            }
        };
        let address = crate::http::display_address(daemon.local_addr());
        println!(
            "cometapi-keymon demo: a simulated account with {keys} keys at {}",
            simulator.base_url()
        );
        println!("  metrics:  {address}/metrics");
        println!("  status:   {address}/");
        println!("  polling every 15 s; the simulator spends quota every second. Ctrl-C stops.");
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

fn failure(message: String) -> ExitCode {
    eprintln!("cometapi-keymon: {message}");
    ExitCode::from(1)
}

/// Logs go to stderr. `RUST_LOG`, when set, overrides the configured level.
pub(crate) fn init_tracing(log: &LogConfig) {
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
