//! What `scan` prints: a table for people and JSON for scripts. Pure formatting; `now` is a
//! parameter.
//!
//! Key names are the server's free text (quotes, newlines, any Unicode): the table shows
//! control characters escaped and cuts long names, so one odd name cannot break the layout.
//! Quota is shown in human units and in US dollars (`quota / quota_per_unit`).

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::json;

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
    }
    out
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

pub fn json(snapshots: &[Arc<Snapshot>], now: i64) -> String {
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
    let mut text = serde_json::to_string_pretty(&keys).expect("JSON values serialise");
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
            1 + 3 + 1,
            "header, three keys, summary: the newline did not split a row"
        );
        assert!(text.contains("a\\nb\"c"));
        assert!(text.contains(&format!("{}…", "x".repeat(31))));
        assert!(text.contains("(no name)"));
        assert!(text.contains("main: 3 keys, 3 usable"));
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
        assert_eq!(value[0]["remain_quota"], serde_json::Value::Null);
        assert_eq!(value[0]["used_quota"], 2_400);
        assert_eq!(value[0]["expired_time"], serde_json::Value::Null);
        assert_eq!(value[0]["usable"], true);
    }
}
