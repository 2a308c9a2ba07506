//! The `keys` command line: the clap definitions of `keys list|get|create|update|disable|enable|
//! delete` and of the editable-field flags shared by `create` and `update`. Nothing here talks to
//! the server; `fields` turns the flags into a `KeyEdit`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Subcommand};

use super::fields::{parse_expiry, Expiry};
use crate::cli::shared::OutputFormat;

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
    pub(super) config: Option<PathBuf>,
    /// The account to act on; needed when the configuration has more than one.
    #[arg(long, short = 'a', value_name = "NAME", global = true)]
    pub(super) account: Option<String>,
    /// A table for people or JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub(super) output: OutputFormat,
    #[command(subcommand)]
    pub(super) action: KeysAction,
}

#[derive(Debug, Subcommand)]
pub(super) enum KeysAction {
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
pub(super) struct FieldArguments {
    /// Display name, at most 50 bytes.
    #[arg(long, value_name = "NAME")]
    pub(super) name: Option<String>,
    /// Remaining quota in quota units (500000 = 1 USD on a default server).
    #[arg(long, value_name = "QUOTA", allow_negative_numbers = true)]
    pub(super) remaining_quota: Option<i64>,
    /// No quota limit.
    #[arg(long, conflicts_with = "limited")]
    pub(super) unlimited: bool,
    /// Limited by --remaining-quota.
    #[arg(long)]
    pub(super) limited: bool,
    /// RFC 3339 time or date (UTC), unix seconds, a duration from now (30d, 12h) or `never`.
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
    pub(super) expires: Option<Expiry>,
    /// Group ("" for none).
    #[arg(long, value_name = "GROUP")]
    pub(super) group: Option<String>,
    /// Allowed client IPs or CIDR ranges, separated by commas.
    #[arg(long, value_name = "LIST", conflicts_with = "clear_allow_ips")]
    pub(super) allow_ips: Option<String>,
    /// Allow every client IP.
    #[arg(long)]
    pub(super) clear_allow_ips: bool,
    /// Allowed model ids, separated by commas (turns the model limit on).
    #[arg(long, value_name = "LIST", conflicts_with = "clear_model_limits")]
    pub(super) model_limits: Option<String>,
    /// Allow every model (turns the model limit off).
    #[arg(long)]
    pub(super) clear_model_limits: bool,
    /// Cross-group retry (only meaningful in the group `auto`).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set)]
    pub(super) cross_group_retry: Option<bool>,
}
