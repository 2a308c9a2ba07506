//! Durable policy state in `state_dir`, as plain files:
//!
//! - `audit.jsonl`: append-only JSON lines. A write is an `intent` line (synced to disk before
//!   the PUT) and an `outcome` line with the same `action_id` after it; dry runs and
//!   suppressions are single `decision` lines. An intent without an outcome (a crash between
//!   them) is reconciled on the next start by reading the key.
//! - `ledger.jsonl`: scheduled grants per (rule, account, key, period) and the periods already
//!   evaluated; compacted to the current periods at start (written beside, synced, renamed).
//! - `key-counts.json`: each account's key count at its last complete poll, for the key-count
//!   drop check across restarts.
//! - `lock`: held with an exclusive file lock while the daemon runs, so two instances never
//!   enforce from the same state.
//!
//! Files are created mode 0600 and the directory 0700 (they name keys and quotas). Every append
//! is followed by `fsync`; a torn last line (a crash while writing it) is skipped
//! on load — for an intent that means its PUT was never sent.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::FieldChange;
use crate::policy::history::PolicyHistory;

pub const AUDIT_FILE: &str = "audit.jsonl";
pub const LEDGER_FILE: &str = "ledger.jsonl";
pub const KEY_COUNTS_FILE: &str = "key-counts.json";
pub const LOCK_FILE: &str = "lock";

/// Outcomes that count as the rule having acted on a key (they start its cooldown).
const ATTEMPT_OUTCOMES: [&str; 4] = ["applied", "rejected", "failed", "verify_failed"];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("policy.state_dir {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "policy.state_dir {path}: another cometapi-keymon holds its lock; only one instance may \
         enforce policy from the same state"
    )]
    Locked { path: PathBuf },
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    pub unix_time: i64,
    /// `intent`, `outcome` or `decision`.
    pub event: String,
    /// Joins an intent to its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    pub account: String,
    pub rule: String,
    pub key_id: i64,
    #[serde(default)]
    pub key_name: String,
    pub action: String,
    /// Before → after of each field the action changes.
    #[serde(default)]
    pub changes: Vec<AuditChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub dry_run: bool,
    /// Scheduled rules: start of the period (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_quota_at_poll: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_quota_at_read: Option<i64>,
    /// `used_quota` on the read-back after the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_quota_after: Option<i64>,
    /// Milliseconds between the fresh read and the (last) PUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_to_write_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

impl From<&FieldChange> for AuditChange {
    fn from(change: &FieldChange) -> AuditChange {
        AuditChange {
            field: change.field.to_owned(),
            before: change.before.clone(),
            after: change.after.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LedgerEntry {
    Grant {
        rule: String,
        account: String,
        key_id: i64,
        period: i64,
    },
    Evaluated {
        rule: String,
        account: String,
        period: i64,
    },
}

/// What `load` found: the history to evaluate with and the intents still without outcome.
#[derive(Default)]
pub struct LoadedState {
    pub history: PolicyHistory,
    pub pending_intents: Vec<AuditEntry>,
    pub key_counts: HashMap<String, usize>,
    /// Lines that could not be parsed (a torn last line after a crash), for a warning.
    pub skipped_lines: usize,
}

/// The open state directory. Holds the lock for as long as it lives.
pub struct StateStore {
    dir: PathBuf,
    _lock: Option<File>,
}

impl StateStore {
    /// Creates the directory if needed and takes the lock (the daemon).
    pub fn open_locked(dir: &Path) -> Result<StateStore, StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| io_error(dir, error))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|error| io_error(dir, format!("cannot open {LOCK_FILE}: {error}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(io_error(dir, format!("cannot lock {LOCK_FILE}: {error}")))
            }
        }
        Ok(StateStore {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// Reads without locking or creating anything (`plan`); a missing directory is empty state.
    pub fn open_read_only(dir: &Path) -> StateStore {
        StateStore {
            dir: dir.to_path_buf(),
            _lock: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rebuilds the history: cooldowns from audit outcomes newer than `cooldown_seconds`,
    /// grants and evaluated periods from the ledger, pending intents from unmatched intents.
    pub fn load(&self, now: i64, cooldown_seconds: i64) -> Result<LoadedState, StateError> {
        let mut history = PolicyHistory::default();
        let mut skipped_lines = 0;
        let mut intents: BTreeMap<String, AuditEntry> = BTreeMap::new();
        for line in read_lines(&self.dir.join(AUDIT_FILE))? {
            let Ok(entry) = serde_json::from_str::<AuditEntry>(&line) else {
                skipped_lines += 1;
                continue;
            };
            match entry.event.as_str() {
                "intent" => {
                    if let Some(id) = entry.action_id.clone() {
                        intents.insert(id, entry);
                    }
                }
                "outcome" | "decision" => {
                    if let Some(id) = &entry.action_id {
                        intents.remove(id);
                    }
                    let attempted = entry
                        .outcome
                        .as_deref()
                        .is_some_and(|outcome| ATTEMPT_OUTCOMES.contains(&outcome));
                    if attempted && !entry.dry_run && entry.unix_time > now - cooldown_seconds {
                        history.record_attempt(
                            &entry.rule,
                            &entry.account,
                            entry.key_id,
                            entry.unix_time,
                        );
                    }
                }
                _ => skipped_lines += 1,
            }
        }
        for line in read_lines(&self.dir.join(LEDGER_FILE))? {
            match serde_json::from_str::<LedgerEntry>(&line) {
                Ok(LedgerEntry::Grant {
                    rule,
                    account,
                    key_id,
                    period,
                }) => history.record_grant(&rule, &account, key_id, period),
                Ok(LedgerEntry::Evaluated {
                    rule,
                    account,
                    period,
                }) => history.record_period_evaluated(&rule, &account, period),
                Err(_) => skipped_lines += 1,
            }
        }
        let pending_intents: Vec<AuditEntry> = intents.into_values().collect();
        for intent in &pending_intents {
            history.mark_pending(&intent.account, intent.key_id);
        }
        let key_counts = match std::fs::read(self.dir.join(KEY_COUNTS_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => HashMap::new(),
        };
        Ok(LoadedState {
            history,
            pending_intents,
            key_counts,
            skipped_lines,
        })
    }

    /// Appends one audit line and syncs it to disk.
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), StateError> {
        let line = serde_json::to_string(entry).expect("an audit entry serializes");
        append_synced(&self.dir.join(AUDIT_FILE), &line)
    }

    pub fn append_grant(
        &self,
        rule: &str,
        account: &str,
        key_id: i64,
        period: i64,
    ) -> Result<(), StateError> {
        self.append_ledger(&LedgerEntry::Grant {
            rule: rule.to_owned(),
            account: account.to_owned(),
            key_id,
            period,
        })
    }

    pub fn append_period_evaluated(
        &self,
        rule: &str,
        account: &str,
        period: i64,
    ) -> Result<(), StateError> {
        self.append_ledger(&LedgerEntry::Evaluated {
            rule: rule.to_owned(),
            account: account.to_owned(),
            period,
        })
    }

    fn append_ledger(&self, entry: &LedgerEntry) -> Result<(), StateError> {
        let line = serde_json::to_string(entry).expect("a ledger entry serializes");
        append_synced(&self.dir.join(LEDGER_FILE), &line)
    }

    /// Rewrites the ledger with only what can still matter (the latest evaluated period of each
    /// rule and account, and the grants of it or later).
    pub fn compact_ledger(&self, history: &PolicyHistory) -> Result<(), StateError> {
        let mut text = String::new();
        for (rule, account, period) in history.evaluated_periods() {
            text.push_str(
                &serde_json::to_string(&LedgerEntry::Evaluated {
                    rule,
                    account,
                    period,
                })
                .expect("serializes"),
            );
            text.push('\n');
        }
        for (rule, account, key_id, period) in history.current_grants() {
            text.push_str(
                &serde_json::to_string(&LedgerEntry::Grant {
                    rule,
                    account,
                    key_id,
                    period,
                })
                .expect("serializes"),
            );
            text.push('\n');
        }
        replace_synced(&self.dir, LEDGER_FILE, text.as_bytes())
    }

    pub fn save_key_counts(&self, counts: &HashMap<String, usize>) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(counts).expect("counts serialize");
        replace_synced(&self.dir, KEY_COUNTS_FILE, &bytes)
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>, StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(path, error)),
    };
    let mut lines = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|error| io_error(path, error))?;
        // A torn line may not even be UTF-8; it is skipped like any unparsable line.
        let text = String::from_utf8_lossy(&line).trim().to_owned();
        if !text.is_empty() {
            lines.push(text);
        }
    }
    Ok(lines)
}

fn append_synced(path: &Path, line: &str) -> Result<(), StateError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| io_error(path, error))?;
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    file.write_all(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(|error| io_error(path, error))
}

/// Writes `name` atomically: a synced temporary file renamed over it, then the directory synced.
fn replace_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let temporary = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|error| io_error(&temporary, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error(&temporary, error))?;
    std::fs::rename(&temporary, &target).map_err(|error| io_error(&target, error))?;
    if let Ok(directory) = File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: &str, id: &str, outcome: Option<&str>, at: i64) -> AuditEntry {
        AuditEntry {
            time: String::new(),
            unix_time: at,
            event: event.into(),
            action_id: Some(id.into()),
            account: "main".into(),
            rule: "r".into(),
            key_id: 7,
            key_name: "k".into(),
            action: "disable".into(),
            changes: Vec::new(),
            outcome: outcome.map(str::to_owned),
            detail: None,
            dry_run: false,
            period: None,
            used_quota_at_poll: None,
            used_quota_at_read: None,
            used_quota_after: None,
            read_to_write_ms: None,
            reconciled: false,
        }
    }

    #[test]
    fn an_intent_without_outcome_is_pending_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open_locked(dir.path()).unwrap();
        store
            .append_audit(&entry("intent", "a", None, 100))
            .unwrap();
        store
            .append_audit(&entry("outcome", "a", Some("applied"), 101))
            .unwrap();
        store
            .append_audit(&entry("intent", "b", None, 200))
            .unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(AUDIT_FILE))
            .unwrap();
        file.write_all(b"{\"time\":\"2026-").unwrap();
        let loaded = store.load(300, 1_000).unwrap();
        assert_eq!(loaded.pending_intents.len(), 1);
        assert_eq!(loaded.pending_intents[0].action_id.as_deref(), Some("b"));
        assert!(loaded.history.is_pending("main", 7));
        assert_eq!(loaded.history.last_attempt("r", "main", 7), Some(101));
        assert_eq!(loaded.skipped_lines, 1);
    }

    #[test]
    fn the_lock_keeps_a_second_instance_out() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateStore::open_locked(dir.path()).unwrap();
        assert!(matches!(
            StateStore::open_locked(dir.path()),
            Err(StateError::Locked { .. })
        ));
    }

    #[test]
    fn the_ledger_survives_compaction_with_only_current_periods() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open_locked(dir.path()).unwrap();
        store.append_period_evaluated("r", "main", 100).unwrap();
        store.append_grant("r", "main", 1, 100).unwrap();
        store.append_period_evaluated("r", "main", 200).unwrap();
        store.append_grant("r", "main", 1, 200).unwrap();
        let loaded = store.load(300, 0).unwrap();
        store.compact_ledger(&loaded.history).unwrap();
        let reloaded = store.load(300, 0).unwrap().history;
        assert!(reloaded.was_granted("r", "main", 1, 200));
        assert!(!reloaded.was_granted("r", "main", 1, 100));
        assert_eq!(reloaded.last_evaluated_period("r", "main"), Some(200));
    }
}
