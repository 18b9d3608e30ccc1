//! Snapshots of a whole run, so a simulation longer than one process's life (N = 10,000 for an
//! hour simulated takes hours of wall time) can stop and resume.
//!
//! A snapshot is taken between two events, at the first event at or after each multiple of
//! `every_ms` simulated; it holds every node's protocol state machines, the event queue and the
//! one RNG, so a resumed run makes exactly the decisions the uninterrupted run would have made
//! and ends with the same report. Only the build of `starling-sim` that wrote a snapshot reads
//! it back (the encoding follows the in-memory types, and another build may decide differently):
//! the header names the build by the BLAKE3 hash of its executable, and any other build refuses
//! the file.
//!
//! File: magic, format version, build id, the world in bincode, then BLAKE3 of everything
//! before it. It is
//! written to `<path>.tmp`, synced and renamed over `path`, so a crash while writing leaves the
//! previous snapshot intact. Reading checks the hash over the whole file before decoding any of
//! it, so a damaged or truncated file is refused with a clear error instead of being decoded.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::world::World;

/// First bytes of every snapshot file.
const MAGIC: &[u8; 8] = b"STSIMSNP";
/// Bumped whenever the file layout changes.
const FORMAT: u32 = 2;
const HASH_BYTES: u64 = 32;
const HEADER_BYTES: u64 = MAGIC.len() as u64 + 4 + HASH_BYTES;
/// I/O buffer: snapshots of large runs are gigabytes.
const BUFFER_BYTES: usize = 8 << 20;

/// Where and how often a run saves itself.
#[derive(Clone, Debug)]
pub struct SnapshotPlan {
    /// The snapshot file (replaced atomically by each new snapshot).
    pub path: PathBuf,
    /// Simulated milliseconds between snapshots (> 0).
    pub every_ms: u64,
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file system refused.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The snapshot file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file does not start with the snapshot magic.
    #[error("snapshot {path}: not a starling-sim snapshot")]
    NotSnapshot {
        /// The file.
        path: PathBuf,
    },
    /// Written by a build with another encoding.
    #[error("snapshot {path}: format {found}, this starling-sim reads format {FORMAT}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Its format version.
        found: u32,
    },
    /// Written by another build of `starling-sim`.
    #[error(
        "snapshot {path} was written by another build of starling-sim (resume it with the binary \
         that wrote it)"
    )]
    OtherBuild {
        /// The file.
        path: PathBuf,
    },
    /// The BLAKE3 hash does not match: the file is damaged or truncated.
    #[error("snapshot {path}: checksum mismatch (the file is damaged or truncated)")]
    Checksum {
        /// The file.
        path: PathBuf,
    },
    /// The world could not be encoded, or the hashed bytes do not decode (another build).
    #[error("snapshot {path}: {source} (was it written by another build of starling-sim?)")]
    Encoding {
        /// The file.
        path: PathBuf,
        /// What bincode said.
        source: bincode::Error,
    },
}

/// BLAKE3 of this executable, computed once. `/proc/self/exe` is the running binary even after
/// a rebuild replaced the file on disk during a long run; `run_saving` and `resume` compute it
/// before the run starts ([`prepare`]).
fn build_id() -> io::Result<[u8; 32]> {
    static ID: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    if let Some(id) = ID.get() {
        return Ok(*id);
    }
    let exe = match File::open("/proc/self/exe") {
        Ok(exe) => exe,
        Err(_) => File::open(std::env::current_exe()?)?,
    };
    let mut hasher = blake3::Hasher::new();
    io::copy(
        &mut BufReader::with_capacity(BUFFER_BYTES, exe),
        &mut hasher,
    )?;
    Ok(*ID.get_or_init(|| *hasher.finalize().as_bytes()))
}

/// Computes the build id up front, so a run that will save fails at once, not hours in, if
/// its executable cannot be read.
pub(crate) fn prepare(path: &Path) -> Result<(), SnapshotError> {
    build_id().map(drop).map_err(SnapshotError::io(path))
}

impl SnapshotError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
        |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn encoding(path: &Path) -> impl FnOnce(bincode::Error) -> SnapshotError + '_ {
        |source| SnapshotError::Encoding {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Passes writes through and hashes them.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `world` to `path` atomically (temporary file, fsync, rename).
pub(crate) fn save(world: &World, path: &Path) -> Result<(), SnapshotError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let file = File::create(&temporary).map_err(SnapshotError::io(&temporary))?;
    // Buffer before hashing: bincode writes field by field, BLAKE3 wants large slices.
    let mut writer = BufWriter::with_capacity(
        BUFFER_BYTES,
        HashingWriter {
            inner: file,
            hasher: blake3::Hasher::new(),
        },
    );
    writer
        .write_all(MAGIC)
        .and_then(|()| writer.write_all(&FORMAT.to_le_bytes()))
        .and_then(|()| writer.write_all(&build_id()?))
        .map_err(SnapshotError::io(&temporary))?;
    bincode::serialize_into(&mut writer, world).map_err(SnapshotError::encoding(&temporary))?;
    let HashingWriter {
        inner: mut file,
        hasher,
    } = writer.into_inner().map_err(|error| SnapshotError::Io {
        path: temporary.clone(),
        source: error.into_error(),
    })?;
    file.write_all(hasher.finalize().as_bytes())
        .map_err(SnapshotError::io(&temporary))?;
    file.sync_all().map_err(SnapshotError::io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(SnapshotError::io(path))?;
    Ok(())
}

/// Reads the world saved in `path`, after checking its hash.
pub(crate) fn load(path: &Path) -> Result<World, SnapshotError> {
    let mut file = File::open(path).map_err(SnapshotError::io(path))?;
    let len = file.metadata().map_err(SnapshotError::io(path))?.len();
    if len < HEADER_BYTES + HASH_BYTES {
        return Err(SnapshotError::NotSnapshot {
            path: path.to_path_buf(),
        });
    }
    let mut header = [0u8; HEADER_BYTES as usize];
    file.read_exact(&mut header)
        .map_err(SnapshotError::io(path))?;
    if header[..MAGIC.len()] != MAGIC[..] {
        return Err(SnapshotError::NotSnapshot {
            path: path.to_path_buf(),
        });
    }
    let mut format = [0u8; 4];
    format.copy_from_slice(&header[MAGIC.len()..MAGIC.len() + 4]);
    let found = u32::from_le_bytes(format);
    if found != FORMAT {
        return Err(SnapshotError::Format {
            path: path.to_path_buf(),
            found,
        });
    }
    verify_hash(&mut file, len, path)?;
    if header[MAGIC.len() + 4..] != build_id().map_err(SnapshotError::io(path))? {
        return Err(SnapshotError::OtherBuild {
            path: path.to_path_buf(),
        });
    }
    file.seek(SeekFrom::Start(HEADER_BYTES))
        .map_err(SnapshotError::io(path))?;
    let mut body =
        BufReader::with_capacity(BUFFER_BYTES, file).take(len - HEADER_BYTES - HASH_BYTES);
    let world: World =
        bincode::deserialize_from(&mut body).map_err(SnapshotError::encoding(path))?;
    if body.limit() != 0 {
        // The hash covered bytes the world did not use: not what this build writes.
        return Err(SnapshotError::Encoding {
            path: path.to_path_buf(),
            source: Box::new(bincode::ErrorKind::Custom(format!(
                "{} bytes left over after the world",
                body.limit()
            ))),
        });
    }
    Ok(world)
}

/// Hashes everything before the trailing hash and compares.
fn verify_hash(file: &mut File, len: u64, path: &Path) -> Result<(), SnapshotError> {
    file.seek(SeekFrom::Start(0))
        .map_err(SnapshotError::io(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut hashed = (&mut *file).take(len - HASH_BYTES);
    io::copy(
        &mut BufReader::with_capacity(BUFFER_BYTES, &mut hashed),
        &mut hasher,
    )
    .map_err(SnapshotError::io(path))?;
    let mut stored = [0u8; HASH_BYTES as usize];
    file.read_exact(&mut stored)
        .map_err(SnapshotError::io(path))?;
    if hasher.finalize() != blake3::Hash::from_bytes(stored) {
        return Err(SnapshotError::Checksum {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}
