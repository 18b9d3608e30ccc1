//! Streams a sorted run of entries into a new table file with DMA (`O_DIRECT`) writes.
//!
//! Entries are encoded synchronously into an in-memory staging buffer; once it holds
//! `STAGE_BYTES` the caller awaits `drain`, which hands it to a `DmaStreamWriter` (whose
//! write-behind keeps the disk busy while the next chunk is encoded).

use std::path::{Path, PathBuf};

use futures_lite::AsyncWriteExt;
use glommio::io::{DmaFile, DmaStreamWriter, DmaStreamWriterBuilder, OpenOptions};

use super::block::BlockBuilder;
use super::bloom;
use super::format::{BlockHandle, Footer, put_index_entry, seal_index};
use crate::error::{Error, Result};
use crate::types::Version;

/// Target size of one data block.
pub const BLOCK_BYTES_TARGET: usize = 4096;
/// Staged bytes that make `should_drain` true.
pub const STAGE_BYTES: usize = 512 << 10;

/// What the manifest records about a finished table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMeta {
    /// File number (`<number>.sst`).
    pub number: u64,
    /// File size in bytes.
    pub size: u64,
    /// Smallest key.
    pub smallest: Vec<u8>,
    /// Largest key.
    pub largest: Vec<u8>,
    /// Number of entries.
    pub entries: u64,
    /// Largest hlc of any entry.
    pub hlc_max: u64,
}

/// The file name of table `number` in `dir`.
pub fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.sst"))
}

/// Writes one table.
pub struct TableWriter {
    path: PathBuf,
    number: u64,
    out: DmaStreamWriter,
    written: u64,
    stage: Vec<u8>,
    block: BlockBuilder,
    index: Vec<u8>,
    hashes: Vec<u64>,
    smallest: Vec<u8>,
    hlc_max: u64,
}

impl TableWriter {
    /// Creates `<number>.sst` in `dir`.
    pub async fn create(dir: &Path, number: u64) -> Result<Self> {
        let path = table_path(dir, number);
        let file: DmaFile = OpenOptions::new()
            .write(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| Error::glommio(format!("creating table {}", path.display()), e))?;
        let out = DmaStreamWriterBuilder::new(file)
            .with_buffer_size(256 << 10)
            .with_write_behind(2)
            .build();
        Ok(TableWriter {
            path,
            number,
            out,
            written: 0,
            stage: Vec::with_capacity(STAGE_BYTES + BLOCK_BYTES_TARGET * 2),
            block: BlockBuilder::new(),
            index: Vec::new(),
            hashes: Vec::new(),
            smallest: Vec::new(),
            hlc_max: 0,
        })
    }

    /// Adds an entry; keys must be strictly increasing across calls.
    pub fn add(&mut self, key: &[u8], version: Version, value: Option<&[u8]>) {
        if self.hashes.is_empty() {
            self.smallest = key.to_vec();
        }
        self.block.add(key, version, value);
        self.hashes.push(bloom::hash_key(key));
        self.hlc_max = self.hlc_max.max(version.hlc);
        if self.block.estimated_bytes() >= BLOCK_BYTES_TARGET {
            self.finish_block();
        }
    }

    fn finish_block(&mut self) {
        let last_key = self.block.last_key().to_vec();
        let offset = self.written + self.stage.len() as u64;
        self.block.finish_into(&mut self.stage);
        let len = self.written + self.stage.len() as u64 - offset;
        put_index_entry(
            &mut self.index,
            &BlockHandle {
                last_key,
                offset,
                len,
            },
        );
    }

    /// True when the staged bytes should be written out (call `drain`).
    pub fn should_drain(&self) -> bool {
        self.stage.len() >= STAGE_BYTES
    }

    /// Bytes of the file so far (written + staged).
    pub fn bytes(&self) -> u64 {
        self.written + self.stage.len() as u64 + self.block.estimated_bytes() as u64
    }

    /// Writes the staged bytes.
    pub async fn drain(&mut self) -> Result<()> {
        if self.stage.is_empty() {
            return Ok(());
        }
        self.out
            .write_all(&self.stage)
            .await
            .map_err(|e| Error::io(format!("writing table {}", self.path.display()), e))?;
        self.written += self.stage.len() as u64;
        self.stage.clear();
        Ok(())
    }

    /// Writes bloom, index and footer, syncs and closes the file.
    pub async fn finish(mut self) -> Result<TableMeta> {
        assert!(!self.hashes.is_empty(), "an empty table is never written");
        if !self.block.is_empty() {
            self.finish_block();
        }
        let largest = last_index_key(&self.index);
        let bloom_offset = self.written + self.stage.len() as u64;
        let filter = bloom::build(&self.hashes);
        self.stage.extend_from_slice(&filter);
        let index_offset = self.written + self.stage.len() as u64;
        let mut index = std::mem::take(&mut self.index);
        seal_index(&mut index);
        self.stage.extend_from_slice(&index);
        let footer = Footer {
            index_offset: index_offset.into(),
            index_len: (index.len() as u64).into(),
            bloom_offset: bloom_offset.into(),
            bloom_len: (filter.len() as u64).into(),
            entry_count: (self.hashes.len() as u64).into(),
            hlc_max: self.hlc_max.into(),
            format_version: 0.into(),
            reserved: 0.into(),
            magic: 0.into(),
            checksum: 0.into(),
        };
        self.stage.extend_from_slice(&footer.seal());
        self.drain().await?;
        let context = format!("closing table {}", self.path.display());
        self.out.close().await.map_err(|e| Error::io(context, e))?;
        Ok(TableMeta {
            number: self.number,
            size: self.written,
            smallest: self.smallest,
            largest: largest.unwrap_or_default(),
            entries: self.hashes.len() as u64,
            hlc_max: self.hlc_max,
        })
    }

    /// Removes a half-written file after an error.
    pub async fn abandon(mut self) {
        let path = self.path.clone();
        let _ = self.out.close().await;
        let _ = std::fs::remove_file(&path);
    }
}

/// The last key in an (unsealed) index: the largest key of the table.
fn last_index_key(index: &[u8]) -> Option<Vec<u8>> {
    let mut reader = crate::codec::Reader::new(index);
    let mut last = None;
    while !reader.is_empty() {
        let len = reader.varint_usize()?;
        last = Some(reader.bytes(len)?.to_vec());
        reader.varint()?;
        reader.varint()?;
    }
    last
}
