//! `Config::render_redacted`: the effective configuration as TOML, tokens left out.
//!
//! The output is itself a valid config file: loading it again gives the same configuration
//! (tokens are re-read from the same file or variable).

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::{Config, ConfigSource, PollSchedule, TokenSource};
use crate::policy::rules::PolicyConfig;

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
    let _ = writeln!(
        out,
        "write_timeout = {}",
        toml_duration(server.write_timeout)
    );
    let _ = writeln!(out, "max_connections = {}", server.max_connections);
    let _ = writeln!(
        out,
        "max_connections_per_peer = {}",
        server.max_connections_per_peer
    );
    match &server.web_config {
        Some(web) => {
            let _ = writeln!(
                out,
                "web_config_file = {}",
                toml_string(&web.path.display().to_string())
            );
            out.push_str(&crate::config::web::render_redacted(web));
        }
        None => {
            let _ = writeln!(
                out,
                "# web_config_file is not set: plain HTTP, no credentials"
            );
        }
    }

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
    let _ = writeln!(out, "usage = {}", poll.usage);

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
        let _ = writeln!(out, "usage = {}", account.usage);
    }
    if let Some(policy) = &config.policy {
        render_policy(&mut out, policy);
    }
    out
}

fn render_policy(out: &mut String, policy: &PolicyConfig) {
    let _ = writeln!(out, "\n[policy]");
    let _ = writeln!(out, "dry_run = {}", policy.dry_run);
    let _ = writeln!(
        out,
        "state_dir = {}",
        toml_string(&policy.state_dir.display().to_string())
    );
    let _ = writeln!(
        out,
        "max_actions_per_poll = {}",
        policy.max_actions_per_poll
    );
    let protected: Vec<String> = policy
        .protected_keys
        .iter()
        .map(|key| toml_string(&format!("{}:{}", key.account, key.key_id)))
        .collect();
    let _ = writeln!(out, "protected_keys = [{}]", protected.join(", "));
    let _ = writeln!(out, "cooldown = {}", toml_duration(policy.cooldown));
    let _ = writeln!(out, "max_key_count_drop = {}", policy.max_key_count_drop);
    for rule in &policy.rules {
        let _ = writeln!(out, "\n[[policy.rules]]");
        let _ = writeln!(out, "name = {}", toml_string(&rule.name));
        let _ = writeln!(out, "action = {}", toml_string(rule.action.label()));
        let selector = &rule.selector;
        if let Some(accounts) = &selector.accounts {
            let _ = writeln!(out, "accounts = {}", toml_strings(accounts));
        }
        if let Some(key_ids) = &selector.key_ids {
            let ids: Vec<String> = key_ids.iter().map(i64::to_string).collect();
            let _ = writeln!(out, "key_ids = [{}]", ids.join(", "));
        }
        if let Some(pattern) = &selector.name_matches {
            let _ = writeln!(out, "name_matches = {}", toml_string(pattern.as_str()));
        }
        if let Some(groups) = &selector.groups {
            let _ = writeln!(out, "groups = {}", toml_strings(groups));
        }
        if let Some(schedule) = &rule.schedule {
            let _ = writeln!(out, "schedule = {}", toml_string(schedule));
        }
        let conditions = &rule.conditions;
        if let Some(expired) = conditions.expired {
            let _ = writeln!(out, "when.expired = {expired}");
        }
        if let Some(within) = conditions.expires_within {
            let _ = writeln!(out, "when.expires_within = {}", toml_duration(within));
        }
        if let Some(below) = conditions.remaining_quota_below {
            let _ = writeln!(out, "when.remaining_quota_below = {below}");
        }
        if let Some(below) = conditions.remaining_fraction_below {
            let _ = writeln!(out, "when.remaining_fraction_below = {below}");
        }
        if let Some(below) = conditions.account_quota_below {
            let _ = writeln!(out, "when.account_quota_below = {below}");
        }
        if let Some(unused) = conditions.unused_for {
            let _ = writeln!(out, "when.unused_for = {}", toml_duration(unused));
        }
        if let Some(statuses) = &conditions.status {
            let names: Vec<String> = statuses.iter().map(|s| s.label().to_owned()).collect();
            let _ = writeln!(out, "when.status = {}", toml_strings(&names));
        }
        if let Some(top_up) = rule.top_up {
            let _ = writeln!(out, "top_up.to = {}", top_up.to);
            let _ = writeln!(out, "top_up.enable = {}", top_up.enable);
        }
    }
}

fn toml_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|value| toml_string(value)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A duration the way the config file writes it, and `humantime` reads it back: whole
/// seconds as `"60s"`, whole milliseconds as `"500ms"`, anything finer in humantime's form.
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
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
