//! The management API client: one `ApiClient` per account, over reqwest with rustls.
//!
//! Every request carries the raw access token in `Authorization` (never `Bearer`; the header is
//! marked sensitive so it is redacted from reqwest's `Debug`), the optional `New-Api-User` id and
//! `Accept-Language: en`. Every request has a connect and a total timeout, waits for the
//! account's `RequestBudget`, and reads at most `max_body_bytes` of (decompressed) body.
//! Connection errors, timeouts and 5xx are retried `max_retries` times with exponential backoff
//! and jitter; a 429 is not retried within the poll but pauses the budget for `Retry-After`.
//! Answers are branched on `success`, never on `message`.
//!
//! `scan` builds the complete, de-duplicated listing of an account on top of `list_page`.

pub mod budget;
pub mod edit;
pub mod error;
pub mod scan;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use budget::RequestBudget;
pub use edit::{editable_changes, FieldChange, KeyEdit};
pub use error::{ApiError, Endpoint, POLL_ERROR_REASONS};
pub use scan::{newest_keys, scan_account, AccountListing};
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
    pub requests_per_minute: u32,
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    settings: Arc<ClientSettings>,
    authorization: HeaderValue,
    budget: Arc<RequestBudget>,
    observer: Arc<dyn RequestObserver>,
    cancel: CancellationToken,
    /// Set once a complete listing used the paginated envelope: from then on a bare array is a
    /// broken answer, not an older server (an empty `[]` must not empty the account).
    seen_paginated_listing: Arc<AtomicBool>,
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
    pub fn new(
        settings: ClientSettings,
        observer: Arc<dyn RequestObserver>,
        cancel: CancellationToken,
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
        Ok(ApiClient {
            http,
            budget: Arc::new(RequestBudget::per_minute(settings.requests_per_minute)),
            settings: Arc::new(settings),
            authorization,
            observer,
            cancel,
            seen_paginated_listing: Arc::new(AtomicBool::new(false)),
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

    /// True once a complete listing of this account used the paginated envelope.
    pub fn has_seen_paginated_listing(&self) -> bool {
        self.seen_paginated_listing.load(Ordering::Relaxed)
    }

    pub(crate) fn remember_paginated_listing(&self) {
        self.seen_paginated_listing.store(true, Ordering::Relaxed);
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
        let path = "/api/status";
        let status = match self
            .execute(Endpoint::Status, Method::GET, path, None)
            .await
        {
            Ok(bytes) => decode_envelope::<ServerStatus>(Endpoint::Status, &bytes, self.secret())?,
            Err(ApiError::Http { status: 404, .. }) => None,
            Err(error) => return Err(error),
        };
        Ok(status
            .and_then(|status| status.quota_per_unit)
            .filter(|value| value.is_finite() && *value > 0.0)
            .unwrap_or(DEFAULT_QUOTA_PER_UNIT))
    }

    /// `GET /api/token/{id}`. A deleted or foreign key is `Refused` ("record not found"). An
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
            .await?;
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
        decode_envelope::<serde_json::Value>(endpoint, &bytes, self.secret()).map(|_| ())
    }

    async fn request_data<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let bytes = self.execute(endpoint, method, path, body).await?;
        decode_envelope::<T>(endpoint, &bytes, self.secret())?.ok_or_else(|| ApiError::Decode {
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
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after =
                parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER))
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(self.settings.max_retry_after);
            tracing::warn!(
                account = %self.settings.account, endpoint = endpoint.label(),
                pause_seconds = retry_after.as_secs(), "rate limited by the server (429); pausing requests"
            );
            self.budget.pause_for(retry_after);
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
        ApiError::Connect { endpoint, detail }
    }
}

/// Decodes `{success, message, data}`; `success:false` becomes `Refused`.
fn decode_envelope<T: DeserializeOwned>(
    endpoint: Endpoint,
    bytes: &[u8],
    secret: &str,
) -> Result<Option<T>, ApiError> {
    let envelope: Envelope<T> =
        serde_json::from_slice(bytes).map_err(|error| ApiError::Decode {
            endpoint,
            detail: error::scrub_server_text(&error.to_string(), secret),
        })?;
    if !envelope.success {
        return Err(ApiError::Refused {
            endpoint,
            message: error::scrub_server_text(&envelope.message, secret),
        });
    }
    Ok(envelope.data)
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
