//! Fuzz `wire::open_in_place` (and the borrowing `wire::open`) on arbitrary bytes with a fixed
//! keyring, in both forms (plaintext MAC and XChaCha20-Poly1305): it must never panic, nothing
//! forged may open, and a datagram sealed from fuzzer-chosen kind and body must open to the same
//! body exactly once in either form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::gossip::replay::ReplayGuard;
use starling::gossip::wire::{
    self, BODY_BYTES_MAX, FLAG_ENCRYPTED, Keyring, Kind, KindRange, Sealer,
};

const CLUSTER: u64 = 0xF022;

fuzz_target!(|data: &[u8]| {
    for encrypt in [false, true] {
        let keyring = Keyring::new(1, [0x42; 32]).with_encryption(encrypt);
        let mut guard = ReplayGuard::new(16);
        let mut copy = data.to_vec();
        if let Ok((header, body)) = wire::open_in_place(CLUSTER, &keyring, &mut copy) {
            // Only reachable with the key; a forged datagram opening would be a finding.
            assert!(body.len() <= BODY_BYTES_MAX);
            assert_eq!(header.flags & FLAG_ENCRYPTED != 0, encrypt);
            assert!(guard.accept(&header).is_ok());
        }
        if let Ok((header, _)) = wire::open(CLUSTER, &keyring, data) {
            assert!(!encrypt && header.flags == 0);
        }
        round_trip(&keyring, data);
    }
});

/// Seals what the fuzzer gives (first byte = kind) and checks the round trip and replay.
fn round_trip(keyring: &Keyring, data: &[u8]) {
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
    let opened = wire::open_in_place(CLUSTER, keyring, &mut datagram);
    let Ok((header, opened_body)) = opened else {
        panic!("own datagram rejected: {opened:?}")
    };
    assert_eq!(opened_body, body);
    let mut guard = ReplayGuard::new(16);
    assert!(guard.accept(&header).is_ok());
    assert!(guard.accept(&header).is_err(), "replay accepted");
}
