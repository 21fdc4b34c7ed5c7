//! Validation of metric names, label names and label sets, shared by writer and reader.

/// Longest metric or label name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest help text accepted, in bytes.
pub const MAX_HELP_LEN: usize = 16 * 1024;
/// Longest label value accepted, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 4 * 1024;
/// Most labels one family may declare.
pub const MAX_LABELS: usize = 32;
/// Most finite bucket bounds one histogram may declare.
pub const MAX_BUCKETS: usize = 512;

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

/// Label names that a family of this kind may not declare because the exposition adds them.
pub fn reserved_label(kind: crate::MetricKind, name: &str) -> bool {
    match kind {
        crate::MetricKind::Histogram => name == "le",
        crate::MetricKind::Summary => name == "quantile",
        crate::MetricKind::Counter | crate::MetricKind::Gauge => false,
    }
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
    fn label_names() {
        for ok in ["a", "model_name", "_x", "engine"] {
            assert!(is_valid_label_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a:b", "__name__", "a-b"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }
}
