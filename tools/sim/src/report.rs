//! What a run measured, as one JSON object (`--json`) or a human summary.

use serde::Serialize;

/// The result of one run. The first fields are the CI contract; the rest explain them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Always "sim".
    pub suite: &'static str,
    /// Nodes simulated.
    pub nodes: u32,
    /// The seed.
    pub seed: u64,
    /// Datagram loss probability.
    pub loss: f64,
    /// Gossip rounds (ticks) until a write reached every node that never crashed: p99 over
    /// writes. (Crashed nodes catch up by anti-entropy; `converged` covers them.)
    pub converge_rounds_p99: u64,
    /// Simulated milliseconds until a write reached every node: p99 over writes.
    pub converge_ms_p99: u64,
    /// Dissemination bytes (RUMOR + RUMOR_ACK datagrams incl. header and MAC) per node per
    /// write.
    pub bytes_per_node_per_update: f64,
    /// Failure detection: the largest time until every live node marked a crashed node dead
    /// (ms), or 0 when membership was not simulated or nothing crashed.
    pub detect_ms_max: u64,
    /// `Died` events (at any observer) about live, never-crashed nodes outside partitions.
    pub false_positives: u64,
    /// Acknowledged writes missing on some node at the end of the run.
    pub lost_acked_writes: u64,
    /// Whether every write reached every node before the run ended.
    pub converged: bool,
    /// Writes issued.
    pub writes: u64,
    /// Writes acknowledged (local, or by `ack_peers` peers).
    pub writes_acked: u64,
    /// Rounds until every node had a write: p50.
    pub converge_rounds_p50: u64,
    /// Rounds: max.
    pub converge_rounds_max: u64,
    /// Milliseconds: p50.
    pub converge_ms_p50: u64,
    /// Milliseconds: max.
    pub converge_ms_max: u64,
    /// Dissemination body bytes only (no datagram header/MAC) per node per write.
    pub body_bytes_per_node_per_update: f64,
    /// Key + value bytes of a write plus its 19-byte wire header: the 1.0× reference.
    pub entry_bytes_with_header: u64,
    /// `bytes_per_node_per_update / entry_bytes_with_header`.
    pub bytes_ratio: f64,
    /// `body_bytes_per_node_per_update / entry_bytes_with_header`.
    pub body_bytes_ratio: f64,
    /// Anti-entropy bytes per node per simulated second.
    pub sync_bytes_per_node_per_s: f64,
    /// Membership bytes per node per simulated second (0 without membership).
    pub membership_bytes_per_node_per_s: f64,
    /// Datagram bytes (header and MAC included) per node per simulated second, by kind
    /// (0x01–0x06 membership, 0x40–0x4B replication, 0x80 reconciliation).
    pub bytes_per_node_per_s_by_kind: std::collections::BTreeMap<String, f64>,
    /// Distinct live nodes behind `false_positives`.
    pub false_positive_nodes: u64,
    /// (killed node, healthy observer) pairs where the observer never declared the kill dead.
    pub undetected: u64,
    /// CPISync sessions that produced an outcome (both sides count).
    pub sync_sessions: u64,
    /// CPISync sessions abandoned or refused, and reconcile messages too big for a datagram.
    pub sync_sessions_failed: u64,
    /// Received entries that were duplicates (no disk write), over all nodes.
    pub duplicates: u64,
    /// Delegations retransmitted.
    pub retransmits: u64,
    /// Bulk catch-ups started (a node far behind a peer pulled its shard's data).
    pub catch_ups: u64,
    /// Key, value and version bytes pulled by bulk catch-ups (the TCP transfer stream).
    pub pull_bytes: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Simulated milliseconds at the end of the run.
    pub simulated_ms: u64,
    /// Events processed.
    pub events: u64,
}

/// The `p`-quantile (0..=1) of `values` by the nearest-rank method; 0 for no values.
pub fn quantile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

impl Report {
    /// A multi-line summary for people.
    pub fn human(&self) -> String {
        format!(
            "starling-sim: {nodes} nodes, seed {seed}, loss {loss}\n\
             convergence: rounds p50/p99/max {r50}/{r99}/{rmax}, ms p50/p99/max {m50}/{m99}/{mmax} \
             (converged: {converged})\n\
             dissemination: {bytes:.1} B/node/update with headers ({ratio:.2}x of {entry} B), \
             {body:.1} B body only ({body_ratio:.2}x)\n\
             anti-entropy: {sync:.1} B/node/s, {sessions} CPISync sessions ({failed} failed), \
             {catch_ups} bulk catch-ups ({pull_bytes} B pulled); membership: {members:.1} B/node/s\n\
             writes: {writes} issued, {acked} acked, {lost} acked writes lost\n\
             failure detection: max {detect} ms, {undetected} undetected, {fp} false positives \
             ({fp_nodes} nodes); \
             crashes {crashes}\n\
             duplicates {dups}, retransmits {retx}; {events} events, {sim} ms simulated",
            nodes = self.nodes,
            seed = self.seed,
            loss = self.loss,
            r50 = self.converge_rounds_p50,
            r99 = self.converge_rounds_p99,
            rmax = self.converge_rounds_max,
            m50 = self.converge_ms_p50,
            m99 = self.converge_ms_p99,
            mmax = self.converge_ms_max,
            converged = self.converged,
            bytes = self.bytes_per_node_per_update,
            ratio = self.bytes_ratio,
            entry = self.entry_bytes_with_header,
            body = self.body_bytes_per_node_per_update,
            body_ratio = self.body_bytes_ratio,
            sync = self.sync_bytes_per_node_per_s,
            members = self.membership_bytes_per_node_per_s,
            fp_nodes = self.false_positive_nodes,
            sessions = self.sync_sessions,
            failed = self.sync_sessions_failed,
            catch_ups = self.catch_ups,
            pull_bytes = self.pull_bytes,
            writes = self.writes,
            acked = self.writes_acked,
            lost = self.lost_acked_writes,
            detect = self.detect_ms_max,
            fp = self.false_positives,
            undetected = self.undetected,
            crashes = self.crashes,
            dups = self.duplicates,
            retx = self.retransmits,
            events = self.events,
            sim = self.simulated_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let mut values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&mut values, 0.5), 50);
        assert_eq!(quantile(&mut values, 0.99), 99);
        assert_eq!(quantile(&mut values, 1.0), 100);
        assert_eq!(quantile(&mut [], 0.5), 0);
        assert_eq!(quantile(&mut [7], 0.01), 7);
    }
}
