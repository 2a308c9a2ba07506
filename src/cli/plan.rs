//! `cometapi-keymon plan`: one fresh complete poll of every account, then what each rule would
//! do now — key, rule, action, before → after, why — as a table or JSON. It never writes to the
//! server and never writes the state directory, whatever `dry_run` says: the history (cooldowns,
//! grants, key counts) is only read, so the plan matches what the daemon would decide.
//! Scheduled rules are shown with their next run time and what they would do then.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;

use super::report::{render_table, table_name};
use super::shared::{init_one_shot, load_config, runtime, scan_every_account, OutputFormat};
use crate::clock::unix_now;
use crate::policy::evaluate::{evaluate, Evaluation, EvaluationMode, Verdict};
use crate::policy::state::{LoadedState, StateStore};
use crate::policy::PolicyConfig;
use crate::snapshot::Snapshot;

pub(crate) fn run(path: Option<PathBuf>, output: OutputFormat) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(policy) = config.policy.clone() else {
        eprintln!(
            "cometapi-keymon: the configuration has no [policy] section, so there is nothing to \
             plan; see config/cometapi-keymon.example.toml"
        );
        return ExitCode::from(2);
    };
    init_one_shot(&config);
    let now = unix_now();
    let cooldown = i64::try_from(policy.cooldown.as_secs()).unwrap_or(i64::MAX);
    let loaded = match StateStore::open_read_only(&policy.state_dir).load(now, cooldown) {
        Ok(loaded) => loaded,
        // Often the daemon's own directory, unreadable to the operator running `plan`.
        Err(error) => {
            eprintln!(
                "warning: {error}; this plan does not know the cooldowns and scheduled grants                  the daemon has recorded"
            );
            LoadedState::default()
        }
    };
    runtime().block_on(async move {
        let (snapshots, failed) = match scan_every_account(&config, now).await {
            Ok(scanned) => scanned,
            Err(code) => return code,
        };
        let planned: Vec<(Arc<Snapshot>, Evaluation)> = snapshots
            .into_iter()
            .map(|snapshot| {
                let previous = loaded.key_counts.get(&snapshot.account).copied();
                let evaluation = evaluate(
                    &policy,
                    &snapshot,
                    previous,
                    &loaded.history,
                    now,
                    EvaluationMode::Plan,
                );
                (snapshot, evaluation)
            })
            .collect();
        match output {
            OutputFormat::Table => print!("{}", plan_table(&policy, &planned, now)),
            OutputFormat::Json => print!("{}", plan_json(&policy, &planned)),
        }
        if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Act => "would act".into(),
        Verdict::SuppressedProtected => "protected".into(),
        Verdict::SuppressedLimit => "held: over the limit".into(),
        Verdict::InCooldown { until } => format!("cooldown until {}", utc_text(*until)),
    }
}

fn verdict_label(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Act => "act",
        Verdict::SuppressedProtected => "suppressed_protected",
        Verdict::SuppressedLimit => "suppressed_limit",
        Verdict::InCooldown { .. } => "cooldown",
    }
}

fn utc_text(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(
        || unix.to_string(),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The plan as a table, one line per (rule, key), then one summary line per account.
pub fn plan_table(
    policy: &PolicyConfig,
    planned: &[(Arc<Snapshot>, Evaluation)],
    now: i64,
) -> String {
    let mut rows = vec![[
        "ACCOUNT", "KEY", "NAME", "RULE", "ACTION", "WHEN", "CHANGE", "VERDICT", "WHY",
    ]
    .map(String::from)
    .to_vec()];
    for (snapshot, evaluation) in planned {
        for decision in &evaluation.decisions {
            let rule = &policy.rules[decision.rule_index];
            let change = rule
                .planned_change(&decision.key)
                .iter()
                .map(|(field, before, after)| format!("{field} {before} → {after}"))
                .collect::<Vec<_>>()
                .join(", ");
            let verdict = verdict_text(&decision.verdict);
            rows.push(vec![
                snapshot.account.clone(),
                decision.key.id.to_string(),
                table_name(&decision.key.name),
                rule.name.clone(),
                rule.action.label().to_owned(),
                decision.runs_at.map_or_else(|| "now".to_owned(), utc_text),
                change,
                verdict,
                rule.describe_conditions(),
            ]);
        }
    }
    let mut out = String::new();
    let mode = if policy.dry_run {
        "dry_run = true: the daemon only logs, counts and audits these"
    } else {
        "dry_run = false: the daemon carries these out"
    };
    out.push_str(&format!(
        "Policy plan at {} ({mode}; nothing was written)\n",
        utc_text(now)
    ));
    if rows.len() > 1 {
        out.push_str(&render_table(&rows, &[1]));
    }
    for (snapshot, evaluation) in planned {
        let acting = evaluation.actions().count();
        let line = match &evaluation.hold {
            Some(hold) => format!("{}: nothing would be done: {hold}", snapshot.account),
            None => format!(
                "{}: {} keys, {acting} actions (limit {} per poll)",
                snapshot.account,
                snapshot.keys.len(),
                policy.max_actions_per_poll
            ),
        };
        out.push_str(&line);
        // The wallet `when.account_quota_below` compares against.
        if let Some(wallet) = &snapshot.money.wallet {
            out.push_str(&format!(
                "; wallet {} left",
                super::report::quota_text(wallet.quota, snapshot.quota_per_unit)
            ));
        }
        out.push('\n');
    }
    out
}

/// The plan as JSON: `{dry_run, accounts: [{account, keys, hold, decisions: [...]}]}`.
pub fn plan_json(policy: &PolicyConfig, planned: &[(Arc<Snapshot>, Evaluation)]) -> String {
    let accounts: Vec<serde_json::Value> = planned
        .iter()
        .map(|(snapshot, evaluation)| {
            let decisions: Vec<serde_json::Value> = evaluation
                .decisions
                .iter()
                .map(|decision| {
                    let rule = &policy.rules[decision.rule_index];
                    let changes: Vec<serde_json::Value> = rule
                        .planned_change(&decision.key)
                        .into_iter()
                        .map(|(field, before, after)| {
                            json!({"field": field, "before": before, "after": after})
                        })
                        .collect();
                    json!({
                        "key_id": decision.key.id,
                        "key_name": decision.key.name,
                        "rule": rule.name,
                        "action": rule.action.label(),
                        "runs_at": decision.runs_at,
                        "changes": changes,
                        "verdict": verdict_label(&decision.verdict),
                        "cooldown_until": match decision.verdict {
                            Verdict::InCooldown { until } => Some(until),
                            _ => None,
                        },
                        "why": rule.describe_conditions(),
                    })
                })
                .collect();
            json!({
                "account": snapshot.account,
                "keys": snapshot.keys.len(),
                "wallet_quota": snapshot.money.wallet.as_ref().map(|wallet| wallet.quota),
                "hold": evaluation.hold.as_ref().map(ToString::to_string),
                "decisions": decisions,
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&json!({
        "dry_run": policy.dry_run,
        "accounts": accounts,
    }))
    .expect("the plan serializes");
    text.push('\n');
    text
}
