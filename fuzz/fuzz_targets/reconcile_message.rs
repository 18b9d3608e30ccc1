//! Fuzz the reconciliation message decoder (`reconcile::Message::decode`). The input is tried
//! as is and, because a random input almost never carries a valid checksum, once more with the
//! checksum field (bytes 4..8) recomputed so the fuzzer reaches the item decoders. Decoding
//! never panics; a decoded message re-encodes within `MESSAGE_BYTES_MAX` and decodes back to
//! the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::reconcile::{MESSAGE_BYTES_MAX, Message};

/// Bytes of the fixed message header.
const HEADER_BYTES: usize = 26;

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER_BYTES {
        let mut sealed = data.to_vec();
        let sum = checksum(&sealed);
        sealed[4..8].copy_from_slice(&sum.to_le_bytes());
        check(&sealed);
    }
});

fn check(bytes: &[u8]) {
    let Ok(message) = Message::decode(bytes) else {
        return;
    };
    assert!(bytes.len() <= MESSAGE_BYTES_MAX);
    let encoded = message.encode();
    assert!(
        encoded.len() <= MESSAGE_BYTES_MAX,
        "{} bytes",
        encoded.len()
    );
    assert!(encoded.len() <= bytes.len(), "re-encoding grew the message");
    let again = Message::decode(&encoded);
    assert_eq!(again.as_ref(), Ok(&message), "decode(encode(m)) != m");
}

/// The wire checksum: low 32 bits of xxh3 over every byte except bytes 4..8.
fn checksum(bytes: &[u8]) -> u32 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&bytes[..4]);
    hasher.update(&bytes[8..]);
    hasher.digest() as u32
}
