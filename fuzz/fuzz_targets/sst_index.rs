//! Fuzz the SST index block and footer decoders (`storage::fuzzing::sst_parse_index`,
//! `Footer::open`). The input is parsed raw and once more sealed with a valid checksum trailer
//! so the entry decoder is reached. Nothing may panic, and decoded handles re-encode into an
//! index that decodes to the same handles.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_storage::fuzzing::{FOOTER_BYTES, Footer, sst_encode_index, sst_parse_index};

fuzz_target!(|data: &[u8]| {
    if let Ok(footer) = Footer::open(data) {
        assert!(data.len() >= FOOTER_BYTES);
        let _ = (footer.index_offset.get(), footer.bloom_len.get());
    }
    let _ = sst_parse_index(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(data).to_le_bytes());
    let Ok(handles) = sst_parse_index(&sealed) else {
        return;
    };
    assert!(
        handles.len() <= data.len() / 3,
        "{} handles from {} bytes",
        handles.len(),
        data.len()
    );
    let encoded = sst_encode_index(&handles);
    assert!(encoded.len() <= sealed.len(), "re-encoding grew the index");
    match sst_parse_index(&encoded) {
        Ok(again) => assert_eq!(again, handles),
        Err(error) => panic!("re-encoded index rejected: {error}"),
    }
});
