//! Background work: flushing the immutable memtable to L0, and running compactions on the
//! low-priority task queue. Both write their tables with DMA, make the manifest edit durable,
//! and only then swap the in-memory table set and delete what became obsolete.

use std::rc::Rc;

use crate::compaction::{Pick, pick, pick_all};
use crate::counters::add;
use crate::engine::{Engine, Inner};
use crate::error::{Error, Result};
use crate::manifest::{Edit, sync_dir};
use crate::memtable::Item;
use crate::merge::{Merge, Source};
use crate::sst::reader::Table;
use crate::sst::writer::{TableMeta, TableWriter, table_path};
use crate::wal::writer::{parse_segment_name, segment_path};

/// Entries between cooperative yields while merging.
const YIELD_EVERY: usize = 512;

/// The flush task: flushes the immutable memtable whenever there is one.
pub(crate) async fn flush_loop(inner: Rc<Inner>) {
    loop {
        let go = inner
            .flush_work
            .wait_for(|| {
                if inner.closed.get() {
                    return Some(false);
                }
                let mut state = inner.state.borrow_mut();
                let due = state.imm.is_some() && state.flush_error.is_none() && !state.flushing;
                if due {
                    state.flushing = true;
                }
                due.then_some(true)
            })
            .await;
        if !go {
            return;
        }
        run(&inner).await;
    }
}

/// Flushes the immutable memtable; records the outcome in the state.
async fn run(inner: &Rc<Inner>) {
    let result = flush_once(inner).await;
    let mut state = inner.state.borrow_mut();
    state.flushing = false;
    match result {
        Ok(()) => {
            state.compaction_failed = false;
            drop(state);
            inner.bg_work.notify_all();
        }
        Err(error) => {
            tracing::warn!(%error, "memtable flush failed; writes will stall until it succeeds");
            state.flush_error = Some(error);
        }
    }
    inner.changed.notify_all();
}

async fn flush_once(inner: &Rc<Inner>) -> Result<()> {
    let (imm, log_number, live_keys, number) = {
        let mut state = inner.state.borrow_mut();
        let imm = Rc::clone(state.imm.as_ref().ok_or(Error::Closed)?);
        let number = state.next_file;
        state.next_file += 1;
        (imm, state.imm_log_number, state.imm_live_keys, number)
    };
    let meta = if imm.is_empty() {
        None
    } else {
        let mut writer = TableWriter::create(&inner.dir, number).await?;
        for (key, slot) in imm.iter() {
            writer.add(key, slot.version, slot.value);
            if writer.should_drain()
                && let Err(e) = writer.drain().await
            {
                writer.abandon().await;
                return Err(e);
            }
        }
        Some(writer.finish().await?)
    };
    // The state's reference is dropped in `install_flush`; this one must go first so the
    // memtable's arena is unmapped right there.
    drop(imm);
    install_flush(inner, meta.as_ref(), log_number, live_keys)
}

fn install_flush(
    inner: &Rc<Inner>,
    meta: Option<&TableMeta>,
    log_number: u64,
    live_keys: u64,
) -> Result<()> {
    let table = match meta {
        Some(meta) => Some(Table::open(&inner.dir, meta.clone(), &inner.residency)?),
        None => None,
    };
    sync_dir(&inner.dir)?;
    let mut state = inner.state.borrow_mut();
    let edit = Edit {
        adds: meta.iter().map(|m| (0, (*m).clone())).collect(),
        log_number: Some(log_number),
        next_file: Some(state.next_file),
        live_keys: Some(live_keys),
        ..Edit::default()
    };
    if let Err(e) = inner.manifest.borrow_mut().append(&edit) {
        if let Some(meta) = meta {
            let _ = std::fs::remove_file(table_path(&inner.dir, meta.number));
        }
        return Err(e);
    }
    if let Some(table) = table {
        add(&inner.counters.bytes_written_flush, table.meta().size);
        state.levels[0].insert(0, table);
    }
    state.imm = None;
    add(&inner.counters.flushes, 1);
    drop(state);
    release_freed_memory();
    remove_wal_segments_below(inner, log_number);
    Ok(())
}

/// Returns the heap a dropped memtable's B-tree nodes leave behind (tens of MiB in ~370 B
/// pieces; the arena itself is unmapped on drop) to the OS: glibc would otherwise keep it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it has no
    // preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

/// Deletes WAL segments whose contents are all in tables now.
pub(crate) fn remove_wal_segments_below(inner: &Inner, log_number: u64) {
    let Ok(entries) = std::fs::read_dir(&inner.dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(number) = name.to_str().and_then(parse_segment_name)
            && number < log_number
        {
            let _ = std::fs::remove_file(segment_path(&inner.dir, number));
        }
    }
}

/// The background compaction loop (runs on the low-priority queue).
pub(crate) async fn compaction_loop(inner: Rc<Inner>) {
    loop {
        let due = inner
            .bg_work
            .wait_for(|| {
                if inner.closed.get() {
                    return Some(None);
                }
                let state = inner.state.borrow();
                if state.compacting
                    || state.compaction_failed
                    || !inner.options.background_compaction
                {
                    return None;
                }
                pick(&Engine::level_metas(&state), &inner.options).map(Some)
            })
            .await;
        let Some(due) = due else { return };
        if let Err(error) = run_compaction(&inner, due).await {
            tracing::warn!(%error, "compaction failed; retrying after the next flush");
            inner.state.borrow_mut().compaction_failed = true;
        }
    }
}

/// Full compaction for `Engine::compact`.
pub(crate) async fn compact_all(inner: &Rc<Inner>) -> Result<()> {
    let chosen = inner
        .changed
        .wait_for(|| {
            let state = inner.state.borrow();
            (!state.compacting).then(|| pick_all(&Engine::level_metas(&state)))
        })
        .await;
    match chosen {
        Some(chosen) => run_compaction(inner, chosen).await,
        None => Ok(()),
    }
}

async fn run_compaction(inner: &Rc<Inner>, chosen: Pick) -> Result<()> {
    let inputs: Vec<Rc<Table>> = {
        let mut state = inner.state.borrow_mut();
        assert!(!state.compacting, "one compaction at a time");
        state.compacting = true;
        state
            .levels
            .iter()
            .flatten()
            .filter(|t| chosen.inputs.contains(&t.meta().number))
            .cloned()
            .collect()
    };
    let queue = inner.compaction_queue;
    let task_inner = Rc::clone(inner);
    let task_inputs = inputs.clone();
    let written = glommio::spawn_local_into(
        async move { merge_into_tables(&task_inner, &task_inputs, chosen.bottom).await },
        queue,
    );
    let result = match written {
        Ok(task) => task.await,
        Err(e) => Err(Error::glommio("spawning a compaction", e)),
    };
    let result = result
        .and_then(|outputs| install_compaction(inner, &inputs, &outputs, chosen.output_level));
    inner.state.borrow_mut().compacting = false;
    inner.changed.notify_all();
    inner.bg_work.notify_all();
    result
}

async fn merge_into_tables(
    inner: &Rc<Inner>,
    inputs: &[Rc<Table>],
    bottom: bool,
) -> Result<Vec<TableMeta>> {
    let sources: Vec<Source<'static>> = inputs
        .iter()
        .map(|t| Box::new(t.iter_from(&[])) as Source<'static>)
        .collect();
    let horizon = inner.gc_horizon.get();
    let mut outputs = Vec::new();
    let mut writer: Option<TableWriter> = None;
    let result = async {
        for (count, item) in Merge::new(sources).enumerate() {
            let (key, version, value): Item = item?;
            if bottom && value.is_none() && version.hlc < horizon {
                continue;
            }
            if writer.is_none() {
                let number = {
                    let mut state = inner.state.borrow_mut();
                    state.next_file += 1;
                    state.next_file - 1
                };
                writer = Some(TableWriter::create(&inner.dir, number).await?);
            }
            let current = writer.as_mut().expect("created above");
            current.add(&key, version, value.as_deref());
            if current.should_drain() {
                current.drain().await?;
            }
            if current.bytes() >= inner.options.table_bytes_target
                && let Some(full) = writer.take()
            {
                outputs.push(full.finish().await?);
            }
            if count % YIELD_EVERY == 0 {
                glommio::yield_if_needed().await;
            }
        }
        if let Some(last) = writer.take() {
            outputs.push(last.finish().await?);
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        if let Some(open) = writer.take() {
            open.abandon().await;
        }
        for meta in &outputs {
            let _ = std::fs::remove_file(table_path(&inner.dir, meta.number));
        }
        return Err(error);
    }
    Ok(outputs)
}

fn install_compaction(
    inner: &Rc<Inner>,
    inputs: &[Rc<Table>],
    outputs: &[TableMeta],
    level: usize,
) -> Result<()> {
    let opened: Vec<Rc<Table>> = outputs
        .iter()
        .map(|meta| Table::open(&inner.dir, meta.clone(), &inner.residency))
        .collect::<Result<_>>()?;
    sync_dir(&inner.dir)?;
    let mut state = inner.state.borrow_mut();
    let removed: Vec<u64> = inputs.iter().map(|t| t.meta().number).collect();
    let edit = Edit {
        adds: outputs.iter().map(|m| (level, m.clone())).collect(),
        removes: removed.clone(),
        next_file: Some(state.next_file),
        ..Edit::default()
    };
    inner.manifest.borrow_mut().append(&edit)?;
    for tables in &mut state.levels {
        tables.retain(|t| !removed.contains(&t.meta().number));
    }
    let written: u64 = outputs.iter().map(|m| m.size).sum();
    state.levels[level].extend(opened);
    state.levels[level].sort_by(|a, b| a.meta().smallest.cmp(&b.meta().smallest));
    drop(state);
    add(&inner.counters.bytes_written_compaction, written);
    add(&inner.counters.compactions, 1);
    for number in removed {
        let _ = std::fs::remove_file(table_path(&inner.dir, number));
    }
    Ok(())
}
