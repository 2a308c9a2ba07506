//! `cometapi-keymon scan`: one complete poll of every account, printed as a table (human units
//! and USD) or JSON, then exit; 1 when any account failed.

use std::path::PathBuf;
use std::process::ExitCode;

use super::report;
use super::shared::{init_one_shot, load_config, runtime, scan_every_account, OutputFormat};
use crate::clock::unix_now;

pub fn run(path: Option<PathBuf>, output: OutputFormat) -> ExitCode {
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
