//! The command line: the clap definitions of every subcommand and the dispatch to them, nothing
//! else. Each subcommand is one file beside this one (`run`, `check_config`, `scan`, `plan`,
//! `demo`, `keys/`, `completions` for `completions` and `man`) returning an exit code: 0
//! success, 1 runtime failure (API unreachable, token refused, port taken), 2 bad usage or bad
//! configuration, 141 stdout closed by its reader. What they share is in `shared`
//! (configuration, runtime, logging, scanning every account, printing), `progress` (stderr
//! progress of long listings) and `report` (tables, human units);
//! nothing imports from this file. Errors are one or two lines on stderr naming what is wrong and
//! where, never a backtrace or a secret.

mod check_config;
mod completions;
mod demo;
pub mod keys;
mod plan;
mod progress;
pub mod report;
mod run;
mod scan;
pub mod shared;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
        /// Where to serve /metrics (ADDRESS:PORT); overrides [server] listen and
        /// KEYMON_SERVER__LISTEN.
        #[arg(long, value_name = "ADDRESS:PORT")]
        listen: Option<SocketAddr>,
        /// Web config (exporter-toolkit format: TLS, basic auth); wins over [server] web_config_file.
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config_file: Option<PathBuf>,
    },
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig {
        /// TOML configuration file; without it, COMETAPI_ACCESS_TOKEN defines one account.
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
        /// Web config (exporter-toolkit format: TLS, basic auth); wins over [server] web_config_file.
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config_file: Option<PathBuf>,
        /// Also reach every account: connect, authenticate (one status and one list request)
        /// and report what the server is; exit 1 when any account fails.
        #[arg(long)]
        online: bool,
        /// Read this account's token from PATH instead of its token_file (e.g. before the
        /// systemd service has created its credential); ACCOUNT= may be left out when there
        /// is one account. Repeatable.
        #[arg(long, value_name = "[ACCOUNT=]PATH")]
        token_file: Vec<String>,
    },
    /// Poll every account once and print its keys.
    Scan {
        /// TOML configuration file; without it, COMETAPI_ACCESS_TOKEN defines one account.
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
        /// A table for people or JSON for scripts.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// The management API of one account: list, get, create, update, disable, enable, delete.
    Keys(keys::KeysArguments),
    /// One fresh poll, then what each policy rule would do now; never writes.
    Plan {
        /// TOML configuration file (with a [policy] section).
        #[arg(long, short = 'c', value_name = "FILE", env = "KEYMON_CONFIG")]
        config: Option<PathBuf>,
        /// A table for people or JSON for scripts.
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a directory.
    Man {
        /// Write cometapi-keymon.1 and cometapi-keymon-COMMAND.1 for every subcommand here
        /// instead of printing the main page.
        #[arg(long, value_name = "DIRECTORY")]
        output_dir: Option<PathBuf>,
    },
}

/// The clap definition of the whole command line, for completions and the manual page.
fn command_definition() -> clap::Command {
    Cli::command()
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
            listen,
            web_config_file,
        } => run::run(config, listen, web_config_file),
        Command::CheckConfig {
            config,
            web_config_file,
            online,
            token_file,
        } => check_config::run(config, web_config_file, online, &token_file),
        Command::Scan { config, output } => scan::run(config, output),
        Command::Keys(arguments) => keys::run(arguments),
        Command::Plan { config, output } => plan::run(config, output),
        Command::Demo {
            listen,
            keys,
            web_config_file,
        } => demo::run(listen, keys, web_config_file),
        Command::Completions { shell } => completions::completions(command_definition(), shell),
        Command::Man { output_dir } => completions::manual(command_definition(), output_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and every subcommand of the tree, with the path that leads to it.
    fn undocumented(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        if command.get_about().is_none() && !path.is_empty() {
            missing.push(format!("subcommand `{path}` has no description"));
        }
        for argument in command.get_arguments() {
            let id = argument.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if argument.get_help().is_none() && argument.get_long_help().is_none() {
                missing.push(format!("`{path} {id}` has no help text"));
            }
        }
        for subcommand in command.get_subcommands() {
            let name = subcommand.get_name();
            if name == "help" {
                continue;
            }
            let child = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path} {name}")
            };
            undocumented(subcommand, &child, missing);
        }
    }

    #[test]
    fn every_argument_and_subcommand_has_help_text() {
        let mut command = command_definition();
        command.build();
        let mut missing = Vec::new();
        undocumented(&command, "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn the_definition_is_consistent() {
        command_definition().debug_assert();
    }
}
