//! The status page `/` in a real browser: Debian's headless Chromium loads it from the real
//! binary (polling the simulator with a dry-run policy) and dumps the DOM and a phone-sized
//! screenshot. The assertions are on what a person would read: the text of the rendered page.
//! Under `CI=true` a missing Chromium is a failure; elsewhere the suite says once that it was
//! skipped and why (`support::tools`).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::process::DaemonProcess;
use support::*;

/// Runs Chromium headless on `url` with these extra flags; kills it after a minute.
fn run_chromium(chromium: &Path, profile: &Path, extra: &[String], url: &str) -> Vec<u8> {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut bytes).unwrap();
        bytes
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The text a person reads: the body without tags, entities decoded, whitespace collapsed.
fn visible_text(dom: &str) -> String {
    let body = dom.split("<body").nth(1).unwrap_or(dom);
    let mut text = String::new();
    let mut in_tag = false;
    for character in body.chars() {
        match character {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            other if !in_tag => text.push(other),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG"
    );
    let number = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_reads_the_status_page_in_a_real_browser() {
    let Some(chromium) = support::tools::require_tool("chromium") else {
        return;
    };
    let simulator = start_simulator(40).await;
    // A name that would be markup if it were not escaped, and a CJK one, created the way a
    // user does: through the management API.
    let http = reqwest::Client::new();
    for name in ["<b>bold</b> & \"quoted\"", "团队密钥"] {
        let created = http
            .post(format!("{}/api/token/", simulator.base_url()))
            .header("Authorization", simulator.access_token())
            .header("Content-Type", "application/json")
            .body(
                serde_json::to_vec(&serde_json::json!({
                    "name": name, "remain_quota": 0, "unlimited_quota": false, "expired_time": -1,
                }))
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success());
    }
    let directory = tempfile::tempdir().unwrap();
    let config = write_policy_config(
        directory.path(),
        &simulator,
        "[policy]\nstate_dir = \"state\"\n\n[[policy.rules]]\nname = \"disable-expired\"\n\
         action = \"disable\"\nwhen.expired = true\n",
    );
    let daemon = DaemonProcess::start(&["run", "--config", config.to_str().unwrap()], &[]);
    // Wait for a poll after the first: its would-be actions now sit in cooldown, which the
    // page must say instead of "nothing to do".
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = daemon.get("/").await;
        if page.contains("in cooldown") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cooldown on the page:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = format!("{}/", daemon.address);
    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(&chromium, profile.path(), &["--dump-dom".into()], &url);
    let dom = String::from_utf8(dom).expect("the DOM is UTF-8");
    let text = visible_text(&dom);
    let would_act = audit_entries(&directory.path().join("state"))
        .iter()
        .filter(|entry| entry["outcome"] == "dry_run")
        .count();
    assert!(would_act > 0, "the first poll planned dry-run actions");
    let keys_word = if would_act == 1 { "key" } else { "keys" };
    for expected in [
        "cometapi-keymon".to_owned(),
        "Needs attention now".to_owned(),
        "expired-still-enabled".to_owned(),
        "the server still lists it as enabled".to_owned(),
        "expired but enabled".to_owned(),
        "expiring within 7 days".to_owned(),
        "exhausted".to_owned(),
        "dry run (nothing is written)".to_owned(),
        format!("held back: {would_act} {keys_word} in cooldown"),
        format!("last activity: {would_act} would act (dry run)"),
        "<b>bold</b> & \"quoted\"".to_owned(),
        "团队密钥".to_owned(),
        "no quota left".to_owned(),
        // The simulator has the wallet route: the page shows what is left in it.
        "wallet".to_owned(),
        " left, ".to_owned(),
        "UTC".to_owned(),
    ] {
        assert!(
            text.contains(&expected),
            "the page should say {expected:?}:\n{text}"
        );
    }
    assert!(!text.contains("nothing to do"), "{text}");
    assert!(!dom.contains("<b>bold</b>"), "a key name became markup");
    for token in simulator.tokens() {
        assert!(!dom.contains(&token.key), "a key value is on the page");
        assert!(!dom.contains(&token.key[4..token.key.len() - 4]));
    }
    assert!(!dom.contains(&simulator.access_token()));
    // The most urgent first: a key failing now before one that only expires soon.
    let failing = text.find("the server still lists it as enabled").unwrap();
    if let Some(expiring) = text.find("expires in ") {
        assert!(failing < expiring, "{text}");
    }

    // A phone-sized screenshot: a real PNG of that size with something drawn on it.
    let screenshot = directory.path().join("status.png");
    let png = {
        let _ = run_chromium(
            &chromium,
            profile.path(),
            &[
                format!("--screenshot={}", screenshot.display()),
                "--window-size=390,1600".into(),
            ],
            &url,
        );
        std::fs::read(&screenshot).expect("chromium wrote the screenshot")
    };
    assert_eq!(png_size(&png), (390, 1600));
    assert!(
        png.len() > 20_000,
        "a screenshot of the page is more than a blank image: {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("STATUS_PAGE_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).unwrap();
    }
    let (stopped, _, _) = daemon.terminate();
    assert!(stopped);
}
