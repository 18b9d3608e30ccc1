//! Whole-keyspace commands: SCAN (shard by shard, in key order within a shard) and DBSIZE.
//!
//! A SCAN cursor is a number the connection maps to (shard, last key returned); cursor 0 starts
//! and ends a full iteration. Like Redis, every key present for the whole iteration is returned,
//! and a key may be missed or returned once more if it is written during it. `MATCH` supports a
//! literal prefix followed by `*` (or a literal key), which the engine serves from its sorted
//! order without reading other keys.

use std::rc::Rc;

use crate::api::resp;
use crate::runtime::ops::{Op, OpResult};
use crate::runtime::session::{Cursor, Session};
use crate::runtime::shard::Shard;

/// Largest COUNT honoured (bounds the reply of one SCAN).
pub const SCAN_COUNT_MAX: usize = 10_000;
const SCAN_COUNT_DEFAULT: usize = 10;

/// What a MATCH pattern selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Keys starting with the prefix (`prefix*`, or no MATCH: empty prefix).
    Prefix(Vec<u8>),
    /// Exactly this key (a pattern without glob characters).
    Exact(Vec<u8>),
}

/// Parses a MATCH pattern; only `literal*` and `literal` are supported.
pub fn parse_pattern(pattern: &[u8]) -> Result<Pattern, String> {
    let is_glob = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
    match pattern.split_last() {
        Some((b'*', prefix)) if !prefix.iter().any(is_glob) => Ok(Pattern::Prefix(prefix.to_vec())),
        _ if !pattern.iter().any(is_glob) => Ok(Pattern::Exact(pattern.to_vec())),
        _ => Err(
            "ERR SCAN MATCH supports only a literal prefix followed by '*' (e.g. MATCH user:*)"
                .into(),
        ),
    }
}

struct ScanArgs {
    cursor: u64,
    pattern: Pattern,
    count: usize,
}

fn parse_scan_args(argv: &[&[u8]]) -> Result<ScanArgs, String> {
    let cursor = std::str::from_utf8(argv[1])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("ERR invalid cursor")?;
    let mut args = ScanArgs {
        cursor,
        pattern: Pattern::Prefix(Vec::new()),
        count: SCAN_COUNT_DEFAULT,
    };
    let mut options = argv[2..].chunks(2);
    for option in options.by_ref() {
        let [name, value] = option else {
            return Err("ERR syntax error".into());
        };
        match name.to_ascii_uppercase().as_slice() {
            b"MATCH" => args.pattern = parse_pattern(value)?,
            b"COUNT" => {
                let count = resp::parse_int(value)
                    .filter(|&c| c >= 1)
                    .ok_or("ERR value is out of range, must be positive")?;
                args.count = (count as usize).min(SCAN_COUNT_MAX);
            }
            b"TYPE" if value.eq_ignore_ascii_case(b"string") => {}
            b"TYPE" => args.count = 0,
            _ => return Err("ERR syntax error".into()),
        }
    }
    Ok(args)
}

/// SCAN cursor [MATCH prefix*] [COUNT n] [TYPE string].
pub async fn scan(shard: &Rc<Shard>, session: &mut Session, argv: &[&[u8]], out: &mut Vec<u8>) {
    let args = match parse_scan_args(argv) {
        Ok(args) => args,
        Err(error) => return resp::error(out, &error),
    };
    let cursor = match args.cursor {
        0 => Cursor {
            shard: 0,
            after: None,
        },
        id => match session.take_cursor(id) {
            Some(cursor) => cursor,
            None => {
                return resp::error(
                    out,
                    "ERR invalid cursor (cursors are valid on the connection that received them)",
                );
            }
        },
    };
    let (keys, next) = match args.count {
        0 => (Vec::new(), None),
        count => match scan_shard(shard, &args.pattern, &cursor, count).await {
            Ok(found) => found,
            Err(error) => return resp::error(out, &error),
        },
    };
    let next_id = next.map_or(0, |next| session.save_cursor(next));
    resp::array_header(out, 2);
    resp::bulk(out, next_id.to_string().as_bytes());
    resp::array_header(out, keys.len());
    for key in &keys {
        resp::bulk(out, key);
    }
}

/// Up to `count` matching keys of the cursor's shard, and where to continue (`None`: done).
async fn scan_shard(
    shard: &Rc<Shard>,
    pattern: &Pattern,
    cursor: &Cursor,
    count: usize,
) -> Result<(Vec<Vec<u8>>, Option<Cursor>), String> {
    let (prefix, limit) = match pattern {
        Pattern::Prefix(prefix) => (prefix.clone(), count),
        // The first key with a literal key as prefix is that key itself, if it exists.
        Pattern::Exact(key) => (key.clone(), 1),
    };
    let mut ops: Vec<Vec<Op>> = (0..shard.shards()).map(|_| Vec::new()).collect();
    ops[cursor.shard].push(Op::Scan {
        prefix,
        after: cursor.after.clone(),
        limit,
    });
    let mut results = shard.execute(ops).await;
    let mut keys = match results[cursor.shard].pop() {
        Some(OpResult::Keys(keys)) => keys,
        Some(OpResult::Error(error)) => return Err(error),
        other => {
            return Err(format!(
                "ERR internal error: unexpected scan result {other:?}"
            ));
        }
    };
    let exhausted = keys.len() < limit || matches!(pattern, Pattern::Exact(_));
    let next = if !exhausted {
        Some(Cursor {
            shard: cursor.shard,
            after: keys.last().cloned(),
        })
    } else if cursor.shard + 1 < shard.shards() {
        Some(Cursor {
            shard: cursor.shard + 1,
            after: None,
        })
    } else {
        None
    };
    if let Pattern::Exact(key) = pattern {
        keys.retain(|k| k == key);
    }
    Ok((keys, next))
}

/// DBSIZE: live keys summed over all shards (exact, from each engine).
pub async fn dbsize(shard: &Rc<Shard>, out: &mut Vec<u8>) {
    match storage_samples(shard).await {
        Ok(samples) => resp::integer(out, samples.iter().map(|s| s.live_keys as i64).sum()),
        Err(error) => resp::error(out, &error),
    }
}

/// Every shard's storage statistics, in shard order.
pub async fn storage_samples(
    shard: &Rc<Shard>,
) -> Result<Vec<crate::api::metrics::StorageSample>, String> {
    let ops = (0..shard.shards()).map(|_| vec![Op::Stats]).collect();
    let results = shard.execute(ops).await;
    results
        .into_iter()
        .map(|mut r| match r.pop() {
            Some(OpResult::Stats(sample)) => Ok(*sample),
            Some(OpResult::Error(error)) => Err(error),
            other => Err(format!(
                "ERR internal error: unexpected stats result {other:?}"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(
            parse_pattern(b"user:*"),
            Ok(Pattern::Prefix(b"user:".to_vec()))
        );
        assert_eq!(parse_pattern(b"*"), Ok(Pattern::Prefix(Vec::new())));
        assert_eq!(
            parse_pattern(b"exact"),
            Ok(Pattern::Exact(b"exact".to_vec()))
        );
        assert!(parse_pattern(b"a*b*").is_err());
        assert!(parse_pattern(b"a?*").is_err());
    }

    #[test]
    fn scan_arguments() {
        let args =
            parse_scan_args(&[b"SCAN", b"0", b"MATCH", b"k*", b"COUNT", b"100000"]).expect("valid");
        assert_eq!((args.cursor, args.count), (0, SCAN_COUNT_MAX));
        assert!(parse_scan_args(&[b"SCAN", b"x"]).is_err());
        assert!(parse_scan_args(&[b"SCAN", b"0", b"COUNT"]).is_err());
        assert!(parse_scan_args(&[b"SCAN", b"0", b"COUNT", b"0"]).is_err());
    }
}
