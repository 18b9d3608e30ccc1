//! Tests of the datagram format: round trips, every rejection path, no panics on garbage.

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
    let mut bad = datagram;
    bad[5] = 1;
    assert_eq!(
        open(CLUSTER, &keyring(), &bad),
        Err(WireError::BadFlags { found: 1 })
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

#[test]
fn key_rotation_accepts_old_and_new() {
    let mut receiver = keyring();
    let mut sender = sealer();
    let mut out = Vec::new();
    sender.seal(Kind::PING, b"a", &mut out).expect("fits");
    receiver.insert(2, [9; 32]).expect("room");
    sender.keyring.insert(2, [9; 32]).expect("room");
    sender.keyring.set_send_key(2).expect("present");
    let mut rotated = Vec::new();
    sender.seal(Kind::PING, b"b", &mut rotated).expect("fits");
    assert!(
        open(CLUSTER, &receiver, &out).is_ok(),
        "old key still accepted"
    );
    let (header, _) = open(CLUSTER, &receiver, &rotated).expect("new key accepted");
    assert_eq!(header.key_id, 2);
    assert_eq!(
        receiver.remove(1),
        Err(KeyringError::RemoveSendKey { key_id: 1 })
    );
    receiver.set_send_key(2).expect("present");
    assert_eq!(receiver.remove(1), Ok(()));
    assert_eq!(
        open(CLUSTER, &receiver, &out),
        Err(WireError::UnknownKey { key_id: 1 })
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
