//! What `scan` prints: a table for people and JSON for scripts. Pure formatting; `now` is a
//! parameter.
//!
//! Key names are the server's free text (quotes, newlines, any Unicode): the table shows
//! control characters escaped and cuts long names, so one odd name cannot break the layout.
//! Quota is shown in human units and in US dollars (`quota / quota_per_unit`).

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::json;

use crate::account::{quota_in_usd, AccountMoney, SpendDetail};
use crate::snapshot::{KeyState, Snapshot};

/// Names longer than this many characters are cut in the table (JSON keeps them whole).
const TABLE_NAME_CHARACTERS: usize = 32;

pub fn table(snapshots: &[Arc<Snapshot>], now: i64) -> String {
    let header = [
        "ACCOUNT",
        "ID",
        "NAME",
        "STATUS",
        "USABLE",
        "REMAINING",
        "USED",
        "EXPIRES",
    ]
    .map(String::from);
    let mut rows = vec![header];
    for snapshot in snapshots {
        for key in &snapshot.keys {
            rows.push([
                snapshot.account.clone(),
                key.id.to_string(),
                table_name(&key.name),
                key.status().label().to_owned(),
                if key.is_usable_at(now) { "yes" } else { "no" }.to_owned(),
                remaining_text(key, snapshot.quota_per_unit),
                quota_text(key.used_quota, snapshot.quota_per_unit),
                expiry_text(key.expired_time, now),
            ]);
        }
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    let mut out = render_table(&rows, &[1, 5, 6]);
    for snapshot in snapshots {
        let _ = writeln!(
            out,
            "{}: {} keys, {} usable (1 USD = {} quota units)",
            snapshot.account,
            snapshot.keys.len(),
            snapshot.usable_count(),
            snapshot.quota_per_unit
        );
        out.push_str(&money_lines(snapshot, now));
    }
    out
}

/// The account's money under a table: the wallet (left and used, in units and USD, requests),
/// today's spend and each subscription, one line each; nothing for what the server lacks.
pub fn money_lines(snapshot: &Snapshot, now: i64) -> String {
    let account = &snapshot.account;
    let per_unit = snapshot.quota_per_unit;
    let money = &snapshot.money;
    let mut out = String::new();
    match &money.wallet {
        Some(wallet) => {
            let _ = writeln!(
                out,
                "{account}: wallet {} left, {} used, {} requests",
                quota_text(wallet.quota, per_unit),
                quota_text(wallet.used_quota, per_unit),
                wallet.request_count
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{account}: no wallet (the server has no /api/user/self)"
            );
        }
    }
    if let Some(spend) = &money.spend {
        let pairs = match &spend.detail {
            SpendDetail::ByKeyAndModel(rows) => format!(", {} key × model pairs", rows.len()),
            SpendDetail::ByModel(_) => String::new(),
        };
        let _ = writeln!(
            out,
            "{account}: spent today (since 00:00 UTC) {} in {} requests on {} models{pairs}",
            quota_text(spend.total_quota(), per_unit),
            spend.total_requests(),
            spend.models().len()
        );
    }
    for subscription in money.subscriptions.iter().flatten() {
        let plan = if subscription.plan.is_empty() {
            format!("plan {}", subscription.plan_id)
        } else {
            table_name(&subscription.plan)
        };
        let ends = subscription
            .end_time
            .map(|end| format!(", ends {}", expiry_text(end, now)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{account}: subscription {} ({plan}) {}: {} of {} used{ends}",
            subscription.id,
            table_name(&subscription.status),
            quota_text(subscription.amount_used, per_unit),
            quota_text(subscription.amount_total, per_unit),
        );
    }
    out
}

/// The account's side of a snapshot as JSON: `wallet` (null without the route), `spend_today`
/// (null when not read: no route, export off, or usage off) with its rows, `subscriptions` (null
/// without the routes); quota in units and USD.
pub fn account_json(snapshot: &Snapshot) -> serde_json::Value {
    let per_unit = snapshot.quota_per_unit;
    let usd = |quota: i64| quota_in_usd(quota, per_unit);
    let AccountMoney {
        wallet,
        spend,
        subscriptions,
    } = &snapshot.money;
    let wallet = wallet.as_ref().map(|wallet| {
        json!({
            "user_id": wallet.user_id,
            "group": wallet.group,
            "quota": wallet.quota,
            "quota_usd": usd(wallet.quota),
            "used_quota": wallet.used_quota,
            "used_usd": usd(wallet.used_quota),
            "request_count": wallet.request_count,
        })
    });
    let spend = spend.as_ref().map(|spend| {
        let models: Vec<serde_json::Value> = spend
            .models()
            .iter()
            .map(|model| {
                json!({
                    "model": model.model,
                    "requests": model.requests,
                    "tokens": model.tokens,
                    "quota": model.quota,
                    "usd": usd(model.quota),
                })
            })
            .collect();
        let by_key = match &spend.detail {
            SpendDetail::ByKeyAndModel(rows) => Some(
                rows.iter()
                    .map(|row| {
                        json!({
                            "key_id": row.key_id,
                            "key_name": row.key_name,
                            "group": row.group,
                            "model": row.model,
                            "requests": row.requests,
                            "tokens": row.tokens,
                            "quota": row.quota,
                            "usd": usd(row.quota),
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
            SpendDetail::ByModel(_) => None,
        };
        json!({
            "since": spend.day_start,
            "until": spend.read_at,
            "quota": spend.total_quota(),
            "usd": usd(spend.total_quota()),
            "requests": spend.total_requests(),
            "by_model": models,
            "by_key_and_model": by_key,
        })
    });
    let subscriptions = subscriptions.as_ref().map(|subscriptions| {
        subscriptions
            .iter()
            .map(|subscription| {
                json!({
                    "id": subscription.id,
                    "plan_id": subscription.plan_id,
                    "plan": subscription.plan,
                    "status": subscription.status,
                    "amount_total": subscription.amount_total,
                    "amount_used": subscription.amount_used,
                    "start_time": subscription.start_time,
                    "end_time": subscription.end_time,
                    "next_reset_time": subscription.next_reset_time,
                })
            })
            .collect::<Vec<_>>()
    });
    json!({
        "account": snapshot.account,
        "quota_per_unit": per_unit,
        "keys": snapshot.keys.len(),
        "usable_keys": snapshot.usable_count(),
        "wallet": wallet,
        "spend_today": spend,
        "subscriptions": subscriptions,
    })
}

/// Rows as aligned columns, two spaces apart: columns in `right_aligned` (numbers) padded on the
/// left, the others on the right; trailing spaces trimmed.
pub fn render_table(rows: &[Vec<String>], right_aligned: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            let padding = width - cell.chars().count();
            if right_aligned.contains(&column) {
                line.push_str(&" ".repeat(padding));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(padding));
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `{"accounts": [one per snapshot: its money, see `account_json`], "keys": [every key]}`.
pub fn json(snapshots: &[Arc<Snapshot>], now: i64) -> String {
    let accounts: Vec<serde_json::Value> = snapshots
        .iter()
        .map(|snapshot| account_json(snapshot))
        .collect();
    let keys: Vec<serde_json::Value> = snapshots
        .iter()
        .flat_map(|snapshot| snapshot.keys.iter().map(move |key| (snapshot, key)))
        .map(|(snapshot, key)| {
            let usd = |quota: i64| quota as f64 / snapshot.quota_per_unit;
            json!({
                "account": snapshot.account,
                "id": key.id,
                "name": key.name,
                "group": key.group,
                "status": key.status().label(),
                "status_code": key.status_code,
                "usable": key.is_usable_at(now),
                "unlimited_quota": key.unlimited_quota,
                "remain_quota": (!key.unlimited_quota).then_some(key.remain_quota),
                "remain_usd": (!key.unlimited_quota).then(|| usd(key.remain_quota)),
                "used_quota": key.used_quota,
                "used_usd": usd(key.used_quota),
                "expired_time": (!key.never_expires()).then_some(key.expired_time),
                "created_time": key.created_time,
                "accessed_time": (key.accessed_time != 0).then_some(key.accessed_time),
                "ip_restricted": key.ip_restricted,
                "model_restricted": key.model_restricted,
            })
        })
        .collect();
    let document = json!({ "accounts": accounts, "keys": keys });
    let mut text = serde_json::to_string_pretty(&document).expect("JSON values serialise");
    text.push('\n');
    text
}

/// A name for a table cell: control characters escaped, cut after 32 characters.
pub fn table_name(name: &str) -> String {
    let escaped: String = name
        .chars()
        .flat_map(|character| -> Vec<char> {
            if character.is_control() {
                character.escape_default().collect()
            } else {
                vec![character]
            }
        })
        .collect();
    if escaped.chars().count() > TABLE_NAME_CHARACTERS {
        let mut cut: String = escaped.chars().take(TABLE_NAME_CHARACTERS - 1).collect();
        cut.push('…');
        cut
    } else if escaped.is_empty() {
        "(no name)".into()
    } else {
        escaped
    }
}

fn remaining_text(key: &KeyState, quota_per_unit: f64) -> String {
    if key.unlimited_quota {
        "unlimited".into()
    } else {
        quota_text(key.remain_quota, quota_per_unit)
    }
}

/// `1.25M ($2.50)`.
pub fn quota_text(quota: i64, quota_per_unit: f64) -> String {
    let usd = quota as f64 / quota_per_unit;
    let sign = if usd < 0.0 { "-" } else { "" };
    format!("{} ({sign}${:.2})", human_number(quota), usd.abs())
}

fn human_number(value: i64) -> String {
    let magnitude = value.unsigned_abs() as f64;
    let sign = if value < 0 { "-" } else { "" };
    for (scale, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")] {
        if magnitude >= scale {
            return format!("{sign}{:.2}{suffix}", magnitude / scale);
        }
    }
    value.to_string()
}

/// `never`, `2026-12-01 (in 7d)` or `2026-11-01 (expired 3d ago)`.
pub fn expiry_text(expired_time: i64, now: i64) -> String {
    if expired_time == -1 {
        return "never".into();
    }
    let date = chrono::DateTime::from_timestamp(expired_time, 0).map_or_else(
        || expired_time.to_string(),
        |time| time.format("%Y-%m-%d %H:%M").to_string(),
    );
    if expired_time < now {
        format!(
            "{date} (expired {} ago)",
            human_duration(now - expired_time)
        )
    } else {
        format!("{date} (in {})", human_duration(expired_time - now))
    }
}

fn human_duration(seconds: i64) -> String {
    match seconds {
        seconds if seconds >= 86_400 => format!("{}d", seconds / 86_400),
        seconds if seconds >= 3_600 => format!("{}h", seconds / 3_600),
        seconds if seconds >= 60 => format!("{}m", seconds / 60),
        seconds => format!("{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, name: &str) -> KeyState {
        KeyState {
            name: name.into(),
            created_time: 0,
            remain_quota: 1_250_000,
            used_quota: 2_400,
            ..KeyState::for_tests(id)
        }
    }

    #[test]
    fn quota_and_expiry_are_human() {
        assert_eq!(quota_text(1_250_000, 500_000.0), "1.25M ($2.50)");
        assert_eq!(quota_text(-2_400, 500_000.0), "-2.40K (-$0.00)");
        assert_eq!(quota_text(999, 500_000.0), "999 ($0.00)");
        assert_eq!(expiry_text(-1, 0), "never");
        assert_eq!(expiry_text(86_400 * 8, 86_400), "1970-01-09 00:00 (in 7d)");
        assert_eq!(expiry_text(0, 7_200), "1970-01-01 00:00 (expired 2h ago)");
    }

    #[test]
    fn table_escapes_control_characters_and_cuts_long_names() {
        let snapshot = Snapshot::new(
            "main",
            vec![key(1, "a\nb\"c"), key(2, &"x".repeat(60)), key(3, "")],
            500_000.0,
            10,
        );
        let text = table(&[Arc::new(snapshot)], 10);
        assert_eq!(
            text.lines().count(),
            1 + 3 + 2,
            "header, three keys, summary: the newline did not split a row (plus the wallet line)"
        );
        assert!(text.contains("a\\nb\"c"));
        assert!(text.contains(&format!("{}…", "x".repeat(31))));
        assert!(text.contains("(no name)"));
        assert!(text.contains("main: 3 keys, 3 usable"));
        assert!(text.contains("main: no wallet"));
    }

    #[test]
    fn json_keeps_raw_numbers_and_omits_meaningless_values() {
        let snapshot = Snapshot::new(
            "main",
            vec![KeyState {
                unlimited_quota: true,
                remain_quota: -7,
                ..key(1, "n")
            }],
            500_000.0,
            10,
        );
        let value: serde_json::Value =
            serde_json::from_str(&json(&[Arc::new(snapshot)], 10)).unwrap();
        let keys = &value["keys"];
        assert_eq!(keys[0]["remain_quota"], serde_json::Value::Null);
        assert_eq!(keys[0]["used_quota"], 2_400);
        assert_eq!(keys[0]["expired_time"], serde_json::Value::Null);
        assert_eq!(keys[0]["usable"], true);
        assert_eq!(value["accounts"][0]["wallet"], serde_json::Value::Null);
    }

    #[test]
    fn the_money_lines_and_json_show_wallet_spend_and_subscriptions_in_units_and_usd() {
        use crate::account::{DailySpend, KeyModelSpend, Subscription, Wallet};
        let snapshot =
            Snapshot::new("main", vec![key(1, "k")], 500_000.0, 100).with_money(AccountMoney {
                wallet: Some(Wallet {
                    user_id: 7,
                    group: "default".into(),
                    quota: 1_250_000,
                    used_quota: 500_000,
                    request_count: 42,
                }),
                spend: Some(DailySpend::by_key_and_model(
                    0,
                    100,
                    vec![KeyModelSpend {
                        key_id: 1,
                        key_name: "k".into(),
                        group: "default".into(),
                        model: "gpt-4.1".into(),
                        requests: 3,
                        tokens: 30,
                        quota: 250_000,
                    }],
                )),
                subscriptions: Some(vec![Subscription {
                    id: 11,
                    plan_id: 1,
                    plan: "Pro".into(),
                    status: "active".into(),
                    amount_total: 1_000_000,
                    amount_used: 250_000,
                    start_time: None,
                    end_time: Some(86_400 * 3),
                    next_reset_time: None,
                }]),
            });
        let lines = money_lines(&snapshot, 100);
        for expected in [
            "main: wallet 1.25M ($2.50) left, 500.00K ($1.00) used, 42 requests",
            "main: spent today (since 00:00 UTC) 250.00K ($0.50) in 3 requests on 1 models, 1 key × model pairs",
            "main: subscription 11 (Pro) active: 250.00K ($0.50) of 1.00M ($2.00) used, ends 1970-01-04",
        ] {
            assert!(lines.contains(expected), "{expected:?} in\n{lines}");
        }
        let value = account_json(&snapshot);
        assert_eq!(value["wallet"]["quota_usd"], 2.5);
        assert_eq!(value["spend_today"]["by_key_and_model"][0]["usd"], 0.5);
        assert_eq!(value["spend_today"]["by_model"][0]["model"], "gpt-4.1");
        assert_eq!(value["subscriptions"][0]["plan"], "Pro");
        assert_eq!(
            value["subscriptions"][0]["next_reset_time"],
            serde_json::Value::Null
        );
    }
}
