//! Fuzz the replication message decoder (`replication::wire::Message::decode`): first byte =
//! kind, rest = body. Decoding never panics; a decoded message has the kind it was decoded as,
//! re-encodes to exactly the input body (the encoding is canonical), and its size accounting
//! (`rumor_len`, `encoded_len`) matches the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::replication::wire::{Message, WireEntry, rumor_len};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let Ok(message) = Message::decode(kind, body) else {
        return;
    };
    assert_eq!(message.kind(), kind);
    assert_eq!(
        message.to_bytes(),
        body,
        "decode/encode is not the identity"
    );
    match &message {
        Message::Rumor(delegations) => {
            assert!(!delegations.is_empty() || body == [0]);
            assert_eq!(rumor_len(delegations), body.len(), "rumor_len is off");
            for delegation in delegations {
                assert!(!delegation.entries.is_empty());
                check_entries(&delegation.entries);
            }
        }
        Message::SyncEntries { entries, .. } => {
            let total: usize = entries.iter().map(WireEntry::encoded_len).sum();
            assert_eq!(2 + 2 + total, body.len(), "entry encoded_len is off");
            check_entries(entries);
        }
        _ => {}
    }
});

/// Each entry's conversion to a stored entry keeps key, version and value.
fn check_entries(entries: &[WireEntry]) {
    for entry in entries {
        assert!(!entry.key.is_empty());
        if let Some(stored) = entry.to_entry() {
            assert_eq!(stored.key, entry.key);
            assert_eq!(stored.version, entry.version);
            let back = WireEntry::from_entry(&stored, usize::MAX);
            assert_eq!(&back, entry);
        }
    }
}
