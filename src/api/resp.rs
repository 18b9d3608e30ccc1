//! RESP2 framing: an incremental, allocation-free request parser with limits, and reply encoders.
//!
//! The parser never copies: it records each argument as a byte range into the caller's read
//! buffer, so a read that holds 16 pipelined commands is split into 16 commands without a single
//! allocation. An incomplete frame yields `Ok(None)` and is parsed again from its start when more
//! bytes arrive. **Invariant:** every range pushed lies inside the buffer that was parsed, and a
//! frame is only accepted once all of its bytes, including the final CRLF, are present.

use std::fmt::Write as _;
use std::ops::Range;

/// Bounds on what one request may contain (a client cannot make the server allocate more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (one argument), in bytes.
    pub bulk_bytes_max: usize,
    /// Most arguments in one command, command name included.
    pub args_max: usize,
    /// Longest inline (telnet-style) command line, in bytes.
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bulk_bytes_max: 1 << 20,
            args_max: 16 * 1024,
            inline_bytes_max: 64 * 1024,
        }
    }
}

/// A request that cannot be framed; the connection must be closed after replying, because
/// the position of the next frame is unknown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes do not follow RESP.
    #[error("Protocol error: {0}")]
    Protocol(String),
    /// A bulk string longer than the limit.
    #[error("Protocol error: bulk string of {length} bytes exceeds bulk_bytes_max ({max})")]
    BulkTooLarge {
        /// Announced length.
        length: i64,
        /// The limit.
        max: usize,
    },
    /// A command with more arguments than the limit.
    #[error("Protocol error: {count} arguments exceed args_max ({max})")]
    TooManyArgs {
        /// Announced argument count.
        count: i64,
        /// The limit.
        max: usize,
    },
    /// An inline command line longer than the limit.
    #[error("Protocol error: inline request longer than inline_bytes_max ({max})")]
    InlineTooLong {
        /// The limit.
        max: usize,
    },
}

/// Length of the longest header line (`*<n>\r\n` or `$<n>\r\n`) we accept.
const HEADER_BYTES_MAX: usize = 24;

/// Parses one command starting at `start` in `buf`.
///
/// On success pushes the argument ranges (absolute offsets into `buf`) onto `args` and returns
/// the offset just past the frame; a frame with no arguments (an empty line, `*0`) returns the
/// end offset and pushes nothing. Returns `Ok(None)` when the frame is incomplete (and leaves
/// `args` as it was).
pub fn parse_command(
    buf: &[u8],
    start: usize,
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ParseError> {
    debug_assert!(start <= buf.len());
    let args_len_before = args.len();
    let result = match buf.get(start) {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, start, limits, args),
        Some(_) => parse_inline(buf, start, limits, args),
    };
    if !matches!(result, Ok(Some(_))) {
        args.truncate(args_len_before);
    }
    if let Ok(Some(end)) = result {
        debug_assert!(end > start && end <= buf.len());
    }
    result
}

fn parse_multibulk(
    buf: &[u8],
    start: usize,
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ParseError> {
    let Some((count, mut pos)) = header(buf, start + 1, "multibulk length")? else {
        return Ok(None);
    };
    if count <= 0 {
        return Ok(Some(pos));
    }
    if count > limits.args_max as i64 {
        return Err(ParseError::TooManyArgs {
            count,
            max: limits.args_max,
        });
    }
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&other) => {
                return Err(ParseError::Protocol(format!(
                    "expected '$', got '{}'",
                    char::from(other).escape_default()
                )));
            }
        }
        let Some((length, body)) = header(buf, pos + 1, "bulk length")? else {
            return Ok(None);
        };
        if length < 0 {
            return Err(ParseError::Protocol("invalid bulk length".into()));
        }
        if length > limits.bulk_bytes_max as i64 {
            return Err(ParseError::BulkTooLarge {
                length,
                max: limits.bulk_bytes_max,
            });
        }
        let end = body + length as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ParseError::Protocol(
                "bulk string not followed by CRLF".into(),
            ));
        }
        args.push(body..end);
        pos = end + 2;
    }
    Ok(Some(pos))
}

/// Parses `<integer>\r\n` at `pos`; returns the integer and the offset after the CRLF.
fn header(buf: &[u8], pos: usize, what: &str) -> Result<Option<(i64, usize)>, ParseError> {
    let window = &buf[pos.min(buf.len())..buf.len().min(pos + HEADER_BYTES_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= HEADER_BYTES_MAX {
            return Err(ParseError::Protocol(format!("invalid {what}")));
        }
        return Ok(None);
    };
    if window.len() < cr + 2 {
        return Ok(None);
    }
    if window[cr + 1] != b'\n' {
        return Err(ParseError::Protocol(format!("invalid {what}")));
    }
    let value =
        parse_int(&window[..cr]).ok_or_else(|| ParseError::Protocol(format!("invalid {what}")))?;
    Ok(Some((value, pos + cr + 2)))
}

/// Parses a decimal integer with an optional leading '-'; `None` if malformed or out of range.
pub fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i128::from(d - b'0');
    }
    i64::try_from(if negative { -value } else { value }).ok()
}

fn parse_inline(
    buf: &[u8],
    start: usize,
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ParseError> {
    let rest = &buf[start..];
    let Some(newline) = rest
        .iter()
        .take(limits.inline_bytes_max + 1)
        .position(|&b| b == b'\n')
    else {
        if rest.len() > limits.inline_bytes_max {
            return Err(ParseError::InlineTooLong {
                max: limits.inline_bytes_max,
            });
        }
        return Ok(None);
    };
    let mut line_end = newline;
    if line_end > 0 && rest[line_end - 1] == b'\r' {
        line_end -= 1;
    }
    let mut i = 0;
    while i < line_end {
        if rest[i] == b' ' || rest[i] == b'\t' {
            i += 1;
            continue;
        }
        let word_start = i;
        while i < line_end && rest[i] != b' ' && rest[i] != b'\t' {
            i += 1;
        }
        if args.len() >= limits.args_max {
            return Err(ParseError::TooManyArgs {
                count: limits.args_max as i64 + 1,
                max: limits.args_max,
            });
        }
        args.push(start + word_start..start + i);
    }
    Ok(Some(start + newline + 1))
}

/// Encodes a command as a RESP array of bulk strings (what a client sends).
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    array_header(out, args.len());
    for arg in args {
        bulk(out, arg.as_ref());
    }
}

/// Appends a decimal integer without going through `fmt` (hot path: bulk headers).
fn push_decimal(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    let mut magnitude = value.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `+<text>\r\n`; `text` must not contain CR or LF.
pub fn simple(out: &mut Vec<u8>, text: &str) {
    debug_assert!(!text.contains(['\r', '\n']));
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `+OK\r\n`.
pub fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

/// `-<message>\r\n`; CR and LF in the message are replaced so the frame stays valid.
pub fn error(out: &mut Vec<u8>, message: &str) {
    out.push(b'-');
    out.extend(
        message
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `:<value>\r\n`.
pub fn integer(out: &mut Vec<u8>, value: i64) {
    out.push(b':');
    push_decimal(out, value);
    out.extend_from_slice(b"\r\n");
}

/// `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A bulk string or the null bulk string.
pub fn optional_bulk(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => bulk(out, bytes),
        None => null(out),
    }
}

/// `$-1\r\n` (the RESP2 null).
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*<count>\r\n`.
pub fn array_header(out: &mut Vec<u8>, count: usize) {
    out.push(b'*');
    push_decimal(out, count as i64);
    out.extend_from_slice(b"\r\n");
}

/// A bulk string built with `format!`-style arguments.
pub fn bulk_fmt(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = text.write_fmt(args);
    bulk(out, text.as_bytes());
}

/// A decoded RESP2 reply (used by clients: `starling status`, tests, the benchmark).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`.
    Simple(String),
    /// `-message`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` bytes, or `$-1` as `None`.
    Bulk(Option<Vec<u8>>),
    /// `*n` replies, or `*-1` as `None`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Appends the RESP2 encoding of this reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => simple(out, text),
            Reply::Error(message) => error(out, message),
            Reply::Integer(value) => integer(out, *value),
            Reply::Bulk(bytes) => optional_bulk(out, bytes.as_deref()),
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                array_header(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// Decodes one reply from the front of `buf`: `Ok(None)` if incomplete, else the reply
    /// and the number of bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, ParseError> {
        decode_at(buf, 0, 0)
    }
}

/// Nesting depth limit for decoded arrays (a hostile server cannot blow the stack).
const REPLY_DEPTH_MAX: usize = 32;
/// Largest bulk reply accepted (Redis' own `proto-max-bulk-len` default, 512 MiB).
const REPLY_BULK_BYTES_MAX: i64 = 512 << 20;

/// The end offset of a bulk reply of `length` bytes starting at `body`; an announced length
/// beyond `REPLY_BULK_BYTES_MAX` is an error rather than an overflowing offset.
fn reply_bulk_end(body: usize, length: i64) -> Result<usize, ParseError> {
    debug_assert!(length >= 0);
    if length > REPLY_BULK_BYTES_MAX {
        return Err(ParseError::BulkTooLarge {
            length,
            max: REPLY_BULK_BYTES_MAX as usize,
        });
    }
    Ok(body + length as usize)
}

fn decode_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply, usize)>, ParseError> {
    if depth > REPLY_DEPTH_MAX {
        return Err(ParseError::Protocol("reply nested too deeply".into()));
    }
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let line = |pos: usize| -> Option<(&[u8], usize)> {
        let rest = &buf[pos..];
        let cr = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..cr], pos + cr + 2))
    };
    let Some((text, after)) = line(pos + 1) else {
        return Ok(None);
    };
    // A simple string or error line holds no CR or LF (RESP2); `simple` cannot encode one.
    let text_string = || {
        if text.contains(&b'\r') || text.contains(&b'\n') {
            return Err(ParseError::Protocol("CR or LF inside a status line".into()));
        }
        Ok(String::from_utf8_lossy(text).into_owned())
    };
    let number = || parse_int(text).ok_or_else(|| ParseError::Protocol("invalid length".into()));
    let reply = match tag {
        b'+' => (Reply::Simple(text_string()?), after),
        b'-' => (Reply::Error(text_string()?), after),
        b':' => (Reply::Integer(number()?), after),
        b'$' => match number()? {
            n if n < 0 => (Reply::Bulk(None), after),
            n => {
                let end = reply_bulk_end(after, n)?;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ParseError::Protocol(
                        "bulk reply not followed by CRLF".into(),
                    ));
                }
                (Reply::Bulk(Some(buf[after..end].to_vec())), end + 2)
            }
        },
        b'*' => match number()? {
            n if n < 0 => (Reply::Array(None), after),
            n => {
                let mut items = Vec::new();
                let mut next = after;
                for _ in 0..n {
                    let Some((item, item_end)) = decode_at(buf, next, depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    next = item_end;
                }
                (Reply::Array(Some(items)), next)
            }
        },
        other => {
            return Err(ParseError::Protocol(format!(
                "unknown reply type '{}'",
                char::from(other)
            )));
        }
    };
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Commands = Vec<Vec<Vec<u8>>>;

    fn parse_all(buf: &[u8], limits: &Limits) -> Result<(Commands, usize), ParseError> {
        let mut commands = Vec::new();
        let mut pos = 0;
        let mut ranges = Vec::new();
        while let Some(end) = parse_command(buf, pos, limits, &mut ranges)? {
            commands.push(ranges.drain(..).map(|r| buf[r].to_vec()).collect());
            pos = end;
        }
        Ok((commands, pos))
    }

    #[test]
    fn parses_pipelined_multibulk_and_inline() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r\nPI";
        let (commands, consumed) = parse_all(input, &Limits::default()).expect("valid");
        assert_eq!(
            commands,
            vec![vec![b"GET".to_vec(), b"k".to_vec()], vec![b"PING".to_vec()]]
        );
        assert_eq!(&input[consumed..], b"*1\r\n$4\r\nPI");
    }

    #[test]
    fn refuses_oversized_bulk_and_too_many_args_by_name() {
        let limits = Limits {
            bulk_bytes_max: 4,
            args_max: 2,
            inline_bytes_max: 8,
        };
        let error = parse_all(b"*1\r\n$5\r\nhello\r\n", &limits).expect_err("too large");
        assert!(error.to_string().contains("bulk_bytes_max (4)"), "{error}");
        let error = parse_all(b"*3\r\n", &limits).expect_err("too many");
        assert!(error.to_string().contains("args_max (2)"), "{error}");
        let error = parse_all(b"aaaaaaaaaaaaaaaaa", &limits).expect_err("too long");
        assert!(error.to_string().contains("inline_bytes_max"), "{error}");
    }

    #[test]
    fn refuses_malformed_frames() {
        for input in [
            &b"*1\r\n:3\r\n"[..],
            b"*x\r\n",
            b"*1\r\n$3\r\nabcde\r\n",
            b"*1\r\n$-3\r\n",
        ] {
            assert!(
                matches!(
                    parse_all(input, &Limits::default()),
                    Err(ParseError::Protocol(_))
                ),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let endless_header = [b'*'; 64];
        assert!(parse_all(&endless_header, &Limits::default()).is_err());
    }

    /// Found by the `resp_request` fuzz target: a huge bulk length overflowed the end offset,
    /// a status line with a lone CR or LF decoded into a reply `encode` cannot write, and a
    /// bulk reply's missing CRLF went unnoticed.
    #[test]
    fn reply_decoder_rejects_hostile_replies_without_panicking() {
        for input in [
            &b"$9223372036854775807\r\n"[..],
            b"$1099511627776\r\n",
            b"+a\rb\r\n",
            b"-ERR a\nb\r\n",
            b"$3\r\nabcXY",
            b"*1\r\n$1\r\nab\r\n",
        ] {
            let result = Reply::decode(input);
            assert!(
                result.is_err(),
                "{}: {result:?}",
                String::from_utf8_lossy(input)
            );
        }
        let reply = Reply::decode(b"+a\r\r\n");
        assert!(reply.is_err(), "{reply:?}");
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(Reply::Simple),
            "[a-zA-Z0-9 ]{0,12}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(Reply::Bulk),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            proptest::option::of(proptest::collection::vec(inner, 0..6)).prop_map(Reply::Array)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn commands_round_trip_through_any_split(
            commands in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6), 1..8),
            split in 0usize..2000,
        ) {
            let mut wire = Vec::new();
            for command in &commands {
                encode_command(command, &mut wire);
            }
            // Parsing a prefix then the whole buffer (as a connection does after a second read)
            // must give exactly the encoded commands.
            let split = split % (wire.len() + 1);
            let (first, consumed) = parse_all(&wire[..split], &Limits::default()).expect("valid prefix");
            let (rest, end) = parse_all(&wire[consumed..], &Limits::default()).expect("valid rest");
            prop_assert_eq!(consumed + end, wire.len());
            let parsed: Vec<_> = first.into_iter().chain(rest).collect();
            prop_assert_eq!(parsed, commands);
        }

        #[test]
        fn replies_round_trip(reply in arb_reply()) {
            let mut wire = Vec::new();
            reply.encode(&mut wire);
            let decoded = Reply::decode(&wire).expect("valid");
            prop_assert_eq!(decoded, Some((reply, wire.len())));
            prop_assert_eq!(Reply::decode(&wire[..wire.len() - 1]).expect("valid prefix"), None);
        }

        #[test]
        fn parser_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_all(&bytes, &Limits::default());
        }
    }
}
