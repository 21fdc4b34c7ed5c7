//! Process metrics of the live writers (`Reader::set_process_metrics`): this test process is
//! the busy writer; simulated writers stand for another pid namespace and for dead
//! processes.

use std::time::{Duration, Instant};

use shmetrics_reader::snapshot::Value;
use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{Options, Registry};

/// The value of `family{pid="PID"}` in the last scrape's process metrics.
fn value(reader: &mut Reader, family: &str, pid: u32) -> Option<f64> {
    let scrape = reader.snapshot();
    let families = shmetrics_reader::process::families(&scrape.report);
    let f = families.iter().find(|f| &*f.name == family)?;
    let series = f
        .series
        .iter()
        .find(|s| s.labels.get("pid") == Some(pid.to_string().as_str()))?;
    match series.value {
        Value::Counter(v) | Value::Gauge(v) => Some(v),
        _ => None,
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn own_rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kib * 1024.0
}

/// This thread's CPU time (user + system), from `/proc/thread-self/stat`, in clock ticks.
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name, which ends with the last ')': utime is the 14th field
    // of the line, the 12th after it.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Burns CPU until this thread has used `ticks` clock ticks of it (however loaded the
/// machine: wall time would not say how much CPU it got), or 30 s have passed.
fn burn_cpu(ticks: u64) -> u64 {
    let start = Instant::now();
    let first = thread_cpu_ticks();
    let mut x = 0u64;
    while thread_cpu_ticks() < first + ticks && start.elapsed() < Duration::from_secs(30) {
        for i in 0..100_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        }
    }
    x
}

#[test]
fn a_busy_writer_reports_its_process_and_strangers_are_only_counted() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let family = registry.counter("work", "Work.", &[]).unwrap();
    family.labels(&[] as &[&str]).unwrap().inc();
    let me = std::process::id();

    // A writer whose pid is not itself here: pid 1 is another process (other start time),
    // and a pid above any pid_max is no process at all.
    let init = Registry::open_simulating_pid(dir.path(), Options::default(), 1).unwrap();
    init.counter("work", "Work.", &[]).unwrap();
    let ghost = Registry::open_simulating_pid(dir.path(), Options::default(), 9_999_999).unwrap();
    ghost.counter("work", "Work.", &[]).unwrap();

    let mut reader = Reader::open(dir.path()).unwrap();
    assert!(
        reader.snapshot().report.processes.is_none(),
        "off by default"
    );
    reader.set_process_metrics(true);

    let before = value(&mut reader, "process_cpu_seconds", me).expect("our CPU time");
    // 0.4 s of CPU at the usual 100 ticks per second.
    std::hint::black_box(burn_cpu(40));
    let after = value(&mut reader, "process_cpu_seconds", me).unwrap();
    assert!(after >= before + 0.3, "CPU seconds {before} -> {after}");

    let rss = value(&mut reader, "process_resident_memory_bytes", me).unwrap();
    let proc_rss = own_rss();
    assert!((rss / proc_rss - 1.0).abs() < 0.1, "{rss} vs {proc_rss}");
    let fds = value(&mut reader, "process_open_fds", me).unwrap();
    assert!(fds >= 3.0, "{fds}");
    assert!(value(&mut reader, "process_max_fds", me).unwrap() >= fds);
    let start = value(&mut reader, "process_start_time_seconds", me).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start <= now && start > now - 3600.0, "{start}");
    assert!(value(&mut reader, "process_virtual_memory_bytes", me).unwrap() >= rss);

    let scrape = reader.snapshot();
    let processes = scrape.report.processes.as_ref().unwrap();
    assert_eq!((processes.attributed, processes.unattributed), (1, 2));
    for f in &processes.families {
        let pids: Vec<&str> = f
            .series
            .iter()
            .filter_map(|s| s.labels.get("pid"))
            .collect();
        assert_eq!(pids, [me.to_string()], "{}", f.name);
    }

    // The exposition: process families beside the merged ones whatever the filter, and the
    // self-metric counting both kinds of writers.
    let mut text = Vec::new();
    reader
        .scrape(
            Format::Prometheus,
            &PrefixFilter::new(["vllm:"]),
            true,
            &mut text,
        )
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(&format!("process_cpu_seconds_total{{pid=\"{me}\"}} ")),
        "{text}"
    );
    assert!(
        !text.contains("pid=\"1\"") && !text.contains("pid=\"9999999\""),
        "{text}"
    );
    assert!(text.contains("shmetrics_reader_process_metrics_writers{state=\"reported\"} 1.0"));
    assert!(text.contains("shmetrics_reader_process_metrics_writers{state=\"unattributed\"} 2.0"));
    assert!(!text.contains("work_total"), "filtered out");
}

#[test]
fn dead_writers_have_no_process_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // A segment naming this very process (pid and start time), but dead: its lock released.
    let dead =
        Registry::open_simulating_pid(dir.path(), Options::default(), std::process::id()).unwrap();
    dead.counter("work", "Work.", &[]).unwrap();
    dead.end_liveness();
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.set_process_metrics(true);
    let scrape = reader.snapshot();
    assert_eq!(scrape.report.dead_segments, 1);
    let processes = scrape.report.processes.as_ref().unwrap();
    assert_eq!((processes.attributed, processes.unattributed), (0, 0));
    assert!(processes.families.is_empty());
}
