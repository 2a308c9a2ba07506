//! The account's money, as the pure domain model: the wallet every key draws from, today's spend
//! (by key and model where the server records it, else by model), and the subscription plans.
//!
//! No I/O and no clock: the UTC day is a parameter (`day_start`, 00:00 UTC, which the edges
//! compute with `clock::utc_day_start`). An [`AccountMoney`]
//! travels inside the account's `Snapshot`; `None` in one of its parts means "nothing to
//! export" (the server has no such route, its data export is off, or usage is turned off).

use std::collections::{BTreeMap, HashMap};

/// `/api/user/self`: the account's wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    pub user_id: i64,
    pub group: String,
    /// Wallet left in quota units; may be negative.
    pub quota: i64,
    pub used_quota: i64,
    /// The server's `request_count`.
    pub request_count: i64,
}

/// Today's use of one key on one model in one group (`/api/data/flow/self`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyModelSpend {
    pub key_id: i64,
    /// The key's name as the usage row carries it (for the CLI; never a label).
    pub key_name: String,
    /// The group the requests ran in.
    pub group: String,
    pub model: String,
    pub requests: i64,
    pub tokens: i64,
    pub quota: i64,
}

/// Today's use of one model by the whole account (`/api/data/self`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpend {
    pub model: String,
    pub requests: i64,
    pub tokens: i64,
    pub quota: i64,
}

/// How finely the server reports the spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendDetail {
    /// Sorted by (key, group, model), one entry per triple.
    ByKeyAndModel(Vec<KeyModelSpend>),
    /// Sorted by model, one entry per model.
    ByModel(Vec<ModelSpend>),
}

/// The spend of one UTC day up to `read_at`, as the server's sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailySpend {
    /// 00:00 UTC of the day read.
    pub day_start: i64,
    /// The window's end: when it was read.
    pub read_at: i64,
    pub detail: SpendDetail,
}

impl DailySpend {
    /// Spend by key and model, merging rows that repeat a (key, group, model) triple so each
    /// becomes one series.
    pub fn by_key_and_model(
        day_start: i64,
        read_at: i64,
        rows: impl IntoIterator<Item = KeyModelSpend>,
    ) -> DailySpend {
        let mut merged: BTreeMap<(i64, String, String), KeyModelSpend> = BTreeMap::new();
        for row in rows {
            let slot = (row.key_id, row.group.clone(), row.model.clone());
            match merged.get_mut(&slot) {
                Some(existing) => {
                    existing.requests += row.requests;
                    existing.tokens += row.tokens;
                    existing.quota += row.quota;
                }
                None => {
                    merged.insert(slot, row);
                }
            }
        }
        DailySpend {
            day_start,
            read_at,
            detail: SpendDetail::ByKeyAndModel(merged.into_values().collect()),
        }
    }

    /// Spend by model, summing the hourly buckets (and whatever else splits them) per model.
    pub fn by_model(
        day_start: i64,
        read_at: i64,
        rows: impl IntoIterator<Item = ModelSpend>,
    ) -> DailySpend {
        DailySpend {
            day_start,
            read_at,
            detail: SpendDetail::ByModel(sum_by_model(rows)),
        }
    }

    /// Per model, whatever the detail (for the CLI and `demo`), sorted by model.
    pub fn models(&self) -> Vec<ModelSpend> {
        match &self.detail {
            SpendDetail::ByModel(models) => models.clone(),
            SpendDetail::ByKeyAndModel(rows) => sum_by_model(rows.iter().map(|row| ModelSpend {
                model: row.model.clone(),
                requests: row.requests,
                tokens: row.tokens,
                quota: row.quota,
            })),
        }
    }

    /// Quota spent today in total.
    pub fn total_quota(&self) -> i64 {
        self.models().iter().map(|model| model.quota).sum()
    }

    pub fn total_requests(&self) -> i64 {
        self.models().iter().map(|model| model.requests).sum()
    }
}

fn sum_by_model(rows: impl IntoIterator<Item = ModelSpend>) -> Vec<ModelSpend> {
    let mut merged: BTreeMap<String, ModelSpend> = BTreeMap::new();
    for row in rows {
        match merged.get_mut(&row.model) {
            Some(existing) => {
                existing.requests += row.requests;
                existing.tokens += row.tokens;
                existing.quota += row.quota;
            }
            None => {
                merged.insert(row.model.clone(), row);
            }
        }
    }
    merged.into_values().collect()
}

/// One of the user's subscriptions (`/api/subscription/self`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: i64,
    pub plan_id: i64,
    /// The plan's title from `/api/subscription/plans`; empty when the plans do not list it.
    pub plan: String,
    /// `active`, `expired`, `cancelled`, or whatever the server says.
    pub status: String,
    pub amount_total: i64,
    pub amount_used: i64,
    /// `None` when the server sent 0 (none).
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub next_reset_time: Option<i64>,
}

/// Fills each subscription's `plan` from the titles by plan id (empty when unknown).
pub fn with_plan_titles(
    mut subscriptions: Vec<Subscription>,
    titles: &HashMap<i64, String>,
) -> Vec<Subscription> {
    for subscription in &mut subscriptions {
        subscription.plan = titles
            .get(&subscription.plan_id)
            .cloned()
            .unwrap_or_default();
    }
    subscriptions.sort_by_key(|subscription| subscription.id);
    subscriptions.dedup_by_key(|subscription| subscription.id);
    subscriptions
}

/// The account's side of the money as of one complete poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountMoney {
    /// `None`: the server has no `/api/user/self`.
    pub wallet: Option<Wallet>,
    /// `None`: no usage route, data export off, or usage turned off in the config.
    pub spend: Option<DailySpend>,
    /// `None`: no subscription routes. Sorted by id.
    pub subscriptions: Option<Vec<Subscription>>,
}

impl AccountMoney {
    /// The spend if it covers the UTC day starting at `day_start`, else `None` (a kept value
    /// from yesterday must not stand in for today's counters).
    pub fn spend_of_day(&self, day_start: i64) -> Option<&DailySpend> {
        self.spend
            .as_ref()
            .filter(|spend| spend.day_start == day_start)
    }
}

/// `quota` in US dollars.
pub fn quota_in_usd(quota: i64, quota_per_unit: f64) -> f64 {
    if quota_per_unit > 0.0 {
        quota as f64 / quota_per_unit
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key_id: i64, group: &str, model: &str, quota: i64) -> KeyModelSpend {
        KeyModelSpend {
            key_id,
            key_name: format!("k{key_id}"),
            group: group.into(),
            model: model.into(),
            requests: 1,
            tokens: quota / 10,
            quota,
        }
    }

    #[test]
    fn repeated_key_model_rows_become_one_and_models_sum_over_keys() {
        let spend = DailySpend::by_key_and_model(
            0,
            10,
            vec![
                row(2, "default", "gpt", 10),
                row(1, "default", "gpt", 5),
                row(2, "default", "gpt", 7),
                row(2, "vip", "claude", 100),
            ],
        );
        let SpendDetail::ByKeyAndModel(rows) = &spend.detail else {
            panic!("by key");
        };
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[1].key_id, rows[1].quota, rows[1].requests),
            (2, 17, 2)
        );
        let models = spend.models();
        assert_eq!(models.len(), 2);
        assert_eq!((models[1].model.as_str(), models[1].quota), ("gpt", 22));
        assert_eq!(spend.total_quota(), 122);
        assert_eq!(spend.total_requests(), 4);
    }

    #[test]
    fn yesterdays_spend_is_not_today() {
        let money = AccountMoney {
            spend: Some(DailySpend::by_model(86_400, 90_000, Vec::new())),
            ..AccountMoney::default()
        };
        assert!(money.spend_of_day(86_400).is_some());
        assert!(money.spend_of_day(2 * 86_400).is_none());
    }

    #[test]
    fn plan_titles_are_joined_by_id_and_unknown_plans_stay_empty() {
        let subscription = |id, plan_id| Subscription {
            id,
            plan_id,
            plan: String::new(),
            status: "active".into(),
            amount_total: 10,
            amount_used: 1,
            start_time: None,
            end_time: None,
            next_reset_time: None,
        };
        let titles = HashMap::from([(1, "Pro".to_string())]);
        let joined = with_plan_titles(vec![subscription(5, 2), subscription(3, 1)], &titles);
        assert_eq!(joined[0].plan, "Pro");
        assert_eq!(joined[1].plan, "");
        assert_eq!(quota_in_usd(250_000, 500_000.0), 0.5);
    }
}
