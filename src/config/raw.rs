//! The raw serde shape of the config file and `KEYMON_*` overrides, before validation.
//!
//! Every section rejects unknown keys, so a typo (`intervall`) is an error rather than a
//! silently ignored setting. Defaults come from the `DEFAULT_*` constants; `interval` and
//! `cron` have none here because setting both is an error, so the default interval is
//! applied during validation only when neither is given.

use std::fmt;
use std::time::Duration;

use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config::{
    LogFormat, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_AFTER, DEFAULT_REQUESTS_PER_MINUTE,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BACKOFF, DEFAULT_USAGE, DEFAULT_WRITE_TIMEOUT,
};

/// Account keys that exist only to be rejected with a specific message: a token is never
/// accepted inline.
pub(crate) const REJECTED_INLINE_TOKEN_KEYS: &[&str] = &["token", "access_token"];

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub server: RawServer,
    pub poll: RawPoll,
    pub log: RawLog,
    pub accounts: Vec<RawAccount>,
    pub policy: Option<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawServer {
    /// Parsed into a `SocketAddr` during validation, for a better message than serde's.
    pub listen: String,
    pub header_read_timeout: HumanDuration,
    pub write_timeout: HumanDuration,
    pub max_connections: usize,
    /// `None`: an eighth of `max_connections`.
    pub max_connections_per_peer: Option<usize>,
    /// The exporter-toolkit web config (TLS, basic auth, headers); relative to the config file.
    pub web_config_file: Option<String>,
}

impl Default for RawServer {
    fn default() -> RawServer {
        RawServer {
            listen: DEFAULT_LISTEN.to_string(),
            header_read_timeout: HumanDuration(DEFAULT_HEADER_READ_TIMEOUT),
            write_timeout: HumanDuration(DEFAULT_WRITE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: None,
            web_config_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawPoll {
    pub interval: Option<HumanDuration>,
    pub cron: Option<String>,
    pub timeout: HumanDuration,
    pub connect_timeout: HumanDuration,
    pub requests_per_minute: u32,
    pub max_body_bytes: u64,
    pub max_retries: u32,
    pub retry_backoff: HumanDuration,
    pub max_retry_after: HumanDuration,
    pub usage: bool,
}

impl Default for RawPoll {
    fn default() -> RawPoll {
        RawPoll {
            interval: None,
            cron: None,
            timeout: HumanDuration(DEFAULT_REQUEST_TIMEOUT),
            connect_timeout: HumanDuration(DEFAULT_CONNECT_TIMEOUT),
            requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_backoff: HumanDuration(DEFAULT_RETRY_BACKOFF),
            max_retry_after: HumanDuration(DEFAULT_MAX_RETRY_AFTER),
            usage: DEFAULT_USAGE,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: String,
    pub format: LogFormat,
}

impl Default for RawLog {
    fn default() -> RawLog {
        RawLog {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: DEFAULT_LOG_FORMAT,
        }
    }
}

/// Every field is optional here so that validation can say exactly what is missing.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawAccount {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    pub user_id: Option<i64>,
    pub requests_per_minute: Option<u32>,
    pub usage: Option<bool>,
    /// Present only to be rejected (see [`REJECTED_INLINE_TOKEN_KEYS`]); the value is never kept.
    pub token: Option<InlineTokenPresent>,
    /// As `token`.
    pub access_token: Option<InlineTokenPresent>,
}

/// Records that an inline token key was given, and drops its value unread.
#[derive(Debug)]
pub(crate) struct InlineTokenPresent;

impl<'de> Deserialize<'de> for InlineTokenPresent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<InlineTokenPresent, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(InlineTokenPresent)
    }
}

/// A duration written for people: `"60s"`, `"5m"`, `"500ms"`, `"1h 30m"` (the `humantime`
/// syntax). A bare number is refused because its unit would be a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HumanDuration, D::Error> {
        deserializer.deserialize_any(HumanDurationVisitor)
    }
}

struct HumanDurationVisitor;

impl HumanDurationVisitor {
    fn bare_number<E: de::Error>(number: impl fmt::Display) -> E {
        E::custom(format!(
            "invalid duration {number}: a number needs a unit; write it as a string like \"{number}s\""
        ))
    }
}

impl Visitor<'_> for HumanDurationVisitor {
    type Value = HumanDuration;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a duration string like \"60s\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<HumanDuration, E> {
        humantime::parse_duration(value.trim())
            .map(HumanDuration)
            .map_err(|_| {
                E::custom(format!(
                    "invalid duration {value:?}: expected a number with a unit like 60s, 5m, 500ms or \"1h 30m\""
                ))
            })
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<HumanDuration, E> {
        Err(Self::bare_number(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<HumanDuration, E> {
        Err(Self::bare_number(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<HumanDuration, E> {
        Err(Self::bare_number(value))
    }
}

/// `[policy]`; defaults are applied during validation, where each gets its reason.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub dry_run: Option<bool>,
    pub state_dir: Option<String>,
    pub max_actions_per_poll: Option<u32>,
    pub protected_keys: Vec<String>,
    pub cooldown: Option<HumanDuration>,
    pub max_key_count_drop: Option<f64>,
    pub rules: Vec<RawRule>,
}

/// One `[[policy.rules]]` table; every field optional so validation can say what is missing.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRule {
    pub name: Option<String>,
    pub action: Option<String>,
    pub accounts: Option<Vec<String>>,
    pub key_ids: Option<Vec<i64>>,
    pub name_matches: Option<String>,
    pub groups: Option<Vec<String>>,
    pub when: RawConditions,
    pub top_up: Option<RawTopUp>,
    pub schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConditions {
    pub expired: Option<bool>,
    pub expires_within: Option<HumanDuration>,
    pub remaining_quota_below: Option<i64>,
    pub remaining_fraction_below: Option<f64>,
    pub account_quota_below: Option<i64>,
    pub unused_for: Option<HumanDuration>,
    pub status: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawTopUp {
    pub to: Option<i64>,
    pub enable: Option<bool>,
}
