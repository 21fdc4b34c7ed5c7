//! The fold of live segments on several threads (`Reader::set_fold_threads`): groups of
//! segments folded at once and joined in the processes' age order give exactly the bytes
//! one thread gives, for every kind, merge mode and exemplar, before and after deaths.

use std::path::Path;

use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{GaugeMode, Options, Registry};

/// Writes one round of every kind into process `p` (the values differ by process and round,
/// float sums included, so a wrong join shows).
fn write(r: &Registry, p: usize, round: usize) {
    let x = (p * 7 + round * 3) as f64;
    let label = |i: usize| format!("v{}", (p + i) % 3);
    for i in 0..4 {
        let c = r.counter("requests", "Requests.", &["route"]).unwrap();
        c.labels([label(i)]).unwrap().inc();
        let f = r.counter("seconds", "Seconds.", &["route"]).unwrap();
        f.labels([label(i)]).unwrap().inc_by(0.1 * x + 1e-9);
        let h = r
            .histogram("latency", "Latency.", &["route"], &[0.5, 1.0, 5.0])
            .unwrap();
        let child = h.labels([label(i)]).unwrap();
        child.observe(0.1 * x);
        let trace = format!("p{p}r{round}i{i}");
        child
            .observe_with_exemplar(x, &[("trace_id", trace.as_str())])
            .unwrap();
        let s = r.summary("size", "Size.", &["route"]).unwrap();
        s.labels([label(i)]).unwrap().observe(x / 3.0);
    }
    for (m, mode) in GaugeMode::ALL.iter().enumerate() {
        let name = format!("gauge_{m}");
        let g = r.gauge(&name, "A gauge.", &["route"], *mode).unwrap();
        // NaN now and then: the first of the extremes keeps it only when all are.
        let v = if (p + round).is_multiple_of(5) {
            f64::NAN
        } else {
            x - 10.0
        };
        g.labels([label(m)]).unwrap().set(v);
    }
    let info = r
        .info("build", "Build.", &["component"], GaugeMode::MostRecent)
        .unwrap();
    info.set(&["engine"], &[("version", format!("{p}.{round}").as_str())])
        .unwrap();
    let state = r
        .state_set(
            "phase",
            "Phase.",
            &["engine"],
            &["idle", "busy"],
            GaugeMode::LiveMostRecent,
        )
        .unwrap();
    state.labels(["e"]).unwrap().set_index((p + round) % 2);
}

fn scrape(reader: &mut Reader, format: Format) -> String {
    let mut out = Vec::new();
    let filter = PrefixFilter::default();
    reader.scrape(format, &filter, false, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn processes(dir: &Path, count: usize) -> Vec<Option<Registry>> {
    (0..count)
        .map(|p| {
            let pid = 4000 + p as u32;
            Some(Registry::open_simulating_pid(dir, Options::default(), pid).unwrap())
        })
        .collect()
}

#[test]
fn threads_fold_to_the_bytes_one_thread_gives() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = processes(dir.path(), 6);
    let mut one = Reader::open(dir.path()).unwrap();
    let mut four = Reader::open(dir.path()).unwrap();
    four.set_fold_threads(4);
    four.set_fold_group_min_bytes(0);
    four.set_fold_threads_in_step(true);
    for round in 0..4 {
        for (p, r) in procs.iter().enumerate() {
            if let Some(r) = r {
                write(r, p, round);
            }
        }
        for format in [Format::OpenMetrics, Format::Prometheus] {
            let expected = scrape(&mut one, format);
            assert_eq!(scrape(&mut four, format), expected, "round {round}");
        }
        let (a, b) = (one.snapshot(), four.snapshot());
        // (Compared as text: NaN gauges are not equal to themselves.)
        let shown = |s: &shmetrics_reader::snapshot::Snapshot| format!("{s:?}");
        assert_eq!(shown(&b.snapshot), shown(&a.snapshot), "round {round}");
        let live = procs.iter().flatten().count();
        assert_eq!(
            (a.report.fold_threads, b.report.fold_threads),
            (1, live.min(4)),
            "round {round}"
        );
        // Processes die between rounds: their values move to the dead fold.
        procs[round] = None;
    }
    // The exemplars did make it through the join.
    let text = scrape(&mut four, Format::OpenMetrics);
    assert!(text.contains("# {trace_id=\"p5r3i"), "{text}");
}

#[test]
fn a_small_directory_stays_on_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let procs = processes(dir.path(), 3);
    for (p, r) in procs.iter().enumerate() {
        write(r.as_ref().unwrap(), p, 0);
    }
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.set_fold_threads(4);
    // Three segments of a few KiB: below a MiB of slots per thread.
    assert_eq!(reader.snapshot().report.fold_threads, 1);
    reader.set_fold_threads(0);
    assert_eq!(reader.snapshot().report.fold_threads, 1);
}
