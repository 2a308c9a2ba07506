//! The wall clock, read in one place. The edges (poller, policy engine, scheduler hooks, the
//! one-shot commands) call `unix_now` and pass the time down; the pure core (`snapshot`,
//! `exposition`, `policy::{rules, history, evaluate}`) never calls this module — it takes `now`
//! as a parameter, which is what makes it testable at any instant (tests/architecture.rs checks).
//! `Clock` is the daemon's clock as a value: the system clock, or one moved by an offset that a
//! test shares with the simulator.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in a UTC day (no leap seconds in Unix time).
pub const SECONDS_PER_DAY: i64 = 86_400;

/// Seconds since the Unix epoch; 0 if the system clock is before 1970.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// 00:00:00 UTC of the day that contains `unix` (also for times before 1970).
pub fn utc_day_start(unix: i64) -> i64 {
    unix - unix.rem_euclid(SECONDS_PER_DAY)
}

/// The wall clock polls read: the system clock, or (in tests) the system clock moved by a shared
/// offset, so a test can take the daemon and the simulator across midnight together.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_seconds: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock `offset` seconds off the system clock; whoever holds `offset` may move it.
    pub fn offset_by(offset: Arc<AtomicI64>) -> Clock {
        Clock {
            offset_seconds: offset,
        }
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        unix_now() + self.offset_seconds.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_starts_at_midnight_utc() {
        // 2026-12-02T00:00:00Z and one second before and after it.
        let midnight = 1_796_169_600;
        assert_eq!(utc_day_start(midnight), midnight);
        assert_eq!(utc_day_start(midnight + 1), midnight);
        assert_eq!(utc_day_start(midnight + SECONDS_PER_DAY - 1), midnight);
        assert_eq!(utc_day_start(midnight - 1), midnight - SECONDS_PER_DAY);
        assert_eq!(utc_day_start(-1), -SECONDS_PER_DAY);
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        assert!(unix_now() > 1_796_169_600);
    }
}
