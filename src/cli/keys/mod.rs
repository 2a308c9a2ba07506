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
//!
//! The flags are in `arguments`, their parsing into a `KeyEdit` in `fields`, what is printed in
//! `output`, and how `create` finds its key's id in `create`; this file runs the other requests.
//!
//! About 575 lines of code and a short unit-test module: the requests of every `keys` subcommand,
//! each a fresh read, a write and a read-back, side by side.

mod arguments;
mod create;
mod fields;
mod output;

use std::process::ExitCode;
use std::sync::Arc;

use std::fmt::Write as _;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::{
    editable_changes, ApiClient, ApiError, ClientBuildError, FieldChange, IgnoreRequests, KeyEdit,
    KeyRecord,
};
use crate::cli::progress::ScanProgressDisplay;
use crate::cli::report;
use crate::cli::shared::{init_one_shot, load_config, print_then, runtime, OutputFormat};
use crate::clock::{unix_now, Clock};
use crate::config::{AccountConfig, Config, ConfigSource};
use crate::policy::rules::shown_value;
use crate::poller::poll_account_observed;
use crate::snapshot::{KeyState, KeyStatus};

use arguments::KeysAction;
pub use arguments::KeysArguments;
pub use fields::{parse_allow_ips, parse_expiry, Expiry, MAX_NAME_BYTES};
use output::{change_json, json_text, key_json, list_table, record_json, record_table};

/// Status codes the commands write.
const STATUS_ENABLED: i64 = 1;
const STATUS_DISABLED: i64 = 2;

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
        Ok(text) => print_then(&text, ExitCode::SUCCESS),
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
    /// The account's `usage` setting: `list` reads today's spend too.
    usage: bool,
}

impl Context {
    fn new(account: &AccountConfig, config: &Config) -> Result<Context, KeysError> {
        let settings = crate::config::client_settings(account, &config.poll);
        let cancel = CancellationToken::new();
        let reader = ApiClient::new(settings, Arc::new(IgnoreRequests), cancel)?;
        let writer = reader.without_retries();
        Ok(Context {
            account: account.name.clone(),
            reader,
            writer,
            usage: account.usage,
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
                    OutputFormat::Table => {
                        let quota_per_unit = context
                            .reader
                            .quota_per_unit()
                            .await
                            .map_err(context.api_error(None))?;
                        record_table(&record, quota_per_unit, now)
                    }
                    OutputFormat::Json => json_text(&record_json(&context.account, &record, now)),
                })
            }
            Request::Create(edit) => create::create(context, &edit, output, now).await,
            Request::Update(id, edit) => update(context, id, &edit, output, now).await,
            Request::SetStatus(id, status) => set_status(context, id, status, output, now).await,
            Request::Delete(id) => delete(context, id, output).await,
        }
    }
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
                change.field,
                shown_value(change.field, &change.before),
                shown_value(change.field, &change.after)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every key, then the account's wallet, today's spend and subscriptions (one complete poll).
/// A failed spend or subscriptions read is a warning on stderr; the rest is still printed.
async fn list(context: &Context, output: OutputFormat, now: i64) -> Result<String, KeysError> {
    let memory = Default::default();
    let display = ScanProgressDisplay::on_stderr();
    let progress = display.account(&context.account);
    let polled = poll_account_observed(
        &context.reader,
        &memory,
        None,
        &Clock::system(),
        context.usage,
        &progress,
    )
    .await
    .map_err(context.api_error(None))?;
    drop(progress);
    for partial in &polled.partial_failures {
        eprintln!(
            "warning: account {}: {} (shown without it)",
            context.account, partial.error
        );
    }
    let snapshot = polled.snapshot;
    Ok(match output {
        OutputFormat::Table => {
            list_table(
                &context.account,
                &snapshot.keys,
                snapshot.quota_per_unit,
                now,
            ) + &report::money_lines(&snapshot, now)
        }
        OutputFormat::Json => json_text(&json!({
            "accounts": [report::account_json(&snapshot)],
            "keys": snapshot
                .keys
                .iter()
                .map(|key| key_json(&context.account, key, now))
                .collect::<Vec<_>>(),
        })),
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
                    change.field,
                    shown_value(change.field, &change.before),
                    shown_value(change.field, &change.after)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumption_after_the_write_is_not_a_difference_but_a_reset_is() {
        let fresh = KeyRecord {
            id: 1,
            status: 1,
            name: "a".into(),
            expired_time: -1,
            remain_quota: 1_000,
            used_quota: 100,
            allow_ips: Some(String::new()),
            ..KeyRecord::default()
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
