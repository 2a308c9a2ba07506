//! What the web config turns on for the HTTP server, in one value: TLS, basic auth and the
//! extra response headers, and the rule of which paths need credentials.
//!
//! `/healthz` and `/readyz` never ask for credentials (probes; they disclose nothing); every
//! other path, including unknown ones, does when `basic_auth_users` is set. A request that is
//! refused never reaches the routes, so exposition code never runs for it.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::HeaderMap;

use crate::config::WebConfig;
use crate::http::auth::{BasicAuth, Verdict};
use crate::http::tls::{TlsServer, TlsSetupError};

/// Paths served without credentials.
pub const PATHS_WITHOUT_CREDENTIALS: &[&str] = &["/healthz", "/readyz"];

#[derive(Default)]
pub struct WebSecurity {
    pub tls: Option<Arc<TlsServer>>,
    pub basic_auth: Option<Arc<BasicAuth>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.basic_auth.is_some())
            .field("headers", &self.headers)
            .finish()
    }
}

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401 with `WWW-Authenticate: Basic`.
    Unauthorized,
    /// 503: too many password checks queued.
    Busy,
}

impl WebSecurity {
    /// Plain HTTP, no credentials, no extra headers.
    pub fn none() -> WebSecurity {
        WebSecurity::default()
    }

    /// Builds TLS (the handshake bounded by `handshake_timeout`), basic auth and headers from
    /// a validated web config.
    pub fn from_config(
        web: Option<&WebConfig>,
        handshake_timeout: Duration,
    ) -> Result<WebSecurity, TlsSetupError> {
        let Some(web) = web else {
            return Ok(WebSecurity::none());
        };
        let tls = match &web.tls {
            Some(settings) => Some(Arc::new(
                TlsServer::new(settings.clone(), web.http2, handshake_timeout)
                    .map_err(|error| error.in_file(&web.path))?,
            )),
            None => None,
        };
        let basic_auth = (!web.users.is_empty()).then(|| Arc::new(BasicAuth::new(&web.users)));
        let headers = web
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        Ok(WebSecurity {
            tls,
            basic_auth,
            headers,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `Ok` when the request may be routed.
    pub async fn admit(&self, path: &str, request_headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(auth) = &self.basic_auth else {
            return Ok(());
        };
        if PATHS_WITHOUT_CREDENTIALS.contains(&path) {
            return Ok(());
        }
        match auth
            .check(request_headers.get(hyper::header::AUTHORIZATION))
            .await
        {
            Verdict::Allowed => Ok(()),
            Verdict::Denied => Err(Refusal::Unauthorized),
            Verdict::Busy => Err(Refusal::Busy),
        }
    }

    /// Adds the configured headers, and what a refusal needs.
    pub fn finish(&self, headers: &mut HeaderMap, refusal: Option<Refusal>) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        match refusal {
            Some(Refusal::Unauthorized) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            }
            Some(Refusal::Busy) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            None => {}
        }
    }
}
