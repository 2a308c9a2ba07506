//! JSON as the Go server writes and reads it.
//!
//! Writing: hand-rolled, because the bytes matter — `gin.H` maps come out with sorted keys, structs
//! in declaration order, `<` `>` `&` U+2028 U+2029 escaped like `encoding/json`, no trailing newline.
//! Token records are written straight into the output buffer, so a page costs O(page).
//!
//! Reading: `bind_token` and `bind_ids` imitate gin's `ShouldBindJSON` into a Go struct — only
//! the first JSON value is read (trailing bytes ignored), an empty body is `EOF`, field names match
//! case-insensitively, unknown fields are ignored, `null` leaves a non-pointer field at its zero
//! value, and a type mismatch yields Go's `json: cannot unmarshal …` message (the first one wins).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

use super::token::{mask_token_key, SimToken};

/// Appends `value` as a JSON string literal, escaped exactly like Go's `encoding/json` with HTML
/// escaping on (the gin default).
pub(crate) fn push_string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut run_start = 0;
    for (index, character) in value.char_indices() {
        let escape: Option<&[u8]> = match character {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            '<' => Some(b"\\u003c"),
            '>' => Some(b"\\u003e"),
            '&' => Some(b"\\u0026"),
            '\u{2028}' => Some(b"\\u2028"),
            '\u{2029}' => Some(b"\\u2029"),
            _ => None,
        };
        let control = (character as u32) < 0x20;
        if escape.is_none() && !control {
            continue;
        }
        out.extend_from_slice(&value.as_bytes()[run_start..index]);
        match escape {
            Some(sequence) => out.extend_from_slice(sequence),
            None => {
                let byte = character as u32 as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xF)]);
            }
        }
        run_start = index + character.len_utf8();
    }
    out.extend_from_slice(&value.as_bytes()[run_start..]);
    out.push(b'"');
}

/// Appends a decimal integer without allocating.
pub(crate) fn push_integer(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0u8; 20];
    let mut position = digits.len();
    let negative = value < 0;
    let mut magnitude = value.unsigned_abs();
    loop {
        position -= 1;
        digits[position] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[position..]);
}

pub(crate) fn push_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

/// A float64 the way `encoding/json` prints it for ordinary magnitudes: integral values without a
/// fraction (`500000`), others in shortest round-trip form (`7.3`).
pub(crate) fn go_float(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_string();
    }
    if value.fract() == 0.0 && value.abs() < 1e21 {
        return format!("{value:.0}");
    }
    format!("{value}")
}

/// Appends a token record in `model.Token` field order, plus the `DeletedAt` of gorm and the
/// `auto_groups` of the NA-latest response wrapper. `mask_key` applies `MaskTokenKey`.
pub(crate) fn push_token(out: &mut Vec<u8>, token: &SimToken, mask_key: bool) {
    out.extend_from_slice(b"{\"id\":");
    push_integer(out, token.id);
    out.extend_from_slice(b",\"user_id\":");
    push_integer(out, token.user_id);
    out.extend_from_slice(b",\"key\":");
    if mask_key {
        push_string(out, &mask_token_key(&token.key));
    } else {
        push_string(out, &token.key);
    }
    out.extend_from_slice(b",\"status\":");
    push_integer(out, token.status);
    out.extend_from_slice(b",\"name\":");
    push_string(out, &token.name);
    out.extend_from_slice(b",\"created_time\":");
    push_integer(out, token.created_time);
    out.extend_from_slice(b",\"accessed_time\":");
    push_integer(out, token.accessed_time);
    out.extend_from_slice(b",\"expired_time\":");
    push_integer(out, token.expired_time);
    out.extend_from_slice(b",\"remain_quota\":");
    push_integer(out, token.remain_quota);
    out.extend_from_slice(b",\"unlimited_quota\":");
    push_bool(out, token.unlimited_quota);
    out.extend_from_slice(b",\"model_limits_enabled\":");
    push_bool(out, token.model_limits_enabled);
    out.extend_from_slice(b",\"model_limits\":");
    push_string(out, &token.model_limits);
    out.extend_from_slice(b",\"allow_ips\":");
    match &token.allow_ips {
        Some(allow_ips) => push_string(out, allow_ips),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"used_quota\":");
    push_integer(out, token.used_quota);
    out.extend_from_slice(b",\"group\":");
    push_string(out, &token.group);
    out.extend_from_slice(b",\"cross_group_retry\":");
    push_bool(out, token.cross_group_retry);
    out.extend_from_slice(b",\"DeletedAt\":null,\"auto_groups\":null}");
}

/// one-api's `model.Token`: full key, `models` and `subnet` (pointers; `""` when unset) instead of
/// new-api's `model_limits*`, `allow_ips`, `group` and `cross_group_retry`.
pub(crate) fn push_one_api_token(out: &mut Vec<u8>, token: &SimToken) {
    out.extend_from_slice(b"{\"id\":");
    push_integer(out, token.id);
    out.extend_from_slice(b",\"user_id\":");
    push_integer(out, token.user_id);
    out.extend_from_slice(b",\"key\":");
    push_string(out, &token.key);
    out.extend_from_slice(b",\"status\":");
    push_integer(out, token.status);
    out.extend_from_slice(b",\"name\":");
    push_string(out, &token.name);
    out.extend_from_slice(b",\"created_time\":");
    push_integer(out, token.created_time);
    out.extend_from_slice(b",\"accessed_time\":");
    push_integer(out, token.accessed_time);
    out.extend_from_slice(b",\"expired_time\":");
    push_integer(out, token.expired_time);
    out.extend_from_slice(b",\"remain_quota\":");
    push_integer(out, token.remain_quota);
    out.extend_from_slice(b",\"unlimited_quota\":");
    push_bool(out, token.unlimited_quota);
    out.extend_from_slice(b",\"used_quota\":");
    push_integer(out, token.used_quota);
    out.extend_from_slice(b",\"models\":");
    push_string(
        out,
        if token.model_limits_enabled {
            &token.model_limits
        } else {
            ""
        },
    );
    out.extend_from_slice(b",\"subnet\":");
    push_string(out, token.allow_ips.as_deref().unwrap_or_default());
    out.push(b'}');
}

/// `{"data":<written by fill>,"message":"","success":true}` (`common.ApiSuccess`).
pub(crate) fn success_with_data(capacity: usize, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + 40);
    out.extend_from_slice(b"{\"data\":");
    fill(&mut out);
    out.extend_from_slice(b",\"message\":\"\",\"success\":true}");
    out
}

/// `{"message":"","success":true}` (create, delete).
pub(crate) fn success_without_data() -> Vec<u8> {
    b"{\"message\":\"\",\"success\":true}".to_vec()
}

/// `{"message":<message>,"success":false}` (`common.ApiError`, `ApiErrorMsg`, `ApiErrorI18n`).
pub(crate) fn failure(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 32);
    out.extend_from_slice(b"{\"message\":");
    push_string(&mut out, message);
    out.extend_from_slice(b",\"success\":false}");
    out
}

/// `{"code":<code>,"message":<message>,"success":false}` (≥ 2026-07-20 dashboard auth errors).
pub(crate) fn failure_with_code(code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 48);
    out.extend_from_slice(b"{\"code\":");
    push_string(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    push_string(&mut out, message);
    out.extend_from_slice(b",\"success\":false}");
    out
}

// ---------------------------------------------------------------------------------------------
// Reading request bodies like gin's ShouldBindJSON.

/// A parsed JSON value that keeps object members in document order (Go assigns them in order,
/// so with duplicate or case-variant keys the last one wins).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GoValue {
    Null,
    Bool(bool),
    /// An integer literal that fits in i64/u64.
    Integer(i128),
    /// A literal with a fraction or an exponent, or an integer too large for u64.
    Float(f64),
    String(String),
    Array(Vec<GoValue>),
    Object(Vec<(String, GoValue)>),
}

impl GoValue {
    /// The word Go's `UnmarshalTypeError` uses for the JSON value.
    fn kind_word(&self) -> String {
        match self {
            GoValue::Null => "null".to_string(),
            GoValue::Bool(_) => "bool".to_string(),
            GoValue::Integer(_) | GoValue::Float(_) => "number".to_string(),
            GoValue::String(_) => "string".to_string(),
            GoValue::Array(_) => "array".to_string(),
            GoValue::Object(_) => "object".to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for GoValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<GoValue, D::Error> {
        deserializer.deserialize_any(GoValueVisitor)
    }
}

struct GoValueVisitor;

impl<'de> Visitor<'de> for GoValueVisitor {
    type Value = GoValue;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<GoValue, E> {
        Ok(GoValue::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<GoValue, E> {
        Ok(GoValue::Null)
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<GoValue, E> {
        Ok(GoValue::Bool(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<GoValue, E> {
        Ok(GoValue::Integer(i128::from(value)))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<GoValue, E> {
        Ok(GoValue::Integer(i128::from(value)))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<GoValue, E> {
        Ok(GoValue::Float(value))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<GoValue, E> {
        Ok(GoValue::String(value.to_string()))
    }
    fn visit_string<E: de::Error>(self, value: String) -> Result<GoValue, E> {
        Ok(GoValue::String(value))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<GoValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = sequence.next_element::<GoValue>()? {
            items.push(item);
        }
        Ok(GoValue::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GoValue, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<GoValue>()?;
            members.push((key, value));
        }
        Ok(GoValue::Object(members))
    }
}

/// Reads the first JSON value of `body` the way `json.NewDecoder(body).Decode` does: an empty (or
/// all-whitespace) body is `EOF`, a cut value is `unexpected EOF`, bytes after the value are ignored.
pub(crate) fn decode_first_value(body: &[u8]) -> Result<GoValue, String> {
    if body.iter().all(|byte| byte.is_ascii_whitespace()) {
        return Err("EOF".to_string());
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match GoValue::deserialize(&mut deserializer) {
        Ok(value) => Ok(value),
        Err(error) if error.is_eof() => Err("unexpected EOF".to_string()),
        Err(error) => Err(go_syntax_error(body, &error)),
    }
}

/// Approximates Go's `invalid character 'x' …` text from serde_json's position.
fn go_syntax_error(body: &[u8], error: &serde_json::Error) -> String {
    let mut offset = 0usize;
    for _ in 1..error.line() {
        match body[offset..].iter().position(|byte| *byte == b'\n') {
            Some(newline) => offset += newline + 1,
            None => break,
        }
    }
    offset = (offset + error.column().saturating_sub(1)).min(body.len().saturating_sub(1));
    let text = String::from_utf8_lossy(&body[offset..]);
    match text.chars().next() {
        Some(character) if !character.is_control() => {
            format!("invalid character '{character}' looking for beginning of value")
        }
        _ => "invalid character looking for beginning of value".to_string(),
    }
}

/// The fields of `model.Token` a request body is bound into. Defaults are Go zero values.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct BoundToken {
    pub id: i64,
    pub status: i64,
    pub name: String,
    pub expired_time: i64,
    pub remain_quota: i64,
    pub unlimited_quota: bool,
    pub model_limits_enabled: bool,
    pub model_limits: String,
    pub allow_ips: Option<String>,
    pub group: String,
    pub cross_group_retry: bool,
}

#[derive(Clone, Copy)]
enum GoFieldType {
    Int,
    String,
    Bool,
    PointerToString,
    /// `DeletedAt` (gorm.DeletedAt) and anything else we accept without checking.
    Unchecked,
}

/// `model.Token`'s JSON field names and Go types, in declaration order.
const TOKEN_FIELDS: [(&str, GoFieldType); 17] = [
    ("id", GoFieldType::Int),
    ("user_id", GoFieldType::Int),
    ("key", GoFieldType::String),
    ("status", GoFieldType::Int),
    ("name", GoFieldType::String),
    ("created_time", GoFieldType::Int),
    ("accessed_time", GoFieldType::Int),
    ("expired_time", GoFieldType::Int),
    ("remain_quota", GoFieldType::Int),
    ("unlimited_quota", GoFieldType::Bool),
    ("model_limits_enabled", GoFieldType::Bool),
    ("model_limits", GoFieldType::String),
    ("allow_ips", GoFieldType::PointerToString),
    ("used_quota", GoFieldType::Int),
    ("group", GoFieldType::String),
    ("cross_group_retry", GoFieldType::Bool),
    ("DeletedAt", GoFieldType::Unchecked),
];

/// What a JSON value became after Go's conversion rules for one field.
enum Converted {
    /// `null` into a non-pointer: nothing happens.
    Unchanged,
    Int(i64),
    String(String),
    Bool(bool),
    NullPointer,
}

fn convert(value: &GoValue, field_type: GoFieldType) -> Result<Converted, (String, &'static str)> {
    let type_name = match field_type {
        GoFieldType::Int => "int",
        GoFieldType::String | GoFieldType::PointerToString => "string",
        GoFieldType::Bool => "bool",
        GoFieldType::Unchecked => return Ok(Converted::Unchanged),
    };
    match (value, field_type) {
        (GoValue::Null, GoFieldType::PointerToString) => Ok(Converted::NullPointer),
        (GoValue::Null, _) => Ok(Converted::Unchanged),
        (GoValue::Integer(number), GoFieldType::Int) => match i64::try_from(*number) {
            Ok(number) => Ok(Converted::Int(number)),
            Err(_) => Err((format!("number {number}"), type_name)),
        },
        (GoValue::Float(number), GoFieldType::Int) => Err((format!("number {number}"), type_name)),
        (GoValue::String(text), GoFieldType::String | GoFieldType::PointerToString) => {
            Ok(Converted::String(text.clone()))
        }
        (GoValue::Bool(flag), GoFieldType::Bool) => Ok(Converted::Bool(*flag)),
        (other, _) => Err((other.kind_word(), type_name)),
    }
}

/// Binds a request body into `model.Token` like `c.ShouldBindJSON(&token)`; the error is the
/// message the server would put into `{"message":…,"success":false}`.
pub(crate) fn bind_token(body: &[u8]) -> Result<BoundToken, String> {
    let members = match decode_first_value(body)? {
        GoValue::Object(members) => members,
        GoValue::Null => Vec::new(),
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type model.Token",
                other.kind_word()
            ))
        }
    };
    let mut bound = BoundToken::default();
    let mut first_error: Option<String> = None;
    for (member_name, value) in &members {
        let field = TOKEN_FIELDS
            .iter()
            .find(|(name, _)| name == member_name)
            .or_else(|| {
                TOKEN_FIELDS
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(member_name))
            });
        let Some((field_name, field_type)) = field else {
            continue;
        };
        match convert(value, *field_type) {
            Ok(converted) => assign(&mut bound, field_name, converted),
            Err((value_word, type_name)) => {
                first_error.get_or_insert_with(|| {
                    format!(
                        "json: cannot unmarshal {value_word} into Go struct field Token.{field_name} of type {type_name}"
                    )
                });
            }
        }
    }
    match first_error {
        Some(message) => Err(message),
        None => Ok(bound),
    }
}

fn assign(bound: &mut BoundToken, field_name: &str, converted: Converted) {
    match (field_name, converted) {
        (_, Converted::Unchanged) => {}
        ("id", Converted::Int(value)) => bound.id = value,
        ("status", Converted::Int(value)) => bound.status = value,
        ("name", Converted::String(value)) => bound.name = value,
        ("expired_time", Converted::Int(value)) => bound.expired_time = value,
        ("remain_quota", Converted::Int(value)) => bound.remain_quota = value,
        ("unlimited_quota", Converted::Bool(value)) => bound.unlimited_quota = value,
        ("model_limits_enabled", Converted::Bool(value)) => bound.model_limits_enabled = value,
        ("model_limits", Converted::String(value)) => bound.model_limits = value,
        ("allow_ips", Converted::String(value)) => bound.allow_ips = Some(value),
        ("allow_ips", Converted::NullPointer) => bound.allow_ips = None,
        ("group", Converted::String(value)) => bound.group = value,
        ("cross_group_retry", Converted::Bool(value)) => bound.cross_group_retry = value,
        // user_id, key, created_time, accessed_time, used_quota: bound but never used.
        _ => {}
    }
}

/// Binds `{"ids":[…]}` (`TokenBatch`). `None` for anything the server answers with
/// "invalid parameters": a bind error or a missing/empty list.
pub(crate) fn bind_ids(body: &[u8]) -> Option<Vec<i64>> {
    let members = match decode_first_value(body).ok()? {
        GoValue::Object(members) => members,
        _ => return None,
    };
    let mut ids = Vec::new();
    for (member_name, value) in members {
        if !member_name.eq_ignore_ascii_case("ids") {
            continue;
        }
        match value {
            GoValue::Null => ids.clear(),
            GoValue::Array(items) => {
                ids.clear();
                for item in items {
                    match item {
                        GoValue::Integer(number) => ids.push(i64::try_from(number).ok()?),
                        GoValue::Null => ids.push(0),
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    if ids.is_empty() {
        None
    } else {
        Some(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_literal(value: &str) -> String {
        let mut out = Vec::new();
        push_string(&mut out, value);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn strings_are_escaped_like_go_encoding_json() {
        assert_eq!(
            string_literal("<script>a&b</script>"),
            r#""\u003cscript\u003ea\u0026b\u003c/script\u003e""#
        );
        assert_eq!(string_literal("q\"b\\n\nt\t"), r#""q\"b\\n\nt\t""#);
        assert_eq!(
            string_literal("\u{1}\u{8}\u{c}\u{2028}"),
            r#""\u0001\b\f\u2028""#
        );
        assert_eq!(string_literal("生产密钥 🚀"), "\"生产密钥 🚀\"");
    }

    #[test]
    fn integers_and_floats_print_like_go() {
        let mut out = Vec::new();
        push_integer(&mut out, i64::MIN);
        out.push(b' ');
        push_integer(&mut out, 0);
        out.push(b' ');
        push_integer(&mut out, 4_123_456_789_012);
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "-9223372036854775808 0 4123456789012"
        );
        assert_eq!(go_float(500000.0), "500000");
        assert_eq!(go_float(7.3), "7.3");
    }

    #[test]
    fn binding_follows_go_rules() {
        assert_eq!(bind_token(b""), Err("EOF".to_string()));
        assert_eq!(bind_token(b"  \n"), Err("EOF".to_string()));
        assert_eq!(bind_token(b"{\"id\":1"), Err("unexpected EOF".to_string()));
        assert_eq!(
            bind_token(br#"{"id":"1234"}"#),
            Err("json: cannot unmarshal string into Go struct field Token.id of type int".into())
        );
        assert_eq!(
            bind_token(br#"{"remain_quota":1.5,"name":5}"#),
            Err("json: cannot unmarshal number 1.5 into Go struct field Token.remain_quota of type int".into())
        );
        assert_eq!(
            bind_token(b"[1]"),
            Err("json: cannot unmarshal array into Go value of type model.Token".into())
        );
        let bound = bind_token(
            br#"{"ID":5,"Name":"a","name":"b","allow_ips":null,"group":null,"x":1} trailing"#,
        );
        let bound = bound.unwrap_or_default();
        assert_eq!(bound.id, 5);
        assert_eq!(bound.name, "b");
        assert_eq!(bound.allow_ips, None);
        assert_eq!(bound.group, "");
        assert_eq!(
            bind_token(b"xyz"),
            Err("invalid character 'x' looking for beginning of value".to_string())
        );
    }

    #[test]
    fn ids_binding_rejects_empty_and_wrong_types() {
        assert_eq!(bind_ids(br#"{"ids":[3,1,3]}"#), Some(vec![3, 1, 3]));
        assert_eq!(bind_ids(br#"{"ids":[]}"#), None);
        assert_eq!(bind_ids(br#"{"ids":["1"]}"#), None);
        assert_eq!(bind_ids(b""), None);
    }
}
