//! The deterministic seeded population. The first records are hand-made edge cases (every odd
//! value a client must survive, so even a population of 30 holds all of them); the rest is a
//! realistic random mix drawn from SplitMix64. Same config and `now` → same records, byte for byte.

use super::random::SplitMix64;
use super::token::{SimToken, STATUS_DISABLED, STATUS_ENABLED, STATUS_EXHAUSTED, STATUS_EXPIRED};
use super::SimulatorConfig;

/// Id of the first seeded record.
pub const FIRST_SEEDED_ID: i64 = 1001;

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// How far back the oldest record was created.
const POPULATION_AGE: i64 = 400 * DAY;

/// Builds `config.keys` records with ids `FIRST_SEEDED_ID..`, ascending `created_time`, all owned
/// by `config.user_id`, every key a unique 48-character `[0-9a-zA-Z]` string.
///
/// No expiry of a seeded record lies within one hour of `now`, so tests that compare against the
/// clock are not flaky.
pub fn seed_tokens(config: &SimulatorConfig, now: i64) -> Vec<SimToken> {
    let mut generator = SplitMix64::new(config.seed);
    let mut used_keys = std::collections::HashSet::with_capacity(config.keys);
    let mut tokens = Vec::with_capacity(config.keys);
    let edge_cases = edge_cases(now);
    for index in 0..config.keys {
        let created_time = creation_time(index, config.keys, now, &mut generator);
        let mut token = match edge_cases.get(index) {
            Some(edit) => {
                let mut token = healthy_record(created_time, now, &mut generator);
                edit(&mut token);
                token
            }
            None => random_record(created_time, now, &mut generator),
        };
        token.id = FIRST_SEEDED_ID + index as i64;
        token.user_id = config.user_id;
        loop {
            let key = generator.generated_key();
            if used_keys.insert(key.clone()) {
                token.key = key;
                break;
            }
        }
        tokens.push(token);
    }
    tokens
}

/// How many hand-made edge-case records open the population (ids `FIRST_SEEDED_ID..`).
pub(crate) fn edge_case_count() -> usize {
    edge_cases(0).len()
}

/// Spreads creation over the last ~400 days, in id order, with some jitter, never later than an
/// hour ago.
fn creation_time(index: usize, population: usize, now: i64, generator: &mut SplitMix64) -> i64 {
    let step = (POPULATION_AGE - DAY) / population.max(1) as i64;
    let jitter = generator.between(0, (step / 2).clamp(0, HOUR));
    (now - POPULATION_AGE + index as i64 * step + jitter).min(now - HOUR)
}

/// An enabled, limited, never-expiring key that has been used a little.
fn healthy_record(created_time: i64, now: i64, generator: &mut SplitMix64) -> SimToken {
    SimToken {
        created_time,
        accessed_time: generator.between(created_time, now - MINUTE),
        remain_quota: 5_000_000,
        used_quota: 123_456,
        ..SimToken::default()
    }
}

type EdgeCase = Box<dyn Fn(&mut SimToken)>;

/// One edit per edge case, applied on top of `healthy_record`.
fn edge_cases(now: i64) -> Vec<EdgeCase> {
    let fifty_byte_name = format!("{:-<50}", "fifty-byte-name");
    vec![
        Box::new(|token| {
            token.name = "unlimited-negative-remain".into();
            token.unlimited_quota = true;
            token.remain_quota = -1_234_567;
            token.used_quota = 1_234_567;
            token.group = "default".into();
            token.model_limits_enabled = true;
            token.model_limits = "gpt-4.1,claude-sonnet-4".into();
            token.allow_ips = Some("10.0.0.0/8\n2001:db8::1".into());
        }),
        Box::new(|token| {
            token.name = "overdrawn-still-enabled".into();
            token.remain_quota = -4_200;
            token.used_quota = 504_200;
            token.allow_ips = None;
        }),
        Box::new(|token| {
            token.name = "never-used".into();
            token.accessed_time = token.created_time;
            token.used_quota = 0;
            token.remain_quota = 1_000_000;
        }),
        Box::new(|token| {
            token.name = "accessed-time-zero".into();
            token.accessed_time = 0;
            token.used_quota = 0;
        }),
        Box::new(move |token| {
            token.name = "expired-still-enabled".into();
            token.expired_time = now - 3 * DAY;
            token.accessed_time = token.created_time.max(now - 10 * DAY);
        }),
        Box::new(move |token| {
            token.name = "expired".into();
            token.status = STATUS_EXPIRED;
            token.expired_time = now - 20 * DAY;
            token.accessed_time = now - 19 * DAY;
        }),
        Box::new(|token| {
            token.name = "exhausted".into();
            token.status = STATUS_EXHAUSTED;
            token.remain_quota = 0;
            token.used_quota = 500_000;
        }),
        Box::new(|token| {
            token.name = "exhausted-still-enabled".into();
            token.remain_quota = 0;
            token.used_quota = 250_000;
        }),
        Box::new(|token| {
            token.name = "disabled".into();
            token.status = STATUS_DISABLED;
        }),
        Box::new(|token| {
            token.name = "unknown-status-7".into();
            token.status = 7;
        }),
        Box::new(move |token| {
            token.name = "expires-within-a-day".into();
            token.expired_time = now + 12 * HOUR;
        }),
        Box::new(move |token| {
            token.name = "expires-within-a-week".into();
            token.expired_time = now + 5 * DAY;
        }),
        Box::new(|token| {
            token.name = "big-numbers".into();
            token.remain_quota = 4_123_456_789_012;
            token.used_quota = 3_987_654_321_098;
            token.group = "vip".into();
        }),
        Box::new(|token| token.name = "say \"hello\"".into()),
        Box::new(|token| token.name = "C:\\keys\\prod\\".into()),
        Box::new(|token| token.name = "first line\nsecond line".into()),
        Box::new(|token| token.name = "column\ttab".into()),
        Box::new(|token| {
            token.name = "生产密钥".into();
            token.group = "vip".into();
        }),
        Box::new(|token| token.name = "🚀 launch key 🔑".into()),
        Box::new(|token| token.name = "<script>alert(1)</script> & more".into()),
        Box::new(|token| token.name = String::new()),
        Box::new(move |token| token.name = fifty_byte_name.clone()),
        Box::new(|token| {
            token.name = "model-limits-enabled-empty-list".into();
            token.model_limits_enabled = true;
            token.model_limits = String::new();
        }),
        Box::new(|token| {
            token.name = "model-limits-disabled-with-list".into();
            token.model_limits_enabled = false;
            token.model_limits = "gpt-4o-mini,o3".into();
        }),
        Box::new(|token| {
            token.name = "auto-group-cross-retry".into();
            token.group = "auto".into();
            token.cross_group_retry = true;
            token.unlimited_quota = true;
            token.remain_quota = -98_765;
            token.used_quota = 98_765;
        }),
    ]
}

const NAME_STEMS: [&str; 12] = [
    "prod",
    "staging",
    "ci-runner",
    "team-alpha",
    "team-beta",
    "batch-jobs",
    "analytics",
    "chatbot",
    "research",
    "mobile-app",
    "web-frontend",
    "data-pipeline",
];

const MODEL_LIST_CHOICES: [&str; 5] = [
    "gpt-4o",
    "gpt-4.1-mini,claude-sonnet-4",
    "gemini-2.5-pro,deepseek-v3",
    "claude-sonnet-4",
    "gpt-4o,gpt-4o-mini,o3",
];

/// A realistic record: mostly enabled, some disabled/expired/exhausted, realistic quotas
/// (500 000 units = US$1), a few restrictions.
fn random_record(created_time: i64, now: i64, generator: &mut SplitMix64) -> SimToken {
    let mut token = SimToken {
        created_time,
        name: format!(
            "{}-{}",
            generator.pick(&NAME_STEMS),
            generator.between(1, 999)
        ),
        ..SimToken::default()
    };
    let never_used = generator.percent(8);
    token.used_quota = if never_used {
        0
    } else {
        generator.between(1_000, 40_000_000)
    };
    token.accessed_time = if never_used {
        created_time
    } else {
        generator.between(created_time, now - MINUTE)
    };
    token.unlimited_quota = generator.percent(15);
    token.remain_quota = if token.unlimited_quota {
        -token.used_quota
    } else if generator.percent(3) {
        -generator.between(1, 200_000)
    } else {
        match generator.below(3) {
            0 => generator.between(0, 500_000),
            1 => generator.between(500_000, 25_000_000),
            _ => generator.between(25_000_000, 500_000_000),
        }
    };
    token.expired_time = match generator.below(10) {
        0..=6 => -1,
        7 | 8 => now + generator.between(2 * HOUR, 365 * DAY),
        _ => now - generator.between(2 * HOUR, 200 * DAY),
    };
    let roll = generator.below(100);
    token.status = if roll < 86 {
        STATUS_ENABLED
    } else if roll < 93 {
        STATUS_DISABLED
    } else if roll < 97 {
        // Only expired keys are ever flipped to 3 by the server.
        if token.is_expired_at(now) {
            STATUS_EXPIRED
        } else {
            STATUS_ENABLED
        }
    } else if !token.unlimited_quota {
        token.remain_quota = token.remain_quota.min(0);
        STATUS_EXHAUSTED
    } else {
        STATUS_ENABLED
    };
    token.group = match generator.below(100) {
        0..=59 => String::new(),
        60..=84 => "default".to_string(),
        85..=96 => "vip".to_string(),
        _ => "auto".to_string(),
    };
    token.cross_group_retry = token.group == "auto" && generator.percent(50);
    match generator.below(100) {
        0..=14 => {
            token.model_limits_enabled = true;
            token.model_limits = generator.pick(&MODEL_LIST_CHOICES).to_string();
        }
        15..=17 => token.model_limits = generator.pick(&MODEL_LIST_CHOICES).to_string(),
        _ => {}
    }
    token.allow_ips = match generator.below(100) {
        0..=84 => Some(String::new()),
        85..=89 => None,
        90..=95 => Some("203.0.113.7".to_string()),
        _ => Some("10.0.0.0/8\n192.168.1.0/24".to_string()),
    };
    token
}
