//! The command line as a shell user meets it: the real binary against an in-process simulator.
//! A closed pipe (`scan | head`) ends every subcommand quietly; long listings show progress on
//! stderr (through a pseudo-terminal from `script`, and as one line elsewhere) without touching
//! stdout; `run --listen` and the message when the port is taken; `check-config --online`
//! reporting what each account's server is (including the shipped systemd config, checked before
//! the service exists with `--token-file`); completions and the manual page from the clap
//! definitions.
//!
//! Over 600 lines on purpose: one test per first-hour command-line behaviour.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cometapi_keymon::simulator::{Simulator, SimulatorConfig};
use support::process::DaemonProcess;
use support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");

/// 128 + SIGPIPE, as the README says a cut-off command exits.
const EXIT_STDOUT_CLOSED: i32 = 141;

fn write_config(
    directory: &Path,
    simulator: &Simulator,
    requests_per_minute: u32,
    extra: &str,
) -> PathBuf {
    let token_file = directory.join("token");
    std::fs::write(&token_file, format!("{}\n", simulator.access_token())).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[poll]\ntimeout = \"5s\"\nrequests_per_minute = \
         {requests_per_minute}\n\n[[accounts]]\nname = \"main\"\nbase_url = \"{}\"\ntoken_file = \
         \"{}\"\n\n{extra}",
        simulator.base_url(),
        token_file.display()
    );
    let path = directory.join("keymon.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn command(arguments: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(arguments)
        .env_remove("RUST_LOG")
        .env_remove("KEYMON_CONFIG")
        .env_remove("COMETAPI_ACCESS_TOKEN");
    command
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(arguments: &[&str]) -> Outcome {
    let output = command(arguments).output().unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the command with stdout read for one line and then closed, as `| head -1` does;
/// returns the exit code and stderr.
fn run_reading_one_line(arguments: &[&str]) -> (i32, String, String) {
    let mut child = command(arguments)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), first, stderr)
}

/// Runs the command with a stdout whose reading end is closed before it starts: every write
/// fails with EPIPE, however short the output.
fn run_with_stdout_closed(arguments: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = command(arguments)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_every_command_quietly() {
    let simulator = start_simulator(2_000).await;
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(
        directory.path(),
        &simulator,
        6_000,
        "[policy]\nstate_dir = \"state\"\n\n[[policy.rules]]\nname = \"every-key\"\naction = \
         \"disable\"\nwhen.expired = false\n",
    );
    let config = config.to_str().unwrap();
    // Outputs far larger than a pipe's buffer, cut after their first line.
    for arguments in [
        vec!["scan", "--config", config],
        vec!["scan", "--config", config, "-o", "json"],
        vec!["keys", "list", "--config", config],
        vec!["keys", "list", "--config", config, "-o", "json"],
        vec!["plan", "--config", config],
        vec!["plan", "--config", config, "-o", "json"],
    ] {
        let (code, first, stderr) = run_reading_one_line(&arguments);
        assert!(
            !first.is_empty(),
            "{arguments:?} printed nothing:\n{stderr}"
        );
        assert_eq!(
            code, EXIT_STDOUT_CLOSED,
            "{arguments:?} should end with 141 on a closed pipe:\n{stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{arguments:?}:\n{stderr}"
        );
    }
    // Short outputs, written into a pipe nobody reads.
    for arguments in [
        vec!["check-config", "--config", config],
        vec!["keys", "get", "1003", "--config", config],
        vec!["completions", "bash"],
        vec!["man"],
        vec!["--help"],
    ] {
        let (code, stderr) = run_with_stdout_closed(&arguments);
        assert!(
            code == EXIT_STDOUT_CLOSED || (code == 0 && arguments == ["--help"]),
            "{arguments:?} exited {code}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{arguments:?}:\n{stderr}");
    }
}

/// 6,100 keys at 60 requests a minute: 62 requests, of which the minute's burst covers 60, so
/// the budget holds the scan back about two seconds.
async fn slow_listing() -> (Simulator, tempfile::TempDir, PathBuf) {
    let simulator = start_simulator(6_100).await;
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &simulator, 60, "");
    (simulator, directory, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_a_terminal_a_slow_scan_says_once_how_long_it_will_take() {
    let (_simulator, directory, config) = slow_listing().await;
    let config = config.to_str().unwrap();
    let slow = run(&["scan", "--config", config, "-o", "json"]);
    assert_eq!(slow.code, 0, "{}", slow.stderr);
    let notices: Vec<&str> = slow.stderr.lines().collect();
    assert_eq!(notices.len(), 1, "one line at the start:\n{}", slow.stderr);
    assert!(
        notices[0].starts_with("main: listing 6100 keys in 61 pages; the request budget")
            && notices[0].contains("needs about"),
        "{}",
        notices[0]
    );
    let keys: serde_json::Value = serde_json::from_str(&slow.stdout).expect("stdout is JSON");
    assert_eq!(keys["keys"].as_array().unwrap().len(), 6_100);
    // A scan the budget does not hold back says nothing.
    let fast_config = write_config(directory.path(), &_simulator, 6_000, "");
    let fast = run(&["scan", "--config", fast_config.to_str().unwrap()]);
    assert_eq!(fast.code, 0);
    assert_eq!(fast.stderr, "", "a quick scan is silent on stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_progress_is_drawn_on_stderr_and_stdout_is_untouched() {
    let (_simulator, directory, config) = slow_listing().await;
    let reference = run(&["scan", "--config", config.to_str().unwrap(), "-o", "json"]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    for (arguments, output_name) in [
        ("scan -o json", "scan.json"),
        ("keys list -o json", "keys.json"),
    ] {
        let output = directory.path().join(output_name);
        // stderr is the pseudo-terminal `script` records; stdout goes to a file.
        let inner = format!(
            "{BINARY} {arguments} --config {} > {}",
            config.display(),
            output.display()
        );
        let recorded = Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .env_remove("RUST_LOG")
            .env_remove("KEYMON_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux) runs");
        let terminal = String::from_utf8_lossy(&recorded.stdout);
        assert!(recorded.status.success(), "{arguments}: {terminal}");
        assert!(
            terminal.contains("main: page ") && terminal.contains(" of 6100 keys, about "),
            "{arguments}: no progress line on the terminal:\n{terminal}"
        );
        let written = std::fs::read_to_string(&output).unwrap();
        assert!(
            !written.contains("page ") && !written.contains('\u{1b}'),
            "{arguments}: progress reached stdout"
        );
        let keys: serde_json::Value = serde_json::from_str(&written).expect("stdout is JSON");
        let ids = |value: &serde_json::Value| -> Vec<i64> {
            value["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|key| key["id"].as_i64().unwrap())
                .collect()
        };
        let expected: serde_json::Value = serde_json::from_str(&reference.stdout).unwrap();
        assert_eq!(ids(&keys), ids(&expected), "{arguments}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_listens_where_told_and_says_how_to_move_off_a_taken_port() {
    let simulator = start_simulator(10).await;
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(directory.path(), &simulator, 6_000, "");
    let config = config.to_str().unwrap();
    let daemon = DaemonProcess::start(&["run", "--config", config, "--listen", "127.0.0.2:0"], &[]);
    assert!(
        daemon.address.starts_with("http://127.0.0.2:"),
        "--listen wins over [server] listen: {}",
        daemon.address
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let refused = run(&["run", "--config", config, "--listen", &port]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    for advice in [
        "cannot listen on",
        "--listen",
        "[server] listen",
        "KEYMON_SERVER__LISTEN",
    ] {
        assert!(
            refused.stderr.contains(advice),
            "{advice}:\n{}",
            refused.stderr
        );
    }
    let (stopped, _, _) = daemon.terminate();
    assert!(stopped);
}

#[test]
fn completions_and_the_manual_come_from_the_clap_definitions() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cometapi-keymon"),
        ("fish", "complete -c cometapi-keymon"),
        ("elvish", "edit:completion:arg-completer[cometapi-keymon]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let outcome = run(&["completions", shell]);
        assert_eq!(outcome.code, 0, "{shell}: {}", outcome.stderr);
        assert!(
            outcome.stdout.contains(marker),
            "{shell}:\n{}",
            outcome.stdout
        );
        // Subcommands and flags of the real definition are completed.
        assert!(outcome.stdout.contains("check-config"), "{shell}");
        assert!(outcome.stdout.contains("token-file"), "{shell}");
    }
    let page = run(&["man"]);
    assert_eq!(page.code, 0);
    assert!(page.stdout.starts_with(".ie") || page.stdout.contains(".TH cometapi-keymon 1"));
    assert!(page.stdout.contains("check\\-config"), "{}", page.stdout);
    let directory = tempfile::tempdir().unwrap();
    let written = run(&["man", "--output-dir", directory.path().to_str().unwrap()]);
    assert_eq!(written.code, 0, "{}", written.stderr);
    for page in [
        "cometapi-keymon.1",
        "cometapi-keymon-run.1",
        "cometapi-keymon-check-config.1",
        "cometapi-keymon-keys-list.1",
        "cometapi-keymon-completions.1",
    ] {
        let text = std::fs::read_to_string(directory.path().join(page))
            .unwrap_or_else(|error| panic!("{page}: {error}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let run_page = std::fs::read_to_string(directory.path().join("cometapi-keymon-run.1")).unwrap();
    assert!(run_page.contains("KEYMON_SERVER__LISTEN"), "{run_page}");
    // man(1) itself reads the page, when it is installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let shown = Command::new("man")
            .arg("-l")
            .arg(directory.path().join("cometapi-keymon-check-config.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(text.contains("--online"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_reports_what_each_server_is() {
    let newest = start_simulator(1_200).await;
    let legacy = start_simulator_with(SimulatorConfig {
        keys: 250,
        ..SimulatorConfig::new_api_2026_01()
    })
    .await;
    let one_api = start_simulator_with(SimulatorConfig {
        keys: 30,
        ..SimulatorConfig::one_api()
    })
    .await;
    let directory = tempfile::tempdir().unwrap();
    let token = directory.path().join("newest-token");
    std::fs::write(&token, newest.access_token()).unwrap();
    let legacy_token = directory.path().join("legacy-token");
    std::fs::write(&legacy_token, legacy.access_token()).unwrap();
    let one_api_token = directory.path().join("one-api-token");
    std::fs::write(&one_api_token, one_api.access_token()).unwrap();
    for path in [&token, &legacy_token, &one_api_token] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let config = directory.path().join("keymon.toml");
    let accounts = |legacy_user_id: &str| {
        format!(
            "[poll]\ntimeout = \"5s\"\n\n[[accounts]]\nname = \"newest\"\nbase_url = \"{}\"\n\
             token_file = \"{}\"\n\n[[accounts]]\nname = \"older\"\nbase_url = \"{}\"\n\
             token_file = \"{}\"\n{legacy_user_id}\n\n[[accounts]]\nname = \"oneapi\"\n\
             base_url = \"{}\"\ntoken_file = \"{}\"\n",
            newest.base_url(),
            token.display(),
            legacy.base_url(),
            legacy_token.display(),
            one_api.base_url(),
            one_api_token.display()
        )
    };
    std::fs::write(&config, accounts("user_id = 5678")).unwrap();
    let config_text = config.to_str().unwrap();
    let good = run(&["check-config", "--online", "--config", config_text]);
    assert_eq!(good.code, 0, "{}\n{}", good.stdout, good.stderr);
    let report = good
        .stdout
        .split("# online check")
        .nth(1)
        .expect("a report");
    let section = |name: &str| -> String {
        let start = report.find(&format!("account {name} (")).unwrap();
        report[start..]
            .lines()
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let newest_report = section("newest");
    let older_report = section("older");
    assert!(
        newest_report.contains("reachable:      yes"),
        "{newest_report}"
    );
    assert!(
        newest_report.contains("token accepted: yes"),
        "{newest_report}"
    );
    assert!(
        newest_report.contains("user_id:        not needed"),
        "{newest_report}"
    );
    assert!(
        newest_report.contains("paginated, 1200 keys; keys masked"),
        "{newest_report}"
    );
    assert!(
        newest_report.contains("16 requests a poll: within the budget's burst at 30 requests/min"),
        "{newest_report}"
    );
    assert!(
        newest_report.contains("result:         ok"),
        "{newest_report}"
    );
    assert!(
        older_report.contains("user_id:        needed, and user_id 5678 is accepted"),
        "{older_report}"
    );
    assert!(older_report.contains("before 2026-07-20"), "{older_report}");
    assert!(
        older_report.contains("keys in full (not masked)")
            && older_report
                .contains("generation:     new-api from 2025-06-12 (paginated listing) to before"),
        "{older_report}"
    );
    let one_api_report = section("oneapi");
    assert!(
        one_api_report.contains("listing:        bare array")
            && one_api_report.contains("generation:     one-api")
            && one_api_report.contains("user_id:        not needed"),
        "{one_api_report}"
    );
    // Whether each optional route exists is what the server itself says: ask it directly.
    let http = reqwest::Client::new();
    for route in ["/api/user/self", "/api/subscription/self"] {
        let answer = http
            .get(format!("{}{route}", newest.base_url()))
            .header("Authorization", newest.access_token())
            .send()
            .await
            .unwrap();
        let exists = answer.status() != 404;
        let expected = format!("{} (GET {route})", if exists { "yes" } else { "no" });
        assert!(
            newest_report.contains(&expected),
            "{expected}:\n{newest_report}"
        );
    }
    // Exactly one status and one list request per account, plus one GET per optional route.
    let list_requests = newest
        .requests()
        .iter()
        .filter(|request| request.path.starts_with("/api/token/"))
        .count();
    assert_eq!(list_requests, 1);

    // Without the user_id the older server refuses, and the command says so and exits 1.
    std::fs::write(&config, accounts("")).unwrap();
    let bad = run(&["check-config", "--online", "--config", config_text]);
    assert_eq!(bad.code, 1, "{}\n{}", bad.stdout, bad.stderr);
    assert!(
        bad.stdout.contains("user_id:        needed and not set"),
        "{}",
        bad.stdout
    );
    assert!(
        bad.stderr.contains("this server requires user_id"),
        "the same message a poll logs: {}",
        bad.stderr
    );
    assert!(
        bad.stdout.contains("result:         FAILED"),
        "{}",
        bad.stdout
    );
    assert!(bad.stderr.contains("account older:"), "{}", bad.stderr);
    for secret in [legacy.access_token(), one_api.access_token()] {
        assert!(!bad.stdout.contains(&secret) && !bad.stderr.contains(&secret));
    }
    for record in one_api.tokens() {
        assert!(
            !good.stdout.contains(&record.key),
            "a key value was printed"
        );
    }

    // Nothing listening: not reachable, named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &config,
        format!(
            "[poll]\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\nmax_retries = 0\n\n[[accounts]]\n\
             name = \"gone\"\nbase_url = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    let unreachable = run(&["check-config", "--online", "--config", config_text]);
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable.stdout.contains("reachable:      no"),
        "{}",
        unreachable.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_systemd_config_is_checkable_before_the_service_exists() {
    let simulator = start_simulator(40).await;
    let directory = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/config.toml"),
    )
    .unwrap();
    // Only base_url is changed, as an operator edits it; the token path stays the credential's.
    let edited = shipped.replace(
        "base_url = \"https://api.cometapi.com\"",
        &format!("base_url = \"{}\"", simulator.base_url()),
    );
    assert_ne!(edited, shipped, "the shipped config names base_url");
    assert!(edited.contains("token_file = \"/run/credentials/cometapi-keymon.service/token\""));
    let config = directory.path().join("config.toml");
    std::fs::write(&config, edited).unwrap();
    let token = directory.path().join("token");
    std::fs::write(&token, simulator.access_token()).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = config.to_str().unwrap();
    let without = run(&["check-config", "--config", config]);
    assert_eq!(
        without.code, 2,
        "the credential does not exist outside the service"
    );
    assert!(without
        .stderr
        .contains("/run/credentials/cometapi-keymon.service/token"));
    let checked = run(&[
        "check-config",
        "--online",
        "--config",
        config,
        "--token-file",
        &format!("main={}", token.display()),
    ]);
    assert_eq!(checked.code, 0, "{}\n{}", checked.stdout, checked.stderr);
    assert!(
        checked.stdout.contains("token accepted: yes"),
        "{}",
        checked.stdout
    );
    assert!(!checked.stdout.contains(&simulator.access_token()));
    let unknown = run(&[
        "check-config",
        "--config",
        config,
        "--token-file",
        "other=/x",
    ]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no account \"other\""),
        "{}",
        unknown.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_for_people_aligns_wide_names_and_says_units_and_utc() {
    use unicode_width::UnicodeWidthStr;
    let simulator = start_simulator(12).await;
    let directory = tempfile::tempdir().unwrap();
    let config = write_config(
        directory.path(),
        &simulator,
        6_000,
        "[policy]\nstate_dir = \"state\"\n\n[[policy.rules]]\nname = \"top\"\naction = \
         \"top_up\"\nname_matches = \"^never-used$\"\nwhen.expired = false\ntop_up.to = 9000000\n",
    );
    let config = config.to_str().unwrap();
    let created = run(&[
        "keys",
        "create",
        "--config",
        config,
        "--name",
        "团队密钥🔑",
        "--remaining-quota",
        "750000",
    ]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let listed = run(&["keys", "list", "--config", config]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    // Every row has a cell starting at the terminal column where the header's STATUS starts.
    let lines: Vec<&str> = listed.stdout.lines().collect();
    let status_column = lines[0][..lines[0].find("STATUS").unwrap()].width();
    let rows = lines[1..]
        .iter()
        .take_while(|line| line.starts_with(|first: char| first.is_ascii_digit()));
    assert_eq!(rows.clone().count(), 13, "{}", listed.stdout);
    for line in rows {
        let mut columns = 0;
        let mut previous = ' ';
        let mut at_column = None;
        for character in line.chars() {
            if columns == status_column {
                at_column = Some((previous, character));
                break;
            }
            columns += unicode_width::UnicodeWidthChar::width(character).unwrap_or(0);
            previous = character;
        }
        assert!(
            matches!(at_column, Some((' ', next)) if next != ' '),
            "a cell starts at column {status_column} of every row:\n{}",
            listed.stdout
        );
    }
    assert!(listed.stdout.contains("团队密钥🔑"));
    assert!(listed.stdout.contains(" UTC (in "), "{}", listed.stdout);

    let got = run(&["keys", "get", "1003", "--config", config]);
    assert_eq!(got.code, 0, "{}", got.stderr);
    let remaining = got
        .stdout
        .lines()
        .find(|line| line.starts_with("remaining quota"))
        .unwrap();
    let record = simulator.token(1003).unwrap();
    let expected_usd = format!("(${:.2})", record.remain_quota as f64 / 500_000.0);
    assert!(
        remaining.contains(&expected_usd)
            && remaining.contains(&format!("= {} quota units", record.remain_quota)),
        "{remaining}"
    );
    assert!(got.stdout.contains("used quota"), "{}", got.stdout);
    for line in got.stdout.lines().filter(|line| line.contains(":00")) {
        assert!(line.contains("UTC"), "a time without its zone: {line}");
    }

    let plan = run(&["plan", "--config", config, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let change = &plan["accounts"][0]["decisions"][0]["changes"][0];
    assert_eq!(change["field"], "remain_quota");
    assert_eq!(
        change["before"], record.remain_quota,
        "a number, not a string"
    );
    assert_eq!(change["after"], 9_000_000);
    let table = run(&["plan", "--config", config]);
    assert!(
        table.stdout.contains(", 1 action (limit"),
        "plural agreement: {}",
        table.stdout
    );
}
