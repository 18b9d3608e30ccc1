//! The authenticated (optionally encrypted) gossip datagram: header, body and a 16-byte tag.
//!
//! Layout of every datagram (all integers little-endian, no padding):
//!
//! ```text
//! | Header (42 bytes, zerocopy) | body (body_len bytes) | tag (16 bytes) |
//! ```
//!
//! **Plaintext form** (`flags` = 0): the tag is a MAC, the first 16 bytes of
//! `blake3::keyed_hash(mac_key, header ‖ body)` (a 128-bit tag, the strength of Poly1305 or GCM
//! tags: a forgery succeeds with probability 2^−128 per try; truncating BLAKE3's output is
//! sound, it is an XOF). Most datagrams carry one small entry or an ack, so 16 bytes fewer per
//! datagram is ≈ 5–10 % of all gossip bytes.
//!
//! **Encrypted form** (`flags` = [`FLAG_ENCRYPTED`], `[cluster] encrypt = true`): the body is
//! XChaCha20-Poly1305 ciphertext and the tag is its Poly1305 tag, in the MAC's place, so sizes
//! and [`BODY_BYTES_MAX`] are the same in both forms. The associated data is the header (sent in
//! clear and authenticated: a receiver needs cluster id, key id, sender, epoch and sequence
//! before it can decrypt). The 24-byte nonce is built from the header alone:
//! `sender (8) ‖ epoch (8) ‖ shard (2) ‖ sequence (low 6 bytes)`.
//!
//! **Nonce invariant:** a (key, nonce) pair is never used twice as long as one sender (node id,
//! shard) never seals two datagrams under the same (epoch, sequence), which the replay design
//! already requires: node ids are unique in a cluster, a [`Sealer`] numbers its datagrams
//! strictly increasing from 0, and the epoch grows on every process start. The sealer refuses
//! to encrypt past sequence 2^48 ([`SEQUENCE_ENCRYPTED_MAX`], ~9 years at a million datagrams a
//! second per shard), so the 6-byte sequence field of the nonce cannot wrap. A reused nonce
//! would leak the XOR of two bodies and let an attacker forge Poly1305 tags: never hand two
//! live sealers the same (node id, shard, epoch).
//!
//! Keys: the MAC key and the AEAD key are both derived from the configured 32-byte cluster key
//! with `blake3::derive_key`, each under its own context string, so the raw key is never used
//! for two purposes and neither derived key ever serves the other's algorithm. The receiver
//! picks the key by `key_id`, in both forms, which is how keys rotate: install the new key
//! everywhere ([`Keyring::insert`]), then switch senders to it ([`Keyring::set_send_key`]), then
//! remove the old one.
//!
//! **Which form is accepted:** exactly the one the keyring is configured for
//! ([`Keyring::set_encryption`]): an encrypting node rejects plaintext datagrams and a
//! plaintext node rejects encrypted ones, both as [`WireError::EncryptionMismatch`] (a metric of
//! its own), so a node with the wrong `encrypt` setting is visible at once instead of silently
//! leaking cleartext into an encrypted cluster. Switching a live cluster therefore needs every
//! node restarted with the new setting.
//!
//! **Invariants:** a sealed datagram is at most [`DATAGRAM_BYTES_MAX`] bytes; [`open_in_place`]
//! checks size, magic, version, flags, cluster id, form, key id and tag before a single body
//! byte is returned (a body is decrypted only after its tag verified), and never panics on any
//! input. Replay protection is a separate, stateful step ([`super::replay::ReplayGuard`])
//! applied only to datagrams that passed opening, so a forged datagram can never move a replay
//! window.

use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zerocopy::byteorder::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Largest datagram payload this format produces or accepts (fits a 1,500-byte MTU with room
/// for IP/UDP headers and tunnels).
pub const DATAGRAM_BYTES_MAX: usize = 1_400;
/// Size of the fixed header.
pub const HEADER_BYTES: usize = size_of::<Header>();
/// Size of the trailer: the MAC (plaintext form) or the AEAD tag (encrypted form).
pub const MAC_BYTES: usize = 16;
/// Largest body that fits in one datagram.
pub const BODY_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - HEADER_BYTES - MAC_BYTES;
/// First bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"SG";
/// Wire protocol version; bumped on any incompatible change (4: reconciliation fingerprints
/// name their leaf, so a version-3 peer would look them up wrongly).
pub const PROTOCOL_VERSION: u8 = 4;
/// Keys a keyring holds at most (rotation needs two, three leaves slack).
pub const KEYS_MAX: usize = 8;
/// Header flag: the body is XChaCha20-Poly1305 ciphertext and the trailer its tag.
pub const FLAG_ENCRYPTED: u8 = 0x01;
/// An encrypting [`Sealer`] stops at this sequence number: the nonce keeps 48 sequence bits.
pub const SEQUENCE_ENCRYPTED_MAX: u64 = 1 << 48;
/// Context string for deriving MAC keys from cluster keys (never reuse it elsewhere).
const MAC_KEY_CONTEXT: &str = "starling 2026 gossip datagram mac v1";
/// Context string for deriving AEAD keys from cluster keys (distinct from the MAC context, so
/// the two derived keys are independent).
const AEAD_KEY_CONTEXT: &str = "starling 2026 gossip datagram xchacha20poly1305 v1";

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
    /// [`FLAG_ENCRYPTED`] or 0; other bits are reserved and must be 0.
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
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
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
    /// Reserved flag bits set (anything but [`FLAG_ENCRYPTED`]).
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
    /// The datagram is in the other form (encrypted or plaintext) than this node's
    /// `[cluster] encrypt` setting accepts: one of the two nodes is misconfigured.
    #[error(
        "{} datagram from node {sender:#x} does not match this node's `[cluster] encrypt` setting: set it alike on every node",
        form_name(*.encrypted)
    )]
    EncryptionMismatch {
        /// Sender node (unauthenticated: the datagram was not verified).
        sender: u64,
        /// Whether the datagram was encrypted.
        encrypted: bool,
    },
    /// MAC or AEAD tag does not verify: forged, corrupted, or the sender uses another key under
    /// this id. Both forms report this one error (and metric): either way the datagram failed
    /// authentication.
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
    /// An encrypting sealer reached [`SEQUENCE_ENCRYPTED_MAX`] (sender-side error): restart the
    /// process, which starts a new epoch.
    #[error("sequence numbers exhausted for encryption in this epoch: restart to start a new one")]
    SequenceExhausted,
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

/// The two keys derived from one cluster key.
#[derive(Clone)]
struct DatagramKeys {
    /// Keyed-BLAKE3 MAC key (plaintext form).
    mac: [u8; 32],
    /// XChaCha20-Poly1305 key (encrypted form).
    aead: [u8; 32],
}

impl DatagramKeys {
    fn derive(cluster_key: &[u8; 32]) -> Self {
        Self {
            mac: blake3::derive_key(MAC_KEY_CONTEXT, cluster_key),
            aead: blake3::derive_key(AEAD_KEY_CONTEXT, cluster_key),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.aead.into())
    }
}

/// The cluster keys this node accepts, by key id, the one it sends with, and whether datagrams
/// are encrypted (sealed encrypted and accepted only encrypted) or plaintext.
#[derive(Clone)]
pub struct Keyring {
    /// (key id, derived keys); at most [`KEYS_MAX`], ids unique.
    keys: Vec<(u8, DatagramKeys)>,
    send_key_id: u8,
    encrypt: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        formatter
            .debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("send_key_id", &self.send_key_id)
            .field("encrypt", &self.encrypt)
            .finish()
    }
}

impl Keyring {
    /// A keyring with one key, used for sending; plaintext form (see [`Keyring::set_encryption`]).
    pub fn new(key_id: u8, cluster_key: [u8; 32]) -> Self {
        Self {
            keys: vec![(key_id, DatagramKeys::derive(&cluster_key))],
            send_key_id: key_id,
            encrypt: false,
        }
    }

    /// Chooses the form: `true` seals encrypted datagrams and accepts only encrypted ones,
    /// `false` seals and accepts only plaintext ones.
    pub fn set_encryption(&mut self, encrypt: bool) {
        self.encrypt = encrypt;
    }

    /// This keyring with the form set (see [`Keyring::set_encryption`]).
    pub fn with_encryption(mut self, encrypt: bool) -> Self {
        self.set_encryption(encrypt);
        self
    }

    /// Whether datagrams are encrypted.
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// Adds (or replaces) an accepted key.
    pub fn insert(&mut self, key_id: u8, cluster_key: [u8; 32]) -> Result<(), KeyringError> {
        let keys = DatagramKeys::derive(&cluster_key);
        if let Some(slot) = self.keys.iter_mut().find(|(id, _)| *id == key_id) {
            slot.1 = keys;
            return Ok(());
        }
        if self.keys.len() >= KEYS_MAX {
            return Err(KeyringError::Full);
        }
        self.keys.push((key_id, keys));
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
        if self.keys(key_id).is_none() {
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

    fn keys(&self, key_id: u8) -> Option<&DatagramKeys> {
        self.keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, keys)| keys)
    }

    fn send_keys(&self) -> &DatagramKeys {
        match self.keys(self.send_key_id) {
            Some(keys) => keys,
            // Constructors and set_send_key keep the send key in the ring.
            None => unreachable!("keyring invariant: send key {} present", self.send_key_id),
        }
    }
}

fn form_name(encrypted: bool) -> &'static str {
    if encrypted { "encrypted" } else { "plaintext" }
}

fn mac(mac_key: &[u8; 32], header: &[u8], body: &[u8]) -> [u8; MAC_BYTES] {
    let mut hasher = blake3::Hasher::new_keyed(mac_key);
    hasher.update(header);
    hasher.update(body);
    let mut tag = [0; MAC_BYTES];
    tag.copy_from_slice(&hasher.finalize().as_bytes()[..MAC_BYTES]);
    tag
}

/// The nonce of an encrypted datagram: `sender ‖ epoch ‖ shard ‖ sequence[0..6]`, unique per key
/// under the invariant in the module docs (the sealer keeps sequence below 2^48).
pub fn nonce(header: &Header) -> [u8; 24] {
    let mut nonce = [0; 24];
    nonce[..8].copy_from_slice(header.sender.as_bytes());
    nonce[8..16].copy_from_slice(header.epoch.as_bytes());
    nonce[16..18].copy_from_slice(header.shard.as_bytes());
    nonce[18..].copy_from_slice(&header.sequence.as_bytes()[..6]);
    nonce
}

/// Where a datagram is accepted: our cluster id and keyring (which also sets the form).
#[derive(Clone, Debug)]
pub struct Opener {
    /// Cluster id datagrams must carry.
    pub cluster_id: u64,
    /// Accepted keys and form.
    pub keyring: Keyring,
}

impl Opener {
    /// Checks a received plaintext datagram; see the free function [`open`].
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<(Header, &'a [u8]), WireError> {
        open(self.cluster_id, &self.keyring, datagram)
    }

    /// Checks (and decrypts, if encrypted) a received datagram; see [`open_in_place`].
    pub fn open_in_place<'a>(
        &self,
        datagram: &'a mut [u8],
    ) -> Result<(Header, &'a [u8]), WireError> {
        open_in_place(self.cluster_id, &self.keyring, datagram)
    }
}

/// Checks a received datagram in the plaintext form and returns its header and body.
///
/// It only borrows the datagram, so it cannot decrypt: an encrypted datagram, or any datagram
/// when `keyring` encrypts, is rejected with [`WireError::EncryptionMismatch`]. Receivers that
/// may be configured to encrypt use [`open_in_place`], which takes both forms; the checks are
/// the same.
pub fn open<'a>(
    cluster_id: u64,
    keyring: &Keyring,
    datagram: &'a [u8],
) -> Result<(Header, &'a [u8]), WireError> {
    let (header, keys) = check(cluster_id, keyring, datagram)?;
    if header.flags & FLAG_ENCRYPTED != 0 {
        return Err(WireError::EncryptionMismatch {
            sender: header.sender.get(),
            encrypted: true,
        });
    }
    let body = &datagram[HEADER_BYTES..datagram.len() - MAC_BYTES];
    verify_mac(&header, keys, body, &datagram[datagram.len() - MAC_BYTES..])?;
    Ok((header, body))
}

/// Checks a received datagram, decrypts its body in place if it is encrypted, and returns its
/// header and (plaintext) body.
///
/// Rejects, in this order: oversize, truncated, bad magic, bad version, reserved flags, length
/// mismatch, unassigned kind, wrong cluster, form other than the keyring's
/// ([`WireError::EncryptionMismatch`]), unknown key id, bad MAC or AEAD tag (both
/// [`WireError::BadMac`]). Constant-time tag comparison; a body is decrypted only after its
/// tag verified. Never panics. Replay is *not* checked here: pass the header to
/// [`super::replay::ReplayGuard::accept`] next.
pub fn open_in_place<'a>(
    cluster_id: u64,
    keyring: &Keyring,
    datagram: &'a mut [u8],
) -> Result<(Header, &'a [u8]), WireError> {
    let (header, keys) = check(cluster_id, keyring, datagram)?;
    let tag_at = datagram.len() - MAC_BYTES;
    let (rest, tag) = datagram.split_at_mut(tag_at);
    let body = &mut rest[HEADER_BYTES..];
    if header.flags & FLAG_ENCRYPTED == 0 {
        verify_mac(&header, keys, body, tag)?;
    } else {
        let tag = Tag::try_from(&*tag).map_err(|_| WireError::BadMac {
            key_id: header.key_id,
        })?;
        keys.cipher()
            .decrypt_inout_detached(
                &XNonce::from(nonce(&header)),
                header.as_bytes(),
                (&mut *body).into(),
                &tag,
            )
            .map_err(|_| WireError::BadMac {
                key_id: header.key_id,
            })?;
    }
    Ok((header, body))
}

/// Every check but the tag: returns the header and the keys its key id names.
fn check<'k>(
    cluster_id: u64,
    keyring: &'k Keyring,
    datagram: &[u8],
) -> Result<(Header, &'k DatagramKeys), WireError> {
    let bytes = datagram.len();
    if bytes > DATAGRAM_BYTES_MAX {
        return Err(WireError::Oversize { bytes });
    }
    let minimum = HEADER_BYTES + MAC_BYTES;
    let Ok((header, _)) = Header::read_from_prefix(datagram) else {
        return Err(WireError::Truncated {
            bytes,
            expected: minimum,
        });
    };
    check_header_fields(&header, cluster_id)?;
    let expected = minimum + usize::from(header.body_len.get());
    if bytes < expected {
        return Err(WireError::Truncated { bytes, expected });
    }
    if bytes > expected {
        return Err(WireError::LengthMismatch { bytes, expected });
    }
    let encrypted = header.flags & FLAG_ENCRYPTED != 0;
    if encrypted != keyring.encrypts() {
        return Err(WireError::EncryptionMismatch {
            sender: header.sender.get(),
            encrypted,
        });
    }
    let Some(keys) = keyring.keys(header.key_id) else {
        return Err(WireError::UnknownKey {
            key_id: header.key_id,
        });
    };
    Ok((header, keys))
}

fn verify_mac(
    header: &Header,
    keys: &DatagramKeys,
    body: &[u8],
    tag: &[u8],
) -> Result<(), WireError> {
    let expected = mac(&keys.mac, header.as_bytes(), body);
    match <&[u8; MAC_BYTES]>::try_from(tag) {
        Ok(tag) if constant_time_eq::constant_time_eq_16(&expected, tag) => Ok(()),
        _ => Err(WireError::BadMac {
            key_id: header.key_id,
        }),
    }
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
    if header.flags & !FLAG_ENCRYPTED != 0 {
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

    /// Appends one sealed datagram (header, body, tag) to `out` and returns its length; the
    /// body is encrypted if the keyring encrypts.
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
        let encrypt = self.keyring.encrypts();
        // The nonce keeps 48 sequence bits (see the module docs' nonce invariant).
        if encrypt && self.sequence_next >= SEQUENCE_ENCRYPTED_MAX {
            return Err(WireError::SequenceExhausted);
        }
        let header = Header {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            kind: kind.0,
            key_id: self.keyring.send_key_id(),
            flags: if encrypt { FLAG_ENCRYPTED } else { 0 },
            shard: U16::new(self.shard),
            body_len: U16::new(body_len),
            epoch: U64::new(self.epoch),
            cluster_id: U64::new(self.cluster_id),
            sender: U64::new(self.sender),
            sequence: U64::new(self.sequence_next),
        };
        self.sequence_next += 1;
        let keys = self.keyring.send_keys();
        let start = out.len();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        let tag = if encrypt {
            let sealed_body = &mut out[start + HEADER_BYTES..];
            let Ok(tag) = keys.cipher().encrypt_inout_detached(
                &XNonce::from(nonce(&header)),
                header.as_bytes(),
                sealed_body.into(),
            ) else {
                unreachable!("XChaCha20-Poly1305 accepts any body up to 256 GiB");
            };
            <[u8; MAC_BYTES]>::from(tag)
        } else {
            mac(&keys.mac, header.as_bytes(), body)
        };
        out.extend_from_slice(&tag);
        let written = out.len() - start;
        debug_assert!(written <= DATAGRAM_BYTES_MAX);
        Ok(written)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
