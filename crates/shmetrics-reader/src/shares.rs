//! Sharing the live segments between fold threads that start at times nobody controls: the
//! calling thread owns every segment at first and folds them in order; each further thread,
//! when it starts, takes the back half (by bytes) of what the busiest thread has left and
//! folds that in order. What each thread folds stays a contiguous run of segments, so the
//! runs join in age order exactly as one thread's fold (`merge::fold_live`). A thread the
//! system starts late (a vCPU woken from idle can take a millisecond) takes only half of
//! what is left then; one that never starts takes nothing.

use std::ops::Range;

use shmetrics_layout::sync::{AtomicU64, Ordering};

/// One thread's share of the segments: the next one it folds (`front`) and the end of its
/// run (`limit`), in one word, so that claiming a segment and splitting the share are one
/// compare-and-swap each.
pub(crate) struct Share(AtomicU64);

fn pack(front: u32, limit: u32) -> u64 {
    (u64::from(front) << 32) | u64::from(limit)
}

fn unpack(word: u64) -> (usize, usize) {
    ((word >> 32) as usize, (word & 0xFFFF_FFFF) as usize)
}

impl Share {
    /// A share of the segments `run` (indices below `u32::MAX`).
    pub(crate) fn new(run: Range<u32>) -> Self {
        Self(AtomicU64::new(pack(run.start, run.end)))
    }

    /// A share of nothing yet (a thread that has not taken one).
    pub(crate) fn empty() -> Self {
        Self::new(0..0)
    }

    /// Gives this share the segments `run`, taken from another (`Share::split`). Only its
    /// owner calls it, while the share is empty.
    pub(crate) fn set(&self, run: Range<usize>) {
        // SYNC POINT fold-share: relaxed; a share only hands out indices, each exactly once
        // by the atomicity of the word; the segments and the folds are published by the
        // threads' spawn and join.
        self.0
            .store(pack(run.start as u32, run.end as u32), Ordering::Relaxed);
    }

    /// Claims the next segment of this share for its owner; `None` once none is left.
    pub(crate) fn claim(&self) -> Option<usize> {
        // SYNC POINT fold-share: relaxed, as in `set`.
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let (front, limit) = unpack(word);
            if front >= limit {
                return None;
            }
            let next = pack(front as u32 + 1, limit as u32);
            // SYNC POINT fold-share: relaxed, as in `set`.
            match (self.0).compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(front),
                Err(now) => word = now,
            }
        }
    }

    /// Bytes of the segments not claimed yet; `starts[i]` is where segment `i` starts in
    /// the running total of sizes (`starts.len()` is one more than the segments).
    pub(crate) fn left(&self, starts: &[usize]) -> usize {
        // SYNC POINT fold-share: relaxed, as in `set`.
        let (front, limit) = unpack(self.0.load(Ordering::Relaxed));
        match front < limit {
            true => starts[limit] - starts[front],
            false => 0,
        }
    }

    /// Takes the back half (by bytes, at least one segment) of the segments not claimed
    /// yet, when it is at least `min_bytes`: the run taken, which the owner of this share
    /// will never claim.
    pub(crate) fn split(&self, starts: &[usize], min_bytes: usize) -> Option<Range<usize>> {
        // SYNC POINT fold-share: relaxed, as in `set`.
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let (front, limit) = unpack(word);
            if front >= limit {
                return None;
            }
            let split = middle_segment(&starts[front..=limit]) + front;
            if starts[limit] - starts[split] < min_bytes {
                return None;
            }
            let kept = pack(front as u32, split as u32);
            // SYNC POINT fold-share: relaxed, as in `set`.
            match (self.0).compare_exchange_weak(word, kept, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(split..limit),
                Err(now) => word = now,
            }
        }
    }
}

/// Where to split the segments starting at `starts` (the last entry is where the last one
/// ends): the segment whose start is nearest the middle of their bytes (on a tie the
/// earlier: the owner is busy with a segment it claimed already), never the first of two or
/// more (the owner keeps at least one), the only one when there is one.
fn middle_segment(starts: &[usize]) -> usize {
    let count = starts.len() - 1;
    let (first, end) = (starts[0], starts[count]);
    let middle = first + (end - first) / 2;
    let at = starts[..count].partition_point(|&s| s < middle);
    let nearest = match at {
        0 => 0,
        _ if at == count || middle - starts[at - 1] <= starts[at] - middle => at - 1,
        _ => at,
    };
    nearest.clamp(1.min(count - 1), count - 1)
}

/// Running totals of `sizes`: where each segment starts, and the total last.
pub(crate) fn starts(sizes: &[usize]) -> Vec<usize> {
    let mut total = 0;
    let mut starts = Vec::with_capacity(sizes.len() + 1);
    starts.push(0);
    for &size in sizes {
        total += size;
        starts.push(total);
    }
    starts
}

/// Takes, for a thread that starts now, the back half of what the busiest of `shares` has
/// left (at least `min_bytes`), and makes it the share `mine`: the run it then folds.
pub(crate) fn take_share(
    mine: &Share,
    shares: &[Share],
    starts: &[usize],
    min_bytes: usize,
) -> Option<Range<usize>> {
    // Another thread may split the busiest first: try the next busiest then, at most once
    // per share.
    let mut tried = vec![false; shares.len()];
    loop {
        let (i, busiest) = (shares.iter().enumerate())
            .filter(|(i, _)| !tried[*i])
            .max_by_key(|(_, share)| share.left(starts))?;
        tried[i] = true;
        if let Some(run) = busiest.split(starts, min_bytes) {
            mine.set(run.clone());
            return Some(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(share: &Share) -> Vec<usize> {
        std::iter::from_fn(|| share.claim()).collect()
    }

    #[test]
    fn a_share_is_claimed_in_order_once() {
        let share = Share::new(2..5);
        assert_eq!(claims(&share), [2, 3, 4]);
        assert_eq!(share.claim(), None);
        assert!(claims(&Share::empty()).is_empty());
    }

    #[test]
    fn a_split_takes_the_back_half_by_bytes() {
        let starts = starts(&[10, 10, 10, 10]);
        assert_eq!(starts, [0, 10, 20, 30, 40]);
        let share = Share::new(0..4);
        assert_eq!(share.split(&starts, 0), Some(2..4));
        assert_eq!(claims(&share), [0, 1]);
        // One big segment first: the rest is the back half.
        let starts = super::starts(&[60, 10, 10, 10]);
        let share = Share::new(0..4);
        assert_eq!(share.split(&starts, 0), Some(1..4));
        // A tie: the earlier split, the larger part taken.
        let share = Share::new(1..4);
        assert_eq!(share.split(&starts, 0), Some(2..4));
        // One segment left: taken whole (its owner is busy with the one before).
        let share = Share::new(0..2);
        assert_eq!(share.claim(), Some(0));
        assert_eq!(share.split(&starts, 0), Some(1..2));
        assert_eq!(share.claim(), None);
        // Below the minimum, or nothing left: nothing taken.
        let share = Share::new(1..4);
        assert_eq!(share.split(&starts, 21), None);
        assert_eq!(share.split(&starts, 20), Some(2..4));
        assert_eq!(Share::empty().split(&starts, 0), None);
    }

    #[test]
    fn the_split_leaves_the_owner_a_segment_and_takes_one() {
        for sizes in [
            vec![1],
            vec![5, 1],
            vec![1, 5],
            vec![0, 0, 0],
            vec![3, 0, 9, 1, 1],
        ] {
            let starts = starts(&sizes);
            let at = middle_segment(&starts);
            assert!(at < sizes.len(), "{sizes:?}");
            assert!(at >= 1 || sizes.len() == 1, "{sizes:?}: {at}");
        }
    }

    #[test]
    fn threads_starting_at_any_time_fold_every_segment_once_in_runs() {
        let sizes: Vec<usize> = (0..200).map(|i| 1 + (i * 7919) % 13).collect();
        let starts = starts(&sizes);
        for helpers in [1, 3, 7] {
            let shares: Vec<Share> = std::iter::once(Share::new(0..200))
                .chain((0..helpers).map(|_| Share::empty()))
                .collect();
            let runs: Vec<Vec<usize>> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..=helpers)
                    .map(|k| {
                        let (shares, starts) = (&shares, &starts);
                        s.spawn(move || {
                            if k > 0 {
                                take_share(&shares[k], shares, starts, 0);
                            }
                            let mut run = Vec::new();
                            while let Some(i) = shares[k].claim() {
                                run.push(i);
                                std::hint::spin_loop();
                            }
                            run
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            // Each thread's segments are a contiguous run; together, every segment once.
            let mut all: Vec<usize> = runs.concat();
            for run in runs.iter().filter(|r| !r.is_empty()) {
                assert!(run.windows(2).all(|w| w[1] == w[0] + 1), "{run:?}");
            }
            all.sort_unstable();
            assert_eq!(all, (0..200).collect::<Vec<_>>());
        }
    }
}
