//! The management API client: one `ApiClient` per account, over reqwest with rustls.
//!
//! Every request carries the raw access token in `Authorization` (never `Bearer`; the header is
//! marked sensitive so it is redacted from reqwest's `Debug`), the optional `New-Api-User` id and
//! `Accept-Language: en`. Every request has a connect and a total timeout, waits for the
//! account's budget (its server's, shared with the other accounts there; see `budget`), and
//! reads at most `max_body_bytes` of (decompressed) body. Connection errors, timeouts and 5xx
//! are retried `max_retries` times with exponential backoff and jitter; a 429 is not retried
//! within the poll but pauses the server's budget for `Retry-After`.
//!
//! Answers are branched on `success`, never on `message`, with two exceptions made only to tell
//! the user what to do: an authentication refusal is diagnosed from the server's text (English,
//! or the Chinese of older servers: token unknown, `New-Api-User` missing or wrong; see
//! `error::diagnose_auth_message`), and a key read's "record not found" is `KeyNotFound`. An
//! HTML page where JSON was expected is reported as a `base_url` that is not the server's root.
//!
//! `scan` builds the complete, de-duplicated listing of an account on top of `list_page`.
//!
//! Over 700 lines on purpose: the client is one type whose methods share the request path (budget,
//! retries, body cap, scrubbing); splitting it would spread that path over files.

pub mod account;
pub mod budget;
pub mod edit;
pub mod error;
pub mod probe;
pub mod scan;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use account::{
    read_account_money, AccountMoneyRead, AccountRouteMemory, MoneyPart, PartialFailure,
    REQUESTS_PER_POLL_BEYOND_PAGES,
};
pub use budget::{AccountBudget, BudgetPool, RequestBudget};
pub use edit::{editable_changes, FieldChange, KeyEdit};
pub use error::{ApiError, AuthProblem, Endpoint, PARTIAL_READ_REASONS, POLL_ERROR_REASONS};
pub use probe::{ListingProbe, RouteAnswer};
pub use scan::{
    newest_keys, scan_account, scan_account_observed, AccountListing, NoScanProgress, ScanObserver,
    ScanProgress,
};
pub use wire::TokenRecord as KeyRecord;

use crate::secret::Secret;
use wire::{Envelope, ListData, ServerStatus, WriteKind};

/// `quota_per_unit` when `/api/status` does not say: new-api's `common.QuotaPerUnit` default
/// (500 000 quota units per US dollar).
pub const DEFAULT_QUOTA_PER_UNIT: f64 = 500_000.0;

/// How long a 429 without `Retry-After` (servers before 2026-07) holds the account back. The
/// failed poll already stops requests until the next tick, which at the default interval is a
/// minute away; this only keeps short intervals from hitting the limiter again at once.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What `GET /api/status` says that a poll uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerFacts {
    pub quota_per_unit: f64,
    /// `enable_data_export`; `None` when the server does not say.
    pub data_export_enabled: Option<bool>,
}

/// Receives one call per HTTP request sent, for `cometapi_api_requests_total`.
pub trait RequestObserver: Send + Sync {
    /// `code` is the HTTP status as text, or `"error"` when no response arrived.
    fn observe_request(&self, account: &str, endpoint: Endpoint, code: &str);
}

/// An observer that ignores everything (for the CLI and tests).
pub struct IgnoreRequests;

impl RequestObserver for IgnoreRequests {
    fn observe_request(&self, _account: &str, _endpoint: Endpoint, _code: &str) {}
}

/// Everything one client needs, resolved from an account and the `[poll]` section.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub account: String,
    pub base_url: String,
    pub token: Secret,
    pub user_id: Option<i64>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_body_bytes: u64,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub max_retry_after: Duration,
    /// The account's budget (the override, or `[poll]`'s): alone, its rate; in a
    /// [`BudgetPool`], the cap on its share of its server's budget.
    pub requests_per_minute: u32,
}

/// The form of an account's listing, learnt from its first complete pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingForm {
    /// No complete listing yet.
    Unknown,
    /// The paginated envelope (new-api ≥ 2025-06-12): from then on a bare array is a broken
    /// answer, not an older server (an empty `[]` must not empty the account).
    Paginated,
    /// A bare array with a 0-based `p` (one-api, older new-api): later polls start at `p=0`.
    BareZeroBased,
}

impl ListingForm {
    fn from_code(code: u8) -> ListingForm {
        match code {
            1 => ListingForm::Paginated,
            2 => ListingForm::BareZeroBased,
            _ => ListingForm::Unknown,
        }
    }

    fn code(self) -> u8 {
        match self {
            ListingForm::Unknown => 0,
            ListingForm::Paginated => 1,
            ListingForm::BareZeroBased => 2,
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    settings: Arc<ClientSettings>,
    authorization: HeaderValue,
    budget: AccountBudget,
    observer: Arc<dyn RequestObserver>,
    cancel: CancellationToken,
    /// `host:port` of `base_url`, for connection errors.
    target: Arc<str>,
    /// [`ListingForm`] as its code.
    listing_form: Arc<AtomicU8>,
    /// Set when an answer carried `Auth-Version`, which only the legacy authentication of
    /// new-api before 2026-07-20 sends: a server that requires `New-Api-User`.
    legacy_auth_seen: Arc<AtomicBool>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiClient")
            .field("account", &self.settings.account)
            .field("base_url", &self.settings.base_url)
            .finish_non_exhaustive()
    }
}

/// Why a client could not be built; the message names the account and never the token.
#[derive(Debug, thiserror::Error)]
#[error("account {account}: {reason}")]
pub struct ClientBuildError {
    pub account: String,
    pub reason: String,
}

impl ApiClient {
    /// A client with a budget of its own (`settings.requests_per_minute`): for one-off commands
    /// on one account. The daemon uses [`ApiClient::new_in_pool`].
    pub fn new(
        settings: ClientSettings,
        observer: Arc<dyn RequestObserver>,
        cancel: CancellationToken,
    ) -> Result<ApiClient, ClientBuildError> {
        let budget = AccountBudget::alone(settings.requests_per_minute);
        ApiClient::with_budget(settings, observer, cancel, budget)
    }

    /// A client that shares its server's budget with every other client of `pool` on the same
    /// scheme, host and port; its own `requests_per_minute` caps its share.
    pub fn new_in_pool(
        settings: ClientSettings,
        observer: Arc<dyn RequestObserver>,
        cancel: CancellationToken,
        pool: &BudgetPool,
    ) -> Result<ApiClient, ClientBuildError> {
        let budget = pool.budget_for(&settings.base_url, settings.requests_per_minute);
        ApiClient::with_budget(settings, observer, cancel, budget)
    }

    fn with_budget(
        settings: ClientSettings,
        observer: Arc<dyn RequestObserver>,
        cancel: CancellationToken,
        budget: AccountBudget,
    ) -> Result<ApiClient, ClientBuildError> {
        let build_error = |reason: String| ClientBuildError {
            account: settings.account.clone(),
            reason,
        };
        let mut authorization = HeaderValue::from_str(settings.token.expose()).map_err(|_| {
            build_error("the access token contains characters not allowed in an HTTP header".into())
        })?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(concat!("cometapi-keymon/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|error| {
                build_error(format!(
                    "cannot build the HTTP client: {}",
                    error.without_url()
                ))
            })?;
        let target = host_and_port(&settings.base_url);
        Ok(ApiClient {
            http,
            budget,
            settings: Arc::new(settings),
            authorization,
            observer,
            cancel,
            target: target.into(),
            listing_form: Arc::new(AtomicU8::new(ListingForm::Unknown.code())),
            legacy_auth_seen: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The same client (budget, observer, cancellation) without retries: for writes whose lost
    /// answer may hide a change that happened, so the caller checks by reading instead.
    pub fn without_retries(&self) -> ApiClient {
        ApiClient {
            settings: Arc::new(ClientSettings {
                max_retries: 0,
                ..(*self.settings).clone()
            }),
            ..self.clone()
        }
    }

    pub fn account(&self) -> &str {
        &self.settings.account
    }

    /// The account's own user id, when configured: listings from root-user tokens on some
    /// server versions include other users' keys, which are then left out.
    pub fn user_id(&self) -> Option<i64> {
        self.settings.user_id
    }

    fn secret(&self) -> &str {
        self.settings.token.expose()
    }

    /// True once an answer showed the legacy authentication (`Auth-Version`), which requires
    /// `New-Api-User`.
    pub fn has_seen_legacy_auth(&self) -> bool {
        self.legacy_auth_seen.load(Ordering::Relaxed)
    }

    /// How long `requests` more requests wait for this account's budget, as it stands now.
    pub fn estimated_wait(&self, requests: u64) -> Duration {
        self.budget.estimated_wait(requests)
    }

    /// The listing's form as the last complete listing of this account showed it.
    pub fn listing_form(&self) -> ListingForm {
        ListingForm::from_code(self.listing_form.load(Ordering::Relaxed))
    }

    pub(crate) fn remember_listing_form(&self, form: ListingForm) {
        self.listing_form.store(form.code(), Ordering::Relaxed);
    }

    pub(crate) fn forget_listing_form(&self) {
        self.remember_listing_form(ListingForm::Unknown);
    }

    /// Whether this client draws from the same server budget as `other`.
    pub fn shares_budget_with(&self, other: &ApiClient) -> bool {
        self.budget.shares_server_with(&other.budget)
    }

    /// One page of `GET /api/token/`. Sends `p`, `page_size` and, for servers that only know it,
    /// `size`.
    pub(crate) async fn list_page(&self, page: i64, page_size: i64) -> Result<ListData, ApiError> {
        let path = format!("/api/token/?p={page}&page_size={page_size}&size={page_size}");
        self.request_data(Endpoint::List, Method::GET, &path, None)
            .await
    }

    /// `quota_per_unit` from `GET /api/status`, or the default when the server does not say:
    /// the field is missing or unusable, or the route does not exist (404). new-api serves the
    /// route without authentication; the token is sent anyway because it goes to the same
    /// origin and a patched server may want it.
    pub async fn quota_per_unit(&self) -> Result<f64, ApiError> {
        Ok(self.server_facts().await?.quota_per_unit)
    }

    /// What one `GET /api/status` tells: `quota_per_unit` (as `quota_per_unit()` explains) and
    /// whether the server's data export (the usage tables) is on, when it says.
    pub async fn server_facts(&self) -> Result<ServerFacts, ApiError> {
        let path = "/api/status";
        let status = match self
            .execute(Endpoint::Status, Method::GET, path, None)
            .await
        {
            Ok(bytes) => self.decode_envelope::<ServerStatus>(Endpoint::Status, &bytes)?,
            Err(ApiError::Http { status: 404, .. }) => None,
            Err(error) => return Err(error),
        };
        let data_export_enabled = status.as_ref().and_then(|status| status.enable_data_export);
        let quota_per_unit = status
            .and_then(|status| status.quota_per_unit)
            .filter(|value| value.is_finite() && *value > 0.0)
            .unwrap_or(DEFAULT_QUOTA_PER_UNIT);
        Ok(ServerFacts {
            quota_per_unit,
            data_export_enabled,
        })
    }

    /// `GET /api/token/{id}`. A deleted or foreign key is `KeyNotFound` ("record not found"). An
    /// answer holding another key (a broken proxy or cache) is a decode error: every write is
    /// built from this record, and must never land on a key nobody asked for.
    pub async fn get_key(&self, id: i64) -> Result<KeyRecord, ApiError> {
        let record: KeyRecord = self
            .request_data(
                Endpoint::Get,
                Method::GET,
                &format!("/api/token/{id}"),
                None,
            )
            .await
            .map_err(|error| match error {
                // gorm's ErrRecordNotFound text, the same in every server version and language.
                ApiError::Refused { message, .. } if message.contains("record not found") => {
                    ApiError::KeyNotFound {
                        account: self.settings.account.clone(),
                        key_id: id,
                    }
                }
                other => other,
            })?;
        if record.id != id {
            return Err(ApiError::Decode {
                endpoint: Endpoint::Get,
                detail: format!("asked for key {id}, the answer holds key {}", record.id),
            });
        }
        if let (Some(own), Some(owner)) = (self.settings.user_id, record.user_id) {
            if owner != own {
                return Err(ApiError::Decode {
                    endpoint: Endpoint::Get,
                    detail: format!("key {id} belongs to user {owner}, not to user {own}"),
                });
            }
        }
        Ok(record)
    }

    /// `POST /api/token/`. The server answers without the new key's id or value.
    pub async fn create_key(&self, record: &KeyRecord) -> Result<(), ApiError> {
        let body = record.write_body(WriteKind::Create);
        self.request_without_data(Endpoint::Create, Method::POST, "/api/token/", Some(body))
            .await
    }

    /// Full `PUT /api/token/`. The server resets every editable field the body omits, so
    /// `record` must be a complete record from a fresh read with only the intended change.
    pub async fn update_key(&self, record: &KeyRecord) -> Result<KeyRecord, ApiError> {
        let body = record.write_body(WriteKind::Update);
        self.request_data(Endpoint::Update, Method::PUT, "/api/token/", Some(body))
            .await
    }

    /// `PUT /api/token/?status_only=true`: changes only the status. The body still carries the
    /// whole record, because the server validates name and quota even in this mode (a limited
    /// key's negative quota is sent as 0, or an overdrawn key could not be disabled).
    pub async fn update_key_status(
        &self,
        record: &KeyRecord,
        status: i64,
    ) -> Result<KeyRecord, ApiError> {
        let mut record = record.clone();
        record.status = status;
        let body = record.write_body(WriteKind::StatusOnly);
        self.request_data(
            Endpoint::Update,
            Method::PUT,
            "/api/token/?status_only=true",
            Some(body),
        )
        .await
    }

    /// `DELETE /api/token/{id}`.
    pub async fn delete_key(&self, id: i64) -> Result<(), ApiError> {
        let path = format!("/api/token/{id}");
        self.request_without_data(Endpoint::Delete, Method::DELETE, &path, None)
            .await
    }

    /// A request whose success carries no data (create, delete).
    async fn request_without_data(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(), ApiError> {
        let bytes = self.execute(endpoint, method, path, body).await?;
        self.decode_envelope::<serde_json::Value>(endpoint, &bytes)
            .map(|_| ())
    }

    async fn request_data<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let bytes = self.execute(endpoint, method, path, body).await?;
        self.decode_envelope::<T>(endpoint, &bytes)?
            .ok_or_else(|| ApiError::Decode {
                endpoint,
                detail: "success without data".into(),
            })
    }

    /// Sends one request with budget, retries and cancellation; returns the raw 2xx body.
    async fn execute(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ApiError> {
        let mut retries_done = 0;
        loop {
            self.budget.acquire(&self.cancel).await?;
            let result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Err(ApiError::Cancelled),
                result = self.send_once(endpoint, method.clone(), path, body.clone()) => result,
            };
            match result {
                Err(error) if error.is_retryable() && retries_done < self.settings.max_retries => {
                    retries_done += 1;
                    let delay = backoff_with_jitter(self.settings.retry_backoff, retries_done);
                    tracing::warn!(
                        account = %self.settings.account, endpoint = endpoint.label(), retry = retries_done,
                        delay_ms = delay.as_millis() as u64, error = %error, "request failed, retrying"
                    );
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(ApiError::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ApiError> {
        let url = format!("{}{}", self.settings.base_url, path);
        let mut request = self
            .http
            .request(method, url)
            .timeout(self.settings.timeout)
            .header(ACCEPT, "application/json")
            .header("Accept-Language", "en");
        request = request.header(AUTHORIZATION, self.authorization.clone());
        if let Some(user_id) = self.settings.user_id {
            request = request.header("New-Api-User", user_id.to_string());
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.observer
                    .observe_request(&self.settings.account, endpoint, "error");
                return Err(self.classify(endpoint, error));
            }
        };
        let status = response.status();
        self.observer
            .observe_request(&self.settings.account, endpoint, status.as_str());
        if status.is_success() && response.headers().contains_key("auth-version") {
            self.legacy_auth_seen.store(true, Ordering::Relaxed);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after =
                parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER))
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(self.settings.max_retry_after);
            tracing::warn!(
                account = %self.settings.account, endpoint = endpoint.label(),
                pause_seconds = retry_after.as_secs(), "rate limited by the server (429); pausing every account on this server"
            );
            self.budget.pause_server_for(retry_after);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(endpoint, response).await);
        }
        if !status.is_success() {
            return Err(ApiError::Http {
                endpoint,
                status: status.as_u16(),
            });
        }
        let limit = self.settings.max_body_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Err(ApiError::BodyTooLarge { endpoint, limit });
        }
        let mut collected: Vec<u8> =
            Vec::with_capacity(response.content_length().unwrap_or(8192).min(limit) as usize);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if collected.len() as u64 + chunk.len() as u64 > limit {
                        return Err(ApiError::BodyTooLarge { endpoint, limit });
                    }
                    collected.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(Bytes::from(collected)),
                Err(error) => return Err(self.classify(endpoint, error)),
            }
        }
    }

    fn classify(&self, endpoint: Endpoint, error: reqwest::Error) -> ApiError {
        if error.is_timeout() {
            return ApiError::Timeout {
                endpoint,
                timeout: self.settings.timeout,
            };
        }
        let (body_error, redirect_error) =
            (error.is_body() || error.is_decode(), error.is_redirect());
        let detail = error_chain(&error.without_url(), self.secret());
        if body_error {
            return ApiError::Decode {
                endpoint,
                detail: format!("broken response body: {detail}"),
            };
        }
        if redirect_error {
            return ApiError::Decode {
                endpoint,
                detail: format!("redirect: {detail}"),
            };
        }
        ApiError::Connect {
            endpoint,
            account: self.settings.account.clone(),
            target: self.target.to_string(),
            detail,
        }
    }

    /// A 401: the server's message (first 16 KiB of the body, scrubbed) and what it means.
    async fn unauthorized(&self, endpoint: Endpoint, mut response: reqwest::Response) -> ApiError {
        const MAX_AUTH_BODY_BYTES: usize = 16 * 1024;
        let mut body = Vec::new();
        while body.len() < MAX_AUTH_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(MAX_AUTH_BODY_BYTES);
        let message = serde_json::from_slice::<wire::AuthFailure>(&body)
            .map(|failure| failure.message)
            .unwrap_or_default();
        let problem = error::diagnose_auth_message(&message, self.settings.user_id).unwrap_or(
            AuthProblem::TokenRejected {
                looks_like_api_key: false,
            },
        );
        self.auth_error(endpoint, 401, problem, &message)
    }

    fn auth_error(
        &self,
        endpoint: Endpoint,
        status: u16,
        problem: AuthProblem,
        message: &str,
    ) -> ApiError {
        let problem = match problem {
            AuthProblem::TokenRejected { .. } => AuthProblem::TokenRejected {
                looks_like_api_key: self.settings.token.looks_like_api_key(),
            },
            other => other,
        };
        ApiError::Unauthorized {
            endpoint,
            status,
            account: self.settings.account.clone(),
            problem,
            server_said: error::scrub_server_text(message, self.secret()),
        }
    }

    /// Decodes `{success, message, data}`. `success:false` becomes `Refused`, or `Unauthorized`
    /// when it is the "invalid access token" answer of servers before 2026-07-20. An HTML page is
    /// a `base_url` that does not point at the server's root.
    fn decode_envelope<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        bytes: &[u8],
    ) -> Result<Option<T>, ApiError> {
        let secret = self.secret();
        let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(|error| {
            let detail = if looks_like_html(bytes) {
                format!(
                    "the server answered with an HTML page, not the management API's JSON: \
                     base_url must be the server's root URL, e.g. https://api.cometapi.com \
                     (account {} has {})",
                    self.settings.account, self.settings.base_url
                )
            } else {
                error::scrub_server_text(&error.to_string(), secret)
            };
            ApiError::Decode { endpoint, detail }
        })?;
        if !envelope.success {
            if let Some(problem @ AuthProblem::TokenRejected { .. }) =
                error::diagnose_auth_message(&envelope.message, self.settings.user_id)
            {
                return Err(self.auth_error(endpoint, 200, problem, &envelope.message));
            }
            return Err(ApiError::Refused {
                endpoint,
                message: error::scrub_server_text(&envelope.message, secret),
            });
        }
        Ok(envelope.data)
    }
}

/// An HTML document (a web UI page) rather than JSON.
fn looks_like_html(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|byte| !byte.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let head = String::from_utf8_lossy(&bytes[start..bytes.len().min(start + 64)]);
    // JSON never starts with '<'; a web UI page, a proxy's error page or a redirect body does.
    head.starts_with('<')
}

/// `host:port` of a base URL, the scheme's default port made explicit.
fn host_and_port(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(url) => format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => base_url.to_owned(),
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static), secret: &str) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    error::scrub_server_text(&text, secret)
}

/// `Retry-After` in seconds (the HTTP-date form is not used by new-api and is ignored).
fn parse_retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let seconds: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// `base * 2^(retry-1)`, plus up to 50% jitter so several daemons do not retry in lockstep.
fn backoff_with_jitter(base: Duration, retry: u32) -> Duration {
    let exponential = base.saturating_mul(1u32 << retry.saturating_sub(1).min(10));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let jitter_fraction = f64::from(nanos % 1000) / 2000.0;
    exponential + exponential.mul_f64(jitter_fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_only() {
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static(" 17 "))),
            Some(Duration::from_secs(17))
        );
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static(
                "Wed, 21 Oct 2015 07:28:00 GMT"
            ))),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn backoff_doubles_and_jitter_stays_within_half() {
        let base = Duration::from_millis(100);
        for retry in 1..=4 {
            let delay = backoff_with_jitter(base, retry);
            let floor = base * (1 << (retry - 1));
            assert!(
                delay >= floor && delay <= floor + floor / 2,
                "retry {retry}: {delay:?}"
            );
        }
    }
}
