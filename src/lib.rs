//! Starling: a leaderless, fully replicated, eventually consistent metadata store.
//!
//! One `starling` process runs per host, one shard per core. The pieces, from the bottom up:
//! [`reconcile`] (set reconciliation, pure), [`gossip`] (membership and wire format, sans-IO),
//! [`replication`] (clocks, dissemination and anti-entropy, sans-IO), [`runtime`] (the glommio
//! shards that own sockets, files and clocks), [`api`] (RESP and admin HTTP) and [`config`].
//! ARCHITECTURE.md at the repository root is the map.

pub mod api;
pub mod config;
pub mod gossip;
pub mod reconcile;
pub mod replication;
pub mod runtime;

/// A temporary directory for unit tests, under the crate's `target/` (a real disk filesystem,
/// unlike a tmpfs `/tmp`, so O_DIRECT works).
#[cfg(test)]
pub(crate) fn test_tempdir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("unit-tmp");
    std::fs::create_dir_all(&base).expect("create target/unit-tmp");
    tempfile::tempdir_in(base).expect("tempdir")
}
