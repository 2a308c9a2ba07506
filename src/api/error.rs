//! `ApiError`: every way a management API request or a full listing can fail, each mapped to one
//! reason from the fixed set the contract exposes as `cometapi_poll_errors_total{reason}`.
//!
//! Messages name the endpoint and the HTTP status and never contain the access token or a key:
//! server-supplied text is shortened and scrubbed before it is stored here.

use std::fmt;
use std::time::Duration;

use crate::secret::ACCESS_TOKEN_HELP;

/// The endpoint a request went to; its `label()` is the `endpoint` label of
/// `cometapi_api_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    List,
    Get,
    Create,
    Update,
    Delete,
    Status,
    /// `GET /api/user/self`: the wallet.
    User,
    /// `GET /api/data/flow/self`: spend by key, group and model.
    Usage,
    /// `GET /api/data/self`: hourly spend by model (servers without the flow route).
    UsageHourly,
    /// `GET /api/subscription/self`.
    Subscriptions,
    /// `GET /api/subscription/plans`.
    Plans,
}

impl Endpoint {
    pub const ALL: [Endpoint; 11] = [
        Endpoint::List,
        Endpoint::Get,
        Endpoint::Create,
        Endpoint::Update,
        Endpoint::Delete,
        Endpoint::Status,
        Endpoint::User,
        Endpoint::Usage,
        Endpoint::UsageHourly,
        Endpoint::Subscriptions,
        Endpoint::Plans,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::List => "list",
            Endpoint::Get => "get",
            Endpoint::Create => "create",
            Endpoint::Update => "update",
            Endpoint::Delete => "delete",
            Endpoint::Status => "status",
            Endpoint::User => "user",
            Endpoint::Usage => "usage",
            Endpoint::UsageHourly => "usage_hourly",
            Endpoint::Subscriptions => "subscriptions",
            Endpoint::Plans => "plans",
        }
    }

    /// The request line we show in messages (no query string, no ids).
    pub fn describe(self) -> &'static str {
        match self {
            Endpoint::List => "GET /api/token/",
            Endpoint::Get => "GET /api/token/{id}",
            Endpoint::Create => "POST /api/token/",
            Endpoint::Update => "PUT /api/token/",
            Endpoint::Delete => "DELETE /api/token/{id}",
            Endpoint::Status => "GET /api/status",
            Endpoint::User => "GET /api/user/self",
            Endpoint::Usage => "GET /api/data/flow/self",
            Endpoint::UsageHourly => "GET /api/data/self",
            Endpoint::Subscriptions => "GET /api/subscription/self",
            Endpoint::Plans => "GET /api/subscription/plans",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.describe())
    }
}

/// The fixed reason set of `cometapi_poll_errors_total`.
pub const POLL_ERROR_REASONS: [&str; 11] = [
    "http_401",
    "http_403",
    "http_429",
    "http_5xx",
    "http_other",
    "timeout",
    "connect",
    "decode",
    "api_error",
    "incomplete",
    "body_too_large",
];

/// Reasons of `cometapi_poll_errors_total` for a read that failed inside a poll that still
/// completed: the spend (`/api/data/*`) or the subscriptions (`/api/subscription/*`). The keys
/// and the wallet of such a poll are current; the failed part keeps its last values. The HTTP
/// status or transport error is in `cometapi_api_requests_total{endpoint}` and the log.
pub const PARTIAL_READ_REASONS: [&str; 2] = ["usage_failed", "subscriptions_failed"];

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{endpoint}: HTTP {status}{hint}", hint = status_hint(*status))]
    Http { endpoint: Endpoint, status: u16 },
    /// The server refused the credentials: a 401, or (older servers) HTTP 200 `success:false`
    /// with the "invalid access token" text. What to do depends on what the server said, so the
    /// server's (scrubbed) text and a diagnosis travel together.
    #[error("{}", describe_unauthorized(self))]
    Unauthorized {
        endpoint: Endpoint,
        /// The HTTP status the refusal came with (401, or 200 on servers before 2026-07-20).
        status: u16,
        account: String,
        problem: AuthProblem,
        /// The server's message, scrubbed; empty when it sent none.
        server_said: String,
    },
    #[error("{endpoint}: no complete answer within {timeout:?}")]
    Timeout {
        endpoint: Endpoint,
        timeout: Duration,
    },
    /// No answer: DNS, TCP, TLS. `target` is `host:port` and `account` the account whose
    /// `base_url` it comes from, so the message says which setting to check.
    #[error("{endpoint}: cannot connect to {target} (base_url of account {account}): {detail}")]
    Connect {
        endpoint: Endpoint,
        account: String,
        target: String,
        detail: String,
    },
    #[error("{endpoint}: unexpected response: {detail}")]
    Decode { endpoint: Endpoint, detail: String },
    #[error("{endpoint}: server answered success=false: {message:?}")]
    Refused { endpoint: Endpoint, message: String },
    /// `GET /api/token/{id}` of a key the account does not have (deleted, never existed, or
    /// another user's): the server's "record not found".
    #[error("account {account} has no key {key_id}")]
    KeyNotFound { account: String, key_id: i64 },
    #[error("{endpoint}: response body larger than {limit} bytes (poll.max_body_bytes)")]
    BodyTooLarge { endpoint: Endpoint, limit: u64 },
    #[error("key listing did not add up: {detail}")]
    Incomplete { detail: String },
    #[error("cancelled by shutdown")]
    Cancelled,
}

/// What an authentication refusal means, diagnosed from the server's message (English, or the
/// Chinese of servers before 2026-02-05; see [`diagnose_auth_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthProblem {
    /// The access token is unknown to the server (or no other reason was given).
    TokenRejected {
        /// The configured token has the shape of an API key (`sk-...`).
        looks_like_api_key: bool,
    },
    /// The server (new-api before 2026-07-20) needs `New-Api-User` and none was sent.
    UserIdRequired,
    /// The server could not read `New-Api-User` as a number.
    UserIdNotNumeric,
    /// `New-Api-User` is not the id of the token's user.
    UserIdMismatch { user_id: Option<i64> },
}

/// The server texts of `middleware/auth.go` (i18n keys `auth.*`, English and zh-CN; the zh-CN
/// ones are what every server before 2026-02-05 sends). Recognised only for this diagnosis.
const USER_ID_NOT_PROVIDED: [&str; 2] = ["New-Api-User header not provided", "未提供 New-Api-User"];
const USER_ID_FORMAT_ERROR: [&str; 2] =
    ["New-Api-User header format error", "New-Api-User 格式错误"];
const USER_ID_MISMATCH: [&str; 2] = [
    "New-Api-User does not match logged in user",
    "New-Api-User 与登录用户不匹配",
];
const ACCESS_TOKEN_INVALID: [&str; 2] = ["invalid access token", "access token 无效"];

/// The diagnosis of an auth message: `None` when the text is not one of the token or
/// `New-Api-User` refusals (a 200 `success:false` with other text stays a plain refusal).
pub fn diagnose_auth_message(message: &str, user_id: Option<i64>) -> Option<AuthProblem> {
    let says = |texts: [&str; 2]| texts.iter().any(|text| message.contains(text));
    if says(USER_ID_NOT_PROVIDED) {
        Some(AuthProblem::UserIdRequired)
    } else if says(USER_ID_FORMAT_ERROR) {
        Some(AuthProblem::UserIdNotNumeric)
    } else if says(USER_ID_MISMATCH) {
        Some(AuthProblem::UserIdMismatch { user_id })
    } else if says(ACCESS_TOKEN_INVALID) {
        Some(AuthProblem::TokenRejected {
            looks_like_api_key: false,
        })
    } else {
        None
    }
}

fn describe_unauthorized(error: &ApiError) -> String {
    let ApiError::Unauthorized {
        endpoint,
        status,
        account,
        problem,
        server_said,
    } = error
    else {
        return String::new();
    };
    let status_text = if *status == 200 {
        "HTTP 200 success=false".to_owned()
    } else {
        format!("HTTP {status}")
    };
    let said = if server_said.is_empty() {
        "the server gave no reason".to_owned()
    } else {
        format!("the server said {server_said:?}")
    };
    match problem {
        AuthProblem::TokenRejected { looks_like_api_key } => {
            let advice = if *looks_like_api_key {
                format!(
                    "the access token of account {account} has the shape of an API key (sk-...): \
                     {ACCESS_TOKEN_HELP}"
                )
            } else {
                format!(
                    "check the access token of account {account}: it must be the personal access \
                     token from Console → Personal Settings (generating a new one there \
                     invalidates the old one)"
                )
            };
            format!("{endpoint}: {status_text} (access token rejected): {said}; {advice}")
        }
        AuthProblem::UserIdRequired => format!(
            "{endpoint}: {status_text} (user_id needed; the token itself may be fine): {said}; \
             this server requires user_id (your numeric user id) for account {account}: set \
             user_id in its [[accounts]] table (or COMETAPI_USER_ID)"
        ),
        AuthProblem::UserIdNotNumeric => format!(
            "{endpoint}: {status_text} (user_id not accepted): {said}; set user_id of account \
             {account} to your numeric user id"
        ),
        AuthProblem::UserIdMismatch { user_id } => {
            let which = user_id.map_or_else(
                || "the user_id sent".to_owned(),
                |id| format!("user_id {id}"),
            );
            format!(
                "{endpoint}: {status_text} (user_id does not match the token): {said}; {which} \
                 is not the token's user: set user_id of account {account} to the numeric id of \
                 the user the access token belongs to"
            )
        }
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 => " (access token rejected)",
        404 => " (no such route: base_url must be the server's root URL, e.g. https://api.cometapi.com)",
        403 => " (access token lacks the privilege)",
        429 => " (rate limited by the server)",
        500..=599 => " (server error)",
        _ => "",
    }
}

impl ApiError {
    /// The `reason` label for `cometapi_poll_errors_total`; `None` for a shutdown, which is not
    /// a failed poll.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            ApiError::Http { status: 401, .. } => "http_401",
            ApiError::Http { status: 403, .. } => "http_403",
            ApiError::Http { status: 429, .. } => "http_429",
            ApiError::Http {
                status: 500..=599, ..
            } => "http_5xx",
            ApiError::Http { .. } => "http_other",
            // A refused token counts as http_401 whatever status carried it: servers before
            // 2026-07-20 answer an unknown token with HTTP 200, the newest with 401, and an alert
            // on `reason="http_401"` must catch both.
            ApiError::Unauthorized { .. } => "http_401",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Connect { .. } => "connect",
            ApiError::Decode { .. } => "decode",
            ApiError::Refused { .. } | ApiError::KeyNotFound { .. } => "api_error",
            ApiError::Incomplete { .. } => "incomplete",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::Cancelled => return None,
        })
    }

    /// Transient failures worth another try within the same poll: connection errors, timeouts
    /// and 5xx. A 429 is not retried here: the budget waits out `Retry-After` instead.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Connect { .. }
                | ApiError::Timeout { .. }
                | ApiError::Http {
                    status: 500..=599,
                    ..
                }
        )
    }
}

/// Server text we keep in an error: at most 200 characters, control characters replaced, the
/// access token removed, and anything shaped like a key removed too — a run of 20 or more
/// token characters (keys are 48 alphanumerics, access tokens about 32 base64 characters) or a
/// masked key (`abcd**********wxyz`). A hostile or buggy server could echo either back, and
/// real messages ("record not found", "Token name is too long", a 15-digit quota maximum)
/// contain no such runs.
pub fn scrub_server_text(text: &str, secret: &str) -> String {
    const REDACTED: &str = "**redacted**";
    let without_secret = if secret.len() >= 4 {
        text.replace(secret, REDACTED)
    } else {
        text.to_owned()
    };
    let is_token_character = |character: char| {
        character.is_ascii_alphanumeric() || matches!(character, '+' | '/' | '=' | '_' | '-' | '*')
    };
    let mut scrubbed = String::with_capacity(without_secret.len());
    let mut word = String::new();
    let flush_word = |word: &mut String, out: &mut String| {
        let key_shaped = word.chars().count() >= 20 || (word.contains("****") && word != REDACTED);
        out.push_str(if key_shaped { REDACTED } else { word });
        word.clear();
    };
    for character in without_secret.chars() {
        if is_token_character(character) {
            word.push(character);
            continue;
        }
        flush_word(&mut word, &mut scrubbed);
        scrubbed.push(if character.is_control() {
            ' '
        } else {
            character
        });
    }
    flush_word(&mut word, &mut scrubbed);
    let mut shortened: String = scrubbed.chars().take(200).collect();
    if scrubbed.chars().count() > 200 {
        shortened.push('…');
    }
    shortened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_into_the_fixed_reason_set() {
        let errors = [
            ApiError::Http {
                endpoint: Endpoint::List,
                status: 401,
            },
            ApiError::Http {
                endpoint: Endpoint::List,
                status: 403,
            },
            ApiError::Http {
                endpoint: Endpoint::List,
                status: 429,
            },
            ApiError::Http {
                endpoint: Endpoint::List,
                status: 502,
            },
            ApiError::Http {
                endpoint: Endpoint::List,
                status: 404,
            },
            ApiError::Timeout {
                endpoint: Endpoint::List,
                timeout: Duration::from_secs(1),
            },
            ApiError::Connect {
                endpoint: Endpoint::List,
                account: "main".into(),
                target: "127.0.0.1:9".into(),
                detail: "refused".into(),
            },
            ApiError::Decode {
                endpoint: Endpoint::List,
                detail: "x".into(),
            },
            ApiError::Refused {
                endpoint: Endpoint::List,
                message: "x".into(),
            },
            ApiError::Incomplete { detail: "x".into() },
            ApiError::BodyTooLarge {
                endpoint: Endpoint::List,
                limit: 1,
            },
        ];
        let reasons: Vec<&str> = errors.iter().map(|error| error.reason().unwrap()).collect();
        assert_eq!(reasons, POLL_ERROR_REASONS);
        assert_eq!(ApiError::Cancelled.reason(), None);
    }

    #[test]
    fn server_text_is_shortened_and_scrubbed() {
        let scrubbed = scrub_server_text("bad token tok-SECRET-1\nagain", "tok-SECRET-1");
        assert_eq!(scrubbed, "bad token **redacted** again");
        assert_eq!(
            scrub_server_text(&"x y".repeat(200), "zzzz")
                .chars()
                .count(),
            201
        );
        let key = "TAsftk8p6XUSRxSkCKF6lqTX4pTpY3nhyB4VdaDVn32jwPQD";
        assert_eq!(
            scrub_server_text(&format!("no key {key}."), "zzzz"),
            "no key **redacted**."
        );
        assert_eq!(
            scrub_server_text("masked aB3d**********Qr5t here", "zzzz"),
            "masked **redacted** here"
        );
        let real = "Quota value exceeds valid range, maximum is 500000000000000";
        assert_eq!(scrub_server_text(real, "zzzz"), real);
        assert_eq!(scrub_server_text("令牌名称过长", "zzzz"), "令牌名称过长");
    }
}
