//! Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014): 48 bits of physical
//! milliseconds since the Unix epoch and a 16-bit logical counter, packed into one `u64` so that
//! integer order is causal order.
//!
//! Sans-IO: the caller passes the wall clock in. **Invariants:** every timestamp returned by
//! [`Hlc::tick`] is strictly greater than every timestamp the clock issued or observed before,
//! and a clock seeded with the largest stored timestamp never goes backwards across restarts.
//! When the logical counter overflows it carries into the millisecond field (the clock then runs
//! slightly ahead of the wall, which is harmless for last-writer-wins).

/// Number of bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;
/// Largest representable physical time, in milliseconds.
pub const PHYSICAL_MS_MAX: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// Packs milliseconds and a logical counter into a timestamp.
pub fn pack(physical_ms: u64, logical: u16) -> u64 {
    assert!(
        physical_ms <= PHYSICAL_MS_MAX,
        "physical time {physical_ms} ms overflows 48 bits"
    );
    (physical_ms << LOGICAL_BITS) | u64::from(logical)
}

/// The physical milliseconds of a timestamp.
pub fn physical_ms(timestamp: u64) -> u64 {
    timestamp >> LOGICAL_BITS
}

/// The logical counter of a timestamp.
pub fn logical(timestamp: u64) -> u16 {
    (timestamp & 0xffff) as u16
}

/// A hybrid logical clock. Not shared: each shard owns one.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A clock that will only issue timestamps greater than `seed` (e.g. the largest version
    /// found in storage at start-up).
    pub fn new(seed: u64) -> Self {
        Hlc { last: seed }
    }

    /// The largest timestamp issued or observed so far.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// A new timestamp for a local event at wall-clock time `wall_ms`.
    pub fn tick(&mut self, wall_ms: u64) -> u64 {
        let wall = pack(wall_ms.min(PHYSICAL_MS_MAX), 0);
        let next = if wall > self.last {
            wall
        } else {
            self.advance()
        };
        debug_assert!(next > self.last);
        self.last = next;
        next
    }

    /// Takes a timestamp received from elsewhere into account, so that later ticks order after it.
    pub fn observe(&mut self, remote: u64) {
        self.last = self.last.max(remote);
    }

    fn advance(&self) -> u64 {
        // `last + 1` carries a full logical counter into the milliseconds: still strictly larger.
        self.last
            .checked_add(1)
            .expect("hybrid logical clock exhausted 64 bits (a timestamp from the year 10889?)")
    }
}

/// Milliseconds since the Unix epoch from the system clock (0 if the clock is before 1970).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_and_unpacks() {
        let t = pack(1_700_000_000_000, 7);
        assert_eq!(physical_ms(t), 1_700_000_000_000);
        assert_eq!(logical(t), 7);
    }

    #[test]
    fn a_seeded_clock_stays_ahead_of_its_seed_when_the_wall_is_behind() {
        let seed = pack(2_000_000_000_000, 3);
        let mut clock = Hlc::new(seed);
        let t = clock.tick(1_000);
        assert!(t > seed);
        assert_eq!(physical_ms(t), 2_000_000_000_000);
        assert_eq!(logical(t), 4);
    }

    #[test]
    fn logical_overflow_carries_into_milliseconds() {
        let mut clock = Hlc::new(pack(10, u16::MAX));
        let t = clock.tick(5);
        assert_eq!((physical_ms(t), logical(t)), (11, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn ticks_strictly_increase_whatever_the_wall_and_remote_clocks_do(
            seed in 0u64..(1 << 60),
            events in proptest::collection::vec((0u64..(1 << 44), proptest::option::of(0u64..(1 << 60))), 1..64),
        ) {
            let mut clock = Hlc::new(seed);
            let mut previous = seed;
            for (wall, remote) in events {
                if let Some(remote) = remote {
                    clock.observe(remote);
                    previous = previous.max(remote);
                }
                let t = clock.tick(wall);
                prop_assert!(t > previous);
                prop_assert!(physical_ms(t) >= wall.min(PHYSICAL_MS_MAX));
                previous = t;
            }
        }
    }
}
