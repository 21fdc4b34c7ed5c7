//! Surviving a segment file that shrinks under its mapping.
//!
//! A mapped file that is truncated (or whose pages tmpfs cannot allocate) raises `SIGBUS`
//! at the next access to a page beyond its end, which kills the process. Segment files are
//! owned by other processes, so a reader cannot prevent it: `truncate -s 4096` on a live
//! writer's segment used to take `serve` down at its next scrape. Instead, every mapping a
//! reader reads through is [`watch`]ed: a process-wide `SIGBUS` handler that finds the fault
//! address inside a watched range replaces the faulting page with a private page of zeros
//! (`mmap(MAP_FIXED | MAP_ANONYMOUS)`), marks the range as faulted and returns; the
//! interrupted load reads zeros and the caller, which checks [`Watch::faulted`] after
//! reading, discards what it read and drops the segment. A fault anywhere else goes to the
//! handler the process had before (or the default action, which ends the process as it
//! would have). See `docs/concurrency.md`, "Truncated files".
//!
//! The handler is async-signal-safe: it reads an immutable table of ranges through one
//! atomic pointer, sets an atomic flag and calls `mmap`, a plain system call. The table is
//! replaced whole when a range is added or removed (rare: when a segment is opened or
//! dropped), and the old one is freed only once no handler is running (a count of handlers
//! in flight, checked after the swap). The registration lock is held across `fork()`
//! ([`hold_across_fork`]), so a child never inherits it held.

// Under Miri no handler is installed (it cannot run signal handlers), so the handler's
// parts are unused there.
#![cfg_attr(miri, allow(dead_code))]

use std::cell::RefCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, PoisonError};

/// How a watched mapping is used, and so what replaces a page that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only (a reader's mapping): the page reads as zeros.
    Read,
    /// Read and written (a writer's own segment): the page becomes private zeros that take
    /// the writes, which no one else sees.
    ReadWrite,
}

impl Access {
    fn prot(self) -> libc::c_int {
        match self {
            Access::Read => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// One watched range: `[start, end)`, its protection and its flag.
struct Range {
    start: usize,
    end: usize,
    prot: libc::c_int,
    flag: Arc<AtomicBool>,
}

/// An immutable, sorted table the handler searches: start, end, protection, flag.
struct Table {
    ranges: Vec<(usize, usize, libc::c_int, *const AtomicBool)>,
}

/// The table in force (null: none yet).
static TABLE: AtomicPtr<Table> = AtomicPtr::new(ptr::null_mut());
/// Handlers running now.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Every watched range; the table is built from it. Only registration takes this lock,
/// never the handler; the forking thread holds it across `fork()` (see [`hold_across_fork`]).
static RANGES: Mutex<Vec<Range>> = Mutex::new(Vec::new());
/// Registers the fork handlers once.
static FORK_HANDLERS: Once = Once::new();

thread_local! {
    /// The range lock, held by the forking thread from the prepare handler until the parent
    /// or child handler drops it.
    static HELD: RefCell<Option<MutexGuard<'static, Vec<Range>>>> = const { RefCell::new(None) };
}
/// The `SIGBUS` action the process had before ours, and the page size.
static PREVIOUS: OnceLock<(libc::sigaction, usize)> = OnceLock::new();

/// A watched mapping: while it lives, a `SIGBUS` inside it replaces the faulting page with
/// zeros instead of ending the process. Dropping it stops watching (drop it before the
/// mapping is unmapped).
#[derive(Debug)]
pub struct Watch {
    start: usize,
    flag: Arc<AtomicBool>,
}

impl Watch {
    /// Whether a page of the range faulted (and now reads as zeros) since it was watched.
    pub fn faulted(&self) -> bool {
        // SYNC POINT fault-flag: acquire; pairs with the handler's release.
        self.flag.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut ranges = RANGES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = ranges
            .iter()
            .position(|r| r.start == self.start && Arc::ptr_eq(&r.flag, &self.flag))
        {
            let removed = ranges.remove(i);
            publish(&ranges);
            // The table no longer names the flag and no handler reads an older table.
            drop(removed);
        }
    }
}

/// Watches `len` bytes at `start` (a mapping of a file, used as `access` says) for
/// `SIGBUS`. Installs the handler on first use.
pub fn watch(start: *const u8, len: usize, access: Access) -> Watch {
    install();
    let flag = Arc::new(AtomicBool::new(false));
    let start = start as usize;
    let mut ranges = RANGES.lock().unwrap_or_else(PoisonError::into_inner);
    ranges.push(Range {
        start,
        end: start.saturating_add(len),
        prot: access.prot(),
        flag: Arc::clone(&flag),
    });
    publish(&ranges);
    Watch { start, flag }
}

/// Replaces the table with one built from `ranges`, then frees the old one once no handler
/// can be reading it.
fn publish(ranges: &[Range]) {
    let mut sorted: Vec<(usize, usize, libc::c_int, *const AtomicBool)> = ranges
        .iter()
        .map(|r| (r.start, r.end, r.prot, Arc::as_ptr(&r.flag)))
        .collect();
    sorted.sort_unstable_by_key(|r| r.0);
    let new = Box::into_raw(Box::new(Table { ranges: sorted }));
    // SYNC POINT fault-table: seqcst swap, then seqcst loads of the handler count: a handler
    // that counted itself after this load finds the new table (one total order).
    let old = TABLE.swap(new, Ordering::SeqCst);
    while IN_HANDLER.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
    if !old.is_null() {
        // SAFETY: `old` came from `Box::into_raw` in an earlier `publish`, is no longer in
        // `TABLE`, and no handler that could have loaded it is still running (checked
        // above), so this is its only owner.
        drop(unsafe { Box::from_raw(old) });
    }
}

/// Holds the range lock across every `fork()` of this process from now on, so that a child
/// never inherits it held by a thread of the parent that does not exist in the child (the
/// child would hang at its first [`watch`], such as the first segment its reader opens).
/// Idempotent; [`watch`] calls it.
///
/// Code that takes locks of its own across `fork()` and may call [`watch`] while holding
/// them calls this first, then registers its own handlers: `fork()` runs prepare handlers in
/// the reverse order of registration, so its locks are taken before this one, in the order
/// its own code takes them.
#[cfg(not(miri))]
pub fn hold_across_fork() {
    FORK_HANDLERS.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions that do not unwind.
        let rc = unsafe {
            libc::pthread_atfork(
                Some(prepare_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
        if rc != 0 {
            log::warn!(
                "pthread_atfork failed ({rc}): a child forked while a segment is being opened \
                 could hang at its first segment"
            );
        }
    });
}

/// Miri cannot fork: nothing is registered there.
#[cfg(miri)]
pub fn hold_across_fork() {}

extern "C" fn prepare_fork() {
    let guard = RANGES.lock().unwrap_or_else(PoisonError::into_inner);
    HELD.with(|h| *h.borrow_mut() = Some(guard));
}

extern "C" fn after_fork_in_parent() {
    drop(HELD.with(|h| h.borrow_mut().take()));
}

extern "C" fn after_fork_in_child() {
    // A handler that was running on another thread of the parent does not exist here, and
    // this thread is in `fork()`, not in a handler: none runs, and `publish` must not wait
    // for one. SYNC POINT fault-child-count: relaxed; only this thread exists.
    IN_HANDLER.store(0, Ordering::Relaxed);
    drop(HELD.with(|h| h.borrow_mut().take()));
}

/// Miri cannot run signal handlers: nothing is installed there.
#[cfg(miri)]
fn install() {}

/// Installs the handler once, keeping the previous action to chain to.
#[cfg(not(miri))]
fn install() {
    hold_across_fork();
    PREVIOUS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        // SAFETY: an all-zero sigaction is a valid value of this plain C struct.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: an all-zero sigaction is a valid value of this plain C struct.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to valid sigaction values for the duration of the call;
        // the handler is an `extern "C"` function with the SA_SIGINFO signature.
        let installed = unsafe { libc::sigaction(libc::SIGBUS, &action, &mut previous) };
        if installed != 0 {
            log::warn!(
                "cannot install the SIGBUS handler ({}): a segment truncated under the reader \
                 would end this process",
                std::io::Error::last_os_error()
            );
        }
        (previous, page)
    });
}

/// The `SIGBUS` handler. Async-signal-safe: atomics, a table search, `mmap`, `sigaction`.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let info_ref = unsafe { &*info };
    // SAFETY: for SIGBUS the kernel fills the fault address.
    let addr = unsafe { info_ref.si_addr() } as usize;
    let table = TABLE.load(Ordering::SeqCst);
    let mut handled = false;
    if !table.is_null() {
        // SAFETY: a published table is freed only after `IN_HANDLER` is seen at zero after
        // it was replaced; this handler counted itself before loading it.
        let ranges = unsafe { &(*table).ranges };
        let i = ranges.partition_point(|r| r.0 <= addr);
        if let Some(&(start, end, prot, flag)) = i.checked_sub(1).and_then(|i| ranges.get(i))
            && addr >= start
            && addr < end
        {
            let page = PREVIOUS.get().map_or(4096, |p| p.1);
            let page_start = addr & !(page - 1);
            // SAFETY: the page lies inside a mapping this process made and watches (its
            // owner checks the flag before trusting what it read, and unmaps it later as a
            // whole); replacing it with private zeros changes nothing else.
            let mapped = unsafe {
                libc::mmap(
                    page_start as *mut libc::c_void,
                    page,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                // SAFETY: the flag is kept alive by the range list until after this table is
                // no longer read by any handler.
                // SYNC POINT fault-flag: release; the reader acquires it after its reads.
                unsafe { &*flag }.store(true, Ordering::Release);
                handled = true;
            }
        }
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    if !handled {
        chain(sig, info, context);
    }
}

/// Passes a fault that is not ours to the action the process had before.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let Some((previous, _)) = PREVIOUS.get() else {
        return;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore it: the faulting access runs again and gets the default action.
        // SAFETY: `previous` is a valid sigaction saved by `install`.
        unsafe { libc::sigaction(libc::SIGBUS, previous, ptr::null_mut()) };
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action declared the SA_SIGINFO signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, context);
    } else {
        // SAFETY: the previous action is a plain handler taking the signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}
