//! The I/O edge of enforcement: after each complete poll of an account, reconcile unfinished
//! writes, evaluate the rules (pure, `evaluate`), and carry out the actions safely.
//!
//! One action, in order: fresh `GET /api/token/{id}`; re-check the rule on the fresh record
//! (`skipped_changed` when it no longer applies); write the intent to the audit log and sync it;
//! the write(s) — a full PUT built from the fresh record with only the intended field changed,
//! and/or a `status_only` PUT carrying the full record; `GET` again and compare (`verify_failed`
//! on a difference); write the outcome. A server refusal is `rejected` and is not retried before
//! the cooldown (or the next period) has passed. After a transport failure the key is read to
//! learn whether the write landed; if that cannot be known, a scheduled grant counts as made
//! (never grant twice).
//!
//! `remain_quota` is compared through `remain_quota + used_quota`, which consumption and refunds
//! leave unchanged: a key spending quota while it is topped up still verifies.
//!
//! This file is longer than our usual ~600 lines on purpose: the write protocol above is read
//! top to bottom in one place, so that every step of the safety sequence sits next to the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::Registry;

use crate::api::{editable_changes, ApiClient, ApiError, KeyRecord};
use crate::clock::unix_now;
use crate::policy::evaluate::{evaluate, Decision, EvaluationMode, Hold, Verdict};
use crate::policy::history::PolicyHistory;
use crate::policy::metrics::PolicyMetrics;
use crate::policy::rules::{ActionKind, PolicyConfig, Rule};
use crate::policy::state::{AuditChange, AuditEntry, StateError, StateStore};
use crate::snapshot::{KeyState, Snapshot};

pub struct PolicyEngine {
    policy: PolicyConfig,
    store: StateStore,
    state: Mutex<EngineState>,
    metrics: PolicyMetrics,
    sequence: AtomicU64,
}

struct EngineState {
    history: PolicyHistory,
    key_counts: HashMap<String, usize>,
    pending_intents: Vec<AuditEntry>,
}

/// One write of an action.
#[derive(Debug, Clone)]
enum Write {
    /// Full PUT of this record (no status).
    Full(Box<KeyRecord>),
    /// `status_only` PUT of the record with this status.
    Status(i64),
}

/// Whether a write is visible on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landing {
    Applied,
    NotApplied,
    Unknown,
}

impl PolicyEngine {
    /// Opens (and locks) `state_dir`, loads the history, compacts the ledger and registers the
    /// policy metrics.
    pub fn open(
        policy: PolicyConfig,
        accounts: &[String],
        registry: &Registry,
    ) -> Result<Arc<PolicyEngine>, StateError> {
        let store = StateStore::open_locked(&policy.state_dir)?;
        let cooldown = i64::try_from(policy.cooldown.as_secs()).unwrap_or(i64::MAX);
        let loaded = store.load(unix_now(), cooldown)?;
        if loaded.skipped_lines > 0 {
            tracing::warn!(
                state_dir = %store.dir().display(), lines = loaded.skipped_lines,
                "skipped unreadable lines in the policy state (a write torn by a crash)"
            );
        }
        if !loaded.pending_intents.is_empty() {
            tracing::warn!(
                intents = loaded.pending_intents.len(),
                "policy writes without a recorded outcome; they are reconciled at each account's first poll"
            );
        }
        store.compact_ledger(&loaded.history)?;
        let metrics = PolicyMetrics::register(registry, &policy, accounts);
        tracing::info!(
            dry_run = policy.dry_run, rules = policy.rules.len(), state_dir = %store.dir().display(),
            "policy enabled"
        );
        Ok(Arc::new(PolicyEngine {
            policy,
            store,
            state: Mutex::new(EngineState {
                history: loaded.history,
                key_counts: loaded.key_counts,
                pending_intents: loaded.pending_intents,
            }),
            metrics,
            sequence: AtomicU64::new(0),
        }))
    }

    pub fn metrics(&self) -> &PolicyMetrics {
        &self.metrics
    }

    /// Everything the engine does after a complete poll of one account. Returns a one-line
    /// summary for the status page ("dry run: 3 would act", "held: ...", "2 applied").
    pub async fn after_complete_poll(&self, client: &ApiClient, snapshot: &Snapshot) -> String {
        let account = snapshot.account.as_str();
        self.reconcile(client, account).await;
        let now = unix_now();
        let (evaluation, count_changed) = {
            let mut state = self.lock_state();
            let previous = state.key_counts.get(account).copied();
            let evaluation = evaluate(
                &self.policy,
                snapshot,
                previous,
                &state.history,
                now,
                EvaluationMode::Daemon,
            );
            let count_changed = previous != Some(snapshot.keys.len());
            state
                .key_counts
                .insert(account.to_owned(), snapshot.keys.len());
            (evaluation, count_changed.then(|| state.key_counts.clone()))
        };
        if let Some(counts) = count_changed {
            if let Err(error) = self.store.save_key_counts(&counts) {
                tracing::error!(%error, "cannot save the key counts");
            }
        }
        for (rule, period) in &evaluation.periods_armed {
            tracing::info!(
                account, rule = %rule, "scheduled rule armed: it first acts at its next scheduled time"
            );
            self.record_period_evaluated(rule, account, *period);
        }
        let circuit = self.metrics.circuit_open.with_label_values(&[account]);
        match &evaluation.hold {
            Some(hold @ Hold::ActionLimit { .. }) => {
                circuit.set(1);
                tracing::warn!(account, reason = %hold, "policy circuit open: nothing is done this poll");
            }
            Some(hold @ Hold::KeyCountDrop { .. }) => {
                circuit.set(1);
                tracing::warn!(account, reason = %hold, "policy held back: nothing is done this poll");
            }
            None => circuit.set(0),
        }
        let mut failed_rules: Vec<String> = Vec::new();
        let mut outcome_counts: std::collections::BTreeMap<&'static str, usize> =
            std::collections::BTreeMap::new();
        for decision in &evaluation.decisions {
            let rule = &self.policy.rules[decision.rule_index];
            let outcome = match decision.verdict {
                Verdict::InCooldown { .. } => continue,
                Verdict::SuppressedProtected => {
                    tracing::debug!(account, rule = %rule.name, key_id = decision.key.id, "protected key left alone");
                    "suppressed_protected"
                }
                Verdict::SuppressedLimit => "suppressed_limit",
                Verdict::Act if self.policy.dry_run => {
                    self.record_dry_run(account, rule, decision, now);
                    "dry_run"
                }
                Verdict::Act => match self.execute(client, account, rule, decision).await {
                    Some(outcome) => outcome,
                    // Shutdown in the middle of a write: reconciled at the next start.
                    None => return "interrupted by shutdown".to_owned(),
                },
            };
            *outcome_counts.entry(outcome).or_default() += 1;
            if outcome == "failed" {
                failed_rules.push(rule.name.clone());
            }
            self.metrics
                .count(account, &rule.name, rule.action.label(), outcome);
        }
        if evaluation.hold.is_none() {
            for (rule, period) in &evaluation.periods_evaluated {
                // A transport failure leaves the period open: the next poll retries the keys
                // not yet granted.
                if !failed_rules.contains(rule) {
                    self.record_period_evaluated(rule, account, *period);
                }
            }
        }
        self.metrics
            .last_evaluation
            .with_label_values(&[account])
            .set(unix_now() as f64);
        let mode = if self.policy.dry_run {
            "dry run"
        } else {
            "enforcing"
        };
        match &evaluation.hold {
            Some(hold) => format!("{mode}; held back: {hold}"),
            None if outcome_counts.is_empty() => format!("{mode}; nothing to do"),
            None => {
                let counts: Vec<String> = outcome_counts
                    .iter()
                    .map(|(outcome, count)| format!("{count} {outcome}"))
                    .collect();
                format!("{mode}; {}", counts.join(", "))
            }
        }
    }

    fn record_period_evaluated(&self, rule: &str, account: &str, period: i64) {
        if !self.policy.dry_run {
            if let Err(error) = self.store.append_period_evaluated(rule, account, period) {
                tracing::error!(%error, "cannot record the evaluated period");
            }
        }
        self.lock_state()
            .history
            .record_period_evaluated(rule, account, period);
    }

    fn record_dry_run(&self, account: &str, rule: &Rule, decision: &Decision, now: i64) {
        let before = KeyRecord::from_state(&decision.key);
        let after = rule.expected_after(&before);
        let changes = changes_of(&before, &after);
        tracing::info!(
            account, rule = %rule.name, key_id = decision.key.id, action = rule.action.label(),
            changes = %describe_changes(&changes), "dry run: would act"
        );
        let mut entry = self.entry("decision", account, rule, decision, now);
        entry.changes = changes;
        entry.outcome = Some("dry_run".into());
        entry.used_quota_at_poll = Some(decision.key.used_quota);
        if let Err(error) = self.store.append_audit(&entry) {
            tracing::error!(%error, "cannot write the audit log");
        }
        // Dry-run cooldowns and periods live in memory only: turning dry run off starts clean.
        let mut state = self.lock_state();
        if let Some(period) = decision.period {
            state
                .history
                .record_grant(&rule.name, account, decision.key.id, period);
        } else {
            state
                .history
                .record_attempt(&rule.name, account, decision.key.id, now);
        }
    }

    /// Carries out one action; `None` when shutdown interrupted a write (left for reconcile).
    async fn execute(
        &self,
        client: &ApiClient,
        account: &str,
        rule: &Rule,
        decision: &Decision,
    ) -> Option<&'static str> {
        let key_id = decision.key.id;
        let now = unix_now();
        let mut entry = self.entry("decision", account, rule, decision, now);
        entry.used_quota_at_poll = Some(decision.key.used_quota);
        let fresh = match client.get_key(key_id).await {
            Ok(fresh) => fresh,
            Err(ApiError::Cancelled) => return None,
            Err(error) => {
                let outcome = if matches!(
                    error,
                    ApiError::Refused { .. } | ApiError::KeyNotFound { .. }
                ) {
                    "skipped_changed"
                } else {
                    "failed"
                };
                return Some(self.finish_without_write(rule, entry, outcome, &error.to_string()));
            }
        };
        let read_at = Instant::now();
        entry.used_quota_at_read = Some(fresh.used_quota);
        let fresh_state = KeyState::from(fresh.clone());
        if !rule.applies_to(account, &fresh_state, unix_now()) {
            return Some(self.finish_without_write(
                rule,
                entry,
                "skipped_changed",
                "the fresh read no longer matches the rule",
            ));
        }
        let (writes, expected) = planned_writes(rule, &fresh);
        entry.changes = changes_of(&fresh, &expected);
        entry.event = "intent".into();
        entry.action_id = Some(self.next_action_id(now));
        if let Err(error) = self.store.append_audit(&entry) {
            tracing::error!(%error, account, rule = %rule.name, key_id, "cannot write the audit intent; not writing to the server");
            self.remember_attempt(rule, account, key_id);
            return Some("failed");
        }
        self.lock_state().history.mark_pending(account, key_id);

        // A write is not retried blindly: after a transport failure the key is read instead.
        let writer = client.without_retries();
        let mut current = fresh.clone();
        let mut failure: Option<(&'static str, String)> = None;
        let mut last_write_at = read_at;
        for write in &writes {
            last_write_at = Instant::now();
            let result = match write {
                Write::Full(record) => writer.update_key(record).await.map(|_| ()),
                Write::Status(status) => writer
                    .update_key_status(&current, *status)
                    .await
                    .map(|_| ()),
            };
            let target = match write {
                Write::Full(record) => (**record).clone(),
                Write::Status(status) => KeyRecord {
                    status: *status,
                    ..current.clone()
                },
            };
            match result {
                Ok(()) => current = target,
                Err(ApiError::Cancelled) => return None,
                Err(ApiError::Refused { message, .. }) => {
                    failure = Some(("rejected", format!("the server refused: {message}")));
                    break;
                }
                Err(error) => match self.landing_after_error(client, &fresh, &target).await {
                    Landing::Applied => current = target,
                    Landing::NotApplied => {
                        failure = Some(("failed", error.to_string()));
                        break;
                    }
                    Landing::Unknown => {
                        failure = Some((
                            "failed",
                            format!("{error}; whether the write landed is unknown"),
                        ));
                        if let Some(period) = decision.period {
                            self.record_grant(&rule.name, account, key_id, period);
                        }
                        break;
                    }
                },
            }
        }
        entry.read_to_write_ms = Some(last_write_at.duration_since(read_at).as_millis() as u64);
        entry.event = "outcome".into();
        let outcome = match failure {
            Some((outcome, detail)) => {
                entry.detail = Some(detail);
                outcome
            }
            None => match client.get_key(key_id).await {
                Ok(read_back) => {
                    entry.used_quota_after = Some(read_back.used_quota);
                    let differences = verify(&expected, &fresh, &read_back);
                    if differences.is_empty() {
                        "applied"
                    } else {
                        entry.detail =
                            Some(format!("read-back differs in {}", differences.join(", ")));
                        "verify_failed"
                    }
                }
                Err(ApiError::Cancelled) => return None,
                Err(error) => {
                    entry.detail = Some(format!(
                        "the write succeeded but the read-back failed: {error}"
                    ));
                    "verify_failed"
                }
            },
        };
        if outcome == "applied" || outcome == "verify_failed" {
            if let Some(period) = decision.period {
                self.record_grant(&rule.name, account, key_id, period);
            }
        }
        if outcome == "applied" && rule.action == ActionKind::TopUp {
            let granted = expected.remain_quota.saturating_sub(fresh.remain_quota);
            self.metrics
                .topup_quota
                .with_label_values(&[account, &rule.name])
                .inc_by(granted.max(0) as u64);
        }
        entry.outcome = Some(outcome.into());
        self.log_outcome(&entry);
        if let Err(error) = self.store.append_audit(&entry) {
            tracing::error!(%error, "cannot write the audit outcome");
        }
        self.lock_state().history.clear_pending(account, key_id);
        self.remember_attempt(rule, account, key_id);
        Some(outcome)
    }

    fn finish_without_write(
        &self,
        rule: &Rule,
        mut entry: AuditEntry,
        outcome: &'static str,
        detail: &str,
    ) -> &'static str {
        entry.outcome = Some(outcome.into());
        entry.detail = Some(detail.to_owned());
        self.log_outcome(&entry);
        if let Err(error) = self.store.append_audit(&entry) {
            tracing::error!(%error, "cannot write the audit log");
        }
        if outcome == "failed" {
            self.remember_attempt(rule, &entry.account, entry.key_id);
        }
        outcome
    }

    fn remember_attempt(&self, rule: &Rule, account: &str, key_id: i64) {
        if rule.schedule.is_none() {
            self.lock_state()
                .history
                .record_attempt(&rule.name, account, key_id, unix_now());
        }
    }

    fn record_grant(&self, rule: &str, account: &str, key_id: i64, period: i64) {
        if let Err(error) = self.store.append_grant(rule, account, key_id, period) {
            tracing::error!(%error, "cannot record the grant in the ledger");
        }
        self.lock_state()
            .history
            .record_grant(rule, account, key_id, period);
    }

    /// After a write failed in transport: read the key to learn whether it landed.
    async fn landing_after_error(
        &self,
        client: &ApiClient,
        fresh: &KeyRecord,
        target: &KeyRecord,
    ) -> Landing {
        match client.get_key(fresh.id).await {
            Ok(now) => landing(fresh, target, &now),
            Err(_) => Landing::Unknown,
        }
    }

    /// Resolves intents without an outcome for this account by reading each key.
    async fn reconcile(&self, client: &ApiClient, account: &str) {
        let pending: Vec<AuditEntry> = {
            let state = self.lock_state();
            state
                .pending_intents
                .iter()
                .filter(|intent| intent.account == account)
                .cloned()
                .collect()
        };
        for intent in pending {
            let Some(action_id) = intent.action_id.clone() else {
                continue;
            };
            let mut entry = intent.clone();
            entry.event = "outcome".into();
            entry.reconciled = true;
            entry.unix_time = unix_now();
            entry.time = rfc3339(entry.unix_time);
            let outcome = match client.get_key(intent.key_id).await {
                Err(ApiError::Refused { .. } | ApiError::KeyNotFound { .. }) => {
                    entry.detail = Some("reconciled: the key no longer exists".into());
                    "skipped_changed"
                }
                Err(error) => {
                    tracing::warn!(account, action_id, %error, "cannot reconcile an unfinished policy write yet; the key stays untouched");
                    continue;
                }
                Ok(now_record) => {
                    entry.used_quota_after = Some(now_record.used_quota);
                    let landings = reconcile_landings(&intent, &now_record);
                    let quota_landed = landings
                        .iter()
                        .find(|(field, _)| field == "remain_quota")
                        .map(|(_, landing)| *landing);
                    if let (Some(period), Some(Landing::Applied | Landing::Unknown)) =
                        (intent.period, quota_landed)
                    {
                        self.record_grant(&intent.rule, account, intent.key_id, period);
                    }
                    let all =
                        |wanted: Landing| landings.iter().all(|(_, landing)| *landing == wanted);
                    if all(Landing::Applied) {
                        entry.detail =
                            Some("reconciled: the write had landed before the interruption".into());
                        "applied"
                    } else if all(Landing::NotApplied) {
                        entry.detail =
                            Some("reconciled: the write never reached the server".into());
                        "failed"
                    } else {
                        entry.detail = Some(format!(
                            "reconciled: partly applied or changed since ({})",
                            landings
                                .iter()
                                .map(|(field, landing)| format!("{field}: {landing:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                        "verify_failed"
                    }
                }
            };
            entry.outcome = Some(outcome.into());
            self.log_outcome(&entry);
            if let Err(error) = self.store.append_audit(&entry) {
                tracing::error!(%error, "cannot write the reconciled outcome");
                continue;
            }
            self.metrics
                .count(account, &entry.rule, &entry.action, outcome);
            let mut state = self.lock_state();
            state
                .pending_intents
                .retain(|pending| pending.action_id.as_deref() != Some(action_id.as_str()));
            state.history.clear_pending(account, intent.key_id);
            if intent.period.is_none() {
                state
                    .history
                    .record_attempt(&intent.rule, account, intent.key_id, entry.unix_time);
            }
        }
    }

    fn entry(
        &self,
        event: &str,
        account: &str,
        rule: &Rule,
        decision: &Decision,
        now: i64,
    ) -> AuditEntry {
        AuditEntry {
            time: rfc3339(now),
            unix_time: now,
            event: event.into(),
            action_id: None,
            account: account.to_owned(),
            rule: rule.name.clone(),
            key_id: decision.key.id,
            key_name: decision.key.name.clone(),
            action: rule.action.label().into(),
            changes: Vec::new(),
            outcome: None,
            detail: None,
            dry_run: self.policy.dry_run,
            period: decision.period,
            used_quota_at_poll: None,
            used_quota_at_read: None,
            used_quota_after: None,
            read_to_write_ms: None,
            reconciled: false,
        }
    }

    fn log_outcome(&self, entry: &AuditEntry) {
        let outcome = entry.outcome.as_deref().unwrap_or("unknown");
        let changes = describe_changes(&entry.changes);
        let detail = entry.detail.as_deref().unwrap_or("");
        if matches!(outcome, "applied" | "skipped_changed") {
            tracing::info!(
                account = %entry.account, rule = %entry.rule, key_id = entry.key_id, action = %entry.action,
                outcome, changes = %changes, detail, "policy action"
            );
        } else {
            tracing::warn!(
                account = %entry.account, rule = %entry.rule, key_id = entry.key_id, action = %entry.action,
                outcome, changes = %changes, detail, "policy action"
            );
        }
    }

    fn next_action_id(&self, now: i64) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{now}-{}-{sequence}", std::process::id())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, EngineState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The writes an action needs on `fresh`, and the record expected afterwards
/// (`Rule::expected_after`): a full PUT when the quota changes (it never carries `status`), then
/// a `status_only` PUT when the status changes — so re-enabling an exhausted key fixes its
/// quota first.
fn planned_writes(rule: &Rule, fresh: &KeyRecord) -> (Vec<Write>, KeyRecord) {
    let expected = rule.expected_after(fresh);
    let mut writes = Vec::new();
    if expected.remain_quota != fresh.remain_quota {
        writes.push(Write::Full(Box::new(KeyRecord {
            status: fresh.status,
            ..expected.clone()
        })));
    }
    if expected.status != fresh.status {
        writes.push(Write::Status(expected.status));
    }
    (writes, expected)
}

fn changes_of(before: &KeyRecord, after: &KeyRecord) -> Vec<AuditChange> {
    editable_changes(before, after)
        .iter()
        .map(AuditChange::from)
        .collect()
}

fn describe_changes(changes: &[AuditChange]) -> String {
    changes
        .iter()
        .map(|change| format!("{}: {} → {}", change.field, change.before, change.after))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `remain_quota + used_quota`: unchanged by consumption and refunds, changed by a top-up.
fn quota_total(record: &KeyRecord) -> i64 {
    record.remain_quota.saturating_add(record.used_quota)
}

/// Whether `target` (a write on `fresh`) is visible in `now`.
fn landing(fresh: &KeyRecord, target: &KeyRecord, now: &KeyRecord) -> Landing {
    if target.status != fresh.status {
        return if now.status == target.status {
            Landing::Applied
        } else if now.status == fresh.status {
            Landing::NotApplied
        } else {
            Landing::Unknown
        };
    }
    let expected_total = target.remain_quota.saturating_add(fresh.used_quota);
    if quota_total(now) == expected_total {
        Landing::Applied
    } else if quota_total(now) == quota_total(fresh) {
        Landing::NotApplied
    } else {
        Landing::Unknown
    }
}

/// The fields of the read-back that differ from what was written. `remain_quota` is compared
/// through `remain + used` (traffic during the write moves both); `status` and every other
/// editable field must be exactly as expected.
fn verify(expected: &KeyRecord, fresh: &KeyRecord, read_back: &KeyRecord) -> Vec<&'static str> {
    let mut differences: Vec<&'static str> = editable_changes(expected, read_back)
        .into_iter()
        .map(|change| change.field)
        .filter(|field| *field != "remain_quota")
        .collect();
    if expected.remain_quota.saturating_add(fresh.used_quota) != quota_total(read_back) {
        differences.push("remain_quota");
    }
    differences
}

/// For an intent found without outcome: which of its changes are visible now.
fn reconcile_landings(intent: &AuditEntry, now: &KeyRecord) -> Vec<(String, Landing)> {
    let used_at_read = intent.used_quota_at_read.unwrap_or(now.used_quota);
    intent
        .changes
        .iter()
        .map(|change| {
            let landing = match change.field.as_str() {
                "status" => {
                    let (before, after) = (change.before.as_i64(), change.after.as_i64());
                    if Some(now.status) == after {
                        Landing::Applied
                    } else if Some(now.status) == before {
                        Landing::NotApplied
                    } else {
                        Landing::Unknown
                    }
                }
                "remain_quota" => {
                    let total = quota_total(now);
                    let before = change.before.as_i64().map(|value| value + used_at_read);
                    let after = change.after.as_i64().map(|value| value + used_at_read);
                    if Some(total) == after {
                        Landing::Applied
                    } else if Some(total) == before {
                        Landing::NotApplied
                    } else {
                        Landing::Unknown
                    }
                }
                _ => Landing::Unknown,
            };
            (change.field.clone(), landing)
        })
        .collect()
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix, 0)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::{STATUS_ENABLED, STATUS_EXHAUSTED};

    fn record(status: i64, remain: i64, used: i64) -> KeyRecord {
        KeyRecord {
            id: 1,
            status,
            remain_quota: remain,
            used_quota: used,
            ..KeyRecord::default()
        }
    }

    #[test]
    fn a_top_up_is_recognised_through_consumption() {
        let fresh = record(1, 100, 900);
        let target = record(1, 1_000, 900);
        // 30 spent after the write: remain 970, used 930.
        assert_eq!(
            landing(&fresh, &target, &record(1, 970, 930)),
            Landing::Applied
        );
        // Not written, 30 spent: remain 70, used 930.
        assert_eq!(
            landing(&fresh, &target, &record(1, 70, 930)),
            Landing::NotApplied
        );
        assert_eq!(
            landing(&fresh, &target, &record(1, 5, 930)),
            Landing::Unknown
        );
        assert!(verify(&target, &fresh, &record(1, 970, 930)).is_empty());
        assert_eq!(
            verify(&target, &fresh, &record(1, 70, 930)),
            ["remain_quota"]
        );
    }

    #[test]
    fn a_status_write_is_recognised_by_status() {
        let fresh = record(1, 100, 0);
        let target = record(2, 100, 0);
        assert_eq!(
            landing(&fresh, &target, &record(2, 90, 10)),
            Landing::Applied
        );
        assert_eq!(
            landing(&fresh, &target, &record(1, 90, 10)),
            Landing::NotApplied
        );
        assert_eq!(verify(&target, &fresh, &record(1, 100, 0)), ["status"]);
    }

    #[test]
    fn an_unfinished_intent_is_judged_by_what_the_key_shows_now() {
        let intent: AuditEntry = serde_json::from_value(serde_json::json!({
            "time": "", "unix_time": 0, "event": "intent", "action_id": "a", "account": "main",
            "rule": "r", "key_id": 1, "action": "top_up", "dry_run": false,
            "used_quota_at_read": 900,
            "changes": [
                {"field": "status", "before": 4, "after": 1},
                {"field": "remain_quota", "before": 0, "after": 1000}
            ]
        }))
        .unwrap();
        let landings = |now: KeyRecord| -> Vec<Landing> {
            reconcile_landings(&intent, &now)
                .into_iter()
                .map(|(_, landing)| landing)
                .collect()
        };
        // Both landed, then 30 was spent.
        assert_eq!(
            landings(record(1, 970, 930)),
            [Landing::Applied, Landing::Applied]
        );
        // The quota landed, the status write never did.
        assert_eq!(
            landings(record(4, 1000, 900)),
            [Landing::NotApplied, Landing::Applied]
        );
        // Nothing landed.
        assert_eq!(
            landings(record(4, 0, 900)),
            [Landing::NotApplied, Landing::NotApplied]
        );
        // Someone else changed the key since.
        assert_eq!(
            landings(record(2, 77, 900)),
            [Landing::Unknown, Landing::Unknown]
        );
    }

    #[test]
    fn re_enabling_an_exhausted_key_fixes_quota_before_status() {
        let rule = Rule {
            name: "restore".into(),
            action: ActionKind::TopUp,
            selector: Default::default(),
            conditions: Default::default(),
            top_up: Some(crate::policy::rules::TopUp {
                to: 500,
                enable: true,
            }),
            schedule: None,
        };
        let fresh = KeyRecord {
            allow_ips: Some("10.0.0.0/8".into()),
            ..record(STATUS_EXHAUSTED, 0, 500)
        };
        let (writes, expected) = planned_writes(&rule, &fresh);
        assert!(
            matches!(&writes[0], Write::Full(record) if record.remain_quota == 500 && record.status == STATUS_EXHAUSTED && record.allow_ips == fresh.allow_ips)
        );
        assert!(matches!(writes[1], Write::Status(STATUS_ENABLED)));
        assert_eq!(
            (expected.status, expected.remain_quota),
            (STATUS_ENABLED, 500)
        );
        // Quota already back (a status write that failed last time): only the status.
        let (writes, expected) = planned_writes(&rule, &record(STATUS_EXHAUSTED, 800, 500));
        assert!(matches!(writes[..], [Write::Status(STATUS_ENABLED)]));
        assert_eq!(
            (expected.status, expected.remain_quota),
            (STATUS_ENABLED, 800)
        );
    }
}
