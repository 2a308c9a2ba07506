//! Prometheus text exposition (format 0.0.4) of the per-key and per-account families, rendered
//! once per snapshot change and kept compressed.
//!
//! Pure: no I/O, no clock. A scrape never walks the keys: it serves `RenderedKeys`, which holds
//! the families of every account as one raw-deflate stream ended by a sync flush (so it is
//! byte-aligned and not final), plus its CRC-32 and length. `gzip_parts` frames that stream with
//! the small, per-scrape exporter-health text (as stored blocks: no compressor per scrape) into
//! a single valid gzip member without copying the cached bytes; `inflate` gives the whole text
//! back for clients that do not accept gzip (`metrics` keeps that copy only while someone asks
//! for it). At 100 000 keys the text is about 100 MB and the compressed form a few MB, which is
//! what keeps the daemon's memory flat.
//!
//! About 490 lines of code and their unit tests (over 200 lines): every family's text and its
//! escaping have one home.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use crate::account::SpendDetail;
use crate::snapshot::{KeyStatus, Snapshot};

/// Names and help of the families rendered from snapshots, in output order.
pub const SNAPSHOT_FAMILIES: [(&str, &str); 13] = [
    ("cometapi_key_info", "Key metadata; always 1. Join name and group onto other series by account and key_id."),
    ("cometapi_key_status", "Server-side status of the key: 1 for the current state, 0 for the others. The server updates it lazily; see cometapi_key_usable."),
    ("cometapi_key_usable", "1 when the key is enabled, not past its expiry and unlimited or with quota left, as of the last complete poll."),
    ("cometapi_key_remaining_quota", "Remaining quota of the key in quota units (see cometapi_quota_per_unit); may be negative. Absent for unlimited keys."),
    ("cometapi_key_used_quota", "Quota used by the key in quota units; decreases on refunds."),
    ("cometapi_key_unlimited_quota", "1 when the key has unlimited quota."),
    ("cometapi_key_expiration_timestamp_seconds", "Unix time at which the key expires. Absent for keys that never expire."),
    ("cometapi_key_created_timestamp_seconds", "Unix time at which the key was created."),
    ("cometapi_key_last_access_timestamp_seconds", "Unix time of the key's last use as recorded by the server. Absent when never recorded."),
    ("cometapi_key_ip_restricted", "1 when the key has an IP allow-list with at least one entry."),
    ("cometapi_key_model_restricted", "1 when the key is limited to a non-empty list of models."),
    ("cometapi_keys", "Number of keys per server-side status."),
    ("cometapi_quota_per_unit", "Quota units per US dollar, from the server's /api/status."),
];

/// Names, types and help of the account's money families (rendered from `Snapshot::money`), in
/// output order. A family is written only when some account has a series in it, so a server
/// without a route exports none of that route's families.
///
/// `cometapi_subscription_amount_total` is `untyped`: the contract names it with `_total` but
/// it is not a counter, and `promtool check metrics` refuses a gauge whose name ends in `_total`.
pub const ACCOUNT_FAMILIES: [(&str, &str, &str); 16] = [
    ("cometapi_account_info", "gauge", "The account's user id and group (from /api/user/self); always 1."),
    ("cometapi_account_quota", "gauge", "Wallet left in quota units (see cometapi_quota_per_unit); every key also needs the wallet; may be negative."),
    ("cometapi_account_used_quota", "gauge", "Quota spent from the wallet in quota units."),
    ("cometapi_account_requests_total", "counter", "Requests the server has counted for the account (request_count)."),
    ("cometapi_key_model_used_quota_total", "counter", "Quota spent today (since 00:00 UTC) by the key on the model in the group, the server's sum; starts again at 0 each day. Lags up to 5 minutes."),
    ("cometapi_key_model_requests_total", "counter", "Requests today (since 00:00 UTC) by the key on the model in the group; starts again at 0 each day."),
    ("cometapi_key_model_tokens_total", "counter", "Tokens today (since 00:00 UTC) by the key on the model in the group; starts again at 0 each day."),
    ("cometapi_model_used_quota_total", "counter", "Quota spent today (since 00:00 UTC) by the account on the model (servers without spend by key); starts again at 0 each day."),
    ("cometapi_model_requests_total", "counter", "Requests today (since 00:00 UTC) by the account on the model (servers without spend by key)."),
    ("cometapi_model_tokens_total", "counter", "Tokens today (since 00:00 UTC) by the account on the model (servers without spend by key)."),
    ("cometapi_subscription_info", "gauge", "The subscription's plan (title from /api/subscription/plans, empty when not listed) and status; always 1."),
    ("cometapi_subscription_amount_total", "untyped", "Quota the subscription grants (per reset period), in quota units. Not a counter."),
    ("cometapi_subscription_amount_used", "gauge", "Quota used from the subscription, in quota units."),
    ("cometapi_subscription_start_timestamp_seconds", "gauge", "Unix time at which the subscription started."),
    ("cometapi_subscription_end_timestamp_seconds", "gauge", "Unix time at which the subscription ends."),
    ("cometapi_subscription_next_reset_timestamp_seconds", "gauge", "Unix time of the subscription's next quota reset. Absent when it never resets."),
];

/// Label values longer than this are cut (at a character boundary): a key name is at most 50
/// bytes on real servers, and a hostile one must not blow up every scrape.
const MAX_LABEL_VALUE_BYTES: usize = 1024;

/// How much text is buffered before it is fed to the compressor.
const COMPRESS_CHUNK_BYTES: usize = 64 * 1024;

/// Level 1 of 9. Measured on 100 000 keys (103 MB of text, `cargo bench --bench render`):
/// level 1 renders in 0.29 s to 7.4 MB, level 3 in 0.63 s to 6.5 MB, level 6 in 1.0 s to 6.2 MB.
/// The few hundred KB saved are not worth doubling the work after every poll.
const COMPRESSION_LEVEL: u32 = 1;

/// The rendered families of every account, compressed.
#[derive(Debug, Clone)]
pub struct RenderedKeys {
    /// Raw deflate blocks, ended with a sync flush: byte-aligned, no final block.
    deflate: Bytes,
    /// CRC-32 of the uncompressed text.
    crc: u32,
    /// Length of the uncompressed text.
    text_len: u64,
}

impl RenderedKeys {
    pub fn empty() -> RenderedKeys {
        render(&[])
    }

    pub fn text_len(&self) -> u64 {
        self.text_len
    }

    pub fn compressed_len(&self) -> usize {
        self.deflate.len()
    }

    /// The parts of one gzip member holding this text followed by `tail`.
    ///
    /// The tail (a few KB of exporter-health text, different every scrape) goes in stored
    /// (uncompressed) deflate blocks: that costs a few KB on the wire and saves setting up a
    /// compressor, hundreds of KB of state, on every scrape.
    pub fn gzip_parts(&self, tail: &[u8]) -> Vec<Bytes> {
        const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        const STORED_BLOCK_MAX: usize = u16::MAX as usize;
        let blocks = tail.len().div_ceil(STORED_BLOCK_MAX).max(1);
        let mut tail_part = Vec::with_capacity(tail.len() + 5 * blocks + 8);
        // The cached stream ends byte-aligned, so a stored block's header is one whole byte:
        // BFINAL in bit 0, BTYPE 00; then LEN and its complement, little-endian.
        let mut chunks = tail.chunks(STORED_BLOCK_MAX).peekable();
        if chunks.peek().is_none() {
            tail_part.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        while let Some(chunk) = chunks.next() {
            let length = chunk.len() as u16;
            tail_part.push(u8::from(chunks.peek().is_none()));
            tail_part.extend_from_slice(&length.to_le_bytes());
            tail_part.extend_from_slice(&(!length).to_le_bytes());
            tail_part.extend_from_slice(chunk);
        }
        let mut crc = crc32fast::Hasher::new_with_initial(self.crc);
        crc.update(tail);
        tail_part.extend_from_slice(&crc.finalize().to_le_bytes());
        tail_part.extend_from_slice(&((self.text_len + tail.len() as u64) as u32).to_le_bytes());
        vec![
            Bytes::from_static(&GZIP_HEADER),
            self.deflate.clone(),
            Bytes::from(tail_part),
        ]
    }

    /// The whole text, inflated into one buffer of exactly `text_len` bytes (about 100 MB at
    /// 100 000 keys, 0.1–0.2 s).
    pub fn inflate(&self) -> Bytes {
        Bytes::from(self.inflate_to_vec())
    }

    /// `inflate` as a `Vec` whose capacity is exactly the text (tests check that).
    fn inflate_to_vec(&self) -> Vec<u8> {
        let mut text = Vec::with_capacity(self.text_len as usize);
        let mut decompress = Decompress::new(false);
        loop {
            let before_in = decompress.total_in();
            let before_out = text.len();
            if text.len() == text.capacity() {
                if before_in as usize == self.deflate.len() {
                    // Every byte in, exactly `text_len` out: done. (Reserving here would double
                    // the buffer, and zero-filling the spare half would double the memory.)
                    break;
                }
                // Only if `text_len` were wrong; never expected.
                text.reserve(COMPRESS_CHUNK_BYTES);
            }
            // Our own stream: inflating it cannot fail unless memory is corrupt.
            decompress
                .decompress_vec(
                    &self.deflate[before_in as usize..],
                    &mut text,
                    FlushDecompress::Sync,
                )
                .expect("the cached deflate stream is valid");
            if text.len() == before_out && decompress.total_in() == before_in {
                // No progress: the sync-flushed stream is exhausted.
                break;
            }
        }
        debug_assert_eq!(text.len() as u64, self.text_len);
        text
    }
}

/// Renders the families of every snapshot, grouped by family (the format requires one block
/// per family), accounts in the given order.
pub fn render(snapshots: &[Arc<Snapshot>]) -> RenderedKeys {
    let mut sink = CompressingSink::new();
    write_snapshot_families(snapshots, &mut sink).expect("writing into memory cannot fail");
    sink.finish()
}

/// Writes the families as plain text (used by `render` and by tests).
pub fn write_snapshot_families(
    snapshots: &[Arc<Snapshot>],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let accounts: Vec<String> = snapshots
        .iter()
        .map(|snapshot| escape_label_value(&snapshot.account))
        .collect();
    for (family_index, (name, help)) in SNAPSHOT_FAMILIES.iter().enumerate() {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} gauge")?;
        for (snapshot, account) in snapshots.iter().zip(&accounts) {
            write_family(family_index, name, snapshot, account, out)?;
        }
    }
    let mut block = Vec::new();
    for (family_index, (name, kind, help)) in ACCOUNT_FAMILIES.iter().enumerate() {
        block.clear();
        for (snapshot, account) in snapshots.iter().zip(&accounts) {
            write_account_family(family_index, name, snapshot, account, &mut block)?;
        }
        if !block.is_empty() {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} {kind}")?;
            out.write_all(&block)?;
        }
    }
    Ok(())
}

fn write_account_family(
    family_index: usize,
    name: &str,
    snapshot: &Snapshot,
    account: &str,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let money = &snapshot.money;
    match family_index {
        0..=3 => {
            let Some(wallet) = &money.wallet else {
                return Ok(());
            };
            match family_index {
                0 => writeln!(
                    out,
                    "{name}{{account=\"{account}\",user_id=\"{}\",group=\"{}\"}} 1",
                    wallet.user_id,
                    escape_label_value(&wallet.group)
                ),
                1 => writeln!(out, "{name}{{account=\"{account}\"}} {}", wallet.quota),
                2 => writeln!(out, "{name}{{account=\"{account}\"}} {}", wallet.used_quota),
                _ => writeln!(
                    out,
                    "{name}{{account=\"{account}\"}} {}",
                    wallet.request_count
                ),
            }
        }
        4..=6 => {
            let Some(SpendDetail::ByKeyAndModel(rows)) =
                money.spend.as_ref().map(|spend| &spend.detail)
            else {
                return Ok(());
            };
            for row in rows {
                let value = match family_index {
                    4 => row.quota,
                    5 => row.requests,
                    _ => row.tokens,
                };
                writeln!(
                    out,
                    "{name}{{account=\"{account}\",key_id=\"{}\",model=\"{}\",group=\"{}\"}} {value}",
                    row.key_id,
                    escape_label_value(&row.model),
                    escape_label_value(&row.group)
                )?;
            }
            Ok(())
        }
        7..=9 => {
            let Some(SpendDetail::ByModel(models)) =
                money.spend.as_ref().map(|spend| &spend.detail)
            else {
                return Ok(());
            };
            for model in models {
                let value = match family_index {
                    7 => model.quota,
                    8 => model.requests,
                    _ => model.tokens,
                };
                writeln!(
                    out,
                    "{name}{{account=\"{account}\",model=\"{}\"}} {value}",
                    escape_label_value(&model.model)
                )?;
            }
            Ok(())
        }
        _ => {
            let Some(subscriptions) = &money.subscriptions else {
                return Ok(());
            };
            for subscription in subscriptions {
                let id = subscription.id;
                if family_index == 10 {
                    writeln!(
                        out,
                        "{name}{{account=\"{account}\",subscription_id=\"{id}\",plan_id=\"{}\",plan=\"{}\",status=\"{}\"}} 1",
                        subscription.plan_id,
                        escape_label_value(&subscription.plan),
                        escape_label_value(&subscription.status)
                    )?;
                    continue;
                }
                let value = match family_index {
                    11 => Some(subscription.amount_total),
                    12 => Some(subscription.amount_used),
                    13 => subscription.start_time,
                    14 => subscription.end_time,
                    _ => subscription.next_reset_time,
                };
                if let Some(value) = value {
                    writeln!(
                        out,
                        "{name}{{account=\"{account}\",subscription_id=\"{id}\"}} {value}"
                    )?;
                }
            }
            Ok(())
        }
    }
}

fn write_family(
    family_index: usize,
    name: &str,
    snapshot: &Snapshot,
    account: &str,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let now = snapshot.completed_at;
    match family_index {
        11 => {
            let counts = snapshot.count_by_status();
            for status in KeyStatus::ALL {
                writeln!(
                    out,
                    "{name}{{account=\"{account}\",status=\"{}\"}} {}",
                    status.label(),
                    counts[status.index()]
                )?;
            }
            return Ok(());
        }
        12 => {
            return writeln!(
                out,
                "{name}{{account=\"{account}\"}} {}",
                format_float(snapshot.quota_per_unit)
            )
        }
        _ => {}
    }
    for key in &snapshot.keys {
        let id = key.id;
        let value: Option<i64> = match family_index {
            0 => {
                let key_name = escape_label_value(&key.name);
                let group = escape_label_value(&key.group);
                writeln!(out, "{name}{{account=\"{account}\",key_id=\"{id}\",name=\"{key_name}\",group=\"{group}\"}} 1")?;
                continue;
            }
            1 => {
                let current = key.status();
                for status in KeyStatus::ALL {
                    let value = u8::from(status == current);
                    writeln!(
                        out,
                        "{name}{{account=\"{account}\",key_id=\"{id}\",status=\"{}\"}} {value}",
                        status.label()
                    )?;
                }
                continue;
            }
            2 => Some(i64::from(key.is_usable_at(now))),
            3 => (!key.unlimited_quota).then_some(key.remain_quota),
            4 => Some(key.used_quota),
            5 => Some(i64::from(key.unlimited_quota)),
            6 => (!key.never_expires()).then_some(key.expired_time),
            7 => Some(key.created_time),
            8 => (key.accessed_time != 0).then_some(key.accessed_time),
            9 => Some(i64::from(key.ip_restricted)),
            10 => Some(i64::from(key.model_restricted)),
            _ => unreachable!("family index out of range"),
        };
        if let Some(value) = value {
            writeln!(
                out,
                "{name}{{account=\"{account}\",key_id=\"{id}\"}} {value}"
            )?;
        }
    }
    Ok(())
}

/// Escapes a label value for the text format: backslash, double quote and line feed are the
/// only characters it requires escaped; everything else (any Unicode) is written as UTF-8.
pub fn escape_label_value(value: &str) -> String {
    let mut cut = value.len().min(MAX_LABEL_VALUE_BYTES);
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    let value = &value[..cut];
    let mut escaped = String::with_capacity(value.len() + 2);
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A float as the text format spells it.
pub fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{value}")
    }
}

/// Buffers text, feeds it to a raw deflate compressor and tracks CRC-32 and length.
struct CompressingSink {
    buffer: Vec<u8>,
    compressor: Compress,
    compressed: Vec<u8>,
    crc: crc32fast::Hasher,
    text_len: u64,
}

impl CompressingSink {
    fn new() -> CompressingSink {
        CompressingSink {
            buffer: Vec::with_capacity(COMPRESS_CHUNK_BYTES * 2),
            compressor: Compress::new(Compression::new(COMPRESSION_LEVEL), false),
            compressed: Vec::new(),
            crc: crc32fast::Hasher::new(),
            text_len: 0,
        }
    }

    /// Feeds the buffered text to the compressor; with `FlushCompress::Sync`, also drains
    /// everything the compressor holds so the stream ends byte-aligned.
    fn compress_buffer(&mut self, flush: FlushCompress) {
        let start_in = self.compressor.total_in();
        loop {
            let consumed = (self.compressor.total_in() - start_in) as usize;
            self.compressed.reserve(COMPRESS_CHUNK_BYTES);
            self.compressor
                .compress_vec(&self.buffer[consumed..], &mut self.compressed, flush)
                .expect("deflate of an in-memory buffer cannot fail");
            let consumed = (self.compressor.total_in() - start_in) as usize;
            let output_full = self.compressed.len() == self.compressed.capacity();
            if consumed == self.buffer.len() && !output_full {
                break;
            }
        }
        self.buffer.clear();
    }

    fn finish(mut self) -> RenderedKeys {
        self.compress_buffer(FlushCompress::Sync);
        self.compressed.shrink_to_fit();
        RenderedKeys {
            deflate: Bytes::from(self.compressed),
            crc: self.crc.finalize(),
            text_len: self.text_len,
        }
    }
}

impl Write for CompressingSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        self.crc.update(bytes);
        self.text_len += bytes.len() as u64;
        if self.buffer.len() >= COMPRESS_CHUNK_BYTES {
            self.compress_buffer(FlushCompress::None);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::snapshot::KeyState;

    fn money_snapshot() -> Snapshot {
        use crate::account::{AccountMoney, DailySpend, KeyModelSpend, Subscription, Wallet};
        Snapshot::new("main", vec![KeyState::for_tests(1)], 500_000.0, 100).with_money(
            AccountMoney {
                wallet: Some(Wallet {
                    user_id: 5678,
                    group: "vip".into(),
                    quota: -25,
                    used_quota: 900,
                    request_count: 12,
                }),
                spend: Some(DailySpend::by_key_and_model(
                    0,
                    100,
                    vec![KeyModelSpend {
                        key_id: 1,
                        key_name: "k".into(),
                        group: "default".into(),
                        model: "gpt-\"4\"".into(),
                        requests: 3,
                        tokens: 30,
                        quota: 300,
                    }],
                )),
                subscriptions: Some(vec![Subscription {
                    id: 11,
                    plan_id: 1,
                    plan: "Pro".into(),
                    status: "active".into(),
                    amount_total: 1_000,
                    amount_used: 10,
                    start_time: Some(50),
                    end_time: Some(500),
                    next_reset_time: None,
                }]),
            },
        )
    }

    #[test]
    fn money_families_are_written_only_where_there_is_data() {
        let mut text = Vec::new();
        write_snapshot_families(&[Arc::new(money_snapshot())], &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            "cometapi_account_info{account=\"main\",user_id=\"5678\",group=\"vip\"} 1",
            "cometapi_account_quota{account=\"main\"} -25",
            "# TYPE cometapi_account_requests_total counter",
            "cometapi_account_requests_total{account=\"main\"} 12",
            "cometapi_key_model_used_quota_total{account=\"main\",key_id=\"1\",model=\"gpt-\\\"4\\\"\",group=\"default\"} 300",
            "cometapi_key_model_tokens_total{account=\"main\",key_id=\"1\",model=\"gpt-\\\"4\\\"\",group=\"default\"} 30",
            "cometapi_subscription_info{account=\"main\",subscription_id=\"11\",plan_id=\"1\",plan=\"Pro\",status=\"active\"} 1",
            "# TYPE cometapi_subscription_amount_total untyped",
            "cometapi_subscription_end_timestamp_seconds{account=\"main\",subscription_id=\"11\"} 500",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("cometapi_model_used_quota_total"),
            "no per-model family"
        );
        assert!(!text.contains("cometapi_subscription_next_reset_timestamp_seconds"));

        let mut bare = Vec::new();
        let plain = Snapshot::new("main", vec![KeyState::for_tests(1)], 500_000.0, 100);
        write_snapshot_families(&[Arc::new(plain)], &mut bare).unwrap();
        let bare = String::from_utf8(bare).unwrap();
        assert!(!bare.contains("cometapi_account_"), "{bare}");
        assert!(!bare.contains("cometapi_subscription_"));
    }

    fn key(id: i64, name: &str) -> KeyState {
        KeyState {
            name: name.into(),
            group: "default".into(),
            used_quota: 5,
            model_restricted: true,
            ..KeyState::for_tests(id)
        }
    }

    fn plain(snapshots: &[Arc<Snapshot>]) -> String {
        let mut text = Vec::new();
        write_snapshot_families(snapshots, &mut text).unwrap();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline_only() {
        assert_eq!(
            escape_label_value("a\"b\\c\nd\te 生产 🔑"),
            "a\\\"b\\\\c\\nd\te 生产 🔑"
        );
        let long = "é".repeat(2000);
        assert_eq!(escape_label_value(&long).len(), MAX_LABEL_VALUE_BYTES);
    }

    #[test]
    fn families_are_grouped_across_accounts_and_optional_series_are_omitted() {
        let first = Snapshot::new(
            "a",
            vec![
                key(1, "x"),
                KeyState {
                    unlimited_quota: true,
                    expired_time: 50,
                    accessed_time: 70,
                    ..key(2, "y")
                },
            ],
            500_000.0,
            1_000,
        );
        let second = Snapshot::new("b", vec![key(1, "z")], 250_000.5, 1_000);
        let text = plain(&[Arc::new(first), Arc::new(second)]);
        let info_lines: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("cometapi_key_info{"))
            .collect();
        assert_eq!(info_lines.len(), 3);
        let first_usable = text.find("cometapi_key_usable{").unwrap();
        let last_info = text.rfind("cometapi_key_info{").unwrap();
        assert!(
            last_info < first_usable,
            "all info lines come before the next family"
        );
        assert!(
            !text.contains("cometapi_key_remaining_quota{account=\"a\",key_id=\"2\"}"),
            "unlimited key has no remaining"
        );
        assert!(text.contains(
            "cometapi_key_expiration_timestamp_seconds{account=\"a\",key_id=\"2\"} 50\n"
        ));
        assert!(
            !text.contains("cometapi_key_expiration_timestamp_seconds{account=\"a\",key_id=\"1\"}"),
            "never expires"
        );
        assert!(
            text.contains("cometapi_key_usable{account=\"a\",key_id=\"2\"} 0\n"),
            "expired at 50, polled at 1000"
        );
        assert!(text.contains(
            "cometapi_key_last_access_timestamp_seconds{account=\"a\",key_id=\"2\"} 70\n"
        ));
        assert!(!text
            .contains("cometapi_key_last_access_timestamp_seconds{account=\"a\",key_id=\"1\"}"));
        assert!(text.contains("cometapi_quota_per_unit{account=\"b\"} 250000.5\n"));
        assert!(text.contains("cometapi_keys{account=\"a\",status=\"enabled\"} 2\n"));
        assert!(text.contains("cometapi_keys{account=\"a\",status=\"unknown\"} 0\n"));
        assert_eq!(text.matches("# TYPE ").count(), SNAPSHOT_FAMILIES.len());
    }

    #[test]
    fn gzip_parts_form_one_valid_member_and_plain_text_matches() {
        let keys: Vec<KeyState> = (1..3000)
            .map(|id| key(id, &format!("key \"{id}\"\n")))
            .collect();
        let snapshots = [Arc::new(Snapshot::new("main", keys, 500_000.0, 1_000))];
        let expected_keys_text = plain(&snapshots);
        let rendered = Arc::new(render(&snapshots));
        assert_eq!(rendered.text_len(), expected_keys_text.len() as u64);
        assert!(
            rendered.compressed_len() * 5 < expected_keys_text.len(),
            "compresses well"
        );

        let tail = b"# TYPE cometapi_up gauge\ncometapi_up{account=\"main\"} 1\n";
        let gzip: Vec<u8> = rendered.gzip_parts(tail).concat();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(
            decoded,
            format!("{expected_keys_text}{}", std::str::from_utf8(tail).unwrap())
        );

        let inflated = rendered.inflate_to_vec();
        assert_eq!(inflated.len(), expected_keys_text.len());
        assert_eq!(
            inflated.capacity(),
            inflated.len(),
            "one buffer of the text's size, no spare room"
        );
        assert_eq!(std::str::from_utf8(&inflated).unwrap(), expected_keys_text);

        // An empty tail and one longer than a stored block (65,535 bytes) frame correctly too.
        for tail in [Vec::new(), vec![b'x'; 200_000]] {
            let gzip: Vec<u8> = rendered.gzip_parts(&tail).concat();
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gzip[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded.len(), expected_keys_text.len() + tail.len());
            assert!(decoded.ends_with(&tail));
        }
    }

    #[test]
    fn empty_render_is_still_a_valid_stream() {
        let rendered = Arc::new(RenderedKeys::empty());
        let text = rendered.inflate();
        assert_eq!(std::str::from_utf8(&text).unwrap(), plain(&[]));
        let gzip: Vec<u8> = rendered.gzip_parts(b"x\n").concat();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert!(decoded.ends_with("x\n"));
    }
}
