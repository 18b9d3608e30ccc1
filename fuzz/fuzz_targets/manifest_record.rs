//! Fuzz manifest replay (`storage::fuzzing::manifest_open`): the input is written as a
//! MANIFEST file (raw, or cut at 0xFE bytes into payloads that the target frames with valid
//! checksums so the edit decoder is reached) and opened. Opening never panics; an opened
//! manifest has every level; an edit appended to it survives a reopen unchanged, which checks
//! the edit encoder against the decoder.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use starling_storage::fuzzing::{
    Edit, LEVELS, MANIFEST, TableMeta, manifest_append, manifest_open,
};

/// Per-process scratch dir on a RAM file system when there is one (the manifest syncs).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from("/dev/shm");
        let base = if base.is_dir() {
            base
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("starling-fuzz-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("scratch dir {dir:?}: {e}"));
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let image = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        framed(rest)
    };
    let dir = scratch();
    let path = dir.join(MANIFEST);
    std::fs::write(&path, &image).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
    let Ok(version) = manifest_open(dir) else {
        return;
    };
    assert_eq!(version.levels.len(), LEVELS);
    let edit = edit_from(rest, &version);
    let Ok(appended) = manifest_append(dir, &edit) else {
        return;
    };
    match manifest_open(dir) {
        Ok(reopened) => assert_eq!(reopened, appended, "an appended edit changed on reopen"),
        Err(error) => panic!("manifest unreadable after an append: {error}"),
    }
});

/// Frames each 0xFE-separated piece as `len:u32 | xxh3:u64 | payload`.
fn framed(rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in rest.split(|&b| b == 0xFE) {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

/// An edit that adds one table (fields from the input) and removes one that exists.
fn edit_from(rest: &[u8], version: &starling_storage::fuzzing::ManifestVersion) -> Edit {
    let word = |i: usize| rest.get(i).copied().map_or(0, u64::from) << (i % 7 * 8);
    let meta = TableMeta {
        number: word(0) | word(1) | word(2),
        size: word(3),
        smallest: rest.iter().take(4).copied().collect(),
        largest: rest.iter().rev().take(4).copied().collect(),
        entries: word(4),
        hlc_max: word(5) | word(6),
    };
    let removes = version
        .levels
        .iter()
        .flatten()
        .take(1)
        .map(|t| t.number)
        .collect();
    Edit {
        adds: vec![(rest.len() % LEVELS, meta)],
        removes,
        log_number: Some(word(7)),
        next_file: Some(word(8)),
        live_keys: None,
    }
}
