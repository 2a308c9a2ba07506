//! The server-side key record (`model.Token` of new-api) as the simulator stores it, and the
//! key masking of new-api ≥ 2026-03-08 (`MaskTokenKey`). `Debug` prints the masked key only, so a
//! record can be logged or shown in a failing assertion without leaking the secret.

use std::fmt;

/// Status value of an enabled key (`common.TokenStatusEnabled`).
pub const STATUS_ENABLED: i64 = 1;
/// Status value of a key disabled by its owner.
pub const STATUS_DISABLED: i64 = 2;
/// Status value written lazily when an expired key is used.
pub const STATUS_EXPIRED: i64 = 3;
/// Status value written lazily when an exhausted key is used.
pub const STATUS_EXHAUSTED: i64 = 4;

/// One key record, fields in the order of `model/token.go` (which is also the JSON order).
///
/// `key` is the full 48-character key without `sk-`. `Debug` masks it.
#[derive(Clone, PartialEq)]
pub struct SimToken {
    pub id: i64,
    pub user_id: i64,
    pub key: String,
    pub status: i64,
    pub name: String,
    pub created_time: i64,
    pub accessed_time: i64,
    pub expired_time: i64,
    pub remain_quota: i64,
    pub unlimited_quota: bool,
    pub model_limits_enabled: bool,
    pub model_limits: String,
    pub allow_ips: Option<String>,
    pub used_quota: i64,
    pub group: String,
    pub cross_group_retry: bool,
}

impl Default for SimToken {
    /// The values a row gets from the database defaults when a field is left at its zero value:
    /// status 1, never expires (-1), `allow_ips` `""`. Everything else is zero or empty, so a
    /// default record is a limited key with no quota (the server would call it exhausted).
    fn default() -> SimToken {
        SimToken {
            id: 0,
            user_id: 0,
            key: String::new(),
            status: STATUS_ENABLED,
            name: String::new(),
            created_time: 0,
            accessed_time: 0,
            expired_time: -1,
            remain_quota: 0,
            unlimited_quota: false,
            model_limits_enabled: false,
            model_limits: String::new(),
            allow_ips: Some(String::new()),
            used_quota: 0,
            group: String::new(),
            cross_group_retry: false,
        }
    }
}

impl fmt::Debug for SimToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimToken")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("key", &mask_token_key(&self.key))
            .field("status", &self.status)
            .field("name", &self.name)
            .field("created_time", &self.created_time)
            .field("accessed_time", &self.accessed_time)
            .field("expired_time", &self.expired_time)
            .field("remain_quota", &self.remain_quota)
            .field("unlimited_quota", &self.unlimited_quota)
            .field("model_limits_enabled", &self.model_limits_enabled)
            .field("model_limits", &self.model_limits)
            .field("allow_ips", &self.allow_ips)
            .field("used_quota", &self.used_quota)
            .field("group", &self.group)
            .field("cross_group_retry", &self.cross_group_retry)
            .finish()
    }
}

impl SimToken {
    /// `expired_time != -1 && expired_time < now`, the server's expiry test.
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expired_time != -1 && self.expired_time < now
    }
}

/// `MaskTokenKey` of new-api (byte based, like Go): empty stays empty, up to 4 bytes become all
/// `*`, up to 8 bytes keep two bytes at each end around `****`, longer keys keep four bytes at
/// each end around ten `*` (18 characters for a 48-character key).
pub fn mask_token_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let length = bytes.len();
    if length == 0 {
        return String::new();
    }
    if length <= 4 {
        return "*".repeat(length);
    }
    let (keep, stars) = if length <= 8 { (2, 4) } else { (4, 10) };
    let mut masked = Vec::with_capacity(keep * 2 + stars);
    masked.extend_from_slice(&bytes[..keep]);
    masked.extend(std::iter::repeat_n(b'*', stars));
    masked.extend_from_slice(&bytes[length - keep..]);
    String::from_utf8_lossy(&masked).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{mask_token_key, SimToken};

    #[test]
    fn masking_follows_mask_token_key() {
        let key = "aB3dEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghQr5t";
        assert_eq!(key.len(), 48);
        assert_eq!(mask_token_key(key), "aB3d**********Qr5t");
        assert_eq!(mask_token_key("abcdefgh"), "ab****gh");
        assert_eq!(mask_token_key("abcd"), "****");
        assert_eq!(mask_token_key(""), "");
    }

    #[test]
    fn debug_never_prints_the_full_key() {
        let token = SimToken {
            key: "SECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRET".to_string(),
            ..SimToken::default()
        };
        let printed = format!("{token:?}");
        assert!(!printed.contains(&token.key), "{printed}");
        assert!(printed.contains("SECR**********CRET"), "{printed}");
    }
}
