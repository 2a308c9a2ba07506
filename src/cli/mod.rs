//! The command line: the clap definitions of every subcommand and the dispatch to them, nothing
//! else. Each subcommand is one file beside this one (`run`, `check_config`, `scan`, `plan`,
//! `demo`, `keys/`) returning an exit code: 0 success, 1 runtime failure (API unreachable, token
//! refused, port taken), 2 bad usage or bad configuration. What they share is in `shared`
//! (configuration, runtime, logging, scanning every account) and `report` (tables, human units);
//! nothing imports from this file. Errors are one or two lines on stderr naming what is wrong and
//! where, never a backtrace or a secret.

mod check_config;
mod demo;
pub mod keys;
mod plan;
pub mod report;
mod run;
mod scan;
pub mod shared;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shared::OutputFormat;

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
        /// Web config (exporter-toolkit format: TLS, basic auth); wins over [server] web_config_file.
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config_file: Option<PathBuf>,
    },
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig {
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
        /// Web config (exporter-toolkit format: TLS, basic auth); wins over [server] web_config_file.
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config_file: Option<PathBuf>,
    },
    /// Poll every account once and print its keys.
    Scan {
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// The management API of one account: list, get, create, update, disable, enable, delete.
    Keys(keys::KeysArguments),
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
        /// Web config (exporter-toolkit format): serve the demo over TLS and/or with basic auth.
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config_file: Option<PathBuf>,
    },
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
        Command::Run {
            config,
            web_config_file,
        } => run::run(config, web_config_file),
        Command::CheckConfig {
            config,
            web_config_file,
        } => check_config::run(config, web_config_file),
        Command::Scan { config, output } => scan::run(config, output),
        Command::Keys(arguments) => keys::run(arguments),
        Command::Plan { config, output } => plan::run(config, output),
        Command::Demo {
            listen,
            keys,
            web_config_file,
        } => demo::run(listen, keys, web_config_file),
    }
}
