//! `fork()` while another thread registers a watched range: the child can watch ranges of
//! its own. The registration lock is held across the fork by a `pthread_atfork` handler, so
//! the child never inherits it held by a thread it does not have (it would hang at its
//! first `watch`, such as the first segment its reader opens).
//!
//! A test binary of its own: it forks, and no other test may run beside it. Not under Miri,
//! which cannot fork.
#![cfg(not(miri))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmetrics_layout::fault::{Access, watch};

/// Forks made while the other thread registers and drops ranges as fast as it can.
const FORKS: usize = 40;
/// Longest wait for a child that should exit at once.
const CHILD_LIMIT: Duration = Duration::from_secs(10);

/// Waits for `pid` for at most [`CHILD_LIMIT`]; SIGKILLs it then. Returns whether it exited
/// with status 0 in time.
fn exited_in_time(pid: libc::pid_t) -> bool {
    let until = Instant::now() + CHILD_LIMIT;
    loop {
        let mut status = 0;
        // SAFETY: waits for a child of this process; `status` is a valid out pointer.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if Instant::now() >= until {
            // SAFETY: `pid` is our unreaped child: signalling it touches nothing else.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; `status` is a valid out pointer.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_child_forked_while_another_thread_watches_a_range_can_watch_its_own() {
    // Ranges are only recorded, never touched, until a SIGBUS inside one: any addresses do.
    let memory = vec![0u8; 1 << 16];
    let base = memory.as_ptr() as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            // Relaxed: the flag only ends the loop; it orders nothing.
            while !stop.load(Ordering::Relaxed) {
                drop(watch(base as *const u8, 4096, Access::Read));
                rounds += 1;
            }
            rounds
        })
    };
    let mut hung = None;
    for fork in 0..FORKS {
        // SAFETY: the child calls only `watch` (the lock under test, and allocation, which
        // glibc's fork leaves usable) and `_exit`; it never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let own = watch(memory.as_ptr(), 1 << 16, Access::Read);
            drop(own);
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(0) };
        }
        if !exited_in_time(pid) {
            hung = Some(fork);
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = churn.join().unwrap();
    assert!(rounds > 0);
    assert_eq!(
        hung, None,
        "a child that hung (or failed) in watch, of {FORKS}"
    );
}
