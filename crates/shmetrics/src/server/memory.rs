//! The reader's resident budget under the server's memory target: segment pages beyond
//! `--resident-budget-mib` stay mapped while the process's anonymous memory leaves room
//! for them under `--memory-target-mib`, so a directory that fits is never released and
//! faulted in again at every scrape, and a huge one keeps the floor's bound.

/// How the resident budget of each snapshot is chosen.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Bytes of segment pages that always may stay mapped (`ServerOptions::resident_budget`).
    pub(crate) floor: usize,
    /// The process's memory target (`ServerOptions::memory_target`); `None`: the floor only.
    pub(crate) target: Option<usize>,
}

impl Budget {
    /// The resident budget of the next snapshot, given the anonymous memory the process
    /// held after the previous one (`None` before the first, or where it cannot be read):
    /// what that leaves of the target, never below the floor. The previous snapshot's
    /// figure includes the merged state and the reader's index, which the next one needs
    /// again, so the budget does not count on memory a snapshot is about to take.
    pub(crate) fn next(&self, anonymous: Option<usize>) -> usize {
        match (self.target, anonymous) {
            (Some(target), Some(anonymous)) => self.floor.max(target.saturating_sub(anonymous)),
            _ => self.floor,
        }
    }
}

/// This process's anonymous resident memory in bytes (`RssAnon` of `/proc/self/status`);
/// `None` where it cannot be read.
pub(crate) fn anonymous_resident() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("RssAnon:"))?;
    let kib: usize = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_budget_is_what_the_target_leaves_never_below_the_floor() {
        let budget = Budget {
            floor: 10 * MIB,
            target: Some(48 * MIB),
        };
        assert_eq!(
            budget.next(None),
            10 * MIB,
            "before the first snapshot: the floor"
        );
        assert_eq!(budget.next(Some(12 * MIB)), 36 * MIB);
        assert_eq!(budget.next(Some(40 * MIB)), 10 * MIB);
        assert_eq!(budget.next(Some(500 * MIB)), 10 * MIB);
        let floor_only = Budget {
            floor: 10 * MIB,
            target: None,
        };
        assert_eq!(floor_only.next(Some(0)), 10 * MIB);
    }

    #[test]
    fn anonymous_memory_counts_touched_heap_pages() {
        let before = anonymous_resident().expect("/proc/self/statm");
        let mut block = vec![0u8; 64 * MIB];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        let after = anonymous_resident().expect("/proc/self/statm");
        assert!(
            after >= before + 60 * MIB,
            "64 MiB touched: {before} -> {after} bytes"
        );
        drop(std::hint::black_box(block));
    }
}
