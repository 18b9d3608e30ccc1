//! Cluster identity and keys: the 64-bit cluster id of the datagram header, the key file
//! (`starling keygen`), and the keyring the gossip wire format seals and opens with.
//!
//! Key file format (text, one item per line, `#` comments): `<id> <64 hex digits>` for every
//! accepted key (id 0..=255, at most [`KEYS_MAX`]), and optionally `send <id>` to choose the key
//! that seals outgoing datagrams (default: the last key listed, so appending a new key and
//! restarting every node, then removing the old one, rotates keys). Without a key file the key
//! is derived from the cluster id: that protects against mixing clusters by accident, not
//! against an attacker.
//!
//! `[cluster] encrypt = true` ([`ClusterKeys::with_encryption`]) makes the keyring seal gossip
//! datagrams with XChaCha20-Poly1305 and accept only encrypted ones (see
//! [`crate::gossip::wire`]); it changes nothing in the key file, and key rotation works the
//! same in both forms.

use std::path::{Path, PathBuf};

use crate::gossip::wire::{KEYS_MAX, Keyring};

/// The cluster id in datagram headers: a hash of the cluster name.
pub fn cluster_id_of(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// The cluster keys of this node: raw keys by id and the id used to send.
#[derive(Clone)]
pub struct ClusterKeys {
    keys: Vec<(u8, [u8; 32])>,
    send_key_id: u8,
    encrypt: bool,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        formatter
            .debug_struct("ClusterKeys")
            .field("key_ids", &ids)
            .field("send_key_id", &self.send_key_id)
            .field("encrypt", &self.encrypt)
            .finish()
    }
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error(
        "key file {path}, line {line}: {message} (expected `<id> <64 hex digits>` or `send <id>`; `starling keygen` writes one)"
    )]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl ClusterKeys {
    /// The key derived from the cluster name (no key file).
    pub fn derived(cluster_name: &str) -> ClusterKeys {
        let key = blake3::derive_key(
            "starling cluster key from cluster id v1",
            cluster_name.as_bytes(),
        );
        ClusterKeys {
            keys: vec![(0, key)],
            send_key_id: 0,
            encrypt: false,
        }
    }

    /// Reads a key file.
    pub fn from_file(path: &Path) -> Result<ClusterKeys, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ClusterKeys::parse(&text).map_err(|(line, message)| KeyError::Syntax {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// Parses key file text; `Err((line, message))`.
    pub fn parse(text: &str) -> Result<ClusterKeys, (usize, String)> {
        let mut keys: Vec<(u8, [u8; 32])> = Vec::new();
        let mut send = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            let (Some(first), Some(second), None) = (words.next(), words.next(), words.next())
            else {
                return Err((line, "expected two words".into()));
            };
            if first == "send" {
                send = Some(parse_id(second).map_err(|m| (line, m))?);
                continue;
            }
            let id = parse_id(first).map_err(|m| (line, m))?;
            let key = parse_key(second).map_err(|m| (line, m))?;
            if keys.iter().any(|(existing, _)| *existing == id) {
                return Err((line, format!("key id {id} listed twice")));
            }
            keys.push((id, key));
        }
        if keys.is_empty() || keys.len() > KEYS_MAX {
            return Err((
                0,
                format!(
                    "the file must list 1..={KEYS_MAX} keys, it lists {}",
                    keys.len()
                ),
            ));
        }
        let send_key_id = match send {
            Some(id) if keys.iter().any(|(k, _)| *k == id) => id,
            Some(id) => return Err((0, format!("send key {id} is not listed"))),
            None => keys[keys.len() - 1].0,
        };
        Ok(ClusterKeys {
            keys,
            send_key_id,
            encrypt: false,
        })
    }

    /// These keys with gossip encryption on or off (`[cluster] encrypt`; default off).
    pub fn with_encryption(mut self, encrypt: bool) -> ClusterKeys {
        self.encrypt = encrypt;
        self
    }

    /// Whether gossip datagrams are encrypted.
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// The gossip keyring (every key accepted, the send key seals, encrypted if configured).
    pub fn keyring(&self) -> Keyring {
        let (send_id, send_key) = self.send_key();
        let mut ring = Keyring::new(send_id, send_key).with_encryption(self.encrypt);
        for (id, key) in &self.keys {
            // At most KEYS_MAX distinct ids (checked when parsed): insert cannot fail.
            let inserted = ring.insert(*id, *key);
            debug_assert!(inserted.is_ok());
        }
        ring
    }

    /// The send key id and key.
    pub fn send_key(&self) -> (u8, [u8; 32]) {
        let found = self.keys.iter().find(|(id, _)| *id == self.send_key_id);
        let (id, key) = found.copied().unwrap_or(self.keys[0]);
        (id, key)
    }

    /// The key with id `id`, if accepted.
    pub fn key(&self, id: u8) -> Option<[u8; 32]> {
        self.keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, key)| *key)
    }
}

fn parse_id(word: &str) -> Result<u8, String> {
    word.parse()
        .map_err(|_| format!("key id {word:?} is not a number in 0..=255"))
}

fn parse_key(word: &str) -> Result<[u8; 32], String> {
    let bytes = word.as_bytes();
    if bytes.len() != 64 {
        return Err(format!("a key is 64 hex digits, found {}", bytes.len()));
    }
    let mut key = [0u8; 32];
    for (slot, pair) in key.iter_mut().zip(bytes.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).map_err(|_| "key is not hex".to_string())?;
        *slot = u8::from_str_radix(text, 16).map_err(|_| "key is not hex".to_string())?;
    }
    Ok(key)
}

/// A new key file line `<id> <64 hex>` with a random key (from /dev/urandom).
pub fn keygen_line(id: u8) -> std::io::Result<String> {
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("{id} {hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_chooses_the_send_key() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        let keys = ClusterKeys::parse(&format!("# keys\n1 {a}\n2 {b}\n")).expect("valid");
        assert_eq!(keys.send_key().0, 2, "the last key sends by default");
        let keys = ClusterKeys::parse(&format!("1 {a}\n2 {b}\nsend 1\n")).expect("valid");
        assert_eq!(keys.send_key(), (1, [0x11; 32]));
        assert_eq!(keys.keyring().key_ids().count(), 2);
        assert!(!keys.keyring().encrypts(), "plaintext unless configured");
        let keys = keys.with_encryption(true);
        assert!(keys.encrypts() && keys.keyring().encrypts());
        assert_eq!(keys.keyring().send_key_id(), 1, "same keys either way");
    }

    #[test]
    fn refuses_malformed_files_with_the_line() {
        assert_eq!(ClusterKeys::parse("1 abc\n").err().map(|e| e.0), Some(1));
        let a = "11".repeat(32);
        assert!(ClusterKeys::parse(&format!("1 {a}\nsend 3\n")).is_err());
        assert!(ClusterKeys::parse(&format!("1 {a}\n1 {a}\n")).is_err());
        assert!(ClusterKeys::parse("").is_err());
    }

    #[test]
    fn keygen_lines_parse_back() {
        let line = keygen_line(7).expect("urandom");
        let keys = ClusterKeys::parse(&line).expect("valid");
        assert_eq!(keys.send_key().0, 7);
        assert_ne!(cluster_id_of("a"), cluster_id_of("b"));
    }
}
