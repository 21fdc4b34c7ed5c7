//! What a client can hold, bounded: connections (a maximum; when full, the most stalled one,
//! or else the oldest, evicted for a new one), time spent writing one response (a client that
//! stops reading is dropped), requests per connection (pipelining), and descriptors (one kept
//! in reserve so that a full table never stops the accept loop, and the connection limit kept
//! below the process's descriptor limit so that the metrics directory can always be read).

use shmetrics_layout::sync::AtomicU64;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::future::Future as _;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::{AbortHandle, Id};
use tokio::time::Sleep;

/// Descriptors kept free of connections for the reader (segments, the directory, the
/// archive) and the server's own files.
pub(crate) const RESERVED_DESCRIPTORS: u64 = 64;

/// A connection that made no progress (read or write) for this long, or failing that one
/// open this long, may be closed to make room for a new one when the server is at its
/// connection limit. Below it the newcomer is refused instead: a burst of new clients does
/// not close each other's connections.
pub(crate) const EVICTABLE_AFTER: Duration = Duration::from_millis(500);

/// Raises this process's soft descriptor limit to its hard limit, returning the new soft
/// limit. A server holds a descriptor per connection and per open segment; the soft limit
/// (often 1,024) is the only one an unprivileged process can raise itself.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// The soft descriptor limit now.
pub(crate) fn descriptor_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// When a connection last made progress, in milliseconds since the server started.
#[derive(Debug, Default)]
pub(crate) struct Progress(AtomicU64);

impl Progress {
    fn mark(&self, epoch: Instant) {
        // SYNC POINT connection-progress: relaxed; a hint for eviction, nothing else.
        self.0
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self, epoch: Instant) -> Duration {
        // SYNC POINT connection-progress: relaxed, as above.
        let last = self.0.load(Ordering::Relaxed);
        Duration::from_millis((epoch.elapsed().as_millis() as u64).saturating_sub(last))
    }
}

/// A stream that records progress and gives up on a write that makes none for
/// `write_timeout` (the client stopped reading): the connection then fails and is closed.
pub(crate) struct GuardedIo<T> {
    inner: T,
    progress: Arc<Progress>,
    epoch: Instant,
    write_timeout: Duration,
    /// Set while a write is blocked: when it fires, the write fails.
    stalled: Option<Pin<Box<Sleep>>>,
    on_timeout: Arc<dyn Fn() + Send + Sync>,
}

impl<T> GuardedIo<T> {
    pub(crate) fn new(
        inner: T,
        progress: Arc<Progress>,
        epoch: Instant,
        write_timeout: Duration,
        on_timeout: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        progress.mark(epoch);
        Self {
            inner,
            progress,
            epoch,
            write_timeout,
            stalled: None,
            on_timeout,
        }
    }

    /// After a write attempt: progress resets the stall timer; `Pending` starts it, and
    /// fails the write once it fires.
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Ready(r) => {
                self.stalled = None;
                self.progress.mark(self.epoch);
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    (self.on_timeout)();
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {timeout:?}"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.progress.mark(self.epoch);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.after_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An open connection: its task, its progress, and when it was accepted.
struct Conn {
    abort: AbortHandle,
    progress: Arc<Progress>,
    opened: Instant,
}

/// The open connections.
#[derive(Default)]
pub(crate) struct Open {
    conns: HashMap<Id, Conn>,
}

impl Open {
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn insert(&mut self, abort: AbortHandle, progress: Arc<Progress>) {
        let conn = Conn {
            abort,
            progress,
            opened: Instant::now(),
        };
        self.conns.insert(conn.abort.id(), conn);
    }

    pub(crate) fn remove(&mut self, id: Id) {
        self.conns.remove(&id);
    }

    /// Aborts every connection that made no progress for at least [`EVICTABLE_AFTER`];
    /// returns how many.
    pub(crate) fn evict_all_stalled(&mut self, epoch: Instant) -> usize {
        let stalled: Vec<Id> = self
            .conns
            .iter()
            .filter(|(_, c)| c.progress.idle(epoch) >= EVICTABLE_AFTER)
            .map(|(&id, _)| id)
            .collect();
        for id in &stalled {
            if let Some(c) = self.conns.remove(id) {
                c.abort.abort();
            }
        }
        stalled.len()
    }

    /// Aborts a connection to make room for a new one: the one that made no progress for
    /// the longest time if that is at least [`EVICTABLE_AFTER`], else the oldest if it is
    /// that old (a client that trickles bytes, or a pipelined flood still being answered,
    /// holds its place no longer than a newcomer's need). Returns whether one was.
    pub(crate) fn evict_for_newcomer(&mut self, epoch: Instant) -> bool {
        let most_stalled = self
            .conns
            .iter()
            .map(|(&id, c)| (id, c.progress.idle(epoch)))
            .max_by_key(|&(_, idle)| idle);
        let oldest = || {
            self.conns
                .iter()
                .map(|(&id, c)| (id, c.opened.elapsed()))
                .max_by_key(|&(_, age)| age)
        };
        let victim = match most_stalled {
            Some((id, idle)) if idle >= EVICTABLE_AFTER => Some(id),
            _ => oldest()
                .filter(|&(_, age)| age >= EVICTABLE_AFTER)
                .map(|(id, _)| id),
        };
        let Some(c) = victim.and_then(|id| self.conns.remove(&id)) else {
            return false;
        };
        c.abort.abort();
        true
    }
}
