//! Request budgets: token buckets that space out management API requests, one per server and,
//! where an account sets its own `requests_per_minute`, one per account as a cap on its share.
//!
//! new-api limits every `/api` route together per client IP (180 or 360 requests per 180 s by
//! default, and CometAPI's value is unknown), and a daemon shares that budget with the operator's
//! other tools behind the same address. Accounts on one server (same scheme, host and port) are
//! all the same client to it, so they draw from one [`ServerBudget`]: it refills at the largest
//! `requests_per_minute` among them (`[poll] requests_per_minute` unless an account raises it)
//! and holds at most one minute's worth, so the worst case in any 180 s window is four minutes'
//! worth: 120 requests at the default 30/min, well under the server's 180, however many accounts
//! share it. An account whose own `requests_per_minute` is lower has a bucket of its own too,
//! which caps its share. Waiting requests are served first come, first served, and
//! each account has at most one request waiting, so accounts take turns: the budget is split
//! fairly between those that are busy. A 429 pauses the whole server's budget until the server's
//! `Retry-After` has passed. [`BudgetPool`] hands out the per-server budgets.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::error::ApiError;

/// One server's budget, shared by every account on it.
#[derive(Debug)]
pub struct ServerBudget {
    bucket: RequestBudget,
    /// Held while a request waits for the bucket: tokio's mutex queues waiters in order, which
    /// makes the accounts take turns.
    turn: tokio::sync::Mutex<()>,
}

impl ServerBudget {
    pub fn per_minute(requests_per_minute: u32) -> ServerBudget {
        ServerBudget {
            bucket: RequestBudget::per_minute(requests_per_minute),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    async fn acquire(&self, cancel: &CancellationToken) -> Result<(), ApiError> {
        let _turn = tokio::select! {
            _ = cancel.cancelled() => return Err(ApiError::Cancelled),
            turn = self.turn.lock() => turn,
        };
        self.bucket.acquire(cancel).await
    }
}

/// The budget one account draws from: its server's, and its own cap when it has one.
#[derive(Debug, Clone)]
pub struct AccountBudget {
    server: Arc<ServerBudget>,
    own_cap: Option<Arc<RequestBudget>>,
}

impl AccountBudget {
    /// An account alone on its server at `requests_per_minute`.
    pub fn alone(requests_per_minute: u32) -> AccountBudget {
        AccountBudget {
            server: Arc::new(ServerBudget::per_minute(requests_per_minute)),
            own_cap: None,
        }
    }

    /// Waits until one request may be sent (the account's cap first, then the server's turn
    /// and budget), then takes it. Returns `Cancelled` on shutdown.
    pub async fn acquire(&self, cancel: &CancellationToken) -> Result<(), ApiError> {
        if let Some(own_cap) = &self.own_cap {
            own_cap.acquire(cancel).await?;
        }
        self.server.acquire(cancel).await
    }

    /// A 429: holds back every account of this server until `duration` from now.
    pub fn pause_server_for(&self, duration: Duration) {
        self.server.bucket.pause_for(duration);
    }

    /// Whether `other` draws from the same server budget.
    pub fn shares_server_with(&self, other: &AccountBudget) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
    }
}

/// The per-server budgets of one process, keyed by origin (`scheme://host:port`).
#[derive(Debug, Default)]
pub struct BudgetPool {
    servers: Mutex<HashMap<String, (u32, Arc<ServerBudget>)>>,
}

impl BudgetPool {
    /// The budgets of these accounts (`base_url`, `requests_per_minute`): one per server, at the
    /// largest rate among its accounts.
    pub fn for_accounts<'a>(accounts: impl IntoIterator<Item = (&'a str, u32)>) -> BudgetPool {
        let mut rates: HashMap<String, u32> = HashMap::new();
        for (base_url, requests_per_minute) in accounts {
            let rate = rates.entry(origin_of(base_url)).or_insert(0);
            *rate = (*rate).max(requests_per_minute);
        }
        let servers = rates
            .into_iter()
            .map(|(origin, rate)| (origin, (rate, Arc::new(ServerBudget::per_minute(rate)))))
            .collect();
        BudgetPool {
            servers: Mutex::new(servers),
        }
    }

    /// The budget of an account at `base_url`: its server's, plus a cap of its own when
    /// `requests_per_minute` is below the server's rate. A server the pool was not built with
    /// gets a budget at this account's rate.
    pub fn budget_for(&self, base_url: &str, requests_per_minute: u32) -> AccountBudget {
        let (server_rate, server) = {
            let mut servers = self
                .servers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let (rate, server) = servers.entry(origin_of(base_url)).or_insert_with(|| {
                (
                    requests_per_minute,
                    Arc::new(ServerBudget::per_minute(requests_per_minute)),
                )
            });
            (*rate, Arc::clone(server))
        };
        let own_cap = (requests_per_minute < server_rate)
            .then(|| Arc::new(RequestBudget::per_minute(requests_per_minute)));
        AccountBudget { server, own_cap }
    }
}

/// `scheme://host:port` of a URL, with the scheme's default port made explicit, so
/// `https://h` and `https://h:443/x` are one server. A URL that does not parse is its own origin.
pub fn origin_of(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(url) => format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default().to_ascii_lowercase(),
            url.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => base_url.to_owned(),
    }
}

/// A token bucket with a pause.
#[derive(Debug)]
pub struct RequestBudget {
    refill_per_second: f64,
    capacity: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    refilled_at: Instant,
    paused_until: Option<Instant>,
}

impl RequestBudget {
    pub fn per_minute(requests_per_minute: u32) -> RequestBudget {
        let requests_per_minute = f64::from(requests_per_minute.max(1));
        RequestBudget {
            refill_per_second: requests_per_minute / 60.0,
            capacity: requests_per_minute,
            state: Mutex::new(BucketState {
                tokens: requests_per_minute,
                refilled_at: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// Waits until one request may be sent, then takes it. Returns `Cancelled` on shutdown.
    pub async fn acquire(&self, cancel: &CancellationToken) -> Result<(), ApiError> {
        loop {
            let wait = self.try_take(Instant::now());
            let Some(wait) = wait else { return Ok(()) };
            tokio::select! {
                _ = cancel.cancelled() => return Err(ApiError::Cancelled),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Holds every request back until `duration` from now (a 429's `Retry-After`).
    pub fn pause_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.paused_until = Some(
            state
                .paused_until
                .map_or(until, |current| current.max(until)),
        );
    }

    /// Takes a token and returns `None`, or returns how long to wait before trying again.
    fn try_take(&self, now: Instant) -> Option<Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(until) = state.paused_until {
            if now < until {
                return Some(until - now);
            }
            state.paused_until = None;
        }
        let elapsed = now
            .saturating_duration_since(state.refilled_at)
            .as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.refill_per_second).min(self.capacity);
        state.refilled_at = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            return None;
        }
        let missing = 1.0 - state.tokens;
        Some(
            Duration::from_secs_f64(missing / self.refill_per_second).max(Duration::from_millis(1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_one_minute_then_refills_at_the_configured_rate() {
        let budget = RequestBudget::per_minute(60);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        for _ in 0..60 {
            budget.acquire(&cancel).await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_millis(10),
            "the first minute's worth is a burst"
        );
        budget.acquire(&cancel).await.unwrap();
        budget.acquire(&cancel).await.unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1990) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_requests_until_it_has_passed() {
        let budget = RequestBudget::per_minute(600);
        let cancel = CancellationToken::new();
        budget.pause_for(Duration::from_secs(30));
        let start = Instant::now();
        budget.acquire(&cancel).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn accounts_of_one_server_share_its_budget_and_take_turns() {
        let pool = BudgetPool::for_accounts([
            ("https://api.example.com", 60),
            ("https://api.example.com:8443", 60),
        ]);
        let cancel = CancellationToken::new();
        let accounts: Vec<AccountBudget> = (0..3)
            .map(|_| pool.budget_for("https://api.example.com", 60))
            .collect();
        let elsewhere = pool.budget_for("https://api.example.com:8443", 60);
        assert!(accounts[0].shares_server_with(&accounts[2]));
        assert!(
            accounts[0].shares_server_with(&pool.budget_for("https://API.example.com:443/", 60))
        );
        assert!(!accounts[0].shares_server_with(&elsewhere));
        // Drain the shared burst, then let the three accounts compete for 30 more requests.
        for _ in 0..60 {
            accounts[0].acquire(&cancel).await.unwrap();
        }
        let start = Instant::now();
        let granted = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (index, budget) in accounts.iter().cloned().enumerate() {
            let (granted, cancel) = (Arc::clone(&granted), cancel.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    budget.acquire(&cancel).await.unwrap();
                    granted.lock().unwrap().push(index);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // 30 requests at one per second: the server's rate, not three times it.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(29), "{elapsed:?}");
        let order = granted.lock().unwrap().clone();
        for window in order.chunks(3) {
            let mut sorted = window.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2], "accounts take turns: {order:?}");
        }
        // The other port has a budget of its own, untouched.
        let before = Instant::now();
        elsewhere.acquire(&cancel).await.unwrap();
        assert!(before.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_account_of_the_server_and_a_cap_limits_one_share() {
        // The server's rate is the largest of its accounts'; the other account is capped.
        let pool = BudgetPool::for_accounts([
            ("http://127.0.0.1:3000", 600),
            ("http://127.0.0.1:3000", 6),
        ]);
        let cancel = CancellationToken::new();
        let first = pool.budget_for("http://127.0.0.1:3000", 600);
        let capped = pool.budget_for("http://127.0.0.1:3000", 6);
        first.pause_server_for(Duration::from_secs(20));
        let start = Instant::now();
        capped.acquire(&cancel).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(20),
            "the pause holds the other account too"
        );
        // The capped account's own bucket (6, refilled during the pause) runs dry; the next
        // request waits for its own refill (10 s), while the uncapped one still goes at once.
        for _ in 0..6 {
            capped.acquire(&cancel).await.unwrap();
        }
        let before = Instant::now();
        first.acquire(&cancel).await.unwrap();
        assert!(before.elapsed() < Duration::from_millis(10));
        capped.acquire(&cancel).await.unwrap();
        assert!(
            before.elapsed() >= Duration::from_secs(9),
            "{:?}",
            before.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_wait() {
        let budget = RequestBudget::per_minute(1);
        let cancel = CancellationToken::new();
        budget.acquire(&cancel).await.unwrap();
        cancel.cancel();
        assert!(matches!(
            budget.acquire(&cancel).await,
            Err(ApiError::Cancelled)
        ));
    }
}
