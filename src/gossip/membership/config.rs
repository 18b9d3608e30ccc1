//! Membership tuning knobs and limits, with defaults justified in the parent module doc.

/// Membership configuration. [`Config::default`] is tuned for LANs of up to ~10,000 nodes.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Time between probes of one member, before Lifeguard scaling.
    pub probe_interval_ms: u64,
    /// Wait for a direct ack before asking others to probe; also the relays' wait.
    pub probe_timeout_ms: u64,
    /// Members asked to probe indirectly (SWIM's k; 5 by default, see the module doc).
    pub indirect_checks: usize,
    /// Time between dissemination rounds (sent only while updates are queued).
    pub gossip_interval_ms: u64,
    /// Members sent to per dissemination round.
    pub gossip_fanout: usize,
    /// Dead members still receive gossip for this long, so a falsely dead node can refute.
    pub gossip_to_dead_ms: u64,
    /// Lifeguard α: suspicion timeout floor = α · max(1, log10 N) · probe interval.
    pub suspicion_alpha: f64,
    /// Lower bound of the suspicion floor, so small clusters (where log10 N ≈ 1) still leave
    /// a refutation time to cross a lossy network.
    pub suspicion_floor_min_ms: u64,
    /// Lifeguard β: suspicion timeout ceiling = β · floor (no confirmations yet).
    pub suspicion_beta: f64,
    /// Independent confirmations that shrink the timeout all the way to the floor.
    pub suspicion_confirmations: u32,
    /// λ: each update is retransmitted λ · ceil(log10(N + 1)) times.
    pub retransmit_mult: u32,
    /// Lifeguard local health multiplier ceiling: timeouts scale by up to this factor.
    pub awareness_max: u32,
    /// Full state exchange with one random member (scaled up with log2 N for N > 32).
    pub push_pull_interval_ms: u64,
    /// Retry period for join while no member is known.
    pub join_retry_ms: u64,
    /// Dead and left members are forgotten after this long.
    pub dead_retain_ms: u64,
    /// After `leave`, keep disseminating the departure this long, then go quiet.
    pub leave_propagate_ms: u64,
    /// Most members tracked (beyond it, new members are ignored and counted).
    pub members_max: usize,
    /// Most member updates piggybacked in one datagram (fewer when they do not fit its body).
    /// 32 (≤ 1,088 B of IPv4 updates): with 12, a 10,000-node cluster at 10 % loss could not
    /// retransmit its refutations λ·log N times and its queues grew without bound.
    pub updates_per_datagram_max: usize,
    /// Most queued updates awaiting retransmission (the oldest, most-sent are dropped first).
    pub broadcast_queue_max: usize,
    /// Most datagrams waiting in `poll_transmit`.
    pub transmit_queue_max: usize,
    /// Most events waiting in `poll_event` (the oldest are dropped first, and counted).
    pub event_queue_max: usize,
    /// Most indirect probes relayed for others at once.
    pub relays_max: usize,
    /// Most seed addresses remembered for join retries.
    pub seeds_max: usize,
    /// Most datagrams one push-pull sends (at ~50 members each).
    pub push_pull_datagrams_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            probe_interval_ms: 200,
            probe_timeout_ms: 100,
            indirect_checks: 5,
            gossip_interval_ms: 200,
            gossip_fanout: 3,
            gossip_to_dead_ms: 10_000,
            suspicion_alpha: 2.0,
            suspicion_floor_min_ms: 2_000,
            suspicion_beta: 4.0,
            suspicion_confirmations: 3,
            retransmit_mult: 4,
            awareness_max: 8,
            push_pull_interval_ms: 30_000,
            join_retry_ms: 1_000,
            dead_retain_ms: 30_000,
            leave_propagate_ms: 1_000,
            members_max: 65_536,
            updates_per_datagram_max: 32,
            broadcast_queue_max: 8_192,
            transmit_queue_max: 1_024,
            event_queue_max: 8_192,
            relays_max: 256,
            seeds_max: 16,
            push_pull_datagrams_max: 256,
        }
    }
}

impl Config {
    /// Checks that the values make sense together; `Membership::new` asserts this.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (self.probe_interval_ms > 0, "probe_interval_ms must be > 0"),
            (self.probe_timeout_ms > 0, "probe_timeout_ms must be > 0"),
            (
                self.probe_timeout_ms < self.probe_interval_ms,
                "probe_timeout_ms must be below probe_interval_ms (indirect probes need time)",
            ),
            (
                self.gossip_interval_ms > 0,
                "gossip_interval_ms must be > 0",
            ),
            (self.suspicion_alpha > 0.0, "suspicion_alpha must be > 0"),
            (self.suspicion_beta >= 1.0, "suspicion_beta must be >= 1"),
            (self.retransmit_mult > 0, "retransmit_mult must be > 0"),
            (self.awareness_max > 0, "awareness_max must be > 0"),
            (self.members_max > 0, "members_max must be > 0"),
            (
                self.updates_per_datagram_max > 0,
                "updates_per_datagram_max must be > 0",
            ),
            (
                self.updates_per_datagram_max <= 255,
                "updates_per_datagram_max must be <= 255",
            ),
            (
                self.broadcast_queue_max > 0,
                "broadcast_queue_max must be > 0",
            ),
            (
                self.transmit_queue_max > 0,
                "transmit_queue_max must be > 0",
            ),
            (self.event_queue_max > 0, "event_queue_max must be > 0"),
            (
                self.push_pull_datagrams_max > 0,
                "push_pull_datagrams_max must be > 0",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err((*message).to_owned()),
            None => Ok(()),
        }
    }
}
