//! Start-up checks that turn the usual deployment mistakes into one actionable message each:
//! a kernel without a usable io_uring, too little locked memory, a data dir on a filesystem
//! without O_DIRECT, a port already in use.
//!
//! The checks read `/proc` and probe with plain `std` calls so they run before any executor
//! exists (glommio's own failures for the same causes are much less readable).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Oldest kernel Starling supports (io_uring features glommio relies on).
pub const KERNEL_MIN: (u32, u32) = (5, 8);
/// Locked memory glommio needs per executor at least, in bytes.
pub const MEMLOCK_PER_SHARD_MIN: u64 = 512 * 1024;

/// A start-up check that failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The kernel is older than [`KERNEL_MIN`].
    #[error("Linux {found} is too old: Starling needs io_uring from Linux {}.{} or newer; upgrade the kernel", KERNEL_MIN.0, KERNEL_MIN.1)]
    KernelTooOld {
        /// The running kernel's release string.
        found: String,
    },
    /// RLIMIT_MEMLOCK is below what the shards need.
    #[error(
        "RLIMIT_MEMLOCK is {limit_kib} KiB but {shards} shards need at least {needed_kib} KiB of locked memory: \
         raise it with `ulimit -l unlimited` (or `ulimit -l {needed_kib}`), `LimitMEMLOCK=infinity` in the systemd unit, \
         or `--ulimit memlock=-1` for docker; or start fewer shards with --shards"
    )]
    MemlockTooLow {
        /// Current soft limit.
        limit_kib: u64,
        /// Needed.
        needed_kib: u64,
        /// Shards asked for.
        shards: usize,
    },
    /// The data dir does not support O_DIRECT.
    #[error(
        "data dir {path} is on a filesystem without O_DIRECT support (tmpfs or overlayfs?): \
         put it on ext4 or xfs with --data-dir"
    )]
    NoDirectIo {
        /// The data dir.
        path: PathBuf,
    },
    /// The data dir cannot be created or written.
    #[error("data dir {path} is not usable: {source}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A port is taken.
    #[error(
        "{what} address {addr} is in use (another starling or redis-server?): stop that process or choose another address with {flag}"
    )]
    PortInUse {
        /// "client" or "admin".
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The flag that changes it.
        flag: &'static str,
    },
    /// A port cannot be bound for another reason.
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        /// "client" or "admin".
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Parses "6.1.0-18-amd64" into (6, 1).
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Refuses kernels older than [`KERNEL_MIN`].
pub fn check_kernel() -> Result<(), CheckError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match parse_kernel_release(&release) {
        Some(version) if version >= KERNEL_MIN => Ok(()),
        // Unknown format: let glommio try rather than refuse a kernel we cannot parse.
        None => Ok(()),
        Some(_) => Err(CheckError::KernelTooOld {
            found: release.trim().to_string(),
        }),
    }
}

/// The soft RLIMIT_MEMLOCK in bytes from a `/proc/<pid>/limits` text (`None` = unlimited).
pub fn parse_memlock(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line
        .trim_start_matches("Max locked memory")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// Refuses an RLIMIT_MEMLOCK below `shards` × [`MEMLOCK_PER_SHARD_MIN`].
pub fn check_memlock(shards: usize) -> Result<(), CheckError> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some(limit) = parse_memlock(&limits) else {
        return Ok(());
    };
    let needed = MEMLOCK_PER_SHARD_MIN * shards as u64;
    if limit < needed {
        return Err(CheckError::MemlockTooLow {
            limit_kib: limit / 1024,
            needed_kib: needed / 1024,
            shards,
        });
    }
    Ok(())
}

/// Creates the data dir and checks a file in it can be opened with O_DIRECT.
pub fn check_data_dir(dir: &Path) -> Result<(), CheckError> {
    let data_dir_error = |source| CheckError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(data_dir_error)?;
    let probe = dir.join(".odirect-probe");
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    match opened {
        Ok(_) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Err(CheckError::NoDirectIo {
            path: dir.to_path_buf(),
        }),
        Err(error) => Err(data_dir_error(error)),
    }
}

/// Checks nobody listens on `addr` (a plain bind without SO_REUSEPORT fails if anyone does).
pub fn check_port(
    what: &'static str,
    addr: SocketAddr,
    flag: &'static str,
) -> Result<(), CheckError> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            Err(CheckError::PortInUse { what, addr, flag })
        }
        Err(source) => Err(CheckError::Bind { what, addr, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_strings_parse() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v782\n"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.4.0-150-generic"), Some((5, 4)));
        assert!(parse_kernel_release("5.4.0") < Some(KERNEL_MIN));
        assert_eq!(parse_kernel_release("weird"), None);
    }

    #[test]
    fn memlock_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_memlock(text), Some(8 << 20));
        let unlimited =
            "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_memlock(unlimited), None);
    }

    #[test]
    fn memlock_error_says_how_to_raise_it() {
        let message = CheckError::MemlockTooLow {
            limit_kib: 64,
            needed_kib: 1024,
            shards: 2,
        }
        .to_string();
        assert!(
            message.contains("ulimit -l") && message.contains("LimitMEMLOCK=infinity"),
            "{message}"
        );
    }

    #[test]
    fn a_taken_port_is_reported_with_the_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let error = check_port("client", addr, "--client-addr").expect_err("in use");
        assert!(error.to_string().contains("--client-addr"), "{error}");
    }

    #[test]
    fn a_disk_data_dir_passes_the_o_direct_probe() {
        let dir = crate::test_tempdir();
        check_data_dir(&dir.path().join("data")).expect("ext4 supports O_DIRECT");
    }
}
