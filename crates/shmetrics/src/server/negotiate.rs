//! Content negotiation for `/metrics`: which exposition format (`Accept`) and whether to
//! gzip (`Accept-Encoding`), following RFC 9110 §12.5.1 and §12.5.3.
//!
//! Each offer (OpenMetrics 1.0.0, text 0.0.4) gets the quality of the most specific media
//! range that matches it; OpenMetrics is served only when its quality is strictly higher
//! than text's, so a client that expresses no preference (`*/*`, no header, or only types
//! we do not produce) gets text.

use shmetrics_reader::Format;

/// One element of an `Accept` or `Accept-Encoding` list: the value before the first `;`
/// (lower-cased), its parameters other than `q` (names lower-cased), and its quality.
#[derive(Debug, PartialEq)]
struct Element {
    value: String,
    params: Vec<(String, String)>,
    q: f32,
}

/// Parses a quality value: `0`, `1` or a decimal in between (at most three decimals are
/// meaningful, more are tolerated). `None` when malformed or out of range.
fn parse_q(text: &str) -> Option<f32> {
    let q: f32 = text.trim().parse().ok()?;
    (0.0..=1.0).contains(&q).then_some(q)
}

/// Splits a comma-separated header list into elements; elements with a malformed `q` are
/// dropped (they cannot be honoured either way), empty elements are skipped.
fn elements(header: &str) -> Vec<Element> {
    let mut out = Vec::new();
    for item in header.split(',') {
        let mut parts = item.split(';');
        let value = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if value.is_empty() {
            continue;
        }
        let mut q = Some(1.0);
        let mut params = Vec::new();
        for param in parts {
            let (name, val) = param.split_once('=').unwrap_or((param, ""));
            let name = name.trim().to_ascii_lowercase();
            let val = val.trim().trim_matches('"');
            if name == "q" {
                q = parse_q(val);
            } else if !name.is_empty() {
                params.push((name, val.to_owned()));
            }
        }
        if let Some(q) = q {
            out.push(Element { value, params, q });
        }
    }
    out
}

/// What we can produce for a format: its media type and the `version` parameter values
/// that describe output we produce (the first is what we label it with).
fn offer(format: Format) -> (&'static str, &'static [&'static str]) {
    match format {
        Format::Prometheus => ("text/plain", &["0.0.4"]),
        // OpenMetrics 0.0.1 is the same text format as 1.0.0; Prometheus asks for both.
        Format::OpenMetrics => ("application/openmetrics-text", &["1.0.0", "0.0.1"]),
    }
}

/// How specifically a media range matches `format`, or `None` if it does not. Higher is
/// more specific: `*/*` < `type/*` < `type/subtype` < with an acceptable version < with the
/// exact version we label the output with.
fn specificity(range: &Element, format: Format) -> Option<u8> {
    let (media, versions) = offer(format);
    let (ty, sub) = range.value.split_once('/')?;
    let (offer_ty, offer_sub) = media.split_once('/')?;
    match (ty, sub) {
        ("*", "*") => Some(0),
        (t, "*") if t == offer_ty => Some(1),
        (t, s) if t == offer_ty && s == offer_sub => {
            match range.params.iter().find(|(n, _)| n == "version") {
                None => Some(2),
                Some((_, v)) if v == versions[0] => Some(4),
                Some((_, v)) if versions.contains(&v.as_str()) => Some(3),
                Some(_) => None,
            }
        }
        _ => None,
    }
}

/// The quality the `Accept` ranges give `format`: that of the most specific matching
/// range (the highest among equally specific ones); 0 when none matches.
fn quality(ranges: &[Element], format: Format) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for range in ranges {
        if let Some(s) = specificity(range, format) {
            best = match best {
                Some((bs, bq)) if bs > s || (bs == s && bq >= range.q) => Some((bs, bq)),
                _ => Some((s, range.q)),
            };
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// The format to answer with, given the request's `Accept` header (absent: text).
pub fn format(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Prometheus;
    };
    let ranges = elements(accept);
    if quality(&ranges, Format::OpenMetrics) > quality(&ranges, Format::Prometheus) {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    }
}

/// Whether the response may be gzip-compressed, given `Accept-Encoding`: `gzip` (or
/// `x-gzip`) with a quality above 0, or, when gzip is not named, `*` above 0.
pub fn gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let codings = elements(header);
    let named = codings
        .iter()
        .filter(|c| c.value == "gzip" || c.value == "x-gzip")
        .map(|c| c.q)
        .reduce(f32::max);
    let q = named.or_else(|| {
        codings
            .iter()
            .filter(|c| c.value == "*")
            .map(|c| c.q)
            .reduce(f32::max)
    });
    q.is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_2_OLD: &str =
        "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    const PROMETHEUS_TEXT_ONLY: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

    #[test]
    fn real_accept_headers() {
        let cases: &[(Option<&str>, Format)] = &[
            (Some(PROMETHEUS_2), Format::OpenMetrics),
            (Some(PROMETHEUS_2_OLD), Format::OpenMetrics),
            (Some(PROMETHEUS_3), Format::OpenMetrics),
            (Some(PROMETHEUS_TEXT_ONLY), Format::Prometheus),
            (Some("text/plain;version=0.0.4"), Format::Prometheus),
            (Some("*/*"), Format::Prometheus),
            (None, Format::Prometheus),
            (Some(""), Format::Prometheus),
            (Some("application/json"), Format::Prometheus),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; Version=\"1.0.0\""),
                Format::OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Prometheus),
            (
                Some("application/openmetrics-text;q=0,*/*"),
                Format::Prometheus,
            ),
            (
                Some("text/plain;q=0.5,application/openmetrics-text;q=0.6"),
                Format::OpenMetrics,
            ),
            // Equal preference: text.
            (
                Some("text/plain,application/openmetrics-text"),
                Format::Prometheus,
            ),
            // A version we do not produce does not match.
            (
                Some("application/openmetrics-text;version=2.0.0,text/plain;q=0.1"),
                Format::Prometheus,
            ),
            // `application/*` matches OpenMetrics only.
            (Some("application/*,text/plain;q=0.9"), Format::OpenMetrics),
            // The more specific range decides, even with a lower q.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.2,application/*;q=1,text/plain;q=0.3",
                ),
                Format::Prometheus,
            ),
            // A malformed q drops its element.
            (
                Some("application/openmetrics-text;q=abc,text/plain;q=0.1"),
                Format::Prometheus,
            ),
            (
                Some("application/openmetrics-text;q=1.5,text/plain;q=0.1"),
                Format::Prometheus,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(format(*header), *want, "Accept: {header:?}");
        }
    }

    #[test]
    fn elements_parse_parameters_and_quality() {
        assert_eq!(
            elements(" text/plain ; version=0.0.4 ; q=0.5 , ,*/*;q=0.1"),
            vec![
                Element {
                    value: "text/plain".into(),
                    params: vec![("version".into(), "0.0.4".into())],
                    q: 0.5
                },
                Element {
                    value: "*/*".into(),
                    params: vec![],
                    q: 0.1
                },
            ]
        );
    }

    #[test]
    fn accept_encoding() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some(""), false),
            (Some("gzip"), true),
            (Some("GZIP"), true),
            (Some("x-gzip"), true),
            (Some("gzip, deflate, br"), true),
            (Some("br;q=1.0, gzip;q=0.8, *;q=0.1"), true),
            (Some("identity"), false),
            (Some("gzip;q=0"), false),
            (Some("gzip;q=0.000"), false),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("gzip;q=0, *"), false),
            (Some("deflate"), false),
        ];
        for (header, want) in cases {
            assert_eq!(gzip(*header), *want, "Accept-Encoding: {header:?}");
        }
    }
}
