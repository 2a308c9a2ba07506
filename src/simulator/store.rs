//! The simulator's mutable state: the key table (a `BTreeMap` by id plus, per owner, the ascending
//! list of live ids so a page is O(page) by index arithmetic), the relay-side consumption rules
//! (§6 of the reference: lazy status flips, overdraft, refunds), the request log, the fault queue
//! and the sliding-log rate limiters. Everything here is synchronous; the server holds the one
//! `Mutex<SharedState>` only while it touches it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::account::{AccountState, UsageRecord};
use super::random::SplitMix64;
use super::token::{SimToken, STATUS_ENABLED, STATUS_EXHAUSTED, STATUS_EXPIRED};
use super::{
    Fault, FaultEndpoint, FaultKind, FaultTimes, RateLimit, RecordedRequest, RelayRejection,
};

/// The key table. Soft-deleted records are removed from both indexes; ids are never reused.
pub(crate) struct Store {
    tokens: BTreeMap<i64, SimToken>,
    live_ids_by_user: HashMap<i64, Vec<i64>>,
    next_id: i64,
    key_generator: SplitMix64,
}

impl Store {
    pub(crate) fn new(seeded: Vec<SimToken>, first_free_id: i64) -> Store {
        let mut store = Store {
            tokens: BTreeMap::new(),
            live_ids_by_user: HashMap::new(),
            next_id: first_free_id,
            key_generator: SplitMix64::from_entropy(),
        };
        for token in seeded {
            store.next_id = store.next_id.max(token.id + 1);
            store.index_insert(token.user_id, token.id);
            store.tokens.insert(token.id, token);
        }
        store
    }

    fn index_insert(&mut self, user_id: i64, id: i64) {
        let ids = self.live_ids_by_user.entry(user_id).or_default();
        match ids.last() {
            Some(last) if *last > id => {
                if let Err(position) = ids.binary_search(&id) {
                    ids.insert(position, id);
                }
            }
            _ => ids.push(id),
        }
    }

    fn index_remove(&mut self, user_id: i64, id: i64) {
        if let Some(ids) = self.live_ids_by_user.get_mut(&user_id) {
            if let Ok(position) = ids.binary_search(&id) {
                ids.remove(position);
            }
        }
    }

    /// A fresh 48-character key from the server's alphabet.
    pub(crate) fn generate_key(&mut self) -> String {
        self.key_generator.generated_key()
    }

    /// Inserts with the next id (auto-increment); returns the id.
    pub(crate) fn insert(&mut self, mut token: SimToken) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        token.id = id;
        if token.key.is_empty() {
            token.key = self.generate_key();
        }
        self.index_insert(token.user_id, id);
        self.tokens.insert(id, token);
        id
    }

    pub(crate) fn get(&self, id: i64) -> Option<&SimToken> {
        self.tokens.get(&id)
    }

    /// The record if it exists and belongs to `user_id` (`GetTokenByIds`).
    pub(crate) fn get_owned(&self, id: i64, user_id: i64) -> Option<&SimToken> {
        self.tokens
            .get(&id)
            .filter(|token| token.user_id == user_id)
    }

    pub(crate) fn get_owned_mut(&mut self, id: i64, user_id: i64) -> Option<&mut SimToken> {
        self.tokens
            .get_mut(&id)
            .filter(|token| token.user_id == user_id)
    }

    /// Applies `edit` to the record; the id cannot be changed, a changed owner is re-indexed.
    pub(crate) fn edit(&mut self, id: i64, edit: impl FnOnce(&mut SimToken)) -> bool {
        let Some(token) = self.tokens.get_mut(&id) else {
            return false;
        };
        let previous_owner = token.user_id;
        edit(token);
        token.id = id;
        let new_owner = token.user_id;
        if new_owner != previous_owner {
            self.index_remove(previous_owner, id);
            self.index_insert(new_owner, id);
        }
        true
    }

    /// Soft delete.
    pub(crate) fn remove(&mut self, id: i64) -> bool {
        match self.tokens.remove(&id) {
            Some(token) => {
                self.index_remove(token.user_id, id);
                true
            }
            None => false,
        }
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &SimToken> {
        self.tokens.values()
    }

    pub(crate) fn count_for_user(&self, user_id: i64) -> usize {
        self.live_ids_by_user.get(&user_id).map_or(0, Vec::len)
    }

    /// `WHERE user_id = ? ORDER BY id DESC LIMIT limit OFFSET offset`; `limit` `None` = no LIMIT.
    pub(crate) fn page_for_user(
        &self,
        user_id: i64,
        offset: usize,
        limit: Option<usize>,
    ) -> impl Iterator<Item = &SimToken> {
        let ids: &[i64] = self
            .live_ids_by_user
            .get(&user_id)
            .map_or(&[], Vec::as_slice);
        let newest_first_end = ids.len().saturating_sub(offset);
        ids[..newest_first_end]
            .iter()
            .rev()
            .take(limit.unwrap_or(usize::MAX))
            .filter_map(|id| self.tokens.get(id))
    }

    /// The live records of `user_id`, newest first (for search).
    pub(crate) fn newest_first_for_user(&self, user_id: i64) -> impl Iterator<Item = &SimToken> {
        self.page_for_user(user_id, 0, None)
    }

    /// The live ids of `user_id`, oldest first.
    pub(crate) fn ids_for_user(&self, user_id: i64) -> &[i64] {
        self.live_ids_by_user
            .get(&user_id)
            .map_or(&[], Vec::as_slice)
    }

    /// One simulated relay request on key `id` costing `quota` (negative = refund), at `now`.
    ///
    /// Mirrors `ValidateUserToken` + pre/post-consume: a key that is not enabled is refused; an
    /// expired or exhausted key is refused and, without Redis, flipped to 3/4 (with
    /// `accessed_time`); otherwise the quota moves — the overdrawing request is allowed and
    /// unlimited keys are decremented too. A refund skips validation, like the post-consume
    /// adjustment of a request that was already admitted.
    ///
    /// `wallet_empty`: the account's wallet is at or below 0, so a key that passes its own checks
    /// is still refused (`PreConsumeQuota`: "user quota is not enough"), without a status flip.
    pub(crate) fn consume(
        &mut self,
        id: i64,
        quota: i64,
        now: i64,
        redis_mode: bool,
        wallet_empty: bool,
    ) -> Result<(), RelayRejection> {
        let token = self.tokens.get_mut(&id).ok_or(RelayRejection::NotFound)?;
        if quota >= 0 {
            match token.status {
                STATUS_ENABLED => {}
                STATUS_EXPIRED => return Err(RelayRejection::Expired),
                STATUS_EXHAUSTED => return Err(RelayRejection::Exhausted),
                _ => return Err(RelayRejection::Disabled),
            }
            if token.is_expired_at(now) {
                if !redis_mode {
                    token.status = STATUS_EXPIRED;
                    token.accessed_time = now;
                }
                return Err(RelayRejection::Expired);
            }
            if !token.unlimited_quota && token.remain_quota <= 0 {
                if !redis_mode {
                    token.status = STATUS_EXHAUSTED;
                    token.accessed_time = now;
                }
                return Err(RelayRejection::Exhausted);
            }
            if wallet_empty {
                return Err(RelayRejection::WalletEmpty);
            }
        }
        token.remain_quota = token.remain_quota.saturating_sub(quota);
        token.used_quota = token.used_quota.saturating_add(quota);
        token.accessed_time = now;
        Ok(())
    }

    /// The `Churn` fault: soft-deletes the `delete` oldest live records of `user_id`, then creates
    /// `create` new ones (which land on the first page, newest first).
    pub(crate) fn churn(&mut self, user_id: i64, create: usize, delete: usize, now: i64) {
        let doomed: Vec<i64> = self
            .ids_for_user(user_id)
            .iter()
            .take(delete)
            .copied()
            .collect();
        for id in doomed {
            self.remove(id);
        }
        for _ in 0..create {
            let id = self.next_id;
            self.insert(SimToken {
                user_id,
                name: format!("churn-{id}"),
                created_time: now,
                accessed_time: now,
                remain_quota: 1_000_000,
                ..SimToken::default()
            });
        }
    }
}

/// A sliding log of admission times per client (`common/rate-limit.go` `InMemoryRateLimiter`):
/// admit while fewer than `max` entries are logged, or when the oldest is at least `window` old
/// (it is then replaced). Rejected requests are not logged.
pub(crate) struct SlidingLog<K> {
    logs: HashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq> SlidingLog<K> {
    pub(crate) fn new() -> SlidingLog<K> {
        SlidingLog {
            logs: HashMap::new(),
        }
    }

    pub(crate) fn admit(&mut self, client: K, max: u32, window: Duration, now: Instant) -> bool {
        let max = max as usize;
        if max == 0 {
            return false;
        }
        let log = self.logs.entry(client).or_default();
        while log.len() > max {
            log.pop_front();
        }
        if log.len() < max {
            log.push_back(now);
            return true;
        }
        match log.front() {
            Some(oldest) if now.saturating_duration_since(*oldest) >= window => {
                log.pop_front();
                log.push_back(now);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.logs.clear();
    }
}

/// A fault waiting in the queue with its remaining count (`None` = always).
pub(crate) struct QueuedFault {
    fault: Fault,
    remaining: Option<u32>,
}

/// Everything behind the simulator's mutex.
pub(crate) struct SharedState {
    pub(crate) store: Store,
    pub(crate) account: AccountState,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) faults: Vec<QueuedFault>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) global_limiter: SlidingLog<IpAddr>,
    pub(crate) critical_limiter: SlidingLog<IpAddr>,
    pub(crate) search_limiter: SlidingLog<i64>,
}

impl SharedState {
    pub(crate) fn new(
        store: Store,
        account: AccountState,
        rate_limit: Option<RateLimit>,
    ) -> SharedState {
        SharedState {
            store,
            account,
            requests: Vec::new(),
            faults: Vec::new(),
            rate_limit,
            global_limiter: SlidingLog::new(),
            critical_limiter: SlidingLog::new(),
            search_limiter: SlidingLog::new(),
        }
    }

    /// One relay request: the key's checks and charge ([`Store::consume`]), then the wallet's
    /// charge and the usage record. The group recorded is the key's, else the user's (an `auto`
    /// key runs in the user's group here).
    pub(crate) fn relay(
        &mut self,
        id: i64,
        model: &str,
        quota: i64,
        tokens: i64,
        now: i64,
        redis_mode: bool,
    ) -> Result<(), RelayRejection> {
        let wallet_empty = quota > 0 && self.account.wallet.quota <= 0;
        self.store
            .consume(id, quota, now, redis_mode, wallet_empty)?;
        let token = self.store.get(id).ok_or(RelayRejection::NotFound)?;
        let use_group = if token.group.is_empty() || token.group == "auto" {
            self.account.wallet.group.clone()
        } else {
            token.group.clone()
        };
        let record = UsageRecord {
            at: now,
            token_id: id,
            token_name: token.name.clone(),
            use_group,
            model_name: model.to_owned(),
            quota,
            tokens,
        };
        self.account.charge(record);
        Ok(())
    }

    pub(crate) fn push_fault(&mut self, fault: Fault) {
        let remaining = match fault.times {
            FaultTimes::Once => Some(1),
            FaultTimes::Times(count) => Some(count),
            FaultTimes::Always => None,
        };
        if remaining != Some(0) {
            self.faults.push(QueuedFault { fault, remaining });
        }
    }

    /// Takes the first queued fault that matches the request (`endpoint` `None` = a route only
    /// `FaultEndpoint::Any` matches; `page` = the parsed `p` of a list request).
    pub(crate) fn take_fault(
        &mut self,
        endpoint: Option<FaultEndpoint>,
        page: Option<i64>,
    ) -> Option<FaultKind> {
        let position = self.faults.iter().position(|queued| {
            let endpoint_matches = queued.fault.endpoint == FaultEndpoint::Any
                || Some(queued.fault.endpoint) == endpoint;
            let page_matches = queued.fault.page.is_none() || queued.fault.page == page;
            endpoint_matches && page_matches
        })?;
        let queued = &mut self.faults[position];
        let kind = queued.fault.kind.clone();
        if let Some(remaining) = queued.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                self.faults.remove(position);
            }
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(count: i64) -> Store {
        let tokens = (0..count)
            .map(|index| SimToken {
                id: 100 + index,
                user_id: 1,
                key: format!("key{index}"),
                remain_quota: 10,
                ..SimToken::default()
            })
            .collect();
        Store::new(tokens, 100)
    }

    #[test]
    fn pages_are_newest_first_and_deletes_shift_offsets() {
        let mut store = store_with(5);
        let page: Vec<i64> = store.page_for_user(1, 0, Some(2)).map(|t| t.id).collect();
        assert_eq!(page, vec![104, 103]);
        let page: Vec<i64> = store.page_for_user(1, 4, Some(2)).map(|t| t.id).collect();
        assert_eq!(page, vec![100]);
        assert_eq!(store.page_for_user(1, 9, Some(2)).count(), 0);
        assert!(store.remove(104));
        assert!(!store.remove(104));
        let page: Vec<i64> = store.page_for_user(1, 0, None).map(|t| t.id).collect();
        assert_eq!(page, vec![103, 102, 101, 100]);
        assert_eq!(
            store.insert(SimToken {
                user_id: 1,
                ..SimToken::default()
            }),
            105
        );
        assert_eq!(store.count_for_user(1), 5);
    }

    #[test]
    fn sliding_log_admits_max_per_window() {
        let mut log = SlidingLog::new();
        let start = Instant::now();
        let window = Duration::from_secs(10);
        assert!(log.admit(1, 2, window, start));
        assert!(log.admit(1, 2, window, start));
        assert!(!log.admit(1, 2, window, start + Duration::from_secs(9)));
        assert!(log.admit(2, 2, window, start));
        assert!(log.admit(1, 2, window, start + Duration::from_secs(10)));
    }
}
