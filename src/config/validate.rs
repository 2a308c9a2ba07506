//! Loading (figment layering) and validation of the raw values into the typed [`Config`].
//!
//! Longer than our usual ~600 lines on purpose: it is one pass over the raw values, section by
//! section, each key next to the check and the error text that names it; splitting it by section
//! would scatter the shared `Origins`/`KeyPath` plumbing over several files.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use reqwest::Url;

use crate::config::error::{env_var_error, file_error, KeyPath, Origins};
use crate::config::policy::validate_policy;
use crate::config::raw::{RawAccount, RawConfig, RawLog, RawPoll, RawServer};
use crate::config::render::format_duration;
use crate::config::token::{self, TokenFileName};
use crate::config::{
    default_max_connections_per_peer, AccountConfig, Config, ConfigError, ConfigSource, LogConfig,
    PollConfig, PollSchedule, ServerConfig, TokenSource, DEFAULT_ACCOUNT_NAME, DEFAULT_BASE_URL,
    DEFAULT_POLL_INTERVAL, ENV_ACCESS_TOKEN, ENV_BASE_URL, ENV_CONFIG_PATH, ENV_NESTING_SEPARATOR,
    ENV_PREFIX, ENV_USER_ID, MAX_ACCOUNT_NAME_CHARS, MAX_MAX_RETRIES, MIN_MAX_BODY_BYTES,
    MIN_POLL_INTERVAL,
};
use crate::cron::parse_cron;

/// What a cron expression must look like, quoted in every cron error.
const CRON_FORMAT_HELP: &str =
    "expected 6 fields: sec min hour day-of-month month day-of-week (UTC), e.g. \"0 */5 * * * *\"";

/// Level names accepted as a whole `log.level`; anything else must be `EnvFilter` directives.
const LOG_LEVEL_NAMES: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

pub(crate) fn load_file(path: &Path) -> Result<Config, ConfigError> {
    check_toml_file(path)?;
    let source = ConfigSource::File(path.to_path_buf());
    let figment = Figment::new()
        .merge(Toml::file_exact(path))
        .merge(keymon_env());
    let raw: RawConfig = figment
        .extract()
        .map_err(|error| ConfigError::from_figment(error, &source))?;
    let origins = Origins::new(&figment, &source);

    let mut warnings = Vec::new();
    let server = validate_server(&raw.server, &origins)?;
    let poll = validate_poll(&raw.poll, &origins, &mut warnings)?;
    let log = validate_log(&raw.log, &origins)?;
    let token_dir = path.parent().unwrap_or(Path::new(""));
    let accounts = validate_accounts(&raw.accounts, &poll, token_dir, &origins, &mut warnings)?;
    let policy = match &raw.policy {
        Some(raw_policy) => Some(validate_policy(
            raw_policy,
            &accounts,
            token_dir,
            &origins,
            &mut warnings,
        )?),
        None => None,
    };
    let token_variable_used = accounts.iter().any(|account| {
        matches!(&account.token_source, TokenSource::Env(variable) if variable == ENV_ACCESS_TOKEN)
    });
    for ignored in [ENV_ACCESS_TOKEN, ENV_BASE_URL, ENV_USER_ID] {
        if std::env::var_os(ignored).is_some()
            && !(ignored == ENV_ACCESS_TOKEN && token_variable_used)
        {
            warnings.push(format!(
                "{ignored} is set but ignored: it applies only when no config file is given \
                 (or, for the token, to an account with token_env = \"{ENV_ACCESS_TOKEN}\")"
            ));
        }
    }
    Ok(Config {
        server,
        poll,
        log,
        accounts,
        policy,
        source,
        warnings,
    })
}

pub(crate) fn load_environment() -> Result<Config, ConfigError> {
    if std::env::var_os(ENV_ACCESS_TOKEN).is_none() {
        return Err(ConfigError::new(
            None,
            None,
            format!("no configuration: pass --config FILE or set {ENV_ACCESS_TOKEN}"),
        ));
    }
    let source = ConfigSource::Environment;
    let figment = Figment::new().merge(keymon_env());
    let raw: RawConfig = figment
        .extract()
        .map_err(|error| ConfigError::from_figment(error, &source))?;
    let origins = Origins::new(&figment, &source);
    if !raw.accounts.is_empty() {
        return Err(origins.error(
            &KeyPath::root().field("accounts"),
            format!(
                "accounts can only be defined in a config file; without one, \
                 {ENV_ACCESS_TOKEN} defines the single account \"{DEFAULT_ACCOUNT_NAME}\""
            ),
        ));
    }

    let mut warnings = Vec::new();
    let server = validate_server(&raw.server, &origins)?;
    let poll = validate_poll(&raw.poll, &origins, &mut warnings)?;
    let log = validate_log(&raw.log, &origins)?;
    let accounts = vec![environment_account(&poll, &mut warnings)?];
    let policy = match &raw.policy {
        Some(raw_policy) => Some(validate_policy(
            raw_policy,
            &accounts,
            Path::new(""),
            &origins,
            &mut warnings,
        )?),
        None => None,
    };
    Ok(Config {
        server,
        poll,
        log,
        accounts,
        policy,
        source,
        warnings,
    })
}

/// `KEYMON_POLL__INTERVAL=30s` → `poll.interval = "30s"` (values parse like TOML).
fn keymon_env() -> Env {
    let config_path_key = ENV_CONFIG_PATH
        .strip_prefix(ENV_PREFIX)
        .unwrap_or(ENV_CONFIG_PATH)
        .to_ascii_lowercase();
    Env::prefixed(ENV_PREFIX)
        .split(ENV_NESTING_SEPARATOR)
        .ignore(&[config_path_key.as_str()])
}

/// Reads the file once before figment does, for a precise error: a missing or unreadable
/// file names the OS reason, and a syntax error gives line and column but not the line's
/// text (toml's own message quotes the line, which could hold a token pasted unquoted).
fn check_toml_file(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| file_error(path, format!("cannot read the config file: {error}")))?;
    if let Err(error) = toml::from_str::<toml::Table>(&text) {
        let location = match error.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before
                    .rsplit('\n')
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .count()
                    + 1;
                format!(" at line {line}, column {column}")
            }
            None => String::new(),
        };
        let message: Vec<&str> = error.message().lines().collect();
        return Err(file_error(
            path,
            format!("not valid TOML{location}: {}", message.join("; ")),
        ));
    }
    Ok(())
}

fn validate_server(raw: &RawServer, origins: &Origins) -> Result<ServerConfig, ConfigError> {
    let section = KeyPath::root().field("server");
    let listen_key = section.field("listen");
    let listen: SocketAddr = raw.listen.trim().parse().map_err(|_| {
        origins.error(
            &listen_key,
            format!(
                "invalid listen address {:?}: expected IP:PORT such as 0.0.0.0:9877, \
                 127.0.0.1:9877 or [::]:9877",
                raw.listen
            ),
        )
    })?;
    let header_read_timeout = raw.header_read_timeout.0;
    require_positive(
        header_read_timeout,
        &section.field("header_read_timeout"),
        origins,
    )?;
    let write_timeout = raw.write_timeout.0;
    require_positive(write_timeout, &section.field("write_timeout"), origins)?;
    if raw.max_connections == 0 {
        return Err(origins.error(&section.field("max_connections"), "must be at least 1"));
    }
    let max_connections_per_peer = raw
        .max_connections_per_peer
        .unwrap_or_else(|| default_max_connections_per_peer(raw.max_connections));
    if max_connections_per_peer == 0 || max_connections_per_peer > raw.max_connections {
        return Err(origins.error(
            &section.field("max_connections_per_peer"),
            format!(
                "must be between 1 and max_connections ({}), got {max_connections_per_peer}",
                raw.max_connections
            ),
        ));
    }
    Ok(ServerConfig {
        listen,
        header_read_timeout,
        write_timeout,
        max_connections: raw.max_connections,
        max_connections_per_peer,
    })
}

fn validate_poll(
    raw: &RawPoll,
    origins: &Origins,
    warnings: &mut Vec<String>,
) -> Result<PollConfig, ConfigError> {
    let section = KeyPath::root().field("poll");
    let interval_key = section.field("interval");
    let cron_key = section.field("cron");
    let schedule = match (&raw.interval, &raw.cron) {
        (Some(_), Some(_)) => {
            let interval_origin = origins.of(&interval_key);
            let cron_origin = origins.of(&cron_key);
            let reason = if interval_origin == cron_origin {
                "interval and cron are both set; set only one".to_owned()
            } else {
                format!(
                    "interval (from {interval_origin}) and cron (from {cron_origin}) are both \
                     set; set only one"
                )
            };
            // The error is located at cron's origin; the reason names interval's if different.
            return Err(ConfigError::new(Some(cron_origin), Some(&section), reason));
        }
        (Some(interval), None) => {
            if interval.0 < MIN_POLL_INTERVAL {
                return Err(origins.error(
                    &interval_key,
                    format!(
                        "interval {} is too short: the minimum is {}",
                        format_duration(interval.0),
                        format_duration(MIN_POLL_INTERVAL)
                    ),
                ));
            }
            PollSchedule::Interval(interval.0)
        }
        (None, Some(expression)) => PollSchedule::Cron(
            validate_cron(expression).map_err(|reason| origins.error(&cron_key, reason))?,
        ),
        (None, None) => PollSchedule::Interval(DEFAULT_POLL_INTERVAL),
    };

    require_positive(raw.timeout.0, &section.field("timeout"), origins)?;
    require_positive(
        raw.connect_timeout.0,
        &section.field("connect_timeout"),
        origins,
    )?;
    if raw.requests_per_minute == 0 {
        return Err(origins.error(&section.field("requests_per_minute"), "must be at least 1"));
    }
    if raw.max_body_bytes < MIN_MAX_BODY_BYTES {
        return Err(origins.error(
            &section.field("max_body_bytes"),
            format!(
                "{} is too small: the minimum is {MIN_MAX_BODY_BYTES} (64 KiB)",
                raw.max_body_bytes
            ),
        ));
    }
    if raw.max_retries > MAX_MAX_RETRIES {
        return Err(origins.error(
            &section.field("max_retries"),
            format!(
                "{} is too many: the maximum is {MAX_MAX_RETRIES}",
                raw.max_retries
            ),
        ));
    }
    if raw.connect_timeout.0 > raw.timeout.0 {
        warnings.push(format!(
            "poll.connect_timeout ({}) is longer than poll.timeout ({}), which bounds the whole \
             request; connects will be cut short at {}",
            format_duration(raw.connect_timeout.0),
            format_duration(raw.timeout.0),
            format_duration(raw.timeout.0),
        ));
    }
    Ok(PollConfig {
        schedule,
        timeout: raw.timeout.0,
        connect_timeout: raw.connect_timeout.0,
        requests_per_minute: raw.requests_per_minute,
        max_body_bytes: raw.max_body_bytes,
        max_retries: raw.max_retries,
        retry_backoff: raw.retry_backoff.0,
        max_retry_after: raw.max_retry_after.0,
    })
}

fn require_positive(
    duration: Duration,
    key: &KeyPath,
    origins: &Origins,
) -> Result<(), ConfigError> {
    if duration.is_zero() {
        return Err(origins.error(key, "must be longer than 0s"));
    }
    Ok(())
}

/// Checks a cron expression with the croner settings tokio-cron-scheduler uses (seconds
/// required, day-of-month AND day-of-week), insists on exactly 6 fields (croner would also
/// take a 7th, the year, which the documented format leaves out) or an `@` nickname such as
/// `@hourly`, and refuses an expression that never fires (`0 0 0 30 2 *`).
pub(crate) fn validate_cron(expression: &str) -> Result<String, String> {
    let expression = expression.trim();
    if expression.is_empty() {
        return Err(format!("cron is empty; {CRON_FORMAT_HELP}"));
    }
    if !expression.starts_with('@') {
        let field_count = expression.split_whitespace().count();
        if field_count != 6 {
            return Err(format!(
                "invalid cron expression \"{expression}\": it has {field_count} fields; \
                 {CRON_FORMAT_HELP}"
            ));
        }
    }
    let cron = parse_cron(expression).map_err(|error| {
        let detail = error.to_string();
        let detail = detail.trim_end_matches('.');
        format!("invalid cron expression \"{expression}\": {detail}; {CRON_FORMAT_HELP}")
    })?;
    if cron
        .find_next_occurrence(&chrono::Utc::now(), false)
        .is_err()
    {
        return Err(format!(
            "cron expression \"{expression}\" never fires (check day-of-month against month, \
             and note that day-of-month and day-of-week must both match)"
        ));
    }
    Ok(expression.to_owned())
}

fn validate_log(raw: &RawLog, origins: &Origins) -> Result<LogConfig, ConfigError> {
    let level_key = KeyPath::root().field("log").field("level");
    let level = raw.level.trim();
    let help = "expected trace, debug, info, warn, error or off, or EnvFilter directives \
                such as \"info,cometapi_keymon=debug\"";
    // EnvFilter reads a lone word like "verbose" as a target name and would silently
    // log nothing else; a lone word must be a level.
    let is_lone_word = !level.contains(['=', ',', '[', ':']);
    if level.is_empty()
        || (is_lone_word && !LOG_LEVEL_NAMES.contains(&level.to_ascii_lowercase().as_str()))
    {
        return Err(origins.error(&level_key, format!("unknown log level \"{level}\"; {help}")));
    }
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(level) {
        return Err(origins.error(
            &level_key,
            format!("invalid log level \"{level}\": {error}; {help}"),
        ));
    }
    Ok(LogConfig {
        level: level.to_owned(),
        format: raw.format,
    })
}

fn validate_accounts(
    raw_accounts: &[RawAccount],
    poll: &PollConfig,
    token_dir: &Path,
    origins: &Origins,
    warnings: &mut Vec<String>,
) -> Result<Vec<AccountConfig>, ConfigError> {
    let accounts_key = KeyPath::root().field("accounts");
    if raw_accounts.is_empty() {
        return Err(origins.error(
            &accounts_key,
            "no accounts: add at least one [[accounts]] table with a name and \
             token_file or token_env",
        ));
    }
    let mut accounts: Vec<AccountConfig> = Vec::with_capacity(raw_accounts.len());
    let mut index_by_name: HashMap<String, usize> = HashMap::new();
    for (index, raw) in raw_accounts.iter().enumerate() {
        let key = accounts_key.index(index);
        let account = validate_account(raw, &key, poll, token_dir, origins, warnings)?;
        if let Some(first_index) = index_by_name.get(&account.name) {
            return Err(origins.error(
                &key.field("name"),
                format!(
                    "duplicate account name \"{}\": accounts[{first_index}] has it too; \
                     names must be unique (they become the `account` label)",
                    account.name
                ),
            ));
        }
        index_by_name.insert(account.name.clone(), index);
        accounts.push(account);
    }
    Ok(accounts)
}

fn validate_account(
    raw: &RawAccount,
    key: &KeyPath,
    poll: &PollConfig,
    token_dir: &Path,
    origins: &Origins,
    warnings: &mut Vec<String>,
) -> Result<AccountConfig, ConfigError> {
    for (field, present) in [
        ("token", raw.token.is_some()),
        ("access_token", raw.access_token.is_some()),
    ] {
        if present {
            return Err(origins.error(
                &key.field(field),
                "a token is never accepted inline; use token_file or token_env",
            ));
        }
    }

    let name_key = key.field("name");
    let name = raw.name.as_deref().ok_or_else(|| {
        origins.error(
            &name_key,
            "missing: every account needs a name (it becomes the `account` label)",
        )
    })?;
    validate_account_name(name).map_err(|reason| origins.error(&name_key, reason))?;

    let base_url_key = key.field("base_url");
    let base_url = validate_base_url(raw.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))
        .map_err(|reason| origins.error(&base_url_key, reason))?;
    warnings.extend(base_url_warnings(&base_url, &format!("account \"{name}\"")));

    let (token, token_source) = match (&raw.token_file, &raw.token_env) {
        (Some(_), Some(_)) => {
            return Err(origins.error(
                key,
                "both token_file and token_env are set; set exactly one",
            ))
        }
        (None, None) => {
            return Err(origins.error(
                key,
                "no token: set token_file (path of a file holding the access token) or \
                 token_env (name of an environment variable holding it)",
            ))
        }
        (Some(file_value), None) => {
            let file_key = key.field("token_file");
            let file_value = file_value.trim();
            if file_value.is_empty() {
                return Err(origins.error(
                    &file_key,
                    "is empty: expected the path of a file holding the access token",
                ));
            }
            let path = token_dir.join(file_value);
            let shown_name = TokenFileName::for_value(file_value, &path);
            let from_file = token::read_token_file(&path, &shown_name)
                .map_err(|reason| origins.error(&file_key, reason))?;
            if let Some(mode) = from_file.readable_by_others_mode {
                warnings.push(format!(
                    "account \"{name}\": token file {} is readable by group or others \
                     (mode {mode:04o}); restrict it with chmod 600",
                    path.display()
                ));
            }
            (from_file.token, TokenSource::File(path))
        }
        (None, Some(variable)) => {
            let env_key = key.field("token_env");
            let variable = variable.trim();
            if !token::is_valid_env_var_name(variable) {
                return Err(origins.error(
                    &env_key,
                    "expected the name of an environment variable (letters, digits and '_', \
                     not starting with a digit); the value is not shown in case it is a token",
                ));
            }
            let token = token::read_token_env(variable).map_err(|problem| {
                origins.error(
                    &env_key,
                    format!(
                        "environment variable {} {problem}",
                        token::env_var_display(variable)
                    ),
                )
            })?;
            (token, TokenSource::Env(variable.to_owned()))
        }
    };

    if let Some(user_id) = raw.user_id {
        if user_id <= 0 {
            return Err(origins.error(
                &key.field("user_id"),
                format!("must be a positive integer, got {user_id}"),
            ));
        }
    }
    let requests_per_minute = match raw.requests_per_minute {
        Some(0) => {
            return Err(origins.error(&key.field("requests_per_minute"), "must be at least 1"))
        }
        Some(requests_per_minute) => requests_per_minute,
        None => poll.requests_per_minute,
    };

    Ok(AccountConfig {
        name: name.to_owned(),
        base_url,
        token,
        token_source,
        user_id: raw.user_id,
        requests_per_minute,
    })
}

fn environment_account(
    poll: &PollConfig,
    warnings: &mut Vec<String>,
) -> Result<AccountConfig, ConfigError> {
    let token = token::read_token_env(ENV_ACCESS_TOKEN)
        .map_err(|problem| env_var_error(ENV_ACCESS_TOKEN, format!("the value {problem}")))?;
    let base_url = match non_empty_env_var(ENV_BASE_URL)? {
        Some(text) => {
            validate_base_url(&text).map_err(|reason| env_var_error(ENV_BASE_URL, reason))?
        }
        None => DEFAULT_BASE_URL.to_owned(),
    };
    warnings.extend(base_url_warnings(&base_url, ENV_BASE_URL));
    let user_id = match non_empty_env_var(ENV_USER_ID)? {
        Some(text) => match text.trim().parse::<i64>() {
            Ok(user_id) if user_id > 0 => Some(user_id),
            _ => {
                return Err(env_var_error(
                    ENV_USER_ID,
                    format!("expected a positive integer (the numeric user id), got \"{text}\""),
                ))
            }
        },
        None => None,
    };
    Ok(AccountConfig {
        name: DEFAULT_ACCOUNT_NAME.to_owned(),
        base_url,
        token,
        token_source: TokenSource::Env(ENV_ACCESS_TOKEN.to_owned()),
        user_id,
        requests_per_minute: poll.requests_per_minute,
    })
}

/// An optional variable; set-but-empty counts as unset (container tools often pass `VAR=`).
fn non_empty_env_var(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(text)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(env_var_error(name, "the value is not valid UTF-8"))
        }
    }
}

fn validate_account_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the account name is empty".to_owned());
    }
    let length = name.chars().count();
    if length > MAX_ACCOUNT_NAME_CHARS {
        return Err(format!(
            "the account name is {length} characters long; at most {MAX_ACCOUNT_NAME_CHARS} \
             are allowed"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "invalid account name {name:?}: {bad:?} is not allowed; use only letters, digits, \
             '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// Returns the normalised URL: lower-case scheme and host, no trailing slash.
fn validate_base_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    // A URL with '@' may carry credentials; never echo it.
    let shown = if text.contains('@') {
        "(not shown: it contains '@')".to_owned()
    } else {
        format!("\"{text}\"")
    };
    let help = "expected an http(s) URL such as https://api.cometapi.com";
    let url =
        Url::parse(text).map_err(|error| format!("invalid base_url {shown}: {error}; {help}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid base_url {shown}: the scheme must be http or https; {help}"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "base_url must not contain credentials (user:password@); the access token goes in \
             token_file or token_env"
                .to_owned(),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid base_url {shown}: it has no host; {help}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "invalid base_url {shown}: a query (?...) or fragment (#...) is not allowed; {help}"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Warnings about a valid base URL; `subject` names the account or variable.
fn base_url_warnings(base_url: &str, subject: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let Ok(url) = Url::parse(base_url) else {
        return warnings;
    };
    if url.scheme() == "http" && !is_loopback_host(url.host_str().unwrap_or_default()) {
        warnings.push(format!(
            "{subject}: base_url {base_url} is plain http to a host that is not loopback; \
             the access token travels unencrypted"
        ));
    }
    if url.path().trim_end_matches('/').ends_with("/api") {
        warnings.push(format!(
            "{subject}: base_url {base_url} ends in /api, but requests already add /api/...; \
             use the server's root URL"
        ));
    }
    warnings
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = host.parse::<IpAddr>() {
        return address.is_loopback();
    }
    let host = host.to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}
