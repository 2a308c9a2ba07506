//! The validated policy configuration: rules, their selectors and conditions, and the
//! `[policy]` settings. Pure data plus the predicates that decide whether a rule applies to a
//! key at a given `now`; built only by `config` validation.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::{editable_changes, KeyEdit, KeyRecord};
use crate::snapshot::{KeyState, KeyStatus};

/// Server status codes the actions write or look for.
pub(crate) const STATUS_ENABLED: i64 = 1;
pub(crate) const STATUS_DISABLED: i64 = 2;
pub(crate) const STATUS_EXHAUSTED: i64 = 4;

/// Where the audit log and the grant ledger live when the config does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cometapi-keymon";
/// Twenty writes per account per poll covers a nightly restore of a team's keys; a plan larger
/// than that is more likely a mistake (a rule too broad, a listing gone odd) than intended.
pub const DEFAULT_MAX_ACTIONS_PER_POLL: u32 = 20;
/// After the daemon acted on a key (or tried to), the same unscheduled rule leaves that key
/// alone for a day: a human who re-enabled a key gets a working day before the rule flips it
/// back, and a failing write is retried daily, not every poll.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(24 * 3600);
/// A complete listing with more than 20% fewer keys than the previous one (and at least
/// `KEY_COUNT_DROP_MIN_KEYS` fewer) holds enforcement for that poll: a half-empty listing must
/// not look like "keys gone". A real mass deletion passes on the next poll, which compares with
/// this one.
pub const DEFAULT_MAX_KEY_COUNT_DROP: f64 = 0.2;
/// Small accounts lose a key or two legitimately; a drop of fewer keys than this never holds.
pub const KEY_COUNT_DROP_MIN_KEYS: usize = 5;
/// new-api's `maxTokenQuota`: 1e9 × 500 000 quota units.
pub const MAX_TOP_UP_QUOTA: i64 = 500_000_000_000_000;

/// `[policy]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub dry_run: bool,
    pub state_dir: PathBuf,
    /// At least 1.
    pub max_actions_per_poll: u32,
    pub protected_keys: Vec<ProtectedKey>,
    pub cooldown: Duration,
    /// In (0, 1].
    pub max_key_count_drop: f64,
    /// Names unique.
    pub rules: Vec<Rule>,
}

impl PolicyConfig {
    pub fn is_protected(&self, account: &str, key_id: i64) -> bool {
        self.protected_keys
            .iter()
            .any(|protected| protected.account == account && protected.key_id == key_id)
    }
}

/// `"account:key_id"` of `protected_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedKey {
    pub account: String,
    pub key_id: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Disable,
    Enable,
    TopUp,
}

impl ActionKind {
    /// The `action` label and config spelling.
    pub fn label(self) -> &'static str {
        match self {
            ActionKind::Disable => "disable",
            ActionKind::Enable => "enable",
            ActionKind::TopUp => "top_up",
        }
    }

    pub fn parse(text: &str) -> Option<ActionKind> {
        match text {
            "disable" => Some(ActionKind::Disable),
            "enable" => Some(ActionKind::Enable),
            "top_up" => Some(ActionKind::TopUp),
            _ => None,
        }
    }
}

/// `top_up.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopUp {
    /// The remaining quota to set; a top-up only ever raises it.
    pub to: i64,
    /// Also re-enable a key the server has marked exhausted (status 4).
    pub enable: bool,
}

/// One `[[policy.rules]]` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub action: ActionKind,
    pub selector: Selector,
    pub conditions: Conditions,
    /// Present exactly when `action` is `TopUp`.
    pub top_up: Option<TopUp>,
    /// A validated 6-field cron expression (UTC): the rule acts at most once per period.
    pub schedule: Option<String>,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Rule) -> bool {
        self.name == other.name
            && self.action == other.action
            && self.selector == other.selector
            && self.conditions == other.conditions
            && self.top_up == other.top_up
            && self.schedule == other.schedule
    }
}

/// Which keys a rule looks at: every selector given must match.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub accounts: Option<Vec<String>>,
    pub key_ids: Option<Vec<i64>>,
    pub name_matches: Option<regex::Regex>,
    pub groups: Option<Vec<String>>,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Selector) -> bool {
        self.accounts == other.accounts
            && self.key_ids == other.key_ids
            && self.groups == other.groups
            && self.name_matches.as_ref().map(regex::Regex::as_str)
                == other.name_matches.as_ref().map(regex::Regex::as_str)
    }
}

/// When a rule acts: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// `Some(true)`: past its expiry (whatever the status says); `Some(false)`: not past it.
    pub expired: Option<bool>,
    /// Expires after now and no later than now + this.
    pub expires_within: Option<Duration>,
    /// Limited keys with `remain_quota` below this.
    pub remaining_quota_below: Option<i64>,
    /// Limited keys with remain / (remain + used) below this (negatives count as 0).
    pub remaining_fraction_below: Option<f64>,
    /// The account's wallet (`/api/user/self` `quota`, as of the poll) is below this. Never
    /// holds for an account whose server has no wallet route.
    pub account_quota_below: Option<i64>,
    /// Last access (or, never used, creation) longer ago than this.
    pub unused_for: Option<Duration>,
    /// The server status is one of these.
    pub status: Option<Vec<KeyStatus>>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }
}

impl Rule {
    pub fn selects(&self, account: &str, key: &KeyState) -> bool {
        let selector = &self.selector;
        selector
            .accounts
            .as_ref()
            .is_none_or(|accounts| accounts.iter().any(|name| name == account))
            && selector
                .key_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&key.id))
            && selector
                .name_matches
                .as_ref()
                .is_none_or(|pattern| pattern.is_match(&key.name))
            && selector
                .groups
                .as_ref()
                .is_none_or(|groups| groups.contains(&key.group))
    }

    /// The account-wide conditions hold for an account whose wallet has `wallet_quota` left
    /// (`None`: the server reports no wallet).
    pub fn account_conditions_hold(&self, wallet_quota: Option<i64>) -> bool {
        self.conditions
            .account_quota_below
            .is_none_or(|below| wallet_quota.is_some_and(|quota| quota < below))
    }

    /// Every per-key condition holds at `now`.
    pub fn conditions_hold(&self, key: &KeyState, now: i64) -> bool {
        let conditions = &self.conditions;
        let limited = !key.unlimited_quota;
        conditions
            .expired
            .is_none_or(|expired| key.is_expired_at(now) == expired)
            && conditions.expires_within.is_none_or(|within| {
                !key.never_expires()
                    && key.expired_time > now
                    && key.expired_time <= now.saturating_add(seconds(within))
            })
            && conditions
                .remaining_quota_below
                .is_none_or(|below| limited && key.remain_quota < below)
            && conditions
                .remaining_fraction_below
                .is_none_or(|below| limited && remaining_fraction(key) < below)
            && conditions.unused_for.is_none_or(|unused| {
                let last_use = if key.accessed_time > 0 {
                    key.accessed_time
                } else {
                    key.created_time
                };
                last_use < now.saturating_sub(seconds(unused))
            })
            && conditions
                .status
                .as_ref()
                .is_none_or(|statuses| statuses.contains(&key.status()))
    }

    /// The action would change the key: disable only enabled keys, enable only keys not
    /// enabled, top up only limited keys below the target.
    pub fn action_changes(&self, key: &KeyState) -> bool {
        match self.action {
            ActionKind::Disable => key.status() == KeyStatus::Enabled,
            ActionKind::Enable => key.status() != KeyStatus::Enabled,
            ActionKind::TopUp => {
                let top_up = self.top_up.expect("a top_up rule has top_up settings");
                // With `enable`, a key still marked exhausted although its quota is back (a
                // status write that failed after the quota write) is re-enabled too.
                !key.unlimited_quota
                    && (key.remain_quota < top_up.to
                        || (top_up.enable && key.status() == KeyStatus::Exhausted))
            }
        }
    }

    /// Selected, every condition holds, and the action would change something.
    pub fn applies_to(&self, account: &str, key: &KeyState, now: i64) -> bool {
        self.selects(account, key) && self.conditions_hold(key, now) && self.action_changes(key)
    }

    /// The record the action leaves, from `before` (a fresh read, or a snapshot key as a
    /// record): disable/enable set the status; a top-up raises `remain_quota` to `to` (never
    /// lowers it) and, with `enable`, sets a key marked exhausted back to enabled. The one
    /// statement of what an action changes: the engine's writes and `plan` derive from it.
    pub fn expected_after(&self, before: &KeyRecord) -> KeyRecord {
        let mut after = before.clone();
        match self.action {
            ActionKind::Disable => after.status = STATUS_DISABLED,
            ActionKind::Enable => after.status = STATUS_ENABLED,
            ActionKind::TopUp => {
                let top_up = self.top_up.expect("a top_up rule has top_up settings");
                if before.remain_quota < top_up.to {
                    after = KeyEdit {
                        remain_quota: Some(top_up.to),
                        ..KeyEdit::default()
                    }
                    .apply(before);
                }
                if top_up.enable && before.status == STATUS_EXHAUSTED {
                    after.status = STATUS_ENABLED;
                }
            }
        }
        after
    }

    /// What the action would change on `key`, field by field (before, after), as the
    /// snapshot shows it: `status` by name, `remain_quota` in quota units.
    pub fn planned_change(&self, key: &KeyState) -> Vec<(&'static str, String, String)> {
        let before = KeyRecord::from_state(key);
        let shown = |field: &str, value: &serde_json::Value| match (field, value.as_i64()) {
            ("status", Some(code)) => KeyStatus::from_code(code).label().to_owned(),
            _ => value.to_string(),
        };
        editable_changes(&before, &self.expected_after(&before))
            .into_iter()
            .map(|change| {
                (
                    change.field,
                    shown(change.field, &change.before),
                    shown(change.field, &change.after),
                )
            })
            .collect()
    }

    /// Which conditions the rule checks, for `plan` and log lines ("expired, status=enabled").
    pub fn describe_conditions(&self) -> String {
        let conditions = &self.conditions;
        let mut parts = Vec::new();
        if let Some(expired) = conditions.expired {
            parts.push(if expired { "expired" } else { "not expired" }.to_owned());
        }
        if let Some(within) = conditions.expires_within {
            parts.push(format!(
                "expires within {}",
                humantime::format_duration(within)
            ));
        }
        if let Some(below) = conditions.remaining_quota_below {
            parts.push(format!("remaining < {below}"));
        }
        if let Some(below) = conditions.remaining_fraction_below {
            parts.push(format!("remaining fraction < {below}"));
        }
        if let Some(below) = conditions.account_quota_below {
            parts.push(format!("wallet < {below}"));
        }
        if let Some(unused) = conditions.unused_for {
            parts.push(format!("unused for {}", humantime::format_duration(unused)));
        }
        if let Some(statuses) = &conditions.status {
            let names: Vec<&str> = statuses.iter().map(|status| status.label()).collect();
            parts.push(format!("status in [{}]", names.join(",")));
        }
        if let Some(top_up) = self.top_up {
            parts.push(if top_up.enable {
                format!("remaining < {} or marked exhausted", top_up.to)
            } else {
                format!("remaining < {}", top_up.to)
            });
        }
        if parts.is_empty() {
            "every selected key".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// remain / (remain + used), with negative values counted as 0; 0 when both are 0.
pub fn remaining_fraction(key: &KeyState) -> f64 {
    let remain = key.remain_quota.max(0) as f64;
    let used = key.used_quota.max(0) as f64;
    if remain + used <= 0.0 {
        0.0
    } else {
        remain / (remain + used)
    }
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn rule(action: ActionKind, conditions: Conditions) -> Rule {
        Rule {
            name: "r".into(),
            action,
            selector: Selector::default(),
            conditions,
            top_up: (action == ActionKind::TopUp).then_some(TopUp {
                to: 1_000,
                enable: false,
            }),
            schedule: None,
        }
    }

    #[test]
    fn expired_uses_the_expiry_time_not_the_lazy_status() {
        let rule = rule(
            ActionKind::Disable,
            Conditions {
                expired: Some(true),
                ..Conditions::default()
            },
        );
        let expired_but_enabled = KeyState {
            expired_time: NOW - DAY,
            ..KeyState::for_tests(1)
        };
        assert!(rule.applies_to("a", &expired_but_enabled, NOW));
        let never_expires = KeyState::for_tests(2);
        assert!(!rule.applies_to("a", &never_expires, NOW));
        let already_disabled = KeyState {
            status_code: 2,
            ..expired_but_enabled.clone()
        };
        assert!(
            !rule.applies_to("a", &already_disabled, NOW),
            "nothing to change"
        );
    }

    #[test]
    fn expires_within_excludes_keys_already_expired_and_far_away() {
        let rule = rule(
            ActionKind::Disable,
            Conditions {
                expires_within: Some(Duration::from_secs(3 * DAY as u64)),
                ..Conditions::default()
            },
        );
        let at = |expired_time| KeyState {
            expired_time,
            ..KeyState::for_tests(1)
        };
        assert!(rule.conditions_hold(&at(NOW + 2 * DAY), NOW));
        assert!(rule.conditions_hold(&at(NOW + 3 * DAY), NOW));
        assert!(!rule.conditions_hold(&at(NOW + 3 * DAY + 1), NOW));
        assert!(!rule.conditions_hold(&at(NOW - 1), NOW));
        assert!(!rule.conditions_hold(&at(-1), NOW));
    }

    #[test]
    fn quota_conditions_apply_to_limited_keys_only() {
        let fraction = rule(
            ActionKind::Disable,
            Conditions {
                remaining_fraction_below: Some(0.1),
                ..Conditions::default()
            },
        );
        let key = |remain, used, unlimited| KeyState {
            remain_quota: remain,
            used_quota: used,
            unlimited_quota: unlimited,
            ..KeyState::for_tests(1)
        };
        assert!(fraction.conditions_hold(&key(9, 91, false), NOW));
        assert!(!fraction.conditions_hold(&key(10, 90, false), NOW));
        assert!(fraction.conditions_hold(&key(-5, 100, false), NOW));
        assert!(!fraction.conditions_hold(&key(-5, 100, true), NOW));
        let below = rule(
            ActionKind::Disable,
            Conditions {
                remaining_quota_below: Some(100),
                ..Conditions::default()
            },
        );
        assert!(below.conditions_hold(&key(99, 0, false), NOW));
        assert!(!below.conditions_hold(&key(100, 0, false), NOW));
        assert!(!below.conditions_hold(&key(0, 0, true), NOW));
    }

    #[test]
    fn unused_for_falls_back_to_creation_when_never_accessed() {
        let rule = rule(
            ActionKind::Disable,
            Conditions {
                unused_for: Some(Duration::from_secs(30 * DAY as u64)),
                ..Conditions::default()
            },
        );
        let key = |created, accessed| KeyState {
            created_time: created,
            accessed_time: accessed,
            ..KeyState::for_tests(1)
        };
        assert!(rule.conditions_hold(&key(NOW - 90 * DAY, NOW - 31 * DAY), NOW));
        assert!(!rule.conditions_hold(&key(NOW - 90 * DAY, NOW - 29 * DAY), NOW));
        assert!(rule.conditions_hold(&key(NOW - 31 * DAY, 0), NOW));
        assert!(!rule.conditions_hold(&key(NOW - 29 * DAY, 0), NOW));
    }

    #[test]
    fn selectors_must_all_match() {
        let mut rule = rule(ActionKind::TopUp, Conditions::default());
        rule.selector = Selector {
            accounts: Some(vec!["main".into()]),
            key_ids: None,
            name_matches: Some(regex::Regex::new("^team-").unwrap()),
            groups: Some(vec!["default".into()]),
        };
        let key = KeyState {
            name: "team-a".into(),
            group: "default".into(),
            ..KeyState::for_tests(1)
        };
        assert!(rule.selects("main", &key));
        assert!(!rule.selects("other", &key));
        assert!(!rule.selects(
            "main",
            &KeyState {
                group: "vip".into(),
                ..key.clone()
            }
        ));
        assert!(!rule.selects(
            "main",
            &KeyState {
                name: "ops-team-a".into(),
                ..key.clone()
            }
        ));
    }

    #[test]
    fn top_up_only_raises_limited_keys() {
        let rule = rule(ActionKind::TopUp, Conditions::default());
        let key = |remain, unlimited| KeyState {
            remain_quota: remain,
            unlimited_quota: unlimited,
            ..KeyState::for_tests(1)
        };
        assert!(rule.action_changes(&key(999, false)));
        assert!(rule.action_changes(&key(-20, false)));
        assert!(!rule.action_changes(&key(1_000, false)));
        assert!(!rule.action_changes(&key(5_000, false)));
        assert!(!rule.action_changes(&key(0, true)));
        let exhausted_with_quota = KeyState {
            status_code: 4,
            ..key(5_000, false)
        };
        assert!(!rule.action_changes(&exhausted_with_quota), "enable is off");
        let mut reviving = rule.clone();
        reviving.top_up = Some(TopUp {
            to: 1_000,
            enable: true,
        });
        assert!(reviving.action_changes(&exhausted_with_quota));
        assert_eq!(
            reviving.planned_change(&exhausted_with_quota),
            [("status", "exhausted".to_owned(), "enabled".to_owned())]
        );
    }
}
