//! The WAL writer task: group commit over preallocated `O_DIRECT` segments.
//!
//! `apply` appends encoded records to the *open* chunk and gets its id as a ticket. The writer
//! seals the open chunk, writes it (rewriting the partial last 4 KiB block, since `O_DIRECT`
//! writes must be aligned) and, in `Durability::Sync`, fdatasyncs; then every ticket up to that
//! id resolves. Writes that arrive meanwhile accumulate in the next open chunk: that is the
//! group commit. A failed write fails its tickets (`DiskFull` on ENOSPC), keeps the bytes and
//! retries them first on the next round, so the log never has holes and the engine stays usable.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::counters::{Counters, add};
use crate::error::{Error, Result};
use crate::notify::Notify;
use crate::types::Durability;

/// O_DIRECT alignment used for every WAL write.
pub const ALIGN: usize = 4096;
/// Largest single DMA write.
const WRITE_BYTES_MAX: usize = 8 << 20;
/// In `Durability::None`, the open chunk is written once it holds this much.
pub const LAZY_CHUNK_BYTES: usize = 1 << 20;
/// Failed-ticket outcomes kept for waiters.
const FAILED_KEPT: usize = 4096;

/// The file name of segment `number`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("wal-{number:08}.log"))
}

/// Parses a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

#[derive(Debug, Default)]
struct Chunk {
    /// Ticket id (0: a retried chunk nobody waits for).
    id: u64,
    bytes: Vec<u8>,
    batches: u64,
    /// Switch to this segment after writing the chunk.
    roll_to: Option<u64>,
}

/// The queue between `apply` and the writer task.
#[derive(Debug)]
pub struct WalQueue {
    open: Chunk,
    sealed: VecDeque<Chunk>,
    done_id: u64,
    failed: HashMap<u64, Error>,
    stalled: bool,
    closing: bool,
    stopped: bool,
}

impl Default for WalQueue {
    fn default() -> Self {
        WalQueue {
            open: Chunk {
                id: 1,
                ..Chunk::default()
            },
            sealed: VecDeque::new(),
            done_id: 0,
            failed: HashMap::new(),
            stalled: false,
            closing: false,
            stopped: false,
        }
    }
}

impl WalQueue {
    /// Appends one record encoded by `encode` straight into the open chunk; returns the
    /// ticket to wait for.
    pub fn append_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        encode(&mut self.open.bytes);
        self.open.batches += 1;
        self.open.id
    }

    /// Bytes in the open chunk (not yet picked up by the writer).
    pub fn open_bytes(&self) -> usize {
        self.open.bytes.len()
    }

    fn seal(&mut self, roll_to: Option<u64>) {
        let next = Chunk {
            id: self.open.id + 1,
            ..Chunk::default()
        };
        let mut chunk = std::mem::replace(&mut self.open, next);
        chunk.roll_to = roll_to;
        self.sealed.push_back(chunk);
    }

    /// Ends the current segment: later appends go to segment `number`.
    pub fn roll_to(&mut self, number: u64) {
        self.seal(Some(number));
    }

    /// `Some` once ticket `id` is written (or failed).
    pub fn outcome(&self, id: u64) -> Option<Result<()>> {
        if id > self.done_id {
            return self.stopped.then_some(Err(Error::Closed));
        }
        Some(self.failed.get(&id).map_or(Ok(()), |e| Err(e.duplicate())))
    }

    /// Bytes not yet handed to the disk.
    pub fn pending_bytes(&self) -> usize {
        self.open.bytes.len() + self.sealed.iter().map(|c| c.bytes.len()).sum::<usize>()
    }

    /// Asks the writer to drain everything and stop.
    pub fn close(&mut self) {
        self.closing = true;
    }

    fn has_work(&self, durability: Durability) -> bool {
        let open_ready = match durability {
            Durability::Sync => !self.open.bytes.is_empty(),
            Durability::None => self.open.bytes.len() >= LAZY_CHUNK_BYTES,
        };
        self.closing || open_ready || (!self.stalled && !self.sealed.is_empty())
    }

    /// Takes the chunks of one write: up to and including the first one that rolls.
    fn take_group(&mut self) -> Vec<Chunk> {
        if !self.open.bytes.is_empty() {
            self.seal(None);
        }
        let mut group = Vec::new();
        while let Some(chunk) = self.sealed.pop_front() {
            let rolls = chunk.roll_to.is_some();
            group.push(chunk);
            if rolls {
                break;
            }
        }
        group
    }

    fn complete(&mut self, group: &[Chunk]) {
        if let Some(id) = group.iter().map(|c| c.id).max() {
            self.done_id = self.done_id.max(id);
        }
    }

    /// Fails `group` and everything queued behind it; keeps the bytes for a retry.
    fn fail(&mut self, group: Vec<Chunk>, error: &Error) {
        if !self.open.bytes.is_empty() {
            self.seal(None);
        }
        let queued: Vec<Chunk> = self.sealed.drain(..).collect();
        for mut chunk in group.into_iter().chain(queued) {
            if chunk.id != 0 {
                self.failed.insert(chunk.id, error.duplicate());
                self.done_id = self.done_id.max(chunk.id);
                chunk.id = 0;
            }
            self.sealed.push_back(chunk);
        }
        if self.failed.len() > FAILED_KEPT {
            let floor = self.done_id.saturating_sub(FAILED_KEPT as u64);
            self.failed.retain(|id, _| *id > floor);
        }
        self.stalled = true;
    }
}

/// What the writer task and the engine share.
#[derive(Debug, Default)]
pub struct WalShared {
    /// The queue.
    pub queue: RefCell<WalQueue>,
    /// Signalled by `apply` when there is work.
    pub work: Notify,
    /// Signalled by the writer after each round.
    pub progress: Notify,
}

/// An open segment and the write position in it.
pub struct Segment {
    file: DmaFile,
    path: PathBuf,
    offset: u64,
    tail: Vec<u8>,
}

impl Segment {
    /// Creates and preallocates segment `number`.
    pub async fn create(dir: &Path, number: u64, bytes: u64) -> Result<Segment> {
        let path = segment_path(dir, number);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| Error::glommio(format!("creating WAL segment {}", path.display()), e))?;
        let preallocated = file.pre_allocate(bytes, false).await;
        if let Err(e) = preallocated {
            let _ = file.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(Error::glommio(
                format!("preallocating WAL segment {}", path.display()),
                e,
            ));
        }
        crate::manifest::sync_dir(dir)?;
        Ok(Segment {
            file,
            path,
            offset: 0,
            tail: Vec::new(),
        })
    }

    /// Writes `bytes` at the logical end; returns physical bytes written.
    async fn write(&mut self, bytes: &[u8]) -> Result<u64> {
        let start = self.offset - self.tail.len() as u64;
        let total = self.tail.len() + bytes.len();
        let mut physical = 0u64;
        let mut done = 0usize;
        while done < total {
            let len = (total - done).min(WRITE_BYTES_MAX);
            let padded = len.next_multiple_of(ALIGN);
            let mut buffer = self.file.alloc_dma_buffer(padded);
            let out = buffer.as_bytes_mut();
            // Bytes [done, done + len) of the logical stream `tail ++ bytes`.
            let from_tail = self.tail.len().saturating_sub(done).min(len);
            if from_tail > 0 {
                out[..from_tail].copy_from_slice(&self.tail[done..done + from_tail]);
            }
            let bytes_start = (done + from_tail).saturating_sub(self.tail.len());
            out[from_tail..len].copy_from_slice(&bytes[bytes_start..bytes_start + len - from_tail]);
            out[len..].fill(0);
            let position = start + done as u64;
            let written =
                self.file.write_at(buffer, position).await.map_err(|e| {
                    Error::glommio(format!("writing WAL {}", self.path.display()), e)
                })?;
            if written != padded {
                return Err(Error::Io {
                    context: format!("writing WAL {}", self.path.display()),
                    source: std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "short O_DIRECT write",
                    ),
                });
            }
            physical += padded as u64;
            done += len;
        }
        let aligned_end = total - total % ALIGN;
        let mut tail = Vec::with_capacity(ALIGN);
        tail.extend_from_slice(&self.tail[aligned_end.min(self.tail.len())..]);
        let from_bytes = aligned_end.saturating_sub(self.tail.len());
        tail.extend_from_slice(&bytes[from_bytes..]);
        self.tail = tail;
        self.offset += bytes.len() as u64;
        assert_eq!(self.offset % ALIGN as u64, (self.tail.len() % ALIGN) as u64);
        Ok(physical)
    }

    async fn sync(&self) -> Result<()> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| Error::glommio(format!("syncing WAL {}", self.path.display()), e))
    }

    async fn close(self) {
        let _ = self.file.close().await;
    }
}

/// The writer task's own state.
pub struct WalWriter {
    /// Shared with the engine.
    pub shared: Rc<WalShared>,
    /// Counters to update.
    pub counters: Rc<Counters>,
    /// The data dir.
    pub dir: PathBuf,
    /// Preallocation size of new segments.
    pub segment_bytes: u64,
    /// Sync per round or not.
    pub durability: Durability,
    /// The current segment.
    pub segment: Segment,
}

impl WalWriter {
    /// Runs until the queue is closed and drained.
    pub async fn run(mut self) {
        loop {
            let durability = self.durability;
            let shared = Rc::clone(&self.shared);
            shared
                .work
                .wait_for(|| shared.queue.borrow().has_work(durability).then_some(()))
                .await;
            let (group, closing) = {
                let mut queue = self.shared.queue.borrow_mut();
                queue.stalled = false;
                (queue.take_group(), queue.closing)
            };
            if group.is_empty() {
                if closing {
                    break;
                }
                continue;
            }
            let mut group = group;
            let result = self.write_group(&mut group, closing).await;
            {
                let mut queue = self.shared.queue.borrow_mut();
                match &result {
                    Ok(()) => queue.complete(&group),
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL write failed; the affected writes return an error");
                        queue.fail(group, e);
                    }
                }
            }
            self.shared.progress.notify_all();
            if closing && result.is_err() {
                break;
            }
        }
        let _ = self.segment.sync().await;
        self.shared.queue.borrow_mut().stopped = true;
        self.shared.progress.notify_all();
        self.segment.close().await;
    }

    async fn write_group(&mut self, group: &mut [Chunk], closing: bool) -> Result<()> {
        let mut bytes = Vec::new();
        for chunk in group.iter() {
            bytes.extend_from_slice(&chunk.bytes);
        }
        if !bytes.is_empty() {
            let physical = self.segment.write(&bytes).await?;
            add(&self.counters.bytes_written_wal, physical);
            if self.durability == Durability::Sync || closing {
                self.segment.sync().await?;
                add(&self.counters.syncs, 1);
                add(
                    &self.counters.writes_synced,
                    group.iter().map(|c| c.batches).sum(),
                );
            }
            // Written: a failed roll below must retry only the roll, not these bytes.
            for chunk in group.iter_mut() {
                chunk.bytes.clear();
            }
        }
        if let Some(number) = group.last().and_then(|c| c.roll_to) {
            self.segment.sync().await?;
            let next = Segment::create(&self.dir, number, self.segment_bytes).await?;
            let old = std::mem::replace(&mut self.segment, next);
            old.close().await;
        }
        Ok(())
    }
}
