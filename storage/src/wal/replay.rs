//! Replays WAL segments at open and tells a torn tail from corruption.
//!
//! A bad record is a *torn tail* only if no valid record follows it anywhere in the segment
//! and the segment is the last one; the tail is then truncated, logged and counted. A bad
//! record followed by a valid one is corruption (`Error::Corruption` with file and offset).

use std::path::Path;

use super::record::{Parsed, decode_batch, parse};
use crate::error::{Error, Result};
use crate::types::Entry;

/// What replaying one segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Records replayed.
    pub records: u64,
    /// Torn records dropped from the tail (0 or 1).
    pub tail_records_dropped: u64,
    /// Offset just past the last valid record.
    pub valid_end: u64,
}

/// Replays `data` (the bytes of segment `path`), calling `apply` per batch.
pub fn replay_bytes(
    path: &Path,
    data: &[u8],
    is_last: bool,
    mut apply: impl FnMut(Vec<Entry>) -> Result<()>,
) -> Result<ReplayOutcome> {
    let mut outcome = ReplayOutcome::default();
    let mut offset = 0usize;
    loop {
        match parse(&data[offset..]) {
            Parsed::End => break,
            Parsed::Record { payload, total, .. } => {
                let batch = decode_batch(payload).ok_or_else(|| Error::Corruption {
                    file: path.to_path_buf(),
                    offset: offset as u64,
                    detail: "WAL record with a valid checksum does not decode".into(),
                })?;
                apply(batch)?;
                outcome.records += 1;
                offset += total;
            }
            Parsed::Bad => {
                if !is_last || valid_record_after(data, offset) {
                    return Err(Error::Corruption {
                        file: path.to_path_buf(),
                        offset: offset as u64,
                        detail: "bad WAL record followed by valid data".into(),
                    });
                }
                outcome.tail_records_dropped = 1;
                break;
            }
        }
    }
    outcome.valid_end = offset as u64;
    Ok(outcome)
}

/// True if a record verifies at any offset after `bad` (within the written part of the data).
fn valid_record_after(data: &[u8], bad: usize) -> bool {
    let written_end = data.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    (bad + 1..written_end).any(|at| matches!(parse(&data[at..written_end]), Parsed::Record { .. }))
}

/// Replays the segment file at `path`; truncates a torn tail so a later crash cannot mistake
/// it for corruption in the middle.
pub fn replay_file(
    path: &Path,
    is_last: bool,
    apply: impl FnMut(Vec<Entry>) -> Result<()>,
) -> Result<ReplayOutcome> {
    let data =
        std::fs::read(path).map_err(|e| Error::io(format!("reading WAL {}", path.display()), e))?;
    let outcome = replay_bytes(path, &data, is_last, apply)?;
    if outcome.tail_records_dropped > 0 {
        tracing::warn!(
            wal = %path.display(),
            offset = outcome.valid_end,
            "torn WAL tail dropped (a write that was never acknowledged)"
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening WAL {}", path.display()), e))?;
        file.set_len(outcome.valid_end)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("truncating WAL {}", path.display()), e))?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::super::record::encode_batch;
    use super::*;
    use crate::types::Version;

    fn log(records: usize) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for i in 0..records {
            starts.push(out.len());
            let entry = Entry {
                key: format!("key{i}").into_bytes(),
                value: Some(vec![7; 20]),
                version: Version {
                    hlc: i as u64,
                    node: 0,
                },
            };
            encode_batch(&mut out, std::iter::once(&entry), 1);
        }
        out.resize(out.len() + 4096, 0);
        (out, starts)
    }

    #[test]
    fn torn_tail_is_dropped_and_middle_damage_is_corruption() {
        let path = Path::new("wal-test");
        let (mut data, starts) = log(5);
        data[starts[4] + 20] ^= 1;
        let outcome =
            replay_bytes(path, &data, true, |_| Ok(())).expect("torn tail is not an error");
        assert_eq!(outcome.records, 4);
        assert_eq!(outcome.tail_records_dropped, 1);
        assert_eq!(outcome.valid_end, starts[4] as u64);

        let (mut data, starts) = log(5);
        data[starts[2] + 20] ^= 1;
        let err = replay_bytes(path, &data, true, |_| Ok(())).expect_err("middle damage");
        assert!(matches!(err, Error::Corruption { offset, .. } if offset == starts[2] as u64));
    }
}
