//! The TCP transfer stream: pulls entries too large for a datagram (the replicator's
//! `Action::Fetch`) from the peer shard that announced them, and pages of a bulk catch-up
//! (`Action::Pull`: every entry of the partitions a shard owns, in key order).
//!
//! Shard `i` listens on TCP `gossip_port + i` (the same number as its UDP port; TCP and UDP
//! ports are separate). One request per connection: the client sends one request frame (the
//! keys, or a [`PullRequest`]), the server answers one frame per stored entry and an end frame
//! (for a pull: whether the page was cut), then closes.
//!
//! Frame: `u32 LE length` of the rest, `u8 key id`, payload, 32-byte BLAKE3 keyed MAC over
//! `cluster id ‖ direction ‖ payload` with a transfer key derived from the cluster key of that
//! id. **Invariants:** a frame longer than [`FRAME_BYTES_MAX`] is refused before any allocation;
//! nothing from a frame is used before its MAC verifies; a request lists at most
//! [`KEYS_PER_FETCH_MAX`] keys. (No replay window here: a replayed request only re-reads
//! replicated data, and responses are bound to the direction.)

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use glommio::net::{TcpListener, TcpStream};

use crate::replication::types::partition_of;
use crate::runtime::keys::ClusterKeys;
use crate::runtime::storage::{Engine, Entry, Version};

/// Largest frame (a 1 MiB value, a 4 KiB key and headers fit with room to spare).
pub const FRAME_BYTES_MAX: usize = 2 << 20;
/// Most keys in one fetch request.
pub const KEYS_PER_FETCH_MAX: usize = 4_096;
/// Connect and per-read/write timeout of a fetch.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
const MAC_BYTES: usize = 32;
const TAG_REQUEST: u8 = 1;
const TAG_ENTRY: u8 = 2;
const TAG_END: u8 = 3;
const TAG_PULL: u8 = 4;
/// End of a pull page that was cut: ask again after its last key.
const TAG_END_MORE: u8 = 5;
/// Most entries in one pull page: the engine's default batch limit, so that a page applies
/// as one batch.
pub const PULL_PAGE_ENTRIES: usize = 4_096;
/// About this many key and value bytes per pull page at most.
pub const PULL_PAGE_BYTES: usize = 8 << 20;
const TO_SERVER: u8 = 0;
const TO_CLIENT: u8 = 1;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Socket error.
    #[error("transfer I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A frame did not verify or parse.
    #[error("bad transfer frame: {0}")]
    Frame(&'static str),
    /// Socket setup error from the runtime.
    #[error("transfer socket: {0}")]
    Socket(String),
}

impl From<glommio::GlommioError<()>> for TransferError {
    fn from(error: glommio::GlommioError<()>) -> Self {
        TransferError::Socket(error.to_string())
    }
}

/// Keys and cluster id that authenticate frames.
#[derive(Clone, Debug)]
pub struct TransferAuth {
    /// Cluster id (header hash).
    pub cluster_id: u64,
    /// The cluster keys.
    pub keys: ClusterKeys,
}

impl TransferAuth {
    fn mac(&self, key_id: u8, direction: u8, payload: &[u8]) -> Option<[u8; 32]> {
        let cluster_key = self.keys.key(key_id)?;
        let key = blake3::derive_key("starling transfer stream v1", &cluster_key);
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(&self.cluster_id.to_le_bytes());
        hasher.update(&[direction]);
        hasher.update(payload);
        Some(*hasher.finalize().as_bytes())
    }

    /// Appends one sealed frame.
    pub fn seal(&self, direction: u8, payload: &[u8], out: &mut Vec<u8>) {
        let (key_id, _) = self.keys.send_key();
        let len = 1 + payload.len() + MAC_BYTES;
        assert!(len <= FRAME_BYTES_MAX, "transfer frame of {len} bytes");
        let mac = self.mac(key_id, direction, payload).unwrap_or([0; 32]);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.push(key_id);
        out.extend_from_slice(payload);
        out.extend_from_slice(&mac);
    }

    /// Verifies a frame body (everything after the length) and returns its payload.
    pub fn open<'a>(&self, direction: u8, frame: &'a [u8]) -> Result<&'a [u8], TransferError> {
        if frame.len() < 1 + MAC_BYTES {
            return Err(TransferError::Frame("frame shorter than its MAC"));
        }
        let payload = &frame[1..frame.len() - MAC_BYTES];
        let expected = self
            .mac(frame[0], direction, payload)
            .ok_or(TransferError::Frame("unknown key id"))?;
        // Constant-time compare through blake3's Hash equality.
        let found: [u8; 32] = frame[frame.len() - MAC_BYTES..]
            .try_into()
            .map_err(|_| TransferError::Frame("MAC length"))?;
        if blake3::Hash::from(expected) != blake3::Hash::from(found) {
            return Err(TransferError::Frame("MAC does not verify"));
        }
        Ok(payload)
    }
}

/// Encodes a fetch request payload.
pub fn encode_request(keys: &[Vec<u8>]) -> Vec<u8> {
    assert!(keys.len() <= KEYS_PER_FETCH_MAX);
    let mut out = vec![TAG_REQUEST];
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for key in keys {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
    }
    out
}

/// Decodes a fetch request payload.
pub fn decode_request(payload: &[u8]) -> Result<Vec<Vec<u8>>, TransferError> {
    let mut reader = Reader(payload);
    if reader.u8()? != TAG_REQUEST {
        return Err(TransferError::Frame("not a request"));
    }
    let count = reader.u32()? as usize;
    if count > KEYS_PER_FETCH_MAX {
        return Err(TransferError::Frame("too many keys"));
    }
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(reader.u16()?);
        keys.push(reader.bytes(len)?.to_vec());
    }
    reader.finish()?;
    Ok(keys)
}

/// A bulk-pull page request: the stored entries (tombstones included) of every partition `p`
/// with `p % shards == shard` (of `partitions`), in key order, strictly after `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// The cluster's partition count.
    pub partitions: u16,
    /// Shard count of the pulling node.
    pub shards: u16,
    /// The pulling shard.
    pub shard: u16,
    /// Resume after this key (the last key of the previous page).
    pub after: Option<Vec<u8>>,
}

impl PullRequest {
    /// Whether `key` belongs to the pulling shard.
    pub fn wants(&self, key: &[u8]) -> bool {
        partition_of(key, self.partitions) % self.shards == self.shard
    }
}

/// Encodes a pull request payload.
pub fn encode_pull(request: &PullRequest) -> Vec<u8> {
    let mut out = vec![TAG_PULL];
    out.extend_from_slice(&request.partitions.to_le_bytes());
    out.extend_from_slice(&request.shards.to_le_bytes());
    out.extend_from_slice(&request.shard.to_le_bytes());
    match &request.after {
        None => out.push(0),
        Some(after) => {
            out.push(1);
            out.extend_from_slice(&(after.len() as u16).to_le_bytes());
            out.extend_from_slice(after);
        }
    }
    out
}

/// Decodes a pull request payload (counts checked: no division by zero, shard in range).
pub fn decode_pull(payload: &[u8]) -> Result<PullRequest, TransferError> {
    let mut reader = Reader(payload);
    if reader.u8()? != TAG_PULL {
        return Err(TransferError::Frame("not a pull request"));
    }
    let (partitions, shards, shard) = (reader.u16()?, reader.u16()?, reader.u16()?);
    if partitions == 0 || shards == 0 || shard >= shards {
        return Err(TransferError::Frame(
            "pull request shard layout out of range",
        ));
    }
    let after = match reader.u8()? {
        0 => None,
        1 => {
            let len = usize::from(reader.u16()?);
            Some(reader.bytes(len)?.to_vec())
        }
        _ => return Err(TransferError::Frame("pull request cursor flag")),
    };
    reader.finish()?;
    Ok(PullRequest {
        partitions,
        shards,
        shard,
        after,
    })
}

/// Encodes one entry payload.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let value_len = entry.value.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(24 + entry.key.len() + value_len);
    out.push(TAG_ENTRY);
    out.extend_from_slice(&(entry.key.len() as u16).to_le_bytes());
    out.extend_from_slice(&entry.key);
    out.push(u8::from(entry.value.is_some()));
    out.extend_from_slice(&(value_len as u32).to_le_bytes());
    if let Some(value) = &entry.value {
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&entry.version.hlc.to_le_bytes());
    out.extend_from_slice(&entry.version.node.to_le_bytes());
    out
}

/// Decodes one entry payload (`None` for the end frame).
pub fn decode_entry(payload: &[u8]) -> Result<Option<Entry>, TransferError> {
    match decode_frame(payload)? {
        Frame::Entry(entry) => Ok(Some(entry)),
        Frame::End { more: false } => Ok(None),
        Frame::End { more: true } => Err(TransferError::Frame("page end in a fetch")),
    }
}

/// A response frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One stored entry.
    Entry(Entry),
    /// The end of the response; `more`: a pull page was cut.
    End {
        /// More entries may follow after the page's last key.
        more: bool,
    },
}

/// Decodes one response payload.
pub fn decode_frame(payload: &[u8]) -> Result<Frame, TransferError> {
    let mut reader = Reader(payload);
    match reader.u8()? {
        TAG_END => return reader.finish().map(|()| Frame::End { more: false }),
        TAG_END_MORE => return reader.finish().map(|()| Frame::End { more: true }),
        TAG_ENTRY => {}
        _ => return Err(TransferError::Frame("unexpected frame tag")),
    }
    let key_len = usize::from(reader.u16()?);
    let key = reader.bytes(key_len)?.to_vec();
    let live = reader.u8()?;
    let value_len = reader.u32()? as usize;
    let value = reader.bytes(value_len)?.to_vec();
    let hlc = reader.u64()?;
    let node = reader.u64()?;
    reader.finish()?;
    if live > 1 || (live == 0 && value_len > 0) || key.is_empty() {
        return Err(TransferError::Frame("malformed entry"));
    }
    Ok(Frame::Entry(Entry {
        key,
        value: (live == 1).then_some(value),
        version: Version { hlc, node },
    }))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, len: usize) -> Result<&'a [u8], TransferError> {
        if self.0.len() < len {
            return Err(TransferError::Frame("truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TransferError> {
        self.bytes(N)?
            .try_into()
            .map_err(|_| TransferError::Frame("truncated"))
    }
    fn u8(&mut self) -> Result<u8, TransferError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, TransferError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, TransferError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, TransferError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn finish(&self) -> Result<(), TransferError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(TransferError::Frame("trailing bytes"))
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, TransferError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if !(1 + MAC_BYTES..=FRAME_BYTES_MAX).contains(&len) {
        return Err(TransferError::Frame("frame length out of range"));
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

/// Pulls `keys` from the peer shard at `addr`; returns the entries it has.
pub async fn fetch(
    addr: SocketAddr,
    keys: &[Vec<u8>],
    auth: &TransferAuth,
) -> Result<(Vec<Entry>, u64), TransferError> {
    let mut stream = TcpStream::connect_timeout(addr, TRANSFER_TIMEOUT).await?;
    stream.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
    stream.set_write_timeout(Some(TRANSFER_TIMEOUT))?;
    // Larger requests are cut; the rest is left to the next anti-entropy round.
    let keys = &keys[..keys.len().min(KEYS_PER_FETCH_MAX)];
    let mut request = Vec::new();
    auth.seal(TO_SERVER, &encode_request(keys), &mut request);
    stream.write_all(&request).await?;
    let mut entries = Vec::new();
    let mut bytes = 0u64;
    loop {
        let frame = read_frame(&mut stream).await?;
        bytes += frame.len() as u64 + 4;
        let payload = auth.open(TO_CLIENT, &frame)?;
        match decode_entry(payload)? {
            Some(entry) if keys.contains(&entry.key) => entries.push(entry),
            Some(_) => return Err(TransferError::Frame("entry that was not asked for")),
            None => return Ok((entries, bytes)),
        }
        if entries.len() > keys.len() {
            return Err(TransferError::Frame("more entries than keys"));
        }
    }
}

/// Pulls one page of `request` from the peer shard at `addr`: its entries, whether more may
/// follow, and the bytes received. Every entry is checked to be one the request asked for,
/// in strictly increasing key order after the cursor.
pub async fn pull(
    addr: SocketAddr,
    request: &PullRequest,
    auth: &TransferAuth,
) -> Result<(Vec<Entry>, bool, u64), TransferError> {
    let mut stream = TcpStream::connect_timeout(addr, TRANSFER_TIMEOUT).await?;
    stream.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
    stream.set_write_timeout(Some(TRANSFER_TIMEOUT))?;
    let mut out = Vec::new();
    auth.seal(TO_SERVER, &encode_pull(request), &mut out);
    stream.write_all(&out).await?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut bytes = 0u64;
    loop {
        let frame = read_frame(&mut stream).await?;
        bytes += frame.len() as u64 + 4;
        match decode_frame(auth.open(TO_CLIENT, &frame)?)? {
            Frame::Entry(entry) => {
                let previous = entries.last().map(|e| e.key.as_slice());
                let floor = previous.or(request.after.as_deref());
                if !request.wants(&entry.key)
                    || floor.is_some_and(|floor| entry.key.as_slice() <= floor)
                {
                    return Err(TransferError::Frame(
                        "pull entry out of order or not asked for",
                    ));
                }
                if entries.len() >= PULL_PAGE_ENTRIES {
                    return Err(TransferError::Frame("pull page too long"));
                }
                entries.push(entry);
            }
            Frame::End { more } => return Ok((entries, more, bytes)),
        }
    }
}

/// Serves fetches on `listener` from `engine` until the listener fails.
pub async fn serve(
    listener: TcpListener,
    engine: impl Fn() -> Option<Rc<Engine>> + 'static,
    auth: Rc<TransferAuth>,
    served_bytes: impl Fn(u64) + 'static,
) {
    let engine = Rc::new(engine);
    let served_bytes = Rc::new(served_bytes);
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "transfer accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (engine, auth, served_bytes) = (engine.clone(), auth.clone(), served_bytes.clone());
        glommio::spawn_local(async move {
            match serve_one(stream, &*engine, &auth).await {
                Ok(bytes) => served_bytes(bytes),
                Err(error) => tracing::debug!(%error, "transfer request failed"),
            }
        })
        .detach();
    }
}

async fn serve_one(
    mut stream: TcpStream,
    engine: &dyn Fn() -> Option<Rc<Engine>>,
    auth: &TransferAuth,
) -> Result<u64, TransferError> {
    stream.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
    stream.set_write_timeout(Some(TRANSFER_TIMEOUT))?;
    let frame = read_frame(&mut stream).await?;
    let payload = auth.open(TO_SERVER, &frame)?;
    if payload.first() == Some(&TAG_PULL) {
        let request = decode_pull(payload)?;
        let engine = engine().ok_or(TransferError::Frame("shard is shutting down"))?;
        return serve_pull(stream, &engine, &request, auth).await;
    }
    let keys = decode_request(payload)?;
    let engine = engine().ok_or(TransferError::Frame("shard is shutting down"))?;
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for key in &keys {
        if let Ok(Some(entry)) = engine.get(key) {
            auth.seal(TO_CLIENT, &encode_entry(&entry), &mut out);
            if out.len() >= 256 * 1024 {
                bytes += out.len() as u64;
                stream.write_all(&out).await?;
                out.clear();
            }
        }
    }
    auth.seal(TO_CLIENT, &[TAG_END], &mut out);
    bytes += out.len() as u64;
    stream.write_all(&out).await?;
    stream.close().await?;
    Ok(bytes)
}

async fn serve_pull(
    mut stream: TcpStream,
    engine: &Engine,
    request: &PullRequest,
    auth: &TransferAuth,
) -> Result<u64, TransferError> {
    // The page is read synchronously (no await while the engine is borrowed), then sent.
    let (page, more) = engine
        .entries_page(
            request.after.as_deref(),
            &|key| request.wants(key),
            PULL_PAGE_ENTRIES,
            PULL_PAGE_BYTES,
        )
        .map_err(|error| TransferError::Socket(format!("reading the page: {error}")))?;
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for entry in &page {
        auth.seal(TO_CLIENT, &encode_entry(entry), &mut out);
        if out.len() >= 256 * 1024 {
            bytes += out.len() as u64;
            stream.write_all(&out).await?;
            out.clear();
        }
    }
    auth.seal(
        TO_CLIENT,
        &[if more { TAG_END_MORE } else { TAG_END }],
        &mut out,
    );
    bytes += out.len() as u64;
    stream.write_all(&out).await?;
    stream.close().await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> TransferAuth {
        TransferAuth {
            cluster_id: 7,
            keys: ClusterKeys::derived("test"),
        }
    }

    #[test]
    fn frames_round_trip_and_tampering_is_detected() {
        let auth = auth();
        let entry = Entry {
            key: b"k".to_vec(),
            value: Some(vec![9; 20_000]),
            version: Version { hlc: 5, node: 6 },
        };
        let mut out = Vec::new();
        auth.seal(TO_CLIENT, &encode_entry(&entry), &mut out);
        let frame = &out[4..];
        let payload = auth.open(TO_CLIENT, frame).expect("verifies");
        assert_eq!(decode_entry(payload).expect("decodes"), Some(entry));
        assert!(auth.open(TO_SERVER, frame).is_err(), "direction is bound");
        let mut tampered = frame.to_vec();
        tampered[3] ^= 1;
        assert!(auth.open(TO_CLIENT, &tampered).is_err());
        let other = TransferAuth {
            cluster_id: 8,
            keys: ClusterKeys::derived("test"),
        };
        assert!(other.open(TO_CLIENT, frame).is_err(), "cluster is bound");
    }

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        let keys = vec![b"a".to_vec(), vec![7; 300]];
        assert_eq!(decode_request(&encode_request(&keys)).expect("ok"), keys);
        assert!(decode_request(&[TAG_REQUEST, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_entry(&[TAG_ENTRY, 1]).is_err());
        assert_eq!(decode_entry(&[TAG_END]).expect("end"), None);
        assert!(
            decode_entry(&[TAG_END_MORE]).is_err(),
            "a fetch has no pages"
        );
    }

    #[test]
    fn pull_requests_round_trip_and_bad_layouts_are_refused() {
        for after in [None, Some(b"cursor".to_vec())] {
            let request = PullRequest {
                partitions: 256,
                shards: 4,
                shard: 3,
                after,
            };
            assert_eq!(decode_pull(&encode_pull(&request)).expect("ok"), request);
        }
        let bad = |partitions, shards, shard| {
            let request = PullRequest {
                partitions,
                shards,
                shard,
                after: None,
            };
            decode_pull(&encode_pull(&request)).is_err()
        };
        assert!(bad(0, 1, 0) && bad(256, 0, 0) && bad(256, 2, 2));
        assert!(
            decode_pull(&[TAG_PULL, 1, 0, 1, 0, 0, 0, 2]).is_err(),
            "cursor flag"
        );
        assert_eq!(
            decode_frame(&[TAG_END_MORE]).expect("end"),
            Frame::End { more: true }
        );
    }
}
