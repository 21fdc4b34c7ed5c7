//! Validation of metric names, label names and label sets, shared by writer and reader.

/// Longest metric or label name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest help text accepted, in bytes.
pub const MAX_HELP_LEN: usize = 16 * 1024;

/// Whether `name` is a valid metric name: not empty, at most [`MAX_NAME_LEN`] bytes of
/// UTF-8, as `prometheus_client` 0.26 and Prometheus 3 accept. Names outside the classic
/// character set ([`is_legacy_metric_name`]) are escaped when exposed ([`escape_name`]).
pub fn is_valid_metric_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

/// Whether `name` is a valid label name: not empty, at most [`MAX_NAME_LEN`] bytes of
/// UTF-8, not starting with `__` (reserved by Prometheus).
pub fn is_valid_label_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.starts_with("__")
}

/// Whether `name` is in the classic metric-name character set `[a-zA-Z_:][a-zA-Z0-9_:]*`,
/// exposed as it is in every escaping scheme but [`Escaping::Dots`].
pub fn is_legacy_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| legacy_rune(c, i, true))
}

/// Whether `name` is in the classic label-name character set `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_legacy_label_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| legacy_rune(c, i, false))
}

fn legacy_rune(c: char, index: usize, colon: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (index > 0 && c.is_ascii_digit())
}

/// How names outside the classic character sets are exposed: the `escaping` parameter of
/// the exposition formats' content types (Prometheus 3, `prometheus_client` 0.26).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Escaping {
    /// Names as they are, quoted (with `\`, `\n` and `\"` escaped) when not classic.
    AllowUtf8,
    /// Every character outside the classic set becomes `_`: the classic formats' default.
    #[default]
    Underscores,
    /// `.` becomes `_dot_`, `_` becomes `__`, any other character outside the set `__`.
    Dots,
    /// A name that is not classic becomes `U__` followed by its characters, `_` as `__`
    /// and any other character outside the set as `_<hex code point>_`.
    Values,
}

impl Escaping {
    /// The parameter's value, as in a content type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllowUtf8 => "allow-utf-8",
            Self::Underscores => "underscores",
            Self::Dots => "dots",
            Self::Values => "values",
        }
    }

    /// The scheme named `value`, if any.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::AllowUtf8, Self::Underscores, Self::Dots, Self::Values]
            .into_iter()
            .find(|e| e.as_str() == value)
    }

    /// Whether a name of the classic set is exposed unchanged (every scheme but dots).
    pub fn keeps_legacy_names(self) -> bool {
        self != Self::Dots
    }
}

/// Appends `name` (a metric name when `metric`, else a label name) as `escaping` exposes it.
/// Under [`Escaping::AllowUtf8`] a name that is not classic is quoted.
pub fn escape_name(name: &str, metric: bool, escaping: Escaping, out: &mut String) {
    let legacy = if metric {
        is_legacy_metric_name(name)
    } else {
        is_legacy_label_name(name)
    };
    match escaping {
        Escaping::AllowUtf8 if legacy => out.push_str(name),
        Escaping::AllowUtf8 => {
            out.push('"');
            for c in name.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '"' => out.push_str("\\\""),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Escaping::Underscores | Escaping::Values if legacy => out.push_str(name),
        Escaping::Underscores => {
            for (i, c) in name.chars().enumerate() {
                out.push(if legacy_rune(c, i, metric) { c } else { '_' });
            }
        }
        Escaping::Dots => {
            for (i, c) in name.chars().enumerate() {
                match c {
                    '_' => out.push_str("__"),
                    '.' => out.push_str("_dot_"),
                    c if legacy_rune(c, i, metric) => out.push(c),
                    _ => out.push_str("__"),
                }
            }
        }
        Escaping::Values => {
            out.push_str("U__");
            for (i, c) in name.chars().enumerate() {
                match c {
                    '_' => out.push_str("__"),
                    c if legacy_rune(c, i, metric) => out.push(c),
                    c => {
                        use std::fmt::Write as _;
                        let _ = write!(out, "_{:x}_", u32::from(c));
                    }
                }
            }
        }
    }
}

/// `name` as `escaping` exposes it (see [`escape_name`]).
pub fn escaped_name(name: &str, metric: bool, escaping: Escaping) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    escape_name(name, metric, escaping, &mut out);
    out
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
        MetricKind::Counter | MetricKind::Info | MetricKind::StateSet => false,
    }
}

/// Every name a family occupies in an exposition: its family name and its sample names
/// (`x` and `x_total` for a counter; `x`, `x_bucket`, `x_count` and `x_sum` for a
/// histogram), as the classic formats expose them ([`Escaping::Underscores`]: `a.b` and
/// `a_b` are one name there). Two families whose sets intersect cannot be exposed together.
pub fn exposed_names(kind: crate::MetricKind, name: &str) -> Vec<String> {
    let name = escaped_name(name, true, Escaping::Underscores);
    let samples = kind.sample_suffixes().iter().filter(|s| !s.is_empty());
    std::iter::once(&"")
        .chain(samples)
        .map(|s| format!("{name}{s}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for legacy in ["a", "vllm:num_requests_running", "_x", ":y", "a1_b2"] {
            assert!(
                is_valid_metric_name(legacy) && is_legacy_metric_name(legacy),
                "{legacy}"
            );
        }
        for utf8 in ["1a", "a-b", "a b", "é", "a\n", "my.dotted"] {
            assert!(is_valid_metric_name(utf8), "{utf8}");
            assert!(!is_legacy_metric_name(utf8), "{utf8}");
        }
        assert!(!is_valid_metric_name(""));
        assert!(!is_valid_metric_name(&"a".repeat(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn escaping_schemes() {
        // (name, metric, underscores, dots, values, allow-utf-8)
        let cases = [
            (
                "vllm:num_running",
                true,
                "vllm:num_running",
                "vllm:num__running",
                "vllm:num_running",
                "vllm:num_running",
            ),
            (
                "my.dotted",
                true,
                "my_dotted",
                "my_dot_dotted",
                "U__my_2e_dotted",
                "\"my.dotted\"",
            ),
            (
                "lbl.x",
                false,
                "lbl_x",
                "lbl_dot_x",
                "U__lbl_2e_x",
                "\"lbl.x\"",
            ),
            ("a:b", false, "a_b", "a__b", "U__a_3a_b", "\"a:b\""),
            ("1st", true, "_st", "__st", "U___31_st", "\"1st\""),
            ("é_ü", true, "___", "______", "U___e9____fc_", "\"é_ü\""),
            (
                "q\"\\\n",
                true,
                "q___",
                "q______",
                "U__q_22__5c__a_",
                "\"q\\\"\\\\\\n\"",
            ),
        ];
        for (name, metric, underscores, dots, values, utf8) in cases {
            for (escaping, want) in [
                (Escaping::Underscores, underscores),
                (Escaping::Dots, dots),
                (Escaping::Values, values),
                (Escaping::AllowUtf8, utf8),
            ] {
                assert_eq!(
                    escaped_name(name, metric, escaping),
                    want,
                    "{name} {escaping:?}"
                );
            }
        }
        for e in [
            Escaping::AllowUtf8,
            Escaping::Underscores,
            Escaping::Dots,
            Escaping::Values,
        ] {
            assert_eq!(Escaping::parse(e.as_str()), Some(e));
        }
        assert_eq!(Escaping::parse("legacy"), None);
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
        for ok in ["a", "model_name", "_x", "engine", "lbl.x", "é", "a:b"] {
            assert!(is_valid_label_name(ok), "{ok}");
        }
        for bad in ["", "__name__", "__x"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
        assert!(is_legacy_label_name("model_name") && !is_legacy_label_name("a:b"));
        // One exposed name for `a.b` and `a_b`: the classic formats cannot tell them apart.
        assert_eq!(
            exposed_names(crate::MetricKind::Counter, "a.b"),
            ["a_b", "a_b_total"]
        );
    }
}
