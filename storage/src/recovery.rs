//! Opening an engine: refuse unsuitable dirs (no `O_DIRECT`, already locked), load the
//! manifest and tables, drop orphans, replay the WAL (truncating a torn tail), start the
//! background tasks.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::path::Path;
use std::rc::Rc;

use crate::counters::{Counters, add};
use crate::engine::{Engine, Inner, State};
use crate::error::{Error, Result};
use crate::manifest::{LEVELS, Manifest};
use crate::memtable::Memtable;
use crate::notify::Notify;
use crate::sst::reader::Table;
use crate::sst::residency::Residency;
use crate::types::{Durability, Options};
use crate::wal::replay::replay_file;
use crate::wal::writer::{Segment, WalShared, WalWriter, parse_segment_name, segment_path};

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

impl Engine {
    /// Opens (creating or recovering) the engine in `options.dir`. Must run inside a glommio
    /// executor; the engine belongs to that executor.
    pub async fn open(options: Options) -> Result<Engine> {
        options.validate()?;
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        probe_direct_io(&dir)?;
        let lock = lock_dir(&dir)?;
        let manifest = Manifest::open(&dir)?;
        let version = manifest.version().clone();
        let residency = Residency::new(options.table_mapped_bytes_max);
        let mut levels: Vec<Vec<Rc<Table>>> = vec![Vec::new(); LEVELS];
        for (level, metas) in version.levels.iter().enumerate() {
            for meta in metas {
                levels[level].push(Table::open(&dir, meta.clone(), &residency)?);
            }
        }
        levels[0].sort_by_key(|t| std::cmp::Reverse(t.meta().number));
        for level in &mut levels[1..] {
            level.sort_by(|a, b| a.meta().smallest.cmp(&b.meta().smallest));
        }
        let hlc_max = levels
            .iter()
            .flatten()
            .map(|t| t.meta().hlc_max)
            .max()
            .unwrap_or(0);
        remove_orphans(&dir, &levels)?;
        let segments = wal_segments(&dir, version.log_number)?;
        let next_segment = segments.last().map_or(version.log_number, |n| n + 1).max(1);
        let inner = Rc::new(Inner {
            dir: dir.clone(),
            state: RefCell::new(State {
                mem: Memtable::default(),
                imm: None,
                imm_log_number: 0,
                imm_live_keys: 0,
                flushing: false,
                flush_error: None,
                compacting: false,
                compaction_failed: false,
                levels,
                next_file: version.next_file,
            }),
            wal: Rc::new(WalShared::default()),
            counters: Rc::new(Counters::default()),
            manifest: RefCell::new(manifest),
            changed: Notify::default(),
            bg_work: Notify::default(),
            flush_work: Notify::default(),
            gc_horizon: Cell::new(0),
            hlc_max: Cell::new(hlc_max),
            live_keys: Cell::new(version.live_keys),
            closed: Cell::new(false),
            next_wal_segment: Cell::new(next_segment + 1),
            compaction_queue: Engine::compaction_queue(options.compaction_shares),
            residency,
            options,
            _lock: lock,
        });
        replay_wal(&inner, &segments)?;
        let zero_fill = inner.options.durability == Durability::Sync;
        let segment = Segment::create(
            &dir,
            next_segment,
            inner.options.wal_segment_bytes,
            zero_fill,
        )
        .await?;
        Ok(start_tasks(inner, segment))
    }
}

fn start_tasks(inner: Rc<Inner>, segment: Segment) -> Engine {
    let writer = WalWriter {
        shared: Rc::clone(&inner.wal),
        counters: Rc::clone(&inner.counters),
        dir: inner.dir.clone(),
        segment_bytes: inner.options.wal_segment_bytes,
        durability: inner.options.durability,
        segment,
    };
    let wal_task = glommio::spawn_local(writer.run());
    let compaction_inner = Rc::clone(&inner);
    let compaction_task = glommio::spawn_local_into(
        crate::flush::compaction_loop(compaction_inner),
        inner.compaction_queue,
    )
    .ok();
    let compaction_task = match compaction_task {
        Some(task) => task,
        None => glommio::spawn_local(crate::flush::compaction_loop(Rc::clone(&inner))),
    };
    let flush_task = glommio::spawn_local(crate::flush::flush_loop(Rc::clone(&inner)));
    inner.bg_work.notify_all();
    inner.flush_work.notify_all();
    Engine {
        inner,
        wal_task: Some(wal_task),
        flush_task: Some(flush_task),
        compaction_task: Some(compaction_task),
    }
}

fn replay_wal(inner: &Inner, segments: &[u64]) -> Result<()> {
    let user_bytes = inner.counters.bytes_user.get();
    for (i, number) in segments.iter().enumerate() {
        let path = segment_path(&inner.dir, *number);
        let is_last = i + 1 == segments.len();
        let outcome = replay_file(&path, is_last, |batch| inner.replay_batch(batch))?;
        add(
            &inner.counters.wal_tail_records_dropped,
            outcome.tail_records_dropped,
        );
    }
    // Replayed entries were counted as user bytes by the session that wrote them.
    inner.counters.bytes_user.set(user_bytes);
    Ok(())
}

/// WAL segment numbers `>= log_number` in order; older ones are deleted.
fn wal_segments(dir: &Path, log_number: u64) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let Some(number) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        if number < log_number {
            let _ = std::fs::remove_file(entry.path());
        } else {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Deletes tables a crashed flush or compaction left behind, and a stale `MANIFEST.tmp`.
fn remove_orphans(dir: &Path, levels: &[Vec<Rc<Table>>]) -> Result<()> {
    let live: Vec<u64> = levels.iter().flatten().map(|t| t.meta().number).collect();
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let orphan_table = name
            .strip_suffix(".sst")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| !live.contains(&n));
        if orphan_table || name == "MANIFEST.tmp" || name == "PROBE" {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Takes an exclusive `flock` on `dir/LOCK` (released when the engine is dropped).
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("locking {}", path.display()), e))
        }
    }
}

/// Refuses filesystems without real `O_DIRECT` (tmpfs, ramfs): statfs, then an aligned
/// `O_DIRECT` write of one block.
fn probe_direct_io(dir: &Path) -> Result<()> {
    let refused = || Error::NoDirectIo {
        path: dir.to_path_buf(),
    };
    if matches!(filesystem_magic(dir), Some(TMPFS_MAGIC | RAMFS_MAGIC)) {
        return Err(refused());
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("PROBE");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let mut file = match file {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Err(refused()),
        Err(e) => {
            return Err(Error::io(
                format!("probing O_DIRECT in {}", dir.display()),
                e,
            ));
        }
    };
    // An aligned 4 KiB window inside a larger heap buffer: no unsafe allocation needed.
    let buffer = vec![0u8; 8192];
    let offset = buffer.as_ptr().align_offset(4096);
    let written = file.write(&buffer[offset..offset + 4096]);
    let _ = std::fs::remove_file(&path);
    match written {
        Ok(4096) => Ok(()),
        Ok(_) => Err(refused()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(refused()),
        Err(e) => Err(Error::io(
            format!("probing O_DIRECT in {}", dir.display()),
            e,
        )),
    }
}

#[allow(unsafe_code)]
fn filesystem_magic(dir: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `path` is a valid NUL-terminated string and `buf` points to writable memory of
    // the right size; statfs fills it completely on success, which we check before reading.
    let rc = unsafe { libc::statfs(path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statfs returned 0, so `buf` is initialised.
    let stat = unsafe { buf.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Some(stat.f_type as i64)
}
