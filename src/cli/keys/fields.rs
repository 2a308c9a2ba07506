//! The `keys` field parsing: expiry times (`never`, unix seconds, RFC 3339, dates, durations),
//! IP and CIDR lists, model lists, and the flags of `create`/`update` into a `KeyEdit` of exactly
//! the fields named. Pure: no I/O, and `now` is a parameter.

use std::net::IpAddr;
use std::time::Duration;

use super::arguments::FieldArguments;
use super::KeysError;
use crate::api::KeyEdit;

/// The server's limit on a key name, in bytes (new-api ≥ 2025-12-04).
pub const MAX_NAME_BYTES: usize = 50;

/// A `--expires` value, resolved against the clock only when the edit is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// Unix seconds.
    At(i64),
    /// This long from now.
    In(Duration),
}

impl Expiry {
    /// Unix seconds, or -1 for never.
    pub fn resolve(self, now: i64) -> i64 {
        match self {
            Expiry::Never => -1,
            Expiry::At(seconds) => seconds,
            Expiry::In(duration) => {
                now.saturating_add(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
            }
        }
    }
}

/// Parses `never` (or -1), unix seconds, an RFC 3339 time, a date (midnight UTC) or a
/// duration from now (`30d`, `12h`, `1h 30m`).
pub fn parse_expiry(text: &str) -> Result<Expiry, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") || text == "-1" {
        return Ok(Expiry::Never);
    }
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(seconds) if seconds > 0 => Ok(Expiry::At(seconds)),
            _ => Err(format!(
                "{text:?} is not a usable unix time (use seconds after 1970, or never)"
            )),
        };
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Expiry::At(time.timestamp()));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(Expiry::At(midnight.and_utc().timestamp()));
    }
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(Expiry::In(duration)),
        _ => Err(format!(
            "{text:?} is not an expiry: use an RFC 3339 time (2026-12-31T23:59:59Z), a date \
             (2026-12-31), unix seconds, a duration from now (30d, 12h) or never"
        )),
    }
}

impl FieldArguments {
    /// The edit these flags ask for; rejects values no server would accept.
    pub(super) fn to_edit(&self, now: i64) -> Result<KeyEdit, KeysError> {
        let mut edit = KeyEdit::default();
        if let Some(name) = &self.name {
            if name.len() > MAX_NAME_BYTES {
                return Err(KeysError::Usage(format!(
                    "--name is {} bytes long; the server allows at most {MAX_NAME_BYTES} bytes",
                    name.len()
                )));
            }
            edit.name = Some(name.clone());
        }
        if let Some(quota) = self.remaining_quota {
            if quota < 0 && self.limited {
                return Err(KeysError::Usage(
                    "--remaining-quota must be 0 or more for a limited key".into(),
                ));
            }
            edit.remain_quota = Some(quota);
        }
        if self.unlimited {
            edit.unlimited_quota = Some(true);
        }
        if self.limited {
            edit.unlimited_quota = Some(false);
        }
        edit.expired_time = self.expires.map(|expiry| expiry.resolve(now));
        edit.group = self.group.clone();
        if let Some(list) = &self.allow_ips {
            edit.allow_ips = Some(Some(parse_allow_ips(list)?));
        }
        if self.clear_allow_ips {
            edit.allow_ips = Some(Some(String::new()));
        }
        if let Some(list) = &self.model_limits {
            edit.model_limits = Some(parse_model_limits(list)?);
            edit.model_limits_enabled = Some(true);
        }
        if self.clear_model_limits {
            edit.model_limits = Some(String::new());
            edit.model_limits_enabled = Some(false);
        }
        edit.cross_group_retry = self.cross_group_retry;
        Ok(edit)
    }
}

pub(super) fn list_entries(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', '\n'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

/// `--allow-ips`: addresses or CIDR ranges, stored newline-separated as the server expects.
pub fn parse_allow_ips(list: &str) -> Result<String, KeysError> {
    let mut entries = Vec::new();
    for entry in list_entries(list) {
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let valid = address.parse::<IpAddr>().is_ok_and(|address| {
            prefix.is_none_or(|prefix| {
                let bits = if address.is_ipv4() { 32 } else { 128 };
                prefix.parse::<u8>().is_ok_and(|prefix| prefix <= bits)
            })
        });
        if !valid {
            return Err(KeysError::Usage(format!(
                "--allow-ips: {entry:?} is not an IP address or CIDR range"
            )));
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(KeysError::Usage(
            "--allow-ips is empty; use --clear-allow-ips to allow every IP".into(),
        ));
    }
    Ok(entries.join("\n"))
}

/// `--model-limits`: model ids, stored comma-separated.
pub fn parse_model_limits(list: &str) -> Result<String, KeysError> {
    let entries: Vec<&str> = list_entries(list).collect();
    if entries.is_empty() {
        return Err(KeysError::Usage(
            "--model-limits is empty; use --clear-model-limits to allow every model".into(),
        ));
    }
    Ok(entries.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn expiry_accepts_never_unix_seconds_rfc3339_dates_and_durations() {
        assert_eq!(parse_expiry("never"), Ok(Expiry::Never));
        assert_eq!(parse_expiry("NEVER"), Ok(Expiry::Never));
        assert_eq!(parse_expiry("-1"), Ok(Expiry::Never));
        assert_eq!(parse_expiry("1798000000"), Ok(Expiry::At(1_798_000_000)));
        assert_eq!(
            parse_expiry("2026-12-31T23:59:59Z"),
            Ok(Expiry::At(1_798_761_599))
        );
        assert_eq!(
            parse_expiry("2027-01-01T01:00:00+01:00"),
            Ok(Expiry::At(1_798_761_600))
        );
        assert_eq!(parse_expiry("2027-01-01"), Ok(Expiry::At(1_798_761_600)));
        assert_eq!(
            parse_expiry("30d"),
            Ok(Expiry::In(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(parse_expiry("30d").unwrap().resolve(NOW), NOW + 30 * 86_400);
        assert_eq!(parse_expiry("1h 30m").unwrap().resolve(NOW), NOW + 5_400);
        assert_eq!(Expiry::Never.resolve(NOW), -1);
    }

    #[test]
    fn expiry_rejects_what_would_expire_the_key_by_accident() {
        for text in ["0", "", "0s", "tomorrow", "-5", "2026-13-01", "12"] {
            let result = parse_expiry(text);
            if text == "12" {
                // Twelve seconds after 1970 is a unix time, if a silly one.
                assert_eq!(result, Ok(Expiry::At(12)));
            } else {
                assert!(result.is_err(), "{text:?} was accepted: {result:?}");
            }
        }
        assert!(parse_expiry("soon").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn allow_ips_are_checked_and_stored_newline_separated() {
        assert_eq!(
            parse_allow_ips(" 10.0.0.0/8, 2001:db8::1 ,198.51.100.10").unwrap(),
            "10.0.0.0/8\n2001:db8::1\n198.51.100.10"
        );
        assert_eq!(parse_allow_ips("2001:db8::/32").unwrap(), "2001:db8::/32");
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.1/", " , "] {
            assert!(parse_allow_ips(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn flags_become_an_edit_of_exactly_those_fields() {
        let fields = FieldArguments {
            model_limits: Some("gpt-4.1, claude-sonnet-4".into()),
            clear_allow_ips: true,
            expires: Some(Expiry::In(Duration::from_secs(60))),
            ..FieldArguments::default()
        };
        let edit = fields.to_edit(NOW).unwrap();
        assert_eq!(
            edit,
            KeyEdit {
                model_limits: Some("gpt-4.1,claude-sonnet-4".into()),
                model_limits_enabled: Some(true),
                allow_ips: Some(Some(String::new())),
                expired_time: Some(NOW + 60),
                ..KeyEdit::default()
            }
        );
        assert!(FieldArguments::default().to_edit(NOW).unwrap().is_empty());
        let long_name = FieldArguments {
            name: Some("名".repeat(17)),
            ..FieldArguments::default()
        };
        assert!(matches!(long_name.to_edit(NOW), Err(KeysError::Usage(_))));
    }
}
