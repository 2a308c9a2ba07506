//! Edits of a key record that lose nothing: the one place that knows which fields a write
//! carries and how to change only some of them.
//!
//! The server resets every editable field a full `PUT /api/token/` omits, so every write is the
//! complete record from a fresh `GET` with only the intended fields changed (`KeyEdit::apply`).
//! `editable_changes` lists what differs between two records, field by field: the before → after
//! of the audit log and of `keys update`, and the read-back check after a write.

use serde_json::Value;

use super::KeyRecord;

/// Which fields to change; `None` leaves a field as the fresh read has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyEdit {
    pub name: Option<String>,
    /// Unix seconds, or -1 for never.
    pub expired_time: Option<i64>,
    pub remain_quota: Option<i64>,
    pub unlimited_quota: Option<bool>,
    pub model_limits_enabled: Option<bool>,
    pub model_limits: Option<String>,
    /// `Some(None)` writes `null`, which the server stores as "no restriction".
    pub allow_ips: Option<Option<String>>,
    pub group: Option<String>,
    pub cross_group_retry: Option<bool>,
}

impl KeyEdit {
    pub fn is_empty(&self) -> bool {
        *self == KeyEdit::default()
    }

    /// The record to PUT: `fresh` with only the named fields replaced.
    pub fn apply(&self, fresh: &KeyRecord) -> KeyRecord {
        let mut record = fresh.clone();
        if let Some(name) = &self.name {
            record.name = name.clone();
        }
        if let Some(expired_time) = self.expired_time {
            record.expired_time = expired_time;
        }
        if let Some(remain_quota) = self.remain_quota {
            record.remain_quota = remain_quota;
        }
        if let Some(unlimited_quota) = self.unlimited_quota {
            record.unlimited_quota = unlimited_quota;
        }
        if let Some(model_limits_enabled) = self.model_limits_enabled {
            record.model_limits_enabled = model_limits_enabled;
        }
        if let Some(model_limits) = &self.model_limits {
            record.model_limits = model_limits.clone();
        }
        if let Some(allow_ips) = &self.allow_ips {
            record.allow_ips = allow_ips.clone();
        }
        if let Some(group) = &self.group {
            record.group = group.clone();
        }
        if let Some(cross_group_retry) = self.cross_group_retry {
            record.cross_group_retry = cross_group_retry;
        }
        record
    }
}

/// One field that differs between two records.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: &'static str,
    pub before: Value,
    pub after: Value,
}

/// The editable fields (and `status`) whose values differ between `before` and `after`.
/// `allow_ips` `null` and `""` are the same ("no restriction"), as are a missing and an empty
/// `auto_groups`: the server stores and echoes them interchangeably.
pub fn editable_changes(before: &KeyRecord, after: &KeyRecord) -> Vec<FieldChange> {
    let before_values = comparable_values(before);
    let after_values = comparable_values(after);
    before_values
        .into_iter()
        .zip(after_values)
        .filter(|((_, left), (_, right))| left != right)
        .map(|((field, before), (_, after))| FieldChange {
            field,
            before,
            after,
        })
        .collect()
}

fn comparable_values(record: &KeyRecord) -> [(&'static str, Value); 11] {
    let allow_ips = record.allow_ips.clone().unwrap_or_default();
    let auto_groups = record.auto_groups.clone().unwrap_or_default();
    [
        ("status", record.status.into()),
        ("name", record.name.clone().into()),
        ("expired_time", record.expired_time.into()),
        ("remain_quota", record.remain_quota.into()),
        ("unlimited_quota", record.unlimited_quota.into()),
        ("model_limits_enabled", record.model_limits_enabled.into()),
        ("model_limits", record.model_limits.clone().into()),
        ("allow_ips", allow_ips.into()),
        ("group", record.group.clone().into()),
        ("cross_group_retry", record.cross_group_retry.into()),
        ("auto_groups", auto_groups.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restricted_record() -> KeyRecord {
        KeyRecord {
            id: 7,
            status: 1,
            name: "team-a".into(),
            expired_time: 1_900_000_000,
            remain_quota: 1_000,
            used_quota: 50,
            model_limits_enabled: true,
            model_limits: "gpt-4.1".into(),
            allow_ips: Some("10.0.0.0/8".into()),
            group: "vip".into(),
            ..KeyRecord::default()
        }
    }

    #[test]
    fn apply_changes_only_the_named_fields() {
        let fresh = restricted_record();
        let edit = KeyEdit {
            name: Some("team-b".into()),
            ..KeyEdit::default()
        };
        let written = edit.apply(&fresh);
        let changes = editable_changes(&fresh, &written);
        assert_eq!(
            changes,
            vec![FieldChange {
                field: "name",
                before: "team-a".into(),
                after: "team-b".into()
            }]
        );
        assert_eq!(written.allow_ips.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(written.expired_time, 1_900_000_000);
        assert!(KeyEdit::default().is_empty() && !edit.is_empty());
    }

    #[test]
    fn null_and_empty_restrictions_compare_equal_but_real_changes_do_not() {
        let mut before = restricted_record();
        before.allow_ips = None;
        let mut after = before.clone();
        after.allow_ips = Some(String::new());
        after.auto_groups = Some(Vec::new());
        assert!(editable_changes(&before, &after).is_empty());
        after.status = 2;
        after.remain_quota = 5;
        let fields: Vec<_> = editable_changes(&before, &after)
            .into_iter()
            .map(|change| change.field)
            .collect();
        assert_eq!(fields, ["status", "remain_quota"]);
    }
}
