//! Lifeguard suspicion: a timeout that starts at β·floor and shrinks toward the floor as
//! independent members confirm the suspicion (Dadgar et al., "Lifeguard", 2018, §IV-B).
//!
//! `timeout(c) = max(floor, ceiling − (ceiling − floor) · ln(c + 1) / ln(k + 1))` with
//! `floor = α · max(1, log10 N) · probe_interval`, `ceiling = β · floor`, `k` confirmations.

use crate::gossip::wire::NodeId;

/// One member under suspicion.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
pub(super) struct Suspicion {
    /// The incarnation suspected; a higher one refutes.
    pub(super) incarnation: u32,
    pub(super) start_ms: u64,
    pub(super) deadline_ms: u64,
    /// Who suspected first (does not count as a confirmation) and the confirmers, ≤ k + 1.
    pub(super) origins: Vec<NodeId>,
    pub(super) floor_ms: u64,
    pub(super) ceiling_ms: u64,
    pub(super) confirmations_needed: u32,
    /// Whether the last-look pings before declaring death went out.
    pub(super) final_check_sent: bool,
}

/// Timeout bounds for a cluster of `members` (including us); the floor is at least `floor_min_ms`.
pub(super) fn bounds_ms(
    alpha: f64,
    beta: f64,
    probe_interval_ms: u64,
    floor_min_ms: u64,
    members: usize,
) -> (u64, u64) {
    let scale = (members.max(1) as f64).log10().max(1.0);
    let floor = (alpha * scale * probe_interval_ms as f64)
        .round()
        .max(floor_min_ms as f64)
        .max(1.0);
    let ceiling = (beta * floor).round().max(floor);
    (floor as u64, ceiling as u64)
}

impl Suspicion {
    pub(super) fn new(
        incarnation: u32,
        origin: NodeId,
        now: u64,
        bounds: (u64, u64),
        needed: u32,
    ) -> Self {
        let (floor_ms, ceiling_ms) = bounds;
        assert!(
            floor_ms <= ceiling_ms,
            "suspicion floor {floor_ms} above ceiling {ceiling_ms}"
        );
        let mut suspicion = Self {
            incarnation,
            start_ms: now,
            deadline_ms: now,
            origins: vec![origin],
            floor_ms,
            ceiling_ms,
            confirmations_needed: needed,
            final_check_sent: false,
        };
        suspicion.deadline_ms = now + suspicion.timeout_ms();
        suspicion
    }

    fn confirmations(&self) -> u32 {
        u32::try_from(self.origins.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    pub(super) fn timeout_ms(&self) -> u64 {
        if self.confirmations_needed == 0 {
            return self.floor_ms;
        }
        let fraction = f64::from(self.confirmations() + 1).ln()
            / f64::from(self.confirmations_needed + 1).ln();
        let span = (self.ceiling_ms - self.floor_ms) as f64;
        let timeout = self.ceiling_ms as f64 - span * fraction.min(1.0);
        (timeout.floor() as u64).max(self.floor_ms)
    }

    /// Records a suspicion from `origin`; returns true when it is a new, independent one
    /// (then the deadline may have moved earlier and the update is worth re-gossiping).
    pub(super) fn confirm(&mut self, origin: NodeId) -> bool {
        if self.origins.contains(&origin) || self.confirmations() >= self.confirmations_needed {
            return false;
        }
        self.origins.push(origin);
        self.deadline_ms = self.start_ms + self.timeout_ms();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_scale_with_log10_members() {
        assert_eq!(
            bounds_ms(2.0, 4.0, 200, 0, 5),
            (400, 1_600),
            "log10 floored at 1"
        );
        assert_eq!(bounds_ms(2.0, 4.0, 200, 1_000, 5), (1_000, 4_000));
        assert_eq!(bounds_ms(2.0, 4.0, 200, 1_000, 10_000), (1_600, 6_400));
    }

    #[test]
    fn confirmations_shrink_timeout_to_floor() {
        let mut suspicion = Suspicion::new(3, 1, 1_000, (1_600, 6_400), 3);
        assert_eq!(suspicion.deadline_ms, 1_000 + 6_400);
        assert!(
            !suspicion.confirm(1),
            "the first origin is not a confirmation"
        );
        assert!(suspicion.confirm(2));
        assert_eq!(suspicion.deadline_ms, 1_000 + 4_000);
        assert!(suspicion.confirm(3));
        assert!(suspicion.confirm(4));
        assert_eq!(suspicion.deadline_ms, 1_000 + 1_600);
        assert!(!suspicion.confirm(5), "capped at k confirmations");
    }

    #[test]
    fn no_confirmations_needed_means_floor() {
        let suspicion = Suspicion::new(0, 1, 0, (400, 1_600), 0);
        assert_eq!(suspicion.deadline_ms, 400);
    }
}
