//! Fuzz the WAL record codec and segment replay (`storage::fuzzing::wal_*`). First byte picks
//! the mode: the rest is a raw segment image, or a batch payload that the target frames with a
//! valid header and checksum so the batch decoder is reached. Nothing may panic; a verified
//! record stays inside its input; a decoded batch re-encodes into a record that parses and
//! decodes to the same entries; replay never reports more valid bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_storage::fuzzing::{
    WAL_HEADER_BYTES, wal_decode_batch, wal_encode_batch, wal_parse, wal_replay,
};

/// Kind byte of a batch record.
const KIND_BATCH: u8 = 1;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let image = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        frame(rest)
    };
    if let Some((kind, payload, total)) = wal_parse(&image) {
        assert_eq!(kind, KIND_BATCH);
        assert!(total <= image.len() && total == WAL_HEADER_BYTES + payload.len());
        if let Some(entries) = wal_decode_batch(payload) {
            let record = wal_encode_batch(&entries);
            let parsed = wal_parse(&record);
            let Some((_, payload_again, total_again)) = parsed else {
                panic!("re-encoded batch does not parse")
            };
            assert_eq!(total_again, record.len());
            assert_eq!(wal_decode_batch(payload_again), Some(entries));
        }
    }
    let _ = wal_decode_batch(rest);
    for is_last in [false, true] {
        if let Ok((batches, valid_end)) = wal_replay(&image, is_last) {
            assert!(valid_end as usize <= image.len());
            assert!(batches.len() <= image.len() / WAL_HEADER_BYTES);
        }
    }
});

/// `len:u32 | xxh3(kind | payload):u64 | kind | payload`, the layout the writer produces.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAL_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.push(KIND_BATCH);
    out.extend_from_slice(payload);
    let sum = xxhash_rust::xxh3::xxh3_64(&out[12..]);
    out[4..12].copy_from_slice(&sum.to_le_bytes());
    out
}
