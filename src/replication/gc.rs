//! Tombstone garbage collection horizon and the "away longer than `gc_grace`" decision.
//!
//! Both are pure functions of times the runtime supplies. Why resync: a tombstone older than
//! `gc_grace` may already be compacted away on every peer, so a replica that was away longer
//! could still hold the deleted entry and would resurrect it through anti-entropy.

/// Bits of the HLC that hold the logical counter (DESIGN §2: 48-bit ms + 16-bit counter).
pub const HLC_LOGICAL_BITS: u32 = 16;

/// The HLC below which tombstones may be dropped: `(now_ms - gc_grace_ms) << 16`.
pub fn gc_horizon_hlc(now_ms: u64, gc_grace_ms: u64) -> u64 {
    now_ms.saturating_sub(gc_grace_ms) << HLC_LOGICAL_BITS
}

/// Physical milliseconds of an HLC value.
pub fn hlc_physical_ms(hlc: u64) -> u64 {
    hlc >> HLC_LOGICAL_BITS
}

/// Whether a replica may rejoin with its data or must resync from scratch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Rejoin {
    /// A fresh replica (no data): it catches up by bulk transfer, nothing to refuse.
    Fresh,
    /// The replica was away at most `gc_grace`: anti-entropy brings it up to date.
    CatchUp {
        /// How long it was away.
        away_ms: u64,
    },
    /// Away longer than `gc_grace`: its data may resurrect deleted keys; wipe and resync.
    MustResync {
        /// How long it was away.
        away_ms: u64,
        /// The configured grace period.
        gc_grace_ms: u64,
    },
}

impl Rejoin {
    /// A message a person can act on, for the log and the refusal error.
    pub fn describe(&self) -> String {
        match self {
            Rejoin::Fresh => "empty data directory: joining with a full transfer".to_string(),
            Rejoin::CatchUp { away_ms } => {
                format!("away for {away_ms} ms (within gc_grace): catching up by anti-entropy")
            }
            Rejoin::MustResync {
                away_ms,
                gc_grace_ms,
            } => format!(
                "this replica was away for {away_ms} ms, longer than gc_grace ({gc_grace_ms} ms): \
                 deleted keys could come back; move the data directory away and restart to \
                 resync from the cluster"
            ),
        }
    }
}

/// Decides how a replica rejoins. `last_active_ms` is the last time it was known to be in
/// contact with the cluster (e.g. the physical part of the largest applied HLC or a persisted
/// heartbeat); `None` for an empty data directory.
pub fn rejoin_decision(last_active_ms: Option<u64>, now_ms: u64, gc_grace_ms: u64) -> Rejoin {
    let Some(last_active_ms) = last_active_ms else {
        return Rejoin::Fresh;
    };
    // A clock that went backwards reads as "not away" rather than as a huge absence.
    let away_ms = now_ms.saturating_sub(last_active_ms);
    if away_ms > gc_grace_ms {
        Rejoin::MustResync {
            away_ms,
            gc_grace_ms,
        }
    } else {
        Rejoin::CatchUp { away_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizon_is_grace_before_now_in_hlc_units() {
        assert_eq!(gc_horizon_hlc(100_000, 40_000), 60_000 << 16);
        assert_eq!(gc_horizon_hlc(10, 40_000), 0);
        assert_eq!(hlc_physical_ms(gc_horizon_hlc(100_000, 1)), 99_999);
    }

    #[test]
    fn away_longer_than_grace_must_resync() {
        let day = 86_400_000;
        assert_eq!(rejoin_decision(None, 5 * day, day), Rejoin::Fresh);
        assert_eq!(
            rejoin_decision(Some(4 * day), 5 * day, day),
            Rejoin::CatchUp { away_ms: day }
        );
        let decision = rejoin_decision(Some(4 * day - 1), 5 * day, day);
        assert_eq!(
            decision,
            Rejoin::MustResync {
                away_ms: day + 1,
                gc_grace_ms: day
            }
        );
        assert!(decision.describe().contains("gc_grace"));
        // Clock skew backwards is not an absence.
        assert_eq!(
            rejoin_decision(Some(6 * day), 5 * day, day),
            Rejoin::CatchUp { away_ms: 0 }
        );
    }
}
