//! TLS for the HTTP server: the rustls server configuration built from the web config's
//! `tls_server_config`, its reload when the certificate, key or client CA files change, the
//! client-certificate policies by Go's names (`client_auth`), and the handshake of each new connection (bounded
//! by a timeout, its failures counted and logged as one summary line per interval).
//!
//! Invariants:
//! - A new connection always gets the newest certificate pair that loads; a pair that does not
//!   load (half-written by a rotation, a key that does not match) keeps the previous one and is
//!   logged once, not once per connection.
//! - A client certificate that is sent is always proven (the handshake signature is checked),
//!   also in the modes that do not verify it against a CA, as Go does.
//! - A TLS handshake never holds a connection slot longer than the handshake timeout.

mod client_auth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsSettings;
use client_auth::client_verifier;

/// How often failed handshakes are summed up in the log (one line, if there were any).
pub const HANDSHAKE_FAILURE_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Concurrent requests on one HTTP/2 connection; a scraper needs one.
const MAX_HTTP2_STREAMS: u32 = 16;
/// An idle HTTP/2 connection is pinged this often, and closed when a ping is not answered in
/// the timeout: a peer that vanished does not keep its connection slot.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// ALPN names.
const ALPN_HTTP2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What a new connection is served with, re-read when the files behind it change.
pub struct TlsServer {
    settings: TlsSettings,
    http2: bool,
    handshake_timeout: Duration,
    current: Mutex<Loaded>,
    failures: HandshakeFailures,
}

struct Loaded {
    files: FilesState,
    config: Arc<rustls::ServerConfig>,
    /// The files' state whose load failed; not retried (nor logged) until they change again.
    failed: Option<FilesState>,
}

/// The state of each watched file (`None`: cannot stat it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilesState(Vec<Option<FileStamp>>);

/// Size, modification and change times (with nanoseconds) and inode: a rewrite, a rename
/// over the file, or a Kubernetes Secret's symlink swap each change one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    length: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    inode: u64,
}

impl FilesState {
    fn of(paths: &[PathBuf]) -> FilesState {
        use std::os::unix::fs::MetadataExt;
        FilesState(
            paths
                .iter()
                .map(|path| {
                    std::fs::metadata(path).ok().map(|metadata| FileStamp {
                        length: metadata.len(),
                        modified: (metadata.mtime(), metadata.mtime_nsec()),
                        changed: (metadata.ctime(), metadata.ctime_nsec()),
                        inode: metadata.ino(),
                    })
                })
                .collect(),
        )
    }
}

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(String);

impl TlsSetupError {
    /// The same error, saying which web config file it is about.
    pub fn in_file(self, path: &std::path::Path) -> TlsSetupError {
        TlsSetupError(format!("{}: {}", path.display(), self.0))
    }
}

impl TlsServer {
    /// Loads the material and builds the first configuration.
    pub fn new(
        settings: TlsSettings,
        http2: bool,
        handshake_timeout: Duration,
    ) -> Result<TlsServer, TlsSetupError> {
        let paths = watched_paths(&settings);
        let files = FilesState::of(&paths);
        let config = build_server_config(&settings, http2)?;
        Ok(TlsServer {
            settings,
            http2,
            handshake_timeout,
            current: Mutex::new(Loaded {
                files,
                config,
                failed: None,
            }),
            failures: HandshakeFailures::default(),
        })
    }

    /// The configuration for a new connection: re-read first if the files changed since the
    /// last load (a stat of two or three files per connection).
    fn current_config(&self) -> Arc<rustls::ServerConfig> {
        let paths = watched_paths(&self.settings);
        let files = FilesState::of(&paths);
        let mut loaded = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if files != loaded.files && loaded.failed.as_ref() != Some(&files) {
            match build_server_config(&self.settings, self.http2) {
                Ok(config) => {
                    tracing::info!(
                        files = %describe_paths(&paths),
                        "TLS certificate files changed; new connections use the new ones"
                    );
                    loaded.config = config;
                    loaded.files = files;
                    loaded.failed = None;
                }
                Err(error) => {
                    tracing::error!(
                        %error,
                        "TLS certificate files changed but cannot be used; new connections \
                         keep the previous certificate until they are fixed"
                    );
                    loaded.failed = Some(files);
                }
            }
        }
        Arc::clone(&loaded.config)
    }

    /// The TLS handshake of an accepted connection, within the handshake timeout. A failure
    /// is counted for the summary and logged at debug level only.
    pub async fn handshake<IO>(&self, stream: IO, peer: SocketAddr) -> Option<(TlsStream<IO>, bool)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.current_config());
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let http2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_HTTP2);
                Some((stream, http2))
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                self.failures.record(false, peer, &error.to_string());
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                self.failures.record(true, peer, "timed out");
                None
            }
        }
    }

    /// Logs the failed handshakes of each interval as one line, until `shutdown`; then once
    /// more for the last partial interval.
    pub async fn summarize_failures(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(HANDSHAKE_FAILURE_SUMMARY_INTERVAL);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {},
            }
            self.failures.log_and_reset(self.handshake_timeout);
        }
        self.failures.log_and_reset(self.handshake_timeout);
    }
}

fn watched_paths(settings: &TlsSettings) -> Vec<PathBuf> {
    settings
        .watched_files()
        .into_iter()
        .map(PathBuf::from)
        .collect()
}

fn describe_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    shown.join(", ")
}

/// Failed handshakes since the last summary.
#[derive(Default)]
struct HandshakeFailures {
    timed_out: AtomicU64,
    failed: AtomicU64,
    last: Mutex<Option<(SocketAddr, String, SystemTime)>>,
}

impl HandshakeFailures {
    fn record(&self, timed_out: bool, peer: SocketAddr, error: &str) {
        if timed_out {
            self.timed_out.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((peer, error.to_owned(), SystemTime::now()));
    }

    fn log_and_reset(&self, timeout: Duration) {
        let timed_out = self.timed_out.swap(0, Ordering::Relaxed);
        let failed = self.failed.swap(0, Ordering::Relaxed);
        let last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if timed_out + failed == 0 {
            return;
        }
        let (last_peer, last_error) = last
            .map(|(peer, error, _)| (peer.to_string(), error))
            .unwrap_or_default();
        tracing::warn!(
            failed_handshakes = timed_out + failed,
            timed_out,
            timeout = %humantime::format_duration(timeout),
            %last_peer,
            %last_error,
            "TLS handshakes failed since the last summary (connections closed; each is logged at debug level)"
        );
    }
}

/// The rustls configuration for `settings`: versions, suites, curves, the certificate, the
/// client-certificate policy and ALPN.
fn build_server_config(
    settings: &TlsSettings,
    http2: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let material = settings
        .load_material()
        .map_err(|error| TlsSetupError(error.to_string()))?;
    let provider = Arc::new(settings.crypto_provider());
    let versions = settings.protocol_versions();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|error| {
            TlsSetupError(format!(
                "tls_server_config: the cipher suites, curves and versions leave nothing to \
                 negotiate: {error}"
            ))
        })?;
    let verifier = client_verifier(settings, &material, &provider)?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertificate(Arc::clone(
        &material.certified_key,
    ))));
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    config.alpn_protocols = if http2 {
        vec![ALPN_HTTP2.to_vec(), ALPN_HTTP1.to_vec()]
    } else {
        vec![ALPN_HTTP1.to_vec()]
    };
    Ok(Arc::new(config))
}

/// The one certificate, whatever name the client asks for (as Go serves it).
#[derive(Debug)]
struct SingleCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for SingleCertificate {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Serves one accepted connection over TLS: the handshake (abandoned at shutdown), then
/// HTTP/2 when ALPN chose it or HTTP/1.1 with the header-read timeout. Holds `slot` until the
/// connection ends.
/// `IO` is the accepted TCP stream, or whatever the accept loop wraps it in.
#[allow(clippy::too_many_arguments)]
pub async fn serve_connection<IO, S>(
    tls: Arc<TlsServer>,
    stream: IO,
    peer: SocketAddr,
    service: S,
    header_read_timeout: Duration,
    watcher: Watcher,
    shutdown: CancellationToken,
    slot: super::ConnectionSlot,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<crate::http::ResponseBody>,
            Error = std::convert::Infallible,
        > + Send
        + Clone
        + 'static,
    S::Future: Send + 'static,
{
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => None,
        handshake = tls.handshake(stream, peer) => handshake,
    };
    let Some((stream, http2)) = handshake else {
        drop(slot);
        return;
    };
    let io = TokioIo::new(stream);
    let result = if http2 {
        serve_http2(io, service, header_read_timeout, watcher, shutdown).await
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(io, service);
        watcher.watch(connection).await
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "TLS connection ended with an error");
    }
    drop(slot);
}

/// HTTP/2 has no header-read timeout, so an idle connection is closed here instead: when no
/// request arrived during a whole `idle_timeout`, the connection is shut down gracefully
/// (GOAWAY; streams in progress finish), as an idle HTTP/1 keep-alive connection is closed by
/// the header-read timeout. A connection that never made a request is dropped one interval
/// later. Shutdown
/// of the server does the same. `watcher` is held until the end, so the server's drain waits
/// for this connection.
async fn serve_http2<IO, S>(
    io: TokioIo<IO>,
    service: S,
    idle_timeout: Duration,
    watcher: Watcher,
    shutdown: CancellationToken,
) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<crate::http::ResponseBody>,
            Error = std::convert::Infallible,
        > + Send
        + Clone
        + 'static,
    S::Future: Send + 'static,
{
    let requests = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&requests);
    let counting = hyper::service::service_fn(move |request| {
        counted.fetch_add(1, Ordering::Relaxed);
        service.call(request)
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_HTTP2_STREAMS)
        // Pings find a peer that vanished.
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .serve_connection(io, counting);
    let mut connection = std::pin::pin!(connection);
    let mut ticks = tokio::time::interval(idle_timeout);
    ticks.tick().await;
    let mut requests_seen = 0;
    let mut closing = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = ticks.tick() => {
                let now = requests.load(Ordering::Relaxed);
                if closing && now == 0 {
                    // Never a request (not even the client preface, which a graceful
                    // shutdown waits for): drop the connection.
                    break Ok(());
                }
                if !closing && now == requests_seen {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                requests_seen = now;
            }
        }
    };
    drop(watcher);
    result
}
