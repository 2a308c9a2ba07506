//! `ConfigError`, key paths (`accounts[1].name`), and where a value came from.
//!
//! figment's own error text names the provider generically ("`KEYMON_` environment
//! variable(s)") and prefixes keys with the profile ("default.poll.interval"); here both are
//! rewritten into the exact file path or variable name and a plain key path, and the values
//! of token-related keys are dropped from the message.

use std::fmt;
use std::path::Path;

use figment::error::{Actual, Kind};
use figment::value::Value;
use figment::{Figment, Metadata, Source};

use crate::config::raw::REJECTED_INLINE_TOKEN_KEYS;
use crate::config::{ConfigSource, ENV_NESTING_SEPARATOR, ENV_PREFIX};

/// A configuration problem, with where it is (file or environment variable), which key, and
/// why. Its `Display` is one line and never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    origin: Option<String>,
    key: Option<String>,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(
        origin: Option<String>,
        key: Option<&KeyPath>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            origin,
            key: key.map(KeyPath::to_string),
            reason: reason.into(),
        }
    }

    /// The config file's path, or `environment variable NAME`; `None` when the problem is
    /// that there is no configuration at all.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The key, as `poll.interval` or `accounts[1].name`, when one key is at fault.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong, without the location.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Translates a figment extraction error (a serde error with figment's path and provider
    /// metadata) into a `ConfigError` naming the exact file or variable.
    pub(crate) fn from_figment(error: figment::Error, source: &ConfigSource) -> ConfigError {
        let key = KeyPath::from_figment_path(&error.path);
        let origin = match &error.metadata {
            Some(metadata) => origin_of(metadata, &key, source),
            None => fallback_origin(source),
        };
        let reason = describe_kind(&error.kind, &key);
        ConfigError::new(Some(origin), (!key.is_root()).then_some(&key), reason)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, &self.key) {
            (Some(origin), Some(key)) => write!(
                formatter,
                "config error in {origin}: key \"{key}\": {}",
                self.reason
            ),
            (Some(origin), None) => write!(formatter, "config error in {origin}: {}", self.reason),
            (None, Some(key)) => write!(formatter, "config error: key \"{key}\": {}", self.reason),
            (None, None) => formatter.write_str(&self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A path to a config key: `poll.interval`, `accounts[1].name`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Field(String),
    Index(usize),
}

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath::default()
    }

    pub(crate) fn field(&self, name: &str) -> KeyPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Field(name.to_owned()));
        KeyPath(segments)
    }

    pub(crate) fn index(&self, index: usize) -> KeyPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        KeyPath(segments)
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last field name (`token_file` for `accounts[0].token_file`).
    fn last_field(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|segment| match segment {
            Segment::Field(name) => Some(name.as_str()),
            Segment::Index(_) => None,
        })
    }

    /// figment paths are strings; array elements appear as their decimal index.
    fn from_figment_path(path: &[String]) -> KeyPath {
        KeyPath(
            path.iter()
                .map(|part| match part.parse::<usize>() {
                    Ok(index) => Segment::Index(index),
                    Err(_) => Segment::Field(part.clone()),
                })
                .collect(),
        )
    }

    /// The `KEYMON_` variable that sets this key (`KEYMON_POLL__INTERVAL`).
    pub(crate) fn env_var_name(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|segment| match segment {
                Segment::Field(name) => name.to_ascii_uppercase(),
                Segment::Index(index) => index.to_string(),
            })
            .collect();
        format!("{ENV_PREFIX}{}", parts.join(ENV_NESTING_SEPARATOR))
    }

    /// The value at this path in the merged figment data, or at its nearest ancestor that
    /// exists (a defaulted key has no value of its own).
    fn nearest_value<'v>(&self, root: &'v Value) -> &'v Value {
        let mut current = root;
        for segment in &self.0 {
            let next = match (segment, current) {
                (Segment::Field(name), Value::Dict(_, dict)) => dict.get(name),
                (Segment::Index(index), Value::Array(_, array)) => array.get(*index),
                _ => None,
            };
            match next {
                Some(value) => current = value,
                None => break,
            }
        }
        current
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Field(name) if position == 0 => formatter.write_str(name)?,
                Segment::Field(name) => write!(formatter, ".{name}")?,
                Segment::Index(index) => write!(formatter, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Finds where each key's value came from, for errors raised after extraction (validation).
pub(crate) struct Origins<'a> {
    figment: &'a Figment,
    merged: Option<Value>,
    source: &'a ConfigSource,
}

impl<'a> Origins<'a> {
    pub(crate) fn new(figment: &'a Figment, source: &'a ConfigSource) -> Origins<'a> {
        Origins {
            figment,
            merged: figment.find_value("").ok(),
            source,
        }
    }

    /// `/etc/x.toml` or `environment variable KEYMON_POLL__INTERVAL`.
    pub(crate) fn of(&self, key: &KeyPath) -> String {
        let Some(merged) = self.merged.as_ref() else {
            return fallback_origin(self.source);
        };
        let value = key.nearest_value(merged);
        match self.figment.get_metadata(value.tag()) {
            // Only leaves are single variables; a table from the environment is a group.
            Some(metadata) if is_environment(metadata) && matches!(value, Value::Dict(..)) => {
                format!(
                    "environment variables {}{ENV_NESTING_SEPARATOR}*",
                    key.env_var_name()
                )
            }
            Some(metadata) => origin_of(metadata, key, self.source),
            None => fallback_origin(self.source),
        }
    }

    /// An error about `key`, located where its value came from.
    pub(crate) fn error(&self, key: &KeyPath, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(Some(self.of(key)), Some(key), reason)
    }
}

fn origin_of(metadata: &Metadata, key: &KeyPath, source: &ConfigSource) -> String {
    match &metadata.source {
        Some(Source::File(path)) => path.display().to_string(),
        _ if is_environment(metadata) => {
            format!("environment variable {}", key.env_var_name())
        }
        _ => fallback_origin(source),
    }
}

fn is_environment(metadata: &Metadata) -> bool {
    metadata.source.is_none() && metadata.name.contains("environment variable")
}

fn fallback_origin(source: &ConfigSource) -> String {
    match source {
        ConfigSource::File(path) => path.display().to_string(),
        ConfigSource::Environment => "the environment".to_owned(),
    }
}

/// An error about the file as a whole (unreadable, not TOML).
pub(crate) fn file_error(path: &Path, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(Some(path.display().to_string()), None, reason)
}

/// An error about one environment variable outside the `KEYMON_` layering (`COMETAPI_*`).
pub(crate) fn env_var_error(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(Some(format!("environment variable {name}")), None, reason)
}

/// Whether a key's value may be (or may accidentally hold) a token, so it is never echoed.
fn is_secret_related(key: &KeyPath) -> bool {
    key.last_field().is_some_and(|name| name.contains("token"))
}

fn describe_kind(kind: &Kind, key: &KeyPath) -> String {
    let hide_value = is_secret_related(key);
    match kind {
        Kind::UnknownField(field, expected) => describe_unknown_key(field, expected),
        Kind::InvalidType(Actual::Map, expected) if key.to_string() == "accounts" => format!(
            "expected {expected}: write each account as [[accounts]] (double brackets), \
             not [accounts]"
        ),
        Kind::InvalidType(_, expected) if hide_value => {
            format!("invalid type: expected {expected} (the value is not shown)")
        }
        Kind::InvalidValue(_, expected) if hide_value => {
            format!("invalid value: expected {expected} (the value is not shown)")
        }
        Kind::UnknownVariant(found, expected) => format!(
            "unknown value \"{found}\"; expected one of: {}",
            expected.join(", ")
        ),
        Kind::MissingField(field) => format!("missing key \"{field}\""),
        // A file-level message is a TOML parse error (the file changed after it was checked);
        // its later lines quote the source text, which may hold a token.
        Kind::Message(message) if key.is_root() => {
            message.lines().next().unwrap_or_default().to_owned()
        }
        Kind::Message(message) if hide_value => {
            // Custom serde messages may quote the input; keep only the part before any quote.
            let safe = message.split('"').next().unwrap_or_default().trim_end();
            format!("{safe} (the value is not shown)")
        }
        other => other.to_string(),
    }
}

fn describe_unknown_key(field: &str, expected: &[&str]) -> String {
    let expected: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|name| !REJECTED_INLINE_TOKEN_KEYS.contains(name))
        .collect();
    format!(
        "unknown key \"{field}\"; expected one of: {}",
        expected.join(", ")
    )
}
