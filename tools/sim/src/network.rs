//! The network model: latency distribution, loss, duplication, partitions. Reordering follows
//! from the latency jitter (two datagrams overtake each other whenever the later one draws a
//! shorter delay).

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Network parameters.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Mean one-way latency in milliseconds.
    pub latency_ms: f64,
}

/// The network: stateless except for the current partition.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct Network {
    config: NetworkConfig,
    /// Nodes `< split` and nodes `>= split` cannot talk while a partition is on.
    split: Option<u32>,
}

impl Network {
    /// A healed network.
    pub fn new(config: NetworkConfig) -> Network {
        assert!((0.0..1.0).contains(&config.loss), "loss must be in [0, 1)");
        assert!(
            (0.0..1.0).contains(&config.duplicate),
            "duplicate must be in [0, 1)"
        );
        Network {
            config,
            split: None,
        }
    }

    /// Cuts the cluster in two at node index `split`.
    pub fn partition(&mut self, split: u32) {
        self.split = Some(split);
    }

    /// Heals the partition.
    pub fn heal(&mut self) {
        self.split = None;
    }

    /// Whether `from` and `to` can reach each other now.
    pub fn connected(&self, from: u32, to: u32) -> bool {
        self.split
            .is_none_or(|split| (from < split) == (to < split))
    }

    /// One-way delay in microseconds: half the mean fixed, half exponential (a long tail).
    pub fn delay_us(&self, rng: &mut Xoshiro256PlusPlus) -> u64 {
        let half = self.config.latency_ms * 500.0;
        let tail = -half * (1.0 - rng.random::<f64>()).ln();
        (half + tail.min(20.0 * half)) as u64
    }

    /// Delays of the copies of one datagram that arrive: none (lost), one, or two.
    pub fn transmit(&self, rng: &mut Xoshiro256PlusPlus, from: u32, to: u32) -> Copies {
        let mut copies = Copies {
            delays_us: [0; 2],
            count: 0,
        };
        if !self.connected(from, to) || rng.random::<f64>() < self.config.loss {
            return copies;
        }
        copies.delays_us[0] = self.delay_us(rng);
        copies.count = 1;
        if rng.random::<f64>() < self.config.duplicate {
            copies.delays_us[1] = self.delay_us(rng);
            copies.count = 2;
        }
        copies
    }
}

/// The arriving copies of one datagram (no allocation: the simulator sends millions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copies {
    delays_us: [u64; 2],
    count: usize,
}

impl Copies {
    /// One-way delay of each arriving copy, in microseconds.
    pub fn delays_us(&self) -> &[u64] {
        &self.delays_us[..self.count]
    }
}
