//! `cometapi-keymon run`: the daemon. Loads the configuration, installs the signal handlers and
//! hands over to `app::Daemon`; a configuration mistake found only while building (a token that
//! is not a valid header, an unusable state directory, TLS settings rustls refuses) still exits 2.
//! `--web.config.file` replaces `[server] web_config_file`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::shared::{apply_web_config_flag, failure, init_tracing, load_config, runtime};
use crate::app::{AppError, Daemon};
use crate::shutdown;

pub fn run(path: Option<PathBuf>, web_config_file: Option<PathBuf>) -> ExitCode {
    let mut config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = apply_web_config_flag(&mut config, web_config_file) {
        return code;
    }
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
            // The web config's TLS settings cannot be built: a configuration mistake.
            Err(error @ AppError::Tls(_)) => {
                eprintln!("cometapi-keymon: {error}");
                return ExitCode::from(2);
            }
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
