//! What each path answers: `/metrics` (the cached families, gzip-framed, or for plain clients
//! the one inflated copy of this poll's text, plus the per-scrape health text), `/healthz`,
//! `/readyz` (503 naming the accounts without a complete poll), `/` (the status page, rendered
//! by `status_page`) and 405/404 for the rest. Each route reads the `Exporter` and never waits
//! for a poll. `respond` puts the web config's admission (credentials) in front of the routes
//! and its headers on every response.

use std::collections::VecDeque;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::{Method, Request, Response, StatusCode};

use super::security::{Refusal, WebSecurity};
use super::status_page::StatusPage;
use super::ResponseBody;
use crate::clock::unix_now;
use crate::metrics::{self, Exporter};

/// Admits or refuses the request (credentials), routes it, adds the configured headers. A
/// refused request never reaches `route`.
pub(super) async fn respond(
    request: &Request<Incoming>,
    exporter: &Exporter,
    security: &WebSecurity,
) -> Response<ResponseBody> {
    let refusal = security
        .admit(request.uri().path(), request.headers())
        .await
        .err();
    let mut response = match refusal {
        None => route(request, exporter).await,
        Some(Refusal::Unauthorized) => text_response(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: this endpoint needs basic auth credentials\n".into(),
        ),
        Some(Refusal::Busy) => text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "503: too many password checks in progress; retry\n".into(),
        ),
    };
    security.finish(response.headers_mut(), refusal);
    response
}

async fn route(request: &Request<Incoming>, exporter: &Exporter) -> Response<ResponseBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response =
            text_response(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => metrics_response(request, exporter).await,
        "/healthz" => text_response(StatusCode::OK, "ok\n".into()),
        "/readyz" => readiness_response(exporter),
        "/" => index_response(exporter),
        _ => text_response(
            StatusCode::NOT_FOUND,
            "not found; see / for the endpoints\n".into(),
        ),
    }
}

async fn metrics_response(
    request: &Request<Incoming>,
    exporter: &Exporter,
) -> Response<ResponseBody> {
    let scrape = exporter.scrape();
    let gzip = request
        .headers()
        .get(ACCEPT_ENCODING)
        .is_some_and(accepts_gzip);
    let body = if gzip {
        ResponseBody::Parts(scrape.keys.rendered.gzip_parts(&scrape.health_text).into())
    } else {
        // Shared with every other plain scrape of this render: no copy per response.
        ResponseBody::Parts(VecDeque::from([
            scrape.keys.plain_text().await,
            Bytes::from(scrape.health_text),
        ]))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::content_type()),
    );
    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// True when `Accept-Encoding` lists gzip with a non-zero quality.
fn accepts_gzip(header: &HeaderValue) -> bool {
    let Ok(text) = header.to_str() else {
        return false;
    };
    text.split(',').any(|entry| {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|parameter| {
            let parameter = parameter.trim();
            parameter
                .strip_prefix("q=")
                .is_some_and(|quality| quality.trim().parse::<f64>().is_ok_and(|q| q <= 0.0))
        });
        coding.eq_ignore_ascii_case("gzip") && !refused
    })
}

fn readiness_response(exporter: &Exporter) -> Response<ResponseBody> {
    if exporter.is_ready() {
        return text_response(StatusCode::OK, "ready\n".into());
    }
    let waiting: Vec<String> = exporter
        .account_views()
        .into_iter()
        .filter(|view| view.last_success_at.is_none())
        .map(|view| view.name)
        .collect();
    let accounts = if waiting.len() == 1 {
        "account"
    } else {
        "accounts"
    };
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not ready: no complete poll yet for {accounts} {}\n",
            waiting.join(", ")
        ),
    )
}

fn index_response(exporter: &Exporter) -> Response<ResponseBody> {
    let accounts = exporter
        .account_views()
        .into_iter()
        .map(|view| {
            let snapshot = exporter.snapshot(&view.name);
            (view, snapshot)
        })
        .collect();
    let page = StatusPage::build(env!("CARGO_PKG_VERSION"), accounts, unix_now());
    let mut response = Response::new(ResponseBody::Parts(VecDeque::from([Bytes::from(
        page.render(),
    )])));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn text_response(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Parts(VecDeque::from([Bytes::from(text)])));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_acceptance_honours_quality_zero() {
        let accepts = |value: &'static str| accepts_gzip(&HeaderValue::from_static(value));
        assert!(accepts("gzip"));
        assert!(accepts("deflate, GZIP;q=0.5"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("identity"));
        assert!(!accepts("br, x-gzip2"));
    }
}
