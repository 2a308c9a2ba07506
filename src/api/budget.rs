//! `RequestBudget`: a per-account token bucket that spaces out management API requests.
//!
//! new-api limits every `/api` route together per client IP (180 or 360 requests per 180 s by
//! default, and CometAPI's value is unknown), and a daemon shares that budget with the operator's
//! other tools behind the same address. The bucket refills at `requests_per_minute` and holds at
//! most one minute's worth, so the worst case in any 180 s window is four minutes' worth: 120
//! requests at the default 30/min, well under the server's 180. A 429 pauses the bucket until the
//! server's `Retry-After` has passed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::error::ApiError;

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

    /// How long `requests` more requests would wait from now, if nothing else drew from the
    /// budget: a pause first, then whatever the bucket does not hold at the refill rate.
    pub fn estimated_wait(&self, requests: u64) -> Duration {
        let now = Instant::now();
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let paused = state
            .paused_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let elapsed = now
            .saturating_duration_since(state.refilled_at)
            .as_secs_f64();
        let tokens = (state.tokens + elapsed * self.refill_per_second).min(self.capacity);
        let missing = (requests as f64 - tokens).max(0.0);
        paused + Duration::from_secs_f64(missing / self.refill_per_second)
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

/// How long `requests` take through a full budget of `requests_per_minute`: the bucket's minute
/// of burst is free, every further request waits its share of a minute. What one poll costs in
/// time at the configured rate.
pub fn time_from_full_budget(requests_per_minute: u32, requests: u64) -> Duration {
    let rate = u64::from(requests_per_minute.max(1));
    let beyond_burst = requests.saturating_sub(rate);
    Duration::from_secs_f64(beyond_burst as f64 * 60.0 / rate as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_within_the_burst_costs_no_wait() {
        assert_eq!(time_from_full_budget(30, 30), Duration::ZERO);
        assert_eq!(time_from_full_budget(30, 31), Duration::from_secs(2));
        // 10,000 keys: 100 pages and the status request at 30/min.
        assert_eq!(time_from_full_budget(30, 101), Duration::from_secs(142));
    }

    #[tokio::test(start_paused = true)]
    async fn the_estimate_counts_what_the_bucket_no_longer_holds() {
        let budget = RequestBudget::per_minute(60);
        let cancel = CancellationToken::new();
        assert_eq!(budget.estimated_wait(60), Duration::ZERO);
        for _ in 0..50 {
            budget.acquire(&cancel).await.unwrap();
        }
        assert_eq!(budget.estimated_wait(10), Duration::ZERO);
        assert_eq!(budget.estimated_wait(15), Duration::from_secs(5));
        budget.pause_for(Duration::from_secs(30));
        assert_eq!(budget.estimated_wait(15), Duration::from_secs(35));
    }

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
