//! The write-ahead log: record codec, group-commit writer, and replay at open.

pub mod record;
pub mod replay;
pub mod writer;
