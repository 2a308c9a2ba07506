//! The HTTP server (hyper 1): the listener, the connections and the response body type. What
//! each path answers (`/metrics`, `/healthz`, `/readyz`, `/`) is in `routes`.
//!
//! One task accepts connections until shutdown; each connection is served by hyper's HTTP/1
//! machinery with a header-read timeout (slow clients cannot hold connections open) and counted
//! against `max_connections`. On shutdown the listener closes at once and open connections get
//! a few seconds to finish their response.
//!
//! With a web config (`security`), a connection first completes a TLS handshake (`tls`, bounded
//! by the same timeout; HTTP/2 when ALPN picks it), and every request is admitted or refused
//! (`auth`, `security`) before it reaches the routes.

pub mod auth;
mod routes;
pub mod security;
pub mod tls;

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
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::exposition::PlainText;
use crate::metrics::Exporter;
use routes::respond;
pub use security::WebSecurity;

/// How long open connections may take to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
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
    let connection_slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    if let Some(tls) = &settings.security.tls {
        tokio::spawn(Arc::clone(tls).summarize_failures(shutdown.clone()));
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
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
        // The response goes out in several writes (head, cached stream, tail); without
        // TCP_NODELAY the last small one can wait ~40 ms for a delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let Ok(slot) = Arc::clone(&connection_slots).try_acquire_owned() else {
            tracing::warn!(%peer, limit = settings.max_connections, "too many open connections; closing a new one");
            continue;
        };
        let exporter = Arc::clone(&exporter);
        let security = Arc::clone(&settings.security);
        let service = service_fn(move |request| {
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
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open HTTP connections did not finish in time; closing them");
    }
}

/// A response body: ready byte chunks, or the cached families inflated on the fly followed by
/// the health text.
pub enum ResponseBody {
    Parts(VecDeque<Bytes>),
    Plain {
        text: Box<PlainText>,
        tail: Option<Bytes>,
    },
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
            ResponseBody::Plain { text, tail } => text.next().or_else(|| tail.take()),
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
            ResponseBody::Plain { .. } => SizeHint::default(),
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
