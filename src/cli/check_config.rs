//! `cometapi-keymon check-config`: validates the configuration and prints the effective values
//! with every secret redacted; warnings go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use super::shared::load_config;

pub fn run(path: Option<PathBuf>) -> ExitCode {
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
