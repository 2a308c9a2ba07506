//! A synthetic population for the in-process benchmarks: a realistic mix of statuses, groups,
//! expiries, quotas (some negative) and restrictions, the same every run.

use cometapi_keymon::snapshot::KeyState;

pub fn synthetic_keys(count: i64) -> Vec<KeyState> {
    (0..count)
        .map(|index| KeyState {
            id: 1_000 + index,
            name: format!("team-{}-key", index % 977),
            group: ["", "default", "vip"][(index % 3) as usize].into(),
            status_code: 1 + index % 4,
            created_time: 1_700_000_000 + index * 37,
            accessed_time: 1_760_000_000 + index * 11,
            expired_time: if index % 5 == 0 {
                -1
            } else {
                1_789_000_000 + index * 23
            },
            remain_quota: (index * 7_919) % 5_000_000 - 10_000,
            used_quota: (index * 104_729) % 90_000_000,
            unlimited_quota: index % 11 == 0,
            ip_restricted: index % 7 == 0,
            model_restricted: index % 13 == 0,
        })
        .collect()
}
