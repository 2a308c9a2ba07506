//! The HTTP server (hyper 1): the listener, the connections and the response body type. What
//! each path answers (`/metrics`, `/healthz`, `/readyz`, `/`) is in `routes`.
//!
//! One task accepts connections until shutdown. Each connection must first get a slot from
//! `ConnectionLimits` (at most `max_connections` in total and `max_connections_per_peer` from
//! one address, so one client cannot lock Prometheus out); a refused connection is closed at
//! once and counted, and one summary line per `REFUSAL_SUMMARY_INTERVAL` reports the count.
//! An admitted connection is served by hyper with a header-read timeout (slow senders cannot
//! hold it open) and a write timeout (`write_deadline`: slow readers cannot either). On shutdown
//! the listener closes at once and open connections get a few seconds to finish their response.
//!
//! With a web config (`security`), a connection first completes a TLS handshake (`tls`, bounded
//! by the same timeout; HTTP/2 when ALPN picks it), and every request is admitted or refused
//! (`auth`, `security`) before it reaches the routes.

pub mod auth;
mod connection_limits;
mod routes;
pub mod security;
pub mod status_page;
pub mod tls;
mod write_deadline;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Exporter;
pub use connection_limits::{ConnectionLimits, ConnectionSlot, Refusal, RefusalTally};
use routes::respond;
pub use security::WebSecurity;
pub use write_deadline::{WriteDeadline, WriteDeadlineIo};

/// How long open connections may take to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Refused connections are reported at most once per interval, as one line with a count: a
/// flood must not turn into a flood of log lines.
pub const REFUSAL_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub header_read_timeout: Duration,
    /// How long a response may take to write, from the arrival of its request.
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// How often refused connections are summarised (`REFUSAL_SUMMARY_INTERVAL` in the daemon).
    pub refusal_summary_interval: Duration,
    /// TLS, basic auth and extra headers from the web config; `WebSecurity::none()` without.
    pub security: Arc<WebSecurity>,
}

/// Serves until `shutdown` is cancelled, then drains open connections for `SHUTDOWN_GRACE`.
pub async fn serve(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    settings: HttpSettings,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let limits = ConnectionLimits::new(settings.max_connections, settings.max_connections_per_peer);
    let mut refusals = RefusalTally::default();
    let mut summary_timer = tokio::time::interval(settings.refusal_summary_interval);
    summary_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if let Some(tls) = &settings.security.tls {
        tokio::spawn(Arc::clone(tls).summarize_failures(shutdown.clone()));
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = summary_timer.tick() => {
                log_refusals(&mut refusals, &limits, &settings);
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Before anything else (a TLS handshake included): one address gets at most its share.
        let slot = match limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closed at once: the client sees a reset or EOF, the log a count later.
                refusals.count(peer.ip(), refusal);
                continue;
            }
        };
        // The response goes out in several writes (head, cached stream, tail); without
        // TCP_NODELAY the last small one can wait ~40 ms for a delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        // Under TLS too: the deadline bounds the encrypted writes to the socket.
        let deadline = WriteDeadline::new(settings.write_timeout);
        let stream = WriteDeadlineIo::new(stream, deadline.clone());
        let exporter = Arc::clone(&exporter);
        let security = Arc::clone(&settings.security);
        let service = service_fn(move |request| {
            deadline.arm();
            let exporter = Arc::clone(&exporter);
            let security = Arc::clone(&security);
            async move { Ok::<_, Infallible>(respond(&request, &exporter, &security).await) }
        });
        if let Some(tls) = &settings.security.tls {
            tokio::spawn(tls::serve_connection(
                Arc::clone(tls),
                stream,
                peer,
                service,
                settings.header_read_timeout,
                graceful.watcher(),
                shutdown.clone(),
                slot,
            ));
            continue;
        }
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    log_refusals(&mut refusals, &limits, &settings);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open HTTP connections did not finish in time; closing them");
    }
}

/// One WARN line for the connections refused since the last one, if any.
fn log_refusals(refusals: &mut RefusalTally, limits: &ConnectionLimits, settings: &HttpSettings) {
    let Some(summary) = refusals.take_summary() else {
        return;
    };
    let (open, peers) = limits.open_connections();
    tracing::warn!(
        refused = summary.refused,
        over_peer_limit = summary.over_peer_limit,
        over_total_limit = summary.over_total_limit,
        from = %summary.describe_peers(),
        open_connections = open,
        open_peers = peers,
        max_connections = settings.max_connections,
        max_connections_per_peer = settings.max_connections_per_peer,
        "refused {} new connection(s) since the last report: {} from addresses already holding \
         max_connections_per_peer, {} with all max_connections slots taken",
        summary.refused,
        summary.over_peer_limit,
        summary.over_total_limit,
    );
}

/// A response body: ready byte chunks (shared, never copied per response), so its length is
/// known and sent as `Content-Length`.
pub enum ResponseBody {
    Parts(VecDeque<Bytes>),
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match self.get_mut() {
            ResponseBody::Parts(parts) => parts.pop_front(),
        };
        Poll::Ready(next.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Parts(parts) if parts.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Parts(parts) => {
                SizeHint::with_exact(parts.iter().map(|part| part.len() as u64).sum())
            }
        }
    }
}

/// The address the server is reachable at, for log lines and the demo banner.
pub fn display_address(address: SocketAddr) -> String {
    display_url(address, "http")
}

/// As [`display_address`], with the scheme (`https` when TLS is on).
pub fn display_url(address: SocketAddr, scheme: &str) -> String {
    if address.ip().is_unspecified() {
        format!("{scheme}://127.0.0.1:{}", address.port())
    } else {
        format!("{scheme}://{address}")
    }
}
