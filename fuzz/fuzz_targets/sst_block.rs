//! Fuzz the SST data block decoder (`storage::sst::block`). The input is opened both as a raw
//! block (checksum trailer included, so `Block::open` mostly rejects it) and as an already
//! verified body (`Block::open_verified`, which is what the reader calls after its one-time
//! checksum check), then iterated, sought and searched. Nothing may panic, iteration ends, and
//! a key found by `get` is the key asked for. A second half builds a block from keys cut out
//! of the input and checks that every key reads back.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use starling_storage::Version;
use starling_storage::sst::block::{Block, BlockBuilder};

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::open(data) {
        exercise(&block, data);
    }
    if let Ok(block) = Block::open_verified(data) {
        exercise(&block, data);
    }
    round_trip(data);
});

/// Walks every entry, then seeks and looks up keys taken from the block and the input.
fn exercise(block: &Block<'_>, data: &[u8]) {
    let mut keys = Vec::new();
    for entry in block.iter().take(data.len() + 1) {
        match entry {
            Ok(entry) => keys.push(entry.key),
            Err(_) => break,
        }
    }
    assert!(keys.len() <= data.len(), "more entries than bytes");
    keys.push(data.get(..data.len().min(8)).unwrap_or_default().to_vec());
    for key in keys.iter().take(32) {
        if let Ok(Some(found)) = block.get(key) {
            assert_eq!(&found.key, key);
        }
        if let Ok(iter) = block.seek(key) {
            for entry in iter.take(4).flatten() {
                let _ = entry.value;
            }
        }
    }
}

/// Keys = the input split at 0xFF bytes (sorted, deduplicated, non-empty): build, open, read.
fn round_trip(data: &[u8]) {
    let keys: BTreeSet<&[u8]> = data
        .split(|&b| b == 0xFF)
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        return;
    }
    let mut builder = BlockBuilder::new();
    for (i, key) in keys.iter().enumerate() {
        let version = Version {
            hlc: i as u64,
            node: 1,
        };
        builder.add(key, version, (i % 2 == 0).then_some(*key));
    }
    let mut raw = Vec::new();
    builder.finish_into(&mut raw);
    let block = match Block::open(&raw) {
        Ok(block) => block,
        Err(error) => panic!("own block rejected: {error:?}"),
    };
    let decoded: Vec<Vec<u8>> = block
        .iter()
        .map(|e| e.map(|e| e.key))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("own block does not iterate: {error:?}"));
    let expected: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    assert_eq!(decoded, expected);
    for (i, key) in keys.iter().enumerate() {
        let found = block
            .get(key)
            .unwrap_or_else(|error| panic!("get failed: {error:?}"));
        let Some(found) = found else {
            panic!("key {key:?} missing")
        };
        assert_eq!(found.version.hlc, i as u64);
        assert_eq!(found.value, (i % 2 == 0).then_some(*key));
    }
}
