//! A bound on how much of the tables' mappings is resident in this process.
//!
//! Tables are read through `mmap`, so the page cache is the block cache. But every table page
//! a read touches stays mapped, and mapped pages count in the process's RSS: random reads over
//! a database larger than memory would pin all of it to the shard. The kernel maps file pages
//! in aligned *fault-around* windows (`fault_around_bytes`, 64 KiB by default), so counting
//! distinct touched windows bounds the mapped bytes from above. When the count passes
//! `table_mapped_bytes_max`, every table's data region is dropped from the page tables with
//! `MADV_DONTNEED`; the pages stay in the page cache (shared, reclaimable), and the next read
//! of one maps it back with a minor fault.
//!
//! **Invariant:** `data_windows` and `tail_windows` equal the sums over live tables of their
//! marked data windows and their permanently counted tails (bloom, index, footer: small,
//! probed by every lookup, never released).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use super::reader::Table;

/// The kernel's default fault-around window: one touched byte may map this much.
pub const WINDOW_BYTES: usize = 64 << 10;

/// The shared budget of one engine's tables.
#[derive(Debug)]
pub struct Residency {
    windows_max: usize,
    data_windows: Cell<usize>,
    tail_windows: Cell<usize>,
    releases: Cell<u64>,
    tables: RefCell<Vec<Weak<Table>>>,
}

impl Residency {
    /// A budget of `bytes_max` mapped table bytes.
    pub fn new(bytes_max: usize) -> Rc<Residency> {
        Rc::new(Residency {
            windows_max: (bytes_max / WINDOW_BYTES).max(1),
            data_windows: Cell::new(0),
            tail_windows: Cell::new(0),
            releases: Cell::new(0),
            tables: RefCell::new(Vec::new()),
        })
    }

    /// Adds a freshly opened table (its tail windows are counted by the table).
    pub fn register(&self, table: &Rc<Table>) {
        let mut tables = self.tables.borrow_mut();
        tables.retain(|t| t.strong_count() > 0);
        tables.push(Rc::downgrade(table));
    }

    /// Counts tail windows of a new table.
    pub fn add_tail(&self, windows: usize) {
        self.tail_windows.set(self.tail_windows.get() + windows);
    }

    /// A table went away (its mapping with it).
    pub fn forget(&self, data_windows: usize, tail_windows: usize) {
        self.data_windows
            .set(self.data_windows.get() - data_windows);
        self.tail_windows
            .set(self.tail_windows.get() - tail_windows);
    }

    /// A read touched a new data window; releases every table's data mapping when the
    /// budget is exceeded. Tails are never released, so the data windows always keep at
    /// least a quarter of the budget (no release per read when tails alone fill it).
    /// The caller marks its window only after this returns (a release clears the marks).
    pub fn touched(&self) {
        let data_max = self
            .windows_max
            .saturating_sub(self.tail_windows.get())
            .max(self.windows_max / 4)
            .max(1);
        if self.data_windows.get() >= data_max {
            self.release_all();
        }
        self.data_windows.set(self.data_windows.get() + 1);
    }

    fn release_all(&self) {
        let tables: Vec<Rc<Table>> = self
            .tables
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for table in tables {
            let released = table.release_data();
            self.data_windows.set(self.data_windows.get() - released);
        }
        self.releases.set(self.releases.get() + 1);
    }

    /// Windows currently counted as mapped (data + tails).
    pub fn mapped_windows(&self) -> usize {
        self.data_windows.get() + self.tail_windows.get()
    }

    /// How often the data mappings were released.
    pub fn releases(&self) -> u64 {
        self.releases.get()
    }
}
