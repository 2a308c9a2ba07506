//! The real binary as a child process: start it, wait for its listen address, scrape it, and
//! stop it by its pid (SIGTERM, or SIGKILL to simulate a crash).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Metrics;

pub const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");

pub struct DaemonProcess {
    pub child: Child,
    pub address: String,
    pub stderr: Arc<Mutex<String>>,
}

impl DaemonProcess {
    /// Starts `cometapi-keymon run` and waits until it logs its listen address.
    pub fn start(arguments: &[&str], environment: &[(&str, &str)]) -> DaemonProcess {
        let mut command = Command::new(BINARY);
        command
            .args(arguments)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in environment {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let reader = BufReader::new(child.stderr.take().unwrap());
        let captured = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let mut text = captured.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = stderr.lock().unwrap().clone();
            // http:// or https:// (with a web config turning TLS on).
            if let Some(start) = text.find("address=http") {
                let address: String = text[start + "address=".len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                return DaemonProcess {
                    child,
                    address,
                    stderr,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("daemon exited early with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not log its address:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: &str) {
        // The shell's builtin `kill`: no dependency on procps being installed.
        let status = Command::new("sh")
            .args(["-c", &format!("kill {signal} {}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and returns (exit success, seconds it took, captured stderr).
    pub fn terminate(mut self) -> (bool, Duration, String) {
        let started = Instant::now();
        self.signal("-TERM");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (
                    status.success(),
                    started.elapsed(),
                    self.stderr.lock().unwrap().clone(),
                );
            }
            if started.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                panic!("daemon ignored SIGTERM for 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::Client::builder()
            .no_gzip()
            .build()
            .unwrap()
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn wait_for_metrics(
        &self,
        what: &str,
        condition: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, text) = self.get("/metrics").await;
            let metrics = Metrics::parse(&text);
            if condition(&metrics) {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                metrics.health_lines()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl DaemonProcess {
    /// SIGKILL, as a crash or an OOM kill would end it; waits until it is gone.
    pub fn kill(mut self) -> String {
        self.signal("-KILL");
        let _ = self.child.wait();
        self.stderr.lock().unwrap().clone()
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
