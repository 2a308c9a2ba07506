//! What the `keys` commands print: the key table and the single-key view for people (human
//! units, USD, escaped names) and the JSON for scripts. Pure: `now` is a parameter, and no key
//! value is ever in it (the client never decodes one).

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::fields::list_entries;
use crate::api::{FieldChange, KeyRecord};
use crate::cli::report;
use crate::snapshot::KeyState;

pub(super) fn json_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    text.push('\n');
    text
}

/// One key of `list` (and the common part of every key object): raw server values, so a
/// script can pass them back; `expired_time` -1 is never, unlimited keys' `remain_quota` is
/// meaningless.
pub(super) fn key_json(account: &str, key: &KeyState, now: i64) -> Value {
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
pub(super) fn record_json(account: &str, record: &KeyRecord, now: i64) -> Value {
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

pub(super) fn change_json(
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

pub(super) fn restrictions(key: &KeyState) -> &'static str {
    match (key.ip_restricted, key.model_restricted) {
        (true, true) => "ips,models",
        (true, false) => "ips",
        (false, true) => "models",
        (false, false) => "-",
    }
}

pub(super) fn list_table(
    account: &str,
    keys: &[KeyState],
    quota_per_unit: f64,
    now: i64,
) -> String {
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
pub(super) fn record_table(record: &KeyRecord, now: i64) -> String {
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

pub(super) fn escape_control(text: &str) -> String {
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
