//! Shared scrape work: one snapshot of the directory at a time, reused by every scrape
//! that arrives while it is being taken (single flight) or while it is younger than the
//! configured maximum age; each format rendered (and gzipped) at most once per snapshot.
//!
//! The reader needs `&mut`, and its snapshot reads files, so it lives behind a
//! `std::sync::Mutex` used only from `spawn_blocking` threads; the async side waits on a
//! `tokio::sync::Mutex` around the latest snapshot, which is held while a new one is
//! taken. Writers are never involved: the reader takes no lock they wait for.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use shmetrics_reader::render::{CHUNK, Cursor, Escaping, Exposition};
use shmetrics_reader::snapshot::Family;
use shmetrics_reader::{Format, PrefixFilter, Scrape};
use tokio::sync::OnceCell;

use super::body::{ResponseBody, Stream, chunk_buffer, reserve};
use super::self_metrics::{Failure, ServerMetrics};

/// Bodies up to this size are rendered once per snapshot and shared by every response;
/// larger ones are streamed, rendered anew for each response a chunk at a time.
pub(crate) const MAX_WHOLE_BODY: usize = 32 << 20;

/// Takes one snapshot (in production: `Reader::snapshot`).
pub(crate) type SnapshotFn = Box<dyn FnMut() -> Scrape + Send>;

/// Chunks of streamed bodies rendered at once (rendering is CPU-bound: more would only
/// hold more buffers).
const STREAM_RENDERS: usize = 4;

/// Families appended to every `/metrics` body (see `Server::with_extra`).
pub(crate) type ExtraFn = Arc<dyn Fn() -> Vec<Family> + Send + Sync>;

/// Turns a snapshot into an exposition body.
pub(crate) struct Renderer {
    /// Which merged families to keep.
    pub(crate) filter: PrefixFilter,
    /// Whether to append the `shmetrics_*` self-metrics.
    pub(crate) self_metrics: bool,
    /// The server's own counts.
    pub(crate) server_metrics: Arc<ServerMetrics>,
    /// Families supplied by the embedder.
    pub(crate) extra: Option<ExtraFn>,
    /// The most bytes one exposition may have (see `ServerOptions::max_scrape_bytes`).
    pub(crate) max_scrape_bytes: u64,
    /// Bodies up to this size are held whole ([`MAX_WHOLE_BODY`]; smaller in tests).
    pub(crate) max_whole_body: usize,
    /// Chunks of streamed bodies rendered at once, whatever the number of clients: each
    /// holds a chunk's buffer while it renders.
    pub(crate) stream_permits: Arc<tokio::sync::Semaphore>,
    /// Names of extra families already reported as duplicates.
    logged: Mutex<HashSet<String>>,
    /// Checks the prefixes, once, against the first directory with families.
    prefixes_checked: std::sync::Once,
    /// Whether OpenMetrics bodies have `_created` samples (see
    /// `ServerOptions::created_series`).
    pub(crate) created_series: bool,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("filter", &self.filter)
            .field("self_metrics", &self.self_metrics)
            .field("extra", &self.extra.is_some())
            .finish_non_exhaustive()
    }
}

impl Renderer {
    pub(crate) fn new(
        filter: PrefixFilter,
        self_metrics: bool,
        server_metrics: Arc<ServerMetrics>,
        extra: Option<ExtraFn>,
        max_scrape_bytes: u64,
    ) -> Self {
        Self {
            filter,
            self_metrics,
            server_metrics,
            extra,
            max_scrape_bytes,
            max_whole_body: MAX_WHOLE_BODY,
            stream_permits: Arc::new(tokio::sync::Semaphore::new(STREAM_RENDERS)),
            logged: Mutex::new(HashSet::new()),
            prefixes_checked: std::sync::Once::new(),
            created_series: true,
        }
    }

    /// Warns, once, at the first snapshot with families, when the prefixes keep none of
    /// them: a misspelt `--prefix` would otherwise serve a page without a single family of
    /// the directory, and say nothing. (One prefix of several matching nothing is not
    /// warned about: `--prefix vllm: --prefix lmcache:` is right for engines without
    /// LMCache.)
    fn check_prefixes(&self, scrape: &Scrape) {
        let families = &scrape.snapshot.families;
        if families.is_empty() || self.filter.prefixes().is_empty() {
            return;
        }
        self.prefixes_checked.call_once(|| {
            let unmatched = self.filter.unmatched(families.iter().map(|f| &*f.name));
            if unmatched.len() == self.filter.prefixes().len() {
                log::warn!(
                    "--prefix {} matches none of the {} families in the directory: /metrics \
                     serves none of them (names are case-sensitive: vllm:, lmcache:, dynamo_)",
                    unmatched.join(", --prefix "),
                    families.len()
                );
            }
        });
    }

    /// The families rendered after the merged ones: the writers' process metrics (when
    /// read), self-metrics (when enabled), then the embedder's, sorted by name. A name already present (among the kept merged families,
    /// or earlier in this list) is emitted once: the first wins and the clash is logged
    /// once per name.
    fn extra_families(&self, scrape: &Scrape) -> Vec<Family> {
        let mut extra = shmetrics_reader::process::families(&scrape.report);
        if self.self_metrics {
            extra.extend(shmetrics_reader::self_metrics(&scrape.report));
            extra.extend(self.server_metrics.families());
        }
        if let Some(f) = &self.extra {
            extra.extend(f());
        }
        // Of equal names the self-metrics, given first, win.
        let (kept, left_out) = scrape.snapshot.extra_families(&self.filter, extra);
        if !left_out.is_empty() {
            let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
            for name in left_out {
                if logged.insert(name.to_string()) {
                    log::warn!(
                        "family {name} is defined twice (by the metrics directory or another extra family); emitting the first only"
                    );
                }
            }
        }
        kept
    }

    /// Renders `scrape` in `format`, whole (tests and small bodies).
    #[cfg(test)]
    pub(crate) fn render(&self, scrape: &Scrape, format: Format) -> io::Result<Vec<u8>> {
        let extra = self.extra_families(scrape);
        let mut out = Vec::new();
        shmetrics_reader::render::render_into(
            &scrape.snapshot,
            &extra,
            format,
            &self.filter,
            &mut out,
        );
        Ok(out)
    }

    /// Decides how `entry` is served in `format`: rendered whole when it is at most
    /// [`MAX_WHOLE_BODY`] bytes (and one chunk), else measured (rendered without being kept) for a
    /// streamed body, or refused when it passes the scrape byte limit. Memory it cannot
    /// allocate is an `OutOfMemory` error, never an abort.
    fn plan(&self, entry: &Entry, format: Format, escaping: Escaping) -> io::Result<Body> {
        let extra: Arc<[Family]> = self.extra_families(&entry.scrape).into();
        let exposition = Exposition {
            snapshot: &entry.scrape.snapshot,
            text: Some(&entry.scrape.text),
            extra: &extra,
            format,
            filter: &self.filter,
            escaping,
            created: self.created_series,
        };
        let mut cursor = Cursor::default();
        let mut whole = Vec::new();
        let mut done = false;
        while !done && whole.len() <= self.max_whole_body {
            reserve(&mut whole, CHUNK)?;
            let at_least = whole.len() + CHUNK;
            done = exposition.render_some(&mut cursor, &mut whole, at_least);
        }
        let mut len = whole.len() as u64;
        if done && len <= self.max_scrape_bytes {
            return Ok(Body::Whole {
                plain: held(whole, &self.server_metrics),
                gzip: OnceCell::new(),
            });
        }
        drop(whole);
        let mut piece = chunk_buffer(CHUNK)?;
        while !done && len <= self.max_scrape_bytes {
            piece.clear();
            done = exposition.render_some(&mut cursor, &mut piece, CHUNK);
            len += piece.len() as u64;
        }
        if len > self.max_scrape_bytes {
            return Ok(Body::TooLarge { at_least: len });
        }
        Ok(Body::Streamed { len, extra })
    }
}

/// How one snapshot is served in one format.
#[derive(Debug)]
pub(crate) enum Body {
    /// Rendered whole, shared by every response; its gzip encoding once asked for.
    Whole { plain: Bytes, gzip: OnceCell<Bytes> },
    /// Too large to hold: each response renders it again, a chunk at a time.
    Streamed {
        /// Its exact length, uncompressed.
        len: u64,
        /// The families rendered after the merged ones, fixed for every response.
        extra: Arc<[Family]>,
    },
    /// Over the scrape byte limit: every response is an error.
    TooLarge {
        /// Bytes rendered when the limit was passed.
        at_least: u64,
    },
}

/// Why a `/metrics` request gets no exposition.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The exposition passes the scrape byte limit.
    TooLarge {
        /// The limit.
        limit: u64,
        /// Bytes rendered when it was passed.
        at_least: u64,
    },
    /// Rendering failed: out of memory (`ErrorKind::OutOfMemory`), or panicked.
    Failed(io::Error),
}

/// One snapshot and the bodies rendered from it so far.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The snapshot and its report.
    pub(crate) scrape: Scrape,
    started: Instant,
    finished: Instant,
    bodies: [OnceCell<Arc<Body>>; 8],
}

/// The slot of `entry.bodies` of a format and escaping.
fn body_index(format: Format, escaping: Escaping) -> usize {
    let format = match format {
        Format::Prometheus => 0,
        Format::OpenMetrics => 1,
    };
    let escaping = match escaping {
        Escaping::Underscores => 0,
        Escaping::AllowUtf8 => 1,
        Escaping::Dots => 2,
        Escaping::Values => 3,
    };
    format * 4 + escaping
}

fn join_error(what: &str, e: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("{what} failed: {e}"))
}

fn gzip(plain: &[u8], metrics: &Arc<ServerMetrics>) -> io::Result<Bytes> {
    // Deflate output passes its input by at most 5 bytes per 16 KiB block and a header:
    // reserved up front, so compressing never grows (or fails to grow) the buffer.
    let mut out = Vec::new();
    out.try_reserve(plain.len() + plain.len() / 1024 + 1024)
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "cannot allocate {} bytes to compress the exposition",
                    plain.len()
                ),
            )
        })?;
    let mut enc = GzEncoder::new(out, Compression::fast());
    enc.write_all(plain)?;
    Ok(held(enc.finish()?, metrics))
}

/// A rendered body's memory, counted in `ServerMetrics::body_bytes` while any response or
/// cache entry holds it.
struct Held {
    data: Vec<u8>,
    metrics: Arc<ServerMetrics>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SYNC POINT server-counter: relaxed; a statistic and a memory bound's input.
        self.metrics
            .body_bytes
            .fetch_sub(self.data.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `data` as shared bytes whose size counts in the server's body bytes until the last
/// holder drops them.
pub(crate) fn held(data: Vec<u8>, metrics: &Arc<ServerMetrics>) -> Bytes {
    // SYNC POINT server-counter: relaxed, as in `Held::drop`.
    metrics
        .body_bytes
        .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Bytes::from_owner(Held {
        data,
        metrics: Arc::clone(metrics),
    })
}

/// Snapshots shared between concurrent scrapes.
pub(crate) struct Scraper {
    source: Arc<Mutex<SnapshotFn>>,
    latest: tokio::sync::Mutex<Option<Arc<Entry>>>,
    /// What the latest snapshot found, readable without waiting for one being taken.
    last_seen: std::sync::Mutex<Option<LastScrape>>,
    max_age: Duration,
    renderer: Arc<Renderer>,
}

/// What the latest snapshot found, for `/health`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LastScrape {
    /// When it was taken.
    pub(crate) finished: Instant,
    /// Merged series.
    pub(crate) series: usize,
    /// Segments skipped for an invalid header.
    pub(crate) bad_segments: usize,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("max_age", &self.max_age)
            .field("renderer", &self.renderer)
            .finish_non_exhaustive()
    }
}

impl Scraper {
    pub(crate) fn new(source: SnapshotFn, max_age: Duration, renderer: Renderer) -> Self {
        Self {
            source: Arc::new(Mutex::new(source)),
            latest: tokio::sync::Mutex::new(None),
            last_seen: std::sync::Mutex::new(None),
            max_age,
            renderer: Arc::new(renderer),
        }
    }

    /// A snapshot for a scrape that arrived at `requested`: the latest one if it was
    /// still being taken at `requested` (or taken later), or if it is younger than the
    /// maximum age; otherwise a new one. Only one snapshot is taken at a time; callers
    /// arriving meanwhile wait for it.
    ///
    /// # Errors
    /// When the snapshot panicked.
    pub(crate) async fn entry(&self, requested: Instant) -> io::Result<Arc<Entry>> {
        self.entry_if(|e| e.finished >= requested || e.started.elapsed() < self.max_age)
            .await
    }

    async fn entry_if(&self, reuse: impl FnOnce(&Entry) -> bool) -> io::Result<Arc<Entry>> {
        let mut latest = self.latest.lock().await;
        if let Some(e) = latest.as_ref()
            && reuse(e)
        {
            return Ok(Arc::clone(e));
        }
        // The previous snapshot goes before the next is taken (responses still streaming
        // it keep their own reference): two never coexist for the cache's sake.
        *latest = None;
        let source = Arc::clone(&self.source);
        let entry = tokio::task::spawn_blocking(move || {
            let mut take = source.lock().unwrap_or_else(PoisonError::into_inner);
            let started = Instant::now();
            let scrape = take();
            Entry {
                scrape,
                started,
                finished: Instant::now(),
                bodies: Default::default(),
            }
        })
        .await
        .map_err(|e| join_error("snapshot", e))?;
        let entry = Arc::new(entry);
        self.renderer.check_prefixes(&entry.scrape);
        *self
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(LastScrape {
            finished: entry.finished,
            series: entry.scrape.report.series,
            bad_segments: entry.scrape.report.bad_segments,
        });
        *latest = Some(Arc::clone(&entry));
        Ok(entry)
    }

    /// What the latest snapshot found; `None` before the first. Never takes one, nor waits
    /// for one being taken.
    pub(crate) fn last_scrape(&self) -> Option<LastScrape> {
        *self
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The body of `entry` in `format`, gzip-encoded if asked: a whole body is rendered
    /// (and encoded) once per snapshot, on a blocking thread, and shared; a larger one is
    /// measured once and then streamed to each response. Each planning is recorded in the
    /// scrape duration histogram as the snapshot's time plus its own.
    ///
    /// # Errors
    /// [`BodyError::TooLarge`] past the scrape byte limit; [`BodyError::Failed`] when
    /// rendering or encoding ran out of memory or panicked. Each is counted.
    pub(crate) async fn body(
        &self,
        entry: &Arc<Entry>,
        format: Format,
        escaping: Escaping,
        gzip_it: bool,
    ) -> Result<ResponseBody, BodyError> {
        let metrics = &self.renderer.server_metrics;
        let planned = entry.bodies[body_index(format, escaping)]
            .get_or_try_init(|| {
                let entry = Arc::clone(entry);
                let renderer = Arc::clone(&self.renderer);
                async move {
                    tokio::task::spawn_blocking(move || {
                        let t = Instant::now();
                        let body = renderer.plan(&entry, format, escaping)?;
                        let took = (entry.finished - entry.started) + t.elapsed();
                        renderer.server_metrics.observe_scrape(format, took);
                        Ok::<_, io::Error>(Arc::new(body))
                    })
                    .await
                    .map_err(|e| join_error("rendering", e))?
                }
            })
            .await;
        let planned = match planned {
            Ok(p) => p,
            Err(e) => {
                if e.kind() == io::ErrorKind::OutOfMemory {
                    metrics.count_failure(Failure::OutOfMemory);
                }
                return Err(BodyError::Failed(e));
            }
        };
        let plain = match &**planned {
            Body::TooLarge { at_least } => {
                metrics.count_failure(Failure::TooLarge);
                return Err(BodyError::TooLarge {
                    limit: self.renderer.max_scrape_bytes,
                    at_least: *at_least,
                });
            }
            Body::Streamed { len, extra } => {
                return Ok(ResponseBody::Streamed(Box::new(Stream::new(
                    Arc::clone(entry),
                    Arc::clone(extra),
                    format,
                    escaping,
                    Arc::clone(&self.renderer),
                    *len,
                    gzip_it,
                ))));
            }
            Body::Whole { plain, .. } if !gzip_it => return Ok(ResponseBody::whole(plain.clone())),
            Body::Whole { plain, gzip } => (plain, gzip),
        };
        let (plain, encoded) = plain;
        let encoded = encoded
            .get_or_try_init(|| {
                let plain = plain.clone();
                let metrics = Arc::clone(metrics);
                async move {
                    tokio::task::spawn_blocking(move || gzip(&plain, &metrics))
                        .await
                        .map_err(|e| join_error("compression", e))?
                }
            })
            .await
            .map_err(|e| {
                if e.kind() == io::ErrorKind::OutOfMemory {
                    metrics.count_failure(Failure::OutOfMemory);
                }
                BodyError::Failed(e)
            })?;
        Ok(ResponseBody::whole(encoded.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use shmetrics_layout::MetricKind;
    use shmetrics_reader::snapshot::{Series, SeriesLabels, Snapshot, Value};

    use super::*;

    const WAIT: Duration = Duration::from_secs(20);

    fn family(name: &str, v: f64) -> Family {
        Family {
            name: Arc::from(name),
            kind: MetricKind::Counter,
            help: Arc::from("h"),
            bounds: Arc::from(&[][..]),
            series: vec![Series {
                labels: Arc::new(SeriesLabels::new(vec![])),
                pid: None,
                created_unix_nanos: None,
                exemplars: None,
                value: Value::Counter(v),
            }],
        }
    }

    /// A snapshot source counting its calls; each call announces itself on `started`
    /// and waits for a message on `release` (bounded) before returning a snapshot whose
    /// `c` counter is the call number.
    fn gated_source() -> (
        SnapshotFn,
        Arc<AtomicUsize>,
        mpsc::Receiver<()>,
        mpsc::Sender<()>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let counted = Arc::clone(&calls);
        let source: SnapshotFn = Box::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = started_tx.send(());
            release_rx.recv_timeout(WAIT).expect("released");
            Scrape {
                snapshot: Snapshot {
                    families: vec![family("c", n as f64)],
                },
                ..Scrape::default()
            }
        });
        (source, calls, started_rx, release_tx)
    }

    fn plain_renderer() -> Renderer {
        Renderer::new(
            PrefixFilter::default(),
            false,
            Arc::new(ServerMetrics::default()),
            None,
            u64::MAX,
        )
    }

    /// The bytes of a body held whole.
    fn whole(body: ResponseBody) -> Bytes {
        match body {
            ResponseBody::Whole(Some(b)) => b,
            _ => panic!("not a whole body"),
        }
    }

    /// Every byte of a body, and how many frames carried them.
    async fn collect(body: ResponseBody) -> (Vec<u8>, usize) {
        use http_body_util::BodyExt;
        let mut body = body;
        let (mut out, mut frames) = (Vec::new(), 0);
        while let Some(frame) = body.frame().await {
            out.extend_from_slice(frame.unwrap().data_ref().unwrap());
            frames += 1;
        }
        (out, frames)
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_arriving_during_a_snapshot_share_it() {
        let (source, calls, started, release) = gated_source();
        let scraper = Arc::new(Scraper::new(source, Duration::ZERO, plain_renderer()));
        let first = {
            let s = Arc::clone(&scraper);
            tokio::spawn(async move { s.entry(Instant::now()).await })
        };
        started.recv_timeout(WAIT).expect("snapshot started");
        // These arrive while the first snapshot is in flight.
        let arrived = Instant::now();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&scraper);
                tokio::spawn(async move { s.entry(arrived).await })
            })
            .collect();
        release.send(()).unwrap();
        let first = first.await.unwrap().unwrap();
        for w in waiters {
            let e = w.await.unwrap().unwrap();
            assert!(Arc::ptr_eq(&e, &first), "a waiter took its own snapshot");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A scrape arriving after it finished takes a new one (maximum age 0).
        release.send(()).unwrap();
        let second = scraper.entry(Instant::now()).await.unwrap();
        assert!(!Arc::ptr_eq(&second, &first));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            second.scrape.snapshot.family("c").unwrap().series[0].value,
            Value::Counter(2.0)
        );
        // `last_scrape` tells what the latest found, taking none.
        let last = scraper.last_scrape().unwrap();
        assert_eq!(last.finished, second.finished);
        assert_eq!(last.series, second.scrape.report.series);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_enough_snapshot_is_reused() {
        let (source, calls, _started, release) = gated_source();
        let scraper = Scraper::new(source, Duration::from_secs(3600), plain_renderer());
        release.send(()).unwrap();
        let a = scraper.entry(Instant::now()).await.unwrap();
        let b = scraper.entry(Instant::now()).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_are_rendered_once_per_format_and_gzipped_losslessly() {
        let (source, _calls, _started, release) = gated_source();
        let metrics = Arc::new(ServerMetrics::default());
        let renderer = Renderer::new(
            PrefixFilter::default(),
            false,
            Arc::clone(&metrics),
            None,
            u64::MAX,
        );
        let scraper = Scraper::new(source, Duration::ZERO, renderer);
        release.send(()).unwrap();
        let e = scraper.entry(Instant::now()).await.unwrap();
        let body = |format, gzip| {
            let (scraper, e) = (&scraper, &e);
            async move {
                whole(
                    scraper
                        .body(e, format, Escaping::default(), gzip)
                        .await
                        .unwrap(),
                )
            }
        };
        let text = body(Format::Prometheus, false).await;
        assert_eq!(
            &text[..],
            b"# HELP c_total h\n# TYPE c_total counter\nc_total 1.0\n"
        );
        let again = body(Format::Prometheus, false).await;
        assert_eq!(again.as_ptr(), text.as_ptr(), "rendered twice");
        let om = body(Format::OpenMetrics, false).await;
        assert_eq!(
            &om[..],
            b"# HELP c h\n# TYPE c counter\nc_total 1.0\n# EOF\n"
        );
        let gz = body(Format::Prometheus, true).await;
        assert_eq!(gunzip(&gz), &text[..]);
        let gz_again = body(Format::Prometheus, true).await;
        assert_eq!(gz_again.as_ptr(), gz.as_ptr(), "compressed twice");
        // One rendering per format was timed.
        let fams = metrics.families();
        let h = fams
            .iter()
            .find(|f| &*f.name == "shmetrics_scrape_duration_seconds")
            .unwrap();
        for s in &h.series {
            let Value::Histogram { buckets, .. } = &s.value else {
                panic!("not a histogram")
            };
            assert_eq!(buckets.iter().sum::<u64>(), 1, "{:?}", s.labels);
        }
    }

    #[test]
    fn extra_families_are_merged_by_name_and_never_duplicated() {
        let extra: ExtraFn = Arc::new(|| {
            vec![
                family("zz", 1.0),
                family("merged", 9.0),
                family("aa", 2.0),
                family("aa", 3.0),
            ]
        });
        let renderer = Renderer::new(
            PrefixFilter::default(),
            false,
            Arc::new(ServerMetrics::default()),
            Some(extra),
            u64::MAX,
        );
        let scrape = Scrape {
            snapshot: Snapshot {
                families: vec![family("merged", 5.0), family("mm", 4.0)],
            },
            ..Scrape::default()
        };
        let text =
            String::from_utf8(renderer.render(&scrape, Format::Prometheus).unwrap()).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "aa_total 2.0",
                "merged_total 5.0",
                "mm_total 4.0",
                "zz_total 1.0"
            ]
        );
        // A filter that drops the merged family lets the extra one through.
        let renderer = Renderer {
            filter: PrefixFilter::new(["mm"]),
            ..renderer
        };
        let text =
            String::from_utf8(renderer.render(&scrape, Format::Prometheus).unwrap()).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "aa_total 2.0",
                "merged_total 9.0",
                "mm_total 4.0",
                "zz_total 1.0"
            ]
        );
    }

    /// A snapshot of `n` counters `c{i="0"}`... with values 0..n.
    fn counters(n: usize) -> Scrape {
        let series = (0..n)
            .map(|i| Series {
                labels: Arc::new(SeriesLabels::new(vec![("i".into(), i.to_string().into())])),
                pid: None,
                created_unix_nanos: None,
                exemplars: None,
                value: Value::Counter(i as f64),
            })
            .collect();
        Scrape {
            snapshot: Snapshot {
                families: vec![Family {
                    series,
                    ..family("c", 0.0)
                }],
            },
            ..Scrape::default()
        }
    }

    fn fixed_source(scrape: Scrape) -> SnapshotFn {
        Box::new(move || scrape.clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_over_the_whole_body_size_are_streamed_with_the_same_bytes() {
        let scrape = counters(200_000);
        let expected = plain_renderer()
            .render(&scrape, Format::OpenMetrics)
            .unwrap();
        assert!(expected.len() > 3 * super::super::body::STREAM_CHUNK);
        let metrics = Arc::new(ServerMetrics::default());
        let mut renderer = Renderer::new(
            PrefixFilter::default(),
            false,
            Arc::clone(&metrics),
            None,
            u64::MAX,
        );
        renderer.max_whole_body = 64 * 1024;
        let scraper = Scraper::new(fixed_source(scrape), Duration::ZERO, renderer);
        let e = scraper.entry(Instant::now()).await.unwrap();
        for gzip in [false, true] {
            let body = scraper
                .body(&e, Format::OpenMetrics, Escaping::default(), gzip)
                .await
                .unwrap();
            let ResponseBody::Streamed(_) = &body else {
                panic!("held whole")
            };
            let hint = hyper::body::Body::size_hint(&body).exact();
            let (bytes, frames) = collect(body).await;
            assert!(frames >= 3, "{frames} frames");
            if gzip {
                assert_eq!(hint, None);
                assert_eq!(gunzip(&bytes), expected);
            } else {
                assert_eq!(hint, Some(expected.len() as u64));
                assert_eq!(bytes, expected);
            }
        }
        // Nothing stays counted once the responses are gone.
        drop(e);
        drop(scraper);
        assert_eq!(metrics.body_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exposition_over_the_scrape_limit_is_refused_and_counted() {
        let scrape = counters(10_000);
        let len = plain_renderer()
            .render(&scrape, Format::Prometheus)
            .unwrap()
            .len() as u64;
        let metrics = Arc::new(ServerMetrics::default());
        for (max_whole_body, limit) in [(MAX_WHOLE_BODY, len - 1), (1024, len - 1), (1024, len)] {
            let mut renderer = Renderer::new(
                PrefixFilter::default(),
                false,
                Arc::clone(&metrics),
                None,
                limit,
            );
            renderer.max_whole_body = max_whole_body;
            let scraper = Scraper::new(fixed_source(scrape.clone()), Duration::ZERO, renderer);
            let e = scraper.entry(Instant::now()).await.unwrap();
            match scraper
                .body(&e, Format::Prometheus, Escaping::default(), false)
                .await
            {
                Err(BodyError::TooLarge { limit: l, at_least }) => {
                    assert!(limit < len);
                    assert_eq!(l, limit);
                    assert!(at_least > limit, "{at_least}");
                }
                Ok(body) => {
                    assert_eq!(
                        limit, len,
                        "a body of {len} bytes passed a limit of {limit}"
                    );
                    assert_eq!(collect(body).await.0.len() as u64, len);
                }
                Err(BodyError::Failed(e)) => panic!("{e}"),
            }
        }
        let failures = metrics
            .families()
            .into_iter()
            .find(|f| &*f.name == "shmetrics_scrape_failures")
            .unwrap();
        let too_large = failures
            .series
            .iter()
            .find(|s| s.labels.get("reason") == Some("too_large"))
            .unwrap();
        assert_eq!(too_large.value, Value::Counter(2.0));
    }
}
