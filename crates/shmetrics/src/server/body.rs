//! Response bodies: whole (shared `Bytes`), or streamed, rendered a chunk at a time on a
//! blocking thread as the client reads, so a large exposition is never held whole.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use hyper::body::{Body, Frame, SizeHint};
use shmetrics_layout::limits::MAX_SERIES_TEXT;
use shmetrics_reader::Format;
use shmetrics_reader::render::{Cursor, Escaping, Exposition};
use shmetrics_reader::snapshot::Family;

use super::cache::{Entry, Renderer, held};
use super::self_metrics::Failure;

/// Bytes a streamed body renders at a time.
pub(crate) const STREAM_CHUNK: usize = 1 << 20;

/// An empty buffer with room for one piece of at least `chunk` bytes (which may pass it by
/// one series), or an out-of-memory error instead of an abort.
pub(crate) fn chunk_buffer(chunk: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reserve(&mut buf, chunk)?;
    Ok(buf)
}

/// Makes room in `buf` for one more piece of `chunk` bytes, or fails with `OutOfMemory`.
pub(crate) fn reserve(buf: &mut Vec<u8>, chunk: usize) -> io::Result<()> {
    let want = chunk + MAX_SERIES_TEXT;
    buf.try_reserve(want).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "cannot allocate {} more bytes to render the exposition",
                buf.len() + want
            ),
        )
    })
}

/// The body of a response.
pub(crate) enum ResponseBody {
    /// All of it, sent at once (`None` once sent).
    Whole(Option<Bytes>),
    /// Rendered while it is sent.
    Streamed(Box<Stream>),
}

impl ResponseBody {
    /// A body of these bytes.
    pub(crate) fn whole(bytes: impl Into<Bytes>) -> Self {
        Self::Whole(Some(bytes.into()))
    }
}

/// A body rendered chunk by chunk from a shared snapshot.
pub(crate) struct Stream {
    /// Where the rendering stands; `None` while a chunk is being rendered or once done.
    state: Option<Box<StreamState>>,
    /// The chunk being rendered (once a rendering permit is free).
    pending: Option<Pin<Box<dyn Future<Output = io::Result<Rendered>> + Send>>>,
    /// The exact length, when not compressed.
    len: Option<u64>,
}

/// A rendered chunk, the state to render the next from, and whether it was the last.
type Rendered = (Box<StreamState>, Bytes, bool);

/// What a stream renders from.
struct StreamState {
    entry: Arc<Entry>,
    extra: Arc<[Family]>,
    format: Format,
    escaping: Escaping,
    renderer: Arc<Renderer>,
    cursor: Cursor,
    gzip: Option<GzEncoder<Vec<u8>>>,
}

impl Stream {
    /// A stream of the exposition of `entry` (with `extra` families) in `format` with names
    /// escaped by `escaping`, of `len` bytes uncompressed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        entry: Arc<Entry>,
        extra: Arc<[Family]>,
        format: Format,
        escaping: Escaping,
        renderer: Arc<Renderer>,
        len: u64,
        gzip: bool,
    ) -> Self {
        let state = StreamState {
            entry,
            extra,
            format,
            escaping,
            renderer,
            cursor: Cursor::default(),
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), Compression::fast())),
        };
        Self {
            state: Some(Box::new(state)),
            pending: None,
            len: (!gzip).then_some(len),
        }
    }
}

impl StreamState {
    /// Renders (and compresses) the next chunk; whether it was the last.
    fn next_chunk(mut self: Box<Self>) -> io::Result<Rendered> {
        let exposition = Exposition {
            snapshot: &self.entry.scrape.snapshot,
            text: Some(&self.entry.scrape.text),
            extra: &self.extra,
            format: self.format,
            filter: &self.renderer.filter,
            escaping: self.escaping,
            created: self.renderer.created_series,
        };
        let mut buf = chunk_buffer(STREAM_CHUNK)?;
        let done = exposition.render_some(&mut self.cursor, &mut buf, STREAM_CHUNK);
        if let Some(gz) = &mut self.gzip {
            gz.write_all(&buf)?;
            buf = if done {
                self.gzip.take().expect("present").finish()?
            } else {
                std::mem::take(gz.get_mut())
            };
        }
        let metrics = &self.renderer.server_metrics;
        let chunk = held(buf, metrics);
        Ok((self, chunk, done))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Self::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Streamed(stream) => stream.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(bytes) => bytes.is_none(),
            Self::Streamed(stream) => stream.state.is_none() && stream.pending.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Whole(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Whole(None) => SizeHint::with_exact(0),
            Self::Streamed(stream) => stream.len.map_or_else(SizeHint::new, SizeHint::with_exact),
        }
    }
}

impl Stream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            if let Some(pending) = &mut self.pending {
                let rendered = ready!(pending.as_mut().poll(cx));
                self.pending = None;
                let (state, chunk, done) = match rendered {
                    Ok(r) => r,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                };
                if !done {
                    self.state = Some(state);
                }
                if !chunk.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                continue;
            }
            let Some(state) = self.state.take() else {
                return Poll::Ready(None);
            };
            let metrics = Arc::clone(&state.renderer.server_metrics);
            let permits = Arc::clone(&state.renderer.stream_permits);
            self.pending = Some(Box::pin(async move {
                let permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| io::Error::other("the server is shutting down"))?;
                let rendered = tokio::task::spawn_blocking(move || {
                    let rendered = state.next_chunk();
                    drop(permit);
                    rendered
                })
                .await
                .map_err(|e| io::Error::other(format!("rendering failed: {e}")))?;
                if rendered.is_err() {
                    metrics.count_failure(Failure::OutOfMemory);
                }
                rendered
            }));
        }
    }
}
