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
use shmetrics_reader::snapshot::Family;
use shmetrics_reader::{Format, PrefixFilter, Scrape, render};
use tokio::sync::OnceCell;

use super::metrics::ServerMetrics;

/// Takes one snapshot (in production: `Reader::snapshot`).
pub(crate) type SnapshotFn = Box<dyn FnMut() -> Scrape + Send>;

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
    /// Names of extra families already reported as duplicates.
    logged: Mutex<HashSet<String>>,
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
    ) -> Self {
        Self {
            filter,
            self_metrics,
            server_metrics,
            extra,
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// The families rendered after the merged ones: self-metrics (when enabled), then the
    /// embedder's, sorted by name. A name already present (among the kept merged families,
    /// or earlier in this list) is emitted once: the first wins and the clash is logged
    /// once per name.
    fn extra_families(&self, scrape: &Scrape) -> Vec<Family> {
        let mut extra = Vec::new();
        if self.self_metrics {
            extra.extend(shmetrics_reader::self_metrics(&scrape.report));
            extra.extend(self.server_metrics.families());
        }
        if let Some(f) = &self.extra {
            extra.extend(f());
        }
        // Stable: among equal names the self-metrics come first.
        extra.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Family> = Vec::with_capacity(extra.len());
        for family in extra {
            let merged =
                self.filter.keeps(&family.name) && scrape.snapshot.family(&family.name).is_some();
            let repeated = out.last().is_some_and(|l| l.name == family.name);
            if merged || repeated {
                let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
                if logged.insert(family.name.to_string()) {
                    log::warn!(
                        "family {} is defined twice (by the metrics directory or another extra family); emitting the first only",
                        family.name
                    );
                }
                continue;
            }
            out.push(family);
        }
        out
    }

    /// Renders `scrape` in `format`.
    pub(crate) fn render(&self, scrape: &Scrape, format: Format) -> io::Result<Vec<u8>> {
        let extra = self.extra_families(scrape);
        let mut out = Vec::with_capacity(64 * 1024);
        render::render_into(&scrape.snapshot, &extra, format, &self.filter, &mut out);
        Ok(out)
    }
}

/// One rendered body and, once asked for, its gzip encoding.
#[derive(Debug)]
pub(crate) struct Body {
    plain: Bytes,
    gzip: OnceCell<Bytes>,
}

/// One snapshot and the bodies rendered from it so far.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The snapshot and its report.
    pub(crate) scrape: Scrape,
    started: Instant,
    finished: Instant,
    bodies: [OnceCell<Arc<Body>>; 2],
}

fn format_index(format: Format) -> usize {
    match format {
        Format::Prometheus => 0,
        Format::OpenMetrics => 1,
    }
}

fn join_error(what: &str, e: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("{what} failed: {e}"))
}

fn gzip(plain: &[u8], metrics: &Arc<ServerMetrics>) -> io::Result<Bytes> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(plain.len() / 4 + 64),
        Compression::fast(),
    );
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
fn held(data: Vec<u8>, metrics: &Arc<ServerMetrics>) -> Bytes {
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
    max_age: Duration,
    renderer: Arc<Renderer>,
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

    /// The latest snapshot whatever its age; a new one if none was taken yet.
    ///
    /// # Errors
    /// When the snapshot panicked.
    pub(crate) async fn latest(&self) -> io::Result<Arc<Entry>> {
        self.entry_if(|_| true).await
    }

    async fn entry_if(&self, reuse: impl FnOnce(&Entry) -> bool) -> io::Result<Arc<Entry>> {
        let mut latest = self.latest.lock().await;
        if let Some(e) = latest.as_ref()
            && reuse(e)
        {
            return Ok(Arc::clone(e));
        }
        let source = Arc::clone(&self.source);
        let entry = tokio::task::spawn_blocking(move || {
            let mut take = source.lock().unwrap_or_else(PoisonError::into_inner);
            let started = Instant::now();
            let scrape = take();
            Entry {
                scrape,
                started,
                finished: Instant::now(),
                bodies: [OnceCell::new(), OnceCell::new()],
            }
        })
        .await
        .map_err(|e| join_error("snapshot", e))?;
        let entry = Arc::new(entry);
        *latest = Some(Arc::clone(&entry));
        Ok(entry)
    }

    /// The body of `entry` in `format`, gzip-encoded if asked; rendered (and encoded) once
    /// per snapshot, on a blocking thread. Each rendering is recorded in the scrape
    /// duration histogram as the snapshot's time plus its own.
    ///
    /// # Errors
    /// When rendering or encoding failed or panicked.
    pub(crate) async fn body(
        &self,
        entry: &Arc<Entry>,
        format: Format,
        gzip_it: bool,
    ) -> io::Result<Bytes> {
        let body = entry.bodies[format_index(format)]
            .get_or_try_init(|| {
                let entry = Arc::clone(entry);
                let renderer = Arc::clone(&self.renderer);
                async move {
                    tokio::task::spawn_blocking(move || {
                        let t = Instant::now();
                        let plain = renderer.render(&entry.scrape, format)?;
                        let took = (entry.finished - entry.started) + t.elapsed();
                        renderer.server_metrics.observe_scrape(format, took);
                        Ok::<_, io::Error>(Arc::new(Body {
                            plain: held(plain, &renderer.server_metrics),
                            gzip: OnceCell::new(),
                        }))
                    })
                    .await
                    .map_err(|e| join_error("rendering", e))?
                }
            })
            .await?;
        if !gzip_it {
            return Ok(body.plain.clone());
        }
        let encoded = body
            .gzip
            .get_or_try_init(|| {
                let body = Arc::clone(body);
                let metrics = Arc::clone(&self.renderer.server_metrics);
                async move {
                    tokio::task::spawn_blocking(move || gzip(&body.plain, &metrics))
                        .await
                        .map_err(|e| join_error("compression", e))?
                }
            })
            .await?;
        Ok(encoded.clone())
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
        )
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
        // `latest` reuses whatever is there.
        let latest = scraper.latest().await.unwrap();
        assert!(Arc::ptr_eq(&latest, &second));
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
        let renderer = Renderer::new(PrefixFilter::default(), false, Arc::clone(&metrics), None);
        let scraper = Scraper::new(source, Duration::ZERO, renderer);
        release.send(()).unwrap();
        let e = scraper.entry(Instant::now()).await.unwrap();
        let text = scraper.body(&e, Format::Prometheus, false).await.unwrap();
        assert_eq!(
            &text[..],
            b"# HELP c_total h\n# TYPE c_total counter\nc_total 1.0\n"
        );
        let again = scraper.body(&e, Format::Prometheus, false).await.unwrap();
        assert_eq!(again.as_ptr(), text.as_ptr(), "rendered twice");
        let om = scraper.body(&e, Format::OpenMetrics, false).await.unwrap();
        assert_eq!(
            &om[..],
            b"# HELP c h\n# TYPE c counter\nc_total 1.0\n# EOF\n"
        );
        let gz = scraper.body(&e, Format::Prometheus, true).await.unwrap();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, &text[..]);
        let gz_again = scraper.body(&e, Format::Prometheus, true).await.unwrap();
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
}
