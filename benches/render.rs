//! Benchmark: rendering and compressing the per-key families of 100 000 keys, the work done
//! after every complete poll. Run with `cargo bench --bench render`; to compare compression
//! levels, change `COMPRESSION_LEVEL` in `src/exposition.rs` and run it again.

use std::sync::Arc;
use std::time::Instant;

use cometapi_keymon::exposition;
use cometapi_keymon::snapshot::{KeyState, Snapshot};

fn main() {
    let keys: Vec<KeyState> = (0..100_000i64)
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
                1_800_000_000 + index * 13
            },
            remain_quota: (index * 7_919) % 5_000_000 - 10_000,
            used_quota: (index * 104_729) % 90_000_000,
            unlimited_quota: index % 11 == 0,
            ip_restricted: index % 7 == 0,
            model_restricted: index % 13 == 0,
        })
        .collect();
    let snapshots = [Arc::new(Snapshot::new(
        "main",
        keys,
        500_000.0,
        1_790_000_000,
    ))];
    let mut text = Vec::new();
    let started = Instant::now();
    exposition::write_snapshot_families(&snapshots, &mut text).expect("writing into memory");
    println!(
        "text only:          {:>8.1} ms, {} bytes",
        started.elapsed().as_secs_f64() * 1e3,
        text.len()
    );
    for round in 1..=3 {
        let started = Instant::now();
        let rendered = exposition::render(&snapshots);
        println!(
            "render {round} (text + deflate): {:>8.1} ms, {} bytes compressed",
            started.elapsed().as_secs_f64() * 1e3,
            rendered.compressed_len()
        );
    }
}
