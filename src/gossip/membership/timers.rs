//! Everything driven by time or by probe answers: probes and indirect probes, relays,
//! dissemination rounds, push-pull, join retries, and the timer bookkeeping.

use std::net::SocketAddr;

use super::codec::{Message, PUSH_PULL_REPLY_WANTED, Update, update_bytes};
use super::{Membership, Probe, Relay};
use crate::gossip::wire::{BODY_BYTES_MAX, NodeId};

/// Body bytes before the update section, per message (PING_REQ with an IPv6 address).
const PING_FIXED_BYTES: usize = 4 + 8 + 1;
const ACK_FIXED_BYTES: usize = 4 + 1;
const PING_REQ_FIXED_BYTES: usize = 4 + 8 + 19 + 1;
const GOSSIP_FIXED_BYTES: usize = 1;

impl Membership {
    /// Runs every timer that is due at `now`. Call when [`Membership::poll_timeout`] passed
    /// (calling earlier or more often is harmless).
    pub fn handle_timeout(&mut self, now: u64) {
        if self.leave_started_ms.is_some() {
            if !self.leave_done(now) {
                self.gossip_tick(now);
            }
            return;
        }
        self.expire_relays(now);
        self.expire_suspicions(now);
        self.reap(now);
        self.probe_tick(now);
        self.gossip_tick(now);
        self.push_pull_tick(now);
        self.join_tick(now);
    }

    /// The earliest time [`Membership::handle_timeout`] has work; `None` once left.
    pub fn poll_timeout(&self) -> Option<u64> {
        if let Some(started) = self.leave_started_ms {
            let end = started + self.config.leave_propagate_ms;
            return (self.next_gossip_ms < end).then_some(self.next_gossip_ms);
        }
        let mut next = self
            .next_probe_ms
            .min(self.next_gossip_ms)
            .min(self.next_push_pull_ms);
        if let Some(probe) = &self.probe
            && !probe.indirect_sent
        {
            next = next.min(probe.ack_deadline_ms);
        }
        let timers = [
            self.suspicion_deadlines
                .first()
                .map(|&(deadline, _)| deadline),
            self.next_relay_deadline(),
            self.next_join_ms,
            self.reap_queue
                .front()
                .map(|&(since, _)| since + self.config.dead_retain_ms),
        ];
        Some(timers.into_iter().flatten().fold(next, u64::min))
    }

    fn probe_tick(&mut self, now: u64) {
        if let Some(probe) = self.probe
            && !probe.indirect_sent
            && now >= probe.ack_deadline_ms
        {
            self.send_indirect_probes(probe);
        }
        if now < self.next_probe_ms {
            return;
        }
        if let Some(probe) = self.probe.take() {
            self.finish_failed_probe(probe, now);
        }
        self.next_probe_ms = now + self.scaled_ms(self.config.probe_interval_ms);
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let sequence = self.next_sequence();
        self.send_ping(target.addr, target.id, sequence);
        self.stats.probes_sent += 1;
        self.probe = Some(Probe {
            target: target.id,
            addr: target.addr,
            sequence,
            ack_deadline_ms: now + self.scaled_ms(self.config.probe_timeout_ms),
            indirect_sent: false,
            nacks_expected: 0,
            nacks_received: 0,
        });
    }

    fn send_indirect_probes(&mut self, probe: Probe) {
        let target = probe.target;
        let relays = self.random_members(self.config.indirect_checks, |member| {
            member.state == super::MemberState::Alive && member.id != target
        });
        for &index in &relays {
            let to = self.slots[index].member.addr;
            let updates = self.take_updates(BODY_BYTES_MAX - PING_REQ_FIXED_BYTES);
            let message = Message::PingReq {
                sequence: probe.sequence,
                target,
                target_addr: probe.addr,
                updates,
            };
            self.push_transmit(to, &message);
            self.stats.indirect_probes_sent += 1;
        }
        // One direct retry: at 10 % loss it removes most false suspicions for one datagram.
        self.send_ping(probe.addr, target, probe.sequence);
        self.probe = Some(Probe {
            indirect_sent: true,
            nacks_expected: u32::try_from(relays.len()).unwrap_or(u32::MAX),
            ..probe
        });
    }

    /// Lifeguard: missing nacks mean *we* may be the unhealthy one.
    fn finish_failed_probe(&mut self, probe: Probe, now: u64) {
        self.stats.probes_failed += 1;
        let delta = if probe.nacks_expected > 0 {
            probe.nacks_expected.saturating_sub(probe.nacks_received)
        } else {
            1
        };
        self.adjust_awareness(i64::from(delta));
        self.suspect(probe.target, now);
    }

    pub(super) fn on_ack(&mut self, from: SocketAddr, sequence: u32) {
        if let Some(probe) = self.probe
            && probe.sequence == sequence
        {
            self.probe = None;
            // A direct answer is evidence of our own health; a relayed one is neutral.
            if from == probe.addr {
                self.adjust_awareness(-1);
            }
            return;
        }
        let position = self
            .relays
            .iter()
            .position(|relay| relay.sequence == sequence);
        if let Some(relay) = position.and_then(|position| self.relays.remove(position)) {
            self.send_ack(relay.requester, relay.requester_sequence);
        }
    }

    pub(super) fn on_nack(&mut self, sequence: u32) {
        if let Some(probe) = &mut self.probe
            && probe.sequence == sequence
        {
            probe.nacks_received += 1;
        }
    }

    pub(super) fn start_relay(
        &mut self,
        requester: SocketAddr,
        requester_sequence: u32,
        target: NodeId,
        target_addr: SocketAddr,
        now: u64,
    ) {
        if self.relays.len() >= self.config.relays_max {
            self.stats.relays_rejected += 1;
            return;
        }
        let sequence = self.next_sequence();
        self.send_ping(target_addr, target, sequence);
        // Nack a little before the requester's own deadline so the nack can still count, but
        // keep forwarding a late ack (a slow target) until the requester's interval surely ended.
        let deadline_ms = now + self.scaled_ms(self.config.probe_timeout_ms) * 4 / 5;
        let expiry_ms = now + self.scaled_ms(self.config.probe_interval_ms);
        let relay = Relay {
            sequence,
            requester,
            requester_sequence,
            deadline_ms,
            nacked: false,
            expiry_ms,
        };
        self.relays.push_back(relay);
    }

    fn expire_relays(&mut self, now: u64) {
        self.relays.retain(|relay| relay.expiry_ms > now);
        let due: Vec<usize> = (0..self.relays.len())
            .filter(|&index| !self.relays[index].nacked && self.relays[index].deadline_ms <= now)
            .collect();
        for index in due {
            self.relays[index].nacked = true;
            let relay = self.relays[index];
            let updates = self.take_updates(BODY_BYTES_MAX - ACK_FIXED_BYTES);
            let message = Message::Nack {
                sequence: relay.requester_sequence,
                updates,
            };
            self.push_transmit(relay.requester, &message);
        }
    }

    fn next_relay_deadline(&self) -> Option<u64> {
        let nack = |relay: &Relay| {
            if relay.nacked {
                relay.expiry_ms
            } else {
                relay.deadline_ms
            }
        };
        self.relays.iter().map(nack).min()
    }

    fn send_ping(&mut self, to: SocketAddr, target: NodeId, sequence: u32) {
        let updates = self.take_updates(BODY_BYTES_MAX - PING_FIXED_BYTES);
        self.push_transmit(
            to,
            &Message::Ping {
                sequence,
                target,
                updates,
            },
        );
    }

    pub(super) fn send_ack(&mut self, to: SocketAddr, sequence: u32) {
        let updates = self.take_updates(BODY_BYTES_MAX - ACK_FIXED_BYTES);
        self.push_transmit(to, &Message::Ack { sequence, updates });
    }

    pub(super) fn send_gossip(&mut self, to: SocketAddr) {
        let updates = self.take_updates(BODY_BYTES_MAX - GOSSIP_FIXED_BYTES);
        if !updates.is_empty() {
            self.push_transmit(to, &Message::Gossip { updates });
        }
    }

    fn gossip_tick(&mut self, now: u64) {
        if now < self.next_gossip_ms {
            return;
        }
        self.next_gossip_ms = now + self.config.gossip_interval_ms;
        if self.broadcasts.is_empty() {
            return;
        }
        // Suspects and the recently dead get gossip too, so they learn they must refute.
        let targets = self.random_gossip_targets(now);
        for index in targets {
            let to = self.slots[index].member.addr;
            self.send_gossip(to);
        }
    }

    fn random_gossip_targets(&mut self, now: u64) -> Vec<usize> {
        let mut targets =
            self.random_members(self.config.gossip_fanout, |member| member.state.is_live());
        // Plus, sometimes, one recently dead member: a falsely dead node learns and refutes.
        if let Some(&(since, id)) = self.reap_queue.back()
            && since + self.config.gossip_to_dead_ms > now
            && let Some(index) = self.index.get(id, &self.slots)
            && self.slots[index].member.state == super::MemberState::Dead
            && !targets.contains(&index)
        {
            targets.push(index);
        }
        targets
    }

    fn push_pull_tick(&mut self, now: u64) {
        if now < self.next_push_pull_ms {
            return;
        }
        let cluster = self.cluster_size();
        let scale = if cluster > 32 {
            ((cluster as f64).log2() - 5.0).ceil() as u64 + 1
        } else {
            1
        };
        self.next_push_pull_ms = now + self.config.push_pull_interval_ms * scale;
        let targets = self.random_members(1, |member| member.state == super::MemberState::Alive);
        if let Some(&index) = targets.first() {
            let to = self.slots[index].member.addr;
            self.send_push_pull(to, PUSH_PULL_REPLY_WANTED);
        }
    }

    fn join_tick(&mut self, now: u64) {
        let Some(next) = self.next_join_ms else {
            return;
        };
        if now < next {
            return;
        }
        if self.live_count > 0 {
            // Joined. Pages of the seed's answer may have been lost: one early push-pull with
            // another member fills the gaps long before the periodic one.
            self.next_join_ms = None;
            self.next_push_pull_ms = self
                .next_push_pull_ms
                .min(now + 2 * self.config.join_retry_ms);
            return;
        }
        self.send_join(now);
    }

    pub(super) fn send_join(&mut self, now: u64) {
        for index in 0..self.seeds.len() {
            let seed = self.seeds[index];
            self.send_push_pull(seed, PUSH_PULL_REPLY_WANTED);
        }
        self.next_join_ms = Some(now + self.config.join_retry_ms);
    }

    /// Sends our full state in pages; each page starts with our own record. Starts at a random
    /// member so that, when `push_pull_datagrams_max` pages cannot hold everyone, repeated
    /// exchanges still cover the whole table.
    pub(super) fn send_push_pull(&mut self, to: SocketAddr, flags: u8) {
        let own = Update {
            member: self.local(),
            origin: 0,
        };
        let total = self.slots.len();
        let start = if total == 0 {
            0
        } else {
            rand::Rng::random_range(&mut self.rng, 0..total)
        };
        let budget = BODY_BYTES_MAX - 2;
        let mut cursor = 0;
        for page in 0..self.config.push_pull_datagrams_max {
            let mut records = vec![own];
            let mut bytes = update_bytes(&own);
            while cursor < total && records.len() < 255 {
                let slot = &self.slots[(start + cursor) % total];
                let record = Update {
                    member: slot.member,
                    origin: self.me.id,
                };
                let size = update_bytes(&record);
                if bytes + size > budget {
                    break;
                }
                bytes += size;
                records.push(record);
                cursor += 1;
            }
            // Only the first page asks for a reply: one request, one full answer.
            let page_flags = if page == 0 {
                flags
            } else {
                flags & !PUSH_PULL_REPLY_WANTED
            };
            self.push_transmit(
                to,
                &Message::PushPull {
                    flags: page_flags,
                    records,
                },
            );
            if cursor >= total {
                break;
            }
        }
    }
}
