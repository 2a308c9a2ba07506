//! `cometapi-keymon completions SHELL` and `cometapi-keymon man`: the shell completion scripts
//! (clap_complete) and the manual pages (clap_mangen), generated from the same clap definitions
//! as `--help`, so they can never disagree with it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::shared::{failure, print_then};

const BINARY_NAME: &str = "cometapi-keymon";

pub fn completions(mut command: clap::Command, shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, BINARY_NAME, &mut script);
    print_then(&String::from_utf8_lossy(&script), ExitCode::SUCCESS)
}

/// Without a directory, the main page on stdout (`man <(cometapi-keymon man)`); with one,
/// `cometapi-keymon.1` and `cometapi-keymon-SUBCOMMAND.1` (and `-keys-list.1` and so on).
pub fn manual(command: clap::Command, output_dir: Option<PathBuf>) -> ExitCode {
    let mut command = command;
    command.build();
    let Some(directory) = output_dir else {
        return match render(&command) {
            Ok(page) => print_then(&page, ExitCode::SUCCESS),
            Err(error) => failure(format!("cannot render the manual page: {error}")),
        };
    };
    if let Err(error) = std::fs::create_dir_all(&directory) {
        return failure(format!("cannot create {}: {error}", directory.display()));
    }
    let mut written = Vec::new();
    if let Err(error) = write_pages(&command, BINARY_NAME, &directory, &mut written) {
        return failure(error);
    }
    let mut listing = String::new();
    for path in written {
        listing.push_str(&path.display().to_string());
        listing.push('\n');
    }
    print_then(&listing, ExitCode::SUCCESS)
}

fn render(command: &clap::Command) -> std::io::Result<String> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}

fn write_pages(
    command: &clap::Command,
    page_name: &str,
    directory: &std::path::Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), String> {
    // A subcommand's page is titled with its full name (`cometapi-keymon-keys-list`).
    let titled = command.clone().name(page_name.to_owned());
    let page = render(&titled).map_err(|error| format!("cannot render {page_name}: {error}"))?;
    let path = directory.join(format!("{page_name}.1"));
    std::fs::write(&path, page)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    written.push(path);
    for subcommand in command.get_subcommands() {
        if subcommand.get_name() == "help" {
            continue;
        }
        let child = format!("{page_name}-{}", subcommand.get_name());
        write_pages(subcommand, &child, directory, written)?;
    }
    Ok(())
}
