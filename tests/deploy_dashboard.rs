//! The shipped Grafana dashboard `deploy/grafana/cometapi-keymon.json`, checked offline (there is
//! no Grafana on the build machines): it parses, has the datasource and account variables, unique
//! panel ids and a non-overlapping 24-column layout, every panel queries the `$datasource`
//! variable and honours `$account`, every query passes `promtool check rules`, and every metric
//! name it uses is one a real daemon exports. `tests/e2e_prometheus.rs` also runs every query
//! against a real Prometheus scraping the daemon.

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::deploy::*;
use support::tools;

const DATASOURCE: &str = "${datasource}";
/// Metrics that carry no `account` label, so a query using only these need not filter by it.
const METRICS_WITHOUT_ACCOUNT: &[&str] = &[
    "cometapi_build_info",
    "cometapi_policy_dry_run",
    "cometapi_policy_next_run_timestamp_seconds",
];

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|variable| variable["name"] == name)
        .unwrap_or_else(|| panic!("no dashboard variable {name}"))
}

#[test]
fn dashboard_has_a_datasource_variable_and_an_account_variable() {
    let dashboard = read_json(DASHBOARD);
    assert_eq!(dashboard["uid"], "cometapi-keymon");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        dashboard.get("__inputs").is_none(),
        "no __inputs: provisioning must work as is"
    );
    let datasource = variable(&dashboard, "datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let account = variable(&dashboard, "account");
    assert_eq!(account["type"], "query");
    assert_eq!(account["datasource"]["uid"], DATASOURCE);
    assert_eq!(account["multi"], true);
    assert_eq!(account["includeAll"], true);
    assert_eq!(
        account["allValue"], ".*",
        "All must match every account, not list them"
    );
    assert_eq!(account["query"], "label_values(cometapi_up, account)");
}

#[test]
fn panels_have_unique_ids_and_a_layout_without_overlaps() {
    let dashboard = read_json(DASHBOARD);
    let panels = all_panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(u64, [u64; 4])> = Vec::new();
    for panel in &panels {
        let id = panel["id"].as_u64().expect("numeric panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        assert!(
            panel["title"].as_str().is_some_and(|t| !t.is_empty()),
            "panel {id} has a title"
        );
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|key| {
            grid[key]
                .as_u64()
                .unwrap_or_else(|| panic!("panel {id}: gridPos.{key}"))
        });
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "panel {id} fits the 24 columns: {grid}"
        );
        for (other, [ox, oy, ow, oh]) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "panels {id} and {other} overlap");
        }
        boxes.push((id, [x, y, w, h]));
    }
    assert!(panels.len() >= 20, "{} panels", panels.len());
}

#[test]
fn every_panel_queries_the_datasource_variable_and_filters_by_account() {
    let dashboard = read_json(DASHBOARD);
    for panel in all_panels(&dashboard) {
        let id = &panel["id"];
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], DATASOURCE, "panel {id}");
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "panel {id} has a query");
        let mut reference_ids = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], DATASOURCE, "panel {id}");
            assert!(
                reference_ids.insert(target["refId"].as_str().unwrap()),
                "panel {id}: refId twice"
            );
            if panel["type"] == "table" {
                // A table of a range query shows one row per sample, not one per key.
                assert_eq!(target["format"], "table", "panel {id}");
                assert_eq!(target["instant"], true, "panel {id}");
            }
        }
    }
    for (id, title, _, expression) in dashboard_queries(&dashboard) {
        let needs_account = metric_names_in(&expression)
            .iter()
            .any(|name| !METRICS_WITHOUT_ACCOUNT.contains(&name.as_str()));
        if needs_account {
            assert!(
                expression.contains("account=~\"$account\""),
                "panel {id} ({title}) ignores the account variable: {expression}"
            );
        }
    }
}

#[test]
fn dashboard_has_the_panels_operators_asked_for() {
    let dashboard = read_json(DASHBOARD);
    let titles: BTreeSet<String> = all_panels(&dashboard)
        .iter()
        .map(|panel| panel["title"].as_str().unwrap().to_owned())
        .collect();
    for wanted in [
        "Keys",
        "Usable",
        "Expiring within 7 days",
        "Expired, not disabled",
        "Exhausted, not disabled",
        "Keys by time to expiry",
        "Keys by remaining quota",
        "Top spenders, last 24 h (USD)",
        "Accounts polled",
        "Time since last complete poll",
        "Poll errors by reason",
        "Poll duration",
        "Policy actions by outcome",
        "Circuit open",
        "Wallet (USD)",
        "Wallet over time (USD)",
        "Spend rate (USD per hour)",
        "Spend today by model (USD)",
        "Top key × model pairs today (USD)",
        "Subscriptions",
    ] {
        assert!(
            titles.contains(wanted),
            "no panel titled {wanted:?}; have {titles:?}"
        );
    }
    let by_quota = dashboard_queries(&dashboard)
        .into_iter()
        .filter(|(_, title, _, _)| title == "Keys by remaining quota")
        .map(|(_, _, _, expression)| expression)
        .collect::<Vec<_>>();
    assert!(
        by_quota
            .iter()
            .any(|e| e.contains("cometapi_quota_per_unit")),
        "the remaining-quota table also shows US dollars"
    );
}

#[test]
fn every_panel_query_passes_promtool() {
    if !tools::tools_available(&["promtool"]) {
        return;
    }
    let dashboard = read_json(DASHBOARD);
    let rules: Vec<Value> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(id, _, reference, expression)| {
            json!({
                "record": format!("dashboard:panel_{id}_{reference}"),
                "expr": with_variables_substituted(&expression),
            })
        })
        .collect();
    let count = rules.len();
    let directory = tempfile::tempdir().unwrap();
    let file = json!({ "groups": [{ "name": "dashboard-queries", "rules": rules }] });
    std::fs::write(directory.path().join("queries.yml"), file.to_string()).unwrap();
    let (success, report) = promtool(directory.path(), &["check", "rules", "queries.yml"]);
    assert!(success, "a dashboard query does not parse:\n{report}");
    assert!(
        report.contains(&format!("SUCCESS: {count} rules found")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_uses_only_metric_names_the_daemon_exports() {
    let known = exported_metric_names().await;
    let dashboard = read_json(DASHBOARD);
    let mut used = BTreeSet::new();
    for (id, title, _, expression) in dashboard_queries(&dashboard) {
        let names = metric_names_in(&expression);
        assert!(
            !names.is_empty(),
            "panel {id} ({title}): no metric in {expression}"
        );
        for name in names {
            assert!(
                known.contains(&name),
                "panel {id} ({title}) uses {name}, which the daemon does not export"
            );
            used.insert(name);
        }
    }
    // The account variable's label_values(METRIC, account).
    let query = variable(&dashboard, "account")["query"]
        .as_str()
        .unwrap()
        .to_owned();
    let metric = query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.split(',').next())
        .unwrap();
    assert!(
        known.contains(metric),
        "the account variable reads {metric}"
    );
    // The quota-to-dollar conversion and the join of key names are really used.
    for needed in [
        "cometapi_quota_per_unit",
        "cometapi_key_info",
        "cometapi_up",
    ] {
        assert!(used.contains(needed), "no panel uses {needed}");
    }
}
