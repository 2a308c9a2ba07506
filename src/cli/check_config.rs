//! `cometapi-keymon check-config`: validates the configuration and prints the effective values
//! with every secret redacted (the web config too: no hash, no key); warnings go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use super::shared::{apply_web_config_flag, load_config};

pub fn run(path: Option<PathBuf>, web_config_file: Option<PathBuf>) -> ExitCode {
    let mut config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = apply_web_config_flag(&mut config, web_config_file) {
        return code;
    }
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", config.render_redacted());
    ExitCode::SUCCESS
}
