//! The HTTP side of the simulator: the accept loop (hyper 1 `http1` over `TokioIo`, graceful
//! shutdown through a `CancellationToken`), the per-request pipeline in the server's middleware
//! order (route → global rate limit → auth → injected fault → route limiter → controller), gzip,
//! request recording, and the response body type that can stream an oversized body or cut one
//! short on purpose.

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::routes::{
    self, Answer, ApiRequest, Language, PageQuery, Query, Route, Routing, CRITICAL_LIMIT_REQUESTS,
    CRITICAL_LIMIT_WINDOW_SECONDS, JSON_CONTENT_TYPE, SEARCH_LIMIT_REQUESTS,
    SEARCH_LIMIT_WINDOW_SECONDS,
};
use super::{FaultKind, Inner, RecordedRequest};

/// Largest request body read; bigger bodies are answered with 413.
const MAX_REQUEST_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Chunk size of a generated (oversized) body.
const FILLER_CHUNK_BYTES: usize = 64 * 1024;
static FILLER: [u8; FILLER_CHUNK_BYTES] = [b'x'; FILLER_CHUNK_BYTES];
/// How long a cut-short body waits between its first half and the abort.
const CUT_SHORT_PAUSE: Duration = Duration::from_millis(50);

/// The error of the service and of the body. A concrete type: with a boxed trait object, hyper's
/// `Into<Box<dyn Error>>` bound does not hold for every lifetime once spawned.
pub(crate) type SimulatorError = std::io::Error;

fn deliberate_error(what: &str) -> SimulatorError {
    std::io::Error::other(format!("simulator: {what} on purpose"))
}

/// The response body: complete, generated on the fly, or deliberately cut short.
pub(crate) enum ResponseBody {
    Complete(Option<Bytes>),
    Generated {
        head: Option<Bytes>,
        filler_remaining: usize,
        tail: Option<Bytes>,
    },
    /// Sends `head`, pauses so hyper flushes the head and the partial body to the socket, then
    /// fails, so hyper aborts the connection before the declared `Content-Length` is met.
    CutShort {
        head: Option<Bytes>,
        pause: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl ResponseBody {
    fn complete(bytes: Vec<u8>) -> ResponseBody {
        ResponseBody::Complete((!bytes.is_empty()).then(|| Bytes::from(bytes)))
    }

    /// A valid JSON success envelope of exactly `total_bytes` bytes when that is large enough
    /// (padding in a `"filler"` member), else `total_bytes` filler bytes.
    fn oversized(total_bytes: usize) -> ResponseBody {
        let head: &[u8] =
            b"{\"data\":{\"page\":1,\"page_size\":10,\"total\":0,\"items\":[]},\"filler\":\"";
        let tail: &[u8] = b"\",\"message\":\"\",\"success\":true}";
        if total_bytes >= head.len() + tail.len() {
            ResponseBody::Generated {
                head: Some(Bytes::from_static(head)),
                filler_remaining: total_bytes - head.len() - tail.len(),
                tail: Some(Bytes::from_static(tail)),
            }
        } else {
            ResponseBody::Generated {
                head: None,
                filler_remaining: total_bytes,
                tail: None,
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = SimulatorError;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SimulatorError>>> {
        let body = self.get_mut();
        let next = match body {
            ResponseBody::Complete(bytes) => bytes.take().map(|bytes| Ok(Frame::data(bytes))),
            ResponseBody::Generated {
                head,
                filler_remaining,
                tail,
            } => {
                if let Some(head) = head.take() {
                    Some(Ok(Frame::data(head)))
                } else if *filler_remaining > 0 {
                    let chunk = (*filler_remaining).min(FILLER_CHUNK_BYTES);
                    *filler_remaining -= chunk;
                    Some(Ok(Frame::data(Bytes::from_static(&FILLER[..chunk]))))
                } else {
                    tail.take().map(|tail| Ok(Frame::data(tail)))
                }
            }
            ResponseBody::CutShort { head, pause } => {
                if let Some(head) = head.take() {
                    *pause = Some(Box::pin(tokio::time::sleep(CUT_SHORT_PAUSE)));
                    Some(Ok(Frame::data(head)))
                } else {
                    if let Some(sleep) = pause.as_mut() {
                        if sleep.as_mut().poll(context).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    Some(Err(deliberate_error("response body truncated")))
                }
            }
        };
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Complete(bytes) => bytes.is_none(),
            ResponseBody::Generated {
                head,
                filler_remaining,
                tail,
            } => head.is_none() && *filler_remaining == 0 && tail.is_none(),
            ResponseBody::CutShort { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Complete(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            ResponseBody::Generated {
                head,
                filler_remaining,
                tail,
            } => {
                let length = head.as_ref().map_or(0, Bytes::len)
                    + filler_remaining
                    + tail.as_ref().map_or(0, Bytes::len);
                SizeHint::with_exact(length as u64)
            }
            ResponseBody::CutShort { .. } => SizeHint::default(),
        }
    }
}

/// Accepts connections until `shutdown` fires, then closes the listener and waits (bounded) for
/// open connections to finish.
pub(crate) async fn serve(listener: TcpListener, inner: Arc<Inner>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "simulator: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let connection_inner = inner.clone();
        let service = service_fn(move |request| {
            let inner = connection_inner.clone();
            // Like Go's net/http, a handler runs to completion even when the client goes away
            // mid-request: a PUT whose client was killed still lands.
            let handler = tokio::spawn(handle_request(inner, peer, request));
            async move {
                handler
                    .await
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
            }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are client disconnects and the deliberate CloseConnection fault.
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// What `handle_request` decided; `Drop` means: close the connection without answering.
enum Outcome {
    Respond { answer: Answer, body: ResponseBody },
    Drop,
}

async fn handle_request(
    inner: Arc<Inner>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, SimulatorError> {
    let (parts, incoming) = request.into_parts();
    let facts = RequestFacts {
        method: parts.method.clone(),
        raw_path: parts.uri.path().to_string(),
        raw_query: parts.uri.query().map(str::to_string),
        authorization: header_text(&parts.headers, "authorization"),
        new_api_user: header_text(&parts.headers, "new-api-user"),
        arrived: Instant::now(),
    };
    let accepts_gzip = header_text(&parts.headers, "accept-encoding")
        .is_some_and(|accepted| accepted.contains("gzip"));
    let language = if inner.settings.chinese_messages {
        Language::SimplifiedChinese
    } else {
        Language::from_accept_language(header_text(&parts.headers, "accept-language").as_deref())
    };
    let body = match Limited::new(incoming, MAX_REQUEST_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            record(&inner, &facts, b"", 413);
            return Ok(into_response(
                Answer::empty(413),
                ResponseBody::Complete(None),
            ));
        }
    };

    let method = &facts.method;
    let (outcome, in_api_group) = match routes::percent_decode(&facts.raw_path) {
        None => (respond(Answer::empty(400)), false),
        Some(decoded_path) => match routes::route(
            method,
            &decoded_path,
            &facts.raw_path,
            facts.raw_query.as_deref(),
        ) {
            Routing::Matched(route) if !route.exists_in(inner.settings.generation) => (
                respond(routes::api_not_found_answer(method, &decoded_path)),
                false,
            ),
            Routing::Matched(route) => {
                let context = ApiContext {
                    peer: peer.ip(),
                    route,
                    query: Query::parse(facts.raw_query.as_deref()),
                    body: &body,
                    authorization: facts.authorization.as_deref(),
                    new_api_user: facts.new_api_user.as_deref(),
                    language,
                };
                (process_api(&inner, context).await, true)
            }
            Routing::Redirect { location, status } => (
                respond(routes::redirect_answer(method, &location, status)),
                false,
            ),
            Routing::ApiNotFound => (
                respond(routes::api_not_found_answer(method, &decoded_path)),
                false,
            ),
            Routing::WebFallback => (respond(routes::web_fallback_answer()), false),
        },
    };

    match outcome {
        Outcome::Drop => {
            record(&inner, &facts, &body, 0);
            Err(deliberate_error("connection closed"))
        }
        Outcome::Respond {
            mut answer,
            body: response_body,
        } => {
            record(&inner, &facts, &body, answer.status);
            let response_body = match response_body {
                ResponseBody::Complete(None) => {
                    let plain = std::mem::take(&mut answer.body);
                    match (in_api_group && accepts_gzip && !plain.is_empty())
                        .then(|| gzip(&plain))
                        .flatten()
                    {
                        Some(compressed) => {
                            answer
                                .headers
                                .push(("content-encoding", "gzip".to_string()));
                            answer.headers.push(("vary", "Accept-Encoding".to_string()));
                            ResponseBody::complete(compressed)
                        }
                        None => ResponseBody::complete(plain),
                    }
                }
                streamed => streamed,
            };
            Ok(into_response(answer, response_body))
        }
    }
}

/// Answer with `answer.body` as the complete body: `handle_request` moves it into the response,
/// gzip-compressed when the client accepts it. (An outcome whose body is already set — streamed,
/// cut short, or `Complete(Some)` — is sent as is.)
fn respond(answer: Answer) -> Outcome {
    Outcome::Respond {
        answer,
        body: ResponseBody::Complete(None),
    }
}

struct ApiContext<'a> {
    peer: IpAddr,
    route: Route,
    query: Query,
    body: &'a [u8],
    authorization: Option<&'a str>,
    new_api_user: Option<&'a str>,
    language: Language,
}

fn retry_after(answer: Answer, seconds: u64) -> Answer {
    answer.with_header("retry-after", seconds.max(1).to_string())
}

/// The `/api` middleware chain and controller.
async fn process_api(inner: &Inner, context: ApiContext<'_>) -> Outcome {
    let settings = &inner.settings;
    // GlobalAPIRateLimit.
    {
        let mut state = inner.lock_state();
        if let Some(limit) = state.rate_limit {
            if !state.global_limiter.admit(
                context.peer,
                limit.requests,
                limit.window,
                Instant::now(),
            ) {
                let mut answer = Answer::empty(429);
                if limit.send_retry_after {
                    let seconds =
                        limit.window.as_secs() + u64::from(limit.window.subsec_nanos() > 0);
                    answer = retry_after(answer, seconds);
                }
                return respond(answer);
            }
        }
    }
    // UserAuth.
    let mut extra_headers = Vec::new();
    if context.route.requires_user_auth() {
        match routes::authenticate(
            settings,
            context.authorization,
            context.new_api_user,
            context.language,
        ) {
            Ok(headers) => extra_headers = headers,
            Err(answer) => return respond(answer),
        }
    }
    // Injected fault.
    let page =
        (context.route == Route::ListTokens).then(|| PageQuery::from_query(&context.query).page);
    let fault = inner
        .lock_state()
        .take_fault(context.route.fault_endpoint(), page);
    let mut truncate = false;
    let mut churn = None;
    match fault {
        None => {}
        Some(FaultKind::HttpStatus {
            status,
            body,
            retry_after: seconds,
        }) => {
            let trimmed = body.trim_start();
            let content_type = if body.is_empty() {
                None
            } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
                Some(JSON_CONTENT_TYPE)
            } else if trimmed.starts_with('<') {
                Some(routes::HTML_CONTENT_TYPE)
            } else {
                Some("text/plain; charset=utf-8")
            };
            let mut answer = Answer {
                status,
                content_type,
                body: body.into_bytes(),
                headers: Vec::new(),
            };
            if let Some(seconds) = seconds {
                answer = answer.with_header("retry-after", seconds.to_string());
            }
            return uncompressed(answer);
        }
        Some(FaultKind::Delay(delay)) => {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = inner.shutdown.cancelled() => {}
            }
        }
        Some(FaultKind::MalformedJson) => {
            return uncompressed(Answer::json(
                200,
                b"{\"data\":{\"page\":1,\"items\":[{\"id\":1001,,]}, \"success\":tru".to_vec(),
            ));
        }
        Some(FaultKind::WrongShape) => {
            return uncompressed(Answer::json(
                200,
                b"{\"data\":{\"items\":\"nope\",\"page\":\"one\",\"page_size\":null,\"quota_per_unit\":\"lots\",\"total\":\"many\"},\"message\":\"\",\"success\":true}".to_vec(),
            ));
        }
        Some(FaultKind::SuccessFalse { message }) => {
            return respond(Answer::controller_error(&message));
        }
        Some(FaultKind::CloseConnection) => return Outcome::Drop,
        Some(FaultKind::Oversized { bytes }) => {
            let mut answer = Answer::json(200, Vec::new());
            answer.headers.push(("content-length", bytes.to_string()));
            return Outcome::Respond {
                answer,
                body: ResponseBody::oversized(bytes),
            };
        }
        Some(FaultKind::TruncatedBody) => truncate = true,
        Some(FaultKind::Churn { create, delete }) => churn = Some((create, delete)),
    }
    // Route-specific limiters (CriticalRateLimit, SearchRateLimit).
    let route_limit = match context.route {
        Route::RevealKey(_) | Route::RevealKeysBatch => Some((
            CRITICAL_LIMIT_REQUESTS,
            CRITICAL_LIMIT_WINDOW_SECONDS,
            false,
        )),
        Route::SearchTokens => Some((SEARCH_LIMIT_REQUESTS, SEARCH_LIMIT_WINDOW_SECONDS, true)),
        _ => None,
    };
    let now = inner.now();
    let mut answer = {
        let mut state = inner.lock_state();
        if let Some((requests, window_seconds, per_user)) = route_limit {
            let window = Duration::from_secs(window_seconds);
            let admitted = if per_user {
                state
                    .search_limiter
                    .admit(settings.user_id, requests, window, Instant::now())
            } else {
                state
                    .critical_limiter
                    .admit(context.peer, requests, window, Instant::now())
            };
            if !admitted {
                return respond(retry_after(Answer::empty(429), window_seconds));
            }
        }
        let request = ApiRequest {
            query: &context.query,
            body: context.body,
            language: context.language,
            now,
        };
        let answer = routes::handle(settings, &mut state, &context.route, &request);
        if let Some((create, delete)) = churn {
            state.store.churn(settings.user_id, create, delete, now);
        }
        answer
    };
    answer.headers.extend(extra_headers);
    if truncate {
        let full = Bytes::from(std::mem::take(&mut answer.body));
        answer
            .headers
            .push(("content-length", full.len().to_string()));
        let half = full.slice(..full.len() / 2);
        return Outcome::Respond {
            answer,
            body: ResponseBody::CutShort {
                head: Some(half),
                pause: None,
            },
        };
    }
    respond(answer)
}

/// A fault answer that must reach the client exactly as written (no gzip): the body is moved
/// into the response body up front, so `handle_request` leaves it alone.
fn uncompressed(mut answer: Answer) -> Outcome {
    let body = ResponseBody::complete(std::mem::take(&mut answer.body));
    Outcome::Respond { answer, body }
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::default(),
    );
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

/// The parts of a request the log keeps.
struct RequestFacts {
    method: hyper::Method,
    raw_path: String,
    raw_query: Option<String>,
    authorization: Option<String>,
    new_api_user: Option<String>,
    arrived: Instant,
}

/// The request log keeps the newest this many requests, so a demo left running for days does
/// not grow without bound; tests and benchmarks stay far below it.
const MAX_RECORDED_REQUESTS: usize = 200_000;

/// Appends the request to the log with the status answered (0 = connection dropped).
fn record(inner: &Inner, facts: &RequestFacts, body: &[u8], status: u16) {
    let mut state = inner.lock_state();
    if state.requests.len() >= MAX_RECORDED_REQUESTS {
        let excess = state.requests.len() + 1 - MAX_RECORDED_REQUESTS / 2;
        state.requests.drain(..excess);
    }
    state.requests.push(RecordedRequest {
        method: facts.method.to_string(),
        path: facts.raw_path.clone(),
        query: facts.raw_query.clone(),
        body: String::from_utf8_lossy(body).into_owned(),
        authorization_present: facts.authorization.is_some(),
        new_api_user: facts.new_api_user.clone(),
        status,
        at: facts.arrived,
    });
}

fn into_response(answer: Answer, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(answer.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Some(content_type) = answer.content_type {
        headers.insert("content-type", HeaderValue::from_static(content_type));
    }
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}
