//! The web config over real sockets on 127.0.0.1, with certificates made in the test (rcgen):
//! TLS with the certificate from the file, basic auth on `/metrics` and `/` but not on the
//! probes, extra headers, bad credentials that never reach the exposition code, a cached
//! credential that a password flood cannot delay, the client-certificate policies and the SAN
//! allow-list, a certificate swapped on disk served to the next connection (and a broken one
//! not), HTTP/2 by ALPN (scrapes over it, an idle connection closed), and a TLS handshake that
//! never finishes closed after the timeout.
//!
//! Over 600 lines on purpose: one test per web-config behaviour over real sockets.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cometapi_keymon::simulator::Simulator;
use support::tls::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

struct Served {
    daemon: TestDaemon,
    _simulator: Simulator,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.daemon.address.port())
    }
}

/// A daemon polling a simulator, serving with the web config `yaml` (written to
/// `directory/web.yml`, next to the files it names).
async fn serve_with(directory: &Path, yaml: &str, header_read_timeout: Duration) -> Served {
    let simulator = start_simulator(5).await;
    let mut config = test_config(vec![account_for("main", &simulator)], every(60));
    config.server.header_read_timeout = header_read_timeout;
    let web = write(directory, "web.yml", yaml);
    config
        .use_web_config_file(&web)
        .unwrap_or_else(|error| panic!("the web config loads: {error}"));
    Served {
        daemon: start_daemon(config).await,
        _simulator: simulator,
    }
}

/// The common case: a new CA and a server pair for `localhost`, served with
/// `tls_and_users_yaml`, and an HTTPS client that trusts the CA.
struct TlsWithUsers {
    served: Served,
    client: reqwest::Client,
    server: Pair,
    _directory: tempfile::TempDir,
}

async fn serve_tls_with_users() -> TlsWithUsers {
    let directory = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let server = ca.server("keymon");
    write_pair(directory.path(), &server);
    let served = serve_with(
        directory.path(),
        &tls_and_users_yaml(),
        Duration::from_secs(5),
    )
    .await;
    let client = https_client(&ca.certificate, None);
    TlsWithUsers {
        served,
        client,
        server,
        _directory: directory,
    }
}

fn tls_and_users_yaml() -> String {
    format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n    \
         X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  {USER}: {}\n  other: {}\n",
        bcrypt_hash(PASSWORD),
        bcrypt_hash("another password")
    )
}

/// Waits until a scrape with the right credentials shows the first complete poll.
async fn wait_for_first_poll(client: &reqwest::Client, served: &Served) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = client
            .get(served.url("/metrics"))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .expect("an authenticated scrape over TLS");
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        if Metrics::parse(&text).up("main") == 1.0 {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "no poll: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_metrics_and_the_index_but_not_the_probes_over_tls() {
    let TlsWithUsers {
        served,
        client,
        server,
        _directory,
    } = serve_tls_with_users().await;

    let text = wait_for_first_poll(&client, &served).await;
    let metrics = Metrics::parse(&text);
    assert!(!metrics.key_series().is_empty(), "key series: {text}");

    // The certificate is the one from the files, verified against the test CA.
    let response = client.get(served.url("/healthz")).send().await.unwrap();
    assert_eq!(peer_certificate(&response), der_of(&server.certificate));

    for path in ["/metrics", "/", "/nope"] {
        let cases: [(&str, Option<(&str, &str)>); 4] = [
            ("no credentials", None),
            ("wrong password", Some((USER, "wrong"))),
            ("unknown user", Some(("nobody", PASSWORD))),
            ("another user's password", Some(("other", PASSWORD))),
        ];
        for (what, credentials) in cases {
            let mut request = client.get(served.url(path));
            if let Some((user, password)) = credentials {
                request = request.basic_auth(user, Some(password));
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{path} with {what}");
            assert_eq!(
                response.headers()["www-authenticate"],
                "Basic",
                "{path} with {what}"
            );
            assert_eq!(
                response.headers()["strict-transport-security"],
                "max-age=31536000"
            );
            let body = response.text().await.unwrap();
            assert!(!body.contains("cometapi_"), "{path} with {what}: {body}");
        }
    }
    let index = client
        .get(served.url("/"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.text().await.unwrap().contains("<table"));

    for (path, expected) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let response = client.get(served.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} without credentials");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.text().await.unwrap(), expected);
    }

    // Plain HTTP to the TLS port gets no answer from the routes.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/healthz",
            served.daemon.address.port()
        ))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "plain HTTP must not be served on the TLS port"
    );
    served.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_never_reach_the_exposition_code() {
    let TlsWithUsers {
        served,
        client,
        _directory,
        ..
    } = serve_tls_with_users().await;
    wait_for_first_poll(&client, &served).await;

    // Every scrape that reaches the exposition code runs the scrape hooks.
    let scrapes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&scrapes);
    served.daemon.exporter.add_scrape_hook(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let malformed = [
        "Basic",
        "Basic not-base64!",
        "Bearer abc",
        "Basic cHJvbWV0aGV1cw==",
    ];
    for header in malformed {
        let response = client
            .get(served.url("/metrics"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{header}");
    }
    for (user, password) in [
        (USER, "wrong"),
        (USER, ""),
        ("nobody", PASSWORD),
        ("other", PASSWORD),
        (USER, &format!("{PASSWORD} ")),
    ] {
        for gzip in [false, true] {
            let mut request = client
                .get(served.url("/metrics"))
                .basic_auth(user, Some(password));
            if gzip {
                request = request.header("accept-encoding", "gzip");
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{user}:{password}");
        }
    }
    let response = client.get(served.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        scrapes.load(Ordering::SeqCst),
        0,
        "a refused request ran the exposition code"
    );

    let response = client
        .get(served.url("/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(scrapes.load(Ordering::SeqCst), 1, "the good scrape counts");
    served.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_does_not_delay_a_cached_credential() {
    let directory = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    write_pair(directory.path(), &ca.server("keymon"));
    // Cost 8: each wrong password is a real, slow-ish bcrypt check.
    let yaml = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         basic_auth_users:\n  {USER}: {}\n",
        bcrypt::hash(PASSWORD, 8).unwrap()
    );
    let served = serve_with(directory.path(), &yaml, Duration::from_secs(10)).await;
    let client = https_client(&ca.certificate, None);
    // The first good scrape is checked with bcrypt and cached.
    wait_for_first_poll(&client, &served).await;

    const FLOOD: usize = 24;
    let finished = Arc::new(AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for index in 0..FLOOD {
        let client = https_client(&ca.certificate, None);
        let url = served.url("/metrics");
        let finished = Arc::clone(&finished);
        flood.spawn(async move {
            let status = client
                .get(url)
                .basic_auth(USER, Some(format!("wrong {index}")))
                .send()
                .await
                .map(|response| response.status().as_u16());
            finished.fetch_add(1, Ordering::SeqCst);
            status
        });
    }
    // Let the flood reach the password checks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = client
        .get(served.url("/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let finished_when_served = finished.load(Ordering::SeqCst);
    assert!(
        finished_when_served < FLOOD,
        "the cached credential should be answered while wrong passwords still wait their turn \
         (all {FLOOD} had finished first)"
    );
    while let Some(status) = flood.join_next().await {
        assert_eq!(status.unwrap().unwrap(), 401);
    }
    served.daemon.stop().await;
}

fn client_auth_yaml(client_auth_type: &str, extra: &str) -> String {
    format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_ca_file: clients-ca.crt\n  client_auth_type: {client_auth_type}\n{extra}"
    )
}

async fn healthz_status(client: &reqwest::Client, served: &Served) -> Result<u16, String> {
    client
        .get(served.url("/healthz"))
        .send()
        .await
        .map(|response| response.status().as_u16())
        .map_err(|error| format!("{error:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_verify_client_cert_refuses_clients_without_a_certificate_from_the_ca() {
    let directory = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("server CA");
    let clients_ca = TestCa::new("clients CA");
    let stranger_ca = TestCa::new("someone else's CA");
    write_pair(directory.path(), &server_ca.server("keymon"));
    write(directory.path(), "clients-ca.crt", &clients_ca.certificate);
    let served = serve_with(
        directory.path(),
        &client_auth_yaml("RequireAndVerifyClientCert", ""),
        Duration::from_secs(5),
    )
    .await;
    let good = clients_ca.client(&["scraper.example"]);
    let stranger = stranger_ca.client(&["scraper.example"]);

    let without = https_client(&server_ca.certificate, None);
    assert!(
        healthz_status(&without, &served).await.is_err(),
        "a client without a certificate must be refused, even for /healthz"
    );
    let with_stranger = https_client(&server_ca.certificate, Some(&stranger));
    assert!(healthz_status(&with_stranger, &served).await.is_err());
    let with_good = https_client(&server_ca.certificate, Some(&good));
    assert_eq!(healthz_status(&with_good, &served).await, Ok(200));
    served.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_client_auth_types_behave_as_in_go() {
    let directory = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("server CA");
    let clients_ca = TestCa::new("clients CA");
    let stranger_ca = TestCa::new("someone else's CA");
    write_pair(directory.path(), &server_ca.server("keymon"));
    write(directory.path(), "clients-ca.crt", &clients_ca.certificate);
    let good = clients_ca.client(&["scraper.example"]);
    let stranger = stranger_ca.client(&["scraper.example"]);
    // (type, without a certificate, with the CA's, with a stranger's)
    let expectations = [
        ("RequestClientCert", true, true, true),
        ("RequireAnyClientCert", false, true, true),
        ("VerifyClientCertIfGiven", true, true, false),
    ];
    for (client_auth_type, without_ok, good_ok, stranger_ok) in expectations {
        let served = serve_with(
            directory.path(),
            &client_auth_yaml(client_auth_type, ""),
            Duration::from_secs(5),
        )
        .await;
        for (what, client, expected) in [
            ("no certificate", None, without_ok),
            ("the CA's certificate", Some(&good), good_ok),
            ("a stranger's certificate", Some(&stranger), stranger_ok),
        ] {
            let client = https_client(&server_ca.certificate, client);
            let status = healthz_status(&client, &served).await;
            assert_eq!(
                status.is_ok(),
                expected,
                "{client_auth_type} with {what}: {status:?}"
            );
        }
        served.daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_allowed_sans_admits_only_certificates_with_a_listed_san() {
    let directory = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("server CA");
    let clients_ca = TestCa::new("clients CA");
    write_pair(directory.path(), &server_ca.server("keymon"));
    write(directory.path(), "clients-ca.crt", &clients_ca.certificate);
    let served = serve_with(
        directory.path(),
        &client_auth_yaml(
            "RequireAndVerifyClientCert",
            "  client_allowed_sans:\n    - prometheus.monitoring.svc\n    - 10.0.0.7\n",
        ),
        Duration::from_secs(5),
    )
    .await;
    for (sans, expected) in [
        (&["prometheus.monitoring.svc"][..], true),
        (&["other.example", "10.0.0.7"][..], true),
        (&["prometheus.monitoring.svc.evil"][..], false),
        (&["10.0.0.8"][..], false),
    ] {
        let client = https_client(&server_ca.certificate, Some(&clients_ca.client(sans)));
        let status = healthz_status(&client, &served).await;
        assert_eq!(status.is_ok(), expected, "client SANs {sans:?}: {status:?}");
    }
    served.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_is_served_to_the_next_connection() {
    let directory = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let first = ca.server("first");
    write_pair(directory.path(), &first);
    let yaml = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let served = serve_with(directory.path(), yaml, Duration::from_secs(5)).await;
    let client = https_client(&ca.certificate, None);
    let served_certificate = || async {
        let response = client.get(served.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        peer_certificate(&response)
    };
    assert_eq!(served_certificate().await, der_of(&first.certificate));

    // A rotation: both files replaced (cert-manager, or a Secret's symlink swap).
    let second = ca.server("second");
    let staging = directory.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    write_pair(&staging, &second);
    std::fs::rename(
        staging.join("server.key"),
        directory.path().join("server.key"),
    )
    .unwrap();
    std::fs::rename(
        staging.join("server.crt"),
        directory.path().join("server.crt"),
    )
    .unwrap();
    assert_eq!(served_certificate().await, der_of(&second.certificate));

    // A broken new pair (a certificate whose key is not there yet) keeps the previous one.
    let third = ca.server("third");
    write(directory.path(), "server.crt", &third.certificate);
    for _ in 0..3 {
        assert_eq!(served_certificate().await, der_of(&second.certificate));
    }
    // Once the key arrives too, the next connection gets the new pair.
    write(directory.path(), "server.key", &third.key);
    assert_eq!(served_certificate().await, der_of(&third.certificate));

    // A certificate file that disappears keeps the last good pair as well.
    std::fs::remove_file(directory.path().join("server.crt")).unwrap();
    assert_eq!(served_certificate().await, der_of(&third.certificate));
    served.daemon.stop().await;
}

/// ALPN as a raw rustls client sees it: which protocol the server picked.
async fn negotiated_alpn(port: u16, ca: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, stream).await.unwrap();
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_offered_by_alpn_unless_the_web_config_turns_it_off() {
    let directory = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    write_pair(directory.path(), &ca.server("keymon"));
    let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    for (extra, expected) in [
        ("", b"h2".to_vec()),
        (
            "http_server_config:\n  http2: false\n",
            b"http/1.1".to_vec(),
        ),
    ] {
        let served = serve_with(
            directory.path(),
            &format!("{base}{extra}"),
            Duration::from_secs(5),
        )
        .await;
        let port = served.daemon.address.port();
        assert_eq!(
            negotiated_alpn(port, &ca.certificate).await,
            Some(expected.clone()),
            "web config extra: {extra:?}"
        );
        served.daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_finishes_is_closed_and_does_not_block_scrapes() {
    let directory = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    write_pair(directory.path(), &ca.server("keymon"));
    let yaml = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let served = serve_with(directory.path(), yaml, Duration::from_secs(1)).await;
    let port = served.daemon.address.port();

    // Silent clients, and one that sends the first bytes of a ClientHello and stalls.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    let mut partial = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    stalled.push(partial);

    // Meanwhile a real client is served.
    let client = https_client(&ca.certificate, None);
    assert_eq!(healthz_status(&client, &served).await, Ok(200));

    // Each stalled connection is closed by the server after about the timeout.
    let started = tokio::time::Instant::now();
    for mut stream in stalled {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("the server closes a stalled handshake within the timeout");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "expected the connection closed, read {read:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(healthz_status(&client, &served).await, Ok(200));
    served.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_style_scrapes_work_over_http2_with_basic_auth() {
    let TlsWithUsers {
        served,
        client,
        _directory,
        ..
    } = serve_tls_with_users().await;
    let text = wait_for_first_poll(&client, &served).await;
    assert!(!Metrics::parse(&text).key_series().is_empty());
    for gzip in [false, true] {
        let mut request = client
            .get(served.url("/metrics"))
            .basic_auth(USER, Some(PASSWORD));
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.version(),
            reqwest::Version::HTTP_2,
            "ALPN chose h2"
        );
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        if gzip {
            assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip body");
        } else {
            assert!(Metrics::parse(std::str::from_utf8(&body).unwrap()).up("main") == 1.0);
        }
    }
    let refused = client.get(served.url("/metrics")).send().await.unwrap();
    assert_eq!(refused.version(), reqwest::Version::HTTP_2);
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Basic");
    served.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_like_an_idle_http1_one() {
    use rustls::pki_types::pem::PemObject;
    let directory = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    write_pair(directory.path(), &ca.server("keymon"));
    let yaml = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let served = serve_with(directory.path(), yaml, Duration::from_secs(1)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.certificate.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", served.daemon.address.port()))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, stream).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client never sends its preface or a request; the server sends its SETTINGS, then
    // gives up on the connection after one or two idle intervals (1 s each).
    let started = tokio::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection must be closed");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before it was idle"
    );
    served.daemon.stop().await;
}
