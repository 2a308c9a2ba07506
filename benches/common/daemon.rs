//! The release daemon as the process benchmarks measure: a config file and a 0600 token file for
//! one account against a simulator, `run` with stderr captured, and the address it logs once it
//! listens. Shared by `poll_and_scrape` and `soak` (included with `#[path]`, so the in-process
//! benches that use `common/mod.rs` do not carry it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cometapi_keymon::simulator::Simulator;

const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");

/// Kept log text is capped here when the lines are echoed: a long soak must not grow the
/// benchmark's own memory.
const ECHOED_LOG_LIMIT: usize = 1 << 20;

pub struct BenchDaemon {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from the daemon's "listening" line.
    pub address: String,
    /// Holds the config and token files for as long as the daemon runs.
    _directory: tempfile::TempDir,
}

/// Starts `cometapi-keymon run` for one account named `name` on `simulator`. `poll` holds the
/// `[poll]` lines beyond the shared unlimited request budget (interval, timeout, ...). With
/// `echo`, every log line is also printed on the benchmark's stderr.
pub async fn start_daemon(
    simulator: &Simulator,
    name: &str,
    poll: &str,
    echo: bool,
) -> BenchDaemon {
    let directory = tempfile::tempdir().unwrap();
    let token_file = directory.path().join("token");
    std::fs::write(&token_file, simulator.access_token()).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = directory.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[poll]\n{poll}requests_per_minute = 1000000\n\
             [log]\nlevel = \"warn,cometapi_keymon::app=info\"\n[[accounts]]\nname = \"{name}\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\n",
            simulator.base_url(),
            token_file.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let log = Arc::new(Mutex::new(String::new()));
    let captured = Arc::clone(&log);
    let reader = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if echo {
                eprintln!("daemon: {line}");
            }
            let mut log = captured.lock().unwrap();
            if !echo || log.len() < ECHOED_LOG_LIMIT {
                log.push_str(&(line + "\n"));
            }
        }
    });
    let address = loop {
        let text = log.lock().unwrap().clone();
        if let Some(start) = text.find("address=http://") {
            break text[start + "address=".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect::<String>();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon exited:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    BenchDaemon {
        child,
        address,
        _directory: directory,
    }
}
