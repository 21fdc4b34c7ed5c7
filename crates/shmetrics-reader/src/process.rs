//! Process metrics of every live writer, read from `/proc` at scrape time: what
//! `prometheus_client`'s process collector gives one process, for each process writing into
//! the directory, with a `pid` label.
//!
//! A segment names its writer by pid and start time (clock ticks since boot, field 22 of
//! `/proc/<pid>/stat`). A pid is only attributed when `/proc/<pid>/stat` exists and has the
//! same start time: a writer in another pid namespace (a container sharing the directory)
//! has a pid that means another process here, or none, and a recycled pid belongs to a new
//! process. Such writers are counted as unattributed, never reported under a wrong pid.
//! `prometheus_client`'s `.db` files name a pid without a start time, so their writers are
//! not reported.

use std::collections::BTreeSet;
use std::sync::Arc;

use shmetrics_layout::MetricKind;

use crate::snapshot::{Family, Series, SeriesLabels, Value};

/// A live writer as its segments name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriterId {
    /// Its pid, as it saw it.
    pub pid: u32,
    /// Its start time in clock ticks since boot (0 when it could not read it).
    pub start_time_ticks: u64,
}

/// The process metrics of a scrape's live writers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessReport {
    /// Writers whose metrics are reported.
    pub attributed: usize,
    /// Live writers whose pid is not theirs here (no such process, or another start time).
    pub unattributed: usize,
    /// `process_*` families with a `pid` label, sorted by name.
    pub families: Vec<Family>,
}

/// What `/proc` says of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

/// Clock ticks per second, page size and boot time (seconds since the epoch).
#[derive(Clone, Copy, Debug)]
struct System {
    ticks_per_second: f64,
    page_size: f64,
    boot_time: f64,
}

impl System {
    fn read() -> Option<Self> {
        use nix::unistd::{SysconfVar, sysconf};
        let ticks = sysconf(SysconfVar::CLK_TCK).ok()??;
        let page = sysconf(SysconfVar::PAGE_SIZE).ok()??;
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot_time = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<f64>()
            .ok()?;
        Some(Self {
            ticks_per_second: ticks as f64,
            page_size: page as f64,
            boot_time,
        })
    }
}

/// The fields of `/proc/<pid>/stat` after the command name: (start time in ticks, sample
/// without the fd counts).
fn parse_stat(stat: &str, system: &System) -> Option<(u64, Sample)> {
    // The command name (field 2) may contain spaces and parentheses; the fields after the
    // last `)` are plain. Field 3 (state) is index 0.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let start = field(22)?;
    let ticks = system.ticks_per_second;
    Some((
        start,
        Sample {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            virtual_bytes: field(23)? as f64,
            resident_bytes: field(24)? as f64 * system.page_size,
            start_time_seconds: system.boot_time + start as f64 / ticks,
            open_fds: None,
            max_fds: None,
        },
    ))
}

/// The soft limit of open files in `/proc/<pid>/limits` (`+Inf` when unlimited).
fn parse_max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(f64::INFINITY)
    } else {
        soft.parse().ok()
    }
}

/// The `process_*` families of `report` (none unless the reader read them).
pub fn families(report: &crate::ScrapeReport) -> Vec<Family> {
    report
        .processes
        .as_ref()
        .map(|p| p.families.clone())
        .unwrap_or_default()
}

/// Reads `/proc/<pid>` for `writer`; `None` when the pid is not that writer here.
fn sample(writer: WriterId, system: &System) -> Option<Sample> {
    if writer.start_time_ticks == 0 {
        return None;
    }
    let proc = format!("/proc/{}", writer.pid);
    let stat = std::fs::read_to_string(format!("{proc}/stat")).ok()?;
    let (start, mut sample) = parse_stat(&stat, system)?;
    if start != writer.start_time_ticks {
        return None;
    }
    // Both need the writer's user (or root); without them the other fields still count.
    sample.open_fds = std::fs::read_dir(format!("{proc}/fd"))
        .ok()
        .map(|d| d.count() as f64);
    sample.max_fds = std::fs::read_to_string(format!("{proc}/limits"))
        .ok()
        .as_deref()
        .and_then(parse_max_fds);
    Some(sample)
}

/// Reads the process metrics of `writers` (each once, whatever its segments).
pub(crate) fn read(writers: &BTreeSet<WriterId>) -> ProcessReport {
    let Some(system) = System::read() else {
        log::warn!("process metrics: cannot read /proc/stat or sysconf; none reported");
        return ProcessReport {
            unattributed: writers.len(),
            ..ProcessReport::default()
        };
    };
    let mut samples: Vec<(u32, Sample)> = Vec::with_capacity(writers.len());
    let mut report = ProcessReport::default();
    for &w in writers {
        match sample(w, &system) {
            Some(s) => samples.push((w.pid, s)),
            None => report.unattributed += 1,
        }
    }
    samples.sort_by_key(|(pid, _)| *pid);
    samples.dedup_by_key(|(pid, _)| *pid);
    report.attributed = samples.len();
    let family =
        |name: &str, kind: MetricKind, help: &str, value: fn(&Sample) -> Option<f64>| Family {
            name: Arc::from(name),
            kind,
            help: Arc::from(help),
            bounds: Arc::from(&[][..]),
            series: samples
                .iter()
                .filter_map(|(pid, s)| {
                    let v = value(s)?;
                    let labels = vec![(Box::from("pid"), Box::from(pid.to_string()))];
                    Some(Series {
                        labels: Arc::new(SeriesLabels::new(labels)),
                        pid: None,
                        created_unix_nanos: None,
                        exemplars: None,
                        value: match kind {
                            MetricKind::Counter => Value::Counter(v),
                            _ => Value::Gauge(v),
                        },
                    })
                })
                .collect(),
        };
    report.families = vec![
        family(
            "process_cpu_seconds",
            MetricKind::Counter,
            "Total user and system CPU time spent in seconds.",
            |s| Some(s.cpu_seconds),
        ),
        family(
            "process_max_fds",
            MetricKind::Gauge,
            "Maximum number of open file descriptors.",
            |s| s.max_fds,
        ),
        family(
            "process_open_fds",
            MetricKind::Gauge,
            "Number of open file descriptors.",
            |s| s.open_fds,
        ),
        family(
            "process_resident_memory_bytes",
            MetricKind::Gauge,
            "Resident memory size in bytes.",
            |s| Some(s.resident_bytes),
        ),
        family(
            "process_start_time_seconds",
            MetricKind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            |s| Some(s.start_time_seconds),
        ),
        family(
            "process_virtual_memory_bytes",
            MetricKind::Gauge,
            "Virtual memory size in bytes.",
            |s| Some(s.virtual_bytes),
        ),
    ]
    .into_iter()
    .filter(|f| !f.series.is_empty())
    .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM: System = System {
        ticks_per_second: 100.0,
        page_size: 4096.0,
        boot_time: 1_700_000_000.0,
    };

    #[test]
    fn stat_fields_after_an_odd_command_name() {
        // Fields 3.. of a real line; the name has a space and a parenthesis.
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    3 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let (start, s) = parse_stat(stat, &SYSTEM).unwrap();
        assert_eq!(start, 123_456);
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.virtual_bytes, 987_654_321.0);
        assert_eq!(s.resident_bytes, 2048.0 * 4096.0);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 1234.56);
        assert_eq!(parse_stat("4242 (truncated", &SYSTEM), None);
    }

    #[test]
    fn max_fds_from_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), Some(f64::INFINITY));
        assert_eq!(parse_max_fds("nothing"), None);
    }

    #[test]
    fn this_process_is_attributed_and_a_wrong_start_time_is_not() {
        let system = System::read().unwrap();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (start, _) = parse_stat(&stat, &system).unwrap();
        let me = WriterId {
            pid: std::process::id(),
            start_time_ticks: start,
        };
        let other = WriterId {
            start_time_ticks: start + 1,
            ..me
        };
        let report = read(&[me, other].into_iter().collect());
        assert_eq!((report.attributed, report.unattributed), (1, 1));
        let names: Vec<&str> = report.families.iter().map(|f| &*f.name).collect();
        assert_eq!(
            names,
            [
                "process_cpu_seconds",
                "process_max_fds",
                "process_open_fds",
                "process_resident_memory_bytes",
                "process_start_time_seconds",
                "process_virtual_memory_bytes"
            ]
        );
    }
}
