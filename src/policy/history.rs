//! What the policy engine remembers between polls, as plain data: when each rule last acted on
//! each key (cooldowns), which scheduled grants were made in which period (the ledger), which
//! scheduled periods were already evaluated, and which keys have a write whose outcome is not
//! known yet. No I/O: `state` loads it from and saves it to `state_dir`.

use std::collections::{HashMap, HashSet};

/// Identifies a (rule, account, key) triple.
type RuleKey = (String, String, i64);

#[derive(Debug, Default, Clone)]
pub struct PolicyHistory {
    /// (rule, account, key) → unix time of the last attempt (write or dry run).
    last_acted: HashMap<RuleKey, i64>,
    /// (rule, account, key, period start) of scheduled grants made (or possibly made).
    grants: HashSet<(String, String, i64, i64)>,
    /// (rule, account) → start of the latest period already evaluated (or armed).
    evaluated_periods: HashMap<(String, String), i64>,
    /// (account, key) with an intent whose outcome is not known: left alone until reconciled.
    pending: HashSet<(String, i64)>,
}

impl PolicyHistory {
    pub fn record_attempt(&mut self, rule: &str, account: &str, key_id: i64, at: i64) {
        let entry = self
            .last_acted
            .entry((rule.to_owned(), account.to_owned(), key_id))
            .or_insert(at);
        *entry = (*entry).max(at);
    }

    /// When the rule last acted on the key, if it did.
    pub fn last_attempt(&self, rule: &str, account: &str, key_id: i64) -> Option<i64> {
        self.last_acted
            .get(&(rule.to_owned(), account.to_owned(), key_id))
            .copied()
    }

    pub fn record_grant(&mut self, rule: &str, account: &str, key_id: i64, period: i64) {
        self.grants
            .insert((rule.to_owned(), account.to_owned(), key_id, period));
    }

    pub fn was_granted(&self, rule: &str, account: &str, key_id: i64, period: i64) -> bool {
        self.grants
            .contains(&(rule.to_owned(), account.to_owned(), key_id, period))
    }

    pub fn record_period_evaluated(&mut self, rule: &str, account: &str, period: i64) {
        let entry = self
            .evaluated_periods
            .entry((rule.to_owned(), account.to_owned()))
            .or_insert(period);
        *entry = (*entry).max(period);
    }

    /// Start of the latest period of the rule already evaluated for the account; `None` when
    /// the rule has never run for it (a new rule is armed, not run, at its first evaluation).
    pub fn last_evaluated_period(&self, rule: &str, account: &str) -> Option<i64> {
        self.evaluated_periods
            .get(&(rule.to_owned(), account.to_owned()))
            .copied()
    }

    pub fn mark_pending(&mut self, account: &str, key_id: i64) {
        self.pending.insert((account.to_owned(), key_id));
    }

    pub fn clear_pending(&mut self, account: &str, key_id: i64) {
        self.pending.remove(&(account.to_owned(), key_id));
    }

    pub fn is_pending(&self, account: &str, key_id: i64) -> bool {
        self.pending.contains(&(account.to_owned(), key_id))
    }

    /// Grants of periods older than the latest evaluated one can never matter again.
    pub fn current_grants(&self) -> Vec<(String, String, i64, i64)> {
        let mut grants: Vec<_> = self
            .grants
            .iter()
            .filter(|(rule, account, _, period)| {
                self.last_evaluated_period(rule, account)
                    .is_none_or(|latest| *period >= latest)
            })
            .cloned()
            .collect();
        grants.sort();
        grants
    }

    pub fn evaluated_periods(&self) -> Vec<(String, String, i64)> {
        let mut periods: Vec<_> = self
            .evaluated_periods
            .iter()
            .map(|((rule, account), period)| (rule.clone(), account.clone(), *period))
            .collect();
        periods.sort();
        periods
    }
}
