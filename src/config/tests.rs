//! Unit tests of loading, validation, error text and rendering.
//!
//! Every test that calls `load` runs inside `figment::Jail`: the jail serializes tests that
//! touch the environment or the working directory, starts each one with an empty
//! environment (`clear_env`), and restores both afterwards.
//!
//! Longer than our usual ~600 lines on purpose: one test per configuration key and mistake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::error::Kind;
use figment::providers::{Format, Toml};
use figment::{Figment, Jail};
use serde::de::DeserializeOwned;

use crate::config::raw::{
    RawAccount, RawConditions, RawConfig, RawLog, RawPolicy, RawPoll, RawRule, RawServer, RawTopUp,
    REJECTED_INLINE_TOKEN_KEYS,
};
use crate::config::render::format_duration;
use crate::config::*;

const CONFIG_FILE: &str = "keymon.toml";
/// The token used everywhere; no error, warning or rendering may contain it.
const TOKEN: &str = "tok-SECRET-0123456789abcdef";
/// A part of the token that would show up if any of it leaked.
const TOKEN_MARKER: &str = "SECRET";
/// A minimal valid account whose token file `./token` the test creates.
const ACCOUNT: &str = "[[accounts]]\nname = \"main\"\ntoken_file = \"./token\"\n";

/// Runs `test` in a fresh jail with an empty environment. The test body returns nothing
/// (it unwraps), so only this closure carries figment's large error type.
#[allow(clippy::result_large_err)]
fn in_jail(test: impl FnOnce(&mut Jail)) {
    Jail::expect_with(|jail| {
        jail.clear_env();
        test(jail);
        Ok(())
    });
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes a token file in the jail with the given mode and returns its absolute path.
fn write_token_file(jail: &Jail, name: &str, contents: &str, mode: u32) -> PathBuf {
    jail.create_file(name, contents).unwrap();
    let path = jail.directory().join(name);
    set_mode(&path, mode);
    path
}

/// Writes `./token` (mode 0600) and the config file, then loads it.
fn load_with_token(jail: &Jail, config_text: &str) -> Result<Config, ConfigError> {
    write_token_file(jail, "token", &format!("{TOKEN}\n"), 0o600);
    jail.create_file(CONFIG_FILE, config_text).unwrap();
    load(Some(Path::new(CONFIG_FILE)))
}

fn expect_error(result: Result<Config, ConfigError>) -> ConfigError {
    match result {
        Ok(config) => panic!("expected a config error, got {config:?}"),
        Err(error) => error,
    }
}

/// Checks where, which key and why, and the rules every message keeps: one line, no token.
#[track_caller]
fn assert_error(error: &ConfigError, origin: &str, key: Option<&str>, reason_part: &str) {
    let text = error.to_string();
    assert_eq!(error.origin(), Some(origin), "origin of: {text}");
    assert_eq!(error.key(), key, "key of: {text}");
    assert!(
        error.reason().contains(reason_part),
        "reason of `{text}` lacks `{reason_part}`"
    );
    assert!(!text.contains('\n'), "more than one line: {text}");
    assert!(!text.contains(TOKEN_MARKER), "token leaked: {text}");
    assert!(text.starts_with("config error in "), "{text}");
}

// ---------------------------------------------------------------- valid configurations

#[test]
fn full_config_loads_every_value() {
    in_jail(|jail| {
        jail.set_env("SECOND_TOKEN", "tok-second-SECRET");
        let config = load_with_token(
            jail,
            r#"
[server]
listen = "127.0.0.1:9100"
header_read_timeout = "3s"
write_timeout = "45s"
max_connections = 16
max_connections_per_peer = 4

[poll]
interval = "1h 30m"
timeout = "20s"
connect_timeout = "2s"
requests_per_minute = 12
max_body_bytes = 1048576
max_retries = 4
retry_backoff = "250ms"
max_retry_after = "2m"
usage = false

[log]
level = "info,cometapi_keymon=debug"
format = "json"

[[accounts]]
name = "main"
base_url = "https://api.cometapi.com/"
token_file = "./token"
user_id = 5678

[[accounts]]
name = "self-hosted.2"
base_url = "http://127.0.0.1:3000"
token_env = "SECOND_TOKEN"
requests_per_minute = 50
usage = true
"#,
        )
        .unwrap();

        assert_eq!(
            config.server,
            ServerConfig {
                listen: "127.0.0.1:9100".parse().unwrap(),
                header_read_timeout: Duration::from_secs(3),
                write_timeout: Duration::from_secs(45),
                max_connections: 16,
                max_connections_per_peer: 4,
                web_config: None,
            }
        );
        assert_eq!(
            config.poll,
            PollConfig {
                schedule: PollSchedule::Interval(Duration::from_secs(5400)),
                timeout: Duration::from_secs(20),
                connect_timeout: Duration::from_secs(2),
                requests_per_minute: 12,
                max_body_bytes: 1_048_576,
                max_retries: 4,
                retry_backoff: Duration::from_millis(250),
                max_retry_after: Duration::from_secs(120),
                usage: false,
            }
        );
        assert_eq!(
            config.log,
            LogConfig {
                level: "info,cometapi_keymon=debug".to_owned(),
                format: LogFormat::Json,
            }
        );
        assert_eq!(
            config.accounts,
            vec![
                AccountConfig {
                    name: "main".to_owned(),
                    base_url: "https://api.cometapi.com".to_owned(),
                    token: crate::secret::Secret::new(TOKEN),
                    token_source: TokenSource::File(PathBuf::from("./token")),
                    user_id: Some(5678),
                    requests_per_minute: 12,
                    usage: false,
                },
                AccountConfig {
                    name: "self-hosted.2".to_owned(),
                    base_url: "http://127.0.0.1:3000".to_owned(),
                    token: crate::secret::Secret::new("tok-second-SECRET"),
                    token_source: TokenSource::Env("SECOND_TOKEN".to_owned()),
                    user_id: None,
                    requests_per_minute: 50,
                    usage: true,
                },
            ]
        );
        assert_eq!(
            config.source,
            ConfigSource::File(PathBuf::from(CONFIG_FILE))
        );
        assert_eq!(config.warnings, Vec::<String>::new());
    });
}

#[test]
fn missing_sections_take_the_defaults() {
    in_jail(|jail| {
        let config = load_with_token(jail, ACCOUNT).unwrap();
        assert_eq!(config.server, ServerConfig::default());
        assert_eq!(config.poll, PollConfig::default());
        assert_eq!(config.log, LogConfig::default());
        assert_eq!(config.accounts[0].base_url, DEFAULT_BASE_URL);
        assert_eq!(config.accounts[0].user_id, None);
        assert_eq!(
            config.accounts[0].requests_per_minute,
            DEFAULT_REQUESTS_PER_MINUTE
        );
    });
}

#[test]
fn cron_schedule_is_accepted() {
    in_jail(|jail| {
        let config = load_with_token(
            jail,
            &format!("[poll]\ncron = \"0 */5 * * * *\"\n{ACCOUNT}"),
        )
        .unwrap();
        assert_eq!(
            config.poll.schedule,
            PollSchedule::Cron("0 */5 * * * *".to_owned())
        );
    });
}

#[test]
fn environment_overrides_beat_the_file() {
    in_jail(|jail| {
        jail.set_env("KEYMON_POLL__INTERVAL", "30s");
        jail.set_env("KEYMON_SERVER__LISTEN", "127.0.0.1:9999");
        jail.set_env("KEYMON_LOG__LEVEL", "info,hyper=warn");
        jail.set_env("KEYMON_POLL__REQUESTS_PER_MINUTE", "7");
        let config = load_with_token(
            jail,
            &format!(
                "[server]\nlisten = \"0.0.0.0:1234\"\n[poll]\ninterval = \"10m\"\n\
                 requests_per_minute = 20\n{ACCOUNT}"
            ),
        )
        .unwrap();
        assert_eq!(
            config.poll.schedule,
            PollSchedule::Interval(Duration::from_secs(30))
        );
        assert_eq!(config.server.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(config.log.level, "info,hyper=warn");
        assert_eq!(config.poll.requests_per_minute, 7);
        assert_eq!(config.accounts[0].requests_per_minute, 7);
    });
}

#[test]
fn keymon_config_variable_is_not_read_as_a_key() {
    in_jail(|jail| {
        jail.set_env(ENV_CONFIG_PATH, "/etc/cometapi-keymon/config.toml");
        load_with_token(jail, ACCOUNT).unwrap();
    });
}

#[test]
fn relative_token_file_is_resolved_against_the_config_directory() {
    in_jail(|jail| {
        jail.create_dir("etc").unwrap();
        write_token_file(jail, "etc/token", TOKEN, 0o600);
        jail.create_file(
            "etc/keymon.toml",
            "[[accounts]]\nname = \"main\"\ntoken_file = \"token\"\n",
        )
        .unwrap();
        let config = load(Some(Path::new("etc/keymon.toml"))).unwrap();
        assert_eq!(config.accounts[0].token.expose(), TOKEN);
        assert_eq!(
            config.accounts[0].token_source,
            TokenSource::File(PathBuf::from("etc/token"))
        );
    });
}

#[test]
fn token_file_content_is_trimmed() {
    in_jail(|jail| {
        write_token_file(jail, "token", &format!("  {TOKEN}\r\n\n"), 0o600);
        jail.create_file(CONFIG_FILE, ACCOUNT).unwrap();
        let config = load(Some(Path::new(CONFIG_FILE))).unwrap();
        assert_eq!(config.accounts[0].token.expose(), TOKEN);
    });
}

// ---------------------------------------------------------------- env-only mode

#[test]
fn environment_only_mode_defines_the_default_account() {
    in_jail(|jail| {
        jail.set_env(ENV_ACCESS_TOKEN, TOKEN);
        jail.set_env(ENV_BASE_URL, "https://new-api.example.com/");
        jail.set_env(ENV_USER_ID, "42");
        jail.set_env("KEYMON_POLL__REQUESTS_PER_MINUTE", "10");
        jail.set_env("KEYMON_SERVER__LISTEN", "127.0.0.1:9877");
        let config = load(None).unwrap();
        assert_eq!(config.source, ConfigSource::Environment);
        assert_eq!(config.server.listen, "127.0.0.1:9877".parse().unwrap());
        assert_eq!(
            config.accounts,
            vec![AccountConfig {
                name: DEFAULT_ACCOUNT_NAME.to_owned(),
                base_url: "https://new-api.example.com".to_owned(),
                token: crate::secret::Secret::new(TOKEN),
                token_source: TokenSource::Env(ENV_ACCESS_TOKEN.to_owned()),
                user_id: Some(42),
                requests_per_minute: 10,
                usage: true,
            }]
        );
    });
}

#[test]
fn environment_only_mode_needs_only_the_token() {
    in_jail(|jail| {
        jail.set_env(ENV_ACCESS_TOKEN, TOKEN);
        let config = load(None).unwrap();
        assert_eq!(config.server, ServerConfig::default());
        assert_eq!(config.poll, PollConfig::default());
        assert_eq!(config.log, LogConfig::default());
        assert_eq!(config.accounts.len(), 1);
        assert_eq!(config.accounts[0].base_url, DEFAULT_BASE_URL);
        assert_eq!(config.accounts[0].user_id, None);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    });
}

#[test]
fn no_file_and_no_token_is_an_error() {
    in_jail(|_jail| {
        let error = expect_error(load(None));
        assert_eq!(
            error.to_string(),
            "no configuration: pass --config FILE or set COMETAPI_ACCESS_TOKEN"
        );
    });
}

#[test]
fn environment_only_mode_rejects_an_empty_token() {
    in_jail(|jail| {
        jail.set_env(ENV_ACCESS_TOKEN, "  ");
        let error = expect_error(load(None));
        assert_error(
            &error,
            "environment variable COMETAPI_ACCESS_TOKEN",
            None,
            "is empty",
        );
    });
}

#[test]
fn environment_only_mode_rejects_a_bad_user_id() {
    in_jail(|jail| {
        jail.set_env(ENV_ACCESS_TOKEN, TOKEN);
        jail.set_env(ENV_USER_ID, "abc");
        let error = expect_error(load(None));
        assert_error(
            &error,
            "environment variable COMETAPI_USER_ID",
            None,
            "expected a positive integer",
        );
    });
}

#[test]
fn environment_only_mode_rejects_a_bad_base_url() {
    in_jail(|jail| {
        jail.set_env(ENV_ACCESS_TOKEN, TOKEN);
        jail.set_env(ENV_BASE_URL, "api.cometapi.com");
        let error = expect_error(load(None));
        assert_error(
            &error,
            "environment variable COMETAPI_BASE_URL",
            None,
            "invalid base_url \"api.cometapi.com\"",
        );
    });
}

#[test]
fn environment_only_mode_rejects_accounts_from_keymon_variables() {
    in_jail(|jail| {
        jail.set_env(ENV_ACCESS_TOKEN, TOKEN);
        jail.set_env(
            "KEYMON_ACCOUNTS",
            "[{name = \"x\", token_env = \"COMETAPI_ACCESS_TOKEN\"}]",
        );
        let error = expect_error(load(None));
        assert_error(
            &error,
            "environment variable KEYMON_ACCOUNTS",
            Some("accounts"),
            "only be defined in a config file",
        );
    });
}

#[test]
fn cometapi_variables_are_ignored_with_a_warning_when_a_file_is_used() {
    in_jail(|jail| {
        jail.set_env(ENV_BASE_URL, "https://elsewhere.example.com");
        jail.set_env(ENV_ACCESS_TOKEN, TOKEN);
        let config = load_with_token(jail, ACCOUNT).unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|warning| warning.contains("COMETAPI_ACCESS_TOKEN is set but ignored")),
            "{:?}",
            config.warnings
        );
        // Not ignored when an account reads it.
        let config = load_with_token(
            jail,
            "[[accounts]]\nname = \"main\"\ntoken_env = \"COMETAPI_ACCESS_TOKEN\"\n",
        )
        .unwrap();
        assert!(
            !config
                .warnings
                .iter()
                .any(|warning| warning.contains("COMETAPI_ACCESS_TOKEN is set")),
            "{:?}",
            config.warnings
        );
        let config = load_with_token(jail, ACCOUNT).unwrap();
        assert_eq!(config.accounts[0].base_url, DEFAULT_BASE_URL);
        assert!(
            config
                .warnings
                .iter()
                .any(|warning| warning.contains("COMETAPI_BASE_URL is set but ignored")),
            "{:?}",
            config.warnings
        );
    });
}

// ---------------------------------------------------------------- file-level errors

#[test]
fn missing_config_file_names_the_path_and_the_reason() {
    in_jail(|_jail| {
        let error = expect_error(load(Some(Path::new("/nonexistent/keymon.toml"))));
        assert_error(
            &error,
            "/nonexistent/keymon.toml",
            None,
            "No such file or directory",
        );
    });
}

#[test]
fn toml_syntax_error_gives_the_position_but_not_the_line() {
    in_jail(|jail| {
        // The classic mistake: the token pasted unquoted, where toml's own message would
        // quote the whole line.
        jail.create_file(
            CONFIG_FILE,
            &format!("[[accounts]]\nname = \"main\"\ntoken_file = {TOKEN}\n"),
        )
        .unwrap();
        let error = expect_error(load(Some(Path::new(CONFIG_FILE))));
        assert_error(
            &error,
            CONFIG_FILE,
            None,
            "not valid TOML at line 3, column 14",
        );
    });
}

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\nintervall = \"60s\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll.intervall"),
            "unknown key \"intervall\"; expected one of: interval, cron",
        );
    });
}

#[test]
fn unknown_key_in_an_account_does_not_offer_inline_token_keys() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}tokenfile = \"x\"\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].tokenfile"),
            "unknown key \"tokenfile\"",
        );
        assert!(!error.reason().contains("access_token"), "{error}");
    });
}

#[test]
fn unknown_environment_override_names_the_variable() {
    in_jail(|jail| {
        // A single underscore where `__` was meant.
        jail.set_env("KEYMON_POLL_INTERVAL", "30s");
        let error = expect_error(load_with_token(jail, ACCOUNT));
        assert_error(
            &error,
            "environment variable KEYMON_POLL_INTERVAL",
            Some("poll_interval"),
            "unknown key \"poll_interval\"",
        );
    });
}

#[test]
fn accounts_written_as_a_single_table_get_a_hint() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            "[accounts]\nname = \"main\"\ntoken_file = \"./token\"\n",
        ));
        assert_error(&error, CONFIG_FILE, Some("accounts"), "[[accounts]]");
    });
}

// ---------------------------------------------------------------- [server], [poll], [log]

#[test]
fn bad_duration_names_key_and_value() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\ninterval = \"ten\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll.interval"),
            "invalid duration \"ten\": expected a number with a unit like 60s",
        );
        assert!(
            error.to_string().starts_with(
                "config error in keymon.toml: key \"poll.interval\": invalid duration \"ten\""
            ),
            "{error}"
        );
    });
}

#[test]
fn duration_without_a_unit_is_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\ntimeout = 10\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll.timeout"),
            "a number needs a unit; write it as a string like \"10s\"",
        );
    });
}

#[test]
fn bad_duration_from_the_environment_names_the_variable() {
    in_jail(|jail| {
        jail.set_env("KEYMON_POLL__INTERVAL", "ten");
        let error = expect_error(load_with_token(jail, ACCOUNT));
        assert_error(
            &error,
            "environment variable KEYMON_POLL__INTERVAL",
            Some("poll.interval"),
            "invalid duration \"ten\"",
        );
    });
}

#[test]
fn interval_below_one_second_is_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\ninterval = \"500ms\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll.interval"),
            "interval 500ms is too short: the minimum is 1s",
        );
    });
}

#[test]
fn five_field_cron_is_refused_with_the_expected_format() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\ncron = \"*/5 * * * *\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll.cron"),
            "6 fields: sec min hour day-of-month month day-of-week",
        );
        assert!(error.reason().contains("it has 5 fields"), "{error}");
    });
}

#[test]
fn invalid_and_never_firing_cron_expressions_are_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\ncron = \"61 * * * * *\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll.cron"),
            "6 fields: sec min hour",
        );
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\ncron = \"0 0 0 30 2 *\"\n{ACCOUNT}"),
        ));
        assert_error(&error, CONFIG_FILE, Some("poll.cron"), "never fires");
    });
}

#[test]
fn interval_and_cron_together_are_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\ninterval = \"60s\"\ncron = \"0 * * * * *\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll"),
            "interval and cron are both set; set only one",
        );
    });
}

#[test]
fn interval_from_the_environment_and_cron_from_the_file_name_both_origins() {
    in_jail(|jail| {
        jail.set_env("KEYMON_POLL__INTERVAL", "30s");
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\ncron = \"0 * * * * *\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll"),
            "interval (from environment variable KEYMON_POLL__INTERVAL) and cron (from keymon.toml)",
        );
    });
}

#[test]
fn out_of_range_poll_values_are_refused() {
    let cases = [
        ("timeout = \"0s\"", "poll.timeout", "must be longer than 0s"),
        (
            "connect_timeout = \"0ms\"",
            "poll.connect_timeout",
            "must be longer than 0s",
        ),
        (
            "requests_per_minute = 0",
            "poll.requests_per_minute",
            "must be at least 1",
        ),
        (
            "max_body_bytes = 1000",
            "poll.max_body_bytes",
            "the minimum is 65536",
        ),
        ("max_retries = 11", "poll.max_retries", "the maximum is 10"),
        (
            "max_retries = -1",
            "poll.max_retries",
            "invalid value signed int `-1`, expected u32",
        ),
    ];
    in_jail(|jail| {
        for (line, key, reason) in cases {
            let error = expect_error(load_with_token(jail, &format!("[poll]\n{line}\n{ACCOUNT}")));
            assert_error(&error, CONFIG_FILE, Some(key), reason);
        }
    });
}

#[test]
fn connect_timeout_longer_than_timeout_is_a_warning() {
    in_jail(|jail| {
        let config = load_with_token(
            jail,
            &format!("[poll]\ntimeout = \"2s\"\nconnect_timeout = \"5s\"\n{ACCOUNT}"),
        )
        .unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("connect_timeout")),
            "{:?}",
            config.warnings
        );
    });
}

#[test]
fn bad_listen_address_is_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[server]\nlisten = \"localhost:9877\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("server.listen"),
            "invalid listen address \"localhost:9877\": expected IP:PORT",
        );
        let error = expect_error(load_with_token(
            jail,
            &format!("[server]\nmax_connections = 0\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("server.max_connections"),
            "must be at least 1",
        );
    });
}

#[test]
fn per_peer_connection_cap_and_write_timeout_are_checked() {
    in_jail(|jail| {
        for (value, got) in [("0", "got 0"), ("300", "got 300")] {
            let error = expect_error(load_with_token(
                jail,
                &format!("[server]\nmax_connections_per_peer = {value}\n{ACCOUNT}"),
            ));
            assert_error(
                &error,
                CONFIG_FILE,
                Some("server.max_connections_per_peer"),
                &format!("must be between 1 and max_connections (256), {got}"),
            );
        }
        let error = expect_error(load_with_token(
            jail,
            &format!("[server]\nmax_connections = 8\nmax_connections_per_peer = 9\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("server.max_connections_per_peer"),
            "must be between 1 and max_connections (8), got 9",
        );
        // Unset, the cap follows max_connections: a config from before the cap still loads.
        for (max_connections, per_peer) in [(8, 1), (64, 8), (256, 32), (1000, 125)] {
            let config = load_with_token(
                jail,
                &format!("[server]\nmax_connections = {max_connections}\n{ACCOUNT}"),
            )
            .unwrap();
            assert_eq!(config.server.max_connections_per_peer, per_peer);
        }
        let config = load_with_token(
            jail,
            &format!("[server]\nmax_connections = 8\nmax_connections_per_peer = 8\n{ACCOUNT}"),
        )
        .unwrap();
        assert_eq!(config.server.max_connections_per_peer, 8);
        let error = expect_error(load_with_token(
            jail,
            &format!("[server]\nwrite_timeout = \"0s\"\n{ACCOUNT}"),
        ));
        assert_error(&error, CONFIG_FILE, Some("server.write_timeout"), "");
    });
}

#[test]
fn bad_log_settings_are_refused() {
    in_jail(|jail| {
        // EnvFilter alone would take "verbose" as a target name and log nothing else.
        let error = expect_error(load_with_token(
            jail,
            &format!("[log]\nlevel = \"verbose\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("log.level"),
            "unknown log level \"verbose\"",
        );
        let error = expect_error(load_with_token(
            jail,
            &format!("[log]\nlevel = \"info,[\"\n{ACCOUNT}"),
        ));
        assert_error(&error, CONFIG_FILE, Some("log.level"), "invalid log level");
        let error = expect_error(load_with_token(
            jail,
            &format!("[log]\nformat = \"xml\"\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("log.format"),
            "unknown value \"xml\"; expected one of: text, json",
        );
        let config =
            load_with_token(jail, &format!("[log]\nlevel = \"DEBUG\"\n{ACCOUNT}")).unwrap();
        assert_eq!(config.log.level, "DEBUG");
    });
}

// ---------------------------------------------------------------- accounts and tokens

#[test]
fn missing_token_file_names_the_path_and_the_os_reason() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            "[[accounts]]\nname = \"main\"\ntoken_file = \"/nonexistent/token\"\n",
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_file"),
            "cannot read token file /nonexistent/token: No such file or directory",
        );
    });
}

#[test]
fn token_file_that_is_a_directory_is_refused() {
    in_jail(|jail| {
        jail.create_dir("tokens").unwrap();
        let error = expect_error(load_with_token(
            jail,
            "[[accounts]]\nname = \"main\"\ntoken_file = \"./tokens\"\n",
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_file"),
            "token file ./tokens is not a regular file",
        );
    });
}

#[test]
fn token_pasted_into_token_file_is_not_echoed() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("[[accounts]]\nname = \"main\"\ntoken_file = \"{TOKEN}\"\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_file"),
            "name not shown",
        );
    });
}

#[test]
fn empty_token_file_is_refused() {
    in_jail(|jail| {
        write_token_file(jail, "empty", "\n  \n", 0o600);
        jail.create_file(
            CONFIG_FILE,
            "[[accounts]]\nname = \"main\"\ntoken_file = \"./empty\"\n",
        )
        .unwrap();
        let error = expect_error(load(Some(Path::new(CONFIG_FILE))));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_file"),
            "token file ./empty is empty",
        );
    });
}

#[test]
fn token_file_with_two_lines_is_refused_without_echoing_it() {
    in_jail(|jail| {
        write_token_file(jail, "two", &format!("{TOKEN}\n{TOKEN}\n"), 0o600);
        jail.create_file(
            CONFIG_FILE,
            "[[accounts]]\nname = \"main\"\ntoken_file = \"./two\"\n",
        )
        .unwrap();
        let error = expect_error(load(Some(Path::new(CONFIG_FILE))));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_file"),
            "whitespace or control characters inside the token",
        );
    });
}

#[test]
fn unset_token_env_is_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            "[[accounts]]\nname = \"main\"\ntoken_env = \"MAIN_TOKEN\"\n",
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_env"),
            "environment variable MAIN_TOKEN is not set",
        );
        jail.set_env("MAIN_TOKEN", "");
        let error = expect_error(load(Some(Path::new(CONFIG_FILE))));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_env"),
            "environment variable MAIN_TOKEN is empty",
        );
    });
}

#[test]
fn token_pasted_into_token_env_is_not_echoed() {
    in_jail(|jail| {
        // Not a valid variable name at all ('-').
        let error = expect_error(load_with_token(
            jail,
            &format!("[[accounts]]\nname = \"main\"\ntoken_env = \"{TOKEN}\"\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_env"),
            "expected the name of an environment variable",
        );
        // A valid but unconventional name that is not set.
        let error = expect_error(load_with_token(
            jail,
            "[[accounts]]\nname = \"main\"\ntoken_env = \"aSECRETlooking0token\"\n",
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_env"),
            "is not set",
        );
    });
}

#[test]
fn both_token_file_and_token_env_are_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}token_env = \"MAIN_TOKEN\"\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0]"),
            "both token_file and token_env are set; set exactly one",
        );
    });
}

#[test]
fn account_without_a_token_source_is_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(jail, "[[accounts]]\nname = \"main\"\n"));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0]"),
            "no token: set token_file",
        );
    });
}

#[test]
fn inline_token_is_refused_without_echoing_it() {
    for key in REJECTED_INLINE_TOKEN_KEYS {
        in_jail(|jail| {
            let error = expect_error(load_with_token(
                jail,
                &format!("{ACCOUNT}{key} = \"{TOKEN}\"\n"),
            ));
            assert_error(
                &error,
                CONFIG_FILE,
                Some(&format!("accounts[0].{key}")),
                "a token is never accepted inline; use token_file or token_env",
            );
        });
    }
    // Even when the inline token is not a string.
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}token = 123456789\n"),
        ));
        assert!(!error.to_string().contains("123456789"), "{error}");
    });
}

#[test]
fn wrong_type_for_a_token_key_does_not_echo_the_value() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            "[[accounts]]\nname = \"main\"\ntoken_file = 987654321\n",
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_file"),
            "invalid type: expected a string (the value is not shown)",
        );
        assert!(!error.to_string().contains("987654321"), "{error}");
    });
}

#[test]
fn duplicate_account_names_are_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(jail, &format!("{ACCOUNT}\n{ACCOUNT}")));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[1].name"),
            "duplicate account name \"main\": accounts[0] has it too",
        );
    });
}

#[test]
fn bad_account_names_are_refused() {
    let too_long = "a".repeat(MAX_ACCOUNT_NAME_CHARS + 1);
    let cases = [
        ("my account", "\"my account\": ' ' is not allowed"),
        ("", "the account name is empty"),
        (too_long.as_str(), "65 characters long; at most 64"),
    ];
    in_jail(|jail| {
        for (name, reason) in cases {
            let error = expect_error(load_with_token(
                jail,
                &format!("[[accounts]]\nname = \"{name}\"\ntoken_file = \"./token\"\n"),
            ));
            assert_error(&error, CONFIG_FILE, Some("accounts[0].name"), reason);
        }
        let error = expect_error(load_with_token(
            jail,
            "[[accounts]]\ntoken_file = \"./token\"\n",
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].name"),
            "every account needs a name",
        );
        // The longest allowed name passes.
        let name = "a".repeat(MAX_ACCOUNT_NAME_CHARS);
        load_with_token(
            jail,
            &format!("[[accounts]]\nname = \"{name}\"\ntoken_file = \"./token\"\n"),
        )
        .unwrap();
    });
}

#[test]
fn bad_base_urls_are_refused() {
    let cases = [
        ("api.cometapi.com", "relative URL without a base"),
        ("ftp://api.cometapi.com", "the scheme must be http or https"),
        (
            "https://api.cometapi.com/?x=1",
            "a query (?...) or fragment (#...) is not allowed",
        ),
    ];
    in_jail(|jail| {
        for (url, reason) in cases {
            let error = expect_error(load_with_token(
                jail,
                &format!("{ACCOUNT}base_url = \"{url}\"\n"),
            ));
            assert_error(&error, CONFIG_FILE, Some("accounts[0].base_url"), reason);
        }
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}base_url = \"https://admin:{TOKEN}@api.cometapi.com\"\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].base_url"),
            "must not contain credentials",
        );
    });
}

#[test]
fn base_url_is_normalized_without_trailing_slash() {
    in_jail(|jail| {
        let config = load_with_token(
            jail,
            &format!("{ACCOUNT}base_url = \"HTTPS://New-Api.Example.com/prefix/\"\n"),
        )
        .unwrap();
        assert_eq!(
            config.accounts[0].base_url,
            "https://new-api.example.com/prefix"
        );
    });
}

#[test]
fn bad_user_id_is_refused() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}user_id = \"5678\"\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].user_id"),
            "invalid type: found string \"5678\", expected i64",
        );
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}usage = \"yes\"\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].usage"),
            "invalid type: found string \"yes\", expected a boolean",
        );
        let error = expect_error(load_with_token(
            jail,
            &format!("[poll]\nusage = 1\n\n{ACCOUNT}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("poll.usage"),
            "invalid type: found signed int `1`, expected a boolean",
        );
        let error = expect_error(load_with_token(jail, &format!("{ACCOUNT}user_id = 0\n")));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].user_id"),
            "must be a positive integer, got 0",
        );
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}requests_per_minute = 0\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].requests_per_minute"),
            "must be at least 1",
        );
    });
}

#[test]
fn no_accounts_is_an_error() {
    in_jail(|jail| {
        let error = expect_error(load_with_token(jail, "[poll]\ninterval = \"60s\"\n"));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts"),
            "no accounts: add at least one [[accounts]] table",
        );
    });
}

// ---------------------------------------------------------------- warnings

#[test]
fn token_file_readable_by_others_is_a_warning() {
    in_jail(|jail| {
        let path = write_token_file(jail, "token", TOKEN, 0o644);
        jail.create_file(
            CONFIG_FILE,
            &format!(
                "[[accounts]]\nname = \"main\"\ntoken_file = \"{}\"\n",
                path.display()
            ),
        )
        .unwrap();
        let config = load(Some(Path::new(CONFIG_FILE))).unwrap();
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        let warning = &config.warnings[0];
        assert!(
            warning.contains("readable by group or others (mode 0644)"),
            "{warning}"
        );
        assert!(warning.contains(&path.display().to_string()), "{warning}");
        assert!(
            !warning.contains(TOKEN_MARKER) || !warning.contains(TOKEN),
            "{warning}"
        );

        // Group-readable by the daemon's own group (the file's group is ours): only we can read.
        set_mode(&path, 0o640);
        let config = load(Some(Path::new(CONFIG_FILE))).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        // By a group we are not in: reported (changing the group needs root; skipped otherwise).
        if std::os::unix::fs::chown(&path, None, Some(54_321)).is_ok() {
            let config = load(Some(Path::new(CONFIG_FILE))).unwrap();
            assert!(
                config.warnings[0].contains("mode 0640"),
                "{:?}",
                config.warnings
            );
        }

        set_mode(&path, 0o600);
        let config = load(Some(Path::new(CONFIG_FILE))).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    });
}

#[test]
fn plain_http_to_a_remote_host_is_a_warning() {
    in_jail(|jail| {
        let config = load_with_token(
            jail,
            &format!("{ACCOUNT}base_url = \"http://new-api.example.com\"\n"),
        )
        .unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("plain http") && w.contains("\"main\"")),
            "{:?}",
            config.warnings
        );
        for loopback in [
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://[::1]:3000",
        ] {
            let config =
                load_with_token(jail, &format!("{ACCOUNT}base_url = \"{loopback}\"\n")).unwrap();
            assert!(
                config.warnings.is_empty(),
                "{loopback}: {:?}",
                config.warnings
            );
        }
        let config = load_with_token(
            jail,
            &format!("{ACCOUNT}base_url = \"https://api.cometapi.com/api/\"\n"),
        )
        .unwrap();
        assert!(
            config.warnings.iter().any(|w| w.contains("ends in /api")),
            "{:?}",
            config.warnings
        );
    });
}

// ---------------------------------------------------------------- rendering

#[test]
fn render_redacted_shows_token_sources_but_never_tokens() {
    in_jail(|jail| {
        jail.set_env("SECOND_TOKEN", TOKEN);
        let config = load_with_token(
            jail,
            &format!(
                "{ACCOUNT}user_id = 5678\n\n[[accounts]]\nname = \"second\"\n\
                 token_env = \"SECOND_TOKEN\"\n"
            ),
        )
        .unwrap();
        let rendered = config.render_redacted();
        assert!(!rendered.contains(TOKEN_MARKER), "{rendered}");
        assert!(rendered.contains("token_file = \"./token\""), "{rendered}");
        assert!(
            rendered.contains("token_env = \"SECOND_TOKEN\""),
            "{rendered}"
        );
        assert!(rendered.contains("interval = \"60s\""), "{rendered}");
        assert!(rendered.contains("retry_backoff = \"500ms\""), "{rendered}");
        assert!(rendered.contains("user_id = 5678"), "{rendered}");
        assert!(rendered.contains("listen = \"0.0.0.0:9877\""), "{rendered}");
        assert!(!format!("{config:?}").contains(TOKEN_MARKER));
    });
}

#[test]
fn rendered_config_loads_back_to_the_same_config() {
    in_jail(|jail| {
        jail.set_env("SECOND_TOKEN", TOKEN);
        let original = load_with_token(
            jail,
            &format!(
                "[poll]\ncron = \"0 */5 * * * *\"\nretry_backoff = \"1500ms\"\n\
                 max_retry_after = \"1h 30m\"\n[log]\nformat = \"json\"\n\
                 {ACCOUNT}user_id = 7\n\n[[accounts]]\nname = \"second\"\n\
                 base_url = \"http://127.0.0.1:3000/\"\ntoken_env = \"SECOND_TOKEN\"\n\
                 requests_per_minute = 3\n"
            ),
        )
        .unwrap();
        jail.create_file("rendered.toml", &original.render_redacted())
            .unwrap();
        let reloaded = load(Some(Path::new("rendered.toml"))).unwrap();
        assert_eq!(reloaded.server, original.server);
        assert_eq!(reloaded.poll, original.poll);
        assert_eq!(reloaded.log, original.log);
        assert_eq!(reloaded.accounts, original.accounts);
    });
}

#[test]
fn environment_only_config_renders_its_token_variable() {
    in_jail(|jail| {
        jail.set_env(ENV_ACCESS_TOKEN, TOKEN);
        let rendered = load(None).unwrap().render_redacted();
        assert!(
            rendered.contains("token_env = \"COMETAPI_ACCESS_TOKEN\""),
            "{rendered}"
        );
        assert!(rendered.contains("name = \"default\""), "{rendered}");
        assert!(!rendered.contains(TOKEN_MARKER), "{rendered}");
    });
}

#[test]
fn durations_render_in_the_config_file_form() {
    assert_eq!(format_duration(Duration::from_secs(60)), "60s");
    assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(format_duration(Duration::from_micros(1500)), "1ms 500us");
}

// ---------------------------------------------------------------- the example file

const EXAMPLE: &str = include_str!("../../config/cometapi-keymon.example.toml");
const EXAMPLE_TOKEN_FILE_LINE: &str = "token_file = \"/etc/cometapi-keymon/token\"";

#[test]
fn example_config_loads_and_documents_the_defaults() {
    in_jail(|jail| {
        let token_path = write_token_file(jail, "token", TOKEN, 0o600);
        assert!(EXAMPLE.contains(EXAMPLE_TOKEN_FILE_LINE));
        let text = EXAMPLE.replace(
            EXAMPLE_TOKEN_FILE_LINE,
            &format!("token_file = \"{}\"", token_path.display()),
        );
        jail.create_file("example.toml", &text).unwrap();
        let config = load(Some(Path::new("example.toml"))).unwrap();
        assert_eq!(config.server, ServerConfig::default());
        assert_eq!(config.poll, PollConfig::default());
        assert_eq!(config.log, LogConfig::default());
        assert_eq!(config.accounts.len(), 1);
        assert_eq!(config.accounts[0].name, "main");
        assert_eq!(config.accounts[0].base_url, DEFAULT_BASE_URL);
        assert_eq!(config.accounts[0].token.expose(), TOKEN);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    });
}

/// The keys a raw struct accepts, read from serde's own "unknown field" error.
fn accepted_keys<T: DeserializeOwned + std::fmt::Debug>() -> Vec<&'static str> {
    let error = Figment::from(Toml::string("zz_not_a_key = 1"))
        .extract::<T>()
        .unwrap_err();
    match error.kind {
        Kind::UnknownField(_, expected) => expected.to_vec(),
        other => panic!("expected an unknown-field error, got {other:?}"),
    }
}

#[test]
fn example_config_mentions_every_key() {
    let sections = accepted_keys::<RawConfig>();
    assert_eq!(
        sections,
        ["server", "poll", "log", "accounts", "policy"],
        "a section was added: list its keys here and document it in the example"
    );
    let prefixed = |prefix: &str, keys: Vec<&'static str>| -> Vec<&'static str> {
        keys.into_iter()
            .map(|key| &*Box::leak(format!("{prefix}{key}").into_boxed_str()))
            .collect()
    };
    let rule_keys: Vec<&'static str> = accepted_keys::<RawRule>()
        .into_iter()
        .filter(|key| !matches!(*key, "when" | "top_up"))
        .chain(prefixed("when.", accepted_keys::<RawConditions>()))
        .chain(prefixed("top_up.", accepted_keys::<RawTopUp>()))
        .collect();
    // The policy section is documented commented out, so the example loads without it.
    let keys_by_section = [
        ("[server]", accepted_keys::<RawServer>()),
        ("[poll]", accepted_keys::<RawPoll>()),
        ("[log]", accepted_keys::<RawLog>()),
        ("[[accounts]]", accepted_keys::<RawAccount>()),
        (
            "# [policy]",
            accepted_keys::<RawPolicy>()
                .into_iter()
                .filter(|key| *key != "rules")
                .collect(),
        ),
        ("# [[policy.rules]]", rule_keys),
    ];
    let mentioned_keys: Vec<&str> = EXAMPLE
        .lines()
        .map(|line| line.trim_start_matches('#').trim_start())
        .filter_map(|line| line.split_once(" = ").map(|(key, _)| key))
        .collect();
    for (section, keys) in keys_by_section {
        assert!(
            EXAMPLE.lines().any(|line| line == section),
            "example lacks {section}"
        );
        for key in keys {
            if REJECTED_INLINE_TOKEN_KEYS.contains(&key) {
                continue;
            }
            assert!(
                mentioned_keys.contains(&key),
                "example does not mention {section} {key}"
            );
        }
    }
}

// ---------------------------------------------------------------- [policy]

const POLICY: &str = r#"
[policy]
dry_run = false
state_dir = "state"
max_actions_per_poll = 5
protected_keys = ["main:1234"]
cooldown = "6h"

[[policy.rules]]
name = "disable-expired"
action = "disable"
when.expired = true
when.status = ["enabled", "unknown"]

[[policy.rules]]
name = "daily-restore"
action = "top_up"
accounts = ["main"]
key_ids = [1, 2]
name_matches = "^team-"
groups = ["default"]
when.remaining_fraction_below = 0.1
when.account_quota_below = 2500000
when.unused_for = "30d"
when.expires_within = "3d"
when.remaining_quota_below = 100
top_up.to = 500000
top_up.enable = true
schedule = "0 0 0 * * *"
"#;

#[test]
fn policy_loads_every_value_with_state_dir_next_to_the_file() {
    in_jail(|jail| {
        let config = load_with_token(jail, &format!("{ACCOUNT}{POLICY}")).unwrap();
        let policy = config.policy.expect("a policy");
        assert!(!policy.dry_run);
        assert_eq!(policy.state_dir, Path::new("state"));
        assert_eq!(policy.max_actions_per_poll, 5);
        assert_eq!(policy.cooldown, Duration::from_secs(6 * 3600));
        assert!(policy.is_protected("main", 1234) && !policy.is_protected("main", 1));
        let restore = &policy.rules[1];
        assert_eq!(restore.action, crate::policy::rules::ActionKind::TopUp);
        assert_eq!(
            restore.top_up.map(|top_up| (top_up.to, top_up.enable)),
            Some((500_000, true))
        );
        assert_eq!(restore.schedule.as_deref(), Some("0 0 0 * * *"));
        assert_eq!(
            restore.conditions.unused_for,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(restore.conditions.account_quota_below, Some(2_500_000));
        assert_eq!(
            policy.rules[0].conditions.status.as_ref().map(Vec::len),
            Some(2)
        );
    });
}

#[test]
fn policy_defaults_are_dry_run_and_the_system_state_dir() {
    in_jail(|jail| {
        let config = load_with_token(
            jail,
            &format!("{ACCOUNT}[policy]\n[[policy.rules]]\nname = \"r\"\naction = \"disable\"\nwhen.expired = true\n"),
        )
        .unwrap();
        let policy = config.policy.unwrap();
        assert!(policy.dry_run);
        assert_eq!(policy.state_dir, Path::new("/var/lib/cometapi-keymon"));
        assert_eq!(policy.max_actions_per_poll, 20);
        assert_eq!(policy.cooldown, Duration::from_secs(86_400));
    });
}

#[test]
fn policy_mistakes_name_the_rule_key() {
    let cases: [(&str, &str, &str); 11] = [
        ("[[policy.rules]]\nname = \"r\"\naction = \"disable\"\nwhen.account_quota_below = 0\n", "policy.rules[0].when.account_quota_below", "at least 1"),
        ("[[policy.rules]]\nname = \"r\"\naction = \"disable\"\nwhen.account_quota_below = \"5 USD\"\n", "policy.rules[0].when.account_quota_below", "invalid type"),
        ("[[policy.rules]]\nname = \"r\"\naction = \"disable\"\n", "policy.rules[0]", "needs a selector (key_ids, accounts, name_matches, groups) or a when.* condition: with neither it would disable every key of every account"),
        ("[[policy.rules]]\nname = \"r\"\naction = \"top_up\"\n", "policy.rules[0].top_up.to", "missing"),
        ("[[policy.rules]]\nname = \"r\"\naction = \"delete\"\nwhen.expired = true\n", "policy.rules[0].action", "unknown action \"delete\""),
        ("[[policy.rules]]\nname = \"r\"\naction = \"disable\"\naccounts = [\"mian\"]\nwhen.expired = true\n", "policy.rules[0].accounts[0]", "unknown account \"mian\""),
        ("[[policy.rules]]\nname = \"r\"\naction = \"disable\"\nname_matches = \"(\"\nwhen.expired = true\n", "policy.rules[0].name_matches", "invalid regular expression"),
        ("[[policy.rules]]\nname = \"r\"\naction = \"disable\"\nwhen.status = [\"on\"]\n", "policy.rules[0].when.status[0]", "unknown status \"on\""),
        ("[[policy.rules]]\nname = \"r\"\naction = \"disable\"\nwhen.expired = true\nschedule = \"0 0 * * *\"\n", "policy.rules[0].schedule", "6 fields"),
        ("protected_keys = [\"main-1234\"]\n", "policy.protected_keys[0]", "account:key_id"),
        ("max_actions_per_poll = 0\n", "policy.max_actions_per_poll", "at least 1"),
    ];
    for (policy, key, reason) in cases {
        in_jail(|jail| {
            let text = format!("{ACCOUNT}[policy]\n{policy}");
            let error = expect_error(load_with_token(jail, &text));
            assert_error(&error, CONFIG_FILE, Some(key), reason);
        });
    }
}

#[test]
fn duplicate_rule_names_and_unknown_rule_keys_are_refused() {
    in_jail(|jail| {
        let rule = "[[policy.rules]]\nname = \"r\"\naction = \"disable\"\nwhen.expired = true\n";
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}[policy]\n{rule}{rule}"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("policy.rules[1].name"),
            "duplicate rule name",
        );
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}[policy]\n{rule}when.expird = true\n"),
        ));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("policy.rules[0].when.expird"),
            "unknown key",
        );
    });
}

#[test]
fn rendered_policy_loads_back_to_the_same_policy() {
    in_jail(|jail| {
        let original = load_with_token(jail, &format!("{ACCOUNT}{POLICY}")).unwrap();
        jail.create_file("rendered.toml", &original.render_redacted())
            .unwrap();
        let reloaded = load(Some(Path::new("rendered.toml"))).unwrap();
        let (original, reloaded) = (original.policy.unwrap(), reloaded.policy.unwrap());
        assert_eq!(reloaded.rules, original.rules);
        assert_eq!(reloaded.protected_keys, original.protected_keys);
        assert_eq!(reloaded.cooldown, original.cooldown);
        assert_eq!(reloaded.dry_run, original.dry_run);
    });
}

// ---------------------------------------------------------------- the first hour (issue 11)

#[test]
fn a_base_url_ending_in_api_is_used_without_it_and_warned_about() {
    in_jail(|jail| {
        for written in [
            "https://api.cometapi.com/api",
            "https://api.cometapi.com/api/",
        ] {
            let config =
                load_with_token(jail, &format!("{ACCOUNT}base_url = \"{written}\"\n")).unwrap();
            assert_eq!(config.accounts[0].base_url, "https://api.cometapi.com");
            assert!(
                config
                    .warnings
                    .iter()
                    .any(|warning| warning.contains("ends in /api")
                        && warning.contains("using https://api.cometapi.com")),
                "{:?}",
                config.warnings
            );
        }
        // A path that only ends in "api" inside a word is left alone.
        let config = load_with_token(
            jail,
            &format!("{ACCOUNT}base_url = \"https://example.com/newapi\"\n"),
        )
        .unwrap();
        assert_eq!(config.accounts[0].base_url, "https://example.com/newapi");
    });
}

#[test]
fn an_api_key_in_the_token_file_is_a_warning_that_never_shows_it() {
    in_jail(|jail| {
        let key = "sk-TAsftk8p6XUSRxSkCKF6lqTX4pTpY3nhyB4VdaDVn32jwPQD";
        write_token_file(jail, "token", &format!("{key}\n"), 0o600);
        jail.create_file(CONFIG_FILE, ACCOUNT).unwrap();
        let config = load(Some(Path::new(CONFIG_FILE))).unwrap();
        let warning = config
            .warnings
            .iter()
            .find(|warning| warning.contains("shape of an API key"))
            .expect("a warning about the key shape");
        assert!(
            warning.contains("account \"main\"")
                && warning.contains("personal access token (Console → Personal Settings)"),
            "{warning}"
        );
        assert!(!warning.contains("TAsftk8p"), "{warning}");
        // A real access token gets no such warning.
        let config = load_with_token(jail, ACCOUNT).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    });
}

#[test]
fn a_cron_number_out_of_range_names_the_field_and_its_range() {
    in_jail(|jail| {
        for (expression, expected) in [
            (
                "0 61 * * * *",
                "the minute field \"61\" holds 61, out of range: minute is 0 to 59",
            ),
            (
                "0 0 24 * * *",
                "the hour field \"24\" holds 24, out of range: hour is 0 to 23",
            ),
            (
                "0 0 0 1-32 * *",
                "the day-of-month field \"1-32\" holds 32, out of range: day-of-month is 1 to 31",
            ),
            (
                "0 0 0 * 13 *",
                "the month field \"13\" holds 13, out of range: month is 1 to 12",
            ),
            (
                "0 */0 * * * *",
                "the minute field \"*/0\" has the step \"/0\"",
            ),
        ] {
            let error = expect_error(load_with_token(
                jail,
                &format!("[poll]\ncron = \"{expression}\"\n{ACCOUNT}"),
            ));
            assert_error(&error, CONFIG_FILE, Some("poll.cron"), expected);
        }
    });
}

#[test]
fn an_empty_token_file_without_a_slash_in_its_name_is_named() {
    in_jail(|jail| {
        write_token_file(jail, "token", "\n", 0o600);
        jail.create_file(
            CONFIG_FILE,
            "[[accounts]]\nname = \"main\"\ntoken_file = \"token\"\n",
        )
        .unwrap();
        // Named as the permission warning names it: the path as resolved against the config
        // file's directory (here the working directory, so just "token").
        let error = expect_error(load(Some(Path::new(CONFIG_FILE))));
        assert_error(
            &error,
            CONFIG_FILE,
            Some("accounts[0].token_file"),
            "token file token is empty",
        );
        assert!(!error.to_string().contains("name not shown"), "{error}");
    });
}

#[test]
fn one_account_key_can_be_overridden_from_the_environment_by_index() {
    in_jail(|jail| {
        let other = write_token_file(jail, "other-token", "tok-OTHER-0123456789abcdef\n", 0o600);
        jail.set_env("KEYMON_ACCOUNTS__1__TOKEN_FILE", other.display());
        jail.set_env("KEYMON_ACCOUNTS__1__USER_ID", "77");
        let config = load_with_token(
            jail,
            &format!("{ACCOUNT}[[accounts]]\nname = \"second\"\ntoken_file = \"./token\"\n"),
        )
        .unwrap();
        assert_eq!(config.accounts[0].token.expose(), TOKEN);
        assert_eq!(config.accounts[0].user_id, None);
        assert_eq!(config.accounts[1].name, "second");
        assert_eq!(
            config.accounts[1].token.expose(),
            "tok-OTHER-0123456789abcdef"
        );
        assert_eq!(
            config.accounts[1].token_source,
            TokenSource::File(other.clone())
        );
        assert_eq!(config.accounts[1].user_id, Some(77));

        // A bad value names the variable; an index the file does not have says so.
        jail.set_env("KEYMON_ACCOUNTS__1__USER_ID", "abc");
        let error = expect_error(load_with_token(
            jail,
            &format!("{ACCOUNT}[[accounts]]\nname = \"second\"\ntoken_file = \"./token\"\n"),
        ));
        assert_eq!(
            error.origin(),
            Some("environment variable KEYMON_ACCOUNTS__1__USER_ID"),
            "{error}"
        );
        assert_eq!(error.key(), Some("accounts[1].user_id"));
        jail.set_env("KEYMON_ACCOUNTS__1__USER_ID", "77");
        let error = expect_error(load_with_token(jail, ACCOUNT));
        assert_eq!(
            error.origin(),
            Some("environment variable KEYMON_ACCOUNTS__1__TOKEN_FILE"),
            "{error}"
        );
        assert!(
            error
                .reason()
                .contains("has 1 [[accounts]] table(s), so there is no accounts[1]"),
            "{error}"
        );
        jail.clear_env();
        jail.set_env("KEYMON_ACCOUNTS__MAIN__USER_ID", "7");
        let error = expect_error(load_with_token(jail, ACCOUNT));
        assert!(
            error
                .reason()
                .contains("e.g. KEYMON_ACCOUNTS__0__TOKEN_FILE"),
            "{error}"
        );
    });
}

#[test]
fn an_enable_or_disable_rule_on_explicit_keys_needs_no_condition() {
    in_jail(|jail| {
        for action in ["enable", "disable"] {
            let text = format!(
                "{ACCOUNT}[policy]\n[[policy.rules]]\nname = \"r\"\naction = \"{action}\"\n\
                 key_ids = [1234, 5678]\n"
            );
            let config = load_with_token(jail, &text).unwrap();
            let rule = &config.policy.as_ref().unwrap().rules[0];
            assert_eq!(rule.selector.key_ids, Some(vec![1234, 5678]));
            assert!(rule.conditions.is_empty());
            assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        }
        // A broad selector without a condition is accepted, with a warning.
        let text = format!(
            "{ACCOUNT}[policy]\n[[policy.rules]]\nname = \"r\"\naction = \"disable\"\n\
             groups = [\"trial\"]\n"
        );
        let config = load_with_token(jail, &text).unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|warning| warning.contains("no when.* condition")
                    && warning.contains("disable every key its selector matches")),
            "{:?}",
            config.warnings
        );
    });
}
