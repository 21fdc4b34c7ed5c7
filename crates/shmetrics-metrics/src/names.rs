//! From `metrics` names to Prometheus names.
//!
//! `metrics` accepts any string as a metric or label name (`http.requests`, `db-host`);
//! Prometheus does not. As `metrics-exporter-prometheus` does, every character that is not
//! allowed becomes `_` (and a leading digit gets a `_` before it), so instrumented code
//! written for another exporter keeps working.

use std::borrow::Cow;

use metrics::Unit;

/// `name` made a valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn metric_name(name: &str) -> Cow<'_, str> {
    sanitize(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name` made a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`. A name starting
/// with `__` (reserved by Prometheus) gets an `x` for its first underscore: `__meta` →
/// `x_meta`.
pub(crate) fn label_name(name: &str) -> Cow<'_, str> {
    let clean = sanitize(name, |c| c.is_ascii_alphanumeric() || c == '_');
    if clean.starts_with("__") {
        Cow::Owned(format!("x{}", &clean[1..]))
    } else {
        clean
    }
}

fn sanitize(name: &str, allowed: impl Fn(char) -> bool) -> Cow<'_, str> {
    let leading_digit = name.starts_with(|c: char| c.is_ascii_digit());
    if !name.is_empty() && !leading_digit && name.chars().all(&allowed) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if name.is_empty() || leading_digit {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if allowed(c) { c } else { '_' }));
    Cow::Owned(out)
}

/// The suffix Prometheus naming practice gives a metric in `unit`, if any (`seconds`,
/// `bytes`...). A plain count has none.
pub(crate) fn unit_suffix(unit: Unit) -> Option<&'static str> {
    match unit {
        Unit::Count => None,
        other => Some(other.as_str()),
    }
}

/// `name` with `_<suffix>` appended unless it already ends so. A counter's suffix goes
/// before its `_total`.
pub(crate) fn with_unit_suffix(name: &str, suffix: &str, counter: bool) -> String {
    let (base, total) = match name.strip_suffix("_total") {
        Some(base) if counter => (base, "_total"),
        _ => (name, ""),
    };
    if base.ends_with(&format!("_{suffix}")) {
        name.to_owned()
    } else {
        format!("{base}_{suffix}{total}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for (given, expected) in [
            ("http_requests", "http_requests"),
            ("vllm:num_requests", "vllm:num_requests"),
            ("http.requests", "http_requests"),
            ("db-latency", "db_latency"),
            ("9lives", "_9lives"),
            ("", "_"),
            ("naïve", "na_ve"),
        ] {
            assert_eq!(metric_name(given), expected, "{given:?}");
        }
        assert!(matches!(metric_name("ok_name"), Cow::Borrowed(_)));
    }

    #[test]
    fn label_names() {
        for (given, expected) in [
            ("model", "model"),
            ("model.name", "model_name"),
            ("vllm:x", "vllm_x"),
            ("0rank", "_0rank"),
            ("__meta", "x_meta"),
            ("_ok", "_ok"),
        ] {
            assert_eq!(label_name(given), expected, "{given:?}");
        }
    }

    #[test]
    fn unit_suffixes() {
        assert_eq!(unit_suffix(Unit::Count), None);
        assert_eq!(unit_suffix(Unit::Seconds), Some("seconds"));
        assert_eq!(
            with_unit_suffix("latency", "seconds", false),
            "latency_seconds"
        );
        assert_eq!(
            with_unit_suffix("latency_seconds", "seconds", false),
            "latency_seconds"
        );
        assert_eq!(
            with_unit_suffix("sent_total", "bytes", true),
            "sent_bytes_total"
        );
        assert_eq!(
            with_unit_suffix("sent_bytes_total", "bytes", true),
            "sent_bytes_total"
        );
        assert_eq!(with_unit_suffix("sent", "bytes", true), "sent_bytes");
        assert_eq!(
            with_unit_suffix("free_total", "bytes", false),
            "free_total_bytes"
        );
    }
}
