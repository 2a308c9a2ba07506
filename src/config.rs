//! TEMPORARY: the typed configuration as specified; the real loader lands from the config branch.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

pub struct Config {
    pub server: ServerConfig,
    pub poll: PollConfig,
    pub log: LogConfig,
    pub accounts: Vec<AccountConfig>,
    pub source: ConfigSource,
    pub warnings: Vec<String>,
}
pub enum ConfigSource {
    File(PathBuf),
    Environment,
}
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}
pub struct PollConfig {
    pub schedule: PollSchedule,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub requests_per_minute: u32,
    pub max_body_bytes: u64,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub max_retry_after: Duration,
}
pub enum PollSchedule {
    Interval(Duration),
    Cron(String),
}
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}
pub enum LogFormat {
    Text,
    Json,
}
pub struct AccountConfig {
    pub name: String,
    pub base_url: String,
    pub token: Secret,
    pub token_source: TokenSource,
    pub user_id: Option<i64>,
    pub requests_per_minute: u32,
}
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}
#[derive(Debug)]
pub struct ConfigError(String);
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}
pub fn load(_path: Option<&Path>) -> Result<Config, ConfigError> {
    Err(ConfigError("not yet".into()))
}
impl Config {
    pub fn render_redacted(&self) -> String {
        String::new()
    }
}
