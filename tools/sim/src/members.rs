//! Membership in the simulation: every node runs the real SWIM/Lifeguard state machine of
//! `starling::gossip::membership`; its live members become the node's replication view; its
//! `Died` events are checked against the truth (crashed or not) for detection time and false
//! positives.
//!
//! Memory: a membership holds ~80–100 bytes per member and the node's replication view 16 more,
//! so N nodes cost ~120·N² bytes (12 GB peak RSS measured at N = 10,000). `--membership auto`
//! therefore runs it only up to N = 2,000 and larger runs use one shared, static view unless
//! `--membership on` is given (see `SimConfig::membership`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use rand::Rng;

use starling::gossip::Kind;
use starling::gossip::membership::{
    Config, LocalNode, Member, MemberEvent, MemberState, Membership,
};
use starling::replication::PeerInfo;
use starling::replication::wire::DATAGRAM_OVERHEAD_BYTES;

use crate::world::{Event, World};

/// One node's membership and the replication view derived from it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct MemberNode {
    membership: Membership,
    /// Live members as `PeerInfo`, sorted by `(ring, node)`.
    pub(crate) view: Vec<PeerInfo>,
    /// Whether node i is in `view` (one bit each), so the frequent events that do not change
    /// it (a refuted suspicion) cost no binary search over N peers.
    in_view: Vec<u64>,
    timer_at_ms: Option<u64>,
}

/// A permanent crash whose detection is measured.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Kill {
    pub(crate) node: u32,
    pub(crate) at_ms: u64,
    /// Observer → time it declared the node dead.
    pub(crate) declared: BTreeMap<u32, u64>,
}

/// Gossip address of node `index`: 10.0.0.0 + index, port 7946.
pub(crate) fn addr_of(index: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x0A00_0000 + index), 7946))
}

fn index_of(addr: SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V4(v4) => u32::from(*v4.ip()).checked_sub(0x0A00_0000),
        SocketAddr::V6(_) => None,
    }
}

fn local(index: u32, partitions: u16) -> LocalNode {
    LocalNode {
        id: u64::from(index),
        addr: addr_of(index),
        shards: 1,
        partitions: u32::from(partitions),
    }
}

fn peer_of(member: &Member) -> PeerInfo {
    PeerInfo::new(member.id, member.shards.max(1))
}

impl MemberNode {
    /// A member that starts out knowing the whole (converged) cluster.
    pub(crate) fn converged(index: u32, nodes: u32, partitions: u16, seed: u64) -> MemberNode {
        let mut membership = Membership::new(local(index, partitions), Config::default(), seed, 0);
        let all: Vec<Member> = (0..nodes)
            .map(|other| Member::from_local(&local(other, partitions), 0, MemberState::Alive))
            .collect();
        membership.insert_known_members(&all, 0);
        let mut view: Vec<PeerInfo> = all
            .iter()
            .filter(|m| m.id != u64::from(index))
            .map(peer_of)
            .collect();
        view.sort_unstable();
        let mut in_view = vec![u64::MAX; (nodes as usize).div_ceil(64)];
        set_bit(&mut in_view, index, false);
        MemberNode {
            membership,
            view,
            in_view,
            timer_at_ms: None,
        }
    }

    /// A restarted member: knows only itself and joins through `seeds`.
    pub(crate) fn joining(
        index: u32,
        partitions: u16,
        seed: u64,
        seeds: &[u32],
        now_ms: u64,
    ) -> MemberNode {
        let mut membership =
            Membership::new(local(index, partitions), Config::default(), seed, now_ms);
        let seeds: Vec<SocketAddr> = seeds.iter().map(|&s| addr_of(s)).collect();
        membership.join(&seeds, now_ms);
        MemberNode {
            membership,
            view: Vec::new(),
            in_view: Vec::new(),
            timer_at_ms: None,
        }
    }

    /// Membership updates waiting for (re)transmission.
    pub(crate) fn updates_pending(&self) -> usize {
        self.membership.updates_pending()
    }

    fn update_view(&mut self, event: &MemberEvent) {
        // Suspects stay in the view; skipping them saves a binary search over N peers.
        if matches!(event, MemberEvent::Suspected(_)) {
            return;
        }
        let member = event.member();
        let live = member.state.is_live();
        let plain = matches!(
            event,
            MemberEvent::Recovered(_) | MemberEvent::Died(_) | MemberEvent::Left(_)
        );
        if let Some(index) = index_of(member.addr)
            && plain
            && get_bit(&self.in_view, index) == live
        {
            return; // already as it should be
        }
        let peer = peer_of(member);
        if let Some(index) = index_of(member.addr) {
            set_bit(&mut self.in_view, index, live);
        }
        let position = self.view.binary_search(&peer);
        match (member.state.is_live(), position) {
            (true, Err(at)) => self.view.insert(at, peer),
            (false, Ok(at)) => {
                self.view.remove(at);
            }
            _ => {}
        }
    }
}

fn get_bit(bits: &[u64], index: u32) -> bool {
    bits.get(index as usize / 64)
        .is_some_and(|word| word & (1 << (index % 64)) != 0)
}

fn set_bit(bits: &mut Vec<u64>, index: u32, value: bool) {
    let word = index as usize / 64;
    if word >= bits.len() {
        bits.resize(word + 1, 0);
    }
    if value {
        bits[word] |= 1 << (index % 64);
    } else {
        bits[word] &= !(1 << (index % 64));
    }
}

impl World {
    /// Starts (or restarts) node `index`'s membership and schedules its first timer.
    pub(crate) fn start_membership(&mut self, index: u32, restart: bool) {
        if !self.config.membership {
            return;
        }
        let seed = self.rng.random();
        let node = if restart {
            let seeds: Vec<u32> = (0..3)
                .map(|_| self.rng.random_range(0..self.config.nodes))
                .collect();
            MemberNode::joining(index, self.config.partitions, seed, &seeds, self.now_ms())
        } else {
            MemberNode::converged(index, self.config.nodes, self.config.partitions, seed)
        };
        self.nodes[index as usize].members = Some(node);
        self.drain_membership(index);
    }

    /// A membership timer fired.
    pub(crate) fn on_member_timer(&mut self, index: u32, epoch: u32, at_ms: u64) {
        let now_ms = self.now_ms();
        let node = &mut self.nodes[index as usize];
        if !node.up || node.epoch != epoch {
            return;
        }
        let Some(members) = node.members.as_mut() else {
            return;
        };
        if members.timer_at_ms != Some(at_ms) {
            return; // superseded by an earlier timer
        }
        members.timer_at_ms = None;
        members.membership.handle_timeout(now_ms);
        self.drain_membership(index);
    }

    /// A membership datagram arrived at `to`.
    pub(crate) fn on_member_datagram(&mut self, from: u32, to: u32, kind_byte: u8, body: &[u8]) {
        let now_ms = self.now_ms();
        let node = &mut self.nodes[to as usize];
        let Some(members) = node.members.as_mut() else {
            return;
        };
        let result =
            members
                .membership
                .handle_datagram(addr_of(from), Kind(kind_byte), body, now_ms);
        assert!(
            result.is_ok(),
            "membership rejected a body it encoded itself: {result:?}"
        );
        self.drain_membership(to);
    }

    fn drain_membership(&mut self, index: u32) {
        let now_ms = self.now_ms();
        let mut transmits = Vec::new();
        let mut events = Vec::new();
        let epoch = self.nodes[index as usize].epoch;
        let Some(members) = self.nodes[index as usize].members.as_mut() else {
            return;
        };
        while let Some(transmit) = members.membership.poll_transmit() {
            transmits.push(transmit);
        }
        while let Some(event) = members.membership.poll_event() {
            members.update_view(&event);
            events.push(event);
        }
        if let Some(next_ms) = members.membership.poll_timeout() {
            let next_ms = next_ms.max(now_ms);
            if members.timer_at_ms.is_none_or(|at| next_ms < at) {
                members.timer_at_ms = Some(next_ms);
                self.queue.push(
                    next_ms * 1_000,
                    Event::MemberTimer {
                        node: index,
                        epoch,
                        at_ms: next_ms,
                    },
                );
            }
        }
        for transmit in transmits {
            let Some(to) = index_of(transmit.to).filter(|&to| to < self.config.nodes) else {
                continue;
            };
            self.counters.bytes_membership +=
                (transmit.body.len() + DATAGRAM_OVERHEAD_BYTES) as u64;
            self.transmit(index, to, transmit.kind.0, transmit.body);
        }
        for event in events {
            if let MemberEvent::Died(member) = event {
                self.on_declared_dead(index, member.id as u32, now_ms);
            }
        }
    }

    fn on_declared_dead(&mut self, observer: u32, target: u32, now_ms: u64) {
        let Some(node) = self.nodes.get(target as usize) else {
            return;
        };
        // Deaths declared across a partition are the partition's doing, not false positives.
        if node.up && self.crash_counts[target as usize] == 0 && !self.partition_seen {
            self.counters.false_positives += 1;
            self.counters.falsely_dead.insert(target);
            return;
        }
        if let Some(kill) = self
            .kills
            .iter_mut()
            .find(|kill| kill.node == target && !node.up)
        {
            kill.declared.entry(observer).or_insert(now_ms);
        }
    }

    /// Detection time: for each kill, the latest time a live, never-crashed observer declared
    /// it dead (ms after the kill); an observer that never did counts as undetected.
    pub(crate) fn detection_summary(&self) -> (u64, u64) {
        let mut worst_ms = 0;
        let mut undetected = 0;
        for kill in &self.kills {
            for observer in 0..self.config.nodes {
                let healthy =
                    self.nodes[observer as usize].up && self.crash_counts[observer as usize] == 0;
                if observer == kill.node || !healthy {
                    continue;
                }
                match kill.declared.get(&observer) {
                    Some(at_ms) => worst_ms = worst_ms.max(at_ms - kill.at_ms),
                    None => undetected += 1,
                }
            }
        }
        (worst_ms, undetected)
    }
}
