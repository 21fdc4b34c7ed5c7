//! Validation of metric names, label names and label sets, shared by writer and reader.

/// Longest metric or label name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest help text accepted, in bytes.
pub const MAX_HELP_LEN: usize = 16 * 1024;

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most
/// [`MAX_NAME_LEN`] bytes.
pub fn is_valid_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_' || bytes[0] == b':')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`
/// (reserved by Prometheus), at most [`MAX_NAME_LEN`] bytes.
pub fn is_valid_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && !name.starts_with("__")
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Label names that a family may not declare because the exposition adds them: `le` to
/// histogram buckets, `quantile` to summaries, `pid` to gauges merged per process.
pub fn reserved_label(kind: crate::MetricKind, mode: Option<crate::GaugeMode>, name: &str) -> bool {
    use crate::{GaugeMode, MetricKind};
    match kind {
        MetricKind::Histogram => name == "le",
        MetricKind::Summary => name == "quantile",
        MetricKind::Gauge => {
            name == "pid" && matches!(mode, Some(GaugeMode::All | GaugeMode::LiveAll))
        }
        MetricKind::Counter => false,
    }
}

/// Every name a family occupies in an exposition: its family name and its sample names
/// (`x` and `x_total` for a counter; `x`, `x_bucket`, `x_count` and `x_sum` for a
/// histogram). Two families whose sets intersect cannot be exposed together.
pub fn exposed_names(kind: crate::MetricKind, name: &str) -> Vec<String> {
    use crate::MetricKind;
    let suffixes: &[&str] = match kind {
        MetricKind::Counter => &["", "_total"],
        MetricKind::Gauge => &[""],
        MetricKind::Histogram => &["", "_bucket", "_count", "_sum"],
        MetricKind::Summary => &["", "_count", "_sum"],
    };
    suffixes.iter().map(|s| format!("{name}{s}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for ok in ["a", "vllm:num_requests_running", "_x", ":y", "a1_b2"] {
            assert!(is_valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é", "a\n"] {
            assert!(!is_valid_metric_name(bad), "{bad}");
        }
        assert!(!is_valid_metric_name(&"a".repeat(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn reserved_and_exposed_names() {
        use crate::{GaugeMode, MetricKind};
        assert!(reserved_label(
            MetricKind::Gauge,
            Some(GaugeMode::All),
            "pid"
        ));
        assert!(reserved_label(
            MetricKind::Gauge,
            Some(GaugeMode::LiveAll),
            "pid"
        ));
        assert!(!reserved_label(
            MetricKind::Gauge,
            Some(GaugeMode::Sum),
            "pid"
        ));
        assert!(reserved_label(MetricKind::Histogram, None, "le"));
        assert!(!reserved_label(MetricKind::Counter, None, "le"));
        assert_eq!(exposed_names(MetricKind::Counter, "x"), ["x", "x_total"]);
        assert_eq!(
            exposed_names(MetricKind::Histogram, "h"),
            ["h", "h_bucket", "h_count", "h_sum"]
        );
        assert_eq!(
            exposed_names(MetricKind::Summary, "s"),
            ["s", "s_count", "s_sum"]
        );
        assert_eq!(exposed_names(MetricKind::Gauge, "g"), ["g"]);
    }

    #[test]
    fn label_names() {
        for ok in ["a", "model_name", "_x", "engine"] {
            assert!(is_valid_label_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a:b", "__name__", "a-b"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }
}
