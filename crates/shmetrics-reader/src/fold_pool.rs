//! Fold threads kept between scrapes, and jobs a late thread never starts.
//!
//! A snapshot that folds on several threads (`Reader::set_fold_threads`) used to start its
//! fold threads and join them at every scrape: 50–250 µs a scrape on a VM whose idle vCPUs
//! halt, a tenth of a warm scrape of 128 live writers; and a thread the system started late
//! (after 1.5 ms, on this project's VM, once its vCPU had halted) held the snapshot until it
//! had started and ended, though the calling thread had folded everything by then
//! (docs/performance.md, "The live scrape, fourth round"). The pool keeps up to
//! `threads − 1` workers, started as snapshots first need them (one of fewer live segments
//! uses fewer of them) and blocked between snapshots, until the reader's thread count
//! changes or the reader is dropped. [`Crew::run`] posts one job to each worker a snapshot
//! uses and runs the calling thread's part; a job that no worker has picked up
//! by then is taken back, unstarted, so the snapshot never waits for a thread to wake.
//!
//! A forked child inherits the pool but not its threads: it leaves the pool alone (never
//! used nor dropped: its locks may have been held at the fork) and starts its own. Where no
//! thread can be started the calling thread folds everything.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the calling thread, done with its part, spins while workers finish theirs
/// before it blocks. Parts are balanced by bytes, so the wait is usually tens of
/// microseconds: less than waking from a block (on a VM whose idle vCPU halts, 50–100 µs).
const SPIN_FOR_WORKERS: Duration = Duration::from_micros(500);

/// The fold threads of one reader; see the module docs.
#[derive(Default)]
pub(crate) struct FoldPool {
    current: Option<Pool>,
}

impl FoldPool {
    /// Up to `workers` threads for one snapshot: the pool's first ones, started if fewer
    /// are running (a pool only grows; a forked child starts a pool of its own). `None`
    /// when no thread can be started.
    pub(crate) fn get(&mut self, workers: usize) -> Option<Crew<'_>> {
        let pid = std::process::id();
        if (self.current.as_ref()).is_some_and(|p| p.pid != pid) {
            self.clear();
        }
        let pool = self.current.get_or_insert_with(|| Pool {
            pid,
            workers: Vec::new(),
        });
        while pool.workers.len() < workers {
            match Worker::start() {
                Some(worker) => pool.workers.push(worker),
                None => break,
            }
        }
        let crew = &pool.workers[..workers.min(pool.workers.len())];
        (!crew.is_empty()).then_some(Crew(crew))
    }

    /// Ends the threads (each is idle between snapshots, so it ends at once), or, in a
    /// forked child, leaves the parent's pool alone.
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

/// Started fold threads.
struct Pool {
    /// The process that started them.
    pid: u32,
    workers: Vec<Worker>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &self.workers {
            *w.slot.lock() = State::Exit;
            w.slot.wake.notify_all();
        }
        for w in &mut self.workers {
            if let Some(thread) = w.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The workers one snapshot uses.
pub(crate) struct Crew<'p>(&'p [Worker]);

impl Crew<'_> {
    /// How many threads run jobs.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Runs `job(i)` on worker `i` of each that picks it up while `main` runs on the
    /// calling thread, and returns when `main` has returned and every job started has
    /// ended; a job no worker had started by then is taken back and never runs. A panic of
    /// `main` or of a job is resumed on the calling thread once no job runs.
    pub(crate) fn run(&self, job: &(dyn Fn(usize) + Sync), main: impl FnOnce()) {
        // SAFETY: only the lifetime is erased. A worker calls the job only after taking it
        // (Posted -> Running, under its slot's lock), and `Finish` does not let this frame
        // return or unwind before each worker's job is taken back unstarted (Posted -> Idle,
        // under the same lock) or has ended (Done): the job outlives every call of it.
        let job = unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(job)
        };
        for (index, w) in self.0.iter().enumerate() {
            w.slot.finished.store(false, Ordering::Relaxed);
            *w.slot.lock() = State::Posted { job, index };
            w.slot.wake.notify_all();
        }
        let finish = Finish(self.0);
        main();
        let panic = finish.wait();
        std::mem::forget(finish);
        if let Some(panic) = panic {
            resume_unwind(panic);
        }
    }
}

/// Waits for the workers' jobs of one [`Crew::run`], also when the calling thread unwinds.
struct Finish<'p>(&'p [Worker]);

impl Finish<'_> {
    /// Takes back each job not started, waits for those running, and returns a job's panic.
    fn wait(&self) -> Option<Box<dyn Any + Send>> {
        let start = Instant::now();
        let mut panic = None;
        for w in self.0 {
            let mut state = w.slot.lock();
            if matches!(*state, State::Running) {
                drop(state);
                // SYNC POINT fold-pool-finished: acquire, a hint to stop spinning (the slot's
                // lock, taken next, publishes the job's results).
                while !w.slot.finished.load(Ordering::Acquire) && start.elapsed() < SPIN_FOR_WORKERS
                {
                    std::hint::spin_loop();
                }
                state = w.slot.lock();
                while matches!(*state, State::Running) {
                    state = (w.slot.wake.wait(state)).unwrap_or_else(PoisonError::into_inner);
                }
            }
            match std::mem::replace(&mut *state, State::Idle) {
                State::Done(Some(p)) => panic = panic.or(Some(p)),
                State::Exit => *state = State::Exit,
                _ => {}
            }
        }
        panic
    }
}

impl Drop for Finish<'_> {
    /// The calling thread unwinds: no job may outlive its frame.
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

/// One fold thread and the slot it takes jobs from.
struct Worker {
    slot: Arc<Slot>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a thread, or `None` (logged) when the system refuses.
    fn start() -> Option<Self> {
        let slot = Arc::new(Slot::default());
        let theirs = Arc::clone(&slot);
        let thread = std::thread::Builder::new()
            .name("shmetrics-fold".to_owned())
            .spawn(move || theirs.serve());
        match thread {
            Ok(thread) => Some(Self {
                slot,
                thread: Some(thread),
            }),
            Err(e) => {
                log::debug!("cannot start a fold thread ({e}); the others fold its part");
                None
            }
        }
    }
}

/// A worker's state, shared with the calling thread of [`Crew::run`].
#[derive(Default)]
enum State {
    /// No job (none posted, or taken back, or its end seen).
    #[default]
    Idle,
    /// A job the worker has not taken yet, and the worker's index among those posted to.
    Posted {
        job: &'static (dyn Fn(usize) + Sync),
        index: usize,
    },
    /// The worker runs the job.
    Running,
    /// The job ended, with its panic if it panicked.
    Done(Option<Box<dyn Any + Send>>),
    /// The pool is dropped: the worker ends.
    Exit,
}

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    /// Signals a change of `state` (to the worker: a job or the exit; to the calling
    /// thread: the end of a job).
    wake: Condvar,
    /// Set when the job ended: what the calling thread spins on before it blocks.
    finished: AtomicBool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker's loop: take a job, run it, report its end; until the exit.
    fn serve(&self) {
        loop {
            let mut state = self.lock();
            let (job, index) = loop {
                match std::mem::take(&mut *state) {
                    State::Posted { job, index } => break (job, index),
                    State::Exit => return,
                    other => {
                        *state = other;
                        state = (self.wake.wait(state)).unwrap_or_else(PoisonError::into_inner);
                    }
                }
            };
            *state = State::Running;
            drop(state);
            let outcome = catch_unwind(AssertUnwindSafe(|| job(index)));
            let mut state = self.lock();
            if matches!(*state, State::Exit) {
                return; // The pool is dropped (not while a job runs, but never hang on it).
            }
            *state = State::Done(outcome.err());
            drop(state);
            // SYNC POINT fold-pool-finished: release, after the job's writes (the lock just
            // released publishes them too).
            self.finished.store(true, Ordering::Release);
            self.wake.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A pool with `n` workers started.
    fn pool(n: usize) -> FoldPool {
        let mut pool = FoldPool::default();
        assert_eq!(pool.get(n).map(|c| c.len()), Some(n));
        pool
    }

    /// Spins (bounded) until `done` holds.
    fn until(done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() && start.elapsed() < Duration::from_secs(10) {
            std::thread::yield_now();
        }
    }

    /// The thread ids of the pool's workers.
    fn thread_ids(pool: &FoldPool) -> Vec<std::thread::ThreadId> {
        let workers = &pool.current.as_ref().unwrap().workers;
        (workers.iter())
            .map(|w| w.thread.as_ref().unwrap().thread().id())
            .collect()
    }

    #[test]
    fn jobs_run_on_the_workers_beside_main_over_borrowed_data() {
        let mut pool = pool(3);
        for round in 0..20 {
            let seen = Mutex::new(Vec::new());
            let calls = AtomicUsize::new(0);
            let job = |index: usize| {
                calls.fetch_add(1, Ordering::Relaxed);
                let name = std::thread::current().name().map(str::to_owned);
                seen.lock().unwrap().push((index, name));
            };
            let mut main_ran = false;
            pool.get(3).unwrap().run(&job, || {
                // In step: every worker picks the job up before main ends (a job not
                // picked up by then would be taken back).
                until(|| calls.load(Ordering::Relaxed) == 3);
                main_ran = true;
            });
            assert!(main_ran);
            // Every job that started has ended and published its write by the return, each
            // worker with its own index.
            let mut seen = seen.into_inner().unwrap();
            seen.sort();
            let name = Some("shmetrics-fold".to_owned());
            let expected: Vec<_> = (0..3).map(|i| (i, name.clone())).collect();
            assert_eq!(seen, expected, "round {round}");
        }
    }

    #[test]
    fn a_job_no_worker_has_started_is_taken_back_and_never_runs() {
        // A worker slot that no thread serves: its job can only be taken back.
        let slot = Arc::new(Slot::default());
        let workers = [Worker {
            slot: Arc::clone(&slot),
            thread: None,
        }];
        let calls = AtomicUsize::new(0);
        let job = |_| {
            calls.fetch_add(1, Ordering::Relaxed);
        };
        Crew(&workers).run(&job, || {});
        assert!(matches!(*slot.lock(), State::Idle), "taken back");
        assert_eq!(calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_job_that_panics_panics_the_caller_once_every_job_ended() {
        let mut pool = pool(2);
        let ended = AtomicUsize::new(0);
        let job = |_| {
            std::thread::sleep(Duration::from_millis(20));
            ended.fetch_add(1, Ordering::Relaxed);
            panic!("job");
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (pool.get(2).unwrap()).run(&job, || until(|| ended.load(Ordering::Relaxed) > 0));
        }));
        let panic = outcome.expect_err("the job's panic reaches the caller");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"job"));
        // The workers survive their job's panic and run the next one.
        let calls = AtomicUsize::new(0);
        let job = |_| {
            calls.fetch_add(1, Ordering::Relaxed);
        };
        (pool.get(2).unwrap()).run(&job, || until(|| calls.load(Ordering::Relaxed) == 2));
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_caller_that_panics_waits_for_the_jobs_running_on_its_data() {
        let mut pool = pool(1);
        let (started, unwinding) = (AtomicBool::new(false), AtomicBool::new(false));
        let written = Mutex::new(0);
        let job = |_| {
            started.store(true, Ordering::Relaxed);
            // Still running once the caller's unwinding has begun (past the panic hook).
            until(|| unwinding.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(20));
            *written.lock().unwrap() = 7;
        };
        /// Marks the start of the unwinding through the caller's part.
        struct Unwinding<'f>(&'f AtomicBool);
        impl Drop for Unwinding<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pool.get(1).unwrap().run(&job, || {
                let _mark = Unwinding(&unwinding);
                until(|| started.load(Ordering::Relaxed));
                panic!("main");
            });
        }));
        assert!(outcome.is_err());
        // The job had ended (and written) before the panic left `run`.
        assert_eq!(*written.lock().unwrap(), 7);
    }

    #[test]
    fn a_pool_grows_to_what_a_snapshot_asks_and_clear_ends_the_threads() {
        let mut pool = pool(1);
        let first = thread_ids(&pool);
        assert_eq!(pool.get(3).map(|c| c.len()), Some(3));
        let three = thread_ids(&pool);
        assert_eq!(three[..1], first[..], "the first thread kept");
        // Fewer: the first of the same threads.
        assert_eq!(pool.get(2).map(|c| c.len()), Some(2));
        assert_eq!(thread_ids(&pool), three);
        pool.clear();
        assert!(pool.current.is_none());
    }

    #[test]
    fn a_worker_whose_job_ends_after_the_pool_is_dropped_ends_too() {
        // Not reachable through `Crew::run` (its jobs end before it returns), but a worker
        // must never overwrite the exit and wait for a job that cannot come.
        static RELEASE: AtomicBool = AtomicBool::new(false);
        fn wait_for_release(_: usize) {
            until(|| RELEASE.load(Ordering::Relaxed));
        }
        let job: &'static (dyn Fn(usize) + Sync) = &wait_for_release;
        let mut pool = pool(1);
        let slot = Arc::clone(&pool.current.as_ref().unwrap().workers[0].slot);
        *slot.lock() = State::Posted { job, index: 0 };
        slot.wake.notify_all();
        until(|| matches!(*slot.lock(), State::Running));
        let (dropped, wait_drop) = std::sync::mpsc::channel();
        let dropper = std::thread::spawn(move || {
            pool.clear(); // Sets the exit while the job runs, then joins the worker.
            let _ = dropped.send(());
        });
        until(|| matches!(*slot.lock(), State::Exit));
        RELEASE.store(true, Ordering::Relaxed);
        let ended = wait_drop.recv_timeout(Duration::from_secs(10));
        assert!(ended.is_ok(), "the worker ended");
        dropper.join().unwrap();
    }
}
