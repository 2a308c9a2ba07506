//! `cometapi-keymon keys`: the management API of one account from the shell — `list`, `get`,
//! `create`, `update`, `disable`, `enable`, `delete` — as a table for people or JSON for scripts.
//!
//! Every write starts from a fresh read and loses nothing: `update` applies only the fields named
//! on the command line to that read (`KeyEdit`) and sends the full record, `disable`/`enable`
//! use `status_only`, and both read the key back afterwards and fail (exit 1) when the server
//! holds anything other than what was written. `create` learns the new key's id, which the
//! server does not return, from the newest page of the listing read before and after. No key
//! value is ever printed: the client never decodes it. Exit status: 0 done (or nothing to do),
//! 1 the server failed or refused (or would refuse, found before writing), 2 bad usage or
//! configuration.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args, Subcommand};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::api::scan::PAGE_SIZE;
use crate::api::wire::ListData;
use crate::api::{
    editable_changes, scan_account, ApiClient, ApiError, ClientBuildError, ClientSettings,
    FieldChange, IgnoreRequests, KeyEdit, KeyRecord,
};
use crate::cli::{init_one_shot, load_config, runtime, OutputFormat};
use crate::config::{AccountConfig, Config, ConfigSource};
use crate::poller::unix_now;
use crate::report;
use crate::snapshot::{KeyState, KeyStatus};

/// The server's limit on a key name, in bytes (new-api ≥ 2025-12-04).
pub const MAX_NAME_BYTES: usize = 50;

/// Status codes the commands write.
const STATUS_ENABLED: i64 = 1;
const STATUS_DISABLED: i64 = 2;

#[derive(Debug, Args)]
pub struct KeysArguments {
    /// TOML configuration file; without it, COMETAPI_ACCESS_TOKEN defines one account.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "KEYMON_CONFIG",
        global = true
    )]
    config: Option<PathBuf>,
    /// The account to act on; needed when the configuration has more than one.
    #[arg(long, short = 'a', value_name = "NAME", global = true)]
    account: Option<String>,
    /// A table for people or JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, global = true)]
    output: OutputFormat,
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Every key of the account (ids, names, quotas; never the key values).
    List,
    /// One key, with its restrictions.
    Get {
        /// The key's id (from `keys list`).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// Create a key and print its id (needs --name and --remaining-quota or --unlimited).
    Create {
        #[command(flatten)]
        fields: FieldArguments,
    },
    /// Change only the named fields of a key (fresh read, full write, read back).
    Update {
        /// The key's id (from `keys list`).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
        #[command(flatten)]
        fields: FieldArguments,
    },
    /// Disable a key (status only; nothing else changes).
    Disable {
        /// The key's id (from `keys list`).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// Enable a key (status only); an expired or exhausted key needs `update` first.
    Enable {
        /// The key's id (from `keys list`).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// Delete a key for good (needs --yes).
    Delete {
        /// The key's id (from `keys list`).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
        /// Confirm: a deleted key cannot be restored.
        #[arg(long)]
        yes: bool,
    },
}

/// The editable fields as flags; shared by `create` and `update`.
#[derive(Debug, Clone, Default, Args)]
struct FieldArguments {
    /// Display name, at most 50 bytes.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Remaining quota in quota units (500000 = 1 USD on a default server).
    #[arg(long, value_name = "QUOTA", allow_negative_numbers = true)]
    remaining_quota: Option<i64>,
    /// No quota limit.
    #[arg(long, conflicts_with = "limited")]
    unlimited: bool,
    /// Limited by --remaining-quota.
    #[arg(long)]
    limited: bool,
    /// RFC 3339 time or date (UTC), unix seconds, a duration from now (30d, 12h) or `never`.
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
    expires: Option<Expiry>,
    /// Group ("" for none).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Allowed client IPs or CIDR ranges, separated by commas.
    #[arg(long, value_name = "LIST", conflicts_with = "clear_allow_ips")]
    allow_ips: Option<String>,
    /// Allow every client IP.
    #[arg(long)]
    clear_allow_ips: bool,
    /// Allowed model ids, separated by commas (turns the model limit on).
    #[arg(long, value_name = "LIST", conflicts_with = "clear_model_limits")]
    model_limits: Option<String>,
    /// Allow every model (turns the model limit off).
    #[arg(long)]
    clear_model_limits: bool,
    /// Cross-group retry (only meaningful in the group `auto`).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set)]
    cross_group_retry: Option<bool>,
}

/// A `--expires` value, resolved against the clock only when the edit is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// Unix seconds.
    At(i64),
    /// This long from now.
    In(Duration),
}

impl Expiry {
    /// Unix seconds, or -1 for never.
    pub fn resolve(self, now: i64) -> i64 {
        match self {
            Expiry::Never => -1,
            Expiry::At(seconds) => seconds,
            Expiry::In(duration) => {
                now.saturating_add(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
            }
        }
    }
}

/// Parses `never` (or -1), unix seconds, an RFC 3339 time, a date (midnight UTC) or a
/// duration from now (`30d`, `12h`, `1h 30m`).
pub fn parse_expiry(text: &str) -> Result<Expiry, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") || text == "-1" {
        return Ok(Expiry::Never);
    }
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(seconds) if seconds > 0 => Ok(Expiry::At(seconds)),
            _ => Err(format!(
                "{text:?} is not a usable unix time (use seconds after 1970, or never)"
            )),
        };
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Expiry::At(time.timestamp()));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(Expiry::At(midnight.and_utc().timestamp()));
    }
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(Expiry::In(duration)),
        _ => Err(format!(
            "{text:?} is not an expiry: use an RFC 3339 time (2026-12-31T23:59:59Z), a date \
             (2026-12-31), unix seconds, a duration from now (30d, 12h) or never"
        )),
    }
}

/// Why a `keys` command failed; `exit_code` maps it to the contract's exit status.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Bad flags or configuration, found before anything was sent (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    /// A request failed or the server answered `success:false` (exit 1).
    #[error("{}", describe_api_error(account, *key_id, source))]
    Api {
        account: String,
        key_id: Option<i64>,
        source: ApiError,
    },
    /// The server would refuse the write, or holds something else after it (exit 1).
    #[error("account {account}, key {key_id}: {reason}")]
    Refused {
        account: String,
        key_id: i64,
        reason: String,
    },
    /// A key was created but its id could not be determined (exit 1).
    #[error("account {account}: {reason}")]
    CreatedButUnidentified { account: String, reason: String },
}

fn key_suffix(key_id: Option<i64>) -> String {
    key_id.map_or_else(String::new, |id| format!(", key {id}"))
}

/// `account main, key 7: <error>`, except for errors that already say it ("account main has no
/// key 7").
fn describe_api_error(account: &str, key_id: Option<i64>, source: &ApiError) -> String {
    match source {
        ApiError::KeyNotFound { .. } => source.to_string(),
        _ => format!("account {account}{}: {source}", key_suffix(key_id)),
    }
}

impl KeysError {
    pub fn exit_code(&self) -> u8 {
        match self {
            KeysError::Usage(_) | KeysError::Client(_) => 2,
            KeysError::Api { .. }
            | KeysError::Refused { .. }
            | KeysError::CreatedButUnidentified { .. } => 1,
        }
    }
}

/// Runs `keys ...` and returns the process exit code.
pub fn run(arguments: KeysArguments) -> ExitCode {
    // Flags first: a mistake on the command line is reported before the configuration is read.
    let now = unix_now();
    let request = match Request::from_action(&arguments.action, now) {
        Ok(request) => request,
        Err(error) => {
            eprintln!("cometapi-keymon: {error}");
            return ExitCode::from(error.exit_code());
        }
    };
    let config = match load_config(arguments.config.clone()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_one_shot(&config);
    let result = select_account(&config, arguments.account.as_deref()).and_then(|account| {
        let context = Context::new(account, &config)?;
        runtime().block_on(request.execute(&context, arguments.output, now))
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cometapi-keymon: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// The account named by `--account`, or the only one.
fn select_account<'c>(
    config: &'c Config,
    wanted: Option<&str>,
) -> Result<&'c AccountConfig, KeysError> {
    let names: Vec<&str> = config
        .accounts
        .iter()
        .map(|account| account.name.as_str())
        .collect();
    let source = match &config.source {
        ConfigSource::File(path) => path.display().to_string(),
        ConfigSource::Environment => "the environment".into(),
    };
    match wanted {
        Some(wanted) => config
            .accounts
            .iter()
            .find(|account| account.name == wanted)
            .ok_or_else(|| {
                KeysError::Usage(format!(
                    "no account {wanted:?} in {source}; the accounts are: {}",
                    names.join(", ")
                ))
            }),
        None if config.accounts.len() == 1 => Ok(&config.accounts[0]),
        None => Err(KeysError::Usage(format!(
            "{source} has {} accounts ({}): choose one with --account NAME",
            names.len(),
            names.join(", ")
        ))),
    }
}

/// The clients of one account: `reader` retries transient failures as `[poll]` says; `writer`
/// never retries, because a create or delete whose answer was lost may have happened.
struct Context {
    account: String,
    reader: ApiClient,
    writer: ApiClient,
}

impl Context {
    fn new(account: &AccountConfig, config: &Config) -> Result<Context, KeysError> {
        let settings = ClientSettings::from_config(account, &config.poll);
        let cancel = CancellationToken::new();
        let reader = ApiClient::new(settings, Arc::new(IgnoreRequests), cancel)?;
        let writer = reader.without_retries();
        Ok(Context {
            account: account.name.clone(),
            reader,
            writer,
        })
    }

    fn api_error(&self, key_id: Option<i64>) -> impl FnOnce(ApiError) -> KeysError + '_ {
        move |source| KeysError::Api {
            account: self.account.clone(),
            key_id,
            source,
        }
    }

    fn refused(&self, key_id: i64, reason: String) -> KeysError {
        KeysError::Refused {
            account: self.account.clone(),
            key_id,
            reason,
        }
    }

    async fn fresh(&self, id: i64) -> Result<KeyRecord, KeysError> {
        self.reader
            .get_key(id)
            .await
            .map_err(self.api_error(Some(id)))
    }
}

/// A validated command: everything checkable without the server has been checked.
enum Request {
    List,
    Get(i64),
    Create(KeyEdit),
    Update(i64, KeyEdit),
    SetStatus(i64, i64),
    Delete(i64),
}

impl Request {
    fn from_action(action: &KeysAction, now: i64) -> Result<Request, KeysError> {
        Ok(match action {
            KeysAction::List => Request::List,
            KeysAction::Get { id } => Request::Get(*id),
            KeysAction::Create { fields } => {
                if fields.name.is_none() {
                    return Err(KeysError::Usage(
                        "keys create needs --name (names need not be unique, but a unique one \
                         is easier to find)"
                            .into(),
                    ));
                }
                if fields.remaining_quota.is_none() && !fields.unlimited {
                    return Err(KeysError::Usage(
                        "keys create needs --remaining-quota QUOTA or --unlimited (a limited key \
                         without quota cannot be used)"
                            .into(),
                    ));
                }
                Request::Create(fields.to_edit(now)?)
            }
            KeysAction::Update { id, fields } => {
                let edit = fields.to_edit(now)?;
                if edit.is_empty() {
                    return Err(KeysError::Usage(format!(
                        "keys update {id}: name at least one field to change (--name, \
                         --remaining-quota, --unlimited, --limited, --expires, --group, \
                         --allow-ips, --clear-allow-ips, --model-limits, --clear-model-limits, \
                         --cross-group-retry)"
                    )));
                }
                Request::Update(*id, edit)
            }
            KeysAction::Disable { id } => Request::SetStatus(*id, STATUS_DISABLED),
            KeysAction::Enable { id } => Request::SetStatus(*id, STATUS_ENABLED),
            KeysAction::Delete { id, yes } => {
                if !yes {
                    return Err(KeysError::Usage(format!(
                        "deleting key {id} cannot be undone: add --yes to confirm"
                    )));
                }
                Request::Delete(*id)
            }
        })
    }

    async fn execute(
        self,
        context: &Context,
        output: OutputFormat,
        now: i64,
    ) -> Result<String, KeysError> {
        match self {
            Request::List => list(context, output, now).await,
            Request::Get(id) => {
                let record = context.fresh(id).await?;
                Ok(match output {
                    OutputFormat::Table => record_table(&record, now),
                    OutputFormat::Json => json_text(&record_json(&context.account, &record, now)),
                })
            }
            Request::Create(edit) => create(context, &edit, output, now).await,
            Request::Update(id, edit) => update(context, id, &edit, output, now).await,
            Request::SetStatus(id, status) => set_status(context, id, status, output, now).await,
            Request::Delete(id) => delete(context, id, output).await,
        }
    }
}

impl FieldArguments {
    /// The edit these flags ask for; rejects values no server would accept.
    fn to_edit(&self, now: i64) -> Result<KeyEdit, KeysError> {
        let mut edit = KeyEdit::default();
        if let Some(name) = &self.name {
            if name.len() > MAX_NAME_BYTES {
                return Err(KeysError::Usage(format!(
                    "--name is {} bytes long; the server allows at most {MAX_NAME_BYTES} bytes",
                    name.len()
                )));
            }
            edit.name = Some(name.clone());
        }
        if let Some(quota) = self.remaining_quota {
            if quota < 0 && self.limited {
                return Err(KeysError::Usage(
                    "--remaining-quota must be 0 or more for a limited key".into(),
                ));
            }
            edit.remain_quota = Some(quota);
        }
        if self.unlimited {
            edit.unlimited_quota = Some(true);
        }
        if self.limited {
            edit.unlimited_quota = Some(false);
        }
        edit.expired_time = self.expires.map(|expiry| expiry.resolve(now));
        edit.group = self.group.clone();
        if let Some(list) = &self.allow_ips {
            edit.allow_ips = Some(Some(parse_allow_ips(list)?));
        }
        if self.clear_allow_ips {
            edit.allow_ips = Some(Some(String::new()));
        }
        if let Some(list) = &self.model_limits {
            edit.model_limits = Some(parse_model_limits(list)?);
            edit.model_limits_enabled = Some(true);
        }
        if self.clear_model_limits {
            edit.model_limits = Some(String::new());
            edit.model_limits_enabled = Some(false);
        }
        edit.cross_group_retry = self.cross_group_retry;
        Ok(edit)
    }
}

fn list_entries(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', '\n'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

/// `--allow-ips`: addresses or CIDR ranges, stored newline-separated as the server expects.
pub fn parse_allow_ips(list: &str) -> Result<String, KeysError> {
    let mut entries = Vec::new();
    for entry in list_entries(list) {
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let valid = address.parse::<IpAddr>().is_ok_and(|address| {
            prefix.is_none_or(|prefix| {
                let bits = if address.is_ipv4() { 32 } else { 128 };
                prefix.parse::<u8>().is_ok_and(|prefix| prefix <= bits)
            })
        });
        if !valid {
            return Err(KeysError::Usage(format!(
                "--allow-ips: {entry:?} is not an IP address or CIDR range"
            )));
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(KeysError::Usage(
            "--allow-ips is empty; use --clear-allow-ips to allow every IP".into(),
        ));
    }
    Ok(entries.join("\n"))
}

/// `--model-limits`: model ids, stored comma-separated.
fn parse_model_limits(list: &str) -> Result<String, KeysError> {
    let entries: Vec<&str> = list_entries(list).collect();
    if entries.is_empty() {
        return Err(KeysError::Usage(
            "--model-limits is empty; use --clear-model-limits to allow every model".into(),
        ));
    }
    Ok(entries.join(","))
}

/// What the server would refuse about writing `record`, found before writing it.
fn check_writable(context: &Context, record: &KeyRecord, edit: &KeyEdit) -> Result<(), KeysError> {
    if !record.unlimited_quota && record.remain_quota < 0 {
        if edit.remain_quota.is_some() {
            return Err(KeysError::Usage(
                "--remaining-quota must be 0 or more for a limited key".into(),
            ));
        }
        let how = if edit.unlimited_quota == Some(false) {
            "the key was unlimited and its remain_quota drifted negative"
        } else {
            "the key is limited and overdrawn"
        };
        return Err(context.refused(
            record.id,
            format!(
                "{how} (remain_quota {}), and the server refuses a write carrying a negative \
                 quota: add --remaining-quota QUOTA (0 or more) or --unlimited",
                record.remain_quota
            ),
        ));
    }
    if edit.cross_group_retry == Some(true) && record.group != "auto" {
        return Err(context.refused(
            record.id,
            format!(
                "cross-group retry applies only to the group \"auto\" and the server stores false \
                 for the group {:?}: add --group auto",
                record.group
            ),
        ));
    }
    Ok(())
}

/// Differences between what was written and what the server holds afterwards. A lower
/// `remain_quota` is not one when `used_quota` grew at least as much: the key was used
/// meanwhile (the server debits both in one statement).
fn unexplained_differences(
    written: &KeyRecord,
    fresh: &KeyRecord,
    read_back: &KeyRecord,
) -> Vec<FieldChange> {
    let consumed = written.remain_quota - read_back.remain_quota;
    let used_meanwhile = read_back.used_quota - fresh.used_quota;
    editable_changes(written, read_back)
        .into_iter()
        .filter(|change| {
            !(change.field == "remain_quota" && consumed > 0 && used_meanwhile >= consumed)
        })
        .collect()
}

/// Reads the key back and compares it with what was written.
async fn verify(
    context: &Context,
    written: &KeyRecord,
    fresh: &KeyRecord,
) -> Result<KeyRecord, KeysError> {
    let read_back = context.fresh(written.id).await?;
    let differences = unexplained_differences(written, fresh, &read_back);
    if differences.is_empty() {
        return Ok(read_back);
    }
    Err(context.refused(
        written.id,
        format!(
            "the server accepted the write but holds something else afterwards: {}",
            describe_changes(&differences, "written", "read back")
        ),
    ))
}

fn describe_changes(changes: &[FieldChange], before: &str, after: &str) -> String {
    changes
        .iter()
        .map(|change| {
            format!(
                "{} {before} {} / {after} {}",
                change.field, change.before, change.after
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn list(context: &Context, output: OutputFormat, now: i64) -> Result<String, KeysError> {
    let listing = scan_account(&context.reader)
        .await
        .map_err(context.api_error(None))?;
    Ok(match output {
        OutputFormat::Table => {
            list_table(&context.account, &listing.keys, listing.quota_per_unit, now)
        }
        OutputFormat::Json => json_text(&Value::Array(
            listing
                .keys
                .iter()
                .map(|key| key_json(&context.account, key, now))
                .collect(),
        )),
    })
}

async fn update(
    context: &Context,
    id: i64,
    edit: &KeyEdit,
    output: OutputFormat,
    now: i64,
) -> Result<String, KeysError> {
    let fresh = context.fresh(id).await?;
    let written = edit.apply(&fresh);
    let changes = editable_changes(&fresh, &written);
    if changes.is_empty() {
        return Ok(match output {
            OutputFormat::Table => format!(
                "key {id} in account {} already has these values; nothing written\n",
                context.account
            ),
            OutputFormat::Json => change_json(&context.account, &fresh, false, &changes, now),
        });
    }
    check_writable(context, &written, edit)?;
    context
        .reader
        .update_key(&written)
        .await
        .map_err(context.api_error(Some(id)))?;
    let read_back = verify(context, &written, &fresh).await?;
    Ok(match output {
        OutputFormat::Table => {
            let mut text = format!("updated key {id} in account {}:\n", context.account);
            for change in &changes {
                let _ = writeln!(
                    text,
                    "  {}: {} → {}",
                    change.field, change.before, change.after
                );
            }
            text
        }
        OutputFormat::Json => change_json(&context.account, &read_back, true, &changes, now),
    })
}

async fn set_status(
    context: &Context,
    id: i64,
    status: i64,
    output: OutputFormat,
    now: i64,
) -> Result<String, KeysError> {
    let fresh = context.fresh(id).await?;
    let wanted = KeyStatus::from_code(status).label();
    if fresh.status == status {
        return Ok(match output {
            OutputFormat::Table => format!(
                "key {id} in account {} is already {wanted}; nothing written\n",
                context.account
            ),
            OutputFormat::Json => change_json(&context.account, &fresh, false, &[], now),
        });
    }
    if status == STATUS_ENABLED {
        check_enable_guard(context, &fresh, now)?;
    }
    let mut written = fresh.clone();
    written.status = status;
    context
        .reader
        .update_key_status(&fresh, status)
        .await
        .map_err(context.api_error(Some(id)))?;
    let read_back = verify(context, &written, &fresh).await?;
    let changes = editable_changes(&fresh, &written);
    if status == STATUS_ENABLED {
        let state = KeyState::from(read_back.clone());
        if !state.is_usable_at(now) {
            eprintln!(
                "warning: key {id} is enabled but still not usable: it is past its expiry or \
                 has no quota left (see `keys get {id}`)"
            );
        }
    }
    Ok(match output {
        OutputFormat::Table => format!(
            "key {id} in account {}: {} → {wanted}\n",
            context.account,
            KeyStatus::from_code(fresh.status).label()
        ),
        OutputFormat::Json => change_json(&context.account, &read_back, true, &changes, now),
    })
}

/// The server refuses to enable a key it has marked expired (3) whose expiry is past, or
/// exhausted (4) without quota; say what to fix instead of sending a write it refuses.
fn check_enable_guard(context: &Context, fresh: &KeyRecord, now: i64) -> Result<(), KeysError> {
    let id = fresh.id;
    if fresh.status == 3 && fresh.expired_time != -1 && fresh.expired_time <= now {
        return Err(context.refused(
            id,
            format!(
                "the server marked the key expired and its expiry ({}) has passed, so it refuses \
                 to enable it: move the expiry first (keys update {id} --expires 30d, or \
                 --expires never), then enable it",
                report::expiry_text(fresh.expired_time, now)
            ),
        ));
    }
    if fresh.status == 4 && !fresh.unlimited_quota && fresh.remain_quota <= 0 {
        return Err(context.refused(
            id,
            format!(
                "the server marked the key exhausted and it has no quota left (remain_quota {}), \
                 so it refuses to enable it: add quota first (keys update {id} \
                 --remaining-quota QUOTA, or --unlimited), then enable it",
                fresh.remain_quota
            ),
        ));
    }
    Ok(())
}

async fn delete(context: &Context, id: i64, output: OutputFormat) -> Result<String, KeysError> {
    let fresh = context.fresh(id).await?;
    context
        .writer
        .delete_key(id)
        .await
        .map_err(context.api_error(Some(id)))?;
    Ok(match output {
        OutputFormat::Table => format!(
            "deleted key {id} ({}) from account {}\n",
            report::table_name(&fresh.name),
            context.account
        ),
        OutputFormat::Json => json_text(&json!({
            "account": context.account,
            "id": id,
            "name": fresh.name,
            "deleted": true,
        })),
    })
}

async fn create(
    context: &Context,
    edit: &KeyEdit,
    output: OutputFormat,
    now: i64,
) -> Result<String, KeysError> {
    // Zero values the server would otherwise default differently: `expired_time` 0 means
    // "never" on create but "expired" everywhere else, so never is sent as -1 explicitly.
    let base = KeyRecord {
        status: STATUS_ENABLED,
        expired_time: -1,
        allow_ips: Some(String::new()),
        ..KeyRecord::default()
    };
    let intended = edit.apply(&base);
    if !intended.unlimited_quota && intended.remain_quota < 0 {
        return Err(KeysError::Usage(
            "--remaining-quota must be 0 or more for a limited key".into(),
        ));
    }
    if intended.cross_group_retry && intended.group != "auto" {
        return Err(KeysError::Usage(
            "--cross-group-retry true applies only with --group auto".into(),
        ));
    }
    let before = newest_keys(context).await?;
    let newest_id_before = before.iter().map(|record| record.id).max().unwrap_or(0);
    context
        .writer
        .create_key(&intended)
        .await
        .map_err(context.api_error(None))?;
    let after = newest_keys(context).await?;
    let created = pick_created(newest_id_before, &intended, &after).map_err(|reason| {
        KeysError::CreatedButUnidentified {
            account: context.account.clone(),
            reason,
        }
    })?;
    Ok(match output {
        OutputFormat::Table => format!(
            "created key {} ({}) in account {}\n",
            created.id,
            report::table_name(&created.name),
            context.account
        ),
        OutputFormat::Json => json_text(&record_json(&context.account, &created, now)),
    })
}

/// The first page of the listing, newest first. Servers older than 2025-06 answer with a bare
/// array and count pages from 0, so their first page is `p=0`.
async fn newest_keys(context: &Context) -> Result<Vec<KeyRecord>, KeysError> {
    let client = &context.reader;
    let items = match client
        .list_page(1, PAGE_SIZE)
        .await
        .map_err(context.api_error(None))?
    {
        ListData::Page(page) => page.items,
        ListData::Bare(_) => match client
            .list_page(0, PAGE_SIZE)
            .await
            .map_err(context.api_error(None))?
        {
            ListData::Page(page) => page.items,
            ListData::Bare(items) => items,
        },
    };
    let own_user = client.user_id();
    Ok(items
        .into_iter()
        .filter(|record| {
            own_user.is_none() || record.user_id.is_none() || record.user_id == own_user
        })
        .collect())
}

/// The key `create` made: newer than every key seen before, with the requested name and
/// fields. The server may store `cross_group_retry` as false and adds `auto_groups`.
pub fn pick_created(
    newest_id_before: i64,
    intended: &KeyRecord,
    newest_after: &[KeyRecord],
) -> Result<KeyRecord, String> {
    let ignored = ["status", "cross_group_retry", "auto_groups"];
    let mut candidates: Vec<&KeyRecord> = newest_after
        .iter()
        .filter(|record| record.id > newest_id_before)
        .filter(|record| {
            editable_changes(intended, record)
                .iter()
                .all(|change| ignored.contains(&change.field))
        })
        .collect();
    candidates.sort_by_key(|record| record.id);
    match candidates.as_slice() {
        [created] => Ok((*created).clone()),
        [] => Err(format!(
            "the key {:?} was created, but no new key with its name and fields is on the first \
             page of the listing (more than {PAGE_SIZE} keys created at once?); find it with \
             `keys list`",
            intended.name
        )),
        several => Err(format!(
            "the key {:?} was created, but {} new keys match it (ids {}): another client \
             created one with the same name and fields at the same time; check with `keys get`",
            intended.name,
            several.len(),
            several
                .iter()
                .map(|record| record.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

// ---- output ----

fn json_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    text.push('\n');
    text
}

/// One key of `list` (and the common part of every key object): raw server values, so a
/// script can pass them back; `expired_time` -1 is never, unlimited keys' `remain_quota` is
/// meaningless.
fn key_json(account: &str, key: &KeyState, now: i64) -> Value {
    json!({
        "account": account,
        "id": key.id,
        "name": key.name,
        "group": key.group,
        "status": key.status().label(),
        "status_code": key.status_code,
        "usable": key.is_usable_at(now),
        "unlimited_quota": key.unlimited_quota,
        "remain_quota": key.remain_quota,
        "used_quota": key.used_quota,
        "expired_time": key.expired_time,
        "created_time": key.created_time,
        "accessed_time": key.accessed_time,
        "ip_restricted": key.ip_restricted,
        "model_restricted": key.model_restricted,
    })
}

/// One key of `get`, `create`, `update`: the list fields plus the restrictions themselves.
fn record_json(account: &str, record: &KeyRecord, now: i64) -> Value {
    let mut value = key_json(account, &KeyState::from(record.clone()), now);
    value["model_limits_enabled"] = record.model_limits_enabled.into();
    value["model_limits"] = record.model_limits.clone().into();
    value["allow_ips"] = record.allow_ips.clone().unwrap_or_default().into();
    value["cross_group_retry"] = record.cross_group_retry.into();
    if let Some(auto_groups) = &record.auto_groups {
        value["auto_groups"] = auto_groups.clone().into();
    }
    value
}

fn change_json(
    account: &str,
    record: &KeyRecord,
    changed: bool,
    changes: &[FieldChange],
    now: i64,
) -> String {
    json_text(&json!({
        "account": account,
        "id": record.id,
        "changed": changed,
        "changes": changes
            .iter()
            .map(|change| json!({"field": change.field, "before": change.before, "after": change.after}))
            .collect::<Vec<_>>(),
        "key": record_json(account, record, now),
    }))
}

fn restrictions(key: &KeyState) -> &'static str {
    match (key.ip_restricted, key.model_restricted) {
        (true, true) => "ips,models",
        (true, false) => "ips",
        (false, true) => "models",
        (false, false) => "-",
    }
}

fn list_table(account: &str, keys: &[KeyState], quota_per_unit: f64, now: i64) -> String {
    let header = [
        "ID",
        "NAME",
        "STATUS",
        "USABLE",
        "REMAINING",
        "USED",
        "EXPIRES",
        "GROUP",
        "RESTRICTED",
    ]
    .map(String::from);
    let mut rows = vec![header];
    for key in keys {
        rows.push([
            key.id.to_string(),
            report::table_name(&key.name),
            key.status().label().to_owned(),
            if key.is_usable_at(now) { "yes" } else { "no" }.to_owned(),
            if key.unlimited_quota {
                "unlimited".to_owned()
            } else {
                report::quota_text(key.remain_quota, quota_per_unit)
            },
            report::quota_text(key.used_quota, quota_per_unit),
            report::expiry_text(key.expired_time, now),
            if key.group.is_empty() {
                "-".to_owned()
            } else {
                report::table_name(&key.group)
            },
            restrictions(key).to_owned(),
        ]);
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    let mut out = report::render_table(&rows, &[0, 4, 5]);
    let usable = keys.iter().filter(|key| key.is_usable_at(now)).count();
    let _ = writeln!(
        out,
        "{account}: {} keys, {usable} usable (1 USD = {quota_per_unit} quota units)",
        keys.len()
    );
    out
}

/// `get`: one field per line, names escaped but not cut.
fn record_table(record: &KeyRecord, now: i64) -> String {
    let state = KeyState::from(record.clone());
    let date = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0).map_or_else(
            || seconds.to_string(),
            |time| time.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
    };
    let list_or = |list: &str, separator: &str, none: &str| {
        let entries: Vec<&str> = list_entries(list).collect();
        if entries.is_empty() {
            none.to_owned()
        } else {
            escape_control(&entries.join(separator))
        }
    };
    let model_limits = match (record.model_limits_enabled, record.model_limits.is_empty()) {
        (true, _) => list_or(&record.model_limits, ", ", "every model"),
        (false, true) => "every model".into(),
        (false, false) => format!(
            "every model (limit off; listed: {})",
            list_or(&record.model_limits, ", ", "")
        ),
    };
    let remaining = if record.unlimited_quota {
        format!("unlimited (remain_quota {})", record.remain_quota)
    } else {
        record.remain_quota.to_string()
    };
    let rows = [
        ("id", record.id.to_string()),
        ("name", escape_control(&record.name)),
        (
            "status",
            format!("{} ({})", state.status().label(), record.status),
        ),
        (
            "usable",
            if state.is_usable_at(now) { "yes" } else { "no" }.into(),
        ),
        ("remaining quota", remaining),
        ("used quota", record.used_quota.to_string()),
        ("expires", report::expiry_text(record.expired_time, now)),
        ("created", date(record.created_time)),
        (
            "last used",
            if record.accessed_time == 0 {
                "never".into()
            } else {
                date(record.accessed_time)
            },
        ),
        (
            "group",
            if record.group.is_empty() {
                "-".into()
            } else {
                escape_control(&record.group)
            },
        ),
        ("models", model_limits),
        (
            "client IPs",
            list_or(record.allow_ips.as_deref().unwrap_or(""), ", ", "any"),
        ),
        (
            "cross-group retry",
            if record.cross_group_retry {
                "yes"
            } else {
                "no"
            }
            .into(),
        ),
    ];
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

fn escape_control(text: &str) -> String {
    text.chars()
        .flat_map(|character| -> Vec<char> {
            if character.is_control() {
                character.escape_default().collect()
            } else {
                vec![character]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn expiry_accepts_never_unix_seconds_rfc3339_dates_and_durations() {
        assert_eq!(parse_expiry("never"), Ok(Expiry::Never));
        assert_eq!(parse_expiry("NEVER"), Ok(Expiry::Never));
        assert_eq!(parse_expiry("-1"), Ok(Expiry::Never));
        assert_eq!(parse_expiry("1798000000"), Ok(Expiry::At(1_798_000_000)));
        assert_eq!(
            parse_expiry("2026-12-31T23:59:59Z"),
            Ok(Expiry::At(1_798_761_599))
        );
        assert_eq!(
            parse_expiry("2027-01-01T01:00:00+01:00"),
            Ok(Expiry::At(1_798_761_600))
        );
        assert_eq!(parse_expiry("2027-01-01"), Ok(Expiry::At(1_798_761_600)));
        assert_eq!(
            parse_expiry("30d"),
            Ok(Expiry::In(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(parse_expiry("30d").unwrap().resolve(NOW), NOW + 30 * 86_400);
        assert_eq!(parse_expiry("1h 30m").unwrap().resolve(NOW), NOW + 5_400);
        assert_eq!(Expiry::Never.resolve(NOW), -1);
    }

    #[test]
    fn expiry_rejects_what_would_expire_the_key_by_accident() {
        for text in ["0", "", "0s", "tomorrow", "-5", "2026-13-01", "12"] {
            let result = parse_expiry(text);
            if text == "12" {
                // Twelve seconds after 1970 is a unix time, if a silly one.
                assert_eq!(result, Ok(Expiry::At(12)));
            } else {
                assert!(result.is_err(), "{text:?} was accepted: {result:?}");
            }
        }
        assert!(parse_expiry("soon").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn allow_ips_are_checked_and_stored_newline_separated() {
        assert_eq!(
            parse_allow_ips(" 10.0.0.0/8, 2001:db8::1 ,198.51.100.10").unwrap(),
            "10.0.0.0/8\n2001:db8::1\n198.51.100.10"
        );
        assert_eq!(parse_allow_ips("2001:db8::/32").unwrap(), "2001:db8::/32");
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.1/", " , "] {
            assert!(parse_allow_ips(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn flags_become_an_edit_of_exactly_those_fields() {
        let fields = FieldArguments {
            model_limits: Some("gpt-4.1, claude-sonnet-4".into()),
            clear_allow_ips: true,
            expires: Some(Expiry::In(Duration::from_secs(60))),
            ..FieldArguments::default()
        };
        let edit = fields.to_edit(NOW).unwrap();
        assert_eq!(
            edit,
            KeyEdit {
                model_limits: Some("gpt-4.1,claude-sonnet-4".into()),
                model_limits_enabled: Some(true),
                allow_ips: Some(Some(String::new())),
                expired_time: Some(NOW + 60),
                ..KeyEdit::default()
            }
        );
        assert!(FieldArguments::default().to_edit(NOW).unwrap().is_empty());
        let long_name = FieldArguments {
            name: Some("名".repeat(17)),
            ..FieldArguments::default()
        };
        assert!(matches!(long_name.to_edit(NOW), Err(KeysError::Usage(_))));
    }

    fn record(id: i64, name: &str) -> KeyRecord {
        KeyRecord {
            id,
            status: 1,
            name: name.into(),
            expired_time: -1,
            remain_quota: 1_000,
            allow_ips: Some(String::new()),
            ..KeyRecord::default()
        }
    }

    #[test]
    fn the_created_key_is_the_one_newer_key_with_the_requested_fields() {
        let intended = record(0, "ci");
        let older_same_name = record(10, "ci");
        let other = record(12, "other");
        let created = record(11, "ci");
        let found = pick_created(10, &intended, &[other.clone(), created, older_same_name]);
        assert_eq!(found.map(|record| record.id), Ok(11));

        let different_quota = KeyRecord {
            remain_quota: 5,
            ..record(13, "ci")
        };
        let error = pick_created(12, &intended, &[different_quota, other]).unwrap_err();
        assert!(
            error.contains("was created") && error.contains("keys list"),
            "{error}"
        );

        let error = pick_created(10, &intended, &[record(11, "ci"), record(14, "ci")]).unwrap_err();
        assert!(error.contains("ids 11, 14"), "{error}");
    }

    #[test]
    fn consumption_after_the_write_is_not_a_difference_but_a_reset_is() {
        let fresh = KeyRecord {
            used_quota: 100,
            ..record(1, "a")
        };
        let written = KeyRecord {
            name: "b".into(),
            ..fresh.clone()
        };
        let used = KeyRecord {
            remain_quota: 900,
            used_quota: 200,
            ..written.clone()
        };
        assert!(unexplained_differences(&written, &fresh, &used).is_empty());
        let reset = KeyRecord {
            remain_quota: 0,
            ..written.clone()
        };
        let differences = unexplained_differences(&written, &fresh, &reset);
        assert_eq!(differences.len(), 1);
        assert_eq!(differences[0].field, "remain_quota");
        let renamed_back = KeyRecord {
            name: "a".into(),
            ..written.clone()
        };
        assert_eq!(
            unexplained_differences(&written, &fresh, &renamed_back)[0].field,
            "name"
        );
    }
}
