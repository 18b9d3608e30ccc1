//! Which CPUs the shards are pinned to: only CPUs this process may run on.
//!
//! glommio's `MaxSpread` placement spreads executors over every online CPU of the machine and
//! pins them there, which ignores the affinity the node was started with: under
//! `taskset -c 2,3`, or in a container whose cgroup cpuset grants CPUs 4–5 (Kubernetes' static
//! CPU manager), shards would land on CPU 0 and 1, beside the load the operator moved away, or
//! fail to pin at all. So the placement is built from the intersection of the machine's online
//! CPUs and the process's affinity mask (read from `/proc`, no unsafe code).

use glommio::{CpuSet, PoolPlacement};

/// The CPUs in a kernel CPU list such as `0-3,8,10-11` (the `Cpus_allowed_list` format);
/// `None` if the text is not one.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let (first, last): (usize, usize) = match part.split_once('-') {
            Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        // A bound on nonsense (kernels support at most a few thousand CPUs).
        if first > last || last >= CPUS_MAX {
            return None;
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Highest CPU number accepted from `/proc` (Linux's `NR_CPUS` is at most 8,192).
const CPUS_MAX: usize = 1 << 13;

/// The CPUs the calling thread may run on (its affinity mask), or `None` if `/proc` does not
/// say.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    allowed_cpus_in(&std::fs::read_to_string("/proc/thread-self/status").ok()?)
}

/// The CPUs a `/proc/<pid>/task/<tid>/status` text allows (its `Cpus_allowed_list`), or `None`
/// if it has no such line.
pub fn allowed_cpus_in(status: &str) -> Option<Vec<usize>> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list)
}

/// Where `shards` executors go on a process allowed `cpus` CPUs (what
/// `available_parallelism` reports): one per allowed CPU, spread over cores and packages, or
/// unpinned when there are more shards than CPUs.
pub fn placement(shards: usize, cpus: usize) -> PoolPlacement {
    if shards > cpus {
        return PoolPlacement::Unbound(shards);
    }
    let Ok(online) = CpuSet::online() else {
        // glommio reports the same failure itself, with its own message.
        return PoolPlacement::MaxSpread(shards, None);
    };
    let set = match allowed_cpus() {
        Some(allowed) => online.filter(|location| allowed.binary_search(&location.cpu).is_ok()),
        None => online,
    };
    if set.len() < shards {
        // The mask and the topology disagree (CPUs offline, a quota below the mask): let the
        // scheduler place the executors within the mask rather than pin outside it.
        tracing::warn!(
            shards,
            usable = set.len(),
            "fewer usable CPUs than shards: executors are not pinned"
        );
        return PoolPlacement::Unbound(shards);
    }
    PoolPlacement::MaxSpread(shards, Some(set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("3,1-2,2"), Some(vec![1, 2, 3]));
        for bad in ["", "a", "3-1", "1-", "1,,2", "0-100000"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn this_thread_has_an_affinity_mask() {
        let allowed = allowed_cpus().expect("Cpus_allowed_list in /proc");
        assert!(!allowed.is_empty());
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(cpus <= allowed.len(), "{cpus} > {allowed:?}");
    }
}
