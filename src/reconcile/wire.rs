//! The session's messages and their byte encoding (little-endian, `zerocopy` headers).
//!
//! Every message starts with a [`MessageHeader`] (magic, kind, checksum, session, partition,
//! sequence number, item count) followed by `items` records of the kind's item type.
//! **Invariants:** [`Message::encode`] never produces more than [`MESSAGE_BYTES_MAX`] bytes
//! (the session packs items with [`pack`]); [`Message::decode`] validates everything (checksum,
//! lengths, levels, point ranges, field values) and returns an error, never panics, on any
//! malformed input.

use super::field::P;
use super::sketch::LEAF_POINTS;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The largest encoded message: it fits the body of one gossip datagram (at most 1,400 − 42
/// header − 16 MAC = 1,342 bytes), so a message travels in one UDP datagram on a 1,500-byte
/// MTU path.
pub const MESSAGE_BYTES_MAX: usize = 1326;

/// Deepest range level: leaves are level 8 (`LEAF_BITS`), below that ranges are cut from a
/// leaf's elements.
pub const LEVEL_MAX: u8 = 19;

const MAGIC: [u8; 2] = *b"SR";

/// A hash range: the positions whose top `level` bits equal `index`.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Number of leading position bits fixed (0 = the whole partition).
    pub level: u8,
    /// The value of those bits, `< 2^level`.
    pub index: u64,
}

impl NodeId {
    /// The whole partition.
    pub const ROOT: NodeId = NodeId { level: 0, index: 0 };

    /// Whether the fields are in range.
    pub fn is_valid(self) -> bool {
        self.level <= LEVEL_MAX && self.index < 1u64 << self.level
    }
}

/// Fixed part of every message.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct MessageHeader {
    magic: [u8; 2],
    kind: u8,
    flags: u8,
    /// Low 32 bits of xxh3 over every other byte of the message.
    checksum: U32,
    session: U64,
    partition: U32,
    sequence: U32,
    items: U16,
}

const HEADER_BYTES: usize = size_of::<MessageHeader>();

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct NodeBytes {
    level: u8,
    /// Levels stop at [`LEVEL_MAX`] < 32, so an index fits 32 bits.
    index: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct RequestBytes {
    node: NodeBytes,
    span: U16,
    first: u8,
    end: u8,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct SketchBytes {
    node: NodeBytes,
    count: U32,
    first: u8,
    len: u8,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct ResolveBytes {
    node: NodeBytes,
    width: u8,
    len: U16,
}

/// Ask for the peer's sketch of `node` at the sample points `first..end` (1-based, end exclusive).
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestItem {
    /// The first range.
    pub node: NodeId,
    /// Number of ranges wanted: `node` and its next `span − 1` neighbours at the same level
    /// (1..=[`REQUEST_SPAN_MAX`]); siblings of a split travel as one item.
    pub span: u16,
    /// First sample point wanted (≥ 1).
    pub first: u8,
    /// One past the last point wanted (≤ LEAF_POINTS + 1).
    pub end: u8,
}

/// The most ranges one request item may name.
pub const REQUEST_SPAN_MAX: u16 = 64;

/// The sender's `χ` of `node` at points `first..first + values.len()`, and the node's size.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SketchItem {
    /// The range.
    pub node: NodeId,
    /// Number of elements the sender holds in the range.
    pub count: u64,
    /// First sample point of `values`.
    pub first: u8,
    /// Canonical field values.
    pub values: Vec<u64>,
}

/// Fingerprints of elements the receiver holds in `node` and the sender lacks, bit-packed on
/// the wire: `width` bits each, the element's leaf within `node` in the leading bits (when the
/// node spans several leaves and the width has room) and the element's low bits below.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveItem {
    /// The range the elements lie in.
    pub node: NodeId,
    /// Bits per fingerprint, 1..=64.
    pub width: u8,
    /// One fingerprint per element, below 2^width.
    pub fingerprints: Vec<u64>,
}

/// A reconciliation message. `session` and `partition` route it; see the `session` module.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Initiator → responder: the digest (size and χ of the whole range at points 1..).
    Open {
        /// Session id chosen by the initiator.
        session: u64,
        /// Partition reconciled.
        partition: u32,
        /// The initiator's set size.
        count: u64,
        /// χ at points `1..=values.len()`.
        values: Vec<u64>,
    },
    /// Responder → initiator: sketches it needs.
    Request {
        /// Session id.
        session: u64,
        /// Partition.
        partition: u32,
        /// What to send.
        items: Vec<RequestItem>,
    },
    /// Initiator → responder: the requested sketches.
    Sketches {
        /// Session id.
        session: u64,
        /// Partition.
        partition: u32,
        /// Sketch pieces.
        items: Vec<SketchItem>,
    },
    /// Responder → initiator: which of the initiator's elements the responder lacks.
    Resolve {
        /// Session id.
        session: u64,
        /// Partition.
        partition: u32,
        /// Number of this resolve message (0-based).
        sequence: u32,
        /// Fingerprints by range.
        items: Vec<ResolveItem>,
    },
    /// Initiator → responder, in answer to `Finish`: resolve messages that have not arrived.
    Missing {
        /// Session id.
        session: u64,
        /// Partition.
        partition: u32,
        /// Their sequence numbers.
        sequences: Vec<u32>,
    },
    /// Responder → initiator: reconciliation ended after `resolves` resolve messages.
    Finish {
        /// Session id.
        session: u64,
        /// Partition.
        partition: u32,
        /// Number of resolve messages sent in total.
        resolves: u32,
        /// The sets were equal.
        equal: bool,
        /// Every range was reconciled.
        complete: bool,
    },
    /// Initiator → responder: the finish arrived and every resolve with it.
    FinishAck {
        /// Session id.
        session: u64,
        /// Partition.
        partition: u32,
    },
}

/// Why bytes are not a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header or than its items claim.
    #[error("message truncated: {bytes} bytes")]
    Truncated {
        /// Bytes received.
        bytes: usize,
    },
    /// More than [`MESSAGE_BYTES_MAX`] bytes, or bytes left after the last item.
    #[error("message has the wrong length: {bytes} bytes")]
    Length {
        /// Bytes received.
        bytes: usize,
    },
    /// Not a reconciliation message.
    #[error("bad magic")]
    Magic,
    /// The checksum does not match: the message was corrupted.
    #[error("checksum mismatch")]
    Checksum,
    /// Unknown message kind.
    #[error("unknown message kind {kind}")]
    Kind {
        /// The kind byte.
        kind: u8,
    },
    /// A range, point range, count or field value is out of bounds.
    #[error("invalid field: {what}")]
    Invalid {
        /// Which field.
        what: &'static str,
    },
}

const KIND_OPEN: u8 = 1;
const KIND_REQUEST: u8 = 2;
const KIND_SKETCHES: u8 = 3;
const KIND_RESOLVE: u8 = 4;
const KIND_MISSING: u8 = 5;
const KIND_FINISH: u8 = 6;
const KIND_FINISH_ACK: u8 = 7;
const FLAG_EQUAL: u8 = 1;
const FLAG_COMPLETE: u8 = 2;

/// Encoded size of an item, for packing.
pub trait WireItem {
    /// Bytes this item takes in a message.
    fn encoded_len(&self) -> usize;
}

impl WireItem for RequestItem {
    fn encoded_len(&self) -> usize {
        size_of::<RequestBytes>()
    }
}

impl WireItem for SketchItem {
    fn encoded_len(&self) -> usize {
        size_of::<SketchBytes>() + values_len(self.values.len())
    }
}

/// Bits per field value on the wire: canonical values are below p = 2^61 − 1.
const VALUE_BITS: u32 = 61;

/// Bytes of `count` bit-packed field values.
fn values_len(count: usize) -> usize {
    (count * VALUE_BITS as usize).div_ceil(8)
}

impl WireItem for ResolveItem {
    fn encoded_len(&self) -> usize {
        size_of::<ResolveBytes>() + (self.width as usize * self.fingerprints.len()).div_ceil(8)
    }
}

/// Splits items into groups that each fit in one message (every single item must fit).
pub fn pack<T: WireItem>(items: Vec<T>) -> Vec<Vec<T>> {
    let budget = MESSAGE_BYTES_MAX - HEADER_BYTES;
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut used = budget;
    for item in items {
        let len = item.encoded_len();
        assert!(len <= budget, "an item of {len} bytes never fits a message");
        if used + len > budget || groups.last().is_some_and(|g| g.len() == u16::MAX as usize) {
            groups.push(Vec::new());
            used = 0;
        }
        used += len;
        if let Some(group) = groups.last_mut() {
            group.push(item);
        }
    }
    groups
}

fn node_bytes(node: NodeId) -> NodeBytes {
    NodeBytes {
        level: node.level,
        index: U32::new(u32::try_from(node.index).expect("valid nodes have 32-bit indices")),
    }
}

impl Message {
    /// The session id.
    pub fn session_id(&self) -> u64 {
        self.routing().0
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.routing().1
    }

    /// Whether this message opens a new session.
    pub fn is_open(&self) -> bool {
        matches!(self, Message::Open { .. })
    }

    fn routing(&self) -> (u64, u32) {
        match *self {
            Message::Open {
                session, partition, ..
            }
            | Message::Request {
                session, partition, ..
            }
            | Message::Sketches {
                session, partition, ..
            }
            | Message::Resolve {
                session, partition, ..
            }
            | Message::Missing {
                session, partition, ..
            }
            | Message::Finish {
                session, partition, ..
            }
            | Message::FinishAck { session, partition } => (session, partition),
        }
    }

    /// The encoded bytes (at most [`MESSAGE_BYTES_MAX`]).
    pub fn encode(&self) -> Vec<u8> {
        let (session, partition) = self.routing();
        let mut body = Vec::with_capacity(256);
        let (kind, flags, sequence, items) = self.encode_body(&mut body);
        let mut header = MessageHeader {
            magic: MAGIC,
            kind,
            flags,
            checksum: U32::new(0),
            session: U64::new(session),
            partition: U32::new(partition),
            sequence: U32::new(sequence),
            items: U16::new(u16::try_from(items).expect("items are packed below 2^16")),
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&body);
        header.checksum = U32::new(checksum(&out));
        out[..HEADER_BYTES].copy_from_slice(header.as_bytes());
        assert!(
            out.len() <= MESSAGE_BYTES_MAX,
            "message of {} bytes",
            out.len()
        );
        out
    }

    /// Writes the items; returns (kind, flags, sequence, item count).
    fn encode_body(&self, body: &mut Vec<u8>) -> (u8, u8, u32, usize) {
        match self {
            Message::Open { count, values, .. } => {
                body.extend_from_slice(U64::new(*count).as_bytes());
                pack_bits(values, VALUE_BITS, body);
                (KIND_OPEN, 0, 0, values.len())
            }
            Message::Request { items, .. } => {
                for item in items {
                    let bytes = RequestBytes {
                        node: node_bytes(item.node),
                        span: U16::new(item.span),
                        first: item.first,
                        end: item.end,
                    };
                    body.extend_from_slice(bytes.as_bytes());
                }
                (KIND_REQUEST, 0, 0, items.len())
            }
            Message::Sketches { items, .. } => {
                for item in items {
                    let len = u8::try_from(item.values.len()).expect("at most LEAF_POINTS values");
                    let bytes = SketchBytes {
                        node: node_bytes(item.node),
                        // Partitions hold fewer than 2^32 elements (documented on `SketchItem`).
                        count: U32::new(u32::try_from(item.count).unwrap_or(u32::MAX)),
                        first: item.first,
                        len,
                    };
                    body.extend_from_slice(bytes.as_bytes());
                    pack_bits(&item.values, VALUE_BITS, body);
                }
                (KIND_SKETCHES, 0, 0, items.len())
            }
            Message::Resolve {
                sequence, items, ..
            } => {
                for item in items {
                    let len = U16::new(u16::try_from(item.fingerprints.len()).expect("packed"));
                    let width = item.width;
                    assert!((1..=64).contains(&width), "fingerprint width {width}");
                    let header = ResolveBytes {
                        node: node_bytes(item.node),
                        width,
                        len,
                    };
                    body.extend_from_slice(header.as_bytes());
                    pack_bits(&item.fingerprints, width as u32, body);
                }
                (KIND_RESOLVE, 0, *sequence, items.len())
            }
            Message::Missing { sequences, .. } => {
                sequences
                    .iter()
                    .for_each(|v| body.extend_from_slice(U32::new(*v).as_bytes()));
                (KIND_MISSING, 0, 0, sequences.len())
            }
            Message::Finish {
                resolves,
                equal,
                complete,
                ..
            } => {
                let flags =
                    if *equal { FLAG_EQUAL } else { 0 } | if *complete { FLAG_COMPLETE } else { 0 };
                (KIND_FINISH, flags, *resolves, 0)
            }
            Message::FinishAck { .. } => (KIND_FINISH_ACK, 0, 0, 0),
        }
    }

    /// Parses and validates a message. Any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(WireError::Length { bytes: bytes.len() });
        }
        let (header, mut rest) = MessageHeader::read_from_prefix(bytes)
            .map_err(|_| WireError::Truncated { bytes: bytes.len() })?;
        if header.magic != MAGIC {
            return Err(WireError::Magic);
        }
        if header.checksum.get() != checksum(bytes) {
            return Err(WireError::Checksum);
        }
        let (session, partition) = (header.session.get(), header.partition.get());
        let (items, sequence) = (header.items.get() as usize, header.sequence.get());
        let truncated = WireError::Truncated { bytes: bytes.len() };
        let message = match header.kind {
            KIND_OPEN => {
                let (count, tail) = U64::read_from_prefix(rest).map_err(|_| truncated)?;
                rest = tail;
                if items > LEAF_POINTS {
                    return Err(WireError::Invalid {
                        what: "open point count",
                    });
                }
                let values = read_values(&mut rest, items, truncated)?;
                Message::Open {
                    session,
                    partition,
                    count: count.get(),
                    values,
                }
            }
            KIND_REQUEST => {
                let mut list = Vec::with_capacity(items.min(128));
                for _ in 0..items {
                    let (raw, tail) =
                        RequestBytes::read_from_prefix(rest).map_err(|_| truncated)?;
                    rest = tail;
                    let node = read_node(raw.node)?;
                    if raw.first < 1 || raw.end <= raw.first || raw.end as usize > LEAF_POINTS + 1 {
                        return Err(WireError::Invalid {
                            what: "request point range",
                        });
                    }
                    let span = raw.span.get();
                    if span == 0
                        || span > REQUEST_SPAN_MAX
                        || node.index + span as u64 > 1 << node.level
                    {
                        return Err(WireError::Invalid {
                            what: "request span",
                        });
                    }
                    list.push(RequestItem {
                        node,
                        span,
                        first: raw.first,
                        end: raw.end,
                    });
                }
                Message::Request {
                    session,
                    partition,
                    items: list,
                }
            }
            KIND_SKETCHES => {
                let mut list = Vec::with_capacity(items.min(128));
                for _ in 0..items {
                    let (raw, tail) = SketchBytes::read_from_prefix(rest).map_err(|_| truncated)?;
                    rest = tail;
                    let node = read_node(raw.node)?;
                    let len = raw.len as usize;
                    if raw.first < 1 || len == 0 || raw.first as usize + len > LEAF_POINTS + 1 {
                        return Err(WireError::Invalid {
                            what: "sketch point range",
                        });
                    }
                    let values = read_values(&mut rest, len, truncated)?;
                    list.push(SketchItem {
                        node,
                        count: raw.count.get() as u64,
                        first: raw.first,
                        values,
                    });
                }
                Message::Sketches {
                    session,
                    partition,
                    items: list,
                }
            }
            KIND_RESOLVE => {
                let mut list = Vec::with_capacity(items.min(128));
                for _ in 0..items {
                    let (raw, tail) =
                        ResolveBytes::read_from_prefix(rest).map_err(|_| truncated)?;
                    rest = tail;
                    let node = read_node(raw.node)?;
                    let (len, width) = (raw.len.get() as usize, raw.width as usize);
                    if !(1..=64).contains(&width) {
                        return Err(WireError::Invalid {
                            what: "fingerprint width",
                        });
                    }
                    let bytes_needed = (len * width).div_ceil(8);
                    if rest.len() < bytes_needed {
                        return Err(truncated);
                    }
                    let (raw_fingerprints, tail) = rest.split_at(bytes_needed);
                    rest = tail;
                    let fingerprints = unpack_bits(raw_fingerprints, width as u32, len);
                    list.push(ResolveItem {
                        node,
                        width: raw.width,
                        fingerprints,
                    });
                }
                Message::Resolve {
                    session,
                    partition,
                    sequence,
                    items: list,
                }
            }
            KIND_MISSING => {
                let (sequences, tail) =
                    <[U32]>::ref_from_prefix_with_elems(rest, items).map_err(|_| truncated)?;
                rest = tail;
                let sequences = sequences.iter().map(|v| v.get()).collect();
                Message::Missing {
                    session,
                    partition,
                    sequences,
                }
            }
            KIND_FINISH => Message::Finish {
                session,
                partition,
                resolves: sequence,
                equal: header.flags & FLAG_EQUAL != 0,
                complete: header.flags & FLAG_COMPLETE != 0,
            },
            KIND_FINISH_ACK => Message::FinishAck { session, partition },
            kind => return Err(WireError::Kind { kind }),
        };
        if !rest.is_empty() {
            return Err(WireError::Length { bytes: bytes.len() });
        }
        Ok(message)
    }
}

/// Appends `values` (each `< 2^bits`) as a little-endian bit stream, padded to a byte.
fn pack_bits(values: &[u64], bits: u32, out: &mut Vec<u8>) {
    let mut buffer: u128 = 0;
    let mut held = 0u32;
    for &value in values {
        debug_assert!(bits == 64 || value >> bits == 0);
        buffer |= (value as u128) << held;
        held += bits;
        while held >= 8 {
            out.push(buffer as u8);
            buffer >>= 8;
            held -= 8;
        }
    }
    if held > 0 {
        out.push(buffer as u8);
    }
}

/// Reads `count` values of `bits` bits from a stream written by `pack_bits`; `bytes` must
/// hold at least `⌈count · bits / 8⌉` bytes.
fn unpack_bits(bytes: &[u8], bits: u32, count: usize) -> Vec<u64> {
    let mask = u64::MAX >> (64 - bits);
    let mut out = Vec::with_capacity(count);
    let mut buffer: u128 = 0;
    let mut held = 0u32;
    let mut input = bytes.iter();
    while out.len() < count {
        while held < bits {
            buffer |= (input.next().copied().unwrap_or(0) as u128) << held;
            held += 8;
        }
        out.push(buffer as u64 & mask);
        buffer >>= bits;
        held -= bits;
    }
    out
}

fn read_node(raw: NodeBytes) -> Result<NodeId, WireError> {
    let node = NodeId {
        level: raw.level,
        index: raw.index.get() as u64,
    };
    if node.is_valid() {
        Ok(node)
    } else {
        Err(WireError::Invalid { what: "range" })
    }
}

fn read_values(rest: &mut &[u8], len: usize, truncated: WireError) -> Result<Vec<u64>, WireError> {
    let bytes = values_len(len);
    if rest.len() < bytes {
        return Err(truncated);
    }
    let (packed, tail) = rest.split_at(bytes);
    *rest = tail;
    // The padding bits of the last byte must be zero: one message, one encoding.
    let used = (len * VALUE_BITS as usize) % 8;
    if used != 0 && packed.last().is_some_and(|&last| last >> used != 0) {
        return Err(WireError::Invalid {
            what: "value padding",
        });
    }
    let values = unpack_bits(packed, VALUE_BITS, len);
    if values.iter().any(|&v| v >= P) {
        return Err(WireError::Invalid {
            what: "field value",
        });
    }
    Ok(values)
}

/// xxh3 over the whole message except the checksum field itself (bytes 4..8).
fn checksum(bytes: &[u8]) -> u32 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&bytes[..4]);
    hasher.update(&bytes[8..]);
    hasher.digest() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> impl Strategy<Value = NodeId> {
        (0..=LEVEL_MAX).prop_flat_map(|level| {
            (0..1u64 << level).prop_map(move |index| NodeId { level, index })
        })
    }

    fn message() -> impl Strategy<Value = Message> {
        let values = |max: usize| proptest::collection::vec(0..P, 1..max);
        prop_oneof![
            (
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                values(LEAF_POINTS)
            )
                .prop_map(|(session, partition, count, values)| Message::Open {
                    session,
                    partition,
                    count,
                    values
                }),
            (
                any::<u64>(),
                any::<u32>(),
                proptest::collection::vec((node(), 1u8..=LEAF_POINTS as u8), 0..100)
            )
                .prop_map(|(session, partition, items)| Message::Request {
                    session,
                    partition,
                    items: items
                        .into_iter()
                        .map(|(node, first)| RequestItem {
                            node,
                            span: 1,
                            first,
                            end: first + 1
                        })
                        .collect()
                }),
            (
                any::<u64>(),
                any::<u32>(),
                node(),
                any::<u32>().prop_map(u64::from),
                values(LEAF_POINTS - 2)
            )
                .prop_map(|(session, partition, node, count, values)| {
                    Message::Sketches {
                        session,
                        partition,
                        items: vec![SketchItem {
                            node,
                            count,
                            first: 3,
                            values,
                        }],
                    }
                }),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                node(),
                1u8..=64,
                proptest::collection::vec(any::<u64>(), 0..150)
            )
                .prop_map(
                    |(session, partition, sequence, node, width, fingerprints)| {
                        let mask = u64::MAX >> (64 - width as u32);
                        let fingerprints = fingerprints.into_iter().map(|f| f & mask).collect();
                        Message::Resolve {
                            session,
                            partition,
                            sequence,
                            items: vec![ResolveItem {
                                node,
                                width,
                                fingerprints,
                            }],
                        }
                    }
                ),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(session, partition, resolves, equal, complete)| {
                    Message::Finish {
                        session,
                        partition,
                        resolves,
                        equal,
                        complete,
                    }
                }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(session, partition)| Message::FinishAck { session, partition }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn round_trip(message in message()) {
            let bytes = message.encode();
            prop_assert!(bytes.len() <= MESSAGE_BYTES_MAX);
            prop_assert_eq!(Message::decode(&bytes), Ok(message));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn corruption_is_detected(message in message(), position in any::<usize>(), flip in 1u8..=255) {
            let mut bytes = message.encode();
            let position = position % bytes.len();
            bytes[position] ^= flip;
            prop_assert!(Message::decode(&bytes).is_err());
        }

        #[test]
        fn truncation_is_detected(message in message(), cut in any::<usize>()) {
            let bytes = message.encode();
            let cut = cut % bytes.len();
            prop_assert!(Message::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn packing_respects_the_limit() {
        let items: Vec<SketchItem> = (0..10)
            .map(|i| SketchItem {
                node: NodeId { level: 7, index: i },
                count: 5,
                first: 1,
                values: vec![7; 128],
            })
            .collect();
        let groups = pack(items);
        assert_eq!(groups.len(), 10);
        for group in groups {
            let message = Message::Sketches {
                session: 1,
                partition: 2,
                items: group,
            };
            assert!(message.encode().len() <= MESSAGE_BYTES_MAX);
        }
    }

    #[test]
    fn invalid_fields_are_rejected() {
        let bad_value = Message::Open {
            session: 1,
            partition: 1,
            count: 1,
            values: vec![1],
        };
        let mut bytes = bad_value.encode();
        let at = bytes.len() - 8;
        bytes[at..].copy_from_slice(&P.to_le_bytes());
        let sum = checksum(&bytes);
        bytes[4..8].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            Message::decode(&bytes),
            Err(WireError::Invalid {
                what: "field value"
            })
        );
        // 61-bit values leave 3 padding bits in the last byte of one value: they must be zero.
        let last = bytes.len() - 1;
        bytes[last] = 0x80;
        let sum = checksum(&bytes);
        bytes[4..8].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            Message::decode(&bytes),
            Err(WireError::Invalid {
                what: "value padding"
            })
        );
    }

    #[test]
    fn values_take_61_bits() {
        let message = Message::Open {
            session: 1,
            partition: 1,
            count: 3,
            values: vec![P - 1, 0, 1 << 60, 12345, 1, 2, 3, 4],
        };
        let bytes = message.encode();
        assert_eq!(bytes.len(), HEADER_BYTES + 8 + 61); // 8 values · 61 bits = 61 bytes
        assert_eq!(Message::decode(&bytes), Ok(message));
    }
}
