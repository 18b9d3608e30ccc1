//! Sorted string tables: immutable files of sorted entries written once with DMA and read
//! through `mmap`.
//!
//! `block` and `bloom` are public so the criterion benches can measure them; the writer and
//! reader are internal.

pub mod block;
pub mod bloom;
pub(crate) mod format;
pub(crate) mod reader;
pub(crate) mod residency;
pub(crate) mod writer;
