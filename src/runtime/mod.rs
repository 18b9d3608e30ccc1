//! The glommio runtime: one pinned executor per core, cross-shard channels, sockets and files.
