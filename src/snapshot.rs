//! The pure domain model: what one complete poll learned about an account's keys.
//!
//! No I/O and no clock: everything that depends on time takes `now` (unix seconds). A `Snapshot`
//! is built once from a complete listing, never mutated, and shared as `Arc<Snapshot>`.

use crate::account::AccountMoney;

/// A key's status as the server stores it. The server flips keys to `Expired`/`Exhausted`
/// lazily (only when a request uses them, and never when it runs Redis), so this is often
/// stale; `KeyState::is_usable_at` is the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Enabled,
    Disabled,
    Expired,
    Exhausted,
    /// Any other code: forks add states, and `status_only` updates store any integer.
    Unknown,
}

impl KeyStatus {
    pub const ALL: [KeyStatus; 5] = [
        KeyStatus::Enabled,
        KeyStatus::Disabled,
        KeyStatus::Expired,
        KeyStatus::Exhausted,
        KeyStatus::Unknown,
    ];

    pub fn from_code(code: i64) -> KeyStatus {
        match code {
            1 => KeyStatus::Enabled,
            2 => KeyStatus::Disabled,
            3 => KeyStatus::Expired,
            4 => KeyStatus::Exhausted,
            _ => KeyStatus::Unknown,
        }
    }

    /// The `status` label value.
    pub fn label(self) -> &'static str {
        match self {
            KeyStatus::Enabled => "enabled",
            KeyStatus::Disabled => "disabled",
            KeyStatus::Expired => "expired",
            KeyStatus::Exhausted => "exhausted",
            KeyStatus::Unknown => "unknown",
        }
    }

    pub fn index(self) -> usize {
        match self {
            KeyStatus::Enabled => 0,
            KeyStatus::Disabled => 1,
            KeyStatus::Expired => 2,
            KeyStatus::Exhausted => 3,
            KeyStatus::Unknown => 4,
        }
    }
}

/// One key as last seen. The key string itself is never held.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    pub id: i64,
    pub name: String,
    pub group: String,
    /// The raw server status code (see `status()`).
    pub status_code: i64,
    pub created_time: i64,
    /// 0 when the server never recorded an access.
    pub accessed_time: i64,
    /// Unix seconds; -1 means never.
    pub expired_time: i64,
    /// Meaningless for unlimited keys (the server still debits them, so it drifts negative).
    pub remain_quota: i64,
    pub used_quota: i64,
    pub unlimited_quota: bool,
    pub ip_restricted: bool,
    pub model_restricted: bool,
}

impl KeyState {
    pub fn status(&self) -> KeyStatus {
        KeyStatus::from_code(self.status_code)
    }

    pub fn never_expires(&self) -> bool {
        self.expired_time == -1
    }

    /// Past its expiry, by the server's own test (`expired_time != -1 && expired_time < now`),
    /// whatever the stored status says.
    pub fn is_expired_at(&self, now: i64) -> bool {
        !self.never_expires() && self.expired_time < now
    }

    /// Enabled, not past its expiry, and unlimited or with quota left.
    pub fn is_usable_at(&self, now: i64) -> bool {
        self.status() == KeyStatus::Enabled
            && !self.is_expired_at(now)
            && (self.unlimited_quota || self.remain_quota > 0)
    }
}

#[cfg(test)]
impl KeyState {
    /// A plain enabled, limited, never-expiring key for unit tests; override fields with
    /// struct update syntax.
    pub(crate) fn for_tests(id: i64) -> KeyState {
        KeyState {
            id,
            name: format!("key-{id}"),
            group: String::new(),
            status_code: 1,
            created_time: 100,
            accessed_time: 0,
            expired_time: -1,
            remain_quota: 10,
            used_quota: 0,
            unlimited_quota: false,
            ip_restricted: false,
            model_restricted: false,
        }
    }
}

/// Everything one complete poll of one account produced.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub account: String,
    /// Ascending by id, ids unique.
    pub keys: Vec<KeyState>,
    /// Quota units per US dollar, from `GET /api/status`.
    pub quota_per_unit: f64,
    /// When the poll completed (unix seconds); derived facts such as `usable` are as of then.
    pub completed_at: i64,
    /// The wallet, today's spend and the subscriptions read with this poll.
    pub money: AccountMoney,
}

impl Snapshot {
    /// Builds a snapshot; sorts `keys` by id.
    pub fn new(
        account: impl Into<String>,
        mut keys: Vec<KeyState>,
        quota_per_unit: f64,
        completed_at: i64,
    ) -> Snapshot {
        keys.sort_unstable_by_key(|key| key.id);
        Snapshot {
            account: account.into(),
            keys,
            quota_per_unit,
            completed_at,
            money: AccountMoney::default(),
        }
    }

    /// The same snapshot with the account's money.
    pub fn with_money(mut self, money: AccountMoney) -> Snapshot {
        self.money = money;
        self
    }

    /// Number of keys per server status, indexed like `KeyStatus::ALL`.
    pub fn count_by_status(&self) -> [u64; 5] {
        let mut counts = [0u64; 5];
        for key in &self.keys {
            counts[key.status().index()] += 1;
        }
        counts
    }

    pub fn usable_count(&self) -> usize {
        self.keys
            .iter()
            .filter(|key| key.is_usable_at(self.completed_at))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyState {
        KeyState {
            name: "k".into(),
            ..KeyState::for_tests(1)
        }
    }

    #[test]
    fn usable_needs_enabled_unexpired_and_quota() {
        let now = 1_000;
        assert!(key().is_usable_at(now));
        assert!(!KeyState {
            status_code: 2,
            ..key()
        }
        .is_usable_at(now));
        assert!(!KeyState {
            status_code: 7,
            ..key()
        }
        .is_usable_at(now));
        assert!(
            !KeyState {
                expired_time: 999,
                ..key()
            }
            .is_usable_at(now),
            "expired but still enabled"
        );
        assert!(
            KeyState {
                expired_time: 1_000,
                ..key()
            }
            .is_usable_at(now),
            "the server expires strictly after"
        );
        assert!(
            !KeyState {
                expired_time: 0,
                ..key()
            }
            .is_usable_at(now),
            "0 means expired at the epoch"
        );
        assert!(!KeyState {
            remain_quota: 0,
            ..key()
        }
        .is_usable_at(now));
        assert!(
            !KeyState {
                remain_quota: -5,
                ..key()
            }
            .is_usable_at(now),
            "overdrawn"
        );
        assert!(KeyState {
            remain_quota: -5,
            unlimited_quota: true,
            ..key()
        }
        .is_usable_at(now));
    }

    #[test]
    fn status_codes_map_to_the_five_states() {
        let labels: Vec<_> = [1, 2, 3, 4, 0, 99]
            .into_iter()
            .map(|code| KeyStatus::from_code(code).label())
            .collect();
        assert_eq!(
            labels,
            [
                "enabled",
                "disabled",
                "expired",
                "exhausted",
                "unknown",
                "unknown"
            ]
        );
    }

    #[test]
    fn snapshot_sorts_and_counts() {
        let snapshot = Snapshot::new(
            "main",
            vec![
                KeyState {
                    id: 9,
                    status_code: 4,
                    ..key()
                },
                KeyState { id: 3, ..key() },
                KeyState {
                    id: 5,
                    status_code: 0,
                    ..key()
                },
            ],
            500_000.0,
            1_000,
        );
        assert_eq!(
            snapshot.keys.iter().map(|key| key.id).collect::<Vec<_>>(),
            [3, 5, 9]
        );
        assert_eq!(snapshot.count_by_status(), [1, 0, 0, 1, 1]);
        assert_eq!(snapshot.usable_count(), 1);
    }
}
