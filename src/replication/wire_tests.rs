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
    let delegation = (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(wire_entry(), 1..4),
    )
        .prop_map(|(batch, lo, hi, entries)| Delegation {
            batch,
            arc: Arc { lo, hi },
            entries,
        });
    let elements = proptest::collection::vec(any::<u64>(), 0..20);
    prop_oneof![
        proptest::collection::vec(delegation, 1..3).prop_map(Message::Rumor),
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
            let len: usize = 1 + delegations.iter().map(Delegation::encoded_len).sum::<usize>();
            prop_assert_eq!(len, body.len());
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
