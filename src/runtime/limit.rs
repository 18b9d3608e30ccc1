//! The node-wide connection limit, shared by all shards: a counter that never exceeds its bound.
//!
//! This is the one synchronisation primitive the runtime writes itself (everything else crosses
//! threads through glommio's channel mesh), so it has a loom model test (`RUSTFLAGS="--cfg loom"
//! cargo test -p starling --lib runtime::limit`). **Invariant:** the count never exceeds `max`,
//! and every successful [`ConnectionLimit::try_acquire`] is undone by exactly one release.

#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering};

/// A bounded counter of open connections.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` connections.
    pub fn new(max: usize) -> Self {
        assert!(max > 0, "a connection limit of 0 would refuse every client");
        ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a slot; `false` when `max` connections are open. Each `true` must be followed by
    /// exactly one [`ConnectionLimit::release`].
    pub fn try_acquire(&self) -> bool {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return false;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => open = actual,
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Gives a slot back.
    pub fn release(&self) {
        let before = self.open.fetch_sub(1, Ordering::AcqRel);
        assert!(
            before > 0,
            "connection limit released more often than acquired"
        );
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_max_and_frees_on_release() {
        let limit = ConnectionLimit::new(2);
        assert!(limit.try_acquire() && limit.try_acquire());
        assert!(!limit.try_acquire());
        limit.release();
        assert_eq!(limit.open(), 1);
        assert!(limit.try_acquire());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two threads race for one slot (and the main thread watches): at most one holds it at a
    /// time, and it always comes back.
    #[test]
    fn never_exceeds_max_under_any_interleaving() {
        loom::model(|| {
            let limit = Arc::new(ConnectionLimit::new(1));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let limit = limit.clone();
                    loom::thread::spawn(move || {
                        let won = limit.try_acquire();
                        assert!(limit.open() <= 1);
                        if won {
                            limit.release();
                        }
                        won
                    })
                })
                .collect();
            let winners = threads
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .filter(|&won| won)
                .count();
            assert!((1..=2).contains(&winners));
            assert_eq!(limit.open(), 0);
        });
    }
}
