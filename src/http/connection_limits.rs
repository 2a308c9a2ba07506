//! Who may open a connection: at most `max_connections` at once, and at most
//! `max_connections_per_peer` from one IP address, so one client (a flood, a stuck script, a
//! slow-loris) cannot take the slots Prometheus needs. Refusals are counted, not logged one by
//! one: the accept loop writes one summary line per interval from `RefusalTally::take_summary`.
//!
//! No I/O and no clock; the accept loop owns the timer.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already holds `max_connections_per_peer` connections.
    PeerLimit,
    /// All `max_connections` slots are taken (by several peers).
    TotalLimit,
}

/// Counts open connections, in total and per peer address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_connections: usize,
    max_per_peer: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    /// Only addresses with at least one open connection: entries go at their last close, so the
    /// map never outgrows `max_connections`.
    per_peer: HashMap<IpAddr, usize>,
}

impl ConnectionLimits {
    pub fn new(max_connections: usize, max_per_peer: usize) -> Arc<ConnectionLimits> {
        let max_connections = max_connections.max(1);
        Arc::new(ConnectionLimits {
            max_connections,
            max_per_peer: max_per_peer.clamp(1, max_connections),
            open: Mutex::new(OpenConnections::default()),
        })
    }

    /// A slot for a new connection from `peer`, released when the slot is dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let peer = canonical(peer);
        let mut open = self.lock();
        let from_peer = open.per_peer.get(&peer).copied().unwrap_or(0);
        if from_peer >= self.max_per_peer {
            return Err(Refusal::PeerLimit);
        }
        if open.total >= self.max_connections {
            return Err(Refusal::TotalLimit);
        }
        open.total += 1;
        *open.per_peer.entry(peer).or_insert(0) += 1;
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            peer,
        })
    }

    /// Open connections in total, and the number of distinct peers holding them.
    pub fn open_connections(&self) -> (usize, usize) {
        let open = self.lock();
        (open.total, open.per_peer.len())
    }

    fn release(&self, peer: IpAddr) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_peer.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                open.per_peer.remove(&peer);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, OpenConnections> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An IPv4 client reaching a dual-stack (`[::]`) listener shows up as `::ffff:a.b.c.d`; it is
/// the same peer as `a.b.c.d`.
fn canonical(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(address) => address
            .to_ipv4_mapped()
            .map_or(IpAddr::V6(address), IpAddr::V4),
        other => other,
    }
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    peer: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.release(self.peer);
    }
}

/// Refusals since the last summary, by reason and by peer.
#[derive(Debug, Default)]
pub struct RefusalTally {
    peer_limit: u64,
    total_limit: u64,
    by_peer: HashMap<IpAddr, u64>,
}

/// How many peers a summary line names; the rest are only counted.
const PEERS_NAMED_IN_SUMMARY: usize = 3;

/// Caps the per-peer map between two summaries (a flood from many addresses).
const MAX_TALLIED_PEERS: usize = 1024;

impl RefusalTally {
    pub fn count(&mut self, peer: IpAddr, refusal: Refusal) {
        match refusal {
            Refusal::PeerLimit => self.peer_limit += 1,
            Refusal::TotalLimit => self.total_limit += 1,
        }
        let peer = canonical(peer);
        if self.by_peer.len() < MAX_TALLIED_PEERS || self.by_peer.contains_key(&peer) {
            *self.by_peer.entry(peer).or_insert(0) += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.peer_limit == 0 && self.total_limit == 0
    }

    /// The counts so far — refused in total, over the per-peer limit, over the total limit, and
    /// the peers refused most (address and count, at most three, most first) — and a fresh
    /// start. `None` when nothing was refused.
    pub fn take_summary(&mut self) -> Option<RefusalSummary> {
        if self.is_empty() {
            return None;
        }
        let tally = std::mem::take(self);
        let mut peers: Vec<(IpAddr, u64)> = tally.by_peer.into_iter().collect();
        peers.sort_by(|left, right| right.1.cmp(&left.1).then(left.0.cmp(&right.0)));
        let distinct_peers = peers.len();
        peers.truncate(PEERS_NAMED_IN_SUMMARY);
        Some(RefusalSummary {
            refused: tally.peer_limit + tally.total_limit,
            over_peer_limit: tally.peer_limit,
            over_total_limit: tally.total_limit,
            distinct_peers,
            top_peers: peers,
        })
    }
}

/// What one summary line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalSummary {
    pub refused: u64,
    pub over_peer_limit: u64,
    pub over_total_limit: u64,
    pub distinct_peers: usize,
    pub top_peers: Vec<(IpAddr, u64)>,
}

impl RefusalSummary {
    /// `127.0.0.1 (568), 10.0.0.7 (2)` and `and N more` when more peers were refused.
    pub fn describe_peers(&self) -> String {
        let mut text = String::new();
        for (index, (peer, count)) in self.top_peers.iter().enumerate() {
            if index > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "{peer} ({count})");
        }
        let unnamed = self.distinct_peers.saturating_sub(self.top_peers.len());
        if unnamed > 0 {
            let _ = write!(text, " and {unnamed} more");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_peer_is_capped_and_others_still_get_slots() {
        let limits = ConnectionLimits::new(4, 2);
        let first = limits.admit(address("127.0.0.1")).unwrap();
        let _second = limits.admit(address("127.0.0.1")).unwrap();
        assert_eq!(
            limits.admit(address("127.0.0.1")).unwrap_err(),
            Refusal::PeerLimit
        );
        // The IPv4-mapped form is the same peer.
        assert_eq!(
            limits.admit(address("::ffff:127.0.0.1")).unwrap_err(),
            Refusal::PeerLimit
        );
        let _other = limits.admit(address("127.0.0.2")).unwrap();
        let _third_peer = limits.admit(address("::1")).unwrap();
        assert_eq!(
            limits.admit(address("10.0.0.9")).unwrap_err(),
            Refusal::TotalLimit
        );
        assert_eq!(limits.open_connections(), (4, 3));
        drop(first);
        assert_eq!(limits.open_connections(), (3, 3));
        let _again = limits.admit(address("127.0.0.1")).unwrap();
    }

    #[test]
    fn closed_connections_leave_no_entries_behind() {
        let limits = ConnectionLimits::new(8, 8);
        for round in 0..1000u32 {
            let peer = IpAddr::from([10, 0, (round / 256) as u8, (round % 256) as u8]);
            drop(limits.admit(peer).unwrap());
        }
        assert_eq!(limits.open_connections(), (0, 0));
        assert!(limits.lock().per_peer.is_empty());
    }

    #[test]
    fn per_peer_limit_never_exceeds_the_total() {
        let limits = ConnectionLimits::new(2, 50);
        let _a = limits.admit(address("127.0.0.1")).unwrap();
        let _b = limits.admit(address("127.0.0.1")).unwrap();
        assert_eq!(
            limits.admit(address("127.0.0.1")).unwrap_err(),
            Refusal::PeerLimit
        );
    }

    #[test]
    fn a_summary_counts_by_reason_and_names_the_busiest_peers() {
        let mut tally = RefusalTally::default();
        assert_eq!(tally.take_summary(), None);
        for _ in 0..568 {
            tally.count(address("127.0.0.1"), Refusal::PeerLimit);
        }
        for last in 1..=5u8 {
            tally.count(IpAddr::from([10, 0, 0, last]), Refusal::TotalLimit);
        }
        tally.count(address("10.0.0.5"), Refusal::TotalLimit);
        let summary = tally.take_summary().unwrap();
        assert_eq!(summary.refused, 574);
        assert_eq!(summary.over_peer_limit, 568);
        assert_eq!(summary.over_total_limit, 6);
        assert_eq!(summary.distinct_peers, 6);
        assert_eq!(
            summary.describe_peers(),
            "127.0.0.1 (568), 10.0.0.5 (2), 10.0.0.1 (1) and 3 more"
        );
        assert!(tally.is_empty(), "a summary starts a new interval");
        assert_eq!(tally.take_summary(), None);
    }
}
