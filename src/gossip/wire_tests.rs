//! Tests of the datagram format, plaintext and encrypted: round trips, every rejection path,
//! nonce uniqueness, no panics on garbage.

use proptest::prelude::*;

use super::*;

const CLUSTER: u64 = 0x5157_a11e;

fn keyring() -> Keyring {
    Keyring::new(1, [7; 32])
}

fn sealer() -> Sealer {
    Sealer::new(CLUSTER, 42, 3, 9, keyring())
}

fn sealed(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let written = sealer().seal(kind, body, &mut out).expect("body fits");
    assert_eq!(written, out.len());
    out
}

#[test]
fn header_is_42_bytes() {
    assert_eq!(HEADER_BYTES, 42);
    assert_eq!(BODY_BYTES_MAX, 1_400 - 42 - 16);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn seal_open_round_trip(kind in 0u8..0xA0, body in proptest::collection::vec(any::<u8>(), 0..=BODY_BYTES_MAX)) {
        let mut sender = sealer();
        let mut out = Vec::new();
        sender.seal(Kind(kind), &body, &mut out).expect("body fits");
        prop_assert!(out.len() <= DATAGRAM_BYTES_MAX);
        let (header, opened) = open(CLUSTER, &keyring(), &out).expect("own datagram opens");
        prop_assert_eq!(opened, &body[..]);
        prop_assert_eq!(header.kind, kind);
        prop_assert_eq!(header.sender.get(), 42);
        prop_assert_eq!(header.shard.get(), 3);
        prop_assert_eq!(header.epoch.get(), 9);
        prop_assert_eq!(header.sequence.get(), 0);
        prop_assert_eq!(sender.sequence_next(), 1);
    }

    #[test]
    fn open_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..1_600)) {
        prop_assert!(open(CLUSTER, &keyring(), &bytes).is_err());
    }

    #[test]
    fn any_flipped_bit_is_rejected(body in proptest::collection::vec(any::<u8>(), 0..64), bit in any::<usize>()) {
        let mut datagram = sealed(Kind::PING, &body);
        let bit = bit % (datagram.len() * 8);
        datagram[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(open(CLUSTER, &keyring(), &datagram).is_err());
    }
}

#[test]
fn rejects_oversize_truncated_and_trailing() {
    let datagram = sealed(Kind::GOSSIP, b"hello");
    let mut long = datagram.clone();
    long.resize(DATAGRAM_BYTES_MAX + 1, 0);
    assert_eq!(
        open(CLUSTER, &keyring(), &long),
        Err(WireError::Oversize { bytes: 1_401 })
    );
    assert!(matches!(
        open(CLUSTER, &keyring(), &datagram[..10]),
        Err(WireError::Truncated { .. })
    ));
    assert!(matches!(
        open(CLUSTER, &keyring(), &datagram[..datagram.len() - 1]),
        Err(WireError::Truncated { .. })
    ));
    let mut trailing = datagram.clone();
    trailing.push(0);
    assert!(matches!(
        open(CLUSTER, &keyring(), &trailing),
        Err(WireError::LengthMismatch { .. })
    ));
}

#[test]
fn rejects_wrong_cluster_magic_version_and_kind() {
    let datagram = sealed(Kind::PING, b"x");
    assert_eq!(
        open(CLUSTER + 1, &keyring(), &datagram),
        Err(WireError::WrongCluster {
            found: CLUSTER,
            expected: CLUSTER + 1
        })
    );
    let mut bad = datagram.clone();
    bad[0] = b'X';
    assert!(matches!(
        open(CLUSTER, &keyring(), &bad),
        Err(WireError::BadMagic { .. })
    ));
    let mut bad = datagram.clone();
    bad[2] = PROTOCOL_VERSION + 1;
    assert_eq!(
        open(CLUSTER, &keyring(), &bad),
        Err(WireError::BadVersion {
            found: PROTOCOL_VERSION + 1
        })
    );
    let mut bad = datagram.clone();
    bad[3] = 0xA0;
    assert_eq!(
        open(CLUSTER, &keyring(), &bad),
        Err(WireError::UnknownKind { found: 0xA0 })
    );
    let mut bad = datagram.clone();
    bad[5] = 0x02;
    assert_eq!(
        open(CLUSTER, &keyring(), &bad),
        Err(WireError::BadFlags { found: 0x02 })
    );
    let mut bad = datagram;
    bad[5] = FLAG_ENCRYPTED | 0x80;
    assert_eq!(
        open_in_place(CLUSTER, &keyring().with_encryption(true), &mut bad),
        Err(WireError::BadFlags {
            found: FLAG_ENCRYPTED | 0x80
        })
    );
}

#[test]
fn rejects_forged_mac_and_unknown_key() {
    let mut datagram = sealed(Kind::ACK, b"payload");
    let last = datagram.len() - 1;
    datagram[last] ^= 0x80;
    assert_eq!(
        open(CLUSTER, &keyring(), &datagram),
        Err(WireError::BadMac { key_id: 1 })
    );
    let other = Keyring::new(2, [7; 32]);
    let datagram = sealed(Kind::ACK, b"payload");
    assert_eq!(
        open(CLUSTER, &other, &datagram),
        Err(WireError::UnknownKey { key_id: 1 })
    );
    // Same id, other key material: a forger without the key.
    let forged_ring = Keyring::new(1, [8; 32]);
    assert_eq!(
        open(CLUSTER, &forged_ring, &datagram),
        Err(WireError::BadMac { key_id: 1 })
    );
}

/// Rotation in both forms: install the new key, switch senders, retire the old one; a key
/// id with other key material is a forger.
#[test]
fn key_rotation_accepts_old_and_new() {
    for encrypt in [false, true] {
        let mut receiver = keyring().with_encryption(encrypt);
        let mut sender = Sealer::new(CLUSTER, 42, 3, 9, keyring().with_encryption(encrypt));
        let mut old = Vec::new();
        sender.seal(Kind::PING, b"old key", &mut old).expect("fits");
        receiver.insert(2, [9; 32]).expect("room");
        sender.keyring.insert(2, [9; 32]).expect("room");
        sender.keyring.set_send_key(2).expect("present");
        let mut new = Vec::new();
        sender.seal(Kind::PING, b"new key", &mut new).expect("fits");
        for (datagram, key_id, text) in [(&old, 1, &b"old key"[..]), (&new, 2, b"new key")] {
            let mut copy = datagram.clone();
            let (header, body) = open_in_place(CLUSTER, &receiver, &mut copy).expect("opens");
            assert_eq!((header.key_id, body), (key_id, text), "encrypt {encrypt}");
        }
        assert_eq!(
            receiver.remove(1),
            Err(KeyringError::RemoveSendKey { key_id: 1 })
        );
        receiver.set_send_key(2).expect("present");
        assert_eq!(receiver.remove(1), Ok(()));
        assert_eq!(
            open_in_place(CLUSTER, &receiver, &mut old.clone()),
            Err(WireError::UnknownKey { key_id: 1 })
        );
        let forger = Keyring::new(2, [8; 32]).with_encryption(encrypt);
        assert_eq!(
            open_in_place(CLUSTER, &forger, &mut new),
            Err(WireError::BadMac { key_id: 2 })
        );
        assert_eq!(
            sender.keyring.remove(2),
            Err(KeyringError::RemoveSendKey { key_id: 2 })
        );
        assert_eq!(
            sender.keyring.set_send_key(5),
            Err(KeyringError::UnknownKey { key_id: 5 })
        );
    }
}

#[test]
fn seal_refuses_oversize_body() {
    let mut out = Vec::new();
    let body = vec![0; BODY_BYTES_MAX + 1];
    assert_eq!(
        sealer().seal(Kind::GOSSIP, &body, &mut out),
        Err(WireError::BodyTooLarge {
            bytes: BODY_BYTES_MAX + 1
        })
    );
    assert!(out.is_empty());
}

#[test]
fn kind_ranges() {
    assert_eq!(Kind::PING.range(), KindRange::Membership);
    assert_eq!(Kind(0x3F).range(), KindRange::Membership);
    assert_eq!(Kind(0x40).range(), KindRange::Replication);
    assert_eq!(Kind(0x80).range(), KindRange::Reconciliation);
    assert_eq!(Kind(0x9F).range(), KindRange::Reconciliation);
    assert_eq!(Kind(0xA0).range(), KindRange::Reserved);
}

// ---- Encrypted form -------------------------------------------------------------------------

fn encrypting() -> Keyring {
    keyring().with_encryption(true)
}

fn encrypting_sealer() -> Sealer {
    Sealer::new(CLUSTER, 42, 3, 9, encrypting())
}

fn sealed_encrypted(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encrypting_sealer()
        .seal(kind, body, &mut out)
        .expect("body fits");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn encrypted_round_trip(kind in 0u8..0xA0, body in proptest::collection::vec(any::<u8>(), 0..=BODY_BYTES_MAX)) {
        let mut sender = encrypting_sealer();
        let mut out = Vec::new();
        let written = sender.seal(Kind(kind), &body, &mut out).expect("body fits");
        prop_assert_eq!(written, HEADER_BYTES + body.len() + MAC_BYTES, "same size as plaintext");
        prop_assert!(out.len() <= DATAGRAM_BYTES_MAX);
        prop_assert_eq!(out[5], FLAG_ENCRYPTED);
        if body.len() >= 8 {
            // Equal by chance with probability 2^-64 at most.
            prop_assert_ne!(&out[HEADER_BYTES..HEADER_BYTES + body.len()], &body[..]);
        }
        let (header, opened) = open_in_place(CLUSTER, &encrypting(), &mut out).expect("own datagram opens");
        prop_assert_eq!(opened, &body[..]);
        prop_assert_eq!(header.kind, kind);
        prop_assert_eq!(header.sender.get(), 42);
        prop_assert_eq!(header.sequence.get(), 0);
    }

    #[test]
    fn plaintext_round_trip_through_open_in_place(kind in 0u8..0xA0, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut out = sealed(Kind(kind), &body);
        let (header, opened) = open_in_place(CLUSTER, &keyring(), &mut out).expect("opens");
        prop_assert_eq!(opened, &body[..]);
        prop_assert_eq!(header.flags, 0);
    }

    #[test]
    fn open_in_place_never_panics_on_garbage(mut bytes in proptest::collection::vec(any::<u8>(), 0..1_600), encrypt: bool, flags in 0u8..2) {
        // Steer some inputs past the header checks so the tag paths run too.
        if bytes.len() >= HEADER_BYTES {
            bytes[..2].copy_from_slice(&MAGIC);
            bytes[2] = PROTOCOL_VERSION;
            bytes[3] &= 0x7F;
            bytes[4] = 1;
            bytes[5] = flags;
            bytes[24..32].copy_from_slice(&CLUSTER.to_le_bytes());
            let body_len = bytes.len().saturating_sub(HEADER_BYTES + MAC_BYTES) as u16;
            bytes[8..10].copy_from_slice(&body_len.to_le_bytes());
        }
        let ring = keyring().with_encryption(encrypt);
        prop_assert!(open_in_place(CLUSTER, &ring, &mut bytes).is_err());
    }

    #[test]
    fn any_flipped_bit_of_an_encrypted_datagram_is_rejected(body in proptest::collection::vec(any::<u8>(), 0..64), bit in any::<usize>()) {
        let mut datagram = sealed_encrypted(Kind::PING, &body);
        let bit = bit % (datagram.len() * 8);
        datagram[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(open_in_place(CLUSTER, &encrypting(), &mut datagram).is_err());
    }
}

#[test]
fn flipped_header_body_and_tag_bits_fail_authentication() {
    let datagram = sealed_encrypted(Kind::ACK, b"confidential payload");
    // Sequence (authenticated header), a body byte, a tag byte.
    for at in [HEADER_BYTES - 1, HEADER_BYTES + 3, datagram.len() - 1] {
        let mut bad = datagram.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            open_in_place(CLUSTER, &encrypting(), &mut bad),
            Err(WireError::BadMac { key_id: 1 }),
            "byte {at}"
        );
    }
}

#[test]
fn ciphertext_hides_the_body_and_matches_the_documented_construction() {
    let body = b"SET user:42 {\"email\":\"a@example.org\"}";
    let datagram = sealed_encrypted(Kind(0x41), body);
    let ciphertext = &datagram[HEADER_BYTES..HEADER_BYTES + body.len()];
    assert_ne!(ciphertext, &body[..]);
    assert!(!datagram.windows(5).any(|w| w == b"email"), "no cleartext");
    // Independent decryption: key = derive_key(AEAD context, cluster key), nonce =
    // sender ‖ epoch ‖ shard ‖ sequence[0..6], associated data = the header.
    let key = blake3::derive_key(AEAD_KEY_CONTEXT, &[7; 32]);
    assert_ne!(key, blake3::derive_key(MAC_KEY_CONTEXT, &[7; 32]));
    let mut nonce = Vec::new();
    nonce.extend_from_slice(&42u64.to_le_bytes());
    nonce.extend_from_slice(&9u64.to_le_bytes());
    nonce.extend_from_slice(&3u16.to_le_bytes());
    nonce.extend_from_slice(&0u64.to_le_bytes()[..6]);
    let mut plain = ciphertext.to_vec();
    let tag = Tag::try_from(&datagram[datagram.len() - MAC_BYTES..]).expect("16 bytes");
    XChaCha20Poly1305::new(&key.into())
        .decrypt_inout_detached(
            &XNonce::try_from(&nonce[..]).expect("24 bytes"),
            &datagram[..HEADER_BYTES],
            plain.as_mut_slice().into(),
            &tag,
        )
        .expect("decrypts");
    assert_eq!(plain, body);
}

#[test]
fn each_form_is_rejected_by_a_node_configured_for_the_other() {
    let mut plain = sealed(Kind::PING, b"x");
    assert_eq!(
        open_in_place(CLUSTER, &encrypting(), &mut plain),
        Err(WireError::EncryptionMismatch {
            sender: 42,
            encrypted: false
        })
    );
    let message = WireError::EncryptionMismatch {
        sender: 42,
        encrypted: false,
    }
    .to_string();
    assert!(
        message.starts_with("plaintext datagram from node 0x2a"),
        "{message}"
    );
    let mut encrypted = sealed_encrypted(Kind::PING, b"x");
    assert_eq!(
        open_in_place(CLUSTER, &keyring(), &mut encrypted.clone()),
        Err(WireError::EncryptionMismatch {
            sender: 42,
            encrypted: true
        })
    );
    // The borrowing `open` cannot decrypt: it takes the plaintext form only.
    assert!(matches!(
        open(CLUSTER, &encrypting(), &encrypted),
        Err(WireError::EncryptionMismatch { .. })
    ));
    // Clearing the flag of an encrypted datagram does not make it a valid plaintext one.
    encrypted[5] = 0;
    assert_eq!(
        open_in_place(CLUSTER, &keyring(), &mut encrypted),
        Err(WireError::BadMac { key_id: 1 })
    );
}

#[test]
fn nonces_never_repeat_across_sequences_shards_epochs_and_senders() {
    let mut seen = std::collections::HashSet::new();
    let mut sealed_count = 0;
    for (sender, shard, epoch) in [
        (42, 0, 9),
        (42, 1, 9),
        (42, 0, 10),
        (43, 0, 9),
        (1 << 40, 0, 9),
    ] {
        let mut sealer = Sealer::new(CLUSTER, sender, shard, epoch, encrypting());
        for _ in 0..200 {
            let mut out = Vec::new();
            sealer
                .seal(Kind::PING, b"same body", &mut out)
                .expect("fits");
            let (header, _) = Header::read_from_prefix(&out).expect("header");
            assert!(seen.insert(nonce(&header)), "nonce reused: {header:?}");
            sealed_count += 1;
        }
    }
    assert_eq!(seen.len(), sealed_count);
}

#[test]
fn encrypting_sealer_stops_before_the_nonce_sequence_wraps() {
    let mut sealer = encrypting_sealer();
    sealer.sequence_next = SEQUENCE_ENCRYPTED_MAX - 1;
    let mut out = Vec::new();
    sealer
        .seal(Kind::PING, b"last", &mut out)
        .expect("last one fits");
    assert_eq!(
        sealer.seal(Kind::PING, b"one more", &mut out),
        Err(WireError::SequenceExhausted)
    );
    let mut plain = sealer.clone();
    plain.keyring.set_encryption(false);
    plain
        .seal(Kind::PING, b"plaintext has no limit", &mut out)
        .expect("fits");
}

#[test]
fn a_forged_encrypted_datagram_never_reaches_the_replay_window() {
    let mut guard = crate::gossip::replay::ReplayGuard::new(4);
    let mut sender = encrypting_sealer();
    let mut first = Vec::new();
    sender.seal(Kind::PING, b"0", &mut first).expect("fits");
    // A forger moves the sequence far ahead; open must reject it before the guard sees it.
    let mut forged = first.clone();
    forged[HEADER_BYTES - 2] = 0xFF;
    let opened = open_in_place(CLUSTER, &encrypting(), &mut forged);
    assert_eq!(opened, Err(WireError::BadMac { key_id: 1 }));
    let (header, _) = open_in_place(CLUSTER, &encrypting(), &mut first).expect("genuine");
    assert_eq!(
        guard.accept(&header),
        Ok(()),
        "window not moved by the forgery"
    );
}
