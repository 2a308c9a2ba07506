//! The account side of the simulated server (reference §13): the user's wallet
//! (`GET /api/user/self`), the usage recorded from the simulated relay traffic
//! (`GET /api/data/self` hourly buckets, `GET /api/data/flow/self` rows by key, group and model)
//! and the subscription plans (`GET /api/subscription/self`, `GET /api/subscription/plans`).
//!
//! Which of these routes exist depends on the server generation ([`ServerGeneration`]); a route
//! the generation lacks answers the OpenAI-style 404 like any unknown `/api` path. Usage is
//! recorded only while the data export is on, and becomes visible `usage_recording_lag` after the
//! request (the real server flushes every `DataExportInterval`, 5 minutes).
//!
//! Not reproduced: subscriptions are not drawn down by the simulated traffic (the key and the
//! wallet are; tests edit subscriptions directly), the billing preference is fixed, and usage is
//! visible per request after the lag rather than in 5-minute batches.

use super::json::{self, push_integer, push_string};
use super::routes::{Answer, Query};
use super::Settings;

/// Seconds in the largest window `/api/data/*` accepts (`2592000`, 30 days).
pub const MAX_USAGE_WINDOW_SECONDS: i64 = 2_592_000;
/// `GetUserQuotaDates` and `GetUserFlowData` when the window is longer than 30 days.
pub const MESSAGE_WINDOW_TOO_LONG: &str = "时间跨度不能超过 1 个月";
/// The user's group when it was never changed.
pub const DEFAULT_USER_GROUP: &str = "default";
const HOUR: i64 = 3_600;

/// Sums of one usage row: requests, quota, tokens.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    count: i64,
    quota: i64,
    tokens: i64,
}

impl Sums {
    fn add(&mut self, record: &UsageRecord) {
        self.count += 1;
        self.quota += record.quota;
        self.tokens += record.tokens;
    }
}

/// (bucket start, model, group, token id) of an hourly row.
type HourlyKey = (i64, String, String, i64);
/// (token id, group, model) of a flow row.
type FlowKey = (i64, String, String);

/// Which server the simulator imitates, as far as the account's routes go (reference §13 and
/// the version matrix of §11). The key routes behave like the newest server in every
/// generation; only the account routes and their shapes change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerGeneration {
    /// songquanpeng/one-api: `/api/user/self` only (the user row, int64 quotas, no `setting`).
    OneApi,
    /// new-api before 2026-02-03: the wallet and the hourly `/api/data/self` buckets (without
    /// the key and group columns).
    NewApiBeforeSubscriptions,
    /// new-api 2026-02-03 … 2026-06-19: adds `/api/subscription/self` and `/plans`.
    NewApiBeforeFlow,
    /// new-api ≥ 2026-06-20: adds `/api/data/flow/self`, and `/api/data/self` rows carry
    /// `use_group`, `token_id`, `channel_id`, `node_name`.
    #[default]
    NewApiLatest,
}

impl ServerGeneration {
    pub fn has_hourly_usage(self) -> bool {
        self != ServerGeneration::OneApi
    }

    pub fn has_flow_usage(self) -> bool {
        self == ServerGeneration::NewApiLatest
    }

    pub fn has_subscriptions(self) -> bool {
        matches!(
            self,
            ServerGeneration::NewApiBeforeFlow | ServerGeneration::NewApiLatest
        )
    }
}

/// The user row's money: what `/api/user/self` reports and every relay request charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimWallet {
    pub user_id: i64,
    pub username: String,
    pub group: String,
    /// Wallet left in quota units; goes below 0 when a request overdraws it.
    pub quota: i64,
    pub used_quota: i64,
    pub request_count: i64,
}

/// One relay request as the usage tables record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// When the request ran (unix seconds).
    pub at: i64,
    pub token_id: i64,
    pub token_name: String,
    /// The group the request ran in; empty only in rows written before the column existed.
    pub use_group: String,
    pub model_name: String,
    pub quota: i64,
    pub tokens: i64,
}

/// A subscription plan (`model.SubscriptionPlan`, the fields the simulator serves).
#[derive(Debug, Clone, PartialEq)]
pub struct SimPlan {
    pub id: i64,
    pub title: String,
    pub subtitle: String,
    pub price_amount: f64,
    pub currency: String,
    pub duration_unit: String,
    pub duration_value: i64,
    /// `never`, `daily`, `weekly`, `monthly` or `custom`.
    pub quota_reset_period: String,
    pub total_amount: i64,
}

/// One of the user's subscriptions (`model.UserSubscription`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSubscription {
    pub id: i64,
    pub plan_id: i64,
    pub amount_total: i64,
    pub amount_used: i64,
    pub start_time: i64,
    pub end_time: i64,
    /// `active`, `expired` or `cancelled`.
    pub status: String,
    pub source: String,
    pub last_reset_time: i64,
    /// 0 when the plan never resets.
    pub next_reset_time: i64,
    pub upgrade_group: String,
}

/// Everything account-side behind the simulator's mutex.
#[derive(Debug, Clone)]
pub(crate) struct AccountState {
    pub(crate) wallet: SimWallet,
    pub(crate) usage: Vec<UsageRecord>,
    pub(crate) plans: Vec<SimPlan>,
    pub(crate) subscriptions: Vec<SimSubscription>,
    /// `DataExportEnabled`: usage is recorded only while on.
    pub(crate) data_export: bool,
    /// Servers ≥ 2026-05-13 list no plans until the admin confirms payment compliance.
    pub(crate) plans_listed: bool,
    /// How long a request takes to show up in `/api/data/*`.
    pub(crate) recording_lag_seconds: i64,
}

impl AccountState {
    /// The seeded account: a wallet that has paid for the seeded keys' use, and (for
    /// generations with subscriptions) two plans, one active and one expired subscription.
    pub(crate) fn seeded(
        user_id: i64,
        wallet_quota: i64,
        seeded_used_quota: i64,
        recording_lag_seconds: i64,
        now: i64,
    ) -> AccountState {
        let day = 86_400;
        let plans = vec![
            SimPlan {
                id: 1,
                title: "Pro monthly".into(),
                subtitle: "50 USD of quota, reset every month".into(),
                price_amount: 39.0,
                currency: "USD".into(),
                duration_unit: "month".into(),
                duration_value: 1,
                quota_reset_period: "monthly".into(),
                total_amount: 25_000_000,
            },
            SimPlan {
                id: 2,
                title: "Starter".into(),
                subtitle: String::new(),
                price_amount: 5.0,
                currency: "USD".into(),
                duration_unit: "day".into(),
                duration_value: 30,
                quota_reset_period: "never".into(),
                total_amount: 2_500_000,
            },
        ];
        let subscriptions = vec![
            SimSubscription {
                id: 11,
                plan_id: 1,
                amount_total: 25_000_000,
                amount_used: 6_250_000,
                start_time: now - 10 * day,
                end_time: now + 20 * day,
                status: "active".into(),
                source: "order".into(),
                last_reset_time: now - 10 * day,
                next_reset_time: now + 20 * day,
                upgrade_group: String::new(),
            },
            SimSubscription {
                id: 7,
                plan_id: 2,
                amount_total: 2_500_000,
                amount_used: 2_500_000,
                start_time: now - 80 * day,
                end_time: now - 50 * day,
                status: "expired".into(),
                source: "order".into(),
                last_reset_time: 0,
                next_reset_time: 0,
                upgrade_group: String::new(),
            },
        ];
        AccountState {
            wallet: SimWallet {
                user_id,
                username: format!("user{user_id}"),
                group: DEFAULT_USER_GROUP.into(),
                quota: wallet_quota,
                used_quota: seeded_used_quota,
                request_count: seeded_used_quota / 1_000,
            },
            usage: Vec::new(),
            plans,
            subscriptions,
            data_export: true,
            plans_listed: true,
            recording_lag_seconds,
        }
    }

    /// The wallet side of one admitted relay request (and its usage record while the data
    /// export is on). Refunds (negative quota) go back to the wallet and are not recorded: the
    /// usage tables hold requests.
    pub(crate) fn charge(&mut self, record: UsageRecord) {
        self.wallet.quota = self.wallet.quota.saturating_sub(record.quota);
        self.wallet.used_quota = self.wallet.used_quota.saturating_add(record.quota);
        if record.quota >= 0 {
            self.wallet.request_count += 1;
            if self.data_export {
                self.usage.push(record);
            }
        }
    }

    /// The records `/api/data/*` can see at `now`: flushed (older than the lag) and whose hourly
    /// bucket starts within `[start, end]` (`created_at >= ? AND created_at <= ?`).
    fn visible(&self, start: i64, end: i64, now: i64) -> impl Iterator<Item = &UsageRecord> {
        let lag = self.recording_lag_seconds;
        self.usage.iter().filter(move |record| {
            let bucket = hour_bucket(record.at);
            record.at + lag <= now && bucket >= start && bucket <= end
        })
    }
}

/// `t - t % 3600`, the bucket start of the hourly quota data.
pub fn hour_bucket(at: i64) -> i64 {
    at - at.rem_euclid(HOUR)
}

/// `GET /api/user/self`: new-api builds a map (keys sorted), one-api returns the user row in
/// struct order without password, access token and setting.
pub(crate) fn user_self(settings: &Settings, state: &AccountState) -> Answer {
    let wallet = &state.wallet;
    let body = json::success_with_data(512, |out| {
        if settings.generation == ServerGeneration::OneApi {
            out.extend_from_slice(b"{\"id\":");
            push_integer(out, wallet.user_id);
            out.extend_from_slice(b",\"username\":");
            push_string(out, &wallet.username);
            out.extend_from_slice(b",\"display_name\":");
            push_string(out, &wallet.username);
            out.extend_from_slice(b",\"role\":1,\"status\":1,\"email\":\"\",\"github_id\":\"\",\"wechat_id\":\"\",\"lark_id\":\"\",\"oidc_id\":\"\",\"quota\":");
            push_integer(out, wallet.quota);
            out.extend_from_slice(b",\"used_quota\":");
            push_integer(out, wallet.used_quota);
            out.extend_from_slice(b",\"request_count\":");
            push_integer(out, wallet.request_count);
            out.extend_from_slice(b",\"group\":");
            push_string(out, &wallet.group);
            out.extend_from_slice(b",\"aff_code\":\"\",\"inviter_id\":0}");
        } else {
            out.extend_from_slice(b"{\"aff_code\":\"Xk3q\",\"aff_count\":0,\"aff_history_quota\":0,\"aff_quota\":0,\"display_name\":");
            push_string(out, &wallet.username);
            out.extend_from_slice(b",\"group\":");
            push_string(out, &wallet.group);
            out.extend_from_slice(b",\"id\":");
            push_integer(out, wallet.user_id);
            out.extend_from_slice(b",\"permissions\":{\"sidebar_settings\":true},\"quota\":");
            push_integer(out, wallet.quota);
            out.extend_from_slice(b",\"request_count\":");
            push_integer(out, wallet.request_count);
            out.extend_from_slice(b",\"role\":1,\"setting\":");
            push_string(
                out,
                "{\"notify_type\":\"email\",\"quota_warning_threshold\":1000}",
            );
            out.extend_from_slice(b",\"status\":1,\"used_quota\":");
            push_integer(out, wallet.used_quota);
            out.extend_from_slice(b",\"username\":");
            push_string(out, &wallet.username);
            out.push(b'}');
        }
    });
    Answer::json(200, body)
}

/// `strconv.ParseInt(c.Query(name), 10, 64)`.
fn parse_timestamp(query: &Query, name: &str) -> Option<i64> {
    query.get(name).parse::<i64>().ok()
}

/// `GET /api/data/self` (`GetUserQuotaDates`): unparsable timestamps are 0, a window over 30
/// days is refused, rows are hourly buckets by model (and, on the newest servers, by group and
/// key too, with `id` 0).
pub(crate) fn hourly_usage(
    settings: &Settings,
    state: &AccountState,
    query: &Query,
    now: i64,
) -> Answer {
    let start = parse_timestamp(query, "start_timestamp").unwrap_or(0);
    let end = parse_timestamp(query, "end_timestamp").unwrap_or(0);
    if end - start > MAX_USAGE_WINDOW_SECONDS {
        return Answer::controller_error(MESSAGE_WINDOW_TOO_LONG);
    }
    let with_key_columns = settings.generation.has_flow_usage();
    // (bucket, model, group, token id) → (count, quota, tokens); group and token only when the
    // server has those columns.
    let mut buckets: std::collections::BTreeMap<HourlyKey, Sums> =
        std::collections::BTreeMap::new();
    for record in state.visible(start, end, now) {
        let (group, token_id) = if with_key_columns {
            (record.use_group.clone(), record.token_id)
        } else {
            (String::new(), 0)
        };
        let entry = buckets
            .entry((
                hour_bucket(record.at),
                record.model_name.clone(),
                group,
                token_id,
            ))
            .or_default();
        entry.add(record);
    }
    let wallet = &state.wallet;
    let body = json::success_with_data(buckets.len() * 200 + 8, |out| {
        out.push(b'[');
        for (index, ((bucket, model, group, token_id), sums)) in buckets.iter().enumerate() {
            let Sums {
                count,
                quota,
                tokens,
            } = sums;
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            push_integer(
                out,
                if with_key_columns {
                    0
                } else {
                    index as i64 + 1
                },
            );
            out.extend_from_slice(b",\"user_id\":");
            push_integer(out, wallet.user_id);
            out.extend_from_slice(b",\"username\":");
            push_string(out, &wallet.username);
            out.extend_from_slice(b",\"model_name\":");
            push_string(out, model);
            out.extend_from_slice(b",\"created_at\":");
            push_integer(out, *bucket);
            out.extend_from_slice(b",\"token_used\":");
            push_integer(out, *tokens);
            out.extend_from_slice(b",\"count\":");
            push_integer(out, *count);
            out.extend_from_slice(b",\"quota\":");
            push_integer(out, *quota);
            if with_key_columns {
                out.extend_from_slice(b",\"use_group\":");
                push_string(out, group);
                out.extend_from_slice(b",\"token_id\":");
                push_integer(out, *token_id);
                out.extend_from_slice(b",\"channel_id\":1,\"node_name\":\"\"");
            }
            out.push(b'}');
        }
        out.push(b']');
    });
    Answer::json(200, body)
}

/// `GET /api/data/flow/self` (`GetUserFlowData`): both timestamps required and ordered, the
/// window at most 30 days; rows summed over the window by key, group and model, ordered by
/// quota; rows with an empty `use_group` are left out.
pub(crate) fn flow_usage(state: &AccountState, query: &Query, now: i64) -> Answer {
    let Some(start) = parse_timestamp(query, "start_timestamp").filter(|start| *start > 0) else {
        return Answer::controller_error("invalid start_timestamp");
    };
    let Some(end) = parse_timestamp(query, "end_timestamp").filter(|end| *end > 0) else {
        return Answer::controller_error("invalid end_timestamp");
    };
    if end < start {
        return Answer::controller_error("invalid time range");
    }
    if end - start > MAX_USAGE_WINDOW_SECONDS {
        return Answer::controller_error(MESSAGE_WINDOW_TOO_LONG);
    }
    let mut rows: std::collections::BTreeMap<FlowKey, (String, Sums)> =
        std::collections::BTreeMap::new();
    for record in state.visible(start, end, now) {
        if record.use_group.is_empty() {
            continue;
        }
        let entry = rows
            .entry((
                record.token_id,
                record.use_group.clone(),
                record.model_name.clone(),
            ))
            .or_insert_with(|| (record.token_name.clone(), Sums::default()));
        entry.1.add(record);
    }
    let mut ordered: Vec<_> = rows.into_iter().collect();
    ordered.sort_by(|left, right| {
        right
            .1
             .1
            .quota
            .cmp(&left.1 .1.quota)
            .then(left.0.cmp(&right.0))
    });
    let body = json::success_with_data(ordered.len() * 160 + 8, |out| {
        out.push(b'[');
        for (index, ((token_id, group, model), (token_name, sums))) in ordered.iter().enumerate() {
            let Sums {
                count,
                quota,
                tokens,
            } = sums;
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"token_id\":");
            push_integer(out, *token_id);
            out.extend_from_slice(b",\"token_name\":");
            push_string(out, token_name);
            out.extend_from_slice(b",\"use_group\":");
            push_string(out, group);
            out.extend_from_slice(b",\"model_name\":");
            push_string(out, model);
            out.extend_from_slice(b",\"token_used\":");
            push_integer(out, *tokens);
            out.extend_from_slice(b",\"count\":");
            push_integer(out, *count);
            out.extend_from_slice(b",\"quota\":");
            push_integer(out, *quota);
            out.push(b'}');
        }
        out.push(b']');
    });
    Answer::json(200, body)
}

fn push_subscription(out: &mut Vec<u8>, user_id: i64, subscription: &SimSubscription) {
    out.extend_from_slice(b"{\"subscription\":{\"id\":");
    push_integer(out, subscription.id);
    out.extend_from_slice(b",\"user_id\":");
    push_integer(out, user_id);
    out.extend_from_slice(b",\"plan_id\":");
    push_integer(out, subscription.plan_id);
    out.extend_from_slice(b",\"amount_total\":");
    push_integer(out, subscription.amount_total);
    out.extend_from_slice(b",\"amount_used\":");
    push_integer(out, subscription.amount_used);
    out.extend_from_slice(b",\"start_time\":");
    push_integer(out, subscription.start_time);
    out.extend_from_slice(b",\"end_time\":");
    push_integer(out, subscription.end_time);
    out.extend_from_slice(b",\"status\":");
    push_string(out, &subscription.status);
    out.extend_from_slice(b",\"source\":");
    push_string(out, &subscription.source);
    out.extend_from_slice(b",\"last_reset_time\":");
    push_integer(out, subscription.last_reset_time);
    out.extend_from_slice(b",\"next_reset_time\":");
    push_integer(out, subscription.next_reset_time);
    out.extend_from_slice(b",\"upgrade_group\":");
    push_string(out, &subscription.upgrade_group);
    out.extend_from_slice(b",\"created_at\":");
    push_integer(out, subscription.start_time);
    out.extend_from_slice(b",\"updated_at\":");
    push_integer(out, subscription.start_time);
    out.extend_from_slice(b"}}");
}

/// `GET /api/subscription/self`: `{all_subscriptions, billing_preference, subscriptions}` (a
/// `gin.H`, keys sorted); `subscriptions` holds the active ones only.
pub(crate) fn subscription_self(state: &AccountState, now: i64) -> Answer {
    let user_id = state.wallet.user_id;
    let body = json::success_with_data(state.subscriptions.len() * 600 + 96, |out| {
        out.extend_from_slice(b"{\"all_subscriptions\":[");
        for (index, subscription) in state.subscriptions.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            push_subscription(out, user_id, subscription);
        }
        out.extend_from_slice(
            b"],\"billing_preference\":\"subscription_first\",\"subscriptions\":[",
        );
        let active = state
            .subscriptions
            .iter()
            .filter(|subscription| subscription.status == "active" && subscription.end_time > now);
        for (index, subscription) in active.enumerate() {
            if index > 0 {
                out.push(b',');
            }
            push_subscription(out, user_id, subscription);
        }
        out.extend_from_slice(b"]}");
    });
    Answer::json(200, body)
}

/// `GET /api/subscription/plans`: `[{plan: {...}}]`, or `[]` while the plans are not listed.
pub(crate) fn subscription_plans(state: &AccountState) -> Answer {
    let plans: &[SimPlan] = if state.plans_listed {
        &state.plans
    } else {
        &[]
    };
    let body = json::success_with_data(plans.len() * 400 + 8, |out| {
        out.push(b'[');
        for (index, plan) in plans.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"plan\":{\"id\":");
            push_integer(out, plan.id);
            out.extend_from_slice(b",\"title\":");
            push_string(out, &plan.title);
            out.extend_from_slice(b",\"subtitle\":");
            push_string(out, &plan.subtitle);
            out.extend_from_slice(b",\"price_amount\":");
            out.extend_from_slice(json::go_float(plan.price_amount).as_bytes());
            out.extend_from_slice(b",\"currency\":");
            push_string(out, &plan.currency);
            out.extend_from_slice(b",\"duration_unit\":");
            push_string(out, &plan.duration_unit);
            out.extend_from_slice(b",\"duration_value\":");
            push_integer(out, plan.duration_value);
            out.extend_from_slice(b",\"quota_reset_period\":");
            push_string(out, &plan.quota_reset_period);
            out.extend_from_slice(b",\"total_amount\":");
            push_integer(out, plan.total_amount);
            out.extend_from_slice(b",\"enabled\":true}}");
        }
        out.push(b']');
    });
    Answer::json(200, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(records: Vec<UsageRecord>, lag: i64) -> AccountState {
        let mut state = AccountState::seeded(5, 1_000, 0, lag, 1_000_000);
        state.usage = records;
        state
    }

    fn record(at: i64, token_id: i64, group: &str, model: &str, quota: i64) -> UsageRecord {
        UsageRecord {
            at,
            token_id,
            token_name: format!("k{token_id}"),
            use_group: group.into(),
            model_name: model.into(),
            quota,
            tokens: quota / 10,
        }
    }

    fn body(answer: &Answer) -> serde_json::Value {
        serde_json::from_slice(&answer.body).unwrap()
    }

    #[test]
    fn flow_checks_timestamps_and_the_thirty_day_window() {
        let state = state_with(Vec::new(), 0);
        let message = |raw: &str| {
            body(&flow_usage(&state, &Query::parse(Some(raw)), 10))["message"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(message("end_timestamp=5"), "invalid start_timestamp");
        assert_eq!(
            message("start_timestamp=x&end_timestamp=5"),
            "invalid start_timestamp"
        );
        assert_eq!(message("start_timestamp=5"), "invalid end_timestamp");
        assert_eq!(
            message("start_timestamp=9&end_timestamp=5"),
            "invalid time range"
        );
        assert_eq!(
            message("start_timestamp=1&end_timestamp=2592002"),
            MESSAGE_WINDOW_TOO_LONG
        );
        let ok = body(&flow_usage(
            &state,
            &Query::parse(Some("start_timestamp=1&end_timestamp=2592001")),
            10,
        ));
        assert_eq!(ok["success"], true);
    }

    #[test]
    fn flow_groups_by_key_group_and_model_and_drops_empty_groups_and_unflushed_rows() {
        let state = state_with(
            vec![
                record(7_200, 1, "default", "gpt", 10),
                record(7_300, 1, "default", "gpt", 5),
                record(7_300, 1, "vip", "gpt", 7),
                record(7_400, 2, "", "gpt", 99),
                record(9_000, 2, "default", "claude", 50),
            ],
            300,
        );
        let rows = body(&flow_usage(
            &state,
            &Query::parse(Some("start_timestamp=3600&end_timestamp=9100")),
            9_100,
        ));
        let rows = rows["data"].as_array().unwrap();
        // The 9000 request is not flushed yet (lag 300), the empty group is left out.
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0]["quota"], 15);
        assert_eq!(rows[0]["count"], 2);
        assert_eq!(rows[1]["use_group"], "vip");
    }

    #[test]
    fn hourly_buckets_start_on_the_hour_and_older_servers_have_no_key_columns() {
        let records = vec![
            record(3_601, 1, "default", "gpt", 10),
            record(7_199, 2, "vip", "gpt", 5),
            record(7_200, 1, "default", "gpt", 1),
        ];
        let mut state = state_with(records, 0);
        state.wallet.user_id = 5;
        let settings = Settings::for_tests(ServerGeneration::NewApiBeforeFlow);
        let rows = body(&hourly_usage(
            &settings,
            &state,
            &Query::parse(Some("start_timestamp=0&end_timestamp=9000")),
            9_000,
        ));
        let rows = rows["data"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["created_at"], 3_600);
        assert_eq!(rows[0]["quota"], 15);
        assert!(rows[0].get("token_id").is_none());
        let too_long = body(&hourly_usage(
            &settings,
            &state,
            &Query::parse(Some("start_timestamp=0&end_timestamp=2592001")),
            9_000,
        ));
        assert_eq!(too_long["message"], MESSAGE_WINDOW_TOO_LONG);
    }
}
