//! The data dir's identity file, `starling.toml`: format, partition count, shard count, node id.
//!
//! Written once when a data dir is created (atomically: temp file, fsync, rename, fsync dir) and
//! checked at every start. **Invariant:** a data dir is only ever opened with the `P` and `S` it
//! was created with, because both decide which shard directory holds a key.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the identity file inside the data dir.
pub const LAYOUT_FILE: &str = "starling.toml";
const FORMAT: u32 = 1;

/// What a data dir was created with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Layout format version.
    pub format: u32,
    /// This node's id (random at creation, part of every version it writes), as 16 hex digits.
    pub node_id: String,
    /// Partitions of the key space.
    pub partitions: u32,
    /// Shards (one storage directory each).
    pub shards: usize,
}

/// Why a data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Reading or writing the file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a layout file.
    #[error("{path} is damaged ({message}); restore it or start from an empty data dir")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
    /// The data dir was created with other parameters.
    #[error(
        "data dir {dir} was created with {found_shards} shards and {found_partitions} partitions, \
         but this start asks for {shards} shards and {partitions} partitions: start with \
         --shards {found_shards} --partitions {found_partitions}, or use a new data dir \
         (re-sharding an existing data dir is not supported)"
    )]
    Mismatch {
        /// The data dir.
        dir: PathBuf,
        /// Recorded shards.
        found_shards: usize,
        /// Recorded partitions.
        found_partitions: u32,
        /// Requested shards.
        shards: usize,
        /// Requested partitions.
        partitions: u32,
    },
}

impl Layout {
    /// The node id as a number.
    pub fn node_id(&self) -> u64 {
        u64::from_str_radix(&self.node_id, 16).unwrap_or(0)
    }
}

/// Opens (or creates) the layout of `dir` and checks it matches `partitions` and `shards`.
pub fn open_or_create(dir: &Path, partitions: u32, shards: usize) -> Result<Layout, LayoutError> {
    let path = dir.join(LAYOUT_FILE);
    let io = |action, source| LayoutError::Io {
        action,
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let layout: Layout = toml::from_str(&text).map_err(|e| LayoutError::Damaged {
                path: path.clone(),
                message: e.to_string(),
            })?;
            if layout.format != FORMAT || u64::from_str_radix(&layout.node_id, 16).is_err() {
                return Err(LayoutError::Damaged {
                    path,
                    message: format!(
                        "format {} / node_id {:?} not understood",
                        layout.format, layout.node_id
                    ),
                });
            }
            if layout.partitions != partitions || layout.shards != shards {
                return Err(LayoutError::Mismatch {
                    dir: dir.to_path_buf(),
                    found_shards: layout.shards,
                    found_partitions: layout.partitions,
                    shards,
                    partitions,
                });
            }
            Ok(layout)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
            let layout = Layout {
                format: FORMAT,
                node_id: format!(
                    "{:016x}",
                    random_node_id().map_err(|e| io("read /dev/urandom for", e))?
                ),
                partitions,
                shards,
            };
            write_atomically(dir, &path, &layout).map_err(|e| io("write", e))?;
            Ok(layout)
        }
        Err(error) => Err(io("read", error)),
    }
}

fn random_node_id() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    // 0 is reserved as "no node" in versions.
    Ok(u64::from_le_bytes(bytes).max(1))
}

fn write_atomically(dir: &Path, path: &Path, layout: &Layout) -> std::io::Result<()> {
    let text = toml::to_string(layout).map_err(std::io::Error::other)?;
    let temp = path.with_extension("toml.tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(b"# Written by starling when this data dir was created. Do not edit.\n")?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reopened_with_the_same_node_id() {
        let dir = crate::test_tempdir();
        let created = open_or_create(dir.path(), 256, 2).expect("create");
        assert_ne!(created.node_id(), 0);
        let reopened = open_or_create(dir.path(), 256, 2).expect("reopen");
        assert_eq!(created, reopened);
    }

    #[test]
    fn a_different_shard_count_is_refused_with_the_fix() {
        let dir = crate::test_tempdir();
        open_or_create(dir.path(), 256, 2).expect("create");
        let error = open_or_create(dir.path(), 256, 3).expect_err("mismatch");
        let message = error.to_string();
        assert!(
            message.contains("2 shards") && message.contains("--shards 2"),
            "{message}"
        );
    }

    #[test]
    fn a_damaged_file_is_reported() {
        let dir = crate::test_tempdir();
        std::fs::write(dir.path().join(LAYOUT_FILE), "garbage = [").expect("write");
        assert!(matches!(
            open_or_create(dir.path(), 256, 1),
            Err(LayoutError::Damaged { .. })
        ));
    }
}
