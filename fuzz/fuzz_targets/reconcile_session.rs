//! Fuzz the reconciliation state machines with messages a hostile peer could send: the input is
//! a list of `len:u8 | bytes` records, each sealed with a valid checksum and decoded; decodable
//! messages go to a responder (created by the first `Open`) and to an initiator. Neither may
//! panic, and every message they emit must encode within `MESSAGE_BYTES_MAX` and decode back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::reconcile::element_from_hash;
use starling::reconcile::{Initiator, MESSAGE_BYTES_MAX, Message, PartitionSketch, Responder};

/// Bytes of the fixed message header.
const HEADER_BYTES: usize = 26;
/// Messages fed per input (bounds the work per run).
const MESSAGES_MAX: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&element_count, mut rest)) = data.split_first() else {
        return;
    };
    let elements: Vec<u64> = (0..u64::from(element_count % 64))
        .map(|i| element_from_hash(i.wrapping_mul(0x9E37_79B9)))
        .collect();
    let mut live = PartitionSketch::new();
    live.insert_batch(&elements);
    let (mut initiator, opened) = Initiator::start(42, 3, &live);
    check_out(&opened);
    let mut responder: Option<Responder> = None;
    for _ in 0..MESSAGES_MAX {
        let Some((&len, tail)) = rest.split_first() else {
            return;
        };
        let len = usize::from(len).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let Some(message) = decode_sealed(bytes) else {
            continue;
        };
        check_out(&initiator.handle(&message, &live));
        match responder.as_mut() {
            Some(responder) => check_out(&responder.handle(&message, &live)),
            None => {
                if let Ok((accepted, out)) = Responder::accept(&message, &live) {
                    check_out(&out);
                    responder = Some(accepted);
                }
            }
        }
    }
    check_out(&initiator.on_timeout(&live));
    if let Some(responder) = responder.as_mut() {
        check_out(&responder.on_timeout());
    }
});

/// Seals `bytes` with a valid checksum (bytes 4..8) and decodes them.
fn decode_sealed(bytes: &[u8]) -> Option<Message> {
    if bytes.len() < HEADER_BYTES {
        return None;
    }
    let mut sealed = bytes.to_vec();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&sealed[..4]);
    hasher.update(&sealed[8..]);
    sealed[4..8].copy_from_slice(&(hasher.digest() as u32).to_le_bytes());
    Message::decode(&sealed).ok()
}

/// Everything a state machine sends must be a valid message.
fn check_out(messages: &[Message]) {
    for message in messages {
        let encoded = message.encode();
        assert!(
            encoded.len() <= MESSAGE_BYTES_MAX,
            "{} bytes: {message:?}",
            encoded.len()
        );
        assert_eq!(Message::decode(&encoded).as_ref(), Ok(message));
    }
}
