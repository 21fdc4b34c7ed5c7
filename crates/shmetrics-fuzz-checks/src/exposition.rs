//! What must hold of any snapshot and its exposition, whatever the segments contained:
//! the snapshot is well formed, and each rendering reads back, line by line, to exactly
//! the families, labels and values of the snapshot (so no hostile name, label value or
//! help text can break or inject a line).

use std::collections::HashSet;

use shmetrics_layout::MetricKind;
use shmetrics_layout::exemplar::{encode_exemplar_labels, exemplar_count};
use shmetrics_layout::limits::{MAX_BUCKETS, MAX_LABEL_SET_LEN, MAX_LABELS};
use shmetrics_layout::names::{
    Escaping, escaped_name, exposed_names, is_legacy_label_name, is_valid_label_name,
    is_valid_metric_name,
};
use shmetrics_layout::slots::bucket_index;
use shmetrics_reader::render::{Format, PrefixFilter, render_into};
use shmetrics_reader::snapshot::{
    Exemplar, Family, Series, SeriesLabels, Snapshot, Value, unix_seconds,
};

/// Checks the structure of a snapshot: families sorted by name with disjoint exposed
/// names, each with series sorted and unique by labels and pid; label names valid, sorted,
/// unique and not reserved; values of the family's type; histogram bounds finite and
/// strictly increasing with one bucket more than bounds.
///
/// # Panics
/// On the first violation.
pub fn check_snapshot(snapshot: &Snapshot) {
    let mut exposed = HashSet::new();
    for pair in snapshot.families.windows(2) {
        assert!(pair[0].name < pair[1].name, "families not sorted: {pair:?}");
    }
    for f in &snapshot.families {
        assert!(
            is_valid_metric_name(&f.name),
            "bad family name {:?}",
            f.name
        );
        for n in exposed_names(f.kind, &f.name) {
            assert!(exposed.insert(n.clone()), "two families expose {n}");
        }
        assert!(!f.series.is_empty(), "family {} without series", f.name);
        if f.kind == MetricKind::Histogram {
            assert!(f.bounds.len() <= MAX_BUCKETS, "{} buckets", f.bounds.len());
            assert!(f.bounds.iter().all(|b| b.is_finite()), "{:?}", f.bounds);
            assert!(f.bounds.windows(2).all(|w| w[0] < w[1]), "{:?}", f.bounds);
        } else {
            assert!(f.bounds.is_empty(), "{} has bounds", f.name);
        }
        for pair in f.series.windows(2) {
            assert!(
                (&pair[0].labels, pair[0].pid) < (&pair[1].labels, pair[1].pid),
                "series of {} not sorted or repeated: {pair:?}",
                f.name
            );
        }
        for s in &f.series {
            check_series(f, s);
        }
    }
}

fn check_series(f: &Family, s: &Series) {
    let names: Vec<&str> = s.labels.pairs.iter().map(|(n, _)| &**n).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "labels {names:?}");
    for n in &names {
        assert!(is_valid_label_name(n), "bad label name {n:?} in {}", f.name);
    }
    // Nothing over the limits reaches a snapshot.
    let set_len: usize = s.labels.pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(
        names.len() <= MAX_LABELS && set_len <= MAX_LABEL_SET_LEN,
        "{names:?}"
    );
    let reserved = match f.kind {
        MetricKind::Histogram => Some("le"),
        MetricKind::Summary => Some("quantile"),
        MetricKind::Gauge if s.pid.is_some() => Some("pid"),
        _ => None,
    };
    if let Some(r) = reserved {
        assert!(!names.contains(&r), "{} carries reserved label {r}", f.name);
    }
    // Sorted by name, as `SeriesLabels::new` sorts them.
    assert_eq!(*s.labels, SeriesLabels::new(s.labels.pairs.clone()));
    let ok = match (&s.value, f.kind) {
        (Value::Counter(_), MetricKind::Counter) => s.pid.is_none(),
        (Value::Gauge(_), MetricKind::Gauge) => true,
        (Value::Histogram { buckets, .. }, MetricKind::Histogram) => {
            s.pid.is_none() && buckets.len() == f.bounds.len() + 1
        }
        (Value::Summary { .. }, MetricKind::Summary) => s.pid.is_none(),
        _ => false,
    };
    assert!(ok, "{} ({}) has series {s:?}", f.name, f.kind);
    // Exemplars: one per `_total` or `_bucket` sample, within OpenMetrics' limits, each
    // histogram exemplar in its bucket, none shown empty.
    if let Some(exemplars) = &s.exemplars {
        let samples = exemplar_count(f.kind, f.bounds.len())
            .unwrap_or_else(|| panic!("{} ({}) has exemplars", f.name, f.kind));
        assert_eq!(exemplars.len(), samples, "{s:?}");
        assert!(exemplars.iter().any(Option::is_some), "{s:?}");
        for (i, e) in exemplars.iter().enumerate() {
            let Some(e) = e else { continue };
            assert!(encode_exemplar_labels(&e.labels).is_ok(), "{e:?}");
            if f.kind == MetricKind::Histogram {
                assert_eq!(bucket_index(&f.bounds, e.value), i, "{e:?} in bucket {i}");
            }
        }
    }
}

/// Renders `snapshot` with `extra` families (the self-metrics) in both formats and reads
/// each rendering back: every line is where it must be, and label values, help texts and
/// numbers unescape and parse to exactly the snapshot's.
///
/// # Panics
/// On the first difference.
pub fn check_render(snapshot: &Snapshot, extra: &[Family]) {
    let mut order: Vec<&Family> = snapshot.families.iter().chain(extra).collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let mut buf = Vec::new();
        render_into(snapshot, extra, format, &PrefixFilter::default(), &mut buf);
        let text = String::from_utf8(buf).expect("exposition is UTF-8");
        let body = match format {
            Format::OpenMetrics => text
                .strip_suffix("# EOF\n")
                .expect("OpenMetrics ends with # EOF"),
            Format::Prometheus => &text,
        };
        // Split on '\n' only: a carriage return is an ordinary character in both formats.
        let mut lines = match body.strip_suffix('\n') {
            Some(body) => body.split('\n').collect::<Vec<_>>(),
            None => {
                assert!(body.is_empty(), "exposition does not end with a newline");
                Vec::new()
            }
        }
        .into_iter();
        for family in &order {
            read_family(family, format, &mut lines);
        }
        assert_eq!(lines.next(), None, "lines after the last family");
    }
}

fn read_family<'a>(family: &Family, format: Format, lines: &mut impl Iterator<Item = &'a str>) {
    let mut next = || lines.next().expect("exposition ends early");
    let name = &*family.name;
    // Names outside the classic set are exposed with underscores (the default escaping).
    let head = exposed(&match (family.kind, format) {
        (MetricKind::Counter, Format::Prometheus) => format!("{name}_total"),
        (MetricKind::Info, Format::Prometheus) => format!("{name}_info"),
        _ => name.to_owned(),
    });
    let type_name = match format {
        Format::Prometheus => family.kind.text_type(),
        Format::OpenMetrics => family.kind.as_str(),
    };
    let help = next()
        .strip_prefix(&format!("# HELP {head} "))
        .unwrap_or_else(|| panic!("no HELP line for {head}"));
    assert_eq!(
        unescape(help, format == Format::OpenMetrics),
        *family.help,
        "help of {head}"
    );
    assert_eq!(next(), format!("# TYPE {head} {type_name}"));
    for series in &family.series {
        let expected = |labels: Vec<(String, String)>| {
            let mut pairs: Vec<(String, String)> = owned_pairs(&series.labels)
                .into_iter()
                .map(|(n, v)| (escaped_name(&n, false, Escaping::Underscores), v))
                .collect();
            if let Some(pid) = series.pid {
                pairs.push(("pid".into(), pid.to_string()));
            }
            pairs.extend(labels);
            pairs
        };
        let exemplar = |i: usize| {
            let exemplars = series.exemplars.as_deref();
            exemplars.and_then(|e| e.get(i)).and_then(Option::as_ref)
        };
        match &series.value {
            Value::Counter(v) | Value::Gauge(v) => {
                let suffix = if family.kind == MetricKind::Counter {
                    "_total"
                } else {
                    ""
                };
                let (labels, value) = read_sample_with_exemplar(next(), name, suffix);
                let value = read_exemplar(value, exemplar(0), format);
                assert_eq!(labels, expected(vec![]));
                assert_same_f64(parse_f64(value), *v);
            }
            Value::Histogram { buckets, sum } => {
                let mut cumulative = 0u64;
                for (i, count) in buckets.iter().enumerate() {
                    let (labels, value) = read_sample_with_exemplar(next(), name, "_bucket");
                    let value = read_exemplar(value, exemplar(i), format);
                    let le = labels.last().map(|(n, v)| (n.as_str(), v.clone()));
                    let le_value = match family.bounds.get(i) {
                        Some(b) => {
                            let (n, v) = le.clone().expect("le label");
                            assert_eq!(n, "le");
                            assert_eq!(parse_f64(&v), *b, "le {v} for bound {b}");
                            v
                        }
                        None => "+Inf".to_owned(),
                    };
                    assert_eq!(labels, expected(vec![("le".into(), le_value)]));
                    cumulative = cumulative.saturating_add(*count);
                    assert_eq!(value.parse::<u64>().ok(), Some(cumulative));
                }
                read_count_and_sum(next(), next(), name, cumulative, *sum, &expected(vec![]));
            }
            Value::Summary { count, sum } => {
                read_count_and_sum(next(), next(), name, *count, *sum, &expected(vec![]));
            }
            Value::Info => {
                let (labels, value) = read_sample(next(), name, "_info");
                assert_eq!(labels, expected(vec![]));
                assert_eq!(value, "1.0");
            }
            Value::State { states, index } => {
                for (i, state) in states.iter().enumerate() {
                    // The family's name labels the state, in label order.
                    let mut pairs = owned_pairs(&series.labels);
                    let at = pairs.partition_point(|(n, _)| n.as_str() < name);
                    pairs.insert(at, (name.to_owned(), state.clone()));
                    let mut want: Vec<(String, String)> = pairs
                        .into_iter()
                        .map(|(n, v)| (escaped_name(&n, false, Escaping::Underscores), v))
                        .collect();
                    if let Some(pid) = series.pid {
                        want.push(("pid".into(), pid.to_string()));
                    }
                    let (labels, value) = read_sample(next(), name, "");
                    assert_eq!(labels, want);
                    assert_eq!(value, if i == *index { "1.0" } else { "0.0" });
                }
            }
        }
        // OpenMetrics ends a counter's, histogram's or summary's series with its creation
        // time, when known.
        if let Some(created) = series.created_seconds()
            && format == Format::OpenMetrics
            && family.kind != MetricKind::Gauge
        {
            let (labels, value) = read_sample(next(), name, "_created");
            assert_eq!(labels, expected(vec![]));
            assert_same_f64(parse_f64(value), created);
        }
    }
}

/// The label pairs of a series as owned strings, sorted by name.
pub fn owned_pairs(labels: &SeriesLabels) -> Vec<(String, String)> {
    labels
        .pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn read_count_and_sum(
    count_line: &str,
    sum_line: &str,
    name: &str,
    count: u64,
    sum: f64,
    labels: &[(String, String)],
) {
    let (l, v) = read_sample(count_line, name, "_count");
    assert_eq!(l, labels);
    assert_eq!(v.parse::<u64>().ok(), Some(count), "{count_line}");
    let (l, v) = read_sample(sum_line, name, "_sum");
    assert_eq!(l, labels);
    assert_same_f64(parse_f64(v), sum);
}

/// `name` as the default escaping exposes a metric name.
fn exposed(name: &str) -> String {
    escaped_name(name, true, Escaping::Underscores)
}

/// Splits `name{labels} value` (the sample name `name` + `suffix`, exposed) into unescaped
/// label pairs and the value text.
fn read_sample<'a>(line: &'a str, name: &str, suffix: &str) -> (Vec<(String, String)>, &'a str) {
    let (labels, value) = read_sample_with_exemplar(line, name, suffix);
    assert!(!value.contains(' '), "{line:?}");
    (labels, value)
}

/// As [`read_sample`], for a line that may end with an exemplar: the value text then holds
/// it too (see [`read_exemplar`]).
fn read_sample_with_exemplar<'a>(
    line: &'a str,
    name: &str,
    suffix: &str,
) -> (Vec<(String, String)>, &'a str) {
    let sample = exposed(&format!("{name}{suffix}"));
    let rest = line
        .strip_prefix(sample.as_str())
        .unwrap_or_else(|| panic!("{line:?} is not a sample of {sample}"));
    let (labels, rest) = match rest.strip_prefix('{') {
        None => (Vec::new(), rest),
        Some(r) => read_labels(r, line),
    };
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
    (labels, value)
}

/// Reads `a="x",b="y"}` (after the opening brace) into unescaped pairs; returns them and
/// what follows the closing brace.
fn read_labels<'a>(mut r: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    if let Some(after) = r.strip_prefix('}') {
        return (labels, after);
    }
    loop {
        let (label, after) = r
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without value in {line:?}"));
        assert!(is_legacy_label_name(label), "label {label:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.push((label.to_owned(), value));
        let after = &after[end + 1..];
        if let Some(more) = after.strip_prefix(',') {
            r = more;
        } else {
            let rest = after
                .strip_prefix('}')
                .unwrap_or_else(|| panic!("labels not closed in {line:?}"));
            return (labels, rest);
        }
    }
}

/// Splits a sample's value text into the value and checks the exemplar after it: exactly
/// `expected` (in OpenMetrics; none in the text format), its labels, value and time.
fn read_exemplar<'a>(text: &'a str, expected: Option<&Exemplar>, format: Format) -> &'a str {
    let expected = expected.filter(|_| format == Format::OpenMetrics);
    let Some(exemplar) = expected else {
        assert!(!text.contains(' '), "{text:?}");
        return text;
    };
    let (value, rest) = text
        .split_once(" # {")
        .unwrap_or_else(|| panic!("no exemplar in {text:?}"));
    let (labels, rest) = read_labels(rest, text);
    assert_eq!(labels, exemplar.labels, "exemplar labels in {text:?}");
    let (v, time) = rest
        .strip_prefix(' ')
        .and_then(|r| r.split_once(' '))
        .unwrap_or_else(|| panic!("exemplar without value and time in {text:?}"));
    assert_same_f64(parse_f64(v), exemplar.value);
    assert_same_f64(parse_f64(time), unix_seconds(exemplar.unix_nanos));
    value
}

fn parse_f64(text: &str) -> f64 {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

/// Equal as rendered numbers: the same value, or both NaN.
fn assert_same_f64(got: f64, want: f64) {
    assert!(
        got == want || (got.is_nan() && want.is_nan()),
        "rendered {got}, snapshot holds {want}"
    );
}

fn unescape(text: &str, openmetrics: bool) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if openmetrics => out.push('"'),
            other => panic!("bad escape {other:?} in help {text:?}"),
        }
    }
    out
}
