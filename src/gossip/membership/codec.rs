//! Membership message bodies: encoding and a decoder that rejects garbage without panicking.
//!
//! Every body is a kind-specific fixed part followed by an *update section*:
//! `count: u8, count × update`. An update is
//! `node u64 | incarnation u32 | state u8 | shards u16 | partitions u32 | addr | [origin u64]`
//! where `addr` is `4 | ipv4 (4) | port u16` or `6 | ipv6 (16) | port u16`, and `origin` (who
//! suspects) is present only for Suspect. All integers little-endian. 26 bytes for an IPv4
//! Alive update. The same section is what other modules piggyback ([`encode_section`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::member::{Member, MemberState};
use crate::gossip::wire::{Kind, NodeId};

/// An update about one member, as gossiped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    /// The member record.
    pub member: Member,
    /// For Suspect: the node that suspects (confirmations count distinct origins). Else 0.
    pub origin: NodeId,
}

/// Push-pull flag: the receiver should answer with its own state.
pub const PUSH_PULL_REPLY_WANTED: u8 = 1;

/// A decoded membership message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Direct probe of `target`.
    Ping {
        /// Matches the ack.
        sequence: u32,
        /// Who we think answers at this address (a restarted node under a new id must not ack).
        target: NodeId,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// Probe answer.
    Ack {
        /// The probe's sequence.
        sequence: u32,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// Ask the receiver to probe `target` for us.
    PingReq {
        /// Our probe's sequence, echoed in the forwarded ack or nack.
        sequence: u32,
        /// Target node.
        target: NodeId,
        /// Target address.
        target_addr: SocketAddr,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// Relay could not reach the target in time (Lifeguard).
    Nack {
        /// The requester's probe sequence.
        sequence: u32,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// A page of full state; the first record is the sender itself.
    PushPull {
        /// [`PUSH_PULL_REPLY_WANTED`] or 0.
        flags: u8,
        /// Member records.
        records: Vec<Update>,
    },
    /// Updates only.
    Gossip {
        /// The updates.
        updates: Vec<Update>,
    },
}

/// Why a membership body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body ended inside a field.
    #[error("membership body truncated at byte {offset}")]
    Truncated {
        /// Where the missing field starts.
        offset: usize,
    },
    /// Bytes left over after the message.
    #[error("{bytes} trailing bytes after the membership message")]
    Trailing {
        /// Leftover bytes.
        bytes: usize,
    },
    /// Not a membership kind this version knows.
    #[error("unknown membership kind {kind:#04x}")]
    UnknownKind {
        /// The kind.
        kind: u8,
    },
    /// A member state byte out of range.
    #[error("bad member state {byte}")]
    BadState {
        /// The byte.
        byte: u8,
    },
    /// An address family tag other than 4 or 6.
    #[error("bad address family {byte}")]
    BadAddressFamily {
        /// The byte.
        byte: u8,
    },
    /// Unknown push-pull flags.
    #[error("bad push-pull flags {flags:#04x}")]
    BadFlags {
        /// The flags.
        flags: u8,
    },
}

/// Encoded size of one update.
pub fn update_bytes(update: &Update) -> usize {
    let addr = match update.member.addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    };
    let origin = if update.member.state == MemberState::Suspect {
        8
    } else {
        0
    };
    8 + 4 + 1 + 2 + 4 + addr + origin
}

/// Appends one update.
pub fn encode_update(update: &Update, out: &mut Vec<u8>) {
    let start = out.len();
    let member = &update.member;
    out.extend_from_slice(&member.id.to_le_bytes());
    out.extend_from_slice(&member.incarnation.to_le_bytes());
    out.push(member.state as u8);
    out.extend_from_slice(&member.shards.to_le_bytes());
    out.extend_from_slice(&member.partitions.to_le_bytes());
    encode_addr(member.addr, out);
    if member.state == MemberState::Suspect {
        out.extend_from_slice(&update.origin.to_le_bytes());
    }
    debug_assert_eq!(out.len() - start, update_bytes(update));
}

fn encode_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_le_bytes());
}

/// Appends an update section (count byte + updates). At most 255 updates.
pub fn encode_section(updates: &[Update], out: &mut Vec<u8>) {
    let Ok(count) = u8::try_from(updates.len()) else {
        panic!(
            "update section holds at most 255 updates, got {}",
            updates.len()
        );
    };
    out.push(count);
    for update in updates {
        encode_update(update, out);
    }
}

impl Message {
    /// The wire kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Ping { .. } => Kind::PING,
            Self::Ack { .. } => Kind::ACK,
            Self::PingReq { .. } => Kind::PING_REQ,
            Self::Nack { .. } => Kind::NACK,
            Self::PushPull { .. } => Kind::PUSH_PULL,
            Self::Gossip { .. } => Kind::GOSSIP,
        }
    }

    /// Encodes the body (without the datagram header).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ping {
                sequence,
                target,
                updates,
            } => {
                out.extend_from_slice(&sequence.to_le_bytes());
                out.extend_from_slice(&target.to_le_bytes());
                encode_section(updates, out);
            }
            Self::Ack { sequence, updates } | Self::Nack { sequence, updates } => {
                out.extend_from_slice(&sequence.to_le_bytes());
                encode_section(updates, out);
            }
            Self::PingReq {
                sequence,
                target,
                target_addr,
                updates,
            } => {
                out.extend_from_slice(&sequence.to_le_bytes());
                out.extend_from_slice(&target.to_le_bytes());
                encode_addr(*target_addr, out);
                encode_section(updates, out);
            }
            Self::PushPull { flags, records } => {
                out.push(*flags);
                encode_section(records, out);
            }
            Self::Gossip { updates } => encode_section(updates, out),
        }
    }

    /// Decodes a body of the given kind; never panics, rejects trailing bytes.
    pub fn decode(kind: Kind, body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader {
            bytes: body,
            offset: 0,
        };
        let message = match kind {
            Kind::PING => Self::Ping {
                sequence: reader.u32()?,
                target: reader.u64()?,
                updates: reader.section()?,
            },
            Kind::ACK => Self::Ack {
                sequence: reader.u32()?,
                updates: reader.section()?,
            },
            Kind::NACK => Self::Nack {
                sequence: reader.u32()?,
                updates: reader.section()?,
            },
            Kind::PING_REQ => Self::PingReq {
                sequence: reader.u32()?,
                target: reader.u64()?,
                target_addr: reader.addr()?,
                updates: reader.section()?,
            },
            Kind::PUSH_PULL => {
                let flags = reader.u8()?;
                if flags & !PUSH_PULL_REPLY_WANTED != 0 {
                    return Err(DecodeError::BadFlags { flags });
                }
                Self::PushPull {
                    flags,
                    records: reader.section()?,
                }
            }
            Kind::GOSSIP => Self::Gossip {
                updates: reader.section()?,
            },
            other => return Err(DecodeError::UnknownKind { kind: other.0 }),
        };
        reader.finish()?;
        Ok(message)
    }
}

/// Decodes a whole byte string as one update section (the piggyback format).
pub fn decode_section(bytes: &[u8]) -> Result<Vec<Update>, DecodeError> {
    let mut reader = Reader { bytes, offset: 0 };
    let updates = reader.section()?;
    reader.finish()?;
    Ok(updates)
}

/// A bounds-checked cursor; every read returns `Truncated` instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let truncated = DecodeError::Truncated {
            offset: self.offset,
        };
        let end = self.offset.checked_add(N).ok_or(truncated)?;
        let slice = self.bytes.get(self.offset..end).ok_or(truncated)?;
        let array = <[u8; N]>::try_from(slice).map_err(|_| truncated)?;
        self.offset = end;
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.take::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.take::<16>()?)),
            byte => return Err(DecodeError::BadAddressFamily { byte }),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    fn update(&mut self) -> Result<Update, DecodeError> {
        let id = self.u64()?;
        let incarnation = self.u32()?;
        let state_byte = self.u8()?;
        let state =
            MemberState::from_u8(state_byte).ok_or(DecodeError::BadState { byte: state_byte })?;
        let shards = self.u16()?;
        let partitions = self.u32()?;
        let addr = self.addr()?;
        let origin = if state == MemberState::Suspect {
            self.u64()?
        } else {
            0
        };
        let member = Member {
            id,
            addr,
            shards,
            partitions,
            incarnation,
            state,
        };
        Ok(Update { member, origin })
    }

    fn section(&mut self) -> Result<Vec<Update>, DecodeError> {
        let count = usize::from(self.u8()?);
        // Capacity is bounded by the count byte (≤ 255), not by attacker-controlled lengths.
        let mut updates = Vec::with_capacity(count);
        for _ in 0..count {
            updates.push(self.update()?);
        }
        Ok(updates)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.offset {
            0 => Ok(()),
            bytes => Err(DecodeError::Trailing { bytes }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    fn arb_update() -> impl Strategy<Value = Update> {
        (
            any::<u64>(),
            any::<u32>(),
            0u8..4,
            any::<u16>(),
            any::<u32>(),
            arb_addr(),
            any::<u64>(),
        )
            .prop_map(
                |(id, incarnation, state, shards, partitions, addr, origin)| {
                    let state = MemberState::from_u8(state).unwrap_or(MemberState::Alive);
                    let origin = if state == MemberState::Suspect {
                        origin
                    } else {
                        0
                    };
                    Update {
                        member: Member {
                            id,
                            addr,
                            shards,
                            partitions,
                            incarnation,
                            state,
                        },
                        origin,
                    }
                },
            )
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let updates = || proptest::collection::vec(arb_update(), 0..20);
        prop_oneof![
            (any::<u32>(), any::<u64>(), updates()).prop_map(|(sequence, target, updates)| {
                Message::Ping {
                    sequence,
                    target,
                    updates,
                }
            }),
            (any::<u32>(), updates())
                .prop_map(|(sequence, updates)| Message::Ack { sequence, updates }),
            (any::<u32>(), updates())
                .prop_map(|(sequence, updates)| Message::Nack { sequence, updates }),
            (any::<u32>(), any::<u64>(), arb_addr(), updates()).prop_map(
                |(sequence, target, target_addr, updates)| Message::PingReq {
                    sequence,
                    target,
                    target_addr,
                    updates
                }
            ),
            (0u8..2, updates()).prop_map(|(flags, records)| Message::PushPull { flags, records }),
            updates().prop_map(|updates| Message::Gossip { updates }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn message_round_trip(message in arb_message()) {
            let mut body = Vec::new();
            message.encode(&mut body);
            prop_assert_eq!(Message::decode(message.kind(), &body), Ok(message.clone()));
            // Every strict prefix is rejected, never a panic.
            for cut in 0..body.len() {
                prop_assert!(Message::decode(message.kind(), &body[..cut]).is_err());
            }
            body.push(0);
            prop_assert_eq!(Message::decode(message.kind(), &body), Err(DecodeError::Trailing { bytes: 1 }));
        }

        #[test]
        fn section_round_trip_and_sizes(updates in proptest::collection::vec(arb_update(), 0..40)) {
            let mut bytes = Vec::new();
            encode_section(&updates, &mut bytes);
            let expected: usize = 1 + updates.iter().map(update_bytes).sum::<usize>();
            prop_assert_eq!(bytes.len(), expected);
            prop_assert_eq!(decode_section(&bytes), Ok(updates));
        }

        #[test]
        fn decoders_reject_garbage_without_panicking(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..400)) {
            // Any outcome is fine as long as it returns; a success must re-encode identically.
            if let Ok(message) = Message::decode(Kind(kind), &body) {
                let mut again = Vec::new();
                message.encode(&mut again);
                prop_assert_eq!(again, body.clone());
            }
            let _ = decode_section(&body);
        }
    }

    #[test]
    fn ipv4_alive_update_is_26_bytes() {
        let member = Member {
            id: 1,
            addr: SocketAddr::from(([10, 0, 0, 1], 7946)),
            shards: 4,
            partitions: 256,
            incarnation: 0,
            state: MemberState::Alive,
        };
        assert_eq!(update_bytes(&Update { member, origin: 0 }), 26);
        let suspect = Member {
            state: MemberState::Suspect,
            ..member
        };
        assert_eq!(
            update_bytes(&Update {
                member: suspect,
                origin: 2
            }),
            34
        );
    }

    #[test]
    fn rejects_specific_garbage() {
        assert_eq!(
            Message::decode(Kind(0x3F), &[]),
            Err(DecodeError::UnknownKind { kind: 0x3F })
        );
        assert_eq!(
            Message::decode(Kind::GOSSIP, &[]),
            Err(DecodeError::Truncated { offset: 0 })
        );
        assert_eq!(
            Message::decode(Kind::PUSH_PULL, &[2, 0]),
            Err(DecodeError::BadFlags { flags: 2 })
        );
        let mut bad_state = vec![1];
        bad_state.extend_from_slice(&[0; 12]);
        bad_state.push(9);
        assert_eq!(
            Message::decode(Kind::GOSSIP, &bad_state),
            Err(DecodeError::BadState { byte: 9 })
        );
    }
}
