//! `prometheus_client`'s text and OpenMetrics expositions of merged families, written
//! natively: byte for byte what `prometheus_client.generate_latest` and
//! `prometheus_client.openmetrics.exposition.generate_latest` write for the `Metric` objects
//! the drop-in's collectors return (`_families_to_metrics` in
//! python/shmetrics/prometheus_client.py), so that a `/metrics` view built from unchanged
//! `prometheus_client` code skips the Python objects and the Python renderer (docs/python.md,
//! "Reading").
//!
//! What the text `generate_latest` does to those metrics, in order: per family a `# HELP`
//! line (a counter's name with `_total`, an info's with `_info`; backslashes and newlines of
//! the help escaped) and a `# TYPE` line (infos and statesets as `gauge`); per sample its
//! name, its labels sorted by name (a histogram's `le`, an `all` gauge's `pid` and a
//! stateset's state label among them), values escaped, and the value as `floatToGoString`
//! writes it: Python's `repr` of the float, positive values of a million and more as Go's
//! exponent form (`1.5e+06`). The OpenMetrics one keeps the family names, types `info` and
//! `stateset` as such, escapes quotes in the help too, adds each series' `_created` sample
//! and exemplars (` # {labels} value timestamp`, the timestamp as Python's `str()`), and ends
//! with `# EOF` (written by the caller, once). Names outside the classic character sets are
//! escaped differently by each `prometheus_client` version and escaping scheme: [`render`]
//! declines them, and the caller lets `prometheus_client` render.

use std::collections::TryReserveError;
use std::fmt::Write as _;

use shmetrics_layout::MetricKind;
use shmetrics_layout::names::{is_legacy_label_name, is_legacy_metric_name};
use shmetrics_reader::snapshot::{Exemplar, Family, Series, Value};

/// What differs between the supported `prometheus_client` versions, and the format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Style {
    /// Every histogram series' `_sum` before the first's buckets (before 0.24); else each
    /// series' `_sum`, buckets and `_count` together.
    pub(crate) sums_first: bool,
    /// `floatToGoString`'s exponent has at least two digits (`1e+15`); else it is `e+0`
    /// and the digits (`1e+015`), as in the versions before the change.
    pub(crate) two_digit_exponent: bool,
    /// `prometheus_client.openmetrics.exposition.generate_latest`'s form instead of the text
    /// format's (without the final `# EOF`, which follows every collector's part).
    pub(crate) openmetrics: Option<OpenMetrics>,
}

/// What an OpenMetrics exposition shows beyond the text format's samples.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenMetrics {
    /// Each counter's, histogram's and summary's `_created` sample, where its creation time
    /// is known.
    pub(crate) created: bool,
    /// Sample names with `:` written with `_` (0.24 on with the `underscores` escaping,
    /// which escapes a sample name as a label name; the `# HELP` and `# TYPE` lines keep it).
    pub(crate) sample_colons_as_underscores: bool,
}

/// Appends the exposition of `families` to `out`. `Ok(false)` (with `out` partly written)
/// when a family or label name is outside the classic character sets; an error when `out`
/// cannot grow (the caller raises `MemoryError`, as `prometheus_client` would, instead of
/// the process aborting).
pub(crate) fn render<'a>(
    families: impl IntoIterator<Item = &'a Family>,
    style: Style,
    out: &mut String,
) -> Result<bool, TryReserveError> {
    for family in families {
        if !names_are_legacy(family) {
            return Ok(false);
        }
        render_family(family, style, out)?;
    }
    Ok(true)
}

/// One family: its `# HELP` and `# TYPE` lines and its samples, in `_families_to_metrics`'
/// order.
fn render_family(family: &Family, style: Style, out: &mut String) -> Result<(), TryReserveError> {
    let mut labels: Vec<(&str, &str)> = Vec::new();
    let name = &*family.name;
    let om = style.openmetrics;
    // The name in sample names.
    let base = match om {
        Some(om) if om.sample_colons_as_underscores => name.replace(':', "_"),
        _ => name.to_owned(),
    };
    let (shown, typ) = match (family.kind, om.is_some()) {
        (MetricKind::Counter, false) => (format!("{name}_total"), "counter"),
        (MetricKind::Info, false) => (format!("{name}_info"), "gauge"),
        (MetricKind::StateSet, false) => (name.to_owned(), "gauge"),
        (MetricKind::Counter, true) => (name.to_owned(), "counter"),
        (MetricKind::Info, true) => (name.to_owned(), "info"),
        (MetricKind::StateSet, true) => (name.to_owned(), "stateset"),
        (MetricKind::Gauge, _) => (name.to_owned(), "gauge"),
        (MetricKind::Histogram, _) => (name.to_owned(), "histogram"),
        (MetricKind::Summary, _) => (name.to_owned(), "summary"),
    };
    // Escaping at most doubles the help; the rest is the name twice and the keywords.
    out.try_reserve(2 * family.help.len() + 2 * shown.len() + 32)?;
    out.push_str("# HELP ");
    out.push_str(&shown);
    out.push(' ');
    // OpenMetrics escapes quotes in the help as well.
    push_escaped(out, &family.help, om.is_some());
    out.push_str("\n# TYPE ");
    out.push_str(&shown);
    out.push(' ');
    out.push_str(typ);
    out.push('\n');
    let created_name = format!("{base}_created");
    // A series' `_created` sample, in OpenMetrics where asked for and known.
    let created =
        |out: &mut String, labels: &[(&str, &str)], s: &Series| match (om, s.created_seconds()) {
            (Some(om), Some(t)) if om.created => sample(out, style, &created_name, labels, t, None),
            _ => Ok(()),
        };
    let exemplar = |s, i| om.and_then(|_| exemplar_of(s, i));
    match family.kind {
        MetricKind::Counter => {
            let total = format!("{base}_total");
            for s in &family.series {
                own_labels(s, &mut labels);
                sample(out, style, &total, &labels, value_of(s), exemplar(s, 0))?;
                created(out, &labels, s)?;
            }
        }
        MetricKind::Gauge => {
            for s in &family.series {
                let pid = s.pid.map(|p| p.to_string());
                let mut labels = own_labels(s, &mut labels).clone();
                if let Some(pid) = &pid {
                    // As `labels["pid"] = pid`: it replaces a label of that name.
                    labels.retain(|(n, _)| *n != "pid");
                    labels.push(("pid", pid));
                    labels.sort_unstable();
                }
                sample(out, style, &base, &labels, value_of(s), None)?;
            }
        }
        MetricKind::Summary => {
            let (count_name, sum_name) = (format!("{base}_count"), format!("{base}_sum"));
            for s in &family.series {
                if let Value::Summary { count, sum } = s.value {
                    own_labels(s, &mut labels);
                    sample(out, style, &count_name, &labels, count as f64, None)?;
                    sample(out, style, &sum_name, &labels, sum, None)?;
                    created(out, &labels, s)?;
                }
            }
        }
        MetricKind::Info => {
            let info = format!("{base}_info");
            for s in &family.series {
                sample(out, style, &info, own_labels(s, &mut labels), 1.0, None)?;
            }
        }
        MetricKind::StateSet => {
            for s in &family.series {
                if let Value::State { states, index } = &s.value {
                    for (i, state) in states.iter().enumerate() {
                        own_labels(s, &mut labels);
                        labels.retain(|(n, _)| *n != name);
                        labels.push((name, state));
                        labels.sort_unstable();
                        let value = if i == *index { 1.0 } else { 0.0 };
                        sample(out, style, &base, &labels, value, None)?;
                    }
                }
            }
        }
        MetricKind::Histogram => {
            let les: Vec<String> = (family.bounds.iter().chain([f64::INFINITY].iter()))
                .map(|&bound| {
                    let mut le = String::new();
                    go_float(bound, style.two_digit_exponent, &mut le);
                    le
                })
                .collect();
            let (bucket_name, count_name, sum_name) = (
                format!("{base}_bucket"),
                format!("{base}_count"),
                format!("{base}_sum"),
            );
            let sum_of = |s: &Series| match s.value {
                Value::Histogram { sum, .. } => sum,
                _ => 0.0,
            };
            if style.sums_first {
                for s in &family.series {
                    sample(
                        out,
                        style,
                        &sum_name,
                        own_labels(s, &mut labels),
                        sum_of(s),
                        None,
                    )?;
                }
            }
            for s in &family.series {
                let Value::Histogram { buckets, sum } = &s.value else {
                    continue;
                };
                if !style.sums_first {
                    sample(
                        out,
                        style,
                        &sum_name,
                        own_labels(s, &mut labels),
                        *sum,
                        None,
                    )?;
                }
                // As `_families_to_metrics`: a float running total of the integer counts.
                let mut total = 0.0f64;
                for (i, (le, &n)) in les.iter().zip(buckets.iter()).enumerate() {
                    total += n as f64;
                    own_labels(s, &mut labels);
                    // As `with_le["le"] = le`: it replaces a label of that name.
                    labels.retain(|(n, _)| *n != "le");
                    labels.push(("le", le));
                    labels.sort_unstable();
                    sample(out, style, &bucket_name, &labels, total, exemplar(s, i))?;
                }
                own_labels(s, &mut labels);
                sample(out, style, &count_name, &labels, total, None)?;
                created(out, &labels, s)?;
            }
        }
    }
    Ok(())
}

/// Series `s`'s exemplar for its sample `i` (a counter's `_total` is 0, a histogram's
/// buckets are 0 on), if one is stored.
fn exemplar_of(s: &Series, i: usize) -> Option<&Exemplar> {
    s.exemplars.as_ref()?.get(i)?.as_ref()
}

/// Whether every name `family` shows is in the classic character sets (a stateset's name is
/// also a label name).
fn names_are_legacy(family: &Family) -> bool {
    is_legacy_metric_name(&family.name)
        && (family.kind != MetricKind::StateSet || is_legacy_label_name(&family.name))
        && family
            .series
            .iter()
            .all(|s| s.labels.pairs.iter().all(|(n, _)| is_legacy_label_name(n)))
}

/// Fills `labels` with the series' own labels (sorted by name) and returns it.
fn own_labels<'a, 'l>(
    s: &'a Series,
    labels: &'l mut Vec<(&'a str, &'a str)>,
) -> &'l mut Vec<(&'a str, &'a str)> {
    labels.clear();
    labels.extend(s.labels.pairs.iter().map(|(n, v)| (&**n, &**v)));
    labels
}

/// A counter's or gauge's value.
fn value_of(s: &Series) -> f64 {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) => v,
        _ => 0.0,
    }
}

/// One sample line: `name{a="x",b="y"} value`, values escaped as the text format says; the
/// room for it reserved first (escaping at most doubles a value; a float takes at most 24
/// bytes), so that no push below reallocates.
fn sample(
    out: &mut String,
    style: Style,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
    exemplar: Option<&Exemplar>,
) -> Result<(), TryReserveError> {
    let label_bytes = label_set_bytes(labels.iter().copied());
    // ` # ` and the exemplar's labels, value (24 bytes at most) and timestamp (as many).
    let exemplar_bytes = exemplar.map_or(0, |e| {
        label_set_bytes(e.labels.iter().map(|(n, v)| (n.as_str(), v.as_str()))) + 56
    });
    out.try_reserve(name.len() + label_bytes + exemplar_bytes + 32)?;
    out.push_str(name);
    if !labels.is_empty() {
        push_label_set(out, labels);
    }
    out.push(' ');
    go_float(value, style.two_digit_exponent, out);
    if let Some(e) = exemplar {
        // ` # {labels sorted by name} value timestamp`, the timestamp as Python's `str()`.
        let mut sorted: Vec<(&str, &str)> = e
            .labels
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        sorted.sort_unstable();
        out.push_str(" # ");
        push_label_set(out, &sorted);
        out.push(' ');
        go_float(e.value, style.two_digit_exponent, out);
        out.push(' ');
        python_repr(shmetrics_reader::snapshot::unix_seconds(e.unix_nanos), out);
    }
    out.push('\n');
    Ok(())
}

/// `{a="x",b="y"}`, values escaped (an exemplar's empty set too: `{}`).
fn push_label_set(out: &mut String, labels: &[(&str, &str)]) {
    out.push('{');
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(n);
        out.push_str("=\"");
        push_escaped(out, v, true);
        out.push('"');
    }
    out.push('}');
}

/// Upper bound of [`push_label_set`]'s bytes: escaping at most doubles a value.
fn label_set_bytes<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> usize {
    labels
        .map(|(n, v)| n.len() + 2 * v.len() + 4)
        .sum::<usize>()
        + 2
}

/// Appends `text` with backslashes and newlines escaped, and double quotes with `quotes` (a
/// label value; not a help text). Text without any is copied whole.
fn push_escaped(out: &mut String, text: &str, quotes: bool) {
    let special = |b: u8| b == b'\\' || b == b'\n' || (quotes && b == b'"');
    if !text.bytes().any(special) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `prometheus_client.utils.floatToGoString(v)`: `+Inf`, `-Inf`, `NaN`, else Python's
/// `repr(v)`, except that a positive value written without an exponent and with more than
/// six digits before its point gets Go's exponent form (`1234567.0` -> `1.234567e+06`).
pub(crate) fn go_float(v: f64, two_digit_exponent: bool, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    let (digits, point) = shortest_digits(v.abs());
    let digits = digits.as_str();
    // Python's repr writes an exponent from 1e16 on and below 1e-4.
    let exponent_form = point <= -4 || point > 16;
    if v > 0.0 && !exponent_form && point > 6 {
        // `repr` would have `point` digits before its point: Go's form instead, the
        // mantissa's trailing zeros (and a bare point) dropped.
        out.push_str(&digits[..1]);
        let rest = digits[1..].trim_end_matches('0');
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        if two_digit_exponent {
            let _ = write!(out, "e+{:02}", point - 1);
        } else {
            let _ = write!(out, "e+0{}", point - 1);
        }
        return;
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    python_repr_digits(digits, point, exponent_form, out);
}

/// Python's `repr(v)` (and `str(v)`): `nan`, `inf`, `-inf`, else the shortest digits that
/// read back as `v`, positional from 1e-4 to below 1e16 (`.0` on whole numbers).
fn python_repr(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("nan");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "inf" } else { "-inf" });
        return;
    }
    let (digits, point) = shortest_digits(v.abs());
    if v.is_sign_negative() {
        out.push('-');
    }
    python_repr_digits(digits.as_str(), point, point <= -4 || point > 16, out);
}

/// The shortest decimal digits that read back as `v` (finite, not negative), without
/// trailing zeros, and the position of the decimal point: `v = 0.d1d2... × 10^point`.
fn shortest_digits(v: f64) -> (Digits, i32) {
    let mut digits = Digits::default();
    if v == 0.0 {
        digits.push(b'0');
        return (digits, 1);
    }
    // Whole numbers below 2^53 (counts, most values): their integer digits, which no
    // shorter string reads back as (every integer there is a double of its own).
    if v < 9_007_199_254_740_992.0 && v.fract() == 0.0 {
        let mut n = v as u64;
        let mut reversed = Digits::default();
        while n > 0 {
            reversed.push(b'0' + (n % 10) as u8);
            n /= 10;
        }
        let point = reversed.len as i32;
        for &d in reversed.bytes.iter().take(reversed.len).rev() {
            digits.push(d);
        }
        digits.trim_zeros();
        return (digits, point);
    }
    // Rust's `{:e}` writes the shortest round-tripping digits (the closest to `v` where
    // several are as short), as Python's `repr` does: `d.ddde±x`.
    let mut text = Digits::default();
    let _ = write!(text, "{v:e}");
    let text = text.as_str();
    let (mantissa, exponent) = text.split_once('e').expect("`{:e}` writes an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes a decimal exponent");
    let mut whole: u64 = 0;
    let mut count = 0;
    for b in mantissa.bytes().filter(|b| *b != b'.') {
        whole = whole * 10 + u64::from(b - b'0');
        count += 1;
    }
    // `v = whole × 10^last`, `whole` without trailing zeros (at most 17 digits).
    let last = exponent + 1 - count;
    // Where `v` lies exactly halfway between two shortest candidates, Python's `repr`
    // takes the even one (round-half-even) and Rust's may not: 1059438285926254.25 is
    // `...254.2` in Python.
    let whole = if whole % 2 == 1 && is_exactly(v, 10 * u128::from(whole) - 5, last - 1) {
        whole - 1
    } else if whole % 2 == 1 && is_exactly(v, 10 * u128::from(whole) + 5, last - 1) {
        whole + 1
    } else {
        whole
    };
    let mut reversed = Digits::default();
    let mut n = whole;
    while n > 0 {
        reversed.push(b'0' + (n % 10) as u8);
        n /= 10;
    }
    let point = last + reversed.len as i32;
    for &d in reversed.bytes.iter().take(reversed.len).rev() {
        digits.push(d);
    }
    digits.trim_zeros();
    (digits, point)
}

/// Whether the finite, positive `v` is exactly `n × 10^j`, for an odd `n`.
fn is_exactly(v: f64, n: u128, j: i32) -> bool {
    // `v = m × 2^e` with `m` odd; `n × 10^j = (n × 5^j) × 2^j` with `n × 5^j` odd (or
    // `n / 5^-j`): equal only with the same power of two and the same odd part.
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mut m, mut e) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    if m == 0 {
        return false;
    }
    let zeros = m.trailing_zeros();
    m >>= zeros;
    e += zeros as i32;
    if e != j {
        return false;
    }
    let five = |k: i32| 5u128.checked_pow(k.unsigned_abs());
    if j >= 0 {
        five(j).and_then(|p| p.checked_mul(n)) == Some(u128::from(m))
    } else {
        five(j).and_then(|p| p.checked_mul(u128::from(m))) == Some(n)
    }
}

/// Up to 32 ASCII bytes on the stack: a double's digits (17 at most) or its `{:e}` text
/// (24 at most).
#[derive(Default)]
struct Digits {
    bytes: [u8; 32],
    len: usize,
}

impl Digits {
    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    /// Drops trailing zeros, keeping one digit at least.
    fn trim_zeros(&mut self) {
        while self.len > 1 && self.bytes[self.len - 1] == b'0' {
            self.len -= 1;
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("ASCII digits")
    }
}

impl std::fmt::Write for Digits {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.len + s.len() > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Python's `repr` of a float from its digits and point: `d.ddde±XX` (two exponent digits
/// at least) in exponent form, else positional with `.0` for a whole number.
fn python_repr_digits(digits: &str, point: i32, exponent_form: bool, out: &mut String) {
    if exponent_form {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = point - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(digits);
    } else if (point as usize) < digits.len() {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    } else {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
        out.push_str(".0");
    }
}

/// `floatToGoString(v)` as [`render`] writes it (`two_digit_exponent` as there): the
/// drop-in checks it against the installed `prometheus_client` before rendering natively.
#[pyo3::pyfunction]
pub(crate) fn float_to_go_string(v: f64, two_digit_exponent: bool) -> String {
    let mut out = String::new();
    go_float(v, two_digit_exponent, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(v: f64, two: bool) -> String {
        let mut s = String::new();
        go_float(v, two, &mut s);
        s
    }

    #[test]
    fn floats_as_float_to_go_string_writes_them() {
        // (value, prometheus_client 0.26, before the two-digit exponent), from Python.
        let cases: &[(f64, &str, &str)] = &[
            (0.0, "0.0", "0.0"),
            (-0.0, "-0.0", "-0.0"),
            (1.0, "1.0", "1.0"),
            (0.1, "0.1", "0.1"),
            (0.25, "0.25", "0.25"),
            (3.3, "3.3", "3.3"),
            (123456.0, "123456.0", "123456.0"),
            (1e6, "1e+06", "1e+06"),
            (1234567.0, "1.234567e+06", "1.234567e+06"),
            (10000000.5, "1.00000005e+07", "1.00000005e+07"),
            (1e15, "1e+15", "1e+015"),
            (
                9999999999999998.0,
                "9.999999999999998e+15",
                "9.999999999999998e+015",
            ),
            (1e16, "1e+16", "1e+16"),
            (1e21, "1e+21", "1e+21"),
            (1.5e300, "1.5e+300", "1.5e+300"),
            (-1e7, "-10000000.0", "-10000000.0"),
            (-1e16, "-1e+16", "-1e+16"),
            (0.0001, "0.0001", "0.0001"),
            (0.00001, "1e-05", "1e-05"),
            (1.5e-7, "1.5e-07", "1.5e-07"),
            (5e-324, "5e-324", "5e-324"),
            (
                f64::MAX,
                "1.7976931348623157e+308",
                "1.7976931348623157e+308",
            ),
            (37037036.7, "3.70370367e+07", "3.70370367e+07"),
            // Exactly halfway between two shortest candidates: the even one.
            (
                1059438285926254.25,
                "1.0594382859262542e+15",
                "1.0594382859262542e+015",
            ),
            (
                1641028843241013.25,
                "1.6410288432410132e+15",
                "1.6410288432410132e+015",
            ),
            (
                1268006475185092.75,
                "1.2680064751850928e+15",
                "1.2680064751850928e+015",
            ),
            (
                -1059438285926254.25,
                "-1059438285926254.2",
                "-1059438285926254.2",
            ),
            (f64::INFINITY, "+Inf", "+Inf"),
            (f64::NEG_INFINITY, "-Inf", "-Inf"),
            (f64::NAN, "NaN", "NaN"),
        ];
        for &(v, new, old) in cases {
            assert_eq!(go(v, true), new, "{v:e}");
            assert_eq!(go(v, false), old, "{v:e}");
        }
    }
}
