//! The pure heart of enforcement: `evaluate(snapshot, policy, history, now)` → what each rule
//! would do to each key of one account, and whether enforcement must hold back. No I/O, no
//! clock; every safety check that can be decided from the snapshot lives here, in the order the
//! operator relies on: key-count drop, pending writes, protected keys, cooldown / once per
//! period, then the per-poll action limit.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::policy::history::PolicyHistory;
use crate::policy::rules::{ActionKind, PolicyConfig, Rule, KEY_COUNT_DROP_MIN_KEYS};
use crate::snapshot::{KeyState, Snapshot};

/// The daemon acts now; `plan` shows what each rule would do now, and for scheduled rules what
/// they would do at their next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvaluationMode {
    Daemon,
    Plan,
}

/// What happens to one key under one rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Go ahead (or, in dry run, say what would be done).
    Act,
    /// The key is in `protected_keys`.
    SuppressedProtected,
    /// The plan exceeds `max_actions_per_poll`: nothing is done.
    SuppressedLimit,
    /// The rule acted on this key recently; it is left alone until then (unix seconds).
    InCooldown { until: i64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index into `PolicyConfig::rules`.
    pub rule_index: usize,
    pub rule: String,
    pub action: ActionKind,
    /// The key as the poll saw it.
    pub key: KeyState,
    pub verdict: Verdict,
    /// Scheduled rules: start of the period this grant belongs to.
    pub period: Option<i64>,
    /// `plan` only: when a scheduled rule runs next (unix seconds).
    pub runs_at: Option<i64>,
}

/// Why nothing was done for an account this poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// The complete listing has far fewer keys than the previous one.
    KeyCountDrop { previous: usize, current: usize },
    /// More actions than `max_actions_per_poll`; `rules` names the rules that planned them.
    ActionLimit {
        planned: usize,
        limit: u32,
        rules: Vec<String>,
    },
}

impl std::fmt::Display for Hold {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::KeyCountDrop { previous, current } => write!(
                formatter,
                "key count dropped from {previous} to {current} since the previous complete poll"
            ),
            Hold::ActionLimit {
                planned,
                limit,
                rules,
            } => write!(
                formatter,
                "{planned} actions planned, more than max_actions_per_poll = {limit} (rules: {})",
                rules.join(", ")
            ),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub decisions: Vec<Decision>,
    pub hold: Option<Hold>,
    /// Scheduled (rule, period start) evaluated by this pass; the engine records them once the
    /// pass's writes have ended without a transport failure.
    pub periods_evaluated: Vec<(String, i64)>,
    /// Scheduled (rule, period start) seen for the first time: armed, so a new rule first acts
    /// at its next scheduled time rather than at start-up.
    pub periods_armed: Vec<(String, i64)>,
}

impl Evaluation {
    pub fn actions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(|decision| decision.verdict == Verdict::Act)
    }
}

/// Evaluates every rule against one account's complete snapshot.
pub fn evaluate(
    policy: &PolicyConfig,
    snapshot: &Snapshot,
    previous_key_count: Option<usize>,
    history: &PolicyHistory,
    now: i64,
    mode: EvaluationMode,
) -> Evaluation {
    let account = snapshot.account.as_str();
    let mut evaluation = Evaluation::default();
    if let Some(previous) = previous_key_count {
        if key_count_dropped(previous, snapshot.keys.len(), policy.max_key_count_drop) {
            evaluation.hold = Some(Hold::KeyCountDrop {
                previous,
                current: snapshot.keys.len(),
            });
            return evaluation;
        }
    }
    for (rule_index, rule) in policy.rules.iter().enumerate() {
        let (period, runs_at) = match (&rule.schedule, mode) {
            (None, _) => (None, None),
            (Some(schedule), EvaluationMode::Plan) => {
                let next = next_run(schedule, now);
                (next, next)
            }
            (Some(schedule), EvaluationMode::Daemon) => {
                let Some(period) = period_start(schedule, now) else {
                    continue;
                };
                match history.last_evaluated_period(&rule.name, account) {
                    None => {
                        evaluation.periods_armed.push((rule.name.clone(), period));
                        continue;
                    }
                    Some(done) if done >= period => continue,
                    Some(_) => {
                        evaluation
                            .periods_evaluated
                            .push((rule.name.clone(), period));
                        (Some(period), None)
                    }
                }
            }
        };
        if rule.schedule.is_some() && period.is_none() {
            continue;
        }
        let wallet_quota = snapshot.money.wallet.as_ref().map(|wallet| wallet.quota);
        if !rule.account_conditions_hold(wallet_quota) {
            continue;
        }
        for key in &snapshot.keys {
            if !rule.applies_to(account, key, now) || history.is_pending(account, key.id) {
                continue;
            }
            let verdict = if policy.is_protected(account, key.id) {
                Verdict::SuppressedProtected
            } else if let Some(until) = cooldown_until(policy, rule, history, account, key, period)
                .filter(|until| *until > now)
            {
                Verdict::InCooldown { until }
            } else if let Some(period) = period.filter(|_| mode == EvaluationMode::Daemon) {
                if history.was_granted(&rule.name, account, key.id, period) {
                    continue;
                }
                Verdict::Act
            } else {
                Verdict::Act
            };
            evaluation.decisions.push(Decision {
                rule_index,
                rule: rule.name.clone(),
                action: rule.action,
                key: key.clone(),
                verdict,
                period,
                runs_at,
            });
        }
    }
    let planned = evaluation.actions().count();
    if planned > policy.max_actions_per_poll as usize {
        let mut rules: Vec<String> = evaluation
            .actions()
            .map(|decision| decision.rule.clone())
            .collect();
        rules.sort();
        rules.dedup();
        for decision in &mut evaluation.decisions {
            if decision.verdict == Verdict::Act {
                decision.verdict = Verdict::SuppressedLimit;
            }
        }
        evaluation.hold = Some(Hold::ActionLimit {
            planned,
            limit: policy.max_actions_per_poll,
            rules,
        });
    }
    evaluation
}

/// A sharp drop: more than `max_drop` of the previous count, and at least
/// `KEY_COUNT_DROP_MIN_KEYS` keys.
pub fn key_count_dropped(previous: usize, current: usize, max_drop: f64) -> bool {
    let lost = previous.saturating_sub(current);
    lost >= KEY_COUNT_DROP_MIN_KEYS && (lost as f64) > (previous as f64) * max_drop
}

/// Unscheduled rules wait `cooldown` after their last attempt on a key; scheduled rules are
/// limited by their period instead.
fn cooldown_until(
    policy: &PolicyConfig,
    rule: &Rule,
    history: &PolicyHistory,
    account: &str,
    key: &KeyState,
    period: Option<i64>,
) -> Option<i64> {
    if period.is_some() || rule.schedule.is_some() {
        return None;
    }
    let last = history.last_attempt(&rule.name, account, key.id)?;
    Some(last.saturating_add(duration_seconds(policy.cooldown)))
}

fn duration_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn parse_schedule(schedule: &str) -> Option<croner::Cron> {
    crate::cron::parse_cron(schedule).ok()
}

fn utc(unix: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(unix, 0)
}

/// Start of the schedule's period containing `now`: its latest fire time at or before `now`.
pub fn period_start(schedule: &str, now: i64) -> Option<i64> {
    let cron = parse_schedule(schedule)?;
    cron.find_previous_occurrence(&utc(now)?, true)
        .ok()
        .map(|time| time.timestamp())
}

/// The schedule's first fire time after `now`.
pub fn next_run(schedule: &str, now: i64) -> Option<i64> {
    let cron = parse_schedule(schedule)?;
    cron.find_next_occurrence(&utc(now)?, false)
        .ok()
        .map(|time| time.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::{Conditions, ProtectedKey, Selector, TopUp};
    use std::path::PathBuf;

    /// 2027-01-15T10:00:00Z.
    const NOW: i64 = 1_800_007_200;
    const DAY: i64 = 86_400;

    fn disable_expired() -> Rule {
        Rule {
            name: "disable-expired".into(),
            action: ActionKind::Disable,
            selector: Selector::default(),
            conditions: Conditions {
                expired: Some(true),
                ..Conditions::default()
            },
            top_up: None,
            schedule: None,
        }
    }

    fn nightly_restore() -> Rule {
        Rule {
            name: "nightly".into(),
            action: ActionKind::TopUp,
            selector: Selector {
                groups: Some(vec!["team".into()]),
                ..Selector::default()
            },
            conditions: Conditions::default(),
            top_up: Some(TopUp {
                to: 1_000,
                enable: true,
            }),
            schedule: Some("0 0 0 * * *".into()),
        }
    }

    fn policy(rules: Vec<Rule>) -> PolicyConfig {
        PolicyConfig {
            dry_run: false,
            state_dir: PathBuf::from("/nonexistent"),
            max_actions_per_poll: 3,
            protected_keys: vec![ProtectedKey {
                account: "main".into(),
                key_id: 2,
            }],
            cooldown: Duration::from_secs(3_600),
            max_key_count_drop: 0.2,
            rules,
        }
    }

    fn expired_keys(count: i64) -> Vec<KeyState> {
        (1..=count)
            .map(|id| KeyState {
                expired_time: NOW - DAY,
                ..KeyState::for_tests(id)
            })
            .collect()
    }

    fn team_keys(count: i64) -> Vec<KeyState> {
        (1..=count)
            .map(|id| KeyState {
                group: "team".into(),
                remain_quota: 10,
                ..KeyState::for_tests(id)
            })
            .collect()
    }

    fn snapshot(keys: Vec<KeyState>) -> Snapshot {
        Snapshot::new("main", keys, 500_000.0, NOW)
    }

    fn acted_ids(evaluation: &Evaluation) -> Vec<i64> {
        evaluation
            .actions()
            .map(|decision| decision.key.id)
            .collect()
    }

    #[test]
    fn a_wallet_condition_holds_only_below_the_threshold_and_only_with_a_wallet() {
        use crate::account::{AccountMoney, Wallet};
        let low_priority = Rule {
            name: "shed-low-priority".into(),
            action: ActionKind::Disable,
            selector: Selector {
                groups: Some(vec!["team".into()]),
                ..Selector::default()
            },
            conditions: Conditions {
                account_quota_below: Some(1_000),
                ..Conditions::default()
            },
            top_up: None,
            schedule: None,
        };
        let policy = policy(vec![low_priority]);
        let with_wallet = |quota| {
            snapshot(team_keys(3)).with_money(AccountMoney {
                wallet: Some(Wallet {
                    user_id: 1,
                    group: "default".into(),
                    quota,
                    used_quota: 0,
                    request_count: 0,
                }),
                ..AccountMoney::default()
            })
        };
        let acted = |snapshot: &Snapshot| {
            acted_ids(&evaluate(
                &policy,
                snapshot,
                None,
                &PolicyHistory::default(),
                NOW,
                EvaluationMode::Daemon,
            ))
        };
        // Key 2 is protected.
        assert_eq!(acted(&with_wallet(999)), [1, 3]);
        assert_eq!(acted(&with_wallet(-5)), [1, 3], "overdrawn is below too");
        assert_eq!(acted(&with_wallet(1_000)), Vec::<i64>::new());
        assert_eq!(
            acted(&snapshot(team_keys(3))),
            Vec::<i64>::new(),
            "no wallet route: never holds"
        );
        assert_eq!(policy.rules[0].describe_conditions(), "wallet < 1000");
    }

    #[test]
    fn protected_keys_are_suppressed_and_others_act() {
        let policy = policy(vec![disable_expired()]);
        let mut keys = expired_keys(3);
        keys.push(KeyState::for_tests(4));
        let evaluation = evaluate(
            &policy,
            &snapshot(keys),
            None,
            &PolicyHistory::default(),
            NOW,
            EvaluationMode::Daemon,
        );
        assert_eq!(acted_ids(&evaluation), [1, 3]);
        assert_eq!(
            evaluation.decisions[1].verdict,
            Verdict::SuppressedProtected
        );
        assert_eq!(evaluation.hold, None);
    }

    #[test]
    fn a_plan_over_the_limit_does_nothing_and_names_the_rules() {
        let policy = policy(vec![disable_expired()]);
        let evaluation = evaluate(
            &policy,
            &snapshot(expired_keys(5)),
            None,
            &PolicyHistory::default(),
            NOW,
            EvaluationMode::Daemon,
        );
        assert_eq!(acted_ids(&evaluation), Vec::<i64>::new());
        assert_eq!(
            evaluation.hold,
            Some(Hold::ActionLimit {
                planned: 4,
                limit: 3,
                rules: vec!["disable-expired".into()]
            })
        );
        assert!(evaluation
            .decisions
            .iter()
            .all(|decision| decision.verdict != Verdict::Act));
    }

    #[test]
    fn a_sharp_key_count_drop_holds_everything() {
        let policy = policy(vec![disable_expired()]);
        let evaluation = evaluate(
            &policy,
            &snapshot(expired_keys(3)),
            Some(20),
            &PolicyHistory::default(),
            NOW,
            EvaluationMode::Daemon,
        );
        assert!(evaluation.decisions.is_empty());
        assert_eq!(
            evaluation.hold,
            Some(Hold::KeyCountDrop {
                previous: 20,
                current: 3
            })
        );
        assert!(!key_count_dropped(4, 1, 0.2), "small accounts lose keys");
        assert!(!key_count_dropped(100, 81, 0.2));
        assert!(key_count_dropped(100, 79, 0.2));
        assert!(!key_count_dropped(10, 12, 0.2));
    }

    #[test]
    fn cooldown_keeps_a_rule_off_a_key_it_recently_acted_on() {
        let policy = policy(vec![disable_expired()]);
        let mut history = PolicyHistory::default();
        history.record_attempt("disable-expired", "main", 1, NOW - 600);
        history.record_attempt("disable-expired", "main", 3, NOW - 7_200);
        let evaluation = evaluate(
            &policy,
            &snapshot(expired_keys(3)),
            None,
            &history,
            NOW,
            EvaluationMode::Daemon,
        );
        assert_eq!(acted_ids(&evaluation), [3]);
        assert_eq!(
            evaluation.decisions[0].verdict,
            Verdict::InCooldown {
                until: NOW - 600 + 3_600
            }
        );
    }

    #[test]
    fn pending_keys_are_left_alone() {
        let policy = policy(vec![disable_expired()]);
        let mut history = PolicyHistory::default();
        history.mark_pending("main", 1);
        let evaluation = evaluate(
            &policy,
            &snapshot(expired_keys(1)),
            None,
            &history,
            NOW,
            EvaluationMode::Daemon,
        );
        assert!(evaluation.decisions.is_empty());
    }

    #[test]
    fn a_new_scheduled_rule_is_armed_then_acts_once_per_period() {
        let policy = policy(vec![nightly_restore()]);
        let today = NOW - 10 * 3_600;
        let mut history = PolicyHistory::default();
        let first = evaluate(
            &policy,
            &snapshot(team_keys(3)),
            None,
            &history,
            NOW,
            EvaluationMode::Daemon,
        );
        assert!(first.decisions.is_empty());
        assert_eq!(first.periods_armed, [("nightly".to_owned(), today)]);
        history.record_period_evaluated("nightly", "main", today);

        let later_today = evaluate(
            &policy,
            &snapshot(team_keys(3)),
            None,
            &history,
            NOW + 3_600,
            EvaluationMode::Daemon,
        );
        assert!(later_today.decisions.is_empty());

        let after_midnight = NOW + 14 * 3_600 + 5;
        let tomorrow = today + DAY;
        let mut next = evaluate(
            &policy,
            &snapshot(team_keys(3)),
            None,
            &history,
            after_midnight,
            EvaluationMode::Daemon,
        );
        assert_eq!(acted_ids(&next), [1, 3], "key 2 is protected");
        assert!(next.decisions.iter().all(|d| d.period == Some(tomorrow)));
        assert_eq!(next.periods_evaluated, [("nightly".to_owned(), tomorrow)]);

        // Key 1 was granted, key 3's write failed: the period is re-evaluated, only 3 acts.
        history.record_grant("nightly", "main", 1, tomorrow);
        next = evaluate(
            &policy,
            &snapshot(team_keys(3)),
            None,
            &history,
            after_midnight + 60,
            EvaluationMode::Daemon,
        );
        assert_eq!(acted_ids(&next), [3]);
    }

    #[test]
    fn plan_shows_scheduled_rules_at_their_next_run() {
        let policy = policy(vec![nightly_restore()]);
        let evaluation = evaluate(
            &policy,
            &snapshot(team_keys(1)),
            None,
            &PolicyHistory::default(),
            NOW,
            EvaluationMode::Plan,
        );
        assert_eq!(acted_ids(&evaluation), [1]);
        assert_eq!(evaluation.decisions[0].runs_at, Some(NOW + 14 * 3_600));
        assert!(evaluation.periods_armed.is_empty());
    }

    #[test]
    fn schedule_periods_are_utc_cron_boundaries() {
        assert_eq!(period_start("0 0 0 * * *", NOW), Some(NOW - 10 * 3_600));
        assert_eq!(
            period_start("0 0 0 * * *", NOW - 10 * 3_600),
            Some(NOW - 10 * 3_600)
        );
        assert_eq!(next_run("0 0 0 * * *", NOW), Some(NOW + 14 * 3_600));
        assert_eq!(period_start("*/10 * * * * *", NOW + 7), Some(NOW));
    }
}
