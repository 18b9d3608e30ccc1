//! Applying member updates: the SWIM/Lifeguard state rules, the member table and suspicions.
//!
//! Precedence (SWIM §4.2): for one member, a higher incarnation wins; at equal incarnation
//! Suspect beats Alive, and Dead/Left beat both. Only the member itself raises its incarnation
//! (refutation). Updates about unknown members are learned only when Alive.

use rand::Rng;
use rand::seq::SliceRandom;

use super::codec::{Message, Update};
use super::member::{Member, MemberEvent, MemberState};
use super::suspicion::{Suspicion, bounds_ms};
use super::{Membership, Slot};
use crate::gossip::wire::{BODY_BYTES_MAX, NodeId};

/// Pings of the last look before a suspicion timer declares death. A live suspect fails it
/// only if every round trip is lost: (1 − 0.9²)ⁿ at 10 % loss, 6.9·10⁻³ for n = 3, 1.7·10⁻⁶
/// for n = 8. Why 8: in a large lossy cluster the piggyback capacity is saturated and a
/// refutation misses some of the nodes that heard the suspicion; each of them reaches this
/// check, and at N = 10,000 and 10 % loss `starling-sim` (k = 5 relays) counted 2 false deaths
/// in the first simulated minute with n = 3. Cost: n datagrams per deciding node.
const FINAL_CHECK_PINGS: usize = 8;

impl Membership {
    pub(super) fn apply_updates(&mut self, updates: &[Update], now: u64) {
        if updates.len() > 1 {
            self.warm_slots(updates);
        }
        for update in updates {
            self.apply_update(*update, now);
        }
    }

    /// Loads the index entries, then the slots, of a batch of updates before applying them:
    /// independent loads overlap, so a cold table (every membership of a large simulation is
    /// cold when its datagram arrives) costs about two memory latencies per batch instead of
    /// two per update. Reads only; the result is discarded.
    fn warm_slots(&self, updates: &[Update]) {
        let mut entries = [0u32; 16];
        let mut sink = 0u32;
        for chunk in updates.chunks(entries.len()) {
            for (entry, update) in entries.iter_mut().zip(chunk) {
                *entry = self.index.first_probe(update.member.id);
            }
            for &entry in &entries[..chunk.len()] {
                if let Some(slot) = self.slots.get(entry as usize) {
                    sink ^= slot.member.incarnation;
                }
            }
        }
        std::hint::black_box(sink);
    }

    /// Applies one update; returns whether it changed our view (then it is re-gossiped).
    pub(super) fn apply_update(&mut self, update: Update, now: u64) -> bool {
        let incoming = update.member;
        if incoming.id == self.me.id {
            return self.apply_about_self(&incoming);
        }
        let Some(index) = self.index.get(incoming.id, &self.slots) else {
            return self.learn_member(incoming, now);
        };
        let current = self.slots[index].member;
        let changed = match incoming.state {
            MemberState::Alive => self.apply_alive(index, current, incoming, now),
            MemberState::Suspect => self.apply_suspect(index, current, update, now),
            MemberState::Dead | MemberState::Left => self.apply_gone(index, current, incoming, now),
        };
        if changed {
            self.broadcasts.push(update);
        }
        changed
    }

    fn learn_member(&mut self, incoming: Member, now: u64) -> bool {
        if incoming.state != MemberState::Alive {
            return false;
        }
        if self.slots.len() >= self.config.members_max {
            self.stats.members_rejected += 1;
            return false;
        }
        let index = self.slots.len();
        self.index.insert(incoming.id, index, &self.slots);
        self.slots.push(Slot {
            member: incoming,
            since_ms: now,
        });
        self.live_count += 1;
        self.add_to_probe_order(incoming.id);
        self.push_event(MemberEvent::Joined(incoming));
        self.broadcasts.push(Update {
            member: incoming,
            origin: 0,
        });
        true
    }

    fn apply_alive(&mut self, index: usize, current: Member, incoming: Member, now: u64) -> bool {
        if incoming.incarnation <= current.incarnation {
            return false;
        }
        self.cancel_suspicion(incoming.id);
        self.set_member(index, incoming, now);
        if current.state != MemberState::Alive {
            if !current.state.is_live() {
                self.add_to_probe_order(incoming.id);
            }
            self.push_event(MemberEvent::Recovered(incoming));
        } else if (current.addr, current.shards, current.partitions)
            != (incoming.addr, incoming.shards, incoming.partitions)
        {
            self.push_event(MemberEvent::Updated(incoming));
        }
        true
    }

    fn apply_suspect(&mut self, index: usize, current: Member, update: Update, now: u64) -> bool {
        let incoming = update.member;
        if incoming.incarnation < current.incarnation || !current.state.is_live() {
            return false;
        }
        if current.state == MemberState::Suspect && incoming.incarnation == current.incarnation {
            return self.confirm_suspicion(incoming.id, update.origin);
        }
        // Alive at ≤ this incarnation, or Suspect at a lower one: a new suspicion.
        self.cancel_suspicion(incoming.id);
        let suspect = Member {
            state: MemberState::Suspect,
            ..current
        };
        let suspect = Member {
            incarnation: incoming.incarnation,
            ..suspect
        };
        self.set_member(index, suspect, now);
        self.start_suspicion(incoming.id, incoming.incarnation, update.origin, now);
        self.push_event(MemberEvent::Suspected(suspect));
        true
    }

    fn apply_gone(&mut self, index: usize, current: Member, incoming: Member, now: u64) -> bool {
        if incoming.incarnation < current.incarnation || !current.state.is_live() {
            return false;
        }
        self.cancel_suspicion(incoming.id);
        let gone = Member {
            state: incoming.state,
            incarnation: incoming.incarnation,
            ..current
        };
        self.set_member(index, gone, now);
        if incoming.state == MemberState::Left {
            self.push_event(MemberEvent::Left(gone));
        } else {
            self.push_event(MemberEvent::Died(gone));
        }
        true
    }

    /// Someone says something about us: refute anything that is not our current Alive record.
    fn apply_about_self(&mut self, incoming: &Member) -> bool {
        if self.leave_started_ms.is_some() {
            return false;
        }
        let ours = self.local();
        let stale_or_same = incoming.incarnation < self.incarnation
            || (incoming.incarnation == self.incarnation && *incoming == ours);
        if stale_or_same {
            if incoming.incarnation < self.incarnation && incoming.state != MemberState::Alive {
                // Someone still repeats an old accusation: it missed our refutation, so send
                // our current record again (it rides on the reply to that very datagram).
                self.broadcast_self();
            }
            return false;
        }
        // Suspect/Dead/Left at ≥ our incarnation, or an Alive record from a previous life.
        self.incarnation = incoming.incarnation.saturating_add(1);
        self.stats.refutations += 1;
        if incoming.state != MemberState::Alive {
            // Others think we are slow: Lifeguard raises our own caution.
            self.adjust_awareness(1);
        }
        self.broadcast_self();
        true
    }

    /// Push-pull merge: remote Dead records only make a member Suspect here (memberlist's rule:
    /// the remote view may be stale, so it must not kill without a local timeout).
    pub(super) fn merge_remote_state(&mut self, records: &[Update], now: u64) {
        let sender = records.first().map_or(0, |first| first.member.id);
        for record in records {
            let mut update = *record;
            if update.member.state == MemberState::Dead {
                update.member.state = MemberState::Suspect;
                update.origin = sender;
            }
            self.apply_update(update, now);
        }
    }

    /// Replaces a slot's record, keeping `live_count`, `since_ms` and the reap queue right.
    fn set_member(&mut self, index: usize, member: Member, now: u64) {
        let slot = &mut self.slots[index];
        let was_live = slot.member.state.is_live();
        if slot.member.state != member.state {
            slot.since_ms = now;
        }
        slot.member = member;
        match (was_live, member.state.is_live()) {
            (true, false) => {
                self.live_count -= 1;
                if self.reap_queue.len() >= 2 * self.config.members_max {
                    // Bounded: a member whose entry falls off stays listed as gone (the table
                    // itself is bounded by members_max) until it changes state again.
                    self.reap_queue.pop_front();
                }
                self.reap_queue.push_back((now, member.id));
            }
            (false, true) => self.live_count += 1,
            _ => {}
        }
        debug_assert!(self.live_count <= self.slots.len());
    }

    /// Forgets Dead/Left members whose state has not changed for `dead_retain_ms`.
    pub(super) fn reap(&mut self, now: u64) {
        while let Some(&(since, id)) = self.reap_queue.front() {
            if since + self.config.dead_retain_ms > now {
                break;
            }
            self.reap_queue.pop_front();
            let Some(index) = self.index.get(id, &self.slots) else {
                continue;
            };
            let slot = self.slots[index];
            if slot.since_ms == since && !slot.member.state.is_live() {
                self.remove_slot(index);
            }
        }
    }

    fn remove_slot(&mut self, index: usize) {
        assert!(
            !self.slots[index].member.state.is_live(),
            "only gone members are forgotten"
        );
        self.index.remove(self.slots[index].member.id, &self.slots);
        self.slots.swap_remove(index);
        if let Some(moved) = self.slots.get(index) {
            self.index.repoint(moved.member.id, self.slots.len(), index);
        }
        debug_assert_eq!(self.index.len(), self.slots.len());
    }

    fn start_suspicion(&mut self, id: NodeId, incarnation: u32, origin: NodeId, now: u64) {
        let cluster = self.cluster_size();
        let bounds = bounds_ms(
            self.config.suspicion_alpha,
            self.config.suspicion_beta,
            self.config.probe_interval_ms,
            self.config.suspicion_floor_min_ms,
            cluster,
        );
        // Too few members to ever gather k confirmations: use the floor directly (memberlist).
        let needed = self.config.suspicion_confirmations;
        let needed = if cluster.saturating_sub(2) < needed as usize {
            0
        } else {
            needed
        };
        let suspicion = Suspicion::new(incarnation, origin, now, bounds, needed);
        self.suspicion_deadlines.insert((suspicion.deadline_ms, id));
        self.suspicions.insert(id, suspicion);
        self.stats.suspicions_started += 1;
    }

    fn confirm_suspicion(&mut self, id: NodeId, origin: NodeId) -> bool {
        let Some(suspicion) = self.suspicions.get_mut(&id) else {
            return false;
        };
        let before = suspicion.deadline_ms;
        if !suspicion.confirm(origin) {
            return false;
        }
        let after = suspicion.deadline_ms;
        self.suspicion_deadlines.remove(&(before, id));
        self.suspicion_deadlines.insert((after, id));
        true
    }

    pub(super) fn cancel_suspicion(&mut self, id: NodeId) {
        if let Some(suspicion) = self.suspicions.remove(&id) {
            self.suspicion_deadlines
                .remove(&(suspicion.deadline_ms, id));
        }
    }

    /// Declares suspects whose timeout passed Dead.
    pub(super) fn expire_suspicions(&mut self, now: u64) {
        while let Some(&(deadline, id)) = self.suspicion_deadlines.first() {
            if deadline > now {
                break;
            }
            self.suspicion_deadlines.pop_first();
            let Some(mut suspicion) = self.suspicions.remove(&id) else {
                continue;
            };
            let Some(index) = self.index.get(id, &self.slots) else {
                continue;
            };
            let current = self.slots[index].member;
            if current.state != MemberState::Suspect || current.incarnation != suspicion.incarnation
            {
                continue;
            }
            if !suspicion.final_check_sent {
                // Last look before declaring death (our addition to SWIM): a rumor can die out
                // before reaching us, so a refutation may have passed us by. Ping the suspect
                // with the stale suspicion; a live one answers with its newer Alive record.
                suspicion.final_check_sent = true;
                suspicion.deadline_ms = now + 2 * self.scaled_ms(self.config.probe_interval_ms);
                self.suspicion_deadlines.insert((suspicion.deadline_ms, id));
                self.suspicions.insert(id, suspicion);
                self.send_final_check(current);
                continue;
            }
            self.stats.deaths_declared += 1;
            let dead = Member {
                state: MemberState::Dead,
                ..current
            };
            self.apply_update(
                Update {
                    member: dead,
                    origin: 0,
                },
                now,
            );
        }
    }

    /// [`FINAL_CHECK_PINGS`] pings (losses are independent) carrying our suspicion of `suspect`
    /// first.
    fn send_final_check(&mut self, suspect: Member) {
        let accusation = Update {
            member: suspect,
            origin: self.me.id,
        };
        for _ in 0..FINAL_CHECK_PINGS {
            let sequence = self.next_sequence();
            let mut updates = vec![accusation];
            let space = BODY_BYTES_MAX - 13 - super::codec::update_bytes(&accusation);
            // One slot is the accusation's: take one fewer, so none is counted as sent unsent.
            let count = self.config.updates_per_datagram_max - 1;
            updates.extend(self.take_some_updates(count, space));
            let message = Message::Ping {
                sequence,
                target: suspect.id,
                updates,
            };
            self.push_transmit(suspect.addr, &message);
        }
    }

    /// Our own verdict after a failed probe.
    pub(super) fn suspect(&mut self, id: NodeId, now: u64) {
        let Some(index) = self.index.get(id, &self.slots) else {
            return;
        };
        let current = self.slots[index].member;
        if !current.state.is_live() {
            return;
        }
        let member = Member {
            state: MemberState::Suspect,
            ..current
        };
        let update = Update {
            member,
            origin: self.me.id,
        };
        self.apply_update(update, now);
        // Tell the suspect at once, so a live one can refute long before the timeout.
        let updates = vec![update];
        self.push_transmit(current.addr, &super::codec::Message::Gossip { updates });
    }

    /// Puts a (re)joined member at a random place among those not yet probed this round.
    fn add_to_probe_order(&mut self, id: NodeId) {
        if self.probe_order.len() >= 2 * self.config.members_max {
            // Lazily deleted entries piled up: force a rebuild at the next probe.
            self.probe_cursor = self.probe_order.len();
            return;
        }
        self.probe_order.push(id);
        let last = self.probe_order.len() - 1;
        let start = self.probe_cursor.min(last);
        let swap_with = self.rng.random_range(start..=last);
        self.probe_order.swap(swap_with, last);
    }

    /// The next live member in the shuffled round-robin order.
    pub(super) fn next_probe_target(&mut self) -> Option<Member> {
        for _ in 0..=(2 * self.probe_order.len() + 1) {
            if self.probe_cursor >= self.probe_order.len() {
                self.rebuild_probe_order();
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let id = self.probe_order[self.probe_cursor];
            self.probe_cursor += 1;
            if let Some(member) = self.member(id)
                && member.state.is_live()
            {
                return Some(*member);
            }
        }
        None
    }

    fn rebuild_probe_order(&mut self) {
        self.probe_order.clear();
        self.probe_order.extend(
            self.slots
                .iter()
                .filter(|slot| slot.member.state.is_live())
                .map(|slot| slot.member.id),
        );
        self.probe_order.shuffle(&mut self.rng);
        self.probe_cursor = 0;
    }

    /// Up to `count` distinct random slot indices whose member passes `filter`.
    pub(super) fn random_members(
        &mut self,
        count: usize,
        filter: impl Fn(&Member) -> bool,
    ) -> Vec<usize> {
        let mut chosen = Vec::with_capacity(count);
        if count == 0 || self.slots.is_empty() {
            return chosen;
        }
        if self.slots.len() <= 64 {
            let mut eligible: Vec<usize> = (0..self.slots.len())
                .filter(|&index| filter(&self.slots[index].member))
                .collect();
            eligible.shuffle(&mut self.rng);
            eligible.truncate(count);
            return eligible;
        }
        // Large tables: rejection sampling, bounded attempts (may return fewer).
        for _ in 0..(count * 4 + 8) {
            if chosen.len() >= count {
                break;
            }
            let index = self.rng.random_range(0..self.slots.len());
            if filter(&self.slots[index].member) && !chosen.contains(&index) {
                chosen.push(index);
            }
        }
        chosen
    }
}
