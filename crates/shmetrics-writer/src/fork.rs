//! Fork safety without a `getpid()` on the hot path.
//!
//! Handles point straight into the segment mapping. After `fork()` the child shares that
//! mapping with its parent, so its increments would land in the parent's counters. A
//! `pthread_atfork` child handler fixes that before `fork()` returns in the child: for each
//! segment it creates a new segment file owned by the child (same size, same published
//! metadata, zeroed values), takes its lock, and maps it with `MAP_FIXED` over the very
//! addresses of the old mapping. Every existing handle now writes into the child's own
//! segment, at no cost to the hot path. The inherited descriptors are closed, so the
//! parent's liveness lock stays the parent's alone.
//!
//! The prepare handler takes every registry's state lock (so no thread of the parent is
//! half-way through placing a series or registering a family at the moment of the fork)
//! and the handlers in parent and child release them. These are std mutexes: releasing a
//! parking_lot mutex in the child could hand it to a waiting thread that does not exist
//! there, and the child would hang on its next new series. If the child cannot create a
//! file (a full disk, say), the old range is replaced by private zeroed memory instead:
//! the child's metrics are lost, the parent's are never touched.

use shmetrics_layout::sync::AtomicU64;
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};

use shmetrics_layout::{HEADER_SIZE, META_LEN_WORD, view};

use crate::identity::ProcessIdentity;
use crate::placement::{Shared, State};
use crate::segment::create_segment;

/// Every registry opened in this process. A std (futex) mutex, like the registries' state
/// locks: held across `fork()`, it must be releasable in a child where the threads that
/// waited for it are gone (see `Shared::state`).
static TRACKED: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();
/// Registries re-created in forked children, for tests and diagnostics.
pub(crate) static CHILD_RECREATIONS: AtomicU64 = AtomicU64::new(0);

/// What `prepare` holds across `fork()`, on the forking thread, until the parent or child
/// handler drops it. Fields drop in order: the state guards before the registries that
/// keep their mutexes alive, and the registry list last.
struct Held {
    states: Vec<MutexGuard<'static, State>>,
    registries: Vec<Arc<Shared>>,
    _tracked: MutexGuard<'static, Vec<Weak<Shared>>>,
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Starts tracking a registry's state for fork handling.
pub(crate) fn track(shared: &Arc<Shared>) {
    INSTALL.call_once(|| {
        // Registered first, so that its prepare handler runs after ours (prepare handlers
        // run in the reverse order of registration): a thread may hold a state lock while
        // it watches a new segment, and the state locks are taken first here too.
        shmetrics_layout::fault::hold_across_fork();
        // SAFETY: the three handlers are `extern "C"` functions that do not unwind.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            log::error!(
                "shmetrics: pthread_atfork failed ({rc}); forked children would share segments"
            );
        }
    });
    let mut tracked = TRACKED.lock().unwrap_or_else(PoisonError::into_inner);
    tracked.retain(|w| w.strong_count() > 0);
    tracked.push(Arc::downgrade(shared));
}

extern "C" fn prepare() {
    // The list stays locked across the fork so no registry is added half-way.
    let tracked = TRACKED.lock().unwrap_or_else(PoisonError::into_inner);
    let registries: Vec<Arc<Shared>> = tracked.iter().filter_map(Weak::upgrade).collect();
    let states = registries
        .iter()
        .map(|shared| {
            let guard = shared.lock_state();
            // SAFETY: only the lifetime changes. The guard borrows the mutex inside the
            // `Arc` allocation of `shared`, which `Held::registries` keeps alive (and in
            // place) until after `Held::states` is dropped; the guard stays on this thread.
            unsafe {
                std::mem::transmute::<MutexGuard<'_, State>, MutexGuard<'static, State>>(guard)
            }
        })
        .collect();
    let held = Held {
        states,
        registries,
        _tracked: tracked,
    };
    HELD.with(|h| *h.borrow_mut() = Some(held));
}

/// Takes what `prepare` left on this thread.
fn take_held() -> Option<Held> {
    HELD.with(|h| h.borrow_mut().take())
}

extern "C" fn parent() {
    drop(take_held());
}

extern "C" fn child() {
    if let Some(mut held) = take_held() {
        for (state, shared) in held.states.iter_mut().zip(&held.registries) {
            recreate_in_child(shared, state);
        }
    }
}

/// Gives the child its own segments in place of the parent's (see the module docs).
fn recreate_in_child(shared: &Shared, state: &mut State) {
    CHILD_RECREATIONS.fetch_add(1, Ordering::Relaxed);
    if shared.options.follow_env_dir_after_fork
        && let Some(dir) = env_dir().filter(|d| d.is_dir())
    {
        state.dir = dir;
    }
    state.identity = ProcessIdentity::current();
    state.dropped_series = 0;
    for sequence in 0..state.segments.len() {
        let identity = state.segment_identity(sequence as u32);
        let seg = &mut state.segments[sequence];
        let mut meta = Vec::with_capacity(seg.meta_len);
        view::load_bytes(seg.map.words(), HEADER_SIZE, seg.meta_len, &mut meta);
        debug_assert!(
            // SYNC POINT meta-len: relaxed. Until the remap below the mapping is still
            // shared with the parent process, which may have published more records since
            // the fork, never fewer; the bytes below `seg.meta_len` never change.
            seg.map.words()[META_LEN_WORD].load(Ordering::Relaxed) as usize >= seg.meta_len
        );
        let (addr, len) = seg.map.region();
        let created = create_segment(
            &state.dir,
            shared.options.file_mode,
            identity,
            seg.size,
            &meta,
            seg.slot_floor,
        );
        let remapped = created.and_then(|(file, raw, path)| {
            // The new mapping from create_segment only served its creation; the child keeps
            // the old addresses. Drop it before mapping the file over them.
            drop(raw);
            map_fixed(addr, len, Some(&file)).map_err(|source| crate::Error::Io {
                op: crate::error::SegmentOp::RemapInChild,
                path: path.clone(),
                source,
            })?;
            Ok((file, path))
        });
        match remapped {
            Ok((file, path)) => {
                // Closes the inherited descriptor; the parent's lock is unaffected.
                *seg.map.lock.lock() = file;
                seg.path = path;
            }
            Err(e) => {
                seg.writable = false;
                if map_fixed(addr, len, None).is_err() {
                    // Cannot even detach: stop rather than write into the parent's segment.
                    say_in_child(format_args!(
                        "shmetrics: forked child cannot detach from parent segment: {e}"
                    ));
                    std::process::abort();
                }
                say_in_child(format_args!(
                    "shmetrics: forked child keeps no metrics for this segment: {e}"
                ));
            }
        }
    }
}

/// Writes `line` and a newline to stderr in one `write(2)` (a line of its own, even when
/// other processes share the stream), without the standard library's stderr lock: another
/// thread of the parent may have held it at the fork (printing at that moment), and in the
/// child no thread would ever release it. A stderr that cannot be written loses the line.
fn say_in_child(line: std::fmt::Arguments<'_>) {
    let mut text = line.to_string();
    text.push('\n');
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        // SAFETY: `rest` is a live byte slice and the call reads at most `rest.len()` bytes
        // of it; descriptor 2 is only written, never closed or replaced here.
        let written = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        match usize::try_from(written) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            Err(_) => return,
        }
    }
}

/// `PROMETHEUS_MULTIPROC_DIR` in a forked child, read without the standard library's
/// environment lock, which another thread of the parent may have held at the fork.
fn env_dir() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let name = c"PROMETHEUS_MULTIPROC_DIR";
    // SAFETY: `name` is a NUL-terminated C string; in the child only the forking thread
    // exists, so nothing modifies the environment while the returned pointer is read, and
    // its bytes are copied before anything else runs.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: a non-null `getenv` result points to a NUL-terminated string (see above).
    let bytes = unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes();
    (!bytes.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// Maps `file` (or zeroed private memory) over exactly `[addr, addr + len)`.
fn map_fixed(addr: *mut u8, len: usize, file: Option<&std::fs::File>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (flags, fd) = match file {
        Some(f) => (libc::MAP_SHARED | libc::MAP_FIXED, f.as_raw_fd()),
        None => (
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
        ),
    };
    // SAFETY: `addr..addr+len` is exactly a mapping this process owns (a segment mapping
    // kept alive by its SegmentMap); MAP_FIXED replaces it atomically with a mapping of the
    // same size, so every pointer into it stays valid. Only the forking thread exists.
    let ptr = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
