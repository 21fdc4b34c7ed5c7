//! Fold threads kept between scrapes, and jobs a late thread never starts.
//!
//! A snapshot that folds on several threads (`Reader::set_fold_threads`) used to start its
//! fold threads and join them at every scrape: 50–250 µs a scrape on a VM whose idle vCPUs
//! halt, a tenth of a warm scrape of 128 live writers; and a thread the system started late
//! (after 1.5 ms, on this project's VM, once its vCPU had halted) held the snapshot until it
//! had started and ended, though the calling thread had folded everything by then
//! (docs/performance.md, "The live scrape, fourth round"). The pool keeps `threads − 1`
//! workers, started by the first snapshot that folds on several threads and blocked between
//! snapshots, until the thread count changes or the reader is dropped. [`Pool::run`] posts
//! one job to each and runs the calling thread's part; a job that no worker has picked up
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
    /// A pool of `workers` threads, started (or restarted, for another count or in a forked
    /// child) if needed; `None` when no thread can be started.
    pub(crate) fn get(&mut self, workers: usize) -> Option<&Pool> {
        let pid = std::process::id();
        if (self.current.as_ref()).is_some_and(|p| p.pid != pid || p.asked != workers) {
            self.clear();
        }
        if self.current.is_none() {
            let started: Vec<Worker> = (0..workers).map_while(Worker::start).collect();
            if !started.is_empty() {
                self.current = Some(Pool {
                    pid,
                    asked: workers,
                    workers: started,
                });
            }
        }
        self.current.as_ref()
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
pub(crate) struct Pool {
    /// The process that started them.
    pid: u32,
    /// How many were asked for (some may not have started).
    asked: usize,
    workers: Vec<Worker>,
}

impl Pool {
    /// How many threads run jobs.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs `job` on each worker that picks it up while `main` runs on the calling thread,
    /// and returns when `main` has returned and every job started has ended; a job no worker
    /// had started by then is taken back and never runs. A panic of `main` or of a job is
    /// resumed on the calling thread once no job runs.
    pub(crate) fn run(&self, job: &(dyn Fn() + Sync), main: impl FnOnce()) {
        // SAFETY: only the lifetime is erased. A worker calls the job only after taking it
        // (Posted -> Running, under its slot's lock), and `Finish` does not let this frame
        // return or unwind before each worker's job is taken back unstarted (Posted -> Idle,
        // under the same lock) or has ended (Done): the job outlives every call of it.
        let job =
            unsafe { std::mem::transmute::<&(dyn Fn() + Sync), &'static (dyn Fn() + Sync)>(job) };
        for w in &self.workers {
            w.slot.finished.store(false, Ordering::Relaxed);
            *w.slot.lock() = State::Posted(job);
            w.slot.wake.notify_all();
        }
        let finish = Finish(&self.workers);
        main();
        let panic = finish.wait();
        std::mem::forget(finish);
        if let Some(panic) = panic {
            resume_unwind(panic);
        }
    }
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

/// Waits for the workers' jobs of one [`Pool::run`], also when the calling thread unwinds.
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
    fn start(_: usize) -> Option<Self> {
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Idle),
            wake: Condvar::new(),
            finished: AtomicBool::new(false),
        });
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

/// A worker's state, shared with the calling thread of [`Pool::run`].
enum State {
    /// No job (none posted, or taken back, or its end seen).
    Idle,
    /// A job the worker has not taken yet.
    Posted(&'static (dyn Fn() + Sync)),
    /// The worker runs the job.
    Running,
    /// The job ended, with its panic if it panicked.
    Done(Option<Box<dyn Any + Send>>),
    /// The pool is dropped: the worker ends.
    Exit,
}

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
            let job = loop {
                match std::mem::replace(&mut *state, State::Idle) {
                    State::Posted(job) => break job,
                    State::Exit => return,
                    other => {
                        *state = other;
                        state = (self.wake.wait(state)).unwrap_or_else(PoisonError::into_inner);
                    }
                }
            };
            *state = State::Running;
            drop(state);
            let outcome = catch_unwind(AssertUnwindSafe(job));
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

    /// A pool of `n` workers.
    fn pool(n: usize) -> FoldPool {
        let mut pool = FoldPool::default();
        assert_eq!(pool.get(n).map(Pool::len), Some(n));
        pool
    }

    #[test]
    fn jobs_run_on_the_workers_beside_main_over_borrowed_data() {
        let mut pool = pool(3);
        for round in 0..20 {
            let seen = Mutex::new(Vec::new());
            let calls = AtomicUsize::new(0);
            let job = || {
                calls.fetch_add(1, Ordering::Relaxed);
                let name = std::thread::current().name().map(str::to_owned);
                seen.lock().unwrap().push(name);
            };
            let mut main_ran = false;
            pool.get(3).unwrap().run(&job, || {
                // In step: every worker picks the job up before main ends (a job not
                // picked up by then would be taken back).
                let start = Instant::now();
                while calls.load(Ordering::Relaxed) < 3 && start.elapsed() < Duration::from_secs(10)
                {
                    std::thread::yield_now();
                }
                main_ran = true;
            });
            assert!(main_ran);
            // Every job that started has ended and published its write by the return.
            let seen = seen.into_inner().unwrap();
            assert_eq!(
                seen,
                vec![Some("shmetrics-fold".to_owned()); 3],
                "round {round}"
            );
        }
    }

    #[test]
    fn a_job_no_worker_has_started_is_taken_back_and_never_runs() {
        // A worker slot that no thread serves: its job can only be taken back.
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Idle),
            wake: Condvar::new(),
            finished: AtomicBool::new(false),
        });
        let pool = Pool {
            pid: std::process::id(),
            asked: 1,
            workers: vec![Worker {
                slot: Arc::clone(&slot),
                thread: None,
            }],
        };
        let calls = AtomicUsize::new(0);
        let job = || {
            calls.fetch_add(1, Ordering::Relaxed);
        };
        pool.run(&job, || {});
        assert!(matches!(*slot.lock(), State::Idle), "taken back");
        assert_eq!(calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_job_that_panics_panics_the_caller_once_every_job_ended() {
        let mut pool = pool(2);
        let ended = AtomicUsize::new(0);
        let job = || {
            std::thread::sleep(Duration::from_millis(20));
            ended.fetch_add(1, Ordering::Relaxed);
            panic!("job");
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pool.get(2).unwrap().run(&job, || {
                let start = Instant::now();
                while ended.load(Ordering::Relaxed) == 0
                    && start.elapsed() < Duration::from_secs(10)
                {
                    std::thread::yield_now();
                }
            });
        }));
        let panic = outcome.expect_err("the job's panic reaches the caller");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"job"));
        // The workers survive their job's panic and run the next one.
        let calls = AtomicUsize::new(0);
        let job = || {
            calls.fetch_add(1, Ordering::Relaxed);
        };
        pool.get(2).unwrap().run(&job, || {
            let start = Instant::now();
            while calls.load(Ordering::Relaxed) < 2 && start.elapsed() < Duration::from_secs(10) {
                std::thread::yield_now();
            }
        });
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_caller_that_panics_waits_for_the_jobs_running_on_its_data() {
        let mut pool = pool(1);
        let (started, unwinding) = (AtomicBool::new(false), AtomicBool::new(false));
        let written = Mutex::new(0);
        let job = || {
            started.store(true, Ordering::Relaxed);
            // Still running once the caller's unwinding has begun (past the panic hook).
            let start = Instant::now();
            while !unwinding.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10) {
                std::thread::yield_now();
            }
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
                let start = Instant::now();
                while !started.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10)
                {
                    std::thread::yield_now();
                }
                panic!("main");
            });
        }));
        assert!(outcome.is_err());
        // The job had ended (and written) before the panic left `run`.
        assert_eq!(*written.lock().unwrap(), 7);
    }

    #[test]
    fn another_count_or_clear_ends_the_threads() {
        let mut pool = pool(2);
        let first: Vec<_> = (pool.current.as_ref().unwrap().workers.iter())
            .map(|w| w.thread.as_ref().unwrap().thread().id())
            .collect();
        assert_eq!(pool.get(1).map(Pool::len), Some(1));
        let second = pool.current.as_ref().unwrap().workers[0]
            .thread
            .as_ref()
            .unwrap();
        assert!(!first.contains(&second.thread().id()));
        pool.clear();
        assert!(pool.current.is_none());
    }
}
