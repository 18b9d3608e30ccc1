//! The one error type of the crate: every variant carries the values a person needs to act.

use std::path::PathBuf;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input exceeded a configured limit; `limit` names the `Limits` field.
    #[error(
        "{limit} exceeded: {actual} > {max} (lower the input or raise Limits::{limit}, up to the hard maximum)"
    )]
    LimitExceeded {
        /// The name of the limit, e.g. `"key_bytes_max"`.
        limit: &'static str,
        /// The configured maximum.
        max: usize,
        /// The size of the offending input.
        actual: usize,
    },
    /// Stored bytes failed verification; nothing from that region is served.
    #[error(
        "corruption in {file:?} at offset {offset}: {detail} (restore this shard from a replica)"
    )]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// The byte offset where verification failed.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// The data directory's filesystem does not support `O_DIRECT` (e.g. tmpfs).
    #[error("{path:?} does not support O_DIRECT (tmpfs?): put the data dir on ext4 or xfs")]
    NoDirectIo {
        /// The probed directory.
        path: PathBuf,
    },
    /// The disk is full: the writes in flight failed; the engine stays usable.
    #[error("disk full while {context}: free space on the data dir's filesystem and retry")]
    DiskFull {
        /// What the engine was doing.
        context: String,
    },
    /// Any other I/O error.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the engine was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another engine holds the data directory.
    #[error("{path:?} is locked by another engine (one engine per data dir)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The options were rejected.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The engine was closed, or a background task failed and stopped it.
    #[error("the engine is closed")]
    Closed,
}

impl Error {
    /// Wraps an I/O error with context, classifying ENOSPC as [`Error::DiskFull`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == std::io::ErrorKind::StorageFull
            || source.kind() == std::io::ErrorKind::QuotaExceeded
        {
            return Error::DiskFull { context };
        }
        Error::Io { context, source }
    }

    /// Converts a glommio error, keeping the OS error code for ENOSPC detection.
    pub(crate) fn glommio<T>(context: impl Into<String>, err: glommio::GlommioError<T>) -> Self {
        match err {
            glommio::GlommioError::IoError(source)
            | glommio::GlommioError::EnhancedIoError { source, .. } => Self::io(context, source),
            other => Self::io(context, std::io::Error::from(other)),
        }
    }

    /// A copy for fanning one failure out to several waiters (io::Error is not Clone).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Error::LimitExceeded { limit, max, actual } => Error::LimitExceeded {
                limit,
                max: *max,
                actual: *actual,
            },
            Error::Corruption {
                file,
                offset,
                detail,
            } => Error::Corruption {
                file: file.clone(),
                offset: *offset,
                detail: detail.clone(),
            },
            Error::NoDirectIo { path } => Error::NoDirectIo { path: path.clone() },
            Error::DiskFull { context } => Error::DiskFull {
                context: context.clone(),
            },
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Locked { path } => Error::Locked { path: path.clone() },
            Error::InvalidOptions(s) => Error::InvalidOptions(s.clone()),
            Error::Closed => Error::Closed,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
