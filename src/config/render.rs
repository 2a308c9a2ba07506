//! `Config::render_redacted`: the effective configuration as TOML, tokens left out.
//!
//! The output is itself a valid config file: loading it again gives the same configuration
//! (tokens are re-read from the same file or variable).

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::{Config, ConfigSource, PollSchedule, TokenSource};

pub(crate) fn render_redacted(config: &Config) -> String {
    let mut out = String::new();
    let source = match &config.source {
        ConfigSource::File(path) => format!("{} and KEYMON_* overrides", path.display()),
        ConfigSource::Environment => "the environment (COMETAPI_* and KEYMON_*)".to_owned(),
    };
    // `writeln!` into a String cannot fail.
    let _ = writeln!(
        out,
        "# Effective configuration of cometapi-keymon, from {source}."
    );
    let _ = writeln!(
        out,
        "# Tokens are never shown; each account says where its token is read from."
    );

    let server = &config.server;
    let _ = writeln!(out, "\n[server]");
    let _ = writeln!(out, "listen = {}", toml_string(&server.listen.to_string()));
    let _ = writeln!(
        out,
        "header_read_timeout = {}",
        toml_duration(server.header_read_timeout)
    );
    let _ = writeln!(out, "max_connections = {}", server.max_connections);

    let poll = &config.poll;
    let _ = writeln!(out, "\n[poll]");
    match &poll.schedule {
        PollSchedule::Interval(interval) => {
            let _ = writeln!(out, "interval = {}", toml_duration(*interval));
        }
        PollSchedule::Cron(expression) => {
            let _ = writeln!(out, "cron = {}", toml_string(expression));
        }
    }
    let _ = writeln!(out, "timeout = {}", toml_duration(poll.timeout));
    let _ = writeln!(
        out,
        "connect_timeout = {}",
        toml_duration(poll.connect_timeout)
    );
    let _ = writeln!(out, "requests_per_minute = {}", poll.requests_per_minute);
    let _ = writeln!(out, "max_body_bytes = {}", poll.max_body_bytes);
    let _ = writeln!(out, "max_retries = {}", poll.max_retries);
    let _ = writeln!(out, "retry_backoff = {}", toml_duration(poll.retry_backoff));
    let _ = writeln!(
        out,
        "max_retry_after = {}",
        toml_duration(poll.max_retry_after)
    );

    let _ = writeln!(out, "\n[log]");
    let _ = writeln!(out, "level = {}", toml_string(&config.log.level));
    let _ = writeln!(out, "format = {}", toml_string(config.log.format.as_str()));

    for account in &config.accounts {
        let _ = writeln!(out, "\n[[accounts]]");
        let _ = writeln!(out, "name = {}", toml_string(&account.name));
        let _ = writeln!(out, "base_url = {}", toml_string(&account.base_url));
        match &account.token_source {
            TokenSource::File(path) => {
                let _ = writeln!(
                    out,
                    "token_file = {}",
                    toml_string(&path.display().to_string())
                );
            }
            TokenSource::Env(variable) => {
                let _ = writeln!(out, "token_env = {}", toml_string(variable));
            }
        }
        match account.user_id {
            Some(user_id) => {
                let _ = writeln!(out, "user_id = {user_id}");
            }
            None => {
                let _ = writeln!(out, "# user_id is not set");
            }
        }
        let _ = writeln!(out, "requests_per_minute = {}", account.requests_per_minute);
    }
    out
}

/// A duration the way the config file writes it, and `humantime` reads it back: whole
/// seconds as `"60s"`, whole milliseconds as `"500ms"`, anything finer in humantime's form.
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        humantime::format_duration(duration).to_string()
    }
}

fn toml_duration(duration: Duration) -> String {
    toml_string(&format_duration(duration))
}

/// A TOML basic string with the needed escapes.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}
