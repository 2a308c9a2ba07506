//! The `cometapi_policy_*` families, registered in the exporter's registry when the config has a
//! `[policy]` section. Every (account, rule, action, outcome) a configured rule can produce is
//! created at zero, so `increase()` and absent-series alerts work from the first scrape.

use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::policy::evaluate::next_run;
use crate::policy::rules::PolicyConfig;

/// The fixed outcome set of `cometapi_policy_actions_total`.
pub const OUTCOMES: [&str; 8] = [
    "applied",
    "dry_run",
    "skipped_changed",
    "suppressed_protected",
    "suppressed_limit",
    "rejected",
    "failed",
    "verify_failed",
];

pub struct PolicyMetrics {
    pub actions: IntCounterVec,
    pub circuit_open: IntGaugeVec,
    pub topup_quota: IntCounterVec,
    pub last_evaluation: GaugeVec,
    next_run: GaugeVec,
    schedules: Vec<(String, String)>,
}

impl PolicyMetrics {
    pub fn register(
        registry: &Registry,
        policy: &PolicyConfig,
        accounts: &[String],
    ) -> PolicyMetrics {
        let dry_run = IntGauge::with_opts(Opts::new(
            "cometapi_policy_dry_run",
            "1 when policy runs in dry-run mode: rules are evaluated, logged and counted, nothing is written.",
        ))
        .expect("valid metric");
        dry_run.set(i64::from(policy.dry_run));
        let actions = IntCounterVec::new(
            Opts::new(
                "cometapi_policy_actions_total",
                "Policy actions by rule, action and outcome.",
            ),
            &["account", "rule", "action", "outcome"],
        )
        .expect("valid metric");
        let circuit_open = IntGaugeVec::new(
            Opts::new(
                "cometapi_policy_circuit_open",
                "1 while the per-poll action limit or a sanity check holds enforcement back for the account.",
            ),
            &["account"],
        )
        .expect("valid metric");
        let topup_quota = IntCounterVec::new(
            Opts::new(
                "cometapi_policy_topup_quota_total",
                "Quota units granted by top-up rules.",
            ),
            &["account", "rule"],
        )
        .expect("valid metric");
        let last_evaluation = GaugeVec::new(
            Opts::new(
                "cometapi_policy_last_evaluation_timestamp_seconds",
                "Unix time at which the last policy evaluation of the account ended.",
            ),
            &["account"],
        )
        .expect("valid metric");
        let next_run = GaugeVec::new(
            Opts::new(
                "cometapi_policy_next_run_timestamp_seconds",
                "Unix time of the next scheduled run of each scheduled rule.",
            ),
            &["rule"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(dry_run) as Box<dyn prometheus::core::Collector>,
            Box::new(actions.clone()),
            Box::new(circuit_open.clone()),
            Box::new(topup_quota.clone()),
            Box::new(last_evaluation.clone()),
            Box::new(next_run.clone()),
        ] {
            registry
                .register(collector)
                .expect("policy metric names are unique");
        }
        for account in accounts {
            circuit_open.with_label_values(&[account]).set(0);
            for rule in &policy.rules {
                let selected = rule
                    .selector
                    .accounts
                    .as_ref()
                    .is_none_or(|names| names.contains(account));
                if !selected {
                    continue;
                }
                for outcome in OUTCOMES {
                    actions.with_label_values(&[account, &rule.name, rule.action.label(), outcome]);
                }
                if rule.top_up.is_some() {
                    topup_quota.with_label_values(&[account, &rule.name]);
                }
            }
        }
        let schedules = policy
            .rules
            .iter()
            .filter_map(|rule| Some((rule.name.clone(), rule.schedule.clone()?)))
            .collect();
        let metrics = PolicyMetrics {
            actions,
            circuit_open,
            topup_quota,
            last_evaluation,
            next_run,
            schedules,
        };
        metrics.refresh_next_runs(crate::clock::unix_now());
        metrics
    }

    /// Sets each scheduled rule's next run after `now`; called before every scrape.
    pub fn refresh_next_runs(&self, now: i64) {
        for (rule, schedule) in &self.schedules {
            if let Some(next) = next_run(schedule, now) {
                self.next_run.with_label_values(&[rule]).set(next as f64);
            }
        }
    }

    pub fn count(&self, account: &str, rule: &str, action: &str, outcome: &str) {
        self.actions
            .with_label_values(&[account, rule, action, outcome])
            .inc();
    }
}
