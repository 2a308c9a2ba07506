//! The shipped Prometheus files, checked with the real promtool: `deploy/prometheus/alerts.yml`
//! passes `promtool check rules` and its unit tests (`alerts.test.yml`), every alert has a unit
//! test that fires and one that does not, the rules use only metric names the daemon exports,
//! `deploy/kubernetes/prometheusrule.yaml` holds exactly the same groups, and the example
//! `deploy/prometheus/prometheus.yml` (and its Kubernetes variant) passes `promtool check config`
//! with the job name the exporter alerts match.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use support::deploy::*;
use support::tools;

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
/// The scrape job name the exporter alerts (`up{job=...}`) expect.
const JOB_NAME: &str = "cometapi-keymon";

/// Every alerting rule of a rule file's `groups`, by alert name.
fn alert_rules(groups: &Value) -> BTreeMap<String, Value> {
    let mut rules = BTreeMap::new();
    for group in groups.as_array().expect("groups is a list") {
        for rule in group["rules"].as_array().expect("a group has rules") {
            let name = rule["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_owned();
            assert!(
                rules.insert(name.clone(), rule.clone()).is_none(),
                "alert {name} defined twice"
            );
        }
    }
    rules
}

#[test]
fn alert_rules_pass_promtool_check_rules() {
    if !tools::tools_available(&["promtool"]) {
        return;
    }
    let rules = alert_rules(&read_yaml(ALERTS)["groups"]);
    let (success, report) = promtool(&repository_file("."), &["check", "rules", ALERTS]);
    assert!(success, "promtool check rules {ALERTS}:\n{report}");
    let found = format!("SUCCESS: {} rules found", rules.len());
    assert!(report.contains(&found), "{report}");
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    if !tools::tools_available(&["promtool"]) {
        return;
    }
    let (success, report) = promtool(&repository_file("."), &["test", "rules", ALERT_TESTS]);
    assert!(success, "promtool test rules {ALERT_TESTS}:\n{report}");
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let rules = alert_rules(&read_yaml(ALERTS)["groups"]);
    let tests = read_yaml(ALERT_TESTS);
    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    for test in tests["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            assert!(
                rules.contains_key(&name),
                "{ALERT_TESTS} tests unknown alert {name}"
            );
            let expected = case["exp_alerts"].as_array().map(Vec::len).unwrap_or(0);
            if expected > 0 {
                firing.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for name in rules.keys() {
        assert!(firing.contains(name), "no unit test shows {name} firing");
        assert!(
            silent.contains(name),
            "no unit test shows {name} not firing"
        );
    }
}

#[test]
fn every_alert_has_a_severity_and_a_summary_naming_what_is_wrong() {
    for (name, rule) in alert_rules(&read_yaml(ALERTS)["groups"]) {
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["info", "warning", "critical"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
        let description = rule["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(!description.is_empty(), "{name} has no description");
        let expression = rule["expr"].as_str().unwrap();
        if expression.contains("cometapi_key_") {
            // Per-key alerts: the key's name comes from cometapi_key_info, joined per account.
            for needed in ["$labels.name", "$labels.key_id", "$labels.account"] {
                assert!(summary.contains(needed), "{name}: summary lacks {needed}");
            }
            assert!(
                expression
                    .contains("on (account, key_id) group_left (name, group) cometapi_key_info"),
                "{name} joins the key's name on (account, key_id)"
            );
        } else if expression.contains("cometapi_") {
            assert!(
                summary.contains("$labels.account"),
                "{name}: summary lacks the account"
            );
        }
    }
}

#[test]
fn alert_rules_and_the_example_config_agree_on_the_job_name() {
    let rules = alert_rules(&read_yaml(ALERTS)["groups"]);
    let mut job_matchers = BTreeSet::new();
    for rule in rules.values() {
        let expression = rule["expr"].as_str().unwrap();
        for (index, _) in expression.match_indices("job=\"") {
            let rest = &expression[index + 5..];
            job_matchers.insert(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    assert_eq!(job_matchers, BTreeSet::from([JOB_NAME.to_owned()]));
    let config = read_yaml(PROMETHEUS_CONFIG);
    let jobs: Vec<&str> = config["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_name"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, [JOB_NAME]);
    assert_eq!(config["rule_files"], serde_json::json!(["alerts.yml"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_use_only_metric_names_the_daemon_exports() {
    let mut known = exported_metric_names().await;
    // Written by Prometheus itself for every target.
    known.insert("up".to_owned());
    for (name, rule) in alert_rules(&read_yaml(ALERTS)["groups"]) {
        let used = metric_names_in(rule["expr"].as_str().unwrap());
        assert!(
            !used.is_empty(),
            "{name}: no metric found in its expression"
        );
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{name} uses metrics the daemon does not export: {unknown:?}"
        );
    }
}

#[test]
fn prometheus_rule_holds_exactly_the_groups_of_alerts_yml() {
    if !tools::tools_available(&["promtool"]) {
        return;
    }
    let alerts = read_yaml(ALERTS);
    let resource = read_yaml(PROMETHEUS_RULE);
    assert_eq!(resource["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(resource["kind"], "PrometheusRule");
    assert_eq!(resource["metadata"]["name"], "cometapi-keymon");
    let keys: Vec<&String> = resource["spec"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["groups"], "spec holds only the groups");
    assert!(
        resource["spec"]["groups"] == alerts["groups"],
        "{PROMETHEUS_RULE} differs from {ALERTS}: regenerate its spec.groups with the command \
         in its header comment"
    );
    // The same groups, checked by promtool as the Operator's Prometheus would load them.
    let directory = tempfile::tempdir().unwrap();
    let rules = directory.path().join("prometheusrule-groups.yml");
    std::fs::write(&rules, serde_json::to_string(&resource["spec"]).unwrap()).unwrap();
    let (success, report) = promtool(
        directory.path(),
        &["check", "rules", "prometheusrule-groups.yml"],
    );
    assert!(success, "{report}");
}

#[test]
fn example_prometheus_config_passes_promtool_check_config() {
    if !tools::tools_available(&["promtool"]) {
        return;
    }
    let (success, report) = promtool(
        &repository_file("."),
        &["check", "config", PROMETHEUS_CONFIG],
    );
    assert!(
        success,
        "promtool check config {PROMETHEUS_CONFIG}:\n{report}"
    );
    assert!(report.contains("SUCCESS: 1 rule files found"), "{report}");
}

/// The commented Kubernetes pod-annotation variant, uncommented. Debian's promtool is built
/// without Kubernetes discovery, so its `kubernetes_sd_configs` is swapped for a static target
/// and promtool checks the rest (the relabelling).
#[test]
fn example_kubernetes_scrape_variant_is_valid_once_uncommented() {
    if !tools::tools_available(&["promtool"]) {
        return;
    }
    let text = read_text(PROMETHEUS_CONFIG);
    let begin = text
        .find("# BEGIN kubernetes pod-annotation variant\n")
        .expect("BEGIN marker");
    let end = text
        .find("  # END kubernetes pod-annotation variant")
        .expect("END marker");
    let block = &text[text[begin..].find('\n').unwrap() + begin + 1..end];
    let mut variant = String::from("scrape_configs:\n");
    for line in block.lines() {
        let line = line
            .strip_prefix("  # ")
            .expect("every variant line is commented");
        variant.push_str("  ");
        variant.push_str(line);
        variant.push('\n');
    }
    let parsed: Value = serde_yaml_ng::from_str(&variant).expect("the variant is YAML");
    let job = &parsed["scrape_configs"][0];
    assert_eq!(job["job_name"], JOB_NAME);
    assert_eq!(job["kubernetes_sd_configs"][0]["role"], "pod");
    let checkable = variant
        .replace("kubernetes_sd_configs:", "static_configs:")
        .replace("- role: pod", "- targets: [\"127.0.0.1:9877\"]");
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("variant.yml"), checkable).unwrap();
    let (success, report) = promtool(directory.path(), &["check", "config", "variant.yml"]);
    assert!(success, "the Kubernetes variant:\n{variant}\n{report}");
}

/// The commented TLS variant (scheme https, tls_config, basic_auth), uncommented, with its
/// files present: promtool accepts it, and it matches what the daemon's web config asks for.
#[test]
fn example_tls_scrape_variant_is_valid_once_uncommented() {
    if !tools::tools_available(&["promtool"]) {
        return;
    }
    let text = read_text(PROMETHEUS_CONFIG);
    let begin = text.find("# BEGIN tls variant\n").expect("BEGIN marker");
    let end = text.find("  # END tls variant").expect("END marker");
    let block = &text[text[begin..].find('\n').unwrap() + begin + 1..end];
    let mut variant = String::from("scrape_configs:\n");
    for line in block.lines() {
        let line = line
            .strip_prefix("  # ")
            .expect("every variant line is commented");
        variant.push_str("  ");
        variant.push_str(line);
        variant.push('\n');
    }
    let parsed: Value = serde_yaml_ng::from_str(&variant).expect("the variant is YAML");
    let job = &parsed["scrape_configs"][0];
    assert_eq!(job["job_name"], JOB_NAME);
    assert_eq!(job["scheme"], "https");
    assert!(job["tls_config"]["ca_file"].is_string());
    assert!(job["tls_config"]["server_name"].is_string());
    assert!(job["basic_auth"]["username"].is_string());
    assert!(
        job["basic_auth"]["password_file"].is_string() && job["basic_auth"]["password"].is_null(),
        "the password comes from a file, not the config"
    );
    // Its files, where promtool can see them.
    let directory = tempfile::tempdir().unwrap();
    let local = variant.replace("/etc/prometheus/", "");
    for name in ["cometapi-keymon-ca.crt", "cometapi-keymon.password"] {
        assert!(local.contains(name), "{name}");
        std::fs::write(directory.path().join(name), "placeholder\n").unwrap();
    }
    std::fs::write(directory.path().join("variant.yml"), local).unwrap();
    let (success, report) = promtool(directory.path(), &["check", "config", "variant.yml"]);
    assert!(success, "the TLS variant:\n{variant}\n{report}");
}

#[test]
fn metric_names_in_finds_metrics_and_skips_functions_keywords_and_labels() {
    let names = metric_names_in(
        r#"sum by (account, group) (
             increase(cometapi_poll_errors_total{reason=~"http_401|x{y}"}[15m] offset 1h)
           ) > 0 and ignoring (reason) cometapi_up == 0
           or topk(10, up{job="a"} * on (account, key_id) group_left (name, group) cometapi_key_info)
           / on (account) group_left cometapi_quota_per_unit  # a comment naming not_a_metric
           - vector(0) + time() - 7 * 86400 + 1e3 + count without (x) (cometapi_keys) bool"#,
    );
    let expected: BTreeSet<String> = [
        "cometapi_poll_errors_total",
        "cometapi_up",
        "up",
        "cometapi_key_info",
        "cometapi_quota_per_unit",
        "cometapi_keys",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    assert_eq!(names, expected);
}

/// Without promtool on PATH, the tests that need it are skipped with one line saying which
/// suite, which tool and how to install it, and the suite still passes; under `CI=true` the same
/// run fails. (This suite's own binary, run again with an empty PATH.)
#[test]
fn a_missing_tool_skips_its_tests_with_one_line_and_fails_them_under_ci() {
    let run = |ci: Option<&str>| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "promtool",
                "--skip",
                "a_missing_tool",
                "--test-threads",
                "4",
            ])
            .env("PATH", "")
            .env_remove("CI");
        if let Some(ci) = ci {
            command.env("CI", ci);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (success, stdout, stderr) = run(None);
    assert!(success, "{stdout}\n{stderr}");
    let skipped: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("SKIPPED"))
        .collect();
    assert_eq!(
        skipped,
        [
            "SKIPPED: the tests of tests/deploy_rules.rs that need promtool: not found on PATH \
             (apt-get install prometheus; `bash .ci/run` installs every tool the tests need)"
        ],
        "{stderr}"
    );
    assert!(stdout.contains("test result: ok. 3 passed"), "{stdout}");

    let (success, stdout, _) = run(Some("true"));
    assert!(!success, "under CI=true a missing tool fails:\n{stdout}");
    assert!(
        stdout.contains("under CI=true a missing tool is a failure, not a skip"),
        "{stdout}"
    );
}
