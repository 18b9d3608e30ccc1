//! Model test: random apply/get/scan/delete/flush/compact/reopen sequences against a `BTreeMap`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use starling_storage::{Engine, Entry, Options, Version};

use crate::common::{run, small_options, tempdir};

#[derive(Clone, Debug)]
enum Op {
    Apply(Vec<(u8, Option<u8>, u64)>),
    Get(u8),
    Scan(Option<u8>, Option<u8>, usize),
    Flush,
    Compact,
    Reopen,
}

fn key(index: u8) -> Vec<u8> {
    // Three prefixes of eight keys each, so prefix scans have something to cut.
    vec![b'a' + index / 8, b'0' + index % 8]
}

fn op() -> impl Strategy<Value = Op> {
    let write = (
        0u8..24,
        proptest::option::weighted(0.8, any::<u8>()),
        1u64..40,
    );
    prop_oneof![
        6 => proptest::collection::vec(write, 1..6).prop_map(Op::Apply),
        3 => (0u8..24).prop_map(Op::Get),
        2 => (proptest::option::of(0u8..3), proptest::option::of(0u8..24), 1usize..10)
            .prop_map(|(p, a, l)| Op::Scan(p, a, l)),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

type Model = BTreeMap<Vec<u8>, (Version, Option<Vec<u8>>)>;

fn model_apply(model: &mut Model, entry: &Entry) -> bool {
    let newer = model
        .get(&entry.key)
        .is_none_or(|(v, _)| entry.version > *v);
    if newer {
        model.insert(entry.key.clone(), (entry.version, entry.value.clone()));
    }
    newer
}

fn options(path: &std::path::Path) -> Options {
    let mut options = small_options(path);
    options.memtable_bytes_max = 2 << 10;
    options.l0_compaction_trigger = 2;
    options.l1_bytes_target = 4 << 10;
    options.table_bytes_target = 2 << 10;
    options.durability = starling_storage::Durability::None;
    options
}

async fn check_op(engine: &Engine, model: &mut Model, op: Op) -> Result<(), String> {
    match op {
        Op::Apply(writes) => {
            let batch: Vec<Entry> = writes
                .iter()
                .map(|(k, v, hlc)| Entry {
                    key: key(*k),
                    value: v.map(|b| vec![b; usize::from(b % 64)]),
                    version: Version {
                        hlc: *hlc,
                        node: u64::from(*k % 2),
                    },
                })
                .collect();
            let expected: Vec<bool> = batch.iter().map(|e| model_apply(model, e)).collect();
            let applied = engine.apply(batch).await.map_err(|e| e.to_string())?;
            if applied.applied != expected {
                return Err(format!(
                    "applied {:?} != model {expected:?}",
                    applied.applied
                ));
            }
        }
        Op::Get(k) => {
            let got = engine.get(&key(k)).map_err(|e| e.to_string())?;
            let want = model.get(&key(k)).map(|(version, value)| Entry {
                key: key(k),
                value: value.clone(),
                version: *version,
            });
            if got != want {
                return Err(format!("get {:?}: {got:?} != {want:?}", key(k)));
            }
            // `read` lends the same version and value (memtables and tables alike).
            let read = engine
                .read(&key(k), |version, value| {
                    (version, value.map(<[u8]>::to_vec))
                })
                .map_err(|e| e.to_string())?;
            let want = want.map(|entry| (entry.version, entry.value));
            if read != want {
                return Err(format!("read {:?}: {read:?} != {want:?}", key(k)));
            }
        }
        Op::Scan(prefix, after, limit) => {
            let prefix: Vec<u8> = prefix.map(|p| vec![b'a' + p]).unwrap_or_default();
            let after = after.map(key);
            let got = engine
                .scan(&prefix, after.as_deref(), limit)
                .map_err(|e| e.to_string())?;
            let want: Vec<Entry> = model
                .iter()
                .filter(|(k, (_, v))| {
                    k.starts_with(&prefix) && v.is_some() && after.as_ref().is_none_or(|a| *k > a)
                })
                .take(limit)
                .map(|(k, (version, v))| Entry {
                    key: k.clone(),
                    value: v.clone(),
                    version: *version,
                })
                .collect();
            if got != want {
                return Err(format!(
                    "scan {prefix:?} after {after:?}: {got:?} != {want:?}"
                ));
            }
        }
        Op::Flush => engine.flush().await.map_err(|e| e.to_string())?,
        Op::Compact => engine.compact().await.map_err(|e| e.to_string())?,
        Op::Reopen => return Err("reopen is handled by run_ops".into()),
    }
    let live = model.values().filter(|(_, v)| v.is_some()).count() as u64;
    if engine.live_keys() != live {
        return Err(format!("live_keys {} != model {live}", engine.live_keys()));
    }
    Ok(())
}

async fn run_ops(ops: Vec<Op>) -> Result<(), String> {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    let mut engine = Engine::open(options(&path))
        .await
        .map_err(|e| e.to_string())?;
    let mut model = Model::new();
    for op in ops {
        if matches!(op, Op::Reopen) {
            engine.close().await.map_err(|e| e.to_string())?;
            engine = Engine::open(options(&path))
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        check_op(&engine, &mut model, op).await?;
    }
    let all: Vec<Entry> = engine
        .entries()
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let want: Vec<Entry> = model
        .iter()
        .map(|(k, (version, v))| Entry {
            key: k.clone(),
            value: v.clone(),
            version: *version,
        })
        .collect();
    if all != want {
        return Err(format!("entries {all:?} != model {want:?}"));
    }
    // Paging with a key filter (tombstones included) visits exactly the filtered model.
    let keep = |key: &[u8]| key.iter().map(|&b| u32::from(b)).sum::<u32>() % 2 == 0;
    for (limit, bytes_max) in [(3, usize::MAX), (usize::MAX, 1), (usize::MAX, usize::MAX)] {
        let mut paged = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, more) = engine
                .entries_page(after.as_deref(), &keep, limit, bytes_max)
                .map_err(|e| e.to_string())?;
            after = page.last().map(|entry| entry.key.clone()).or(after);
            paged.extend(page);
            if !more {
                break;
            }
        }
        let filtered: Vec<&Entry> = want.iter().filter(|entry| keep(&entry.key)).collect();
        if paged.iter().collect::<Vec<_>>() != filtered {
            return Err(format!(
                "pages ({limit}, {bytes_max}): {paged:?} != {filtered:?}"
            ));
        }
    }
    engine.close().await.map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn engine_matches_btreemap_model(ops in proptest::collection::vec(op(), 1..60)) {
        let outcome = run(move || run_ops(ops));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}
