//! Fuzz the RESP request parser (`api::resp::parse_command`) the way a connection drives it:
//! frame after frame from one buffer, with the default and with tiny limits. It must never
//! panic; every accepted frame's argument ranges lie inside the frame; every strict prefix of a
//! frame is `Ok(None)` (the parser waits for more bytes); and the arguments, re-encoded as a
//! RESP array, parse back to the same arguments. The reply decoder gets the same bytes.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use starling::api::resp::{Limits, Reply, encode_command, parse_command};

/// Frames longer than this skip the quadratic prefix check.
const PREFIX_CHECK_BYTES_MAX: usize = 512;

fuzz_target!(|data: &[u8]| {
    let tiny = Limits {
        bulk_bytes_max: 16,
        args_max: 4,
        inline_bytes_max: 32,
    };
    for limits in [Limits::default(), tiny] {
        parse_all(data, &limits);
    }
    check_reply(data);
});

/// Parses every frame in `data`, checking each one.
fn parse_all(data: &[u8], limits: &Limits) {
    let mut start = 0;
    let mut args = Vec::new();
    while start < data.len() {
        args.clear();
        let Ok(Some(end)) = parse_command(data, start, limits, &mut args) else {
            return;
        };
        assert!(
            end > start && end <= data.len(),
            "frame {start}..{end} outside the buffer"
        );
        assert!(args.len() <= limits.args_max);
        for range in &args {
            assert!(range.start >= start && range.end <= end && range.start <= range.end);
            assert!(range.len() <= limits.bulk_bytes_max.max(limits.inline_bytes_max));
        }
        check_prefixes(data, start, end, limits);
        check_reencode(data, &args, limits);
        start = end;
    }
}

/// Every strict prefix of an accepted frame must read as "incomplete".
fn check_prefixes(data: &[u8], start: usize, end: usize, limits: &Limits) {
    if end - start > PREFIX_CHECK_BYTES_MAX {
        return;
    }
    let mut args = Vec::new();
    for cut in start..end {
        let result = parse_command(&data[..cut], start, limits, &mut args);
        assert_eq!(
            result,
            Ok(None),
            "prefix {start}..{cut} of frame {start}..{end}"
        );
        assert!(args.is_empty(), "an incomplete frame left arguments behind");
    }
}

/// The arguments re-encoded as a multibulk array must parse to the same bytes (when each fits
/// a bulk string: an inline word may be longer than `bulk_bytes_max`).
fn check_reencode(data: &[u8], args: &[Range<usize>], limits: &Limits) {
    if args.iter().any(|range| range.len() > limits.bulk_bytes_max) {
        return;
    }
    let words: Vec<&[u8]> = args.iter().map(|range| &data[range.clone()]).collect();
    let mut encoded = Vec::new();
    encode_command(&words, &mut encoded);
    let mut again = Vec::new();
    let result = parse_command(&encoded, 0, limits, &mut again);
    assert_eq!(result, Ok(Some(encoded.len())), "re-encoded frame rejected");
    let words_again: Vec<&[u8]> = again.iter().map(|range| &encoded[range.clone()]).collect();
    assert_eq!(words, words_again);
}

/// The client-side reply decoder: never panics, and a decoded reply round-trips.
fn check_reply(data: &[u8]) {
    let Ok(Some((reply, used))) = Reply::decode(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len());
    let mut encoded = Vec::new();
    reply.encode(&mut encoded);
    let again = Reply::decode(&encoded);
    // Simple strings and errors are decoded lossily (invalid UTF-8 becomes U+FFFD), and a
    // line may not contain CR LF: both re-encode to something that decodes to the same value.
    let Ok(Some((reply_again, used_again))) = again else {
        panic!("re-encoded reply {reply:?} did not decode: {again:?}")
    };
    assert_eq!(reply_again, reply);
    assert_eq!(used_again, encoded.len());
}
