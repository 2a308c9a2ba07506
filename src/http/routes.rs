//! What each path answers: `/metrics` (the cached families, gzip-framed, or for plain clients
//! the one inflated copy of this poll's text, plus the per-scrape health text), `/healthz`, `/readyz` (503 naming the accounts
//! without a complete poll), `/` (the status page) and 405/404 for the rest. Each route reads
//! the `Exporter` and never waits for a poll. `respond` puts the web config's admission
//! (credentials) in front of the routes and its headers on every response.

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::{Method, Request, Response, StatusCode};

use super::security::{Refusal, WebSecurity};
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
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not ready: no complete poll yet for account(s) {}\n",
            waiting.join(", ")
        ),
    )
}

fn index_response(exporter: &Exporter) -> Response<ResponseBody> {
    let now = unix_now();
    let mut html = String::from(concat!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>cometapi-keymon</title></head><body>\n",
        "<h1>cometapi-keymon ",
        env!("CARGO_PKG_VERSION"),
        "</h1>\n<p><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p>\n",
        "<table border=\"1\" cellpadding=\"4\"><tr><th>account</th><th>keys</th><th>usable</th>",
        "<th>wallet left</th><th>wallet used</th><th>spent today</th><th>active subscriptions</th>",
        "<th>last complete poll</th><th>last attempt</th><th>duration</th><th>last error</th><th>policy</th></tr>\n"
    ));
    for view in exporter.account_views() {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&view.name),
            view.keys.map_or("–".into(), |keys| keys.to_string()),
            view.usable_keys.map_or("–".into(), |keys| keys.to_string()),
            quota_cell(view.wallet.as_ref().map(|wallet| wallet.quota), view.quota_per_unit),
            quota_cell(view.wallet.as_ref().map(|wallet| wallet.used_quota), view.quota_per_unit),
            quota_cell(view.spent_today, view.quota_per_unit),
            view.active_subscriptions.map_or("–".into(), |count| count.to_string()),
            view.last_success_at.map_or("never".into(), |at| describe_time(at, now)),
            view.last_attempt_at.map_or("never".into(), |at| describe_time(at, now)),
            view.last_duration.map_or("–".into(), |duration| format!("{:.2}s", duration.as_secs_f64())),
            escape_html(view.last_error.as_deref().unwrap_or("")),
            escape_html(view.policy.as_deref().unwrap_or("–")),
        );
    }
    html.push_str("</table>\n</body></html>\n");
    let mut response = Response::new(ResponseBody::Parts(VecDeque::from([Bytes::from(html)])));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// `1250000 units (2.50 USD)`, or `–` when there is nothing (no route, no poll yet).
fn quota_cell(quota: Option<i64>, quota_per_unit: Option<f64>) -> String {
    match (quota, quota_per_unit) {
        (Some(quota), Some(per_unit)) if per_unit > 0.0 => {
            format!("{quota} units ({:.2} USD)", quota as f64 / per_unit)
        }
        (Some(quota), _) => format!("{quota} units"),
        (None, _) => "–".into(),
    }
}

fn describe_time(at: i64, now: i64) -> String {
    let when = chrono::DateTime::from_timestamp(at, 0).map_or_else(
        || at.to_string(),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    format!("{when} ({}s ago)", (now - at).max(0))
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
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

    #[test]
    fn html_escaping_covers_markup() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
