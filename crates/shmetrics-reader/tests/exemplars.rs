//! Exemplars across processes: each counter series and each histogram bucket shows the
//! newest exemplar any process (live, dead or compacted) stored, in OpenMetrics only; a
//! reader never shows a torn one, one outside its bucket, or bytes no writer stores.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shmetrics_reader::inspect::{RecordEntry, inspect};
use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{Counter, Error, Histogram, Options, Registry};

#[allow(dead_code)]
mod common;
use common::{ChildProcess, child_role, param, say, wait_for_eof};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn scrape(reader: &mut Reader, format: Format) -> String {
    let mut out = Vec::new();
    reader
        .scrape(format, &PrefixFilter::default(), false, &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// An exemplar as a line shows it: the line's sample and value, then the exemplar's
/// labels, value and time.
#[derive(Debug, PartialEq)]
struct Shown {
    sample: String,
    labels: String,
    value: f64,
    time: f64,
}

fn exemplars(text: &str) -> Vec<Shown> {
    text.lines()
        .filter_map(|line| {
            let (sample, exemplar) = line.split_once(" # ")?;
            let (labels, rest) = exemplar.strip_prefix('{')?.split_once("} ")?;
            let (value, time) = rest.split_once(' ').expect("an exemplar has a time");
            Some(Shown {
                sample: sample.to_owned(),
                labels: labels.to_owned(),
                value: value.parse().unwrap(),
                time: time.parse().unwrap(),
            })
        })
        .collect()
}

/// A simulated process: a counter and a histogram (bounds 1 and 5) of route `/a`.
fn process(dir: &Path, pid: u32) -> Registry {
    Registry::open_simulating_pid(dir, Options::default(), pid).unwrap()
}

fn write(r: &Registry, inc: f64, observe: f64, trace: &str) -> (f64, f64) {
    let before = now();
    r.counter("req", "Requests.", &["route"])
        .unwrap()
        .labels(["/a"])
        .unwrap()
        .inc_by_with_exemplar(inc, &[("trace_id", trace)])
        .unwrap();
    r.histogram("lat", "Latency.", &["route"], &[1.0, 5.0])
        .unwrap()
        .labels(["/a"])
        .unwrap()
        .observe_with_exemplar(observe, &[("trace_id", trace)])
        .unwrap();
    let after = now();
    std::thread::sleep(Duration::from_millis(5));
    (before, after)
}

#[test]
fn each_sample_shows_the_newest_exemplar_of_any_process_through_death_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let first = process(dir.path(), 1);
    let second = process(dir.path(), 2);
    let mut reader = Reader::open(dir.path()).unwrap();
    // Nothing stored yet: no exemplar, and the lines are as without exemplars.
    first
        .counter("req", "Requests.", &["route"])
        .unwrap()
        .labels(["/a"])
        .unwrap()
        .inc();
    first
        .histogram("lat", "Latency.", &["route"], &[1.0, 5.0])
        .unwrap()
        .labels(["/a"])
        .unwrap()
        .observe(0.5);
    let plain = scrape(&mut reader, Format::OpenMetrics);
    assert!(exemplars(&plain).is_empty(), "{plain}");
    let text = scrape(&mut reader, Format::Prometheus);

    let t1 = write(&first, 2.0, 0.5, "a1");
    let t2 = write(&second, 3.0, 4.0, "b1");
    let t3 = write(&first, 1.5, 0.25, "a2");
    let shown = exemplars(&scrape(&mut reader, Format::OpenMetrics));
    let expect = |sample: &str, trace: &str, value: f64, (before, after): (f64, f64)| {
        let e = shown
            .iter()
            .find(|e| e.sample.starts_with(sample))
            .unwrap_or_else(|| panic!("no exemplar on {sample}: {shown:?}"));
        assert_eq!(e.labels, format!("trace_id=\"{trace}\""), "{sample}");
        assert_eq!(e.value, value, "{sample}");
        assert!(
            before - 1e-6 <= e.time && e.time <= after + 1e-6,
            "{sample}: {e:?} not within {before}..{after}"
        );
    };
    // The counter's newest is the first process's second; each bucket keeps its own.
    expect("req_total{route=\"/a\"} 7.5", "a2", 1.5, t3);
    expect("lat_bucket{route=\"/a\",le=\"1.0\"} 3", "a2", 0.25, t3);
    expect("lat_bucket{route=\"/a\",le=\"5.0\"} 4", "b1", 4.0, t2);
    assert_eq!(shown.len(), 3, "{shown:?}");
    let _ = t1;
    // The text format has none, and is the same as without exemplars.
    let text_now = scrape(&mut reader, Format::Prometheus);
    assert!(!text_now.contains(" # "), "{text_now}");
    assert_eq!(
        text_now.lines().filter(|l| l.starts_with('#')).count(),
        text.lines().filter(|l| l.starts_with('#')).count()
    );

    // The newest writer dies: its exemplars stay (dead processes count), until a live
    // process stores a newer one.
    drop(first);
    let after_death = scrape(&mut reader, Format::OpenMetrics);
    assert_eq!(exemplars(&after_death), shown, "{after_death}");
    let t4 = write(&second, 1.0, 0.75, "b2");
    let shown = exemplars(&scrape(&mut reader, Format::OpenMetrics));
    assert!(shown.iter().any(|e| e.labels == "trace_id=\"b2\""));
    let newest = || {
        let text = scrape(&mut Reader::open(dir.path()).unwrap(), Format::OpenMetrics);
        exemplars(&text)
    };
    assert_eq!(newest(), shown, "a fresh reader sees the same");

    // Compacted, twice: the archive keeps each one.
    drop(second);
    let before = scrape(&mut reader, Format::OpenMetrics);
    let folded = reader.compact().unwrap();
    assert_eq!(folded.folded_segments, 2, "{folded:?}");
    for _ in 0..2 {
        reader.compact().unwrap();
        let after = scrape(&mut reader, Format::OpenMetrics);
        assert_eq!(after, before);
        assert_eq!(newest(), exemplars(&before));
    }
    let _ = t4;

    // A process born after the compaction stores a newer one: it wins over the archive's.
    let third = process(dir.path(), 3);
    write(&third, 1.0, 7.0, "c1");
    let shown = exemplars(&scrape(&mut reader, Format::OpenMetrics));
    let on = |sample: &str| {
        let e = shown.iter().find(|e| e.sample.starts_with(sample)).unwrap();
        e.labels.clone()
    };
    assert_eq!(on("req_total"), "trace_id=\"c1\"");
    assert_eq!(on("lat_bucket{route=\"/a\",le=\"+Inf\""), "trace_id=\"c1\"");
    assert_eq!(on("lat_bucket{route=\"/a\",le=\"1.0\""), "trace_id=\"b2\"");
    assert_eq!(on("lat_bucket{route=\"/a\",le=\"5.0\""), "trace_id=\"b1\"");
}

#[test]
fn labels_openmetrics_refuses_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = process(dir.path(), 1);
    let c = r.counter("req", "Requests.", &[]).unwrap();
    let c = c.unlabelled().unwrap();
    let long = "x".repeat(121);
    for labels in [
        vec![("trace_id", long.as_str())],
        vec![("trace-id", "a")],
        vec![("a", "1"), ("a", "2")],
    ] {
        match c.inc_by_with_exemplar(1.0, &labels) {
            Err(Error::InvalidExemplar(e)) => {
                assert!(!e.to_string().is_empty());
            }
            other => panic!("{labels:?}: {other:?}"),
        }
    }
    // 128 characters exactly are allowed, as OpenMetrics says.
    c.inc_by_with_exemplar(2.0, &[("trace_id", &"y".repeat(120))])
        .unwrap();
    // A negative amount adds nothing and stores no exemplar, as the counter ignores it.
    c.inc_by_with_exemplar(-1.0, &[("trace_id", "neg")])
        .unwrap();
    assert_eq!(c.get(), 2.0);
    let text = scrape(&mut Reader::open(dir.path()).unwrap(), Format::OpenMetrics);
    let shown = exemplars(&text);
    assert_eq!(shown.len(), 1, "{text}");
    assert_eq!(shown[0].labels, format!("trace_id=\"{}\"", "y".repeat(120)));
    assert_eq!(shown[0].value, 2.0);
}

/// The exemplar slots of the only exemplars record of `path`'s segment: (byte offset of the
/// first slot, after the block's index of a word per slot; count).
fn exemplar_block(path: &Path) -> (u64, u32) {
    let dump = inspect(path).unwrap();
    let blocks: Vec<(u64, u32)> = dump
        .records
        .iter()
        .filter_map(|r| match &r.entry {
            RecordEntry::Exemplars { record, .. } => Some((
                record.block_offset + u64::from(record.count) * 8,
                record.count,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    blocks[0]
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "shm"))
        .collect();
    assert_eq!(paths.len(), 1);
    paths.pop().unwrap()
}

#[test]
fn a_write_left_unfinished_or_corrupt_bytes_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let r = process(dir.path(), 1);
    let c = r.counter("req", "Requests.", &[]).unwrap();
    c.unlabelled()
        .unwrap()
        .inc_by_with_exemplar(1.0, &[("trace_id", "whole")])
        .unwrap();
    let path = only_segment(dir.path());
    let (block, count) = exemplar_block(&path);
    assert_eq!(count, 1);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut reader = Reader::open(dir.path()).unwrap();
    assert_eq!(
        exemplars(&scrape(&mut reader, Format::OpenMetrics)).len(),
        1
    );
    // A writer killed between taking the slot and finishing leaves the sequence odd.
    file.write_all_at(&3u64.to_ne_bytes(), block).unwrap();
    let text = scrape(&mut reader, Format::OpenMetrics);
    assert!(exemplars(&text).is_empty(), "{text}");
    assert!(text.contains("req_total 1.0\n"), "{text}");
    // Label bytes no writer stores (a length past the slot, then a name that is not one).
    file.write_all_at(&4u64.to_ne_bytes(), block).unwrap();
    file.write_all_at(&u64::MAX.to_ne_bytes(), block + 24)
        .unwrap();
    assert!(exemplars(&scrape(&mut reader, Format::OpenMetrics)).is_empty());
    file.write_all_at(&5u64.to_ne_bytes(), block + 24).unwrap();
    file.write_all_at(b"\x01\x00-\x01\x00x\x00\x00", block + 32)
        .unwrap();
    assert!(exemplars(&scrape(&mut reader, Format::OpenMetrics)).is_empty());
    // The same slot written again by the (live) writer is whole again.
    c.unlabelled()
        .unwrap()
        .inc_by_with_exemplar(1.0, &[("trace_id", "again")])
        .unwrap();
    let shown = exemplars(&scrape(&mut reader, Format::OpenMetrics));
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].labels, "trace_id=\"again\"");
}

#[test]
fn an_exemplar_outside_its_bucket_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let r = process(dir.path(), 1);
    let h = r.histogram("lat", "Latency.", &[], &[1.0]).unwrap();
    h.unlabelled()
        .unwrap()
        .observe_with_exemplar(0.5, &[("trace_id", "t")])
        .unwrap();
    let path = only_segment(dir.path());
    let (block, count) = exemplar_block(&path);
    assert_eq!(count, 2);
    let mut reader = Reader::open(dir.path()).unwrap();
    assert_eq!(
        exemplars(&scrape(&mut reader, Format::OpenMetrics)).len(),
        1
    );
    // Its value rewritten to one of the `+Inf` bucket, in the first bucket's slot.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&2.5f64.to_bits().to_ne_bytes(), block + 8)
        .unwrap();
    let text = scrape(&mut reader, Format::OpenMetrics);
    assert!(exemplars(&text).is_empty(), "{text}");
}

#[test]
fn a_segment_without_room_drops_exemplars_and_keeps_values() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        initial_segment_size: 4096,
        max_segments: 1,
        ..Options::default()
    };
    let r = Registry::open_simulating_pid(dir.path(), options, 1).unwrap();
    // 41 buckets of narrow exemplar slots take 5 KiB: more than the segment has.
    let bounds: Vec<f64> = (1..=40).map(f64::from).collect();
    let h = r.histogram("lat", "Latency.", &[], &bounds).unwrap();
    h.unlabelled()
        .unwrap()
        .observe_with_exemplar(0.5, &[("trace_id", "t")])
        .unwrap();
    let text = scrape(&mut Reader::open(dir.path()).unwrap(), Format::OpenMetrics);
    assert!(exemplars(&text).is_empty(), "{text}");
    assert!(text.contains("lat_count 1\n"), "{text}");
}

/// Checks every exemplar of `text`, written with a `v` label of `<value>-<padding>` (one
/// character repeated) by [`write_labelled`]: whole (its labels say its value), and for a
/// histogram of `bounds` in its bucket. Returns how many there were.
fn check_whole(text: &str, bounds: &[f64]) -> usize {
    let shown = exemplars(text);
    for e in &shown {
        let label = e
            .labels
            .strip_prefix("v=\"")
            .unwrap()
            .strip_suffix('"')
            .unwrap();
        let (value, pad) = label.split_once('-').unwrap();
        assert_eq!(value.parse::<f64>().unwrap(), e.value, "{e:?}");
        let first = pad.chars().next();
        assert!(pad.chars().all(|c| Some(c) == first), "{e:?}");
        if let Some(le) = e.sample.split("le=\"").nth(1) {
            let le = le.split('"').next().unwrap();
            let i = match le {
                "+Inf" => bounds.len(),
                le => bounds
                    .iter()
                    .position(|b| *b == le.parse::<f64>().unwrap())
                    .unwrap(),
            };
            let upper = bounds.get(i).copied().unwrap_or(f64::INFINITY);
            let lower = if i == 0 {
                f64::NEG_INFINITY
            } else {
                bounds[i - 1]
            };
            assert!(lower < e.value && e.value <= upper, "{e:?}");
        }
    }
    shown.len()
}

/// Observes `v` with an exemplar labelled `v="<v>-<pad * n>"` on `h` and `c`.
fn write_labelled(h: &Histogram, c: &Counter, v: f64, pad: char, n: usize) {
    let label = format!("{v}-{}", pad.to_string().repeat(n));
    h.observe_with_exemplar(v, &[("v", label.as_str())])
        .unwrap();
    c.inc_by_with_exemplar(v, &[("v", label.as_str())]).unwrap();
}

/// A child process writing exemplars in a loop until its stdin closes (or it is killed).
fn exemplar_writer_child() {
    let dir: String = param("dir");
    let r = Registry::open(&dir).unwrap();
    let h = r
        .histogram("lat", "Latency.", &[], &[1.0, 2.0, 5.0])
        .unwrap();
    let h = h.unlabelled().unwrap().clone();
    let c = r.counter("req", "Requests.", &[]).unwrap();
    let c = c.unlabelled().unwrap().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    std::thread::spawn(move || {
        wait_for_eof();
        stopper.store(true, Ordering::Relaxed);
    });
    say("ready");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Labels of 3 to 92 bytes: narrow slots, filled to different lengths.
        write_labelled(
            &h,
            &c,
            (i % 61) as f64 / 10.0 + 0.05,
            'p',
            (i % 90) as usize,
        );
        i += 1;
    }
}

/// Real processes write exemplars in a loop while the test scrapes; one is killed with
/// SIGKILL mid-loop (most of its time is spent inside exemplar writes): every exemplar
/// shown, before and after, is whole and in its bucket, and the survivors' keep coming.
#[test]
fn processes_killed_while_writing_exemplars_never_show_a_torn_one() {
    const TEST: &str = "processes_killed_while_writing_exemplars_never_show_a_torn_one";
    if let Some(role) = child_role() {
        assert_eq!(role, "writer");
        return exemplar_writer_child();
    }
    let dir = tempfile::tempdir().unwrap();
    let param = ("dir", dir.path().to_str().unwrap().to_owned());
    let mut children: Vec<ChildProcess> = (0..3)
        .map(|_| ChildProcess::spawn(TEST, "writer", std::slice::from_ref(&param)))
        .collect();
    for child in &mut children {
        assert_eq!(child.expect_line(Duration::from_secs(30)), "ready");
    }
    let mut reader = Reader::open(dir.path()).unwrap();
    let bounds = [1.0, 2.0, 5.0];
    let mut seen = 0;
    for round in 0..200 {
        if round == 100 {
            children[0].sigkill();
        }
        seen += check_whole(&scrape(&mut reader, Format::OpenMetrics), &bounds);
    }
    assert!(seen > 200, "only {seen} exemplars seen");
    // The kill is asynchronous: the segment is dead once the process is gone.
    children[0].wait(Duration::from_secs(30));
    let report = reader.snapshot().report;
    assert_eq!((report.live_segments, report.dead_segments), (2, 1));
    for mut child in children.drain(1..) {
        child.close_stdin();
        child.expect_success(Duration::from_secs(30));
    }
    // All dead now, the killed one's slots as it left them: still nothing torn.
    let text = scrape(&mut reader, Format::OpenMetrics);
    assert!(check_whole(&text, &bounds) > 0, "{text}");
    reader.compact().unwrap();
    assert!(check_whole(&scrape(&mut reader, Format::OpenMetrics), &bounds) > 0);
}

/// Several processes (threads with registries of their own) observe with exemplars whose
/// labels repeat their value while the test scrapes: every exemplar shown is whole (its
/// labels match its value) and lies in its bucket.
#[test]
fn concurrent_writers_never_show_a_torn_or_misplaced_exemplar() {
    const BOUNDS: [f64; 3] = [1.0, 2.0, 5.0];
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u32)
        .map(|w| {
            let (dir, stop) = (dir.path().to_owned(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let r = Registry::open_simulating_pid(&dir, Options::default(), 10 + w).unwrap();
                let h = r.histogram("lat", "Latency.", &[], &BOUNDS).unwrap();
                let h = h.unlabelled().unwrap().clone();
                let c = r.counter("req", "Requests.", &[]).unwrap();
                let c = c.unlabelled().unwrap().clone();
                let mut i = 0u64;
                // Two threads per process, as an engine's thread pool writes.
                let (h2, c2, stop2) = (h.clone(), c.clone(), Arc::clone(&stop));
                let twin = std::thread::spawn(move || {
                    let mut j = 0u64;
                    while !stop2.load(Ordering::Relaxed) {
                        let v = (j % 70) as f64 / 10.0;
                        write_labelled(&h2, &c2, v, 'p', (j % 90) as usize);
                        j += 1;
                    }
                });
                while !stop.load(Ordering::Relaxed) {
                    let v = (i % 61) as f64 / 10.0 + 0.05;
                    write_labelled(&h, &c, v, 'q', (i % 90) as usize);
                    i += 1;
                }
                twin.join().unwrap();
                r
            })
        })
        .collect();
    let mut reader = Reader::open(dir.path()).unwrap();
    // Scrapes are far quicker than the writers' start: wait until all three write.
    let started = std::time::Instant::now();
    while reader.snapshot().report.live_segments < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the writers never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut seen = 0;
    for _ in 0..300 {
        seen += check_whole(&scrape(&mut reader, Format::OpenMetrics), &BOUNDS);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        drop(w.join().unwrap());
    }
    assert!(seen > 300, "only {seen} exemplars seen");
}

/// A process whose segment is full when its series gets a first exemplar places the slots
/// in a later segment of its own: shown as any other, and kept by compactions that fold
/// a process's segments in one batch even when the archive part size splits the dead
/// segments (another process's big segment lies between them in age).
#[test]
fn exemplar_slots_in_a_later_segment_are_found_and_compacted_with_their_series() {
    let dir = tempfile::tempdir().unwrap();
    let small = Options {
        initial_segment_size: 4096,
        max_segment_size: 4096,
        ..Options::default()
    };
    let a = Registry::open_simulating_pid(dir.path(), small, 1).unwrap();
    let requests = a.counter("req", "Requests.", &[]).unwrap();
    let c = requests.unlabelled().unwrap().clone();
    c.inc();
    std::thread::sleep(Duration::from_millis(5));
    let big = Options {
        initial_segment_size: 1 << 20,
        ..Options::default()
    };
    let b = Registry::open_simulating_pid(dir.path(), big, 2).unwrap();
    b.gauge("other", "Other.", &[], shmetrics_writer::GaugeMode::Sum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(1.0);
    std::thread::sleep(Duration::from_millis(5));
    // Fill the first segment until a second one is opened (after b's, in age).
    let fill = a.counter("fill", "Filler.", &["i"]).unwrap();
    for i in 0.. {
        fill.labels([i.to_string()]).unwrap().inc();
        if a.segment_paths().len() == 2 {
            break;
        }
    }
    c.inc_by_with_exemplar(1.0, &[("trace_id", "late")])
        .unwrap();
    let paths = a.segment_paths();
    assert_eq!(paths.len(), 2, "{paths:?}");
    // The slots are in the second segment, the series in the first.
    assert_eq!(exemplar_block(&paths[1]).1, 1);

    let mut reader = Reader::open(dir.path()).unwrap();
    let shown = |reader: &mut Reader| {
        let text = scrape(reader, Format::OpenMetrics);
        let e = exemplars(&text);
        assert_eq!(e.len(), 1, "{text}");
        (e[0].sample.clone(), e[0].labels.clone())
    };
    let want = ("req_total 2.0".to_owned(), "trace_id=\"late\"".to_owned());
    assert_eq!(shown(&mut reader), want);
    drop((a, requests, c, fill, b));
    assert_eq!(shown(&mut reader), want, "dead");
    // The smallest part size: the dead segments of both processes do not fit one batch,
    // and the compaction folds them in several (a's two in one).
    reader.set_archive_part_size(0);
    let report = reader.compact().unwrap();
    assert_eq!(report.folded_segments, 3, "{report:?}");
    assert_eq!(report.generation, Some(1), "two batches: {report:?}");
    assert_eq!(shown(&mut reader), want, "after the compaction");
    assert_eq!(
        shown(&mut Reader::open(dir.path()).unwrap()),
        want,
        "a fresh reader"
    );
}

/// A series' slots are sized by its first exemplar: narrow (96 bytes of labels: a trace id
/// and a span id) or the widest; a later exemplar wider than its slots is dropped, one that
/// fits replaces the shown one.
#[test]
fn slots_are_sized_by_the_first_exemplar() {
    let dir = tempfile::tempdir().unwrap();
    let r = process(dir.path(), 1);
    let family = r.counter("req", "Requests.", &["k"]).unwrap();
    let (narrow, wide) = (family.labels(["n"]).unwrap(), family.labels(["w"]).unwrap());
    let long = "x".repeat(110);
    narrow
        .inc_by_with_exemplar(1.0, &[("trace_id", "short")])
        .unwrap();
    narrow
        .inc_by_with_exemplar(1.0, &[("trace_id", long.as_str())])
        .unwrap();
    wide.inc_by_with_exemplar(1.0, &[("trace_id", long.as_str())])
        .unwrap();
    wide.inc_by_with_exemplar(1.0, &[("trace_id", "short")])
        .unwrap();
    let text = scrape(&mut Reader::open(dir.path()).unwrap(), Format::OpenMetrics);
    let shown: Vec<(String, String)> = exemplars(&text)
        .into_iter()
        .map(|e| (e.sample, e.labels))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "req_total{k=\"n\"} 2.0".to_owned(),
                "trace_id=\"short\"".to_owned()
            ),
            (
                "req_total{k=\"w\"} 2.0".to_owned(),
                "trace_id=\"short\"".to_owned()
            ),
        ],
        "{text}"
    );
    narrow
        .inc_by_with_exemplar(1.0, &[("trace_id", "again")])
        .unwrap();
    let widths: Vec<u32> = inspect(&only_segment(dir.path()))
        .unwrap()
        .records
        .iter()
        .filter_map(|r| match &r.entry {
            RecordEntry::Exemplars { record, .. } => Some(record.slot_words),
            _ => None,
        })
        .collect();
    assert_eq!(widths, [16, 132]);
}
