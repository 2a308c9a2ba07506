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
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use reqwest::Url;

use crate::config::error::{env_var_error, file_error, KeyPath, Origins};
use crate::config::policy::validate_policy;
use crate::config::raw::{RawAccount, RawConfig, RawLog, RawPoll, RawServer};
use crate::config::render::format_duration;
use crate::config::token::{self, TokenFileName};
use crate::config::web::load_web_config;
use crate::config::{
    default_max_connections_per_peer, AccountConfig, Config, ConfigError, ConfigSource, LogConfig,
    PollConfig, PollSchedule, ServerConfig, TokenFileOverride, TokenSource, DEFAULT_ACCOUNT_NAME,
    DEFAULT_BASE_URL, DEFAULT_POLL_INTERVAL, ENV_ACCESS_TOKEN, ENV_BASE_URL, ENV_CONFIG_PATH,
    ENV_NESTING_SEPARATOR, ENV_PREFIX, ENV_USER_ID, MAX_ACCOUNT_NAME_CHARS, MAX_MAX_RETRIES,
    MIN_MAX_BODY_BYTES, MIN_POLL_INTERVAL,
};
use crate::cron::parse_cron;
use crate::secret::{Secret, ACCESS_TOKEN_HELP};

/// What a cron expression must look like, quoted in every cron error.
const CRON_FORMAT_HELP: &str =
    "expected 6 fields: sec min hour day-of-month month day-of-week (UTC), e.g. \"0 */5 * * * *\"";

/// Level names accepted as a whole `log.level`; anything else must be `EnvFilter` directives.
const LOG_LEVEL_NAMES: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

pub(crate) fn load_file(
    path: &Path,
    token_files: &[TokenFileOverride],
) -> Result<Config, ConfigError> {
    check_toml_file(path)?;
    let source = ConfigSource::File(path.to_path_buf());
    let figment = Figment::new().merge(Toml::file_exact(path)).merge(
        keymon_env().filter(|key| !key.as_str().to_ascii_lowercase().starts_with("accounts.")),
    );
    let figment = with_account_overrides(figment, &source)?;
    let mut raw: RawConfig = figment
        .extract()
        .map_err(|error| ConfigError::from_figment(error, &source))?;
    override_token_files(&mut raw, token_files, &source)?;
    let origins = Origins::new(&figment, &source);

    let mut warnings = Vec::new();
    let token_dir = path.parent().unwrap_or(Path::new(""));
    let server = validate_server(&raw.server, token_dir, &origins, &mut warnings)?;
    let poll = validate_poll(&raw.poll, &origins, &mut warnings)?;
    let log = validate_log(&raw.log, &origins)?;
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

/// `check-config --token-file [ACCOUNT=]PATH`: the account reads its token from PATH instead
/// of its `token_file` or `token_env` (a systemd credential exists only inside the service).
fn override_token_files(
    raw: &mut RawConfig,
    token_files: &[TokenFileOverride],
    source: &ConfigSource,
) -> Result<(), ConfigError> {
    let origin = Some(match source {
        ConfigSource::File(path) => format!("--token-file (for {})", path.display()),
        ConfigSource::Environment => "--token-file".to_owned(),
    });
    for wanted in token_files {
        let names: Vec<&str> = raw
            .accounts
            .iter()
            .filter_map(|account| account.name.as_deref())
            .collect();
        let index = match &wanted.account {
            Some(name) => raw
                .accounts
                .iter()
                .position(|account| account.name.as_deref() == Some(name.as_str()))
                .ok_or_else(|| {
                    ConfigError::new(
                        origin.clone(),
                        None,
                        format!(
                            "no account {name:?} in the configuration; the accounts are: {}",
                            names.join(", ")
                        ),
                    )
                })?,
            None if raw.accounts.len() == 1 => 0,
            None => {
                return Err(ConfigError::new(
                    origin.clone(),
                    None,
                    format!(
                        "the configuration has {} accounts ({}): say which with                          --token-file ACCOUNT=PATH",
                        raw.accounts.len(),
                        names.join(", ")
                    ),
                ))
            }
        };
        let account = &mut raw.accounts[index];
        account.token_file = Some(wanted.path.display().to_string());
        account.token_env = None;
    }
    Ok(())
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
    let server = validate_server(&raw.server, Path::new(""), &origins, &mut warnings)?;
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

/// `KEYMON_ACCOUNTS__<index>__<KEY>`: one account's key from the environment, the account chosen
/// by its position among the file's `[[accounts]]` tables (0 for the first). figment cannot
/// address an array element from the environment (its `accounts.0.key` would turn the array into
/// a table), so these variables are read here and merged into the file's array element by
/// element; errors about them still name the variable.
fn with_account_overrides(figment: Figment, source: &ConfigSource) -> Result<Figment, ConfigError> {
    const PREFIX: &str = "KEYMON_ACCOUNTS__";
    let mut overrides = Vec::new();
    for (name, value) in std::env::vars() {
        let upper = name.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(PREFIX) else {
            continue;
        };
        let how = "choose the account by its position in the file, 0 for the first \
                   [[accounts]] table, e.g. KEYMON_ACCOUNTS__0__TOKEN_FILE";
        let (index, key) = rest.split_once(ENV_NESTING_SEPARATOR).unwrap_or((rest, ""));
        let index: usize = index.parse().map_err(|_| {
            env_var_error(&name, format!("\"{index}\" is not an account index: {how}"))
        })?;
        if key.is_empty() {
            return Err(env_var_error(
                &name,
                format!("names no key of the account: {how}"),
            ));
        }
        let key = key.to_ascii_lowercase().replace(ENV_NESTING_SEPARATOR, ".");
        overrides.push((index, key, value));
    }
    if overrides.is_empty() {
        return Ok(figment);
    }
    let mut accounts = match figment.find_value("accounts") {
        Ok(Value::Array(tag, accounts)) => (tag, accounts),
        _ => (figment::value::Tag::Default, Vec::new()),
    };
    for (index, key, value) in overrides {
        let name = format!(
            "{PREFIX}{index}{ENV_NESTING_SEPARATOR}{}",
            key.to_ascii_uppercase()
        );
        let count = accounts.1.len();
        let Some(Value::Dict(_, account)) = accounts.1.get_mut(index) else {
            let file = match source {
                ConfigSource::File(path) => path.display().to_string(),
                ConfigSource::Environment => "the configuration".to_owned(),
            };
            return Err(env_var_error(
                &name,
                format!(
                    "{file} has {count} [[accounts]] table(s), so there is no accounts[{index}]; \
                     an override sets a key of an account the file defines, it cannot add one"
                ),
            ));
        };
        let parsed: Value = value.parse().expect("figment's value parser is infallible");
        account.insert(key, parsed);
    }
    Ok(figment.merge(AccountOverrides {
        accounts: Value::Array(accounts.0, accounts.1),
    }))
}

/// The file's accounts with the `KEYMON_ACCOUNTS__N__KEY` values set; the file's values keep
/// their origin, the new ones are tagged as environment variables.
struct AccountOverrides {
    accounts: Value,
}

impl Provider for AccountOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("`KEYMON_ACCOUNTS__N__KEY` environment variable(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        dict.insert("accounts".to_owned(), self.accounts.clone());
        Ok(Profile::Default.collect(dict))
    }
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

fn validate_server(
    raw: &RawServer,
    config_dir: &Path,
    origins: &Origins,
    warnings: &mut Vec<String>,
) -> Result<ServerConfig, ConfigError> {
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
    let web_config = match raw.web_config_file.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(file) => {
            let key = section.field("web_config_file");
            let path = config_dir.join(file);
            Some(load_web_config(
                &path,
                Some((origins.of(&key), &key)),
                warnings,
            )?)
        }
    };
    Ok(ServerConfig {
        listen,
        header_read_timeout,
        write_timeout,
        max_connections: raw.max_connections,
        max_connections_per_peer,
        web_config,
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
        usage: raw.usage,
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
        let detail = match cron_field_problem(expression) {
            Some(problem) => problem,
            None => error.to_string().trim_end_matches('.').to_owned(),
        };
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

/// The first number of a 6-field expression outside its field's range, or a step that is not
/// a positive number, said with the field's name and range (croner only says "Number out of
/// bounds"). `None` when every number is in range (names such as MON or JAN are not checked).
fn cron_field_problem(expression: &str) -> Option<String> {
    const FIELDS: [(&str, u32, u32); 6] = [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day-of-month", 1, 31),
        ("month", 1, 12),
        ("day-of-week", 0, 7),
    ];
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return None;
    }
    for (text, (field, low, high)) in fields.iter().zip(FIELDS) {
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step {
                if !step.parse::<u32>().is_ok_and(|step| step > 0) {
                    return Some(format!(
                        "the {field} field \"{text}\" has the step \"/{step}\"; a step must be a \
                         positive number"
                    ));
                }
            }
            for bound in range.split('-') {
                let digits = bound.trim_end_matches(['L', 'W', 'l', 'w']);
                let digits = digits.split('#').next().unwrap_or_default();
                if let Ok(number) = digits.parse::<u32>() {
                    if number < low || number > high {
                        return Some(format!(
                            "the {field} field \"{text}\" holds {number}, out of range: {field} \
                             is {low} to {high}"
                        ));
                    }
                }
            }
        }
    }
    None
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
    let subject = format!("account \"{name}\"");
    let base_url = strip_api_suffix(base_url, &subject, warnings);
    warnings.extend(base_url_warnings(&base_url, &subject));

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

    let source = match &token_source {
        TokenSource::File(path) => format!("token file {}", path.display()),
        TokenSource::Env(variable) => format!("environment variable {variable}"),
    };
    warnings.extend(api_key_shape_warning(
        &token,
        &format!("account \"{name}\""),
        &source,
    ));
    let requests_per_minute_key = key.field("requests_per_minute");

    if let Some(user_id) = raw.user_id {
        if user_id <= 0 {
            return Err(origins.error(
                &key.field("user_id"),
                format!("must be a positive integer, got {user_id}"),
            ));
        }
    }
    let requests_per_minute = match raw.requests_per_minute {
        Some(0) => return Err(origins.error(&requests_per_minute_key, "must be at least 1")),
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
        usage: raw.usage.unwrap_or(poll.usage),
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
    let base_url = strip_api_suffix(base_url, ENV_BASE_URL, warnings);
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
    warnings.extend(api_key_shape_warning(
        &token,
        &format!("account \"{DEFAULT_ACCOUNT_NAME}\""),
        &format!("environment variable {ENV_ACCESS_TOKEN}"),
    ));
    Ok(AccountConfig {
        name: DEFAULT_ACCOUNT_NAME.to_owned(),
        base_url,
        token,
        token_source: TokenSource::Env(ENV_ACCESS_TOKEN.to_owned()),
        user_id,
        requests_per_minute: poll.requests_per_minute,
        usage: poll.usage,
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
    warnings
}

/// A `base_url` ending in `/api` (or `/api/`, already trimmed) would make every request go to
/// `/api/api/...` and fail with a bare 404: the suffix is dropped, with a warning.
fn strip_api_suffix(base_url: String, subject: &str, warnings: &mut Vec<String>) -> String {
    let Some(root) = base_url.strip_suffix("/api") else {
        return base_url;
    };
    if Url::parse(root).is_err() {
        return base_url;
    }
    warnings.push(format!(
        "{subject}: base_url {base_url} ends in /api, but requests already add /api/...; \
         using {root} (set base_url to the server's root URL to silence this warning)"
    ));
    root.to_owned()
}

/// A warning when a token has the shape of an API key (`sk-...`); never shows the token.
fn api_key_shape_warning(token: &Secret, subject: &str, source: &str) -> Option<String> {
    token.looks_like_api_key().then(|| {
        format!(
            "{subject}: the access token from {source} starts with sk-, the shape of an API \
             key; {ACCESS_TOKEN_HELP}"
        )
    })
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = host.parse::<IpAddr>() {
        return address.is_loopback();
    }
    let host = host.to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}
