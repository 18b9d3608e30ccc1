//! Thin entry points into the on-disk decoders for the cargo-fuzz targets in `fuzz/`.
//!
//! Not part of the supported API (hidden from the docs): each function wraps one private
//! decoder or encoder without adding logic, so the fuzzers exercise exactly the code that runs
//! on real files. Paths in errors are a fixed placeholder.

use std::path::Path;

pub use crate::manifest::{Edit, LEVELS, MANIFEST, Version as ManifestVersion};
pub use crate::sst::format::{BlockHandle, FOOTER_BYTES, Footer};
pub use crate::sst::writer::TableMeta;
pub use crate::wal::record::HEADER_BYTES as WAL_HEADER_BYTES;

use crate::types::Entry;

/// What [`wal_parse`] found: `Some((kind, payload, total))` for a verified record.
pub fn wal_parse(data: &[u8]) -> Option<(u8, &[u8], usize)> {
    match crate::wal::record::parse(data) {
        crate::wal::record::Parsed::Record {
            kind,
            payload,
            total,
        } => Some((kind, payload, total)),
        _ => None,
    }
}

/// Encodes `entries` as one WAL batch record (header included).
pub fn wal_encode_batch(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::wal::record::encode_batch(&mut out, entries.iter(), entries.len());
    out
}

/// Decodes a batch payload (the bytes after a verified header).
pub fn wal_decode_batch(payload: &[u8]) -> Option<Vec<Entry>> {
    crate::wal::record::decode_batch(payload)
}

/// Replays a WAL segment image; returns the batches and the offset past the last valid record.
pub fn wal_replay(data: &[u8], is_last: bool) -> crate::Result<(Vec<Vec<Entry>>, u64)> {
    let mut batches = Vec::new();
    let outcome =
        crate::wal::replay::replay_bytes(Path::new("fuzz.wal"), data, is_last, |batch| {
            batches.push(batch);
            Ok(())
        })?;
    Ok((batches, outcome.valid_end))
}

/// Opens the manifest in `dir` (replaying every record) and returns the state it holds.
pub fn manifest_open(dir: &Path) -> crate::Result<ManifestVersion> {
    crate::manifest::Manifest::open(dir).map(|manifest| manifest.version().clone())
}

/// Opens the manifest in `dir`, appends `edit` and returns the new state.
pub fn manifest_append(dir: &Path, edit: &Edit) -> crate::Result<ManifestVersion> {
    let mut manifest = crate::manifest::Manifest::open(dir)?;
    manifest.append(edit)?;
    Ok(manifest.version().clone())
}

/// Verifies and decodes an SST index block.
pub fn sst_parse_index(raw: &[u8]) -> Result<Vec<BlockHandle>, &'static str> {
    crate::sst::format::parse_index(raw)
}

/// Encodes index entries and seals them with the checksum trailer.
pub fn sst_encode_index(handles: &[BlockHandle]) -> Vec<u8> {
    let mut out = Vec::new();
    for handle in handles {
        crate::sst::format::put_index_entry(&mut out, handle);
    }
    crate::sst::format::seal_index(&mut out);
    out
}
