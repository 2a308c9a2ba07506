//! Validation of `[policy]` into `PolicyConfig`: every rule checked once, with errors naming
//! `policy.rules[N].key`. Mistakes that would widen what a rule touches (an unknown account in a
//! selector or in `protected_keys`, a bad regex) are errors, never ignored.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::config::error::{KeyPath, Origins};
use crate::config::raw::{RawPolicy, RawRule};
use crate::config::validate::validate_cron;
use crate::config::{AccountConfig, ConfigError, MAX_ACCOUNT_NAME_CHARS};
use crate::policy::rules::{
    ActionKind, Conditions, PolicyConfig, ProtectedKey, Rule, Selector, TopUp, DEFAULT_COOLDOWN,
    DEFAULT_MAX_ACTIONS_PER_POLL, DEFAULT_MAX_KEY_COUNT_DROP, DEFAULT_STATE_DIR, MAX_TOP_UP_QUOTA,
};
use crate::snapshot::KeyStatus;

pub(crate) fn validate_policy(
    raw: &RawPolicy,
    accounts: &[AccountConfig],
    base_dir: &Path,
    origins: &Origins,
    warnings: &mut Vec<String>,
) -> Result<PolicyConfig, ConfigError> {
    let section = KeyPath::root().field("policy");
    let account_names: Vec<&str> = accounts
        .iter()
        .map(|account| account.name.as_str())
        .collect();
    let unknown_account = |name: &str| {
        format!(
            "unknown account \"{name}\"; configured accounts: {}",
            account_names.join(", ")
        )
    };

    let state_dir_text = raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR).trim();
    if state_dir_text.is_empty() {
        return Err(origins.error(
            &section.field("state_dir"),
            "is empty: expected a directory for the audit log and the grant ledger",
        ));
    }
    let state_dir = base_dir.join(state_dir_text);

    let max_actions_per_poll = raw
        .max_actions_per_poll
        .unwrap_or(DEFAULT_MAX_ACTIONS_PER_POLL);
    if max_actions_per_poll == 0 {
        return Err(origins.error(
            &section.field("max_actions_per_poll"),
            "must be at least 1; to write nothing, keep dry_run = true",
        ));
    }

    let max_key_count_drop = raw.max_key_count_drop.unwrap_or(DEFAULT_MAX_KEY_COUNT_DROP);
    if !(max_key_count_drop > 0.0 && max_key_count_drop <= 1.0) {
        return Err(origins.error(
            &section.field("max_key_count_drop"),
            format!(
                "{max_key_count_drop} is out of range: expected a fraction in (0, 1], e.g. 0.2"
            ),
        ));
    }

    let mut protected_keys = Vec::new();
    for (index, text) in raw.protected_keys.iter().enumerate() {
        let key = section.field("protected_keys").index(index);
        let (account, id) = text.rsplit_once(':').ok_or_else(|| {
            origins.error(
                &key,
                format!("\"{text}\" is not \"account:key_id\" (e.g. \"main:1234\")"),
            )
        })?;
        let key_id: i64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            origins.error(
                &key,
                format!("\"{text}\": the key id must be a positive integer"),
            )
        })?;
        let account = account.trim();
        if !account_names.contains(&account) {
            return Err(origins.error(&key, unknown_account(account)));
        }
        protected_keys.push(ProtectedKey {
            account: account.to_owned(),
            key_id,
        });
    }

    let mut rules = Vec::new();
    let mut names = HashSet::new();
    for (index, raw_rule) in raw.rules.iter().enumerate() {
        let key = section.field("rules").index(index);
        let rule = validate_rule(raw_rule, &key, &account_names, origins, warnings)?;
        if !names.insert(rule.name.clone()) {
            return Err(origins.error(
                &key.field("name"),
                format!(
                    "duplicate rule name \"{}\"; names must be unique (they become the `rule` label)",
                    rule.name
                ),
            ));
        }
        rules.push(rule);
    }
    if rules.is_empty() {
        warnings.push("[policy] has no rules: nothing will be evaluated".to_owned());
    }

    Ok(PolicyConfig {
        dry_run: raw.dry_run.unwrap_or(true),
        state_dir,
        max_actions_per_poll,
        protected_keys,
        cooldown: raw
            .cooldown
            .map(|cooldown| cooldown.0)
            .unwrap_or(DEFAULT_COOLDOWN),
        max_key_count_drop,
        rules,
    })
}

fn validate_rule(
    raw: &RawRule,
    key: &KeyPath,
    account_names: &[&str],
    origins: &Origins,
    warnings: &mut Vec<String>,
) -> Result<Rule, ConfigError> {
    let name_key = key.field("name");
    let name = raw.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(origins.error(
            &name_key,
            "missing: every rule needs a unique name (it becomes the `rule` label)",
        ));
    }
    if name.chars().count() > MAX_ACCOUNT_NAME_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(origins.error(
            &name_key,
            format!(
                "invalid rule name {name:?}: use 1 to {MAX_ACCOUNT_NAME_CHARS} letters, digits, \
                 '_', '.' or '-'"
            ),
        ));
    }

    let action_key = key.field("action");
    let action_text = raw.action.as_deref().unwrap_or_default().trim();
    let action = ActionKind::parse(action_text).ok_or_else(|| {
        origins.error(
            &action_key,
            if action_text.is_empty() {
                "missing: expected disable, enable or top_up".to_owned()
            } else {
                format!("unknown action \"{action_text}\"; expected disable, enable or top_up")
            },
        )
    })?;

    if let Some(accounts) = &raw.accounts {
        for (index, account) in accounts.iter().enumerate() {
            if !account_names.contains(&account.as_str()) {
                return Err(origins.error(
                    &key.field("accounts").index(index),
                    format!(
                        "unknown account \"{account}\"; configured accounts: {}",
                        account_names.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(key_ids) = &raw.key_ids {
        if let Some((index, id)) = key_ids.iter().enumerate().find(|(_, id)| **id <= 0) {
            return Err(origins.error(
                &key.field("key_ids").index(index),
                format!("{id} is not a key id: ids are positive integers"),
            ));
        }
    }
    let name_matches = match &raw.name_matches {
        None => None,
        Some(pattern) => Some(regex::Regex::new(pattern).map_err(|error| {
            let detail = error.to_string();
            let first_line = detail.lines().last().unwrap_or_default().trim();
            origins.error(
                &key.field("name_matches"),
                format!("invalid regular expression: {first_line}"),
            )
        })?),
    };
    let selector = Selector {
        accounts: raw.accounts.clone(),
        key_ids: raw.key_ids.clone(),
        name_matches,
        groups: raw.groups.clone(),
    };

    let when = key.field("when");
    let raw_when = &raw.when;
    if let Some(fraction) = raw_when.remaining_fraction_below {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(origins.error(
                &when.field("remaining_fraction_below"),
                format!("{fraction} is out of range: expected a fraction in (0, 1], e.g. 0.1"),
            ));
        }
    }
    if let Some(below) = raw_when.account_quota_below {
        if below < 1 {
            return Err(origins.error(
                &when.field("account_quota_below"),
                format!(
                    "{below} is out of range: expected quota units of the wallet, at least 1 \
                     (500000 is 1 USD at the default quota_per_unit)"
                ),
            ));
        }
    }
    for (field, duration) in [
        ("expires_within", raw_when.expires_within),
        ("unused_for", raw_when.unused_for),
    ] {
        if duration.is_some_and(|duration| duration.0 < Duration::from_secs(1)) {
            return Err(origins.error(&when.field(field), "must be at least 1s"));
        }
    }
    let status = match &raw_when.status {
        None => None,
        Some(names) => {
            let mut statuses = Vec::new();
            for (index, name) in names.iter().enumerate() {
                let status = KeyStatus::ALL
                    .into_iter()
                    .find(|status| status.label() == name.trim())
                    .ok_or_else(|| {
                        origins.error(
                            &when.field("status").index(index),
                            format!(
                                "unknown status \"{name}\"; expected enabled, disabled, expired, \
                                 exhausted or unknown"
                            ),
                        )
                    })?;
                statuses.push(status);
            }
            Some(statuses)
        }
    };
    let conditions = Conditions {
        expired: raw_when.expired,
        expires_within: raw_when.expires_within.map(|duration| duration.0),
        remaining_quota_below: raw_when.remaining_quota_below,
        remaining_fraction_below: raw_when.remaining_fraction_below,
        account_quota_below: raw_when.account_quota_below,
        unused_for: raw_when.unused_for.map(|duration| duration.0),
        status,
    };

    let top_up_key = key.field("top_up");
    let top_up = match (action, &raw.top_up) {
        (ActionKind::TopUp, None) => {
            return Err(origins.error(
                &top_up_key.field("to"),
                "missing: a top_up rule needs top_up.to (the remaining quota to set)",
            ))
        }
        (ActionKind::TopUp, Some(raw_top_up)) => {
            let to = raw_top_up.to.ok_or_else(|| {
                origins.error(
                    &top_up_key.field("to"),
                    "missing: the remaining quota to set, in quota units",
                )
            })?;
            if !(1..=MAX_TOP_UP_QUOTA).contains(&to) {
                return Err(origins.error(
                    &top_up_key.field("to"),
                    format!("{to} is out of range: expected 1 to {MAX_TOP_UP_QUOTA} quota units"),
                ));
            }
            Some(TopUp {
                to,
                enable: raw_top_up.enable.unwrap_or(false),
            })
        }
        (_, Some(_)) => {
            return Err(origins.error(
                &top_up_key,
                format!(
                    "only a top_up rule takes top_up settings; this rule's action is {action_text}"
                ),
            ))
        }
        (_, None) => None,
    };

    let no_selector = selector.accounts.is_none()
        && selector.key_ids.is_none()
        && selector.name_matches.is_none()
        && selector.groups.is_none();
    if action != ActionKind::TopUp && conditions.is_empty() {
        if no_selector {
            return Err(origins.error(
                key,
                format!(
                    "a {action_text} rule needs a selector (key_ids, accounts, name_matches, \
                     groups) or a when.* condition: with neither it would {action_text} every \
                     key of every account"
                ),
            ));
        }
        if selector.key_ids.is_none() {
            warnings.push(format!(
                "policy rule \"{name}\" has no when.* condition: it will {action_text} every key \
                 its selector matches, whatever the key's state"
            ));
        }
    }
    let schedule = match &raw.schedule {
        None => None,
        Some(expression) => Some(
            validate_cron(expression)
                .map_err(|reason| origins.error(&key.field("schedule"), reason))?,
        ),
    };
    if action == ActionKind::TopUp && conditions.is_empty() && no_selector {
        warnings.push(format!(
            "policy rule \"{name}\" selects every limited key of every account"
        ));
    }
    Ok(Rule {
        name: name.to_owned(),
        action,
        selector,
        conditions,
        top_up,
        schedule,
    })
}
