//! Who this process is (pid, start time, a never-reused instance id) and what time it is.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// The identity fields shared by all segments of one process incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessIdentity {
    pub(crate) pid: u32,
    pub(crate) instance_id: u64,
    pub(crate) start_time_ticks: u64,
}

impl ProcessIdentity {
    /// The identity of the calling process, with a fresh random instance id.
    pub(crate) fn current() -> Self {
        let pid = nix::unistd::getpid().as_raw() as u32;
        let start_time_ticks = start_time_ticks().unwrap_or(0);
        let mut h = RandomState::new().build_hasher();
        h.write_u32(pid);
        h.write_u64(start_time_ticks);
        h.write_u64(now_nanos());
        h.write_usize(&h as *const _ as usize);
        Self {
            pid,
            instance_id: h.finish(),
            start_time_ticks,
        }
    }
}

/// Nanoseconds since the Unix epoch (through the vDSO: no system call).
#[inline]
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Field 22 of `/proc/self/stat`: process start time in clock ticks since boot.
fn start_time_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_of_this_process() {
        let a = ProcessIdentity::current();
        let b = ProcessIdentity::current();
        assert_eq!(a.pid, std::process::id());
        assert!(a.start_time_ticks > 0);
        assert_eq!(a.start_time_ticks, b.start_time_ticks);
        assert_ne!(a.instance_id, b.instance_id);
        assert!(now_nanos() > 1_600_000_000_000_000_000);
    }
}
