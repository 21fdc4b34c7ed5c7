//! Infos and statesets (`prometheus_client`'s `Info` and `Enum`) across processes: the
//! newest value wins per label set, among live processes (`livemostrecent`) or all
//! (`mostrecent`); rendered as OpenMetrics' info and stateset, and as gauges in the text
//! format; kept by compaction.

use std::path::Path;
use std::time::Duration;

use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{Error, GaugeMode, Options, Registry};

const STATES: [&str; 3] = ["starting", "running", "stopped"];

fn process(dir: &Path, pid: u32) -> Registry {
    Registry::open_simulating_pid(dir, Options::default(), pid).unwrap()
}

fn scrape(reader: &mut Reader, format: Format) -> String {
    let mut out = Vec::new();
    reader.set_created_series(false);
    reader
        .scrape(format, &PrefixFilter::default(), false, &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// The sample lines of `text` for `name` (its `_info` sample, or its state samples).
fn samples(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Lets the next write of another process be strictly newer.
fn tick() {
    std::thread::sleep(Duration::from_millis(5));
}

#[test]
fn the_newest_info_and_state_of_the_live_processes_win() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (process(dir.path(), 1), process(dir.path(), 2));
    let info = |r: &Registry| {
        r.info("build", "Build.", &["component"], GaugeMode::LiveMostRecent)
            .unwrap()
    };
    let phase = |r: &Registry| {
        r.state_set(
            "phase",
            "Phase.",
            &["component"],
            &STATES,
            GaugeMode::LiveMostRecent,
        )
        .unwrap()
    };
    info(&a).set(&["api"], &[("version", "1.0")]).unwrap();
    phase(&a).labels(["api"]).unwrap().state("running").unwrap();
    tick();
    info(&b)
        .set(&["api"], &[("version", "1.1"), ("commit", "abc")])
        .unwrap();
    // Created, never set: the first state, older than any state set.
    phase(&b).labels(["api"]).unwrap();
    phase(&b).labels(["worker"]).unwrap();

    let mut reader = Reader::open(dir.path()).unwrap();
    let text = scrape(&mut reader, Format::Prometheus);
    assert!(
        text.contains("# HELP build_info Build.\n# TYPE build_info gauge\n"),
        "{text}"
    );
    assert_eq!(
        samples(&text, "build_info"),
        [r#"build_info{commit="abc",component="api",version="1.1"} 1.0"#],
        "{text}"
    );
    assert!(text.contains("# TYPE phase gauge\n"), "{text}");
    assert_eq!(
        samples(&text, "phase{"),
        [
            r#"phase{component="api",phase="starting"} 0.0"#,
            r#"phase{component="api",phase="running"} 1.0"#,
            r#"phase{component="api",phase="stopped"} 0.0"#,
            r#"phase{component="worker",phase="starting"} 1.0"#,
            r#"phase{component="worker",phase="running"} 0.0"#,
            r#"phase{component="worker",phase="stopped"} 0.0"#,
        ],
        "{text}"
    );
    let om = scrape(&mut reader, Format::OpenMetrics);
    assert!(om.contains("# TYPE build info\n"), "{om}");
    assert!(om.contains("# TYPE phase stateset\n"), "{om}");
    assert!(
        om.contains("build_info{commit=\"abc\",component=\"api\",version=\"1.1\"} 1.0\n"),
        "{om}"
    );

    // The newest write wins, whichever process and series wrote it; the same info set
    // again is newest again.
    tick();
    info(&a).set(&["api"], &[("version", "1.0")]).unwrap();
    phase(&b).labels(["api"]).unwrap().state("stopped").unwrap();
    let text = scrape(&mut reader, Format::Prometheus);
    assert_eq!(
        samples(&text, "build_info"),
        [r#"build_info{component="api",version="1.0"} 1.0"#]
    );
    assert!(
        text.contains(r#"phase{component="api",phase="stopped"} 1.0"#),
        "{text}"
    );

    // Live processes only: when b dies, a's state shows again, and the worker's series
    // (b's alone) goes.
    drop(b);
    let text = scrape(&mut reader, Format::Prometheus);
    assert!(
        text.contains(r#"phase{component="api",phase="running"} 1.0"#),
        "{text}"
    );
    assert!(!text.contains("worker"), "{text}");
    drop(a);
    let text = scrape(&mut reader, Format::Prometheus);
    assert!(!text.contains("build") && !text.contains("phase"), "{text}");
}

#[test]
fn mostrecent_keeps_dead_processes_values_through_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let a = process(dir.path(), 1);
    a.info("build", "Build.", &[], GaugeMode::MostRecent)
        .unwrap()
        .set_unlabelled(&[("version", "1.0")])
        .unwrap();
    let phase = a
        .state_set("phase", "Phase.", &[], &STATES, GaugeMode::MostRecent)
        .unwrap();
    phase.unlabelled().unwrap().state("stopped").unwrap();
    tick();
    let b = process(dir.path(), 2);
    b.info("build", "Build.", &[], GaugeMode::MostRecent)
        .unwrap()
        .set_unlabelled(&[("version", "2.0")])
        .unwrap();
    drop(b);
    let mut reader = Reader::open(dir.path()).unwrap();
    let before = scrape(&mut reader, Format::OpenMetrics);
    assert!(
        before.contains("build_info{version=\"2.0\"} 1.0\n"),
        "{before}"
    );
    // Handles keep their process's segment live: the process ends with the last.
    drop((phase, a));
    assert_eq!(scrape(&mut reader, Format::OpenMetrics), before);
    let report = reader.compact().unwrap();
    assert_eq!(report.folded_segments, 2);
    assert_eq!(scrape(&mut reader, Format::OpenMetrics), before);
    let fresh = scrape(&mut Reader::open(dir.path()).unwrap(), Format::OpenMetrics);
    assert_eq!(fresh, before);
    assert!(fresh.contains("phase{phase=\"stopped\"} 1.0\n"), "{fresh}");

    // A process that sets an info after the compaction is newer than the archive's.
    let c = process(dir.path(), 3);
    c.info("build", "Build.", &[], GaugeMode::MostRecent)
        .unwrap()
        .set_unlabelled(&[("version", "3.0")])
        .unwrap();
    let text = scrape(&mut reader, Format::Prometheus);
    assert_eq!(
        samples(&text, "build_info"),
        [r#"build_info{version="3.0"} 1.0"#]
    );
}

#[test]
fn bad_definitions_and_values_are_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let message = |e: Error| e.to_string();
    let sum = r.info("i", "I.", &[], GaugeMode::LiveSum).unwrap_err();
    assert!(message(sum).contains("mostrecent or livemostrecent"));
    let no_states = r
        .state_set("e", "E.", &[], &[], GaugeMode::MostRecent)
        .unwrap_err();
    assert!(message(no_states).contains("at least one state"));
    let own_label = r
        .state_set("e", "E.", &["e"], &["a"], GaugeMode::MostRecent)
        .unwrap_err();
    assert!(message(own_label).contains("valid label name other than its label names"));
    let e = r
        .state_set("e", "E.", &[], &["a", "b"], GaugeMode::MostRecent)
        .unwrap();
    let unknown = e.unlabelled().unwrap().state("c").unwrap_err();
    assert_eq!(
        message(unknown),
        r#"unknown state "c"; the states are ["a", "b"]"#
    );
    let other_states = r
        .state_set("e", "E.", &[], &["a"], GaugeMode::MostRecent)
        .unwrap_err();
    assert!(message(other_states).contains("states"), "other states");
    let i = r
        .info("i", "I.", &["component"], GaugeMode::MostRecent)
        .unwrap();
    let repeated = i
        .set(&["x"], &[("component", "y")])
        .unwrap_err()
        .to_string();
    assert!(repeated.contains("repeats a label"), "{repeated}");
    assert!(i.set(&["x"], &[("__reserved", "y")]).is_err());
    assert!(i.set::<&str, &str, &str>(&[], &[]).is_err());
}

#[test]
fn inspect_shows_states_and_info_labels() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    r.info("build", "Build.", &["component"], GaugeMode::LiveMostRecent)
        .unwrap()
        .set(&["api"], &[("version", "1.0")])
        .unwrap();
    r.state_set("phase", "Phase.", &[], &STATES, GaugeMode::LiveMostRecent)
        .unwrap()
        .unlabelled()
        .unwrap()
        .state("running")
        .unwrap();
    let [segment] = &r.segment_paths()[..] else {
        panic!("one segment")
    };
    let text = shmetrics_reader::inspect::inspect(segment)
        .unwrap()
        .to_string();
    assert!(
        text.contains("family #0 build info mode=livemostrecent (exposed as build_info)"),
        "{text}"
    );
    assert!(
        text.contains(r#"series of #0 build{component="api",version="1.0"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"states: ["starting", "running", "stopped"]"#),
        "{text}"
    );
}
