//! Helpers for the tests of the deployment kit (`deploy/`): paths into the repository, the
//! Prometheus tools from Debian's `prometheus` package, YAML/JSON reading, the metric names the
//! daemon really exports, and the metric names a PromQL expression uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{start_daemon, start_simulator, start_simulator_with, write_policy_config};

/// The shipped Grafana dashboard.
pub const DASHBOARD: &str = "deploy/grafana/cometapi-keymon.json";

/// A file of the repository, e.g. `deploy/prometheus/alerts.yml`.
pub fn repository_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn read_text(relative: &str) -> String {
    let path = repository_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

pub fn read_yaml(relative: &str) -> Value {
    serde_yaml_ng::from_str(&read_text(relative))
        .unwrap_or_else(|error| panic!("{relative} is not valid YAML: {error}"))
}

pub fn read_json(relative: &str) -> Value {
    serde_json::from_str(&read_text(relative))
        .unwrap_or_else(|error| panic!("{relative} is not valid JSON: {error}"))
}

/// A tool from Debian's `prometheus` package (`promtool`, `prometheus`). Tests that use it start
/// with `if !tools_available(&["promtool"]) { return; }` (see `support::tools`), so here it is
/// there.
pub fn prometheus_tool(name: &str) -> PathBuf {
    super::tools::find_on_path(name).unwrap_or_else(|| {
        panic!("{name} not found on PATH: the test must check tools_available first")
    })
}

/// Runs `promtool ARGS` in `directory` and returns (success, stdout and stderr).
pub fn promtool(directory: &Path, arguments: &[&str]) -> (bool, String) {
    let output = Command::new(prometheus_tool("promtool"))
        .args(arguments)
        .current_dir(directory)
        .stdin(Stdio::null())
        .output()
        .expect("promtool runs");
    let mut report = String::from_utf8_lossy(&output.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), report)
}

/// Every metric name a real daemon exports, from a scrape of one polling the simulator with a
/// dry-run `[policy]` holding an unscheduled and a scheduled rule (so every `cometapi_policy_*`
/// family is there), histograms also as their `_bucket`, `_sum` and `_count` series.
pub async fn exported_metric_names() -> BTreeSet<String> {
    use cometapi_keymon::simulator::{ServerGeneration, SimulatorConfig};
    let simulator = start_simulator(30).await;
    // A second account on a server without spend by key, so the per-model families show too;
    // the same access token, so both read the one token file.
    let older = start_simulator_with(SimulatorConfig {
        keys: 30,
        generation: ServerGeneration::NewApiBeforeSubscriptions,
        access_token: simulator.access_token(),
        ..SimulatorConfig::default()
    })
    .await;
    for server in [&simulator, &older] {
        let spender = server
            .tokens()
            .into_iter()
            .find(|token| token.name == "never-used")
            .expect("the seeded never-used key");
        server.consume(spender.id, 1_000).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let older_account = format!(
        "[[accounts]]\nname = \"older\"\nbase_url = \"{}\"\ntoken_file = \"token\"\n\n",
        older.base_url()
    );
    let path = write_policy_config(
        state.path(),
        &simulator,
        &(older_account
            + "[policy]\nstate_dir = \"state\"\n\
         [[policy.rules]]\nname = \"disable-expired\"\naction = \"disable\"\nwhen.expired = true\n\
         [[policy.rules]]\nname = \"nightly\"\naction = \"top_up\"\ntop_up.to = 1000\n\
         schedule = \"0 0 0 * * *\"\n"),
    );
    let daemon = start_daemon(cometapi_keymon::config::load(Some(&path)).unwrap()).await;
    let metrics = daemon
        .wait_for(
            "the first evaluation",
            std::time::Duration::from_secs(20),
            |metrics| {
                metrics
                    .get(
                        "cometapi_policy_last_evaluation_timestamp_seconds",
                        &[("account", "main")],
                    )
                    .is_some()
                    && !metrics.family("cometapi_model_used_quota_total").is_empty()
                    && !metrics
                        .family("cometapi_key_model_used_quota_total")
                        .is_empty()
            },
        )
        .await;
    daemon.stop().await;
    simulator.shutdown().await;
    older.shutdown().await;
    let mut names: BTreeSet<String> = metrics.series.keys().map(|s| s.name.clone()).collect();
    for (family, kind) in &metrics.types {
        names.insert(family.clone());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{family}{suffix}"));
            }
        }
    }
    assert!(
        names.len() > 20 && names.contains("cometapi_key_info"),
        "a scrape with keys: {names:?}"
    );
    names
}

/// Every panel, rows' nested panels included (a collapsed row holds its panels inside).
pub fn all_panels(dashboard: &Value) -> Vec<Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel.clone());
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested.iter().cloned());
        }
    }
    panels
}

/// (panel id, panel title, refId, expr) of every query of the dashboard.
pub fn dashboard_queries(dashboard: &Value) -> Vec<(u64, String, String, String)> {
    let mut queries = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                panel["id"].as_u64().unwrap(),
                panel["title"].as_str().unwrap().to_owned(),
                target["refId"].as_str().unwrap().to_owned(),
                target["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .to_owned(),
            ));
        }
    }
    queries
}

/// The dashboard's queries with Grafana's variables replaced by values Prometheus accepts.
pub fn with_variables_substituted(expression: &str) -> String {
    let substituted = expression
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$account", ".*");
    assert!(
        !substituted.contains('$'),
        "an unknown variable in {expression}"
    );
    substituted
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects: every identifier that is not a function,
/// aggregation, keyword or label name. Label matchers, ranges, strings and comments are skipped.
pub fn metric_names_in(expression: &str) -> BTreeSet<String> {
    // Blank out strings, `{...}`, `[...]` and comments, keeping everything else.
    let mut kept = String::with_capacity(expression.len());
    let mut characters = expression.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '"' | '\'' | '`' => skip_string(&mut characters, character),
            '{' => {
                while let Some(inner) = characters.next() {
                    match inner {
                        '"' | '\'' | '`' => skip_string(&mut characters, inner),
                        '}' => break,
                        _ => {}
                    }
                }
                kept.push(' ');
            }
            '[' => {
                for inner in characters.by_ref() {
                    if inner == ']' {
                        break;
                    }
                }
                kept.push(' ');
            }
            '#' => {
                for inner in characters.by_ref() {
                    if inner == '\n' {
                        break;
                    }
                }
                kept.push(' ');
            }
            other => kept.push(other),
        }
    }
    let bytes = kept.as_bytes();
    let mut names = BTreeSet::new();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte.is_ascii_digit() || byte == b'.' {
            // A number or a duration such as 24h or 1e3: skip the whole run.
            while index < bytes.len()
                && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'.')
            {
                index += 1;
            }
            continue;
        }
        if !(byte.is_ascii_alphabetic() || byte == b'_' || byte == b':') {
            index += 1;
            continue;
        }
        let start = index;
        while index < bytes.len()
            && (bytes[index].is_ascii_alphanumeric()
                || bytes[index] == b'_'
                || bytes[index] == b':')
        {
            index += 1;
        }
        let word = &kept[start..index];
        let mut next = index;
        while next < bytes.len() && bytes[next].is_ascii_whitespace() {
            next += 1;
        }
        let followed_by_parenthesis = next < bytes.len() && bytes[next] == b'(';
        if LABEL_LIST_KEYWORDS.contains(&word) {
            if followed_by_parenthesis {
                while next < bytes.len() && bytes[next] != b')' {
                    next += 1;
                }
                index = next + 1;
            }
            continue;
        }
        if followed_by_parenthesis || KEYWORDS.contains(&word) || AGGREGATIONS.contains(&word) {
            continue;
        }
        names.insert(word.to_owned());
    }
    names
}

fn skip_string(characters: &mut std::iter::Peekable<std::str::Chars<'_>>, quote: char) {
    while let Some(character) = characters.next() {
        if character == '\\' && quote != '`' {
            characters.next();
        } else if character == quote {
            break;
        }
    }
}
