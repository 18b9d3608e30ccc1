//! Fuzz the bloom filter decoder and probe (`storage::sst::bloom`). The input is opened raw and
//! sealed with a valid checksum trailer; an opened filter is probed with hashes taken from the
//! input. Nothing may panic. A filter built from hashes in the input must contain every one of
//! them (no false negatives) after a round trip through its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_storage::sst::bloom::{Bloom, build, hash_key};

fuzz_target!(|data: &[u8]| {
    let hashes: Vec<u64> = data
        .chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .chain([hash_key(data)])
        .collect();
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(data).to_le_bytes());
    for raw in [data, sealed.as_slice()] {
        if let Some(bloom) = Bloom::open(raw) {
            for &hash in hashes.iter().take(64) {
                let _ = bloom.may_contain(hash);
            }
        }
    }
    let built = build(&hashes);
    let Some(bloom) = Bloom::open(&built) else {
        panic!("own filter rejected")
    };
    for &hash in &hashes {
        assert!(bloom.may_contain(hash), "false negative for {hash:#x}");
    }
});
