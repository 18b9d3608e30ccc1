//! The `reconcile` suite: bytes, rounds and CPU of a reconciliation session, per difference d,
//! next to the naive exchange of all 8-byte hashes and minisketch (PinSketch, BCH over
//! GF(2^64), through the `minisketch-rs` crate, with its capacity set to the true d, which a
//! real deployment would have to estimate).
//!
//! The session runs in-process over a lossless channel; "rounds" counts responder ↔ initiator
//! round trips until both sides know their outcome; "bytes" counts every encoded message in
//! both directions (entry payloads are not part of reconciliation); "decode_ms" is the CPU
//! time of both state machines (snapshot, sketch products, decodes, root finding, resolution),
//! the median of `--repeat` sessions.

use starling::reconcile::{Initiator, Message, PartitionSketch, Responder, element_from_hash};
use std::collections::HashSet;

/// Options of the `reconcile` suite.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Elements in the initiator's set.
    #[arg(long, default_value_t = 1_000_000)]
    pub set_size: usize,
    /// Symmetric differences to measure (half on each side).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    pub diffs: Vec<usize>,
    /// Skip minisketch for d above this (its decode is O(d²) in one piece).
    #[arg(long, default_value_t = 1000)]
    pub minisketch_d_max: usize,
    /// Seed of the generated sets.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Sessions run per d; the CPU time reported is their median (bytes and rounds are the
    /// same every time: the sessions are deterministic).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

/// What one session cost.
struct Measured {
    bytes_to_responder: usize,
    bytes_to_initiator: usize,
    messages: usize,
    rounds: usize,
    cpu_ms: f64,
    correct: bool,
}

/// Runs the suite.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if !args.json {
        println!(
            "CPU: {}; set size {}",
            crate::field::cpu_model(),
            args.set_size
        );
        println!(
            "{:>6} {:>9} {:>8} {:>6} {:>9} {:>11} {:>12} {:>13} {:>8}",
            "d",
            "bytes",
            "B/diff",
            "rounds",
            "cpu_ms",
            "naive_B",
            "minisketch_B",
            "minisketch_ms",
            "correct"
        );
    }
    for &d in &args.diffs {
        anyhow::ensure!(d <= args.set_size, "d = {d} exceeds the set size");
        let (a, b, only_a, only_b) = sets(args.set_size, d, args.seed ^ d as u64);
        let (mut sketch_a, mut sketch_b) = (PartitionSketch::new(), PartitionSketch::new());
        for chunk in a.chunks(4096) {
            sketch_a.insert_batch(chunk);
        }
        for chunk in b.chunks(4096) {
            sketch_b.insert_batch(chunk);
        }
        anyhow::ensure!(args.repeat >= 1, "--repeat must be at least 1");
        let mut runs = (0..args.repeat)
            .map(|_| session(&sketch_a, &sketch_b, &only_a, &only_b))
            .collect::<anyhow::Result<Vec<Measured>>>()?;
        runs.sort_by(|x, y| x.cpu_ms.total_cmp(&y.cpu_ms));
        let measured = runs.swap_remove(runs.len() / 2);
        let mini = if d <= args.minisketch_d_max {
            minisketch::measure(&a, &b, d)
        } else {
            Err("skipped: d above --minisketch-d-max".into())
        };
        report(args, d, &measured, &mini);
    }
    if let Err(why) = minisketch::measure(&[5], &[6], 2) {
        println!(
            "minisketch: {why}; its published figures: 8 B per difference, d = 1,000 decodes in ≈ 219 ms on this machine class (RECONCILE.md §9)"
        );
    }
    Ok(())
}

fn report(args: &Args, d: usize, m: &Measured, mini: &Result<(usize, f64), String>) {
    let bytes = m.bytes_to_responder + m.bytes_to_initiator;
    let per_diff = if d == 0 { 0.0 } else { bytes as f64 / d as f64 };
    let naive = 8 * args.set_size;
    let target = 1.5 * 8.0 * d as f64 + 1024.0;
    if args.json {
        let (mini_bytes, mini_ms) = match mini {
            Ok((bytes, ms)) => (serde_json::json!(bytes), serde_json::json!(ms)),
            Err(_) => (serde_json::Value::Null, serde_json::Value::Null),
        };
        let line = serde_json::json!({
            "suite": "reconcile", "set_size": args.set_size, "d": d, "bytes": bytes,
            "bytes_per_diff": (per_diff * 100.0).round() / 100.0, "rounds": m.rounds,
            "decode_ms": (m.cpu_ms * 100.0).round() / 100.0, "naive_bytes": naive,
            "bytes_to_responder": m.bytes_to_responder, "bytes_to_initiator": m.bytes_to_initiator,
            "messages": m.messages, "bytes_target": target, "minisketch_bytes": mini_bytes,
            "minisketch_decode_ms": mini_ms, "correct": m.correct,
        });
        println!("{line}");
    } else {
        let (mini_bytes, mini_ms) = match mini {
            Ok((bytes, ms)) => (bytes.to_string(), format!("{ms:.1}")),
            Err(_) => ("-".into(), "-".into()),
        };
        println!(
            "{d:>6} {bytes:>9} {per_diff:>8.2} {:>6} {:>9.2} {naive:>11} {mini_bytes:>12} {mini_ms:>13} {:>8}",
            m.rounds, m.cpu_ms, m.correct
        );
    }
}

/// A: `set_size` elements; B: A without ⌈d/2⌉ of them plus ⌊d/2⌋ new ones.
fn sets(set_size: usize, d: usize, seed: u64) -> (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>) {
    let mut unique = HashSet::with_capacity(set_size + d);
    let mut counter = seed.wrapping_mul(0xA24B_AED4_963E_E407);
    let mut fresh = |n: usize| -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            counter = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let x = element_from_hash(xxhash_like(counter));
            if unique.insert(x) {
                out.push(x);
            }
        }
        out
    };
    let only_a = fresh(d.div_ceil(2));
    let common = fresh(set_size - only_a.len());
    let only_b = fresh(d / 2);
    let a: Vec<u64> = common.iter().chain(&only_a).copied().collect();
    let b: Vec<u64> = common.iter().chain(&only_b).copied().collect();
    (a, b, only_a, only_b)
}

fn xxhash_like(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs one session over a lossless in-process channel.
fn session(
    a: &PartitionSketch,
    b: &PartitionSketch,
    only_a: &[u64],
    only_b: &[u64],
) -> anyhow::Result<Measured> {
    let mut cpu = std::time::Duration::ZERO;
    let mut measured = Measured {
        bytes_to_responder: 0,
        bytes_to_initiator: 0,
        messages: 0,
        rounds: 0,
        cpu_ms: 0.0,
        correct: false,
    };
    let started = crate::field::thread_cpu_time();
    let (mut initiator, open) = Initiator::start(1, 0, a);
    cpu += crate::field::thread_cpu_time() - started;
    let mut to_responder = encode_all(
        open,
        &mut measured.bytes_to_responder,
        &mut measured.messages,
    );
    let mut responder: Option<Responder> = None;
    while !initiator.is_done() {
        anyhow::ensure!(
            measured.rounds < 1_000,
            "session did not finish in 1,000 round trips"
        );
        measured.rounds += 1;
        let mut to_initiator = Vec::new();
        for bytes in &to_responder {
            let message = Message::decode(bytes)?;
            let started = crate::field::thread_cpu_time();
            let out = match responder.as_mut() {
                Some(responder) => responder.handle(&message, b),
                None => {
                    let (created, out) = Responder::accept(&message, b)?;
                    responder = Some(created);
                    out
                }
            };
            cpu += crate::field::thread_cpu_time() - started;
            to_initiator.extend(encode_all(
                out,
                &mut measured.bytes_to_initiator,
                &mut measured.messages,
            ));
        }
        to_responder.clear();
        for bytes in &to_initiator {
            let message = Message::decode(bytes)?;
            let started = crate::field::thread_cpu_time();
            let out = initiator.handle(&message, a);
            cpu += crate::field::thread_cpu_time() - started;
            to_responder.extend(encode_all(
                out,
                &mut measured.bytes_to_responder,
                &mut measured.messages,
            ));
        }
    }
    // The final FinishAck is part of the bytes (counted above) but not another round trip.
    measured.cpu_ms = cpu.as_secs_f64() * 1e3;
    let responder_outcome = responder.as_ref().and_then(Responder::outcome);
    let initiator_outcome = initiator.outcome();
    measured.correct = match (responder_outcome, initiator_outcome) {
        (Some(r), Some(i)) => {
            let mut expected_ship = only_b.to_vec();
            expected_ship.sort_unstable();
            let mut expected_request = only_a.to_vec();
            expected_request.sort_unstable();
            let shipped: HashSet<u64> = i.to_ship.iter().copied().collect();
            r.complete
                && r.to_ship == expected_ship
                && r.to_request == expected_request
                && only_a.iter().all(|x| shipped.contains(x))
        }
        _ => false,
    };
    Ok(measured)
}

fn encode_all(messages: Vec<Message>, bytes: &mut usize, count: &mut usize) -> Vec<Vec<u8>> {
    messages
        .into_iter()
        .map(|message| {
            let encoded = message.encode();
            *bytes += encoded.len();
            *count += 1;
            encoded
        })
        .collect()
}

#[cfg(not(feature = "minisketch"))]
mod minisketch {
    //! Stand-in when built without the `minisketch` feature.

    /// Always unavailable.
    pub fn measure(_a: &[u64], _b: &[u64], _d: usize) -> Result<(usize, f64), String> {
        Err(
            "minisketch not built in (needs libclang for minisketch-rs's bindgen; build with \
             `--features minisketch` after `apt-get install libclang-dev`)"
                .into(),
        )
    }
}

#[cfg(feature = "minisketch")]
mod minisketch {
    //! minisketch through `minisketch-rs`: one sketch of capacity d each way is the best case
    //! (it needs d known in advance); bytes = one serialized sketch, time = build the
    //! difference sketch and decode it.

    use minisketch_rs::Minisketch;

    /// (bytes, decode ms) for sets `a`, `b` with symmetric difference `d`.
    pub fn measure(a: &[u64], b: &[u64], d: usize) -> Result<(usize, f64), String> {
        let capacity = d.max(1);
        let new = || {
            Minisketch::try_new(64, 0, capacity).map_err(|e| format!("minisketch unavailable: {e}"))
        };
        let (mut sketch_a, mut sketch_b) = (new()?, new()?);
        a.iter().for_each(|&x| sketch_a.add(x));
        b.iter().for_each(|&x| sketch_b.add(x));
        let bytes = sketch_a.serialized_size();
        let started = crate::field::thread_cpu_time();
        sketch_a.merge(&sketch_b).map_err(|e| e.to_string())?;
        let mut found = vec![0u64; capacity];
        let decoded = sketch_a
            .decode(&mut found)
            .map_err(|e| format!("minisketch decode failed: {e}"))?;
        let ms = (crate::field::thread_cpu_time() - started).as_secs_f64() * 1e3;
        if decoded != d {
            return Err(format!("minisketch decoded {decoded} of {d}"));
        }
        Ok((bytes, ms))
    }
}
