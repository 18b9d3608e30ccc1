//! Fuzz `wire::open` on arbitrary bytes with a fixed keyring: it must never panic, and a
//! datagram sealed from fuzzer-chosen kind and body must open to the same body exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::gossip::replay::ReplayGuard;
use starling::gossip::wire::{self, BODY_BYTES_MAX, Keyring, Kind, KindRange, Sealer};

const CLUSTER: u64 = 0xF022;

fuzz_target!(|data: &[u8]| {
    let keyring = Keyring::new(1, [0x42; 32]);
    let mut guard = ReplayGuard::new(16);
    if let Ok((header, body)) = wire::open(CLUSTER, &keyring, data) {
        // Only reachable with the key; a forged datagram opening would be a finding.
        assert!(body.len() <= BODY_BYTES_MAX);
        assert!(guard.accept(&header).is_ok());
    }
    // Structured half: seal what the fuzzer gives and check the round trip and replay.
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let kind = Kind(kind);
    if kind.range() == KindRange::Reserved || body.len() > BODY_BYTES_MAX {
        return;
    }
    let mut sealer = Sealer::new(CLUSTER, 7, 0, 1, keyring.clone());
    let mut datagram = Vec::new();
    assert!(sealer.seal(kind, body, &mut datagram).is_ok());
    let opened = wire::open(CLUSTER, &keyring, &datagram);
    let Ok((header, opened_body)) = opened else {
        panic!("own datagram rejected: {opened:?}")
    };
    assert_eq!(opened_body, body);
    assert!(guard.accept(&header).is_ok());
    assert!(guard.accept(&header).is_err(), "replay accepted");
});
