//! Fold threads kept between scrapes.
//!
//! A snapshot that folds on several threads (`Reader::set_fold_threads`) used to start its
//! fold threads and join them at every scrape. Starting one and waiting for it to end cost
//! 50–250 µs a scrape on a VM whose idle vCPUs halt, a tenth of a warm scrape of 128 live
//! writers (docs/performance.md, "Fold threads kept between scrapes"). The pool keeps them:
//! `threads − 1` workers (the calling thread folds too), started by the first snapshot that
//! folds on several threads and kept, idle and blocked, until the thread count changes or
//! the reader is dropped.
//!
//! A forked child inherits the pool but not its threads: the pool is then left alone (never
//! used nor dropped: its threads' locks may have been held at the fork) and a new one is
//! started. Where threads cannot be started, the calling thread folds everything.

/// The fold threads of one reader; see the module docs.
#[derive(Default)]
pub(crate) struct FoldPool {
    current: Option<Pool>,
}

struct Pool {
    /// The process that started the threads.
    pid: u32,
    workers: usize,
    pool: rayon_core::ThreadPool,
}

impl FoldPool {
    /// A pool of `workers` threads, started (or restarted, for another count or in a forked
    /// child) if needed; `None` when threads cannot be started.
    pub(crate) fn get(&mut self, workers: usize) -> Option<&rayon_core::ThreadPool> {
        let pid = std::process::id();
        if (self.current.as_ref()).is_some_and(|p| p.pid != pid || p.workers != workers) {
            self.clear();
        }
        if self.current.is_none() {
            let built = rayon_core::ThreadPoolBuilder::new()
                .num_threads(workers)
                .thread_name(|_| "shmetrics-fold".to_owned())
                .build();
            match built {
                Ok(pool) => {
                    self.current = Some(Pool { pid, workers, pool });
                }
                Err(e) => log::debug!("cannot start fold threads ({e}); folding on one"),
            }
        }
        self.current.as_ref().map(|p| &p.pool)
    }

    /// Ends the threads (dropping a pool signals them to finish; it does not wait for them),
    /// or, in a forked child, leaves the parent's pool alone.
    pub(crate) fn clear(&mut self) {
        match self.current.take() {
            Some(p) if p.pid == std::process::id() => drop(p),
            Some(p) => std::mem::forget(p),
            None => {}
        }
    }
}

impl Drop for FoldPool {
    fn drop(&mut self) {
        self.clear();
    }
}
