//! Cluster counters (gossip datagrams, rejected datagrams, replication, transfers) and their
//! Prometheus rendering, plus the fault-injection switches of the admin port.
//!
//! Shared by all shards through an `Arc` (relaxed atomics; each counter has one writer in the
//! common case). Per-shard replication counters are copied from each shard's `Replicator`
//! stats at every tick, so the replicator stays free of atomics.

use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::gossip::wire::WireError;
use crate::replication::Stats;
use crate::replication::dissemination::DisseminationStats;

/// Why an incoming datagram was dropped before dispatch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Rejection {
    /// The MAC did not verify.
    BadMac = 0,
    /// Sequence already seen or too old for the window.
    Replayed = 1,
    /// Another cluster's datagram.
    WrongCluster = 2,
    /// A key id this node does not accept.
    UnknownKey = 3,
    /// Header or length malformed.
    Malformed = 4,
    /// Dropped by fault injection.
    Fault = 5,
    /// Encrypted while this node is plaintext, or the reverse: `[cluster] encrypt` differs.
    EncryptionMismatch = 6,
}

const REJECTION_NAMES: [&str; 7] = [
    "bad_mac",
    "replayed",
    "wrong_cluster",
    "unknown_key",
    "malformed",
    "fault_injected",
    "encryption_mismatch",
];

impl Rejection {
    /// The rejection for a wire error.
    pub fn of(error: &WireError) -> Rejection {
        match error {
            WireError::BadMac { .. } => Rejection::BadMac,
            WireError::Replayed { .. } | WireError::TooOld { .. } => Rejection::Replayed,
            WireError::WrongCluster { .. } => Rejection::WrongCluster,
            WireError::UnknownKey { .. } => Rejection::UnknownKey,
            WireError::EncryptionMismatch { .. } => Rejection::EncryptionMismatch,
            _ => Rejection::Malformed,
        }
    }
}

/// Replication counters of one shard (copied from its replicator).
#[derive(Default)]
pub struct ShardReplication {
    /// Received entries applied because newer.
    pub entries_applied: AtomicU64,
    /// Received entries that were not newer (no disk write).
    pub entries_duplicate: AtomicU64,
    /// Rumor delegations sent for the first time.
    pub rumors_sent: AtomicU64,
    /// Rumor delegations retransmitted.
    pub rumors_retransmitted: AtomicU64,
    /// Received rumors that were retransmissions.
    pub rumors_duplicate: AtomicU64,
    /// Anti-entropy rounds started.
    pub sync_rounds: AtomicU64,
    /// Entries shipped by anti-entropy.
    pub sync_entries_sent: AtomicU64,
    /// `ack = peers:k` writes acknowledged / timed out.
    pub writes_acked: AtomicU64,
    /// `ack = peers:k` writes that timed out.
    pub writes_timed_out: AtomicU64,
    /// Fetches over the transfer stream.
    pub fetches: AtomicU64,
    /// Bulk catch-ups started (this shard was far behind a peer).
    pub catch_ups: AtomicU64,
    /// Entries received in bulk catch-up pages.
    pub pull_entries: AtomicU64,
}

impl ShardReplication {
    /// Copies a replicator's counters.
    pub fn store(&self, stats: &Stats, dissemination: &DisseminationStats) {
        let set = |counter: &AtomicU64, value: u64| counter.store(value, Ordering::Relaxed);
        set(&self.entries_applied, stats.entries_applied);
        set(&self.entries_duplicate, stats.entries_duplicate);
        set(&self.rumors_sent, dissemination.delegations_sent);
        set(&self.rumors_retransmitted, dissemination.retransmits);
        set(&self.rumors_duplicate, dissemination.duplicate_delegations);
        set(&self.sync_rounds, stats.sync_rounds);
        set(&self.sync_entries_sent, stats.sync_entries_sent);
        set(&self.writes_acked, stats.writes_acked);
        set(&self.writes_timed_out, stats.writes_timed_out);
        set(&self.fetches, stats.fetches);
        set(&self.catch_ups, stats.catch_ups);
        set(&self.pull_entries, stats.pull_entries);
    }
}

/// All cluster counters of a node.
pub struct ClusterMetrics {
    /// Members by state (Alive, Suspect, Dead, Left), self excluded; written by shard 0.
    pub members: [AtomicU64; 4],
    /// Datagrams sent, by kind byte.
    pub datagrams_sent: [AtomicU64; 256],
    /// Bytes sent, by kind byte.
    pub bytes_sent: [AtomicU64; 256],
    /// Datagrams received and accepted, by kind byte.
    pub datagrams_received: [AtomicU64; 256],
    /// Bytes received and accepted, by kind byte.
    pub bytes_received: [AtomicU64; 256],
    /// Datagrams dropped, by [`Rejection`].
    pub rejected: [AtomicU64; 7],
    /// Accepted datagrams whose body failed to decode.
    pub decode_failures: AtomicU64,
    /// Datagrams that could not be sent (socket errors, unknown destination).
    pub send_failures: AtomicU64,
    /// Transfer-stream bytes sent (served fetches).
    pub transfer_bytes_sent: AtomicU64,
    /// Transfer-stream bytes received.
    pub transfer_bytes_received: AtomicU64,
    /// Fetches that failed (connect, MAC, framing).
    pub transfer_failures: AtomicU64,
    /// Per shard.
    pub shards: Vec<ShardReplication>,
}

impl ClusterMetrics {
    /// Zeroed counters for `shards` shards.
    pub fn new(shards: usize) -> ClusterMetrics {
        ClusterMetrics {
            members: Default::default(),
            datagrams_sent: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_sent: std::array::from_fn(|_| AtomicU64::new(0)),
            datagrams_received: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_received: std::array::from_fn(|_| AtomicU64::new(0)),
            rejected: Default::default(),
            decode_failures: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            transfer_bytes_sent: AtomicU64::new(0),
            transfer_bytes_received: AtomicU64::new(0),
            transfer_failures: AtomicU64::new(0),
            shards: (0..shards).map(|_| ShardReplication::default()).collect(),
        }
    }

    /// Counts a dropped datagram.
    pub fn reject(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a sent datagram.
    pub fn sent(&self, kind: u8, bytes: usize) {
        self.datagrams_sent[usize::from(kind)].fetch_add(1, Ordering::Relaxed);
        self.bytes_sent[usize::from(kind)].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts an accepted datagram.
    pub fn received(&self, kind: u8, bytes: usize) {
        self.datagrams_received[usize::from(kind)].fetch_add(1, Ordering::Relaxed);
        self.bytes_received[usize::from(kind)].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Datagrams dropped for `why` so far.
    pub fn rejected_count(&self, why: Rejection) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }

    /// Prometheus text of every cluster metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        header(
            &mut out,
            "starling_cluster_members",
            "gauge",
            "Known members (self excluded) by state.",
        );
        for (state, counter) in ["alive", "suspect", "dead", "left"]
            .iter()
            .zip(&self.members)
        {
            let _ = writeln!(
                out,
                "starling_cluster_members{{state=\"{state}\"}} {}",
                load(counter)
            );
        }
        self.render_kinds(&mut out);
        header(
            &mut out,
            "starling_gossip_datagrams_rejected_total",
            "counter",
            "Datagrams dropped before dispatch (MAC failures, replays, other clusters, faults).",
        );
        for (name, counter) in REJECTION_NAMES.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "starling_gossip_datagrams_rejected_total{{reason=\"{name}\"}} {}",
                load(counter)
            );
        }
        let singles = [
            (
                "starling_gossip_decode_failures_total",
                "Accepted datagrams whose body did not decode.",
                &self.decode_failures,
            ),
            (
                "starling_gossip_send_failures_total",
                "Datagrams that could not be sent.",
                &self.send_failures,
            ),
            (
                "starling_transfer_bytes_sent_total",
                "Bytes served over transfer streams.",
                &self.transfer_bytes_sent,
            ),
            (
                "starling_transfer_bytes_received_total",
                "Bytes fetched over transfer streams.",
                &self.transfer_bytes_received,
            ),
            (
                "starling_transfer_failures_total",
                "Fetches that failed.",
                &self.transfer_failures,
            ),
        ];
        for (name, help, counter) in singles {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", load(counter));
        }
        self.render_shards(&mut out);
        out
    }

    fn render_kinds(&self, out: &mut String) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let families = [
            (
                "starling_gossip_datagrams_sent_total",
                "Datagrams sent by message kind.",
                &self.datagrams_sent,
            ),
            (
                "starling_gossip_bytes_sent_total",
                "Bytes sent by message kind.",
                &self.bytes_sent,
            ),
            (
                "starling_gossip_datagrams_received_total",
                "Datagrams accepted by message kind.",
                &self.datagrams_received,
            ),
            (
                "starling_gossip_bytes_received_total",
                "Bytes accepted by message kind.",
                &self.bytes_received,
            ),
        ];
        for (name, help, counters) in families {
            header(out, name, "counter", help);
            for (kind, counter) in counters.iter().enumerate() {
                let value = load(counter);
                if value > 0 {
                    let label = kind_name(kind as u8);
                    let _ = writeln!(out, "{name}{{kind=\"{label}\"}} {value}");
                }
            }
        }
    }

    fn render_shards(&self, out: &mut String) {
        let fields: [(&str, &str, Field); 12] = [
            (
                "starling_replication_entries_applied_total",
                "Received entries applied (newer).",
                |s| &s.entries_applied,
            ),
            (
                "starling_replication_entries_duplicate_total",
                "Received entries not newer (no disk write).",
                |s| &s.entries_duplicate,
            ),
            (
                "starling_replication_rumors_sent_total",
                "Rumor delegations sent.",
                |s| &s.rumors_sent,
            ),
            (
                "starling_replication_rumors_retransmitted_total",
                "Rumor delegations retransmitted.",
                |s| &s.rumors_retransmitted,
            ),
            (
                "starling_replication_rumors_duplicate_total",
                "Received rumors that were retransmissions.",
                |s| &s.rumors_duplicate,
            ),
            (
                "starling_replication_sync_rounds_total",
                "Anti-entropy rounds started.",
                |s| &s.sync_rounds,
            ),
            (
                "starling_replication_sync_entries_sent_total",
                "Entries shipped by anti-entropy.",
                |s| &s.sync_entries_sent,
            ),
            (
                "starling_replication_writes_acked_total",
                "ack = peers:k writes acknowledged.",
                |s| &s.writes_acked,
            ),
            (
                "starling_replication_writes_timed_out_total",
                "ack = peers:k writes that timed out.",
                |s| &s.writes_timed_out,
            ),
            (
                "starling_replication_fetches_total",
                "Entries pulled over transfer streams (fetch actions).",
                |s| &s.fetches,
            ),
            (
                "starling_replication_catch_ups_total",
                "Bulk catch-ups started: this shard was far behind a peer and pulled its data.",
                |s| &s.catch_ups,
            ),
            (
                "starling_replication_pull_entries_total",
                "Entries received in bulk catch-up pages over the transfer stream.",
                |s| &s.pull_entries,
            ),
        ];
        for (name, help, field) in fields {
            header(out, name, "counter", help);
            for (shard, stats) in self.shards.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{shard}\"}} {}",
                    field(stats).load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// Selects one counter of a shard's replication counters.
type Field = fn(&ShardReplication) -> &AtomicU64;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A readable label for a message kind byte.
pub fn kind_name(kind: u8) -> String {
    let name = match kind {
        0x01 => "ping",
        0x02 => "ack",
        0x03 => "ping_req",
        0x04 => "nack",
        0x05 => "push_pull",
        0x06 => "gossip",
        0x40 => "rumor",
        0x41 => "rumor_ack",
        0x48 => "sync_digest",
        0x49 => "sync_elements",
        0x4A => "sync_need",
        0x4B => "sync_entries",
        _ => return format!("0x{kind:02x}"),
    };
    name.to_string()
}

/// Fault injection for tests (`POST /faults` on the admin port, only with
/// `fault_injection = true`): a random drop rate for every datagram sent and a set of peers
/// whose datagrams (and transfer fetches) are dropped in both directions.
#[derive(Debug, Default)]
pub struct Faults {
    /// Whether the admin endpoint may change anything.
    pub enabled: bool,
    drop_per_million: AtomicU32,
    blocked: RwLock<Vec<u64>>,
}

impl Faults {
    /// Switches, all off.
    pub fn new(enabled: bool) -> Faults {
        Faults {
            enabled,
            ..Faults::default()
        }
    }

    /// Sets the drop rate (0.0..=1.0) and the blocked peers.
    pub fn set(&self, drop_rate: f64, blocked: Vec<u64>) {
        let rate = drop_rate.clamp(0.0, 1.0);
        self.drop_per_million
            .store((rate * 1_000_000.0) as u32, Ordering::Relaxed);
        if let Ok(mut list) = self.blocked.write() {
            *list = blocked;
        }
    }

    /// Whether traffic with `node` is blocked.
    pub fn is_blocked(&self, node: u64) -> bool {
        self.enabled && self.blocked.read().is_ok_and(|list| list.contains(&node))
    }

    /// Whether to drop a datagram, given a uniform random number in `0..1_000_000`.
    pub fn drop_now(&self, random_per_million: u32) -> bool {
        self.enabled && random_per_million < self.drop_per_million.load(Ordering::Relaxed)
    }

    /// Parses a `/faults` query: `drop=<0..1>&block=<hex id>,<hex id>`.
    pub fn parse_query(query: &str) -> Result<(f64, Vec<u64>), String> {
        let mut drop_rate = 0.0;
        let mut blocked = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "drop" => {
                    drop_rate = value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| format!("drop={value}: expected a rate in 0..=1"))?;
                }
                "block" => {
                    for id in value.split(',').filter(|id| !id.is_empty()) {
                        let id = u64::from_str_radix(id, 16)
                            .map_err(|_| format!("block: {id:?} is not a hex node id"))?;
                        blocked.push(id);
                    }
                }
                _ => return Err(format!("unknown parameter {name:?} (use drop= and block=)")),
            }
        }
        Ok((drop_rate, blocked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_query_parses_and_applies() {
        let (rate, blocked) = Faults::parse_query("drop=0.5&block=ab,10").expect("valid");
        assert_eq!((rate, blocked.clone()), (0.5, vec![0xab, 0x10]));
        assert!(Faults::parse_query("drop=2").is_err());
        assert!(Faults::parse_query("block=xyz").is_err());
        let faults = Faults::new(true);
        faults.set(rate, blocked);
        assert!(faults.is_blocked(0xab) && !faults.is_blocked(1));
        assert!(faults.drop_now(10) && !faults.drop_now(600_000));
        let off = Faults::new(false);
        off.set(1.0, vec![1]);
        assert!(!off.is_blocked(1) && !off.drop_now(0));
    }

    #[test]
    fn renders_members_and_rejections() {
        let metrics = ClusterMetrics::new(2);
        metrics.members[0].store(2, Ordering::Relaxed);
        metrics.reject(Rejection::BadMac);
        metrics.sent(0x40, 100);
        let text = metrics.render();
        assert!(
            text.contains("starling_cluster_members{state=\"alive\"} 2"),
            "{text}"
        );
        assert!(text.contains("reason=\"bad_mac\"} 1"), "{text}");
        assert!(
            text.contains("starling_gossip_bytes_sent_total{kind=\"rumor\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("starling_replication_sync_rounds_total{shard=\"1\"} 0"),
            "{text}"
        );
    }
}
