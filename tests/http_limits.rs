//! The HTTP server under hostile clients, over real sockets against the release of the binary:
//! one address holding hundreds of half-open connections does not lock out a scrape from another
//! address (127.0.0.2), refusals are logged as a summary line with a count, and a client that
//! reads a large response too slowly is cut off by the write timeout.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::process::DaemonProcess;
use support::start_simulator;

/// A config file for `run` against `simulator`, with extra `[server]` lines.
fn write_config(directory: &Path, base_url: &str, token: &str, server_lines: &str) -> String {
    let token_file = directory.join("token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = directory.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_lines}\n[poll]\ninterval = \"1h\"\nrequests_per_minute = 100000\n\
             [log]\nlevel = \"info\"\n[[accounts]]\nname = \"main\"\nbase_url = \"{base_url}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_string()
}

fn socket_address(daemon: &DaemonProcess) -> SocketAddr {
    daemon
        .address
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

async fn connect_from(source: [u8; 4], target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(target).await
}

/// True when the server closed (or reset) the connection within `wait`.
async fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 256];
    match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

async fn wait_ready(daemon: &DaemonProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.get("/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "no complete poll:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_from_one_address_do_not_lock_out_another() {
    let simulator = start_simulator(200).await;
    let directory = tempfile::tempdir().unwrap();
    // The defaults: 256 slots, 32 per address, 10 s to send the headers.
    let config = write_config(
        directory.path(),
        &simulator.base_url(),
        &simulator.access_token(),
        "",
    );
    let daemon = DaemonProcess::start(&["run", "--config", &config], &[]);
    wait_ready(&daemon).await;
    let target = socket_address(&daemon);

    // 300 connections from 127.0.0.1, each sending half a request header and then nothing.
    const FLOOD: usize = 300;
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let mut stream = connect_from([127, 0, 0, 1], target).await.unwrap();
        // A refused connection may already be closed: the write can fail, that is the point.
        let _ = stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0")
            .await;
        flood.push(stream);
    }
    let mut held = 0;
    let mut closed = 0;
    for stream in &mut flood {
        if closed_by_server(stream, Duration::from_millis(100)).await {
            closed += 1;
        } else {
            held += 1;
        }
    }
    assert_eq!(
        held, 32,
        "one address holds exactly max_connections_per_peer"
    );
    assert_eq!(closed, FLOOD - 32);

    // While they are held, another address scrapes normally.
    let other_peer = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for path in ["/metrics", "/healthz"] {
        let response = other_peer
            .get(format!("{}{path}", daemon.address))
            .send()
            .await
            .expect("a scrape from 127.0.0.2 gets through");
        assert_eq!(response.status(), 200, "{path}");
        let body = response.text().await.unwrap();
        if path == "/metrics" {
            assert!(body.contains("cometapi_up{account=\"main\"} 1"));
        }
    }
    // ... and 127.0.0.1 itself still gets nothing new.
    let mut one_more = connect_from([127, 0, 0, 1], target).await.unwrap();
    let _ = one_more
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(closed_by_server(&mut one_more, Duration::from_secs(2)).await);

    drop(flood);
    drop(one_more);
    // Shutdown writes out the refusals not yet reported.
    let (clean, _, logs) = daemon.terminate();
    assert!(clean, "{logs}");
    let summaries: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("refused") && line.contains("connection"))
        .collect();
    assert!(
        (1..=2).contains(&summaries.len()),
        "one summary line per 10 s interval, not one per connection:\n{logs}"
    );
    let refused: u64 = summaries
        .iter()
        .map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("refused="))
                .and_then(|count| count.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no refused= count in {line}"))
        })
        .sum();
    assert_eq!(refused, (FLOOD - 32 + 1) as u64, "{logs}");
    assert!(
        summaries.iter().all(|line| line.contains("127.0.0.1 (")),
        "the summary names the address: {summaries:?}"
    );
    let warnings = logs.lines().filter(|line| line.contains("WARN")).count();
    assert!(warnings <= 3, "{warnings} WARN lines:\n{logs}");
    simulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cut_off_by_the_write_timeout() {
    // 10,000 keys: a plain body of about 10 MB, more than loopback's socket buffers hold.
    let simulator = start_simulator_with_many_keys(10_000).await;
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(
        directory.path(),
        &simulator.base_url(),
        &simulator.access_token(),
        "write_timeout = \"2s\"",
    );
    let daemon = DaemonProcess::start(&["run", "--config", &config], &[]);
    wait_ready(&daemon).await;
    let target = socket_address(&daemon);
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    // A reader that keeps up gets the whole body well within the timeout.
    let mut fast = connect_from([127, 0, 0, 1], target).await.unwrap();
    fast.write_all(request).await.unwrap();
    let mut whole = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), fast.read_to_end(&mut whole))
        .await
        .expect("a normal reader finishes")
        .unwrap();
    let body_start = whole.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(whole.len() - body_start > 8_000_000, "a large body");

    // A reader with a small receive buffer that takes 4 KiB every 50 ms (80 KiB/s) would need
    // two minutes; it is cut off after about 2 s.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let mut slow = socket.connect(target).await.unwrap();
    slow.write_all(request).await.unwrap();
    let started = Instant::now();
    let mut received = 0usize;
    let mut buffer = [0u8; 4096];
    let ended = loop {
        match slow.read(&mut buffer).await {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(count) => received += count,
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the slow reader was never cut off ({received} bytes so far)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        received < whole.len() / 2,
        "cut off early: {received} of {} bytes",
        whole.len()
    );
    assert!(
        ended >= Duration::from_millis(1500) && ended < Duration::from_secs(15),
        "cut off after {ended:?}, the write timeout is 2 s (plus what the buffers held)"
    );
    // The daemon is fine afterwards.
    assert_eq!(daemon.get("/healthz").await.0, 200);
    let (clean, _, logs) = daemon.terminate();
    assert!(clean, "{logs}");
    simulator.shutdown().await;
}

async fn start_simulator_with_many_keys(keys: usize) -> cometapi_keymon::simulator::Simulator {
    support::start_simulator_with(cometapi_keymon::simulator::SimulatorConfig {
        keys,
        max_tokens_per_user: usize::MAX,
        ..cometapi_keymon::simulator::SimulatorConfig::default()
    })
    .await
}
