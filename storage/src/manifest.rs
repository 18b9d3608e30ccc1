//! The manifest: an append-only, checksummed log of version edits (tables added/removed per
//! level, the oldest WAL segment still needed, the next file number, the live key count).
//!
//! Record = `len:u32 | xxh3:u64 | edit`. A record cut short by the end of the file is a torn
//! append (never acknowledged: the engine only acts on an edit after it is synced) and is
//! dropped; a complete record that fails its checksum is `Error::Corruption`. When the log
//! grows past `ROTATE_BYTES` it is rewritten as one snapshot edit into `MANIFEST.tmp`, synced,
//! renamed over `MANIFEST`, and the directory is synced: rotation is atomic.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::{Reader, checksum, put_varint};
use crate::error::{Error, Result};
use crate::sst::writer::TableMeta;

/// File name of the manifest.
pub const MANIFEST: &str = "MANIFEST";
const HEADER_BYTES: usize = 12;
const ROTATE_BYTES: u64 = 4 << 20;
/// Number of levels (L0..L6).
pub const LEVELS: usize = 7;

/// One change to the set of tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    /// Tables added, with their level.
    pub adds: Vec<(usize, TableMeta)>,
    /// Table numbers removed.
    pub removes: Vec<u64>,
    /// WAL segments below this number are no longer needed.
    pub log_number: Option<u64>,
    /// The next table number to allocate.
    pub next_file: Option<u64>,
    /// Live keys as of the data the tables hold (WAL replay adjusts from there).
    pub live_keys: Option<u64>,
}

/// The state the edits add up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Tables per level; L0 in flush order (oldest first).
    pub levels: Vec<Vec<TableMeta>>,
    /// Oldest WAL segment needed.
    pub log_number: u64,
    /// Next table number.
    pub next_file: u64,
    /// Live key count at the last flush.
    pub live_keys: u64,
}

impl Default for Version {
    fn default() -> Self {
        Version {
            levels: vec![Vec::new(); LEVELS],
            log_number: 0,
            next_file: 1,
            live_keys: 0,
        }
    }
}

impl Version {
    fn apply(&mut self, edit: &Edit) -> std::result::Result<(), String> {
        for number in &edit.removes {
            let level = self
                .levels
                .iter_mut()
                .find(|level| level.iter().any(|t| t.number == *number))
                .ok_or_else(|| format!("edit removes unknown table {number}"))?;
            level.retain(|t| t.number != *number);
        }
        for (level, meta) in &edit.adds {
            let level = self
                .levels
                .get_mut(*level)
                .ok_or_else(|| format!("edit adds a table to level {level}"))?;
            level.push(meta.clone());
        }
        if let Some(n) = edit.log_number {
            self.log_number = self.log_number.max(n);
        }
        if let Some(n) = edit.next_file {
            self.next_file = self.next_file.max(n);
        }
        if let Some(n) = edit.live_keys {
            self.live_keys = n;
        }
        Ok(())
    }

    fn snapshot(&self) -> Edit {
        Edit {
            adds: self
                .levels
                .iter()
                .enumerate()
                .flat_map(|(level, tables)| tables.iter().map(move |t| (level, t.clone())))
                .collect(),
            removes: Vec::new(),
            log_number: Some(self.log_number),
            next_file: Some(self.next_file),
            live_keys: Some(self.live_keys),
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn encode(edit: &Edit) -> Vec<u8> {
    let mut out = Vec::new();
    for (level, meta) in &edit.adds {
        out.push(1);
        put_varint(&mut out, *level as u64);
        put_varint(&mut out, meta.number);
        put_varint(&mut out, meta.size);
        put_bytes(&mut out, &meta.smallest);
        put_bytes(&mut out, &meta.largest);
        put_varint(&mut out, meta.entries);
        put_varint(&mut out, meta.hlc_max);
    }
    for number in &edit.removes {
        out.push(2);
        put_varint(&mut out, *number);
    }
    for (tag, value) in [
        (3u8, edit.log_number),
        (4, edit.next_file),
        (5, edit.live_keys),
    ] {
        if let Some(value) = value {
            out.push(tag);
            put_varint(&mut out, value);
        }
    }
    out
}

fn decode(payload: &[u8]) -> Option<Edit> {
    let mut reader = Reader::new(payload);
    let mut edit = Edit::default();
    while !reader.is_empty() {
        match reader.u8()? {
            1 => {
                let level = reader.varint_usize()?;
                let number = reader.varint()?;
                let size = reader.varint()?;
                let len = reader.varint_usize()?;
                let smallest = reader.bytes(len)?.to_vec();
                let len = reader.varint_usize()?;
                let largest = reader.bytes(len)?.to_vec();
                let meta = TableMeta {
                    number,
                    size,
                    smallest,
                    largest,
                    entries: reader.varint()?,
                    hlc_max: reader.varint()?,
                };
                edit.adds.push((level, meta));
            }
            2 => edit.removes.push(reader.varint()?),
            3 => edit.log_number = Some(reader.varint()?),
            4 => edit.next_file = Some(reader.varint()?),
            5 => edit.live_keys = Some(reader.varint()?),
            _ => return None,
        }
    }
    Some(edit)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + HEADER_BYTES);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Syncs a directory so created, renamed and removed names are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// The open manifest.
#[derive(Debug)]
pub struct Manifest {
    dir: PathBuf,
    file: File,
    bytes: u64,
    version: Version,
}

impl Manifest {
    /// Opens the manifest in `dir`, or creates an empty one.
    pub fn open(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        if !path.exists() {
            let version = Version::default();
            return Self::rewrite(dir, version);
        }
        let data = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let (version, valid_end) = replay(&path, &data)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        if valid_end < data.len() as u64 {
            tracing::warn!(manifest = %path.display(), offset = valid_end, "dropping a torn manifest append");
            file.set_len(valid_end)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        }
        Ok(Manifest {
            dir: dir.to_path_buf(),
            file,
            bytes: valid_end,
            version,
        })
    }

    /// The current state.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Makes `edit` durable, then applies it to the in-memory state.
    pub fn append(&mut self, edit: &Edit) -> Result<()> {
        let mut next = self.version.clone();
        next.apply(edit).map_err(|detail| Error::Corruption {
            file: self.dir.join(MANIFEST),
            offset: self.bytes,
            detail,
        })?;
        if self.bytes > ROTATE_BYTES {
            *self = Self::rewrite(&self.dir, next)?;
            return Ok(());
        }
        let record = frame(&encode(edit));
        let context = || format!("appending to {}", self.dir.join(MANIFEST).display());
        self.file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(context(), e))?;
        self.bytes += record.len() as u64;
        self.version = next;
        Ok(())
    }

    /// Writes `version` as a fresh manifest atomically (tmp + fsync + rename + fsync dir).
    fn rewrite(dir: &Path, version: Version) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join("MANIFEST.tmp");
        let record = frame(&encode(&version.snapshot()));
        let context = |what: &str| format!("{what} {}", tmp.display());
        let mut file = File::create(&tmp).map_err(|e| Error::io(context("creating"), e))?;
        file.write_all(&record)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(context("writing"), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(context("renaming"), e))?;
        sync_dir(dir)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(Manifest {
            dir: dir.to_path_buf(),
            file,
            bytes: record.len() as u64,
            version,
        })
    }
}

/// Applies every record of `data`; returns the state and the end of the last complete record.
fn replay(path: &Path, data: &[u8]) -> Result<(Version, u64)> {
    let mut version = Version::default();
    let mut offset = 0usize;
    let corrupt = |offset: usize, detail: String| Error::Corruption {
        file: path.to_path_buf(),
        offset: offset as u64,
        detail,
    };
    while data.len() - offset >= HEADER_BYTES {
        let header = &data[offset..offset + HEADER_BYTES];
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(payload) = data.get(offset + HEADER_BYTES..offset + HEADER_BYTES + len) else {
            break; // cut short by the end of the file: a torn append
        };
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&header[4..12]);
        if u64::from_le_bytes(stored) != checksum(payload) {
            return Err(corrupt(offset, "manifest record checksum mismatch".into()));
        }
        let edit =
            decode(payload).ok_or_else(|| corrupt(offset, "malformed manifest edit".into()))?;
        version.apply(&edit).map_err(|d| corrupt(offset, d))?;
        offset += HEADER_BYTES + len;
    }
    if offset == 0 {
        return Err(corrupt(0, "manifest holds no complete record".into()));
    }
    Ok((version, offset as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(number: u64) -> TableMeta {
        TableMeta {
            number,
            size: 100,
            smallest: b"a".to_vec(),
            largest: b"z".to_vec(),
            entries: 3,
            hlc_max: 9,
        }
    }

    #[test]
    fn edits_survive_reopen_and_rotation() {
        let dir = tempfile::tempdir().expect("tempdir"); // plain std I/O: any filesystem works
        let mut manifest = Manifest::open(dir.path()).expect("create");
        for number in 1..200u64 {
            let edit = Edit {
                adds: vec![(1, meta(number))],
                removes: if number > 1 { vec![number - 1] } else { vec![] },
                next_file: Some(number + 1),
                ..Edit::default()
            };
            manifest.append(&edit).expect("append");
        }
        let reopened = Manifest::open(dir.path()).expect("reopen");
        assert_eq!(reopened.version(), manifest.version());
        assert_eq!(reopened.version().levels[1], vec![meta(199)]);
        assert_eq!(reopened.version().next_file, 200);
    }
}
