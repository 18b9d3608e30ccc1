//! Client connections: the accept loop of a shard and the read → parse → execute → write loop.
//!
//! One read is parsed into as many commands as it holds, executed as a batch, and answered
//! with one write. **Invariants:** the read buffer never grows past `max_request_bytes`; a
//! framing error is answered after the replies of the commands before it, then the connection
//! is closed (the next frame's start is unknown); a read that arrives after shutdown began is
//! not executed (its client never sees an acknowledgement, so nothing acknowledged is lost).

use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use glommio::net::{TcpListener, TcpStream};

use crate::api::resp::{self, Limits, ParseError};
use crate::runtime::exec::{self, Batch};
use crate::runtime::session::Session;
use crate::runtime::shard::Shard;

/// Bytes asked for per read (and the initial buffer size).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Above this, an idle connection's buffers are shrunk back (a burst must not pin memory).
const BUFFER_KEEP_BYTES: usize = 1 << 20;

/// Accepts connections until the future is dropped (at shutdown).
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = shard.index, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let metrics = shard.shard_metrics();
        if !shard.node.connections.try_acquire() {
            metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
            glommio::spawn_local(refuse(stream)).detach();
            continue;
        }
        let permit = Permit(shard.node.clone());
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        metrics.connections_current.fetch_add(1, Ordering::Relaxed);
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let _permit = permit;
            if let Err(error) = serve(&shard, stream).await {
                tracing::debug!(shard = shard.index, %error, "connection ended with an error");
            }
            shard
                .shard_metrics()
                .connections_current
                .fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

/// Releases a connection slot when the connection task ends.
struct Permit(Arc<crate::runtime::NodeState>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.connections.release();
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.close().await;
}

/// Marks the shard busy while a batch executes (shutdown waits for it).
struct Busy<'a>(&'a Shard);

impl<'a> Busy<'a> {
    fn new(shard: &'a Shard) -> Self {
        shard.busy.set(shard.busy.get() + 1);
        Busy(shard)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get() - 1);
    }
}

async fn serve(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    let config = &shard.config;
    stream.set_nodelay(true)?;
    if config.idle_timeout_secs > 0 {
        stream.set_read_timeout(Some(Duration::from_secs(config.idle_timeout_secs)))?;
    }
    stream.set_write_timeout(Some(Duration::from_secs(config.write_timeout_secs.max(1))))?;
    let limits = Limits {
        bulk_bytes_max: config.max_bulk_bytes,
        args_max: config.max_args,
        inline_bytes_max: 64 * 1024,
    };
    let id = shard
        .node
        .next_connection_id
        .fetch_add(1, Ordering::Relaxed);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut session = Session::new(id, peer, config.password.is_some());
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut filled = 0;
    let mut args: Vec<Range<usize>> = Vec::new();
    let mut commands: Vec<Range<usize>> = Vec::new();
    let mut out = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        if buf.len() < filled + READ_CHUNK_BYTES {
            buf.resize(filled + READ_CHUNK_BYTES, 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 || shard.closing.get() {
            return Ok(());
        }
        let _busy = Busy::new(shard);
        shard
            .shard_metrics()
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
        filled += n;
        let (consumed, error) = parse_batch(&buf[..filled], &limits, &mut args, &mut commands);
        if !commands.is_empty() {
            let batch = Batch {
                buf: &buf[..filled],
                args: &args,
                commands: &commands,
            };
            exec::execute(shard, &mut session, &batch, &mut out).await;
        }
        let mut close = session.quit;
        if let Some(error) =
            error.or_else(|| too_large(filled - consumed, config.max_request_bytes))
        {
            shard
                .shard_metrics()
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            resp::error(&mut out, &format!("ERR {error}"));
            close = true;
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            shard
                .shard_metrics()
                .bytes_written
                .fetch_add(out.len() as u64, Ordering::Relaxed);
        }
        if close {
            return stream.close().await;
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        args.clear();
        commands.clear();
        out.clear();
        if filled == 0 && buf.len() > BUFFER_KEEP_BYTES {
            buf = vec![0u8; READ_CHUNK_BYTES];
            out = Vec::with_capacity(READ_CHUNK_BYTES);
        }
    }
}

/// Parses every complete command in `buf`; returns the bytes consumed and a framing error, if
/// one stopped the parse.
fn parse_batch(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
    commands: &mut Vec<Range<usize>>,
) -> (usize, Option<ParseError>) {
    let mut position = 0;
    loop {
        let first_arg = args.len();
        match resp::parse_command(buf, position, limits, args) {
            Ok(Some(end)) => {
                if args.len() > first_arg {
                    commands.push(first_arg..args.len());
                }
                position = end;
            }
            Ok(None) => return (position, None),
            Err(error) => return (position, Some(error)),
        }
    }
}

/// An incomplete request already larger than allowed.
fn too_large(pending_bytes: usize, max: usize) -> Option<ParseError> {
    (pending_bytes > max)
        .then(|| ParseError::Protocol(format!("request larger than max_request_bytes ({max})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_stops_at_the_first_framing_error_and_keeps_what_came_before() {
        let input = b"*1\r\n$4\r\nPING\r\n\r\n*1\r\n:4\r\n*1\r\n$4\r\nPING\r\n";
        let (mut args, mut commands) = (Vec::new(), Vec::new());
        let (consumed, error) = parse_batch(input, &Limits::default(), &mut args, &mut commands);
        assert_eq!(
            commands.len(),
            1,
            "the empty line is skipped, the bad frame stops the parse"
        );
        assert_eq!(consumed, 16);
        assert!(error.is_some());
    }
}
