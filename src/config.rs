//! Configuration: everything between the operator's input and a validated, typed [`Config`].
//!
//! This module owns the config file format, the `KEYMON_*` environment overrides, the
//! `COMETAPI_*` env-only mode, reading access tokens (from a file or a named environment
//! variable) into [`Secret`], every default value, and every configuration error message.
//! [`load`] layers serde defaults, then the TOML file (`Toml::file_exact`, so a wrong path
//! fails), then `KEYMON_` variables with `__` between nesting levels (the environment wins),
//! and validates the result once: code that receives a [`Config`] never re-checks it.
//!
//! Invariants:
//! - A token is never accepted inline (`token = ...` or `access_token = ...` is an error) and
//!   no error message, warning or [`Config::render_redacted`] output ever contains a token.
//!   Values of token-related keys are left out of error messages, and a `token_file` or
//!   `token_env` value that looks like it might be a pasted token (no `/` in a path, not an
//!   UPPER_CASE variable name) is not echoed either.
//! - Every [`ConfigError`] names where the bad value came from (the file, or the exact
//!   environment variable), the key (`accounts[1].name`) and the reason, in one line.
//! - Only this module (and the command line) reads the environment.
//!
//! Relative `token_file` paths are resolved against the directory of the config file, so a
//! config and its token file can move together.

mod error;
mod policy;
mod raw;
mod render;
mod token;
mod validate;
mod web;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::ClientSettings;
use crate::policy::rules::PolicyConfig;
use crate::secret::Secret;

pub use error::ConfigError;
pub use web::{
    BasicAuthUser, ClientAuth, KeySource, PemSource, TlsMaterial, TlsMaterialError, TlsSettings,
    TlsVersion, WebConfig, ALLOWED_HEADERS,
};

/// Prefix of the environment variables that override config keys (`KEYMON_POLL__INTERVAL`).
pub const ENV_PREFIX: &str = "KEYMON_";
/// Separator between nesting levels in an override variable's name (`KEYMON_SERVER__LISTEN`).
/// A single `_` cannot be used because key names contain underscores themselves.
pub const ENV_NESTING_SEPARATOR: &str = "__";
/// `KEYMON_CONFIG` is left to the command line (the config file's path), never read as a key.
pub const ENV_CONFIG_PATH: &str = "KEYMON_CONFIG";
/// Env-only mode: the access token of the single account `default`.
pub const ENV_ACCESS_TOKEN: &str = "COMETAPI_ACCESS_TOKEN";
/// Env-only mode: the management API's base URL (optional).
pub const ENV_BASE_URL: &str = "COMETAPI_BASE_URL";
/// Env-only mode: the user id sent as `New-Api-User` (optional).
pub const ENV_USER_ID: &str = "COMETAPI_USER_ID";

/// All interfaces, so a Prometheus server on another host can scrape; 9877 is this exporter's
/// port in the contract.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9877));
/// A scraper sends its request headers at once; 10 s is generous for that and still closes
/// slow-loris connections quickly.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A handful of Prometheus replicas and browsers need far fewer; the cap bounds memory and file
/// descriptors if something floods the port.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// A Prometheus HA pair behind one NAT address, a few humans with curl and a browser open a
/// handful of connections; 32 of the 256 slots is far above that, and leaves 224 for everyone
/// else when one address floods the port. With `max_connections` set and this not, the cap is
/// the same eighth of it (`default_max_connections_per_peer`).
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = DEFAULT_MAX_CONNECTIONS / 8;

/// The per-peer cap when only `max_connections` is configured: an eighth of it, at least 1, so
/// a config written before the cap existed keeps loading and still keeps slots for others.
pub fn default_max_connections_per_peer(max_connections: usize) -> usize {
    (max_connections / 8).max(1)
}
/// Prometheus gives up on a scrape after its `scrape_timeout` (10 s by default, at most the
/// scrape interval); a response still being written after a minute has no reader that can use
/// it, and the slot is better freed. The gzip body of 100,000 keys is about 8 MB.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Key quotas and expiry change slowly, and Prometheus usually scrapes every 15–60 s; one poll
/// a minute keeps the data fresh at a tiny share of the request budget.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Shorter intervals would only hammer the management API; the request budget is per minute.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A list page of 100 keys answers in well under a second; 10 s tolerates a slow server
/// without letting one request eat a whole poll interval.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A TCP and TLS handshake that takes longer than 5 s means the server is unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reading today's spend by key and model costs one request per poll and is what operators ask
/// for; an account (or everyone) can turn it off.
pub const DEFAULT_USAGE: bool = true;
/// new-api allows about 60 `/api` requests per minute per client IP in total; half of that
/// leaves room for the dashboard and other tools behind the same address.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 30;
/// A list page of 100 keys is a few hundred KiB at most; 16 MiB stops a runaway response
/// long before it hurts while never cutting off a real one.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Below 64 KiB a single ordinary list page could be refused.
pub const MIN_MAX_BODY_BYTES: u64 = 64 * 1024;
/// Two retries ride out a dropped connection or a brief 5xx without tripling the load on a
/// server that is really down.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// More retries than this only pile load onto a failing server; the next poll retries anyway.
pub const MAX_MAX_RETRIES: u32 = 10;
/// Base of the exponential backoff between retries: long enough for a restarting proxy,
/// short enough to finish inside the request timeout.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// A 429's `Retry-After` is honoured up to 5 minutes; a larger value is more likely a
/// misconfigured server than a real request, and polling must not stall for hours.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// `info` logs start-up, configuration warnings and poll failures, not every request.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Text is what a person reads in `journalctl`; switch to JSON for a log pipeline.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// The public CometAPI service; a self-hosted new-api server needs its own `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.cometapi.com";
/// The account name of env-only mode.
pub const DEFAULT_ACCOUNT_NAME: &str = "default";
/// Account names become the `account` label; 64 characters is plenty and keeps labels short.
pub const MAX_ACCOUNT_NAME_CHARS: usize = 64;

/// The validated configuration. Built only by [`load`]; every value in it is already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub poll: PollConfig,
    pub log: LogConfig,
    /// At least one account; names are unique.
    pub accounts: Vec<AccountConfig>,
    /// `[policy]`, when the config has one; without it nothing is ever enforced.
    pub policy: Option<PolicyConfig>,
    pub source: ConfigSource,
    /// Problems that are not errors (a token file readable by others, plain HTTP to a remote
    /// host, ...). Log each once, at warn level, as soon as logging is set up.
    pub warnings: Vec<String>,
}

/// The HTTP server that serves `/metrics`, `/healthz`, `/readyz` and `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a response may take to write, from the arrival of its request.
    pub write_timeout: Duration,
    /// Connections served at once; at least 1.
    pub max_connections: usize,
    /// Connections served at once from one IP address; 1 to `max_connections`.
    pub max_connections_per_peer: usize,
    /// The web config (`web_config_file` or `--web.config.file`): TLS, basic auth, headers.
    /// `None`: plain HTTP, no credentials.
    pub web_config: Option<WebConfig>,
}

/// How and how fast the management API is polled. Applies to every account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollConfig {
    pub schedule: PollSchedule,
    /// Per HTTP request; more than zero.
    pub timeout: Duration,
    /// TCP and TLS connect; more than zero.
    pub connect_timeout: Duration,
    /// Request budget per account per minute; at least 1. Accounts may override it
    /// ([`AccountConfig::requests_per_minute`] holds the effective value).
    pub requests_per_minute: u32,
    /// Largest response body accepted; at least [`MIN_MAX_BODY_BYTES`].
    pub max_body_bytes: u64,
    /// Retries after a connect error, a timeout or a 5xx; at most [`MAX_MAX_RETRIES`].
    pub max_retries: u32,
    /// Base delay of the exponential backoff between retries.
    pub retry_backoff: Duration,
    /// Longest `Retry-After` of a 429 that is honoured.
    pub max_retry_after: Duration,
    /// Read today's spend by key and model (`/api/data/*`) with every poll. Accounts may
    /// override it ([`AccountConfig::usage`] holds the effective value).
    pub usage: bool,
}

/// When polls start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollSchedule {
    /// Every this long; at least [`MIN_POLL_INTERVAL`].
    Interval(Duration),
    /// A 6-field cron expression, seconds first, evaluated in UTC. Already parsed once with the
    /// same croner settings tokio-cron-scheduler uses (seconds required, day-of-month AND
    /// day-of-week), and known to fire at least once more.
    Cron(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive string, already checked to parse.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The config file spelling: `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// One CometAPI / new-api account whose keys are polled.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountConfig {
    /// The `account` label: 1 to 64 of `[A-Za-z0-9_.-]`, unique across accounts.
    pub name: String,
    /// `http` or `https` URL without a trailing slash, credentials, query or fragment.
    pub base_url: String,
    /// The management access token: non-empty, no whitespace inside.
    pub token: Secret,
    /// Where `token` came from; the only thing about the token that may be shown.
    pub token_source: TokenSource,
    /// Sent as `New-Api-User`; more than zero when present.
    pub user_id: Option<i64>,
    /// Effective request budget: the account's override or `[poll] requests_per_minute`.
    pub requests_per_minute: u32,
    /// Effective: the account's `usage` or `[poll] usage`.
    pub usage: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Read from this file (an absolute path, or relative to the working directory when the
    /// config file's own path was relative).
    File(PathBuf),
    /// Read from the environment variable of this name.
    Env(String),
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// This TOML file, with `KEYMON_*` overrides.
    File(PathBuf),
    /// No file: `COMETAPI_*` defines the account, `KEYMON_*` the rest.
    Environment,
}

/// The defaults, as used when the config says nothing; for code that builds a `Config`
/// without a file (the `demo` command, tests).
impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            web_config: None,
        }
    }
}

impl Default for PollConfig {
    fn default() -> PollConfig {
        PollConfig {
            schedule: PollSchedule::Interval(DEFAULT_POLL_INTERVAL),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            usage: DEFAULT_USAGE,
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: DEFAULT_LOG_FORMAT,
        }
    }
}

/// Loads and validates the configuration.
///
/// `Some(path)`: the TOML file at `path` (which must exist), overridden by `KEYMON_*`.
/// `None`: env-only mode; `COMETAPI_ACCESS_TOKEN` defines the single account `default`
/// (`COMETAPI_BASE_URL` and `COMETAPI_USER_ID` are optional), and `KEYMON_*` may still set
/// `[server]`, `[poll]` and `[log]` keys.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => validate::load_file(path, &[]),
        None => validate::load_environment(),
    }
}

/// An account's token read from another file than its `token_file` says (`check-config
/// --token-file`): to check a configuration whose token path exists only inside the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFileOverride {
    /// The account; `None` when the configuration has exactly one.
    pub account: Option<String>,
    /// Absolute, or relative to the config file's directory like `token_file`.
    pub path: PathBuf,
}

/// `load` with token files replaced; only a configuration file can be overridden so.
pub fn load_with_token_files(
    path: Option<&Path>,
    token_files: &[TokenFileOverride],
) -> Result<Config, ConfigError> {
    match (path, token_files.is_empty()) {
        (Some(path), _) => validate::load_file(path, token_files),
        (None, true) => validate::load_environment(),
        (None, false) => Err(ConfigError::new(
            Some("--token-file".into()),
            None,
            "applies to a configuration file (--config FILE); in env-only mode the token is \
             COMETAPI_ACCESS_TOKEN",
        )),
    }
}

impl Config {
    /// The account names, in config order (the `account` label values).
    pub fn account_names(&self) -> Vec<String> {
        self.accounts
            .iter()
            .map(|account| account.name.clone())
            .collect()
    }

    /// The effective configuration as TOML, for `check-config`: every value, durations in
    /// human form (`"60s"`), and for each account only where its token comes from
    /// (`token_file = ...` or `token_env = ...`), never the token.
    pub fn render_redacted(&self) -> String {
        render::render_redacted(self)
    }

    /// Replaces the web config with the file given on the command line (`--web.config.file`,
    /// relative to the working directory), which wins over `[server] web_config_file`. Its
    /// warnings join [`Config::warnings`].
    pub fn use_web_config_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let web = web::load_web_config(path, None, &mut self.warnings)?;
        self.server.web_config = Some(web);
        Ok(())
    }
}

/// The API client's settings for one account: the account's own values and the `[poll]` section.
/// (The conversion lives here, not in `api`, so that `api` depends on nothing above it.)
pub fn client_settings(account: &AccountConfig, poll: &PollConfig) -> ClientSettings {
    ClientSettings {
        account: account.name.clone(),
        base_url: account.base_url.trim_end_matches('/').to_owned(),
        token: account.token.clone(),
        user_id: account.user_id,
        timeout: poll.timeout,
        connect_timeout: poll.connect_timeout,
        max_body_bytes: poll.max_body_bytes,
        max_retries: poll.max_retries,
        retry_backoff: poll.retry_backoff,
        max_retry_after: poll.max_retry_after,
        requests_per_minute: account.requests_per_minute,
    }
}
