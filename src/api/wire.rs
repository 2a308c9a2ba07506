//! The management API's JSON, as serde types. The only place that knows the wire format.
//!
//! Decoding is permissive on purpose: servers of different new-api / one-api versions add, drop
//! or null fields (`allow_ips` is `null` or `""`, `cross_group_retry` and `auto_groups` may be
//! missing, `DeletedAt` is extra), quotas are negative and 64-bit. A field that is missing or null
//! decodes to its zero value; only `id` is required, because a key without an id cannot be
//! identified. Nothing here branches on `message` text.
//!
//! About 555 lines of code and their unit tests: every wire type of the server in one place, as
//! the invariant requires.

use serde::{Deserialize, Deserializer};

use crate::account::{KeyModelSpend, ModelSpend, Subscription, Wallet};
use crate::snapshot::KeyState;

/// The `{success, message, data}` envelope every `/api` answer uses.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    /// Missing `success` is a decode error: we cannot tell success from failure without it.
    pub success: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
    #[serde(default = "none")]
    pub data: Option<T>,
}

/// The body of a 401 (`{"success":false,"message":…}`, plus `code` on the newest servers).
#[derive(Debug, Default, Deserialize)]
pub struct AuthFailure {
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
}

fn none<T>() -> Option<T> {
    None
}

/// `data` of the list endpoint: the paginated envelope (new-api ≥ 2025-06-12) or a bare array
/// (older new-api and one-api, whose `p` is 0-based).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ListData {
    Page(PageInfo),
    Bare(Vec<TokenRecord>),
}

#[derive(Debug, Deserialize)]
pub struct PageInfo {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub page: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub page_size: i64,
    /// Required: without it a listing cannot be checked for completeness, and an envelope
    /// without `total` is not one the server sends.
    #[serde(deserialize_with = "required_i64")]
    pub total: i64,
    /// Required, but `null` (a Go nil slice) means no items.
    #[serde(deserialize_with = "null_as_default")]
    pub items: Vec<TokenRecord>,
}

/// `data` of `GET /api/status`; only what we use.
#[derive(Debug, Default, Deserialize)]
pub struct ServerStatus {
    /// Anything but a number or a numeric string counts as "not said": the value only scales
    /// dollars, so an odd status answer must not fail the poll.
    #[serde(default, deserialize_with = "permissive_optional_f64")]
    pub quota_per_unit: Option<f64>,
    /// `DataExportEnabled` (new-api); `None` when the server does not say (one-api, older
    /// servers) or says something that is not a boolean.
    #[serde(default, deserialize_with = "permissive_optional_bool")]
    pub enable_data_export: Option<bool>,
}

/// `data` of `GET /api/user/self`: new-api's map and one-api's user row share these fields.
#[derive(Debug, Deserialize)]
pub struct UserSelf {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub group: String,
    /// Required: an answer without the wallet is not a wallet.
    #[serde(deserialize_with = "required_quota")]
    pub quota: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub used_quota: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub request_count: i64,
}

impl From<UserSelf> for Wallet {
    fn from(user: UserSelf) -> Wallet {
        Wallet {
            user_id: user.id,
            group: user.group,
            quota: user.quota,
            used_quota: user.used_quota,
            request_count: user.request_count,
        }
    }
}

/// One row of `GET /api/data/flow/self` (summed by key, group and model over the window).
#[derive(Debug, Deserialize)]
pub struct FlowRow {
    #[serde(deserialize_with = "required_i64")]
    pub token_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub token_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_group: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub model_name: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub token_used: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub count: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub quota: i64,
}

impl From<FlowRow> for KeyModelSpend {
    fn from(row: FlowRow) -> KeyModelSpend {
        KeyModelSpend {
            key_id: row.token_id,
            key_name: row.token_name,
            group: row.use_group,
            model: row.model_name,
            requests: row.count,
            tokens: row.token_used,
            quota: row.quota,
        }
    }
}

/// One hourly bucket of `GET /api/data/self`.
#[derive(Debug, Deserialize)]
pub struct HourlyRow {
    #[serde(default, deserialize_with = "null_as_default")]
    pub model_name: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub count: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub token_used: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub quota: i64,
}

impl From<HourlyRow> for ModelSpend {
    fn from(row: HourlyRow) -> ModelSpend {
        ModelSpend {
            model: row.model_name,
            requests: row.count,
            tokens: row.token_used,
            quota: row.quota,
        }
    }
}

/// `data` of `GET /api/subscription/self`.
#[derive(Debug, Deserialize)]
pub struct SubscriptionSelf {
    /// Every subscription, active or not (preferred when present).
    #[serde(default)]
    pub all_subscriptions: Option<Vec<SubscriptionItem>>,
    /// The active ones.
    #[serde(default, deserialize_with = "null_as_default")]
    pub subscriptions: Vec<SubscriptionItem>,
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionItem {
    pub subscription: SubscriptionRecord,
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionRecord {
    #[serde(deserialize_with = "required_i64")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub plan_id: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub amount_total: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub amount_used: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub start_time: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub end_time: i64,
    /// `active`, `expired`, `cancelled`; a fork that sends a number gets it as text.
    #[serde(default, deserialize_with = "string_or_number")]
    pub status: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub next_reset_time: i64,
}

impl From<SubscriptionRecord> for Subscription {
    fn from(record: SubscriptionRecord) -> Subscription {
        let positive = |value: i64| (value > 0).then_some(value);
        Subscription {
            id: record.id,
            plan_id: record.plan_id,
            plan: String::new(),
            status: record.status,
            amount_total: record.amount_total,
            amount_used: record.amount_used,
            start_time: positive(record.start_time),
            end_time: positive(record.end_time),
            next_reset_time: positive(record.next_reset_time),
        }
    }
}

impl SubscriptionSelf {
    pub fn into_subscriptions(self) -> Vec<Subscription> {
        self.all_subscriptions
            .unwrap_or(self.subscriptions)
            .into_iter()
            .map(|item| Subscription::from(item.subscription))
            .collect()
    }
}

/// One entry of `GET /api/subscription/plans`.
#[derive(Debug, Deserialize)]
pub struct PlanItem {
    pub plan: PlanRecord,
}

#[derive(Debug, Deserialize)]
pub struct PlanRecord {
    #[serde(deserialize_with = "required_i64")]
    pub id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub title: String,
}

/// One key record (`model/token.go` `Token`). The `key` field is deliberately not decoded: the
/// daemon never needs the key string and so never holds it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TokenRecord {
    #[serde(deserialize_with = "required_i64")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient_optional_i64")]
    pub user_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub status: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub created_time: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub accessed_time: i64,
    /// Missing is treated as "never expires" (-1), the server's column default; an explicit 0 is
    /// "expired at epoch".
    #[serde(default = "never_expires", deserialize_with = "lenient_i64")]
    pub expired_time: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub remain_quota: i64,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub unlimited_quota: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub model_limits_enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub model_limits: String,
    /// one-api's model list (no enable flag); `None` when the server has no such field.
    #[serde(default)]
    pub models: Option<String>,
    /// `null` and `""` both mean "no restriction".
    #[serde(default)]
    pub allow_ips: Option<String>,
    /// one-api's IP restriction; `None` when the server has no such field.
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub used_quota: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub group: String,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub cross_group_retry: bool,
    /// new-api ≥ 2026-08 (group `auto`): the selected auto groups. `null` or missing is `None`
    /// and is not sent back; a list is echoed on every write so a full PUT cannot clear it.
    #[serde(default)]
    pub auto_groups: Option<Vec<String>>,
}

/// Which write a request body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `POST /api/token/`: no `id` (the server would insert it verbatim) and no `status`.
    Create,
    /// Full `PUT /api/token/`: `id` and every editable field, and no `status`. The server
    /// ignores `status` in this mode but runs its enable guard when it is 1, which would refuse
    /// the very write that repairs an expired or exhausted key.
    Update,
    /// `PUT /api/token/?status_only=true`: the full record and `status`, except that a limited
    /// key's negative quota is sent as 0 (the server validates it but writes only `status`).
    StatusOnly,
}

impl TokenRecord {
    /// A record with what a snapshot knows of a key (no model or IP lists): for describing a
    /// planned change, never for writing.
    pub fn from_state(key: &KeyState) -> TokenRecord {
        TokenRecord {
            id: key.id,
            status: key.status_code,
            name: key.name.clone(),
            created_time: key.created_time,
            accessed_time: key.accessed_time,
            expired_time: key.expired_time,
            remain_quota: key.remain_quota,
            unlimited_quota: key.unlimited_quota,
            used_quota: key.used_quota,
            group: key.group.clone(),
            ..TokenRecord::default()
        }
    }

    /// The JSON body of a write: every editable field of this record, because the server resets
    /// the ones a full update omits.
    pub fn write_body(&self, kind: WriteKind) -> Vec<u8> {
        let mut body = serde_json::json!({
            "name": self.name,
            "expired_time": self.expired_time,
            "remain_quota": self.remain_quota,
            "unlimited_quota": self.unlimited_quota,
            "model_limits_enabled": self.model_limits_enabled,
            "model_limits": self.model_limits,
            "allow_ips": self.allow_ips,
            "group": self.group,
            "cross_group_retry": self.cross_group_retry,
        });
        if let Some(auto_groups) = &self.auto_groups {
            body["auto_groups"] = auto_groups.clone().into();
        }
        // one-api's names for the restrictions, echoed only when its server sent them (a full
        // PUT would reset them too; new-api ignores fields it does not know).
        if let Some(models) = &self.models {
            body["models"] = models.clone().into();
        }
        if let Some(subnet) = &self.subnet {
            body["subnet"] = subnet.clone().into();
        }
        if kind != WriteKind::Create {
            body["id"] = self.id.into();
        }
        if kind == WriteKind::StatusOnly {
            body["status"] = self.status.into();
            // The server checks the body's quota even in this mode and refuses a negative one
            // on a limited key ("Quota value cannot be negative"), so an overdrawn key could
            // never be disabled. The mode writes nothing but `status`, so 0 is safe to send.
            if !self.unlimited_quota && self.remain_quota < 0 {
                body["remain_quota"] = 0.into();
            }
        }
        body.to_string().into_bytes()
    }
}

fn never_expires() -> i64 {
    -1
}

impl From<TokenRecord> for KeyState {
    fn from(record: TokenRecord) -> KeyState {
        let ip_restricted = [&record.allow_ips, &record.subnet]
            .into_iter()
            .flatten()
            .any(|list| {
                list.split(['\n', ','])
                    .any(|entry| !entry.trim().is_empty())
            });
        let model_restricted = (record.model_limits_enabled && has_entry(&record.model_limits))
            || record.models.as_deref().is_some_and(has_entry);
        KeyState {
            id: record.id,
            name: record.name,
            group: record.group,
            status_code: record.status,
            created_time: record.created_time,
            accessed_time: record.accessed_time,
            expired_time: record.expired_time,
            remain_quota: record.remain_quota,
            used_quota: record.used_quota,
            unlimited_quota: record.unlimited_quota,
            ip_restricted,
            model_restricted,
        }
    }
}

fn has_entry(list: &str) -> bool {
    list.split(',').any(|entry| !entry.trim().is_empty())
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A JSON number as i64: integers, and floats without a fraction (some proxies re-encode
/// numbers as floats). Anything else is a decode error, never a silent 0.
#[derive(Deserialize)]
#[serde(untagged)]
enum LenientNumber {
    Integer(i64),
    Float(f64),
    /// A number written as a string (`"1234"`), as some proxies and hand-written servers do.
    Text(String),
}

impl LenientNumber {
    fn to_i64<E: serde::de::Error>(&self) -> Result<i64, E> {
        match *self {
            LenientNumber::Integer(value) => Ok(value),
            LenientNumber::Float(value)
                if value.fract() == 0.0 && value >= i64::MIN as f64 && value <= i64::MAX as f64 =>
            {
                Ok(value as i64)
            }
            LenientNumber::Float(value) => {
                Err(E::custom(format!("expected an integer, got {value}")))
            }
            LenientNumber::Text(ref text) => text
                .trim()
                .parse()
                .map_err(|_| E::custom("expected an integer, got a non-numeric string")),
        }
    }
}

/// `true`/`false`, `null` (false), or 0/1 as some servers encode booleans.
fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum LenientBool {
        Bool(bool),
        Integer(i64),
    }
    match Option::<LenientBool>::deserialize(deserializer)? {
        None => Ok(false),
        Some(LenientBool::Bool(value)) => Ok(value),
        Some(LenientBool::Integer(0)) => Ok(false),
        Some(LenientBool::Integer(1)) => Ok(true),
        Some(LenientBool::Integer(other)) => Err(serde::de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

fn lenient_optional_i64<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    match Option::<LenientNumber>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => number.to_i64().map(Some),
    }
}

fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    Ok(lenient_optional_i64(deserializer)?.unwrap_or_default())
}

fn required_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    lenient_optional_i64(deserializer)?.ok_or_else(|| serde::de::Error::custom("id is null"))
}

fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(text) => text,
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::Bool(value) => value.to_string(),
        _ => String::new(),
    })
}

fn required_quota<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    lenient_optional_i64(deserializer)?.ok_or_else(|| serde::de::Error::custom("quota is null"))
}

fn permissive_optional_bool<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Bool(value) => Some(value),
        _ => None,
    })
}

fn permissive_optional_f64<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<f64>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Number(number) => number.as_f64(),
        serde_json::Value::String(text) => text.trim().parse().ok(),
        _ => None,
    })
}

/// `data` of one list page as `check-config --online` reads it: which form the listing has and
/// whether the server masks the keys (`abcd**********wxyz`, new-api ≥ 2026-03-08). Each `key`
/// value is looked at for a `*` while it is decoded and not kept.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ListingShape {
    Page {
        #[serde(deserialize_with = "required_i64")]
        total: i64,
        #[serde(deserialize_with = "null_as_default")]
        items: Vec<KeyShape>,
    },
    Bare(Vec<KeyShape>),
}

#[derive(Debug, Deserialize)]
pub struct KeyShape {
    /// `Some(true)` when the key came masked, `None` when it was absent or not a string.
    #[serde(default, rename = "key", deserialize_with = "key_is_masked")]
    pub masked: Option<bool>,
}

fn key_is_masked<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    struct MaskVisitor;
    impl serde::de::Visitor<'_> for MaskVisitor {
        type Value = Option<bool>;
        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a key string")
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Option<bool>, E> {
            Ok(Some(value.contains('*')))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Option<bool>, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(MaskVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_newest_server_record_with_extra_fields() {
        let body = r#"{"data":{"page":1,"page_size":20,"total":2,"items":[
          {"id":1235,"user_id":5678,"key":"Xy7q**********9LmN","status":1,"name":"ci-runner","created_time":1766102500,"accessed_time":1766190000,"expired_time":-1,"remain_quota":482113,"unlimited_quota":false,"model_limits_enabled":false,"model_limits":"","allow_ips":"","used_quota":17887,"group":"","cross_group_retry":false,"DeletedAt":null,"auto_groups":null},
          {"id":1234,"user_id":5678,"key":"aB3d**********Qr5t","status":1,"name":"production","created_time":1766102400,"accessed_time":1766102400,"expired_time":1798000000,"remain_quota":-2400,"unlimited_quota":true,"model_limits_enabled":true,"model_limits":"gpt-4.1,claude-sonnet-4","allow_ips":"10.0.0.0/8\n2001:db8::1","used_quota":2400,"group":"default","cross_group_retry":false,"DeletedAt":null,"auto_groups":null}
        ]},"message":"","success":true}"#;
        let envelope: Envelope<ListData> = serde_json::from_str(body).unwrap();
        let ListData::Page(page) = envelope.data.unwrap() else {
            panic!("expected a page")
        };
        assert_eq!(page.total, 2);
        let second = KeyState::from(page.items[1].clone());
        assert_eq!(second.remain_quota, -2400);
        assert!(second.unlimited_quota && second.ip_restricted && second.model_restricted);
        let first = KeyState::from(page.items[0].clone());
        assert!(!first.ip_restricted && !first.model_restricted);
        assert_eq!(first.expired_time, -1);
    }

    #[test]
    fn missing_and_null_fields_decode_to_zero_values() {
        let record: TokenRecord =
            serde_json::from_str(r#"{"id":7,"name":null,"allow_ips":null,"remain_quota":null}"#)
                .unwrap();
        assert_eq!(record.name, "");
        assert_eq!(record.allow_ips, None);
        assert_eq!(record.remain_quota, 0);
        assert_eq!(record.expired_time, -1);
    }

    #[test]
    fn sixty_four_bit_and_float_encoded_numbers_are_exact() {
        let record: TokenRecord = serde_json::from_str(
            r#"{"id":7.0,"used_quota":4000000000123,"remain_quota":-9007199254740993}"#,
        )
        .unwrap();
        assert_eq!(record.id, 7);
        assert_eq!(record.used_quota, 4_000_000_000_123);
        assert_eq!(record.remain_quota, -9_007_199_254_740_993);
    }

    #[test]
    fn numeric_strings_and_integer_booleans_are_accepted() {
        let record: TokenRecord = serde_json::from_str(
            r#"{"id":"12","remain_quota":" -5 ","unlimited_quota":1,"model_limits_enabled":0,"cross_group_retry":null}"#,
        )
        .unwrap();
        assert_eq!((record.id, record.remain_quota), (12, -5));
        assert!(
            record.unlimited_quota && !record.model_limits_enabled && !record.cross_group_retry
        );
    }

    #[test]
    fn a_record_without_id_or_with_a_fractional_number_is_rejected() {
        assert!(serde_json::from_str::<TokenRecord>(r#"{"name":"x"}"#).is_err());
        assert!(serde_json::from_str::<TokenRecord>(r#"{"id":1,"remain_quota":1.5}"#).is_err());
        assert!(serde_json::from_str::<TokenRecord>(r#"{"id":"x1"}"#).is_err());
        assert!(serde_json::from_str::<TokenRecord>(r#"{"id":1,"unlimited_quota":2}"#).is_err());
        assert!(
            serde_json::from_str::<TokenRecord>(r#"{"id":1,"unlimited_quota":"yes"}"#).is_err()
        );
    }

    #[test]
    fn status_only_body_of_an_overdrawn_limited_key_passes_the_quota_check() {
        let overdrawn = TokenRecord {
            id: 9,
            status: 2,
            remain_quota: -4_200,
            ..TokenRecord::default()
        };
        let body = |record: &TokenRecord, kind| {
            serde_json::from_slice::<serde_json::Value>(&record.write_body(kind)).unwrap()
        };
        assert_eq!(body(&overdrawn, WriteKind::StatusOnly)["remain_quota"], 0);
        assert_eq!(body(&overdrawn, WriteKind::StatusOnly)["status"], 2);
        assert_eq!(
            body(&overdrawn, WriteKind::Update)["remain_quota"],
            -4_200,
            "a full update writes what it is given"
        );
        let unlimited = TokenRecord {
            unlimited_quota: true,
            ..overdrawn
        };
        assert_eq!(
            body(&unlimited, WriteKind::StatusOnly)["remain_quota"],
            -4_200
        );
    }

    #[test]
    fn bare_array_listing_of_older_servers_decodes() {
        let envelope: Envelope<ListData> =
            serde_json::from_str(r#"{"success":true,"message":"","data":[{"id":1,"subnet":"1.2.3.4","models":"gpt-4"}]}"#)
                .unwrap();
        let ListData::Bare(items) = envelope.data.unwrap() else {
            panic!("expected a bare array")
        };
        let key = KeyState::from(items[0].clone());
        assert!(key.ip_restricted && key.model_restricted);
    }

    #[test]
    fn one_api_restrictions_are_echoed_under_their_own_names_on_writes() {
        let record: TokenRecord = serde_json::from_str(
            r#"{"id":1,"name":"a","subnet":"10.0.0.0/8","models":"gpt-4","remain_quota":5}"#,
        )
        .unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&record.write_body(WriteKind::Update)).unwrap();
        assert_eq!(body["subnet"], "10.0.0.0/8");
        assert_eq!(body["models"], "gpt-4");
        let new_api: TokenRecord =
            serde_json::from_str(r#"{"id":1,"allow_ips":"1.2.3.4"}"#).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&new_api.write_body(WriteKind::Update)).unwrap();
        assert!(body.get("subnet").is_none() && body.get("models").is_none());
        assert_eq!(body["allow_ips"], "1.2.3.4");
    }

    #[test]
    fn a_page_needs_total_and_items_but_items_may_be_null() {
        let parse = |data: &str| {
            serde_json::from_str::<Envelope<ListData>>(&format!(
                r#"{{"success":true,"message":"","data":{data}}}"#
            ))
        };
        let Ok(Envelope {
            data: Some(ListData::Page(page)),
            ..
        }) = parse(r#"{"page":1,"page_size":100,"total":0,"items":null}"#)
        else {
            panic!("null items are an empty page")
        };
        assert!(page.items.is_empty());
        assert!(
            parse(r#"{"page":1,"page_size":100,"items":[]}"#).is_err(),
            "no total"
        );
        assert!(
            parse(r#"{"page":1,"page_size":100,"total":3}"#).is_err(),
            "no items"
        );
        assert!(parse(r#"{}"#).is_err());
        assert!(parse(r#"{"items":"nope","total":1}"#).is_err());
    }

    #[test]
    fn quota_per_unit_is_read_from_numbers_and_numeric_strings_only() {
        let parse = |data: &str| {
            serde_json::from_str::<ServerStatus>(data)
                .unwrap()
                .quota_per_unit
        };
        assert_eq!(parse(r#"{"quota_per_unit":500000}"#), Some(500_000.0));
        assert_eq!(parse(r#"{"quota_per_unit":"250000.5"}"#), Some(250_000.5));
        assert_eq!(parse(r#"{"quota_per_unit":true}"#), None);
        assert_eq!(parse(r#"{"quota_per_unit":null}"#), None);
        assert_eq!(parse(r#"{"other":1}"#), None);
    }

    #[test]
    fn envelope_without_success_is_an_error() {
        assert!(
            serde_json::from_str::<Envelope<ServerStatus>>(r#"{"message":"","data":{}}"#).is_err()
        );
    }

    #[test]
    fn wallets_of_new_api_and_one_api_decode_and_need_a_quota() {
        let new_api: UserSelf = serde_json::from_str(
            r#"{"aff_code":"x","group":"vip","id":5678,"permissions":{},"quota":-1200,"request_count":33,"setting":"{}","used_quota":9007199254740993}"#,
        )
        .unwrap();
        let wallet = Wallet::from(new_api);
        assert_eq!(
            (wallet.quota, wallet.used_quota),
            (-1200, 9_007_199_254_740_993)
        );
        assert_eq!(
            (wallet.user_id, wallet.group.as_str(), wallet.request_count),
            (5678, "vip", 33)
        );
        let one_api: UserSelf = serde_json::from_str(
            r#"{"id":1,"username":"u","quota":500,"used_quota":0,"request_count":0,"group":null}"#,
        )
        .unwrap();
        assert_eq!(one_api.group, "");
        assert!(serde_json::from_str::<UserSelf>(r#"{"id":1,"group":"default"}"#).is_err());
    }

    #[test]
    fn subscriptions_prefer_the_full_list_and_zero_times_are_none() {
        let data: SubscriptionSelf = serde_json::from_str(
            r#"{"all_subscriptions":[{"subscription":{"id":2,"plan_id":1,"amount_total":10,"amount_used":3,"start_time":5,"end_time":9,"status":"expired","next_reset_time":0}}],
                "billing_preference":"subscription_first","subscriptions":[]}"#,
        )
        .unwrap();
        let subscriptions = data.into_subscriptions();
        assert_eq!(subscriptions.len(), 1);
        assert_eq!(subscriptions[0].next_reset_time, None);
        assert_eq!(subscriptions[0].end_time, Some(9));
        let only_active: SubscriptionSelf = serde_json::from_str(
            r#"{"subscriptions":[{"subscription":{"id":4,"status":1}}],"all_subscriptions":null}"#,
        )
        .unwrap();
        let subscriptions = only_active.into_subscriptions();
        assert_eq!(
            (subscriptions[0].id, subscriptions[0].status.as_str()),
            (4, "1")
        );
    }

    #[test]
    fn data_export_flag_is_read_only_from_booleans() {
        let status: ServerStatus =
            serde_json::from_str(r#"{"quota_per_unit":500000,"enable_data_export":false}"#)
                .unwrap();
        assert_eq!(status.enable_data_export, Some(false));
        let status: ServerStatus = serde_json::from_str(r#"{"enable_data_export":"no"}"#).unwrap();
        assert_eq!(status.enable_data_export, None);
    }
}
