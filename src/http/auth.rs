//! HTTP basic authentication against the web config's `basic_auth_users` (bcrypt hashes).
//!
//! bcrypt is slow on purpose (about 70 ms at cost 10), so:
//! - a successful check is cached, keyed by an HMAC (with a key made at start) of the user, the
//!   stored hash and the password: a cached entry can only ever let the very same credentials
//!   in, and the cache holds no password. It is bounded ([`MAX_CACHED_CREDENTIALS`]);
//! - a cached credential is answered at once, without waiting for anything, so a flood of
//!   wrong passwords cannot delay a scrape whose credentials were accepted before;
//! - at most [`MAX_CONCURRENT_PASSWORD_CHECKS`] bcrypt checks run at a time, on blocking
//!   threads (never on the async workers that serve scrapes); a request that cannot get a
//!   turn within [`PASSWORD_CHECK_QUEUE_TIMEOUT`] is answered 503;
//! - an unknown user is checked against a hash of the same cost, so response times do not
//!   tell which user names exist (as exporter-toolkit does).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hyper::header::HeaderValue;
use ring::hmac;
use tokio::sync::Semaphore;

use crate::config::BasicAuthUser;
use crate::secret::Secret;

/// Two checks at once use at most two cores for at most ~70 ms each (cost 10); more would
/// only let a password flood take more CPU from the pollers and the scrapes.
pub const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 2;
/// A few Prometheus servers and people; 256 distinct good credentials is far more than that.
pub const MAX_CACHED_CREDENTIALS: usize = 256;
/// Longer than a scrape timeout is useless: answer 503 and let the client retry.
pub const PASSWORD_CHECK_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// The dummy hash for unknown users is made at start; above this cost it would delay start-up
/// by seconds.
const MAX_DUMMY_HASH_COST: u32 = 12;

/// The outcome of a credential check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Missing, malformed or wrong credentials: 401.
    Denied,
    /// Too many password checks waiting: 503.
    Busy,
}

pub struct BasicAuth {
    users: HashMap<String, Secret>,
    unknown_user_hash: Secret,
    cache_key: hmac::Key,
    cache: Mutex<CredentialCache>,
    checks: Arc<Semaphore>,
    bcrypt_checks: AtomicU64,
}

/// HMAC-SHA256 tags of accepted credentials, oldest evicted first.
#[derive(Default)]
struct CredentialCache {
    entries: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl CredentialCache {
    fn contains(&self, tag: &[u8; 32]) -> bool {
        self.entries.contains(tag)
    }

    fn insert(&mut self, tag: [u8; 32]) {
        if !self.entries.insert(tag) {
            return;
        }
        self.order.push_back(tag);
        while self.order.len() > MAX_CACHED_CREDENTIALS {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

impl BasicAuth {
    /// `users` must not be empty. Makes the dummy hash for unknown users (one bcrypt hash at
    /// the highest configured cost, capped) and a random cache key.
    pub fn new(users: &[BasicAuthUser]) -> BasicAuth {
        let rng = ring::rand::SystemRandom::new();
        let cache_key =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system has randomness");
        let cost = users
            .iter()
            .map(|user| user.cost)
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST)
            .min(MAX_DUMMY_HASH_COST);
        let mut random_password = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut random_password)
            .expect("the system has randomness");
        let unknown_user_hash = bcrypt::hash(random_password, cost)
            .map(Secret::new)
            .expect("bcrypt hashes 32 bytes");
        BasicAuth {
            users: users
                .iter()
                .map(|user| (user.name.clone(), user.hash.clone()))
                .collect(),
            unknown_user_hash,
            cache_key,
            cache: Mutex::new(CredentialCache::default()),
            checks: Arc::new(Semaphore::new(MAX_CONCURRENT_PASSWORD_CHECKS)),
            bcrypt_checks: AtomicU64::new(0),
        }
    }

    /// bcrypt comparisons run so far (for tests and the benchmark).
    pub fn bcrypt_checks(&self) -> u64 {
        self.bcrypt_checks.load(Ordering::Relaxed)
    }

    /// Checks an `Authorization` header.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Verdict::Denied;
        };
        let known_hash = std::str::from_utf8(&user)
            .ok()
            .and_then(|name| self.users.get(name));
        let hash = known_hash.unwrap_or(&self.unknown_user_hash).clone();
        let tag = self.cache_tag(&user, hash.expose(), &password);
        if known_hash.is_some() && self.lock_cache().contains(&tag) {
            return Verdict::Allowed;
        }
        let permit = match tokio::time::timeout(
            PASSWORD_CHECK_QUEUE_TIMEOUT,
            Arc::clone(&self.checks).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => return Verdict::Busy,
        };
        self.bcrypt_checks.fetch_add(1, Ordering::Relaxed);
        let matched = tokio::task::spawn_blocking(move || {
            let matched = bcrypt::verify(&password, hash.expose()).unwrap_or(false);
            drop(permit);
            matched
        })
        .await
        .unwrap_or(false);
        if !(matched && known_hash.is_some()) {
            return Verdict::Denied;
        }
        self.lock_cache().insert(tag);
        Verdict::Allowed
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, CredentialCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// HMAC of length-prefixed user, hash and password: no two different triples share a tag.
    fn cache_tag(&self, user: &[u8], hash: &str, password: &[u8]) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.cache_key);
        for part in [user, hash.as_bytes(), password] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let mut tag = [0u8; 32];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }
}

/// `Basic base64(user:password)` → (user, password) as bytes; `None` if malformed.
fn parse_basic(header: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = header.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|byte| *byte == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COST: u32 = 4;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn auth() -> BasicAuth {
        BasicAuth::new(&[BasicAuthUser {
            name: "prometheus".into(),
            hash: Secret::new(bcrypt::hash("right horse", COST).unwrap()),
            cost: COST,
        }])
    }

    #[tokio::test]
    async fn a_good_password_is_checked_once_then_served_from_the_cache() {
        let auth = auth();
        let good = header("prometheus", "right horse");
        assert_eq!(auth.check(Some(&good)).await, Verdict::Allowed);
        assert_eq!(auth.bcrypt_checks(), 1);
        assert_eq!(auth.check(Some(&good)).await, Verdict::Allowed);
        assert_eq!(
            auth.bcrypt_checks(),
            1,
            "the second check came from the cache"
        );
    }

    #[tokio::test]
    async fn a_cached_entry_never_lets_another_password_or_user_in() {
        let auth = auth();
        assert_eq!(
            auth.check(Some(&header("prometheus", "right horse"))).await,
            Verdict::Allowed
        );
        for (user, password) in [
            ("prometheus", "right hors"),
            ("prometheus", "right horse "),
            ("prometheus", ""),
            ("prometheu", "sright horse"),
            ("other", "right horse"),
        ] {
            assert_eq!(
                auth.check(Some(&header(user, password))).await,
                Verdict::Denied,
                "{user}:{password}"
            );
        }
        // Wrong passwords are never cached: each costs a bcrypt check.
        let before = auth.bcrypt_checks();
        assert_eq!(
            auth.check(Some(&header("prometheus", "wrong"))).await,
            Verdict::Denied
        );
        assert_eq!(
            auth.check(Some(&header("prometheus", "wrong"))).await,
            Verdict::Denied
        );
        assert_eq!(auth.bcrypt_checks(), before + 2);
    }

    #[tokio::test]
    async fn malformed_headers_are_denied_without_a_bcrypt_check() {
        let auth = auth();
        for value in [
            "Bearer abc",
            "Basic",
            "Basic !!!notbase64",
            "Basic cHJvbWV0aGV1cw==", // "prometheus", no colon
        ] {
            assert_eq!(
                auth.check(Some(&HeaderValue::from_static(value))).await,
                Verdict::Denied,
                "{value}"
            );
        }
        assert_eq!(auth.check(None).await, Verdict::Denied);
        assert_eq!(auth.bcrypt_checks(), 0);
    }

    #[tokio::test]
    async fn the_scheme_is_case_insensitive_and_the_password_may_hold_colons() {
        let auth = BasicAuth::new(&[BasicAuthUser {
            name: "u".into(),
            hash: Secret::new(bcrypt::hash("a:b:c", COST).unwrap()),
            cost: COST,
        }]);
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:a:b:c");
        let value = HeaderValue::from_str(&format!("bAsIc {encoded}")).unwrap();
        assert_eq!(auth.check(Some(&value)).await, Verdict::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_check_slot_taken_a_cached_credential_is_still_answered_at_once() {
        let auth = auth();
        let good = header("prometheus", "right horse");
        assert_eq!(auth.check(Some(&good)).await, Verdict::Allowed);
        // A flood holds both bcrypt slots.
        let held = Arc::clone(&auth.checks)
            .acquire_many_owned(MAX_CONCURRENT_PASSWORD_CHECKS as u32)
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(auth.check(Some(&good)).await, Verdict::Allowed);
        assert_eq!(started.elapsed(), Duration::ZERO, "no wait for a slot");
        // An uncached password waits for a slot, and gives up after the queue timeout.
        let other = header("prometheus", "not cached");
        assert_eq!(auth.check(Some(&other)).await, Verdict::Busy);
        assert!(started.elapsed() >= PASSWORD_CHECK_QUEUE_TIMEOUT);
        drop(held);
        assert_eq!(auth.check(Some(&other)).await, Verdict::Denied);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_oldest() {
        let auth = auth();
        let tag = |index: usize| auth.cache_tag(b"u", "h", index.to_string().as_bytes());
        let mut cache = CredentialCache::default();
        for index in 0..(MAX_CACHED_CREDENTIALS + 10) {
            cache.insert(tag(index));
            cache.insert(tag(index));
        }
        assert_eq!(cache.len(), MAX_CACHED_CREDENTIALS);
        assert_eq!(cache.order.len(), MAX_CACHED_CREDENTIALS);
        assert!(!cache.contains(&tag(9)));
        assert!(cache.contains(&tag(10)));
        assert!(cache.contains(&tag(MAX_CACHED_CREDENTIALS + 9)));
    }
}
