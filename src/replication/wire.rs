//! Replication message bodies (kinds 0x40–0x7F) and their codec.
//!
//! The gossip wire layer adds the authenticated header (magic, cluster, sender, sequence, kind)
//! and the MAC; this module only encodes and decodes the *body*. All integers are little-endian;
//! lengths of keys and values are LEB128 varints so a small entry costs a 19-byte header
//! (flags 1, key length 1, value length 1, hlc 8, node 8).
//!
//! **Invariants:** [`Message::decode`] never panics and never allocates more than the input
//! length justifies (every count is checked against the bytes that remain); a decoded message
//! re-encodes to the same bytes; an encoded message built by this crate's packers is at most
//! [`BODY_BYTES_MAX`] bytes.

use super::types::{Entry, Version};

/// Largest datagram (header + body + MAC) the gossip layer sends.
pub const DATAGRAM_BYTES_MAX: usize = 1_400;
/// Bytes the gossip wire layer adds around a body: a 42-byte header and a 16-byte MAC.
pub const DATAGRAM_OVERHEAD_BYTES: usize =
    crate::gossip::wire::HEADER_BYTES + crate::gossip::wire::MAC_BYTES;
/// Largest replication message body that fits in one datagram.
pub const BODY_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - DATAGRAM_OVERHEAD_BYTES;
/// Largest key the data model allows (DESIGN §2).
pub const KEY_BYTES_MAX: usize = 4_096;
/// Largest value the data model allows (DESIGN §2).
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// Message kinds owned by replication (the gossip layer routes 0x40..=0x7F here).
pub mod kind {
    /// Entries to apply plus the ring range the receiver must pass them on to.
    pub const RUMOR: u8 = 0x40;
    /// "These batches are applied and durable here" (hop ack and write ack at once).
    pub const RUMOR_ACK: u8 = 0x41;
    /// Anti-entropy round 0: a partition's size and element sum.
    pub const SYNC_DIGEST: u8 = 0x48;
    /// Anti-entropy: the responder's elements of one hash range of a partition.
    pub const SYNC_ELEMENTS: u8 = 0x49;
    /// Anti-entropy: "send me the entries with these elements".
    pub const SYNC_NEED: u8 = 0x4A;
    /// Anti-entropy: entries the receiver lacks.
    pub const SYNC_ENTRIES: u8 = 0x4B;
    /// First kind of the replication range.
    pub const FIRST: u8 = 0x40;
    /// Last kind of the replication range.
    pub const LAST: u8 = 0x7F;
}

/// Why a body was rejected. Every variant names what was wrong so metrics and logs can say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The kind byte is not a replication message this version understands.
    #[error("unknown replication message kind {0:#04x}")]
    UnknownKind(u8),
    /// The body ended inside a field.
    #[error("truncated {what}: needs {need} more bytes, {have} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        need: usize,
        /// Bytes that were left.
        have: usize,
    },
    /// A length or count is outside its allowed range.
    #[error("{what} is {value}, allowed {min}..={max}")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A delegation repeats the previous one's arc instead of leaving it out.
    #[error("delegation repeats the previous arc")]
    RepeatedArc,
    /// The first delegation of a body does not carry its arc.
    #[error("first delegation has no arc")]
    MissingArc,
    /// An entry's flags byte is not one of the defined forms.
    #[error("invalid entry flags {0:#04x}")]
    BadFlags(u8),
    /// A varint is longer than 5 bytes.
    #[error("malformed varint in {0}")]
    BadVarint(&'static str),
    /// Bytes remain after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// What an entry carries on the wire.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The value itself.
    Value(Vec<u8>),
    /// A deletion.
    Tombstone,
    /// The value is too large for a datagram: the receiver pulls it over a transfer stream.
    Announced {
        /// Size of the value in bytes.
        value_len: u32,
    },
}

/// One entry on the wire: a full entry, a tombstone or an announcement.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireEntry {
    /// The key (1..=4,096 bytes).
    pub key: Vec<u8>,
    /// The version.
    pub version: Version,
    /// Value, tombstone or announcement.
    pub payload: Payload,
}

/// A contiguous arc of the dissemination ring, `[lo, hi)` with wrap-around; `lo == hi` is the
/// whole ring.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arc {
    /// First ring position inside the arc.
    pub lo: u32,
    /// First ring position after the arc.
    pub hi: u32,
}

impl Arc {
    /// The whole ring (an arc with `lo == hi` covers every position).
    pub const FULL: Arc = Arc { lo: 0, hi: 0 };

    /// Whether `position` lies on the arc.
    pub fn contains(&self, position: u32) -> bool {
        if self.lo == self.hi {
            return true;
        }
        position.wrapping_sub(self.lo) < self.hi.wrapping_sub(self.lo)
    }
}

/// A batch of entries plus the ring arc whose members the receiver must pass them on to.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegation {
    /// Batch id chosen by the writer; also what the receiver acks.
    pub batch: u64,
    /// Members in this arc (other than the receiver) still need the batch.
    pub arc: Arc,
    /// The entries (at least one).
    pub entries: Vec<WireEntry>,
}

/// A partition digest: entry count and wrapping sum of the elements.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    /// Number of entries (tombstones included).
    pub count: u64,
    /// Wrapping sum of `element_of` over the entries.
    pub sum: u64,
}

/// A replication message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// [`kind::RUMOR`]: one or more delegations.
    Rumor(Vec<Delegation>),
    /// [`kind::RUMOR_ACK`]: batch ids now durable at the sender.
    RumorAck(Vec<u64>),
    /// [`kind::SYNC_DIGEST`]: the initiator's digest of `partition`.
    SyncDigest {
        /// Partition number.
        partition: u16,
        /// The initiator's digest.
        digest: Digest,
    },
    /// [`kind::SYNC_ELEMENTS`]: all of the responder's elements `e` of `partition` with
    /// `lo <= e < hi` (`hi == 0` means up to `u64::MAX` inclusive).
    SyncElements {
        /// Partition number.
        partition: u16,
        /// Lower bound (inclusive).
        lo: u64,
        /// Upper bound (exclusive), `0` = no upper bound.
        hi: u64,
        /// The elements, ascending.
        elements: Vec<u64>,
    },
    /// [`kind::SYNC_NEED`]: elements whose entries the sender wants.
    SyncNeed {
        /// Partition number.
        partition: u16,
        /// Elements wanted.
        elements: Vec<u64>,
    },
    /// [`kind::SYNC_ENTRIES`]: entries the receiver lacks.
    SyncEntries {
        /// Partition number.
        partition: u16,
        /// The entries.
        entries: Vec<WireEntry>,
    },
}

/// Bytes of a LEB128 varint.
fn varint_len(value: u32) -> usize {
    match value {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0x0FFF_FFFF => 4,
        _ => 5,
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Fixed bytes of an encoded entry besides key, value and the two length varints.
const ENTRY_FIXED_BYTES: usize = 1 + 8 + 8;
/// Most bytes of a delegation besides its entries: batch, head byte, arc. The arc is left
/// out when it equals the previous delegation's in the same body (a child of the canonical
/// tree gets the same arc for every batch), so most delegations after the first cost 9.
pub const DELEGATION_HEADER_BYTES: usize = 8 + 1 + 4 + 4;
/// Entries in one delegation at most (the head byte's low 7 bits; an entry is ≥ 19 bytes, so
/// a full body holds fewer).
pub const DELEGATION_ENTRIES_MAX: usize = 0x7F;
/// Head-byte flag: an arc follows (else the previous delegation's arc applies).
const HEAD_ARC_FOLLOWS: u8 = 0x80;

impl WireEntry {
    /// The wire form of a stored entry: inline when it fits `inline_bytes_max`, else announced.
    pub fn from_entry(entry: &Entry, inline_bytes_max: usize) -> WireEntry {
        let payload = match &entry.value {
            None => Payload::Tombstone,
            Some(value) if entry_len(entry.key.len(), value.len()) <= inline_bytes_max => {
                Payload::Value(value.clone())
            }
            Some(value) => Payload::Announced {
                value_len: value.len() as u32,
            },
        };
        WireEntry {
            key: entry.key.clone(),
            version: entry.version,
            payload,
        }
    }

    /// The stored entry this wire entry carries, or `None` for an announcement.
    pub fn to_entry(&self) -> Option<Entry> {
        let value = match &self.payload {
            Payload::Value(value) => Some(value.clone()),
            Payload::Tombstone => None,
            Payload::Announced { .. } => return None,
        };
        Some(Entry {
            key: self.key.clone(),
            value,
            version: self.version,
        })
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        let key = self.key.len();
        match &self.payload {
            Payload::Value(value) => entry_len(key, value.len()),
            Payload::Tombstone => ENTRY_FIXED_BYTES + varint_len(key as u32) + key,
            Payload::Announced { value_len } => {
                ENTRY_FIXED_BYTES + varint_len(key as u32) + key + varint_len(*value_len)
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let flags = match self.payload {
            Payload::Value(_) => 0u8,
            Payload::Tombstone => 1,
            Payload::Announced { .. } => 2,
        };
        out.push(flags);
        put_varint(out, self.key.len() as u32);
        match &self.payload {
            Payload::Value(value) => put_varint(out, value.len() as u32),
            Payload::Tombstone => {}
            Payload::Announced { value_len } => put_varint(out, *value_len),
        }
        out.extend_from_slice(&self.version.hlc.to_le_bytes());
        out.extend_from_slice(&self.version.node.to_le_bytes());
        out.extend_from_slice(&self.key);
        if let Payload::Value(value) = &self.payload {
            out.extend_from_slice(value);
        }
    }
}

/// Encoded size of an inline entry with the given key and value sizes: the per-entry header
/// (`flags`, two varints, hlc, node) plus key and value.
pub fn entry_len(key_bytes: usize, value_bytes: usize) -> usize {
    ENTRY_FIXED_BYTES
        + varint_len(key_bytes as u32)
        + varint_len(value_bytes as u32)
        + key_bytes
        + value_bytes
}

/// Exact size of a RUMOR body carrying `delegations` (arcs shared with the predecessor are
/// left out).
pub fn rumor_len(delegations: &[Delegation]) -> usize {
    let mut previous = None;
    let mut len = 1;
    for delegation in delegations {
        len += delegation.encoded_len();
        if previous == Some(delegation.arc) {
            len -= 8;
        }
        previous = Some(delegation.arc);
    }
    len
}

impl Delegation {
    /// Encoded size in bytes inside a [`Message::Rumor`] with its arc written out (an upper
    /// bound; [`rumor_len`] is exact for a whole body).
    pub fn encoded_len(&self) -> usize {
        DELEGATION_HEADER_BYTES
            + self
                .entries
                .iter()
                .map(WireEntry::encoded_len)
                .sum::<usize>()
    }
}

impl Message {
    /// The kind byte the wire layer puts in the header.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Rumor(_) => kind::RUMOR,
            Message::RumorAck(_) => kind::RUMOR_ACK,
            Message::SyncDigest { .. } => kind::SYNC_DIGEST,
            Message::SyncElements { .. } => kind::SYNC_ELEMENTS,
            Message::SyncNeed { .. } => kind::SYNC_NEED,
            Message::SyncEntries { .. } => kind::SYNC_ENTRIES,
        }
    }

    /// Appends the body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Rumor(delegations) => {
                out.push(delegations.len() as u8);
                let mut previous = None;
                for delegation in delegations {
                    let count = delegation.entries.len();
                    assert!(
                        (1..=DELEGATION_ENTRIES_MAX).contains(&count),
                        "a delegation holds 1..={DELEGATION_ENTRIES_MAX} entries"
                    );
                    out.extend_from_slice(&delegation.batch.to_le_bytes());
                    if previous == Some(delegation.arc) {
                        out.push(count as u8);
                    } else {
                        out.push(count as u8 | HEAD_ARC_FOLLOWS);
                        out.extend_from_slice(&delegation.arc.lo.to_le_bytes());
                        out.extend_from_slice(&delegation.arc.hi.to_le_bytes());
                    }
                    previous = Some(delegation.arc);
                    for entry in &delegation.entries {
                        entry.encode(out);
                    }
                }
            }
            Message::RumorAck(batches) => encode_u64s(out, batches),
            Message::SyncDigest { partition, digest } => {
                out.extend_from_slice(&partition.to_le_bytes());
                out.extend_from_slice(&digest.count.to_le_bytes());
                out.extend_from_slice(&digest.sum.to_le_bytes());
            }
            Message::SyncElements {
                partition,
                lo,
                hi,
                elements,
            } => {
                out.extend_from_slice(&partition.to_le_bytes());
                out.extend_from_slice(&lo.to_le_bytes());
                out.extend_from_slice(&hi.to_le_bytes());
                encode_u64s(out, elements);
            }
            Message::SyncNeed {
                partition,
                elements,
            } => {
                out.extend_from_slice(&partition.to_le_bytes());
                encode_u64s(out, elements);
            }
            Message::SyncEntries { partition, entries } => {
                out.extend_from_slice(&partition.to_le_bytes());
                encode_entries(out, entries);
            }
        }
    }

    /// The encoded body as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes a body of the given kind; rejects anything malformed or with trailing bytes.
    pub fn decode(kind_byte: u8, body: &[u8]) -> Result<Message, DecodeError> {
        let mut reader = Reader { bytes: body };
        let message = match kind_byte {
            kind::RUMOR => Message::Rumor(decode_delegations(&mut reader)?),
            kind::RUMOR_ACK => Message::RumorAck(reader.u64s("ack batches")?),
            kind::SYNC_DIGEST => Message::SyncDigest {
                partition: reader.u16("partition")?,
                digest: Digest {
                    count: reader.u64("count")?,
                    sum: reader.u64("sum")?,
                },
            },
            kind::SYNC_ELEMENTS => Message::SyncElements {
                partition: reader.u16("partition")?,
                lo: reader.u64("lo")?,
                hi: reader.u64("hi")?,
                elements: reader.u64s("elements")?,
            },
            kind::SYNC_NEED => Message::SyncNeed {
                partition: reader.u16("partition")?,
                elements: reader.u64s("elements")?,
            },
            kind::SYNC_ENTRIES => Message::SyncEntries {
                partition: reader.u16("partition")?,
                entries: decode_entries(&mut reader)?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if !reader.bytes.is_empty() {
            return Err(DecodeError::Trailing(reader.bytes.len()));
        }
        Ok(message)
    }
}

fn encode_u64s(out: &mut Vec<u8>, values: &[u64]) {
    assert!(
        values.len() <= usize::from(u16::MAX),
        "a body holds far fewer values"
    );
    out.extend_from_slice(&(values.len() as u16).to_le_bytes());
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn encode_entries(out: &mut Vec<u8>, entries: &[WireEntry]) {
    assert!(
        entries.len() <= usize::from(u16::MAX),
        "a body holds far fewer entries"
    );
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for entry in entries {
        entry.encode(out);
    }
}

fn decode_delegations(reader: &mut Reader<'_>) -> Result<Vec<Delegation>, DecodeError> {
    let count = reader.u8("delegation count")?;
    // Each delegation needs at least its header, so the count is bounded by the input.
    reader.check_count(
        "delegation count",
        u64::from(count),
        1,
        DELEGATION_HEADER_BYTES,
    )?;
    let mut delegations: Vec<Delegation> = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let batch = reader.u64("batch")?;
        let head = reader.u8("delegation head")?;
        let previous = delegations.last().map(|d| d.arc);
        let arc = if head & HEAD_ARC_FOLLOWS != 0 {
            let arc = Arc {
                lo: reader.u32("arc lo")?,
                hi: reader.u32("arc hi")?,
            };
            // One encoding per message: a repeated arc must be left out.
            if previous == Some(arc) {
                return Err(DecodeError::RepeatedArc);
            }
            arc
        } else {
            previous.ok_or(DecodeError::MissingArc)?
        };
        let count = head & !HEAD_ARC_FOLLOWS;
        if count == 0 {
            return Err(DecodeError::OutOfRange {
                what: "delegation entries",
                value: 0,
                min: 1,
                max: DELEGATION_ENTRIES_MAX as u64,
            });
        }
        reader.check_count("entry count", u64::from(count), 0, ENTRY_FIXED_BYTES + 2)?;
        let entries = (0..count)
            .map(|_| decode_entry(reader))
            .collect::<Result<Vec<_>, _>>()?;
        delegations.push(Delegation {
            batch,
            arc,
            entries,
        });
    }
    Ok(delegations)
}

fn decode_entries(reader: &mut Reader<'_>) -> Result<Vec<WireEntry>, DecodeError> {
    let count = reader.u16("entry count")?;
    // The smallest entry is a tombstone with a 1-byte key: fixed bytes + key varint + key.
    reader.check_count("entry count", u64::from(count), 0, ENTRY_FIXED_BYTES + 2)?;
    let mut entries = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        entries.push(decode_entry(reader)?);
    }
    Ok(entries)
}

fn decode_entry(reader: &mut Reader<'_>) -> Result<WireEntry, DecodeError> {
    let flags = reader.u8("entry flags")?;
    if flags > 2 {
        return Err(DecodeError::BadFlags(flags));
    }
    let key_len = reader.varint("key length")?;
    check_range("key length", key_len, 1, KEY_BYTES_MAX)?;
    let value_len = if flags == 1 {
        0
    } else {
        reader.varint("value length")?
    };
    check_range("value length", value_len, 0, VALUE_BYTES_MAX)?;
    let version = Version {
        hlc: reader.u64("hlc")?,
        node: reader.u64("node")?,
    };
    let key = reader.take("key", key_len as usize)?.to_vec();
    let payload = match flags {
        0 => Payload::Value(reader.take("value", value_len as usize)?.to_vec()),
        1 => Payload::Tombstone,
        _ => Payload::Announced { value_len },
    };
    Ok(WireEntry {
        key,
        version,
        payload,
    })
}

fn check_range(what: &'static str, value: u32, min: usize, max: usize) -> Result<(), DecodeError> {
    let value = value as usize;
    if value < min || value > max {
        return Err(DecodeError::OutOfRange {
            what,
            value: value as u64,
            min: min as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// A cursor over untrusted bytes: every read checks the remaining length first.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, what: &'static str, need: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < need {
            return Err(DecodeError::Truncated {
                what,
                need,
                have: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(need);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(what, N)?);
        Ok(array)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut value: u64 = 0;
        for index in 0..5 {
            let byte = self.u8(what)?;
            value |= u64::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                // A zero final byte after a continuation is a non-canonical (padded) encoding:
                // refuse it so every accepted body re-encodes to the same bytes.
                if byte == 0 && index > 0 {
                    return Err(DecodeError::BadVarint(what));
                }
                return u32::try_from(value).map_err(|_| DecodeError::BadVarint(what));
            }
        }
        Err(DecodeError::BadVarint(what))
    }

    fn u64s(&mut self, what: &'static str) -> Result<Vec<u64>, DecodeError> {
        let count = self.u16(what)?;
        self.check_count(what, u64::from(count), 0, 8)?;
        (0..count).map(|_| self.u64(what)).collect()
    }

    /// Rejects a count whose items (at least `item_bytes_min` each) cannot fit in the rest.
    fn check_count(
        &self,
        what: &'static str,
        count: u64,
        min: u64,
        item_bytes_min: usize,
    ) -> Result<(), DecodeError> {
        let max = (self.bytes.len() / item_bytes_min) as u64;
        if count < min || count > max {
            return Err(DecodeError::OutOfRange {
                what,
                value: count,
                min,
                max,
            });
        }
        Ok(())
    }
}
