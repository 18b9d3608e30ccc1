//! Executes the commands parsed from one read and writes all their replies into one buffer.
//!
//! Consecutive commands of the same class (reads: GET/MGET/EXISTS; writes: SET/MSET; deletes;
//! conditional sets) form a *segment*: its key operations are split by owning shard and run as
//! one request per shard, so a read of 16 pipelined SETs costs one engine apply (one group
//! commit) per shard and at most one mesh round trip per other shard. **Invariants:** replies
//! are written in command order; a segment ends before any command of another class, so every
//! command observes the effects of all commands before it on the same connection; a SET is
//! answered `+OK` only after its apply is durable.

use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use crate::api::command::{self, CommandKind, CommandSpec};
use crate::api::resp;
use crate::runtime::ops::{Op, OpResult};
use crate::runtime::session::Session;
use crate::runtime::shard::Shard;
use crate::runtime::storage::Condition;
use crate::runtime::{info, keyspace};

/// Longest key accepted (the storage engine's hard limit).
pub const KEY_BYTES_MAX: usize = 4096;

/// The parsed commands of one read: argument ranges into the read buffer.
pub struct Batch<'a> {
    /// The read buffer.
    pub buf: &'a [u8],
    /// All arguments of all commands, in order.
    pub args: &'a [Range<usize>],
    /// Per command, its range in `args`.
    pub commands: &'a [Range<usize>],
}

/// Batchable command classes: commands of one class may share a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Read,
    Write,
    Delete,
    ConditionalWrite,
}

/// How a segment command's op results become its reply.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Bulk,
    Array,
    Count,
    Ok,
    OkOrNull,
}

struct Pending {
    kind: CommandKind,
    shape: Shape,
    positions: Range<usize>,
}

struct Segment {
    class: Option<Class>,
    ops: Vec<Vec<Op>>,
    pending: Vec<Pending>,
    positions: Vec<(usize, usize)>,
}

impl Segment {
    fn new(shards: usize) -> Self {
        Segment {
            class: None,
            ops: (0..shards).map(|_| Vec::new()).collect(),
            pending: Vec::new(),
            positions: Vec::new(),
        }
    }

    fn push_op(&mut self, shard: &Shard, key: &[u8], op: Op) {
        let target = shard.router.shard(key);
        self.ops[target].push(op);
        self.positions.push((target, self.ops[target].len() - 1));
    }
}

/// Executes `batch` and appends every reply to `out`.
pub async fn execute(
    shard: &Rc<Shard>,
    session: &mut Session,
    batch: &Batch<'_>,
    out: &mut Vec<u8>,
) {
    let started = Instant::now();
    let mut segment = Segment::new(shard.shards());
    // Reused for every command: the slices borrow from the read buffer, not from this Vec.
    let mut argv_buffer: Vec<&[u8]> = Vec::new();
    for command in batch.commands {
        if session.quit {
            break;
        }
        argv_buffer.clear();
        argv_buffer.extend(
            batch.args[command.clone()]
                .iter()
                .map(|r| &batch.buf[r.clone()]),
        );
        let argv = argv_buffer.as_slice();
        debug_assert!(!argv.is_empty());
        let Some(spec) = command::lookup(argv[0]) else {
            flush(shard, &mut segment, out, started).await;
            shard
                .shard_metrics()
                .commands_unknown
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            resp::error(out, &unknown_command_message(argv));
            continue;
        };
        if let Some(error) = precheck(shard, session, spec, argv) {
            flush(shard, &mut segment, out, started).await;
            resp::error(out, &error);
            shard
                .shard_metrics()
                .record(spec.kind, started.elapsed(), true);
            continue;
        }
        match plan(spec, argv) {
            Ok(Some((class, shape))) => {
                if segment.class.is_some_and(|c| c != class) {
                    flush(shard, &mut segment, out, started).await;
                }
                segment.class = Some(class);
                let first = segment.positions.len();
                push_key_ops(shard, &mut segment, spec.kind, argv);
                segment.pending.push(Pending {
                    kind: spec.kind,
                    shape,
                    positions: first..segment.positions.len(),
                });
            }
            Ok(None) => {
                flush(shard, &mut segment, out, started).await;
                let before = out.len();
                run_alone(shard, session, spec, argv, out).await;
                let failed = out.get(before) == Some(&b'-');
                shard
                    .shard_metrics()
                    .record(spec.kind, started.elapsed(), failed);
            }
            Err(error) => {
                flush(shard, &mut segment, out, started).await;
                resp::error(out, &error);
                shard
                    .shard_metrics()
                    .record(spec.kind, started.elapsed(), true);
            }
        }
    }
    flush(shard, &mut segment, out, started).await;
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b' ` (Redis' wording).
fn unknown_command_message(argv: &[&[u8]]) -> String {
    let quote = |arg: &[u8]| {
        let text = String::from_utf8_lossy(&arg[..arg.len().min(128)]).into_owned();
        format!("'{text}'")
    };
    let mut message = format!(
        "ERR unknown command {}, with args beginning with: ",
        quote(argv[0])
    );
    for arg in argv.iter().skip(1).take(8) {
        message.push_str(&quote(arg));
        message.push(' ');
    }
    message
}

/// Arity, authentication and key-size checks; `Some(error)` refuses the command.
fn precheck(
    shard: &Shard,
    session: &Session,
    spec: &CommandSpec,
    argv: &[&[u8]],
) -> Option<String> {
    if !spec.arity_ok(argv.len()) {
        return Some(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    if shard.config.password.is_some() && !session.authenticated && !spec.allowed_without_auth() {
        return Some("NOAUTH Authentication required.".into());
    }
    for key in key_args(spec, argv) {
        if key.is_empty() {
            return Some("ERR empty keys are not supported (keys are 1..=4096 bytes)".into());
        }
        if key.len() > KEY_BYTES_MAX {
            return Some(format!(
                "ERR key of {} bytes exceeds key_bytes_max ({KEY_BYTES_MAX})",
                key.len()
            ));
        }
    }
    None
}

/// The key arguments of a command, from the table's key positions.
fn key_args<'a>(spec: &CommandSpec, argv: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let first = spec.first_key.max(0) as usize;
    let last = if spec.last_key < 0 {
        argv.len().saturating_sub(1)
    } else {
        spec.last_key as usize
    };
    let step = spec.key_step.max(1) as usize;
    let range = if spec.first_key == 0 {
        0..0
    } else {
        first..last.min(argv.len().saturating_sub(1)) + 1
    };
    range.step_by(step).map(move |i| argv[i])
}

/// The segment class and reply shape of a keyed command, `None` for commands that run alone.
fn plan(spec: &CommandSpec, argv: &[&[u8]]) -> Result<Option<(Class, Shape)>, String> {
    Ok(match spec.kind {
        CommandKind::Get => Some((Class::Read, Shape::Bulk)),
        CommandKind::Mget => Some((Class::Read, Shape::Array)),
        CommandKind::Exists => Some((Class::Read, Shape::Count)),
        CommandKind::Del => Some((Class::Delete, Shape::Count)),
        CommandKind::Mset => {
            if argv.len().is_multiple_of(2) {
                return Err("ERR wrong number of arguments for 'mset' command".into());
            }
            Some((Class::Write, Shape::Ok))
        }
        CommandKind::Set => match parse_set_options(&argv[3..])? {
            None => Some((Class::Write, Shape::Ok)),
            Some(_) => Some((Class::ConditionalWrite, Shape::OkOrNull)),
        },
        _ => None,
    })
}

/// SET options: `Ok(None)` plain, `Ok(Some(condition))` for NX/XX.
fn parse_set_options(options: &[&[u8]]) -> Result<Option<Condition>, String> {
    let mut condition = None;
    for option in options {
        let upper = option.to_ascii_uppercase();
        let wanted = match upper.as_slice() {
            b"NX" => Condition::Absent,
            b"XX" => Condition::Present,
            b"KEEPTTL" => continue,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                return Err(
                    "ERR SET EX/PX/EXAT/PXAT are not supported: Starling keys do not expire".into(),
                );
            }
            b"GET" => return Err("ERR SET ... GET is not supported".into()),
            _ => return Err("ERR syntax error".into()),
        };
        if condition.is_some_and(|c| c != wanted) {
            return Err("ERR syntax error".into());
        }
        condition = Some(wanted);
    }
    Ok(condition)
}

fn push_key_ops(shard: &Shard, segment: &mut Segment, kind: CommandKind, argv: &[&[u8]]) {
    match kind {
        CommandKind::Get => segment.push_op(shard, argv[1], Op::Get(argv[1].to_vec())),
        CommandKind::Mget => argv[1..]
            .iter()
            .for_each(|k| segment.push_op(shard, k, Op::Get(k.to_vec()))),
        CommandKind::Exists => argv[1..]
            .iter()
            .for_each(|k| segment.push_op(shard, k, Op::Exists(k.to_vec()))),
        CommandKind::Del => argv[1..]
            .iter()
            .for_each(|k| segment.push_op(shard, k, Op::Del(k.to_vec()))),
        CommandKind::Mset => {
            for pair in argv[1..].chunks_exact(2) {
                segment.push_op(shard, pair[0], Op::Put(pair[0].to_vec(), pair[1].to_vec()));
            }
        }
        CommandKind::Set => {
            let (key, value) = (argv[1].to_vec(), argv[2].to_vec());
            // Options were validated by `plan`.
            let op = match parse_set_options(&argv[3..]) {
                Ok(Some(condition)) => Op::PutIf(key, value, condition),
                _ => Op::Put(key, value),
            };
            segment.push_op(shard, argv[1], op);
        }
        other => unreachable!("{other:?} has no key ops"),
    }
}

/// Runs the segment's ops and writes the replies of its commands, in order.
async fn flush(shard: &Rc<Shard>, segment: &mut Segment, out: &mut Vec<u8>, started: Instant) {
    if segment.pending.is_empty() {
        return;
    }
    let ops = std::mem::replace(
        &mut segment.ops,
        (0..shard.shards()).map(|_| Vec::new()).collect(),
    );
    let results = shard.execute(ops).await;
    let latency = started.elapsed();
    for pending in segment.pending.drain(..) {
        let positions = &segment.positions[pending.positions];
        let answer = |i: usize| {
            let (target, index) = positions[i];
            &results[target][index]
        };
        let failed = encode_reply(pending.shape, positions.len(), answer, out);
        shard.shard_metrics().record(pending.kind, latency, failed);
    }
    segment.positions.clear();
    segment.class = None;
}

/// Encodes one command's reply from its `count` op results (`answer(i)`, no allocation);
/// returns whether it is an error.
fn encode_reply<'r>(
    shape: Shape,
    count: usize,
    answer: impl Fn(usize) -> &'r OpResult,
    out: &mut Vec<u8>,
) -> bool {
    debug_assert!(count > 0);
    let answers = || (0..count).map(&answer);
    if let Some(OpResult::Error(message)) = answers().find(|a| matches!(a, OpResult::Error(_))) {
        resp::error(out, message);
        return true;
    }
    match (shape, answer(0)) {
        (Shape::Bulk, OpResult::Value(value)) => resp::optional_bulk(out, value.as_deref()),
        (Shape::Array, _) => {
            resp::array_header(out, count);
            for answer in answers() {
                match answer {
                    OpResult::Value(value) => resp::optional_bulk(out, value.as_deref()),
                    _ => resp::null(out),
                }
            }
        }
        (Shape::Count, _) => {
            let live = answers()
                .filter(|a| matches!(a, OpResult::Bool(true)))
                .count();
            resp::integer(out, live as i64);
        }
        (Shape::Ok, _) => resp::ok(out),
        (Shape::OkOrNull, OpResult::Bool(true)) => resp::ok(out),
        (Shape::OkOrNull, OpResult::Bool(false)) => resp::null(out),
        (_, other) => return internal_error(out, other),
    }
    false
}

fn internal_error(out: &mut Vec<u8>, answer: &OpResult) -> bool {
    tracing::error!(?answer, "op result does not fit its command");
    resp::error(out, "ERR internal error: unexpected operation result");
    true
}

/// Commands that are not batched: connection state, introspection, whole-keyspace commands.
async fn run_alone(
    shard: &Rc<Shard>,
    session: &mut Session,
    spec: &CommandSpec,
    argv: &[&[u8]],
    out: &mut Vec<u8>,
) {
    match spec.kind {
        CommandKind::Scan => keyspace::scan(shard, session, argv, out).await,
        CommandKind::Dbsize => keyspace::dbsize(shard, out).await,
        CommandKind::Info => info::info(shard, argv, out).await,
        _ => session.run_connection_command(shard, spec, argv, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_options_parse() {
        assert_eq!(parse_set_options(&[]), Ok(None));
        assert_eq!(parse_set_options(&[b"nx"]), Ok(Some(Condition::Absent)));
        assert_eq!(parse_set_options(&[b"XX"]), Ok(Some(Condition::Present)));
        assert!(parse_set_options(&[b"NX", b"XX"]).is_err());
        assert!(
            parse_set_options(&[b"EX", b"10"])
                .expect_err("refused")
                .contains("expire")
        );
        assert!(parse_set_options(&[b"bogus"]).is_err());
    }

    #[test]
    fn key_positions_follow_the_table() {
        let argv: Vec<&[u8]> = vec![b"MSET", b"a", b"1", b"b", b"2"];
        let keys: Vec<_> = key_args(command::lookup(b"mset").expect("mset"), &argv).collect();
        assert_eq!(keys, vec![&b"a"[..], b"b"]);
        let argv: Vec<&[u8]> = vec![b"DEL", b"a", b"b"];
        assert_eq!(
            key_args(command::lookup(b"del").expect("del"), &argv).count(),
            2
        );
        let argv: Vec<&[u8]> = vec![b"PING"];
        assert_eq!(
            key_args(command::lookup(b"ping").expect("ping"), &argv).count(),
            0
        );
    }

    #[test]
    fn unknown_command_names_the_command() {
        let message = unknown_command_message(&[b"FLUSHALL", b"ASYNC"]);
        assert!(
            message.starts_with("ERR unknown command 'FLUSHALL'"),
            "{message}"
        );
    }
}
