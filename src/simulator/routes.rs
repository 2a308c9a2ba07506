//! What the server answers, independent of the transport: gin-like routing (trailing-slash
//! redirects, the OpenAI-style 404), the two authentication schemes, `GetPageQuery`, the
//! localized messages, and one handler per endpoint of `controller/token.go` (NA-latest).
//! Handlers run under the state lock and return an [`Answer`]; `server` turns it into HTTP.
//!
//! Longer than our usual ~600 lines on purpose: one handler per upstream endpoint, in the order
//! of the upstream controller, so that each can be compared with the reference side by side.

use hyper::Method;

use super::account::{self, ServerGeneration};
use super::json::{self, bind_ids, bind_token, push_integer, push_string, push_token, BoundToken};
use super::store::SharedState;
use super::token::{SimToken, STATUS_ENABLED, STATUS_EXHAUSTED, STATUS_EXPIRED};
use super::{AuthMode, FaultEndpoint, Flavor, Settings};

pub(crate) const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
pub(crate) const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// `Auth-Version` header the legacy scheme adds after a successful login.
const AUTH_VERSION: &str = "864b7076dbcd0a3c01b5520316720ebf";
/// `GlobalAPIRateLimit` is configurable; these two are the NA-latest defaults.
pub(crate) const CRITICAL_LIMIT_REQUESTS: u32 = 20;
pub(crate) const CRITICAL_LIMIT_WINDOW_SECONDS: u64 = 1200;
pub(crate) const SEARCH_LIMIT_REQUESTS: u32 = 10;
pub(crate) const SEARCH_LIMIT_WINDOW_SECONDS: u64 = 60;
/// `common.ItemsPerPage`.
const DEFAULT_PAGE_SIZE: i64 = 10;
const MAX_PAGE_SIZE: i64 = 100;
const MAX_NAME_BYTES: usize = 50;
const MAX_BATCH_KEY_IDS: usize = 100;
/// `model.GetTokenByIds` / `DeleteTokenById` when the id is 0 (hard-coded Chinese).
const MESSAGE_ID_EMPTY: &str = "id 或 userId 为空！";
const MESSAGE_RECORD_NOT_FOUND: &str = "record not found";

/// A response before it becomes HTTP.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: Option<&'static str>,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub(crate) fn json(status: u16, body: Vec<u8>) -> Answer {
        Answer {
            status,
            content_type: Some(JSON_CONTENT_TYPE),
            body,
            headers: Vec::new(),
        }
    }

    /// HTTP 200 `{"message":…,"success":false}`, how every controller error looks.
    pub(crate) fn controller_error(message: &str) -> Answer {
        Answer::json(200, json::failure(message))
    }

    /// A status with an empty body and no content type (429 from a rate limiter).
    pub(crate) fn empty(status: u16) -> Answer {
        Answer {
            status,
            content_type: None,
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }
}

/// A routed `/api` endpoint. `String` parameters are the raw `:id` path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Status,
    ListTokens,
    SearchTokens,
    GetToken(String),
    CreateToken,
    UpdateToken,
    DeleteToken(String),
    DeleteTokenBatch,
    RevealKey(String),
    RevealKeysBatch,
    UserSelf,
    HourlyUsage,
    FlowUsage,
    SubscriptionSelf,
    SubscriptionPlans,
}

impl Route {
    /// The fault endpoint this route counts as (`None`: only `FaultEndpoint::Any` matches).
    pub(crate) fn fault_endpoint(&self) -> Option<FaultEndpoint> {
        match self {
            Route::Status => Some(FaultEndpoint::Status),
            Route::ListTokens => Some(FaultEndpoint::List),
            Route::GetToken(_) => Some(FaultEndpoint::Get),
            Route::CreateToken => Some(FaultEndpoint::Create),
            Route::UpdateToken => Some(FaultEndpoint::Update),
            Route::DeleteToken(_) | Route::DeleteTokenBatch => Some(FaultEndpoint::Delete),
            Route::UserSelf => Some(FaultEndpoint::User),
            Route::HourlyUsage => Some(FaultEndpoint::HourlyUsage),
            Route::FlowUsage => Some(FaultEndpoint::FlowUsage),
            Route::SubscriptionSelf => Some(FaultEndpoint::Subscriptions),
            Route::SubscriptionPlans => Some(FaultEndpoint::Plans),
            Route::SearchTokens | Route::RevealKey(_) | Route::RevealKeysBatch => None,
        }
    }

    /// Whether a server of `generation` has this route (the others answer 404).
    pub(crate) fn exists_in(&self, generation: ServerGeneration) -> bool {
        match self {
            Route::HourlyUsage => generation.has_hourly_usage(),
            Route::FlowUsage => generation.has_flow_usage(),
            Route::SubscriptionSelf | Route::SubscriptionPlans => generation.has_subscriptions(),
            _ => true,
        }
    }

    pub(crate) fn requires_user_auth(&self) -> bool {
        *self != Route::Status
    }
}

/// The result of routing one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Routing {
    Matched(Route),
    /// gin `RedirectTrailingSlash`: 301 for GET, 307 otherwise.
    Redirect {
        location: String,
        status: u16,
    },
    /// `NoRoute` for `/api…` and `/v1…` → `RelayNotFound`.
    ApiNotFound,
    /// `NoRoute` for anything else → the web UI's index page.
    WebFallback,
}

fn match_route(method: &Method, path: &str) -> Option<Route> {
    if path == "/api/status" {
        return (method == Method::GET).then_some(Route::Status);
    }
    let account_route = match path {
        "/api/user/self" => Some(Route::UserSelf),
        "/api/data/self" => Some(Route::HourlyUsage),
        "/api/data/flow/self" => Some(Route::FlowUsage),
        "/api/subscription/self" => Some(Route::SubscriptionSelf),
        "/api/subscription/plans" => Some(Route::SubscriptionPlans),
        _ => None,
    };
    if let Some(route) = account_route {
        return (method == Method::GET).then_some(route);
    }
    let rest = path.strip_prefix("/api/token/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", [""]) => Some(Route::ListTokens),
        ("POST", [""]) => Some(Route::CreateToken),
        ("PUT", [""]) => Some(Route::UpdateToken),
        ("GET", ["search"]) => Some(Route::SearchTokens),
        ("POST", ["batch"]) => Some(Route::DeleteTokenBatch),
        ("POST", ["batch", "keys"]) => Some(Route::RevealKeysBatch),
        ("GET", [id]) if !id.is_empty() => Some(Route::GetToken((*id).to_string())),
        ("DELETE", [id]) if !id.is_empty() => Some(Route::DeleteToken((*id).to_string())),
        ("POST", [id, "key"]) if !id.is_empty() => Some(Route::RevealKey((*id).to_string())),
        _ => None,
    }
}

/// Routes a request. `decoded_path` is the percent-decoded path (gin matches on `URL.Path`);
/// redirects are built from `raw_path` and keep the query, like gin's `req.URL.String()`.
pub(crate) fn route(
    method: &Method,
    decoded_path: &str,
    raw_path: &str,
    raw_query: Option<&str>,
) -> Routing {
    if let Some(route) = match_route(method, decoded_path) {
        return Routing::Matched(route);
    }
    let toggled_decoded = toggle_trailing_slash(decoded_path);
    if match_route(method, &toggled_decoded).is_some() {
        let mut location = toggle_trailing_slash(raw_path);
        if let Some(query) = raw_query.filter(|query| !query.is_empty()) {
            location.push('?');
            location.push_str(query);
        }
        let status = if method == Method::GET { 301 } else { 307 };
        return Routing::Redirect { location, status };
    }
    if decoded_path.starts_with("/api") || decoded_path.starts_with("/v1") {
        Routing::ApiNotFound
    } else {
        Routing::WebFallback
    }
}

fn toggle_trailing_slash(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(without) if !without.is_empty() => without.to_string(),
        _ => format!("{path}/"),
    }
}

/// gin's redirect response (`http.Redirect`: a small HTML body for GET only).
pub(crate) fn redirect_answer(method: &Method, location: &str, status: u16) -> Answer {
    let mut answer = Answer::empty(status).with_header("location", location.to_string());
    if method == Method::GET {
        let text = if status == 301 {
            "Moved Permanently"
        } else {
            "Temporary Redirect"
        };
        let escaped = location
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        answer.content_type = Some(HTML_CONTENT_TYPE);
        answer.body = format!("<a href=\"{escaped}\">{text}</a>.\n\n").into_bytes();
    }
    answer
}

/// `RelayNotFound`: 404 `{"error":{"message":"Invalid URL (GET /api/tokens)",…}}`.
pub(crate) fn api_not_found_answer(method: &Method, decoded_path: &str) -> Answer {
    let mut body = Vec::with_capacity(128);
    body.extend_from_slice(b"{\"error\":{\"message\":");
    push_string(&mut body, &format!("Invalid URL ({method} {decoded_path})"));
    body.extend_from_slice(b",\"type\":\"invalid_request_error\",\"param\":\"\",\"code\":\"\"}}");
    Answer::json(404, body)
}

/// The single-page web UI the real server serves for unknown non-API paths.
pub(crate) fn web_fallback_answer() -> Answer {
    Answer {
        status: 200,
        content_type: Some(HTML_CONTENT_TYPE),
        body: b"<!doctype html><html><head><title>New API</title></head><body><div id=\"root\"></div></body></html>".to_vec(),
        headers: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Query strings, Atoi, GetPageQuery.

/// A parsed query string with Go `url.ParseQuery` rules: `&`-separated, pairs containing `;` or
/// a bad escape are dropped, `+` is a space, `Query(name)` is the first value or `""`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Query {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or_default().split('&') {
            if part.is_empty() || part.contains(';') {
                continue;
            }
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            if let (Some(name), Some(value)) = (query_unescape(name), query_unescape(value)) {
                pairs.push((name, value));
            }
        }
        Query { pairs }
    }

    pub(crate) fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }
}

fn query_unescape(text: &str) -> Option<String> {
    percent_decode(&text.replace('+', " "))
}

/// `%XX` decoding; `None` on a malformed escape. Invalid UTF-8 is replaced.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let high = bytes
                .get(index + 1)
                .and_then(|byte| (*byte as char).to_digit(16))?;
            let low = bytes
                .get(index + 2)
                .and_then(|byte| (*byte as char).to_digit(16))?;
            decoded.push((high * 16 + low) as u8);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Some(String::from_utf8_lossy(&decoded).into_owned())
}

/// Go's `strconv.Quote`, enough for error messages.
fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            control if control.is_control() => {
                quoted.push_str(&format!("\\x{:02x}", control as u32 & 0xFF))
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// Go's `strconv.Atoi` on a 64-bit platform. The error carries Go's message and the value Go
/// returns alongside it (0 for bad syntax, the clamped bound when out of range).
pub(crate) fn go_atoi(text: &str) -> Result<i64, (String, i64)> {
    use std::num::IntErrorKind;
    match text.parse::<i64>() {
        Ok(value) => Ok(value),
        Err(error) => {
            let (reason, value) = match error.kind() {
                IntErrorKind::PosOverflow => ("value out of range", i64::MAX),
                IntErrorKind::NegOverflow => ("value out of range", i64::MIN),
                _ => ("invalid syntax", 0),
            };
            Err((
                format!("strconv.Atoi: parsing {}: {reason}", go_quote(text)),
                value,
            ))
        }
    }
}

/// `x, _ := strconv.Atoi(s)`.
fn atoi_ignoring_error(text: &str) -> i64 {
    go_atoi(text).unwrap_or_else(|(_, value)| value)
}

/// `common.GetPageQuery`, quirks included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageQuery {
    pub(crate) page: i64,
    pub(crate) page_size: i64,
}

impl PageQuery {
    pub(crate) fn from_query(query: &Query) -> PageQuery {
        let mut page = go_atoi(query.get("p")).unwrap_or(0);
        let mut page_size = go_atoi(query.get("page_size")).unwrap_or(0);
        if page < 1 {
            let fallback = atoi_ignoring_error(query.get("p"));
            page = if fallback != 0 { fallback } else { 1 };
        }
        if page_size == 0 {
            page_size = atoi_ignoring_error(query.get("ps"));
            if page_size == 0 {
                page_size = atoi_ignoring_error(query.get("size"));
            }
            if page_size == 0 {
                page_size = DEFAULT_PAGE_SIZE;
            }
        }
        if page_size > MAX_PAGE_SIZE {
            page_size = MAX_PAGE_SIZE;
        }
        PageQuery { page, page_size }
    }

    /// `(Page-1)*PageSize` with Go's wrapping arithmetic; gorm clamps a negative offset to 0.
    fn offset(&self) -> usize {
        let start = self.page.wrapping_sub(1).wrapping_mul(self.page_size);
        usize::try_from(start.max(0)).unwrap_or(usize::MAX)
    }

    /// gorm emits no LIMIT for a negative limit: every row.
    fn limit(&self) -> Option<usize> {
        usize::try_from(self.page_size).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Messages.

/// The response language (`Accept-Language` first tag; English by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Language {
    English,
    SimplifiedChinese,
}

impl Language {
    pub(crate) fn from_accept_language(header: Option<&str>) -> Language {
        let first_tag = header
            .unwrap_or_default()
            .split(',')
            .next()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match first_tag.as_str() {
            "zh" | "zh-cn" | "zh-sg" | "zh-hans" | "zh-hans-cn" => Language::SimplifiedChinese,
            _ => Language::English,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Message {
    NotLoggedIn,
    AccessTokenInvalid,
    UserIdNotProvided,
    UserIdFormatError,
    UserIdMismatch,
    TokenNameTooLong,
    QuotaNegative,
    QuotaExceedMax(i64),
    ExpiredCannotEnable,
    ExhaustedCannotEnable,
    InvalidParams,
    BatchTooMany(usize),
}

pub(crate) fn message(language: Language, message: Message) -> String {
    use Language::{English, SimplifiedChinese};
    match (message, language) {
        (Message::NotLoggedIn, English) => "Unauthorized, not logged in and no access token provided".into(),
        (Message::NotLoggedIn, SimplifiedChinese) => "无权进行此操作，未登录且未提供 access token".into(),
        (Message::AccessTokenInvalid, English) => "Unauthorized, invalid access token".into(),
        (Message::AccessTokenInvalid, SimplifiedChinese) => "无权进行此操作，access token 无效".into(),
        (Message::UserIdNotProvided, English) => "Unauthorized, New-Api-User header not provided".into(),
        (Message::UserIdNotProvided, SimplifiedChinese) => "无权进行此操作，未提供 New-Api-User".into(),
        (Message::UserIdFormatError, English) => "Unauthorized, New-Api-User header format error".into(),
        (Message::UserIdFormatError, SimplifiedChinese) => "无权进行此操作，New-Api-User 格式错误".into(),
        (Message::UserIdMismatch, English) => "Unauthorized, New-Api-User does not match logged in user".into(),
        (Message::UserIdMismatch, SimplifiedChinese) => "无权进行此操作，New-Api-User 与登录用户不匹配".into(),
        (Message::TokenNameTooLong, English) => "Token name is too long".into(),
        (Message::TokenNameTooLong, SimplifiedChinese) => "令牌名称过长".into(),
        (Message::QuotaNegative, English) => "Quota value cannot be negative".into(),
        (Message::QuotaNegative, SimplifiedChinese) => "额度值不能为负数".into(),
        (Message::QuotaExceedMax(max), English) => format!("Quota value exceeds valid range, maximum is {max}"),
        (Message::QuotaExceedMax(max), SimplifiedChinese) => format!("额度值超出有效范围，最大值为 {max}"),
        (Message::ExpiredCannotEnable, English) => "Token has expired and cannot be enabled. Please modify the expiration time or set it to never expire".into(),
        (Message::ExpiredCannotEnable, SimplifiedChinese) => "令牌已过期，无法启用，请先修改令牌过期时间，或者设置为永不过期".into(),
        (Message::ExhaustedCannotEnable, English) => "Token quota is exhausted and cannot be enabled. Please modify the remaining quota or set it to unlimited".into(),
        (Message::ExhaustedCannotEnable, SimplifiedChinese) => "令牌可用额度已用尽，无法启用，请先修改令牌剩余额度，或者设置为无限额度".into(),
        (Message::InvalidParams, English) => "Invalid parameters".into(),
        (Message::InvalidParams, SimplifiedChinese) => "无效的参数".into(),
        (Message::BatchTooMany(max), English) => format!("Too many items in batch request, maximum is {max}"),
        (Message::BatchTooMany(max), SimplifiedChinese) => format!("批量请求数量过多，最多 {max} 条"),
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication.

/// `UserAuth()`. `Ok` carries headers to add to the eventual response.
pub(crate) fn authenticate(
    settings: &Settings,
    authorization: Option<&str>,
    new_api_user: Option<&str>,
    language: Language,
) -> Result<Vec<(&'static str, String)>, Answer> {
    let access_token_matches =
        |candidate: &str| !candidate.is_empty() && candidate == settings.access_token;
    match settings.auth_mode {
        AuthMode::V2 => {
            let unauthorized = || {
                Answer::json(
                    401,
                    json::failure_with_code(
                        "AUTH_UNAUTHORIZED",
                        &message(language, Message::AccessTokenInvalid),
                    ),
                )
            };
            let header = authorization.unwrap_or_default().trim();
            let fields: Vec<&str> = header.split_whitespace().collect();
            let candidate = match fields.as_slice() {
                [token] => *token,
                [scheme, token] if scheme.eq_ignore_ascii_case("bearer") => *token,
                _ => return Err(unauthorized()),
            };
            if access_token_matches(candidate) {
                Ok(Vec::new())
            } else {
                Err(unauthorized())
            }
        }
        AuthMode::Legacy | AuthMode::OneApi => {
            let header = authorization.unwrap_or_default();
            if header.is_empty() {
                return Err(Answer::json(
                    401,
                    json::failure(&message(language, Message::NotLoggedIn)),
                ));
            }
            if !access_token_matches(&header.replacen("Bearer ", "", 1)) {
                return Err(Answer::controller_error(&message(
                    language,
                    Message::AccessTokenInvalid,
                )));
            }
            if settings.auth_mode == AuthMode::OneApi {
                return Ok(Vec::new());
            }
            let refuse = |reason| Err(Answer::json(401, json::failure(&message(language, reason))));
            let user_header = new_api_user.unwrap_or_default();
            if user_header.is_empty() {
                return refuse(Message::UserIdNotProvided);
            }
            match go_atoi(user_header) {
                Err(_) => refuse(Message::UserIdFormatError),
                Ok(user_id) if user_id != settings.user_id => refuse(Message::UserIdMismatch),
                Ok(_) => Ok(vec![("auth-version", AUTH_VERSION.to_string())]),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// What a handler needs from the request.
pub(crate) struct ApiRequest<'a> {
    pub(crate) query: &'a Query,
    pub(crate) body: &'a [u8],
    pub(crate) language: Language,
    pub(crate) now: i64,
}

/// Runs the controller of `route` against the state.
pub(crate) fn handle(
    settings: &Settings,
    state: &mut SharedState,
    route: &Route,
    request: &ApiRequest<'_>,
) -> Answer {
    match route {
        Route::Status => get_status(settings, state.account.data_export),
        Route::ListTokens => list_tokens(settings, state, request),
        Route::SearchTokens => search_tokens(settings, state, request),
        Route::GetToken(id) => get_token(settings, state, id),
        Route::CreateToken => create_token(settings, state, request),
        Route::UpdateToken => update_token(settings, state, request),
        Route::DeleteToken(id) => delete_token(settings, state, id),
        Route::DeleteTokenBatch => delete_token_batch(settings, state, request),
        Route::RevealKey(id) => reveal_key(settings, state, id),
        Route::RevealKeysBatch => reveal_keys_batch(settings, state, request),
        Route::UserSelf => account::user_self(settings, &state.account),
        Route::HourlyUsage => {
            account::hourly_usage(settings, &state.account, request.query, request.now)
        }
        Route::FlowUsage => account::flow_usage(&state.account, request.query, request.now),
        Route::SubscriptionSelf => account::subscription_self(&state.account, request.now),
        Route::SubscriptionPlans => account::subscription_plans(&state.account),
    }
}

/// `GET /api/status` (`controller.GetStatus`, a subset of its keys, sorted like `gin.H`).
fn get_status(settings: &Settings, data_export: bool) -> Answer {
    let body = json::success_with_data(512, |out| {
        out.extend_from_slice(b"{\"display_in_currency\":true,\"enable_batch_update\":false");
        if settings.generation != ServerGeneration::OneApi {
            out.extend_from_slice(b",\"enable_data_export\":");
            json::push_bool(out, data_export);
        }
        out.extend_from_slice(b",\"quota_display_type\":\"USD\",\"quota_per_unit\":");
        out.extend_from_slice(json::go_float(settings.quota_per_unit).as_bytes());
        out.extend_from_slice(b",\"server_address\":");
        push_string(out, &settings.server_address);
        out.extend_from_slice(b",\"start_time\":");
        push_integer(out, settings.started_at);
        out.extend_from_slice(b",\"system_name\":\"New API\",\"usd_exchange_rate\":7.3");
        out.extend_from_slice(b",\"version\":\"v0.0.0-cometapi-keymon-simulator\"}");
    });
    Answer::json(200, body)
}

/// `{"page":…,"page_size":…,"total":…,"items":[…]}` (`common.PageInfo`).
fn page_info_answer<'t>(
    settings: &Settings,
    page_query: PageQuery,
    total: usize,
    items: impl Iterator<Item = &'t SimToken>,
) -> Answer {
    let expected_items = page_query
        .limit()
        .unwrap_or(total)
        .min(total)
        .min(1_000_000);
    let body = json::success_with_data(expected_items * 420 + 64, |out| {
        out.extend_from_slice(b"{\"page\":");
        push_integer(out, page_query.page);
        out.extend_from_slice(b",\"page_size\":");
        push_integer(out, page_query.page_size);
        out.extend_from_slice(b",\"total\":");
        push_integer(out, i64::try_from(total).unwrap_or(i64::MAX));
        out.extend_from_slice(b",\"items\":[");
        for (index, token) in items.enumerate() {
            if index > 0 {
                out.push(b',');
            }
            push_token(out, token, settings.mask_keys);
        }
        out.extend_from_slice(b"]}");
    });
    Answer::json(200, body)
}

/// one-api's `GetAllTokens`: `p` 0-based (`strconv.Atoi`, negative → 0), `config.ItemsPerPage`
/// (10) keys a page whatever else is asked, `data` a bare array.
fn list_tokens_one_api(
    settings: &Settings,
    state: &SharedState,
    request: &ApiRequest<'_>,
) -> Answer {
    const ONE_API_ITEMS_PER_PAGE: usize = 10;
    let page = atoi_ignoring_error(request.query.get("p")).max(0);
    let offset = usize::try_from(page)
        .unwrap_or(usize::MAX)
        .saturating_mul(ONE_API_ITEMS_PER_PAGE);
    let items = state
        .store
        .page_for_user(settings.user_id, offset, Some(ONE_API_ITEMS_PER_PAGE));
    let body = json::success_with_data(ONE_API_ITEMS_PER_PAGE * 420 + 8, |out| {
        out.push(b'[');
        for (index, token) in items.enumerate() {
            if index > 0 {
                out.push(b',');
            }
            json::push_one_api_token(out, token);
        }
        out.push(b']');
    });
    Answer::json(200, body)
}

/// `GET /api/token/` (`GetAllTokens`): `ORDER BY id DESC` with `GetPageQuery` paging.
fn list_tokens(settings: &Settings, state: &SharedState, request: &ApiRequest<'_>) -> Answer {
    if settings.flavor == Flavor::OneApi {
        return list_tokens_one_api(settings, state, request);
    }
    let page_query = PageQuery::from_query(request.query);
    let total = state.store.count_for_user(settings.user_id);
    let items =
        state
            .store
            .page_for_user(settings.user_id, page_query.offset(), page_query.limit());
    page_info_answer(settings, page_query, total, items)
}

/// SQL `LIKE` with only `%` as a wildcard (the server escapes `_`).
fn like_matches(pattern: &str, text: &str) -> bool {
    if !pattern.contains('%') {
        return pattern == text;
    }
    let parts: Vec<&str> = pattern.split('%').collect();
    let mut rest = text;
    for (index, part) in parts.iter().enumerate() {
        if index == 0 {
            match rest.strip_prefix(part) {
                Some(remaining) => rest = remaining,
                None => return false,
            }
        } else if index == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(position) => rest = &rest[position + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// `GET /api/token/search?keyword=&token=` (NA-latest: exact unless `%`, paginated). The
/// pattern-validation errors of the real server are not reproduced.
fn search_tokens(settings: &Settings, state: &SharedState, request: &ApiRequest<'_>) -> Answer {
    let page_query = PageQuery::from_query(request.query);
    let keyword = request.query.get("keyword");
    let key_pattern = request.query.get("token");
    let key_pattern = key_pattern.strip_prefix("sk-").unwrap_or(key_pattern);
    let matches = |token: &&SimToken| {
        (keyword.is_empty() || like_matches(keyword, &token.name))
            && (key_pattern.is_empty() || like_matches(key_pattern, &token.key))
    };
    let total = state
        .store
        .newest_first_for_user(settings.user_id)
        .filter(matches)
        .count();
    let limit = if page_query.page_size <= 0 || page_query.page_size > MAX_PAGE_SIZE {
        MAX_PAGE_SIZE as usize
    } else {
        page_query.page_size as usize
    };
    let items = state
        .store
        .newest_first_for_user(settings.user_id)
        .filter(matches)
        .skip(page_query.offset())
        .take(limit);
    page_info_answer(settings, page_query, total, items)
}

/// `model.GetTokenByIds` as a controller error.
fn find_owned<'s>(
    settings: &Settings,
    state: &'s SharedState,
    id: i64,
) -> Result<&'s SimToken, Answer> {
    if id == 0 {
        return Err(Answer::controller_error(MESSAGE_ID_EMPTY));
    }
    state
        .store
        .get_owned(id, settings.user_id)
        .ok_or_else(|| Answer::controller_error(MESSAGE_RECORD_NOT_FOUND))
}

fn token_answer(settings: &Settings, token: &SimToken) -> Answer {
    Answer::json(
        200,
        json::success_with_data(480, |out| match settings.flavor {
            Flavor::NewApi => push_token(out, token, settings.mask_keys),
            Flavor::OneApi => json::push_one_api_token(out, token),
        }),
    )
}

/// `GET /api/token/:id`.
fn get_token(settings: &Settings, state: &SharedState, raw_id: &str) -> Answer {
    let id = match go_atoi(raw_id) {
        Ok(id) => id,
        Err((message, _)) => return Answer::controller_error(&message),
    };
    match find_owned(settings, state, id) {
        Ok(token) => token_answer(settings, token),
        Err(answer) => answer,
    }
}

/// The name and quota checks shared by create and update.
fn validate_name_and_quota(
    settings: &Settings,
    bound: &BoundToken,
    language: Language,
) -> Result<(), Answer> {
    if bound.name.len() > MAX_NAME_BYTES {
        return Err(Answer::controller_error(&message(
            language,
            Message::TokenNameTooLong,
        )));
    }
    if !bound.unlimited_quota {
        if bound.remain_quota < 0 {
            return Err(Answer::controller_error(&message(
                language,
                Message::QuotaNegative,
            )));
        }
        let max_quota = settings.max_quota();
        if bound.remain_quota > max_quota {
            return Err(Answer::controller_error(&message(
                language,
                Message::QuotaExceedMax(max_quota),
            )));
        }
    }
    Ok(())
}

/// `POST /api/token/` (`AddToken`): no data in the answer, gorm defaults on insert.
fn create_token(settings: &Settings, state: &mut SharedState, request: &ApiRequest<'_>) -> Answer {
    let bound = match bind_token(request.body) {
        Ok(bound) => bound,
        Err(message) => return Answer::controller_error(&message),
    };
    if let Err(answer) = validate_name_and_quota(settings, &bound, request.language) {
        return answer;
    }
    if state.store.count_for_user(settings.user_id) >= settings.max_tokens_per_user {
        return Answer::controller_error(&format!(
            "已达到最大令牌数量限制 ({})",
            settings.max_tokens_per_user
        ));
    }
    let cross_group_retry = bound.group == "auto" && bound.cross_group_retry;
    let key = state.store.generate_key();
    state.store.insert(SimToken {
        id: 0,
        user_id: settings.user_id,
        key,
        status: STATUS_ENABLED,
        name: bound.name,
        created_time: request.now,
        accessed_time: request.now,
        expired_time: if bound.expired_time == 0 {
            -1
        } else {
            bound.expired_time
        },
        remain_quota: bound.remain_quota,
        unlimited_quota: bound.unlimited_quota,
        model_limits_enabled: bound.model_limits_enabled,
        model_limits: bound.model_limits,
        allow_ips: Some(bound.allow_ips.unwrap_or_default()),
        used_quota: 0,
        group: bound.group,
        cross_group_retry,
    });
    Answer::json(200, json::success_without_data())
}

/// `PUT /api/token/` (`UpdateToken`): enable guard against the stored row, `status_only`, and
/// otherwise the whitelist copy that resets omitted fields.
fn update_token(settings: &Settings, state: &mut SharedState, request: &ApiRequest<'_>) -> Answer {
    let bound = match bind_token(request.body) {
        Ok(bound) => bound,
        Err(message) => return Answer::controller_error(&message),
    };
    if let Err(answer) = validate_name_and_quota(settings, &bound, request.language) {
        return answer;
    }
    if let Err(answer) = find_owned(settings, state, bound.id) {
        return answer;
    }
    let status_only = !request.query.get("status_only").is_empty();
    let Some(stored) = state.store.get_owned_mut(bound.id, settings.user_id) else {
        return Answer::controller_error(MESSAGE_RECORD_NOT_FOUND);
    };
    if bound.status == STATUS_ENABLED {
        if stored.status == STATUS_EXPIRED
            && stored.expired_time <= request.now
            && stored.expired_time != -1
        {
            return Answer::controller_error(&message(
                request.language,
                Message::ExpiredCannotEnable,
            ));
        }
        if stored.status == STATUS_EXHAUSTED && stored.remain_quota <= 0 && !stored.unlimited_quota
        {
            return Answer::controller_error(&message(
                request.language,
                Message::ExhaustedCannotEnable,
            ));
        }
    }
    if status_only {
        stored.status = bound.status;
    } else {
        stored.cross_group_retry = bound.group == "auto" && bound.cross_group_retry;
        stored.name = bound.name;
        stored.expired_time = bound.expired_time;
        stored.remain_quota = bound.remain_quota;
        stored.unlimited_quota = bound.unlimited_quota;
        stored.model_limits_enabled = bound.model_limits_enabled;
        stored.model_limits = bound.model_limits;
        stored.allow_ips = bound.allow_ips;
        stored.group = bound.group;
    }
    token_answer(settings, stored)
}

/// `DELETE /api/token/:id` (a non-numeric id is 0 → "id 或 userId 为空！").
fn delete_token(settings: &Settings, state: &mut SharedState, raw_id: &str) -> Answer {
    let id = go_atoi(raw_id).unwrap_or(0);
    if let Err(answer) = find_owned(settings, state, id) {
        return answer;
    }
    state.store.remove(id);
    Answer::json(200, json::success_without_data())
}

/// `POST /api/token/batch {"ids":[…]}` → `data` = number of own records deleted.
fn delete_token_batch(
    settings: &Settings,
    state: &mut SharedState,
    request: &ApiRequest<'_>,
) -> Answer {
    let Some(ids) = bind_ids(request.body) else {
        return Answer::controller_error(&message(request.language, Message::InvalidParams));
    };
    let mut deleted = 0i64;
    for id in ids {
        if state.store.get_owned(id, settings.user_id).is_some() && state.store.remove(id) {
            deleted += 1;
        }
    }
    Answer::json(
        200,
        json::success_with_data(8, |out| push_integer(out, deleted)),
    )
}

/// `POST /api/token/:id/key` → `{"data":{"key":"<full key>"},…}`.
fn reveal_key(settings: &Settings, state: &SharedState, raw_id: &str) -> Answer {
    let id = match go_atoi(raw_id) {
        Ok(id) => id,
        Err((message, _)) => return Answer::controller_error(&message),
    };
    match find_owned(settings, state, id) {
        Ok(token) => Answer::json(
            200,
            json::success_with_data(80, |out| {
                out.extend_from_slice(b"{\"key\":");
                push_string(out, &token.key);
                out.push(b'}');
            }),
        ),
        Err(answer) => answer,
    }
}

/// `POST /api/token/batch/keys {"ids":[…]}` (1–100 ids) → `{"data":{"keys":{"<id>":"<key>"}}}`,
/// map keys sorted as strings like Go's encoder; foreign or unknown ids are absent.
fn reveal_keys_batch(settings: &Settings, state: &SharedState, request: &ApiRequest<'_>) -> Answer {
    let Some(ids) = bind_ids(request.body) else {
        return Answer::controller_error(&message(request.language, Message::InvalidParams));
    };
    if ids.len() > MAX_BATCH_KEY_IDS {
        return Answer::controller_error(&message(
            request.language,
            Message::BatchTooMany(MAX_BATCH_KEY_IDS),
        ));
    }
    let mut found: Vec<(String, &str)> = ids
        .iter()
        .filter_map(|id| state.store.get_owned(*id, settings.user_id))
        .map(|token| (token.id.to_string(), token.key.as_str()))
        .collect();
    found.sort();
    found.dedup();
    Answer::json(
        200,
        json::success_with_data(found.len() * 64 + 16, |out| {
            out.extend_from_slice(b"{\"keys\":{");
            for (index, (id, key)) in found.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                push_string(out, id);
                out.push(b':');
                push_string(out, key);
            }
            out.extend_from_slice(b"}}");
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(raw: &str) -> (i64, i64) {
        let parsed = PageQuery::from_query(&Query::parse(Some(raw)));
        (parsed.page, parsed.page_size)
    }

    #[test]
    fn get_page_query_quirks() {
        assert_eq!(page(""), (1, 10));
        assert_eq!(page("p=0&page_size=20"), (1, 20));
        assert_eq!(page("p=abc"), (1, 10));
        assert_eq!(page("p=-3&page_size=20"), (-3, 20));
        assert_eq!(page("p=1&page_size=0&ps=7"), (1, 7));
        assert_eq!(page("p=1&page_size=abc&size=50"), (1, 50));
        assert_eq!(page("p=2&page_size=500"), (2, 100));
        assert_eq!(page("p=1&page_size=-1"), (1, -1));
        assert_eq!(page("p=1&p=2"), (1, 10));
        assert_eq!(page("p=99999999999999999999"), (i64::MAX, 10));
        let overflowing = PageQuery {
            page: i64::MAX,
            page_size: 100,
        };
        assert_eq!(
            overflowing.offset(),
            0,
            "wrapping multiply goes negative, clamped to 0"
        );
    }

    #[test]
    fn atoi_messages_match_go() {
        assert_eq!(go_atoi("42"), Ok(42));
        assert_eq!(go_atoi("+7"), Ok(7));
        assert_eq!(
            go_atoi("abc"),
            Err((
                "strconv.Atoi: parsing \"abc\": invalid syntax".to_string(),
                0
            ))
        );
        assert_eq!(
            go_atoi(""),
            Err(("strconv.Atoi: parsing \"\": invalid syntax".to_string(), 0))
        );
        assert!(go_atoi("99999999999999999999")
            .is_err_and(|(m, v)| m.ends_with("value out of range") && v == i64::MAX));
    }

    #[test]
    fn routing_matches_gin() {
        let get = Method::GET;
        assert_eq!(
            route(&get, "/api/token/", "/api/token/", None),
            Routing::Matched(Route::ListTokens)
        );
        assert_eq!(
            route(&get, "/api/token", "/api/token", Some("p=1")),
            Routing::Redirect {
                location: "/api/token/?p=1".into(),
                status: 301
            }
        );
        assert_eq!(
            route(&Method::PUT, "/api/token", "/api/token", None),
            Routing::Redirect {
                location: "/api/token/".into(),
                status: 307
            }
        );
        assert_eq!(
            route(&get, "/api/token/5/", "/api/token/5/", None),
            Routing::Redirect {
                location: "/api/token/5".into(),
                status: 301
            }
        );
        assert_eq!(
            route(&get, "/api/tokens", "/api/tokens", None),
            Routing::ApiNotFound
        );
        assert_eq!(
            route(&Method::PATCH, "/api/token/", "/api/token/", None),
            Routing::ApiNotFound
        );
        assert_eq!(
            route(&get, "/index.html", "/index.html", None),
            Routing::WebFallback
        );
        assert_eq!(
            route(
                &Method::POST,
                "/api/token/12/key",
                "/api/token/12/key",
                None
            ),
            Routing::Matched(Route::RevealKey("12".into()))
        );
    }

    #[test]
    fn like_matching_uses_percent_only() {
        assert!(like_matches("prod", "prod"));
        assert!(!like_matches("prod", "prod-1"));
        assert!(like_matches("prod%", "prod-1"));
        assert!(like_matches("%-1", "prod-1"));
        assert!(like_matches("p%d%1", "prod-1"));
        assert!(!like_matches("p_od", "prod"));
    }

    #[test]
    fn accept_language_selects_chinese_only_for_simplified_tags() {
        assert_eq!(
            Language::from_accept_language(Some("zh-CN,zh;q=0.9")),
            Language::SimplifiedChinese
        );
        assert_eq!(
            Language::from_accept_language(Some("en-US")),
            Language::English
        );
        assert_eq!(Language::from_accept_language(None), Language::English);
    }
}
