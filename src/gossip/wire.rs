//! The authenticated gossip datagram: header, body and a 16-byte keyed MAC.
//!
//! Layout of every datagram (all integers little-endian, no padding):
//!
//! ```text
//! | Header (42 bytes, zerocopy) | body (body_len bytes) | MAC (16 bytes) |
//! ```
//!
//! The MAC is the first 16 bytes of `blake3::keyed_hash(mac_key, header ‖ body)` (a 128-bit
//! tag, the strength of Poly1305 or GCM tags: a forgery succeeds with probability 2^−128 per
//! try; truncating BLAKE3's output is sound, it is an XOF). Most datagrams carry one small
//! entry or an ack, so 16 bytes fewer per datagram is ≈ 5–10 % of all gossip bytes. The MAC
//! key is derived from the
//! configured 32-byte cluster key with `blake3::derive_key`, so the raw key is never used for two
//! purposes. The receiver picks the key by `key_id`, which is how keys rotate: install the new
//! key everywhere ([`Keyring::insert`]), then switch senders to it ([`Keyring::set_send_key`]),
//! then remove the old one.
//!
//! **Invariants:** a sealed datagram is at most [`DATAGRAM_BYTES_MAX`] bytes; [`open`] checks
//! size, magic, version, cluster id, key id and MAC before a single body byte is returned, and
//! never panics on any input. Replay protection is a separate, stateful step
//! ([`super::replay::ReplayGuard`]) applied only to datagrams that passed [`open`], so a forged
//! datagram can never move a replay window.
//!
//! Confidentiality (AEAD) is not implemented: datagrams are authenticated, not encrypted.

use zerocopy::byteorder::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Largest datagram payload this format produces or accepts (fits a 1,500-byte MTU with room
/// for IP/UDP headers and tunnels).
pub const DATAGRAM_BYTES_MAX: usize = 1_400;
/// Size of the fixed header.
pub const HEADER_BYTES: usize = size_of::<Header>();
/// Size of the MAC trailer.
pub const MAC_BYTES: usize = 16;
/// Largest body that fits in one datagram.
pub const BODY_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - HEADER_BYTES - MAC_BYTES;
/// First bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"SG";
/// Wire protocol version; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u8 = 3;
/// Keys a keyring holds at most (rotation needs two, three leaves slack).
pub const KEYS_MAX: usize = 8;
/// Context string for deriving MAC keys from cluster keys (never reuse it elsewhere).
const MAC_KEY_CONTEXT: &str = "starling 2026 gossip datagram mac v1";

/// Node identifier: chosen once per node (persisted by the runtime), unique in a cluster.
pub type NodeId = u64;

/// The fixed datagram header. Read it through [`open`]; write it through [`Sealer::seal`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 2],
    /// [`PROTOCOL_VERSION`].
    pub version: u8,
    /// Message kind, see [`Kind`].
    pub kind: u8,
    /// Which key of the sender's keyring produced the MAC.
    pub key_id: u8,
    /// Reserved, must be 0 (a future flag such as "encrypted" goes here).
    pub flags: u8,
    /// Sending shard (the node's core index); the gossip port is `base_port + shard`.
    pub shard: U16,
    /// Length of the body that follows the header.
    pub body_len: U16,
    /// Sender epoch: grows on every process start, so sequence numbers may restart at 0.
    pub epoch: U64,
    /// Cluster this datagram belongs to.
    pub cluster_id: U64,
    /// Sending node.
    pub sender: U64,
    /// Per-(sender, shard, epoch) sequence number, strictly increasing from 0.
    pub sequence: U64,
}

impl Header {
    /// The message kind as a typed value.
    pub fn kind(&self) -> Kind {
        Kind(self.kind)
    }
}

/// A message kind: one byte, in ranges reserved per subsystem so that modules can add kinds
/// without coordinating single values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(pub u8);

/// Which subsystem owns a [`Kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindRange {
    /// 0x00–0x3F: membership and failure detection (`gossip::membership`).
    Membership,
    /// 0x40–0x7F: replication (rumors, acks, transfers).
    Replication,
    /// 0x80–0x9F: reconciliation (sketch exchange).
    Reconciliation,
    /// 0xA0–0xFF: unassigned; datagrams of these kinds are rejected by [`open`].
    Reserved,
}

impl Kind {
    /// Membership: direct probe.
    pub const PING: Kind = Kind(0x01);
    /// Membership: probe answer.
    pub const ACK: Kind = Kind(0x02);
    /// Membership: ask a member to probe a target on our behalf.
    pub const PING_REQ: Kind = Kind(0x03);
    /// Membership: relay could not reach the target (Lifeguard).
    pub const NACK: Kind = Kind(0x04);
    /// Membership: a page of full member state (join and periodic anti-entropy).
    pub const PUSH_PULL: Kind = Kind(0x05);
    /// Membership: member updates only (dissemination tick, leave).
    pub const GOSSIP: Kind = Kind(0x06);

    /// The subsystem this kind belongs to.
    pub fn range(self) -> KindRange {
        match self.0 {
            0x00..=0x3F => KindRange::Membership,
            0x40..=0x7F => KindRange::Replication,
            0x80..=0x9F => KindRange::Reconciliation,
            _ => KindRange::Reserved,
        }
    }
}

/// Why a datagram was rejected. The caller counts each variant in its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Larger than [`DATAGRAM_BYTES_MAX`].
    #[error("datagram of {bytes} bytes exceeds the {DATAGRAM_BYTES_MAX}-byte limit")]
    Oversize {
        /// Size of the rejected datagram.
        bytes: usize,
    },
    /// Shorter than header + MAC, or shorter than the body length in its header says.
    #[error("datagram truncated: {bytes} bytes, expected {expected}")]
    Truncated {
        /// Size of the rejected datagram.
        bytes: usize,
        /// Size its header implies.
        expected: usize,
    },
    /// Longer than header + body_len + MAC (trailing garbage).
    #[error("datagram has {bytes} bytes but its header implies {expected}")]
    LengthMismatch {
        /// Size of the rejected datagram.
        bytes: usize,
        /// Size its header implies.
        expected: usize,
    },
    /// Not a Starling gossip datagram.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The first two bytes found.
        found: [u8; 2],
    },
    /// Another protocol version (mixed-version cluster or garbage).
    #[error("protocol version {found}, this node speaks {PROTOCOL_VERSION}")]
    BadVersion {
        /// Version in the datagram.
        found: u8,
    },
    /// Reserved flags set.
    #[error("reserved flags {found:#04x} set")]
    BadFlags {
        /// Flags in the datagram.
        found: u8,
    },
    /// From another cluster (or a misconfigured node): check `cluster_id` in both configs.
    #[error("datagram for cluster {found:#x}, this node is in cluster {expected:#x}")]
    WrongCluster {
        /// Cluster id in the datagram.
        found: u64,
        /// Our cluster id.
        expected: u64,
    },
    /// Kind in the unassigned range.
    #[error("unassigned message kind {found:#04x}")]
    UnknownKind {
        /// Kind in the datagram.
        found: u8,
    },
    /// Key id not in our keyring: rotation not rolled out everywhere yet, or forged.
    #[error("unknown key id {key_id}: install the key on this node or check the sender's key file")]
    UnknownKey {
        /// Key id in the datagram.
        key_id: u8,
    },
    /// MAC does not verify: forged, corrupted, or the sender uses another key under this id.
    #[error("MAC verification failed (key id {key_id})")]
    BadMac {
        /// Key id in the datagram.
        key_id: u8,
    },
    /// Body too large to seal into one datagram (sender-side error).
    #[error("body of {bytes} bytes exceeds the {BODY_BYTES_MAX}-byte limit")]
    BodyTooLarge {
        /// Size of the body.
        bytes: usize,
    },
    /// Sequence number already seen from this sender (replay or network duplicate).
    #[error("replayed sequence {sequence} from node {sender:#x}")]
    Replayed {
        /// Sender node.
        sender: u64,
        /// Sequence number.
        sequence: u64,
    },
    /// Sequence number behind the replay window, or an epoch older than the newest seen.
    #[error("sequence {sequence} (epoch {epoch}) from node {sender:#x} is too old")]
    TooOld {
        /// Sender node.
        sender: u64,
        /// Sender epoch.
        epoch: u64,
        /// Sequence number.
        sequence: u64,
    },
}

/// Errors managing a keyring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The keyring already holds [`KEYS_MAX`] keys.
    #[error("keyring full ({KEYS_MAX} keys): remove a retired key first")]
    Full,
    /// The key id is not in the keyring.
    #[error("key id {key_id} is not in the keyring")]
    UnknownKey {
        /// The missing key id.
        key_id: u8,
    },
    /// The send key cannot be removed.
    #[error("key id {key_id} is the send key: switch the send key before removing it")]
    RemoveSendKey {
        /// The send key id.
        key_id: u8,
    },
}

/// The cluster keys this node accepts, by key id, and the one it sends with.
#[derive(Clone)]
pub struct Keyring {
    /// (key id, derived MAC key); at most [`KEYS_MAX`], ids unique.
    keys: Vec<(u8, [u8; 32])>,
    send_key_id: u8,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        formatter
            .debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("send_key_id", &self.send_key_id)
            .finish()
    }
}

impl Keyring {
    /// A keyring with one key, used for sending.
    pub fn new(key_id: u8, cluster_key: [u8; 32]) -> Self {
        Self {
            keys: vec![(key_id, derive_mac_key(&cluster_key))],
            send_key_id: key_id,
        }
    }

    /// Adds (or replaces) an accepted key.
    pub fn insert(&mut self, key_id: u8, cluster_key: [u8; 32]) -> Result<(), KeyringError> {
        let mac_key = derive_mac_key(&cluster_key);
        if let Some(slot) = self.keys.iter_mut().find(|(id, _)| *id == key_id) {
            slot.1 = mac_key;
            return Ok(());
        }
        if self.keys.len() >= KEYS_MAX {
            return Err(KeyringError::Full);
        }
        self.keys.push((key_id, mac_key));
        Ok(())
    }

    /// Stops accepting a key. The send key cannot be removed.
    pub fn remove(&mut self, key_id: u8) -> Result<(), KeyringError> {
        if key_id == self.send_key_id {
            return Err(KeyringError::RemoveSendKey { key_id });
        }
        let before = self.keys.len();
        self.keys.retain(|(id, _)| *id != key_id);
        if self.keys.len() == before {
            return Err(KeyringError::UnknownKey { key_id });
        }
        Ok(())
    }

    /// Chooses the key used to seal outgoing datagrams; it must already be in the keyring.
    pub fn set_send_key(&mut self, key_id: u8) -> Result<(), KeyringError> {
        if self.mac_key(key_id).is_none() {
            return Err(KeyringError::UnknownKey { key_id });
        }
        self.send_key_id = key_id;
        Ok(())
    }

    /// The key id used for sending.
    pub fn send_key_id(&self) -> u8 {
        self.send_key_id
    }

    /// The accepted key ids.
    pub fn key_ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    fn mac_key(&self, key_id: u8) -> Option<&[u8; 32]> {
        self.keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, key)| key)
    }

    fn send_mac_key(&self) -> &[u8; 32] {
        match self.mac_key(self.send_key_id) {
            Some(key) => key,
            // Constructors and set_send_key keep the send key in the ring.
            None => unreachable!("keyring invariant: send key {} present", self.send_key_id),
        }
    }
}

fn derive_mac_key(cluster_key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(MAC_KEY_CONTEXT, cluster_key)
}

fn mac(mac_key: &[u8; 32], header: &[u8], body: &[u8]) -> [u8; MAC_BYTES] {
    let mut hasher = blake3::Hasher::new_keyed(mac_key);
    hasher.update(header);
    hasher.update(body);
    let mut tag = [0; MAC_BYTES];
    tag.copy_from_slice(&hasher.finalize().as_bytes()[..MAC_BYTES]);
    tag
}

/// Where a datagram is accepted: our cluster id and keyring.
#[derive(Clone, Debug)]
pub struct Opener {
    /// Cluster id datagrams must carry.
    pub cluster_id: u64,
    /// Accepted keys.
    pub keyring: Keyring,
}

impl Opener {
    /// Checks a received datagram; see the free function [`open`].
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<(Header, &'a [u8]), WireError> {
        open(self.cluster_id, &self.keyring, datagram)
    }
}

/// Checks a received datagram and returns its header and body.
///
/// Rejects, in this order: oversize, truncated, bad magic, bad version, reserved flags, length
/// mismatch, unassigned kind, wrong cluster, unknown key id, bad MAC. Constant-time MAC
/// comparison. Replay is *not* checked here: pass the header to
/// [`super::replay::ReplayGuard::accept`] next.
pub fn open<'a>(
    cluster_id: u64,
    keyring: &Keyring,
    datagram: &'a [u8],
) -> Result<(Header, &'a [u8]), WireError> {
    let bytes = datagram.len();
    if bytes > DATAGRAM_BYTES_MAX {
        return Err(WireError::Oversize { bytes });
    }
    let minimum = HEADER_BYTES + MAC_BYTES;
    let Ok((header, rest)) = Header::read_from_prefix(datagram) else {
        return Err(WireError::Truncated {
            bytes,
            expected: minimum,
        });
    };
    check_header_fields(&header, cluster_id)?;
    let body_len = usize::from(header.body_len.get());
    let expected = minimum + body_len;
    if bytes < expected {
        return Err(WireError::Truncated { bytes, expected });
    }
    if bytes > expected {
        return Err(WireError::LengthMismatch { bytes, expected });
    }
    let (body, mac_bytes) = rest.split_at(body_len);
    let Some(mac_key) = keyring.mac_key(header.key_id) else {
        return Err(WireError::UnknownKey {
            key_id: header.key_id,
        });
    };
    let Ok(mac_array) = <[u8; MAC_BYTES]>::try_from(mac_bytes) else {
        unreachable!("length checked above: {} MAC bytes", mac_bytes.len());
    };
    if !constant_time_eq::constant_time_eq_16(&mac(mac_key, header.as_bytes(), body), &mac_array) {
        return Err(WireError::BadMac {
            key_id: header.key_id,
        });
    }
    Ok((header, body))
}

fn check_header_fields(header: &Header, cluster_id: u64) -> Result<(), WireError> {
    if header.magic != MAGIC {
        return Err(WireError::BadMagic {
            found: header.magic,
        });
    }
    if header.version != PROTOCOL_VERSION {
        return Err(WireError::BadVersion {
            found: header.version,
        });
    }
    if header.flags != 0 {
        return Err(WireError::BadFlags {
            found: header.flags,
        });
    }
    if header.kind().range() == KindRange::Reserved {
        return Err(WireError::UnknownKind { found: header.kind });
    }
    if header.cluster_id.get() != cluster_id {
        return Err(WireError::WrongCluster {
            found: header.cluster_id.get(),
            expected: cluster_id,
        });
    }
    Ok(())
}

/// The sending side of one (node, shard, epoch): numbers and seals datagrams.
#[derive(Clone, Debug)]
pub struct Sealer {
    /// Our cluster id.
    pub cluster_id: u64,
    /// Our node id.
    pub sender: NodeId,
    /// Our shard index.
    pub shard: u16,
    /// Our epoch: must grow across restarts (e.g. a persisted start counter or wall-clock ms at
    /// start), otherwise peers reject our restarted sequence numbers as replays.
    pub epoch: u64,
    /// Keys; the send key seals.
    pub keyring: Keyring,
    sequence_next: u64,
}

impl Sealer {
    /// A sealer whose first datagram gets sequence 0.
    pub fn new(cluster_id: u64, sender: NodeId, shard: u16, epoch: u64, keyring: Keyring) -> Self {
        Self {
            cluster_id,
            sender,
            shard,
            epoch,
            keyring,
            sequence_next: 0,
        }
    }

    /// The sequence number the next datagram will carry.
    pub fn sequence_next(&self) -> u64 {
        self.sequence_next
    }

    /// Appends one sealed datagram (header, body, MAC) to `out` and returns its length.
    pub fn seal(&mut self, kind: Kind, body: &[u8], out: &mut Vec<u8>) -> Result<usize, WireError> {
        let Ok(body_len) = u16::try_from(body.len()) else {
            return Err(WireError::BodyTooLarge { bytes: body.len() });
        };
        if body.len() > BODY_BYTES_MAX {
            return Err(WireError::BodyTooLarge { bytes: body.len() });
        }
        assert!(
            kind.range() != KindRange::Reserved,
            "sealing unassigned kind {kind:?}"
        );
        let header = Header {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            kind: kind.0,
            key_id: self.keyring.send_key_id(),
            flags: 0,
            shard: U16::new(self.shard),
            body_len: U16::new(body_len),
            epoch: U64::new(self.epoch),
            cluster_id: U64::new(self.cluster_id),
            sender: U64::new(self.sender),
            sequence: U64::new(self.sequence_next),
        };
        self.sequence_next += 1;
        let tag = mac(self.keyring.send_mac_key(), header.as_bytes(), body);
        let start = out.len();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&tag);
        let written = out.len() - start;
        debug_assert!(written <= DATAGRAM_BYTES_MAX);
        Ok(written)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
