//! The event queue: a min-heap of `(time, sequence)`; the sequence number breaks ties in
//! insertion order, so equal times never depend on heap internals (determinism).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(serde::Serialize, serde::Deserialize)]
struct Scheduled<E> {
    at_us: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

/// Events ordered by virtual time in microseconds.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Queue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    seq: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E> Queue<E> {
    /// Schedules `event` at `at_us`.
    pub fn push(&mut self, at_us: u64, event: E) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at_us,
            seq: self.seq,
            event,
        });
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.heap
            .pop()
            .map(|scheduled| (scheduled.at_us, scheduled.event))
    }

    /// The time of the earliest event.
    pub fn peek_at(&self) -> Option<u64> {
        self.heap.peek().map(|scheduled| scheduled.at_us)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_ties_in_insertion_order() {
        let mut queue = Queue::default();
        queue.push(5, "c");
        queue.push(1, "a");
        queue.push(5, "d");
        queue.push(1, "b");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (1, "b"), (5, "c"), (5, "d")]);
    }
}
