//! Benchmark: rendering and compressing the per-key families of 100 000 keys, the work done
//! after every complete poll. Run with `cargo bench --bench render`; to compare compression
//! levels, change `COMPRESSION_LEVEL` in `src/exposition.rs` and run it again.

use std::sync::Arc;
use std::time::Instant;

use cometapi_keymon::exposition;
use cometapi_keymon::snapshot::Snapshot;

mod common;

fn main() {
    let keys = common::synthetic_keys(100_000);
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
