//! Codec tests: proptest round trips and rejection of malformed bodies.

use proptest::prelude::*;

use super::types::Version;
use super::wire::*;

fn version() -> impl Strategy<Value = Version> {
    (any::<u64>(), any::<u64>()).prop_map(|(hlc, node)| Version { hlc, node })
}

fn wire_entry() -> impl Strategy<Value = WireEntry> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Payload::Value),
        Just(Payload::Tombstone),
        (0u32..=VALUE_BYTES_MAX as u32).prop_map(|value_len| Payload::Announced { value_len }),
    ];
    (
        proptest::collection::vec(any::<u8>(), 1..64),
        version(),
        payload,
    )
        .prop_map(|(key, version, payload)| WireEntry {
            key,
            version,
            payload,
        })
}

fn message() -> impl Strategy<Value = Message> {
    let entries = proptest::collection::vec(wire_entry(), 0..4);
    // Arcs from a small set, so that consecutive delegations often share one.
    let delegation = (
        any::<u64>(),
        prop_oneof![0u32..3, any::<u32>()],
        0u32..3,
        proptest::collection::vec(wire_entry(), 1..4),
    )
        .prop_map(|(batch, lo, hi, entries)| Delegation {
            batch,
            arc: Arc { lo, hi },
            entries,
        });
    let elements = proptest::collection::vec(any::<u64>(), 0..20);
    prop_oneof![
        proptest::collection::vec(delegation, 1..5).prop_map(Message::Rumor),
        elements.clone().prop_map(Message::RumorAck),
        (any::<u16>(), any::<u64>(), any::<u64>()).prop_map(|(partition, count, sum)| {
            Message::SyncDigest {
                partition,
                digest: Digest { count, sum },
            }
        }),
        (any::<u16>(), any::<u64>(), any::<u64>(), elements.clone()).prop_map(
            |(partition, lo, hi, elements)| Message::SyncElements {
                partition,
                lo,
                hi,
                elements
            }
        ),
        (any::<u16>(), elements).prop_map(|(partition, elements)| Message::SyncNeed {
            partition,
            elements
        }),
        (any::<u16>(), entries)
            .prop_map(|(partition, entries)| Message::SyncEntries { partition, entries }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(message in message()) {
        let body = message.to_bytes();
        let decoded = Message::decode(message.kind(), &body);
        prop_assert_eq!(decoded.as_ref(), Ok(&message));
        if let Message::Rumor(delegations) = &message {
            prop_assert_eq!(rumor_len(delegations), body.len());
            let upper: usize = 1 + delegations.iter().map(Delegation::encoded_len).sum::<usize>();
            let shared = delegations.windows(2).filter(|w| w[0].arc == w[1].arc).count();
            prop_assert_eq!(upper - 8 * shared, body.len());
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_rejected(message in message(), cut in any::<prop::sample::Index>()) {
        let body = message.to_bytes();
        let cut = cut.index(body.len().max(1));
        if cut < body.len() {
            prop_assert!(Message::decode(message.kind(), &body[..cut]).is_err());
        }
        let mut longer = body.clone();
        longer.push(0);
        prop_assert!(Message::decode(message.kind(), &longer).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(kind in 0x40u8..=0x4F, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        // Accepted bodies must re-encode to exactly the input.
        if let Ok(message) = Message::decode(kind, &body) {
            prop_assert_eq!(message.to_bytes(), body);
        }
    }
}

#[test]
fn a_repeated_arc_is_left_out_and_must_be() {
    let entry = WireEntry {
        key: b"k".to_vec(),
        version: Version { hlc: 1, node: 2 },
        payload: Payload::Tombstone,
    };
    let arc = Arc { lo: 5, hi: 9 };
    let delegation = |batch| Delegation {
        batch,
        arc,
        entries: vec![entry.clone()],
    };
    let one = Message::Rumor(vec![delegation(1)]).to_bytes();
    let two = Message::Rumor(vec![delegation(1), delegation(2)]).to_bytes();
    // The second delegation is its batch, a head byte and the entry: no arc.
    assert_eq!(
        two.len(),
        one.len() + 8 + 1 + (one.len() - 1 - DELEGATION_HEADER_BYTES)
    );
    // Writing the repeated arc out is a second encoding of the same message: refused.
    let mut spelled = one.clone();
    spelled[0] = 2;
    spelled.extend_from_slice(&2u64.to_le_bytes());
    spelled.extend_from_slice(&one[9..]);
    assert_eq!(
        Message::decode(kind::RUMOR, &spelled),
        Err(DecodeError::RepeatedArc)
    );
    // The first delegation has no previous arc to share.
    // Layout: count, batch (1..9), head (9), arc (10..18), entry (18..).
    let mut bare = one[..10].to_vec();
    bare[9] &= 0x7F;
    bare.extend_from_slice(&one[18..]);
    assert_eq!(
        Message::decode(kind::RUMOR, &bare),
        Err(DecodeError::MissingArc)
    );
}

#[test]
fn typed_errors_name_the_problem() {
    assert_eq!(
        Message::decode(0x7E, &[]),
        Err(DecodeError::UnknownKind(0x7E))
    );
    // One delegation claimed, no bytes for it.
    assert!(matches!(
        Message::decode(kind::RUMOR, &[1]),
        Err(DecodeError::OutOfRange {
            what: "delegation count",
            ..
        })
    ));
    // An entry with flags 7.
    let mut body = vec![0u8, 0]; // partition
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&[7u8; 19]);
    assert_eq!(
        Message::decode(kind::SYNC_ENTRIES, &body),
        Err(DecodeError::BadFlags(7))
    );
    // A zero-length key.
    let mut body = vec![0u8, 0];
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&[1u8, 0]);
    body.extend_from_slice(&[0u8; 17]);
    assert!(matches!(
        Message::decode(kind::SYNC_ENTRIES, &body),
        Err(DecodeError::OutOfRange {
            what: "key length",
            ..
        })
    ));
    // A padded (non-canonical) varint.
    let mut body = vec![0u8, 0];
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&[1u8, 0x81, 0x00]);
    body.extend_from_slice(&[0u8; 17]);
    assert_eq!(
        Message::decode(kind::SYNC_ENTRIES, &body),
        Err(DecodeError::BadVarint("key length"))
    );
}

#[test]
fn small_entry_header_is_19_bytes() {
    let entry = WireEntry {
        key: vec![1; 16],
        version: Version { hlc: 1, node: 2 },
        payload: Payload::Value(vec![2; 100]),
    };
    assert_eq!(entry.encoded_len(), 19 + 16 + 100);
    assert_eq!(entry_len(16, 100), 135);
    assert_eq!(BODY_BYTES_MAX, 1_342);
}
